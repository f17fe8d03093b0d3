//! `refleet audit verify [FILE] [--state JOURNAL]`: checks the hash chain of
//! an audit log and names the first broken record; with the journal, also
//! that the log is that journal's and holds every record it recorded.

use std::path::PathBuf;

use super::{Global, Outcome, UsageError};
use crate::audit;
use crate::submit::journal::JournalReader;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check every record's hash and link; exit 1 naming the first broken
    /// record. With --state, also check that the log is that journal's and
    /// holds every record the journal recorded (a log cut short is caught).
    #[command(
        after_help = "Examples:\n  refleet audit verify refleet-out/audit.jsonl\n  refleet audit verify --state /var/lib/refleet/journal.sqlite   # the journal's own log"
    )]
    Verify {
        /// The audit log (audit.jsonl or audit-<journal id>.jsonl, beside
        /// the journal); default with --state: that journal's log.
        #[arg(required_unless_present = "state")]
        file: Option<PathBuf>,
        /// The journal that writes the log.
        #[arg(long, value_name = "FILE", value_parser = super::paths::StateParser)]
        state: Option<PathBuf>,
    },
}

pub(super) fn run(command: Command, global: &Global) -> anyhow::Result<Outcome> {
    match command {
        Command::Verify { file, state } => {
            let binding = match &state {
                Some(state) => {
                    let journal =
                        JournalReader::open(state).map_err(|e| UsageError(e.to_string()))?;
                    Some(
                        journal
                            .audit_binding()
                            .map_err(|e| UsageError(e.to_string()))?,
                    )
                }
                None => None,
            };
            let file = match (file, &state, &binding) {
                (Some(file), _, _) => file,
                (None, Some(state), Some(b)) => {
                    let dir = state
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    audit::locate(dir, b)
                        .map_err(|e| anyhow::anyhow!("journal {}: {e}", state.display()))?
                        .path
                }
                _ => return Err(UsageError("give the audit log or --state".into()).into()),
            };
            let verified = audit::verify_against(&file, binding.as_ref())?;
            if !global.quiet {
                let owner = match &verified.journal_id {
                    Some(id) => format!("journal {id}"),
                    None => "a journal from before logs named theirs".to_string(),
                };
                let mut text = format!(
                    "{}: {} records, chain intact, written by {owner}",
                    file.display(),
                    verified.records
                );
                if let (Some(state), Some(b)) = (&state, &binding) {
                    text.push_str(&format!(
                        "; holds the {} records the journal {} recorded",
                        b.chain.records,
                        state.display()
                    ));
                    let more = verified.records.saturating_sub(b.chain.records);
                    if more > 0 {
                        text.push_str(&format!(
                            " and {more} more (written just before a crash; the next run adopts them)"
                        ));
                    }
                }
                println!("{text}");
            }
            Ok(Outcome::Success)
        }
    }
}
