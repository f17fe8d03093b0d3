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
pub mod journal;
pub mod pg;
pub mod reconcile;
pub mod retry;
pub mod stop;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::{JoinError, JoinSet};

use crate::api;
use client::{ApiClient, Attempt, Call, CallError};
use journal::{
    Batch, BatchItem, CaseToOpen, ItemState, Journal, JournalError, LookupPurpose, LookupTarget,
    Tracked,
};
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
    fn after_round(&mut self, journal: &Journal) -> anyhow::Result<()>;
}

/// Nothing after a round.
pub struct NothingAfter;

impl AfterRound for NothingAfter {
    fn after_round(&mut self, _journal: &Journal) -> anyhow::Result<()> {
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

/// `now + d`, or far in the future when that does not fit an `Instant`
/// (a `--track-timeout` of centuries means "no time-out").
fn after(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// Sends every planned item and tracks it to a terminal state, or until
/// `stop` is triggered or the tracking time-out passes (which triggers it,
/// so that every wait in flight ends too).
pub async fn submit_and_track<V: Vendor>(
    journal: &Journal,
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
    let mut last_progress = Instant::now();

    let mut finished: Vec<Done> = Vec::new();
    loop {
        let now = Instant::now();
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
        if tasks.is_empty()
            && (stopped_because.is_some()
                || (now_queue.is_empty() && later.is_empty() && !planned_left))
        {
            break;
        }
        // Counting items by state reads a whole index: once a second.
        if last_progress.elapsed() >= Duration::from_secs(1) {
            after_round
                .after_round(journal)
                .map_err(SubmitError::AfterRound)?;
            progress.update(&journal.counts()?, vendor.sent());
            last_progress = Instant::now();
        }
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
    progress.update(&journal.counts()?, vendor.sent());
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
    journal: &Journal,
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
    journal: &Journal,
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

/// Losses of one batch (its request id unknown to the vendor, or an answer
/// about other items) after which its items are failed, not re-sent.
pub const MAX_LOSSES: u32 = 3;

/// How the vendor lost or confused an accepted batch: never a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// It refuses the request id the journal holds (a 404: it restarted
    /// and forgot, or the id was another batch's).
    Unknown {
        request_id: String,
        status: u16,
        message: String,
    },
    /// It answered about other items, or about another request.
    Mismatch { detail: String },
}

impl Lost {
    /// The reason its items get when refleet gives up on them.
    pub fn code(&self) -> &'static str {
        match self {
            Lost::Unknown { .. } => "VENDOR_LOST_REQUEST",
            Lost::Mismatch { .. } => "VENDOR_ANSWER_MISMATCH",
        }
    }
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Unknown {
                request_id,
                status,
                message,
            } => write!(
                f,
                "the vendor does not know request {request_id} (HTTP {status}: {message})"
            ),
            Lost::Mismatch { detail } => {
                write!(
                    f,
                    "the vendor's answer does not match the batch sent: {detail}"
                )
            }
        }
    }
}

/// What to do about a lost batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recovery {
    /// Send it again, same key and body: a vendor that still holds the key
    /// replays its answer, one that forgot it takes the batch afresh.
    Resend,
    /// Fail its items still on their way (then escalate them), saying why.
    GiveUp(String),
}

/// The decision, from what the journal knows (the vendor is not asked: a
/// re-send keeps the batch's idempotency key).
fn recovery(losses: u32, settled: usize) -> Recovery {
    if settled > 0 {
        Recovery::GiveUp(format!(
            "not re-sent: {settled} of its items were already activated or failed, and sending them again could pay twice"
        ))
    } else if losses >= MAX_LOSSES {
        Recovery::GiveUp(format!("lost {losses} times, not re-sent again"))
    } else {
        Recovery::Resend
    }
}

/// At most this much of a vendor-given value goes into a message.
fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Whether an acceptance answers the batch sent: each item once, no other.
fn check_accepted(batch: &Batch, answer: &api::ReactivationAccepted) -> Result<(), Lost> {
    let sent: HashSet<&str> = batch
        .request
        .items
        .iter()
        .map(|i| i.item_key.as_str())
        .collect();
    let mut seen = HashSet::with_capacity(sent.len());
    for d in &answer.items {
        let key = d.item_key.as_str();
        if !sent.contains(key) {
            return Err(Lost::Mismatch {
                detail: format!("item {} was not in it", shown(key)),
            });
        }
        if !seen.insert(key) {
            return Err(Lost::Mismatch {
                detail: format!("item {} is answered twice", shown(key)),
            });
        }
    }
    if seen.len() != sent.len() {
        return Err(Lost::Mismatch {
            detail: format!(
                "{} of its {} items are missing from the answer",
                sent.len() - seen.len(),
                sent.len()
            ),
        });
    }
    Ok(())
}

/// Whether a status answer is about the request polled and covers every
/// item of the batch still on its way, with no item from elsewhere.
fn check_status(
    tracked: &Tracked,
    items: &[BatchItem],
    status: &api::ReactivationStatus,
) -> Result<(), Lost> {
    if status.request_id != tracked.request_id {
        return Err(Lost::Mismatch {
            detail: format!(
                "asked about request {}, answered about {}",
                tracked.request_id,
                shown(&status.request_id)
            ),
        });
    }
    let states: HashMap<&str, ItemState> = items
        .iter()
        .map(|i| (i.event_key.as_str(), i.state))
        .collect();
    let mut seen = HashSet::with_capacity(status.items.len());
    for it in &status.items {
        let key = it.item_key.as_str();
        if !states.contains_key(key) {
            return Err(Lost::Mismatch {
                detail: format!(
                    "item {} of request {} is not in it",
                    shown(key),
                    tracked.request_id
                ),
            });
        }
        if !seen.insert(key) {
            return Err(Lost::Mismatch {
                detail: format!("item {} is answered twice", shown(key)),
            });
        }
    }
    let missing = states
        .iter()
        .filter(|(k, st)| {
            matches!(**st, ItemState::Accepted | ItemState::Provisioning) && !seen.contains(**k)
        })
        .count();
    if missing > 0 {
        return Err(Lost::Mismatch {
            detail: format!(
                "{missing} of its items still on their way are missing from the answer about request {}",
                tracked.request_id
            ),
        });
    }
    Ok(())
}

/// A lost batch: re-sent under its key, or given up, with one warning.
#[allow(clippy::too_many_arguments)]
fn lose(
    journal: &Journal,
    run_id: i64,
    settings: &SubmitSettings,
    batch_id: i64,
    lost: &Lost,
    later: &mut Vec<Later>,
    queue: &mut VecDeque<Work>,
    cases_queued: &mut HashSet<String>,
) -> Result<(), SubmitError> {
    let losses = journal.record_loss(run_id, batch_id, &lost.to_string())?;
    let settled = journal
        .batch_items(batch_id)?
        .iter()
        .filter(|i| {
            matches!(
                i.state,
                ItemState::Active | ItemState::Failed | ItemState::Escalated
            )
        })
        .count();
    match recovery(losses, settled) {
        Recovery::Resend => {
            tracing::warn!(
                batch = batch_id,
                losses,
                "{lost}: re-sending batch {batch_id} under its idempotency key (loss {losses} of at most {MAX_LOSSES})"
            );
            let batch = journal.batch_resend(batch_id, &lost.to_string())?;
            later.push(Later {
                due: after(Instant::now(), settings.cooldown),
                work: Work::Submit(batch),
            });
        }
        Recovery::GiveUp(why) => {
            let then = if settings.escalate {
                "failed, then escalated"
            } else {
                "failed"
            };
            tracing::warn!(
                batch = batch_id,
                losses,
                code = lost.code(),
                "{lost}: batch {batch_id} {why}; its items still on their way are {then} with reason {}",
                lost.code()
            );
            journal.batch_lost(batch_id, lost.code(), &format!("{lost}; {why}"))?;
            if settings.escalate {
                queue_cases(journal, queue, cases_queued)?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record(
    journal: &Journal,
    run_id: i64,
    settings: &SubmitSettings,
    done: Done,
    later: &mut Vec<Later>,
    queue: &mut VecDeque<Work>,
    cases_queued: &mut HashSet<String>,
) -> Result<(), SubmitError> {
    let now = Instant::now();
    match done {
        Done::Submit(batch, call) => {
            let batch_id = batch.id;
            let target = format!("batch {batch_id}");
            log_attempts(journal, run_id, "submit", &target, &call.attempts)?;
            let n = call.attempts.len() as u32;
            match call.result {
                Ok(answer) => match check_accepted(&batch, &answer) {
                    Ok(()) => {
                        journal.batch_accepted(&batch, n, &answer)?;
                        later.push(Later {
                            due: after(now, settings.poll_first),
                            work: Work::Poll(
                                Tracked {
                                    batch_id,
                                    request_id: answer.request_id,
                                },
                                1,
                            ),
                        });
                    }
                    Err(lost) => {
                        journal.batch_unanswered(batch_id, n, &lost.to_string())?;
                        lose(
                            journal,
                            run_id,
                            settings,
                            batch_id,
                            &lost,
                            later,
                            queue,
                            cases_queued,
                        )?;
                    }
                },
                Err(CallError::Refused { status, message }) if status == 401 || status == 403 => {
                    journal.batch_unanswered(batch_id, n, &message)?;
                    return Err(SubmitError::Unauthorized { status, message });
                }
                Err(CallError::Refused { status, message }) => {
                    journal.batch_refused(batch_id, n, &format!("HTTP {status}: {message}"))?;
                    if settings.escalate {
                        queue_cases(journal, queue, cases_queued)?;
                    }
                }
                Err(e @ CallError::GaveUp { .. }) => {
                    // Re-sent later, same key and body, as the journal has it.
                    journal.batch_unanswered(batch_id, n, &e.to_string())?;
                    later.push(Later {
                        due: after(now, settings.cooldown),
                        work: Work::Submit(batch),
                    });
                }
                // Stays `submitted`: the next run re-sends it with its key.
                Err(e @ CallError::Stopped) => {
                    journal.batch_unanswered(batch_id, n, &e.to_string())?;
                }
            }
        }
        Done::Poll(tracked, polls, call) => {
            log_attempts(journal, run_id, "poll", &tracked.request_id, &call.attempts)?;
            match call.result {
                Ok(status) => {
                    let items = journal.batch_items(tracked.batch_id)?;
                    if let Err(lost) = check_status(&tracked, &items, &status) {
                        return lose(
                            journal,
                            run_id,
                            settings,
                            tracked.batch_id,
                            &lost,
                            later,
                            queue,
                            cases_queued,
                        );
                    }
                    let open = journal.record_status(tracked.batch_id, &items, &status)?;
                    if open > 0 {
                        later.push(Later {
                            due: after(now, poll_delay(settings, polls)),
                            work: Work::Poll(tracked, polls + 1),
                        });
                    }
                    if settings.escalate
                        && status
                            .items
                            .iter()
                            .any(|i| i.state == api::ItemState::Failed)
                    {
                        queue_cases(journal, queue, cases_queued)?;
                    }
                }
                Err(CallError::Refused { status, message }) if status == 401 || status == 403 => {
                    return Err(SubmitError::Unauthorized { status, message });
                }
                // A final refusal of the request id the vendor gave us.
                Err(CallError::Refused { status, message }) => {
                    let lost = Lost::Unknown {
                        request_id: tracked.request_id.clone(),
                        status,
                        message,
                    };
                    lose(
                        journal,
                        run_id,
                        settings,
                        tracked.batch_id,
                        &lost,
                        later,
                        queue,
                        cases_queued,
                    )?;
                }
                Err(CallError::GaveUp { .. }) => later.push(Later {
                    due: after(now, poll_delay(settings, polls).max(settings.cooldown)),
                    work: Work::Poll(tracked, polls + 1),
                }),
                // Still accepted: the next run polls it again.
                Err(CallError::Stopped) => {}
            }
        }
        Done::Case(case, call) => {
            log_attempts(journal, run_id, "case", &case.event_key, &call.attempts)?;
            match call.result {
                Ok(opened) => journal.case_opened(&case.event_key, &opened.case_id)?,
                Err(CallError::Refused { status, message }) if status == 401 || status == 403 => {
                    return Err(SubmitError::Unauthorized { status, message });
                }
                // Refused for good: the item keeps its state, without a case.
                Err(CallError::Refused { status, message }) => {
                    tracing::warn!(
                        "support case for {} refused: HTTP {status}: {message}",
                        case.event_key
                    );
                }
                Err(CallError::GaveUp { .. }) => later.push(Later {
                    due: after(now, settings.cooldown),
                    work: Work::Case(case),
                }),
                // The next run opens it.
                Err(CallError::Stopped) => {}
            }
        }
        Done::Lookup(targets, polls, call) => {
            let target = format!("{} items", targets.len());
            log_attempts(journal, run_id, "lookup", &target, &call.attempts)?;
            match call.result {
                Ok(answer) if reconcile::answer_matches(&targets, &answer) => {
                    let mut held = std::collections::BTreeMap::new();
                    let open = reconcile::apply(
                        journal,
                        LookupPurpose::Track,
                        &targets,
                        &answer,
                        &mut held,
                    )?;
                    if open > 0 {
                        later.push(Later {
                            due: after(now, poll_delay(settings, polls)),
                            work: Work::Lookup(targets, polls + 1),
                        });
                    }
                }
                Err(CallError::Refused { status, message }) if status == 401 || status == 403 => {
                    return Err(SubmitError::Unauthorized { status, message });
                }
                // Tracked again by the next run.
                Err(CallError::Refused { .. }) | Err(CallError::Stopped) => {}
                Ok(_) | Err(CallError::GaveUp { .. }) => later.push(Later {
                    due: after(now, poll_delay(settings, polls).max(settings.cooldown)),
                    work: Work::Lookup(targets, polls + 1),
                }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
