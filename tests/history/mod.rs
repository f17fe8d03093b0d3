//! History is never rewritten or dropped (issue 15, part 2): audit logs are
//! append-only whatever happens to journals, a journal that cannot be used
//! is refused rather than taken as new, and a run that dies leaves no
//! temporary file for the next one.

use std::path::Path;
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
