//! The plan of a run: validate → eligibility → quotes (SPEC §1–5), as one
//! library stage that `refleet quote` and `refleet run` share.
//!
//! One pass over the inventory in the common case. The validating threads
//! judge each device and make its `eligibility.csv` line; the calling
//! thread takes them in row order, hands every verdict to a [`PlanSink`]
//! and folds eligible items into quotes. A license's verdict depends on the
//! eligible devices of the same inventory (`LICENSE_UNBOUND`), so licenses
//! are judged in row order on the eligible devices seen so far: the
//! duplicate index, which holds every valid device's serial anyway, keeps
//! one more bit per serial for "eligible". Exports list a device before its
//! licenses; when one does not (a license judged unbound whose device turns
//! out eligible further down), the sink is told to [`PlanSink::restart`] and
//! the inventory is read a second time with the whole file's eligible
//! devices. Memory stays bounded by the duplicate index, never the number
//! of rows.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use compact_str::CompactString;

use crate::contracts::Contracts;
use crate::dedupe::{DuplicateIndex, RowKeys};
use crate::domain::{Contract, Country, Coverage, Item, ItemKind, Region, Reject, Serial};
use crate::eligibility::{self, Devices, EligibleDevices, Reason, Verdict};
use crate::ingest::Opened;
use crate::pipeline::{self, ItemMap, MappedSink};
use crate::policy::Policy;
use crate::progress::Progress;
use crate::quote::{family_slot, Quote, QuoteBuilder, QuoteError, QuoteInput};
use crate::validate::Validator;

/// One valid item and what the plan decided for it.
pub struct Judged<'a> {
    /// The item, when the sink [wants items](PlanSink::wants_items); a
    /// sink that does not gets its region and line only, and the plan
    /// frees each device's item on the validating thread that made it.
    pub item: Option<&'a Item>,
    pub region: Region,
    /// [`Item::key`].
    pub key: &'a str,
    pub verdict: &'a Verdict,
    /// The expected activation date of an eligible item.
    pub eta: Option<NaiveDate>,
    pub contract_id: &'a str,
    /// [`Item::site`], as the export wrote it.
    pub site: &'a str,
    /// The item's `eligibility.csv` record (SPEC §7), newline included,
    /// made on the validating threads.
    pub eligibility_line: &'a [u8],
    /// Its `results.csv` record when the sink asks for
    /// [result lines](PlanSink::result_lines); else empty.
    pub result_line: &'a [u8],
}

/// Makes one judged item's line of a report (its format is the report's),
/// into `out`, emptied first; `eta` is the activation date as text ("" for
/// an ineligible item). Called on the validating threads.
pub trait ItemLine: Send + Sync {
    fn line(&self, out: &mut Vec<u8>, item: &Item, key: &str, verdict: &Verdict, eta: &str);
}

/// Receives the plan in row order.
pub trait PlanSink {
    /// Every valid item with its verdict.
    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()>;
    /// Whether [`Judged::item`] must be there.
    fn wants_items(&self) -> bool {
        false
    }
    /// Whether, and how, [`Judged::result_line`] must be made.
    fn result_lines(&self) -> Option<Box<dyn ItemLine>> {
        None
    }
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()>;
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()>;
    /// Forget everything received: the plan starts again from the first
    /// row. The second pass repeats every reject, warning and verdict of the
    /// first, except that some licenses judged `LICENSE_UNBOUND` lose that
    /// reason (their device is eligible after all); no verdict gains one.
    fn restart(&mut self) -> anyhow::Result<()>;
}

/// What the plan adds up to.
#[derive(Debug)]
pub struct Plan {
    pub stats: pipeline::ValidateStats,
    pub quotes: Vec<Quote>,
    pub eligible: u64,
    pub ineligible: u64,
    pub by_reason: BTreeMap<&'static str, u64>,
    /// How many times the inventory was read: 2 when a license came before
    /// its eligible device.
    pub passes: u32,
    /// The first contract id of the inventory that the contracts file
    /// lacks (`CONTRACT_NOT_FOUND`), as an example for messages.
    pub missing_contract: Option<String>,
}

/// Where the plan reads from and what it decides with.
pub struct PlanContext<'a> {
    pub contracts: &'a Contracts,
    pub policy: &'a Policy,
    pub as_of: NaiveDate,
    pub pool: &'a crate::pipeline::Workers,
    /// Makes [`Judged::eligibility_line`].
    pub eligibility_line: &'a dyn ItemLine,
    /// Eligible items (by serial number or license id) that are not bought
    /// by this plan: already bought, or held by the vendor. They keep their
    /// verdict and leave the quotes.
    pub not_bought: Option<&'a std::collections::HashSet<String>>,
}

/// Makes the plan. `open` opens the inventory afresh each time it is called
/// (once, or twice when a license comes before its eligible device);
/// `validator` must match its headers.
pub fn plan(
    ctx: &PlanContext<'_>,
    open: &mut dyn FnMut() -> anyhow::Result<Opened>,
    validator: &Validator<'_>,
    sink: &mut dyn PlanSink,
    progress: &dyn Progress,
) -> anyhow::Result<Plan> {
    let judge = Judge::new(ctx, sink.wants_items(), sink.result_lines())?;
    let opened = open()?;
    let expected = expected_rows(&opened);
    let pass = |opened: Opened, fold: &mut Fold<'_, '_>| {
        progress.start(opened.total_bytes, opened.bytes_read.clone());
        let stats = pipeline::run_mapped(
            opened.source,
            validator,
            ctx.pool,
            expected,
            &judge,
            fold,
            progress,
        );
        progress.finish();
        stats
    };
    let known;
    let mut fold = Fold::new(&judge, None, sink);
    let mut stats = pass(opened, &mut fold)?;
    let mut passes = 1;
    if let Some(eligible_devices) = fold.rerun.take() {
        known = eligible_devices;
        let sink = fold.sink;
        sink.restart()?;
        fold = Fold::new(&judge, Some(&known), sink);
        stats = pass(open()?, &mut fold)?;
        passes = 2;
    }
    let by_reason = fold.by_reason();
    let Fold {
        builder,
        eligible,
        ineligible,
        missing_contract,
        ..
    } = fold;
    Ok(Plan {
        stats,
        quotes: ctx.pool.install(|| builder.finish(ctx.as_of))?,
        eligible,
        ineligible,
        by_reason,
        passes,
        missing_contract,
    })
}

/// A guess of the row count from the file size, to pre-size indexes.
fn expected_rows(opened: &Opened) -> usize {
    opened
        .total_bytes
        .map_or(0, |b| (b / 130) as usize)
        .min(50_000_000)
}

/// The verdicts (SPEC §4), their activation dates and `eligibility.csv`
/// lines.
struct Judge<'a> {
    contracts: &'a Contracts,
    policy: &'a Policy,
    as_of: NaiveDate,
    /// Empty: a device's verdict does not look at the eligible devices.
    no_eligible_devices: EligibleDevices,
    etas: Etas,
    /// Keep each device's item for the sink ([`PlanSink::wants_items`]).
    keep_items: bool,
    eligibility_line: &'a dyn ItemLine,
    /// Makes `results.csv` lines ([`PlanSink::result_lines`]).
    result_lines: Option<Box<dyn ItemLine>>,
    /// [`PlanContext::not_bought`].
    not_bought: Option<&'a std::collections::HashSet<String>>,
}

/// The eligible devices so far: the serials the duplicate index holds
/// marked (see [`Judge::mark`](ItemMap::mark)).
struct EligibleSoFar<'i>(&'i DuplicateIndex);

impl Devices for EligibleSoFar<'_> {
    fn is_eligible(&self, serial: &Serial) -> bool {
        self.0.is_marked(serial)
    }
}

/// What a validating thread makes of one valid row. A license's verdict
/// depends on the eligible devices of the rows before it, so [`Fold`]
/// makes it in row order.
///
/// One crosses threads per row and is written, read and dropped in a
/// chunk's vector of outcomes, so it is kept small: what most rows do not
/// need is boxed (an eligible device's verdict is [`ELIGIBLE`], and lines
/// seldom miss their slot), and the serial is not repeated (the walk hands
/// the sink the row's keys).
enum Judgement {
    Device {
        item: KeptItem,
        /// `None`: eligible.
        ineligible: Option<Box<Verdict>>,
        eta: Option<NaiveDate>,
        /// The lines when they did not fit the row's slot (see [`ReportLines`]);
        /// `None`: they are there.
        lines: Option<Box<ReportLines>>,
    },
    License(Box<Item>),
}

/// The verdict of every eligible item: no reason, no alternative.
static ELIGIBLE: Verdict = Verdict {
    reasons: Vec::new(),
    alternative: String::new(),
};

/// What a device's judgement keeps of its item: all of it, boxed, for a
/// sink that wants items, else what the quotes need. The item itself is
/// then never boxed: it is judged where it was made and dropped there, and
/// the outcome that crosses threads is smaller.
enum KeptItem {
    /// The whole item, for a sink that [wants items](PlanSink::wants_items).
    Whole(Box<Item>),
    /// Only the fields the quotes and the sink need ([`QuoteInput`], whose
    /// key is the serial, in the row's keys).
    QuoteFields {
        contract_id: CompactString,
        region: Region,
        family: usize,
        /// For the by-site counts of `results.csv`.
        site: CompactString,
    },
}

impl KeptItem {
    fn item(&self) -> Option<&Item> {
        match self {
            KeptItem::Whole(item) => Some(item),
            KeptItem::QuoteFields { .. } => None,
        }
    }

    fn region(&self) -> Region {
        match self {
            KeptItem::Whole(item) => item.region,
            KeptItem::QuoteFields { region, .. } => *region,
        }
    }

    fn contract_id(&self) -> &str {
        match self {
            KeptItem::Whole(item) => &item.contract_id,
            KeptItem::QuoteFields { contract_id, .. } => contract_id,
        }
    }

    fn site(&self) -> &str {
        match self {
            KeptItem::Whole(item) => &item.site,
            KeptItem::QuoteFields { site, .. } => site,
        }
    }

    fn quote_input<'k>(&'k self, keys: &'k RowKeys, policy: &Policy) -> QuoteInput<'k> {
        match self {
            KeptItem::Whole(item) => QuoteInput::of(item, row_device_key(keys), policy),
            KeptItem::QuoteFields {
                contract_id,
                region,
                family,
                ..
            } => QuoteInput {
                contract_id,
                region: *region,
                kind: ItemKind::Device,
                family: *family,
                key: row_device_key(keys),
            },
        }
    }
}

/// The activation date, and its text, of every (country, coverage): one
/// as-of date per plan, so a few hundred values, made once before the
/// workers start and shared by all of them.
type Etas = HashMap<(Country, Coverage), (NaiveDate, String), foldhash::fast::FixedState>;

/// [`Item::key`] of a device, without building a string.
fn device_key(item: &Item) -> &str {
    item.serial.as_ref().map_or("", |s| s.as_str())
}

/// [`device_key`] of a device row's item, from the row's keys (which hold a
/// device's serial), for whatever the judgement kept of the item.
fn row_device_key(keys: &RowKeys) -> &str {
    keys.serial.as_ref().map_or("", |s| s.as_str())
}

impl<'a> Judge<'a> {
    /// Fails only when an activation date is past chrono's last date (an
    /// as-of date within a few years of it).
    fn new(
        ctx: &PlanContext<'a>,
        keep_items: bool,
        result_lines: Option<Box<dyn ItemLine>>,
    ) -> Result<Judge<'a>, QuoteError> {
        let etas = ctx
            .policy
            .countries
            .countries()
            .flat_map(|c| [(c, Coverage::Standard), (c, Coverage::Extended)])
            .map(|(country, coverage)| {
                let d = ctx
                    .policy
                    .activation_eta(country, coverage, ctx.as_of)
                    .ok_or_else(|| QuoteError::DateOutOfRange {
                        what: format!("the activation date in {country}"),
                        from: ctx.as_of,
                        days: ctx.policy.sla_days(coverage),
                    })?;
                Ok(((country, coverage), (d, d.to_string())))
            })
            .collect::<Result<_, QuoteError>>()?;
        Ok(Judge {
            contracts: ctx.contracts,
            policy: ctx.policy,
            as_of: ctx.as_of,
            no_eligible_devices: EligibleDevices::new(),
            etas,
            keep_items,
            eligibility_line: ctx.eligibility_line,
            result_lines,
            not_bought: ctx.not_bought,
        })
    }

    /// The verdict and activation date of one item; its `eligibility.csv`
    /// line goes into `eligibility_line`, its `results.csv` line into
    /// `result_line` when [`Judge::result_lines`] asks (else it is left
    /// empty).
    fn judge(
        &self,
        last: &mut LastContract<'a>,
        item: &Item,
        key: &str,
        eligible_devices: &(impl Devices + ?Sized),
        eligibility_line: &mut Vec<u8>,
        result_line: &mut Vec<u8>,
    ) -> (Verdict, Option<NaiveDate>) {
        let contract = self.contract(last, &item.contract_id);
        let v = eligibility::evaluate(item, contract, self.policy, self.as_of, eligible_devices);
        let eta = match (v.eligible(), contract) {
            (true, Some(c)) => match self.etas.get(&(item.country, c.coverage)) {
                Some((d, text)) => Some((*d, Cow::Borrowed(text.as_str()))),
                // Every country of the policy is there; this is only a
                // safety net.
                None => self
                    .policy
                    .activation_eta(item.country, c.coverage, self.as_of)
                    .map(|d| (d, Cow::Owned(d.to_string()))),
            },
            _ => None,
        };
        let eta_text = eta.as_ref().map_or("", |(_, s)| s);
        self.eligibility_line
            .line(eligibility_line, item, key, &v, eta_text);
        result_line.clear();
        if let Some(lines) = &self.result_lines {
            lines.line(result_line, item, key, &v, eta_text);
        }
        (v, eta.map(|(d, _)| d))
    }

    /// The contract `id`, through the thread's last one.
    fn contract(&self, last: &mut LastContract<'a>, id: &CompactString) -> Option<&'a Contract> {
        if last.id != *id {
            last.contract = self.contracts.by_id.get(id);
            last.id.clone_from(id);
        }
        last.contract
    }
}

/// The contract of the row before, on one thread: exports list a
/// contract's items together, so most rows skip the look-up (a hash of the
/// id and a probe into a table of every contract, seldom in cache).
#[derive(Default)]
struct LastContract<'a> {
    id: CompactString,
    contract: Option<&'a Contract>,
}

/// A device's `eligibility.csv` line and (maybe empty) `results.csv` line
/// in its row's slot ([`ItemMap::ROW_SCRATCH`]): their lengths in the first two
/// bytes, then the lines. The slots are one buffer that travels with the
/// chunk, so a row's lines need no allocation of their own (which another
/// thread would free) and are read back in row order from that buffer.
/// Lines that do not fit are kept on the heap, with the length of the
/// first.
struct ReportLines {
    /// The `eligibility.csv` line, then the `results.csv` line.
    both: Vec<u8>,
    /// The length of the `eligibility.csv` line.
    eligibility_len: usize,
}

impl ReportLines {
    /// The bytes of a row's slot: the two lengths and the lines.
    const ROW_BYTES: usize = 256;

    /// Stores the lines in `slot` when they fit; else they are returned, to
    /// be kept on the heap.
    fn store(
        eligibility_line: &[u8],
        result_line: &[u8],
        slot: &mut [u8],
    ) -> Option<Box<ReportLines>> {
        let (a, b) = (eligibility_line, result_line);
        match (u8::try_from(a.len()), u8::try_from(b.len())) {
            (Ok(na), Ok(nb)) if 2 + a.len() + b.len() <= slot.len() => {
                slot[0] = na;
                slot[1] = nb;
                slot[2..2 + a.len()].copy_from_slice(a);
                slot[2 + a.len()..2 + a.len() + b.len()].copy_from_slice(b);
                None
            }
            _ => Some(Box::new(ReportLines {
                both: [a, b].concat(),
                eligibility_len: a.len(),
            })),
        }
    }

    /// The lines (`eligibility.csv`'s, `results.csv`'s) that
    /// [`ReportLines::store`] kept in `slot`, or else `heap`.
    fn get<'s>(heap: Option<&'s ReportLines>, slot: &'s [u8]) -> (&'s [u8], &'s [u8]) {
        match heap {
            Some(ReportLines {
                both,
                eligibility_len,
            }) => both.split_at(*eligibility_len),
            None => {
                let (na, nb) = (usize::from(slot[0]), usize::from(slot[1]));
                slot[2..2 + na + nb].split_at(na)
            }
        }
    }
}

/// A validating thread's scratch: its last contract and line buffers.
#[derive(Default)]
struct JudgeState<'a> {
    last: LastContract<'a>,
    eligibility_line: Vec<u8>,
    result_line: Vec<u8>,
}

impl<'a> ItemMap for Judge<'a> {
    type State = JudgeState<'a>;
    type Out = Judgement;
    const ROW_SCRATCH: usize = ReportLines::ROW_BYTES;

    fn state(&self) -> JudgeState<'a> {
        JudgeState::default()
    }

    fn map(
        &self,
        state: &mut JudgeState<'a>,
        item: Item,
        _: &RowKeys,
        slot: &mut [u8],
    ) -> Judgement {
        if item.kind == ItemKind::License {
            return Judgement::License(Box::new(item));
        }
        let JudgeState {
            last,
            eligibility_line,
            result_line,
        } = state;
        let key = device_key(&item);
        let (verdict, eta) = self.judge(
            last,
            &item,
            key,
            &self.no_eligible_devices,
            eligibility_line,
            result_line,
        );
        let lines = ReportLines::store(eligibility_line, result_line, slot);
        let item = if self.keep_items {
            KeptItem::Whole(Box::new(item))
        } else {
            KeptItem::QuoteFields {
                family: family_slot(self.policy, &item),
                region: item.region,
                contract_id: item.contract_id,
                site: item.site,
            }
        };
        Judgement::Device {
            item,
            ineligible: (!verdict.eligible()).then(|| Box::new(verdict)),
            eta,
            lines,
        }
    }

    /// An eligible device.
    fn mark(&self, out: &Judgement) -> bool {
        matches!(
            out,
            Judgement::Device {
                ineligible: None,
                ..
            }
        )
    }

    fn site<'o>(&self, out: &'o Judgement) -> &'o str {
        match out {
            Judgement::Device { item, .. } => item.site(),
            Judgement::License(item) => &item.site,
        }
    }
}

/// Takes the judgements in row order: hands them to the sink, judges the
/// licenses, counts, and folds eligible items into quotes.
struct Fold<'a, 's> {
    judge: &'a Judge<'a>,
    /// The eligible devices of the whole file, on a second pass.
    known: Option<&'a EligibleDevices>,
    /// Bound serials of licenses judged unbound on the devices so far.
    pending: EligibleDevices,
    /// Set at the end of a first pass when one of `pending` turned out
    /// eligible: the whole file's eligible devices, for a second pass.
    rerun: Option<EligibleDevices>,
    /// For the licenses, judged here.
    last: LastContract<'a>,
    eligibility_line: Vec<u8>,
    result_line: Vec<u8>,
    sink: &'s mut dyn PlanSink,
    builder: QuoteBuilder<'a>,
    eligible: u64,
    ineligible: u64,
    /// Ineligible items by reason, indexed by `Reason as usize`.
    by_reason: [u64; 32],
    /// See [`Plan::missing_contract`].
    missing_contract: Option<String>,
}

impl<'a, 's> Fold<'a, 's> {
    fn new(
        judge: &'a Judge<'a>,
        known: Option<&'a EligibleDevices>,
        sink: &'s mut dyn PlanSink,
    ) -> Fold<'a, 's> {
        Fold {
            judge,
            known,
            pending: EligibleDevices::new(),
            rerun: None,
            last: LastContract::default(),
            eligibility_line: Vec::new(),
            result_line: Vec::new(),
            sink,
            builder: QuoteBuilder::new(&judge.contracts.by_id, judge.policy),
            eligible: 0,
            ineligible: 0,
            by_reason: [0; 32],
            missing_contract: None,
        }
    }

    fn count(&mut self, quote: QuoteInput<'_>, v: &Verdict) {
        if v.eligible() {
            self.eligible += 1;
            if !self.judge.not_bought.is_some_and(|s| s.contains(quote.key)) {
                self.builder.add(quote);
            }
        } else {
            self.ineligible += 1;
            for r in &v.reasons {
                self.by_reason[*r as usize] += 1;
                if *r == Reason::ContractNotFound && self.missing_contract.is_none() {
                    self.missing_contract = Some(quote.contract_id.to_string());
                }
            }
        }
    }

    /// The reason counts for the summary.
    fn by_reason(&self) -> BTreeMap<&'static str, u64> {
        Reason::ALL
            .iter()
            .filter(|r| self.by_reason[**r as usize] > 0)
            .map(|r| (r.as_str(), self.by_reason[*r as usize]))
            .collect()
    }
}

impl MappedSink<Judgement> for Fold<'_, '_> {
    /// Reads the judgement in place: items and lines are freed on the
    /// validating threads, not here.
    fn item(
        &mut self,
        out: &mut Option<Judgement>,
        keys: &RowKeys,
        slot: &[u8],
        seen: &DuplicateIndex,
    ) -> anyhow::Result<()> {
        match out {
            Some(Judgement::Device {
                item,
                ineligible,
                eta,
                lines,
            }) => {
                let (eligibility_line, result_line) = ReportLines::get(lines.as_deref(), slot);
                let verdict = ineligible.as_deref().unwrap_or(&ELIGIBLE);
                self.sink.verdict(&Judged {
                    item: item.item(),
                    region: item.region(),
                    key: row_device_key(keys),
                    contract_id: item.contract_id(),
                    site: item.site(),
                    verdict,
                    eta: *eta,
                    eligibility_line,
                    result_line,
                })?;
                self.count(item.quote_input(keys, self.judge.policy), verdict);
            }
            Some(Judgement::License(item)) => {
                let key = item.key();
                let (eligibility_line, result_line) =
                    (&mut self.eligibility_line, &mut self.result_line);
                let (verdict, eta) = match self.known {
                    Some(known) => {
                        let last = &mut self.last;
                        self.judge
                            .judge(last, item, &key, known, eligibility_line, result_line)
                    }
                    None => self.judge.judge(
                        &mut self.last,
                        item,
                        &key,
                        &EligibleSoFar(seen),
                        eligibility_line,
                        result_line,
                    ),
                };
                self.sink.verdict(&Judged {
                    item: Some(item),
                    region: item.region,
                    key: &key,
                    contract_id: &item.contract_id,
                    site: &item.site,
                    verdict: &verdict,
                    eta,
                    eligibility_line: &self.eligibility_line,
                    result_line: &self.result_line,
                })?;
                if self.known.is_none() && verdict.reasons.contains(&Reason::LicenseUnbound) {
                    if let Some(s) = item.bound_serial {
                        self.pending.insert(s);
                    }
                }
                self.count(QuoteInput::of(item, &key, self.judge.policy), &verdict);
            }
            None => {}
        }
        Ok(())
    }
    fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
        self.sink.reject(r)
    }
    fn warning(&mut self, w: &Reject) -> anyhow::Result<()> {
        self.sink.warning(w)
    }
    /// A license judged unbound whose device turned out eligible further
    /// down calls for a second pass.
    fn end(&mut self, seen: &DuplicateIndex) -> anyhow::Result<()> {
        if self.known.is_none() && seen.marks_any(&self.pending) {
            self.rerun = Some(seen.marked_serials());
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
