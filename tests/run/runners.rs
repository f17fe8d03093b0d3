//! Several `refleet run` processes on one PostgreSQL ledger (issue 18):
//! each item paid by exactly one runner, each runner's reports complete,
//! and a runner that dies finished by the others or by its restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use refleet::sim::SimConfig;

use super::store::Store;
use super::{
    assert_complete, assert_outcome_agrees, output_within, results, run_child, sample, sample_rows,
    sim,
};

/// Runs `n` runners on the sample at once, each with its own `--out`.
fn start(
    store: &Store,
    sim: &refleet::sim::Sim,
    dir: &Path,
    n: usize,
) -> Vec<(PathBuf, std::process::Child)> {
    (0..n)
        .map(|i| {
            let out = dir.join(format!("runner-{i}"));
            let child = run_child(
                &sample("inventory.csv"),
                &out,
                sim,
                &store.args(&["--rate", "40", "--batch-size", "10", "--concurrency", "4"]),
            );
            (out, child)
        })
        .collect()
}

/// Waits for every runner: each ends with exit 0 and a complete report.
fn finish(runners: Vec<(PathBuf, std::process::Child)>) -> Vec<PathBuf> {
    let mut outs = Vec::new();
    for (out, child) in runners {
        let output = output_within(child, Duration::from_secs(120));
        assert_outcome_agrees(&out, &output);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_complete(&out, sample_rows());
        outs.push(out);
    }
    outs
}

/// Who paid for each active item, by `results.csv`'s `source`, over every
/// runner's report: exactly one runner says `this_run` for each.
fn payers(outs: &[PathBuf]) -> BTreeMap<String, Vec<usize>> {
    let mut paid: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, out) in outs.iter().enumerate() {
        for r in results(out) {
            if r["state"] == "active" && r["source"] == "this_run" {
                paid.entry(r["item_key"].clone()).or_default().push(i);
            }
        }
    }
    paid
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn three_runners_on_one_ledger_pay_each_item_once_and_each_reports_every_row() {
    let Some(store) = Store::postgres("three_runners_on_one_ledger") else {
        return;
    };
    let sim = sim(SimConfig {
        latency_ms: Some((2, 10)),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let runners = start(&store, &sim, dir.path(), 3);
    let outs = finish(runners);
    let stats = sim.stats();
    assert_eq!(stats.duplicate_activations, 0, "{stats:?}");
    let paid = payers(&outs);
    for (key, by) in &paid {
        assert_eq!(by.len(), 1, "{key} paid by runners {by:?}");
    }
    // Every active item of every report was paid by one of them, and the
    // vendor billed exactly those.
    let active = results(&outs[0])
        .iter()
        .filter(|r| r["state"] == "active")
        .count();
    assert_eq!(paid.len(), active);
    assert_eq!(stats.activations, active as u64, "{stats:?}");
    // The work was shared, not done by one runner while the others waited.
    let sharing: std::collections::BTreeSet<usize> = paid.values().flatten().copied().collect();
    assert!(sharing.len() >= 2, "only runners {sharing:?} paid");
    store.assert_audit_verifies(&outs[0]);
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_runner_killed_twice_mid_run_is_finished_by_the_others_or_its_restart() {
    let Some(store) = Store::postgres("a_runner_killed_twice_mid_run") else {
        return;
    };
    let sim = sim(SimConfig {
        latency_ms: Some((5, 15)),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut runners = start(&store, &sim, dir.path(), 3);
    let victim = dir.path().join("runner-2");
    for kill in 1..=2 {
        // Kill it once it has batches on their way: claimed under its
        // lease, answered or not.
        let (_, child) = &mut runners[2];
        let started = Instant::now();
        while store.psql("SELECT to_regclass('batches') IS NOT NULL") != "t"
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let held = format!(
            "SELECT count(*) FROM batches WHERE open AND runner LIKE '%/{}/%'",
            child.id()
        );
        while store.psql(&held).parse::<u64>().unwrap_or(0) < 2
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20 * kill));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let restarted = run_child(
            &sample("inventory.csv"),
            &victim,
            &sim,
            &store.args(&["--rate", "40", "--batch-size", "10", "--concurrency", "4"]),
        );
        runners[2] = (victim.clone(), restarted);
    }
    let outs = finish(runners);
    let stats = sim.stats();
    assert_eq!(stats.duplicate_activations, 0, "{stats:?}");
    for (key, by) in payers(&outs) {
        assert!(by.len() <= 1, "{key} paid by runners {by:?}");
    }
    // The killed runner held batches that another runner (or its restart,
    // a new runner) took over under their keys.
    let taken: u64 = store
        .psql("SELECT COALESCE(sum(takeovers), 0) FROM batches")
        .parse()
        .unwrap();
    assert!(taken > 0, "no batch was taken over");
    store.assert_audit_verifies(&outs[0]);
}

/// `--rate` is the vendor's limit for every runner on the ledger together:
/// two runners at `--rate 20` against a vendor that allows 20 requests a
/// second (burst 5) stay under it together, where each alone at 20/s would
/// make 40/s and draw 429s by the dozen.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn runners_on_one_ledger_share_the_vendor_quota() {
    let Some(store) = Store::postgres("runners_on_one_ledger_share_the_vendor_quota") else {
        return;
    };
    let sim = sim(SimConfig {
        rate_limit: Some(refleet::sim::RateLimit {
            per_second: 20.0,
            burst: 5,
        }),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let input = super::head(dir.path(), 600);
    let runners: Vec<_> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("runner-{i}"));
            let child = run_child(
                &input,
                &out,
                &sim,
                &store.args(&["--rate", "20", "--batch-size", "10", "--concurrency", "4"]),
            );
            (out, child)
        })
        .collect();
    let started = Instant::now();
    for (out, child) in runners {
        let output = output_within(child, Duration::from_secs(120));
        assert_outcome_agrees(&out, &output);
        assert_eq!(output.status.code(), Some(0));
        assert_complete(&out, 600);
    }
    let stats = sim.stats();
    assert_eq!(stats.duplicate_activations, 0, "{stats:?}");
    assert!(stats.requests > 100, "{stats:?}");
    // Unshared, the two draw 429s within seconds (the client then halves
    // its rate, so a handful, not hundreds).
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    let rate = stats.requests as f64 / started.elapsed().as_secs_f64();
    assert!(rate < 20.0 + 5.0, "{rate:.1} requests/s together");
}

/// A simulator that answers in 5 to 15 ms, and a run on the sample at 60
/// requests/s in batches of 10 writing to `out`, on `store`, with `extra`.
fn a_slow_run(
    store: &Store,
    out: &Path,
    extra: &[&str],
) -> (refleet::sim::Sim, std::process::Child) {
    let sim = sim(SimConfig {
        latency_ms: Some((5, 15)),
        ..SimConfig::default()
    });
    let mut args = vec!["--rate", "60", "--batch-size", "10"];
    args.extend(extra);
    let child = run_child(&sample("inventory.csv"), out, &sim, &store.args(&args));
    (sim, child)
}

/// The ledger's server restarts while two runners send and track: each
/// waits for it, goes on, and finishes every row, and nothing is paid
/// twice.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_ledger_restart_mid_run_is_waited_for_and_nothing_is_lost() {
    let Some(store) = Store::postgres("a_ledger_restart_mid_run") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (sim, first) = a_slow_run(&store, &out, &[]);
    let other = dir.path().join("other");
    let second = run_child(
        &sample("inventory.csv"),
        &other,
        &sim,
        &store.args(&["--rate", "60", "--batch-size", "10"]),
    );
    store.wait_for_accepted(5);
    store.server().stop();
    std::thread::sleep(Duration::from_secs(2));
    store.server().start();
    for (out, child) in [(&out, first), (&other, second)] {
        let output = output_within(child, Duration::from_secs(120));
        assert_outcome_agrees(out, &output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("waiting for it to come back"), "{stderr}");
        assert_complete(out, sample_rows());
    }
    assert_eq!(sim.stats().duplicate_activations, 0);
    store.assert_audit_verifies(&out);
}

/// A ledger that does not come back within `--track-timeout`: the run
/// stops with exit 4, saying so; once it is back, the same command
/// finishes every row, and nothing was paid twice.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_ledger_gone_past_the_time_out_stops_the_run_with_exit_4_and_it_resumes() {
    let Some(store) = Store::postgres("a_ledger_gone_past_the_time_out") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // An earlier run's summary, which must not speak for this one.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("summary.json"), r#"{"outcome": "finished"}"#).unwrap();
    let (sim, child) = a_slow_run(&store, &out, &["--track-timeout", "4s"]);
    store.wait_for_accepted(3);
    store.server().stop();
    let started = Instant::now();
    let output = output_within(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("did not come back"), "{stderr}");
    assert!(
        !out.join("summary.json").exists(),
        "no summary claims an outcome the ledger cannot tell"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded: {:?}",
        started.elapsed()
    );
    store.server().start();
    let rerun = run_child(
        &sample("inventory.csv"),
        &out,
        &sim,
        &store.args(&["--rate", "300"]),
    );
    let output = output_within(rerun, Duration::from_secs(120));
    assert_outcome_agrees(&out, &output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_complete(&out, sample_rows());
    assert_eq!(sim.stats().duplicate_activations, 0);
}

/// A runner buys only items of its own export: another runner's planned
/// items may still wait for their lookups or be over that runner's budget.
/// Here one runner's whole plan was refused by its budget guard; a second
/// runner, whose export shares 100 rows with it, buys those 100 rows' items
/// and none of the others.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_runner_never_buys_items_outside_its_own_export() {
    let Some(store) = Store::postgres("a_runner_never_buys_items_outside") else {
        return;
    };
    let sim = sim(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let refused = dir.path().join("refused");
    let output = output_within(
        run_child(
            &sample("inventory.csv"),
            &refused,
            &sim,
            &store.args(&["--budget", "1", "USD"]),
        ),
        Duration::from_secs(60),
    );
    assert_eq!(output.status.code(), Some(3), "the budget guard refused");
    assert_eq!(sim.stats().activations, 0);
    let planned: u64 = store
        .psql("SELECT count(*) FROM items WHERE state = 'planned'")
        .parse()
        .unwrap();
    assert!(planned > 1000, "{planned} planned");

    let input = super::head(dir.path(), 100);
    let out = dir.path().join("small");
    let output = output_within(
        run_child(&input, &out, &sim, &store.args(&[])),
        Duration::from_secs(60),
    );
    assert_outcome_agrees(&out, &output);
    assert_eq!(output.status.code(), Some(0));
    let res = assert_complete(&out, 100);
    let active = res.iter().filter(|r| r["state"] == "active").count() as u64;
    assert!(active > 50, "{active}");
    assert_eq!(
        sim.stats().activations,
        active,
        "only its own export's items"
    );
    assert_eq!(
        store
            .psql("SELECT count(*) FROM items WHERE state = 'planned'")
            .parse::<u64>()
            .unwrap(),
        planned - active,
        "the refused run's other items are still planned"
    );
}
