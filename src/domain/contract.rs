//! Contracts (SPEC §2.2): what a device's reactivation is bought under.

use chrono::NaiveDate;
use compact_str::CompactString;

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

fn key(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

impl ContractStatus {
    pub const ALLOWED: &'static str = "active, expired, suspended";
    pub fn parse(s: &str) -> Option<ContractStatus> {
        match key(s).as_str() {
            "active" => Some(ContractStatus::Active),
            "expired" => Some(ContractStatus::Expired),
            "suspended" => Some(ContractStatus::Suspended),
            _ => None,
        }
    }
}

impl Coverage {
    pub const ALLOWED: &'static str = "standard, extended";
    pub fn parse(s: &str) -> Option<Coverage> {
        match key(s).as_str() {
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
    pub fn parse(s: &str) -> Option<PricingModel> {
        match key(s).as_str() {
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
    pub cancellation_days: u32,
}
