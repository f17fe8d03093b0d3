//! History is never rewritten or dropped (issue 15, part 2): audit logs are
//! append-only whatever happens to journals, a journal that cannot be used
//! is refused rather than taken as new, and a run that dies leaves no
//! temporary file for the next one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use refleet::policy::Policy;
use refleet::sim::{Sim, SimConfig};

use super::{refleet, sample};

const TOKEN: &str = "test-token-h15b";
const AS_OF: &str = "2026-11-24";

fn sim() -> Sim {
    let policy = Arc::new(Policy::load(None).expect("built-in policy"));
    Sim::start_in_background(
        SimConfig {
            token: Some(TOKEN.into()),
            ..SimConfig::default()
        },
        policy,
    )
    .expect("simulator starts on loopback")
}

fn run_args(inventory: &Path, out: &Path, sim: &Sim, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["run".into(), inventory.into()];
    args.push("--contracts".into());
    args.push(sample("contracts.csv").into());
    for a in [
        "--as-of",
        AS_OF,
        "--api-url",
        &sim.url(),
        "--quiet",
        "--out",
    ] {
        args.push(a.into());
    }
    args.push(out.into());
    args.extend(extra.iter().map(|a| a.into()));
    args
}

/// `refleet run` on `inventory` against `sim`; its output.
fn run(inventory: &Path, out: &Path, sim: &Sim, extra: &[&str]) -> std::process::Output {
    refleet()
        .args(run_args(inventory, out, sim, extra))
        .args(["--rate", "400"])
        .env("REFLEET_API_TOKEN", TOKEN)
        .env_remove("REFLEET_API_URL")
        .output()
        .unwrap()
}

fn exit(o: &std::process::Output) -> (Option<i32>, String) {
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into())
}

fn ok(o: std::process::Output) {
    let (code, stderr) = exit(&o);
    assert_eq!(code, Some(0), "{stderr}");
}

/// The first `n` rows of the sample inventory.
fn head(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(sample("inventory.csv")).unwrap();
    let path = dir.join(format!("head{n}.csv"));
    let lines: Vec<&str> = text.lines().take(n + 1).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn a_journal_that_cannot_be_used_is_refused_until_new_journal_moves_it_aside() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let input = head(dir.path(), 100);
    let good = dir.path().join("good.sqlite");
    ok(run(
        &input,
        &dir.path().join("o"),
        &sim,
        &["--state", good.to_str().unwrap()],
    ));
    let bytes = std::fs::read(&good).unwrap();
    let at = |n: &str| dir.path().join(n);
    std::fs::write(at("empty.sqlite"), b"").unwrap();
    std::fs::write(at("cut.sqlite"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::copy(&good, at("newer.sqlite")).unwrap();
    rusqlite::Connection::open(at("newer.sqlite"))
        .unwrap()
        .execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    let sent = sim.stats().requests;
    for (name, problem) in [
        ("empty.sqlite", "is empty (0 bytes)"),
        ("cut.sqlite", "is cut off"),
        ("newer.sqlite", "another version of refleet"),
    ] {
        let journal = at(name);
        let before = std::fs::read(&journal).unwrap();
        let o = run(
            &input,
            &dir.path().join(format!("o-{name}")),
            &sim,
            &["--state", journal.to_str().unwrap()],
        );
        let (code, stderr) = exit(&o);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        for says in [problem, "sends every item again", "--new-journal"] {
            assert!(stderr.contains(says), "{name}: {stderr}");
        }
        assert_eq!(sim.stats().requests, sent, "{name}: nothing was sent");
        assert!(
            std::fs::read(&journal).unwrap() == before,
            "{name} untouched"
        );
        let status = refleet()
            .args(["status", "--state"])
            .arg(&journal)
            .output()
            .unwrap();
        let (code, stderr) = (
            status.status.code(),
            String::from_utf8_lossy(&status.stderr),
        );
        assert_eq!(code, Some(2), "status {name}: {stderr}");
        assert!(stderr.contains(problem), "status {name}: {stderr}");
    }

    // --new-journal: moved aside, never deleted, and a new journal starts.
    let journal = at("empty.sqlite");
    let o = run(
        &input,
        &dir.path().join("o-new"),
        &sim,
        &["--state", journal.to_str().unwrap(), "--new-journal"],
    );
    let (code, stderr) = exit(&o);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("was moved to"), "{stderr}");
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("empty.sqlite.unusable-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::metadata(&aside[0]).unwrap().len(), 0);
    assert!(stderr.contains(aside[0].to_str().unwrap()), "{stderr}");
    // A usable journal is kept as it is, flag or not.
    let before = std::fs::read(&good).unwrap().len();
    ok(run(
        &input,
        &dir.path().join("o-good"),
        &sim,
        &["--state", good.to_str().unwrap(), "--new-journal"],
    ));
    assert!(std::fs::metadata(&good).unwrap().len() >= before as u64);
    assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_str()
        .unwrap()
        .starts_with("good.sqlite.unusable")));
}

/// The `.refleet-*.tmp` files in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".refleet-") && n.ends_with(".tmp"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_run_killed_mid_way_leaves_no_temporary_file_to_the_next_one() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // The user's own files, named like refleet's.
    let users = [".refleet-notes.tmp", ".refleet-Ab12Cd.tmp"];
    for u in users {
        std::fs::write(out.join(u), b"mine").unwrap();
    }
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("refleet"))
        .args(run_args(
            &sample("inventory.csv"),
            &out,
            &sim,
            &["--rate", "30", "--batch-size", "10"],
        ))
        .env("REFLEET_API_TOKEN", TOKEN)
        .env_remove("REFLEET_POLICY")
        .env_remove("REFLEET_API_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while sim.stats().reactivation_requests < 3 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child.try_wait().unwrap().is_none(), "still submitting");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = temporaries(&out);
    assert!(
        left.len() > users.len(),
        "the killed run left its spool: {left:?}"
    );

    ok(run(&sample("inventory.csv"), &out, &sim, &[]));
    assert_eq!(temporaries(&out), {
        let mut u: Vec<String> = users.iter().map(|s| s.to_string()).collect();
        u.sort();
        u
    });
    for u in users {
        assert_eq!(std::fs::read(out.join(u)).unwrap(), b"mine");
    }
}
