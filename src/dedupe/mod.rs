//! The duplicate index (SPEC §3): serials, MACs and license ids seen so
//! far, in exact keys as narrow as each value allows, so that a file of
//! millions of rows is checked in row order in a few bytes per key.
//!
//! - `keys`: a row's keys and their hashes, made on the validating threads;
//! - `index`: looking them up and recording them, row after row;
//! - `sizing`: the tables sized from the first chunk's mix of keys;
//! - `serials`: a set of serials in the same keys;
//! - `table`, `mac_like`, `mid`: the tables (open addressing; bitmaps by
//!   OUI; serials of 13 to 15 characters by head).

mod index;
mod keys;
mod mac_like;
mod mid;
mod serials;
mod sizing;
mod table;

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod tables_tests;
#[cfg(test)]
pub(crate) mod testing;

pub use keys::{PreparedSerial, RowKeys};
pub use serials::SerialSet;

use mac_like::MacLikeSet;
use mid::SplitMid;
use table::KeySet;

/// Serials, MACs and license ids seen so far; the first valid occurrence wins.
///
/// Keys are exact (no hashing of identifiers into fewer bits) and as narrow
/// as the value allows, since this index is most of the stage's memory: a
/// serial of up to 12 characters fits 8 bytes, up to 15 fits 10, longer ones
/// 16; a MAC, and a serial of 12 hex digits (a desk phone's MAC), is a
/// 48-bit number: a bit in a 2 MiB bitmap of its OUI when that OUI is
/// common, 6 bytes in a hash table otherwise ([`MacLikeSet`]: smaller than
/// one table of whole keys, and the bitmaps smaller again than three-byte
/// keys per OUI). The index runs on one thread, in row order;
/// the keys and their hashes are computed on the validating threads
/// ([`RowKeys::new`]) and each chunk is probed with the slots of the rows a
/// few places ahead already being fetched (see [`KeySet`]). Each table is
/// sized from the first chunk's mix of keys, scaled to the expected rows
/// (less memory than fixed-ratio power-of-two tables, filled to 4/5 rather
/// than 2/3), and its pages are cleared on the validating threads before
/// the first chunk is checked ([`crate::sys::memory::populate`]).
pub struct DuplicateIndex {
    /// Serials of 12 hex digits (a desk phone's is its MAC), as numbers.
    hex_serials: MacLikeSet,
    short_serials: KeySet<u64>,
    mid_serials: SplitMid,
    long_serials: KeySet<[u8; 16]>,
    macs: MacLikeSet,
    licenses: KeySet<u128>,
    /// The expected number of rows, until the first chunk has sized the
    /// tables from its mix of keys (0: unknown, the tables grow instead).
    pub(crate) expected_rows: usize,
    /// The fewest numbers expected under an OUI for it to get a bitmap
    /// ([`MacLikeSet::BITMAP_MIN`]; lower in tests).
    pub(crate) bitmap_min: usize,
    /// Threads that may share the work of sizing (the validating pool's).
    pub(crate) threads: usize,
}

/// What [`DuplicateIndex`] does with a row's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A valid row's: recorded when none repeats, the serial `mark`ed or not.
    Record { mark: bool },
    /// A rejected row's: only looked up.
    LookUp,
}

/// How many rows ahead the index fetches the slots it will probe: enough to
/// cover a memory access, few enough that they are still cached when used.
const PREFETCH_AHEAD: usize = 16;

impl Default for DuplicateIndex {
    fn default() -> Self {
        DuplicateIndex::with_capacity(0)
    }
}

/// Which of a row's keys repeat an earlier row's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dups {
    pub serial: bool,
    pub mac: bool,
    pub license: bool,
}

impl Dups {
    pub fn any(self) -> bool {
        self.serial || self.mac || self.license
    }
}
