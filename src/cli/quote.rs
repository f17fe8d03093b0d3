//! `refleet quote`: validate → eligibility → quotes (SPEC §4, §5), with a
//! budget guard. The arguments it shares with `refleet run` live here too
//! ([`PlanArgs`]); the steps are `crate::app::plan`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{Global, InputArgs, Outcome, UsageError};
use crate::app::report::{write_plan_report, RegionTally};
use crate::app::{load_contracts, make_plan, summary_text, PlanSettings};
use crate::ingest::{IngestOptions, InputPath};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArgs,
}

/// What `quote` and `run` both take.
#[derive(clap::Args, Debug)]
pub(super) struct PlanArgs {
    /// Inventory file (CSV, .csv.gz, .csv.zst, Parquet) or - for stdin.
    inventory: PathBuf,
    /// Contracts file (CSV or Parquet).
    #[arg(long, env = "REFLEET_CONTRACTS")]
    contracts: PathBuf,
    /// Evaluate as of this date (YYYY-MM-DD); default today, UTC.
    #[arg(long, env = "REFLEET_AS_OF")]
    as_of: Option<NaiveDate>,
    /// Directory for the reports (created if missing).
    #[arg(long, default_value = "refleet-out", env = "REFLEET_OUT")]
    out: PathBuf,
    #[command(flatten)]
    input: InputArgs,
    /// Refuse when a currency's total exceeds AMOUNT, e.g. --budget 50000 USD (repeatable).
    #[arg(long, num_args = 2, value_names = ["AMOUNT", "CUR"], action = clap::ArgAction::Append)]
    budget: Vec<String>,
    /// csv, or parquet: the row-level reports (rejects, eligibility, results) also as Parquet.
    #[arg(long, value_enum, default_value_t = super::validate::Format::Csv, env = "REFLEET_FORMAT")]
    format: super::validate::Format,
}

impl PlanArgs {
    pub(super) fn resolve(self) -> Result<PlanSettings, UsageError> {
        let date_format = self.input.date_format()?;
        let mut budgets = BTreeMap::new();
        for pair in self.budget.chunks(2) {
            let [amount, currency] = pair else {
                return Err(UsageError(
                    "--budget takes an amount and a currency, e.g. --budget 50000 USD".into(),
                ));
            };
            let amount: Decimal = amount.parse().map_err(|_| {
                UsageError(format!(
                    "--budget: `{amount}` is not an amount (e.g. 50000 or 49999.99)"
                ))
            })?;
            budgets.insert(currency.trim().to_ascii_uppercase(), amount);
        }
        Ok(PlanSettings {
            input: InputPath::from_arg(&self.inventory),
            contracts: InputPath::from_arg(&self.contracts),
            as_of: self
                .as_of
                .unwrap_or_else(|| chrono::Utc::now().date_naive()),
            out: self.out,
            ingest: IngestOptions {
                delimiter: self.input.delimiter,
                encoding: self.input.encoding,
                ..IngestOptions::default()
            },
            date_format,
            threads: self.input.threads,
            budgets,
            parquet: self.format == super::validate::Format::Parquet,
            stdin_copy: None,
        })
    }
}

pub(super) fn run(args: Args, global: &Global) -> anyhow::Result<Outcome> {
    let mut settings = args.plan.resolve()?;
    let policy = global.load_policy()?;
    let started = Instant::now();
    crate::app::check_inputs(&[&settings.input, &settings.contracts])?;
    let contracts = load_contracts(&settings, &policy)?;
    let mut regions = RegionTally::default();
    let progress = super::progress::Phases::for_terminal(global.quiet);
    progress.phase("planning");
    let planned = make_plan(
        &mut settings,
        &policy,
        &contracts,
        &progress,
        Some(&mut regions),
        None,
    )?;
    progress.phase("reports");
    write_plan_report(&settings, &planned, regions)?;
    if settings.parquet {
        crate::report::parquet::write_copies(&settings.out, &["rejects", "eligibility"])?;
    }
    progress.clear();
    if !global.quiet {
        eprintln!(
            "{}{:.2} s; reports in {}",
            summary_text(&settings, &contracts, &planned),
            started.elapsed().as_secs_f64(),
            settings.out.display()
        );
    }
    if let Some(why) = &planned.contract_mismatch {
        eprintln!("refleet: warning: {why}");
    }
    if let Some(hint) = planned.plan.stats.encoding_hint() {
        eprintln!("refleet: warning: {hint}");
    }
    if !planned.over_budget.is_empty() {
        eprintln!(
            "refleet: budget exceeded: {}",
            planned.over_budget.join("; ")
        );
        return Ok(Outcome::Partial);
    }
    Ok(Outcome::Success)
}
