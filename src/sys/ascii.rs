//! Short ASCII strings kept inline, read as `&str` without a check.

/// Up to `N` ASCII bytes, inline. Only ASCII gets in ([`AsciiArray::new`]
/// checks), so reading them as text needs no UTF-8 check: a serial number
/// is read as text several times per row, on the hot path of `validate`
/// and `quote`.
///
/// Equality, order and hash are those of the bytes, then the length.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsciiArray<const N: usize> {
    /// `bytes[..len]` are ASCII; the rest are 0.
    bytes: [u8; N],
    len: u8,
}

impl<const N: usize> AsciiArray<N> {
    /// `text` kept inline; `None` when it is longer than `N` (or than 255)
    /// bytes, or not all ASCII.
    pub fn new(text: &[u8]) -> Option<AsciiArray<N>> {
        let len = u8::try_from(text.len()).ok()?;
        if text.len() > N || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; N];
        bytes[..text.len()].copy_from_slice(text);
        Some(AsciiArray { bytes, len })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        let b = self.as_bytes();
        debug_assert!(b.is_ascii());
        // SAFETY: `new`, the only way to make one, lets only ASCII bytes in,
        // and ASCII is UTF-8.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ascii_that_fits_gets_in() {
        let a = AsciiArray::<8>::new(b"AB12").unwrap();
        assert_eq!(a.as_str(), "AB12");
        assert_eq!(a.as_bytes(), b"AB12");
        assert_eq!(AsciiArray::<8>::new(b"").unwrap().as_str(), "");
        assert_eq!(AsciiArray::<4>::new(b"ABCD").unwrap().as_str(), "ABCD");
        assert!(AsciiArray::<4>::new(b"ABCDE").is_none());
        assert!(AsciiArray::<8>::new("Ü".as_bytes()).is_none());
        assert!(AsciiArray::<8>::new(&[b'A', 0x80]).is_none());
        assert!(AsciiArray::<300>::new(&[b'A'; 256]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn what_gets_in_reads_back_as_the_same_text(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            match AsciiArray::<32>::new(&bytes) {
                Some(a) => {
                    proptest::prop_assert!(bytes.len() <= 32 && bytes.is_ascii());
                    proptest::prop_assert_eq!(a.as_str().as_bytes(), &bytes[..]);
                }
                None => proptest::prop_assert!(bytes.len() > 32 || !bytes.is_ascii()),
            }
        }
    }
}
