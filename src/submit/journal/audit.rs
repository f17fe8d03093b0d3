//! The journal's side of the audit log: what the log does not have yet,
//! marking what it holds, and what the journal knows of the log.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::columns::features_text;
use super::file::unusable;
use super::ledger::AuditLedger;
use super::ledger::RunLedger;
use super::{Journal, JournalError};

/// An activation or a case the audit log does not have yet.
#[derive(Debug, Clone)]
pub struct AuditItem {
    pub rowid: i64,
    pub event_key: String,
    pub state: String,
    pub item_type: String,
    pub serial_number: Option<String>,
    pub license_id: Option<String>,
    pub contract_id: String,
    pub region: String,
    pub quote_id: String,
    pub request_id: Option<String>,
    pub confirmation_id: Option<String>,
    pub features: Option<String>,
    pub activated_at: Option<String>,
    pub case_id: Option<String>,
    pub reason: Option<String>,
    /// The vendor held it already (a lookup found it): not bought by this journal.
    pub vendor_record: bool,
}

/// An accepted request (an order) the audit log does not have yet.
#[derive(Debug, Clone)]
pub struct AuditOrder {
    pub batch_id: i64,
    pub idempotency_key: String,
    pub request_id: String,
    pub contract_id: String,
    pub region: String,
    pub quote_id: String,
    pub accepted_at: String,
    pub items: u64,
}

impl AuditLedger for Journal {
    fn audit_state(&self) -> Result<crate::audit::Binding, JournalError> {
        audit_binding(&self.conn, &self.path)
    }

    fn unaudited_items(&self) -> Result<Vec<AuditItem>, JournalError> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT i.rowid, i.event_key, i.state, i.item_type, i.serial_number, i.license_id,
                        i.contract_id, i.region, COALESCE(b.quote_id, ''),
                        COALESCE(i.request_id, b.request_id), i.confirmation_id, i.features,
                        i.activated_at, i.case_id, i.reason, i.source = 'vendor'
                 FROM items i INDEXED BY items_unaudited LEFT JOIN batches b ON b.id = i.batch_id
                 WHERE i.audited = 0 AND i.state IN ('active', 'escalated')
                 ORDER BY i.batch_id, i.rowid",
            )?
            .query_map([], |r| {
                Ok(AuditItem {
                    rowid: r.get(0)?,
                    event_key: r.get(1)?,
                    state: r.get(2)?,
                    item_type: r.get(3)?,
                    serial_number: r.get(4)?,
                    license_id: r.get(5)?,
                    contract_id: r.get(6)?,
                    region: r.get(7)?,
                    quote_id: r.get(8)?,
                    request_id: r.get(9)?,
                    confirmation_id: r.get(10)?,
                    features: r.get::<_, Option<i64>>(11)?.map(features_text),
                    activated_at: r.get(12)?,
                    case_id: r.get(13)?,
                    reason: r.get(14)?,
                    vendor_record: r.get::<_, Option<bool>>(15)?.unwrap_or(false),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn unaudited_orders(&self) -> Result<Vec<AuditOrder>, JournalError> {
        let rows = self
            .conn
            .prepare(
                "SELECT b.id, b.request_id, b.contract_id, b.region, b.quote_id, b.updated_at,
                        (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id AND i.state != 'rejected'),
                        b.idem_key
                 FROM batches b WHERE b.state = 'accepted' AND b.audited = 0 ORDER BY b.id",
            )?
            .query_map([], |r| {
                Ok(AuditOrder {
                    batch_id: r.get(0)?,
                    idempotency_key: r.get(7)?,
                    request_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    contract_id: r.get(2)?,
                    region: r.get(3)?,
                    quote_id: r.get(4)?,
                    accepted_at: r.get(5)?,
                    items: r.get::<_, i64>(6)?.max(0) as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn mark_audited(
        &self,
        rows: &[i64],
        adopted: &[String],
        orders: &[AuditedOrder],
        file: &str,
        state: &crate::audit::ChainState,
    ) -> Result<(), JournalError> {
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let mut by_row = tx.prepare_cached("UPDATE items SET audited = 1 WHERE rowid = ?1")?;
            for r in rows {
                by_row.execute([r])?;
            }
            let mut by_key =
                tx.prepare_cached("UPDATE items SET audited = 1 WHERE event_key = ?1")?;
            for k in adopted {
                by_key.execute([k])?;
            }
            for order in orders {
                let (sql, key) = match order {
                    AuditedOrder::Batch(id) => {
                        tx.prepare_cached("UPDATE batches SET audited = 1 WHERE id = ?1")?
                            .execute([id])?;
                        continue;
                    }
                    AuditedOrder::IdempotencyKey(k) => {
                        ("UPDATE batches SET audited = 1 WHERE idem_key = ?1", k)
                    }
                    AuditedOrder::RequestId(r) => (
                        "UPDATE batches SET audited = 1 WHERE request_id = ?1 AND audited = 0",
                        r,
                    ),
                };
                tx.prepare_cached(sql)?.execute([key])?;
            }
            let mut m =
                tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
            m.execute(params!["audit_file", file])?;
            m.execute(params!["audit_len", state.len.to_string()])?;
            m.execute(params!["audit_records", state.records.to_string()])?;
            m.execute(params!["audit_hash", state.last_hash])?;
            Ok(())
        })
    }
}

/// An order the audit log holds: one just appended (its batch), or one
/// adopted from the log, by the idempotency key its record carries (by its
/// request id for a record from before keys were written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditedOrder {
    Batch(i64),
    IdempotencyKey(String),
    RequestId(String),
}

/// What a journal knows of its audit log, from any connection to it.
pub(super) fn audit_binding(
    conn: &Connection,
    path: &Path,
) -> Result<crate::audit::Binding, JournalError> {
    let get = |k: &str| -> Result<Option<String>, JournalError> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .optional()?)
    };
    let bad = |key: &str, value: &str| {
        unusable(path, format!("is damaged (its meta `{key}` is `{value}`)"))
    };
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let journal_id = match get("journal_id")? {
        Some(id) if hex(&id, 16) => id,
        Some(id) => return Err(bad("journal_id", &id)),
        None => {
            return Err(unusable(
                path,
                "has no journal id yet (open it with `refleet run` once)",
            ))
        }
    };
    // A plain name in the journal's folder, never a path elsewhere.
    let file = match get("audit_file")? {
        Some(f) if Path::new(&f).file_name() == Some(std::ffi::OsStr::new(&f)) => Some(f),
        Some(f) => return Err(bad("audit_file", &f)),
        None => None,
    };
    let mut chain = crate::audit::ChainState::default();
    if let (Some(len), Some(records), Some(hash)) =
        (get("audit_len")?, get("audit_records")?, get("audit_hash")?)
    {
        chain.len = len.parse().map_err(|_| bad("audit_len", &len))?;
        chain.records = records
            .parse()
            .map_err(|_| bad("audit_records", &records))?;
        if !hex(&hash, 64) {
            return Err(bad("audit_hash", &hash));
        }
        chain.last_hash = hash;
    }
    Ok(crate::audit::Binding {
        journal_id,
        file,
        chain,
    })
}
