//! The audit log of a shared ledger: one hash chain in the database, which
//! every runner extends. What is settled and not yet in it is read, its
//! records are made by the caller (`report::trail`), then appended and
//! marked in one transaction holding the chain's head: a runner that finds
//! some of them marked by another meanwhile appends nothing and reads again,
//! so no activation is recorded twice and the chain never forks.

use serde_json::{Map, Value};

use super::PgJournal;
use crate::audit::{Binding, ChainState};
use crate::submit::journal::{
    features_text, AuditItem, AuditLedger, AuditOrder, AuditedOrder, JournalError,
};
use crate::submit::pg::chain::extend;

impl AuditLedger for PgJournal {
    /// The ledger's id and where its chain stands; no file.
    fn audit_state(&self) -> Result<Binding, JournalError> {
        let row = self.call(|c| {
            c.query_one(
                "SELECT (SELECT value FROM refleet_meta WHERE key = 'ledger_id'), seq, hash
                 FROM audit_head",
                &[],
            )
        })?;
        Ok(Binding {
            journal_id: row.get(0),
            file: None,
            chain: ChainState {
                len: 0,
                records: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                last_hash: row.get(2),
            },
        })
    }

    fn unaudited_items(&self) -> Result<Vec<AuditItem>, JournalError> {
        let rows = self.call(|c| {
            c.query(
                "SELECT i.seq, i.event_key, i.state, i.item_type, i.serial_number, i.license_id,
                        i.contract_id, i.region, COALESCE(b.quote_id, ''),
                        COALESCE(i.request_id, b.request_id), i.confirmation_id, i.features,
                        i.activated_at, i.case_id, i.reason, i.source = 'vendor'
                 FROM items i LEFT JOIN batches b ON b.id = i.batch_id
                 WHERE NOT i.audited AND i.state IN ('active', 'escalated')
                 ORDER BY i.batch_id NULLS FIRST, i.seq",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| AuditItem {
                rowid: r.get(0),
                event_key: r.get(1),
                state: r.get(2),
                item_type: r.get(3),
                serial_number: r.get(4),
                license_id: r.get(5),
                contract_id: r.get(6),
                region: r.get(7),
                quote_id: r.get(8),
                request_id: r.get(9),
                confirmation_id: r.get(10),
                features: r.get::<_, Option<i32>>(11).map(|f| features_text(f.into())),
                activated_at: r.get(12),
                case_id: r.get(13),
                reason: r.get(14),
                vendor_record: r.get::<_, Option<bool>>(15).unwrap_or(false),
            })
            .collect())
    }

    fn unaudited_orders(&self) -> Result<Vec<AuditOrder>, JournalError> {
        let rows = self.call(|c| {
            c.query(
                "SELECT b.id, b.request_id, b.contract_id, b.region, b.quote_id,
                        to_char(b.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id AND i.state <> 'rejected'),
                        b.idempotency_key
                 FROM batches b WHERE b.state = 'accepted' AND NOT b.audited ORDER BY b.id",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| AuditOrder {
                batch_id: r.get(0),
                idempotency_key: r.get(7),
                request_id: r.get::<_, Option<String>>(1).unwrap_or_default(),
                contract_id: r.get(2),
                region: r.get(3),
                quote_id: r.get(4),
                accepted_at: r.get(5),
                items: u64::try_from(r.get::<_, i64>(6)).unwrap_or(0),
            })
            .collect())
    }

    /// Marks items and orders only: a ledger's chain has no file, and
    /// [`AuditLedger::append_chain`] marks what it appends.
    fn mark_audited(
        &self,
        rows: &[i64],
        adopted: &[String],
        orders: &[AuditedOrder],
        _file: &str,
        _state: &ChainState,
    ) -> Result<(), JournalError> {
        let (rows, adopted) = (rows.to_vec(), adopted.to_vec());
        let batches: Vec<i64> = orders
            .iter()
            .filter_map(|o| match o {
                AuditedOrder::Batch(id) => Some(*id),
                _ => None,
            })
            .collect();
        self.in_transaction(move |c| {
            c.execute(
                "UPDATE items SET audited = TRUE WHERE seq = ANY($1) OR event_key = ANY($2)",
                &[&rows, &adopted],
            )?;
            c.execute(
                "UPDATE batches SET audited = TRUE WHERE id = ANY($1)",
                &[&batches],
            )
        })?;
        Ok(())
    }

    fn chain_in_ledger(&self) -> bool {
        true
    }

    fn append_chain(
        &self,
        records: Vec<Map<String, Value>>,
        rows: &[i64],
        batches: &[i64],
    ) -> Result<Option<u64>, JournalError> {
        let (rows, batches) = (rows.to_vec(), batches.to_vec());
        let label = self.label.clone();
        self.in_transaction(move |c| {
            let head = c.query_one("SELECT seq, hash FROM audit_head FOR UPDATE", &[])?;
            // Holding the head, what another runner appended is committed
            // and visible: whatever it marked is not ours to append.
            let items = c.execute(
                "UPDATE items SET audited = TRUE WHERE seq = ANY($1) AND NOT audited",
                &[&rows],
            )?;
            let orders = c.execute(
                "UPDATE batches SET audited = TRUE WHERE id = ANY($1) AND NOT audited",
                &[&batches],
            )?;
            if items != rows.len() as u64 || orders != batches.len() as u64 {
                return Err(JournalError::Shared(Box::new(Raced)));
            }
            let formed = extend(
                &c.ledger.client,
                &label,
                (head.get(0), head.get(1)),
                records.clone(),
            );
            Ok(c.rt.block_on(formed)?)
        })
        .map(Some)
        .or_else(|e| match &e {
            JournalError::Shared(inner) if inner.is::<Raced>() => Ok(None),
            _ => Err(e),
        })
    }
}

/// Another runner marked some of the items or orders first.
#[derive(Debug, thiserror::Error)]
#[error("another runner recorded some of these in the audit chain first")]
struct Raced;
