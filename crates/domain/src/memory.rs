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
use crate::lifecycle::{HandoffKey, HandoffRecord, Stage};
use crate::ports::{Begin, HandoffEvent, LedgerError, LedgerPort, OutboxEntry, StatRow};
use crate::request::HandoffRequest;

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
        Stage::Failed => BeginDecision::Fresh,
        Stage::Transferred => {
            let age = (now - record.updated_at).to_std().unwrap_or_default();
            if age >= reuse_after {
                BeginDecision::Fresh
            } else {
                BeginDecision::Replay
            }
        }
        Stage::Received | Stage::ContextWritten | Stage::TransferPending => match lease_until {
            Some(until) if until > now => BeginDecision::Busy,
            _ => BeginDecision::Resume,
        },
    }
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
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
                        return Ok(Begin::Resume(slot.record.clone()));
                    }
                    BeginDecision::Fresh => {}
                }
            }
        }
        let record = HandoffRecord::received(HandoffId::random(), key.clone(), request.clone(), now);
        state.latest.insert(key_text, record.id);
        state.records.insert(record.id, Slot { record: record.clone(), lease_until: Some(lease_end(now, lease)) });
        Ok(Begin::Fresh(record))
    }

    async fn save(&self, record: &HandoffRecord, release: bool, events: &[HandoffEvent]) -> Result<(), LedgerError> {
        let mut state = self.lock()?;
        let lease_until = match state.records.get(&record.id) {
            Some(slot) if !release => slot.lease_until,
            _ => None,
        };
        state.records.insert(record.id, Slot { record: record.clone(), lease_until });
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
        found.sort_by_key(|r| std::cmp::Reverse(r.created_at));
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
                Stage::Deferred => {
                    s.record.next_check_at.is_some_and(|t| t <= now) && s.lease_until.is_none_or(|l| l <= now)
                }
                Stage::Received | Stage::ContextWritten | Stage::TransferPending => {
                    s.lease_until.is_some_and(|l| l <= now)
                }
                Stage::Transferred | Stage::Failed => false,
            })
            .map(|s| (s.record.next_check_at.unwrap_or(s.record.updated_at), s.record.id))
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
        rows.sort_by(|a, b| (&a.reason, a.queue_id, a.outcome).cmp(&(&b.reason, b.queue_id, b.outcome)));
        Ok(rows)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        self.lock().map(|_| ())
    }
}
