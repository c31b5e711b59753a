//! The ledger contract, written once against `&dyn LedgerPort` and run on `InMemoryLedger` (the
//! reference), SQLite and PostgreSQL, so the three provably agree. Each case starts from an empty
//! ledger.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::join_all;
use handoff_domain::lifecycle::HistoryEntry;
use handoff_domain::ports::{Begin, HandoffEvent, LedgerError, LedgerPort, StatRow};
use handoff_domain::{
    AdviceDecision, Confirmation, ConversationId, FailureCause, GuestId, HandoffId, HandoffKey, HandoffMode,
    HandoffReason, HandoffRecord, HandoffRequest, IdempotencyKey, OpaqueIds, Outcome, ParticipantId, QueueId, Stage,
    StoredAnswer, Unconfirmed,
};
use serde_json::json;
use uuid::Uuid;

/// Generates one test per case and backend: `contract::{in_memory,sqlite,postgres}::<case>`.
macro_rules! contract_suite {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&handoff_domain::InMemoryLedger::new()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::support::on_sqlite(async |db| super::$case(&db.ledger).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::support::on_postgres(async |db| super::$case(&db.ledger).await).await;
                }
            )*
        }
    };
}

contract_suite!(
    begin_creates_a_fresh_record_that_get_returns,
    begin_of_a_leased_unfinished_record_is_busy,
    begin_after_the_lease_expired_resumes_with_one_more_attempt,
    begin_after_a_released_stop_resumes_at_once,
    begin_of_a_deferred_record_replays_it,
    begin_of_a_transferred_record_replays_until_reuse_after_then_starts_fresh,
    begin_after_a_failure_starts_a_fresh_record,
    keys_with_different_idempotency_keys_are_separate_handoffs,
    save_keeps_the_lease_unless_it_releases_it,
    a_save_by_a_holder_who_lost_the_record_is_refused,
    save_with_events_puts_them_in_the_outbox_with_the_record,
    claim_due_takes_due_deferrals_and_crashed_work_only,
    claim_due_honours_the_limit_in_due_order,
    concurrent_claims_never_hand_out_a_record_twice,
    claim_outbox_leases_entries_until_they_are_finished,
    claim_outbox_honours_the_limit_in_id_order,
    finish_outbox_of_an_unknown_or_delivered_entry_changes_nothing,
    stats_count_records_since_a_time_by_reason_queue_and_stage,
    find_by_conversation_lists_records_newest_first,
    a_record_round_trips_every_field,
    fifty_concurrent_begins_of_one_key_yield_exactly_one_fresh,
    fifty_concurrent_begins_of_an_expired_lease_yield_exactly_one_resume,
    fifty_concurrent_begins_after_a_failure_yield_exactly_one_fresh,
    get_of_an_unknown_id_is_none_and_ping_answers,
    claim_due_takes_a_released_record_once_its_caller_had_time_to_come_back,
    an_abandoned_record_is_terminal_counted_and_lets_a_new_record_start,
    begin_in_advise_mode_writes_the_advisory_mark_with_the_new_record,
    begin_in_advise_mode_marks_a_resumed_received_record_but_no_other,
    a_crash_right_after_an_advisory_begin_leaves_a_claimable_record_that_keeps_its_mark,
    begin_of_an_advised_record_replays_it_a_defer_advice_only_for_its_retry_after,
    claim_due_takes_advised_records_due_for_a_confirmation_read,
    outcomes_report_the_facts_of_records_created_since_a_time,
    erase_guest_removes_the_guests_name_email_and_context_from_every_record_of_theirs_only,
    a_save_after_an_erasure_does_not_bring_the_personal_data_back,
    purge_removes_personal_data_from_finished_records_older_than_the_cutoff_and_keeps_the_stats,
    purge_honours_its_limit,
);

const LEASE: Duration = Duration::from_secs(30);
const REUSE_AFTER: Duration = Duration::from_secs(600);

/// `secs` seconds after a fixed instant.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn conversation() -> ConversationId {
    crate::support::platform_id::<ConversationId>("conv")
}

fn queue(n: u8) -> QueueId {
    QueueId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}")).unwrap()
}

fn request(conversation: ConversationId, reason: &str) -> HandoffRequest {
    HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": "guest-1" },
            "handoffReason": reason,
        }),
        &OpaqueIds,
    )
    .unwrap()
}

fn key(conversation: ConversationId) -> HandoffKey {
    HandoffKey::new(conversation, None)
}

async fn begin_at(
    ledger: &dyn LedgerPort,
    key: &HandoffKey,
    reason: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Begin {
    ledger
        .begin(key, &request(key.conversation_id, reason), now, lease, REUSE_AFTER, HandoffMode::Transfer)
        .await
        .unwrap()
}

/// A new record for a new conversation, created at `now` and leased for `lease`.
async fn fresh(ledger: &dyn LedgerPort, reason: &str, now: DateTime<Utc>, lease: Duration) -> HandoffRecord {
    fresh_for(ledger, &key(conversation()), reason, now, lease).await
}

async fn fresh_for(
    ledger: &dyn LedgerPort,
    key: &HandoffKey,
    reason: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> HandoffRecord {
    match begin_at(ledger, key, reason, now, lease).await {
        Begin::Fresh(record) => record,
        other => panic!("expected a fresh record, got {other:?}"),
    }
}

fn defer(record: &mut HandoffRecord, at: DateTime<Utc>, next_check: DateTime<Utc>, to: QueueId) {
    record.advance(Stage::Deferred, at, "no capacity").unwrap();
    record.queue = Some(to);
    record.answer = Some(StoredAnswer::Deferred { queue: to, retry_after: Duration::from_secs(300) });
    record.next_check_at = Some(next_check);
    record.defer_until = Some(at + chrono::Duration::seconds(300));
}

fn transfer(record: &mut HandoffRecord, at: DateTime<Utc>, to: QueueId) {
    record.queue = Some(to);
    record.advance(Stage::TransferPending, at, "transfer requested").unwrap();
    record.advance(Stage::Transferred, at, "transfer accepted").unwrap();
    record.answer = Some(StoredAnswer::Transferred { queue: to });
}

fn fail(record: &mut HandoffRecord, at: DateTime<Utc>) {
    record.advance(Stage::Failed, at, "conversation ended").unwrap();
    record.answer = Some(StoredAnswer::Failed {
        status: 422,
        code: "conversation_not_transferable".into(),
        message: "the conversation has ended".into(),
    });
}

fn event(record: &HandoffRecord, n: i64) -> HandoffEvent {
    HandoffEvent {
        handoff_id: record.id,
        conversation_id: record.key.conversation_id,
        reason: HandoffReason::parse(&format!("reason_{n}")).unwrap(),
        queue_id: queue(1),
        at: record.updated_at + chrono::Duration::milliseconds(n),
    }
}

fn ids(records: &[HandoffRecord]) -> Vec<HandoffId> {
    records.iter().map(|r| r.id).collect()
}

pub(crate) async fn begin_creates_a_fresh_record_that_get_returns(ledger: &dyn LedgerPort) {
    // Arrange
    let key = key(conversation());
    // Act
    let record = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    // Assert
    assert_eq!(record.key, key);
    assert_eq!(record.stage, Stage::Received);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.created_at, t(0));
    assert_eq!(record.reason().as_str(), "billing");
    assert_eq!(ledger.get(record.id).await.unwrap(), Some(record));
}

pub(crate) async fn begin_of_a_leased_unfinished_record_is_busy(ledger: &dyn LedgerPort) {
    // Arrange
    let key = key(conversation());
    let record = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    // Act: just before the lease ends
    let again = begin_at(ledger, &key, "billing", t(29), LEASE).await;
    // Assert
    assert_eq!(again, Begin::Busy { handoff_id: record.id });
}

pub(crate) async fn begin_after_the_lease_expired_resumes_with_one_more_attempt(ledger: &dyn LedgerPort) {
    // Arrange
    let key = key(conversation());
    let record = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    // Act: exactly when the lease ends, then once more while the new lease runs
    let resumed = begin_at(ledger, &key, "billing", t(30), LEASE).await;
    let during_new_lease = begin_at(ledger, &key, "billing", t(59), LEASE).await;
    // Assert
    let Begin::Resume(resumed) = resumed else { panic!("expected Resume, got {resumed:?}") };
    assert_eq!(resumed.id, record.id);
    assert_eq!(resumed.attempts, 2);
    assert_eq!(during_new_lease, Begin::Busy { handoff_id: record.id });
    assert_eq!(ledger.get(record.id).await.unwrap().unwrap().attempts, 2);
}

pub(crate) async fn begin_after_a_released_stop_resumes_at_once(ledger: &dyn LedgerPort) {
    // Arrange: the attempt stopped on a retryable error (a 503) and released the record
    let key = key(conversation());
    let mut record = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    record.stalled(t(1), "genesys unavailable");
    ledger.save(&record, None, &[]).await.unwrap();
    // Act: the retry arrives long before the original lease would have ended
    let retry = begin_at(ledger, &key, "billing", t(2), LEASE).await;
    // Assert
    let Begin::Resume(resumed) = retry else { panic!("expected Resume, got {retry:?}") };
    assert_eq!(resumed.id, record.id);
    assert_eq!(resumed.last_error.as_deref(), Some("genesys unavailable"));
    assert_eq!(resumed.attempts, 2);
}

pub(crate) async fn begin_of_a_deferred_record_replays_it(ledger: &dyn LedgerPort) {
    // Arrange
    let key = key(conversation());
    let mut record = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    defer(&mut record, t(1), t(60), queue(1));
    ledger.save(&record, None, &[]).await.unwrap();
    // Act
    let again = begin_at(ledger, &key, "billing", t(5), LEASE).await;
    // Assert
    assert_eq!(again, Begin::Replay(record));
}

pub(crate) async fn begin_of_a_transferred_record_replays_until_reuse_after_then_starts_fresh(ledger: &dyn LedgerPort) {
    // Arrange
    let conversation = conversation();
    let key = key(conversation);
    let mut first = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    transfer(&mut first, t(5), queue(1));
    ledger.save(&first, None, &[]).await.unwrap();
    // Act
    let before = begin_at(ledger, &key, "billing", t(5 + 599), LEASE).await;
    let after = begin_at(ledger, &key, "billing", t(5 + 600), LEASE).await;
    let third = begin_at(ledger, &key, "billing", t(5 + 601), LEASE).await;
    // Assert
    assert_eq!(before, Begin::Replay(first.clone()));
    let Begin::Fresh(second) = after else { panic!("expected Fresh, got {after:?}") };
    assert_ne!(second.id, first.id);
    assert_eq!(second.attempts, 1);
    assert_eq!(third, Begin::Busy { handoff_id: second.id }, "the key now points at the new record");
    assert_eq!(ids(&ledger.find_by_conversation(conversation).await.unwrap()), vec![second.id, first.id]);
}

pub(crate) async fn begin_after_a_failure_starts_a_fresh_record(ledger: &dyn LedgerPort) {
    // Arrange
    let key = key(conversation());
    let mut failed = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    fail(&mut failed, t(1));
    ledger.save(&failed, None, &[]).await.unwrap();
    // Act
    let again = begin_at(ledger, &key, "billing", t(2), LEASE).await;
    // Assert
    let Begin::Fresh(second) = again else { panic!("expected Fresh, got {again:?}") };
    assert_ne!(second.id, failed.id);
    assert_eq!(ledger.get(failed.id).await.unwrap(), Some(failed), "the failed record is kept");
}

pub(crate) async fn keys_with_different_idempotency_keys_are_separate_handoffs(ledger: &dyn LedgerPort) {
    // Arrange
    let conversation = conversation();
    let plain = HandoffKey::new(conversation, None);
    let keyed = HandoffKey::new(conversation, Some(IdempotencyKey::parse("delivery-2").unwrap()));
    // Act
    let a = begin_at(ledger, &plain, "billing", t(0), LEASE).await;
    let b = begin_at(ledger, &keyed, "billing", t(0), LEASE).await;
    // Assert
    let (Begin::Fresh(a), Begin::Fresh(b)) = (a, b) else { panic!("both keys should start fresh") };
    assert_ne!(a.id, b.id);
    assert_eq!(b.key, keyed);
}

pub(crate) async fn a_save_by_a_holder_who_lost_the_record_is_refused(ledger: &dyn LedgerPort) {
    // Arrange: the first holder's lease expires and someone resumes the record
    let key = key(conversation());
    let mut stale = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    let Begin::Resume(current) = begin_at(ledger, &key, "billing", t(31), LEASE).await else {
        panic!("expected the expired record to be resumed")
    };
    stale.queue = Some(queue(1));
    stale.advance(Stage::TransferPending, t(32), "late transfer").unwrap();
    // Act: with no event, one (a `Transferred` save) and two
    let events = [event(&stale, 1), event(&stale, 2)];
    let saved = [
        ledger.save(&stale, None, &[]).await,
        ledger.save(&stale, None, &events[..1]).await,
        ledger.save(&stale, None, &events).await,
    ];
    // Assert: refused, nothing reached the outbox, and the stored record is the resumer's
    assert_eq!(saved, [Err(LedgerError::LeaseLost), Err(LedgerError::LeaseLost), Err(LedgerError::LeaseLost)]);
    assert_eq!(ledger.outbox_backlog().await.unwrap(), 0, "a refused save queued an event");
    assert_eq!(ledger.get(current.id).await.unwrap(), Some(current.clone()));
    assert_eq!(begin_at(ledger, &key, "billing", t(33), LEASE).await, Begin::Busy { handoff_id: current.id });
    ledger.save(&current, None, &[]).await.unwrap();
}

pub(crate) async fn save_keeps_the_lease_unless_it_releases_it(ledger: &dyn LedgerPort) {
    // Arrange
    let key = key(conversation());
    let mut record = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    record.queue = Some(queue(1));
    record.advance(Stage::ContextWritten, t(1), "context written").unwrap();
    // Act
    ledger.save(&record, Some(t(100)), &[]).await.unwrap();
    let while_kept = begin_at(ledger, &key, "billing", t(2), LEASE).await;
    ledger.save(&record, None, &[]).await.unwrap();
    let after_release = begin_at(ledger, &key, "billing", t(3), LEASE).await;
    // Assert
    assert_eq!(while_kept, Begin::Busy { handoff_id: record.id });
    let Begin::Resume(resumed) = after_release else { panic!("expected Resume, got {after_release:?}") };
    assert_eq!(resumed.stage, Stage::ContextWritten);
    assert_eq!(resumed.queue, Some(queue(1)));
}

pub(crate) async fn save_with_events_puts_them_in_the_outbox_with_the_record(ledger: &dyn LedgerPort) {
    // Arrange
    let mut record = fresh(ledger, "billing", t(0), LEASE).await;
    transfer(&mut record, t(10), queue(1));
    let events = [event(&record, 0)];
    // Act
    ledger.save(&record, None, &events).await.unwrap();
    // Assert
    assert_eq!(ledger.get(record.id).await.unwrap(), Some(record));
    assert_eq!(ledger.outbox_backlog().await.unwrap(), 1);
    let claimed = ledger.claim_outbox(t(10), 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event, events[0]);
    assert_eq!(claimed[0].attempts, 1);
}

pub(crate) async fn claim_due_takes_due_deferrals_and_crashed_work_only(ledger: &dyn LedgerPort) {
    // Arrange (now = t(100))
    let mut deferred_due = fresh(ledger, "a", t(0), LEASE).await;
    defer(&mut deferred_due, t(1), t(50), queue(1));
    ledger.save(&deferred_due, None, &[]).await.unwrap();

    let mut deferred_later = fresh(ledger, "b", t(0), LEASE).await;
    defer(&mut deferred_later, t(1), t(500), queue(1));
    ledger.save(&deferred_later, None, &[]).await.unwrap();

    let mut deferred_leased = fresh(ledger, "c", t(0), Duration::from_secs(1000)).await;
    defer(&mut deferred_leased, t(1), t(50), queue(1));
    ledger.save(&deferred_leased, Some(t(1000)), &[]).await.unwrap();

    let crashed = fresh(ledger, "d", t(0), LEASE).await;
    let working = fresh(ledger, "e", t(90), LEASE).await;

    let mut stopped_503 = fresh(ledger, "f", t(0), LEASE).await;
    stopped_503.stalled(t(1), "genesys unavailable");
    ledger.save(&stopped_503, None, &[]).await.unwrap();

    let mut transferred = fresh(ledger, "g", t(0), LEASE).await;
    transfer(&mut transferred, t(1), queue(1));
    ledger.save(&transferred, None, &[]).await.unwrap();

    let mut failed = fresh(ledger, "h", t(0), LEASE).await;
    fail(&mut failed, t(1));
    ledger.save(&failed, None, &[]).await.unwrap();

    // Act
    let first = ledger.claim_due(t(100), 10, LEASE).await.unwrap();
    let stored_after_claim = ledger.get(crashed.id).await.unwrap();
    let while_leased = ledger.claim_due(t(100), 10, LEASE).await.unwrap();
    let after_lease = ledger.claim_due(t(130), 10, LEASE).await.unwrap();

    // Assert: ordered by when they became due (the crashed one at its last update)
    assert_eq!(ids(&first), vec![crashed.id, deferred_due.id]);
    assert!(first.iter().all(|r| r.attempts == 2), "a claim counts an attempt: {first:?}");
    assert_eq!(stored_after_claim.as_ref(), first.first(), "the claim returns the record as stored");
    assert!(while_leased.is_empty(), "claimed records are leased: {while_leased:?}");
    assert_eq!(ids(&after_lease), vec![crashed.id, deferred_due.id, working.id]);
    assert!(after_lease.iter().all(|r| r.id != deferred_leased.id));
}

pub(crate) async fn claim_due_honours_the_limit_in_due_order(ledger: &dyn LedgerPort) {
    // Arrange: five deferrals due at t(50), t(10), t(40), t(20), t(30)
    let mut by_due = Vec::new();
    for (n, due) in [50, 10, 40, 20, 30].into_iter().enumerate() {
        let mut record = fresh(ledger, &format!("r{n}"), t(0), LEASE).await;
        defer(&mut record, t(1), t(due), queue(1));
        ledger.save(&record, None, &[]).await.unwrap();
        by_due.push((due, record.id));
    }
    by_due.sort();
    let expected: Vec<HandoffId> = by_due.into_iter().map(|(_, id)| id).collect();
    // Act
    let first = ledger.claim_due(t(100), 2, LEASE).await.unwrap();
    let rest = ledger.claim_due(t(100), 10, LEASE).await.unwrap();
    let none = ledger.claim_due(t(100), 0, LEASE).await.unwrap();
    // Assert
    assert_eq!(ids(&first), expected[..2]);
    assert_eq!(ids(&rest), expected[2..]);
    assert!(none.is_empty());
}

pub(crate) async fn concurrent_claims_never_hand_out_a_record_twice(ledger: &dyn LedgerPort) {
    // Arrange: ten crashed records
    let mut all = HashSet::new();
    for n in 0..10 {
        all.insert(fresh(ledger, &format!("r{n}"), t(0), LEASE).await.id);
    }
    // Act: five workers claim at once, three each at most
    let claims = join_all((0..5).map(|_| ledger.claim_due(t(100), 3, LEASE))).await;
    // Assert
    let mut seen = HashSet::new();
    for claim in claims {
        for record in claim.unwrap() {
            assert!(seen.insert(record.id), "{} was claimed twice", record.id);
        }
    }
    assert_eq!(seen, all);
}

pub(crate) async fn claim_outbox_leases_entries_until_they_are_finished(ledger: &dyn LedgerPort) {
    // Arrange: two events saved with a record updated at t(10)
    let mut record = fresh(ledger, "billing", t(0), LEASE).await;
    transfer(&mut record, t(10), queue(1));
    let events = [event(&record, 1), event(&record, 2)];
    ledger.save(&record, None, &events).await.unwrap();
    let lease = Duration::from_secs(60);

    // Act + Assert, step by step
    assert!(ledger.claim_outbox(t(5), 10, lease).await.unwrap().is_empty(), "not due before the save time");

    let first = ledger.claim_outbox(t(10), 10, lease).await.unwrap();
    assert_eq!(first.iter().map(|e| &e.event).collect::<Vec<_>>(), events.iter().collect::<Vec<_>>());
    assert!(first.iter().all(|e| e.attempts == 1));
    assert!(first[0].id < first[1].id);
    let (a, b) = (first[0].id, first[1].id);

    assert!(ledger.claim_outbox(t(69), 10, lease).await.unwrap().is_empty(), "claimed entries are leased");
    assert_eq!(ledger.outbox_backlog().await.unwrap(), 2);

    let second = ledger.claim_outbox(t(70), 10, lease).await.unwrap();
    assert_eq!(second.iter().map(|e| (e.id, e.attempts)).collect::<Vec<_>>(), vec![(a, 2), (b, 2)]);

    ledger.finish_outbox(a, None, None).await.unwrap();
    ledger.finish_outbox(b, Some(t(300)), Some("genesys returned 429".into())).await.unwrap();
    assert_eq!(ledger.outbox_backlog().await.unwrap(), 1);
    assert!(ledger.claim_outbox(t(299), 10, lease).await.unwrap().is_empty(), "rescheduled for t(300)");

    let third = ledger.claim_outbox(t(300), 10, lease).await.unwrap();
    assert_eq!(third.iter().map(|e| (e.id, e.attempts)).collect::<Vec<_>>(), vec![(b, 3)]);
    ledger.finish_outbox(b, None, None).await.unwrap();
    assert_eq!(ledger.outbox_backlog().await.unwrap(), 0);
    assert!(ledger.claim_outbox(t(10_000), 10, lease).await.unwrap().is_empty());
}

pub(crate) async fn claim_outbox_honours_the_limit_in_id_order(ledger: &dyn LedgerPort) {
    // Arrange
    let mut record = fresh(ledger, "billing", t(0), LEASE).await;
    transfer(&mut record, t(10), queue(1));
    let events: Vec<HandoffEvent> = (0..5).map(|n| event(&record, n)).collect();
    ledger.save(&record, None, &events).await.unwrap();
    // Act
    let first = ledger.claim_outbox(t(10), 2, LEASE).await.unwrap();
    let rest = ledger.claim_outbox(t(10), 10, LEASE).await.unwrap();
    // Assert
    assert_eq!(first.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), events[..2]);
    assert_eq!(rest.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), events[2..]);
    assert!(ledger.claim_outbox(t(10), 0, LEASE).await.unwrap().is_empty());
}

pub(crate) async fn finish_outbox_of_an_unknown_or_delivered_entry_changes_nothing(ledger: &dyn LedgerPort) {
    // Arrange
    let mut record = fresh(ledger, "billing", t(0), LEASE).await;
    transfer(&mut record, t(10), queue(1));
    ledger.save(&record, None, &[event(&record, 0)]).await.unwrap();
    let entry = ledger.claim_outbox(t(10), 1, LEASE).await.unwrap().remove(0);
    ledger.finish_outbox(entry.id, None, None).await.unwrap();
    // Act
    ledger.finish_outbox(entry.id + 1_000_000, None, Some("nope".into())).await.unwrap();
    ledger.finish_outbox(entry.id, Some(t(20)), Some("late failure".into())).await.unwrap();
    // Assert
    assert_eq!(ledger.outbox_backlog().await.unwrap(), 0);
    assert!(ledger.claim_outbox(t(1000), 10, LEASE).await.unwrap().is_empty());
}

pub(crate) async fn stats_count_records_since_a_time_by_reason_queue_and_stage(ledger: &dyn LedgerPort) {
    // Arrange
    let mut old = fresh(ledger, "billing", t(0), LEASE).await;
    transfer(&mut old, t(1), queue(1));
    ledger.save(&old, None, &[]).await.unwrap();
    for n in 0..2 {
        let mut r = fresh(ledger, "billing", t(100 + n), LEASE).await;
        transfer(&mut r, t(110), queue(1));
        ledger.save(&r, None, &[]).await.unwrap();
    }
    let mut deferred = fresh(ledger, "billing", t(102), LEASE).await;
    defer(&mut deferred, t(110), t(200), queue(2));
    ledger.save(&deferred, None, &[]).await.unwrap();
    let mut failed = fresh(ledger, "tech", t(103), LEASE).await;
    fail(&mut failed, t(110));
    ledger.save(&failed, None, &[]).await.unwrap();
    fresh(ledger, "tech", t(104), LEASE).await;
    // Act
    let stats = ledger.stats(t(100)).await.unwrap();
    // Assert
    let row = |reason: &str, queue_id, outcome, count| StatRow { reason: reason.into(), queue_id, outcome, count };
    assert_eq!(
        stats,
        vec![
            row("billing", Some(queue(1)), Stage::Transferred, 2),
            row("billing", Some(queue(2)), Stage::Deferred, 1),
            row("tech", None, Stage::Received, 1),
            row("tech", None, Stage::Failed, 1),
        ]
    );
    assert!(ledger.stats(t(1000)).await.unwrap().is_empty());
}

pub(crate) async fn find_by_conversation_lists_records_newest_first(ledger: &dyn LedgerPort) {
    // Arrange
    let conversation = conversation();
    let with = |k: &str| HandoffKey::new(conversation, Some(IdempotencyKey::parse(k).unwrap()));
    let oldest = fresh_for(ledger, &key(conversation), "billing", t(0), LEASE).await;
    let newest = fresh_for(ledger, &with("k2"), "billing", t(20), LEASE).await;
    let middle = fresh_for(ledger, &with("k1"), "billing", t(10), LEASE).await;
    let other = fresh(ledger, "billing", t(30), LEASE).await;
    // Act
    let found = ledger.find_by_conversation(conversation).await.unwrap();
    // Assert
    assert_eq!(ids(&found), vec![newest.id, middle.id, oldest.id]);
    assert_eq!(found[2], oldest);
    assert_eq!(ids(&ledger.find_by_conversation(other.key.conversation_id).await.unwrap()), vec![other.id]);
    assert!(ledger.find_by_conversation(self::conversation()).await.unwrap().is_empty());
}

pub(crate) async fn a_record_round_trips_every_field(ledger: &dyn LedgerPort) {
    let answers = [
        StoredAnswer::Transferred { queue: queue(7) },
        StoredAnswer::Deferred { queue: queue(7), retry_after: Duration::new(300, 5) },
        StoredAnswer::Failed { status: 502, code: "upstream_rejected".into(), message: "queue \"x\" unknown".into() },
        StoredAnswer::Advising,
        StoredAnswer::Advised { queue: queue(7), decision: AdviceDecision::Transfer, confirmation: None },
        StoredAnswer::Advised {
            queue: queue(7),
            decision: AdviceDecision::Transfer,
            confirmation: Some(Confirmation::Confirmed { queue: queue(8), after: Duration::new(35, 9) }),
        },
        StoredAnswer::Advised {
            queue: queue(7),
            decision: AdviceDecision::Transfer,
            confirmation: Some(Confirmation::Unconfirmed { why: Unconfirmed::Ended }),
        },
        StoredAnswer::Advised {
            queue: queue(7),
            decision: AdviceDecision::Defer { retry_after: Duration::new(30, 7) },
            confirmation: None,
        },
    ];
    for (n, answer) in answers.into_iter().enumerate() {
        // Arrange: every field set, times with microseconds, text with quotes and non-ASCII
        let at = |secs: i64| t(secs) + chrono::Duration::microseconds(123_456);
        let conversation = conversation();
        let request = HandoffRequest::from_json(&json!({
            // Case folding is the platform's (GenesysIds); the ledger keeps ids as they are.
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": "guest-8842-xyz", "name": "Zoë \"Jane\" Doe", "email": "jane.doe@example.com" },
            "handoffReason": "complex_billing_dispute",
            "customContext": { "attempted_resolution": "refund_policy_explained", "sentiment_score": 0.32, "vip": true },
            "queueId": queue(7).to_string(),
            "participantId": Uuid::new_v4().to_string(),
        }), &OpaqueIds)
        .unwrap();
        let key = HandoffKey::new(conversation, Some(IdempotencyKey::parse(&format!("retry#{n}")).unwrap()));
        let Begin::Fresh(mut record) =
            ledger.begin(&key, &request, at(0), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap()
        else {
            panic!("expected a fresh record")
        };
        record.queue = Some(queue(7));
        record.holder = Some(crate::support::platform_id::<ParticipantId>("participant"));
        record.customer = Some(crate::support::platform_id::<ParticipantId>("participant"));
        record.advance(Stage::ContextWritten, at(1), "context written: 9 attributes").unwrap();
        record.advance(Stage::TransferPending, at(2), "transfer → queue").unwrap();
        record.stalled(at(3), "outcome unknown: timeout");
        record.answer = Some(answer);
        record.next_check_at = Some(at(60));
        record.defer_until = Some(at(300));
        record.add_correlation_id(Some("corr-1"));
        record.add_correlation_id(Some("corr-2"));
        record.history.push(HistoryEntry {
            at: at(4),
            stage: Stage::TransferPending,
            note: "ünïcödé \"quoted\"".into(),
        });
        // Act
        ledger.save(&record, Some(at(30)), &[]).await.unwrap();
        let back = ledger.get(record.id).await.unwrap();
        // Assert
        assert_eq!(back.as_ref(), Some(&record));
        assert_eq!(ledger.find_by_conversation(conversation).await.unwrap(), vec![record]);
    }
}

pub(crate) async fn fifty_concurrent_begins_of_one_key_yield_exactly_one_fresh(ledger: &dyn LedgerPort) {
    // Arrange
    let key = key(conversation());
    let request = request(key.conversation_id, "billing");
    // Act
    let results =
        join_all((0..50).map(|_| ledger.begin(&key, &request, t(0), LEASE, REUSE_AFTER, HandoffMode::Transfer))).await;
    // Assert
    let results: Vec<Begin> = results.into_iter().map(Result::unwrap).collect();
    let fresh: Vec<&HandoffRecord> =
        results.iter().filter_map(|b| if let Begin::Fresh(r) = b { Some(r) } else { None }).collect();
    assert_eq!(fresh.len(), 1, "{results:?}");
    let id = fresh[0].id;
    let busy = results.iter().filter(|b| **b == Begin::Busy { handoff_id: id }).count();
    assert_eq!(busy, 49, "{results:?}");
    assert_eq!(ledger.find_by_conversation(key.conversation_id).await.unwrap().len(), 1);
}

pub(crate) async fn fifty_concurrent_begins_of_an_expired_lease_yield_exactly_one_resume(ledger: &dyn LedgerPort) {
    // Arrange: a record whose holder crashed (its lease ended at t(30))
    let key = key(conversation());
    let record = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    let request = record.request.clone();
    // Act
    let results =
        join_all((0..50).map(|_| ledger.begin(&key, &request, t(100), LEASE, REUSE_AFTER, HandoffMode::Transfer)))
            .await;
    // Assert
    let results: Vec<Begin> = results.into_iter().map(Result::unwrap).collect();
    let resumed = results.iter().filter(|b| matches!(b, Begin::Resume(r) if r.id == record.id)).count();
    let busy = results.iter().filter(|b| **b == Begin::Busy { handoff_id: record.id }).count();
    assert_eq!((resumed, busy), (1, 49), "{results:?}");
    assert_eq!(ledger.get(record.id).await.unwrap().unwrap().attempts, 2);
}

pub(crate) async fn fifty_concurrent_begins_after_a_failure_yield_exactly_one_fresh(ledger: &dyn LedgerPort) {
    // Arrange
    let key = key(conversation());
    let mut failed = fresh_for(ledger, &key, "billing", t(0), LEASE).await;
    fail(&mut failed, t(1));
    ledger.save(&failed, None, &[]).await.unwrap();
    // Act
    let results =
        join_all((0..50).map(|_| ledger.begin(&key, &failed.request, t(2), LEASE, REUSE_AFTER, HandoffMode::Transfer)))
            .await;
    // Assert
    let results: Vec<Begin> = results.into_iter().map(Result::unwrap).collect();
    let fresh: Vec<HandoffId> =
        results.iter().filter_map(|b| if let Begin::Fresh(r) = b { Some(r.id) } else { None }).collect();
    assert_eq!(fresh.len(), 1, "{results:?}");
    let busy = results.iter().filter(|b| **b == Begin::Busy { handoff_id: fresh[0] }).count();
    assert_eq!(busy, 49, "{results:?}");
    assert_eq!(ledger.find_by_conversation(key.conversation_id).await.unwrap().len(), 2);
}

pub(crate) async fn get_of_an_unknown_id_is_none_and_ping_answers(ledger: &dyn LedgerPort) {
    assert_eq!(ledger.get(HandoffId::random()).await.unwrap(), None);
    ledger.ping().await.unwrap();
    assert_eq!(ledger.outbox_backlog().await.unwrap(), 0);
    assert!(ledger.stats(t(0)).await.unwrap().is_empty());
}

pub(crate) async fn claim_due_takes_a_released_record_once_its_caller_had_time_to_come_back(ledger: &dyn LedgerPort) {
    // Arrange: a delivery stopped on a 503 at t(1) and released the record; its caller has until
    // t(121) to come back (`next_check_at`). A second one was released without such a time.
    let mut released = fresh(ledger, "billing", t(0), LEASE).await;
    released.stalled(t(1), "conversation lookup: timeout");
    released.next_check_at = Some(t(121));
    ledger.save(&released, None, &[]).await.unwrap();
    let mut untimed = fresh(ledger, "billing", t(0), LEASE).await;
    untimed.stalled(t(1), "conversation lookup: timeout");
    ledger.save(&untimed, None, &[]).await.unwrap();
    // Act
    let early = ledger.claim_due(t(120), 10, LEASE).await.unwrap();
    let due = ledger.claim_due(t(121), 10, LEASE).await.unwrap();
    let again = ledger.claim_due(t(122), 10, LEASE).await.unwrap();
    // Assert
    assert!(early.is_empty(), "{early:?}");
    assert_eq!(ids(&due), vec![released.id]);
    assert_eq!(due[0].attempts, 2, "a claim counts an attempt");
    assert!(again.is_empty(), "the claim leased it: {again:?}");
    let begun = ledger
        .begin(&released.key, &released.request, t(122), LEASE, REUSE_AFTER, HandoffMode::Transfer)
        .await
        .unwrap();
    assert_eq!(begun, Begin::Busy { handoff_id: released.id }, "the worker holds it now");
}

pub(crate) async fn an_abandoned_record_is_terminal_counted_and_lets_a_new_record_start(ledger: &dyn LedgerPort) {
    // Arrange
    let mut record = fresh(ledger, "billing", t(0), LEASE).await;
    record.queue = Some(queue(1));
    record.advance(Stage::Abandoned, t(1), "the guest has left the conversation").unwrap();
    record.answer = Some(StoredAnswer::Failed {
        status: 422,
        code: "handoff_abandoned".into(),
        message: "the guest has left the conversation".into(),
    });
    // Act
    ledger.save(&record, None, &[]).await.unwrap();
    let back = ledger.get(record.id).await.unwrap();
    let claimed = ledger.claim_due(t(10_000), 10, LEASE).await.unwrap();
    let stats = ledger.stats(t(0)).await.unwrap();
    let begun =
        ledger.begin(&record.key, &record.request, t(2), LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap();
    // Assert
    assert_eq!(back.as_ref().map(|r| r.stage), Some(Stage::Abandoned));
    assert_eq!(back, Some(record.clone()));
    assert!(claimed.is_empty(), "{claimed:?}");
    assert_eq!(
        stats,
        vec![StatRow { reason: "billing".into(), queue_id: Some(queue(1)), outcome: Stage::Abandoned, count: 1 }]
    );
    assert!(matches!(begun, Begin::Fresh(ref r) if r.id != record.id), "{begun:?}");
}

/// An advice given at `at`: `Advised` with the answer for `decision`, confirmation reads from
/// `next_check` (`None`: none).
fn advise(record: &mut HandoffRecord, at: DateTime<Utc>, decision: AdviceDecision, next_check: Option<DateTime<Utc>>) {
    record.queue = Some(queue(1));
    record.advance(Stage::Advised, at, "advised").unwrap();
    record.answer = Some(StoredAnswer::Advised { queue: queue(1), decision, confirmation: None });
    record.next_check_at = next_check;
}

async fn advisory_begin(ledger: &dyn LedgerPort, key: &HandoffKey, now: DateTime<Utc>) -> Begin {
    ledger.begin(key, &request(key.conversation_id, "r"), now, LEASE, REUSE_AFTER, HandoffMode::Advise).await.unwrap()
}

pub(crate) async fn begin_in_advise_mode_writes_the_advisory_mark_with_the_new_record(ledger: &dyn LedgerPort) {
    // Act
    let key = key(conversation());
    let Begin::Fresh(record) = advisory_begin(ledger, &key, t(0)).await else { panic!("expected a fresh record") };

    // Assert: marked in the same write, before the caller saves anything
    assert_eq!(record.answer, Some(StoredAnswer::Advising));
    assert_eq!(ledger.get(record.id).await.unwrap().and_then(|r| r.answer), Some(StoredAnswer::Advising));
    let plain = fresh(ledger, "r", t(0), LEASE).await;
    assert_eq!(plain.answer, None, "a transfer-mode begin carries no mark");
}

pub(crate) async fn begin_in_advise_mode_marks_a_resumed_received_record_but_no_other(ledger: &dyn LedgerPort) {
    // Arrange: a transfer-mode record that stopped in `Received`, and one that stopped later
    let received = fresh(ledger, "r", t(0), LEASE).await;
    ledger.save(&received, None, &[]).await.unwrap();
    let mut written = fresh(ledger, "r", t(0), LEASE).await;
    written.advance(Stage::ContextWritten, t(1), "context written").unwrap();
    ledger.save(&written, None, &[]).await.unwrap();

    // Act
    let resumed = advisory_begin(ledger, &received.key, t(2)).await;
    let later = advisory_begin(ledger, &written.key, t(2)).await;

    // Assert
    let Begin::Resume(resumed) = resumed else { panic!("expected a resume, got {resumed:?}") };
    assert_eq!(resumed.answer, Some(StoredAnswer::Advising));
    assert_eq!(ledger.get(received.id).await.unwrap(), Some(resumed));
    let Begin::Resume(later) = later else { panic!("expected a resume, got {later:?}") };
    assert_eq!(later.answer, None, "a record past `Received` may have transferred: transfer mode finishes it");
    assert_eq!(ledger.get(written.id).await.unwrap().and_then(|r| r.answer), None);
}

pub(crate) async fn a_crash_right_after_an_advisory_begin_leaves_a_claimable_record_that_keeps_its_mark(
    ledger: &dyn LedgerPort,
) {
    // Arrange: an advisory begin, and nothing after it (the instance died)
    let key = key(conversation());
    let Begin::Fresh(record) = advisory_begin(ledger, &key, t(0)).await else { panic!("expected a fresh record") };

    // Act
    let claimed = ledger.claim_due(t(31), 10, LEASE).await.unwrap();

    // Assert: the worker gets it with the mark, so it finishes it instead of transferring it
    assert_eq!(ids(&claimed), vec![record.id]);
    assert_eq!((claimed[0].stage, claimed[0].answer.clone()), (Stage::Received, Some(StoredAnswer::Advising)));
}

pub(crate) async fn begin_of_an_advised_record_replays_it_a_defer_advice_only_for_its_retry_after(
    ledger: &dyn LedgerPort,
) {
    // Arrange
    let mut transfer = fresh(ledger, "r", t(0), LEASE).await;
    advise(&mut transfer, t(1), AdviceDecision::Transfer, Some(t(6)));
    ledger.save(&transfer, None, &[]).await.unwrap();
    let mut wait = fresh(ledger, "r", t(0), LEASE).await;
    advise(&mut wait, t(1), AdviceDecision::Defer { retry_after: Duration::from_secs(15) }, None);
    ledger.save(&wait, None, &[]).await.unwrap();

    // Act + Assert
    assert!(matches!(advisory_begin(ledger, &transfer.key, t(100)).await, Begin::Replay(r) if r.id == transfer.id));
    assert!(matches!(advisory_begin(ledger, &wait.key, t(15)).await, Begin::Replay(r) if r.id == wait.id));
    assert!(matches!(advisory_begin(ledger, &wait.key, t(16)).await, Begin::Fresh(r) if r.id != wait.id));
    assert!(matches!(advisory_begin(ledger, &transfer.key, t(601)).await, Begin::Fresh(r) if r.id != transfer.id));
}

pub(crate) async fn claim_due_takes_advised_records_due_for_a_confirmation_read(ledger: &dyn LedgerPort) {
    // Arrange (now = t(100))
    let mut due = fresh(ledger, "a", t(0), LEASE).await;
    advise(&mut due, t(1), AdviceDecision::Transfer, Some(t(6)));
    ledger.save(&due, None, &[]).await.unwrap();
    let mut later = fresh(ledger, "b", t(0), LEASE).await;
    advise(&mut later, t(1), AdviceDecision::Transfer, Some(t(500)));
    ledger.save(&later, None, &[]).await.unwrap();
    let mut settled = fresh(ledger, "c", t(0), LEASE).await;
    advise(&mut settled, t(1), AdviceDecision::Defer { retry_after: Duration::from_secs(15) }, None);
    ledger.save(&settled, None, &[]).await.unwrap();

    // Act
    let first = ledger.claim_due(t(100), 10, LEASE).await.unwrap();
    let while_leased = ledger.claim_due(t(101), 10, LEASE).await.unwrap();

    // Assert
    assert_eq!(ids(&first), vec![due.id]);
    assert_eq!(first[0].stage, Stage::Advised);
    assert_eq!(first[0].attempts, due.attempts + 1);
    assert!(while_leased.is_empty(), "a claimed confirmation is leased: {while_leased:?}");
}

pub(crate) async fn outcomes_report_the_facts_of_records_created_since_a_time(ledger: &dyn LedgerPort) {
    // Arrange
    let old = fresh(ledger, "old", t(0), LEASE).await;
    ledger.save(&old, None, &[]).await.unwrap();
    let mut transferred = fresh(ledger, "billing", t(10), LEASE).await;
    transfer(&mut transferred, t(14), queue(1));
    ledger.save(&transferred, None, &[]).await.unwrap();
    let mut after_deferral = fresh(ledger, "billing", t(10), LEASE).await;
    defer(&mut after_deferral, t(11), t(20), queue(1));
    transfer(&mut after_deferral, t(40), queue(1));
    ledger.save(&after_deferral, None, &[]).await.unwrap();
    let mut confirmed = fresh(ledger, "billing", t(10), LEASE).await;
    advise(&mut confirmed, t(11), AdviceDecision::Transfer, None);
    confirmed.answer = Some(StoredAnswer::Advised {
        queue: queue(1),
        decision: AdviceDecision::Transfer,
        confirmation: Some(Confirmation::Confirmed { queue: queue(1), after: Duration::from_secs(15) }),
    });
    ledger.save(&confirmed, None, &[]).await.unwrap();
    let mut failed = fresh(ledger, "billing", t(10), LEASE).await;
    failed.queue = Some(queue(1));
    fail(&mut failed, t(11));
    ledger.save(&failed, None, &[]).await.unwrap();

    // Act
    let mut facts = ledger.outcomes(t(5)).await.unwrap();
    facts.sort_by_key(|f| f.outcome());

    // Assert
    let outcomes: Vec<Outcome> = facts.iter().map(|f| f.outcome()).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Transferred,
            Outcome::TransferredAfterDeferral,
            Outcome::Confirmed,
            Outcome::Failed(FailureCause::NotTransferable)
        ]
    );
    let times: Vec<Option<Duration>> = facts.iter().map(|f| f.time_to_queue()).collect();
    assert_eq!(
        times,
        [Some(Duration::from_secs(4)), Some(Duration::from_secs(30)), Some(Duration::from_secs(15)), None]
    );
    assert!(facts.iter().all(|f| f.reason == "billing" && f.queue_id == Some(queue(1))), "{facts:?}");
}

// ---- personal data: erasure and retention ---------------------------------------------------

const NAME: &str = "Jane Doe";
const EMAIL: &str = "jane.doe@example.com";

/// A request of `guest` with a name, an e-mail and a context entry.
fn personal_request(conversation: ConversationId, guest: &str, reason: &str) -> HandoffRequest {
    HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": guest, "name": NAME, "email": EMAIL },
            "handoffReason": reason,
            "customContext": { "account_tier": "gold" },
        }),
        &OpaqueIds,
    )
    .unwrap()
}

/// A fresh record of `guest`, with personal data, created at `now`.
async fn personal(ledger: &dyn LedgerPort, guest: &str, reason: &str, now: DateTime<Utc>) -> HandoffRecord {
    let conversation = conversation();
    let request = personal_request(conversation, guest, reason);
    match ledger.begin(&key(conversation), &request, now, LEASE, REUSE_AFTER, HandoffMode::Transfer).await.unwrap() {
        Begin::Fresh(record) => record,
        other => panic!("expected a fresh record, got {other:?}"),
    }
}

/// Asserts the stored record has no personal data left, and everything else is as it was.
async fn assert_erased(ledger: &dyn LedgerPort, before: &HandoffRecord) {
    let stored = ledger.get(before.id).await.unwrap().expect("the record still exists");
    let request = &stored.request;
    assert_eq!(request.guest().name(), None, "name kept in {}", before.id);
    assert_eq!(request.guest().email(), None, "e-mail kept in {}", before.id);
    assert!(request.context().is_empty(), "context kept in {}", before.id);
    assert_eq!(request.guest().id(), before.request.guest().id());
    assert_eq!(request.reason(), before.request.reason());
    assert_eq!(request.conversation_id(), before.request.conversation_id());
    assert_eq!((stored.stage, stored.queue, &stored.answer), (before.stage, before.queue, &before.answer));
}

async fn assert_intact(ledger: &dyn LedgerPort, id: HandoffId) {
    let stored = ledger.get(id).await.unwrap().expect("the record exists");
    assert_eq!(stored.request.guest().name(), Some(NAME));
    assert_eq!(stored.request.guest().email(), Some(EMAIL));
    assert_eq!(stored.request.context().get("account_tier"), Some("gold"));
}

pub(crate) async fn erase_guest_removes_the_guests_name_email_and_context_from_every_record_of_theirs_only(
    ledger: &dyn LedgerPort,
) {
    // Arrange: two records of the guest (one transferred, one deferred), one of another guest.
    let mut transferred = personal(ledger, "guest-erase", "billing", t(0)).await;
    transfer(&mut transferred, t(1), queue(1));
    ledger.save(&transferred, None, &[]).await.unwrap();
    let mut deferred = personal(ledger, "guest-erase", "billing", t(2)).await;
    defer(&mut deferred, t(3), t(60), queue(2));
    ledger.save(&deferred, None, &[]).await.unwrap();
    let other = personal(ledger, "guest-keep", "billing", t(4)).await;
    let guest = GuestId::parse("guest-erase").unwrap();

    // Act
    let erased = ledger.erase_guest(&guest).await.unwrap();
    let again = ledger.erase_guest(&guest).await.unwrap();
    let unknown = ledger.erase_guest(&GuestId::parse("nobody").unwrap()).await.unwrap();

    // Assert
    assert_eq!(erased, 2);
    assert_eq!(again, 0, "nothing is left to erase");
    assert_eq!(unknown, 0);
    assert_erased(ledger, &transferred).await;
    assert_erased(ledger, &deferred).await;
    assert_intact(ledger, other.id).await;
    let claimed = ledger.claim_due(t(60), 10, LEASE).await.unwrap();
    let claimed_deferred = claimed.iter().find(|r| r.id == deferred.id).expect("the deferred handoff still runs");
    assert_eq!(claimed_deferred.request.guest().name(), None);
}

pub(crate) async fn a_save_after_an_erasure_does_not_bring_the_personal_data_back(ledger: &dyn LedgerPort) {
    // Arrange: a handoff in flight holds its record (with the data) while the guest is erased.
    let mut held = personal(ledger, "guest-in-flight", "billing", t(0)).await;
    assert_eq!(ledger.erase_guest(&GuestId::parse("guest-in-flight").unwrap()).await.unwrap(), 1);

    // Act: the handoff finishes and saves the copy it holds.
    transfer(&mut held, t(1), queue(1));
    ledger.save(&held, None, &[]).await.unwrap();

    // Assert
    assert_erased(ledger, &held).await;
    assert_eq!(ledger.get(held.id).await.unwrap().unwrap().stage, Stage::Transferred);
}

pub(crate) async fn purge_removes_personal_data_from_finished_records_older_than_the_cutoff_and_keeps_the_stats(
    ledger: &dyn LedgerPort,
) {
    // Arrange: finished before the cutoff (transferred, failed), finished after it, and two old
    // records that are not finished (deferred, and in flight).
    let mut old_transferred = personal(ledger, "g1", "billing", t(0)).await;
    transfer(&mut old_transferred, t(10), queue(1));
    ledger.save(&old_transferred, None, &[]).await.unwrap();
    let mut old_failed = personal(ledger, "g2", "tech", t(0)).await;
    fail(&mut old_failed, t(10));
    ledger.save(&old_failed, None, &[]).await.unwrap();
    let mut recent = personal(ledger, "g3", "billing", t(0)).await;
    transfer(&mut recent, t(100), queue(1));
    ledger.save(&recent, None, &[]).await.unwrap();
    let mut deferred = personal(ledger, "g4", "billing", t(0)).await;
    defer(&mut deferred, t(10), t(1000), queue(2));
    ledger.save(&deferred, None, &[]).await.unwrap();
    let in_flight = personal(ledger, "g5", "billing", t(0)).await;
    let stats_before = ledger.stats(t(0)).await.unwrap();

    // Act
    let purged = ledger.purge_personal_data(t(50), 100).await.unwrap();
    let again = ledger.purge_personal_data(t(50), 100).await.unwrap();

    // Assert
    assert_eq!(purged, 2);
    assert_eq!(again, 0);
    assert_erased(ledger, &old_transferred).await;
    assert_erased(ledger, &old_failed).await;
    for id in [recent.id, deferred.id, in_flight.id] {
        assert_intact(ledger, id).await;
    }
    assert_eq!(ledger.stats(t(0)).await.unwrap(), stats_before, "the stats need nothing that was purged");
    let replay = ledger
        .begin(&old_transferred.key, &old_transferred.request, t(20), LEASE, REUSE_AFTER, HandoffMode::Transfer)
        .await
        .unwrap();
    assert!(matches!(replay, Begin::Replay(ref r) if r.id == old_transferred.id), "{replay:?}");
}

pub(crate) async fn purge_honours_its_limit(ledger: &dyn LedgerPort) {
    // Arrange
    let mut all = Vec::new();
    for n in 0..3 {
        let mut r = personal(ledger, &format!("g{n}"), "billing", t(n)).await;
        transfer(&mut r, t(10 + n), queue(1));
        ledger.save(&r, None, &[]).await.unwrap();
        all.push(r);
    }

    // Act
    let first = ledger.purge_personal_data(t(100), 2).await.unwrap();
    let second = ledger.purge_personal_data(t(100), 2).await.unwrap();
    let none = ledger.purge_personal_data(t(100), 0).await.unwrap();

    // Assert
    assert_eq!((first, second, none), (2, 1, 0));
    for r in &all {
        assert_erased(ledger, r).await;
    }
}
