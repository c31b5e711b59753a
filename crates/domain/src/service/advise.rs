//! Advisory mode: the same steps up to the context write, then an advice; and the background
//! reads that confirm an advice to transfer.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::lifecycle::{AdviceDecision, Confirmation, HandoffMode, HandoffRecord, Stage, StoredAnswer, Unconfirmed};
use crate::ports::PortError;
use crate::request::{HandoffRequest, IdempotencyKey};

use super::types::*;
use super::{HandoffService, Started, Step};

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

impl HandoffService {
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

    /// Works out the advice for a leased `Received` record: locate → admit → write context →
    /// finish. Errors stop or fail the record exactly as in transfer mode.
    pub(super) async fn advise_record(&self, record: &mut HandoffRecord) -> Step<HandoffOutcome> {
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
    pub(super) async fn confirm(&self, mut record: HandoffRecord, started: DateTime<Utc>) -> bool {
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
    pub(super) async fn abandon_advice(&self, mut record: HandoffRecord, started: DateTime<Utc>) {
        let message = "the advisory delivery was interrupted; nothing was transferred".to_owned();
        if record.advance(Stage::Failed, self.clock.now(), message.clone()).is_ok() {
            record.answer =
                Some(StoredAnswer::Failed { status: 503, code: "upstream_unavailable".to_owned(), message });
        }
        let _ = self.ledger.save(&record, None, &[]).await;
        self.report(&record, started, true, Err("advice_interrupted"));
    }
}

#[cfg(test)]
mod tests;
