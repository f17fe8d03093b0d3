//! The API's four operations (SPEC §6): read and check the body, apply the
//! idempotency rules, decide each item, and answer from what the store holds.
//! Every malformed input gets a JSON 400 naming the field, never a panic and
//! never axum's plain-text rejections: bodies are read as bytes and parsed here.

use std::collections::HashSet;
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::clock::{phase, Phase};
use super::saved::{to_hex, Claim, Entry, SavedAnswer};
use super::state::{
    confirmation_id, fingerprint_bytes, fingerprint_json, item_draw, Begin, Counters, ItemRecord,
    RequestRecord, Stored,
};
use super::{lock, Plan, Shared};
use crate::api::{
    ApiError, CoverageWire, Decision, Features, ItemDecision, ItemState, ItemStatus, ItemType,
    ReactivationAccepted, ReactivationRequest, ReactivationStatus, IDEMPOTENCY_KEY,
    IDEMPOTENT_REPLAYED,
};
use crate::domain::Coverage;

mod cases;

pub(super) use cases::{create_case, get_case};

/// The longest `Idempotency-Key` accepted (the OpenAPI document says the same).
pub const KEY_MAX_LEN: usize = 255;

/// Why a request cannot be processed, as the client will read it.
#[derive(Debug)]
pub(super) struct Problem {
    status: StatusCode,
    error: &'static str,
    message: String,
    field: Option<String>,
}

impl Problem {
    pub(super) fn bad(
        error: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Problem {
        Problem {
            status: StatusCode::BAD_REQUEST,
            error,
            message: message.into(),
            field,
        }
    }

    fn body(&self) -> Bytes {
        json_bytes(&ApiError {
            error: self.error.to_string(),
            message: self.message.clone(),
            field: self.field.clone(),
        })
    }

    fn stored(&self) -> Stored {
        Stored {
            status: self.status.as_u16(),
            body: self.body(),
            location: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        respond(self.stored(), false)
    }
}

/// Serialises an answer. These types always serialise; should one ever
/// fail, the client still gets JSON.
pub(super) fn json_bytes<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_else(|e| {
            Bytes::from(format!(
                "{{\"error\":\"internal\",\"message\":\"cannot serialise the answer: {e}\"}}"
            ))
        })
}

pub(super) fn respond(stored: Stored, replayed: bool) -> Response {
    let mut r = Response::new(Body::from(stored.body));
    *r.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(loc) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, loc);
    }
    if replayed {
        h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    r
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap, required: bool) -> Result<Option<String>, Problem> {
    let field = || Some(IDEMPOTENCY_KEY.to_string());
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return if required {
            Err(Problem::bad(
                "missing_idempotency_key",
                "this request needs an `Idempotency-Key` header: one key per distinct request, reused on every retry",
                field(),
            ))
        } else {
            Ok(None)
        };
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > KEY_MAX_LEN || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(Problem::bad(
            "invalid_idempotency_key",
            format!("`Idempotency-Key` must be 1 to {KEY_MAX_LEN} visible ASCII characters"),
            field(),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Reads a JSON body of at most `limit` bytes.
pub(super) async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Problem::bad(
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
            Some("Content-Type".to_string()),
        ));
    }
    let too_large = || Problem {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error: "body_too_large",
        message: format!("the body is larger than {limit} bytes"),
        field: None,
    };
    // Refuse a declared oversize body before reading a byte of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        Problem::bad(
            "unreadable_body",
            format!("the body could not be read: {e}"),
            None,
        )
    })
}

pub(super) fn json_problem(e: serde_json::Error) -> Problem {
    Problem::bad(
        "invalid_json",
        format!("the body is not valid JSON: {e}"),
        None,
    )
}

/// The typed request, or a 400 naming the field serde stopped at.
pub(super) fn parse_typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let field = field_of(&e.path().to_string(), &inner);
        Problem::bad(
            "invalid_request",
            format!("{}: {inner}", field.as_deref().unwrap_or("body")),
            field,
        )
    })
}

/// serde reports a missing field at its parent's path, naming the field
/// only in the message: join the two.
fn field_of(path: &str, message: &str) -> Option<String> {
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match named {
        Some(name) if base.is_empty() => Some(name.to_string()),
        Some(name) => Some(format!("{base}.{name}")),
        None => (!base.is_empty()).then(|| base.to_string()),
    }
}

/// Holds a key in flight; a request dropped before it answers (the client
/// went away) frees its key instead of leaving it in flight for ever.
struct KeyGuard {
    shared: Arc<Shared>,
    key: String,
    done: bool,
}

impl KeyGuard {
    fn finish(&mut self, stored: &Stored) {
        let mut store = lock(&self.shared.idempotency);
        // Only answers worth replaying are kept: a 5xx frees the key.
        if stored.status < 500 {
            store.finish(&self.key, stored.clone(), Instant::now());
        } else {
            store.abandon(&self.key);
        }
        self.done = true;
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.shared.idempotency).abandon(&self.key);
        }
    }
}

/// SPEC §6 idempotency around `work`: replay, 409 in flight, 422 for
/// another body, otherwise do it and keep the answer. The drawn latency is
/// spent while the key is in flight, as a slow vendor would.
async fn idempotent(
    shared: &Arc<Shared>,
    key: Option<String>,
    bytes: &[u8],
    latency: Option<Duration>,
    work: impl FnOnce(&Shared, Result<serde_json::Value, Problem>, &Claim) -> Stored,
) -> Response {
    let parsed = serde_json::from_slice::<serde_json::Value>(bytes);
    let fingerprint = match &parsed {
        Ok(v) => fingerprint_json(v),
        Err(_) => fingerprint_bytes(bytes),
    };
    let claim = Claim {
        key: key.clone(),
        fingerprint,
    };
    let mut guard = None;
    if let Some(key) = key {
        let begin = lock(&shared.idempotency).begin(&key, fingerprint, Instant::now());
        let early = match begin {
            Begin::Proceed => {
                guard = Some(KeyGuard {
                    shared: shared.clone(),
                    key,
                    done: false,
                });
                None
            }
            Begin::Replay(stored) => {
                Counters::bump(&shared.counters.replays);
                Some(respond(stored, true))
            }
            Begin::InFlight => Some(
                Problem {
                    status: StatusCode::CONFLICT,
                    error: "request_in_flight",
                    message: "the first request with this Idempotency-Key is still being processed; retry later with the same key".into(),
                    field: Some(IDEMPOTENCY_KEY.to_string()),
                }
                .into_response(),
            ),
            Begin::Mismatch => Some(
                Problem {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    error: "idempotency_key_reused",
                    message: "this Idempotency-Key was used with a different body".into(),
                    field: Some(IDEMPOTENCY_KEY.to_string()),
                }
                .into_response(),
            ),
        };
        if let Some(r) = early {
            if let Some(d) = latency {
                shared.sleep(d).await;
            }
            return r;
        }
    }
    if let Some(d) = latency {
        shared.sleep(d).await;
    }
    let stored = work(shared, parsed.map_err(json_problem), &claim);
    if let Some(mut g) = guard {
        g.finish(&stored);
    }
    respond(stored, false)
}

pub(super) fn plan_of(req: &Request) -> Plan {
    req.extensions().get::<Plan>().copied().unwrap_or_default()
}

/// What a POST that may carry an `Idempotency-Key` brings: its fault plan,
/// its key (`required` or optional) and its JSON body; or the problem to
/// answer instead.
pub(super) async fn keyed_json(
    shared: &Shared,
    req: Request,
    required: bool,
) -> Result<(Plan, Option<String>, Bytes), Response> {
    let plan = plan_of(&req);
    let (parts, body) = req.into_parts();
    let key = idempotency_key(&parts.headers, required).map_err(IntoResponse::into_response)?;
    let bytes = read_json(&parts.headers, body, shared.config.max_body_bytes)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((plan, key, bytes))
}

/// The `{id}` of `/v1/things/{id}`, as sent (ids are plain ASCII, so an
/// encoded one simply does not match).
fn last_segment(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(_, id)| id)
}

/// `POST /v1/reactivations`.
pub(super) async fn create_reactivation(
    State(shared): State<Arc<Shared>>,
    req: Request,
) -> Response {
    let (plan, key, bytes) = match keyed_json(&shared, req, true).await {
        Ok(parts) => parts,
        Err(answer) => return answer,
    };
    idempotent(
        &shared,
        key,
        &bytes,
        plan.latency,
        |sh, parsed, claim| match parsed
            .and_then(parse_typed::<ReactivationRequest>)
            .and_then(|r| validate_reactivation(&r, sh.config.max_batch).map(|()| r))
        {
            Ok(r) => accept(sh, r, claim),
            Err(p) => p.stored(),
        },
    )
    .await
}

fn validate_reactivation(r: &ReactivationRequest, max_batch: usize) -> Result<(), Problem> {
    let bad =
        |field: String, message: String| Err(Problem::bad("invalid_request", message, Some(field)));
    if r.contract_id.is_empty() {
        return bad("contract_id".into(), "contract_id must not be empty".into());
    }
    if r.quote_id.is_empty() {
        return bad("quote_id".into(), "quote_id must not be empty".into());
    }
    if !matches!(r.region.as_str(), "AMER" | "EMEA" | "APAC") {
        return bad(
            "region".into(),
            format!("region must be AMER, EMEA or APAC, not `{}`", r.region),
        );
    }
    if r.items.is_empty() {
        return bad("items".into(), "items must hold at least one item".into());
    }
    if r.items.len() > max_batch {
        return Err(Problem::bad(
            "batch_too_large",
            format!(
                "a request may carry at most {max_batch} items, this one has {}",
                r.items.len()
            ),
            Some("items".into()),
        ));
    }
    for (i, it) in r.items.iter().enumerate() {
        let field = |name: &str| format!("items[{i}].{name}");
        if it.item_key.is_empty() {
            return bad(field("item_key"), "item_key must not be empty".into());
        }
        match it.item_type {
            ItemType::Device if it.serial_number.as_deref().is_none_or(str::is_empty) => {
                return bad(
                    field("serial_number"),
                    "a device needs its serial_number".into(),
                );
            }
            ItemType::License if it.license_id.as_deref().is_none_or(str::is_empty) => {
                return bad(field("license_id"), "a license needs its license_id".into());
            }
            _ => {}
        }
        if !(it.country.len() == 2 && it.country.bytes().all(|b| b.is_ascii_alphabetic())) {
            return bad(
                field("country"),
                format!(
                    "country must be an ISO 3166-1 alpha-2 code, not `{}`",
                    it.country
                ),
            );
        }
    }
    Ok(())
}

/// The answer when the state file cannot be written: nothing was done.
fn cannot_record(e: &std::io::Error) -> Stored {
    tracing::warn!("simulator: cannot record a request: {e}");
    Problem {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: "unavailable",
        message: format!(
            "cannot record the request ({e}); nothing was done, retry with the same key"
        ),
        field: None,
    }
    .stored()
}

/// Decides every item of a valid request, saves it (when a state file is
/// kept), then makes it count.
fn accept(shared: &Shared, req: ReactivationRequest, claim: &Claim) -> Stored {
    Counters::bump(&shared.counters.reactivation_requests);
    let config = &shared.config;
    let policy = &shared.policy;
    let accepted_at = shared.clock.now();
    let today = accepted_at.date_naive();
    let coverage = match req.coverage {
        CoverageWire::Standard => Coverage::Standard,
        CoverageWire::Extended => Coverage::Extended,
    };
    let mut in_batch = HashSet::with_capacity(req.items.len());
    let mut records = Vec::with_capacity(req.items.len());
    let mut decisions = Vec::with_capacity(req.items.len());
    let mut store = lock(&shared.store);
    let request_id = store.next_request_id();
    for item in &req.items {
        let key = item.item_key.as_str();
        let verdict = if !in_batch.insert(key) {
            Err("DUPLICATE_IN_BATCH")
        } else {
            match policy.countries.parse(&item.country) {
                Err(_) => Err("COUNTRY_UNKNOWN"),
                Ok(c) if policy.restricted.contains(&c) => Err("REGION_RESTRICTED"),
                Ok(_)
                    if config.reject_rate > 0.0
                        && item_draw(config.seed, key, "reject") < config.reject_rate =>
                {
                    Err("VENDOR_NOT_ELIGIBLE")
                }
                Ok(c) => policy
                    .activation_eta(c, coverage, today)
                    .ok_or("ETA_OUT_OF_RANGE"),
            }
        };
        match verdict {
            Ok(eta) => {
                let fails = config.fail_rate > 0.0
                    && item_draw(config.seed, key, "fail") < config.fail_rate;
                records.push(ItemRecord {
                    item_key: key.to_string(),
                    identity: identity(item).to_string(),
                    deactivated_at: item.deactivated_at.clone(),
                    rejected: None,
                    eta: Some(eta),
                    fails,
                });
                decisions.push(ItemDecision {
                    item_key: key.to_string(),
                    status: Decision::Accepted,
                    reason: None,
                    eta: Some(eta),
                });
            }
            Err(reason) => {
                records.push(ItemRecord {
                    item_key: key.to_string(),
                    identity: identity(item).to_string(),
                    deactivated_at: item.deactivated_at.clone(),
                    rejected: Some(reason.to_string()),
                    eta: None,
                    fails: false,
                });
                decisions.push(ItemDecision {
                    item_key: key.to_string(),
                    status: Decision::Rejected,
                    reason: Some(reason.to_string()),
                    eta: None,
                });
            }
        }
    }
    let record = RequestRecord {
        request_id: request_id.clone(),
        contract_id: req.contract_id,
        region: req.region,
        quote_id: req.quote_id,
        accepted_at,
        items: records,
    };
    let answer = Stored {
        status: StatusCode::ACCEPTED.as_u16(),
        location: Some(format!("/v1/reactivations/{request_id}")),
        body: json_bytes(&ReactivationAccepted {
            request_id: request_id.clone(),
            accepted_at,
            items: decisions,
        }),
    };
    let saved = shared.saved.append(|| Entry::Reactivation {
        key: claim.key.clone(),
        fingerprint: to_hex(&claim.fingerprint),
        answer: SavedAnswer::from(&answer),
        request: record.clone(),
    });
    if let Err(e) = saved {
        return cannot_record(&e);
    }
    for it in record.items.iter().filter(|i| i.rejected.is_none()) {
        Counters::bump(&shared.counters.activations);
        if !store.accepted_keys.insert(it.item_key.clone()) {
            Counters::bump(&shared.counters.duplicate_activations);
        }
    }
    store.keep(record);
    drop(store);
    answer
}

/// The serial number of a device, the license id of a license: what a
/// lookup names an item by.
fn identity(item: &crate::api::RequestItem) -> &str {
    match item.item_type {
        ItemType::Device => item.serial_number.as_deref().unwrap_or(""),
        ItemType::License => item.license_id.as_deref().unwrap_or(""),
    }
}

/// `GET /v1/reactivations/{id}`.
pub(super) async fn get_reactivation(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if let Some(d) = plan_of(&req).latency {
        shared.sleep(d).await;
    }
    let id = last_segment(req.uri().path());
    let record = lock(&shared.store).requests.get(id).cloned();
    let Some(record) = record else {
        return Problem {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            message: format!("no reactivation request `{id}`"),
            field: None,
        }
        .into_response();
    };
    let now = shared.clock.now();
    let seed = shared.config.seed;
    let items = record
        .items
        .iter()
        .map(|it| item_status(seed, &record.request_id, it, record.accepted_at, now))
        .collect();
    respond(
        Stored {
            status: 200,
            body: json_bytes(&ReactivationStatus {
                request_id: record.request_id.clone(),
                contract_id: record.contract_id.clone(),
                region: record.region.clone(),
                quote_id: record.quote_id.clone(),
                accepted_at: record.accepted_at,
                items,
            }),
            location: None,
        },
        false,
    )
}

pub(super) fn item_status(
    seed: u64,
    request_id: &str,
    it: &ItemRecord,
    accepted_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ItemStatus {
    let mut s = ItemStatus {
        item_key: it.item_key.clone(),
        state: ItemState::Rejected,
        eta: it.eta,
        confirmation_id: None,
        features_verified: None,
        activated_at: None,
        reason: it.rejected.clone(),
    };
    let Some(eta) = it.eta else {
        return s;
    };
    match phase(now, accepted_at, eta) {
        Phase::Pending => s.state = ItemState::Pending,
        Phase::Provisioning => s.state = ItemState::Provisioning,
        Phase::Done(_) if it.fails => {
            s.state = ItemState::Failed;
            s.reason = Some("PROVISIONING_FAILED".to_string());
        }
        Phase::Done(at) => {
            s.state = ItemState::Active;
            s.confirmation_id = Some(confirmation_id(seed, request_id, &it.item_key));
            s.features_verified = Some(Features {
                meetings: true,
                conferencing: true,
                uc: true,
            });
            s.activated_at = Some(at);
        }
    }
    s
}

#[cfg(test)]
#[path = "handlers_tests.rs"]
mod tests;
