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
