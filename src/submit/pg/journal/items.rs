//! Items on the shared ledger: what the vendor already holds, support
//! cases, counts and each item's record as a run sees it. A run sees the
//! items of its own input (`run_items`).

use std::collections::{HashMap, HashSet};

use super::PgJournal;
use crate::api;
use crate::submit::journal::{
    features_bits, features_text, fmt_time, CaseLedger, CaseToOpen, ItemLedger, ItemRecord,
    ItemRecords, ItemState, JournalError, LookupPurpose, LookupTarget, RunSplit, Source,
    VendorLedger,
};
use crate::submit::pg::LedgerError;

/// Items read per page when a run's records are loaded.
const PAGE: i64 = 20_000;

impl VendorLedger for PgJournal {
    fn to_look_up(
        &self,
        purpose: LookupPurpose,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LookupTarget>, JournalError> {
        let filter = match purpose {
            LookupPurpose::BeforePaying => "i.state = 'planned'",
            LookupPurpose::Track => {
                "i.source = 'vendor' AND i.state IN ('accepted', 'provisioning')"
            }
        };
        self.fresh_statistics()?;
        let sql = format!(
            "SELECT i.seq, i.event_key, i.item_type, i.serial_number, i.license_id,
                    i.contract_id, i.deactivated_at
             FROM run_items r JOIN items i ON i.seq = r.seq
             WHERE r.run_id = $1 AND {filter} AND r.seq > $2 AND i.seq > $2
             ORDER BY r.seq LIMIT $3"
        );
        let (run, limit) = (self.run_id(), i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.call(move |c| c.query(&sql, &[&run, &after, &limit]))?;
        Ok(rows
            .iter()
            .map(|r| {
                let license = r.get::<_, &str>(2) == "license";
                LookupTarget {
                    rowid: r.get(0),
                    event_key: r.get(1),
                    item: api::LookupItem {
                        serial_number: if license { None } else { r.get(3) },
                        license_id: if license { r.get(4) } else { None },
                        contract_id: r.get(5),
                    },
                    deactivated_at: r.get(6),
                }
            })
            .collect())
    }

    fn record_vendor(
        &self,
        event_key: &str,
        record: &api::VendorRecord,
    ) -> Result<bool, JournalError> {
        let key = event_key.to_string();
        let state = ItemState::of_vendor(record.state).as_str();
        let features = record.features_verified.map(|f| features_bits(&f) as i32);
        let (request, confirmation, reason) = (
            record.request_id.clone(),
            record.confirmation_id.clone(),
            record.reason.clone(),
        );
        let activated = record.activated_at.map(fmt_time);
        let eta = record.eta.map(|d| d.to_string());
        let changed = self.call(move |c| {
            c.execute(
                "UPDATE items SET state = $1, source = 'vendor', request_id = $2,
                     confirmation_id = $3, features = $4, activated_at = $5,
                     eta = COALESCE($6, eta), reason = $7
                 WHERE event_key = $8
                   AND (state = 'planned'
                        OR (source = 'vendor' AND state IN ('accepted', 'provisioning')))",
                &[
                    &state,
                    &request,
                    &confirmation,
                    &features,
                    &activated,
                    &eta,
                    &reason,
                    &key,
                ],
            )
        })?;
        Ok(changed > 0)
    }

    fn record_vendors(
        &self,
        records: &[(&str, &api::VendorRecord)],
    ) -> Result<Vec<bool>, JournalError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = records.iter().map(|(k, _)| k.to_string()).collect();
        let states: Vec<&'static str> = records
            .iter()
            .map(|(_, r)| ItemState::of_vendor(r.state).as_str())
            .collect();
        let text = |f: fn(&api::VendorRecord) -> Option<String>| -> Vec<Option<String>> {
            records.iter().map(|(_, r)| f(r)).collect()
        };
        let columns = (
            text(|r| r.request_id.clone()),
            text(|r| r.confirmation_id.clone()),
            records
                .iter()
                .map(|(_, r)| r.features_verified.map(|f| features_bits(&f) as i32))
                .collect::<Vec<_>>(),
            text(|r| r.activated_at.map(fmt_time)),
            text(|r| r.eta.map(|d| d.to_string())),
            text(|r| r.reason.clone()),
        );
        let rows = self.call(move |c| {
            let (request, confirmation, features, activated, eta, reason) = &columns;
            c.query(
                "UPDATE items SET state = u.s, source = 'vendor', request_id = u.rq,
                     confirmation_id = u.cf, features = u.f, activated_at = u.a,
                     eta = COALESCE(u.e, items.eta), reason = u.r
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],
                             $6::text[], $7::text[], $8::text[]) AS u(k, s, rq, cf, f, a, e, r)
                 WHERE items.event_key = u.k
                   AND (items.state = 'planned'
                        OR (items.source = 'vendor' AND items.state IN ('accepted', 'provisioning')))
                 RETURNING items.event_key",
                &[&keys, &states, request, confirmation, features, activated, eta, reason],
            )
        })?;
        let changed: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(records.iter().map(|(k, _)| changed.contains(*k)).collect())
    }

    fn not_to_buy(&self, run_id: i64) -> Result<HashSet<String>, JournalError> {
        let rows = self.call(move |c| {
            c.query(
                "SELECT CASE WHEN i.item_type = 'license' THEN i.license_id ELSE i.serial_number END
                 FROM run_items r JOIN items i ON i.seq = r.seq
                 WHERE r.run_id = $1 AND i.state NOT IN ('planned', 'manual_review')",
                &[&run_id],
            )
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect())
    }

    fn run_split(&self, run_id: i64) -> Result<RunSplit, JournalError> {
        let row = self.call(move |c| {
            c.query_one(
                "SELECT COUNT(*) FILTER (WHERE i.state = 'planned'),
                        COUNT(*) FILTER (WHERE i.source IS NULL
                                         AND i.state NOT IN ('planned', 'manual_review')),
                        COUNT(*) FILTER (WHERE i.source = 'vendor')
                 FROM run_items r JOIN items i ON i.seq = r.seq WHERE r.run_id = $1",
                &[&run_id],
            )
        })?;
        let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(RunSplit {
            to_buy: n(0),
            earlier_runs: n(1),
            vendor_held: n(2),
        })
    }

    fn release_vendor(&self, event_key: &str) -> Result<bool, JournalError> {
        let key = event_key.to_string();
        let changed = self.call(move |c| {
            c.execute(
                "UPDATE items SET state = 'planned', source = NULL, request_id = NULL,
                     confirmation_id = NULL, features = NULL, activated_at = NULL, eta = NULL,
                     reason = NULL
                 WHERE event_key = $1 AND source = 'vendor'
                   AND state IN ('accepted', 'provisioning')",
                &[&key],
            )
        })?;
        Ok(changed > 0)
    }
}

impl CaseLedger for PgJournal {
    /// Of this run's input only: each runner escalates its own items (a
    /// case's key is its item's, so two runners asking for the same case
    /// get the same one).
    fn cases_to_open(&self) -> Result<Vec<CaseToOpen>, JournalError> {
        let run = self.run_id();
        let rows = self.call(move |c| {
            c.query(
                "SELECT i.event_key, i.contract_id, COALESCE(i.request_id, b.request_id),
                        i.serial_number, i.license_id, i.state, i.reason
                 FROM run_items r JOIN items i ON i.seq = r.seq
                      LEFT JOIN batches b ON b.id = i.batch_id
                 WHERE r.run_id = $1 AND i.state IN ('failed', 'manual_review')
                   AND i.case_id IS NULL
                 ORDER BY i.seq",
                &[&run],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let state: &str = r.get(5);
                let reason: Option<String> = r.get(6);
                CaseToOpen {
                    event_key: r.get(0),
                    request: api::CaseRequest {
                        item_key: r.get(0),
                        contract_id: r.get(1),
                        request_id: r.get(2),
                        serial_number: r.get(3),
                        license_id: r.get(4),
                        reason: if state == "manual_review" {
                            "MANUAL_REVIEW".into()
                        } else {
                            reason.unwrap_or_else(|| "FAILED".into())
                        },
                    },
                }
            })
            .collect())
    }

    fn case_opened(&self, event_key: &str, case_id: &str) -> Result<(), JournalError> {
        let (key, case) = (event_key.to_string(), case_id.to_string());
        self.call(move |c| {
            c.execute(
                "UPDATE items SET state = 'escalated', case_id = $2 WHERE event_key = $1",
                &[&key, &case],
            )
        })?;
        Ok(())
    }
}

/// A run's items by event key, read once (see [`ItemLedger::records`]).
pub struct PgRecords {
    items: HashMap<String, ItemRecord>,
}

impl ItemRecords for PgRecords {
    fn get(&mut self, event_key: &str) -> Result<Option<ItemRecord>, JournalError> {
        Ok(self.items.get(event_key).cloned())
    }
}

impl ItemLedger for PgJournal {
    type Records<'a> = PgRecords;

    fn holds_items(&self) -> Result<bool, JournalError> {
        let row = self.call(|c| c.query_one("SELECT EXISTS (SELECT 1 FROM items)", &[]))?;
        Ok(row.get(0))
    }

    /// The items of this run's input once a run is begun; of the whole
    /// ledger before.
    fn counts(&self) -> Result<Vec<(ItemState, u64)>, JournalError> {
        let run = self.run_id();
        let rows = self.call(move |c| {
            if run == 0 {
                c.query("SELECT state, COUNT(*) FROM items GROUP BY state", &[])
            } else {
                c.query(
                    "SELECT i.state, COUNT(*) FROM run_items r JOIN items i ON i.seq = r.seq
                     WHERE r.run_id = $1 GROUP BY i.state",
                    &[&run],
                )
            }
        })?;
        let mut out = rows
            .iter()
            .map(|r| {
                let state: &str = r.get(0);
                let n = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
                Ok((self.state_of(state)?, n))
            })
            .collect::<Result<Vec<_>, JournalError>>()?;
        out.sort();
        Ok(out)
    }

    fn record(&self, event_key: &str, run_id: i64) -> Result<Option<ItemRecord>, JournalError> {
        let key = event_key.to_string();
        let rows =
            self.call(move |c| c.query(&record_sql("i.event_key = $2"), &[&run_id, &key]))?;
        match rows.first() {
            Some(r) => Ok(Some(self.record_of(r)?.1)),
            None => Ok(None),
        }
    }

    /// Every item of run `run_id`'s input, read in pages into memory
    /// (about 200 bytes an item): one round trip per page, not per item.
    fn records(&self, run_id: i64) -> Result<PgRecords, JournalError> {
        let mut items = HashMap::new();
        let mut after = 0i64;
        // `i.seq` bounded too: else the server may merge the two tables
        // from the start of the items for every page.
        let sql = record_sql("r.seq > $2 AND i.seq > $2 ORDER BY r.seq LIMIT $3");
        loop {
            let sql = sql.clone();
            let rows = self.call(move |c| c.query(&sql, &[&run_id, &after, &PAGE]))?;
            let Some(last) = rows.last() else { break };
            after = last.get(11);
            for r in &rows {
                let (key, record) = self.record_of(r)?;
                items.insert(key, record);
            }
        }
        Ok(PgRecords { items })
    }

    fn activations_by_day(&self) -> Result<Vec<(String, u64)>, JournalError> {
        let rows = self.call(|c| {
            c.query(
                "SELECT substr(activated_at, 1, 10) AS day, COUNT(*) FROM items
                 WHERE activated_at IS NOT NULL AND activated_at <> ''
                 GROUP BY day ORDER BY day",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            .collect())
    }
}

/// An item's record with its batch's, for run `$1`; `filter` picks items.
fn record_sql(filter: &str) -> String {
    format!(
        "SELECT i.event_key, i.state, i.reason, COALESCE(i.request_id, b.request_id),
                i.confirmation_id, i.features, i.case_id, i.eta, i.activated_at, i.source,
                b.attempts, r.seq,
                b.id IS NOT NULL, b.run_id = $1
         FROM run_items r JOIN items i ON i.seq = r.seq LEFT JOIN batches b ON b.id = i.batch_id
         WHERE r.run_id = $1 AND {filter}"
    )
}

impl PgJournal {
    fn state_of(&self, state: &str) -> Result<ItemState, JournalError> {
        ItemState::parse(state).ok_or_else(|| {
            LedgerError::Damaged {
                ledger: self.label.clone(),
                why: format!("an item is in the unknown state {state:?}"),
            }
            .into()
        })
    }

    /// A row of [`record_sql`]: its event key and record.
    fn record_of(&self, r: &tokio_postgres::Row) -> Result<(String, ItemRecord), JournalError> {
        let source: Option<&str> = r.get(9);
        let sent = r.get::<_, bool>(12);
        let this_run = r.get::<_, Option<bool>>(13).unwrap_or(false);
        let record = ItemRecord {
            state: self.state_of(r.get(1))?,
            reason: r.get(2),
            request_id: r.get(3),
            confirmation_id: r.get(4),
            features: r.get::<_, Option<i32>>(5).map(|f| features_text(f.into())),
            case_id: r.get(6),
            attempts: r
                .get::<_, Option<i32>>(10)
                .map_or(0, |n| u32::try_from(n).unwrap_or(0)),
            eta: r.get(7),
            activated_at: r.get(8),
            source: match (source, sent) {
                (Some("vendor"), _) => Source::VendorRecord,
                (_, false) => Source::NotSent,
                (_, true) if this_run => Source::ThisRun,
                (_, true) => Source::EarlierRun,
            },
        };
        Ok((r.get(0), record))
    }
}
