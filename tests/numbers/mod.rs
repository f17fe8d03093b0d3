//! Numbers from outside never crash a command nor hold it past a time
//! bound (issue 15 §3). Every number of a policy file and of a contracts
//! file has a documented range (README "Policy and contracts: ranges"): a
//! policy value outside it is exit 2 naming its TOML key, a contract value
//! outside it a reject naming its row and column. The ranges are written
//! out here, not taken from the code, so that these tests pin the
//! documented numbers too.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use proptest::prelude::*;
use rust_decimal::Decimal;

use refleet::contracts::{self, Contracts};
use refleet::domain::Reject;
use refleet::ingest::{self, CsvSource, IngestOptions, InputPath};
use refleet::plan::{self, Judged, PlanContext, PlanSink};
use refleet::policy::{Policy, PolicyError, PolicyFile};
use refleet::progress::NoProgress;
use refleet::validate::{ValidateOptions, Validator};

use super::sample;

const AS_OF: &str = "2026-11-24";

/// How one bounded run of the binary ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stderr: String,
}

/// Runs `refleet args`, killed after `limit`: a command that would hang
/// fails the test instead of holding it.
fn refleet_within(limit: Duration, args: &[OsString]) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("refleet"))
        .args(args)
        .env_remove("REFLEET_POLICY")
        .env_remove("REFLEET_API_URL")
        .env_remove("REFLEET_STATE")
        // No state folder of the user's: a run names its journal (--state).
        .env_remove("XDG_STATE_HOME")
        .env_remove("HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("refleet starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("refleet {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code: status.code(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

fn os(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// Every `step`-th row of the sample inventory (it lists one account after
/// another: a step spreads the rows over every account).
fn inventory_every(dir: &Path, step: usize) -> PathBuf {
    let text = std::fs::read_to_string(sample("inventory.csv")).unwrap();
    let path = dir.join(format!("inventory-every-{step}.csv"));
    let mut lines = text.lines();
    let mut kept = vec![lines.next().unwrap()];
    kept.extend(lines.step_by(step));
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    path
}

/// The first `rows` rows of the sample inventory.
fn inventory_head(dir: &Path, rows: usize) -> PathBuf {
    let text = std::fs::read_to_string(sample("inventory.csv")).unwrap();
    let path = dir.join(format!("inventory-{rows}.csv"));
    let head: Vec<&str> = text.lines().take(rows + 1).collect();
    std::fs::write(&path, head.join("\n") + "\n").unwrap();
    path
}

fn quote_args(inventory: &Path, contracts: &Path, policy: &Path, out: &Path) -> Vec<OsString> {
    os(&[
        &"quote",
        &inventory,
        &"--contracts",
        &contracts,
        &"--policy",
        &policy,
        &"--as-of",
        &AS_OF,
        &"--quiet",
        &"--out",
        &out,
    ])
}

const FAMILIES: [&str; 10] = [
    "ccx", "edge", "gseries", "group", "headset", "license", "studio", "sync", "trio", "vvx",
];

/// Each value that made `quote` hang or panic at a703a2c is now exit 2
/// naming its key, at once.
#[test]
fn quote_refuses_the_policy_numbers_that_hung_or_crashed_it() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = inventory_head(dir.path(), 60);
    let near_max = Decimal::MAX - Decimal::ONE;
    let mut prices = String::new();
    for currency in ["EUR", "USD"] {
        prices.push_str(&format!("[pricing.unit.{currency}]\n"));
        for f in FAMILIES {
            prices.push_str(&format!(
                "{f} = {{ standard = \"{near_max}\", extended = \"{near_max}\" }}\n"
            ));
        }
    }
    let cases = [
        // Hung: 4294967295 business days, stepped one day at a time.
        ("[sla]\nstandard = 4294967295\nextended = 4294967295\n", "sla.standard"),
        // Hung: no business day to count.
        (
            "[calendar]\nweekend = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n",
            "calendar.weekend",
        ),
        // Panicked: the price times the multiplier overflowed.
        (prices.as_str(), "pricing.unit.EUR.ccx.standard"),
        // Panicked: as-of plus 4294967295 days is past chrono's last date.
        (
            "[pricing]\nquote_validity_days = 4294967295\n",
            "pricing.quote_validity_days",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let policy = dir.path().join(format!("policy-{i}.toml"));
        std::fs::write(&policy, text).unwrap();
        let out = dir.path().join(format!("out-{i}"));
        let ran = refleet_within(
            Duration::from_secs(30),
            &quote_args(&inventory, &sample("contracts.csv"), &policy, &out),
        );
        assert_eq!(ran.code, Some(2), "{key}: {ran:?}");
        assert!(ran.stderr.contains(key), "{key}: {}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }
}

/// At a703a2c a `cancellation_days` of 100000000 panicked `run` after the
/// activations were bought, before any report, and again on every re-run.
/// Now the contract row is a reject naming its row and column, nothing is
/// bought under it, and the other contracts are bought and audited.
#[test]
fn a_cancellation_window_out_of_range_rejects_its_contract_before_anything_is_bought() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = inventory_every(dir.path(), 10);
    let text = std::fs::read_to_string(sample("contracts.csv")).unwrap();
    let mut bad = BTreeMap::new();
    let mut days = BTreeMap::new();
    let mut lines: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut fields: Vec<String> = line.split(',').map(String::from).collect();
        // Two accounts' contracts: a window of 100000000 days.
        if ["ACME-00000", "ACME-00002"].contains(&fields[1].as_str()) {
            fields[12] = "100000000".into();
            bad.insert(fields[0].clone(), i as u64);
        } else if i > 0 {
            days.insert(fields[0].clone(), fields[12].parse::<u64>().unwrap());
        }
        lines.push(fields.join(","));
    }
    let contracts = dir.path().join("contracts.csv");
    std::fs::write(&contracts, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let journal = dir.path().join("journal.sqlite");
    let args = os(&[
        &"run",
        &inventory,
        &"--contracts",
        &contracts,
        &"--as-of",
        &AS_OF,
        &"--quiet",
        &"--out",
        &out,
        &"--state",
        &journal,
        &"--track-timeout",
        &"60s",
    ]);
    for attempt in 0..2 {
        let ran = refleet_within(Duration::from_secs(90), &args);
        assert_eq!(ran.code, Some(0), "run {attempt}: {ran:?}");
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }

    let mut rejects = csv::Reader::from_path(out.join("contract_rejects.csv")).unwrap();
    let got: BTreeSet<(u64, String, String)> = rejects
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].parse().unwrap(), r[1].to_string(), r[3].to_string())
        })
        .collect();
    let want: BTreeSet<(u64, String, String)> = bad
        .values()
        .map(|row| (*row, "cancellation_days".into(), "VALUE_INVALID".into()))
        .collect();
    assert_eq!(got, want);

    let mut results = csv::Reader::from_path(out.join("results.csv")).unwrap();
    let mut active = 0;
    for r in results.records() {
        let r = r.unwrap();
        let (contract, state) = (&r[4], &r[6]);
        if bad.contains_key(contract) {
            assert_eq!(state, "ineligible", "row {} under {contract}", &r[0]);
        }
        active += usize::from(state == "active");
    }
    assert!(active > 0, "the good contracts' items are bought");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let windows: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "cancellation_window")
        .collect();
    assert!(!windows.is_empty());
    for w in &windows {
        let contract = w["contract_id"].as_str().unwrap();
        assert!(!bad.contains_key(contract), "{w}");
        let ordered = &w["ordered_at"].as_str().unwrap()[..10];
        let ordered = NaiveDate::parse_from_str(ordered, "%Y-%m-%d").unwrap();
        let until = ordered + chrono::Days::new(days[contract]);
        assert_eq!(
            w["cancellable_until"].as_str(),
            Some(until.to_string().as_str()),
            "{w}"
        );
    }
}

// ---- The property: any numbers in a policy file and a contracts file ----

/// A number as written in a file, and whether it lies in its documented
/// range (`None`: either answer is right, e.g. an unquoted float whose
/// reading is the parser's business).
#[derive(Debug, Clone)]
struct Num {
    text: String,
    fits: Option<bool>,
}

/// How hostile a generated file is: each number is out of its range (or
/// odd) with weight `bad` against 10 in range; 0 gives clean files, so
/// that plenty of cases get past loading to quoting.
fn hostility() -> impl Strategy<Value = u32> {
    prop_oneof![2 => Just(0u32), 2 => Just(1), 1 => Just(10)]
}

/// In range with weight 10, `hostile` with weight `bad`.
fn mix(
    bad: u32,
    good: impl Strategy<Value = Num> + 'static,
    hostile: impl Strategy<Value = Num> + 'static,
) -> BoxedStrategy<Num> {
    if bad == 0 {
        good.boxed()
    } else {
        prop_oneof![10 => good, bad => hostile].boxed()
    }
}

fn int_num(lo: i64, hi: i64) -> impl Fn(i128) -> Num + Clone {
    move |v| Num {
        text: v.to_string(),
        fits: Some((i128::from(lo)..=i128::from(hi)).contains(&v)),
    }
}

/// An integer key whose range is `lo..=hi`. Hostile values: just past the
/// ends, the extremes of the integer types, and text that is no integer.
fn int_key(bad: u32, lo: i64, hi: i64) -> BoxedStrategy<Num> {
    let num = int_num(lo, hi);
    let hostile = prop_oneof![
        3 => prop::sample::select(vec![
            i128::from(lo) - 1,
            i128::from(hi) + 1,
            -1,
            0,
            i128::from(u32::MAX),
            i128::from(u32::MAX) + 1,
            i128::from(i64::MAX),
            i128::from(i64::MIN),
        ])
        .prop_map(num.clone()),
        2 => any::<i64>().prop_map(move |v| num(i128::from(v))),
        // Past i64: not a TOML integer at all.
        1 => Just(Num { text: "18446744073709551616".into(), fits: Some(false) }),
        1 => Just(Num { text: "3.5".into(), fits: Some(false) }),
        1 => Just(Num { text: "\"30\"".into(), fits: Some(false) }),
    ];
    mix(
        bad,
        (lo..=hi).prop_map(move |v| int_num(lo, hi)(i128::from(v))),
        hostile,
    )
}

/// How rust_decimal reads a quoted decimal (its serde visitor).
fn read_decimal(s: &str) -> Option<Decimal> {
    s.parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(s).ok())
}

/// A decimal key whose range is `fits`, written as money up to `max`.
fn decimal_key(bad: u32, max: Decimal, fits: fn(Decimal) -> bool) -> BoxedStrategy<Num> {
    let quoted = move |s: String| Num {
        fits: Some(read_decimal(&s).is_some_and(fits)),
        text: format!("\"{s}\""),
    };
    let cents = i64::try_from(max.mantissa() * 100).unwrap_or(i64::MAX);
    // Zero is not in every range (a multiplier): start at a cent.
    let good = (1..=cents)
        .prop_map(move |c| quoted(Decimal::new(c, 2).to_string()))
        .prop_filter("in range", |n| n.fits == Some(true));
    let hostile = prop_oneof![
        4 => prop::sample::select(vec![
            "0".to_string(),
            "-0".into(),
            "-0.01".into(),
            max.to_string(),
            (max + Decimal::new(1, 2)).to_string(),
            (max * Decimal::TEN).to_string(),
            (Decimal::MAX - Decimal::ONE).to_string(),
            Decimal::MAX.to_string(),
            Decimal::MIN.to_string(),
            "79228162514264337593543950336".into(),
            "0.0000000000000000000000000001".into(),
            "1e6".into(),
            "1e30".into(),
            "NaN".into(),
            "".into(),
        ])
        .prop_map(quoted),
        1 => (-1_000_000_000i64..=2_000_000_000).prop_map(move |v| Num {
            text: v.to_string(),
            fits: Some(fits(Decimal::from(v))),
        }),
        1 => prop::sample::select(vec!["1.5", "1e300", "-2.5", "0.0"]).prop_map(|s| Num {
            text: s.to_string(),
            fits: None,
        }),
    ];
    mix(bad, good, hostile)
}

fn unit_price(bad: u32) -> BoxedStrategy<Num> {
    decimal_key(bad, Decimal::from(1_000_000), |d| {
        d >= Decimal::ZERO && d <= Decimal::from(1_000_000)
    })
}

fn term_fee(bad: u32) -> BoxedStrategy<Num> {
    decimal_key(bad, Decimal::from(1_000_000_000), |d| {
        d >= Decimal::ZERO && d <= Decimal::from(1_000_000_000)
    })
}

fn multiplier(bad: u32) -> BoxedStrategy<Num> {
    decimal_key(bad, Decimal::ONE_HUNDRED, |d| {
        d > Decimal::ZERO && d <= Decimal::ONE_HUNDRED
    })
}

fn discount(bad: u32) -> BoxedStrategy<Num> {
    decimal_key(bad, Decimal::new(99, 2), |d| {
        d >= Decimal::ZERO && d < Decimal::ONE
    })
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A weekend: a whole week is out of range (no business day to count).
fn weekend(bad: u32) -> BoxedStrategy<(Vec<&'static str>, bool)> {
    let good = prop::sample::subsequence(DAYS.to_vec(), 0..=6).prop_map(|d| (d, true));
    if bad == 0 {
        good.boxed()
    } else {
        prop_oneof![10 => good, bad => Just((DAYS.to_vec(), false))].boxed()
    }
}

/// `identifiers.serial_min_len` and `serial_max_len`: in range when
/// 1 <= min <= max <= 32.
fn serial_lengths(bad: u32) -> BoxedStrategy<(usize, usize)> {
    // Mostly lengths that keep the sample's serials (8 to 14 characters).
    let good = prop_oneof![
        4 => (1usize..=8, 14usize..=32),
        1 => (1usize..=32).prop_flat_map(|min| (Just(min), min..=32)),
    ];
    if bad == 0 {
        good.boxed()
    } else {
        prop_oneof![10 => good, bad => (1usize..=40, 1usize..=40)].boxed()
    }
}

/// Now and then a multiplier for a term no contract may have (48 months).
fn extra_term(bad: u32) -> BoxedStrategy<Option<Num>> {
    if bad == 0 {
        Just(None).boxed()
    } else {
        proptest::option::weighted(f64::from(bad) / 100.0, multiplier(0)).boxed()
    }
}

/// One numeric key of a generated policy and whether its value is in range.
#[derive(Debug, Clone)]
struct Key {
    key: String,
    fits: Option<bool>,
}

/// A generated user policy file: its text and every numeric key in it.
#[derive(Debug, Clone)]
struct PolicyCase {
    text: String,
    keys: Vec<Key>,
}

impl PolicyCase {
    /// Every key in range: the policy must load.
    fn all_fit(&self) -> bool {
        self.keys.iter().all(|k| k.fits == Some(true))
    }

    /// The keys surely out of range: the policy must be refused naming one.
    fn misfits(&self) -> Vec<&Key> {
        self.keys.iter().filter(|k| k.fits == Some(false)).collect()
    }
}

prop_compose! {
    fn policy_case()(bad in hostility())(
        sla in (int_key(bad, 1, 365), int_key(bad, 1, 365)),
        validity in int_key(bad, 1, 3650),
        serial in serial_lengths(bad),
        weekend in weekend(bad),
        override_sa in weekend(bad),
        dense_holidays in any::<bool>(),
        multipliers in (multiplier(bad), multiplier(bad), multiplier(bad)),
        extra_term in extra_term(bad),
        tiers in prop::collection::vec((int_key(bad, 0, 10_000_000), discount(bad)), 0..4),
        fees in (term_fee(bad), term_fee(bad)),
        units in prop::collection::vec(
            (prop::sample::select(vec!["USD", "EUR"]), prop::sample::select(FAMILIES.to_vec()), unit_price(bad), unit_price(bad)),
            0..6,
        ),
    ) -> PolicyCase {
        let mut keys = Vec::new();
        let mut key = |k: &str, fits: Option<bool>| keys.push(Key { key: k.to_string(), fits });
        let mut t = String::new();
        let (min_len, max_len) = serial;
        t.push_str(&format!("[identifiers]\nserial_min_len = {min_len}\nserial_max_len = {max_len}\n"));
        let serial_fits = Some(min_len <= max_len && max_len <= 32);
        key("identifiers.serial_min_len", serial_fits);
        t.push_str(&format!("[sla]\nstandard = {}\nextended = {}\n", sla.0.text, sla.1.text));
        key("sla.standard", sla.0.fits);
        key("sla.extended", sla.1.fits);
        let days = |d: &[&str]| d.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ");
        t.push_str(&format!("[calendar]\nweekend = [{}]\n", days(&weekend.0)));
        key("calendar.weekend", Some(weekend.1));
        t.push_str(&format!("[calendar.weekend_overrides]\nSA = [{}]\n", days(&override_sa.0)));
        key("calendar.weekend_overrides.SA", Some(override_sa.1));
        if dense_holidays {
            // Every day of two years off in Germany: business days lie
            // only past them.
            let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
            let list: Vec<String> = start.iter_days().take(730).map(|d| format!("\"{d}\"")).collect();
            t.push_str(&format!("[calendar.holidays]\nDE = [{}]\n", list.join(", ")));
        }
        t.push_str(&format!("[pricing]\nquote_validity_days = {}\n", validity.text));
        key("pricing.quote_validity_days", validity.fits);
        let mut terms = vec![("12", multipliers.0), ("24", multipliers.1), ("36", multipliers.2)];
        if let Some(m) = extra_term {
            // A term no contract may have.
            terms.push(("48", Num { fits: Some(false), ..m }));
        }
        t.push_str("term_multipliers = { ");
        t.push_str(&terms.iter().map(|(term, m)| format!("\"{term}\" = {}", m.text)).collect::<Vec<_>>().join(", "));
        t.push_str(" }\n");
        for (term, m) in &terms {
            key(&format!("pricing.term_multipliers.{term}"), m.fits);
        }
        t.push_str("volume_tiers = [");
        for (i, (min, d)) in tiers.iter().enumerate() {
            t.push_str(&format!("{{ min_devices = {}, discount = {} }}, ", min.text, d.text));
            key(&format!("pricing.volume_tiers[{i}].min_devices"), min.fits);
            key(&format!("pricing.volume_tiers[{i}].discount"), d.fits);
        }
        t.push_str("]\n");
        t.push_str(&format!("[pricing.per_term_fee.USD]\nstandard = {}\nextended = {}\n", fees.0.text, fees.1.text));
        key("pricing.per_term_fee.USD.standard", fees.0.fits);
        key("pricing.per_term_fee.USD.extended", fees.1.fits);
        // The last entry of a (currency, family) wins, as a TOML table may
        // not repeat a key.
        let mut book: BTreeMap<(&str, &str), (Num, Num)> = BTreeMap::new();
        for (currency, family, standard, extended) in units {
            book.insert((currency, family), (standard, extended));
        }
        let mut current = "";
        for ((currency, family), (standard, extended)) in &book {
            if *currency != current {
                t.push_str(&format!("[pricing.unit.{currency}]\n"));
                current = currency;
            }
            t.push_str(&format!("{family} = {{ standard = {}, extended = {} }}\n", standard.text, extended.text));
            key(&format!("pricing.unit.{currency}.{family}.standard"), standard.fits);
            key(&format!("pricing.unit.{currency}.{family}.extended"), extended.fits);
        }
        PolicyCase { text: t, keys }
    }
}

/// A contract row's numbers as written, and which columns are out of range.
#[derive(Debug, Clone)]
struct ContractNumbers {
    pricing: &'static str,
    term: Num,
    included: Num,
    days: Num,
}

fn contract_numbers(bad: u32) -> BoxedStrategy<ContractNumbers> {
    let fixed = |texts: Vec<&'static str>, fits: fn(&str) -> bool| {
        prop::sample::select(texts).prop_map(move |s| Num {
            text: s.to_string(),
            fits: Some(fits(s)),
        })
    };
    let term = mix(
        bad,
        fixed(vec!["12", "24", "36"], |_| true),
        prop_oneof![
            // Rust reads "+24" as 24.
            fixed(
                vec![
                    "0",
                    "48",
                    "-12",
                    "12.0",
                    "+24",
                    "4294967308",
                    "18446744073709551616"
                ],
                |s| s == "+24"
            ),
            any::<i64>().prop_map(|v| Num {
                text: v.to_string(),
                fits: Some([12, 24, 36].contains(&v)),
            }),
        ],
    );
    let count = move |lo: i64, hi: i64| {
        let num = int_num(lo, hi);
        let num2 = num.clone();
        mix(
            bad,
            prop_oneof![
                4 => (lo..=hi).prop_map(move |v| num(i128::from(v))),
                1 => Just(Num { text: "".into(), fits: Some(true) }),
            ],
            prop_oneof![
                prop::sample::select(vec![
                    i128::from(lo) - 1,
                    i128::from(hi) + 1,
                    100_000_000,
                    i128::from(u32::MAX),
                    i128::from(u32::MAX) + 1,
                    i128::from(i64::MAX),
                    i128::from(i64::MIN),
                ])
                .prop_map(num2.clone()),
                any::<i64>().prop_map(move |v| num2(i128::from(v))),
                fixed(
                    vec!["1e3", "0x10", "١٢", "12 000", "3.5", "18446744073709551616"],
                    |_| false
                ),
            ],
        )
    };
    (
        prop::sample::select(vec!["per_device", "per_term"]),
        term,
        count(0, 10_000_000),
        count(0, 3650),
    )
        .prop_map(|(pricing, term, included, days)| ContractNumbers {
            pricing,
            term,
            // included_devices is required for per_term only.
            included: if included.text.is_empty() {
                Num {
                    fits: Some(pricing == "per_device"),
                    ..included
                }
            } else {
                included
            },
            days,
        })
        .boxed()
}

/// The numbers of a few contract rows (repeated over the sample's rows).
fn contracts_numbers(rows: usize) -> impl Strategy<Value = Vec<ContractNumbers>> {
    hostility().prop_flat_map(move |bad| prop::collection::vec(contract_numbers(bad), 1..rows))
}

/// The sample contracts with each row's numbers replaced; the columns
/// each row has out of range, by row.
fn contracts_text(numbers: &[ContractNumbers]) -> (String, BTreeMap<u64, Vec<&'static str>>) {
    let text = std::fs::read_to_string(sample("contracts.csv")).unwrap();
    let mut lines = text.lines();
    let mut out = String::from(lines.next().unwrap());
    out.push('\n');
    let mut bad = BTreeMap::new();
    for (i, (line, n)) in lines.zip(numbers.iter().cycle()).enumerate() {
        let mut f: Vec<String> = line.split(',').map(String::from).collect();
        f[8] = n.pricing.into();
        f[9] = n.term.text.clone();
        f[10] = n.included.text.clone();
        f[12] = n.days.text.clone();
        out.push_str(&f.join(","));
        out.push('\n');
        let mut cols = Vec::new();
        for (col, num) in [
            ("term_months", &n.term),
            ("included_devices", &n.included),
            ("cancellation_days", &n.days),
        ] {
            if num.fits != Some(true) {
                cols.push(col);
            }
        }
        bad.insert(i as u64 + 1, cols);
    }
    (out, bad)
}

/// Every contract row is either kept with its numbers in range or
/// rejected, with a reject on its row for each column out of range.
fn check_contracts(
    c: &Contracts,
    bad: &BTreeMap<u64, Vec<&'static str>>,
) -> Result<(), TestCaseError> {
    let mut rejected: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for r in &c.rejects {
        rejected.entry(r.row).or_default().insert(r.column.as_ref());
    }
    for (row, cols) in bad {
        let kept = c.by_id.values().find(|k| k.row == *row);
        if cols.is_empty() {
            prop_assert!(
                kept.is_some(),
                "row {row} is in range but was rejected: {:?}",
                rejected.get(row)
            );
        } else {
            prop_assert!(
                kept.is_none(),
                "row {row} has {cols:?} out of range but was kept"
            );
            for col in cols {
                prop_assert!(
                    rejected.get(row).is_some_and(|s| s.contains(col)),
                    "row {row}: no reject for {col}: {:?}",
                    rejected.get(row)
                );
            }
        }
    }
    for k in c.by_id.values() {
        prop_assert!([12, 24, 36].contains(&k.term_months));
        prop_assert!(k.included_devices.unwrap_or(0) <= 10_000_000);
        prop_assert!(k.cancellation_days <= 3650);
    }
    Ok(())
}

/// `[pricing] quote_validity_days`, 30 when absent.
fn validity_days(p: &Policy) -> u32 {
    p.file.pricing.quote_validity_days.unwrap_or(30)
}

/// A built policy holds only numbers in their ranges.
fn check_policy_ranges(p: &Policy) -> Result<(), TestCaseError> {
    use refleet::domain::Coverage;
    for c in [Coverage::Standard, Coverage::Extended] {
        prop_assert!((1..=365).contains(&p.sla_days(c)));
    }
    prop_assert!((1..=3650).contains(&validity_days(p)));
    let pricing = &p.file.pricing;
    for (term, m) in &pricing.term_multipliers {
        prop_assert!(["12", "24", "36"].contains(&term.as_str()));
        prop_assert!(*m > Decimal::ZERO && *m <= Decimal::ONE_HUNDRED);
    }
    for t in pricing.volume_tiers.iter().flatten() {
        prop_assert!(t.min_devices <= 10_000_000);
        prop_assert!(t.discount >= Decimal::ZERO && t.discount < Decimal::ONE);
    }
    let cap = |d: Decimal, max: i64| d >= Decimal::ZERO && d <= Decimal::from(max);
    for prices in pricing.per_term_fee.values() {
        prop_assert!(cap(prices.standard, 1_000_000_000) && cap(prices.extended, 1_000_000_000));
    }
    for prices in pricing.unit.values().flat_map(|b| b.values()) {
        prop_assert!(cap(prices.standard, 1_000_000) && cap(prices.extended, 1_000_000));
    }
    Ok(())
}

/// The built policy, or the error checked to name an offending key.
fn build_checked(case: &PolicyCase) -> Result<Option<Policy>, TestCaseError> {
    let built = PolicyFile::parse(&case.text, "gen.toml")
        .and_then(|f| Policy::build(PolicyFile::builtin().merge(f)));
    match built {
        Ok(p) => {
            prop_assert!(
                case.misfits().is_empty(),
                "accepted with {:?}",
                case.misfits()
            );
            check_policy_ranges(&p)?;
            Ok(Some(p))
        }
        Err(e) => {
            prop_assert!(!case.all_fit(), "refused although every number fits: {e}");
            let msg = e.to_string();
            match e {
                // The TOML reader's message shows the line with its key.
                PolicyError::Parse { .. } => prop_assert!(
                    msg.contains("line ")
                        && case.keys.iter().filter(|k| k.fits != Some(true)).any(|k| {
                            let leaf = k.key.rsplit(['.', ']']).next().unwrap_or(&k.key);
                            msg.contains(leaf)
                        }),
                    "{msg}"
                ),
                _ => prop_assert!(
                    case.keys
                        .iter()
                        .filter(|k| k.fits != Some(true))
                        .any(|k| msg.contains(&k.key)),
                    "{msg} names no key out of range"
                ),
            }
            Ok(None)
        }
    }
}

/// Counts what the plan hands out and checks each activation date.
struct Sink<'p> {
    policy: &'p Policy,
    as_of: NaiveDate,
    eligible: u64,
    bad_eta: Vec<String>,
}

impl PlanSink for Sink<'_> {
    fn verdict(&mut self, judged: &Judged<'_>) -> anyhow::Result<()> {
        if let (true, Some(item)) = (judged.verdict.eligible(), judged.item) {
            self.eligible += 1;
            match judged.eta {
                Some(eta)
                    if eta > self.as_of
                        && self.policy.calendar.is_business_day(item.country, eta) => {}
                other => self.bad_eta.push(format!("row {}: {other:?}", item.row)),
            }
        }
        Ok(())
    }
    fn wants_items(&self) -> bool {
        true
    }
    fn reject(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
    fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
    fn restart(&mut self) -> anyhow::Result<()> {
        self.eligible = 0;
        self.bad_eta.clear();
        Ok(())
    }
}

/// Loads the contracts and makes the quote plan in-process, on a thread
/// that must answer within `limit`.
fn plan_within(
    limit: Duration,
    policy: Policy,
    contracts_csv: String,
    inventory: PathBuf,
) -> (Contracts, anyhow::Result<(plan::Plan, u64, Vec<String>)>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let source = CsvSource::new(
            Box::new(std::io::Cursor::new(contracts_csv.into_bytes())),
            None,
            65536,
        )
        .unwrap();
        let contracts = contracts::load(Box::new(source), &policy, None).unwrap();
        let as_of = NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap();
        let pool = refleet::pipeline::Workers::new(2).unwrap();
        let input = InputPath::File(inventory);
        let mut open =
            || ingest::open(&input, &IngestOptions::default()).map_err(anyhow::Error::from);
        let first = open().unwrap();
        let validator = Validator::new(
            &policy,
            ValidateOptions {
                date_format: None,
                keep_items: true,
            },
            first.source.as_ref(),
        )
        .unwrap();
        let ctx = PlanContext {
            contracts: &contracts,
            policy: &policy,
            as_of,
            pool: &pool,
            eligibility_line: &refleet::report::EligibilityLines,
            not_bought: None,
        };
        let mut sink = Sink {
            policy: &policy,
            as_of,
            eligible: 0,
            bad_eta: Vec::new(),
        };
        let made = plan::plan(&ctx, &mut open, &validator, &mut sink, &NoProgress);
        let made = made.map(|p| (p, sink.eligible, sink.bad_eta));
        let _ = tx.send((contracts, made));
    });
    match rx.recv_timeout(limit) {
        Ok(done) => done,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("loading the contracts and planning took over {limit:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("loading the contracts or planning panicked")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 64, ..ProptestConfig::default() })]

    /// In-process: any numbers in every numeric key of a policy and in
    /// every numeric column of a contracts file: no panic, the plan within
    /// a time bound, a bad policy number refused naming its key, a bad
    /// contract number a reject of its row and column, and every quote and
    /// activation date computed from what was accepted.
    #[test]
    fn no_policy_or_contracts_numbers_panic_or_hang_the_plan(
        case in policy_case(),
        numbers in contracts_numbers(8),
    ) {
        let Some(policy) = build_checked(&case)? else { return Ok(()) };
        let dir = tempfile::tempdir().unwrap();
        let inventory = inventory_every(dir.path(), 10);
        let (csv, bad) = contracts_text(&numbers);
        let validity = validity_days(&policy);
        let (contracts, made) = plan_within(Duration::from_secs(60), policy, csv, inventory);
        check_contracts(&contracts, &bad)?;
        let (plan, eligible, bad_eta) = made.map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        prop_assert!(bad_eta.is_empty(), "{bad_eta:?}");
        let quoted: u64 = plan.quotes.iter().map(|q| q.devices + q.licenses).sum();
        prop_assert_eq!(quoted, eligible);
        let as_of = NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap();
        for q in &plan.quotes {
            let sum: Decimal = q.lines.iter().map(|l| l.amount).sum();
            prop_assert_eq!(q.total, sum);
            prop_assert_eq!(q.valid_until, as_of + chrono::Days::new(validity.into()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 8, ..ProptestConfig::default() })]

    /// The binary: `policy show`, `quote` and `run` (built-in simulator,
    /// tracking bounded by --track-timeout) on generated files end within
    /// their bound with a documented exit code, never a panic; a bad
    /// policy number is exit 2 naming its key, a bad contract number a
    /// line of contract_rejects.csv with its row and column.
    #[test]
    fn no_policy_or_contracts_file_panics_or_hangs_a_command(
        case in policy_case(),
        numbers in contracts_numbers(6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, &case.text).unwrap();
        let (csv, bad) = contracts_text(&numbers);
        let contracts = dir.path().join("contracts.csv");
        std::fs::write(&contracts, csv).unwrap();
        let inventory = inventory_every(dir.path(), 50);
        let limit = Duration::from_secs(60);

        let shown = refleet_within(limit, &os(&[&"policy", &"show", &"--policy", &policy]));
        prop_assert!(!shown.stderr.contains("panicked"), "{}", shown.stderr);
        let ok = build_checked(&case)?.is_some();
        prop_assert_eq!(shown.code, Some(if ok { 0 } else { 2 }), "{}", shown.stderr);

        let out = dir.path().join("quote");
        let quoted = refleet_within(limit, &quote_args(&inventory, &contracts, &policy, &out));
        prop_assert!(!quoted.stderr.contains("panicked"), "{}", quoted.stderr);
        if !ok {
            prop_assert_eq!(quoted.code, Some(2), "{}", quoted.stderr);
            return Ok(());
        }
        prop_assert!(matches!(quoted.code, Some(0 | 3)), "{quoted:?}");
        let mut rejects = csv::Reader::from_path(out.join("contract_rejects.csv")).unwrap();
        let listed: BTreeSet<(u64, String)> = rejects
            .records()
            .map(|r| { let r = r.unwrap(); (r[0].parse().unwrap(), r[1].to_string()) })
            .collect();
        for (row, cols) in &bad {
            for col in cols {
                prop_assert!(listed.contains(&(*row, col.to_string())), "row {row} {col}: {listed:?}");
            }
        }

        let out = dir.path().join("run");
        let mut args = quote_args(&inventory, &contracts, &policy, &out);
        args[0] = "run".into();
        let journal = dir.path().join("journal.sqlite");
        args.extend(os(&[&"--track-timeout", &"3s", &"--state", &journal]));
        let ran = refleet_within(limit, &args);
        prop_assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
        // Contracts whose ids the inventory never names stop a run before
        // it sends anything (quote only warns).
        let unmatched = ran.stderr.contains("no contract id of the inventory is in the contracts file");
        prop_assert!(
            matches!(ran.code, Some(0 | 3 | 4)) || (ran.code == Some(2) && unmatched),
            "{ran:?}"
        );
    }
}
