//! Planning: the items a run means to send, and the quotes their batches
//! go under.

use rusqlite::params;

use super::columns::{coverage_str, item_type_str};
use super::ledger::PlanLedger;
use super::{ItemState, Journal, JournalError, PlannedItem};

impl PlanLedger for Journal {
    fn plan_items(
        &self,
        items: &[PlannedItem],
        state: ItemState,
        run_id: i64,
    ) -> Result<(), JournalError> {
        // One prepared statement for them all, inside the caller's
        // transaction (see `atomically`).
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO items (event_key, item_type, serial_number, mac_address, model,
                license_id, bound_serial, contract_id, region, country, deactivated_at, coverage,
                state, first_run, last_run)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
             ON CONFLICT (event_key) DO UPDATE SET last_run = excluded.last_run",
        )?;
        for item in items {
            stmt.execute(params![
                item.event_key,
                item_type_str(item.item_type),
                item.serial_number,
                item.mac_address,
                item.model,
                item.license_id,
                item.bound_serial,
                item.contract_id,
                item.region,
                item.country,
                item.deactivated_at,
                coverage_str(item.coverage),
                state.as_str(),
                run_id,
            ])?;
        }
        Ok(())
    }

    fn set_quote(
        &self,
        contract_id: &str,
        region: &str,
        quote_id: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO quotes (contract_id, region, quote_id) VALUES (?1, ?2, ?3)",
            params![contract_id, region, quote_id],
        )?;
        Ok(())
    }
}
