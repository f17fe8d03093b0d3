//! A set of serials kept as the duplicate index keeps them (`quote`'s
//! eligible devices).

use super::keys::{serial_key, SerialKey};
use super::table::KeySet;
use crate::domain::Serial;

/// A set of serials stored as their narrow exact keys: a third of the
/// memory of a `HashSet<Serial>` at millions of devices.
pub struct SerialSet {
    pub(super) hex: KeySet<u64>,
    pub(super) short: KeySet<u64>,
    pub(super) mid: KeySet<[u8; 10]>,
    pub(super) long: KeySet<[u8; 16]>,
}

impl Default for SerialSet {
    fn default() -> Self {
        SerialSet::with_capacity(0)
    }
}

impl SerialSet {
    pub fn new() -> SerialSet {
        SerialSet::default()
    }

    /// Sized for about `n` serials, so that it does not grow while filled.
    pub fn with_capacity(n: usize) -> SerialSet {
        SerialSet {
            hex: KeySet::with_capacity(n / 2),
            short: KeySet::with_capacity(n / 4),
            mid: KeySet::with_capacity(n / 2),
            long: KeySet::with_capacity(n / 64),
        }
    }

    pub fn insert(&mut self, s: Serial) -> bool {
        match serial_key(&s) {
            SerialKey::Hex(v) => self.hex.insert(v),
            SerialKey::Short(k) => self.short.insert(k),
            SerialKey::Mid(k) => self.mid.insert(k),
            SerialKey::Long(k) => self.long.insert(k),
        }
    }

    pub fn contains(&self, s: &Serial) -> bool {
        match serial_key(s) {
            SerialKey::Hex(v) => self.hex.contains(&v),
            SerialKey::Short(k) => self.short.contains(&k),
            SerialKey::Mid(k) => self.mid.contains(&k),
            SerialKey::Long(k) => self.long.contains(&k),
        }
    }

    pub fn len(&self) -> usize {
        self.hex.len() + self.short.len() + self.mid.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
