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
