//! Validate: raw records → [`Item`]s or rejects (SPEC §3).
//!
//! Records arrive in chunks from `ingest`; each chunk is validated on all
//! cores with rayon, then walked in source order to find duplicates, so the
//! rejects come out in row order whatever the thread count. Memory is the
//! chunks in flight plus the duplicate index (a few bytes per distinct
//! serial, MAC and license id), never the file.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

use compact_str::CompactString;
use rayon::prelude::*;
use smallvec::SmallVec;

use crate::domain::{
    hex48, parse_bool, parse_timestamp, trim, DateError, DateFormat, DeactivationReason, Item,
    ItemKind, LicenseId, Mac, MacError, RepairStatus, Serial,
};
use crate::ingest::{
    match_headers, FieldEnds, FieldView, HeaderMap, IngestError, RecordChunk, RecordIdx,
    RecordSource,
};
use crate::policy::Policy;
use crate::progress::Progress;

mod probe;
use probe::{Found, KeySet, Probe, Split48, SplitMid};

/// Every reason a row can be rejected or warned about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectCode {
    MacInvalid,
    MacReserved,
    MacForeignOui,
    SerialInvalid,
    SerialMacMismatch,
    LicenseInvalid,
    AccountInvalid,
    ContractIdInvalid,
    CountryInvalid,
    DateInvalid,
    DateAmbiguous,
    DuplicateSerial,
    DuplicateMac,
    DuplicateLicense,
    MissingField,
    ValueInvalid,
    EncodingInvalid,
    FieldCountMismatch,
    RecordTooLarge,
    UnterminatedQuote,
    DuplicateContract,
}

impl RejectCode {
    pub const ALL: [RejectCode; 21] = [
        RejectCode::MacInvalid,
        RejectCode::MacReserved,
        RejectCode::MacForeignOui,
        RejectCode::SerialInvalid,
        RejectCode::SerialMacMismatch,
        RejectCode::LicenseInvalid,
        RejectCode::AccountInvalid,
        RejectCode::ContractIdInvalid,
        RejectCode::CountryInvalid,
        RejectCode::DateInvalid,
        RejectCode::DateAmbiguous,
        RejectCode::DuplicateSerial,
        RejectCode::DuplicateMac,
        RejectCode::DuplicateLicense,
        RejectCode::MissingField,
        RejectCode::ValueInvalid,
        RejectCode::EncodingInvalid,
        RejectCode::FieldCountMismatch,
        RejectCode::RecordTooLarge,
        RejectCode::UnterminatedQuote,
        RejectCode::DuplicateContract,
    ];

    pub fn as_str(self) -> &'static str {
        use RejectCode::*;
        match self {
            MacInvalid => "MAC_INVALID",
            MacReserved => "MAC_RESERVED",
            MacForeignOui => "MAC_FOREIGN_OUI",
            SerialInvalid => "SERIAL_INVALID",
            SerialMacMismatch => "SERIAL_MAC_MISMATCH",
            LicenseInvalid => "LICENSE_INVALID",
            AccountInvalid => "ACCOUNT_INVALID",
            ContractIdInvalid => "CONTRACT_ID_INVALID",
            CountryInvalid => "COUNTRY_INVALID",
            DateInvalid => "DATE_INVALID",
            DateAmbiguous => "DATE_AMBIGUOUS",
            DuplicateSerial => "DUPLICATE_SERIAL",
            DuplicateMac => "DUPLICATE_MAC",
            DuplicateLicense => "DUPLICATE_LICENSE",
            MissingField => "MISSING_FIELD",
            ValueInvalid => "VALUE_INVALID",
            EncodingInvalid => "ENCODING_INVALID",
            FieldCountMismatch => "FIELD_COUNT_MISMATCH",
            RecordTooLarge => "RECORD_TOO_LARGE",
            UnterminatedQuote => "UNTERMINATED_QUOTE",
            DuplicateContract => "DUPLICATE_CONTRACT",
        }
    }

    /// Warnings keep the row.
    pub fn is_warning(self) -> bool {
        self == RejectCode::MacForeignOui
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one row: a line of `rejects.csv` (or `warnings.csv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub row: u64,
    pub column: Cow<'static, str>,
    pub value: String,
    pub code: RejectCode,
    pub message: String,
}

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
enum Col {
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
    fn name(self) -> &'static str {
        INVENTORY_COLUMNS[self as usize]
    }
}

/// Settings of the validate stage that do not come from the policy.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub date_format: Option<DateFormat>,
    /// Build an [`Item`] for each valid row (false when only rejects are wanted).
    pub keep_items: bool,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            date_format: None,
            keep_items: true,
        }
    }
}

/// The validate stage, built once for one input's header row.
pub struct Validator<'p> {
    policy: &'p Policy,
    options: ValidateOptions,
    columns: HeaderMap,
}

/// What one validating thread keeps for itself.
pub struct ThreadState {
    account: IdPattern,
    contract: IdPattern,
    ends: FieldEnds,
}

/// The built-in pattern of account and contract ids (policy `[identifiers]`).
const DEFAULT_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._/-]{1,63}$";

/// An id pattern: the built-in one matched by hand (a byte loop instead of
/// a regex search per field), any other with its regex.
#[derive(Clone)]
pub(crate) enum IdPattern {
    Default,
    Regex(regex::Regex),
}

impl IdPattern {
    pub(crate) fn new(re: &regex::Regex) -> IdPattern {
        if re.as_str() == DEFAULT_ID_PATTERN {
            IdPattern::Default
        } else {
            IdPattern::Regex(re.clone())
        }
    }

    pub(crate) fn is_match(&self, s: &str) -> bool {
        match self {
            IdPattern::Default => default_id_match(s),
            IdPattern::Regex(re) => re.is_match(s),
        }
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._/-]{1,63}$`: the class is ASCII, so a byte is
/// a character and the length bound is in bytes.
fn default_id_match(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=64).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|&c| ID_BYTES[usize::from(c)])
}

/// The bytes of `[A-Za-z0-9._/-]`, as a table: one load per byte instead of
/// a chain of range tests (every row checks two ids).
static ID_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-');
        c += 1;
    }
    t
};

/// The result for one row, before duplicate detection. The item itself is
/// built only when a sink wants items (`keep_items`): the duplicate index
/// needs just the keys, and building and dropping millions of items that
/// nobody reads was a tenth of `validate`'s time.
///
/// `T` is what the row's item became on the validating thread: the boxed
/// item itself from [`Validator::validate`], or an [`ItemMap`]'s output in
/// [`run_mapped`].
#[derive(Debug)]
pub enum RowOutcome<T = Box<Item>> {
    Valid {
        keys: RowKeys,
        item: Option<T>,
        warnings: Vec<Reject>,
    },
    /// `keys` are the identifiers of the row that did parse, so that the
    /// row is also reported when one repeats an earlier valid row's (it
    /// gets every code that applies); a rejected row's keys are never
    /// recorded, so it shadows no later row.
    Rejected {
        rejects: Vec<Reject>,
        keys: Option<RowKeys>,
    },
}

impl<T> RowOutcome<T> {
    /// Turns the item (when there is one) into something else.
    pub fn map_item<U>(self, f: impl FnOnce(T) -> U) -> RowOutcome<U> {
        match self {
            RowOutcome::Valid {
                keys,
                item,
                warnings,
            } => RowOutcome::Valid {
                keys,
                item: item.map(f),
                warnings,
            },
            RowOutcome::Rejected { rejects, keys } => RowOutcome::Rejected { rejects, keys },
        }
    }
}

/// The identifiers of a valid row that must be unique in the file.
#[derive(Debug, Clone, Copy)]
pub struct RowKeys {
    pub row: u64,
    /// A device's serial (a license's bound serial is not a key).
    pub serial: Option<Serial>,
    pub mac: Option<Mac>,
    pub license: Option<LicenseId>,
    /// The same, as the duplicate index stores them.
    prepared: Prepared,
}

impl RowKeys {
    pub fn new(
        row: u64,
        serial: Option<Serial>,
        mac: Option<Mac>,
        license: Option<LicenseId>,
    ) -> RowKeys {
        RowKeys {
            row,
            serial,
            mac,
            license,
            prepared: Prepared::new(serial.as_ref(), mac, license),
        }
    }
}

/// The narrow exact keys of a row and their hashes, computed on the
/// validating thread so that the duplicate index (on one thread) only
/// probes.
#[derive(Debug, Clone, Copy, Default)]
///
/// Only the serial's key is kept (the MAC's is its bytes, and licenses are
/// few): an outcome per row crosses from thread to thread, so its size
/// counts.
struct Prepared {
    serial: Option<PreparedSerial>,
    /// The hashes of the MAC ([`Split48::hash`]) and of the license id's
    /// key (0 when absent).
    mac_hash: u64,
    license_hash: u64,
}

impl Prepared {
    fn new(serial: Option<&Serial>, mac: Option<Mac>, license: Option<LicenseId>) -> Prepared {
        Prepared {
            serial: serial.map(PreparedSerial::new),
            mac_hash: mac.map_or(0, |m| Split48::hash(m.as_u64())),
            license_hash: license.map_or(0, |l| KeySet::hash(&l.key())),
        }
    }
}

impl<'p> Validator<'p> {
    /// Matches the header row of `source`; a missing required column is a
    /// fatal error naming it and the aliases tried. `serial_number` and
    /// `model` may be absent only in a license-only export (one with
    /// `license_id`). A column refleet reads that the source cannot give as
    /// text is a fatal error naming it and its type; an unknown column of
    /// that kind is left out of the reports, with a warning.
    pub fn new(
        policy: &'p Policy,
        options: ValidateOptions,
        source: &dyn RecordSource,
    ) -> Result<Validator<'p>, IngestError> {
        let mut columns =
            match_headers(source.headers(), &INVENTORY_COLUMNS, &policy.header_aliases)?;
        let mut required = vec!["account_id", "contract_id", "country", "deactivated_at"];
        if columns.canonical[Col::License as usize].is_none() {
            required.extend(["serial_number", "model"]);
        }
        columns.require(&INVENTORY_COLUMNS, &required, &policy.header_aliases)?;
        for u in source.unreadable_columns() {
            if let Some(c) = columns.canonical.iter().position(|&i| i == Some(u.index)) {
                return Err(IngestError::Unreadable {
                    column: u.name.clone(),
                    kind: u.kind.clone(),
                    means: INVENTORY_COLUMNS[c].to_string(),
                });
            }
            if let Some(at) = columns.extras.iter().position(|&i| i == u.index) {
                tracing::warn!(
                    "column `{}` holds {} values, which have no single text form: it is not carried to the reports",
                    u.name,
                    u.kind
                );
                columns.extras.remove(at);
            }
        }
        Ok(Validator {
            policy,
            options,
            columns,
        })
    }

    /// Names of the carried (unknown) columns, in file order.
    pub fn extra_columns(&self) -> Vec<String> {
        self.columns
            .extras
            .iter()
            .map(|&i| self.columns.names[i].clone())
            .collect()
    }

    /// The columns of the file that validation reads: the known ones, and
    /// the carried ones when items are kept.
    pub fn read_columns(&self) -> Vec<usize> {
        let known = self.columns.canonical.iter().flatten().copied();
        let carried = self
            .columns
            .extras
            .iter()
            .copied()
            .filter(|_| self.options.keep_items);
        let mut used: Vec<usize> = known.chain(carried).collect();
        used.sort_unstable();
        used
    }

    /// Per-thread copies of the patterns (a shared `Regex` hands its search
    /// cache between threads through a pool, which showed in profiles) and
    /// room to split lines in.
    pub fn thread_state(&self) -> ThreadState {
        ThreadState {
            account: IdPattern::new(&self.policy.account_pattern),
            contract: IdPattern::new(&self.policy.contract_pattern),
            ends: FieldEnds::default(),
        }
    }

    /// Validates one record. Pure: safe to call from many threads, each with
    /// its own [`ThreadState`].
    pub fn validate(
        &self,
        state: &mut ThreadState,
        chunk: &RecordChunk,
        r: RecordIdx,
    ) -> RowOutcome {
        self.validate_with(state, chunk, r, |item, _| Box::new(item))
    }

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
        });
    }

    fn warn(&mut self, col: Col, value: &str, code: RejectCode, message: String) {
        self.warnings.push(Reject {
            row: self.row,
            column: Cow::Borrowed(col.name()),
            value: value.to_string(),
            code,
            message,
        });
    }

    fn encoding(&mut self, column: Cow<'static, str>, raw: &[u8]) {
        self.rejects.push(Reject {
            row: self.row,
            column,
            value: String::from_utf8_lossy(raw).into_owned(),
            code: RejectCode::EncodingInvalid,
            message: "field is not valid UTF-8 (save the export as UTF-8)".into(),
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

/// Serials, MACs and license ids seen so far; the first valid occurrence wins.
///
/// Keys are exact (no hashing of identifiers into fewer bits) and as narrow
/// as the value allows, since this index is most of the stage's memory: a
/// serial of up to 12 characters fits 8 bytes, up to 15 fits 10, longer ones
/// 16; a MAC, and a serial of 12 hex digits (a desk phone's MAC), is a
/// 48-bit number: a bit in a 2 MiB bitmap of its OUI when that OUI is
/// common, 6 bytes in a hash table otherwise ([`Split48`]: at 10 M rows,
/// 180 MB of tables became about 115 MB with three-byte keys per OUI, and
/// 64 MB with the bitmaps). The index runs on one thread, in row order;
/// the keys and their hashes are computed on the validating threads
/// ([`RowKeys::new`]) and each chunk is probed with the slots of the rows a
/// few places ahead already being fetched (see [`KeySet`]). Each table is
/// sized from the first chunk's mix of keys, scaled to the expected rows
/// (at 10 M rows: 272 MB of fixed-ratio power-of-two tables became about
/// 215 MB, and 180 MB filled to 4/5 rather than 2/3), and its pages are
/// cleared on every core before the first chunk is checked
/// ([`crate::sys::memory::populate`]). (A version sharded into cache-sized sets and
/// checked in parallel passes was measured: no faster on 2 cores, and
/// 110 MB more at 10 M rows.)
pub struct DuplicateIndex {
    /// Serials of 12 hex digits (a desk phone's is its MAC), as numbers.
    hex_serials: Split48,
    short_serials: KeySet<u64>,
    mid_serials: SplitMid,
    long_serials: KeySet<[u8; 16]>,
    macs: Split48,
    licenses: KeySet<u128>,
    /// The expected number of rows, until the first chunk has sized the
    /// tables from its mix of keys (0: unknown, the tables grow instead).
    expected_rows: usize,
    /// The fewest numbers expected under an OUI for it to get a bitmap
    /// ([`Split48::BITMAP_MIN`]; lower in tests).
    bitmap_min: usize,
    /// Threads that may share the work of sizing (the validating pool's).
    threads: usize,
}

/// What [`DuplicateIndex`] does with a row's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A valid row's: recorded when none repeats, the serial `mark`ed or not.
    Record { mark: bool },
    /// A rejected row's: only looked up.
    LookUp,
}

/// How many rows ahead the index fetches the slots it will probe: enough to
/// cover a memory access, few enough that they are still cached when used.
const PREFETCH_AHEAD: usize = 16;

impl Default for DuplicateIndex {
    fn default() -> Self {
        DuplicateIndex::with_capacity(0)
    }
}

/// Which of a row's keys repeat an earlier row's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dups {
    pub serial: bool,
    pub mac: bool,
    pub license: bool,
}

impl Dups {
    pub fn any(self) -> bool {
        self.serial || self.mac || self.license
    }
}

/// A serial key, tagged by width so that two widths never compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SerialKey {
    /// 12 hex digits, as a 48-bit number.
    Hex(u64),
    Short(u64),
    Mid([u8; 10]),
    Long([u8; 16]),
}

/// `Serial::key` is base 37 over the characters: 37^12 < 2^63, so the
/// short form loses nothing; a serial of 13 to 15 characters keeps its
/// key's two parts ([`probe::mid_key`]), which the index splits.
#[inline]
fn serial_key(s: &Serial) -> SerialKey {
    // `hex48` takes either case, but a serial is upper case: two serials
    // never share a number.
    if let Some(v) = hex48(s.as_bytes()) {
        return SerialKey::Hex(v);
    }
    if let Some(k) = s.short_key() {
        return SerialKey::Short(k);
    }
    let b = s.as_bytes();
    match b.len() {
        0..=12 => SerialKey::Short(s.key() as u64),
        // Up to three characters before the last twelve: a head below
        // 37^3 < 2^16.
        13..=15 => match s.key_parts() {
            Some((head, tail)) => SerialKey::Mid(probe::mid_key(tail, head as u16)),
            None => SerialKey::Long(s.key().to_le_bytes()),
        },
        _ => SerialKey::Long(s.key().to_le_bytes()),
    }
}

/// Where a serial's key is or would go.
#[derive(Clone, Copy)]
enum SerialProbe {
    Hex(Found),
    Mid(Found),
    Plain(Probe),
}

impl SerialProbe {
    fn is_present(self) -> bool {
        match self {
            SerialProbe::Hex(at) | SerialProbe::Mid(at) => at.is_present(),
            SerialProbe::Plain(p) => p.is_present(),
        }
    }
}

/// Of the keys counted in `counts` (a table's split: OUIs, serial heads),
/// the common ones: each holding at least a fiftieth of the total and
/// passing `keep` (given its count), at most `tables` of them, the most
/// frequent first (ties by key); and how many the others hold.
fn common_keys<K: Ord + Copy>(
    counts: impl IntoIterator<Item = (K, usize)>,
    tables: usize,
    keep: impl Fn(usize) -> bool,
) -> (Vec<(K, usize)>, usize) {
    let counts: Vec<(K, usize)> = counts.into_iter().collect();
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let mut common: Vec<(K, usize)> = counts
        .into_iter()
        .filter(|&(_, n)| n * 50 >= total && keep(n))
        .collect();
    common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    common.truncate(tables);
    let rest = total - common.iter().map(|(_, n)| n).sum::<usize>();
    (common, rest)
}

/// Numbers (hex serials, MACs) counted by OUI (their top 24 of 48 bits).
type OuiCount = std::collections::HashMap<u64, usize, foldhash::fast::FixedState>;

/// A set of serials stored as their narrow exact keys: a third of the
/// memory of a `HashSet<Serial>` at millions of devices.
pub struct SerialSet {
    hex: KeySet<u64>,
    short: KeySet<u64>,
    mid: KeySet<[u8; 10]>,
    long: KeySet<[u8; 16]>,
}

impl Default for SerialSet {
    fn default() -> Self {
        SerialSet::with_capacity(0)
    }
}

/// A serial's key and its hash in the [`DuplicateIndex`], computed ahead on
/// a validating thread so that the index only probes. (A hex serial's hash
/// is the one of its [`Split48`] table, not of [`SerialSet`]'s.)
#[derive(Debug, Clone, Copy)]
pub struct PreparedSerial(SerialKey, u64);

impl PreparedSerial {
    #[inline]
    pub fn new(s: &Serial) -> PreparedSerial {
        let k = serial_key(s);
        let h = match k {
            SerialKey::Hex(v) => Split48::hash(v),
            SerialKey::Short(k) => KeySet::hash(&k),
            SerialKey::Mid(k) => SplitMid::hash(&k),
            SerialKey::Long(k) => KeySet::hash(&k),
        };
        PreparedSerial(k, h)
    }
}

impl SerialSet {
    pub fn new() -> SerialSet {
        SerialSet::default()
    }

    /// Sized for about `n` serials, so that it does not grow while filled.
    pub fn with_capacity(n: usize) -> SerialSet {
        SerialSet {
            hex: KeySet::with_capacity(n / 2),
            short: KeySet::with_capacity(n / 4),
            mid: KeySet::with_capacity(n / 2),
            long: KeySet::with_capacity(n / 64),
        }
    }

    pub fn insert(&mut self, s: Serial) -> bool {
        match serial_key(&s) {
            SerialKey::Hex(v) => self.hex.insert(v),
            SerialKey::Short(k) => self.short.insert(k),
            SerialKey::Mid(k) => self.mid.insert(k),
            SerialKey::Long(k) => self.long.insert(k),
        }
    }

    pub fn contains(&self, s: &Serial) -> bool {
        match serial_key(s) {
            SerialKey::Hex(v) => self.hex.contains(&v),
            SerialKey::Short(k) => self.short.contains(&k),
            SerialKey::Mid(k) => self.mid.contains(&k),
            SerialKey::Long(k) => self.long.contains(&k),
        }
    }

    pub fn len(&self) -> usize {
        self.hex.len() + self.short.len() + self.mid.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DuplicateIndex {
    /// Sized for about `rows` rows, so the sets do not grow (and briefly
    /// double) while a large file is read.
    pub fn with_capacity(rows: usize) -> DuplicateIndex {
        DuplicateIndex {
            hex_serials: Split48::with_capacity(&[], 0),
            short_serials: KeySet::with_capacity(0),
            mid_serials: SplitMid::with_capacity(&[], 0),
            long_serials: KeySet::with_capacity(0),
            macs: Split48::with_capacity(&[], 0),
            licenses: KeySet::with_capacity(0),
            expected_rows: rows,
            bitmap_min: Split48::BITMAP_MIN,
            threads: 1,
        }
    }

    /// Sizes the tables for the expected rows from the mix of keys in the
    /// first chunk of the file (with a tenth to spare), before it is
    /// checked: each table gets about what it needs, and one that was
    /// under-estimated grows. Nothing to do once done, or when the number of
    /// rows is unknown.
    fn size_from<T>(&mut self, first: &[RowOutcome<T>]) {
        let rows = std::mem::take(&mut self.expected_rows);
        let empty = self.hex_serials.len()
            + self.short_serials.len()
            + self.mid_serials.len()
            + self.long_serials.len()
            + self.macs.len()
            + self.licenses.len()
            == 0;
        if rows == 0 || first.is_empty() || !empty {
            return;
        }
        let [mut short, mut long, mut licenses] = [0usize; 3];
        // Serials of 13 to 15 characters counted by head.
        let mut mid_heads: std::collections::HashMap<u16, usize, foldhash::fast::FixedState> =
            Default::default();
        // Numbers by OUI, for the tables of the common ones.
        let mut hex_ouis = OuiCount::default();
        let mut mac_ouis = OuiCount::default();
        for o in first {
            if let RowOutcome::Valid { keys, .. } = o {
                match keys.prepared.serial {
                    Some(PreparedSerial(SerialKey::Hex(v), _)) => {
                        *hex_ouis.entry(v >> 24).or_default() += 1
                    }
                    Some(PreparedSerial(SerialKey::Short(_), _)) => short += 1,
                    Some(PreparedSerial(SerialKey::Mid(k), _)) => {
                        *mid_heads.entry(probe::mid_parts(&k).0).or_default() += 1
                    }
                    Some(PreparedSerial(SerialKey::Long(_), _)) => long += 1,
                    None => {}
                }
                if let Some(m) = keys.mac {
                    *mac_ouis.entry(m.as_u64() >> 24).or_default() += 1;
                }
                licenses += usize::from(keys.license.is_some());
            }
        }
        let scale = rows.max(first.len()) as f64 / first.len() as f64;
        let need = |n: usize| (n as f64 * scale * 1.1) as usize + 1024;
        // An OUI gets a bitmap when it is common and expected often enough
        // to fill one; the others share a table.
        let split = |counts: OuiCount| {
            let (common, rest) =
                common_keys(counts, Split48::TABLES, |n| need(n) >= self.bitmap_min);
            let ouis: Vec<u32> = common.iter().map(|&(o, _)| o as u32).collect();
            Split48::with_capacity(&ouis, need(rest))
        };
        // A common head of a 13-15-character serial gets a table; the
        // others share one.
        let (heads, rest_heads) = common_keys(mid_heads, SplitMid::TABLES, |_| true);
        let heads: Vec<(u16, usize)> = heads.iter().map(|&(h, n)| (h, need(n))).collect();
        *self = DuplicateIndex {
            hex_serials: split(hex_ouis),
            short_serials: KeySet::with_capacity(need(short)),
            mid_serials: SplitMid::with_capacity(&heads, need(rest_heads)),
            long_serials: KeySet::with_capacity(need(long)),
            macs: split(mac_ouis),
            licenses: KeySet::with_capacity(need(licenses)),
            expected_rows: 0,
            bitmap_min: self.bitmap_min,
            threads: self.threads,
        };
        let regions: Vec<crate::sys::memory::Region<'_>> = self
            .hex_serials
            .regions()
            .chain([
                self.short_serials.region(),
                self.long_serials.region(),
                self.licenses.region(),
            ])
            .chain(self.macs.regions())
            .chain(self.mid_serials.regions())
            .collect();
        crate::sys::memory::populate(&regions, self.threads);
    }

    /// Checks one chunk's valid rows in row order and records the keys of
    /// those that are not duplicates. A row that repeats any key is reported
    /// for each repeated key and records none of its keys, so it never
    /// shadows a later good row.
    pub fn check_chunk(&mut self, rows: &[RowKeys]) -> Vec<Dups> {
        let mut dups = Vec::with_capacity(rows.len());
        self.check_each(
            rows.len(),
            |i| rows.get(i).map(|k| (k, Role::Record { mark: false })),
            &mut dups,
        );
        dups
    }

    /// [`DuplicateIndex::check_chunk`] over a chunk's outcomes, one entry
    /// per outcome; the serial of a row whose output `mark` picks is
    /// recorded marked. A rejected row's keys are looked up, never
    /// recorded: it is told which of them repeat an earlier valid row's,
    /// and shadows no later row.
    fn check_outcomes<T>(
        &mut self,
        outcomes: &[RowOutcome<T>],
        mark: impl Fn(&T) -> bool,
        dups: &mut Vec<Dups>,
    ) {
        if self.expected_rows > 0 {
            self.size_from(outcomes);
        }
        self.check_each(
            outcomes.len(),
            |i| match outcomes.get(i) {
                Some(RowOutcome::Valid { keys, item, .. }) => Some((
                    keys,
                    Role::Record {
                        mark: item.as_ref().is_some_and(&mark),
                    },
                )),
                Some(RowOutcome::Rejected {
                    keys: Some(keys), ..
                }) => Some((keys, Role::LookUp)),
                _ => None,
            },
            dups,
        );
    }

    fn check_each<'k>(
        &mut self,
        n: usize,
        keys: impl Fn(usize) -> Option<(&'k RowKeys, Role)>,
        dups: &mut Vec<Dups>,
    ) {
        dups.clear();
        for i in 0..n {
            if let Some((ahead, _)) = keys(i + PREFETCH_AHEAD) {
                self.prefetch(ahead);
            }
            dups.push(keys(i).map_or(Dups::default(), |(k, role)| self.check_row(k, role)));
        }
    }

    /// True when `serial` is the serial of an earlier valid row, recorded
    /// marked (see [`ItemMap::mark`]).
    pub fn is_marked(&self, serial: &Serial) -> bool {
        let PreparedSerial(k, h) = PreparedSerial::new(serial);
        match k {
            SerialKey::Hex(v) => self.hex_serials.is_key_marked(v),
            SerialKey::Short(k) => self.short_serials.is_key_marked(&k, h),
            SerialKey::Mid(k) => self.mid_serials.is_key_marked(&k),
            SerialKey::Long(k) => self.long_serials.is_key_marked(&k, h),
        }
    }

    /// True when one of `set` is recorded marked.
    pub fn marks_any(&self, set: &SerialSet) -> bool {
        fn any<K: probe::Key>(index: &KeySet<K>, set: &KeySet<K>) -> bool {
            set.iter()
                .any(|k| index.is_key_marked(&k, KeySet::hash(&k)))
        }
        set.hex.iter().any(|v| self.hex_serials.is_key_marked(v))
            || any(&self.short_serials, &set.short)
            || set.mid.iter().any(|k| self.mid_serials.is_key_marked(&k))
            || any(&self.long_serials, &set.long)
    }

    /// Every serial recorded marked.
    pub fn marked_serials(&self) -> SerialSet {
        let mut set = SerialSet {
            hex: KeySet::with_capacity(self.hex_serials.len()),
            short: KeySet::with_capacity(self.short_serials.len()),
            mid: KeySet::with_capacity(self.mid_serials.len()),
            long: KeySet::with_capacity(self.long_serials.len()),
        };
        for v in self.hex_serials.marked() {
            set.hex.insert(v);
        }
        for k in self.short_serials.marked() {
            set.short.insert(k);
        }
        for k in self.mid_serials.marked() {
            set.mid.insert(k);
        }
        for k in self.long_serials.marked() {
            set.long.insert(k);
        }
        set
    }

    fn prefetch(&self, keys: &RowKeys) {
        let p = &keys.prepared;
        match p.serial {
            Some(PreparedSerial(SerialKey::Hex(v), h)) => self.hex_serials.prefetch(v, h),
            Some(PreparedSerial(SerialKey::Short(_), h)) => self.short_serials.prefetch(h),
            Some(PreparedSerial(SerialKey::Mid(k), h)) => self.mid_serials.prefetch(&k, h),
            Some(PreparedSerial(SerialKey::Long(_), h)) => self.long_serials.prefetch(h),
            None => {}
        }
        if let Some(m) = keys.mac {
            self.macs.prefetch(m.as_u64(), p.mac_hash);
        }
        if keys.license.is_some() {
            self.licenses.prefetch(p.license_hash);
        }
    }

    fn check_row(&mut self, keys: &RowKeys, role: Role) -> Dups {
        let p = &keys.prepared;
        // Look every key up first and record them only if none repeats:
        // each key goes to a different set, so the free slot a look-up
        // found is still the right one when the keys are recorded.
        let serial = p.serial.map(|PreparedSerial(k, h)| match k {
            SerialKey::Hex(v) => SerialProbe::Hex(self.hex_serials.probe(v, h)),
            SerialKey::Short(k) => SerialProbe::Plain(self.short_serials.probe(&k, h)),
            SerialKey::Mid(k) => SerialProbe::Mid(self.mid_serials.probe(&k, h)),
            SerialKey::Long(k) => SerialProbe::Plain(self.long_serials.probe(&k, h)),
        });
        let mac = keys
            .mac
            .map(|m| (m.as_u64(), self.macs.probe(m.as_u64(), p.mac_hash)));
        let license_key = keys.license.map(|l| l.key());
        let license = license_key.map(|k| self.licenses.probe(&k, p.license_hash));
        let dups = Dups {
            serial: serial.is_some_and(SerialProbe::is_present),
            mac: mac.is_some_and(|(_, at)| at.is_present()),
            license: license.is_some_and(Probe::is_present),
        };
        let Role::Record { mark } = role else {
            return dups;
        };
        if !dups.any() {
            if let (Some(PreparedSerial(k, _)), Some(at)) = (p.serial, serial) {
                match (k, at) {
                    (SerialKey::Hex(v), SerialProbe::Hex(at)) => self.hex_serials.fill(v, at, mark),
                    (SerialKey::Short(k), SerialProbe::Plain(Probe::Vacant(slot))) => {
                        self.short_serials.fill(k, slot, mark)
                    }
                    (SerialKey::Mid(k), SerialProbe::Mid(at)) => self.mid_serials.fill(k, at, mark),
                    (SerialKey::Long(k), SerialProbe::Plain(Probe::Vacant(slot))) => {
                        self.long_serials.fill(k, slot, mark)
                    }
                    _ => {}
                }
            }
            if let Some((v, at)) = mac {
                self.macs.fill(v, at, false);
            }
            if let (Some(k), Some(Probe::Vacant(slot))) = (license_key, license) {
                self.licenses.fill(k, slot, false);
            }
        }
        dups
    }

    /// The rejects for a row's repeated keys.
    pub fn rejects(keys: &RowKeys, dups: Dups) -> Vec<Reject> {
        let mut rejects = Vec::new();
        let mut dup = |column: &'static str, value: String, code: RejectCode, what: &str| {
            rejects.push(Reject {
                row: keys.row,
                column: Cow::Borrowed(column),
                message: format!("{what} {value} already appears in an earlier row; the first occurrence is kept"),
                value,
                code,
            });
        };
        if let (true, Some(s)) = (dups.serial, keys.serial) {
            dup(
                "serial_number",
                s.to_string(),
                RejectCode::DuplicateSerial,
                "serial",
            );
        }
        if let (true, Some(m)) = (dups.mac, keys.mac) {
            dup(
                "mac_address",
                m.to_string(),
                RejectCode::DuplicateMac,
                "MAC",
            );
        }
        if let (true, Some(l)) = (dups.license, keys.license) {
            dup(
                "license_id",
                l.to_string(),
                RejectCode::DuplicateLicense,
                "license",
            );
        }
        rejects
    }
}

#[cfg(test)]
mod dedupe_tests {
    use super::*;

    fn keys(row: u64, serial: Option<&str>, mac: Option<&str>, license: Option<&str>) -> RowKeys {
        RowKeys::new(
            row,
            serial.map(|s| Serial::parse(s, 1, 20).unwrap()),
            mac.map(|m| Mac::parse(m).unwrap()),
            license.map(|l| LicenseId::parse(l).unwrap()),
        )
    }

    /// The row-by-row rule the sharded index must match exactly.
    fn reference(rows: &[RowKeys]) -> Vec<Dups> {
        reference_with_rejected(rows, &vec![false; rows.len()])
    }

    /// [`reference`], where a rejected row's keys are looked up and never
    /// recorded.
    fn reference_with_rejected(rows: &[RowKeys], rejected: &[bool]) -> Vec<Dups> {
        let (mut s, mut m, mut l) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        rows.iter()
            .zip(rejected)
            .map(|(r, &rejected)| {
                let d = Dups {
                    serial: r.serial.is_some_and(|x| s.contains(&x)),
                    mac: r.mac.is_some_and(|x| m.contains(&x)),
                    license: r.license.is_some_and(|x| l.contains(&x)),
                };
                if !d.any() && !rejected {
                    r.serial.map(|x| s.insert(x));
                    r.mac.map(|x| m.insert(x));
                    r.license.map(|x| l.insert(x));
                }
                d
            })
            .collect()
    }

    #[test]
    fn a_rejected_row_does_not_shadow_a_later_one() {
        let rows = [
            keys(1, Some("0004F2000001"), Some("00:04:F2:00:00:01"), None),
            // MAC repeats row 1: rejected, so its new serial is not recorded...
            keys(2, Some("AAAA00000002"), Some("00:04:F2:00:00:01"), None),
            // ...and this row with that serial is the first valid occurrence.
            keys(3, Some("AAAA00000002"), Some("00:04:F2:00:00:03"), None),
            keys(4, Some("8GLONGSERIAL0001"), None, None),
            keys(5, Some("8GLONGSERIAL0001"), None, None),
            keys(6, None, None, Some("ABCD-EFGH-1234-5678")),
            keys(7, None, None, Some("abcdefgh12345678")),
        ];
        let mut index = DuplicateIndex::default();
        let got = index.check_chunk(&rows);
        assert_eq!(got, reference(&rows));
        assert_eq!(
            got.iter().map(|d| d.any()).collect::<Vec<_>>(),
            [false, true, false, false, true, false, true]
        );
    }

    #[test]
    fn marks_follow_the_first_occurrence_of_a_serial() {
        let serial = |s: &str| Serial::parse(s, 1, 20).unwrap();
        let rows = [
            keys(1, Some("0004F2000001"), Some("00:04:F2:00:00:01"), None),
            keys(2, Some("8GLONGSERIAL0001"), None, None),
            // A duplicate: its mark must not be recorded.
            keys(3, Some("0004F2000003"), Some("00:04:F2:00:00:01"), None),
            keys(4, Some("LONGERSERIAL00000004"), None, None),
        ];
        let marks = [true, false, true, true];
        let mut index = DuplicateIndex::default();
        let mut dups = Vec::new();
        index.check_each(
            rows.len(),
            |i| rows.get(i).map(|k| (k, Role::Record { mark: marks[i] })),
            &mut dups,
        );
        assert!(dups[2].any());
        assert!(index.is_marked(&serial("0004F2000001")));
        assert!(!index.is_marked(&serial("8GLONGSERIAL0001")));
        assert!(!index.is_marked(&serial("0004F2000003")));
        assert!(index.is_marked(&serial("LONGERSERIAL00000004")));
        assert!(!index.is_marked(&serial("0004F2999999")));
        let marked = index.marked_serials();
        assert_eq!(marked.len(), 2);
        assert!(marked.contains(&serial("0004F2000001")));
        assert!(marked.contains(&serial("LONGERSERIAL00000004")));
        let mut probe = SerialSet::new();
        probe.insert(serial("8GLONGSERIAL0001"));
        probe.insert(serial("0004F2000003"));
        assert!(!index.marks_any(&probe));
        probe.insert(serial("LONGERSERIAL00000004"));
        assert!(index.marks_any(&probe));
    }

    /// Outcomes with rejected rows between the valid ones: the index
    /// skips them and still follows the row-by-row rule.
    #[test]
    fn outcomes_with_rejected_rows_match_the_row_by_row_rule() {
        let rows: Vec<RowKeys> = (0..200u64)
            .map(|i| {
                let s = format!("{:012X}", 0x0004F2000000u64 + i % 37);
                let m = format!("00:04:F2:00:02:{:02X}", i % 29);
                keys(i + 1, Some(&s), Some(&m), None)
            })
            .collect();
        let outcomes: Vec<RowOutcome<()>> = rows
            .iter()
            .enumerate()
            .flat_map(|(i, k)| {
                let valid = RowOutcome::Valid {
                    keys: *k,
                    item: None,
                    warnings: Vec::new(),
                };
                let rejected = (i % 3 == 0).then(|| RowOutcome::Rejected {
                    rejects: Vec::new(),
                    keys: None,
                });
                rejected.into_iter().chain([valid])
            })
            .collect();
        // Unsized (the tables grow), sized from these rows for a file twice
        // as long (with OUI bitmaps and without), and sized for far fewer
        // rows than there are.
        for (expected, bitmaps) in [
            (0, false),
            (outcomes.len() * 2, false),
            (outcomes.len() * 2, true),
            (3, false),
        ] {
            let mut index = DuplicateIndex::with_capacity(expected);
            if bitmaps {
                index.bitmap_min = 0;
            }
            let mut got = Vec::new();
            for chunk in outcomes.chunks(90) {
                let mut part = Vec::new();
                index.check_outcomes(chunk, |_: &()| false, &mut part);
                got.extend(part);
            }
            let valid: Vec<Dups> = outcomes
                .iter()
                .zip(&got)
                .filter(|(o, _)| matches!(o, RowOutcome::Valid { .. }))
                .map(|(_, d)| *d)
                .collect();
            assert_eq!(valid, reference(&rows), "expected {expected} rows");
            assert!(outcomes
                .iter()
                .zip(&got)
                .all(|(o, d)| matches!(o, RowOutcome::Valid { .. }) || !d.any()));
        }
    }

    #[test]
    fn the_built_in_id_patterns_take_the_hand_written_matcher() {
        let p = Policy::load(None).unwrap();
        assert!(matches!(
            IdPattern::new(&p.account_pattern),
            IdPattern::Default
        ));
        assert!(matches!(
            IdPattern::new(&p.contract_pattern),
            IdPattern::Default
        ));
        let other = regex::Regex::new("^A-[0-9]+$").unwrap();
        assert!(matches!(IdPattern::new(&other), IdPattern::Regex(_)));
    }

    proptest::proptest! {
        /// The hand-written matcher of the built-in id pattern agrees with
        /// the regex on any text, Unicode included.
        #[test]
        fn default_id_matcher_equals_the_regex(s in "[A-Za-z0-9._/\\-é ]{0,70}|\\PC{0,70}") {
            let re = regex::Regex::new(DEFAULT_ID_PATTERN).unwrap();
            proptest::prop_assert_eq!(default_id_match(&s), re.is_match(&s));
        }

        #[test]
        fn narrow_serial_keys_are_exact(
            a in "[0-9A-F]{12}|[A-Z0-9]{1,20}",
            b in "[0-9A-F]{12}|[A-Z0-9]{1,20}",
        ) {
            let (sa, sb) = (Serial::parse(&a, 1, 20).unwrap(), Serial::parse(&b, 1, 20).unwrap());
            proptest::prop_assert_eq!(serial_key(&sa) == serial_key(&sb), a == b);
        }

        /// Chunk by chunk, unsized or sized from the first chunk (MACs and
        /// hex serials under OUIs with a bitmap of their own and without),
        /// the index reports what the row-by-row rule does, and records the
        /// marks of the first occurrences.
        #[test]
        fn chunks_match_the_row_by_row_rule(
            picks in proptest::collection::vec(
                (0u8..12, 0u8..12, 0u8..6, 0u8..4, 0usize..7, proptest::bool::ANY, 0u8..4),
                1..300,
            ),
            split in 1usize..300,
            expected in proptest::sample::select(vec![0usize, 3, 1000]),
            bitmaps in proptest::bool::ANY,
        ) {
            // Few distinct values, so repeats across and inside chunks are
            // common; the first OUIs are common enough for tables.
            const OUIS: [u64; 7] = [0x0004F2, 0x00197F, 0x0004F2, 0x64167F, 0x0004F2, 0x000001, 0x0A0000];
            let rows: Vec<(RowKeys, bool)> = picks.iter().enumerate().map(|(i, &(s, m, l, kind, oui, mark, _))| {
                let oui = OUIS[oui];
                let serial = format!("{:06X}{:06X}", oui, s);
                let long = format!("8GLONG{:08}", s);
                let mac = format!("{:06X}0001{:02X}", oui, m);
                let lic = format!("ABCD-EFGH-0000-{:04}", l);
                let k = match kind {
                    0 => keys(i as u64 + 1, Some(&serial), Some(&mac), None),
                    1 => keys(i as u64 + 1, Some(&long), None, None),
                    2 => keys(i as u64 + 1, Some(&long), Some(&mac), None),
                    _ => keys(i as u64 + 1, None, None, Some(&lic)),
                };
                (k, mark)
            }).collect();
            // A quarter of the rows are rejected, with the keys that parsed.
            let rejected: Vec<bool> = picks.iter().map(|p| p.6 == 0).collect();
            let outcomes: Vec<RowOutcome<bool>> = rows
                .iter()
                .zip(&rejected)
                .map(|(&(keys, mark), &rejected)| if rejected {
                    RowOutcome::Rejected { rejects: Vec::new(), keys: Some(keys) }
                } else {
                    RowOutcome::Valid { keys, item: Some(mark), warnings: Vec::new() }
                })
                .collect();
            let mut index = DuplicateIndex::with_capacity(expected);
            if bitmaps {
                index.bitmap_min = 0;
            }
            let mut got = Vec::new();
            for chunk in outcomes.chunks(split) {
                let mut part = Vec::new();
                index.check_outcomes(chunk, |m: &bool| *m, &mut part);
                got.extend(part);
            }
            let keys: Vec<RowKeys> = rows.iter().map(|(k, _)| *k).collect();
            let want = reference_with_rejected(&keys, &rejected);
            proptest::prop_assert_eq!(&got, &want);
            // The mark of each serial's first valid occurrence.
            let mut marks = std::collections::HashMap::new();
            for (((k, mark), d), rejected) in rows.iter().zip(&want).zip(&rejected) {
                if let (Some(s), false, false) = (k.serial, d.any(), *rejected) {
                    marks.entry(s).or_insert(*mark);
                }
            }
            let marked = index.marked_serials();
            for (k, _) in &rows {
                if let Some(s) = k.serial {
                    let m = marks.get(&s) == Some(&true);
                    proptest::prop_assert_eq!(index.is_marked(&s), m);
                    proptest::prop_assert_eq!(marked.contains(&s), m);
                }
            }
            proptest::prop_assert_eq!(marked.len(), marks.values().filter(|m| **m).count());
        }
    }
}

#[cfg(test)]
mod pipeline_tests {
    use super::*;
    use crate::ingest::{InputPath, RecordSource};

    /// The sample inventory in chunks of 37 records, failing with an I/O
    /// error at the given chunk.
    struct Small {
        inner: Box<dyn RecordSource>,
        chunks: usize,
        fail_at: Option<usize>,
    }

    impl RecordSource for Small {
        fn headers(&self) -> &[String] {
            self.inner.headers()
        }
        fn fill(&mut self, chunk: &mut RecordChunk, _: usize) -> Result<(), IngestError> {
            if Some(self.chunks) == self.fail_at {
                return Err(IngestError::Io(std::io::Error::other(
                    "the disk is on fire",
                )));
            }
            self.chunks += 1;
            self.inner.fill(chunk, 37)
        }
    }

    /// Rows as the sink sees them; fails at the given item.
    struct Rows {
        rows: Vec<u64>,
        fail_at: Option<usize>,
    }

    impl ValidateSink for Rows {
        fn item(&mut self, item: Item) -> anyhow::Result<()> {
            if Some(self.rows.len()) == self.fail_at {
                anyhow::bail!("the report disk is full");
            }
            self.rows.push(item.row);
            Ok(())
        }
        fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
            if self.rows.last() != Some(&r.row) {
                self.rows.push(r.row);
            }
            Ok(())
        }
        fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
            Ok(())
        }
    }

    fn run_sample(
        threads: usize,
        fail_source: Option<usize>,
        fail_sink: Option<usize>,
    ) -> (anyhow::Result<ValidateStats>, Vec<u64>) {
        let policy = Policy::load(None).unwrap();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/inventory.csv");
        let opened = crate::ingest::open(&InputPath::File(path), &Default::default()).unwrap();
        let options = ValidateOptions {
            keep_items: true,
            ..ValidateOptions::default()
        };
        let validator = Validator::new(&policy, options, opened.source.as_ref()).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let source = Small {
            inner: opened.source,
            chunks: 0,
            fail_at: fail_source,
        };
        let mut sink = Rows {
            rows: Vec::new(),
            fail_at: fail_sink,
        };
        let result = run(
            Box::new(source),
            &validator,
            &pool,
            0,
            &mut sink,
            &crate::progress::NoProgress,
        );
        (result, sink.rows)
    }

    /// Rejects, as (row, code), and the valid rows of a CSV inventory.
    fn rejects_of(csv: &str) -> (Vec<(u64, RejectCode)>, Vec<u64>) {
        struct Collect(Vec<(u64, RejectCode)>, Vec<u64>);
        impl ValidateSink for Collect {
            fn item(&mut self, item: Item) -> anyhow::Result<()> {
                self.1.push(item.row);
                Ok(())
            }
            fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
                self.0.push((r.row, r.code));
                Ok(())
            }
            fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
                Ok(())
            }
        }
        let policy = Policy::load(None).unwrap();
        let source = crate::ingest::CsvSource::new(
            Box::new(std::io::Cursor::new(csv.as_bytes().to_vec())),
            None,
            1024,
        )
        .unwrap();
        let validator = Validator::new(&policy, ValidateOptions::default(), &source).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let mut sink = Collect(Vec::new(), Vec::new());
        run(
            Box::new(source),
            &validator,
            &pool,
            0,
            &mut sink,
            &crate::progress::NoProgress,
        )
        .unwrap();
        (sink.0, sink.1)
    }

    /// A rejected row whose serial or MAC repeats an earlier valid row's is
    /// told so along with its other codes; its own identifiers are not
    /// recorded, so the later rows that carry them are valid.
    #[test]
    fn a_rejected_row_gets_every_code_and_shadows_nothing() {
        let (rejects, valid) = rejects_of(
            "serial_number,mac_address,model,account_id,contract_id,country,deactivated_at\n\
             0004F2000001,00:04:F2:00:00:01,VVX 450,ACME-1,C-1,US,2026-10-01\n\
             0004F2000001,00:04:F2:00:00:02,VVX 450,ACME-1,C-1,US,2026-10-01\n\
             0004F2000003,00:04:F2:00:00:01,VVX 450,ACME-1,C-1,Atlantis,2026-10-01\n\
             0004F2000004,00:04:F2:00:00:05,VVX 450,ACME-1,C-1,US,2026-10-01\n\
             0004F2000004,00:04:F2:00:00:04,VVX 450,ACME-1,C-1,US,2026-10-01\n\
             0004F2000005,00:04:F2:00:00:05,VVX 450,ACME-1,C-1,US,2026-10-01\n",
        );
        use RejectCode::*;
        assert_eq!(
            rejects,
            [
                (2, SerialMacMismatch),
                (2, DuplicateSerial),
                (3, CountryInvalid),
                (3, SerialMacMismatch),
                (3, DuplicateMac),
                (4, SerialMacMismatch),
            ]
        );
        assert_eq!(valid, [1, 5, 6]);
    }

    /// With many small chunks in flight at once, every row reaches the sink
    /// once, in source order, whatever the thread count.
    #[test]
    fn many_chunks_come_out_whole_and_in_order() {
        for threads in [1, 2, 3] {
            let (stats, rows) = run_sample(threads, None, None);
            let stats = stats.unwrap();
            assert_eq!(stats.rows, 2000);
            assert_eq!(rows.len(), 2000, "{threads} threads");
            assert!(rows.windows(2).all(|w| w[0] < w[1]), "{threads} threads");
        }
    }

    /// A read error part-way ends the run with that error, after the rows
    /// before it, in order; a sink error ends it too. Neither hangs.
    #[test]
    fn errors_of_the_source_or_the_sink_end_the_run() {
        for threads in [1, 2, 3] {
            let (result, rows) = run_sample(threads, Some(9), None);
            let e = result.unwrap_err();
            assert!(format!("{e:#}").contains("the disk is on fire"), "{e:#}");
            assert_eq!(rows.len(), 9 * 37, "{threads} threads");
            assert!(rows.windows(2).all(|w| w[0] < w[1]));

            let (result, rows) = run_sample(threads, None, Some(150));
            let e = result.unwrap_err();
            assert!(
                format!("{e:#}").contains("the report disk is full"),
                "{e:#}"
            );
            assert!(rows.len() >= 150 && rows.len() < 2000, "{}", rows.len());
        }
    }
}

/// Receives the stage's output in source order.
pub trait ValidateSink {
    fn item(&mut self, item: Item) -> anyhow::Result<()>;
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()>;
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()>;
}

/// Work on each valid row's item done on the validating threads, in
/// parallel, before duplicate detection: so it also runs for a row that
/// turns out to be a duplicate, whose output is then dropped. Whatever
/// depends on the rows before (the duplicate rule, running totals) belongs
/// in the [`MappedSink`], which sees the outputs in source order.
pub trait ItemMap: Sync {
    /// Scratch space of one worker (buffers, caches).
    type State: Send;
    type Out: Send;
    /// Bytes of scratch output each valid row gets beside its outcome:
    /// [`ItemMap::map`] may write there what the sink reads back
    /// ([`MappedSink::item`]'s `slot`). A chunk's slots are one buffer that
    /// circulates with it, so a small per-row output (a report line) costs
    /// no allocation of its own. They are not cleared between chunks.
    const SLOT: usize = 0;
    fn state(&self) -> Self::State;
    /// The item comes as it is made (an output that keeps it should box
    /// it, so that outcomes move a pointer); `keys` are the row's keys, as
    /// the duplicate index sees them; `slot` is the row's [`ItemMap::SLOT`]
    /// bytes.
    fn map(
        &self,
        state: &mut Self::State,
        item: Item,
        keys: &RowKeys,
        slot: &mut [u8],
    ) -> Self::Out;
    /// Whether the duplicate index records this row's serial marked, for
    /// the sink to ask with [`DuplicateIndex::is_marked`]: one bit in a
    /// table that is there anyway, instead of a set of its own.
    fn mark(&self, _out: &Self::Out) -> bool {
        false
    }
}

/// [`ValidateSink`] for the outputs of an [`ItemMap`].
pub trait MappedSink<T> {
    /// One valid row's output (always `Some`). The sink may take it or only
    /// read it: whatever it leaves is dropped later on another thread, off
    /// the one that walks the rows in order. `seen` holds the serials of
    /// the valid rows so far, and of the rest of this row's chunk. `slot`
    /// is the row's [`ItemMap::SLOT`] bytes, as the map left them.
    fn item(
        &mut self,
        out: &mut Option<T>,
        slot: &[u8],
        seen: &DuplicateIndex,
    ) -> anyhow::Result<()>;
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()>;
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()>;
    /// After the last row, with the serials of every valid row.
    fn end(&mut self, _seen: &DuplicateIndex) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The identity [`ItemMap`], for [`run`].
struct Items;

impl ItemMap for Items {
    type State = ();
    type Out = Box<Item>;
    fn state(&self) {}
    fn map(&self, _: &mut (), item: Item, _: &RowKeys, _: &mut [u8]) -> Box<Item> {
        Box::new(item)
    }
}

struct ItemSink<'s>(&'s mut dyn ValidateSink);

impl MappedSink<Box<Item>> for ItemSink<'_> {
    fn item(
        &mut self,
        item: &mut Option<Box<Item>>,
        _: &[u8],
        _: &DuplicateIndex,
    ) -> anyhow::Result<()> {
        match item.take() {
            Some(item) => self.0.item(*item),
            None => Ok(()),
        }
    }
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()> {
        self.0.reject(reject)
    }
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()> {
        self.0.warning(warning)
    }
}

/// Counts that the summary prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ValidateStats {
    pub rows: u64,
    pub valid: u64,
    pub rejected_rows: u64,
    pub rejects_by_code: BTreeMap<String, u64>,
    pub warnings_by_code: BTreeMap<String, u64>,
}

/// Records per chunk: enough to keep every core busy (a few milliseconds of
/// work per chunk), few enough that a chunk and its outcomes stay in the
/// caches between stages and that the chunks in flight hold little memory,
/// which the kernel must clear on first use. Measured at 10 M rows, 2 cores
/// (means of 3–5 alternating runs): from 32 k to 4 k records, `quote` went
/// from 5.8 to 5.4 s and 330 to 250 MB peak RSS, `validate` from 2.45 to
/// 2.3 s; at 2 k, `validate` was slower again (2.5 s, more hand-offs).
pub const CHUNK_RECORDS: usize = 4 * 1024;

/// Chunk buffers in circulation, each back to the reader only once walked
/// in order: one being read, some queued, some being validated or waiting
/// for an earlier one, one being walked. The ordered walk runs on a thread
/// of its own, which the workers can get ahead of for a while; with too few
/// buffers they then run dry and spin idle, taking CPU from the walk they
/// wait for. At 10 M rows, 2 cores (alternating runs): 8 -> 32 buffers took
/// the CPU use from 176 % to 193 %; `quote` 4.3-4.7 -> 3.7-3.8 s, peak RSS
/// 210-235 -> 260 MB; `validate` 1.93 -> 1.88 s, 107 -> 154 MB. 64 was
/// slower than 32 again (more memory to clear, fewer cache hits).
const CHUNKS_IN_FLIGHT: usize = 32;

/// A validated chunk's outcomes, and its rows' slots ([`ItemMap::SLOT`]).
type Outputs<T> = (Vec<RowOutcome<T>>, Vec<u8>);

/// Runs the stage as a three-step pipeline: one thread reads and splits
/// records, `pool` validates each chunk on all cores, and the calling thread
/// finds duplicates in row order and hands everything to `sink`, so reading,
/// validating and de-duplicating overlap. `expected_rows` (a guess from the
/// file size, 0 if unknown) pre-sizes the duplicate index.
pub fn run(
    source: Box<dyn RecordSource>,
    validator: &Validator<'_>,
    pool: &rayon::ThreadPool,
    expected_rows: usize,
    sink: &mut dyn ValidateSink,
    progress: &dyn Progress,
) -> anyhow::Result<ValidateStats> {
    run_mapped(
        source,
        validator,
        pool,
        expected_rows,
        &Items,
        &mut ItemSink(sink),
        progress,
    )
}

/// [`run`], with `map` applied to each valid row's item on the validating
/// threads and its outputs handed to `sink` in source order (items are
/// built only when the validator's options keep them).
pub fn run_mapped<M: ItemMap>(
    mut source: Box<dyn RecordSource>,
    validator: &Validator<'_>,
    pool: &rayon::ThreadPool,
    expected_rows: usize,
    map: &M,
    sink: &mut dyn MappedSink<M::Out>,
    progress: &dyn Progress,
) -> anyhow::Result<ValidateStats> {
    // A chunk validated, with its number in source order and its buffer,
    // which goes back to the reader once the chunk has been walked.
    type Done<T> = (u64, Result<(RecordChunk, Outputs<T>), IngestError>);
    source.read_only(&validator.read_columns());
    // Each row's slot: at least a byte, so that the chunks of the slots'
    // buffer line up with the rows.
    let slot_len = M::SLOT.max(1);
    let (raw_tx, raw_rx) = sync_channel::<Result<RecordChunk, IngestError>>(2);
    let (done_tx, done_rx) = sync_channel::<Done<M::Out>>(CHUNKS_IN_FLIGHT);
    // Buffers go back upstream to be refilled: fresh multi-megabyte buffers
    // per chunk cost the kernel more in page clearing than the parsing.
    let (spare_chunk_tx, spare_chunk_rx) = std::sync::mpsc::channel::<RecordChunk>();
    let (spare_vec_tx, spare_vec_rx) = std::sync::mpsc::channel::<Outputs<M::Out>>();
    let spare_vec_rx = Mutex::new(spare_vec_rx);
    std::thread::scope(|scope| {
        // Named, so that profiles tell the stages apart.
        std::thread::Builder::new()
            .name("refleet-read".into())
            .spawn_scoped(scope, move || {
                // A fixed set of chunk buffers circulates: after the first few,
                // the reader waits for one to come back rather than allocate.
                // Each is made at about its final size: grown by doubling, it
                // had the kernel clear each step's pages as well.
                let width = source.headers().len();
                let mut made = 0;
                loop {
                    let mut chunk = match spare_chunk_rx.try_recv() {
                        Ok(c) => c,
                        Err(_) if made < CHUNKS_IN_FLIGHT => {
                            made += 1;
                            RecordChunk::with_capacity(CHUNK_RECORDS, width)
                        }
                        Err(_) => match spare_chunk_rx.recv() {
                            Ok(c) => c,
                            Err(_) => break,
                        },
                    };
                    chunk.clear();
                    match source.fill(&mut chunk, CHUNK_RECORDS) {
                        Ok(()) if chunk.is_empty() => break,
                        Ok(()) => {
                            if raw_tx.send(Ok(chunk)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = raw_tx.send(Err(e));
                            break;
                        }
                    }
                }
            })?;
        let spare_vec_rx = &spare_vec_rx;
        std::thread::Builder::new()
            .name("refleet-check".into())
            .spawn_scoped(scope, move || {
                // Each chunk is a task of the pool, its rows split across the
                // threads; the next chunk's task is queued before this one
                // ends, so the threads go from one chunk to the next without
                // waiting to be handed it (waiting, then waking, at each of
                // 2,500 chunks per 10 M rows left the cores idle a sixth of
                // the time).
                pool.in_place_scope(|tasks| {
                    for (seq, chunk) in (0u64..).zip(raw_rx) {
                        let done_tx = done_tx.clone();
                        let chunk = match chunk {
                            Ok(chunk) => chunk,
                            Err(e) => {
                                let _ = done_tx.send((seq, Err(e)));
                                break;
                            }
                        };
                        tasks.spawn(move |_| {
                            let (mut outcomes, mut slots) = spare_vec_rx
                                .lock()
                                .ok()
                                .and_then(|rx| rx.try_recv().ok())
                                .unwrap_or_default();
                            // Grown only: what a slot held before is
                            // overwritten by its new row's map, or unused.
                            if slots.len() < chunk.len() * slot_len {
                                slots.resize(chunk.len() * slot_len, 0);
                            }
                            (0..chunk.len())
                                .into_par_iter()
                                .zip(slots.par_chunks_mut(slot_len))
                                .with_min_len(256)
                                .map_init(
                                    || (validator.thread_state(), map.state()),
                                    |(state, map_state), (i, slot)| {
                                        validator.validate_with(
                                            state,
                                            &chunk,
                                            chunk.record_at(i),
                                            |item, keys| {
                                                map.map(map_state, item, keys, &mut slot[..M::SLOT])
                                            },
                                        )
                                    },
                                )
                                .collect_into_vec(&mut outcomes);
                            // The walker may have stopped on an error; then
                            // nobody wants it.
                            let _ = done_tx.send((seq, Ok((chunk, (outcomes, slots)))));
                        });
                    }
                });
            })?;
        // Owned here, so that an early return hands the reader an end
        // instead of leaving it waiting for a buffer.
        let (spare_chunk_tx, spare_vec_tx) = (spare_chunk_tx, spare_vec_tx);
        let mut stats = ValidateStats::default();
        let mut index = DuplicateIndex::with_capacity(expected_rows);
        index.threads = pool.current_num_threads();
        let mut dups = Vec::new();
        let mut by_code: BTreeMap<RejectCode, u64> = BTreeMap::new();
        let mut warn_by_code: BTreeMap<RejectCode, u64> = BTreeMap::new();
        // Chunks validated before an earlier one, by number.
        let mut waiting = BTreeMap::new();
        let mut next = 0u64;
        for (seq, done) in done_rx {
            waiting.insert(seq, done);
            while let Some(done) = waiting.remove(&next) {
                next += 1;
                let (chunk, (mut outcomes, slots)) = done?;
                let len = chunk.len();
                stats.rows += len as u64;
                index.check_outcomes(&outcomes, |out| map.mark(out), &mut dups);
                // By reference: an outcome is a few hundred bytes, and moving
                // each one out of the vector showed in profiles. What is left
                // is dropped on the validating thread when the vector is reused.
                let rows = outcomes.iter_mut().zip(&dups).zip(slots.chunks(slot_len));
                for ((outcome, d), slot) in rows {
                    let rejects = match outcome {
                        RowOutcome::Valid {
                            keys,
                            item,
                            warnings,
                        } => {
                            if !d.any() {
                                for w in warnings.iter() {
                                    *warn_by_code.entry(w.code).or_default() += 1;
                                    sink.warning(w)?;
                                }
                                stats.valid += 1;
                                if item.is_some() {
                                    sink.item(item, &slot[..M::SLOT], &index)?;
                                }
                                continue;
                            }
                            DuplicateIndex::rejects(keys, *d)
                        }
                        RowOutcome::Rejected { rejects, keys } => {
                            let mut rejects = std::mem::take(rejects);
                            if let Some(keys) = keys.as_ref().filter(|_| d.any()) {
                                rejects.extend(DuplicateIndex::rejects(keys, *d));
                            }
                            rejects
                        }
                    };
                    stats.rejected_rows += 1;
                    for r in &rejects {
                        *by_code.entry(r.code).or_default() += 1;
                        sink.reject(r)?;
                    }
                }
                progress.rows(len as u64);
                let _ = spare_chunk_tx.send(chunk);
                let _ = spare_vec_tx.send((outcomes, slots));
            }
        }
        anyhow::ensure!(
            waiting.is_empty(),
            "internal error: {} validated chunks were never walked in order",
            waiting.len()
        );
        sink.end(&index)?;
        stats.rejects_by_code = by_code
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        stats.warnings_by_code = warn_by_code
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        Ok(stats)
    })
}
