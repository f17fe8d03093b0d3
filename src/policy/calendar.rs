//! Business days per country: the weekend (Saturday–Sunday unless the policy
//! says otherwise) and the policy's holiday lists. Used for activation ETAs.

use std::collections::{HashMap, HashSet};

use chrono::{Datelike, NaiveDate, Weekday};

use crate::domain::Country;

#[derive(Debug, Clone)]
pub struct Calendar {
    weekend: Vec<Weekday>,
    overrides: HashMap<String, Vec<Weekday>>,
    holidays: HashMap<String, HashSet<NaiveDate>>,
}

pub fn parse_weekday(s: &str) -> Option<Weekday> {
    match s.trim().to_ascii_lowercase().get(..3)? {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

impl Calendar {
    /// A calendar, or the TOML key of a weekend that takes every day of the
    /// week (`calendar.weekend` or `calendar.weekend_overrides.CC`): a week
    /// without a working day would leave no business day to count.
    pub fn new(
        weekend: Vec<Weekday>,
        overrides: HashMap<String, Vec<Weekday>>,
        holidays: HashMap<String, HashSet<NaiveDate>>,
    ) -> Result<Calendar, String> {
        let whole_week = |days: &[Weekday]| {
            let set: HashSet<Weekday> = days.iter().copied().collect();
            set.len() == 7
        };
        if whole_week(&weekend) {
            return Err("calendar.weekend".into());
        }
        let mut countries: Vec<&String> = overrides.keys().collect();
        countries.sort();
        if let Some(c) = countries.into_iter().find(|c| whole_week(&overrides[*c])) {
            return Err(format!("calendar.weekend_overrides.{c}"));
        }
        Ok(Calendar {
            weekend,
            overrides,
            holidays,
        })
    }

    pub fn is_business_day(&self, country: Country, date: NaiveDate) -> bool {
        let weekend = self
            .overrides
            .get(country.as_str())
            .unwrap_or(&self.weekend);
        !weekend.contains(&date.weekday())
            && !self
                .holidays
                .get(country.as_str())
                .is_some_and(|h| h.contains(&date))
    }

    /// The date `days` business days after `from` in `country` (`from` itself
    /// does not count; 0 days is `from`); `None` past chrono's last date.
    pub fn add_business_days(
        &self,
        country: Country,
        from: NaiveDate,
        days: u32,
    ) -> Option<NaiveDate> {
        // Every week has a working day (see `new`) and each holiday takes
        // away at most one: `days` business days lie within 7 × (days +
        // holidays + 1) calendar days. The bound also ends the loop should
        // that ever not hold.
        let holidays = self.holidays.get(country.as_str()).map_or(0, HashSet::len);
        let limit = 7 * (u64::from(days) + holidays as u64 + 1);
        let mut date = from;
        let mut left = days;
        let mut steps = 0u64;
        while left > 0 {
            if steps == limit {
                return None;
            }
            date = date.succ_opt()?;
            steps += 1;
            if self.is_business_day(country, date) {
                left -= 1;
            }
        }
        Some(date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CountryTable;

    fn country(code: &str) -> Country {
        let table = CountryTable::new([(code, crate::domain::Region::Emea)], []).unwrap();
        table.parse(code).unwrap()
    }

    #[test]
    fn a_week_without_a_working_day_is_refused_with_its_key() {
        let all: Vec<Weekday> = std::iter::successors(Some(Weekday::Mon), |d| Some(d.succ()))
            .take(7)
            .collect();
        let err = Calendar::new(all.clone(), HashMap::new(), HashMap::new()).unwrap_err();
        assert_eq!(err, "calendar.weekend");
        let overrides = [("SA".to_string(), all)].into_iter().collect();
        let err = Calendar::new(vec![Weekday::Sun], overrides, HashMap::new()).unwrap_err();
        assert_eq!(err, "calendar.weekend_overrides.SA");
    }

    /// A holiday on every working day for years still ends: in bounded time,
    /// with the first business day after them.
    #[test]
    fn holidays_for_years_end_and_the_end_of_time_is_none() {
        let de = country("DE");
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let off: HashSet<NaiveDate> = start.iter_days().take(3650).collect();
        let last = start + chrono::Days::new(3650);
        let holidays = [("DE".to_string(), off)].into_iter().collect();
        let cal =
            Calendar::new(vec![Weekday::Sat, Weekday::Sun], HashMap::new(), holidays).unwrap();
        let eta = cal.add_business_days(de, start, 1).unwrap();
        assert!(eta >= last && eta < last + chrono::Days::new(3), "{eta}");
        let plain = Calendar::new(
            vec![Weekday::Sat, Weekday::Sun],
            HashMap::new(),
            HashMap::new(),
        )
        .unwrap();
        assert_eq!(plain.add_business_days(de, NaiveDate::MAX, 1), None);
        assert_eq!(
            plain.add_business_days(de, NaiveDate::MAX, 0),
            Some(NaiveDate::MAX)
        );
    }
}
