//! Tests of the index on rows' keys: the row-by-row rule, and marks.

use super::testing::{keys, reference};
use super::*;
use crate::domain::Serial;

#[test]
fn a_rejected_row_does_not_shadow_a_later_one() {
    let rows = [
        keys(1, Some("0004F2000001"), Some("00:04:F2:00:00:01"), None),
        // MAC repeats row 1: rejected, so its new serial is not recorded...
        keys(2, Some("AAAA00000002"), Some("00:04:F2:00:00:01"), None),
        // ...and this row with that serial is the first valid occurrence.
        keys(3, Some("AAAA00000002"), Some("00:04:F2:00:00:03"), None),
        keys(4, Some("8GLONGSERIAL0001"), None, None),
        keys(5, Some("8GLONGSERIAL0001"), None, None),
        keys(6, None, None, Some("ABCD-EFGH-1234-5678")),
        keys(7, None, None, Some("abcdefgh12345678")),
    ];
    let mut index = DuplicateIndex::default();
    let got = index.check_chunk(&rows);
    assert_eq!(got, reference(&rows));
    assert_eq!(
        got.iter().map(|d| d.any()).collect::<Vec<_>>(),
        [false, true, false, false, true, false, true]
    );
}

#[test]
fn marks_follow_the_first_occurrence_of_a_serial() {
    let serial = |s: &str| Serial::parse(s, 1, 20).unwrap();
    let rows = [
        keys(1, Some("0004F2000001"), Some("00:04:F2:00:00:01"), None),
        keys(2, Some("8GLONGSERIAL0001"), None, None),
        // A duplicate: its mark must not be recorded.
        keys(3, Some("0004F2000003"), Some("00:04:F2:00:00:01"), None),
        keys(4, Some("LONGERSERIAL00000004"), None, None),
    ];
    let marks = [true, false, true, true];
    let mut index = DuplicateIndex::default();
    let mut dups = Vec::new();
    index.check_each(
        rows.len(),
        |i| rows.get(i).map(|k| (k, Role::Record { mark: marks[i] })),
        &mut dups,
    );
    assert!(dups[2].any());
    assert!(index.is_marked(&serial("0004F2000001")));
    assert!(!index.is_marked(&serial("8GLONGSERIAL0001")));
    assert!(!index.is_marked(&serial("0004F2000003")));
    assert!(index.is_marked(&serial("LONGERSERIAL00000004")));
    assert!(!index.is_marked(&serial("0004F2999999")));
    let marked = index.marked_serials();
    assert_eq!(marked.len(), 2);
    assert!(marked.contains(&serial("0004F2000001")));
    assert!(marked.contains(&serial("LONGERSERIAL00000004")));
    let mut probe = SerialSet::new();
    probe.insert(serial("8GLONGSERIAL0001"));
    probe.insert(serial("0004F2000003"));
    assert!(!index.marks_any(&probe));
    probe.insert(serial("LONGERSERIAL00000004"));
    assert!(index.marks_any(&probe));
}
