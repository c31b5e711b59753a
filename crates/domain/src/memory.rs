//! `InMemoryLedger`: the reference implementation of [`LedgerPort`] over one mutex.
//!
//! It defines the semantics every durable ledger must match (the ledger crate runs the same
//! contract tests against it), and serves tests, the demo and single throwaway runs. Nothing
//! survives the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ids::{ConversationId, HandoffId};
use crate::insights::{HandoffSummary, InsightsFilter, SummaryCursor};
use crate::lifecycle::{AdviceDecision, HandoffKey, HandoffMode, HandoffRecord, Stage, StoredAnswer};
use crate::outcome::OutcomeFacts;
use crate::ports::{Begin, HandoffEvent, InsightsPort, LedgerError, LedgerPort, OutboxEntry, StatRow};
use crate::request::{GuestId, HandoffRequest};

#[derive(Debug)]
struct Slot {
    record: HandoffRecord,
    lease_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct OutboxSlot {
    entry: OutboxEntry,
    due_at: DateTime<Utc>,
    delivered: bool,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<HandoffId, Slot>,
    latest: HashMap<String, HandoffId>,
    outbox: Vec<OutboxSlot>,
    next_outbox_id: i64,
}

/// A [`LedgerPort`] kept in memory.
#[derive(Debug, Default)]
pub struct InMemoryLedger {
    state: Mutex<State>,
}

impl InMemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, LedgerError> {
        self.state.lock().map_err(|_| LedgerError::Unavailable("in-memory ledger lock poisoned".to_owned()))
    }
}

/// What `begin` does with the latest record of a key; shared by every ledger implementation so
/// they cannot drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginDecision {
    /// Start a new record.
    Fresh,
    /// Take the existing record over.
    Resume,
    /// Someone holds it.
    Busy,
    /// Replay its answer.
    Replay,
}

/// Decides `begin` for an existing record (see [`LedgerPort::begin`]).
pub fn decide_begin(
    record: &HandoffRecord,
    lease_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    reuse_after: Duration,
) -> BeginDecision {
    match record.stage {
        Stage::Deferred => BeginDecision::Replay,
        // A finished advice is replayed like a transfer; a deferral advice only until the caller
        // may ask again, so that asking again re-checks capacity.
        Stage::Advised => match &record.answer {
            Some(StoredAnswer::Advised { decision: AdviceDecision::Defer { retry_after }, .. }) => {
                replay_within(record, now, *retry_after)
            }
            _ => replay_within(record, now, reuse_after),
        },
        Stage::Failed => BeginDecision::Fresh,
        // Nobody waited for it any more; a new delivery starts afresh (and finds out why).
        Stage::Abandoned => BeginDecision::Fresh,
        Stage::Transferred => replay_within(record, now, reuse_after),
        Stage::Received | Stage::ContextWritten | Stage::TransferPending => match lease_until {
            Some(until) if until > now => BeginDecision::Busy,
            _ => BeginDecision::Resume,
        },
    }
}

/// Replay a finished record younger than `window`, else start a new one.
fn replay_within(record: &HandoffRecord, now: DateTime<Utc>, window: Duration) -> BeginDecision {
    let age = (now - record.updated_at).to_std().unwrap_or_default();
    if age >= window {
        BeginDecision::Fresh
    } else {
        BeginDecision::Replay
    }
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    crate::lifecycle::later(now, lease)
}

#[async_trait]
impl InsightsPort for InMemoryLedger {
    async fn summaries(
        &self,
        filter: &InsightsFilter,
        after: Option<SummaryCursor>,
        limit: usize,
    ) -> Result<Vec<HandoffSummary>, LedgerError> {
        let state = self.lock()?;
        let mut page: Vec<HandoffSummary> = state
            .records
            .values()
            .map(|slot| HandoffSummary::of(&slot.record))
            .filter(|s| filter.covers(s) && after.is_none_or(|a| s.cursor() > a))
            .collect();
        page.sort_by_key(HandoffSummary::cursor);
        page.truncate(limit);
        Ok(page)
    }
}

#[async_trait]
impl LedgerPort for InMemoryLedger {
    async fn begin(
        &self,
        key: &HandoffKey,
        request: &HandoffRequest,
        now: DateTime<Utc>,
        lease: Duration,
        reuse_after: Duration,
        mode: HandoffMode,
    ) -> Result<Begin, LedgerError> {
        let mut state = self.lock()?;
        let key_text = key.to_string();
        if let Some(id) = state.latest.get(&key_text).copied() {
            if let Some(slot) = state.records.get_mut(&id) {
                match decide_begin(&slot.record, slot.lease_until, now, reuse_after) {
                    BeginDecision::Busy => return Ok(Begin::Busy { handoff_id: id }),
                    BeginDecision::Replay => return Ok(Begin::Replay(slot.record.clone())),
                    BeginDecision::Resume => {
                        slot.lease_until = Some(lease_end(now, lease));
                        slot.record.attempts += 1;
                        slot.record.mark_mode(mode);
                        return Ok(Begin::Resume(slot.record.clone()));
                    }
                    BeginDecision::Fresh => {}
                }
            }
        }
        let record = HandoffRecord::begun(HandoffId::random(), key.clone(), request.clone(), now, mode);
        state.latest.insert(key_text, record.id);
        state.records.insert(record.id, Slot { record: record.clone(), lease_until: Some(lease_end(now, lease)) });
        Ok(Begin::Fresh(record))
    }

    async fn save(
        &self,
        record: &HandoffRecord,
        hold_until: Option<DateTime<Utc>>,
        events: &[HandoffEvent],
    ) -> Result<(), LedgerError> {
        let mut state = self.lock()?;
        if state.records.get(&record.id).is_some_and(|slot| slot.record.attempts != record.attempts) {
            return Err(LedgerError::LeaseLost);
        }
        let mut stored = record.clone();
        if let Some(slot) = state.records.get(&record.id) {
            // A save never rewrites the request (as in the SQL ledgers), so data erased while the
            // caller held the record does not come back.
            stored.request = slot.record.request.clone();
        }
        state.records.insert(record.id, Slot { record: stored, lease_until: hold_until });
        for event in events {
            state.next_outbox_id += 1;
            let id = state.next_outbox_id;
            state.outbox.push(OutboxSlot {
                entry: OutboxEntry { id, event: event.clone(), attempts: 0 },
                due_at: record.updated_at,
                delivered: false,
                last_error: None,
            });
        }
        Ok(())
    }

    async fn get(&self, id: HandoffId) -> Result<Option<HandoffRecord>, LedgerError> {
        Ok(self.lock()?.records.get(&id).map(|s| s.record.clone()))
    }

    async fn find_by_conversation(&self, conversation: ConversationId) -> Result<Vec<HandoffRecord>, LedgerError> {
        let state = self.lock()?;
        let mut found: Vec<HandoffRecord> = state
            .records
            .values()
            .filter(|s| s.record.key.conversation_id == conversation)
            .map(|s| s.record.clone())
            .collect();
        // Newest first, like the SQL ledgers (`ORDER BY created_at DESC, id DESC`).
        found.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        Ok(found)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HandoffRecord>, LedgerError> {
        let mut state = self.lock()?;
        let mut due: Vec<(DateTime<Utc>, HandoffId)> = state
            .records
            .values()
            .filter(|s| match s.record.stage {
                // A deferral due for a capacity check, an advice due for a confirmation read.
                Stage::Deferred | Stage::Advised => {
                    s.record.next_check_at.is_some_and(|t| t <= now) && s.lease_until.is_none_or(|l| l <= now)
                }
                // A lease that lapsed (a crashed holder), or a record released after a retryable
                // error whose caller did not come back by `next_check_at` (see
                // `ServiceSettings::resume_after`).
                Stage::Received | Stage::ContextWritten | Stage::TransferPending => match s.lease_until {
                    Some(l) => l <= now,
                    None => s.record.next_check_at.is_some_and(|t| t <= now),
                },
                Stage::Transferred | Stage::Failed | Stage::Abandoned => false,
            })
            .map(|s| (s.record.due_at(), s.record.id))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, id) in due {
            if let Some(slot) = state.records.get_mut(&id) {
                slot.lease_until = Some(lease_end(now, lease));
                slot.record.attempts += 1;
                claimed.push(slot.record.clone());
            }
        }
        Ok(claimed)
    }

    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, LedgerError> {
        let mut state = self.lock()?;
        let mut claimed = Vec::new();
        for slot in state.outbox.iter_mut().filter(|s| !s.delivered && s.due_at <= now).take(limit) {
            slot.due_at = lease_end(now, lease);
            slot.entry.attempts += 1;
            claimed.push(slot.entry.clone());
        }
        Ok(claimed)
    }

    async fn finish_outbox(
        &self,
        id: i64,
        retry_at: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        let mut state = self.lock()?;
        if let Some(slot) = state.outbox.iter_mut().find(|s| s.entry.id == id) {
            match retry_at {
                None => slot.delivered = true,
                Some(at) => slot.due_at = at,
            }
            slot.last_error = error;
        }
        state.outbox.retain(|s| !s.delivered);
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<u64, LedgerError> {
        Ok(self.lock()?.outbox.iter().filter(|s| !s.delivered).count() as u64)
    }

    async fn stats(&self, since: DateTime<Utc>) -> Result<Vec<StatRow>, LedgerError> {
        let state = self.lock()?;
        let mut counts: HashMap<(String, Option<crate::ids::QueueId>, Stage), u64> = HashMap::new();
        for slot in state.records.values().filter(|s| s.record.created_at >= since) {
            let r = &slot.record;
            *counts.entry((r.reason().as_str().to_owned(), r.queue, r.stage)).or_default() += 1;
        }
        let mut rows: Vec<StatRow> = counts
            .into_iter()
            .map(|((reason, queue_id, outcome), count)| StatRow { reason, queue_id, outcome, count })
            .collect();
        rows.sort();
        Ok(rows)
    }

    async fn outcomes(&self, since: DateTime<Utc>) -> Result<Vec<OutcomeFacts>, LedgerError> {
        let state = self.lock()?;
        Ok(state
            .records
            .values()
            .filter(|s| s.record.created_at >= since)
            .map(|s| OutcomeFacts::of(&s.record))
            .collect())
    }

    async fn erase_guest(&self, guest: &GuestId) -> Result<u64, LedgerError> {
        let mut state = self.lock()?;
        let mut erased = 0;
        for slot in state.records.values_mut() {
            let request = &slot.record.request;
            if request.guest().id() == guest.as_str() && request.has_personal_data() {
                slot.record.request = request.without_personal_data();
                erased += 1;
            }
        }
        Ok(erased)
    }

    async fn purge_personal_data(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, LedgerError> {
        let mut state = self.lock()?;
        let mut purged = 0;
        for slot in state.records.values_mut() {
            if purged as usize >= limit {
                break;
            }
            let record = &mut slot.record;
            if record.stage.is_terminal() && record.updated_at < before && record.request.has_personal_data() {
                record.request = record.request.without_personal_data();
                purged += 1;
            }
        }
        Ok(purged)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        self.lock().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::QueueId;
    use crate::request::IdempotencyKey;
    use crate::testkit::sample_payload;
    use futures::executor::block_on;

    const LEASE: Duration = Duration::from_secs(30);
    const REUSE: Duration = Duration::from_secs(600);

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000 + secs)
    }

    fn request() -> HandoffRequest {
        HandoffRequest::from_json(&sample_payload(), &crate::ids::OpaqueIds).expect("valid")
    }

    fn key() -> HandoffKey {
        HandoffKey::new(request().conversation_id(), None)
    }

    fn queue() -> QueueId {
        QueueId::parse("00000000-0000-4000-8000-000000000001").expect("valid")
    }

    fn fresh(ledger: &InMemoryLedger, at: DateTime<Utc>) -> HandoffRecord {
        match block_on(ledger.begin(&key(), &request(), at, LEASE, REUSE, HandoffMode::Transfer)).expect("ledger works")
        {
            Begin::Fresh(record) => record,
            other => panic!("expected a fresh record, got {other:?}"),
        }
    }

    fn event(record: &HandoffRecord) -> HandoffEvent {
        HandoffEvent {
            handoff_id: record.id,
            conversation_id: record.request.conversation_id(),
            reason: record.reason().clone(),
            queue_id: queue(),
            at: record.updated_at,
        }
    }

    #[test]
    fn decide_begin_follows_the_stage_lease_and_age_of_the_record() {
        // Arrange
        let mut record = HandoffRecord::received(HandoffId::random(), key(), request(), t(0));
        let cases = [
            (Stage::Received, Some(t(30)), t(10), BeginDecision::Busy),
            (Stage::Received, Some(t(30)), t(30), BeginDecision::Resume),
            (Stage::ContextWritten, None, t(10), BeginDecision::Resume),
            (Stage::TransferPending, Some(t(5)), t(10), BeginDecision::Resume),
            (Stage::Deferred, Some(t(30)), t(10), BeginDecision::Replay),
            (Stage::Failed, None, t(10), BeginDecision::Fresh),
            (Stage::Transferred, None, t(599), BeginDecision::Replay),
            (Stage::Transferred, None, t(600), BeginDecision::Fresh),
        ];
        for (stage, lease_until, now, expected) in cases {
            record.stage = stage;

            // Act
            let decision = decide_begin(&record, lease_until, now, REUSE);

            // Assert
            assert_eq!(decision, expected, "{stage} lease {lease_until:?} at {now}");
        }
    }

    #[test]
    fn a_finished_advice_is_replayed_like_a_transfer_and_a_deferral_advice_only_for_its_retry_after() {
        // Arrange
        let mut record = HandoffRecord::received(HandoffId::random(), key(), request(), t(0));
        record.stage = Stage::Advised;
        let defer = AdviceDecision::Defer { retry_after: Duration::from_secs(15) };
        let cases = [
            (AdviceDecision::Transfer, t(599), BeginDecision::Replay),
            (AdviceDecision::Transfer, t(600), BeginDecision::Fresh),
            (defer, t(14), BeginDecision::Replay),
            (defer, t(15), BeginDecision::Fresh),
        ];
        for (decision, now, expected) in cases {
            record.answer = Some(StoredAnswer::Advised { queue: queue(), decision, confirmation: None });

            // Act
            let decision_made = decide_begin(&record, None, now, REUSE);

            // Assert
            assert_eq!(decision_made, expected, "{decision:?} at {now}");
        }
    }

    #[test]
    fn begin_creates_one_record_and_a_second_caller_is_busy_while_the_lease_holds() {
        // Arrange
        let ledger = InMemoryLedger::new();
        let first = fresh(&ledger, t(0));

        // Act
        let second = block_on(ledger.begin(&key(), &request(), t(1), LEASE, REUSE, HandoffMode::Transfer))
            .expect("ledger works");

        // Assert
        assert_eq!(second, Begin::Busy { handoff_id: first.id });
    }

    #[test]
    fn an_idempotency_key_separates_handoffs_of_one_conversation() {
        // Arrange
        let ledger = InMemoryLedger::new();
        let first = fresh(&ledger, t(0));
        let other_key = HandoffKey::new(request().conversation_id(), Some(IdempotencyKey::parse("k2").expect("valid")));

        // Act
        let second = block_on(ledger.begin(&other_key, &request(), t(1), LEASE, REUSE, HandoffMode::Transfer))
            .expect("ledger works");

        // Assert
        assert!(matches!(second, Begin::Fresh(r) if r.id != first.id));
    }

    #[test]
    fn a_released_unfinished_record_is_resumed_with_one_more_attempt() {
        // Arrange
        let ledger = InMemoryLedger::new();
        let record = fresh(&ledger, t(0));
        block_on(ledger.save(&record, None, &[])).expect("saved");

        // Act
        let again = block_on(ledger.begin(&key(), &request(), t(1), LEASE, REUSE, HandoffMode::Transfer))
            .expect("ledger works");

        // Assert
        assert!(matches!(again, Begin::Resume(r) if r.id == record.id && r.attempts == 2));
    }

    #[test]
    fn a_transferred_record_is_replayed_until_it_is_old_enough_to_reuse() {
        // Arrange
        let ledger = InMemoryLedger::new();
        let mut record = fresh(&ledger, t(0));
        record.advance(Stage::TransferPending, t(1), "transferring").expect("allowed");
        record.advance(Stage::Transferred, t(1), "transferred").expect("allowed");
        block_on(ledger.save(&record, None, &[])).expect("saved");

        // Act
        let soon = block_on(ledger.begin(&key(), &request(), t(2), LEASE, REUSE, HandoffMode::Transfer))
            .expect("ledger works");
        let later = block_on(ledger.begin(&key(), &request(), t(601), LEASE, REUSE, HandoffMode::Transfer))
            .expect("ledger works");

        // Assert
        assert!(matches!(soon, Begin::Replay(r) if r.id == record.id));
        assert!(matches!(later, Begin::Fresh(r) if r.id != record.id));
        let all = block_on(ledger.find_by_conversation(request().conversation_id())).expect("ledger works");
        assert_eq!(all.len(), 2);
        assert!(all[0].created_at > all[1].created_at, "newest first");
    }

    #[test]
    fn claim_due_takes_due_deferred_records_and_expired_leases_only() {
        // Arrange
        let ledger = InMemoryLedger::new();
        let mut deferred = fresh(&ledger, t(0));
        deferred.advance(Stage::Deferred, t(0), "deferred").expect("allowed");
        deferred.next_check_at = Some(t(15));
        block_on(ledger.save(&deferred, None, &[])).expect("saved");
        let crashed_key =
            HandoffKey::new(request().conversation_id(), Some(IdempotencyKey::parse("crash").expect("ok")));
        let Begin::Fresh(crashed) =
            block_on(ledger.begin(&crashed_key, &request(), t(0), LEASE, REUSE, HandoffMode::Transfer)).expect("ok")
        else {
            panic!("expected a fresh record");
        };

        // Act
        let early = block_on(ledger.claim_due(t(10), 10, LEASE)).expect("ledger works");
        let due = block_on(ledger.claim_due(t(31), 10, LEASE)).expect("ledger works");
        let again = block_on(ledger.claim_due(t(32), 10, LEASE)).expect("ledger works");

        // Assert
        assert!(early.is_empty(), "{early:?}");
        let ids: Vec<HandoffId> = due.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![crashed.id, deferred.id], "oldest due first");
        assert!(again.is_empty(), "claimed records are leased");
    }

    #[test]
    fn outbox_entries_are_claimed_rescheduled_and_finished() {
        // Arrange
        let ledger = InMemoryLedger::new();
        let record = fresh(&ledger, t(0));
        block_on(ledger.save(&record, None, &[event(&record)])).expect("saved");

        // Act + Assert
        let claimed = block_on(ledger.claim_outbox(t(0), 10, LEASE)).expect("ledger works");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].attempts, 1);
        assert!(block_on(ledger.claim_outbox(t(1), 10, LEASE)).expect("ok").is_empty(), "leased");
        block_on(ledger.finish_outbox(claimed[0].id, Some(t(5)), Some("boom".to_owned()))).expect("ok");
        assert!(block_on(ledger.claim_outbox(t(4), 10, LEASE)).expect("ok").is_empty(), "not due yet");
        let retried = block_on(ledger.claim_outbox(t(5), 10, LEASE)).expect("ok");
        assert_eq!(retried.len(), 1);
        assert_eq!(retried[0].attempts, 2);
        block_on(ledger.finish_outbox(retried[0].id, None, None)).expect("ok");
        assert_eq!(block_on(ledger.outbox_backlog()).expect("ok"), 0);
    }

    #[test]
    fn stats_count_records_by_reason_queue_and_stage() {
        // Arrange
        let ledger = InMemoryLedger::new();
        let mut record = fresh(&ledger, t(0));
        record.queue = Some(queue());
        record.advance(Stage::Failed, t(1), "gone").expect("allowed");
        block_on(ledger.save(&record, None, &[])).expect("saved");

        // Act
        let rows = block_on(ledger.stats(t(0))).expect("ledger works");
        let none = block_on(ledger.stats(t(1))).expect("ledger works");

        // Assert
        assert_eq!(
            rows,
            vec![StatRow {
                reason: "complex_billing_dispute".to_owned(),
                queue_id: Some(queue()),
                outcome: Stage::Failed,
                count: 1
            }]
        );
        assert!(none.is_empty());
        assert_eq!(block_on(ledger.ping()), Ok(()));
        assert_eq!(block_on(ledger.get(record.id)).expect("ok").map(|r| r.stage), Some(Stage::Failed));
    }
}
