//! Eligibility (SPEC §4): item × contract × policy × as-of → a verdict with
//! every failing reason, in a stable order, and an alternative a buyer can
//! act on. Pure: no I/O, no clock.

use std::collections::HashMap;
use std::fmt;

use chrono::NaiveDate;
use compact_str::CompactString;

use crate::domain::{
    Contract, ContractStatus, Coverage, DeactivationReason, Item, ItemKind, RepairStatus, Serial,
};
use crate::policy::Policy;

/// Why an item cannot be reactivated. The order of the variants is the order
/// reasons are listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    ModelUnknown,
    ModelNotEligible,
    ModelEndOfSupport,
    ContractNotFound,
    ContractExpired,
    ContractSuspended,
    ContractNotStarted,
    ContractAccountMismatch,
    NoReactivationCoverage,
    RegionNotCovered,
    RegionRestricted,
    RepairPending,
    ReportedLost,
    ManualReview,
    LicenseUnbound,
}

impl Reason {
    /// Every reason, in order.
    pub const ALL: [Reason; 15] = [
        Reason::ModelUnknown,
        Reason::ModelNotEligible,
        Reason::ModelEndOfSupport,
        Reason::ContractNotFound,
        Reason::ContractExpired,
        Reason::ContractSuspended,
        Reason::ContractNotStarted,
        Reason::ContractAccountMismatch,
        Reason::NoReactivationCoverage,
        Reason::RegionNotCovered,
        Reason::RegionRestricted,
        Reason::RepairPending,
        Reason::ReportedLost,
        Reason::ManualReview,
        Reason::LicenseUnbound,
    ];

    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            ModelUnknown => "MODEL_UNKNOWN",
            ModelNotEligible => "MODEL_NOT_ELIGIBLE",
            ModelEndOfSupport => "MODEL_END_OF_SUPPORT",
            ContractNotFound => "CONTRACT_NOT_FOUND",
            ContractExpired => "CONTRACT_EXPIRED",
            ContractSuspended => "CONTRACT_SUSPENDED",
            ContractNotStarted => "CONTRACT_NOT_STARTED",
            ContractAccountMismatch => "CONTRACT_ACCOUNT_MISMATCH",
            NoReactivationCoverage => "NO_REACTIVATION_COVERAGE",
            RegionNotCovered => "REGION_NOT_COVERED",
            RegionRestricted => "REGION_RESTRICTED",
            RepairPending => "REPAIR_PENDING",
            ReportedLost => "REPORTED_LOST",
            ManualReview => "MANUAL_REVIEW",
            LicenseUnbound => "LICENSE_UNBOUND",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Empty when eligible; otherwise every failing reason, in [`Reason`] order.
    pub reasons: Vec<Reason>,
    /// What to do instead, for an ineligible item ("" when nothing helps).
    pub alternative: String,
}

impl Verdict {
    pub fn eligible(&self) -> bool {
        self.reasons.is_empty()
    }

    pub fn reasons_text(&self) -> String {
        self.reasons
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Devices of this inventory that are eligible, for `LICENSE_UNBOUND`.
pub type EligibleDevices = crate::dedupe::SerialSet;

/// What a license's verdict asks of the inventory's other rows.
pub trait Devices {
    /// True when `serial` is an eligible device of the same inventory.
    fn is_eligible(&self, serial: &Serial) -> bool;
}

impl Devices for EligibleDevices {
    fn is_eligible(&self, serial: &Serial) -> bool {
        self.contains(serial)
    }
}

/// Evaluates one item. For a license, `eligible_devices` knows the eligible
/// devices of the same inventory (see [`evaluate_all`]).
pub fn evaluate(
    item: &Item,
    contract: Option<&Contract>,
    policy: &Policy,
    as_of: NaiveDate,
    eligible_devices: &(impl Devices + ?Sized),
) -> Verdict {
    let mut reasons = Vec::new();
    let mut upgrade: Option<&str> = None;

    if item.kind == ItemKind::Device {
        match item.model {
            None => reasons.push(Reason::ModelUnknown),
            Some(id) => {
                let model = &policy.models[usize::from(id)];
                if !model.eligible {
                    reasons.push(Reason::ModelNotEligible);
                    upgrade = model.upgrade_path.as_deref();
                }
                if model.end_of_support.is_some_and(|eos| eos < as_of) {
                    reasons.push(Reason::ModelEndOfSupport);
                    upgrade = model.upgrade_path.as_deref();
                }
            }
        }
    }

    match contract {
        None => reasons.push(Reason::ContractNotFound),
        Some(c) => {
            if c.status == ContractStatus::Expired || c.end_date < as_of {
                reasons.push(Reason::ContractExpired);
            }
            if c.status == ContractStatus::Suspended {
                reasons.push(Reason::ContractSuspended);
            }
            if c.start_date > as_of {
                reasons.push(Reason::ContractNotStarted);
            }
            if c.account_id != item.account_id {
                reasons.push(Reason::ContractAccountMismatch);
            }
            if !c.covers_reactivation {
                reasons.push(Reason::NoReactivationCoverage);
            }
            if c.coverage == Coverage::Standard && c.home_region != item.region {
                reasons.push(Reason::RegionNotCovered);
            }
        }
    }
    if policy.restricted.contains(&item.country) {
        reasons.push(Reason::RegionRestricted);
    }
    if item.repair_status != RepairStatus::None {
        reasons.push(Reason::RepairPending);
    }
    if item.reported_lost {
        reasons.push(Reason::ReportedLost);
    }
    if item.deactivation_reason == DeactivationReason::SecurityLock {
        reasons.push(Reason::ManualReview);
    }
    if item.kind == ItemKind::License
        && !item
            .bound_serial
            .is_some_and(|s| eligible_devices.is_eligible(&s))
    {
        reasons.push(Reason::LicenseUnbound);
    }
    reasons.sort();
    reasons.dedup();
    // Nothing to suggest for an eligible item (most of them).
    let alternative = if reasons.is_empty() {
        String::new()
    } else {
        alternative(&reasons, upgrade)
    };
    Verdict {
        reasons,
        alternative,
    }
}

/// One sentence per distinct remedy, in reason order.
fn alternative(reasons: &[Reason], upgrade: Option<&str>) -> String {
    use Reason::*;
    let mut parts: Vec<String> = Vec::new();
    for r in reasons {
        let part = match r {
            ModelUnknown => {
                "check the model name against the catalog (refleet policy show)".to_string()
            }
            ModelNotEligible | ModelEndOfSupport => match upgrade {
                Some(u) => format!("upgrade to {u}"),
                None => "replace the device".to_string(),
            },
            ContractNotFound => {
                "check the contract id, or add the contract to the contracts file".to_string()
            }
            ContractExpired | ContractSuspended | ContractNotStarted => {
                "renew the contract".to_string()
            }
            ContractAccountMismatch => {
                "move the device to the contract's account, or use that account's contract"
                    .to_string()
            }
            NoReactivationCoverage => "add the Extended Service".to_string(),
            RegionNotCovered => "upgrade to Extended coverage".to_string(),
            RegionRestricted | ReportedLost => continue,
            RepairPending => "finish the repair first".to_string(),
            ManualReview => "escalated to support, not auto-submitted".to_string(),
            LicenseUnbound => {
                "bind the license to an eligible device of this inventory".to_string()
            }
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join("; ")
}

/// Evaluates a whole inventory: devices first, so that a license can be
/// checked against the eligible devices it may be bound to.
pub fn evaluate_all(
    items: &[Item],
    contracts: &HashMap<CompactString, Contract>,
    policy: &Policy,
    as_of: NaiveDate,
) -> Vec<Verdict> {
    let none = EligibleDevices::new();
    let mut verdicts: Vec<Option<Verdict>> = vec![None; items.len()];
    let mut eligible = EligibleDevices::new();
    for (i, item) in items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.kind == ItemKind::Device)
    {
        let v = evaluate(item, contracts.get(&item.contract_id), policy, as_of, &none);
        if v.eligible() {
            if let Some(s) = item.serial {
                eligible.insert(s);
            }
        }
        verdicts[i] = Some(v);
    }
    items
        .iter()
        .zip(verdicts)
        .map(|(item, v)| {
            v.unwrap_or_else(|| {
                evaluate(
                    item,
                    contracts.get(&item.contract_id),
                    policy,
                    as_of,
                    &eligible,
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{parse_timestamp, Mac, PricingModel, Region, Serial};

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn policy() -> Policy {
        // One model that is ineligible but still supported, to see
        // MODEL_NOT_ELIGIBLE alone (the built-in ineligible models are all
        // past their end of support too).
        let user = crate::policy::PolicyFile::parse(
            "[models.\"Acme 1\"]\nfamily = \"vvx\"\neligible = false\nupgrade_path = \"CCX 500\"\n",
            "test",
        )
        .unwrap();
        Policy::build(crate::policy::PolicyFile::builtin().merge(user)).unwrap()
    }

    fn device(p: &Policy, model: &str, country: &str) -> Item {
        let country = p.countries.parse(country).unwrap();
        Item {
            row: 1,
            kind: ItemKind::Device,
            serial: Some(Serial::parse("0004F2000001", 8, 20).unwrap()),
            mac: Some(Mac::parse("00:04:F2:00:00:01").unwrap()),
            model: p.model(model),
            model_text: model.into(),
            license_id: None,
            bound_serial: None,
            account_id: "A-1".into(),
            contract_id: "C-1".into(),
            country,
            region: p.countries.region(country).unwrap(),
            site: "".into(),
            deactivated_at: parse_timestamp("2026-10-01", None).unwrap(),
            deactivation_reason: DeactivationReason::LicenseTimeout,
            repair_status: RepairStatus::None,
            reported_lost: false,
            extra: Default::default(),
        }
    }

    fn contract(p: &Policy) -> Contract {
        Contract {
            row: 1,
            id: "C-1".into(),
            account_id: "A-1".into(),
            status: ContractStatus::Active,
            coverage: Coverage::Standard,
            covers_reactivation: true,
            start_date: d("2026-01-01"),
            end_date: d("2027-12-31"),
            home_country: p.countries.parse("US").unwrap(),
            home_region: Region::Amer,
            pricing_model: PricingModel::PerDevice,
            term_months: 12,
            included_devices: None,
            auto_renew: false,
            cancellation_days: 30,
        }
    }

    fn reasons(v: &Verdict) -> Vec<&'static str> {
        v.reasons.iter().map(|r| r.as_str()).collect()
    }

    const AS_OF: &str = "2026-11-24";

    #[test]
    fn a_good_device_is_eligible() {
        let p = policy();
        let v = evaluate(
            &device(&p, "VVX 450", "US"),
            Some(&contract(&p)),
            &p,
            d(AS_OF),
            &EligibleDevices::new(),
        );
        assert!(v.eligible(), "{v:?}");
        assert_eq!(v.alternative, "");
    }

    #[test]
    fn each_reason_alone() {
        let p = policy();
        let c = contract(&p);
        let e = EligibleDevices::new();
        let check = |item: &Item, contract: Option<&Contract>, want: &str, alt: &str| {
            let v = evaluate(item, contract, &p, d(AS_OF), &e);
            assert_eq!(reasons(&v), vec![want]);
            assert_eq!(v.alternative, alt, "{want}");
        };
        check(
            &device(&p, "VVX 9000", "US"),
            Some(&c),
            "MODEL_UNKNOWN",
            "check the model name against the catalog (refleet policy show)",
        );
        check(
            &device(&p, "Acme 1", "US"),
            Some(&c),
            "MODEL_NOT_ELIGIBLE",
            "upgrade to CCX 500",
        );
        check(
            &device(&p, "Trio 8800", "US"),
            Some(&c),
            "MODEL_END_OF_SUPPORT",
            "upgrade to Trio C60",
        );
        check(
            &device(&p, "VVX 450", "US"),
            None,
            "CONTRACT_NOT_FOUND",
            "check the contract id, or add the contract to the contracts file",
        );
        let with = |f: &dyn Fn(&mut Contract)| {
            let mut c = contract(&p);
            f(&mut c);
            c
        };
        check(
            &device(&p, "VVX 450", "US"),
            Some(&with(&|c| c.status = ContractStatus::Expired)),
            "CONTRACT_EXPIRED",
            "renew the contract",
        );
        check(
            &device(&p, "VVX 450", "US"),
            Some(&with(&|c| c.end_date = d("2026-11-23"))),
            "CONTRACT_EXPIRED",
            "renew the contract",
        );
        check(
            &device(&p, "VVX 450", "US"),
            Some(&with(&|c| c.status = ContractStatus::Suspended)),
            "CONTRACT_SUSPENDED",
            "renew the contract",
        );
        check(
            &device(&p, "VVX 450", "US"),
            Some(&with(&|c| c.start_date = d("2026-11-25"))),
            "CONTRACT_NOT_STARTED",
            "renew the contract",
        );
        check(
            &device(&p, "VVX 450", "US"),
            Some(&with(&|c| c.account_id = "A-2".into())),
            "CONTRACT_ACCOUNT_MISMATCH",
            "move the device to the contract's account, or use that account's contract",
        );
        check(
            &device(&p, "VVX 450", "US"),
            Some(&with(&|c| c.covers_reactivation = false)),
            "NO_REACTIVATION_COVERAGE",
            "add the Extended Service",
        );
        check(
            &device(&p, "VVX 450", "DE"),
            Some(&c),
            "REGION_NOT_COVERED",
            "upgrade to Extended coverage",
        );
        let mut item = device(&p, "VVX 450", "US");
        item.repair_status = RepairStatus::InRepair;
        check(&item, Some(&c), "REPAIR_PENDING", "finish the repair first");
        let mut item = device(&p, "VVX 450", "US");
        item.reported_lost = true;
        check(&item, Some(&c), "REPORTED_LOST", "");
        let mut item = device(&p, "VVX 450", "US");
        item.deactivation_reason = DeactivationReason::SecurityLock;
        check(
            &item,
            Some(&c),
            "MANUAL_REVIEW",
            "escalated to support, not auto-submitted",
        );
    }

    #[test]
    fn extended_coverage_covers_every_region_but_not_restricted_countries() {
        let p = policy();
        let mut c = contract(&p);
        c.coverage = Coverage::Extended;
        let e = EligibleDevices::new();
        assert!(evaluate(&device(&p, "VVX 450", "JP"), Some(&c), &p, d(AS_OF), &e).eligible());
        // Iran is EMEA and restricted: extended coverage does not help.
        let v = evaluate(&device(&p, "VVX 450", "IR"), Some(&c), &p, d(AS_OF), &e);
        assert_eq!(reasons(&v), vec!["REGION_RESTRICTED"]);
        assert_eq!(v.alternative, "");
    }

    #[test]
    fn every_failing_reason_is_listed_in_a_stable_order() {
        let p = policy();
        let mut c = contract(&p);
        c.status = ContractStatus::Suspended;
        c.end_date = d("2026-01-31");
        c.covers_reactivation = false;
        let mut item = device(&p, "VVX 411", "IR");
        item.reported_lost = true;
        item.repair_status = RepairStatus::Pending;
        item.deactivation_reason = DeactivationReason::SecurityLock;
        let v = evaluate(&item, Some(&c), &p, d(AS_OF), &EligibleDevices::new());
        assert_eq!(
            reasons(&v),
            vec![
                "MODEL_NOT_ELIGIBLE",
                "MODEL_END_OF_SUPPORT",
                "CONTRACT_EXPIRED",
                "CONTRACT_SUSPENDED",
                "NO_REACTIVATION_COVERAGE",
                "REGION_NOT_COVERED",
                "REGION_RESTRICTED",
                "REPAIR_PENDING",
                "REPORTED_LOST",
                "MANUAL_REVIEW",
            ]
        );
        assert_eq!(
            v.alternative,
            "upgrade to CCX 500; renew the contract; add the Extended Service; upgrade to Extended coverage; finish the repair first; escalated to support, not auto-submitted"
        );
        assert_eq!(v.reasons_text().split(';').count(), 10);
    }

    #[test]
    fn licenses_need_an_eligible_bound_device_of_the_inventory() {
        let p = policy();
        let c = contract(&p);
        let contracts: HashMap<CompactString, Contract> = [("C-1".into(), c)].into_iter().collect();
        let good = device(&p, "VVX 450", "US");
        let mut old = device(&p, "VVX 411", "US");
        old.serial = Some(Serial::parse("0004F2000002", 8, 20).unwrap());
        let license = |bound: Option<&str>| {
            let mut l = device(&p, "VVX 450", "US");
            l.kind = ItemKind::License;
            l.serial = None;
            l.mac = None;
            l.model = None;
            l.license_id = Some(crate::domain::LicenseId::parse("ABCD-EFGH-1234-5678").unwrap());
            l.bound_serial = bound.map(|b| Serial::parse(b, 8, 20).unwrap());
            l
        };
        // Licenses first in the file: the verdict must not depend on order.
        let items = vec![
            license(Some("0004F2000001")),
            license(Some("0004F2000002")),
            license(None),
            good,
            old,
        ];
        let v = evaluate_all(&items, &contracts, &p, d(AS_OF));
        assert!(v[0].eligible(), "{:?}", v[0]);
        assert_eq!(reasons(&v[1]), vec!["LICENSE_UNBOUND"]);
        assert_eq!(reasons(&v[2]), vec!["LICENSE_UNBOUND"]);
        assert!(v[3].eligible());
        assert_eq!(
            reasons(&v[4]),
            vec!["MODEL_NOT_ELIGIBLE", "MODEL_END_OF_SUPPORT"]
        );
    }

    #[test]
    fn as_of_across_an_end_date_flips_exactly_the_expected_verdicts() {
        let p = policy();
        let c = contract(&p); // ends 2027-12-31
        let e = EligibleDevices::new();
        let vvx450 = device(&p, "VVX 450", "US"); // end of support 2027-12-31
        let ccx = device(&p, "CCX 500", "US"); // no end of support
        for (as_of, vvx_reasons, ccx_reasons) in [
            ("2027-12-31", vec![], vec![]),
            (
                "2028-01-01",
                vec!["MODEL_END_OF_SUPPORT", "CONTRACT_EXPIRED"],
                vec!["CONTRACT_EXPIRED"],
            ),
        ] {
            assert_eq!(
                reasons(&evaluate(&vvx450, Some(&c), &p, d(as_of), &e)),
                vvx_reasons,
                "{as_of}"
            );
            assert_eq!(
                reasons(&evaluate(&ccx, Some(&c), &p, d(as_of), &e)),
                ccx_reasons,
                "{as_of}"
            );
        }
    }
}
