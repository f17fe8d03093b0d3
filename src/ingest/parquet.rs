//! Parquet input through polars, read one slice of rows at a time so memory
//! stays bounded. Every column type that has one text form is turned into
//! the text a CSV export would hold, so that the rest of the pipeline, and
//! its rejects, do not depend on the format: strings, categoricals,
//! integers, floats, booleans, exact decimals, dates, date-times, times and
//! UUIDs. A column of another type (map, list, struct, binary, interval,
//! duration) has no single text form: it is never decoded, its cells read
//! as empty and it is listed in [`RecordSource::unreadable_columns`], for
//! the caller to refuse (a column it reads) or leave out (one it carries).
//! Only the columns the caller reads are decoded ([`RecordSource::read_only`]),
//! so an unused column of any type costs nothing.
//!
//! Decimals (and UUIDs) are decoded as the integers or bytes the file
//! stores, by polars' own Parquet decoder (`to_deserializer`, from its
//! `_internal` module: a polars upgrade may move it), and written as text
//! here: polars turns a decimal into a Series only with a feature of its
//! own, a rebuild of most of polars. Dates and date-times are written here
//! too, so that a value outside chrono's range is text a reject can show,
//! not a panic. Any panic left inside polars on a hostile file is caught
//! and becomes an error.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use polars_core::prelude::*;
use polars_io::parquet::read::_internal::to_deserializer;
use polars_io::prelude::*;
use polars_parquet::parquet::schema::types::{
    GroupConvertedType, GroupLogicalType, ParquetType, PhysicalType, PrimitiveLogicalType,
};

use super::{IngestError, RecordChunk, RecordSource, UnreadableColumn};

mod text;

use text::{big_decimal_text, date_text, datetime_text, decimal_text, time_text, uuid_text};

pub struct ParquetSource {
    path: PathBuf,
    /// Keeps a spooled stdin alive for as long as the source is read.
    _spool: Option<tempfile::TempPath>,
    metadata: polars_io::parquet::metadata::FileMetadataRef,
    headers: Vec<String>,
    /// How each column becomes text.
    decodes: Vec<Decode>,
    unreadable: Vec<UnreadableColumn>,
    /// The columns decoded; the others read as empty.
    selected: Vec<bool>,
    total_rows: usize,
    /// The first row of the file not read yet.
    offset: usize,
    /// The slice read last, as text by column (empty for a column not
    /// decoded), its row count, and the first row of it (`next`) not
    /// handed out yet; its row 0 is row `slice_start` of the file.
    slice: Vec<Vec<Option<String>>>,
    height: usize,
    slice_start: usize,
    next: usize,
    /// Per column read from its own integers (decimals, UUIDs): the row
    /// group decoded last, by index.
    own: HashMap<usize, (usize, Series)>,
    /// [`SLICE_ROWS`]; smaller in tests.
    slice_rows: usize,
}

/// How one column's values become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Read by polars and cast to text: strings, categoricals, booleans,
    /// integers, floats.
    Text,
    /// Days since 1970-01-01.
    Date,
    /// A count of seconds, or a fraction of them, since 1970-01-01T00:00.
    Datetime,
    /// Nanoseconds since midnight.
    Time,
    /// An exact decimal: the file's integer (`INT32`, `INT64` or
    /// big-endian bytes) and the digits after the point.
    Decimal { scale: usize },
    /// 16 bytes tagged UUID.
    Uuid,
    /// Only nulls.
    Null,
    /// No single text form.
    Unreadable,
}

impl Decode {
    /// Read by polars' own reader (the others are read here or not at all).
    fn by_polars(self) -> bool {
        matches!(
            self,
            Decode::Text | Decode::Date | Decode::Datetime | Decode::Time
        )
    }
}

/// The most digits a decimal has in Parquet (a 256-bit one); a scale or a
/// value wider than that is a broken or hostile file, not an export.
const MAX_DECIMAL_DIGITS: usize = 76;

/// Bytes of the widest decimal value (256 bits).
const MAX_DECIMAL_BYTES: usize = 32;

/// Rows read and decoded at a time: each read opens the file and decodes
/// the row groups it overlaps, so it is done in slices much larger than the
/// pipeline's chunks.
const SLICE_ROWS: usize = 32 * 1024;

fn perr(e: impl std::fmt::Display) -> IngestError {
    IngestError::Parquet(e.to_string())
}

/// Runs `f`, turning a panic inside the Parquet library into an error: a
/// file no check foresaw must not end the process.
fn contained<T>(f: impl FnOnce() -> Result<T, IngestError>) -> Result<T, IngestError> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(IngestError::Parquet(format!(
            "the Parquet reader failed on this file (it may be corrupt or use a feature refleet does not read): {what}"
        )))
    })
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
        let (schema, metadata) = contained(|| {
            let mut reader = ParquetReader::new(file);
            let schema = reader.schema().map_err(perr)?;
            let metadata = reader.get_metadata().map_err(perr)?.clone();
            Ok((schema, metadata))
        })?;
        let mut headers = Vec::with_capacity(schema.len());
        let mut decodes = Vec::with_capacity(schema.len());
        let mut unreadable = Vec::new();
        for (index, (name, field)) in schema.iter().enumerate() {
            let parquet = metadata
                .schema_descr
                .fields()
                .iter()
                .find(|f| f.name() == name.as_str());
            let decode = decode_of(field.dtype(), parquet);
            if decode == Decode::Unreadable {
                unreadable.push(UnreadableColumn {
                    index,
                    name: name.to_string(),
                    kind: kind_of(field.dtype(), parquet),
                });
            }
            headers.push(name.to_string());
            decodes.push(decode);
        }
        let total_rows = metadata.num_rows;
        Ok(ParquetSource {
            path,
            _spool: spool,
            metadata,
            selected: decodes.iter().map(|d| *d != Decode::Unreadable).collect(),
            headers,
            decodes,
            unreadable,
            total_rows,
            offset: 0,
            slice: Vec::new(),
            height: 0,
            slice_start: 0,
            next: 0,
            own: HashMap::new(),
            slice_rows: SLICE_ROWS,
        })
    }
}

/// How a column of `dtype` (as polars infers it from the file, beside its
/// Parquet type `parquet`) becomes text.
fn decode_of(dtype: &ArrowDataType, parquet: Option<&ParquetType>) -> Decode {
    use ArrowDataType as A;
    match dtype {
        A::Null => Decode::Null,
        A::Boolean
        | A::Int8
        | A::Int16
        | A::Int32
        | A::Int64
        | A::UInt8
        | A::UInt16
        | A::UInt32
        | A::UInt64
        | A::Float16
        | A::Float32
        | A::Float64
        | A::Utf8
        | A::LargeUtf8
        | A::Utf8View => Decode::Text,
        A::Dictionary(_, values, _) => match decode_of(values, None) {
            Decode::Text => Decode::Text,
            _ => Decode::Unreadable,
        },
        A::Date32 => Decode::Date,
        A::Date64 | A::Timestamp(..) => Decode::Datetime,
        A::Time32(_) | A::Time64(_) => Decode::Time,
        A::Decimal(_, scale)
        | A::Decimal32(_, scale)
        | A::Decimal64(_, scale)
        | A::Decimal256(_, scale)
            if *scale <= MAX_DECIMAL_DIGITS =>
        {
            Decode::Decimal { scale: *scale }
        }
        A::FixedSizeBinary(16) | A::Extension(_)
            if matches!(
                parquet,
                Some(ParquetType::PrimitiveType(p))
                    if p.logical_type == Some(PrimitiveLogicalType::Uuid)
                        && p.physical_type == PhysicalType::FixedLenByteArray(16)
            ) =>
        {
            Decode::Uuid
        }
        _ => Decode::Unreadable,
    }
}

/// A short name of a type with no text form, for messages.
fn kind_of(dtype: &ArrowDataType, parquet: Option<&ParquetType>) -> String {
    use ArrowDataType as A;
    if let Some(ParquetType::GroupType {
        logical_type,
        converted_type,
        ..
    }) = parquet
    {
        if *logical_type == Some(GroupLogicalType::Map)
            || matches!(
                converted_type,
                Some(GroupConvertedType::Map | GroupConvertedType::MapKeyValue)
            )
        {
            return "map".into();
        }
    }
    match dtype {
        A::Map(..) => "map",
        A::List(_) | A::LargeList(_) | A::FixedSizeList(..) => "list",
        A::Struct(_) => "struct",
        A::Union(_) => "union",
        A::Binary | A::LargeBinary | A::BinaryView | A::FixedSizeBinary(_) => "binary",
        A::Interval(_) => "interval",
        A::Decimal(_, scale)
        | A::Decimal32(_, scale)
        | A::Decimal64(_, scale)
        | A::Decimal256(_, scale) => {
            return format!("decimal (scale {scale}, more than {MAX_DECIMAL_DIGITS} digits)")
        }
        A::Duration(_) => "duration",
        A::Dictionary(..) => "dictionary",
        A::Extension(ext) => return format!("extension `{}`", ext.name),
        other => return format!("{other:?}"),
    }
    .into()
}

impl RecordSource for ParquetSource {
    fn headers(&self) -> &[String] {
        &self.headers
    }

    fn unreadable_columns(&self) -> &[UnreadableColumn] {
        &self.unreadable
    }

    fn read_only(&mut self, used: &[usize]) {
        for (i, selected) in self.selected.iter_mut().enumerate() {
            *selected = used.contains(&i) && self.decodes[i] != Decode::Unreadable;
        }
    }

    fn fill(&mut self, chunk: &mut RecordChunk, max_records: usize) -> Result<(), IngestError> {
        let mut taken = 0;
        while taken < max_records {
            if self.next == self.height {
                if self.offset >= self.total_rows {
                    break;
                }
                self.read_slice()?;
                continue;
            }
            let n = (max_records - taken).min(self.height - self.next);
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
    /// Reads and decodes the next [`SLICE_ROWS`] rows of the selected
    /// columns.
    fn read_slice(&mut self) -> Result<(), IngestError> {
        let len = self.slice_rows.min(self.total_rows - self.offset);
        let mut slice = vec![Vec::new(); self.headers.len()];
        let by_polars: Vec<usize> = (0..self.headers.len())
            .filter(|&i| self.selected[i] && self.decodes[i].by_polars())
            .collect();
        // How many rows came back, by the first column that says.
        let mut height: Option<(usize, usize)> = None;
        let offset = self.offset;
        let mut check = |col: usize, n: usize, headers: &[String]| match height {
            None => {
                height = Some((col, n));
                Ok(())
            }
            Some((_, h)) if h == n => Ok(()),
            Some((other, h)) => Err(IngestError::Parquet(format!(
                "column `{}` has {n} rows at offset {} where column `{}` has {h}",
                headers[col], offset, headers[other]
            ))),
        };
        if !by_polars.is_empty() {
            let df = contained(|| {
                let file = File::open(&self.path)?;
                let mut reader = ParquetReader::new(file)
                    .with_projection(Some(by_polars.clone()))
                    .with_slice(Some((self.offset, len)));
                reader.set_metadata(self.metadata.clone());
                let df = reader.finish().map_err(perr)?;
                let mut texts = Vec::with_capacity(by_polars.len());
                for &i in &by_polars {
                    let column = df.column(self.headers[i].as_str()).map_err(perr)?;
                    texts.push(column_as_text(
                        column.as_materialized_series(),
                        self.decodes[i],
                    )?);
                }
                Ok(texts)
            })?;
            for (&i, text) in by_polars.iter().zip(df) {
                check(i, text.len(), &self.headers)?;
                slice[i] = text;
            }
        }
        let own: Vec<usize> = (0..self.headers.len())
            .filter(|&i| {
                self.selected[i] && matches!(self.decodes[i], Decode::Decimal { .. } | Decode::Uuid)
            })
            .collect();
        for i in own {
            let text = contained(|| self.read_own(i, len))?;
            check(i, text.len(), &self.headers)?;
            slice[i] = text;
        }
        // No column decoded (none selected): the rows are the metadata's.
        let height = height.map_or(len, |(_, n)| n).min(len);
        if height == 0 {
            // Nothing came back for rows the metadata promised.
            return Err(IngestError::Parquet(format!(
                "no rows at offset {} of {}",
                self.offset, self.total_rows
            )));
        }
        for col in &mut slice {
            col.truncate(height);
        }
        self.slice = slice;
        self.height = height;
        self.slice_start = self.offset;
        self.next = 0;
        // What came back, should it be less than asked: no row is skipped.
        self.offset += height;
        Ok(())
    }

    /// Column `col`'s text for `len` rows from the current offset, read
    /// from the file's own values: decoded a row group at a time, as the
    /// integers or bytes the file holds (which polars reads without a
    /// feature of its own), and written here.
    fn read_own(&mut self, col: usize, len: usize) -> Result<Vec<Option<String>>, IngestError> {
        let decode = self.decodes[col];
        let mut out = Vec::with_capacity(len);
        let end = self.offset.saturating_add(len);
        let mut group_start = 0usize;
        for g in 0..self.metadata.row_groups.len() {
            let group_rows = self.metadata.row_groups[g].num_rows();
            let group_end = group_start.saturating_add(group_rows);
            let (from, to) = (self.offset.max(group_start), end.min(group_end));
            if from < to {
                let cached = self.own.get(&col).is_some_and(|(at, _)| *at == g);
                if !cached {
                    let series = self.decode_group(col, g)?;
                    if series.len() != group_rows {
                        return Err(IngestError::Parquet(format!(
                            "column `{}` has {} rows in row group {g}, which should hold {group_rows}",
                            self.headers[col],
                            series.len()
                        )));
                    }
                    self.own.insert(col, (g, series));
                }
                let Some((_, series)) = self.own.get(&col) else {
                    break;
                };
                let at = i64::try_from(from - group_start).map_err(perr)?;
                let part = series.slice(at, to - from);
                own_text(&part, decode, &mut out)?;
            }
            if group_end >= end {
                break;
            }
            group_start = group_end;
        }
        Ok(out)
    }

    /// Row group `g` of column `col`, decoded as the integers or bytes of
    /// its physical type.
    fn decode_group(&self, col: usize, g: usize) -> Result<Series, IngestError> {
        let name = self.headers[col].as_str();
        let group = &self.metadata.row_groups[g];
        let mut file = File::open(&self.path)?;
        let file_len = file.metadata()?.len();
        let mut columns = Vec::new();
        let mut physical = None;
        for meta in group.columns_under_root_iter(name).into_iter().flatten() {
            let range = meta.byte_range();
            if range.start > range.end || range.end > file_len {
                return Err(IngestError::Parquet(format!(
                    "column `{name}` points outside the file in row group {g}"
                )));
            }
            let mut bytes = vec![0; (range.end - range.start) as usize];
            file.seek(SeekFrom::Start(range.start))?;
            file.read_exact(&mut bytes)?;
            physical = Some(meta.physical_type());
            columns.push((meta, bytes.into()));
        }
        let dtype = match (columns.len(), physical) {
            (1, Some(PhysicalType::Int32)) => ArrowDataType::Int32,
            (1, Some(PhysicalType::Int64)) => ArrowDataType::Int64,
            (1, Some(PhysicalType::FixedLenByteArray(n))) => ArrowDataType::FixedSizeBinary(n),
            (1, Some(PhysicalType::ByteArray)) => ArrowDataType::BinaryView,
            _ => {
                return Err(IngestError::Parquet(format!(
                    "column `{name}` is stored in a way refleet does not read ({physical:?})"
                )))
            }
        };
        let field = ArrowField::new(name.into(), dtype, true);
        let (arrays, _) = to_deserializer(columns, field.clone(), None).map_err(perr)?;
        Series::try_from((&field, arrays)).map_err(perr)
    }
}

/// Appends the text of each value of `s` (the integers or bytes of a
/// decimal or UUID column) to `out`.
fn own_text(s: &Series, decode: Decode, out: &mut Vec<Option<String>>) -> Result<(), IngestError> {
    let scale = match decode {
        Decode::Decimal { scale } => Some(scale),
        _ => None,
    };
    match (s.dtype(), scale) {
        (DataType::Int32, Some(scale)) => out.extend(
            s.i32()
                .map_err(perr)?
                .iter()
                .map(|v| v.map(|v| decimal_text(i128::from(v), scale))),
        ),
        (DataType::Int64, Some(scale)) => out.extend(
            s.i64()
                .map_err(perr)?
                .iter()
                .map(|v| v.map(|v| decimal_text(i128::from(v), scale))),
        ),
        (DataType::Binary, Some(scale)) => {
            for v in s.binary().map_err(perr)?.iter() {
                if v.is_some_and(|b| b.len() > MAX_DECIMAL_BYTES) {
                    return Err(IngestError::Parquet(format!(
                        "column `{}` holds a decimal wider than {MAX_DECIMAL_BYTES} bytes",
                        s.name()
                    )));
                }
                out.push(v.map(|b| big_decimal_text(b, scale)));
            }
        }
        (DataType::Binary, None) => {
            out.extend(s.binary().map_err(perr)?.iter().map(|v| v.map(uuid_text)))
        }
        (other, _) => {
            return Err(IngestError::Parquet(format!(
                "column `{}` decoded as {other}",
                s.name()
            )))
        }
    }
    Ok(())
}

/// One column read by polars as the text a CSV export would have; null is
/// the empty string.
fn column_as_text(s: &Series, decode: Decode) -> Result<Vec<Option<String>>, IngestError> {
    match (decode, s.dtype()) {
        (Decode::Date, DataType::Date) => Ok(s
            .date()
            .map_err(perr)?
            .physical()
            .iter()
            .map(|v| v.map(date_text))
            .collect()),
        (Decode::Datetime, DataType::Datetime(unit, tz)) => {
            let (unit, zoned) = (*unit, tz.is_some());
            Ok(s.datetime()
                .map_err(perr)?
                .physical()
                .iter()
                .map(|v| v.map(|v| datetime_text(v, unit, zoned)))
                .collect())
        }
        (Decode::Time, DataType::Time) => Ok(s
            .time()
            .map_err(perr)?
            .physical()
            .iter()
            .map(|v| v.map(time_text))
            .collect()),
        (Decode::Text, DataType::String) => Ok(s
            .str()
            .map_err(perr)?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()),
        (Decode::Text, dtype) if !dtype.is_nested() && !dtype.is_temporal() => {
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
        (_, dtype) => Err(IngestError::Parquet(format!(
            "column `{}` was read as {dtype}, not as the file declares it",
            s.name()
        ))),
    }
}

#[cfg(test)]
#[path = "parquet_tests.rs"]
mod tests;
