//! Before paying, ask the vendor (SPEC §6.1): every planned item is looked
//! up (`POST /v1/items/lookup`, up to [`api::MAX_LOOKUP`] a request, under
//! the same rate limiter and retries as every request) before its first
//! request is formed. What the vendor already holds for this deactivation
//! event, whoever bought it (another journal, another runner, a person in
//! the portal), is recorded with the vendor's state, request id and
//! confirmation, and never paid again; the rest stays `planned` and is
//! paid as usual.
//!
//! A re-send of a batch recorded as `submitted` needs no lookup: it keeps
//! its idempotency key. Items found on their way (pending, provisioning)
//! are tracked by looking them up again ([`LookupPurpose::Track`]) until
//! they are done.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::task::JoinSet;

use super::client::{Attempt, Call, CallError};
use super::journal::{Ledger, LookupPurpose, LookupTarget};
use super::stop::Stop;
use super::{SubmitError, SubmitSettings, Vendor};
use crate::api::{self, ItemState, VendorRecord};

/// What the lookups before paying found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Items looked up.
    pub looked_up: u64,
    /// Items the vendor already held for their deactivation event, by the
    /// vendor's state: not paid again.
    pub held: BTreeMap<&'static str, u64>,
    /// Lookup requests sent (every attempt).
    pub requests: u64,
    /// Stopped (signal, time-out) before every planned item was looked up:
    /// those are not paid by this run.
    pub unfinished: bool,
}

impl Reconciled {
    pub fn held_total(&self) -> u64 {
        self.held.values().sum()
    }
}

/// Progress of the lookups: called as answers are recorded, with the items
/// looked up so far out of `of` to look up. Reports nothing by default.
pub trait LookupProgress: Sync {
    fn looked_up(&self, _so_far: &Reconciled, _of: u64) {}
}

/// Reports nothing: for tests, benchmarks and `--quiet`.
pub struct NoLookupProgress;
impl LookupProgress for NoLookupProgress {}

/// Whether the vendor's record means the item is already reactivated for
/// the deactivation at `deactivated_at`: pending, provisioning or active,
/// and from a request for this deactivation or a later one, or (a record
/// with no request behind it: portal work) reactivated at or after it. A
/// failed or rejected record, or one older than the deactivation (a new
/// event), is not: the item is paid.
pub fn held_for_event(record: &VendorRecord, deactivated_at: &str) -> bool {
    if !matches!(
        record.state,
        ItemState::Pending | ItemState::Provisioning | ItemState::Active
    ) {
        return false;
    }
    let Some(ours) = Moment::parse(deactivated_at) else {
        // Our own deactivation date always parses (the inventory's dates are
        // validated); should it not, only the very same event counts.
        return record.deactivated_at.as_deref() == Some(deactivated_at);
    };
    match record.deactivated_at.as_deref() {
        Some(theirs) => Moment::parse(theirs).is_some_and(|t| t.not_before(&ours)),
        None => {
            Moment::Instant(record.activated_at.unwrap_or(record.accepted_at)).not_before(&ours)
        }
    }
}

/// A deactivation or activation time: a date-time, or a date alone (an
/// export without times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    Instant(DateTime<Utc>),
    Day(NaiveDate),
}

impl Moment {
    /// An RFC 3339 date-time (or one without an offset, taken as UTC) or
    /// an ISO 8601 date.
    fn parse(text: &str) -> Option<Moment> {
        let text = text.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(Moment::Instant(t.with_timezone(&Utc)));
        }
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
            return Some(Moment::Instant(t.and_utc()));
        }
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(Moment::Day)
    }

    /// Whether `self` is at or after `other`. When either is a date alone
    /// the two are compared by calendar day: a date carries no time, so
    /// `2026-10-01` is the same day as `2026-10-01T14:00Z`, not before it.
    fn not_before(&self, other: &Moment) -> bool {
        match (self, other) {
            (Moment::Instant(a), Moment::Instant(b)) => a >= b,
            _ => self.day() >= other.day(),
        }
    }

    fn day(&self) -> NaiveDate {
        match self {
            Moment::Instant(t) => t.date_naive(),
            Moment::Day(d) => *d,
        }
    }
}

/// Whether `answer` is one result per target, in order, each about the
/// item asked (serial numbers and license ids compared without case). Any
/// other answer is not acted on: its items are asked again, and none is
/// paid on it.
pub(super) fn answer_matches(targets: &[LookupTarget], answer: &api::LookupAnswer) -> bool {
    let same = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => a.trim().eq_ignore_ascii_case(b.trim()),
        (None, None) => true,
        _ => false,
    };
    answer.items.len() == targets.len()
        && targets.iter().zip(&answer.items).all(|(t, r)| {
            same(t.item.serial_number.as_deref(), r.serial_number.as_deref())
                && same(t.item.license_id.as_deref(), r.license_id.as_deref())
        })
}

/// Applies a lookup's answer to the journal; returns the items now held
/// (by vendor state) and how many of the asked are still on their way.
pub(super) fn apply(
    journal: &impl Ledger,
    purpose: LookupPurpose,
    targets: &[LookupTarget],
    answer: &api::LookupAnswer,
    held: &mut BTreeMap<&'static str, u64>,
) -> Result<usize, SubmitError> {
    let mut open = 0;
    let mut found = Vec::new();
    // The caller checked the answer: one result per target, in order.
    for (target, result) in targets.iter().zip(&answer.items) {
        let counts = match (purpose, result.record.as_ref()) {
            (LookupPurpose::BeforePaying, Some(record)) => {
                held_for_event(record, &target.deactivated_at).then_some(record)
            }
            (LookupPurpose::BeforePaying, None) => None,
            // Found before and still on its way, or done: follow it.
            (LookupPurpose::Track, Some(record))
                if matches!(
                    record.state,
                    ItemState::Pending | ItemState::Provisioning | ItemState::Active
                ) =>
            {
                Some(record)
            }
            // The vendor's request failed, was rejected, or is gone: the
            // item was not reactivated after all, so it goes back to be paid.
            (LookupPurpose::Track, _) => {
                journal.release_vendor(&target.event_key)?;
                None
            }
        };
        if let Some(record) = counts {
            found.push((target.event_key.as_str(), record));
        }
    }
    // In one go: a shared ledger answers them in one round trip.
    for ((_, record), changed) in found.iter().zip(journal.record_vendors(&found)?) {
        if changed {
            if purpose == LookupPurpose::BeforePaying {
                *held.entry(record.state.as_str()).or_default() += 1;
            }
            if !record.state.is_terminal() {
                open += 1;
            }
        }
    }
    Ok(open)
}

/// Where the lookups before paying take their items from, and where what
/// the vendor holds goes: the journal ([`JournalBook`]), or memory for a
/// dry run that changes nothing ([`super::held::HeldInMemory`]).
pub trait LookupBook {
    /// How many items are to be looked up.
    fn to_look_up(&self) -> Result<u64, SubmitError>;
    /// The next items to look up, at most `limit`, in plan order; empty
    /// once every item was handed out.
    fn next_page(&mut self, limit: usize) -> Result<Vec<LookupTarget>, SubmitError>;
    /// Records one answer, already checked to be about exactly `page`,
    /// all or nothing; counts the items now held into `held` by the
    /// vendor's state.
    fn record(
        &mut self,
        page: &[LookupTarget],
        answer: &api::LookupAnswer,
        held: &mut BTreeMap<&'static str, u64>,
    ) -> Result<(), SubmitError>;
    /// Records the attempts of one lookup request.
    fn log_attempts(&mut self, target: &str, attempts: &[Attempt]) -> Result<(), SubmitError>;
}

/// The journal's planned items, looked up in the order they were planned;
/// what the vendor holds is recorded in the journal, a page per
/// transaction.
pub struct JournalBook<'j, L> {
    journal: &'j L,
    run_id: i64,
    /// The last rowid handed out.
    after: i64,
}

impl<'j, L: Ledger> JournalBook<'j, L> {
    pub fn new(journal: &'j L, run_id: i64) -> JournalBook<'j, L> {
        JournalBook {
            journal,
            run_id,
            after: 0,
        }
    }
}

impl<L: Ledger> LookupBook for JournalBook<'_, L> {
    fn to_look_up(&self) -> Result<u64, SubmitError> {
        // Every planned item is looked up, and nothing plans one meanwhile.
        Ok(self
            .journal
            .counts()?
            .iter()
            .filter(|(s, _)| *s == super::journal::ItemState::Planned)
            .map(|(_, n)| *n)
            .sum())
    }

    fn next_page(&mut self, limit: usize) -> Result<Vec<LookupTarget>, SubmitError> {
        let page = self
            .journal
            .to_look_up(LookupPurpose::BeforePaying, self.after, limit)?;
        if let Some(last) = page.last() {
            self.after = last.rowid;
        }
        Ok(page)
    }

    fn record(
        &mut self,
        page: &[LookupTarget],
        answer: &api::LookupAnswer,
        held: &mut BTreeMap<&'static str, u64>,
    ) -> Result<(), SubmitError> {
        let journal = self.journal;
        journal.atomically(|| apply(journal, LookupPurpose::BeforePaying, page, answer, held))?;
        Ok(())
    }

    fn log_attempts(&mut self, target: &str, attempts: &[Attempt]) -> Result<(), SubmitError> {
        super::log_attempts(self.journal, self.run_id, "lookup", target, attempts)?;
        Ok(())
    }
}

/// Looks up every item of `book`, `concurrency` requests at a time, and
/// records what the vendor already holds. Ends early, `unfinished`, on a
/// stop or after `settings.track_timeout`; an item not looked up stays
/// planned and is not paid by this run.
pub async fn reconcile<V: Vendor>(
    book: &mut dyn LookupBook,
    vendor: &Arc<V>,
    settings: &SubmitSettings,
    stop: &Stop,
    progress: &dyn LookupProgress,
) -> Result<Reconciled, SubmitError> {
    let started = Instant::now();
    let deadline = super::after(started, settings.track_timeout);
    let sent_before = vendor.sent();
    let concurrency = settings.concurrency.max(1);
    let mut report = Reconciled::default();
    let to_look_up = book.to_look_up()?;
    progress.looked_up(&report, to_look_up);
    let mut pages_left = true;
    let mut retry: Vec<(Instant, Vec<LookupTarget>)> = Vec::new();
    let mut tasks: JoinSet<(Vec<LookupTarget>, Call<api::LookupAnswer>)> = JoinSet::new();
    loop {
        if stop.reason().is_none() && Instant::now() >= deadline {
            stop.trigger(format!(
                "tracking time-out ({} s) reached while looking items up before paying",
                settings.track_timeout.as_secs()
            ));
        }
        if stop.reason().is_some() {
            report.unfinished = true;
            break;
        }
        while tasks.len() < concurrency {
            let now = Instant::now();
            let page = if let Some(i) = retry.iter().position(|(due, _)| *due <= now) {
                retry.swap_remove(i).1
            } else if pages_left {
                let page = book.next_page(api::MAX_LOOKUP)?;
                if page.is_empty() {
                    pages_left = false;
                    continue;
                }
                page
            } else {
                break;
            };
            let vendor = vendor.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                let body = api::LookupRequest {
                    items: page.iter().map(|t| t.item.clone()).collect(),
                };
                let call = vendor.lookup(&body, &stop).await;
                (page, call)
            });
        }
        if tasks.is_empty() && retry.is_empty() && !pages_left {
            break;
        }
        let next_retry = retry.iter().map(|(d, _)| *d).min();
        let wake = next_retry
            .unwrap_or(deadline)
            .min(deadline)
            .min(Instant::now() + Duration::from_millis(200));
        let joined = tokio::select! {
            Some(j) = tasks.join_next(), if !tasks.is_empty() => Some(j),
            _ = tokio::time::sleep_until(wake.into()) => None,
        };
        let Some(joined) = joined else { continue };
        let (page, call) =
            joined.map_err(|e| SubmitError::Aborted(format!("a lookup task failed: {e}")))?;
        book.log_attempts(&format!("{} items", page.len()), &call.attempts)?;
        match call.result {
            Ok(answer) if answer_matches(&page, &answer) => {
                report.looked_up += page.len() as u64;
                book.record(&page, &answer, &mut report.held)?;
                progress.looked_up(&report, to_look_up);
            }
            Ok(answer) => {
                tracing::warn!(
                    asked = page.len(),
                    answered = answer.items.len(),
                    "the vendor's lookup answer does not match the items asked: asking again; none of them is paid on it"
                );
                retry.push((Instant::now() + settings.cooldown, page));
            }
            Err(CallError::Refused { status, message }) if status == 401 || status == 403 => {
                return Err(SubmitError::Unauthorized { status, message });
            }
            Err(CallError::Refused { status, message }) => {
                return Err(SubmitError::NoLookup { status, message });
            }
            Err(CallError::GaveUp { .. }) => {
                retry.push((Instant::now() + settings.cooldown, page));
            }
            Err(CallError::Stopped) => {
                report.unfinished = true;
            }
        }
    }
    // Whatever is still in flight ends with the stop.
    while let Some(j) = tasks.join_next().await {
        if let Ok((page, call)) = j {
            match call.result {
                Ok(answer) if answer_matches(&page, &answer) => {
                    report.looked_up += page.len() as u64;
                    book.record(&page, &answer, &mut report.held)?
                }
                // Asked again by the next run.
                _ => report.unfinished = true,
            }
        }
    }
    report.requests = vendor.sent().saturating_sub(sent_before);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: ItemState, deactivated_at: Option<&str>, activated: &str) -> VendorRecord {
        VendorRecord {
            state,
            contract_id: "C-1".into(),
            request_id: deactivated_at.map(|_| "rq-1".to_string()),
            item_key: None,
            deactivated_at: deactivated_at.map(str::to_string),
            accepted_at: activated.parse().unwrap(),
            activated_at: Some(activated.parse().unwrap()),
            eta: None,
            confirmation_id: Some("CNF-1".into()),
            features_verified: None,
            reason: None,
        }
    }

    #[test]
    fn held_means_on_its_way_or_active_for_this_deactivation_or_a_later_one() {
        let t = "2026-12-01T10:00:00Z";
        for state in [
            ItemState::Pending,
            ItemState::Provisioning,
            ItemState::Active,
        ] {
            assert!(held_for_event(
                &record(state, Some("2026-10-01"), t),
                "2026-10-01"
            ));
        }
        for state in [ItemState::Failed, ItemState::Rejected] {
            assert!(!held_for_event(
                &record(state, Some("2026-10-01"), t),
                "2026-10-01"
            ));
        }
        // The record was for an older deactivation: this is a new event.
        let old = record(ItemState::Active, Some("2026-10-01"), t);
        assert!(!held_for_event(&old, "2026-11-15"));
        // Their date alone, our date-time the same day: the same event.
        assert!(held_for_event(&old, "2026-10-01T00:00:01Z"));
        assert!(held_for_event(&old, "2026-09-30T23:59:59Z"));
    }

    #[test]
    fn portal_work_counts_when_done_after_the_deactivation() {
        let by_hand = record(ItemState::Active, None, "2026-11-20T08:00:00Z");
        assert!(held_for_event(&by_hand, "2026-11-01"));
        assert!(held_for_event(&by_hand, "2026-11-20T08:00:00Z"));
        assert!(!held_for_event(&by_hand, "2026-11-21"));
    }

    #[test]
    fn a_date_alone_is_compared_by_its_day() {
        let day = |d: &str| Moment::parse(d).unwrap();
        assert_eq!(
            Moment::parse("2026-10-01T02:00:00+02:00"),
            Moment::parse("2026-10-01T00:00:00Z")
        );
        assert!(Moment::parse("next tuesday").is_none());
        // Their date, our date-time on the same day: the same event.
        assert!(day("2026-10-01").not_before(&day("2026-10-01T14:00:00Z")));
        assert!(day("2026-10-01T00:00:01Z").not_before(&day("2026-10-01")));
        assert!(!day("2026-09-30").not_before(&day("2026-10-01T00:00:00Z")));
        assert!(!day("2026-10-01T13:59:59Z").not_before(&day("2026-10-01T14:00:00Z")));
        // A vendor record of the date only is held for a date-time event that day.
        let r = record(
            ItemState::Active,
            Some("2026-10-01"),
            "2026-12-01T10:00:00Z",
        );
        assert!(held_for_event(&r, "2026-10-01T14:00:00Z"));
        assert!(!held_for_event(&r, "2026-10-02"));
        // An unreadable date only matches the very same text.
        let r = record(ItemState::Active, Some("sometime"), "2026-12-01T10:00:00Z");
        assert!(!held_for_event(&r, "2026-10-01"));
    }

    fn target(serial: &str) -> LookupTarget {
        LookupTarget {
            rowid: 1,
            event_key: format!("{serial}|C-1|2026-10-01"),
            item: api::LookupItem {
                serial_number: Some(serial.to_string()),
                license_id: None,
                contract_id: "C-1".into(),
            },
            deactivated_at: "2026-10-01".into(),
        }
    }

    fn result(serial: &str) -> api::LookupResult {
        api::LookupResult {
            serial_number: Some(serial.to_string()),
            license_id: None,
            contract_id: "C-1".into(),
            found: false,
            record: None,
        }
    }

    #[test]
    fn only_an_answer_about_exactly_the_items_asked_is_acted_on() {
        let asked = [target("AAAA0001"), target("AAAA0002")];
        let answer = |items: Vec<api::LookupResult>| api::LookupAnswer { items };
        assert!(answer_matches(
            &asked,
            &answer(vec![result("AAAA0001"), result("aaaa0002")])
        ));
        // One short, one too many, another item, the wrong order.
        assert!(!answer_matches(&asked, &answer(vec![result("AAAA0001")])));
        assert!(!answer_matches(
            &asked,
            &answer(vec![result("AAAA0001"), result("AAAA0002"), result("X")])
        ));
        assert!(!answer_matches(
            &asked,
            &answer(vec![result("AAAA0001"), result("BBBB0002")])
        ));
        assert!(!answer_matches(
            &asked,
            &answer(vec![result("AAAA0002"), result("AAAA0001")])
        ));
    }
}
