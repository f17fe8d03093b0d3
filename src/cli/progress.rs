//! The progress line on stderr, shown only when stderr is a terminal and
//! `--quiet` is off: one phase at a time (`planning`, `looking up`,
//! `submitting`, `tracking`, `audit log`, `reports`), its name first, then a
//! bar when the phase's size is known, else a spinner alone.
//!
//! What the line says comes from pure functions ([`message`],
//! [`submission`], …), so that its width and its ETA are unit-tested;
//! indicatif only draws it. The ETA is this run's own: a resumed run counts
//! neither the items earlier runs finished nor their speed. The message is
//! cut to the terminal's width and the bar shrinks, so the line never
//! wraps (a wrapped line is drawn again below itself on every tick). Log
//! lines go through [`log_line`], which prints them above the bar rather
//! than through it.

use crate::app::run::RunProgress;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use console::{measure_text_width, truncate_str};
use indicatif::{
    HumanBytes, HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle, WeakProgressBar,
};

use crate::progress::Progress;
use crate::submit::journal::ItemState;
use crate::submit::reconcile::{LookupProgress, Reconciled};
use crate::submit::{Stop, SubmitProgress};

const BAR_TEMPLATE: &str = "{spinner} {prefix} {wide_bar} {msg}";
const SPINNER_TEMPLATE: &str = "{spinner} {prefix} {msg}";
/// The narrowest bar; else the bar has a quarter of the columns that the
/// bar and the message share.
const MIN_BAR: usize = 10;

/// The line on stderr, if one is shown: see [`log_line`].
static ON_SCREEN: Mutex<Option<WeakProgressBar>> = Mutex::new(None);

/// stderr for `tracing`: while a progress line is shown, a log line
/// clears it, is printed, and the progress line is drawn again below it.
pub fn log_line() -> LogLine {
    LogLine
}

pub struct LogLine;

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ON_SCREEN
            .lock()
            .ok()
            .and_then(|b| b.as_ref().and_then(WeakProgressBar::upgrade));
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The progress line of a command: hidden, or drawn on stderr; and what
/// the command tells as it goes, on stderr unless `--quiet`.
pub struct Phases {
    shown: Option<Shown>,
    quiet: bool,
}

#[derive(Clone)]
struct Shown {
    bar: ProgressBar,
    line: Arc<Mutex<Line>>,
    /// The terminal's width; `None` asks stderr at each draw (a resized
    /// window is followed), tests fix it.
    width: Option<u16>,
}

/// What the current phase's line is made of.
#[derive(Default)]
struct Line {
    /// Empty while nothing is shown.
    phase: &'static str,
    /// A bar (the size is known) or a spinner alone.
    bar: bool,
    figures: Option<Figures>,
    stopping: bool,
    /// When the phase started.
    started: Option<Instant>,
    /// The submission's starting point: its ETA and rates count from here.
    submission: Option<(Baseline, Instant)>,
    /// The input being read: its byte counter and size, rows so far.
    reading: Option<(Arc<AtomicU64>, Option<u64>)>,
    rows: u64,
}

impl Phases {
    /// Drawn on stderr when it is a terminal and `quiet` is off.
    pub fn for_terminal(quiet: bool) -> Phases {
        if quiet || !std::io::stderr().is_terminal() {
            return Phases { shown: None, quiet };
        }
        let phases = Phases::drawn_to(ProgressDrawTarget::stderr_with_hz(8), None);
        if let (Some(s), Ok(mut on_screen)) = (&phases.shown, ON_SCREEN.lock()) {
            *on_screen = Some(s.bar.downgrade());
        }
        phases
    }

    fn drawn_to(target: ProgressDrawTarget, width: Option<u16>) -> Phases {
        Phases {
            shown: Some(Shown {
                bar: ProgressBar::with_draw_target(None, target),
                line: Arc::new(Mutex::new(Line::default())),
                width,
            }),
            quiet: false,
        }
    }

    /// Starts the phase `name`, a spinner until it has figures.
    pub fn phase(&self, name: &'static str) {
        if let Some(s) = &self.shown {
            let mut line = s.line();
            s.start(&mut line, name, false);
            s.show(&mut line);
        }
    }

    /// Clears the line, before text is printed below it. The next phase
    /// draws it again.
    pub fn clear(&self) {
        if let Some(s) = &self.shown {
            let mut line = s.line();
            line.phase = "";
            s.bar.finish_and_clear();
        }
    }

    /// Shows `stopping…` the moment `stop` is triggered (a signal, the
    /// tracking time-out), without waiting for the work's next update.
    /// Spawn it beside the work; it ends with the stop.
    pub fn watch(&self, stop: Stop) -> impl Future<Output = ()> + Send + 'static {
        let shown = self.shown.clone();
        async move {
            if let Some(s) = shown {
                stop.triggered().await;
                s.stopping();
            }
        }
    }

    /// The submission is about to start with the journal at `counts` and
    /// `requests` sent so far: what is done already (earlier runs, the
    /// lookups' requests) is not this run's progress.
    pub fn begin_submission(&self, counts: &[(ItemState, u64)], requests: u64) {
        if let Some(s) = &self.shown {
            let mut line = s.line();
            line.submission = Some((Baseline::of(counts, requests), Instant::now()));
            s.submission(&mut line, counts, requests);
        }
    }
}

/// What `crate::app::run` shows: the methods above.
impl RunProgress for Phases {
    fn phase(&self, name: &'static str) {
        Phases::phase(self, name);
    }
    fn clear(&self) {
        Phases::clear(self);
    }
    fn begin_submission(&self, counts: &[(ItemState, u64)], requests: u64) {
        Phases::begin_submission(self, counts, requests);
    }
    fn watch(&self, stop: Stop) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(Phases::watch(self, stop))
    }
    /// Below the progress line, which the next phase draws again.
    fn say(&self, text: &str) {
        if !self.quiet {
            Phases::clear(self);
            eprintln!("{}", text.trim_end_matches('\n'));
        }
    }
    fn warn(&self, text: &str) {
        Phases::clear(self);
        eprintln!("refleet: {text}");
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Shown {
    fn line(&self) -> MutexGuard<'_, Line> {
        // A panic elsewhere while drawing leaves a line still worth drawing.
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts phase `name` afresh: its clock, its figures, its bar.
    fn start(&self, line: &mut Line, name: &'static str, bar: bool) {
        line.phase = name;
        line.bar = bar;
        line.figures = None;
        line.started = Some(Instant::now());
        // The style, name and message first: each call may draw, and the
        // last phase's message under this one's name would flash.
        let template = if bar { BAR_TEMPLATE } else { SPINNER_TEMPLATE };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style);
        }
        self.bar.set_prefix(name);
        self.bar.set_message("");
        self.bar.reset();
        self.bar.unset_length();
        self.bar.enable_steady_tick(Duration::from_millis(125));
    }

    /// Starts phase `name` unless it is the one shown.
    fn enter(&self, line: &mut Line, name: &'static str, bar: bool) {
        if line.phase != name || line.bar != bar {
            self.start(line, name, bar);
        }
    }

    /// Draws the line's figures (the bar's ticker draws in between).
    fn show(&self, line: &mut Line) {
        if line.phase.is_empty() {
            return;
        }
        let width = self
            .width
            .unwrap_or_else(|| console::Term::stderr().size().1);
        let room = room(line.phase, line.bar, width);
        let figures = line.figures.as_ref();
        let mut text = message(figures, line.stopping, room);
        if line.bar {
            if let Some(f) = figures {
                self.bar.set_length(f.total.unwrap_or(f.done).max(1));
                self.bar.set_position(f.done);
            }
            // Padded to its room, so that the bar keeps its width as
            // figures come and go.
            let pad = room.saturating_sub(measure_text_width(&text));
            text.push_str(&" ".repeat(pad));
        }
        self.bar.set_message(text);
    }

    fn stopping(&self) {
        let mut line = self.line();
        line.stopping = true;
        if !line.phase.is_empty() {
            self.show(&mut line);
            self.bar.force_draw();
        }
    }

    fn submission(&self, line: &mut Line, counts: &[(ItemState, u64)], requests: u64) {
        let (base, since) = *line
            .submission
            .get_or_insert_with(|| (Baseline::of(counts, requests), Instant::now()));
        let (phase, figures) = submission(counts, base, requests, since.elapsed());
        self.enter(line, phase, true);
        line.figures = Some(figures);
        self.show(line);
    }

    fn reading(&self, line: &mut Line) {
        let Some((bytes, total)) = line.reading.as_ref() else {
            return;
        };
        let started = line.started.unwrap_or_else(Instant::now);
        line.figures = Some(reading(
            bytes.load(Ordering::Relaxed),
            *total,
            line.rows,
            started.elapsed(),
        ));
        self.show(line);
    }
}

/// Reading an input (validate, plan): bytes read out of its size.
impl Progress for Phases {
    fn start(&self, total_bytes: Option<u64>, bytes_read: Arc<AtomicU64>) {
        if let Some(s) = &self.shown {
            let mut line = s.line();
            let name = match line.phase {
                "" => "reading",
                name => name,
            };
            s.start(&mut line, name, total_bytes.is_some());
            line.reading = Some((bytes_read, total_bytes));
            line.rows = 0;
            s.reading(&mut line);
        }
    }

    fn rows(&self, n: u64) {
        if let Some(s) = &self.shown {
            let mut line = s.line();
            line.rows += n;
            s.reading(&mut line);
        }
    }

    /// The input is read; the phase goes on (writing what was read) as a
    /// spinner until the next phase or [`Phases::clear`].
    fn finish(&self) {
        if let Some(s) = &self.shown {
            let mut line = s.line();
            line.reading = None;
            if line.phase.is_empty() {
                return;
            }
            let (name, rows) = (line.phase, line.rows);
            s.enter(&mut line, name, false);
            line.figures = Some(Figures {
                detail: vec![format!("{} rows", HumanCount(rows))],
                ..Figures::default()
            });
            s.show(&mut line);
        }
    }
}

impl LookupProgress for Phases {
    fn looked_up(&self, so_far: &Reconciled, of: u64) {
        if let Some(s) = &self.shown {
            let mut line = s.line();
            s.enter(&mut line, "looking up", true);
            let started = line.started.unwrap_or_else(Instant::now);
            line.figures = Some(lookups(so_far, of, started.elapsed()));
            s.show(&mut line);
        }
    }
}

impl SubmitProgress for Phases {
    fn shows_counts(&self) -> bool {
        self.shown.is_some()
    }
    fn update(&self, counts: &[(ItemState, u64)], requests: u64) {
        if let Some(s) = &self.shown {
            let mut line = s.line();
            s.submission(&mut line, counts, requests);
        }
    }
}

/// What a line says after the phase's name and bar.
#[derive(Debug, Clone, Default, PartialEq)]
struct Figures {
    /// Done in this phase by this run.
    done: u64,
    /// To do in this phase by this run, when known.
    total: Option<u64>,
    bytes: bool,
    /// Since the phase started.
    elapsed: Duration,
    /// Counts of interest, most important first: the last ones go when
    /// the line is short of room.
    detail: Vec<String>,
}

/// Where a submission starts: items already done (by earlier runs) and
/// requests already sent (the lookups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Baseline {
    done: u64,
    requests: u64,
}

impl Baseline {
    fn of(counts: &[(ItemState, u64)], requests: u64) -> Baseline {
        Baseline {
            done: done(counts),
            requests,
        }
    }
}

fn count(counts: &[(ItemState, u64)], state: ItemState) -> u64 {
    counts
        .iter()
        .filter(|(s, _)| *s == state)
        .map(|(_, n)| *n)
        .sum()
}

/// Items the submission is through with.
fn done(counts: &[(ItemState, u64)]) -> u64 {
    [
        ItemState::Active,
        ItemState::Rejected,
        ItemState::Failed,
        ItemState::Escalated,
    ]
    .into_iter()
    .map(|s| count(counts, s))
    .sum()
}

/// The submission's phase and figures: `submitting` while items wait to
/// be sent, then `tracking`. Done and to-do count from `base`, so that a
/// resumed run's bar, rate and ETA are its own.
fn submission(
    counts: &[(ItemState, u64)],
    base: Baseline,
    requests: u64,
    elapsed: Duration,
) -> (&'static str, Figures) {
    let n = |s| count(counts, s);
    let all: u64 = counts.iter().map(|(_, n)| n).sum();
    let phase = if n(ItemState::Planned) > 0 {
        "submitting"
    } else {
        "tracking"
    };
    let in_flight = n(ItemState::Submitted) + n(ItemState::Accepted) + n(ItemState::Provisioning);
    let mut detail = Vec::new();
    for (label, k) in [
        ("in flight", in_flight),
        ("active", n(ItemState::Active)),
        ("failed", n(ItemState::Failed)),
        ("rejected", n(ItemState::Rejected)),
        ("escalated", n(ItemState::Escalated)),
    ] {
        if k > 0 {
            detail.push(format!("{label} {}", HumanCount(k)));
        }
    }
    let secs = elapsed.as_secs_f64();
    if secs >= 0.5 {
        let sent = requests.saturating_sub(base.requests);
        detail.push(format!("{:.1} req/s", sent as f64 / secs));
    }
    (
        phase,
        Figures {
            done: done(counts).saturating_sub(base.done),
            total: Some(all.saturating_sub(base.done)),
            bytes: false,
            elapsed,
            detail,
        },
    )
}

/// The lookups before paying: items looked up out of `of`.
fn lookups(so_far: &Reconciled, of: u64, elapsed: Duration) -> Figures {
    let held = so_far.held_total();
    Figures {
        done: so_far.looked_up,
        total: Some(of),
        bytes: false,
        elapsed,
        detail: if held > 0 {
            vec![format!("{} held by the vendor", HumanCount(held))]
        } else {
            Vec::new()
        },
    }
}

/// Reading an input: bytes out of its size (when known), rows so far.
fn reading(bytes: u64, total: Option<u64>, rows: u64, elapsed: Duration) -> Figures {
    Figures {
        done: bytes,
        total,
        bytes: true,
        elapsed,
        detail: vec![format!("{} rows", HumanCount(rows))],
    }
}

/// The time left at this phase's pace so far, once there is a pace.
fn eta(f: &Figures) -> Option<Duration> {
    let total = f.total?;
    let secs = f.elapsed.as_secs_f64();
    if f.done == 0 || secs < 0.5 {
        return None;
    }
    let left = total.saturating_sub(f.done) as f64;
    Duration::try_from_secs_f64(left * secs / f.done as f64).ok()
}

/// `42s`, `12m 05s`, `3h 07m`; a part of a second counts as one (`0s`
/// would claim it done).
fn short_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

fn amount(n: u64, bytes: bool) -> String {
    if bytes {
        HumanBytes(n).to_string()
    } else {
        HumanCount(n).to_string()
    }
}

/// What follows the bar: `stopping…` once stopping, done out of all, the
/// ETA and pace, then the detail, cut to `room` columns.
fn message(figures: Option<&Figures>, stopping: bool, room: usize) -> String {
    let mut parts = Vec::new();
    if stopping {
        parts.push("stopping…".to_string());
    }
    if let Some(f) = figures {
        if f.bytes || f.total.is_some() || f.done > 0 {
            parts.push(match f.total {
                Some(t) => format!("{}/{}", amount(f.done, f.bytes), amount(t, f.bytes)),
                None => amount(f.done, f.bytes),
            });
        }
        if !stopping {
            if let Some(eta) = eta(f) {
                parts.push(format!("eta {}", short_duration(eta)));
            }
        }
        let secs = f.elapsed.as_secs_f64();
        if f.done > 0 && secs >= 0.5 {
            let rate = f.done as f64 / secs;
            parts.push(if f.bytes {
                format!("{}/s", HumanBytes(rate as u64))
            } else if rate < 10.0 {
                format!("{rate:.1}/s")
            } else {
                format!("{}/s", HumanCount(rate as u64))
            });
        }
        parts.extend(f.detail.iter().cloned());
    }
    fit(&parts, room)
}

/// `parts` joined by ` · `, as many as fit in `room` columns; the first
/// cut short with `…` when even it does not fit.
fn fit(parts: &[String], room: usize) -> String {
    let mut text = String::new();
    for part in parts {
        let sep = if text.is_empty() { "" } else { " · " };
        if measure_text_width(&text) + measure_text_width(sep) + measure_text_width(part) > room {
            if text.is_empty() && room > 0 {
                text = truncate_str(part, room, "…").into_owned();
            }
            break;
        }
        text.push_str(sep);
        text.push_str(part);
    }
    text
}

/// The columns the message may take in a terminal `width` wide: what the
/// template leaves, less the bar's share when there is one.
fn room(phase: &str, bar: bool, width: u16) -> usize {
    // The spinner, and a space after it and after the name.
    let shared = (width as usize).saturating_sub(1 + 1 + measure_text_width(phase) + 1);
    if bar {
        // And a space after the bar.
        shared.saturating_sub((shared / 4).max(MIN_BAR) + 1)
    } else {
        shared
    }
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
