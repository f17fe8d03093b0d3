//! `results.csv` (SPEC §7): one line per input row with its final state.
//!
//! While the plan runs, [`RowSpool`] writes each row's plan outcome
//! (invalid, ineligible, or an event key to look up) to a temporary file, so
//! memory stays bounded whatever the inventory's size; at the end of the run
//! [`write_results`] joins that spool with the journal's item states.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::Serialize;

use super::{neutralise, temp_in, AtomicFile, NamedWriter};
use crate::api;
use crate::domain::Item;
use crate::eligibility::{Reason, Verdict};
use crate::plan::{Judged, PlanSink};
use crate::submit::journal::ItemRecord;
use crate::validate::Reject;

pub const RESULTS_COLUMNS: [&str; 18] = [
    "row",
    "item_key",
    "serial_number",
    "license_id",
    "contract_id",
    "region",
    "state",
    "reason",
    "request_id",
    "confirmation_id",
    "case_id",
    "attempts",
    "eta",
    "activated_at",
    "features_verified",
    "idempotency_key",
    "site",
    // this_run, earlier_run, vendor_record (held by the vendor, not bought
    // by this journal), or empty: who bought the item's current state.
    "source",
];

/// What the plan decided for an item that goes on to the journal.
pub enum PlannedKind {
    /// Eligible: to be submitted.
    Eligible,
    /// Ineligible only for `MANUAL_REVIEW`: to be escalated.
    ManualReview,
}

/// Called for each item the journal must know, with its event key.
pub type OnPlanned<'a> = dyn FnMut(&Item, &str, &Verdict, PlannedKind) -> anyhow::Result<()> + 'a;

/// Spools every row's plan outcome, in row order.
pub struct RowSpool<'a> {
    csv: csv::Writer<std::io::BufWriter<NamedWriter<File>>>,
    file: tempfile::NamedTempFile,
    on_planned: Box<OnPlanned<'a>>,
    /// Rejects of the current row: they come one per (row, code).
    pending: Option<(u64, Vec<&'static str>)>,
}

impl<'a> RowSpool<'a> {
    pub fn create(out: &Path, on_planned: Box<OnPlanned<'a>>) -> anyhow::Result<RowSpool<'a>> {
        let file = temp_in(out)?;
        let spool = NamedWriter::new(file.reopen()?, file.path());
        let csv = csv::Writer::from_writer(std::io::BufWriter::new(spool));
        Ok(RowSpool {
            csv,
            file,
            on_planned,
            pending: None,
        })
    }

    fn flush_rejects(&mut self) -> anyhow::Result<()> {
        if let Some((row, codes)) = self.pending.take() {
            self.csv.write_record([
                row.to_string().as_str(),
                "invalid",
                "",
                "",
                "",
                "",
                "",
                &codes.join(";"),
                "",
                "",
                "",
            ])?;
        }
        Ok(())
    }

    /// The spool, complete.
    pub fn finish(mut self) -> anyhow::Result<tempfile::NamedTempFile> {
        self.flush_rejects()?;
        self.csv.flush()?;
        drop(self.csv);
        Ok(self.file)
    }
}

/// The event key of an item (SPEC §6).
pub fn event_key(item: &Item, key: &str) -> String {
    api::item_key(key, &item.contract_id, &item.deactivated_at.to_string())
}

impl PlanSink for RowSpool<'_> {
    fn wants_items(&self) -> bool {
        true
    }
    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()> {
        let Judged {
            item,
            key,
            verdict: v,
            eta,
            ..
        } = *judged;
        let item =
            anyhow::Context::context(item, "the plan did not keep the item this report needs")?;
        self.flush_rejects()?;
        let manual_only = v.reasons == [Reason::ManualReview];
        let event = if v.eligible() || manual_only {
            let kind = if v.eligible() {
                PlannedKind::Eligible
            } else {
                PlannedKind::ManualReview
            };
            let event = event_key(item, key);
            (self.on_planned)(item, &event, v, kind)?;
            event
        } else {
            String::new()
        };
        let plan_state = if v.eligible() {
            "planned"
        } else {
            "ineligible"
        };
        self.csv.write_record([
            item.row.to_string().as_str(),
            plan_state,
            key,
            &item.serial.map(|s| s.to_string()).unwrap_or_default(),
            &item.license_id.map(|l| l.to_string()).unwrap_or_default(),
            &item.contract_id,
            item.region.as_str(),
            &v.reasons_text(),
            &eta.map(|d| d.to_string()).unwrap_or_default(),
            &event,
            &item.site,
        ])?;
        Ok(())
    }

    fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
        match &mut self.pending {
            Some((row, codes)) if *row == r.row => {
                if !codes.contains(&r.code.as_str()) {
                    codes.push(r.code.as_str());
                }
            }
            _ => {
                self.flush_rejects()?;
                self.pending = Some((r.row, vec![r.code.as_str()]));
            }
        }
        Ok(())
    }

    fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }

    /// Starts the spool afresh. The journal needs nothing undone: it
    /// ignores an item it knows already, and every item planned on the
    /// first pass is planned the same way on the second.
    fn restart(&mut self) -> anyhow::Result<()> {
        self.pending = None;
        let spool = NamedWriter::new(self.file.reopen()?, self.file.path());
        self.csv = csv::Writer::from_writer(std::io::BufWriter::new(spool));
        self.file.as_file().set_len(0)?;
        Ok(())
    }
}

/// Counts of the written `results.csv`, for `summary.json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ResultCounts {
    pub rows: u64,
    pub by_state: BTreeMap<String, u64>,
    pub by_reason: BTreeMap<String, u64>,
    pub by_region: BTreeMap<String, BTreeMap<String, u64>>,
    pub by_contract: BTreeMap<String, BTreeMap<String, u64>>,
    /// Rows the API rejected or failed (escalated failures included).
    pub failed_or_rejected: u64,
    /// Rows still on their way (planned, submitted, accepted, provisioning),
    /// or manual reviews whose support case is not open yet.
    pub unfinished: u64,
}

/// States in `results.csv`, all listed in `summary.json` even when zero.
pub const RESULT_STATES: [&str; 10] = [
    "invalid",
    "ineligible",
    "planned",
    "submitted",
    "accepted",
    "provisioning",
    "active",
    "rejected",
    "failed",
    "escalated",
];

/// Writes `out/results.csv` from the spool and the journal's records.
pub fn write_results(
    out: &Path,
    spool: &tempfile::NamedTempFile,
    lookup: &mut dyn FnMut(&str) -> anyhow::Result<Option<ItemRecord>>,
) -> anyhow::Result<ResultCounts> {
    let mut counts = ResultCounts::default();
    for s in RESULT_STATES {
        counts.by_state.insert(s.to_string(), 0);
    }
    let mut w = csv::Writer::from_writer(AtomicFile::create(&out.join("results.csv"))?);
    w.write_record(RESULTS_COLUMNS)?;
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(BufReader::new(spool.reopen()?));
    for rec in rd.records() {
        let rec = rec?;
        let f = |i: usize| rec.get(i).unwrap_or("");
        let (row, plan_state, key, serial, license, contract, region, reasons, eta, event) =
            (f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), f(9));
        let site = f(10);
        let mut state = plan_state.to_string();
        let mut reason = reasons.to_string();
        let mut record = ItemRecord::default();
        if !event.is_empty() {
            if let Some(r) = lookup(event)? {
                match r.state.as_str() {
                    // A manual review waiting for its case is not finished:
                    // it says so, with its plan verdict as the reason.
                    "manual_review" => state = r.state.clone(),
                    // An escalated manual review keeps MANUAL_REVIEW as its reason.
                    "escalated" if plan_state == "ineligible" => state = r.state.clone(),
                    s => {
                        state = s.to_string();
                        reason = r.reason.clone().unwrap_or_default();
                    }
                }
                record = r;
            }
        }
        let eta = record.eta.clone().unwrap_or_else(|| eta.to_string());
        w.write_record([
            row,
            neutralise(key).as_ref(),
            serial,
            license,
            neutralise(contract).as_ref(),
            region,
            &state,
            neutralise(&reason).as_ref(),
            record.request_id.as_deref().unwrap_or(""),
            neutralise(record.confirmation_id.as_deref().unwrap_or("")).as_ref(),
            neutralise(record.case_id.as_deref().unwrap_or("")).as_ref(),
            &record.attempts.to_string(),
            &eta,
            record.activated_at.as_deref().unwrap_or(""),
            record.features.as_deref().unwrap_or(""),
            neutralise(event).as_ref(),
            neutralise(site).as_ref(),
            &record.source,
        ])?;
        counts.rows += 1;
        *counts.by_state.entry(state.clone()).or_default() += 1;
        for r in reason.split(';').filter(|r| !r.is_empty()) {
            *counts.by_reason.entry(r.to_string()).or_default() += 1;
        }
        if !region.is_empty() {
            *counts
                .by_region
                .entry(region.to_string())
                .or_default()
                .entry(state.clone())
                .or_default() += 1;
        }
        if !contract.is_empty() {
            *counts
                .by_contract
                .entry(contract.to_string())
                .or_default()
                .entry(state.clone())
                .or_default() += 1;
        }
        match state.as_str() {
            "rejected" | "failed" => counts.failed_or_rejected += 1,
            "escalated" if reason != "MANUAL_REVIEW" => counts.failed_or_rejected += 1,
            "planned" | "submitted" | "accepted" | "provisioning" | "manual_review" => {
                counts.unfinished += 1
            }
            _ => {}
        }
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("{}", e.error()))?
        .commit()?;
    Ok(counts)
}
