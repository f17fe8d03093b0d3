//! Sizing the duplicate index from the first chunk's mix of keys, scaled
//! to the expected rows, so that each table gets about what it needs and
//! its pages are cleared on every core before the first chunk is checked.

use super::keys::{PreparedSerial, SerialKey};
use super::mac_like::MacLikeSet;
use super::mid::{mid_parts, SplitMid};
use super::table::KeySet;
use super::DuplicateIndex;
use super::RowKeys;

/// Of the keys counted in `counts` (a table's split: OUIs, serial heads),
/// the common ones: each holding at least a fiftieth of the total and
/// passing `keep` (given its count), at most `tables` of them, the most
/// frequent first (ties by key); and how many the others hold.
fn common_keys<K: Ord + Copy>(
    counts: impl IntoIterator<Item = (K, usize)>,
    tables: usize,
    keep: impl Fn(usize) -> bool,
) -> (Vec<(K, usize)>, usize) {
    let counts: Vec<(K, usize)> = counts.into_iter().collect();
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let mut common: Vec<(K, usize)> = counts
        .into_iter()
        .filter(|&(_, n)| n * 50 >= total && keep(n))
        .collect();
    common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    common.truncate(tables);
    let rest = total - common.iter().map(|(_, n)| n).sum::<usize>();
    (common, rest)
}

/// Numbers (hex serials, MACs) counted by OUI (their top 24 of 48 bits).
type OuiCount = std::collections::HashMap<u64, usize, foldhash::fast::FixedState>;

impl DuplicateIndex {
    /// Sizes the tables for the expected rows from the mix of keys in the
    /// first chunk of the file (with a tenth to spare), before it is
    /// checked: each table gets about what it needs, and one that was
    /// under-estimated grows. Nothing to do once done, or when the number of
    /// rows is unknown. `n` is the number of rows in the chunk, `valid` the
    /// keys of its valid rows.
    pub(crate) fn size_from<'k>(&mut self, n: usize, valid: impl IntoIterator<Item = &'k RowKeys>) {
        let rows = std::mem::take(&mut self.expected_rows);
        let empty = self.hex_serials.len()
            + self.short_serials.len()
            + self.mid_serials.len()
            + self.long_serials.len()
            + self.macs.len()
            + self.licenses.len()
            == 0;
        if rows == 0 || n == 0 || !empty {
            return;
        }
        let [mut short, mut long, mut licenses] = [0usize; 3];
        // Serials of 13 to 15 characters counted by head.
        let mut mid_heads: std::collections::HashMap<u16, usize, foldhash::fast::FixedState> =
            Default::default();
        // Numbers by OUI, for the tables of the common ones.
        let mut hex_ouis = OuiCount::default();
        let mut mac_ouis = OuiCount::default();
        for keys in valid {
            match keys.prepared.serial {
                Some(PreparedSerial(SerialKey::Hex(v), _)) => {
                    *hex_ouis.entry(v >> 24).or_default() += 1
                }
                Some(PreparedSerial(SerialKey::Short(_), _)) => short += 1,
                Some(PreparedSerial(SerialKey::Mid(k), _)) => {
                    *mid_heads.entry(mid_parts(&k).0).or_default() += 1
                }
                Some(PreparedSerial(SerialKey::Long(_), _)) => long += 1,
                None => {}
            }
            if let Some(m) = keys.mac {
                *mac_ouis.entry(m.as_u64() >> 24).or_default() += 1;
            }
            licenses += usize::from(keys.license.is_some());
        }
        let scale = rows.max(n) as f64 / n as f64;
        let need = |n: usize| (n as f64 * scale * 1.1) as usize + 1024;
        // An OUI gets a bitmap when it is common and expected often enough
        // to fill one; the others share a table.
        let split = |counts: OuiCount| {
            let (common, rest) =
                common_keys(counts, MacLikeSet::TABLES, |n| need(n) >= self.bitmap_min);
            let ouis: Vec<u32> = common.iter().map(|&(o, _)| o as u32).collect();
            MacLikeSet::with_capacity(&ouis, need(rest))
        };
        // A common head of a 13-15-character serial gets a table; the
        // others share one.
        let (heads, rest_heads) = common_keys(mid_heads, SplitMid::TABLES, |_| true);
        let heads: Vec<(u16, usize)> = heads.iter().map(|&(h, n)| (h, need(n))).collect();
        *self = DuplicateIndex {
            hex_serials: split(hex_ouis),
            short_serials: KeySet::with_capacity(need(short)),
            mid_serials: SplitMid::with_capacity(&heads, need(rest_heads)),
            long_serials: KeySet::with_capacity(need(long)),
            macs: split(mac_ouis),
            licenses: KeySet::with_capacity(need(licenses)),
            expected_rows: 0,
            bitmap_min: self.bitmap_min,
            threads: self.threads,
        };
        let regions: Vec<crate::sys::memory::Region<'_>> = self
            .hex_serials
            .regions()
            .chain([
                self.short_serials.region(),
                self.long_serials.region(),
                self.licenses.region(),
            ])
            .chain(self.macs.regions())
            .chain(self.mid_serials.regions())
            .collect();
        crate::sys::memory::populate(&regions, self.threads);
    }
}
