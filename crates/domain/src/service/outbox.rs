//! The analytics outbox: delivers each event once, with backoff.

use crate::ports::LedgerError;
use std::time::Duration;

use super::types::*;
use super::HandoffService;

impl HandoffService {
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
}

/// `2^attempts` seconds, capped.
pub(super) fn outbox_backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempts.min(32)).unwrap_or(u64::MAX)).min(max)
}

#[cfg(test)]
mod tests;
