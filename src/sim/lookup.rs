//! `POST /v1/items/lookup`: the vendor's latest record of up to
//! [`MAX_LOOKUP`] devices or licenses, named by serial number or license id.
//!
//! The simulator answers from everything it has accepted, under any
//! idempotency key, and from the items "reactivated by hand" that
//! `refleet sim --preactivated FILE` loads ([`load_preactivated`]): what a
//! client asks before paying, so that an item another journal, another
//! runner or a person in the portal already reactivated is not paid twice.
//! Read-only: no idempotency key, nothing changes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::handlers::{
    item_status, json_problem, parse_typed, plan_of, read_json, respond, Problem,
};
use super::state::{Latest, PortalRecord, Stored};
use super::{lock, Shared};
use crate::api::{
    Features, ItemState, LookupAnswer, LookupItem, LookupRequest, LookupResult, VendorRecord,
    MAX_LOOKUP,
};

/// `POST /v1/items/lookup`.
pub(super) async fn lookup_items(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let plan = plan_of(&req);
    let (parts, body) = req.into_parts();
    let bytes = match read_json(&parts.headers, body, shared.config.max_body_bytes).await {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    if let Some(d) = plan.latency {
        shared.sleep(d).await;
    }
    let request = match serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(json_problem)
        .and_then(parse_typed::<LookupRequest>)
        .and_then(|r| validate(&r).map(|()| r))
    {
        Ok(r) => r,
        Err(p) => return p.into_response(),
    };
    let answer = answer(&shared, &request);
    respond(
        Stored {
            status: StatusCode::OK.as_u16(),
            body: super::handlers::json_bytes(&answer),
            location: None,
        },
        false,
    )
}

fn validate(r: &LookupRequest) -> Result<(), Problem> {
    if r.items.is_empty() || r.items.len() > MAX_LOOKUP {
        return Err(Problem::bad(
            "invalid_request",
            format!(
                "items: between 1 and {MAX_LOOKUP} items, not {}",
                r.items.len()
            ),
            Some("items".into()),
        ));
    }
    for (i, it) in r.items.iter().enumerate() {
        let named = match (&it.serial_number, &it.license_id) {
            (Some(s), None) => Some(("serial_number", s)),
            (None, Some(l)) => Some(("license_id", l)),
            _ => None,
        };
        let Some((field, value)) = named else {
            return Err(Problem::bad(
                "invalid_request",
                format!("items[{i}]: name exactly one of serial_number and license_id"),
                Some(format!("items[{i}]")),
            ));
        };
        if value.is_empty() {
            return Err(Problem::bad(
                "invalid_request",
                format!("items[{i}].{field}: must not be empty"),
                Some(format!("items[{i}].{field}")),
            ));
        }
        if it.contract_id.is_empty() {
            return Err(Problem::bad(
                "invalid_request",
                format!("items[{i}].contract_id: must not be empty"),
                Some(format!("items[{i}].contract_id")),
            ));
        }
    }
    Ok(())
}

/// One result per item, in the order asked.
fn answer(shared: &Shared, request: &LookupRequest) -> LookupAnswer {
    let now = shared.clock.now();
    let seed = shared.config.seed;
    let store = lock(&shared.store);
    let items = request
        .items
        .iter()
        .map(|asked| {
            let record = match store.latest.get(asked.identity().trim()) {
                None => None,
                Some(Latest::Portal(p)) => Some(portal_record(p)),
                Some(Latest::Request { request_id, index }) => {
                    store.requests.get(request_id).and_then(|rq| {
                        rq.items.get(*index).map(|it| {
                            let s = item_status(seed, &rq.request_id, it, rq.accepted_at, now);
                            VendorRecord {
                                state: s.state,
                                contract_id: rq.contract_id.clone(),
                                request_id: Some(rq.request_id.clone()),
                                item_key: Some(it.item_key.clone()),
                                deactivated_at: Some(it.deactivated_at.clone()),
                                accepted_at: rq.accepted_at,
                                activated_at: s.activated_at,
                                eta: s.eta,
                                confirmation_id: s.confirmation_id,
                                features_verified: s.features_verified,
                                reason: s.reason,
                            }
                        })
                    })
                }
            };
            result(asked, record)
        })
        .collect();
    LookupAnswer { items }
}

fn result(asked: &LookupItem, record: Option<VendorRecord>) -> LookupResult {
    LookupResult {
        serial_number: asked.serial_number.clone(),
        license_id: asked.license_id.clone(),
        contract_id: asked.contract_id.clone(),
        found: record.is_some(),
        record,
    }
}

fn portal_record(p: &PortalRecord) -> VendorRecord {
    VendorRecord {
        state: ItemState::Active,
        contract_id: p.contract_id.clone(),
        request_id: None,
        item_key: None,
        deactivated_at: None,
        accepted_at: p.activated_at,
        activated_at: Some(p.activated_at),
        eta: Some(p.activated_at.date_naive()),
        confirmation_id: Some(format!("PORTAL-{}", p.identity)),
        features_verified: Some(Features {
            meetings: true,
            conferencing: true,
            uc: true,
        }),
        reason: None,
    }
}

/// Why a `--preactivated` file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PreactivatedError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Csv { path: String, message: String },
    #[error("{path} row {row}, column {column}: {message}")]
    Row {
        path: String,
        row: u64,
        column: &'static str,
        message: String,
    },
}

/// Reads the items "reactivated by hand" from a CSV file with a header:
/// `serial_number` or `license_id` (one per row), and optionally
/// `contract_id` and `activated_at` (RFC 3339 date-time or ISO date;
/// default `default_at`, the simulator's start). Serial numbers and license
/// ids are taken as the API names them (upper-case, trimmed).
pub fn load_preactivated(
    path: &std::path::Path,
    default_at: DateTime<Utc>,
) -> Result<Vec<PortalRecord>, PreactivatedError> {
    let shown = path.display().to_string();
    let csv_err = |e: csv::Error| PreactivatedError::Csv {
        path: shown.clone(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|source| PreactivatedError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(file);
    let headers = reader.headers().map_err(csv_err)?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (serial, license) = (col("serial_number"), col("license_id"));
    if serial.is_none() && license.is_none() {
        return Err(PreactivatedError::Csv {
            path: shown,
            message: format!(
                "needs a `serial_number` or `license_id` column; found {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let (contract, at) = (col("contract_id"), col("activated_at"));
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(csv_err)?;
        let row = i as u64 + 1;
        let cell = |c: Option<usize>| c.and_then(|c| rec.get(c)).map(str::trim).unwrap_or("");
        let (identity, is_license) = match (cell(serial), cell(license)) {
            (s, "") if !s.is_empty() => (s.to_ascii_uppercase(), false),
            ("", l) if !l.is_empty() => (l.to_ascii_uppercase(), true),
            _ => {
                return Err(PreactivatedError::Row {
                    path: shown,
                    row,
                    column: "serial_number",
                    message: "name exactly one of serial_number and license_id".into(),
                })
            }
        };
        let activated_at = match cell(at) {
            "" => default_at,
            text => parse_time(text).ok_or_else(|| PreactivatedError::Row {
                path: shown.clone(),
                row,
                column: "activated_at",
                message: format!("`{text}` is not an RFC 3339 date-time or an ISO date"),
            })?,
        };
        out.push(PortalRecord {
            identity,
            is_license,
            contract_id: cell(contract).to_string(),
            activated_at,
        });
    }
    Ok(out)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}
