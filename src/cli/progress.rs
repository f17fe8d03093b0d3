//! indicatif progress on stderr, shown only when stderr is a terminal and
//! `--quiet` is off.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{NoProgress, Progress};
use crate::submit::journal::ItemState;
use crate::submit::{NoSubmitProgress, SubmitProgress};

pub struct Bars {
    bar: ProgressBar,
    rows: AtomicU64,
    bytes: Mutex<Option<Arc<AtomicU64>>>,
}

/// A progress reporter fit for where stderr goes.
pub fn for_terminal(quiet: bool) -> Box<dyn Progress> {
    if quiet || !std::io::stderr().is_terminal() {
        return Box::new(NoProgress);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
    Box::new(Bars {
        bar,
        rows: AtomicU64::new(0),
        bytes: Mutex::new(None),
    })
}

impl Progress for Bars {
    fn start(&self, total_bytes: Option<u64>, bytes_read: Arc<AtomicU64>) {
        let template = if total_bytes.is_some() {
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {bytes} ({bytes_per_sec}) {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style);
        }
        if let Some(n) = total_bytes {
            self.bar.set_length(n);
        }
        self.bar.enable_steady_tick(Duration::from_millis(125));
        if let Ok(mut b) = self.bytes.lock() {
            *b = Some(bytes_read);
        }
    }

    fn rows(&self, n: u64) {
        let rows = self.rows.fetch_add(n, Ordering::Relaxed) + n;
        if let Ok(b) = self.bytes.lock() {
            if let Some(b) = b.as_ref() {
                self.bar.set_position(b.load(Ordering::Relaxed));
            }
        }
        self.bar.set_message(format!("{rows} rows"));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The submission's bar: items done out of all, and the state counts.
pub struct SubmitBar {
    bar: ProgressBar,
    started: std::time::Instant,
}

/// A submission reporter fit for where stderr goes.
pub fn submit_bar(quiet: bool, total: u64) -> Box<dyn SubmitProgress> {
    if quiet || !std::io::stderr().is_terminal() {
        return Box::new(NoSubmitProgress);
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(8));
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} done (eta {eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(125));
    Box::new(SubmitBar {
        bar,
        started: std::time::Instant::now(),
    })
}

impl SubmitProgress for SubmitBar {
    fn update(&self, counts: &[(ItemState, u64)], requests: u64) {
        let n = |s: ItemState| {
            counts
                .iter()
                .find(|(st, _)| *st == s)
                .map_or(0, |(_, n)| *n)
        };
        let done = n(ItemState::Active)
            + n(ItemState::Rejected)
            + n(ItemState::Failed)
            + n(ItemState::Escalated);
        self.bar.set_position(done);
        let rate = requests as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "submitted {} · active {} · failed {} · rejected {} · escalated {} · {:.1} req/s",
            n(ItemState::Submitted) + n(ItemState::Accepted) + n(ItemState::Provisioning),
            n(ItemState::Active),
            n(ItemState::Failed),
            n(ItemState::Rejected),
            n(ItemState::Escalated),
            rate
        ));
    }
}

impl Drop for SubmitBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
