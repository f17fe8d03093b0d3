//! The stop signal of a submission: Ctrl-C, SIGTERM, SIGHUP or the tracking
//! time-out. Every wait of a run (the limiter's pause after a 429, a retry's
//! backoff, a request in flight, the coordinator's own sleep) races it, so a
//! run stops within moments of being asked, whatever a server said about
//! when to come back.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// A cheap, cloneable "stop now", with the first reason given.
#[derive(Clone, Debug)]
pub struct Stop {
    reason: Arc<watch::Sender<Option<String>>>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    pub fn new() -> Stop {
        Stop {
            reason: Arc::new(watch::channel(None).0),
        }
    }

    /// Asks every wait to end. The first reason is kept; later ones are
    /// ignored (a SIGTERM after a Ctrl-C changes nothing).
    pub fn trigger(&self, why: impl Into<String>) {
        let why = why.into();
        self.reason.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Why it was triggered, if it was.
    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    pub fn is_triggered(&self) -> bool {
        self.reason.borrow().is_some()
    }

    /// Resolves once triggered (at once if it already is).
    pub async fn triggered(&self) {
        let mut rx = self.reason.subscribe();
        // The sender lives in `self`: the channel cannot close under us.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Runs `work` to its end, or until the stop comes first (`None`).
    pub async fn or<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.triggered() => None,
            out = work => Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_stop_ends_a_long_wait_at_once_and_keeps_its_first_reason() {
        let stop = Stop::new();
        assert!(!stop.is_triggered());
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.trigger("first");
            s.trigger("second");
        });
        let started = Instant::now();
        let out = stop.or(tokio::time::sleep(Duration::from_secs(3600))).await;
        assert_eq!(out, None);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(stop.reason().as_deref(), Some("first"));
        // Already triggered: nothing more waits.
        assert_eq!(stop.or(async { 1 }).await, None);
        assert_eq!(Stop::new().or(async { 1 }).await, Some(1));
    }
}
