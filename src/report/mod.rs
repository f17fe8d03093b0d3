//! Report writers (SPEC §7). Every file is written under a temporary name in
//! its final directory and renamed when complete, so a crash never leaves a
//! half-written report; every cell that came from input is neutralised
//! against spreadsheet formula injection.

pub mod audit;
pub mod html;
pub mod parquet;
mod plan;
mod results;
mod valid;

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use audit::{AuditLog, ChainState};
pub use plan::{eligibility_line, write_quotes, PlanReports, ELIGIBILITY_COLUMNS};
pub use results::{
    event_key, write_results, PlannedKind, ResultCounts, RowSpool, RESULTS_COLUMNS, RESULT_STATES,
};
pub use valid::{ValidFormat, ValidWriter};

use crate::validate::Reject;

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

/// A temporary file in `dir` (so the final rename stays on one file system),
/// readable like any other report (tempfile's default is owner-only).
pub fn temp_in(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".refleet-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

/// A file that appears at its path only when [`AtomicFile::commit`] is called.
pub struct AtomicFile {
    inner: BufWriter<Writeback>,
    path: PathBuf,
}

impl AtomicFile {
    pub fn create(path: &Path) -> anyhow::Result<AtomicFile> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = temp_in(dir)?;
        Ok(AtomicFile {
            inner: BufWriter::with_capacity(256 * 1024, Writeback::new(tmp)),
            path: path.to_path_buf(),
        })
    }

    pub fn commit(self) -> anyhow::Result<()> {
        let tmp = self.inner.into_inner().map_err(|e| e.into_error())?.file;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Starts writing a report to disk while it is being written, a few
/// megabytes behind: an 800 MB `eligibility.csv` is below the kernel's
/// background threshold, so without this all of it would wait for the
/// `fsync` of [`AtomicFile::commit`], with the CPUs idle.
struct Writeback {
    file: tempfile::NamedTempFile,
    written: u64,
    /// Everything before this offset has been handed to the disk.
    started: u64,
}

/// How much is written between two hand-offs to the disk.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Writeback {
    fn new(file: tempfile::NamedTempFile) -> Writeback {
        Writeback {
            file,
            written: 0,
            started: 0,
        }
    }

    /// Starts (never waits for) the writing of what is not handed off yet.
    fn start(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor and range; SYNC_FILE_RANGE_WRITE
            // only starts the write-out of dirty pages. A failure is a lost
            // hint: `commit` still syncs the whole file.
            unsafe {
                libc::sync_file_range(
                    self.file.as_file().as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.started = self.written;
    }
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            self.start();
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `rejects.csv` and `warnings.csv`: `row,column,value,code,message`.
pub struct RejectsWriter {
    csv: csv::Writer<AtomicFile>,
    pub count: u64,
}

impl RejectsWriter {
    pub fn create(path: &Path) -> anyhow::Result<RejectsWriter> {
        let mut csv = csv::Writer::from_writer(AtomicFile::create(path)?);
        csv.write_record(["row", "column", "value", "code", "message"])?;
        Ok(RejectsWriter { csv, count: 0 })
    }

    pub fn write(&mut self, r: &Reject) -> anyhow::Result<()> {
        let row = r.row.to_string();
        self.csv.write_record([
            row.as_str(),
            neutralise(&r.column).as_ref(),
            neutralise(&r.value).as_ref(),
            r.code.as_str(),
            neutralise(&r.message).as_ref(),
        ])?;
        self.count += 1;
        Ok(())
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

    #[test]
    fn formula_cells_are_neutralised() {
        for s in ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "\rx", "\0x"] {
            assert!(neutralise(s).starts_with('\''), "{s:?}");
        }
        for s in ["", "plain", "00:04:F2:AB:CD:EF", "a=b"] {
            assert_eq!(neutralise(s), s);
        }
    }

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"x").unwrap();
        assert!(!path.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }
}
