//! Transfer mode: a webhook delivery drives its record through locate → choose queue → admit →
//! write context → transfer.

use chrono::{DateTime, Utc};

use crate::admission::Admission;
use crate::context::ContextSet;
use crate::ids::QueueId;
use crate::lifecycle::{HandoffKey, HandoffMode, HandoffRecord, Stage, StoredAnswer};
use crate::platform::{AnalyticsDelivery, ContextDelivery};
use crate::ports::{Begin, ControlState, HandoffEvent, Located, PortError, TransferResult, Untransferable};
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
        // A context the platform cannot keep is refused before anything is recorded or called.
        ContextSet::check_request(request, &self.transfer.rules().context)?;
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

        let hint = record.request.participant();
        let located = match self.transfer.locate(record.request.conversation_id(), hint).await {
            Ok(l) => l,
            Err(e) if record.stage == Stage::TransferPending => return Err(self.read_back_failed(record, e).await),
            Err(e) => return Err(self.stop(record, e, "conversation lookup").await),
        };
        record.add_correlation_id(located.correlation_id.as_deref());

        if record.stage == Stage::TransferPending {
            // A transfer may have happened: read back before anything else.
            let queue = record.queue.unwrap_or(primary);
            if located.is_handed_to(queue) {
                return self.transferred(record, queue, "read back: the conversation is in the queue", &located).await;
            }
            if located.state != ControlState::Ended {
                self.move_to(record, Stage::ContextWritten, "read back: the transfer did not apply")?;
            }
        }

        self.refuse_early(record, &located, background).await?;

        let queue = match (record.stage, admitted) {
            (_, Some(q)) => q,
            (Stage::ContextWritten | Stage::TransferPending, _) => record.queue.unwrap_or(primary),
            _ => match self.admit(record, primary).await? {
                Some(q) => q,
                None => return self.defer(record, primary).await,
            },
        };
        if located.is_handed_to(queue) {
            return self.transferred(record, queue, "the conversation was already in the queue", &located).await;
        }

        let handle = match &located.handle {
            Ok(h) => *h,
            Err(Untransferable(message)) => {
                return Err(self.untransferable(record, message.clone(), background).await);
            }
        };
        let rules = self.transfer.rules();
        let anchor = match (rules.context_delivery, located.context_anchor) {
            (ContextDelivery::Separate, Some(anchor)) => Some(anchor),
            (ContextDelivery::Separate, None) => {
                let message = "the platform located no place for the context".to_owned();
                return Err(self.untransferable(record, message, background).await);
            }
            (ContextDelivery::WithTransfer, _) => None,
        };

        let context = self.context(record).await?;
        // A record in `ContextWritten` already wrote the context at this anchor: only the
        // transfer is left. A platform that takes the context with the transfer writes nothing here.
        let context_needed = anchor.is_some()
            && !(record.stage == Stage::ContextWritten
                && record.context_anchor.is_some()
                && record.context_anchor == anchor);
        let mut pending = record.clone();
        pending.queue = Some(queue);
        pending.handle = Some(handle);
        // `context_anchor` names where the context was written: until the write succeeds, the
        // stored record keeps the previous value, so recovery never takes the context as written.
        if !context_needed {
            pending.context_anchor = anchor;
        }
        let note = match context_needed {
            true => format!("writing the context, then transferring to queue {queue}"),
            false if anchor.is_some() => format!("context written; transferring to queue {queue}"),
            false => format!("transferring to queue {queue} with the context"),
        };
        self.move_to(&mut pending, Stage::TransferPending, &note)?;
        // The context write and the `TransferPending` save do not depend on each other, so they
        // run together; the transfer waits for both. The save renews the lease so it covers the
        // transfer and a read-back, and is fenced, so a record someone else took over meanwhile
        // is never transferred from here. If the context write fails, the record is stored back in
        // its earlier stage (`stop`, same fence). If that store is lost (a crash, or the ledger
        // failing), the stored `TransferPending` makes recovery read the conversation back first;
        // it then finds no anchor with the context and writes it before transferring.
        let write_context = async {
            match (context_needed, anchor) {
                (true, Some(anchor)) => {
                    self.transfer.write_context(record.request.conversation_id(), anchor, &context).await.map(Some)
                }
                _ => Ok(None),
            }
        };
        let (written, saved) = futures::join!(write_context, self.ledger.save(&pending, self.hold(), &[]));
        let receipt = match written {
            Ok(receipt) => receipt,
            Err(e) => return Err(self.stop(record, e, "writing the context").await),
        };
        if let Err(e) = saved {
            return Err(self.ledger_unavailable(Some(record.id), &e));
        }
        *record = pending;
        record.context_anchor = anchor;
        if let Some(receipt) = receipt {
            record.add_correlation_id(receipt.correlation_id.as_deref());
        }

        let with_transfer = match rules.context_delivery {
            ContextDelivery::WithTransfer => Some(&context),
            ContextDelivery::Separate => None,
        };
        match self.transfer.transfer(record.request.conversation_id(), handle, queue, with_transfer).await {
            Ok(TransferResult::Done(receipt)) => {
                record.add_correlation_id(receipt.correlation_id.as_deref());
                self.transferred(record, queue, "transferred", &located).await
            }
            Ok(TransferResult::Accepted(receipt)) => {
                record.add_correlation_id(receipt.correlation_id.as_deref());
                Err(self.accepted(record, queue).await)
            }
            Err(PortError::Indeterminate { detail }) => {
                record.add_correlation_id(detail.correlation_id.as_deref());
                self.read_back_after_unknown(record, queue, &detail.message).await
            }
            Err(e @ (PortError::Transient { .. } | PortError::RateLimited { .. })) => {
                // The adapter guarantees the transfer did not happen.
                self.move_to(record, Stage::ContextWritten, "the transfer did not happen")?;
                Err(self.stop(record, e, "transfer").await)
            }
            // The holder let go or the conversation ended meanwhile: nobody to hand off for.
            Err(PortError::InvalidState { reason, detail }) if background => {
                record.add_correlation_id(detail.correlation_id.as_deref());
                Err(self.abandon(record, reason).await)
            }
            Err(e) => Err(self.fail(record, e).await),
        }
    }

    /// The platform took the transfer but confirms it later (`TransferResult::Accepted`): the
    /// record stays `TransferPending`, leased until the platform's confirmation window ends, and
    /// the answer is a 503 whose `Retry-After` is that window. Whoever takes the record up next
    /// (the bot's retry, or the worker once the lease lapses) reads it back before anything else,
    /// so the transfer is never repeated before the platform had its time to show it.
    pub(super) async fn accepted(&self, record: &mut HandoffRecord, queue: QueueId) -> HandoffError {
        let window = self.transfer.rules().confirm_within.unwrap_or(self.settings.unavailable_retry_after);
        let now = self.clock.now();
        record.queue = Some(queue);
        record.stalled(now, format!("transfer to queue {queue} accepted; waiting for the platform to confirm it"));
        let hold = Some(crate::lifecycle::later(now, window));
        if let Err(e) = self.ledger.save(record, hold, &[]).await {
            return self.ledger_unavailable(Some(record.id), &e);
        }
        HandoffError::Unavailable {
            handoff_id: Some(record.id),
            retry_after: window.max(std::time::Duration::from_secs(1)),
        }
    }

    /// Refuses a conversation that cannot be handed off as soon as it is located, so it is
    /// refused now instead of being deferred (202) and failed by the worker later. A conversation
    /// already waiting at an allowed target skips this (there may be nothing to hand off from; the
    /// caller decides once the queue is chosen).
    pub(super) async fn refuse_early(
        &self,
        record: &mut HandoffRecord,
        located: &Located,
        background: bool,
    ) -> Step<()> {
        let routing = &self.settings.routing;
        let message = match (&located.state, &located.handle) {
            (ControlState::Ended, _) => "the conversation has ended".to_owned(),
            (ControlState::Queued { .. }, _) if located.is_handed_to_any(|q| routing.is_allowed(q)) => return Ok(()),
            (_, Err(Untransferable(message))) => message.clone(),
            (ControlState::AgentHas { .. }, Ok(_)) => "an agent already handles the conversation".to_owned(),
            (ControlState::Unheld, Ok(_)) => "no participant holds the conversation".to_owned(),
            (ControlState::BotHolds | ControlState::Queued { .. }, Ok(_)) => return Ok(()),
        };
        Err(self.untransferable(record, message, background).await)
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

    /// The context for the agent; a request whose context cannot fit the platform's limits
    /// fails the record as not transferable (a backstop: deliveries are checked before `begin`).
    pub(super) async fn context(&self, record: &mut HandoffRecord) -> Step<ContextSet> {
        let limits = &self.transfer.rules().context;
        match ContextSet::for_handoff(&record.request, record.id, self.clock.now(), limits) {
            Ok(attributes) => Ok(attributes),
            Err(e) => Err(self.not_transferable(record, e.to_string()).await),
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

    /// The transfer happened. `located` is the latest lookup of the conversation: the analytics
    /// event is queued (through the outbox) for platforms that take analytics separately, unless
    /// the tag is switched off or the lookup shows a tag
    /// someone else set, which ours would replace.
    pub(super) async fn transferred(
        &self,
        record: &mut HandoffRecord,
        queue: QueueId,
        note: &str,
        located: &Located,
    ) -> Step<HandoffOutcome> {
        let now = self.clock.now();
        record.queue = Some(queue);
        record.next_check_at = None;
        record.last_error = None;
        self.move_to(record, Stage::Transferred, note)?;
        record.answer = Some(StoredAnswer::Transferred { queue });
        let separate = self.transfer.rules().analytics == AnalyticsDelivery::Separate;
        let tag = separate && self.settings.external_tag && !located.foreign_tag;
        if separate && self.settings.external_tag && !tag {
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
