//! `refleet sim`: serve the vendor API simulator (SPEC §8) until Ctrl-C.
//! The flags resolve into a [`SimConfig`]; every fault is off unless asked.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::{Global, Outcome, UsageError};
use crate::sim::{RateLimit, Sim, SimConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// The only bearer token accepted (default: any non-empty token).
    /// Unsafe on a shared machine: other users see it in `ps`; prefer
    /// REFLEET_SIM_TOKEN or --token-file.
    #[arg(
        long,
        env = "REFLEET_SIM_TOKEN",
        hide_env_values = true,
        value_name = "T"
    )]
    token: Option<String>,
    /// A file whose first line is the only bearer token accepted (wins over
    /// --token and REFLEET_SIM_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Real milliseconds one simulated calendar day lasts.
    #[arg(long, default_value_t = 50, value_name = "N")]
    business_day_ms: u64,
    /// Share of items the vendor finds ineligible, 0..=1.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    reject_rate: f64,
    /// Share of accepted items whose provisioning fails, 0..=1.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    fail_rate: f64,
    /// Server-side rate limit: requests per second, e.g. 50 or 50/s or 600/m.
    #[arg(long, value_name = "R[/s]")]
    rate_limit: Option<String>,
    /// Requests allowed at once above the rate (default: one second's worth).
    #[arg(long, value_name = "B", requires = "rate_limit")]
    burst: Option<u32>,
    /// Added latency per request, uniform in MIN..MAX milliseconds (or one value).
    #[arg(long, value_name = "MIN..MAX")]
    latency_ms: Option<String>,
    /// Share of requests answered 500/503 without doing anything, 0..=1.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    error_rate: f64,
    /// Share of requests processed, then cut off mid-response, 0..=1.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    reset_rate: f64,
    /// Share of requests processed, then held for --timeout-ms, 0..=1.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    timeout_rate: f64,
    /// How long a held request hangs before it is answered.
    #[arg(long, default_value_t = 30_000, value_name = "N")]
    timeout_ms: u64,
    /// Seed for reproducible faults and per-item verdicts.
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
    /// Items "reactivated by hand" in the vendor's portal: a CSV with a
    /// `serial_number` or `license_id` column (optionally `contract_id`,
    /// `activated_at`). `POST /v1/items/lookup` finds them active.
    #[arg(long, value_name = "FILE")]
    preactivated: Option<std::path::PathBuf>,
}

impl Args {
    fn resolve(self) -> Result<SimConfig, UsageError> {
        for (flag, rate) in [
            ("--reject-rate", self.reject_rate),
            ("--fail-rate", self.fail_rate),
            ("--error-rate", self.error_rate),
            ("--reset-rate", self.reset_rate),
            ("--timeout-rate", self.timeout_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(UsageError(format!(
                    "{flag} must be a share between 0 and 1, not {rate}"
                )));
            }
        }
        if self.business_day_ms == 0 {
            return Err(UsageError("--business-day-ms must be at least 1".into()));
        }
        let rate_limit = self
            .rate_limit
            .as_deref()
            .map(|r| {
                let per_second = parse_rate(r)?;
                let burst = self.burst.unwrap_or(per_second.ceil() as u32).max(1);
                if self.burst == Some(0) {
                    return Err(UsageError("--burst must be at least 1".into()));
                }
                Ok(RateLimit { per_second, burst })
            })
            .transpose()?;
        let latency_ms = self.latency_ms.as_deref().map(parse_range).transpose()?;
        let preactivated = match &self.preactivated {
            Some(path) => crate::sim::load_preactivated(path, chrono::Utc::now())
                .map_err(|e| UsageError(format!("--preactivated {e}")))?,
            None => Vec::new(),
        };
        let token = match &self.token_file {
            Some(path) => Some(read_token_file(path)?),
            None => self.token.filter(|t| !t.is_empty()),
        };
        Ok(SimConfig {
            listen: self.listen,
            token,
            business_day_ms: self.business_day_ms,
            reject_rate: self.reject_rate,
            fail_rate: self.fail_rate,
            rate_limit,
            latency_ms,
            error_rate: self.error_rate,
            reset_rate: self.reset_rate,
            timeout_rate: self.timeout_rate,
            timeout_ms: self.timeout_ms,
            seed: self.seed,
            preactivated,
            ..SimConfig::default()
        })
    }
}

/// The first line of `--token-file`, trimmed; an empty one is an error (it
/// would silently accept any token).
fn read_token_file(path: &Path) -> Result<String, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("--token-file {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(UsageError(format!(
            "--token-file {}: the first line is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// Whether `--token` was typed on the command line (where `ps` shows it),
/// rather than set through REFLEET_SIM_TOKEN.
fn token_on_command_line(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .filter_map(|a| a.to_str())
        .any(|a| a == "--token" || a.starts_with("--token="))
}

/// `50`, `50/s` or `600/m` → requests per second.
fn parse_rate(s: &str) -> Result<f64, UsageError> {
    let (n, per) = s.split_once('/').unwrap_or((s, "s"));
    let seconds = match per.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        other => {
            return Err(UsageError(format!(
                "--rate-limit: unknown period `{other}` (use /s or /m)"
            )))
        }
    };
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| UsageError(format!("--rate-limit: `{s}` is not a rate like 50 or 50/s")))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(UsageError(format!(
            "--rate-limit must be positive, not `{s}`"
        )));
    }
    Ok(n / seconds)
}

/// `MIN..MAX` (or `N`) milliseconds.
fn parse_range(s: &str) -> Result<(u64, u64), UsageError> {
    let bad = || UsageError(format!("--latency-ms: `{s}` is not MIN..MAX milliseconds"));
    let (lo, hi) = s.split_once("..").unwrap_or((s, s));
    let lo: u64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u64 = hi
        .trim()
        .trim_start_matches('=')
        .parse()
        .map_err(|_| bad())?;
    if lo > hi {
        return Err(UsageError(format!(
            "--latency-ms: MIN ({lo}) is greater than MAX ({hi})"
        )));
    }
    Ok((lo, hi))
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<Outcome> {
    if token_on_command_line(&std::env::args_os().collect::<Vec<_>>()) {
        eprintln!(
            "refleet sim: warning: --token is visible to every user of this machine (ps, /proc); set REFLEET_SIM_TOKEN or pass --token-file FILE instead"
        );
    }
    let config = args.resolve()?;
    let policy = Arc::new(global.load_policy()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listen = config.listen;
        let sim = Sim::start(config, policy)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        // A closed stdout must not stop the server (println! would panic).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "refleet sim: SIMULATED vendor API (nothing is really activated) listening on {} (OpenAPI at {}/openapi.json); Ctrl-C stops it",
            sim.url(),
            sim.url()
        );
        let _ = out.flush();
        drop(out);
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        sim.stop().await;
        Ok(Outcome::Success)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ranges_parse() {
        assert_eq!(parse_rate("50").unwrap(), 50.0);
        assert_eq!(parse_rate("50/s").unwrap(), 50.0);
        assert_eq!(parse_rate("600/m").unwrap(), 10.0);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5/h").is_err());
        assert_eq!(parse_range("5..20").unwrap(), (5, 20));
        assert_eq!(parse_range("5..=20").unwrap(), (5, 20));
        assert_eq!(parse_range("7").unwrap(), (7, 7));
        assert!(parse_range("20..5").is_err());
        assert!(parse_range("a..b").is_err());
    }

    #[test]
    fn only_a_typed_token_is_flagged() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(token_on_command_line(&args(&[
            "refleet", "sim", "--token", "x"
        ])));
        assert!(token_on_command_line(&args(&[
            "refleet",
            "sim",
            "--token=x"
        ])));
        assert!(!token_on_command_line(&args(&[
            "refleet",
            "sim",
            "--token-file",
            "f"
        ])));
        assert!(!token_on_command_line(&args(&[
            "refleet", "sim", "--", "--token"
        ])));
    }
}
