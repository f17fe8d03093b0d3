//! `refleet audit verify [FILE] [--state JOURNAL]`: checks the hash chain of
//! an audit log and names the first broken record; with the journal, also
//! that the log is that journal's and holds every record it recorded. With
//! `--state postgres://…` it checks the chain a PostgreSQL ledger holds.
//!
//! `refleet audit export --state STATE [--out FILE]`: the audit log as
//! JSONL, from a ledger (its chain in the database) or a journal (its log
//! file), for auditors and for `verify`.

use std::path::{Path, PathBuf};

use super::paths::{shown, AnyStateParser, State};
use super::{Global, Outcome, UsageError};
use crate::audit;
use crate::report::AtomicFile;
use crate::submit::journal::JournalReader;
use crate::submit::pg::PgLedger;

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
        /// The journal that writes the log, or a PostgreSQL ledger
        /// (postgres://…), whose chain is checked in the database.
        #[arg(long, value_name = "FILE|URL", value_parser = AnyStateParser)]
        state: Option<State>,
    },
    /// Write the audit log as JSONL (one record a line, the format every
    /// journal's log has): a PostgreSQL ledger's chain, or a journal's log.
    #[command(
        after_help = "Examples:\n  refleet audit export --state postgres://refleet@db.example/refleet --out audit.jsonl\n  refleet audit verify audit.jsonl"
    )]
    Export {
        /// The ledger (postgres://…; its password from PGPASSWORD rather
        /// than the URL) or the journal's file.
        #[arg(long, value_name = "FILE|URL", env = "REFLEET_STATE", value_parser = AnyStateParser)]
        state: State,
        /// The file to write (atomically); default: standard output.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// The log of the journal at `state`, beside it.
fn journal_log(state: &Path, binding: &audit::Binding) -> anyhow::Result<PathBuf> {
    let dir = state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(audit::locate(dir, binding)
        .map_err(|e| anyhow::anyhow!("journal {}: {e}", state.display()))?
        .path)
}

/// Runs `work` on the ledger at `url`, opened to read (a database without
/// a ledger is refused, never given one).
fn with_ledger<T>(
    url: &str,
    work: impl AsyncFnOnce(&mut PgLedger) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut ledger = PgLedger::open_existing(url).await.map_err(|e| {
            UsageError(format!("--state {}: {}", shown(url), super::error_text(&e)))
        })?;
        work(&mut ledger).await
    })
}

/// `audit verify --state URL`: the ledger's chain, exported to a private
/// temporary file and checked as a log is, and its header naming this
/// ledger.
fn verify_ledger(url: &str, global: &Global) -> anyhow::Result<Outcome> {
    let copy = tempfile::NamedTempFile::new()?;
    let (label, id) = with_ledger(url, async |ledger| {
        let mut out = std::io::BufWriter::new(copy.reopen()?);
        ledger.export_audit(&mut out).await?;
        std::io::Write::flush(&mut out)?;
        Ok((ledger.label().to_string(), ledger.ledger_id().await?))
    })?;
    let verified = audit::verify(copy.path())
        .map_err(|e| anyhow::anyhow!("the audit chain of the ledger {label}: {e}"))?;
    if verified.journal_id.as_deref() != Some(id.as_str()) {
        anyhow::bail!(
            "the audit chain of the ledger {label} opens with another ledger's header ({})",
            verified.journal_id.as_deref().unwrap_or("none")
        );
    }
    if !global.quiet {
        println!(
            "ledger {label}: {} records, chain intact, written by ledger {id}",
            verified.records
        );
    }
    Ok(Outcome::Success)
}

pub(super) fn run(command: Command, global: &Global) -> anyhow::Result<Outcome> {
    match command {
        Command::Verify {
            file: None,
            state: Some(State::Ledger(url)),
        } => verify_ledger(&url, global),
        Command::Verify {
            file: Some(_),
            state: Some(State::Ledger(_)),
        } => Err(UsageError(
            "a ledger's chain is in its database: give --state URL alone, or the exported file alone".into(),
        )
        .into()),
        Command::Export { state, out } => export(&state, out.as_deref(), global),
        Command::Verify { file, state } => {
            let state = state.and_then(|s| match s {
                State::Journal(path) => Some(path),
                // Both ledger cases are answered above.
                State::Ledger(_) => None,
            });
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
                (None, Some(state), Some(b)) => journal_log(state, b)?,
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

/// `audit export`: the chain into `out` (atomically: a reader never sees
/// half a log) or onto standard output.
fn export(state: &State, out: Option<&Path>, global: &Global) -> anyhow::Result<Outcome> {
    let (records, from) = match out {
        Some(path) => {
            let mut file = AtomicFile::create(path)?;
            let done = export_into(state, &mut file)?;
            file.commit()?;
            done
        }
        None => export_into(state, &mut std::io::stdout().lock())?,
    };
    if !global.quiet {
        eprintln!(
            "{records} audit records of {from} written to {}",
            out.map_or("standard output".to_string(), |p| p.display().to_string())
        );
    }
    Ok(Outcome::Success)
}

/// Writes the log of `state` into `sink`; returns its records and how to
/// name where they came from.
fn export_into(state: &State, sink: &mut impl std::io::Write) -> anyhow::Result<(u64, String)> {
    let done = match state {
        State::Ledger(url) => with_ledger(url, async |ledger| {
            let n = ledger.export_audit(sink).await?;
            Ok((n, format!("ledger {}", ledger.label())))
        })?,
        State::Journal(path) => {
            let journal = JournalReader::open(path).map_err(|e| UsageError(e.to_string()))?;
            let binding = journal
                .audit_binding()
                .map_err(|e| UsageError(e.to_string()))?;
            let log = journal_log(path, &binding)?;
            let reading = |e: std::io::Error| anyhow::anyhow!("reading {}: {e}", log.display());
            let mut file = std::io::BufReader::new(std::fs::File::open(&log).map_err(reading)?);
            let mut records = 0u64;
            loop {
                let buf = std::io::BufRead::fill_buf(&mut file).map_err(reading)?;
                if buf.is_empty() {
                    break;
                }
                records += memchr::memchr_iter(b'\n', buf).count() as u64;
                sink.write_all(buf)?;
                let n = buf.len();
                std::io::BufRead::consume(&mut file, n);
            }
            (records, format!("journal {}", path.display()))
        }
    };
    sink.flush()?;
    Ok(done)
}
