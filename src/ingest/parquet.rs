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
    /// The first row of the file not read yet.
    offset: usize,
    /// The slice read last, as text by column, and the first row of it
    /// (`next`) not handed out yet; its row 0 is row `slice_start` of the
    /// file.
    slice: Vec<Vec<Option<String>>>,
    slice_start: usize,
    next: usize,
    /// [`SLICE_ROWS`]; smaller in tests.
    slice_rows: usize,
}

/// Rows read and decoded at a time: each read opens the file and decodes
/// the row groups it overlaps, so it is done in slices much larger than the
/// pipeline's chunks (at 4 k rows a read, a 1 M-row file took three times
/// as long as at 32 k).
const SLICE_ROWS: usize = 32 * 1024;

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
            slice: Vec::new(),
            slice_start: 0,
            next: 0,
            slice_rows: SLICE_ROWS,
        })
    }
}

impl RecordSource for ParquetSource {
    fn headers(&self) -> &[String] {
        &self.headers
    }

    fn fill(&mut self, chunk: &mut RecordChunk, max_records: usize) -> Result<(), IngestError> {
        let mut taken = 0;
        while taken < max_records {
            let held = self.slice.first().map_or(0, Vec::len);
            if self.next == held {
                if self.offset >= self.total_rows {
                    break;
                }
                self.read_slice()?;
                continue;
            }
            let n = (max_records - taken).min(held - self.next);
            for i in self.next..self.next + n {
                let row = (self.slice_start + i + 1) as u64;
                chunk.push_fields(
                    row,
                    self.slice.iter().map(|col| {
                        col.get(i)
                            .and_then(|v| v.as_deref())
                            .unwrap_or("")
                            .as_bytes()
                    }),
                );
            }
            self.next += n;
            taken += n;
        }
        Ok(())
    }
}

impl ParquetSource {
    /// Reads and decodes the next [`SLICE_ROWS`] rows.
    fn read_slice(&mut self) -> Result<(), IngestError> {
        let len = self.slice_rows.min(self.total_rows - self.offset);
        let file = File::open(&self.path)?;
        let mut reader = ParquetReader::new(file).with_slice(Some((self.offset, len)));
        reader.set_metadata(self.metadata.clone());
        let df = reader.finish().map_err(perr)?;
        self.slice = df
            .columns()
            .iter()
            .map(|c| column_as_text(c.as_materialized_series()))
            .collect::<Result<_, _>>()?;
        for col in &mut self.slice {
            col.truncate(len);
        }
        let height = self.slice.first().map_or(0, Vec::len);
        if height == 0 {
            // Nothing came back for rows the metadata promised.
            return Err(IngestError::Parquet(format!(
                "no rows at offset {} of {}",
                self.offset, self.total_rows
            )));
        }
        self.slice_start = self.offset;
        self.next = 0;
        // What came back, should it be less than asked: no row is skipped.
        self.offset += height;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of a source, as (row, fields), chunk by chunk.
    fn records(source: &mut ParquetSource, chunk_rows: usize) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        loop {
            let mut chunk = RecordChunk::default();
            source.fill(&mut chunk, chunk_rows).unwrap();
            if chunk.is_empty() {
                return out;
            }
            let mut ends = crate::ingest::FieldEnds::default();
            for r in chunk.records() {
                let view = chunk.view_in(r, &mut ends);
                let fields = (0..view.len()).map(|i| view.field(i).to_vec()).collect();
                out.push((chunk.row(r), fields));
            }
        }
    }

    /// Slices smaller than, larger than and not a multiple of the chunks
    /// hand out every row once, in order, with its row number.
    #[test]
    fn rows_come_out_whole_across_slices_and_chunks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/typed.parquet");
        let mut whole = ParquetSource::open(&path).unwrap();
        let want = records(&mut whole, 1000);
        assert_eq!(
            want.iter().map(|(row, _)| *row).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        for slice_rows in [1, 3, 4, 10] {
            for chunk_rows in [1, 2, 3, 5] {
                let mut source = ParquetSource::open(&path).unwrap();
                source.slice_rows = slice_rows;
                assert_eq!(
                    records(&mut source, chunk_rows),
                    want,
                    "{slice_rows} {chunk_rows}"
                );
            }
        }
    }
}
