//! `HandoffService`: the use case. One webhook delivery (or one background check) drives one
//! ledger record through the lifecycle, calling the ports in the order CONTRACT §5 sets:
//! locate → choose queue → admit (or defer) → write context → transfer → record.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::admission::{Admission, AdmissionPolicy};
use crate::attributes::AttributeSet;
use crate::ids::{ConversationId, HandoffId, QueueId};
use crate::lifecycle::{HandoffKey, HandoffRecord, Stage, StoredAnswer};
use crate::ports::{
    AnalyticsPort, Begin, Clock, ConversationSnapshot, HandoffEvent, LedgerError, LedgerPort, NoopObserver,
    OutcomeObserver, OutcomeReport, PortError, QueuePort, TransferPort,
};
use crate::request::{HandoffRequest, IdempotencyKey, ValidationErrors};
use crate::routing::RoutingPolicy;

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

/// The handoff use case over its ports.
pub struct HandoffService {
    queue: Arc<dyn QueuePort>,
    transfer: Arc<dyn TransferPort>,
    analytics: Arc<dyn AnalyticsPort>,
    ledger: Arc<dyn LedgerPort>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn OutcomeObserver>,
    settings: ServiceSettings,
}

impl std::fmt::Debug for HandoffService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Where one attempt stopped early.
type Step<T> = Result<T, HandoffError>;

impl HandoffService {
    /// A service over its ports.
    pub fn new(
        queue: Arc<dyn QueuePort>,
        transfer: Arc<dyn TransferPort>,
        analytics: Arc<dyn AnalyticsPort>,
        ledger: Arc<dyn LedgerPort>,
        clock: Arc<dyn Clock>,
        settings: ServiceSettings,
    ) -> Self {
        Self { queue, transfer, analytics, ledger, clock, observer: Arc::new(NoopObserver), settings }
    }

    /// Sends one report per outcome to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn OutcomeObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &ServiceSettings {
        &self.settings
    }

    /// The ledger (for the read side).
    pub fn ledger(&self) -> &Arc<dyn LedgerPort> {
        &self.ledger
    }

    /// Handles one webhook delivery.
    ///
    /// # Errors
    /// A [`HandoffError`] that maps 1:1 to a CONTRACT §4.1 status. Invalid requests fail before
    /// any ledger write or upstream call.
    pub async fn handle(
        &self,
        request: HandoffRequest,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<HandoffOutcome, HandoffError> {
        let started = self.clock.now();
        let conversation_id = request.conversation_id();
        // The allowlist is checked before anything is written or called.
        self.settings.routing.choose(&request)?;
        let key = HandoffKey::new(conversation_id, idempotency_key);
        let s = &self.settings;
        let begin = match self.ledger.begin(&key, &request, started, s.lease, s.reuse_after).await {
            Ok(b) => b,
            Err(e) => {
                let err = self.ledger_unavailable(None, &e);
                self.report_early(&request, None, started, Err(&err));
                return Err(err);
            }
        };
        match begin {
            Begin::Busy { handoff_id } => {
                let err = HandoffError::InProgress { handoff_id, retry_after: s.busy_retry_after };
                self.report_early(&request, Some(handoff_id), started, Err(&err));
                Err(err)
            }
            Begin::Replay(record) => {
                let result = replay(&record);
                let outcome = match &result {
                    Ok(_) => Ok("replayed"),
                    Err(e) => Err(e),
                };
                self.report(&record, started, false, outcome.map_err(HandoffError::kind));
                result
            }
            Begin::Fresh(record) | Begin::Resume(record) => self.drive(record, started, false).await,
        }
    }

    /// One tick of the background worker: re-checks due deferred handoffs and resumes work a
    /// crashed instance left, at most `limit` records.
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger cannot be used.
    pub async fn run_due(&self, limit: usize) -> Result<TickReport, LedgerError> {
        let now = self.clock.now();
        let claimed = self.ledger.claim_due(now, limit, self.settings.lease).await?;
        let mut report = TickReport { claimed: claimed.len(), ..TickReport::default() };
        for record in claimed {
            match self.drive(record, now, true).await {
                Ok(HandoffOutcome::Transferred { .. }) | Err(HandoffError::NotTransferable { .. }) => report.done += 1,
                Err(
                    HandoffError::ConversationNotFound { .. }
                    | HandoffError::UpstreamRejected { .. }
                    | HandoffError::Invalid(_),
                ) => report.done += 1,
                Ok(HandoffOutcome::Deferred { .. })
                | Err(HandoffError::Unavailable { .. } | HandoffError::InProgress { .. }) => report.later += 1,
            }
        }
        Ok(report)
    }

    /// One tick of the analytics outbox: delivers at most `limit` due events, rescheduling
    /// failures with exponential backoff. Never touches a transfer.
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger cannot be used.
    pub async fn deliver_analytics(&self, limit: usize) -> Result<TickReport, LedgerError> {
        let now = self.clock.now();
        let entries = self.ledger.claim_outbox(now, limit, Duration::from_secs(60)).await?;
        let mut report = TickReport { claimed: entries.len(), ..TickReport::default() };
        for entry in entries {
            match self.analytics.record(&entry.event).await {
                Ok(_) => {
                    self.ledger.finish_outbox(entry.id, None, None).await?;
                    report.done += 1;
                }
                Err(e) => {
                    let backoff = outbox_backoff(entry.attempts, self.settings.outbox_backoff_max);
                    let retry_at = now + chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::MAX);
                    self.ledger.finish_outbox(entry.id, Some(retry_at), Some(e.to_string())).await?;
                    report.later += 1;
                }
            }
        }
        Ok(report)
    }

    /// Drives a leased record as far as it goes now, then reports the outcome.
    async fn drive(&self, mut record: HandoffRecord, started: DateTime<Utc>, background: bool) -> Step<HandoffOutcome> {
        let result = self.advance(&mut record).await;
        self.report(&record, started, background, result.as_ref().map(outcome_name).map_err(HandoffError::kind));
        result
    }

    async fn advance(&self, record: &mut HandoffRecord) -> Step<HandoffOutcome> {
        let primary = match record.stage {
            Stage::Deferred => record.queue.unwrap_or(self.settings.routing.default_queue()),
            _ => self.settings.routing.choose(&record.request)?,
        };
        // A deferred handoff re-checks capacity before it costs a lookup.
        let mut admitted = None;
        if record.stage == Stage::Deferred {
            match self.admit(record, primary).await? {
                Some(queue) => admitted = Some(queue),
                None => return self.defer(record, primary).await,
            }
        }

        let snapshot = match self.transfer.locate(record.request.conversation_id()).await {
            Ok(s) => s,
            Err(e) => return Err(self.stop(record, e, "conversation lookup").await),
        };
        record.add_correlation_id(snapshot.correlation_id.as_deref());

        if record.stage == Stage::TransferPending {
            // A transfer may have happened: read back before anything else.
            let queue = record.queue.unwrap_or(primary);
            if snapshot.is_in_queue(queue) {
                return self.transferred(record, queue, "read back: the conversation is in the queue").await;
            }
            if !snapshot.has_ended() {
                self.move_to(record, Stage::ContextWritten, "read back: the transfer did not apply")?;
            }
        }

        let customer = self.check_conversation(record, &snapshot).await?;

        let queue = match (record.stage, admitted) {
            (_, Some(q)) => q,
            (Stage::ContextWritten | Stage::TransferPending, _) => record.queue.unwrap_or(primary),
            _ => match self.admit(record, primary).await? {
                Some(q) => q,
                None => return self.defer(record, primary).await,
            },
        };
        if snapshot.is_in_queue(queue) {
            return self.transferred(record, queue, "the conversation was already in the queue").await;
        }

        let holder = match self.select_holder(record, &snapshot) {
            Ok(h) => h,
            Err(message) => return Err(self.not_transferable(record, message).await),
        };

        let now = self.clock.now();
        let attributes = match AttributeSet::for_handoff(&record.request, record.id, now) {
            Ok(a) => a,
            Err(e) => return Err(self.not_transferable(record, e.to_string()).await),
        };
        match self.transfer.write_context(record.request.conversation_id(), customer, &attributes).await {
            Ok(receipt) => record.add_correlation_id(receipt.correlation_id.as_deref()),
            Err(e) => return Err(self.stop(record, e, "writing participant data").await),
        }

        record.queue = Some(queue);
        record.holder = Some(holder);
        record.customer = Some(customer);
        self.move_to(record, Stage::TransferPending, &format!("context written; transferring to queue {queue}"))?;
        if let Err(e) = self.ledger.save(record, false, &[]).await {
            return Err(self.ledger_unavailable(Some(record.id), &e));
        }

        match self.transfer.transfer(record.request.conversation_id(), holder, queue).await {
            Ok(receipt) => {
                record.add_correlation_id(receipt.correlation_id.as_deref());
                self.transferred(record, queue, "transferred").await
            }
            Err(PortError::Indeterminate { detail, correlation_id }) => {
                record.add_correlation_id(correlation_id.as_deref());
                self.read_back_after_unknown(record, queue, &detail).await
            }
            Err(e @ (PortError::Transient { .. } | PortError::RateLimited { .. })) => {
                // The adapter guarantees the transfer did not happen.
                self.move_to(record, Stage::ContextWritten, "the transfer did not happen")?;
                Err(self.stop(record, e, "transfer").await)
            }
            Err(e) => Err(self.fail(record, e).await),
        }
    }

    /// Upstream could not say whether the transfer happened: look, and never transfer again
    /// before knowing.
    async fn read_back_after_unknown(
        &self,
        record: &mut HandoffRecord,
        queue: QueueId,
        detail: &str,
    ) -> Step<HandoffOutcome> {
        match self.transfer.locate(record.request.conversation_id()).await {
            Ok(snapshot) if snapshot.is_in_queue(queue) => {
                record.add_correlation_id(snapshot.correlation_id.as_deref());
                self.transferred(record, queue, "transfer outcome unknown; read back: in the queue").await
            }
            Ok(snapshot) => {
                record.add_correlation_id(snapshot.correlation_id.as_deref());
                self.move_to(record, Stage::ContextWritten, "transfer outcome unknown; read back: not applied")?;
                let error = PortError::Transient { detail: detail.to_owned(), correlation_id: None };
                Err(self.stop(record, error, "transfer").await)
            }
            // Still unknown: stay in TransferPending so the next attempt reads back first.
            Err(e) => Err(self.stop(record, e, "reading the conversation back").await),
        }
    }

    async fn check_conversation(
        &self,
        record: &mut HandoffRecord,
        snapshot: &ConversationSnapshot,
    ) -> Step<crate::ids::ParticipantId> {
        if snapshot.has_ended() {
            return Err(self.not_transferable(record, "the conversation has ended".to_owned()).await);
        }
        match snapshot.customer() {
            Some(c) => Ok(c.id),
            None => Err(self.not_transferable(record, "the conversation has no customer participant".to_owned()).await),
        }
    }

    /// The participant to replace: the payload's `participantId` if it holds the conversation,
    /// else the first active non-customer participant. Never the customer.
    fn select_holder(
        &self,
        record: &HandoffRecord,
        snapshot: &ConversationSnapshot,
    ) -> Result<crate::ids::ParticipantId, String> {
        match record.request.participant() {
            Some(wanted) => {
                if snapshot.customer().is_some_and(|c| c.id == wanted) {
                    return Err("participantId is the customer; the customer is never replaced".to_owned());
                }
                snapshot
                    .holders()
                    .find(|p| p.id == wanted)
                    .map(|p| p.id)
                    .ok_or_else(|| format!("participant {wanted} does not hold the conversation"))
            }
            None => snapshot
                .holders()
                .next()
                .map(|p| p.id)
                .ok_or_else(|| "no participant holds the conversation".to_owned()),
        }
    }

    /// The queue that can take the conversation now: the primary, else the fallback; `None` when
    /// neither can. A deferred handoff past its deadline goes to the primary regardless.
    async fn admit(&self, record: &mut HandoffRecord, primary: QueueId) -> Step<Option<QueueId>> {
        let policy = &self.settings.admission;
        if !policy.checks_capacity() {
            return Ok(Some(primary));
        }
        let now = self.clock.now();
        if record.stage == Stage::Deferred && record.defer_until.is_some_and(|until| now >= until) {
            self.note(record, "deferral expired; transferring to the chosen queue anyway");
            return Ok(Some(primary));
        }
        let snapshot = match self.queue.capacity(primary, policy.needs_estimated_wait()).await {
            Ok(s) => s,
            Err(e) => return Err(self.stop(record, e, "queue capacity").await),
        };
        let refusal = match policy.judge(&snapshot) {
            Admission::Admit => return Ok(Some(primary)),
            Admission::Refuse(why) => why,
        };
        self.note(record, &format!("queue {primary} has no capacity: {refusal}"));
        if let Some(fallback) = self.settings.routing.fallback().filter(|f| *f != primary) {
            match self.queue.capacity(fallback, policy.needs_estimated_wait()).await {
                Ok(s) => match policy.judge(&s) {
                    Admission::Admit => {
                        self.note(record, &format!("overflow to fallback queue {fallback}"));
                        return Ok(Some(fallback));
                    }
                    Admission::Refuse(why) => self.note(record, &format!("fallback {fallback} has no capacity: {why}")),
                },
                // The primary is known full; an unreadable fallback is not a reason to fail.
                Err(e) => self.note(record, &format!("fallback {fallback} capacity unknown: {e}")),
            }
        }
        Ok(None)
    }

    async fn defer(&self, record: &mut HandoffRecord, primary: QueueId) -> Step<HandoffOutcome> {
        let now = self.clock.now();
        let s = &self.settings;
        record.queue = Some(primary);
        record.next_check_at = Some(now + chrono_duration(s.recheck_every));
        if record.defer_until.is_none() {
            record.defer_until = Some(now + chrono_duration(s.defer_for));
        }
        let first = record.stage != Stage::Deferred;
        self.move_to(record, Stage::Deferred, if first { "deferred: no capacity" } else { "still no capacity" })?;
        if first {
            record.answer = Some(StoredAnswer::Deferred { queue: primary, retry_after: s.recheck_every });
        }
        if let Err(e) = self.ledger.save(record, true, &[]).await {
            return Err(self.ledger_unavailable(Some(record.id), &e));
        }
        Ok(HandoffOutcome::Deferred {
            handoff_id: record.id,
            conversation_id: record.request.conversation_id(),
            queue_id: primary,
            retry_after: s.recheck_every,
            replayed: false,
        })
    }

    async fn transferred(&self, record: &mut HandoffRecord, queue: QueueId, note: &str) -> Step<HandoffOutcome> {
        let now = self.clock.now();
        record.queue = Some(queue);
        record.next_check_at = None;
        record.last_error = None;
        self.move_to(record, Stage::Transferred, note)?;
        record.answer = Some(StoredAnswer::Transferred { queue });
        let event = HandoffEvent {
            handoff_id: record.id,
            conversation_id: record.request.conversation_id(),
            reason: record.request.reason().clone(),
            queue_id: queue,
            at: now,
        };
        // The transfer happened whatever the ledger says now; if this save fails, the record stays
        // in TransferPending and the worker's read-back completes it later.
        let _ = self.ledger.save(record, true, std::slice::from_ref(&event)).await;
        Ok(HandoffOutcome::Transferred {
            handoff_id: record.id,
            conversation_id: record.request.conversation_id(),
            queue_id: queue,
            replayed: false,
        })
    }

    /// A retryable stop: keep the stage, release the lease, answer 503.
    async fn stop(&self, record: &mut HandoffRecord, error: PortError, step: &str) -> HandoffError {
        record.add_correlation_id(error.correlation_id());
        if !error.is_retryable() {
            return self.fail(record, error).await;
        }
        let retry_after = match &error {
            PortError::RateLimited { retry_after: Some(d), .. } => (*d).max(Duration::from_secs(1)),
            _ => self.settings.unavailable_retry_after,
        };
        record.stalled(self.clock.now(), format!("{step}: {error}"));
        if let Err(e) = self.ledger.save(record, true, &[]).await {
            return self.ledger_unavailable(Some(record.id), &e);
        }
        HandoffError::Unavailable { handoff_id: Some(record.id), retry_after }
    }

    /// A permanent failure: record it and answer it.
    async fn fail(&self, record: &mut HandoffRecord, error: PortError) -> HandoffError {
        let id = Some(record.id);
        let err = match error {
            PortError::NotFound { what, correlation_id } if what == "conversation" => {
                HandoffError::ConversationNotFound { handoff_id: id, correlation_id }
            }
            PortError::NotFound { what, correlation_id } => HandoffError::UpstreamRejected {
                handoff_id: id,
                status: 404,
                code: format!("{what}.not.found"),
                correlation_id,
            },
            PortError::InvalidState { detail, .. } => HandoffError::NotTransferable { handoff_id: id, message: detail },
            PortError::Rejected { status, code, correlation_id } => {
                HandoffError::UpstreamRejected { handoff_id: id, status, code, correlation_id }
            }
            // Retryable classes are handled by `stop`; treat a stray one as unavailable.
            other => {
                return HandoffError::Unavailable {
                    handoff_id: id,
                    retry_after: match other {
                        PortError::RateLimited { retry_after: Some(d), .. } => d,
                        _ => self.settings.unavailable_retry_after,
                    },
                }
            }
        };
        self.record_failure(record, &err).await;
        err
    }

    async fn not_transferable(&self, record: &mut HandoffRecord, message: String) -> HandoffError {
        let err = HandoffError::NotTransferable { handoff_id: Some(record.id), message };
        self.record_failure(record, &err).await;
        err
    }

    async fn record_failure(&self, record: &mut HandoffRecord, err: &HandoffError) {
        let (status, code) = match err {
            HandoffError::ConversationNotFound { .. } => (404, "conversation_not_found".to_owned()),
            HandoffError::NotTransferable { .. } => (422, "conversation_not_transferable".to_owned()),
            HandoffError::UpstreamRejected { status, code, .. } => (502, format!("upstream_rejected:{status}:{code}")),
            _ => (503, "upstream_unavailable".to_owned()),
        };
        let now = self.clock.now();
        if record.advance(Stage::Failed, now, err.to_string()).is_ok() {
            record.answer = Some(StoredAnswer::Failed { status, code, message: err.to_string() });
        }
        // A failed save leaves a resumable record; the answer given is the same either way.
        let _ = self.ledger.save(record, true, &[]).await;
    }

    fn move_to(&self, record: &mut HandoffRecord, to: Stage, note: &str) -> Step<()> {
        record
            .advance(to, self.clock.now(), note)
            .map_err(|e| HandoffError::NotTransferable { handoff_id: Some(record.id), message: e.to_string() })
    }

    fn note(&self, record: &mut HandoffRecord, note: &str) {
        let stage = record.stage;
        record.history.push(crate::lifecycle::HistoryEntry { at: self.clock.now(), stage, note: note.to_owned() });
    }

    fn ledger_unavailable(&self, handoff_id: Option<HandoffId>, _error: &LedgerError) -> HandoffError {
        HandoffError::Unavailable { handoff_id, retry_after: self.settings.unavailable_retry_after }
    }

    fn report(
        &self,
        record: &HandoffRecord,
        started: DateTime<Utc>,
        background: bool,
        outcome: Result<&'static str, &'static str>,
    ) {
        self.observer.observe(&OutcomeReport {
            handoff_id: Some(record.id),
            conversation_id: record.request.conversation_id(),
            reason: record.request.reason().as_str().to_owned(),
            queue_id: record.queue,
            outcome: outcome.unwrap_or_else(|e| e),
            background,
            duration: (self.clock.now() - started).to_std().unwrap_or_default(),
            correlation_ids: record.correlation_ids.clone(),
        });
    }

    fn report_early(
        &self,
        request: &HandoffRequest,
        handoff_id: Option<HandoffId>,
        started: DateTime<Utc>,
        outcome: Result<&'static str, &HandoffError>,
    ) {
        self.observer.observe(&OutcomeReport {
            handoff_id,
            conversation_id: request.conversation_id(),
            reason: request.reason().as_str().to_owned(),
            queue_id: None,
            outcome: outcome.unwrap_or_else(HandoffError::kind),
            background: false,
            duration: (self.clock.now() - started).to_std().unwrap_or_default(),
            correlation_ids: Vec::new(),
        });
    }
}

fn outcome_name(outcome: &HandoffOutcome) -> &'static str {
    match outcome {
        HandoffOutcome::Transferred { .. } => "transferred",
        HandoffOutcome::Deferred { .. } => "deferred",
    }
}

/// The stored answer of a finished (or deferred) record, marked as a replay.
fn replay(record: &HandoffRecord) -> Step<HandoffOutcome> {
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
        // Failed records are never replayed (the ledger starts a new one); be safe anyway.
        _ => Err(HandoffError::InProgress { handoff_id: record.id, retry_after: Duration::from_secs(1) }),
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `2^attempts` seconds, capped.
fn outbox_backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempts.min(32)).unwrap_or(u64::MAX)).min(max)
}
