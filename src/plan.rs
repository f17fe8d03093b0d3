//! The plan of a run: validate → eligibility → quotes (SPEC §1–5), as one
//! library stage that `refleet quote` and `refleet run` share.
//!
//! Two passes over the inventory keep memory bounded by the number of
//! eligible devices, never the number of rows: the first finds the eligible
//! devices (a license's verdict depends on them), the second hands every
//! verdict to a [`PlanSink`] in row order and folds eligible items into
//! quotes.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::contracts::Contracts;
use crate::domain::{Item, ItemKind};
use crate::eligibility::{self, EligibleDevices, Verdict};
use crate::ingest::Opened;
use crate::policy::Policy;
use crate::progress::{NoProgress, Progress};
use crate::quote::{Quote, QuoteBuilder};
use crate::validate::{self, Reject, ValidateSink, ValidateStats, Validator};

/// Receives the plan in row order.
pub trait PlanSink {
    /// Every valid item with its verdict; `eta` is set for eligible items.
    fn verdict(
        &mut self,
        item: &Item,
        key: &str,
        verdict: &Verdict,
        eta: Option<NaiveDate>,
    ) -> anyhow::Result<()>;
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()>;
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()>;
}

/// What the plan adds up to.
#[derive(Debug)]
pub struct Plan {
    pub stats: ValidateStats,
    pub quotes: Vec<Quote>,
    pub eligible: u64,
    pub ineligible: u64,
    pub by_reason: BTreeMap<&'static str, u64>,
}

/// Where the plan reads from and what it decides with.
pub struct PlanContext<'a> {
    pub contracts: &'a Contracts,
    pub policy: &'a Policy,
    pub as_of: NaiveDate,
    pub pool: &'a rayon::ThreadPool,
}

/// Runs both passes. `open` opens the inventory afresh each time it is
/// called (it is called twice); `validator` must match its headers.
pub fn plan(
    ctx: &PlanContext<'_>,
    open: &mut dyn FnMut() -> anyhow::Result<Opened>,
    validator: &Validator<'_>,
    sink: &mut dyn PlanSink,
    progress: &dyn Progress,
) -> anyhow::Result<Plan> {
    let opened = open()?;
    let expected = expected_rows(&opened);
    let mut pass1 = EligibleDeviceSink {
        ctx,
        none: EligibleDevices::new(),
        eligible: EligibleDevices::new(),
    };
    validate::run(
        opened.source,
        validator,
        ctx.pool,
        expected,
        &mut pass1,
        &NoProgress,
    )?;
    let eligible_devices = pass1.eligible;

    let opened = open()?;
    let mut pass2 = VerdictSink {
        ctx,
        eligible_devices: &eligible_devices,
        sink,
        builder: QuoteBuilder::new(&ctx.contracts.by_id, ctx.policy),
        eligible: 0,
        ineligible: 0,
        by_reason: BTreeMap::new(),
    };
    progress.start(opened.total_bytes, opened.bytes_read.clone());
    let stats = validate::run(
        opened.source,
        validator,
        ctx.pool,
        expected,
        &mut pass2,
        progress,
    )?;
    progress.finish();
    let VerdictSink {
        builder,
        eligible,
        ineligible,
        by_reason,
        ..
    } = pass2;
    let quotes = builder.finish(ctx.as_of)?;
    Ok(Plan {
        stats,
        quotes,
        eligible,
        ineligible,
        by_reason,
    })
}

/// A guess of the row count from the file size, to pre-size indexes.
fn expected_rows(opened: &Opened) -> usize {
    opened
        .total_bytes
        .map_or(0, |b| (b / 130) as usize)
        .min(50_000_000)
}

/// Pass 1: the serials of the eligible devices.
struct EligibleDeviceSink<'a> {
    ctx: &'a PlanContext<'a>,
    none: EligibleDevices,
    eligible: EligibleDevices,
}

impl ValidateSink for EligibleDeviceSink<'_> {
    fn item(&mut self, item: Item) -> anyhow::Result<()> {
        if item.kind == ItemKind::Device {
            let v = eligibility::evaluate(
                &item,
                self.ctx.contracts.by_id.get(&item.contract_id),
                self.ctx.policy,
                self.ctx.as_of,
                &self.none,
            );
            if let (true, Some(s)) = (v.eligible(), item.serial) {
                self.eligible.insert(s);
            }
        }
        Ok(())
    }
    fn reject(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
    fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Pass 2: every verdict in row order, and the quotes.
struct VerdictSink<'a, 's> {
    ctx: &'a PlanContext<'a>,
    eligible_devices: &'a EligibleDevices,
    sink: &'s mut dyn PlanSink,
    builder: QuoteBuilder<'a>,
    eligible: u64,
    ineligible: u64,
    by_reason: BTreeMap<&'static str, u64>,
}

impl ValidateSink for VerdictSink<'_, '_> {
    fn item(&mut self, item: Item) -> anyhow::Result<()> {
        let key = item.key();
        let contract = self.ctx.contracts.by_id.get(&item.contract_id);
        let v = eligibility::evaluate(
            &item,
            contract,
            self.ctx.policy,
            self.ctx.as_of,
            self.eligible_devices,
        );
        let eta = match (v.eligible(), contract) {
            (true, Some(c)) => Some(self.ctx.policy.activation_eta(
                item.country,
                c.coverage,
                self.ctx.as_of,
            )),
            _ => None,
        };
        if v.eligible() {
            self.eligible += 1;
            self.builder.add(&item, &key);
        } else {
            self.ineligible += 1;
            for r in &v.reasons {
                *self.by_reason.entry(r.as_str()).or_default() += 1;
            }
        }
        self.sink.verdict(&item, &key, &v, eta)
    }
    fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
        self.sink.reject(r)
    }
    fn warning(&mut self, w: &Reject) -> anyhow::Result<()> {
        self.sink.warning(w)
    }
}
