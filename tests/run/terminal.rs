//! `refleet run` on a terminal: a pseudo-terminal 80 columns wide, made by
//! util-linux `script`. The progress line never takes more than the 80
//! columns, and Ctrl-C makes it say `stopping…`.

use std::ffi::OsString;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use refleet::sim::SimConfig;

use super::{output_within, run_args, sample, sim, state_home, TOKEN};

/// Whether `script` can give a command a terminal here.
fn script_works() -> bool {
    Command::new("script")
        .args(["-qec", "test -t 2", "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `arg` quoted for `sh`.
fn quoted(arg: &OsString) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

/// What a terminal would show of `raw`: its lines, each redraw of the
/// progress line (which starts with `\r`) a line of its own, escapes
/// removed.
fn drawn_lines(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let text = console::strip_ansi_codes(&text);
    text.split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A progress line starts with its spinner (a braille pattern).
fn is_progress_line(line: &str) -> bool {
    line.chars()
        .next()
        .is_some_and(|c| ('\u{2800}'..='\u{28FF}').contains(&c))
}

#[test]
fn at_80_columns_the_line_fits_and_ctrl_c_says_stopping() {
    if !script_works() {
        eprintln!("skipped: util-linux `script` cannot make a pseudo-terminal here");
        return;
    }
    let sim = sim(SimConfig {
        latency_ms: Some((5, 10)),
        ..SimConfig::default()
    });
    let out = tempfile::tempdir().unwrap();
    let pid_file = out.path().join("refleet.pid");
    let args: Vec<String> = run_args(
        &sample("inventory.csv"),
        out.path(),
        &sim,
        &["--rate", "30", "--batch-size", "10"],
    )
    .iter()
    .filter(|a| *a != "--quiet")
    .map(quoted)
    .collect();
    // The shell writes its pid, then becomes refleet: that pid is refleet's.
    let command = format!(
        "stty cols 80 rows 24; echo $$ > {}; exec {} {}",
        quoted(&pid_file.clone().into_os_string()),
        quoted(&assert_cmd::cargo::cargo_bin("refleet").into_os_string()),
        args.join(" ")
    );
    let child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("REFLEET_API_TOKEN", TOKEN)
        .env("XDG_STATE_HOME", state_home(out.path()))
        .env_remove("REFLEET_STATE")
        .env_remove("REFLEET_POLICY")
        .env_remove("REFLEET_API_URL")
        .env_remove("REFLEET_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script starts");
    // Interrupt it mid-submission.
    let started = Instant::now();
    while sim.stats().reactivation_requests < 3 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&pid_file).expect("the pid file");
    let sent = Command::new("kill")
        .args(["-INT", pid.trim()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = output_within(child, Duration::from_secs(60));
    let mut raw = output.stdout.clone();
    // Anything `script` itself had to say.
    output.stderr.as_slice().read_to_end(&mut raw).unwrap();
    assert_eq!(
        output.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    let lines = drawn_lines(&raw);
    let progress: Vec<&String> = lines.iter().filter(|l| is_progress_line(l)).collect();
    for name in [" planning", " looking up ", " submitting "] {
        assert!(
            progress.iter().any(|l| l.contains(name)),
            "no `{name}` line in {lines:#?}"
        );
    }
    for line in &progress {
        assert!(
            console::measure_text_width(line) <= 80,
            "a progress line wider than the terminal: {line:?}"
        );
    }
    // Said while the submission winds down, not after it.
    assert!(
        progress
            .iter()
            .any(|l| l.contains(" submitting ") && l.contains("stopping…")),
        "{lines:#?}"
    );
    // The log line about the signal is printed above the progress line,
    // not run into it.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("SIGINT (Ctrl-C) received") && !is_progress_line(l)),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !(is_progress_line(l) && l.contains("WARN"))),
        "{lines:#?}"
    );
}
