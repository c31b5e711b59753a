//! `handoff report`: the figures of the insights page as a terminal table, read from the ledger
//! through the same [`InsightsPort::insights`] as the page (so the page, the export and the report
//! agree), and the queue capacity figures the page shows, taken from the platform adapter's cache.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use handoff_domain::insights::{format_seconds, Bucket, Insights, OutcomeKind};
use handoff_domain::ports::{InsightsPort, LedgerPort};
use handoff_domain::{CapacitySnapshot, HandoffReason, InsightsFilter, RoutingPolicy};
use handoff_http::{CapacityFigures, QueueFigures};

/// The named figures of a capacity snapshot, as the page shows them.
fn snapshot_figures(s: &CapacitySnapshot) -> Vec<(String, String)> {
    // A figure upstream did not report is shown as unknown, never as zero.
    let known = |n: Option<u32>| n.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    let agents = s.figures.agents;
    let mut figures = vec![
        (
            "free message slots".to_owned(),
            match s.figures.free_slots(s.message_capacity) {
                handoff_domain::FreeSlots::Exactly(n) => n.to_string(),
                handoff_domain::FreeSlots::AtMost(n) => format!("at most {n}"),
                handoff_domain::FreeSlots::Unknown => "unknown".to_owned(),
            },
        ),
        ("idle agents".to_owned(), known(agents.map(|a| a.idle))),
        ("agents who can take work".to_owned(), known(agents.map(|a| a.available()))),
        ("agents on queue".to_owned(), known(agents.map(|a| a.on_queue()))),
        ("message capacity per agent".to_owned(), known(s.message_capacity)),
        ("interacting".to_owned(), known(s.figures.interacting)),
        ("alerting".to_owned(), known(s.figures.alerting)),
        ("waiting".to_owned(), known(s.figures.waiting)),
    ];
    if let Some(wait) = s.estimated_wait {
        figures.push(("estimated wait".to_owned(), format_seconds(Some(wait))));
    }
    figures
}

/// Each configured queue's last observed capacity, from the adapter's cache (no upstream call).
pub(crate) fn capacity_figures(
    routing: &RoutingPolicy,
    platform: Arc<dyn crate::platform::Platform>,
) -> CapacityFigures {
    let mut queues = vec![(routing.default_queue(), "default (TARGET_QUEUE_ID)".to_owned())];
    for (reason, queue) in routing.routes() {
        queues.push((*queue, format!("route: {reason}")));
    }
    if let Some(fallback) = routing.fallback() {
        queues.push((fallback, "fallback".to_owned()));
    }
    Arc::new(move || {
        let seen = platform.last_capacity_observations();
        queues
            .iter()
            .map(|(queue, role)| {
                let last = seen.iter().find(|(q, _, _)| q == queue);
                let (figures, age, note) = match last {
                    Some((_, Ok(snapshot), age)) => (snapshot_figures(snapshot), Some(*age), None),
                    Some((_, Err(e), age)) => (Vec::new(), Some(*age), Some(format!("last observation failed: {e}"))),
                    None => (Vec::new(), None, None),
                };
                QueueFigures { queue_id: *queue, role: role.clone(), figures, age, note }
            })
            .collect()
    })
}

/// `--since`/`--until`: `24h`, `7d`, `90m` before now, a date (`YYYY-MM-DD`, UTC midnight) or an
/// RFC 3339 timestamp.
pub fn parse_when(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    let relative = |unit: char, per: fn(i64) -> Option<TimeDelta>| {
        raw.strip_suffix(unit).and_then(|n| n.parse::<i64>().ok()).filter(|n| *n >= 0).and_then(per)
    };
    if let Some(d) = relative('d', TimeDelta::try_days)
        .or_else(|| relative('h', TimeDelta::try_hours))
        .or_else(|| relative('m', TimeDelta::try_minutes))
    {
        return now.checked_sub_signed(d).ok_or_else(|| format!("`{raw}` is too far back"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| {
            format!("`{raw}` is not a duration (24h, 7d, 90m), a date (YYYY-MM-DD) or an RFC 3339 timestamp")
        })
}

/// The filter of a report.
///
/// # Errors
/// A message naming the flag when a value is unusable.
pub fn report_filter(
    since: &str,
    until: Option<&str>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<InsightsFilter, String> {
    let since = parse_when(since, now).map_err(|e| format!("--since: {e}"))?;
    let until = until.map(|u| parse_when(u, now)).transpose().map_err(|e| format!("--until: {e}"))?.unwrap_or(now);
    let reason = reason.map(HandoffReason::parse).transpose().map_err(|e| {
        format!("--reason: {}", e.errors().first().map_or("is invalid".to_owned(), |f| f.problem.clone()))
    })?;
    InsightsFilter::new(since, until, reason).map_err(|e| format!("--until: {e}"))
}

/// Reads the figures of `filter` from the ledger at `database_url` and renders them.
///
/// # Errors
/// When the ledger cannot be opened or read.
pub async fn run(database_url: &str, filter: &InsightsFilter) -> anyhow::Result<String> {
    if database_url.starts_with("memory:") {
        anyhow::bail!("DATABASE_URL=memory: keeps nothing to report on; point --database-url at the ledger");
    }
    let ledger = handoff_ledger::SqlLedger::connect(database_url)
        .await
        .with_context(|| format!("failed to open the ledger at {}", crate::startup::redact_url(database_url)))?;
    let insights = ledger.insights(filter).await.context("failed to read the ledger")?;
    let backlog = ledger.outbox_backlog().await.ok();
    ledger.close().await;
    Ok(render(&insights, backlog))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A table: a header row and rows, columns padded; the first column left-aligned, the others right.
fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let columns = header.len();
    let width = |c: usize| {
        rows.iter()
            .map(|r| r.get(c).map_or(0, |v| v.chars().count()))
            .chain([header[c].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let line = |out: &mut String, cells: &[String]| {
        out.push_str("  ");
        for (c, cell) in cells.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c == 0 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str("  ");
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.push('\n');
    };
    line(out, header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &rule);
    for row in rows {
        line(out, row);
    }
}

/// The report text: the page's views in the page's order, with the page's labels.
pub fn render(i: &Insights, outbox_backlog: Option<u64>) -> String {
    let mut out = String::new();
    let reason = i.filter.reason().map_or("all reasons".to_owned(), |r| format!("reason “{}”", r.as_str()));
    let _ = writeln!(
        out,
        "Handoffs created from {} until {} (UTC), {reason}\n",
        ts(i.filter.since()),
        ts(i.filter.until())
    );

    out.push_str("At a glance\n");
    let glance = [
        ("Handoffs", i.total.to_string()),
        ("Reached a queue", i.reached_queue().to_string()),
        ("Failed", i.count(OutcomeKind::Failed).to_string()),
        ("Time to queue, median", format_seconds(i.to_queue.p50)),
        ("Time to queue, 95th percentile", format_seconds(i.to_queue.p95)),
        ("Advice confirmation rate", i.confirmation.display()),
        ("Outbox backlog", outbox_backlog.map_or("unavailable".to_owned(), |n| n.to_string())),
    ];
    table(
        &mut out,
        &["figure".to_owned(), "value".to_owned()],
        &glance.iter().map(|(k, v)| vec![(*k).to_owned(), v.clone()]).collect::<Vec<_>>(),
    );

    let kinds: Vec<String> = OutcomeKind::ALL.iter().map(|k| k.label().to_owned()).collect();
    let unit = match i.bucket {
        Bucket::Hour => "hour",
        Bucket::Day => "day",
    };
    let _ = writeln!(out, "\nHandoffs over time by outcome (per {unit}, buckets with handoffs)");
    let mut header = vec![format!("{unit} starting (UTC)")];
    header.extend(kinds.iter().cloned());
    header.push("all".to_owned());
    let rows: Vec<Vec<String>> = i
        .over_time
        .iter()
        .filter(|b| b.total() > 0)
        .map(|b| {
            let mut row = vec![ts(b.start)];
            row.extend(OutcomeKind::ALL.iter().map(|k| b.counts.get(k).copied().unwrap_or(0).to_string()));
            row.push(b.total().to_string());
            row
        })
        .collect();
    table(&mut out, &header, &rows);

    out.push_str("\nReasons × queue × outcome\n");
    let mut header = vec!["reason".to_owned(), "queue".to_owned()];
    header.extend(kinds.iter().cloned());
    header.push("all".to_owned());
    let rows: Vec<Vec<String>> = i
        .by_reason_queue
        .iter()
        .map(|r| {
            let mut row = vec![r.reason.clone(), r.queue_id.map_or("none chosen".to_owned(), |q| q.to_string())];
            row.extend(OutcomeKind::ALL.iter().map(|k| r.counts.get(k).copied().unwrap_or(0).to_string()));
            row.push(r.total().to_string());
            row
        })
        .collect();
    table(&mut out, &header, &rows);

    out.push_str("\nTime from handoff to queue\n");
    table(
        &mut out,
        &["handoffs".into(), "count".into(), "median".into(), "95th percentile".into()],
        &[
            vec![
                "all transfers".into(),
                i.to_queue.count.to_string(),
                format_seconds(i.to_queue.p50),
                format_seconds(i.to_queue.p95),
            ],
            vec![
                "after a deferral".into(),
                i.deferral_wait.count.to_string(),
                format_seconds(i.deferral_wait.p50),
                format_seconds(i.deferral_wait.p95),
            ],
        ],
    );

    out.push_str("\nFailures by cause\n");
    let rows: Vec<Vec<String>> = i.failures.iter().map(|(c, n)| vec![c.clone(), n.to_string()]).collect();
    table(&mut out, &["cause".into(), "handoffs".into()], &rows);

    let _ = writeln!(
        out,
        "\nAdvice confirmation rate: {} ({} confirmed, {} not confirmed)",
        i.confirmation.display(),
        i.confirmation.confirmed,
        i.confirmation.unconfirmed
    );
    out.push_str("Queue capacity: live figures are on /insights (this command does not call Genesys).\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid").with_timezone(&Utc)
    }

    #[test]
    fn since_takes_durations_dates_and_timestamps() {
        let now = at("2026-03-10T12:00:00Z");
        assert_eq!(parse_when("7d", now), Ok(at("2026-03-03T12:00:00Z")));
        assert_eq!(parse_when("24h", now), Ok(at("2026-03-09T12:00:00Z")));
        assert_eq!(parse_when("90m", now), Ok(at("2026-03-10T10:30:00Z")));
        assert_eq!(parse_when("2026-03-01", now), Ok(at("2026-03-01T00:00:00Z")));
        assert_eq!(parse_when("2026-03-01T08:00:00+01:00", now), Ok(at("2026-03-01T07:00:00Z")));
        assert!(parse_when("a week", now).unwrap_err().contains("a week"));
        assert!(parse_when("-3d", now).is_err());
    }

    #[test]
    fn a_bad_flag_is_named() {
        let now = at("2026-03-10T12:00:00Z");
        assert!(report_filter("soon", None, None, now).unwrap_err().starts_with("--since"));
        assert!(report_filter("7d", Some("2026-01-01"), None, now).unwrap_err().starts_with("--until"));
        assert!(report_filter("7d", None, Some(""), now).unwrap_err().starts_with("--reason"));
        assert!(report_filter("500d", None, None, now).unwrap_err().contains("400 days"));
    }

    #[test]
    fn the_report_prints_every_view_with_the_page_labels() {
        let filter = report_filter("2026-03-01", Some("2026-03-02"), None, at("2026-03-10T12:00:00Z")).expect("ok");
        let mut builder = handoff_domain::insights::InsightsBuilder::new(filter);
        builder.add(&handoff_domain::HandoffSummary {
            handoff_id: handoff_domain::HandoffId::random(),
            conversation_id: handoff_domain::ConversationId::parse("a1b2c3d4-e5f6-7890-abcd-ef1234567890").expect("id"),
            reason: "billing".into(),
            queue_id: None,
            outcome: handoff_domain::insights::Outcome::Failed { cause: "conversation_not_found".into() },
            created_at: at("2026-03-01T05:30:00Z"),
            finished_at: None,
            to_queue: None,
            attempts: 1,
        });
        let text = render(&builder.finish(), Some(3));
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in [
            "Handoffs 1 Reached a queue 0 Failed 1",
            "Outbox backlog 3",
            "2026-03-01T05:00:00Z 0 0 0 0 0 1 0 0 1",
            "billing none chosen 0 0 0 0 0 1 0 0 1",
            "conversation_not_found 1",
            "Advice confirmation rate: n/a",
        ] {
            assert!(flat.contains(needle), "missing `{needle}` in\n{text}");
        }
    }
}
