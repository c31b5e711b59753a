//! The SQLite backend: one file, WAL, one writer at a time.
//!
//! Every write runs inside `BEGIN IMMEDIATE`, which takes SQLite's single write lock up front, so
//! a read-then-write transaction (`begin`, the claims) cannot interleave with another writer, in
//! this process or another one (`busy_timeout` makes others wait). Within the process a
//! [`Mutex`] queues writers first, so they wait on a fair async lock instead of SQLite's
//! sleep-and-retry busy handler. Readers never wait (WAL).
//!
//! Times are stored as INTEGER microseconds since the epoch, ids as hyphenated UUID text, JSON as
//! text.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use handoff_domain::ports::{Begin, HandoffEvent, LedgerError, OutboxEntry, StatRow};
use handoff_domain::{ConversationId, HandoffId, HandoffKey, HandoffRecord, HandoffRequest};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::codec::{
    corrupt, event_from_json, event_to_json, lease_end, micros, sort_claimed, sort_stats, sql_limit, stat_row,
    time_from_micros, uuid_from_text, RecordColumns,
};
use crate::error::{ledger_error, LedgerSetupError};
use crate::plan::{plan_begin, BeginPlan};
use crate::{sql, LedgerOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// A SQLite ledger.
#[derive(Debug)]
pub(crate) struct SqliteBackend {
    pool: SqlitePool,
    /// Queues this process's write transactions (see the module doc).
    write_gate: Mutex<()>,
}

impl SqliteBackend {
    /// Opens (creating if missing) the database at `url` and applies the migrations.
    pub(crate) async fn connect(url: &str, options: &LedgerOptions) -> Result<Self, LedgerSetupError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|source| LedgerSetupError::InvalidUrl { backend: "sqlite", source })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let path = connect.get_filename().to_path_buf();
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout);
        let pool_options = if in_memory {
            // An in-memory database lives as long as one connection to it: keep exactly one.
            pool_options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            pool_options.max_connections(options.max_connections.max(1))
        };
        let pool = pool_options.connect_with(connect).await.map_err(|source| LedgerSetupError::OpenSqlite {
            hint: missing_dir_hint(&path),
            path,
            source,
        })?;
        MIGRATOR.run(&pool).await.map_err(|source| LedgerSetupError::Migrate { backend: "sqlite", source })?;
        Ok(Self { pool, write_gate: Mutex::new(()) })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction holding SQLite's write lock (and this process's write gate).
    async fn write(
        &self,
        operation: &'static str,
    ) -> Result<(MutexGuard<'_, ()>, Transaction<'static, Sqlite>), LedgerError> {
        let gate = self.write_gate.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ledger_error(operation))?;
        Ok((gate, tx))
    }

    pub(crate) async fn begin(
        &self,
        key: &HandoffKey,
        request: &HandoffRequest,
        now: DateTime<Utc>,
        lease: Duration,
        reuse_after: Duration,
    ) -> Result<Begin, LedgerError> {
        const OP: &str = "begin";
        let key_text = key.to_string();
        let (_gate, mut tx) = self.write(OP).await?;
        let latest: Option<Option<String>> = sqlx::query_scalar(sql::SELECT_KEY)
            .bind(&key_text)
            .fetch_optional(&mut *tx)
            .await
            .map_err(ledger_error(OP))?;
        let latest = match latest.flatten() {
            Some(id) => match sqlx::query(sql::SELECT_RECORD)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(ledger_error(OP))?
            {
                Some(row) => Some(decode_record(&row)?),
                None => None,
            },
            None => None,
        };
        let begin = match plan_begin(latest, key, request, now, lease, reuse_after) {
            BeginPlan::Done(begin) => begin,
            BeginPlan::Resume { record, lease_until } => {
                sqlx::query(sql::RESUME_RECORD)
                    .bind(record.id.to_string())
                    .bind(lease_until.timestamp_micros())
                    .bind(i64::from(record.attempts))
                    .execute(&mut *tx)
                    .await
                    .map_err(ledger_error(OP))?;
                Begin::Resume(record)
            }
            BeginPlan::Create { record, lease_until } => {
                bind_upsert(sqlx::query(sql::UPSERT_RECORD), &RecordColumns::from_record(&record), Some(lease_until))
                    .execute(&mut *tx)
                    .await
                    .map_err(ledger_error(OP))?;
                sqlx::query(sql::SET_KEY)
                    .bind(key_text)
                    .bind(record.id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(ledger_error(OP))?;
                Begin::Fresh(record)
            }
        };
        tx.commit().await.map_err(ledger_error(OP))?;
        Ok(begin)
    }

    pub(crate) async fn save(
        &self,
        record: &HandoffRecord,
        hold_until: Option<DateTime<Utc>>,
        events: &[HandoffEvent],
    ) -> Result<(), LedgerError> {
        const OP: &str = "save";
        let columns = RecordColumns::from_record(record);
        let (_gate, mut tx) = self.write(OP).await?;
        let done = bind_upsert(sqlx::query(sql::UPSERT_RECORD), &columns, hold_until)
            .execute(&mut *tx)
            .await
            .map_err(ledger_error(OP))?;
        // The fence kept the row unchanged: someone took the record over. Dropping the
        // transaction rolls it back.
        if done.rows_affected() == 0 {
            return Err(LedgerError::LeaseLost);
        }
        for event in events {
            sqlx::query(sql::INSERT_OUTBOX)
                .bind(event.handoff_id.to_string())
                .bind(event_to_json(event).to_string())
                .bind(columns.updated_at.timestamp_micros())
                .execute(&mut *tx)
                .await
                .map_err(ledger_error(OP))?;
        }
        tx.commit().await.map_err(ledger_error(OP))
    }

    pub(crate) async fn get(&self, id: HandoffId) -> Result<Option<HandoffRecord>, LedgerError> {
        let row = sqlx::query(sql::SELECT_RECORD)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(ledger_error("get"))?;
        row.map(|r| decode_record(&r).map(|(record, _)| record)).transpose()
    }

    pub(crate) async fn find_by_conversation(
        &self,
        conversation: ConversationId,
    ) -> Result<Vec<HandoffRecord>, LedgerError> {
        let rows = sqlx::query(sql::SELECT_BY_CONVERSATION)
            .bind(conversation.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(ledger_error("find_by_conversation"))?;
        rows.iter().map(|r| decode_record(r).map(|(record, _)| record)).collect()
    }

    pub(crate) async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HandoffRecord>, LedgerError> {
        const OP: &str = "claim_due";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = micros(now);
        let (_gate, mut tx) = self.write(OP).await?;
        let rows = sqlx::query(sql::SQLITE_CLAIM_DUE)
            .bind(now.timestamp_micros())
            .bind(lease_end(now, lease).timestamp_micros())
            .bind(sql_limit(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(ledger_error(OP))?;
        let mut claimed =
            rows.iter().map(|r| decode_record(r).map(|(record, _)| record)).collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(ledger_error(OP))?;
        sort_claimed(&mut claimed);
        Ok(claimed)
    }

    pub(crate) async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, LedgerError> {
        const OP: &str = "claim_outbox";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = micros(now);
        let (_gate, mut tx) = self.write(OP).await?;
        let rows = sqlx::query(sql::SQLITE_CLAIM_OUTBOX)
            .bind(now.timestamp_micros())
            .bind(lease_end(now, lease).timestamp_micros())
            .bind(sql_limit(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(ledger_error(OP))?;
        let mut entries = rows.iter().map(decode_outbox).collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(ledger_error(OP))?;
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    pub(crate) async fn finish_outbox(
        &self,
        id: i64,
        retry_at: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        const OP: &str = "finish_outbox";
        let (statement, at) = match retry_at {
            None => (sql::OUTBOX_DELIVERED, micros(Utc::now())),
            Some(at) => (sql::OUTBOX_RETRY, micros(at)),
        };
        let (_gate, mut tx) = self.write(OP).await?;
        sqlx::query(statement)
            .bind(id)
            .bind(at.timestamp_micros())
            .bind(error)
            .execute(&mut *tx)
            .await
            .map_err(ledger_error(OP))?;
        tx.commit().await.map_err(ledger_error(OP))
    }

    pub(crate) async fn outbox_backlog(&self) -> Result<u64, LedgerError> {
        let n: i64 = sqlx::query_scalar(sql::OUTBOX_BACKLOG)
            .fetch_one(&self.pool)
            .await
            .map_err(ledger_error("outbox_backlog"))?;
        u64::try_from(n).map_err(|e| corrupt("outbox_backlog", e))
    }

    pub(crate) async fn stats(&self, since: DateTime<Utc>) -> Result<Vec<StatRow>, LedgerError> {
        const OP: &str = "stats";
        let rows = sqlx::query(sql::STATS)
            .bind(micros(since).timestamp_micros())
            .fetch_all(&self.pool)
            .await
            .map_err(ledger_error(OP))?;
        let mut stats = rows
            .iter()
            .map(|r| {
                let queue: Option<String> = r.try_get("queue_id").map_err(ledger_error(OP))?;
                let queue = queue.map(|q| uuid_from_text(&q, "stats queue_id")).transpose()?;
                let stage: String = r.try_get("stage").map_err(ledger_error(OP))?;
                stat_row(
                    r.try_get("reason").map_err(ledger_error(OP))?,
                    queue,
                    &stage,
                    r.try_get("n").map_err(ledger_error(OP))?,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        sort_stats(&mut stats);
        Ok(stats)
    }

    pub(crate) async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query(sql::PING).execute(&self.pool).await.map(|_| ()).map_err(ledger_error("ping"))
    }
}

/// "(directory … does not exist)" when that is why the file cannot be created.
fn missing_dir_hint(path: &Path) -> String {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
            format!(" (directory {} does not exist)", dir.display())
        }
        _ => String::new(),
    }
}

/// Binds [`sql::UPSERT_RECORD`]: the columns and the lease to hold (`None` releases).
fn bind_upsert<'q>(q: Query<'q>, c: &RecordColumns, hold_until: Option<DateTime<Utc>>) -> Query<'q> {
    q.bind(c.id.to_string())
        .bind(c.key.clone())
        .bind(c.conversation_id.to_string())
        .bind(c.idempotency_key.clone())
        .bind(c.reason.clone())
        .bind(c.request.to_string())
        .bind(c.stage.clone())
        .bind(c.queue_id.map(|u| u.to_string()))
        .bind(c.holder.map(|u| u.to_string()))
        .bind(c.customer.map(|u| u.to_string()))
        .bind(c.answer.as_ref().map(Value::to_string))
        .bind(c.attempts)
        .bind(c.created_at.timestamp_micros())
        .bind(c.updated_at.timestamp_micros())
        .bind(c.next_check_at.map(|t| t.timestamp_micros()))
        .bind(c.defer_until.map(|t| t.timestamp_micros()))
        .bind(c.last_error.clone())
        .bind(c.correlation_ids.to_string())
        .bind(c.history.to_string())
        .bind(hold_until.map(|t| t.timestamp_micros()))
}

/// A `handoffs` row read back, with its lease.
fn decode_record(row: &SqliteRow) -> Result<(HandoffRecord, Option<DateTime<Utc>>), LedgerError> {
    const OP: &str = "read handoff";
    let text = |name: &str| -> Result<String, LedgerError> { row.try_get(name).map_err(ledger_error(OP)) };
    let opt_text = |name: &str| -> Result<Option<String>, LedgerError> { row.try_get(name).map_err(ledger_error(OP)) };
    let id = text("id")?;
    let what = format!("handoff {id}");
    let uuid = |raw: &str, column: &str| uuid_from_text(raw, &format!("{what} {column}"));
    let opt_uuid = |name: &str| -> Result<Option<uuid::Uuid>, LedgerError> {
        opt_text(name)?.map(|raw| uuid(&raw, name)).transpose()
    };
    let json = |raw: String, column: &str| -> Result<Value, LedgerError> {
        serde_json::from_str(&raw).map_err(|e| corrupt(&format!("{what} {column}"), e))
    };
    let time = |name: &str| -> Result<DateTime<Utc>, LedgerError> {
        let v: i64 = row.try_get(name).map_err(ledger_error(OP))?;
        time_from_micros(v, &format!("{what} {name}"))
    };
    let opt_time = |name: &str| -> Result<Option<DateTime<Utc>>, LedgerError> {
        let v: Option<i64> = row.try_get(name).map_err(ledger_error(OP))?;
        v.map(|v| time_from_micros(v, &format!("{what} {name}"))).transpose()
    };
    let columns = RecordColumns {
        id: uuid(&id, "id")?,
        key: text("key")?,
        conversation_id: uuid(&text("conversation_id")?, "conversation_id")?,
        idempotency_key: opt_text("idempotency_key")?,
        reason: text("reason")?,
        request: json(text("request")?, "request")?,
        stage: text("stage")?,
        queue_id: opt_uuid("queue_id")?,
        holder: opt_uuid("holder")?,
        customer: opt_uuid("customer")?,
        answer: opt_text("answer")?.map(|raw| json(raw, "answer")).transpose()?,
        attempts: row.try_get("attempts").map_err(ledger_error(OP))?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        next_check_at: opt_time("next_check_at")?,
        defer_until: opt_time("defer_until")?,
        last_error: opt_text("last_error")?,
        correlation_ids: json(text("correlation_ids")?, "correlation_ids")?,
        history: json(text("history")?, "history")?,
    };
    let lease_until = opt_time("lease_until")?;
    Ok((columns.into_record()?, lease_until))
}

fn decode_outbox(row: &SqliteRow) -> Result<OutboxEntry, LedgerError> {
    const OP: &str = "read outbox";
    let id: i64 = row.try_get("id").map_err(ledger_error(OP))?;
    let raw: String = row.try_get("event").map_err(ledger_error(OP))?;
    let event = serde_json::from_str(&raw).map_err(|e| corrupt(&format!("outbox entry {id}"), e))?;
    let attempts: i64 = row.try_get("attempts").map_err(ledger_error(OP))?;
    Ok(OutboxEntry {
        id,
        event: event_from_json(id, event)?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt(&format!("outbox entry {id}"), e))?,
    })
}
