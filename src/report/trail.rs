//! What goes into the audit log (see `crate::audit` for the chain), read
//! from the journal as the run goes: [`AuditWriter::catch_up`] runs after
//! the coordinator's rounds and once more at the end of the run, and
//! writes what the journal settled since the last call.
//!
//! The records:
//! - `cancellation_window`: one per accepted order (request): its
//!   idempotency key, contract, region, quote, `ordered_at` and
//!   `cancellable_until` (`ordered_at` + the contract's `cancellation_days`).
//! - `activations`: one per request and write, its items as rows under
//!   `columns`: `event_key`, then those of `item_type`, `confirmation_id`,
//!   `activated_at` and `features_verified` that differ between its items;
//!   a field all its items share is the record's, as are the request's
//!   contract, region, quote and request id. Items the vendor already held (a lookup found them; not
//!   bought by this journal) are in records of their own with `"source":
//!   "vendor_record"`.
//! - `case`: one per support case, as before.
//!
//! A record per request rather than per item keeps the log compact at
//! fleet size: the request's fields are written once, and every item is
//! still named with its confirmation. Logs written before this hold one
//! `activation` record per item; both kinds are read when records are
//! adopted after a crash.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::audit::{self, AuditLog};
use crate::submit::journal::{AuditItem, AuditLedger, AuditOrder, AuditedOrder};

/// Writes the journal's settled items and orders to its audit log.
pub struct AuditWriter {
    dir: PathBuf,
    journal_path: PathBuf,
    /// Contract id → its cancellation window in days.
    cancellation_days: HashMap<String, u32>,
    /// Opened at the first write: a run that settles nothing leaves no log.
    log: Option<AuditLog>,
    appended: u64,
}

impl AuditWriter {
    /// The writer of the log in `dir` of the journal at `journal_path`.
    pub fn new(
        dir: &Path,
        journal_path: &Path,
        cancellation_days: HashMap<String, u32>,
    ) -> AuditWriter {
        AuditWriter {
            dir: dir.to_path_buf(),
            journal_path: journal_path.to_path_buf(),
            cancellation_days,
            log: None,
            appended: 0,
        }
    }

    /// The writer of a ledger that keeps its chain itself (PostgreSQL).
    pub fn for_ledger(cancellation_days: HashMap<String, u32>) -> AuditWriter {
        AuditWriter::new(Path::new(""), Path::new(""), cancellation_days)
    }

    /// Records appended so far.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// The log's path, once it was written to.
    pub fn path(&self) -> Option<&Path> {
        self.log.as_ref().map(AuditLog::path)
    }

    /// Appends what the journal settled and the log does not have yet,
    /// syncs it, then records it in the journal; returns how many records
    /// were appended.
    pub fn catch_up(&mut self, journal: &dyn AuditLedger) -> anyhow::Result<u64> {
        if journal.chain_in_ledger() {
            return self.catch_up_in_ledger(journal);
        }
        let mut orders = journal.unaudited_orders()?;
        let mut items = journal.unaudited_items()?;
        if orders.is_empty() && items.is_empty() {
            return Ok(0);
        }
        let recorded_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut adopted_keys = Vec::new();
        let mut adopted_orders = Vec::new();
        if self.log.is_none() {
            let header = object(json!({
                "recorded_at": recorded_at,
                "journal": self.journal_path.display().to_string(),
                "refleet_version": env!("CARGO_PKG_VERSION"),
            }));
            let audit::Opened { log, adopted } =
                AuditLog::open(&self.dir, &journal.audit_state()?, header)?;
            (adopted_keys, adopted_orders) = already_logged(&adopted);
            if !adopted.is_empty() {
                tracing::warn!(
                    records = adopted.len(),
                    log = %log.path().display(),
                    "the audit log holds records the journal had not recorded (a crash between the two): kept, not written again"
                );
                let keys: HashSet<&str> = adopted_keys.iter().map(String::as_str).collect();
                items.retain(|i| !keys.contains(i.event_key.as_str()));
                orders.retain(|o| {
                    !adopted_orders.iter().any(|d| match d {
                        AuditedOrder::IdempotencyKey(k) => *k == o.idempotency_key,
                        AuditedOrder::RequestId(id) => *id == o.request_id,
                        AuditedOrder::Batch(b) => *b == o.batch_id,
                    })
                });
            }
            self.log = Some(log);
        }
        let Some(log) = self.log.as_mut() else {
            return Ok(0);
        };
        let before = self.appended;
        for record in records(&self.cancellation_days, &orders, &items, &recorded_at) {
            log.append(record)?;
            self.appended += 1;
        }
        let chain = log.sync()?;
        let rows: Vec<i64> = items.iter().map(|i| i.rowid).collect();
        adopted_orders.extend(orders.iter().map(|o| AuditedOrder::Batch(o.batch_id)));
        journal.mark_audited(
            &rows,
            &adopted_keys,
            &adopted_orders,
            log.file_name(),
            &chain,
        )?;
        Ok(self.appended - before)
    }

    /// [`AuditWriter::catch_up`] for a ledger that keeps its chain itself
    /// (PostgreSQL): records appended and marked in one transaction, read
    /// again when another runner recorded some of them first.
    fn catch_up_in_ledger(&mut self, ledger: &dyn AuditLedger) -> anyhow::Result<u64> {
        /// Each retry follows another runner's append, so runners make progress.
        const TRIES: u32 = 50;
        for _ in 0..TRIES {
            let orders = ledger.unaudited_orders()?;
            let items = ledger.unaudited_items()?;
            if orders.is_empty() && items.is_empty() {
                return Ok(0);
            }
            let recorded_at =
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let records = records(&self.cancellation_days, &orders, &items, &recorded_at);
            let n = records.len() as u64;
            let rows: Vec<i64> = items.iter().map(|i| i.rowid).collect();
            let batches: Vec<i64> = orders.iter().map(|o| o.batch_id).collect();
            if ledger.append_chain(records, &rows, &batches)?.is_some() {
                self.appended += n;
                return Ok(n);
            }
        }
        // Not the run's failure: what stays unaudited is recorded at the
        // next round, or by the next run.
        tracing::warn!(
            tries = TRIES,
            "other runners kept recording the same items in the audit chain first; trying again later"
        );
        Ok(0)
    }
}

/// The records of what settled: a cancellation window per order, a case
/// per escalated item, an `activations` record per request's active items.
fn records(
    cancellation_days: &HashMap<String, u32>,
    orders: &[AuditOrder],
    items: &[AuditItem],
    recorded_at: &str,
) -> Vec<Map<String, Value>> {
    let mut out: Vec<Map<String, Value>> = orders
        .iter()
        .map(|o| window(cancellation_days, o, recorded_at))
        .collect();
    out.extend(
        items
            .iter()
            .filter(|i| i.state != "active")
            .map(|i| case(i, recorded_at)),
    );
    let active: Vec<&AuditItem> = items.iter().filter(|i| i.state == "active").collect();
    for group in active.chunk_by(|a, b| same_request(a, b)) {
        for rows in group.chunks(crate::api::MAX_BATCH) {
            out.push(activations(rows, recorded_at));
        }
    }
    out
}

/// The cancellation window of an order.
fn window(
    cancellation_days: &HashMap<String, u32>,
    o: &AuditOrder,
    recorded_at: &str,
) -> Map<String, Value> {
    let days = cancellation_days.get(o.contract_id.as_str()).copied();
    let until = days.and_then(|d| {
        chrono::DateTime::parse_from_rfc3339(&o.accepted_at)
            .ok()
            .and_then(|t| t.date_naive().checked_add_days(chrono::Days::new(d.into())))
            .map(|d| d.to_string())
    });
    object(json!({
        "kind": "cancellation_window",
        "recorded_at": recorded_at,
        "request_id": o.request_id,
        "idempotency_key": o.idempotency_key,
        "contract_id": o.contract_id,
        "region": o.region,
        "quote_id": o.quote_id,
        "ordered_at": o.accepted_at,
        "items": o.items,
        "cancellation_days": days,
        "cancellable_until": until,
    }))
}

impl crate::submit::AfterRound for AuditWriter {
    fn after_round(&mut self, journal: &dyn AuditLedger) -> anyhow::Result<()> {
        self.catch_up(journal).map(|_| ())
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Items of one request, bought the same way, share a record.
fn same_request(a: &AuditItem, b: &AuditItem) -> bool {
    a.request_id == b.request_id
        && a.contract_id == b.contract_id
        && a.region == b.region
        && a.quote_id == b.quote_id
        && a.vendor_record == b.vendor_record
}

/// How an item's field is read for its row.
type Field = fn(&AuditItem) -> Value;

/// One `activations` record: the request's fields once, a row per item.
/// A field every item shares (often the item type, the activation time,
/// the features) is the record's, not repeated in each row.
fn activations(items: &[&AuditItem], recorded_at: &str) -> Map<String, Value> {
    let Some(first) = items.first() else {
        return Map::new();
    };
    let fields: [(&str, Field); 4] = [
        ("item_type", |i| json!(i.item_type)),
        ("confirmation_id", |i| json!(i.confirmation_id)),
        ("activated_at", |i| json!(i.activated_at)),
        ("features_verified", |i| json!(i.features)),
    ];
    let mut record = object(json!({
        "kind": "activations",
        "recorded_at": recorded_at,
        "contract_id": first.contract_id,
        "region": first.region,
        "quote_id": first.quote_id,
        "request_id": first.request_id,
    }));
    let mut columns = vec!["event_key"];
    let mut varying = Vec::new();
    for (name, get) in fields {
        let value = get(first);
        if items.len() > 1 && items.iter().all(|i| get(i) == value) {
            record.insert(name.into(), value);
        } else {
            columns.push(name);
            varying.push(get);
        }
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|i| {
            let mut row = vec![json!(i.event_key)];
            row.extend(varying.iter().map(|get| get(i)));
            Value::Array(row)
        })
        .collect();
    record.insert("columns".into(), json!(columns));
    record.insert("items".into(), Value::Array(rows));
    if first.vendor_record {
        record.insert("source".into(), json!("vendor_record"));
    }
    record
}

/// A support case for one item.
fn case(i: &AuditItem, recorded_at: &str) -> Map<String, Value> {
    object(json!({
        "kind": "case",
        "recorded_at": recorded_at,
        "event_key": i.event_key,
        "item_type": i.item_type,
        "serial_number": i.serial_number,
        "license_id": i.license_id,
        "contract_id": i.contract_id,
        "region": i.region,
        "quote_id": i.quote_id,
        "request_id": i.request_id,
        "case_id": i.case_id,
        "reason": i.reason,
    }))
}

/// The items and orders of records adopted from the log: `activations`
/// rows, older per-item `activation` records, cases, cancellation windows.
fn already_logged(records: &[Map<String, Value>]) -> (Vec<String>, Vec<AuditedOrder>) {
    let (mut items, mut orders) = (Vec::new(), Vec::new());
    for r in records {
        let text = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
        match text("kind").as_deref() {
            Some("cancellation_window") => match (text("idempotency_key"), text("request_id")) {
                (Some(key), _) => orders.push(AuditedOrder::IdempotencyKey(key)),
                (None, Some(id)) => orders.push(AuditedOrder::RequestId(id)),
                (None, None) => {}
            },
            Some("activations") => {
                let rows = r.get("items").and_then(Value::as_array);
                items.extend(
                    rows.into_iter()
                        .flatten()
                        .filter_map(|row| row.get(0).and_then(Value::as_str).map(str::to_string)),
                );
            }
            Some("activation" | "case") => items.extend(text("event_key")),
            _ => {}
        }
    }
    (items, orders)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, request: &str, features: &str) -> AuditItem {
        AuditItem {
            rowid: 1,
            event_key: key.into(),
            state: "active".into(),
            item_type: "device".into(),
            serial_number: Some(key.into()),
            license_id: None,
            contract_id: "C-1".into(),
            region: "EMEA".into(),
            quote_id: "Q-1".into(),
            request_id: Some(request.into()),
            confirmation_id: Some(format!("CNF-{key}")),
            features: Some(features.into()),
            activated_at: Some("2027-01-02T03:04:05Z".into()),
            case_id: None,
            reason: None,
            vendor_record: false,
        }
    }

    #[test]
    fn an_activations_record_names_every_item_and_is_adopted_by_its_keys() {
        let (a, b) = (item("A", "rq-1", "uc"), item("B", "rq-1", "uc"));
        let r = activations(&[&a, &b], "now");
        // Shared fields once, for the record; the confirmations differ.
        assert_eq!(r["features_verified"], "uc");
        assert_eq!(r["item_type"], "device");
        assert_eq!(r["activated_at"], "2027-01-02T03:04:05Z");
        assert_eq!(r["columns"], json!(["event_key", "confirmation_id"]));
        assert_eq!(r["items"][1], json!(["B", "CNF-B"]));
        assert!(r.get("source").is_none());
        let (keys, orders) = already_logged(&[r]);
        assert_eq!(keys, ["A", "B"]);
        assert!(orders.is_empty());
    }

    #[test]
    fn fields_that_differ_go_to_each_row_and_vendor_records_say_so() {
        let a = item("A", "rq-1", "uc");
        let mut b = item("B", "rq-1", "meetings");
        b.item_type = "license".into();
        b.vendor_record = true;
        let r = activations(&[&a, &b], "now");
        assert!(r.get("features_verified").is_none());
        assert_eq!(
            r["columns"],
            json!([
                "event_key",
                "item_type",
                "confirmation_id",
                "features_verified"
            ])
        );
        assert_eq!(r["items"][1], json!(["B", "license", "CNF-B", "meetings"]));
        assert!(
            !same_request(&a, &b),
            "a vendor record is not this journal's order"
        );
        // A record of one item keeps every field in its row.
        let one = activations(&[&b], "now");
        assert_eq!(one["source"], "vendor_record");
        assert_eq!(
            one["items"][0],
            json!(["B", "license", "CNF-B", "2027-01-02T03:04:05Z", "meetings"])
        );
    }
}
