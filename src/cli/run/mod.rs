//! `refleet run`: validate → eligibility → quote → budget guard → submit →
//! track → reports (SPEC §1, §6, §7). Without `--api-url` it starts the
//! built-in simulator on loopback and says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::progress::Phases;
use super::quote::{load_contracts, make_plan, summary_text, PlanArgs, PlanSettings, Planned};
use super::{Global, Outcome, UsageError};
use crate::api::{CoverageWire, ItemType};
use crate::audit;
use crate::contracts::Contracts;
use crate::domain::{Coverage, Item, ItemKind};
use crate::policy::Policy;
use crate::quote::CurrencyTotal;
use crate::report::{
    trail::AuditWriter, write_results, AtomicFile, PlannedKind, ResultCounts, RowSpool,
    UnknownItems, UnknownResults,
};
use crate::sim::{Sim, SimConfig};
use crate::submit::client::{redact_url, ApiClient, ClientConfig, Token};
use crate::submit::journal::RunSplit;
use crate::submit::journal::{ItemState, Journal, JournalError, PlannedItem};
use crate::submit::reconcile::{reconcile, Reconciled};
use crate::submit::retry::RetryPolicy;
use crate::submit::{
    submit_and_track, AfterRound, Stop, SubmitError, SubmitReport, SubmitSettings, Vendor,
};

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

/// `summary.json`: stable keys for monitoring (SPEC §7).
#[derive(Serialize)]
struct Summary<'a> {
    refleet_version: &'static str,
    run_id: i64,
    input: String,
    as_of: String,
    api: &'a str,
    /// The journal this run used (absolute path).
    journal: String,
    dry_run: bool,
    /// Whether failed and manual-review items get a support case: with it
    /// on, such an item is not finished until its case is open.
    escalate: bool,
    outcome: &'a str,
    exit_code: i32,
    stopped_because: Option<String>,
    rows: u64,
    valid_rows: u64,
    rejected_rows: u64,
    eligible: u64,
    ineligible: u64,
    items_by_state: &'a BTreeMap<String, u64>,
    reasons: &'a BTreeMap<String, u64>,
    by_region: &'a BTreeMap<String, BTreeMap<String, u64>>,
    by_contract: &'a BTreeMap<String, BTreeMap<String, u64>>,
    /// What this run buys: items already bought by earlier runs of the
    /// journal, or held by the vendor, are not in it.
    quotes: &'a BTreeMap<String, CurrencyTotal>,
    /// This run's eligible items by who buys them.
    items: RunSplit,
    /// The lookups before paying (absent with `--no-reconcile`).
    vendor_lookups: Option<VendorLookups>,
    /// By currency: what the items not bought again (held by earlier runs
    /// or the vendor) would have cost in this run's quotes.
    not_bought_again: BTreeMap<String, String>,
    budget: BTreeMap<String, String>,
    over_budget: &'a [String],
    requests: Requests,
    timings: Timings,
}

#[derive(Serialize)]
struct VendorLookups {
    looked_up: u64,
    /// Held by the vendor for this deactivation, by the vendor's state.
    held: BTreeMap<&'static str, u64>,
    requests: u64,
    finished: bool,
}

/// By currency, `before` minus `after`, for the currencies where it is not zero.
fn savings(
    before: &BTreeMap<String, CurrencyTotal>,
    after: &BTreeMap<String, CurrencyTotal>,
) -> BTreeMap<String, String> {
    before
        .iter()
        .filter_map(|(cur, b)| {
            let a = after
                .get(cur)
                .map_or(rust_decimal::Decimal::ZERO, |a| a.total);
            let d = b.total.checked_sub(a)?;
            (!d.is_zero()).then(|| (cur.clone(), d.to_string()))
        })
        .collect()
}

#[derive(Serialize)]
struct Requests {
    sent: u64,
    throttled: u64,
    configured_rate: f64,
    achieved_rate: f64,
}

#[derive(Serialize)]
struct Timings {
    /// Validate, decide, quote, write the plan into the journal, and the
    /// vendor lookups (which are also in `lookup_seconds`).
    plan_seconds: f64,
    lookup_seconds: f64,
    /// Submission and tracking, lookups included (the requests' window).
    submit_seconds: f64,
    audit_seconds: f64,
    /// `results.csv` (and the Parquet copies).
    results_seconds: f64,
    total_seconds: f64,
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
    // A dry run that looks nothing up changes nothing in its journal; when
    // that journal holds no item either, it has nothing to add to
    // `results.csv`, which is then written as the plan goes.
    let unknown_only = settings.dry_run && !settings.reconcile && !journal.holds_items()?;
    let (rows, mut planned) = if unknown_only {
        let mut results = UnknownResults::create(&out, UnknownItems { escalate })?;
        let planned = make_plan(
            &mut settings.plan,
            &policy,
            &contracts,
            &progress,
            Some(&mut results),
            None,
        )?;
        (Rows::Written(results.commit()?), planned)
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
        let found = session.reconcile(&journal, run_id, &settings.submit, &progress)?;
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
    let not_bought = journal.not_to_buy(run_id)?;
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
        for q in &planned.plan.quotes {
            journal.set_quote(&q.contract_id, q.region.as_str(), &q.quote_id)?;
        }
    }
    let split = if unknown_only {
        RunSplit {
            to_buy: planned.plan.eligible,
            earlier_runs: 0,
            vendor_held: 0,
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

/// How a run ended, as `summary.json` and the exit code say it (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Finished,
    FinishedWithFailures,
    /// Some item is not in a terminal state: run again to resume.
    Stopped,
    BudgetExceeded,
    DryRun,
    /// A request task crashed: exit 1, after the reports are written.
    Aborted,
}

impl Ending {
    fn name(self) -> &'static str {
        match self {
            Ending::Finished => "finished",
            Ending::FinishedWithFailures => "finished_with_failures",
            Ending::Stopped => "stopped_resumable",
            Ending::BudgetExceeded => "budget_exceeded",
            Ending::DryRun => "dry_run",
            Ending::Aborted => "aborted",
        }
    }

    /// The exit code of a run that returns `Ok`, or `None` for a failure.
    fn outcome(self) -> Option<Outcome> {
        match self {
            Ending::Finished | Ending::DryRun => Some(Outcome::Success),
            Ending::FinishedWithFailures | Ending::BudgetExceeded => Some(Outcome::Partial),
            Ending::Stopped => Some(Outcome::Interrupted),
            Ending::Aborted => None,
        }
    }

    fn exit_code(self) -> i32 {
        self.outcome().map_or(1, Outcome::exit_code)
    }
}

/// Journal items not in a terminal state (SPEC §6): planned, submitted,
/// accepted, provisioning; and, when cases are opened, failed and
/// manual-review items whose case is not open yet.
fn unfinished_items(counts: &[(ItemState, u64)], escalate: bool) -> Vec<(ItemState, u64)> {
    counts
        .iter()
        .copied()
        .filter(|(state, n)| {
            *n > 0
                && match state {
                    ItemState::Planned
                    | ItemState::Submitted
                    | ItemState::Accepted
                    | ItemState::Provisioning => true,
                    ItemState::Failed | ItemState::ManualReview => escalate,
                    ItemState::Active | ItemState::Rejected | ItemState::Escalated => false,
                }
        })
        .collect()
}

fn unfinished_text(unfinished: &[(ItemState, u64)]) -> String {
    let total: u64 = unfinished.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = unfinished
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    format!("{total} items not finished ({})", parts.join(", "))
}

/// The run's ending, from the items' states in the journal, never from how
/// the submission returned: any item not terminal means "stopped".
fn ending(
    report: &SubmitReport,
    unfinished: &[(ItemState, u64)],
    failed_or_rejected: u64,
    budget_refused: bool,
    dry_run: bool,
) -> Ending {
    if report.aborted.is_some() {
        Ending::Aborted
    } else if budget_refused {
        Ending::BudgetExceeded
    } else if dry_run {
        Ending::DryRun
    } else if !unfinished.is_empty() {
        Ending::Stopped
    } else if failed_or_rejected > 0 {
        Ending::FinishedWithFailures
    } else {
        Ending::Finished
    }
}

/// Everything that talks to the vendor: the async runtime, the built-in
/// simulator when there is no `--api-url` (its state kept in
/// `JOURNAL.sim.jsonl` beside the journal, so a resumed run meets the
/// simulator that took its requests), the client, and the stop that
/// SIGINT, SIGTERM and SIGHUP trigger.
struct VendorSession {
    label: String,
    client: Arc<ApiClient>,
    stop: Stop,
    /// Dropped before the runtime.
    _sim: Option<Sim>,
    runtime: tokio::runtime::Runtime,
}

impl VendorSession {
    fn start(
        settings: &Settings,
        policy: Arc<crate::policy::Policy>,
        global: &Global,
        progress: &Phases,
    ) -> anyhow::Result<VendorSession> {
        // The cores the run was given (`--threads`, 0 = one per core).
        let cores = match settings.plan.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (label, base_url, token, sim) = runtime.block_on(async {
            anyhow::Ok(match &settings.endpoint {
                Endpoint::Url(url, token) => (api_label(url), url.clone(), token.clone(), None),
                Endpoint::Simulator => {
                    let token = format!("sim-{:016x}", fastrand::u64(..));
                    let mut state_file = settings.state.clone().into_os_string();
                    state_file.push(".sim.jsonl");
                    let sim = Sim::start(
                        SimConfig {
                            token: Some(token.clone()),
                            state_file: Some(PathBuf::from(state_file)),
                            ..SimConfig::default()
                        },
                        policy,
                    )
                    .await
                    .context("cannot start the built-in simulator")?;
                    if !global.quiet {
                        eprintln!(
                            "no --api-url: using the built-in simulator on {} (a simulation: nothing leaves this machine)",
                            sim.url()
                        );
                    }
                    ("simulator".to_string(), sim.url(), Token::new(token), Some(sim))
                }
            })
        })?;
        let client = Arc::new(ApiClient::new(ClientConfig {
            base_url,
            token,
            rate: settings.rate,
            burst: settings.burst,
            timeout: settings.request_timeout,
            retry: RetryPolicy::default(),
        })?);
        let stop = Stop::new();
        runtime.block_on(async { stop_on_signals(&stop) })?;
        runtime.spawn(progress.watch(stop.clone()));
        Ok(VendorSession {
            label,
            client,
            stop,
            _sim: sim,
            runtime,
        })
    }

    /// Looks up every planned item before any is paid (see
    /// `submit::reconcile`).
    fn reconcile(
        &self,
        journal: &Journal,
        run_id: i64,
        settings: &SubmitSettings,
        progress: &Phases,
    ) -> anyhow::Result<Reconciled> {
        let found = self
            .runtime
            .block_on(reconcile(
                journal,
                &self.client,
                run_id,
                settings,
                &self.stop,
                progress,
            ))
            .map_err(submit_error);
        progress.clear();
        found
    }

    /// Submits and tracks until done, stopped by a signal, or out of time.
    fn submit(
        &self,
        journal: &Journal,
        run_id: i64,
        settings: &SubmitSettings,
        progress: &Phases,
        after_round: &mut dyn AfterRound,
    ) -> anyhow::Result<SubmitReport> {
        progress.begin_submission(&journal.counts()?, self.client.sent());
        let report = self.runtime.block_on(submit_and_track(
            journal,
            self.client.clone(),
            run_id,
            settings,
            &self.stop,
            progress,
            after_round,
        ));
        progress.clear();
        report.map_err(submit_error)
    }
}

fn submit_error(e: SubmitError) -> anyhow::Error {
    match e {
        SubmitError::Unauthorized { .. } | SubmitError::NoLookup { .. } => {
            UsageError(e.to_string()).into()
        }
        e => anyhow::Error::new(e),
    }
}

/// The folder of the journal, where its audit log lives.
fn journal_dir(state: &std::path::Path) -> PathBuf {
    state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf()
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (what schedulers, systemd and
/// Kubernetes send) all stop a run the same way: nothing more is sent, what
/// came back is recorded, the reports are written, and the exit code is 4.
fn stop_on_signals(stop: &Stop) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT (Ctrl-C)"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ] {
            let mut signals = signal(kind).with_context(|| format!("cannot listen for {name}"))?;
            let stop = stop.clone();
            tokio::spawn(async move {
                if signals.recv().await.is_some() {
                    tracing::warn!("{name} received: stopping");
                    stop.trigger(format!("stopped by {name}"));
                }
            });
        }
    }
    #[cfg(not(unix))]
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.trigger("stopped by Ctrl-C");
            }
        });
    }
    Ok(())
}

/// `results.csv`'s rows: spooled, to be joined with the journal at the
/// end, or already written.
enum Rows {
    Spooled(tempfile::NamedTempFile),
    Written(ResultCounts),
}

/// Makes the plan, puts its eligible and manual-review items into the
/// journal (one transaction), and spools every row for `results.csv`.
fn plan_into_journal(
    journal: &Journal,
    run_id: i64,
    plan: &mut PlanSettings,
    (policy, contracts): (&Policy, &Contracts),
    escalate: bool,
    progress: &Phases,
) -> anyhow::Result<(tempfile::NamedTempFile, Planned)> {
    journal.atomically(|| -> anyhow::Result<_> {
        let on_planned = move |item: &Item,
                               event: &str,
                               _: &crate::eligibility::Verdict,
                               kind: PlannedKind|
              -> anyhow::Result<()> {
            let state = match kind {
                PlannedKind::Eligible => ItemState::Planned,
                PlannedKind::ManualReview if escalate => ItemState::ManualReview,
                PlannedKind::ManualReview => return Ok(()),
            };
            journal.plan_item(&planned_item(item, event, contracts), state, run_id)?;
            Ok(())
        };
        let mut spool = RowSpool::create(&plan.out, Box::new(on_planned))?;
        let planned = make_plan(plan, policy, contracts, progress, Some(&mut spool), None)?;
        Ok((spool.finish()?, planned))
    })
}

/// What the journal needs to rebuild an item's request.
fn planned_item(item: &Item, event: &str, contracts: &Contracts) -> PlannedItem {
    let coverage = match contracts.by_id.get(&item.contract_id).map(|c| c.coverage) {
        Some(Coverage::Extended) => CoverageWire::Extended,
        _ => CoverageWire::Standard,
    };
    PlannedItem {
        event_key: event.to_string(),
        item_type: match item.kind {
            ItemKind::License => ItemType::License,
            ItemKind::Device => ItemType::Device,
        },
        serial_number: item.serial.map(|s| s.to_string()),
        mac_address: item.mac.map(|m| m.to_string()),
        model: (!item.model_text.is_empty()).then(|| item.model_text.to_string()),
        license_id: item.license_id.map(|l| l.to_string()),
        bound_serial: item.bound_serial.map(|s| s.to_string()),
        contract_id: item.contract_id.to_string(),
        region: item.region.as_str().to_string(),
        country: item.country.as_str().to_string(),
        deactivated_at: item.deactivated_at.to_string(),
        coverage,
    }
}

fn final_text(
    counts: &ResultCounts,
    report: &SubmitReport,
    stopped_because: Option<&str>,
    settings: &Settings,
    started: Instant,
) -> String {
    let mut text = String::from("results:");
    for (state, n) in &counts.by_state {
        if *n > 0 {
            text.push_str(&format!(" {state} {n},"));
        }
    }
    text.pop();
    text.push('\n');
    if report.requests > 0 {
        text.push_str(&format!(
            "{} requests in {:.1} s ({:.1}/s of {}/s allowed), {} throttled\n",
            report.requests,
            report.seconds,
            report.requests as f64 / report.seconds.max(0.001),
            settings.rate,
            report.throttled
        ));
    }
    if let Some(why) = stopped_because {
        text.push_str(&format!(
            "stopped before finishing: {why}; run the same command again to resume (journal {})\n",
            settings.state.display()
        ));
    }
    text.push_str(&format!(
        "{:.2} s; reports in {}: report.html, results.csv, summary.json, eligibility.csv, quotes.csv, quotes.json, rejects.csv\n",
        started.elapsed().as_secs_f64(),
        settings.plan.out.display()
    ));
    text
}

#[cfg(test)]
mod tests;
