//! What `refleet status` and `refleet report` read of a shared ledger:
//! every runner's items and runs.

use super::PgJournal;
use crate::submit::journal::{FinishedRun, History, ItemLedger, ItemState, JournalError, RunRow};

/// A time as the SQLite journal writes it: RFC 3339, UTC, milliseconds.
const RFC3339: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'";

impl History for PgJournal {
    /// Every runner's items (no run is begun on a reader).
    fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError> {
        ItemLedger::counts(self)
    }

    fn last_run(&self) -> Result<Option<RunRow>, JournalError> {
        let sql = format!(
            "SELECT id, to_char(started_at AT TIME ZONE 'UTC', {RFC3339}),
                    to_char(finished_at AT TIME ZONE 'UTC', {RFC3339}), outcome
             FROM runs ORDER BY id DESC LIMIT 1"
        );
        let row = self.call(move |c| c.query_opt(&sql, &[]))?;
        Ok(row.map(|r| RunRow {
            id: r.get(0),
            started_at: r.get(1),
            finished_at: r.get(2),
            outcome: r.get(3),
        }))
    }

    fn recent_rate(&self, run_id: i64) -> Result<Option<f64>, JournalError> {
        let row = self.call(move |c| {
            c.query_one(
                "SELECT COUNT(*), COALESCE(EXTRACT(EPOCH FROM MAX(at) - MIN(at))::float8, 0)
                 FROM attempts WHERE run_id = $1
                   AND at >= (SELECT MAX(at) FROM attempts WHERE run_id = $1) - interval '60 s'",
                &[&run_id],
            )
        })?;
        let (requests, span): (i64, f64) = (row.get(0), row.get(1));
        Ok((requests > 1 && span > 0.0).then(|| requests as f64 / span))
    }

    fn last_finished_run(&self) -> Result<Option<FinishedRun>, JournalError> {
        let sql = format!(
            "SELECT id, to_char(finished_at AT TIME ZONE 'UTC', {RFC3339}), summary_json,
                    COALESCE(quotes_json, '[]')
             FROM runs WHERE finished_at IS NOT NULL AND summary_json IS NOT NULL
             ORDER BY id DESC LIMIT 1"
        );
        let row = self.call(move |c| c.query_opt(&sql, &[]))?;
        Ok(row.map(|r| FinishedRun {
            id: r.get(0),
            finished_at: r.get(1),
            summary_json: r.get(2),
            quotes_json: r.get(3),
        }))
    }

    fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError> {
        ItemLedger::activations_by_day(self)
    }
}
