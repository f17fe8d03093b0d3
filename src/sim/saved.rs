//! The simulator's memory on disk, when [`super::SimConfig::state_file`]
//! names a file: one JSON line per accepted request and per opened case,
//! each with its idempotency key and the answer to replay, appended *before*
//! the answer leaves. A simulator started again on the same file knows every
//! request id, key and case of the ones before it, and its clock resumes
//! where theirs had got to; so a run resumed against it converges, as
//! against a real vendor that stayed up. `refleet run` without `--api-url`
//! keeps this file beside its journal (`JOURNAL.sim.jsonl`).
//!
//! Append-only. A line cut short by `kill -9` is skipped when read. Lines
//! are not synced to disk: a crashed process keeps what it wrote, a power
//! cut may lose the last lines, and the client then meets a vendor that lost
//! requests, which it must handle anyway (it re-sends under the same key).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::{CaseRecord, Fingerprint, RequestRecord, Stored};

/// An answer as kept for replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedAnswer {
    pub status: u16,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl From<&Stored> for SavedAnswer {
    fn from(s: &Stored) -> SavedAnswer {
        SavedAnswer {
            status: s.status,
            body: String::from_utf8_lossy(&s.body).into_owned(),
            location: s.location.clone(),
        }
    }
}

impl From<SavedAnswer> for Stored {
    fn from(s: SavedAnswer) -> Stored {
        Stored {
            status: s.status,
            body: Bytes::from(s.body),
            location: s.location,
        }
    }
}

/// The key a request came with and its body's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: Option<String>,
    pub fingerprint: Fingerprint,
}

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Reactivation {
        key: Option<String>,
        fingerprint: String,
        answer: SavedAnswer,
        request: RequestRecord,
    },
    Case {
        key: Option<String>,
        fingerprint: String,
        answer: SavedAnswer,
        case: CaseRecord,
    },
}

impl Entry {
    /// The simulated time it happened at.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Entry::Reactivation { request, .. } => request.accepted_at,
            Entry::Case { case, .. } => case.opened_at,
        }
    }

    /// Its key, fingerprint and answer, for the idempotency store.
    pub fn replay(&self) -> Option<(String, Fingerprint, Stored)> {
        let (key, fingerprint, answer) = match self {
            Entry::Reactivation {
                key,
                fingerprint,
                answer,
                ..
            }
            | Entry::Case {
                key,
                fingerprint,
                answer,
                ..
            } => (key.as_ref()?, fingerprint, answer),
        };
        Some((key.clone(), from_hex(fingerprint)?, answer.clone().into()))
    }
}

pub fn to_hex(f: &Fingerprint) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Fingerprint> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The file, or nothing (memory only).
#[derive(Debug, Default)]
pub struct Saved {
    file: Mutex<Option<(PathBuf, File)>>,
}

impl Saved {
    /// Memory only: nothing is written.
    pub fn memory() -> Saved {
        Saved::default()
    }

    #[cfg(test)]
    pub fn is_on(&self) -> bool {
        super::lock(&self.file).is_some()
    }

    /// Opens (creating) the file and reads what it holds. Unreadable lines
    /// (the last one cut short by a crash) are skipped with a warning.
    pub fn open(path: &Path) -> std::io::Result<(Saved, Vec<Entry>)> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut entries = Vec::new();
        let mut skipped = 0u64;
        for line in BufReader::new(&file).split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Entry>(&line) {
                Ok(e) => entries.push(e),
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(
                "simulator state {}: {skipped} unreadable line(s) skipped (cut short by a crash?)",
                path.display()
            );
        }
        // A line cut short must not run into the next one.
        let len = file.seek(SeekFrom::End(0))?;
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        let saved = Saved {
            file: Mutex::new(Some((path.to_path_buf(), file))),
        };
        Ok((saved, entries))
    }

    /// Appends one line (built only when a file is kept).
    pub fn append(&self, entry: impl FnOnce() -> Entry) -> std::io::Result<()> {
        let mut guard = super::lock(&self.file);
        let Some((path, file)) = guard.as_mut() else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(&entry()).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)
            .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_through_hex() {
        let f: Fingerprint = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(from_hex(&to_hex(&f)), Some(f));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_the_next_one_starts_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.jsonl");
        let case = |id: &str| Entry::Case {
            key: Some(format!("k-{id}")),
            fingerprint: to_hex(&[1; 32]),
            answer: SavedAnswer {
                status: 201,
                body: "{}".into(),
                location: None,
            },
            case: CaseRecord {
                case_id: id.into(),
                item_key: "S|C|2026-01-01".into(),
                contract_id: "C".into(),
                reason: "FAILED".into(),
                opened_at: Utc::now(),
            },
        };
        {
            let (saved, entries) = Saved::open(&path).unwrap();
            assert!(entries.is_empty() && saved.is_on());
            saved.append(|| case("CS-1")).unwrap();
        }
        // A crash in the middle of the second line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"kind":"case","key":"k-CS-2","fing"#)
            .unwrap();
        drop(f);
        {
            let (saved, entries) = Saved::open(&path).unwrap();
            assert_eq!(entries.len(), 1);
            saved.append(|| case("CS-3")).unwrap();
        }
        let (_, entries) = Saved::open(&path).unwrap();
        let ids: Vec<String> = entries
            .iter()
            .map(|e| match e {
                Entry::Case { case, .. } => case.case_id.clone(),
                Entry::Reactivation { request, .. } => request.request_id.clone(),
            })
            .collect();
        assert_eq!(ids, ["CS-1", "CS-3"]);
        assert!(entries[0].replay().is_some());
        assert!(!Saved::memory().is_on());
    }
}
