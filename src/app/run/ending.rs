//! How a run ended: from the items' states in the journal to `Ending` and its exit code.

use crate::app::Outcome;
use crate::submit::journal::ItemState;
use crate::submit::SubmitReport;

/// How a run ended, as `summary.json` and the exit code say it (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
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
    pub fn name(self) -> &'static str {
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
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Ending::Finished | Ending::DryRun => Some(Outcome::Success),
            Ending::FinishedWithFailures | Ending::BudgetExceeded => Some(Outcome::Partial),
            Ending::Stopped => Some(Outcome::Interrupted),
            Ending::Aborted => None,
        }
    }

    pub fn exit_code(self) -> i32 {
        self.outcome().map_or(1, Outcome::exit_code)
    }
}

/// Journal items not in a terminal state (SPEC §6): planned, submitted,
/// accepted, provisioning; and, when cases are opened, failed and
/// manual-review items whose case is not open yet.
pub fn unfinished_items(counts: &[(ItemState, u64)], escalate: bool) -> Vec<(ItemState, u64)> {
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

pub fn unfinished_text(unfinished: &[(ItemState, u64)]) -> String {
    let total: u64 = unfinished.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = unfinished
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    format!("{total} items not finished ({})", parts.join(", "))
}

/// The run's ending, from the items' states in the journal, never from how
/// the submission returned: any item not terminal means "stopped".
pub fn ending(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the outcome came from how the submission returned, so
    /// a crashed task or a lost request ended "finished" with items still
    /// submitted or accepted. It comes from the journal's states now.
    #[test]
    fn the_outcome_comes_from_the_items_states() {
        use ItemState::*;
        let done = SubmitReport::default();
        let end = |states: &[(ItemState, u64)], escalate: bool, failed: u64| {
            ending(
                &done,
                &unfinished_items(states, escalate),
                failed,
                false,
                false,
            )
        };
        for st in [Planned, Submitted, Accepted, Provisioning] {
            assert_eq!(end(&[(Active, 9), (st, 1)], true, 0), Ending::Stopped);
            assert_eq!(end(&[(Active, 9), (st, 1)], false, 0), Ending::Stopped);
        }
        // A failed item or a manual review waits for its case when cases are on.
        for st in [Failed, ManualReview] {
            assert_eq!(end(&[(st, 1)], true, 1), Ending::Stopped);
            assert_eq!(end(&[(st, 1)], false, 1), Ending::FinishedWithFailures);
        }
        assert_eq!(end(&[(Active, 9), (Planned, 0)], true, 0), Ending::Finished);
        assert_eq!(
            end(&[(Active, 9), (Escalated, 1)], true, 1),
            Ending::FinishedWithFailures
        );
        assert_eq!(Ending::Stopped.exit_code(), 4);
        assert_eq!(Ending::FinishedWithFailures.exit_code(), 3);
        assert_eq!(Ending::Finished.exit_code(), 0);
        // A crashed task is a failure whatever the states say.
        let crashed = SubmitReport {
            aborted: Some("a request task panicked".into()),
            ..SubmitReport::default()
        };
        let e = ending(&crashed, &[], 0, false, false);
        assert_eq!(
            (e, e.exit_code(), e.name()),
            (Ending::Aborted, 1, "aborted")
        );
        assert_eq!(
            unfinished_text(&unfinished_items(&[(Accepted, 3), (ManualReview, 2)], true)),
            "5 items not finished (accepted 3, manual_review 2)"
        );
    }
}
