//! The PostgreSQL backend: several instances share one ledger.
//!
//! Each instance registers itself in `ledger_instances` at connect, beats every
//! [`LedgerOptions::heartbeat_every`] from a background task, and names itself on every lease it
//! takes (`lease_owner`, set by a trigger from the connection's `handoff.instance_id`). A lease
//! whose holder's heartbeat is stale counts as lapsed: `begin` resumes the record and `claim_due`
//! claims it, at once. `close` ends this instance's leases and deregisters it.
//!
//! `begin` makes sure the key row exists (`INSERT … ON CONFLICT DO NOTHING`), locks it with
//! `SELECT … FOR UPDATE` and locks the record it points to, so concurrent callers of one key are
//! served one at a time and a concurrent claim cannot take the record in between. Claims lock
//! their rows with `FOR UPDATE SKIP LOCKED` and set the leases in the same statement, so
//! instances never wait on each other's claims nor take the same row.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use handoff_domain::insights::{HandoffSummary, InsightsFilter, SummaryCursor};
use handoff_domain::ports::{Begin, HandoffEvent, LedgerError, OutboxEntry, StatRow};
use handoff_domain::{
    ConversationId, GuestId, HandoffId, HandoffKey, HandoffMode, HandoffRecord, HandoffRequest, OutcomeFacts,
};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

use crate::codec::{
    answer_column, corrupt, event_to_json, lease_end, micros, outbox_entry, outcome_facts, sql_limit, stat_row,
    Decided, RecordColumns, SummaryColumns,
};
use crate::error::{ledger_error, LedgerSetupError};
use crate::plan::{plan_begin, BeginPlan};
use crate::{sql, LedgerOptions};

mod insights;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// [`sql::UPSERT_RECORD`] ($1..$22) and the insert of one outbox event ($23, due at the record's
/// `updated_at`, $14) in one statement: the event row exists only if the fenced upsert wrote.
static SAVE_WITH_ONE_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH saved AS ({} RETURNING id) \
         INSERT INTO outbox (handoff_id, event, attempts, due_at, created_at) SELECT id, $23, 0, $14, $14 FROM saved",
        sql::UPSERT_RECORD
    )
});

/// The connection options of `url`, with TLS as libpq would do it (through rustls):
///
/// - `sslmode=require`, `verify-ca` and `verify-full` never fall back to plaintext: a server that
///   refuses TLS is an error (sqlx's behaviour, tested);
/// - `sslmode=require` with an `sslrootcert` verifies the server's certificate against it, as
///   libpq does (`verify-ca`), instead of accepting any certificate;
/// - an `sslrootcert` that cannot be read is refused here, naming the file, rather than at the
///   first handshake;
/// - without `sslmode`, sqlx's default `prefer` applies: TLS when the server offers it, without
///   verification, else plaintext. Production URLs should say `verify-full`.
fn connect_options(url: &str) -> Result<PgConnectOptions, LedgerSetupError> {
    let invalid = |problem: String| LedgerSetupError::InvalidUrl { backend: "postgres", problem };
    let connect = PgConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
    let root_cert = url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| matches!(k.as_ref(), "sslrootcert" | "ssl-root-cert" | "ssl-ca"))
                .map(|(_, v)| v.into_owned())
        })
        .or_else(|| std::env::var("PGSSLROOTCERT").ok())
        .filter(|path| !path.is_empty());
    let Some(root_cert) = root_cert else {
        return Ok(connect);
    };
    if let Err(e) = std::fs::read(&root_cert) {
        return Err(invalid(format!("sslrootcert {root_cert} cannot be read: {e}")));
    }
    Ok(match connect.get_ssl_mode() {
        PgSslMode::Require => connect.ssl_mode(PgSslMode::VerifyCa),
        _ => connect,
    })
}

/// The `sslmode` word of a mode.
fn ssl_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// A PostgreSQL ledger.
#[derive(Debug)]
pub(crate) struct PostgresBackend {
    pool: PgPool,
    /// This instance's id in `ledger_instances` and on the leases it holds.
    instance: Uuid,
    /// The heartbeat task, stopped by `close` (or on drop).
    heartbeat: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl PostgresBackend {
    /// Connects to `url` and applies the migrations (under sqlx's advisory lock, so instances
    /// starting together migrate once).
    pub(crate) async fn connect(url: &str, options: &LedgerOptions) -> Result<Self, LedgerSetupError> {
        let connect = connect_options(url)?;
        let target = format!(
            "{}:{}/{} (sslmode={})",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or(connect.get_username()),
            ssl_mode_name(connect.get_ssl_mode()),
        );
        let instance = Uuid::new_v4();
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // Every connection names this instance, for the trigger that records lease owners.
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    sqlx::query(&format!("SET handoff.instance_id = '{instance}'")).execute(conn).await.map(|_| ())
                })
            })
            .connect_with(connect)
            .await
            .map_err(|source| LedgerSetupError::ConnectPostgres { target, source })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| LedgerSetupError::Migrate { backend: "postgres", problem: e.to_string() })?;
        // 0006 added the outcome columns: fill them in for the records written before.
        insights::backfill_outcomes(&pool)
            .await
            .map_err(|e| LedgerSetupError::Migrate { backend: "postgres", problem: format!("outcomes: {e}") })?;
        let every = options.heartbeat_every.max(Duration::from_millis(100));
        let registration = Registration {
            instance,
            stale_after: (every * crate::HEARTBEATS_BEFORE_STALE).as_secs_f64(),
            // Non-negative, so it reads back from pg_locks' two oids (see migration 0003).
            lock_key: i64::try_from(instance.as_u64_pair().0 >> 1).unwrap_or(0),
        };
        let conn = registration.register(&pool).await.map_err(|e| LedgerSetupError::Migrate {
            backend: "postgres",
            problem: format!("cannot register this instance: {e}"),
        })?;
        let heartbeat = tokio::spawn(beat(pool.clone(), registration, every, conn));
        Ok(Self { pool, instance, heartbeat: std::sync::Mutex::new(Some(heartbeat)) })
    }

    /// Stops the heartbeat, ends this instance's leases (another instance, or a redelivery, takes
    /// those records over at once), deregisters the instance and closes the pool.
    pub(crate) async fn close(&self) {
        if let Some(task) = self.heartbeat.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
        let now = micros(Utc::now());
        let _ = sqlx::query(sql::PG_END_OWN_LEASES).bind(self.instance).bind(now).execute(&self.pool).await;
        let _ = sqlx::query(sql::PG_DEREGISTER_INSTANCE).bind(self.instance).execute(&self.pool).await;
        self.pool.close().await;
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
        const OP: &str = "begin";
        // The common case, a key never seen: one statement, no explicit transaction.
        if let BeginPlan::Create { record, lease_until } = plan_begin(None, key, request, now, lease, reuse_after, mode)
        {
            let columns = RecordColumns::from_record(&record);
            let decided = Decided::of_record(&record);
            let inserted = bind_upsert(sqlx::query(sql::PG_BEGIN_NEW_KEY), columns, decided, Some(lease_until))
                .bind(key.to_string())
                .execute(&self.pool)
                .await
                .map_err(ledger_error(OP))?;
            if inserted.rows_affected() == 1 {
                return Ok(Begin::Fresh(record));
            }
        }
        let key_text = key.to_string();
        let mut tx = self.pool.begin().await.map_err(ledger_error(OP))?;
        sqlx::query(sql::PG_ENSURE_KEY).bind(&key_text).execute(&mut *tx).await.map_err(ledger_error(OP))?;
        let latest: Option<Uuid> =
            sqlx::query_scalar(sql::PG_LOCK_KEY).bind(&key_text).fetch_one(&mut *tx).await.map_err(ledger_error(OP))?;
        let latest = match latest {
            Some(id) => {
                match sqlx::query(sql::PG_LOCK_RECORD)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(ledger_error(OP))?
                {
                    Some(row) => {
                        let (record, lease_until) = decode_record(&row)?;
                        // A lease whose holder stopped beating has lapsed, whatever its time.
                        let orphaned: bool = row.try_get("orphaned").map_err(ledger_error(OP))?;
                        Some((record, if orphaned { None } else { lease_until }))
                    }
                    None => None,
                }
            }
            None => None,
        };
        let begin = match plan_begin(latest, key, request, now, lease, reuse_after, mode) {
            BeginPlan::Done(begin) => begin,
            BeginPlan::Resume { record, lease_until } => {
                sqlx::query(sql::RESUME_RECORD)
                    .bind(*record.id.as_uuid())
                    .bind(lease_until)
                    .bind(i64::from(record.attempts))
                    .bind(answer_column(&record))
                    .execute(&mut *tx)
                    .await
                    .map_err(ledger_error(OP))?;
                Begin::Resume(record)
            }
            BeginPlan::Create { record, lease_until } => {
                bind_upsert(
                    sqlx::query(sql::UPSERT_RECORD),
                    RecordColumns::from_record(&record),
                    Decided::of_record(&record),
                    Some(lease_until),
                )
                .execute(&mut *tx)
                .await
                .map_err(ledger_error(OP))?;
                sqlx::query(sql::SET_KEY)
                    .bind(key_text)
                    .bind(*record.id.as_uuid())
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
        let decided = Decided::of_record(record);
        let updated_at = columns.updated_at;
        let upsert = match events {
            // One statement is its own transaction: one round trip.
            [] => {
                let done = bind_upsert(sqlx::query(sql::UPSERT_RECORD), columns, decided, hold_until)
                    .execute(&self.pool)
                    .await
                    .map_err(ledger_error(OP))?;
                return fenced(done.rows_affected());
            }
            // The usual `Transferred` save: the record and its event in one statement, the event
            // inserted only when the fenced upsert wrote the record.
            [event] => {
                let done = bind_upsert(sqlx::query(&SAVE_WITH_ONE_EVENT), columns, decided, hold_until)
                    .bind(event_to_json(event))
                    .execute(&self.pool)
                    .await
                    .map_err(ledger_error(OP))?;
                return fenced(done.rows_affected());
            }
            _ => bind_upsert(sqlx::query(sql::UPSERT_RECORD), columns, decided, hold_until),
        };
        let mut tx = self.pool.begin().await.map_err(ledger_error(OP))?;
        let done = upsert.execute(&mut *tx).await.map_err(ledger_error(OP))?;
        // Dropping the transaction rolls it back.
        fenced(done.rows_affected())?;
        for event in events {
            sqlx::query(sql::INSERT_OUTBOX)
                .bind(*event.handoff_id.as_uuid())
                .bind(event_to_json(event))
                .bind(updated_at)
                .execute(&mut *tx)
                .await
                .map_err(ledger_error(OP))?;
        }
        tx.commit().await.map_err(ledger_error(OP))
    }

    pub(crate) async fn get(&self, id: HandoffId) -> Result<Option<HandoffRecord>, LedgerError> {
        let row = sqlx::query(sql::SELECT_RECORD)
            .bind(*id.as_uuid())
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
            .bind(conversation.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(ledger_error("find_by_conversation"))?;
        rows.iter().map(|r| decode_record(r).map(|(record, _)| record)).collect()
    }

    /// Callers pass `limit > 0`; the order is `SqlLedger`'s to set.
    pub(crate) async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HandoffRecord>, LedgerError> {
        let rows = self.claim(sql::PG_CLAIM_DUE, "claim_due", now, limit, lease).await?;
        rows.iter().map(|r| decode_record(r).map(|(record, _)| record)).collect()
    }

    /// Callers pass `limit > 0`; the order is `SqlLedger`'s to set.
    pub(crate) async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, LedgerError> {
        let rows = self.claim(sql::PG_CLAIM_OUTBOX, "claim_outbox", now, limit, lease).await?;
        rows.iter().map(decode_outbox).collect()
    }

    /// Runs a claim statement (`$1` now, `$2` the new lease's end, `$3` the limit).
    async fn claim(
        &self,
        statement: &'static str,
        operation: &'static str,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<PgRow>, LedgerError> {
        let now = micros(now);
        sqlx::query(statement)
            .bind(now)
            .bind(lease_end(now, lease))
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(ledger_error(operation))
    }

    pub(crate) async fn finish_outbox(
        &self,
        id: i64,
        retry_at: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        let (statement, at) = match retry_at {
            None => (sql::OUTBOX_DELIVERED, micros(Utc::now())),
            Some(at) => (sql::OUTBOX_RETRY, micros(at)),
        };
        sqlx::query(statement)
            .bind(id)
            .bind(at)
            .bind(error)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(ledger_error("finish_outbox"))
    }

    pub(crate) async fn outbox_backlog(&self) -> Result<u64, LedgerError> {
        let n: i64 = sqlx::query_scalar(sql::OUTBOX_BACKLOG)
            .fetch_one(&self.pool)
            .await
            .map_err(ledger_error("outbox_backlog"))?;
        u64::try_from(n).map_err(|e| corrupt("outbox_backlog", e))
    }

    /// A keyset page of summaries: an index-only scan of `handoffs_insights_idx` (once vacuumed);
    /// only failed records are looked up by id for their answer.
    pub(crate) async fn summaries(
        &self,
        filter: &InsightsFilter,
        after: Option<SummaryCursor>,
        limit: usize,
    ) -> Result<Vec<HandoffSummary>, LedgerError> {
        const OP: &str = "summaries";
        let (after_at, after_id) = match after {
            Some(c) => (micros(c.created_at), *c.handoff_id.as_uuid()),
            None => (micros(filter.since()), Uuid::nil()),
        };
        let text = if filter.reason().is_some() { sql::SUMMARIES_OF_REASON.as_str() } else { sql::SUMMARIES.as_str() };
        let mut query =
            sqlx::query(text).bind(after_at).bind(after_id).bind(micros(filter.until())).bind(sql_limit(limit));
        if let Some(reason) = filter.reason() {
            query = query.bind(reason.as_str());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(ledger_error(OP))?;
        let mut columns = Vec::with_capacity(rows.len());
        for r in &rows {
            columns.push(SummaryColumns {
                id: r.try_get(0).map_err(ledger_error(OP))?,
                conversation_id: r.try_get(1).map_err(ledger_error(OP))?,
                reason: r.try_get(2).map_err(ledger_error(OP))?,
                queue_id: r.try_get(3).map_err(ledger_error(OP))?,
                stage: r.try_get(4).map_err(ledger_error(OP))?,
                was_deferred: r.try_get(5).map_err(ledger_error(OP))?,
                created_at: r.try_get(6).map_err(ledger_error(OP))?,
                updated_at: r.try_get(7).map_err(ledger_error(OP))?,
                attempts: r.try_get(8).map_err(ledger_error(OP))?,
            });
        }
        // The answers of the page's failed records, in one round trip.
        let wanted: Vec<Uuid> = columns.iter().filter(|c| c.needs_answer()).map(|c| c.id).collect();
        let answers: std::collections::HashMap<Uuid, Value> = if wanted.is_empty() {
            std::collections::HashMap::new()
        } else {
            sqlx::query_as::<_, (Uuid, Option<Value>)>(sql::SUMMARY_ANSWERS)
                .bind(&wanted)
                .fetch_all(&self.pool)
                .await
                .map_err(ledger_error(OP))?
                .into_iter()
                .filter_map(|(id, answer)| answer.map(|a| (id, a)))
                .collect()
        };
        let mut summaries = Vec::with_capacity(columns.len());
        for c in columns {
            let answer = answers.get(&c.id).cloned();
            summaries.push(c.into_summary(answer.as_ref())?);
        }
        Ok(summaries)
    }

    pub(crate) async fn stats(&self, since: DateTime<Utc>) -> Result<Vec<StatRow>, LedgerError> {
        const OP: &str = "stats";
        let rows = sqlx::query(sql::STATS).bind(micros(since)).fetch_all(&self.pool).await.map_err(ledger_error(OP))?;
        rows.iter()
            .map(|r| {
                let stage: String = r.try_get("stage").map_err(ledger_error(OP))?;
                stat_row(
                    r.try_get("reason").map_err(ledger_error(OP))?,
                    r.try_get("queue_id").map_err(ledger_error(OP))?,
                    &stage,
                    r.try_get("n").map_err(ledger_error(OP))?,
                )
            })
            .collect()
    }

    pub(crate) async fn outcomes(&self, since: DateTime<Utc>) -> Result<Vec<OutcomeFacts>, LedgerError> {
        const OP: &str = "outcomes";
        let rows =
            sqlx::query(sql::OUTCOMES).bind(micros(since)).fetch_all(&self.pool).await.map_err(ledger_error(OP))?;
        rows.iter()
            .map(|r| {
                let stage: String = r.try_get("stage").map_err(ledger_error(OP))?;
                let defer_until: Option<DateTime<Utc>> = r.try_get("defer_until").map_err(ledger_error(OP))?;
                outcome_facts(
                    r.try_get("reason").map_err(ledger_error(OP))?,
                    r.try_get("queue_id").map_err(ledger_error(OP))?,
                    &stage,
                    r.try_get("answer").map_err(ledger_error(OP))?,
                    defer_until.is_some(),
                    r.try_get("created_at").map_err(ledger_error(OP))?,
                    r.try_get("updated_at").map_err(ledger_error(OP))?,
                )
            })
            .collect()
    }

    /// The old row versions stay in the table file until VACUUM reclaims their space (see
    /// `docs/operations.md`, "Privacy").
    pub(crate) async fn erase_guest(&self, guest: &GuestId) -> Result<u64, LedgerError> {
        let done = sqlx::query(sql::PG_ERASE_GUEST)
            .bind(guest.as_str())
            .execute(&self.pool)
            .await
            .map_err(ledger_error("erase_guest"))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn purge_personal_data(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, LedgerError> {
        let done = sqlx::query(sql::PG_PURGE_PERSONAL_DATA)
            .bind(micros(before))
            .bind(sql_limit(limit))
            .execute(&self.pool)
            .await
            .map_err(ledger_error("purge_personal_data"))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query(sql::PING).execute(&self.pool).await.map(|_| ()).map_err(ledger_error("ping"))
    }
}

/// What registers an instance in `ledger_instances`.
#[derive(Debug, Clone, Copy)]
struct Registration {
    instance: Uuid,
    /// Seconds without a beat before the instance counts as gone.
    stale_after: f64,
    /// Its session advisory lock, held by its heartbeat connection.
    lock_key: i64,
}

impl Registration {
    /// Takes a connection out of the pool for the heartbeat, takes the advisory lock on it and
    /// (re-)registers the instance.
    async fn register(&self, pool: &PgPool) -> Result<sqlx::PgConnection, sqlx::Error> {
        let mut conn = pool.acquire().await?.detach();
        sqlx::query(sql::PG_LOCK_INSTANCE).bind(self.lock_key).execute(&mut conn).await?;
        sqlx::query(sql::PG_REGISTER_INSTANCE)
            .bind(self.instance)
            .bind(self.stale_after)
            .bind(self.lock_key)
            .execute(&mut conn)
            .await?;
        Ok(conn)
    }
}

/// Beats every `every` on the instance's own connection (which holds its advisory lock) until
/// aborted; dropping that connection releases the lock. A failed beat drops the connection, and the
/// next tick registers again on a new one (also when an operator deleted the row). If beats fail
/// for longer than `stale_after`, other instances take this one's leases over, and the fenced
/// saves then stop its work on those records.
async fn beat(pool: PgPool, registration: Registration, every: Duration, conn: sqlx::PgConnection) {
    let mut conn = Some(conn);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        conn = match conn.take() {
            None => registration.register(&pool).await.ok(),
            Some(mut c) => match sqlx::query(sql::PG_HEARTBEAT).bind(registration.instance).execute(&mut c).await {
                Ok(done) if done.rows_affected() == 1 => Some(c),
                Ok(_) => {
                    drop(c);
                    registration.register(&pool).await.ok()
                }
                Err(_) => None,
            },
        };
    }
}

/// Binds [`sql::UPSERT_RECORD`]: the columns, the lease to hold (`None` releases), the outcome
/// and time to queue.
fn bind_upsert<'q>(q: Query<'q>, c: RecordColumns, decided: Decided, hold_until: Option<DateTime<Utc>>) -> Query<'q> {
    q.bind(c.id)
        .bind(c.key)
        .bind(c.conversation_id)
        .bind(c.idempotency_key)
        .bind(c.reason)
        .bind(c.request)
        .bind(c.stage)
        .bind(c.queue_id)
        .bind(c.holder)
        .bind(c.customer)
        .bind(c.answer)
        .bind(c.attempts)
        .bind(c.created_at)
        .bind(c.updated_at)
        .bind(c.next_check_at)
        .bind(c.defer_until)
        .bind(c.last_error)
        .bind(c.correlation_ids)
        .bind(c.history)
        .bind(hold_until)
        .bind(decided.outcome)
        .bind(decided.to_queue_ms)
}

/// `Ok` when the upsert wrote the row, `LeaseLost` when the fence kept it unchanged.
fn fenced(rows: u64) -> Result<(), LedgerError> {
    if rows == 0 {
        Err(LedgerError::LeaseLost)
    } else {
        Ok(())
    }
}

/// A `handoffs` row read back, with its lease.
fn decode_record(row: &PgRow) -> Result<(HandoffRecord, Option<DateTime<Utc>>), LedgerError> {
    fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
        row: &'r PgRow,
        name: &str,
    ) -> Result<T, LedgerError> {
        row.try_get(name).map_err(ledger_error("read handoff"))
    }
    let columns = RecordColumns {
        id: get(row, "id")?,
        key: get(row, "key")?,
        conversation_id: get(row, "conversation_id")?,
        idempotency_key: get(row, "idempotency_key")?,
        reason: get(row, "reason")?,
        request: get(row, "request")?,
        stage: get(row, "stage")?,
        queue_id: get(row, "queue_id")?,
        holder: get(row, "holder")?,
        customer: get(row, "customer")?,
        answer: get::<Option<Value>>(row, "answer")?,
        attempts: get(row, "attempts")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        next_check_at: get(row, "next_check_at")?,
        defer_until: get(row, "defer_until")?,
        last_error: get(row, "last_error")?,
        correlation_ids: get(row, "correlation_ids")?,
        history: get(row, "history")?,
    };
    let lease_until = get(row, "lease_until")?;
    Ok((columns.into_record()?, lease_until))
}

fn decode_outbox(row: &PgRow) -> Result<OutboxEntry, LedgerError> {
    const OP: &str = "read outbox";
    let id: i64 = row.try_get("id").map_err(ledger_error(OP))?;
    let event: Value = row.try_get("event").map_err(ledger_error(OP))?;
    let attempts: i64 = row.try_get("attempts").map_err(ledger_error(OP))?;
    outbox_entry(id, event, attempts)
}
