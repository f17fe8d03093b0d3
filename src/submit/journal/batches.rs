//! Batches: formed from planned items and on disk before they are sent,
//! then their answers, losses, re-sends and HTTP attempts.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::columns::{coverage_str, now, parse_coverage, read_planned};
use super::ledger::BatchLedger;
use super::ledger::RunLedger;
use super::{Batch, BatchGroup, BatchItem, ItemState, Journal, JournalError, PlannedItem};
use crate::api;

impl BatchLedger for Journal {
    fn unsent_batches(&self) -> Result<Vec<Batch>, JournalError> {
        let ids: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM batches WHERE state = 'submitted' ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.into_iter().map(|id| self.load_batch(id)).collect()
    }

    fn next_batch(&self, max: usize) -> Result<Option<Batch>, JournalError> {
        // Both through indexes: the first planned item by `items_state`
        // (ordered by rowid within a state), its group's planned items by
        // the partial index `items_planned`, so forming a batch costs the
        // same at the end of a million items as at the start.
        let first: Option<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT contract_id, region FROM items INDEXED BY items_state
                 WHERE state = 'planned' ORDER BY rowid LIMIT 1",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((contract_id, region)) = first else {
            return Ok(None);
        };
        let planned: Vec<(i64, PlannedItem)> = self
            .conn
            .prepare_cached(
                "SELECT event_key, item_type, serial_number, mac_address, model, license_id,
                        bound_serial, contract_id, region, country, deactivated_at, coverage, rowid
                 FROM items INDEXED BY items_planned
                 WHERE state = 'planned' AND contract_id = ?1 AND region = ?2
                 ORDER BY rowid LIMIT ?3",
            )?
            .query_map(params![contract_id, region, max as i64], |r| {
                Ok((r.get(12)?, read_planned(r)?))
            })?
            .collect::<Result<_, _>>()?;
        let Some((_, head)) = planned.first() else {
            return Ok(None);
        };
        let coverage = head.coverage;
        let quote_id: String = self
            .conn
            .prepare_cached("SELECT quote_id FROM quotes WHERE contract_id = ?1 AND region = ?2")?
            .query_row(params![contract_id, region], |r| r.get(0))
            .optional()?
            .unwrap_or_default();
        let key = api::batch_key(planned.iter().map(|(_, p)| p.event_key.as_str()));
        let tx = &self.conn;
        let id = self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            tx.prepare_cached(
                "INSERT INTO batches (idem_key, contract_id, region, quote_id, coverage, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'submitted', ?6, ?6)",
            )?
            .execute(params![key, contract_id, region, quote_id, coverage_str(coverage), at])?;
            let id = tx.last_insert_rowid();
            let mut upd = tx.prepare_cached(
                "UPDATE items SET state = 'submitted', batch_id = ?1, batch_pos = ?2
                 WHERE rowid = ?3",
            )?;
            for (pos, (rowid, _)) in planned.iter().enumerate() {
                upd.execute(params![id, pos as i64, rowid])?;
            }
            Ok(id)
        })?;
        let group = BatchGroup {
            contract_id,
            region,
            quote_id,
            coverage,
        };
        Ok(Some(Batch::of(
            id,
            key,
            group,
            planned.iter().map(|(_, p)| p),
        )))
    }

    fn batch_accepted(
        &self,
        batch: &Batch,
        attempts: u32,
        answer: &api::ReactivationAccepted,
    ) -> Result<(), JournalError> {
        let pos: std::collections::HashMap<&str, i64> = batch
            .request
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.item_key.as_str(), i as i64))
            .collect();
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            // A re-sent batch answered under a new request id is a new order
            // for the audit log.
            tx.prepare_cached(
                "UPDATE batches SET state = 'accepted', request_id = ?2, attempts = attempts + ?3,
                     last_error = NULL, updated_at = ?4,
                     audited = CASE WHEN request_id IS ?2 THEN audited ELSE 0 END
                 WHERE id = ?1",
            )?
            .execute(params![batch.id, answer.request_id, attempts, at])?;
            // Only items waiting for this answer: those of a re-sent batch
            // that the vendor had already settled keep their state.
            let mut upd = tx.prepare_cached(
                "UPDATE items SET state = ?1, reason = ?2, eta = ?3
                 WHERE batch_id = ?4 AND batch_pos = ?5 AND state = 'submitted'",
            )?;
            for d in &answer.items {
                let Some(&p) = pos.get(d.item_key.as_str()) else {
                    continue;
                };
                let state = match d.status {
                    api::Decision::Accepted => ItemState::Accepted,
                    api::Decision::Rejected => ItemState::Rejected,
                };
                upd.execute(params![
                    state.as_str(),
                    d.reason,
                    d.eta.map(|e| e.to_string()),
                    batch.id,
                    p
                ])?;
            }
            Ok(())
        })
    }

    fn batch_refused(
        &self,
        batch_id: i64,
        attempts: u32,
        reason: &str,
    ) -> Result<(), JournalError> {
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            tx.execute(
                "UPDATE batches SET state = 'refused', attempts = attempts + ?2, last_error = ?3,
                 updated_at = ?4 WHERE id = ?1",
                params![batch_id, attempts, reason, at],
            )?;
            tx.execute(
                "UPDATE items SET state = 'failed', reason = ?2 WHERE batch_id = ?1",
                params![batch_id, reason],
            )?;
            Ok(())
        })?;
        Ok(())
    }

    fn batch_unanswered(
        &self,
        batch_id: i64,
        attempts: u32,
        error: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE batches SET attempts = attempts + ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
            params![batch_id, attempts, error, now()],
        )?;
        Ok(())
    }

    fn batch_never_sent(&self, batch_id: i64, run_id: i64) -> Result<bool, JournalError> {
        // Attempts are logged when a call ends: a batch an earlier run
        // formed may have left before a crash that logged nothing, so only
        // this run's batches are judged by their attempts.
        let judged: Option<i64> = self
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM attempts
                         WHERE kind = 'submit' AND target = 'batch ' || b.id
                           AND (status IS NOT NULL OR error IS NOT ?2))
                 FROM batches b
                 WHERE b.id = ?1 AND b.state = 'submitted'
                   AND b.created_at >= (SELECT started_at FROM runs WHERE id = ?3)",
                params![batch_id, crate::submit::client::NOT_CONNECTED, run_id],
                |r| r.get(0),
            )
            .optional()?;
        if judged != Some(0) {
            return Ok(false);
        }
        self.atomically(|| -> Result<bool, JournalError> {
            self.conn
                .execute("DELETE FROM batches WHERE id = ?1", [batch_id])?;
            self.conn.execute(
                "UPDATE items SET state = 'planned', batch_id = NULL, batch_pos = NULL
                 WHERE batch_id = ?1",
                [batch_id],
            )?;
            Ok(true)
        })
    }

    fn batch_items(&self, batch_id: i64) -> Result<Vec<BatchItem>, JournalError> {
        let mut items = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT event_key, batch_pos, state FROM items WHERE batch_id = ?1 ORDER BY batch_pos",
        )?;
        let mut rows = stmt.query([batch_id])?;
        while let Some(r) = rows.next()? {
            let state: String = r.get(2)?;
            items.push(BatchItem {
                event_key: r.get(0)?,
                pos: r.get(1)?,
                state: ItemState::parse(&state)
                    .ok_or_else(|| JournalError::BadState(self.path.clone(), state))?,
            });
        }
        Ok(items)
    }

    fn record_loss(&self, run_id: i64, batch_id: i64, why: &str) -> Result<u32, JournalError> {
        let target = format!("batch {batch_id}");
        self.record_attempt(run_id, Utc::now(), "lost", &target, None, Some(why), 0)?;
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM attempts WHERE kind = 'lost' AND target = ?1",
            [&target],
            |r| r.get(0),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn batch_resend(&self, batch_id: i64, why: &str) -> Result<Batch, JournalError> {
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            tx.execute(
                "UPDATE batches SET state = 'submitted', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![batch_id, why, at],
            )?;
            tx.execute(
                "UPDATE items SET state = 'submitted', reason = NULL, eta = NULL
                 WHERE batch_id = ?1 AND state IN ('submitted', 'accepted', 'provisioning', 'rejected')",
                [batch_id],
            )?;
            Ok(())
        })?;
        self.load_batch(batch_id)
    }

    fn batch_lost(&self, batch_id: i64, reason: &str, why: &str) -> Result<(), JournalError> {
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            tx.execute(
                "UPDATE batches SET state = 'lost', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![batch_id, why, at],
            )?;
            tx.execute(
                "UPDATE items SET state = 'failed', reason = ?2
                 WHERE batch_id = ?1 AND state IN ('submitted', 'accepted', 'provisioning')",
                params![batch_id, reason],
            )?;
            Ok(())
        })
    }

    fn record_attempt(
        &self,
        run_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        target: &str,
        status: Option<u16>,
        error: Option<&str>,
        millis: u64,
    ) -> Result<(), JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO attempts (run_id, at, kind, target, status, error, millis)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        stmt.execute(params![
            run_id,
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kind,
            target,
            status,
            error,
            millis as i64
        ])?;
        Ok(())
    }
}

impl Journal {
    fn load_batch(&self, id: i64) -> Result<Batch, JournalError> {
        let (idem, contract_id, region, quote_id, coverage): (
            String,
            String,
            String,
            String,
            String,
        ) = self.conn.query_row(
            "SELECT idem_key, contract_id, region, quote_id, coverage FROM batches WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
        let items = self
            .conn
            .prepare_cached(
                "SELECT event_key, item_type, serial_number, mac_address, model, license_id,
                        bound_serial, contract_id, region, country, deactivated_at, coverage
                 FROM items WHERE batch_id = ?1 ORDER BY batch_pos",
            )?
            .query_map([id], read_planned)?
            .map(|r| r.map(|p| p.to_request_item()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch {
            id,
            idempotency_key: idem,
            request: api::ReactivationRequest {
                contract_id,
                region,
                quote_id,
                coverage: parse_coverage(&coverage),
                items,
            },
        })
    }
}
