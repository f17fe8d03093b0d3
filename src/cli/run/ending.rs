//! How a run ended: from the items' states in the journal to `Ending` and its exit code.

use crate::cli::Outcome;
use crate::submit::journal::ItemState;
use crate::submit::SubmitReport;

/// How a run ended, as `summary.json` and the exit code say it (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    Finished,
    FinishedWithFailures,
    /// Some item is not in a terminal state: run again to resume.
    Stopped,
    BudgetExceeded,
    DryRun,
    /// A request task crashed: exit 1, after the reports are written.
    Aborted,
}

impl Ending {
    pub(super) fn name(self) -> &'static str {
        match self {
            Ending::Finished => "finished",
            Ending::FinishedWithFailures => "finished_with_failures",
            Ending::Stopped => "stopped_resumable",
            Ending::BudgetExceeded => "budget_exceeded",
            Ending::DryRun => "dry_run",
            Ending::Aborted => "aborted",
        }
    }

    /// The exit code of a run that returns `Ok`, or `None` for a failure.
    pub(super) fn outcome(self) -> Option<Outcome> {
        match self {
            Ending::Finished | Ending::DryRun => Some(Outcome::Success),
            Ending::FinishedWithFailures | Ending::BudgetExceeded => Some(Outcome::Partial),
            Ending::Stopped => Some(Outcome::Interrupted),
            Ending::Aborted => None,
        }
    }

    pub(super) fn exit_code(self) -> i32 {
        self.outcome().map_or(1, Outcome::exit_code)
    }
}

/// Journal items not in a terminal state (SPEC §6): planned, submitted,
/// accepted, provisioning; and, when cases are opened, failed and
/// manual-review items whose case is not open yet.
pub(super) fn unfinished_items(
    counts: &[(ItemState, u64)],
    escalate: bool,
) -> Vec<(ItemState, u64)> {
    counts
        .iter()
        .copied()
        .filter(|(state, n)| {
            *n > 0
                && match state {
                    ItemState::Planned
                    | ItemState::Submitted
                    | ItemState::Accepted
                    | ItemState::Provisioning => true,
                    ItemState::Failed | ItemState::ManualReview => escalate,
                    ItemState::Active | ItemState::Rejected | ItemState::Escalated => false,
                }
        })
        .collect()
}

pub(super) fn unfinished_text(unfinished: &[(ItemState, u64)]) -> String {
    let total: u64 = unfinished.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = unfinished
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    format!("{total} items not finished ({})", parts.join(", "))
}

/// The run's ending, from the items' states in the journal, never from how
/// the submission returned: any item not terminal means "stopped".
pub(super) fn ending(
    report: &SubmitReport,
    unfinished: &[(ItemState, u64)],
    failed_or_rejected: u64,
    budget_refused: bool,
    dry_run: bool,
) -> Ending {
    if report.aborted.is_some() {
        Ending::Aborted
    } else if budget_refused {
        Ending::BudgetExceeded
    } else if dry_run {
        Ending::DryRun
    } else if !unfinished.is_empty() {
        Ending::Stopped
    } else if failed_or_rejected > 0 {
        Ending::FinishedWithFailures
    } else {
        Ending::Finished
    }
}
