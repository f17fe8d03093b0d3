//! What a run says at its end: `summary.json`'s shape and the closing text.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::Settings;
use crate::quote::CurrencyTotal;
use crate::report::{ResultCounts, SiteCounts};
use crate::submit::journal::RunSplit;
use crate::submit::SubmitReport;

/// `summary.json`: stable keys for monitoring (SPEC §7).
#[derive(Serialize)]
pub struct Summary<'a> {
    pub refleet_version: &'static str,
    pub run_id: i64,
    /// When the run ended, UTC (RFC 3339, seconds).
    pub finished_at: String,
    pub input: String,
    pub as_of: String,
    pub api: &'a str,
    /// The journal this run used (absolute path).
    pub journal: String,
    pub dry_run: bool,
    /// Whether failed and manual-review items get a support case: with it
    /// on, such an item is not finished until its case is open.
    pub escalate: bool,
    pub outcome: &'a str,
    pub exit_code: i32,
    pub stopped_because: Option<String>,
    pub rows: u64,
    pub valid_rows: u64,
    pub rejected_rows: u64,
    pub eligible: u64,
    pub ineligible: u64,
    pub items_by_state: &'a BTreeMap<String, u64>,
    pub reasons: &'a BTreeMap<String, u64>,
    pub by_region: &'a BTreeMap<String, BTreeMap<String, u64>>,
    pub by_contract: &'a BTreeMap<String, BTreeMap<String, u64>>,
    /// `results.csv`'s rows by their `site` ("" for rows without one, or
    /// too malformed for it to be read), each row in one count.
    pub by_site: &'a BTreeMap<String, SiteCounts>,
    /// What this run buys: items already bought by earlier runs of the
    /// journal, or held by the vendor, are not in it.
    pub quotes: &'a BTreeMap<String, CurrencyTotal>,
    /// This run's eligible items by who buys them.
    pub items: RunSplit,
    /// The lookups before paying (absent with `--no-reconcile`).
    pub vendor_lookups: Option<VendorLookups>,
    /// By currency: what the items not bought again (held by earlier runs
    /// or the vendor) would have cost in this run's quotes.
    pub not_bought_again: BTreeMap<String, String>,
    pub budget: BTreeMap<String, String>,
    pub over_budget: &'a [String],
    pub requests: Requests,
    pub timings: Timings,
}

#[derive(Serialize)]
pub struct VendorLookups {
    pub looked_up: u64,
    /// Held by the vendor for this deactivation, by the vendor's state.
    pub held: BTreeMap<&'static str, u64>,
    pub requests: u64,
    pub finished: bool,
}

/// By currency, `before` minus `after`, for the currencies where it is not zero.
pub fn savings(
    before: &BTreeMap<String, CurrencyTotal>,
    after: &BTreeMap<String, CurrencyTotal>,
) -> BTreeMap<String, String> {
    before
        .iter()
        .filter_map(|(cur, b)| {
            let a = after
                .get(cur)
                .map_or(rust_decimal::Decimal::ZERO, |a| a.total);
            let d = b.total.checked_sub(a)?;
            (!d.is_zero()).then(|| (cur.clone(), d.to_string()))
        })
        .collect()
}

#[derive(Serialize)]
pub struct Requests {
    pub sent: u64,
    pub throttled: u64,
    pub configured_rate: f64,
    pub achieved_rate: f64,
}

#[derive(Serialize)]
pub struct Timings {
    /// Validate, decide, quote, write the plan into the journal, and the
    /// vendor lookups (which are also in `lookup_seconds`).
    pub plan_seconds: f64,
    pub lookup_seconds: f64,
    /// Submission and tracking, lookups included (the requests' window).
    pub submit_seconds: f64,
    pub audit_seconds: f64,
    /// `results.csv` (and the Parquet copies).
    pub results_seconds: f64,
    pub total_seconds: f64,
}

pub fn final_text(
    counts: &ResultCounts,
    report: &SubmitReport,
    stopped_because: Option<&str>,
    settings: &Settings,
    store: &str,
    started: Instant,
) -> String {
    let mut text = String::from("results:");
    for (state, n) in &counts.by_state {
        if *n > 0 {
            text.push_str(&format!(" {state} {n},"));
        }
    }
    text.pop();
    text.push('\n');
    if report.requests > 0 {
        text.push_str(&format!(
            "{} requests in {:.1} s ({:.1}/s of {}/s allowed), {} throttled\n",
            report.requests,
            report.seconds,
            report.requests as f64 / report.seconds.max(0.001),
            settings.rate,
            report.throttled
        ));
    }
    if let Some(why) = stopped_because {
        text.push_str(&format!(
            "stopped before finishing: {why}; run the same command again to resume (journal {store})\n"
        ));
    }
    text.push_str(&format!(
        "{:.2} s; reports in {}: report.html, results.csv, summary.json, eligibility.csv, quotes.csv, quotes.json, rejects.csv\n",
        started.elapsed().as_secs_f64(),
        settings.plan.out.display()
    ));
    text
}

/// `n` with its thousands grouped by commas: `1,891`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(d);
    }
    text
}

/// The line a run starts with: which journal, which run of it, and how
/// much it already holds.
pub fn journal_line(journal: &str, run_id: i64, earlier_items: u64) -> String {
    let held = match earlier_items {
        0 => "no items from earlier runs".to_string(),
        1 => "1 item from earlier runs".to_string(),
        n => format!("{} items from earlier runs", grouped(n)),
    };
    format!("journal: {journal} (run {run_id}; {held})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1891, "1,891"),
            (123_456, "123,456"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(grouped(n), text);
        }
        assert_eq!(
            journal_line("/s/refleet/journal.sqlite", 3, 1891),
            "journal: /s/refleet/journal.sqlite (run 3; 1,891 items from earlier runs)"
        );
        assert_eq!(
            journal_line("j.sqlite", 1, 0),
            "journal: j.sqlite (run 1; no items from earlier runs)"
        );
    }
}
