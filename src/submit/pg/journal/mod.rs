//! The journal's operations on the shared PostgreSQL ledger: what `refleet
//! run` does on a SQLite journal, done by several runners on one ledger.
//!
//! What differs from the SQLite journal, and why:
//! - **Claims and leases.** A batch is formed by exactly one runner (its
//!   items taken `FOR UPDATE SKIP LOCKED`) and held under a lease that
//!   runner renews every round ([`BatchLedger::keep_alive`]). A runner that
//!   dies stops renewing; once its lease has run out another runner takes
//!   the batch over ([`BatchLedger::take_over`]): sends it again under the
//!   same key when its outcome is unknown, or follows it when it was
//!   accepted. A run ends only when every item of its own input is done,
//!   whoever holds it ([`BatchLedger::held_elsewhere`]).
//! - **Each run's input.** `run_items` lists the items of each run's input,
//!   so runners with overlapping exports each count, report and look up
//!   their own (the SQLite journal keeps only the last run per item).
//! - **Commits.** Every operation commits on its own: the server groups
//!   commits, and an operation that fails because the connection was lost
//!   is repeated once the ledger is back (within the reconnect wait), which
//!   is only safe one commit at a time. `atomically` therefore groups
//!   nothing here; nothing relies on it for correctness, only the SQLite
//!   journal's syncs for speed.
//! - **The audit chain** is the ledger's (see `chain.rs`): appended and
//!   marked in one transaction holding the chain's head.
//!
//! The ledger's traits are synchronous and are called from inside the
//! run's runtime, so the connection lives on a thread of its own with a
//! current-thread runtime, and each operation is a job sent to it.

mod audit;
mod batches;
mod history;
mod items;

use std::cell::Cell;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{LedgerError, PgLedger, PLAN_CHUNK};
use crate::submit::journal::{
    coverage_str, item_type_str, ItemState, JournalError, PlanLedger, PlannedItem, RunLedger,
};

/// One runner's journal on a shared ledger.
pub struct PgJournal {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// `host:port/database`, never the password.
    label: String,
    /// This runner's name in claims and leases: host, process, random.
    runner: String,
    /// How long a claim lasts without renewal.
    lease: Duration,
    /// This runner's run, once begun (0 before).
    run: Cell<i64>,
    renewed: Cell<Option<Instant>>,
    /// Items were planned since the server last counted its tables: a plan
    /// of many items leaves its statistics far behind, and the server then
    /// plans the queries that follow as if the tables were nearly empty.
    stale_statistics: Cell<bool>,
    /// Where this runner's last batch began: the next one is looked for
    /// from there (see `form_batch`).
    claim_from: Cell<i64>,
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// The connection, on the ledger's thread.
pub(super) struct Conn {
    rt: tokio::runtime::Runtime,
    ledger: PgLedger,
    /// How long a lost connection is waited for before an operation fails.
    reconnect_wait: Duration,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    fn db(&self, e: tokio_postgres::Error) -> JournalError {
        LedgerError::Db(self.ledger.label.clone(), e).into()
    }

    pub(super) fn query(&mut self, sql: &str, params: Params) -> Result<Vec<Row>, JournalError> {
        self.rt
            .block_on(self.ledger.client.query(sql, params))
            .map_err(|e| self.db(e))
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        params: Params,
    ) -> Result<Option<Row>, JournalError> {
        self.rt
            .block_on(self.ledger.client.query_opt(sql, params))
            .map_err(|e| self.db(e))
    }

    pub(super) fn query_one(&mut self, sql: &str, params: Params) -> Result<Row, JournalError> {
        self.rt
            .block_on(self.ledger.client.query_one(sql, params))
            .map_err(|e| self.db(e))
    }

    pub(super) fn execute(&mut self, sql: &str, params: Params) -> Result<u64, JournalError> {
        self.rt
            .block_on(self.ledger.client.execute(sql, params))
            .map_err(|e| self.db(e))
    }

    fn batch(&mut self, sql: &str) -> Result<(), JournalError> {
        self.rt
            .block_on(self.ledger.client.batch_execute(sql))
            .map_err(|e| self.db(e))
    }

    /// Runs `f` in a transaction of its own.
    pub(super) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        self.batch("BEGIN")?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The ledger went away: waits for it, at most `left`.
    fn reconnect(&mut self, left: Duration) -> Result<(), JournalError> {
        tracing::warn!(ledger = %self.ledger.label, "lost the ledger; waiting for it to come back");
        Ok(self.rt.block_on(self.ledger.reopen(left))?)
    }
}

/// How often an operation the server rolled back to break a deadlock is
/// repeated before its error is the run's.
const DEADLOCK_RETRIES: u32 = 5;

/// Whether the server rolled the operation back: a deadlock, or a
/// serialization failure (SQLSTATE 40P01, 40001).
fn deadlocked(e: &JournalError) -> bool {
    let JournalError::Shared(inner) = e else {
        return false;
    };
    match inner.downcast_ref::<LedgerError>() {
        Some(LedgerError::Db(_, e)) => e
            .as_db_error()
            .is_some_and(|d| matches!(d.code().code(), "40P01" | "40001")),
        _ => false,
    }
}

/// Whether `e` says the connection to the ledger was lost.
fn connection_lost(e: &JournalError) -> bool {
    match e {
        JournalError::Shared(inner) => inner
            .downcast_ref::<LedgerError>()
            .is_some_and(LedgerError::is_connection_lost),
        _ => false,
    }
}

impl From<LedgerError> for JournalError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Unreachable { .. } => JournalError::Gone(e.to_string()),
            e => JournalError::Shared(Box::new(e)),
        }
    }
}

impl PgJournal {
    /// Connects to the ledger at `url` (creating or migrating its schema),
    /// as a new runner whose claims last `lease` unless renewed. A lost
    /// connection is waited for at most `reconnect_wait` per operation.
    pub fn open(
        url: &str,
        lease: Duration,
        reconnect_wait: Duration,
    ) -> Result<PgJournal, LedgerError> {
        PgJournal::start(url, lease, reconnect_wait, true)
    }

    /// Connects to a ledger that exists, to read it (`refleet status`,
    /// `refleet report`): a database without one is refused, never given
    /// one ([`LedgerError::NotALedger`]).
    pub fn open_existing(url: &str) -> Result<PgJournal, LedgerError> {
        PgJournal::start(url, Duration::from_secs(30), Duration::ZERO, false)
    }

    fn start(
        url: &str,
        lease: Duration,
        reconnect_wait: Duration,
        create: bool,
    ) -> Result<PgJournal, LedgerError> {
        let runner = runner_name();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = mpsc::sync_channel(1);
        let (url, name) = (url.to_string(), runner.clone());
        let worker = std::thread::Builder::new()
            .name("refleet-ledger".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(LedgerError::Worker(e.to_string())));
                        return;
                    }
                };
                let opened = match create {
                    true => rt.block_on(PgLedger::connect(&url, &name)),
                    false => rt.block_on(PgLedger::open_existing(&url)),
                };
                let ledger = match opened {
                    Ok(ledger) => ledger,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(ledger.label.clone()));
                let mut conn = Conn {
                    rt,
                    ledger,
                    reconnect_wait,
                };
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| LedgerError::Worker(e.to_string()))?;
        let label = opened
            .recv()
            .map_err(|_| LedgerError::Worker("the ledger's thread ended".into()))??;
        Ok(PgJournal {
            jobs: Some(jobs),
            worker: Some(worker),
            label,
            runner,
            lease,
            run: Cell::new(0),
            renewed: Cell::new(None),
            stale_statistics: Cell::new(false),
            claim_from: Cell::new(0),
        })
    }

    /// `host:port/database`: how messages name the ledger.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `f` on the ledger's thread and waits for its result. An
    /// operation that failed because the connection was lost is repeated
    /// once the ledger is back, and one the server rolled back to break a
    /// deadlock at once. Each operation is one commit or none, so a repeat
    /// changes nothing twice, with one exception: a commit that went
    /// through but whose answer the lost connection took. Then an attempt
    /// may be recorded twice (a loss counted twice at worst, toward
    /// `MAX_LOSSES`), a run row left unused, or a second batch formed; the
    /// first stays this runner's, and is taken back when the run has
    /// nothing else in hand (`BatchLedger::take_over`).
    fn call<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Conn) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let gone = || JournalError::from(LedgerError::Worker("the ledger's thread ended".into()));
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn: &mut Conn| {
            // However often it goes away, one operation waits for the
            // ledger for at most the reconnect wait in all.
            let started = Instant::now();
            let mut deadlocks = 0;
            let mut result = f(conn);
            loop {
                match &result {
                    Err(e) if connection_lost(e) => {
                        let left = conn.reconnect_wait.saturating_sub(started.elapsed());
                        result = match conn.reconnect(left) {
                            Ok(()) => f(conn),
                            Err(gone) => Err(gone),
                        };
                    }
                    Err(e) if deadlocked(e) && deadlocks < DEADLOCK_RETRIES => {
                        deadlocks += 1;
                        result = f(conn);
                    }
                    _ => break,
                }
            }
            let _ = answer.send(result);
        });
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        answered.recv().map_err(|_| gone())?
    }

    /// [`PgJournal::call`] with `f` in a transaction of its own.
    fn in_transaction<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Conn) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        self.call(move |c| c.transaction(&f))
    }

    /// Has the server count the items again when a plan added many since
    /// (see [`PgJournal::stale_statistics`]); called before the queries
    /// that follow a plan.
    fn fresh_statistics(&self) -> Result<(), JournalError> {
        if self.stale_statistics.replace(false) {
            self.call(|c| c.batch("ANALYZE items, run_items"))?;
        }
        Ok(())
    }

    /// The run begun on this journal.
    fn run_id(&self) -> i64 {
        self.run.get()
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }
}

impl Drop for PgJournal {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which closes the connection.
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// A name no other runner has: the host, this process, and a random part
/// (a restarted runner is a new runner and never renews a dead one's leases).
fn runner_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!("{host}/{}/{:04x}", std::process::id(), fastrand::u16(..))
}

impl RunLedger for PgJournal {
    fn begin_run(&self, input: &str, as_of: NaiveDate) -> Result<i64, JournalError> {
        let (runner, input, as_of) = (self.runner.clone(), input.to_string(), as_of.to_string());
        let id: i64 = self
            .call(move |c| {
                c.query_one(
                    "INSERT INTO runs (runner, input, as_of) VALUES ($1, $2, $3) RETURNING id",
                    &[&runner, &input, &as_of],
                )
            })?
            .get(0);
        self.run.set(id);
        Ok(id)
    }

    fn finish_run(
        &self,
        run_id: i64,
        outcome: &str,
        summary_json: &str,
        quotes_json: &str,
    ) -> Result<(), JournalError> {
        let (outcome, summary, quotes) = (
            outcome.to_string(),
            summary_json.to_string(),
            quotes_json.to_string(),
        );
        self.call(move |c| {
            c.execute(
                "UPDATE runs SET finished_at = clock_timestamp(), outcome = $2,
                     summary_json = $3, quotes_json = $4
                 WHERE id = $1",
                &[&run_id, &outcome, &summary, &quotes],
            )
        })?;
        Ok(())
    }

    /// Nothing is grouped: see the module's docs.
    fn atomically<T, E: From<JournalError>>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        f()
    }
}

impl PlanLedger for PgJournal {
    /// Each chunk in a transaction of its own, its items in event-key
    /// order: runners planning overlapping exports take their row locks in
    /// the same order and hold them briefly, so they never deadlock nor
    /// wait on each other's whole plan.
    fn plan_items(
        &self,
        items: &[PlannedItem],
        state: ItemState,
        run_id: i64,
    ) -> Result<(), JournalError> {
        if items.len() >= PLAN_CHUNK {
            self.stale_statistics.set(true);
        }
        for chunk in items.chunks(PLAN_CHUNK) {
            let col = |f: fn(&PlannedItem) -> &str| -> Vec<String> {
                chunk.iter().map(|i| f(i).to_string()).collect()
            };
            let opt = |f: fn(&PlannedItem) -> &Option<String>| -> Vec<Option<String>> {
                chunk.iter().map(|i| f(i).clone()).collect()
            };
            let columns = (
                col(|i| &i.event_key),
                col(|i| item_type_str(i.item_type)),
                opt(|i| &i.serial_number),
                opt(|i| &i.mac_address),
                opt(|i| &i.model),
                opt(|i| &i.license_id),
                opt(|i| &i.bound_serial),
                col(|i| &i.contract_id),
                col(|i| &i.region),
                col(|i| &i.country),
                col(|i| &i.deactivated_at),
                col(|i| coverage_str(i.coverage)),
            );
            self.in_transaction(move |c| {
                let (k, t, s, m, mo, l, b, co, r, cy, d, cv) = &columns;
                c.execute(
                    "INSERT INTO items (event_key, item_type, serial_number, mac_address, model,
                         license_id, bound_serial, contract_id, region, country, deactivated_at,
                         coverage, state)
                     SELECT k, t, s, m, mo, l, b, c, r, co, d, cv, $13
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                                 $11::text[], $12::text[]) AS u(k, t, s, m, mo, l, b, c, r, co, d, cv)
                     ORDER BY k
                     ON CONFLICT (event_key) DO NOTHING",
                    &[k, t, s, m, mo, l, b, co, r, cy, d, cv, &state.as_str()],
                )?;
                // A second statement, so that it sees items another runner
                // committed while this one waited on them.
                c.execute(
                    "INSERT INTO run_items (run_id, seq)
                     SELECT $1, i.seq FROM items i WHERE i.event_key = ANY($2::text[])
                     ON CONFLICT DO NOTHING",
                    &[&run_id, k],
                )
            })?;
        }
        Ok(())
    }

    fn set_quote(
        &self,
        contract_id: &str,
        region: &str,
        quote_id: &str,
    ) -> Result<(), JournalError> {
        let (c_id, r_id, q_id) = (
            contract_id.to_string(),
            region.to_string(),
            quote_id.to_string(),
        );
        self.call(move |c| {
            c.execute(
                "INSERT INTO quotes VALUES ($1, $2, $3)
                 ON CONFLICT (contract_id, region) DO UPDATE SET quote_id = EXCLUDED.quote_id",
                &[&c_id, &r_id, &q_id],
            )
        })?;
        Ok(())
    }
}
