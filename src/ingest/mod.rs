//! Ingest: a file (CSV, gzip or zstd CSV, Parquet) or stdin → chunks of raw
//! records with 1-based row numbers. Nothing here interprets a value; that is
//! `validate`'s job. Memory is bounded by the chunk size, never the file size.

mod csv;
pub mod headers;
mod parquet;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use self::csv::{sniff_delimiter, CsvSource};
pub use self::parquet::ParquetSource;
pub use headers::{match_headers, HeaderError, HeaderMap};

use crate::validate::RejectCode;

/// Default cap on one CSV record (SPEC §2.1).
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("the input is empty: no header row")]
    Empty,
    #[error("bad header row: {0}")]
    Header(String),
    #[error(transparent)]
    Columns(#[from] HeaderError),
    #[error("Parquet: {0}")]
    Parquet(String),
}

/// Why a record could not be split into fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProblem {
    pub code: RejectCode,
    pub message: String,
}

/// A batch of records in one flat buffer: cheap to fill, to send to another
/// thread and to read from many threads.
#[derive(Debug, Default)]
pub struct RecordChunk {
    data: Vec<u8>,
    /// Field end offsets, relative to the record's start in `data`.
    ends: Vec<u32>,
    records: Vec<RecordMeta>,
    problems: Vec<(RecordProblem, String)>,
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    row: u64,
    data_start: usize,
    ends_start: u32,
    width: u32,
    /// Index into `problems` + 1, or 0.
    problem: u32,
}

/// A record's index inside its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIdx(usize);

impl RecordChunk {
    pub fn with_capacity(records: usize, width: usize) -> RecordChunk {
        RecordChunk {
            data: Vec::with_capacity(records * 96),
            ends: Vec::with_capacity(records * width),
            records: Vec::with_capacity(records),
            problems: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Empties the chunk, keeping its buffers for the next fill.
    pub fn clear(&mut self) {
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
        self.records[r.0].width as usize
    }

    pub fn problem(&self, r: RecordIdx) -> Option<&RecordProblem> {
        let p = self.records[r.0].problem as usize;
        (p > 0).then(|| &self.problems[p - 1].0)
    }

    /// The start of the broken record's text, for the reject's `value`.
    pub fn problem_preview(&self, r: RecordIdx) -> &str {
        let p = self.records[r.0].problem as usize;
        if p > 0 {
            &self.problems[p - 1].1
        } else {
            ""
        }
    }

    /// All of record `r`'s field bytes, back to back.
    pub fn record_bytes(&self, r: RecordIdx) -> &[u8] {
        let m = &self.records[r.0];
        let len = if m.width == 0 {
            0
        } else {
            self.ends[m.ends_start as usize + m.width as usize - 1] as usize
        };
        &self.data[m.data_start..m.data_start + len]
    }

    /// Where field `i` sits inside [`RecordChunk::record_bytes`]; empty when
    /// the record is narrower.
    pub fn field_range(&self, r: RecordIdx, i: usize) -> std::ops::Range<usize> {
        let m = &self.records[r.0];
        if i >= m.width as usize {
            return 0..0;
        }
        let e = m.ends_start as usize + i;
        let start = if i == 0 { 0 } else { self.ends[e - 1] as usize };
        start..self.ends[e] as usize
    }

    /// Field `i` of record `r`, or empty when the record is narrower.
    pub fn field(&self, r: RecordIdx, i: usize) -> &[u8] {
        let range = self.field_range(r, i);
        let start = self.records[r.0].data_start;
        &self.data[start + range.start..start + range.end]
    }
}

/// Anything that yields record chunks in source order.
pub trait RecordSource: Send {
    fn headers(&self) -> &[String];

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
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            delimiter: None,
            max_record: DEFAULT_MAX_RECORD,
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

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const PARQUET_MAGIC: &[u8] = b"PAR1";

/// Opens a path or stdin; the format is told by magic bytes, so a gzip file
/// named `.csv` still reads, and a file named `.gz` that is not gzip says so.
pub fn open(input: &InputPath, options: &IngestOptions) -> Result<Opened, IngestError> {
    let bytes_read = Arc::new(AtomicU64::new(0));
    let (reader, total_bytes): (Box<dyn Read + Send>, Option<u64>) = match input {
        InputPath::Stdin => (Box::new(std::io::stdin()), None),
        InputPath::File(path) => {
            let file = File::open(path).map_err(|source| IngestError::Open {
                path: path.display().to_string(),
                source,
            })?;
            let len = file.metadata().ok().map(|m| m.len());
            (Box::new(file), len)
        }
    };
    let counting = CountingReader {
        inner: reader,
        count: bytes_read.clone(),
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, counting);
    let head = buffered.fill_buf()?.to_vec();

    if head.starts_with(PARQUET_MAGIC) {
        let source: Box<dyn RecordSource> = match input {
            InputPath::File(path) => Box::new(ParquetSource::open(path)?),
            InputPath::Stdin => Box::new(ParquetSource::from_reader(buffered)?),
        };
        if let Some(n) = total_bytes {
            bytes_read.store(n, Ordering::Relaxed);
        }
        return Ok(Opened {
            source,
            format: "parquet",
            total_bytes,
            bytes_read,
        });
    }
    let (decoded, format): (Box<dyn Read + Send>, &'static str) = if head.starts_with(GZIP_MAGIC) {
        (
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            "csv+gzip",
        )
    } else if head.starts_with(ZSTD_MAGIC) {
        (
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
            "csv+zstd",
        )
    } else {
        if let InputPath::File(path) = input {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            let claimed = match ext.as_str() {
                "gz" | "gzip" => Some("gzip"),
                "zst" | "zstd" => Some("zstd"),
                "parquet" | "pq" => Some("Parquet"),
                _ => None,
            };
            if let Some(kind) = claimed {
                if !head.is_empty() {
                    return Err(IngestError::Header(format!(
                        "{} is named like a {kind} file but its content is not {kind}",
                        path.display()
                    )));
                }
            }
        }
        (Box::new(buffered), "csv")
    };
    let source = CsvSource::new(decoded, options.delimiter, options.max_record)?;
    Ok(Opened {
        source: Box::new(source),
        format,
        total_bytes,
        bytes_read,
    })
}

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
