//! Never pay twice without the journal: before paying, `refleet run` asks
//! the vendor what it already holds (`POST /v1/items/lookup`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use refleet::sim::{PortalRecord, SimConfig};

use super::store::{on_both, Store};
use super::{
    assert_complete, head, ran, refleet, results, run_args, run_child, run_cmd, sample,
    sample_rows, sim, summary, TOKEN,
};

/// Requests of the simulator's log to `path` with `method`.
fn count(sim: &refleet::sim::Sim, method: &str, path: &str) -> usize {
    sim.request_log()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

fn lookups(sim: &refleet::sim::Sim) -> usize {
    count(sim, "POST", "/v1/items/lookup")
}

fn reactivations(sim: &refleet::sim::Sim) -> usize {
    count(sim, "POST", "/v1/reactivations")
}

/// A copy of `input` with every `deactivated_at` set to `when`.
fn redeactivated(input: &Path, dir: &Path, when: &str) -> PathBuf {
    let mut r = csv::Reader::from_path(input).unwrap();
    let headers = r.headers().unwrap().clone();
    let col = headers.iter().position(|h| h == "deactivated_at").unwrap();
    let path = dir.join(format!("redeactivated-{when}.csv"));
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(&headers).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        let row: Vec<&str> = rec
            .iter()
            .enumerate()
            .map(|(i, v)| if i == col { when } else { v })
            .collect();
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    path
}

fn eligible_serials(out: &Path) -> Vec<String> {
    let mut r = csv::Reader::from_path(out.join("eligibility.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    let (serial, eligible) = (
        headers.iter().position(|h| h == "serial_number").unwrap(),
        headers.iter().position(|h| h == "eligible").unwrap(),
    );
    r.records()
        .map(|rec| rec.unwrap())
        .filter(|rec| &rec[eligible] == "true" && !rec[serial].is_empty())
        .map(|rec| rec[serial].to_string())
        .collect()
}

on_both!(
    a_second_journal_pays_for_nothing_the_vendor_already_holds:
        a_second_journal_pays_for_nothing_held_on_sqlite,
    a_second_ledger_pays_for_nothing_held_on_postgres
);

/// The second site keeps its history in `store` (a journal of its own, or
/// a ledger), the first in a journal.
fn a_second_journal_pays_for_nothing_the_vendor_already_holds(store: Store) {
    let sim = sim(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (out1, out2) = (dir.path().join("site-a"), dir.path().join("site-b"));
    let journal = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    ran(
        &mut run_cmd(
            &sample("inventory.csv"),
            &out1,
            &sim,
            &["--state", &journal("a.sqlite")],
        ),
        &out1,
        0,
    );
    let first = sim.stats();
    let bought = first.activations;
    assert!(bought > 1000, "{bought}");
    let (lookups_before, sent_before) = (lookups(&sim), reactivations(&sim));

    // Another site's laptop: another journal, another batch size (and
    // not --quiet, to read what it says).
    let b = journal("b.sqlite");
    let args: Vec<std::ffi::OsString> = run_args(
        &sample("inventory.csv"),
        &out2,
        &sim,
        &store.shared_args(&b, &["--batch-size", "37"]),
    )
    .into_iter()
    .filter(|a| a != "--quiet")
    .collect();
    let output = ran(
        refleet()
            .args(args)
            .env("REFLEET_API_TOKEN", TOKEN)
            .env_remove("REFLEET_API_URL"),
        &out2,
        0,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let second = sim.stats();
    assert_eq!(second.duplicate_activations, 0, "{stderr}");
    assert_eq!(second.activations, bought, "nothing bought again");
    assert_eq!(
        reactivations(&sim),
        sent_before,
        "no POST /v1/reactivations"
    );
    // At most one lookup per 500 items.
    let asked = lookups(&sim) - lookups_before;
    let eligible = summary(&out2)["eligible"].as_u64().unwrap() as usize;
    assert!(
        asked >= 1 && asked <= eligible.div_ceil(500),
        "{asked} lookups"
    );

    let res = assert_complete(&out2, sample_rows());
    let active: Vec<_> = res.iter().filter(|r| r["state"] == "active").collect();
    assert_eq!(active.len() as u64, bought);
    for r in &active {
        assert_eq!(r["source"], "vendor_record", "row {}", r["row"]);
        assert!(r["confirmation_id"].starts_with("CNF-"), "row {}", r["row"]);
        assert!(!r["request_id"].is_empty());
    }
    // The first site's results say it bought them.
    let res1 = results(&out1);
    assert!(res1
        .iter()
        .filter(|r| r["state"] == "active")
        .all(|r| r["source"] == "this_run"));

    // The quote and the summary show what this run bought: nothing.
    let s = summary(&out2);
    assert_eq!(s["items"]["to_buy"], 0);
    assert_eq!(s["items"]["vendor_held"].as_u64(), Some(bought));
    assert_eq!(s["vendor_lookups"]["looked_up"].as_u64(), Some(bought));
    assert!(
        s["quotes"].as_object().unwrap().is_empty(),
        "{}",
        s["quotes"]
    );
    assert!(!s["not_bought_again"].as_object().unwrap().is_empty());
    let quotes = std::fs::read_to_string(out2.join("quotes.csv")).unwrap();
    assert_eq!(quotes.lines().count(), 1, "only the header: {quotes}");
    assert!(stderr.contains("nothing new to submit"), "{stderr}");
    let html = std::fs::read_to_string(out2.join("report.html")).unwrap();
    assert!(html.contains("Not bought again"), "the report says it");
    let thousands = format!("{},{:03}", bought / 1000, bought % 1000);
    assert!(
        html.contains(&format!(
            "0 by earlier runs · {thousands} held by the vendor"
        )),
        "{thousands}"
    );
}

#[test]
fn work_done_by_hand_is_never_paid_and_a_new_deactivation_is_paid_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = head(dir.path(), 40);
    // Which devices are eligible: a dry run without lookups.
    let probe = dir.path().join("probe");
    let nobody = sim(SimConfig::default());
    ran(
        &mut run_cmd(&input, &probe, &nobody, &["--dry-run", "--no-reconcile"]),
        &probe,
        0,
    );
    assert_eq!(lookups(&nobody), 0, "--no-reconcile asks nothing");
    let serials = eligible_serials(&probe);
    assert!(serials.len() >= 10, "{serials:?}");
    // Devices and licenses alike.
    let eligible = summary(&probe)["eligible"].as_u64().unwrap();
    let by_hand: Vec<String> = serials[..5].to_vec();
    let sim = sim(SimConfig {
        preactivated: by_hand
            .iter()
            .map(|s| PortalRecord {
                identity: s.clone(),
                is_license: false,
                contract_id: String::new(),
                activated_at: "2026-11-01T09:00:00Z".parse().unwrap(),
            })
            .collect(),
        ..SimConfig::default()
    });
    let out = dir.path().join("out");
    let state = dir.path().join("j.sqlite");
    let state_arg = state.to_string_lossy().into_owned();
    // The sample's deactivations are before the portal work.
    ran(
        &mut run_cmd(&input, &out, &sim, &["--state", &state_arg]),
        &out,
        0,
    );
    let res = results(&out);
    for r in res.iter().filter(|r| by_hand.contains(&r["serial_number"])) {
        assert_eq!(r["state"], "active");
        assert_eq!(r["source"], "vendor_record");
        assert!(r["confirmation_id"].starts_with("PORTAL-"), "{r:?}");
    }
    let first = sim.stats();
    assert_eq!(first.activations, eligible - by_hand.len() as u64);

    // A new deactivation of every device, after the portal work: paid once.
    let again = redeactivated(&input, dir.path(), "2026-11-20");
    let out2 = dir.path().join("out2");
    ran(
        &mut run_cmd(&again, &out2, &sim, &["--state", &state_arg]),
        &out2,
        0,
    );
    let second = sim.stats();
    assert_eq!(
        second.activations - first.activations,
        eligible,
        "each device once for its new deactivation"
    );
    assert_eq!(second.duplicate_activations, 0);
    // The same new event from another journal: the vendor holds it now.
    let out3 = dir.path().join("out3");
    let other = dir
        .path()
        .join("other.sqlite")
        .to_string_lossy()
        .into_owned();
    ran(
        &mut run_cmd(&again, &out3, &sim, &["--state", &other]),
        &out3,
        0,
    );
    assert_eq!(sim.stats().activations, second.activations);
    assert_eq!(sim.stats().duplicate_activations, 0);
}

on_both!(
    a_dry_run_looks_up_and_says_what_it_would_buy: a_dry_run_looks_up_on_sqlite,
    a_dry_run_looks_up_on_postgres
);

/// The dry run's history is `store`'s (a journal, or a ledger).
fn a_dry_run_looks_up_and_says_what_it_would_buy(store: Store) {
    let sim = sim(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let input = head(dir.path(), 60);
    let out = dir.path().join("out");
    let a = dir.path().join("a.sqlite").to_string_lossy().into_owned();
    ran(&mut run_cmd(&input, &out, &sim, &["--state", &a]), &out, 0);
    let bought = sim.stats().activations;
    let sent = reactivations(&sim);
    let dry = dir.path().join("dry");
    let b = dir.path().join("b.sqlite").to_string_lossy().into_owned();
    let output = ran(
        &mut run_cmd(&input, &dry, &sim, &store.shared_args(&b, &["--dry-run"])),
        &dry,
        0,
    );
    assert_eq!(reactivations(&sim), sent, "a dry run buys nothing");
    let s = summary(&dry);
    assert_eq!(s["outcome"], "dry_run");
    assert_eq!(s["items"]["vendor_held"].as_u64(), Some(bought));
    assert_eq!(s["items"]["to_buy"], 0);
    assert_eq!(s["vendor_lookups"]["finished"], true);
    assert!(output.status.success());
}

/// A dry run on a new journal writes nothing into it, yet its
/// `results.csv` shows what the vendor holds exactly as the run that pays
/// shows it, and its counts are those of the file.
#[test]
fn a_dry_run_on_a_new_journal_writes_nothing_and_shows_what_the_vendor_holds() {
    let sim = sim(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    // Another journal bought the first 30 rows' eligible items.
    let first = head(dir.path(), 30);
    let bought_dir = dir.path().join("bought");
    ran(
        &mut run_cmd(&first, &bought_dir, &sim, &["--state", &path("a.sqlite")]),
        &bought_dir,
        0,
    );
    let held = sim.stats().activations;
    assert!(held > 5, "{held}");
    let input = head(dir.path(), 80);

    // The dry run, on a journal of its own in a folder of its own.
    std::fs::create_dir(dir.path().join("dry-state")).unwrap();
    let dry_journal = path("dry-state/b.sqlite");
    let dry = dir.path().join("dry");
    let sent = reactivations(&sim);
    ran(
        &mut run_cmd(&input, &dry, &sim, &["--state", &dry_journal, "--dry-run"]),
        &dry,
        0,
    );
    assert_eq!(reactivations(&sim), sent, "a dry run buys nothing");
    let items: i64 = rusqlite::Connection::open(&dry_journal)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(items, 0, "the dry run planned nothing into its journal");
    let beside: Vec<String> = std::fs::read_dir(dir.path().join("dry-state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        beside.iter().all(|f| !f.contains("audit")),
        "no audit log: {beside:?}"
    );

    // The run that pays, on another new journal: it buys what is not held.
    let paid = dir.path().join("paid");
    ran(
        &mut run_cmd(&input, &paid, &sim, &["--state", &path("c.sqlite")]),
        &paid,
        0,
    );
    let (d, p) = (summary(&dry), summary(&paid));
    assert_eq!(d["items"]["vendor_held"].as_u64(), Some(held));
    assert_eq!(d["items"]["vendor_held"], p["items"]["vendor_held"]);
    assert_eq!(d["vendor_lookups"], {
        let mut v = p["vendor_lookups"].clone();
        v["requests"] = d["vendor_lookups"]["requests"].clone();
        v
    });
    assert_eq!(
        d["items"]["to_buy"].as_u64(),
        Some(sim.stats().activations - held),
        "the dry run would buy what the paying run bought"
    );
    assert_eq!(d["quotes"], p["quotes"], "both quote what is not held");

    // Row by row: what the vendor holds is the same line in both; every
    // other eligible item is planned in one and bought in the other.
    let (dry_rows, paid_rows) = (results(&dry), results(&paid));
    assert_eq!(dry_rows.len(), paid_rows.len());
    let mut vendor_rows = 0;
    for (d, p) in dry_rows.iter().zip(&paid_rows) {
        match d["state"].as_str() {
            "planned" => {
                assert_eq!(
                    (p["state"].as_str(), p["source"].as_str()),
                    ("active", "this_run")
                )
            }
            "manual_review" => assert_eq!(p["state"], "escalated"),
            _ => {
                assert_eq!(d, p, "row {}", d["row"]);
                vendor_rows += usize::from(d["source"] == "vendor_record");
            }
        }
    }
    assert_eq!(vendor_rows as u64, held);
    // summary.json counts exactly what results.csv holds, by site too
    // (the dry run's rows written as the plan went, then patched).
    for out in [&dry, &paid] {
        assert_eq!(
            crate::summary_by_site(&summary(out)),
            crate::results_by_site(&out.join("results.csv")),
            "{}",
            out.display()
        );
    }
    let mut by_state = std::collections::BTreeMap::<String, u64>::new();
    let mut by_contract = std::collections::BTreeMap::<(String, String), u64>::new();
    for r in &dry_rows {
        *by_state.entry(r["state"].clone()).or_default() += 1;
        if !r["contract_id"].is_empty() {
            *by_contract
                .entry((r["contract_id"].clone(), r["state"].clone()))
                .or_default() += 1;
        }
    }
    for (state, n) in d["items_by_state"].as_object().unwrap() {
        assert_eq!(
            n.as_u64(),
            Some(by_state.get(state).copied().unwrap_or(0)),
            "{state}"
        );
    }
    let mut summed = std::collections::BTreeMap::new();
    for (contract, states) in d["by_contract"].as_object().unwrap() {
        for (state, n) in states.as_object().unwrap() {
            assert_ne!(n.as_u64(), Some(0), "no empty count: {contract} {state}");
            summed.insert((contract.clone(), state.clone()), n.as_u64().unwrap());
        }
    }
    assert_eq!(summed, by_contract);
}

on_both!(
    sigkill_during_the_lookups_then_a_resume_never_pays_twice:
        sigkill_during_the_lookups_on_sqlite,
    sigkill_during_the_lookups_on_postgres
);

/// The second history is `store`'s (a journal, or a ledger).
fn sigkill_during_the_lookups_then_a_resume_never_pays_twice(store: Store) {
    let sim = sim(SimConfig {
        latency_ms: Some((40, 60)),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    // Bought once from one journal...
    let first = dir.path().join("first");
    let a = dir.path().join("a.sqlite").to_string_lossy().into_owned();
    ran(
        &mut run_cmd(&sample("inventory.csv"), &first, &sim, &["--state", &a]),
        &first,
        0,
    );
    let bought = sim.stats().activations;
    // ...then another journal is killed while it looks up, and run again.
    let out = dir.path().join("out");
    let b = dir.path().join("b.sqlite").to_string_lossy().into_owned();
    for wait in [150, 400] {
        let mut child = run_child(
            &sample("inventory.csv"),
            &out,
            &sim,
            &store.shared_args(&b, &["--concurrency", "1", "--batch-size", "50"]),
        );
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    ran(
        &mut run_cmd(
            &sample("inventory.csv"),
            &out,
            &sim,
            &store.shared_args(&b, &[]),
        ),
        &out,
        0,
    );
    assert_complete(&out, sample_rows());
    assert_eq!(sim.stats().activations, bought);
    assert_eq!(sim.stats().duplicate_activations, 0);
}

#[test]
fn an_inventory_on_stdin_is_quoted_again_without_what_is_not_bought() {
    let sim = sim(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let input = head(dir.path(), 40);
    let state = dir.path().join("j.sqlite").to_string_lossy().into_owned();
    let first = dir.path().join("first");
    ran(
        &mut run_cmd(&input, &first, &sim, &["--state", &state]),
        &first,
        0,
    );
    let bought = sim.stats().activations;
    assert!(bought > 0);
    // The same export piped in: read again for the quote of what it buys.
    let second = dir.path().join("second");
    let mut cmd = run_cmd(Path::new("-"), &second, &sim, &["--state", &state]);
    cmd.write_stdin(std::fs::read(&input).unwrap());
    ran(&mut cmd, &second, 0);
    let s = summary(&second);
    assert_eq!(s["items"]["to_buy"], 0);
    assert_eq!(s["items"]["earlier_runs"].as_u64(), Some(bought));
    assert!(
        s["quotes"].as_object().unwrap().is_empty(),
        "{}",
        s["quotes"]
    );
    assert_eq!(sim.stats().activations, bought);
}
