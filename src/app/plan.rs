//! Plan an inventory into its reports: read the contracts, validate,
//! judge and quote every row (`crate::plan`), and write `rejects.csv`,
//! `warnings.csv`, `eligibility.csv`, `quotes.csv` and `quotes.json`, with
//! the budget's verdict. `refleet quote` is this; `refleet run` starts
//! with it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{input_error, reading, workers, UsageError};
use crate::contracts::{self, Contracts};
use crate::domain::{DateFormat, Reject};
use crate::ingest::{self, IngestOptions, InputPath};
use crate::plan::{self, ItemLine, Judged, Plan, PlanContext, PlanSink};
use crate::policy::Policy;
use crate::quote::{over_budget, totals_by_currency, CurrencyTotal, QuoteError};
use crate::report::{write_quotes, PlanReports, RejectsWriter};
use crate::validate::{ValidateOptions, Validator};

/// What planning an inventory takes, resolved from the command line.
pub struct PlanSettings {
    pub input: InputPath,
    pub contracts: InputPath,
    pub as_of: NaiveDate,
    pub out: PathBuf,
    pub ingest: IngestOptions,
    pub date_format: Option<DateFormat>,
    pub threads: usize,
    pub budgets: BTreeMap<String, Decimal>,
    /// Also write the row-level reports as Parquet.
    pub parquet: bool,
    /// Standard input, kept in a temporary file for as long as the
    /// settings live: the inventory may be read more than once (a second
    /// plan pass, and `run`'s quote of what it buys).
    pub stdin_copy: Option<tempfile::TempPath>,
}

/// Creates the output directory, reads the contracts and writes
/// `contract_rejects.csv`.
pub fn load_contracts(settings: &PlanSettings, policy: &Policy) -> anyhow::Result<Contracts> {
    super::create_out_dir(&settings.out)?;
    let opened = ingest::open(&settings.contracts, &settings.ingest)
        .map_err(input_error(&settings.contracts))?;
    let contracts = contracts::load(opened.source, policy, opened.total_bytes)
        .map_err(input_error(&settings.contracts))?;
    let mut contract_rejects = RejectsWriter::create(&settings.out.join("contract_rejects.csv"))?;
    for r in &contracts.rejects {
        contract_rejects.write(r)?;
    }
    contract_rejects.commit()?;
    Ok(contracts)
}

/// The plan, its quotes' totals and the budget verdict.
pub struct Planned {
    pub plan: Plan,
    pub totals: BTreeMap<String, CurrencyTotal>,
    /// One sentence per currency over its budget.
    pub over_budget: Vec<String>,
    /// `rejects.csv` as the HTML report shows it.
    pub problems: crate::report::html::Problems,
    /// Why the contracts file does not go with the inventory, when no
    /// contract id of the inventory is in it (see [`contract_mismatch`]).
    pub contract_mismatch: Option<String>,
}

/// When every valid row's contract is missing from a contracts file that
/// holds contracts, the two files name contracts differently (another
/// system's export, another format): a sentence with an id of each.
pub fn contract_mismatch(
    plan: &Plan,
    contracts: &Contracts,
    contracts_file: &InputPath,
) -> Option<String> {
    let not_found = plan
        .by_reason
        .get(crate::eligibility::Reason::ContractNotFound.as_str())
        .copied()
        .unwrap_or(0);
    let valid = plan.eligible + plan.ineligible;
    if valid == 0 || not_found < valid {
        return None;
    }
    let theirs = contracts.by_id.keys().min()?;
    let ours = plan.missing_contract.as_deref().unwrap_or("?");
    Some(format!(
        "no contract id of the inventory is in the contracts file {} ({} contracts): the inventory names e.g. `{ours}`, the contracts file `{theirs}`; check that both exports come from the same system and write contract ids the same way (every valid row is CONTRACT_NOT_FOUND)",
        contracts_file.display(),
        contracts.by_id.len()
    ))
}

/// Runs the plan, writing `rejects.csv`, `warnings.csv`, `eligibility.csv`,
/// `quotes.csv` and `quotes.json`; `extra` sees every verdict too.
pub fn make_plan(
    settings: &mut PlanSettings,
    policy: &Policy,
    contracts: &Contracts,
    progress: &dyn crate::progress::Progress,
    extra: Option<&mut dyn PlanSink>,
    not_bought: Option<&std::collections::HashSet<String>>,
) -> anyhow::Result<Planned> {
    // The inventory may be read twice (see `plan`): stdin is kept in a
    // temporary file.
    if settings.input == InputPath::Stdin {
        let mut tmp = tempfile::NamedTempFile::new()?;
        std::io::copy(&mut std::io::stdin().lock(), &mut tmp)?;
        let path = tmp.into_temp_path();
        settings.input = InputPath::File(path.to_path_buf());
        settings.stdin_copy = Some(path);
    }
    let pool = workers(settings.threads)?;
    let options = ValidateOptions {
        date_format: settings.date_format.clone(),
        keep_items: true,
    };
    let input = &settings.input;
    let first = ingest::open(input, &settings.ingest).map_err(input_error(input))?;
    let validator =
        Validator::new(policy, options, first.source.as_ref()).map_err(input_error(input))?;
    let mut first = Some(first);
    let mut open = || -> anyhow::Result<ingest::Opened> {
        match first.take() {
            Some(opened) => Ok(opened),
            None => ingest::open(input, &settings.ingest).map_err(input_error(input)),
        }
    };
    let mut reports = PlanReports::create(&settings.out)?;
    let mut tee = Tee {
        reports: &mut reports,
        extra,
    };
    let ctx = PlanContext {
        eligibility_line: &crate::report::EligibilityLines,
        contracts,
        policy,
        as_of: settings.as_of,
        pool: &pool,
        not_bought,
    };
    let plan = plan::plan(&ctx, &mut open, &validator, &mut tee, progress);
    let plan = plan.map_err(|e| match e.downcast::<QuoteError>() {
        Ok(q) => UsageError(q.to_string()).into(),
        Err(e) => reading(input)(e),
    })?;
    let problems = reports.problems();
    // Both end in an fsync: they overlap. The quotes are serialised on the
    // plan's threads.
    std::thread::scope(|scope| {
        let quotes = scope.spawn(|| pool.install(|| write_quotes(&settings.out, &plan.quotes)));
        let committed = reports.commit();
        quotes
            .join()
            .map_err(|_| anyhow::anyhow!("writing the quotes failed"))??;
        committed
    })?;
    let totals = totals_by_currency(&plan.quotes).map_err(|e| UsageError(e.to_string()))?;
    let over_budget = over_budget(&totals, &settings.budgets);
    let contract_mismatch = contract_mismatch(&plan, contracts, &settings.contracts);
    Ok(Planned {
        plan,
        totals,
        over_budget,
        problems,
        contract_mismatch,
    })
}

/// The plan's reports, and whoever else wants the verdicts.
struct Tee<'a, 'b> {
    reports: &'a mut PlanReports,
    extra: Option<&'b mut dyn PlanSink>,
}

impl PlanSink for Tee<'_, '_> {
    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()> {
        self.reports.verdict(judged)?;
        match self.extra.as_deref_mut() {
            Some(extra) => extra.verdict(judged),
            None => Ok(()),
        }
    }
    fn wants_items(&self) -> bool {
        self.extra.as_deref().is_some_and(|e| e.wants_items())
    }
    fn result_lines(&self) -> Option<Box<dyn ItemLine>> {
        self.extra.as_deref().and_then(|e| e.result_lines())
    }
    fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
        self.reports.reject(r)?;
        match self.extra.as_deref_mut() {
            Some(extra) => extra.reject(r),
            None => Ok(()),
        }
    }
    fn warning(&mut self, w: &Reject) -> anyhow::Result<()> {
        self.reports.warning(w)
    }
    fn restart(&mut self) -> anyhow::Result<()> {
        self.reports.restart()?;
        match self.extra.as_deref_mut() {
            Some(extra) => extra.restart(),
            None => Ok(()),
        }
    }
}

/// The summary both commands print: rows, verdicts, totals, top reasons.
pub fn summary_text(settings: &PlanSettings, contracts: &Contracts, planned: &Planned) -> String {
    let plan = &planned.plan;
    let mut text = format!(
        "{}: {} rows, {} rejected, {} eligible, {} ineligible (as of {})\n",
        settings.input.display(),
        plan.stats.rows,
        plan.stats.rejected_rows,
        plan.eligible,
        plan.ineligible,
        settings.as_of
    );
    if !contracts.rejects.is_empty() {
        text.push_str(&format!(
            "contracts: {} rejected rows (contract_rejects.csv)\n",
            contracts.rejects.len()
        ));
    }
    for (cur, t) in &planned.totals {
        text.push_str(&format!(
            "  {cur}: {} quotes, {} devices, {} licenses, total {} {cur}\n",
            t.quotes, t.devices, t.licenses, t.total
        ));
    }
    if plan.passes > 1 {
        text.push_str(
            "  (a license came before its eligible device: the inventory was read twice)\n",
        );
    }
    let mut reasons: Vec<_> = plan.by_reason.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, n) in reasons.iter().take(5) {
        text.push_str(&format!("  {reason:<26} {n}\n"));
    }
    text
}
