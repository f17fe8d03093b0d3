//! The plan's reports: `rejects.csv`, `warnings.csv`, `eligibility.csv`
//! (SPEC §7) as a [`PlanSink`], and `quotes.csv` + `quotes.json`.

use std::path::Path;

use std::io::Write;

use super::{neutralise, push_cell, AtomicFile, RejectsWriter};
use crate::domain::{Item, Reject};
use crate::eligibility::Verdict;
use crate::plan::{ItemLine, Judged, PlanSink};
use crate::quote::Quote;

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

/// Makes `eligibility.csv` lines for the plan ([`eligibility_line`]).
pub struct EligibilityLines;

impl ItemLine for EligibilityLines {
    fn line(&self, out: &mut Vec<u8>, item: &Item, key: &str, verdict: &Verdict, eta: &str) {
        eligibility_line(out, item, key, verdict, eta);
    }
}

/// One item's `eligibility.csv` record, newline included, into `out`
/// (emptied first, so that one buffer serves many rows); `eta` is the
/// activation date as text ("" for an ineligible item). Made once per row,
/// on the validating threads, so written directly: the fields that cannot
/// hold a comma, a quote or a line break (numbers, codes, canonical
/// identifiers) are copied as they are, the others as `csv` would write
/// them (a test compares the two).
pub fn eligibility_line(out: &mut Vec<u8>, item: &Item, key: &str, v: &Verdict, eta: &str) {
    out.clear();
    push_decimal(out, item.row);
    out.push(b',');
    push_cell(out, &neutralise(key));
    out.push(b',');
    out.extend_from_slice(item.kind.as_str().as_bytes());
    out.push(b',');
    push_ids(out, item);
    out.push(b',');
    out.extend_from_slice(item.country.as_str().as_bytes());
    out.push(b',');
    out.extend_from_slice(item.region.as_str().as_bytes());
    out.extend_from_slice(if v.eligible() { b",true," } else { b",false," });
    for (i, r) in v.reasons.iter().enumerate() {
        if i > 0 {
            out.push(b';');
        }
        out.extend_from_slice(r.as_str().as_bytes());
    }
    out.push(b',');
    push_cell(out, &neutralise(&v.alternative));
    out.push(b',');
    push_cell(out, eta);
    out.push(b'\n');
}

/// An item's `serial_number,license_id,contract_id` cells, as both
/// `eligibility.csv` and `results.csv` have them: the identifiers are
/// canonical (no comma, quote or line break), the contract id is written
/// as `csv` would.
pub(super) fn push_ids(out: &mut Vec<u8>, item: &Item) {
    if let Some(s) = &item.serial {
        out.extend_from_slice(s.as_bytes());
    }
    out.push(b',');
    if let Some(l) = &item.license_id {
        out.extend_from_slice(&l.canonical());
    }
    out.push(b',');
    push_cell(out, &neutralise(&item.contract_id));
}

/// `n` in decimal.
pub(super) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
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

    /// What the HTML report shows of `rejects.csv` (as far as written).
    pub fn problems(&self) -> super::html::Problems {
        self.rejects.problems()
    }

    pub fn commit(self) -> anyhow::Result<()> {
        self.rejects.commit()?;
        self.warnings.commit()?;
        self.eligibility.commit()
    }
}

impl PlanSink for PlanReports {
    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()> {
        self.eligibility.write_all(judged.eligibility_line)?;
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
    // As serde_json writes it, on the current rayon pool; it overlaps the
    // other reports' final sync.
    let mut json = AtomicFile::create(&out.join("quotes.json"))?;
    super::write_pretty_array(&mut json, quotes)?;
    json.write_all(b"\n")?;
    json.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eligibility::Reason;
    use crate::validate::{ValidateOptions, Validator};

    /// The same line through the general CSV writer.
    fn by_csv_line(item: &Item, key: &str, v: &Verdict, eta: &str) -> Vec<u8> {
        let license = item.license_id.map(|l| l.to_string());
        super::super::csv_line([
            item.row.to_string().as_str(),
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

    /// Every item of the sample inventory.
    fn sample_items() -> Vec<Item> {
        let policy = crate::policy::Policy::load(None).unwrap();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/inventory.csv");
        let opened =
            crate::ingest::open(&crate::ingest::InputPath::File(path), &Default::default())
                .unwrap();
        let options = ValidateOptions {
            keep_items: true,
            ..ValidateOptions::default()
        };
        let validator = Validator::new(&policy, options, opened.source.as_ref()).unwrap();
        let pool = crate::pipeline::Workers::new(1).unwrap();
        struct Collect(Vec<Item>);
        impl crate::pipeline::ValidateSink for Collect {
            fn item(&mut self, item: Item) -> anyhow::Result<()> {
                self.0.push(item);
                Ok(())
            }
            fn reject(&mut self, _: &crate::domain::Reject) -> anyhow::Result<()> {
                Ok(())
            }
            fn warning(&mut self, _: &crate::domain::Reject) -> anyhow::Result<()> {
                Ok(())
            }
        }
        let mut sink = Collect(Vec::new());
        crate::pipeline::run(
            opened.source,
            &validator,
            &pool,
            0,
            &mut sink,
            &crate::progress::NoProgress,
        )
        .unwrap();
        sink.0
    }

    #[test]
    fn eligibility_lines_equal_the_csv_writers() {
        let items = sample_items();
        assert!(items.len() > 1000);
        let verdicts = [
            Verdict {
                reasons: vec![],
                alternative: String::new(),
            },
            Verdict {
                reasons: vec![Reason::ContractExpired, Reason::ModelEndOfSupport],
                alternative: "renew, then upgrade to \"VVX 450\", or call".into(),
            },
            Verdict {
                reasons: vec![Reason::ReportedLost],
                alternative: "=cmd|' /C calc'!A0\r\nx".into(),
            },
        ];
        // One buffer for every line, as the validating threads use it.
        let mut line = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let v = &verdicts[i % verdicts.len()];
            let eta = if v.eligible() { "2026-11-27" } else { "" };
            let key = item.key();
            eligibility_line(&mut line, item, &key, v, eta);
            assert_eq!(
                String::from_utf8(line.clone()).unwrap(),
                String::from_utf8(by_csv_line(item, &key, v, eta)).unwrap()
            );
        }
        // Identifiers a custom policy might allow.
        let mut odd = items[0].clone();
        odd.contract_id = "-C,1\"x".into();
        odd.row = u64::MAX;
        let v = &verdicts[1];
        eligibility_line(&mut line, &odd, "@key", v, "");
        assert_eq!(line, by_csv_line(&odd, "@key", v, ""));
    }

    proptest::proptest! {
        #[test]
        fn cells_equal_the_csv_writers(f in "[a, \"\r\n'=é;-]{0,8}", n: u64) {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            out.push(b',');
            push_cell(&mut out, &f);
            out.push(b'\n');
            proptest::prop_assert_eq!(out, super::super::csv_line([n.to_string().as_str(), f.as_str()]));
        }
    }
}
