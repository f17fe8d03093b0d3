//! The run's plan into the journal: its folder, the planned items and the spooled rows of `results.csv`.

use std::path::PathBuf;

use super::RunProgress;
use crate::api::{CoverageWire, ItemType};
use crate::app::{make_plan, PlanSettings, Planned};
use crate::contracts::Contracts;
use crate::domain::{Coverage, Item, ItemKind};
use crate::policy::Policy;
use crate::report::{PlannedKind, ResultCounts, RowSpool};
use crate::submit::journal::{ItemState, PlannedItem};
use crate::submit::journal::{PlanLedger, RunLedger};

/// The folder of the journal, where its audit log lives.
pub fn journal_dir(state: &std::path::Path) -> PathBuf {
    state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf()
}

/// `results.csv`'s rows: spooled, to be joined with the journal at the
/// end, or already written.
pub enum Rows {
    Spooled(tempfile::NamedTempFile),
    Written(ResultCounts),
}

/// Items handed to the ledger at once (see [`PlanLedger::plan_items`]).
const PLAN_CHUNK: usize = 5_000;

/// Makes the plan, puts its eligible and manual-review items into the
/// journal in bulk (one transaction), and spools every row for
/// `results.csv`.
pub fn plan_into_journal(
    journal: &(impl PlanLedger + RunLedger),
    run_id: i64,
    plan: &mut PlanSettings,
    (policy, contracts): (&Policy, &Contracts),
    escalate: bool,
    progress: &dyn RunProgress,
) -> anyhow::Result<(tempfile::NamedTempFile, Planned)> {
    journal.atomically(|| -> anyhow::Result<_> {
        // Items waiting to go in, by the state they go in with.
        let pending: std::cell::RefCell<[Vec<PlannedItem>; 2]> = Default::default();
        let flush = |pending: &mut [Vec<PlannedItem>; 2], min: usize| {
            for (items, state) in pending
                .iter_mut()
                .zip([ItemState::Planned, ItemState::ManualReview])
            {
                if !items.is_empty() && items.len() >= min {
                    journal.plan_items(items, state, run_id)?;
                    items.clear();
                }
            }
            anyhow::Ok(())
        };
        let on_planned = |item: &Item,
                          event: &str,
                          _: &crate::eligibility::Verdict,
                          kind: PlannedKind|
         -> anyhow::Result<()> {
            let slot = match kind {
                PlannedKind::Eligible => 0,
                PlannedKind::ManualReview if escalate => 1,
                PlannedKind::ManualReview => return Ok(()),
            };
            let mut pending = pending.borrow_mut();
            pending[slot].push(planned_item(item, event, contracts));
            flush(&mut pending, PLAN_CHUNK)
        };
        let mut spool = RowSpool::create(&plan.out, Box::new(on_planned))?;
        let planned = make_plan(plan, policy, contracts, progress, Some(&mut spool), None)?;
        let spooled = spool.finish()?;
        flush(&mut pending.borrow_mut(), 0)?;
        Ok((spooled, planned))
    })
}

/// What the journal needs to rebuild an item's request.
pub fn planned_item(item: &Item, event: &str, contracts: &Contracts) -> PlannedItem {
    let coverage = match contracts.by_id.get(&item.contract_id).map(|c| c.coverage) {
        Some(Coverage::Extended) => CoverageWire::Extended,
        _ => CoverageWire::Standard,
    };
    PlannedItem {
        event_key: event.to_string(),
        item_type: match item.kind {
            ItemKind::License => ItemType::License,
            ItemKind::Device => ItemType::Device,
        },
        serial_number: item.serial.map(|s| s.to_string()),
        mac_address: item.mac.map(|m| m.to_string()),
        model: (!item.model_text.is_empty()).then(|| item.model_text.to_string()),
        license_id: item.license_id.map(|l| l.to_string()),
        bound_serial: item.bound_serial.map(|s| s.to_string()),
        contract_id: item.contract_id.to_string(),
        region: item.region.as_str().to_string(),
        country: item.country.as_str().to_string(),
        deactivated_at: item.deactivated_at.to_string(),
        coverage,
    }
}
