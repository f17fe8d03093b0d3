//! What a run says at its end: `summary.json`'s shape and the closing text.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::Settings;
use crate::quote::CurrencyTotal;
use crate::report::ResultCounts;
use crate::submit::journal::RunSplit;
use crate::submit::SubmitReport;

/// `summary.json`: stable keys for monitoring (SPEC §7).
#[derive(Serialize)]
pub(super) struct Summary<'a> {
    pub(super) refleet_version: &'static str,
    pub(super) run_id: i64,
    pub(super) input: String,
    pub(super) as_of: String,
    pub(super) api: &'a str,
    /// The journal this run used (absolute path).
    pub(super) journal: String,
    pub(super) dry_run: bool,
    /// Whether failed and manual-review items get a support case: with it
    /// on, such an item is not finished until its case is open.
    pub(super) escalate: bool,
    pub(super) outcome: &'a str,
    pub(super) exit_code: i32,
    pub(super) stopped_because: Option<String>,
    pub(super) rows: u64,
    pub(super) valid_rows: u64,
    pub(super) rejected_rows: u64,
    pub(super) eligible: u64,
    pub(super) ineligible: u64,
    pub(super) items_by_state: &'a BTreeMap<String, u64>,
    pub(super) reasons: &'a BTreeMap<String, u64>,
    pub(super) by_region: &'a BTreeMap<String, BTreeMap<String, u64>>,
    pub(super) by_contract: &'a BTreeMap<String, BTreeMap<String, u64>>,
    /// What this run buys: items already bought by earlier runs of the
    /// journal, or held by the vendor, are not in it.
    pub(super) quotes: &'a BTreeMap<String, CurrencyTotal>,
    /// This run's eligible items by who buys them.
    pub(super) items: RunSplit,
    /// The lookups before paying (absent with `--no-reconcile`).
    pub(super) vendor_lookups: Option<VendorLookups>,
    /// By currency: what the items not bought again (held by earlier runs
    /// or the vendor) would have cost in this run's quotes.
    pub(super) not_bought_again: BTreeMap<String, String>,
    pub(super) budget: BTreeMap<String, String>,
    pub(super) over_budget: &'a [String],
    pub(super) requests: Requests,
    pub(super) timings: Timings,
}

#[derive(Serialize)]
pub(super) struct VendorLookups {
    pub(super) looked_up: u64,
    /// Held by the vendor for this deactivation, by the vendor's state.
    pub(super) held: BTreeMap<&'static str, u64>,
    pub(super) requests: u64,
    pub(super) finished: bool,
}

/// By currency, `before` minus `after`, for the currencies where it is not zero.
pub(super) fn savings(
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
pub(super) struct Requests {
    pub(super) sent: u64,
    pub(super) throttled: u64,
    pub(super) configured_rate: f64,
    pub(super) achieved_rate: f64,
}

#[derive(Serialize)]
pub(super) struct Timings {
    /// Validate, decide, quote, write the plan into the journal, and the
    /// vendor lookups (which are also in `lookup_seconds`).
    pub(super) plan_seconds: f64,
    pub(super) lookup_seconds: f64,
    /// Submission and tracking, lookups included (the requests' window).
    pub(super) submit_seconds: f64,
    pub(super) audit_seconds: f64,
    /// `results.csv` (and the Parquet copies).
    pub(super) results_seconds: f64,
    pub(super) total_seconds: f64,
}

pub(super) fn final_text(
    counts: &ResultCounts,
    report: &SubmitReport,
    stopped_because: Option<&str>,
    settings: &Settings,
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
            "stopped before finishing: {why}; run the same command again to resume (journal {})\n",
            settings.state.display()
        ));
    }
    text.push_str(&format!(
        "{:.2} s; reports in {}: report.html, results.csv, summary.json, eligibility.csv, quotes.csv, quotes.json, rejects.csv\n",
        started.elapsed().as_secs_f64(),
        settings.plan.out.display()
    ));
    text
}
