//! The support-case operations: `POST /v1/cases` and `GET /v1/cases/{id}`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};

use super::{
    cannot_record, idempotent, json_bytes, keyed_json, last_segment, parse_typed, plan_of, respond,
    Problem,
};
use crate::api::{Case, CaseRequest, CaseState};
use crate::sim::saved::{to_hex, Claim, Entry, SavedAnswer};
use crate::sim::state::{CaseRecord, Counters, Stored};
use crate::sim::{lock, Shared};

/// `POST /v1/cases`: the key is optional here, and honoured when sent.
pub(in crate::sim) async fn create_case(
    State(shared): State<Arc<Shared>>,
    req: Request,
) -> Response {
    let (plan, key, bytes) = match keyed_json(&shared, req, false).await {
        Ok(parts) => parts,
        Err(answer) => return answer,
    };
    idempotent(
        &shared,
        key,
        &bytes,
        plan.latency,
        |sh, parsed, claim| match parsed
            .and_then(parse_typed::<CaseRequest>)
            .and_then(|c| validate_case(&c).map(|()| c))
        {
            Ok(c) => open_case(sh, c, claim),
            Err(p) => p.stored(),
        },
    )
    .await
}

pub(super) fn validate_case(c: &CaseRequest) -> Result<(), Problem> {
    for (field, value) in [
        ("item_key", &c.item_key),
        ("contract_id", &c.contract_id),
        ("reason", &c.reason),
    ] {
        if value.is_empty() {
            return Err(Problem::bad(
                "invalid_request",
                format!("{field} must not be empty"),
                Some(field.to_string()),
            ));
        }
    }
    Ok(())
}

pub(super) fn open_case(shared: &Shared, c: CaseRequest, claim: &Claim) -> Stored {
    let opened_at = shared.clock.now();
    let mut store = lock(&shared.store);
    let case_id = store.next_case_id();
    let record = CaseRecord {
        case_id: case_id.clone(),
        item_key: c.item_key,
        contract_id: c.contract_id,
        reason: c.reason,
        opened_at,
    };
    let answer = Stored {
        status: StatusCode::CREATED.as_u16(),
        body: json_bytes(&case_view(&record, opened_at)),
        location: Some(format!("/v1/cases/{case_id}")),
    };
    let saved = shared.saved.append(|| Entry::Case {
        key: claim.key.clone(),
        fingerprint: to_hex(&claim.fingerprint),
        answer: SavedAnswer::from(&answer),
        case: record.clone(),
    });
    if let Err(e) = saved {
        return cannot_record(&e);
    }
    Counters::bump(&shared.counters.cases);
    store.cases.insert(case_id, record);
    answer
}

/// Support picks a case up after a simulated day and, in the simulator,
/// never closes it: the client's job ends at escalation.
pub(super) fn case_view(c: &CaseRecord, now: DateTime<Utc>) -> Case {
    Case {
        case_id: c.case_id.clone(),
        state: if now < c.opened_at + TimeDelta::days(1) {
            CaseState::Open
        } else {
            CaseState::InProgress
        },
        item_key: c.item_key.clone(),
        contract_id: c.contract_id.clone(),
        reason: c.reason.clone(),
        opened_at: c.opened_at,
    }
}

/// `GET /v1/cases/{id}`.
pub(in crate::sim) async fn get_case(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if let Some(d) = plan_of(&req).latency {
        shared.sleep(d).await;
    }
    let id = last_segment(req.uri().path());
    let now = shared.clock.now();
    let view = lock(&shared.store).cases.get(id).map(|c| case_view(c, now));
    match view {
        Some(case) => respond(
            Stored {
                status: 200,
                body: json_bytes(&case),
                location: None,
            },
            false,
        ),
        None => Problem {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            message: format!("no case `{id}`"),
            field: None,
        }
        .into_response(),
    }
}
