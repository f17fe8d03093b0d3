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
/// on a VM, is a seventh less than at 3/4, and the time no worse.
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
