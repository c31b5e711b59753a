//! The ports: what the domain needs from the outside world.
//!
//! Rules every port follows:
//! - traits are `#[async_trait]` and `Send + Sync`, so services hold them as `Arc<dyn Port>`;
//!   with the `mocks` feature (and in this crate's tests) each has a mockall `Mock…` twin;
//! - signatures use domain types only: no HTTP, SQL or platform types cross a port, and no port
//!   names a platform: what differs between platforms is declared in [`PlatformRules`];
//! - upstream ports fail with [`PortError`], whose variant is its retry class: callers branch on it
//!   and nothing else (see each method's `# Errors`);
//! - adapters retry inside their own budget; an error that reaches the domain is final for this attempt.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::admission::CapacitySnapshot;
use crate::context::ContextSet;
use crate::ids::{ConversationId, HandoffId, InvalidId, OpaqueId, ParticipantId, QueueId};
use crate::insights::{HandoffSummary, Insights, InsightsFilter, SummaryCursor};
use crate::lifecycle::{HandoffKey, HandoffMode, HandoffRecord, Stage};
use crate::outcome::OutcomeFacts;
use crate::platform::PlatformRules;
use crate::request::{GuestId, HandoffReason, HandoffRequest};

mod error;

pub use error::{Missing, PortError, Refusal, UpstreamDetail};

/// An upstream call that succeeded, with its correlation id for logs and the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The platform's correlation id of the call, if any.
    pub correlation_id: Option<String>,
}

/// Who holds the conversation, as far as a handoff cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlState {
    /// The bot or flow holds it: transferable.
    BotHolds,
    /// Waiting for an agent at `target`; `None` when the platform does not say where.
    Queued {
        /// The target it waits at, when the platform says.
        target: Option<QueueId>,
    },
    /// A human agent handles it: never the bot's to hand off.
    AgentHas {
        /// The target that handed it to the agent, when the platform says (confirms an advice).
        via: Option<QueueId>,
    },
    /// Nobody holds it (only the guest is there).
    Unheld,
    /// It is over.
    Ended,
}

/// Where the platform shows the conversation handed to: the read-back the adapter defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandedTo {
    /// These targets (e.g. the queues it waits in, then the transfers recorded for it).
    Targets(Vec<QueueId>),
    /// The agent side, target unreadable: counts for every target.
    AgentSide,
}

/// What [`TransferPort::transfer`] acts on; opaque to the domain, stored in the record.
/// (e.g. the participant to replace, or the active integration to pass control from.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle(OpaqueId);

impl Handle {
    /// A handle over an id the adapter read.
    pub const fn new(id: OpaqueId) -> Self {
        Self(id)
    }

    /// A handle from text, with the domain's generic id check.
    ///
    /// # Errors
    /// [`InvalidId`] when `raw` is not an [`OpaqueId`].
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        OpaqueId::parse(raw).map(Self).map_err(|e| InvalidId { kind: "handle", problem: e.problem })
    }

    /// The id.
    pub const fn id(&self) -> &OpaqueId {
        &self.0
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the context lives once written (e.g. the guest's participant). The record keeps it so
/// that a resumed handoff does not write the context twice onto the same anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextAnchor(OpaqueId);

impl ContextAnchor {
    /// An anchor over an id the adapter read.
    pub const fn new(id: OpaqueId) -> Self {
        Self(id)
    }

    /// An anchor from text, with the domain's generic id check.
    ///
    /// # Errors
    /// [`InvalidId`] when `raw` is not an [`OpaqueId`].
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        OpaqueId::parse(raw).map(Self).map_err(|e| InvalidId { kind: "context anchor", problem: e.problem })
    }

    /// The id.
    pub const fn id(&self) -> &OpaqueId {
        &self.0
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Display for ContextAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why nothing can be handed off, in words for the 422 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untransferable(pub String);

/// A conversation as located on the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Who holds it.
    pub state: ControlState,
    /// Where the platform shows it handed to.
    pub handed_to: HandedTo,
    /// What a transfer acts on, or why there is nothing to transfer from (an agent has it, it
    /// ended, nobody holds it, the guest left, or the `participantId` hint names someone who
    /// cannot be handed off: the adapter's words).
    pub handle: Result<Handle, Untransferable>,
    /// Where the context is written: `Some` for [`ContextDelivery::Separate`] platforms once
    /// located; `None` otherwise.
    ///
    /// [`ContextDelivery::Separate`]: crate::platform::ContextDelivery::Separate
    pub context_anchor: Option<ContextAnchor>,
    /// The platform's correlation id of the lookup.
    pub correlation_id: Option<String>,
    /// Whether the conversation carries an analytics tag someone else set, which recording ours
    /// would replace (platforms that keep one tag per conversation); `false` when unknown.
    pub foreign_tag: bool,
}

impl Located {
    /// The read-back: whether the platform shows the conversation handed to `target`.
    pub fn is_handed_to(&self, target: QueueId) -> bool {
        match &self.handed_to {
            HandedTo::Targets(targets) => targets.contains(&target),
            HandedTo::AgentSide => true,
        }
    }

    /// Whether the platform shows the conversation handed to any target `allowed` accepts.
    pub fn is_handed_to_any(&self, allowed: impl Fn(QueueId) -> bool) -> bool {
        match &self.handed_to {
            HandedTo::Targets(targets) => targets.iter().any(|t| allowed(*t)),
            HandedTo::AgentSide => true,
        }
    }

    /// The target the conversation reached, for confirming an advice to transfer to `advised`:
    /// the first target shown, else the one that handed it to an agent; `advised` itself when
    /// the platform shows only "the agent side".
    pub fn reached(&self, advised: QueueId) -> Option<QueueId> {
        match &self.handed_to {
            HandedTo::AgentSide => Some(advised),
            HandedTo::Targets(targets) => targets.first().copied().or(match self.state {
                ControlState::AgentHas { via } => via,
                _ => None,
            }),
        }
    }
}

/// What a transfer call achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferResult {
    /// Applied.
    Done(Receipt),
    /// Taken, applied later or not at all (platforms that confirm asynchronously). The domain
    /// keeps the record in `TransferPending` and reads it back within
    /// [`PlatformRules::confirm_within`].
    Accepted(Receipt),
}

/// The prefix of the analytics tags this service writes (`bot-handoff:{reason}`).
pub const EXTERNAL_TAG_PREFIX: &str = "bot-handoff:";

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

/// Locating conversations, writing their context and handing them to a target. The adapter picks
/// whom or what it acts on ([`Handle`], [`ContextAnchor`]); the domain never sees participants.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TransferPort: Send + Sync {
    /// What the adapter declares about its platform (ids, context limits, deliveries).
    fn rules(&self) -> &PlatformRules;

    /// Reads who holds the conversation. `holder_hint` is the webhook's `participantId`: when
    /// given, the handle is that holder or an [`Untransferable`] saying why not.
    ///
    /// # Errors
    /// - [`PortError::NotFound`] (`Conversation`) when the platform does not know it;
    /// - [`PortError::Rejected`], [`PortError::RateLimited`], [`PortError::Transient`] as usual.
    async fn locate(
        &self,
        conversation: ConversationId,
        holder_hint: Option<ParticipantId>,
    ) -> Result<Located, PortError>;

    /// [`ContextDelivery::Separate`] platforms only: merges `context` at `anchor` (idempotent:
    /// safe to repeat).
    ///
    /// # Errors
    /// - [`PortError::NotFound`] when the conversation or anchor is gone;
    /// - [`PortError::InvalidState`] when the conversation no longer accepts context;
    /// - [`PortError::Rejected`] (also when called on a `WithTransfer` platform),
    ///   [`PortError::RateLimited`], [`PortError::Transient`] as usual.
    ///
    /// [`ContextDelivery::Separate`]: crate::platform::ContextDelivery::Separate
    async fn write_context(
        &self,
        conversation: ConversationId,
        anchor: ContextAnchor,
        context: &ContextSet,
    ) -> Result<Receipt, PortError>;

    /// Hands the conversation from `from` to `target`. `context` is `Some` exactly for
    /// [`ContextDelivery::WithTransfer`] platforms. Never repeated by the domain before a
    /// read-back ([`locate`](Self::locate) then [`Located::is_handed_to`]).
    ///
    /// # Errors
    /// - [`PortError::Rejected`] when the platform refuses (unknown target, missing permission);
    ///   the transfer did not happen;
    /// - [`PortError::NotFound`] when the conversation or handle is gone;
    /// - [`PortError::InvalidState`] when `from` no longer holds it or the conversation ended;
    /// - [`PortError::RateLimited`] / [`PortError::Transient`] only when the transfer surely did
    ///   not happen;
    /// - [`PortError::Indeterminate`] when it may have happened.
    ///
    /// [`ContextDelivery::WithTransfer`]: crate::platform::ContextDelivery::WithTransfer
    async fn transfer<'a>(
        &self,
        conversation: ConversationId,
        from: Handle,
        target: QueueId,
        context: Option<&'a ContextSet>,
    ) -> Result<TransferResult, PortError>;
}

/// Reporting a handoff where contact-center managers look.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AnalyticsPort: Send + Sync {
    /// Records the event (e.g. the conversation's analytics tag `bot-handoff:{reason}`).
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
