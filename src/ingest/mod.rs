//! Ingest: a file (CSV, gzip or zstd CSV, Parquet) or stdin → chunks of raw
//! records with 1-based row numbers. Nothing here interprets a value; that is
//! `validate`'s job. Memory is bounded by the chunk size, never the file size.

mod csv;
pub mod headers;
mod input;
mod parquet;
mod split;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use self::csv::{sniff_delimiter, CsvSource};
pub use self::parquet::ParquetSource;
pub use headers::{match_headers, HeaderError, HeaderMap};
pub use input::open;

use crate::domain::RejectCode;
use split::{ByteFinder, BLOCK};

/// Default cap on one CSV record (SPEC §2.1).
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot open {path}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{0} is a folder, not a file: give the export's file (CSV, .csv.gz, .csv.zst or Parquet)"
    )]
    Folder(String),
    #[error("this is an Excel workbook (.xlsx), not CSV: in Excel, File > Save As > \"CSV UTF-8 (Comma delimited)\", then give refleet that file")]
    Workbook,
    #[error("the input is empty: no header row")]
    Empty,
    #[error("bad header row: {0}")]
    Header(String),
    #[error(transparent)]
    Columns(#[from] HeaderError),
    #[error("Parquet: {0}")]
    Parquet(String),
    #[error("column `{column}`{} holds {kind} values, which have no single text form; export it as text, a number or a date", as_known(.column, .means))]
    Unreadable {
        column: String,
        kind: String,
        means: String,
    },
}

/// ` (country)` after a column named otherwise than the known column it is.
fn as_known(column: &str, means: &str) -> String {
    if column == means {
        String::new()
    } else {
        format!(" ({means})")
    }
}

/// A column whose values a source cannot give as text (a Parquet map,
/// list, struct or binary column): its cells read as empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableColumn {
    /// Its place among the source's headers.
    pub index: usize,
    pub name: String,
    /// Its type as the file declares it, e.g. `map`.
    pub kind: String,
}

/// Why a record could not be split into fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProblem {
    pub code: RejectCode,
    pub message: String,
}

/// A batch of records in one flat buffer: cheap to fill, to send to another
/// thread and to read from many threads.
///
/// A record is stored either as its fields back to back with their end
/// offsets, or, for a CSV line without quotes (most of them), as the line
/// itself: the reader then only finds where lines end, and each record is
/// split into fields where it is read ([`RecordChunk::view_in`]), on the
/// validating threads.
#[derive(Debug)]
pub struct RecordChunk {
    data: Vec<u8>,
    /// The blocks of lines [`RecordChunk::append_lines`] found to be UTF-8,
    /// kept as text so their lines are read as text without a second check.
    text: String,
    /// Field end offsets, relative to the record's start in `data`.
    ends: Vec<u32>,
    records: Vec<RecordMeta>,
    problems: Vec<(RecordProblem, String)>,
    /// The delimiter of the records stored as lines.
    delimiter: u8,
    /// The field count a line must have (the header's).
    line_width: usize,
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    row: u64,
    data_start: usize,
    ends_start: u32,
    /// The field count, or for a line its length in bytes.
    width: u32,
    /// Index into `problems` + 1, or 0.
    problem: u32,
    /// Stored as a line, fields still separated by the delimiter.
    line: bool,
    /// A line stored in `text` (UTF-8) rather than `data`.
    in_text: bool,
}

/// The fields of one record, split once: where each ends in its bytes.
pub struct FieldView<'c> {
    bytes: &'c [u8],
    /// The end of each field; the next one starts `gap` bytes later.
    ends: &'c [u32],
    /// 1 when the fields are separated by a delimiter, 0 when they are
    /// stored back to back.
    gap: u32,
}

/// Fields a line can have before [`FieldEnds`] uses its vector.
const FIELDS_INLINE: usize = 32;

/// Room for the field ends of a line split by [`RecordChunk::view_in`],
/// kept by the caller from one record to the next and filled in place, so
/// that no row zeroes or copies the array.
pub struct FieldEnds {
    inline: [u32; FIELDS_INLINE],
    wide: Vec<u32>,
}

impl Default for FieldEnds {
    fn default() -> Self {
        FieldEnds {
            inline: [0; FIELDS_INLINE],
            wide: Vec::new(),
        }
    }
}

impl<'c> FieldView<'c> {
    /// The number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The record's bytes: every field, with whatever separates them
    /// (nothing, or ASCII delimiters), so UTF-8 exactly when each field is.
    pub fn bytes(&self) -> &'c [u8] {
        self.bytes
    }

    /// Where field `i` sits inside [`FieldView::bytes`]; empty when the
    /// record is narrower.
    #[inline]
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let ends = self.ends;
        match ends.get(i) {
            Some(&end) => {
                let start = match i.checked_sub(1) {
                    Some(p) => ends[p] + self.gap,
                    None => 0,
                };
                start as usize..end as usize
            }
            None => 0..0,
        }
    }

    /// Field `i`, or empty when the record is narrower.
    pub fn field(&self, i: usize) -> &'c [u8] {
        &self.bytes[self.range(i)]
    }

    /// Field `i` as text, given `record`: [`FieldView::bytes`] already
    /// checked to be UTF-8. `None` when a non-empty field does not start
    /// and end on character boundaries (then it is not UTF-8 on its own),
    /// which fields stored back to back can fail (one may end with the
    /// first byte of a character the next one finishes); fields separated
    /// by an ASCII delimiter always pass.
    #[inline]
    pub fn text(&self, record: &'c str, i: usize) -> Option<&'c str> {
        let r = self.range(i);
        if r.is_empty() {
            // An empty field may sit inside a character of the record (the
            // fields on either side being broken halves); alone it is "".
            Some("")
        } else {
            record.get(r)
        }
    }
}

/// The ends of the fields of a line split at each `delimiter`, a block at
/// a time: each block becomes a bit mask of its delimiters, and each set
/// bit ends a field. The usual line fills a fixed array with no check per
/// field. (`memchr` over each line instead: 1.11× the CPU of `validate` at
/// 10 M rows, benches/RESULTS.md.)
fn split_line<'e>(bytes: &[u8], delimiter: u8, out: &'e mut FieldEnds) -> &'e [u32] {
    let finder = ByteFinder::new(delimiter);
    let ends = &mut out.inline;
    let mut n = 0usize;
    let (blocks, remainder) = bytes.as_chunks::<BLOCK>();
    let mut at = 0u32;
    for block in blocks {
        if !push_ends(ends, &mut n, at, finder.mask(block), BLOCK) {
            return split_wide(bytes, delimiter, &mut out.wide);
        }
        at += BLOCK as u32;
    }
    let rest = remainder.len();
    if rest > 0 {
        // The last block ends at the end of the line and overlaps the one
        // before; its first bytes, seen already, are shifted out.
        let mask = match bytes.last_chunk::<BLOCK>() {
            Some(last) => finder.mask(last) >> (BLOCK - rest),
            None => remainder
                .iter()
                .enumerate()
                .fold(0, |m, (i, &b)| m | u32::from(b == delimiter) << i),
        };
        if !push_ends(ends, &mut n, at, mask, rest) {
            return split_wide(bytes, delimiter, &mut out.wide);
        }
    }
    ends[n] = bytes.len() as u32;
    &out.inline[..n + 1]
}

/// Adds a field end at `at` plus each set bit of `mask`, the delimiters of
/// a block of `width` bytes; false, adding none, when they might not fit
/// with room left for the line's last end.
#[inline(always)]
fn push_ends(
    ends: &mut [u32; FIELDS_INLINE],
    n: &mut usize,
    at: u32,
    mut mask: u32,
    width: usize,
) -> bool {
    if *n + width + 1 > FIELDS_INLINE && mask != 0 {
        return false;
    }
    while mask != 0 {
        ends[*n] = at + mask.trailing_zeros();
        *n += 1;
        mask &= mask - 1;
    }
    true
}

/// [`split_line`] for a line of many fields.
fn split_wide<'e>(bytes: &[u8], delimiter: u8, ends: &'e mut Vec<u32>) -> &'e [u32] {
    ends.clear();
    ends.extend(
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == delimiter)
            .map(|(i, _)| i as u32),
    );
    ends.push(bytes.len() as u32);
    ends
}

/// At most this much of a broken record's text goes into its reject.
const PREVIEW_BYTES: usize = 120;

/// A record's index inside its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIdx(usize);

impl Default for RecordChunk {
    fn default() -> Self {
        RecordChunk::with_capacity(0, 0)
    }
}

impl RecordChunk {
    /// Room for `records` records of `width` fields, at up to 160 bytes a
    /// record (a usual export line is 100–150) before the data grows.
    pub fn with_capacity(records: usize, width: usize) -> RecordChunk {
        RecordChunk {
            // Most records are lines, kept in `text`; `data` is not
            // reserved, and grows only when there are others.
            data: Vec::new(),
            ends: Vec::with_capacity(records * width),
            records: Vec::with_capacity(records),
            problems: Vec::new(),
            delimiter: b',',
            line_width: width,
            text: String::with_capacity(records * 160),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// How the lines that [`RecordChunk::push_line`] adds are split.
    pub fn set_line_format(&mut self, delimiter: u8, width: usize) {
        self.delimiter = delimiter;
        self.line_width = width;
    }

    /// Appends the lines at the start of `block` as records, numbered from
    /// `first_row`: each runs up to a newline, which it does not include,
    /// and a blank line is no record (as in csv-core). Stops after `limit`
    /// records, before a line longer than `max_len` bytes, and at the last
    /// newline. Returns the records added and the bytes of `block` used
    /// (up to the newline of the last line taken). The lines must hold no
    /// quote and no CR, and their delimiter be ASCII
    /// ([`RecordChunk::set_line_format`]).
    ///
    /// The bytes used are checked to be UTF-8 as a whole, once rather than
    /// line by line: see [`RecordChunk::record_text`].
    pub fn append_lines(
        &mut self,
        block: &[u8],
        first_row: u64,
        limit: usize,
        max_len: usize,
    ) -> (usize, usize) {
        // The lines are recorded first, at offsets in `block`, and their
        // bytes appended after, to `text` when they are UTF-8.
        let first = self.records.len();
        let (mut taken, mut used) = (0, 0);
        for nl in memchr::memchr_iter(b'\n', block) {
            if taken == limit || nl - used > max_len {
                break;
            }
            if nl > used {
                self.push_line(first_row + taken as u64, used, nl - used);
                taken += 1;
            }
            used = nl + 1;
        }
        let bytes = &block[..used];
        let (at, in_text) = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => {
                let at = self.text.len();
                self.text.push_str(text);
                (at, true)
            }
            Err(_) => {
                let at = self.data.len();
                self.data.extend_from_slice(bytes);
                (at, false)
            }
        };
        for m in &mut self.records[first..] {
            m.data_start += at;
            m.in_text = in_text;
        }
        (taken, used)
    }

    /// A record that is the line at `start..start + len` of the bytes
    /// [`RecordChunk::append_lines`] is appending.
    fn push_line(&mut self, row: u64, start: usize, len: usize) {
        self.records.push(RecordMeta {
            row,
            data_start: start,
            ends_start: 0,
            width: len as u32,
            problem: 0,
            line: true,
            in_text: false,
        });
    }

    /// Empties the chunk, keeping its buffers for the next fill.
    pub fn clear(&mut self) {
        self.text.clear();
        self.data.clear();
        self.ends.clear();
        self.records.clear();
        self.problems.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends a record given as one buffer and its field end offsets.
    pub fn push_record(&mut self, row: u64, data: &[u8], ends: &[usize]) {
        self.records.push(RecordMeta {
            row,
            data_start: self.data.len(),
            ends_start: self.ends.len() as u32,
            width: ends.len() as u32,
            problem: 0,
            line: false,
            in_text: false,
        });
        self.data.extend_from_slice(data);
        self.ends.extend(ends.iter().map(|e| *e as u32));
    }

    /// Appends a record made of separate fields.
    pub fn push_fields<'a>(&mut self, row: u64, fields: impl IntoIterator<Item = &'a [u8]>) {
        let data_start = self.data.len();
        let ends_start = self.ends.len();
        for f in fields {
            self.data.extend_from_slice(f);
            self.ends.push((self.data.len() - data_start) as u32);
        }
        self.records.push(RecordMeta {
            row,
            data_start,
            ends_start: ends_start as u32,
            width: (self.ends.len() - ends_start) as u32,
            problem: 0,
            line: false,
            in_text: false,
        });
    }

    /// Appends a record that could not be read, with a preview of its text.
    pub fn push_problem(&mut self, row: u64, problem: RecordProblem, preview: String) {
        self.problems.push((problem, preview));
        self.records.push(RecordMeta {
            row,
            data_start: self.data.len(),
            ends_start: self.ends.len() as u32,
            width: 0,
            problem: self.problems.len() as u32,
            line: false,
            in_text: false,
        });
    }

    pub fn records(&self) -> impl ExactSizeIterator<Item = RecordIdx> + use<> {
        (0..self.records.len()).map(RecordIdx)
    }

    pub fn record_at(&self, i: usize) -> RecordIdx {
        RecordIdx(i)
    }

    pub fn row(&self, r: RecordIdx) -> u64 {
        self.records[r.0].row
    }

    pub fn width(&self, r: RecordIdx) -> usize {
        let m = &self.records[r.0];
        if m.line {
            self.view_in(r, &mut FieldEnds::default()).len()
        } else {
            m.width as usize
        }
    }

    /// The record's fields, split; a line's field ends go into `ends`.
    #[inline]
    pub fn view_in<'a>(&'a self, r: RecordIdx, ends: &'a mut FieldEnds) -> FieldView<'a> {
        let m = &self.records[r.0];
        if m.line {
            let bytes = self.line_bytes(m);
            return FieldView {
                bytes,
                ends: split_line(bytes, self.delimiter, ends),
                gap: 1,
            };
        }
        let ends = &self.ends[m.ends_start as usize..m.ends_start as usize + m.width as usize];
        let len = ends.last().map_or(0, |&e| e as usize);
        FieldView {
            bytes: &self.data[m.data_start..m.data_start + len],
            ends,
            gap: 0,
        }
    }

    /// The bytes of a record stored as a line.
    #[inline]
    fn line_bytes(&self, m: &RecordMeta) -> &[u8] {
        let range = m.data_start..m.data_start + m.width as usize;
        if m.in_text {
            &self.text.as_bytes()[range]
        } else {
            &self.data[range]
        }
    }

    /// Record `r`'s bytes ([`RecordChunk::record_bytes`]) as text, when they
    /// are UTF-8.
    #[inline]
    pub fn record_text(&self, r: RecordIdx) -> Option<&str> {
        let m = &self.records[r.0];
        if m.in_text {
            // A line runs from the start of its block, or just after a
            // newline, to just before one: whole characters.
            return self.text.get(m.data_start..m.data_start + m.width as usize);
        }
        simdutf8::basic::from_utf8(self.record_bytes(r)).ok()
    }

    /// Why record `r` could not be read, if it could not.
    pub fn problem(&self, r: RecordIdx) -> Option<Cow<'_, RecordProblem>> {
        self.problem_of(r, &self.view_in(r, &mut FieldEnds::default()))
    }

    /// [`RecordChunk::problem`], given the record's [`RecordChunk::view_in`].
    pub fn problem_of(&self, r: RecordIdx, view: &FieldView<'_>) -> Option<Cow<'_, RecordProblem>> {
        let m = &self.records[r.0];
        if m.line {
            return (view.len() != self.line_width).then(|| {
                Cow::Owned(RecordProblem {
                    code: RejectCode::FieldCountMismatch,
                    message: format!(
                        "row has {} fields, the header has {}",
                        view.len(),
                        self.line_width
                    ),
                })
            });
        }
        let p = m.problem as usize;
        (p > 0).then(|| Cow::Borrowed(&self.problems[p - 1].0))
    }

    /// The start of the broken record's text, for the reject's `value`.
    pub fn problem_preview(&self, r: RecordIdx) -> Cow<'_, str> {
        let m = &self.records[r.0];
        if m.line {
            if self.width(r) == self.line_width {
                return Cow::Borrowed("");
            }
            let line = self.line_bytes(m);
            return String::from_utf8_lossy(&line[..line.len().min(PREVIEW_BYTES)]);
        }
        let p = m.problem as usize;
        if p > 0 {
            Cow::Borrowed(&self.problems[p - 1].1)
        } else {
            Cow::Borrowed("")
        }
    }

    /// All of record `r`'s field bytes (see [`FieldView::bytes`]).
    pub fn record_bytes(&self, r: RecordIdx) -> &[u8] {
        let m = &self.records[r.0];
        if m.line {
            return self.line_bytes(m);
        }
        let len = {
            let s = m.ends_start as usize;
            self.ends[s..s + m.width as usize]
                .last()
                .map_or(0, |&e| e as usize)
        };
        &self.data[m.data_start..m.data_start + len]
    }

    /// Where field `i` sits inside [`RecordChunk::record_bytes`]; empty when
    /// the record is narrower.
    pub fn field_range(&self, r: RecordIdx, i: usize) -> std::ops::Range<usize> {
        self.view_in(r, &mut FieldEnds::default()).range(i)
    }

    /// Field `i` of record `r`, or empty when the record is narrower.
    pub fn field(&self, r: RecordIdx, i: usize) -> &[u8] {
        &self.record_bytes(r)[self.field_range(r, i)]
    }
}

/// Anything that yields record chunks in source order.
pub trait RecordSource: Send {
    fn headers(&self) -> &[String];

    /// The columns whose values this source cannot give as text.
    fn unreadable_columns(&self) -> &[UnreadableColumn] {
        &[]
    }

    /// From now on, only the columns at `used` (indices into the headers)
    /// are decoded; the others read as empty. A source that splits whole
    /// records anyway (CSV) ignores it.
    fn read_only(&mut self, _used: &[usize]) {}

    /// Appends up to `max_records` records to `chunk`; none means the end.
    fn fill(&mut self, chunk: &mut RecordChunk, max_records: usize) -> Result<(), IngestError>;

    /// The next chunk in a new buffer, or `None` at the end.
    fn next_chunk(&mut self, max_records: usize) -> Result<Option<RecordChunk>, IngestError> {
        let mut chunk = RecordChunk::default();
        self.fill(&mut chunk, max_records)?;
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

/// Where an inventory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputPath {
    Stdin,
    File(PathBuf),
}

impl InputPath {
    pub fn from_arg(arg: &Path) -> InputPath {
        if arg.as_os_str() == "-" {
            InputPath::Stdin
        } else {
            InputPath::File(arg.to_path_buf())
        }
    }

    pub fn display(&self) -> String {
        match self {
            InputPath::Stdin => "<stdin>".into(),
            InputPath::File(p) => p.display().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub delimiter: Option<u8>,
    pub max_record: usize,
    /// The text encoding of a CSV input (`--encoding`); `None`: UTF-8, or
    /// UTF-16 when a byte-order mark or the NUL bytes of its ASCII say so.
    pub encoding: Option<&'static encoding_rs::Encoding>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            delimiter: None,
            max_record: DEFAULT_MAX_RECORD,
            encoding: None,
        }
    }
}

/// An opened input, with what progress reporting needs to know.
pub struct Opened {
    pub source: Box<dyn RecordSource>,
    pub format: &'static str,
    /// Size on disk, when known.
    pub total_bytes: Option<u64>,
    /// Bytes read from disk so far (compressed bytes for compressed input).
    pub bytes_read: Arc<AtomicU64>,
}

#[cfg(test)]
mod tests;
