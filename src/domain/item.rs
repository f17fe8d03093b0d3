//! The validated inventory item: what every stage after `validate` works on.

use compact_str::CompactString;
use smallvec::SmallVec;

use super::{Country, LicenseId, Mac, ModelId, Region, Serial, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    Device,
    License,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeactivationReason {
    LicenseTimeout,
    ContractLapsed,
    Migration,
    Manual,
    SecurityLock,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepairStatus {
    None,
    Pending,
    InRepair,
}

/// Lower-case with `_` for spaces and hyphens: "Security Lock" → "security_lock".
pub(super) fn enum_key(s: &str) -> CompactString {
    s.trim()
        .chars()
        .map(|c| {
            if c == ' ' || c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

impl ItemKind {
    pub const ALLOWED: &'static str = "device, license";
    /// Exact canonical spelling first (the common case), then lenient.
    pub fn parse(s: &str) -> Option<ItemKind> {
        Self::exact(s).or_else(|| Self::exact(&enum_key(s)))
    }

    fn exact(s: &str) -> Option<ItemKind> {
        match s {
            "device" => Some(ItemKind::Device),
            "license" | "licence" => Some(ItemKind::License),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Device => "device",
            ItemKind::License => "license",
        }
    }
}

impl DeactivationReason {
    pub const ALLOWED: &'static str =
        "license_timeout, contract_lapsed, migration, manual, security_lock, unknown";
    /// Exact canonical spelling first (the common case), then lenient.
    pub fn parse(s: &str) -> Option<DeactivationReason> {
        Self::exact(s).or_else(|| Self::exact(&enum_key(s)))
    }

    fn exact(s: &str) -> Option<DeactivationReason> {
        use DeactivationReason::*;
        match s {
            "license_timeout" | "licence_timeout" => Some(LicenseTimeout),
            "contract_lapsed" => Some(ContractLapsed),
            "migration" => Some(Migration),
            "manual" => Some(Manual),
            "security_lock" => Some(SecurityLock),
            "unknown" => Some(Unknown),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        use DeactivationReason::*;
        match self {
            LicenseTimeout => "license_timeout",
            ContractLapsed => "contract_lapsed",
            Migration => "migration",
            Manual => "manual",
            SecurityLock => "security_lock",
            Unknown => "unknown",
        }
    }
}

impl RepairStatus {
    pub const ALLOWED: &'static str = "none, pending, in_repair";
    /// Exact canonical spelling first (the common case), then lenient.
    pub fn parse(s: &str) -> Option<RepairStatus> {
        Self::exact(s).or_else(|| Self::exact(&enum_key(s)))
    }

    fn exact(s: &str) -> Option<RepairStatus> {
        match s {
            "none" => Some(RepairStatus::None),
            "pending" => Some(RepairStatus::Pending),
            "in_repair" => Some(RepairStatus::InRepair),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RepairStatus::None => "none",
            RepairStatus::Pending => "pending",
            RepairStatus::InRepair => "in_repair",
        }
    }
}

/// `true/false/yes/no/1/0` (SPEC §2.1), any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    bool_exact(s).or_else(|| bool_exact(&enum_key(s)))
}

fn bool_exact(s: &str) -> Option<bool> {
    match s {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// One validated row of the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// 1-based data record number in the source file.
    pub row: u64,
    pub kind: ItemKind,
    pub serial: Option<Serial>,
    pub mac: Option<Mac>,
    /// The catalog model, when the model name is known.
    pub model: Option<ModelId>,
    /// The model as the export wrote it (trimmed).
    pub model_text: CompactString,
    pub license_id: Option<LicenseId>,
    pub bound_serial: Option<Serial>,
    pub account_id: CompactString,
    pub contract_id: CompactString,
    pub country: Country,
    pub region: Region,
    pub site: CompactString,
    pub deactivated_at: Timestamp,
    pub deactivation_reason: DeactivationReason,
    pub repair_status: RepairStatus,
    pub reported_lost: bool,
    /// The columns refleet does not know, in file order, carried to reports.
    /// Inline for up to two columns: no allocation per row in the hot path.
    pub extra: SmallVec<[CompactString; 2]>,
}

impl Item {
    /// The identity used for duplicates and idempotency: serial for a
    /// device, license id for a license.
    pub fn key(&self) -> String {
        match (self.kind, self.serial, self.license_id) {
            (ItemKind::License, _, Some(l)) => l.to_string(),
            (_, Some(s), _) => s.to_string(),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_are_lenient_about_case_and_separators() {
        assert_eq!(
            DeactivationReason::parse(" Security Lock "),
            Some(DeactivationReason::SecurityLock)
        );
        assert_eq!(
            DeactivationReason::parse("license-timeout"),
            Some(DeactivationReason::LicenseTimeout)
        );
        assert_eq!(
            RepairStatus::parse("In Repair"),
            Some(RepairStatus::InRepair)
        );
        assert_eq!(ItemKind::parse("Licence"), Some(ItemKind::License));
        assert_eq!(ItemKind::parse("phone"), None);
        for (s, b) in [
            ("TRUE", true),
            ("yes", true),
            ("1", true),
            ("No", false),
            ("0", false),
            ("false", false),
        ] {
            assert_eq!(parse_bool(s), Some(b), "{s}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }
}
