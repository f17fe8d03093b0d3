//! The simulator's clock: real time since start, compressed so that one
//! simulated calendar day lasts `business_day_ms` real milliseconds, and the
//! item timeline read off it (pending → provisioning → terminal).
//!
//! Time is compressed, not faked per request: every answer computes its state
//! from `now`, so an item moves on whether or not anybody polls it.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};

/// Milliseconds in a calendar day.
const DAY_MS: u128 = 86_400_000;

/// Simulated time: `origin + real elapsed × (1 day / business_day_ms)`.
#[derive(Debug, Clone)]
pub struct SimClock {
    started: Instant,
    origin: DateTime<Utc>,
    business_day_ms: u64,
}

impl SimClock {
    /// A clock whose simulated time starts at `origin` now. A zero day
    /// length would divide by zero; it is taken as one millisecond.
    pub fn new(origin: DateTime<Utc>, business_day_ms: u64) -> SimClock {
        SimClock {
            started: Instant::now(),
            origin,
            business_day_ms: business_day_ms.max(1),
        }
    }

    /// Real time since the clock started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Simulated now.
    pub fn now(&self) -> DateTime<Utc> {
        self.at(self.elapsed())
    }

    /// Simulated time after `real` elapsed real time. Saturates at chrono's
    /// last date rather than overflowing (after weeks of real time at 1 ms a day).
    pub fn at(&self, real: Duration) -> DateTime<Utc> {
        let sim_ms = real.as_micros() * DAY_MS / (u128::from(self.business_day_ms) * 1000);
        i64::try_from(sim_ms)
            .ok()
            .and_then(TimeDelta::try_milliseconds)
            .and_then(|d| self.origin.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Real time that `sim` simulated time takes to pass; saturates at the
    /// longest `Duration` of microseconds rather than overflowing.
    pub fn real_for(&self, sim: TimeDelta) -> Duration {
        let ms = u128::try_from(sim.num_milliseconds()).unwrap_or(0);
        let real_us = ms
            .checked_mul(u128::from(self.business_day_ms) * 1000)
            .map_or(u128::MAX, |us| us / DAY_MS);
        Duration::from_micros(u64::try_from(real_us).unwrap_or(u64::MAX))
    }
}

/// Where an accepted item stands at a simulated instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first simulated day after acceptance.
    Pending,
    /// Afterwards, until the activation date.
    Provisioning,
    /// Activated or failed, at [`Phase::Done`]'s instant.
    Done(DateTime<Utc>),
}

/// The vendor finishes at the close of business (17:00 UTC) on the ETA date,
/// and never before a full simulated day in `pending`: a one-day SLA still
/// shows every state to a client that polls often enough.
pub fn done_at(accepted_at: DateTime<Utc>, eta: NaiveDate) -> DateTime<Utc> {
    let close = eta
        .and_time(NaiveTime::from_hms_opt(17, 0, 0).unwrap_or(NaiveTime::MIN))
        .and_utc();
    close.max(day_after(accepted_at))
}

/// A simulated day after `t`; chrono's last instant when that is past it
/// (the clock saturates there, see [`SimClock::at`]).
fn day_after(t: DateTime<Utc>) -> DateTime<Utc> {
    t.checked_add_signed(TimeDelta::days(1))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The phase of an item accepted at `accepted_at` with activation date `eta`.
pub fn phase(now: DateTime<Utc>, accepted_at: DateTime<Utc>, eta: NaiveDate) -> Phase {
    let done = done_at(accepted_at, eta);
    if now >= done {
        Phase::Done(done)
    } else if now < day_after(accepted_at) {
        Phase::Pending
    } else {
        Phase::Provisioning
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn one_business_day_ms_is_one_simulated_day() {
        let c = SimClock::new(t("2026-11-25T00:00:00Z"), 50);
        assert_eq!(c.at(Duration::ZERO), t("2026-11-25T00:00:00Z"));
        assert_eq!(c.at(Duration::from_millis(50)), t("2026-11-26T00:00:00Z"));
        assert_eq!(c.at(Duration::from_millis(25)), t("2026-11-25T12:00:00Z"));
        assert_eq!(c.real_for(TimeDelta::days(2)), Duration::from_millis(100));
        // Zero is not a day length; it must not divide by zero.
        let z = SimClock::new(t("2026-11-25T00:00:00Z"), 0);
        assert_eq!(z.at(Duration::from_millis(1)), t("2026-11-26T00:00:00Z"));
    }

    #[test]
    fn the_clock_saturates_instead_of_overflowing() {
        let c = SimClock::new(t("2026-11-25T00:00:00Z"), 1);
        assert_eq!(
            c.at(Duration::from_secs(u64::MAX / 4)),
            DateTime::<Utc>::MAX_UTC
        );
    }

    /// At the end of chrono's time (a saturated clock), the timeline still
    /// answers instead of panicking, and a huge span waits the longest time.
    #[test]
    fn the_timeline_at_the_end_of_time_does_not_panic() {
        let end = DateTime::<Utc>::MAX_UTC;
        assert_eq!(done_at(end, end.date_naive()), end);
        assert_eq!(phase(end, end, end.date_naive()), Phase::Done(end));
        let c = SimClock::new(t("2026-11-25T00:00:00Z"), u64::MAX);
        assert_eq!(c.real_for(TimeDelta::MAX), Duration::from_micros(u64::MAX));
    }

    #[test]
    fn an_item_is_pending_a_day_then_provisioning_until_its_eta() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let accepted = t("2026-11-25T10:00:00Z");
        let eta = d("2026-11-27");
        assert_eq!(phase(accepted, accepted, eta), Phase::Pending);
        assert_eq!(
            phase(t("2026-11-26T09:59:59Z"), accepted, eta),
            Phase::Pending
        );
        assert_eq!(
            phase(t("2026-11-26T10:00:00Z"), accepted, eta),
            Phase::Provisioning
        );
        assert_eq!(
            phase(t("2026-11-27T16:59:59Z"), accepted, eta),
            Phase::Provisioning
        );
        assert_eq!(
            phase(t("2026-11-27T17:00:00Z"), accepted, eta),
            Phase::Done(t("2026-11-27T17:00:00Z"))
        );
        // A one-day SLA accepted late still spends a full day pending.
        let late = t("2026-11-25T20:00:00Z");
        assert_eq!(
            phase(t("2026-11-26T18:00:00Z"), late, d("2026-11-26")),
            Phase::Pending
        );
        assert_eq!(done_at(late, d("2026-11-26")), t("2026-11-26T20:00:00Z"));
    }
}
