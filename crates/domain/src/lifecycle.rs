//! A handoff's durable record and its state machine.
//!
//! ```text
//!   Received ──► Deferred ──► (Deferred …) ─┐
//!      │  └──────────────┐                  │
//!      ▼                 ▼                  ▼
//!   ContextWritten ──► TransferPending ──► Transferred   (terminal)
//!      ▲                   │
//!      └── read back: ─────┘          any non-terminal ──► Failed (terminal)
//!          not applied                   any non-terminal ──► Abandoned (terminal)
//!
//!   Received ──► Advised (terminal: advisory mode, nothing transferred; only its
//!                         confirmation is filled in later)
//! ```
//!
//! `Abandoned` is where the background worker ends a handoff nobody is waiting for any more: the
//! conversation it read back has ended, the guest left, or the bot no longer holds it (a 503 whose
//! bot never came back, a deferral whose guest left). No transfer is attempted then.
//!
//! Any unfinished record may also go straight to `Transferred` when the conversation is read
//! back already sitting in the chosen queue (no replace call is made then).
//!
//! The replace call is made only right after the record durably entered `TransferPending`.
//! A record found in `TransferPending` (a crash, a lost response) is never transferred again
//! before the conversation has been read back: either it is in the queue (→ `Transferred`), or
//! the holder still holds it (→ `ContextWritten`, and only then may a new transfer start). So no
//! sequence of events transfers twice, and a terminal record never changes its answer.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::{ConversationId, HandoffId, ParticipantId, QueueId};
use crate::request::{HandoffReason, HandoffRequest, IdempotencyKey};

/// What makes two deliveries "the same handoff": the conversation, and the `Idempotency-Key`
/// header when one was sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandoffKey {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl HandoffKey {
    /// A key for `conversation_id` and an optional caller key.
    pub fn new(conversation_id: ConversationId, idempotency_key: Option<IdempotencyKey>) -> Self {
        Self { conversation_id, idempotency_key }
    }
}

/// The key as one string (`{conversationId}` or `{conversationId}#{key}`), for a unique index.
impl fmt::Display for HandoffKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.idempotency_key {
            Some(k) => write!(f, "{}#{}", self.conversation_id, k.as_str()),
            None => write!(f, "{}", self.conversation_id),
        }
    }
}

/// Where a handoff stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Recorded; nothing written upstream yet.
    Received,
    /// No capacity; the deferral worker owns it.
    Deferred,
    /// Context written and the transfer known not to have happened.
    ContextWritten,
    /// The replace call was (or is about to be) made; its effect is unknown until confirmed.
    TransferPending,
    /// Genesys accepted the transfer. Terminal.
    Transferred,
    /// Advisory mode: the flow was told what to do and transfers itself; the service never
    /// transfers it. Terminal; the confirmation of an advice to transfer is filled in later
    /// (see [`StoredAnswer::Advised`]).
    Advised,
    /// Given up for good (not found, not transferable, rejected). Terminal.
    Failed,
    /// Finished by the worker without a transfer because nobody waits for it any more: the
    /// conversation ended, the guest left, or the bot no longer holds it. Terminal.
    Abandoned,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 8] = [
        Stage::Received,
        Stage::Deferred,
        Stage::ContextWritten,
        Stage::TransferPending,
        Stage::Transferred,
        Stage::Advised,
        Stage::Failed,
        Stage::Abandoned,
    ];

    /// Whether the record is finished.
    pub fn is_terminal(self) -> bool {
        matches!(self, Stage::Transferred | Stage::Advised | Stage::Failed | Stage::Abandoned)
    }

    /// Whether `self → next` is an allowed transition.
    pub fn can_go(self, next: Stage) -> bool {
        use Stage::*;
        match self {
            // `Transferred` without `TransferPending`: found already in the queue, nothing called.
            Received => {
                matches!(next, Deferred | ContextWritten | TransferPending | Transferred | Advised | Failed | Abandoned)
            }
            Deferred => matches!(next, Deferred | ContextWritten | TransferPending | Transferred | Failed | Abandoned),
            ContextWritten => matches!(next, TransferPending | Transferred | Failed | Abandoned),
            TransferPending => matches!(next, Transferred | ContextWritten | Failed | Abandoned),
            Transferred | Advised | Failed | Abandoned => false,
        }
    }

    /// Stable lower-case name (ledger column, API, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Received => "received",
            Stage::Deferred => "deferred",
            Stage::ContextWritten => "context_written",
            Stage::TransferPending => "transfer_pending",
            Stage::Transferred => "transferred",
            Stage::Advised => "advised",
            Stage::Failed => "failed",
            Stage::Abandoned => "abandoned",
        }
    }

    /// Reads [`as_str`](Self::as_str) back.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer a handoff gave, replayed to later deliveries of the same handoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredAnswer {
    /// 200 transferred.
    Transferred {
        /// The queue it went to.
        queue: QueueId,
    },
    /// 202 deferred.
    Deferred {
        /// The queue it waits for.
        queue: QueueId,
        /// When the caller may look again.
        retry_after: Duration,
    },
    /// A permanent failure (404, 422 or 502), kept for the record's history.
    Failed {
        /// The HTTP status it was answered with.
        status: u16,
        /// A stable error code (`conversation_not_found`, `conversation_not_transferable`, …).
        code: String,
        /// A short human explanation.
        message: String,
    },
    /// Not an answer yet: the mark of an advisory handoff (`?mode=advise`). `LedgerPort::begin`
    /// writes it with the record it creates (or resumes) for an advisory delivery, so no crash
    /// before the advice lets crash recovery transfer the record (it finishes it as failed
    /// instead); replaced by `Advised` or `Failed`.
    Advising,
    /// 200 advise: the advice given to a flow that transfers itself. Nothing was transferred. The
    /// record is finished in [`Stage::Advised`]; [`decide_begin`](crate::decide_begin) replays it
    /// like a transfer (a `Defer` advice only for its `retry_after`).
    Advised {
        /// The queue to transfer to (`Transfer`), or the chosen queue that had no capacity (`Defer`).
        queue: QueueId,
        /// What the flow was told to do.
        decision: AdviceDecision,
        /// For an advice to transfer: whether the conversation then reached a queue. `None` while
        /// the confirmation reads run (and for an advice to defer, which is not confirmed).
        confirmation: Option<Confirmation>,
    },
}

impl StoredAnswer {
    /// Whether an advisory delivery is working on (or left) the record: see [`StoredAnswer::Advising`].
    pub fn is_advising(&self) -> bool {
        matches!(self, StoredAnswer::Advising)
    }
}

/// How a delivery wants its handoff done: the service transfers (`POST /webhooks/bot-handoff`),
/// or it only advises and the flow transfers (`?mode=advise`). [`crate::ports::LedgerPort::begin`]
/// takes it, so the record carries the mode from its first write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HandoffMode {
    /// The service transfers the conversation.
    #[default]
    Transfer,
    /// The service advises; the flow runs Transfer to ACD itself.
    Advise,
}

/// What the confirmation reads after an advice to transfer found (see
/// [`crate::HandoffService::run_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// The conversation reached a queue after the advice.
    Confirmed {
        /// The queue it actually reached (normally the advised one).
        queue: QueueId,
        /// From the advice to the read that first saw it in the queue (an upper bound, within
        /// one step of the read schedule).
        after: Duration,
    },
    /// It did not reach a queue within `HANDOFF_CONFIRM_SECS`, or could not.
    Unconfirmed {
        /// What the last read found.
        why: Unconfirmed,
    },
}

/// Why an advice to transfer was not confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unconfirmed {
    /// The flow still held the conversation at the last read.
    StillWithFlow,
    /// The conversation ended (or Genesys no longer knows it) before reaching a queue.
    Ended,
    /// Someone else holds it (an agent without a queue, another participant).
    Elsewhere,
    /// The last read failed (Genesys unavailable or refusing).
    Unknown,
}

impl Unconfirmed {
    /// Every reason.
    pub const ALL: [Unconfirmed; 4] =
        [Unconfirmed::StillWithFlow, Unconfirmed::Ended, Unconfirmed::Elsewhere, Unconfirmed::Unknown];

    /// Stable snake_case name (ledger, API).
    pub fn as_str(self) -> &'static str {
        match self {
            Unconfirmed::StillWithFlow => "still_with_flow",
            Unconfirmed::Ended => "ended",
            Unconfirmed::Elsewhere => "elsewhere",
            Unconfirmed::Unknown => "unknown",
        }
    }

    /// Reads [`as_str`](Self::as_str) back.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|u| u.as_str() == raw)
    }
}

/// What an advisory handoff (`?mode=advise`) tells the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdviceDecision {
    /// The queue has capacity now: the flow should transfer to it.
    Transfer,
    /// Neither the chosen queue nor the fallback has capacity now. The flow decides: tell the
    /// guest and transfer anyway, or ask again after `retry_after`. The service does not own it.
    Defer {
        /// When asking again may give another answer; until then the same key replays this one.
        retry_after: Duration,
    },
}

impl AdviceDecision {
    /// Stable lower-case name (API, ledger, metrics): `transfer` or `defer`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdviceDecision::Transfer => "transfer",
            AdviceDecision::Defer { .. } => "defer",
        }
    }
}

/// One line of a record's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// The stage entered (or kept).
    pub stage: Stage,
    /// What happened.
    pub note: String,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a handoff cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// The current stage.
    pub from: Stage,
    /// The stage asked for.
    pub to: Stage,
}

/// The durable record of one handoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffRecord {
    /// Our id.
    pub id: HandoffId,
    /// What identifies repeats.
    pub key: HandoffKey,
    /// The validated request.
    pub request: HandoffRequest,
    /// Where it stands. Change it only with [`advance`](Self::advance).
    pub stage: Stage,
    /// The queue chosen (after admission: possibly the fallback).
    pub queue: Option<QueueId>,
    /// The participant replaced by the transfer.
    pub holder: Option<ParticipantId>,
    /// The customer participant that carries the context.
    pub customer: Option<ParticipantId>,
    /// The answer given, once there is one.
    pub answer: Option<StoredAnswer>,
    /// How many times work on it started (deliveries, resumptions, deferral checks).
    pub attempts: u32,
    /// When it was received.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Deferred: when capacity is checked next.
    pub next_check_at: Option<DateTime<Utc>>,
    /// Deferred: after this, transfer to the chosen queue whatever the capacity.
    pub defer_until: Option<DateTime<Utc>>,
    /// The last retryable error, if the last attempt stopped on one.
    pub last_error: Option<String>,
    /// Genesys `inin-correlation-id`s of the calls made for it (at most [`MAX_CORRELATION_IDS`]).
    pub correlation_ids: Vec<String>,
    /// Every transition, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// A record keeps at most this many correlation ids (the most recent).
pub const MAX_CORRELATION_IDS: usize = 16;

impl HandoffRecord {
    /// A new record in `Received` for a delivery in `mode`: an advisory one carries the
    /// [`StoredAnswer::Advising`] mark from its first write.
    pub fn begun(
        id: HandoffId,
        key: HandoffKey,
        request: HandoffRequest,
        now: DateTime<Utc>,
        mode: HandoffMode,
    ) -> Self {
        let mut record = Self::received(id, key, request, now);
        if mode == HandoffMode::Advise {
            record.answer = Some(StoredAnswer::Advising);
        }
        record
    }

    /// Marks a resumed `Received` record for an advisory delivery (`begin` in
    /// [`HandoffMode::Advise`]), unless it already has an answer. Returns whether it changed.
    pub fn mark_mode(&mut self, mode: HandoffMode) -> bool {
        if mode == HandoffMode::Advise && self.stage == Stage::Received && self.answer.is_none() {
            self.answer = Some(StoredAnswer::Advising);
            return true;
        }
        false
    }

    /// When the advice was given (the record entered [`Stage::Advised`]).
    pub fn advised_at(&self) -> Option<DateTime<Utc>> {
        self.history.iter().find(|h| h.stage == Stage::Advised).map(|h| h.at)
    }

    /// A new record in `Received`.
    pub fn received(id: HandoffId, key: HandoffKey, request: HandoffRequest, now: DateTime<Utc>) -> Self {
        Self {
            id,
            key,
            request,
            stage: Stage::Received,
            queue: None,
            holder: None,
            customer: None,
            answer: None,
            attempts: 1,
            created_at: now,
            updated_at: now,
            next_check_at: None,
            defer_until: None,
            last_error: None,
            correlation_ids: Vec::new(),
            history: vec![HistoryEntry { at: now, stage: Stage::Received, note: "received".to_owned() }],
        }
    }

    /// Moves to `to`, appending to the history.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the state machine does not allow it; the record is unchanged.
    pub fn advance(&mut self, to: Stage, at: DateTime<Utc>, note: impl Into<String>) -> Result<(), IllegalTransition> {
        if !self.stage.can_go(to) {
            return Err(IllegalTransition { from: self.stage, to });
        }
        self.stage = to;
        self.updated_at = at;
        self.history.push(HistoryEntry { at, stage: to, note: note.into() });
        Ok(())
    }

    /// When the worker may take the record up: its next capacity check, else its last change (a
    /// crashed holder's record). Ledgers hand claimed records out in `(due_at, id)` order.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.next_check_at.unwrap_or(self.updated_at)
    }

    /// Notes a retryable stop without changing stage.
    pub fn stalled(&mut self, at: DateTime<Utc>, error: impl Into<String>) {
        let error = error.into();
        self.updated_at = at;
        self.history.push(HistoryEntry { at, stage: self.stage, note: format!("stopped: {error}") });
        self.last_error = Some(error);
    }

    /// Remembers an upstream correlation id.
    pub fn add_correlation_id(&mut self, id: Option<&str>) {
        if let Some(id) = id {
            if !self.correlation_ids.iter().any(|c| c == id) {
                if self.correlation_ids.len() == MAX_CORRELATION_IDS {
                    self.correlation_ids.remove(0);
                }
                self.correlation_ids.push(id.to_owned());
            }
        }
    }

    /// The reason of the request.
    pub fn reason(&self) -> &HandoffReason {
        self.request.reason()
    }
}

/// `at + by`, saturating at the latest representable time instead of panicking: every deadline
/// the domain and the ledgers compute (leases, re-checks, deferrals, retries) goes through this,
/// so an absurd setting can never crash a handoff.
pub fn later(at: DateTime<Utc>, by: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(by).ok().and_then(|d| at.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_adds_and_saturates_instead_of_overflowing() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(later(at, std::time::Duration::from_secs(90)), at + chrono::Duration::seconds(90));
        assert_eq!(later(at, std::time::Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(later(DateTime::<Utc>::MAX_UTC, std::time::Duration::from_secs(1)), DateTime::<Utc>::MAX_UTC);
    }
    use proptest::prelude::*;

    fn stage() -> impl Strategy<Value = Stage> {
        prop::sample::select(Stage::ALL.to_vec())
    }

    proptest! {
        /// Whatever transitions are attempted, the replace call (entering `TransferPending`)
        /// happens at most once more than the number of read-backs that proved it did not apply,
        /// `Transferred` is entered at most once, and a terminal stage never changes.
        #[test]
        fn no_sequence_of_transitions_transfers_twice(targets in prop::collection::vec(stage(), 0..64)) {
            let mut current = Stage::Received;
            let (mut transfers_started, mut proven_not_applied, mut transferred) = (0u32, 0u32, 0u32);
            for to in targets {
                let was_terminal = current.is_terminal();
                if current.can_go(to) {
                    prop_assert!(!was_terminal, "terminal {current} moved to {to}");
                    if to == Stage::TransferPending { transfers_started += 1; }
                    if current == Stage::TransferPending && to == Stage::ContextWritten { proven_not_applied += 1; }
                    if to == Stage::Transferred { transferred += 1; }
                    current = to;
                }
                prop_assert!(transfers_started <= proven_not_applied + 1);
                prop_assert!(transferred <= 1);
            }
        }
    }

    fn record() -> HandoffRecord {
        let request =
            HandoffRequest::from_json(&crate::testkit::sample_payload(), &crate::ids::OpaqueIds).expect("valid");
        let key = HandoffKey::new(request.conversation_id(), None);
        HandoffRecord::received(HandoffId::random(), key, request, DateTime::<Utc>::UNIX_EPOCH)
    }

    #[test]
    fn an_illegal_transition_is_refused_and_leaves_the_record_unchanged() {
        // Arrange
        let mut record = record();
        record.advance(Stage::Failed, DateTime::<Utc>::UNIX_EPOCH, "gone").expect("received may fail");
        let before = record.clone();

        // Act
        let result = record.advance(Stage::TransferPending, DateTime::<Utc>::UNIX_EPOCH, "again");

        // Assert
        assert_eq!(result, Err(IllegalTransition { from: Stage::Failed, to: Stage::TransferPending }));
        assert_eq!(record, before);
    }

    #[test]
    fn advancing_appends_to_the_history() {
        // Arrange
        let mut record = record();
        let later = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(3);

        // Act
        record.advance(Stage::ContextWritten, later, "context written").expect("allowed");

        // Assert
        assert_eq!(record.stage, Stage::ContextWritten);
        assert_eq!(record.updated_at, later);
        assert_eq!(record.history.len(), 2);
        assert_eq!(record.history[1].note, "context written");
    }

    #[test]
    fn a_stall_keeps_the_stage_and_remembers_the_error() {
        // Arrange
        let mut record = record();

        // Act
        record.stalled(DateTime::<Utc>::UNIX_EPOCH, "conversation lookup: timeout");

        // Assert
        assert_eq!(record.stage, Stage::Received);
        assert_eq!(record.last_error.as_deref(), Some("conversation lookup: timeout"));
        assert_eq!(record.history.last().map(|h| h.note.as_str()), Some("stopped: conversation lookup: timeout"));
    }

    #[test]
    fn correlation_ids_are_deduplicated_and_only_the_most_recent_are_kept() {
        // Arrange
        let mut record = record();

        // Act
        record.add_correlation_id(None);
        for i in 0..20 {
            record.add_correlation_id(Some(&format!("corr-{i}")));
            record.add_correlation_id(Some(&format!("corr-{i}")));
        }

        // Assert
        assert_eq!(record.correlation_ids.len(), MAX_CORRELATION_IDS);
        assert_eq!(record.correlation_ids.first().map(String::as_str), Some("corr-4"));
        assert_eq!(record.correlation_ids.last().map(String::as_str), Some("corr-19"));
    }

    #[test]
    fn a_handoff_key_prints_the_conversation_and_the_idempotency_key() {
        // Arrange
        let conversation = ConversationId::parse("a1b2c3d4-e5f6-7890-abcd-ef1234567890").expect("valid");
        let key = IdempotencyKey::parse("delivery-1").expect("valid");

        // Act + Assert
        assert_eq!(HandoffKey::new(conversation, None).to_string(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
        assert_eq!(
            HandoffKey::new(conversation, Some(key)).to_string(),
            "a1b2c3d4-e5f6-7890-abcd-ef1234567890#delivery-1"
        );
    }

    #[test]
    fn only_transferred_advised_failed_and_abandoned_are_terminal_and_they_never_move() {
        for stage in Stage::ALL {
            let terminal = matches!(stage, Stage::Transferred | Stage::Advised | Stage::Failed | Stage::Abandoned);
            assert_eq!(stage.is_terminal(), terminal, "{stage}");
            if terminal {
                assert!(Stage::ALL.iter().all(|next| !stage.can_go(*next)), "{stage} moves");
            } else {
                assert!(stage.can_go(Stage::Failed), "{stage} cannot fail");
                assert!(stage.can_go(Stage::Abandoned), "{stage} cannot be abandoned");
            }
        }
    }

    #[test]
    fn stage_names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
        assert_eq!(Stage::parse("nope"), None);
    }
}
