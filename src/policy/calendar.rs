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
    pub fn new(
        weekend: Vec<Weekday>,
        overrides: HashMap<String, Vec<Weekday>>,
        holidays: HashMap<String, HashSet<NaiveDate>>,
    ) -> Calendar {
        Calendar {
            weekend,
            overrides,
            holidays,
        }
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
    /// does not count; 0 days is `from`).
    pub fn add_business_days(&self, country: Country, from: NaiveDate, days: u32) -> NaiveDate {
        let mut date = from;
        let mut left = days;
        // A calendar with every day off would never end: give up after a year.
        let mut guard = 0;
        while left > 0 && guard < 366 + days as usize * 7 {
            date = date.succ_opt().unwrap_or(date);
            guard += 1;
            if self.is_business_day(country, date) {
                left -= 1;
            }
        }
        date
    }
}
