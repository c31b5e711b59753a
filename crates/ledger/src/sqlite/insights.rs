//! The reads behind the insights page, the CSV export and `handoff report`.

use std::sync::LazyLock;

use handoff_domain::insights::{HandoffSummary, InsightsFilter, SummaryCursor};
use handoff_domain::ports::LedgerError;
use rusqlite::types::Value as SqlValue;
use rusqlite::OptionalExtension;
use serde_json::Value;
use uuid::Uuid;

use super::{ledger_error, numbered_placeholders, SqliteBackend};
use crate::codec::{corrupt, micros, sql_limit, time_from_micros, uuid_from_text, SummaryColumns};
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
                    conversation_id: uuid_from_text(&conversation, "summary conversation_id")?,
                    reason,
                    queue_id: queue.map(|q| uuid_from_text(&q, "summary queue_id")).transpose()?,
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
}
