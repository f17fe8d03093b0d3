//! The journal's tables and their format: the schema, its version, and
//! the steps that bring an older journal up to it.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::file::{damaged, unusable};
use super::JournalError;

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

pub(super) const SCHEMA: &str = "
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

/// The journal's format version: 0 for one from before versions were kept.
pub(super) fn schema_version(conn: &Connection, path: &Path) -> Result<u32, JournalError> {
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
pub(super) fn migrate(conn: &Connection, from: u32) -> Result<(), JournalError> {
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

/// A random id, 16 hex digits: it names the journal's audit log.
pub(super) fn new_journal_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}
