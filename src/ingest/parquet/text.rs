//! Parquet values written as the text a CSV export would hold: exact decimals, UUIDs, dates, date-times, times and years.

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat};
use polars_core::prelude::TimeUnit;

/// `unscaled` × 10^-`scale`, every digit written: `1250`, 2 → `12.50`.
pub(super) fn decimal_text(unscaled: i128, scale: usize) -> String {
    with_point(unscaled < 0, unscaled.unsigned_abs().to_string(), scale)
}

/// [`decimal_text`] of a big-endian two's complement integer of any width
/// (Parquet's fixed-length and variable-length decimals).
pub(super) fn big_decimal_text(bytes: &[u8], scale: usize) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    if bytes.len() <= 16 {
        let fill = if negative { 0xFF } else { 0 };
        let mut wide = [fill; 16];
        wide[16 - bytes.len()..].copy_from_slice(bytes);
        return decimal_text(i128::from_be_bytes(wide), scale);
    }
    // Wider than 128 bits: the magnitude, divided by ten digit by digit.
    let mut magnitude = bytes.to_vec();
    if negative {
        for b in magnitude.iter_mut() {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let mut digits = Vec::new();
    while magnitude.iter().any(|&b| b != 0) {
        let mut rest = 0u32;
        for b in magnitude.iter_mut() {
            let v = rest * 256 + u32::from(*b);
            *b = (v / 10) as u8;
            rest = v % 10;
        }
        digits.push(b'0' + rest as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    with_point(
        negative,
        String::from_utf8_lossy(&digits).into_owned(),
        scale,
    )
}

/// The digits of a magnitude with `scale` of them after the point.
pub(super) fn with_point(negative: bool, digits: String, scale: usize) -> String {
    let mut text = String::with_capacity(digits.len() + scale + 3);
    if negative && digits.bytes().any(|d| d != b'0') {
        text.push('-');
    }
    if scale == 0 {
        text.push_str(&digits);
        return text;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    text.push_str(whole);
    text.push('.');
    text.push_str(fraction);
    text
}

/// A UUID's canonical text, `8-4-4-4-12` lower-case hex digits.
pub(super) fn uuid_text(b: &[u8]) -> String {
    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Days since 1970-01-01 as an ISO date; one outside chrono's range (years
/// ±262,143) is written by hand, as ISO 8601's expanded years, for a
/// reject to show.
pub(super) fn date_text(days: i32) -> String {
    days.checked_add(719_163)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| {
            let (y, m, d) = civil(i64::from(days));
            format!("{}-{m:02}-{d:02}", year_text(y))
        })
}

/// A date-time; a time-zone-aware one is UTC in Parquet, a naive one is
/// written without offset, which refleet reads as UTC too.
pub(super) fn datetime_text(v: i64, unit: TimeUnit, zoned: bool) -> String {
    let t = match unit {
        TimeUnit::Nanoseconds => Some(DateTime::from_timestamp_nanos(v)),
        TimeUnit::Microseconds => DateTime::from_timestamp_micros(v),
        TimeUnit::Milliseconds => DateTime::from_timestamp_millis(v),
    };
    match t {
        Some(t) if zoned => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        Some(t) => t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
        None => {
            // Outside chrono's range: the date and time of day by hand.
            let per_second: i64 = match unit {
                TimeUnit::Nanoseconds => 1_000_000_000,
                TimeUnit::Microseconds => 1_000_000,
                TimeUnit::Milliseconds => 1_000,
            };
            let seconds = v.div_euclid(per_second);
            let (y, m, d) = civil(seconds.div_euclid(86_400));
            let s = seconds.rem_euclid(86_400);
            format!(
                "{}-{m:02}-{d:02}T{:02}:{:02}:{:02}{}",
                year_text(y),
                s / 3600,
                s / 60 % 60,
                s % 60,
                if zoned { "Z" } else { "" }
            )
        }
    }
}

/// Nanoseconds since midnight as `HH:MM:SS` with any fraction; a value
/// beyond a day is left as its number.
pub(super) fn time_text(ns: i64) -> String {
    let t = u32::try_from(ns.div_euclid(1_000_000_000))
        .ok()
        .zip(u32::try_from(ns.rem_euclid(1_000_000_000)).ok())
        .filter(|_| ns >= 0)
        .and_then(|(s, n)| NaiveTime::from_num_seconds_from_midnight_opt(s, n));
    match t {
        Some(t) => t.format("%H:%M:%S%.f").to_string(),
        None => ns.to_string(),
    }
}

/// A year as ISO 8601 writes it: four digits, or a sign and more.
pub(super) fn year_text(y: i64) -> String {
    if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else {
        format!("{y:+}")
    }
}

/// The proleptic Gregorian (year, month, day) of a day count from
/// 1970-01-01 (H. Hinnant's `civil_from_days`); exact for any `i32` day
/// count and far beyond.
pub(super) fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
