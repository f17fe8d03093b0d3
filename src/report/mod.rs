//! Report writers (SPEC §7). Every file is written under a temporary name in
//! its final directory and renamed when complete, so a crash never leaves a
//! half-written report; every cell that came from input is neutralised
//! against spreadsheet formula injection.

mod counts;
mod file;
pub mod html;
mod json;
pub mod parquet;
mod plan;
mod results;
pub mod trail;
mod valid;

use std::borrow::Cow;
use std::path::Path;

pub use crate::audit::{AuditLog, Binding, ChainState};
pub use counts::{ResultCounts, SiteCounts, RESULT_STATES};
pub use file::{temp_in, AtomicFile, NamedWriter};
pub use json::write_pretty_array;
pub use plan::{
    eligibility_line, write_quotes, EligibilityLines, PlanReports, ELIGIBILITY_COLUMNS,
};
pub use results::{
    event_key, patch_results, write_results, HeldRow, PlannedKind, RowSpool, UnknownItems,
    UnknownResults, RESULTS_COLUMNS,
};
pub use valid::{ValidFormat, ValidWriter};

use crate::domain::Reject;

/// OWASP ASVS V1.2.10: a cell that a spreadsheet would read as a formula is
/// prefixed with a single quote.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\0') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// One CSV record, byte for byte as `csv::Writer` with default settings
/// writes it (checked by a property test): a field is quoted, its quotes
/// doubled, when it holds a comma, a quote, a CR or a LF; a record of one
/// empty field is `""`. By hand because it runs once per row.
pub fn csv_line<'f>(fields: impl IntoIterator<Item = &'f str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut n = 0;
    for f in fields {
        if n > 0 {
            out.push(b',');
        }
        n += 1;
        push_cell(&mut out, f);
    }
    if n == 1 && out.is_empty() {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b'\n');
    out
}

/// One field as `csv::Writer` writes it: quoted, its quotes doubled, when it
/// holds a comma, a quote, a CR or a LF.
pub fn push_cell(out: &mut Vec<u8>, f: &str) {
    if !f.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.extend_from_slice(f.as_bytes());
        return;
    }
    out.push(b'"');
    for b in f.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// `rejects.csv` and `warnings.csv`: `row,column,value,code,message`.
pub struct RejectsWriter {
    csv: csv::Writer<AtomicFile>,
    pub count: u64,
    /// What the HTML report shows of the file, so it is not read back.
    tally: html::ProblemTally,
}

impl RejectsWriter {
    pub fn create(path: &Path) -> anyhow::Result<RejectsWriter> {
        let mut csv = csv::Writer::from_writer(AtomicFile::create(path)?);
        csv.write_record(["row", "column", "value", "code", "message"])?;
        Ok(RejectsWriter {
            csv,
            count: 0,
            tally: html::ProblemTally::new(html::PROBLEM_ROWS),
        })
    }

    pub fn write(&mut self, r: &Reject) -> anyhow::Result<()> {
        let row = r.row.to_string();
        let record = [
            row.as_str(),
            &neutralise(&r.column),
            &neutralise(&r.value),
            r.code.as_str(),
            &neutralise(&r.message),
        ];
        self.csv.write_record(record)?;
        self.tally.add(record);
        self.count += 1;
        Ok(())
    }

    /// What [`html::read_problems`] would read from the file so far.
    pub fn problems(&self) -> html::Problems {
        self.tally.problems()
    }

    pub fn commit(self) -> anyhow::Result<()> {
        let file = self
            .csv
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
        file.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RejectCode;

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

    /// The tally the writer keeps is what reading the file back gives.
    #[test]
    fn rejects_writer_tally_equals_reading_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejects.csv");
        let mut w = RejectsWriter::create(&path).unwrap();
        let values = ["plain", "a,b", "say \"hi\"", "two\nlines", "=1+1", "", "é"];
        let n = html::PROBLEM_ROWS + 30;
        for i in 0..n {
            w.write(&Reject {
                row: i as u64 + 2,
                column: Cow::Borrowed(if i % 2 == 0 { "mac_address" } else { "-col" }),
                value: values[i % values.len()].to_string(),
                code: RejectCode::ALL[(i * i) % RejectCode::ALL.len()],
                message: format!("@message {i}, with \"quotes\""),
                site: Default::default(),
            })
            .unwrap();
        }
        let tallied = w.problems();
        w.commit().unwrap();
        let read = html::read_problems(&path, html::PROBLEM_ROWS).unwrap();
        assert_eq!(tallied, read);
        let html::Problems::Rejects { lines, first, .. } = read else {
            panic!("rejects expected");
        };
        assert_eq!((lines, first.len()), (n as u64, html::PROBLEM_ROWS));
    }

    #[test]
    fn formula_cells_are_neutralised() {
        for s in ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "\rx", "\0x"] {
            assert!(neutralise(s).starts_with('\''), "{s:?}");
        }
        for s in ["", "plain", "00:04:F2:AB:CD:EF", "a=b"] {
            assert_eq!(neutralise(s), s);
        }
    }
}
