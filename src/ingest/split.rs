//! Finding a byte value (a CSV delimiter) in 16 bytes at once, a word of 8
//! at a time: the line splitter's inner step, portable and safe (no slower
//! than an SSE2 compare, benches/RESULTS.md).

/// Bytes per block of [`ByteFinder::mask`].
pub(super) const BLOCK: usize = 16;

/// Finds one byte value in blocks of [`BLOCK`] bytes.
#[derive(Clone, Copy)]
pub(super) struct ByteFinder {
    byte: u8,
}

impl ByteFinder {
    pub(super) fn new(byte: u8) -> ByteFinder {
        ByteFinder { byte }
    }

    /// Bit `i` set when `block[i]` is the byte.
    #[inline]
    pub(super) fn mask(&self, block: &[u8; BLOCK]) -> u32 {
        let half = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&block[i..i + 8]);
            u64::from_le_bytes(w)
        };
        word_mask(half(0), self.byte) | word_mask(half(8), self.byte) << 8
    }
}

/// Bit `i` set when byte `i` of the little-endian word `w` is `byte`: the
/// high bit of each such byte (exact: no carry crosses a byte), then
/// gathered into the low 8 bits by one multiplication.
#[inline]
fn word_mask(w: u64, byte: u8) -> u32 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let x = w ^ u64::from_le_bytes([byte; 8]);
    let h = !(((x & LOW7) + LOW7) | x | LOW7);
    ((h >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Against looking at each byte.
        #[test]
        fn masks_find_each_byte(
            block in proptest::array::uniform16(
                proptest::sample::select(vec![b',', b';', b'a', 0x80, 0xFF, 0x2B, 0x2D, 0xAC, 0x00]),
            ),
            semicolon in proptest::bool::ANY,
        ) {
            let d = if semicolon { b';' } else { b',' };
            let want = block.iter().enumerate().fold(0u32, |m, (i, &b)| m | u32::from(b == d) << i);
            proptest::prop_assert_eq!(ByteFinder::new(d).mask(&block), want);
        }
    }
}
