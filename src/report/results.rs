//! `results.csv` (SPEC §7): one line per input row with its final state.
//!
//! While the plan runs, [`RowSpool`] writes each row's plan outcome
//! (invalid, ineligible, or an event key to look up) to a temporary file, so
//! memory stays bounded whatever the inventory's size; at the end of the run
//! [`write_results`] joins that spool with the journal's item states.
//!
//! A dry run on a journal that holds no item has nothing to join: there
//! [`UnknownResults`] writes `results.csv` as the plan goes, from lines made
//! on the validating threads ([`UnknownItems::line`]), byte for byte what
//! the spool and [`write_results`] give when the journal knows no item (a
//! test compares them). When its lookups found items the vendor holds,
//! [`patch_results`] then joins just those rows with their records.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use std::io::Write;

use super::counts::{CountedRow, ResultCounts};
use super::{csv_line, neutralise, push_cell, temp_in, AtomicFile, NamedWriter};
use crate::api;
use crate::domain::{Item, Reject};
use crate::eligibility::{Reason, Verdict};
use crate::plan::{ItemLine, Judged, PlanSink};
use crate::submit::journal::{ItemRecord, ItemState};

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
    pending: RowCodes,
}

/// The reject codes of the current row: they come one per (row, code).
#[derive(Default)]
struct RowCodes(Option<InvalidRow>);

/// An invalid row of `results.csv`: its number, reject codes and site.
struct InvalidRow {
    row: u64,
    codes: Vec<&'static str>,
    site: compact_str::CompactString,
}

impl RowCodes {
    /// Adds `r`'s code; when `r` starts a new row, the row before is
    /// returned, complete.
    fn add(&mut self, r: &Reject) -> Option<InvalidRow> {
        match &mut self.0 {
            Some(row) if row.row == r.row => {
                if !row.codes.contains(&r.code.as_str()) {
                    row.codes.push(r.code.as_str());
                }
                if row.site.is_empty() {
                    row.site.clone_from(&r.site);
                }
                None
            }
            _ => self.0.replace(InvalidRow {
                row: r.row,
                codes: vec![r.code.as_str()],
                site: r.site.clone(),
            }),
        }
    }

    /// The last row.
    fn take(&mut self) -> Option<InvalidRow> {
        self.0.take()
    }
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
            pending: RowCodes::default(),
        })
    }

    fn write_invalid(&mut self, invalid: &InvalidRow) -> anyhow::Result<()> {
        let row = invalid.row.to_string();
        let codes = invalid.codes.join(";");
        let mut record = [""; 11];
        (record[0], record[1], record[7]) = (&row, "invalid", &codes);
        record[10] = &invalid.site;
        self.csv.write_record(record)?;
        Ok(())
    }

    fn flush_rejects(&mut self) -> anyhow::Result<()> {
        match self.pending.take() {
            Some(invalid) => self.write_invalid(&invalid),
            None => Ok(()),
        }
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

/// Whether the journal keeps an item with this verdict: eligible (to buy)
/// or ineligible only for `MANUAL_REVIEW` (to escalate).
fn journal_kind(v: &Verdict) -> Option<PlannedKind> {
    if v.eligible() {
        Some(PlannedKind::Eligible)
    } else if v.reasons == [Reason::ManualReview] {
        Some(PlannedKind::ManualReview)
    } else {
        None
    }
}

/// The state of a valid item in the spool: the plan's verdict.
fn plan_state(v: &Verdict) -> &'static str {
    if v.eligible() {
        "planned"
    } else {
        "ineligible"
    }
}

/// How a plan run with a journal that holds no item would put a valid
/// item into `results.csv`: what the journal would say of it right after
/// the plan (see `cli::run`), written as the plan goes.
#[derive(Debug, Clone, Copy)]
pub struct UnknownItems {
    /// Manual reviews are escalated: the journal keeps them, waiting for
    /// their support case.
    pub escalate: bool,
}

impl UnknownItems {
    /// The item's state right after the plan.
    fn state(self, v: &Verdict) -> &'static str {
        match journal_kind(v) {
            Some(PlannedKind::ManualReview) if self.escalate => "manual_review",
            _ => plan_state(v),
        }
    }

    /// One item's `results.csv` record, newline included, into `out`
    /// (emptied first), as [`write_results`] writes it after the plan;
    /// `eta` as in [`crate::report::eligibility_line`]. Made on the
    /// validating threads, so written directly (a test compares it with
    /// the spool's way).
    pub fn line(self, out: &mut Vec<u8>, item: &Item, key: &str, v: &Verdict, eta: &str) {
        out.clear();
        super::plan::push_decimal(out, item.row);
        out.push(b',');
        push_cell(out, &neutralise(key));
        out.push(b',');
        super::plan::push_ids(out, item);
        out.push(b',');
        out.extend_from_slice(item.region.as_str().as_bytes());
        out.push(b',');
        out.extend_from_slice(self.state(v).as_bytes());
        out.push(b',');
        // Reason codes: never a comma, a quote or a formula's first character.
        for (i, r) in v.reasons.iter().enumerate() {
            if i > 0 {
                out.push(b';');
            }
            out.extend_from_slice(r.as_str().as_bytes());
        }
        // request_id, confirmation_id, case_id, attempts.
        out.extend_from_slice(b",,,,0,");
        push_cell(out, eta);
        // activated_at, features_verified.
        out.extend_from_slice(b",,,");
        if journal_kind(v).is_some() {
            push_cell(out, &neutralise(&event_key(item, key)));
        }
        out.push(b',');
        push_cell(out, &neutralise(&item.site));
        // source: nobody bought it.
        out.extend_from_slice(b",\n");
    }
}

impl ItemLine for UnknownItems {
    fn line(&self, out: &mut Vec<u8>, item: &Item, key: &str, verdict: &Verdict, eta: &str) {
        UnknownItems::line(*self, out, item, key, verdict, eta);
    }
}

/// The `results.csv` record of an invalid row.
fn invalid_line(invalid: &InvalidRow) -> Vec<u8> {
    let row = invalid.row.to_string();
    let codes = invalid.codes.join(";");
    let codes = neutralise(&codes);
    let site = neutralise(&invalid.site);
    let mut fields = [""; 18];
    fields[0] = &row;
    fields[6] = "invalid";
    fields[7] = &codes;
    fields[11] = "0";
    fields[16] = &site;
    csv_line(fields)
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
        let event = match journal_kind(v) {
            Some(kind) => {
                let event = event_key(item, key);
                (self.on_planned)(item, &event, v, kind)?;
                event
            }
            None => String::new(),
        };
        self.csv.write_record([
            item.row.to_string().as_str(),
            plan_state(v),
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
        match self.pending.add(r) {
            Some(invalid) => self.write_invalid(&invalid),
            None => Ok(()),
        }
    }

    fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }

    /// Starts the spool afresh. The journal needs nothing undone: it
    /// ignores an item it knows already, and every item planned on the
    /// first pass is planned the same way on the second.
    fn restart(&mut self) -> anyhow::Result<()> {
        self.pending = RowCodes::default();
        let spool = NamedWriter::new(self.file.reopen()?, self.file.path());
        self.csv = csv::Writer::from_writer(std::io::BufWriter::new(spool));
        self.file.as_file().set_len(0)?;
        Ok(())
    }
}

/// A row of the plan as the spool keeps it: what `results.csv` says of
/// the row before the journal's record of its item is joined.
struct PlanRow<'a> {
    row: &'a str,
    plan_state: &'a str,
    key: &'a str,
    serial: &'a str,
    license: &'a str,
    contract: &'a str,
    region: &'a str,
    reasons: &'a str,
    eta: &'a str,
    event: &'a str,
    site: &'a str,
}

/// Writes one row of `results.csv`: the plan's row joined with its item's
/// record, when the journal has one; returns its state and reason.
fn write_row<'r, W: std::io::Write>(
    w: &mut csv::Writer<W>,
    plan: &PlanRow<'r>,
    record: Option<&'r ItemRecord>,
) -> anyhow::Result<(&'r str, String)> {
    let mut state = plan.plan_state;
    let mut reason = plan.reasons.to_string();
    if let Some(r) = record {
        state = r.state.as_str();
        match r.state {
            // A manual review waiting for its case is not finished: it
            // says so, with its plan verdict as the reason; an escalated
            // one keeps MANUAL_REVIEW as its reason.
            ItemState::ManualReview => {}
            ItemState::Escalated if plan.plan_state == "ineligible" => {}
            _ => reason = r.reason.clone().unwrap_or_default(),
        }
    }
    let text = |f: fn(&ItemRecord) -> &Option<String>| record.and_then(|r| f(r).as_deref());
    let eta = text(|r| &r.eta).unwrap_or(plan.eta);
    let attempts = record.map_or(0, |r| r.attempts).to_string();
    w.write_record([
        plan.row,
        neutralise(plan.key).as_ref(),
        plan.serial,
        plan.license,
        neutralise(plan.contract).as_ref(),
        plan.region,
        state,
        neutralise(&reason).as_ref(),
        text(|r| &r.request_id).unwrap_or(""),
        neutralise(text(|r| &r.confirmation_id).unwrap_or("")).as_ref(),
        neutralise(text(|r| &r.case_id).unwrap_or("")).as_ref(),
        &attempts,
        eta,
        text(|r| &r.activated_at).unwrap_or(""),
        text(|r| &r.features).unwrap_or(""),
        neutralise(plan.event).as_ref(),
        neutralise(plan.site).as_ref(),
        record.map_or("", |r| r.source.as_str()),
    ])?;
    Ok((state, reason))
}

/// Writes `out/results.csv` from the spool and the journal's records.
pub fn write_results(
    out: &Path,
    spool: &tempfile::NamedTempFile,
    lookup: &mut dyn FnMut(&str) -> anyhow::Result<Option<ItemRecord>>,
) -> anyhow::Result<ResultCounts> {
    let mut counts = ResultCounts::new();
    let mut w = csv::Writer::from_writer(AtomicFile::create(&out.join("results.csv"))?);
    w.write_record(RESULTS_COLUMNS)?;
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(BufReader::new(spool.reopen()?));
    for rec in rd.records() {
        let rec = rec?;
        let f = |i: usize| rec.get(i).unwrap_or("");
        let plan = PlanRow {
            row: f(0),
            plan_state: f(1),
            key: f(2),
            serial: f(3),
            license: f(4),
            contract: f(5),
            region: f(6),
            reasons: f(7),
            eta: f(8),
            event: f(9),
            site: f(10),
        };
        let record = match plan.event {
            "" => None,
            event => lookup(event)?,
        };
        let (state, reason) = write_row(&mut w, &plan, record.as_ref())?;
        counts.count(CountedRow {
            state,
            reason: &reason,
            region: plan.region,
            contract: plan.contract,
            site: plan.site,
        });
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("{}", e.error()))?
        .commit()?;
    Ok(counts)
}

/// An item a dry run found held by the vendor, for [`patch_results`].
pub struct HeldRow<'a> {
    pub record: &'a ItemRecord,
    /// Its contract id and site as the input wrote them (`results.csv`
    /// may show them neutralised).
    pub contract_id: &'a str,
    pub site: &'a str,
}

/// Rewrites `out/results.csv` as written by [`UnknownResults`] (every
/// eligible item `planned`) with the record of each row `held` finds, as
/// [`write_results`] would have joined it; `counts`, those of the file
/// before, are moved along. Every other row is kept byte for byte.
pub fn patch_results<'h>(
    out: &Path,
    counts: &mut ResultCounts,
    held: &dyn Fn(u64) -> Option<HeldRow<'h>>,
) -> anyhow::Result<()> {
    let path = out.join("results.csv");
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(BufReader::new(File::open(&path)?));
    let mut w = csv::Writer::from_writer(AtomicFile::create(&path)?);
    for rec in rd.records() {
        let rec = rec?;
        let f = |i: usize| rec.get(i).unwrap_or("");
        let found = f(0).parse::<u64>().ok().and_then(held);
        let Some(found) = found.filter(|_| f(6) == "planned") else {
            w.write_record(&rec)?;
            continue;
        };
        let plan = PlanRow {
            row: f(0),
            plan_state: "planned",
            key: f(1),
            serial: f(2),
            license: f(3),
            contract: f(4),
            region: f(5),
            reasons: f(7),
            eta: f(12),
            event: f(15),
            site: f(16),
        };
        let (state, reason) = write_row(&mut w, &plan, Some(found.record))?;
        let (region, contract, site) = (plan.region, found.contract_id, found.site);
        // An eligible item has no reason.
        counts.uncount(CountedRow {
            state: "planned",
            reason: "",
            region,
            contract,
            site,
        });
        counts.count(CountedRow {
            state,
            reason: &reason,
            region,
            contract,
            site,
        });
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("{}", e.error()))?
        .commit()?;
    Ok(())
}

/// `results.csv` of a plan whose journal knows none of its items (a dry
/// run on an empty journal), written as the plan goes: a [`PlanSink`]
/// that asks for [result lines](PlanSink::result_lines).
pub struct UnknownResults {
    items: UnknownItems,
    out: std::path::PathBuf,
    file: AtomicFile,
    counts: ResultCounts,
    pending: RowCodes,
}

impl UnknownResults {
    pub fn create(out: &Path, items: UnknownItems) -> anyhow::Result<UnknownResults> {
        let mut file = AtomicFile::create(&out.join("results.csv"))?;
        file.write_all(&csv_line(RESULTS_COLUMNS))?;
        Ok(UnknownResults {
            items,
            out: out.to_path_buf(),
            file,
            counts: ResultCounts::new(),
            pending: RowCodes::default(),
        })
    }

    fn write_invalid(&mut self, invalid: &InvalidRow) -> anyhow::Result<()> {
        self.file.write_all(&invalid_line(invalid))?;
        self.counts.count(CountedRow {
            state: "invalid",
            reason: &invalid.codes.join(";"),
            region: "",
            contract: "",
            site: &invalid.site,
        });
        Ok(())
    }

    fn flush_rejects(&mut self) -> anyhow::Result<()> {
        match self.pending.take() {
            Some(invalid) => self.write_invalid(&invalid),
            None => Ok(()),
        }
    }

    /// Writes the file and returns its counts.
    pub fn commit(mut self) -> anyhow::Result<ResultCounts> {
        self.flush_rejects()?;
        self.file.commit()?;
        Ok(self.counts)
    }
}

impl PlanSink for UnknownResults {
    fn result_lines(&self) -> Option<Box<dyn ItemLine>> {
        Some(Box::new(self.items))
    }

    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()> {
        self.flush_rejects()?;
        self.file.write_all(judged.result_line)?;
        let v = judged.verdict;
        let reasons = match v.reasons.as_slice() {
            [] => "",
            [one] => one.as_str(),
            _ => &v.reasons_text(),
        };
        self.counts.count(CountedRow {
            state: self.items.state(v),
            reason: reasons,
            region: judged.region.as_str(),
            contract: judged.contract_id,
            site: judged.site,
        });
        Ok(())
    }

    fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
        match self.pending.add(r) {
            Some(invalid) => self.write_invalid(&invalid),
            None => Ok(()),
        }
    }

    fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }

    /// Starts the file afresh; the unfinished one is deleted.
    fn restart(&mut self) -> anyhow::Result<()> {
        *self = UnknownResults::create(&self.out, self.items)?;
        Ok(())
    }
}
