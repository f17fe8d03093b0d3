//! Support cases: the items that need one, and the case opened for each.

use rusqlite::params;

use super::ledger::CaseLedger;
use super::{CaseToOpen, Journal, JournalError};
use crate::api;

impl CaseLedger for Journal {
    fn cases_to_open(&self) -> Result<Vec<CaseToOpen>, JournalError> {
        let rows = self
            .conn
            .prepare(
                "SELECT i.event_key, i.contract_id, COALESCE(i.request_id, b.request_id),
                        i.serial_number, i.license_id, i.state, i.reason
                 FROM items i LEFT JOIN batches b ON b.id = i.batch_id
                 WHERE i.state IN ('failed', 'manual_review') AND i.case_id IS NULL
                 ORDER BY i.rowid",
            )?
            .query_map([], |r| {
                let state: String = r.get(5)?;
                let reason: Option<String> = r.get(6)?;
                Ok(CaseToOpen {
                    event_key: r.get(0)?,
                    request: api::CaseRequest {
                        item_key: r.get(0)?,
                        contract_id: r.get(1)?,
                        request_id: r.get(2)?,
                        serial_number: r.get(3)?,
                        license_id: r.get(4)?,
                        reason: if state == "manual_review" {
                            "MANUAL_REVIEW".into()
                        } else {
                            reason.unwrap_or_else(|| "FAILED".into())
                        },
                    },
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn case_opened(&self, event_key: &str, case_id: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE items SET state = 'escalated', case_id = ?2 WHERE event_key = ?1",
            params![event_key, case_id],
        )?;
        Ok(())
    }
}
