//! The durable handoff ledger: [`SqlLedger`] implements the domain's [`LedgerPort`] over SQLite
//! (one instance, a file created on first use) or PostgreSQL (several instances sharing one
//! ledger), chosen by the database URL (CONTRACT §3 `DATABASE_URL`).
//!
//! Its semantics are those of the domain's `InMemoryLedger`, including the shared
//! [`decide_begin`](handoff_domain::decide_begin) rule; the contract suite in `tests/it` runs the
//! same cases against all three. The schema is applied at connect from the migrations embedded in
//! the binary (`migrations/sqlite`, `migrations/postgres`, each index commented with the query it
//! serves).
//!
//! On the hot path a handoff costs at most three short write transactions: `begin`, `save` at
//! `TransferPending`, and `save` at `Transferred` with its outbox event.
//!
//! # Layout
//! - `sqlite`: the SQLite backend on rusqlite (WAL; one writer thread that group-commits every
//!   queued operation in one `BEGIN IMMEDIATE` transaction; a reader thread; integer-microsecond
//!   times; one owner process, held by a file lock, that ends a dead predecessor's leases at start;
//!   `secure_delete` and a truncating checkpoint after erasures, so erased data leaves the files).
//! - `postgres`: the PostgreSQL backend (row locks for `begin`, `FOR UPDATE SKIP LOCKED` claims;
//!   instance registration and heartbeats, so a dead holder's leases are taken over at once;
//!   TLS through rustls by `sslmode`/`sslrootcert`, never falling back to plaintext when asked for).
//! - `sql`: the SQL text, shared where the dialects agree.
//! - `codec`: records, answers, history and events to column values and back, re-validated on read.
//! - `rollup`: the pre-aggregated insights counts (migration 0006): which part of a window comes
//!   from the day counts and which from the records, and adding both into the domain's builder.
//! - `plan`: what `begin` writes, decided once from the domain's `decide_begin`.
//! - `error`: [`LedgerSetupError`] and the mapping of PostgreSQL errors onto `LedgerError`.

mod codec;
mod error;
mod plan;
mod postgres;
mod rollup;
mod sql;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use handoff_domain::insights::{HandoffSummary, Insights, InsightsFilter, SummaryCursor};
use handoff_domain::ports::{Begin, HandoffEvent, InsightsPort, LedgerError, LedgerPort, OutboxEntry, StatRow};
use handoff_domain::{
    ConversationId, GuestId, HandoffId, HandoffKey, HandoffMode, HandoffRecord, HandoffRequest, OutcomeFacts,
};

pub use error::LedgerSetupError;

use crate::codec::sort_claimed;

use crate::postgres::PostgresBackend;
use crate::sqlite::SqliteBackend;

/// The result type of ledger setup.
pub type Result<T, E = LedgerSetupError> = std::result::Result<T, E>;

/// Pool settings for [`SqlLedger::connect_with`].
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// Most connections the PostgreSQL pool opens (SQLite always uses one writer and one reader). Default 10.
    pub max_connections: u32,
    /// PostgreSQL: how long an operation waits for a free connection before it fails with
    /// `LedgerError::Unavailable`; also bounds `connect`. Default 5 s. (SQLite waits for another
    /// process's write lock for at most 5 s, its busy timeout.)
    pub acquire_timeout: Duration,
    /// PostgreSQL: how often this instance writes its heartbeat. A lease whose holder has not beaten
    /// for three of its intervals counts as lapsed: a redelivery or another instance's worker takes
    /// the record over. Default 1 s. (Unused by SQLite, whose file lock makes one owner.)
    pub heartbeat_every: Duration,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self { max_connections: 10, acquire_timeout: Duration::from_secs(5), heartbeat_every: Duration::from_secs(1) }
    }
}

/// A PostgreSQL instance counts as gone after this many heartbeat intervals without a beat.
pub const HEARTBEATS_BEFORE_STALE: u32 = 3;

/// The two stores, each with its own concrete pool.
#[derive(Debug)]
enum Backend {
    Sqlite(SqliteBackend),
    Postgres(PostgresBackend),
}

/// A [`LedgerPort`] over SQLite or PostgreSQL.
#[derive(Debug)]
pub struct SqlLedger {
    backend: Backend,
}

impl SqlLedger {
    /// Connects with [`LedgerOptions::default`]: see [`connect_with`](Self::connect_with).
    ///
    /// # Errors
    /// As [`connect_with`](Self::connect_with).
    pub async fn connect(database_url: &str) -> Result<SqlLedger> {
        Self::connect_with(database_url, &LedgerOptions::default()).await
    }

    /// Opens the ledger at `database_url` and applies any pending migrations.
    ///
    /// - `sqlite://PATH` (also `sqlite:PATH`, `sqlite::memory:`): the file is created if missing
    ///   (not its directory), in WAL mode with `synchronous = NORMAL` and a 5 s busy timeout.
    /// - `postgres://…` or `postgresql://…`: a connection pool; the database must exist.
    ///
    /// # Errors
    /// - [`LedgerSetupError::UnsupportedScheme`] for any other scheme (the message lists the supported ones);
    /// - [`LedgerSetupError::InvalidUrl`] when the URL does not parse;
    /// - [`LedgerSetupError::OpenSqlite`] when the file cannot be opened or created (names the path);
    /// - [`LedgerSetupError::ConnectPostgres`] when the server cannot be reached or refuses;
    /// - [`LedgerSetupError::Migrate`] when the schema cannot be applied.
    pub async fn connect_with(database_url: &str, options: &LedgerOptions) -> Result<SqlLedger> {
        let scheme = database_url.split_once(':').map_or("", |(scheme, _)| scheme);
        let backend = match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Backend::Sqlite(SqliteBackend::connect(database_url, options).await?),
            "postgres" | "postgresql" => Backend::Postgres(PostgresBackend::connect(database_url, options).await?),
            _ => return Err(LedgerSetupError::UnsupportedScheme { scheme: scheme.chars().take(32).collect() }),
        };
        Ok(SqlLedger { backend })
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// How many leases of a previous process `connect` ended: on SQLite, the sole owner ends every
    /// lease it finds (their holder is dead); on PostgreSQL nothing is ended at start (other
    /// instances may be alive; stale holders are taken over as their heartbeats lapse), so 0.
    pub fn released_at_start(&self) -> u64 {
        match &self.backend {
            Backend::Sqlite(b) => b.released_at_start(),
            Backend::Postgres(_) => 0,
        }
    }

    /// Ends this instance's leases (their records are taken over at once by whoever comes next),
    /// closes the pool, waiting for connections in use to be returned, and gives up the SQLite
    /// file lock or the PostgreSQL instance registration. Operations after this fail with
    /// `LedgerError::Unavailable`.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(b) => b.close().await,
            Backend::Postgres(b) => b.close().await,
        }
    }
}

/// Calls the same method on whichever backend is in use.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(b) => b.$method($($arg),*).await,
            Backend::Postgres(b) => b.$method($($arg),*).await,
        }
    };
}

#[async_trait]
impl LedgerPort for SqlLedger {
    async fn begin(
        &self,
        key: &HandoffKey,
        request: &HandoffRequest,
        now: DateTime<Utc>,
        lease: Duration,
        reuse_after: Duration,
        mode: HandoffMode,
    ) -> Result<Begin, LedgerError> {
        dispatch!(self.begin(key, request, now, lease, reuse_after, mode))
    }

    async fn save(
        &self,
        record: &HandoffRecord,
        hold_until: Option<DateTime<Utc>>,
        events: &[HandoffEvent],
    ) -> Result<(), LedgerError> {
        dispatch!(self.save(record, hold_until, events))
    }

    async fn save_detached(&self, record: &HandoffRecord, events: &[HandoffEvent]) {
        match &self.backend {
            Backend::Sqlite(b) => b.save_detached(record, events),
            // Several instances write PostgreSQL: wait for the commit, so a replay arriving at
            // another instance right after the answer finds the record finished.
            Backend::Postgres(b) => {
                let _ = b.save(record, None, events).await;
            }
        }
    }

    async fn close(&self) {
        SqlLedger::close(self).await;
    }

    async fn get(&self, id: HandoffId) -> Result<Option<HandoffRecord>, LedgerError> {
        dispatch!(self.get(id))
    }

    async fn find_by_conversation(&self, conversation: ConversationId) -> Result<Vec<HandoffRecord>, LedgerError> {
        dispatch!(self.find_by_conversation(conversation))
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HandoffRecord>, LedgerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut claimed = dispatch!(self.claim_due(now, limit, lease))?;
        sort_claimed(&mut claimed);
        Ok(claimed)
    }

    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, LedgerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut entries = dispatch!(self.claim_outbox(now, limit, lease))?;
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    async fn finish_outbox(
        &self,
        id: i64,
        retry_at: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        dispatch!(self.finish_outbox(id, retry_at, error))
    }

    async fn outbox_backlog(&self) -> Result<u64, LedgerError> {
        dispatch!(self.outbox_backlog())
    }

    async fn stats(&self, since: DateTime<Utc>) -> Result<Vec<StatRow>, LedgerError> {
        let mut stats = dispatch!(self.stats(since))?;
        stats.sort();
        Ok(stats)
    }

    async fn outcomes(&self, since: DateTime<Utc>) -> Result<Vec<OutcomeFacts>, LedgerError> {
        dispatch!(self.outcomes(since))
    }

    async fn erase_guest(&self, guest: &GuestId) -> Result<u64, LedgerError> {
        dispatch!(self.erase_guest(guest))
    }

    async fn purge_personal_data(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, LedgerError> {
        if limit == 0 {
            return Ok(0);
        }
        dispatch!(self.purge_personal_data(before, limit))
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        dispatch!(self.ping())
    }
}

#[async_trait]
impl InsightsPort for SqlLedger {
    async fn summaries(
        &self,
        filter: &InsightsFilter,
        after: Option<SummaryCursor>,
        limit: usize,
    ) -> Result<Vec<HandoffSummary>, LedgerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        dispatch!(self.summaries(filter, after, limit))
    }

    /// From the pre-aggregated counts (migration 0006, `rollup`): the counts of the window's whole
    /// days, the records of those days not rolled up yet and every record of the hours around
    /// them, read in one snapshot after a bounded roll-up; the time-to-queue percentiles from the
    /// stored times (`handoffs_insights_idx`). Equal to the default fold (the contract suite).
    async fn insights(&self, filter: &InsightsFilter) -> Result<Insights, LedgerError> {
        dispatch!(self.insights(filter))
    }
}

impl SqlLedger {
    /// Rolls finished records up into the insights counts, at most `batches` batches of a few
    /// thousand, each its own short transaction; returns how many records were counted. Insights
    /// reads do a few batches each, so this is needed only to catch up at once (the benchmark,
    /// after seeding a year).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the store cannot be written.
    pub async fn roll_up_insights(&self, batches: usize) -> Result<u64, LedgerError> {
        dispatch!(self.roll_up_insights(batches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unsupported_scheme_is_refused_with_the_supported_ones_listed() {
        // Act
        let err = SqlLedger::connect("mysql://root:hunter2@localhost/handoff").await.unwrap_err();
        // Assert
        let message = err.to_string();
        assert!(matches!(err, LedgerSetupError::UnsupportedScheme { ref scheme } if scheme == "mysql"));
        assert!(message.contains("sqlite://") && message.contains("postgres://"), "{message}");
        assert!(!message.contains("hunter2"), "the URL's password leaked: {message}");
    }

    #[tokio::test]
    async fn a_url_without_a_scheme_is_refused() {
        let err = SqlLedger::connect("handoff.db").await.unwrap_err();
        assert!(matches!(err, LedgerSetupError::UnsupportedScheme { ref scheme } if scheme.is_empty()));
    }

    #[tokio::test]
    async fn an_unreachable_postgres_names_the_target_but_not_the_password() {
        // Arrange: port 1 on loopback refuses connections.
        let options =
            LedgerOptions { max_connections: 1, acquire_timeout: Duration::from_secs(2), ..Default::default() };
        // Act
        let err = SqlLedger::connect_with("postgres://app:s3cret@127.0.0.1:1/handoff", &options).await.unwrap_err();
        // Assert
        let message = err.to_string();
        assert!(matches!(err, LedgerSetupError::ConnectPostgres { .. }), "{message}");
        assert!(message.contains("127.0.0.1:1/handoff"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
}
