//! The background worker: deferred handoffs, crash recovery and handoffs nobody came back for.

use crate::ids::QueueId;
use crate::lifecycle::{HandoffRecord, Stage, StoredAnswer};
use crate::ports::LedgerError;

use super::types::*;
use super::{HandoffService, Step};

impl HandoffService {
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

    pub(super) async fn defer(&self, record: &mut HandoffRecord, primary: QueueId) -> Step<HandoffOutcome> {
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
}

#[cfg(test)]
mod tests;
