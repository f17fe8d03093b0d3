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

/// The progress line of a command: hidden, or drawn on stderr.
pub struct Phases {
    shown: Option<Shown>,
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
            return Phases { shown: None };
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
mod tests {
    use super::*;
    use indicatif::TermLike;

    /// A terminal `width` columns wide that keeps what is written to it.
    #[derive(Debug, Clone)]
    struct Screen {
        width: u16,
        written: Arc<Mutex<Vec<String>>>,
    }

    impl Screen {
        fn new(width: u16) -> Screen {
            Screen {
                width,
                written: Arc::default(),
            }
        }

        /// The lines drawn (the spaces that pad them to the width apart).
        fn lines(&self) -> Vec<String> {
            let written = self.written.lock().unwrap();
            written
                .iter()
                .filter(|w| !w.trim().is_empty())
                .cloned()
                .collect()
        }

        fn last(&self) -> String {
            self.lines().pop().unwrap_or_default()
        }

        fn phases(&self) -> Phases {
            Phases::drawn_to(
                ProgressDrawTarget::term_like(Box::new(self.clone())),
                Some(self.width),
            )
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            self.width
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.written.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A journal of a million items, every state in the millions' range.
    fn big_counts(planned: u64) -> Vec<(ItemState, u64)> {
        vec![
            (ItemState::Planned, planned),
            (ItemState::Submitted, 123_456),
            (ItemState::Accepted, 98_765),
            (ItemState::Provisioning, 87_654),
            (ItemState::Active, 412_345),
            (ItemState::Failed, 11_111),
            (ItemState::Rejected, 22_222),
            (ItemState::Escalated, 33_333),
            (ItemState::ManualReview, 1_000_000 - 788_886 - planned),
        ]
    }

    #[test]
    fn the_line_fits_80_columns_with_a_million_items_and_big_rates() {
        for planned in [211_114, 0] {
            let counts = big_counts(planned);
            assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 1_000_000);
            let base = Baseline {
                done: 0,
                requests: 0,
            };
            for elapsed in [Duration::from_millis(500), Duration::from_secs(400_000)] {
                let (phase, f) = submission(&counts, base, 9_876_543_210, elapsed);
                for width in [40u16, 60, 80, 120, 300] {
                    let room = room(phase, true, width);
                    for stopping in [false, true] {
                        let msg = message(Some(&f), stopping, room);
                        assert!(measure_text_width(&msg) <= room, "{msg:?} in {room}");
                        // The spinner, the name, the narrowest bar, the message.
                        let line = 1 + 1 + phase.len() + 1 + MIN_BAR + 1 + room;
                        assert!(line <= width as usize, "{line} > {width}: {msg}");
                    }
                }
            }
        }
        let f = reading(
            987_654_321_000,
            Some(999_999_999_999),
            12_345_678_901,
            Duration::from_secs(1),
        );
        let room = room("planning", true, 80);
        assert!(measure_text_width(&message(Some(&f), false, room)) <= room);
    }

    #[test]
    fn indicatif_draws_the_line_in_80_columns() {
        let screen = Screen::new(80);
        let phases = screen.phases();
        let counts = big_counts(211_114);
        phases.begin_submission(&[(ItemState::Planned, 1_000_000)], 0);
        std::thread::sleep(Duration::from_millis(600));
        phases.update(&counts, 9_876_543_210);
        let lines = screen.lines();
        assert!(!lines.is_empty());
        for line in &lines {
            assert!(measure_text_width(line) <= 80, "{line:?}");
        }
        let last = screen.last();
        assert!(last.contains(" submitting "), "{last}");
        assert!(last.contains("479,011/1,000,000 · eta"), "{last}");
        // The message was cut to leave the bar its share (a quarter of 67
        // columns), not the bar to nothing.
        let cells = last.chars().filter(|c| matches!(c, '█' | '░')).count();
        assert_eq!(cells, 16, "{last}");
        assert_eq!(measure_text_width(&last), 80, "{last}");
    }

    #[test]
    fn the_eta_counts_only_this_runs_items() {
        // Earlier runs did 900,000 of 1,000,000; this one did 10,000 in 10 s.
        let base = Baseline::of(
            &[(ItemState::Active, 900_000), (ItemState::Planned, 100_000)],
            5_000,
        );
        assert_eq!(base.done, 900_000);
        let counts = [
            (ItemState::Active, 910_000),
            (ItemState::Planned, 80_000),
            (ItemState::Submitted, 10_000),
        ];
        let (phase, f) = submission(&counts, base, 6_000, Duration::from_secs(10));
        assert_eq!(phase, "submitting");
        assert_eq!((f.done, f.total), (10_000, Some(100_000)));
        // 1,000 items/s, 90,000 left: 90 s, not the 1 s that counting
        // the earlier runs' 900,000 as this run's would claim.
        assert_eq!(eta(&f), Some(Duration::from_secs(90)));
        let msg = message(Some(&f), false, 200);
        assert!(
            msg.starts_with("10,000/100,000 · eta 1m 30s · 1,000/s · in flight 10,000"),
            "{msg}"
        );
        // 1,000 requests in 10 s, not the lookups' 5,000 before.
        assert!(msg.ends_with("100.0 req/s"), "{msg}");
        // No pace yet, no ETA.
        let (_, f) = submission(&counts, base, 6_000, Duration::from_millis(100));
        assert_eq!(eta(&f), None);
        let (_, f) = submission(&counts, Baseline::of(&counts, 0), 0, Duration::from_secs(5));
        assert_eq!((f.done, eta(&f)), (0, None));
    }

    #[test]
    fn the_phases_are_named() {
        let base = Baseline {
            done: 0,
            requests: 0,
        };
        let phase = |counts: &[(ItemState, u64)]| submission(counts, base, 0, Duration::ZERO).0;
        assert_eq!(
            phase(&[(ItemState::Planned, 1), (ItemState::Active, 9)]),
            "submitting"
        );
        assert_eq!(
            phase(&[(ItemState::Planned, 0), (ItemState::Accepted, 9)]),
            "tracking"
        );

        let screen = Screen::new(80);
        let phases = screen.phases();
        phases.phase("planning");
        assert!(screen.last().contains(" planning"), "{}", screen.last());
        let mut found = Reconciled {
            looked_up: 500,
            ..Reconciled::default()
        };
        found.held.insert("active", 7);
        phases.looked_up(&found, 2_000);
        let last = screen.last();
        assert!(
            last.contains(" looking up ") && last.contains("500/2,000 · 7 held by the vendor"),
            "{last}"
        );
        phases.begin_submission(&[(ItemState::Planned, 3)], 0);
        assert!(screen.last().contains(" submitting "), "{}", screen.last());
        phases.update(&[(ItemState::Accepted, 3)], 0);
        assert!(screen.last().contains(" tracking "), "{}", screen.last());
        for name in ["audit log", "reports"] {
            phases.phase(name);
            assert!(screen.last().contains(&format!(" {name}")));
        }
    }

    #[test]
    fn reading_shows_bytes_and_rows_then_keeps_the_phase() {
        let screen = Screen::new(80);
        let phases = screen.phases();
        phases.phase("planning");
        let read = Arc::new(AtomicU64::new(0));
        phases.start(Some(4 << 20), read.clone());
        read.store(1 << 20, Ordering::Relaxed);
        phases.rows(5_000);
        let last = screen.last();
        assert!(
            last.contains(" planning ")
                && last.contains("1.00 MiB/4.00 MiB")
                && last.contains("5,000 rows"),
            "{last}"
        );
        phases.finish();
        let last = screen.last();
        assert!(last.contains(" planning 5,000 rows"), "{last}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_shows_stopping_at_once_and_it_stays() {
        let screen = Screen::new(80);
        let phases = screen.phases();
        let counts = [(ItemState::Planned, 90), (ItemState::Active, 10)];
        phases.begin_submission(&counts, 0);
        let stop = Stop::new();
        tokio::spawn(phases.watch(stop.clone()));
        tokio::task::yield_now().await;
        assert!(!screen.last().contains("stopping"));
        stop.trigger("stopped by SIGINT (Ctrl-C)");
        // No update comes: the watch alone draws it.
        let started = Instant::now();
        while !screen.last().contains("stopping…") {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{}",
                screen.last()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(started.elapsed() < Duration::from_millis(150));
        // Later updates and phases keep saying so, with no ETA.
        phases.update(&counts, 0);
        let last = screen.last();
        assert!(
            last.contains("stopping… · 0/90") && !last.contains("eta"),
            "{last}"
        );
        phases.phase("reports");
        assert!(screen.last().contains(" reports stopping…"));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(725)), "12m 05s");
        assert_eq!(
            short_duration(Duration::from_secs(3 * 3600 + 420)),
            "3h 07m"
        );
        assert_eq!(
            fit(&["abcdefghij".into(), "x".into()], 5),
            "abcd…",
            "the first part is cut"
        );
        assert_eq!(
            fit(&["ab".into(), "cd".into()], 6),
            "ab",
            "the rest is dropped"
        );
        assert_eq!(fit(&["ab".into(), "cd".into()], 7), "ab · cd");
    }
}
