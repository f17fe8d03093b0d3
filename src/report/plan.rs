//! The plan's reports: `rejects.csv`, `warnings.csv`, `eligibility.csv`
//! (SPEC §7) as a [`PlanSink`], and `quotes.csv` + `quotes.json`.

use std::path::Path;

use std::io::Write;

use super::{neutralise, AtomicFile, RejectsWriter};
use crate::domain::Item;
use crate::eligibility::Verdict;
use crate::plan::{Judged, PlanSink};
use crate::quote::Quote;
use crate::validate::Reject;

pub const ELIGIBILITY_COLUMNS: [&str; 12] = [
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

/// One item's `eligibility.csv` record, newline included; `eta` is the
/// activation date as text ("" for an ineligible item). Made once per row,
/// on the validating threads.
pub fn eligibility_line(item: &Item, key: &str, v: &Verdict, eta: &str) -> Vec<u8> {
    let mut row = [0u8; 20];
    let license = item.license_id.map(|l| l.to_string());
    super::csv_line([
        super::decimal(item.row, &mut row),
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
    ])
}

/// Writes the row-level reports of a plan into `out`; nothing appears
/// there until [`PlanReports::commit`].
pub struct PlanReports {
    out: std::path::PathBuf,
    rejects: RejectsWriter,
    warnings: RejectsWriter,
    eligibility: AtomicFile,
}

impl PlanReports {
    pub fn create(out: &Path) -> anyhow::Result<PlanReports> {
        let mut eligibility = AtomicFile::create(&out.join("eligibility.csv"))?;
        eligibility.write_all(&super::csv_line(ELIGIBILITY_COLUMNS))?;
        Ok(PlanReports {
            out: out.to_path_buf(),
            rejects: RejectsWriter::create(&out.join("rejects.csv"))?,
            warnings: RejectsWriter::create(&out.join("warnings.csv"))?,
            eligibility,
        })
    }

    pub fn commit(self) -> anyhow::Result<()> {
        self.rejects.commit()?;
        self.warnings.commit()?;
        self.eligibility.commit()
    }
}

impl PlanSink for PlanReports {
    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()> {
        self.eligibility.write_all(judged.line)?;
        Ok(())
    }
    fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
        self.rejects.write(r)
    }
    fn warning(&mut self, w: &Reject) -> anyhow::Result<()> {
        self.warnings.write(w)
    }
    /// Starts the files afresh; the unfinished ones are deleted.
    fn restart(&mut self) -> anyhow::Result<()> {
        *self = PlanReports::create(&self.out)?;
        Ok(())
    }
}

/// `quotes.csv` (one line per quote) and `quotes.json` (the same plus every line item).
pub fn write_quotes(out: &Path, quotes: &[Quote]) -> anyhow::Result<()> {
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
    json.write_all(b"\n")?;
    json.commit()
}
