//! The sections of `report.html` around the charts: notices, headline numbers, the quotes table and the rows to fix.

use std::fmt::Write as _;

use super::{
    card, esc, fmt_int, fmt_money, fmt_rate, metric, Problems, ReportData, SiteCounts, Source,
    QUOTE_ROWS, SITE_ROWS,
};

pub(super) fn notices(h: &mut String, d: &ReportData) {
    if d.source == Source::Quote {
        h.push_str(r#"<p class="notice">A quote: nothing was submitted. Verdicts, reasons and quotes only.</p>"#);
    }
    if d.dry_run {
        h.push_str(r#"<p class="notice">Dry run: nothing was sent to the API.</p>"#);
    }
    if !d.over_budget.is_empty() {
        let consequence = if d.source == Source::Quote {
            "refleet run would submit nothing"
        } else {
            "nothing was submitted"
        };
        let _ = write!(
            h,
            r#"<p class="notice bad">Budget exceeded, {consequence}: {}</p>"#,
            esc(&d.over_budget.join("; "))
        );
    }
    if let Some(why) = &d.stopped_because {
        let _ = write!(
            h,
            r#"<p class="notice bad">Stopped before finishing: {}. Run the same command again to resume.</p>"#,
            esc(why)
        );
    }
}

pub(super) fn headline(h: &mut String, d: &ReportData) {
    h.push_str("<section class=\"cards\" aria-label=\"Headline numbers\">");
    card(h, "Rows", &metric("rows", &fmt_int(d.rows)), "", "");
    card(
        h,
        "Valid",
        &metric("valid_rows", &fmt_int(d.valid_rows)),
        "",
        "",
    );
    card(
        h,
        "Rejected rows",
        &metric("rejected_rows", &fmt_int(d.rejected_rows)),
        "invalid: see the rows to fix",
        if d.rejected_rows > 0 { "warn" } else { "" },
    );
    card(
        h,
        "Eligible",
        &metric("eligible", &fmt_int(d.eligible)),
        "",
        "good",
    );
    // The states chart counts a manual review escalated (or waiting for
    // its case) apart from the ineligible: the card says why they differ.
    let reviews = d.reasons.get("MANUAL_REVIEW").copied().unwrap_or(0);
    let ineligible_note = match (&d.states, reviews) {
        (Some(_), 1..) => format!(
            "{} for manual review: escalated, not in the state “ineligible”",
            fmt_int(reviews)
        ),
        _ => String::new(),
    };
    card(
        h,
        "Ineligible",
        &metric("ineligible", &fmt_int(d.ineligible)),
        &ineligible_note,
        "",
    );
    if let Some(states) = &d.states {
        let n = |s: &str| states.get(s).copied().unwrap_or(0);
        card(
            h,
            "Active",
            &metric("items_by_state.active", &fmt_int(n("active"))),
            "reactivated",
            "good",
        );
        card(
            h,
            "Failed / rejected",
            &format!(
                "{} / {}",
                metric("items_by_state.failed", &fmt_int(n("failed"))),
                metric("items_by_state.rejected", &fmt_int(n("rejected")))
            ),
            "failed · rejected by the API",
            if n("failed") + n("rejected") > 0 {
                "bad"
            } else {
                ""
            },
        );
        card(
            h,
            "Escalated",
            &metric("items_by_state.escalated", &fmt_int(n("escalated"))),
            "support case opened",
            if n("escalated") > 0 { "warn" } else { "" },
        );
    }
    for (cur, t) in &d.quote_totals {
        let p = |field: &str| format!("quotes.{cur}.{field}");
        card(
            h,
            &format!("Quoted {cur}"),
            &metric(&p("total"), &fmt_money(t.total)),
            &format!(
                "{} quote(s) · {} devices · {} licenses",
                metric(&p("quotes"), &fmt_int(t.quotes)),
                metric(&p("devices"), &fmt_int(t.devices)),
                metric(&p("licenses"), &fmt_int(t.licenses)),
            ),
            "info",
        );
    }
    if let Some(nb) = d
        .not_bought
        .as_ref()
        .filter(|n| n.earlier_runs + n.vendor_held > 0)
    {
        let saved: Vec<String> = nb
            .saved
            .iter()
            .map(|(cur, amount)| format!("{} {}", esc(amount), esc(cur)))
            .collect();
        card(
            h,
            "Not bought again",
            &fmt_int(nb.earlier_runs + nb.vendor_held),
            &format!(
                "{} by earlier runs · {} held by the vendor{}",
                fmt_int(nb.earlier_runs),
                fmt_int(nb.vendor_held),
                if saved.is_empty() {
                    String::new()
                } else {
                    format!(" · {} not spent again", saved.join(", "))
                }
            ),
            "info",
        );
    }
    if let Some(r) = &d.requests {
        card(
            h,
            "Requests",
            &metric("requests.sent", &fmt_int(r.sent)),
            &format!(
                "{}/s achieved of {}/s allowed · {} throttled",
                metric("requests.achieved_rate", &fmt_rate(r.achieved_rate)),
                metric("requests.configured_rate", &fmt_rate(r.configured_rate)),
                metric("requests.throttled", &fmt_int(r.throttled)),
            ),
            "info",
        );
    }
    h.push_str("</section>\n");
}

pub(super) fn quotes_table(h: &mut String, d: &ReportData) {
    h.push_str("<h2>Quotes</h2>\n");
    if d.quotes.is_empty() {
        h.push_str(r#"<p class="empty">No quote: no eligible item.</p>"#);
        return;
    }
    h.push_str(
        r#"<table id="quotes"><thead><tr><th>Quote</th><th>Contract</th><th>Region</th><th>Pricing</th><th class="n">Term</th><th class="n">Devices</th><th class="n">Licenses</th><th class="n">Subtotal</th><th class="n">Discount</th><th class="n">Total</th><th>Currency</th><th>Valid until</th></tr></thead><tbody>"#,
    );
    for q in d.quotes.iter().take(QUOTE_ROWS) {
        let _ = write!(
            h,
            r#"<tr><td class="code">{}</td><td>{}</td><td>{}</td><td>{}</td><td class="n">{} mo</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&q.quote_id),
            esc(&q.contract_id),
            esc(&q.region),
            esc(&q.pricing_model),
            q.term_months,
            fmt_int(q.devices),
            fmt_int(q.licenses),
            fmt_money(q.subtotal),
            fmt_money(q.discount),
            fmt_money(q.total),
            esc(&q.currency),
            esc(&q.valid_until),
        );
    }
    h.push_str("</tbody></table>\n");
    if d.quotes.len() > QUOTE_ROWS {
        let _ = write!(
            h,
            r#"<p class="note">The first {QUOTE_ROWS} of {} quotes; all are in quotes.csv.</p>"#,
            fmt_int(d.quotes.len() as u64)
        );
    }
}

pub(super) fn problems(h: &mut String, d: &ReportData) {
    h.push_str("<h2>Rows to fix</h2>\n");
    match &d.problems {
        Problems::NotAvailable(why) => {
            let _ = write!(h, r#"<p class="notice" id="problems">{}</p>"#, esc(why));
        }
        Problems::Rejects { lines: 0, .. } => {
            h.push_str(r#"<p class="empty" id="problems">No row was rejected.</p>"#);
        }
        Problems::Rejects {
            by_code,
            lines,
            first,
        } => {
            h.push_str(r#"<div class="two" id="problems"><table><thead><tr><th>Code</th><th class="n">Lines</th></tr></thead><tbody>"#);
            for (code, n) in by_code {
                let _ = write!(
                    h,
                    r#"<tr><td class="code">{}</td><td class="n">{}</td></tr>"#,
                    esc(code),
                    fmt_int(*n)
                );
            }
            h.push_str(r#"</tbody></table><div><table><thead><tr><th class="n">Row</th><th>Column</th><th>Value</th><th>Code</th><th>Message</th></tr></thead><tbody>"#);
            for p in first {
                let _ = write!(
                    h,
                    r#"<tr><td class="n">{}</td><td>{}</td><td class="value">{}</td><td class="code">{}</td><td>{}</td></tr>"#,
                    esc(&p.row),
                    esc(&p.column),
                    esc(&p.value),
                    esc(&p.code),
                    esc(&p.message),
                );
            }
            let _ = write!(
                h,
                r#"</tbody></table><p class="note">{} of {} lines; all are in rejects.csv (row is the data record number, header not counted).</p></div></div>"#,
                fmt_int(first.len() as u64),
                fmt_int(*lines),
            );
        }
    }
    h.push('\n');
}

/// Sites in the order the table and chart list them: most rows needing
/// work first, then most rows, then by name.
pub(super) fn sites_by_need(d: &ReportData) -> Vec<(&String, &SiteCounts)> {
    let mut sites: Vec<(&String, &SiteCounts)> = d.by_site.iter().collect();
    sites.sort_by(|a, b| SiteCounts::listing_order((a.0, a.1), (b.0, b.1)));
    sites
}

/// How a site is named in the page: rows without one get a name that
/// says so.
pub(super) fn site_name(site: &str) -> &str {
    if site.is_empty() {
        "(no site)"
    } else {
        site
    }
}

/// The by-site table: where each site stands, the sites that need the
/// most work first, and a total line equal to `results.csv`.
pub(super) fn by_site(h: &mut String, d: &ReportData) {
    if d.by_site.is_empty() {
        return;
    }
    let sites = sites_by_need(d);
    h.push_str("<h2>By site</h2>\n");
    h.push_str(r#"<table id="by-site"><thead><tr><th>Site</th><th class="n">Rows</th><th class="n">Active</th><th class="n">On the way</th><th class="n">Failed / rejected</th><th class="n">Escalated</th><th class="n">Ineligible</th><th class="n">Invalid</th></tr></thead><tbody>"#);
    let mut total = SiteCounts::default();
    for (i, (site, c)) in sites.iter().enumerate() {
        total.add(c);
        if i >= SITE_ROWS {
            continue;
        }
        let _ = write!(
            h,
            r#"<tr data-site="{}"><td>{}</td>"#,
            esc(site),
            esc(site_name(site))
        );
        for n in c.columns() {
            let _ = write!(h, r#"<td class="n">{}</td>"#, fmt_int(n));
        }
        h.push_str("</tr>");
    }
    if sites.len() > SITE_ROWS {
        let _ = write!(
            h,
            r#"<tr><td colspan="8" class="note">… and {} more sites, with fewer rows needing work: all are in summary.json (by_site) and results.csv.</td></tr>"#,
            fmt_int((sites.len() - SITE_ROWS) as u64)
        );
    }
    let _ = write!(
        h,
        r#"</tbody><tfoot><tr class="total" data-site-total=""><td>All {} sites</td>"#,
        fmt_int(sites.len() as u64)
    );
    for n in total.columns() {
        let _ = write!(h, r#"<td class="n">{}</td>"#, fmt_int(n));
    }
    h.push_str("</tr></tfoot></table>\n");
    h.push_str(r#"<p class="note">Every row of results.csv is in one column: on the way is planned, submitted, accepted, provisioning, or a manual review waiting for its case; escalated is handed to support. (no site) is rows without one, and rows too malformed for it to be read.</p>"#);
    h.push('\n');
}
