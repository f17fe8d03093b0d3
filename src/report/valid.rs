//! `valid.csv` / `valid.parquet`: the rows that passed, with normalised
//! identifiers, canonical column names and the carried columns.

use std::fs::File;
use std::path::Path;

use anyhow::Context;
use polars_core::prelude::*;
use polars_io::prelude::*;

use super::{neutralise, AtomicFile};
use crate::domain::Item;
use crate::policy::Policy;

const COLUMNS: [&str; 16] = [
    "row",
    "item_type",
    "serial_number",
    "mac_address",
    "model",
    "license_id",
    "bound_serial",
    "account_id",
    "contract_id",
    "country",
    "region",
    "site",
    "deactivated_at",
    "deactivation_reason",
    "repair_status",
    "reported_lost",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidFormat {
    Csv,
    Parquet,
}

/// One per run, so the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ValidWriter {
    Csv(csv::Writer<AtomicFile>),
    Parquet(Box<ParquetSink>),
}

pub struct ParquetSink {
    names: Vec<String>,
    columns: Vec<Vec<String>>,
    rows: Vec<u64>,
    lost: Vec<bool>,
    writer: Option<polars_io::parquet::write::BatchedWriter<File>>,
    tmp: tempfile::NamedTempFile,
    path: std::path::PathBuf,
}

const PARQUET_BATCH: usize = 64 * 1024;

fn cells(item: &Item, policy: &Policy) -> [String; 14] {
    let opt = |v: Option<String>| v.unwrap_or_default();
    [
        item.kind.as_str().to_string(),
        opt(item.serial.map(|s| s.to_string())),
        opt(item.mac.map(|m| m.to_string())),
        match item.model {
            Some(m) => policy.models[usize::from(m)].name.clone(),
            None => item.model_text.to_string(),
        },
        opt(item.license_id.map(|l| l.to_string())),
        opt(item.bound_serial.map(|s| s.to_string())),
        item.account_id.to_string(),
        item.contract_id.to_string(),
        item.country.to_string(),
        item.region.to_string(),
        item.site.to_string(),
        item.deactivated_at.to_string(),
        item.deactivation_reason.as_str().to_string(),
        item.repair_status.as_str().to_string(),
    ]
}

impl ValidWriter {
    pub fn create(
        path: &Path,
        format: ValidFormat,
        extra_columns: &[String],
    ) -> anyhow::Result<ValidWriter> {
        let mut names: Vec<String> = COLUMNS.iter().map(|s| s.to_string()).collect();
        names.extend(extra_columns.iter().cloned());
        Ok(match format {
            ValidFormat::Csv => {
                let mut w = csv::Writer::from_writer(AtomicFile::create(path)?);
                w.write_record(names.iter().map(|n| neutralise(n).into_owned()))?;
                ValidWriter::Csv(w)
            }
            ValidFormat::Parquet => {
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let tmp = crate::report::temp_in(dir)?;
                let text_columns = names.len() - 2;
                ValidWriter::Parquet(Box::new(ParquetSink {
                    names,
                    columns: vec![Vec::new(); text_columns],
                    rows: Vec::new(),
                    lost: Vec::new(),
                    writer: None,
                    tmp,
                    path: path.to_path_buf(),
                }))
            }
        })
    }

    pub fn write(&mut self, item: &Item, policy: &Policy) -> anyhow::Result<()> {
        let cells = cells(item, policy);
        match self {
            ValidWriter::Csv(w) => {
                let row = item.row.to_string();
                let lost = if item.reported_lost { "true" } else { "false" };
                w.write_field(&row)?;
                for c in &cells {
                    w.write_field(neutralise(c).as_bytes())?;
                }
                w.write_field(lost)?;
                for e in &item.extra {
                    w.write_field(neutralise(e).as_bytes())?;
                }
                w.write_record(None::<&[u8]>)?;
            }
            ValidWriter::Parquet(p) => {
                p.rows.push(item.row);
                p.lost.push(item.reported_lost);
                for (col, c) in p.columns.iter_mut().zip(
                    cells
                        .into_iter()
                        .chain(item.extra.iter().map(|e| e.to_string())),
                ) {
                    col.push(c);
                }
                if p.rows.len() >= PARQUET_BATCH {
                    p.flush()
                        .with_context(|| format!("cannot write {}", p.path.display()))?;
                }
            }
        }
        Ok(())
    }

    pub fn commit(self) -> anyhow::Result<()> {
        match self {
            ValidWriter::Csv(w) => w
                .into_inner()
                .map_err(|e| anyhow::anyhow!("{}", e.error()))?
                .commit(),
            ValidWriter::Parquet(mut p) => {
                let failed = |path: &Path| format!("cannot write {}", path.display());
                p.flush_always().with_context(|| failed(&p.path))?;
                if let Some(w) = p.writer.take() {
                    anyhow::Context::with_context(w.finish(), || failed(&p.path))?;
                }
                p.tmp
                    .persist(&p.path)
                    .with_context(|| format!("cannot write {}", p.path.display()))?;
                Ok(())
            }
        }
    }
}

impl ParquetSink {
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        self.flush_always()
    }

    /// Writes the buffered rows; with none buffered and nothing written yet,
    /// writes an empty frame so that the file still has its schema.
    fn flush_always(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() && self.writer.is_some() {
            return Ok(());
        }
        let mut columns = Vec::with_capacity(self.names.len());
        columns.push(Column::new(
            self.names[0].as_str().into(),
            std::mem::take(&mut self.rows),
        ));
        for (i, col) in self.columns.iter_mut().enumerate().take(14) {
            columns.push(Column::new(
                self.names[i + 1].as_str().into(),
                std::mem::take(col),
            ));
        }
        columns.push(Column::new(
            self.names[15].as_str().into(),
            std::mem::take(&mut self.lost),
        ));
        for (i, col) in self.columns.iter_mut().enumerate().skip(14) {
            columns.push(Column::new(
                self.names[i + 2].as_str().into(),
                std::mem::take(col),
            ));
        }
        let df = DataFrame::new_infer_height(columns)?;
        if self.writer.is_none() {
            let file = self.tmp.reopen()?;
            self.writer = Some(ParquetWriter::new(file).batched(df.schema())?);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_batch(&df)?;
        }
        Ok(())
    }
}
