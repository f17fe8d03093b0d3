//! Tests of the plan: what is kept of each row and its totals.

use super::*;

/// Lines up to the slot's size less their length bytes stay in the
/// slot, longer ones on the heap; either way they come back whole, and
/// a slot holding longer earlier lines does not leak into shorter ones.
#[test]
fn lines_fit_in_their_slot_or_go_to_the_heap() {
    let mut slot = [b'#'; ReportLines::ROW_BYTES];
    let text = |len: usize, c: u8| -> Vec<u8> { (0..len).map(|i| c + (i % 20) as u8).collect() };
    let max = ReportLines::ROW_BYTES - 2;
    for (la, lb) in [
        (1, 0),
        (80, 120),
        (max, 0),
        (0, max),
        (max - 100, 100),
        (max - 99, 100),
        (255, 0),
        (256, 0),
        (0, 300),
        (300, 300),
        (3, 2),
    ] {
        let (a, b) = (text(la, b'a'), text(lb, b'A'));
        let heap = ReportLines::store(&a, &b, &mut slot);
        assert_eq!(heap.is_some(), la + lb > max, "{la} + {lb}");
        assert_eq!(
            ReportLines::get(heap.as_deref(), &slot),
            (&a[..], &b[..]),
            "{la} + {lb}"
        );
    }
}

/// The table of activation dates holds every country of the policy,
/// each coverage with its own SLA.
#[test]
fn etas_are_the_slas_business_days_for_each_country_and_coverage() {
    let policy = Policy::load(None).unwrap();
    let contracts = Contracts::default();
    let pool = crate::pipeline::Workers::new(1).unwrap();
    // A Tuesday; the US has Thanksgiving on the 26th.
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    let ctx = PlanContext {
        contracts: &contracts,
        policy: &policy,
        as_of,
        pool: &pool,
        eligibility_line: &crate::report::EligibilityLines,
        not_bought: None,
    };
    let judge = Judge::new(&ctx, false, None).unwrap();
    assert_eq!(judge.etas.len(), 2 * policy.countries.countries().count());
    for code in ["US", "DE", "AE", "JP"] {
        let c = policy.countries.parse(code).unwrap();
        for coverage in [Coverage::Standard, Coverage::Extended] {
            let want = policy.activation_eta(c, coverage, as_of).unwrap();
            assert_eq!(judge.etas[&(c, coverage)], (want, want.to_string()));
        }
    }
    let us = policy.countries.parse("US").unwrap();
    assert_ne!(
        judge.etas[&(us, Coverage::Standard)],
        judge.etas[&(us, Coverage::Extended)]
    );
}
