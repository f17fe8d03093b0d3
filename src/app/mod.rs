//! The steps the commands share, as a library: plan an inventory into its
//! reports ([`plan`]), and the errors a user must fix ([`UsageError`]). The
//! command line (`crate::cli`) parses arguments into these settings, calls
//! these steps and prints what they return.

pub mod plan;
pub mod report;
pub mod run;

pub use plan::{load_contracts, make_plan, summary_text, PlanSettings, Planned};
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

/// A run that had to stop before finishing for a reason outside it (the
/// shared ledger went away and did not come back in time): exit code 4,
/// resumable by running the same command again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The threads of `--threads` (0 = one per core, else at most that many
/// busy at once; see [`crate::pipeline::Workers`]).
pub fn workers(threads: usize) -> anyhow::Result<crate::pipeline::Workers> {
    crate::pipeline::Workers::new(threads)
        .map_err(|e| UsageError(format!("cannot start {threads} threads: {e}")).into())
}

/// A missing column, an empty file or an unreadable header is the user's to
/// fix: a usage error (exit 2) naming the file. I/O errors stay errors.
pub fn input_error(
    input: &crate::ingest::InputPath,
) -> impl Fn(crate::ingest::IngestError) -> anyhow::Error + '_ {
    use crate::ingest::IngestError;
    move |e| match e {
        // It names the file already.
        IngestError::Open { .. } => anyhow::Error::new(e),
        IngestError::Folder(_) => UsageError(e.to_string()).into(),
        IngestError::Io(_) => anyhow::Error::new(e).context(Reading(input.display().to_string())),
        _ => UsageError(format!("{}: {e}", input.display())).into(),
    }
}

/// Checks that each input names a file that is there, before anything is
/// created (`--out`, the journal): a missing file or a folder is said once
/// and leaves nothing behind.
pub fn check_inputs(inputs: &[&crate::ingest::InputPath]) -> anyhow::Result<()> {
    use crate::ingest::{IngestError, InputPath};
    for input in inputs {
        let InputPath::File(path) = input else {
            continue;
        };
        let found = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Err(IngestError::Folder(path.display().to_string())),
            Ok(_) => Ok(()),
            Err(source) => Err(IngestError::Open {
                path: path.display().to_string(),
                source,
            }),
        };
        found.map_err(input_error(input))?;
    }
    Ok(())
}

/// The context "reading FILE" of an error of reading an input.
#[derive(Debug)]
struct Reading(String);

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reading {}", self.0)
    }
}

/// For a stage that reads `input` and writes reports as it goes: says
/// "reading FILE" before an error of reading it, and only then (once). A
/// report that cannot be written names itself ("cannot write OUT/x.csv: No
/// space left on device"); a journal error says "journal".
pub fn reading(input: &crate::ingest::InputPath) -> impl Fn(anyhow::Error) -> anyhow::Error + '_ {
    use crate::ingest::IngestError;
    move |e| {
        let from_input = e.chain().any(|c| {
            c.downcast_ref::<IngestError>()
                .is_some_and(|i| !matches!(i, IngestError::Open { .. }))
        });
        if from_input && e.downcast_ref::<Reading>().is_none() {
            e.context(Reading(input.display().to_string()))
        } else {
            e
        }
    }
}

/// Creates the folder `--out` names (and its parents), saying what is in the
/// way when it cannot: a dangling symbolic link, a file.
pub fn create_out_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let Err(e) = std::fs::create_dir_all(dir) else {
        return Ok(());
    };
    for part in dir.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        let Ok(meta) = std::fs::symlink_metadata(part) else {
            continue;
        };
        let what = if part == dir {
            format!("--out {}", dir.display())
        } else {
            format!("{} (in --out {})", part.display(), dir.display())
        };
        if meta.file_type().is_symlink() && std::fs::metadata(part).is_err() {
            let target = std::fs::read_link(part)
                .map_or_else(|_| "?".to_string(), |t| t.display().to_string());
            return Err(UsageError(format!(
                "{what} is a symbolic link to {target}, which does not exist"
            ))
            .into());
        }
        if std::fs::metadata(part).is_ok_and(|m| !m.is_dir()) {
            return Err(UsageError(format!("{what} is a file, not a folder")).into());
        }
    }
    Err(anyhow::Error::new(e).context(format!("cannot create {}", dir.display())))
}
