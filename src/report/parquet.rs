//! Parquet copies of the row-level reports (`--format parquet`):
//! `rejects.parquet`, `eligibility.parquet`, `results.parquet`, with the
//! same columns and cells as the CSV files, read back in batches so memory
//! stays bounded. `row` and `attempts` are integers, `eligible` a boolean,
//! every other column text (as in the CSV, formula-like cells are
//! neutralised: these files also end up in spreadsheets).

use std::path::Path;

use anyhow::Context;
use polars_core::prelude::*;
use polars_io::prelude::*;

const BATCH: usize = 64 * 1024;

enum Kind {
    Int,
    Bool,
    Text,
}

fn kind(column: &str) -> Kind {
    match column {
        "row" | "attempts" => Kind::Int,
        "eligible" => Kind::Bool,
        _ => Kind::Text,
    }
}

/// Writes `parquet` with the rows of the CSV report `csv_path`.
pub fn csv_to_parquet(csv_path: &Path, parquet: &Path) -> anyhow::Result<()> {
    let failed = || format!("cannot write {}", parquet.display());
    let mut reader = csv::Reader::from_path(csv_path)
        .with_context(|| format!("cannot read {}", csv_path.display()))?;
    let names: Vec<String> = reader.headers()?.iter().map(String::from).collect();
    let dir = parquet
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = super::temp_in(dir)?;
    let mut writer: Option<polars_io::parquet::write::BatchedWriter<std::fs::File>> = None;
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    let mut records = reader.records();
    loop {
        let mut n = 0;
        for rec in records.by_ref().take(BATCH) {
            let rec = rec?;
            for (i, col) in columns.iter_mut().enumerate() {
                col.push(rec.get(i).unwrap_or("").to_string());
            }
            n += 1;
        }
        if n == 0 && writer.is_some() {
            break;
        }
        let mut frame = Vec::with_capacity(names.len());
        for (name, col) in names.iter().zip(columns.iter_mut()) {
            let col = std::mem::take(col);
            frame.push(match kind(name) {
                Kind::Int => Column::new(
                    name.as_str().into(),
                    col.iter()
                        .map(|v| v.parse::<u64>().ok())
                        .collect::<Vec<_>>(),
                ),
                Kind::Bool => Column::new(
                    name.as_str().into(),
                    col.iter()
                        .map(|v| v.parse::<bool>().ok())
                        .collect::<Vec<_>>(),
                ),
                Kind::Text => Column::new(name.as_str().into(), col),
            });
        }
        let df = DataFrame::new_infer_height(frame)?;
        if writer.is_none() {
            let file = tmp.reopen().with_context(failed)?;
            let batched = ParquetWriter::new(file).batched(df.schema());
            writer = Some(anyhow::Context::with_context(batched, failed)?);
        }
        if let Some(w) = writer.as_mut() {
            anyhow::Context::with_context(w.write_batch(&df), failed)?;
        }
        if n < BATCH {
            break;
        }
    }
    if let Some(w) = writer.take() {
        anyhow::Context::with_context(w.finish(), failed)?;
    }
    tmp.as_file().sync_all().with_context(failed)?;
    tmp.persist(parquet).with_context(failed)?;
    Ok(())
}

/// The Parquet copies of whichever of the row-level reports `out` holds.
pub fn write_copies(out: &Path, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        let csv = out.join(format!("{name}.csv"));
        if csv.exists() {
            csv_to_parquet(&csv, &out.join(format!("{name}.parquet")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_report_round_trips_with_its_types() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("r.csv");
        std::fs::write(
            &csv,
            "row,state,attempts,eligible\n1,active,2,true\n2,'=x,,false\n",
        )
        .unwrap();
        let pq = dir.path().join("r.parquet");
        csv_to_parquet(&csv, &pq).unwrap();
        let df = ParquetReader::new(std::fs::File::open(&pq).unwrap())
            .finish()
            .unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(df.column("row").unwrap().dtype(), &DataType::UInt64);
        assert_eq!(df.column("eligible").unwrap().dtype(), &DataType::Boolean);
        let state = df.column("state").unwrap().str().unwrap();
        assert_eq!(state.get(1), Some("'=x"));
        let attempts = df.column("attempts").unwrap().u64().unwrap();
        assert_eq!(attempts.get(1), None);
    }
}
