//! The shared capacity cache (CONTRACT §5.4): per queue, one snapshot shared for `capacity_ttl`,
//! fetched by one caller at a time (single flight), so a burst of handoffs for a queue costs one
//! observation query.
//!
//! Each queue has a slot holding its last result and a lock that only a fetch holds:
//! - a snapshot younger than `ttl` is served as is;
//! - a snapshot between `ttl` and twice `ttl` old is **refreshed ahead**: the first caller to see
//!   it fetches, and everyone arriving meanwhile is served the previous snapshot at once instead
//!   of queueing behind the upstream call (at most one handoff per queue per `ttl` waits for it);
//! - with no usable snapshot (none yet, older than twice `ttl`, or a failure), callers queue on the
//!   lock: the first fetches, and those that waited behind it take its result, a failure included,
//!   so an outage costs one query per round, not one per caller. A failure is never served to a
//!   caller that arrives after it.
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

#[derive(Debug, Clone)]
struct Entry {
    at: Instant,
    with_wait: bool,
    result: Result<CapacitySnapshot, PortError>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The last fetch's result.
    last: Mutex<Option<Entry>>,
    /// Held by the caller that fetches.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches finished, bumped after `last` is written.
    completed: AtomicU64,
}

impl Slot {
    /// The last entry, if it can answer a caller that does (or does not) need the estimated wait.
    fn usable(&self, with_wait: bool) -> Option<Entry> {
        let last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last.as_ref().filter(|e| e.with_wait || !with_wait).cloned()
    }

    fn store(&self, entry: Entry) {
        *self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(entry);
        self.completed.fetch_add(1, Ordering::Release);
    }
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
    /// `with_wait`), else the result of `fetch`, run by at most one caller at a time (see the
    /// module doc for the refresh ahead).
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
        let hit = |entry: Entry| {
            counters.capacity_cache_hits.fetch_add(1, Ordering::Relaxed);
            entry.result.map(|snapshot| trim(snapshot, with_wait))
        };
        let seen = slot.completed.load(Ordering::Acquire);
        if let Some(entry) = slot.usable(with_wait).filter(|e| e.result.is_ok()) {
            let age = entry.at.elapsed();
            if age < self.ttl {
                return hit(entry);
            }
            if age < self.ttl.saturating_mul(2) {
                match slot.fetching.try_lock() {
                    // Someone is refreshing it: the previous snapshot answers meanwhile.
                    Err(_) => return hit(entry),
                    Ok(_fetching) => {
                        // A refresh may have finished since this caller looked: use it.
                        if slot.completed.load(Ordering::Acquire) != seen {
                            if let Some(entry) = slot.usable(with_wait) {
                                return hit(entry);
                            }
                        }
                        return Self::fetch_into(&slot, with_wait, fetch).await;
                    }
                }
            }
        }
        let _fetching = slot.fetching.lock().await;
        if slot.completed.load(Ordering::Acquire) != seen {
            if let Some(entry) = slot.usable(with_wait) {
                return hit(entry);
            }
        }
        Self::fetch_into(&slot, with_wait, fetch).await
    }

    /// The last observation of every queue asked about: its result and its age. Reads the cache
    /// only (for the insights page); never fetches.
    pub(crate) fn last_observations(&self) -> Vec<(QueueId, Result<CapacitySnapshot, PortError>, Duration)> {
        let slots: Vec<(QueueId, Arc<Slot>)> = {
            let slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.iter().map(|(q, s)| (*q, Arc::clone(s))).collect()
        };
        slots
            .into_iter()
            .filter_map(|(queue, slot)| {
                let last = slot.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                last.as_ref().map(|e| (queue, e.result.clone(), e.at.elapsed()))
            })
            .collect()
    }

    /// Runs `fetch` (the caller holds `fetching`) and keeps its result.
    async fn fetch_into<F, Fut>(slot: &Slot, with_wait: bool, fetch: F) -> Result<CapacitySnapshot, PortError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CapacitySnapshot, PortError>>,
    {
        let result = fetch().await;
        slot.store(Entry { at: Instant::now(), with_wait, result: result.clone() });
        result
    }
}

/// How often, at most, the "figures incomplete" warning is logged per queue.
pub(crate) const FIGURE_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Lets one warning per queue through every `every` (by the tokio clock, so tests can pause it).
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    every: Duration,
    last: Mutex<HashMap<QueueId, Instant>>,
}

impl WarnLimiter {
    pub(crate) fn new(every: Duration) -> Self {
        Self { every, last: Mutex::new(HashMap::new()) }
    }

    /// Whether a warning about `queue` may be logged now (and, if so, starts its quiet period).
    pub(crate) fn allow(&self, queue: QueueId) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match last.get(&queue) {
            Some(at) if now.duration_since(*at) < self.every => false,
            _ => {
                last.insert(queue, now);
                true
            }
        }
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

    /// A snapshot told apart by its waiting count.
    fn snapshot(n: u32) -> CapacitySnapshot {
        CapacitySnapshot {
            figures: handoff_domain::QueueFigures { waiting: Some(n), ..handoff_domain::QueueFigures::UNKNOWN },
            ..CapacitySnapshot::unknown(queue())
        }
    }

    fn n(snapshot: &CapacitySnapshot) -> u32 {
        snapshot.figures.waiting.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_warning_limiter_lets_one_warning_per_queue_through_each_minute() {
        // Arrange
        let limiter = WarnLimiter::new(FIGURE_WARNING_EVERY);
        let other = QueueId::parse("11111111-2222-3333-4444-666666666666").unwrap();

        // Act: a check every second for two minutes and a bit, on two queues
        let mut allowed = 0;
        for _ in 0..=120 {
            allowed += u32::from(limiter.allow(queue()));
            allowed += u32::from(limiter.allow(other));
            tokio::time::advance(Duration::from_secs(1)).await;
        }

        // Assert: at 0 s, 60 s and 120 s, for each queue
        assert_eq!(allowed, 6);
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
        assert_eq!((n(&first), n(&second), n(&third)), (1, 1, 2));
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
    async fn a_snapshot_past_its_ttl_is_refreshed_by_one_caller_while_the_others_are_served_the_old_one() {
        // Arrange: a snapshot 1.1 s old, and a refresh that takes 20 ms
        let cache = CapacityCache::new(Duration::from_secs(1));
        let counters = Counters::default();
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(snapshot(n))
        };
        cache.get(queue(), false, &counters, fetch).await.unwrap();
        tokio::time::advance(Duration::from_millis(1100)).await;
        let started = Instant::now();

        // Act: the first caller refreshes; the next ten arrive while it waits
        let refresher = cache.get(queue(), false, &counters, fetch);
        let others = futures::future::join_all((0..10).map(|_| async {
            tokio::task::yield_now().await;
            let answer = cache.get(queue(), false, &counters, fetch).await.unwrap();
            (n(&answer), started.elapsed())
        }));
        let (refreshed, others) = tokio::join!(refresher, others);

        // Assert: one fetch; the others got the old snapshot without waiting for it
        assert_eq!(n(&refreshed.unwrap()), 2);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        for (idle, waited) in others {
            assert_eq!(idle, 1);
            assert_eq!(waited, Duration::ZERO, "a caller waited for the refresh");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_older_than_twice_its_ttl_is_not_served_while_it_is_refreshed() {
        // Arrange
        let cache = CapacityCache::new(Duration::from_secs(1));
        let counters = Counters::default();
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(snapshot(n))
        };
        cache.get(queue(), false, &counters, fetch).await.unwrap();
        tokio::time::advance(Duration::from_millis(2001)).await;

        // Act
        let (a, b) =
            tokio::join!(cache.get(queue(), false, &counters, fetch), cache.get(queue(), false, &counters, fetch));

        // Assert: both waited for the one new fetch
        assert_eq!((n(&a.unwrap()), n(&b.unwrap())), (2, 2));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_not_served_to_later_callers() {
        // Arrange
        let cache = CapacityCache::new(Duration::from_secs(1));
        let counters = Counters::default();
        let failing = || async { Err(PortError::transient("down", None)) };
        let working = || async { Ok(snapshot(3)) };

        // Act
        let first = cache.get(queue(), false, &counters, failing).await;
        let second = cache.get(queue(), false, &counters, working).await;

        // Assert
        assert!(first.is_err());
        assert_eq!(n(&second.unwrap()), 3);
    }
}
