//! `report.html` of a run and of a quote, each written with one call (the
//! page itself is `report::html`).

use std::collections::BTreeMap;
use std::path::Path;

use super::{PlanSettings, Planned};
use crate::domain::{Region, Reject};
use crate::plan::{Judged, PlanSink};
use crate::report::html::{self, QuoteRow, ReportData, Source};
use crate::submit::journal::ItemLedger;

/// `run`'s `report.html`: its summary, quotes, the rows to fix from its
/// `rejects.csv` and the activations in its journal.
pub fn write_run_report(
    out: &Path,
    summary_json: &str,
    quotes: &[crate::quote::Quote],
    journal: &impl ItemLedger,
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
pub struct RegionTally([[u64; 2]; Region::ALL.len()]);

impl RegionTally {
    /// The counts as `{region: {"eligible"|"ineligible": n}}`.
    pub fn into_map(self) -> BTreeMap<String, BTreeMap<String, u64>> {
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
pub fn write_plan_report(
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
        run: None,
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
        by_site: Default::default(),
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
