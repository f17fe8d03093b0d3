//! What the journal takes in and hands out: item states, planned items,
//! batches, lookups, cases and the records read back.

use crate::api::{self, CoverageWire, ItemType, RequestItem};

/// Where an item stands (SPEC §6). `ManualReview` is an ineligible item that
/// waits for a support case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemState {
    Planned,
    Submitted,
    Accepted,
    Provisioning,
    Active,
    Rejected,
    Failed,
    Escalated,
    ManualReview,
}

impl ItemState {
    pub const ALL: [ItemState; 9] = [
        ItemState::Planned,
        ItemState::Submitted,
        ItemState::Accepted,
        ItemState::Provisioning,
        ItemState::Active,
        ItemState::Rejected,
        ItemState::Failed,
        ItemState::Escalated,
        ItemState::ManualReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Planned => "planned",
            ItemState::Submitted => "submitted",
            ItemState::Accepted => "accepted",
            ItemState::Provisioning => "provisioning",
            ItemState::Active => "active",
            ItemState::Rejected => "rejected",
            ItemState::Failed => "failed",
            ItemState::Escalated => "escalated",
            ItemState::ManualReview => "manual_review",
        }
    }

    pub fn parse(s: &str) -> Option<ItemState> {
        ItemState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The journal's state for an item in the vendor's `state`: its
    /// `pending` is the journal's `accepted`.
    pub fn of_vendor(state: api::ItemState) -> ItemState {
        match state {
            api::ItemState::Pending => ItemState::Accepted,
            api::ItemState::Provisioning => ItemState::Provisioning,
            api::ItemState::Active => ItemState::Active,
            api::ItemState::Failed => ItemState::Failed,
            api::ItemState::Rejected => ItemState::Rejected,
        }
    }
}

/// A state the journal holds that this version does not know: the item is
/// refused, never taken for another state.
#[derive(Debug, thiserror::Error)]
#[error("unknown item state {0:?} in the journal")]
pub struct UnknownState(String);

impl rusqlite::types::FromSql for ItemState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        ItemState::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(Box::new(UnknownState(text.into())))
        })
    }
}

impl rusqlite::ToSql for ItemState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// An eligible item as the journal keeps it: enough to rebuild its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedItem {
    pub event_key: String,
    pub item_type: ItemType,
    pub serial_number: Option<String>,
    pub mac_address: Option<String>,
    pub model: Option<String>,
    pub license_id: Option<String>,
    pub bound_serial: Option<String>,
    pub contract_id: String,
    pub region: String,
    pub country: String,
    pub deactivated_at: String,
    pub coverage: CoverageWire,
}

impl PlannedItem {
    pub fn to_request_item(&self) -> RequestItem {
        RequestItem {
            item_key: self.event_key.clone(),
            item_type: self.item_type,
            serial_number: self.serial_number.clone(),
            mac_address: self.mac_address.clone(),
            model: self.model.clone(),
            license_id: self.license_id.clone(),
            bound_serial: self.bound_serial.clone(),
            country: self.country.clone(),
            deactivated_at: self.deactivated_at.clone(),
        }
    }
}

/// A batch to send: the request body and its idempotency key.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: i64,
    pub idempotency_key: String,
    pub request: api::ReactivationRequest,
}

/// Where a batch goes: one contract and region, under one quote.
pub struct BatchGroup {
    pub contract_id: String,
    pub region: String,
    pub quote_id: String,
    pub coverage: CoverageWire,
}

impl Batch {
    /// Batch `id`, keyed `idempotency_key`, of `items` (in order) of `group`.
    pub fn of<'a>(
        id: i64,
        idempotency_key: String,
        group: BatchGroup,
        items: impl IntoIterator<Item = &'a PlannedItem>,
    ) -> Batch {
        Batch {
            id,
            idempotency_key,
            request: api::ReactivationRequest {
                contract_id: group.contract_id,
                region: group.region,
                quote_id: group.quote_id,
                coverage: group.coverage,
                items: items
                    .into_iter()
                    .map(PlannedItem::to_request_item)
                    .collect(),
            },
        }
    }
}

/// An item of a batch: its key, its place in the batch, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub event_key: String,
    pub pos: i64,
    pub state: ItemState,
}

/// An accepted batch whose items are still on their way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub batch_id: i64,
    pub request_id: String,
}

/// A run's eligible items by who buys them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunSplit {
    /// Still `planned`: this run buys them.
    pub to_buy: u64,
    /// Sent by an earlier run of this journal.
    pub earlier_runs: u64,
    /// Already held by the vendor (a lookup found them).
    pub vendor_held: u64,
}

/// Why items are looked up at the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupPurpose {
    /// Planned items, before any is paid.
    BeforePaying,
    /// Items the vendor held on their way, until they are done.
    Track,
}

/// An item to look up at the vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupTarget {
    pub rowid: i64,
    pub event_key: String,
    pub item: api::LookupItem,
    /// Of the deactivation this journal wants reactivated.
    pub deactivated_at: String,
}

/// An item that needs a support case.
#[derive(Debug, Clone)]
pub struct CaseToOpen {
    pub event_key: String,
    pub request: api::CaseRequest,
}

/// The journal's view of one item, for `results.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    pub state: ItemState,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub confirmation_id: Option<String>,
    pub features: Option<String>,
    pub case_id: Option<String>,
    pub attempts: u32,
    pub eta: Option<String>,
    pub activated_at: Option<String>,
    pub source: Source,
}

impl ItemRecord {
    /// The record of a planned item once a lookup found `vendor` holding
    /// it: what [`Journal::records`] gives after [`Journal::record_vendor`]
    /// (a test compares the two).
    ///
    /// [`Journal::records`]: super::Journal::records
    /// [`Journal::record_vendor`]: super::Journal::record_vendor
    pub fn held_by_vendor(vendor: &api::VendorRecord) -> ItemRecord {
        ItemRecord {
            state: ItemState::of_vendor(vendor.state),
            reason: vendor.reason.clone(),
            request_id: vendor.request_id.clone(),
            confirmation_id: vendor.confirmation_id.clone(),
            features: vendor
                .features_verified
                .map(|f| super::columns::features_text(super::columns::features_bits(&f))),
            case_id: None,
            attempts: 0,
            eta: vendor.eta.map(|d| d.to_string()),
            activated_at: vendor.activated_at.map(super::columns::fmt_time),
            source: Source::VendorRecord,
        }
    }
}

/// Where an item's state comes from (`results.csv`'s `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Never sent.
    NotSent,
    /// Bought by this run's request.
    ThisRun,
    /// Bought by an earlier run's request on this journal.
    EarlierRun,
    /// The vendor already held it: not bought by this journal.
    VendorRecord,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::NotSent => "",
            Source::ThisRun => "this_run",
            Source::EarlierRun => "earlier_run",
            Source::VendorRecord => "vendor_record",
        }
    }
}
