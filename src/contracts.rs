//! Contracts ingest (SPEC §2.2): the contracts file → a map by contract id,
//! and rejects for the rows that cannot be used. An inventory row that points
//! at a rejected contract is then `CONTRACT_NOT_FOUND`. A number outside
//! its range (see [`Contract`]) is a `VALUE_INVALID` reject of its row, as
//! a word that is not allowed is.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chrono::NaiveDate;
use compact_str::CompactString;

use crate::domain::{
    parse_bool, trim, Contract, ContractStatus, Coverage, PricingModel, Reject, RejectCode,
};
use crate::ingest::{match_headers, FieldEnds, IngestError, RecordChunk, RecordSource};
use crate::policy::Policy;
use crate::validate::{field_text, IdPattern};

pub const CONTRACT_COLUMNS: [&str; 13] = [
    "contract_id",
    "account_id",
    "status",
    "coverage",
    "covers_reactivation",
    "start_date",
    "end_date",
    "home_country",
    "pricing_model",
    "term_months",
    "included_devices",
    "auto_renew",
    "cancellation_days",
];

/// The usable contracts and the rejected rows, in file order.
#[derive(Debug, Default)]
pub struct Contracts {
    pub by_id: HashMap<CompactString, Contract>,
    pub rejects: Vec<Reject>,
}

/// Reads every contract. Duplicate ids: the first row is kept and later ones
/// are rejected (`DUPLICATE_CONTRACT`), as for inventory identifiers.
/// `bytes` is the file's size when known: the map is sized from it once,
/// rather than grown by doubling, which would leave every smaller table
/// behind as memory touched for nothing.
pub fn load(
    mut source: Box<dyn RecordSource>,
    policy: &Policy,
    bytes: Option<u64>,
) -> Result<Contracts, IngestError> {
    let columns = match_headers(source.headers(), &CONTRACT_COLUMNS, &policy.header_aliases)?;
    let required: Vec<&str> = CONTRACT_COLUMNS
        .iter()
        .copied()
        .filter(|c| *c != "included_devices" && *c != "auto_renew" && *c != "cancellation_days")
        .collect();
    columns.require(&CONTRACT_COLUMNS, &required, &policy.header_aliases)?;
    let patterns = Patterns {
        account: IdPattern::new(&policy.account_pattern),
        contract: IdPattern::new(&policy.contract_pattern),
    };
    let mut out = Contracts::default();
    // A contract row is about 90 bytes; a guess on the high side, capped so
    // that a huge file does not reserve for more than it may hold.
    out.by_id
        .reserve(bytes.map_or(0, |b| (b / 64).min(1 << 20) as usize));
    let mut ends = FieldEnds::default();
    // One buffer for every chunk: fresh ones would each grow by doubling
    // into memory the kernel must clear first.
    let mut chunk = RecordChunk::default();
    loop {
        chunk.clear();
        source.fill(&mut chunk, 16 * 1024)?;
        if chunk.is_empty() {
            break;
        }
        for r in chunk.records() {
            let row = chunk.row(r);
            let mut rejects = Vec::new();
            let fields = chunk.view_in(r, &mut ends);
            if let Some(p) = chunk.problem_of(r, &fields) {
                out.rejects.push(Reject {
                    row,
                    column: Cow::Borrowed(""),
                    value: chunk.problem_preview(r).to_string(),
                    code: p.code,
                    message: p.message.clone(),
                    site: Default::default(),
                });
                continue;
            }
            // One UTF-8 check of the record covers its fields (see
            // `Validator::validate`).
            let record = chunk.record_text(r);
            let mut field = |c: usize| -> Option<&str> {
                let i = columns.canonical[c]?;
                match field_text(&fields, record, i) {
                    Ok(s) => Some(trim(s)).filter(|s| !s.is_empty()),
                    Err(_) => {
                        rejects.push(reject(
                            row,
                            c,
                            &String::from_utf8_lossy(fields.field(i)),
                            RejectCode::EncodingInvalid,
                            "field is not valid UTF-8 (save the export as UTF-8)".into(),
                        ));
                        None
                    }
                }
            };
            let mut texts = [None; CONTRACT_COLUMNS.len()];
            for (c, t) in texts.iter_mut().enumerate() {
                *t = field(c);
            }
            let parsed = parse_row(row, &texts, policy, &patterns, &mut rejects);
            // A row that gives no contract always says why: should a rule
            // fail without its reject (a bug), the row is still reported.
            debug_assert!(parsed.is_some() || !rejects.is_empty(), "row {row}");
            if parsed.is_none() && rejects.is_empty() {
                rejects.push(reject(
                    row,
                    0,
                    texts[0].unwrap_or(""),
                    RejectCode::ValueInvalid,
                    "the contract could not be read, and no rule said why".into(),
                ));
            }
            if let Some(c) = parsed {
                if rejects.is_empty() {
                    match out.by_id.entry(c.id.clone()) {
                        Entry::Occupied(_) => out.rejects.push(reject(row, 0, &c.id, RejectCode::DuplicateContract, format!("contract {} already appears in an earlier row; the first occurrence is kept", c.id))),
                        Entry::Vacant(slot) => {
                            slot.insert(c);
                        }
                    }
                }
            }
            out.rejects.extend(rejects);
        }
    }
    Ok(out)
}

const BOOLEANS: Expected = Expected::OneOf("true, false, yes, no, 1, 0");

/// What a column allows, for a reject's message.
#[derive(Clone, Copy)]
enum Expected {
    OneOf(&'static str),
    /// A whole number of these, from 0 to this.
    UpTo(&'static str, u64),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::OneOf(allowed) => write!(f, "one of: {allowed}"),
            Expected::UpTo(unit, max) => write!(f, "a whole number of {unit} from 0 to {max}"),
        }
    }
}

/// A present value parsed, or a `VALUE_INVALID` reject saying what is
/// allowed: "{column} must be {expected}".
fn parse_value<T>(
    rejects: &mut Vec<Reject>,
    row: u64,
    col: usize,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    expected: Expected,
) -> Option<T> {
    let value = value?;
    let parsed = parse(value);
    if parsed.is_none() {
        rejects.push(reject(
            row,
            col,
            value,
            RejectCode::ValueInvalid,
            format!("{} must be {expected}", CONTRACT_COLUMNS[col]),
        ));
    }
    parsed
}

fn reject(row: u64, col: usize, value: &str, code: RejectCode, message: String) -> Reject {
    Reject {
        row,
        column: Cow::Borrowed(CONTRACT_COLUMNS[col]),
        value: value.to_string(),
        code,
        message,
        site: Default::default(),
    }
}

/// The policy's id patterns, the built-in ones matched by hand.
struct Patterns {
    account: IdPattern,
    contract: IdPattern,
}

/// `YYYY-MM-DD`: by hand in the common case, chrono for anything else.
fn iso_date(v: &str) -> Option<NaiveDate> {
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        if let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10)) {
            return NaiveDate::from_ymd_opt(y as i32, m, d);
        }
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()
}

fn parse_row(
    row: u64,
    t: &[Option<&str>],
    policy: &Policy,
    patterns: &Patterns,
    rejects: &mut Vec<Reject>,
) -> Option<Contract> {
    let mut required = |c: usize| -> Option<&str> {
        let v = t[c];
        if v.is_none() {
            rejects.push(reject(
                row,
                c,
                "",
                RejectCode::MissingField,
                format!("{} is required", CONTRACT_COLUMNS[c]),
            ));
        }
        v
    };
    let id = required(0);
    let account = required(1);
    let status = required(2);
    let coverage = required(3);
    let covers = required(4);
    let start = required(5);
    let end = required(6);
    let home = required(7);
    let pricing = required(8);
    let term = required(9);

    let mut bad = |c: usize, v: &str, code: RejectCode, msg: String| {
        rejects.push(reject(row, c, v, code, msg))
    };
    let id = id.filter(|v| {
        let ok = patterns.contract.is_match(v);
        if !ok {
            bad(
                0,
                v,
                RejectCode::ContractIdInvalid,
                "contract id does not match the policy's contract pattern".into(),
            );
        }
        ok
    });
    let account = account.filter(|v| {
        let ok = patterns.account.is_match(v);
        if !ok {
            bad(
                1,
                v,
                RejectCode::AccountInvalid,
                "account id does not match the policy's account pattern".into(),
            );
        }
        ok
    });
    let status_v = parse_value(
        rejects,
        row,
        2,
        status,
        ContractStatus::parse,
        Expected::OneOf(ContractStatus::ALLOWED),
    );
    let coverage_v = parse_value(
        rejects,
        row,
        3,
        coverage,
        Coverage::parse,
        Expected::OneOf(Coverage::ALLOWED),
    );
    let covers_v = parse_value(rejects, row, 4, covers, parse_bool, BOOLEANS);
    let pricing_v = parse_value(
        rejects,
        row,
        8,
        pricing,
        PricingModel::parse,
        Expected::OneOf(PricingModel::ALLOWED),
    );
    let term_v = parse_value(
        rejects,
        row,
        9,
        term,
        |v| {
            v.parse::<u32>()
                .ok()
                .filter(|v| Contract::TERMS.contains(v))
        },
        Expected::OneOf("12, 24, 36"),
    );
    let auto_renew = match t[11] {
        None => Some(false),
        v => parse_value(rejects, row, 11, v, parse_bool, BOOLEANS),
    };
    let cancellation_days = match t[12] {
        None => Some(0),
        v => parse_value(
            rejects,
            row,
            12,
            v,
            |v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|d| *d <= Contract::MAX_CANCELLATION_DAYS)
            },
            Expected::UpTo("days", u64::from(Contract::MAX_CANCELLATION_DAYS)),
        ),
    };
    let included = match (pricing_v, t[10]) {
        (_, Some(v)) => parse_value(
            rejects,
            row,
            10,
            Some(v),
            |v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n <= Contract::MAX_INCLUDED_DEVICES)
            },
            Expected::UpTo("devices", Contract::MAX_INCLUDED_DEVICES),
        )
        .map(Some),
        (Some(PricingModel::PerTerm), None) => {
            rejects.push(reject(
                row,
                10,
                "",
                RejectCode::MissingField,
                "included_devices is required for a per_term contract".into(),
            ));
            None
        }
        (_, None) => Some(None),
    };
    let mut date = |c: usize, v: Option<&str>| -> Option<NaiveDate> {
        let v = v?;
        iso_date(v).or_else(|| {
            rejects.push(reject(
                row,
                c,
                v,
                RejectCode::DateInvalid,
                "not a date: expected YYYY-MM-DD".into(),
            ));
            None
        })
    };
    let start_v = date(5, start);
    let end_v = date(6, end);
    if let (Some(s), Some(e)) = (start_v, end_v) {
        if e < s {
            rejects.push(reject(
                row,
                6,
                end.unwrap_or(""),
                RejectCode::DateInvalid,
                format!("end_date is before start_date {s}"),
            ));
        }
    }
    let home_v = home.and_then(|v| match policy.countries.parse(v) {
        Ok(c) => match policy.countries.region(c) {
            Some(r) => Some((c, r)),
            None => {
                rejects.push(reject(
                    row,
                    7,
                    v,
                    RejectCode::CountryInvalid,
                    format!("country {c} has no sales region in the policy"),
                ));
                None
            }
        },
        Err(e) => {
            rejects.push(reject(row, 7, v, RejectCode::CountryInvalid, e.to_string()));
            None
        }
    });
    Some(Contract {
        row,
        id: id?.into(),
        account_id: account?.into(),
        status: status_v?,
        coverage: coverage_v?,
        covers_reactivation: covers_v?,
        start_date: start_v?,
        end_date: end_v?,
        home_country: home_v?.0,
        home_region: home_v?.1,
        pricing_model: pricing_v?,
        term_months: term_v?,
        included_devices: included?,
        auto_renew: auto_renew?,
        cancellation_days: cancellation_days?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The hand-parsed dates agree with chrono on any text.
        #[test]
        fn iso_date_equals_chrono(v in "[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9 +-]{0,12}|\\PC{0,12}") {
            proptest::prop_assert_eq!(iso_date(&v), NaiveDate::parse_from_str(&v, "%Y-%m-%d").ok());
        }
    }
    use crate::ingest::CsvSource;

    fn load_str(text: &str) -> Contracts {
        load_with(&Policy::load(None).unwrap(), text)
    }

    fn load_with(policy: &Policy, text: &str) -> Contracts {
        let src = CsvSource::new(
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            None,
            65536,
        )
        .unwrap();
        load(Box::new(src), policy, None).unwrap()
    }

    /// A home country the policy gives no sales region (a policy file
    /// that replaces the built-in one may leave some out) rejects its
    /// contract with a line saying so: it used to be dropped without one.
    #[test]
    fn a_home_country_without_a_region_is_a_reject_not_a_silent_drop() {
        let mut file = crate::policy::PolicyFile::builtin();
        file.countries.remove("DE");
        let policy = Policy::build(file).unwrap();
        let c = load_with(
            &policy,
            &format!("{HEADER}C-1,A-1,active,extended,true,2026-01-01,2027-12-31,DE,per_device,12,,no,0\nC-2,A-1,active,extended,true,2026-01-01,2027-12-31,FR,per_device,12,,no,0\n"),
        );
        assert_eq!(c.by_id.keys().collect::<Vec<_>>(), ["C-2"]);
        let got: Vec<(u64, &str, &str, RejectCode)> = c
            .rejects
            .iter()
            .map(|r| (r.row, r.column.as_ref(), r.value.as_str(), r.code))
            .collect();
        assert_eq!(
            got,
            vec![(1, "home_country", "DE", RejectCode::CountryInvalid)]
        );
        assert!(c.rejects[0].message.contains("no sales region"));
    }

    const HEADER: &str = "contract_id,account_id,status,coverage,covers_reactivation,start_date,end_date,home_country,pricing_model,term_months,included_devices,auto_renew,cancellation_days\n";

    /// `cancellation_days` of 100000000 once panicked `run` after the
    /// activations were bought (the cancellation window's end date did not
    /// fit). Every number outside its range is now a reject of its row.
    #[test]
    fn numbers_out_of_range_reject_their_row() {
        let row = |id: &str, term: &str, included: &str, days: &str| {
            format!("{id},A-1,active,extended,true,2026-01-01,2027-12-31,US,per_term,{term},{included},no,{days}\n")
        };
        let c = load_str(&format!(
            "{HEADER}{}{}{}{}{}{}{}",
            row("C-1", "12", "10000000", "3650"),
            row("C-2", "12", "0", "100000000"),
            row("C-3", "24", "5", "3651"),
            row("C-4", "36", "10000001", "0"),
            row("C-5", "48", "5", "30"),
            row("C-6", "12", "18446744073709551616", "4294967296"),
            row("C-7", "12", "-1", "-30"),
        ));
        assert_eq!(c.by_id.keys().collect::<Vec<_>>(), ["C-1"]);
        assert_eq!(
            (
                c.by_id["C-1"].included_devices,
                c.by_id["C-1"].cancellation_days
            ),
            (Some(10_000_000), 3650)
        );
        let got: Vec<(u64, &str, &str)> = c
            .rejects
            .iter()
            .map(|r| (r.row, r.column.as_ref(), r.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "cancellation_days", "100000000"),
                (3, "cancellation_days", "3651"),
                (4, "included_devices", "10000001"),
                (5, "term_months", "48"),
                (6, "cancellation_days", "4294967296"),
                (6, "included_devices", "18446744073709551616"),
                (7, "cancellation_days", "-30"),
                (7, "included_devices", "-1"),
            ]
        );
        assert!(c.rejects.iter().all(|r| r.code == RejectCode::ValueInvalid));
        assert_eq!(
            c.rejects[0].message,
            "cancellation_days must be a whole number of days from 0 to 3650"
        );
    }

    #[test]
    fn good_rows_and_every_kind_of_bad_row() {
        let c = load_str(&format!(
            "{HEADER}C-1,A-1,active,extended,true,2026-01-01,2027-12-31,US,per_device,24,,yes,30\n\
             C-2,A-1,Active,Standard,no,2026-01-01,2027-12-31,Germany,per_term,12,150,false,14\n\
             C-1,A-9,active,extended,true,2026-01-01,2027-12-31,US,per_device,24,,yes,30\n\
             C-3,A-1,paused,gold,maybe,2026-13-01,2025-12-31,Atlantis,per_site,18,,sometimes,x\n\
             C-4,A-1,active,extended,true,2026-06-01,2026-01-01,US,per_term,12,,no,30\n\
             ,,active,extended,true,2026-01-01,2027-12-31,US,per_device,12,,,\n"
        ));
        assert_eq!(c.by_id.len(), 2);
        let c2 = &c.by_id["C-2"];
        assert_eq!(
            (
                c2.coverage,
                c2.pricing_model,
                c2.included_devices,
                c2.term_months
            ),
            (Coverage::Standard, PricingModel::PerTerm, Some(150), 12)
        );
        assert_eq!(c2.home_country.as_str(), "DE");
        let got: Vec<(u64, &str, &str)> = c
            .rejects
            .iter()
            .map(|r| (r.row, r.column.as_ref(), r.code.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "contract_id", "DUPLICATE_CONTRACT"),
                (4, "status", "VALUE_INVALID"),
                (4, "coverage", "VALUE_INVALID"),
                (4, "covers_reactivation", "VALUE_INVALID"),
                (4, "pricing_model", "VALUE_INVALID"),
                (4, "term_months", "VALUE_INVALID"),
                (4, "auto_renew", "VALUE_INVALID"),
                (4, "cancellation_days", "VALUE_INVALID"),
                (4, "start_date", "DATE_INVALID"),
                (4, "home_country", "COUNTRY_INVALID"),
                (5, "included_devices", "MISSING_FIELD"),
                (5, "end_date", "DATE_INVALID"),
                (6, "contract_id", "MISSING_FIELD"),
                (6, "account_id", "MISSING_FIELD"),
            ]
        );
    }
}
