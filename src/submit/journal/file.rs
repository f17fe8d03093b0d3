//! The journal's file on disk: checked before SQLite reads it, opened,
//! created whole under a temporary name, or set aside.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::Utc;
use rusqlite::{params, Connection};

use super::columns::now;
use super::schema::{migrate, new_journal_id, schema_version, SCHEMA, SCHEMA_VERSION};
use super::JournalError;

/// Whether a journal file exists, checking what can be told without SQLite:
/// not empty, an SQLite header, and at least as long as that header says.
pub(super) fn check_file(path: &Path) -> Result<bool, JournalError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(JournalError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_file() {
        return Err(unusable(path, "is not a regular file"));
    }
    let size = meta.len();
    if size == 0 {
        return Err(unusable(path, "is empty (0 bytes)"));
    }
    let mut header = [0u8; 100];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut header));
    if read.is_err() || !header.starts_with(b"SQLite format 3\0") {
        return Err(unusable(
            path,
            format!(
                "is not an SQLite database (its {size} bytes do not begin with an SQLite header)"
            ),
        ));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(unusable(
            path,
            "is damaged (its header's page size is invalid)",
        ));
    }
    // The page count in the header is valid when its version number matches
    // the change counter (SQLite file format, §1.3.7). It is the last
    // checkpoint's: with frames still in the WAL, SQLite's recovery decides.
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    let count_valid = header[92..96] == header[24..28];
    let wal_pending = std::fs::metadata(suffixed(path, "-wal")).is_ok_and(|m| m.len() > 0);
    let expected = pages.saturating_mul(page_size);
    if count_valid && !wal_pending && size < expected {
        return Err(unusable(
            path,
            format!("is cut off ({size} bytes, where its header says {expected})"),
        ));
    }
    Ok(true)
}

/// Opens the journal at `path` if there is one (`None`: no such file),
/// refusing one that cannot be used.
pub(super) fn open_existing(path: &Path) -> Result<Option<Connection>, JournalError> {
    if !check_file(path)? {
        return Ok(None);
    }
    let conn = Connection::open(path).map_err(|e| damaged(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Read before anything is written: a refused file is left as it was.
    let version = schema_version(&conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| damaged(path, e))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Reads through a memory map (the OS's page cache, no copy per page)
    // and 64 MiB of SQLite's own cache for what is written: a batch's items
    // lie anywhere in a million-item journal.
    conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
    conn.pragma_update(None, "cache_size", -65536)?;
    migrate(&conn, version).map_err(|e| match e {
        JournalError::Sql(e) => damaged(path, e),
        e => e,
    })?;
    conn.execute_batch(SCHEMA).map_err(|e| damaged(path, e))?;
    Ok(Some(conn))
}

/// Creates a new journal at `path`: made complete under a temporary name,
/// then renamed into place. A `-wal` or `-shm` left by a deleted journal is
/// moved aside first (SQLite would read it into the new file).
pub(super) fn create(path: &Path) -> Result<Connection, JournalError> {
    let io_err = |source| JournalError::Open {
        path: path.to_path_buf(),
        source,
    };
    if ["-wal", "-shm"].iter().any(|s| suffixed(path, s).exists()) {
        let moved = set_aside(path, "orphaned")?;
        tracing::warn!(
            journal = %path.display(),
            moved_to = %moved.display(),
            "the journal's -wal/-shm files were left without it: moved aside"
        );
    }
    // Only a journal being created has this name, and the lock is held: a
    // file by it is an earlier creation that did not finish.
    let tmp = suffixed(path, ".creating");
    for leftover in ["", "-journal", "-wal", "-shm"] {
        match std::fs::remove_file(suffixed(&tmp, leftover)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
            _ => {}
        }
    }
    let conn = Connection::open(&tmp)?;
    conn.execute_batch(&format!("BEGIN; {SCHEMA}"))?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1), ('journal_id', ?2), ('created_at', ?3)",
        params![SCHEMA_VERSION.to_string(), new_journal_id(), now()],
    )?;
    conn.execute_batch("COMMIT")?;
    conn.close().map_err(|(_, e)| e)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    }
    open_existing(path)?.ok_or_else(|| {
        io_err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the new journal disappeared",
        ))
    })
}

/// Renames the journal's files (`FILE`, `FILE-wal`, `FILE-shm`, those that
/// exist) to `FILE.<label>-<UTC time>[-n]...`, the WAL first so it never
/// meets another database; returns the new name of `FILE`.
pub(super) fn set_aside(path: &Path, label: &str) -> Result<PathBuf, JournalError> {
    let io_err = |source| JournalError::Open {
        path: path.to_path_buf(),
        source,
    };
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let parts = ["-wal", "-shm", ""];
    let mut n = 1u32;
    let target = loop {
        let t = if n == 1 {
            suffixed(path, &format!(".{label}-{stamp}"))
        } else {
            suffixed(path, &format!(".{label}-{stamp}-{n}"))
        };
        if parts.iter().all(|p| !suffixed(&t, p).exists()) {
            break t;
        }
        n = n.saturating_add(1);
    };
    for part in parts {
        let from = suffixed(path, part);
        if from.exists() {
            std::fs::rename(&from, suffixed(&target, part)).map_err(io_err)?;
        }
    }
    Ok(target)
}

/// `path` with `suffix` appended to its file name.
pub(super) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub(super) fn unusable(path: &Path, problem: impl Into<String>) -> JournalError {
    JournalError::Unusable {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// An SQLite error on opening: a damaged file is [`JournalError::Unusable`].
pub(super) fn damaged(path: &Path, e: rusqlite::Error) -> JournalError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            unusable(path, format!("is damaged ({e})"))
        }
        _ => JournalError::Sql(e),
    }
}
