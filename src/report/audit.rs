//! `audit.jsonl`: an append-only, hash-chained record of every activation,
//! cancellation window and support case (SPEC §7), kept beside the journal
//! so one chain spans every run on it.
//!
//! Each line is a JSON object whose body (sorted keys, compact) carries the
//! previous record's hash in `prev_hash`, followed by its own
//! `"hash":"<sha256 hex>"` as the last member; the hash covers the previous
//! hash and the body's exact bytes, so changing any byte of a record breaks
//! that record (and [`verify`] names it).
//!
//! Crash safety: lines are written and synced first, then the journal records
//! the log's new length in the same transaction that marks the items as
//! audited. A log longer than the journal says ends in lines whose items were
//! not marked: [`AuditLog::open`] cuts them, and they are written again.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_SUFFIX_LEN: usize = ",\"hash\":\"\"}".len() + 64;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {actual} bytes but the journal recorded {expected}: the audit log was truncated or replaced")]
    Shorter {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("record {record} (line {record}) of {path}: {reason}")]
    Broken {
        path: PathBuf,
        record: u64,
        reason: String,
    },
}

/// Where the chain stands: kept in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub len: u64,
    pub records: u64,
    pub last_hash: String,
}

impl Default for ChainState {
    fn default() -> Self {
        ChainState {
            len: 0,
            records: 0,
            last_hash: GENESIS.to_string(),
        }
    }
}

pub struct AuditLog {
    file: File,
    path: PathBuf,
    state: ChainState,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn hash(prev: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl AuditLog {
    /// Opens the log for appending at the journal's `state`, cutting lines
    /// written after it (their items were not marked and come again).
    pub fn open(path: &Path, state: ChainState) -> Result<AuditLog, AuditError> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        let actual = file.metadata().map_err(io(path))?.len();
        if actual < state.len {
            return Err(AuditError::Shorter {
                path: path.to_path_buf(),
                actual,
                expected: state.len,
            });
        }
        if actual > state.len {
            file.set_len(state.len).map_err(io(path))?;
        }
        Ok(AuditLog {
            file,
            path: path.to_path_buf(),
            state,
        })
    }

    /// Appends one record (a JSON object; `seq` and `prev_hash` are added).
    pub fn append(
        &mut self,
        mut record: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), AuditError> {
        record.insert("seq".into(), (self.state.records + 1).into());
        record.insert("prev_hash".into(), self.state.last_hash.clone().into());
        // serde_json's map keeps keys sorted: the body is canonical.
        let body = serde_json::Value::Object(record).to_string();
        let h = hash(&self.state.last_hash, body.as_bytes());
        let line = format!("{},\"hash\":\"{h}\"}}\n", &body[..body.len() - 1]);
        self.file
            .write_all(line.as_bytes())
            .map_err(io(&self.path))?;
        self.state.len += line.len() as u64;
        self.state.records += 1;
        self.state.last_hash = h;
        Ok(())
    }

    /// Syncs the appended lines to disk and returns the state to record.
    pub fn sync(&mut self) -> Result<ChainState, AuditError> {
        self.file.sync_data().map_err(io(&self.path))?;
        Ok(self.state.clone())
    }
}

/// Checks every record's hash and link; the first broken record is named.
pub fn verify(path: &Path) -> Result<u64, AuditError> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::new(file);
    let mut prev = GENESIS.to_string();
    let mut record = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io(path))?;
        if n == 0 {
            return Ok(record);
        }
        record += 1;
        let broken = |reason: &str| AuditError::Broken {
            path: path.to_path_buf(),
            record,
            reason: reason.to_string(),
        };
        if line.last() != Some(&b'\n') {
            return Err(broken("the last line is cut off (no newline)"));
        }
        let text = &line[..line.len() - 1];
        if text.len() < HASH_SUFFIX_LEN + 2 {
            return Err(broken("too short to be a record"));
        }
        let (head, suffix) = text.split_at(text.len() - HASH_SUFFIX_LEN);
        let claimed = suffix
            .strip_prefix(b",\"hash\":\"")
            .and_then(|s| s.strip_suffix(b"\"}"))
            .filter(|h| {
                h.iter()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            })
            .ok_or_else(|| broken("does not end with its hash"))?;
        let mut body = head.to_vec();
        body.push(b'}');
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| broken(&format!("not JSON: {e}")))?;
        if value.get("prev_hash").and_then(|v| v.as_str()) != Some(prev.as_str()) {
            return Err(broken("prev_hash is not the previous record's hash"));
        }
        if value.get("seq").and_then(|v| v.as_u64()) != Some(record) {
            return Err(broken("seq is out of order"));
        }
        let actual = hash(&prev, &body);
        if actual.as_bytes() != claimed {
            return Err(broken("the hash does not match the record's content"));
        }
        prev = actual;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), "activation".into());
        m.insert("item_key".into(), format!("0004F2{i:06X}").into());
        m.insert("confirmation_id".into(), format!("CNF-{i}").into());
        m
    }

    fn log_of(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path, ChainState::default()).unwrap();
        for i in 0..n {
            log.append(rec(i)).unwrap();
        }
        log.sync().unwrap();
        (dir, path)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_d, path) = log_of(5);
        assert_eq!(verify(&path).unwrap(), 5);
    }

    /// Every byte of every record, changed, breaks exactly that record.
    #[test]
    fn tampering_with_any_byte_names_its_record() {
        let (_d, path) = log_of(4);
        let original = std::fs::read(&path).unwrap();
        let starts: Vec<usize> = std::iter::once(0)
            .chain(
                original
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        for pos in 0..original.len() {
            let record = starts.iter().filter(|s| **s <= pos).count() as u64;
            for replacement in [b'x', b'0', b' '] {
                if original[pos] == replacement {
                    continue;
                }
                let mut bytes = original.clone();
                bytes[pos] = replacement;
                std::fs::write(&path, &bytes).unwrap();
                match verify(&path) {
                    Err(AuditError::Broken { record: r, .. }) => {
                        assert_eq!(r, record, "byte {pos} -> {replacement}")
                    }
                    other => panic!("byte {pos} -> {replacement}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_crash_after_writing_cuts_the_unrecorded_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path, ChainState::default()).unwrap();
        log.append(rec(1)).unwrap();
        let recorded = log.sync().unwrap();
        log.append(rec(2)).unwrap();
        log.sync().unwrap();
        drop(log); // the journal never recorded the second line
        let mut log = AuditLog::open(&path, recorded.clone()).unwrap();
        log.append(rec(2)).unwrap();
        log.sync().unwrap();
        assert_eq!(verify(&path).unwrap(), 2);
        // A log shorter than the journal says is refused.
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            AuditLog::open(&path, recorded),
            Err(AuditError::Shorter { .. })
        ));
    }
}
