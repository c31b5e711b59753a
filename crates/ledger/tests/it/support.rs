//! Fresh databases for each test: SQLite in a temporary directory, PostgreSQL as a uniquely
//! named database on the loopback server, dropped at the end (also when the test panics).

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use handoff_ledger::{LedgerOptions, SqlLedger};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

/// The PostgreSQL server the tests use (loopback only), without a database.
pub(crate) const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Small pools: many tests run at once against one server.
pub(crate) fn test_options() -> LedgerOptions {
    LedgerOptions { max_connections: 4, acquire_timeout: Duration::from_secs(10), ..LedgerOptions::default() }
}

/// A ledger on a new SQLite file.
#[derive(Debug)]
pub(crate) struct SqliteDb {
    pub(crate) ledger: SqlLedger,
    pub(crate) url: String,
    pub(crate) dir: TempDir,
}

impl SqliteDb {
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger = SqlLedger::connect_with(&url, &test_options()).await.expect("the SQLite ledger opens");
        Self { ledger, url, dir }
    }

    /// A second, plain pool on the same file, for arranging what the ledger would never write.
    pub(crate) async fn raw(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&self.url).await.expect("a raw SQLite pool")
    }
}

/// Runs `test` against a fresh SQLite ledger.
pub(crate) async fn on_sqlite(test: impl AsyncFnOnce(&SqliteDb)) {
    let db = SqliteDb::new().await;
    test(&db).await;
    db.ledger.close().await;
}

/// A ledger on a new PostgreSQL database.
#[derive(Debug)]
pub(crate) struct PgDb {
    pub(crate) ledger: SqlLedger,
    pub(crate) url: String,
    name: String,
}

impl PgDb {
    /// A second, plain pool on the same database.
    pub(crate) async fn raw(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.expect("a raw PostgreSQL pool")
    }
}

/// Connects to the server's `postgres` database; `None` (after saying so) when the server is
/// unreachable, unless `CI=true`, where that fails the test.
async fn admin() -> Option<PgConnection> {
    let url = format!("{PG_SERVER}/postgres");
    let attempt = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    match attempt {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => unreachable_server(&e.to_string()),
        Err(_) => unreachable_server("timed out"),
    }
}

fn unreachable_server(why: &str) -> Option<PgConnection> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL unreachable at {PG_SERVER} ({why}) and CI=true: start it before the tests");
    }
    eprintln!("skipped: PostgreSQL unreachable at {PG_SERVER} ({why})");
    None
}

/// Runs `test` against a ledger on a new database named `handoff_test_<uuid>`, then drops the
/// database, also when the test panics. Returns without running it when the server is
/// unreachable (see [`admin`]).
pub(crate) async fn on_postgres(test: impl AsyncFnOnce(&PgDb)) {
    let Some(mut admin) = admin().await else { return };
    let name = format!("handoff_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.expect("CREATE DATABASE");
    let url = format!("{PG_SERVER}/{name}");
    let db = match SqlLedger::connect_with(&url, &test_options()).await {
        Ok(ledger) => PgDb { ledger, url, name },
        Err(e) => {
            drop_database(&mut admin, &name).await;
            panic!("the PostgreSQL ledger did not open: {e}");
        }
    };
    let outcome = AssertUnwindSafe(test(&db)).catch_unwind().await;
    db.ledger.close().await;
    drop_database(&mut admin, &db.name).await;
    let _ = admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drop_database(admin: &mut PgConnection, name: &str) {
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut *admin).await;
    if let Err(e) = dropped {
        eprintln!("could not drop test database {name}: {e}");
    }
}

/// A fresh platform id that is not a UUID (`{prefix}_` and 32 hex digits): the ledger keeps any
/// platform's ids (Genesys UUIDs, Sunshine hex ids, …) as text.
pub(crate) fn platform_id<T: From<handoff_domain::OpaqueId>>(prefix: &str) -> T {
    let text = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    handoff_domain::OpaqueId::parse(&text).expect("letters, digits and `_` are an opaque id").into()
}
