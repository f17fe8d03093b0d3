//! Contracts (SPEC §2.2): what a device's reactivation is bought under.
//!
//! The numbers of a contract row have ranges, checked when the contracts
//! file is read (a value outside is a `VALUE_INVALID` reject of its row):
//! `term_months` one of [`Contract::TERMS`], `included_devices` 0 to
//! [`Contract::MAX_INCLUDED_DEVICES`], `cancellation_days` 0 to
//! [`Contract::MAX_CANCELLATION_DAYS`]. Dates are `YYYY-MM-DD` and only
//! compared, never added to.

use chrono::NaiveDate;
use compact_str::CompactString;

use super::item::enum_key;
use super::{Country, Region};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContractStatus {
    Active,
    Expired,
    Suspended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Coverage {
    Standard,
    Extended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PricingModel {
    PerDevice,
    PerTerm,
}

impl ContractStatus {
    pub const ALLOWED: &'static str = "active, expired, suspended";
    /// Exact canonical spelling first (the common case), then lenient.
    pub fn parse(s: &str) -> Option<ContractStatus> {
        Self::exact(s).or_else(|| Self::exact(&enum_key(s)))
    }

    fn exact(s: &str) -> Option<ContractStatus> {
        match s {
            "active" => Some(ContractStatus::Active),
            "expired" => Some(ContractStatus::Expired),
            "suspended" => Some(ContractStatus::Suspended),
            _ => None,
        }
    }
}

impl Coverage {
    pub const ALLOWED: &'static str = "standard, extended";
    /// Exact canonical spelling first (the common case), then lenient.
    pub fn parse(s: &str) -> Option<Coverage> {
        Self::exact(s).or_else(|| Self::exact(&enum_key(s)))
    }

    fn exact(s: &str) -> Option<Coverage> {
        match s {
            "standard" => Some(Coverage::Standard),
            "extended" => Some(Coverage::Extended),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Coverage::Standard => "standard",
            Coverage::Extended => "extended",
        }
    }
}

impl PricingModel {
    pub const ALLOWED: &'static str = "per_device, per_term";
    /// Exact canonical spelling first (the common case), then lenient.
    pub fn parse(s: &str) -> Option<PricingModel> {
        Self::exact(s).or_else(|| Self::exact(&enum_key(s)))
    }

    fn exact(s: &str) -> Option<PricingModel> {
        match s {
            "per_device" => Some(PricingModel::PerDevice),
            "per_term" => Some(PricingModel::PerTerm),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PricingModel::PerDevice => "per_device",
            PricingModel::PerTerm => "per_term",
        }
    }
}

/// One validated row of the contracts file.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub row: u64,
    pub id: CompactString,
    pub account_id: CompactString,
    pub status: ContractStatus,
    pub coverage: Coverage,
    pub covers_reactivation: bool,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub home_country: Country,
    pub home_region: Region,
    pub pricing_model: PricingModel,
    /// 12, 24 or 36.
    pub term_months: u32,
    /// `per_term` only: devices covered by the flat fee per region.
    pub included_devices: Option<u64>,
    pub auto_renew: bool,
    /// Days after the order in which it may be cancelled.
    pub cancellation_days: u32,
}

impl Contract {
    /// The terms a contract may run for, in months.
    pub const TERMS: [u32; 3] = [12, 24, 36];
    /// The most devices a per_term flat fee may cover (per region).
    pub const MAX_INCLUDED_DEVICES: u64 = 10_000_000;
    /// The longest cancellation window: ten years.
    pub const MAX_CANCELLATION_DAYS: u32 = 3650;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_in_any_case_with_spaces_or_hyphens() {
        for s in ["active", "Active", " ACTIVE "] {
            assert_eq!(
                ContractStatus::parse(s),
                Some(ContractStatus::Active),
                "{s}"
            );
        }
        assert_eq!(
            ContractStatus::parse("Suspended"),
            Some(ContractStatus::Suspended)
        );
        assert_eq!(ContractStatus::parse("lapsed"), None);
        assert_eq!(Coverage::parse("Extended"), Some(Coverage::Extended));
        assert_eq!(Coverage::parse("standard"), Some(Coverage::Standard));
        assert_eq!(Coverage::parse("gold"), None);
        for s in ["per_term", "Per Term", "per-term", "PER_TERM"] {
            assert_eq!(PricingModel::parse(s), Some(PricingModel::PerTerm), "{s}");
        }
        assert_eq!(
            PricingModel::parse("per device"),
            Some(PricingModel::PerDevice)
        );
        assert_eq!(PricingModel::parse("per__term"), None);
        assert_eq!(PricingModel::parse(""), None);
    }
}
