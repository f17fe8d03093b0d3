//! `refleet report [--state FILE] --out DIR`: `report.html` from a journal
//! alone (by default the one `refleet run` uses by default); the page
//! itself is `report::html`.

use std::path::PathBuf;

use anyhow::Context;

use super::{Global, Outcome, UsageError};
use crate::report::html::{self, Problems, ReportData, Source};
use crate::submit::journal::{FinishedRun, JournalReader};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's journal; default: the one `refleet run` uses by default
    /// (refleet/journal.sqlite in the user's state folder).
    #[arg(long, value_name = "FILE", env = "REFLEET_STATE", value_parser = super::paths::StateParser)]
    state: Option<PathBuf>,
    /// Directory for report.html (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Why a page made from a journal has no rows to fix.
const NO_PROBLEMS: &str = "The journal does not keep rejected rows: see rejects.csv in the run's output directory for the rows to fix.";

pub(super) fn run(args: Args, global: &Global) -> anyhow::Result<Outcome> {
    let state = super::paths::existing_journal(args.state)?;
    let journal = JournalReader::open(&state).map_err(|e| UsageError(super::error_text(&e)))?;
    let Some(FinishedRun {
        id: run_id,
        finished_at,
        summary_json,
        quotes_json,
    }) = journal.last_finished_run()?
    else {
        return Err(UsageError(format!(
            "journal {}: no finished run to report on yet",
            state.display()
        ))
        .into());
    };
    let data = ReportData::from_summary(
        Source::Journal {
            path: state.display().to_string(),
            run_id,
            finished_at,
        },
        &summary_json,
        html::quotes_from_json(&quotes_json)?,
        journal.activations_by_day()?,
        Problems::NotAvailable(NO_PROBLEMS.into()),
    )
    .with_context(|| format!("journal {}, run #{run_id}", state.display()))?;
    super::create_out_dir(&args.out)?;
    html::write(&args.out, &data)?;
    if !global.quiet {
        eprintln!(
            "run #{run_id} of {}: {}",
            state.display(),
            args.out.join("report.html").display()
        );
    }
    Ok(Outcome::Success)
}
