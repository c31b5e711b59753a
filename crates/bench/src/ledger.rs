//! The ledger under test: a temporary SQLite file, a PostgreSQL database created for the run and
//! dropped afterwards, or the in-memory ledger.

use std::str::FromStr as _;

use anyhow::Context as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

use crate::args::LedgerKind;

/// A prepared ledger; call [`Ledger::teardown`] when done.
#[derive(Debug)]
pub(crate) enum Ledger {
    /// A fresh SQLite file in a temporary directory (removed on drop).
    Sqlite {
        /// Holds the file.
        dir: tempfile::TempDir,
    },
    /// A database created on the server for this run.
    Postgres {
        /// The server URL the database was created on (no database in the path).
        server_url: String,
        /// The created database.
        database: String,
    },
    /// `memory:`.
    Memory,
}

impl Ledger {
    /// Creates the ledger `kind`; for PostgreSQL a database `handoff_bench_<random>` on `server_url`.
    ///
    /// # Errors
    /// When the temp directory or the database cannot be created.
    pub(crate) async fn prepare(kind: LedgerKind, server_url: &str) -> anyhow::Result<Self> {
        match kind {
            LedgerKind::Sqlite => Ok(Self::Sqlite {
                dir: tempfile::Builder::new()
                    .prefix("handoff-bench-")
                    .tempdir()
                    .context("failed to create a temp dir for the SQLite ledger")?,
            }),
            LedgerKind::Memory => Ok(Self::Memory),
            LedgerKind::Postgres => {
                let database = format!("handoff_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                let mut conn = admin_options(server_url)?
                    .connect()
                    .await
                    .with_context(|| format!("failed to connect to PostgreSQL at {server_url}"))?;
                sqlx::query(&format!("CREATE DATABASE \"{database}\""))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("failed to create database {database}"))?;
                let _ = conn.close().await;
                Ok(Self::Postgres { server_url: server_url.to_owned(), database })
            }
        }
    }

    /// The `DATABASE_URL` for the service.
    pub(crate) fn database_url(&self) -> anyhow::Result<String> {
        match self {
            Self::Sqlite { dir } => Ok(format!("sqlite://{}", dir.path().join("handoff.db").display())),
            Self::Memory => Ok("memory:".to_owned()),
            Self::Postgres { server_url, database } => {
                let mut url = reqwest::Url::parse(server_url).context("--postgres-url is not a URL")?;
                url.set_path(database);
                Ok(url.to_string())
            }
        }
    }

    /// A working directory for the service: the SQLite temp dir, else the system temp dir.
    pub(crate) fn workdir(&self) -> std::path::PathBuf {
        match self {
            Self::Sqlite { dir } => dir.path().to_path_buf(),
            _ => std::env::temp_dir(),
        }
    }

    /// Size of the SQLite file and its WAL, in KiB (none for the other ledgers).
    pub(crate) fn sqlite_kib(&self) -> Option<u64> {
        let Self::Sqlite { dir } = self else { return None };
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len()).unwrap_or(0);
        Some((size("handoff.db") + size("handoff.db-wal")) / 1024)
    }

    /// Drops the PostgreSQL database (forcing out leftover connections); removes the SQLite dir.
    ///
    /// # Errors
    /// When the database cannot be dropped.
    pub(crate) async fn teardown(self) -> anyhow::Result<()> {
        if let Self::Postgres { server_url, database } = self {
            let mut conn = admin_options(&server_url)?.connect().await.context("failed to reconnect to PostgreSQL")?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .with_context(|| format!("failed to drop database {database}"))?;
            let _ = conn.close().await;
        }
        Ok(())
    }
}

/// Options for the maintenance database `postgres` on the server of `server_url`.
fn admin_options(server_url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(server_url)
        .with_context(|| format!("--postgres-url {server_url} is not a PostgreSQL URL"))?
        .database("postgres")
        .disable_statement_logging())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_url_names_the_created_database() {
        // Arrange
        let ledger = Ledger::Postgres {
            server_url: "postgres://postgres@127.0.0.1:5432/".to_owned(),
            database: "db_x".to_owned(),
        };

        // Act
        let url = ledger.database_url().unwrap();

        // Assert
        assert_eq!(url, "postgres://postgres@127.0.0.1:5432/db_x");
    }
}
