//! `refleet gen`: write a generated inventory and its contracts.

use std::io::Write;
use std::path::PathBuf;

use chrono::NaiveDate;
use polars_core::prelude::*;
use polars_io::prelude::*;

use super::{Global, Outcome, UsageError};
use crate::gen::{self, GenOptions};
use crate::report::AtomicFile;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of inventory rows.
    #[arg(long)]
    rows: u64,
    /// Seed: the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for inventory.csv (or .parquet) and contracts.csv.
    #[arg(long)]
    out: PathBuf,
    /// Share of rows with a planted defect, 0 to 1.
    #[arg(long, default_value_t = 0.03)]
    defects: f64,
    /// Format of the inventory.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// The date contracts are built around (YYYY-MM-DD).
    #[arg(long, default_value = "2026-11-24")]
    as_of: NaiveDate,
    /// Inventory rows per account, 2 or more (each account has 6 contracts,
    /// one good): fewer makes many small contracts and quotes.
    #[arg(long, default_value_t = gen::ACCOUNT_ROWS)]
    account_rows: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Parquet,
}

pub(super) fn run(args: Args, global: &Global) -> anyhow::Result<Outcome> {
    if !(0.0..=1.0).contains(&args.defects) {
        return Err(UsageError("--defects must be between 0 and 1".into()).into());
    }
    if !gen::ACCOUNT_ROWS_RANGE.contains(&args.account_rows) {
        return Err(UsageError(format!(
            "--account-rows must be from {} to {}, not {}",
            gen::ACCOUNT_ROWS_RANGE.start(),
            gen::ACCOUNT_ROWS_RANGE.end(),
            args.account_rows
        ))
        .into());
    }
    let opts = GenOptions {
        rows: args.rows,
        seed: args.seed,
        defects: args.defects,
        as_of: args.as_of,
        account_rows: args.account_rows,
    };
    super::create_out_dir(&args.out)?;
    let started = std::time::Instant::now();
    let inventory = match args.format {
        Format::Csv => {
            let path = args.out.join("inventory.csv");
            let mut f = AtomicFile::create(&path)?;
            gen::write_inventory_csv(&opts, &mut f)?;
            f.flush()?;
            f.commit()?;
            path
        }
        Format::Parquet => {
            let path = args.out.join("inventory.parquet");
            write_parquet(&opts, &path)?;
            path
        }
    };
    let contracts = args.out.join("contracts.csv");
    let mut f = AtomicFile::create(&contracts)?;
    gen::write_contracts_csv(&opts, &mut f)?;
    f.commit()?;
    if !global.quiet {
        eprintln!(
            "wrote {} ({} rows) and {} ({} contracts) in {:.2} s",
            inventory.display(),
            opts.rows,
            contracts.display(),
            gen::accounts(&opts) * 6,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Outcome::Success)
}

/// The same rows as the CSV, as string columns, written in batches.
fn write_parquet(opts: &GenOptions, path: &std::path::Path) -> anyhow::Result<()> {
    let names: Vec<&str> = gen::INVENTORY_HEADER.split(',').collect();
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let tmp = crate::report::temp_in(dir)?;
    let mut writer = None;
    let batch = 256 * 1024;
    let mut start = 0;
    loop {
        let end = (start + batch).min(opts.rows);
        let cols = gen::inventory_columns(opts, start, end);
        let columns: Vec<Column> = names
            .iter()
            .zip(cols)
            .map(|(n, c)| Column::new((*n).into(), c))
            .collect();
        let df = DataFrame::new_infer_height(columns)?;
        if writer.is_none() {
            writer = Some(ParquetWriter::new(tmp.reopen()?).batched(df.schema())?);
        }
        if let Some(w) = writer.as_mut() {
            w.write_batch(&df)?;
        }
        start = end;
        if start >= opts.rows {
            break;
        }
    }
    if let Some(w) = writer {
        w.finish()?;
    }
    tmp.persist(path)?;
    Ok(())
}
