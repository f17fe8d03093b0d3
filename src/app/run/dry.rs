//! A dry run on a journal that holds no item changes nothing in it: its
//! `results.csv` is written as the plan goes ([`UnknownResults`]), and the
//! eligible items it would look up at the vendor are kept in memory
//! ([`HeldInMemory`]), not planned into the journal.

use super::RunProgress;
use crate::app::{make_plan, PlanSettings, Planned};
use crate::contracts::Contracts;
use crate::domain::{ItemKind, Reject};
use crate::plan::{ItemLine, Judged, PlanSink};
use crate::policy::Policy;
use crate::report::{ResultCounts, UnknownItems, UnknownResults};
use crate::submit::held::HeldInMemory;

/// Makes the plan and writes `results.csv` as it goes; with `to_look_up`,
/// every eligible item goes there too, in plan order.
pub fn plan_read_only(
    plan: &mut PlanSettings,
    (policy, contracts): (&Policy, &Contracts),
    items: UnknownItems,
    to_look_up: Option<&mut HeldInMemory>,
    progress: &dyn RunProgress,
) -> anyhow::Result<(ResultCounts, Planned)> {
    let mut results = UnknownResults::create(&plan.out, items)?;
    let planned = match to_look_up {
        None => make_plan(plan, policy, contracts, progress, Some(&mut results), None)?,
        Some(book) => {
            let mut sink = Eligible {
                results: &mut results,
                book,
            };
            make_plan(plan, policy, contracts, progress, Some(&mut sink), None)?
        }
    };
    Ok((results.commit()?, planned))
}

/// Passes the plan on to `results`, and every eligible item to `book`.
struct Eligible<'a> {
    results: &'a mut UnknownResults,
    book: &'a mut HeldInMemory,
}

impl PlanSink for Eligible<'_> {
    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()> {
        self.results.verdict(judged)?;
        if judged.verdict.eligible() {
            let item = anyhow::Context::context(
                judged.item,
                "the plan did not keep the item the lookups need",
            )?;
            // Each eligible item once: duplicates are rejected rows.
            self.book.push(
                item.row,
                judged.key,
                item.kind == ItemKind::License,
                &item.contract_id,
                &item.deactivated_at.to_string(),
                &item.site,
            );
        }
        Ok(())
    }

    fn wants_items(&self) -> bool {
        true
    }

    fn result_lines(&self) -> Option<Box<dyn ItemLine>> {
        self.results.result_lines()
    }

    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()> {
        self.results.reject(reject)
    }

    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()> {
        self.results.warning(warning)
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.book.clear();
        self.results.restart()
    }
}
