//! Memory hints: a prefetch, and pages for a table before it is filled.

use std::marker::PhantomData;

/// A hint that `value` will be read soon: its cache line is fetched
/// without waiting. Only a hint: nothing happens on other CPUs.
#[inline]
pub fn prefetch<T>(value: &T) {
    prefetch_line((value as *const T).cast());
}

/// [`prefetch`] of every cache line `value` spans: a row's slot of report
/// lines (256 bytes) spans several.
#[inline]
pub fn prefetch_whole<T: ?Sized>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    for offset in line_offsets(std::mem::size_of_val(value)) {
        prefetch_line(start.wrapping_add(offset));
    }
}

/// Fetches the cache line holding `at` without waiting for it.
#[inline]
fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and never faults,
    // whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Offsets into `len` bytes, wherever they start, that fall in each cache
/// line the bytes span: one every [`CACHE_LINE`] bytes, and the last byte.
/// None for no bytes.
fn line_offsets(len: usize) -> impl Iterator<Item = usize> {
    (0..len).step_by(CACHE_LINE).chain(len.checked_sub(1))
}

/// The size of a cache line on the CPUs refleet is built for.
const CACHE_LINE: usize = 64;

/// The memory of a live slice, for [`populate`]: made only from a slice,
/// and borrowing it, so it cannot outlive it.
#[derive(Debug, Clone, Copy)]
pub struct Region<'a> {
    addr: usize,
    len: usize,
    _slice: PhantomData<&'a [u8]>,
}

impl<'a, T> From<&'a [T]> for Region<'a> {
    fn from(slice: &'a [T]) -> Region<'a> {
        Region {
            addr: slice.as_ptr() as usize,
            len: std::mem::size_of_val(slice),
            _slice: PhantomData,
        }
    }
}

/// Has the kernel back `regions` with pages now, on up to `threads`
/// threads, leaving their contents as they are (Linux 5.14+; elsewhere, or
/// on an older kernel, nothing happens and the pages come on first write).
///
/// Why: a large table is the shared zero page until first written, and the
/// kernel clears a page for it on first write. Left to the first writes,
/// all of that clearing lands on one thread (the ordered walk of the
/// duplicate index) while the others wait; here it is split over the
/// threads, and the caller waits for it.
pub fn populate(regions: &[Region<'_>], threads: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        const STEP: usize = 2 << 20;
        // Pieces of up to STEP bytes, page-aligned inside each region.
        let mut pieces = Vec::new();
        for r in regions {
            let mut at = r.addr.next_multiple_of(PAGE);
            let end = r.addr + r.len;
            while at < end {
                let n = STEP.min(end - at);
                pieces.push((at, n));
                at += n;
            }
        }
        let per = pieces.len().div_ceil(threads.max(1)).max(1);
        let advise = |part: &[(usize, usize)]| {
            for &(at, n) in part {
                debug_assert!(at % PAGE == 0 && n > 0);
                // SAFETY: `at..at + n` lies inside a region, borrowed from a
                // live slice for this call. MADV_POPULATE_WRITE faults its
                // pages in as a write would, without changing what they
                // hold, so readers of the slice see the same bytes.
                let rc =
                    unsafe { libc::madvise(at as *mut libc::c_void, n, libc::MADV_POPULATE_WRITE) };
                if rc != 0 {
                    // An older kernel: the first writes fault the pages in.
                    return;
                }
            }
        };
        std::thread::scope(|scope| {
            let mut parts = pieces.chunks(per);
            let mine = parts.next();
            for part in parts {
                // No thread to be had: this one does that part too.
                if std::thread::Builder::new()
                    .spawn_scoped(scope, move || advise(part))
                    .is_err()
                {
                    advise(part);
                }
            }
            if let Some(part) = mine {
                advise(part);
            }
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (regions, threads);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populating_keeps_what_the_memory_holds() {
        let big: Vec<u64> = (0..3_000_000u64).collect();
        let zeros = vec![0u32; 5_000_000];
        let empty: Vec<u8> = Vec::new();
        for threads in [0, 1, 3] {
            populate(
                &[
                    Region::from(big.as_slice()),
                    Region::from(zeros.as_slice()),
                    Region::from(empty.as_slice()),
                    Region::from(&big[1..7]),
                ],
                threads,
            );
        }
        assert!(big.iter().enumerate().all(|(i, v)| *v == i as u64));
        assert!(zeros.iter().all(|v| *v == 0));
    }

    /// Whatever the bytes' alignment, the offsets stay inside them and fall
    /// in every cache line they span.
    #[test]
    fn line_offsets_hit_every_line_and_stay_inside() {
        for len in 0..600 {
            let offsets: Vec<usize> = line_offsets(len).collect();
            assert!(offsets.iter().all(|&o| o < len), "len {len}: {offsets:?}");
            for align in 0..CACHE_LINE {
                let hit: std::collections::BTreeSet<usize> =
                    offsets.iter().map(|o| (align + o) / CACHE_LINE).collect();
                let spanned: std::collections::BTreeSet<usize> =
                    (0..len).map(|b| (align + b) / CACHE_LINE).collect();
                assert_eq!(hit, spanned, "len {len}, {align} bytes into a line");
            }
        }
    }

    #[test]
    fn a_prefetch_changes_nothing() {
        let v = [7u8; 3];
        prefetch(&v[2]);
        prefetch(&v);
        prefetch_whole(&v);
        prefetch_whole(&v[..0]);
        prefetch_whole(&());
        prefetch_whole(&[(); 4][..]);
        assert_eq!(v, [7; 3]);
    }
}
