//! Progress events. Stages report through this trait and never touch the
//! terminal; the CLI shows them with indicatif (see `cli::progress`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub trait Progress: Sync {
    /// An input is being read; `bytes_read` grows as it is consumed.
    fn start(&self, _total_bytes: Option<u64>, _bytes_read: Arc<AtomicU64>) {}
    /// `n` more rows were processed.
    fn rows(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Reports nothing: for tests, benchmarks and `--quiet`.
pub struct NoProgress;

impl Progress for NoProgress {}
