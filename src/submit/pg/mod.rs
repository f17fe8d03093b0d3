//! The shared ledger in PostgreSQL (issue 18): what several runners on one
//! database need that one SQLite journal, held by one process, never did.
//!
//! The pieces that make sharing safe, each tested against a real server
//! (`tests/pg/ledger.rs`):
//! - the schema, created and migrated under an advisory lock (runners that
//!   start together do not race), with its version; a newer schema than
//!   this refleet knows is refused;
//! - the plan written in bulk (one statement per chunk, arrays unnested);
//! - items claimed in batches by exactly one runner (`FOR UPDATE SKIP
//!   LOCKED`), the batch recorded with its idempotency key before its
//!   request may leave, under a lease its runner renews; a batch whose
//!   lease ran out (its runner died) is taken over by another runner, with
//!   the same items and the same key, so the vendor answers it as a replay;
//! - one vendor quota for every runner on the ledger: a GCRA state (one
//!   row, its theoretical arrival time) updated atomically, which a `429`
//!   seen by any runner pushes back for all;
//! - one audit hash chain, extended under a lock on its head, so that
//!   concurrent runners never fork it, and exported as the same JSONL as a
//!   journal's log (`audit::verify` checks it).
//!
//! [`PgJournal`] (`journal/`) is the journal's operations on it, which
//! `refleet run --state postgres://…` uses; `PgLedger` is one runner's
//! connection with the sharing primitives above.

use std::time::Duration;

use serde_json::Map;
use tokio_postgres::Client;

use super::journal::{coverage_str, item_type_str, Batch, BatchGroup, ItemState, PlannedItem};
use crate::api::{self, CoverageWire, ItemType};
use crate::audit;

mod chain;
mod config;
mod journal;
mod quota;

pub use config::{config_of, settings_of, Settings};
use config::{label, open};
pub use journal::PgJournal;
pub use quota::PgQuota;

/// The schema this refleet writes and reads. Version 1 held what runners
/// share (claims, leases, the quota, the audit chain); version 2 adds what
/// a run keeps (its runs, HTTP attempts, each item's answer and audit
/// mark, each batch's state), so that `refleet run` works on the ledger
/// as on a journal ([`PgJournal`]).
pub const SCHEMA_VERSION: i64 = 2;

/// The advisory lock that serialises schema changes ("refleet" in ASCII).
const SCHEMA_LOCK: i64 = 0x0072_6566_6c65_6574;

/// Items per `INSERT` of the plan: large enough that a million items are a
/// few hundred statements, small enough to keep each message modest.
const PLAN_CHUNK: usize = 5_000;

/// The first schema, as it was: a ledger of version 1 is brought to 2 by
/// [`SCHEMA_V2`]'s step (public for the test of that step).
pub const SCHEMA_V1: &str = "
CREATE TABLE items (
    seq BIGSERIAL NOT NULL,
    event_key TEXT PRIMARY KEY,
    item_type TEXT NOT NULL CHECK (item_type IN ('device', 'license')),
    serial_number TEXT, mac_address TEXT, model TEXT, license_id TEXT, bound_serial TEXT,
    contract_id TEXT NOT NULL, region TEXT NOT NULL, country TEXT NOT NULL,
    deactivated_at TEXT NOT NULL,
    coverage TEXT NOT NULL CHECK (coverage IN ('standard', 'extended')),
    state TEXT NOT NULL CHECK (state IN ('planned', 'submitted', 'accepted', 'provisioning',
        'active', 'rejected', 'failed', 'escalated', 'manual_review')),
    reason TEXT,
    batch_id BIGINT, batch_pos INTEGER,
    request_id TEXT, confirmation_id TEXT, case_id TEXT
);
CREATE INDEX items_planned ON items (contract_id, region, seq) WHERE state = 'planned';
CREATE INDEX items_next ON items (seq) WHERE state = 'planned';
CREATE INDEX items_batch ON items (batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE quotes (
    contract_id TEXT NOT NULL, region TEXT NOT NULL, quote_id TEXT NOT NULL,
    PRIMARY KEY (contract_id, region)
);
CREATE TABLE batches (
    id BIGSERIAL PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    contract_id TEXT NOT NULL, region TEXT NOT NULL, quote_id TEXT NOT NULL,
    coverage TEXT NOT NULL,
    open BOOLEAN NOT NULL DEFAULT TRUE,
    runner TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL,
    takeovers INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX batches_open ON batches (lease_until) WHERE open;
-- GCRA's theoretical arrival time, in seconds since the epoch on the server's clock.
CREATE TABLE quota (account TEXT PRIMARY KEY, tat DOUBLE PRECISION NOT NULL);
CREATE TABLE audit_head (one BOOLEAN PRIMARY KEY CHECK (one), seq BIGINT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE audit (seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, line TEXT NOT NULL);
";

/// From version 1 to 2: the journal's columns (see `submit::journal`'s
/// schema), item states as the journal names them, batch states, runs, the
/// items of each run's input, HTTP attempts.
const SCHEMA_V2: &str = "
ALTER TABLE items
    ADD COLUMN eta TEXT,
    -- verified features: 1 meetings, 2 conferencing, 4 uc (NULL: none reported)
    ADD COLUMN features INTEGER CHECK (features BETWEEN 0 AND 7),
    ADD COLUMN activated_at TEXT,
    ADD COLUMN audited BOOLEAN NOT NULL DEFAULT FALSE,
    -- 'vendor': a lookup found it at the vendor; NULL: bought through this ledger
    ADD COLUMN source TEXT CHECK (source = 'vendor');
CREATE INDEX items_unaudited ON items (batch_id, seq)
    WHERE NOT audited AND state IN ('active', 'escalated');
CREATE INDEX items_cases ON items (seq) WHERE state IN ('failed', 'manual_review') AND case_id IS NULL;
ALTER TABLE batches
    ADD COLUMN state TEXT NOT NULL DEFAULT 'submitted'
        CHECK (state IN ('submitted', 'accepted', 'refused', 'lost')),
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN last_error TEXT,
    ADD COLUMN audited BOOLEAN NOT NULL DEFAULT FALSE,
    -- the run that formed it: the one that paid for its items
    ADD COLUMN run_id BIGINT,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp();
UPDATE batches SET state = 'accepted' WHERE NOT open;
CREATE INDEX batches_tracked ON batches (id) WHERE state = 'accepted' AND open;
CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,
    runner TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    finished_at TIMESTAMPTZ,
    input TEXT NOT NULL,
    as_of TEXT NOT NULL,
    outcome TEXT,
    summary_json TEXT,
    quotes_json TEXT
);
-- the items of each run's input: runners with overlapping exports each
-- report on their own
CREATE TABLE run_items (run_id BIGINT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (run_id, seq));
CREATE UNIQUE INDEX items_seq ON items (seq);
CREATE TABLE attempts (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    millis BIGINT NOT NULL
);
CREATE INDEX attempts_target ON attempts (target, kind);
";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger URL is not one PostgreSQL understands")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot reach the PostgreSQL ledger {0}")]
    Connect(String, #[source] tokio_postgres::Error),
    #[error("PostgreSQL ledger {0}")]
    Db(String, #[source] tokio_postgres::Error),
    #[error("the ledger {ledger} has schema version {found}, newer than this refleet knows ({known}): use a newer refleet")]
    Newer {
        ledger: String,
        found: i64,
        known: i64,
    },
    #[error("{name}={value:?} is not a valid setting for the ledger's connection")]
    Setting { name: String, value: String },
    #[error("a vendor quota of {rate} requests/s with bursts of {burst} cannot grant {n} at once")]
    Quota { rate: f64, burst: u32, n: u32 },
    #[error(
        "batch {0} is no longer this runner's (its lease ran out and another runner took it over)"
    )]
    Lost(i64),
    #[error("batch {batch} holds {held} items, not the {given} states given")]
    Mismatch { batch: i64, held: u64, given: usize },
    #[error("the PostgreSQL ledger {ledger} did not come back within {:.1} s", waited.as_secs_f64())]
    Unreachable { ledger: String, waited: Duration },
    #[error("{0} holds no refleet ledger")]
    NotALedger(String),
    #[error("TLS to the ledger: {0}")]
    Tls(String),
    #[error("the ledger's connection thread: {0}")]
    Worker(String),
    #[error("the ledger {ledger} is damaged: {why}")]
    Damaged { ledger: String, why: String },
}

/// One runner's connection to the ledger.
pub struct PgLedger {
    settings: Settings,
    client: Client,
    /// `host:port/database`, for messages: never the password.
    label: String,
    /// This runner's name in claims and leases.
    runner: String,
}

/// A batch this runner holds: to send (or send again) under its key.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub batch: Batch,
    /// Taken over from a runner whose lease ran out: it may have been sent
    /// already, and is sent again under the same key.
    pub taken_over: bool,
}

impl PgLedger {
    /// Connects as `runner` (a name unique among the ledger's runners) and
    /// creates or checks the schema.
    pub async fn connect(url: &str, runner: &str) -> Result<PgLedger, LedgerError> {
        PgLedger::open_as(url, runner, true).await
    }

    /// Connects to a ledger that exists, to read it: a database without
    /// refleet's schema is refused ([`LedgerError::NotALedger`]), never
    /// given one.
    pub async fn open_existing(url: &str) -> Result<PgLedger, LedgerError> {
        PgLedger::open_as(url, "", false).await
    }

    /// Connects as `runner`, then creates the schema (`create`) or only
    /// checks it.
    async fn open_as(url: &str, runner: &str, create: bool) -> Result<PgLedger, LedgerError> {
        let settings = settings_of(url, |name| std::env::var(name).ok())?;
        let label = label(&settings.postgres);
        let client = open(&settings, &label).await?;
        let mut ledger = PgLedger {
            settings,
            client,
            label,
            runner: runner.to_string(),
        };
        ledger.migrate(create).await?;
        Ok(ledger)
    }

    /// After an operation failed because the connection was lost (see
    /// [`LedgerError::is_connection_lost`]; a server restart, a failover):
    /// connects again, trying for at most `wait` (each attempt is cut at
    /// what is left of it, so a host that drops packets does not hold a
    /// runner for the kernel's time-out). Returns whether it had to. Every
    /// change is one transaction, committed or not. A claim whose commit
    /// had an unknown outcome is safe to repeat: a batch claimed then is
    /// this runner's until its lease runs out, and is then taken over and
    /// sent under its key. An audit append with an unknown outcome is not:
    /// the caller looks at the chain before appending again.
    pub async fn reconnect(&mut self, wait: Duration) -> Result<bool, LedgerError> {
        if !self.client.is_closed() {
            return Ok(false);
        }
        self.reopen(wait).await.map(|()| true)
    }

    /// Opens a new connection, trying for at most `wait` (see
    /// [`PgLedger::reconnect`]), whether or not the old one looks closed
    /// yet: after the server said it is shutting down, the connection may
    /// not have noticed.
    pub async fn reopen(&mut self, wait: Duration) -> Result<(), LedgerError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let left = wait.saturating_sub(started.elapsed());
            let attempt = tokio::time::timeout(left, open(&self.settings, &self.label)).await;
            match attempt {
                Ok(Ok(client)) => {
                    self.client = client;
                    tracing::info!(ledger = %self.label, "connected to the ledger again");
                    return Ok(());
                }
                _ if started.elapsed() >= wait => {
                    tracing::warn!(ledger = %self.label, "the ledger is still unreachable");
                    return Err(LedgerError::Unreachable {
                        ledger: self.label.clone(),
                        waited: started.elapsed(),
                    });
                }
                _ => {
                    let left = wait.saturating_sub(started.elapsed());
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn db(&self) -> impl Fn(tokio_postgres::Error) -> LedgerError + '_ {
        |e| LedgerError::Db(self.label.clone(), e)
    }

    /// Creates the schema on an empty database (when `create`); checks its
    /// version otherwise. Under an advisory lock, so runners starting
    /// together neither race nor fail.
    async fn migrate(&mut self, create: bool) -> Result<(), LedgerError> {
        let label = self.label.clone();
        let db = |e| LedgerError::Db(label.clone(), e);
        let tx = self.client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(db)?;
        if !create {
            let known = tx
                .query_one("SELECT to_regclass('refleet_meta') IS NOT NULL", &[])
                .await
                .map_err(db)?;
            if !known.get::<_, bool>(0) {
                return Err(LedgerError::NotALedger(self.label.clone()));
            }
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS refleet_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .await
        .map_err(db)?;
        let found = tx
            .query_opt(
                "SELECT value FROM refleet_meta WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(db)?
            .map(|r| r.get::<_, String>(0));
        match found {
            None if !create => return Err(LedgerError::NotALedger(self.label.clone())),
            None => {
                tx.batch_execute(SCHEMA_V1).await.map_err(db)?;
                tx.batch_execute(SCHEMA_V2).await.map_err(db)?;
                let id = format!("{:016x}", fastrand::u64(..));
                tx.execute(
                    "INSERT INTO refleet_meta VALUES ('schema_version', $1), ('ledger_id', $2)",
                    &[&SCHEMA_VERSION.to_string(), &id],
                )
                .await
                .map_err(db)?;
                // The chain opens with a header naming the ledger, as a
                // journal's log names its journal.
                let mut header = Map::new();
                header.insert("kind".into(), audit::HEADER_KIND.into());
                header.insert("journal_id".into(), id.into());
                let (line, hash) = audit::seal(header, 1, audit::GENESIS);
                tx.execute("INSERT INTO audit VALUES (1, $1, $2)", &[&hash, &line])
                    .await
                    .map_err(db)?;
                tx.execute("INSERT INTO audit_head VALUES (TRUE, 1, $1)", &[&hash])
                    .await
                    .map_err(db)?;
            }
            Some(v) => match v.parse::<i64>() {
                Ok(SCHEMA_VERSION) => {}
                Ok(1) if create => {
                    tx.batch_execute(SCHEMA_V2).await.map_err(db)?;
                    tx.execute(
                        "UPDATE refleet_meta SET value = $1 WHERE key = 'schema_version'",
                        &[&SCHEMA_VERSION.to_string()],
                    )
                    .await
                    .map_err(db)?;
                }
                // Read only (`refleet audit`): the audit tables are the
                // same in both versions.
                Ok(1) => {}
                Ok(found) if found > SCHEMA_VERSION => {
                    return Err(LedgerError::Newer {
                        ledger: self.label.clone(),
                        found,
                        known: SCHEMA_VERSION,
                    })
                }
                _ => {
                    return Err(LedgerError::Damaged {
                        ledger: self.label.clone(),
                        why: format!("its schema version is {v:?}"),
                    })
                }
            },
        }
        tx.commit().await.map_err(db)
    }

    /// `host:port/database`: how messages name the ledger (never with
    /// its password).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The ledger's id (the audit chain's header names it).
    pub async fn ledger_id(&self) -> Result<String, LedgerError> {
        let row = self
            .client
            .query_one(
                "SELECT value FROM refleet_meta WHERE key = 'ledger_id'",
                &[],
            )
            .await
            .map_err(self.db())?;
        Ok(row.get(0))
    }

    /// Adds the plan's items in `state` (planned, or manual_review); an
    /// item the ledger knows already (another runner's, an earlier run's)
    /// is left as it is. Returns how many were new. Each chunk goes in in
    /// event-key order, so two runners planning overlapping exports take
    /// their row locks in the same order and never deadlock.
    pub async fn plan_items(
        &self,
        items: &[PlannedItem],
        state: ItemState,
    ) -> Result<u64, LedgerError> {
        let mut added = 0;
        for chunk in items.chunks(PLAN_CHUNK) {
            let col = |f: fn(&PlannedItem) -> &str| -> Vec<&str> { chunk.iter().map(f).collect() };
            let opt = |f: fn(&PlannedItem) -> &Option<String>| -> Vec<Option<&str>> {
                chunk.iter().map(|i| f(i).as_deref()).collect()
            };
            added += self
                .client
                .execute(
                    "INSERT INTO items (event_key, item_type, serial_number, mac_address, model,
                         license_id, bound_serial, contract_id, region, country, deactivated_at,
                         coverage, state)
                     SELECT k, t, s, m, mo, l, b, c, r, co, d, cv, $13
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                                 $11::text[], $12::text[])
                          WITH ORDINALITY AS u(k, t, s, m, mo, l, b, c, r, co, d, cv, n)
                     ORDER BY k
                     ON CONFLICT (event_key) DO NOTHING",
                    &[
                        &col(|i| &i.event_key),
                        &col(|i| item_type_str(i.item_type)),
                        &opt(|i| &i.serial_number),
                        &opt(|i| &i.mac_address),
                        &opt(|i| &i.model),
                        &opt(|i| &i.license_id),
                        &opt(|i| &i.bound_serial),
                        &col(|i| &i.contract_id),
                        &col(|i| &i.region),
                        &col(|i| &i.country),
                        &col(|i| &i.deactivated_at),
                        &col(|i| coverage_str(i.coverage)),
                        &state.as_str(),
                    ],
                )
                .await
                .map_err(self.db())?;
        }
        Ok(added)
    }

    /// Records the quote an item group is bought under.
    pub async fn set_quote(
        &self,
        contract_id: &str,
        region: &str,
        quote_id: &str,
    ) -> Result<(), LedgerError> {
        self.client
            .execute(
                "INSERT INTO quotes VALUES ($1, $2, $3)
                 ON CONFLICT (contract_id, region) DO UPDATE SET quote_id = EXCLUDED.quote_id",
                &[&contract_id, &region, &quote_id],
            )
            .await
            .map_err(self.db())?;
        Ok(())
    }

    /// The next batch for this runner to send, held under a lease of
    /// `lease`: first a batch whose runner's lease ran out (the same items
    /// and key, to send again), else a new one of up to `max` planned items
    /// of one contract and region, which no other runner can take (rows
    /// another runner is claiming are skipped, not waited for). The batch
    /// is committed before this returns, so before its request can leave.
    /// `None`: nothing left to claim.
    pub async fn claim_batch(
        &mut self,
        max: usize,
        lease: Duration,
    ) -> Result<Option<Claimed>, LedgerError> {
        let lease_s = lease.as_secs_f64();
        let label = self.label.clone();
        let db = |e| LedgerError::Db(label.clone(), e);
        let tx = self.client.transaction().await.map_err(db)?;
        let expired = tx
            .query_opt(
                "UPDATE batches SET runner = $1, lease_until = clock_timestamp() + make_interval(secs => $2),
                     takeovers = takeovers + 1
                 WHERE id = (SELECT id FROM batches
                             WHERE open AND lease_until < clock_timestamp()
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, idempotency_key, contract_id, region, quote_id, coverage",
                &[&self.runner, &lease_s],
            )
            .await
            .map_err(db)?;
        if let Some(row) = expired {
            let id: i64 = row.get(0);
            let items = tx
                .query(
                    &format!(
                        "SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = $1 ORDER BY batch_pos"
                    ),
                    &[&id],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| planned_of(r, &self.label))
                .collect::<Result<Vec<_>, _>>()?;
            let group = BatchGroup {
                contract_id: row.get(2),
                region: row.get(3),
                quote_id: row.get(4),
                coverage: coverage_of(row.get(5), &self.label)?,
            };
            let batch = Batch::of(id, row.get(1), group, &items);
            tx.commit().await.map_err(db)?;
            return Ok(Some(Claimed {
                batch,
                taken_over: true,
            }));
        }
        let formed = form_batch(&tx, &self.label, &self.runner, lease_s, max, None, 0).await?;
        tx.commit().await.map_err(db)?;
        Ok(formed.map(|(batch, _)| Claimed {
            batch,
            taken_over: false,
        }))
    }

    /// Extends the lease of every open batch this runner holds whose lease
    /// has not run out; returns how many it still holds. A lease that ran
    /// out is never revived, even before another runner took its batch: the
    /// batch may be on its way to another runner already. (Runner names are
    /// unique per process, so a restarted runner does not renew the leases
    /// of the one that died.)
    pub async fn renew_leases(&self, lease: Duration) -> Result<u64, LedgerError> {
        self.client
            .execute(
                "UPDATE batches SET lease_until = clock_timestamp() + make_interval(secs => $2)
                 WHERE open AND runner = $1 AND lease_until >= clock_timestamp()",
                &[&self.runner, &lease.as_secs_f64()],
            )
            .await
            .map_err(self.db())
    }

    /// Closes a batch this runner holds, its items all in a final state:
    /// `states`, one per item, by position in the batch. Its lease ends
    /// with it. A batch another runner took over (this runner's lease ran
    /// out) is refused ([`LedgerError::Lost`]) and left as it is; so are
    /// states that are not one per item ([`LedgerError::Mismatch`]).
    pub async fn close_batch(
        &mut self,
        batch_id: i64,
        states: &[ItemState],
    ) -> Result<(), LedgerError> {
        let label = self.label.clone();
        let db = |e| LedgerError::Db(label.clone(), e);
        let tx = self.client.transaction().await.map_err(db)?;
        let held = tx
            .query_opt(
                "UPDATE batches SET open = FALSE
                 WHERE id = $1 AND runner = $2 AND open
                 RETURNING (SELECT COUNT(*) FROM items WHERE batch_id = $1)",
                &[&batch_id, &self.runner],
            )
            .await
            .map_err(db)?;
        let Some(held) = held else {
            return Err(LedgerError::Lost(batch_id));
        };
        let held = u64::try_from(held.get::<_, i64>(0)).unwrap_or(0);
        if held != states.len() as u64 {
            return Err(LedgerError::Mismatch {
                batch: batch_id,
                held,
                given: states.len(),
            });
        }
        let texts: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        tx.execute(
            "UPDATE items SET state = u.s
             FROM UNNEST($2::text[]) WITH ORDINALITY AS u(s, n)
             WHERE items.batch_id = $1 AND items.batch_pos = u.n - 1",
            &[&batch_id, &texts],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Item counts by state; a state this refleet does not know is an error.
    pub async fn counts(&self) -> Result<Vec<(ItemState, u64)>, LedgerError> {
        let rows = self
            .client
            .query(
                "SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state",
                &[],
            )
            .await
            .map_err(self.db())?;
        rows.iter()
            .map(|r| {
                let state: &str = r.get(0);
                let n: i64 = r.get(1);
                let state = ItemState::parse(state).ok_or_else(|| LedgerError::Damaged {
                    ledger: self.label.clone(),
                    why: format!("an item is in the unknown state {state:?}"),
                })?;
                Ok((state, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}

/// Forms a batch in the caller's transaction on `db`: up to `max` planned
/// items of the contract and region of the first planned item no other
/// runner is claiming (rows another runner holds are skipped, not waited
/// for), recorded `submitted` under its key, held by `runner` for
/// `lease_s` seconds. With a run `run_id`, only items of that run's input
/// are taken: those it looked up at the vendor and priced under its budget
/// (another runner's items may still wait for their lookups). Items before
/// `from` (a `seq`) are not looked at: the caller knows none of them was
/// planned, and a queue's index keeps the entries of items long claimed
/// until it is vacuumed, so that scanning them each time would cost more
/// with every batch. Returns the batch and the `seq` of its first item;
/// `None`: nothing left to claim from `from` on.
async fn form_batch(
    db: &impl tokio_postgres::GenericClient,
    label: &str,
    runner: &str,
    lease_s: f64,
    max: usize,
    run_id: Option<i64>,
    from: i64,
) -> Result<Option<(Batch, i64)>, LedgerError> {
    let db_err = |e| LedgerError::Db(label.to_string(), e);
    // A run's first planned item is found through its input, walked in
    // order from `from`; without a run, through the planned items.
    let first = match &run_id {
        Some(run) => {
            db.query_opt(
                "SELECT i.contract_id, i.region, i.seq FROM run_items r
                 JOIN items i ON i.seq = r.seq
                 WHERE r.run_id = $1 AND r.seq >= $2 AND i.seq >= $2 AND i.state = 'planned'
                 ORDER BY r.seq LIMIT 1 FOR UPDATE OF i SKIP LOCKED",
                &[run, &from],
            )
            .await
        }
        None => {
            db.query_opt(
                "SELECT contract_id, region, seq FROM items WHERE state = 'planned' AND seq >= $1
                 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&from],
            )
            .await
        }
    }
    .map_err(db_err)?;
    let Some(first) = first else {
        return Ok(None);
    };
    let (contract_id, region, first_seq): (String, String, i64) =
        (first.get(0), first.get(1), first.get(2));
    let max = i64::try_from(max.clamp(1, api::MAX_BATCH)).unwrap_or(1);
    // Its group from it on (an item of the group before it was not planned,
    // or was another runner's a moment ago), of the run's input if any.
    let group = format!(
        "SELECT {ITEM_COLUMNS} FROM items
         WHERE state = 'planned' AND contract_id = $1 AND region = $2 AND seq >= $4 {}
         ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED",
        match run_id {
            // One index probe per candidate (not `IN`, nor an `OR` with
            // the run's absence: the server then scans the run's items).
            Some(_) =>
                "AND EXISTS (SELECT 1 FROM run_items r
                                     WHERE r.run_id = $5 AND r.seq = items.seq)",
            None => "",
        }
    );
    let items = match &run_id {
        Some(run) => {
            db.query(&group, &[&contract_id, &region, &max, &first_seq, run])
                .await
        }
        None => {
            db.query(&group, &[&contract_id, &region, &max, &first_seq])
                .await
        }
    }
    .map_err(db_err)?
    .iter()
    .map(|r| planned_of(r, label))
    .collect::<Result<Vec<_>, _>>()?;
    let Some(head) = items.first() else {
        // The first item was in our lock, so it is here; should the group
        // be empty all the same, there is nothing to claim now.
        return Ok(None);
    };
    let coverage = head.coverage;
    let quote_id: String = db
        .query_opt(
            "SELECT quote_id FROM quotes WHERE contract_id = $1 AND region = $2",
            &[&contract_id, &region],
        )
        .await
        .map_err(db_err)?
        .map_or_else(String::new, |r| r.get(0));
    let key = api::batch_key(items.iter().map(|i| i.event_key.as_str()));
    let id: i64 = db
        .query_one(
            "INSERT INTO batches (idempotency_key, contract_id, region, quote_id, coverage,
                 runner, lease_until, run_id, state)
             VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp() + make_interval(secs => $7),
                     $8, 'submitted')
             RETURNING id",
            &[
                &key,
                &contract_id,
                &region,
                &quote_id,
                &coverage_str(coverage),
                &runner,
                &lease_s,
                &run_id,
            ],
        )
        .await
        .map_err(db_err)?
        .get(0);
    let keys: Vec<&str> = items.iter().map(|i| i.event_key.as_str()).collect();
    db.execute(
        "UPDATE items SET state = 'submitted', batch_id = $1, batch_pos = u.n - 1
         FROM UNNEST($2::text[]) WITH ORDINALITY AS u(k, n)
         WHERE items.event_key = u.k",
        &[&id, &keys],
    )
    .await
    .map_err(db_err)?;
    let group = BatchGroup {
        contract_id,
        region,
        quote_id,
        coverage,
    };
    Ok(Some((Batch::of(id, key, group, &items), first_seq)))
}

impl LedgerError {
    /// The connection went away (the server restarted, failed over, or the
    /// network dropped): [`PgLedger::reconnect`] may bring it back.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            LedgerError::Db(_, e) | LedgerError::Connect(_, e) => {
                e.is_closed()
                    || e.as_db_error().is_some_and(|d| {
                        // admin_shutdown, crash_shutdown, cannot_connect_now
                        matches!(d.code().code(), "57P01" | "57P02" | "57P03")
                    })
                    || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
            }
            _ => false,
        }
    }
}

const ITEM_COLUMNS: &str = "event_key, item_type, serial_number, mac_address, model, license_id,
    bound_serial, contract_id, region, country, deactivated_at, coverage";

/// An item row as [`ITEM_COLUMNS`] reads it; an unknown type or coverage
/// is refused, never guessed.
fn planned_of(r: &tokio_postgres::Row, ledger: &str) -> Result<PlannedItem, LedgerError> {
    let item_type = match r.get::<_, &str>(1) {
        "device" => ItemType::Device,
        "license" => ItemType::License,
        other => {
            return Err(LedgerError::Damaged {
                ledger: ledger.into(),
                why: format!("an item has the unknown type {other:?}"),
            })
        }
    };
    Ok(PlannedItem {
        event_key: r.get(0),
        item_type,
        serial_number: r.get(2),
        mac_address: r.get(3),
        model: r.get(4),
        license_id: r.get(5),
        bound_serial: r.get(6),
        contract_id: r.get(7),
        region: r.get(8),
        country: r.get(9),
        deactivated_at: r.get(10),
        coverage: coverage_of(r.get(11), ledger)?,
    })
}

fn coverage_of(text: &str, ledger: &str) -> Result<CoverageWire, LedgerError> {
    match text {
        "standard" => Ok(CoverageWire::Standard),
        "extended" => Ok(CoverageWire::Extended),
        other => Err(LedgerError::Damaged {
            ledger: ledger.into(),
            why: format!("a coverage is the unknown {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests;
