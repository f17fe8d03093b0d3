//! `refleet run`: validate → eligibility → quote → budget guard → submit →
//! track → reports (SPEC §1, §6, §7). Without an API URL it starts the
//! built-in simulator on loopback and says so.
//!
//! The steps, each in its file: the plan into the journal (`journal`) or,
//! for a dry run on a journal that holds no item, into memory (`dry`);
//! the vendor session, with its runtime, client and signals (`vendor`);
//! how the run ended (`ending`) and what it says at the end
//! (`summary`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::report::write_run_report;
use super::{load_contracts, make_plan, summary_text, Outcome, PlanSettings, UsageError};
use crate::audit;
use crate::policy::Policy;
use crate::report::{
    patch_results, trail::AuditWriter, write_results, AtomicFile, HeldRow, UnknownItems,
};
use crate::submit::client::{redact_url, Token};
use crate::submit::held::HeldInMemory;
use crate::submit::journal::{ItemState, Journal, JournalError, Ledger, RunSplit};
use crate::submit::pg::{LedgerError, PgJournal};
use crate::submit::reconcile::{JournalBook, LookupProgress};
use crate::submit::{Stop, SubmitError, SubmitProgress, SubmitReport, SubmitSettings};

mod dry;
mod ending;
mod journal;
mod summary;
mod vendor;

use crate::submit::journal::{AuditLedger, ItemRecords};
use dry::plan_read_only;
use ending::{ending, unfinished_items, unfinished_text, Ending};
use journal::{journal_dir, plan_into_journal, Rows};
use std::collections::HashMap;
use summary::{final_text, journal_line, savings, Requests, Summary, Timings, VendorLookups};
use vendor::VendorSession;

/// How a run's progress is shown, phase by phase (the command line draws
/// it on the terminal; tests and `--quiet` show nothing).
pub trait RunProgress: crate::progress::Progress + LookupProgress + SubmitProgress {
    /// A phase starts: `planning`, `looking up`, `reports`, …
    fn phase(&self, _name: &'static str) {}
    /// Clears the line before text is printed below it.
    fn clear(&self) {}
    /// The submission starts with the journal at `counts` and `requests`
    /// sent so far: what is done already is not this run's progress.
    fn begin_submission(&self, _counts: &[(ItemState, u64)], _requests: u64) {}
    /// Shows at once that the run is stopping once `stop` is triggered;
    /// spawned beside the work, it ends with the stop.
    fn watch(
        &self,
        _stop: Stop,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
    /// What the run tells as it goes, a line or lines (`--quiet` hides it).
    fn say(&self, _text: &str) {}
    /// A warning: shown even with `--quiet`.
    fn warn(&self, text: &str) {
        eprintln!("refleet: {text}");
    }
}

/// Where requests go.
pub enum Endpoint {
    Url(String, Token),
    Simulator,
}

/// Where the run keeps what it sent and what came back.
#[derive(Clone)]
pub enum Store {
    /// A SQLite journal: one file, one process at a time; its audit log is
    /// a file beside it.
    Journal(PathBuf),
    /// A PostgreSQL ledger that several runners share (`submit::pg`), with
    /// its audit chain inside. `url` may hold a password: it is never
    /// shown. `lease`: how long a runner's claims last unless renewed.
    Ledger { url: String, lease: Duration },
}

pub struct Settings {
    pub plan: PlanSettings,
    pub endpoint: Endpoint,
    pub store: Store,
    pub rate: f64,
    pub burst: u32,
    pub dry_run: bool,
    /// Look items up at the vendor before paying.
    pub reconcile: bool,
    pub submit: SubmitSettings,
    pub request_timeout: Duration,
    /// Move an unusable journal aside and start a new one (`--new-journal`).
    pub new_journal: bool,
}

/// How reports, the journal and logs name the API: the URL with its query
/// values masked, or `simulator`.
pub fn api_label(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| "(unreadable URL)".to_string(), |u| redact_url(&u))
}

/// Runs the whole job (see the module's docs), telling and showing its
/// progress through `progress`.
pub fn run(
    settings: Settings,
    policy: Arc<Policy>,
    progress: &dyn RunProgress,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    super::check_inputs(&[&settings.plan.input, &settings.plan.contracts])?;
    // A ledger that cannot be used is refused before anything is written.
    enum Open {
        Journal(PathBuf),
        Ledger(PgJournal),
    }
    let store = match &settings.store {
        Store::Journal(path) => Open::Journal(path.clone()),
        Store::Ledger { url, lease } => Open::Ledger(
            PgJournal::open(url, *lease, settings.submit.track_timeout).map_err(ledger_refused)?,
        ),
    };
    let contracts = load_contracts(&settings.plan, &policy)?;
    let cancellation_days: HashMap<String, u32> = contracts
        .by_id
        .iter()
        .map(|(id, c)| (id.to_string(), c.cancellation_days))
        .collect();
    // The journal's path, or the ledger, open.
    let state = match store {
        Open::Journal(path) => path,
        Open::Ledger(ledger) => {
            let shown = format!("postgres://{}", ledger.label());
            let writer = AuditWriter::for_ledger(cancellation_days);
            let journal = Opened {
                ledger: &ledger,
                shown: &shown,
                absolute: &shown,
                audit: writer,
            };
            let summary = settings.plan.out.join("summary.json");
            return run_on(journal, settings, policy, contracts, progress, started).map_err(|e| {
                let e = ledger_gone(e);
                // An earlier run's summary would claim an outcome for this one.
                if e.is::<super::Interrupted>() {
                    let _ = std::fs::remove_file(&summary);
                }
                e
            });
        }
    };
    // The journal first: a second run on it, a journal that cannot be
    // used and an audit log that is not the journal's are refused before
    // any work.
    let opened = if settings.new_journal {
        Journal::open_afresh_if_unusable(&state)
    } else {
        Journal::open(&state).map(|j| (j, None))
    };
    let refused = |e: JournalError| -> anyhow::Error {
        match e {
            JournalError::Busy(_) | JournalError::Unusable { .. } => {
                UsageError(e.to_string()).into()
            }
            e => anyhow::Error::new(e),
        }
    };
    let (journal, moved) = opened.map_err(refused)?;
    if let Some(moved) = moved {
        progress.warn(&format!(
            "--new-journal: the journal {} could not be used; it was moved to {} and a new journal started (every item is submitted again)",
            state.display(),
            moved.display()
        ));
    }
    let audit_dir = journal_dir(&state);
    let binding = journal.audit_state().map_err(refused)?;
    audit::locate(&audit_dir, &binding).map_err(|e| {
        UsageError(format!(
            "journal {}: {e}. Nothing was sent",
            state.display()
        ))
    })?;
    let shown = state.display().to_string();
    let absolute = std::path::absolute(&state)
        .unwrap_or_else(|_| state.clone())
        .display()
        .to_string();
    let journal = Opened {
        ledger: &journal,
        shown: &shown,
        absolute: &absolute,
        audit: AuditWriter::new(&audit_dir, &state, cancellation_days),
    };
    run_on(journal, settings, policy, contracts, progress, started)
}

/// A ledger refused before any work: one that cannot be reached, is not
/// refleet's, is newer than this refleet or damaged, or a URL or setting it
/// cannot use, is the operator's to fix (exit 2, as `refleet audit` says
/// it); an error of the server while opening it is a failure (exit 1).
fn ledger_refused(e: LedgerError) -> anyhow::Error {
    match e {
        LedgerError::Db(..) | LedgerError::Worker(_) => anyhow::Error::new(e),
        e => UsageError(format!("{:#}", anyhow::Error::new(e))).into(),
    }
}

/// A run whose ledger went away and did not come back within its wait
/// (`--track-timeout`) stopped: exit 4, resumable, what was recorded
/// before kept in the ledger.
fn ledger_gone(e: anyhow::Error) -> anyhow::Error {
    let gone = e
        .chain()
        .find_map(|c| match c.downcast_ref::<JournalError>() {
            Some(JournalError::Gone(why)) => Some(why.clone()),
            _ => match c.downcast_ref::<SubmitError>() {
                Some(SubmitError::Journal(JournalError::Gone(why))) => Some(why.clone()),
                _ => None,
            },
        });
    match gone {
        Some(why) => super::Interrupted(format!(
            "{why}; what was recorded before it went away is kept in it (the reports of this run were not written), and running the same command again resumes"
        ))
        .into(),
        None => e,
    }
}

/// The store a run works on, opened, with how messages name it and its
/// audit log's writer.
struct Opened<'a, L> {
    ledger: &'a L,
    /// As the operator gave it (a path), or the ledger's URL without
    /// credentials.
    shown: &'a str,
    /// For `summary.json`: the journal's absolute path, or the ledger's URL.
    absolute: &'a str,
    audit: AuditWriter,
}

/// The run on an opened store (see [`run`]).
fn run_on<L: Ledger>(
    opened: Opened<'_, L>,
    mut settings: Settings,
    policy: Arc<Policy>,
    contracts: crate::contracts::Contracts,
    progress: &dyn RunProgress,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let Opened {
        ledger: journal,
        shown,
        absolute,
        audit: mut audit_writer,
    } = opened;
    // What the store holds before this run (a shared ledger's counts are
    // of the run's own items once it is begun).
    let held = journal.counts()?.iter().map(|(_, n)| n).sum();
    let run_id = journal.begin_run(
        &settings.plan.input.display().to_string(),
        settings.plan.as_of,
    )?;
    progress.say(&journal_line(shown, run_id, held));

    // Plan: every verdict to the reports, eligible and manual-review items to the journal.
    progress.phase("planning");
    let escalate = settings.submit.escalate;
    let out = settings.plan.out.clone();
    // A dry run on a journal that holds no item changes nothing in it:
    // `results.csv` is written as the plan goes, and what the lookups find
    // is kept in memory (see `dry`).
    let read_only = settings.dry_run && !journal.holds_items()?;
    let mut in_memory = (read_only && settings.reconcile).then(HeldInMemory::default);
    let (mut rows, mut planned) = if read_only {
        let (counts, planned) = plan_read_only(
            &mut settings.plan,
            (&policy, &contracts),
            UnknownItems { escalate },
            in_memory.as_mut(),
            progress,
        )?;
        (Rows::Written(counts), planned)
    } else {
        let (spool, planned) = plan_into_journal(
            journal,
            run_id,
            &mut settings.plan,
            (&policy, &contracts),
            escalate,
            progress,
        )?;
        for q in &planned.plan.quotes {
            journal.set_quote(&q.contract_id, q.region.as_str(), &q.quote_id)?;
        }
        (Rows::Spooled(spool), planned)
    };
    progress.clear();
    // A contracts file that names none of the inventory's contracts makes
    // every row ineligible: that is a mistake to fix, not a finished run.
    if let Some(hint) = planned.plan.stats.encoding_hint() {
        progress.warn(&format!("warning: {hint}"));
    }
    if let Some(why) = &planned.contract_mismatch {
        return Err(UsageError(format!("{why}; nothing was sent")).into());
    }
    tracing::info!(
        run_id,
        rows = planned.plan.stats.rows,
        rejected = planned.plan.stats.rejected_rows,
        eligible = planned.plan.eligible,
        ineligible = planned.plan.ineligible,
        seconds = started.elapsed().as_secs_f64(),
        "planned"
    );

    // Before paying: what does the vendor already hold? Then the quote and
    // the budget guard price only what this run will buy.
    let mut report = SubmitReport::default();
    let mut api_label = match &settings.endpoint {
        Endpoint::Url(url, _) => api_label(url),
        Endpoint::Simulator => "simulator".to_string(),
    };
    let session = if settings.reconcile || !settings.dry_run {
        let session = VendorSession::start(&settings, policy.clone(), progress)?;
        api_label = session.label.clone();
        Some(session)
    } else {
        None
    };
    let mut reconciled = None;
    // Seconds spent on the lookups: the request count includes them, so the
    // achieved rate counts their time too.
    let mut lookup_seconds = 0.0;
    if let (Some(session), true) = (&session, settings.reconcile) {
        let lookups_started = Instant::now();
        let found = match in_memory.as_mut() {
            Some(book) => session.reconcile(book, &settings.submit, progress)?,
            None => session.reconcile(
                &mut JournalBook::new(journal, run_id),
                &settings.submit,
                progress,
            )?,
        };
        lookup_seconds = lookups_started.elapsed().as_secs_f64();
        report.seconds = lookup_seconds;
        report.requests = found.requests;
        // The 429s the lookups drew (a paying run's count includes them
        // too, as its client counts from its first request).
        report.throttled = crate::submit::Vendor::throttled(session.client.as_ref());
        if found.looked_up > 0 {
            progress.say(&format!(
                "looked up {} items at the vendor ({} requests): {} already held there, not paid again",
                found.looked_up,
                found.requests,
                found.held_total()
            ));
        }
        if let Some(why) = found.unfinished.then(|| session.stop.reason()).flatten() {
            report.stopped_because = Some(why);
        }
        reconciled = Some(found);
    }
    let quoted_before = planned.totals.clone();
    let not_bought = match &in_memory {
        Some(book) => book.held_keys(),
        None if read_only => Default::default(),
        None => journal.not_to_buy(run_id)?,
    };
    if !not_bought.is_empty() {
        progress.phase("quoting");
        planned = make_plan(
            &mut settings.plan,
            &policy,
            &contracts,
            progress,
            None,
            Some(&not_bought),
        )?;
        progress.clear();
        if !read_only {
            for q in &planned.plan.quotes {
                journal.set_quote(&q.contract_id, q.region.as_str(), &q.quote_id)?;
            }
        }
    }
    let split = if read_only {
        let vendor_held = in_memory.as_ref().map_or(0, HeldInMemory::held_count);
        RunSplit {
            to_buy: planned.plan.eligible.saturating_sub(vendor_held),
            earlier_runs: 0,
            vendor_held,
        }
    } else {
        journal.run_split(run_id)?
    };
    let plan_seconds = started.elapsed().as_secs_f64();
    progress.say(&summary_text(&settings.plan, &contracts, &planned));

    // The budget guard comes before any request that pays.
    let budget_refused = !planned.over_budget.is_empty();
    if budget_refused {
        progress.warn(&format!(
            "budget exceeded, nothing was submitted: {}",
            planned.over_budget.join("; ")
        ));
    } else if settings.dry_run {
        progress.say(&format!(
            "dry run: nothing was sent; would buy {}, already bought by earlier runs {}, held by the vendor {}",
            split.to_buy, split.earlier_runs, split.vendor_held
        ));
    } else if let Some(session) = &session {
        if split.to_buy == 0 {
            progress.say(&format!(
                "nothing new to submit: {} items already done by earlier runs, {} held by the vendor (journal {})",
                split.earlier_runs,
                split.vendor_held,
                shown
            ));
        }
        // Its request count is the client's: the lookups are in it.
        let mut rep = session.submit(
            journal,
            run_id,
            &settings.submit,
            progress,
            &mut audit_writer,
        )?;
        rep.seconds += lookup_seconds;
        if rep.stopped_because.is_none() {
            rep.stopped_because = report.stopped_because.take();
        }
        report = rep;
    }
    // An API that never answered and could not be connected to: the run
    // fails at once (exit 1), naming the URL and the system's error.
    if let Some(why) = session.as_ref().and_then(|s| s.client.unreachable()) {
        report.stopped_because.get_or_insert_with(|| why.clone());
        report.aborted.get_or_insert(why);
    }
    drop(session);
    let not_bought_again = savings(&quoted_before, &planned.totals);

    // What the run settled and the audit log does not have yet (most of it
    // was written as the run went).
    progress.phase("audit log");
    let audit_started = Instant::now();
    audit_writer.catch_up(journal)?;
    let audit_seconds = audit_started.elapsed().as_secs_f64();
    let audited = audit_writer
        .path()
        .map(|p| (audit_writer.appended(), p.to_path_buf()));
    progress.phase("reports");
    let results_started = Instant::now();
    if let (Rows::Written(counts), Some(book)) = (&mut rows, &in_memory) {
        if book.held_count() > 0 {
            patch_results(&out, counts, &|row| {
                book.held(row).map(|(record, contract_id, site)| HeldRow {
                    record,
                    contract_id,
                    site,
                })
            })?;
        }
    }
    let counts = match rows {
        Rows::Written(counts) => counts,
        Rows::Spooled(spool) => {
            let mut records = journal.records(run_id)?;
            write_results(&out, &spool, &mut |key| Ok(records.get(key)?))?
        }
    };
    if settings.plan.parquet {
        crate::report::parquet::write_copies(&out, &["rejects", "eligibility", "results"])?;
    }
    let results_seconds = results_started.elapsed().as_secs_f64();
    let unfinished = unfinished_items(&journal.counts()?, escalate);
    let ending = ending(
        &report,
        &unfinished,
        counts.failed_or_rejected,
        budget_refused,
        settings.dry_run,
    );
    let outcome_name = ending.name();
    let stopped_because = match ending {
        Ending::Stopped | Ending::Aborted => Some(
            report
                .stopped_because
                .clone()
                .unwrap_or_else(|| unfinished_text(&unfinished)),
        ),
        _ => None,
    };
    let summary = Summary {
        refleet_version: env!("CARGO_PKG_VERSION"),
        run_id,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        input: settings.plan.input.display().to_string(),
        as_of: settings.plan.as_of.to_string(),
        api: &api_label,
        journal: absolute.to_string(),
        dry_run: settings.dry_run,
        escalate,
        outcome: outcome_name,
        exit_code: ending.exit_code(),
        stopped_because: stopped_because.clone(),
        rows: planned.plan.stats.rows,
        valid_rows: planned.plan.stats.valid,
        rejected_rows: planned.plan.stats.rejected_rows,
        eligible: planned.plan.eligible,
        ineligible: planned.plan.ineligible,
        items_by_state: &counts.by_state,
        reasons: &counts.by_reason,
        by_region: &counts.by_region,
        by_contract: &counts.by_contract,
        by_site: &counts.by_site,
        quotes: &planned.totals,
        items: split,
        vendor_lookups: reconciled.as_ref().map(|r| VendorLookups {
            looked_up: r.looked_up,
            held: r.held.clone(),
            requests: r.requests,
            finished: !r.unfinished,
        }),
        not_bought_again: not_bought_again.clone(),
        budget: settings
            .plan
            .budgets
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        over_budget: &planned.over_budget,
        requests: Requests {
            sent: report.requests,
            throttled: report.throttled,
            configured_rate: settings.rate,
            achieved_rate: if report.seconds > 0.0 {
                report.requests as f64 / report.seconds
            } else {
                0.0
            },
        },
        timings: Timings {
            plan_seconds,
            lookup_seconds,
            submit_seconds: report.seconds,
            audit_seconds,
            results_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
        },
    };
    tracing::info!(
        run_id,
        outcome = outcome_name,
        exit_code = ending.exit_code(),
        rows = counts.rows,
        active = counts.by_state.get("active").copied().unwrap_or(0),
        failed_or_rejected = counts.failed_or_rejected,
        unfinished = unfinished.iter().map(|(_, n)| n).sum::<u64>(),
        requests = report.requests,
        throttled = report.throttled,
        "run finished"
    );
    let summary_json = serde_json::to_string_pretty(&summary)?;
    let mut f = AtomicFile::create(&out.join("summary.json"))?;
    std::io::Write::write_all(&mut f, summary_json.as_bytes())?;
    std::io::Write::write_all(&mut f, b"\n")?;
    f.commit()?;
    journal.finish_run(
        run_id,
        outcome_name,
        &summary_json,
        &serde_json::to_string(&planned.plan.quotes)?,
    )?;
    write_run_report(&out, &summary_json, &planned.plan.quotes, journal)?;
    progress.clear();
    progress.say(&final_text(
        &counts,
        &report,
        stopped_because.as_deref(),
        &settings,
        shown,
        started,
    ));
    match audited {
        Some((n, path)) if n > 0 => {
            progress.say(&format!("audit log: {n} new records in {}", path.display()))
        }
        None if audit_writer.appended() > 0 => progress.say(&format!(
            "audit chain: {} new records in the ledger {shown}",
            audit_writer.appended()
        )),
        _ => {}
    }
    match ending.outcome() {
        Some(outcome) => Ok(outcome),
        None => Err(anyhow::anyhow!(
            "{}; what is known is recorded in the journal and the reports, and a run of the same command resumes",
            report.aborted.as_deref().unwrap_or("the run failed")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_masks_query_values() {
        assert_eq!(
            api_label("https://vendor.example:8443/api/?code=K1&region=eu&flag"),
            "https://vendor.example:8443/api/?code=***&region=***&***"
        );
        assert_eq!(api_label("http://127.0.0.1:80/"), "http://127.0.0.1/");
    }
}
