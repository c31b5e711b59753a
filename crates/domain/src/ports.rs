//! The ports: what the domain needs from the outside world.
//!
//! Rules every port follows:
//! - traits are `#[async_trait]` and `Send + Sync`, so services hold them as `Arc<dyn Port>`;
//!   with the `mocks` feature (and in this crate's tests) each has a mockall `Mock…` twin;
//! - signatures use domain types only: no HTTP, SQL or Genesys types cross a port;
//! - upstream ports fail with [`PortError`], whose variant is its retry class: callers branch on it
//!   and nothing else (see each method's `# Errors`);
//! - adapters retry inside their own budget; an error that reaches the domain is final for this attempt.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::admission::CapacitySnapshot;
use crate::attributes::AttributeSet;
use crate::ids::{ConversationId, HandoffId, ParticipantId, QueueId};
use crate::insights::{HandoffSummary, Insights, InsightsFilter, SummaryCursor};
use crate::lifecycle::{HandoffKey, HandoffMode, HandoffRecord, Stage};
use crate::outcome::OutcomeFacts;
use crate::request::{GuestId, HandoffReason, HandoffRequest};

/// Why an upstream call failed, classified by what the caller may do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Temporary: 5xx, timeout, connection failure, after the adapter's own retries. For a
    /// transfer it also means the transfer surely did not happen. Retry later.
    #[error("upstream unavailable: {detail}")]
    Transient {
        /// What failed, without upstream bodies or secrets.
        detail: String,
        /// Genesys `inin-correlation-id`, when a response arrived.
        correlation_id: Option<String>,
    },
    /// Throttled (429) past what the adapter's budget could wait. Retry after `retry_after`.
    #[error("upstream rate limit reached")]
    RateLimited {
        /// How long upstream asked us to wait, when it said.
        retry_after: Option<Duration>,
        /// Genesys `inin-correlation-id`.
        correlation_id: Option<String>,
    },
    /// Upstream refused the request (4xx other than 404/408/429). Retrying will not help.
    #[error("upstream rejected the request: {status} {code}")]
    Rejected {
        /// The upstream HTTP status.
        status: u16,
        /// The upstream error code, e.g. `missing.permissions`.
        code: String,
        /// Genesys `inin-correlation-id`.
        correlation_id: Option<String>,
    },
    /// The thing asked about does not exist upstream (404).
    #[error("{what} not found upstream")]
    NotFound {
        /// What was missing (`conversation`, `queue`, `participant`).
        what: String,
        /// Genesys `inin-correlation-id`.
        correlation_id: Option<String>,
    },
    /// The conversation is not in a state that allows the operation: it ended, or the participant
    /// no longer holds it (for Genesys: 400 `conversations.error.transfer.not.connected`, 403
    /// `conversation.error.forbidden.not.active.participant`). The operation did not happen.
    #[error("conversation cannot be handed off: {detail}")]
    InvalidState {
        /// What upstream said, in our words.
        detail: String,
        /// Genesys `inin-correlation-id`.
        correlation_id: Option<String>,
    },
    /// Transfers only: the call may or may not have taken effect (a timeout or a dropped
    /// connection after the request was sent). Read the conversation back before any new attempt.
    #[error("upstream outcome unknown: {detail}")]
    Indeterminate {
        /// What happened.
        detail: String,
        /// Genesys `inin-correlation-id`, if any.
        correlation_id: Option<String>,
    },
}

impl PortError {
    /// The upstream correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            PortError::Transient { correlation_id, .. }
            | PortError::RateLimited { correlation_id, .. }
            | PortError::Rejected { correlation_id, .. }
            | PortError::NotFound { correlation_id, .. }
            | PortError::InvalidState { correlation_id, .. }
            | PortError::Indeterminate { correlation_id, .. } => correlation_id.as_deref(),
        }
    }

    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PortError::Transient { .. } | PortError::RateLimited { .. } | PortError::Indeterminate { .. })
    }
}

/// An upstream call that succeeded, with its correlation id for logs and the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Genesys `inin-correlation-id`.
    pub correlation_id: Option<String>,
}

/// One participant of a conversation, as far as the handoff cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantView {
    /// The participant id.
    pub id: ParticipantId,
    /// Whether this is the customer (Genesys `purpose == "customer"`).
    pub is_customer: bool,
    /// A human agent (Genesys `purpose` `agent` or `user`). Agents are never replaced: a
    /// conversation an agent already handles is not the bot's to hand off.
    pub is_agent: bool,
    /// Connected and not ended.
    pub active: bool,
    /// The queue this participant represents, if it is a queue (ACD) participant.
    pub queue: Option<QueueId>,
}

/// A conversation as located upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSnapshot {
    /// The conversation.
    pub id: ConversationId,
    /// Its participants, in upstream order.
    pub participants: Vec<ParticipantView>,
    /// Queues of transfers upstream reports as issued for it (`recentTransfers`).
    pub transferred_to: Vec<QueueId>,
    /// Genesys `inin-correlation-id` of the lookup.
    pub correlation_id: Option<String>,
    /// The conversation's external tag, when the lookup shows one (`None`: none, or not shown).
    /// Genesys keeps one tag per conversation; its `MessageConversation` (the lookup) does not
    /// carry the tag, the generic `Conversation` does (`externalTag`), so with Genesys this is
    /// `None` unless a future lookup shows it (see `docs/genesys/api-notes.md`).
    pub external_tag: Option<String>,
}

/// The prefix of the external tags this service writes (`bot-handoff:{reason}`).
pub const EXTERNAL_TAG_PREFIX: &str = "bot-handoff:";

impl ConversationSnapshot {
    /// Whether the lookup shows an external tag someone else set (not one of ours): writing
    /// ours would replace it.
    pub fn has_foreign_tag(&self) -> bool {
        self.external_tag.as_deref().is_some_and(|t| !t.trim().is_empty() && !t.starts_with(EXTERNAL_TAG_PREFIX))
    }

    /// The customer participant, if present.
    pub fn customer(&self) -> Option<&ParticipantView> {
        self.participants.iter().find(|p| p.is_customer)
    }

    /// Active participants that may be replaced: neither the customer nor an agent (the bot or
    /// flow participant, or a queue the conversation waits in).
    pub fn holders(&self) -> impl Iterator<Item = &ParticipantView> {
        self.participants.iter().filter(|p| p.active && !p.is_customer && !p.is_agent)
    }

    /// Whether an agent is connected to the conversation.
    pub fn has_agent(&self) -> bool {
        self.participants.iter().any(|p| p.active && p.is_agent)
    }

    /// Whether the conversation is over (no active participant).
    pub fn has_ended(&self) -> bool {
        !self.participants.iter().any(|p| p.active)
    }

    /// Whether the conversation already sits in `queue` (an active queue participant for it, or a
    /// recorded transfer to it).
    pub fn is_in_queue(&self, queue: QueueId) -> bool {
        self.queues().any(|q| q == queue)
    }

    /// The queue the conversation reached, for confirming an advice: the queue of an active queue
    /// participant, else of a recorded transfer, else (once an agent has it) of a queue
    /// participant that already handed it on.
    pub fn reached_queue(&self) -> Option<QueueId> {
        if let Some(queue) = self.queues().next() {
            return Some(queue);
        }
        if self.has_agent() {
            return self.participants.iter().filter(|p| !p.is_customer).find_map(|p| p.queue);
        }
        None
    }

    /// Every queue the conversation sits in: those of active queue participants, then those of
    /// recorded transfers.
    pub fn queues(&self) -> impl Iterator<Item = QueueId> + '_ {
        self.participants
            .iter()
            .filter(|p| p.active && !p.is_customer)
            .filter_map(|p| p.queue)
            .chain(self.transferred_to.iter().copied())
    }
}

/// What was recorded about a handoff for reporting (the external tag, the stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffEvent {
    /// The handoff.
    pub handoff_id: HandoffId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// Why the bot handed off.
    pub reason: HandoffReason,
    /// Where it went.
    pub queue_id: QueueId,
    /// When it was transferred.
    pub at: DateTime<Utc>,
}

/// Live queue capacity.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait QueuePort: Send + Sync {
    /// A capacity snapshot of `queue`; with the message estimated wait when `with_estimated_wait`.
    /// Implementations may share and briefly cache snapshots.
    ///
    /// # Errors
    /// - [`PortError::NotFound`] when the queue does not exist;
    /// - [`PortError::Rejected`] when upstream refuses (e.g. a missing permission);
    /// - [`PortError::RateLimited`] / [`PortError::Transient`] when it could not be read now.
    async fn capacity(&self, queue: QueueId, with_estimated_wait: bool) -> Result<CapacitySnapshot, PortError>;
}

/// Locating, annotating and transferring conversations.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TransferPort: Send + Sync {
    /// Reads the conversation and its participants.
    ///
    /// # Errors
    /// - [`PortError::NotFound`] when upstream does not know the conversation;
    /// - [`PortError::Rejected`], [`PortError::RateLimited`], [`PortError::Transient`] as usual.
    async fn locate(&self, conversation: ConversationId) -> Result<ConversationSnapshot, PortError>;

    /// Merges `attributes` into the participant data of `customer` (idempotent: safe to repeat).
    ///
    /// # Errors
    /// - [`PortError::NotFound`] when the conversation or participant is gone;
    /// - [`PortError::InvalidState`] when the conversation no longer accepts participant data;
    /// - [`PortError::Rejected`], [`PortError::RateLimited`], [`PortError::Transient`] as usual.
    async fn write_context(
        &self,
        conversation: ConversationId,
        customer: ParticipantId,
        attributes: &AttributeSet,
    ) -> Result<Receipt, PortError>;

    /// Replaces `holder` with `queue` (an unattended transfer). Never called with the customer.
    ///
    /// # Errors
    /// - [`PortError::Rejected`] when upstream refuses (unknown queue, holder not connected,
    ///   missing permission); the transfer did not happen;
    /// - [`PortError::NotFound`] when the conversation or participant is gone;
    /// - [`PortError::InvalidState`] when the holder no longer holds it or the conversation ended;
    /// - [`PortError::RateLimited`] / [`PortError::Transient`] only when the transfer surely did
    ///   not happen (a 429, a refused connection);
    /// - [`PortError::Indeterminate`] when it may have happened.
    async fn transfer(
        &self,
        conversation: ConversationId,
        holder: ParticipantId,
        queue: QueueId,
    ) -> Result<Receipt, PortError>;
}

/// Reporting a handoff where contact-center managers look.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AnalyticsPort: Send + Sync {
    /// Records the event (for Genesys: the conversation's external tag `bot-handoff:{reason}`).
    /// Must be idempotent: the outbox may deliver an event more than once after a crash.
    ///
    /// # Errors
    /// Any [`PortError`]; the outbox retries retryable ones with backoff and keeps the others for
    /// an operator, never failing or repeating the transfer.
    async fn record(&self, event: &HandoffEvent) -> Result<Receipt, PortError>;
}

/// The ledger could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The store is unreachable or failed; retry later.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The caller no longer holds the record: its lease expired and another instance (or the
    /// worker) took it over. Nothing was written; the caller must stop working on it.
    #[error("the handoff was taken over by another worker")]
    LeaseLost,
    /// A stored record could not be read back (a bug or a manual edit).
    #[error("ledger record is corrupt: {0}")]
    Corrupt(String),
}

/// What [`LedgerPort::begin`] found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// A new record was created; the caller holds its lease.
    Fresh(HandoffRecord),
    /// An unfinished record was taken over (it stopped on a retryable error); the caller holds its lease.
    Resume(HandoffRecord),
    /// Someone holds the lease right now.
    Busy {
        /// The record being worked on.
        handoff_id: HandoffId,
    },
    /// The record has its answer (transferred, or deferred and owned by the worker): replay it.
    Replay(HandoffRecord),
}

/// A pending analytics delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The entry id (unique in the ledger).
    pub id: i64,
    /// What to deliver.
    pub event: HandoffEvent,
    /// Deliveries tried so far.
    pub attempts: u32,
}

/// One row of `/handoffs/stats`. Rows sort by reason, then queue, then stage in lifecycle order
/// (the order every ledger returns them in).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatRow {
    /// The handoff reason.
    pub reason: String,
    /// The queue chosen, if one was.
    pub queue_id: Option<QueueId>,
    /// The stage the handoffs are in.
    pub outcome: Stage,
    /// How many.
    pub count: u64,
}

/// Durable handoff records: idempotency, deferrals, crash recovery and the analytics outbox.
///
/// Leases make records safe to share between instances: a caller that got a record through
/// [`begin`](Self::begin) or a claim holds it until `lease` elapses or it saves with
/// `hold_until: None`. A lease that expires without a release marks work a crashed instance left.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LedgerPort: Send + Sync {
    /// Finds or creates the record for `key` atomically: exactly one concurrent caller gets
    /// `Fresh`/`Resume`. A transferred record older than `reuse_after`, or a failed one, lets a
    /// new record start; a recent transferred, deferred or advised record is replayed (an advice
    /// to defer only for its `retry_after`). See [`crate::decide_begin`].
    ///
    /// `mode` is the delivery's: a record created (or a `Received` one resumed) for
    /// [`HandoffMode::Advise`] carries the [`crate::StoredAnswer::Advising`] mark in the same
    /// write, so crash recovery never transfers it, whenever the caller stops.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn begin(
        &self,
        key: &HandoffKey,
        request: &HandoffRequest,
        now: DateTime<Utc>,
        lease: Duration,
        reuse_after: Duration,
        mode: HandoffMode,
    ) -> Result<Begin, LedgerError>;

    /// Stores `record` as it is now, in one transaction with `events` added to the outbox, and
    /// sets its lease: `hold_until: Some(t)` keeps (renews) it until `t`, `None` releases it.
    ///
    /// Saves are fenced: a save is refused when the stored record's `attempts` differ from
    /// `record.attempts`, i.e. when someone resumed or claimed the record since the caller got it.
    ///
    /// # Errors
    /// [`LedgerError::LeaseLost`] when fenced off; [`LedgerError::Unavailable`] when the store
    /// cannot be used. Nothing was written in either case.
    async fn save(
        &self,
        record: &HandoffRecord,
        hold_until: Option<DateTime<Utc>>,
        events: &[HandoffEvent],
    ) -> Result<(), LedgerError>;

    /// [`save`](Self::save) with the lease released, for the last write of a transfer, whose
    /// answer does not depend on it: the transfer happened, and if this write is lost the record
    /// stays in `TransferPending` until the worker's read-back completes it (events included).
    ///
    /// Returns once the write is **queued**, and errors are dropped. A ledger that applies this
    /// instance's writes in order (the SQLite writer) returns before the commit, so the answer
    /// does not wait for it; every later operation of this instance on records (a replay's
    /// `begin`, `get`, `find_by_conversation`, the claims) sees the write, while aggregates
    /// (`stats`, `outbox_backlog`) may lag by one commit. The default waits for the save.
    async fn save_detached(&self, record: &HandoffRecord, events: &[HandoffEvent]) {
        let _ = self.save(record, None, events).await;
    }

    /// Finishes the writes already queued (see [`save_detached`](Self::save_detached)) and
    /// releases the store, at shutdown. Operations after it fail with
    /// [`LedgerError::Unavailable`]. The default does nothing.
    async fn close(&self) {}

    /// The record with this id.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn get(&self, id: HandoffId) -> Result<Option<HandoffRecord>, LedgerError>;

    /// Every record of a conversation, newest first.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn find_by_conversation(&self, conversation: ConversationId) -> Result<Vec<HandoffRecord>, LedgerError>;

    /// Claims up to `limit` records that need background work: deferred ones due for a check,
    /// advised ones due for a confirmation read (`next_check_at` set and passed), unfinished
    /// ones whose lease expired while held (a crashed instance, or, on PostgreSQL, a holder whose
    /// heartbeat went stale), and unfinished ones released after a retryable error (no lease)
    /// whose `next_check_at` has come (a 503 whose caller never came back). Leases them for
    /// `lease`.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HandoffRecord>, LedgerError>;

    /// Claims up to `limit` outbox entries due for delivery, leasing them for `lease`.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, LedgerError>;

    /// Marks an outbox entry delivered (`retry_at == None`) or schedules its next attempt.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn finish_outbox(
        &self,
        id: i64,
        retry_at: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), LedgerError>;

    /// Outbox entries not yet delivered.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn outbox_backlog(&self) -> Result<u64, LedgerError>;

    /// Counts of records created since `since`, by reason × queue × stage.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn stats(&self, since: DateTime<Utc>) -> Result<Vec<StatRow>, LedgerError>;

    /// The [`OutcomeFacts`] of every record created since `since` (for `/handoffs/stats`), in no
    /// particular order.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn outcomes(&self, since: DateTime<Utc>) -> Result<Vec<OutcomeFacts>, LedgerError>;

    /// Removes the personal data of `guest` from every record of that guest: the guest's name and
    /// e-mail and the bot's context go ([`HandoffRequest::without_personal_data`]); the guest's
    /// id, reason, queue, stage, times, answer and history stay, so stats and replays still work.
    /// Later saves of those records do not bring the data back (a save never rewrites the
    /// request). A durable ledger also removes the data physically where it can (SQLite:
    /// zeroed pages and a truncated WAL) before it returns.
    ///
    /// Returns how many records held personal data and no longer do (0 for an unknown guest, or
    /// when called again).
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used; nothing was erased then, or all of it.
    async fn erase_guest(&self, guest: &GuestId) -> Result<u64, LedgerError>;

    /// Retention: removes personal data, as [`erase_guest`](Self::erase_guest) does, from at most
    /// `limit` finished records (transferred, failed or another terminal stage) last updated
    /// before `before`. Unfinished and deferred records keep theirs: they still need it.
    ///
    /// Returns how many records it purged; fewer than `limit` means none is left.
    ///
    /// # Errors
    /// [`LedgerError`] when the store cannot be used.
    async fn purge_personal_data(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, LedgerError>;

    /// Whether the store answers.
    ///
    /// # Errors
    /// [`LedgerError`] when it does not.
    async fn ping(&self) -> Result<(), LedgerError>;
}

/// The read model of reports (the insights page, the CSV export, `handoff report`): handoff
/// summaries without personal data, read in `(created_at, handoff_id)` order by keyset pages so
/// that any number of them can be streamed.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait InsightsPort: Send + Sync {
    /// Up to `limit` summaries of the handoffs `filter` covers, in `(created_at, handoff_id)`
    /// order, strictly after `after` when given.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the store cannot be read; [`LedgerError::Corrupt`] when a
    /// stored row cannot be read back.
    async fn summaries(
        &self,
        filter: &InsightsFilter,
        after: Option<SummaryCursor>,
        limit: usize,
    ) -> Result<Vec<HandoffSummary>, LedgerError>;

    /// The figures of the handoffs `filter` covers: equal to folding every summary `filter` covers
    /// into an [`InsightsBuilder`](crate::insights::InsightsBuilder), which is what this default
    /// does ([`collect_insights`](crate::insights::collect_insights)). A store that keeps counts
    /// answers from them instead (the SQL ledger: docs/insights.md).
    ///
    /// # Errors
    /// As [`summaries`](Self::summaries).
    async fn insights(&self, filter: &InsightsFilter) -> Result<Insights, LedgerError> {
        crate::insights::collect_insights(self, filter, crate::insights::SUMMARY_PAGE).await
    }
}

/// The time, as the domain sees it (injected so tests are deterministic).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// How a handoff attempt ended, for telemetry (one log line and the metrics per outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeReport {
    /// The handoff, if a record exists.
    pub handoff_id: Option<HandoffId>,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The reason.
    pub reason: String,
    /// The queue chosen, if any.
    pub queue_id: Option<QueueId>,
    /// `transferred`, `deferred`, `replayed`, `in_progress`, `not_found`, `not_transferable`,
    /// `rejected`, `unavailable`, `invalid`, and for advisory mode `advised_transfer`,
    /// `advised_defer`, `advice_interrupted`, and (background) `confirmed`, `unconfirmed`.
    pub outcome: &'static str,
    /// Whether a background worker (not a webhook delivery) produced it.
    pub background: bool,
    /// Time spent, by the domain clock.
    pub duration: Duration,
    /// Upstream correlation ids seen in this attempt.
    pub correlation_ids: Vec<String>,
}

/// Receives one report per handoff outcome (logs, metrics). Must not block.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait OutcomeObserver: Send + Sync {
    /// Called once per attempt outcome.
    fn observe(&self, report: &OutcomeReport);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl OutcomeObserver for NoopObserver {
    fn observe(&self, _report: &OutcomeReport) {}
}
