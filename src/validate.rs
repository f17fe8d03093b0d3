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

use compact_str::CompactString;
use hashbrown::HashSet;
use rayon::prelude::*;
use smallvec::SmallVec;

use crate::domain::{
    parse_bool, parse_timestamp, DateError, DateFormat, DeactivationReason, Item, ItemKind,
    LicenseId, Mac, MacError, RepairStatus, Serial,
};
use crate::ingest::{match_headers, HeaderMap, IngestError, RecordChunk, RecordIdx, RecordSource};
use crate::policy::Policy;
use crate::progress::Progress;

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
}

impl RejectCode {
    pub const ALL: [RejectCode; 20] = [
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
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    pub date_format: Option<DateFormat>,
}

/// The validate stage, built once for one input's header row.
pub struct Validator<'p> {
    policy: &'p Policy,
    options: ValidateOptions,
    columns: HeaderMap,
}

/// The result for one row, before duplicate detection. Not boxed: a box
/// would cost an allocation per valid row on the hot path.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum RowOutcome {
    Valid { item: Item, warnings: Vec<Reject> },
    Rejected(Vec<Reject>),
}

impl<'p> Validator<'p> {
    /// Matches the header row; a missing required column is a fatal error
    /// naming it and the aliases tried. `serial_number` and `model` may be
    /// absent only in a license-only export (one with `license_id`).
    pub fn new(
        policy: &'p Policy,
        options: ValidateOptions,
        headers: &[String],
    ) -> Result<Validator<'p>, IngestError> {
        let columns = match_headers(headers, &INVENTORY_COLUMNS, &policy.header_aliases)?;
        let mut required = vec!["account_id", "contract_id", "country", "deactivated_at"];
        if columns.canonical[Col::License as usize].is_none() {
            required.extend(["serial_number", "model"]);
        }
        columns.require(&INVENTORY_COLUMNS, &required, &policy.header_aliases)?;
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

    /// Validates one record. Pure: safe to call from many threads.
    pub fn validate(&self, chunk: &RecordChunk, r: RecordIdx) -> RowOutcome {
        let row = chunk.row(r);
        if let Some(p) = chunk.problem(r) {
            return RowOutcome::Rejected(vec![Reject {
                row,
                column: Cow::Borrowed(""),
                value: chunk.problem_preview(r).to_string(),
                code: p.code,
                message: p.message.clone(),
            }]);
        }
        let mut v = RowCheck {
            row,
            rejects: Vec::new(),
            warnings: Vec::new(),
        };

        // Any field that is not UTF-8 rejects the row, naming the column. One
        // check of the whole record covers the common case: fields split at
        // ASCII delimiters, so each is UTF-8 when the record is.
        let record = std::str::from_utf8(chunk.record_bytes(r)).ok();
        let text = |i: usize| -> Result<&str, ()> {
            match record {
                Some(rec) => rec.get(chunk.field_range(r, i)).ok_or(()),
                None => std::str::from_utf8(chunk.field(r, i)).map_err(|_| ()),
            }
        };
        let mut texts: [&str; INVENTORY_COLUMNS.len()] = [""; INVENTORY_COLUMNS.len()];
        for (c, idx) in self.columns.canonical.iter().enumerate() {
            if let Some(i) = *idx {
                match text(i) {
                    Ok(s) => texts[c] = s.trim(),
                    Err(()) => v.encoding(Cow::Borrowed(INVENTORY_COLUMNS[c]), chunk.field(r, i)),
                }
            }
        }
        let mut extra = SmallVec::new();
        for &i in &self.columns.extras {
            match text(i) {
                Ok(s) => extra.push(CompactString::from(s)),
                Err(()) => v.encoding(Cow::Owned(self.columns.names[i].clone()), chunk.field(r, i)),
            }
        }
        let get = |c: Col| -> &str { texts[c as usize] };

        let kind = match get(Col::ItemType) {
            "" => Some(ItemKind::Device),
            s => v.parsed(Col::ItemType, s, ItemKind::parse(s), ItemKind::ALLOWED),
        };
        let account_id = v.required(Col::Account, get(Col::Account)).and_then(|s| {
            self.policy
                .account_pattern
                .is_match(s)
                .then_some(s)
                .or_else(|| {
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
            self.policy
                .contract_pattern
                .is_match(s)
                .then_some(s)
                .or_else(|| {
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
            ) if v.rejects.is_empty() => RowOutcome::Valid {
                item: Item {
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
                    extra,
                },
                warnings: v.warnings,
            },
            _ => RowOutcome::Rejected(v.rejects),
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

type FastSet<K> = HashSet<K, foldhash::fast::FixedState>;

/// Serials, MACs and license ids seen so far; the first valid occurrence wins.
///
/// Keys are exact (no hashing of identifiers into fewer bits): a serial of up
/// to 12 characters fits a `u64`, longer ones a `u128`; a MAC is its 48 bits.
#[derive(Default)]
pub struct DuplicateIndex {
    short_serials: FastSet<u64>,
    long_serials: FastSet<u128>,
    macs: FastSet<u64>,
    licenses: FastSet<u128>,
}

#[derive(Clone, Copy)]
enum SerialKey {
    Short(u64),
    Long(u128),
}

impl DuplicateIndex {
    /// Sized for about `rows` rows, so the tables do not grow (and briefly
    /// double) while a large file is read.
    pub fn with_capacity(rows: usize) -> DuplicateIndex {
        let hasher = foldhash::fast::FixedState::default;
        DuplicateIndex {
            short_serials: FastSet::with_capacity_and_hasher(rows, hasher()),
            long_serials: FastSet::with_capacity_and_hasher(rows / 8, hasher()),
            macs: FastSet::with_capacity_and_hasher(rows, hasher()),
            licenses: FastSet::with_capacity_and_hasher(rows / 16, hasher()),
        }
    }

    fn serial_key(s: &crate::domain::Serial) -> SerialKey {
        let k = s.key();
        if s.as_bytes().len() <= 12 {
            SerialKey::Short(k as u64)
        } else {
            SerialKey::Long(k)
        }
    }

    fn insert_serial(&mut self, k: SerialKey) -> bool {
        match k {
            SerialKey::Short(k) => self.short_serials.insert(k),
            SerialKey::Long(k) => self.long_serials.insert(k),
        }
    }

    fn remove_serial(&mut self, k: SerialKey) {
        match k {
            SerialKey::Short(k) => self.short_serials.remove(&k),
            SerialKey::Long(k) => self.long_serials.remove(&k),
        };
    }

    /// Records the item's identifiers, or returns the duplicate rejects and
    /// records nothing (a rejected row does not shadow a later good one).
    pub fn check(&mut self, item: &Item) -> Vec<Reject> {
        // Insert first and undo on a duplicate: one probe per key on the
        // common path instead of a look-up and an insert.
        let serial = (item.kind == ItemKind::Device)
            .then_some(item.serial)
            .flatten();
        let serial_key = serial.as_ref().map(Self::serial_key);
        let serial_new = serial_key.map(|k| self.insert_serial(k));
        let mac_new = item.mac.map(|m| self.macs.insert(m.as_u64()));
        let license_new = item.license_id.map(|l| self.licenses.insert(l.key()));
        if serial_new != Some(false) && mac_new != Some(false) && license_new != Some(false) {
            return Vec::new();
        }
        let mut rejects = Vec::new();
        let mut dup = |column: &'static str, value: String, code: RejectCode, what: &str| {
            rejects.push(Reject {
                row: item.row,
                column: Cow::Borrowed(column),
                message: format!("{what} {value} already appears in an earlier row; the first occurrence is kept"),
                value,
                code,
            });
        };
        match (serial_new, serial_key, serial) {
            (Some(false), _, Some(s)) => dup(
                "serial_number",
                s.to_string(),
                RejectCode::DuplicateSerial,
                "serial",
            ),
            (Some(true), Some(k), _) => self.remove_serial(k),
            _ => {}
        }
        match (mac_new, item.mac) {
            (Some(false), Some(m)) => dup(
                "mac_address",
                m.to_string(),
                RejectCode::DuplicateMac,
                "MAC",
            ),
            (Some(true), Some(m)) => {
                self.macs.remove(&m.as_u64());
            }
            _ => {}
        }
        match (license_new, item.license_id) {
            (Some(false), Some(l)) => dup(
                "license_id",
                l.to_string(),
                RejectCode::DuplicateLicense,
                "license",
            ),
            (Some(true), Some(l)) => {
                self.licenses.remove(&l.key());
            }
            _ => {}
        }
        rejects
    }
}

/// Receives the stage's output in source order.
pub trait ValidateSink {
    fn item(&mut self, item: Item) -> anyhow::Result<()>;
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()>;
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()>;
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

/// Records per chunk: large enough to keep every core busy, small enough
/// that a few chunks in flight stay in the tens of megabytes.
pub const CHUNK_RECORDS: usize = 32 * 1024;

/// Runs the stage as a three-step pipeline: one thread reads and splits
/// records, `pool` validates each chunk on all cores, and the calling thread
/// finds duplicates in row order and hands everything to `sink`, so reading,
/// validating and de-duplicating overlap. `expected_rows` (a guess from the
/// file size, 0 if unknown) pre-sizes the duplicate index.
pub fn run(
    mut source: Box<dyn RecordSource>,
    validator: &Validator<'_>,
    pool: &rayon::ThreadPool,
    expected_rows: usize,
    sink: &mut dyn ValidateSink,
    progress: &dyn Progress,
) -> anyhow::Result<ValidateStats> {
    let (raw_tx, raw_rx) = sync_channel::<Result<RecordChunk, IngestError>>(2);
    let (done_tx, done_rx) = sync_channel::<Result<(usize, Vec<RowOutcome>), IngestError>>(2);
    std::thread::scope(|scope| {
        scope.spawn(move || loop {
            match source.next_chunk(CHUNK_RECORDS) {
                Ok(Some(chunk)) => {
                    if raw_tx.send(Ok(chunk)).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = raw_tx.send(Err(e));
                    break;
                }
            }
        });
        scope.spawn(move || {
            for chunk in raw_rx {
                let result = chunk.map(|chunk| {
                    let outcomes = pool.install(|| {
                        (0..chunk.len())
                            .into_par_iter()
                            .with_min_len(256)
                            .map(|i| validator.validate(&chunk, chunk.record_at(i)))
                            .collect()
                    });
                    (chunk.len(), outcomes)
                });
                if done_tx.send(result).is_err() {
                    break;
                }
            }
        });
        let mut stats = ValidateStats::default();
        let mut index = DuplicateIndex::with_capacity(expected_rows);
        let mut by_code: BTreeMap<RejectCode, u64> = BTreeMap::new();
        let mut warn_by_code: BTreeMap<RejectCode, u64> = BTreeMap::new();
        for done in done_rx {
            let (len, outcomes) = done?;
            stats.rows += len as u64;
            for outcome in outcomes {
                let rejects = match outcome {
                    RowOutcome::Valid { item, warnings } => {
                        let dups = index.check(&item);
                        if dups.is_empty() {
                            for w in &warnings {
                                *warn_by_code.entry(w.code).or_default() += 1;
                                sink.warning(w)?;
                            }
                            stats.valid += 1;
                            sink.item(item)?;
                            continue;
                        }
                        dups
                    }
                    RowOutcome::Rejected(rejects) => rejects,
                };
                stats.rejected_rows += 1;
                for r in &rejects {
                    *by_code.entry(r.code).or_default() += 1;
                    sink.reject(r)?;
                }
            }
            progress.rows(len as u64);
        }
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
