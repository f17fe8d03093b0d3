//! The command line: clap types live here and only here. Each subcommand
//! resolves its arguments into plain settings once and calls one function
//! that returns an [`Outcome`]; `main` maps that to an exit code (SPEC §7).

mod audit;
mod config;
mod gen;
mod paths;
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

use crate::app::{create_out_dir, input_error, reading, workers};
pub use crate::app::{Outcome, UsageError};

/// An error and its causes on one line, each said once: `{:#}` of anyhow,
/// less the layers that only repeat the one above them. Some libraries'
/// errors print their cause and also return it as their source (rusqlite's
/// "database or disk is full" over SQLite's "Error code 13: database or
/// disk is full", csv's and tempfile's I/O errors): printed as is, the
/// cause would be said twice.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut above = text.clone();
    let mut next = err.source();
    while let Some(e) = next {
        let said = e.to_string();
        if !(above.contains(&said) || said.ends_with(&above)) {
            text.push_str(": ");
            text.push_str(&said);
        }
        above = said;
        next = e.source();
    }
    text
}

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
        after_help = "Examples:\n  refleet report --out refleet-out/   # the last run of the default journal\n  refleet report --state /var/lib/refleet/journal.sqlite --out reports/"
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
    crate::logging::init(cli.log_format == LogFormat::Json, progress::log_line);
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
            .map_err(|e| UsageError(error_text(&e)).into())
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
    /// Text encoding of a CSV input, e.g. windows-1252 (Excel's "CSV" in
    /// much of Europe), latin1, utf-16; default UTF-8 (UTF-16 is also
    /// recognised by its byte-order mark).
    #[arg(long, value_name = "LABEL", value_parser = parse_encoding, env = "REFLEET_ENCODING")]
    encoding: Option<&'static encoding_rs::Encoding>,
    /// Threads to keep busy: 0 = every core (the default, fastest); N = at
    /// most N at once (1 = everything on one thread)
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

/// Parses `--encoding`: a WHATWG label (`windows-1252`, `latin1`,
/// `iso-8859-15`, `utf-16le`, …).
fn parse_encoding(s: &str) -> Result<&'static encoding_rs::Encoding, String> {
    encoding_rs::Encoding::for_label(s.trim().as_bytes()).ok_or_else(|| {
        format!(
            "`{s}` is not a text encoding refleet knows (e.g. utf-8, windows-1252, latin1, utf-16)"
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestError, InputPath};

    fn enoent() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOENT)
    }

    /// `/dev/full` answers every write with "No space left on device": the
    /// user reads the report's name and the cause, once each.
    #[test]
    fn a_failed_report_write_names_the_file_and_the_cause_once() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("SKIPPED: no /dev/full on this system");
            return;
        };
        let report = std::path::Path::new("/out/results.csv");
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(
            crate::report::NamedWriter::new(full, report),
        ));
        let err = w
            .write_record(["a", "b"])
            .and_then(|()| Ok(w.flush()?))
            .map_err(anyhow::Error::from)
            .unwrap_err();
        assert_eq!(
            error_text(err.as_ref()),
            format!(
                "cannot write /out/results.csv: {}",
                std::io::Error::from_raw_os_error(libc::ENOSPC)
            )
        );
    }

    /// How often `part` occurs in `text`.
    fn times(text: &str, part: &str) -> usize {
        text.matches(part).count()
    }

    /// A layer that prints its cause does not also return it as its
    /// source: anyhow's `{:#}`, which prints every layer, says it once.
    #[test]
    fn every_error_enum_says_its_cause_once() {
        let cause = enoent().to_string();
        let errors: Vec<anyhow::Error> = vec![
            crate::submit::journal::JournalError::Open {
                path: "j.sqlite".into(),
                source: enoent(),
            }
            .into(),
            IngestError::Open {
                path: "inventory.csv".into(),
                source: enoent(),
            }
            .into(),
            IngestError::Io(enoent()).into(),
            crate::audit::AuditError::Io {
                path: "audit.jsonl".into(),
                source: enoent(),
            }
            .into(),
        ];
        for e in errors {
            let text = format!("{e:#}");
            assert_eq!(times(&text, &cause), 1, "{text}");
        }
    }

    /// rusqlite's error prints SQLite's message and returns SQLite's code,
    /// which says the same, as its source.
    #[test]
    fn a_full_disk_under_the_journal_is_said_once() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let e = anyhow::Error::from(crate::submit::journal::JournalError::Sql(full));
        assert_eq!(error_text(e.as_ref()), "journal: database or disk is full");
        // Printed by `{:#}`, rusqlite's own layers say it twice.
        assert_eq!(times(&format!("{e:#}"), "database or disk is full"), 2);
    }

    #[test]
    fn distinct_layers_are_all_kept() {
        let e = anyhow::Error::new(enoent())
            .context("cannot open x.csv")
            .context("loading the contracts");
        assert_eq!(
            error_text(e.as_ref()),
            format!("loading the contracts: cannot open x.csv: {}", enoent())
        );
    }

    #[test]
    fn only_errors_of_reading_the_input_say_reading() {
        let input = InputPath::File("inv.csv".into());
        let read = reading(&input)(anyhow::Error::new(IngestError::Io(enoent())));
        assert!(error_text(read.as_ref()).starts_with("reading inv.csv: "));
        // Said once, however many stages add it.
        let twice = reading(&input)(read);
        assert_eq!(times(&error_text(twice.as_ref()), "reading"), 1);
        // Opening names the file already.
        let open = reading(&input)(input_error(&input)(IngestError::Open {
            path: "inv.csv".into(),
            source: enoent(),
        }));
        assert_eq!(times(&error_text(open.as_ref()), "inv.csv"), 1);
        // A report that cannot be written is not a read error.
        let write = anyhow::Error::new(std::io::Error::other("cannot write out/x.csv"));
        let write = reading(&input)(write);
        assert_eq!(error_text(write.as_ref()), "cannot write out/x.csv");
    }

    #[cfg(unix)]
    #[test]
    fn out_says_what_is_in_its_way() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        let gone = dir.path().join("gone");
        std::os::unix::fs::symlink(&gone, &link).unwrap();
        let message = |p: &std::path::Path| create_out_dir(p).unwrap_err().to_string();
        assert_eq!(
            message(&link),
            format!(
                "--out {} is a symbolic link to {}, which does not exist",
                link.display(),
                gone.display()
            )
        );
        assert!(message(&link.join("sub")).contains("is a symbolic link to"));
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(message(&file).ends_with("is a file, not a folder"));
        assert!(create_out_dir(&dir.path().join("new/deeper")).is_ok());
        assert!(create_out_dir(dir.path()).is_ok());
    }
}
