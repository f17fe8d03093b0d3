//! Opening an input: a path or stdin, its format and compression told by magic bytes, its bytes counted as they are read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{
    CsvSource, IngestError, IngestOptions, InputPath, Opened, ParquetSource, RecordSource,
};

pub(super) const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
pub(super) const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
pub(super) const PARQUET_MAGIC: &[u8] = b"PAR1";
/// A ZIP archive: an `.xlsx` workbook (or another Office file).
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

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
            let meta = file.metadata().ok();
            if meta.as_ref().is_some_and(|m| m.is_dir()) {
                return Err(IngestError::Folder(path.display().to_string()));
            }
            let len = meta.map(|m| m.len());
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
        if head.starts_with(ZIP_MAGIC) {
            return Err(IngestError::Workbook);
        }
        (Box::new(buffered), "csv")
    };
    let (decoded, format) = transcoded(decoded, options.encoding, format)?;
    let source = CsvSource::new(decoded, options.delimiter, options.max_record)?;
    Ok(Opened {
        source: Box::new(source),
        format,
        total_bytes,
        bytes_read,
    })
}

/// The CSV text as UTF-8: as it is, or decoded from `encoding`, or from
/// UTF-16 when its first bytes say so (a byte-order mark, or the NUL byte
/// beside each ASCII character that a "Unicode text" export has).
fn transcoded(
    input: Box<dyn Read + Send>,
    encoding: Option<&'static encoding_rs::Encoding>,
    format: &'static str,
) -> Result<(Box<dyn Read + Send>, &'static str), IngestError> {
    let mut buffered = BufReader::with_capacity(64 * 1024, input);
    let head = buffered.fill_buf()?;
    let found = encoding.or_else(|| utf16_by_look(head));
    Ok(match found {
        None => (Box::new(buffered), format),
        Some(e) if e == encoding_rs::UTF_8 => (Box::new(buffered), format),
        Some(e) => (
            Box::new(
                encoding_rs_io::DecodeReaderBytesBuilder::new()
                    .encoding(Some(e))
                    // A byte-order mark, when there is one, wins.
                    .bom_override(true)
                    .build(buffered),
            ),
            if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE {
                "csv (UTF-16)"
            } else {
                "csv (decoded)"
            },
        ),
    })
}

/// UTF-16 told by a byte-order mark, or by NULs in every other byte of
/// mostly ASCII text: little-endian puts them at odd places.
fn utf16_by_look(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    if head.starts_with(&[0xFF, 0xFE]) {
        return Some(encoding_rs::UTF_16LE);
    }
    if head.starts_with(&[0xFE, 0xFF]) {
        return Some(encoding_rs::UTF_16BE);
    }
    let sample = &head[..head.len().min(4096) & !1];
    if sample.len() < 8 {
        return None;
    }
    let pairs = sample.len() / 2;
    let (mut odd, mut even) = (0, 0);
    for pair in sample.chunks_exact(2) {
        even += usize::from(pair[0] == 0);
        odd += usize::from(pair[1] == 0);
    }
    // Text in UTF-8 has no NUL at all; UTF-16 of ASCII has one per pair.
    if odd * 10 >= pairs * 9 && even == 0 {
        Some(encoding_rs::UTF_16LE)
    } else if even * 10 >= pairs * 9 && odd == 0 {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    }
}

pub(super) struct CountingReader<R> {
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
