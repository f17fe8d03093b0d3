//! The HTTP client of the vendor API, layered as STYLE §9 asks: one rate
//! limiter that every request passes (submissions, polls and cases alike),
//! then the retry policy, then a timeout per attempt. Concurrency is bounded
//! by the caller ([`super::submit_and_track`]).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;

use super::retry::{
    classify_status, parse_retry_after, Class, RetryBudget, RetryPolicy, RETRY_AFTER_CAP,
    RETRY_COST, TIMEOUT_RETRY_COST,
};
use super::stop::Stop;
use crate::api;

/// A secret that never prints: `Debug` and `Display` show `***`.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Token {
        Token(s.into())
    }
    fn header(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The request rate the run may use: GCRA at `rate` per second with `burst`,
/// lowered after a 429 and raised back step by step after successes, with a
/// global pause for the server's `Retry-After`.
pub struct Limiter {
    max_rate: f64,
    min_rate: f64,
    burst: NonZeroU32,
    state: Mutex<LimiterState>,
}

struct LimiterState {
    rate: f64,
    limiter: Arc<DefaultDirectRateLimiter>,
    pause_until: Option<Instant>,
    successes: u32,
    /// The rate that last drew a 429: probing stays below it for a while.
    ceiling: Option<f64>,
}

/// Successes at a lowered rate before it is raised one step.
const PROBE_AFTER: u32 = 20;
/// Successes just under the last throttled rate before probing above it.
const PROBE_CEILING_AFTER: u32 = 10 * PROBE_AFTER;

/// The limiter paces at 99 % of the rate it is given: on the way to the
/// server, scheduling and network jitter can bunch requests together, never
/// spread them out, so a client at exactly the server's rate would now and
/// then look faster than it and draw 429s.
pub const PACING: f64 = 0.99;

/// The share of the burst the limiter keeps in hand, for the same reason:
/// a client that may send the server's whole burst at once sends one a
/// server sees as larger whenever the requests before it were delayed on
/// the way, and each 429 pauses every request for its `Retry-After`.
pub const BURST_HEADROOM: f64 = 0.1;

/// The burst the limiter allows for a configured `burst`: 10 % less,
/// rounded down, at least 1.
pub fn paced_burst(burst: u32) -> NonZeroU32 {
    let kept = (f64::from(burst) * (1.0 - BURST_HEADROOM)).floor();
    // `kept` lies in [0, u32::MAX]: the conversion cannot saturate.
    NonZeroU32::new(kept as u32).unwrap_or(NonZeroU32::MIN)
}

fn gcra(rate: f64, burst: NonZeroU32) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / (rate * PACING).max(0.001));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    Arc::new(RateLimiter::direct(quota))
}

impl Limiter {
    pub fn new(rate: f64, burst: u32) -> Limiter {
        let burst = paced_burst(burst);
        Limiter {
            max_rate: rate,
            min_rate: (rate / 16.0).max(0.1).min(rate),
            burst,
            state: Mutex::new(LimiterState {
                rate,
                limiter: gcra(rate, burst),
                pause_until: None,
                successes: 0,
                ceiling: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request may leave. Each call consumes one cell.
    pub async fn acquire(&self) {
        loop {
            let (limiter, pause) = {
                let s = self.lock();
                (s.limiter.clone(), s.pause_until)
            };
            if let Some(until) = pause.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            limiter.until_ready().await;
            // A 429 may have paused everyone while this one waited for its
            // cell: then wait out the pause and queue for a fresh cell, so
            // the waiters leave at the (lowered) rate, not all at once.
            let paused = self.lock().pause_until.is_some_and(|u| u > Instant::now());
            if !paused {
                return;
            }
        }
    }

    /// A 429: pause every request for `retry_after` (1 s if the server did
    /// not say) and halve the rate, with no burst until it is back to the
    /// configured rate. The other 429s of the same burst arrive while the
    /// pause holds: they extend it but do not halve the rate again.
    /// The pause is never longer than [`RETRY_AFTER_CAP`], whatever it is given.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let mut s = self.lock();
        let now = Instant::now();
        let already_paused = s.pause_until.is_some_and(|p| p > now);
        let wait = retry_after
            .unwrap_or(Duration::from_secs(1))
            .min(RETRY_AFTER_CAP);
        let until = now.checked_add(wait).unwrap_or(now);
        s.pause_until = Some(s.pause_until.map_or(until, |p| p.max(until)));
        if !already_paused {
            s.ceiling = Some(s.rate);
            s.rate = (s.rate / 2.0).max(self.min_rate);
            s.limiter = gcra(s.rate, NonZeroU32::MIN);
            s.successes = 0;
        }
    }

    /// A success: after [`PROBE_AFTER`] of them at a lowered rate, raise it
    /// by a quarter, but to no more than 90 % of the rate that last drew a
    /// 429 until [`PROBE_CEILING_AFTER`] successes say the server has room
    /// (additive probing near the limit, multiplicative back-off above it).
    /// Never above the configured rate, where the burst is allowed again.
    pub fn succeeded(&self) {
        let mut s = self.lock();
        if s.rate >= self.max_rate {
            return;
        }
        s.successes += 1;
        let mut next = s.rate * 1.25;
        if let Some(ceiling) = s.ceiling {
            if s.successes >= PROBE_CEILING_AFTER {
                s.ceiling = None;
            } else {
                next = next.min(ceiling * 0.9);
                if next <= s.rate {
                    return;
                }
            }
        }
        if s.successes >= PROBE_AFTER {
            s.rate = next.min(self.max_rate);
            let burst = if s.rate >= self.max_rate {
                self.burst
            } else {
                NonZeroU32::MIN
            };
            s.limiter = gcra(s.rate, burst);
            s.successes = 0;
        }
    }

    pub fn current_rate(&self) -> f64 {
        self.lock().rate
    }

    /// How long requests are paused from now (zero when they are not).
    pub fn paused_for(&self) -> Duration {
        self.lock().pause_until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        })
    }
}

/// A vendor quota shared with other runners (a shared ledger's): every
/// request takes one from it after the client's own limiter, and a `429`
/// any runner draws pauses it for all of them.
pub trait SharedQuota: Send + Sync {
    /// Takes one request: `Ok(None)` when taken, else how long to wait
    /// before asking again.
    fn take(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Option<Duration>, String>> + Send + '_>,
    >;
    /// No runner takes from the quota for `pause`.
    fn pause(
        &self,
        pause: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

/// How long a request waits before asking a quota that failed to answer
/// (the ledger is away) again.
const QUOTA_RETRY: Duration = Duration::from_millis(500);

/// One HTTP exchange, for the journal's audit trail.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it was sent.
    pub at: chrono::DateTime<chrono::Utc>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub millis: u64,
}

/// Why a call ended without a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The server answered for good (a 4xx that is not retried).
    #[error("HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    /// Every attempt, or the retry budget, was spent without an answer.
    #[error("no answer after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    /// The run was stopped (signal or tracking time-out) before an answer.
    #[error("stopped before an answer came")]
    Stopped,
}

/// An answer and the attempts it took.
pub struct Call<T> {
    pub result: Result<T, CallError>,
    pub attempts: Vec<Attempt>,
}

pub struct ClientConfig {
    pub base_url: String,
    pub token: Token,
    pub rate: f64,
    pub burst: u32,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// The vendor API client. Cheap to share behind an `Arc`.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Token,
    timeout: Duration,
    retry: RetryPolicy,
    pub limiter: Limiter,
    pub budget: RetryBudget,
    /// Every attempt sent, and those answered 429.
    pub sent: AtomicU64,
    pub throttled: AtomicU64,
    reach: Reach,
    /// The quota shared with the other runners of a shared ledger.
    shared: Option<Box<dyn SharedQuota>>,
}

/// An attempt's error when it could not connect: nothing reached the server.
pub const NOT_CONNECTED: &str = "cannot connect";

/// Attempts in a row that could not connect, with no answer ever, after
/// which the API is taken for unreachable (a wrong URL, a closed port, a
/// firewall): the run stops at once instead of retrying until its
/// time-out.
pub const UNREACHABLE_AFTER: u32 = 5;

/// Whether the API has ever answered, and the connection failures in a row.
#[derive(Default)]
struct Reach {
    answered: std::sync::atomic::AtomicBool,
    failed_in_a_row: std::sync::atomic::AtomicU32,
    /// Why it is unreachable, once it is taken for that.
    unreachable: std::sync::Mutex<Option<String>>,
}

/// Makes rustls' ring provider the process's default, which reqwest's
/// clients take their TLS from (built without a provider of its own: see
/// Cargo.toml). Call it before building a `reqwest::Client`; calling it
/// again, or after another provider was installed, changes nothing.
pub fn install_tls_provider() {
    // An error only says that a default is there already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ApiClient {
    pub fn new(config: ClientConfig) -> anyhow::Result<ApiClient> {
        install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(ApiClient {
            http,
            base: config.base_url.trim_end_matches('/').to_string(),
            token: config.token,
            timeout: config.timeout,
            retry: config.retry,
            limiter: Limiter::new(config.rate, config.burst),
            budget: RetryBudget::default(),
            sent: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            reach: Reach::default(),
            shared: None,
        })
    }

    /// Makes every request take from `quota` too (see [`SharedQuota`]).
    pub fn share_quota(mut self, quota: Box<dyn SharedQuota>) -> ApiClient {
        self.shared = Some(quota);
        self
    }

    /// Waits until a request may leave: the client's own limiter, then the
    /// shared quota when there is one.
    async fn acquire(&self) {
        self.limiter.acquire().await;
        let Some(quota) = &self.shared else { return };
        let mut said = false;
        loop {
            match quota.take().await {
                Ok(None) => return,
                Ok(Some(wait)) => tokio::time::sleep(wait).await,
                Err(why) => {
                    if !std::mem::replace(&mut said, true) {
                        tracing::warn!(error = %why, "the shared vendor quota did not answer; asking again until it does");
                    }
                    tokio::time::sleep(QUOTA_RETRY).await;
                }
            }
        }
    }

    /// Why the API is unreachable: [`UNREACHABLE_AFTER`] attempts in a row
    /// could not connect and none ever got an answer. The stop of the call
    /// that found it was triggered with the same text.
    pub fn unreachable(&self) -> Option<String> {
        self.reach
            .unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Keeps count of connection failures; returns why the API is
    /// unreachable when this failure makes it so.
    fn could_not_connect(&self, e: &reqwest::Error) -> Option<String> {
        if self.reach.answered.load(Ordering::Relaxed) {
            return None;
        }
        let n = self.reach.failed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if n < UNREACHABLE_AFTER {
            return None;
        }
        let why = format!(
            "cannot reach the API at {}: {} (no answer to {n} attempts in a row); check --api-url and the network",
            label_of(&self.base),
            root_cause(e)
        );
        let mut slot = self
            .reach
            .unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(slot.get_or_insert(why).clone())
    }

    pub async fn submit(
        &self,
        idempotency_key: &str,
        body: &api::ReactivationRequest,
        stop: &Stop,
    ) -> Call<api::ReactivationAccepted> {
        self.call(
            Method::POST,
            "/v1/reactivations",
            Some(idempotency_key),
            Some(body),
            stop,
        )
        .await
    }

    pub async fn status(&self, request_id: &str, stop: &Stop) -> Call<api::ReactivationStatus> {
        let path = format!("/v1/reactivations/{request_id}");
        self.call::<(), _>(Method::GET, &path, None, None, stop)
            .await
    }

    /// The vendor's latest record of up to [`api::MAX_LOOKUP`] items
    /// (read-only, so no idempotency key).
    pub async fn lookup(&self, body: &api::LookupRequest, stop: &Stop) -> Call<api::LookupAnswer> {
        self.call(Method::POST, "/v1/items/lookup", None, Some(body), stop)
            .await
    }

    pub async fn open_case(
        &self,
        idempotency_key: &str,
        body: &api::CaseRequest,
        stop: &Stop,
    ) -> Call<api::Case> {
        self.call(
            Method::POST,
            "/v1/cases",
            Some(idempotency_key),
            Some(body),
            stop,
        )
        .await
    }

    /// One call: limiter, attempt, retries. Every wait in it (the limiter,
    /// the request in flight, the backoff) ends at once when `stop` comes;
    /// the call then ends [`CallError::Stopped`], its attempts kept.
    async fn call<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<&B>,
        stop: &Stop,
    ) -> Call<T> {
        let mut attempts = Vec::new();
        let body = match body.map(serde_json::to_vec).transpose() {
            Ok(b) => b,
            Err(e) => {
                return Call {
                    result: Err(CallError::Refused {
                        status: 0,
                        message: format!("cannot encode the request: {e}"),
                    }),
                    attempts,
                }
            }
        };
        let url = endpoint(&self.base, path);
        let mut rng = fastrand::Rng::new();
        let stopped = |attempts| Call {
            result: Err(CallError::Stopped),
            attempts,
        };
        loop {
            if stop.or(self.acquire()).await.is_none() {
                return stopped(attempts);
            }
            self.sent.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let sent_at = chrono::Utc::now();
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout);
            if let Some(auth) = self.token.header() {
                req = req.header(AUTHORIZATION, auth);
            }
            if let Some(key) = idempotency_key {
                req = req.header(api::IDEMPOTENCY_KEY, key);
            }
            if let Some(b) = &body {
                req = req.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            // Sent, and perhaps done by the server: a stop now leaves the
            // batch `submitted`, re-sent with its key by the next run.
            let not_awaited = |attempts: &mut Vec<Attempt>| {
                attempts.push(Attempt {
                    at: sent_at,
                    status: None,
                    error: Some("stopped before the answer came".into()),
                    millis: started.elapsed().as_millis() as u64,
                })
            };
            let Some(sent) = stop.or(req.send()).await else {
                not_awaited(&mut attempts);
                return stopped(attempts);
            };
            if let Err(e) = &sent {
                if let Some(why) = e.is_connect().then(|| self.could_not_connect(e)).flatten() {
                    attempts.push(Attempt {
                        at: sent_at,
                        status: None,
                        error: Some(describe(e)),
                        millis: started.elapsed().as_millis() as u64,
                    });
                    stop.trigger(why);
                    return stopped(attempts);
                }
            }
            let (class, retry_after, timed_out, attempt) = match sent {
                Err(e) => (
                    Class::Retry { throttled: false },
                    None,
                    e.is_timeout(),
                    Attempt {
                        at: sent_at,
                        status: None,
                        error: Some(describe(&e)),
                        millis: started.elapsed().as_millis() as u64,
                    },
                ),
                Ok(resp) => {
                    self.reach.answered.store(true, Ordering::Relaxed);
                    self.reach.failed_in_a_row.store(0, Ordering::Relaxed);
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let Some(read) = stop.or(resp.bytes()).await else {
                        not_awaited(&mut attempts);
                        return stopped(attempts);
                    };
                    match read {
                        Err(e) => (
                            Class::Retry { throttled: false },
                            None,
                            e.is_timeout(),
                            Attempt {
                                at: sent_at,
                                status: Some(status),
                                error: Some(format!("answer cut off: {}", describe(&e))),
                                millis: started.elapsed().as_millis() as u64,
                            },
                        ),
                        Ok(bytes) => {
                            let millis = started.elapsed().as_millis() as u64;
                            match classify_status(status) {
                                Class::Success => match serde_json::from_slice::<T>(&bytes) {
                                    Ok(v) => {
                                        attempts.push(Attempt {
                                            at: sent_at,
                                            status: Some(status),
                                            error: None,
                                            millis,
                                        });
                                        self.budget.refill();
                                        self.limiter.succeeded();
                                        return Call {
                                            result: Ok(v),
                                            attempts,
                                        };
                                    }
                                    // A garbled answer: the same key replays it.
                                    Err(e) => (
                                        Class::Retry { throttled: false },
                                        None,
                                        false,
                                        Attempt {
                                            at: sent_at,
                                            status: Some(status),
                                            error: Some(format!("unreadable answer: {e}")),
                                            millis,
                                        },
                                    ),
                                },
                                Class::Fatal => {
                                    attempts.push(Attempt {
                                        at: sent_at,
                                        status: Some(status),
                                        error: Some("refused".into()),
                                        millis,
                                    });
                                    return Call {
                                        result: Err(CallError::Refused {
                                            status,
                                            message: error_message(&bytes),
                                        }),
                                        attempts,
                                    };
                                }
                                class => (
                                    class,
                                    retry_after,
                                    false,
                                    Attempt {
                                        at: sent_at,
                                        status: Some(status),
                                        error: Some(error_message(&bytes)),
                                        millis,
                                    },
                                ),
                            }
                        }
                    }
                }
            };
            let last = attempt
                .error
                .clone()
                .unwrap_or_else(|| format!("HTTP {}", attempt.status.unwrap_or(0)));
            attempts.push(attempt);
            if class == (Class::Retry { throttled: true }) {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                self.limiter.throttled(retry_after);
                if let Some(quota) = &self.shared {
                    let pause = retry_after.unwrap_or(Duration::from_secs(1));
                    if stop.or(quota.pause(pause)).await.is_none() {
                        return stopped(attempts);
                    }
                }
            }
            let n = attempts.len() as u32;
            let cost = if timed_out {
                TIMEOUT_RETRY_COST
            } else {
                RETRY_COST
            };
            if n >= self.retry.max_attempts || !self.budget.try_spend(cost) {
                let last = if n >= self.retry.max_attempts {
                    last
                } else {
                    format!("{last} (retry budget spent)")
                };
                return Call {
                    result: Err(CallError::GaveUp { attempts: n, last }),
                    attempts,
                };
            }
            // After a 429 the limiter's pause is the wait.
            if class != (Class::Retry { throttled: true }) {
                let wait = self.retry.wait(n, retry_after, &mut rng);
                if stop.or(tokio::time::sleep(wait)).await.is_none() {
                    return stopped(attempts);
                }
            }
        }
    }
}

/// `path` appended to the base URL's path, the base's query kept:
/// `https://h/api?code=K` and `/v1/cases` give `https://h/api/v1/cases?code=K`.
fn endpoint(base: &str, path: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(mut url) => {
            let joined = format!("{}{path}", url.path().trim_end_matches('/'));
            url.set_path(&joined);
            url.set_fragment(None);
            url.into()
        }
        Err(_) => format!("{base}{path}"),
    }
}

/// A URL fit for reports, logs and messages: a user name or password
/// becomes `***@`, each query value `***` (`?code=***&x=***`, a bare
/// `?secret` becomes `?***`), a fragment `#***`. Scheme, host, port and path
/// are kept: they say where requests went.
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut bare = url.clone();
    // Both fail only for URLs without a host, which have no user-info.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    bare.set_query(None);
    bare.set_fragment(None);
    let mut out = String::from(bare.as_str());
    if !url.username().is_empty() || url.password().is_some() {
        out = out.replacen("://", "://***@", 1);
    }
    if let Some(query) = url.query() {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=***"),
                None if pair.is_empty() => String::new(),
                None => "***".to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    if url.fragment().is_some() {
        out.push_str("#***");
    }
    out
}

/// The base URL as messages show it (query values masked).
fn label_of(base: &str) -> String {
    reqwest::Url::parse(base).map_or_else(|_| "(unreadable URL)".to_string(), |u| redact_url(&u))
}

/// The innermost cause of a transport error: the operating system's
/// "Connection refused (os error 111)", a DNS failure.
fn root_cause(e: &reqwest::Error) -> String {
    let mut last = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        last = inner.to_string();
        src = inner.source();
    }
    match e.url() {
        Some(url) => last.replace(url.as_str(), &redact_url(url)),
        None => last,
    }
}

/// A transport error in a few words. reqwest's messages name the URL, whose
/// query may hold a secret: it is shown redacted.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        NOT_CONNECTED.into()
    } else if e.is_body() || e.is_decode() {
        "connection lost".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        match e.url() {
            Some(url) => s.replace(url.as_str(), &redact_url(url)),
            None => s,
        }
    }
}

/// The server's error sentence, or the start of its body.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<api::ApiError>(body) {
        Ok(e) => match e.field {
            Some(f) => format!("{} ({}: {})", e.error, f, e.message),
            None => format!("{}: {}", e.error, e.message),
        },
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
