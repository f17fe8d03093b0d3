//! Where the journal lives when no `--state` names it: one per user, in the
//! user's state folder, whatever `--out` says. A new `--out` each day (what
//! people do) then meets the same journal, and nothing is sent twice; with
//! the journal in `--out`, each new folder started a new ledger and paid
//! for everything again. Its audit log and the built-in simulator's memory
//! live beside it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::UsageError;

/// The journal's file name in the state folder (and in `--out` before).
const JOURNAL_FILE: &str = "journal.sqlite";

/// The default journal: `<state folder>/refleet/journal.sqlite`.
pub(super) fn default_journal() -> Result<PathBuf, UsageError> {
    state_home().map(|dir| dir.join("refleet").join(JOURNAL_FILE)).ok_or_else(|| {
        UsageError(
            "no state folder to keep the journal in (neither XDG_STATE_HOME nor HOME is set to an absolute path): pass --state FILE (or set REFLEET_STATE) to say where the journal lives".into(),
        )
    })
}

/// The user's state folder: `$XDG_STATE_HOME` when it is an absolute path
/// (on every platform, so that it can be set for a job or a test), else the
/// platform's own through `dirs`: `$HOME/.local/state` on Linux, and where
/// the platform has no state folder its local data folder (macOS:
/// `~/Library/Application Support`, Windows: `%LOCALAPPDATA%`). On Unix
/// `HOME` must be set: without it `dirs` would fall back to the password
/// database, and a job started with no environment (a bare container, a
/// unit with no user) would keep its ledger wherever that points; refleet
/// asks for `--state` instead.
fn state_home() -> Option<PathBuf> {
    if let Some(dir) = absolute(std::env::var_os("XDG_STATE_HOME")) {
        return Some(dir);
    }
    if cfg!(unix) && absolute(std::env::var_os("HOME")).is_none() {
        return None;
    }
    dirs::state_dir().or_else(dirs::data_local_dir)
}

/// The path a variable holds when it is an absolute one; the XDG base
/// directory specification has a relative value ignored.
fn absolute(value: Option<OsString>) -> Option<PathBuf> {
    value.map(PathBuf::from).filter(|p| p.is_absolute())
}

/// Where a command keeps or reads its history (`--state`, and
/// `REFLEET_STATE`): a SQLite journal, by its file path or a `sqlite:` URL
/// naming one (`sqlite:PATH`, `sqlite://PATH`, `sqlite:///ABSOLUTE`), or a
/// shared PostgreSQL ledger (`postgres://` or `postgresql://`), once taken
/// for a folder named `postgres:`.
#[derive(Clone, Debug)]
pub(super) enum State {
    Journal(PathBuf),
    /// The URL as given: it may hold a password, so it is never printed
    /// (see [`shown`]).
    Ledger(String),
}

/// The parser of `--state`: [`State`].
#[derive(Clone, Debug)]
pub(super) struct AnyStateParser;

impl clap::builder::TypedValueParser for AnyStateParser {
    type Value = State;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<State, clap::Error> {
        if is_ledger_url(value) {
            return Ok(State::Ledger(value.to_string_lossy().into_owned()));
        }
        state_path(value).map(State::Journal).map_err(|why| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--state {}: {why}\n", value.to_string_lossy()),
            )
            .with_cmd(cmd)
        })
    }
}

fn is_ledger_url(value: &std::ffi::OsStr) -> bool {
    value.to_str().is_some_and(|text| {
        let scheme = text.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        matches!(scheme.as_deref(), Some("postgres" | "postgresql"))
    })
}

/// A ledger URL as messages show it: without its user and password, its
/// query values (which may hold one) masked.
pub(super) fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => crate::submit::client::redact_url(&u),
        Err(_) => "(a PostgreSQL URL that cannot be read)".into(),
    }
}

/// A journal's path from `--state` that is not a ledger URL.
fn state_path(value: &std::ffi::OsStr) -> Result<PathBuf, String> {
    let Some(text) = value.to_str() else {
        // Not UTF-8, so not a URL: a file name.
        return Ok(PathBuf::from(value));
    };
    let scheme = text.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => {
            let rest = &text["sqlite:".len()..];
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                Err("a sqlite: URL names a file: sqlite:PATH".into())
            } else if path.contains('?') || path.contains('#') {
                Err("options in a sqlite: URL are not supported: name the file only".into())
            } else {
                Ok(PathBuf::from(path))
            }
        }
        _ => Ok(PathBuf::from(value)),
    }
}

/// The journal `status` and `report` read: `--state`, else the default
/// journal, which must exist (these commands only read).
pub(super) fn existing_journal(state: Option<PathBuf>) -> Result<PathBuf, UsageError> {
    if let Some(state) = state {
        return Ok(state);
    }
    let journal = default_journal()?;
    if journal.exists() {
        return Ok(journal);
    }
    let mut text = format!(
        "no journal at {} (the default journal: the first `refleet run` starts it); pass --state FILE to read another",
        journal.display()
    );
    // Where `status` and `report` looked before the journal moved.
    let old = Path::new("refleet-out").join(JOURNAL_FILE);
    if old.is_file() {
        text.push_str(&format!(
            ", e.g. --state {} (an earlier refleet kept it in --out)",
            old.display()
        ));
    }
    Err(UsageError(text))
}

/// Creates the folder of the default journal, private to the user (0700,
/// as the XDG specification asks of the folders it names) when it is new.
pub(super) fn create_state_dir(journal: &Path) -> Result<(), UsageError> {
    let Some(dir) = journal.parent() else {
        return Ok(());
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
        UsageError(format!(
            "cannot create {} for the journal ({e}): pass --state FILE to keep it elsewhere",
            dir.display()
        ))
    })
}

/// Where the journal was by default before it moved to the state folder:
/// in `--out`. A run whose default journal is new but finds one there
/// would send everything that journal already did: it is refused, saying
/// how to go on with it.
pub(super) fn journal_left_in_out(out: &Path, journal: &Path) -> Result<(), UsageError> {
    let old = out.join(JOURNAL_FILE);
    if journal.exists() || !old.is_file() {
        return Ok(());
    }
    Err(UsageError(format!(
        "{} is the journal of an earlier run (refleet kept it in --out then) and the default journal {} does not exist yet: starting a new one would send again every item the old one holds. Pass --state {} to go on with it (or move it to {}, its audit log and .sim.jsonl file with it). Nothing was sent",
        old.display(),
        journal.display(),
        old.display(),
        journal.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_a_path_a_sqlite_url_or_a_ledger() {
        let parse = |s: &str| state_path(std::ffi::OsStr::new(s));
        for (text, path) in [
            ("journal.sqlite", "journal.sqlite"),
            ("/var/lib/refleet/j.sqlite", "/var/lib/refleet/j.sqlite"),
            ("sqlite:j.sqlite", "j.sqlite"),
            ("SQLite:j.sqlite", "j.sqlite"),
            ("sqlite://rel/j.sqlite", "rel/j.sqlite"),
            ("sqlite:///abs/j.sqlite", "/abs/j.sqlite"),
            // A file whose name merely holds a colon.
            ("C:journal", "C:journal"),
        ] {
            assert_eq!(parse(text), Ok(PathBuf::from(path)), "{text}");
        }
        for text in [
            "postgres://refleet@db:5432/ledger",
            "postgresql://refleet@db/ledger?sslmode=require",
            "POSTGRES://x",
            "postgres:",
        ] {
            assert!(is_ledger_url(std::ffi::OsStr::new(text)), "{text}");
        }
        for text in ["sqlite:", "sqlite://", "sqlite:j.sqlite?mode=ro"] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_relative_variable_is_ignored() {
        assert_eq!(absolute(Some("rel/state".into())), None);
        assert_eq!(absolute(Some("".into())), None);
        assert_eq!(absolute(None), None);
        let abs = std::env::temp_dir();
        assert_eq!(absolute(Some(abs.clone().into())), Some(abs));
    }
}
