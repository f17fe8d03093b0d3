//! What the journal's tests share: a planned item, a journal of planned
//! items, SQL run on a journal file.

use std::path::Path;

use chrono::NaiveDate;
use rusqlite::Connection;

use super::{ItemState, Journal, JournalError, PlannedItem};
use super::{PlanLedger, RunLedger};
use crate::api::{CoverageWire, ItemType};

pub(super) fn item(key: &str, contract: &str, region: &str) -> PlannedItem {
    PlannedItem {
        event_key: key.into(),
        item_type: ItemType::Device,
        serial_number: Some(key.into()),
        mac_address: None,
        model: Some("CCX 500".into()),
        license_id: None,
        bound_serial: None,
        contract_id: contract.into(),
        region: region.into(),
        country: "US".into(),
        deactivated_at: "2026-01-01".into(),
        coverage: CoverageWire::Standard,
    }
}

/// A journal holding `n` planned items, closed.
pub(super) fn journal_of(path: &Path, n: usize) {
    let j = Journal::open(path).unwrap();
    let run = j
        .begin_run("x.csv", NaiveDate::from_ymd_opt(2026, 1, 2).unwrap())
        .unwrap();
    j.atomically(|| -> Result<(), JournalError> {
        for i in 0..n {
            j.plan_item(
                &item(&format!("K{i:06}"), "C1", "AMER"),
                ItemState::Planned,
                run,
            )?;
        }
        Ok(())
    })
    .unwrap();
}

pub(super) fn sql(path: &Path, statements: &str) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(statements).unwrap();
}
