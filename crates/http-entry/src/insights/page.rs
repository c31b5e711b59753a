//! The markup of `/insights` (maud, compiled with the crate): a filter form, headline figures,
//! and per view an inline SVG chart (`role="img"`, `<title>` and `<desc>` saying what it shows)
//! followed by the same numbers as a table, so every chart has a text alternative.
//!
//! Figures a test or a script may read carry `data-figure="…"`. Colours are the Okabe–Ito
//! palette (distinguishable with the common colour-vision deficiencies), and every series is
//! also named in the legend and the tables, so colour is never the only cue.

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use handoff_domain::insights::{format_seconds, Bucket, Insights, OutcomeKind, Percentiles};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::{Digest, Sha256};

use super::InsightsForm;
use crate::state::QueueFigures;

/// The page's only style sheet, inline, allowed by its hash.
const STYLE: &str = "\
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fff}\
main{max-width:1040px;margin:0 auto;padding:1rem 1.5rem 3rem}\
h1{font-size:1.6rem;margin:.5rem 0}h2{font-size:1.2rem;margin:2rem 0 .5rem;border-bottom:1px solid #ccc}\
form{display:flex;flex-wrap:wrap;gap:.75rem 1.25rem;align-items:flex-end;background:#f3f5f7;padding:.75rem 1rem;border-radius:6px}\
label{display:block;font-size:.85rem;font-weight:600}\
input,select,button{font:inherit;padding:.25rem .4rem}\
button{background:#0b5cad;color:#fff;border:0;border-radius:4px;padding:.35rem .9rem}\
a:focus,input:focus,select:focus,button:focus{outline:3px solid #e69f00;outline-offset:2px}\
dl.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:.5rem;margin:1rem 0}\
dl.figures div{background:#f3f5f7;border-radius:6px;padding:.5rem .75rem}\
dt{font-size:.8rem;color:#444}dd{margin:0;font-size:1.35rem;font-weight:700}\
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}\
th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}th[scope=row],td.text{text-align:left}\
caption{text-align:left;font-weight:600;padding:.25rem 0}\
td code,th code{white-space:nowrap;font-size:.8rem}th[scope=col]{vertical-align:bottom}\
figure{margin:.5rem 0}svg{max-width:100%;height:auto}\
ul.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.25rem 1rem;font-size:.85rem}\
.note{color:#555;font-size:.85rem}.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:.5rem}";

/// `Content-Security-Policy` of the page: nothing may load or run; the style element is allowed
/// by its hash; the form may only submit to this origin.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    )
});

/// What the page shows.
#[derive(Debug)]
pub struct PageInputs<'a> {
    /// The figures.
    pub insights: &'a Insights,
    /// The query as sent (to fill the form in).
    pub form: &'a InsightsForm,
    /// Undelivered analytics events, if the ledger answered.
    pub outbox_backlog: Option<u64>,
    /// Each queue's last capacity figures.
    pub capacity: &'a [QueueFigures],
    /// When the page was made.
    pub generated_at: DateTime<Utc>,
}

fn colour(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Transferred => "#0072B2",
        OutcomeKind::TransferredAfterDeferral => "#56B4E9",
        OutcomeKind::Confirmed => "#009E73",
        OutcomeKind::Unconfirmed => "#F0E442",
        OutcomeKind::Failed => "#D55E00",
        OutcomeKind::Abandoned => "#CC79A7",
        OutcomeKind::AdvisedDefer => "#E69F00",
        OutcomeKind::InProgress => "#999999",
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn bucket_label(bucket: Bucket, t: DateTime<Utc>) -> String {
    match bucket {
        Bucket::Hour => t.format("%m-%d %H:00").to_string(),
        Bucket::Day => t.format("%Y-%m-%d").to_string(),
    }
}

fn age(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// The whole page.
pub fn render_page(inputs: &PageInputs<'_>) -> String {
    let i = inputs.insights;
    let reason_note = match i.filter.reason() {
        Some(r) => format!(", reason “{}”", r.as_str()),
        None => String::new(),
    };
    let export = export_href(inputs);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Handoff insights" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                a.skip href="#figures" { "Skip to the figures" }
                main {
                    h1 { "Handoff insights" }
                    p #window {
                        "Handoffs created from " time datetime=(ts(i.filter.since())) { (ts(i.filter.since())) }
                        " until " time datetime=(ts(i.filter.until())) { (ts(i.filter.until())) }
                        " (UTC)" (reason_note) ". Generated " (ts(inputs.generated_at)) "."
                    }
                    (filters(inputs.form))
                    p { a #export href=(export) { "Download these handoffs as CSV" } }
                    (headline(inputs))
                    (over_time(i))
                    (reasons(i))
                    (to_queue(i))
                    (failures(i))
                    (confirmation(i))
                    (backlog(inputs.outbox_backlog))
                    (capacity(inputs.capacity))
                }
            }
        }
    };
    page.into_string()
}

fn export_href(inputs: &PageInputs<'_>) -> String {
    let f = &inputs.insights.filter;
    let mut href =
        format!("/handoffs/export.csv?since={}&until={}", url_encode(&ts(f.since())), url_encode(&ts(f.until())));
    if let Some(reason) = f.reason() {
        href.push_str("&reason=");
        href.push_str(&url_encode(reason.as_str()));
    }
    href
}

fn url_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn filters(form: &InsightsForm) -> Markup {
    let option = |value: &str, label: &str| {
        html! {
            @if form.range == value { option value=(value) selected { (label) } }
            @else { option value=(value) { (label) } }
        }
    };
    html! {
        form #filters method="get" action="/insights" aria-label="Filters" {
            div {
                label for="range" { "Time range" }
                select #range name="range" {
                    (option("24h", "Last 24 hours"))
                    (option("7d", "Last 7 days"))
                    (option("30d", "Last 30 days"))
                    (option("custom", "Custom (from / until)"))
                }
            }
            div {
                label for="since" { "From (custom, UTC)" }
                input #since name="since" type="date" value=(form.since) aria-describedby="custom-note";
            }
            div {
                label for="until" { "Until, exclusive (custom, UTC)" }
                input #until name="until" type="date" value=(form.until) aria-describedby="custom-note";
            }
            div {
                label for="reason" { "Reason (empty: all)" }
                input #reason name="reason" type="text" maxlength="128" value=(form.reason);
            }
            div { button type="submit" { "Apply" } }
            p #custom-note .note { "From and until apply when the time range is Custom. Each view can be bookmarked." }
        }
    }
}

fn headline(inputs: &PageInputs<'_>) -> Markup {
    let i = inputs.insights;
    let (transferred, failed) = (i.reached_queue(), i.count(OutcomeKind::Failed));
    html! {
        h2 #figures tabindex="-1" { "At a glance" }
        dl.figures {
            div { dt { "Handoffs" } dd data-figure="total" { (i.total) } }
            div { dt { "Reached a queue" } dd data-figure="transferred-all" { (transferred) } }
            div { dt { "Failed" } dd data-figure="failed-all" { (failed) } }
            div { dt { "Time to queue, median" } dd data-figure="to-queue-p50" { (format_seconds(i.to_queue.p50)) } }
            div { dt { "Time to queue, 95th percentile" } dd data-figure="to-queue-p95" { (format_seconds(i.to_queue.p95)) } }
            div { dt { "Advice confirmation rate" } dd data-figure="confirmation-rate" { (i.confirmation.display()) } }
            div { dt { "Outbox backlog" } dd data-figure="outbox-backlog" {
                @match inputs.outbox_backlog { Some(n) => (n), None => "unavailable" }
            } }
        }
    }
}

fn legend() -> Markup {
    html! {
        ul.legend aria-label="Legend" {
            @for kind in OutcomeKind::ALL {
                li {
                    svg width="12" height="12" aria-hidden="true" focusable="false" { rect width="12" height="12" fill=(colour(kind)) {} }
                    " " (kind.label())
                }
            }
        }
    }
}

/// Handoffs over time by outcome: stacked bars, one per bucket.
fn over_time(i: &Insights) -> Markup {
    const W: f64 = 960.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 48.0;
    const BOTTOM: f64 = 32.0;
    const TOP: f64 = 10.0;
    let n = i.over_time.len().max(1);
    let max = i.over_time.iter().map(|b| b.total()).max().unwrap_or(0).max(1);
    #[allow(clippy::cast_precision_loss)]
    let (bw, scale) = ((W - LEFT - 8.0) / n as f64, (H - BOTTOM - TOP) / max as f64);
    let busiest = i.over_time.iter().max_by_key(|b| b.total());
    let desc = match busiest {
        Some(b) if b.total() > 0 => format!(
            "{} handoffs in {} {} buckets; the busiest {} started {} with {}.",
            i.total,
            i.over_time.len(),
            i.bucket.as_str(),
            i.bucket.as_str(),
            bucket_label(i.bucket, b.start),
            b.total()
        ),
        _ => format!("No handoffs in {} {} buckets.", i.over_time.len(), i.bucket.as_str()),
    };
    let label_every = (n / 8).max(1);
    // (x, y, width, height, colour) of each stacked segment, and the x of each labelled bucket.
    let mut rects: Vec<(f64, f64, f64, f64, &str)> = Vec::new();
    let mut labels: Vec<(f64, String)> = Vec::new();
    for (idx, b) in i.over_time.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let x = LEFT + bw * idx as f64;
        let mut y = H - BOTTOM;
        for kind in OutcomeKind::ALL {
            let count = b.counts.get(&kind).copied().unwrap_or(0);
            if count > 0 {
                #[allow(clippy::cast_precision_loss)]
                let h = count as f64 * scale;
                y -= h;
                rects.push((x + 1.0, y, (bw - 2.0).max(1.0), h, colour(kind)));
            }
        }
        if idx % label_every == 0 {
            labels.push((x + bw / 2.0, bucket_label(i.bucket, b.start)));
        }
    }
    html! {
        section aria-labelledby="over-time-h" {
            h2 #over-time-h { "Handoffs over time by outcome (per " (i.bucket.as_str()) ")" }
            figure {
                svg #over-time-chart role="img" aria-labelledby="over-time-title over-time-desc" viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) {
                    title #over-time-title { "Handoffs per " (i.bucket.as_str()) " by outcome" }
                    desc #over-time-desc { (desc) }
                    line x1=(LEFT) y1=(H - BOTTOM) x2=(W - 8.0) y2=(H - BOTTOM) stroke="#333" {}
                    line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(H - BOTTOM) stroke="#333" {}
                    text x=(LEFT - 6.0) y=(TOP + 4.0) text-anchor="end" font-size="11" { (max) }
                    text x=(LEFT - 6.0) y=(H - BOTTOM + 4.0) text-anchor="end" font-size="11" { "0" }
                    @for r in &rects {
                        rect x=(format!("{:.1}", r.0)) y=(format!("{:.1}", r.1)) width=(format!("{:.1}", r.2)) height=(format!("{:.1}", r.3)) fill=(r.4) {}
                    }
                    @for (x, label) in &labels {
                        text x=(format!("{x:.1}")) y=(H - BOTTOM + 16.0) text-anchor="middle" font-size="10" { (label) }
                    }
                }
                figcaption { (legend()) }
            }
            details {
                summary { "Data table: handoffs per " (i.bucket.as_str()) }
                table #over-time-table {
                    caption { "Handoffs per " (i.bucket.as_str()) " by outcome" }
                    thead { tr { th scope="col" { (i.bucket.as_str()) " starting (UTC)" } @for kind in OutcomeKind::ALL { th scope="col" { (kind.label()) } } th scope="col" { "all" } } }
                    tbody {
                        @for b in &i.over_time {
                            tr { th scope="row" { (bucket_label(i.bucket, b.start)) } @for kind in OutcomeKind::ALL { td { (b.counts.get(&kind).copied().unwrap_or(0)) } } td { (b.total()) } }
                        }
                    }
                }
            }
        }
    }
}

/// Reasons × queue × outcome: a table (the chart is the stacked share bar of each row).
fn reasons(i: &Insights) -> Markup {
    html! {
        section aria-labelledby="reasons-h" {
            h2 #reasons-h { "Reasons × queue × outcome" }
            @if i.by_reason_queue.is_empty() {
                p { "No handoffs in this window." }
            } @else {
                table #reasons-table {
                    caption { "Handoffs by reason, queue and outcome" }
                    thead { tr {
                        th scope="col" { "reason" } th scope="col" { "queue" }
                        @for kind in OutcomeKind::ALL { th scope="col" { (kind.label()) } }
                        th scope="col" { "all" } th scope="col" { "share by outcome" }
                    } }
                    tbody {
                        @for row in &i.by_reason_queue {
                            tr data-reason=(row.reason) {
                                th scope="row" { (row.reason) }
                                td.text { @match row.queue_id { Some(q) => code { (q) }, None => "none chosen" } }
                                @for kind in OutcomeKind::ALL { td { (row.counts.get(&kind).copied().unwrap_or(0)) } }
                                td { (row.total()) }
                                td {
                                    svg width="160" height="12" role="img" aria-label=(share_label(row)) {
                                        @for (x, w, fill) in share_segments(row) {
                                            rect x=(format!("{x:.1}")) width=(format!("{w:.1}")) height="12" fill=(fill) {}
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// (x, width, colour) of each outcome's share of a 160-wide bar.
fn share_segments(row: &handoff_domain::insights::ReasonQueueRow) -> Vec<(f64, f64, &'static str)> {
    let total = row.total().max(1);
    let mut x = 0.0;
    let mut out = Vec::new();
    for kind in OutcomeKind::ALL {
        let c = row.counts.get(&kind).copied().unwrap_or(0);
        if c > 0 {
            #[allow(clippy::cast_precision_loss)]
            let w = 160.0 * c as f64 / total as f64;
            out.push((x, w, colour(kind)));
            x += w;
        }
    }
    out
}

fn share_label(row: &handoff_domain::insights::ReasonQueueRow) -> String {
    let parts: Vec<String> = OutcomeKind::ALL
        .iter()
        .filter_map(|k| row.counts.get(k).filter(|c| **c > 0).map(|c| format!("{} {}", c, k.label())))
        .collect();
    format!("{}: {}", row.reason, parts.join(", "))
}

/// A horizontal bar chart of labelled values, with its title and description.
fn bars(id: &str, title: &str, desc: &str, rows: &[(String, f64, String)]) -> Markup {
    const W: f64 = 640.0;
    const LABEL: f64 = 230.0;
    const ROW: f64 = 26.0;
    #[allow(clippy::cast_precision_loss)]
    let h = ROW * rows.len().max(1) as f64 + 8.0;
    let max = rows.iter().map(|r| r.1).fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE);
    html! {
        svg id=(format!("{id}-chart")) role="img" aria-labelledby=(format!("{id}-title {id}-desc")) viewBox=(format!("0 0 {W} {h}")) width=(W) height=(h) {
            title id=(format!("{id}-title")) { (title) }
            desc id=(format!("{id}-desc")) { (desc) }
            @for (n, (label, v, shown)) in rows.iter().enumerate() {
                @let y = 4.0 + ROW * n as f64;
                text x=(LABEL - 8.0) y=(y + 16.0) text-anchor="end" font-size="12" { (label) }
                rect x=(LABEL) y=(y + 3.0) width=(format!("{:.1}", (W - LABEL - 90.0) * v / max)) height="18" fill="#0072B2" {}
                text x=(format!("{:.1}", LABEL + (W - LABEL - 90.0) * v / max + 6.0)) y=(y + 16.0) font-size="12" { (shown) }
            }
        }
    }
}

fn secs(d: Option<Duration>) -> f64 {
    d.map_or(0.0, |d| d.as_secs_f64())
}

fn to_queue(i: &Insights) -> Markup {
    let rows = |label: &str, p: &Percentiles| {
        vec![
            (format!("{label}, median"), secs(p.p50), format_seconds(p.p50)),
            (format!("{label}, 95th percentile"), secs(p.p95), format_seconds(p.p95)),
        ]
    };
    let mut data = rows("all transfers", &i.to_queue);
    data.extend(rows("after a deferral", &i.deferral_wait));
    let desc = format!(
        "Of {} transferred handoffs the median reached its queue in {} and the 95th percentile in {}; \
         {} waited for capacity first, median {}, 95th percentile {}.",
        i.to_queue.count,
        format_seconds(i.to_queue.p50),
        format_seconds(i.to_queue.p95),
        i.deferral_wait.count,
        format_seconds(i.deferral_wait.p50),
        format_seconds(i.deferral_wait.p95)
    );
    html! {
        section aria-labelledby="to-queue-h" {
            h2 #to-queue-h { "Time from handoff to queue, and how long deferrals waited" }
            figure { (bars("to-queue", "Time from handoff to queue (p50, p95)", &desc, &data)) }
            table #to-queue-table {
                caption { "Time from handoff to queue" }
                thead { tr { th scope="col" { "handoffs" } th scope="col" { "count" } th scope="col" { "median" } th scope="col" { "95th percentile" } } }
                tbody {
                    tr { th scope="row" { "all transfers" } td data-figure="to-queue-count" { (i.to_queue.count) } td { (format_seconds(i.to_queue.p50)) } td { (format_seconds(i.to_queue.p95)) } }
                    tr { th scope="row" { "after a deferral" } td data-figure="deferral-count" { (i.deferral_wait.count) } td data-figure="deferral-p50" { (format_seconds(i.deferral_wait.p50)) } td data-figure="deferral-p95" { (format_seconds(i.deferral_wait.p95)) } }
                }
            }
        }
    }
}

fn failures(i: &Insights) -> Markup {
    #[allow(clippy::cast_precision_loss)]
    let data: Vec<(String, f64, String)> =
        i.failures.iter().map(|(cause, n)| (cause.clone(), *n as f64, n.to_string())).collect();
    let total: u64 = i.failures.values().sum();
    let desc = if data.is_empty() {
        "No failures.".to_owned()
    } else {
        let parts: Vec<String> = i.failures.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        format!("{total} failures: {}.", parts.join(", "))
    };
    html! {
        section aria-labelledby="failures-h" {
            h2 #failures-h { "Failures by cause" }
            @if data.is_empty() {
                p #failures-none { "No failures in this window." }
            } @else {
                figure { (bars("failures", "Failures by cause", &desc, &data)) }
                table #failures-table {
                    caption { "Failures by cause" }
                    thead { tr { th scope="col" { "cause" } th scope="col" { "handoffs" } } }
                    tbody {
                        @for (cause, n) in &i.failures {
                            tr { th scope="row" { code { (cause) } } td data-failure=(cause) { (n) } }
                        }
                    }
                }
            }
        }
    }
}

fn confirmation(i: &Insights) -> Markup {
    let c = &i.confirmation;
    let advised = c.confirmed + c.unconfirmed;
    #[allow(clippy::cast_precision_loss)]
    let data = vec![
        ("confirmed".to_owned(), c.confirmed as f64, c.confirmed.to_string()),
        ("not confirmed".to_owned(), c.unconfirmed as f64, c.unconfirmed.to_string()),
    ];
    let desc = format!(
        "{advised} advisory handoffs: {} confirmed, {} not confirmed; confirmation rate {}.",
        c.confirmed,
        c.unconfirmed,
        c.display()
    );
    html! {
        section aria-labelledby="confirmation-h" {
            h2 #confirmation-h { "Advice confirmation rate" }
            figure { (bars("confirmation", "Advice confirmed and not confirmed", &desc, &data)) }
            p { "Rate: " strong { (c.display()) } " of " (advised) " advisory handoffs (" (c.confirmed) " confirmed, " (c.unconfirmed) " not)." }
        }
    }
}

fn backlog(n: Option<u64>) -> Markup {
    html! {
        section aria-labelledby="backlog-h" {
            h2 #backlog-h { "Outbox backlog" }
            p {
                @match n {
                    Some(n) => { strong { (n) } " analytics events (external tags) wait for delivery to Genesys." },
                    None => "The backlog could not be read.",
                }
            }
        }
    }
}

fn capacity(queues: &[QueueFigures]) -> Markup {
    html! {
        section aria-labelledby="capacity-h" {
            h2 #capacity-h { "Queue capacity (last observed)" }
            @if queues.is_empty() {
                p { "No queue capacity figures are available in this process." }
            } @else {
                table #capacity-table {
                    caption { "Each queue's last capacity figures and their age" }
                    thead { tr { th scope="col" { "queue" } th scope="col" { "role" } th scope="col" { "figures" } th scope="col" { "age" } } }
                    tbody {
                        @for q in queues {
                            tr {
                                th scope="row" { code { (q.queue_id) } }
                                td.text { (q.role) }
                                td.text {
                                    @if q.figures.is_empty() {
                                        @match &q.note { Some(note) => (note), None => "not observed since start" }
                                    } @else {
                                        @for (n, (name, v)) in q.figures.iter().enumerate() {
                                            @if n > 0 { "; " }
                                            (name) ": " strong { (v) }
                                        }
                                    }
                                }
                                td { @match q.age { Some(a) => (age(a)), None => "–" } }
                            }
                        }
                    }
                }
            }
        }
    }
}
