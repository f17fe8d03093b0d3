//! `refleet run`: validate → eligibility → quote → budget guard → submit →
//! track → reports (SPEC §1, §6, §7). Without `--api-url` it starts the
//! built-in simulator on loopback and says so.

//! This file parses and checks the arguments; the run itself is
//! `crate::app::run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::progress::Phases;
use super::quote::PlanArgs;
use super::{Global, Outcome, UsageError};
use crate::app::run::{Endpoint, Settings, Store};
use crate::submit::client::{redact_url, Token};
use crate::submit::SubmitSettings;

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
    /// submits an item twice. Its audit log is written beside it. Or a
    /// PostgreSQL ledger that several runners share,
    /// postgres://USER@HOST:PORT/DB (password from PGPASSWORD or
    /// ~/.pgpass; TLS with ?sslmode=verify-full), whose audit chain is in
    /// the database.
    #[arg(long, value_name = "FILE|URL", env = "REFLEET_STATE", hide_env_values = true,
          value_parser = super::paths::AnyStateParser)]
    state: Option<super::paths::State>,
    /// On a PostgreSQL ledger: how long a runner's claim on a batch lasts
    /// without renewal (2s to 10m). A runner renews its claims while it
    /// lives; when one dies, another takes its batches over this long after.
    #[arg(long, default_value = "30s", value_parser = parse_lease, env = "REFLEET_LEASE")]
    lease: Duration,
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

/// `--lease`: a duration from 2 s to 10 min.
fn parse_lease(s: &str) -> Result<Duration, String> {
    let lease = parse_duration(s)?;
    if !(Duration::from_secs(2)..=Duration::from_secs(600)).contains(&lease) {
        return Err(format!("`{s}`: a lease is from 2s to 10m"));
    }
    Ok(lease)
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
        let store = match self.state {
            Some(super::paths::State::Journal(path)) => Store::Journal(path),
            Some(super::paths::State::Ledger(url)) => {
                if self.new_journal {
                    return Err(UsageError(
                        "--new-journal is for a SQLite journal: a PostgreSQL ledger is never set aside by refleet".into(),
                    ));
                }
                Store::Ledger {
                    url,
                    lease: self.lease,
                }
            }
            None => {
                let journal = super::paths::default_journal()?;
                super::paths::journal_left_in_out(&plan.out, &journal)?;
                super::paths::create_state_dir(&journal)?;
                Store::Journal(journal)
            }
        };
        Ok(Settings {
            endpoint,
            store,
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
            new_journal: self.new_journal,
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
    let settings = args.resolve()?;
    let policy = Arc::new(global.load_policy()?);
    let progress = Phases::for_terminal(global.quiet);
    crate::app::run::run(settings, policy, &progress)
}

#[cfg(test)]
mod tests;
