//! The policy (SPEC §2.3): catalog, identifier rules, regions, calendar,
//! price book and header aliases.
//!
//! A complete default is built into the binary (`default.toml`). A user file
//! given with `--policy` is merged over it: tables merge key by key, and an
//! entry of the same name (a model, a family, a country…) replaces the
//! built-in one; `replace = true` at the top of the user file starts from an
//! empty policy instead. The merged [`PolicyFile`] is then built once into the
//! runtime [`Policy`] that stages use (compiled patterns, look-up tables).
//!
//! Every number of the policy has a range ([`limits`]), checked when the
//! policy is built: a value outside it is refused naming its TOML key (exit
//! 2), so that no date or amount computed from the policy can overflow and
//! no business-day count can run without end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::Path;

use chrono::NaiveDate;
use compact_str::CompactString;
use regex::Regex;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

mod calendar;

pub use calendar::{parse_weekday, Calendar};

use crate::domain::{normalise_name, parse_oui, Country, CountryTable, Coverage, Region};

/// The built-in default policy.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");

/// The ranges of the policy's numbers: wide enough for any real fleet and
/// price list, narrow enough that every date and amount computed from them
/// fits (README "Policy and contracts: ranges" repeats them).
pub mod limits {
    use std::ops::RangeInclusive;

    use rust_decimal::Decimal;

    /// `[sla] standard`, `extended`: business days, up to a year.
    pub const SLA_DAYS: RangeInclusive<u32> = 1..=365;
    /// `[pricing] quote_validity_days`: up to ten years.
    pub const QUOTE_VALIDITY_DAYS: RangeInclusive<u32> = 1..=3650;
    /// `[pricing.unit.CUR] family = { standard, extended }`: 0 to 1,000,000
    /// per device or license per 12 months.
    pub const MAX_UNIT_PRICE: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
    /// `[pricing.per_term_fee.CUR] standard, extended`: 0 to 1,000,000,000
    /// per region per 12 months.
    pub const MAX_TERM_FEE: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
    /// `[pricing] term_multipliers`: keys 12, 24, 36 (the terms a contract
    /// may have); values above 0, at most 100.
    pub const TERMS: [u32; 3] = [12, 24, 36];
    pub const MAX_TERM_MULTIPLIER: Decimal = Decimal::ONE_HUNDRED;
    /// `[pricing] volume_tiers`: `min_devices` up to 10,000,000; `discount`
    /// a fraction from 0 up to, not including, 1 ("0.10" is 10 %).
    pub const TIER_MIN_DEVICES: RangeInclusive<u64> = 0..=10_000_000;
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("policy is inconsistent: {0}")]
    Invalid(String),
    #[error("policy value out of range: {key} = {value} (allowed: {allowed})")]
    OutOfRange {
        key: String,
        value: String,
        allowed: String,
    },
}

/// `value` if it lies in `range`, else the error naming `key`.
fn in_range<T: PartialOrd + Display>(
    key: &str,
    value: T,
    range: RangeInclusive<T>,
    unit: &str,
) -> Result<T, PolicyError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(out_of_range(
            key,
            &value,
            format!("{} to {} {unit}", range.start(), range.end()),
        ))
    }
}

fn out_of_range(key: &str, value: &dyn Display, allowed: String) -> PolicyError {
    PolicyError::OutOfRange {
        key: key.to_string(),
        value: value.to_string(),
        allowed,
    }
}

/// A TOML key part: bare when it can be, else quoted.
fn key_part(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

/// Checks every price, multiplier and tier of the price book.
fn check_pricing(p: &PricingFile) -> Result<(), PolicyError> {
    use limits::*;
    let money = |key: String, v: Decimal, max: Decimal| -> Result<(), PolicyError> {
        if v < Decimal::ZERO || v > max {
            return Err(out_of_range(&key, &v, format!("0 to {max}")));
        }
        Ok(())
    };
    let both = |key: String, prices: &CoveragePrices, max: Decimal| -> Result<(), PolicyError> {
        money(format!("{key}.standard"), prices.standard, max)?;
        money(format!("{key}.extended"), prices.extended, max)
    };
    for (currency, book) in &p.unit {
        for (family, prices) in book {
            let key = format!("pricing.unit.{}.{}", key_part(currency), key_part(family));
            both(key, prices, MAX_UNIT_PRICE)?;
        }
    }
    for (currency, prices) in &p.per_term_fee {
        let key = format!("pricing.per_term_fee.{}", key_part(currency));
        both(key, prices, MAX_TERM_FEE)?;
    }
    for (term, m) in &p.term_multipliers {
        let key = format!("pricing.term_multipliers.{}", key_part(term));
        if !term.parse().is_ok_and(|t: u32| TERMS.contains(&t)) {
            return Err(PolicyError::Invalid(format!(
                "{key}: a contract's term is 12, 24 or 36 months"
            )));
        }
        if *m <= Decimal::ZERO || *m > MAX_TERM_MULTIPLIER {
            return Err(out_of_range(
                &key,
                m,
                format!("above 0, at most {MAX_TERM_MULTIPLIER}"),
            ));
        }
    }
    for (i, tier) in p.volume_tiers.iter().flatten().enumerate() {
        let key = format!("pricing.volume_tiers[{i}]");
        in_range(
            &format!("{key}.min_devices"),
            tier.min_devices,
            TIER_MIN_DEVICES,
            "devices",
        )?;
        if tier.discount < Decimal::ZERO || tier.discount >= Decimal::ONE {
            return Err(out_of_range(
                &format!("{key}.discount"),
                &tier.discount,
                "0 up to, not including, 1 (\"0.10\" is 10 %)".into(),
            ));
        }
    }
    Ok(())
}

/// The policy as written in TOML. Every part is optional so that a user file
/// can say only what it changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// In a user file: start from an empty policy instead of the built-in one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
    #[serde(default)]
    pub identifiers: IdentifierRules,
    #[serde(default)]
    pub vendor_ouis: BTreeMap<String, String>,
    #[serde(default)]
    pub families: BTreeMap<String, FamilyEntry>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelEntry>,
    #[serde(default)]
    pub regions: BTreeMap<String, RegionEntry>,
    #[serde(default)]
    pub countries: BTreeMap<String, Region>,
    #[serde(default)]
    pub country_aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub compliance: Compliance,
    #[serde(default)]
    pub calendar: CalendarFile,
    #[serde(default)]
    pub sla: Sla,
    #[serde(default)]
    pub pricing: PricingFile,
    #[serde(default)]
    pub headers: Headers,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierRules {
    pub serial_min_len: Option<usize>,
    pub serial_max_len: Option<usize>,
    pub account_pattern: Option<String>,
    pub contract_pattern: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyEntry {
    pub kind: String,
    #[serde(default)]
    pub serial_is_mac: bool,
    #[serde(default)]
    pub network_port: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_pattern: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub family: String,
    pub eligible: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_support: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Overrides the family's `network_port` (e.g. a USB-only model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_port: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionEntry {
    pub currency: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compliance {
    pub restricted_countries: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarFile {
    pub weekend: Option<Vec<String>>,
    #[serde(default)]
    pub weekend_overrides: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub holidays: BTreeMap<String, Vec<NaiveDate>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    pub standard: Option<u32>,
    pub extended: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingFile {
    pub quote_validity_days: Option<u32>,
    #[serde(default)]
    pub term_multipliers: BTreeMap<String, Decimal>,
    pub volume_tiers: Option<Vec<VolumeTier>>,
    #[serde(default)]
    pub per_term_fee: BTreeMap<String, CoveragePrices>,
    #[serde(default)]
    pub unit: BTreeMap<String, BTreeMap<String, CoveragePrices>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VolumeTier {
    pub min_devices: u64,
    pub discount: Decimal,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoveragePrices {
    pub standard: Decimal,
    pub extended: Decimal,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    /// Normalised alias (lower-case, letters and digits only) → canonical column.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

impl PolicyFile {
    pub fn parse(text: &str, origin: &str) -> Result<PolicyFile, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }

    pub fn builtin() -> PolicyFile {
        // The built-in file is tested to parse; an empty policy would only
        // surface as a build error below, never as a panic.
        PolicyFile::parse(DEFAULT_POLICY, "built-in policy").unwrap_or_default()
    }

    /// Lays `over` on top of `self`: maps merge key by key, set values replace.
    pub fn merge(mut self, over: PolicyFile) -> PolicyFile {
        if over.replace {
            return PolicyFile {
                replace: false,
                ..over
            };
        }
        let id = over.identifiers;
        self.identifiers.serial_min_len = id.serial_min_len.or(self.identifiers.serial_min_len);
        self.identifiers.serial_max_len = id.serial_max_len.or(self.identifiers.serial_max_len);
        self.identifiers.account_pattern = id.account_pattern.or(self.identifiers.account_pattern);
        self.identifiers.contract_pattern =
            id.contract_pattern.or(self.identifiers.contract_pattern);
        self.vendor_ouis.extend(over.vendor_ouis);
        self.families.extend(over.families);
        self.models.extend(over.models);
        self.regions.extend(over.regions);
        self.countries.extend(over.countries);
        self.country_aliases.extend(over.country_aliases);
        self.compliance.restricted_countries = over
            .compliance
            .restricted_countries
            .or(self.compliance.restricted_countries);
        self.calendar.weekend = over.calendar.weekend.or(self.calendar.weekend);
        self.calendar
            .weekend_overrides
            .extend(over.calendar.weekend_overrides);
        self.calendar.holidays.extend(over.calendar.holidays);
        self.sla.standard = over.sla.standard.or(self.sla.standard);
        self.sla.extended = over.sla.extended.or(self.sla.extended);
        let p = over.pricing;
        self.pricing.quote_validity_days =
            p.quote_validity_days.or(self.pricing.quote_validity_days);
        self.pricing.term_multipliers.extend(p.term_multipliers);
        self.pricing.volume_tiers = p.volume_tiers.or(self.pricing.volume_tiers);
        self.pricing.per_term_fee.extend(p.per_term_fee);
        for (currency, book) in p.unit {
            self.pricing.unit.entry(currency).or_default().extend(book);
        }
        self.headers.aliases.extend(over.headers.aliases);
        self
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print policy: {e}\n"))
    }
}

/// Index of a family in [`Policy::families`].
pub type FamilyId = u16;
pub use crate::domain::ModelId;

#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub serial_is_mac: bool,
    pub network_port: bool,
    pub serial_pattern: Option<Regex>,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub family: FamilyId,
    pub eligible: bool,
    pub end_of_support: Option<NaiveDate>,
    pub upgrade_path: Option<String>,
    /// Whether the device has a network port, so a MAC address is required.
    pub network_port: bool,
}

/// The runtime policy: built once, shared read-only by every stage.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The effective policy as written, for `refleet policy show`.
    pub file: PolicyFile,
    pub serial_min_len: usize,
    pub serial_max_len: usize,
    pub account_pattern: Regex,
    pub contract_pattern: Regex,
    /// Looked up once per MAC: a fast hasher, not SipHash.
    pub vendor_ouis: HashSet<u32, foldhash::fast::FixedState>,
    pub families: Vec<Family>,
    pub models: Vec<Model>,
    model_index: hashbrown::HashMap<CompactString, ModelId, foldhash::fast::FixedState>,
    /// Names and aliases exactly as the policy writes them: most exports
    /// do too, and this look-up needs no normalising.
    model_exact: hashbrown::HashMap<String, ModelId, foldhash::fast::FixedState>,
    pub countries: CountryTable,
    pub currencies: BTreeMap<Region, String>,
    /// Looked up once per item: a fast hasher, not SipHash.
    pub restricted: HashSet<Country, foldhash::fast::FixedState>,
    /// Normalised header or alias → canonical column name.
    pub header_aliases: HashMap<String, String>,
    pub calendar: Calendar,
    /// Activation SLA in business days: standard, extended.
    sla: [u32; 2],
}

/// Catalog matching ignores case, spaces, punctuation and a vendor prefix.
/// Short names (all real ones) are normalised without a heap allocation.
pub fn normalise_model(name: &str) -> CompactString {
    let n: CompactString = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    for prefix in ["polycom", "plantronics", "hppoly", "poly"] {
        if let Some(rest) = n.strip_prefix(prefix) {
            if !rest.is_empty() {
                return rest.into();
            }
        }
    }
    n
}

impl Policy {
    /// The built-in policy, merged with the user's file if one is given.
    pub fn load(user_file: Option<&Path>) -> Result<Policy, PolicyError> {
        let base = PolicyFile::parse(DEFAULT_POLICY, "built-in policy")?;
        let file = match user_file {
            None => base,
            Some(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
                    path: origin.clone(),
                    source,
                })?;
                base.merge(PolicyFile::parse(&text, &origin)?)
            }
        };
        Policy::build(file)
    }

    pub fn build(file: PolicyFile) -> Result<Policy, PolicyError> {
        let invalid = |m: String| PolicyError::Invalid(m);
        let pattern = |key: &str, p: &Option<String>| -> Result<Regex, PolicyError> {
            let p = p.as_deref().unwrap_or(r"^\S+$");
            Regex::new(p).map_err(|e| invalid(format!("identifiers.{key}: {e}")))
        };
        let account_pattern = pattern("account_pattern", &file.identifiers.account_pattern)?;
        let contract_pattern = pattern("contract_pattern", &file.identifiers.contract_pattern)?;
        let serial_min_len = file.identifiers.serial_min_len.unwrap_or(8);
        let serial_max_len = file.identifiers.serial_max_len.unwrap_or(20);
        if serial_min_len == 0
            || serial_min_len > serial_max_len
            || serial_max_len > crate::domain::Serial::MAX
        {
            return Err(invalid(format!(
                "identifiers.serial_min_len = {serial_min_len}, identifiers.serial_max_len = {serial_max_len}: they must satisfy 1 <= min <= max <= {}",
                crate::domain::Serial::MAX
            )));
        }

        let mut vendor_ouis = HashSet::default();
        for oui in file.vendor_ouis.keys() {
            vendor_ouis.insert(parse_oui(oui).ok_or_else(|| {
                invalid(format!("vendor_ouis: `{oui}` is not an OUI like 00:04:F2"))
            })?);
        }

        let mut families = Vec::new();
        let mut family_ids = HashMap::new();
        for (name, f) in &file.families {
            let serial_pattern = f
                .serial_pattern
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| invalid(format!("families.{name}.serial_pattern: {e}")))?;
            family_ids.insert(name.clone(), families.len() as FamilyId);
            families.push(Family {
                name: name.clone(),
                kind: f.kind.clone(),
                serial_is_mac: f.serial_is_mac,
                network_port: f.network_port,
                serial_pattern,
            });
        }

        let mut models = Vec::new();
        let mut model_index =
            hashbrown::HashMap::with_hasher(foldhash::fast::FixedState::default());
        let mut model_exact =
            hashbrown::HashMap::with_hasher(foldhash::fast::FixedState::default());
        for (name, m) in &file.models {
            let family = *family_ids.get(&m.family).ok_or_else(|| {
                invalid(format!(
                    "models.\"{name}\".family: no family `{}`",
                    m.family
                ))
            })?;
            if let Some(up) = &m.upgrade_path {
                if !file.models.contains_key(up) {
                    return Err(invalid(format!(
                        "models.\"{name}\".upgrade_path: no model `{up}`"
                    )));
                }
            }
            let id = models.len() as ModelId;
            for key in std::iter::once(name).chain(&m.aliases) {
                model_exact.insert(key.clone(), id);
                if let Some(prev) = model_index.insert(normalise_model(key), id) {
                    if prev != id {
                        return Err(invalid(format!("models: `{key}` names two models")));
                    }
                }
            }
            models.push(Model {
                name: name.clone(),
                network_port: m
                    .network_port
                    .unwrap_or(families[usize::from(family)].network_port),
                family,
                eligible: m.eligible,
                end_of_support: m.end_of_support,
                upgrade_path: m.upgrade_path.clone(),
            });
        }

        let countries = CountryTable::new(
            file.countries.iter().map(|(c, r)| (c.as_str(), *r)),
            file.country_aliases
                .iter()
                .map(|(a, c)| (a.as_str(), c.as_str())),
        )
        .map_err(invalid)?;

        let mut currencies = BTreeMap::new();
        for (name, entry) in &file.regions {
            let region = Region::parse(name).ok_or_else(|| {
                invalid(format!("regions.{name}: regions are AMER, EMEA and APAC"))
            })?;
            // A currency names a price book and labels every amount: an
            // ISO 4217 code, three capital letters.
            let c = &entry.currency;
            if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(invalid(format!(
                    "regions.{name}.currency: `{c}` is not an ISO 4217 code (three capital letters, e.g. USD)"
                )));
            }
            currencies.insert(region, entry.currency.clone());
        }

        let mut restricted = HashSet::default();
        for code in file.compliance.restricted_countries.iter().flatten() {
            restricted.insert(countries.parse(code).map_err(|_| {
                invalid(format!(
                    "compliance.restricted_countries: unknown country `{code}`"
                ))
            })?);
        }

        let mut header_aliases = HashMap::new();
        for (alias, column) in &file.headers.aliases {
            header_aliases.insert(normalise_name(alias), column.clone());
        }

        let weekdays = |key: &str, names: &[String]| -> Result<Vec<chrono::Weekday>, PolicyError> {
            names
                .iter()
                .map(|n| {
                    parse_weekday(n)
                        .ok_or_else(|| invalid(format!("{key}: `{n}` is not a weekday")))
                })
                .collect()
        };
        let default_weekend = vec!["sat".to_string(), "sun".to_string()];
        let weekend = weekdays(
            "calendar.weekend",
            file.calendar.weekend.as_ref().unwrap_or(&default_weekend),
        )?;
        let mut overrides = HashMap::new();
        for (country, days) in &file.calendar.weekend_overrides {
            overrides.insert(
                country.clone(),
                weekdays(&format!("calendar.weekend_overrides.{country}"), days)?,
            );
        }
        let holidays = file
            .calendar
            .holidays
            .iter()
            .map(|(c, days)| (c.clone(), days.iter().copied().collect()))
            .collect();
        let calendar = Calendar::new(weekend, overrides, holidays).map_err(|key| {
            invalid(format!(
                "{key}: every day of the week is a weekend day; at least one must be a working day"
            ))
        })?;
        let sla_days = |key: &str, days: Option<u32>, default: u32| {
            in_range(
                key,
                days.unwrap_or(default),
                limits::SLA_DAYS,
                "business days",
            )
        };
        let sla = [
            sla_days("sla.standard", file.sla.standard, 2)?,
            sla_days("sla.extended", file.sla.extended, 1)?,
        ];
        in_range(
            "pricing.quote_validity_days",
            file.pricing.quote_validity_days.unwrap_or(30),
            limits::QUOTE_VALIDITY_DAYS,
            "days",
        )?;
        check_pricing(&file.pricing)?;

        Ok(Policy {
            calendar,
            sla,
            serial_min_len,
            serial_max_len,
            account_pattern,
            contract_pattern,
            vendor_ouis,
            families,
            models,
            model_index,
            model_exact,
            countries,
            currencies,
            restricted,
            header_aliases,
            file,
        })
    }

    pub fn model(&self, name: &str) -> Option<ModelId> {
        if let Some(id) = self.model_exact.get(name) {
            return Some(*id);
        }
        self.model_index
            .get(normalise_model(name).as_str())
            .copied()
    }

    /// Activation SLA in business days for a coverage level.
    pub fn sla_days(&self, coverage: Coverage) -> u32 {
        match coverage {
            Coverage::Standard => self.sla[0],
            Coverage::Extended => self.sla[1],
        }
    }

    /// The expected activation date: `from` plus the SLA in business days of
    /// the device's country; `None` past the last date chrono represents
    /// (only for a `from` within years of it).
    pub fn activation_eta(
        &self,
        country: Country,
        coverage: Coverage,
        from: NaiveDate,
    ) -> Option<NaiveDate> {
        self.calendar
            .add_business_days(country, from, self.sla_days(coverage))
    }

    /// How many days a quote is valid: `[pricing] quote_validity_days`
    /// (default 30), within [`limits::QUOTE_VALIDITY_DAYS`].
    pub fn quote_validity_days(&self) -> u32 {
        self.file.pricing.quote_validity_days.unwrap_or(30)
    }

    pub fn family_of(&self, model: ModelId) -> &Family {
        &self.families[self.family_index(model)]
    }

    /// The index of a model's family in [`Policy::families`].
    pub fn family_index(&self, model: ModelId) -> usize {
        usize::from(self.models[usize::from(model)].family)
    }
}

#[cfg(test)]
mod tests;
