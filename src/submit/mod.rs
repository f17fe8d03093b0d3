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

pub mod client;
pub mod journal;
pub mod retry;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::api;
use client::{ApiClient, Attempt, Call, CallError};
use journal::{Batch, CaseToOpen, ItemState, Journal, JournalError, Tracked};

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

/// How the submission ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitReport {
    /// HTTP requests sent (every attempt).
    pub requests: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Stopped before every item was done (Ctrl-C, tracking time-out, or
    /// requests still unanswered): run again to resume.
    pub unfinished: bool,
    /// Why, when unfinished.
    pub stopped_because: Option<String>,
}

/// Why the run cannot go on at all.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the API refused our credentials (HTTP {status}: {message}); check REFLEET_API_TOKEN or --token-file")]
    Unauthorized { status: u16, message: String },
}

enum Work {
    Submit(Batch),
    Poll(Tracked, u32),
    Case(CaseToOpen),
}

enum Done {
    Submit(Batch, Call<api::ReactivationAccepted>),
    Poll(Tracked, u32, Call<api::ReactivationStatus>),
    Case(CaseToOpen, Call<api::Case>),
}

/// A poll or a re-send that waits for its time.
struct Later {
    due: Instant,
    work: Work,
}

/// Sends every planned item and tracks it to a terminal state, or until
/// `stop` is set or the tracking time-out passes.
pub async fn submit_and_track(
    journal: &Journal,
    client: Arc<ApiClient>,
    run_id: i64,
    settings: &SubmitSettings,
    stop: Arc<AtomicBool>,
    progress: &dyn SubmitProgress,
) -> Result<SubmitReport, SubmitError> {
    let started = Instant::now();
    let deadline = started + settings.track_timeout;
    let batch_size = settings.batch_size.clamp(1, api::MAX_BATCH);
    let concurrency = settings.concurrency.max(1);

    let mut now_queue: VecDeque<Work> = journal
        .unsent_batches()?
        .into_iter()
        .map(Work::Submit)
        .collect();
    now_queue.extend(journal.tracked()?.into_iter().map(|t| Work::Poll(t, 0)));
    let mut cases_queued: HashSet<String> = HashSet::new();
    if settings.escalate {
        queue_cases(journal, &mut now_queue, &mut cases_queued)?;
    }
    let mut later: Vec<Later> = Vec::new();
    let mut planned_left = true;
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut stopped_because: Option<String> = None;
    let mut last_progress = Instant::now();

    let mut finished: Vec<Done> = Vec::new();
    loop {
        let now = Instant::now();
        if stopped_because.is_none() {
            if stop.load(Ordering::Relaxed) {
                stopped_because = Some("stopped on request (Ctrl-C)".into());
            } else if now >= deadline {
                stopped_because = Some(format!(
                    "tracking time-out ({} s) reached",
                    settings.track_timeout.as_secs()
                ));
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
            spawn(&mut tasks, &client, work);
        }
        if tasks.is_empty()
            && (stopped_because.is_some()
                || (now_queue.is_empty() && later.is_empty() && !planned_left))
        {
            break;
        }
        if last_progress.elapsed() >= Duration::from_millis(200) {
            progress.update(&journal.counts()?, client.sent.load(Ordering::Relaxed));
            last_progress = Instant::now();
        }
        let next_due = later
            .iter()
            .map(|l| l.due)
            .min()
            .unwrap_or(deadline)
            .min(deadline)
            .min(Instant::now() + Duration::from_millis(200));
        let mut joined = Vec::new();
        tokio::select! {
            Some(j) = tasks.join_next(), if !tasks.is_empty() => joined.push(j),
            _ = tokio::time::sleep_until(next_due.into()) => {}
        }
        while let Some(j) = tasks.try_join_next() {
            joined.push(j);
        }
        for j in joined {
            match j {
                Ok(done) => finished.push(done),
                // A task that panicked: its batch stays `submitted` and the
                // next run re-sends it with the same key.
                Err(e) => tracing::error!("a request task failed: {e}"),
            }
        }
    }
    progress.update(&journal.counts()?, client.sent.load(Ordering::Relaxed));
    let unfinished = stopped_because.is_some() || !later.is_empty();
    if stopped_because.is_none() && !later.is_empty() {
        stopped_because = Some("requests still unanswered".into());
    }
    Ok(SubmitReport {
        requests: client.sent.load(Ordering::Relaxed),
        throttled: client.throttled.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        unfinished,
        stopped_because,
    })
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

fn spawn(tasks: &mut JoinSet<Done>, client: &Arc<ApiClient>, work: Work) {
    let client = client.clone();
    tasks.spawn(async move {
        match work {
            Work::Submit(b) => {
                let call = client.submit(&b.idempotency_key, &b.request).await;
                Done::Submit(b, call)
            }
            Work::Poll(t, n) => {
                let call = client.status(&t.request_id).await;
                Done::Poll(t, n, call)
            }
            Work::Case(c) => {
                let key = api::batch_key([format!("case|{}", c.event_key).as_str()]);
                let call = client.open_case(&key, &c.request).await;
                Done::Case(c, call)
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
                Ok(answer) => {
                    journal.batch_accepted(batch_id, n, &answer)?;
                    later.push(Later {
                        due: now + settings.poll_first,
                        work: Work::Poll(
                            Tracked {
                                batch_id,
                                request_id: answer.request_id,
                            },
                            1,
                        ),
                    });
                }
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
                        due: now + settings.cooldown,
                        work: Work::Submit(batch),
                    });
                }
            }
        }
        Done::Poll(tracked, polls, call) => {
            log_attempts(journal, run_id, "poll", &tracked.request_id, &call.attempts)?;
            match call.result {
                Ok(status) => {
                    let open = journal.record_status(tracked.batch_id, &status)?;
                    if open > 0 {
                        later.push(Later {
                            due: now + poll_delay(settings, polls),
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
                Err(_) => later.push(Later {
                    due: now + poll_delay(settings, polls).max(settings.cooldown),
                    work: Work::Poll(tracked, polls + 1),
                }),
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
                    due: now + settings.cooldown,
                    work: Work::Case(case),
                }),
            }
        }
    }
    Ok(())
}
