//! A set of serials of 13 to 15 characters split by their head (a model
//! family's prefix): a table of the last twelve characters for each common
//! head, one table of whole keys for the rest.

use super::mac_like::{Found, REST};
use super::table::{Key, KeySet, Probe};
use crate::sys::memory::Region;

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
