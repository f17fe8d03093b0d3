//! The rules of one row: each field parsed and checked against the policy,
//! every problem collected (a row gets all its codes, not the first), and
//! the item and its keys made when it has none.

use std::borrow::Cow;

use compact_str::CompactString;
use smallvec::SmallVec;

use super::columns::{field_text, Col, INVENTORY_COLUMNS};
use super::{RowOutcome, ThreadState, Validator};
use crate::dedupe::RowKeys;
use crate::domain::{
    parse_bool, parse_timestamp, trim, DateError, DeactivationReason, Item, ItemKind, LicenseId,
    Mac, MacError, Reject, RejectCode, RepairStatus, Serial,
};
use crate::ingest::{RecordChunk, RecordIdx};

impl<'p> Validator<'p> {
    /// [`Validator::validate`], with the item (when the options keep items)
    /// handed to `map` as it is made, with the row's keys: a caller that
    /// only reads it need not box it, and the outcome is built once.
    #[inline]
    pub fn validate_with<T>(
        &self,
        state: &mut ThreadState,
        chunk: &RecordChunk,
        r: RecordIdx,
        map: impl FnOnce(Item, &RowKeys) -> T,
    ) -> RowOutcome<T> {
        let row = chunk.row(r);
        let fields = chunk.view_in(r, &mut state.ends);
        if let Some(p) = chunk.problem_of(r, &fields) {
            return RowOutcome::Rejected {
                rejects: vec![Reject {
                    row,
                    column: Cow::Borrowed(""),
                    value: chunk.problem_preview(r).into_owned(),
                    code: p.code,
                    message: p.into_owned().message,
                    site: Default::default(),
                }],
                keys: None,
            };
        }
        let mut v = RowCheck {
            row,
            rejects: Vec::new(),
            warnings: Vec::new(),
        };

        // Any field that is not UTF-8 rejects the row, naming the column. One
        // check of the whole record covers the common case: fields split at
        // ASCII delimiters, so each is UTF-8 when the record is.
        let record = chunk.record_text(r);
        let text = |i: usize| field_text(&fields, record, i);
        let mut texts: [&str; INVENTORY_COLUMNS.len()] = [""; INVENTORY_COLUMNS.len()];
        for (c, idx) in self.columns.canonical.iter().enumerate() {
            if let Some(i) = *idx {
                match text(i) {
                    Ok(s) => texts[c] = trim(s),
                    Err(()) => v.encoding(Cow::Borrowed(INVENTORY_COLUMNS[c]), fields.field(i)),
                }
            }
        }
        // The carried columns are copied only for an item; without one,
        // they are only checked.
        let mut extra = SmallVec::new();
        for &i in &self.columns.extras {
            match text(i) {
                Ok(s) if self.options.keep_items => extra.push(CompactString::from(s)),
                Ok(_) => {}
                Err(()) => v.encoding(Cow::Owned(self.columns.names[i].clone()), fields.field(i)),
            }
        }
        let get = |c: Col| -> &str { texts[c as usize] };

        let kind = match get(Col::ItemType) {
            "" => Some(ItemKind::Device),
            s => v.parsed(Col::ItemType, s, ItemKind::parse(s), ItemKind::ALLOWED),
        };
        let account_id = v.required(Col::Account, get(Col::Account)).and_then(|s| {
            state.account.is_match(s).then_some(s).or_else(|| {
                v.reject(
                    Col::Account,
                    s,
                    RejectCode::AccountInvalid,
                    "account id does not match the policy's account pattern".into(),
                );
                None
            })
        });
        let contract_id = v.required(Col::Contract, get(Col::Contract)).and_then(|s| {
            state.contract.is_match(s).then_some(s).or_else(|| {
                v.reject(
                    Col::Contract,
                    s,
                    RejectCode::ContractIdInvalid,
                    "contract id does not match the policy's contract pattern".into(),
                );
                None
            })
        });
        let country = v.required(Col::Country, get(Col::Country)).and_then(|s| {
            match self.policy.countries.parse(s) {
                Ok(c) => match self.policy.countries.region(c) {
                    Some(region) => Some((c, region)),
                    None => {
                        v.reject(
                            Col::Country,
                            s,
                            RejectCode::CountryInvalid,
                            format!("country {c} has no sales region in the policy"),
                        );
                        None
                    }
                },
                Err(e) => {
                    v.reject(Col::Country, s, RejectCode::CountryInvalid, e.to_string());
                    None
                }
            }
        });
        let deactivated_at = v
            .required(Col::DeactivatedAt, get(Col::DeactivatedAt))
            .and_then(
                |s| match parse_timestamp(s, self.options.date_format.as_ref()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        let code = match e {
                            DateError::Invalid => RejectCode::DateInvalid,
                            DateError::Ambiguous(..) => RejectCode::DateAmbiguous,
                        };
                        v.reject(Col::DeactivatedAt, s, code, e.to_string());
                        None
                    }
                },
            );
        let reason = match get(Col::Reason) {
            "" => Some(DeactivationReason::Unknown),
            s => v.parsed(
                Col::Reason,
                s,
                DeactivationReason::parse(s),
                DeactivationReason::ALLOWED,
            ),
        };
        let repair = match get(Col::Repair) {
            "" => Some(RepairStatus::None),
            s => v.parsed(
                Col::Repair,
                s,
                RepairStatus::parse(s),
                RepairStatus::ALLOWED,
            ),
        };
        let lost = match get(Col::Lost) {
            "" => Some(false),
            s => v.parsed(Col::Lost, s, parse_bool(s), "true, false, yes, no, 1, 0"),
        };

        let (mut serial, mut mac, mut model, mut license_id, mut bound_serial) =
            (None, None, None, None, None);
        match kind {
            Some(ItemKind::Device) => {
                let model_text = v.required(Col::Model, get(Col::Model));
                model = model_text.and_then(|m| self.policy.model(m));
                let family = model.map(|m| self.policy.family_of(m));
                serial = v
                    .required(Col::Serial, get(Col::Serial))
                    .and_then(|s| self.serial(&mut v, Col::Serial, s));
                if let (Some(s), Some(pattern)) =
                    (serial, family.and_then(|f| f.serial_pattern.as_ref()))
                {
                    if !pattern.is_match(s.as_str()) {
                        v.reject(
                            Col::Serial,
                            get(Col::Serial),
                            RejectCode::SerialInvalid,
                            format!(
                                "serial does not match the pattern of the {} family",
                                family.map_or("", |f| f.name.as_str())
                            ),
                        );
                        serial = None;
                    }
                }
                mac = match get(Col::Mac) {
                    "" => {
                        if let Some(m) = model
                            .map(|m| &self.policy.models[usize::from(m)])
                            .filter(|m| m.network_port)
                        {
                            v.reject(
                                Col::Mac,
                                "",
                                RejectCode::MissingField,
                                format!(
                                    "mac_address is required for a {} (it has a network port)",
                                    m.name
                                ),
                            );
                        }
                        None
                    }
                    s => match Mac::parse(s) {
                        Ok(m) => {
                            if !self.policy.vendor_ouis.contains(&m.oui()) {
                                v.warn(Col::Mac, s, RejectCode::MacForeignOui, format!("OUI {} is not a Poly/Polycom/Plantronics OUI; the row is kept", &m.to_string()[..8]));
                            }
                            Some(m)
                        }
                        Err(e) => {
                            let code = match e {
                                MacError::Invalid => RejectCode::MacInvalid,
                                MacError::Reserved(_) => RejectCode::MacReserved,
                            };
                            v.reject(Col::Mac, s, code, e.to_string());
                            None
                        }
                    },
                };
                if let (Some(s), Some(m), Some(f), Some(model)) = (serial, mac, family, model) {
                    if f.serial_is_mac && s.as_bytes() != m.hex12() {
                        v.reject(
                            Col::Serial,
                            get(Col::Serial),
                            RejectCode::SerialMacMismatch,
                            format!(
                                "a {}'s serial is its MAC's 12 hex digits: expected {}",
                                self.policy.models[usize::from(model)].name,
                                String::from_utf8_lossy(&m.hex12())
                            ),
                        );
                    }
                }
            }
            Some(ItemKind::License) => {
                license_id =
                    v.required(Col::License, get(Col::License)).and_then(
                        |s| match LicenseId::parse(s) {
                            Ok(l) => Some(l),
                            Err(e) => {
                                v.reject(
                                    Col::License,
                                    s,
                                    RejectCode::LicenseInvalid,
                                    e.to_string(),
                                );
                                None
                            }
                        },
                    );
                // Some exports put the bound device in serial_number.
                let (col, text) = match get(Col::BoundSerial) {
                    "" => (Col::Serial, get(Col::Serial)),
                    s => (Col::BoundSerial, s),
                };
                if !text.is_empty() {
                    bound_serial = self.serial(&mut v, col, text);
                }
            }
            None => {}
        }

        match (
            kind,
            account_id,
            contract_id,
            country,
            deactivated_at,
            reason,
            repair,
            lost,
        ) {
            (
                Some(kind),
                Some(account_id),
                Some(contract_id),
                Some((country, region)),
                Some(deactivated_at),
                Some(reason),
                Some(repair),
                Some(lost),
            ) if v.rejects.is_empty() => {
                let keys = RowKeys::new(
                    row,
                    serial.filter(|_| kind == ItemKind::Device),
                    mac,
                    license_id,
                );
                let item = self.options.keep_items.then(|| {
                    map(
                        Item {
                            row,
                            kind,
                            serial,
                            mac,
                            model,
                            model_text: get(Col::Model).into(),
                            license_id,
                            bound_serial,
                            account_id: account_id.into(),
                            contract_id: contract_id.into(),
                            country,
                            region,
                            site: get(Col::Site).into(),
                            deactivated_at,
                            deactivation_reason: reason,
                            repair_status: repair,
                            reported_lost: lost,
                            extra: std::mem::take(&mut extra),
                        },
                        &keys,
                    )
                });
                RowOutcome::Valid {
                    keys,
                    item,
                    warnings: v.warnings,
                }
            }
            _ => {
                // Only here, off the common path: the keys that parsed are
                // prepared for the duplicate index to look up.
                let serial = serial.filter(|_| kind == Some(ItemKind::Device));
                let keys = (serial.is_some() || mac.is_some() || license_id.is_some())
                    .then(|| RowKeys::new(row, serial, mac, license_id));
                let site = get(Col::Site);
                if !site.is_empty() {
                    for r in &mut v.rejects {
                        r.site = site.into();
                    }
                }
                RowOutcome::Rejected {
                    rejects: v.rejects,
                    keys,
                }
            }
        }
    }

    fn serial(&self, v: &mut RowCheck, col: Col, s: &str) -> Option<Serial> {
        match Serial::parse(s, self.policy.serial_min_len, self.policy.serial_max_len) {
            Ok(serial) => Some(serial),
            Err(e) => {
                v.reject(col, s, RejectCode::SerialInvalid, e.to_string());
                None
            }
        }
    }
}

/// Collects the problems of one row.
struct RowCheck {
    row: u64,
    rejects: Vec<Reject>,
    warnings: Vec<Reject>,
}

impl RowCheck {
    fn reject(&mut self, col: Col, value: &str, code: RejectCode, message: String) {
        self.rejects.push(Reject {
            row: self.row,
            column: Cow::Borrowed(col.name()),
            value: value.to_string(),
            code,
            message,
            site: Default::default(),
        });
    }

    fn warn(&mut self, col: Col, value: &str, code: RejectCode, message: String) {
        self.warnings.push(Reject {
            row: self.row,
            column: Cow::Borrowed(col.name()),
            value: value.to_string(),
            code,
            message,
            site: Default::default(),
        });
    }

    fn encoding(&mut self, column: Cow<'static, str>, raw: &[u8]) {
        self.rejects.push(Reject {
            row: self.row,
            column,
            value: String::from_utf8_lossy(raw).into_owned(),
            code: RejectCode::EncodingInvalid,
            message: "field is not valid UTF-8 (save the export as UTF-8)".into(),
            site: Default::default(),
        });
    }

    fn required<'a>(&mut self, col: Col, s: &'a str) -> Option<&'a str> {
        if s.is_empty() {
            self.reject(
                col,
                "",
                RejectCode::MissingField,
                format!("{} is required", col.name()),
            );
            None
        } else {
            Some(s)
        }
    }

    fn parsed<T>(&mut self, col: Col, s: &str, parsed: Option<T>, allowed: &str) -> Option<T> {
        if parsed.is_none() {
            self.reject(
                col,
                s,
                RejectCode::ValueInvalid,
                format!("{} must be one of: {allowed}", col.name()),
            );
        }
        parsed
    }
}
