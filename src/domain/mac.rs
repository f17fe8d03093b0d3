//! MAC addresses (SPEC §3): every common notation in, one canonical form out.

use std::fmt;
use std::str::FromStr;

/// A 48-bit unicast MAC address. Only [`Mac::parse`] builds one, so a `Mac`
/// is never all-zero, broadcast or multicast.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("not a MAC address: expected 12 hex digits as 00:04:F2:AB:CD:EF, 00-04-F2-AB-CD-EF, 0004.f2ab.cdef or 0004F2ABCDEF")]
    Invalid,
    #[error("reserved MAC address ({0}): it cannot identify a device")]
    Reserved(&'static str),
}

impl Mac {
    /// Parses the colon, hyphen, Cisco-dot and bare notations, in any case.
    pub fn parse(input: &str) -> Result<Mac, MacError> {
        let s = super::trim(input).as_bytes();
        let mut value: u64 = 0;
        let mut digits = 0;
        let mut push = |b: u8| -> Result<(), MacError> {
            let d = hex_digit(b).ok_or(MacError::Invalid)?;
            value = (value << 4) | u64::from(d);
            digits += 1;
            Ok(())
        };
        match s.len() {
            12 => return Mac::from_u64(hex48(s).ok_or(MacError::Invalid)?),
            14 => {
                // Cisco: 0004.f2ab.cdef
                for (i, &b) in s.iter().enumerate() {
                    if i == 4 || i == 9 {
                        if b != b'.' {
                            return Err(MacError::Invalid);
                        }
                    } else {
                        push(b)?;
                    }
                }
            }
            17 => {
                // The usual notations (colons or hyphens), with a table:
                // every digit is checked, errors come out the same.
                let sep = s[2];
                if sep == b':' || sep == b'-' {
                    let (mut v, mut bad) = (0u64, 0u8);
                    for g in 0..6 {
                        let i = g * 3;
                        if g < 5 && s[i + 2] != sep {
                            return Err(MacError::Invalid);
                        }
                        let (hi, lo) = (HEX[usize::from(s[i])], HEX[usize::from(s[i + 1])]);
                        bad |= hi | lo;
                        v = (v << 8) | u64::from((hi << 4) | (lo & 0x0F));
                    }
                    if bad & 0x10 != 0 {
                        return Err(MacError::Invalid);
                    }
                    return Mac::from_u64(v);
                }
                if sep != b':' && sep != b'-' {
                    return Err(MacError::Invalid);
                }
                for (i, &b) in s.iter().enumerate() {
                    if i % 3 == 2 {
                        if b != sep {
                            return Err(MacError::Invalid);
                        }
                    } else {
                        push(b)?;
                    }
                }
            }
            _ => return Err(MacError::Invalid),
        }
        debug_assert_eq!(digits, 12);
        Mac::from_u64(value)
    }

    /// Builds a MAC from its 48-bit value, refusing the reserved ones.
    pub fn from_u64(value: u64) -> Result<Mac, MacError> {
        if value > 0xFFFF_FFFF_FFFF {
            return Err(MacError::Invalid);
        }
        if value == 0 {
            return Err(MacError::Reserved("all zero"));
        }
        if value == 0xFFFF_FFFF_FFFF {
            return Err(MacError::Reserved("broadcast"));
        }
        // The I/G bit is the least significant bit of the first octet.
        if (value >> 40) & 1 == 1 {
            return Err(MacError::Reserved("multicast"));
        }
        Ok(Mac(value))
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The organisationally unique identifier: the first three octets.
    pub fn oui(self) -> u32 {
        (self.0 >> 24) as u32
    }

    /// The 12 upper-case hex digits, as a desk phone prints them as its serial.
    pub fn hex12(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        for (i, o) in out.iter_mut().enumerate() {
            let nibble = (self.0 >> (44 - 4 * i)) & 0xF;
            *o = b"0123456789ABCDEF"[nibble as usize];
        }
        out
    }
}

/// Parses an OUI written as `00:04:F2`, `00-04-F2` or `0004F2`.
pub fn parse_oui(input: &str) -> Option<u32> {
    let hex: Vec<u8> = input
        .trim()
        .bytes()
        .filter(|b| *b != b':' && *b != b'-')
        .collect();
    if hex.len() != 6 {
        return None;
    }
    hex.iter()
        .try_fold(0u32, |acc, &b| Some((acc << 4) | u32::from(hex_digit(b)?)))
}

/// Hex digit values by byte; 0x10 marks a byte that is not one.
const HEX: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Twelve hex digits, in any case, as a 48-bit number (the bare MAC
/// notation; also a desk phone's serial, in the duplicate index).
pub(crate) fn hex48(b: &[u8]) -> Option<u64> {
    if b.len() != 12 {
        return None;
    }
    let (mut v, mut bad) = (0u64, 0u8);
    for &c in b {
        let d = HEX[usize::from(c)];
        bad |= d;
        v = (v << 4) | u64::from(d & 0x0F);
    }
    (bad & 0x10 == 0).then_some(v)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_notation_gives_the_canonical_form() {
        for s in [
            "00:04:f2:ab:cd:ef",
            "00:04:F2:AB:CD:EF",
            "00-04-F2-AB-CD-EF",
            "0004.f2ab.cdef",
            "0004F2ABCDEF",
            "  0004f2abcdef ",
        ] {
            assert_eq!(
                Mac::parse(s).unwrap().to_string(),
                "00:04:F2:AB:CD:EF",
                "{s}"
            );
        }
    }

    #[test]
    fn malformed_notations_are_invalid() {
        for s in [
            "",
            "00:04:F2:AB:CD",
            "00:04:F2:AB:CD:EF:01",
            "00:04-F2:AB:CD:EF",
            "0004F2ABCDEG",
            "0004.f2ab-cdef",
            "00.04.F2.AB.CD.EF",
            "0x0004F2ABCDEF",
            "00:04:F2:AB:CD:É",
        ] {
            assert_eq!(Mac::parse(s), Err(MacError::Invalid), "{s:?}");
        }
    }

    #[test]
    fn reserved_addresses_are_refused() {
        assert_eq!(
            Mac::parse("00:00:00:00:00:00"),
            Err(MacError::Reserved("all zero"))
        );
        assert_eq!(
            Mac::parse("FF:FF:FF:FF:FF:FF"),
            Err(MacError::Reserved("broadcast"))
        );
        assert_eq!(
            Mac::parse("01:00:5E:00:00:01"),
            Err(MacError::Reserved("multicast"))
        );
        // Locally administered but unicast is a valid (if foreign) address.
        assert!(Mac::parse("02:00:00:00:00:01").is_ok());
    }

    #[test]
    fn oui_and_hex12() {
        let mac = Mac::parse("64:16:7f:01:02:03").unwrap();
        assert_eq!(mac.oui(), 0x64167F);
        assert_eq!(&mac.hex12(), b"64167F010203");
        assert_eq!(parse_oui("64:16:7F"), Some(0x64167F));
        assert_eq!(parse_oui("64167f"), Some(0x64167F));
        assert_eq!(parse_oui("64:16"), None);
    }

    /// The colon and hyphen notations as the general loop read them.
    fn reference(s: &str) -> Result<Mac, MacError> {
        let b = s.as_bytes();
        let sep = b[2];
        if !(sep == b':' || sep == b'-') || (2..17).step_by(3).any(|i| b[i] != sep) {
            return Err(MacError::Invalid);
        }
        let hex: String = (0..17)
            .filter(|i| i % 3 != 2)
            .map(|i| b[i] as char)
            .collect();
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(MacError::Invalid);
        }
        u64::from_str_radix(&hex, 16)
            .map_err(|_| MacError::Invalid)
            .and_then(Mac::from_u64)
    }

    proptest! {
        #[test]
        fn separated_notations_match_the_reference(s in "[0-9a-fA-FgG:.\\-]{17}|([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-FxX]{2}") {
            prop_assert_eq!(Mac::parse(&s), reference(&s));
        }

        #[test]
        fn canonical_form_round_trips(v in 0u64..=0xFFFF_FFFF_FFFF) {
            if let Ok(mac) = Mac::from_u64(v) {
                let text = mac.to_string();
                prop_assert_eq!(Mac::parse(&text), Ok(mac));
                prop_assert_eq!(Mac::parse(&text.replace(':', "-").to_lowercase()), Ok(mac));
                prop_assert_eq!(Mac::parse(&text.replace(':', "")), Ok(mac));
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = Mac::parse(&s);
        }
    }
}
