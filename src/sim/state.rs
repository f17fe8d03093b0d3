//! What the simulator remembers: the idempotency store (SPEC §6), the
//! accepted requests and their items, support cases, the counters behind
//! `GET /v1/_sim/stats` (SPEC §8) and the request log tests read.
//!
//! The server does not dedupe items across different idempotency keys, like
//! a real vendor: an item accepted twice is billed twice, and counted in
//! `duplicate_activations` so that tests catch a client that pays twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::SimStats;

/// How long a key is remembered: the SPEC asks for at least 24 hours; real
/// time is the stricter measure, since simulated time runs faster.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A request body's identity for the idempotency check.
pub type Fingerprint = [u8; 32];

/// The SHA-256 of a JSON value with object keys sorted, so whitespace and
/// key order do not make two equal requests look different.
pub fn fingerprint_json(value: &serde_json::Value) -> Fingerprint {
    fn feed(h: &mut Sha256, v: &serde_json::Value) {
        use serde_json::Value;
        match v {
            Value::Null => h.update(b"n"),
            Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                h.update(b"#");
                h.update(n.to_string().as_bytes());
                h.update([0]);
            }
            Value::String(s) => {
                h.update(b"s");
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            Value::Array(a) => {
                h.update(b"[");
                h.update((a.len() as u64).to_le_bytes());
                for x in a {
                    feed(h, x);
                }
            }
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                h.update(b"{");
                h.update((keys.len() as u64).to_le_bytes());
                for k in keys {
                    h.update((k.len() as u64).to_le_bytes());
                    h.update(k.as_bytes());
                    if let Some(x) = o.get(k) {
                        feed(h, x);
                    }
                }
            }
        }
    }
    let mut h = Sha256::new();
    feed(&mut h, value);
    h.finalize().into()
}

/// The fingerprint of a body that is not JSON at all: its bytes.
pub fn fingerprint_bytes(body: &[u8]) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(b"raw");
    h.update(body);
    h.finalize().into()
}

/// A finished answer kept for replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub body: Bytes,
    pub location: Option<String>,
}

#[derive(Debug)]
enum Slot {
    InFlight,
    Done(Stored),
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    slot: Slot,
    at: Instant,
}

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time: do the work, then [`IdempotencyStore::finish`] or
    /// [`IdempotencyStore::abandon`].
    Proceed,
    /// Done before with the same body: answer this again.
    Replay(Stored),
    /// The first request with this key and body is still being processed: 409.
    InFlight,
    /// The key was used for a different body: 422.
    Mismatch,
}

/// Key → in flight | done, kept [`KEY_TTL`], swept lazily.
#[derive(Debug)]
pub struct IdempotencyStore {
    entries: HashMap<String, Entry>,
    ttl: Duration,
    last_sweep: Instant,
}

impl IdempotencyStore {
    pub fn new(ttl: Duration) -> IdempotencyStore {
        IdempotencyStore {
            entries: HashMap::new(),
            ttl,
            last_sweep: Instant::now(),
        }
    }

    pub fn begin(&mut self, key: &str, fingerprint: Fingerprint, now: Instant) -> Begin {
        self.sweep(now);
        if let Some(e) = self.entries.get(key) {
            let expired = now.saturating_duration_since(e.at) >= self.ttl;
            if !expired || matches!(e.slot, Slot::InFlight) {
                return match (&e.slot, e.fingerprint == fingerprint) {
                    (_, false) => Begin::Mismatch,
                    (Slot::InFlight, true) => Begin::InFlight,
                    (Slot::Done(stored), true) => Begin::Replay(stored.clone()),
                };
            }
        }
        self.entries.insert(
            key.to_string(),
            Entry {
                fingerprint,
                slot: Slot::InFlight,
                at: now,
            },
        );
        Begin::Proceed
    }

    /// Stores the answer to replay; the key's life starts now.
    pub fn finish(&mut self, key: &str, stored: Stored, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.slot = Slot::Done(stored);
            e.at = now;
        }
    }

    /// Puts back a finished answer kept by an earlier simulator (see
    /// [`super::saved`]); its life starts again now.
    pub fn restore(&mut self, key: &str, fingerprint: Fingerprint, stored: Stored, now: Instant) {
        self.entries.insert(
            key.to_string(),
            Entry {
                fingerprint,
                slot: Slot::Done(stored),
                at: now,
            },
        );
    }

    /// Frees a key whose request ended without an answer worth keeping.
    pub fn abandon(&mut self, key: &str) {
        if matches!(self.entries.get(key).map(|e| &e.slot), Some(Slot::InFlight)) {
            self.entries.remove(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops expired answers, at most once a minute so the cost is spread.
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < Duration::from_secs(60) {
            return;
        }
        self.last_sweep = now;
        let ttl = self.ttl;
        self.entries.retain(|_, e| {
            matches!(e.slot, Slot::InFlight) || now.saturating_duration_since(e.at) < ttl
        });
    }
}

/// One item of an accepted request, as decided on arrival.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemRecord {
    pub item_key: String,
    /// The serial number or license id it names (what a lookup asks by);
    /// empty in a state file written before lookups existed.
    #[serde(default)]
    pub identity: String,
    /// The deactivation the request named.
    #[serde(default)]
    pub deactivated_at: String,
    /// `Some(reason)` when rejected on arrival.
    pub rejected: Option<String>,
    /// Activation date of an accepted item.
    pub eta: Option<NaiveDate>,
    /// Whether provisioning will fail.
    pub fails: bool,
}

/// An accepted `POST /v1/reactivations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub request_id: String,
    pub contract_id: String,
    pub region: String,
    pub quote_id: String,
    pub accepted_at: DateTime<Utc>,
    pub items: Vec<ItemRecord>,
}

/// An opened support case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseRecord {
    pub case_id: String,
    pub item_key: String,
    pub contract_id: String,
    pub reason: String,
    pub opened_at: DateTime<Utc>,
}

/// Requests, items ever accepted, and cases.
#[derive(Debug)]
pub struct Store {
    pub requests: HashMap<String, std::sync::Arc<RequestRecord>>,
    /// Every item key accepted so far: a second acceptance is a duplicate.
    pub accepted_keys: HashSet<String>,
    pub cases: HashMap<String, CaseRecord>,
    /// The latest record of each serial number or license id, for
    /// `POST /v1/items/lookup`.
    pub latest: HashMap<String, Latest>,
    /// Drawn at start: ids are never reused across simulator processes, so
    /// a client resuming against a new process never reads another
    /// request's items under an id it holds (it gets a 404 instead).
    id_prefix: String,
    next_request: u64,
    next_case: u64,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            requests: HashMap::new(),
            accepted_keys: HashSet::new(),
            cases: HashMap::new(),
            latest: HashMap::new(),
            id_prefix: id_prefix(),
            next_request: 0,
            next_case: 0,
        }
    }
}

impl Store {
    /// Items reactivated by hand: a lookup finds them until a request
    /// names them again.
    pub fn add_preactivated(&mut self, portal: &[PortalRecord]) {
        for p in portal {
            self.latest
                .insert(p.identity.clone(), Latest::Portal(p.clone()));
        }
    }

    /// Keeps an accepted request, and makes it the latest record of each
    /// item it names.
    pub fn keep(&mut self, request: RequestRecord) {
        for (index, it) in request.items.iter().enumerate() {
            if !it.identity.is_empty() {
                self.latest.insert(
                    it.identity.clone(),
                    Latest::Request {
                        request_id: request.request_id.clone(),
                        index,
                    },
                );
            }
        }
        self.requests
            .insert(request.request_id.clone(), std::sync::Arc::new(request));
    }
}

/// Where the latest record of an item is.
#[derive(Debug, Clone)]
pub enum Latest {
    /// Item `index` of request `request_id`.
    Request { request_id: String, index: usize },
    /// Reactivated by hand in the vendor's portal (`refleet sim --preactivated`).
    Portal(PortalRecord),
}

/// An item reactivated by hand, outside the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalRecord {
    /// Serial number or license id, as the API names it.
    pub identity: String,
    pub is_license: bool,
    /// Empty when the file named none.
    pub contract_id: String,
    pub activated_at: DateTime<Utc>,
}

/// Eight hex digits from the process's random source, e.g. `3f9a1c2b`.
fn id_prefix() -> String {
    format!("{:08x}", fastrand::u32(..))
}

impl Store {
    /// `rq-PREFIX-00000001`, `rq-PREFIX-00000002`, …
    pub fn next_request_id(&mut self) -> String {
        self.next_request += 1;
        format!("rq-{}-{:08}", self.id_prefix, self.next_request)
    }

    /// `CS-PREFIX-00000001`, …
    pub fn next_case_id(&mut self) -> String {
        self.next_case += 1;
        format!("CS-{}-{:08}", self.id_prefix, self.next_case)
    }

    /// Draws the prefix again while an id restored from an earlier
    /// simulator already uses it (one chance in four billion per process).
    pub fn avoid_restored_prefix(&mut self) {
        for _ in 0..16 {
            let rq = format!("rq-{}-", self.id_prefix);
            let cs = format!("CS-{}-", self.id_prefix);
            let taken = self.requests.keys().any(|id| id.starts_with(&rq))
                || self.cases.keys().any(|id| id.starts_with(&cs));
            if !taken {
                return;
            }
            self.id_prefix = id_prefix();
        }
    }
}

/// The counters of SPEC §8, updated without a lock.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub reactivation_requests: AtomicU64,
    pub replays: AtomicU64,
    pub activations: AtomicU64,
    pub duplicate_activations: AtomicU64,
    pub injected_errors: AtomicU64,
    pub resets: AtomicU64,
    pub timeouts: AtomicU64,
    pub cases: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            requests: get(&self.requests),
            rate_limited: get(&self.rate_limited),
            reactivation_requests: get(&self.reactivation_requests),
            replays: get(&self.replays),
            activations: get(&self.activations),
            duplicate_activations: get(&self.duplicate_activations),
            injected_errors: get(&self.injected_errors),
            resets: get(&self.resets),
            timeouts: get(&self.timeouts),
            cases: get(&self.cases),
        }
    }
}

/// One `/v1` request as the server saw it (SPEC §8: tests check what a
/// client sent, e.g. that it honoured `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Arrival, since the simulator started.
    pub at: Duration,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The `Retry-After` the answer carried, if any.
    pub retry_after: Option<Duration>,
}

/// The last [`RequestLog::CAPACITY`] requests.
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: VecDeque<LoggedRequest>,
}

impl RequestLog {
    pub const CAPACITY: usize = 1_000_000;

    pub fn push(&mut self, entry: LoggedRequest) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// In arrival order: requests are logged when they end, and a slow one
    /// ends after a quick one that arrived later.
    pub fn snapshot(&self) -> Vec<LoggedRequest> {
        let mut v: Vec<LoggedRequest> = self.entries.iter().cloned().collect();
        v.sort_by_key(|e| e.at);
        v
    }
}

/// A number in `[0, 1)` fixed by the seed, the item and the question asked,
/// so a replay or a retry of the same item gets the same verdict.
pub fn item_draw(seed: u64, item_key: &str, question: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(question.as_bytes());
    h.update([0]);
    h.update(item_key.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    // 53 bits fill an f64's mantissa exactly.
    (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// A deterministic confirmation id for an activated item.
pub fn confirmation_id(seed: u64, request_id: &str, item_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(request_id.as_bytes());
    h.update([0]);
    h.update(item_key.as_bytes());
    let d = h.finalize();
    let mut s = String::from("CNF-");
    for b in &d[..6] {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: &str) -> Stored {
        Stored {
            status: 202,
            body: Bytes::from(body.to_string()),
            location: None,
        }
    }

    #[test]
    fn a_key_is_in_flight_then_replayed_and_refuses_another_body() {
        let mut s = IdempotencyStore::new(KEY_TTL);
        let t0 = Instant::now();
        let a = fingerprint_bytes(b"a");
        let b = fingerprint_bytes(b"b");
        assert_eq!(s.begin("k", a, t0), Begin::Proceed);
        assert_eq!(s.begin("k", a, t0), Begin::InFlight);
        assert_eq!(s.begin("k", b, t0), Begin::Mismatch);
        s.finish("k", stored("first"), t0);
        assert_eq!(s.begin("k", a, t0), Begin::Replay(stored("first")));
        assert_eq!(s.begin("k", b, t0), Begin::Mismatch);
        assert_eq!(s.begin("other", b, t0), Begin::Proceed);
    }

    #[test]
    fn an_abandoned_key_is_free_again() {
        let mut s = IdempotencyStore::new(KEY_TTL);
        let t0 = Instant::now();
        let a = fingerprint_bytes(b"a");
        assert_eq!(s.begin("k", a, t0), Begin::Proceed);
        s.abandon("k");
        assert_eq!(s.begin("k", fingerprint_bytes(b"b"), t0), Begin::Proceed);
        // A finished key is never abandoned by mistake.
        s.finish("k", stored("x"), t0);
        s.abandon("k");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn keys_are_kept_for_the_ttl_and_swept_after() {
        let ttl = Duration::from_secs(24 * 3600);
        let mut s = IdempotencyStore::new(ttl);
        let t0 = Instant::now();
        let a = fingerprint_bytes(b"a");
        assert_eq!(s.begin("k", a, t0), Begin::Proceed);
        s.finish("k", stored("x"), t0);
        let almost = t0 + ttl - Duration::from_secs(1);
        assert_eq!(s.begin("k", a, almost), Begin::Replay(stored("x")));
        let later = t0 + ttl + Duration::from_secs(61);
        assert_eq!(s.begin("other", a, later), Begin::Proceed);
        assert_eq!(s.len(), 1, "the expired key was swept");
        assert_eq!(s.begin("k", fingerprint_bytes(b"b"), later), Begin::Proceed);
    }

    #[test]
    fn the_fingerprint_ignores_whitespace_and_key_order() {
        let v1: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":[1,"x"]}"#).unwrap();
        let v2: serde_json::Value =
            serde_json::from_str("{ \"b\" : [ 1 , \"x\" ] ,\n \"a\" : 1 }").unwrap();
        let v3: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":["x",1]}"#).unwrap();
        assert_eq!(fingerprint_json(&v1), fingerprint_json(&v2));
        assert_ne!(fingerprint_json(&v1), fingerprint_json(&v3));
    }

    /// Regression: every process numbered its ids from `rq-00000001`, so a
    /// run resumed against a new simulator polled another batch's id.
    #[test]
    fn ids_are_never_reused_by_another_process() {
        let mut a = Store::default();
        let mut b = Store::default();
        let (ra, rb) = (a.next_request_id(), b.next_request_id());
        assert_ne!(ra, rb);
        assert_ne!(a.next_case_id(), b.next_case_id());
        assert!(ra.starts_with("rq-") && ra.ends_with("-00000001"), "{ra}");
        assert_eq!(ra.len(), "rq-12345678-00000001".len());
        // A prefix an earlier process used is drawn again.
        let mut c = Store {
            id_prefix: a.id_prefix.clone(),
            ..Store::default()
        };
        c.requests.insert(
            ra.clone(),
            std::sync::Arc::new(RequestRecord {
                request_id: ra.clone(),
                contract_id: "C".into(),
                region: "EMEA".into(),
                quote_id: "Q".into(),
                accepted_at: Utc::now(),
                items: Vec::new(),
            }),
        );
        c.avoid_restored_prefix();
        assert_ne!(c.next_request_id().get(..12), ra.get(..12));
    }

    #[test]
    fn item_draws_are_deterministic_and_spread() {
        assert_eq!(item_draw(1, "A", "reject"), item_draw(1, "A", "reject"));
        assert_ne!(item_draw(1, "A", "reject"), item_draw(2, "A", "reject"));
        assert_ne!(item_draw(1, "A", "reject"), item_draw(1, "A", "fail"));
        let n = 10_000;
        let below = (0..n)
            .filter(|i| item_draw(0, &i.to_string(), "reject") < 0.25)
            .count();
        assert!((2_200..2_800).contains(&below), "{below}");
        assert!(confirmation_id(0, "rq-1", "A").starts_with("CNF-"));
    }
}
