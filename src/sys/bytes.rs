//! Finding one byte value in a block of 16 bytes at once.

/// Bytes per block of [`ByteFinder::mask`].
pub const BLOCK: usize = 16;

/// Finds a byte value (a CSV delimiter) in a block of [`BLOCK`] bytes: one
/// SSE2 compare on x86-64 (where SSE2 is always there), eight bytes at a
/// time in a word elsewhere.
#[derive(Clone, Copy)]
pub struct ByteFinder {
    #[cfg(target_arch = "x86_64")]
    splat: std::arch::x86_64::__m128i,
    #[cfg(not(target_arch = "x86_64"))]
    byte: u8,
}

impl ByteFinder {
    pub fn new(byte: u8) -> ByteFinder {
        ByteFinder {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of x86-64 itself; the intrinsic reads no
            // memory.
            splat: unsafe { std::arch::x86_64::_mm_set1_epi8(byte as i8) },
            #[cfg(not(target_arch = "x86_64"))]
            byte,
        }
    }

    /// Bit `i` set when `block[i]` is the byte.
    #[inline]
    pub fn mask(&self, block: &[u8; BLOCK]) -> u32 {
        let half = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&block[i..i + 8]);
            u64::from_le_bytes(w)
        };
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set_epi64x};
            // SAFETY: SSE2 is part of x86-64 itself; these intrinsics work
            // on values and read no memory.
            unsafe {
                let v = _mm_set_epi64x(half(8) as i64, half(0) as i64);
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, self.splat)) as u32
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            word_mask(half(0), self.byte) | word_mask(half(8), self.byte) << 8
        }
    }
}

/// Bit `i` set when byte `i` of the little-endian word `w` is `byte`: the
/// high bit of each such byte (exact: no carry crosses a byte), then
/// gathered into the low 8 bits by one multiplication.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
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
        /// Both ways (the one this target uses and the word one) against
        /// looking at each byte.
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
            let mut lo = [0u8; 8];
            lo.copy_from_slice(&block[..8]);
            let mut hi = [0u8; 8];
            hi.copy_from_slice(&block[8..]);
            proptest::prop_assert_eq!(
                word_mask(u64::from_le_bytes(lo), d) | word_mask(u64::from_le_bytes(hi), d) << 8,
                want
            );
        }
    }
}
