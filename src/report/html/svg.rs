//! The inline SVG charts of `report.html`: horizontal bars, stacked bars by
//! state, and columns per day. Plain strings, no script; every label is
//! escaped with [`super::esc`], and every length is finite and >= 0 (a bad
//! one is an SVG error the browser logs to its console).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{esc, fmt_int};

/// Colours: meaning first (good, waiting, bad), then neutral.
pub(super) fn state_colour(state: &str) -> &'static str {
    match state {
        "active" | "eligible" => "#2e7d32",
        "escalated" => "#ef6c00",
        "failed" => "#c62828",
        "rejected" => "#ad1457",
        "invalid" => "#8d6e63",
        "ineligible" => "#9e9e9e",
        "manual_review" => "#f9a825",
        "planned" | "submitted" | "accepted" | "provisioning" | "on the way" => "#1565c0",
        "failed or rejected" => "#c62828",
        _ => "#546e7a",
    }
}

/// The order states are listed in: the life of an item, good to bad.
pub(super) fn state_rank(state: &str) -> usize {
    const ORDER: [&str; 14] = [
        "eligible",
        "active",
        "planned",
        "submitted",
        "accepted",
        "provisioning",
        "on the way",
        "manual_review",
        "escalated",
        "rejected",
        "failed",
        "failed or rejected",
        "ineligible",
        "invalid",
    ];
    ORDER
        .iter()
        .position(|s| *s == state)
        .unwrap_or(ORDER.len())
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        Cow::Borrowed(s)
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        Cow::Owned(format!("{cut}…"))
    }
}

/// A bar of a chart: its label, length and the text written after it.
pub(super) struct Bar {
    pub label: String,
    pub value: f64,
    pub text: String,
    pub colour: &'static str,
}

const CHART_W: f64 = 560.0;
const LABEL_W: f64 = 230.0;
const VALUE_W: f64 = 100.0;
const ROW_H: f64 = 24.0;

/// A horizontal bar chart; `title` names it for screen readers.
pub(super) fn hbar_chart(title: &str, bars: &[Bar]) -> String {
    if bars.is_empty() {
        return r#"<p class="empty">Nothing to show.</p>"#.into();
    }
    // A negative or NaN length is an SVG error a browser logs: lengths are >= 0.
    let len = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
    let max = bars.iter().map(|b| len(b.value)).fold(0.0_f64, f64::max);
    let track = CHART_W - LABEL_W - VALUE_W;
    let h = bars.len() as f64 * ROW_H + 8.0;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {CHART_W} {h}" width="{CHART_W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 4.0 + i as f64 * ROW_H;
        let w = if max > 0.0 {
            (len(b.value) / max * track).max(if len(b.value) > 0.0 { 1.5 } else { 0.0 })
        } else {
            0.0
        };
        let _ = write!(
            s,
            r#"<g><title>{full}: {text}</title><text x="{lx}" y="{ty}" text-anchor="end" class="lbl">{label}</text><rect x="{LABEL_W}" y="{ry}" width="{w:.1}" height="{bh}" rx="2" fill="{c}"/><text x="{vx:.1}" y="{ty}" class="val">{text}</text></g>"#,
            full = esc(&b.label),
            text = esc(&b.text),
            label = esc(&clip(&b.label, 30)),
            lx = LABEL_W - 8.0,
            ty = y + 16.0,
            ry = y + 4.0,
            bh = ROW_H - 8.0,
            c = b.colour,
            vx = LABEL_W + w + 6.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// A group of the stacked chart: its name, (state, count) segments, total.
type Stack<'a> = (&'a String, Vec<(&'a String, u64)>, u64);

/// One horizontal bar per group, in the order given, split into segments
/// by state, with a legend.
pub(super) fn stacked_chart<'a>(
    title: &str,
    groups: impl IntoIterator<Item = (&'a String, &'a BTreeMap<String, u64>)>,
) -> String {
    let groups: Vec<Stack<'_>> = groups
        .into_iter()
        .map(|(g, m)| {
            let mut segs: Vec<(&String, u64)> = m
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| (s, *n))
                .collect();
            segs.sort_by_key(|(s, _)| (state_rank(s), s.as_str()));
            let total = segs.iter().map(|(_, n)| n).sum();
            (g, segs, total)
        })
        .filter(|(_, _, total)| *total > 0)
        .collect();
    if groups.is_empty() {
        return r#"<p class="empty">Nothing to show.</p>"#.into();
    }
    let max = groups.iter().map(|g| g.2).max().unwrap_or(1).max(1) as f64;
    let track = CHART_W - LABEL_W - VALUE_W;
    let mut legend: Vec<&String> = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|(s, _)| *s))
        .collect();
    legend.sort_by_key(|s| (state_rank(s), s.as_str()));
    legend.dedup();
    let h = groups.len() as f64 * ROW_H + 8.0 + 22.0;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {CHART_W} {h}" width="{CHART_W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    for (i, (group, segs, total)) in groups.iter().enumerate() {
        let y = 4.0 + i as f64 * ROW_H;
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty}" text-anchor="end" class="lbl">{g}</text>"#,
            lx = LABEL_W - 8.0,
            ty = y + 16.0,
            g = esc(&clip(group, 30)),
        );
        let mut x = LABEL_W;
        for (state, n) in segs {
            let w = *n as f64 / max * track;
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{ry}" width="{w:.1}" height="{bh}" fill="{c}"><title>{g} {st}: {nt}</title></rect>"#,
                ry = y + 4.0,
                bh = ROW_H - 8.0,
                c = state_colour(state),
                g = esc(group),
                st = esc(state),
                nt = fmt_int(*n),
            );
            x += w;
        }
        let _ = write!(
            s,
            r#"<text x="{vx:.1}" y="{ty}" class="val">{t}</text>"#,
            vx = x + 6.0,
            ty = y + 16.0,
            t = fmt_int(*total),
        );
    }
    // The legend: one swatch per state, in the bars' order.
    let ly = groups.len() as f64 * ROW_H + 14.0;
    let mut lx = LABEL_W;
    for state in legend {
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{ly}" width="10" height="10" fill="{c}"/><text x="{tx:.1}" y="{ty}" class="lgd">{st}</text>"#,
            c = state_colour(state),
            tx = lx + 14.0,
            ty = ly + 9.0,
            st = esc(state),
        );
        lx += 22.0 + state.chars().count() as f64 * 6.5;
    }
    s.push_str("</svg>");
    s
}

/// Activations per day as columns, with a date on every few.
pub(super) fn day_chart(title: &str, days: &[(String, u64)]) -> String {
    if days.is_empty() {
        return r#"<p class="empty">No activation recorded yet.</p>"#.into();
    }
    let filled = fill_days(days);
    let days = filled.as_deref().unwrap_or(days);
    let (left, bottom, top) = (44.0, 40.0, 18.0);
    let plot_h = 170.0;
    let h = top + plot_h + bottom;
    let max = days.iter().map(|d| d.1).max().unwrap_or(1).max(1) as f64;
    let slot = (CHART_W - left - 10.0) / days.len() as f64;
    let bar_w = (slot * 0.75).max(1.0);
    let label_every = days.len().div_ceil(8).max(1);
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {CHART_W} {h}" width="{CHART_W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let base = top + plot_h;
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{base}" x2="{x2}" y2="{base}" stroke="#90a4ae"/><line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#90a4ae"/><text x="{tx}" y="{ty}" text-anchor="end" class="lbl">{m}</text><text x="{tx}" y="{base}" text-anchor="end" class="lbl">0</text>"##,
        x2 = CHART_W - 10.0,
        tx = left - 4.0,
        ty = top + 4.0,
        m = fmt_int(max as u64),
    );
    for (i, (day, n)) in days.iter().enumerate() {
        let x = left + i as f64 * slot + (slot - bar_w) / 2.0;
        let bh = *n as f64 / max * plot_h;
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{bh:.1}" fill="#2e7d32"><title>{d}: {nt}</title></rect>"##,
            y = base - bh,
            d = esc(day),
            nt = fmt_int(*n),
        );
        if days.len() <= 24 && *n > 0 {
            let _ = write!(
                s,
                r#"<text x="{cx:.1}" y="{vy:.1}" text-anchor="middle" class="val">{nt}</text>"#,
                cx = x + bar_w / 2.0,
                vy = base - bh - 3.0,
                nt = fmt_int(*n),
            );
        }
        let last_fits = i + 1 == days.len() && i % label_every >= label_every.div_ceil(2);
        if i.is_multiple_of(label_every) || last_fits {
            // `MM-DD` under the column; the full date is in its tooltip.
            let short = day.get(5..).unwrap_or(day);
            let _ = write!(
                s,
                r#"<text x="{cx:.1}" y="{ly}" text-anchor="middle" class="lbl">{d}</text>"#,
                cx = x + bar_w / 2.0,
                ly = base + 16.0,
                d = esc(short),
            );
        }
    }
    let (first, last) = (
        days.first().map_or("", |d| d.0.as_str()),
        days.last().map_or("", |d| d.0.as_str()),
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="{y}" class="lgd">{f} … {l}</text>"#,
        y = h - 4.0,
        f = esc(first),
        l = esc(last),
    );
    s.push_str("</svg>");
    s
}

/// Every day from the first to the last, zero where nothing was activated,
/// so that gaps show as gaps; `None` when a day is not a date or the span is
/// over two years (then the days are drawn as they come).
fn fill_days(days: &[(String, u64)]) -> Option<Vec<(String, u64)>> {
    use chrono::NaiveDate;
    let parse = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let mut by_day = BTreeMap::new();
    for (d, n) in days {
        *by_day.entry(parse(d)?).or_insert(0) += n;
    }
    let (first, last) = (*by_day.keys().next()?, *by_day.keys().next_back()?);
    if (last - first).num_days() > 731 {
        return None;
    }
    Some(
        first
            .iter_days()
            .take_while(|d| *d <= last)
            .map(|d| (d.to_string(), by_day.get(&d).copied().unwrap_or(0)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_between_are_filled_with_zero_and_odd_days_are_kept() {
        let days = vec![("2026-12-30".to_string(), 2), ("2027-01-02".to_string(), 1)];
        let filled = fill_days(&days).unwrap();
        assert_eq!(
            filled,
            vec![
                ("2026-12-30".to_string(), 2),
                ("2026-12-31".to_string(), 0),
                ("2027-01-01".to_string(), 0),
                ("2027-01-02".to_string(), 1)
            ]
        );
        assert!(fill_days(&[("soon".to_string(), 1)]).is_none());
        let svg = day_chart("t", &[("<b>".to_string(), 1)]);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
    }

    #[test]
    fn lengths_are_never_negative() {
        let bars = [
            Bar {
                label: "a".into(),
                value: -5.0,
                text: "-5".into(),
                colour: "#000",
            },
            Bar {
                label: "b".into(),
                value: f64::NAN,
                text: "?".into(),
                colour: "#000",
            },
        ];
        let svg = hbar_chart("t", &bars);
        assert!(!svg.contains("width=\"-") && !svg.contains("NaN"), "{svg}");
    }
}
