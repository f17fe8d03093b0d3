//! How values are written in the journal's columns (times, coverage,
//! item types, feature bits) and read back.

use chrono::{DateTime, Utc};

use super::PlannedItem;
use crate::api::{self, CoverageWire, ItemType};

pub(in crate::submit) fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(in crate::submit) fn coverage_str(c: CoverageWire) -> &'static str {
    match c {
        CoverageWire::Standard => "standard",
        CoverageWire::Extended => "extended",
    }
}

pub(super) fn parse_coverage(s: &str) -> CoverageWire {
    if s == "extended" {
        CoverageWire::Extended
    } else {
        CoverageWire::Standard
    }
}

pub(in crate::submit) fn item_type_str(t: ItemType) -> &'static str {
    match t {
        ItemType::Device => "device",
        ItemType::License => "license",
    }
}

pub(in crate::submit) fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The verified features as the journal and `results.csv` keep them:
/// `meetings;conferencing;uc`, or fewer.
pub(in crate::submit) fn features_text(bits: i64) -> String {
    let mut v = Vec::new();
    for (bit, name) in FEATURES {
        if bits & bit != 0 {
            v.push(name);
        }
    }
    v.join(";")
}

/// The journal's `features` bits.
const FEATURES: [(i64, &str); 3] = [(1, "meetings"), (2, "conferencing"), (4, "uc")];

pub(in crate::submit) fn features_bits(f: &api::Features) -> i64 {
    i64::from(f.meetings) | i64::from(f.conferencing) << 1 | i64::from(f.uc) << 2
}

pub(super) fn read_planned(r: &rusqlite::Row<'_>) -> rusqlite::Result<PlannedItem> {
    let item_type: String = r.get(1)?;
    let coverage: String = r.get(11)?;
    Ok(PlannedItem {
        event_key: r.get(0)?,
        item_type: if item_type == "license" {
            ItemType::License
        } else {
            ItemType::Device
        },
        serial_number: r.get(2)?,
        mac_address: r.get(3)?,
        model: r.get(4)?,
        license_id: r.get(5)?,
        bound_serial: r.get(6)?,
        contract_id: r.get(7)?,
        region: r.get(8)?,
        country: r.get(9)?,
        deactivated_at: r.get(10)?,
        coverage: parse_coverage(&coverage),
    })
}
