//! `report.html` (SPEC §7): one self-contained page a person opens offline
//! in any browser: headline numbers, inline SVG charts, the quotes and the
//! rows to fix.
//!
//! [`ReportData`] is what the page shows, built by `run` (from its
//! `summary.json`, quotes, `rejects.csv` and journal), by `quote` (from its
//! plan) and by `refleet report` (from a journal alone); [`render`] turns it
//! into HTML and is pure, so the tests call it directly.
//!
//! The page has no script, no font, no image and no URL: charts are inline
//! SVG and the styles one `<style>` element. A Content-Security-Policy of
//! `default-src 'none'` makes a browser refuse any load that slipped in.
//! Every string that came from input is HTML-escaped ([`esc`]) wherever it
//! lands, text or attribute. Each headline number carries a
//! `data-metric="PATH"` hook where PATH is its key path in `summary.json`
//! (`rows`, `items_by_state.active`, `quotes.USD.total`), so a test can read
//! the rendered page and compare it with the summary.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{AtomicFile, SiteCounts};

mod charts;
mod sections;
mod svg;

use charts::charts;
use sections::{by_site, headline, notices, problems, quotes_table};

/// Rows of `rejects.csv` shown in the table of rows to fix.
pub const PROBLEM_ROWS: usize = 50;
/// Reasons shown in the reasons chart (the rest are summed into one bar).
const TOP_REASONS: usize = 15;
/// Quotes listed in the table (the rest are in `quotes.csv`).
const QUOTE_ROWS: usize = 200;
/// Sites listed in the by-site table, those needing the most work (the
/// rest are summed in one line, and all are in `summary.json`).
pub const SITE_ROWS: usize = 25;
/// Sites in the by-site chart.
const TOP_SITES: usize = 15;

/// Which command the page describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `refleet run`: submission states, requests and activations.
    Run,
    /// `refleet quote`: a plan, nothing submitted.
    Quote,
    /// `refleet report --state FILE`: the last finished run of a journal.
    Journal {
        path: String,
        run_id: i64,
        finished_at: String,
    },
}

/// The quotes of one currency, summed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct QuoteTotal {
    pub quotes: u64,
    pub devices: u64,
    pub licenses: u64,
    pub total: Decimal,
}

impl From<&crate::quote::CurrencyTotal> for QuoteTotal {
    fn from(t: &crate::quote::CurrencyTotal) -> QuoteTotal {
        QuoteTotal {
            quotes: t.quotes,
            devices: t.devices,
            licenses: t.licenses,
            total: t.total,
        }
    }
}

/// One line of the quotes table; deserialised from `quotes.json` too.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuoteRow {
    pub quote_id: String,
    pub contract_id: String,
    pub region: String,
    pub currency: String,
    pub pricing_model: String,
    pub term_months: u32,
    pub devices: u64,
    pub licenses: u64,
    pub subtotal: Decimal,
    pub discount: Decimal,
    pub total: Decimal,
    pub valid_until: String,
}

impl From<&crate::quote::Quote> for QuoteRow {
    fn from(q: &crate::quote::Quote) -> QuoteRow {
        QuoteRow {
            quote_id: q.quote_id.clone(),
            contract_id: q.contract_id.clone(),
            region: q.region.as_str().to_string(),
            currency: q.currency.clone(),
            pricing_model: q.pricing_model.to_string(),
            term_months: q.term_months,
            devices: q.devices,
            licenses: q.licenses,
            subtotal: q.subtotal,
            discount: q.discount,
            total: q.total,
            valid_until: q.valid_until.to_string(),
        }
    }
}

/// Requests sent and the rate achieved (`summary.json`'s `requests`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RequestStats {
    pub sent: u64,
    #[serde(default)]
    pub throttled: u64,
    #[serde(default)]
    pub configured_rate: f64,
    #[serde(default)]
    pub achieved_rate: f64,
}

/// One line of `rejects.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemRow {
    pub row: String,
    pub column: String,
    pub value: String,
    pub code: String,
    pub message: String,
}

/// The rows to fix, or why they are not in the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problems {
    /// From `rejects.csv`: lines per code (most first) and the first lines.
    Rejects {
        by_code: Vec<(String, u64)>,
        lines: u64,
        first: Vec<ProblemRow>,
    },
    /// Not available, with the sentence that says why.
    NotAvailable(String),
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    pub source: Source,
    /// The run's number in its journal and when it ended (UTC); `None`
    /// for a plan.
    pub run: Option<(i64, String)>,
    pub input: String,
    pub as_of: String,
    pub outcome: Option<String>,
    pub api: Option<String>,
    pub dry_run: bool,
    pub stopped_because: Option<String>,
    pub rows: u64,
    pub valid_rows: u64,
    pub rejected_rows: u64,
    pub eligible: u64,
    pub ineligible: u64,
    /// Items by final state; `None` for a plan (nothing was submitted).
    pub states: Option<BTreeMap<String, u64>>,
    /// Rows per reject code and ineligibility or API reason.
    pub reasons: BTreeMap<String, u64>,
    /// Items per region, by state (or by verdict for a plan).
    pub by_region: BTreeMap<String, BTreeMap<String, u64>>,
    /// `results.csv`'s rows by site; empty for a plan.
    pub by_site: BTreeMap<String, SiteCounts>,
    pub quote_totals: BTreeMap<String, QuoteTotal>,
    pub quotes: Vec<QuoteRow>,
    pub over_budget: Vec<String>,
    pub requests: Option<RequestStats>,
    /// Eligible items the run did not buy (earlier runs of its journal
    /// bought them, or the vendor held them), and by currency what they
    /// would have cost in its quotes; `None` for a plan.
    pub not_bought: Option<NotBought>,
    /// Activations per day, oldest first; `None` for a plan.
    pub activations: Option<Vec<(String, u64)>>,
    pub problems: Problems,
}

/// The part of `summary.json` the page reads; lenient, so that a journal
/// written by an older refleet still gives a report.
#[derive(Deserialize)]
struct SummaryIn {
    #[serde(default)]
    run_id: Option<i64>,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    input: String,
    #[serde(default)]
    as_of: String,
    api: Option<String>,
    #[serde(default)]
    dry_run: bool,
    outcome: Option<String>,
    stopped_because: Option<String>,
    #[serde(default)]
    rows: u64,
    #[serde(default)]
    valid_rows: u64,
    #[serde(default)]
    rejected_rows: u64,
    #[serde(default)]
    eligible: u64,
    #[serde(default)]
    ineligible: u64,
    #[serde(default)]
    items_by_state: BTreeMap<String, u64>,
    #[serde(default)]
    reasons: BTreeMap<String, u64>,
    #[serde(default)]
    by_region: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default)]
    by_site: BTreeMap<String, SiteCounts>,
    #[serde(default)]
    quotes: BTreeMap<String, QuoteTotal>,
    #[serde(default)]
    over_budget: Vec<String>,
    requests: Option<RequestStats>,
    items: Option<ItemsIn>,
    #[serde(default)]
    not_bought_again: BTreeMap<String, String>,
}

/// `summary.json` `items`: a run's eligible items by who buys them.
#[derive(Deserialize)]
struct ItemsIn {
    #[serde(default)]
    earlier_runs: u64,
    #[serde(default)]
    vendor_held: u64,
}

/// Eligible items a run did not buy, and what they would have cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotBought {
    pub earlier_runs: u64,
    pub vendor_held: u64,
    /// By currency, as `summary.json` `not_bought_again` gives it.
    pub saved: BTreeMap<String, String>,
}

impl ReportData {
    /// A run's page from its `summary.json` text, so that the page and the
    /// summary cannot disagree.
    pub fn from_summary(
        source: Source,
        summary_json: &str,
        quotes: Vec<QuoteRow>,
        activations: Vec<(String, u64)>,
        problems: Problems,
    ) -> anyhow::Result<ReportData> {
        let s: SummaryIn =
            serde_json::from_str(summary_json).context("summary.json is not as expected")?;
        Ok(ReportData {
            source,
            run: s.run_id.map(|id| (id, s.finished_at.unwrap_or_default())),
            input: s.input,
            as_of: s.as_of,
            outcome: s.outcome,
            api: s.api,
            dry_run: s.dry_run,
            stopped_because: s.stopped_because,
            rows: s.rows,
            valid_rows: s.valid_rows,
            rejected_rows: s.rejected_rows,
            eligible: s.eligible,
            ineligible: s.ineligible,
            states: Some(s.items_by_state),
            reasons: s.reasons,
            by_region: s.by_region,
            by_site: s.by_site,
            quote_totals: s.quotes,
            quotes,
            over_budget: s.over_budget,
            requests: s.requests,
            not_bought: s.items.map(|i| NotBought {
                earlier_runs: i.earlier_runs,
                vendor_held: i.vendor_held,
                saved: s.not_bought_again,
            }),
            activations: Some(activations),
            problems,
        })
    }
}

/// Quotes from a `quotes.json` text (as the journal keeps it).
pub fn quotes_from_json(text: &str) -> anyhow::Result<Vec<QuoteRow>> {
    serde_json::from_str(text).context("the quotes are not as expected")
}

/// `rejects.csv`: lines per code (most first, then by code) and the first
/// `limit` lines, read in one pass whatever the file's size.
pub fn read_problems(path: &Path, limit: usize) -> anyhow::Result<Problems> {
    let mut rd =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut tally = ProblemTally::new(limit);
    for rec in rd.records() {
        let rec = rec.with_context(|| format!("reading {}", path.display()))?;
        let f = |i: usize| rec.get(i).unwrap_or("");
        tally.add([f(0), f(1), f(2), f(3), f(4)]);
    }
    Ok(tally.problems())
}

/// The [`Problems`] of a `rejects.csv`, counted line by line as it is
/// written (or read back, [`read_problems`]).
#[derive(Debug, Clone)]
pub struct ProblemTally {
    counts: BTreeMap<String, u64>,
    lines: u64,
    first: Vec<ProblemRow>,
    limit: usize,
}

impl ProblemTally {
    /// Keeps the first `limit` lines.
    pub fn new(limit: usize) -> ProblemTally {
        ProblemTally {
            counts: BTreeMap::new(),
            lines: 0,
            first: Vec::new(),
            limit,
        }
    }

    /// One line: row, column, value, code, message, as in the file.
    pub fn add(&mut self, [row, column, value, code, message]: [&str; 5]) {
        self.lines += 1;
        match self.counts.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(code.to_string(), 1);
            }
        }
        if self.first.len() < self.limit {
            self.first.push(ProblemRow {
                row: row.to_string(),
                column: column.to_string(),
                value: value.to_string(),
                code: code.to_string(),
                message: message.to_string(),
            });
        }
    }

    pub fn problems(&self) -> Problems {
        let mut by_code: Vec<(String, u64)> =
            self.counts.iter().map(|(c, n)| (c.clone(), *n)).collect();
        by_code.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Problems::Rejects {
            by_code,
            lines: self.lines,
            first: self.first.clone(),
        }
    }
}

/// Writes `dir/report.html` atomically.
pub fn write(dir: &Path, data: &ReportData) -> anyhow::Result<()> {
    let mut f = AtomicFile::create(&dir.join("report.html"))?;
    std::io::Write::write_all(&mut f, render(data).as_bytes())?;
    f.commit()
}

/// HTML-escapes text for element content and quoted attributes alike.
pub fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Digits grouped by thousands with commas: `1889` → `1,889`.
fn group(digits: &str) -> String {
    let n = digits.len();
    let mut out = String::with_capacity(n + n / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count: `1,889`.
pub fn fmt_int(n: u64) -> String {
    group(&n.to_string())
}

/// An amount with two decimals and grouped thousands: `45,490.58`.
pub fn fmt_money(d: Decimal) -> String {
    let text = d
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven)
        .abs()
        .to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let sign = if d.is_sign_negative() && !d.is_zero() {
        "-"
    } else {
        ""
    };
    format!("{sign}{}.{frac:0<2}", group(int))
}

/// `1 quote`, `4 quotes`.
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{} {word}s", fmt_int(n))
    }
}

/// A rate with one decimal: `19.7`.
fn fmt_rate(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.1}")
    } else {
        "0.0".into()
    }
}

/// A headline number with its `data-metric` hook.
fn metric(path: &str, text: &str) -> String {
    format!(
        r#"<span class="num" data-metric="{}">{}</span>"#,
        esc(path),
        esc(text)
    )
}

/// A headline card. `value` is markup; the longer its text, the smaller
/// its type, so that any count or amount fits the narrowest card (and
/// wraps rather than overflows, should one still not fit).
fn card(out: &mut String, label: &str, value: &str, sub: &str, tone: &str) {
    let size = match visible_len(value) {
        0..=10 => "",
        11..=14 => " long",
        _ => " longer",
    };
    let _ = write!(
        out,
        r#"<div class="card {tone}"><div class="label">{}</div><div class="value{size}">{value}</div><div class="sub">{sub}</div></div>"#,
        esc(label)
    );
}

/// The characters of `markup` outside its tags (entities count as one).
fn visible_len(markup: &str) -> usize {
    let mut n = 0;
    let mut in_tag = false;
    let mut in_entity = false;
    for c in markup.chars() {
        match (c, in_tag, in_entity) {
            ('<', _, _) => in_tag = true,
            ('>', true, _) => in_tag = false,
            (_, true, _) => {}
            ('&', _, _) => {
                in_entity = true;
                n += 1;
            }
            (';', _, true) => in_entity = false,
            (_, _, true) => {}
            _ => n += 1,
        }
    }
    n
}

const STYLE: &str = r#"
:root{color-scheme:light;--ink:#1d2731;--muted:#5f6f7d;--line:#dde3e8;--bg:#f5f7f9}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1220px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px}
.meta{color:var(--muted);margin:0}
.meta b{color:var(--ink);font-weight:600}
.notice{background:#fff8e1;border:1px solid #ffe082;border-radius:6px;padding:10px 14px;margin:14px 0}
.notice.bad{background:#ffebee;border-color:#ef9a9a}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px;margin-top:18px}
.card{min-width:0;background:#fff;border:1px solid var(--line);border-left:4px solid #90a4ae;border-radius:6px;padding:10px 12px;overflow-wrap:anywhere}
.card.good{border-left-color:#2e7d32}.card.bad{border-left-color:#c62828}.card.warn{border-left-color:#ef6c00}.card.info{border-left-color:#1565c0}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.25}
.card .value.long{font-size:19px}.card .value.longer{font-size:15px}
.card .sub{color:var(--muted);font-size:12px;min-height:1em}
.card .sub .num{font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:6px;padding:12px 14px;overflow-x:auto}
figcaption{font-weight:600;margin-bottom:6px}
figure .note{color:var(--muted);font-size:12px;margin:4px 0 0}
svg.chart{display:block;max-width:100%;height:auto}
svg .lbl{font-size:12px;fill:#37474f}
svg .val{font-size:12px;fill:#263238;font-variant-numeric:tabular-nums}
svg .lgd{font-size:11px;fill:#455a64}
.empty{color:var(--muted);font-style:italic}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line);font-size:13px}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#eceff1;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
tr.total td{font-weight:600;border-top:2px solid var(--line)}
td.value{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;word-break:break-all;max-width:260px}
.two{display:grid;grid-template-columns:minmax(260px,1fr) 3fr;gap:14px;align-items:start}
footer{color:var(--muted);font-size:12px;margin-top:28px}
@media (max-width:700px){.charts,.two{grid-template-columns:1fr}}
@media print{body{background:#fff}.card,figure,table{break-inside:avoid}}
"#;

/// The page.
pub fn render(d: &ReportData) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let (heading, what) = match &d.source {
        Source::Run => ("refleet run", "run"),
        Source::Quote => ("refleet quote", "quote"),
        Source::Journal { .. } => ("refleet run (from its journal)", "journal"),
    };
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="generator" content="refleet {ver}">
<title>{heading}: {input}</title>
<style>{STYLE}</style>
</head>
<body>
<main id="refleet-report" data-source="{what}">
<header>
<h1>{heading}</h1>
<p class="meta">Input <b>{input}</b> · as of <b>{as_of}</b>"#,
        ver = env!("CARGO_PKG_VERSION"),
        input = esc(&d.input),
        as_of = esc(&d.as_of),
    );
    if let Some(outcome) = &d.outcome {
        let _ = write!(
            h,
            r#" · outcome <b data-field="outcome">{}</b>"#,
            esc(outcome)
        );
    }
    if let Some(api) = &d.api {
        let _ = write!(h, " · API <b>{}</b>", esc(api));
    }
    if let (Some((run_id, finished_at)), Source::Run) = (&d.run, &d.source) {
        let _ = write!(h, r#" · run <b data-field="run">#{run_id}</b>"#);
        if !finished_at.is_empty() {
            let _ = write!(h, " ended <b>{}</b>", esc(finished_at));
        }
    }
    if let Source::Journal {
        path,
        run_id,
        finished_at,
    } = &d.source
    {
        let _ = write!(
            h,
            " · journal <b>{}</b>, run #{run_id} finished {}",
            esc(path),
            esc(finished_at)
        );
    }
    h.push_str("</p>\n</header>\n");
    notices(&mut h, d);
    headline(&mut h, d);
    by_site(&mut h, d);
    charts(&mut h, d);
    quotes_table(&mut h, d);
    problems(&mut h, d);
    let _ = write!(
        h,
        "<footer>Written by refleet {} · one self-contained file: no script, no network.</footer>\n</main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    h
}

#[cfg(test)]
mod tests;
