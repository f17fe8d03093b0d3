//! Deactivation timestamps (SPEC §3): ISO 8601 in, explicit UTC out, and no
//! guessing between day-first and month-first dates.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// A date, or a date-time normalised to UTC. Kept apart because the
/// idempotency key of a reactivation uses the text as the export gave it,
/// only canonicalised.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Timestamp {
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl Timestamp {
    /// The calendar date in UTC.
    pub fn date(&self) -> NaiveDate {
        match self {
            Timestamp::Date(d) => *d,
            Timestamp::DateTime(t) => t.date_naive(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timestamp::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Timestamp::DateTime(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }
}

/// How to read dates that are not ISO 8601 (`--date-format`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DateFormat {
    /// 03/04/2025 is 3 April 2025.
    DayFirst,
    /// 03/04/2025 is 4 March 2025.
    MonthFirst,
    /// A chrono `strftime` pattern such as `%d.%m.%Y`.
    Pattern(String),
}

impl std::str::FromStr for DateFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dmy" | "dd/mm/yyyy" | "day-first" => Ok(DateFormat::DayFirst),
            "mdy" | "mm/dd/yyyy" | "month-first" => Ok(DateFormat::MonthFirst),
            _ if s.contains('%') => Ok(DateFormat::Pattern(s.to_string())),
            _ => Err(format!(
                "unknown date format `{s}`: use dmy, mdy or a strftime pattern such as %d.%m.%Y"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("not a date: expected ISO 8601 (2025-03-04 or 2025-03-04T10:00:00Z)")]
    Invalid,
    #[error("ambiguous date: it reads as {0} or {1}; pass --date-format dmy or mdy")]
    Ambiguous(NaiveDate, NaiveDate),
}

/// Parses an ISO 8601 date or date-time; other numeric dates only when
/// `format` says how, or when exactly one reading is a real date.
pub fn parse_timestamp(input: &str, format: Option<&DateFormat>) -> Result<Timestamp, DateError> {
    let s = super::trim(input);
    if let Some(t) = parse_iso(s) {
        return Ok(t);
    }
    if let Some(DateFormat::Pattern(p)) = format {
        if let Ok(d) = NaiveDate::parse_from_str(s, p) {
            return Ok(Timestamp::Date(d));
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(s, p) {
            return Ok(Timestamp::DateTime(t.and_utc()));
        }
        return Err(DateError::Invalid);
    }
    parse_numeric(s, format)
}

fn parse_iso(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if b.len() == 10 {
        return fast_date(b).map(Timestamp::Date);
    }
    if b[10] != b'T' && b[10] != b't' && b[10] != b' ' {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(Timestamp::DateTime(t.with_timezone(&Utc)));
    }
    // A `Z` suffix, or no offset at all (the export's clock is then taken as
    // UTC, as the README says): read the rest as a naive UTC time.
    let s = s.strip_suffix(['Z', 'z']).unwrap_or(s);
    for pattern in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, pattern) {
            return Some(Timestamp::DateTime(t.and_utc()));
        }
    }
    for pattern in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, pattern) {
            return Some(Timestamp::DateTime(t.with_timezone(&Utc)));
        }
    }
    None
}

/// `YYYY-MM-DD` without going through chrono's format machinery (hot path).
fn fast_date(b: &[u8]) -> Option<NaiveDate> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let y = num(0..4)?;
    let m = num(5..7)?;
    let d = num(8..10)?;
    NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)
}

/// `a/b/yyyy`, `a.b.yyyy`, `a-b-yyyy` and `yyyy/mm/dd`.
fn parse_numeric(s: &str, format: Option<&DateFormat>) -> Result<Timestamp, DateError> {
    let parts: Vec<&str> = s.split(['/', '.', '-']).collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 4 || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err(DateError::Invalid);
    }
    let n: Vec<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    if n.len() != 3 {
        return Err(DateError::Invalid);
    }
    let ymd = |y: u32, m: u32, d: u32| NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d);
    if parts[0].len() == 4 {
        return ymd(n[0], n[1], n[2])
            .map(Timestamp::Date)
            .ok_or(DateError::Invalid);
    }
    if parts[2].len() != 4 {
        return Err(DateError::Invalid);
    }
    let day_first = ymd(n[2], n[1], n[0]);
    let month_first = ymd(n[2], n[0], n[1]);
    let chosen = match format {
        Some(DateFormat::DayFirst) => day_first,
        Some(DateFormat::MonthFirst) => month_first,
        _ => match (day_first, month_first) {
            (Some(a), Some(b)) if a != b => return Err(DateError::Ambiguous(a, b)),
            (a, b) => a.or(b),
        },
    };
    chosen.map(Timestamp::Date).ok_or(DateError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn iso_dates_and_times() {
        assert_eq!(
            parse_timestamp("2025-03-04", None),
            Ok(Timestamp::Date(d(2025, 3, 4)))
        );
        let t = parse_timestamp("2025-03-04T23:30:00+02:00", None).unwrap();
        assert_eq!(t.to_string(), "2025-03-04T21:30:00Z");
        assert_eq!(
            parse_timestamp("2025-03-04 10:00:00", None)
                .unwrap()
                .to_string(),
            "2025-03-04T10:00:00Z"
        );
        assert_eq!(
            parse_timestamp("2025-03-04T10:00Z", None)
                .unwrap()
                .to_string(),
            "2025-03-04T10:00:00Z"
        );
        assert_eq!(
            parse_timestamp("2025-03-05T01:00:00+03:00", None)
                .unwrap()
                .date(),
            d(2025, 3, 4)
        );
        assert_eq!(parse_timestamp("2025-02-30", None), Err(DateError::Invalid));
        // Year first is never ambiguous, even without zero padding.
        assert_eq!(
            parse_timestamp("2025-3-4", None),
            Ok(Timestamp::Date(d(2025, 3, 4)))
        );
        assert_eq!(parse_timestamp("yesterday", None), Err(DateError::Invalid));
        assert_eq!(parse_timestamp("04/03/25", None), Err(DateError::Invalid));
    }

    #[test]
    fn slash_dates_need_a_format_when_ambiguous() {
        assert_eq!(
            parse_timestamp("03/04/2025", None),
            Err(DateError::Ambiguous(d(2025, 4, 3), d(2025, 3, 4)))
        );
        assert_eq!(
            parse_timestamp("03/04/2025", Some(&DateFormat::DayFirst)),
            Ok(Timestamp::Date(d(2025, 4, 3)))
        );
        assert_eq!(
            parse_timestamp("03/04/2025", Some(&DateFormat::MonthFirst)),
            Ok(Timestamp::Date(d(2025, 3, 4)))
        );
        // Only one reading is a date, or both readings agree: nothing to guess.
        assert_eq!(
            parse_timestamp("25/12/2025", None),
            Ok(Timestamp::Date(d(2025, 12, 25)))
        );
        assert_eq!(
            parse_timestamp("05.05.2025", None),
            Ok(Timestamp::Date(d(2025, 5, 5)))
        );
        assert_eq!(
            parse_timestamp("2025/03/04", None),
            Ok(Timestamp::Date(d(2025, 3, 4)))
        );
        assert_eq!(
            parse_timestamp("25/12/2025", Some(&DateFormat::MonthFirst)),
            Err(DateError::Invalid)
        );
    }

    #[test]
    fn strftime_pattern() {
        let f: DateFormat = "%d.%m.%Y".parse().unwrap();
        assert_eq!(
            parse_timestamp("03.04.2025", Some(&f)),
            Ok(Timestamp::Date(d(2025, 4, 3)))
        );
        assert_eq!(
            parse_timestamp("2025-04-03", Some(&f)),
            Ok(Timestamp::Date(d(2025, 4, 3)))
        );
        assert!("weird".parse::<DateFormat>().is_err());
    }

    proptest! {
        #[test]
        fn iso_round_trips(days in 0i64..80_000) {
            let date = d(1970, 1, 1) + chrono::Duration::days(days);
            let ts = Timestamp::Date(date);
            prop_assert_eq!(parse_timestamp(&ts.to_string(), None), Ok(ts));
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = parse_timestamp(&s, None);
            let _ = parse_timestamp(&s, Some(&DateFormat::DayFirst));
        }

        /// Numbers at and past chrono's range, through `--date-format`
        /// patterns that read them as seconds, years or ISO weeks, and
        /// through the ISO reader with extreme offsets: no panic.
        #[test]
        fn extreme_numbers_never_panic(
            n in prop_oneof![
                Just(i128::from(i64::MAX)), Just(i128::from(i64::MIN)), Just(i128::MAX),
                Just(262_143), Just(262_144), Just(-262_144), any::<i64>().prop_map(i128::from),
            ],
            pattern in prop::sample::select(vec!["%s", "%Y-%m-%d", "%Y", "%G-W%V-%u", "%Y%j", "%s%.f"]),
            offset in prop::sample::select(vec!["Z", "+23:59", "-23:59", "+99:99"]),
        ) {
            let f = DateFormat::Pattern(pattern.to_string());
            for text in [n.to_string(), format!("{n}-12-31"), format!("{n}-W52-7"), format!("{n}.5")] {
                let _ = parse_timestamp(&text, Some(&f));
            }
            for year in ["9999", "0000"] {
                let _ = parse_timestamp(&format!("{year}-12-31T23:59:59{offset}"), None);
                let _ = parse_timestamp(&format!("{year}-01-01 00:00:00{offset}"), None);
            }
        }
    }
}
