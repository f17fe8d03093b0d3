//! Report files: written under a temporary name in their final directory
//! and renamed when complete ([`AtomicFile`]). A large report goes to the
//! disk with direct I/O from a background thread once it has grown past a
//! few tens of megabytes (see [`AtomicFile`]).
//!
//! # Temporary files
//! Every temporary file refleet writes in an output folder (reports being
//! written, the spool of `results.csv`) comes from [`temp_in`]: it is named
//! `.refleet-<pid>-<16 random letters and digits>.tmp` and locked (`flock`)
//! by the process writing it for as long as it is open. A process that dies
//! without removing its own (kill -9, a power cut) leaves them behind, and
//! the next [`temp_in`] in that folder removes the ones whose writer is
//! gone: named exactly so, not locked by anyone (the kernel drops a dead
//! process's locks), and the pid in the name not alive (which covers the
//! instant between a file's creation and its lock). So a file named any
//! other way is never touched, nor one that another live run sharing the
//! folder is writing. A stale file whose pid was since reused by another
//! process stays until that process is gone.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use anyhow::Context;

use crate::sys::fs::set_direct;

const TEMP_PREFIX: &str = ".refleet-";
const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RANDOM: usize = 16;

/// A temporary file in `dir` (so the final rename stays on one file system),
/// readable like any other report (tempfile's default is owner-only), held
/// locked while open; first, the temporary files in `dir` of dead refleet
/// processes are removed (see the module documentation).
pub fn temp_in(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    sweep_dead_temps(dir);
    let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(&prefix)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RANDOM);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    // Where locks are not supported, the pid in the name still protects
    // the file while this process lives.
    if let Err(e) = tmp.as_file().try_lock() {
        tracing::debug!(path = %tmp.path().display(), error = %e, "cannot lock a temporary file");
    }
    Ok(tmp)
}

/// The pid in the name of a temporary file [`temp_in`] makes; `None` for
/// any other name.
fn temp_writer(name: &str) -> Option<i32> {
    let middle = name.strip_prefix(TEMP_PREFIX)?.strip_suffix(TEMP_SUFFIX)?;
    let (pid, random) = middle.split_once('-')?;
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if !digits || pid.starts_with('0') {
        return None;
    }
    if random.len() != TEMP_RANDOM || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Removes the temporary files of dead refleet processes in `dir` (see the
/// module documentation); returns their paths. Files it cannot open or
/// remove are left, with a log line: cleaning must not stop a run.
pub fn sweep_dead_temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_writer) else {
            continue;
        };
        // Only regular files (not followed through a symlink), of others.
        if u32::try_from(pid) == Ok(me) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_err() || crate::sys::fs::pid_alive(pid) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a temporary file left by a refleet process that died");
                removed.push(path);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a temporary file left by a refleet process that died");
            }
        }
    }
    removed
}

/// A failed write of the file at `path`: "cannot write PATH: reason". It
/// travels inside an `io::Error` (of the same kind) through writers that
/// pass on only its message (csv's errors have no source), so the reason is
/// in the message, and not also a source (which would say it twice).
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {cause}", path.display())]
struct WriteError {
    path: PathBuf,
    cause: std::io::Error,
}

/// `e` as a [`WriteError`] naming `path`, the file the user knows (a report,
/// not its temporary name, which tempfile adds to its errors). Errors that
/// already name their file are passed on as they are.
fn write_error(path: &Path, e: std::io::Error) -> std::io::Error {
    if e.get_ref().is_some_and(|inner| inner.is::<WriteError>()) {
        return e;
    }
    let kind = e.kind();
    let os_code = e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.source())
            .and_then(|src| src.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
    });
    let cause = os_code.map_or(e, std::io::Error::from_raw_os_error);
    std::io::Error::new(
        kind,
        WriteError {
            path: path.to_path_buf(),
            cause,
        },
    )
}

/// A writer whose errors name the file it writes (see [`write_error`]).
pub struct NamedWriter<W> {
    inner: W,
    path: PathBuf,
}

impl<W: Write> NamedWriter<W> {
    pub fn new(inner: W, path: &Path) -> NamedWriter<W> {
        NamedWriter {
            inner,
            path: path.to_path_buf(),
        }
    }
}

impl<W: Write> Write for NamedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner
            .write(buf)
            .map_err(|e| write_error(&self.path, e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| write_error(&self.path, e))
    }
}

/// A report's size from which it is written with direct I/O.
const DIRECT_AFTER: u64 = 32 << 20;

/// Bytes per direct write.
const DIRECT_BUF: usize = 4 << 20;

/// The alignment of direct writes' offsets, lengths and memory: a multiple
/// of every logical block size in use (512 or 4096 bytes).
const ALIGN: usize = 4096;

/// Buffers of one direct-writing report: one being filled, one queued and
/// one being written.
const DIRECT_BUFFERS: usize = 3;

/// A file that appears at its path only when [`AtomicFile::commit`] is
/// called.
///
/// Written through the page cache at first. Past [`DIRECT_AFTER`] bytes it
/// switches, where the file system allows it, to direct I/O (`O_DIRECT`)
/// from a background thread: the disk reads the report from this process's
/// buffers, with no copy into the page cache, so a large report costs
/// little CPU, and the background thread, not a core, waits for the disk.
pub struct AtomicFile {
    out: Out,
    path: PathBuf,
    written: u64,
    /// The size from which it writes directly; `u64::MAX` once that was
    /// refused.
    direct_after: u64,
}

enum Out {
    Buffered(BufWriter<Writeback>),
    Direct(Direct),
    /// Only while switching from one to the other.
    Switching,
}

impl AtomicFile {
    pub fn create(path: &Path) -> anyhow::Result<AtomicFile> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = temp_in(dir)?;
        Ok(AtomicFile {
            out: Out::Buffered(BufWriter::with_capacity(256 * 1024, Writeback::new(tmp))),
            path: path.to_path_buf(),
            written: 0,
            direct_after: DIRECT_AFTER,
        })
    }

    pub fn commit(self) -> anyhow::Result<()> {
        let path = &self.path;
        let tmp = match self.out {
            Out::Buffered(inner) => {
                inner
                    .into_inner()
                    .map_err(|e| write_error(path, e.into_error()))?
                    .file
            }
            Out::Direct(direct) => direct
                .finish()
                .with_context(|| format!("cannot write {}", path.display()))?,
            Out::Switching => {
                anyhow::bail!("internal error: {} left half switched", path.display())
            }
        };
        tmp.as_file().sync_all().map_err(|e| write_error(path, e))?;
        tmp.persist(&self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }

    /// Switches to direct writes if `buf` takes the file to an aligned
    /// offset past the threshold: its first bytes up to that offset are
    /// written through the page cache, and the number of them returned.
    fn try_direct(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let head = (ALIGN - (self.written % ALIGN as u64) as usize) % ALIGN;
        if head > buf.len() {
            return Ok(0);
        }
        let Out::Buffered(inner) = &mut self.out else {
            return Ok(0);
        };
        inner.write_all(&buf[..head])?;
        let Out::Buffered(inner) = std::mem::replace(&mut self.out, Out::Switching) else {
            return Ok(head);
        };
        let tmp = match inner.into_inner() {
            Ok(w) => w.file,
            Err(e) => {
                let (e, inner) = e.into_parts();
                self.out = Out::Buffered(inner);
                return Err(e);
            }
        };
        match Direct::start(tmp) {
            Ok(direct) => self.out = Out::Direct(direct),
            Err(tmp) => {
                self.direct_after = u64::MAX;
                let mut back = Writeback::new(tmp);
                // Its hints go on from here.
                back.written = self.written + head as u64;
                back.started = back.written;
                self.out = Out::Buffered(BufWriter::with_capacity(256 * 1024, back));
            }
        }
        Ok(head)
    }

    #[cfg(test)]
    fn is_direct(&self) -> bool {
        matches!(self.out, Out::Direct(_))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// Small writes (serde_json writes a token at a time) take the short
    /// path: a copy into the buffer.
    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let n = buf.len() as u64;
        match &mut self.out {
            Out::Direct(direct) if direct.has_room(buf.len()) => direct.push(buf),
            Out::Buffered(inner) if self.written + n < self.direct_after => inner
                .write_all(buf)
                .map_err(|e| write_error(&self.path, e))?,
            _ => {
                return self
                    .write_all_cold(buf)
                    .map_err(|e| write_error(&self.path, e))
            }
        }
        self.written += n;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Out::Buffered(inner) => inner.flush().map_err(|e| write_error(&self.path, e)),
            // Flushed as a whole by `commit`: a partial buffer cannot be
            // written directly.
            Out::Direct(_) | Out::Switching => Ok(()),
        }
    }
}

impl AtomicFile {
    /// [`AtomicFile::write_all`] when a buffer fills, or past the size for
    /// direct writes.
    #[cold]
    fn write_all_cold(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        if self.written + buf.len() as u64 >= self.direct_after
            && matches!(self.out, Out::Buffered(_))
        {
            let head = self.try_direct(buf)?;
            self.written += head as u64;
            buf = &buf[head..];
        }
        match &mut self.out {
            Out::Buffered(inner) => inner.write_all(buf)?,
            Out::Direct(direct) => direct.write_all(buf)?,
            Out::Switching => return Err(std::io::Error::other("report file left half switched")),
        }
        self.written += buf.len() as u64;
        Ok(())
    }
}

/// Starts writing a report to disk while it is being written, a few
/// megabytes behind: a report of hundreds of megabytes can stay below the
/// kernel's background threshold, so without this all of it would wait for
/// the `fsync` of [`AtomicFile::commit`], with the CPUs idle.
struct Writeback {
    file: tempfile::NamedTempFile,
    written: u64,
    /// Everything before this offset has been handed to the disk.
    started: u64,
}

/// How much is written between two hand-offs to the disk.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Writeback {
    fn new(file: tempfile::NamedTempFile) -> Writeback {
        Writeback {
            file,
            written: 0,
            started: 0,
        }
    }

    /// Starts (never waits for) the writing of what is not handed off yet.
    fn start(&mut self) {
        // A failure is a lost hint: `commit` still syncs the whole file.
        crate::sys::fs::start_writeback(
            self.file.as_file(),
            self.started,
            self.written - self.started,
        );
        self.started = self.written;
    }
}

// Through the `File`: `NamedTempFile`'s own errors add its temporary name,
// which `AtomicFile` replaces with the report's.
impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.as_file_mut().write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            self.start();
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_file_mut().flush()
    }
}

/// An aligned buffer of [`DIRECT_BUF`] bytes inside a vector.
struct Block {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Block {
        let bytes = vec![0u8; DIRECT_BUF + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN).min(ALIGN);
        Block {
            bytes,
            start,
            len: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

/// The direct-writing side of an [`AtomicFile`]: blocks are filled here and
/// written by a thread, in order.
struct Direct {
    tmp: tempfile::NamedTempFile,
    block: Block,
    made: usize,
    /// Full blocks to the writer; `true` with the last one.
    jobs: SyncSender<(Block, bool)>,
    spare: Receiver<Block>,
    /// `None` once joined, after it stopped early.
    writer: Option<JoinHandle<std::io::Result<()>>>,
}

impl Direct {
    /// Turns direct I/O on for `tmp`, written so far up to an aligned
    /// offset, and starts the writer; `tmp` back if either is refused.
    fn start(tmp: tempfile::NamedTempFile) -> Result<Direct, tempfile::NamedTempFile> {
        let Ok(file) = tmp.as_file().try_clone() else {
            return Err(tmp);
        };
        if set_direct(&file, true).is_err() {
            return Err(tmp);
        }
        let (jobs, job_rx) = sync_channel(DIRECT_BUFFERS);
        let (spare_tx, spare) = sync_channel(DIRECT_BUFFERS);
        let writer = std::thread::Builder::new()
            .name("refleet-write".into())
            .spawn(move || write_blocks(file, job_rx, spare_tx));
        match writer {
            Ok(writer) => Ok(Direct {
                tmp,
                block: Block::new(),
                made: 1,
                jobs,
                spare,
                writer: Some(writer),
            }),
            Err(_) => {
                // Should this fail too, the buffered writes that follow
                // fail with EINVAL, and the report with them: no silent
                // loss.
                let _ = set_direct(tmp.as_file(), false);
                Err(tmp)
            }
        }
    }

    /// Whether `n` more bytes fit in the block without filling it.
    #[inline]
    fn has_room(&self, n: usize) -> bool {
        self.block.len + n < DIRECT_BUF
    }

    /// Copies `buf` into the block, which has room for it.
    #[inline]
    fn push(&mut self, buf: &[u8]) {
        let at = self.block.start + self.block.len;
        self.block.bytes[at..at + buf.len()].copy_from_slice(buf);
        self.block.len += buf.len();
    }

    fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let n = (DIRECT_BUF - self.block.len).min(buf.len());
            self.push(&buf[..n]);
            buf = &buf[n..];
            if self.block.len == DIRECT_BUF {
                self.send()?;
            }
        }
        Ok(())
    }

    /// Hands the full block to the writer and takes an empty one.
    fn send(&mut self) -> std::io::Result<()> {
        let next = match self.spare.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.made < DIRECT_BUFFERS => {
                self.made += 1;
                Some(Block::new())
            }
            Err(_) => None,
        };
        let next = match next {
            Some(b) => b,
            // Waits for the writer; an error there ends it.
            None => match self.spare.recv() {
                Ok(b) => b,
                Err(_) => return Err(self.writer_error()),
            },
        };
        let full = std::mem::replace(&mut self.block, next);
        if self.jobs.send((full, false)).is_err() {
            return Err(self.writer_error());
        }
        self.block.len = 0;
        Ok(())
    }

    /// Why the writer stopped early.
    fn writer_error(&mut self) -> std::io::Error {
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => std::io::Error::other("the report's writer thread panicked"),
            Some(Ok(Ok(()))) | None => {
                std::io::Error::other("the report's writer thread stopped early")
            }
        }
    }

    /// Writes the rest and waits for the writer; the file, back in buffered
    /// mode.
    fn finish(self) -> anyhow::Result<tempfile::NamedTempFile> {
        let Direct {
            tmp,
            block,
            jobs,
            writer,
            ..
        } = self;
        let sent = jobs.send((block, true));
        drop(jobs);
        let writer = writer.context("the report's writer thread stopped early")?;
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the report's writer thread panicked"))?;
        written?;
        anyhow::ensure!(sent.is_ok(), "the report's writer thread stopped early");
        Ok(tmp)
    }
}

/// The writer thread: each block in order, directly while the file system
/// takes it (through the page cache after a refusal), and the last one's
/// unaligned end through the page cache.
fn write_blocks(
    mut file: File,
    jobs: Receiver<(Block, bool)>,
    spare: SyncSender<Block>,
) -> std::io::Result<()> {
    let mut direct = true;
    for (block, last) in jobs {
        let data = block.data();
        let aligned = if last {
            data.len() / ALIGN * ALIGN
        } else {
            data.len()
        };
        let mut done = 0;
        while done < aligned {
            match file.write(&data[done..aligned]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Refused (an alignment this file system does not take,
                // or a short write before): the rest goes buffered.
                Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    set_direct(&file, false)?;
                    direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        if last {
            if direct {
                set_direct(&file, false)?;
            }
            file.write_all(&data[aligned..])?;
            return Ok(());
        }
        // The filler may have finished meanwhile; then nobody takes it.
        let _ = spare.send(block);
    }
    if direct {
        set_direct(&file, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn only_the_temporaries_of_dead_refleet_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        // This process's own live file.
        let own = temp_in(dir.path()).unwrap();
        assert!(temp_writer(own.path().file_name().unwrap().to_str().unwrap()).is_some());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = format!(".refleet-{dead}-AbCdEfGh12345678.tmp");
        std::fs::write(at(&stale), b"x").unwrap();
        // A live writer whose pid this process cannot see (another pid
        // namespace sharing the folder): its lock keeps the file.
        let held = format!(".refleet-{dead}-ZZZZZZZZZZZZZZZZ.tmp");
        std::fs::write(at(&held), b"x").unwrap();
        let lock = File::open(at(&held)).unwrap();
        lock.try_lock().unwrap();
        // Unlocked, but its process lives (the instant before its lock).
        let parent = format!(
            ".refleet-{}-AbCdEfGh12345678.tmp",
            std::os::unix::process::parent_id()
        );
        std::fs::write(at(&parent), b"x").unwrap();
        // Files named like refleet's, but not by refleet.
        let users = [
            ".refleet-notes.tmp".to_string(),
            ".refleet-a1B2c3.tmp".to_string(),
            format!(".refleet-{dead}-short.tmp"),
            format!(".refleet-0{dead}-AbCdEfGh12345678.tmp"),
            format!(".refleet-{dead}-AbCdEfGh12345678.tmp.bak"),
            format!("refleet-{dead}-AbCdEfGh12345678.tmp"),
        ];
        for u in &users {
            std::fs::write(at(u), b"mine").unwrap();
        }
        let link = format!(".refleet-{dead}-LinkLinkLinkLink.tmp");
        std::os::unix::fs::symlink(at("target"), at(&link)).unwrap();
        std::fs::write(at("target"), b"x").unwrap();

        assert_eq!(sweep_dead_temps(dir.path()), vec![at(&stale)]);
        for kept in users.iter().chain([&held, &parent, &link]) {
            assert!(at(kept).symlink_metadata().is_ok(), "{kept}");
        }
        assert!(own.path().exists());
        drop(lock);
        assert_eq!(sweep_dead_temps(dir.path()), vec![at(&held)]);
    }

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"x").unwrap();
        assert!(!path.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }

    /// Written in uneven pieces across the switch to direct writes and
    /// across many blocks, the file holds every byte in order.
    #[test]
    fn a_large_report_keeps_every_byte_across_the_switch_to_direct_writes() {
        let dir = tempfile::tempdir().unwrap();
        // Direct I/O is taken where the file system allows it (not on every
        // tmpfs, for one); the bytes are the same either way.
        let supported = set_direct(&File::create(dir.path().join("probe")).unwrap(), true).is_ok();
        for (direct_after, total) in [
            (0, 3 * DIRECT_BUF + 12_345),
            (5_000, 2 * DIRECT_BUF + 1),
            (1 << 40, 70_000),
        ] {
            let path = dir.path().join(format!("r{direct_after}.csv"));
            let mut f = AtomicFile::create(&path).unwrap();
            f.direct_after = direct_after;
            let want: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4099) as u8).collect();
            let mut at = 0;
            let mut step = 1;
            while at < want.len() {
                let n = step.min(want.len() - at);
                f.write_all(&want[at..at + n]).unwrap();
                at += n;
                step = step * 3 % 100_003 + 1;
            }
            assert_eq!(
                f.is_direct(),
                supported && direct_after < total as u64,
                "{direct_after}"
            );
            f.commit().unwrap();
            assert!(std::fs::read(&path).unwrap() == want, "{direct_after}");
        }
    }

    /// A write error passed through another layer that names a file keeps
    /// the report's name (the CLI's text of it: `cli`'s tests).
    #[test]
    fn a_failed_write_keeps_the_name_of_the_file_it_failed_on() {
        let report = Path::new("/out/results.csv");
        let again = write_error(
            Path::new("/elsewhere"),
            std::io::Error::other(WriteError {
                path: report.to_path_buf(),
                cause: std::io::Error::from_raw_os_error(libc::ENOSPC),
            }),
        );
        assert!(again
            .to_string()
            .starts_with("cannot write /out/results.csv"));
    }
}
