//! The counts of a written `results.csv`, for `summary.json` and
//! `report.html`: by state, reason, region, contract and site.
//!
//! Every path that writes `results.csv` (the join with the journal, the
//! dry run's direct lines, the patch of rows the vendor holds) counts each
//! row it writes once, with [`ResultCounts::count`], from the same fields
//! it wrote; so the counts are those of the file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// States in `results.csv`, all listed in `summary.json` even when zero.
pub const RESULT_STATES: [&str; 10] = [
    "invalid",
    "ineligible",
    "planned",
    "submitted",
    "accepted",
    "provisioning",
    "active",
    "rejected",
    "failed",
    "escalated",
];

/// One row of `results.csv` as the counts see it.
#[derive(Debug, Clone, Copy)]
pub struct CountedRow<'a> {
    pub state: &'a str,
    /// Its `;`-separated reason codes.
    pub reason: &'a str,
    pub region: &'a str,
    pub contract: &'a str,
    /// The `site` column as the export wrote it ("" when it had none, or
    /// when the row was too malformed for it to be read).
    pub site: &'a str,
}

/// Counts of the written `results.csv`, for `summary.json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ResultCounts {
    pub rows: u64,
    pub by_state: BTreeMap<String, u64>,
    pub by_reason: BTreeMap<String, u64>,
    pub by_region: BTreeMap<String, BTreeMap<String, u64>>,
    pub by_contract: BTreeMap<String, BTreeMap<String, u64>>,
    /// By the `site` column; "" for rows without one.
    pub by_site: BTreeMap<String, SiteCounts>,
    /// Rows the API rejected or failed (escalated failures included).
    pub failed_or_rejected: u64,
    /// Rows still on their way (planned, submitted, accepted, provisioning),
    /// or manual reviews whose support case is not open yet.
    pub unfinished: u64,
}

/// One site's rows of `results.csv`, by where they stand: every row is in
/// exactly one of the counts after `rows`, so they add up to `rows`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteCounts {
    pub rows: u64,
    pub active: u64,
    /// Planned, submitted, accepted, provisioning, or a manual review
    /// waiting for its support case.
    pub on_the_way: u64,
    /// Rejected or failed by the vendor, with no support case (yet).
    pub failed_or_rejected: u64,
    /// Handed to support: a failure or a manual review with its case.
    pub escalated: u64,
    pub ineligible: u64,
    pub invalid: u64,
}

impl SiteCounts {
    /// The count a row in `state` adds to; `None` for a state
    /// `results.csv` never holds.
    fn slot(&mut self, state: &str) -> Option<&mut u64> {
        Some(match state {
            "active" => &mut self.active,
            "planned" | "submitted" | "accepted" | "provisioning" | "manual_review" => {
                &mut self.on_the_way
            }
            "rejected" | "failed" => &mut self.failed_or_rejected,
            "escalated" => &mut self.escalated,
            "ineligible" => &mut self.ineligible,
            "invalid" => &mut self.invalid,
            _ => return None,
        })
    }

    /// Rows someone still has to act on or wait for: everything but the
    /// active and the ineligible. Sites are listed by it, most first.
    pub fn needing_work(&self) -> u64 {
        self.rows
            .saturating_sub(self.active)
            .saturating_sub(self.ineligible)
    }

    /// The counts in the order of the struct's fields (the tables' columns).
    pub fn columns(&self) -> [u64; 7] {
        [
            self.rows,
            self.active,
            self.on_the_way,
            self.failed_or_rejected,
            self.escalated,
            self.ineligible,
            self.invalid,
        ]
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &SiteCounts) {
        self.rows = self.rows.saturating_add(other.rows);
        self.active = self.active.saturating_add(other.active);
        self.on_the_way = self.on_the_way.saturating_add(other.on_the_way);
        self.failed_or_rejected = self
            .failed_or_rejected
            .saturating_add(other.failed_or_rejected);
        self.escalated = self.escalated.saturating_add(other.escalated);
        self.ineligible = self.ineligible.saturating_add(other.ineligible);
        self.invalid = self.invalid.saturating_add(other.invalid);
    }

    /// The order sites are listed in (`report.html`, `refleet status`):
    /// most rows needing work first, then most rows, then by name.
    pub fn listing_order(a: (&str, &SiteCounts), b: (&str, &SiteCounts)) -> std::cmp::Ordering {
        (b.1.needing_work(), b.1.rows)
            .cmp(&(a.1.needing_work(), a.1.rows))
            .then_with(|| a.0.cmp(b.0))
    }
}

/// One more of `key`, without a new `String` when it is there.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

/// One less of `key`; gone at zero when `keep` does not hold it.
fn drop_one(map: &mut BTreeMap<String, u64>, key: &str, keep: bool) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 && !keep {
            map.remove(key);
        }
    }
}

impl ResultCounts {
    /// No row yet; every state of [`RESULT_STATES`] at zero.
    pub(super) fn new() -> ResultCounts {
        ResultCounts {
            by_state: RESULT_STATES.iter().map(|s| (s.to_string(), 0)).collect(),
            ..ResultCounts::default()
        }
    }

    /// Counts one row of `results.csv`.
    pub(super) fn count(&mut self, row: CountedRow<'_>) {
        let CountedRow {
            state,
            reason,
            region,
            contract,
            site,
        } = row;
        self.rows += 1;
        bump(&mut self.by_state, state);
        for r in reason.split(';').filter(|r| !r.is_empty()) {
            bump(&mut self.by_reason, r);
        }
        for (map, key) in [
            (&mut self.by_region, region),
            (&mut self.by_contract, contract),
        ] {
            if key.is_empty() {
                continue;
            }
            match map.get_mut(key) {
                Some(states) => bump(states, state),
                None => {
                    map.insert(key.to_string(), BTreeMap::from([(state.to_string(), 1)]));
                }
            }
        }
        let counts = match self.by_site.get_mut(site) {
            Some(c) => c,
            None => self.by_site.entry(site.to_string()).or_default(),
        };
        counts.rows += 1;
        if let Some(n) = counts.slot(state) {
            *n += 1;
        }
        if let Some(n) = self.total_of(state, reason) {
            *n += 1;
        }
    }

    /// The run-wide total a row in `state` with `reason` adds to, if any:
    /// rows the API rejected or failed (escalated failures included), or
    /// rows not finished.
    fn total_of(&mut self, state: &str, reason: &str) -> Option<&mut u64> {
        match state {
            "rejected" | "failed" => Some(&mut self.failed_or_rejected),
            "escalated" if reason != "MANUAL_REVIEW" => Some(&mut self.failed_or_rejected),
            "planned" | "submitted" | "accepted" | "provisioning" | "manual_review" => {
                Some(&mut self.unfinished)
            }
            _ => None,
        }
    }

    /// Takes back one [`count`](ResultCounts::count) of the same row;
    /// what falls to zero goes, as if it was never counted (the states of
    /// `by_state` stay, at zero).
    pub(super) fn uncount(&mut self, row: CountedRow<'_>) {
        let CountedRow {
            state,
            reason,
            region,
            contract,
            site,
        } = row;
        self.rows = self.rows.saturating_sub(1);
        drop_one(&mut self.by_state, state, RESULT_STATES.contains(&state));
        for r in reason.split(';').filter(|r| !r.is_empty()) {
            drop_one(&mut self.by_reason, r, false);
        }
        for (map, key) in [
            (&mut self.by_region, region),
            (&mut self.by_contract, contract),
        ] {
            if let Some(states) = map.get_mut(key) {
                drop_one(states, state, false);
                if states.is_empty() {
                    map.remove(key);
                }
            }
        }
        if let Some(counts) = self.by_site.get_mut(site) {
            counts.rows = counts.rows.saturating_sub(1);
            if let Some(n) = counts.slot(state) {
                *n = n.saturating_sub(1);
            }
            if counts.rows == 0 {
                self.by_site.remove(site);
            }
        }
        if let Some(n) = self.total_of(state, reason) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(state: &'a str, reason: &'a str, site: &'a str) -> CountedRow<'a> {
        CountedRow {
            state,
            reason,
            region: "EMEA",
            contract: "C-1",
            site,
        }
    }

    #[test]
    fn every_state_falls_in_exactly_one_site_count() {
        let states = RESULT_STATES.iter().copied().chain(["manual_review"]);
        for state in states {
            let mut counts = ResultCounts::new();
            counts.count(row(state, "", "Berlin"));
            let site = counts.by_site["Berlin"];
            let SiteCounts {
                rows,
                active,
                on_the_way,
                failed_or_rejected,
                escalated,
                ineligible,
                invalid,
            } = site;
            assert_eq!(rows, 1, "{state}");
            assert_eq!(
                active + on_the_way + failed_or_rejected + escalated + ineligible + invalid,
                1,
                "{state} must be in one count: {site:?}"
            );
        }
    }

    #[test]
    fn sites_are_counted_apart_and_uncounted_back() {
        let mut counts = ResultCounts::new();
        for (state, site) in [
            ("active", "Berlin"),
            ("failed", "Berlin"),
            ("escalated", "München Büro"),
            ("invalid", ""),
        ] {
            counts.count(row(state, "", site));
        }
        let before = counts.clone();
        counts.count(row("planned", "", "Paris"));
        counts.uncount(row("planned", "", "Paris"));
        assert_eq!(
            counts, before,
            "a row counted and taken back leaves no trace"
        );
        let berlin = counts.by_site["Berlin"];
        assert_eq!(
            (berlin.rows, berlin.active, berlin.failed_or_rejected),
            (2, 1, 1)
        );
        assert_eq!(berlin.needing_work(), 1);
        assert_eq!(counts.by_site["München Büro"].escalated, 1);
        assert_eq!(counts.by_site[""].invalid, 1);
    }
}
