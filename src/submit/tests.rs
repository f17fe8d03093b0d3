//! Tests of submission and tracking against fake vendors: batches, polls, losses and stops.

use super::journal::Journal;
use super::*;
use crate::api::{CoverageWire, Decision, ItemDecision, ItemStatus, ItemType};
use crate::submit::journal::ledger::*;
use chrono::{NaiveDate, Utc};
use journal::PlannedItem;
use std::sync::atomic::AtomicU64;

type OnSubmit = dyn Fn(u64, &api::ReactivationRequest) -> Result<api::ReactivationAccepted, CallError>
    + Send
    + Sync;
type OnStatus = dyn Fn(&str) -> Result<api::ReactivationStatus, CallError> + Send + Sync;

/// A vendor whose answers the test writes.
struct Fake {
    submits: AtomicU64,
    polls: AtomicU64,
    on_submit: Box<OnSubmit>,
    on_status: Box<OnStatus>,
}

impl Fake {
    fn new(on_submit: Box<OnSubmit>, on_status: Box<OnStatus>) -> Arc<Fake> {
        Arc::new(Fake {
            submits: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            on_submit,
            on_status,
        })
    }
}

fn answered<T>(result: Result<T, CallError>) -> Call<T> {
    Call {
        result,
        attempts: Vec::new(),
    }
}

impl Vendor for Fake {
    fn submit(
        &self,
        _key: &str,
        body: &api::ReactivationRequest,
        _stop: &Stop,
    ) -> impl Future<Output = Call<api::ReactivationAccepted>> + Send {
        let n = self.submits.fetch_add(1, Ordering::Relaxed);
        let result = (self.on_submit)(n, body);
        async move { answered(result) }
    }
    fn status(
        &self,
        request_id: &str,
        _stop: &Stop,
    ) -> impl Future<Output = Call<api::ReactivationStatus>> + Send {
        self.polls.fetch_add(1, Ordering::Relaxed);
        let result = (self.on_status)(request_id);
        async move { answered(result) }
    }
    fn open_case(
        &self,
        _key: &str,
        body: &api::CaseRequest,
        _stop: &Stop,
    ) -> impl Future<Output = Call<api::Case>> + Send {
        let case = api::Case {
            case_id: format!("CS-{}", body.item_key),
            state: api::CaseState::Open,
            item_key: body.item_key.clone(),
            contract_id: body.contract_id.clone(),
            reason: body.reason.clone(),
            opened_at: Utc::now(),
        };
        async move { answered(Ok(case)) }
    }
    fn sent(&self) -> u64 {
        self.submits.load(Ordering::Relaxed) + self.polls.load(Ordering::Relaxed)
    }
    fn throttled(&self) -> u64 {
        0
    }
}

/// Every item accepted, under request id `rq-N` for the N-th submission.
fn accept_all(n: u64, body: &api::ReactivationRequest) -> api::ReactivationAccepted {
    api::ReactivationAccepted {
        request_id: format!("rq-{n}"),
        accepted_at: Utc::now(),
        items: body
            .items
            .iter()
            .map(|i| ItemDecision {
                item_key: i.item_key.clone(),
                status: Decision::Accepted,
                reason: None,
                eta: None,
            })
            .collect(),
    }
}

fn status_of(request_id: &str, keys: &[&str], state: api::ItemState) -> api::ReactivationStatus {
    api::ReactivationStatus {
        request_id: request_id.to_string(),
        contract_id: "C1".into(),
        region: "AMER".into(),
        quote_id: "Q1".into(),
        accepted_at: Utc::now(),
        items: keys
            .iter()
            .map(|k| ItemStatus {
                item_key: k.to_string(),
                state,
                eta: None,
                confirmation_id: (state == api::ItemState::Active).then(|| "CNF-1".into()),
                features_verified: None,
                activated_at: None,
                reason: None,
            })
            .collect(),
    }
}

/// A journal with `keys` planned in one (contract, region).
fn journal_with(dir: &std::path::Path, keys: &[&str]) -> (Journal, i64) {
    let j = Journal::open(&dir.join("j.sqlite")).unwrap();
    let run = j
        .begin_run("x.csv", NaiveDate::from_ymd_opt(2026, 1, 2).unwrap())
        .unwrap();
    for k in keys {
        let item = PlannedItem {
            event_key: k.to_string(),
            item_type: ItemType::Device,
            serial_number: Some(k.to_string()),
            mac_address: None,
            model: Some("CCX 500".into()),
            license_id: None,
            bound_serial: None,
            contract_id: "C1".into(),
            region: "AMER".into(),
            country: "US".into(),
            deactivated_at: "2026-01-01".into(),
            coverage: CoverageWire::Standard,
        };
        j.plan_item(&item, ItemState::Planned, run).unwrap();
    }
    j.set_quote("C1", "AMER", "Q1").unwrap();
    (j, run)
}

/// Submits and tracks the journal's items with the fake vendor, without
/// progress or work after rounds.
async fn track(
    j: &Journal,
    fake: Arc<Fake>,
    run: i64,
    settings: &SubmitSettings,
    stop: &Stop,
) -> Result<SubmitReport, SubmitError> {
    submit_and_track(
        j,
        fake,
        run,
        settings,
        stop,
        &NoSubmitProgress,
        &mut NothingAfter,
    )
    .await
}

fn quick(batch_size: usize) -> SubmitSettings {
    SubmitSettings {
        batch_size,
        concurrency: 2,
        escalate: false,
        track_timeout: Duration::from_secs(5),
        poll_first: Duration::from_millis(1),
        poll_cap: Duration::from_millis(5),
        cooldown: Duration::from_millis(1),
    }
}

fn states(j: &Journal, keys: &[&str]) -> Vec<(String, Option<String>)> {
    keys.iter()
        .map(|k| {
            let r = j.record(k, 1).unwrap().unwrap();
            (r.state.as_str().to_string(), r.reason)
        })
        .collect()
}

/// Regression: a 404 for a request id the journal held was polled again
/// and again, silently, until the tracking time-out.
#[tokio::test]
async fn a_404_for_a_held_request_id_is_resent_then_failed_after_three_losses() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ["A", "B", "C"];
    let (j, run) = journal_with(dir.path(), &keys);
    let fake = Fake::new(
        Box::new(|n, body| Ok(accept_all(n, body))),
        Box::new(|id| {
            Err(CallError::Refused {
                status: 404,
                message: format!("not_found: no reactivation request `{id}`"),
            })
        }),
    );
    let started = Instant::now();
    let report = track(&j, fake.clone(), run, &quick(10), &Stop::new())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "it did not wait for the time-out"
    );
    assert_eq!(report.stopped_because, None);
    assert_eq!(fake.submits.load(Ordering::Relaxed), u64::from(MAX_LOSSES));
    for (state, reason) in states(&j, &keys) {
        assert_eq!(state, "failed");
        assert_eq!(reason.as_deref(), Some("VENDOR_LOST_REQUEST"));
    }
}

/// A vendor that forgot a request once gets it again, under the same
/// key, and the items go on to be activated.
#[tokio::test]
async fn a_batch_the_vendor_forgot_once_is_resent_and_activated() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ["A", "B"];
    let (j, run) = journal_with(dir.path(), &keys);
    let fake = Fake::new(
        Box::new(|n, body| Ok(accept_all(n, body))),
        Box::new(|id| match id {
            "rq-0" => Err(CallError::Refused {
                status: 404,
                message: "not_found".into(),
            }),
            _ => Ok(status_of(id, &["A", "B"], api::ItemState::Active)),
        }),
    );
    let report = track(&j, fake.clone(), run, &quick(10), &Stop::new())
        .await
        .unwrap();
    assert_eq!(report.stopped_because, None);
    assert_eq!(fake.submits.load(Ordering::Relaxed), 2);
    for (state, _) in states(&j, &keys) {
        assert_eq!(state, "active");
    }
    let rec = j.record("A", 1).unwrap().unwrap();
    assert_eq!(rec.request_id.as_deref(), Some("rq-1"));
}

/// Regression: a status answer about other items (a restarted vendor
/// reusing its ids) updated nothing, and the batch was never polled again.
#[tokio::test]
async fn a_status_about_other_items_is_never_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ["A", "B"];
    let (j, run) = journal_with(dir.path(), &keys);
    let fake = Fake::new(
        Box::new(|n, body| Ok(accept_all(n, body))),
        Box::new(|id| Ok(status_of(id, &["X", "Y"], api::ItemState::Active))),
    );
    track(&j, fake.clone(), run, &quick(10), &Stop::new())
        .await
        .unwrap();
    assert_eq!(fake.submits.load(Ordering::Relaxed), u64::from(MAX_LOSSES));
    for (state, reason) in states(&j, &keys) {
        assert_eq!(state, "failed");
        assert_eq!(reason.as_deref(), Some("VENDOR_ANSWER_MISMATCH"));
    }
    // An acceptance that leaves an item out is no acceptance either.
    let dir = tempfile::tempdir().unwrap();
    let (j, run) = journal_with(dir.path(), &keys);
    let fake = Fake::new(
        Box::new(|n, body| {
            let mut a = accept_all(n, body);
            a.items.pop();
            Ok(a)
        }),
        Box::new(|id| Ok(status_of(id, &["A", "B"], api::ItemState::Active))),
    );
    let settings = SubmitSettings {
        escalate: true,
        ..quick(10)
    };
    track(&j, fake.clone(), run, &settings, &Stop::new())
        .await
        .unwrap();
    for (state, reason) in states(&j, &keys) {
        assert_eq!(state, "escalated", "failed, then a case was opened");
        assert_eq!(reason.as_deref(), Some("VENDOR_ANSWER_MISMATCH"));
    }
}

/// A batch with an item already activated is not sent again (that could
/// pay twice): its other items are failed at once.
#[tokio::test]
async fn a_partly_settled_batch_is_never_resent() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ["A", "B"];
    let (j, run) = journal_with(dir.path(), &keys);
    let polls = Arc::new(AtomicU64::new(0));
    let p = polls.clone();
    let fake = Fake::new(
        Box::new(|n, body| Ok(accept_all(n, body))),
        Box::new(move |id| {
            if p.fetch_add(1, Ordering::Relaxed) == 0 {
                let mut s = status_of(id, &["A", "B"], api::ItemState::Active);
                s.items[1].state = api::ItemState::Provisioning;
                s.items[1].confirmation_id = None;
                Ok(s)
            } else {
                Err(CallError::Refused {
                    status: 404,
                    message: "not_found".into(),
                })
            }
        }),
    );
    track(&j, fake.clone(), run, &quick(10), &Stop::new())
        .await
        .unwrap();
    assert_eq!(fake.submits.load(Ordering::Relaxed), 1);
    assert_eq!(
        states(&j, &keys),
        [
            ("active".to_string(), None),
            (
                "failed".to_string(),
                Some("VENDOR_LOST_REQUEST".to_string())
            )
        ]
    );
}

/// Regression: a task that panicked was logged and the run went on to
/// end "finished".
#[tokio::test]
async fn a_panicking_task_stops_the_run_which_says_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ["A", "B", "C", "D"];
    let (j, run) = journal_with(dir.path(), &keys);
    let fake = Fake::new(
        Box::new(|n, body| {
            if n == 1 {
                panic!("boom in a request task");
            }
            Ok(accept_all(n, body))
        }),
        Box::new(|id| Ok(status_of(id, &["A", "B"], api::ItemState::Active))),
    );
    let settings = SubmitSettings {
        concurrency: 1,
        ..quick(2)
    };
    let stop = Stop::new();
    let report = track(&j, fake, run, &settings, &stop).await.unwrap();
    let aborted = report.aborted.expect("the run knows a task crashed");
    assert!(aborted.contains("boom in a request task"), "{aborted}");
    assert!(stop.is_triggered());
    // What came back before is recorded; the crashed batch stays
    // `submitted`, for the next run to re-send under its key.
    let by_state: Vec<String> = states(&j, &keys).into_iter().map(|s| s.0).collect();
    assert_eq!(by_state, ["accepted", "accepted", "submitted", "submitted"]);
}

/// The tracking time-out triggers the stop, so that every wait ends.
#[tokio::test]
async fn the_time_out_stops_the_run_and_every_wait_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let (j, run) = journal_with(dir.path(), &["A"]);
    let fake = Fake::new(
        Box::new(|n, body| Ok(accept_all(n, body))),
        Box::new(|id| Ok(status_of(id, &["A"], api::ItemState::Provisioning))),
    );
    let settings = SubmitSettings {
        track_timeout: Duration::from_millis(200),
        ..quick(10)
    };
    let stop = Stop::new();
    let report = track(&j, fake, run, &settings, &stop).await.unwrap();
    assert!(stop.is_triggered());
    let why = report.stopped_because.unwrap();
    assert!(why.contains("time-out"), "{why}");
    assert_eq!(states(&j, &["A"])[0].0, "provisioning");
}

/// A progress that keeps the counts it is given.
struct Recorded {
    shows: bool,
    updates: std::sync::Mutex<Vec<Vec<(ItemState, u64)>>>,
}

impl SubmitProgress for Recorded {
    fn shows_counts(&self) -> bool {
        self.shows
    }
    fn update(&self, counts: &[(ItemState, u64)], _requests: u64) {
        self.updates.lock().unwrap().push(counts.to_vec());
    }
}

/// Items are counted by state only for a progress that shows the counts
/// (the count reads a whole index of the ledger); one that shows them
/// gets the counts at the end.
#[tokio::test]
async fn items_are_counted_only_for_a_progress_that_shows_them() {
    for shows in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let keys = ["A", "B"];
        let (j, run) = journal_with(dir.path(), &keys);
        let fake = Fake::new(
            Box::new(|n, body| Ok(accept_all(n, body))),
            Box::new(|id| Ok(status_of(id, &["A", "B"], api::ItemState::Active))),
        );
        let progress = Recorded {
            shows,
            updates: Default::default(),
        };
        let report = submit_and_track(
            &j,
            fake,
            run,
            &quick(10),
            &Stop::new(),
            &progress,
            &mut NothingAfter,
        )
        .await
        .unwrap();
        assert_eq!(report.stopped_because, None);
        let updates = progress.updates.into_inner().unwrap();
        if shows {
            assert_eq!(updates.last(), Some(&vec![(ItemState::Active, 2)]));
        } else {
            assert_eq!(updates, Vec::<Vec<(ItemState, u64)>>::new());
        }
    }
}

/// The ledger is not even asked for counts that nobody shows, nor before
/// a count is due; the last one is taken whenever it comes.
#[test]
fn counts_are_taken_only_when_shown_and_due() {
    let calls = std::cell::Cell::new(0);
    let count = || {
        calls.set(calls.get() + 1);
        Ok(vec![(ItemState::Active, 1)])
    };
    let progress = |shows| Recorded {
        shows,
        updates: Default::default(),
    };
    let t0 = Instant::now();
    let (hidden, shown) = (progress(false), progress(true));
    let mut c = CountCadence::new(t0);
    let later = t0 + Duration::from_secs(2);
    c.show(&hidden, later, false, count, 0).unwrap();
    c.show(&hidden, later, true, count, 0).unwrap();
    assert_eq!(calls.get(), 0);
    c.show(&shown, t0, false, count, 0).unwrap();
    assert_eq!(calls.get(), 0);
    c.show(&shown, later, false, count, 7).unwrap();
    assert_eq!(calls.get(), 1);
    // The next one waits again, but not the last.
    c.show(&shown, later, false, count, 7).unwrap();
    assert_eq!(calls.get(), 1);
    c.show(&shown, later, true, count, 7).unwrap();
    assert_eq!(calls.get(), 2);
    assert_eq!(shown.updates.into_inner().unwrap().len(), 2);
    assert!(hidden.updates.into_inner().unwrap().is_empty());
}

#[test]
fn counting_waits_a_second_then_49_times_what_the_last_count_took() {
    let t0 = Instant::now();
    let mut c = CountCadence::new(t0);
    assert!(!c.due(t0 + Duration::from_millis(999)));
    assert!(c.due(t0 + Duration::from_secs(1)));
    // A quick count: the next one a second after it.
    let end = t0 + Duration::from_millis(1010);
    c.counted(end, Duration::from_millis(10));
    assert!(!c.due(end + Duration::from_millis(999)));
    assert!(c.due(end + Duration::from_secs(1)));
    // A count of half a second: the next one 24.5 s after it.
    let end = end + Duration::from_millis(1500);
    c.counted(end, Duration::from_millis(500));
    assert!(!c.due(end + Duration::from_millis(24_499)));
    assert!(c.due(end + Duration::from_millis(24_500)));
    // A count of an hour: the next one 49 hours after it.
    let end = end + Duration::from_secs(3600);
    c.counted(end, Duration::from_secs(3600));
    assert!(!c.due(end + Duration::from_secs(49 * 3600 - 1)));
    assert!(c.due(end + Duration::from_secs(49 * 3600)));
}
