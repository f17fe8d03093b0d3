//! `refleet quote`: validate → eligibility → quotes (SPEC §4, §5), with a
//! budget guard. Two passes over the inventory keep memory bounded by the
//! number of eligible devices, never the number of rows: the first finds
//! the eligible devices (a license's verdict depends on them), the second
//! writes every verdict in row order and folds eligible items into quotes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{input_error, thread_pool, Global, InputArgs, Outcome, UsageError};
use crate::contracts::{self, Contracts};
use crate::domain::{DateFormat, Item, ItemKind};
use crate::eligibility::{self, EligibleDevices};
use crate::ingest::{self, IngestOptions, InputPath};
use crate::policy::Policy;
use crate::progress::NoProgress;
use crate::quote::{Quote, QuoteBuilder};
use crate::report::{neutralise, AtomicFile, RejectsWriter};
use crate::validate::{self, Reject, ValidateOptions, ValidateSink, Validator};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Inventory file (CSV, .csv.gz, .csv.zst, Parquet) or - for stdin.
    inventory: PathBuf,
    /// Contracts file (CSV or Parquet).
    #[arg(long)]
    contracts: PathBuf,
    /// Evaluate as of this date (YYYY-MM-DD); default today, UTC.
    #[arg(long)]
    as_of: Option<NaiveDate>,
    /// Directory for the reports (created if missing).
    #[arg(long, default_value = "refleet-out")]
    out: PathBuf,
    #[command(flatten)]
    input: InputArgs,
    /// Refuse when a currency's total exceeds AMOUNT, e.g. --budget 50000 USD (repeatable).
    #[arg(long, num_args = 2, value_names = ["AMOUNT", "CUR"], action = clap::ArgAction::Append)]
    budget: Vec<String>,
}

struct Settings {
    input: InputPath,
    contracts: InputPath,
    as_of: NaiveDate,
    out: PathBuf,
    ingest: IngestOptions,
    date_format: Option<DateFormat>,
    threads: usize,
    budgets: BTreeMap<String, Decimal>,
}

impl Args {
    fn resolve(self) -> Result<Settings, UsageError> {
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
        Ok(Settings {
            input: InputPath::from_arg(&self.inventory),
            contracts: InputPath::from_arg(&self.contracts),
            as_of: self
                .as_of
                .unwrap_or_else(|| chrono::Utc::now().date_naive()),
            out: self.out,
            ingest: IngestOptions {
                delimiter: self.input.delimiter,
                ..IngestOptions::default()
            },
            date_format,
            threads: self.input.threads,
            budgets,
        })
    }
}

/// Pass 1: the serials of the eligible devices.
struct EligibleDeviceSink<'a> {
    contracts: &'a Contracts,
    policy: &'a Policy,
    as_of: NaiveDate,
    none: EligibleDevices,
    eligible: EligibleDevices,
}

impl ValidateSink for EligibleDeviceSink<'_> {
    fn item(&mut self, item: Item) -> anyhow::Result<()> {
        if item.kind == ItemKind::Device {
            let v = eligibility::evaluate(
                &item,
                self.contracts.by_id.get(&item.contract_id),
                self.policy,
                self.as_of,
                &self.none,
            );
            if let (true, Some(s)) = (v.eligible(), item.serial) {
                self.eligible.insert(s);
            }
        }
        Ok(())
    }
    fn reject(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
    fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Pass 2: every verdict in row order, rejects, and the quotes.
struct QuoteSink<'a> {
    contracts: &'a Contracts,
    policy: &'a Policy,
    as_of: NaiveDate,
    eligible_devices: &'a EligibleDevices,
    rejects: RejectsWriter,
    warnings: RejectsWriter,
    eligibility: csv::Writer<AtomicFile>,
    builder: QuoteBuilder<'a>,
    eligible: u64,
    ineligible: u64,
    by_reason: BTreeMap<&'static str, u64>,
}

impl ValidateSink for QuoteSink<'_> {
    fn item(&mut self, item: Item) -> anyhow::Result<()> {
        let key = item.key();
        let contract = self.contracts.by_id.get(&item.contract_id);
        let v = eligibility::evaluate(
            &item,
            contract,
            self.policy,
            self.as_of,
            self.eligible_devices,
        );
        let eta = match (v.eligible(), contract) {
            (true, Some(c)) => self
                .policy
                .activation_eta(item.country, c.coverage, self.as_of)
                .to_string(),
            _ => String::new(),
        };
        if v.eligible() {
            self.eligible += 1;
            self.builder.add(&item, &key);
        } else {
            self.ineligible += 1;
            for r in &v.reasons {
                *self.by_reason.entry(r.as_str()).or_default() += 1;
            }
        }
        let opt = |v: Option<String>| v.unwrap_or_default();
        self.eligibility.write_record([
            item.row.to_string().as_str(),
            neutralise(&key).as_ref(),
            item.kind.as_str(),
            &opt(item.serial.map(|s| s.to_string())),
            &opt(item.license_id.map(|l| l.to_string())),
            neutralise(&item.contract_id).as_ref(),
            item.country.as_str(),
            item.region.as_str(),
            if v.eligible() { "true" } else { "false" },
            &v.reasons_text(),
            neutralise(&v.alternative).as_ref(),
            &eta,
        ])?;
        Ok(())
    }
    fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
        self.rejects.write(r)
    }
    fn warning(&mut self, w: &Reject) -> anyhow::Result<()> {
        self.warnings.write(w)
    }
}

pub(super) fn run(args: Args, global: &Global) -> anyhow::Result<Outcome> {
    let mut settings = args.resolve()?;
    let policy = global.load_policy()?;
    let started = Instant::now();
    std::fs::create_dir_all(&settings.out)
        .with_context(|| format!("cannot create {}", settings.out.display()))?;

    let opened = ingest::open(&settings.contracts, &settings.ingest)
        .map_err(input_error(&settings.contracts))?;
    let contracts =
        contracts::load(opened.source, &policy).map_err(input_error(&settings.contracts))?;
    let mut contract_rejects = RejectsWriter::create(&settings.out.join("contract_rejects.csv"))?;
    for r in &contracts.rejects {
        contract_rejects.write(r)?;
    }
    contract_rejects.commit()?;

    // The inventory is read twice: stdin is kept in a temporary file.
    let _spool;
    if settings.input == InputPath::Stdin {
        let mut tmp = tempfile::NamedTempFile::new()?;
        std::io::copy(&mut std::io::stdin().lock(), &mut tmp)?;
        let path = tmp.into_temp_path();
        settings.input = InputPath::File(path.to_path_buf());
        _spool = path;
    }
    let pool = thread_pool(settings.threads)?;
    let options = ValidateOptions {
        date_format: settings.date_format.clone(),
        keep_items: true,
    };

    let opened =
        ingest::open(&settings.input, &settings.ingest).map_err(input_error(&settings.input))?;
    let validator = Validator::new(&policy, options.clone(), opened.source.headers())
        .map_err(input_error(&settings.input))?;
    let expected = opened
        .total_bytes
        .map_or(0, |b| (b / 130) as usize)
        .min(50_000_000);
    let mut pass1 = EligibleDeviceSink {
        contracts: &contracts,
        policy: &policy,
        as_of: settings.as_of,
        none: EligibleDevices::new(),
        eligible: EligibleDevices::new(),
    };
    validate::run(
        opened.source,
        &validator,
        &pool,
        expected,
        &mut pass1,
        &NoProgress,
    )
    .with_context(|| format!("reading {}", settings.input.display()))?;
    let eligible_devices = pass1.eligible;

    let opened =
        ingest::open(&settings.input, &settings.ingest).map_err(input_error(&settings.input))?;
    let mut eligibility =
        csv::Writer::from_writer(AtomicFile::create(&settings.out.join("eligibility.csv"))?);
    eligibility.write_record([
        "row",
        "item_key",
        "item_type",
        "serial_number",
        "license_id",
        "contract_id",
        "country",
        "region",
        "eligible",
        "reasons",
        "alternative",
        "eta",
    ])?;
    let mut sink = QuoteSink {
        contracts: &contracts,
        policy: &policy,
        as_of: settings.as_of,
        eligible_devices: &eligible_devices,
        rejects: RejectsWriter::create(&settings.out.join("rejects.csv"))?,
        warnings: RejectsWriter::create(&settings.out.join("warnings.csv"))?,
        eligibility,
        builder: QuoteBuilder::new(&contracts.by_id, &policy),
        eligible: 0,
        ineligible: 0,
        by_reason: BTreeMap::new(),
    };
    let progress = super::progress::for_terminal(global.quiet);
    progress.start(opened.total_bytes, opened.bytes_read.clone());
    let stats = validate::run(
        opened.source,
        &validator,
        &pool,
        expected,
        &mut sink,
        progress.as_ref(),
    )
    .with_context(|| format!("reading {}", settings.input.display()))?;
    progress.finish();
    let QuoteSink {
        rejects,
        warnings,
        eligibility,
        builder,
        eligible,
        ineligible,
        by_reason,
        ..
    } = sink;
    rejects.commit()?;
    warnings.commit()?;
    eligibility
        .into_inner()
        .map_err(|e| anyhow::anyhow!("{}", e.error()))?
        .commit()?;
    let quotes = builder
        .finish(settings.as_of)
        .map_err(|e| UsageError(e.to_string()))?;
    write_quotes(&settings.out, &quotes)?;

    let mut totals: BTreeMap<&str, (u64, u64, u64, Decimal)> = BTreeMap::new();
    for q in &quotes {
        let t = totals.entry(q.currency.as_str()).or_default();
        t.0 += 1;
        t.1 += q.devices;
        t.2 += q.licenses;
        t.3 += q.total;
    }
    if !global.quiet {
        let mut text = format!(
            "{}: {} rows, {} rejected, {} eligible, {} ineligible (as of {})\n",
            settings.input.display(),
            stats.rows,
            stats.rejected_rows,
            eligible,
            ineligible,
            settings.as_of
        );
        if !contracts.rejects.is_empty() {
            text.push_str(&format!(
                "contracts: {} rejected rows (contract_rejects.csv)\n",
                contracts.rejects.len()
            ));
        }
        for (cur, (n, d, l, total)) in &totals {
            text.push_str(&format!(
                "  {cur}: {n} quotes, {d} devices, {l} licenses, total {total} {cur}\n"
            ));
        }
        let mut reasons: Vec<_> = by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (reason, n) in reasons.iter().take(5) {
            text.push_str(&format!("  {reason:<26} {n}\n"));
        }
        text.push_str(&format!(
            "{:.2} s; reports in {}\n",
            started.elapsed().as_secs_f64(),
            settings.out.display()
        ));
        eprint!("{text}");
    }

    let mut over = Vec::new();
    for (cur, limit) in &settings.budgets {
        let total = totals.get(cur.as_str()).map_or(Decimal::ZERO, |t| t.3);
        if total > *limit {
            over.push(format!(
                "{cur}: quoted {total} exceeds the budget of {limit}"
            ));
        }
    }
    if !over.is_empty() {
        eprintln!("refleet: budget exceeded: {}", over.join("; "));
        return Ok(Outcome::Partial);
    }
    Ok(Outcome::Success)
}

fn write_quotes(out: &std::path::Path, quotes: &[Quote]) -> anyhow::Result<()> {
    let mut csv = csv::Writer::from_writer(AtomicFile::create(&out.join("quotes.csv"))?);
    csv.write_record([
        "quote_id",
        "contract_id",
        "region",
        "currency",
        "pricing_model",
        "term_months",
        "devices",
        "licenses",
        "subtotal",
        "discount",
        "total",
        "valid_until",
    ])?;
    for q in quotes {
        csv.write_record([
            q.quote_id.clone(),
            neutralise(&q.contract_id).into_owned(),
            q.region.to_string(),
            q.currency.clone(),
            q.pricing_model.to_string(),
            q.term_months.to_string(),
            q.devices.to_string(),
            q.licenses.to_string(),
            q.subtotal.to_string(),
            q.discount.to_string(),
            q.total.to_string(),
            q.valid_until.to_string(),
        ])?;
    }
    csv.into_inner()
        .map_err(|e| anyhow::anyhow!("{}", e.error()))?
        .commit()?;
    let mut json = AtomicFile::create(&out.join("quotes.json"))?;
    serde_json::to_writer_pretty(&mut json, quotes)?;
    std::io::Write::write_all(&mut json, b"\n")?;
    json.commit()
}
