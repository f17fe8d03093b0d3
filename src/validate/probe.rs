//! An exact set of fixed-width keys for the duplicate index, built for one
//! access pattern: a chunk of rows checked in row order, where almost every
//! key is new and lands in a random place of a table far larger than the
//! caches. Open addressing with linear probing over one flat array, so that
//! the slot a key will need can be prefetched a few rows ahead: the probes
//! of a chunk then overlap their cache misses instead of paying them one
//! after another. The allocator (mimalloc) backs a table this large with
//! transparent huge pages, which takes most TLB misses out of those random
//! probes.

use crate::sys::memory::{prefetch, Region};

/// A key; the all-zero value marks an empty slot, so it is kept aside.
pub(super) trait Key: Copy + Eq + Default {
    /// The key's hash for the table. Keys are a few bytes, so they are
    /// read as one or two words and mixed directly: hashing them through
    /// `Hash` wrote the length and then the bytes, two rounds for one key.
    fn hash(&self) -> u64;
}

impl Key for u64 {
    #[inline]
    fn hash(&self) -> u64 {
        mix(*self, 0)
    }
}

impl Key for u128 {
    #[inline]
    fn hash(&self) -> u64 {
        mix(*self as u64, (*self >> 64) as u64)
    }
}

impl Key for [u8; 6] {
    /// The six bytes read as a number (little-endian), mixed.
    #[inline]
    fn hash(&self) -> u64 {
        let mut w = [0u8; 8];
        w[..6].copy_from_slice(self);
        mix(u64::from_le_bytes(w), 0)
    }
}

impl Key for [u8; 10] {
    #[inline]
    fn hash(&self) -> u64 {
        let (lo, hi) = self.split_at(8);
        let mut l = [0u8; 8];
        l.copy_from_slice(lo);
        mix(
            u64::from_le_bytes(l),
            u64::from(u16::from_le_bytes([hi[0], hi[1]])),
        )
    }
}

impl Key for [u8; 16] {
    #[inline]
    fn hash(&self) -> u64 {
        u128::from_le_bytes(*self).hash()
    }
}

/// Two words into one hash: a folded multiply (the 128-bit product's
/// halves XORed) of the first word with a constant, then of that and the
/// second word with another. Its high bits, which pick a key's slot,
/// depend on every input bit, and the second word counts whatever the
/// first (a product with a zero factor would have hidden it).
#[inline]
fn mix(a: u64, b: u64) -> u64 {
    const K1: u64 = 0x243F_6A88_85A3_08D3;
    const K2: u64 = 0x1319_8A2E_0370_7344;
    const K3: u64 = 0xA409_3822_299F_31D0;
    const K4: u64 = 0x082E_FA98_EC4E_6C89;
    fold(fold(a ^ K1, K2) ^ b ^ K3, K4)
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Where a key is, or where it would go (`usize::MAX`: the zero key, kept
/// aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    Present(usize),
    Vacant(usize),
}

impl Probe {
    pub(super) fn is_present(self) -> bool {
        matches!(self, Probe::Present(_))
    }
}

/// The slot of the zero key, which is kept aside.
const ZERO_SLOT: usize = usize::MAX;

/// A set of keys, each with one bit (its mark) that the caller sets when it
/// inserts the key.
pub(super) struct KeySet<K: Key> {
    slots: Vec<K>,
    /// One bit per slot; empty until a key is inserted marked.
    marks: Vec<u64>,
    len: usize,
    has_zero: bool,
    zero_marked: bool,
}

/// The slots are at most this full (7/8; tables are sized to end about 4/5
/// full): keys are small, so even a long probe run stays within a cache
/// line or two, and the memory the kernel must clear for the tables, slow
/// on a VM, is a seventh less than at 3/4 (at 10 M rows: 309 → 282 MB peak,
/// the same wall time warm and 0.1 s less right after another large
/// process).
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

impl<K: Key> KeySet<K> {
    pub(super) fn with_capacity(keys: usize) -> KeySet<K> {
        let slots = keys.max(8) * LOAD_DEN / LOAD_NUM + 1;
        KeySet {
            slots: vec![K::default(); slots],
            marks: Vec::new(),
            len: 0,
            has_zero: false,
            zero_marked: false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len + usize::from(self.has_zero)
    }

    /// The table's memory, for [`crate::sys::memory::populate`].
    pub(super) fn region(&self) -> Region<'_> {
        Region::from(self.slots.as_slice())
    }

    #[inline]
    pub(super) fn hash(key: &K) -> u64 {
        key.hash()
    }

    /// A hint that `key` (with hash `h`) will be probed soon.
    #[inline]
    pub(super) fn prefetch(&self, h: u64) {
        let i = self.home(h);
        if let Some(slot) = self.slots.get(i) {
            prefetch(slot);
        }
        // The mark of a key filled there sits in another cache line.
        if let Some(word) = self.marks.get(i / 64) {
            prefetch(word);
        }
    }

    /// Finds `key`; `h` is [`KeySet::hash`] of it.
    #[inline]
    pub(super) fn probe(&self, key: &K, h: u64) -> Probe {
        if *key == K::default() {
            return if self.has_zero {
                Probe::Present(ZERO_SLOT)
            } else {
                Probe::Vacant(ZERO_SLOT)
            };
        }
        let slots = &self.slots;
        let mut i = self.home(h);
        loop {
            let s = slots[i];
            if s == *key {
                return Probe::Present(i);
            }
            if s == K::default() {
                return Probe::Vacant(i);
            }
            i += 1;
            if i == slots.len() {
                i = 0;
            }
        }
    }

    /// The slot where a key with hash `h` is looked for first: the hash's
    /// high bits scaled to the table (Lemire's multiply-shift), which may
    /// be any size, not only a power of two, so that it fits its keys.
    #[inline]
    fn home(&self, h: u64) -> usize {
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    /// Stores `key`, marked or not, in the vacant slot [`KeySet::probe`]
    /// just returned, with no insert in between.
    #[inline]
    pub(super) fn fill(&mut self, key: K, slot: usize, mark: bool) {
        if slot == ZERO_SLOT {
            self.has_zero = true;
            self.zero_marked = mark;
            return;
        }
        self.slots[slot] = key;
        if mark {
            self.set_mark(slot);
        }
        self.len += 1;
        if self.len * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow();
        }
    }

    fn set_mark(&mut self, slot: usize) {
        if self.marks.is_empty() {
            self.marks = vec![0; self.slots.len().div_ceil(64)];
        }
        self.marks[slot / 64] |= 1 << (slot % 64);
    }

    /// True when `key` (with hash `h`) is in the set, marked.
    pub(super) fn is_key_marked(&self, key: &K, h: u64) -> bool {
        match self.probe(key, h) {
            Probe::Present(slot) => self.is_marked(slot),
            Probe::Vacant(_) => false,
        }
    }

    /// The mark of the key in `slot`, as [`Probe::Present`] gave it.
    pub(super) fn is_marked(&self, slot: usize) -> bool {
        if slot == ZERO_SLOT {
            return self.zero_marked;
        }
        self.marks
            .get(slot / 64)
            .is_some_and(|w| w >> (slot % 64) & 1 == 1)
    }

    /// Inserts `key` unmarked; false when it was there already.
    pub(super) fn insert(&mut self, key: K) -> bool {
        match self.probe(&key, Self::hash(&key)) {
            Probe::Present(_) => false,
            Probe::Vacant(slot) => {
                self.fill(key, slot, false);
                true
            }
        }
    }

    pub(super) fn contains(&self, key: &K) -> bool {
        matches!(self.probe(key, Self::hash(key)), Probe::Present(_))
    }

    /// Every marked key, in no particular order.
    pub(super) fn marked(&self) -> impl Iterator<Item = K> + '_ {
        let zero = (self.has_zero && self.zero_marked).then(K::default);
        self.slots
            .as_slice()
            .iter()
            .enumerate()
            .filter(|(i, k)| **k != K::default() && self.is_marked(*i))
            .map(|(_, k)| *k)
            .chain(zero)
    }

    /// Every key, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = K> + '_ {
        let zero = self.has_zero.then(K::default);
        self.slots
            .as_slice()
            .iter()
            .copied()
            .filter(|k| *k != K::default())
            .chain(zero)
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let mut bigger = KeySet {
            slots: vec![K::default(); n],
            marks: Vec::new(),
            len: 0,
            has_zero: self.has_zero,
            zero_marked: self.zero_marked,
        };
        for (i, &k) in self.slots.iter().enumerate() {
            if k != K::default() {
                if let Probe::Vacant(slot) = bigger.probe(&k, Self::hash(&k)) {
                    bigger.slots[slot] = k;
                    if self.is_marked(i) {
                        bigger.set_mark(slot);
                    }
                    bigger.len += 1;
                }
            }
        }
        *self = bigger;
    }
}

/// A set of 24-bit numbers, each with a mark: a bitmap of all 2^24 of
/// them (2 MiB), and another of the marks, made on the first mark. A
/// number is found by its own bit, with no hashing or probing, in a table
/// small enough to stay mostly in the caches.
struct Bits24 {
    bits: Vec<u64>,
    marks: Vec<u64>,
    len: usize,
}

impl Bits24 {
    const WORDS: usize = (1 << 24) / 64;

    fn new() -> Bits24 {
        Bits24 {
            bits: vec![0; Self::WORDS],
            marks: Vec::new(),
            len: 0,
        }
    }

    #[inline]
    fn get(words: &[u64], v: u32) -> bool {
        words
            .get((v >> 6) as usize)
            .is_some_and(|w| w >> (v & 63) & 1 == 1)
    }

    #[inline]
    fn contains(&self, v: u32) -> bool {
        Self::get(&self.bits, v)
    }

    fn is_marked(&self, v: u32) -> bool {
        Self::get(&self.marks, v)
    }

    #[inline]
    fn prefetch(&self, v: u32) {
        let word = (v >> 6) as usize;
        if let Some(w) = self.bits.get(word) {
            prefetch(w);
        }
        // The mark, set when the number is inserted marked (`quote`'s
        // eligible devices), sits in the other bitmap.
        if let Some(w) = self.marks.get(word) {
            prefetch(w);
        }
    }

    #[inline]
    fn insert(&mut self, v: u32, mark: bool) {
        let (word, bit) = ((v >> 6) as usize, 1u64 << (v & 63));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.len += 1;
        }
        if mark {
            if self.marks.is_empty() {
                self.marks = vec![0; Self::WORDS];
            }
            self.marks[word] |= bit;
        }
    }

    /// Every marked number, in order.
    fn marked(&self) -> impl Iterator<Item = u32> + '_ {
        self.marks.iter().enumerate().flat_map(|(i, &w)| {
            std::iter::successors((w != 0).then_some(w), |w| {
                let rest = w & (w - 1);
                (rest != 0).then_some(rest)
            })
            .map(move |w| (i as u32) << 6 | w.trailing_zeros())
        })
    }

    fn region(&self) -> Region<'_> {
        Region::from(self.bits.as_slice())
    }
}

/// A set of 48-bit numbers (MACs, serials of 12 hex digits), each with a
/// mark, split by their top 24 bits (a MAC's OUI). A fleet's numbers share
/// a handful of OUIs: each common one gets a bitmap of the numbers' low 24
/// bits ([`Bits24`], 2 MiB however many), and every other number goes to
/// one hash table of whole keys. At 10 M rows the bitmaps replaced 44 MB of
/// three-byte hash tables whose probes, with the tables filling up, were a
/// tenth of the ordered thread's time.
pub(super) struct Split48 {
    /// The common OUIs with their bitmaps; at most [`Split48::TABLES`], so
    /// finding a number's table is a few compares.
    ouis: Vec<(u32, Bits24)>,
    rest: KeySet<[u8; 6]>,
}

/// Where [`Split48::probe`] found a number, or where it would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    /// Index into `ouis`; [`REST`] for the table of whole keys.
    table: usize,
    probe: Probe,
}

const REST: usize = usize::MAX;

impl Found {
    pub(super) fn is_present(self) -> bool {
        self.probe.is_present()
    }
}

impl Split48 {
    /// The most OUIs with a bitmap of their own.
    pub(super) const TABLES: usize = 4;

    /// The fewest numbers expected under an OUI for it to get a bitmap
    /// (2 MiB): a hash table of three-byte keys for as many would be as
    /// large; fewer go to the table of whole keys.
    pub(super) const BITMAP_MIN: usize = 1 << 19;

    /// With a bitmap for each of `ouis` (only the first
    /// [`Split48::TABLES`]) and a table sized for `rest` other numbers.
    pub(super) fn with_capacity(ouis: &[u32], rest: usize) -> Split48 {
        Split48 {
            ouis: ouis
                .iter()
                .take(Self::TABLES)
                .map(|&oui| (oui & 0xFF_FFFF, Bits24::new()))
                .collect(),
            rest: KeySet::with_capacity(rest),
        }
    }

    /// The hash of `v` for [`Split48::probe`] and [`Split48::prefetch`]
    /// (used when `v` goes to the table of whole keys).
    #[inline]
    pub(super) fn hash(v: u64) -> u64 {
        Self::whole(v).hash()
    }

    #[inline]
    fn table(&self, v: u64) -> usize {
        let oui = (v >> 24) as u32 & 0xFF_FFFF;
        self.ouis
            .iter()
            .position(|(o, _)| *o == oui)
            .unwrap_or(REST)
    }

    #[inline]
    fn low(v: u64) -> u32 {
        v as u32 & 0xFF_FFFF
    }

    #[inline]
    fn whole(v: u64) -> [u8; 6] {
        let b = v.to_le_bytes();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    /// A hint that `v` will be probed soon; `h` is [`Split48::hash`] of it.
    #[inline]
    pub(super) fn prefetch(&self, v: u64, h: u64) {
        match self.ouis.get(self.table(v)) {
            Some((_, t)) => t.prefetch(Self::low(v)),
            None => self.rest.prefetch(h),
        }
    }

    /// Finds `v` (a number below 2^48); `h` is [`Split48::hash`] of it.
    #[inline]
    pub(super) fn probe(&self, v: u64, h: u64) -> Found {
        let table = self.table(v);
        let probe = match self.ouis.get(table) {
            Some((_, t)) => {
                let low = Self::low(v) as usize;
                if t.contains(low as u32) {
                    Probe::Present(low)
                } else {
                    Probe::Vacant(low)
                }
            }
            None => self.rest.probe(&Self::whole(v), h),
        };
        Found { table, probe }
    }

    /// Stores `v`, marked or not, where [`Split48::probe`] just found it
    /// missing, with no insert in between; nothing if it was there.
    #[inline]
    pub(super) fn fill(&mut self, v: u64, at: Found, mark: bool) {
        let Probe::Vacant(slot) = at.probe else {
            return;
        };
        match self.ouis.get_mut(at.table) {
            Some((_, t)) => t.insert(Self::low(v), mark),
            None => self.rest.fill(Self::whole(v), slot, mark),
        }
    }

    /// True when `v` is in the set, marked.
    pub(super) fn is_key_marked(&self, v: u64) -> bool {
        match self.ouis.get(self.table(v)) {
            Some((_, t)) => t.is_marked(Self::low(v)),
            None => {
                let k = Self::whole(v);
                self.rest.is_key_marked(&k, KeySet::hash(&k))
            }
        }
    }

    /// Every marked number, in no particular order.
    pub(super) fn marked(&self) -> impl Iterator<Item = u64> + '_ {
        let number = |b: &[u8]| b.iter().rev().fold(0u64, |n, &x| n << 8 | u64::from(x));
        self.ouis
            .iter()
            .flat_map(|(oui, t)| {
                t.marked()
                    .map(move |low| u64::from(*oui) << 24 | u64::from(low))
            })
            .chain(self.rest.marked().map(move |k| number(&k)))
    }

    pub(super) fn len(&self) -> usize {
        self.ouis.iter().map(|(_, t)| t.len).sum::<usize>() + self.rest.len()
    }

    /// The tables' memory, for [`crate::sys::memory::populate`].
    pub(super) fn regions(&self) -> impl Iterator<Item = Region<'_>> + '_ {
        self.ouis
            .iter()
            .map(|(_, t)| t.region())
            .chain([self.rest.region()])
    }
}

/// A set of serials of 13 to 15 characters as their [`mid_key`]s, each
/// with a mark, split by the key's head (the characters before the last
/// twelve: a model family's prefix, such as `8G`). Each common head gets a
/// table of the last twelve characters' 64-bit number, every other key goes
/// to one table of whole ten-byte keys: a fifth less memory for the kernel
/// to clear and the probes to miss in, and one compare per slot.
pub(super) struct SplitMid {
    /// The common heads with their tables; at most [`SplitMid::TABLES`].
    heads: Vec<(u16, KeySet<u64>)>,
    rest: KeySet<[u8; 10]>,
}

/// A serial of 13 to 15 characters as a ten-byte key: the base-37 number
/// of its last twelve characters (below 2^63), then that of the ones
/// before (below 37^3 < 2^16), little-endian.
pub(super) fn mid_key(tail: u64, head: u16) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..8].copy_from_slice(&tail.to_le_bytes());
    k[8..].copy_from_slice(&head.to_le_bytes());
    k
}

/// The head and the tail of a [`mid_key`].
#[inline]
pub(super) fn mid_parts(k: &[u8; 10]) -> (u16, u64) {
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&k[..8]);
    (u16::from_le_bytes([k[8], k[9]]), u64::from_le_bytes(tail))
}

impl SplitMid {
    /// The most heads with a table of their own.
    pub(super) const TABLES: usize = 4;

    /// Sized for `heads` (a head and the keys expected under it; only the
    /// first [`SplitMid::TABLES`] get a table) and `rest` other keys.
    pub(super) fn with_capacity(heads: &[(u16, usize)], rest: usize) -> SplitMid {
        let tables = heads.len().min(Self::TABLES);
        let spilled: usize = heads[tables..].iter().map(|(_, n)| n).sum();
        SplitMid {
            heads: heads[..tables]
                .iter()
                .map(|&(head, n)| (head, KeySet::with_capacity(n)))
                .collect(),
            rest: KeySet::with_capacity(rest + spilled),
        }
    }

    /// The hash of `k` for [`SplitMid::probe`] and [`SplitMid::prefetch`]
    /// (the one of its tail, used when its head has a table).
    #[inline]
    pub(super) fn hash(k: &[u8; 10]) -> u64 {
        mid_parts(k).1.hash()
    }

    #[inline]
    fn table(&self, head: u16) -> usize {
        self.heads
            .iter()
            .position(|(h, _)| *h == head)
            .unwrap_or(REST)
    }

    /// A hint that `k` will be probed soon; `h` is [`SplitMid::hash`] of it.
    #[inline]
    pub(super) fn prefetch(&self, k: &[u8; 10], h: u64) {
        match self.heads.get(self.table(mid_parts(k).0)) {
            Some((_, t)) => t.prefetch(h),
            None => self.rest.prefetch(k.hash()),
        }
    }

    /// Finds `k`; `h` is [`SplitMid::hash`] of it.
    #[inline]
    pub(super) fn probe(&self, k: &[u8; 10], h: u64) -> Found {
        let (head, tail) = mid_parts(k);
        let table = self.table(head);
        let probe = match self.heads.get(table) {
            Some((_, t)) => t.probe(&tail, h),
            None => self.rest.probe(k, k.hash()),
        };
        Found { table, probe }
    }

    /// Stores `k`, marked or not, where [`SplitMid::probe`] just found it
    /// missing, with no insert in between; nothing if it was there.
    #[inline]
    pub(super) fn fill(&mut self, k: [u8; 10], at: Found, mark: bool) {
        let Probe::Vacant(slot) = at.probe else {
            return;
        };
        match self.heads.get_mut(at.table) {
            Some((_, t)) => t.fill(mid_parts(&k).1, slot, mark),
            None => self.rest.fill(k, slot, mark),
        }
    }

    /// True when `k` is in the set, marked.
    pub(super) fn is_key_marked(&self, k: &[u8; 10]) -> bool {
        let (head, tail) = mid_parts(k);
        match self.heads.get(self.table(head)) {
            Some((_, t)) => t.is_key_marked(&tail, tail.hash()),
            None => self.rest.is_key_marked(k, k.hash()),
        }
    }

    /// Every marked key, in no particular order.
    pub(super) fn marked(&self) -> impl Iterator<Item = [u8; 10]> + '_ {
        self.heads
            .iter()
            .flat_map(|(head, t)| t.marked().map(move |tail| mid_key(tail, *head)))
            .chain(self.rest.marked())
    }

    pub(super) fn len(&self) -> usize {
        self.heads.iter().map(|(_, t)| t.len()).sum::<usize>() + self.rest.len()
    }

    /// The tables' memory, for [`crate::sys::memory::populate`].
    pub(super) fn regions(&self) -> impl Iterator<Item = Region<'_>> + '_ {
        self.heads
            .iter()
            .map(|(_, t)| t.region())
            .chain([self.rest.region()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Numbers under OUIs with a table, OUIs without one (more than
        /// [`Split48::TABLES`]) and low bytes of zero, against a map.
        #[test]
        fn split48_behaves_as_a_hash_map_of_marks(
            picks in proptest::collection::vec((0u64..7, 0u64..6, proptest::bool::ANY), 0..400),
            tables in 0usize..7,
            cap in 0usize..40,
        ) {
            let oui = |o: u64| [0x0004F2u64, 0x00197F, 0x64167F, 0, 0xFFFFFF, 0x123456, 0x0004F3][o as usize];
            let ouis: Vec<u32> = (0..tables as u64).map(|o| oui(o) as u32).collect();
            let mut set = Split48::with_capacity(&ouis, cap);
            let mut reference = std::collections::HashMap::new();
            for (o, low, mark) in picks {
                let v = (oui(o) << 24) | (low * 0x10101);
                let at = set.probe(v, Split48::hash(v));
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
}
