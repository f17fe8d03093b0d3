//! Reading items back: whether there are any, counts by state, and each
//! item's record as a run sees it (for `results.csv`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::columns::features_text;
use super::ledger::{ItemLedger, ItemRecords};
use super::{ItemRecord, ItemState, Journal, JournalError, Source};

impl ItemLedger for Journal {
    type Records<'a> = Records<'a>;

    fn holds_items(&self) -> Result<bool, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM items)", [], |r| r.get(0))?)
    }

    fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError> {
        counts(&self.conn, &self.path)
    }

    fn record(&self, event_key: &str, run_id: i64) -> Result<Option<ItemRecord>, JournalError> {
        self.records(run_id)?.get(event_key)
    }

    fn records(&self, run_id: i64) -> Result<Records<'_>, JournalError> {
        let mut batches = std::collections::HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT id, attempts, created_at >= (SELECT started_at FROM runs WHERE id = ?1),
                    request_id
             FROM batches",
        )?;
        let mut rows = stmt.query([run_id])?;
        while let Some(r) = rows.next()? {
            let attempts: i64 = r.get(1)?;
            let this_run: Option<bool> = r.get(2)?;
            batches.insert(
                r.get::<_, i64>(0)?,
                BatchOfRecord {
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    this_run: this_run.unwrap_or(false),
                    request_id: r.get(3)?,
                },
            );
        }
        let item = self.conn.prepare_cached(
            "SELECT state, reason, request_id, confirmation_id, features, case_id, eta,
                    activated_at, source, batch_id
             FROM items WHERE event_key = ?1",
        )?;
        Ok(Records { item, batches })
    }

    fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError> {
        super::reader::activations_by_day(&self.conn)
    }
}

/// Items by event key, with what their batches say (see [`Journal::records`]).
pub struct Records<'j> {
    item: rusqlite::CachedStatement<'j>,
    batches: std::collections::HashMap<i64, BatchOfRecord>,
}

/// What an item's record takes from its batch.
struct BatchOfRecord {
    attempts: u32,
    /// Sent by the run the records are for.
    this_run: bool,
    request_id: Option<String>,
}

impl ItemRecords for Records<'_> {
    fn get(&mut self, event_key: &str) -> Result<Option<ItemRecord>, JournalError> {
        let batches = &self.batches;
        Ok(self
            .item
            .query_row([event_key], |r| {
                let source: Option<String> = r.get(8)?;
                let batch = r.get::<_, Option<i64>>(9)?.and_then(|id| batches.get(&id));
                let own_request: Option<String> = r.get(2)?;
                Ok(ItemRecord {
                    state: r.get(0)?,
                    reason: r.get(1)?,
                    request_id: own_request.or_else(|| batch.and_then(|b| b.request_id.clone())),
                    confirmation_id: r.get(3)?,
                    features: r.get::<_, Option<i64>>(4)?.map(features_text),
                    case_id: r.get(5)?,
                    attempts: batch.map_or(0, |b| b.attempts),
                    eta: r.get(6)?,
                    activated_at: r.get(7)?,
                    source: match (source.as_deref(), batch) {
                        (Some("vendor"), _) => Source::VendorRecord,
                        (_, None) => Source::NotSent,
                        (_, Some(b)) if b.this_run => Source::ThisRun,
                        (_, Some(_)) => Source::EarlierRun,
                    },
                })
            })
            .optional()?)
    }
}

/// Item counts by state, from any connection to a journal.
pub(super) fn counts(
    conn: &Connection,
    path: &Path,
) -> Result<Vec<(ItemState, u64)>, JournalError> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM items GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        let st = ItemState::parse(&state)
            .ok_or_else(|| JournalError::BadState(path.to_path_buf(), state.clone()))?;
        out.push((st, n.max(0) as u64));
    }
    out.sort();
    Ok(out)
}
