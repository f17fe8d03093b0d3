//! `report.html`: rendered by headless Chromium with no console message,
//! and every headline number equal to `summary.json`; the same page from the
//! journal alone (`refleet report`) and from a plan (`refleet quote`).
//!
//! Chromium is Debian's `chromium` package (`.ci/run` installs it). Without
//! it the Chromium tests fail in CI (`CI=true`) and are listed as ignored
//! elsewhere (`build.rs`); `REFLEET_CHROMIUM` names another binary. Set
//! `REFLEET_REPORT_SCREENSHOT=docs/report.png` to refresh the screenshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{refleet, refleet_for, results_by_site, sample};

const AS_OF: &str = "2026-11-24";

/// The headline numbers every run's page must show.
const RUN_METRICS: [&str; 13] = [
    "rows",
    "valid_rows",
    "rejected_rows",
    "eligible",
    "ineligible",
    "items_by_state.active",
    "items_by_state.failed",
    "items_by_state.rejected",
    "items_by_state.escalated",
    "quotes.USD.total",
    "quotes.EUR.total",
    "requests.sent",
    "requests.achieved_rate",
];

/// `refleet run` on the sample data against the built-in simulator.
fn sample_run(out: &Path) -> serde_json::Value {
    // Relative paths, as a user types them: the page (and the screenshot
    // in docs/) shows the input's name.
    let o = refleet_for(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "sample-data/inventory.csv"])
        .args(["--contracts", "sample-data/contracts.csv"])
        .args(["--as-of", AS_OF, "--quiet", "--out"])
        .arg(out)
        .env_remove("REFLEET_API_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// `data-metric` hooks of a page (source or rendered DOM): path → text.
fn metrics(html: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for chunk in html.split("data-metric=\"").skip(1) {
        let Some((path, rest)) = chunk.split_once('"') else {
            continue;
        };
        let text = rest
            .split_once('>')
            .map_or("", |(_, t)| t.split('<').next().unwrap_or(""));
        let old = out.insert(path.to_string(), text.to_string());
        assert!(old.is_none(), "metric {path} twice");
    }
    out
}

/// `summary.json`'s value at a dotted path, as a number.
fn summary_number(summary: &serde_json::Value, path: &str) -> Option<f64> {
    let v = path.split('.').try_fold(summary, |v, key| v.get(key))?;
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Every hook shows its summary value, as exactly as the text's decimals
/// allow; the required ones are there.
fn assert_metrics_match(html: &str, summary: &serde_json::Value, required: &[&str]) {
    let found = metrics(html);
    for path in required {
        assert!(
            found.contains_key(*path),
            "no data-metric=\"{path}\" in the page"
        );
    }
    for (path, text) in &found {
        let expected = summary_number(summary, path)
            .unwrap_or_else(|| panic!("data-metric {path} is not a number in summary.json"));
        let plain = text.replace(',', "");
        let shown: f64 = plain
            .parse()
            .unwrap_or_else(|_| panic!("data-metric {path}: `{text}` is not a number"));
        let decimals = plain.split_once('.').map_or(0, |(_, f)| f.len());
        let tolerance = 0.5 * 10f64.powi(-(decimals as i32)) + 1e-9;
        assert!(
            (shown - expected).abs() <= tolerance,
            "{path}: page shows {text}, summary.json has {expected}"
        );
    }
}

/// Chromium on PATH (or `REFLEET_CHROMIUM`); `None` only outside CI.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REFLEET_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI: chromium is not installed, so report.html cannot be checked (.ci/run installs it)"
        );
        eprintln!(
            "\n**********\nSKIPPED: report.html is not rendered: no chromium on PATH.\nInstall it (apt-get install -y chromium) or set REFLEET_CHROMIUM.\n**********\n"
        );
    }
    found
}

/// What headless Chromium made of a page.
struct Rendered {
    stdout: String,
    /// Console messages and uncaught errors from its log.
    console: Vec<String>,
}

/// Runs headless Chromium on `page` with `extra` arguments, in a fresh
/// profile, with a deadline; its log goes to stderr, where console messages
/// appear as `…:CONSOLE:…` lines.
fn render(chromium: &Path, page: &Path, extra: &[&str]) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 120 s on {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}):\n{stderr}");
    Rendered {
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        console: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
            .map(String::from)
            .collect(),
    }
}

#[test]
#[cfg_attr(
    no_chromium,
    ignore = "needs Chromium (apt-get install chromium, or REFLEET_CHROMIUM); runs in CI"
)]
fn sample_run_report_renders_in_chromium_and_matches_summary_json() {
    let Some(chromium) = chromium() else {
        return;
    };
    // The console check must be able to fail: a page that logs an error and
    // loads an image against the policy is caught.
    let canary_dir = tempfile::tempdir().unwrap();
    let canary = canary_dir.path().join("canary.html");
    std::fs::write(
        &canary,
        r#"<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'"></head><body><img src="x.png"><script>console.error("refleet-canary")</script></body></html>"#,
    )
    .unwrap();
    let seen = render(&chromium, &canary, &["--dump-dom"]).console;
    assert!(
        seen.iter().any(|l| l.contains("refleet-canary"))
            && seen.iter().any(|l| l.contains("Content Security Policy")),
        "console messages are not seen in chromium's log: {seen:?}"
    );

    let out = tempfile::tempdir().unwrap();
    let summary = sample_run(out.path());
    let page = out.path().join("report.html");
    let source = std::fs::read_to_string(&page).expect("run writes report.html");
    for outside in ["://", "<script", "<link", "<img", "src=", "href="] {
        assert!(!source.contains(outside), "report.html holds `{outside}`");
    }

    let dom = render(&chromium, &page, &["--dump-dom"]);
    assert!(
        dom.console.is_empty(),
        "console messages while rendering report.html:\n{}",
        dom.console.join("\n")
    );
    // Loaded: the whole page is in the DOM, charts included.
    assert!(dom
        .stdout
        .contains(r#"<main id="refleet-report" data-source="run">"#));
    assert!(dom.stdout.contains("Rows to fix") && dom.stdout.trim_end().ends_with("</html>"));
    assert!(dom.stdout.matches("<svg").count() >= 5, "five charts");
    assert_metrics_match(&dom.stdout, &summary, &RUN_METRICS);
    assert_eq!(metrics(&dom.stdout)["items_by_state.active"], "1,889");

    let shot = out.path().join("report.png");
    let screenshot = render(
        &chromium,
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
            "--hide-scrollbars",
        ],
    );
    assert!(screenshot.console.is_empty(), "{:?}", screenshot.console);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{}",
        png.len()
    );
    if let Some(to) = std::env::var_os("REFLEET_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, &to).unwrap();
    }
}

#[test]
fn refleet_report_makes_the_same_numbers_from_the_journal_alone() {
    let out = tempfile::tempdir().unwrap();
    let summary = sample_run(out.path());
    let again = tempfile::tempdir().unwrap();
    // The journal the run used by default, which `report` reads by default.
    let o = refleet_for(out.path())
        .args(["report", "--out"])
        .arg(again.path().join("new"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(again.path().join("new/report.html")).unwrap();
    assert_metrics_match(&html, &summary, &RUN_METRICS);
    assert!(html.contains(r#"data-source="journal""#));
    assert!(html.contains("The journal does not keep rejected rows"));
    // The journal's page and the run's own show the same headline numbers.
    let run_html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert_eq!(metrics(&run_html), metrics(&html));

    // A journal with no finished run is a usage error.
    let o = refleet()
        .args(["report", "--state"])
        .arg(again.path().join("missing.sqlite"))
        .arg("--out")
        .arg(again.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn quote_writes_a_report_of_its_plan() {
    let out = tempfile::tempdir().unwrap();
    refleet()
        .arg("quote")
        .arg(sample("inventory.csv"))
        .arg("--contracts")
        .arg(sample("contracts.csv"))
        .args(["--as-of", AS_OF, "--quiet", "--out"])
        .arg(out.path())
        .assert()
        .success();
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    let m = metrics(&html);
    let mut elig = csv::Reader::from_path(out.path().join("eligibility.csv")).unwrap();
    let mut by_region: BTreeMap<(String, bool), u64> = BTreeMap::new();
    for r in elig.records() {
        let r = r.unwrap();
        *by_region
            .entry((r[7].to_string(), &r[8] == "true"))
            .or_default() += 1;
    }
    let eligible: u64 = by_region.iter().filter(|(k, _)| k.1).map(|(_, n)| n).sum();
    assert_eq!(m["rows"], "2,000");
    assert_eq!(m["eligible"].replace(',', ""), eligible.to_string());
    // The regions chart counts what eligibility.csv holds (tooltips carry the numbers).
    for ((region, ok), n) in &by_region {
        let verdict = if *ok { "eligible" } else { "ineligible" };
        assert!(
            html.contains(&format!("<title>{region} {verdict}: {n}</title>")),
            "{region} {verdict}: {n}"
        );
    }
    assert!(!m.keys().any(|k| k.starts_with("items_by_state")));
    assert!(m.contains_key("quotes.USD.total"));
    assert!(html.contains(r#"data-source="quote""#));
}

#[test]
#[cfg_attr(
    no_chromium,
    ignore = "needs Chromium (apt-get install chromium, or REFLEET_CHROMIUM); runs in CI"
)]
fn hostile_cells_stay_text_in_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    // Rejected rows whose values are markup: they reach the page through
    // rejects.csv. Were one not escaped, Chromium would run or refuse it,
    // and either logs to the console.
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.csv");
    let mut text = std::fs::read_to_string(sample("inventory.csv")).unwrap();
    text.push_str("<script>console.error('xss-1')</script>,00-04-f2-00-00-01,Edge E350,,,,ACME-00000,C-00000-1,US,HQ,2026-01-01,migration,none,false,\n");
    text.push_str("0004F2000002,\"\"\"><img src=x onerror=console.error(2)>\",Edge E350,,,,ACME-00000,C-00000-1,US,HQ,2026-01-01,migration,none,false,\n");
    std::fs::write(&inventory, text).unwrap();
    let out = dir.path().join("out");
    refleet()
        .arg("quote")
        .arg(&inventory)
        .arg("--contracts")
        .arg(sample("contracts.csv"))
        .args(["--as-of", AS_OF, "--quiet", "--out"])
        .arg(&out)
        .assert()
        .success();
    let dom = render(&chromium, &out.join("report.html"), &["--dump-dom"]);
    assert!(dom.console.is_empty(), "{}", dom.console.join("\n"));
    assert!(!dom.stdout.contains("<script") && !dom.stdout.contains("<img"));
    assert!(
        dom.stdout
            .contains("&lt;script&gt;console.error('xss-1')&lt;/script&gt;"),
        "the markup shows as text"
    );
    assert!(dom
        .stdout
        .contains("\"&gt;&lt;img src=x onerror=console.error(2)&gt;"));
}

/// A policy whose prices are the largest it allows (1,000,000 a unit a
/// year, a term multiplier of 100, no discount) and whose regions' currency
/// codes are the longest allowed (three letters: all are).
const HUGE_PRICES: &str = r#"
[pricing]
term_multipliers = { "12" = "100", "24" = "100", "36" = "100" }
volume_tiers = [{ min_devices = 1, discount = "0.00" }]
[pricing.per_term_fee.USD]
standard = "1000000000"
extended = "1000000000"
[pricing.per_term_fee.EUR]
standard = "1000000000"
extended = "1000000000"
"#;

/// The unit prices of every family at the largest the policy allows.
fn huge_unit_prices() -> String {
    let families = [
        "vvx", "ccx", "edge", "trio", "studio", "gseries", "group", "sync", "headset", "license",
    ];
    let mut text = String::new();
    for currency in ["USD", "EUR"] {
        text.push_str(&format!("[pricing.unit.{currency}]\n"));
        for f in families {
            text.push_str(&format!(
                "{f} = {{ standard = \"1000000\", extended = \"1000000\" }}\n"
            ));
        }
    }
    text
}

/// What overflows its card in `page` rendered `width` pixels wide, and how
/// many cards there are; with the by-site table's total row and each
/// site's row, as the browser laid them out. A copy of the page gets a
/// script (the page itself allows none) that measures every element of
/// every card against the card's box.
struct Layout {
    overflowing: Vec<String>,
    cards: usize,
    site_total: Vec<u64>,
    sites: BTreeMap<String, Vec<u64>>,
}

fn layout(chromium: &Path, page: &Path, width: u32) -> Layout {
    const MEASURE: &str = r#"<script>
const bad = [];
for (const card of document.querySelectorAll('.card')) {
  const box = card.getBoundingClientRect();
  if (card.scrollWidth > card.clientWidth + 0.5) bad.push('card scrolls: ' + card.textContent);
  for (const el of card.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || el.scrollWidth > el.clientWidth + 0.5 && el.clientWidth > 0)
      bad.push(el.className + ' overflows: ' + el.textContent);
  }
}
const cells = tr => Array.from(tr.querySelectorAll('td.n')).map(td => td.textContent.replaceAll(',', ''));
const total = document.querySelector('#by-site tr[data-site-total]');
const sites = {};
for (const tr of document.querySelectorAll('#by-site tr[data-site]')) sites[tr.dataset.site] = cells(tr);
const out = document.createElement('pre');
out.id = 'layout';
out.textContent = JSON.stringify({bad, cards: document.querySelectorAll('.card').length,
  total: total ? cells(total) : [], sites});
document.body.appendChild(out);
</script>"#;
    let html = std::fs::read_to_string(page).unwrap();
    let html = html
        .replace(
            "default-src 'none'; style-src 'unsafe-inline'",
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        )
        .replace("</body>", &format!("{MEASURE}</body>"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("measured.html");
    std::fs::write(&copy, html).unwrap();
    let dom = render(
        chromium,
        &copy,
        &["--dump-dom", &format!("--window-size={width},2000")],
    );
    assert!(dom.console.is_empty(), "{}", dom.console.join("\n"));
    let json = dom
        .stdout
        .split(r#"<pre id="layout">"#)
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .expect("the measuring script ran")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let numbers = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().parse().unwrap())
            .collect()
    };
    Layout {
        overflowing: v["bad"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        cards: v["cards"].as_u64().unwrap() as usize,
        site_total: numbers(&v["total"]),
        sites: v["sites"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, n)| (k.clone(), numbers(n)))
            .collect(),
    }
}

#[test]
#[cfg_attr(
    no_chromium,
    ignore = "needs Chromium (apt-get install chromium, or REFLEET_CHROMIUM); runs in CI"
)]
fn cards_fit_the_largest_amounts_and_the_by_site_table_adds_up_to_results_csv() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("huge.toml");
    std::fs::write(&policy, format!("{HUGE_PRICES}{}", huge_unit_prices())).unwrap();
    let out = dir.path().join("out");
    let journal = dir.path().join("journal.sqlite");
    let o = refleet()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "sample-data/inventory.csv"])
        .args(["--contracts", "sample-data/contracts.csv", "--policy"])
        .arg(&policy)
        .args(["--as-of", AS_OF, "--quiet", "--state"])
        .arg(&journal)
        .arg("--out")
        .arg(&out)
        .env_remove("REFLEET_API_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let usd = summary["quotes"]["USD"]["total"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(usd.len() >= 15, "the amounts are large: USD {usd}");

    // The same journal's report with every number at its widest: counts
    // of a trillion rows and amounts of a hundred trillion.
    let mut wide = summary.clone();
    let huge_count = serde_json::json!(999_999_999_999u64);
    for key in [
        "rows",
        "valid_rows",
        "rejected_rows",
        "eligible",
        "ineligible",
    ] {
        wide[key] = huge_count.clone();
    }
    for state in ["active", "failed", "rejected", "escalated"] {
        wide["items_by_state"][state] = huge_count.clone();
    }
    wide["requests"]["sent"] = huge_count.clone();
    for currency in ["USD", "EUR"] {
        wide["quotes"][currency]["total"] = serde_json::json!("99999999999999.99");
        for key in ["quotes", "devices", "licenses"] {
            wide["quotes"][currency][key] = huge_count.clone();
        }
    }
    wide["items"]["earlier_runs"] = huge_count.clone();
    wide["items"]["vendor_held"] = huge_count.clone();
    wide["not_bought_again"] =
        serde_json::json!({"EUR": "99999999999999.99", "USD": "99999999999999.99"});
    rusqlite::Connection::open(&journal)
        .unwrap()
        .execute(
            "UPDATE runs SET summary_json = ?1",
            [serde_json::to_string(&wide).unwrap()],
        )
        .unwrap();
    let widest = dir.path().join("widest");
    let o = refleet()
        .args(["report", "--state"])
        .arg(&journal)
        .arg("--out")
        .arg(&widest)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let widest_html = std::fs::read_to_string(widest.join("report.html")).unwrap();
    assert!(widest_html.contains("99,999,999,999,999.99"));

    let expected = results_by_site(&out.join("results.csv"));
    let mut total = vec![0u64; 7];
    for counts in expected.values() {
        for (t, n) in total.iter_mut().zip(counts) {
            *t += n;
        }
    }
    assert_eq!(total[0], 2000, "every row of the sample in results.csv");
    for width in [1280, 800] {
        for page in [out.join("report.html"), widest.join("report.html")] {
            let l = layout(&chromium, &page, width);
            assert!(l.cards >= 10, "{width} px: {} cards", l.cards);
            assert!(
                l.overflowing.is_empty(),
                "{width} px, {}: {:#?}",
                page.display(),
                l.overflowing
            );
            assert_eq!(l.site_total, total, "{width} px: the total line");
            assert!(!l.sites.is_empty());
            for (site, shown) in &l.sites {
                assert_eq!(Some(shown), expected.get(site), "site {site:?}");
            }
        }
    }

    // The measure can fail: a card whose value may not wrap overflows.
    let html = std::fs::read_to_string(widest.join("report.html")).unwrap();
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        html.replace(
            "<style>",
            "<style>.card{overflow-wrap:normal!important}.card .value{white-space:nowrap!important;font-size:40px!important}",
        ),
    )
    .unwrap();
    assert!(!layout(&chromium, &broken, 800).overflowing.is_empty());
}
