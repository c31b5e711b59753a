//! The schema: the embedded migrations, applied in order at connect, and the Rust hook of 0003.

use std::sync::LazyLock;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use crate::error::LedgerSetupError;

/// The schema, in order; `PRAGMA user_version` counts those applied.
static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/sqlite/0001_ledger.sql")),
        M::up(include_str!("../../migrations/sqlite/0002_advised.sql")),
        // 0003's SQL file only documents what its hook does.
        M::up_with_hook(include_str!("../../migrations/sqlite/0003_abandoned_stage.sql"), allow_new_stages),
        M::up(include_str!("../../migrations/sqlite/0004_guest_privacy.sql")),
        M::up(include_str!("../../migrations/sqlite/0005_insights.sql")),
        M::up(include_str!("../../migrations/sqlite/0006_insights_rollup.sql")),
        // 0007 only marks the platform ids as opaque text.
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

/// Applies the pending migrations. A file first created by the sqlx-based ledger (0.1) records
/// its migrations in `_sqlx_migrations` instead of `user_version`: those are counted as applied.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), LedgerSetupError> {
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
    MIGRATIONS.to_latest(conn).map_err(|e| failed(&e))?;
    // 0006 added the outcome columns: fill them in for the records written before.
    super::insights::backfill_outcomes(conn).map(|_| ()).map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }
}
