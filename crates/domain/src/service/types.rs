//! What the use case answers: outcomes, advice, errors, settings.

use std::time::Duration;

use crate::admission::AdmissionPolicy;
use crate::ids::{ConversationId, HandoffId, QueueId};
use crate::lifecycle::{AdviceDecision, HandoffRecord, StoredAnswer};
use crate::request::ValidationErrors;
use crate::routing::RoutingPolicy;

use super::Step;

/// What a handoff delivery achieved (the 2xx answers of CONTRACT §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffOutcome {
    /// 200: Genesys accepted the transfer.
    Transferred {
        /// Our record.
        handoff_id: HandoffId,
        /// The conversation.
        conversation_id: ConversationId,
        /// The queue it went to.
        queue_id: QueueId,
        /// Whether this answer repeats an earlier one (no upstream write happened now).
        replayed: bool,
    },
    /// 202: no capacity now; the service owns the handoff and will transfer it itself.
    Deferred {
        /// Our record.
        handoff_id: HandoffId,
        /// The conversation.
        conversation_id: ConversationId,
        /// The queue it waits for.
        queue_id: QueueId,
        /// When capacity is checked next.
        retry_after: Duration,
        /// Whether this answer repeats an earlier one.
        replayed: bool,
    },
    /// 200 advise: an advisory delivery's answer; nothing was transferred. Also what a transfer
    /// mode delivery gets when it repeats a handoff that was answered in advisory mode.
    Advised(Advice),
}

/// What an advisory delivery (`?mode=advise`) tells the flow. The context attributes were written
/// onto the customer participant in both decisions; nothing was transferred and the service does
/// not own the handoff: the flow transfers (or not) itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// Our record.
    pub handoff_id: HandoffId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// `Transfer`: the queue to transfer to (possibly the fallback). `Defer`: the chosen queue,
    /// which had no capacity.
    pub queue_id: QueueId,
    /// What the flow should do.
    pub decision: AdviceDecision,
    /// Whether this answer repeats an earlier one (no upstream call happened now).
    pub replayed: bool,
}

/// Why a handoff delivery did not succeed (the 4xx/5xx answers of CONTRACT §4.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// 400: the request is invalid (here: a `queueId` outside the allowlist).
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// 404: Genesys does not know the conversation.
    #[error("conversation not found")]
    ConversationNotFound {
        /// Our record.
        handoff_id: Option<HandoffId>,
        /// Genesys `inin-correlation-id`.
        correlation_id: Option<String>,
    },
    /// 422: the conversation ended, or no participant holds it.
    #[error("conversation not transferable: {message}")]
    NotTransferable {
        /// Our record.
        handoff_id: Option<HandoffId>,
        /// Why, for the caller.
        message: String,
    },
    /// 409: the same handoff is being processed right now.
    #[error("handoff {handoff_id} is in progress")]
    InProgress {
        /// The record being worked on.
        handoff_id: HandoffId,
        /// When to try again.
        retry_after: Duration,
    },
    /// 502: Genesys refused.
    #[error("upstream rejected the handoff: {status} {code}")]
    UpstreamRejected {
        /// Our record.
        handoff_id: Option<HandoffId>,
        /// The upstream status.
        status: u16,
        /// The upstream error code.
        code: String,
        /// Genesys `inin-correlation-id`.
        correlation_id: Option<String>,
    },
    /// 503: Genesys (or our ledger) is unavailable or rate-limited past the budget. Safe to retry;
    /// the retry resumes the same handoff.
    #[error("upstream unavailable")]
    Unavailable {
        /// The record that will resume, if one was created.
        handoff_id: Option<HandoffId>,
        /// When to try again.
        retry_after: Duration,
    },
    /// The background worker ended the handoff as [`Stage::Abandoned`]: the conversation it read
    /// back ended, the guest left, or the bot no longer holds it. Nothing was transferred. Only
    /// background work produces it; were it ever answered, it would be a 422 like
    /// [`NotTransferable`](Self::NotTransferable).
    #[error("handoff abandoned: {message}")]
    Abandoned {
        /// Our record.
        handoff_id: Option<HandoffId>,
        /// Why nobody waits for it any more.
        message: String,
    },
}

impl HandoffError {
    /// A stable snake-case name (logs, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            HandoffError::Invalid(_) => "invalid",
            HandoffError::ConversationNotFound { .. } => "not_found",
            HandoffError::NotTransferable { .. } => "not_transferable",
            HandoffError::InProgress { .. } => "in_progress",
            HandoffError::UpstreamRejected { .. } => "rejected",
            HandoffError::Unavailable { .. } => "unavailable",
            HandoffError::Abandoned { .. } => "abandoned",
        }
    }
}

/// Tunables of the use case.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Queue choice.
    pub routing: RoutingPolicy,
    /// Admission.
    pub admission: AdmissionPolicy,
    /// `HANDOFF_DEFER_FOR_SECS`: how long a deferred handoff waits for capacity.
    pub defer_for: Duration,
    /// How often a deferred handoff's capacity is checked again.
    pub recheck_every: Duration,
    /// How long a record stays leased to whoever works on it (longer than the upstream budget).
    pub lease: Duration,
    /// After this, a finished handoff of a conversation no longer blocks a new one (10 minutes).
    pub reuse_after: Duration,
    /// `Retry-After` for a 409.
    pub busy_retry_after: Duration,
    /// `Retry-After` for a 503 when upstream gave none.
    pub unavailable_retry_after: Duration,
    /// The longest wait between two deliveries of one analytics event.
    pub outbox_backoff_max: Duration,
    /// Analytics deliveries in flight at once (16): background work leaves the rest of the
    /// upstream concurrency to live handoffs. Also bounds the records one worker tick drives at
    /// once.
    pub outbox_concurrency: usize,
    /// `HANDOFF_RESUME_AFTER_SECS` (2 minutes): a handoff released after a retryable error (503)
    /// whose caller has not come back by then is finished by the worker: it reads the
    /// conversation back, then transfers within the deferral rules, or ends it as
    /// [`Stage::Abandoned`].
    pub resume_after: Duration,
    /// `HANDOFF_EXTERNAL_TAG`: whether a transfer writes the conversation's external tag
    /// (`bot-handoff:{reason}`). Genesys keeps one tag per conversation, so the write replaces
    /// any tag already there; it is skipped when the lookup shows a tag someone else set.
    pub external_tag: bool,
    /// The first confirmation read after an advice to transfer (5 s); each later one waits twice
    /// as long as the one before.
    pub confirm_first: Duration,
    /// `HANDOFF_CONFIRM_SECS`: how long after an advice to transfer the reads look for the
    /// conversation in a queue (120 s); the last read is at exactly this time.
    pub confirm_for: Duration,
}

impl ServiceSettings {
    /// Defaults around a routing policy.
    pub fn new(routing: RoutingPolicy) -> Self {
        Self {
            routing,
            admission: AdmissionPolicy::default(),
            defer_for: Duration::from_secs(300),
            recheck_every: Duration::from_secs(15),
            lease: Duration::from_secs(30),
            reuse_after: Duration::from_secs(600),
            busy_retry_after: Duration::from_secs(2),
            unavailable_retry_after: Duration::from_secs(5),
            outbox_backoff_max: Duration::from_secs(600),
            outbox_concurrency: 16,
            resume_after: Duration::from_secs(120),
            external_tag: true,
            confirm_first: Duration::from_secs(5),
            confirm_for: Duration::from_secs(120),
        }
    }
}

/// What one background tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Items taken.
    pub claimed: usize,
    /// Items finished for good (transferred, delivered, failed).
    pub done: usize,
    /// Items left for a later tick.
    pub later: usize,
}

pub(super) fn outcome_name(outcome: &HandoffOutcome) -> &'static str {
    match outcome {
        HandoffOutcome::Transferred { .. } => "transferred",
        HandoffOutcome::Deferred { .. } => "deferred",
        HandoffOutcome::Advised(Advice { decision: AdviceDecision::Transfer, .. }) => "advised_transfer",
        HandoffOutcome::Advised(Advice { decision: AdviceDecision::Defer { .. }, .. }) => "advised_defer",
    }
}

/// The stored answer of a finished (or deferred) record, marked as a replay.
pub(super) fn replay(record: &HandoffRecord) -> Step<HandoffOutcome> {
    let conversation_id = record.request.conversation_id();
    match &record.answer {
        Some(StoredAnswer::Transferred { queue }) => {
            Ok(HandoffOutcome::Transferred { handoff_id: record.id, conversation_id, queue_id: *queue, replayed: true })
        }
        Some(StoredAnswer::Deferred { queue, retry_after }) => Ok(HandoffOutcome::Deferred {
            handoff_id: record.id,
            conversation_id,
            queue_id: *queue,
            retry_after: *retry_after,
            replayed: true,
        }),
        Some(StoredAnswer::Advised { queue, decision, .. }) => Ok(HandoffOutcome::Advised(Advice {
            handoff_id: record.id,
            conversation_id,
            queue_id: *queue,
            decision: *decision,
            replayed: true,
        })),
        // Failed records are never replayed (the ledger starts a new one); be safe anyway.
        _ => Err(HandoffError::InProgress { handoff_id: record.id, retry_after: Duration::from_secs(1) }),
    }
}
