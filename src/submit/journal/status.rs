//! Tracking accepted batches: which are still on their way, and what a
//! status answer says of their items.

use rusqlite::params;

use super::columns::{features_bits, fmt_time};
use super::ledger::RunLedger;
use super::ledger::StatusLedger;
use super::{BatchItem, ItemState, Journal, JournalError, Tracked};
use crate::api;

impl StatusLedger for Journal {
    fn tracked(&self) -> Result<Vec<Tracked>, JournalError> {
        let rows = self
            .conn
            .prepare(
                "SELECT DISTINCT b.id, b.request_id FROM batches b JOIN items i ON i.batch_id = b.id
                 WHERE b.state = 'accepted' AND i.state IN ('accepted', 'provisioning')
                 ORDER BY b.id",
            )?
            .query_map([], |r| {
                Ok(Tracked {
                    batch_id: r.get(0)?,
                    request_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn record_status(
        &self,
        batch_id: i64,
        items: &[BatchItem],
        status: &api::ReactivationStatus,
    ) -> Result<usize, JournalError> {
        let (open, changes) = status_changes(items, status);
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let mut upd = tx.prepare_cached(
                "UPDATE items SET state = ?1, reason = COALESCE(?2, reason), eta = COALESCE(?3, eta),
                     confirmation_id = ?4, features = ?5, activated_at = ?6
                 WHERE batch_id = ?7 AND batch_pos = ?8 AND state IN ('accepted', 'provisioning')",
            )?;
            for (item, state, it) in changes {
                let features = it.features_verified.map(|f| features_bits(&f));
                upd.execute(params![
                    state.as_str(),
                    it.reason,
                    it.eta.map(|e| e.to_string()),
                    it.confirmation_id,
                    features,
                    it.activated_at.map(fmt_time),
                    batch_id,
                    item.pos
                ])?;
            }
            Ok(())
        })?;
        Ok(open)
    }
}

/// What a status answer about a batch whose items are `items` changes:
/// how many of its items are still on their way, and each item whose state
/// it moves, with its new state and the answer's line about it. Lines
/// about items not in the batch change nothing (the caller checked the
/// answer against the batch).
pub(in crate::submit) fn status_changes<'a>(
    items: &'a [BatchItem],
    status: &'a api::ReactivationStatus,
) -> (usize, Vec<(&'a BatchItem, ItemState, &'a api::ItemStatus)>) {
    let known: std::collections::HashMap<&str, &BatchItem> =
        items.iter().map(|i| (i.event_key.as_str(), i)).collect();
    let open = status
        .items
        .iter()
        .filter(|it| !it.state.is_terminal())
        .count();
    let changes = status
        .items
        .iter()
        .filter_map(|it| {
            let item = known.get(it.item_key.as_str())?;
            let state = ItemState::of_vendor(it.state);
            (item.state != state).then_some((*item, state, it))
        })
        .collect();
    (open, changes)
}
