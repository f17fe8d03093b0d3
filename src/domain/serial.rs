//! Device serial numbers and license ids (SPEC §3).

use std::fmt;

use crate::sys::ascii::AsciiArray;

/// A device serial: 8–20 upper-case ASCII letters and digits (the bounds come
/// from the policy), with the spaces and hyphens of printed labels removed.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(AsciiArray<{ Serial::MAX }>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("serial has {0} characters after removing spaces and '-'; expected {1} to {2}")]
    Length(usize, usize, usize),
    #[error("serial may only contain letters A-Z and digits 0-9")]
    Charset,
}

impl Serial {
    /// The longest serial any policy may allow.
    pub const MAX: usize = 32;

    pub fn parse(input: &str, min_len: usize, max_len: usize) -> Result<Serial, SerialError> {
        let max_len = max_len.min(Serial::MAX);
        // The usual serial is canonical already: copied as it is.
        let b = input.as_bytes();
        if (min_len.max(1)..=max_len).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        {
            if let Some(text) = AsciiArray::new(b) {
                return Ok(Serial(text));
            }
        }
        Serial::parse_slow(input, min_len, max_len)
    }

    /// [`Serial::parse`] of a serial in any case, with spaces or hyphens.
    fn parse_slow(input: &str, min_len: usize, max_len: usize) -> Result<Serial, SerialError> {
        let mut bytes = [0u8; Serial::MAX];
        let mut len = 0usize;
        let mut charset_ok = true;
        for b in input.bytes() {
            if b == b' ' || b == b'-' || b == b'\t' {
                continue;
            }
            if !b.is_ascii_alphanumeric() {
                charset_ok = false;
            }
            if len < Serial::MAX {
                bytes[len] = b.to_ascii_uppercase();
            }
            len += 1;
        }
        if !charset_ok {
            return Err(SerialError::Charset);
        }
        if len < min_len || len > max_len {
            return Err(SerialError::Length(len, min_len, max_len));
        }
        AsciiArray::new(&bytes[..len])
            .map(Serial)
            .ok_or(SerialError::Charset)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// [`Serial::key`] computed in 64 bits, for serials of up to 12
    /// characters (37^12 < 2^63, so the value is the same).
    pub fn short_key(&self) -> Option<u64> {
        let b = self.as_bytes();
        (b.len() <= 12).then(|| base37(b))
    }

    /// [`Serial::key`] in two parts, for serials of up to 24 characters:
    /// the base-37 numbers of the characters before the last twelve and of
    /// the last twelve (each below 37^12 < 2^63).
    pub fn key_parts(&self) -> Option<(u64, u64)> {
        let b = self.as_bytes();
        (b.len() <= 24).then(|| {
            let (head, tail) = b.split_at(b.len().saturating_sub(12));
            (base37(head), base37(tail))
        })
    }

    /// A collision-free 128-bit key for the duplicate index (base 37 with 0 as
    /// padding, so "A" and "A0" differ). Serials over 24 characters fall back to
    /// folding, which the default policy (max 20) never reaches.
    pub fn key(&self) -> u128 {
        if let Some((head, tail)) = self.key_parts() {
            // The last twelve characters are the low base-37 digits.
            return u128::from(head) * u128::from(POW37[12]) + u128::from(tail);
        }
        let b = self.as_bytes();
        let mut k: u128 = 0;
        for &b in b {
            k = k
                .wrapping_mul(37)
                .wrapping_add(u128::from(alnum_digit(b)) + 1);
        }
        k
    }
}

/// 37^0 to 37^12.
const POW37: [u64; 13] = {
    let mut p = [1u64; 13];
    let mut i = 1;
    while i < 13 {
        p[i] = p[i - 1] * 37;
        i += 1;
    }
    p
};

/// Up to 12 serial characters (`0-9A-Z`) as a base-37 number, digit
/// `value + 1`, first character most significant: eight and four at a time
/// (see [`swar37`]), the rest one by one.
fn base37(b: &[u8]) -> u64 {
    debug_assert!(b.len() <= 12);
    let mut k = 0u64;
    let mut rest = b;
    if let Some((eight, r)) = rest.split_first_chunk::<8>() {
        k = swar37(u64::from_le_bytes(*eight), 8);
        rest = r;
    }
    if let Some((four, r)) = rest.split_first_chunk::<4>() {
        k = k * POW37[4] + swar37(u64::from(u32::from_le_bytes(*four)), 4);
        rest = r;
    }
    for &c in rest {
        k = k * 37 + u64::from(alnum_digit(c)) + 1;
    }
    k
}

/// `n` (4 or 8) characters `0-9A-Z` packed little-endian in `w` as a base-37
/// number, in a few word operations instead of one multiplication per
/// character: every byte becomes its digit + 1 (1–36), then neighbouring
/// digits, pairs and quads are combined in place. No lane overflows: 36·37
/// + 36 < 2^16 and 1368·37² + 1368 < 2^32.
fn swar37(w: u64, n: usize) -> u64 {
    // One in each byte that holds a character.
    let ones: u64 = if n == 4 {
        0x0101_0101
    } else {
        0x0101_0101_0101_0101
    };
    // Digits: c - '0' + 1; letters ('A' = 0x41 and up) 7 less again.
    let letters = ((w + 0x3F * ones) >> 7) & ones;
    let v = w - 0x2F * ones - 7 * letters;
    let pairs = (v & 0x00FF_00FF_00FF_00FF) * 37 + ((v >> 8) & 0x00FF_00FF_00FF_00FF);
    let quads =
        (pairs & 0x0000_FFFF_0000_FFFF) * (37 * 37) + ((pairs >> 16) & 0x0000_FFFF_0000_FFFF);
    if n == 4 {
        quads & 0xFFFF_FFFF
    } else {
        (quads & 0xFFFF_FFFF) * POW37[4] + (quads >> 32)
    }
}

/// 0–9 for digits, 10–35 for letters (upper-case only reaches here).
fn alnum_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        _ => b.wrapping_sub(b'A') + 10,
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.as_str())
    }
}

/// A license id: 16 letters and digits, canonically `XXXX-XXXX-XXXX-XXXX`.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LicenseId([u8; 16]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("license id must be 16 letters and digits, in groups of 4 (XXXX-XXXX-XXXX-XXXX) or without separators")]
pub struct LicenseError;

impl LicenseId {
    /// Accepts any separator between the four groups, or none at all.
    pub fn parse(input: &str) -> Result<LicenseId, LicenseError> {
        let s = input.trim();
        let mut out = [0u8; 16];
        let mut n = 0usize;
        // Characters in each group; a fifth group is never valid.
        let mut groups = [0usize; 4];
        let mut g = 0usize;
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() {
                if n == 16 {
                    return Err(LicenseError);
                }
                out[n] = b.to_ascii_uppercase();
                n += 1;
                groups[g] += 1;
            } else if b.is_ascii_punctuation() || b == b' ' {
                if groups[g] == 0 || g == 3 {
                    return Err(LicenseError);
                }
                g += 1;
            } else {
                return Err(LicenseError);
            }
        }
        let grouped_ok = g == 0 || groups == [4, 4, 4, 4];
        if n != 16 || !grouped_ok {
            return Err(LicenseError);
        }
        Ok(LicenseId(out))
    }

    pub fn key(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |k, &b| k * 36 + u128::from(alnum_digit(b)))
    }

    /// The canonical text `XXXX-XXXX-XXXX-XXXX`, as bytes, without going
    /// through `fmt`.
    pub fn canonical(&self) -> [u8; 19] {
        let mut out = [b'-'; 19];
        for (g, chunk) in self.0.chunks(4).enumerate() {
            out[g * 5..g * 5 + 4].copy_from_slice(chunk);
        }
        out
    }
}

impl fmt::Display for LicenseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // Only ASCII alphanumerics are ever stored.
            f.write_str(std::str::from_utf8(chunk).unwrap_or_default())?;
        }
        Ok(())
    }
}

impl fmt::Debug for LicenseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LicenseId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn serial_is_trimmed_upper_cased_and_stripped() {
        let s = Serial::parse(" 0004-f2ab cdef ", 8, 20).unwrap();
        assert_eq!(s.as_str(), "0004F2ABCDEF");
    }

    #[test]
    fn serial_length_and_charset() {
        assert_eq!(
            Serial::parse("ABC1234", 8, 20),
            Err(SerialError::Length(7, 8, 20))
        );
        assert_eq!(
            Serial::parse("A23456789012345678901", 8, 20),
            Err(SerialError::Length(21, 8, 20))
        );
        assert_eq!(Serial::parse("ABCD_1234", 8, 20), Err(SerialError::Charset));
        assert_eq!(Serial::parse("ABCDÉ1234", 8, 20), Err(SerialError::Charset));
        assert!(Serial::parse("ABCD1234", 8, 20).is_ok());
        assert!(Serial::parse("A2345678901234567890", 8, 20).is_ok());
    }

    #[test]
    fn serial_keys_are_distinct_for_padding_lookalikes() {
        let a = Serial::parse("A0000000", 1, 20).unwrap();
        let b = Serial::parse("A00000000", 1, 20).unwrap();
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn license_notations() {
        for s in [
            "abcd-efgh-1234-5678",
            "ABCD EFGH 1234 5678",
            "ABCD.EFGH.1234.5678",
            "ABCDEFGH12345678",
            " abcd_efgh_1234_5678 ",
        ] {
            assert_eq!(
                LicenseId::parse(s).unwrap().to_string(),
                "ABCD-EFGH-1234-5678",
                "{s}"
            );
        }
        for s in [
            "",
            "ABCD-EFGH-1234",
            "ABCD-EFGH-1234-56789",
            "ABC-DEFGH-1234-5678",
            "ABCD--EFGH-1234-5678",
            "ABCDEFGH-12345678",
            "ABCD-EFGH-1234-567É",
            "ABCD-EFGH-1234-5678-",
            "-ABCD-EFGH-1234-5678",
            "AB-CD-EFGH-1234-5678",
        ] {
            assert_eq!(LicenseId::parse(s), Err(LicenseError), "{s:?}");
        }
    }

    /// The key by definition: one character at a time.
    fn key_by_folding(s: &str) -> u128 {
        s.bytes().fold(0u128, |k, b| {
            k.wrapping_mul(37)
                .wrapping_add(u128::from(alnum_digit(b)) + 1)
        })
    }

    proptest! {
        #[test]
        fn keys_equal_folding_one_character_at_a_time(s in "[A-Z0-9]{1,32}") {
            let serial = Serial::parse(&s, 1, 32).unwrap();
            prop_assert_eq!(serial.key(), key_by_folding(&s));
            if let Some(k) = serial.short_key() {
                prop_assert_eq!(u128::from(k), key_by_folding(&s));
            }
        }

        #[test]
        fn short_key_equals_key(s in "[A-Z0-9]{1,20}") {
            let serial = Serial::parse(&s, 1, 20).unwrap();
            match serial.short_key() {
                Some(k) => prop_assert_eq!(u128::from(k), serial.key()),
                None => prop_assert!(s.len() > 12),
            }
        }

        #[test]
        fn the_canonical_shortcut_agrees_with_the_general_parser(
            s in "[A-Z0-9]{0,34}|[A-Za-z0-9 \\t-]{0,24}|\\PC{0,24}",
            min in 0usize..10,
            max in 0usize..40,
        ) {
            prop_assert_eq!(
                Serial::parse(&s, min, max),
                Serial::parse_slow(&s, min, max.min(Serial::MAX))
            );
        }

        #[test]
        fn serial_round_trips(s in "[A-Z0-9]{8,20}") {
            let serial = Serial::parse(&s, 8, 20).unwrap();
            prop_assert_eq!(serial.as_str(), s.as_str());
            prop_assert_eq!(Serial::parse(&serial.to_string(), 8, 20).unwrap(), serial);
        }

        #[test]
        fn serial_keys_are_injective(a in "[A-Z0-9]{1,20}", b in "[A-Z0-9]{1,20}") {
            let (sa, sb) = (Serial::parse(&a, 1, 20).unwrap(), Serial::parse(&b, 1, 20).unwrap());
            prop_assert_eq!(sa.key() == sb.key(), a == b);
        }

        #[test]
        fn license_round_trips(s in "[A-Z0-9]{16}") {
            let id = LicenseId::parse(&s).unwrap();
            prop_assert_eq!(LicenseId::parse(&id.to_string()), Ok(id));
            prop_assert_eq!(id.to_string().replace('-', ""), s);
        }

        /// Accepted exactly when its letters and digits are one group of
        /// sixteen or four groups of four.
        #[test]
        fn license_groups(
            s in "([A-Z0-9]{3,5}[-. ]{0,2}){0,5}|[A-Z0-9]{15,17}|([A-Z0-9]{3,5}[-. ]){3}[A-Z0-9]{3,5}"
        ) {
            let groups: Vec<usize> = s.trim().split(['-', '.', ' ']).map(str::len).collect();
            let ok = groups == [16] || groups == [4, 4, 4, 4];
            prop_assert_eq!(LicenseId::parse(&s).is_ok(), ok, "{:?}", s);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = Serial::parse(&s, 8, 20);
            let _ = LicenseId::parse(&s);
        }
    }
}
