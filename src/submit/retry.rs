//! The retry policy as explicit values (SPEC §6): which answers are retried,
//! how long to wait (capped exponential backoff with full jitter, or the
//! server's `Retry-After`), and a retry budget so that a failing server is
//! not hammered (AWS SDK "standard" retries; gRPC retry throttling).
//!
//! A server's `Retry-After` is honoured up to [`RETRY_AFTER_CAP`]: RFC 9110
//! puts no bound on it, and a vendor's or a proxy's mistake (`Retry-After:
//! 18446744073709551615`, a date next year) must not stall a nightly run.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The longest wait a `Retry-After` may impose. Longer ones are cut to this,
/// with a warning in the log; the tracking time-out and signals still end
/// the wait sooner.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(15 * 60);

/// What to do with one attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    /// Worth another attempt; `throttled` for 429 (slow down as well).
    Retry {
        throttled: bool,
    },
    /// A final answer: retrying would get the same one.
    Fatal,
}

/// Classifies an HTTP status. 408, 409 (the first request with this key is
/// still in flight), 429 and every 5xx are retried; every other 4xx is final.
pub fn classify_status(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        429 => Class::Retry { throttled: true },
        408 | 409 | 500..=599 => Class::Retry { throttled: false },
        _ => Class::Fatal,
    }
}

/// The retry and backoff settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt (before jitter).
    pub base: Duration,
    /// No backoff is longer than this (nor any honoured `Retry-After`).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1 attempts made):
    /// full jitter, uniform in [0, min(cap, base × 2^(attempt-1))].
    pub fn backoff(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let ceiling = self
            .base
            .saturating_mul(1u32 << exp)
            .min(self.cap)
            .as_millis() as u64;
        Duration::from_millis(rng.u64(0..=ceiling))
    }

    /// The wait before the next attempt: the server's `Retry-After` when it
    /// gave one (never shorter, up to a minute or `cap`), else the jittered
    /// backoff. Never longer than [`RETRY_AFTER_CAP`].
    pub fn wait(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let wait = match retry_after {
            Some(d) => d.min(self.cap.max(Duration::from_secs(60))),
            None => self.backoff(attempt, rng),
        };
        wait.min(RETRY_AFTER_CAP)
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP date (RFC 9110 §10.2.3),
/// bounded by [`RETRY_AFTER_CAP`] (saying so in the log when it cuts). A
/// date in the past means "now"; anything else is no `Retry-After` at all.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let asked = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a very long time".
        value
            .parse::<u64>()
            .map_or(Duration::MAX, Duration::from_secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let when: SystemTime = when.with_timezone(&chrono::Utc).into();
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    if asked > RETRY_AFTER_CAP {
        let shown: String = value.chars().take(40).collect();
        tracing::warn!(
            retry_after = %shown,
            cap_seconds = RETRY_AFTER_CAP.as_secs(),
            "the server asked to wait longer than {} minutes (Retry-After: {shown}); waiting {} minutes at most",
            RETRY_AFTER_CAP.as_secs() / 60,
            RETRY_AFTER_CAP.as_secs() / 60,
        );
        return Some(RETRY_AFTER_CAP);
    }
    Some(asked)
}

/// A token bucket that retries draw from and successes refill (the AWS SDK
/// standard mode's quota: 500 tokens, 5 per retry, 10 per retry after a
/// timeout, 1 back per success). Empty means: stop retrying for now.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: Mutex<u32>,
    capacity: u32,
}

pub const RETRY_COST: u32 = 5;
pub const TIMEOUT_RETRY_COST: u32 = 10;

impl RetryBudget {
    pub fn new(capacity: u32) -> RetryBudget {
        RetryBudget {
            tokens: Mutex::new(capacity),
            capacity,
        }
    }

    /// Takes `cost` tokens for a retry; false when the budget is spent.
    pub fn try_spend(&self, cost: u32) -> bool {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if *t >= cost {
            *t -= cost;
            true
        } else {
            false
        }
    }

    /// A success puts one token back.
    pub fn refill(&self) {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        *t = (*t + 1).min(self.capacity);
    }

    pub fn available(&self) -> u32 {
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(500)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status-code policy, pinned: changing it must change this test.
    #[test]
    fn which_statuses_are_retried() {
        for s in [200, 201, 202, 204] {
            assert_eq!(classify_status(s), Class::Success, "{s}");
        }
        assert_eq!(classify_status(429), Class::Retry { throttled: true });
        for s in [408, 409, 500, 502, 503, 504] {
            assert_eq!(classify_status(s), Class::Retry { throttled: false }, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 413, 415, 422] {
            assert_eq!(classify_status(s), Class::Fatal, "{s}");
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_a_capped_exponential() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 1..12 {
            let ceiling = Duration::from_millis(100 * (1u64 << (attempt - 1))).min(p.cap);
            let waits: Vec<_> = (0..200).map(|_| p.backoff(attempt, &mut rng)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "attempt {attempt}");
            // Full jitter: the waits spread over the whole range.
            assert!(waits.iter().any(|w| *w < ceiling / 4), "attempt {attempt}");
            assert!(
                waits.iter().any(|w| *w > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(3)), &mut rng),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn retry_after_in_seconds_and_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21T07:28:00Z
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    /// Regression: `Retry-After: 18446744073709551615` made a task panic
    /// (overflow adding it to an `Instant`) and `1000000` paused a run for
    /// eleven days. Every value is cut to the cap.
    #[test]
    fn a_huge_retry_after_is_cut_to_the_cap() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        for v in [
            "18446744073709551615",
            "1000000",
            "99999999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(v, now), Some(RETRY_AFTER_CAP), "{v}");
        }
        assert_eq!(
            parse_retry_after("900", now),
            Some(Duration::from_secs(900))
        );
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(p.wait(1, Some(Duration::MAX), &mut rng) <= RETRY_AFTER_CAP);
    }

    #[test]
    fn the_budget_runs_dry_and_successes_refill_it() {
        let b = RetryBudget::new(12);
        assert!(b.try_spend(RETRY_COST));
        assert!(b.try_spend(RETRY_COST));
        assert!(!b.try_spend(RETRY_COST));
        for _ in 0..3 {
            b.refill();
        }
        assert_eq!(b.available(), 5);
        assert!(b.try_spend(RETRY_COST));
        for _ in 0..100 {
            b.refill();
        }
        assert_eq!(b.available(), 12);
    }
}
