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
mod tests {
    use super::*;
    use crate::domain::{
        parse_timestamp, ContractStatus, DeactivationReason, LicenseId, RepairStatus, Serial,
    };
    use std::collections::HashMap;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn item(p: &Policy, row: u64, model: Option<&str>, country: &str, contract: &str) -> Item {
        let country = p.countries.parse(country).unwrap();
        Item {
            row,
            kind: if model.is_some() {
                ItemKind::Device
            } else {
                ItemKind::License
            },
            serial: model.map(|_| Serial::parse(&format!("SN{row:010}"), 8, 20).unwrap()),
            mac: None,
            model: model.and_then(|m| p.model(m)),
            model_text: model.unwrap_or("").into(),
            license_id: model
                .is_none()
                .then(|| LicenseId::parse(&format!("LIC0{row:012}")).unwrap()),
            bound_serial: None,
            account_id: "A-1".into(),
            contract_id: contract.into(),
            country,
            region: p.countries.region(country).unwrap(),
            site: "".into(),
            deactivated_at: parse_timestamp("2026-10-01", None).unwrap(),
            deactivation_reason: DeactivationReason::Unknown,
            repair_status: RepairStatus::None,
            reported_lost: false,
            extra: Default::default(),
        }
    }

    fn contract(
        id: &str,
        pricing: PricingModel,
        coverage: Coverage,
        term: u32,
        included: Option<u64>,
    ) -> Contract {
        let p = Policy::load(None).unwrap();
        Contract {
            row: 1,
            id: id.into(),
            account_id: "A-1".into(),
            status: ContractStatus::Active,
            coverage,
            covers_reactivation: true,
            start_date: d("2026-01-01"),
            end_date: d("2028-12-31"),
            home_country: p.countries.parse("DE").unwrap(),
            home_region: Region::Emea,
            pricing_model: pricing,
            term_months: term,
            included_devices: included,
            auto_renew: true,
            cancellation_days: 30,
        }
    }

    /// Items: `(model or None for a license, count)` in row order, all in `country`.
    fn quote(spec: &[(Option<&str>, u64)], country: &str, c: Contract) -> Quote {
        let p = Policy::load(None).unwrap();
        let mut items = Vec::new();
        for (model, n) in spec {
            for _ in 0..*n {
                items.push(item(&p, items.len() as u64 + 1, *model, country, &c.id));
            }
        }
        let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
        let mut q = build_quotes(
            &items,
            &vec![true; items.len()],
            &contracts,
            &p,
            d("2026-11-24"),
        )
        .unwrap();
        assert_eq!(q.len(), 1);
        q.remove(0)
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn amounts(q: &Quote) -> Vec<(LineKind, String)> {
        q.lines
            .iter()
            .map(|l| (l.kind, l.amount.to_string()))
            .collect()
    }

    /// Of several groups that cannot be priced, the error names the first
    /// in quote order, although the groups are quoted in parallel: here the
    /// first bad group comes after 499 good ones, and the 500 after it are
    /// all bad, so a thread that starts on the second half fails long
    /// before the first bad group is reached.
    #[test]
    fn the_first_groups_error_is_reported_whatever_the_threads_do() {
        let p = Policy::load(None).unwrap();
        let term = |i: u32| match i {
            ..499 => 12,
            499 => 100,
            _ => 200 + i,
        };
        let template = contract("C", PricingModel::PerDevice, Coverage::Standard, 12, None);
        let contracts: HashMap<CompactString, Contract> = (0..1000)
            .map(|i| {
                let id = CompactString::from(format!("C-{i:04}"));
                let c = Contract {
                    id: id.clone(),
                    term_months: term(i),
                    ..template.clone()
                };
                (id, c)
            })
            .collect();
        let models = ["VVX 450", "CCX 500", "Sync 20", "Trio C60"];
        let items: Vec<Item> = (0..4000u64)
            .map(|n| {
                let (i, m) = (n / 4, models[(n % 4) as usize]);
                item(&p, n + 1, Some(m), "DE", &format!("C-{i:04}"))
            })
            .collect();
        let eligible = vec![true; items.len()];
        for _ in 0..5 {
            let e = build_quotes(&items, &eligible, &contracts, &p, d("2026-11-24")).unwrap_err();
            assert!(matches!(e, QuoteError::NoMultiplier(100)), "{e}");
        }
    }

    #[test]
    fn per_device_with_tier_and_licenses_by_hand() {
        // EUR (Germany, EMEA), extended, 24 months (× 1.85):
        //   100 VVX × 29.00 × 1.85 = 5365.00
        //     5 CCX × 36.00 × 1.85 =  333.00
        //   105 devices → 10 % of 5698.00 = -569.80
        //     3 licenses × 69.00 × 1.85 = 382.95
        //   subtotal 6080.95, total 5511.15
        let q = quote(
            &[(Some("VVX 450"), 100), (Some("CCX 500"), 5), (None, 3)],
            "DE",
            contract("C-1", PricingModel::PerDevice, Coverage::Extended, 24, None),
        );
        assert_eq!(q.currency, "EUR");
        assert_eq!(
            amounts(&q),
            vec![
                (LineKind::Devices, "333.00".into()),
                (LineKind::Devices, "5365.00".into()),
                (LineKind::VolumeDiscount, "-569.80".into()),
                (LineKind::Licenses, "382.95".into()),
            ]
        );
        assert_eq!(
            (q.subtotal, q.discount, q.total),
            (dec("6080.95"), dec("-569.80"), dec("5511.15"))
        );
        assert_eq!((q.devices, q.licenses), (105, 3));
        assert_eq!(q.valid_until, d("2026-12-24"));
        insta::assert_json_snapshot!("per_device_eur_extended_24", q);
    }

    #[test]
    fn volume_tier_boundaries() {
        // USD (US), standard, 12 months: 19.00 per VVX.
        for (n, total) in [
            (99, "1881.00"),
            (100, "1710.00"),
            (999, "17082.90"),
            (1000, "15580.00"),
        ] {
            let q = quote(
                &[(Some("VVX 450"), n)],
                "US",
                contract("C-1", PricingModel::PerDevice, Coverage::Standard, 12, None),
            );
            assert_eq!(q.currency, "USD");
            assert_eq!(q.total, dec(total), "{n} devices");
            assert_eq!(
                q.lines.iter().any(|l| l.kind == LineKind::VolumeDiscount),
                n >= 100,
                "{n}"
            );
        }
    }

    #[test]
    fn rounding_is_half_to_even_once_per_line() {
        // 100 VVX × 19.00 × 1.85 = 3515.00, 1 Sync × 9.00 × 1.85 = 16.65;
        // 10 % of 3531.65 = 353.165 → 353.16 (half to even; half up would say .17).
        let q = quote(
            &[(Some("VVX 450"), 100), (Some("Sync 20"), 1)],
            "US",
            contract("C-1", PricingModel::PerDevice, Coverage::Standard, 24, None),
        );
        assert_eq!(q.discount, dec("-353.16"));
        assert_eq!(q.total, dec("3178.49"));
    }

    #[test]
    fn every_term_multiplier() {
        for (term, total) in [(12, "79.00"), (24, "146.15"), (36, "205.40")] {
            let q = quote(
                &[(Some("Trio C60"), 1)],
                "US",
                contract(
                    "C-1",
                    PricingModel::PerDevice,
                    Coverage::Standard,
                    term,
                    None,
                ),
            );
            assert_eq!(q.total, dec(total), "{term} months");
        }
    }

    #[test]
    fn per_term_overage_in_row_order_by_hand() {
        // EUR, extended, 12 months, 3 devices included:
        //   flat fee 4000.00 × 1.00                     = 4000.00
        //   rows: VVX, Studio, VVX | Studio, CCX over the included 3
        //   overage: 1 CCX × 36.00 = 36.00, 1 Studio × 219.00 = 219.00
        //   2 licenses × 69.00 = 138.00                  total 4393.00
        let q = quote(
            &[
                (Some("VVX 450"), 1),
                (Some("Studio X50"), 1),
                (Some("VVX 450"), 1),
                (Some("Studio X50"), 1),
                (Some("CCX 500"), 1),
                (None, 2),
            ],
            "FR",
            contract(
                "C-2",
                PricingModel::PerTerm,
                Coverage::Extended,
                12,
                Some(3),
            ),
        );
        assert_eq!(
            amounts(&q),
            vec![
                (LineKind::TermFee, "4000.00".into()),
                (LineKind::Overage, "36.00".into()),
                (LineKind::Overage, "219.00".into()),
                (LineKind::Licenses, "138.00".into()),
            ]
        );
        assert_eq!(q.total, dec("4393.00"));
        insta::assert_json_snapshot!("per_term_eur_extended_12", q);
    }

    #[test]
    fn per_term_exactly_at_the_included_count_has_no_overage() {
        let q = quote(
            &[(Some("VVX 450"), 3)],
            "DE",
            contract(
                "C-2",
                PricingModel::PerTerm,
                Coverage::Standard,
                36,
                Some(3),
            ),
        );
        // 2500.00 × 2.60
        assert_eq!(amounts(&q), vec![(LineKind::TermFee, "6500.00".into())]);
        let q = quote(
            &[(Some("VVX 450"), 4)],
            "DE",
            contract(
                "C-2",
                PricingModel::PerTerm,
                Coverage::Standard,
                36,
                Some(3),
            ),
        );
        // + 1 VVX × 19.00 × 2.60 = 49.40, no volume tier
        assert_eq!(q.total, dec("6549.40"));
    }

    #[test]
    fn groups_by_contract_and_region_with_ids_that_are_deterministic() {
        let p = Policy::load(None).unwrap();
        let mut c = contract("C-1", PricingModel::PerDevice, Coverage::Extended, 12, None);
        c.home_region = Region::Amer;
        let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
        let items = vec![
            item(&p, 1, Some("VVX 450"), "US", "C-1"),
            item(&p, 2, Some("VVX 450"), "JP", "C-1"),
            item(&p, 3, Some("VVX 450"), "DE", "C-1"),
        ];
        let q = build_quotes(
            &items,
            &[true, true, false],
            &contracts,
            &p,
            d("2026-11-24"),
        )
        .unwrap();
        assert_eq!(
            q.iter()
                .map(|q| (q.region, q.currency.as_str(), q.devices))
                .collect::<Vec<_>>(),
            vec![(Region::Amer, "USD", 1), (Region::Apac, "USD", 1)]
        );
        let again = build_quotes(
            &items,
            &[true, true, false],
            &contracts,
            &p,
            d("2026-11-24"),
        )
        .unwrap();
        assert_eq!(q[0].quote_id, again[0].quote_id);
        assert_ne!(q[0].quote_id, q[1].quote_id);
    }

    /// A price book past the policy's ranges (which `Policy::build` would
    /// refuse, set here behind its back) gives an error, never a panic:
    /// every product and sum of a quote is checked.
    #[test]
    fn amounts_that_do_not_fit_are_an_error_not_a_panic() {
        let mut p = Policy::load(None).unwrap();
        let book = p.file.pricing.unit.get_mut("USD").unwrap();
        book.get_mut("vvx").unwrap().standard = Decimal::MAX;
        let fee = p.file.pricing.per_term_fee.get_mut("USD").unwrap();
        fee.standard = Decimal::MAX;
        let as_of = d("2026-11-24");
        for (pricing, n) in [(PricingModel::PerDevice, 2), (PricingModel::PerTerm, 1)] {
            let c = contract("C-1", pricing, Coverage::Standard, 36, Some(0));
            let contracts: HashMap<CompactString, Contract> =
                [(c.id.clone(), c)].into_iter().collect();
            let items: Vec<Item> = (1..=n)
                .map(|row| item(&p, row, Some("VVX 450"), "US", "C-1"))
                .collect();
            let e =
                build_quotes(&items, &vec![true; items.len()], &contracts, &p, as_of).unwrap_err();
            assert!(matches!(e, QuoteError::Overflow { .. }), "{e}");
        }
        let q = quote(
            &[(Some("VVX 450"), 1)],
            "US",
            contract("C-1", PricingModel::PerDevice, Coverage::Standard, 12, None),
        );
        let huge = Quote {
            total: Decimal::MAX,
            ..q
        };
        let e = totals_by_currency(&[huge.clone(), huge]).unwrap_err();
        assert!(matches!(e, QuoteError::Overflow { .. }), "{e}");
    }

    /// A valid-until date past chrono's last date is an error naming it.
    #[test]
    fn valid_until_past_the_last_date_is_an_error() {
        let p = Policy::load(None).unwrap();
        let c = contract("C-1", PricingModel::PerDevice, Coverage::Standard, 12, None);
        let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
        let items = vec![item(&p, 1, Some("VVX 450"), "US", "C-1")];
        let as_of = NaiveDate::MAX - Days::new(10);
        let e = build_quotes(&items, &[true], &contracts, &p, as_of).unwrap_err();
        assert!(
            matches!(e, QuoteError::DateOutOfRange { days: 30, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("valid-until"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn total_is_the_sum_of_lines_and_row_order_does_not_matter(
            picks in proptest::collection::vec(0usize..6, 1..400),
            seed in 0u64..1000,
            term in proptest::sample::select(vec![12u32, 24, 36]),
        ) {
            let p = Policy::load(None).unwrap();
            let models = [Some("VVX 450"), Some("CCX 500"), Some("Studio X50"), Some("Sync 20"), Some("Trio C60"), None];
            let c = contract("C-1", PricingModel::PerDevice, Coverage::Standard, term, None);
            let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
            let mut items: Vec<Item> = picks.iter().enumerate().map(|(i, m)| item(&p, i as u64 + 1, models[*m], "DE", "C-1")).collect();
            let q = build_quotes(&items, &vec![true; items.len()], &contracts, &p, d("2026-11-24")).unwrap();
            let sum: Decimal = q[0].lines.iter().map(|l| l.amount).sum();
            proptest::prop_assert_eq!(q[0].total, sum);
            proptest::prop_assert_eq!(q[0].subtotal + q[0].discount, q[0].total);
            // A deterministic shuffle.
            let n = items.len();
            for i in (1..n).rev() {
                let j = ((seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64)) >> 33) as usize % (i + 1);
                items.swap(i, j);
            }
            let shuffled = build_quotes(&items, &vec![true; n], &contracts, &p, d("2026-11-24")).unwrap();
            proptest::prop_assert_eq!(shuffled[0].total, q[0].total);
        }
    }
}
