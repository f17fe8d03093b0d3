//! `refleet report [--state FILE] --out DIR`: `report.html` from a journal
//! alone (by default the one `refleet run` uses by default), and the glue
//! that lets `run` and `quote` write theirs with one call each (the page
//! itself is `report::html`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::quote::{PlanSettings, Planned};
use super::{Global, Outcome, UsageError};
use crate::domain::{Region, Reject};
use crate::plan::{Judged, PlanSink};
use crate::report::html::{self, Problems, QuoteRow, ReportData, Source};
use crate::submit::journal::{FinishedRun, Journal, JournalReader};

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

/// `run`'s `report.html`: its summary, quotes, the rows to fix from its
/// `rejects.csv` and the activations in its journal.
pub(super) fn write_run_report(
    out: &Path,
    summary_json: &str,
    quotes: &[crate::quote::Quote],
    journal: &Journal,
) -> anyhow::Result<()> {
    let data = ReportData::from_summary(
        Source::Run,
        summary_json,
        quotes.iter().map(QuoteRow::from).collect(),
        journal.activations_by_day()?,
        html::read_problems(&out.join("rejects.csv"), html::PROBLEM_ROWS)?,
    )?;
    html::write(out, &data)
}

/// Verdicts per region, counted as the plan goes (a plan keeps no counts by
/// region, and reading `eligibility.csv` back would cost a pass over it).
#[derive(Default)]
pub(super) struct RegionTally([[u64; 2]; Region::ALL.len()]);

impl RegionTally {
    /// The counts as `{region: {"eligible"|"ineligible": n}}`.
    pub(super) fn into_map(self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut map: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (region, [ineligible, eligible]) in Region::ALL.iter().zip(self.0) {
            for (verdict, n) in [("eligible", eligible), ("ineligible", ineligible)] {
                if n > 0 {
                    map.entry(region.as_str().to_string())
                        .or_default()
                        .insert(verdict.to_string(), n);
                }
            }
        }
        map
    }
}

impl PlanSink for RegionTally {
    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()> {
        self.0[judged.region as usize][usize::from(judged.verdict.eligible())] += 1;
        Ok(())
    }
    fn reject(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
    fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
    fn restart(&mut self) -> anyhow::Result<()> {
        *self = RegionTally::default();
        Ok(())
    }
}

/// `quote`'s `report.html`: verdicts, reasons, regions and quotes.
pub(super) fn write_plan_report(
    settings: &PlanSettings,
    planned: &Planned,
    regions: RegionTally,
) -> anyhow::Result<()> {
    let plan = &planned.plan;
    // Reasons as run's summary counts them: reject codes and ineligibility
    // reasons side by side.
    let mut reasons = plan.stats.rejects_by_code.clone();
    for (reason, n) in &plan.by_reason {
        *reasons.entry((*reason).to_string()).or_default() += n;
    }
    let data = ReportData {
        source: Source::Quote,
        input: settings.input.display().to_string(),
        as_of: settings.as_of.to_string(),
        outcome: None,
        api: None,
        dry_run: false,
        stopped_because: None,
        rows: plan.stats.rows,
        valid_rows: plan.stats.valid,
        rejected_rows: plan.stats.rejected_rows,
        eligible: plan.eligible,
        ineligible: plan.ineligible,
        states: None,
        reasons,
        by_region: regions.into_map(),
        quote_totals: planned
            .totals
            .iter()
            .map(|(c, t)| (c.clone(), t.into()))
            .collect(),
        quotes: plan.quotes.iter().map(QuoteRow::from).collect(),
        over_budget: planned.over_budget.clone(),
        requests: None,
        not_bought: None,
        activations: None,
        problems: planned.problems.clone(),
    };
    html::write(&settings.out, &data)
}
