//! Tests of the progress display: phases, bars and their text.

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
