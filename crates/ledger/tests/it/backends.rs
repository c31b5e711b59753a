//! What only the SQL ledger has: files and migrations, rows edited behind its back, transactions
//! that fail halfway, microsecond times, and several instances sharing one database. Cases that
//! hold for both dialects are written once and take a raw SQL executor.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::join_all;
use handoff_domain::ports::{Begin, HandoffEvent, LedgerError, LedgerPort};
use handoff_domain::{
    AdviceDecision, ConversationId, GuestId, HandoffKey, HandoffMode, HandoffRecord, HandoffRequest, OpaqueIds,
    QueueId, Stage, StoredAnswer,
};
use handoff_ledger::{LedgerSetupError, SqlLedger};
use serde_json::json;
use uuid::Uuid;

use crate::support::{on_postgres, on_sqlite, test_options};

const LEASE: Duration = Duration::from_secs(30);
const REUSE_AFTER: Duration = Duration::from_secs(600);

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn new_key() -> (HandoffKey, HandoffRequest) {
    let conversation = crate::support::platform_id::<ConversationId>("conv");
    let request = HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": "guest-1" },
            "handoffReason": "billing",
        }),
        &OpaqueIds,
    )
    .unwrap();
    (HandoffKey::new(conversation, None), request)
}

/// How many migrations the `dialect` directory holds (every one is applied at connect).
fn migration_files(dialect: &str) -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dialect);
    let n = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    i64::try_from(n).unwrap()
}

async fn fresh(ledger: &dyn LedgerPort, now: DateTime<Utc>) -> (HandoffKey, HandoffRecord) {
    let (key, request) = new_key();
    match ledger.begin(&key, &request, now, LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap() {
        Begin::Fresh(record) => (key, record),
        other => panic!("expected a fresh record, got {other:?}"),
    }
}

fn queue() -> QueueId {
    QueueId::parse("00000000-0000-4000-8000-000000000001").unwrap()
}

// ---- cases shared by both dialects -------------------------------------------------------------

/// Three finished records and one deferred one, saved.
async fn finished_and_open(ledger: &SqlLedger) -> Vec<HandoffRecord> {
    let mut records = Vec::new();
    for (i, stage) in [Stage::Transferred, Stage::Transferred, Stage::Failed, Stage::Deferred].into_iter().enumerate() {
        let (_, mut record) = fresh(ledger, t(i64::try_from(i).unwrap() * 3_600)).await;
        let at = record.created_at + chrono::Duration::milliseconds(2_345);
        if stage == Stage::Deferred {
            record.defer_until = Some(at);
        } else if stage == Stage::Transferred {
            record.queue = Some(queue());
            record.answer = Some(StoredAnswer::Transferred { queue: queue() });
        }
        record.advance(stage, at, "done").unwrap();
        ledger.save(&record, None, &[]).await.unwrap();
        records.push(record);
    }
    records
}

/// The insights filter of the week around `t(0)`.
fn week() -> handoff_domain::InsightsFilter {
    handoff_domain::InsightsFilter::new(t(-3 * 86_400), t(4 * 86_400), None).unwrap()
}

async fn finished_records_are_rolled_up_once_and_reads_roll_them_up(ledger: &SqlLedger) {
    use handoff_domain::ports::InsightsPort;
    // Arrange
    finished_and_open(ledger).await;

    // Act + Assert: the three finished ones are counted once, the open one not.
    assert_eq!(ledger.roll_up_insights(10).await.unwrap(), 3);
    assert_eq!(ledger.roll_up_insights(10).await.unwrap(), 0);
    finished_and_open(ledger).await;
    let figures = ledger.insights(&week()).await.unwrap();
    assert_eq!(ledger.roll_up_insights(10).await.unwrap(), 0, "the read rolled the new ones up");
    assert_eq!((figures.total, figures.to_queue.count), (8, 4));
    assert_eq!(figures.to_queue.p50, Some(Duration::from_millis(2_345)));
}

/// Records as written before migration 0006 (no outcome) are filled in when a ledger connects.
async fn outcomes_missing_before_0006_are_filled_in_at_connect(url: &str, exec: impl AsyncFn(&str)) {
    use handoff_domain::ports::InsightsPort;
    // Arrange
    let ledger = SqlLedger::connect_with(url, &test_options()).await.unwrap();
    finished_and_open(&ledger).await;
    let want = ledger.insights(&week()).await.unwrap();
    ledger.close().await;
    exec("UPDATE handoffs SET outcome = NULL, to_queue_ms = NULL").await;
    exec("DELETE FROM insights_rollup").await;
    exec(if url.starts_with("sqlite") {
        "UPDATE handoffs SET rolled_up = 0"
    } else {
        "UPDATE handoffs SET rolled_up = false"
    })
    .await;

    // Act
    let reopened = SqlLedger::connect_with(url, &test_options()).await.unwrap();

    // Assert
    assert_eq!(reopened.insights(&week()).await.unwrap(), want);
    assert_eq!(handoff_domain::insights::collect_insights(&reopened, &week(), 2).await.unwrap(), want);
    reopened.close().await;
}

async fn a_row_that_no_longer_validates_is_reported_corrupt(ledger: &SqlLedger, exec: impl AsyncFn(&str)) {
    // Arrange: one record whose request was edited into an invalid one, one with broken history
    let (key, bad_request) = fresh(ledger, t(0)).await;
    let (_, bad_history) = fresh(ledger, t(0)).await;
    exec(&format!("UPDATE handoffs SET request = '{{\"conversationId\": \"nope\"}}' WHERE id = '{}'", bad_request.id))
        .await;
    exec(&format!("UPDATE handoffs SET history = '[{{\"at\": \"yesterday\"}}]' WHERE id = '{}'", bad_history.id)).await;
    // Act
    let get = ledger.get(bad_request.id).await;
    let begin = ledger.begin(&key, &bad_request.request, t(100), LEASE, REUSE_AFTER, HandoffMode::Transfer).await;
    let history = ledger.find_by_conversation(bad_history.key.conversation_id).await;
    // Assert
    let Err(LedgerError::Corrupt(message)) = get else { panic!("expected Corrupt, got {get:?}") };
    assert!(message.contains(&bad_request.id.to_string()) && message.contains("request"), "{message}");
    assert!(matches!(begin, Err(LedgerError::Corrupt(_))), "{begin:?}");
    let Err(LedgerError::Corrupt(message)) = history else { panic!("expected Corrupt, got {history:?}") };
    assert!(message.contains("history"), "{message}");
}

/// A transfer of a guest with a name, e-mail and context, saved with its analytics event; returns
/// what must not be in the outbox.
async fn a_transfer_with_personal_data(ledger: &SqlLedger) -> [&'static str; 4] {
    let conversation = crate::support::platform_id::<ConversationId>("conv");
    let request = HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": "guest-outbox-id", "name": "Outbox Name", "email": "outbox@example.com" },
            "handoffReason": "billing",
            "customContext": { "note": "outbox-context-value" },
        }),
        &OpaqueIds,
    )
    .unwrap();
    let key = HandoffKey::new(conversation, None);
    let Begin::Fresh(mut record) =
        ledger.begin(&key, &request, t(0), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap()
    else {
        panic!("expected a fresh record");
    };
    record.queue = Some(queue());
    record.advance(Stage::TransferPending, t(1), "transfer requested").unwrap();
    record.advance(Stage::Transferred, t(1), "transfer accepted").unwrap();
    record.answer = Some(StoredAnswer::Transferred { queue: queue() });
    let event = HandoffEvent {
        handoff_id: record.id,
        conversation_id: conversation,
        reason: record.reason().clone(),
        queue_id: queue(),
        at: t(1),
    };
    ledger.save(&record, None, &[event]).await.unwrap();
    ["guest-outbox-id", "Outbox Name", "outbox@example.com", "outbox-context-value"]
}

/// Asserts the outbox rows (as text) carry the event and none of `private`.
fn assert_outbox_without(rows: &[String], private: &[&str]) {
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains("billing"), "the event is there: {rows:?}");
    for p in private {
        assert!(!rows[0].contains(p), "{p} in the outbox: {rows:?}");
    }
}

async fn a_save_whose_outbox_insert_fails_writes_nothing(ledger: &SqlLedger, refuse_outbox: impl AsyncFnOnce()) {
    // Arrange: a leased record, and an outbox that refuses every insert
    let (key, before) = fresh(ledger, t(0)).await;
    let mut after = before.clone();
    after.queue = Some(queue());
    after.advance(Stage::TransferPending, t(1), "transfer requested").unwrap();
    after.advance(Stage::Transferred, t(1), "transfer accepted").unwrap();
    after.answer = Some(StoredAnswer::Transferred { queue: queue() });
    let event = HandoffEvent {
        handoff_id: after.id,
        conversation_id: after.key.conversation_id,
        reason: after.reason().clone(),
        queue_id: queue(),
        at: t(1),
    };
    refuse_outbox().await;
    // Act
    let saved = ledger.save(&after, None, &[event]).await;
    // Assert: neither the record nor its release was written
    assert!(matches!(saved, Err(LedgerError::Unavailable(_))), "{saved:?}");
    assert_eq!(ledger.get(before.id).await.unwrap(), Some(before.clone()));
    assert_eq!(ledger.outbox_backlog().await.unwrap(), 0);
    let again = ledger.begin(&key, &before.request, t(2), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap();
    assert_eq!(again, Begin::Busy { handoff_id: before.id }, "the lease was not released");
}

async fn times_are_kept_to_the_microsecond(ledger: &SqlLedger) {
    // Arrange
    let now = t(0) + chrono::Duration::nanoseconds(123_456_789);
    // Act
    let (_, record) = fresh(ledger, now).await;
    // Assert: what begin returns is exactly what is stored
    assert_eq!(record.created_at, t(0) + chrono::Duration::microseconds(123_456));
    assert_eq!(record.history[0].at, record.created_at);
    assert_eq!(ledger.get(record.id).await.unwrap(), Some(record));
}

async fn two_instances_on_one_database_begin_a_key_once(first: &SqlLedger, second: &SqlLedger) {
    // Arrange: 50 new keys
    let keys: Vec<(HandoffKey, HandoffRequest)> = (0..50).map(|_| new_key()).collect();
    // Act: every key reaches both instances at once
    let begins = keys.iter().flat_map(|(key, request)| {
        [first, second].map(|ledger| async move {
            (key, ledger.begin(key, request, t(0), LEASE, REUSE_AFTER, HandoffMode::Transfer).await)
        })
    });
    let results = join_all(begins).await;
    // Assert: per key, one instance starts it and the other is told it is busy
    for (key, _) in &keys {
        let outcomes: Vec<&Begin> = results
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, r)| r.as_ref().unwrap_or_else(|e| panic!("begin of {key} failed: {e}")))
            .collect();
        let fresh = outcomes.iter().filter(|b| matches!(b, Begin::Fresh(_))).count();
        let busy = outcomes.iter().filter(|b| matches!(b, Begin::Busy { .. })).count();
        assert_eq!((fresh, busy), (1, 1), "{key}: {outcomes:?}");
    }
}

/// An advisory record as the ledger stored it before migration 0002: `failed`, with an `advised`
/// answer (arranged by saving an `advised` record, then moving it back with `exec`).
async fn an_old_advisory_record(ledger: &SqlLedger, exec: impl AsyncFn(&str)) -> HandoffRecord {
    let (_, mut record) = fresh(ledger, t(0)).await;
    record.queue = Some(queue());
    record.advance(Stage::Advised, t(1), "advised: transfer").unwrap();
    record.answer =
        Some(StoredAnswer::Advised { queue: queue(), decision: AdviceDecision::Transfer, confirmation: None });
    ledger.save(&record, None, &[]).await.unwrap();
    exec(&format!("UPDATE handoffs SET stage = 'failed' WHERE id = '{}'", record.id)).await;
    record
}

// ---- SQLite ------------------------------------------------------------------------------------

mod sqlite {
    use super::*;

    #[tokio::test]
    async fn migration_0002_moves_old_advisory_records_from_failed_to_advised_and_keeps_the_keys() {
        // Arrange: a file at schema 1 holding an advisory record stored as `failed`
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger = SqlLedger::connect(&url).await.unwrap();
        let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
        let old = super::an_old_advisory_record(&ledger, async |sql: &str| {
            sqlx::raw_sql(sql).execute(&raw).await.unwrap();
        })
        .await;
        let (other_key, other) = fresh(&ledger, t(0)).await;
        ledger.close().await;
        sqlx::raw_sql("PRAGMA user_version = 1").execute(&raw).await.unwrap();
        raw.close().await;

        // Act
        let migrated = SqlLedger::connect(&url).await.unwrap();

        // Assert
        let back = migrated.get(old.id).await.unwrap().expect("kept");
        assert_eq!(back.stage, Stage::Advised);
        assert_eq!(back.answer, old.answer);
        assert_eq!(migrated.get(other.id).await.unwrap().map(|r| r.stage), Some(Stage::Received));
        // The key still points at its record (the keys table was rebuilt with the records).
        let again = migrated.begin(&other_key, &other.request, t(1), LEASE, REUSE_AFTER, HandoffMode::Transfer).await;
        assert!(matches!(again, Ok(Begin::Busy { handoff_id }) if handoff_id == other.id), "{again:?}");
        let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
        let problems: Vec<(String,)> =
            sqlx::query_as("PRAGMA foreign_key_check").fetch_all(&raw).await.unwrap_or_default();
        assert!(problems.is_empty(), "{problems:?}");
        raw.close().await;
        migrated.close().await;
    }

    #[tokio::test]
    async fn connect_creates_the_file_and_applies_the_migrations_on_a_fresh_path() {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        assert!(!path.exists());
        let url = format!("sqlite://{}", path.display());
        // Act
        let ledger = SqlLedger::connect(&url).await.unwrap();
        // Assert
        assert!(path.exists(), "the database file was not created");
        assert_eq!(ledger.backend_name(), "sqlite");
        ledger.ping().await.unwrap();
        let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
        let applied: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&raw).await.unwrap();
        assert_eq!(applied, migration_files("sqlite"));
        let mut indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%_idx'")
                .fetch_all(&raw)
                .await
                .unwrap();
        indexes.sort();
        assert_eq!(
            indexes,
            [
                "handoffs_conversation_idx",
                "handoffs_guest_idx",
                "handoffs_insights_idx",
                "handoffs_personal_data_idx",
                "handoffs_stage_lease_idx",
                "handoffs_stage_next_check_idx",
                "handoffs_unrolled_idx",
                "outbox_pending_idx"
            ]
        );
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&raw).await.unwrap();
        assert_eq!(journal, "wal");
        raw.close().await;
        ledger.close().await;
    }

    #[tokio::test]
    async fn a_ledger_reopened_on_its_file_keeps_its_records_and_deferrals() {
        // Arrange: a deferral stored, then the process "restarts"
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger = SqlLedger::connect(&url).await.unwrap();
        let (_, mut record) = fresh(&ledger, t(0)).await;
        record.advance(Stage::Deferred, t(1), "no capacity").unwrap();
        record.queue = Some(queue());
        record.next_check_at = Some(t(50));
        ledger.save(&record, None, &[]).await.unwrap();
        ledger.close().await;
        // Act
        let reopened = SqlLedger::connect(&url).await.unwrap();
        // Assert
        assert_eq!(reopened.get(record.id).await.unwrap(), Some(record.clone()));
        let due = reopened.claim_due(t(100), 10, LEASE).await.unwrap();
        assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), vec![record.id]);
        reopened.close().await;
    }

    #[tokio::test]
    async fn connect_names_the_path_when_its_directory_is_missing() {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("ledger.db");
        // Act
        let err = SqlLedger::connect(&format!("sqlite://{}", path.display())).await.unwrap_err();
        // Assert
        let message = err.to_string();
        assert!(matches!(err, LedgerSetupError::OpenSqlite { .. }), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("does not exist"), "{message}");
    }

    #[tokio::test]
    async fn an_in_memory_url_gives_a_working_ledger() {
        // Arrange
        let ledger = SqlLedger::connect("sqlite::memory:").await.unwrap();
        // Act
        let (_, record) = fresh(&ledger, t(0)).await;
        // Assert: every operation sees the same database
        assert_eq!(ledger.get(record.id).await.unwrap(), Some(record));
        assert_eq!(ledger.claim_due(t(100), 10, LEASE).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_row_that_no_longer_validates_is_reported_corrupt() {
        on_sqlite(async |db| {
            let raw = db.raw().await;
            super::a_row_that_no_longer_validates_is_reported_corrupt(&db.ledger, async |sql: &str| {
                sqlx::raw_sql(sql).execute(&raw).await.unwrap();
            })
            .await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_save_whose_outbox_insert_fails_writes_nothing() {
        on_sqlite(async |db| {
            let raw = db.raw().await;
            super::a_save_whose_outbox_insert_fails_writes_nothing(&db.ledger, async || {
                sqlx::raw_sql(
                    "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox \
                     BEGIN SELECT RAISE(ABORT, 'outbox refused'); END",
                )
                .execute(&raw)
                .await
                .unwrap();
            })
            .await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_fenced_save_among_concurrent_writes_fails_alone() {
        on_sqlite(async |db| {
            // Arrange: 40 records, and one copy of the first made stale by a resume
            let mut records = Vec::new();
            for _ in 0..40 {
                records.push(fresh(&db.ledger, t(0)).await);
            }
            let (stale_key, stale) = records[0].clone();
            let resumed = match db
                .ledger
                .begin(&stale_key, &stale.request, t(100), LEASE, REUSE_AFTER, HandoffMode::Transfer)
                .await
                .unwrap()
            {
                Begin::Resume(record) => record,
                other => panic!("expected a resume, got {other:?}"),
            };
            // Act: every save at once, so the writer commits several in one transaction
            let saves = records.iter().map(|(_, record)| {
                let mut record = record.clone();
                record.advance(Stage::ContextWritten, t(101), "context").unwrap();
                let ledger = &db.ledger;
                async move { (record.id, ledger.save(&record, None, &[]).await) }
            });
            let results = join_all(saves).await;
            // Assert: the stale copy lost its lease; every other save is committed
            for (id, result) in results {
                let stored = db.ledger.get(id).await.unwrap().unwrap();
                if id == stale.id {
                    assert_eq!(result, Err(LedgerError::LeaseLost));
                    assert_eq!(stored, resumed, "the fenced save changed the record");
                } else {
                    assert_eq!(result, Ok(()));
                    assert_eq!(stored.stage, Stage::ContextWritten);
                }
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_file_migrated_by_the_sqlx_ledger_opens_without_reapplying_its_schema() {
        // Arrange: the schema as version 0.1 left it, recorded only in `_sqlx_migrations`
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("legacy.db").display());
        let raw = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc")).await.unwrap();
        sqlx::raw_sql(include_str!("../../migrations/sqlite/0001_ledger.sql")).execute(&raw).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
             checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
             INSERT INTO _sqlx_migrations VALUES (1, 'ledger', CURRENT_TIMESTAMP, 1, x'00', 0);",
        )
        .execute(&raw)
        .await
        .unwrap();
        raw.close().await;
        // Act
        let ledger = SqlLedger::connect(&url).await.unwrap();
        // Assert: it works, counts the sqlx migration as applied and applies only the later ones
        let (_, record) = fresh(&ledger, t(0)).await;
        assert_eq!(ledger.get(record.id).await.unwrap(), Some(record));
        ledger.close().await;
        let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&raw).await.unwrap();
        assert_eq!(version, migration_files("sqlite"), "0001 counted as applied, the later ones applied");
        raw.close().await;
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_into_the_database_file_without_the_writer() {
        on_sqlite(async |db| {
            // Arrange: the database file as migrated, then 200 handoffs written (far below the
            // writer's own 4,096-page checkpoint)
            let file = db.dir.path().join("ledger.db");
            let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let before = size();
            for n in 0..200 {
                fresh(&db.ledger, t(n)).await;
            }
            // Act: wait (at most 5 s) for the reader's periodic checkpoint to copy them over
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while size() == before && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                db.ledger.ping().await.unwrap();
            }
            // Assert
            assert!(size() > before, "the database file stayed at {before} bytes: nothing was checkpointed");
        })
        .await;
    }

    #[tokio::test]
    async fn a_detached_save_is_seen_by_the_next_operation_of_the_ledger() {
        on_sqlite(async |db| {
            for n in 0..20 {
                // Arrange: a record on its way to the transfer
                let (key, mut record) = fresh(&db.ledger, t(n)).await;
                record.advance(Stage::ContextWritten, t(n), "context").unwrap();
                record.advance(Stage::TransferPending, t(n), "transferring").unwrap();
                db.ledger.save(&record, Some(t(n + 30)), &[]).await.unwrap();
                record.advance(Stage::Transferred, t(n), "transferred").unwrap();
                record.queue = Some(queue());
                let event = HandoffEvent {
                    handoff_id: record.id,
                    conversation_id: key.conversation_id,
                    reason: record.request.reason().clone(),
                    queue_id: queue(),
                    at: t(n),
                };
                // Act: queued, not awaited; then read and begin again at once
                db.ledger.save_detached(&record, std::slice::from_ref(&event)).await;
                let read = db.ledger.get(record.id).await.unwrap().unwrap();
                let again = db
                    .ledger
                    .begin(&key, &record.request, t(n + 1), LEASE, REUSE_AFTER, HandoffMode::Transfer)
                    .await
                    .unwrap();
                // Assert
                assert_eq!(read.stage, Stage::Transferred);
                assert!(matches!(again, Begin::Replay(ref r) if r.id == record.id), "{again:?}");
            }
            assert_eq!(db.ledger.outbox_backlog().await.unwrap(), 20);
        })
        .await;
    }

    /// Whether `needle` occurs anywhere in the ledger's files (database, WAL, shared memory),
    /// and in which.
    fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<String> {
        ["ledger.db", "ledger.db-wal", "ledger.db-shm"]
            .into_iter()
            .filter(|name| {
                let bytes = std::fs::read(dir.join(name)).unwrap_or_default();
                bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn the_outbox_holds_no_personal_data() {
        on_sqlite(async |db| {
            let private = super::a_transfer_with_personal_data(&db.ledger).await;
            let raw = db.raw().await;
            let rows: Vec<String> = sqlx::query_scalar("SELECT event FROM outbox").fetch_all(&raw).await.unwrap();
            raw.close().await;
            super::assert_outbox_without(&rows, &private);
        })
        .await;
    }

    #[tokio::test]
    async fn after_an_erasure_the_guests_name_and_email_are_in_none_of_the_ledgers_files() {
        // Arrange: the guest's records saved several times each (old row versions in pages and
        // WAL frames), with a context large enough for overflow pages; another guest's record
        // stays, which proves the scan finds what is there.
        const NAME: &str = "Zelda Quuxington-Erasable";
        const EMAIL: &str = "zelda.quuxington@erasable.example";
        const KEPT_NAME: &str = "Kept Guest Marker-Name";
        let db = crate::support::SqliteDb::new().await;
        let ledger: &dyn LedgerPort = &db.ledger;
        let personal = |guest: &str, name: &str| {
            let context: serde_json::Map<String, serde_json::Value> =
                (0..30).map(|n| (format!("note_{n}"), json!(format!("{name} said {n} {}", "x".repeat(180))))).collect();
            let conversation = crate::support::platform_id::<ConversationId>("conv");
            let request = HandoffRequest::from_json(
                &json!({
                    "conversationId": conversation.to_string(),
                    "guestInfo": { "id": guest, "name": name, "email": EMAIL },
                    "handoffReason": "billing",
                    "customContext": context,
                }),
                &OpaqueIds,
            )
            .unwrap();
            (HandoffKey::new(conversation, None), request)
        };
        for n in 0..5 {
            let (key, request) = personal("guest-erase-me", NAME);
            let Begin::Fresh(mut record) =
                ledger.begin(&key, &request, t(n), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap()
            else {
                panic!("expected a fresh record");
            };
            record.queue = Some(QueueId::parse("00000000-0000-4000-8000-000000000001").unwrap());
            record.advance(Stage::TransferPending, t(n + 1), "transfer requested").unwrap();
            ledger.save(&record, Some(t(n + 30)), &[]).await.unwrap();
            record.advance(Stage::Transferred, t(n + 2), "transfer accepted").unwrap();
            ledger.save(&record, None, &[]).await.unwrap();
        }
        let (key, request) = personal("guest-kept", KEPT_NAME);
        ledger.begin(&key, &request, t(10), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap();
        assert!(!files_holding(db.dir.path(), NAME).is_empty(), "the name must be on disk before the erasure");

        // Act
        let erased = ledger.erase_guest(&GuestId::parse("guest-erase-me").unwrap()).await.unwrap();

        // Assert: at once (the erasure returns after the checkpoint), well within 5 s.
        assert_eq!(erased, 5);
        assert_eq!(files_holding(db.dir.path(), NAME), Vec::<String>::new(), "the name is still on disk");
        assert_eq!(files_holding(db.dir.path(), EMAIL), vec!["ledger.db".to_owned()], "only the kept guest's e-mail");
        assert!(!files_holding(db.dir.path(), KEPT_NAME).is_empty(), "the other guest's record must stay readable");
        db.ledger.close().await;
    }

    #[tokio::test]
    async fn a_closed_ledger_answers_unavailable() {
        // Arrange
        let db = crate::support::SqliteDb::new().await;
        db.ledger.close().await;
        // Act
        let (key, request) = new_key();
        let write = db.ledger.begin(&key, &request, t(0), LEASE, REUSE_AFTER, HandoffMode::Transfer).await;
        let read = db.ledger.ping().await;
        // Assert
        assert!(matches!(write, Err(LedgerError::Unavailable(_))), "{write:?}");
        assert!(matches!(read, Err(LedgerError::Unavailable(_))), "{read:?}");
    }

    #[tokio::test]
    async fn times_are_kept_to_the_microsecond() {
        on_sqlite(async |db| super::times_are_kept_to_the_microsecond(&db.ledger).await).await;
    }

    #[tokio::test]
    async fn finished_records_are_rolled_up_once_and_reads_roll_them_up() {
        on_sqlite(async |db| super::finished_records_are_rolled_up_once_and_reads_roll_them_up(&db.ledger).await).await;
    }

    #[tokio::test]
    async fn outcomes_missing_before_0006_are_filled_in_at_connect() {
        // Arrange: the file only (the support ledger holds the file lock)
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());

        // Act + Assert
        super::outcomes_missing_before_0006_are_filled_in_at_connect(&url, async |sql: &str| {
            let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::raw_sql(sql).execute(&raw).await.unwrap();
            raw.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_second_ledger_on_one_file_is_refused_with_the_owner_named_until_the_first_closes() {
        // Arrange
        let db = crate::support::SqliteDb::new().await;

        // Act
        let refused = SqlLedger::connect_with(&db.url, &test_options()).await.unwrap_err();
        db.ledger.close().await;
        let after_close = SqlLedger::connect_with(&db.url, &test_options()).await;

        // Assert
        let message = refused.to_string();
        assert!(matches!(refused, LedgerSetupError::Locked { .. }), "{message}");
        assert!(message.contains("ledger.db.lock"), "{message}");
        assert!(message.contains(&format!("(process {})", std::process::id())), "{message}");
        assert!(message.contains("postgres://"), "the message points to the multi-instance ledger: {message}");
        let reopened = after_close.expect("the file opens once its owner closed it");
        reopened.ping().await.unwrap();
        reopened.close().await;
    }

    #[tokio::test]
    async fn a_new_owner_ends_every_lease_the_previous_one_left_and_a_clean_close_ends_its_own() {
        // Arrange: records held far into the future, as a killed process leaves them (its lock
        // died with it; here the first ledger is simply dropped without `close`).
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let first = SqlLedger::connect_with(&url, &test_options()).await.unwrap();
        let now = Utc::now();
        let (key_a, held) = fresh(&first, now).await;
        let (_, deferred) = fresh(&first, now).await;
        let mut deferred = deferred;
        deferred.advance(Stage::Deferred, now, "deferred").unwrap();
        deferred.next_check_at = Some(now - chrono::Duration::seconds(1));
        first.save(&deferred, Some(now + chrono::Duration::hours(1)), &[]).await.unwrap();
        drop(first);
        let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
        let held_leases = || async {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM handoffs WHERE lease_until > ?1")
                .bind(Utc::now().timestamp_micros())
                .fetch_one(&raw)
                .await
                .unwrap();
            n
        };
        assert_eq!(held_leases().await, 2, "arrangement: both records are leased");

        // Act
        let second = SqlLedger::connect_with(&url, &test_options()).await.unwrap();
        let released = second.released_at_start();
        let begun =
            second.begin(&key_a, &held.request, Utc::now(), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap();
        let claimed = second.claim_due(Utc::now(), 10, LEASE).await.unwrap();
        let leased_while_open = held_leases().await;
        second.close().await;
        let leased_after_close = held_leases().await;

        // Assert
        assert_eq!(released, 2);
        assert!(matches!(begun, Begin::Resume(ref r) if r.id == held.id), "a redelivery resumes at once: {begun:?}");
        assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![deferred.id], "the worker too");
        assert_eq!(leased_while_open, 2, "the new owner holds both now");
        assert_eq!(leased_after_close, 0, "a clean close ends its leases");
        raw.close().await;
    }
}

// ---- PostgreSQL --------------------------------------------------------------------------------

mod postgres {
    use super::*;

    #[tokio::test]
    async fn migration_0002_moves_old_advisory_records_from_failed_to_advised() {
        on_postgres(async |db| {
            // Arrange: an advisory record stored as `failed`, and 0002 not applied yet
            let raw = db.raw().await;
            let old = super::an_old_advisory_record(&db.ledger, async |sql: &str| {
                sqlx::raw_sql(sql).execute(&raw).await.unwrap();
            })
            .await;
            sqlx::raw_sql("DELETE FROM _sqlx_migrations WHERE version = 2").execute(&raw).await.unwrap();

            // Act
            let migrated = SqlLedger::connect_with(&db.url, &test_options()).await.unwrap();

            // Assert
            let back = migrated.get(old.id).await.unwrap().expect("kept");
            assert_eq!((back.stage, back.answer), (Stage::Advised, old.answer.clone()));
            let refused = sqlx::raw_sql(&format!("UPDATE handoffs SET stage = 'lost' WHERE id = '{}'", old.id))
                .execute(&raw)
                .await;
            assert!(refused.is_err(), "the stage constraint is back in place");
            migrated.close().await;
            raw.close().await;
        })
        .await;
    }

    /// The type of each platform-id column of `handoffs`, in column order.
    async fn platform_id_types(raw: &sqlx::PgPool) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = 'handoffs' AND column_name IN ('conversation_id', 'queue_id', 'holder', 'customer') \
             ORDER BY ordinal_position",
        )
        .fetch_all(raw)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn migration_0007_turns_the_platform_id_columns_into_text_and_keeps_every_row() {
        on_postgres(async |db| {
            // Arrange: a record with every platform id set (Genesys UUIDs), held in the uuid
            // columns of the schema before 0007, and 0007 not applied yet
            let uuid_id = |n: u128| handoff_domain::OpaqueId::parse(&Uuid::from_u128(n).to_string()).unwrap();
            let conversation = ConversationId::from_opaque(uuid_id(0xa1b2_c3d4_e5f6_4890_abcd_ef12_3456_7890));
            let request = HandoffRequest::from_json(
                &json!({
                    "conversationId": conversation.as_str(),
                    "guestInfo": { "id": "guest-0007", "name": "Jane Doe" },
                    "handoffReason": "migration",
                    "participantId": uuid_id(4).as_str(),
                }),
                &OpaqueIds,
            )
            .unwrap();
            let key = HandoffKey::new(conversation, None);
            let Begin::Fresh(mut record) =
                db.ledger.begin(&key, &request, t(0), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap()
            else {
                panic!("expected a fresh record");
            };
            record.queue = Some(QueueId::from_opaque(uuid_id(1)));
            record.handle = Some(handoff_domain::ports::Handle::new(uuid_id(2)));
            record.context_anchor = Some(handoff_domain::ports::ContextAnchor::new(uuid_id(3)));
            record.advance(Stage::ContextWritten, t(1), "context written").unwrap();
            db.ledger.save(&record, None, &[]).await.unwrap();
            let raw = db.raw().await;
            sqlx::raw_sql(
                "ALTER TABLE handoffs ALTER COLUMN conversation_id TYPE uuid USING conversation_id::uuid, \
                 ALTER COLUMN queue_id TYPE uuid USING queue_id::uuid, \
                 ALTER COLUMN holder TYPE uuid USING holder::uuid, \
                 ALTER COLUMN customer TYPE uuid USING customer::uuid; \
                 DELETE FROM _sqlx_migrations WHERE version = 7;",
            )
            .execute(&raw)
            .await
            .unwrap();
            let before = platform_id_types(&raw).await;

            // Act
            let migrated = SqlLedger::connect_with(&db.url, &test_options()).await.unwrap();

            // Assert: text columns, the row read back as it was written, and found by conversation
            let after = platform_id_types(&raw).await;
            assert!(before.iter().all(|(_, t)| t == "uuid"), "arrangement: the old schema {before:?}");
            assert_eq!(after.len(), 4, "{after:?}");
            assert!(after.iter().all(|(_, t)| t == "text"), "{after:?}");
            let back = migrated.get(record.id).await.unwrap().expect("kept");
            assert_eq!(back, record);
            assert_eq!(migrated.find_by_conversation(conversation).await.unwrap(), vec![record.clone()]);
            // A platform id that is not a UUID now fits.
            let (other_key, other_request) = new_key();
            assert!(!other_key.conversation_id.as_str().contains('-'), "the test's platform ids are not UUIDs");
            let other =
                migrated.begin(&other_key, &other_request, t(2), LEASE, REUSE_AFTER, HandoffMode::Transfer).await;
            assert!(matches!(other, Ok(Begin::Fresh(_))), "{other:?}");
            migrated.close().await;
            raw.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn finished_records_are_rolled_up_once_and_reads_roll_them_up() {
        on_postgres(async |db| super::finished_records_are_rolled_up_once_and_reads_roll_them_up(&db.ledger).await)
            .await;
    }

    #[tokio::test]
    async fn outcomes_missing_before_0006_are_filled_in_at_connect() {
        on_postgres(async |db| {
            let raw = db.raw().await;
            super::outcomes_missing_before_0006_are_filled_in_at_connect(&db.url, async |sql: &str| {
                sqlx::raw_sql(sql).execute(&raw).await.unwrap();
            })
            .await;
            raw.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn the_outbox_holds_no_personal_data() {
        on_postgres(async |db| {
            let private = super::a_transfer_with_personal_data(&db.ledger).await;
            let raw = db.raw().await;
            let rows: Vec<String> = sqlx::query_scalar("SELECT event::text FROM outbox").fetch_all(&raw).await.unwrap();
            raw.close().await;
            super::assert_outbox_without(&rows, &private);
        })
        .await;
    }

    #[tokio::test]
    async fn connect_applies_the_migrations_and_reports_the_backend() {
        on_postgres(async |db| {
            assert_eq!(db.ledger.backend_name(), "postgres");
            let raw = db.raw().await;
            let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&raw)
                .await
                .unwrap();
            assert_eq!(applied, migration_files("postgres"));
            raw.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_lease_whose_holders_heartbeat_is_stale_is_taken_over_at_once_by_begin_and_by_the_worker() {
        on_postgres(async |db| {
            // Arrange: a second instance beating every 100 ms holds two records for an hour, then
            // dies without closing (its heartbeat task stops with it).
            let beats_fast =
                handoff_ledger::LedgerOptions { heartbeat_every: Duration::from_millis(100), ..test_options() };
            let dying = SqlLedger::connect_with(&db.url, &beats_fast).await.unwrap();
            let now = Utc::now();
            let hour = Duration::from_secs(3600);
            let (key, request) = new_key();
            let Begin::Fresh(held) =
                dying.begin(&key, &request, now, hour, REUSE_AFTER, HandoffMode::Transfer).await.unwrap()
            else {
                panic!("fresh")
            };
            let (key_b, request_b) = new_key();
            let Begin::Fresh(other) =
                dying.begin(&key_b, &request_b, now, hour, REUSE_AFTER, HandoffMode::Transfer).await.unwrap()
            else {
                panic!("fresh")
            };
            let busy_while_alive =
                db.ledger.begin(&key, &request, Utc::now(), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap();
            let claimed_while_alive = db.ledger.claim_due(Utc::now(), 10, LEASE).await.unwrap();
            drop(dying);

            // Act: poll (bounded) until its three beats have lapsed.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let begun = loop {
                let begun = db
                    .ledger
                    .begin(&key, &request, Utc::now(), LEASE, REUSE_AFTER, HandoffMode::Transfer)
                    .await
                    .unwrap();
                if !matches!(begun, Begin::Busy { .. }) || tokio::time::Instant::now() >= deadline {
                    break begun;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let claimed = db.ledger.claim_due(Utc::now(), 10, LEASE).await.unwrap();

            // Assert
            assert_eq!(busy_while_alive, Begin::Busy { handoff_id: held.id });
            assert!(claimed_while_alive.is_empty(), "{claimed_while_alive:?}");
            assert!(matches!(begun, Begin::Resume(ref r) if r.id == held.id && r.attempts == 2), "{begun:?}");
            assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![other.id]);
        })
        .await;
    }

    #[tokio::test]
    async fn an_instance_registers_beats_and_on_a_clean_close_ends_its_leases_and_deregisters() {
        on_postgres(async |db| {
            // Arrange
            let second = SqlLedger::connect_with(&db.url, &test_options()).await.unwrap();
            let (key, request) = new_key();
            let hour = Duration::from_secs(3600);
            let Begin::Fresh(held) =
                second.begin(&key, &request, Utc::now(), hour, REUSE_AFTER, HandoffMode::Transfer).await.unwrap()
            else {
                panic!("fresh")
            };
            let raw = db.raw().await;
            let instances = || async {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_instances").fetch_one(&raw).await.unwrap();
                n
            };
            let registered = instances().await;

            // Act
            second.close().await;
            let begun =
                db.ledger.begin(&key, &request, Utc::now(), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap();

            // Assert
            assert_eq!(registered, 2, "both instances are registered");
            assert_eq!(instances().await, 1, "the closed one deregistered");
            assert!(matches!(begun, Begin::Resume(ref r) if r.id == held.id), "{begun:?}");
            raw.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn connect_to_a_missing_database_names_it() {
        on_postgres(async |_db| {
            // Arrange
            let name = format!("handoff_test_missing_{}", Uuid::new_v4().simple());
            let url = format!("{}/{name}", crate::support::PG_SERVER);
            // Act
            let err = SqlLedger::connect_with(&url, &test_options()).await.unwrap_err();
            // Assert
            let message = err.to_string();
            assert!(matches!(err, LedgerSetupError::ConnectPostgres { .. }), "{message}");
            assert!(message.contains(&name), "{message}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_row_that_no_longer_validates_is_reported_corrupt() {
        on_postgres(async |db| {
            let raw = db.raw().await;
            super::a_row_that_no_longer_validates_is_reported_corrupt(&db.ledger, async |sql: &str| {
                sqlx::raw_sql(sql).execute(&raw).await.unwrap();
            })
            .await;
            raw.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_save_whose_outbox_insert_fails_writes_nothing() {
        on_postgres(async |db| {
            let raw = db.raw().await;
            super::a_save_whose_outbox_insert_fails_writes_nothing(&db.ledger, async || {
                sqlx::raw_sql(
                    "CREATE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$; \
                     CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox \
                     FOR EACH ROW EXECUTE FUNCTION refuse_outbox();",
                )
                .execute(&raw)
                .await
                .unwrap();
            })
            .await;
            raw.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn times_are_kept_to_the_microsecond() {
        on_postgres(async |db| super::times_are_kept_to_the_microsecond(&db.ledger).await).await;
    }

    #[tokio::test]
    async fn two_instances_on_one_database_begin_a_key_once() {
        on_postgres(async |db| {
            let second = SqlLedger::connect_with(&db.url, &test_options()).await.unwrap();
            super::two_instances_on_one_database_begin_a_key_once(&db.ledger, &second).await;
            second.close().await;
        })
        .await;
    }
}
