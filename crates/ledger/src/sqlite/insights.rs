//! The reads behind the insights page, the CSV export and `handoff report`: the summaries, and
//! the figures from the pre-aggregated counts (see `crate::rollup`), with the roll-up that keeps
//! them and the fill-in of the outcomes of records written before migration 0006.

use std::sync::LazyLock;

use handoff_domain::insights::{HandoffSummary, Insights, InsightsBuilder, InsightsFilter, Percentiles, SummaryCursor};
use handoff_domain::ports::LedgerError;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use uuid::Uuid;

use super::{ledger_error, numbered_placeholders, SqliteBackend};
use crate::codec::{
    corrupt, micros, outcome_facts, sql_limit, time_from_micros, uuid_from_text, Decided, SummaryColumns,
};
use crate::rollup::{self, ReadPlan, DAY_MICROS, ROLL_UP_BATCH, ROLL_UP_BATCHES_PER_READ};
use crate::sql;

static SQLITE_SUMMARIES: LazyLock<String> = LazyLock::new(|| numbered_placeholders(&sql::SUMMARIES));
static SQLITE_SUMMARIES_OF_REASON: LazyLock<String> =
    LazyLock::new(|| numbered_placeholders(&sql::SUMMARIES_OF_REASON));

impl SqliteBackend {
    /// A keyset page of summaries, on the reader: the page comes from `handoffs_insights_idx`
    /// alone; only failed records are looked up by id for their answer.
    pub(crate) async fn summaries(
        &self,
        filter: &InsightsFilter,
        after: Option<SummaryCursor>,
        limit: usize,
    ) -> Result<Vec<HandoffSummary>, LedgerError> {
        let (after_at, after_id) = match after {
            Some(c) => (micros(c.created_at), c.handoff_id.to_string()),
            None => (micros(filter.since()), Uuid::nil().hyphenated().to_string()),
        };
        let until = micros(filter.until()).timestamp_micros();
        let reason = filter.reason().map(|r| r.as_str().to_owned());
        let limit = sql_limit(limit);
        self.read(move |conn| {
            const OP: &str = "summaries";
            let text = if reason.is_some() { SQLITE_SUMMARIES_OF_REASON.as_str() } else { SQLITE_SUMMARIES.as_str() };
            let mut statement = conn.prepare_cached(text).map_err(ledger_error(OP))?;
            let mut args: Vec<SqlValue> = vec![
                SqlValue::Integer(after_at.timestamp_micros()),
                SqlValue::Text(after_id),
                SqlValue::Integer(until),
                SqlValue::Integer(limit),
            ];
            if let Some(reason) = reason {
                args.push(SqlValue::Text(reason));
            }
            let rows = statement
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, bool>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, i64>(8)?,
                    ))
                })
                .map_err(ledger_error(OP))?;
            let mut columns = Vec::new();
            for row in rows {
                let (id, conversation, reason, queue, stage, was_deferred, created, updated, attempts) =
                    row.map_err(ledger_error(OP))?;
                columns.push(SummaryColumns {
                    id: uuid_from_text(&id, "summary id")?,
                    conversation_id: conversation,
                    reason,
                    queue_id: queue,
                    stage,
                    was_deferred,
                    created_at: time_from_micros(created, "summary created_at")?,
                    updated_at: time_from_micros(updated, "summary updated_at")?,
                    attempts,
                });
            }
            let mut answer = conn.prepare_cached(sqlite_sql!(SUMMARY_ANSWER)).map_err(ledger_error(OP))?;
            columns
                .into_iter()
                .map(|c| {
                    if !c.needs_answer() {
                        return c.into_summary(None);
                    }
                    let text: Option<String> = answer
                        .query_row([c.id.hyphenated().to_string()], |r| r.get(0))
                        .optional()
                        .map_err(ledger_error(OP))?
                        .flatten();
                    let value =
                        text.map(|t| serde_json::from_str::<Value>(&t)).transpose().map_err(|e| corrupt(OP, e))?;
                    c.into_summary(value.as_ref())
                })
                .collect()
        })
        .await
    }

    /// Rolls up at most `batches` batches of finished records into the counts, each batch in its
    /// own write transaction; how many records were counted.
    pub(crate) async fn roll_up_insights(&self, batches: usize) -> Result<u64, LedgerError> {
        let batch = sql_limit(ROLL_UP_BATCH);
        let mut total = 0;
        for _ in 0..batches {
            let n = self
                .writer
                .call(move |conn| {
                    const OP: &str = "roll_up_insights";
                    conn.prepare_cached(sqlite_sql!(SQLITE_ROLL_UP_COUNT))
                        .and_then(|mut s| s.execute([batch]))
                        .map_err(ledger_error(OP))?;
                    let marked = conn
                        .prepare_cached(sqlite_sql!(SQLITE_ROLL_UP_MARK))
                        .and_then(|mut s| s.execute([batch]))
                        .map_err(ledger_error(OP))?;
                    Ok(marked as u64)
                })
                .await?;
            total += n;
            if n < ROLL_UP_BATCH as u64 {
                break;
            }
        }
        Ok(total)
    }

    /// The figures of `filter`: a bounded roll-up first, then the counts of whole days and the
    /// records around them, read in one snapshot on the reader.
    pub(crate) async fn insights(&self, filter: &InsightsFilter) -> Result<Insights, LedgerError> {
        self.roll_up_insights(ROLL_UP_BATCHES_PER_READ).await?;
        let filter = filter.clone();
        self.read(move |conn| {
            // The writer's connection (an in-memory database) is already inside its transaction.
            let own = conn.is_autocommit();
            if own {
                conn.execute_batch("BEGIN").map_err(ledger_error("insights"))?;
            }
            let read = read_insights(conn, &filter);
            if own {
                let _ = conn.execute_batch(if read.is_ok() { "COMMIT" } else { "ROLLBACK" });
            }
            read
        })
        .await
    }
}

fn read_insights(conn: &Connection, filter: &InsightsFilter) -> Result<Insights, LedgerError> {
    const OP: &str = "insights";
    let plan = ReadPlan::of(filter);
    let reason = filter.reason().map(|r| r.as_str().to_owned());
    let reason = reason.as_deref();
    let mut builder = InsightsBuilder::new(filter.clone());
    let (rows, unrolled) = match reason {
        None => (sqlite_sql!(COUNT_ROWS), sqlite_sql!(SQLITE_UNROLLED_ROWS)),
        Some(_) => (sqlite_sql!(COUNT_ROWS_OF_REASON), sqlite_sql!(SQLITE_UNROLLED_ROWS_OF_REASON)),
    };
    for (start, end) in &plan.edges {
        add_rows(conn, &mut builder, rows, *start, *end, reason)?;
    }
    if let Some((first, end)) = plan.days {
        add_rows(conn, &mut builder, unrolled, first * DAY_MICROS, end * DAY_MICROS, reason)?;
        let text = if reason.is_some() { sqlite_sql!(ROLLUP_DAYS_OF_REASON) } else { sqlite_sql!(ROLLUP_DAYS) };
        let mut statement = conn.prepare_cached(text).map_err(ledger_error(OP))?;
        let mut found = match reason {
            Some(r) => statement.query(params![first, end, r]),
            None => statement.query(params![first, end]),
        }
        .map_err(ledger_error(OP))?;
        while let Some(row) = found.next().map_err(ledger_error(OP))? {
            let day: i64 = row.get(0).map_err(ledger_error(OP))?;
            let n: i64 = row.get(4).map_err(ledger_error(OP))?;
            rollup::add(
                &mut builder,
                rollup::day_start(day)?,
                text_at(row.get_ref(1), OP)?.unwrap_or_default(),
                rollup::queue(text_at(row.get_ref(2), OP)?)?,
                text_at(row.get_ref(3), OP)?,
                u64::try_from(n).map_err(|e| corrupt("insights_rollup", e))?,
            )?;
        }
    }
    let since = micros(filter.since()).timestamp_micros();
    let until = micros(filter.until()).timestamp_micros();
    let text = if reason.is_some() { sqlite_sql!(SQLITE_TIMES_OF_REASON) } else { sqlite_sql!(SQLITE_TIMES) };
    let mut statement = conn.prepare_cached(text).map_err(ledger_error(OP))?;
    let mut found = match reason {
        Some(r) => statement.query(params![since, until, r]),
        None => statement.query(params![since, until]),
    }
    .map_err(ledger_error(OP))?;
    let (mut to_queue, mut deferral_wait) = (Vec::new(), Vec::new());
    while let Some(row) = found.next().map_err(ledger_error(OP))? {
        let ms: i64 = row.get(0).map_err(ledger_error(OP))?;
        let ms = u64::try_from(ms).map_err(|e| corrupt("insights to_queue_ms", e))?;
        if row.get::<_, bool>(1).map_err(ledger_error(OP))? {
            deferral_wait.push(ms);
        }
        to_queue.push(ms);
    }
    Ok(builder.finish_with_times(Percentiles::of_millis(to_queue), Percentiles::of_millis(deferral_wait)))
}

/// Adds the records `text` selects in `[start, end)` (`created_at, reason, queue_id, outcome`).
fn add_rows(
    conn: &Connection,
    builder: &mut InsightsBuilder,
    text: &str,
    start: i64,
    end: i64,
    reason: Option<&str>,
) -> Result<(), LedgerError> {
    const OP: &str = "insights rows";
    let mut statement = conn.prepare_cached(text).map_err(ledger_error(OP))?;
    let mut found = match reason {
        Some(r) => statement.query(params![start, end, r]),
        None => statement.query(params![start, end]),
    }
    .map_err(ledger_error(OP))?;
    while let Some(row) = found.next().map_err(ledger_error(OP))? {
        let created: i64 = row.get(0).map_err(ledger_error(OP))?;
        rollup::add(
            builder,
            time_from_micros(created, "insights created_at")?,
            text_at(row.get_ref(1), OP)?.unwrap_or_default(),
            rollup::queue(text_at(row.get_ref(2), OP)?)?,
            text_at(row.get_ref(3), OP)?,
            1,
        )?;
    }
    Ok(())
}

/// A text (or NULL) column, borrowed from the row.
fn text_at<'r>(value: rusqlite::Result<ValueRef<'r>>, op: &'static str) -> Result<Option<&'r str>, LedgerError> {
    value.map_err(ledger_error(op))?.as_str_or_null().map_err(|e| corrupt(op, e))
}

/// A record's stored facts as the fill-in reads them: id, stage, answer, defer_until, created_at, updated_at.
type StoredFacts = (String, String, Option<String>, Option<i64>, i64, i64);

/// Fills in the outcome of every record written before migration 0006, in batches (at connect,
/// before the ledger serves anything).
pub(super) fn backfill_outcomes(conn: &Connection) -> rusqlite::Result<u64> {
    const BATCH: i64 = 1_000;
    let mut filled = 0;
    loop {
        let rows: Vec<StoredFacts> = conn
            .prepare(&numbered_placeholders(sql::OUTCOMES_TO_FILL))?
            .query_map([BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut update = conn.prepare(&numbered_placeholders(sql::FILL_OUTCOME))?;
        for (id, stage, answer, defer_until, created, updated) in &rows {
            let decided = decide(stage, answer.as_deref(), defer_until.is_some(), *created, *updated)
                // A record that does not decode stays visible: it counts as in progress.
                .unwrap_or_else(|_| Decided { outcome: "in_progress".to_owned(), to_queue_ms: None });
            update.execute(params![id, decided.outcome, decided.to_queue_ms])?;
        }
        filled += rows.len() as u64;
        if (rows.len() as i64) < BATCH {
            return Ok(filled);
        }
    }
}

fn decide(
    stage: &str,
    answer: Option<&str>,
    deferred: bool,
    created: i64,
    updated: i64,
) -> Result<Decided, LedgerError> {
    let answer = answer.map(serde_json::from_str::<Value>).transpose().map_err(|e| corrupt("answer", e))?;
    let facts = outcome_facts(
        String::new(),
        None,
        stage,
        answer,
        deferred,
        time_from_micros(created, "created_at")?,
        time_from_micros(updated, "updated_at")?,
    )?;
    Ok(Decided::of_facts(&facts))
}
