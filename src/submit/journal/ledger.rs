//! The journal's operations as typed interfaces, one per concern, so that
//! a run, its lookups, its submission and its audit log work against any
//! ledger that implements them: the SQLite journal ([`Journal`], one file,
//! one process), and next the shared PostgreSQL ledger (`submit::pg`).
//! [`Ledger`] is all of them.
//!
//! [`Journal`]: super::Journal

use chrono::{DateTime, NaiveDate, Utc};

use super::{
    AuditItem, AuditOrder, AuditedOrder, Batch, BatchItem, CaseToOpen, ItemRecord, ItemState,
    JournalError, LookupPurpose, LookupTarget, PlannedItem, RunSplit, Tracked,
};
use crate::api;

/// Every operation of a ledger.
pub trait Ledger:
    RunLedger
    + PlanLedger
    + VendorLedger
    + BatchLedger
    + StatusLedger
    + CaseLedger
    + ItemLedger
    + AuditLedger
{
}

impl<L> Ledger for L where
    L: RunLedger
        + PlanLedger
        + VendorLedger
        + BatchLedger
        + StatusLedger
        + CaseLedger
        + ItemLedger
        + AuditLedger
{
}

/// Runs and transactions.
pub trait RunLedger {
    /// Starts a run of `input` as of `as_of`; returns its id.
    fn begin_run(&self, input: &str, as_of: NaiveDate) -> Result<i64, JournalError>;

    /// Closes a run, keeping its `summary.json` and `quotes.json`.
    fn finish_run(
        &self,
        run_id: i64,
        outcome: &str,
        summary_json: &str,
        quotes_json: &str,
    ) -> Result<(), JournalError>;

    /// Runs `f` in one transaction (one sync to disk), or inside the
    /// caller's when one is open: the coordinator groups a round of
    /// answers and new batches into a single commit.
    fn atomically<T, E: From<JournalError>>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E>;
}

/// Items of a run read by event key, for `results.csv`.
pub trait ItemRecords {
    fn get(&mut self, event_key: &str) -> Result<Option<ItemRecord>, JournalError>;
}

/// The plan: items to buy or escalate, and their quotes.
pub trait PlanLedger {
    /// Records items to submit (`Planned`) or to escalate (`ManualReview`)
    /// in bulk, except those whose event key the ledger knows already:
    /// their recorded state stands (a re-run never submits one again), and
    /// they are marked as in run `run_id`'s input. Call it with large
    /// slices, inside one transaction.
    fn plan_items(
        &self,
        items: &[PlannedItem],
        state: ItemState,
        run_id: i64,
    ) -> Result<(), JournalError>;

    /// [`PlanLedger::plan_items`] for one item.
    fn plan_item(
        &self,
        item: &PlannedItem,
        state: ItemState,
        run_id: i64,
    ) -> Result<(), JournalError> {
        self.plan_items(std::slice::from_ref(item), state, run_id)
    }

    /// The quote of (contract, region) for the batches formed from now on.
    fn set_quote(
        &self,
        contract_id: &str,
        region: &str,
        quote_id: &str,
    ) -> Result<(), JournalError>;
}

/// What the vendor already holds (lookups before paying, and tracking what
/// a lookup found on its way).
pub trait VendorLedger {
    /// Up to `limit` items to look up at the vendor before paying, after
    /// journal row `after` (0 to start): planned items (never sent), and
    /// items a lookup found still on their way ([`LookupPurpose::Track`]).
    fn to_look_up(
        &self,
        purpose: LookupPurpose,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LookupTarget>, JournalError>;

    /// Records what the vendor holds for an item refleet did not send: its
    /// state (pending → `accepted`), request id, confirmation and times;
    /// `source` marks it as the vendor's, not bought by this journal. Only
    /// an item still `planned` (before paying) or one found earlier (while
    /// tracking) is changed; returns whether it was.
    fn record_vendor(
        &self,
        event_key: &str,
        record: &api::VendorRecord,
    ) -> Result<bool, JournalError>;

    /// [`VendorLedger::record_vendor`] for many items: whether each was
    /// changed, in order. One statement on a shared ledger.
    fn record_vendors(
        &self,
        records: &[(&str, &api::VendorRecord)],
    ) -> Result<Vec<bool>, JournalError> {
        records
            .iter()
            .map(|(key, record)| self.record_vendor(key, record))
            .collect()
    }

    /// The items of run `run_id`'s input that it will not buy: already
    /// sent by an earlier run, or found at the vendor. By serial number
    /// (devices) or license id (licenses), as quotes key them.
    fn not_to_buy(&self, run_id: i64) -> Result<std::collections::HashSet<String>, JournalError>;

    /// Of run `run_id`'s eligible input: items to buy, items an earlier run
    /// of this journal sent, items the vendor held.
    fn run_split(&self, run_id: i64) -> Result<RunSplit, JournalError>;

    /// An item found on its way at the vendor whose vendor record then
    /// failed, was rejected or went away: it was not reactivated, so it goes
    /// back to `planned` (no vendor fields) to be looked up and paid.
    fn release_vendor(&self, event_key: &str) -> Result<bool, JournalError>;
}

/// Batches: formed from planned items and recorded before they are sent,
/// then their answers, losses, re-sends and HTTP attempts.
pub trait BatchLedger {
    /// Batches whose outcome is unknown: written, maybe sent, no answer kept.
    fn unsent_batches(&self) -> Result<Vec<Batch>, JournalError>;

    /// Forms the next batch from planned items: the first planned item in
    /// journal order picks the (contract, region), and up to `max` items of
    /// that group follow it. The batch is committed as `submitted` before
    /// it is returned, so it is on disk before its request can leave.
    fn next_batch(&self, max: usize) -> Result<Option<Batch>, JournalError>;

    /// The server accepted the batch: its request id and each item's first
    /// word. Items are found by their place in the batch (the answer's keys
    /// were checked against the batch before).
    fn batch_accepted(
        &self,
        batch: &Batch,
        attempts: u32,
        answer: &api::ReactivationAccepted,
    ) -> Result<(), JournalError>;

    /// The server refused the batch for good (a 4xx that is not retried):
    /// its items are `failed` with the server's reason.
    fn batch_refused(&self, batch_id: i64, attempts: u32, reason: &str)
        -> Result<(), JournalError>;

    /// No answer after every retry: the batch stays `submitted` (outcome
    /// unknown) and will be re-sent with the same key.
    fn batch_unanswered(
        &self,
        batch_id: i64,
        attempts: u32,
        error: &str,
    ) -> Result<(), JournalError>;

    /// A batch run `run_id` formed and recorded `submitted` whose every
    /// attempt could not connect (`client::NOT_CONNECTED`), or that was
    /// never attempted, so that nothing of it reached the vendor: it is
    /// removed (its attempts stay) and its items go back to `planned`.
    /// Returns whether it was; any other batch (one that may have reached
    /// the vendor, or an earlier run's) is left to be re-sent under its key.
    fn batch_never_sent(&self, batch_id: i64, run_id: i64) -> Result<bool, JournalError>;

    /// The items of a batch, in batch order, to check an answer against.
    fn batch_items(&self, batch_id: i64) -> Result<Vec<BatchItem>, JournalError>;

    /// The vendor lost or confused a batch: kept in the attempts trail (kind
    /// `lost`, with why). Returns how many times this batch was lost, over
    /// every run of this journal.
    fn record_loss(&self, run_id: i64, batch_id: i64, why: &str) -> Result<u32, JournalError>;

    /// Puts a lost batch back to `submitted`, to be re-sent under its key
    /// and body; its items go back to `submitted` for the new answer to
    /// decide. Returns the batch to send.
    fn batch_resend(&self, batch_id: i64, why: &str) -> Result<Batch, JournalError>;

    /// Gives up on a lost batch: its items still on their way are `failed`
    /// with `reason` (then escalated, when cases are on).
    fn batch_lost(&self, batch_id: i64, reason: &str, why: &str) -> Result<(), JournalError>;

    /// Keeps this runner's claims alive on a ledger other runners share
    /// (their leases renewed); called every round, cheap when not due.
    /// Nothing to do on a journal only one process opens.
    fn keep_alive(&self) -> Result<(), JournalError> {
        Ok(())
    }

    /// Items of run `run_id`'s input still on their way (planned, sent,
    /// accepted or provisioning) when this runner has none of them left in
    /// hand: other runners on a shared ledger hold them. The run waits for
    /// them, and takes over ([`BatchLedger::take_over`]) the batches of a
    /// runner that died, before it ends. Always 0 on a journal only one
    /// process opens.
    fn held_elsewhere(&self, _run_id: i64) -> Result<u64, JournalError> {
        Ok(0)
    }

    /// The batches of runners whose leases ran out (they died), now this
    /// runner's: those to send again under their keys, and those accepted
    /// to follow. Empty on a journal only one process opens.
    fn take_over(&self) -> Result<(Vec<Batch>, Vec<Tracked>), JournalError> {
        Ok((Vec::new(), Vec::new()))
    }

    /// One HTTP exchange, for the audit trail.
    #[allow(clippy::too_many_arguments)]
    fn record_attempt(
        &self,
        run_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        target: &str,
        status: Option<u16>,
        error: Option<&str>,
        millis: u64,
    ) -> Result<(), JournalError>;
}

/// Accepted batches followed until their items are done.
pub trait StatusLedger {
    /// Accepted batches with items still pending or provisioning.
    fn tracked(&self) -> Result<Vec<Tracked>, JournalError>;

    /// Records a status answer about a batch whose items are `items` (as
    /// [`BatchLedger::batch_items`] read them, the answer checked against
    /// them); returns how many of its items are still on their way. Only
    /// items whose state changes are written: an item still pending or
    /// provisioning keeps its row as it was.
    fn record_status(
        &self,
        batch_id: i64,
        items: &[BatchItem],
        status: &api::ReactivationStatus,
    ) -> Result<usize, JournalError>;
}

/// Support cases for failed items and manual reviews.
pub trait CaseLedger {
    /// Items that need a support case: failed ones and manual reviews.
    fn cases_to_open(&self) -> Result<Vec<CaseToOpen>, JournalError>;

    fn case_opened(&self, event_key: &str, case_id: &str) -> Result<(), JournalError>;
}

/// Items as they stand, for progress, `results.csv` and `report.html`.
pub trait ItemLedger {
    /// The reader [`ItemLedger::records`] gives.
    type Records<'a>: ItemRecords
    where
        Self: 'a;

    /// Whether the journal holds any item.
    fn holds_items(&self) -> Result<bool, JournalError>;

    /// Item counts by state.
    fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError>;

    /// Looks up one item by event key (see [`ItemLedger::records`]).
    fn record(&self, event_key: &str, run_id: i64) -> Result<Option<ItemRecord>, JournalError>;

    /// A reader of items by event key as run `run_id` sees them, for
    /// `results.csv`: the batches (attempts, which run sent them) are read
    /// once, then each item is one lookup by its key.
    fn records(&self, run_id: i64) -> Result<Self::Records<'_>, JournalError>;

    /// Activations per UTC day, for `report.html`.
    fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError>;
}

/// What the audit log holds, and what it does not yet.
pub trait AuditLedger {
    /// What the journal knows of its audit log: its id, the log's file and
    /// where the chain stands, as last recorded.
    fn audit_state(&self) -> Result<crate::audit::Binding, JournalError>;

    /// Active and escalated items not yet in the audit log, by batch
    /// (items found at the vendor first), through the partial index
    /// `items_unaudited`: only what settled since the last write is read.
    fn unaudited_items(&self) -> Result<Vec<AuditItem>, JournalError>;

    /// Accepted requests not yet in the audit log.
    fn unaudited_orders(&self) -> Result<Vec<AuditOrder>, JournalError>;

    /// Whether the audit chain is kept in the ledger itself (PostgreSQL:
    /// one chain for every runner) rather than in a file beside it.
    fn chain_in_ledger(&self) -> bool {
        false
    }

    /// Appends `records` to the ledger's own chain and marks as audited the
    /// items (by row) and accepted batches they hold, in one transaction
    /// that holds the chain's head. `None`: another runner wrote some of
    /// them first, nothing was appended; read what is unaudited again.
    fn append_chain(
        &self,
        _records: Vec<serde_json::Map<String, serde_json::Value>>,
        _rows: &[i64],
        _batches: &[i64],
    ) -> Result<Option<u64>, JournalError> {
        Err(JournalError::Shared(
            "this journal keeps its audit log in a file, not in the ledger".into(),
        ))
    }

    /// Marks what the log holds (items appended now, by row; items adopted
    /// from a crash's tail, by event key; orders), with the log's file and
    /// the chain's new state, in one transaction.
    fn mark_audited(
        &self,
        rows: &[i64],
        adopted: &[String],
        orders: &[AuditedOrder],
        file: &str,
        state: &crate::audit::ChainState,
    ) -> Result<(), JournalError>;
}
