//! Why a row is rejected or warned about: the codes every stage reports
//! with (`ingest` for broken records, `validate` for bad values, the
//! duplicate index for repeats, `contracts` for the contracts file) and one
//! problem of one row. Here, below all of them, so that none imports
//! another for them.

use std::borrow::Cow;
use std::fmt;

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
    /// The row's `site` when the rule that rejected it could read it, for
    /// `results.csv` and its counts by site; else empty.
    pub site: compact_str::CompactString,
}
