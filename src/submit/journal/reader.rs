//! Reading a journal a run may hold (`refleet status`, `report`, `audit
//! verify`), and the history those commands show.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use super::audit::audit_binding;
use super::records::counts;
use super::{ItemState, Journal, JournalError};

/// A journal opened to read while a run may hold it (`refleet status`,
/// `report`, `audit verify`): what those commands ask, as typed answers.
pub struct JournalReader {
    conn: Connection,
    path: PathBuf,
}

/// The newest run of a journal.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub started_at: String,
    /// `None`: still going, or stopped without finishing.
    pub finished_at: Option<String>,
    pub outcome: Option<String>,
}

/// What `refleet status` and `refleet report` read of a journal or a
/// shared ledger, while runs may be using it.
pub trait History {
    /// Item counts by state (of every run).
    fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError>;
    /// The newest run.
    fn last_run(&self) -> Result<Option<RunRow>, JournalError>;
    /// Run `run_id`'s requests per second over the last minute of its
    /// requests; `None` with fewer than two requests in it.
    fn recent_rate(&self, run_id: i64) -> Result<Option<f64>, JournalError>;
    /// The last run that finished and kept its `summary.json`.
    fn last_finished_run(&self) -> Result<Option<FinishedRun>, JournalError>;
    /// Activations per UTC day, oldest first.
    fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError>;
}

impl History for JournalReader {
    fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError> {
        JournalReader::counts(self)
    }
    fn last_run(&self) -> Result<Option<RunRow>, JournalError> {
        JournalReader::last_run(self)
    }
    fn recent_rate(&self, run_id: i64) -> Result<Option<f64>, JournalError> {
        JournalReader::recent_rate(self, run_id)
    }
    fn last_finished_run(&self) -> Result<Option<FinishedRun>, JournalError> {
        JournalReader::last_finished_run(self)
    }
    fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError> {
        JournalReader::activations_by_day(self)
    }
}

impl JournalReader {
    pub fn open(path: &Path) -> Result<JournalReader, JournalError> {
        Ok(JournalReader {
            conn: Journal::open_read_only(path)?,
            path: path.to_path_buf(),
        })
    }

    /// Item counts by state.
    pub fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError> {
        counts(&self.conn, &self.path)
    }

    /// The journal's id and its audit log's chain state.
    pub fn audit_binding(&self) -> Result<crate::audit::Binding, JournalError> {
        audit_binding(&self.conn, &self.path)
    }

    pub fn last_run(&self) -> Result<Option<RunRow>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, started_at, finished_at, outcome FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(RunRow {
                        id: r.get(0)?,
                        started_at: r.get(1)?,
                        finished_at: r.get(2)?,
                        outcome: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Run `run_id`'s requests per second over the last minute of its
    /// requests; `None` with fewer than two requests in it.
    pub fn recent_rate(&self, run_id: i64) -> Result<Option<f64>, JournalError> {
        let (requests, span): (i64, f64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE((julianday(MAX(at)) - julianday(MIN(at))) * 86400.0, 0)
             FROM attempts WHERE run_id = ?1
               AND julianday(at) >= (SELECT julianday(MAX(at)) FROM attempts WHERE run_id = ?1) - 60.0 / 86400.0",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((requests > 1 && span > 0.0).then(|| requests as f64 / span))
    }

    pub fn last_finished_run(&self) -> Result<Option<FinishedRun>, JournalError> {
        last_finished_run(&self.conn)
    }

    pub fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError> {
        activations_by_day(&self.conn)
    }
}

/// Activations per UTC day (`YYYY-MM-DD`), oldest first, over every item the
/// journal holds: the journal spans nightly runs, so this is its history.
pub(super) fn activations_by_day(conn: &Connection) -> Result<Vec<(String, u64)>, JournalError> {
    let mut stmt = conn.prepare(
        "SELECT substr(activated_at, 1, 10) AS day, COUNT(*) FROM items
         WHERE activated_at IS NOT NULL AND activated_at <> '' GROUP BY day ORDER BY day",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The last finished run, with what `refleet report` makes its page from.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRun {
    pub id: i64,
    pub finished_at: String,
    /// The run's `summary.json`, as it wrote it.
    pub summary_json: String,
    /// The run's `quotes.json`; `[]` for a run that kept none.
    pub quotes_json: String,
}

/// The last run that finished and left its `summary.json` and quotes, so a
/// report can be made from the journal alone (`refleet report`).
fn last_finished_run(conn: &Connection) -> Result<Option<FinishedRun>, JournalError> {
    let row = conn
        .query_row(
            "SELECT id, finished_at, summary_json, COALESCE(quotes_json, '[]') FROM runs
             WHERE finished_at IS NOT NULL AND summary_json IS NOT NULL
             ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    Ok(
        row.map(|(id, finished_at, summary_json, quotes_json)| FinishedRun {
            id,
            finished_at,
            summary_json,
            quotes_json,
        }),
    )
}
