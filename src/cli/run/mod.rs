//! `refleet run`: validate → eligibility → quote → budget guard → submit →
//! track → reports (SPEC §1, §6, §7). Without `--api-url` it starts the
//! built-in simulator on loopback and says so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::progress::Phases;
use super::quote::{load_contracts, make_plan, summary_text, PlanArgs, PlanSettings};
use super::{Global, Outcome, UsageError};
use crate::audit;
use crate::report::{
    patch_results, trail::AuditWriter, write_results, AtomicFile, HeldRow, UnknownItems,
};
use crate::submit::client::{redact_url, Token};
use crate::submit::held::HeldInMemory;
use crate::submit::journal::RunSplit;
use crate::submit::journal::{Journal, JournalError};
use crate::submit::reconcile::JournalBook;
use crate::submit::{SubmitReport, SubmitSettings};

mod dry;
mod ending;
mod journal;
mod summary;
mod vendor;

use dry::plan_read_only;
use ending::{ending, unfinished_items, unfinished_text, Ending};
use journal::{journal_dir, plan_into_journal, Rows};
use summary::{final_text, savings, Requests, Summary, Timings, VendorLookups};
use vendor::VendorSession;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArgs,
    /// The vendor API's base URL. Without it, refleet starts its built-in
    /// simulator on loopback (nothing leaves this machine). The token comes
    /// from REFLEET_API_TOKEN or --token-file, never from a flag or the URL.
    /// Reports and logs show it with its query values masked (`?code=***`).
    #[arg(long, value_name = "URL", env = "REFLEET_API_URL")]
    api_url: Option<String>,
    /// Allow an http:// --api-url on a host that is not loopback, which
    /// sends the token in clear (loopback is always allowed).
    #[arg(long, env = "REFLEET_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// A file holding the API token (first line); default: REFLEET_API_TOKEN.
    #[arg(long, value_name = "FILE", env = "REFLEET_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Requests per second, never exceeded (submissions and polls alike).
    #[arg(long, default_value_t = 20.0, env = "REFLEET_RATE")]
    rate: f64,
    /// Requests that may leave at once after a quiet spell.
    #[arg(long, default_value_t = 1, env = "REFLEET_BURST")]
    burst: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, env = "REFLEET_CONCURRENCY")]
    concurrency: usize,
    /// Items per request (at most 500), grouped by contract and region.
    #[arg(long, default_value_t = 100, env = "REFLEET_BATCH_SIZE")]
    batch_size: usize,
    /// The journal (SQLite); default: refleet/journal.sqlite in the user's
    /// state folder ($XDG_STATE_HOME, else ~/.local/state; macOS:
    /// ~/Library/Application Support; Windows: %LOCALAPPDATA%), the same
    /// whatever --out. Re-running with the same journal resumes and never
    /// submits an item twice. Its audit log is written beside it.
    #[arg(long, value_name = "FILE", env = "REFLEET_STATE", value_parser = super::paths::StateParser)]
    state: Option<PathBuf>,
    /// When the journal cannot be used (empty, damaged, or from another
    /// refleet version), move it aside (renamed FILE.unusable-<UTC time>,
    /// never deleted) and start a new one, which submits every item again.
    /// A usable journal is kept.
    #[arg(long, env = "REFLEET_NEW_JOURNAL")]
    new_journal: bool,
    /// Do everything but pay: validate, decide, look items up at the vendor
    /// (read-only), quote what would be bought, plan the journal.
    #[arg(long, env = "REFLEET_DRY_RUN")]
    dry_run: bool,
    /// Pay without first asking the vendor what it already holds (`POST
    /// /v1/items/lookup`). Safe only when this journal is the only one that
    /// ever bought for these devices and nobody reactivates them by hand.
    #[arg(long, env = "REFLEET_NO_RECONCILE")]
    no_reconcile: bool,
    /// Do not open support cases for failed and manual-review items.
    #[arg(long, env = "REFLEET_NO_ESCALATE")]
    no_escalate: bool,
    /// Stop tracking after this long (e.g. 90s, 30m, 2h); the run is then resumable (exit 4).
    #[arg(long, default_value = "30m", value_parser = parse_duration, env = "REFLEET_TRACK_TIMEOUT")]
    track_timeout: Duration,
    /// Time-out of one HTTP attempt (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "REFLEET_REQUEST_TIMEOUT")]
    request_timeout: Duration,
}

/// `90s`, `30m`, `2h`, `500ms`, or plain seconds.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 90s, 30m, 2h, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a duration"))
}

/// Where requests go.
enum Endpoint {
    Url(String, Token),
    Simulator,
}

struct Settings {
    plan: PlanSettings,
    endpoint: Endpoint,
    state: PathBuf,
    rate: f64,
    burst: u32,
    dry_run: bool,
    /// Look items up at the vendor before paying.
    reconcile: bool,
    submit: SubmitSettings,
    request_timeout: Duration,
}

impl Args {
    fn resolve(self) -> Result<Settings, UsageError> {
        let plan = self.plan.resolve()?;
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(UsageError(format!(
                "--rate must be above 0, not {}",
                self.rate
            )));
        }
        if self.batch_size == 0 || self.batch_size > crate::api::MAX_BATCH {
            return Err(UsageError(format!(
                "--batch-size must be between 1 and {}, not {}",
                crate::api::MAX_BATCH,
                self.batch_size
            )));
        }
        let endpoint = match self.api_url {
            None => Endpoint::Simulator,
            Some(url) => {
                let url = api_url(&url, self.allow_insecure_http)?;
                Endpoint::Url(url, read_token(self.token_file.as_deref())?)
            }
        };
        let state = match self.state {
            Some(state) => state,
            None => {
                let journal = super::paths::default_journal()?;
                super::paths::journal_left_in_out(&plan.out, &journal)?;
                super::paths::create_state_dir(&journal)?;
                journal
            }
        };
        Ok(Settings {
            endpoint,
            state,
            rate: self.rate,
            burst: self.burst.max(1),
            dry_run: self.dry_run,
            reconcile: !self.no_reconcile,
            submit: SubmitSettings {
                batch_size: self.batch_size,
                concurrency: self.concurrency.max(1),
                escalate: !self.no_escalate,
                track_timeout: self.track_timeout,
                ..SubmitSettings::default()
            },
            request_timeout: self.request_timeout,
            plan,
        })
    }
}

/// Checks `--api-url`: http or https, no credentials in it (the token goes
/// in a header), and plain http only to loopback unless
/// `--allow-insecure-http`. Messages show the URL redacted.
fn api_url(text: &str, allow_insecure_http: bool) -> Result<String, UsageError> {
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| UsageError(format!("--api-url is not a URL ({e})")))?;
    let shown = redact_url(&url);
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UsageError(format!(
            "--api-url must start with http:// or https://, not `{shown}`"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UsageError(format!(
            "--api-url `{shown}` carries a user name or password: remove it; the API token goes in REFLEET_API_TOKEN or --token-file"
        )));
    }
    if url.scheme() == "http" && !allow_insecure_http && !is_loopback(&url) {
        return Err(UsageError(format!(
            "--api-url `{shown}` would send the API token in clear: use https://, or pass --allow-insecure-http on a network you trust"
        )));
    }
    Ok(url.into())
}

/// 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) or `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

/// How reports, the journal and logs name the API: the URL with its query
/// values masked, or `simulator`.
fn api_label(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| "(unreadable URL)".to_string(), |u| redact_url(&u))
}

/// The API token: `--token-file` (first line) or `REFLEET_API_TOKEN`.
fn read_token(file: Option<&std::path::Path>) -> Result<Token, UsageError> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--token-file {}: {e}", path.display())))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        None => std::env::var("REFLEET_API_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() {
        return Err(UsageError(
            "--api-url needs a token: set REFLEET_API_TOKEN or pass --token-file FILE".into(),
        ));
    }
    Ok(Token::new(token))
}

pub(super) fn run(args: Args, global: &Global) -> anyhow::Result<Outcome> {
    let new_journal = args.new_journal;
    let mut settings = args.resolve()?;
    let policy = Arc::new(global.load_policy()?);
    let started = Instant::now();
    let contracts = load_contracts(&settings.plan, &policy)?;
    // The journal first: a second run on it, a journal that cannot be
    // used and an audit log that is not the journal's are refused before
    // any work.
    let opened = if new_journal {
        Journal::open_afresh_if_unusable(&settings.state)
    } else {
        Journal::open(&settings.state).map(|j| (j, None))
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
        eprintln!(
            "refleet: --new-journal: the journal {} could not be used; it was moved to {} and a new journal started (every item is submitted again)",
            settings.state.display(),
            moved.display()
        );
    }
    let audit_dir = journal_dir(&settings.state);
    let binding = journal.audit_state().map_err(refused)?;
    audit::locate(&audit_dir, &binding).map_err(|e| {
        UsageError(format!(
            "journal {}: {e}. Nothing was sent",
            settings.state.display()
        ))
    })?;
    let mut audit_writer = AuditWriter::new(
        &audit_dir,
        &settings.state,
        contracts
            .by_id
            .iter()
            .map(|(id, c)| (id.to_string(), c.cancellation_days))
            .collect(),
    );
    let run_id = journal.begin_run(
        &settings.plan.input.display().to_string(),
        settings.plan.as_of,
    )?;
    if !global.quiet {
        let held = journal.counts()?.iter().map(|(_, n)| n).sum();
        eprintln!(
            "{}",
            super::paths::journal_line(&settings.state, run_id, held)
        );
    }

    // Plan: every verdict to the reports, eligible and manual-review items to the journal.
    let progress = Phases::for_terminal(global.quiet);
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
            &progress,
        )?;
        (Rows::Written(counts), planned)
    } else {
        let (spool, planned) = plan_into_journal(
            &journal,
            run_id,
            &mut settings.plan,
            (&policy, &contracts),
            escalate,
            &progress,
        )?;
        for q in &planned.plan.quotes {
            journal.set_quote(&q.contract_id, q.region.as_str(), &q.quote_id)?;
        }
        (Rows::Spooled(spool), planned)
    };
    progress.clear();
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
        let session = VendorSession::start(&settings, policy.clone(), global, &progress)?;
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
            Some(book) => session.reconcile(book, &settings.submit, &progress)?,
            None => session.reconcile(
                &mut JournalBook::new(&journal, run_id),
                &settings.submit,
                &progress,
            )?,
        };
        lookup_seconds = lookups_started.elapsed().as_secs_f64();
        report.seconds = lookup_seconds;
        report.requests = found.requests;
        if !global.quiet && found.looked_up > 0 {
            eprintln!(
                "looked up {} items at the vendor ({} requests): {} already held there, not paid again",
                found.looked_up,
                found.requests,
                found.held_total()
            );
        }
        if let Some(why) = found.unfinished.then(|| session.stop.reason()).flatten() {
            report.stopped_because = Some(why);
        }
        reconciled = Some(found);
    }
    let quoted_before = planned.totals.clone();
    let not_bought = match &in_memory {
        Some(book) => book.held_keys().clone(),
        None if read_only => Default::default(),
        None => journal.not_to_buy(run_id)?,
    };
    if !not_bought.is_empty() {
        progress.phase("quoting");
        planned = make_plan(
            &mut settings.plan,
            &policy,
            &contracts,
            &progress,
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
    if !global.quiet {
        eprint!("{}", summary_text(&settings.plan, &contracts, &planned));
    }

    // The budget guard comes before any request that pays.
    let budget_refused = !planned.over_budget.is_empty();
    if budget_refused {
        eprintln!(
            "refleet: budget exceeded, nothing was submitted: {}",
            planned.over_budget.join("; ")
        );
    } else if settings.dry_run {
        if !global.quiet {
            eprintln!(
                "dry run: nothing was sent; would buy {}, already bought by earlier runs {}, held by the vendor {}",
                split.to_buy, split.earlier_runs, split.vendor_held
            );
        }
    } else if let Some(session) = &session {
        if split.to_buy == 0 && !global.quiet {
            eprintln!(
                "nothing new to submit: {} items already done by earlier runs, {} held by the vendor (journal {})",
                split.earlier_runs,
                split.vendor_held,
                settings.state.display()
            );
        }
        // Its request count is the client's: the lookups are in it.
        let mut rep = session.submit(
            &journal,
            run_id,
            &settings.submit,
            &progress,
            &mut audit_writer,
        )?;
        rep.seconds += lookup_seconds;
        if rep.stopped_because.is_none() {
            rep.stopped_because = report.stopped_because.take();
        }
        report = rep;
    }
    drop(session);
    let not_bought_again = savings(&quoted_before, &planned.totals);

    // What the run settled and the audit log does not have yet (most of it
    // was written as the run went).
    progress.phase("audit log");
    let audit_started = Instant::now();
    audit_writer.catch_up(&journal)?;
    let audit_seconds = audit_started.elapsed().as_secs_f64();
    let audited = audit_writer
        .path()
        .map(|p| (audit_writer.appended(), p.to_path_buf()));
    progress.phase("reports");
    let results_started = Instant::now();
    if let (Rows::Written(counts), Some(book)) = (&mut rows, &in_memory) {
        if book.held_count() > 0 {
            patch_results(&out, counts, &|row| {
                book.held(row).map(|(record, contract_id)| HeldRow {
                    record,
                    contract_id,
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
        input: settings.plan.input.display().to_string(),
        as_of: settings.plan.as_of.to_string(),
        api: &api_label,
        journal: std::path::absolute(&settings.state)
            .unwrap_or_else(|_| settings.state.clone())
            .display()
            .to_string(),
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
    super::report::write_run_report(&out, &summary_json, &planned.plan.quotes, &journal)?;
    progress.clear();
    if !global.quiet {
        eprint!(
            "{}",
            final_text(
                &counts,
                &report,
                stopped_because.as_deref(),
                &settings,
                started
            )
        );
        if let Some((n, path)) = audited.filter(|(n, _)| *n > 0) {
            eprintln!("audit log: {n} new records in {}", path.display());
        }
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
mod tests;
