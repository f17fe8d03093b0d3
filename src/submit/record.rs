//! What came back for a batch, into the journal: accepted, rejected, tracked or lost, with the losses after which a batch is failed rather than re-sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use super::client::CallError;
use super::journal::{Batch, BatchItem, ItemState, Ledger, LookupPurpose, Tracked};
use super::{
    after, log_attempts, poll_delay, queue_cases, reconcile, Done, Later, SubmitError,
    SubmitSettings, Work,
};
use crate::api;

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
pub(super) enum Recovery {
    /// Send it again, same key and body: a vendor that still holds the key
    /// replays its answer, one that forgot it takes the batch afresh.
    Resend,
    /// Fail its items still on their way (then escalate them), saying why.
    GiveUp(String),
}

/// The decision, from what the journal knows (the vendor is not asked: a
/// re-send keeps the batch's idempotency key).
pub(super) fn recovery(losses: u32, settled: usize) -> Recovery {
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
pub(super) fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Whether an acceptance answers the batch sent: each item once, no other.
pub(super) fn check_accepted(
    batch: &Batch,
    answer: &api::ReactivationAccepted,
) -> Result<(), Lost> {
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
pub(super) fn check_status(
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
pub(super) fn lose(
    journal: &impl Ledger,
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
pub(super) fn record(
    journal: &impl Ledger,
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
                // Stays `submitted`: the next run re-sends it with its key;
                // unless nothing of it ever reached the vendor (the API
                // could not be reached at all): then it was never sent.
                Err(e @ CallError::Stopped) => {
                    if !journal.batch_never_sent(batch_id, run_id)? {
                        journal.batch_unanswered(batch_id, n, &e.to_string())?;
                    }
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
