//! The durable journal of submissions (SPEC §6): SQLite in WAL mode with
//! `synchronous = FULL`, so a committed write survives `kill -9` and a power
//! cut alike.
//!
//! The rule that makes a crash harmless: a batch is written as `submitted`,
//! with its idempotency key and its items, in one transaction *before* its
//! request leaves; its outcome is written after. A later run re-sends every
//! batch still `submitted` with the same key and the same body, so the
//! server replays its answer instead of activating anything twice.
//!
//! Items are keyed by their event key (`serial or license | contract |
//! deactivated_at`), across runs: the same export run again the next night
//! finds its items already done, and a new deactivation is a new key.
//!
//! One process at a time: [`Journal::open`] takes an exclusive lock on
//! `FILE.lock` (released by the kernel when the process dies, however it dies).
//!
//! A journal is never guessed at. A missing file is a new journal, created
//! under a temporary name and renamed into place once its tables and `meta`
//! (format version [`SCHEMA_VERSION`], a random journal id) are committed,
//! so a crash never leaves a half-made one. A file that exists but is empty,
//! is not an SQLite database, is shorter than its header says, is damaged,
//! is no refleet journal, or was written in a format this refleet does not
//! know is refused ([`JournalError::Unusable`]): taking it as new would send
//! every batch again. [`Journal::open_afresh_if_unusable`] (`run
//! --new-journal`) moves such a file aside, renamed and never deleted, and
//! starts a new journal.
//!
//! The journal id ties the journal to its audit log (`report::audit`): the
//! journal records the log's file and how far its chain goes.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::api::{self, CoverageWire, ItemType, RequestItem};

/// Where an item stands (SPEC §6). `ManualReview` is an ineligible item that
/// waits for a support case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemState {
    Planned,
    Submitted,
    Accepted,
    Provisioning,
    Active,
    Rejected,
    Failed,
    Escalated,
    ManualReview,
}

impl ItemState {
    pub const ALL: [ItemState; 9] = [
        ItemState::Planned,
        ItemState::Submitted,
        ItemState::Accepted,
        ItemState::Provisioning,
        ItemState::Active,
        ItemState::Rejected,
        ItemState::Failed,
        ItemState::Escalated,
        ItemState::ManualReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Planned => "planned",
            ItemState::Submitted => "submitted",
            ItemState::Accepted => "accepted",
            ItemState::Provisioning => "provisioning",
            ItemState::Active => "active",
            ItemState::Rejected => "rejected",
            ItemState::Failed => "failed",
            ItemState::Escalated => "escalated",
            ItemState::ManualReview => "manual_review",
        }
    }

    pub fn parse(s: &str) -> Option<ItemState> {
        ItemState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A state the journal holds that this version does not know: the item is
/// refused, never taken for another state.
#[derive(Debug, thiserror::Error)]
#[error("unknown item state {0:?} in the journal")]
pub struct UnknownState(String);

impl rusqlite::types::FromSql for ItemState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        ItemState::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(Box::new(UnknownState(text.into())))
        })
    }
}

impl rusqlite::ToSql for ItemState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// An error of the journal itself: the run cannot go on safely without it.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("another refleet process is using the journal {0} (its lock file {0}.lock is held); wait for it to finish")]
    Busy(PathBuf),
    #[error("cannot open the journal {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal")]
    Sql(#[from] rusqlite::Error),
    #[error("journal {0}: unknown state `{1}` (written by a newer refleet?)")]
    BadState(PathBuf, String),
    #[error("the journal {path} {problem}. The journal is what tells refleet which batches were already sent and paid for: starting without it sends every item again, and the vendor may charge again for what it no longer replays under the same idempotency key. Restore it from a backup if there is one; otherwise `refleet run --new-journal` moves it aside (renamed {path}.unusable-<UTC time>, never deleted) and starts a new journal")]
    Unusable { path: PathBuf, problem: String },
}

/// The journal's format, in `meta` as `schema_version`. A journal of a
/// version this refleet does not know is refused, never read on a guess.
/// Journals from before the version was recorded are read as version 1 (the
/// same tables; the version and the id are added). Raise it with any change
/// an older refleet would misread, and add the step to [`migrate`].
/// Version 2 adds `items.source`, set for items a vendor lookup found, and
/// `items.last_run`, the last run whose input held the item. Version 3
/// keeps an item's quote and request id only on its batch (an item keeps a
/// request id of its own only when it differs: a vendor record's), drops
/// `items.updated_at` and keeps the verified features as bits, so that an
/// item's row holds nothing its batch already says.
pub const SCHEMA_VERSION: u32 = 3;

/// An eligible item as the journal keeps it: enough to rebuild its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedItem {
    pub event_key: String,
    pub item_type: ItemType,
    pub serial_number: Option<String>,
    pub mac_address: Option<String>,
    pub model: Option<String>,
    pub license_id: Option<String>,
    pub bound_serial: Option<String>,
    pub contract_id: String,
    pub region: String,
    pub country: String,
    pub deactivated_at: String,
    pub coverage: CoverageWire,
}

impl PlannedItem {
    pub fn to_request_item(&self) -> RequestItem {
        RequestItem {
            item_key: self.event_key.clone(),
            item_type: self.item_type,
            serial_number: self.serial_number.clone(),
            mac_address: self.mac_address.clone(),
            model: self.model.clone(),
            license_id: self.license_id.clone(),
            bound_serial: self.bound_serial.clone(),
            country: self.country.clone(),
            deactivated_at: self.deactivated_at.clone(),
        }
    }
}

/// A batch to send: the request body and its idempotency key.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: i64,
    pub idempotency_key: String,
    pub request: api::ReactivationRequest,
}

/// Where a batch goes: one contract and region, under one quote.
pub struct BatchGroup {
    pub contract_id: String,
    pub region: String,
    pub quote_id: String,
    pub coverage: CoverageWire,
}

impl Batch {
    /// Batch `id`, keyed `idempotency_key`, of `items` (in order) of `group`.
    pub fn of<'a>(
        id: i64,
        idempotency_key: String,
        group: BatchGroup,
        items: impl IntoIterator<Item = &'a PlannedItem>,
    ) -> Batch {
        Batch {
            id,
            idempotency_key,
            request: api::ReactivationRequest {
                contract_id: group.contract_id,
                region: group.region,
                quote_id: group.quote_id,
                coverage: group.coverage,
                items: items
                    .into_iter()
                    .map(PlannedItem::to_request_item)
                    .collect(),
            },
        }
    }
}

/// An item of a batch: its key, its place in the batch, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub event_key: String,
    pub pos: i64,
    pub state: ItemState,
}

/// An accepted batch whose items are still on their way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub batch_id: i64,
    pub request_id: String,
}

/// A run's eligible items by who buys them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunSplit {
    /// Still `planned`: this run buys them.
    pub to_buy: u64,
    /// Sent by an earlier run of this journal.
    pub earlier_runs: u64,
    /// Already held by the vendor (a lookup found them).
    pub vendor_held: u64,
}

/// Why items are looked up at the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupPurpose {
    /// Planned items, before any is paid.
    BeforePaying,
    /// Items the vendor held on their way, until they are done.
    Track,
}

/// An item to look up at the vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupTarget {
    pub rowid: i64,
    pub event_key: String,
    pub item: api::LookupItem,
    /// Of the deactivation this journal wants reactivated.
    pub deactivated_at: String,
}

/// An item that needs a support case.
#[derive(Debug, Clone)]
pub struct CaseToOpen {
    pub event_key: String,
    pub request: api::CaseRequest,
}

/// The journal's view of one item, for `results.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    pub state: ItemState,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub confirmation_id: Option<String>,
    pub features: Option<String>,
    pub case_id: Option<String>,
    pub attempts: u32,
    pub eta: Option<String>,
    pub activated_at: Option<String>,
    pub source: Source,
}

/// Where an item's state comes from (`results.csv`'s `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Never sent.
    NotSent,
    /// Bought by this run's request.
    ThisRun,
    /// Bought by an earlier run's request on this journal.
    EarlierRun,
    /// The vendor already held it: not bought by this journal.
    VendorRecord,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::NotSent => "",
            Source::ThisRun => "this_run",
            Source::EarlierRun => "earlier_run",
            Source::VendorRecord => "vendor_record",
        }
    }
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
    /// Nesting of [`Journal::atomically`]: only the outermost commits.
    depth: std::cell::Cell<u32>,
    /// Held for the life of the journal: the kernel releases it on exit.
    _lock: File,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    input TEXT NOT NULL,
    as_of TEXT NOT NULL,
    outcome TEXT,
    -- the run's summary.json and quotes.json, so a report can be made from the journal alone
    summary_json TEXT,
    quotes_json TEXT
);
CREATE TABLE IF NOT EXISTS items (
    event_key TEXT PRIMARY KEY,
    item_type TEXT NOT NULL,
    serial_number TEXT,
    mac_address TEXT,
    model TEXT,
    license_id TEXT,
    bound_serial TEXT,
    contract_id TEXT NOT NULL,
    region TEXT NOT NULL,
    country TEXT NOT NULL,
    deactivated_at TEXT NOT NULL,
    coverage TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    batch_id INTEGER,
    batch_pos INTEGER,
    -- only a vendor record's (source 'vendor'); this journal's items take
    -- their batch's, as they take its quote
    request_id TEXT,
    eta TEXT,
    confirmation_id TEXT,
    -- verified features: 1 meetings, 2 conferencing, 4 uc (NULL: none reported)
    features INTEGER,
    activated_at TEXT,
    case_id TEXT,
    audited INTEGER NOT NULL DEFAULT 0,
    first_run INTEGER NOT NULL,
    -- 'vendor': the vendor already held it (a lookup found it), so no
    -- request of this journal bought it; NULL: this journal's own
    source TEXT,
    -- the last run whose input holds it
    last_run INTEGER
);
CREATE INDEX IF NOT EXISTS items_state ON items(state);
CREATE INDEX IF NOT EXISTS items_batch ON items(batch_id, batch_pos);
-- planned items by group, for forming batches; it empties as they are sent
CREATE INDEX IF NOT EXISTS items_planned ON items(contract_id, region) WHERE state = 'planned';
-- settled items the audit log does not have yet; it empties as they are written
CREATE INDEX IF NOT EXISTS items_unaudited ON items(batch_id)
    WHERE audited = 0 AND state IN ('active', 'escalated');
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    idem_key TEXT NOT NULL UNIQUE,
    contract_id TEXT NOT NULL,
    region TEXT NOT NULL,
    quote_id TEXT NOT NULL,
    coverage TEXT NOT NULL,
    state TEXT NOT NULL,
    request_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    audited INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_state ON batches(state);
CREATE TABLE IF NOT EXISTS quotes (
    contract_id TEXT NOT NULL,
    region TEXT NOT NULL,
    quote_id TEXT NOT NULL,
    PRIMARY KEY (contract_id, region)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    millis INTEGER NOT NULL
);
";

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(super) fn coverage_str(c: CoverageWire) -> &'static str {
    match c {
        CoverageWire::Standard => "standard",
        CoverageWire::Extended => "extended",
    }
}

fn parse_coverage(s: &str) -> CoverageWire {
    if s == "extended" {
        CoverageWire::Extended
    } else {
        CoverageWire::Standard
    }
}

pub(super) fn item_type_str(t: ItemType) -> &'static str {
    match t {
        ItemType::Device => "device",
        ItemType::License => "license",
    }
}

impl Journal {
    /// Opens the journal at `path`, creating it if there is no such file;
    /// refuses when another process holds it, and a file that is not a
    /// journal this refleet can use ([`JournalError::Unusable`]).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Ok(Journal::open_with(path, false)?.0)
    }

    /// [`Journal::open`], but a file that is not a usable journal is moved
    /// aside (renamed `FILE.unusable-<UTC time>`, with its `-wal` and
    /// `-shm`; never deleted) and a new journal started in its place.
    /// Returns where the old file went; a usable journal is opened as is.
    pub fn open_afresh_if_unusable(
        path: &Path,
    ) -> Result<(Journal, Option<PathBuf>), JournalError> {
        Journal::open_with(path, true)
    }

    fn open_with(path: &Path, afresh: bool) -> Result<(Journal, Option<PathBuf>), JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let lock_path = suffixed(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(open_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Busy(path.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let mut moved = None;
        let conn = match open_existing(path) {
            Ok(Some(conn)) => conn,
            Ok(None) => create(path)?,
            Err(JournalError::Unusable { problem, .. }) if afresh => {
                tracing::warn!(journal = %path.display(), problem, "moving the journal aside and starting a new one");
                moved = Some(set_aside(path, "unusable")?);
                create(path)?
            }
            Err(e) => return Err(e),
        };
        Ok((
            Journal {
                conn,
                path: path.to_path_buf(),
                depth: std::cell::Cell::new(0),
                _lock: lock,
            },
            moved,
        ))
    }

    /// Opens an existing journal to read it while a run may hold the lock
    /// (`refleet status`, `refleet report`). WAL lets readers in.
    pub fn open_read_only(path: &Path) -> Result<Connection, JournalError> {
        if !check_file(path)? {
            return Err(JournalError::Open {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| damaged(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema_version(&conn, path)?;
        Ok(conn)
    }

    pub fn begin_run(&self, input: &str, as_of: NaiveDate) -> Result<i64, JournalError> {
        self.conn.execute(
            "INSERT INTO runs (started_at, input, as_of) VALUES (?1, ?2, ?3)",
            params![now(), input, as_of.to_string()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes a run, keeping its `summary.json` and `quotes.json`.
    pub fn finish_run(
        &self,
        run_id: i64,
        outcome: &str,
        summary_json: &str,
        quotes_json: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?1, outcome = ?2, summary_json = ?3, quotes_json = ?4
             WHERE id = ?5",
            params![now(), outcome, summary_json, quotes_json, run_id],
        )?;
        Ok(())
    }

    /// Runs `f` in one transaction (one sync to disk), or inside the
    /// caller's when one is open: the coordinator groups a round of
    /// answers and new batches into a single commit.
    pub fn atomically<T, E: From<JournalError>>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let outer = self.depth.get() == 0;
        if outer {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| E::from(e.into()))?;
        }
        self.depth.set(self.depth.get() + 1);
        let result = f();
        self.depth.set(self.depth.get() - 1);
        if outer {
            match &result {
                Ok(_) => self
                    .conn
                    .execute_batch("COMMIT")
                    .map_err(|e| E::from(e.into()))?,
                Err(_) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
            }
        }
        result
    }

    /// Records an item to submit (`Planned`) or to escalate
    /// (`ManualReview`), unless the journal already knows its event key:
    /// then its recorded state stands (a re-run never submits it again).
    pub fn plan_item(
        &self,
        item: &PlannedItem,
        state: ItemState,
        run_id: i64,
    ) -> Result<(), JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO items (event_key, item_type, serial_number, mac_address, model,
                license_id, bound_serial, contract_id, region, country, deactivated_at, coverage,
                state, first_run, last_run)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
             ON CONFLICT (event_key) DO UPDATE SET last_run = excluded.last_run",
        )?;
        stmt.execute(params![
            item.event_key,
            item_type_str(item.item_type),
            item.serial_number,
            item.mac_address,
            item.model,
            item.license_id,
            item.bound_serial,
            item.contract_id,
            item.region,
            item.country,
            item.deactivated_at,
            coverage_str(item.coverage),
            state.as_str(),
            run_id,
        ])?;
        Ok(())
    }

    /// The quote of (contract, region) for the batches formed from now on.
    pub fn set_quote(
        &self,
        contract_id: &str,
        region: &str,
        quote_id: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO quotes (contract_id, region, quote_id) VALUES (?1, ?2, ?3)",
            params![contract_id, region, quote_id],
        )?;
        Ok(())
    }

    /// Batches whose outcome is unknown: written, maybe sent, no answer kept.
    pub fn unsent_batches(&self) -> Result<Vec<Batch>, JournalError> {
        let ids: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM batches WHERE state = 'submitted' ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.into_iter().map(|id| self.load_batch(id)).collect()
    }

    fn load_batch(&self, id: i64) -> Result<Batch, JournalError> {
        let (idem, contract_id, region, quote_id, coverage): (
            String,
            String,
            String,
            String,
            String,
        ) = self.conn.query_row(
            "SELECT idem_key, contract_id, region, quote_id, coverage FROM batches WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
        let items = self
            .conn
            .prepare_cached(
                "SELECT event_key, item_type, serial_number, mac_address, model, license_id,
                        bound_serial, contract_id, region, country, deactivated_at, coverage
                 FROM items WHERE batch_id = ?1 ORDER BY batch_pos",
            )?
            .query_map([id], read_planned)?
            .map(|r| r.map(|p| p.to_request_item()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch {
            id,
            idempotency_key: idem,
            request: api::ReactivationRequest {
                contract_id,
                region,
                quote_id,
                coverage: parse_coverage(&coverage),
                items,
            },
        })
    }

    /// Forms the next batch from planned items: the first planned item in
    /// journal order picks the (contract, region), and up to `max` items of
    /// that group follow it. The batch is committed as `submitted` before
    /// it is returned, so it is on disk before its request can leave.
    pub fn next_batch(&self, max: usize) -> Result<Option<Batch>, JournalError> {
        // Both through indexes: the first planned item by `items_state`
        // (ordered by rowid within a state), its group's planned items by
        // the partial index `items_planned`, so forming a batch costs the
        // same at the end of a million items as at the start.
        let first: Option<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT contract_id, region FROM items INDEXED BY items_state
                 WHERE state = 'planned' ORDER BY rowid LIMIT 1",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((contract_id, region)) = first else {
            return Ok(None);
        };
        let planned: Vec<(i64, PlannedItem)> = self
            .conn
            .prepare_cached(
                "SELECT event_key, item_type, serial_number, mac_address, model, license_id,
                        bound_serial, contract_id, region, country, deactivated_at, coverage, rowid
                 FROM items INDEXED BY items_planned
                 WHERE state = 'planned' AND contract_id = ?1 AND region = ?2
                 ORDER BY rowid LIMIT ?3",
            )?
            .query_map(params![contract_id, region, max as i64], |r| {
                Ok((r.get(12)?, read_planned(r)?))
            })?
            .collect::<Result<_, _>>()?;
        let Some((_, head)) = planned.first() else {
            return Ok(None);
        };
        let coverage = head.coverage;
        let quote_id: String = self
            .conn
            .prepare_cached("SELECT quote_id FROM quotes WHERE contract_id = ?1 AND region = ?2")?
            .query_row(params![contract_id, region], |r| r.get(0))
            .optional()?
            .unwrap_or_default();
        let key = api::batch_key(planned.iter().map(|(_, p)| p.event_key.as_str()));
        let tx = &self.conn;
        let id = self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            tx.prepare_cached(
                "INSERT INTO batches (idem_key, contract_id, region, quote_id, coverage, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'submitted', ?6, ?6)",
            )?
            .execute(params![key, contract_id, region, quote_id, coverage_str(coverage), at])?;
            let id = tx.last_insert_rowid();
            let mut upd = tx.prepare_cached(
                "UPDATE items SET state = 'submitted', batch_id = ?1, batch_pos = ?2
                 WHERE rowid = ?3",
            )?;
            for (pos, (rowid, _)) in planned.iter().enumerate() {
                upd.execute(params![id, pos as i64, rowid])?;
            }
            Ok(id)
        })?;
        let group = BatchGroup {
            contract_id,
            region,
            quote_id,
            coverage,
        };
        Ok(Some(Batch::of(
            id,
            key,
            group,
            planned.iter().map(|(_, p)| p),
        )))
    }

    /// The server accepted the batch: its request id and each item's first
    /// word. Items are found by their place in the batch (the answer's keys
    /// were checked against the batch before).
    pub fn batch_accepted(
        &self,
        batch: &Batch,
        attempts: u32,
        answer: &api::ReactivationAccepted,
    ) -> Result<(), JournalError> {
        let pos: std::collections::HashMap<&str, i64> = batch
            .request
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.item_key.as_str(), i as i64))
            .collect();
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            // A re-sent batch answered under a new request id is a new order
            // for the audit log.
            tx.prepare_cached(
                "UPDATE batches SET state = 'accepted', request_id = ?2, attempts = attempts + ?3,
                     last_error = NULL, updated_at = ?4,
                     audited = CASE WHEN request_id IS ?2 THEN audited ELSE 0 END
                 WHERE id = ?1",
            )?
            .execute(params![batch.id, answer.request_id, attempts, at])?;
            // Only items waiting for this answer: those of a re-sent batch
            // that the vendor had already settled keep their state.
            let mut upd = tx.prepare_cached(
                "UPDATE items SET state = ?1, reason = ?2, eta = ?3
                 WHERE batch_id = ?4 AND batch_pos = ?5 AND state = 'submitted'",
            )?;
            for d in &answer.items {
                let Some(&p) = pos.get(d.item_key.as_str()) else {
                    continue;
                };
                let state = match d.status {
                    api::Decision::Accepted => ItemState::Accepted,
                    api::Decision::Rejected => ItemState::Rejected,
                };
                upd.execute(params![
                    state.as_str(),
                    d.reason,
                    d.eta.map(|e| e.to_string()),
                    batch.id,
                    p
                ])?;
            }
            Ok(())
        })
    }

    /// The server refused the batch for good (a 4xx that is not retried):
    /// its items are `failed` with the server's reason.
    pub fn batch_refused(
        &self,
        batch_id: i64,
        attempts: u32,
        reason: &str,
    ) -> Result<(), JournalError> {
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            tx.execute(
                "UPDATE batches SET state = 'refused', attempts = attempts + ?2, last_error = ?3,
                 updated_at = ?4 WHERE id = ?1",
                params![batch_id, attempts, reason, at],
            )?;
            tx.execute(
                "UPDATE items SET state = 'failed', reason = ?2 WHERE batch_id = ?1",
                params![batch_id, reason],
            )?;
            Ok(())
        })?;
        Ok(())
    }

    /// No answer after every retry: the batch stays `submitted` (outcome
    /// unknown) and will be re-sent with the same key.
    pub fn batch_unanswered(
        &self,
        batch_id: i64,
        attempts: u32,
        error: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE batches SET attempts = attempts + ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
            params![batch_id, attempts, error, now()],
        )?;
        Ok(())
    }

    /// Up to `limit` items to look up at the vendor before paying, after
    /// journal row `after` (0 to start): planned items (never sent), and
    /// items a lookup found still on their way ([`LookupPurpose::Track`]).
    pub fn to_look_up(
        &self,
        purpose: LookupPurpose,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LookupTarget>, JournalError> {
        let sql = match purpose {
            LookupPurpose::BeforePaying => {
                "SELECT rowid, event_key, item_type, serial_number, license_id, contract_id,
                        deactivated_at
                 FROM items WHERE state = 'planned' AND rowid > ?1 ORDER BY rowid LIMIT ?2"
            }
            LookupPurpose::Track => {
                "SELECT rowid, event_key, item_type, serial_number, license_id, contract_id,
                        deactivated_at
                 FROM items WHERE source = 'vendor' AND state IN ('accepted', 'provisioning')
                      AND rowid > ?1 ORDER BY rowid LIMIT ?2"
            }
        };
        let rows = self
            .conn
            .prepare_cached(sql)?
            .query_map(params![after, limit as i64], |r| {
                let item_type: String = r.get(2)?;
                let (serial, license): (Option<String>, Option<String>) = (r.get(3)?, r.get(4)?);
                Ok(LookupTarget {
                    rowid: r.get(0)?,
                    event_key: r.get(1)?,
                    item: api::LookupItem {
                        serial_number: if item_type == "license" { None } else { serial },
                        license_id: if item_type == "license" {
                            license
                        } else {
                            None
                        },
                        contract_id: r.get(5)?,
                    },
                    deactivated_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Records what the vendor holds for an item refleet did not send: its
    /// state (pending → `accepted`), request id, confirmation and times;
    /// `source` marks it as the vendor's, not bought by this journal. Only
    /// an item still `planned` (before paying) or one found earlier (while
    /// tracking) is changed; returns whether it was.
    pub fn record_vendor(
        &self,
        event_key: &str,
        record: &api::VendorRecord,
    ) -> Result<bool, JournalError> {
        let state = match record.state {
            api::ItemState::Pending => ItemState::Accepted,
            api::ItemState::Provisioning => ItemState::Provisioning,
            api::ItemState::Active => ItemState::Active,
            api::ItemState::Failed => ItemState::Failed,
            api::ItemState::Rejected => ItemState::Rejected,
        };
        let features = record.features_verified.map(|f| features_bits(&f));
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE items SET state = ?1, source = 'vendor', request_id = ?2,
                     confirmation_id = ?3, features = ?4, activated_at = ?5,
                     eta = COALESCE(?6, eta), reason = ?7
                 WHERE event_key = ?8
                   AND (state = 'planned'
                        OR (source = 'vendor' AND state IN ('accepted', 'provisioning')))",
            )?
            .execute(params![
                state.as_str(),
                record.request_id,
                record.confirmation_id,
                features,
                record.activated_at.map(fmt_time),
                record.eta.map(|d| d.to_string()),
                record.reason,
                event_key,
            ])?;
        Ok(changed > 0)
    }

    /// The items of run `run_id`'s input that it will not buy: already
    /// sent by an earlier run, or found at the vendor. By serial number
    /// (devices) or license id (licenses), as quotes key them.
    pub fn not_to_buy(
        &self,
        run_id: i64,
    ) -> Result<std::collections::HashSet<String>, JournalError> {
        let rows = self
            .conn
            .prepare(
                "SELECT CASE WHEN item_type = 'license' THEN license_id ELSE serial_number END
                 FROM items WHERE last_run = ?1 AND state NOT IN ('planned', 'manual_review')",
            )?
            .query_map([run_id], |r| r.get::<_, Option<String>>(0))?
            .filter_map(|r| r.transpose())
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Of run `run_id`'s eligible input: items to buy, items an earlier run
    /// of this journal sent, items the vendor held.
    pub fn run_split(&self, run_id: i64) -> Result<RunSplit, JournalError> {
        let split = self.conn.query_row(
            "SELECT COALESCE(SUM(state = 'planned'), 0),
                    COALESCE(SUM(source IS NULL AND state NOT IN ('planned', 'manual_review')), 0),
                    COALESCE(SUM(source = 'vendor'), 0)
             FROM items WHERE last_run = ?1",
            [run_id],
            |r| {
                Ok(RunSplit {
                    to_buy: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                    earlier_runs: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                    vendor_held: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                })
            },
        )?;
        Ok(split)
    }

    /// An item found on its way at the vendor whose vendor record then
    /// failed, was rejected or went away: it was not reactivated, so it goes
    /// back to `planned` (no vendor fields) to be looked up and paid.
    pub fn release_vendor(&self, event_key: &str) -> Result<bool, JournalError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE items SET state = 'planned', source = NULL, request_id = NULL,
                     confirmation_id = NULL, features = NULL, activated_at = NULL, eta = NULL,
                     reason = NULL
                 WHERE event_key = ?1 AND source = 'vendor' AND state IN ('accepted', 'provisioning')",
            )?
            .execute([event_key])?;
        Ok(changed > 0)
    }

    /// Accepted batches with items still pending or provisioning.
    pub fn tracked(&self) -> Result<Vec<Tracked>, JournalError> {
        let rows = self
            .conn
            .prepare(
                "SELECT DISTINCT b.id, b.request_id FROM batches b JOIN items i ON i.batch_id = b.id
                 WHERE b.state = 'accepted' AND i.state IN ('accepted', 'provisioning')
                 ORDER BY b.id",
            )?
            .query_map([], |r| {
                Ok(Tracked {
                    batch_id: r.get(0)?,
                    request_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Records a status answer about a batch whose items are `items` (as
    /// [`Journal::batch_items`] read them, the answer checked against
    /// them); returns how many of its items are still on their way. Only
    /// items whose state changes are written: an item still pending or
    /// provisioning keeps its row as it was.
    pub fn record_status(
        &self,
        batch_id: i64,
        items: &[BatchItem],
        status: &api::ReactivationStatus,
    ) -> Result<usize, JournalError> {
        let known: std::collections::HashMap<&str, &BatchItem> =
            items.iter().map(|i| (i.event_key.as_str(), i)).collect();
        let tx = &self.conn;
        let mut open = 0;
        self.atomically(|| -> Result<_, JournalError> {
            let mut upd = tx.prepare_cached(
                "UPDATE items SET state = ?1, reason = COALESCE(?2, reason), eta = COALESCE(?3, eta),
                     confirmation_id = ?4, features = ?5, activated_at = ?6
                 WHERE batch_id = ?7 AND batch_pos = ?8 AND state IN ('accepted', 'provisioning')",
            )?;
            for it in &status.items {
                let state = match it.state {
                    api::ItemState::Pending => ItemState::Accepted,
                    api::ItemState::Provisioning => ItemState::Provisioning,
                    api::ItemState::Active => ItemState::Active,
                    api::ItemState::Failed => ItemState::Failed,
                    api::ItemState::Rejected => ItemState::Rejected,
                };
                if !it.state.is_terminal() {
                    open += 1;
                }
                let Some(item) = known.get(it.item_key.as_str()) else {
                    continue;
                };
                if item.state == state {
                    continue;
                }
                let features = it.features_verified.map(|f| features_bits(&f));
                upd.execute(params![
                    state.as_str(),
                    it.reason,
                    it.eta.map(|e| e.to_string()),
                    it.confirmation_id,
                    features,
                    it.activated_at.map(fmt_time),
                    batch_id,
                    item.pos
                ])?;
            }
            Ok(())
        })?;
        Ok(open)
    }

    /// Items that need a support case: failed ones and manual reviews.
    pub fn cases_to_open(&self) -> Result<Vec<CaseToOpen>, JournalError> {
        let rows = self
            .conn
            .prepare(
                "SELECT i.event_key, i.contract_id, COALESCE(i.request_id, b.request_id),
                        i.serial_number, i.license_id, i.state, i.reason
                 FROM items i LEFT JOIN batches b ON b.id = i.batch_id
                 WHERE i.state IN ('failed', 'manual_review') AND i.case_id IS NULL
                 ORDER BY i.rowid",
            )?
            .query_map([], |r| {
                let state: String = r.get(5)?;
                let reason: Option<String> = r.get(6)?;
                Ok(CaseToOpen {
                    event_key: r.get(0)?,
                    request: api::CaseRequest {
                        item_key: r.get(0)?,
                        contract_id: r.get(1)?,
                        request_id: r.get(2)?,
                        serial_number: r.get(3)?,
                        license_id: r.get(4)?,
                        reason: if state == "manual_review" {
                            "MANUAL_REVIEW".into()
                        } else {
                            reason.unwrap_or_else(|| "FAILED".into())
                        },
                    },
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn case_opened(&self, event_key: &str, case_id: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE items SET state = 'escalated', case_id = ?2 WHERE event_key = ?1",
            params![event_key, case_id],
        )?;
        Ok(())
    }

    /// The items of a batch, in batch order, to check an answer against.
    pub fn batch_items(&self, batch_id: i64) -> Result<Vec<BatchItem>, JournalError> {
        let mut items = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT event_key, batch_pos, state FROM items WHERE batch_id = ?1 ORDER BY batch_pos",
        )?;
        let mut rows = stmt.query([batch_id])?;
        while let Some(r) = rows.next()? {
            let state: String = r.get(2)?;
            items.push(BatchItem {
                event_key: r.get(0)?,
                pos: r.get(1)?,
                state: ItemState::parse(&state)
                    .ok_or_else(|| JournalError::BadState(self.path.clone(), state))?,
            });
        }
        Ok(items)
    }

    /// The vendor lost or confused a batch: kept in the attempts trail (kind
    /// `lost`, with why). Returns how many times this batch was lost, over
    /// every run of this journal.
    pub fn record_loss(&self, run_id: i64, batch_id: i64, why: &str) -> Result<u32, JournalError> {
        let target = format!("batch {batch_id}");
        self.record_attempt(run_id, Utc::now(), "lost", &target, None, Some(why), 0)?;
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM attempts WHERE kind = 'lost' AND target = ?1",
            [&target],
            |r| r.get(0),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Puts a lost batch back to `submitted`, to be re-sent under its key
    /// and body; its items go back to `submitted` for the new answer to
    /// decide. Returns the batch to send.
    pub fn batch_resend(&self, batch_id: i64, why: &str) -> Result<Batch, JournalError> {
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            tx.execute(
                "UPDATE batches SET state = 'submitted', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![batch_id, why, at],
            )?;
            tx.execute(
                "UPDATE items SET state = 'submitted', reason = NULL, eta = NULL
                 WHERE batch_id = ?1 AND state IN ('submitted', 'accepted', 'provisioning', 'rejected')",
                [batch_id],
            )?;
            Ok(())
        })?;
        self.load_batch(batch_id)
    }

    /// Gives up on a lost batch: its items still on their way are `failed`
    /// with `reason` (then escalated, when cases are on).
    pub fn batch_lost(&self, batch_id: i64, reason: &str, why: &str) -> Result<(), JournalError> {
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let at = now();
            tx.execute(
                "UPDATE batches SET state = 'lost', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![batch_id, why, at],
            )?;
            tx.execute(
                "UPDATE items SET state = 'failed', reason = ?2
                 WHERE batch_id = ?1 AND state IN ('submitted', 'accepted', 'provisioning')",
                params![batch_id, reason],
            )?;
            Ok(())
        })
    }

    /// One HTTP exchange, for the audit trail.
    #[allow(clippy::too_many_arguments)]
    pub fn record_attempt(
        &self,
        run_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        target: &str,
        status: Option<u16>,
        error: Option<&str>,
        millis: u64,
    ) -> Result<(), JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO attempts (run_id, at, kind, target, status, error, millis)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        stmt.execute(params![
            run_id,
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kind,
            target,
            status,
            error,
            millis as i64
        ])?;
        Ok(())
    }

    /// Whether the journal holds any item.
    pub fn holds_items(&self) -> Result<bool, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM items)", [], |r| r.get(0))?)
    }

    /// Item counts by state.
    pub fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError> {
        counts(&self.conn, &self.path)
    }

    /// Looks up one item by event key (see [`Records`]).
    pub fn record(&self, event_key: &str, run_id: i64) -> Result<Option<ItemRecord>, JournalError> {
        self.records(run_id)?.get(event_key)
    }

    /// A reader of items by event key as run `run_id` sees them, for
    /// `results.csv`: the batches (attempts, which run sent them) are read
    /// once, then each item is one lookup by its key.
    pub fn records(&self, run_id: i64) -> Result<Records<'_>, JournalError> {
        let mut batches = std::collections::HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT id, attempts, created_at >= (SELECT started_at FROM runs WHERE id = ?1),
                    request_id
             FROM batches",
        )?;
        let mut rows = stmt.query([run_id])?;
        while let Some(r) = rows.next()? {
            let attempts: i64 = r.get(1)?;
            let this_run: Option<bool> = r.get(2)?;
            batches.insert(
                r.get::<_, i64>(0)?,
                BatchOfRecord {
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    this_run: this_run.unwrap_or(false),
                    request_id: r.get(3)?,
                },
            );
        }
        let item = self.conn.prepare_cached(
            "SELECT state, reason, request_id, confirmation_id, features, case_id, eta,
                    activated_at, source, batch_id
             FROM items WHERE event_key = ?1",
        )?;
        Ok(Records { item, batches })
    }
}

/// Items by event key, with what their batches say (see [`Journal::records`]).
pub struct Records<'j> {
    item: rusqlite::CachedStatement<'j>,
    batches: std::collections::HashMap<i64, BatchOfRecord>,
}

/// What an item's record takes from its batch.
struct BatchOfRecord {
    attempts: u32,
    /// Sent by the run the records are for.
    this_run: bool,
    request_id: Option<String>,
}

impl Records<'_> {
    pub fn get(&mut self, event_key: &str) -> Result<Option<ItemRecord>, JournalError> {
        let batches = &self.batches;
        Ok(self
            .item
            .query_row([event_key], |r| {
                let source: Option<String> = r.get(8)?;
                let batch = r.get::<_, Option<i64>>(9)?.and_then(|id| batches.get(&id));
                let own_request: Option<String> = r.get(2)?;
                Ok(ItemRecord {
                    state: r.get(0)?,
                    reason: r.get(1)?,
                    request_id: own_request.or_else(|| batch.and_then(|b| b.request_id.clone())),
                    confirmation_id: r.get(3)?,
                    features: r.get::<_, Option<i64>>(4)?.map(features_text),
                    case_id: r.get(5)?,
                    attempts: batch.map_or(0, |b| b.attempts),
                    eta: r.get(6)?,
                    activated_at: r.get(7)?,
                    source: match (source.as_deref(), batch) {
                        (Some("vendor"), _) => Source::VendorRecord,
                        (_, None) => Source::NotSent,
                        (_, Some(b)) if b.this_run => Source::ThisRun,
                        (_, Some(_)) => Source::EarlierRun,
                    },
                })
            })
            .optional()?)
    }
}

/// An activation or a case the audit log does not have yet.
#[derive(Debug, Clone)]
pub struct AuditItem {
    pub rowid: i64,
    pub event_key: String,
    pub state: String,
    pub item_type: String,
    pub serial_number: Option<String>,
    pub license_id: Option<String>,
    pub contract_id: String,
    pub region: String,
    pub quote_id: String,
    pub request_id: Option<String>,
    pub confirmation_id: Option<String>,
    pub features: Option<String>,
    pub activated_at: Option<String>,
    pub case_id: Option<String>,
    pub reason: Option<String>,
    /// The vendor held it already (a lookup found it): not bought by this journal.
    pub vendor_record: bool,
}

/// An accepted request (an order) the audit log does not have yet.
#[derive(Debug, Clone)]
pub struct AuditOrder {
    pub batch_id: i64,
    pub idempotency_key: String,
    pub request_id: String,
    pub contract_id: String,
    pub region: String,
    pub quote_id: String,
    pub accepted_at: String,
    pub items: u64,
}

impl Journal {
    /// What the journal knows of its audit log: its id, the log's file and
    /// where the chain stands, as last recorded.
    pub fn audit_state(&self) -> Result<crate::report::Binding, JournalError> {
        audit_binding(&self.conn, &self.path)
    }

    /// Active and escalated items not yet in the audit log, by batch
    /// (items found at the vendor first), through the partial index
    /// `items_unaudited`: only what settled since the last write is read.
    pub fn unaudited_items(&self) -> Result<Vec<AuditItem>, JournalError> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT i.rowid, i.event_key, i.state, i.item_type, i.serial_number, i.license_id,
                        i.contract_id, i.region, COALESCE(b.quote_id, ''),
                        COALESCE(i.request_id, b.request_id), i.confirmation_id, i.features,
                        i.activated_at, i.case_id, i.reason, i.source = 'vendor'
                 FROM items i INDEXED BY items_unaudited LEFT JOIN batches b ON b.id = i.batch_id
                 WHERE i.audited = 0 AND i.state IN ('active', 'escalated')
                 ORDER BY i.batch_id, i.rowid",
            )?
            .query_map([], |r| {
                Ok(AuditItem {
                    rowid: r.get(0)?,
                    event_key: r.get(1)?,
                    state: r.get(2)?,
                    item_type: r.get(3)?,
                    serial_number: r.get(4)?,
                    license_id: r.get(5)?,
                    contract_id: r.get(6)?,
                    region: r.get(7)?,
                    quote_id: r.get(8)?,
                    request_id: r.get(9)?,
                    confirmation_id: r.get(10)?,
                    features: r.get::<_, Option<i64>>(11)?.map(features_text),
                    activated_at: r.get(12)?,
                    case_id: r.get(13)?,
                    reason: r.get(14)?,
                    vendor_record: r.get::<_, Option<bool>>(15)?.unwrap_or(false),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Accepted requests not yet in the audit log.
    pub fn unaudited_orders(&self) -> Result<Vec<AuditOrder>, JournalError> {
        let rows = self
            .conn
            .prepare(
                "SELECT b.id, b.request_id, b.contract_id, b.region, b.quote_id, b.updated_at,
                        (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id AND i.state != 'rejected'),
                        b.idem_key
                 FROM batches b WHERE b.state = 'accepted' AND b.audited = 0 ORDER BY b.id",
            )?
            .query_map([], |r| {
                Ok(AuditOrder {
                    batch_id: r.get(0)?,
                    idempotency_key: r.get(7)?,
                    request_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    contract_id: r.get(2)?,
                    region: r.get(3)?,
                    quote_id: r.get(4)?,
                    accepted_at: r.get(5)?,
                    items: r.get::<_, i64>(6)?.max(0) as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Marks what the log holds (items appended now, by row; items adopted
    /// from a crash's tail, by event key; orders), with the log's file and
    /// the chain's new state, in one transaction.
    pub fn mark_audited(
        &self,
        rows: &[i64],
        adopted: &[String],
        orders: &[AuditedOrder],
        file: &str,
        state: &crate::report::ChainState,
    ) -> Result<(), JournalError> {
        let tx = &self.conn;
        self.atomically(|| -> Result<_, JournalError> {
            let mut by_row = tx.prepare_cached("UPDATE items SET audited = 1 WHERE rowid = ?1")?;
            for r in rows {
                by_row.execute([r])?;
            }
            let mut by_key =
                tx.prepare_cached("UPDATE items SET audited = 1 WHERE event_key = ?1")?;
            for k in adopted {
                by_key.execute([k])?;
            }
            for order in orders {
                let (sql, key) = match order {
                    AuditedOrder::Batch(id) => {
                        tx.prepare_cached("UPDATE batches SET audited = 1 WHERE id = ?1")?
                            .execute([id])?;
                        continue;
                    }
                    AuditedOrder::IdempotencyKey(k) => {
                        ("UPDATE batches SET audited = 1 WHERE idem_key = ?1", k)
                    }
                    AuditedOrder::RequestId(r) => (
                        "UPDATE batches SET audited = 1 WHERE request_id = ?1 AND audited = 0",
                        r,
                    ),
                };
                tx.prepare_cached(sql)?.execute([key])?;
            }
            let mut m =
                tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
            m.execute(params!["audit_file", file])?;
            m.execute(params!["audit_len", state.len.to_string()])?;
            m.execute(params!["audit_records", state.records.to_string()])?;
            m.execute(params!["audit_hash", state.last_hash])?;
            Ok(())
        })
    }
}

/// An order the audit log holds: one just appended (its batch), or one
/// adopted from the log, by the idempotency key its record carries (by its
/// request id for a record from before keys were written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditedOrder {
    Batch(i64),
    IdempotencyKey(String),
    RequestId(String),
}

/// What a journal knows of its audit log, from any connection to it.
fn audit_binding(conn: &Connection, path: &Path) -> Result<crate::report::Binding, JournalError> {
    let get = |k: &str| -> Result<Option<String>, JournalError> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .optional()?)
    };
    let bad = |key: &str, value: &str| {
        unusable(path, format!("is damaged (its meta `{key}` is `{value}`)"))
    };
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let journal_id = match get("journal_id")? {
        Some(id) if hex(&id, 16) => id,
        Some(id) => return Err(bad("journal_id", &id)),
        None => {
            return Err(unusable(
                path,
                "has no journal id yet (open it with `refleet run` once)",
            ))
        }
    };
    // A plain name in the journal's folder, never a path elsewhere.
    let file = match get("audit_file")? {
        Some(f) if Path::new(&f).file_name() == Some(std::ffi::OsStr::new(&f)) => Some(f),
        Some(f) => return Err(bad("audit_file", &f)),
        None => None,
    };
    let mut chain = crate::report::ChainState::default();
    if let (Some(len), Some(records), Some(hash)) =
        (get("audit_len")?, get("audit_records")?, get("audit_hash")?)
    {
        chain.len = len.parse().map_err(|_| bad("audit_len", &len))?;
        chain.records = records
            .parse()
            .map_err(|_| bad("audit_records", &records))?;
        if !hex(&hash, 64) {
            return Err(bad("audit_hash", &hash));
        }
        chain.last_hash = hash;
    }
    Ok(crate::report::Binding {
        journal_id,
        file,
        chain,
    })
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn unusable(path: &Path, problem: impl Into<String>) -> JournalError {
    JournalError::Unusable {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// An SQLite error on opening: a damaged file is [`JournalError::Unusable`].
fn damaged(path: &Path, e: rusqlite::Error) -> JournalError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            unusable(path, format!("is damaged ({e})"))
        }
        _ => JournalError::Sql(e),
    }
}

/// A random id, 16 hex digits: it names the journal's audit log.
fn new_journal_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Whether a journal file exists, checking what can be told without SQLite:
/// not empty, an SQLite header, and at least as long as that header says.
fn check_file(path: &Path) -> Result<bool, JournalError> {
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

/// The journal's format version: 0 for one from before versions were kept.
fn schema_version(conn: &Connection, path: &Path) -> Result<u32, JournalError> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(|e| damaged(path, e))?;
    if tables.is_empty() {
        return Err(unusable(
            path,
            "holds no journal (an SQLite database without tables)",
        ));
    }
    if !["meta", "items", "batches"]
        .iter()
        .all(|t| tables.iter().any(|have| have == t))
    {
        return Err(unusable(
            path,
            "is an SQLite database but not a refleet journal (it lacks the meta, items and batches tables)",
        ));
    }
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| damaged(path, e))?;
    let Some(version) = version else {
        return Ok(0);
    };
    match version.parse::<u32>() {
        Ok(v @ 1..=SCHEMA_VERSION) => Ok(v),
        _ => Err(unusable(
            path,
            format!(
                "was written by another version of refleet (journal format `{version}`; this refleet reads format 1 to {SCHEMA_VERSION})"
            ),
        )),
    }
}

/// Brings a journal of format `from` to [`SCHEMA_VERSION`].
fn migrate(conn: &Connection, from: u32) -> Result<(), JournalError> {
    if from == 0 {
        // Before versions: the same tables; the version and an id are added.
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('journal_id', ?1)",
            [new_journal_id()],
        )?;
        set_version(&tx, 1)?;
        tx.commit()?;
    }
    if from <= 1 {
        // 2: items found at the vendor by a lookup are marked `source`.
        let tx = conn.unchecked_transaction()?;
        if !has_column(&tx, "source")? {
            tx.execute_batch(
                "ALTER TABLE items ADD COLUMN source TEXT;
                 ALTER TABLE items ADD COLUMN last_run INTEGER;",
            )?;
        }
        set_version(&tx, 2)?;
        tx.commit()?;
    }
    if from <= 2 {
        // 3: the items table rebuilt without what its batch holds.
        let tx = conn.unchecked_transaction()?;
        if has_column(&tx, "updated_at")? {
            tx.execute_batch(
                "DROP INDEX IF EXISTS items_state;
                 DROP INDEX IF EXISTS items_batch;
                 DROP INDEX IF EXISTS items_planned;
                 DROP INDEX IF EXISTS items_unaudited;
                 ALTER TABLE items RENAME TO items_v2;",
            )?;
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(
                "INSERT INTO items (rowid, event_key, item_type, serial_number, mac_address, model,
                     license_id, bound_serial, contract_id, region, country, deactivated_at,
                     coverage, state, reason, batch_id, batch_pos, request_id, eta,
                     confirmation_id, features, activated_at, case_id, audited, first_run,
                     source, last_run)
                 SELECT i.rowid, i.event_key, i.item_type, i.serial_number, i.mac_address, i.model,
                     i.license_id, i.bound_serial, i.contract_id, i.region, i.country,
                     i.deactivated_at, i.coverage, i.state, i.reason, i.batch_id, i.batch_pos,
                     CASE WHEN i.request_id IS (SELECT b.request_id FROM batches b
                                                WHERE b.id = i.batch_id)
                          THEN NULL ELSE i.request_id END,
                     i.eta, i.confirmation_id,
                     CASE WHEN i.features IS NULL THEN NULL
                          ELSE (instr(i.features, 'meetings') > 0)
                               | ((instr(i.features, 'conferencing') > 0) << 1)
                               | ((instr(i.features, 'uc') > 0) << 2) END,
                     i.activated_at, i.case_id, i.audited, i.first_run, i.source, i.last_run
                 FROM items_v2 i;
                 DROP TABLE items_v2;",
            )?;
        }
        set_version(&tx, 3)?;
        tx.commit()?;
    }
    Ok(())
}

/// Whether the `items` table has `column` (a step of [`migrate`] may have
/// run before the version was recorded).
fn has_column(conn: &Connection, column: &str) -> Result<bool, JournalError> {
    Ok(conn
        .prepare("SELECT 1 FROM pragma_table_info('items') WHERE name = ?1")?
        .exists([column])?)
}

fn set_version(conn: &Connection, version: u32) -> Result<(), JournalError> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
        [version.to_string()],
    )?;
    Ok(())
}

/// Opens the journal at `path` if there is one (`None`: no such file),
/// refusing one that cannot be used.
fn open_existing(path: &Path) -> Result<Option<Connection>, JournalError> {
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
fn create(path: &Path) -> Result<Connection, JournalError> {
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
fn set_aside(path: &Path, label: &str) -> Result<PathBuf, JournalError> {
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

/// Item counts by state, from any connection to a journal.
fn counts(conn: &Connection, path: &Path) -> Result<Vec<(ItemState, u64)>, JournalError> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM items GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        let st = ItemState::parse(&state)
            .ok_or_else(|| JournalError::BadState(path.to_path_buf(), state.clone()))?;
        out.push((st, n.max(0) as u64));
    }
    out.sort();
    Ok(out)
}

/// A journal opened to read while a run may hold it (`refleet status`,
/// `report`, `audit verify`): what those commands ask, as typed answers.
pub struct JournalReader {
    conn: Connection,
    path: PathBuf,
}

/// The newest run of a journal.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub started_at: String,
    /// `None`: still going, or stopped without finishing.
    pub finished_at: Option<String>,
    pub outcome: Option<String>,
}

impl JournalReader {
    pub fn open(path: &Path) -> Result<JournalReader, JournalError> {
        Ok(JournalReader {
            conn: Journal::open_read_only(path)?,
            path: path.to_path_buf(),
        })
    }

    /// Item counts by state.
    pub fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError> {
        counts(&self.conn, &self.path)
    }

    /// The journal's id and its audit log's chain state.
    pub fn audit_binding(&self) -> Result<crate::report::Binding, JournalError> {
        audit_binding(&self.conn, &self.path)
    }

    pub fn last_run(&self) -> Result<Option<RunRow>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, started_at, finished_at, outcome FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(RunRow {
                        id: r.get(0)?,
                        started_at: r.get(1)?,
                        finished_at: r.get(2)?,
                        outcome: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Run `run_id`'s requests per second over the last minute of its
    /// requests; `None` with fewer than two requests in it.
    pub fn recent_rate(&self, run_id: i64) -> Result<Option<f64>, JournalError> {
        let (requests, span): (i64, f64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE((julianday(MAX(at)) - julianday(MIN(at))) * 86400.0, 0)
             FROM attempts WHERE run_id = ?1
               AND julianday(at) >= (SELECT julianday(MAX(at)) FROM attempts WHERE run_id = ?1) - 60.0 / 86400.0",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((requests > 1 && span > 0.0).then(|| requests as f64 / span))
    }

    pub fn last_finished_run(&self) -> Result<Option<FinishedRun>, JournalError> {
        last_finished_run(&self.conn)
    }

    pub fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError> {
        activations_by_day(&self.conn)
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The verified features as the journal and `results.csv` keep them:
/// `meetings;conferencing;uc`, or fewer.
fn features_text(bits: i64) -> String {
    let mut v = Vec::new();
    for (bit, name) in FEATURES {
        if bits & bit != 0 {
            v.push(name);
        }
    }
    v.join(";")
}

/// The journal's `features` bits.
const FEATURES: [(i64, &str); 3] = [(1, "meetings"), (2, "conferencing"), (4, "uc")];

fn features_bits(f: &api::Features) -> i64 {
    i64::from(f.meetings) | i64::from(f.conferencing) << 1 | i64::from(f.uc) << 2
}

fn read_planned(r: &rusqlite::Row<'_>) -> rusqlite::Result<PlannedItem> {
    let item_type: String = r.get(1)?;
    let coverage: String = r.get(11)?;
    Ok(PlannedItem {
        event_key: r.get(0)?,
        item_type: if item_type == "license" {
            ItemType::License
        } else {
            ItemType::Device
        },
        serial_number: r.get(2)?,
        mac_address: r.get(3)?,
        model: r.get(4)?,
        license_id: r.get(5)?,
        bound_serial: r.get(6)?,
        contract_id: r.get(7)?,
        region: r.get(8)?,
        country: r.get(9)?,
        deactivated_at: r.get(10)?,
        coverage: parse_coverage(&coverage),
    })
}

impl Journal {
    /// Activations per UTC day, for `report.html`.
    pub fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError> {
        activations_by_day(&self.conn)
    }
}

/// Activations per UTC day (`YYYY-MM-DD`), oldest first, over every item the
/// journal holds: the journal spans nightly runs, so this is its history.
fn activations_by_day(conn: &Connection) -> Result<Vec<(String, u64)>, JournalError> {
    let mut stmt = conn.prepare(
        "SELECT substr(activated_at, 1, 10) AS day, COUNT(*) FROM items
         WHERE activated_at IS NOT NULL AND activated_at <> '' GROUP BY day ORDER BY day",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The last finished run: (id, finished_at, summary_json, quotes_json).
pub type FinishedRun = (i64, String, String, String);

/// The last run that finished and left its `summary.json` and quotes, so a
/// report can be made from the journal alone (`refleet report`).
fn last_finished_run(conn: &Connection) -> Result<Option<FinishedRun>, JournalError> {
    Ok(conn
        .query_row(
            "SELECT id, finished_at, summary_json, COALESCE(quotes_json, '[]') FROM runs
             WHERE finished_at IS NOT NULL AND summary_json IS NOT NULL
             ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, contract: &str, region: &str) -> PlannedItem {
        PlannedItem {
            event_key: key.into(),
            item_type: ItemType::Device,
            serial_number: Some(key.into()),
            mac_address: None,
            model: Some("CCX 500".into()),
            license_id: None,
            bound_serial: None,
            contract_id: contract.into(),
            region: region.into(),
            country: "US".into(),
            deactivated_at: "2026-01-01".into(),
            coverage: CoverageWire::Standard,
        }
    }

    /// A journal holding `n` planned items, closed.
    fn journal_of(path: &Path, n: usize) {
        let j = Journal::open(path).unwrap();
        let run = j
            .begin_run("x.csv", NaiveDate::from_ymd_opt(2026, 1, 2).unwrap())
            .unwrap();
        j.atomically(|| -> Result<(), JournalError> {
            for i in 0..n {
                j.plan_item(
                    &item(&format!("K{i:06}"), "C1", "AMER"),
                    ItemState::Planned,
                    run,
                )?;
            }
            Ok(())
        })
        .unwrap();
    }

    fn sql(path: &Path, statements: &str) {
        let c = Connection::open(path).unwrap();
        c.execute_batch(statements).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_usable_journal_is_refused_and_moved_aside_only_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.sqlite");
        journal_of(&good, 3000);
        let bytes = std::fs::read(&good).unwrap();
        assert!(bytes.len() > 100_000, "{}", bytes.len());
        let at = |name: &str| dir.path().join(name);
        std::fs::write(at("empty.sqlite"), b"").unwrap();
        std::fs::write(at("text.sqlite"), b"serial_number,mac_address\n").unwrap();
        std::fs::write(at("cut.sqlite"), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(at("newer.sqlite"), &bytes).unwrap();
        sql(
            &at("newer.sqlite"),
            &format!(
                "UPDATE meta SET value = '{}' WHERE key = 'schema_version'",
                SCHEMA_VERSION + 1
            ),
        );
        sql(
            &at("other.sqlite"),
            "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        );
        sql(&at("bare.sqlite"), "PRAGMA user_version = 7;");
        for (name, problem) in [
            ("empty.sqlite", "is empty (0 bytes)"),
            ("text.sqlite", "is not an SQLite database"),
            ("cut.sqlite", "is cut off"),
            (
                "newer.sqlite",
                &format!(
                    "another version of refleet (journal format `{}`",
                    SCHEMA_VERSION + 1
                ),
            ),
            ("other.sqlite", "not a refleet journal"),
            ("bare.sqlite", "holds no journal"),
        ] {
            let path = at(name);
            let before = std::fs::read(&path).unwrap();
            for result in [
                Journal::open(&path).map(|_| ()),
                Journal::open_read_only(&path).map(|_| ()),
            ] {
                match result {
                    Err(e @ JournalError::Unusable { .. }) => {
                        let text = e.to_string();
                        assert!(text.contains(problem), "{name}: {text}");
                        assert!(text.contains("--new-journal"), "{name}: {text}");
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
            assert!(std::fs::read(&path).unwrap() == before, "{name} untouched");
            let (j, moved) = Journal::open_afresh_if_unusable(&path).unwrap();
            let moved = moved.unwrap();
            assert!(
                std::fs::read(&moved).unwrap() == before,
                "{name} kept aside"
            );
            assert!(moved
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{name}.unusable-")));
            assert!(j.counts().unwrap().is_empty());
        }
        // A usable journal is kept as it is.
        let (j, moved) = Journal::open_afresh_if_unusable(&good).unwrap();
        assert_eq!(moved, None);
        assert_eq!(j.counts().unwrap(), vec![(ItemState::Planned, 3000)]);
    }

    /// A state this version does not know (a newer refleet's, or a hand
    /// edit) is an error naming it, never read as another state.
    #[test]
    fn an_unknown_stored_state_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        journal_of(&path, 2);
        sql(
            &path,
            "UPDATE items SET state = 'paused' WHERE event_key = 'K000001'",
        );
        let j = Journal::open(&path).unwrap();
        let fine = j.record("K000000", 1).unwrap().unwrap();
        assert_eq!(fine.state, ItemState::Planned);
        let err = anyhow::Error::new(j.record("K000001", 1).unwrap_err());
        assert!(
            format!("{err:#}").contains("unknown item state \"paused\""),
            "{err:#}"
        );
        assert!(j.counts().is_err());
    }

    #[test]
    fn a_journal_from_before_versions_gets_one_and_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        journal_of(&path, 3);
        let meta = |j: &Journal, key: &str| -> String {
            j.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .unwrap()
        };
        let id = meta(&Journal::open(&path).unwrap(), "journal_id");
        // As refleet a703a2c wrote it: no version, no id.
        sql(
            &path,
            "DELETE FROM meta WHERE key IN ('schema_version', 'journal_id', 'created_at')",
        );
        let j = Journal::open(&path).unwrap();
        assert_eq!(meta(&j, "schema_version"), SCHEMA_VERSION.to_string());
        let new_id = meta(&j, "journal_id");
        assert!(new_id.len() == 16 && new_id != id, "{new_id}");
        assert_eq!(j.counts().unwrap(), vec![(ItemState::Planned, 3)]);
    }

    #[test]
    fn a_version_2_journal_is_rebuilt_without_losing_an_item_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        // The items table as version 2 had it; the other tables are the same.
        sql(
            &path,
            &format!(
                "CREATE TABLE items (event_key TEXT PRIMARY KEY, item_type TEXT NOT NULL,
                     serial_number TEXT, mac_address TEXT, model TEXT, license_id TEXT,
                     bound_serial TEXT, contract_id TEXT NOT NULL, region TEXT NOT NULL,
                     country TEXT NOT NULL, deactivated_at TEXT NOT NULL, coverage TEXT NOT NULL,
                     quote_id TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, reason TEXT,
                     batch_id INTEGER, batch_pos INTEGER, request_id TEXT, eta TEXT,
                     confirmation_id TEXT, features TEXT, activated_at TEXT, case_id TEXT,
                     audited INTEGER NOT NULL DEFAULT 0, first_run INTEGER NOT NULL,
                     source TEXT, last_run INTEGER, updated_at TEXT NOT NULL);
                 {SCHEMA}
                 INSERT INTO meta VALUES ('schema_version', '2'), ('journal_id', 'j2');
                 INSERT INTO runs (id, started_at, input, as_of) VALUES (1, '2026-01-01T00:00:00Z', 'x', '2026-01-01');
                 INSERT INTO batches (id, idem_key, contract_id, region, quote_id, coverage, state,
                     request_id, attempts, created_at, updated_at)
                     VALUES (1, 'rf-1', 'C1', 'AMER', 'Q1', 'standard', 'accepted', 'rq-1', 2,
                             '2026-01-01T00:00:01Z', '2026-01-01T00:00:01Z');
                 INSERT INTO items VALUES ('A|C1|2026-01-01', 'device', 'A', NULL, 'M', NULL, NULL,
                     'C1', 'AMER', 'US', '2026-01-01', 'standard', 'Q1', 'active', NULL, 1, 0,
                     'rq-1', '2026-01-05', 'CNF-A', 'meetings;uc', '2026-01-05T00:00:00Z', NULL,
                     1, 1, NULL, 1, '2026-01-05T00:00:00Z');
                 INSERT INTO items VALUES ('B|C1|2026-01-01', 'device', 'B', NULL, 'M', NULL, NULL,
                     'C1', 'AMER', 'US', '2026-01-01', 'standard', '', 'active', NULL, NULL, NULL,
                     'rq-v', NULL, 'CNF-B', 'meetings;conferencing;uc', '2026-01-04T00:00:00Z',
                     NULL, 0, 1, 'vendor', 1, '2026-01-05T00:00:00Z');"
            ),
        );
        let j = Journal::open(&path).unwrap();
        let version: String = j
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, "3");
        let a = j.record("A|C1|2026-01-01", 1).unwrap().unwrap();
        assert_eq!(
            (
                a.state.as_str(),
                a.request_id.as_deref(),
                a.features.as_deref()
            ),
            ("active", Some("rq-1"), Some("meetings;uc"))
        );
        assert_eq!(
            (a.attempts, a.confirmation_id.as_deref()),
            (2, Some("CNF-A"))
        );
        assert_eq!(a.source, Source::ThisRun);
        let b = j.record("B|C1|2026-01-01", 1).unwrap().unwrap();
        assert_eq!(
            (
                b.request_id.as_deref(),
                b.features.as_deref(),
                b.source.as_str()
            ),
            (
                Some("rq-v"),
                Some("meetings;conferencing;uc"),
                "vendor_record"
            )
        );
        // The unaudited vendor record is still to be written to the log.
        let unaudited = j.unaudited_items().unwrap();
        assert_eq!(unaudited.len(), 1);
        assert_eq!(unaudited[0].event_key, "B|C1|2026-01-01");
        assert!(unaudited[0].vendor_record);
        let kept: bool = j
            .conn
            .prepare("SELECT 1 FROM pragma_table_info('items') WHERE name = 'updated_at'")
            .unwrap()
            .exists([])
            .unwrap();
        assert!(!kept);
    }

    #[test]
    fn a_new_journal_never_meets_a_deleted_ones_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        std::fs::write(
            dir.path().join("j.sqlite-wal"),
            b"frames of a deleted journal",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("j.sqlite.creating"),
            b"a creation cut short",
        )
        .unwrap();
        let j = Journal::open(&path).unwrap();
        assert!(j.counts().unwrap().is_empty());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("j.sqlite.orphaned-") && n.ends_with("-wal")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("creating")), "{names:?}");
    }

    #[test]
    fn a_second_process_is_refused_while_the_first_holds_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let first = Journal::open(&path).unwrap();
        match Journal::open(&path) {
            Err(JournalError::Busy(p)) => assert_eq!(p, path),
            other => panic!("expected Busy, got {:?}", other.map(|_| ())),
        }
        drop(first);
        Journal::open(&path).unwrap();
    }

    #[test]
    fn batches_are_on_disk_before_they_are_returned_and_resent_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let j = Journal::open(&path).unwrap();
        let run = j
            .begin_run("x.csv", NaiveDate::from_ymd_opt(2026, 1, 2).unwrap())
            .unwrap();
        j.atomically(|| -> Result<(), JournalError> {
            for (k, c, r) in [
                ("A", "C1", "AMER"),
                ("B", "C2", "EMEA"),
                ("C", "C1", "AMER"),
            ] {
                j.plan_item(&item(k, c, r), ItemState::Planned, run)?;
            }
            Ok(())
        })
        .unwrap();
        j.set_quote("C1", "AMER", "Q1").unwrap();
        let b = j.next_batch(10).unwrap().unwrap();
        assert_eq!(b.request.contract_id, "C1");
        assert_eq!(b.request.quote_id, "Q1");
        let keys: Vec<_> = b
            .request
            .items
            .iter()
            .map(|i| i.item_key.as_str())
            .collect();
        assert_eq!(keys, ["A", "C"]);
        drop(j);
        // A crash now: the next run finds the batch as it was, same key and body.
        let j = Journal::open(&path).unwrap();
        let again = j.unsent_batches().unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].idempotency_key, b.idempotency_key);
        assert_eq!(again[0].request, b.request);
        // Planning the same items again changes nothing.
        j.plan_item(&item("A", "C1", "AMER"), ItemState::Planned, run)
            .unwrap();
        let next = j.next_batch(10).unwrap().unwrap();
        assert_eq!(next.request.contract_id, "C2");
        assert!(j.next_batch(10).unwrap().is_none());
    }
}
