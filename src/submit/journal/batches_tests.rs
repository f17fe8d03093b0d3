//! Tests of forming batches: on disk before they leave, re-sent as they were.

use super::testing::item;
use super::*;

#[test]
fn batches_are_on_disk_before_they_are_returned_and_resent_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let j = Journal::open(&path).unwrap();
    let run = j
        .begin_run("x.csv", NaiveDate::from_ymd_opt(2026, 1, 2).unwrap())
        .unwrap();
    j.atomically(|| -> Result<(), JournalError> {
        for (k, c, r) in [
            ("A", "C1", "AMER"),
            ("B", "C2", "EMEA"),
            ("C", "C1", "AMER"),
        ] {
            j.plan_item(&item(k, c, r), ItemState::Planned, run)?;
        }
        Ok(())
    })
    .unwrap();
    j.set_quote("C1", "AMER", "Q1").unwrap();
    let b = j.next_batch(10).unwrap().unwrap();
    assert_eq!(b.request.contract_id, "C1");
    assert_eq!(b.request.quote_id, "Q1");
    let keys: Vec<_> = b
        .request
        .items
        .iter()
        .map(|i| i.item_key.as_str())
        .collect();
    assert_eq!(keys, ["A", "C"]);
    drop(j);
    // A crash now: the next run finds the batch as it was, same key and body.
    let j = Journal::open(&path).unwrap();
    let again = j.unsent_batches().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].idempotency_key, b.idempotency_key);
    assert_eq!(again[0].request, b.request);
    // Planning the same items again changes nothing.
    j.plan_item(&item("A", "C1", "AMER"), ItemState::Planned, run)
        .unwrap();
    let next = j.next_batch(10).unwrap().unwrap();
    assert_eq!(next.request.contract_id, "C2");
    assert!(j.next_batch(10).unwrap().is_none());
}

/// A batch is taken back to `planned` only when nothing of it can have
/// reached the vendor: formed by this run, and every attempt unable to
/// connect (or none). Any other batch keeps its key for a re-send.
#[test]
fn only_a_batch_of_this_run_that_never_connected_is_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
    let first = j.begin_run("x.csv", day).unwrap();
    let items: Vec<_> = ["A", "B", "C", "D"]
        .iter()
        .map(|k| item(k, &format!("C{k}"), "AMER"))
        .collect();
    j.atomically(|| j.plan_items(&items, ItemState::Planned, first))
        .unwrap();
    for k in ["A", "B", "C", "D"] {
        j.set_quote(&format!("C{k}"), "AMER", "Q").unwrap();
    }
    let attempt = |run, batch: &Batch, status: Option<u16>, error: &str| {
        j.record_attempt(
            run,
            chrono::Utc::now(),
            "submit",
            &format!("batch {}", batch.id),
            status,
            Some(error),
            1,
        )
        .unwrap()
    };
    let earlier = j.next_batch(10).unwrap().unwrap();
    attempt(first, &earlier, None, crate::submit::client::NOT_CONNECTED);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let run = j.begin_run("x.csv", day).unwrap();
    // An earlier run's batch: it may have left before a crash that logged
    // nothing, so it keeps its key.
    assert!(!j.batch_never_sent(earlier.id, run).unwrap());
    // This run's: never connected, or never tried: taken back.
    let refused = j.next_batch(10).unwrap().unwrap();
    let untried = j.next_batch(10).unwrap().unwrap();
    let reached = j.next_batch(10).unwrap().unwrap();
    attempt(run, &refused, None, crate::submit::client::NOT_CONNECTED);
    attempt(run, &refused, None, crate::submit::client::NOT_CONNECTED);
    assert!(j.batch_never_sent(refused.id, run).unwrap());
    assert!(j.batch_never_sent(untried.id, run).unwrap());
    // One attempt that may have reached the vendor (an answer, a time-out):
    // kept.
    attempt(run, &reached, None, crate::submit::client::NOT_CONNECTED);
    attempt(run, &reached, None, "timed out");
    assert!(!j.batch_never_sent(reached.id, run).unwrap());
    assert_eq!(j.unsent_batches().unwrap().len(), 2);
    // The taken-back items form their batches again, under the same keys.
    let again = j.next_batch(10).unwrap().unwrap();
    assert_eq!(again.idempotency_key, refused.idempotency_key);
    let again = j.next_batch(10).unwrap().unwrap();
    assert_eq!(again.idempotency_key, untried.idempotency_key);
    assert!(j.next_batch(10).unwrap().is_none());
}
