//! Parquet input through polars, read one slice of rows at a time so memory
//! stays bounded. Every column type an export tool may write (string,
//! categorical, integer, boolean, date, date-time) is turned into the same
//! text a CSV export would hold, so that the rest of the pipeline, and its
//! rejects, do not depend on the format.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat};
use polars::prelude::*;

use super::{IngestError, RecordChunk, RecordSource};

pub struct ParquetSource {
    path: PathBuf,
    /// Keeps a spooled stdin alive for as long as the source is read.
    _spool: Option<tempfile::TempPath>,
    metadata: polars::io::parquet::metadata::FileMetadataRef,
    headers: Vec<String>,
    total_rows: usize,
    offset: usize,
}

fn perr(e: impl std::fmt::Display) -> IngestError {
    IngestError::Parquet(e.to_string())
}

impl ParquetSource {
    pub fn open(path: &Path) -> Result<ParquetSource, IngestError> {
        ParquetSource::open_inner(path.to_path_buf(), None)
    }

    /// Parquet needs random access, so stdin is spooled to a temporary file.
    pub fn from_reader(mut reader: impl Read) -> Result<ParquetSource, IngestError> {
        let mut spool = tempfile::NamedTempFile::new()?;
        std::io::copy(&mut reader, &mut spool)?;
        let path = spool.into_temp_path();
        ParquetSource::open_inner(path.to_path_buf(), Some(path))
    }

    fn open_inner(
        path: PathBuf,
        spool: Option<tempfile::TempPath>,
    ) -> Result<ParquetSource, IngestError> {
        let file = File::open(&path).map_err(|source| IngestError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let mut reader = ParquetReader::new(file);
        let schema = reader.schema().map_err(perr)?;
        let headers = schema.iter_names().map(|n| n.to_string()).collect();
        let metadata = reader.get_metadata().map_err(perr)?.clone();
        let total_rows = metadata.num_rows;
        Ok(ParquetSource {
            path,
            _spool: spool,
            metadata,
            headers,
            total_rows,
            offset: 0,
        })
    }
}

impl RecordSource for ParquetSource {
    fn headers(&self) -> &[String] {
        &self.headers
    }

    fn fill(&mut self, chunk: &mut RecordChunk, max_records: usize) -> Result<(), IngestError> {
        if self.offset >= self.total_rows {
            return Ok(());
        }
        let len = max_records.min(self.total_rows - self.offset);
        let file = File::open(&self.path)?;
        let mut reader = ParquetReader::new(file).with_slice(Some((self.offset, len)));
        reader.set_metadata(self.metadata.clone());
        let df = reader.finish().map_err(perr)?;
        let columns: Vec<Vec<Option<String>>> = df
            .columns()
            .iter()
            .map(|c| column_as_text(c.as_materialized_series()))
            .collect::<Result<_, _>>()?;
        for i in 0..df.height() {
            let row = (self.offset + i + 1) as u64;
            chunk.push_fields(
                row,
                columns.iter().map(|col| {
                    col.get(i)
                        .and_then(|v| v.as_deref())
                        .unwrap_or("")
                        .as_bytes()
                }),
            );
        }
        self.offset += len;
        Ok(())
    }
}

/// One column as the text a CSV export would have; null is the empty string.
fn column_as_text(s: &Series) -> Result<Vec<Option<String>>, IngestError> {
    match s.dtype() {
        DataType::Datetime(unit, tz) => {
            let unit = *unit;
            let zoned = tz.is_some();
            let ca = s.datetime().map_err(perr)?;
            Ok(ca
                .physical()
                .iter()
                .map(|v| v.and_then(|v| format_datetime(v, unit, zoned)))
                .collect())
        }
        DataType::Binary | DataType::BinaryOffset => Err(IngestError::Parquet(format!(
            "column `{}` holds binary data; refleet reads text, numbers, booleans and dates",
            s.name()
        ))),
        _ => {
            let text = s.cast(&DataType::String).map_err(|e| {
                IngestError::Parquet(format!(
                    "column `{}` of type {} cannot be read as text: {e}",
                    s.name(),
                    s.dtype()
                ))
            })?;
            let ca = text.str().map_err(perr)?;
            Ok(ca.iter().map(|v| v.map(str::to_string)).collect())
        }
    }
}

/// A time-zone-aware timestamp is UTC in Parquet; a naive one is written
/// without offset, which refleet reads as UTC too.
fn format_datetime(v: i64, unit: TimeUnit, zoned: bool) -> Option<String> {
    let t = match unit {
        TimeUnit::Nanoseconds => DateTime::from_timestamp_nanos(v),
        TimeUnit::Microseconds => DateTime::from_timestamp_micros(v)?,
        TimeUnit::Milliseconds => DateTime::from_timestamp_millis(v)?,
    };
    Some(if zoned {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    } else {
        t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()
    })
}
