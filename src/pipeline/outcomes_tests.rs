//! Tests of the walk's use of the duplicate index: chunks of outcomes,
//! rejected rows among them, checked against the row-by-row rule.

use super::*;
use crate::dedupe::testing::{keys, reference, reference_with_rejected};
use crate::dedupe::RowKeys;

/// Outcomes with rejected rows between the valid ones: the index
/// skips them and still follows the row-by-row rule.
#[test]
fn outcomes_with_rejected_rows_match_the_row_by_row_rule() {
    let rows: Vec<RowKeys> = (0..200u64)
        .map(|i| {
            let s = format!("{:012X}", 0x0004F2000000u64 + i % 37);
            let m = format!("00:04:F2:00:02:{:02X}", i % 29);
            keys(i + 1, Some(&s), Some(&m), None)
        })
        .collect();
    let outcomes: Vec<RowOutcome<()>> = rows
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            let valid = RowOutcome::Valid {
                keys: *k,
                item: None,
                warnings: Vec::new(),
            };
            let rejected = (i % 3 == 0).then(|| RowOutcome::Rejected {
                rejects: Vec::new(),
                keys: None,
            });
            rejected.into_iter().chain([valid])
        })
        .collect();
    // Unsized (the tables grow), sized from these rows for a file twice
    // as long (with OUI bitmaps and without), and sized for far fewer
    // rows than there are.
    for (expected, bitmaps) in [
        (0, false),
        (outcomes.len() * 2, false),
        (outcomes.len() * 2, true),
        (3, false),
    ] {
        let mut index = DuplicateIndex::with_capacity(expected);
        if bitmaps {
            index.bitmap_min = 0;
        }
        let mut got = Vec::new();
        for chunk in outcomes.chunks(90) {
            let mut part = Vec::new();
            check_outcomes(&mut index, chunk, |_: &()| false, &mut part);
            got.extend(part);
        }
        let valid: Vec<Dups> = outcomes
            .iter()
            .zip(&got)
            .filter(|(o, _)| matches!(o, RowOutcome::Valid { .. }))
            .map(|(_, d)| *d)
            .collect();
        assert_eq!(valid, reference(&rows), "expected {expected} rows");
        assert!(outcomes
            .iter()
            .zip(&got)
            .all(|(o, d)| matches!(o, RowOutcome::Valid { .. }) || !d.any()));
    }
}

proptest::proptest! {
    /// Chunk by chunk, unsized or sized from the first chunk (MACs and
    /// hex serials under OUIs with a bitmap of their own and without),
    /// the index reports what the row-by-row rule does, and records the
    /// marks of the first occurrences.
    #[test]
    fn chunks_match_the_row_by_row_rule(
        picks in proptest::collection::vec(
            (0u8..12, 0u8..12, 0u8..6, 0u8..4, 0usize..7, proptest::bool::ANY, 0u8..4),
            1..300,
        ),
        split in 1usize..300,
        expected in proptest::sample::select(vec![0usize, 3, 1000]),
        bitmaps in proptest::bool::ANY,
    ) {
        // Few distinct values, so repeats across and inside chunks are
        // common; the first OUIs are common enough for tables.
        const OUIS: [u64; 7] = [0x0004F2, 0x00197F, 0x0004F2, 0x64167F, 0x0004F2, 0x000001, 0x0A0000];
        let rows: Vec<(RowKeys, bool)> = picks.iter().enumerate().map(|(i, &(s, m, l, kind, oui, mark, _))| {
            let oui = OUIS[oui];
            let serial = format!("{:06X}{:06X}", oui, s);
            let long = format!("8GLONG{:08}", s);
            let mac = format!("{:06X}0001{:02X}", oui, m);
            let lic = format!("ABCD-EFGH-0000-{:04}", l);
            let k = match kind {
                0 => keys(i as u64 + 1, Some(&serial), Some(&mac), None),
                1 => keys(i as u64 + 1, Some(&long), None, None),
                2 => keys(i as u64 + 1, Some(&long), Some(&mac), None),
                _ => keys(i as u64 + 1, None, None, Some(&lic)),
            };
            (k, mark)
        }).collect();
        // A quarter of the rows are rejected, with the keys that parsed.
        let rejected: Vec<bool> = picks.iter().map(|p| p.6 == 0).collect();
        let outcomes: Vec<RowOutcome<bool>> = rows
            .iter()
            .zip(&rejected)
            .map(|(&(keys, mark), &rejected)| if rejected {
                RowOutcome::Rejected { rejects: Vec::new(), keys: Some(keys) }
            } else {
                RowOutcome::Valid { keys, item: Some(mark), warnings: Vec::new() }
            })
            .collect();
        let mut index = DuplicateIndex::with_capacity(expected);
        if bitmaps {
            index.bitmap_min = 0;
        }
        let mut got = Vec::new();
        for chunk in outcomes.chunks(split) {
            let mut part = Vec::new();
            check_outcomes(&mut index, chunk, |m: &bool| *m, &mut part);
            got.extend(part);
        }
        let keys: Vec<RowKeys> = rows.iter().map(|(k, _)| *k).collect();
        let want = reference_with_rejected(&keys, &rejected);
        proptest::prop_assert_eq!(&got, &want);
        // The mark of each serial's first valid occurrence.
        let mut marks = std::collections::HashMap::new();
        for (((k, mark), d), rejected) in rows.iter().zip(&want).zip(&rejected) {
            if let (Some(s), false, false) = (k.serial, d.any(), *rejected) {
                marks.entry(s).or_insert(*mark);
            }
        }
        let marked = index.marked_serials();
        for (k, _) in &rows {
            if let Some(s) = k.serial {
                let m = marks.get(&s) == Some(&true);
                proptest::prop_assert_eq!(index.is_marked(&s), m);
                proptest::prop_assert_eq!(marked.contains(&s), m);
            }
        }
        proptest::prop_assert_eq!(marked.len(), marks.values().filter(|m| **m).count());
    }
}

/// A slot fetched ahead past the buffer's end, or at a row number whose
/// offset overflows, is skipped rather than a panic (the walk asks for the
/// rows after a chunk's last).
#[test]
fn fetching_a_slot_ahead_past_the_end_is_skipped() {
    /// An [`ItemMap`] with slots as large as quote's.
    struct Slotted;
    impl ItemMap for Slotted {
        type State = ();
        type Out = ();
        const ROW_SCRATCH: usize = 256;
        fn state(&self) {}
        fn map(&self, _: &mut (), _: crate::domain::Item, _: &RowKeys, _: &mut [u8]) {}
    }
    let slot = Slotted::ROW_SCRATCH;
    let slots = vec![5u8; 3 * slot];
    for i in [
        0,
        2,
        3,
        4,
        usize::MAX / slot,
        usize::MAX / slot + 1,
        usize::MAX,
    ] {
        fetch_slot_ahead::<Slotted>(&slots, i);
        fetch_slot_ahead::<Items>(&slots, i);
    }
    fetch_slot_ahead::<Slotted>(&[], 0);
    assert!(slots.iter().all(|&b| b == 5));
}
