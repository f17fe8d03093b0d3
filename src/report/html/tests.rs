//! Tests of `report.html`: the data it is built from, escaping, numbers and the rendered page.

use super::*;

fn hostile() -> &'static str {
    r#"<script>alert(1)</script>"onload=alert(2) 'x' & <img src=https://evil.example/x.png>"#
}

/// The tags of a page and their attribute names; quoted values skipped.
fn tags(html: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for chunk in html.split('<').skip(1) {
        let inner = chunk.split('>').next().unwrap_or("");
        let mut names = Vec::new();
        for (i, part) in inner.split('"').enumerate() {
            // Even parts are outside quotes: the tag name and attribute names.
            if i % 2 == 0 {
                names.extend(
                    part.split(|c: char| c.is_whitespace() || c == '=')
                        .filter(|t| !t.is_empty() && *t != "/")
                        .map(str::to_ascii_lowercase),
                );
            }
        }
        let name = names.remove(0).trim_start_matches('/').to_string();
        out.push((name, names));
    }
    out
}

fn sample_with(hostile: &str) -> ReportData {
    let mut states = BTreeMap::new();
    states.insert("active".to_string(), 1889);
    states.insert("escalated".to_string(), 2);
    states.insert("invalid".to_string(), 39);
    states.insert("failed".to_string(), 0);
    let mut region = BTreeMap::new();
    region.insert("active".to_string(), 751);
    let mut by_region = BTreeMap::new();
    by_region.insert("AMER".to_string(), region.clone());
    by_region.insert(hostile.to_string(), region);
    let mut reasons = BTreeMap::new();
    for i in 0..15 {
        reasons.insert(format!("CODE_{i}"), i + 1);
    }
    reasons.insert(hostile.to_string(), 3);
    let mut quote_totals = BTreeMap::new();
    quote_totals.insert(
        "USD".to_string(),
        QuoteTotal {
            quotes: 4,
            devices: 1452,
            licenses: 57,
            total: "94963.15".parse().unwrap(),
        },
    );
    let site = |rows, active, failed_or_rejected, invalid| SiteCounts {
        rows,
        active,
        failed_or_rejected,
        invalid,
        ..SiteCounts::default()
    };
    let by_site = BTreeMap::from([
        ("Berlin".to_string(), site(10, 10, 0, 0)),
        (hostile.to_string(), site(5, 1, 3, 1)),
        (String::new(), site(4, 0, 0, 4)),
    ]);
    ReportData {
        source: Source::Run,
        run: Some((7, "2026-11-24T10:00:00Z".into())),
        input: hostile.into(),
        as_of: "2026-11-24".into(),
        outcome: Some("finished".into()),
        api: Some("simulator".into()),
        dry_run: false,
        stopped_because: Some(hostile.into()),
        rows: 2000,
        valid_rows: 1961,
        rejected_rows: 39,
        eligible: 1889,
        ineligible: 72,
        states: Some(states),
        reasons,
        by_region,
        by_site,
        quote_totals,
        quotes: vec![QuoteRow {
            quote_id: "Q-1".into(),
            contract_id: hostile.into(),
            region: "AMER".into(),
            currency: "USD".into(),
            pricing_model: "per_device".into(),
            term_months: 12,
            devices: 356,
            licenses: 17,
            subtotal: "1234567.5".parse().unwrap(),
            discount: "-10".parse().unwrap(),
            total: "1234557.5".parse().unwrap(),
            valid_until: "2026-12-24".into(),
        }],
        over_budget: vec![hostile.into()],
        requests: Some(RequestStats {
            sent: 42,
            throttled: 0,
            configured_rate: 20.0,
            achieved_rate: 19.656,
        }),
        not_bought: Some(NotBought {
            earlier_runs: 3,
            vendor_held: 2,
            saved: [("USD".to_string(), hostile.to_string())].into(),
        }),
        activations: Some(vec![("2026-11-30".into(), 178), (hostile.into(), 100)]),
        problems: Problems::Rejects {
            by_code: vec![(hostile.into(), 1)],
            lines: 1,
            first: vec![ProblemRow {
                row: "50".into(),
                column: hostile.into(),
                value: format!("'={hostile}"),
                code: hostile.into(),
                message: hostile.into(),
            }],
        },
    }
}

fn sample() -> ReportData {
    sample_with(hostile())
}

#[test]
fn input_is_escaped_everywhere() {
    let html = render(&sample());
    for raw in ["<script", "<img", "\"onload=", "'x'"] {
        assert!(!html.contains(raw), "{raw} appears raw");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;onload=alert(2)"));
    // Whatever the input, the page holds only the tags refleet writes,
    // and none has an event handler or a source.
    let allowed = [
        "!doctype",
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "main",
        "header",
        "h1",
        "h2",
        "p",
        "b",
        "section",
        "div",
        "span",
        "svg",
        "g",
        "text",
        "rect",
        "line",
        "figure",
        "figcaption",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "th",
        "td",
        "footer",
    ];
    for (tag, attrs) in tags(&html) {
        assert!(allowed.contains(&tag.as_str()), "unexpected tag <{tag}>");
        for a in attrs {
            assert!(
                !a.starts_with("on") && a != "src" && a != "href",
                "<{tag} {a}=…>"
            );
        }
    }
}

#[test]
fn nothing_points_outside_the_page() {
    // Input with no URL in it gives a page with no URL at all.
    let html = render(&sample_with("Building 2, <Floor 3>"));
    let lower = html.to_ascii_lowercase();
    for needle in [
        "<script", "<link", "<img", "<iframe", "<object", "@import", "url(", "href=", "src=",
        "http://", "https://", "://",
    ] {
        assert!(!lower.contains(needle), "{needle}");
    }
    assert!(html.contains("default-src 'none'"));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
}

#[test]
fn headline_numbers_are_formatted_and_hooked() {
    let html = render(&sample());
    for (path, text) in [
        ("rows", "2,000"),
        ("valid_rows", "1,961"),
        ("rejected_rows", "39"),
        ("eligible", "1,889"),
        ("ineligible", "72"),
        ("items_by_state.active", "1,889"),
        ("items_by_state.failed", "0"),
        ("items_by_state.rejected", "0"),
        ("items_by_state.escalated", "2"),
        ("quotes.USD.total", "94,963.15"),
        ("quotes.USD.devices", "1,452"),
        ("requests.sent", "42"),
        ("requests.achieved_rate", "19.7"),
    ] {
        let hook = format!(r#"data-metric="{path}">{text}</span>"#);
        assert!(html.contains(&hook), "{hook}");
    }
    // Quote rows: grouped thousands, two decimals, the sign kept.
    assert!(html.contains("1,234,567.50"));
    assert!(html.contains("-10.00"));
}

#[test]
fn number_formats() {
    assert_eq!(fmt_int(0), "0");
    assert_eq!(fmt_int(999), "999");
    assert_eq!(fmt_int(1000), "1,000");
    assert_eq!(fmt_int(1_234_567), "1,234,567");
    let m = |s: &str| fmt_money(s.parse().unwrap());
    assert_eq!(m("0"), "0.00");
    assert_eq!(m("45490.58"), "45,490.58");
    assert_eq!(m("1000000"), "1,000,000.00");
    assert_eq!(m("-1234.5"), "-1,234.50");
    assert_eq!(m("2.345"), "2.34");
    assert_eq!(fmt_rate(19.656), "19.7");
    assert_eq!(fmt_rate(f64::NAN), "0.0");
}

#[test]
fn a_plan_has_no_submission_numbers_and_a_journal_says_problems_are_missing() {
    let mut d = sample();
    d.source = Source::Quote;
    d.states = None;
    d.requests = None;
    d.activations = None;
    let html = render(&d);
    assert!(!html.contains("items_by_state."));
    assert!(!html.contains("requests.sent"));
    assert!(html.contains("Rows by verdict"));
    assert!(html.contains("nothing was submitted"));

    let mut d = sample();
    d.source = Source::Journal {
        path: "j.sqlite".into(),
        run_id: 3,
        finished_at: "2026-11-25T10:00:00Z".into(),
    };
    d.problems = Problems::NotAvailable("not in the journal".into());
    let html = render(&d);
    assert!(html.contains("run #3"));
    assert!(html.contains(r#"<p class="notice" id="problems">not in the journal</p>"#));
}

#[test]
fn the_reasons_chart_keeps_the_top_and_counts_the_rest() {
    let html = render(&sample());
    // 16 reasons: 15 bars and a sentence for the last.
    assert!(html.contains("Top 15 of 16 reasons; the other 1 count 1 row more."));
}

#[test]
fn empty_data_renders() {
    let d = ReportData {
        source: Source::Run,
        run: None,
        input: String::new(),
        as_of: String::new(),
        outcome: None,
        api: None,
        dry_run: true,
        stopped_because: None,
        rows: 0,
        valid_rows: 0,
        rejected_rows: 0,
        eligible: 0,
        ineligible: 0,
        states: Some(BTreeMap::new()),
        reasons: BTreeMap::new(),
        by_region: BTreeMap::new(),
        by_site: BTreeMap::new(),
        quote_totals: BTreeMap::new(),
        quotes: vec![],
        over_budget: vec![],
        requests: None,
        not_bought: None,
        activations: Some(vec![]),
        problems: Problems::Rejects {
            by_code: vec![],
            lines: 0,
            first: vec![],
        },
    };
    let html = render(&d);
    assert!(html.contains("No row was rejected."));
    assert!(html.contains("No activation recorded yet."));
    assert!(html.contains("Dry run"));
}

#[test]
fn summary_json_round_trips_into_the_page() {
    let summary = r#"{"input":"inv.csv","as_of":"2026-11-24","outcome":"finished","rows":3,
            "valid_rows":2,"rejected_rows":1,"eligible":2,"ineligible":0,
            "items_by_state":{"active":2,"invalid":1},"reasons":{"MAC_INVALID":1},
            "by_region":{"EMEA":{"active":2}},
            "quotes":{"EUR":{"quotes":1,"devices":2,"licenses":0,"total":"72.00"}},
            "requests":{"sent":3,"throttled":0,"configured_rate":20.0,"achieved_rate":2.5}}"#;
    let quotes = quotes_from_json(
        r#"[{"quote_id":"Q-1","contract_id":"C-1","account_id":"A","region":"EMEA","currency":"EUR",
            "pricing_model":"per_device","coverage":"extended","term_months":12,"devices":2,"licenses":0,
            "subtotal":"72.00","discount":"0.00","total":"72.00","valid_until":"2026-12-24","lines":[]}]"#,
    )
    .unwrap();
    let d = ReportData::from_summary(
        Source::Run,
        summary,
        quotes,
        vec![("2026-11-30".into(), 2)],
        Problems::NotAvailable("x".into()),
    )
    .unwrap();
    assert_eq!(d.quote_totals["EUR"].total, "72".parse().unwrap());
    let html = render(&d);
    assert!(html.contains(r#"data-metric="quotes.EUR.total">72.00</span>"#));
    assert!(html.contains(r#"data-metric="requests.achieved_rate">2.5</span>"#));
    assert!(ReportData::from_summary(
        Source::Run,
        "[",
        vec![],
        vec![],
        Problems::NotAvailable(String::new())
    )
    .is_err());
}

#[test]
fn rejects_csv_is_grouped_by_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rejects.csv");
    std::fs::write(
        &path,
        "row,column,value,code,message\n1,mac_address,x,MAC_INVALID,bad\n2,country,ZZ,COUNTRY_INVALID,bad\n3,mac_address,y,MAC_INVALID,bad\n",
    )
    .unwrap();
    let Problems::Rejects {
        by_code,
        lines,
        first,
    } = read_problems(&path, 2).unwrap()
    else {
        panic!("rejects expected");
    };
    assert_eq!(lines, 3);
    assert_eq!(
        by_code,
        vec![
            ("MAC_INVALID".to_string(), 2),
            ("COUNTRY_INVALID".to_string(), 1)
        ]
    );
    assert_eq!(first.len(), 2);
    assert_eq!(first[1].value, "ZZ");
}

#[test]
fn the_by_site_table_lists_the_sites_needing_most_work_first_with_totals() {
    let html = render(&sample());
    let table = html
        .split(r#"<table id="by-site">"#)
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("a by-site table");
    // Needing work: the hostile site 4, (no site) 4 (fewer rows), Berlin 0.
    let order: Vec<usize> = [
        r#"data-site="&lt;script&gt;"#,
        r#"data-site="""#,
        r#"data-site="Berlin""#,
    ]
    .iter()
    .map(|s| {
        table
            .find(s)
            .unwrap_or_else(|| panic!("{s} not in the table"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(table.contains("<td>(no site)</td>"));
    assert!(table.contains(
        r#"<td>All 3 sites</td><td class="n">19</td><td class="n">11</td><td class="n">0</td><td class="n">3</td><td class="n">0</td><td class="n">0</td><td class="n">5</td>"#
    ));
    assert!(html.contains("Sites needing the most work"));
    assert!(html.contains(r#"run <b data-field="run">#7</b> ended <b>2026-11-24T10:00:00Z</b>"#));
    assert!(html.contains("Simulated dates"));
}

#[test]
fn the_by_site_table_is_capped_and_its_total_still_counts_every_site() {
    let mut d = sample();
    d.by_site = (0..SITE_ROWS as u64 + 7)
        .map(|i| {
            let c = SiteCounts {
                rows: i + 1,
                active: 1,
                on_the_way: i,
                ..SiteCounts::default()
            };
            (format!("Site {i:03}"), c)
        })
        .collect();
    let html = render(&d);
    let rows = html.matches("<tr data-site=").count();
    assert_eq!(rows, SITE_ROWS);
    assert!(html.contains("… and 7 more sites"));
    // The most work first: the last site has the most rows on the way,
    // Site 000 none.
    let most = format!(r#"data-site="Site {:03}""#, SITE_ROWS + 6);
    assert!(html.contains(&most), "{most}");
    assert!(!html.contains(r#"data-site="Site 000""#));
    let n = SITE_ROWS as u64 + 7;
    let total_rows = n * (n + 1) / 2;
    assert!(html.contains(&format!(
        r#"<td>All {n} sites</td><td class="n">{}</td>"#,
        fmt_int(total_rows)
    )));
}

#[test]
fn a_card_value_gets_smaller_type_as_it_gets_longer() {
    let mut out = String::new();
    card(&mut out, "Rows", &metric("rows", "1,889"), "", "");
    assert!(out.contains(r#"<div class="value">"#));
    out.clear();
    card(
        &mut out,
        "Quoted EUR",
        &metric("q", "11,034,731.49"),
        "",
        "",
    );
    assert!(out.contains(r#"<div class="value long">"#), "{out}");
    out.clear();
    card(
        &mut out,
        "Quoted EUR",
        &metric("q", "999,999,999,999.99"),
        "",
        "",
    );
    assert!(out.contains(r#"<div class="value longer">"#), "{out}");
    assert_eq!(visible_len("<b>a&amp;b</b>"), 3);
}
