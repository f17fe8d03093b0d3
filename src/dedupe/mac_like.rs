//! A set of 48-bit numbers (MACs, serials of 12 hex digits) split by their
//! OUI: a bitmap for each common OUI, one hash table for the rest.

use super::table::{Key, KeySet, Probe};
use crate::sys::memory::{prefetch, Region};

/// A set of 24-bit numbers, each with a mark: a bitmap of all 2^24 of
/// them (2 MiB), and another of the marks, made on the first mark. A
/// number is found by its own bit, with no hashing or probing, in a table
/// small enough to stay mostly in the caches.
struct OuiBitmap {
    bits: Vec<u64>,
    marks: Vec<u64>,
    len: usize,
}

impl OuiBitmap {
    const WORDS: usize = (1 << 24) / 64;

    fn new() -> OuiBitmap {
        OuiBitmap {
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
/// bits ([`OuiBitmap`], 2 MiB however many), and every other number goes to
/// one hash table of whole keys. The bitmaps replaced hash tables of
/// three-byte keys, which took more memory and whose probes, with the
/// tables filling up, were a good part of the ordered thread's time.
pub(super) struct MacLikeSet {
    /// The common OUIs with their bitmaps; at most [`MacLikeSet::TABLES`], so
    /// finding a number's table is a few compares.
    ouis: Vec<(u32, OuiBitmap)>,
    rest: KeySet<[u8; 6]>,
}

/// Where [`MacLikeSet::probe`] found a number, or where it would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    /// Index into `ouis`; [`REST`] for the table of whole keys.
    pub(super) table: usize,
    pub(super) probe: Probe,
}

pub(super) const REST: usize = usize::MAX;

impl Found {
    pub(super) fn is_present(self) -> bool {
        self.probe.is_present()
    }
}

impl MacLikeSet {
    /// The most OUIs with a bitmap of their own.
    pub(super) const TABLES: usize = 4;

    /// The fewest numbers expected under an OUI for it to get a bitmap
    /// (2 MiB): a hash table of three-byte keys for as many would be as
    /// large; fewer go to the table of whole keys.
    pub(super) const BITMAP_MIN: usize = 1 << 19;

    /// With a bitmap for each of `ouis` (only the first
    /// [`MacLikeSet::TABLES`]) and a table sized for `rest` other numbers.
    pub(super) fn with_capacity(ouis: &[u32], rest: usize) -> MacLikeSet {
        MacLikeSet {
            ouis: ouis
                .iter()
                .take(Self::TABLES)
                .map(|&oui| (oui & 0xFF_FFFF, OuiBitmap::new()))
                .collect(),
            rest: KeySet::with_capacity(rest),
        }
    }

    /// The hash of `v` for [`MacLikeSet::probe`] and [`MacLikeSet::prefetch`]
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

    /// A hint that `v` will be probed soon; `h` is [`MacLikeSet::hash`] of it.
    #[inline]
    pub(super) fn prefetch(&self, v: u64, h: u64) {
        match self.ouis.get(self.table(v)) {
            Some((_, t)) => t.prefetch(Self::low(v)),
            None => self.rest.prefetch(h),
        }
    }

    /// Finds `v` (a number below 2^48); `h` is [`MacLikeSet::hash`] of it.
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

    /// Stores `v`, marked or not, where [`MacLikeSet::probe`] just found it
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
