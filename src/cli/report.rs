//! `refleet report [--state FILE] --out DIR`: `report.html` from a journal
//! alone (by default the one `refleet run` uses by default); the page
//! itself is `report::html`.

use std::path::PathBuf;

use anyhow::Context;

use super::paths::{shown, State};
use super::{Global, Outcome, UsageError};
use crate::report::html::{self, Problems, ReportData, Source};
use crate::submit::journal::{FinishedRun, History, JournalReader};
use crate::submit::pg::PgJournal;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The journal (default: the one `refleet run` uses), or a shared
    /// ledger (postgres://…): the report is of its last finished run.
    #[arg(long, value_name = "FILE|URL", env = "REFLEET_STATE", hide_env_values = true,
          value_parser = super::paths::AnyStateParser)]
    state: Option<State>,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

const NO_PROBLEMS: &str = "The journal does not keep rejected rows: see rejects.csv in the run's output directory for the rows to fix.";

pub(super) fn run(args: Args, global: &Global) -> anyhow::Result<Outcome> {
    // How messages name it, how the page names it, and what it holds.
    let (name, label, history): (String, String, Box<dyn History>) = match args.state {
        Some(State::Ledger(url)) => {
            let ledger =
                PgJournal::open_existing(&url).map_err(|e| UsageError(super::error_text(&e)))?;
            let label = shown(&url);
            (format!("ledger {label}"), label, Box::new(ledger))
        }
        Some(State::Journal(path)) => journal(Some(path))?,
        None => journal(None)?,
    };
    let Some(FinishedRun {
        id: run_id,
        finished_at,
        summary_json,
        quotes_json,
    }) = history.last_finished_run()?
    else {
        return Err(UsageError(format!("{name}: no finished run to report on yet")).into());
    };
    let data = ReportData::from_summary(
        Source::Journal {
            path: label,
            run_id,
            finished_at,
        },
        &summary_json,
        html::quotes_from_json(&quotes_json)?,
        history.activations_by_day()?,
        Problems::NotAvailable(NO_PROBLEMS.into()),
    )
    .with_context(|| format!("{name}, run #{run_id}"))?;
    super::create_out_dir(&args.out)?;
    html::write(&args.out, &data)?;
    if !global.quiet {
        eprintln!(
            "run #{run_id} of {name}: {}",
            args.out.join("report.html").display()
        );
    }
    Ok(Outcome::Success)
}

/// The journal at `state`, or the default one, opened to read.
fn journal(state: Option<PathBuf>) -> anyhow::Result<(String, String, Box<dyn History>)> {
    let path = super::paths::existing_journal(state)?;
    let journal = JournalReader::open(&path).map_err(|e| UsageError(super::error_text(&e)))?;
    let label = path.display().to_string();
    Ok((format!("journal {label}"), label, Box::new(journal)))
}
