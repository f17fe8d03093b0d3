//! Tests of the simulator's request handlers.

use super::*;

#[test]
fn the_field_at_fault_is_named() {
    assert_eq!(
        field_of(".", "missing field `items` at line 1 column 2"),
        Some("items".into())
    );
    assert_eq!(
        field_of(
            "items[3].colour",
            "unknown field `colour`, expected one of ..."
        ),
        Some("items[3].colour".into())
    );
    assert_eq!(
        field_of(
            "items[0].country",
            "invalid type: integer `1`, expected a string"
        ),
        Some("items[0].country".into())
    );
    assert_eq!(field_of(".", "invalid type: sequence"), None);
}

#[test]
fn each_item_activates_on_its_own_countrys_business_calendar() {
    use crate::api::RequestItem;
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    // Thanksgiving Thursday, 10:00; the clock barely moves during the test.
    let shared = Shared::starting_at(
        super::super::SimConfig {
            business_day_ms: 1 << 40,
            ..Default::default()
        },
        Arc::new(crate::policy::Policy::load(None).unwrap()),
        t("2026-11-26T10:00:00Z"),
    );
    let item = |key: &str, country: &str| RequestItem {
        item_key: key.into(),
        item_type: ItemType::Device,
        serial_number: Some(key.into()),
        mac_address: None,
        model: None,
        license_id: None,
        bound_serial: None,
        country: country.into(),
        deactivated_at: "2026-10-01".into(),
    };
    let stored = accept(
        &shared,
        ReactivationRequest {
            contract_id: "C".into(),
            region: "EMEA".into(),
            quote_id: "Q".into(),
            coverage: CoverageWire::Extended,
            items: vec![item("SA1", "SA"), item("DE1", "DE"), item("US1", "US")],
        },
        &Claim {
            key: None,
            fingerprint: [0; 32],
        },
    );
    let body: ReactivationAccepted = serde_json::from_slice(&stored.body).unwrap();
    let etas: Vec<_> = body.items.iter().map(|i| i.eta.unwrap()).collect();
    // One business day: Saudi Arabia's weekend is Friday–Saturday, so
    // Sunday; Germany, Friday; the US, Friday too (a holiday today does
    // not delay tomorrow).
    assert_eq!(etas, [d("2026-11-29"), d("2026-11-27"), d("2026-11-27")]);

    let record = lock(&shared.store).requests[&body.request_id].clone();
    let sa = &record.items[0];
    let at = |now: &str| item_status(0, &record.request_id, sa, record.accepted_at, t(now));
    assert_eq!(at("2026-11-27T09:00:00Z").state, ItemState::Pending);
    assert_eq!(at("2026-11-28T17:00:00Z").state, ItemState::Provisioning);
    let done = at("2026-11-29T17:00:00Z");
    assert_eq!(done.state, ItemState::Active);
    assert_eq!(done.activated_at, Some(t("2026-11-29T17:00:00Z")));
    assert!(done.confirmation_id.is_some() && done.features_verified.is_some());
}

#[test]
fn keys_are_visible_ascii_of_bounded_length() {
    let mut h = HeaderMap::new();
    assert!(idempotency_key(&h, true).is_err());
    assert_eq!(idempotency_key(&h, false).unwrap(), None);
    h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("rf-abc"));
    assert_eq!(
        idempotency_key(&h, true).unwrap().as_deref(),
        Some("rf-abc")
    );
    h.insert(
        IDEMPOTENCY_KEY,
        HeaderValue::from_str(&"k".repeat(KEY_MAX_LEN + 1)).unwrap(),
    );
    assert!(idempotency_key(&h, true).is_err());
    h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("a b"));
    assert!(idempotency_key(&h, true).is_err());
}
