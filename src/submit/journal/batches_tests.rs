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
