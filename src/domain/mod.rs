//! Validated identifiers. Each type can only be built by its parser, so once a
//! row has passed `validate` its identifiers are canonical and correct.

mod country;
mod date;
mod mac;
mod serial;

pub use country::{normalise_name, Country, CountryError, CountryTable, Region};
pub use date::{parse_timestamp, DateError, DateFormat, Timestamp};
pub(crate) use mac::hex48;
pub use mac::{parse_oui, Mac, MacError};
pub use serial::{LicenseError, LicenseId, Serial, SerialError};
mod item;
pub use item::{parse_bool, DeactivationReason, Item, ItemKind, RepairStatus};

/// Index of a model in the policy's list of models (`Policy::models`): an
/// item names its model by it.
pub type ModelId = u16;
mod contract;
pub use contract::{Contract, ContractStatus, Coverage, PricingModel};
mod reject;
pub use reject::{Reject, RejectCode};

/// `s.trim()`, with a shortcut for the usual field that is empty or starts
/// and ends with a visible ASCII character, so has nothing to trim (the
/// parsers trim what validation has trimmed already).
pub fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(b)) if a.is_ascii_graphic() && b.is_ascii_graphic() => s,
        (None, _) => s,
        _ => s.trim(),
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #[test]
        fn trim_shortcut_equals_trim(s in "\\PC{0,6}|[ \\ta\u{a0}\u{3000}]{0,6}") {
            proptest::prop_assert_eq!(super::trim(&s), s.trim());
        }
    }
}
