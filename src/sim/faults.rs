//! The simulator's misbehaviour, all opt-in: a server-side rate limit
//! (GCRA, answering 429 with truthful `Retry-After` and the IETF
//! `RateLimit-Policy` / `RateLimit` headers), latency, injected 500/503,
//! connection resets and hung requests. Fault draws come from one RNG seeded
//! with `--seed`, so a run with the same requests in the same order
//! misbehaves the same way.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::SimConfig;

/// What the faults decided for one request, drawn once on arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Added before the answer (and, for a POST, while its key is in flight).
    pub latency: Option<Duration>,
    /// Answer this instead of doing the work.
    pub error: Option<StatusCode>,
    /// Do the work, send the headers, then drop the connection mid-body.
    pub reset: bool,
    /// Do the work, then hold the answer past the client's timeout.
    pub timeout: bool,
}

/// The seeded fault dice.
#[derive(Debug)]
pub struct Faults {
    rng: Mutex<fastrand::Rng>,
    latency_ms: Option<(u64, u64)>,
    error_rate: f64,
    reset_rate: f64,
    timeout_rate: f64,
}

impl Faults {
    pub fn new(config: &SimConfig) -> Faults {
        Faults {
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            latency_ms: config.latency_ms,
            error_rate: config.error_rate,
            reset_rate: config.reset_rate,
            timeout_rate: config.timeout_rate,
        }
    }

    fn is_off(&self) -> bool {
        self.latency_ms.is_none()
            && self.error_rate <= 0.0
            && self.reset_rate <= 0.0
            && self.timeout_rate <= 0.0
    }

    /// Draws every fault for one request. A well-behaved server (the
    /// default) never takes the lock.
    pub fn plan(&self) -> Plan {
        if self.is_off() {
            return Plan::default();
        }
        // A poisoned lock only means another request panicked while drawing;
        // the RNG state is still a valid RNG.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        // Always draw the same number of values, so one request's outcome
        // does not shift the faults of the requests after it.
        let latency = self
            .latency_ms
            .map(|(lo, hi)| Duration::from_millis(rng.u64(lo..=hi.max(lo))));
        let error_draw = rng.f64();
        let which_error = rng.bool();
        let reset_draw = rng.f64();
        let timeout_draw = rng.f64();
        let error = (error_draw < self.error_rate).then_some(if which_error {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        });
        let reset = error.is_none() && reset_draw < self.reset_rate;
        let timeout = error.is_none() && !reset && timeout_draw < self.timeout_rate;
        Plan {
            latency: latency.filter(|d| !d.is_zero()),
            error,
            reset,
            timeout,
        }
    }
}

/// The server-side rate limit and the headers that describe it.
#[derive(Debug)]
pub struct Limiter {
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>,
    per_second: f64,
    burst: u32,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Let through; the headers say what is left.
    Allowed { policy: String, state: String },
    /// Refused: 429 with these headers. `retry_after` is in whole seconds,
    /// rounded up, so a request sent after it is let through.
    Limited {
        retry_after: u64,
        policy: String,
        state: String,
    },
}

impl Limiter {
    /// `None` for a rate that is not positive and finite (the CLI refuses those).
    pub fn new(per_second: f64, burst: u32) -> Option<Limiter> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let burst = NonZeroU32::new(burst.max(1))?;
        // A rate so low that its period overflows a Duration is no rate.
        let period = Duration::try_from_secs_f64(1.0 / per_second).ok()?;
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(Limiter {
            limiter: RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
            per_second,
            burst: burst.get(),
        })
    }

    /// `"default";q=BURST;w=WINDOW`: the quota and the window, in whole
    /// seconds, in which a full burst is replenished.
    fn policy(&self) -> String {
        let window = (f64::from(self.burst) / self.per_second).ceil().max(1.0) as u64;
        format!("\"default\";q={};w={window}", self.burst)
    }

    /// Takes one cell for this request.
    pub fn admit(&self) -> Admission {
        match self.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = self.burst.saturating_sub(remaining);
                let reset = (f64::from(used) / self.per_second).ceil() as u64;
                Admission::Allowed {
                    policy: self.policy(),
                    state: format!("\"default\";r={remaining};t={reset}"),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let retry_after = wait_to_seconds(wait);
                Admission::Limited {
                    retry_after,
                    policy: self.policy(),
                    state: format!("\"default\";r=0;t={retry_after}"),
                }
            }
        }
    }
}

/// Whole seconds, rounded up, at least one: `Retry-After` must never invite
/// a client back before the limiter would let it through.
pub fn wait_to_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(wait_to_seconds(Duration::ZERO), 1);
        assert_eq!(wait_to_seconds(Duration::from_millis(1)), 1);
        assert_eq!(wait_to_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(wait_to_seconds(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn the_limiter_lets_a_burst_through_then_refuses() {
        let l = Limiter::new(1.0, 3).unwrap();
        for _ in 0..3 {
            assert!(matches!(l.admit(), Admission::Allowed { .. }));
        }
        match l.admit() {
            Admission::Limited {
                retry_after,
                policy,
                state,
            } => {
                assert_eq!(retry_after, 1);
                assert_eq!(policy, "\"default\";q=3;w=3");
                assert_eq!(state, "\"default\";r=0;t=1");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(Limiter::new(0.0, 1).is_none());
        assert!(Limiter::new(f64::NAN, 1).is_none());
        assert!(Limiter::new(1e-300, 1).is_none());
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let config = SimConfig {
            latency_ms: Some((1, 50)),
            error_rate: 0.3,
            reset_rate: 0.3,
            timeout_rate: 0.3,
            seed: 7,
            ..SimConfig::default()
        };
        let a: Vec<Plan> = (0..100).map(|_| Faults::new(&config).plan()).collect();
        let f = Faults::new(&config);
        let b: Vec<Plan> = (0..100).map(|_| f.plan()).collect();
        let g = Faults::new(&config);
        let c: Vec<Plan> = (0..100).map(|_| g.plan()).collect();
        assert_eq!(b, c);
        assert!(a.iter().all(|p| *p == a[0]));
        assert!(b.iter().any(|p| p.error.is_some()));
        assert!(b.iter().any(|p| p.reset));
        assert!(b.iter().any(|p| p.timeout));
        assert!(b.iter().all(|p| !(p.reset && p.timeout)));
        assert_eq!(Faults::new(&SimConfig::default()).plan(), Plan::default());
    }
}
