//! `refleet quote`: validate → eligibility → quotes (SPEC §4, §5), with a
//! budget guard. Memory stays bounded by the number of eligible devices,
//! never the number of rows. The verdicts and their `eligibility.csv` lines
//! are made on the validating threads; the sink takes them in row order and
//! folds eligible items into quotes. A license's verdict depends on the
//! eligible devices of the same inventory, so the inventory is read a second
//! time only when a license came before its eligible device (see
//! [`QuoteSink`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{input_error, thread_pool, Global, InputArgs, Outcome, UsageError};
use crate::contracts::{self, Contracts};
use crate::domain::{Contract, Country, Coverage, DateFormat, Item, ItemKind};
use crate::eligibility::{self, EligibleDevices, Reason, Verdict};
use crate::ingest::{self, IngestOptions, InputPath};
use crate::policy::Policy;
use crate::quote::{Quote, QuoteBuilder};
use crate::report::{neutralise, AtomicFile, RejectsWriter};
use crate::validate::{
    self, ItemMap, MappedSink, PreparedSerial, Reject, RowKeys, ValidateOptions, Validator,
};

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

/// The columns of `eligibility.csv`.
const ELIGIBILITY_HEADER: [&str; 12] = [
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
];

/// One CSV line, byte for byte as `csv::Writer` with default settings
/// writes it (checked by a test): a field is quoted, its quotes doubled,
/// when it holds a comma, a quote, a CR or a LF; a record of one empty
/// field is `""`. By hand because this runs once per row.
fn csv_line<'f>(fields: impl IntoIterator<Item = &'f str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut n = 0;
    for f in fields {
        if n > 0 {
            out.push(b',');
        }
        n += 1;
        if f.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
            out.push(b'"');
            for b in f.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(f.as_bytes());
        }
    }
    if n == 1 && out.is_empty() {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b'\n');
    out
}

/// The verdicts (SPEC §4) and their `eligibility.csv` lines.
struct Evaluator<'a> {
    contracts: &'a Contracts,
    /// `contracts.by_id` with a fast hasher: looked up once per row.
    by_id: std::collections::HashMap<&'a str, &'a Contract, foldhash::fast::FixedState>,
    policy: &'a Policy,
    as_of: NaiveDate,
    /// A device's verdict does not look at the eligible devices.
    none: EligibleDevices,
}

/// What a validating thread makes of one valid row. A license's verdict
/// depends on the eligible devices of the rows before it, so the sink
/// finishes it in row order.
enum Evaluated {
    Device {
        /// Kept only when eligible: the sink needs it for the quotes.
        eligible: Option<Box<Item>>,
        /// An eligible device's serial, ready for the sink's set.
        serial: Option<PreparedSerial>,
        line: Vec<u8>,
        /// The failing reasons, one bit per [`Reason`].
        reasons: u32,
    },
    License(Box<Item>),
}

/// Scratch space for making `eligibility.csv` lines.
struct LineState {
    /// Activation dates as text by (country, coverage): one as-of date per
    /// run, so a handful of values.
    etas: std::collections::HashMap<(Country, Coverage), String, foldhash::fast::FixedState>,
}

impl LineState {
    fn new() -> LineState {
        LineState {
            etas: Default::default(),
        }
    }
}

/// [`Item::key`] of a device, without building a string.
fn device_key(item: &Item) -> &str {
    item.serial.as_ref().map_or("", |s| s.as_str())
}

impl Evaluator<'_> {
    /// The verdict and `eligibility.csv` line of one item.
    fn evaluate(
        &self,
        state: &mut LineState,
        item: &Item,
        key: &str,
        eligible_devices: &EligibleDevices,
    ) -> anyhow::Result<(Verdict, Vec<u8>)> {
        let contract = self.by_id.get(item.contract_id.as_str()).copied();
        let v = eligibility::evaluate(item, contract, self.policy, self.as_of, eligible_devices);
        let eta: &str = match (v.eligible(), contract) {
            (true, Some(c)) => state
                .etas
                .entry((item.country, c.coverage))
                .or_insert_with(|| {
                    self.policy
                        .activation_eta(item.country, c.coverage, self.as_of)
                        .to_string()
                }),
            _ => "",
        };
        let mut row = [0u8; 20];
        let license = item.license_id.map(|l| l.to_string());
        let line = csv_line([
            decimal(item.row, &mut row),
            neutralise(key).as_ref(),
            item.kind.as_str(),
            item.serial.as_ref().map_or("", |s| s.as_str()),
            license.as_deref().unwrap_or(""),
            neutralise(&item.contract_id).as_ref(),
            item.country.as_str(),
            item.region.as_str(),
            if v.eligible() { "true" } else { "false" },
            &v.reasons_text(),
            neutralise(&v.alternative).as_ref(),
            eta,
        ]);
        Ok((v, line))
    }
}

/// `n` in decimal, written into `buf` (as `n.to_string()`, without the
/// allocation).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

fn reason_bits(reasons: &[Reason]) -> u32 {
    reasons.iter().fold(0, |m, r| m | 1 << (*r as u32))
}

impl ItemMap for Evaluator<'_> {
    type State = LineState;
    type Out = anyhow::Result<Evaluated>;

    fn state(&self) -> Self::State {
        LineState::new()
    }

    fn map(&self, w: &mut Self::State, item: Box<Item>, keys: &RowKeys) -> Self::Out {
        if item.kind == ItemKind::License {
            return Ok(Evaluated::License(item));
        }
        let (v, line) = self.evaluate(w, &item, device_key(&item), &self.none)?;
        Ok(Evaluated::Device {
            // A device's serial is its row's serial key, prepared already.
            serial: keys.prepared_serial().filter(|_| v.eligible()),
            reasons: reason_bits(&v.reasons),
            eligible: v.eligible().then_some(item),
            line,
        })
    }
}

/// How many eligible devices wait in [`QuoteSink`]'s queue.
const QUEUE: usize = 16;

/// Every verdict in row order, rejects, and the quotes.
///
/// One pass is enough when every license bound to an eligible device comes
/// after that device, as exports usually list them: a license is judged on
/// the eligible devices of the rows before it, and the bound serials of the
/// licenses found unbound that way are kept in `pending`. If one of them
/// turns out eligible later in the file, [`QuoteSink::exact`] is false and
/// the pass is run again with the whole file's eligible devices (`known`).
struct QuoteSink<'a> {
    evaluator: &'a Evaluator<'a>,
    /// The eligible devices of the whole file, on a second pass.
    known: Option<&'a EligibleDevices>,
    /// The eligible devices so far (first pass only).
    eligible_devices: EligibleDevices,
    /// Bound serials of licenses judged unbound on `eligible_devices`.
    pending: EligibleDevices,
    /// Eligible devices not yet in `eligible_devices`: each one's slot is
    /// fetched when it arrives and filled a few devices later, and the
    /// queue is emptied before any license is judged.
    queue: std::collections::VecDeque<PreparedSerial>,
    line: LineState,
    rejects: RejectsWriter,
    warnings: RejectsWriter,
    eligibility: AtomicFile,
    builder: QuoteBuilder<'a>,
    eligible: u64,
    ineligible: u64,
    by_reason: [u64; 32],
}

impl<'a> QuoteSink<'a> {
    fn create(
        out: &std::path::Path,
        evaluator: &'a Evaluator<'a>,
        known: Option<&'a EligibleDevices>,
        expected_rows: usize,
    ) -> anyhow::Result<QuoteSink<'a>> {
        let line = LineState::new();
        let mut eligibility = AtomicFile::create(&out.join("eligibility.csv"))?;
        eligibility.write_all(&csv_line(ELIGIBILITY_HEADER))?;
        Ok(QuoteSink {
            evaluator,
            known,
            eligible_devices: if known.is_some() {
                EligibleDevices::new()
            } else {
                EligibleDevices::with_capacity(expected_rows)
            },
            pending: EligibleDevices::new(),
            queue: std::collections::VecDeque::with_capacity(QUEUE + 1),
            line,
            rejects: RejectsWriter::create(&out.join("rejects.csv"))?,
            warnings: RejectsWriter::create(&out.join("warnings.csv"))?,
            eligibility,
            builder: QuoteBuilder::new(&evaluator.contracts.by_id, evaluator.policy),
            eligible: 0,
            ineligible: 0,
            by_reason: [0; 32],
        })
    }

    /// False when a license was judged unbound but its device turned out
    /// eligible further down: the pass must be run again.
    fn exact(&mut self) -> bool {
        self.flush_devices();
        self.known.is_some() || self.pending.is_disjoint(&self.eligible_devices)
    }

    fn flush_devices(&mut self) {
        while let Some(s) = self.queue.pop_front() {
            self.eligible_devices.insert_prepared(s);
        }
    }

    fn add_device(&mut self, s: PreparedSerial) {
        self.eligible_devices.prefetch(&s);
        self.queue.push_back(s);
        if self.queue.len() > QUEUE {
            if let Some(s) = self.queue.pop_front() {
                self.eligible_devices.insert_prepared(s);
            }
        }
    }

    fn count(&mut self, item: Option<(&Item, &str)>, reasons: u32) {
        match item {
            Some((item, key)) => {
                self.eligible += 1;
                self.builder.add(item, key);
            }
            None => {
                self.ineligible += 1;
                for (bit, n) in self.by_reason.iter_mut().enumerate() {
                    *n += u64::from(reasons >> bit & 1);
                }
            }
        }
    }

    /// The reason counts for the summary.
    fn by_reason(&self) -> BTreeMap<&'static str, u64> {
        Reason::ALL
            .iter()
            .filter(|r| self.by_reason[**r as usize] > 0)
            .map(|r| (r.as_str(), self.by_reason[*r as usize]))
            .collect()
    }
}

impl MappedSink<anyhow::Result<Evaluated>> for QuoteSink<'_> {
    /// Reads the output in place: the items and lines are freed on the
    /// validating thread, not here.
    fn item(&mut self, out: &mut Option<anyhow::Result<Evaluated>>) -> anyhow::Result<()> {
        let evaluated = match out {
            Some(Ok(e)) => &*e,
            Some(Err(_)) => return out.take().map_or(Ok(()), |r| r.map(drop)),
            None => return Ok(()),
        };
        match evaluated {
            Evaluated::Device {
                eligible,
                serial,
                line,
                reasons,
            } => {
                self.eligibility.write_all(line)?;
                if let (Some(s), None) = (serial, self.known) {
                    self.add_device(*s);
                }
                self.count(eligible.as_deref().map(|i| (i, device_key(i))), *reasons);
            }
            Evaluated::License(item) => {
                self.flush_devices();
                let key = item.key();
                let devices = self.known.unwrap_or(&self.eligible_devices);
                let (v, line) = self
                    .evaluator
                    .evaluate(&mut self.line, item, &key, devices)?;
                self.eligibility.write_all(&line)?;
                if self.known.is_none() && v.reasons.contains(&Reason::LicenseUnbound) {
                    if let Some(s) = item.bound_serial {
                        self.pending.insert(s);
                    }
                }
                let eligible = v.eligible().then_some((&**item, key.as_str()));
                self.count(eligible, reason_bits(&v.reasons));
            }
        }
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

    // The inventory may be read twice (see QuoteSink): stdin is kept in a
    // temporary file.
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
    let evaluator = Evaluator {
        contracts: &contracts,
        by_id: contracts
            .by_id
            .iter()
            .map(|(id, c)| (id.as_str(), c))
            .collect(),
        policy: &policy,
        as_of: settings.as_of,
        none: EligibleDevices::new(),
    };
    let progress = super::progress::for_terminal(global.quiet);
    let pass = |opened: ingest::Opened, sink: &mut QuoteSink<'_>| {
        progress.start(opened.total_bytes, opened.bytes_read.clone());
        let stats = validate::run_mapped(
            opened.source,
            &validator,
            &pool,
            expected,
            &evaluator,
            sink,
            progress.as_ref(),
        )
        .with_context(|| format!("reading {}", settings.input.display()));
        progress.finish();
        stats
    };
    let mut first = QuoteSink::create(&settings.out, &evaluator, None, expected)?;
    let mut stats = pass(opened, &mut first)?;
    let known;
    let sink = if first.exact() {
        first
    } else {
        // A license came before its eligible device: judge every license
        // again on the whole file's eligible devices.
        known = std::mem::take(&mut first.eligible_devices);
        drop(first);
        let opened = ingest::open(&settings.input, &settings.ingest)
            .map_err(input_error(&settings.input))?;
        let mut second = QuoteSink::create(&settings.out, &evaluator, Some(&known), expected)?;
        stats = pass(opened, &mut second)?;
        second
    };
    let by_reason = sink.by_reason();
    let QuoteSink {
        rejects,
        warnings,
        eligibility,
        builder,
        eligible,
        ineligible,
        ..
    } = sink;
    rejects.commit()?;
    warnings.commit()?;
    eligibility.commit()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn by_csv_writer(fields: &[String]) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(fields).unwrap();
        w.into_inner().unwrap()
    }

    proptest::proptest! {
        #[test]
        fn csv_line_equals_csv_writer(
            fields in proptest::collection::vec("[a, \"\r\n'=é;-]{0,6}", 1..14),
        ) {
            proptest::prop_assert_eq!(
                csv_line(fields.iter().map(String::as_str)),
                by_csv_writer(&fields)
            );
        }
    }
}
