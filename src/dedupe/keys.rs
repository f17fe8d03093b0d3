//! A row's keys for the duplicate index: its identifiers as narrow exact
//! keys, with their hashes, computed on the validating threads so that the
//! index (on one thread) only probes.

use super::mac_like::MacLikeSet;
use super::mid::{mid_key, SplitMid};
use super::table::KeySet;
use crate::domain::{hex48, LicenseId, Mac, Serial};

/// The identifiers of a valid row that must be unique in the file.
#[derive(Debug, Clone, Copy)]
pub struct RowKeys {
    pub row: u64,
    /// A device's serial (a license's bound serial is not a key).
    pub serial: Option<Serial>,
    pub mac: Option<Mac>,
    pub license: Option<LicenseId>,
    /// The same, as the duplicate index stores them.
    pub(super) prepared: Prepared,
}

impl RowKeys {
    pub fn new(
        row: u64,
        serial: Option<Serial>,
        mac: Option<Mac>,
        license: Option<LicenseId>,
    ) -> RowKeys {
        RowKeys {
            row,
            serial,
            mac,
            license,
            prepared: Prepared::new(serial.as_ref(), mac, license),
        }
    }
}

/// The narrow exact keys of a row and their hashes, computed on the
/// validating thread so that the duplicate index (on one thread) only
/// probes.
#[derive(Debug, Clone, Copy, Default)]
///
/// Only the serial's key is kept (the MAC's is its bytes, and licenses are
/// few): an outcome per row crosses from thread to thread, so its size
/// counts.
pub(super) struct Prepared {
    pub(super) serial: Option<PreparedSerial>,
    /// The hashes of the MAC ([`MacLikeSet::hash`]) and of the license id's
    /// key (0 when absent).
    pub(super) mac_hash: u64,
    pub(super) license_hash: u64,
}

impl Prepared {
    fn new(serial: Option<&Serial>, mac: Option<Mac>, license: Option<LicenseId>) -> Prepared {
        Prepared {
            serial: serial.map(PreparedSerial::new),
            mac_hash: mac.map_or(0, |m| MacLikeSet::hash(m.as_u64())),
            license_hash: license.map_or(0, |l| KeySet::hash(&l.key())),
        }
    }
}

/// A serial key, tagged by width so that two widths never compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SerialKey {
    /// 12 hex digits, as a 48-bit number.
    Hex(u64),
    Short(u64),
    Mid([u8; 10]),
    Long([u8; 16]),
}

/// `Serial::key` is base 37 over the characters: 37^12 < 2^63, so the
/// short form loses nothing; a serial of 13 to 15 characters keeps its
/// key's two parts ([`mid_key`]), which the index splits.
#[inline]
pub(super) fn serial_key(s: &Serial) -> SerialKey {
    // `hex48` takes either case, but a serial is upper case: two serials
    // never share a number.
    if let Some(v) = hex48(s.as_bytes()) {
        return SerialKey::Hex(v);
    }
    if let Some(k) = s.short_key() {
        return SerialKey::Short(k);
    }
    let b = s.as_bytes();
    match b.len() {
        0..=12 => SerialKey::Short(s.key() as u64),
        // Up to three characters before the last twelve: a head below
        // 37^3 < 2^16.
        13..=15 => match s.key_parts() {
            Some((head, tail)) => SerialKey::Mid(mid_key(tail, head as u16)),
            None => SerialKey::Long(s.key().to_le_bytes()),
        },
        _ => SerialKey::Long(s.key().to_le_bytes()),
    }
}

/// A serial's key and its hash in the [`DuplicateIndex`](super::DuplicateIndex),
/// computed ahead on a validating thread so that the index only probes. (A
/// hex serial's hash is the one of its [`MacLikeSet`] table, not of
/// [`SerialSet`](super::SerialSet)'s.)
#[derive(Debug, Clone, Copy)]
pub struct PreparedSerial(pub(super) SerialKey, pub(super) u64);

impl PreparedSerial {
    #[inline]
    pub fn new(s: &Serial) -> PreparedSerial {
        let k = serial_key(s);
        let h = match k {
            SerialKey::Hex(v) => MacLikeSet::hash(v),
            SerialKey::Short(k) => KeySet::hash(&k),
            SerialKey::Mid(k) => SplitMid::hash(&k),
            SerialKey::Long(k) => KeySet::hash(&k),
        };
        PreparedSerial(k, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn narrow_serial_keys_are_exact(
            a in "[0-9A-F]{12}|[A-Z0-9]{1,20}",
            b in "[0-9A-F]{12}|[A-Z0-9]{1,20}",
        ) {
            let (sa, sb) = (Serial::parse(&a, 1, 20).unwrap(), Serial::parse(&b, 1, 20).unwrap());
            proptest::prop_assert_eq!(serial_key(&sa) == serial_key(&sb), a == b);
        }
    }
}
