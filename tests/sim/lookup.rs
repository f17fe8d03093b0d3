//! `POST /v1/items/lookup`: what the vendor already holds, whoever bought it.

use refleet::api::{ItemState, LookupAnswer, ReactivationAccepted};
use refleet::sim::{PortalRecord, RateLimit, SimConfig};
use serde_json::json;

use super::{batch, device, error_of, start};

fn portal(serial: &str) -> PortalRecord {
    PortalRecord {
        identity: serial.to_string(),
        is_license: false,
        contract_id: "C-9".to_string(),
        activated_at: "2026-11-30T08:00:00Z".parse().expect("a time"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn finds_items_bought_under_any_key_and_by_hand_and_not_the_others() {
    let (_sim, api) = start(SimConfig {
        business_day_ms: 1,
        preactivated: vec![portal("PORTAL0001")],
        ..SimConfig::default()
    })
    .await;
    // Bought under one key by one journal.
    let r = api
        .post(
            "/v1/reactivations",
            Some("key-one"),
            &batch(vec![device("AAAA0001|C-1|2026-10-01", "DE")]),
        )
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let accepted: ReactivationAccepted = r.json().await.unwrap();

    let r = api
        .post(
            "/v1/items/lookup",
            None,
            &json!({"items": [
                {"serial_number": "AAAA0001", "contract_id": "C-1"},
                {"serial_number": "NEVERSEEN1", "contract_id": "C-1"},
                {"serial_number": "PORTAL0001", "contract_id": "C-1"},
            ]}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let answer: LookupAnswer = r.json().await.unwrap();
    assert_eq!(answer.items.len(), 3, "one result per item, in order");
    let bought = answer.items[0].record.as_ref().expect("found");
    assert!(answer.items[0].found);
    assert_eq!(
        bought.request_id.as_deref(),
        Some(accepted.request_id.as_str())
    );
    assert_eq!(bought.item_key.as_deref(), Some("AAAA0001|C-1|2026-10-01"));
    assert_eq!(bought.deactivated_at.as_deref(), Some("2026-10-01"));
    assert_eq!(bought.contract_id, "C-1");
    assert!(matches!(
        bought.state,
        ItemState::Pending | ItemState::Provisioning | ItemState::Active
    ));
    assert!(!answer.items[1].found && answer.items[1].record.is_none());
    assert_eq!(answer.items[1].serial_number.as_deref(), Some("NEVERSEEN1"));
    let by_hand = answer.items[2].record.as_ref().expect("found");
    assert_eq!(by_hand.state, ItemState::Active);
    assert_eq!(
        by_hand.request_id, None,
        "no API request behind portal work"
    );
    assert!(by_hand.confirmation_id.is_some() && by_hand.activated_at.is_some());

    // Once provisioned, the lookup says active with the confirmation.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let answer: LookupAnswer = api
        .post(
            "/v1/items/lookup",
            None,
            &json!({"items": [{"serial_number": "AAAA0001", "contract_id": "C-1"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let rec = answer.items[0].record.as_ref().unwrap();
    assert_eq!(rec.state, ItemState::Active);
    assert!(rec.confirmation_id.is_some() && rec.features_verified.is_some());
    let stats = api.stats().await;
    assert_eq!(stats.activations, 1, "a lookup buys nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_lookups_are_json_400s_naming_the_field() {
    let (_sim, api) = start(SimConfig::default()).await;
    let too_many: Vec<_> = (0..501)
        .map(|i| json!({"serial_number": format!("S{i:09}"), "contract_id": "C-1"}))
        .collect();
    for (body, field) in [
        (json!({"items": []}), "items"),
        (json!({"items": too_many}), "items"),
        (
            json!({"items": [{"serial_number": "A", "license_id": "B", "contract_id": "C"}]}),
            "items[0]",
        ),
        (json!({"items": [{"contract_id": "C"}]}), "items[0]"),
        (
            json!({"items": [{"serial_number": "0", "license_id": "", "contract_id": "C"}]}),
            "items[0]",
        ),
        (
            json!({"items": [{"license_id": "", "contract_id": "C"}]}),
            "items[0].license_id",
        ),
        (
            json!({"items": [{"serial_number": "A", "contract_id": ""}]}),
            "items[0].contract_id",
        ),
        (json!({"things": []}), "things"),
    ] {
        let (status, err) = error_of(api.post("/v1/items/lookup", None, &body).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(err.field.as_deref(), Some(field), "{body}: {}", err.message);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_need_the_token_and_count_against_the_rate_limit() {
    let (sim, api) = start(SimConfig {
        token: Some("t".into()),
        rate_limit: Some(RateLimit {
            per_second: 1.0,
            burst: 1,
        }),
        ..SimConfig::default()
    })
    .await;
    let body = json!({"items": [{"serial_number": "AAAA0001", "contract_id": "C-1"}]});
    let anonymous = api
        .client
        .post(format!("{}/v1/items/lookup", sim.url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let first = api.post("/v1/items/lookup", None, &body).await;
    assert_eq!(first.status().as_u16(), 200);
    assert!(first.headers().contains_key("ratelimit-policy"));
    let second = api.post("/v1/items/lookup", None, &body).await;
    assert_eq!(second.status().as_u16(), 429);
    assert!(second.headers().contains_key("retry-after"));
}
