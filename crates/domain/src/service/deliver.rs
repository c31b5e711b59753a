//! Transfer mode: a webhook delivery drives its record through locate → choose queue → admit →
//! write context → transfer.

use chrono::{DateTime, Utc};

use crate::admission::Admission;
use crate::attributes::AttributeSet;
use crate::ids::QueueId;
use crate::lifecycle::{HandoffKey, HandoffMode, HandoffRecord, Stage, StoredAnswer};
use crate::ports::{Begin, ConversationSnapshot, HandoffEvent, PortError};
use crate::request::{HandoffRequest, IdempotencyKey};

use super::types::*;
use super::{HandoffService, Started, Step};

impl HandoffService {
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

    /// The start every delivery shares: the allowlist (before anything is written or called), the
    /// ledger's `begin`, and the answers that need no work (409 while someone holds the record, the
    /// stored answer of a finished one). Returns the leased record otherwise.
    pub(super) async fn start(
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

    /// Drives a leased record as far as it goes now, then reports the outcome.
    pub(super) async fn drive(
        &self,
        mut record: HandoffRecord,
        started: DateTime<Utc>,
        background: bool,
    ) -> Step<HandoffOutcome> {
        let result = self.advance(&mut record, background).await;
        self.report(&record, started, background, result.as_ref().map(outcome_name).map_err(HandoffError::kind));
        result
    }

    /// `background`: the worker drives the record, and nobody waits for an answer: a
    /// conversation found untransferable ends the record as [`Stage::Abandoned`] instead of
    /// [`Stage::Failed`].
    pub(super) async fn advance(&self, record: &mut HandoffRecord, background: bool) -> Step<HandoffOutcome> {
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
    pub(super) async fn choose_queue(&self, record: &mut HandoffRecord) -> Step<QueueId> {
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
    pub(super) async fn attributes(&self, record: &mut HandoffRecord) -> Step<AttributeSet> {
        match AttributeSet::for_handoff(&record.request, record.id, self.clock.now()) {
            Ok(attributes) => Ok(attributes),
            Err(e) => Err(self.not_transferable(record, e.to_string()).await),
        }
    }

    /// The customer participant of a conversation that can still be handed off: not ended, and
    /// the guest still in it (a guest who left gets no agent, so nothing is transferred).
    pub(super) async fn check_conversation(
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
    pub(super) async fn early_holder(
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
    pub(super) fn select_holder(
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
    pub(super) async fn admit(&self, record: &mut HandoffRecord, primary: QueueId) -> Step<Option<QueueId>> {
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

    /// The transfer happened. `snapshot` is the latest lookup of the conversation: the external
    /// tag is queued (through the outbox) unless it is switched off or the lookup shows a tag
    /// someone else set, which ours would replace.
    pub(super) async fn transferred(
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
}

#[cfg(test)]
mod tests;
