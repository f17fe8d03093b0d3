//! The simulator over real loopback HTTP (reqwest against `Sim::start` on
//! 127.0.0.1:0): every status code, the idempotency rules under concurrency,
//! the rate limiter's truthfulness, the item lifecycle on the business
//! calendar, and robustness against malformed input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use refleet::api::{
    ApiError, Case, ItemState, ReactivationAccepted, ReactivationStatus, SimStats, IDEMPOTENCY_KEY,
    IDEMPOTENT_REPLAYED,
};
use refleet::policy::Policy;
use refleet::sim::{RateLimit, Sim, SimConfig};
use serde_json::{json, Value};

mod lookup;

fn policy() -> Arc<Policy> {
    Arc::new(Policy::load(None).expect("built-in policy"))
}

async fn start(config: SimConfig) -> (Sim, Api) {
    let sim = Sim::start(config, policy()).await.expect("sim starts");
    let api = Api::new(&sim);
    (sim, api)
}

/// A client builder, with the TLS provider refleet's clients use installed
/// first (reqwest is built without one of its own).
fn http() -> reqwest::ClientBuilder {
    refleet::submit::client::install_tls_provider();
    reqwest::Client::builder()
}

struct Api {
    client: reqwest::Client,
    url: String,
}

impl Api {
    fn new(sim: &Sim) -> Api {
        Api {
            client: http().build().expect("a client"),
            url: sim.url(),
        }
    }

    /// A client that opens a connection per request. A server may answer
    /// an oversize or broken body before reading all of it and then close
    /// the connection; a pooled client can race that close and fail its
    /// next request on the dead connection (`IncompleteMessage`), a client
    /// race rather than the server breaking.
    fn unpooled(sim: &Sim) -> Api {
        Api {
            client: http().pool_max_idle_per_host(0).build().expect("a client"),
            url: sim.url(),
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth("t")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            r = r.header(IDEMPOTENCY_KEY, k);
        }
        r.send().await.expect("answered")
    }

    async fn post_raw(
        &self,
        key: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut r = self
            .client
            .post(format!("{}/v1/reactivations", self.url))
            .bearer_auth("t")
            .body(body);
        if let Some(k) = key {
            r = r.header(IDEMPOTENCY_KEY, k);
        }
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r.send().await.expect("answered")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth("t")
            .send()
            .await
            .expect("answered")
    }

    async fn stats(&self) -> SimStats {
        self.client
            .get(format!("{}/v1/_sim/stats", self.url))
            .bearer_auth("t")
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("stats")
    }
}

fn device(key: &str, country: &str) -> Value {
    json!({
        "item_key": key,
        "item_type": "device",
        "serial_number": key.split('|').next().unwrap_or(key),
        "model": "CCX 400",
        "country": country,
        "deactivated_at": "2026-10-01"
    })
}

fn batch(items: Vec<Value>) -> Value {
    json!({
        "contract_id": "C-1",
        "region": "EMEA",
        "quote_id": "Q-1",
        "coverage": "standard",
        "items": items
    })
}

fn devices(prefix: &str, n: usize) -> Value {
    batch(
        (0..n)
            .map(|i| device(&format!("{prefix}{i:04}|C-1|2026-10-01"), "DE"))
            .collect(),
    )
}

async fn error_of(r: reqwest::Response) -> (u16, ApiError) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("application/json"), "{status}: {ct}");
    (status, r.json().await.expect("a JSON error body"))
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_its_openapi_document_verbatim() {
    let (_sim, api) = start(SimConfig::default()).await;
    let served: Value = api
        .client
        .get(format!("{}/openapi.json", api.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/api/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(served, file);
    assert_eq!(served["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_auth_401_without_or_with_the_wrong_token() {
    let (_sim, api) = start(SimConfig {
        token: Some("sesame".into()),
        ..SimConfig::default()
    })
    .await;
    let url = format!("{}/v1/reactivations/rq-1", api.url);
    let none = api.client.get(&url).send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(none).await.0, 401);
    let wrong = api
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(wrong).await.0, 401);
    let right = api
        .client
        .get(&url)
        .bearer_auth("sesame")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 404, "authenticated, and no such request");
    // The stats need the token too (the document does not); asking for them
    // is not counted, refused or not.
    let stats_url = format!("{}/v1/_sim/stats", api.url);
    let none = api.client.get(&stats_url).send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(none).await.0, 401);
    let wrong = api.client.get(&stats_url).bearer_auth("nope").send();
    assert_eq!(error_of(wrong.await.unwrap()).await.0, 401);
    let stats: SimStats = api
        .client
        .get(&stats_url)
        .bearer_auth("sesame")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.requests, 3);
    let doc = api.client.get(format!("{}/openapi.json", api.url)).send();
    assert_eq!(doc.await.unwrap().status(), 200);

    // Without a configured token any bearer token is accepted, but one is needed.
    let (_open, api) = start(SimConfig::default()).await;
    let url = format!("{}/v1/reactivations/rq-1", api.url);
    assert_eq!(api.client.get(&url).send().await.unwrap().status(), 401);
    let r = api
        .client
        .get(&url)
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn accepts_then_replays_the_stored_answer() {
    let (sim, api) = start(SimConfig::default()).await;
    let body = devices("SN", 3);
    let first = api.post("/v1/reactivations", Some("k1"), &body).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get(IDEMPOTENT_REPLAYED).is_none());
    let location = first.headers()["location"].to_str().unwrap().to_string();
    let first: ReactivationAccepted = first.json().await.unwrap();
    assert_eq!(location, format!("/v1/reactivations/{}", first.request_id));
    assert_eq!(first.items.len(), 3);
    assert!(first
        .items
        .iter()
        .all(|i| i.eta.is_some() && i.reason.is_none()));

    // The same body, differently spaced and ordered: the same answer again.
    let mut respaced = serde_json::to_string_pretty(&body).unwrap();
    respaced.push('\n');
    let again = api
        .post_raw(
            Some("k1"),
            Some("application/json; charset=utf-8"),
            respaced,
        )
        .await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()[IDEMPOTENT_REPLAYED], "true");
    let again: ReactivationAccepted = again.json().await.unwrap();
    assert_eq!(again, first);

    let s = api.stats().await;
    assert_eq!(
        (
            s.activations,
            s.duplicate_activations,
            s.replays,
            s.reactivation_requests
        ),
        (3, 0, 1, 1)
    );
    assert_eq!(sim.stats(), s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_reused_for_another_body_is_422() {
    let (_sim, api) = start(SimConfig::default()).await;
    assert_eq!(
        api.post("/v1/reactivations", Some("k"), &devices("A", 1))
            .await
            .status(),
        202
    );
    let (status, e) = error_of(
        api.post("/v1/reactivations", Some("k"), &devices("B", 1))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(e.field.as_deref(), Some("Idempotency-Key"));
    assert_eq!(api.stats().await.activations, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_in_flight_is_409_and_never_processed_twice() {
    let (_sim, api) = start(SimConfig {
        latency_ms: Some((400, 400)),
        ..SimConfig::default()
    })
    .await;
    let api = Arc::new(api);
    let body = devices("F", 2);
    let first = {
        let (api, body) = (api.clone(), body.clone());
        tokio::spawn(async move { api.post("/v1/reactivations", Some("slow"), &body).await })
    };
    // Once the server has counted the first request, its key is in flight
    // for the next 400 ms (the body is tiny; reading it takes no time).
    while api.stats().await.requests == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, e) = error_of(api.post("/v1/reactivations", Some("slow"), &body).await).await;
    assert_eq!(status, 409);
    assert_eq!(e.error, "request_in_flight");
    // A different body under the key in flight is 422, not 409.
    let other = api
        .post("/v1/reactivations", Some("slow"), &devices("G", 1))
        .await;
    assert_eq!(other.status(), 422);
    assert_eq!(first.await.unwrap().status(), 202);
    let replay = api.post("/v1/reactivations", Some("slow"), &body).await;
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()[IDEMPOTENT_REPLAYED], "true");
    assert_eq!(api.stats().await.activations, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_400_naming_the_field() {
    let (_sim, api) = start(SimConfig::default()).await;
    let ok = devices("V", 1);
    let cases: Vec<(Option<&str>, Option<&str>, String, &str)> = vec![
        (None, Some("application/json"), ok.to_string(), "Idempotency-Key"),
        (Some(""), Some("application/json"), ok.to_string(), "Idempotency-Key"),
        (Some("a key"), Some("application/json"), ok.to_string(), "Idempotency-Key"),
        (Some("k1"), None, ok.to_string(), "Content-Type"),
        (Some("k2"), Some("text/plain"), ok.to_string(), "Content-Type"),
        (Some("k3"), Some("application/json"), "{\"contract_id\":".into(), ""),
        (Some("k4"), Some("application/json"), batch(vec![]).to_string(), "items"),
        (
            Some("k5"),
            Some("application/json"),
            {
                let mut b = ok.clone();
                b["items"][0].as_object_mut().unwrap().remove("serial_number");
                b.to_string()
            },
            "items[0].serial_number",
        ),
        (
            Some("k6"),
            Some("application/json"),
            batch(vec![json!({"item_key": "L|C|D", "item_type": "license", "country": "DE", "deactivated_at": "2026-01-01"})]).to_string(),
            "items[0].license_id",
        ),
        (
            Some("k7"),
            Some("application/json"),
            batch(vec![device("X", "DE"), device("Y", "DEU")]).to_string(),
            "items[1].country",
        ),
        (
            Some("k8"),
            Some("application/json"),
            batch(vec![device("", "DE")]).to_string(),
            "items[0].item_key",
        ),
        (
            Some("k9"),
            Some("application/json"),
            {
                let mut b = ok.clone();
                b["items"][0]["colour"] = json!("red");
                b.to_string()
            },
            "items[0].colour",
        ),
        (
            Some("k10"),
            Some("application/json"),
            {
                let mut b = ok.clone();
                b["items"][0]["country"] = json!(49);
                b.to_string()
            },
            "items[0].country",
        ),
        (
            Some("k11"),
            Some("application/json"),
            {
                let mut b = ok.clone();
                b.as_object_mut().unwrap().remove("quote_id");
                b.to_string()
            },
            "quote_id",
        ),
        (
            Some("k12"),
            Some("application/json"),
            {
                let mut b = ok.clone();
                b["region"] = json!("MARS");
                b.to_string()
            },
            "region",
        ),
        (Some("k13"), Some("application/json"), devices("BIG", 501).to_string(), "items"),
    ];
    for (key, ct, body, field) in cases {
        let (status, e) = error_of(api.post_raw(key, ct, body).await).await;
        assert_eq!(status, 400, "{field}: {e:?}");
        if field.is_empty() {
            assert_eq!(e.error, "invalid_json", "{e:?}");
        } else {
            assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
        }
    }
    assert_eq!(api.stats().await.activations, 0);
    // The limit is exactly the batch size.
    let full = api
        .post("/v1/reactivations", Some("full"), &devices("OK", 500))
        .await;
    assert_eq!(full.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_validation_400_is_stored_under_its_key() {
    let (_sim, api) = start(SimConfig::default()).await;
    let bad = batch(vec![]);
    let first = error_of(api.post("/v1/reactivations", Some("b"), &bad).await).await;
    let r = api.post("/v1/reactivations", Some("b"), &bad).await;
    assert_eq!(r.headers()[IDEMPOTENT_REPLAYED], "true");
    assert_eq!(error_of(r).await, first);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_item_in_one_batch_is_rejected_not_activated_twice() {
    let (_sim, api) = start(SimConfig::default()).await;
    let body = batch(vec![device("D|C|1", "DE"), device("D|C|1", "DE")]);
    let r: ReactivationAccepted = api
        .post("/v1/reactivations", Some("dup"), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r.items[1].reason.as_deref(), Some("DUPLICATE_IN_BATCH"));
    let s = api.stats().await;
    assert_eq!((s.activations, s.duplicate_activations), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_bodies_are_413_and_garbage_never_breaks_the_server() {
    let (sim, _) = start(SimConfig {
        max_body_bytes: 64 * 1024,
        ..SimConfig::default()
    })
    .await;
    let api = Api::unpooled(&sim);
    let huge = format!("{{\"contract_id\":\"{}\"}}", "x".repeat(200 * 1024));
    let (status, e) = error_of(
        api.post_raw(Some("h"), Some("application/json"), huge.clone())
            .await,
    )
    .await;
    assert_eq!((status, e.error.as_str()), (413, "body_too_large"));
    // Without a Content-Length (chunked), the limit still holds.
    let addr = sim.addr();
    let raw = tokio::task::spawn_blocking(move || chunked_post(addr, huge.as_bytes()))
        .await
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");

    let deep = "[".repeat(50_000);
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        deep.into_bytes(),
        b"{\"items\": [{\"item_key\": 1e999999}]}".to_vec(),
        b"{\"contract_id\": \"\\ud800\"}".to_vec(),
        br#"{"contract_id":"C","region":"EMEA","quote_id":"Q","coverage":"standard","items":[null]}"#.to_vec(),
        br#"{"contract_id":"C","region":"EMEA","quote_id":"Q","coverage":"gold","items":[]}"#.to_vec(),
        b"{} trailing".to_vec(),
    ];
    for (i, body) in garbage.into_iter().enumerate() {
        let (status, _) = error_of(
            api.post_raw(Some(&format!("g{i}")), Some("application/json"), body)
                .await,
        )
        .await;
        assert_eq!(status, 400, "garbage #{i}");
    }
    for ct in [
        "application/xml",
        "multipart/form-data",
        "application/jsonx",
    ] {
        let (status, _) = error_of(api.post_raw(Some(ct), Some(ct), "{}").await).await;
        assert_eq!(status, 400, "{ct}");
    }
    let r = api
        .client
        .post(format!("{}/v1/cases", api.url))
        .bearer_auth("t")
        .header("content-type", "application/json")
        .body("{\"item_key\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 400);
    // Still serving.
    assert_eq!(
        api.post("/v1/reactivations", Some("alive"), &devices("Z", 1))
            .await
            .status(),
        202
    );
}

/// A chunked POST written by hand (no Content-Length to refuse early);
/// returns what the server answered.
fn chunked_post(addr: std::net::SocketAddr, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = "POST /v1/reactivations HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer t\r\nIdempotency-Key: chunked\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    // The server may answer and close before the whole body is sent.
    let _ = s.write_all(head.as_bytes());
    for chunk in body.chunks(8192) {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_resources_are_404_and_wrong_methods_405_in_json() {
    let (_sim, api) = start(SimConfig::default()).await;
    for path in [
        "/v1/reactivations/rq-99999999",
        "/v1/cases/CS-1",
        "/v1/nothing",
        "/nothing",
    ] {
        let (status, e) = error_of(api.get(path).await).await;
        assert_eq!((status, e.error.as_str()), (404, "not_found"), "{path}");
    }
    let r = api
        .client
        .delete(format!("{}/v1/reactivations", api.url))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(error_of(r).await.0, 405);
}

/// Polls until every item is terminal, recording the states seen.
async fn poll_until_terminal(api: &Api, id: &str) -> (ReactivationStatus, Vec<ItemState>) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: ReactivationStatus = api
            .get(&format!("/v1/reactivations/{id}"))
            .await
            .json()
            .await
            .unwrap();
        for i in &s.items {
            if !seen.contains(&i.state) {
                seen.push(i.state);
            }
        }
        if s.items.iter().all(|i| i.state.is_terminal()) {
            return (s, seen);
        }
        assert!(Instant::now() < deadline, "never terminal: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn items_go_pending_provisioning_active_on_their_countrys_calendar() {
    // Long enough days that a poll every few ms sees every state.
    let (_sim, api) = start(SimConfig {
        business_day_ms: 100,
        ..SimConfig::default()
    })
    .await;
    let body = batch(vec![
        device("US1|C-1|2026-10-01", "US"),
        device("SA1|C-1|2026-10-01", "SA"),
        device("DE1|C-1|2026-10-01", "de"),
        device("KP1|C-1|2026-10-01", "KP"),
        device("ZZ1|C-1|2026-10-01", "ZZ"),
    ]);
    let accepted: ReactivationAccepted = api
        .post("/v1/reactivations", Some("life"), &body)
        .await
        .json()
        .await
        .unwrap();
    let p = policy();
    let day = accepted.accepted_at.date_naive();
    for (i, code) in [(0, "US"), (1, "SA"), (2, "DE")] {
        let country = p.countries.parse(code).unwrap();
        assert_eq!(
            accepted.items[i].eta,
            p.activation_eta(country, refleet::domain::Coverage::Standard, day),
            "{code}"
        );
    }
    assert_eq!(
        accepted.items[3].reason.as_deref(),
        Some("REGION_RESTRICTED")
    );
    assert_eq!(accepted.items[4].reason.as_deref(), Some("COUNTRY_UNKNOWN"));

    let (done, seen) = poll_until_terminal(&api, &accepted.request_id).await;
    assert!(seen.contains(&ItemState::Pending), "{seen:?}");
    assert!(seen.contains(&ItemState::Provisioning), "{seen:?}");
    for item in &done.items[..3] {
        assert_eq!(item.state, ItemState::Active);
        assert!(item.confirmation_id.as_deref().unwrap().starts_with("CNF-"));
        let f = item.features_verified.unwrap();
        assert!(f.meetings && f.conferencing && f.uc);
        let at = item.activated_at.unwrap();
        assert!(at.date_naive() >= item.eta.unwrap());
        assert!(at >= done.accepted_at + chrono::TimeDelta::days(1));
    }
    assert_eq!(done.items[3].state, ItemState::Rejected);
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_and_fail_rates_are_decided_per_item() {
    let (_sim, api) = start(SimConfig {
        business_day_ms: 5,
        reject_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let r: ReactivationAccepted = api
        .post("/v1/reactivations", Some("r"), &devices("R", 3))
        .await
        .json()
        .await
        .unwrap();
    assert!(r
        .items
        .iter()
        .all(|i| i.reason.as_deref() == Some("VENDOR_NOT_ELIGIBLE")));
    assert_eq!(api.stats().await.activations, 0);

    let (_sim, api) = start(SimConfig {
        business_day_ms: 5,
        fail_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let r: ReactivationAccepted = api
        .post("/v1/reactivations", Some("f"), &devices("F", 3))
        .await
        .json()
        .await
        .unwrap();
    let (done, _) = poll_until_terminal(&api, &r.request_id).await;
    assert!(done.items.iter().all(
        |i| i.state == ItemState::Failed && i.reason.as_deref() == Some("PROVISIONING_FAILED")
    ));

    // A share: the same seed decides the same items, whoever asks.
    let config = SimConfig {
        reject_rate: 0.5,
        seed: 42,
        ..SimConfig::default()
    };
    let mut verdicts = Vec::new();
    for _ in 0..2 {
        let (_sim, api) = start(config.clone()).await;
        let r: ReactivationAccepted = api
            .post("/v1/reactivations", Some("s"), &devices("S", 200))
            .await
            .json()
            .await
            .unwrap();
        verdicts.push(r.items.iter().map(|i| i.reason.clone()).collect::<Vec<_>>());
    }
    assert_eq!(verdicts[0], verdicts[1]);
    let rejected = verdicts[0].iter().filter(|r| r.is_some()).count();
    assert!((60..140).contains(&rejected), "{rejected}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_are_opened_then_picked_up() {
    let (_sim, api) = start(SimConfig {
        business_day_ms: 30,
        ..SimConfig::default()
    })
    .await;
    let body = json!({"item_key": "S1|C-1|2026-10-01", "contract_id": "C-1", "reason": "PROVISIONING_FAILED", "request_id": "rq-00000001"});
    let r = api.post("/v1/cases", None, &body).await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let case: Case = r.json().await.unwrap();
    assert_eq!(location, format!("/v1/cases/{}", case.case_id));
    assert_eq!(case.state, refleet::api::CaseState::Open);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let later: Case = api.get(&location).await.json().await.unwrap();
    assert_eq!(later.state, refleet::api::CaseState::InProgress);
    // With a key, a retried case is not opened twice.
    let a = api.post("/v1/cases", Some("case-k"), &body).await;
    let b = api.post("/v1/cases", Some("case-k"), &body).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 201));
    assert_eq!(b.headers()[IDEMPOTENT_REPLAYED], "true");
    assert_eq!(api.stats().await.cases, 2);
    let (status, e) = error_of(
        api.post(
            "/v1/cases",
            None,
            &json!({"item_key": "", "contract_id": "C", "reason": "X"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, e.field.as_deref()), (400, Some("item_key")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_item_under_two_keys_is_a_duplicate_activation() {
    let (_sim, api) = start(SimConfig::default()).await;
    let body = devices("P", 2);
    assert_eq!(
        api.post("/v1/reactivations", Some("one"), &body)
            .await
            .status(),
        202
    );
    assert_eq!(
        api.post("/v1/reactivations", Some("two"), &body)
            .await
            .status(),
        202
    );
    let s = api.stats().await;
    assert_eq!((s.activations, s.duplicate_activations), (4, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_clients_replaying_keys_activate_each_item_once() {
    let (sim, api) = start(SimConfig {
        latency_ms: Some((0, 5)),
        seed: 3,
        ..SimConfig::default()
    })
    .await;
    let url = api.url.clone();
    // 20 batches of 5 items; each sent by 10 clients at once, twice over.
    let bodies: Vec<Value> = (0..20).map(|b| devices(&format!("B{b}-"), 5)).collect();
    let bodies = Arc::new(bodies);
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for c in 0..200usize {
        let (bodies, barrier, url) = (bodies.clone(), barrier.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = http().build().expect("a client");
            let b = c % 20;
            let key = format!("batch-{b}");
            barrier.wait().await;
            let mut answers = Vec::new();
            for _round in 0..2 {
                loop {
                    let r = client
                        .post(format!("{url}/v1/reactivations"))
                        .bearer_auth("t")
                        .header(IDEMPOTENCY_KEY, &key)
                        .json(&bodies[b])
                        .send()
                        .await
                        .expect("answered");
                    match r.status().as_u16() {
                        409 => tokio::time::sleep(Duration::from_millis(2)).await,
                        202 => {
                            answers.push((b, r.json::<ReactivationAccepted>().await.unwrap()));
                            break;
                        }
                        s => panic!("unexpected {s}"),
                    }
                }
            }
            answers
        }));
    }
    let mut by_batch: std::collections::HashMap<usize, ReactivationAccepted> = Default::default();
    for t in tasks {
        for (b, answer) in t.await.unwrap() {
            let first = by_batch.entry(b).or_insert_with(|| answer.clone());
            assert_eq!(*first, answer, "every client of a key sees one answer");
        }
    }
    let s = api.stats().await;
    assert_eq!(s.duplicate_activations, 0);
    assert_eq!(s.activations, 100);
    assert_eq!(s.reactivation_requests, 20);
    assert_eq!(s.replays, 400 - 20);
    assert!(sim.request_log().len() >= 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_answers_429_and_its_retry_after_is_truthful() {
    let (sim, api) = start(SimConfig {
        rate_limit: Some(RateLimit {
            per_second: 1.0,
            burst: 2,
        }),
        ..SimConfig::default()
    })
    .await;
    let path = "/v1/reactivations/rq-none";
    for _ in 0..2 {
        let r = api.get(path).await;
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=2;w=2");
    }
    let limited = api.get(path).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(limited.headers()["ratelimit-policy"], "\"default\";q=2;w=2");
    assert_eq!(
        limited.headers()["ratelimit"],
        format!("\"default\";r=0;t={retry_after}").as_str()
    );
    assert_eq!(error_of(limited).await.1.error, "rate_limited");
    // Hammering while limited is refused too...
    for _ in 0..5 {
        assert_eq!(api.get(path).await.status(), 429);
    }
    // ...and the answer after Retry-After gets through.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(api.get(path).await.status(), 404);
    let s = api.stats().await;
    assert_eq!(s.rate_limited, 6);
    let log = sim.request_log();
    assert_eq!(log.len(), 9);
    assert_eq!(log[2].status, 429);
    assert_eq!(log[2].retry_after, Some(Duration::from_secs(retry_after)));
    assert_eq!(log[2].method, "GET");
    assert_eq!(log[2].path, path);
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_errors_do_nothing_and_free_the_key() {
    let (_sim, api) = start(SimConfig {
        error_rate: 0.5,
        seed: 11,
        ..SimConfig::default()
    })
    .await;
    let body = devices("E", 4);
    let mut statuses = Vec::new();
    loop {
        let r = api.post("/v1/reactivations", Some("e"), &body).await;
        let status = r.status().as_u16();
        if status == 503 {
            assert_eq!(r.headers()["retry-after"], "1");
        }
        statuses.push(status);
        if status == 202 {
            break;
        }
        assert!(status == 500 || status == 503, "{status}");
        assert!(statuses.len() < 50);
    }
    let s = api.stats().await;
    assert_eq!(s.activations, 4);
    assert_eq!(s.injected_errors as usize, statuses.len() - 1);

    // The same seed fails the same requests.
    let (_sim2, api2) = start(SimConfig {
        error_rate: 0.5,
        seed: 11,
        ..SimConfig::default()
    })
    .await;
    let mut again = Vec::new();
    for _ in 0..statuses.len() {
        again.push(
            api2.post("/v1/reactivations", Some("e"), &body)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(again, statuses);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_or_a_timeout_still_does_the_work() {
    let (_sim, api) = start(SimConfig {
        reset_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let body = devices("RS", 2);
    let r = api.post("/v1/reactivations", Some("rs"), &body).await;
    assert!(r.bytes().await.is_err(), "the body is cut off");
    let s = api.stats().await;
    assert_eq!((s.resets, s.activations), (1, 2));

    let (sim, api) = start(SimConfig {
        timeout_rate: 1.0,
        timeout_ms: 5_000,
        ..SimConfig::default()
    })
    .await;
    let client = http().timeout(Duration::from_millis(300)).build().unwrap();
    let err = client
        .post(format!("{}/v1/reactivations", api.url))
        .bearer_auth("t")
        .header(IDEMPOTENCY_KEY, "to")
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let s = api.stats().await;
    assert_eq!((s.timeouts, s.activations), (1, 2));
    // Stopping does not wait for the hung request.
    let t = Instant::now();
    sim.stop().await;
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn starts_in_the_background_for_blocking_callers() {
    let sim = Sim::start_in_background(SimConfig::default(), policy()).unwrap();
    assert!(sim.url().starts_with("http://127.0.0.1:"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = sim.url();
    let get_stats = || {
        http()
            .build()
            .expect("a client")
            .get(format!("{url}/v1/_sim/stats"))
            .bearer_auth("t")
            .send()
    };
    let stats: SimStats = rt.block_on(async { get_stats().await.unwrap().json().await.unwrap() });
    assert_eq!(stats, SimStats::default());
    sim.shutdown();
    assert!(rt.block_on(get_stats()).is_err());
}

#[test]
fn bad_knobs_are_usage_errors() {
    for args in [
        &["sim", "--reject-rate", "2"][..],
        &["sim", "--error-rate", "-0.1"],
        &["sim", "--latency-ms", "9..1"],
        &["sim", "--rate-limit", "0"],
        &["sim", "--burst", "3"],
        &["sim", "--business-day-ms", "0"],
    ] {
        let out = assert_cmd::Command::cargo_bin("refleet")
            .unwrap()
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// One raw HTTP/1.1 GET; returns the status code.
fn raw_get(addr: &str, path: &str, token: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn refleet_sim_says_it_is_a_simulation_and_where_it_listens() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_refleet"))
        .args(["sim", "--listen", "127.0.0.1:0"])
        .env("REFLEET_SIM_TOKEN", "from-env")
        .env_remove("REFLEET_POLICY")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .map(str::to_string);
    let statuses = addr.as_deref().map(|a| {
        (
            raw_get(a, "/v1/reactivations/x", "wrong"),
            raw_get(a, "/v1/reactivations/x", "from-env"),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("SIMULATED"), "{line}");
    assert_eq!(statuses, Some((401, 404)), "{line}");
}

/// Regression: each simulator numbered its ids from `rq-00000001`, so a
/// client resuming against a new one polled another batch under an id it
/// held. Two simulators never give the same id, nor know each other's.
#[tokio::test(flavor = "multi_thread")]
async fn two_simulators_never_give_the_same_request_id() {
    let (_a, api_a) = start(SimConfig::default()).await;
    let (_b, api_b) = start(SimConfig::default()).await;
    let body = devices("U", 2);
    let a: ReactivationAccepted = api_a
        .post("/v1/reactivations", Some("k"), &body)
        .await
        .json()
        .await
        .unwrap();
    let b: ReactivationAccepted = api_b
        .post("/v1/reactivations", Some("k"), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(a.request_id, b.request_id);
    let path = format!("/v1/reactivations/{}", a.request_id);
    assert_eq!(api_b.get(&path).await.status(), 404);
    assert_eq!(api_a.get(&path).await.status(), 200);
}

/// A simulator started again on its state file (as `refleet run` does with
/// the one beside its journal) carries on: its requests, cases and keys,
/// and the items it already accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_simulator_started_again_on_its_state_file_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig {
        state_file: Some(dir.path().join("sim.jsonl")),
        ..SimConfig::default()
    };
    let body = devices("R", 3);
    let case_body = json!({"item_key": "R0000|C-1|2026-10-01", "contract_id": "C-1", "reason": "PROVISIONING_FAILED"});
    let (first_sim, api) = start(config.clone()).await;
    let first: ReactivationAccepted = api
        .post("/v1/reactivations", Some("key-1"), &body)
        .await
        .json()
        .await
        .unwrap();
    let case: Case = api
        .post("/v1/cases", Some("case-1"), &case_body)
        .await
        .json()
        .await
        .unwrap();
    first_sim.stop().await;

    let (sim, api) = start(config).await;
    let status = api
        .get(&format!("/v1/reactivations/{}", first.request_id))
        .await;
    assert_eq!(status.status(), 200);
    let status: ReactivationStatus = status.json().await.unwrap();
    assert_eq!(status.items.len(), 3);
    assert_eq!(
        api.get(&format!("/v1/cases/{}", case.case_id))
            .await
            .status(),
        200
    );
    // The keys replay their first answers.
    let again = api.post("/v1/reactivations", Some("key-1"), &body).await;
    assert_eq!(again.headers()[IDEMPOTENT_REPLAYED], "true");
    let again: ReactivationAccepted = again.json().await.unwrap();
    assert_eq!(again, first);
    let again = api.post("/v1/cases", Some("case-1"), &case_body).await;
    assert_eq!(again.headers()[IDEMPOTENT_REPLAYED], "true");
    assert_eq!(
        api.post("/v1/reactivations", Some("key-1"), &devices("R", 2))
            .await
            .status(),
        422
    );
    // The same items under a new key: a second activation, counted, with
    // an id the first simulator never gave.
    let dup: ReactivationAccepted = api
        .post("/v1/reactivations", Some("key-2"), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(dup.request_id.get(..12), first.request_id.get(..12));
    let s = sim.stats();
    assert_eq!(
        (s.reactivation_requests, s.replays, s.duplicate_activations),
        (1, 2, 3)
    );
}
