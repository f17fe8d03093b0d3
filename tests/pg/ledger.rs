//! The PostgreSQL ledger's sharing guarantees (src/submit/pg/) against a
//! real server: several runners, each its own connection, at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use refleet::api::{CoverageWire, ItemType};
use refleet::submit::journal::{ItemState, PlannedItem};
use refleet::submit::pg::{LedgerError, PgLedger};
use serde_json::{Map, Value};

use super::Pg;

/// Item `i` of a plan spread over `groups` (contract, region) groups.
fn item(i: usize, groups: usize) -> PlannedItem {
    let serial = format!("0004F2{i:06X}");
    let contract = format!("C-{:05}", i % groups);
    PlannedItem {
        event_key: format!("{serial}|{contract}|2026-11-01"),
        item_type: ItemType::Device,
        serial_number: Some(serial),
        mac_address: None,
        model: Some("CCX 500".into()),
        license_id: None,
        bound_serial: None,
        contract_id: contract,
        region: ["AMER", "EMEA", "APAC"][i % 3].into(),
        country: "US".into(),
        deactivated_at: "2026-11-01".into(),
        coverage: CoverageWire::Standard,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn runners_starting_together_create_the_schema_once_and_a_newer_one_is_refused() {
    let Some(pg) = Pg::start_or_skip("runners_starting_together_create_the_schema_once") else {
        return;
    };
    let url = pg.url();
    runtime().block_on(async {
        let connect = |name: &'static str| {
            let url = url.clone();
            tokio::spawn(async move { PgLedger::connect(&url, name).await.map(|_| ()) })
        };
        let started: Vec<_> = ["a", "b", "c", "d"].into_iter().map(connect).collect();
        for s in started {
            s.await.unwrap().expect("every runner connects");
        }
    });
    assert_eq!(
        pg.psql("SELECT value FROM refleet_meta WHERE key = 'schema_version'"),
        "2"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM audit"), "1", "one header");
    pg.psql("UPDATE refleet_meta SET value = '3' WHERE key = 'schema_version'");
    let err = runtime()
        .block_on(PgLedger::connect(&url, "e"))
        .err()
        .expect("refused");
    assert!(matches!(err, LedgerError::Newer { found: 3, .. }), "{err}");
    assert!(
        err.to_string().contains("newer than this refleet knows"),
        "{err}"
    );
}

/// A ledger of schema version 1 is brought to version 2 by the first
/// runner, its items and batches kept: a closed batch is an accepted one,
/// and a run's columns are there to use.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_version_1_ledger_is_migrated_and_keeps_what_it_held() {
    let Some(pg) = Pg::start_or_skip("a_version_1_ledger_is_migrated") else {
        return;
    };
    pg.psql(refleet::submit::pg::SCHEMA_V1);
    pg.psql(
        "CREATE TABLE refleet_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO refleet_meta VALUES ('schema_version', '1'), ('ledger_id', '00000000000000aa');
         INSERT INTO audit_head VALUES (TRUE, 0, repeat('0', 64));
         INSERT INTO items (event_key, item_type, contract_id, region, country, deactivated_at,
                            coverage, state, batch_id, batch_pos)
         VALUES ('A|C-1|2026-11-01', 'device', 'C-1', 'AMER', 'US', '2026-11-01', 'standard',
                 'active', 1, 0),
                ('B|C-1|2026-11-01', 'device', 'C-1', 'AMER', 'US', '2026-11-01', 'standard',
                 'planned', NULL, NULL);
         INSERT INTO batches (idempotency_key, contract_id, region, quote_id, coverage, open,
                              runner, lease_until)
         VALUES ('k1', 'C-1', 'AMER', 'Q-1', 'standard', FALSE, 'old', now())",
    );
    runtime()
        .block_on(PgLedger::connect(&pg.url(), "new"))
        .expect("migrated");
    assert_eq!(
        pg.psql("SELECT value FROM refleet_meta WHERE key = 'schema_version'"),
        "2"
    );
    assert_eq!(
        pg.psql("SELECT string_agg(state || ':' || audited, ',' ORDER BY event_key) FROM items"),
        "active:false,planned:false"
    );
    assert_eq!(
        pg.psql("SELECT state FROM batches WHERE id = 1"),
        "accepted"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM runs"), "0");
}

/// Three runners claim batches of one plan as fast as they can: every item
/// is in exactly one batch, of one contract and region, and each batch's
/// key is the digest of its items.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn three_runners_claim_every_item_exactly_once() {
    let Some(pg) = Pg::start_or_skip("three_runners_claim_every_item_exactly_once") else {
        return;
    };
    let url = pg.url();
    // 22 contracts and 3 regions: each contract in every region, so a
    // batch that mixed regions would show.
    let items: Vec<PlannedItem> = (0..5_000).map(|i| item(i, 22)).collect();
    let region_of: BTreeMap<String, String> = items
        .iter()
        .map(|i| (i.event_key.clone(), i.region.clone()))
        .collect();
    let batches = runtime().block_on(async {
        let planner = PgLedger::connect(&url, "planner").await.unwrap();
        assert_eq!(
            planner
                .plan_items(&items, ItemState::Planned)
                .await
                .unwrap(),
            5_000
        );
        // Planned again (an overlapping export): nothing new.
        assert_eq!(
            planner
                .plan_items(&items[..100], ItemState::Planned)
                .await
                .unwrap(),
            0
        );
        let mut runners = Vec::new();
        for name in ["r1", "r2", "r3"] {
            let url = url.clone();
            runners.push(tokio::spawn(async move {
                let mut ledger = PgLedger::connect(&url, name).await.unwrap();
                let mut got = Vec::new();
                while let Some(c) = ledger
                    .claim_batch(100, Duration::from_secs(60))
                    .await
                    .unwrap()
                {
                    assert!(!c.taken_over);
                    got.push(c.batch);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for r in runners {
            all.extend(r.await.unwrap());
        }
        let counts = planner.counts().await.unwrap();
        assert_eq!(counts, vec![(ItemState::Submitted, 5_000)]);
        all
    });
    let mut seen = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for b in &batches {
        assert!(keys.insert(b.idempotency_key.clone()), "keys are distinct");
        assert_eq!(
            b.idempotency_key,
            refleet::api::batch_key(b.request.items.iter().map(|i| i.item_key.as_str()))
        );
        assert!(b.request.items.len() <= 100);
        for i in &b.request.items {
            assert!(i.item_key.contains(&b.request.contract_id));
            assert_eq!(region_of[&i.item_key], b.request.region);
            assert!(seen.insert(i.item_key.clone()), "{} twice", i.item_key);
        }
    }
    assert_eq!(seen.len(), 5_000);
}

/// A runner stops (dies, hangs, loses its network) holding batches: while
/// its lease runs no one takes them; after, another runner gets each of
/// them, with the same items and key, and the stopped runner can neither
/// renew nor close them any more. A runner that renews its lease keeps its
/// batch. Leases of seconds, so a slow machine does not make the test lie.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_dead_runners_batches_are_taken_over_under_the_same_key() {
    let Some(pg) = Pg::start_or_skip("a_dead_runners_batches_are_taken_over") else {
        return;
    };
    let url = pg.url();
    runtime().block_on(async {
        let mut stopped = PgLedger::connect(&url, "stopped").await.unwrap();
        let items: Vec<PlannedItem> = (0..30).map(|i| item(i, 1)).collect();
        stopped
            .plan_items(&items, ItemState::Planned)
            .await
            .unwrap();
        let lease = Duration::from_secs(3);
        // Before the claims: a lease starts on the server during its
        // claim, so no lease can run out before this plus its length
        // (measured after the claims, it would miss their round trips).
        let claimed = Instant::now();
        let a = stopped.claim_batch(10, lease).await.unwrap().unwrap().batch;
        let b = stopped.claim_batch(10, lease).await.unwrap().unwrap().batch;
        let mut alive = PgLedger::connect(&url, "alive").await.unwrap();
        let c = alive.claim_batch(10, lease).await.unwrap().unwrap();
        assert!(
            !c.taken_over,
            "the last planned items, not the stopped runner's"
        );
        let mut survivor = PgLedger::connect(&url, "survivor").await.unwrap();
        let mut taken = BTreeMap::new();
        while taken.len() < 2 {
            assert!(
                claimed.elapsed() < Duration::from_secs(20),
                "taken over in time"
            );
            alive.renew_leases(lease).await.unwrap();
            match survivor
                .claim_batch(10, Duration::from_secs(60))
                .await
                .unwrap()
            {
                Some(t) => {
                    assert!(
                        claimed.elapsed() >= lease,
                        "taken at {:?}, before the lease ran out",
                        claimed.elapsed()
                    );
                    assert!(t.taken_over);
                    taken.insert(t.batch.id, t.batch);
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        for original in [&a, &b] {
            let again = &taken[&original.id];
            assert_eq!(again.idempotency_key, original.idempotency_key);
            assert_eq!(again.request, original.request);
        }
        assert!(!taken.contains_key(&c.batch.id), "a renewed lease is kept");
        assert_eq!(alive.renew_leases(lease).await.unwrap(), 1);
        // The stopped runner comes back: its batches are not its own now.
        assert_eq!(stopped.renew_leases(lease).await.unwrap(), 0);
        let err = stopped
            .close_batch(a.id, &[ItemState::Rejected; 10])
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Lost(id) if id == a.id), "{err}");
        // States must be one per item.
        let err = alive
            .close_batch(c.batch.id, &[ItemState::Active; 9])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LedgerError::Mismatch {
                    held: 10,
                    given: 9,
                    ..
                }
            ),
            "{err}"
        );
        // Closing ends the lease: nothing is taken over any more.
        alive
            .close_batch(c.batch.id, &[ItemState::Active; 10])
            .await
            .unwrap();
        for id in taken.keys() {
            survivor
                .close_batch(*id, &[ItemState::Active; 10])
                .await
                .unwrap();
        }
        assert!(survivor.claim_batch(10, lease).await.unwrap().is_none());
        assert_eq!(
            survivor.counts().await.unwrap(),
            vec![(ItemState::Active, 30)]
        );
    });
}

/// Three runners take from one quota of 40 requests/s with bursts of 5 as
/// fast as they can for 2 s: together never more than the quota allows,
/// and most of it used. A pause (a 429 one runner saw) stops them all.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn runners_share_one_vendor_quota() {
    let Some(pg) = Pg::start_or_skip("runners_share_one_vendor_quota") else {
        return;
    };
    let url = pg.url();
    let (rate, burst) = (40.0, 5);
    let grants = runtime().block_on(async {
        let start = Instant::now();
        let mut runners = Vec::new();
        for name in ["q1", "q2", "q3"] {
            let url = url.clone();
            runners.push(tokio::spawn(async move {
                let mut ledger = PgLedger::connect(&url, name).await.unwrap();
                let mut at = Vec::new();
                while start.elapsed() < Duration::from_secs(2) {
                    match ledger.take_quota("acct", rate, burst, 1).await.unwrap() {
                        None => at.push(start.elapsed()),
                        Some(wait) => tokio::time::sleep(wait).await,
                    }
                }
                at
            }));
        }
        let mut all = Vec::new();
        for r in runners {
            all.extend(r.await.unwrap());
        }
        all.sort();
        all
    });
    // Grants are timed here, after their answer came back: a loaded
    // machine shifts a few of them by tens of milliseconds.
    const SLACK: f64 = 4.0;
    let span = grants.last().unwrap().as_secs_f64();
    let allowed = f64::from(burst) + rate * span;
    assert!(
        grants.len() as f64 <= allowed + SLACK,
        "{} grants in {span:.2} s, at most {allowed:.1} allowed",
        grants.len()
    );
    assert!(
        grants.len() as f64 >= 0.8 * rate * 2.0,
        "{} grants",
        grants.len()
    );
    // Any one second holds at most rate + burst grants.
    for (i, t) in grants.iter().enumerate() {
        let within = grants[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(1))
            .count();
        assert!(
            within as f64 <= rate + f64::from(burst) + SLACK,
            "{within} in a second"
        );
    }

    runtime().block_on(async {
        let a = PgLedger::connect(&url, "q1").await.unwrap();
        let mut b = PgLedger::connect(&url, "q2").await.unwrap();
        a.pause_quota("acct", rate, burst, Duration::from_secs(1))
            .await
            .unwrap();
        let wait = b.take_quota("acct", rate, burst, 1).await.unwrap();
        let wait = wait.expect("the other runner waits too");
        assert!(wait >= Duration::from_millis(900), "{wait:?}");
        // More at once than a burst allows is refused, not waited for.
        let err = b
            .take_quota("acct", rate, burst, burst + 1)
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Quota { .. }), "{err}");
        // A rate of nothing would shut the quota for good: refused.
        let err = a
            .pause_quota("acct", 0.0, burst, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Quota { .. }), "{err}");
    });
}

/// Three runners append to the audit chain at once: one chain, every
/// record once, and the export verifies as a journal's log does.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn concurrent_runners_extend_one_audit_chain() {
    let Some(pg) = Pg::start_or_skip("concurrent_runners_extend_one_audit_chain") else {
        return;
    };
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let id = runtime().block_on(async {
        let mut runners = Vec::new();
        for name in ["a1", "a2", "a3"] {
            let url = url.clone();
            runners.push(tokio::spawn(async move {
                let mut ledger = PgLedger::connect(&url, name).await.unwrap();
                for chunk in 0..10 {
                    let records = (0..5)
                        .map(|i| {
                            let mut r = Map::new();
                            r.insert("kind".into(), "activations".into());
                            r.insert("runner".into(), Value::from(name));
                            r.insert("n".into(), Value::from(chunk * 5 + i));
                            r
                        })
                        .collect();
                    ledger.append_audit(records).await.unwrap();
                }
            }));
        }
        for r in runners {
            r.await.unwrap();
        }
        let mut ledger = PgLedger::connect(&url, "exporter").await.unwrap();
        let mut file = std::fs::File::create(&log).unwrap();
        assert_eq!(ledger.export_audit(&mut file).await.unwrap(), 151);
        ledger.ledger_id().await.unwrap()
    });
    let verified = refleet::audit::verify(&log).unwrap();
    assert_eq!(verified.records, 151);
    assert_eq!(verified.journal_id.as_deref(), Some(id.as_str()));
    let arc = Arc::new(std::fs::read_to_string(&log).unwrap());
    for name in ["a1", "a2", "a3"] {
        assert_eq!(arc.matches(&format!("\"runner\":\"{name}\"")).count(), 50);
    }
}

/// The server restarts under a runner: its next operation fails as a lost
/// connection, it connects again and goes on, nothing lost. A server that
/// does not come back is given up on after the wait, not forever.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_runner_reconnects_after_a_server_restart_and_gives_up_after_its_wait() {
    let Some(pg) = Pg::start_or_skip("a_runner_reconnects_after_a_server_restart") else {
        return;
    };
    let url = pg.url();
    let rt = runtime();
    let mut ledger = rt.block_on(async {
        let ledger = PgLedger::connect(&url, "r").await.unwrap();
        let items: Vec<PlannedItem> = (0..20).map(|i| item(i, 2)).collect();
        ledger.plan_items(&items, ItemState::Planned).await.unwrap();
        ledger
    });
    pg.restart();
    rt.block_on(async {
        let err = ledger
            .claim_batch(5, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(err.is_connection_lost(), "{err}");
        assert!(ledger.reconnect(Duration::from_secs(20)).await.unwrap());
        let claimed = ledger
            .claim_batch(5, Duration::from_secs(60))
            .await
            .unwrap();
        // One (contract, region) group: up to 5 of its items.
        let n = claimed.unwrap().batch.request.items.len() as u64;
        assert!((1..=5).contains(&n), "{n}");
        assert_eq!(
            ledger.counts().await.unwrap(),
            vec![(ItemState::Planned, 20 - n), (ItemState::Submitted, n)]
        );
    });
    pg.stop();
    rt.block_on(async {
        let err = ledger.counts().await.unwrap_err();
        assert!(err.is_connection_lost(), "{err}");
        let started = Instant::now();
        let err = ledger.reconnect(Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, LedgerError::Unreachable { .. }), "{err}");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(3), "bounded: {waited:?}");
    });
    pg.start();
}

/// A lease that ran out is not renewed, even before another runner took
/// the batch over: the runner that let it lapse may have been cut off, and
/// the batch may be on its way to another runner already.
#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_lapsed_lease_is_not_renewed_even_before_a_takeover() {
    let Some(pg) = Pg::start_or_skip("a_lapsed_lease_is_not_renewed") else {
        return;
    };
    let url = pg.url();
    runtime().block_on(async {
        let mut late = PgLedger::connect(&url, "late").await.unwrap();
        let items: Vec<PlannedItem> = (0..5).map(|i| item(i * 3, 1)).collect();
        late.plan_items(&items, ItemState::Planned).await.unwrap();
        let lease = Duration::from_millis(500);
        let held = late.claim_batch(5, lease).await.unwrap().unwrap().batch;
        assert_eq!(late.renew_leases(lease).await.unwrap(), 1, "still running");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(late.renew_leases(lease).await.unwrap(), 0, "lapsed");
        let mut other = PgLedger::connect(&url, "other").await.unwrap();
        let taken = other.claim_batch(5, lease).await.unwrap().unwrap();
        assert!(taken.taken_over);
        assert_eq!(taken.batch.idempotency_key, held.idempotency_key);
    });
}
