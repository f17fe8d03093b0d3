//! History is never rewritten or dropped (issue 15, part 2): audit logs are
//! append-only whatever happens to journals, a journal that cannot be used
//! is refused rather than taken as new, and a run that dies leaves no
//! temporary file for the next one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use refleet::sim::{Sim, SimConfig};

use super::run::TOKEN;
use super::{journal_of, refleet, refleet_for, sample, state_home};

const AS_OF: &str = "2026-11-24";

/// A simulator on loopback that takes the tests' token.
fn sim() -> Sim {
    super::run::sim(SimConfig::default())
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
    refleet_for(out)
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

/// `inventory` with the first `n` rows that `out/results.csv` has active
/// deactivated again on a new date: new events, submitted again.
fn redeactivated(inventory: &Path, out: &Path, n: usize, to: &Path) -> PathBuf {
    let mut res = csv::Reader::from_path(out.join("results.csv")).unwrap();
    let h = res.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (row, state, serial) = (col("row"), col("state"), col("serial_number"));
    let rows: HashSet<usize> = res
        .records()
        .map(Result::unwrap)
        .filter(|r| &r[state] == "active" && !r[serial].is_empty())
        .take(n)
        .map(|r| r[row].parse().unwrap())
        .collect();
    assert_eq!(rows.len(), n);
    let mut rdr = csv::Reader::from_path(inventory).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let at = headers.iter().position(|c| c == "deactivated_at").unwrap();
    let mut w = csv::Writer::from_path(to).unwrap();
    w.write_record(&headers).unwrap();
    for (i, rec) in rdr.records().enumerate() {
        let mut rec: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        if rows.contains(&(i + 1)) {
            rec[at] = "2026-11-20".into();
        }
        w.write_record(&rec).unwrap();
    }
    w.flush().unwrap();
    to.to_path_buf()
}

/// `refleet audit verify --state JOURNAL`: (exit code, stdout, stderr).
fn verify(journal: &Path) -> (Option<i32>, String, String) {
    let o = refleet()
        .args(["audit", "verify", "--state"])
        .arg(journal)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn audit_logs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("audit") && name.ends_with(".jsonl")
        })
        .collect();
    v.sort();
    v
}

fn remove_journal(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// A folder of nightly journals: the first night's run done.
struct Nights {
    sim: Sim,
    dir: tempfile::TempDir,
    input: PathBuf,
}

impl Nights {
    fn new() -> Nights {
        let dir = tempfile::tempdir().unwrap();
        let input = head(dir.path(), 300);
        let nights = Nights {
            sim: sim(),
            dir,
            input,
        };
        nights.run("2026-12-01", &nights.input);
        nights
    }

    fn folder(&self) -> PathBuf {
        self.dir.path().join("D")
    }

    fn journal(&self, night: &str) -> PathBuf {
        self.folder().join(format!("{night}.sqlite"))
    }

    fn run(&self, night: &str, input: &Path) {
        let journal = self.journal(night);
        let out = self.dir.path().join(format!("out-{}", fastrand::u32(..)));
        ok(run(
            input,
            &out,
            &self.sim,
            &["--state", journal.to_str().unwrap()],
        ));
    }
}

#[test]
fn journals_of_several_nights_in_one_folder_each_keep_their_own_audit_log() {
    let n = Nights::new();
    let first = n.folder().join("audit.jsonl");
    let log1 = std::fs::read(&first).unwrap();
    assert!(log1.len() > 10_000);
    n.run("2026-12-02", &n.input);
    assert!(
        std::fs::read(&first).unwrap() == log1,
        "the first night's log was changed by the second night's journal"
    );
    let logs = audit_logs(&n.folder());
    assert_eq!(logs.len(), 2, "{logs:?}");
    let mut owners = HashSet::new();
    for night in ["2026-12-01", "2026-12-02"] {
        let (code, stdout, stderr) = verify(&n.journal(night));
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains("chain intact"), "{stdout}");
        owners.insert(
            stdout
                .split("written by journal ")
                .nth(1)
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(owners.len(), 2, "each log names its own journal");
}

#[test]
fn a_journal_deleted_and_started_again_leaves_the_old_log_as_it_was() {
    let n = Nights::new();
    let first = n.folder().join("audit.jsonl");
    let log1 = std::fs::read(&first).unwrap();
    remove_journal(&n.journal("2026-12-01"));
    n.run("2026-12-01", &n.input);
    assert!(std::fs::read(&first).unwrap() == log1);
    assert_eq!(audit_logs(&n.folder()).len(), 2);
    assert_eq!(verify(&n.journal("2026-12-01")).0, Some(0));
}

#[test]
fn a_journal_restored_from_a_backup_keeps_every_record_of_its_log() {
    let n = Nights::new();
    let journal = n.journal("2026-12-01");
    let backup = n.dir.path().join("backup.sqlite");
    std::fs::copy(&journal, &backup).unwrap();
    let out = n.dir.path().join("first");
    ok(run(
        &n.input,
        &out,
        &n.sim,
        &["--state", journal.to_str().unwrap()],
    ));
    let more = redeactivated(&n.input, &out, 10, &n.dir.path().join("more.csv"));
    n.run("2026-12-01", &more);
    let log = n.folder().join("audit.jsonl");
    let grown = std::fs::read(&log).unwrap();
    remove_journal(&journal);
    std::fs::copy(&backup, &journal).unwrap();
    n.run("2026-12-01", &more);
    let after = std::fs::read(&log).unwrap();
    assert!(
        after.starts_with(&grown),
        "a restored journal cut or rewrote its log ({} bytes, then {})",
        grown.len(),
        after.len()
    );
    let (code, stdout, stderr) = verify(&journal);
    assert_eq!(code, Some(0), "{stderr}");
    // Each of the ten events once in the log, though the restored journal
    // saw them again.
    let text = String::from_utf8(after).unwrap();
    let activations: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "activations")
        .flat_map(|r| r["items"].as_array().unwrap().clone())
        .filter_map(|row| row[0].as_str().map(str::to_string))
        .filter(|k| k.ends_with("|2026-11-20"))
        .collect();
    assert_eq!(activations.len(), 10, "{stdout}");
    assert_eq!(n.sim.stats().duplicate_activations, 0);
}

/// What a journal recorded of its audit log: (len, records, hash).
fn recorded(journal: &Path) -> (u64, u64, String) {
    let c = rusqlite::Connection::open(journal).unwrap();
    let get = |k: &str| -> String {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .unwrap()
    };
    (
        get("audit_len").parse().unwrap(),
        get("audit_records").parse().unwrap(),
        get("audit_hash"),
    )
}

#[test]
fn a_crash_between_the_log_and_the_journal_neither_loses_nor_repeats_a_record() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let input = head(dir.path(), 300);
    let out = dir.path().join("out");
    ok(run(&input, &out, &sim, &[]));
    let journal = journal_of(&out);
    let log = journal.with_file_name("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let full = recorded(&journal);
    assert_eq!(full.1 as usize, lines.len());

    // As if the run had died after syncing its last 3 records and before
    // the journal recorded them, in the middle of writing one more.
    let kept = lines.len() - 3;
    let len: usize = lines[..kept].iter().map(|l| l.len() + 1).sum();
    let value = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap();
    let hash = value(lines[kept - 1])["hash"].as_str().unwrap().to_string();
    let c = rusqlite::Connection::open(&journal).unwrap();
    let set = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)";
    c.execute(set, ["audit_len", &len.to_string()]).unwrap();
    c.execute(set, ["audit_records", &kept.to_string()])
        .unwrap();
    c.execute(set, ["audit_hash", &hash]).unwrap();
    // Their items: a case names one, an `activations` record a row each.
    let mut keys = Vec::new();
    for l in &lines[kept..] {
        let r = value(l);
        keys.extend(r["event_key"].as_str().map(str::to_string));
        for row in r["items"].as_array().into_iter().flatten() {
            keys.extend(row[0].as_str().map(str::to_string));
        }
    }
    let mut unmarked = 0;
    for key in &keys {
        unmarked += c
            .execute("UPDATE items SET audited = 0 WHERE event_key = ?1", [key])
            .unwrap();
    }
    assert!(unmarked > 0, "the last records are items'");
    assert_eq!(unmarked, keys.len());
    drop(c);
    let mut torn = text.clone();
    torn.push_str(&lines[kept][..60]);
    std::fs::write(&log, &torn).unwrap();

    ok(run(&input, &out, &sim, &[]));
    assert!(
        std::fs::read_to_string(&log).unwrap() == text,
        "the synced records are kept as they were, none twice, and only the torn line is gone"
    );
    assert_eq!(recorded(&journal), full);
    let (code, stdout, stderr) = verify(&journal);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("{} records", lines.len())),
        "{stdout}"
    );
}

#[test]
fn a_log_cut_short_is_caught_by_verify_with_its_journal_and_refused_before_sending() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let input = head(dir.path(), 300);
    let out = dir.path().join("out");
    ok(run(&input, &out, &sim, &[]));
    let journal = journal_of(&out);
    let log = journal.with_file_name("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines[..lines.len() - 3].join("\n") + "\n";
    std::fs::write(&log, &cut).unwrap();
    let before = sim.stats().reactivation_requests;
    let more = redeactivated(&input, &out, 5, &dir.path().join("more.csv"));
    let o = run(&more, &out, &sim, &[]);
    let (code, stderr) = exit(&o);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("audit.jsonl") && stderr.contains("Nothing was sent"),
        "{stderr}"
    );
    assert_eq!(sim.stats().reactivation_requests, before);
    assert!(std::fs::read_to_string(&log).unwrap() == cut);
    // The chain alone cannot tell where it should end; its journal can.
    refleet()
        .args(["audit", "verify"])
        .arg(&log)
        .assert()
        .code(0);
    let (code, _, stderr) = verify(&journal);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("truncated or replaced"), "{stderr}");
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
        .env("XDG_STATE_HOME", state_home(&out))
        .env_remove("REFLEET_STATE")
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
