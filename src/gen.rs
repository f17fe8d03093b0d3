//! `refleet gen`: deterministic, realistic inventories and matching contracts
//! for tests and benchmarks, with a chosen share of planted defects covering
//! every reject code and every ineligibility reason.
//!
//! Rows are generated in fixed blocks, each from its own seed, on all cores,
//! and written in order: the same `--seed` gives the same bytes whatever the
//! thread count. Identifiers are unique by construction (a bijection of the
//! row number), so the only duplicates are the planted ones.

use std::io::Write;

use chrono::{Duration, NaiveDate};
use rayon::prelude::*;

use crate::domain::Region;
use crate::domain::RejectCode;
use crate::eligibility::Reason;

pub const INVENTORY_HEADER: &str = "serial_number,mac_address,model,item_type,license_id,bound_serial,account_id,contract_id,country,site,deactivated_at,deactivation_reason,repair_status,reported_lost,asset_tag";
pub const CONTRACTS_HEADER: &str = "contract_id,account_id,status,coverage,covers_reactivation,start_date,end_date,home_country,pricing_model,term_months,included_devices,auto_renew,cancellation_days";

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub rows: u64,
    pub seed: u64,
    /// Share of rows with one planted defect (0.0–1.0).
    pub defects: f64,
    /// The date the contracts are built around (active contracts cover it).
    pub as_of: NaiveDate,
    /// Inventory rows per account (each account has one contract of each
    /// kind): [`ACCOUNT_ROWS`] by default; fewer makes many small contracts.
    pub account_rows: u64,
}

/// (model, family code, serial is the MAC, eligible as of 2026, network port)
const MODELS: &[(&str, u8, bool)] = &[
    ("VVX 150", 0, true),
    ("VVX 250", 0, true),
    ("VVX 350", 0, true),
    ("VVX 450", 0, true),
    ("CCX 400", 0, true),
    ("CCX 500", 0, true),
    ("CCX 505", 0, true),
    ("CCX 600", 0, true),
    ("CCX 700", 0, true),
    ("Edge E100", 0, true),
    ("Edge E220", 0, true),
    ("Edge E350", 0, true),
    ("Edge E450", 0, true),
    ("Edge E550", 0, true),
    ("Trio C60", 0, true),
    ("Studio X30", 1, true),
    ("Studio X50", 1, true),
    ("Studio X52", 1, true),
    ("Studio X70", 1, true),
    ("Studio R30", 1, true),
    ("G7500", 1, true),
    ("Sync 20", 2, false),
    ("Sync 40", 2, false),
    ("Sync 60", 2, false),
    ("Voyager Focus 2", 2, false),
    ("Voyager 4320", 2, false),
    ("Savi 7320", 2, false),
];
const INELIGIBLE_MODEL: &str = "VVX 411";
const EOS_MODEL: &str = "Trio 8800";
const UNKNOWN_MODEL: &str = "VVX 9000";

const POLYCOM_OUIS: [u32; 2] = [0x0004F2, 0x64167F];
const PLANTRONICS_OUIS: [u32; 3] = [0x00197F, 0x48C1AC, 0xE422A5];

/// Countries per region, with the weight they appear with.
const COUNTRIES: &[(&str, Region)] = &[
    ("US", Region::Amer),
    ("US", Region::Amer),
    ("US", Region::Amer),
    ("CA", Region::Amer),
    ("MX", Region::Amer),
    ("BR", Region::Amer),
    ("GB", Region::Emea),
    ("GB", Region::Emea),
    ("DE", Region::Emea),
    ("DE", Region::Emea),
    ("FR", Region::Emea),
    ("NL", Region::Emea),
    ("ES", Region::Emea),
    ("SE", Region::Emea),
    ("AE", Region::Emea),
    ("SA", Region::Emea),
    ("IL", Region::Emea),
    ("ZA", Region::Emea),
    ("JP", Region::Apac),
    ("AU", Region::Apac),
    ("SG", Region::Apac),
    ("IN", Region::Apac),
    ("NZ", Region::Apac),
];
const SITES: &[&str] = &[
    "HQ",
    "Floor 2",
    "Floor 3",
    "Sales",
    "Engineering",
    "Board Room",
    "Reception",
    "Call Center",
    "Warehouse",
    "Lab",
];
const CITIES: &[&str] = &[
    "New York",
    "Austin",
    "Toronto",
    "London",
    "Berlin",
    "Paris",
    "Amsterdam",
    "Dubai",
    "Tokyo",
    "Sydney",
    "Singapore",
    "Bangalore",
];

/// A planted defect: a reject code (or warning) `validate` gives the row,
/// or an ineligibility reason the eligibility stage gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    Reject(RejectCode),
    Ineligible(Reason),
}

/// Whether `gen` plants `code` in a row. The match has no wildcard, so a
/// new reject code does not compile until it is decided here; the codes
/// left out are about the file, not a row's values (`tests/inputs` covers
/// them with fixtures).
const fn planted(code: RejectCode) -> bool {
    use RejectCode::*;
    match code {
        MacInvalid | MacReserved | MacForeignOui | SerialInvalid | SerialMacMismatch
        | LicenseInvalid | AccountInvalid | ContractIdInvalid | CountryInvalid | DateInvalid
        | DateAmbiguous | DuplicateSerial | DuplicateMac | DuplicateLicense | MissingField => true,
        // A value no column takes (the optional columns gen writes are
        // always valid), broken encoding or quoting, a record of the wrong
        // width or size: the file's, not a row's.
        ValueInvalid | EncodingInvalid | FieldCountMismatch | RecordTooLarge
        | UnterminatedQuote => false,
        // A contracts file's defect, not an inventory row's.
        DuplicateContract => false,
    }
}

const PLANTED_REJECTS: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < RejectCode::ALL.len() {
        n += planted(RejectCode::ALL[i]) as usize;
        i += 1;
    }
    n
};

/// The reject codes `gen` plants (see [`planted`]), in their order.
pub fn planted_reject_codes() -> impl Iterator<Item = RejectCode> {
    RejectCode::ALL.into_iter().filter(|c| planted(*c))
}

/// Every kind of planted defect, derived from the codes and reasons
/// themselves: the planted reject codes in their order, then every
/// ineligibility reason.
const DEFECTS: [Defect; PLANTED_REJECTS + Reason::ALL.len()] = {
    let mut all = [Defect::Ineligible(Reason::ModelUnknown); PLANTED_REJECTS + Reason::ALL.len()];
    let (mut i, mut n) = (0, 0);
    while i < RejectCode::ALL.len() {
        if planted(RejectCode::ALL[i]) {
            all[n] = Defect::Reject(RejectCode::ALL[i]);
            n += 1;
        }
        i += 1;
    }
    let mut j = 0;
    while j < Reason::ALL.len() {
        all[n + j] = Defect::Ineligible(Reason::ALL[j]);
        j += 1;
    }
    all
};

/// Devices per account by default; an account has one contract per kind below.
pub const ACCOUNT_ROWS: u64 = 400;
/// The range of [`GenOptions::account_rows`]: an account's first row is a
/// clean anchor the others may point at, so at least 2.
pub const ACCOUNT_ROWS_RANGE: std::ops::RangeInclusive<u64> = 2..=1_000_000_000;
/// Contract kinds per account: the good one first, then the defective ones.
#[derive(Clone, Copy)]
enum ContractKind {
    Good,
    Expired,
    Suspended,
    NotStarted,
    NoCoverage,
    StandardHome,
}
const CONTRACT_KINDS: [ContractKind; 6] = [
    ContractKind::Good,
    ContractKind::Expired,
    ContractKind::Suspended,
    ContractKind::NotStarted,
    ContractKind::NoCoverage,
    ContractKind::StandardHome,
];

const BLOCK_ROWS: u64 = 16 * 1024;

/// A bijection on 0..2^24 (odd multiplier and xor-shift), so identifiers look
/// random but never repeat.
fn permute24(x: u64) -> u64 {
    let mut v = x & 0xFF_FFFF;
    v = (v * 0x9E3779 + 0x5A5A5) & 0xFF_FFFF;
    v ^= v >> 11;
    v = (v * 0x6A09E7) & 0xFF_FFFF;
    v ^= v >> 13;
    v
}

fn mix(seed: u64, x: u64) -> u64 {
    let mut z = seed ^ x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn account_id(a: u64) -> String {
    format!("ACME-{:05}", a)
}

fn contract_id(a: u64, k: usize) -> String {
    format!("C-{:05}-{}", a, k + 1)
}

/// Home country of an account: its region decides where its devices are.
fn account_country(seed: u64, a: u64) -> (&'static str, Region) {
    let i = (mix(seed, a) % COUNTRIES.len() as u64) as usize;
    COUNTRIES[i]
}

fn base36(mut v: u128, width: usize) -> String {
    let digits = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = vec![b'0'; width];
    for o in out.iter_mut().rev() {
        *o = digits[(v % 36) as usize];
        v /= 36;
    }
    String::from_utf8(out).unwrap_or_default()
}

struct RowIds {
    mac: u64,
    serial: String,
    license: String,
}

fn ids(seed: u64, i: u64, family: u8) -> RowIds {
    let nic = permute24(i);
    let round = i >> 24;
    let oui = match family {
        0 | 1 => POLYCOM_OUIS[(round as usize) % POLYCOM_OUIS.len()],
        _ => PLANTRONICS_OUIS[(round as usize) % PLANTRONICS_OUIS.len()],
    };
    let mac = (u64::from(oui) << 24) | nic;
    let serial = match family {
        0 => format!("{mac:012X}"),
        // Video and USB devices: a 14-character serial unique per row.
        _ => format!(
            "8{}{}",
            if family == 1 { 'G' } else { 'H' },
            base36(u128::from(i) * 7919 + u128::from(seed % 1000), 12)
        ),
    };
    let l = base36(u128::from(mix(seed, i)) << 20 | u128::from(i), 16);
    let license = format!("{}-{}-{}-{}", &l[0..4], &l[4..8], &l[8..12], &l[12..16]);
    RowIds {
        mac,
        serial,
        license,
    }
}

fn is_license_row(opts: &GenOptions, i: u64) -> bool {
    !i.is_multiple_of(opts.account_rows) && (mix(opts.seed, i) >> 16).is_multiple_of(20)
}

fn anchor_ids(opts: &GenOptions, i: u64) -> RowIds {
    ids(opts.seed, i - i % opts.account_rows, 0)
}

fn fmt_mac(mac: u64, style: u64) -> String {
    let b = mac.to_be_bytes();
    match style % 4 {
        0 => format!(
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        ),
        1 => format!(
            "{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        ),
        2 => format!(
            "{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        ),
        _ => format!("{mac:012X}"),
    }
}

fn csv_cell(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .any(|b| b == b',' || b == b'"' || b == b'\n' || b == b'\r')
    {
        out.push(b'"');
        out.extend(s.replace('"', "\"\"").bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// One inventory row as its 15 cells.
fn row(opts: &GenOptions, i: u64) -> [String; 15] {
    let seed = opts.seed;
    let r = mix(seed, i);
    let account = i / opts.account_rows;
    let (home, home_region) = account_country(seed, account);
    // Devices are mostly in the account's home country, some elsewhere in its region.
    let country = if r.is_multiple_of(5) {
        let same: Vec<&str> = COUNTRIES
            .iter()
            .filter(|(_, reg)| *reg == home_region)
            .map(|(c, _)| *c)
            .collect();
        same[((r >> 8) % same.len() as u64) as usize]
    } else {
        home
    };
    let is_license = is_license_row(opts, i);
    // Each account's first row is a clean desk phone: planted duplicates and
    // license bindings point at it, so they are what they claim to be.
    let (model, family, _) = if i.is_multiple_of(opts.account_rows) {
        MODELS[((r >> 20) % 15) as usize]
    } else {
        MODELS[((r >> 20) % MODELS.len() as u64) as usize]
    };
    let RowIds {
        mac,
        serial,
        license,
    } = ids(seed, i, family);
    let deactivated = opts.as_of - Duration::days(1 + ((r >> 28) % 400) as i64);
    let reason = [
        "license_timeout",
        "contract_lapsed",
        "migration",
        "manual",
        "unknown",
        "license_timeout",
    ][((r >> 36) % 6) as usize];
    let site = format!(
        "{} {}",
        CITIES[((r >> 40) % CITIES.len() as u64) as usize],
        SITES[((r >> 44) % SITES.len() as u64) as usize]
    );
    let mut cells: [String; 15] = Default::default();
    if is_license {
        cells[3] = "license".into();
        cells[4] = license;
        // Bound to the account's anchor device; a few licenses are unbound.
        cells[5] = if r.is_multiple_of(9) {
            String::new()
        } else {
            anchor_ids(opts, i).serial
        };
    } else {
        cells[0] = serial;
        cells[1] = if family == 2 && r.is_multiple_of(3) {
            String::new()
        } else {
            fmt_mac(mac, r >> 48)
        };
        cells[2] = model.into();
        cells[3] = if r.is_multiple_of(7) {
            "device".into()
        } else {
            String::new()
        };
    }
    cells[6] = account_id(account);
    cells[7] = contract_id(account, 0);
    cells[8] = country.into();
    cells[9] = site;
    cells[10] = if r.is_multiple_of(11) {
        format!(
            "{}T{:02}:{:02}:00Z",
            deactivated.format("%Y-%m-%d"),
            r % 24,
            (r >> 5) % 60
        )
    } else {
        deactivated.format("%Y-%m-%d").to_string()
    };
    cells[11] = reason.into();
    cells[12] = "none".into();
    cells[13] = "false".into();
    cells[14] = format!("AT-{:08}", i + 1);

    let defect_roll = (mix(seed ^ 0xD3F3C7, i) % 1_000_000) as f64 / 1_000_000.0;
    if defect_roll < opts.defects && !i.is_multiple_of(opts.account_rows) {
        plant(opts, i, &mut cells, is_license, family, home_region);
    }
    cells
}

/// Rewrites one row so that it carries one defect; which one cycles with the row.
fn plant(
    opts: &GenOptions,
    i: u64,
    c: &mut [String; 15],
    is_license: bool,
    family: u8,
    home_region: Region,
) {
    use Reason::*;
    use RejectCode::*;
    let defect = DEFECTS[(mix(opts.seed ^ 0xBADD, i) % DEFECTS.len() as u64) as usize];
    let account = i / opts.account_rows;
    let device_only = !matches!(
        defect,
        Defect::Reject(LicenseInvalid | DuplicateLicense) | Defect::Ineligible(LicenseUnbound)
    );
    if is_license && device_only {
        // Defects about devices are planted on device rows only; keep the license clean.
        if !matches!(
            defect,
            Defect::Reject(
                AccountInvalid
                    | ContractIdInvalid
                    | CountryInvalid
                    | DateInvalid
                    | DateAmbiguous
                    | MissingField
            ) | Defect::Ineligible(ContractNotFound | ContractExpired)
        ) {
            return;
        }
    }
    if !is_license && !device_only {
        return;
    }
    let anchor = || anchor_ids(opts, i);
    match defect {
        // Not planted (see `planted`).
        Defect::Reject(
            ValueInvalid | EncodingInvalid | FieldCountMismatch | RecordTooLarge
            | UnterminatedQuote | DuplicateContract,
        ) => {}
        Defect::Reject(MacInvalid) => c[1] = "00:04:F2:ZZ:10:01".into(),
        Defect::Reject(MacReserved) => c[1] = "01:00:5E:00:00:FB".into(),
        Defect::Reject(MacForeignOui) if family == 0 => {
            // Keep the serial equal to the MAC: the row stays valid with a warning.
            let mac = 0x0212_3400_0000_u64 | (i & 0xFF_FFFF);
            c[1] = fmt_mac(mac, 0);
            c[0] = format!("{mac:012X}");
        }
        Defect::Reject(MacForeignOui) => c[1] = fmt_mac(0x0212_3400_0000_u64 | (i & 0xFF_FFFF), 0),
        Defect::Reject(SerialInvalid) => c[0] = "SN#12".into(),
        Defect::Reject(SerialMacMismatch) if family == 0 => {
            c[0] = ids(opts.seed, i + (1 << 23), 0).serial
        }
        Defect::Reject(SerialMacMismatch) => c[0] = "BADSERIAL123".into(),
        Defect::Reject(LicenseInvalid) => c[4] = "LIC-123".into(),
        Defect::Reject(AccountInvalid) => c[6] = "#ACME".into(),
        Defect::Reject(ContractIdInvalid) => c[7] = "contract?".into(),
        Defect::Reject(CountryInvalid) => c[8] = "Atlantis".into(),
        Defect::Reject(DateInvalid) => c[10] = "2025-02-30".into(),
        Defect::Reject(DateAmbiguous) => c[10] = "03/04/2025".into(),
        Defect::Reject(DuplicateSerial) => {
            // A headset has no MAC to collide: only the serial repeats.
            c[0] = anchor().serial;
            c[1] = String::new();
            c[2] = "Savi 7320".into();
        }
        Defect::Reject(DuplicateMac) => {
            // A video bar's serial is not its MAC: only the MAC repeats.
            c[0] = ids(opts.seed, i, 1).serial;
            c[1] = fmt_mac(anchor().mac, 1);
            c[2] = "Studio X30".into();
        }
        Defect::Reject(DuplicateLicense) => match (i - i % opts.account_rows + 1..i)
            .rev()
            .find(|&j| is_license_row(opts, j))
        {
            Some(j) => c[4] = ids(opts.seed, j, 0).license,
            None => c[4] = "LIC-123".into(),
        },
        Defect::Reject(MissingField) => c[6] = String::new(),
        Defect::Ineligible(ModelUnknown) => c[2] = UNKNOWN_MODEL.into(),
        Defect::Ineligible(ModelNotEligible) | Defect::Ineligible(ModelEndOfSupport) => {
            let mac = ids(opts.seed, i, 0).mac;
            c[2] = if defect == Defect::Ineligible(ModelNotEligible) {
                INELIGIBLE_MODEL
            } else {
                EOS_MODEL
            }
            .into();
            c[0] = format!("{mac:012X}");
            c[1] = fmt_mac(mac, 0);
        }
        Defect::Ineligible(ContractNotFound) => c[7] = format!("C-{account:05}-99"),
        Defect::Ineligible(ContractExpired) => c[7] = contract_id(account, 1),
        Defect::Ineligible(ContractSuspended) => c[7] = contract_id(account, 2),
        Defect::Ineligible(ContractNotStarted) => c[7] = contract_id(account, 3),
        Defect::Ineligible(NoReactivationCoverage) => c[7] = contract_id(account, 4),
        Defect::Ineligible(RegionNotCovered) => {
            c[7] = contract_id(account, 5);
            c[8] = match home_region {
                Region::Amer => "DE",
                Region::Emea => "JP",
                Region::Apac => "US",
            }
            .into();
        }
        Defect::Ineligible(ContractAccountMismatch) => c[6] = account_id(account + 1_000_000),
        Defect::Ineligible(RegionRestricted) => c[8] = "IR".into(),
        Defect::Ineligible(RepairPending) => c[12] = "pending".into(),
        Defect::Ineligible(ReportedLost) => c[13] = "yes".into(),
        Defect::Ineligible(ManualReview) => c[11] = "security_lock".into(),
        Defect::Ineligible(LicenseUnbound) => c[5] = "NOSUCHDEVICE01".into(),
    }
}

fn contract_row(opts: &GenOptions, account: u64, k: usize) -> [String; 13] {
    let (home, _) = account_country(opts.seed, account);
    let r = mix(opts.seed ^ 0xC0, account);
    let as_of = opts.as_of;
    let term = [12u32, 24, 36][(r % 3) as usize];
    let per_term = r.is_multiple_of(4);
    let start = as_of - Duration::days(30 + (r >> 8) as i64 % 300);
    let mut c: [String; 13] = Default::default();
    let (status, coverage, covers, start, end) = match CONTRACT_KINDS[k] {
        ContractKind::Good => (
            "active",
            "extended",
            true,
            start,
            start + Duration::days(i64::from(term) * 30 + 400),
        ),
        ContractKind::Expired => (
            "expired",
            "extended",
            true,
            start - Duration::days(800),
            start - Duration::days(35),
        ),
        ContractKind::Suspended => (
            "suspended",
            "extended",
            true,
            start,
            start + Duration::days(700),
        ),
        ContractKind::NotStarted => (
            "active",
            "extended",
            true,
            as_of + Duration::days(20),
            as_of + Duration::days(400),
        ),
        ContractKind::NoCoverage => (
            "active",
            "extended",
            false,
            start,
            start + Duration::days(700),
        ),
        ContractKind::StandardHome => (
            "active",
            "standard",
            true,
            start,
            start + Duration::days(700),
        ),
    };
    c[0] = contract_id(account, k);
    c[1] = account_id(account);
    c[2] = status.into();
    c[3] = coverage.into();
    c[4] = covers.to_string();
    c[5] = start.format("%Y-%m-%d").to_string();
    c[6] = end.format("%Y-%m-%d").to_string();
    c[7] = home.into();
    c[8] = if per_term { "per_term" } else { "per_device" }.into();
    c[9] = term.to_string();
    c[10] = if per_term {
        ((r >> 20) % 300 + 50).to_string()
    } else {
        String::new()
    };
    c[11] = r.is_multiple_of(2).to_string();
    c[12] = [14u32, 30, 30, 60][((r >> 12) % 4) as usize].to_string();
    c
}

/// Writes the inventory CSV (header included) to `out`.
pub fn write_inventory_csv(opts: &GenOptions, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{INVENTORY_HEADER}")?;
    let blocks = opts.rows.div_ceil(BLOCK_ROWS);
    // Generate a few blocks at a time in parallel, write them in order.
    let batch = 8u64;
    let mut b = 0;
    while b < blocks {
        let end = (b + batch).min(blocks);
        let bufs: Vec<Vec<u8>> = (b..end)
            .into_par_iter()
            .map(|blk| {
                let mut buf = Vec::with_capacity(BLOCK_ROWS as usize * 128);
                for i in blk * BLOCK_ROWS..((blk + 1) * BLOCK_ROWS).min(opts.rows) {
                    for (j, cell) in row(opts, i).iter().enumerate() {
                        if j > 0 {
                            buf.push(b',');
                        }
                        csv_cell(&mut buf, cell);
                    }
                    buf.push(b'\n');
                }
                buf
            })
            .collect();
        for buf in bufs {
            out.write_all(&buf)?;
        }
        b = end;
    }
    Ok(())
}

/// All inventory rows as string columns (for the Parquet output).
pub fn inventory_columns(opts: &GenOptions, start: u64, end: u64) -> Vec<Vec<String>> {
    let rows: Vec<[String; 15]> = (start..end).into_par_iter().map(|i| row(opts, i)).collect();
    let mut cols: Vec<Vec<String>> = (0..15).map(|_| Vec::with_capacity(rows.len())).collect();
    for r in rows {
        for (c, v) in cols.iter_mut().zip(r) {
            c.push(v);
        }
    }
    cols
}

pub fn accounts(opts: &GenOptions) -> u64 {
    opts.rows.div_ceil(opts.account_rows).max(1)
}

pub fn write_contracts_csv(opts: &GenOptions, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{CONTRACTS_HEADER}")?;
    for a in 0..accounts(opts) {
        for k in 0..CONTRACT_KINDS.len() {
            let cells = contract_row(opts, a, k);
            let mut line = Vec::with_capacity(128);
            for (j, cell) in cells.iter().enumerate() {
                if j > 0 {
                    line.push(b',');
                }
                csv_cell(&mut line, cell);
            }
            line.push(b'\n');
            out.write_all(&line)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(rows: u64) -> GenOptions {
        GenOptions {
            rows,
            seed: 7,
            defects: 0.05,
            as_of: NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
            account_rows: ACCOUNT_ROWS,
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_inventory_csv(&opts(3000), &mut a).unwrap();
        write_inventory_csv(&opts(3000), &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|c| **c == b'\n').count(), 3001);
    }

    #[test]
    fn permutation_is_a_bijection() {
        let mut seen = vec![false; 1 << 24];
        for x in 0..(1u64 << 24) {
            let p = permute24(x) as usize;
            assert!(!seen[p]);
            seen[p] = true;
        }
    }

    #[test]
    fn every_defect_kind_is_planted() {
        let o = GenOptions {
            defects: 1.0,
            ..opts(20_000)
        };
        let planted: std::collections::HashSet<usize> = (0..20_000u64)
            .filter(|i| i % o.account_rows != 0)
            .map(|i| (mix(o.seed ^ 0xBADD, i) % DEFECTS.len() as u64) as usize)
            .collect();
        assert_eq!(planted.len(), DEFECTS.len());
    }
}
