//! The duplicate index at work: each row's keys looked up in row order
//! (with the slots of the rows ahead prefetched), recorded when none
//! repeats, and the rejects of those that do; the marks the sink asks
//! about.

use std::borrow::Cow;

use super::keys::{PreparedSerial, SerialKey};
use super::mac_like::{Found, MacLikeSet};
use super::mid::SplitMid;
use super::serials::SerialSet;
use super::table::{Key, KeySet, Probe};
use super::{DuplicateIndex, Dups, Role, RowKeys, PREFETCH_AHEAD};
use crate::domain::{Reject, RejectCode, Serial};

/// Where a serial's key is or would go.
#[derive(Clone, Copy)]
enum SerialProbe {
    Hex(Found),
    Mid(Found),
    Plain(Probe),
}

impl SerialProbe {
    fn is_present(self) -> bool {
        match self {
            SerialProbe::Hex(at) | SerialProbe::Mid(at) => at.is_present(),
            SerialProbe::Plain(p) => p.is_present(),
        }
    }
}

impl DuplicateIndex {
    /// Sized for about `rows` rows, so the sets do not grow (and briefly
    /// double) while a large file is read.
    pub fn with_capacity(rows: usize) -> DuplicateIndex {
        DuplicateIndex {
            hex_serials: MacLikeSet::with_capacity(&[], 0),
            short_serials: KeySet::with_capacity(0),
            mid_serials: SplitMid::with_capacity(&[], 0),
            long_serials: KeySet::with_capacity(0),
            macs: MacLikeSet::with_capacity(&[], 0),
            licenses: KeySet::with_capacity(0),
            expected_rows: rows,
            bitmap_min: MacLikeSet::BITMAP_MIN,
            threads: 1,
        }
    }

    /// Checks one chunk's valid rows in row order and records the keys of
    /// those that are not duplicates. A row that repeats any key is reported
    /// for each repeated key and records none of its keys, so it never
    /// shadows a later good row.
    pub fn check_chunk(&mut self, rows: &[RowKeys]) -> Vec<Dups> {
        let mut dups = Vec::with_capacity(rows.len());
        self.check_each(
            rows.len(),
            |i| rows.get(i).map(|k| (k, Role::Record { mark: false })),
            &mut dups,
        );
        dups
    }

    pub(crate) fn check_each<'k>(
        &mut self,
        n: usize,
        keys: impl Fn(usize) -> Option<(&'k RowKeys, Role)>,
        dups: &mut Vec<Dups>,
    ) {
        dups.clear();
        for i in 0..n {
            if let Some((ahead, _)) = keys(i + PREFETCH_AHEAD) {
                self.prefetch(ahead);
            }
            dups.push(keys(i).map_or(Dups::default(), |(k, role)| self.check_row(k, role)));
        }
    }

    /// True when `serial` is the serial of an earlier valid row, recorded
    /// marked (see the pipeline's `ItemMap::mark`).
    pub fn is_marked(&self, serial: &Serial) -> bool {
        let PreparedSerial(k, h) = PreparedSerial::new(serial);
        match k {
            SerialKey::Hex(v) => self.hex_serials.is_key_marked(v),
            SerialKey::Short(k) => self.short_serials.is_key_marked(&k, h),
            SerialKey::Mid(k) => self.mid_serials.is_key_marked(&k),
            SerialKey::Long(k) => self.long_serials.is_key_marked(&k, h),
        }
    }

    /// True when one of `set` is recorded marked.
    pub fn marks_any(&self, set: &SerialSet) -> bool {
        fn any<K: Key>(index: &KeySet<K>, set: &KeySet<K>) -> bool {
            set.iter()
                .any(|k| index.is_key_marked(&k, KeySet::hash(&k)))
        }
        set.hex.iter().any(|v| self.hex_serials.is_key_marked(v))
            || any(&self.short_serials, &set.short)
            || set.mid.iter().any(|k| self.mid_serials.is_key_marked(&k))
            || any(&self.long_serials, &set.long)
    }

    /// Every serial recorded marked.
    pub fn marked_serials(&self) -> SerialSet {
        let mut set = SerialSet {
            hex: KeySet::with_capacity(self.hex_serials.len()),
            short: KeySet::with_capacity(self.short_serials.len()),
            mid: KeySet::with_capacity(self.mid_serials.len()),
            long: KeySet::with_capacity(self.long_serials.len()),
        };
        for v in self.hex_serials.marked() {
            set.hex.insert(v);
        }
        for k in self.short_serials.marked() {
            set.short.insert(k);
        }
        for k in self.mid_serials.marked() {
            set.mid.insert(k);
        }
        for k in self.long_serials.marked() {
            set.long.insert(k);
        }
        set
    }

    fn prefetch(&self, keys: &RowKeys) {
        let p = &keys.prepared;
        match p.serial {
            Some(PreparedSerial(SerialKey::Hex(v), h)) => self.hex_serials.prefetch(v, h),
            Some(PreparedSerial(SerialKey::Short(_), h)) => self.short_serials.prefetch(h),
            Some(PreparedSerial(SerialKey::Mid(k), h)) => self.mid_serials.prefetch(&k, h),
            Some(PreparedSerial(SerialKey::Long(_), h)) => self.long_serials.prefetch(h),
            None => {}
        }
        if let Some(m) = keys.mac {
            self.macs.prefetch(m.as_u64(), p.mac_hash);
        }
        if keys.license.is_some() {
            self.licenses.prefetch(p.license_hash);
        }
    }

    fn check_row(&mut self, keys: &RowKeys, role: Role) -> Dups {
        let p = &keys.prepared;
        // Look every key up first and record them only if none repeats:
        // each key goes to a different set, so the free slot a look-up
        // found is still the right one when the keys are recorded.
        let serial = p.serial.map(|PreparedSerial(k, h)| match k {
            SerialKey::Hex(v) => SerialProbe::Hex(self.hex_serials.probe(v, h)),
            SerialKey::Short(k) => SerialProbe::Plain(self.short_serials.probe(&k, h)),
            SerialKey::Mid(k) => SerialProbe::Mid(self.mid_serials.probe(&k, h)),
            SerialKey::Long(k) => SerialProbe::Plain(self.long_serials.probe(&k, h)),
        });
        let mac = keys
            .mac
            .map(|m| (m.as_u64(), self.macs.probe(m.as_u64(), p.mac_hash)));
        let license_key = keys.license.map(|l| l.key());
        let license = license_key.map(|k| self.licenses.probe(&k, p.license_hash));
        let dups = Dups {
            serial: serial.is_some_and(SerialProbe::is_present),
            mac: mac.is_some_and(|(_, at)| at.is_present()),
            license: license.is_some_and(Probe::is_present),
        };
        let Role::Record { mark } = role else {
            return dups;
        };
        if !dups.any() {
            if let (Some(PreparedSerial(k, _)), Some(at)) = (p.serial, serial) {
                match (k, at) {
                    (SerialKey::Hex(v), SerialProbe::Hex(at)) => self.hex_serials.fill(v, at, mark),
                    (SerialKey::Short(k), SerialProbe::Plain(Probe::Vacant(slot))) => {
                        self.short_serials.fill(k, slot, mark)
                    }
                    (SerialKey::Mid(k), SerialProbe::Mid(at)) => self.mid_serials.fill(k, at, mark),
                    (SerialKey::Long(k), SerialProbe::Plain(Probe::Vacant(slot))) => {
                        self.long_serials.fill(k, slot, mark)
                    }
                    _ => {}
                }
            }
            if let Some((v, at)) = mac {
                self.macs.fill(v, at, false);
            }
            if let (Some(k), Some(Probe::Vacant(slot))) = (license_key, license) {
                self.licenses.fill(k, slot, false);
            }
        }
        dups
    }

    /// The rejects for a row's repeated keys.
    pub fn rejects(keys: &RowKeys, dups: Dups) -> Vec<Reject> {
        let mut rejects = Vec::new();
        let mut dup = |column: &'static str, value: String, code: RejectCode, what: &str| {
            rejects.push(Reject {
                row: keys.row,
                column: Cow::Borrowed(column),
                message: format!("{what} {value} already appears in an earlier row; the first occurrence is kept"),
                site: Default::default(),
                value,
                code,
            });
        };
        if let (true, Some(s)) = (dups.serial, keys.serial) {
            dup(
                "serial_number",
                s.to_string(),
                RejectCode::DuplicateSerial,
                "serial",
            );
        }
        if let (true, Some(m)) = (dups.mac, keys.mac) {
            dup(
                "mac_address",
                m.to_string(),
                RejectCode::DuplicateMac,
                "MAC",
            );
        }
        if let (true, Some(l)) = (dups.license, keys.license) {
            dup(
                "license_id",
                l.to_string(),
                RejectCode::DuplicateLicense,
                "license",
            );
        }
        rejects
    }
}
