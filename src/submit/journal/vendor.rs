//! What the vendor already holds: items looked up before paying or while
//! tracking, and a run's items by who buys them.

use rusqlite::params;

use super::columns::{features_bits, fmt_time};
use super::ledger::VendorLedger;
use super::{ItemState, Journal, JournalError, LookupPurpose, LookupTarget, RunSplit};
use crate::api;

impl VendorLedger for Journal {
    fn to_look_up(
        &self,
        purpose: LookupPurpose,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LookupTarget>, JournalError> {
        let sql = match purpose {
            LookupPurpose::BeforePaying => {
                "SELECT rowid, event_key, item_type, serial_number, license_id, contract_id,
                        deactivated_at
                 FROM items WHERE state = 'planned' AND rowid > ?1 ORDER BY rowid LIMIT ?2"
            }
            LookupPurpose::Track => {
                "SELECT rowid, event_key, item_type, serial_number, license_id, contract_id,
                        deactivated_at
                 FROM items WHERE source = 'vendor' AND state IN ('accepted', 'provisioning')
                      AND rowid > ?1 ORDER BY rowid LIMIT ?2"
            }
        };
        let rows = self
            .conn
            .prepare_cached(sql)?
            .query_map(params![after, limit as i64], |r| {
                let item_type: String = r.get(2)?;
                let (serial, license): (Option<String>, Option<String>) = (r.get(3)?, r.get(4)?);
                Ok(LookupTarget {
                    rowid: r.get(0)?,
                    event_key: r.get(1)?,
                    item: api::LookupItem {
                        serial_number: if item_type == "license" { None } else { serial },
                        license_id: if item_type == "license" {
                            license
                        } else {
                            None
                        },
                        contract_id: r.get(5)?,
                    },
                    deactivated_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn record_vendor(
        &self,
        event_key: &str,
        record: &api::VendorRecord,
    ) -> Result<bool, JournalError> {
        let state = ItemState::of_vendor(record.state);
        let features = record.features_verified.map(|f| features_bits(&f));
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE items SET state = ?1, source = 'vendor', request_id = ?2,
                     confirmation_id = ?3, features = ?4, activated_at = ?5,
                     eta = COALESCE(?6, eta), reason = ?7
                 WHERE event_key = ?8
                   AND (state = 'planned'
                        OR (source = 'vendor' AND state IN ('accepted', 'provisioning')))",
            )?
            .execute(params![
                state.as_str(),
                record.request_id,
                record.confirmation_id,
                features,
                record.activated_at.map(fmt_time),
                record.eta.map(|d| d.to_string()),
                record.reason,
                event_key,
            ])?;
        Ok(changed > 0)
    }

    fn not_to_buy(&self, run_id: i64) -> Result<std::collections::HashSet<String>, JournalError> {
        let rows = self
            .conn
            .prepare(
                "SELECT CASE WHEN item_type = 'license' THEN license_id ELSE serial_number END
                 FROM items WHERE last_run = ?1 AND state NOT IN ('planned', 'manual_review')",
            )?
            .query_map([run_id], |r| r.get::<_, Option<String>>(0))?
            .filter_map(|r| r.transpose())
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn run_split(&self, run_id: i64) -> Result<RunSplit, JournalError> {
        let split = self.conn.query_row(
            "SELECT COALESCE(SUM(state = 'planned'), 0),
                    COALESCE(SUM(source IS NULL AND state NOT IN ('planned', 'manual_review')), 0),
                    COALESCE(SUM(source = 'vendor'), 0)
             FROM items WHERE last_run = ?1",
            [run_id],
            |r| {
                Ok(RunSplit {
                    to_buy: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                    earlier_runs: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                    vendor_held: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                })
            },
        )?;
        Ok(split)
    }

    fn release_vendor(&self, event_key: &str) -> Result<bool, JournalError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE items SET state = 'planned', source = NULL, request_id = NULL,
                     confirmation_id = NULL, features = NULL, activated_at = NULL, eta = NULL,
                     reason = NULL
                 WHERE event_key = ?1 AND source = 'vendor' AND state IN ('accepted', 'provisioning')",
            )?
            .execute([event_key])?;
        Ok(changed > 0)
    }
}
