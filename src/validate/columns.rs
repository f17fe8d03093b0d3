//! The inventory's columns as validation reads them: their canonical
//! names and order, and a field's text.

use crate::ingest::FieldView;

/// The inventory columns refleet understands (SPEC §2.1), in canonical order.
pub const INVENTORY_COLUMNS: [&str; 14] = [
    "serial_number",
    "mac_address",
    "model",
    "item_type",
    "license_id",
    "bound_serial",
    "account_id",
    "contract_id",
    "country",
    "site",
    "deactivated_at",
    "deactivation_reason",
    "repair_status",
    "reported_lost",
];

#[derive(Clone, Copy)]
pub(super) enum Col {
    Serial = 0,
    Mac,
    Model,
    ItemType,
    License,
    BoundSerial,
    Account,
    Contract,
    Country,
    Site,
    DeactivatedAt,
    Reason,
    Repair,
    Lost,
}

impl Col {
    pub(super) fn name(self) -> &'static str {
        INVENTORY_COLUMNS[self as usize]
    }
}

/// Field `i` as text, `record` being the whole record when it is UTF-8;
/// `Err` when the field is not UTF-8.
#[inline(always)]
pub(crate) fn field_text<'c>(
    fields: &FieldView<'c>,
    record: Option<&'c str>,
    i: usize,
) -> Result<&'c str, ()> {
    match record {
        Some(rec) => fields.text(rec, i).ok_or(()),
        None => std::str::from_utf8(fields.field(i)).map_err(|_| ()),
    }
}
