//! The durable journal of submissions (SPEC §6): SQLite in WAL mode with
//! `synchronous = FULL`, so a committed write survives `kill -9` and a power
//! cut alike.
//!
//! The rule that makes a crash harmless: a batch is written as `submitted`,
//! with its idempotency key and its items, in one transaction *before* its
//! request leaves; its outcome is written after. A later run re-sends every
//! batch still `submitted` with the same key and the same body, so the
//! server replays its answer instead of activating anything twice.
//!
//! Items are keyed by their event key (`serial or license | contract |
//! deactivated_at`), across runs: the same export run again the next night
//! finds its items already done, and a new deactivation is a new key.
//!
//! One process at a time: [`Journal::open`] takes an exclusive lock on
//! `FILE.lock` (released by the kernel when the process dies, however it dies).
//!
//! A journal is never guessed at. A missing file is a new journal, created
//! under a temporary name and renamed into place once its tables and `meta`
//! (format version [`SCHEMA_VERSION`], a random journal id) are committed,
//! so a crash never leaves a half-made one. A file that exists but is empty,
//! is not an SQLite database, is shorter than its header says, is damaged,
//! is no refleet journal, or was written in a format this refleet does not
//! know is refused ([`JournalError::Unusable`]): taking it as new would send
//! every batch again. [`Journal::open_afresh_if_unusable`] (`run
//! --new-journal`) moves such a file aside, renamed and never deleted, and
//! starts a new journal.
//!
//! The journal id ties the journal to its audit log (`crate::audit`): the
//! journal records the log's file and how far its chain goes.

mod audit;
mod batches;
mod cases;
mod columns;
mod file;
pub mod ledger;
mod plan;
mod reader;
mod records;
mod schema;
mod status;
mod types;
mod vendor;

#[cfg(test)]
mod batches_tests;
#[cfg(test)]
mod open_tests;
#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod types_tests;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use rusqlite::{params, Connection};

pub use audit::{AuditItem, AuditOrder, AuditedOrder};
pub(super) use columns::{
    coverage_str, features_bits, features_text, fmt_time, item_type_str, now,
};
pub use ledger::{
    AuditLedger, BatchLedger, CaseLedger, ItemLedger, ItemRecords, Ledger, PlanLedger, RunLedger,
    StatusLedger, VendorLedger,
};
pub use reader::{FinishedRun, History, JournalReader, RunRow};
pub use records::Records;
pub use schema::SCHEMA_VERSION;
pub(super) use status::status_changes;
pub use types::{
    Batch, BatchGroup, BatchItem, CaseToOpen, ItemRecord, ItemState, LookupPurpose, LookupTarget,
    PlannedItem, RunSplit, Source, Tracked, UnknownState,
};

use file::{check_file, create, damaged, open_existing, set_aside, suffixed};
use schema::schema_version;

/// An error of the journal itself: the run cannot go on safely without it.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("another refleet process is using the journal {0} (its lock file {0}.lock is held); wait for it to finish")]
    Busy(PathBuf),
    #[error("cannot open the journal {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal")]
    Sql(#[from] rusqlite::Error),
    #[error("journal {0}: unknown state `{1}` (written by a newer refleet?)")]
    BadState(PathBuf, String),
    /// The shared PostgreSQL ledger (`submit::pg`) failed; its error says
    /// which ledger, never with a password.
    #[error(transparent)]
    Shared(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The shared ledger went away and did not come back in time: what
    /// was recorded before stays, and a run of the same command resumes.
    #[error("{0}")]
    Gone(String),
    #[error("the journal {path} {problem}. The journal is what tells refleet which batches were already sent and paid for: starting without it sends every item again, and the vendor may charge again for what it no longer replays under the same idempotency key. Restore it from a backup if there is one; otherwise `refleet run --new-journal` moves it aside (renamed {path}.unusable-<UTC time>, never deleted) and starts a new journal")]
    Unusable { path: PathBuf, problem: String },
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
    /// Nesting of [`Journal::atomically`]: only the outermost commits.
    depth: std::cell::Cell<u32>,
    /// Held for the life of the journal: the kernel releases it on exit.
    _lock: File,
}

impl Journal {
    /// Opens the journal at `path`, creating it if there is no such file;
    /// refuses when another process holds it, and a file that is not a
    /// journal this refleet can use ([`JournalError::Unusable`]).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Ok(Journal::open_with(path, false)?.0)
    }

    /// [`Journal::open`], but a file that is not a usable journal is moved
    /// aside (renamed `FILE.unusable-<UTC time>`, with its `-wal` and
    /// `-shm`; never deleted) and a new journal started in its place.
    /// Returns where the old file went; a usable journal is opened as is.
    pub fn open_afresh_if_unusable(
        path: &Path,
    ) -> Result<(Journal, Option<PathBuf>), JournalError> {
        Journal::open_with(path, true)
    }

    fn open_with(path: &Path, afresh: bool) -> Result<(Journal, Option<PathBuf>), JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let lock_path = suffixed(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(open_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Busy(path.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let mut moved = None;
        let conn = match open_existing(path) {
            Ok(Some(conn)) => conn,
            Ok(None) => create(path)?,
            Err(JournalError::Unusable { problem, .. }) if afresh => {
                tracing::warn!(journal = %path.display(), problem, "moving the journal aside and starting a new one");
                moved = Some(set_aside(path, "unusable")?);
                create(path)?
            }
            Err(e) => return Err(e),
        };
        Ok((
            Journal {
                conn,
                path: path.to_path_buf(),
                depth: std::cell::Cell::new(0),
                _lock: lock,
            },
            moved,
        ))
    }

    /// Opens an existing journal to read it while a run may hold the lock
    /// (`refleet status`, `refleet report`). WAL lets readers in.
    pub fn open_read_only(path: &Path) -> Result<Connection, JournalError> {
        if !check_file(path)? {
            return Err(JournalError::Open {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| damaged(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema_version(&conn, path)?;
        Ok(conn)
    }
}

impl RunLedger for Journal {
    fn begin_run(&self, input: &str, as_of: NaiveDate) -> Result<i64, JournalError> {
        self.conn.execute(
            "INSERT INTO runs (started_at, input, as_of) VALUES (?1, ?2, ?3)",
            params![now(), input, as_of.to_string()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_run(
        &self,
        run_id: i64,
        outcome: &str,
        summary_json: &str,
        quotes_json: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?1, outcome = ?2, summary_json = ?3, quotes_json = ?4
             WHERE id = ?5",
            params![now(), outcome, summary_json, quotes_json, run_id],
        )?;
        Ok(())
    }

    fn atomically<T, E: From<JournalError>>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let outer = self.depth.get() == 0;
        if outer {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| E::from(e.into()))?;
        }
        self.depth.set(self.depth.get() + 1);
        let result = f();
        self.depth.set(self.depth.get() - 1);
        if outer {
            match &result {
                Ok(_) => self
                    .conn
                    .execute_batch("COMMIT")
                    .map_err(|e| E::from(e.into()))?,
                Err(_) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
            }
        }
        result
    }
}
