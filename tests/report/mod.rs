//! `report.html`: rendered by headless Chromium with no console message,
//! and every headline number equal to `summary.json`; the same page from the
//! journal alone (`refleet report`) and from a plan (`refleet quote`).
//!
//! Chromium is Debian's `chromium` package (`.ci/run` installs it). Without
//! it the Chromium test fails in CI (`CI=true`) and is skipped, loudly,
//! elsewhere; `REFLEET_CHROMIUM` names another binary. Set
//! `REFLEET_REPORT_SCREENSHOT=docs/report.png` to refresh the screenshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{refleet, refleet_for, sample};

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
