//! `refleet status [--state FILE]`: where a run stands, read from its
//! journal (safe while the run goes on: WAL lets a reader in); by default
//! the one `refleet run` uses by default.

use std::path::PathBuf;

use super::{Global, Outcome, UsageError};
use crate::audit;
use crate::submit::journal::{ItemState, JournalReader, RunRow};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's journal; default: the one `refleet run` uses by default
    /// (refleet/journal.sqlite in the user's state folder).
    #[arg(long, value_name = "FILE", env = "REFLEET_STATE", value_parser = super::paths::StateParser)]
    state: Option<PathBuf>,
}

pub(super) fn run(args: Args, _global: &Global) -> anyhow::Result<Outcome> {
    let journal_file = super::paths::existing_journal(args.state)?;
    let journal =
        JournalReader::open(&journal_file).map_err(|e| UsageError(super::error_text(&e)))?;
    let counts = journal.counts()?;
    let n = |s: ItemState| counts.iter().find(|(st, _)| *st == s).map_or(0, |c| c.1);
    let total: u64 = counts.iter().map(|c| c.1).sum();
    let done = n(ItemState::Active)
        + n(ItemState::Rejected)
        + n(ItemState::Failed)
        + n(ItemState::Escalated);
    let mut text = format!(
        "journal {}: {total} items, {done} done\n",
        journal_file.display()
    );
    for (state, count) in &counts {
        text.push_str(&format!("  {:<13} {count}\n", state.as_str()));
    }
    text.push_str(&audit_text(&journal, &journal_file));
    if let Some(RunRow {
        id,
        started_at: started,
        finished_at,
        outcome,
    }) = journal.last_run()?
    {
        match finished_at {
            Some(f) => text.push_str(&format!(
                "last run #{id}: {started} → {f}, {}\n",
                outcome.unwrap_or_default()
            )),
            None => text.push_str(&format!(
                "run #{id} started {started}: still going, or stopped without finishing\n"
            )),
        }
        // The rate over the last minute of attempts, and an ETA from it.
        if let Some(rate) = journal.recent_rate(id)? {
            text.push_str(&format!(
                "rate: {rate:.1} requests/s over the last minute of requests\n"
            ));
        }
    }
    let left = n(ItemState::Planned)
        + n(ItemState::Submitted)
        + n(ItemState::Accepted)
        + n(ItemState::Provisioning);
    if left > 0 {
        text.push_str(&format!("{left} items still to submit or on their way\n"));
    }
    print!("{text}");
    Ok(Outcome::Success)
}

/// The journal's id and its audit log: where it is, how many records the
/// journal recorded, and any problem a run would refuse to start on.
fn audit_text(journal: &JournalReader, state: &std::path::Path) -> String {
    let binding = match journal.audit_binding() {
        Ok(b) => b,
        Err(e) => return format!("audit log: unknown ({e})\n"),
    };
    let dir = state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut text = format!("journal id {}\n", binding.journal_id);
    match audit::locate(dir, &binding) {
        Ok(l) if l.exists => {
            text.push_str(&format!(
                "audit log: {}, {} records recorded",
                l.path.display(),
                binding.chain.records
            ));
            if l.unrecorded > 0 {
                text.push_str(&format!(
                    " and {} more written before a crash (the next run adopts them)",
                    l.unrecorded
                ));
            }
            text.push('\n');
        }
        Ok(l) => text.push_str(&format!(
            "audit log: none yet (the first activation creates {})\n",
            l.path.display()
        )),
        Err(e) => text.push_str(&format!(
            "audit log: PROBLEM, a run on this journal is refused until it is fixed: {e}\n"
        )),
    }
    text
}
