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

mod thread;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use handoff_domain::insights::{HandoffSummary, InsightsFilter, SummaryCursor};
use handoff_domain::ports::{Begin, HandoffEvent, LedgerError, OutboxEntry, StatRow};
use handoff_domain::{
    ConversationId, GuestId, HandoffId, HandoffKey, HandoffMode, HandoffRecord, HandoffRequest, OutcomeFacts,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use rusqlite_migration::{Migrations, M};
use serde_json::Value;
use uuid::Uuid;

use self::thread::{ConnectionThread, Role};
use crate::codec::{
    answer_column, corrupt, event_to_json, lease_end, micros, outbox_entry, outcome_facts, sql_limit, stat_row,
    time_from_micros, uuid_from_text, RecordColumns, SummaryColumns,
};
use crate::error::LedgerSetupError;
use crate::plan::{plan_begin, BeginPlan};
use crate::{sql, LedgerOptions};

/// The schema, in order; `PRAGMA user_version` counts those applied.
static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/sqlite/0001_ledger.sql")),
        M::up(include_str!("../../migrations/sqlite/0002_advised.sql")),
        // 0003's SQL file only documents what its hook does.
        M::up_with_hook(include_str!("../../migrations/sqlite/0003_abandoned_stage.sql"), allow_new_stages),
        M::up(include_str!("../../migrations/sqlite/0004_guest_privacy.sql")),
        M::up(include_str!("../../migrations/sqlite/0005_insights.sql")),
        // 0006 is the insights counts (issue 15); 0007 only marks the platform ids as opaque text.
        M::up(include_str!("../../migrations/sqlite/0007_platform_ids.sql")),
    ])
});

/// Stages a later version added to the `stage` column's CHECK list. `advised` belongs to another
/// change (issue 12) and is allowed here too, so that either migration may run first.
const NEW_STAGES: [&str; 2] = ["advised", "abandoned"];

/// Migration 0003: widens the `stage` CHECK of `handoffs` to accept [`NEW_STAGES`]. SQLite cannot
/// alter a constraint, so this edits the table's stored definition, the documented procedure for
/// loosening a CHECK (<https://www.sqlite.org/lang_altertable.html#otheralter>, "simpler
/// procedure"): no stored row changes and no row can violate a looser check. Only the text of the
/// CHECK changes, so columns other migrations add survive.
fn allow_new_stages(tx: &rusqlite::Transaction<'_>) -> rusqlite_migration::HookResult {
    let sql: String =
        tx.query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'handoffs'", [], |r| r.get(0))?;
    let missing: Vec<String> =
        NEW_STAGES.iter().filter(|s| !sql.contains(&format!("'{s}'"))).map(|s| format!(", '{s}'")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !sql.contains("'failed'") {
        return Err(rusqlite_migration::HookError::Hook(
            "the handoffs table has no stage CHECK listing 'failed' to extend".to_owned(),
        ));
    }
    let widened = sql.replacen("'failed'", &format!("'failed'{}", missing.concat()), 1);
    let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.pragma_update(None, "writable_schema", "ON")?;
    tx.execute("UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'handoffs'", [&widened])?;
    tx.pragma_update(None, "schema_version", version + 1)?;
    tx.pragma_update(None, "writable_schema", "OFF")?;
    Ok(())
}

static SQLITE_SUMMARIES: LazyLock<String> = LazyLock::new(|| numbered_placeholders(&sql::SUMMARIES));
static SQLITE_SUMMARIES_OF_REASON: LazyLock<String> =
    LazyLock::new(|| numbered_placeholders(&sql::SUMMARIES_OF_REASON));

/// The shared SQL with SQLite's numbered placeholders (`?1`), computed once per statement.
///
/// SQLite reads `$1` as a *named* parameter numbered by first appearance, so `$2 … $1` would bind
/// out of order; `?1` is numbered by its digits, like PostgreSQL's `$1`.
macro_rules! sqlite_sql {
    ($name:ident) => {{
        static TEXT: LazyLock<String> = LazyLock::new(|| numbered_placeholders(sql::$name));
        TEXT.as_str()
    }};
}

/// The writer's automatic checkpoint, a backstop only: the reader checkpoints every 50 ms
/// (see `thread`), so the WAL normally stays far below this (4,096 pages of 4 KiB, 16 MiB).
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 4096;

/// The writer's page cache, in KiB (as a negative `cache_size`): the pages it touches are the
/// right-hand edges of the indexes and the rows of live handoffs, which fit easily.
const WRITER_CACHE_KIB: i64 = -1024;

/// How often, and how far apart, the checkpoint after an erasure is tried.
const CHECKPOINT_TRIES: usize = 20;
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(100);

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

    /// Both threads answer: `/readyz` turns red when the writer cannot commit (its batch fails),
    /// not only when the file cannot be read.
    /// Erases on the writer, then removes what is left of the data in the WAL
    /// ([`remove_erased_data`](Self::remove_erased_data)), also when nothing was erased this time
    /// (a retry after a checkpoint that could not finish).
    pub(crate) async fn erase_guest(&self, guest: &GuestId) -> Result<u64, LedgerError> {
        let guest = guest.as_str().to_owned();
        let erased = self
            .writer
            .call(move |conn| {
                let n = conn
                    .prepare_cached(sqlite_sql!(SQLITE_ERASE_GUEST))
                    .and_then(|mut s| s.execute([guest]))
                    .map_err(ledger_error("erase_guest"))?;
                Ok(n as u64)
            })
            .await?;
        self.remove_erased_data().await?;
        Ok(erased)
    }

    pub(crate) async fn purge_personal_data(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, LedgerError> {
        let before = micros(before).timestamp_micros();
        let limit = sql_limit(limit);
        let purged = self
            .writer
            .call(move |conn| {
                let n = conn
                    .prepare_cached(sqlite_sql!(SQLITE_PURGE_PERSONAL_DATA))
                    .and_then(|mut s| s.execute(params![before, limit]))
                    .map_err(ledger_error("purge_personal_data"))?;
                Ok(n as u64)
            })
            .await?;
        if purged > 0 {
            self.remove_erased_data().await?;
        }
        Ok(purged)
    }

    /// Makes committed erasures physical. `secure_delete` has already zeroed the old row versions
    /// in the pages written; what remains are older page images in the WAL. A `TRUNCATE`
    /// checkpoint copies the latest pages into the database file and cuts the WAL to zero bytes
    /// (the shared-memory file holds only the WAL's page index). It waits for the writer (busy
    /// timeout) and fails while a reader still uses an old snapshot, so it is tried
    /// [`CHECKPOINT_TRIES`] times [`CHECKPOINT_PAUSE`] apart.
    async fn remove_erased_data(&self) -> Result<(), LedgerError> {
        let Some(reader) = &self.reader else {
            return Ok(()); // an in-memory database has no files
        };
        reader
            .call(|conn| {
                for _ in 0..CHECKPOINT_TRIES {
                    let busy: i64 = conn
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                        .map_err(ledger_error("wal_checkpoint"))?;
                    if busy == 0 {
                        return Ok(());
                    }
                    std::thread::sleep(CHECKPOINT_PAUSE);
                }
                Err(LedgerError::Unavailable(
                    "the WAL could not be checkpointed and truncated (a reader stayed busy); retry the erasure"
                        .to_owned(),
                ))
            })
            .await
    }

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
    let upsert = UpsertParams::new(&columns, hold_until);
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
            UpsertParams::new(&RecordColumns::from_record(&record), Some(lease_until))
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

/// The parameters of [`sql::UPSERT_RECORD`]: the columns, then the lease to hold (`None`
/// releases). Encoded by the caller, so the single writer thread only binds them.
struct UpsertParams([SqlValue; 20]);

impl UpsertParams {
    fn new(c: &RecordColumns, hold_until: Option<DateTime<Utc>>) -> Self {
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

/// Where a `sqlite:` URL points.
#[derive(Debug, Clone)]
enum SqliteTarget {
    /// `sqlite::memory:` (or `mode=memory`): one connection, gone when it closes.
    Memory,
    File(PathBuf),
}

impl SqliteTarget {
    /// Accepts `sqlite://PATH`, `sqlite:PATH` and `sqlite::memory:`, each with an optional
    /// `?query`. Of the query only `mode=memory` is understood; `mode=rwc` (the default) is
    /// accepted, anything else refused.
    fn parse(url: &str) -> Result<Self, LedgerSetupError> {
        let invalid = |problem: String| LedgerSetupError::InvalidUrl { backend: "sqlite", problem };
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| invalid("expected sqlite://PATH".to_owned()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut memory = path == ":memory:";
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair {
                "mode=memory" => memory = true,
                "mode=rwc" => {}
                other => {
                    return Err(invalid(format!("unsupported parameter `{other}` (supported: mode=rwc, mode=memory)")))
                }
            }
        }
        if memory {
            return Ok(Self::Memory);
        }
        if path.is_empty() {
            return Err(invalid("the path is empty: expected sqlite://PATH".to_owned()));
        }
        Ok(Self::File(PathBuf::from(path)))
    }

    /// A new connection: WAL, `synchronous = NORMAL`, a 5 s busy timeout, a statement cache.
    fn open(&self) -> Result<Connection, LedgerSetupError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let opened = match self {
            Self::Memory => Connection::open_in_memory(),
            Self::File(path) => Connection::open_with_flags(path, flags),
        };
        let configured = opened.and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.set_prepared_statement_cache_capacity(32);
            if let Self::File(_) = self {
                let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
            }
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // Freed space (old row versions, overflow pages) is zeroed, not left behind: what an
            // erased guest's data needs to be gone from the file (see `remove_erased_data`).
            let _on: i64 = conn.query_row("PRAGMA secure_delete = ON", [], |row| row.get(0))?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            Ok(conn)
        });
        configured.map_err(|e| self.open_error(Box::new(e)))
    }

    /// Takes the exclusive lock on `PATH.lock` (created if missing) for a file; `None` for memory.
    /// The file holds the owner's process id, for the error another process reports.
    fn lock(&self) -> Result<Option<std::fs::File>, LedgerSetupError> {
        use std::io::{Read as _, Seek as _, Write as _};
        let Self::File(path) = self else { return Ok(None) };
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| self.open_error(Box::new(e)))?;
        // Called through the trait: `std::fs::File` has an inherent `try_lock` from Rust 1.89 on.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                return Err(LedgerSetupError::Locked {
                    path: path.clone(),
                    lock_file: lock_path,
                    owner: owner.parse::<u32>().ok().map(|pid| format!(" (process {pid})")).unwrap_or_default(),
                });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(self.open_error(Box::new(e))),
        }
        let pid = std::process::id();
        let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{pid}"));
        Ok(Some(file))
    }

    fn open_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> LedgerSetupError {
        let path = match self {
            Self::Memory => PathBuf::from(":memory:"),
            Self::File(path) => path.clone(),
        };
        LedgerSetupError::OpenSqlite { hint: missing_dir_hint(&path), path, source }
    }
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

/// Applies the pending migrations. A file first created by the sqlx-based ledger (0.1) records
/// its migrations in `_sqlx_migrations` instead of `user_version`: those are counted as applied.
fn migrate(conn: &mut Connection) -> Result<(), LedgerSetupError> {
    let failed = |e: &dyn std::fmt::Display| LedgerSetupError::Migrate { backend: "sqlite", problem: e.to_string() };
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|e| failed(&e))?;
    if version == 0 {
        let legacy: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                [],
                |row| row.get(0),
            )
            .map_err(|e| failed(&e))?;
        if legacy > 0 {
            let applied: i64 = conn
                .query_row("SELECT COUNT(*) FROM _sqlx_migrations WHERE success", [], |row| row.get(0))
                .map_err(|e| failed(&e))?;
            conn.pragma_update(None, "user_version", applied).map_err(|e| failed(&e))?;
        }
    }
    MIGRATIONS.to_latest(conn).map_err(|e| failed(&e))
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

    #[test]
    fn the_migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }

    #[test]
    fn urls_are_parsed_into_a_file_or_memory() {
        assert!(matches!(SqliteTarget::parse("sqlite::memory:"), Ok(SqliteTarget::Memory)));
        assert!(matches!(SqliteTarget::parse("sqlite://x.db?mode=memory"), Ok(SqliteTarget::Memory)));
        assert!(
            matches!(SqliteTarget::parse("sqlite://dir/x.db"), Ok(SqliteTarget::File(p)) if p == Path::new("dir/x.db"))
        );
        assert!(
            matches!(SqliteTarget::parse("sqlite:x.db?mode=rwc"), Ok(SqliteTarget::File(p)) if p == Path::new("x.db"))
        );
        let err = SqliteTarget::parse("sqlite://x.db?cache=shared").unwrap_err().to_string();
        assert!(err.contains("cache=shared"), "{err}");
        let err = SqliteTarget::parse("sqlite://").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
