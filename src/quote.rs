//! Quotes (SPEC §5): eligible items grouped by (contract, sales region), one
//! quote per group, with line items a buyer can check by hand. Money is
//! exact decimal, rounded half-to-even to the cent once per line; the total
//! is the sum of the lines. Pure: no I/O, no clock.
//!
//! Every product and sum is checked: within the policy's ranges (see
//! [`crate::policy::limits`]) none can overflow, and should one ever do, it
//! is a [`QuoteError`], never a panic or a wrong total.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use compact_str::CompactString;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::{Contract, Coverage, Item, ItemKind, PricingModel, Region};
use crate::policy::{CoveragePrices, Policy};

/// Minor unit of the currencies in the price book (USD, EUR).
const CENTS: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("the price book has no {coverage} price for `{family}` in {currency} (policy [pricing.unit.{currency}])")]
    NoUnitPrice {
        family: String,
        coverage: &'static str,
        currency: String,
    },
    #[error("the price book has no per_term fee in {currency} (policy [pricing.per_term_fee.{currency}])")]
    NoTermFee { currency: String },
    #[error(
        "the policy has no term multiplier for {0} months (policy [pricing] term_multipliers)"
    )]
    NoMultiplier(u32),
    #[error("the policy has no currency for region {0} (policy [regions.{0}])")]
    NoCurrency(Region),
    #[error("{what} overflows: check the policy's prices and multipliers ([pricing])")]
    Overflow { what: String },
    #[error("{what}, {days} days after {from}, is past the last date refleet can represent (check --as-of)")]
    DateOutOfRange {
        what: String,
        from: NaiveDate,
        days: u32,
    },
}

fn overflow(what: impl Into<String>) -> QuoteError {
    QuoteError::Overflow { what: what.into() }
}

/// `a × b × c`, or `None` when it does not fit a decimal.
fn product(a: Decimal, b: Decimal, c: Decimal) -> Option<Decimal> {
    a.checked_mul(b)?.checked_mul(c)
}

/// The sum, or `None` when it does not fit a decimal.
fn sum(amounts: impl IntoIterator<Item = Decimal>) -> Option<Decimal> {
    amounts
        .into_iter()
        .try_fold(Decimal::ZERO, |s, a| s.checked_add(a))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Devices,
    VolumeDiscount,
    TermFee,
    Overage,
    Licenses,
}

/// One line: `quantity × unit_price × multiplier` (or, for the discount,
/// `-rate × the device lines`), rounded once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuoteLine {
    pub kind: LineKind,
    pub description: String,
    pub family: Option<String>,
    pub quantity: u64,
    pub unit_price: Decimal,
    pub multiplier: Decimal,
    /// For the volume discount: the rate taken off the device lines.
    pub rate: Option<Decimal>,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quote {
    pub quote_id: String,
    pub contract_id: String,
    pub account_id: String,
    pub region: Region,
    pub currency: String,
    pub pricing_model: &'static str,
    pub coverage: &'static str,
    pub term_months: u32,
    pub devices: u64,
    pub licenses: u64,
    pub devices_by_family: BTreeMap<String, u64>,
    pub lines: Vec<QuoteLine>,
    /// The sum of the lines before the volume discount.
    pub subtotal: Decimal,
    /// The volume discount (zero or negative).
    pub discount: Decimal,
    pub total: Decimal,
    pub valid_until: NaiveDate,
    pub auto_renew: bool,
    pub contract_end: NaiveDate,
    pub cancellation_days: u32,
}

fn round(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(CENTS, RoundingStrategy::MidpointNearestEven)
}

/// What a group needs, folded in from its items in row order, so that a
/// quote never holds the items themselves.
struct Group {
    devices: u64,
    licenses: u64,
    /// Indexed by [`family_slot`]: a vector, not a map, because every
    /// eligible device adds to it.
    by_family: Vec<u64>,
    /// per_term: devices after the first `included_devices`, by family.
    overage: Vec<u64>,
    /// The item keys in row order, for the quote id.
    keys: Sha256,
}

/// Quotes built incrementally: [`QuoteBuilder::add`] each eligible item in
/// row order, then [`QuoteBuilder::finish`].
pub struct QuoteBuilder<'p> {
    contracts: &'p std::collections::HashMap<CompactString, Contract>,
    policy: &'p Policy,
    /// The groups in order of appearance, with their contract; sorted only
    /// in `finish`.
    groups: Vec<((CompactString, Region), &'p Contract, Group)>,
    /// Index into `groups`, looked up when an item is not in the group of
    /// the item before (exports list a contract's items together).
    index: std::collections::HashMap<(CompactString, Region), usize, foldhash::fast::FixedState>,
    last: Option<usize>,
}

impl<'p> QuoteBuilder<'p> {
    pub fn new(
        contracts: &'p std::collections::HashMap<CompactString, Contract>,
        policy: &'p Policy,
    ) -> QuoteBuilder<'p> {
        QuoteBuilder {
            contracts,
            policy,
            groups: Vec::new(),
            index: std::collections::HashMap::with_hasher(foldhash::fast::FixedState::default()),
            last: None,
        }
    }

    /// Adds one eligible item (its contract must be known).
    pub fn add(&mut self, item: QuoteInput<'_>) {
        let same = |(id, region): &(CompactString, Region)| {
            *region == item.region && *id == item.contract_id
        };
        let i = match self.last {
            Some(i) if same(&self.groups[i].0) => i,
            _ => {
                let Some(contract) = self.contracts.get(item.contract_id) else {
                    return;
                };
                let groups = &mut self.groups;
                let families = self.policy.families.len() + 1;
                *self
                    .index
                    .entry((item.contract_id.into(), item.region))
                    .or_insert_with(|| {
                        groups.push((
                            (item.contract_id.into(), item.region),
                            contract,
                            Group {
                                devices: 0,
                                licenses: 0,
                                by_family: vec![0; families],
                                overage: vec![0; families],
                                keys: Sha256::new(),
                            },
                        ));
                        groups.len() - 1
                    })
            }
        };
        self.last = Some(i);
        let (_, contract, g) = &mut self.groups[i];
        g.keys.update(item.key.as_bytes());
        g.keys.update([0]);
        match item.kind {
            ItemKind::License => g.licenses += 1,
            ItemKind::Device => {
                let family = item.family;
                g.by_family[family] += 1;
                if contract.pricing_model == PricingModel::PerTerm
                    && g.devices >= contract.included_devices.unwrap_or(0)
                {
                    g.overage[family] += 1;
                }
                g.devices += 1;
            }
        }
    }

    /// The quotes, sorted by contract id then region; made on the current
    /// rayon pool, each group alone (they are independent).
    pub fn finish(self, as_of: NaiveDate) -> Result<Vec<Quote>, QuoteError> {
        use rayon::prelude::*;
        let mut groups = self.groups;
        groups.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let policy = self.policy;
        let quotes: Vec<Result<Quote, QuoteError>> = groups
            .into_par_iter()
            .map(|((_, region), contract, group)| {
                quote_group(contract, region, group, policy, as_of)
            })
            .collect();
        // In order, so that the error reported is the first group's, as it
        // would be one group at a time (a parallel collect into a `Result`
        // keeps whichever failed first in time).
        quotes.into_iter().collect()
    }
}

/// What a quote needs of one eligible item.
#[derive(Debug, Clone, Copy)]
pub struct QuoteInput<'a> {
    pub contract_id: &'a str,
    pub region: Region,
    pub kind: ItemKind,
    /// [`family_slot`] of a device.
    pub family: usize,
    /// [`Item::key`].
    pub key: &'a str,
}

impl<'a> QuoteInput<'a> {
    /// `key` is [`Item::key`], which the caller has usually built already.
    pub fn of(item: &'a Item, key: &'a str, policy: &Policy) -> QuoteInput<'a> {
        QuoteInput {
            contract_id: &item.contract_id,
            region: item.region,
            kind: item.kind,
            family: family_slot(policy, item),
            key,
        }
    }
}

/// What the quotes in one currency add up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CurrencyTotal {
    pub quotes: u64,
    pub devices: u64,
    pub licenses: u64,
    pub total: Decimal,
}

/// The quotes' totals by currency.
pub fn totals_by_currency(quotes: &[Quote]) -> Result<BTreeMap<String, CurrencyTotal>, QuoteError> {
    let mut totals: BTreeMap<String, CurrencyTotal> = BTreeMap::new();
    for q in quotes {
        let t = totals.entry(q.currency.clone()).or_default();
        t.quotes += 1;
        t.devices += q.devices;
        t.licenses += q.licenses;
        t.total = t
            .total
            .checked_add(q.total)
            .ok_or_else(|| overflow(format!("the total of the {} quotes", q.currency)))?;
    }
    Ok(totals)
}

/// The budget guard (SPEC §5): one sentence per currency whose quoted total
/// exceeds its budget; empty when every budget holds.
pub fn over_budget(
    totals: &BTreeMap<String, CurrencyTotal>,
    budgets: &BTreeMap<String, Decimal>,
) -> Vec<String> {
    budgets
        .iter()
        .filter_map(|(cur, limit)| {
            let total = totals.get(cur).map_or(Decimal::ZERO, |t| t.total);
            (total > *limit).then(|| format!("{cur}: quoted {total} exceeds the budget of {limit}"))
        })
        .collect()
}

/// Builds the quotes for the eligible items (`eligible[i]` for `items[i]`),
/// sorted by contract id then region.
pub fn build_quotes(
    items: &[Item],
    eligible: &[bool],
    contracts: &std::collections::HashMap<CompactString, Contract>,
    policy: &Policy,
    as_of: NaiveDate,
) -> Result<Vec<Quote>, QuoteError> {
    let mut builder = QuoteBuilder::new(contracts, policy);
    for (item, _) in items.iter().zip(eligible).filter(|(_, e)| **e) {
        builder.add(QuoteInput::of(item, &item.key(), policy));
    }
    builder.finish(as_of)
}

/// A device's family as an index into [`Group::by_family`]: 0 for a device
/// without a known model, then the policy's families in order.
pub fn family_slot(policy: &Policy, item: &Item) -> usize {
    item.model.map_or(0, |m| policy.family_index(m) + 1)
}

/// The family of a [`family_slot`].
fn family_name(policy: &Policy, slot: usize) -> &str {
    slot.checked_sub(1)
        .and_then(|i| policy.families.get(i))
        .map_or("", |f| f.name.as_str())
}

fn quote_group(
    contract: &Contract,
    region: Region,
    g: Group,
    policy: &Policy,
    as_of: NaiveDate,
) -> Result<Quote, QuoteError> {
    let pricing = &policy.file.pricing;
    let currency = policy
        .currencies
        .get(&region)
        .ok_or(QuoteError::NoCurrency(region))?
        .clone();
    let multiplier = *pricing
        .term_multipliers
        .get(&contract.term_months.to_string())
        .ok_or(QuoteError::NoMultiplier(contract.term_months))?;
    let coverage = contract.coverage;
    let price = |p: &CoveragePrices| match coverage {
        Coverage::Standard => p.standard,
        Coverage::Extended => p.extended,
    };
    let unit = |family: &str| -> Result<Decimal, QuoteError> {
        pricing
            .unit
            .get(&currency)
            .and_then(|book| book.get(family))
            .map(price)
            .ok_or_else(|| QuoteError::NoUnitPrice {
                family: family.to_string(),
                coverage: coverage.as_str(),
                currency: currency.clone(),
            })
    };
    let by_name = |counts: &[u64]| -> BTreeMap<&str, u64> {
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(slot, n)| (family_name(policy, slot), *n))
            .collect()
    };
    let overage = by_name(&g.overage);
    let by_family: BTreeMap<String, u64> = by_name(&g.by_family)
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .collect();
    let family_line = |kind: LineKind, family: &str, qty: u64| -> Result<QuoteLine, QuoteError> {
        let unit_price = unit(family)?;
        let what = if kind == LineKind::Overage {
            " over the included devices"
        } else {
            ""
        };
        Ok(QuoteLine {
            kind,
            description: format!(
                "{family}{what}: {qty} × {unit_price} × {multiplier} ({} months, {})",
                contract.term_months,
                coverage.as_str()
            ),
            family: Some(family.to_string()),
            quantity: qty,
            unit_price,
            multiplier,
            rate: None,
            amount: round(
                product(Decimal::from(qty), unit_price, multiplier)
                    .ok_or_else(|| overflow(format!("the {family} line of {}", contract.id)))?,
            ),
        })
    };

    let mut lines = Vec::new();
    match contract.pricing_model {
        PricingModel::PerDevice => {
            for (family, qty) in &by_family {
                lines.push(family_line(LineKind::Devices, family, *qty)?);
            }
            let devices = g.devices;
            let rate = pricing
                .volume_tiers
                .iter()
                .flatten()
                .filter(|t| t.min_devices <= devices)
                .max_by_key(|t| t.min_devices)
                .map_or(Decimal::ZERO, |t| t.discount);
            if !rate.is_zero() && devices > 0 {
                let discount = || overflow(format!("the volume discount of {}", contract.id));
                let base = sum(lines.iter().map(|l| l.amount)).ok_or_else(discount)?;
                let percent = rate
                    .checked_mul(Decimal::ONE_HUNDRED)
                    .ok_or_else(discount)?;
                lines.push(QuoteLine {
                    kind: LineKind::VolumeDiscount,
                    description: format!(
                        "volume discount {}% on {devices} devices",
                        percent.normalize()
                    ),
                    family: None,
                    quantity: devices,
                    unit_price: Decimal::ZERO,
                    multiplier: Decimal::ONE,
                    rate: Some(rate),
                    amount: -round(base.checked_mul(rate).ok_or_else(discount)?),
                });
            }
        }
        PricingModel::PerTerm => {
            let fee = pricing
                .per_term_fee
                .get(&currency)
                .map(price)
                .ok_or_else(|| QuoteError::NoTermFee {
                    currency: currency.clone(),
                })?;
            let included = contract.included_devices.unwrap_or(0);
            lines.push(QuoteLine {
                kind: LineKind::TermFee,
                description: format!("flat fee for {region}, covers {included} devices × {fee} × {multiplier} ({} months, {})", contract.term_months, coverage.as_str()),
                family: None,
                quantity: 1,
                unit_price: fee,
                multiplier,
                rate: None,
                amount: round(
                    fee.checked_mul(multiplier)
                        .ok_or_else(|| overflow(format!("the flat fee of {}", contract.id)))?,
                ),
            });
            // The first `included` devices in row order are covered (see `add`).
            for (family, qty) in &overage {
                lines.push(family_line(LineKind::Overage, family, *qty)?);
            }
        }
    }
    if g.licenses > 0 {
        let unit_price = unit("license")?;
        lines.push(QuoteLine {
            kind: LineKind::Licenses,
            description: format!(
                "licenses: {} × {unit_price} × {multiplier} ({} months, {})",
                g.licenses,
                contract.term_months,
                coverage.as_str()
            ),
            family: Some("license".into()),
            quantity: g.licenses,
            unit_price,
            multiplier,
            rate: None,
            amount: round(
                product(Decimal::from(g.licenses), unit_price, multiplier)
                    .ok_or_else(|| overflow(format!("the license line of {}", contract.id)))?,
            ),
        });
    }
    let cents = |mut d: Decimal| {
        d.rescale(CENTS);
        d
    };
    let total_of = || overflow(format!("the total of {}", contract.id));
    let discount = cents(
        sum(lines
            .iter()
            .filter(|l| l.kind == LineKind::VolumeDiscount)
            .map(|l| l.amount))
        .ok_or_else(total_of)?,
    );
    let total = cents(sum(lines.iter().map(|l| l.amount)).ok_or_else(total_of)?);
    let subtotal = cents(total.checked_sub(discount).ok_or_else(total_of)?);
    let validity = policy.quote_validity_days();
    let valid_until = as_of
        .checked_add_days(Days::new(u64::from(validity)))
        .ok_or_else(|| QuoteError::DateOutOfRange {
            what: format!("the valid-until date of the quote for {}", contract.id),
            from: as_of,
            days: validity,
        })?;

    // Same items, contract, region, date, terms and prices → same id.
    let mut h = g.keys;
    for part in [
        contract.id.as_str(),
        region.as_str(),
        &currency,
        &as_of.to_string(),
        &total.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let quote_id = format!(
        "Q-{}",
        digest
            .iter()
            .take(8)
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    );

    Ok(Quote {
        quote_id,
        contract_id: contract.id.to_string(),
        account_id: contract.account_id.to_string(),
        region,
        currency,
        pricing_model: contract.pricing_model.as_str(),
        coverage: coverage.as_str(),
        term_months: contract.term_months,
        devices: g.devices,
        licenses: g.licenses,
        devices_by_family: by_family,
        lines,
        subtotal,
        discount,
        total,
        valid_until,
        auto_renew: contract.auto_renew,
        contract_end: contract.end_date,
        cancellation_days: contract.cancellation_days,
    })
}

#[cfg(test)]
#[path = "quote_tests.rs"]
mod tests;
