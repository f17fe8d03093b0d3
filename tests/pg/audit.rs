//! `refleet audit export` and `refleet audit verify --state URL` on a
//! PostgreSQL ledger: the chain the database holds, as the JSONL every
//! journal's log is, checked by the same verifier.

use refleet::submit::pg::PgLedger;
use serde_json::{Map, Value};

use super::Pg;
use crate::refleet;

/// A ledger whose chain holds `n` records after its header; returns its id.
fn ledger_with_records(pg: &Pg, n: usize) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut ledger = PgLedger::connect(&pg.url(), "writer").await.unwrap();
        let records = (0..n)
            .map(|i| {
                let mut r = Map::new();
                r.insert("kind".into(), "activations".into());
                r.insert("n".into(), Value::from(i));
                r
            })
            .collect();
        ledger.append_audit(records).await.unwrap();
        ledger.ledger_id().await.unwrap()
    })
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_ledgers_chain_is_exported_as_a_log_and_verified_in_place() {
    let Some(pg) = Pg::start_or_skip("a_ledgers_chain_is_exported_as_a_log_and_verified_in_place")
    else {
        return;
    };
    let id = ledger_with_records(&pg, 25);
    // A password in the URL is never repeated (the test cluster trusts
    // loopback, so any password is accepted).
    let url = pg.url().replace("postgres@", "postgres:s3cret-pw@");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");

    let out = refleet()
        .args(["audit", "export", "--state", &url, "--out"])
        .arg(&log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("26 audit records of ledger 127.0.0.1:"),
        "{stderr}"
    );
    let verified = refleet::audit::verify(&log).unwrap();
    assert_eq!(verified.records, 26, "the header and 25 records");
    assert_eq!(verified.journal_id.as_deref(), Some(id.as_str()));
    // The same, on standard output, from REFLEET_STATE.
    let piped = refleet()
        .args(["audit", "export", "--quiet"])
        .env("REFLEET_STATE", &url)
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(piped.stdout, std::fs::read(&log).unwrap());

    let ok = refleet()
        .args(["audit", "verify", "--state", &url])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        said.contains(&format!("26 records, chain intact, written by ledger {id}")),
        "{said}"
    );

    // A record changed in the database: verify names it and fails.
    pg.psql("UPDATE audit SET line = replace(line, '\"n\":7', '\"n\":70') WHERE seq = 9");
    let broken = refleet()
        .args(["audit", "verify", "--state", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&broken.stderr);
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(text.contains("record 9"), "{text}");
    for o in [
        &out.stdout,
        &out.stderr,
        &ok.stdout,
        &ok.stderr,
        &broken.stderr,
    ] {
        assert!(
            !String::from_utf8_lossy(o).contains("s3cret"),
            "the password is never shown"
        );
    }
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_database_without_a_ledger_is_refused_and_left_as_it_was() {
    let Some(pg) = Pg::start_or_skip("a_database_without_a_ledger_is_refused_and_left_as_it_was")
    else {
        return;
    };
    let out = refleet()
        .args(["audit", "export", "--state", &pg.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("holds no refleet ledger"), "{text}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
        "0",
        "no table was created"
    );
    // `status` reads a ledger: it refuses this one too, without the
    // password, and leaves it as it was.
    let url = pg.url().replace("postgres@", "postgres:s3cret-pw@");
    let run = refleet()
        .args(["status", "--state", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{text}");
    assert!(text.contains("holds no refleet ledger"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
        "0",
        "no table was created"
    );
}
