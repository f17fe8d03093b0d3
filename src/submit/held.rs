//! The lookups of a dry run, kept in memory: a dry run on a journal that
//! holds no item changes nothing in it, yet says what the vendor already
//! holds. The plan hands over each eligible item ([`HeldInMemory::push`]),
//! the lookups ask the vendor about them in plan order, a page at a time,
//! exactly as they would from the journal (the same requests), and what
//! the vendor holds stays here, as the journal would have recorded it
//! ([`ItemRecord::held_by_vendor`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use compact_str::CompactString;

use super::client::Attempt;
use super::journal::{ItemRecord, LookupTarget};
use super::reconcile::{held_for_event, LookupBook};
use super::SubmitError;
use crate::api;

/// One eligible item to look up, compact: about 80 bytes, no allocation
/// for the usual lengths.
#[derive(Debug, Clone)]
struct ToLookUp {
    /// Its row in the input (`results.csv`'s `row`).
    row: u64,
    /// Serial number (device) or license id (license).
    key: CompactString,
    license: bool,
    contract_id: CompactString,
    deactivated_at: CompactString,
    /// As the export wrote it, for `results.csv`'s counts by site.
    site: CompactString,
}

/// Items to look up and what the vendor holds of them, in memory.
#[derive(Debug, Default)]
pub struct HeldInMemory {
    items: Vec<ToLookUp>,
    /// The next item to hand out.
    next: usize,
    /// What the vendor holds, by the item's row: its record and its place
    /// in `items`.
    held: HashMap<u64, (ItemRecord, usize)>,
}

impl HeldInMemory {
    /// Adds an eligible item: `row` in the input, its `key` (serial number
    /// or license id), contract and deactivation as written in its event
    /// key, and its site.
    pub fn push(
        &mut self,
        row: u64,
        key: &str,
        license: bool,
        contract_id: &str,
        deactivated_at: &str,
        site: &str,
    ) {
        self.items.push(ToLookUp {
            row,
            key: key.into(),
            license,
            contract_id: contract_id.into(),
            deactivated_at: deactivated_at.into(),
            site: site.into(),
        });
    }

    /// Forgets every item: the plan starts again.
    pub fn clear(&mut self) {
        *self = HeldInMemory::default();
    }

    /// How many items the vendor holds.
    pub fn held_count(&self) -> u64 {
        self.held.len() as u64
    }

    /// The record, the contract id and the site of the item on input row
    /// `row`, when the vendor holds it.
    pub fn held(&self, row: u64) -> Option<(&ItemRecord, &str, &str)> {
        let (record, index) = self.held.get(&row)?;
        let item = self.items.get(*index)?;
        Some((record, item.contract_id.as_str(), item.site.as_str()))
    }

    /// The serial numbers and license ids the vendor holds (as quotes key
    /// items): not to buy.
    pub fn held_keys(&self) -> HashSet<String> {
        self.held
            .values()
            .filter_map(|(_, index)| self.items.get(*index))
            .map(|item| item.key.to_string())
            .collect()
    }

    fn target(&self, index: usize) -> Option<LookupTarget> {
        let item = self.items.get(index)?;
        Some(LookupTarget {
            // Its place in the plan: the answer is matched to it by that.
            rowid: index as i64,
            event_key: api::item_key(&item.key, &item.contract_id, &item.deactivated_at),
            item: api::LookupItem {
                serial_number: (!item.license).then(|| item.key.to_string()),
                license_id: item.license.then(|| item.key.to_string()),
                contract_id: item.contract_id.to_string(),
            },
            deactivated_at: item.deactivated_at.to_string(),
        })
    }
}

impl LookupBook for HeldInMemory {
    fn to_look_up(&self) -> Result<u64, SubmitError> {
        Ok(self.items.len() as u64)
    }

    fn next_page(&mut self, limit: usize) -> Result<Vec<LookupTarget>, SubmitError> {
        let end = self.next.saturating_add(limit).min(self.items.len());
        let page = (self.next..end).filter_map(|i| self.target(i)).collect();
        self.next = end;
        Ok(page)
    }

    fn record(
        &mut self,
        page: &[LookupTarget],
        answer: &api::LookupAnswer,
        held: &mut BTreeMap<&'static str, u64>,
    ) -> Result<(), SubmitError> {
        for (target, result) in page.iter().zip(&answer.items) {
            let Some(vendor) = result.record.as_ref() else {
                continue;
            };
            if !held_for_event(vendor, &target.deactivated_at) {
                continue;
            }
            let Some((index, item)) = usize::try_from(target.rowid)
                .ok()
                .and_then(|i| Some((i, self.items.get(i)?)))
            else {
                continue;
            };
            // An item is looked up once; a page asked again after a
            // mismatched answer is not counted twice.
            if self
                .held
                .insert(item.row, (ItemRecord::held_by_vendor(vendor), index))
                .is_none()
            {
                *held.entry(vendor.state.as_str()).or_default() += 1;
            }
        }
        Ok(())
    }

    /// A dry run writes nothing: its attempts are in the client's counts.
    fn log_attempts(&mut self, _target: &str, _attempts: &[Attempt]) -> Result<(), SubmitError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor(state: api::ItemState, deactivated_at: &str) -> api::VendorRecord {
        api::VendorRecord {
            state,
            contract_id: "C-1".into(),
            request_id: Some("rq-1".into()),
            item_key: None,
            deactivated_at: Some(deactivated_at.into()),
            accepted_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            activated_at: Some("2026-12-01T10:00:00Z".parse().unwrap()),
            eta: None,
            confirmation_id: Some("CNF-1".into()),
            features_verified: None,
            reason: None,
        }
    }

    fn answer(page: &[LookupTarget], records: Vec<Option<api::VendorRecord>>) -> api::LookupAnswer {
        api::LookupAnswer {
            items: page
                .iter()
                .zip(records)
                .map(|(t, record)| api::LookupResult {
                    serial_number: t.item.serial_number.clone(),
                    license_id: t.item.license_id.clone(),
                    contract_id: t.item.contract_id.clone(),
                    found: record.is_some(),
                    record,
                })
                .collect(),
        }
    }

    #[test]
    fn pages_go_in_plan_order_and_only_what_is_held_for_the_event_is_kept() {
        let mut book = HeldInMemory::default();
        book.push(3, "SER0001", false, "C-1", "2026-10-01", "Berlin");
        book.push(5, "LIC-9", true, "C-1", "2026-10-01", "Berlin");
        book.push(8, "SER0002", false, "C-1", "2026-10-01", "Paris");
        assert_eq!(book.to_look_up().unwrap(), 3);
        let first = book.next_page(2).unwrap();
        assert_eq!(first[0].event_key, "SER0001|C-1|2026-10-01");
        assert_eq!(first[0].item.serial_number.as_deref(), Some("SER0001"));
        assert_eq!(first[1].item.license_id.as_deref(), Some("LIC-9"));
        assert_eq!(first[1].item.serial_number, None);
        let second = book.next_page(2).unwrap();
        assert_eq!(second.len(), 1);
        assert!(book.next_page(2).unwrap().is_empty());

        let mut held = BTreeMap::new();
        let active = vendor(api::ItemState::Active, "2026-10-01");
        // Held: active for this event. Not held: failed, or an older event.
        let found = answer(
            &first,
            vec![
                Some(active.clone()),
                Some(vendor(api::ItemState::Failed, "2026-10-01")),
            ],
        );
        book.record(&first, &found, &mut held).unwrap();
        let old = answer(
            &second,
            vec![Some(vendor(api::ItemState::Active, "2026-01-01"))],
        );
        book.record(&second, &old, &mut held).unwrap();
        // The same answer again counts nothing twice.
        book.record(&first, &found, &mut held).unwrap();

        assert_eq!(held, BTreeMap::from([("active", 1)]));
        assert_eq!(book.held_count(), 1);
        let record = ItemRecord::held_by_vendor(&active);
        assert_eq!(book.held(3), Some((&record, "C-1", "Berlin")));
        assert_eq!(book.held(5), None);
        assert_eq!(book.held(8), None);
        assert_eq!(book.held_keys(), HashSet::from(["SER0001".to_string()]));
    }
}
