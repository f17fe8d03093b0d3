//! Tests of the audit hash chain: building, exporting and verifying it.

use super::*;

const ID: &str = "0123456789abcdef";

fn rec(i: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), "activation".into());
    m.insert("item_key".into(), format!("0004F2{i:06X}").into());
    m.insert("confirmation_id".into(), format!("CNF-{i}").into());
    m
}

fn binding(id: &str) -> Binding {
    Binding {
        journal_id: id.into(),
        file: None,
        chain: ChainState::default(),
    }
}

/// Opens the log of `b` in `dir` and appends `n` records; returns the
/// binding the journal would then record.
fn write(dir: &Path, b: &Binding, n: std::ops::Range<u64>) -> Binding {
    let Opened { mut log, adopted } = AuditLog::open(dir, b, Map::new()).unwrap();
    assert!(adopted.is_empty());
    for i in n {
        log.append(rec(i)).unwrap();
    }
    Binding {
        journal_id: b.journal_id.clone(),
        file: Some(log.file_name().to_string()),
        chain: log.sync().unwrap(),
    }
}

fn log_of(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &binding(ID), 0..n);
    let path = dir.path().join(DEFAULT_FILE);
    (dir, path)
}

#[test]
fn an_intact_chain_verifies_and_names_its_journal() {
    let (_d, path) = log_of(5);
    assert_eq!(
        verify(&path).unwrap(),
        Verified {
            records: 6,
            journal_id: Some(ID.into())
        }
    );
}

/// Every byte of every record, changed, breaks exactly that record.
#[test]
fn tampering_with_any_byte_names_its_record() {
    let (_d, path) = log_of(4);
    let original = std::fs::read(&path).unwrap();
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            original
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    for pos in 0..original.len() {
        let record = starts.iter().filter(|s| **s <= pos).count() as u64;
        for replacement in [b'x', b'0', b' '] {
            if original[pos] == replacement {
                continue;
            }
            let mut bytes = original.clone();
            bytes[pos] = replacement;
            std::fs::write(&path, &bytes).unwrap();
            match verify(&path) {
                Err(AuditError::Broken { record: r, .. }) => {
                    assert_eq!(r, record, "byte {pos} -> {replacement}")
                }
                other => panic!("byte {pos} -> {replacement}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_crash_after_writing_adopts_the_unrecorded_records_and_cuts_only_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = write(dir.path(), &binding(ID), 0..2);
    // Two more records synced, then a crash before the journal recorded
    // them, in the middle of writing a third.
    let Opened { mut log, .. } = AuditLog::open(dir.path(), &recorded, Map::new()).unwrap();
    log.append(rec(2)).unwrap();
    log.append(rec(3)).unwrap();
    let synced = log.sync().unwrap();
    log.append(rec(4)).unwrap();
    drop(log);
    let path = dir.path().join(DEFAULT_FILE);
    let full = std::fs::read(&path).unwrap();
    let torn = &full[..full.len() - 9];
    std::fs::write(&path, torn).unwrap();

    let located = locate(dir.path(), &recorded).unwrap();
    assert_eq!((located.exists, located.unrecorded), (true, 2));
    let Opened { mut log, adopted } = AuditLog::open(dir.path(), &recorded, Map::new()).unwrap();
    let keys: Vec<&str> = adopted
        .iter()
        .map(|r| r["item_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["0004F2000002", "0004F2000003"]);
    assert_eq!(log.sync().unwrap(), synced);
    // Every synced byte is still there; only the torn line went.
    assert_eq!(std::fs::read(&path).unwrap(), &full[..synced.len as usize]);
    log.append(rec(4)).unwrap();
    log.sync().unwrap();
    assert_eq!(verify(&path).unwrap().records, 6);
}

#[test]
fn a_complete_line_that_does_not_continue_the_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = write(dir.path(), &binding(ID), 0..2);
    let path = dir.path().join(DEFAULT_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().nth(1).unwrap().to_string();
    text.push_str(&first);
    text.push('\n');
    std::fs::write(&path, &text).unwrap();
    for result in [
        locate(dir.path(), &recorded).map(|_| ()),
        AuditLog::open(dir.path(), &recorded, Map::new()).map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(AuditError::Broken { record: 4, .. })),
            "{result:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn journals_sharing_a_folder_each_write_their_own_log() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), &binding(ID), 0..3);
    let before = std::fs::read(dir.path().join(DEFAULT_FILE)).unwrap();
    // A second journal (a new night, or the first one deleted and
    // started again) meets the first one's log.
    let other = "fedcba9876543210";
    let second = write(dir.path(), &binding(other), 10..12);
    assert_eq!(second.file.as_deref(), Some(own_file(other).as_str()));
    assert_eq!(
        std::fs::read(dir.path().join(DEFAULT_FILE)).unwrap(),
        before
    );
    assert_eq!(
        verify(&dir.path().join(own_file(other))).unwrap(),
        Verified {
            records: 3,
            journal_id: Some(other.into())
        }
    );
    // Each goes on in its own file.
    let first = write(dir.path(), &first, 3..4);
    assert_eq!(first.file.as_deref(), Some(DEFAULT_FILE));
    assert_eq!(verify(&dir.path().join(DEFAULT_FILE)).unwrap().records, 5);
    // A log in the way that names no journal is not taken either.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join(DEFAULT_FILE), b"").unwrap();
    let b = write(empty.path(), &binding(ID), 0..1);
    assert_eq!(b.file, Some(own_file(ID)));
    assert_eq!(
        std::fs::metadata(empty.path().join(DEFAULT_FILE))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_log_that_is_not_what_the_journal_recorded_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = write(dir.path(), &binding(ID), 0..3);
    let path = dir.path().join(DEFAULT_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    // Cut at a record boundary: a valid chain, shorter than recorded.
    std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    assert!(matches!(
        locate(dir.path(), &recorded),
        Err(AuditError::Shorter { .. })
    ));
    assert!(verify(&path).is_ok());
    assert!(matches!(
        verify_against(&path, Some(&recorded)),
        Err(AuditError::Shorter { .. })
    ));

    // Another journal's log of the same length in its place.
    let elsewhere = tempfile::tempdir().unwrap();
    write(elsewhere.path(), &binding("fedcba9876543210"), 0..3);
    std::fs::copy(elsewhere.path().join(DEFAULT_FILE), &path).unwrap();
    for result in [
        locate(dir.path(), &recorded).map(|_| ()),
        verify_against(&path, Some(&recorded)).map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(AuditError::Foreign { .. })),
            "{result:?}"
        );
    }

    // The same journal's log, rewritten from the same point (a journal
    // restored from a backup would have done this before).
    let rewritten = tempfile::tempdir().unwrap();
    let mut b = write(rewritten.path(), &binding(ID), 0..1);
    b = write(rewritten.path(), &b, 7..9);
    assert_eq!(b.chain.records, recorded.chain.records);
    std::fs::copy(rewritten.path().join(DEFAULT_FILE), &path).unwrap();
    assert_eq!(b.chain.len, recorded.chain.len);
    assert!(matches!(
        locate(dir.path(), &recorded),
        Err(AuditError::Replaced { .. })
    ));
    assert!(matches!(
        verify_against(&path, Some(&recorded)),
        Err(AuditError::Replaced { .. })
    ));

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        locate(dir.path(), &recorded),
        Err(AuditError::Missing { records: 4, .. })
    ));
}

/// A journal from before ids recorded a length in `audit.jsonl`, whose
/// records have no header: its hash at that length ties it.
#[test]
fn a_log_from_before_headers_is_taken_by_its_recorded_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DEFAULT_FILE);
    let mut log = AuditLog::new(
        File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .unwrap(),
        &path,
        ChainState::default(),
    );
    log.append(rec(0)).unwrap();
    let legacy = Binding {
        journal_id: ID.into(),
        file: None,
        chain: log.sync().unwrap(),
    };
    drop(log);
    let next = write(dir.path(), &legacy, 1..2);
    assert_eq!(next.file.as_deref(), Some(DEFAULT_FILE));
    assert_eq!(
        verify_against(&path, Some(&next)).unwrap(),
        Verified {
            records: 2,
            journal_id: None
        }
    );
    let wrong = Binding {
        chain: ChainState {
            last_hash: GENESIS.into(),
            ..legacy.chain.clone()
        },
        ..legacy
    };
    assert!(matches!(
        locate(dir.path(), &wrong),
        Err(AuditError::Replaced { .. })
    ));
}
