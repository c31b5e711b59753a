//! `HandoffService`: the use case. One webhook delivery (or one background check) drives one
//! ledger record through the lifecycle, calling the ports in the order CONTRACT §5 sets:
//! locate → choose queue → admit (or defer) → write context → transfer → record.
//!
//! Advisory mode ([`HandoffService::advise`], `?mode=advise`) runs the same steps up to the
//! context write and stops there: the flow that called it transfers the conversation itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::admission::{Admission, AdmissionPolicy};
use crate::attributes::AttributeSet;
use crate::ids::{ConversationId, HandoffId, QueueId};
use crate::lifecycle::{
    AdviceDecision, Confirmation, HandoffKey, HandoffMode, HandoffRecord, Stage, StoredAnswer, Unconfirmed,
};
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

/// When the confirmation reads of an advice to transfer happen, as offsets from the advice: the
/// first after `first`, then doubling the wait each time (5, 15, 35, 75 s, …), and the last at
/// exactly `window`. With the defaults (5 s, 120 s): 5, 15, 35, 75 and 120 s.
pub fn confirmation_reads(first: Duration, window: Duration) -> Vec<Duration> {
    let first = first.max(Duration::from_millis(1));
    let mut reads = Vec::new();
    let (mut at, mut step) = (first, first);
    while at < window {
        reads.push(at);
        step = step.saturating_mul(2);
        at = at.saturating_add(step);
    }
    reads.push(window);
    reads
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

/// What the start of a delivery found.
enum Started {
    /// Nothing to do: this is the answer.
    Answered(HandoffOutcome),
    /// A leased record to work on.
    Work(Box<HandoffRecord>),
}

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
        match self.start(&request, idempotency_key, started, HandoffMode::Transfer).await? {
            Started::Answered(outcome) => Ok(outcome),
            Started::Work(record) => self.drive(*record, started, false).await,
        }
    }

    /// Handles one advisory delivery (`?mode=advise`): validates, chooses the queue, checks
    /// capacity (the chosen queue, then the fallback) and writes the context attributes onto the
    /// customer participant, in both decisions; then records the advice in the ledger. Never
    /// transfers, and never hands a `Defer` advice to the deferral worker.
    ///
    /// A repeat with the same key replays the stored answer, whichever mode first answered it, so
    /// a conversation a transfer-mode delivery already handed off is never advised again. An
    /// unfinished transfer-mode record past `Received` (it may have transferred) is left to
    /// transfer mode: answered 409, and the worker or the next transfer-mode delivery finishes it.
    ///
    /// # Errors
    /// The same [`HandoffError`]s, with the same statuses, as [`handle`](Self::handle).
    pub async fn advise(
        &self,
        request: HandoffRequest,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<HandoffOutcome, HandoffError> {
        let started = self.clock.now();
        let mut record = match self.start(&request, idempotency_key, started, HandoffMode::Advise).await? {
            Started::Answered(outcome) => return Ok(outcome),
            Started::Work(record) => *record,
        };
        // The lease `begin` just took is kept: the worker claims the record once it lapses.
        if record.stage != Stage::Received {
            let err = HandoffError::InProgress { handoff_id: record.id, retry_after: self.settings.busy_retry_after };
            self.report(&record, started, false, Err(err.kind()));
            return Err(err);
        }
        let result = self.advise_record(&mut record).await;
        self.report(&record, started, false, result.as_ref().map(outcome_name).map_err(HandoffError::kind));
        result
    }

    /// The start every delivery shares: the allowlist (before anything is written or called), the
    /// ledger's `begin`, and the answers that need no work (409 while someone holds the record, the
    /// stored answer of a finished one). Returns the leased record otherwise.
    async fn start(
        &self,
        request: &HandoffRequest,
        idempotency_key: Option<IdempotencyKey>,
        started: DateTime<Utc>,
        mode: HandoffMode,
    ) -> Step<Started> {
        self.settings.routing.choose(request)?;
        let key = HandoffKey::new(request.conversation_id(), idempotency_key);
        let s = &self.settings;
        let begin = match self.ledger.begin(&key, request, started, s.lease, s.reuse_after, mode).await {
            Ok(b) => b,
            Err(e) => {
                let err = self.ledger_unavailable(None, &e);
                self.report_early(request, None, started, Err(&err));
                return Err(err);
            }
        };
        match begin {
            Begin::Busy { handoff_id } => {
                let err = HandoffError::InProgress { handoff_id, retry_after: s.busy_retry_after };
                self.report_early(request, Some(handoff_id), started, Err(&err));
                Err(err)
            }
            Begin::Replay(record) => {
                let result = replay(&record);
                self.report(&record, started, false, result.as_ref().map(|_| "replayed").map_err(HandoffError::kind));
                result.map(Started::Answered)
            }
            Begin::Fresh(record) | Begin::Resume(record) => Ok(Started::Work(Box::new(record))),
        }
    }

    /// One tick of the background worker: re-checks due deferred handoffs, makes the due
    /// confirmation reads of advices to transfer, resumes work a crashed instance left, and
    /// finishes handoffs released after a 503 whose caller did not come back within
    /// [`ServiceSettings::resume_after`], at most `limit` records. In the background, a
    /// conversation that can no longer be handed off (ended, the guest left, the bot no longer
    /// holds it) ends the handoff as [`Stage::Abandoned`], without a transfer.
    ///
    /// The claimed records are driven concurrently (at most
    /// [`ServiceSettings::outbox_concurrency`] at once), so a restart that finds many handoffs a
    /// dead instance left finishes them together rather than one after another.
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger cannot be used.
    pub async fn run_due(&self, limit: usize) -> Result<TickReport, LedgerError> {
        use futures::StreamExt as _;

        let now = self.clock.now();
        let claimed = self.ledger.claim_due(now, limit, self.settings.lease).await?;
        let mut report = TickReport { claimed: claimed.len(), ..TickReport::default() };
        let mut finished = futures::stream::iter(claimed.into_iter().map(|record| async move {
            // An advisory delivery that never finished (a crash): never transfer it.
            if record.stage == Stage::Received && record.answer.as_ref().is_some_and(StoredAnswer::is_advising) {
                self.abandon_advice(record, now).await;
                return true;
            }
            // An advice to transfer due for a confirmation read: never transferred, only read.
            if record.stage == Stage::Advised {
                return self.confirm(record, now).await;
            }
            match self.drive(record, now, true).await {
                Ok(HandoffOutcome::Transferred { .. } | HandoffOutcome::Advised(_))
                | Err(
                    HandoffError::NotTransferable { .. }
                    | HandoffError::ConversationNotFound { .. }
                    | HandoffError::UpstreamRejected { .. }
                    | HandoffError::Invalid(_)
                    | HandoffError::Abandoned { .. },
                ) => true,
                Ok(HandoffOutcome::Deferred { .. })
                | Err(HandoffError::Unavailable { .. } | HandoffError::InProgress { .. }) => false,
            }
        }))
        .buffer_unordered(self.settings.outbox_concurrency.max(1));
        while let Some(done) = finished.next().await {
            if done {
                report.done += 1;
            } else {
                report.later += 1;
            }
        }
        Ok(report)
    }

    /// How many analytics events one [`deliver_analytics`](Self::deliver_analytics) call takes at
    /// most: two rounds of `outbox_concurrency` deliveries, so a batch finishes within its claim
    /// even when every call takes the whole upstream budget (the lease is at least twice that).
    pub fn outbox_batch(&self) -> usize {
        self.settings.outbox_concurrency.max(1).saturating_mul(2)
    }

    /// One tick of the analytics outbox: delivers at most `limit` due events (and never more
    /// than [`outbox_batch`](Self::outbox_batch)), rescheduling failures with exponential backoff.
    /// Never touches a transfer.
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger cannot be used. Deliveries not started by then are left
    /// for the next claim, once this one's lease ends.
    pub async fn deliver_analytics(&self, limit: usize) -> Result<TickReport, LedgerError> {
        use futures::StreamExt as _;

        let entries =
            self.ledger.claim_outbox(self.clock.now(), limit.min(self.outbox_batch()), self.settings.lease).await?;
        let mut report = TickReport { claimed: entries.len(), ..TickReport::default() };
        // At most `outbox_concurrency` deliveries at once, so the tags of a busy minute never
        // take the upstream permits that live handoffs are waiting for. Each delivery is marked as
        // soon as it ends; concurrent marks share the ledger's commits. Once a mark fails, the
        // deliveries not yet started are skipped: their marks would fail too.
        let ledger_failed = std::sync::atomic::AtomicBool::new(false);
        let ledger_failed = &ledger_failed;
        let mut finished = futures::stream::iter(entries.into_iter().map(|entry| async move {
            if ledger_failed.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
            let marked = match self.analytics.record(&entry.event).await {
                Ok(_) => self.ledger.finish_outbox(entry.id, None, None).await.map(|()| Some(true)),
                Err(e) => {
                    let backoff = outbox_backoff(entry.attempts, self.settings.outbox_backoff_max);
                    let retry_at = crate::lifecycle::later(self.clock.now(), backoff);
                    self.ledger.finish_outbox(entry.id, Some(retry_at), Some(e.to_string())).await.map(|()| Some(false))
                }
            };
            if marked.is_err() {
                ledger_failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            marked
        }))
        .buffer_unordered(self.settings.outbox_concurrency.max(1));
        let mut failure = None;
        while let Some(result) = finished.next().await {
            match result {
                Ok(Some(true)) => report.done += 1,
                Ok(Some(false)) => report.later += 1,
                Ok(None) => {}
                // The deliveries already running still end; their marks may land.
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Drives a leased record as far as it goes now, then reports the outcome.
    async fn drive(&self, mut record: HandoffRecord, started: DateTime<Utc>, background: bool) -> Step<HandoffOutcome> {
        let result = self.advance(&mut record, background).await;
        self.report(&record, started, background, result.as_ref().map(outcome_name).map_err(HandoffError::kind));
        result
    }

    /// `background`: the worker drives the record, and nobody waits for an answer: a
    /// conversation found untransferable ends the record as [`Stage::Abandoned`] instead of
    /// [`Stage::Failed`].
    async fn advance(&self, record: &mut HandoffRecord, background: bool) -> Step<HandoffOutcome> {
        let primary = match record.stage {
            Stage::Deferred => record.queue.unwrap_or(self.settings.routing.default_queue()),
            // Checked before `begin` for deliveries; a resumed record whose queue left the
            // configuration since is finished as invalid rather than retried forever.
            _ => self.choose_queue(record).await?,
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
            Err(e) if record.stage == Stage::TransferPending => return Err(self.read_back_failed(record, e).await),
            Err(e) => return Err(self.stop(record, e, "conversation lookup").await),
        };
        record.add_correlation_id(snapshot.correlation_id.as_deref());

        if record.stage == Stage::TransferPending {
            // A transfer may have happened: read back before anything else.
            let queue = record.queue.unwrap_or(primary);
            if snapshot.is_in_queue(queue) {
                return self.transferred(record, queue, "read back: the conversation is in the queue", &snapshot).await;
            }
            if !snapshot.has_ended() {
                self.move_to(record, Stage::ContextWritten, "read back: the transfer did not apply")?;
            }
        }

        let customer = self.check_conversation(record, &snapshot, background).await?;
        let early_holder = self.early_holder(record, &snapshot, background).await?;

        let queue = match (record.stage, admitted) {
            (_, Some(q)) => q,
            (Stage::ContextWritten | Stage::TransferPending, _) => record.queue.unwrap_or(primary),
            _ => match self.admit(record, primary).await? {
                Some(q) => q,
                None => return self.defer(record, primary).await,
            },
        };
        if snapshot.is_in_queue(queue) {
            return self.transferred(record, queue, "the conversation was already in the queue", &snapshot).await;
        }

        let holder = match early_holder.map_or_else(|| self.select_holder(record, &snapshot), Ok) {
            Ok(h) => h,
            Err(message) => return Err(self.untransferable(record, message, background).await),
        };

        let attributes = self.attributes(record).await?;
        // A record in `ContextWritten` already wrote the context onto this customer: only the
        // transfer is left.
        let context_needed = !(record.stage == Stage::ContextWritten && record.customer == Some(customer));
        let mut pending = record.clone();
        pending.queue = Some(queue);
        pending.holder = Some(holder);
        // `customer` names whom the context was written onto: until the write succeeds, the
        // stored record keeps the previous value, so recovery never takes the context as written.
        if !context_needed {
            pending.customer = Some(customer);
        }
        let note = match context_needed {
            true => format!("writing the context, then transferring to queue {queue}"),
            false => format!("context written; transferring to queue {queue}"),
        };
        self.move_to(&mut pending, Stage::TransferPending, &note)?;
        // The context write and the `TransferPending` save do not depend on each other, so they
        // run together; the transfer waits for both. The save renews the lease so it covers the
        // transfer and a read-back, and is fenced, so a record someone else took over meanwhile
        // is never transferred from here. If the context write fails, the record is stored back in
        // its earlier stage (`stop`, same fence). If that store is lost (a crash, or the ledger
        // failing), the stored `TransferPending` makes recovery read the conversation back first;
        // it then finds no customer with the context and writes it before transferring.
        let write_context = async {
            match context_needed {
                true => {
                    self.transfer.write_context(record.request.conversation_id(), customer, &attributes).await.map(Some)
                }
                false => Ok(None),
            }
        };
        let (context, saved) = futures::join!(write_context, self.ledger.save(&pending, self.hold(), &[]));
        let receipt = match context {
            Ok(receipt) => receipt,
            Err(e) => return Err(self.stop(record, e, "writing participant data").await),
        };
        if let Err(e) = saved {
            return Err(self.ledger_unavailable(Some(record.id), &e));
        }
        *record = pending;
        record.customer = Some(customer);
        if let Some(receipt) = receipt {
            record.add_correlation_id(receipt.correlation_id.as_deref());
        }

        match self.transfer.transfer(record.request.conversation_id(), holder, queue).await {
            Ok(receipt) => {
                record.add_correlation_id(receipt.correlation_id.as_deref());
                self.transferred(record, queue, "transferred", &snapshot).await
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
            // The holder let go or the conversation ended meanwhile: nobody to hand off for.
            Err(PortError::InvalidState { detail, correlation_id }) if background => {
                record.add_correlation_id(correlation_id.as_deref());
                Err(self.abandon(record, detail).await)
            }
            Err(e) => Err(self.fail(record, e).await),
        }
    }

    /// The queue the request routes to; a request whose queue left the configuration is
    /// finished as invalid (checked before `begin` for deliveries, so this catches resumed records).
    async fn choose_queue(&self, record: &mut HandoffRecord) -> Step<QueueId> {
        match self.settings.routing.choose(&record.request) {
            Ok(queue) => Ok(queue),
            Err(e) => {
                let err = HandoffError::Invalid(e);
                self.record_failure(record, &err).await;
                Err(err)
            }
        }
    }

    /// The participant data for the agent; a request whose context cannot fit Genesys' limits
    /// fails the record as not transferable.
    async fn attributes(&self, record: &mut HandoffRecord) -> Step<AttributeSet> {
        match AttributeSet::for_handoff(&record.request, record.id, self.clock.now()) {
            Ok(attributes) => Ok(attributes),
            Err(e) => Err(self.not_transferable(record, e.to_string()).await),
        }
    }

    /// Works out the advice for a leased `Received` record: locate → admit → write context →
    /// finish. Errors stop or fail the record exactly as in transfer mode.
    async fn advise_record(&self, record: &mut HandoffRecord) -> Step<HandoffOutcome> {
        let primary = self.choose_queue(record).await?;
        // `begin` (in advise mode) stored the record with the `Advising` mark: whenever this stops
        // or crashes from here on, crash recovery finishes the record instead of transferring it.
        record.queue = Some(primary);
        self.note(record, "advisory mode: the flow transfers, the service does not");

        let snapshot = match self.transfer.locate(record.request.conversation_id()).await {
            Ok(s) => s,
            Err(e) => return Err(self.stop(record, e, "conversation lookup").await),
        };
        record.add_correlation_id(snapshot.correlation_id.as_deref());
        let customer = self.check_conversation(record, &snapshot, false).await?;
        // The same refusals as transfer mode: the flow could not transfer such a conversation either.
        self.early_holder(record, &snapshot, false).await?;
        let admitted = self.admit(record, primary).await?;

        // The context is written in both decisions: after a `Defer` the flow usually transfers
        // anyway (after telling the guest), and the agent needs the context either way.
        let attributes = self.attributes(record).await?;
        match self.transfer.write_context(record.request.conversation_id(), customer, &attributes).await {
            Ok(receipt) => record.add_correlation_id(receipt.correlation_id.as_deref()),
            Err(e) => return Err(self.stop(record, e, "writing participant data").await),
        }

        let (queue, decision) = match admitted {
            Some(queue) => (queue, AdviceDecision::Transfer),
            None => (primary, AdviceDecision::Defer { retry_after: self.settings.recheck_every }),
        };
        record.queue = Some(queue);
        record.customer = Some(customer);
        record.last_error = None;
        let note = match decision {
            AdviceDecision::Transfer => format!("advised: transfer to queue {queue}; context written, not transferred"),
            AdviceDecision::Defer { .. } => format!("advised: defer, queue {queue} has no capacity; context written"),
        };
        self.move_to(record, Stage::Advised, &note)?;
        record.answer = Some(StoredAnswer::Advised { queue, decision, confirmation: None });
        // An advice to transfer is confirmed by background reads of the conversation.
        record.next_check_at = match decision {
            AdviceDecision::Transfer => Some(crate::lifecycle::later(self.clock.now(), self.settings.confirm_first)),
            AdviceDecision::Defer { .. } => None,
        };
        // The advice is true whatever the ledger says now. If this save fails the record stays
        // marked `Advising`, and crash recovery finishes it without a transfer.
        let _ = self.ledger.save(record, None, &[]).await;
        Ok(HandoffOutcome::Advised(Advice {
            handoff_id: record.id,
            conversation_id: record.request.conversation_id(),
            queue_id: queue,
            decision,
            replayed: false,
        }))
    }

    /// One confirmation read of an advice to transfer (a claimed `Advised` record): looks the
    /// conversation up, never changes it. Records `Confirmed` once it is in a queue, `Unconfirmed`
    /// once it ended or someone else has it, or at the last read of the schedule
    /// ([`confirmation_reads`]); otherwise schedules the next read. Returns whether it finished.
    async fn confirm(&self, mut record: HandoffRecord, started: DateTime<Utc>) -> bool {
        let Some(StoredAnswer::Advised { queue: advised, decision: AdviceDecision::Transfer, confirmation: None }) =
            record.answer.clone()
        else {
            // Nothing to confirm (a defer advice, or already confirmed): stop reading.
            record.next_check_at = None;
            let _ = self.ledger.save(&record, None, &[]).await;
            return true;
        };
        let now = self.clock.now();
        let advised_at = record.advised_at().unwrap_or(record.updated_at);
        let elapsed = (now - advised_at).to_std().unwrap_or_default();
        let found = match self.transfer.locate(record.request.conversation_id()).await {
            Ok(snapshot) => {
                record.add_correlation_id(snapshot.correlation_id.as_deref());
                if let Some(queue) = snapshot.reached_queue() {
                    Ok(Confirmation::Confirmed { queue, after: elapsed })
                } else if snapshot.has_ended() {
                    Ok(Confirmation::Unconfirmed { why: Unconfirmed::Ended })
                } else if snapshot.has_agent() || snapshot.holders().next().is_none() {
                    Ok(Confirmation::Unconfirmed { why: Unconfirmed::Elsewhere })
                } else {
                    Err(Unconfirmed::StillWithFlow)
                }
            }
            Err(PortError::NotFound { .. }) => Ok(Confirmation::Unconfirmed { why: Unconfirmed::Ended }),
            Err(e) => {
                record.add_correlation_id(e.correlation_id());
                Err(Unconfirmed::Unknown)
            }
        };
        let next = confirmation_reads(self.settings.confirm_first, self.settings.confirm_for)
            .into_iter()
            .find(|offset| *offset > elapsed)
            .map(|offset| crate::lifecycle::later(advised_at, offset));
        let confirmation = match (found, next) {
            (Ok(confirmation), _) => confirmation,
            (Err(why), None) => Confirmation::Unconfirmed { why },
            (Err(_), Some(next)) => {
                // Not yet: the next read is due later. Released, so any instance may take it.
                record.next_check_at = Some(next);
                // A failed save leaves it claimed until the lease lapses; it is read again then.
                let _ = self.ledger.save(&record, None, &[]).await;
                return false;
            }
        };
        let note = match confirmation {
            Confirmation::Confirmed { queue, after } => {
                let other = if queue == advised { String::new() } else { format!(" (advised {advised})") };
                format!("confirmed: in queue {queue}{other} {} s after the advice", after.as_secs())
            }
            Confirmation::Unconfirmed { why } => format!("unconfirmed: {}", why.as_str()),
        };
        self.note(&mut record, &note);
        record.updated_at = now;
        record.next_check_at = None;
        record.answer = Some(StoredAnswer::Advised {
            queue: advised,
            decision: AdviceDecision::Transfer,
            confirmation: Some(confirmation),
        });
        let _ = self.ledger.save(&record, None, &[]).await;
        let outcome = match confirmation {
            Confirmation::Confirmed { .. } => "confirmed",
            Confirmation::Unconfirmed { .. } => "unconfirmed",
        };
        self.report(&record, started, true, Ok(outcome));
        true
    }

    /// Crash recovery of an advisory record: finish it as failed (a later delivery starts anew);
    /// nothing is transferred.
    async fn abandon_advice(&self, mut record: HandoffRecord, started: DateTime<Utc>) {
        let message = "the advisory delivery was interrupted; nothing was transferred".to_owned();
        if record.advance(Stage::Failed, self.clock.now(), message.clone()).is_ok() {
            record.answer =
                Some(StoredAnswer::Failed { status: 503, code: "upstream_unavailable".to_owned(), message });
        }
        let _ = self.ledger.save(&record, None, &[]).await;
        self.report(&record, started, true, Err("advice_interrupted"));
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
                self.transferred(record, queue, "transfer outcome unknown; read back: in the queue", &snapshot).await
            }
            Ok(snapshot) => {
                record.add_correlation_id(snapshot.correlation_id.as_deref());
                self.move_to(record, Stage::ContextWritten, "transfer outcome unknown; read back: not applied")?;
                let error = PortError::Transient { detail: detail.to_owned(), correlation_id: None };
                Err(self.stop(record, error, "transfer").await)
            }
            Err(e) => Err(self.read_back_failed(record, e).await),
        }
    }

    /// The read-back of a transfer with an unknown outcome failed: the outcome is still unknown,
    /// so the record stays in `TransferPending` and the next attempt reads back first. A lookup
    /// error of any class answers 503, never `Failed`: a failed record lets a new handoff of the
    /// conversation start and transfer it a second time.
    async fn read_back_failed(&self, record: &mut HandoffRecord, error: PortError) -> HandoffError {
        let error = match error {
            e if e.is_retryable() => e,
            e => PortError::Transient { detail: e.to_string(), correlation_id: e.correlation_id().map(str::to_owned) },
        };
        self.stop(record, error, "reading the conversation back").await
    }

    /// The customer participant of a conversation that can still be handed off: not ended, and
    /// the guest still in it (a guest who left gets no agent, so nothing is transferred).
    async fn check_conversation(
        &self,
        record: &mut HandoffRecord,
        snapshot: &ConversationSnapshot,
        background: bool,
    ) -> Step<crate::ids::ParticipantId> {
        let problem = match snapshot.customer() {
            _ if snapshot.has_ended() => "the conversation has ended",
            None => "the conversation has no customer participant",
            Some(c) if !c.active => "the guest has left the conversation",
            Some(c) => return Ok(c.id),
        };
        Err(self.untransferable(record, problem.to_owned(), background).await)
    }

    /// The holder, checked as soon as the conversation is located, so an untransferable
    /// conversation is refused now instead of being deferred (202) and failed by the worker later.
    /// `None` when the conversation already sits in an allowed queue (there may be nothing to
    /// replace; the caller decides once the queue is chosen).
    async fn early_holder(
        &self,
        record: &mut HandoffRecord,
        snapshot: &ConversationSnapshot,
        background: bool,
    ) -> Step<Option<crate::ids::ParticipantId>> {
        let routing = &self.settings.routing;
        if snapshot.queues().any(|q| routing.is_allowed(q)) {
            return Ok(None);
        }
        match self.select_holder(record, snapshot) {
            Ok(holder) => Ok(Some(holder)),
            Err(message) => Err(self.untransferable(record, message, background).await),
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
                if snapshot.participants.iter().any(|p| p.id == wanted && p.is_agent) {
                    return Err(format!("participant {wanted} is an agent; agents are never replaced"));
                }
                snapshot
                    .holders()
                    .find(|p| p.id == wanted)
                    .map(|p| p.id)
                    .ok_or_else(|| format!("participant {wanted} does not hold the conversation"))
            }
            None => snapshot.holders().next().map(|p| p.id).ok_or_else(|| {
                if snapshot.has_agent() {
                    "an agent already handles the conversation".to_owned()
                } else {
                    "no participant holds the conversation".to_owned()
                }
            }),
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
            Admission::AdmitUnchecked(why) => {
                self.note(record, &format!("queue {primary} admitted on partial figures: {why}"));
                return Ok(Some(primary));
            }
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
                    Admission::AdmitUnchecked(why) => {
                        self.note(record, &format!("overflow to fallback queue {fallback} on partial figures: {why}"));
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
        record.next_check_at = Some(crate::lifecycle::later(now, s.recheck_every));
        if record.defer_until.is_none() {
            record.defer_until = Some(crate::lifecycle::later(now, s.defer_for));
        }
        let first = record.stage != Stage::Deferred;
        self.move_to(record, Stage::Deferred, if first { "deferred: no capacity" } else { "still no capacity" })?;
        if first {
            record.answer = Some(StoredAnswer::Deferred { queue: primary, retry_after: s.recheck_every });
        }
        if let Err(e) = self.ledger.save(record, None, &[]).await {
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

    /// The transfer happened. `snapshot` is the latest lookup of the conversation: the external
    /// tag is queued (through the outbox) unless it is switched off or the lookup shows a tag
    /// someone else set, which ours would replace.
    async fn transferred(
        &self,
        record: &mut HandoffRecord,
        queue: QueueId,
        note: &str,
        snapshot: &ConversationSnapshot,
    ) -> Step<HandoffOutcome> {
        let now = self.clock.now();
        record.queue = Some(queue);
        record.next_check_at = None;
        record.last_error = None;
        self.move_to(record, Stage::Transferred, note)?;
        record.answer = Some(StoredAnswer::Transferred { queue });
        let tag = self.settings.external_tag && !snapshot.has_foreign_tag();
        if self.settings.external_tag && !tag {
            self.note(record, "external tag not written: the conversation carries a tag someone else set");
        }
        let event = HandoffEvent {
            handoff_id: record.id,
            conversation_id: record.request.conversation_id(),
            reason: record.request.reason().clone(),
            queue_id: queue,
            at: now,
        };
        let events = if tag { std::slice::from_ref(&event) } else { &[] };
        // The transfer happened whatever the ledger says now; if this save fails, the record stays
        // in TransferPending and the worker's read-back completes it later. So the answer does not
        // wait for the commit (see `LedgerPort::save_detached`).
        self.ledger.save_detached(record, events).await;
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
        let retry_after = self.retry_after(&error);
        record.stalled(self.clock.now(), format!("{step}: {error}"));
        // The caller of a deferred handoff was told not to call again, so only the worker retries
        // it: keep the lease, and `claim_due` takes the record up again once the lease lapses
        // (a released `ContextWritten`/`TransferPending` record would never be claimed).
        let worker_owned = matches!(record.answer, Some(StoredAnswer::Deferred { .. }));
        let hold = if worker_owned { self.hold() } else { None };
        if !worker_owned {
            // Released for the caller's retry; if none comes by then, the worker finishes it
            // (`claim_due` takes released unfinished records once `next_check_at` has come).
            record.next_check_at = Some(crate::lifecycle::later(self.clock.now(), self.settings.resume_after));
        }
        if let Err(e) = self.ledger.save(record, hold, &[]).await {
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
            other => return HandoffError::Unavailable { handoff_id: id, retry_after: self.retry_after(&other) },
        };
        self.record_failure(record, &err).await;
        err
    }

    /// `Retry-After` for a retryable failure: Genesys' own wait (at least 1 s) when it gave one.
    fn retry_after(&self, error: &PortError) -> Duration {
        match error {
            PortError::RateLimited { retry_after: Some(d), .. } => (*d).max(Duration::from_secs(1)),
            _ => self.settings.unavailable_retry_after,
        }
    }

    /// The conversation cannot be handed off: a delivery's 422, or in the background (nobody is
    /// waiting for an answer) the end of the handoff as abandoned.
    async fn untransferable(&self, record: &mut HandoffRecord, message: String, background: bool) -> HandoffError {
        match background {
            true => self.abandon(record, message).await,
            false => self.not_transferable(record, message).await,
        }
    }

    /// Ends the record as [`Stage::Abandoned`]: nothing was (or will be) transferred.
    async fn abandon(&self, record: &mut HandoffRecord, message: String) -> HandoffError {
        let err = HandoffError::Abandoned { handoff_id: Some(record.id), message };
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
            HandoffError::Invalid(_) => (400, "invalid_payload".to_owned()),
            HandoffError::UpstreamRejected { status, code, .. } => (502, format!("upstream_rejected:{status}:{code}")),
            HandoffError::Abandoned { .. } => (422, "handoff_abandoned".to_owned()),
            _ => (503, "upstream_unavailable".to_owned()),
        };
        let now = self.clock.now();
        let terminal = match err {
            HandoffError::Abandoned { .. } => Stage::Abandoned,
            _ => Stage::Failed,
        };
        record.next_check_at = None;
        if record.advance(terminal, now, err.to_string()).is_ok() {
            record.answer = Some(StoredAnswer::Failed { status, code, message: err.to_string() });
        }
        // A failed save leaves a resumable record; the answer given is the same either way.
        let _ = self.ledger.save(record, None, &[]).await;
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

    /// A lease from now for [`ServiceSettings::lease`].
    fn hold(&self) -> Option<DateTime<Utc>> {
        Some(crate::lifecycle::later(self.clock.now(), self.settings.lease))
    }

    /// The answer when the ledger refused: 409 when someone else took the record over (they
    /// finish it), else 503.
    fn ledger_unavailable(&self, handoff_id: Option<HandoffId>, error: &LedgerError) -> HandoffError {
        match (error, handoff_id) {
            (LedgerError::LeaseLost, Some(handoff_id)) => {
                HandoffError::InProgress { handoff_id, retry_after: self.settings.busy_retry_after }
            }
            _ => HandoffError::Unavailable { handoff_id, retry_after: self.settings.unavailable_retry_after },
        }
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
        HandoffOutcome::Advised(Advice { decision: AdviceDecision::Transfer, .. }) => "advised_transfer",
        HandoffOutcome::Advised(Advice { decision: AdviceDecision::Defer { .. }, .. }) => "advised_defer",
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

#[cfg(test)]
fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `2^attempts` seconds, capped.
fn outbox_backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempts.min(32)).unwrap_or(u64::MAX)).min(max)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::admission::CapacitySnapshot;
    use crate::ids::ParticipantId;
    use crate::memory::InMemoryLedger;
    use crate::ports::{
        MockAnalyticsPort, MockClock, MockLedgerPort, MockOutcomeObserver, MockQueuePort, MockTransferPort,
        ParticipantView, Receipt,
    };
    use crate::testkit::sample_payload;
    use futures::executor::block_on;
    use proptest::prelude::*;
    use serde_json::json;

    const CONVERSATION: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
    const CUSTOMER: &str = "c0000000-0000-4000-8000-000000000001";
    const BOT: &str = "b0000000-0000-4000-8000-000000000001";
    const SECOND_HOLDER: &str = "b0000000-0000-4000-8000-000000000002";
    const STRANGER: &str = "e0000000-0000-4000-8000-000000000001";
    const ACD: &str = "a0000000-0000-4000-8000-000000000001";
    const DEFAULT_QUEUE: &str = "00000000-0000-4000-8000-000000000001";
    const RESET_QUEUE: &str = "00000000-0000-4000-8000-000000000002";
    const FALLBACK_QUEUE: &str = "00000000-0000-4000-8000-000000000003";
    const UNLISTED_QUEUE: &str = "00000000-0000-4000-8000-000000000099";

    fn conversation_id() -> ConversationId {
        ConversationId::parse(CONVERSATION).expect("valid")
    }
    fn pid(raw: &str) -> ParticipantId {
        ParticipantId::parse(raw).expect("valid")
    }
    fn qid(raw: &str) -> QueueId {
        QueueId::parse(raw).expect("valid")
    }

    /// The tutorial's sample request (reason `complex_billing_dispute`: not routed, so the default queue).
    fn request() -> HandoffRequest {
        HandoffRequest::from_json(&sample_payload(), &crate::ids::OpaqueIds).expect("valid")
    }

    fn request_with(field: &str, value: serde_json::Value) -> HandoffRequest {
        let mut payload = sample_payload();
        payload[field] = value;
        HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("valid")
    }

    fn routing() -> RoutingPolicy {
        RoutingPolicy::new(
            qid(DEFAULT_QUEUE),
            [("password_reset".to_owned(), qid(RESET_QUEUE))].into_iter().collect(),
            Some(qid(FALLBACK_QUEUE)),
        )
    }

    // ---- upstream fixtures ----------------------------------------------------------------

    fn participant(id: &str, is_customer: bool, active: bool, queue: Option<QueueId>) -> ParticipantView {
        ParticipantView { id: pid(id), is_customer, is_agent: false, active, queue }
    }

    fn snapshot(participants: Vec<ParticipantView>, transferred_to: Vec<QueueId>) -> ConversationSnapshot {
        ConversationSnapshot {
            id: conversation_id(),
            participants,
            transferred_to,
            correlation_id: Some("corr-locate".to_owned()),
            external_tag: None,
        }
    }

    /// The guest talking to the bot: a customer and one holder.
    fn live() -> ConversationSnapshot {
        snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, true, None)], vec![])
    }

    /// The conversation after a transfer to `queue` applied.
    fn in_queue(queue: &str) -> ConversationSnapshot {
        snapshot(
            vec![
                participant(CUSTOMER, true, true, None),
                participant(BOT, false, false, None),
                participant(ACD, false, true, Some(qid(queue))),
            ],
            vec![qid(queue)],
        )
    }

    fn ended() -> ConversationSnapshot {
        snapshot(vec![participant(CUSTOMER, true, false, None), participant(BOT, false, false, None)], vec![])
    }

    fn capacity(queue: &str, idle: u32) -> CapacitySnapshot {
        CapacitySnapshot::idle_for_tests(qid(queue), idle, 0)
    }

    fn transient() -> PortError {
        PortError::Transient { detail: "timeout".to_owned(), correlation_id: Some("corr-transient".to_owned()) }
    }

    fn receipt(corr: &str) -> Receipt {
        Receipt { correlation_id: Some(corr.to_owned()) }
    }

    // ---- the harness ------------------------------------------------------------------------

    /// The mocked ports for one delivery or tick. Expectations are verified when the service
    /// built from them is dropped, so each delivery checks its own call counts.
    #[derive(Default)]
    struct Ports {
        queue: MockQueuePort,
        transfer: MockTransferPort,
        analytics: MockAnalyticsPort,
    }

    impl Ports {
        /// Ports that fail the test on any call.
        fn silent() -> Self {
            let mut p = Ports::default();
            p.queue.expect_capacity().never();
            p.transfer.expect_locate().never();
            p.transfer.expect_write_context().never();
            p.transfer.expect_transfer().never();
            p.analytics.expect_record().never();
            p
        }

        fn locate(&mut self, times: usize, result: Result<ConversationSnapshot, PortError>) -> &mut Self {
            self.transfer
                .expect_locate()
                .withf(|c| *c == conversation_id())
                .times(times)
                .returning(move |_| result.clone());
            self
        }

        fn capacity(&mut self, queue: &str, times: usize, result: Result<CapacitySnapshot, PortError>) -> &mut Self {
            let queue = qid(queue);
            self.queue
                .expect_capacity()
                .withf(move |q, _| *q == queue)
                .times(times)
                .returning(move |_, _| result.clone());
            self
        }

        /// Expects `times` context writes on the customer participant; returns what was written.
        fn write_context(&mut self, times: usize, result: Result<Receipt, PortError>) -> Arc<Mutex<Vec<AttributeSet>>> {
            let written = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&written);
            self.transfer
                .expect_write_context()
                .withf(|c, customer, _| *c == conversation_id() && *customer == pid(CUSTOMER))
                .times(times)
                .returning(move |_, _, attributes| {
                    sink.lock().expect("not poisoned").push(attributes.clone());
                    result.clone()
                });
            written
        }

        fn transfer(
            &mut self,
            holder: &str,
            queue: &str,
            times: usize,
            result: Result<Receipt, PortError>,
        ) -> &mut Self {
            let (holder, queue) = (pid(holder), qid(queue));
            self.transfer
                .expect_transfer()
                .withf(move |c, h, q| *c == conversation_id() && *h == holder && *q == queue)
                .times(times)
                .returning(move |_, _, _| result.clone());
            self
        }

        fn no_capacity_call(&mut self) -> &mut Self {
            self.queue.expect_capacity().never();
            self
        }
        fn no_write(&mut self) -> &mut Self {
            self.transfer.expect_write_context().never();
            self
        }
        fn no_transfer(&mut self) -> &mut Self {
            self.transfer.expect_transfer().never();
            self
        }
        fn no_analytics(&mut self) -> &mut Self {
            self.analytics.expect_record().never();
            self
        }

        /// The whole happy path once: locate, admit on the default queue, write, transfer.
        fn happy(queue: &str) -> Self {
            let mut p = Ports::default();
            p.locate(1, Ok(live())).capacity(queue, 1, Ok(capacity(queue, 2))).transfer(
                BOT,
                queue,
                1,
                Ok(receipt("corr-transfer")),
            );
            p.write_context(1, Ok(receipt("corr-write")));
            p.no_analytics();
            p
        }
    }

    /// A real in-memory ledger and a hand-driven clock shared by every delivery of a test.
    struct Harness {
        ledger: Arc<InMemoryLedger>,
        now: Arc<Mutex<DateTime<Utc>>>,
        settings: ServiceSettings,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(|_| {})
        }

        fn with(tune: impl FnOnce(&mut ServiceSettings)) -> Self {
            let mut settings = ServiceSettings::new(routing());
            tune(&mut settings);
            let start = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(1_750_000_000);
            Self { ledger: Arc::new(InMemoryLedger::new()), now: Arc::new(Mutex::new(start)), settings }
        }

        fn clock(&self) -> MockClock {
            let now = Arc::clone(&self.now);
            let mut clock = MockClock::new();
            clock.expect_now().returning(move || *now.lock().expect("not poisoned"));
            clock
        }

        fn service(&self, ports: Ports) -> HandoffService {
            HandoffService::new(
                Arc::new(ports.queue),
                Arc::new(ports.transfer),
                Arc::new(ports.analytics),
                Arc::clone(&self.ledger) as Arc<dyn LedgerPort>,
                Arc::new(self.clock()),
                self.settings.clone(),
            )
        }

        fn now(&self) -> DateTime<Utc> {
            *self.now.lock().expect("not poisoned")
        }

        fn advance(&self, by: Duration) {
            *self.now.lock().expect("not poisoned") += chrono_duration(by);
        }

        fn deliver(&self, ports: Ports, request: HandoffRequest) -> Result<HandoffOutcome, HandoffError> {
            block_on(self.service(ports).handle(request, None))
        }

        fn tick(&self, ports: Ports) -> TickReport {
            block_on(self.service(ports).run_due(10)).expect("the in-memory ledger works")
        }

        /// The one record of the test conversation.
        fn record(&self) -> HandoffRecord {
            let mut all = block_on(self.ledger.find_by_conversation(conversation_id())).expect("ledger works");
            assert_eq!(all.len(), 1, "expected exactly one record: {all:?}");
            all.remove(0)
        }

        fn outbox(&self) -> Vec<HandoffEvent> {
            let far = self.now() + chrono::Duration::days(365);
            block_on(self.ledger.claim_outbox(far, 100, Duration::from_secs(1)))
                .expect("ledger works")
                .into_iter()
                .map(|e| e.event)
                .collect()
        }

        /// A first delivery that ends deferred (primary and fallback full).
        fn defer_one(&self) -> HandoffId {
            let mut ports = Ports::default();
            ports
                .locate(1, Ok(live()))
                .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
                .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 0)))
                .no_write()
                .no_transfer();
            match self.deliver(ports, request()) {
                Ok(HandoffOutcome::Deferred { handoff_id, .. }) => handoff_id,
                other => panic!("expected a deferral, got {other:?}"),
            }
        }
    }

    fn transferred_to(outcome: &Result<HandoffOutcome, HandoffError>) -> (QueueId, bool) {
        match outcome {
            Ok(HandoffOutcome::Transferred { queue_id, replayed, conversation_id: c, .. }) => {
                assert_eq!(*c, conversation_id());
                (*queue_id, *replayed)
            }
            other => panic!("expected a transfer, got {other:?}"),
        }
    }

    fn unavailable(outcome: &Result<HandoffOutcome, HandoffError>) -> (Option<HandoffId>, Duration) {
        match outcome {
            Err(HandoffError::Unavailable { handoff_id, retry_after }) => (*handoff_id, *retry_after),
            other => panic!("expected 503 unavailable, got {other:?}"),
        }
    }

    // ---- webhook deliveries -----------------------------------------------------------------

    /// One happy delivery with `lookup` as the conversation and the settings tuned; the record
    /// and the outbox after it.
    fn deliver_happy(
        lookup: ConversationSnapshot,
        tune: impl FnOnce(&mut ServiceSettings),
    ) -> (HandoffRecord, Vec<HandoffEvent>) {
        let harness = Harness::with(tune);
        let mut ports = Ports::default();
        ports.locate(1, Ok(lookup)).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Ok(receipt("corr-transfer")),
        );
        ports.write_context(1, Ok(receipt("corr-write")));
        ports.no_analytics();
        let outcome = harness.deliver(ports, request());
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        (harness.record(), harness.outbox())
    }

    #[test]
    fn the_external_tag_is_queued_by_default_and_replaces_one_of_ours() {
        // Arrange: a conversation tagged by an earlier handoff of ours
        let lookup = ConversationSnapshot { external_tag: Some("bot-handoff:earlier".into()), ..live() };

        // Act
        let (_, events) = deliver_happy(lookup, |_| {});

        // Assert
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn the_external_tag_switched_off_queues_nothing() {
        let (record, events) = deliver_happy(live(), |s| s.external_tag = false);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(record.stage, Stage::Transferred);
    }

    #[test]
    fn a_tag_someone_else_set_is_never_replaced() {
        // Arrange
        let lookup = ConversationSnapshot { external_tag: Some("crm-case-1234".into()), ..live() };

        // Act
        let (record, events) = deliver_happy(lookup, |_| {});

        // Assert
        assert!(events.is_empty(), "{events:?}");
        assert!(record.history.iter().any(|h| h.note.contains("tag someone else set")), "{:?}", record.history);
    }

    #[test]
    fn a_queue_with_unknown_figures_is_admitted_and_the_record_says_so() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .capacity(DEFAULT_QUEUE, 1, Ok(CapacitySnapshot::unknown(qid(DEFAULT_QUEUE))))
            .transfer(BOT, DEFAULT_QUEUE, 1, Ok(receipt("corr-transfer")));
        ports.write_context(1, Ok(receipt("corr-write")));
        ports.no_analytics();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        let record = harness.record();
        assert!(record.history.iter().any(|h| h.note.contains("admitted on partial figures")), "{:?}", record.history);
    }

    #[test]
    fn three_agents_in_one_chat_each_with_capacity_four_go_to_the_target_not_the_fallback() {
        // Arrange: the issue's scenario; nobody idle
        let harness = Harness::new();
        let busy = CapacitySnapshot {
            queue: qid(DEFAULT_QUEUE),
            figures: crate::QueueFigures {
                agents: Some(crate::AgentCounts { interacting: 3, ..Default::default() }),
                interacting: Some(3),
                alerting: Some(0),
                waiting: Some(0),
            },
            message_capacity: Some(4),
            estimated_wait: None,
        };
        let mut ports = Ports::default();
        ports.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(busy)).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Ok(receipt("corr-transfer")),
        );
        ports.queue.expect_capacity().withf(|q, _| *q == qid(FALLBACK_QUEUE)).never();
        ports.write_context(1, Ok(receipt("corr-write")));
        ports.no_analytics();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    }

    #[test]
    fn a_valid_handoff_writes_the_context_on_the_customer_then_transfers_the_holder() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Ok(receipt("corr-transfer")),
        );
        let written = ports.write_context(1, Ok(receipt("corr-write")));
        ports.no_analytics();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert: the answer
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        // Assert: every context entry and reserved key went onto the customer participant
        let written = written.lock().expect("not poisoned");
        let attributes = &written[0];
        let record = harness.record();
        assert_eq!(attributes.get("attempted_resolution"), Some("refund_policy_explained"));
        assert_eq!(attributes.get("sentiment_score"), Some("0.32"));
        assert_eq!(attributes.get("bot_handoff_reason"), Some("complex_billing_dispute"));
        assert_eq!(attributes.get("bot_handoff_id"), Some(record.id.to_string().as_str()));
        assert!(attributes.get("bot_handoff_at").is_some());
        assert_eq!(attributes.get("guest_id"), Some("guest-8842-xyz"));
        assert_eq!(attributes.get("guest_name"), Some("Jane Doe"));
        assert_eq!(attributes.get("guest_email"), Some("jane.doe@example.com"));
        assert_eq!(attributes.len(), 8);
        // Assert: the record and the outbox
        assert_eq!(record.stage, Stage::Transferred);
        assert_eq!(record.answer, Some(StoredAnswer::Transferred { queue: qid(DEFAULT_QUEUE) }));
        assert_eq!((record.holder, record.customer), (Some(pid(BOT)), Some(pid(CUSTOMER))));
        for corr in ["corr-locate", "corr-write", "corr-transfer"] {
            assert!(record.correlation_ids.iter().any(|c| c == corr), "{corr} not kept: {:?}", record.correlation_ids);
        }
        let events = harness.outbox();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].handoff_id, record.id);
        assert_eq!(events[0].queue_id, qid(DEFAULT_QUEUE));
        assert_eq!(events[0].reason.as_str(), "complex_billing_dispute");
    }

    #[test]
    fn a_second_delivery_of_a_transferred_handoff_is_replayed_without_any_upstream_call() {
        // Arrange
        let harness = Harness::new();
        let first = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

        // Act
        let second = harness.deliver(Ports::silent(), request());

        // Assert
        assert_eq!(transferred_to(&second), (qid(DEFAULT_QUEUE), true));
        let (
            Ok(HandoffOutcome::Transferred { handoff_id: a, .. }),
            Ok(HandoffOutcome::Transferred { handoff_id: b, .. }),
        ) = (&first, &second)
        else {
            panic!("both deliveries transfer");
        };
        assert_eq!(a, b, "the same handoff");
        assert_eq!(harness.outbox().len(), 1, "a replay adds no analytics event");
    }

    #[test]
    fn a_new_handoff_of_the_same_conversation_starts_once_the_old_one_is_older_than_ten_minutes() {
        // Arrange
        let harness = Harness::new();
        harness.deliver(Ports::happy(DEFAULT_QUEUE), request()).expect("first handoff transfers");
        harness.advance(Duration::from_secs(600));

        // Act
        let again = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

        // Assert
        assert_eq!(transferred_to(&again), (qid(DEFAULT_QUEUE), false));
    }

    #[test]
    fn the_route_for_the_reason_chooses_the_queue() {
        // Arrange
        let harness = Harness::new();
        let request = request_with("handoffReason", json!("password_reset"));

        // Act
        let outcome = harness.deliver(Ports::happy(RESET_QUEUE), request);

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(RESET_QUEUE), false));
    }

    #[test]
    fn an_allowed_payload_queue_is_used() {
        // Arrange
        let harness = Harness::new();
        let request = request_with("queueId", json!(FALLBACK_QUEUE));

        // Act
        let outcome = harness.deliver(Ports::happy(FALLBACK_QUEUE), request);

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(FALLBACK_QUEUE), false));
    }

    #[test]
    fn a_payload_queue_outside_the_allowlist_is_refused_before_any_write_or_call() {
        // Arrange
        let harness = Harness::new();
        let request = request_with("queueId", json!(UNLISTED_QUEUE));

        // Act
        let outcome = harness.deliver(Ports::silent(), request);

        // Assert
        match outcome {
            Err(HandoffError::Invalid(errors)) => assert_eq!(errors.errors()[0].field, "queueId"),
            other => panic!("expected 400, got {other:?}"),
        }
        let records = block_on(harness.ledger.find_by_conversation(conversation_id())).expect("ledger works");
        assert!(records.is_empty(), "nothing recorded: {records:?}");
    }

    #[test]
    fn with_the_capacity_check_off_no_capacity_is_read() {
        // Arrange
        let harness = Harness::with(|s| s.admission.minimum = 0);
        let mut ports = Ports::default();
        ports.locate(1, Ok(live())).no_capacity_call().transfer(BOT, DEFAULT_QUEUE, 1, Ok(receipt("corr-transfer")));
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    }

    #[test]
    fn the_estimated_wait_is_asked_for_only_when_a_maximum_wait_is_set() {
        // Arrange
        let harness = Harness::with(|s| s.admission.max_wait = Some(Duration::from_secs(60)));
        let mut ports = Ports::default();
        ports.queue.expect_capacity().withf(|q, with_ewt| *q == qid(DEFAULT_QUEUE) && *with_ewt).times(1).returning(
            |_, _| Ok(CapacitySnapshot { estimated_wait: Some(Duration::from_secs(30)), ..capacity(DEFAULT_QUEUE, 1) }),
        );
        ports.locate(1, Ok(live())).transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    }

    #[test]
    fn the_fallback_queue_takes_the_handoff_when_the_primary_is_full() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
            .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 3)))
            .transfer(BOT, FALLBACK_QUEUE, 1, Ok(receipt("corr-transfer")));
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(FALLBACK_QUEUE), false));
        assert_eq!(harness.record().queue, Some(qid(FALLBACK_QUEUE)));
    }

    #[test]
    fn a_handoff_is_deferred_when_primary_and_fallback_are_full() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
            .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 0)))
            .no_write()
            .no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert: 202 data
        let record = harness.record();
        assert_eq!(
            outcome,
            Ok(HandoffOutcome::Deferred {
                handoff_id: record.id,
                conversation_id: conversation_id(),
                queue_id: qid(DEFAULT_QUEUE),
                retry_after: harness.settings.recheck_every,
                replayed: false,
            })
        );
        // Assert: the worker owns it now
        assert_eq!(record.stage, Stage::Deferred);
        assert_eq!(record.queue, Some(qid(DEFAULT_QUEUE)));
        assert_eq!(record.next_check_at, Some(harness.now() + chrono_duration(harness.settings.recheck_every)));
        assert_eq!(record.defer_until, Some(harness.now() + chrono_duration(harness.settings.defer_for)));
        assert!(harness.outbox().is_empty());
    }

    #[test]
    fn a_second_delivery_of_a_deferred_handoff_replays_the_deferral() {
        // Arrange
        let harness = Harness::new();
        let id = harness.defer_one();

        // Act
        let again = harness.deliver(Ports::silent(), request());

        // Assert
        match again {
            Ok(HandoffOutcome::Deferred { handoff_id, replayed: true, queue_id, .. }) => {
                assert_eq!((handoff_id, queue_id), (id, qid(DEFAULT_QUEUE)));
            }
            other => panic!("expected a replayed deferral, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_conversation_is_not_found() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(
                1,
                Err(PortError::NotFound {
                    what: "conversation".to_owned(),
                    correlation_id: Some("corr-404".to_owned()),
                }),
            )
            .no_capacity_call()
            .no_write()
            .no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        let record = harness.record();
        assert_eq!(
            outcome,
            Err(HandoffError::ConversationNotFound {
                handoff_id: Some(record.id),
                correlation_id: Some("corr-404".to_owned())
            })
        );
        assert_eq!(record.stage, Stage::Failed);
        assert!(matches!(record.answer, Some(StoredAnswer::Failed { status: 404, .. })), "{:?}", record.answer);
    }

    fn assert_not_transferable(outcome: &Result<HandoffOutcome, HandoffError>, needle: &str) {
        match outcome {
            Err(HandoffError::NotTransferable { handoff_id: Some(_), message }) => {
                assert!(message.contains(needle), "{message:?} does not mention {needle:?}");
            }
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn an_ended_conversation_is_not_transferable() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports.locate(1, Ok(ended())).no_capacity_call().no_write().no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_not_transferable(&outcome, "ended");
        assert_eq!(harness.record().stage, Stage::Failed);
    }

    #[test]
    fn a_conversation_no_participant_holds_is_not_transferable_even_when_queues_are_full() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        let unheld =
            snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, false, None)], vec![]);
        ports.locate(1, Ok(unheld)).no_capacity_call().no_write().no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert: refused now, not deferred and failed later
        assert_not_transferable(&outcome, "no participant holds");
        assert_eq!(harness.record().stage, Stage::Failed);
    }

    #[test]
    fn a_participant_id_naming_the_customer_is_not_transferable() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports.locate(1, Ok(live())).no_capacity_call().no_write().no_transfer();

        // Act
        let outcome = harness.deliver(ports, request_with("participantId", json!(CUSTOMER)));

        // Assert
        assert_not_transferable(&outcome, "customer");
    }

    #[test]
    fn a_conversation_an_agent_already_handles_is_never_taken_from_the_agent() {
        // Arrange: the bot left, an agent answered
        let harness = Harness::new();
        let mut ports = Ports::default();
        let mut agent = participant(STRANGER, false, true, None);
        agent.is_agent = true;
        let with_agent = snapshot(
            vec![participant(CUSTOMER, true, true, None), participant(BOT, false, false, None), agent],
            vec![],
        );
        ports.locate(1, Ok(with_agent)).no_capacity_call().no_write().no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_not_transferable(&outcome, "agent already handles");
        assert_eq!(harness.record().stage, Stage::Failed);
    }

    #[test]
    fn a_participant_id_naming_an_agent_is_not_transferable() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        let mut agent = participant(STRANGER, false, true, None);
        agent.is_agent = true;
        let with_agent =
            snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, true, None), agent], vec![]);
        ports.locate(1, Ok(with_agent)).no_capacity_call().no_write().no_transfer();

        // Act
        let outcome = harness.deliver(ports, request_with("participantId", json!(STRANGER)));

        // Assert
        assert_not_transferable(&outcome, "is an agent");
    }

    #[test]
    fn a_participant_id_that_does_not_hold_the_conversation_is_not_transferable() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports.locate(1, Ok(live())).no_capacity_call().no_write().no_transfer();

        // Act
        let outcome = harness.deliver(ports, request_with("participantId", json!(STRANGER)));

        // Assert
        assert_not_transferable(&outcome, "does not hold");
    }

    #[test]
    fn the_participant_id_of_a_holder_chooses_the_participant_replaced() {
        // Arrange
        let harness = Harness::new();
        let two_holders = snapshot(
            vec![
                participant(BOT, false, true, None),
                participant(CUSTOMER, true, true, None),
                participant(SECOND_HOLDER, false, true, None),
            ],
            vec![],
        );
        let mut ports = Ports::default();
        ports.locate(1, Ok(two_holders)).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
            SECOND_HOLDER,
            DEFAULT_QUEUE,
            1,
            Ok(Receipt::default()),
        );
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let outcome = harness.deliver(ports, request_with("participantId", json!(SECOND_HOLDER)));

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        assert_eq!(harness.record().holder, Some(pid(SECOND_HOLDER)));
    }

    #[test]
    fn a_conversation_already_in_the_chosen_queue_is_answered_transferred_without_a_transfer() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(in_queue(DEFAULT_QUEUE)))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
            .no_write()
            .no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        assert_eq!(harness.record().stage, Stage::Transferred);
        assert_eq!(harness.outbox().len(), 1);
    }

    #[test]
    fn a_rejected_transfer_is_reported_with_upstream_status_code_and_correlation_id() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Err(PortError::Rejected {
                status: 403,
                code: "missing.permissions".to_owned(),
                correlation_id: Some("corr-403".to_owned()),
            }),
        );
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        let record = harness.record();
        assert_eq!(
            outcome,
            Err(HandoffError::UpstreamRejected {
                handoff_id: Some(record.id),
                status: 403,
                code: "missing.permissions".to_owned(),
                correlation_id: Some("corr-403".to_owned()),
            })
        );
        assert_eq!(record.stage, Stage::Failed);
        assert!(harness.outbox().is_empty());
    }

    #[test]
    fn a_transient_lookup_failure_answers_503_and_the_retry_resumes_the_same_handoff() {
        // Arrange
        let harness = Harness::new();
        let mut first = Ports::default();
        first.locate(1, Err(transient())).no_capacity_call().no_write().no_transfer();
        let outcome = harness.deliver(first, request());
        let (id, retry_after) = unavailable(&outcome);

        // Act
        let retry = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

        // Assert
        assert_eq!(id, Some(harness.record().id));
        assert_eq!(retry_after, harness.settings.unavailable_retry_after);
        assert_eq!(transferred_to(&retry), (qid(DEFAULT_QUEUE), false));
        let record = harness.record();
        assert_eq!(Some(record.id), id, "the retry resumed the same handoff");
        assert_eq!(record.attempts, 2);
    }

    #[test]
    fn a_transient_capacity_failure_answers_503_and_the_retry_resumes_the_same_handoff() {
        // Arrange
        let harness = Harness::new();
        let mut first = Ports::default();
        first.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Err(transient())).no_write().no_transfer();
        let (id, _) = unavailable(&harness.deliver(first, request()));

        // Act
        let retry = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

        // Assert
        assert_eq!(transferred_to(&retry), (qid(DEFAULT_QUEUE), false));
        assert_eq!(Some(harness.record().id), id);
    }

    #[test]
    fn a_transient_context_write_failure_answers_503_and_the_retry_resumes_the_same_handoff() {
        // Arrange
        let harness = Harness::new();
        let mut first = Ports::default();
        first.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).no_transfer();
        first.write_context(1, Err(transient()));
        let (id, _) = unavailable(&harness.deliver(first, request()));
        assert_eq!(harness.record().stage, Stage::Received);

        // Act
        let retry = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

        // Assert
        assert_eq!(transferred_to(&retry), (qid(DEFAULT_QUEUE), false));
        assert_eq!(Some(harness.record().id), id);
    }

    /// An in-memory ledger with chosen faults.
    struct FaultyLedger {
        inner: Arc<InMemoryLedger>,
        /// Saves fail unless the record is `TransferPending`: a context write that fails after the
        /// overlapped `TransferPending` save, then a ledger that cannot store the record back
        /// (as after a crash at that moment).
        only_pending_saves: bool,
        /// Marking an outbox entry fails.
        failing_marks: bool,
    }

    #[async_trait::async_trait]
    impl LedgerPort for FaultyLedger {
        async fn begin(
            &self,
            key: &HandoffKey,
            request: &HandoffRequest,
            now: DateTime<Utc>,
            lease: Duration,
            reuse_after: Duration,
            mode: HandoffMode,
        ) -> Result<crate::ports::Begin, LedgerError> {
            self.inner.begin(key, request, now, lease, reuse_after, mode).await
        }
        async fn save(
            &self,
            record: &HandoffRecord,
            hold_until: Option<DateTime<Utc>>,
            events: &[HandoffEvent],
        ) -> Result<(), LedgerError> {
            match record.stage {
                Stage::TransferPending => self.inner.save(record, hold_until, events).await,
                _ if self.only_pending_saves => Err(LedgerError::Unavailable("down".to_owned())),
                _ => self.inner.save(record, hold_until, events).await,
            }
        }
        async fn get(&self, id: HandoffId) -> Result<Option<HandoffRecord>, LedgerError> {
            self.inner.get(id).await
        }
        async fn find_by_conversation(&self, c: ConversationId) -> Result<Vec<HandoffRecord>, LedgerError> {
            self.inner.find_by_conversation(c).await
        }
        async fn claim_due(
            &self,
            now: DateTime<Utc>,
            limit: usize,
            lease: Duration,
        ) -> Result<Vec<HandoffRecord>, LedgerError> {
            self.inner.claim_due(now, limit, lease).await
        }
        async fn claim_outbox(
            &self,
            now: DateTime<Utc>,
            limit: usize,
            lease: Duration,
        ) -> Result<Vec<crate::ports::OutboxEntry>, LedgerError> {
            self.inner.claim_outbox(now, limit, lease).await
        }
        async fn finish_outbox(
            &self,
            id: i64,
            retry_at: Option<DateTime<Utc>>,
            error: Option<String>,
        ) -> Result<(), LedgerError> {
            match self.failing_marks {
                true => Err(LedgerError::Unavailable("down".to_owned())),
                false => self.inner.finish_outbox(id, retry_at, error).await,
            }
        }
        async fn outbox_backlog(&self) -> Result<u64, LedgerError> {
            self.inner.outbox_backlog().await
        }
        async fn stats(&self, since: DateTime<Utc>) -> Result<Vec<crate::ports::StatRow>, LedgerError> {
            self.inner.stats(since).await
        }
        async fn outcomes(&self, since: DateTime<Utc>) -> Result<Vec<crate::OutcomeFacts>, LedgerError> {
            self.inner.outcomes(since).await
        }
        async fn erase_guest(&self, guest: &crate::GuestId) -> Result<u64, LedgerError> {
            self.inner.erase_guest(guest).await
        }
        async fn purge_personal_data(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, LedgerError> {
            self.inner.purge_personal_data(before, limit).await
        }
        async fn ping(&self) -> Result<(), LedgerError> {
            self.inner.ping().await
        }
    }

    #[test]
    fn a_transfer_pending_record_left_by_a_failed_context_write_writes_the_context_on_recovery() {
        // Arrange: the context write fails, and the record cannot be stored back: the ledger keeps
        // the `TransferPending` saved alongside the write
        let harness = Harness::new();
        let mut first = Ports::default();
        first.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).no_transfer();
        first.write_context(1, Err(transient()));
        let service = HandoffService::new(
            Arc::new(first.queue),
            Arc::new(first.transfer),
            Arc::new(first.analytics),
            Arc::new(FaultyLedger {
                inner: Arc::clone(&harness.ledger),
                only_pending_saves: true,
                failing_marks: false,
            }),
            Arc::new(harness.clock()),
            harness.settings.clone(),
        );
        assert!(block_on(service.handle(request(), None)).is_err());
        assert_eq!(harness.record().stage, Stage::TransferPending);
        harness.advance(harness.settings.lease + Duration::from_secs(1));

        // Act: the worker takes the record up
        let mut ports = Ports::default();
        ports.locate(1, Ok(live())).transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));
        let written = ports.write_context(1, Ok(Receipt::default()));
        let report = harness.tick(ports);

        // Assert: the context was written before the transfer
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        assert_eq!(written.lock().expect("not poisoned").len(), 1, "transferred without the context");
        assert_eq!(harness.record().stage, Stage::Transferred);
        assert_eq!(harness.record().customer, Some(pid(CUSTOMER)));
    }

    #[test]
    fn a_rate_limit_answers_503_with_the_upstream_retry_after() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(1, Err(PortError::RateLimited { retry_after: Some(Duration::from_secs(7)), correlation_id: None }))
            .no_capacity_call()
            .no_write()
            .no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(unavailable(&outcome), (Some(harness.record().id), Duration::from_secs(7)));
    }

    #[test]
    fn a_rate_limit_without_retry_after_answers_the_configured_retry_after() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .capacity(DEFAULT_QUEUE, 1, Err(PortError::RateLimited { retry_after: None, correlation_id: None }))
            .no_write()
            .no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(unavailable(&outcome).1, harness.settings.unavailable_retry_after);
    }

    #[test]
    fn a_transient_transfer_failure_keeps_the_written_context_and_the_retry_transfers_once() {
        // Arrange
        let harness = Harness::new();
        let mut first = Ports::default();
        first.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Err(transient()),
        );
        first.write_context(1, Ok(Receipt::default()));
        unavailable(&harness.deliver(first, request()));
        assert_eq!(harness.record().stage, Stage::ContextWritten);
        let mut retry = Ports::default();
        retry.locate(1, Ok(live())).no_capacity_call().no_write().transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Ok(Receipt::default()),
        );

        // Act
        let outcome = harness.deliver(retry, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        assert_eq!(harness.record().stage, Stage::Transferred);
    }

    #[test]
    fn an_indeterminate_transfer_that_applied_is_confirmed_by_read_back_with_one_transfer_call() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .locate(1, Ok(in_queue(DEFAULT_QUEUE)))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
            .transfer(
                BOT,
                DEFAULT_QUEUE,
                1,
                Err(PortError::Indeterminate { detail: "response timed out".to_owned(), correlation_id: None }),
            );
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        assert_eq!(harness.record().stage, Stage::Transferred);
        assert_eq!(harness.outbox().len(), 1);
    }

    #[test]
    fn an_indeterminate_transfer_that_did_not_apply_answers_503_and_the_retry_transfers_once() {
        // Arrange
        let harness = Harness::new();
        let mut first = Ports::default();
        first.locate(2, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Err(PortError::Indeterminate { detail: "connection reset".to_owned(), correlation_id: None }),
        );
        first.write_context(1, Ok(Receipt::default()));
        let (id, _) = unavailable(&harness.deliver(first, request()));
        assert_eq!(harness.record().stage, Stage::ContextWritten);
        let mut retry = Ports::default();
        retry.locate(1, Ok(live())).no_capacity_call().no_write().transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Ok(Receipt::default()),
        );

        // Act
        let outcome = harness.deliver(retry, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        assert_eq!(Some(harness.record().id), id);
    }

    #[test]
    fn a_record_left_transfer_pending_is_read_back_before_any_new_transfer() {
        // Arrange: the transfer's outcome is unknown and the read-back fails too.
        let harness = Harness::new();
        let mut first = Ports::default();
        first
            .locate(1, Ok(live()))
            .locate(1, Err(transient()))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
            .transfer(
                BOT,
                DEFAULT_QUEUE,
                1,
                Err(PortError::Indeterminate { detail: "response timed out".to_owned(), correlation_id: None }),
            );
        first.write_context(1, Ok(Receipt::default()));
        unavailable(&harness.deliver(first, request()));
        assert_eq!(harness.record().stage, Stage::TransferPending);
        let mut retry = Ports::default();
        retry.locate(1, Ok(in_queue(DEFAULT_QUEUE))).no_capacity_call().no_write().no_transfer();

        // Act
        let outcome = harness.deliver(retry, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        assert_eq!(harness.record().stage, Stage::Transferred);
    }

    #[test]
    fn a_record_left_transfer_pending_that_did_not_apply_is_transferred_once_on_resume() {
        // Arrange
        let harness = Harness::new();
        let mut first = Ports::default();
        first
            .locate(1, Ok(live()))
            .locate(1, Err(transient()))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
            .transfer(
                BOT,
                DEFAULT_QUEUE,
                1,
                Err(PortError::Indeterminate { detail: "response timed out".to_owned(), correlation_id: None }),
            );
        first.write_context(1, Ok(Receipt::default()));
        unavailable(&harness.deliver(first, request()));
        let mut retry = Ports::default();
        retry.locate(1, Ok(live())).no_capacity_call().no_write().transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Ok(Receipt::default()),
        );

        // Act
        let outcome = harness.deliver(retry, request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
        let stages: Vec<Stage> = harness.record().history.iter().map(|h| h.stage).collect();
        assert!(stages.ends_with(&[Stage::ContextWritten, Stage::TransferPending, Stage::Transferred]), "{stages:?}");
    }

    /// Delivery 1: the transfer's outcome is unknown and the read-back fails with `error`.
    fn lose_a_transfer_response(harness: &Harness, read_back: PortError) -> Result<HandoffOutcome, HandoffError> {
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .locate(1, Err(read_back))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
            .transfer(
                BOT,
                DEFAULT_QUEUE,
                1,
                Err(PortError::Indeterminate { detail: "response timed out".to_owned(), correlation_id: None }),
            );
        ports.write_context(1, Ok(Receipt::default()));
        harness.deliver(ports, request())
    }

    #[test]
    fn a_rejected_read_back_keeps_the_transfer_pending_so_no_later_delivery_transfers_again() {
        // Arrange: found by the property below. A 4xx on the read-back used to fail the record,
        // and a failed record let the next delivery start a new handoff and transfer again.
        let harness = Harness::new();
        let rejected = PortError::Rejected { status: 400, code: "bad.request".to_owned(), correlation_id: None };
        let first = lose_a_transfer_response(&harness, rejected);
        let mut retry = Ports::default();
        retry.locate(1, Ok(in_queue(DEFAULT_QUEUE))).no_capacity_call().no_write().no_transfer();

        // Act
        let second = harness.deliver(retry, request());

        // Assert
        let (id, _) = unavailable(&first);
        assert_eq!(transferred_to(&second), (qid(DEFAULT_QUEUE), false));
        assert_eq!(Some(harness.record().id), id, "the same handoff, not a new one");
    }

    #[test]
    fn a_resumed_transfer_pending_record_stays_pending_whatever_its_lookup_fails_with() {
        // Arrange
        let harness = Harness::new();
        unavailable(&lose_a_transfer_response(&harness, transient()));
        let mut retry = Ports::default();
        retry
            .locate(1, Err(PortError::NotFound { what: "conversation".to_owned(), correlation_id: None }))
            .no_capacity_call()
            .no_write()
            .no_transfer();

        // Act
        let outcome = harness.deliver(retry, request());

        // Assert
        unavailable(&outcome);
        assert_eq!(harness.record().stage, Stage::TransferPending);
    }

    #[test]
    fn a_duplicate_delivery_while_the_handoff_runs_is_answered_in_progress() {
        // Arrange: another delivery holds the lease.
        let harness = Harness::new();
        let key = HandoffKey::new(conversation_id(), None);
        let s = &harness.settings;
        let held = block_on(harness.ledger.begin(
            &key,
            &request(),
            harness.now(),
            s.lease,
            s.reuse_after,
            HandoffMode::Transfer,
        ))
        .expect("ledger works");
        let Begin::Fresh(held) = held else { panic!("expected a fresh record") };

        // Act
        let outcome = harness.deliver(Ports::silent(), request());

        // Assert
        assert_eq!(
            outcome,
            Err(HandoffError::InProgress { handoff_id: held.id, retry_after: harness.settings.busy_retry_after })
        );
    }

    #[test]
    fn a_ledger_outage_answers_503_before_any_upstream_call() {
        // Arrange
        let harness = Harness::new();
        let mut ledger = MockLedgerPort::new();
        ledger.expect_begin().times(1).returning(|_, _, _, _, _, _| Err(LedgerError::Unavailable("down".to_owned())));
        let ports = Ports::silent();
        let service = HandoffService::new(
            Arc::new(ports.queue),
            Arc::new(ports.transfer),
            Arc::new(ports.analytics),
            Arc::new(ledger),
            Arc::new(harness.clock()),
            harness.settings.clone(),
        );

        // Act
        let outcome = block_on(service.handle(request(), None));

        // Assert
        assert_eq!(unavailable(&outcome), (None, harness.settings.unavailable_retry_after));
    }

    // ---- the deferral worker ----------------------------------------------------------------

    #[test]
    fn the_worker_transfers_a_deferred_handoff_once_capacity_returns() {
        // Arrange
        let harness = Harness::new();
        let id = harness.defer_one();
        harness.advance(harness.settings.recheck_every);
        let mut ports = Ports::default();
        ports.capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).locate(1, Ok(live())).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Ok(Receipt::default()),
        );
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let report = harness.tick(ports);

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        let record = harness.record();
        assert_eq!((record.id, record.stage), (id, Stage::Transferred));
        assert_eq!(harness.outbox().len(), 1);
        assert_eq!(transferred_to(&harness.deliver(Ports::silent(), request())), (qid(DEFAULT_QUEUE), true));
    }

    #[test]
    fn the_worker_does_nothing_before_a_deferred_handoff_is_due() {
        // Arrange
        let harness = Harness::new();
        harness.defer_one();
        harness.advance(harness.settings.recheck_every - Duration::from_secs(1));

        // Act
        let report = harness.tick(Ports::silent());

        // Assert
        assert_eq!(report, TickReport::default());
    }

    #[test]
    fn the_worker_reschedules_a_deferred_handoff_while_the_queues_are_full_without_a_lookup() {
        // Arrange
        let harness = Harness::new();
        harness.defer_one();
        harness.advance(harness.settings.recheck_every);
        let mut ports = Ports::default();
        ports.capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0))).capacity(
            FALLBACK_QUEUE,
            1,
            Ok(capacity(FALLBACK_QUEUE, 0)),
        );
        ports.transfer.expect_locate().never();
        ports.no_write().no_transfer();

        // Act
        let report = harness.tick(ports);

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 0, later: 1 });
        let record = harness.record();
        assert_eq!(record.stage, Stage::Deferred);
        assert_eq!(record.next_check_at, Some(harness.now() + chrono_duration(harness.settings.recheck_every)));
    }

    #[test]
    fn the_worker_transfers_anyway_once_the_deferral_has_expired() {
        // Arrange
        let harness = Harness::new();
        harness.defer_one();
        harness.advance(harness.settings.defer_for);
        let mut ports = Ports::default();
        ports.no_capacity_call().locate(1, Ok(live())).transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let report = harness.tick(ports);

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        let record = harness.record();
        assert_eq!(record.stage, Stage::Transferred);
        assert!(record.history.iter().any(|h| h.note.contains("deferral expired")), "{:?}", record.history);
    }

    #[test]
    fn the_worker_resumes_a_handoff_a_crashed_instance_left() {
        // Arrange: a delivery began and its instance died holding the lease.
        let harness = Harness::new();
        let key = HandoffKey::new(conversation_id(), None);
        let s = &harness.settings;
        let begun = block_on(harness.ledger.begin(
            &key,
            &request(),
            harness.now(),
            s.lease,
            s.reuse_after,
            HandoffMode::Transfer,
        ));
        let Ok(Begin::Fresh(crashed)) = begun else { panic!("expected a fresh record") };
        harness.advance(harness.settings.lease + Duration::from_secs(1));

        // Act
        let report = harness.tick(Ports::happy(DEFAULT_QUEUE));

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        let record = harness.record();
        assert_eq!((record.id, record.stage), (crashed.id, Stage::Transferred));
    }

    // ---- handoffs nobody came back for ---------------------------------------------------------

    /// A first delivery that stops on a transient lookup failure: answered 503, record released.
    fn stall_one(harness: &Harness) -> HandoffId {
        let mut ports = Ports::default();
        ports.locate(1, Err(transient())).no_capacity_call().no_write().no_transfer();
        match unavailable(&harness.deliver(ports, request())) {
            (Some(id), _) => id,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    /// The outcome reports one tick sends to the observer, in order.
    fn tick_outcomes(harness: &Harness, ports: Ports) -> (TickReport, Vec<&'static str>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let mut observer = MockOutcomeObserver::new();
        observer.expect_observe().returning(move |r| sink.lock().expect("not poisoned").push(r.outcome));
        let service = harness.service(ports).with_observer(Arc::new(observer));
        let report = block_on(service.run_due(10)).expect("the in-memory ledger works");
        drop(service);
        let outcomes = seen.lock().expect("not poisoned").clone();
        (report, outcomes)
    }

    #[test]
    fn a_handoff_released_after_a_503_is_left_to_its_caller_until_resume_after() {
        // Arrange
        let harness = Harness::new();
        stall_one(&harness);
        harness.advance(harness.settings.resume_after - Duration::from_secs(1));

        // Act
        let report = harness.tick(Ports::silent());

        // Assert
        assert_eq!(report, TickReport::default());
        let record = harness.record();
        assert_eq!(record.stage, Stage::Received);
        assert_eq!(
            record.next_check_at,
            Some(harness.now() + chrono_duration(Duration::from_secs(1))),
            "the worker's turn comes resume_after after the 503"
        );
    }

    #[test]
    fn a_handoff_whose_caller_never_came_back_after_a_503_is_transferred_by_the_worker_when_the_bot_still_holds_it() {
        // Arrange
        let harness = Harness::with(|s| s.resume_after = Duration::from_secs(45));
        let id = stall_one(&harness);
        harness.advance(Duration::from_secs(45));

        // Act
        let (report, outcomes) = tick_outcomes(&harness, Ports::happy(DEFAULT_QUEUE));

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        assert_eq!(outcomes, vec!["transferred"]);
        let record = harness.record();
        assert_eq!((record.id, record.stage, record.next_check_at), (id, Stage::Transferred, None));
        assert_eq!(harness.outbox().len(), 1, "the analytics event is recorded once");
        // The bot coming back late gets the transfer replayed.
        assert_eq!(transferred_to(&harness.deliver(Ports::silent(), request())), (qid(DEFAULT_QUEUE), true));
    }

    #[test]
    fn a_handoff_whose_caller_never_came_back_is_deferred_by_the_worker_when_the_queues_are_full() {
        // Arrange
        let harness = Harness::new();
        stall_one(&harness);
        harness.advance(harness.settings.resume_after);
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
            .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 0)))
            .no_write()
            .no_transfer();

        // Act
        let report = harness.tick(ports);

        // Assert: the deferral rules apply from now on (re-check, then transfer by `defer_for`).
        assert_eq!(report, TickReport { claimed: 1, done: 0, later: 1 });
        let record = harness.record();
        assert_eq!(record.stage, Stage::Deferred);
        assert_eq!(record.next_check_at, Some(harness.now() + chrono_duration(harness.settings.recheck_every)));
        assert_eq!(record.defer_until, Some(harness.now() + chrono_duration(harness.settings.defer_for)));
    }

    #[test]
    fn a_handoff_whose_caller_never_came_back_ends_abandoned_when_the_bot_no_longer_holds_it() {
        let cases = [
            ("the conversation has ended", ended()),
            (
                "the guest has left the conversation",
                snapshot(vec![participant(CUSTOMER, true, false, None), participant(BOT, false, true, None)], vec![]),
            ),
            (
                "no participant holds the conversation",
                snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, false, None)], vec![]),
            ),
        ];
        for (why, conversation) in cases {
            // Arrange
            let harness = Harness::new();
            let id = stall_one(&harness);
            harness.advance(harness.settings.resume_after);
            let mut ports = Ports::default();
            ports.locate(1, Ok(conversation)).no_write().no_transfer().no_analytics();
            ports
                .queue
                .expect_capacity()
                .returning(|q, _| Ok(CapacitySnapshot { queue: q, ..capacity(DEFAULT_QUEUE, 2) }));

            // Act
            let (report, outcomes) = tick_outcomes(&harness, ports);

            // Assert
            assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 }, "{why}");
            assert_eq!(outcomes, vec!["abandoned"], "{why}");
            let record = harness.record();
            assert_eq!((record.id, record.stage), (id, Stage::Abandoned), "{why}");
            assert!(record.history.last().is_some_and(|h| h.note.contains(why)), "{why}: {:?}", record.history);
            assert!(harness.outbox().is_empty(), "{why}: nothing to report to analytics");
            assert_eq!(harness.tick(Ports::silent()), TickReport::default(), "{why}: abandoned is terminal");
        }
    }

    #[test]
    fn a_bot_that_comes_back_after_its_handoff_was_abandoned_starts_a_new_one() {
        // Arrange
        let harness = Harness::new();
        let abandoned = stall_one(&harness);
        harness.advance(harness.settings.resume_after);
        let mut ports = Ports::default();
        ports.locate(1, Ok(ended())).no_capacity_call().no_write().no_transfer();
        harness.tick(ports);

        // Act
        let mut again = Ports::default();
        again.locate(1, Ok(ended())).no_capacity_call().no_write().no_transfer();
        let outcome = harness.deliver(again, request());

        // Assert: a delivery is answered (422), never told "abandoned".
        assert!(matches!(outcome, Err(HandoffError::NotTransferable { handoff_id: Some(id), .. }) if id != abandoned));
    }

    #[test]
    fn a_deferred_handoff_whose_guest_left_ends_abandoned_without_a_transfer() {
        for (why, advance_by, capacity_calls) in
            [("capacity returned", Duration::from_secs(15), 1), ("the deferral expired", Duration::from_secs(300), 0)]
        {
            // Arrange
            let harness = Harness::new();
            let id = harness.defer_one();
            harness.advance(advance_by);
            let mut ports = Ports::default();
            ports.capacity(DEFAULT_QUEUE, capacity_calls, Ok(capacity(DEFAULT_QUEUE, 1))).locate(1, Ok(ended()));
            ports.no_write().no_transfer().no_analytics();

            // Act
            let (report, outcomes) = tick_outcomes(&harness, ports);

            // Assert
            assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 }, "{why}");
            assert_eq!(outcomes, vec!["abandoned"], "{why}");
            let record = harness.record();
            assert_eq!((record.id, record.stage), (id, Stage::Abandoned), "{why}");
        }
    }

    #[test]
    fn a_transfer_the_worker_finds_refused_because_the_holder_let_go_ends_abandoned() {
        // Arrange
        let harness = Harness::new();
        harness.defer_one();
        harness.advance(harness.settings.recheck_every);
        let mut ports = Ports::default();
        let gone =
            PortError::InvalidState { detail: "the holder is no longer connected".to_owned(), correlation_id: None };
        ports.capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).locate(1, Ok(live())).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Err(gone),
        );
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let report = harness.tick(ports);

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        assert_eq!(harness.record().stage, Stage::Abandoned);
    }

    #[test]
    fn a_delivery_for_a_conversation_the_guest_left_is_not_transferable() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(
                1,
                Ok(snapshot(
                    vec![participant(CUSTOMER, true, false, None), participant(BOT, false, true, None)],
                    vec![],
                )),
            )
            .no_capacity_call()
            .no_write()
            .no_transfer();

        // Act
        let outcome = harness.deliver(ports, request());

        // Assert
        assert_not_transferable(&outcome, "the guest has left");
        assert_eq!(harness.record().stage, Stage::Failed);
    }

    /// Lookups that wait until `expected` of them have started, then fail transiently.
    struct GatedLookups {
        started: Arc<std::sync::atomic::AtomicUsize>,
        expected: usize,
    }

    #[async_trait::async_trait]
    impl TransferPort for GatedLookups {
        async fn locate(&self, _c: ConversationId) -> Result<ConversationSnapshot, PortError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.started.fetch_add(1, SeqCst);
            futures::future::poll_fn(|cx| match self.started.load(SeqCst) >= self.expected {
                true => std::task::Poll::Ready(()),
                false => {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            Err(transient())
        }
        async fn write_context(
            &self,
            _c: ConversationId,
            _p: ParticipantId,
            _a: &AttributeSet,
        ) -> Result<Receipt, PortError> {
            panic!("no context write expected")
        }
        async fn transfer(&self, _c: ConversationId, _h: ParticipantId, _q: QueueId) -> Result<Receipt, PortError> {
            panic!("no transfer expected")
        }
    }

    #[test]
    fn the_worker_drives_the_records_of_one_tick_concurrently() {
        // Arrange: three handoffs a crashed instance left; each lookup waits until all three have
        // started, which only concurrent driving achieves.
        use std::future::Future as _;
        let harness = Harness::new();
        let s = &harness.settings;
        for n in 0..3 {
            let key = HandoffKey::new(conversation_id(), Some(IdempotencyKey::parse(&format!("k{n}")).expect("valid")));
            let begun = block_on(harness.ledger.begin(
                &key,
                &request(),
                harness.now(),
                s.lease,
                s.reuse_after,
                HandoffMode::Transfer,
            ));
            assert!(matches!(begun, Ok(Begin::Fresh(_))));
        }
        harness.advance(harness.settings.lease);
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ports = Ports::silent();
        let service = HandoffService::new(
            Arc::new(ports.queue),
            Arc::new(GatedLookups { started: Arc::clone(&started), expected: 3 }),
            Arc::new(ports.analytics),
            Arc::clone(&harness.ledger) as Arc<dyn LedgerPort>,
            Arc::new(harness.clock()),
            harness.settings.clone(),
        );

        // Act: poll the tick by hand, a bounded number of times. Driven one after another, the
        // first lookup would wait forever.
        let mut tick = Box::pin(service.run_due(10));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut result = std::task::Poll::Pending;
        for _ in 0..100 {
            result = tick.as_mut().poll(&mut cx);
            if result.is_ready() {
                break;
            }
        }

        // Assert
        assert!(
            matches!(result, std::task::Poll::Ready(Ok(TickReport { claimed: 3, done: 0, later: 3 }))),
            "{result:?}"
        );
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn the_worker_retries_a_deferred_handoff_whose_transfer_failed_transiently_until_it_transfers() {
        // Arrange: capacity returned, but the transfer hit a transient failure.
        let harness = Harness::new();
        harness.defer_one();
        harness.advance(harness.settings.recheck_every);
        let mut failing = Ports::default();
        failing.capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).locate(1, Ok(live())).transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Err(transient()),
        );
        failing.write_context(1, Ok(Receipt::default()));
        assert_eq!(harness.tick(failing), TickReport { claimed: 1, done: 0, later: 1 });
        harness.advance(harness.settings.lease);
        let mut retry = Ports::default();
        retry.locate(1, Ok(live())).no_capacity_call().no_write().transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Ok(Receipt::default()),
        );

        // Act: nobody will deliver this webhook again (the caller got 202); the worker must finish it.
        let report = harness.tick(retry);

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        assert_eq!(harness.record().stage, Stage::Transferred);
    }

    // ---- the analytics outbox ---------------------------------------------------------------

    #[test]
    fn the_outbox_delivers_each_analytics_event_once() {
        // Arrange
        let harness = Harness::new();
        harness.deliver(Ports::happy(DEFAULT_QUEUE), request()).expect("transferred");
        let id = harness.record().id;
        let mut ports = Ports::silent();
        ports.analytics.checkpoint();
        ports
            .analytics
            .expect_record()
            .withf(move |e| e.handoff_id == id && e.reason.as_str() == "complex_billing_dispute")
            .times(1)
            .returning(|_| Ok(Receipt::default()));
        let service = harness.service(ports);

        // Act
        let first = block_on(service.deliver_analytics(10)).expect("ledger works");
        let second = block_on(service.deliver_analytics(10)).expect("ledger works");

        // Assert
        assert_eq!(first, TickReport { claimed: 1, done: 1, later: 0 });
        assert_eq!(second, TickReport::default());
        assert_eq!(block_on(harness.ledger.outbox_backlog()), Ok(0));
    }

    #[test]
    fn a_failed_analytics_delivery_is_rescheduled_with_backoff_and_never_touches_the_transfer() {
        // Arrange
        let harness = Harness::new();
        harness.deliver(Ports::happy(DEFAULT_QUEUE), request()).expect("transferred");
        let mut ports = Ports::silent();
        ports.analytics.checkpoint();
        ports.analytics.expect_record().times(1).returning(|_| Err(transient()));
        let service = harness.service(ports);

        // Act
        let report = block_on(service.deliver_analytics(10)).expect("ledger works");

        // Assert: the first retry waits 2 s (2^1), and nothing else was called.
        assert_eq!(report, TickReport { claimed: 1, done: 0, later: 1 });
        drop(service);
        let ledger = &harness.ledger;
        let lease = Duration::from_secs(1);
        let soon = harness.now() + chrono::Duration::seconds(1);
        assert!(block_on(ledger.claim_outbox(soon, 10, lease)).expect("ok").is_empty(), "retried too early");
        let due = harness.now() + chrono::Duration::seconds(2);
        assert_eq!(block_on(ledger.claim_outbox(due, 10, lease)).expect("ok").len(), 1);
        assert_eq!(harness.record().stage, Stage::Transferred);
    }

    /// Analytics that stays pending for one poll per event and records the peak in flight.
    #[derive(Default)]
    struct CountingAnalytics {
        in_flight: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
        delivered: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl AnalyticsPort for CountingAnalytics {
        async fn record(&self, _event: &HandoffEvent) -> Result<Receipt, PortError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(now, SeqCst);
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    std::task::Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            self.in_flight.fetch_sub(1, SeqCst);
            self.delivered.fetch_add(1, SeqCst);
            Ok(Receipt::default())
        }
    }

    /// Stores `count` records of the test conversation, each with an analytics event due now.
    fn seed_outbox(harness: &Harness, count: u32) {
        let at = harness.now();
        for n in 0..count {
            let record = HandoffRecord::received(
                HandoffId::random(),
                HandoffKey::new(conversation_id(), Some(IdempotencyKey::parse(&format!("k{n}")).expect("valid"))),
                request(),
                at,
            );
            let event = HandoffEvent {
                handoff_id: record.id,
                conversation_id: conversation_id(),
                reason: request().reason().clone(),
                queue_id: qid(DEFAULT_QUEUE),
                at,
            };
            block_on(harness.ledger.save(&record, None, &[event])).expect("saved");
        }
    }

    #[test]
    fn the_outbox_delivers_a_batch_concurrently_never_more_than_its_share_at_once_and_two_rounds_a_batch() {
        use std::sync::atomic::Ordering::SeqCst;
        // Arrange: 12 events waiting, at most 3 deliveries at once
        let harness = Harness::with(|s| s.outbox_concurrency = 3);
        seed_outbox(&harness, 12);
        let analytics = Arc::new(CountingAnalytics::default());
        let ports = Ports::silent();
        let service = HandoffService::new(
            Arc::new(ports.queue),
            Arc::new(ports.transfer),
            Arc::clone(&analytics) as Arc<dyn AnalyticsPort>,
            Arc::clone(&harness.ledger) as Arc<dyn LedgerPort>,
            Arc::new(harness.clock()),
            harness.settings.clone(),
        );
        // Act
        let first = block_on(service.deliver_analytics(50)).expect("ledger works");
        let second = block_on(service.deliver_analytics(50)).expect("ledger works");
        // Assert: a batch is two rounds of 3, whatever the caller asked for
        assert_eq!(service.outbox_batch(), 6);
        assert_eq!(first, TickReport { claimed: 6, done: 6, later: 0 });
        assert_eq!(second, TickReport { claimed: 6, done: 6, later: 0 });
        assert_eq!(analytics.delivered.load(SeqCst), 12);
        assert_eq!(analytics.peak.load(SeqCst), 3, "deliveries were not concurrent, or exceeded the share");
        assert_eq!(block_on(harness.ledger.outbox_backlog()), Ok(0));
    }

    #[test]
    fn once_the_ledger_cannot_mark_a_delivery_the_rest_of_the_batch_is_not_sent() {
        use std::sync::atomic::Ordering::SeqCst;
        // Arrange: two events, one delivery at a time, and marks that fail
        let harness = Harness::with(|s| s.outbox_concurrency = 1);
        seed_outbox(&harness, 2);
        let analytics = Arc::new(CountingAnalytics::default());
        let ports = Ports::silent();
        let ledger =
            FaultyLedger { inner: Arc::clone(&harness.ledger), only_pending_saves: false, failing_marks: true };
        let service = HandoffService::new(
            Arc::new(ports.queue),
            Arc::new(ports.transfer),
            Arc::clone(&analytics) as Arc<dyn AnalyticsPort>,
            Arc::new(ledger),
            Arc::new(harness.clock()),
            harness.settings,
        );
        // Act
        let outcome = block_on(service.deliver_analytics(50));
        // Assert: the ledger error is reported, and the second event was not sent
        assert!(matches!(outcome, Err(LedgerError::Unavailable(_))), "{outcome:?}");
        assert_eq!(analytics.delivered.load(SeqCst), 1);
    }

    #[test]
    fn outbox_backoff_doubles_per_attempt_up_to_the_maximum() {
        let max = Duration::from_secs(600);
        assert_eq!(outbox_backoff(1, max), Duration::from_secs(2));
        assert_eq!(outbox_backoff(5, max), Duration::from_secs(32));
        assert_eq!(outbox_backoff(10, max), max);
        assert_eq!(outbox_backoff(u32::MAX, max), max);
    }

    // ---- outcome reports --------------------------------------------------------------------

    fn expect_report(observer: &mut MockOutcomeObserver, outcome: &'static str, background: bool) {
        observer
            .expect_observe()
            .withf(move |r| {
                r.outcome == outcome && r.background == background && r.conversation_id == conversation_id()
            })
            .times(1)
            .return_const(());
    }

    #[test]
    fn the_observer_gets_one_report_per_outcome() {
        // Arrange: the 503'd handoff is left to its caller for the whole test.
        let harness = Harness::with(|s| s.resume_after = Duration::from_secs(3600));
        let mut observer = MockOutcomeObserver::new();
        for outcome in ["deferred", "replayed", "in_progress", "transferred", "unavailable", "not_found"] {
            expect_report(&mut observer, outcome, false);
        }
        expect_report(&mut observer, "transferred", true);
        let observer: Arc<dyn OutcomeObserver> = Arc::new(observer);
        let deliver = |ports: Ports, key: Option<&str>| {
            let key = key.map(|k| IdempotencyKey::parse(k).expect("valid"));
            block_on(harness.service(ports).with_observer(Arc::clone(&observer)).handle(request(), key))
        };

        // Act: deferred, then replayed
        let mut full = Ports::default();
        full.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0))).capacity(
            FALLBACK_QUEUE,
            1,
            Ok(capacity(FALLBACK_QUEUE, 0)),
        );
        deliver(full, None).expect("deferred");
        deliver(Ports::silent(), None).expect("replayed");
        // ... in progress (another delivery holds key "b"), then transferred once that lease lapses
        let s = &harness.settings;
        let key_b = HandoffKey::new(conversation_id(), Some(IdempotencyKey::parse("b").expect("valid")));
        block_on(harness.ledger.begin(
            &key_b,
            &request(),
            harness.now(),
            s.lease,
            s.reuse_after,
            HandoffMode::Transfer,
        ))
        .expect("ok");
        deliver(Ports::silent(), Some("b")).expect_err("in progress");
        harness.advance(harness.settings.lease);
        deliver(Ports::happy(DEFAULT_QUEUE), Some("b")).expect("transferred");
        // ... unavailable, and not found
        let mut down = Ports::default();
        down.locate(1, Err(transient()));
        deliver(down, Some("d")).expect_err("unavailable");
        let mut gone = Ports::default();
        gone.locate(1, Err(PortError::NotFound { what: "conversation".to_owned(), correlation_id: None }));
        deliver(gone, Some("e")).expect_err("not found");
        // ... and the worker's transfer of the deferred handoff
        harness.advance(harness.settings.defer_for);
        let mut worker = Ports::default();
        worker.locate(1, Ok(live())).transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));
        worker.write_context(1, Ok(Receipt::default()));
        let service = harness.service(worker).with_observer(Arc::clone(&observer));
        let report = block_on(service.run_due(10)).expect("ledger works");

        // Assert: counts are verified when the observer is dropped; the tick finished one.
        assert_eq!(report.done, 1);
        drop(service);
        drop(observer);
    }

    #[test]
    fn every_error_has_a_stable_kind() {
        let id = HandoffId::random();
        let cases = [
            (HandoffError::Invalid(ValidationErrors::single("queueId", "bad")), "invalid"),
            (HandoffError::ConversationNotFound { handoff_id: None, correlation_id: None }, "not_found"),
            (HandoffError::NotTransferable { handoff_id: None, message: String::new() }, "not_transferable"),
            (HandoffError::InProgress { handoff_id: id, retry_after: Duration::ZERO }, "in_progress"),
            (
                HandoffError::UpstreamRejected {
                    handoff_id: None,
                    status: 400,
                    code: String::new(),
                    correlation_id: None,
                },
                "rejected",
            ),
            (HandoffError::Unavailable { handoff_id: None, retry_after: Duration::ZERO }, "unavailable"),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind);
        }
    }

    // ---- property: no path transfers without a validated, admitted, allowed request ---------

    /// A failure an upstream call may return.
    #[derive(Debug, Clone, Copy)]
    enum Fault {
        Transient,
        RateLimited,
        Rejected,
        NotFound,
        InvalidState,
    }

    impl Fault {
        fn error(self, what: &str) -> PortError {
            match self {
                Fault::Transient => transient(),
                Fault::RateLimited => {
                    PortError::RateLimited { retry_after: Some(Duration::from_secs(3)), correlation_id: None }
                }
                Fault::Rejected => {
                    PortError::Rejected { status: 400, code: "bad.request".to_owned(), correlation_id: None }
                }
                Fault::NotFound => PortError::NotFound { what: what.to_owned(), correlation_id: None },
                Fault::InvalidState => {
                    PortError::InvalidState { detail: "not connected".to_owned(), correlation_id: None }
                }
            }
        }
    }

    /// What one transfer call does upstream.
    #[derive(Debug, Clone, Copy)]
    enum TransferStep {
        Applied,
        Refused(Fault),
        UnknownButApplied,
        UnknownNotApplied,
    }

    /// The scripted answers, one per call in order; once a script runs out, calls succeed.
    #[derive(Debug, Clone)]
    struct Script {
        locate: Vec<Option<Fault>>,
        capacity: Vec<Result<(u32, u32), Fault>>,
        idle_when_unscripted: u32,
        write: Vec<Option<Fault>>,
        transfer: Vec<TransferStep>,
    }

    /// One upstream call, as the fake Genesys saw it.
    #[derive(Debug, Clone)]
    enum Call {
        Locate,
        Capacity { queue: QueueId, admitted: bool },
        Write { customer: ParticipantId },
        Transfer { holder: ParticipantId, queue: QueueId, already_in: Option<QueueId> },
    }

    /// A tiny stateful Genesys: the conversation moves into a queue when a transfer applies.
    #[derive(Debug)]
    struct World {
        ended: bool,
        held: bool,
        in_queue: Option<QueueId>,
        script: Script,
        admission: AdmissionPolicy,
        calls: Vec<Call>,
    }

    fn pop<T: Clone>(script: &mut Vec<T>) -> Option<T> {
        (!script.is_empty()).then(|| script.remove(0))
    }

    impl World {
        fn conversation(&self) -> ConversationSnapshot {
            let alive = !self.ended;
            let mut participants = vec![
                participant(CUSTOMER, true, alive, None),
                participant(BOT, false, alive && self.held && self.in_queue.is_none(), None),
            ];
            if let Some(q) = self.in_queue {
                participants.push(ParticipantView {
                    id: pid(ACD),
                    is_customer: false,
                    is_agent: false,
                    active: alive,
                    queue: Some(q),
                });
            }
            snapshot(participants, self.in_queue.into_iter().collect())
        }

        fn locate(&mut self) -> Result<ConversationSnapshot, PortError> {
            self.calls.push(Call::Locate);
            match pop(&mut self.script.locate).flatten() {
                Some(fault) => Err(fault.error("conversation")),
                None => Ok(self.conversation()),
            }
        }

        fn capacity(&mut self, queue: QueueId) -> Result<CapacitySnapshot, PortError> {
            let step = pop(&mut self.script.capacity).unwrap_or(Ok((self.script.idle_when_unscripted, 0)));
            let result = step.map(|(idle, waiting)| CapacitySnapshot::idle_for_tests(queue, idle, waiting));
            let admitted = matches!(&result, Ok(s) if self.admission.judge(s).admits());
            self.calls.push(Call::Capacity { queue, admitted });
            result.map_err(|fault| fault.error("queue"))
        }

        fn write(&mut self, customer: ParticipantId) -> Result<Receipt, PortError> {
            self.calls.push(Call::Write { customer });
            match pop(&mut self.script.write).flatten() {
                Some(fault) => Err(fault.error("participant")),
                None => Ok(Receipt::default()),
            }
        }

        fn transfer(&mut self, holder: ParticipantId, queue: QueueId) -> Result<Receipt, PortError> {
            self.calls.push(Call::Transfer { holder, queue, already_in: self.in_queue });
            let unknown = || PortError::Indeterminate { detail: "timed out".to_owned(), correlation_id: None };
            match pop(&mut self.script.transfer).unwrap_or(TransferStep::Applied) {
                TransferStep::Applied => {
                    self.in_queue = Some(queue);
                    Ok(Receipt::default())
                }
                TransferStep::Refused(fault) => Err(fault.error("participant")),
                TransferStep::UnknownButApplied => {
                    self.in_queue = Some(queue);
                    Err(unknown())
                }
                TransferStep::UnknownNotApplied => Err(unknown()),
            }
        }
    }

    /// Mocks that answer from the shared world, any number of times.
    fn world_ports(world: &Arc<Mutex<World>>) -> Ports {
        let mut p = Ports::default();
        let w = Arc::clone(world);
        p.transfer.expect_locate().returning(move |_| w.lock().expect("not poisoned").locate());
        let w = Arc::clone(world);
        p.transfer.expect_write_context().returning(move |_, c, _| w.lock().expect("not poisoned").write(c));
        let w = Arc::clone(world);
        p.transfer.expect_transfer().returning(move |_, h, q| w.lock().expect("not poisoned").transfer(h, q));
        let w = Arc::clone(world);
        p.queue.expect_capacity().returning(move |q, _| w.lock().expect("not poisoned").capacity(q));
        p.analytics.expect_record().never();
        p
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            3 => Just(Fault::Transient),
            2 => Just(Fault::RateLimited),
            1 => Just(Fault::Rejected),
            1 => Just(Fault::NotFound),
            1 => Just(Fault::InvalidState),
        ]
    }

    fn maybe_fault() -> impl Strategy<Value = Option<Fault>> {
        prop_oneof![2 => Just(None), 1 => fault().prop_map(Some)]
    }

    prop_compose! {
        fn script()(
            locate in prop::collection::vec(maybe_fault(), 0..6),
            capacity in prop::collection::vec(
                prop_oneof![4 => (0u32..3, 0u32..4).prop_map(Ok), 1 => fault().prop_map(Err)],
                0..6,
            ),
            idle_when_unscripted in 0u32..3,
            write in prop::collection::vec(maybe_fault(), 0..4),
            transfer in prop::collection::vec(
                prop_oneof![
                    2 => Just(TransferStep::Applied),
                    1 => fault().prop_map(TransferStep::Refused),
                    2 => Just(TransferStep::UnknownButApplied),
                    2 => Just(TransferStep::UnknownNotApplied),
                ],
                0..4,
            ),
        ) -> Script {
            Script { locate, capacity, idle_when_unscripted, write, transfer }
        }
    }

    #[derive(Debug, Clone)]
    struct Scenario {
        request: HandoffRequest,
        routing: RoutingPolicy,
        admission: AdmissionPolicy,
        ended: bool,
        held: bool,
        script: Script,
        gap: Duration,
    }

    prop_compose! {
        fn scenario()(
            base in crate::testkit::valid_request_with(3),
            participant in prop_oneof![3 => Just(None), 2 => Just(Some(BOT)), 1 => Just(Some(CUSTOMER)), 1 => Just(Some(STRANGER))],
            ask in prop_oneof![
                4 => Just(None),
                1 => prop::sample::select(vec![Some(DEFAULT_QUEUE), Some(RESET_QUEUE), Some(FALLBACK_QUEUE)]),
                1 => Just(Some(UNLISTED_QUEUE)),
            ],
            route_reason in any::<bool>(),
            fallback in any::<bool>(),
            min_idle in 0u32..3,
            model in prop_oneof![Just(crate::CapacityModel::Slots), Just(crate::CapacityModel::Idle)],
            max_waiting in prop::option::of(0u32..3),
            ended in prop::bool::weighted(0.05),
            held in prop::bool::weighted(0.95),
            script in script(),
            gap_secs in prop_oneof![Just(0u64), 1u64..100],
        ) -> Scenario {
            let mut payload = base.to_json();
            payload["conversationId"] = json!(CONVERSATION);
            if let Some(p) = participant { payload["participantId"] = json!(p); }
            if let Some(q) = ask { payload["queueId"] = json!(q); }
            let request = HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("still valid");
            let routes = if route_reason {
                [(request.reason().as_str().to_owned(), qid(RESET_QUEUE))].into_iter().collect()
            } else {
                [("password_reset".to_owned(), qid(RESET_QUEUE))].into_iter().collect()
            };
            let routing = RoutingPolicy::new(qid(DEFAULT_QUEUE), routes, fallback.then(|| qid(FALLBACK_QUEUE)));
            let admission = AdmissionPolicy { model, minimum: min_idle, max_waiting, max_wait: None };
            Scenario { request, routing, admission, ended, held, script, gap: Duration::from_secs(gap_secs) }
        }
    }

    fn transfers(calls: &[Call]) -> impl Iterator<Item = (usize, ParticipantId, QueueId, Option<QueueId>)> + '_ {
        calls.iter().enumerate().filter_map(|(i, c)| match c {
            Call::Transfer { holder, queue, already_in } => Some((i, *holder, *queue, *already_in)),
            _ => None,
        })
    }

    /// Runs a scenario: two deliveries of the same handoff, then the worker past the deferral
    /// deadline; then checks every upstream call the fake Genesys saw.
    fn check(sc: &Scenario) -> Result<(), TestCaseError> {
        // Arrange
        let harness = Harness::with(|s| {
            s.routing = sc.routing.clone();
            s.admission = sc.admission;
        });
        let world = Arc::new(Mutex::new(World {
            ended: sc.ended,
            held: sc.held,
            in_queue: None,
            script: sc.script.clone(),
            admission: sc.admission,
            calls: Vec::new(),
        }));
        let service = harness.service(world_ports(&world));
        let allowed = sc.routing.allowed_queues();

        // Act: two deliveries of the same handoff, then the worker past the deferral deadline.
        let first = block_on(service.handle(sc.request.clone(), None));
        let (after_first, in_queue_after_first) = {
            let w = world.lock().expect("not poisoned");
            (w.calls.len(), w.in_queue)
        };
        harness.advance(sc.gap);
        let second = block_on(service.handle(sc.request.clone(), None));
        let webhook_calls = world.lock().expect("not poisoned").calls.len();
        harness.advance(harness.settings.defer_for + harness.settings.lease);
        for _ in 0..3 {
            block_on(service.run_due(10)).expect("the in-memory ledger works");
            harness.advance(harness.settings.lease);
        }

        // Assert
        let world = world.lock().expect("not poisoned");
        let calls = &world.calls;
        for (i, holder, queue, already_in) in transfers(calls) {
            prop_assert_ne!(holder, pid(CUSTOMER), "transferred the customer: {:?}", calls);
            prop_assert!(allowed.contains(&queue), "queue {} outside the allowlist: {:?}", queue, calls);
            prop_assert!(already_in.is_none(), "transferred again after it applied: {:?}", calls);
            if sc.admission.checks_capacity() && i < webhook_calls {
                let admitted =
                    calls[..i].iter().any(|c| matches!(c, Call::Capacity { queue: q, admitted: true } if *q == queue));
                prop_assert!(admitted, "transferred to {} without admission: {:?}", queue, calls);
            }
        }
        for call in calls {
            if let Call::Write { customer } = call {
                prop_assert_eq!(*customer, pid(CUSTOMER), "context written on a non-customer");
            }
        }
        if sc.request.requested_queue().is_some_and(|q| !sc.routing.is_allowed(q)) {
            prop_assert!(calls.is_empty(), "calls for a refused queueId: {:?}", calls);
            prop_assert!(matches!(first, Err(HandoffError::Invalid(_))), "{:?}", first);
        }
        if let Ok(HandoffOutcome::Transferred { queue_id, .. }) = &first {
            prop_assert_eq!(webhook_calls, after_first, "the repeat called upstream: {:?}", calls);
            let replayed =
                matches!(&second, Ok(HandoffOutcome::Transferred { replayed: true, queue_id: q, .. }) if q == queue_id);
            prop_assert!(replayed, "{:?}", second);
        }
        // A handoff whose transfer applied is never answered as failed for good: a failed record
        // lets the next delivery start over and transfer a second time.
        for (outcome, in_queue) in [(&first, in_queue_after_first), (&second, world.in_queue)] {
            let permanent = matches!(
                outcome,
                Err(HandoffError::ConversationNotFound { .. }
                    | HandoffError::NotTransferable { .. }
                    | HandoffError::UpstreamRejected { .. })
            );
            prop_assert!(
                !(permanent && in_queue.is_some()),
                "{:?} although it is in {:?}: {:?}",
                outcome,
                in_queue,
                calls
            );
        }
        for outcome in [&first, &second] {
            if let Ok(HandoffOutcome::Transferred { queue_id, .. }) = outcome {
                prop_assert_eq!(world.in_queue, Some(*queue_id), "answered transferred but it is not in the queue");
            }
        }
        Ok(())
    }

    prop_compose! {
        /// A well-formed handoff against a flaky upstream: most of the randomness is in the faults.
        fn flaky_scenario()(
            base in crate::testkit::valid_request_with(3),
            participant in prop_oneof![3 => Just(None), 1 => Just(Some(BOT))],
            fallback in any::<bool>(),
            min_idle in 0u32..3,
            model in prop_oneof![Just(crate::CapacityModel::Slots), Just(crate::CapacityModel::Idle)],
            locate in prop::collection::vec(prop_oneof![1 => Just(None), 1 => fault().prop_map(Some)], 0..6),
            capacity in prop::collection::vec(prop_oneof![4 => (1u32..3, 0u32..2).prop_map(Ok), 1 => fault().prop_map(Err)], 0..4),
            write in prop::collection::vec(maybe_fault(), 0..3),
            transfer in prop::collection::vec(
                prop_oneof![
                    1 => Just(TransferStep::Applied),
                    1 => fault().prop_map(TransferStep::Refused),
                    2 => Just(TransferStep::UnknownButApplied),
                    2 => Just(TransferStep::UnknownNotApplied),
                ],
                0..4,
            ),
            gap_secs in prop_oneof![Just(0u64), 1u64..100],
        ) -> Scenario {
            let mut payload = base.to_json();
            payload["conversationId"] = json!(CONVERSATION);
            if let Some(obj) = payload.as_object_mut() {
                obj.remove("queueId");
                obj.remove("participantId");
            }
            if let Some(p) = participant { payload["participantId"] = json!(p); }
            let request = HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("still valid");
            let routing = RoutingPolicy::new(qid(DEFAULT_QUEUE), BTreeMap::new(), fallback.then(|| qid(FALLBACK_QUEUE)));
            let admission = AdmissionPolicy { model, minimum: min_idle, max_waiting: None, max_wait: None };
            let script = Script { locate, capacity, idle_when_unscripted: 1, write, transfer };
            Scenario { request, routing, admission, ended: false, held: true, script, gap: Duration::from_secs(gap_secs) }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random requests, routing, admission and capacity, with some upstream faults.
        #[test]
        fn no_path_transfers_twice_or_to_the_customer_or_outside_the_allowlist_or_without_capacity(sc in scenario()) {
            check(&sc)?;
        }

        /// A valid handoff against random upstream faults, lost responses included.
        #[test]
        fn no_sequence_of_upstream_faults_makes_a_handoff_transfer_twice(sc in flaky_scenario()) {
            check(&sc)?;
        }
    }

    // ---- advisory mode ------------------------------------------------------------------------

    impl Harness {
        fn advise(&self, ports: Ports, request: HandoffRequest) -> Result<HandoffOutcome, HandoffError> {
            block_on(self.service(ports).advise(request, None))
        }
    }

    /// The advice of an outcome, or a panic.
    fn advice(outcome: &Result<HandoffOutcome, HandoffError>) -> &Advice {
        match outcome {
            Ok(HandoffOutcome::Advised(advice)) => {
                assert_eq!(advice.conversation_id, conversation_id());
                advice
            }
            other => panic!("expected an advice, got {other:?}"),
        }
    }

    /// Locate, capacity on the default queue with `idle` agents (and the fallback with none when
    /// the default has none), one context write; never a transfer or an analytics event.
    fn advisory_ports(idle: u32) -> (Ports, Arc<Mutex<Vec<AttributeSet>>>) {
        let mut p = Ports::default();
        p.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, idle)));
        if idle == 0 {
            p.capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 0)));
        }
        let written = p.write_context(1, Ok(receipt("corr-write")));
        p.no_transfer().no_analytics();
        (p, written)
    }

    #[test]
    fn an_advice_with_capacity_writes_the_context_on_the_customer_and_transfers_nothing() {
        // Arrange
        let harness = Harness::new();
        let (ports, written) = advisory_ports(1);

        // Act
        let outcome = harness.advise(ports, request());

        // Assert: the answer
        let advice = advice(&outcome);
        assert_eq!(advice.decision, AdviceDecision::Transfer);
        assert_eq!((advice.queue_id, advice.replayed), (qid(DEFAULT_QUEUE), false));
        // Assert: the same attributes transfer mode writes
        let written = written.lock().expect("not poisoned");
        assert_eq!(written.len(), 1);
        let record = harness.record();
        assert_eq!(written[0].get("bot_handoff_id"), Some(record.id.to_string().as_str()));
        assert_eq!(written[0].get("guest_name"), Some("Jane Doe"));
        assert_eq!(written[0].get("attempted_resolution"), Some("refund_policy_explained"));
        assert_eq!(written[0].len(), 8);
        // Assert: a finished record that does not claim a transfer, and no analytics event
        assert_eq!(record.id, advice.handoff_id);
        assert_eq!(record.stage, Stage::Advised);
        assert!(record.stage.is_terminal());
        assert_eq!(
            record.answer,
            Some(StoredAnswer::Advised {
                queue: qid(DEFAULT_QUEUE),
                decision: AdviceDecision::Transfer,
                confirmation: None
            })
        );
        assert_eq!((record.holder, record.customer), (None, Some(pid(CUSTOMER))));
        assert!(!record.history.iter().any(|h| h.stage == Stage::Transferred || h.stage == Stage::TransferPending));
        assert!(harness.outbox().is_empty(), "an advice adds no analytics event");
    }

    #[test]
    fn an_advice_without_capacity_defers_still_writes_the_context_and_leaves_nothing_to_the_worker() {
        // Arrange
        let harness = Harness::new();
        let (ports, written) = advisory_ports(0);

        // Act
        let outcome = harness.advise(ports, request());
        harness.advance(harness.settings.defer_for + harness.settings.lease);
        let report = harness.tick(Ports::silent());

        // Assert
        let advice = advice(&outcome);
        let recheck = harness.settings.recheck_every;
        assert_eq!(advice.decision, AdviceDecision::Defer { retry_after: recheck });
        assert_eq!(advice.queue_id, qid(DEFAULT_QUEUE));
        assert_eq!(written.lock().expect("not poisoned").len(), 1, "the context is written on defer too");
        assert_eq!(report, TickReport::default(), "the worker took an advisory handoff");
        assert_eq!(harness.record().stage, Stage::Advised);
        assert_eq!(harness.record().next_check_at, None, "an advice to defer is not confirmed");
    }

    #[test]
    fn an_advice_overflows_to_the_fallback_queue_when_the_chosen_queue_is_full() {
        // Arrange
        let harness = Harness::new();
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
            .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 1)))
            .no_transfer();
        ports.write_context(1, Ok(Receipt::default()));

        // Act
        let outcome = harness.advise(ports, request());

        // Assert
        let advice = advice(&outcome);
        assert_eq!((advice.decision, advice.queue_id), (AdviceDecision::Transfer, qid(FALLBACK_QUEUE)));
    }

    #[test]
    fn a_repeated_advice_is_replayed_without_any_upstream_call() {
        // Arrange
        let harness = Harness::new();
        let first = harness.advise(advisory_ports(1).0, request());

        // Act
        let second = harness.advise(Ports::silent(), request());

        // Assert
        let (first, second) = (advice(&first), advice(&second));
        assert!(second.replayed);
        assert_eq!(
            (second.handoff_id, second.queue_id, second.decision),
            (first.handoff_id, first.queue_id, first.decision)
        );
    }

    #[test]
    fn a_deferral_advice_is_replayed_only_until_its_retry_after_so_asking_again_rechecks_capacity() {
        // Arrange
        let harness = Harness::new();
        let first = harness.advise(advisory_ports(0).0, request());
        let first_id = advice(&first).handoff_id;
        harness.advance(harness.settings.recheck_every - Duration::from_secs(1));
        let replayed = harness.advise(Ports::silent(), request());
        harness.advance(Duration::from_secs(1));

        // Act
        let again = harness.advise(advisory_ports(1).0, request());

        // Assert
        assert!(advice(&replayed).replayed);
        let again = advice(&again);
        assert_eq!((again.decision, again.replayed), (AdviceDecision::Transfer, false));
        assert_ne!(again.handoff_id, first_id, "a new advice starts a new record");
    }

    #[test]
    fn an_advice_for_a_queue_outside_the_allowlist_is_refused_before_any_write_or_call() {
        // Arrange
        let harness = Harness::new();

        // Act
        let outcome = harness.advise(Ports::silent(), request_with("queueId", json!(UNLISTED_QUEUE)));

        // Assert
        assert!(matches!(outcome, Err(HandoffError::Invalid(_))), "{outcome:?}");
        let records = block_on(harness.ledger.find_by_conversation(conversation_id())).expect("ledger works");
        assert!(records.is_empty());
    }

    #[test]
    fn advisory_errors_are_the_errors_of_transfer_mode() {
        // Arrange
        let gone = PortError::NotFound { what: "conversation".to_owned(), correlation_id: None };
        let refused = PortError::Rejected { status: 403, code: "missing.permissions".to_owned(), correlation_id: None };
        let cases: Vec<(&str, Ports, &str)> = vec![
            (
                "unknown conversation",
                {
                    let mut p = Ports::default();
                    p.locate(1, Err(gone)).no_write();
                    p
                },
                "not_found",
            ),
            (
                "ended",
                {
                    let mut p = Ports::default();
                    p.locate(1, Ok(ended())).no_capacity_call().no_write();
                    p
                },
                "not_transferable",
            ),
            (
                "agent",
                {
                    let mut p = Ports::default();
                    let mut agent = participant(SECOND_HOLDER, false, true, None);
                    agent.is_agent = true;
                    p.locate(1, Ok(snapshot(vec![participant(CUSTOMER, true, true, None), agent], vec![])))
                        .no_capacity_call()
                        .no_write();
                    p
                },
                "not_transferable",
            ),
            (
                "refused write",
                {
                    let mut p = Ports::default();
                    p.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)));
                    p.write_context(1, Err(refused));
                    p
                },
                "rejected",
            ),
            (
                "capacity down",
                {
                    let mut p = Ports::default();
                    p.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Err(transient())).no_write();
                    p
                },
                "unavailable",
            ),
        ];
        for (name, mut ports, kind) in cases {
            let harness = Harness::new();
            ports.no_transfer().no_analytics();

            // Act
            let outcome = harness.advise(ports, request());

            // Assert
            assert_eq!(outcome.as_ref().map_err(HandoffError::kind).err(), Some(kind), "{name}: {outcome:?}");
        }
    }

    #[test]
    fn a_transient_failure_during_an_advice_answers_503_and_the_retry_resumes_the_same_record() {
        // Arrange
        let harness = Harness::new();
        let mut down = Ports::default();
        down.locate(1, Err(transient())).no_capacity_call().no_write().no_transfer();
        let (failed_id, _) = unavailable(&harness.advise(down, request()));

        // Act
        let retry = harness.advise(advisory_ports(1).0, request());

        // Assert
        assert_eq!(Some(advice(&retry).handoff_id), failed_id);
        assert_eq!(harness.record().answer.as_ref().map(StoredAnswer::is_advising), Some(false));
    }

    #[test]
    fn the_worker_never_transfers_an_advisory_handoff_a_crashed_instance_left() {
        // Arrange: an advisory delivery marked its record, then its instance died holding the lease.
        let harness = Harness::new();
        let key = HandoffKey::new(conversation_id(), None);
        let s = &harness.settings;
        let begun = block_on(harness.ledger.begin(
            &key,
            &request(),
            harness.now(),
            s.lease,
            s.reuse_after,
            HandoffMode::Transfer,
        ));
        let Ok(Begin::Fresh(mut crashed)) = begun else { panic!("expected a fresh record") };
        crashed.answer = Some(StoredAnswer::Advising);
        let lease_end = harness.now() + chrono_duration(s.lease);
        block_on(harness.ledger.save(&crashed, Some(lease_end), &[])).expect("ledger works");
        harness.advance(harness.settings.lease + Duration::from_secs(1));

        // Act
        let report = harness.tick(Ports::silent());

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        let record = harness.record();
        assert_eq!(record.stage, Stage::Failed);
        assert!(matches!(record.answer, Some(StoredAnswer::Failed { status: 503, .. })), "{:?}", record.answer);
        // A new delivery starts over.
        assert!(advice(&harness.advise(advisory_ports(1).0, request())).handoff_id != crashed.id);
    }

    #[test]
    fn a_transfer_mode_repeat_of_an_advised_handoff_replays_the_advice_and_transfers_nothing() {
        // Arrange
        let harness = Harness::new();
        let first = harness.advise(advisory_ports(1).0, request());

        // Act
        let repeat = harness.deliver(Ports::silent(), request());

        // Assert
        let repeat = advice(&repeat);
        assert!(repeat.replayed);
        assert_eq!(repeat.handoff_id, advice(&first).handoff_id);
    }

    #[test]
    fn an_advice_for_a_handoff_already_transferred_replays_the_transfer() {
        // Arrange
        let harness = Harness::new();
        harness.deliver(Ports::happy(DEFAULT_QUEUE), request()).expect("transferred");

        // Act
        let outcome = harness.advise(Ports::silent(), request());

        // Assert
        assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), true));
    }

    #[test]
    fn an_advice_leaves_a_transfer_that_may_have_happened_to_transfer_mode() {
        // Arrange: a transfer-mode delivery left its record in TransferPending.
        let harness = Harness::new();
        unavailable(&lose_a_transfer_response(&harness, transient()));
        assert_eq!(harness.record().stage, Stage::TransferPending);

        // Act
        let outcome = harness.advise(Ports::silent(), request());

        // Assert: 409, the record untouched; once the lease lapses the worker reads it back.
        assert!(matches!(outcome, Err(HandoffError::InProgress { .. })), "{outcome:?}");
        assert_eq!(harness.record().stage, Stage::TransferPending);
        harness.advance(harness.settings.lease);
        let mut worker = Ports::default();
        worker.locate(1, Ok(in_queue(DEFAULT_QUEUE))).no_capacity_call().no_write().no_transfer();
        assert_eq!(harness.tick(worker), TickReport { claimed: 1, done: 1, later: 0 });
        assert_eq!(harness.record().stage, Stage::Transferred);
    }

    #[test]
    fn the_observer_gets_the_advice_decision_as_the_outcome() {
        // Arrange
        let harness = Harness::new();
        let mut observer = MockOutcomeObserver::new();
        expect_report(&mut observer, "advised_transfer", false);
        expect_report(&mut observer, "replayed", false);
        let observer: Arc<dyn OutcomeObserver> = Arc::new(observer);

        // Act
        let advise = |ports: Ports| {
            block_on(harness.service(ports).with_observer(Arc::clone(&observer)).advise(request(), None))
        };
        advise(advisory_ports(1).0).expect("advised");
        advise(Ports::silent()).expect("replayed");

        // Assert: counts are verified when the observer is dropped.
        drop(observer);
    }

    /// Runs a scenario in advisory mode: two deliveries, then the worker; nothing may transfer.
    fn check_advice(sc: &Scenario) -> Result<(), TestCaseError> {
        // Arrange
        let harness = Harness::with(|s| {
            s.routing = sc.routing.clone();
            s.admission = sc.admission;
        });
        let world = Arc::new(Mutex::new(World {
            ended: sc.ended,
            held: sc.held,
            in_queue: None,
            script: sc.script.clone(),
            admission: sc.admission,
            calls: Vec::new(),
        }));
        let service = harness.service(world_ports(&world));

        // Act
        let first = block_on(service.advise(sc.request.clone(), None));
        let after_first = world.lock().expect("not poisoned").calls.len();
        harness.advance(sc.gap);
        let second = block_on(service.advise(sc.request.clone(), None));
        let after_second = world.lock().expect("not poisoned").calls.len();
        harness.advance(harness.settings.defer_for + harness.settings.lease);
        for _ in 0..3 {
            block_on(service.run_due(10)).expect("the in-memory ledger works");
            harness.advance(harness.settings.lease);
        }

        // Assert
        let world = world.lock().expect("not poisoned");
        let calls = &world.calls;
        prop_assert_eq!(transfers(calls).count(), 0, "an advice transferred: {:?}", calls);
        // The worker only reads the conversation (confirming an advice to transfer), never changes it.
        prop_assert!(
            calls[after_second..].iter().all(|c| matches!(c, Call::Locate)),
            "the worker touched an advisory handoff: {:?}",
            calls
        );
        for call in calls {
            if let Call::Write { customer } = call {
                prop_assert_eq!(*customer, pid(CUSTOMER), "context written on a non-customer");
            }
        }
        if let Ok(HandoffOutcome::Advised(Advice { decision: AdviceDecision::Transfer, queue_id, .. })) = &first {
            prop_assert!(sc.routing.allowed_queues().contains(queue_id));
            if sc.admission.checks_capacity() {
                let admitted = calls[..after_first]
                    .iter()
                    .any(|c| matches!(c, Call::Capacity { queue: q, admitted: true } if q == queue_id));
                prop_assert!(admitted, "advised {} without admission: {:?}", queue_id, calls);
            }
            if sc.gap < harness.settings.reuse_after {
                prop_assert_eq!(after_second, after_first, "the repeat called upstream: {:?}", calls);
                prop_assert!(matches!(&second, Ok(HandoffOutcome::Advised(a)) if a.replayed), "{:?}", second);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random requests, routing, admission, capacity and upstream faults in advisory mode.
        #[test]
        fn no_advice_ever_transfers_or_is_given_without_capacity(sc in scenario()) {
            check_advice(&sc)?;
        }
    }

    // ---- confirmation of an advice --------------------------------------------------------

    #[test]
    fn confirmation_reads_start_after_the_first_wait_double_it_and_end_at_the_window() {
        let secs = |s: &[u64]| s.iter().map(|s| Duration::from_secs(*s)).collect::<Vec<_>>();
        assert_eq!(confirmation_reads(Duration::from_secs(5), Duration::from_secs(120)), secs(&[5, 15, 35, 75, 120]));
        assert_eq!(confirmation_reads(Duration::from_secs(5), Duration::from_secs(35)), secs(&[5, 15, 35]));
        assert_eq!(confirmation_reads(Duration::from_secs(5), Duration::from_secs(5)), secs(&[5]));
        assert_eq!(confirmation_reads(Duration::from_secs(5), Duration::from_secs(3)), secs(&[3]));
    }

    /// Advises a transfer, then runs the worker once a second for 200 s with the conversation
    /// looked up through `script` (by read number, from 0); never a write, capacity read or
    /// transfer. Returns the read times (seconds after the advice) and the record.
    fn confirm_with(
        script: impl Fn(usize) -> Result<ConversationSnapshot, PortError> + Send + Sync + 'static,
    ) -> (Vec<i64>, HandoffRecord) {
        let harness = Harness::new();
        harness.advise(advisory_ports(1).0, request()).expect("advised");
        let advised_at = harness.now();
        let reads = Arc::new(Mutex::new(Vec::new()));
        let mut ports = Ports::default();
        let (log, now) = (Arc::clone(&reads), Arc::clone(&harness.now));
        ports.transfer.expect_locate().returning(move |_| {
            let mut log = log.lock().expect("not poisoned");
            log.push((*now.lock().expect("not poisoned") - advised_at).num_seconds());
            script(log.len() - 1)
        });
        ports.no_capacity_call().no_write().no_transfer().no_analytics();
        let service = harness.service(ports);
        for _ in 0..200 {
            harness.advance(Duration::from_secs(1));
            block_on(service.run_due(10)).expect("the in-memory ledger works");
        }
        let reads = reads.lock().expect("not poisoned").clone();
        (reads, harness.record())
    }

    fn confirmation(record: &HandoffRecord) -> Option<Confirmation> {
        match &record.answer {
            Some(StoredAnswer::Advised { confirmation, .. }) => *confirmation,
            other => panic!("expected an advice, got {other:?}"),
        }
    }

    #[test]
    fn an_advice_the_flow_never_carries_out_is_read_five_times_then_unconfirmed() {
        // Act
        let (reads, record) = confirm_with(|_| Ok(live()));

        // Assert
        assert_eq!(reads, [5, 15, 35, 75, 120]);
        assert_eq!(confirmation(&record), Some(Confirmation::Unconfirmed { why: Unconfirmed::StillWithFlow }));
        assert_eq!((record.stage, record.next_check_at), (Stage::Advised, None));
        assert_eq!(crate::Outcome::of(&record), crate::Outcome::Unconfirmed);
    }

    #[test]
    fn an_advice_the_flow_carries_out_is_confirmed_at_the_first_read_that_sees_the_queue() {
        // Act: the flow transfers between the second and the third read.
        let (reads, record) = confirm_with(|n| Ok(if n < 2 { live() } else { in_queue(DEFAULT_QUEUE) }));

        // Assert
        assert_eq!(reads, [5, 15, 35]);
        let confirmed = Confirmation::Confirmed { queue: qid(DEFAULT_QUEUE), after: Duration::from_secs(35) };
        assert_eq!(confirmation(&record), Some(confirmed));
        assert_eq!(record.next_check_at, None);
        assert_eq!(crate::Outcome::of(&record), crate::Outcome::Confirmed);
        assert!(record.history.iter().any(|h| h.note.contains("confirmed: in queue")), "{:?}", record.history);
    }

    #[test]
    fn an_advice_whose_conversation_ends_or_is_taken_elsewhere_is_unconfirmed_at_once() {
        let agent = snapshot(
            vec![
                participant(CUSTOMER, true, true, None),
                ParticipantView { id: pid(STRANGER), is_customer: false, is_agent: true, active: true, queue: None },
            ],
            vec![],
        );
        for (found, why) in [
            (Ok(ended()), Unconfirmed::Ended),
            (Err(PortError::NotFound { what: "conversation".to_owned(), correlation_id: None }), Unconfirmed::Ended),
            (Ok(agent), Unconfirmed::Elsewhere),
        ] {
            // Act
            let (reads, record) = confirm_with(move |_| found.clone());

            // Assert
            assert_eq!(reads, [5], "{why:?}");
            assert_eq!(confirmation(&record), Some(Confirmation::Unconfirmed { why }));
        }
    }

    #[test]
    fn failed_confirmation_reads_keep_to_the_schedule_and_end_unknown() {
        // Act
        let (reads, record) = confirm_with(|_| Err(transient()));

        // Assert
        assert_eq!(reads, [5, 15, 35, 75, 120]);
        assert_eq!(confirmation(&record), Some(Confirmation::Unconfirmed { why: Unconfirmed::Unknown }));
    }

    #[test]
    fn a_conversation_that_reached_an_agent_through_a_queue_is_confirmed_with_that_queue() {
        // Arrange: the queue participant already handed the guest to an agent.
        let through = snapshot(
            vec![
                participant(CUSTOMER, true, true, None),
                participant(BOT, false, false, None),
                participant(ACD, false, false, Some(qid(FALLBACK_QUEUE))),
                ParticipantView { id: pid(STRANGER), is_customer: false, is_agent: true, active: true, queue: None },
            ],
            vec![],
        );

        // Act
        let (reads, record) = confirm_with(move |_| Ok(through.clone()));

        // Assert: confirmed with the queue actually reached, not the one advised.
        assert_eq!(reads, [5]);
        let confirmed = Confirmation::Confirmed { queue: qid(FALLBACK_QUEUE), after: Duration::from_secs(5) };
        assert_eq!(confirmation(&record), Some(confirmed));
    }

    #[test]
    fn a_begin_in_advise_mode_marks_the_record_so_a_crash_right_after_it_never_transfers() {
        // Arrange: an advisory delivery's `begin`, then its instance dies before anything else.
        let harness = Harness::new();
        let key = HandoffKey::new(conversation_id(), None);
        let s = &harness.settings;
        let begun = block_on(harness.ledger.begin(
            &key,
            &request(),
            harness.now(),
            s.lease,
            s.reuse_after,
            HandoffMode::Advise,
        ));
        let Ok(Begin::Fresh(crashed)) = begun else { panic!("expected a fresh record") };
        harness.advance(s.lease + Duration::from_secs(1));

        // Act: the worker finds it (ports that fail the test on any call).
        let report = harness.tick(Ports::silent());

        // Assert
        assert_eq!(crashed.answer, Some(StoredAnswer::Advising));
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
        let record = harness.record();
        assert_eq!(record.stage, Stage::Failed);
        assert_eq!(crate::Outcome::of(&record), crate::Outcome::Failed(crate::FailureCause::Interrupted));
    }
}
