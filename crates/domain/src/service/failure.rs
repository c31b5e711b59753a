//! How a step that went wrong ends: a retryable stop (503), a failure, an abandon; the read-back
//! of a transfer whose outcome is unknown; the outcome reports.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::{HandoffId, QueueId};
use crate::lifecycle::{HandoffRecord, Stage, StoredAnswer};
use crate::ports::{LedgerError, OutcomeReport, PortError};
use crate::request::HandoffRequest;

use super::types::*;
use super::{HandoffService, Step};

impl HandoffService {
    /// Upstream could not say whether the transfer happened: look, and never transfer again
    /// before knowing.
    pub(super) async fn read_back_after_unknown(
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
    pub(super) async fn read_back_failed(&self, record: &mut HandoffRecord, error: PortError) -> HandoffError {
        let error = match error {
            e if e.is_retryable() => e,
            e => PortError::Transient { detail: e.to_string(), correlation_id: e.correlation_id().map(str::to_owned) },
        };
        self.stop(record, error, "reading the conversation back").await
    }

    /// A retryable stop: keep the stage, release the lease, answer 503.
    pub(super) async fn stop(&self, record: &mut HandoffRecord, error: PortError, step: &str) -> HandoffError {
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
    pub(super) async fn fail(&self, record: &mut HandoffRecord, error: PortError) -> HandoffError {
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
    pub(super) fn retry_after(&self, error: &PortError) -> Duration {
        match error {
            PortError::RateLimited { retry_after: Some(d), .. } => (*d).max(Duration::from_secs(1)),
            _ => self.settings.unavailable_retry_after,
        }
    }

    /// The conversation cannot be handed off: a delivery's 422, or in the background (nobody is
    /// waiting for an answer) the end of the handoff as abandoned.
    pub(super) async fn untransferable(
        &self,
        record: &mut HandoffRecord,
        message: String,
        background: bool,
    ) -> HandoffError {
        match background {
            true => self.abandon(record, message).await,
            false => self.not_transferable(record, message).await,
        }
    }

    /// Ends the record as [`Stage::Abandoned`]: nothing was (or will be) transferred.
    pub(super) async fn abandon(&self, record: &mut HandoffRecord, message: String) -> HandoffError {
        let err = HandoffError::Abandoned { handoff_id: Some(record.id), message };
        self.record_failure(record, &err).await;
        err
    }

    pub(super) async fn not_transferable(&self, record: &mut HandoffRecord, message: String) -> HandoffError {
        let err = HandoffError::NotTransferable { handoff_id: Some(record.id), message };
        self.record_failure(record, &err).await;
        err
    }

    pub(super) async fn record_failure(&self, record: &mut HandoffRecord, err: &HandoffError) {
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

    /// The answer when the ledger refused: 409 when someone else took the record over (they
    /// finish it), else 503.
    pub(super) fn ledger_unavailable(&self, handoff_id: Option<HandoffId>, error: &LedgerError) -> HandoffError {
        match (error, handoff_id) {
            (LedgerError::LeaseLost, Some(handoff_id)) => {
                HandoffError::InProgress { handoff_id, retry_after: self.settings.busy_retry_after }
            }
            _ => HandoffError::Unavailable { handoff_id, retry_after: self.settings.unavailable_retry_after },
        }
    }

    pub(super) fn report(
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

    pub(super) fn report_early(
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

#[cfg(test)]
mod tests;
