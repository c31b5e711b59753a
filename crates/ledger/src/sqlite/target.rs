//! Where a `sqlite:` URL points, opening its connections, and the owner's file lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::LedgerSetupError;

/// Where a `sqlite:` URL points.
#[derive(Debug, Clone)]
pub(super) enum SqliteTarget {
    /// `sqlite::memory:` (or `mode=memory`): one connection, gone when it closes.
    Memory,
    File(PathBuf),
}

impl SqliteTarget {
    /// Accepts `sqlite://PATH`, `sqlite:PATH` and `sqlite::memory:`, each with an optional
    /// `?query`. Of the query only `mode=memory` is understood; `mode=rwc` (the default) is
    /// accepted, anything else refused.
    pub(super) fn parse(url: &str) -> Result<Self, LedgerSetupError> {
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
    pub(super) fn open(&self) -> Result<Connection, LedgerSetupError> {
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
    pub(super) fn lock(&self) -> Result<Option<std::fs::File>, LedgerSetupError> {
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

    pub(super) fn open_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> LedgerSetupError {
        let path = match self {
            Self::Memory => PathBuf::from(":memory:"),
            Self::File(path) => path.clone(),
        };
        LedgerSetupError::OpenSqlite { hint: missing_dir_hint(&path), path, source }
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

#[cfg(test)]
mod tests {
    use super::*;

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
