//! Submission and tracking (SPEC §6): the journal's planned items go to the
//! vendor API in batches, accepted requests are polled until every item is
//! `active`, `failed` or `rejected`, and failed or manual-review items get a
//! support case.
//!
//! One coordinator owns the [`Journal`]; requests run as tasks, at most
//! `concurrency` at once, each through the [`client::ApiClient`]'s rate
//! limiter and retry policy. A batch is on disk as `submitted` before its
//! task starts, and its outcome is written when the task ends, so a crash at
//! any moment leaves the journal able to resume without paying twice.
//!
//! Nothing here decides whether the run finished: the caller reads that
//! from the items' states in the journal. What this does promise:
//! - every wait ends soon after the [`Stop`] is triggered (a signal, or the
//!   tracking time-out, which triggers it);
//! - a vendor that lost or confused an accepted batch (a 404 for its request
//!   id, an answer about other items) is never taken for a success: the
//!   batch is re-sent under its idempotency key, at most [`MAX_LOSSES`]
//!   times, then its items are failed (and escalated) with a reason;
//! - a task that panics stops the run, which then ends as a failure once
//!   what came back is recorded.

pub mod client;
pub mod held;
pub mod journal;
pub mod pg;
pub mod reconcile;
pub mod retry;
pub mod stop;

mod record;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::{JoinError, JoinSet};

use crate::api;
use client::{ApiClient, Attempt, Call, CallError};
use journal::{
    AuditLedger, Batch, BatchLedger, CaseLedger, CaseToOpen, ItemState, JournalError, Ledger,
    LookupPurpose, LookupTarget, Tracked,
};
use record::record;
pub use record::{Lost, MAX_LOSSES};
pub use stop::Stop;

/// How the coordinator paces its work.
#[derive(Debug, Clone)]
pub struct SubmitSettings {
    /// Items per request, at most [`api::MAX_BATCH`].
    pub batch_size: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Open support cases for failed and manual-review items.
    pub escalate: bool,
    /// Give up tracking after this long (the run is then resumable).
    pub track_timeout: Duration,
    /// First status poll after acceptance, doubled per poll up to `poll_cap`.
    pub poll_first: Duration,
    pub poll_cap: Duration,
    /// Wait before re-sending a batch that got no answer after every retry.
    pub cooldown: Duration,
}

impl Default for SubmitSettings {
    fn default() -> Self {
        SubmitSettings {
            batch_size: 100,
            concurrency: 8,
            escalate: true,
            track_timeout: Duration::from_secs(30 * 60),
            poll_first: Duration::from_millis(100),
            poll_cap: Duration::from_secs(10),
            cooldown: Duration::from_secs(2),
        }
    }
}

/// Progress of a submission, for a terminal or a log.
pub trait SubmitProgress: Sync {
    /// Whether [`SubmitProgress::update`] shows the counts it is given:
    /// counting the items by state reads all of them, so it is not done for
    /// a progress that nobody sees.
    fn shows_counts(&self) -> bool {
        false
    }
    fn update(&self, _counts: &[(ItemState, u64)], _requests: u64) {}
}

pub struct NoSubmitProgress;
impl SubmitProgress for NoSubmitProgress {}

/// The vendor API as the coordinator uses it: [`ApiClient`] in a run, a
/// stand-in in tests. Each call ends [`CallError::Stopped`] soon after
/// `stop` is triggered.
pub trait Vendor: Send + Sync + 'static {
    fn submit(
        &self,
        idempotency_key: &str,
        body: &api::ReactivationRequest,
        stop: &Stop,
    ) -> impl Future<Output = Call<api::ReactivationAccepted>> + Send;
    fn status(
        &self,
        request_id: &str,
        stop: &Stop,
    ) -> impl Future<Output = Call<api::ReactivationStatus>> + Send;
    fn open_case(
        &self,
        idempotency_key: &str,
        body: &api::CaseRequest,
        stop: &Stop,
    ) -> impl Future<Output = Call<api::Case>> + Send;
    /// The vendor's latest record of up to [`api::MAX_LOOKUP`] items. A
    /// vendor without the route answers 404, which the lookups before
    /// paying report as [`SubmitError::NoLookup`].
    fn lookup(
        &self,
        _body: &api::LookupRequest,
        _stop: &Stop,
    ) -> impl Future<Output = Call<api::LookupAnswer>> + Send {
        async {
            Call {
                result: Err(CallError::Refused {
                    status: 404,
                    message: "no lookup route".into(),
                }),
                attempts: Vec::new(),
            }
        }
    }
    /// Attempts sent so far.
    fn sent(&self) -> u64;
    /// Attempts answered 429.
    fn throttled(&self) -> u64;
}

impl Vendor for ApiClient {
    fn submit(
        &self,
        idempotency_key: &str,
        body: &api::ReactivationRequest,
        stop: &Stop,
    ) -> impl Future<Output = Call<api::ReactivationAccepted>> + Send {
        ApiClient::submit(self, idempotency_key, body, stop)
    }
    fn status(
        &self,
        request_id: &str,
        stop: &Stop,
    ) -> impl Future<Output = Call<api::ReactivationStatus>> + Send {
        ApiClient::status(self, request_id, stop)
    }
    fn open_case(
        &self,
        idempotency_key: &str,
        body: &api::CaseRequest,
        stop: &Stop,
    ) -> impl Future<Output = Call<api::Case>> + Send {
        ApiClient::open_case(self, idempotency_key, body, stop)
    }
    fn lookup(
        &self,
        body: &api::LookupRequest,
        stop: &Stop,
    ) -> impl Future<Output = Call<api::LookupAnswer>> + Send {
        ApiClient::lookup(self, body, stop)
    }
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// Work on what the journal settled, after a round of answers is committed
/// (about once a second, and once at the end): `run` writes the audit log
/// as it goes.
pub trait AfterRound {
    fn after_round(&mut self, ledger: &dyn AuditLedger) -> anyhow::Result<()>;
}

/// Nothing after a round.
pub struct NothingAfter;

impl AfterRound for NothingAfter {
    fn after_round(&mut self, _ledger: &dyn AuditLedger) -> anyhow::Result<()> {
        Ok(())
    }
}

/// How the submission ended. Whether the run finished is not here: the
/// caller reads it from the items' states in the journal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitReport {
    /// HTTP requests sent (every attempt).
    pub requests: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Why it stopped before its work was done (a signal, the tracking
    /// time-out, a crashed task).
    pub stopped_because: Option<String>,
    /// A request task panicked: the run must end as a failure (exit 1),
    /// after recording what is known.
    pub aborted: Option<String>,
}

/// Why the run cannot go on at all.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the API refused our credentials (HTTP {status}: {message}); check REFLEET_API_TOKEN or --token-file")]
    Unauthorized { status: u16, message: String },
    #[error("the vendor API cannot look items up (HTTP {status}: {message}), so refleet cannot tell what it already holds; nothing was paid. Pass --no-reconcile to pay without asking (safe only when this journal is the only one that ever bought for these devices)")]
    NoLookup { status: u16, message: String },
    #[error("{0}")]
    Aborted(String),
    #[error("{0:#}")]
    AfterRound(anyhow::Error),
}

enum Work {
    Submit(Batch),
    Poll(Tracked, u32),
    Case(CaseToOpen),
    /// Items the vendor held on their way, looked up again until done.
    Lookup(Vec<LookupTarget>, u32),
}

enum Done {
    Submit(Batch, Call<api::ReactivationAccepted>),
    Poll(Tracked, u32, Call<api::ReactivationStatus>),
    Case(CaseToOpen, Call<api::Case>),
    Lookup(Vec<LookupTarget>, u32, Call<api::LookupAnswer>),
}

/// A poll or a re-send that waits for its time.
struct Later {
    due: Instant,
    work: Work,
}

/// How often a runner with nothing in hand looks at what other runners
/// hold of its items (see [`BatchLedger::held_elsewhere`]).
const ELSEWHERE_EVERY: Duration = Duration::from_secs(1);

/// `now + d`, or far in the future when that does not fit an `Instant`
/// (a `--track-timeout` of centuries means "no time-out").
fn after(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// When the submission loop counts the items by state for a progress line.
/// The count reads all the items (the run's, on a shared ledger), and takes
/// longer as they grow; the loop sends nothing meanwhile, and on a shared
/// ledger the count also slows the server's other work. So it is done only
/// for a progress that shows it, at most once a second, and the wait after
/// one is 49 times what it took: counting takes at most a fiftieth of the
/// loop's time however large the ledger.
#[derive(Debug)]
struct CountCadence {
    next: Instant,
}

impl CountCadence {
    const EVERY: Duration = Duration::from_secs(1);

    fn new(now: Instant) -> CountCadence {
        CountCadence {
            next: after(now, CountCadence::EVERY),
        }
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A count that took `took` ended at `ended`.
    fn counted(&mut self, ended: Instant, took: Duration) {
        self.next = after(ended, took.saturating_mul(49).max(CountCadence::EVERY));
    }

    /// Hands `progress` the counts `count` takes, if it shows them and a
    /// count is due at `now` (or this is the `last` one, at the end).
    fn show(
        &mut self,
        progress: &dyn SubmitProgress,
        now: Instant,
        last: bool,
        count: impl FnOnce() -> Result<Vec<(ItemState, u64)>, JournalError>,
        requests: u64,
    ) -> Result<(), JournalError> {
        if !progress.shows_counts() || !(last || self.due(now)) {
            return Ok(());
        }
        let started = Instant::now();
        let counts = count()?;
        let took = started.elapsed();
        self.counted(after(now, took), took);
        progress.update(&counts, requests);
        Ok(())
    }
}

/// Sends every planned item and tracks it to a terminal state, or until
/// `stop` is triggered or the tracking time-out passes (which triggers it,
/// so that every wait in flight ends too).
pub async fn submit_and_track<V: Vendor, L: Ledger>(
    journal: &L,
    vendor: Arc<V>,
    run_id: i64,
    settings: &SubmitSettings,
    stop: &Stop,
    progress: &dyn SubmitProgress,
    after_round: &mut dyn AfterRound,
) -> Result<SubmitReport, SubmitError> {
    let started = Instant::now();
    let deadline = after(started, settings.track_timeout);
    let batch_size = settings.batch_size.clamp(1, api::MAX_BATCH);
    let concurrency = settings.concurrency.max(1);

    let mut now_queue: VecDeque<Work> = journal
        .unsent_batches()?
        .into_iter()
        .map(Work::Submit)
        .collect();
    now_queue.extend(journal.tracked()?.into_iter().map(|t| Work::Poll(t, 0)));
    // Items a lookup found on their way at the vendor: followed by lookups.
    let mut after_row = 0;
    loop {
        let page = journal.to_look_up(LookupPurpose::Track, after_row, api::MAX_LOOKUP)?;
        let Some(last) = page.last() else { break };
        after_row = last.rowid;
        now_queue.push_back(Work::Lookup(page, 0));
    }
    let mut cases_queued: HashSet<String> = HashSet::new();
    if settings.escalate {
        queue_cases(journal, &mut now_queue, &mut cases_queued)?;
    }
    let mut later: Vec<Later> = Vec::new();
    let mut planned_left = true;
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut stopped_because: Option<String> = None;
    let mut aborted: Option<String> = None;
    let mut last_round = Instant::now();
    let mut counting = CountCadence::new(Instant::now());
    // When this runner has nothing left in hand but other runners on a
    // shared ledger hold items of this run: when it last looked.
    let mut last_look_elsewhere: Option<Instant> = None;

    let mut finished: Vec<Done> = Vec::new();
    loop {
        let now = Instant::now();
        journal.keep_alive()?;
        if stopped_because.is_none() {
            if let Some(why) = stop.reason() {
                stopped_because = Some(why);
            } else if now >= deadline {
                let why = format!(
                    "tracking time-out ({} s) reached",
                    settings.track_timeout.as_secs()
                );
                stop.trigger(why.clone());
                stopped_because = Some(why);
            }
        }
        // One transaction, so one sync to disk, per round: the answers that
        // came in, then the batches about to leave (on disk before they do).
        let to_send = journal.atomically(|| -> Result<Vec<Work>, SubmitError> {
            for done in finished.drain(..) {
                record(
                    journal,
                    run_id,
                    settings,
                    done,
                    &mut later,
                    &mut now_queue,
                    &mut cases_queued,
                )?;
            }
            let mut to_send = Vec::new();
            if stopped_because.is_some() {
                return Ok(to_send);
            }
            // Work whose time has come joins the queue.
            let mut i = 0;
            while i < later.len() {
                if later[i].due <= now {
                    now_queue.push_back(later.swap_remove(i).work);
                } else {
                    i += 1;
                }
            }
            while tasks.len() + to_send.len() < concurrency {
                let work = match now_queue.pop_front() {
                    Some(w) => w,
                    None if planned_left => match journal.next_batch(batch_size)? {
                        Some(b) => Work::Submit(b),
                        None => {
                            planned_left = false;
                            continue;
                        }
                    },
                    None => break,
                };
                to_send.push(work);
            }
            Ok(to_send)
        })?;
        for work in to_send {
            spawn(&mut tasks, &vendor, stop, work);
        }
        if tasks.is_empty() && stopped_because.is_some() {
            break;
        }
        if tasks.is_empty() && now_queue.is_empty() && later.is_empty() && !planned_left {
            // Nothing in hand. On a shared ledger, other runners may hold
            // items of this run: wait for them (once a second), taking over
            // the batches of one that died, before the run ends.
            if last_look_elsewhere.is_none_or(|t| t.elapsed() >= ELSEWHERE_EVERY) {
                if journal.held_elsewhere(run_id)? == 0 {
                    break;
                }
                if last_look_elsewhere.is_none() {
                    tracing::info!("other runners hold items of this run; waiting for them");
                }
                last_look_elsewhere = Some(Instant::now());
                let (resend, follow) = journal.take_over()?;
                now_queue.extend(resend.into_iter().map(Work::Submit));
                now_queue.extend(follow.into_iter().map(|t| Work::Poll(t, 0)));
                // Items of this run another runner failed: escalated here.
                if settings.escalate {
                    queue_cases(journal, &mut now_queue, &mut cases_queued)?;
                }
                // Items a runner gave back (a batch it never sent) are
                // planned again.
                planned_left = true;
            }
        }
        if last_round.elapsed() >= Duration::from_secs(1) {
            after_round
                .after_round(journal)
                .map_err(SubmitError::AfterRound)?;
            last_round = Instant::now();
        }
        counting.show(
            progress,
            Instant::now(),
            false,
            || journal.counts(),
            vendor.sent(),
        )?;
        let next_due = later
            .iter()
            .map(|l| l.due)
            .min()
            .unwrap_or(deadline)
            .min(deadline)
            .min(after(Instant::now(), Duration::from_millis(200)));
        let mut joined = Vec::new();
        tokio::select! {
            Some(j) = tasks.join_next(), if !tasks.is_empty() => joined.push(j),
            () = stop.triggered(), if stopped_because.is_none() => {}
            () = tokio::time::sleep_until(next_due.into()) => {}
        }
        while let Some(j) = tasks.try_join_next() {
            joined.push(j);
        }
        for j in joined {
            match j {
                Ok(done) => finished.push(done),
                Err(e) => {
                    // Its batch stays as the journal has it (`submitted`:
                    // re-sent with the same key by the next run); the others
                    // are stopped and recorded, then the run fails.
                    let why = task_failure(e);
                    tracing::error!("{why}; stopping the run");
                    stop.trigger(why.clone());
                    if stopped_because.is_none() {
                        stopped_because = Some(why.clone());
                    }
                    aborted.get_or_insert(why);
                }
            }
        }
    }
    after_round
        .after_round(journal)
        .map_err(SubmitError::AfterRound)?;
    counting.show(
        progress,
        Instant::now(),
        true,
        || journal.counts(),
        vendor.sent(),
    )?;
    Ok(SubmitReport {
        requests: vendor.sent(),
        throttled: vendor.throttled(),
        seconds: started.elapsed().as_secs_f64(),
        stopped_because,
        aborted,
    })
}

/// What a task that did not return says about itself.
fn task_failure(e: JoinError) -> String {
    if !e.is_panic() {
        return format!("a request task ended abnormally: {e}");
    }
    let payload = e.into_panic();
    let said = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("a request task panicked ({said}); this is a bug in refleet, please report it")
}

fn queue_cases(
    journal: &impl CaseLedger,
    queue: &mut VecDeque<Work>,
    queued: &mut HashSet<String>,
) -> Result<(), JournalError> {
    for c in journal.cases_to_open()? {
        if queued.insert(c.event_key.clone()) {
            queue.push_back(Work::Case(c));
        }
    }
    Ok(())
}

fn spawn<V: Vendor>(tasks: &mut JoinSet<Done>, vendor: &Arc<V>, stop: &Stop, work: Work) {
    let vendor = vendor.clone();
    let stop = stop.clone();
    tasks.spawn(async move {
        match work {
            Work::Submit(b) => {
                let call = vendor.submit(&b.idempotency_key, &b.request, &stop).await;
                Done::Submit(b, call)
            }
            Work::Poll(t, n) => {
                let call = vendor.status(&t.request_id, &stop).await;
                Done::Poll(t, n, call)
            }
            Work::Case(c) => {
                let key = api::batch_key([format!("case|{}", c.event_key).as_str()]);
                let call = vendor.open_case(&key, &c.request, &stop).await;
                Done::Case(c, call)
            }
            Work::Lookup(targets, n) => {
                let body = api::LookupRequest {
                    items: targets.iter().map(|t| t.item.clone()).collect(),
                };
                let call = vendor.lookup(&body, &stop).await;
                Done::Lookup(targets, n, call)
            }
        }
    });
}

fn log_attempts(
    journal: &impl BatchLedger,
    run_id: i64,
    kind: &str,
    target: &str,
    attempts: &[Attempt],
) -> Result<(), JournalError> {
    for a in attempts {
        journal.record_attempt(
            run_id,
            a.at,
            kind,
            target,
            a.status,
            a.error.as_deref(),
            a.millis,
        )?;
    }
    Ok(())
}

fn poll_delay(settings: &SubmitSettings, polls: u32) -> Duration {
    settings
        .poll_first
        .saturating_mul(1u32 << polls.min(16))
        .min(settings.poll_cap)
}

#[cfg(test)]
mod tests;
