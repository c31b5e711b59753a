//! The insights figures from the pre-aggregated counts (see `crate::rollup`): the roll-up, the
//! read in one REPEATABLE READ snapshot, and the fill-in of the outcomes of records written
//! before migration 0006.

use chrono::{DateTime, Utc};
use handoff_domain::insights::{Insights, InsightsBuilder, InsightsFilter, Percentiles};
use handoff_domain::ports::LedgerError;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

use super::PostgresBackend;
use crate::codec::{corrupt, micros, outcome_facts, sql_limit, Decided};
use crate::error::ledger_error;
use crate::rollup::{self, ReadPlan, DAY_MICROS, ROLL_UP_BATCH, ROLL_UP_BATCHES_PER_READ};
use crate::sql;

impl PostgresBackend {
    /// Rolls up at most `batches` batches of finished records (each one statement, so one
    /// transaction); how many records were counted. Instances roll up disjoint batches.
    pub(crate) async fn roll_up_insights(&self, batches: usize) -> Result<u64, LedgerError> {
        let mut total = 0;
        for _ in 0..batches {
            let n: i64 = sqlx::query_scalar(sql::PG_ROLL_UP)
                .bind(sql_limit(ROLL_UP_BATCH))
                .fetch_one(&self.pool)
                .await
                .map_err(ledger_error("roll_up_insights"))?;
            let n = u64::try_from(n).unwrap_or(0);
            total += n;
            if n < ROLL_UP_BATCH as u64 {
                break;
            }
        }
        Ok(total)
    }

    /// The figures of `filter`: a bounded roll-up, then the counts of whole days, the records
    /// around them and the percentiles, in one REPEATABLE READ snapshot (a batch another instance
    /// commits meanwhile is in the counts or in the records, not both).
    pub(crate) async fn insights(&self, filter: &InsightsFilter) -> Result<Insights, LedgerError> {
        const OP: &str = "insights";
        self.roll_up_insights(ROLL_UP_BATCHES_PER_READ).await?;
        let mut tx = self.pool.begin().await.map_err(ledger_error(OP))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(ledger_error(OP))?;
        // A window of a year covers the whole table, where the planner prefers scanning the wide
        // rows (request and history JSON; sequentially, or by bitmap) to the covering index's
        // index-only scan (docs/insights.md, "Measured"). Every read here has its index; this
        // transaction only.
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.map_err(ledger_error(OP))?;
        sqlx::query("SET LOCAL enable_bitmapscan = off").execute(&mut *tx).await.map_err(ledger_error(OP))?;
        let insights = read_insights(&mut tx, filter).await?;
        tx.commit().await.map_err(ledger_error(OP))?;
        Ok(insights)
    }
}

async fn read_insights(conn: &mut PgConnection, filter: &InsightsFilter) -> Result<Insights, LedgerError> {
    const OP: &str = "insights";
    let plan = ReadPlan::of(filter);
    let reason = filter.reason().map(|r| r.as_str().to_owned());
    let mut builder = InsightsBuilder::new(filter.clone());
    let (rows, unrolled) = match reason {
        None => (sql::COUNT_ROWS, sql::PG_UNROLLED_ROWS),
        Some(_) => (sql::COUNT_ROWS_OF_REASON, sql::PG_UNROLLED_ROWS_OF_REASON),
    };
    for (start, end) in &plan.edges {
        add_rows(conn, &mut builder, rows, *start, *end, reason.as_deref()).await?;
    }
    if let Some((first, end)) = plan.days {
        add_rows(conn, &mut builder, unrolled, first * DAY_MICROS, end * DAY_MICROS, reason.as_deref()).await?;
        let text = if reason.is_some() { sql::ROLLUP_DAYS_OF_REASON } else { sql::ROLLUP_DAYS };
        let mut query = sqlx::query(text).bind(first).bind(end);
        if let Some(r) = &reason {
            query = query.bind(r.as_str());
        }
        for row in query.fetch_all(&mut *conn).await.map_err(ledger_error(OP))? {
            let day: i64 = row.try_get(0).map_err(ledger_error(OP))?;
            let reason: &str = row.try_get(1).map_err(ledger_error(OP))?;
            let queue: &str = row.try_get(2).map_err(ledger_error(OP))?;
            let outcome: &str = row.try_get(3).map_err(ledger_error(OP))?;
            let n: i64 = row.try_get(4).map_err(ledger_error(OP))?;
            rollup::add(
                &mut builder,
                rollup::day_start(day)?,
                reason,
                rollup::queue(Some(queue))?,
                Some(outcome),
                u64::try_from(n).map_err(|e| corrupt("insights_rollup", e))?,
            )?;
        }
    }
    let text = if reason.is_some() { sql::PG_TIMES_OF_REASON } else { sql::PG_TIMES };
    let mut query = sqlx::query(text).bind(micros(filter.since())).bind(micros(filter.until()));
    if let Some(r) = &reason {
        query = query.bind(r.as_str());
    }
    let row = query.fetch_one(&mut *conn).await.map_err(ledger_error(OP))?;
    let percentiles = |at: usize| -> Result<Percentiles, LedgerError> {
        let count: i64 = row.try_get(at).map_err(ledger_error(OP))?;
        let ms = |i: usize| -> Result<Option<Duration>, LedgerError> {
            let v: Option<i64> = row.try_get(i).map_err(ledger_error(OP))?;
            v.map(|v| u64::try_from(v).map(Duration::from_millis).map_err(|e| corrupt("insights to_queue_ms", e)))
                .transpose()
        };
        Ok(Percentiles { count: u64::try_from(count).map_err(|e| corrupt(OP, e))?, p50: ms(at + 1)?, p95: ms(at + 2)? })
    };
    Ok(builder.finish_with_times(percentiles(0)?, percentiles(3)?))
}

/// Adds the records `text` selects in `[start, end)` µs (`created_at, reason, queue_id, outcome`).
async fn add_rows(
    conn: &mut PgConnection,
    builder: &mut InsightsBuilder,
    text: &str,
    start: i64,
    end: i64,
    reason: Option<&str>,
) -> Result<(), LedgerError> {
    const OP: &str = "insights rows";
    let at = |us: i64| {
        DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| corrupt(OP, format_args!("time {us} out of range")))
    };
    let mut query = sqlx::query(text).bind(at(start)?).bind(at(end)?);
    if let Some(r) = reason {
        query = query.bind(r);
    }
    for row in query.fetch_all(&mut *conn).await.map_err(ledger_error(OP))? {
        let created: DateTime<Utc> = row.try_get(0).map_err(ledger_error(OP))?;
        let reason: &str = row.try_get(1).map_err(ledger_error(OP))?;
        let queue: Option<&str> = row.try_get(2).map_err(ledger_error(OP))?;
        let outcome: Option<&str> = row.try_get(3).map_err(ledger_error(OP))?;
        rollup::add(builder, created, reason, rollup::queue(queue)?, outcome, 1)?;
    }
    Ok(())
}

/// Fills in the outcome of every record written before migration 0006, in batches (at connect;
/// instances starting together write the same values, and never over a save's).
pub(super) async fn backfill_outcomes(pool: &PgPool) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 1_000;
    let mut filled = 0;
    loop {
        let rows = sqlx::query(sql::OUTCOMES_TO_FILL).bind(BATCH).fetch_all(pool).await?;
        for row in &rows {
            let id: Uuid = row.try_get(0)?;
            let stage: &str = row.try_get(1)?;
            let answer: Option<Value> = row.try_get(2)?;
            let deferred = row.try_get::<Option<DateTime<Utc>>, _>(3)?.is_some();
            let facts = outcome_facts(String::new(), None, stage, answer, deferred, row.try_get(4)?, row.try_get(5)?);
            // A record that does not decode stays visible: it counts as in progress.
            let decided = facts
                .map(|f| Decided::of_facts(&f))
                .unwrap_or_else(|_| Decided { outcome: "in_progress".to_owned(), to_queue_ms: None });
            sqlx::query(sql::FILL_OUTCOME)
                .bind(id)
                .bind(decided.outcome)
                .bind(decided.to_queue_ms)
                .execute(pool)
                .await?;
        }
        filled += rows.len() as u64;
        if (rows.len() as i64) < BATCH {
            return Ok(filled);
        }
    }
}
