//! Tests of opening a journal: a file that is no usable journal, the
//! `-wal` of a deleted one, and the lock that keeps a second process out.

use super::testing::{journal_of, sql};
use super::*;

#[test]
fn a_file_that_is_not_a_usable_journal_is_refused_and_moved_aside_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.sqlite");
    journal_of(&good, 3000);
    let bytes = std::fs::read(&good).unwrap();
    assert!(bytes.len() > 100_000, "{}", bytes.len());
    let at = |name: &str| dir.path().join(name);
    std::fs::write(at("empty.sqlite"), b"").unwrap();
    std::fs::write(at("text.sqlite"), b"serial_number,mac_address\n").unwrap();
    std::fs::write(at("cut.sqlite"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(at("newer.sqlite"), &bytes).unwrap();
    sql(
        &at("newer.sqlite"),
        &format!(
            "UPDATE meta SET value = '{}' WHERE key = 'schema_version'",
            SCHEMA_VERSION + 1
        ),
    );
    sql(
        &at("other.sqlite"),
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    sql(&at("bare.sqlite"), "PRAGMA user_version = 7;");
    for (name, problem) in [
        ("empty.sqlite", "is empty (0 bytes)"),
        ("text.sqlite", "is not an SQLite database"),
        ("cut.sqlite", "is cut off"),
        (
            "newer.sqlite",
            &format!(
                "another version of refleet (journal format `{}`",
                SCHEMA_VERSION + 1
            ),
        ),
        ("other.sqlite", "not a refleet journal"),
        ("bare.sqlite", "holds no journal"),
    ] {
        let path = at(name);
        let before = std::fs::read(&path).unwrap();
        for result in [
            Journal::open(&path).map(|_| ()),
            Journal::open_read_only(&path).map(|_| ()),
        ] {
            match result {
                Err(e @ JournalError::Unusable { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(problem), "{name}: {text}");
                    assert!(text.contains("--new-journal"), "{name}: {text}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(std::fs::read(&path).unwrap() == before, "{name} untouched");
        let (j, moved) = Journal::open_afresh_if_unusable(&path).unwrap();
        let moved = moved.unwrap();
        assert!(
            std::fs::read(&moved).unwrap() == before,
            "{name} kept aside"
        );
        assert!(moved
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{name}.unusable-")));
        assert!(j.counts().unwrap().is_empty());
    }
    // A usable journal is kept as it is.
    let (j, moved) = Journal::open_afresh_if_unusable(&good).unwrap();
    assert_eq!(moved, None);
    assert_eq!(j.counts().unwrap(), vec![(ItemState::Planned, 3000)]);
}

#[test]
fn a_new_journal_never_meets_a_deleted_ones_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    std::fs::write(
        dir.path().join("j.sqlite-wal"),
        b"frames of a deleted journal",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("j.sqlite.creating"),
        b"a creation cut short",
    )
    .unwrap();
    let j = Journal::open(&path).unwrap();
    assert!(j.counts().unwrap().is_empty());
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("j.sqlite.orphaned-") && n.ends_with("-wal")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("creating")), "{names:?}");
}

#[test]
fn a_second_process_is_refused_while_the_first_holds_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let first = Journal::open(&path).unwrap();
    match Journal::open(&path) {
        Err(JournalError::Busy(p)) => assert_eq!(p, path),
        other => panic!("expected Busy, got {:?}", other.map(|_| ())),
    }
    drop(first);
    Journal::open(&path).unwrap();
}
