//! The vendor reactivation API on the wire (SPEC §6): the request and
//! response bodies that `refleet sim` serves and `refleet run` sends. The
//! OpenAPI document `api/openapi.json` describes exactly these types.
//!
//! Two levels of identity:
//! - each item carries its deterministic `item_key`
//!   (`serial or license | contract | deactivated_at`, see [`item_key`]):
//!   one deactivation event of one device or license;
//! - each request carries an `Idempotency-Key` header derived from the keys
//!   of its items ([`batch_key`]), so a replayed batch is recognised by the
//!   server and never activates anything twice.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Header carrying the request's idempotency key (IETF draft).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Header set on a response that replays a stored one.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
/// The most items one `POST /v1/reactivations` may carry.
pub const MAX_BATCH: usize = 500;

/// `POST /v1/reactivations` body: up to [`MAX_BATCH`] items of one contract
/// and one sales region, priced by one quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactivationRequest {
    pub contract_id: String,
    /// `AMER`, `EMEA` or `APAC`.
    pub region: String,
    pub quote_id: String,
    /// The contract's coverage, which sets the activation SLA.
    pub coverage: CoverageWire,
    pub items: Vec<RequestItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverageWire {
    Standard,
    Extended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemType {
    Device,
    License,
}

/// One device or license to reactivate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestItem {
    /// `serial or license | contract | deactivated_at`.
    pub item_key: String,
    pub item_type: ItemType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_serial: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// ISO 8601 date or date-time of the deactivation.
    pub deactivated_at: String,
}

/// `202` answer to `POST /v1/reactivations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactivationAccepted {
    pub request_id: String,
    /// Server time (simulated time in `refleet sim`).
    pub accepted_at: DateTime<Utc>,
    pub items: Vec<ItemDecision>,
}

/// The server's first word on one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemDecision {
    pub item_key: String,
    pub status: Decision,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Expected activation date, for accepted items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accepted,
    Rejected,
}

/// `200` answer to `GET /v1/reactivations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactivationStatus {
    pub request_id: String,
    pub contract_id: String,
    pub region: String,
    pub quote_id: String,
    pub accepted_at: DateTime<Utc>,
    pub items: Vec<ItemStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemStatus {
    pub item_key: String,
    pub state: ItemState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features_verified: Option<Features>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<DateTime<Utc>>,
    /// Why it failed or was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Server-side state of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Pending,
    Provisioning,
    Active,
    Failed,
    Rejected,
}

impl ItemState {
    /// The state as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Provisioning => "provisioning",
            ItemState::Active => "active",
            ItemState::Failed => "failed",
            ItemState::Rejected => "rejected",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemState::Active | ItemState::Failed | ItemState::Rejected
        )
    }
}

/// The features the vendor verified after activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    pub meetings: bool,
    pub conferencing: bool,
    pub uc: bool,
}

/// `POST /v1/cases` body: a support case for a failed or manual-review item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    pub item_key: String,
    pub contract_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<String>,
    /// Why support is needed: the failure reason or `MANUAL_REVIEW`.
    pub reason: String,
}

/// `201` answer to `POST /v1/cases` and `200` to `GET /v1/cases/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub case_id: String,
    pub state: CaseState,
    pub item_key: String,
    pub contract_id: String,
    pub reason: String,
    pub opened_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    Open,
    InProgress,
    Resolved,
}

/// The most items one `POST /v1/items/lookup` may ask about.
pub const MAX_LOOKUP: usize = 500;

/// `POST /v1/items/lookup` body: up to [`MAX_LOOKUP`] devices or licenses,
/// each named by its serial number or license id and its contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub items: Vec<LookupItem>,
}

/// One item to look up: exactly one of `serial_number` and `license_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<String>,
    pub contract_id: String,
}

impl LookupItem {
    /// The serial number or license id the item is named by.
    pub fn identity(&self) -> &str {
        self.serial_number
            .as_deref()
            .or(self.license_id.as_deref())
            .unwrap_or("")
    }
}

/// `200` answer to `POST /v1/items/lookup`: one entry per item asked, in
/// the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupAnswer {
    pub items: Vec<LookupResult>,
}

/// What the vendor holds for one item: `found: false` when it knows
/// nothing, else its latest record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<String>,
    pub contract_id: String,
    pub found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<VendorRecord>,
}

/// The vendor's latest record of an item: from a reactivation request (with
/// its request id, item key and deactivation date) or from work done by hand
/// in the vendor's portal (neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorRecord {
    pub state: ItemState,
    /// The contract the item was reactivated under.
    pub contract_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The item key of the request that reactivated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_key: Option<String>,
    /// The deactivation the request named (ISO 8601 date or date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<String>,
    pub accepted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features_verified: Option<Features>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every error body: a machine code, a sentence, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /v1/_sim/stats`: what the simulator saw (SPEC §8).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Every API request received, whatever its answer (reading these
    /// statistics and the OpenAPI document is not counted).
    pub requests: u64,
    /// Requests answered 429.
    pub rate_limited: u64,
    /// `POST /v1/reactivations` requests processed (not replays).
    pub reactivation_requests: u64,
    /// Requests answered from the idempotency store.
    pub replays: u64,
    /// Items accepted for activation (each is billed once).
    pub activations: u64,
    /// Accepted items whose item key an earlier request had already accepted:
    /// a device or license activated (and billed) twice.
    pub duplicate_activations: u64,
    /// Injected 5xx answers.
    pub injected_errors: u64,
    /// Connections dropped on purpose.
    pub resets: u64,
    /// Requests held past the client's timeout on purpose.
    pub timeouts: u64,
    /// Support cases opened.
    pub cases: u64,
}

/// The deterministic key of one item's deactivation event (SPEC §6):
/// a re-run of the same export gives the same key, a new deactivation a new one.
pub fn item_key(identity: &str, contract_id: &str, deactivated_at: &str) -> String {
    format!("{identity}|{contract_id}|{deactivated_at}")
}

/// The `Idempotency-Key` of a batch: a digest of its items' keys in order,
/// so the same batch always gets the same key, from any journal.
pub fn batch_key<'a>(item_keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for k in item_keys {
        h.update(k.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut s = String::with_capacity(36);
    s.push_str("rf-");
    for b in &d[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_key_depends_on_every_item_and_the_order() {
        let a = batch_key(["A|C1|2025-01-01", "B|C1|2025-01-01"]);
        assert_eq!(a, batch_key(["A|C1|2025-01-01", "B|C1|2025-01-01"]));
        assert_ne!(a, batch_key(["B|C1|2025-01-01", "A|C1|2025-01-01"]));
        assert_ne!(a, batch_key(["A|C1|2025-01-02", "B|C1|2025-01-01"]));
        // The separator keeps ["ab", "c"] and ["a", "bc"] apart.
        assert_ne!(batch_key(["ab", "c"]), batch_key(["a", "bc"]));
        assert!(a.starts_with("rf-") && a.len() == 35);
    }
}
