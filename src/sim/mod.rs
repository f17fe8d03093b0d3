//! `refleet sim`: the vendor reactivation API of SPEC §6, served on loopback
//! by the same binary (SPEC §8), with provisioning on a compressed business
//! calendar and opt-in faults. Tests and `refleet run` start it in-process
//! with [`Sim::start`]; `refleet sim` serves it until Ctrl-C.
//!
//! `/v1/_sim/stats` needs the bearer token and nothing more. Every other
//! `/v1` request goes through one pipeline, in
//! this order: count it → bearer auth (401) → rate limit (429) → draw its
//! faults → injected 500/503 (before any side effect) → the handler (which
//! holds an idempotency key in flight through the drawn latency) → a reset
//! or a hang after the work is stored → log it. The document in
//! `api/openapi.json` describes all of it and is served at `/openapi.json`.

mod clock;
mod faults;
mod handlers;
mod lookup;
mod saved;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::watch;

pub use clock::{done_at, phase, Phase, SimClock};
pub use faults::{wait_to_seconds, Admission, Faults, Limiter, Plan};
pub use lookup::{load_preactivated, PreactivatedError};
pub use state::{LoggedRequest, PortalRecord, KEY_TTL};

use crate::api::{ApiError, SimStats};
use crate::policy::Policy;
use state::{Counters, IdempotencyStore, RequestLog, Store};

/// The OpenAPI 3.1 document of the API, served verbatim at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../api/openapi.json");

/// The statistics route: bearer auth like every route (the counters say what
/// clients sent), but not counted, not logged, never limited or faulty, so
/// that a test reading it does not change what it measures.
pub const STATS_PATH: &str = "/v1/_sim/stats";

/// A server-side rate limit: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// How the simulator behaves. The default is a well-behaved server on an
/// ephemeral loopback port: every fault off.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// When set, the only bearer token accepted; otherwise any token is.
    pub token: Option<String>,
    /// Real milliseconds one simulated calendar day lasts.
    pub business_day_ms: u64,
    /// Share of items the vendor finds ineligible on arrival.
    pub reject_rate: f64,
    /// Share of accepted items whose provisioning fails.
    pub fail_rate: f64,
    pub rate_limit: Option<RateLimit>,
    /// Added latency, uniform in MIN..=MAX milliseconds.
    pub latency_ms: Option<(u64, u64)>,
    /// Share of requests answered 500 or 503 instead of being processed.
    pub error_rate: f64,
    /// Share of requests processed, then cut off mid-response.
    pub reset_rate: f64,
    /// Share of requests processed, then held for `timeout_ms`.
    pub timeout_rate: f64,
    /// How long a "timed out" request hangs before it is answered.
    pub timeout_ms: u64,
    /// Seeds the fault draws and the per-item verdicts.
    pub seed: u64,
    /// The most items one request may carry.
    pub max_batch: usize,
    /// Larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Where to keep accepted requests, keys and cases, so that a simulator
    /// started again on the same file carries on (see [`saved`]); `None`
    /// keeps them in memory only.
    pub state_file: Option<PathBuf>,
    /// Items reactivated by hand in the vendor's portal: a lookup finds
    /// them active (`--preactivated`).
    pub preactivated: Vec<PortalRecord>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            business_day_ms: 50,
            reject_rate: 0.0,
            fail_rate: 0.0,
            rate_limit: None,
            latency_ms: None,
            error_rate: 0.0,
            reset_rate: 0.0,
            timeout_rate: 0.0,
            timeout_ms: 30_000,
            seed: 0,
            max_batch: crate::api::MAX_BATCH,
            max_body_bytes: 1 << 20,
            state_file: None,
            preactivated: Vec::new(),
        }
    }
}

/// Everything the handlers share.
#[derive(Debug)]
struct Shared {
    config: SimConfig,
    policy: Arc<Policy>,
    clock: SimClock,
    counters: Counters,
    idempotency: Mutex<IdempotencyStore>,
    store: Mutex<Store>,
    log: Mutex<RequestLog>,
    faults: Faults,
    limiter: Option<Limiter>,
    /// The state file, when one is kept.
    saved: saved::Saved,
    /// Set when the server stops, so hung and slow requests end at once.
    closing: watch::Sender<bool>,
}

/// A poisoned lock means a handler panicked mid-update; the data is still
/// the best the simulator has, and refusing every later request would be worse.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// A simulator carrying on from its state file, when it has one: its
    /// requests, keys and cases, and its clock no earlier than the last
    /// thing that happened there.
    fn new(config: SimConfig, policy: Arc<Policy>) -> std::io::Result<Shared> {
        let (saved, entries) = match &config.state_file {
            Some(path) => saved::Saved::open(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("simulator state {}: {e}", path.display()))
            })?,
            None => (saved::Saved::memory(), Vec::new()),
        };
        let now = chrono::Utc::now();
        let origin = entries
            .iter()
            .map(saved::Entry::at)
            .max()
            .map_or(now, |t| t.max(now));
        let mut shared = Shared::starting_at(config, policy, origin);
        shared.saved = saved;
        {
            let mut keys = lock(&shared.idempotency);
            let mut store = lock(&shared.store);
            let at = std::time::Instant::now();
            for entry in entries {
                if let Some((key, fingerprint, stored)) = entry.replay() {
                    keys.restore(&key, fingerprint, stored, at);
                }
                match entry {
                    saved::Entry::Reactivation { request, .. } => {
                        for it in request.items.iter().filter(|i| i.rejected.is_none()) {
                            store.accepted_keys.insert(it.item_key.clone());
                        }
                        store.keep(request);
                    }
                    saved::Entry::Case { case, .. } => {
                        store.cases.insert(case.case_id.clone(), case);
                    }
                }
            }
            store.avoid_restored_prefix();
        }
        Ok(shared)
    }

    /// A simulator whose simulated time starts at `origin` (tests pin it).
    fn starting_at(
        config: SimConfig,
        policy: Arc<Policy>,
        origin: chrono::DateTime<chrono::Utc>,
    ) -> Shared {
        let limiter = config
            .rate_limit
            .and_then(|r| Limiter::new(r.per_second, r.burst));
        Shared {
            clock: SimClock::new(origin, config.business_day_ms),
            counters: Counters::default(),
            idempotency: Mutex::new(IdempotencyStore::new(KEY_TTL)),
            store: Mutex::new({
                // First, so that a request of the state file that names the
                // same item is its latest record.
                let mut store = Store::default();
                store.add_preactivated(&config.preactivated);
                store
            }),
            log: Mutex::new(RequestLog::default()),
            faults: Faults::new(&config),
            limiter,
            saved: saved::Saved::memory(),
            closing: watch::channel(false).0,
            config,
            policy,
        }
    }

    /// Sleeps, or returns early when the server is stopping.
    async fn sleep(&self, d: Duration) {
        let mut closing = self.closing.subscribe();
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
    }
}

/// A JSON error answer.
fn error_response(
    status: StatusCode,
    error: &str,
    message: impl Into<String>,
    field: Option<&str>,
) -> Response {
    (
        status,
        Json(ApiError {
            error: error.to_string(),
            message: message.into(),
            field: field.map(str::to_string),
        }),
    )
        .into_response()
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route(STATS_PATH, get(stats))
        .route("/v1/reactivations", post(handlers::create_reactivation))
        .route("/v1/reactivations/{id}", get(handlers::get_reactivation))
        .route("/v1/items/lookup", post(lookup::lookup_items))
        .route("/v1/cases", post(handlers::create_case))
        .route("/v1/cases/{id}", get(handlers::get_case))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), pipeline))
        .with_state(shared)
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<SimStats> {
    Json(shared.counters.snapshot())
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such resource", None)
}

/// Whether the request carries an acceptable bearer token.
fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    let given = given.trim();
    scheme.eq_ignore_ascii_case("bearer") && !given.is_empty() && token.is_none_or(|t| t == given)
}

/// 401 with a `WWW-Authenticate: Bearer` challenge.
fn unauthorized() -> Response {
    let mut r = error_response(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send `Authorization: Bearer <token>` with a valid token",
        Some("Authorization"),
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The shared `/v1` pipeline (see the module docs for the order).
async fn pipeline(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == STATS_PATH && !authorized(req.headers(), shared.config.token.as_deref()) {
        return unauthorized();
    }
    if !path.starts_with("/v1/") || path == STATS_PATH {
        return json_405(next.run(req).await);
    }
    let at = shared.clock.elapsed();
    let method = req.method().to_string();
    Counters::bump(&shared.counters.requests);
    let mut retry_after = None;
    let response = 'answer: {
        if !authorized(req.headers(), shared.config.token.as_deref()) {
            break 'answer unauthorized();
        }
        let mut limit_headers = None;
        if let Some(limiter) = &shared.limiter {
            match limiter.admit() {
                Admission::Allowed { policy, state } => limit_headers = Some((policy, state)),
                Admission::Limited {
                    retry_after: secs,
                    policy,
                    state,
                } => {
                    Counters::bump(&shared.counters.rate_limited);
                    retry_after = Some(Duration::from_secs(secs));
                    let mut r = error_response(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!("rate limit exceeded; retry after {secs} s"),
                        None,
                    );
                    set_limit_headers(r.headers_mut(), &policy, &state);
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    break 'answer r;
                }
            }
        }
        let plan = shared.faults.plan();
        if let Some(status) = plan.error {
            if let Some(d) = plan.latency {
                shared.sleep(d).await;
            }
            Counters::bump(&shared.counters.injected_errors);
            let mut r = error_response(
                status,
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "unavailable"
                } else {
                    "internal"
                },
                "simulated server error; nothing was done, retry with the same key",
                None,
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                retry_after = Some(Duration::from_secs(1));
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            break 'answer r;
        }
        req.extensions_mut().insert(plan);
        let mut r = json_405(next.run(req).await);
        if let Some((policy, state)) = limit_headers {
            set_limit_headers(r.headers_mut(), &policy, &state);
        }
        if plan.reset {
            Counters::bump(&shared.counters.resets);
            break 'answer reset(r).await;
        }
        if plan.timeout {
            Counters::bump(&shared.counters.timeouts);
            shared
                .sleep(Duration::from_millis(shared.config.timeout_ms))
                .await;
        }
        r
    };
    lock(&shared.log).push(LoggedRequest {
        at,
        method,
        path,
        status: response.status().as_u16(),
        retry_after,
    });
    response
}

fn set_limit_headers(headers: &mut HeaderMap, policy: &str, state: &str) {
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
}

/// axum answers a wrong method with an empty 405; every error of this API
/// has a JSON body, so give it one and keep the `Allow` header.
fn json_405(r: Response) -> Response {
    if r.status() != StatusCode::METHOD_NOT_ALLOWED {
        return r;
    }
    let allow = r.headers().get(header::ALLOW).cloned();
    let mut out = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this resource",
        None,
    );
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// Sends the status and headers, part of the body, then breaks the
/// connection: the work is done and stored, but the client cannot know it.
async fn reset(r: Response) -> Response {
    let (mut parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
    parts.headers.remove(header::CONTENT_LENGTH);
    use futures_util::StreamExt;
    let head = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(half) });
    // A pause lets the status line, headers and first half reach the client
    // before the connection breaks.
    let cut = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))
    });
    Response::from_parts(parts, Body::from_stream(head.chain(cut)))
}

enum Runner {
    /// Serving on the caller's runtime.
    Task(Option<tokio::task::JoinHandle<()>>),
    /// Serving on a runtime of its own.
    Runtime(Option<tokio::runtime::Runtime>),
}

/// A running simulator. Dropping it stops it.
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runner: Runner,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("addr", &self.addr).finish()
    }
}

impl Sim {
    /// Binds and serves on the current tokio runtime.
    pub async fn start(config: SimConfig, policy: Arc<Policy>) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, policy)?);
        let app = router(shared.clone());
        let mut closing = shared.closing.subscribe();
        // Small requests and answers: Nagle's algorithm would hold each one
        // back for a delayed ACK.
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = closing.wait_for(|c| *c).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("simulator stopped: {e}");
            }
        });
        Ok(Sim {
            addr,
            shared,
            runner: Runner::Task(Some(task)),
        })
    }

    /// Binds and serves on a runtime in a thread of its own (blocking
    /// callers, tests).
    pub fn start_in_background(config: SimConfig, policy: Arc<Policy>) -> std::io::Result<Sim> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("refleet-sim")
            .enable_all()
            .build()?;
        let mut sim = runtime.block_on(Sim::start(config, policy))?;
        sim.runner = Runner::Runtime(Some(runtime));
        Ok(sim)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> SimStats {
        self.shared.counters.snapshot()
    }

    /// Every `/v1` request except `/v1/_sim/stats`, in arrival order (the
    /// last million).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.log).snapshot()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// Stops serving; requests in progress are cut short.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Stops serving and waits (up to a second) for open connections to close.
    pub async fn stop(mut self) {
        self.shared.closing.send_replace(true);
        if let Runner::Task(task) = &mut self.runner {
            if let Some(task) = task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shared.closing.send_replace(true);
        match &mut self.runner {
            Runner::Task(task) => {
                // Graceful shutdown finishes in the background; abort only
                // if it was already waited for elsewhere.
                drop(task.take());
            }
            Runner::Runtime(runtime) => {
                // Never blocks, so dropping a Sim inside async code is safe.
                if let Some(rt) = runtime.take() {
                    rt.shutdown_background();
                }
            }
        }
    }
}
