//! Tests of quoting: lines, totals, currencies and the snapshots in `snapshots/`.

use super::*;
use crate::domain::{
    parse_timestamp, ContractStatus, DeactivationReason, LicenseId, RepairStatus, Serial,
};
use std::collections::HashMap;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn item(p: &Policy, row: u64, model: Option<&str>, country: &str, contract: &str) -> Item {
    let country = p.countries.parse(country).unwrap();
    Item {
        row,
        kind: if model.is_some() {
            ItemKind::Device
        } else {
            ItemKind::License
        },
        serial: model.map(|_| Serial::parse(&format!("SN{row:010}"), 8, 20).unwrap()),
        mac: None,
        model: model.and_then(|m| p.model(m)),
        model_text: model.unwrap_or("").into(),
        license_id: model
            .is_none()
            .then(|| LicenseId::parse(&format!("LIC0{row:012}")).unwrap()),
        bound_serial: None,
        account_id: "A-1".into(),
        contract_id: contract.into(),
        country,
        region: p.countries.region(country).unwrap(),
        site: "".into(),
        deactivated_at: parse_timestamp("2026-10-01", None).unwrap(),
        deactivation_reason: DeactivationReason::Unknown,
        repair_status: RepairStatus::None,
        reported_lost: false,
        extra: Default::default(),
    }
}

fn contract(
    id: &str,
    pricing: PricingModel,
    coverage: Coverage,
    term: u32,
    included: Option<u64>,
) -> Contract {
    let p = Policy::load(None).unwrap();
    Contract {
        row: 1,
        id: id.into(),
        account_id: "A-1".into(),
        status: ContractStatus::Active,
        coverage,
        covers_reactivation: true,
        start_date: d("2026-01-01"),
        end_date: d("2028-12-31"),
        home_country: p.countries.parse("DE").unwrap(),
        home_region: Region::Emea,
        pricing_model: pricing,
        term_months: term,
        included_devices: included,
        auto_renew: true,
        cancellation_days: 30,
    }
}

/// Items: `(model or None for a license, count)` in row order, all in `country`.
fn quote(spec: &[(Option<&str>, u64)], country: &str, c: Contract) -> Quote {
    let p = Policy::load(None).unwrap();
    let mut items = Vec::new();
    for (model, n) in spec {
        for _ in 0..*n {
            items.push(item(&p, items.len() as u64 + 1, *model, country, &c.id));
        }
    }
    let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
    let mut q = build_quotes(
        &items,
        &vec![true; items.len()],
        &contracts,
        &p,
        d("2026-11-24"),
    )
    .unwrap();
    assert_eq!(q.len(), 1);
    q.remove(0)
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn amounts(q: &Quote) -> Vec<(LineKind, String)> {
    q.lines
        .iter()
        .map(|l| (l.kind, l.amount.to_string()))
        .collect()
}

/// Of several groups that cannot be priced, the error names the first
/// in quote order, although the groups are quoted in parallel: here the
/// first bad group comes after 499 good ones, and the 500 after it are
/// all bad, so a thread that starts on the second half fails long
/// before the first bad group is reached.
#[test]
fn the_first_groups_error_is_reported_whatever_the_threads_do() {
    let p = Policy::load(None).unwrap();
    let term = |i: u32| match i {
        ..499 => 12,
        499 => 100,
        _ => 200 + i,
    };
    let template = contract("C", PricingModel::PerDevice, Coverage::Standard, 12, None);
    let contracts: HashMap<CompactString, Contract> = (0..1000)
        .map(|i| {
            let id = CompactString::from(format!("C-{i:04}"));
            let c = Contract {
                id: id.clone(),
                term_months: term(i),
                ..template.clone()
            };
            (id, c)
        })
        .collect();
    let models = ["VVX 450", "CCX 500", "Sync 20", "Trio C60"];
    let items: Vec<Item> = (0..4000u64)
        .map(|n| {
            let (i, m) = (n / 4, models[(n % 4) as usize]);
            item(&p, n + 1, Some(m), "DE", &format!("C-{i:04}"))
        })
        .collect();
    let eligible = vec![true; items.len()];
    for _ in 0..5 {
        let e = build_quotes(&items, &eligible, &contracts, &p, d("2026-11-24")).unwrap_err();
        assert!(matches!(e, QuoteError::NoMultiplier(100)), "{e}");
    }
}

#[test]
fn per_device_with_tier_and_licenses_by_hand() {
    // EUR (Germany, EMEA), extended, 24 months (× 1.85):
    //   100 VVX × 29.00 × 1.85 = 5365.00
    //     5 CCX × 36.00 × 1.85 =  333.00
    //   105 devices → 10 % of 5698.00 = -569.80
    //     3 licenses × 69.00 × 1.85 = 382.95
    //   subtotal 6080.95, total 5511.15
    let q = quote(
        &[(Some("VVX 450"), 100), (Some("CCX 500"), 5), (None, 3)],
        "DE",
        contract("C-1", PricingModel::PerDevice, Coverage::Extended, 24, None),
    );
    assert_eq!(q.currency, "EUR");
    assert_eq!(
        amounts(&q),
        vec![
            (LineKind::Devices, "333.00".into()),
            (LineKind::Devices, "5365.00".into()),
            (LineKind::VolumeDiscount, "-569.80".into()),
            (LineKind::Licenses, "382.95".into()),
        ]
    );
    assert_eq!(
        (q.subtotal, q.discount, q.total),
        (dec("6080.95"), dec("-569.80"), dec("5511.15"))
    );
    assert_eq!((q.devices, q.licenses), (105, 3));
    assert_eq!(q.valid_until, d("2026-12-24"));
    insta::assert_json_snapshot!("per_device_eur_extended_24", q);
}

#[test]
fn volume_tier_boundaries() {
    // USD (US), standard, 12 months: 19.00 per VVX.
    for (n, total) in [
        (99, "1881.00"),
        (100, "1710.00"),
        (999, "17082.90"),
        (1000, "15580.00"),
    ] {
        let q = quote(
            &[(Some("VVX 450"), n)],
            "US",
            contract("C-1", PricingModel::PerDevice, Coverage::Standard, 12, None),
        );
        assert_eq!(q.currency, "USD");
        assert_eq!(q.total, dec(total), "{n} devices");
        assert_eq!(
            q.lines.iter().any(|l| l.kind == LineKind::VolumeDiscount),
            n >= 100,
            "{n}"
        );
    }
}

#[test]
fn rounding_is_half_to_even_once_per_line() {
    // 100 VVX × 19.00 × 1.85 = 3515.00, 1 Sync × 9.00 × 1.85 = 16.65;
    // 10 % of 3531.65 = 353.165 → 353.16 (half to even; half up would say .17).
    let q = quote(
        &[(Some("VVX 450"), 100), (Some("Sync 20"), 1)],
        "US",
        contract("C-1", PricingModel::PerDevice, Coverage::Standard, 24, None),
    );
    assert_eq!(q.discount, dec("-353.16"));
    assert_eq!(q.total, dec("3178.49"));
}

#[test]
fn every_term_multiplier() {
    for (term, total) in [(12, "79.00"), (24, "146.15"), (36, "205.40")] {
        let q = quote(
            &[(Some("Trio C60"), 1)],
            "US",
            contract(
                "C-1",
                PricingModel::PerDevice,
                Coverage::Standard,
                term,
                None,
            ),
        );
        assert_eq!(q.total, dec(total), "{term} months");
    }
}

#[test]
fn per_term_overage_in_row_order_by_hand() {
    // EUR, extended, 12 months, 3 devices included:
    //   flat fee 4000.00 × 1.00                     = 4000.00
    //   rows: VVX, Studio, VVX | Studio, CCX over the included 3
    //   overage: 1 CCX × 36.00 = 36.00, 1 Studio × 219.00 = 219.00
    //   2 licenses × 69.00 = 138.00                  total 4393.00
    let q = quote(
        &[
            (Some("VVX 450"), 1),
            (Some("Studio X50"), 1),
            (Some("VVX 450"), 1),
            (Some("Studio X50"), 1),
            (Some("CCX 500"), 1),
            (None, 2),
        ],
        "FR",
        contract(
            "C-2",
            PricingModel::PerTerm,
            Coverage::Extended,
            12,
            Some(3),
        ),
    );
    assert_eq!(
        amounts(&q),
        vec![
            (LineKind::TermFee, "4000.00".into()),
            (LineKind::Overage, "36.00".into()),
            (LineKind::Overage, "219.00".into()),
            (LineKind::Licenses, "138.00".into()),
        ]
    );
    assert_eq!(q.total, dec("4393.00"));
    insta::assert_json_snapshot!("per_term_eur_extended_12", q);
}

#[test]
fn per_term_exactly_at_the_included_count_has_no_overage() {
    let q = quote(
        &[(Some("VVX 450"), 3)],
        "DE",
        contract(
            "C-2",
            PricingModel::PerTerm,
            Coverage::Standard,
            36,
            Some(3),
        ),
    );
    // 2500.00 × 2.60
    assert_eq!(amounts(&q), vec![(LineKind::TermFee, "6500.00".into())]);
    let q = quote(
        &[(Some("VVX 450"), 4)],
        "DE",
        contract(
            "C-2",
            PricingModel::PerTerm,
            Coverage::Standard,
            36,
            Some(3),
        ),
    );
    // + 1 VVX × 19.00 × 2.60 = 49.40, no volume tier
    assert_eq!(q.total, dec("6549.40"));
}

#[test]
fn groups_by_contract_and_region_with_ids_that_are_deterministic() {
    let p = Policy::load(None).unwrap();
    let mut c = contract("C-1", PricingModel::PerDevice, Coverage::Extended, 12, None);
    c.home_region = Region::Amer;
    let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
    let items = vec![
        item(&p, 1, Some("VVX 450"), "US", "C-1"),
        item(&p, 2, Some("VVX 450"), "JP", "C-1"),
        item(&p, 3, Some("VVX 450"), "DE", "C-1"),
    ];
    let q = build_quotes(
        &items,
        &[true, true, false],
        &contracts,
        &p,
        d("2026-11-24"),
    )
    .unwrap();
    assert_eq!(
        q.iter()
            .map(|q| (q.region, q.currency.as_str(), q.devices))
            .collect::<Vec<_>>(),
        vec![(Region::Amer, "USD", 1), (Region::Apac, "USD", 1)]
    );
    let again = build_quotes(
        &items,
        &[true, true, false],
        &contracts,
        &p,
        d("2026-11-24"),
    )
    .unwrap();
    assert_eq!(q[0].quote_id, again[0].quote_id);
    assert_ne!(q[0].quote_id, q[1].quote_id);
}

/// A price book past the policy's ranges (which `Policy::build` would
/// refuse, set here behind its back) gives an error, never a panic:
/// every product and sum of a quote is checked.
#[test]
fn amounts_that_do_not_fit_are_an_error_not_a_panic() {
    let mut p = Policy::load(None).unwrap();
    let book = p.file.pricing.unit.get_mut("USD").unwrap();
    book.get_mut("vvx").unwrap().standard = Decimal::MAX;
    let fee = p.file.pricing.per_term_fee.get_mut("USD").unwrap();
    fee.standard = Decimal::MAX;
    let as_of = d("2026-11-24");
    for (pricing, n) in [(PricingModel::PerDevice, 2), (PricingModel::PerTerm, 1)] {
        let c = contract("C-1", pricing, Coverage::Standard, 36, Some(0));
        let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
        let items: Vec<Item> = (1..=n)
            .map(|row| item(&p, row, Some("VVX 450"), "US", "C-1"))
            .collect();
        let e = build_quotes(&items, &vec![true; items.len()], &contracts, &p, as_of).unwrap_err();
        assert!(matches!(e, QuoteError::Overflow { .. }), "{e}");
    }
    let q = quote(
        &[(Some("VVX 450"), 1)],
        "US",
        contract("C-1", PricingModel::PerDevice, Coverage::Standard, 12, None),
    );
    let huge = Quote {
        total: Decimal::MAX,
        ..q
    };
    let e = totals_by_currency(&[huge.clone(), huge]).unwrap_err();
    assert!(matches!(e, QuoteError::Overflow { .. }), "{e}");
}

/// A valid-until date past chrono's last date is an error naming it.
#[test]
fn valid_until_past_the_last_date_is_an_error() {
    let p = Policy::load(None).unwrap();
    let c = contract("C-1", PricingModel::PerDevice, Coverage::Standard, 12, None);
    let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
    let items = vec![item(&p, 1, Some("VVX 450"), "US", "C-1")];
    let as_of = NaiveDate::MAX - Days::new(10);
    let e = build_quotes(&items, &[true], &contracts, &p, as_of).unwrap_err();
    assert!(
        matches!(e, QuoteError::DateOutOfRange { days: 30, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("valid-until"), "{e}");
}

proptest::proptest! {
    #[test]
    fn total_is_the_sum_of_lines_and_row_order_does_not_matter(
        picks in proptest::collection::vec(0usize..6, 1..400),
        seed in 0u64..1000,
        term in proptest::sample::select(vec![12u32, 24, 36]),
    ) {
        let p = Policy::load(None).unwrap();
        let models = [Some("VVX 450"), Some("CCX 500"), Some("Studio X50"), Some("Sync 20"), Some("Trio C60"), None];
        let c = contract("C-1", PricingModel::PerDevice, Coverage::Standard, term, None);
        let contracts: HashMap<CompactString, Contract> = [(c.id.clone(), c)].into_iter().collect();
        let mut items: Vec<Item> = picks.iter().enumerate().map(|(i, m)| item(&p, i as u64 + 1, models[*m], "DE", "C-1")).collect();
        let q = build_quotes(&items, &vec![true; items.len()], &contracts, &p, d("2026-11-24")).unwrap();
        let sum: Decimal = q[0].lines.iter().map(|l| l.amount).sum();
        proptest::prop_assert_eq!(q[0].total, sum);
        proptest::prop_assert_eq!(q[0].subtotal + q[0].discount, q[0].total);
        // A deterministic shuffle.
        let n = items.len();
        for i in (1..n).rev() {
            let j = ((seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64)) >> 33) as usize % (i + 1);
            items.swap(i, j);
        }
        let shuffled = build_quotes(&items, &vec![true; n], &contracts, &p, d("2026-11-24")).unwrap();
        proptest::prop_assert_eq!(shuffled[0].total, q[0].total);
    }
}

/// `quotes.json` is written on every core, byte for byte as serde_json
/// writes the array: here with quotes of both pricing models, a volume
/// discount, licenses and several families.
#[test]
fn quotes_json_on_every_core_is_serde_jsons_pretty_array() {
    let quotes = [
        quote(
            &[(Some("VVX 450"), 100), (Some("CCX 500"), 5), (None, 3)],
            "DE",
            contract("C-1", PricingModel::PerDevice, Coverage::Extended, 24, None),
        ),
        quote(
            &[(Some("VVX 450"), 3), (None, 1)],
            "US",
            contract(
                "C-2",
                PricingModel::PerTerm,
                Coverage::Standard,
                12,
                Some(2),
            ),
        ),
        quote(
            &[(None, 2)],
            "JP",
            contract(
                "C-\"3\"\n",
                PricingModel::PerDevice,
                Coverage::Standard,
                36,
                None,
            ),
        ),
    ];
    for n in 0..=quotes.len() {
        let mut got = Vec::new();
        crate::report::write_pretty_array(&mut got, &quotes[..n]).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            serde_json::to_string_pretty(&quotes[..n]).unwrap()
        );
    }
}
