//! `audit.jsonl`: an append-only, hash-chained record of every activation,
//! cancellation window and support case (SPEC §7), kept beside the journal
//! so one chain spans every run on it.
//!
//! Each line is a JSON object whose body (sorted keys, compact) carries its
//! number in `seq` and the previous record's hash in `prev_hash`, followed by
//! its own `"hash":"<sha256 hex>"` as the last member; the hash covers the
//! previous hash and the body's exact bytes, so changing any byte of a
//! record breaks that record (and [`verify`] names it).
//!
//! # One log, one journal
//! A log belongs to one journal, and only that journal writes to it. Each
//! journal has a random id (in its `meta` table); the first record of its
//! log is a header, `"kind":"journal"`, carrying the same id. The journal
//! records which file is its log and how far the chain goes (bytes,
//! records, last hash). A journal's log is `audit.jsonl` in the journal's
//! folder when that name is free or already its own, and
//! `audit-<journal id>.jsonl` otherwise: journals that share a folder (one
//! per night, a journal deleted or replaced by a new one) each keep their
//! own log, and none truncates, rewrites or appends to another's. A log
//! thus holds one chain, of one journal; [`verify`] says whose.
//!
//! Before a run sends anything, [`locate`] checks the journal's log against
//! what the journal recorded, and refuses one that is missing, shorter than
//! recorded, another journal's, or whose record at the recorded end does not
//! carry the recorded hash (replaced or rewritten): the operator restores it
//! rather than have refleet write on top of lost history. A log written
//! before journals had ids (no header) is accepted by that hash alone.
//!
//! # Crash safety
//! Records are written and synced first; then the journal records the
//! chain's new state in the transaction that marks their items as audited.
//! A crash in between leaves the log longer than the journal says. Those
//! trailing records are this journal's (no one else writes its log) and
//! true (written from item states already committed), so [`AuditLog::open`]
//! checks that they continue the chain and adopts them: it returns them, and
//! the caller marks their items as audited instead of writing them again.
//! Nothing is cut from a log but a last line with no newline: a write the
//! crash cut short, which is no record (it cannot verify), was never synced
//! as a whole nor recorded, and whose item is still unaudited and written
//! again in full. A complete trailing line that does not continue the chain
//! is refused: something else wrote to the log.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The log of the first journal in a folder.
pub const DEFAULT_FILE: &str = "audit.jsonl";

/// The `kind` of a log's first record, which names the journal it belongs to.
pub const HEADER_KIND: &str = "journal";

const HASH_SUFFIX_LEN: usize = ",\"hash\":\"\"}".len() + 64;

/// The log of a journal whose folder's `audit.jsonl` is another journal's.
pub fn own_file(journal_id: &str) -> String {
    format!("audit-{journal_id}.jsonl")
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit log {path} is missing, but the journal recorded {records} records in it; restore it from a backup")]
    Missing { path: PathBuf, records: u64 },
    #[error("the audit log {path} is {actual} bytes but the journal recorded {expected}: it was truncated or replaced; restore it from a backup")]
    Shorter {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("the audit log {path} belongs to {owner}, not to this journal ({journal_id}); restore this journal's log from a backup")]
    Foreign {
        path: PathBuf,
        owner: String,
        journal_id: String,
    },
    #[error("the audit log {path} does not hold, as its record {records} (ending at byte {len}), the record the journal recorded last: it was replaced or rewritten; restore it from a backup")]
    Replaced {
        path: PathBuf,
        records: u64,
        len: u64,
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

/// What a journal knows of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The journal's id, which the log's header repeats.
    pub journal_id: String,
    /// The log's file name in the journal's folder, once the journal has
    /// recorded records in it.
    pub file: Option<String>,
    /// The chain as far as the journal recorded it.
    pub chain: ChainState,
}

impl Binding {
    /// The file the journal recorded records in: its own, or `audit.jsonl`
    /// for a journal from before files were recorded.
    fn recorded_file(&self) -> Option<&str> {
        match &self.file {
            Some(name) => Some(name),
            None if self.chain.len > 0 => Some(DEFAULT_FILE),
            None => None,
        }
    }
}

pub struct AuditLog {
    file: File,
    path: PathBuf,
    name: String,
    state: ChainState,
}

/// A log opened for appending, with the records it held beyond what the
/// journal recorded (adopted: the caller marks their items as audited).
pub struct Opened {
    pub log: AuditLog,
    pub adopted: Vec<Map<String, Value>>,
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

/// Record number `seq` of a chain whose last hash is `prev_hash`: its
/// line (no newline) and its hash. The record gets `seq` and `prev_hash`;
/// its body, with sorted keys (serde_json's map keeps them sorted), is
/// canonical. The same for a file and for a ledger's chain in a database.
pub fn seal(mut record: Map<String, Value>, seq: u64, prev_hash: &str) -> (String, String) {
    record.insert("seq".into(), seq.into());
    record.insert("prev_hash".into(), prev_hash.into());
    let body = Value::Object(record).to_string();
    let h = hash(prev_hash, body.as_bytes());
    let line = format!("{},\"hash\":\"{h}\"}}", &body[..body.len() - 1]);
    (line, h)
}

/// Reads records one by one, each checked against the chain so far.
struct Records<'p, R> {
    reader: R,
    path: &'p Path,
    /// The chain up to the last record read.
    at: ChainState,
    line: Vec<u8>,
}

enum Next {
    Record(Map<String, Value>),
    /// A last line with no newline, from `at.len` on.
    Torn,
    End,
}

impl<'p, R: BufRead> Records<'p, R> {
    fn new(reader: R, path: &'p Path, at: ChainState) -> Self {
        Records {
            reader,
            path,
            at,
            line: Vec::new(),
        }
    }

    fn next(&mut self) -> Result<Next, AuditError> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(io(self.path))?;
        if n == 0 {
            return Ok(Next::End);
        }
        if self.line.last() != Some(&b'\n') {
            return Ok(Next::Torn);
        }
        let record = self.at.records + 1;
        let broken = |reason: &str| AuditError::Broken {
            path: self.path.to_path_buf(),
            record,
            reason: reason.to_string(),
        };
        let text = &self.line[..n - 1];
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
        let Value::Object(map) =
            serde_json::from_slice(&body).map_err(|e| broken(&format!("not JSON: {e}")))?
        else {
            return Err(broken("not a JSON object"));
        };
        if map.get("prev_hash").and_then(Value::as_str) != Some(self.at.last_hash.as_str()) {
            return Err(broken("prev_hash is not the previous record's hash"));
        }
        if map.get("seq").and_then(Value::as_u64) != Some(record) {
            return Err(broken("seq is out of order"));
        }
        let actual = hash(&self.at.last_hash, &body);
        if actual.as_bytes() != claimed {
            return Err(broken("the hash does not match the record's content"));
        }
        if record > 1 && map.get("kind").and_then(Value::as_str) == Some(HEADER_KIND) {
            return Err(broken(
                "a journal header after the first record: a log holds one journal's chain",
            ));
        }
        self.at = ChainState {
            len: self.at.len + n as u64,
            records: record,
            last_hash: actual,
        };
        Ok(Next::Record(map))
    }
}

/// Whose a log is, from its first line.
enum Owner {
    /// No such file.
    Absent,
    /// Empty, or no journal header (a log from before journals had ids).
    Unknown,
    Journal(String),
}

impl Owner {
    fn describe(&self) -> String {
        match self {
            Owner::Journal(id) => format!("journal {id}"),
            _ => "no journal known (its first record names none)".to_string(),
        }
    }
}

fn owner_of(file: &File, path: &Path) -> Result<Owner, AuditError> {
    let mut first = Vec::new();
    // A header is a few hundred bytes; a longer first line is no header.
    BufReader::new(file.take(64 * 1024))
        .read_until(b'\n', &mut first)
        .map_err(io(path))?;
    let id = first
        .strip_suffix(b"\n")
        .and_then(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some(HEADER_KIND))
        .and_then(|v| v.get("journal_id")?.as_str().map(str::to_string));
    Ok(id.map_or(Owner::Unknown, Owner::Journal))
}

fn owner(path: &Path) -> Result<Owner, AuditError> {
    match File::open(path) {
        Ok(file) => owner_of(&file, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Owner::Absent),
        Err(e) => Err(io(path)(e)),
    }
}

/// Where a journal's log is, and how many records it holds beyond what the
/// journal recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    /// `false`: the journal has no log yet; this is the file it will create.
    pub exists: bool,
    /// Records after the recorded end: adopted when the log is next opened.
    pub unrecorded: u64,
}

/// Finds the log of the journal `binding` describes, in the journal's
/// folder `dir`, and checks it against what the journal recorded, writing
/// nothing. See the module documentation for what is refused.
pub fn locate(dir: &Path, binding: &Binding) -> Result<Located, AuditError> {
    if let Some(name) = binding.recorded_file() {
        let path = dir.join(name);
        let unrecorded = check(&path, binding)?;
        return Ok(Located {
            path,
            exists: true,
            unrecorded,
        });
    }
    let own = own_file(&binding.journal_id);
    for name in [DEFAULT_FILE, own.as_str()] {
        let path = dir.join(name);
        match owner(&path)? {
            Owner::Absent => {
                return Ok(Located {
                    path,
                    exists: false,
                    unrecorded: 0,
                })
            }
            Owner::Journal(id) if id == binding.journal_id => {
                let unrecorded = check(&path, binding)?;
                return Ok(Located {
                    path,
                    exists: true,
                    unrecorded,
                });
            }
            // Another journal's (or nobody's): not this journal's to write.
            Owner::Journal(_) | Owner::Unknown => {}
        }
    }
    let path = dir.join(own);
    let owner = owner(&path)?.describe();
    Err(AuditError::Foreign {
        path,
        owner,
        journal_id: binding.journal_id.clone(),
    })
}

/// Checks an existing log against the binding; returns the number of
/// records after the recorded end.
fn check(path: &Path, binding: &Binding) -> Result<u64, AuditError> {
    let chain = &binding.chain;
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AuditError::Missing {
                path: path.to_path_buf(),
                records: chain.records,
            })
        }
        Err(e) => return Err(io(path)(e)),
    };
    let actual = file.metadata().map_err(io(path))?.len();
    if actual < chain.len {
        return Err(AuditError::Shorter {
            path: path.to_path_buf(),
            actual,
            expected: chain.len,
        });
    }
    match owner_of(&file, path)? {
        Owner::Journal(id) if id == binding.journal_id => {}
        // A log from before headers: its hash at the recorded end ties it.
        Owner::Unknown | Owner::Absent if chain.len > 0 => {}
        other => {
            return Err(AuditError::Foreign {
                path: path.to_path_buf(),
                owner: other.describe(),
                journal_id: binding.journal_id.clone(),
            })
        }
    }
    if chain.len > 0 {
        let replaced = || AuditError::Replaced {
            path: path.to_path_buf(),
            records: chain.records,
            len: chain.len,
        };
        let want = format!(",\"hash\":\"{}\"}}\n", chain.last_hash);
        let start = chain
            .len
            .checked_sub(want.len() as u64)
            .ok_or_else(replaced)?;
        file.seek(SeekFrom::Start(start)).map_err(io(path))?;
        let mut got = vec![0u8; want.len()];
        file.read_exact(&mut got).map_err(io(path))?;
        if got != want.as_bytes() {
            return Err(replaced());
        }
    }
    file.seek(SeekFrom::Start(chain.len)).map_err(io(path))?;
    let mut records = Records::new(BufReader::new(file), path, chain.clone());
    let mut unrecorded = 0;
    while let Next::Record(_) = records.next()? {
        unrecorded += 1;
    }
    Ok(unrecorded)
}

impl AuditLog {
    /// Opens the journal's log for appending (see [`locate`]), adopting the
    /// records it holds beyond what the journal recorded; a journal without
    /// a log creates one, whose first record is `header` with the journal's
    /// id.
    pub fn open(
        dir: &Path,
        binding: &Binding,
        mut header: Map<String, Value>,
    ) -> Result<Opened, AuditError> {
        // Twice at most: a name taken meanwhile by another journal is
        // looked for again (it then takes its own name).
        let mut attempts = 0;
        let path = loop {
            let located = locate(dir, binding)?;
            if located.exists {
                break located.path;
            }
            attempts += 1;
            match OpenOptions::new()
                .create_new(true)
                .read(true)
                .append(true)
                .open(&located.path)
            {
                Ok(file) => {
                    let mut log = AuditLog::new(file, &located.path, ChainState::default());
                    header.insert("kind".into(), HEADER_KIND.into());
                    header.insert("journal_id".into(), binding.journal_id.clone().into());
                    log.append(header)?;
                    log.file.sync_data().map_err(io(&log.path))?;
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io(dir))?;
                    return Ok(Opened {
                        log,
                        adopted: Vec::new(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 2 => {}
                Err(e) => return Err(io(&located.path)(e)),
            }
        };
        // From what the journal recorded (the start, for a log it created
        // but never recorded), every record is checked; those beyond are
        // adopted.
        let start = binding.chain.clone();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        file.seek(SeekFrom::Start(start.len)).map_err(io(&path))?;
        let mut records = Records::new(BufReader::new(&file), &path, start);
        let mut adopted = Vec::new();
        let torn = loop {
            match records.next()? {
                Next::Record(r) => {
                    if r.get("kind").and_then(Value::as_str) != Some(HEADER_KIND) {
                        adopted.push(r);
                    }
                }
                Next::Torn => break true,
                Next::End => break false,
            }
        };
        let state = records.at;
        if torn {
            tracing::warn!(
                path = %path.display(),
                at = state.len,
                "the audit log ends in a line a crash cut short: that partial line is removed"
            );
            file.set_len(state.len).map_err(io(&path))?;
        }
        Ok(Opened {
            log: AuditLog::new(file, &path, state),
            adopted,
        })
    }

    fn new(file: File, path: &Path, state: ChainState) -> AuditLog {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        AuditLog {
            file,
            path: path.to_path_buf(),
            name,
            state,
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log's file name, for the journal to record.
    pub fn file_name(&self) -> &str {
        &self.name
    }

    /// Appends one record (a JSON object; `seq` and `prev_hash` are added).
    pub fn append(&mut self, record: Map<String, Value>) -> Result<(), AuditError> {
        let (mut line, h) = seal(record, self.state.records + 1, &self.state.last_hash);
        line.push('\n');
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

/// An intact chain, as [`verify`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// The journal the log belongs to (`None`: a log from before headers).
    pub journal_id: Option<String>,
}

/// Checks every record's hash and link; the first broken record is named.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    verify_against(path, None)
}

/// [`verify`], and with a journal's `binding`, that the log is that
/// journal's and holds every record it recorded (a log cut at a record
/// boundary is a valid chain, but shorter than the journal says).
pub fn verify_against(path: &Path, binding: Option<&Binding>) -> Result<Verified, AuditError> {
    let mut file = File::open(path).map_err(io(path))?;
    let owner = owner_of(&file, path)?;
    let journal_id = match owner {
        Owner::Journal(id) => Some(id),
        Owner::Absent | Owner::Unknown => None,
    };
    if let Some(b) = binding {
        if journal_id.as_ref().is_some_and(|id| *id != b.journal_id)
            || (journal_id.is_none() && b.chain.len == 0)
        {
            return Err(AuditError::Foreign {
                path: path.to_path_buf(),
                owner: journal_id.map_or_else(
                    || Owner::Unknown.describe(),
                    |id| Owner::Journal(id).describe(),
                ),
                journal_id: b.journal_id.clone(),
            });
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    let mut records = Records::new(BufReader::new(file), path, ChainState::default());
    let recorded = binding.map(|b| &b.chain);
    let mut matched = recorded.is_none_or(|c| c.records == 0);
    loop {
        match records.next()? {
            Next::Record(_) => {}
            Next::Torn => {
                return Err(AuditError::Broken {
                    path: path.to_path_buf(),
                    record: records.at.records + 1,
                    reason: "the last line is cut off (no newline)".into(),
                })
            }
            Next::End => break,
        }
        if let Some(c) = recorded.filter(|c| c.records == records.at.records) {
            if records.at != *c {
                return Err(AuditError::Replaced {
                    path: path.to_path_buf(),
                    records: c.records,
                    len: c.len,
                });
            }
            matched = true;
        }
    }
    if let Some(b) = binding {
        if !matched {
            return Err(AuditError::Shorter {
                path: path.to_path_buf(),
                actual: records.at.len,
                expected: b.chain.len,
            });
        }
    }
    Ok(Verified {
        records: records.at.records,
        journal_id,
    })
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
