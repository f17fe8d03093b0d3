//! The command line: clap types live here and only here. Each subcommand
//! resolves its arguments into plain settings once and calls one function
//! that returns an [`Outcome`]; `main` maps that to an exit code (SPEC §7).

mod audit;
mod config;
mod gen;
mod policy;
mod progress;
mod quote;
mod report;
mod run;
mod sim;
mod status;
mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// How a command ended, mapped to SPEC §7 exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every item reached a good terminal state or was reported.
    Success,
    /// Finished, but some items failed or were rejected by the API.
    Partial,
    /// Stopped before finishing; can be resumed.
    Interrupted,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Success => 0,
            Outcome::Partial => 3,
            Outcome::Interrupted => 4,
        }
    }
}

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Parser, Debug)]
#[command(name = "refleet", version, about = "Bulk reactivation of Poly device fleets and their licenses.", long_about = None)]
pub struct Cli {
    /// Policy file merged over the built-in policy.
    #[arg(long, global = true, value_name = "FILE", env = "REFLEET_POLICY")]
    policy: Option<PathBuf>,
    /// No progress bars and no summary on stderr.
    #[arg(long, short, global = true, env = "REFLEET_QUIET")]
    quiet: bool,
    /// A TOML file of settings (keys are flag names); flags > REFLEET_* environment > file.
    #[arg(long, global = true, value_name = "FILE", env = "REFLEET_CONFIG")]
    config: Option<PathBuf>,
    /// Diagnostics format on stderr (with REFLEET_LOG=info, debug, …): text or json (for schedulers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "REFLEET_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate an inventory (CSV, gzip/zstd CSV, Parquet, or - for stdin) and write rejects.csv.
    #[command(
        after_help = "Examples:\n  refleet validate sample-data/inventory.csv --out out/\n  zcat fleet.csv.gz | refleet validate - --out out/ --date-format dmy\n  refleet validate fleet.parquet --out out/ --emit-valid --format parquet"
    )]
    Validate(validate::Args),
    /// Validate, decide eligibility and quote per contract and region.
    #[command(
        after_help = "Examples:\n  refleet quote sample-data/inventory.csv --contracts sample-data/contracts.csv --as-of 2026-11-24\n  refleet quote fleet.csv --contracts contracts.csv --budget 50000 USD --budget 40000 EUR"
    )]
    Quote(quote::Args),
    /// Validate, quote, submit to the vendor API, track to the end, report.
    #[command(
        after_help = "Examples:\n  refleet run sample-data/inventory.csv --contracts sample-data/contracts.csv   # against the built-in simulator\n  REFLEET_API_TOKEN=... refleet run fleet.csv --contracts contracts.csv --api-url https://vendor.example/api --rate 10 --state /var/lib/refleet/journal.sqlite\n  refleet run fleet.csv --contracts contracts.csv --dry-run --budget 50000 USD"
    )]
    Run(run::Args),
    /// Show where a run stands, from its journal.
    Status(status::Args),
    /// Write report.html for the last finished run of a journal.
    #[command(
        after_help = "Examples:\n  refleet report --state refleet-out/journal.sqlite --out refleet-out/"
    )]
    Report(report::Args),
    /// Generate a realistic inventory and matching contracts (deterministic).
    Gen(gen::Args),
    /// Serve a SIMULATED vendor API on loopback (for tests and trial runs).
    #[command(
        after_help = "Examples:\n  REFLEET_SIM_TOKEN=secret refleet sim --listen 127.0.0.1:8080\n  refleet sim --listen 127.0.0.1:8080 --token-file /run/secrets/sim-token\n  refleet sim --listen 127.0.0.1:0 --rate-limit 20/s --burst 5 --error-rate 0.05 --latency-ms 5..50 --seed 7"
    )]
    Sim(sim::Args),
    /// Check the hash chain of an audit log.
    Audit {
        #[command(subcommand)]
        command: audit::Command,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  refleet completions bash > /etc/bash_completion.d/refleet"
    )]
    Completions { shell: clap_complete::Shell },
    /// Inspect the policy.
    Policy {
        #[command(subcommand)]
        command: policy::Command,
    },
}

pub fn run() -> anyhow::Result<Outcome> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    config::apply(&args)?;
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are successes; everything else is usage.
            let usage = e.use_stderr();
            e.print()?;
            return if usage {
                Err(UsageError("invalid arguments".into()).into())
            } else {
                Ok(Outcome::Success)
            };
        }
    };
    crate::logging::init(cli.log_format == LogFormat::Json);
    let global = Global {
        policy: cli.policy,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Validate(args) => validate::run(args, &global),
        Command::Quote(args) => quote::run(args, &global),
        Command::Run(args) => run::run(args, &global),
        Command::Status(args) => status::run(args, &global),
        Command::Report(args) => report::run(args, &global),
        Command::Gen(args) => gen::run(args, &global),
        Command::Sim(args) => sim::run(args, &global),
        Command::Policy { command } => policy::run(command, &global),
        Command::Audit { command } => audit::run(command, &global),
        Command::Completions { shell } => {
            // Into a buffer first: the generator panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "refleet",
                &mut script,
            );
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(Outcome::Success)
        }
    }
}

/// Options every subcommand shares.
struct Global {
    policy: Option<PathBuf>,
    quiet: bool,
}

impl Global {
    fn load_policy(&self) -> anyhow::Result<crate::policy::Policy> {
        crate::policy::Policy::load(self.policy.as_deref())
            .map_err(|e| UsageError(e.to_string()).into())
    }
}

/// How to read an inventory: shared by every command that reads one.
#[derive(clap::Args, Debug)]
struct InputArgs {
    /// How to read non-ISO dates: dmy, mdy or a strftime pattern like %d.%m.%Y.
    #[arg(long, value_name = "FORMAT", env = "REFLEET_DATE_FORMAT")]
    date_format: Option<String>,
    /// Field delimiter (one character, or `tab`); sniffed when absent.
    #[arg(long, value_parser = parse_delimiter, env = "REFLEET_DELIMITER")]
    delimiter: Option<u8>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0, env = "REFLEET_THREADS")]
    threads: usize,
}

impl InputArgs {
    fn date_format(&self) -> Result<Option<crate::domain::DateFormat>, UsageError> {
        self.date_format
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(UsageError)
    }
}

/// Parses `--delimiter`: one byte, or `tab`.
fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!(
            "delimiter must be one ASCII character or `tab`, not `{s}`"
        )),
    }
}

/// A rayon pool of `threads` threads (0 = one per core).
fn thread_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("refleet-{i}"))
        .build()
        .map_err(|e| UsageError(format!("cannot start {threads} threads: {e}")).into())
}

/// A missing column, an empty file or an unreadable header is the user's to
/// fix: a usage error (exit 2) naming the file. I/O errors stay errors.
fn input_error(
    input: &crate::ingest::InputPath,
) -> impl Fn(crate::ingest::IngestError) -> anyhow::Error + '_ {
    use crate::ingest::IngestError;
    move |e| match e {
        IngestError::Io(_) | IngestError::Open { .. } => {
            anyhow::Error::new(e).context(format!("reading {}", input.display()))
        }
        _ => UsageError(format!("{}: {e}", input.display())).into(),
    }
}
