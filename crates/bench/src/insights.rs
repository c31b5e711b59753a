//! `--insights N`: the insights page on a year of data (issue 15). Seeds N handoffs spread over
//! the last 365 days into the ledger under test (through `SqlLedger`, as the service writes them),
//! then times what `GET /insights` does (`InsightsPort::insights`: the pre-aggregated day counts
//! plus the records around them, the outbox backlog, the page rendered) for the 24 h, 7 d, 30 d and
//! 365 d windows, the old fold of every summary for comparison, and the full CSV export stream, and
//! prints the query plans. Run it with `--release`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use handoff_domain::insights::{collect_insights, InsightsFilter, SUMMARY_PAGE};
use handoff_domain::ports::{Begin, InsightsPort, LedgerPort};
use handoff_domain::{
    AdviceDecision, Confirmation, ConversationId, HandoffKey, HandoffMode, HandoffReason, HandoffRequest, QueueId,
    Stage, StoredAnswer,
};
use handoff_http::{csv_line, render_page, InsightsForm, PageInputs};
use handoff_ledger::SqlLedger;

use crate::args::{Args, LedgerKind};
use crate::ledger::Ledger;

/// Timed repetitions of each window (after one untimed warm-up read).
const RUNS: usize = 5;
/// The page's budget (issue 15).
const BUDGET: Duration = Duration::from_millis(200);

const REASONS: [&str; 5] =
    ["complex_billing_dispute", "password_reset", "order_status", "after_hours", "refund_request"];

/// A small deterministic generator (xorshift), so runs seed the same ledger.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn seed_one(ledger: &SqlLedger, n: u64, created: DateTime<Utc>, roll: u64) -> anyhow::Result<()> {
    let conversation = ConversationId::parse(&uuid::Uuid::new_v4().to_string())?;
    let reason = REASONS[(roll % 5) as usize];
    let request = HandoffRequest::from_json(
        &serde_json::json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": format!("guest-{n}"), "name": "Bench Guest", "email": "bench@example.com" },
            "handoffReason": reason,
            "customContext": { "attempted_resolution": "refund_policy_explained", "sentiment_score": "0.32" },
        }),
        &handoff_domain::OpaqueIds,
    )
    .map_err(|e| anyhow::anyhow!("seed payload: {e}"))?;
    let key = HandoffKey::new(conversation, None);
    let Begin::Fresh(mut record) = ledger
        .begin(&key, &request, created, Duration::from_secs(30), Duration::from_secs(600), HandoffMode::Transfer)
        .await?
    else {
        anyhow::bail!("seed {n} was not fresh");
    };
    let queue = QueueId::parse(
        &uuid::Uuid::from_u128(0x7b0a_2a4e_5f1c_4a53_9d0e_2f6a_1c3b_9d00 + u128::from(roll % 3)).to_string(),
    )?;
    let took = TimeDelta::milliseconds(500 + i64::try_from(roll % 20_000).unwrap_or(0));
    let kind = (roll / 7) % 100;
    if kind < 80 {
        record.queue = Some(queue);
        record.advance(Stage::TransferPending, created, "transfer requested")?;
        record.advance(Stage::Transferred, created + took, "transferred")?;
        record.answer = Some(StoredAnswer::Transferred { queue });
    } else if kind < 88 {
        record.queue = Some(queue);
        record.defer_until = Some(created + TimeDelta::seconds(300));
        record.advance(Stage::Deferred, created, "no capacity")?;
        record.advance(Stage::Transferred, created + took * 10, "capacity")?;
        record.answer = Some(StoredAnswer::Transferred { queue });
    } else if kind < 95 {
        let code =
            ["conversation_not_found", "conversation_not_transferable", "upstream_rejected"][(roll % 3) as usize];
        record.advance(Stage::Failed, created + took, "failed")?;
        record.answer = Some(StoredAnswer::Failed { status: 404, code: code.to_owned(), message: "seeded".to_owned() });
    } else {
        record.queue = Some(queue);
        record.advance(Stage::Advised, created + took, "advised")?;
        let confirmation = Confirmation::Confirmed { queue, after: std::time::Duration::from_secs(5) };
        record.answer =
            Some(StoredAnswer::Advised { queue, decision: AdviceDecision::Transfer, confirmation: Some(confirmation) });
    }
    ledger.save(&record, None, &[]).await?;
    Ok(())
}

/// Seeds `count` handoffs created over the 365 days before `now`, 64 at a time.
async fn seed(ledger: &SqlLedger, count: u64, now: DateTime<Utc>) -> anyhow::Result<()> {
    let year_ms = 365 * 24 * 3600 * 1000_u64;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let plan: Vec<(u64, DateTime<Utc>, u64)> = (0..count)
        .map(|n| {
            let back = rng.next() % year_ms;
            let roll = rng.next();
            (n, now - TimeDelta::milliseconds(i64::try_from(back).unwrap_or(0)), roll)
        })
        .collect();
    let mut done = futures::stream::iter(plan).map(|(n, at, roll)| seed_one(ledger, n, at, roll)).buffer_unordered(64);
    while let Some(result) = done.next().await {
        result?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times the page's work for one window: `(records, min, median, max)`.
async fn time_page(
    ledger: &SqlLedger,
    filter: &InsightsFilter,
    now: DateTime<Utc>,
) -> anyhow::Result<(u64, Vec<Duration>, usize)> {
    let form = InsightsForm::default();
    let mut times = Vec::with_capacity(RUNS);
    let mut total = 0;
    let mut bytes = 0;
    for run in 0..=RUNS {
        let started = Instant::now();
        let insights = ledger.insights(filter).await?;
        let backlog = ledger.outbox_backlog().await.ok();
        let html = render_page(&PageInputs {
            insights: &insights,
            form: &form,
            outbox_backlog: backlog,
            capacity: &[],
            generated_at: now,
        });
        let took = started.elapsed();
        if run > 0 {
            times.push(took);
        }
        total = insights.total;
        bytes = html.len();
    }
    times.sort();
    Ok((total, times, bytes))
}

/// The CSV export of `filter`, page by page as the route streams it: `(rows, bytes, time)`.
async fn time_export(ledger: &SqlLedger, filter: &InsightsFilter) -> anyhow::Result<(u64, usize, Duration)> {
    let started = Instant::now();
    let (mut rows, mut bytes, mut after) = (0u64, 0usize, None);
    loop {
        let page = ledger.summaries(filter, after, SUMMARY_PAGE).await?;
        let mut chunk = String::with_capacity(page.len() * 200);
        for s in &page {
            csv_line(&mut chunk, s);
        }
        rows += page.len() as u64;
        bytes += chunk.len();
        match page.last() {
            Some(last) if page.len() == SUMMARY_PAGE => after = Some(last.cursor()),
            _ => break,
        }
    }
    Ok((rows, bytes, started.elapsed()))
}

async fn explain(
    ledger_kind: LedgerKind,
    url: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<String> {
    // The statements of `handoff_ledger`'s `sql` module, with the values of a 30-day window.
    let day = |t: DateTime<Utc>| t.timestamp_micros().div_euclid(86_400_000_000);
    let (first, end) = (day(since) + 1, day(until));
    match ledger_kind {
        LedgerKind::Sqlite => {
            let path = url.trim_start_matches("sqlite://").to_owned();
            let (s, u) = (since.timestamp_micros(), until.timestamp_micros());
            let (fs, eu) = (first * 86_400_000_000, end * 86_400_000_000);
            tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                let conn = rusqlite::Connection::open(path)?;
                let mut out = String::new();
                for (label, sql) in [
                    ("day counts", format!("SELECT day, reason, queue_id, outcome, handoffs FROM insights_rollup WHERE day >= {first} AND day < {end} AND handoffs > 0")),
                    ("records of whole days not rolled up", format!("SELECT created_at, reason, queue_id, outcome FROM handoffs WHERE created_at >= {fs} AND created_at < {eu} AND rolled_up = 0")),
                    ("records of an edge", format!("SELECT created_at, reason, queue_id, outcome FROM handoffs WHERE created_at >= {s} AND created_at < {fs}")),
                    ("times to queue", format!("SELECT to_queue_ms, outcome = 'transferred_after_deferral' FROM handoffs WHERE created_at >= {s} AND created_at < {u} AND to_queue_ms IS NOT NULL")),
                    ("roll-up batch", "SELECT id FROM handoffs WHERE rolled_up = 0 AND outcome <> 'in_progress' ORDER BY created_at LIMIT 2000".to_owned()),
                    ("summaries (export)", format!("SELECT id, conversation_id, reason, queue_id, stage, defer_until IS NOT NULL AS was_deferred, created_at, updated_at, attempts FROM handoffs WHERE (created_at, id) > ({s}, '00000000-0000-0000-0000-000000000000') AND created_at < {u} ORDER BY created_at, id LIMIT 5000")),
                    ("outbox backlog", "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL".to_owned()),
                ] {
                    out.push_str(&format!("-- {label}\n"));
                    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows = stmt.query_map([], |r| r.get::<_, String>(3))?;
                    for row in rows {
                        out.push_str(&format!("{}\n", row?));
                    }
                }
                Ok(out)
            })
            .await?
        }
        LedgerKind::Postgres => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
            sqlx::query("VACUUM ANALYZE handoffs").execute(&mut conn).await?;
            sqlx::query("VACUUM ANALYZE insights_rollup").execute(&mut conn).await?;
            let mut out = String::new();
            let s = since.to_rfc3339();
            let u = until.to_rfc3339();
            let fs = (DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(first)).to_rfc3339();
            let eu = (DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(end)).to_rfc3339();
            let times = "SELECT COUNT(to_queue_ms), percentile_disc(0.5) WITHIN GROUP (ORDER BY to_queue_ms), percentile_disc(0.95) WITHIN GROUP (ORDER BY to_queue_ms), COUNT(to_queue_ms) FILTER (WHERE outcome = 'transferred_after_deferral'), percentile_disc(0.5) WITHIN GROUP (ORDER BY to_queue_ms) FILTER (WHERE outcome = 'transferred_after_deferral'), percentile_disc(0.95) WITHIN GROUP (ORDER BY to_queue_ms) FILTER (WHERE outcome = 'transferred_after_deferral') FROM handoffs";
            for (label, sql) in [
                ("day counts", format!("SELECT day, reason, queue_id, outcome, handoffs FROM insights_rollup WHERE day >= {first} AND day < {end} AND handoffs > 0")),
                ("records of whole days not rolled up", format!("SELECT created_at, reason, queue_id, outcome FROM handoffs WHERE created_at >= '{fs}' AND created_at < '{eu}' AND NOT rolled_up")),
                ("records of an edge", format!("SELECT created_at, reason, queue_id, outcome FROM handoffs WHERE created_at >= '{s}' AND created_at < '{fs}'")),
                ("time-to-queue percentiles", format!("{times} WHERE created_at >= '{s}' AND created_at < '{u}' AND to_queue_ms IS NOT NULL")),
                ("time-to-queue percentiles, 365 days", format!("{times} WHERE created_at >= '{}' AND created_at < '{u}' AND to_queue_ms IS NOT NULL", (until - TimeDelta::days(365)).to_rfc3339())),
                ("time-to-queue percentiles, 365 days, as the ledger reads them (seq and bitmap scans off)", format!("/*noseq*/ {times} WHERE created_at >= '{}' AND created_at < '{u}' AND to_queue_ms IS NOT NULL", (until - TimeDelta::days(365)).to_rfc3339())),
                ("outbox backlog", "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL".to_owned()),
            ] {
                out.push_str(&format!("-- {label}\n"));
                let noseq = sql.starts_with("/*noseq*/");
                if noseq {
                    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await?;
                    sqlx::query("SET enable_bitmapscan = off").execute(&mut conn).await?;
                }
                let rows: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")).fetch_all(&mut conn).await?;
                if noseq {
                    sqlx::query("RESET enable_seqscan").execute(&mut conn).await?;
                    sqlx::query("RESET enable_bitmapscan").execute(&mut conn).await?;
                }
                for row in rows {
                    out.push_str(&row);
                    out.push('\n');
                }
            }
            Ok(out)
        }
        LedgerKind::Memory => Ok(String::new()),
    }
}

/// Seeds `args.insights` handoffs into the ledger `args.ledger` and prints the timings and plans.
///
/// # Errors
/// When the ledger cannot be set up, seeded or read.
pub(crate) fn run(args: &Args, count: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("runtime")?;
    rt.block_on(async {
        anyhow::ensure!(args.ledger != LedgerKind::Memory, "--insights needs --ledger sqlite or postgres");
        let prepared = Ledger::prepare(args.ledger, &args.postgres_url).await?;
        let url = prepared.database_url()?;
        let result = async {
            let ledger = SqlLedger::connect(&url).await.context("failed to open the ledger")?;
            let now = Utc::now();
            let started = Instant::now();
            seed(&ledger, count, now).await?;
            println!(
                "insights benchmark: {count} handoffs over 365 days on {} (seeded in {:.1} s)",
                args.ledger.as_str(),
                started.elapsed().as_secs_f64()
            );
            // A page's own roll-up is bounded: catch the year up at once, as the reads would over time.
            let started = Instant::now();
            let rolled = ledger.roll_up_insights(usize::MAX).await?;
            println!(
                "rolled up {rolled} finished handoffs into day counts in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            let plans = explain(args.ledger, &url, now - TimeDelta::days(30), now).await?;
            println!(
                "\nwindow   handoffs   page min   median     max   (budget {} ms; HTML bytes)",
                BUDGET.as_millis()
            );
            let mut over = false;
            for (name, days) in [("24h", 1), ("7d", 7), ("30d", 30), ("365d", 365)] {
                let filter = InsightsFilter::new(now - TimeDelta::days(days), now + TimeDelta::seconds(1), None)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let (total, times, bytes) = time_page(&ledger, &filter, now).await?;
                let median = times[times.len() / 2];
                over |= median > BUDGET;
                println!(
                    "{name:<6} {total:>10} {:>8.1} ms {:>6.1} ms {:>6.1} ms   {bytes}",
                    ms(times[0]),
                    ms(median),
                    ms(times[times.len() - 1])
                );
            }
            let reason = HandoffReason::parse("password_reset").map_err(|e| anyhow::anyhow!("{e}"))?;
            let filter = InsightsFilter::new(now - TimeDelta::days(365), now + TimeDelta::seconds(1), Some(reason))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let (total, times, _) = time_page(&ledger, &filter, now).await?;
            println!(
                "365d, one reason {total:>5} {:>8.1} ms {:>6.1} ms {:>6.1} ms",
                ms(times[0]),
                ms(times[times.len() / 2]),
                ms(times[times.len() - 1])
            );
            let year = InsightsFilter::new(now - TimeDelta::days(365), now + TimeDelta::seconds(1), None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let started = Instant::now();
            let folded = collect_insights(&ledger, &year, SUMMARY_PAGE).await?;
            let fold_took = started.elapsed();
            let counted = ledger.insights(&year).await?;
            anyhow::ensure!(folded == counted, "the counts and the fold disagree on the year");
            println!(
                "\n365d by folding every summary (before 0006): {:.1} ms, figures equal to the counts'",
                ms(fold_took)
            );
            let all = InsightsFilter::new(now - TimeDelta::days(366), now + TimeDelta::seconds(1), None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let (rows, bytes, took) = time_export(&ledger, &all).await?;
            println!(
                "\nexport: {rows} rows, {} KiB of CSV in {:.1} ms (pages of {SUMMARY_PAGE})",
                bytes / 1024,
                ms(took)
            );
            println!("\nquery plans (30-day window unless said):\n{plans}");
            if over {
                println!("a median page time is over the {} ms budget", BUDGET.as_millis());
            }
            ledger.close().await;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        prepared.teardown().await?;
        result
    })
}
