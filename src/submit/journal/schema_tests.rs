//! Tests of bringing older journal formats up to the current one.

use super::schema::SCHEMA;
use super::testing::{journal_of, sql};
use super::*;

#[test]
fn a_journal_from_before_versions_gets_one_and_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    journal_of(&path, 3);
    let meta = |j: &Journal, key: &str| -> String {
        j.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .unwrap()
    };
    let id = meta(&Journal::open(&path).unwrap(), "journal_id");
    // As refleet a703a2c wrote it: no version, no id.
    sql(
        &path,
        "DELETE FROM meta WHERE key IN ('schema_version', 'journal_id', 'created_at')",
    );
    let j = Journal::open(&path).unwrap();
    assert_eq!(meta(&j, "schema_version"), SCHEMA_VERSION.to_string());
    let new_id = meta(&j, "journal_id");
    assert!(new_id.len() == 16 && new_id != id, "{new_id}");
    assert_eq!(j.counts().unwrap(), vec![(ItemState::Planned, 3)]);
}

#[test]
fn a_version_2_journal_is_rebuilt_without_losing_an_item_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    // The items table as version 2 had it; the other tables are the same.
    sql(
        &path,
        &format!(
            "CREATE TABLE items (event_key TEXT PRIMARY KEY, item_type TEXT NOT NULL,
                 serial_number TEXT, mac_address TEXT, model TEXT, license_id TEXT,
                 bound_serial TEXT, contract_id TEXT NOT NULL, region TEXT NOT NULL,
                 country TEXT NOT NULL, deactivated_at TEXT NOT NULL, coverage TEXT NOT NULL,
                 quote_id TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, reason TEXT,
                 batch_id INTEGER, batch_pos INTEGER, request_id TEXT, eta TEXT,
                 confirmation_id TEXT, features TEXT, activated_at TEXT, case_id TEXT,
                 audited INTEGER NOT NULL DEFAULT 0, first_run INTEGER NOT NULL,
                 source TEXT, last_run INTEGER, updated_at TEXT NOT NULL);
             {SCHEMA}
             INSERT INTO meta VALUES ('schema_version', '2'), ('journal_id', 'j2');
             INSERT INTO runs (id, started_at, input, as_of) VALUES (1, '2026-01-01T00:00:00Z', 'x', '2026-01-01');
             INSERT INTO batches (id, idem_key, contract_id, region, quote_id, coverage, state,
                 request_id, attempts, created_at, updated_at)
                 VALUES (1, 'rf-1', 'C1', 'AMER', 'Q1', 'standard', 'accepted', 'rq-1', 2,
                         '2026-01-01T00:00:01Z', '2026-01-01T00:00:01Z');
             INSERT INTO items VALUES ('A|C1|2026-01-01', 'device', 'A', NULL, 'M', NULL, NULL,
                 'C1', 'AMER', 'US', '2026-01-01', 'standard', 'Q1', 'active', NULL, 1, 0,
                 'rq-1', '2026-01-05', 'CNF-A', 'meetings;uc', '2026-01-05T00:00:00Z', NULL,
                 1, 1, NULL, 1, '2026-01-05T00:00:00Z');
             INSERT INTO items VALUES ('B|C1|2026-01-01', 'device', 'B', NULL, 'M', NULL, NULL,
                 'C1', 'AMER', 'US', '2026-01-01', 'standard', '', 'active', NULL, NULL, NULL,
                 'rq-v', NULL, 'CNF-B', 'meetings;conferencing;uc', '2026-01-04T00:00:00Z',
                 NULL, 0, 1, 'vendor', 1, '2026-01-05T00:00:00Z');"
        ),
    );
    let j = Journal::open(&path).unwrap();
    let version: String = j
        .conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "3");
    let a = j.record("A|C1|2026-01-01", 1).unwrap().unwrap();
    assert_eq!(
        (
            a.state.as_str(),
            a.request_id.as_deref(),
            a.features.as_deref()
        ),
        ("active", Some("rq-1"), Some("meetings;uc"))
    );
    assert_eq!(
        (a.attempts, a.confirmation_id.as_deref()),
        (2, Some("CNF-A"))
    );
    assert_eq!(a.source, Source::ThisRun);
    let b = j.record("B|C1|2026-01-01", 1).unwrap().unwrap();
    assert_eq!(
        (
            b.request_id.as_deref(),
            b.features.as_deref(),
            b.source.as_str()
        ),
        (
            Some("rq-v"),
            Some("meetings;conferencing;uc"),
            "vendor_record"
        )
    );
    // The unaudited vendor record is still to be written to the log.
    let unaudited = j.unaudited_items().unwrap();
    assert_eq!(unaudited.len(), 1);
    assert_eq!(unaudited[0].event_key, "B|C1|2026-01-01");
    assert!(unaudited[0].vendor_record);
    let kept: bool = j
        .conn
        .prepare("SELECT 1 FROM pragma_table_info('items') WHERE name = 'updated_at'")
        .unwrap()
        .exists([])
        .unwrap();
    assert!(!kept);
}
