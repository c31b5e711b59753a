//! Guest erasure and the retention purge, and making them physical (the WAL truncated).

use std::time::Duration;

use chrono::{DateTime, Utc};
use handoff_domain::ports::LedgerError;
use handoff_domain::GuestId;
use rusqlite::params;

use super::{ledger_error, SqliteBackend};
use crate::codec::{micros, sql_limit};

/// How often, and how far apart, the checkpoint after an erasure is tried.
const CHECKPOINT_TRIES: usize = 20;
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(100);

impl SqliteBackend {
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
}
