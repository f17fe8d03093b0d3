//! Validated identifiers. Each type can only be built by its parser, so once a
//! row has passed `validate` its identifiers are canonical and correct.

mod country;
mod date;
mod mac;
mod serial;

pub use country::{normalise_name, Country, CountryError, CountryTable, Region};
pub use date::{parse_timestamp, DateError, DateFormat, Timestamp};
pub use mac::{parse_oui, Mac, MacError};
pub use serial::{LicenseError, LicenseId, Serial, SerialError};
mod item;
pub use item::{parse_bool, DeactivationReason, Item, ItemKind, RepairStatus};
mod contract;
pub use contract::{Contract, ContractStatus, Coverage, PricingModel};
