//! `refleet validate`: the validate stage on its own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{input_error, workers, Global, InputArgs, Outcome, UsageError};
use crate::domain::{Item, Reject};
use crate::ingest::{self, IngestOptions, InputPath};
use crate::pipeline::{self, ValidateSink, ValidateStats};
use crate::policy::Policy;
use crate::progress::Progress;
use crate::report::{RejectsWriter, ValidFormat, ValidWriter};
use crate::validate::{ValidateOptions, Validator};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Inventory file (CSV, .csv.gz, .csv.zst, Parquet) or - for stdin.
    inventory: PathBuf,
    /// Directory for the reports (created if missing).
    #[arg(long, default_value = "refleet-out", env = "REFLEET_OUT")]
    out: PathBuf,
    #[command(flatten)]
    input: InputArgs,
    /// Also write the valid rows, normalised (valid.csv or valid.parquet).
    #[arg(long, env = "REFLEET_EMIT_VALID")]
    emit_valid: bool,
    /// Format of the valid rows.
    #[arg(long, value_enum, default_value_t = Format::Csv, env = "REFLEET_FORMAT")]
    format: Format,
    /// Largest CSV record accepted, in bytes.
    #[arg(long, default_value_t = ingest::DEFAULT_MAX_RECORD, value_name = "BYTES", env = "REFLEET_MAX_RECORD_BYTES")]
    max_record_bytes: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Csv,
    Parquet,
}

/// Resolved settings: what the command needs, without clap.
struct Settings {
    input: InputPath,
    out: PathBuf,
    ingest: IngestOptions,
    validate: ValidateOptions,
    threads: usize,
    emit_valid: Option<ValidFormat>,
}

impl Args {
    fn resolve(self) -> Result<Settings, UsageError> {
        let date_format = self.input.date_format()?;
        if self.max_record_bytes < 1024 {
            return Err(UsageError(
                "--max-record-bytes must be at least 1024".into(),
            ));
        }
        Ok(Settings {
            input: InputPath::from_arg(&self.inventory),
            out: self.out,
            ingest: IngestOptions {
                delimiter: self.input.delimiter,
                max_record: self.max_record_bytes,
                encoding: self.input.encoding,
            },
            validate: ValidateOptions {
                date_format,
                keep_items: self.emit_valid,
            },
            threads: self.input.threads,
            emit_valid: self.emit_valid.then_some(match self.format {
                Format::Csv => ValidFormat::Csv,
                Format::Parquet => ValidFormat::Parquet,
            }),
        })
    }
}

/// Writes rejects, warnings and (optionally) the valid rows as they come.
struct FileSink<'p> {
    policy: &'p Policy,
    rejects: RejectsWriter,
    warnings: RejectsWriter,
    valid: Option<ValidWriter>,
}

impl ValidateSink for FileSink<'_> {
    fn item(&mut self, item: Item) -> anyhow::Result<()> {
        if let Some(v) = self.valid.as_mut() {
            v.write(&item, self.policy)?;
        }
        Ok(())
    }
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()> {
        self.rejects.write(reject)
    }
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()> {
        self.warnings.write(warning)
    }
}

pub(super) fn run(args: Args, global: &Global) -> anyhow::Result<Outcome> {
    let settings = args.resolve()?;
    let policy = global.load_policy()?;
    let started = Instant::now();
    let opened =
        ingest::open(&settings.input, &settings.ingest).map_err(input_error(&settings.input))?;
    let validator = Validator::new(&policy, settings.validate.clone(), opened.source.as_ref())
        .map_err(input_error(&settings.input))?;
    crate::app::check_inputs(&[&settings.input])?;
    super::create_out_dir(&settings.out)?;
    let valid_path = |f: ValidFormat| {
        settings.out.join(if f == ValidFormat::Csv {
            "valid.csv"
        } else {
            "valid.parquet"
        })
    };
    let mut sink = FileSink {
        policy: &policy,
        rejects: RejectsWriter::create(&settings.out.join("rejects.csv"))?,
        warnings: RejectsWriter::create(&settings.out.join("warnings.csv"))?,
        valid: settings
            .emit_valid
            .map(|f| ValidWriter::create(&valid_path(f), f, &validator.extra_columns()))
            .transpose()?,
    };
    let pool = workers(settings.threads)?;
    let progress = super::progress::Phases::for_terminal(global.quiet);
    progress.phase("validating");
    progress.start(opened.total_bytes, opened.bytes_read.clone());
    // About 130 bytes per row in a typical export: pre-size, never cap.
    let expected_rows = opened
        .total_bytes
        .map_or(0, |b| (b / 130) as usize)
        .min(50_000_000);
    let stats = pipeline::run(
        opened.source,
        &validator,
        &pool,
        expected_rows,
        &mut sink,
        &progress,
    )
    .map_err(super::reading(&settings.input))?;
    progress.finish();
    sink.rejects.commit()?;
    sink.warnings.commit()?;
    if let Some(v) = sink.valid {
        v.commit()?;
    }
    progress.clear();
    if let Some(hint) = stats.encoding_hint() {
        eprintln!("refleet: warning: {hint}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    if !global.quiet {
        let bytes = opened.bytes_read.load(std::sync::atomic::Ordering::Relaxed);
        eprint!(
            "{}",
            summary(
                &settings.input,
                opened.format,
                &stats,
                bytes,
                elapsed,
                &settings.out
            )
        );
    }
    Ok(Outcome::Success)
}

fn summary(
    input: &InputPath,
    format: &str,
    s: &ValidateStats,
    bytes: u64,
    secs: f64,
    out: &Path,
) -> String {
    let mut text = format!(
        "{} ({format}): {} rows, {} valid, {} rejected, {} warnings\n",
        input.display(),
        s.rows,
        s.valid,
        s.rejected_rows,
        s.warnings_by_code.values().sum::<u64>()
    );
    for (code, n) in &s.rejects_by_code {
        text.push_str(&format!("  {code:<22} {n}\n"));
    }
    for (code, n) in &s.warnings_by_code {
        text.push_str(&format!("  {code:<22} {n} (warning)\n"));
    }
    let secs = secs.max(1e-9);
    text.push_str(&format!(
        "{:.2} s, {:.0} rows/s, {:.1} MB/s; reports in {}\n",
        secs,
        s.rows as f64 / secs,
        bytes as f64 / 1e6 / secs,
        out.display()
    ));
    text
}
