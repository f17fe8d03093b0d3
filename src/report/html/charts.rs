//! The charts section of `report.html`: each chart in its figure, with caption and note.

use std::fmt::Write as _;

use rust_decimal::prelude::ToPrimitive;

use super::sections::{site_name, sites_by_need};
use super::svg::{day_chart, hbar_chart, stacked_chart, state_colour, state_rank, Bar};
use super::{esc, fmt_int, fmt_money, plural, ReportData, TOP_REASONS, TOP_SITES};

pub(super) fn figure(h: &mut String, caption: &str, svg: &str, note: &str) {
    let _ = write!(h, "<figure><figcaption>{}</figcaption>{svg}", esc(caption));
    if !note.is_empty() {
        let _ = write!(h, r#"<p class="note">{}</p>"#, esc(note));
    }
    h.push_str("</figure>\n");
}

pub(super) fn charts(h: &mut String, d: &ReportData) {
    h.push_str("<h2>Charts</h2>\n<section class=\"charts\">\n");
    match &d.states {
        Some(states) => {
            let mut bars: Vec<Bar> = states
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| Bar {
                    label: s.clone(),
                    value: *n as f64,
                    text: fmt_int(*n),
                    colour: state_colour(s),
                })
                .collect();
            bars.sort_by_key(|b| (state_rank(&b.label), b.label.clone()));
            figure(
                h,
                "Items by state",
                &hbar_chart("Items by state", &bars),
                "States with no item are left out.",
            );
        }
        None => {
            let bars = [
                ("eligible", d.eligible),
                ("ineligible", d.ineligible),
                ("invalid", d.rejected_rows),
            ]
            .iter()
            .map(|(s, n)| Bar {
                label: (*s).into(),
                value: *n as f64,
                text: fmt_int(*n),
                colour: state_colour(s),
            })
            .collect::<Vec<_>>();
            figure(
                h,
                "Rows by verdict",
                &hbar_chart("Rows by verdict", &bars),
                "",
            );
        }
    }

    let mut reasons: Vec<(&String, u64)> = d
        .reasons
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| (r, *n))
        .collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let bars: Vec<Bar> = reasons
        .iter()
        .take(TOP_REASONS)
        .map(|(r, n)| Bar {
            label: (*r).clone(),
            value: *n as f64,
            text: fmt_int(*n),
            colour: "#6d4c41",
        })
        .collect();
    let rest: u64 = reasons.iter().skip(TOP_REASONS).map(|r| r.1).sum();
    // The rest is a sentence, not a bar: their sum would dwarf the top ones.
    let note = if rest > 0 {
        format!(
            "Top {TOP_REASONS} of {} reasons; the other {} count {} more. A row may have several.",
            reasons.len(),
            reasons.len() - TOP_REASONS,
            plural(rest, "row")
        )
    } else {
        "Reject codes and ineligibility reasons; a row may have several.".into()
    };
    figure(
        h,
        "Reasons: rejected and ineligible rows",
        &hbar_chart("Reasons", &bars),
        &note,
    );

    figure(
        h,
        "Items by region",
        &stacked_chart("Items by region", &d.by_region),
        if d.states.is_some() {
            "Valid items; segments by state."
        } else {
            "Valid items; segments by verdict."
        },
    );

    if !d.by_site.is_empty() {
        let sites = sites_by_need(d);
        let groups: Vec<(String, std::collections::BTreeMap<String, u64>)> = sites
            .iter()
            .take(TOP_SITES)
            .map(|(site, c)| {
                let segments = [
                    ("active", c.active),
                    ("on the way", c.on_the_way),
                    ("failed or rejected", c.failed_or_rejected),
                    ("escalated", c.escalated),
                    ("ineligible", c.ineligible),
                    ("invalid", c.invalid),
                ];
                let segments = segments.iter().map(|(s, n)| (s.to_string(), *n)).collect();
                (site_name(site).to_string(), segments)
            })
            .collect();
        let note = if sites.len() > TOP_SITES {
            format!(
                "The {TOP_SITES} of {} sites with the most rows needing work (neither active nor ineligible); the table lists more.",
                fmt_int(sites.len() as u64)
            )
        } else {
            "Sites with the most rows needing work (neither active nor ineligible) first.".into()
        };
        figure(
            h,
            "Sites needing the most work",
            &stacked_chart(
                "Sites needing the most work",
                groups.iter().map(|(g, m)| (g, m)),
            ),
            &note,
        );
    }

    let bars: Vec<Bar> = d
        .quote_totals
        .iter()
        .map(|(cur, t)| Bar {
            label: format!("{cur} ({})", plural(t.quotes, "quote")),
            // Only the lengths need a float; the text keeps the exact amount.
            value: t.total.to_f64().unwrap_or(0.0),
            text: format!("{} {cur}", fmt_money(t.total)),
            colour: "#1565c0",
        })
        .collect();
    figure(
        h,
        "Quote totals by currency",
        &hbar_chart("Quote totals by currency", &bars),
        if bars.len() > 1 {
            "Each bar is in its own currency: lengths compare amounts, not values."
        } else {
            ""
        },
    );

    match &d.activations {
        Some(days) => figure(
            h,
            "Activations per day",
            &day_chart("Activations per day", days),
            if d.api.as_deref() == Some("simulator") {
                "Simulated dates: the built-in simulator compresses business days into moments, so its activation dates run far ahead of the calendar. Days are UTC; every item the journal holds, across its runs."
            } else {
                "Days are UTC, as the vendor reported them; every item the journal holds, across its runs."
            },
        ),
        None => figure(
            h,
            "Activations per day",
            r#"<p class="empty">A quote submits nothing: no activation yet.</p>"#,
            "",
        ),
    }
    h.push_str("</section>\n");
}
