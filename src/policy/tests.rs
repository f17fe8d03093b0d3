//! Tests of the policy: the default, loading, validation and the rules it answers.

use super::*;
use chrono::Datelike;

#[test]
fn builtin_policy_builds_and_covers_the_spec_catalog() {
    let file = PolicyFile::parse(DEFAULT_POLICY, "built-in").unwrap();
    let p = Policy::build(file).unwrap();
    for m in [
        "VVX 450",
        "vvx450",
        "Poly VVX 450",
        "CCX 400",
        "Edge E550",
        "Trio C60",
        "Studio X30",
        "G7500",
        "RealPresence Group 500",
        "Sync 60",
        "Voyager Focus 2",
        "Savi 7320",
        "Studio USB",
    ] {
        assert!(p.model(m).is_some(), "{m}");
    }
    let vvx = p.model("VVX 411").unwrap();
    assert!(!p.models[usize::from(vvx)].eligible);
    assert_eq!(
        p.models[usize::from(vvx)].upgrade_path.as_deref(),
        Some("CCX 500")
    );
    assert!(p.family_of(vvx).serial_is_mac);
    assert!(!p.family_of(p.model("Studio X50").unwrap()).serial_is_mac);
    assert!(p.vendor_ouis.contains(&0x0004F2));
    assert_eq!(p.vendor_ouis.len(), 11);
    for code in ["CU", "IR", "KP", "SY"] {
        assert!(p.restricted.contains(&p.countries.parse(code).unwrap()));
    }
    assert_eq!(p.currencies[&Region::Emea], "EUR");
}

#[test]
fn every_iso_country_has_a_region() {
    let p = Policy::load(None).unwrap();
    let missing: Vec<String> = celes::Country::get_countries()
        .iter()
        .filter(|c| {
            p.countries
                .region(p.countries.parse(c.alpha2).unwrap())
                .is_none()
        })
        .map(|c| c.alpha2.to_string())
        .collect();
    assert!(missing.is_empty(), "no region for {missing:?}");
    let region = |c: &str| p.countries.region(p.countries.parse(c).unwrap()).unwrap();
    assert_eq!(region("BR"), Region::Amer);
    assert_eq!(region("KZ"), Region::Emea);
    assert_eq!(region("ZA"), Region::Emea);
    assert_eq!(region("IN"), Region::Apac);
    assert_eq!(region("NZ"), Region::Apac);
}

#[test]
fn user_file_extends_and_overrides() {
    let user = PolicyFile::parse(
        r#"
            [models."VVX 450"]
            family = "vvx"
            eligible = false
            upgrade_path = "CCX 500"
            [models."Acme 1"]
            family = "ccx"
            eligible = true
            [headers.aliases]
            assettag = "serial_number"
            "#,
        "user.toml",
    )
    .unwrap();
    let p = Policy::build(PolicyFile::builtin().merge(user)).unwrap();
    assert!(!p.models[usize::from(p.model("VVX 450").unwrap())].eligible);
    assert!(p.model("acme-1").is_some());
    assert!(p.model("CCX 600").is_some(), "built-in models are kept");
    assert_eq!(p.header_aliases["assettag"], "serial_number");
    assert_eq!(
        p.header_aliases["sn"], "serial_number",
        "built-in aliases are kept"
    );
}

#[test]
fn activation_eta_skips_weekends_and_holidays() {
    let p = Policy::load(None).unwrap();
    let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let c = |s: &str| p.countries.parse(s).unwrap();
    // Wednesday 2026-11-25 + 2 business days in the US: Thanksgiving
    // (Thu 26th) is a holiday, so Friday 27th and Monday 30th.
    assert_eq!(
        p.activation_eta(c("US"), Coverage::Standard, d("2026-11-25")),
        Some(d("2026-11-30"))
    );
    // Germany has no Thanksgiving.
    assert_eq!(
        p.activation_eta(c("DE"), Coverage::Standard, d("2026-11-25")),
        Some(d("2026-11-27"))
    );
    // Saudi Arabia's weekend is Friday–Saturday: Thursday + 1 is Sunday.
    assert_eq!(
        p.activation_eta(c("SA"), Coverage::Extended, d("2026-11-26")),
        Some(d("2026-11-29"))
    );
    // Everywhere else, Friday + 1 is Monday.
    assert_eq!(
        p.activation_eta(c("GB"), Coverage::Extended, d("2026-11-27")),
        Some(d("2026-11-30"))
    );
}

#[test]
fn replace_starts_from_empty() {
    let user = PolicyFile::parse("replace = true\n[families.x]\nkind = \"k\"\n[models.\"X 1\"]\nfamily = \"x\"\neligible = true\n", "u").unwrap();
    let p = Policy::build(PolicyFile::builtin().merge(user)).unwrap();
    assert_eq!(p.models.len(), 1);
}

#[test]
fn malformed_file_names_the_line() {
    let err = PolicyFile::parse(
        "[identifiers]\nserial_min_len = 8\nserial_max_len = \"twenty\"\n",
        "bad.toml",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad.toml") && msg.contains("line 3"), "{msg}");
    let err = PolicyFile::parse("[modles]\n", "typo.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1") && err.contains("modles"), "{err}");
}

fn build_user(text: &str) -> Result<Policy, PolicyError> {
    Policy::build(PolicyFile::builtin().merge(PolicyFile::parse(text, "u.toml").unwrap()))
}

/// Each value found hanging or panicking `quote` (an SLA of u32::MAX
/// business days, a week without a working day, a price near
/// Decimal::MAX, a validity of u32::MAX days) and every other number
/// outside its range is refused naming its key.
#[test]
fn numbers_out_of_range_are_refused_naming_the_key() {
    let max = Decimal::MAX;
    for (text, key) in [
        ("[sla]\nstandard = 4294967295\n", "sla.standard"),
        ("[sla]\nextended = 0\n", "sla.extended"),
        ("[sla]\nstandard = 366\n", "sla.standard"),
        (
            "[calendar]\nweekend = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n",
            "calendar.weekend",
        ),
        (
            "[calendar.weekend_overrides]\nAE = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sunday\"]\n",
            "calendar.weekend_overrides.AE",
        ),
        (
            "[pricing]\nquote_validity_days = 4294967295\n",
            "pricing.quote_validity_days",
        ),
        (
            "[pricing]\nquote_validity_days = 0\n",
            "pricing.quote_validity_days",
        ),
        (
            &format!("[pricing.unit.USD]\nvvx = {{ standard = \"{max}\", extended = \"29.00\" }}\n"),
            "pricing.unit.USD.vvx.standard",
        ),
        (
            "[pricing.unit.EUR]\nlicense = { standard = \"49\", extended = \"-0.01\" }\n",
            "pricing.unit.EUR.license.extended",
        ),
        (
            "[pricing.unit.EUR]\n\"my family\" = { standard = \"1000000.01\", extended = \"1\" }\n",
            "pricing.unit.EUR.\"my family\".standard",
        ),
        (
            &format!("[pricing.per_term_fee.USD]\nstandard = \"1\"\nextended = \"{max}\"\n"),
            "pricing.per_term_fee.USD.extended",
        ),
        (
            "[pricing.term_multipliers]\n24 = \"0\"\n",
            "pricing.term_multipliers.24",
        ),
        (
            "[pricing.term_multipliers]\n36 = \"100.01\"\n",
            "pricing.term_multipliers.36",
        ),
        (
            "[pricing.term_multipliers]\n48 = \"3\"\n",
            "pricing.term_multipliers.48",
        ),
        (
            "[pricing]\nvolume_tiers = [{ min_devices = 1, discount = \"0\" }, { min_devices = 10000001, discount = \"0.5\" }]\n",
            "pricing.volume_tiers[1].min_devices",
        ),
        (
            "[pricing]\nvolume_tiers = [{ min_devices = 100, discount = \"1\" }]\n",
            "pricing.volume_tiers[0].discount",
        ),
        (
            "[pricing]\nvolume_tiers = [{ min_devices = 100, discount = \"-0.1\" }]\n",
            "pricing.volume_tiers[0].discount",
        ),
        (
            "[identifiers]\nserial_max_len = 18446744073709551615\n",
            "identifiers.serial_max_len",
        ),
    ] {
        let err = build_user(text).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn numbers_at_the_ends_of_their_ranges_are_accepted() {
    let p = build_user(
        "[sla]\nstandard = 365\nextended = 1\n\
         [calendar]\nweekend = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\"]\n\
         [pricing]\nquote_validity_days = 3650\n\
         volume_tiers = [{ min_devices = 0, discount = \"0\" }, { min_devices = 10000000, discount = \"0.9999\" }]\n\
         term_multipliers = { \"12\" = \"0.0001\", \"36\" = \"100\" }\n\
         [pricing.unit.USD]\nvvx = { standard = \"0\", extended = \"1000000\" }\n\
         [pricing.per_term_fee.USD]\nstandard = \"0\"\nextended = \"1000000000\"\n",
    )
    .unwrap();
    assert_eq!(p.sla_days(Coverage::Standard), 365);
    assert_eq!(p.quote_validity_days(), 3650);
    // The longest SLA in a week of one working day: 365 Sundays.
    let from = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    let de = p.countries.parse("DE").unwrap();
    let eta = p.activation_eta(de, Coverage::Standard, from).unwrap();
    assert_eq!(eta.weekday(), chrono::Weekday::Sun);
    assert!((eta - from).num_days() > 360 * 7, "{eta}");
}

#[test]
fn inconsistent_policy_is_refused_with_the_key() {
    let user = PolicyFile::parse(
        "[models.\"X 1\"]\nfamily = \"nope\"\neligible = true\n",
        "u",
    )
    .unwrap();
    let err = Policy::build(PolicyFile::builtin().merge(user))
        .unwrap_err()
        .to_string();
    assert!(err.contains("models.\"X 1\".family"), "{err}");
    let user = PolicyFile::parse("[identifiers]\naccount_pattern = \"([\"\n", "u").unwrap();
    let err = Policy::build(PolicyFile::builtin().merge(user))
        .unwrap_err()
        .to_string();
    assert!(err.contains("identifiers.account_pattern"), "{err}");
}

#[test]
fn a_currency_is_an_iso_4217_code() {
    let with = |currency: &str| {
        let user = PolicyFile::parse(
            &format!("[regions.EMEA]\ncurrency = \"{currency}\"\n"),
            "user.toml",
        )
        .unwrap();
        Policy::build(PolicyFile::builtin().merge(user))
    };
    assert!(with("CHF").is_ok());
    for bad in ["chf", "EURO", "E", "", "€UR", "US$"] {
        let err = with(bad).expect_err(bad).to_string();
        assert!(
            err.contains("regions.EMEA.currency") && err.contains("ISO 4217"),
            "{bad}: {err}"
        );
    }
}
