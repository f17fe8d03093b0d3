//! Tests of reading item states back from the journal.

use super::testing::{journal_of, sql};
use super::*;

/// A state this version does not know (a newer refleet's, or a hand
/// edit) is an error naming it, never read as another state.
#[test]
fn an_unknown_stored_state_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    journal_of(&path, 2);
    sql(
        &path,
        "UPDATE items SET state = 'paused' WHERE event_key = 'K000001'",
    );
    let j = Journal::open(&path).unwrap();
    let fine = j.record("K000000", 1).unwrap().unwrap();
    assert_eq!(fine.state, ItemState::Planned);
    let err = anyhow::Error::new(j.record("K000001", 1).unwrap_err());
    assert!(
        format!("{err:#}").contains("unknown item state \"paused\""),
        "{err:#}"
    );
    assert!(j.counts().is_err());
}

/// What a dry run keeps in memory for an item the vendor holds is what the
/// journal gives back once it recorded the same answer, for every vendor
/// state and with or without the optional fields.
#[test]
fn held_by_vendor_is_what_the_journal_records() {
    use crate::api;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let n = 10;
    journal_of(&path, n);
    let j = Journal::open(&path).unwrap();
    let states = [
        api::ItemState::Pending,
        api::ItemState::Provisioning,
        api::ItemState::Active,
        api::ItemState::Failed,
        api::ItemState::Rejected,
    ];
    for i in 0..n {
        let full = i % 2 == 0;
        let vendor = api::VendorRecord {
            state: states[i % states.len()],
            contract_id: "C1".into(),
            request_id: full.then(|| format!("rq-{i}")),
            item_key: None,
            deactivated_at: Some("2026-01-01".into()),
            accepted_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            activated_at: full.then(|| "2026-12-01T10:30:00.250Z".parse().unwrap()),
            eta: full.then(|| chrono::NaiveDate::from_ymd_opt(2026, 12, 9).unwrap()),
            confirmation_id: full.then(|| format!("CNF-{i}")),
            features_verified: full.then_some(api::Features {
                meetings: true,
                conferencing: false,
                uc: i % 4 == 0,
            }),
            reason: (!full).then(|| "SOMETHING".to_string()),
        };
        let key = format!("K{i:06}");
        assert!(j.record_vendor(&key, &vendor).unwrap());
        let mut records = j.records(1).unwrap();
        assert_eq!(
            records.get(&key).unwrap().unwrap(),
            ItemRecord::held_by_vendor(&vendor),
            "{vendor:?}"
        );
    }
}
