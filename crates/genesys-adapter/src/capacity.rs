//! The shared capacity cache (CONTRACT §5.4): per queue, one snapshot shared for `capacity_ttl`,
//! fetched by one caller at a time (single flight), so a burst of handoffs for a queue costs one
//! observation query.
//!
//! Each queue has a slot with an async mutex around its last result. A caller that finds a fresh
//! snapshot returns it; otherwise it takes the lock and, if no fetch finished while it waited,
//! fetches itself. Callers that waited behind a fetch take its result, a failure included, so an
//! outage costs one query per round, not one per caller. A failure is never served to a caller
//! that arrives after it.
//!
//! Slots are kept for every queue ever asked about: queues come from the configured allowlist
//! (the domain validates them), so the map stays small.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handoff_domain::ports::PortError;
use handoff_domain::{CapacitySnapshot, QueueId};
use tokio::time::Instant;

use crate::stats::Counters;

#[derive(Debug)]
struct Entry {
    at: Instant,
    with_wait: bool,
    result: Result<CapacitySnapshot, PortError>,
}

#[derive(Debug, Default)]
struct Slot {
    last: tokio::sync::Mutex<Option<Entry>>,
    /// Fetches finished, bumped under `last`.
    completed: AtomicU64,
}

/// Per-queue shared snapshots.
#[derive(Debug)]
pub(crate) struct CapacityCache {
    ttl: Duration,
    slots: Mutex<HashMap<QueueId, Arc<Slot>>>,
}

impl CapacityCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, slots: Mutex::new(HashMap::new()) }
    }

    /// The snapshot of `queue`: the cached one if fresh (and carrying the estimated wait when
    /// `with_wait`), else the result of `fetch`, run by at most one caller at a time.
    pub(crate) async fn get<F, Fut>(
        &self,
        queue: QueueId,
        with_wait: bool,
        counters: &Counters,
        fetch: F,
    ) -> Result<CapacitySnapshot, PortError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CapacitySnapshot, PortError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(slots.entry(queue).or_default())
        };
        let seen = slot.completed.load(Ordering::Acquire);
        let mut last = slot.last.lock().await;
        if let Some(entry) = last.as_ref().filter(|e| e.with_wait || !with_wait) {
            let fresh = entry.result.is_ok() && entry.at.elapsed() < self.ttl;
            let finished_while_waiting = slot.completed.load(Ordering::Acquire) != seen;
            if fresh || finished_while_waiting {
                counters.capacity_cache_hits.fetch_add(1, Ordering::Relaxed);
                return entry.result.clone().map(|snapshot| trim(snapshot, with_wait));
            }
        }
        let result = fetch().await;
        *last = Some(Entry { at: Instant::now(), with_wait, result: result.clone() });
        slot.completed.fetch_add(1, Ordering::Release);
        result
    }
}

/// Leaves the estimated wait out when it was not asked for.
fn trim(mut snapshot: CapacitySnapshot, with_wait: bool) -> CapacitySnapshot {
    if !with_wait {
        snapshot.estimated_wait = None;
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn queue() -> QueueId {
        QueueId::parse("11111111-2222-3333-4444-555555555555").unwrap()
    }

    fn snapshot(idle: u32) -> CapacitySnapshot {
        CapacitySnapshot { queue: queue(), idle_agents: idle, on_queue_agents: idle, waiting: 0, estimated_wait: None }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_snapshot_is_shared_and_an_old_one_refetched() {
        // Arrange
        let cache = CapacityCache::new(Duration::from_secs(1));
        let counters = Counters::default();
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(snapshot(n))
        };

        // Act
        let first = cache.get(queue(), false, &counters, fetch).await.unwrap();
        let second = cache.get(queue(), false, &counters, fetch).await.unwrap();
        tokio::time::advance(Duration::from_millis(1001)).await;
        let third = cache.get(queue(), false, &counters, fetch).await.unwrap();

        // Assert
        assert_eq!((first.idle_agents, second.idle_agents, third.idle_agents), (1, 1, 2));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_without_the_estimated_wait_does_not_answer_a_request_for_it() {
        // Arrange
        let cache = CapacityCache::new(Duration::from_secs(1));
        let counters = Counters::default();
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok(snapshot(1))
        };

        // Act
        cache.get(queue(), false, &counters, fetch).await.unwrap();
        cache.get(queue(), true, &counters, fetch).await.unwrap();
        cache.get(queue(), false, &counters, fetch).await.unwrap();

        // Assert: the second needed a fetch, the third was served by it.
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_not_served_to_later_callers() {
        // Arrange
        let cache = CapacityCache::new(Duration::from_secs(1));
        let counters = Counters::default();
        let failing = || async { Err(PortError::Transient { detail: "down".into(), correlation_id: None }) };
        let working = || async { Ok(snapshot(3)) };

        // Act
        let first = cache.get(queue(), false, &counters, failing).await;
        let second = cache.get(queue(), false, &counters, working).await;

        // Assert
        assert!(first.is_err());
        assert_eq!(second.unwrap().idle_agents, 3);
    }
}
