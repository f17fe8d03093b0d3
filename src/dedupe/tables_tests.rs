//! Tests of the tables against a map: [`KeySet`], [`MacLikeSet`] (OUIs with a
//! bitmap and without) and [`SplitMid`] (heads with a table and without).

use super::mac_like::MacLikeSet;
use super::mid::{mid_key, SplitMid};
use super::table::{KeySet, Probe};

proptest::proptest! {
    /// Numbers under OUIs with a table, OUIs without one (more than
    /// [`MacLikeSet::TABLES`]) and low bytes of zero, against a map.
    #[test]
    fn mac_like_behaves_as_a_hash_map_of_marks(
        picks in proptest::collection::vec((0u64..7, 0u64..6, proptest::bool::ANY), 0..400),
        tables in 0usize..7,
        cap in 0usize..40,
    ) {
        let oui = |o: u64| [0x0004F2u64, 0x00197F, 0x64167F, 0, 0xFFFFFF, 0x123456, 0x0004F3][o as usize];
        let ouis: Vec<u32> = (0..tables as u64).map(|o| oui(o) as u32).collect();
        let mut set = MacLikeSet::with_capacity(&ouis, cap);
        let mut reference = std::collections::HashMap::new();
        for (o, low, mark) in picks {
            let v = (oui(o) << 24) | (low * 0x10101);
            let at = set.probe(v, MacLikeSet::hash(v));
            match reference.get(&v) {
                Some(_) => proptest::prop_assert!(at.is_present()),
                None => {
                    proptest::prop_assert!(!at.is_present());
                    set.fill(v, at, mark);
                    reference.insert(v, mark);
                }
            }
            proptest::prop_assert_eq!(set.len(), reference.len());
        }
        for o in 0..7 {
            for low in 0..6 {
                let v = (oui(o) << 24) | (low * 0x10101);
                proptest::prop_assert_eq!(set.is_key_marked(v), reference.get(&v) == Some(&true));
            }
        }
        let mut marked: Vec<u64> = set.marked().collect();
        marked.sort_unstable();
        let mut want: Vec<u64> = reference.iter().filter(|(_, m)| **m).map(|(k, _)| *k).collect();
        want.sort_unstable();
        proptest::prop_assert_eq!(marked, want);
    }

    /// Keys under heads with a table, heads without one (more than
    /// [`SplitMid::TABLES`]) and tails of zero, against a map.
    #[test]
    fn split_mid_behaves_as_a_hash_map_of_marks(
        picks in proptest::collection::vec((0u16..7, 0u64..6, proptest::bool::ANY), 0..400),
        tables in 0usize..7,
        cap in 0usize..40,
    ) {
        let head = |h: u16| [1350u16, 1, 0, 50652, 1369, 777, 1351][h as usize];
        let heads: Vec<(u16, usize)> = (0..tables as u16).map(|h| (head(h), cap)).collect();
        let mut set = SplitMid::with_capacity(&heads, cap);
        let mut reference = std::collections::HashMap::new();
        for (h, tail, mark) in picks {
            let k = mid_key(tail * 0x1_0001_0001, head(h));
            let at = set.probe(&k, SplitMid::hash(&k));
            match reference.get(&k) {
                Some(_) => proptest::prop_assert!(at.is_present()),
                None => {
                    proptest::prop_assert!(!at.is_present());
                    set.fill(k, at, mark);
                    reference.insert(k, mark);
                }
            }
            proptest::prop_assert_eq!(set.len(), reference.len());
        }
        for h in 0..7 {
            for tail in 0..6 {
                let k = mid_key(tail * 0x1_0001_0001, head(h));
                proptest::prop_assert_eq!(set.is_key_marked(&k), reference.get(&k) == Some(&true));
            }
        }
        let mut marked: Vec<[u8; 10]> = set.marked().collect();
        marked.sort_unstable();
        let mut want: Vec<[u8; 10]> = reference.iter().filter(|(_, m)| **m).map(|(k, _)| *k).collect();
        want.sort_unstable();
        proptest::prop_assert_eq!(marked, want);
    }

    #[test]
    fn behaves_as_a_hash_map_of_marks(
        keys in proptest::collection::vec((0u64..64, proptest::bool::ANY), 0..500),
        cap in 0usize..40,
    ) {
        let mut set = KeySet::<u64>::with_capacity(cap);
        let mut reference = std::collections::HashMap::new();
        for (k, mark) in keys {
            let h = KeySet::hash(&k);
            match set.probe(&k, h) {
                Probe::Present(slot) => {
                    proptest::prop_assert_eq!(Some(&set.is_marked(slot)), reference.get(&k));
                }
                Probe::Vacant(slot) => {
                    proptest::prop_assert!(!reference.contains_key(&k));
                    set.fill(k, slot, mark);
                    reference.insert(k, mark);
                }
            }
            proptest::prop_assert_eq!(set.len(), reference.len());
        }
        for k in 0..64u64 {
            proptest::prop_assert_eq!(set.contains(&k), reference.contains_key(&k));
        }
        let mut marked: Vec<u64> = set.marked().collect();
        marked.sort_unstable();
        let mut want: Vec<u64> = reference.iter().filter(|(_, m)| **m).map(|(k, _)| *k).collect();
        want.sort_unstable();
        proptest::prop_assert_eq!(marked, want);
        let mut all: Vec<u64> = set.iter().collect();
        all.sort_unstable();
        let mut want: Vec<u64> = reference.into_keys().collect();
        want.sort_unstable();
        proptest::prop_assert_eq!(all, want);
    }
}
