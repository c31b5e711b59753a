//! The SQLite backend: one file, WAL, one writer thread with group commit.
//!
//! Writes go to a dedicated thread that owns the only writing connection ([`thread`]): every
//! ledger operation is one message, and everything queued is committed in one `BEGIN IMMEDIATE`
//! transaction with a savepoint per operation. `BEGIN IMMEDIATE` takes SQLite's write lock up
//! front, so a read-then-write operation (`begin`, the claims) cannot interleave with another
//! writer, in another process either (`busy_timeout` makes that one wait). Reads of records
//! (`get`, `find_by_conversation`) also run on the writer, so they see every write queued before
//! them (see `save_detached`); the aggregate reads (`stats`, the backlog, `ping`) run on a second
//! connection and thread, which also checkpoints the WAL, and never wait for the writer.
//!
//! Times are stored as INTEGER microseconds since the epoch, our ids as hyphenated UUID text, the
//! platform's ids as their text, JSON as text.
//!
//! **One owner.** A file ledger is used by one process at a time: `connect` takes an exclusive OS
//! file lock (`flock`, through `fs4`) on `PATH.lock` beside the database and fails with
//! [`LedgerSetupError::Locked`] while another process holds it. The lock is the kernel's, so a
//! process killed with SIGKILL loses it at once, and the next `connect` can treat every lease in
//! the file as left by a dead process: it ends them all (`lease_until = now`), so the worker and
//! redeliveries take the records over at once instead of waiting for the leases to lapse. A clean
//! `close` ends this process's leases the same way. (SQLite's own `locking_mode = EXCLUSIVE` would
//! also keep other processes out, but it locks out this ledger's second connection, the reader,
//! too; and an advisory lock file is what an operator can see and reason about.)
//!
//! # Layout
//! - this module: the backend, the hot-path operations (`begin`, `save`, claims, the outbox) and
//!   the row codecs;
//! - `thread`: the connection threads (writer with group commit, reader with checkpoints);
//! - `target`: the URL, opening connections, the owner's file lock;
//! - `schema`: the migrations and their Rust hook;
//! - `insights`: the reads of the insights page, the export and the report;
//! - `privacy`: guest erasure, the retention purge, and the WAL truncation that makes them physical.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use handoff_domain::ports::{Begin, HandoffEvent, LedgerError, OutboxEntry, StatRow};
use handoff_domain::{ConversationId, HandoffId, HandoffKey, HandoffMode, HandoffRecord, HandoffRequest, OutcomeFacts};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use self::thread::{ConnectionThread, Role};
use crate::codec::{
    answer_column, corrupt, event_to_json, lease_end, micros, outbox_entry, outcome_facts, sql_limit, stat_row,
    time_from_micros, uuid_from_text, Decided, RecordColumns,
};
use crate::error::LedgerSetupError;
use crate::plan::{plan_begin, BeginPlan};
use crate::{sql, LedgerOptions};

/// The shared SQL with SQLite's numbered placeholders (`?1`), computed once per statement.
///
/// SQLite reads `$1` as a *named* parameter numbered by first appearance, so `$2 … $1` would bind
/// out of order; `?1` is numbered by its digits, like PostgreSQL's `$1`.
macro_rules! sqlite_sql {
    ($name:ident) => {{
        static TEXT: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| crate::sqlite::numbered_placeholders(crate::sql::$name));
        TEXT.as_str()
    }};
}

/// The writer's automatic checkpoint, a backstop only: the reader checkpoints every 50 ms
/// (see `thread`), so the WAL normally stays far below this (4,096 pages of 4 KiB, 16 MiB).
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 4096;

/// The writer's page cache, in KiB (as a negative `cache_size`): the pages it touches are the
/// right-hand edges of the indexes and the rows of live handoffs, which fit easily.
const WRITER_CACHE_KIB: i64 = -1024;

mod insights;
mod privacy;
mod schema;
mod target;
mod thread;

use self::schema::migrate;
use self::target::SqliteTarget;

/// A SQLite ledger.
#[derive(Debug)]
pub(crate) struct SqliteBackend {
    writer: ConnectionThread,
    /// `None` for an in-memory database, whose only connection is the writer's.
    reader: Option<ConnectionThread>,
    /// The exclusive lock on `PATH.lock` (a file ledger only), held until `close`.
    lock: std::sync::Mutex<Option<std::fs::File>>,
    /// How many leases of a previous process `connect` ended.
    released_at_start: u64,
}

impl SqliteBackend {
    /// Opens (creating if missing) the database at `url` and applies the migrations.
    pub(crate) async fn connect(url: &str, _options: &LedgerOptions) -> Result<Self, LedgerSetupError> {
        let target = SqliteTarget::parse(url)?;
        let opened = tokio::task::spawn_blocking(move || -> Result<Self, LedgerSetupError> {
            let lock = target.lock()?;
            let mut conn = target.open()?;
            migrate(&mut conn)?;
            // The lock is ours, so every lease in the file is a dead process's: end them all.
            let released_at_start = match lock {
                Some(_) => end_leases(&conn, Utc::now()).map_err(|e| target.open_error(Box::new(e)))?,
                None => 0,
            };
            if let SqliteTarget::File(_) = &target {
                conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
                    .and_then(|()| conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB))
                    .map_err(|e| target.open_error(Box::new(e)))?;
            }
            let reader = match &target {
                SqliteTarget::Memory => None,
                SqliteTarget::File(_) => {
                    let reader = target.open()?;
                    // Reads are few (the read API, stats, readiness): a small page cache keeps
                    // the process lean; the writer keeps `WRITER_CACHE_KIB`.
                    reader.pragma_update(None, "cache_size", -512).map_err(|e| target.open_error(Box::new(e)))?;
                    Some(spawn(&target, "handoff-sqlite-reader", reader, Role::Reader)?)
                }
            };
            let writer = spawn(&target, "handoff-sqlite-writer", conn, Role::Writer)?;
            Ok(Self { writer, reader, lock: std::sync::Mutex::new(lock), released_at_start })
        })
        .await;
        opened.unwrap_or_else(|e| {
            Err(LedgerSetupError::OpenSqlite {
                path: PathBuf::new(),
                hint: String::new(),
                source: Box::new(std::io::Error::other(e.to_string())),
            })
        })
    }

    /// Ends this process's leases (a file ledger: the next owner takes the records over at once),
    /// finishes the queued writes, closes both connections and gives the file lock up.
    pub(crate) async fn close(&self) {
        if self.lock.lock().is_ok_and(|l| l.is_some()) {
            let _ = self.writer.call(|conn| end_leases(conn, Utc::now()).map_err(ledger_error("close"))).await;
        }
        if let Some(reader) = &self.reader {
            reader.close().await;
        }
        self.writer.close().await;
        // Dropping the file releases the lock (after the connections are closed).
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
    }

    /// How many leases of a previous process `connect` ended.
    pub(crate) fn released_at_start(&self) -> u64 {
        self.released_at_start
    }

    /// Runs a read on the reader connection (the writer's for an in-memory database).
    async fn read<T, F>(&self, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.reader.as_ref().unwrap_or(&self.writer).call(work).await
    }

    pub(crate) async fn begin(
        &self,
        key: &HandoffKey,
        request: &HandoffRequest,
        now: DateTime<Utc>,
        lease: Duration,
        reuse_after: Duration,
        mode: HandoffMode,
    ) -> Result<Begin, LedgerError> {
        let key = key.clone();
        let request = request.clone();
        self.writer.call(move |conn| begin(conn, &key, &request, now, lease, reuse_after, mode)).await
    }

    pub(crate) async fn save(
        &self,
        record: &HandoffRecord,
        hold_until: Option<DateTime<Utc>>,
        events: &[HandoffEvent],
    ) -> Result<(), LedgerError> {
        self.writer.call(save_work(record, hold_until, events)).await
    }

    /// Queues the save on the writer and returns without waiting for the commit; every later
    /// operation of this ledger (writes, and `get`/`find_by_conversation`, which also run on the
    /// writer) is applied after it.
    pub(crate) fn save_detached(&self, record: &HandoffRecord, events: &[HandoffEvent]) {
        // A closed ledger refuses it: the record stays in TransferPending for the read-back.
        let _ = self.writer.submit(save_work(record, None, events));
    }

    /// On the writer, so it sees every write this ledger queued before (see `save_detached`).
    pub(crate) async fn get(&self, id: HandoffId) -> Result<Option<HandoffRecord>, LedgerError> {
        self.writer
            .call(move |conn| {
                let row = select_record(conn, &id.to_string()).map_err(ledger_error("get"))?;
                row.map(|r| r.map(|(record, _)| record)).transpose()
            })
            .await
    }

    pub(crate) async fn find_by_conversation(
        &self,
        conversation: ConversationId,
    ) -> Result<Vec<HandoffRecord>, LedgerError> {
        // On the writer, like `get`.
        self.writer
            .call(move |conn| {
                const OP: &str = "find_by_conversation";
                let mut statement =
                    conn.prepare_cached(sqlite_sql!(SELECT_BY_CONVERSATION)).map_err(ledger_error(OP))?;
                let rows = statement
                    .query_map([conversation.to_string()], |row| Ok(decode_record(row)))
                    .map_err(ledger_error(OP))?;
                rows.map(|row| row.map_err(ledger_error(OP))?.map(|(record, _)| record)).collect()
            })
            .await
    }

    /// Callers pass `limit > 0`; the order is `SqlLedger`'s to set.
    pub(crate) async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HandoffRecord>, LedgerError> {
        let sql = sqlite_sql!(SQLITE_CLAIM_DUE);
        let decode = |row: &Row<'_>| decode_record(row).map(|(record, _)| record);
        self.writer.call(move |conn| claim(conn, "claim_due", sql, micros(now), lease, limit, decode)).await
    }

    /// Callers pass `limit > 0`; the order is `SqlLedger`'s to set.
    pub(crate) async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, LedgerError> {
        let sql = sqlite_sql!(SQLITE_CLAIM_OUTBOX);
        self.writer.call(move |conn| claim(conn, "claim_outbox", sql, micros(now), lease, limit, decode_outbox)).await
    }

    pub(crate) async fn finish_outbox(
        &self,
        id: i64,
        retry_at: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        let (statement, at) = match retry_at {
            None => (sqlite_sql!(OUTBOX_DELIVERED), micros(Utc::now())),
            Some(at) => (sqlite_sql!(OUTBOX_RETRY), micros(at)),
        };
        self.writer
            .call(move |conn| {
                const OP: &str = "finish_outbox";
                let mut statement = conn.prepare_cached(statement).map_err(ledger_error(OP))?;
                statement.execute(params![id, at.timestamp_micros(), error]).map(|_| ()).map_err(ledger_error(OP))
            })
            .await
    }

    pub(crate) async fn outbox_backlog(&self) -> Result<u64, LedgerError> {
        self.read(|conn| {
            const OP: &str = "outbox_backlog";
            let n: i64 = conn
                .prepare_cached(sqlite_sql!(OUTBOX_BACKLOG))
                .and_then(|mut s| s.query_row([], |row| row.get(0)))
                .map_err(ledger_error(OP))?;
            u64::try_from(n).map_err(|e| corrupt(OP, e))
        })
        .await
    }

    pub(crate) async fn stats(&self, since: DateTime<Utc>) -> Result<Vec<StatRow>, LedgerError> {
        let since = micros(since).timestamp_micros();
        self.read(move |conn| {
            const OP: &str = "stats";
            let mut statement = conn.prepare_cached(sqlite_sql!(STATS)).map_err(ledger_error(OP))?;
            let rows = statement
                .query_map([since], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, String>(2)?, r.get(3)?))
                })
                .map_err(ledger_error(OP))?;
            rows.map(|row| {
                let (reason, queue, stage, n) = row.map_err(ledger_error(OP))?;
                stat_row(reason, queue, &stage, n)
            })
            .collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    pub(crate) async fn outcomes(&self, since: DateTime<Utc>) -> Result<Vec<OutcomeFacts>, LedgerError> {
        let since = micros(since).timestamp_micros();
        self.read(move |conn| {
            const OP: &str = "outcomes";
            let mut statement = conn.prepare_cached(sqlite_sql!(OUTCOMES)).map_err(ledger_error(OP))?;
            let rows = statement
                .query_map([since], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                })
                .map_err(ledger_error(OP))?;
            rows.map(|row| {
                let (reason, queue, stage, answer, defer_until, created, updated) = row.map_err(ledger_error(OP))?;
                let answer = answer
                    .map(|raw| serde_json::from_str::<Value>(&raw).map_err(|e| corrupt("outcomes answer", e)))
                    .transpose()?;
                outcome_facts(
                    reason,
                    queue,
                    &stage,
                    answer,
                    defer_until.is_some(),
                    time_from_micros(created, "outcomes created_at")?,
                    time_from_micros(updated, "outcomes updated_at")?,
                )
            })
            .collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// Both threads answer: `/readyz` turns red when the writer cannot commit (its batch fails),
    /// not only when the file cannot be read.
    pub(crate) async fn ping(&self) -> Result<(), LedgerError> {
        fn ping(conn: &Connection) -> Result<(), LedgerError> {
            conn.prepare_cached(sql::PING).and_then(|mut s| s.query_row([], |_| Ok(()))).map_err(ledger_error("ping"))
        }
        self.writer.call(ping).await?;
        self.read(ping).await
    }
}

/// The work of a save, owning its values.
fn save_work(
    record: &HandoffRecord,
    hold_until: Option<DateTime<Utc>>,
    events: &[HandoffEvent],
) -> impl FnOnce(&Connection) -> Result<(), LedgerError> + Send + 'static {
    let columns = RecordColumns::from_record(record);
    let upsert = UpsertParams::new(&columns, Decided::of_record(record), hold_until);
    let updated_at = columns.updated_at.timestamp_micros();
    let events: Vec<String> = events.iter().map(|e| event_to_json(e).to_string()).collect();
    let handoff_id = record.id.to_string();
    move |conn| {
        const OP: &str = "save";
        let changed = upsert.execute(conn).map_err(ledger_error(OP))?;
        // The fence kept the row unchanged: someone took the record over. The savepoint is
        // rolled back, so nothing of this save is kept.
        if changed == 0 {
            return Err(LedgerError::LeaseLost);
        }
        let mut insert = conn.prepare_cached(sqlite_sql!(INSERT_OUTBOX)).map_err(ledger_error(OP))?;
        for event in &events {
            insert.execute(params![handoff_id, event, updated_at]).map_err(ledger_error(OP))?;
        }
        Ok(())
    }
}

/// `begin` on the writer's connection, inside its batch's transaction.
fn begin(
    conn: &Connection,
    key: &HandoffKey,
    request: &HandoffRequest,
    now: DateTime<Utc>,
    lease: Duration,
    reuse_after: Duration,
    mode: HandoffMode,
) -> Result<Begin, LedgerError> {
    const OP: &str = "begin";
    let key_text = key.to_string();
    let latest: Option<Option<String>> = conn
        .prepare_cached(sqlite_sql!(SELECT_KEY))
        .and_then(|mut s| s.query_row([&key_text], |row| row.get(0)).optional())
        .map_err(ledger_error(OP))?;
    let latest = match latest.flatten() {
        Some(id) => select_record(conn, &id).map_err(ledger_error(OP))?.transpose()?,
        None => None,
    };
    Ok(match plan_begin(latest, key, request, now, lease, reuse_after, mode) {
        BeginPlan::Done(begin) => begin,
        BeginPlan::Resume { record, lease_until } => {
            conn.prepare_cached(sqlite_sql!(RESUME_RECORD))
                .and_then(|mut s| {
                    s.execute(params![
                        record.id.to_string(),
                        lease_until.timestamp_micros(),
                        i64::from(record.attempts),
                        answer_column(&record).map(|a| a.to_string())
                    ])
                })
                .map_err(ledger_error(OP))?;
            Begin::Resume(record)
        }
        BeginPlan::Create { record, lease_until } => {
            UpsertParams::new(&RecordColumns::from_record(&record), Decided::of_record(&record), Some(lease_until))
                .execute(conn)
                .map_err(ledger_error(OP))?;
            conn.prepare_cached(sqlite_sql!(SET_KEY))
                .and_then(|mut s| s.execute(params![key_text, record.id.to_string()]))
                .map_err(ledger_error(OP))?;
            Begin::Fresh(record)
        }
    })
}

/// Runs a claim statement (`$1` now, `$2` the new lease's end, `$3` the limit) and decodes every
/// row it returns.
fn claim<T>(
    conn: &Connection,
    operation: &'static str,
    sql: &str,
    now: DateTime<Utc>,
    lease: Duration,
    limit: usize,
    decode: impl Fn(&Row<'_>) -> Result<T, LedgerError>,
) -> Result<Vec<T>, LedgerError> {
    let mut statement = conn.prepare_cached(sql).map_err(ledger_error(operation))?;
    let rows = statement
        .query_map(params![now.timestamp_micros(), lease_end(now, lease).timestamp_micros(), sql_limit(limit)], |row| {
            Ok(decode(row))
        })
        .map_err(ledger_error(operation))?;
    rows.map(|row| row.map_err(ledger_error(operation))?).collect()
}

/// One record and its lease by id; the inner result is the decoding.
#[allow(clippy::type_complexity)]
fn select_record(
    conn: &Connection,
    id: &str,
) -> rusqlite::Result<Option<Result<(HandoffRecord, Option<DateTime<Utc>>), LedgerError>>> {
    conn.prepare_cached(sqlite_sql!(SELECT_RECORD))?.query_row([id], |row| Ok(decode_record(row))).optional()
}

/// The parameters of [`sql::UPSERT_RECORD`]: the columns, the lease to hold (`None` releases),
/// the outcome and time to queue. Encoded by the caller, so the single writer thread only binds them.
struct UpsertParams([SqlValue; 22]);

impl UpsertParams {
    fn new(c: &RecordColumns, decided: Decided, hold_until: Option<DateTime<Utc>>) -> Self {
        let text = |t: String| SqlValue::Text(t);
        let opt_text = |t: Option<String>| t.map_or(SqlValue::Null, SqlValue::Text);
        let micros = |t: DateTime<Utc>| SqlValue::Integer(t.timestamp_micros());
        let opt_micros = |t: Option<DateTime<Utc>>| t.map_or(SqlValue::Null, micros);
        Self([
            text(c.id.to_string()),
            text(c.key.clone()),
            text(c.conversation_id.clone()),
            opt_text(c.idempotency_key.clone()),
            text(c.reason.clone()),
            text(c.request.to_string()),
            text(c.stage.clone()),
            opt_text(c.queue_id.clone()),
            opt_text(c.holder.clone()),
            opt_text(c.customer.clone()),
            opt_text(c.answer.as_ref().map(Value::to_string)),
            SqlValue::Integer(c.attempts),
            micros(c.created_at),
            micros(c.updated_at),
            opt_micros(c.next_check_at),
            opt_micros(c.defer_until),
            opt_text(c.last_error.clone()),
            text(c.correlation_ids.to_string()),
            text(c.history.to_string()),
            opt_micros(hold_until),
            text(decided.outcome),
            decided.to_queue_ms.map_or(SqlValue::Null, SqlValue::Integer),
        ])
    }

    /// Runs the upsert; the number of rows changed (0 when the fence refused).
    fn execute(&self, conn: &Connection) -> rusqlite::Result<usize> {
        conn.prepare_cached(sqlite_sql!(UPSERT_RECORD))?.execute(rusqlite::params_from_iter(self.0.iter()))
    }
}

/// A `handoffs` row read back (columns in `record_columns!` order), with its lease.
fn decode_record(row: &Row<'_>) -> Result<(HandoffRecord, Option<DateTime<Utc>>), LedgerError> {
    const OP: &str = "read handoff";
    let text = |i: usize| -> Result<String, LedgerError> { row.get(i).map_err(ledger_error(OP)) };
    let opt_text = |i: usize| -> Result<Option<String>, LedgerError> { row.get(i).map_err(ledger_error(OP)) };
    let id = text(0)?;
    let what = format!("handoff {id}");
    let uuid = |raw: &str, column: &str| uuid_from_text(raw, &format!("{what} {column}"));
    let json = |raw: String, column: &str| -> Result<Value, LedgerError> {
        serde_json::from_str(&raw).map_err(|e| corrupt(&format!("{what} {column}"), e))
    };
    let time = |i: usize, name: &str| -> Result<DateTime<Utc>, LedgerError> {
        let v: i64 = row.get(i).map_err(ledger_error(OP))?;
        time_from_micros(v, &format!("{what} {name}"))
    };
    let opt_time = |i: usize, name: &str| -> Result<Option<DateTime<Utc>>, LedgerError> {
        let v: Option<i64> = row.get(i).map_err(ledger_error(OP))?;
        v.map(|v| time_from_micros(v, &format!("{what} {name}"))).transpose()
    };
    let columns = RecordColumns {
        id: uuid(&id, "id")?,
        key: text(1)?,
        conversation_id: text(2)?,
        idempotency_key: opt_text(3)?,
        reason: text(4)?,
        request: json(text(5)?, "request")?,
        stage: text(6)?,
        queue_id: opt_text(7)?,
        holder: opt_text(8)?,
        customer: opt_text(9)?,
        answer: opt_text(10)?.map(|raw| json(raw, "answer")).transpose()?,
        attempts: row.get(11).map_err(ledger_error(OP))?,
        created_at: time(12, "created_at")?,
        updated_at: time(13, "updated_at")?,
        next_check_at: opt_time(14, "next_check_at")?,
        defer_until: opt_time(15, "defer_until")?,
        last_error: opt_text(16)?,
        correlation_ids: json(text(17)?, "correlation_ids")?,
        history: json(text(18)?, "history")?,
    };
    let lease_until = opt_time(19, "lease_until")?;
    Ok((columns.into_record()?, lease_until))
}

/// An `outbox` row read back (`id, event, attempts`).
fn decode_outbox(row: &Row<'_>) -> Result<OutboxEntry, LedgerError> {
    const OP: &str = "read outbox";
    let id: i64 = row.get(0).map_err(ledger_error(OP))?;
    let raw: String = row.get(1).map_err(ledger_error(OP))?;
    let event = serde_json::from_str(&raw).map_err(|e| corrupt(&format!("outbox entry {id}"), e))?;
    let attempts: i64 = row.get(2).map_err(ledger_error(OP))?;
    outbox_entry(id, event, attempts)
}

/// Maps a SQLite error during `operation` onto the domain's error: values that do not decode are
/// [`LedgerError::Corrupt`], everything else (busy, I/O, constraint) is
/// [`LedgerError::Unavailable`].
fn ledger_error(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> LedgerError {
    move |e| match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnIndex(_) => LedgerError::Corrupt(format!("{operation}: {e}")),
        other => LedgerError::Unavailable(format!("{operation}: {other}")),
    }
}

/// Rewrites `$n` placeholders as `?n`.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// Ends every lease still running at `now` (`lease_until = now`): a redelivery resumes those
/// records and the worker claims them at once. Returns how many.
fn end_leases(conn: &Connection, now: DateTime<Utc>) -> rusqlite::Result<u64> {
    let now = micros(now).timestamp_micros();
    let ended = conn.prepare_cached(sqlite_sql!(END_LEASES))?.execute([now])?;
    Ok(u64::try_from(ended).unwrap_or(u64::MAX))
}

/// Starts a connection thread, mapping a spawn failure onto the setup error.
fn spawn(
    target: &SqliteTarget,
    name: &str,
    conn: Connection,
    role: Role,
) -> Result<ConnectionThread, LedgerSetupError> {
    ConnectionThread::spawn(name, conn, role).map_err(|e| target.open_error(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_by_their_digits() {
        assert_eq!(
            numbered_placeholders("SET a = $2 WHERE b <= $1 AND c = '$x'"),
            "SET a = ?2 WHERE b <= ?1 AND c = '$x'"
        );
        assert_eq!(numbered_placeholders("VALUES ($10, $1)"), "VALUES (?10, ?1)");
    }
}
