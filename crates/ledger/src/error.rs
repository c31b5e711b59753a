//! Errors: [`LedgerSetupError`] for `connect`, and the mapping of PostgreSQL (sqlx) errors onto
//! the domain's [`LedgerError`] for everything after it (SQLite maps its own).

use std::path::PathBuf;

use handoff_domain::ports::LedgerError;

/// The ledger could not be set up from a database URL. Messages never contain the URL itself,
/// which may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum LedgerSetupError {
    /// The URL names a database this ledger does not support.
    #[error(
        "unsupported database URL scheme `{scheme}`: supported are sqlite:// (e.g. sqlite://handoff.db, one \
         instance) and postgres:// or postgresql:// (e.g. postgres://user@host/db, several instances)"
    )]
    UnsupportedScheme {
        /// The scheme found (empty when there was none).
        scheme: String,
    },
    /// The URL has a supported scheme but could not be parsed.
    #[error("invalid {backend} database URL: {problem}")]
    InvalidUrl {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The parser's complaint.
        problem: String,
    },
    /// The SQLite file could not be opened or created.
    #[error("cannot open the SQLite ledger file {}{hint}: {source}", path.display())]
    OpenSqlite {
        /// The file.
        path: PathBuf,
        /// Extra context, e.g. that the directory does not exist (empty when none).
        hint: String,
        /// What SQLite said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process holds the SQLite ledger: a file ledger has one owner at a time.
    #[error(
        "the SQLite ledger {} is in use by another handoff process{owner}: its lock file {} is held. \
         A SQLite ledger serves one instance; stop the other one, or use a postgres:// DATABASE_URL to run \
         several instances",
        path.display(),
        lock_file.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// The lock file beside it.
        lock_file: PathBuf,
        /// ` (process N)` when the lock file names its owner, else empty.
        owner: String,
    },
    /// PostgreSQL could not be reached or refused the connection.
    #[error("cannot connect to the PostgreSQL ledger at {target}: {source}")]
    ConnectPostgres {
        /// `host:port/database`, without credentials.
        target: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema migrations could not be applied.
    #[error("cannot apply the {backend} ledger migrations: {problem}")]
    Migrate {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What failed.
        problem: String,
    },
}

/// Maps a sqlx (PostgreSQL) error during `operation` onto the domain's error: values that do not decode are
/// [`LedgerError::Corrupt`], everything else (connection, pool, database errors) is
/// [`LedgerError::Unavailable`].
pub(crate) fn ledger_error(operation: &'static str) -> impl FnOnce(sqlx::Error) -> LedgerError {
    move |e| match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            LedgerError::Corrupt(format!("{operation}: {e}"))
        }
        other => LedgerError::Unavailable(format!("{operation}: {other}")),
    }
}
