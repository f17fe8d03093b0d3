//! `refleet status [--state FILE|URL]`: where a run stands, read from its
//! journal (safe while the run goes on: WAL lets a reader in); by default
//! the one `refleet run` uses by default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use super::paths::{shown, State};
use super::{Global, Outcome, UsageError};
use crate::audit;
use crate::report::SiteCounts;
use crate::submit::journal::{AuditLedger, FinishedRun, History, ItemState, JournalReader, RunRow};
use crate::submit::pg::PgJournal;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The journal (default: the one `refleet run` uses), or a shared
    /// ledger (postgres://…).
    #[arg(long, value_name = "FILE|URL", env = "REFLEET_STATE", hide_env_values = true,
          value_parser = super::paths::AnyStateParser)]
    state: Option<State>,
    /// Also list where each site stands, as of the last finished run
    /// (from its summary; the journal keeps no sites).
    #[arg(long, value_name = "site", value_parser = ["site"])]
    by: Option<String>,
}

pub(super) fn run(args: Args, _global: &Global) -> anyhow::Result<Outcome> {
    let by_site = args.by.is_some();
    let text = match args.state {
        Some(State::Ledger(url)) => {
            let ledger =
                PgJournal::open_existing(&url).map_err(|e| UsageError(super::error_text(&e)))?;
            let audit = match ledger.audit_state() {
                Ok(b) => format!(
                    "ledger id {}\naudit chain: {} records in the ledger (`refleet audit verify --state URL` checks it)\n",
                    b.journal_id, b.chain.records
                ),
                Err(e) => format!("audit chain: unknown ({e})\n"),
            };
            status_text(&ledger, &format!("ledger {}", shown(&url)), audit, by_site)?
        }
        Some(State::Journal(path)) => journal_status(Some(path), by_site)?,
        None => journal_status(None, by_site)?,
    };
    print!("{text}");
    Ok(Outcome::Success)
}

/// The status of the journal at `state`, or of the default one.
fn journal_status(state: Option<PathBuf>, by_site: bool) -> anyhow::Result<String> {
    let journal_file = super::paths::existing_journal(state)?;
    let journal =
        JournalReader::open(&journal_file).map_err(|e| UsageError(super::error_text(&e)))?;
    let audit = audit_text(&journal, &journal_file);
    status_text(
        &journal,
        &format!("journal {}", journal_file.display()),
        audit,
        by_site,
    )
}

/// What `status` prints of `history`, named `name`, with `audit` (what
/// is known of its audit log) after the counts, and the sites of its last
/// finished run when `by_site`.
fn status_text(
    history: &dyn History,
    name: &str,
    audit: String,
    by_site: bool,
) -> anyhow::Result<String> {
    let counts = history.counts()?;
    let n = |s: ItemState| counts.iter().find(|(st, _)| *st == s).map_or(0, |c| c.1);
    let total: u64 = counts.iter().map(|c| c.1).sum();
    let done = n(ItemState::Active)
        + n(ItemState::Rejected)
        + n(ItemState::Failed)
        + n(ItemState::Escalated);
    let mut text = format!("{name}: {total} items, {done} done\n");
    for (state, count) in &counts {
        text.push_str(&format!("  {:<13} {count}\n", state.as_str()));
    }
    text.push_str(&audit);
    if let Some(RunRow {
        id,
        started_at: started,
        finished_at,
        outcome,
    }) = history.last_run()?
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
        if let Some(rate) = history.recent_rate(id)? {
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
    if by_site {
        text.push_str(&sites_text(history.last_finished_run()?)?);
    }
    Ok(text)
}

/// The by-site table of the last finished run, from the summary the
/// journal keeps of it: the sites needing the most work first.
fn sites_text(run: Option<FinishedRun>) -> anyhow::Result<String> {
    let Some(run) = run else {
        return Ok("by site: no finished run yet (sites are counted when a run ends)\n".into());
    };
    #[derive(serde::Deserialize)]
    struct Sites {
        #[serde(default)]
        by_site: Option<BTreeMap<String, SiteCounts>>,
    }
    let sites: Sites = serde_json::from_str(&run.summary_json)
        .with_context(|| format!("the summary of run #{} is not as expected", run.id))?;
    let Some(sites) = sites.by_site else {
        return Ok(format!(
            "by site: run #{} was made by a refleet that did not count sites; the next run will\n",
            run.id
        ));
    };
    let mut sites: Vec<(String, SiteCounts)> = sites.into_iter().collect();
    sites.sort_by(|a, b| SiteCounts::listing_order((&a.0, &a.1), (&b.0, &b.1)));
    let mut text = format!(
        "by site, as of run #{} (ended {}), most rows needing work first:\n",
        run.id, run.finished_at
    );
    let width = sites
        .iter()
        .map(|(s, _)| site_label(s).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(4, 40);
    text.push_str(&format!(
        "  {:<width$} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>9}\n",
        "site", "rows", "active", "on the way", "failed/rej", "escalated", "ineligible", "invalid"
    ));
    for (site, c) in &sites {
        let [rows, active, on_the_way, failed, escalated, ineligible, invalid] = c.columns();
        text.push_str(&format!(
            "  {:<width$} {rows:>9} {active:>9} {on_the_way:>10} {failed:>9} {escalated:>9} {ineligible:>10} {invalid:>9}\n",
            site_label(site),
        ));
    }
    Ok(text)
}

/// A site as the table shows it: rows without one say so; a control
/// character from the export is not sent to the terminal.
fn site_label(site: &str) -> String {
    if site.is_empty() {
        return "(no site)".into();
    }
    site.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

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
