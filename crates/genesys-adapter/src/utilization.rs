//! The message capacity (issue 11): how many message conversations one agent may carry, from
//! the org's utilization (`GET /api/v2/routing/utilization` → `utilization.message.maximumCapacity`),
//! cached for `refresh` (5 minutes) and fetched by one caller at a time; or a fixed value
//! (`HANDOFF_MESSAGE_CAPACITY`); or not needed at all (idle-agent counting).
//!
//! A failed fetch keeps the last known value (stale beats unknown: the org setting rarely
//! changes) and is tried again after [`RETRY_AFTER_FAILURE`], not on every capacity check, so a
//! missing `routing:utilization:view` costs one call a minute, not one per handoff. With no value
//! ever fetched, the capacity is unknown and the admission rule decides on what it knows.
//!
//! Per-user utilization overrides (`/api/v2/routing/users/{id}/utilization`) are not read: the
//! org value is the estimate, `HANDOFF_MESSAGE_CAPACITY` the operator's correction.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a failed utilization fetch waits before the next try.
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Where the message capacity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageCapacitySource {
    /// The org's utilization, cached (the default).
    #[default]
    Utilization,
    /// A fixed value (`HANDOFF_MESSAGE_CAPACITY`); the utilization is never read.
    Fixed(u32),
    /// Not needed (idle-agent counting, or the capacity check off); never read, always unknown.
    NotNeeded,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The last value known (a success that had no message capacity is `None`).
    value: Option<u32>,
    /// When the next fetch is due.
    due: Instant,
}

/// The cached message capacity.
#[derive(Debug)]
pub(crate) struct MessageCapacityCache {
    source: MessageCapacitySource,
    refresh: Duration,
    last: Mutex<Option<Entry>>,
    fetching: tokio::sync::Mutex<()>,
}

impl MessageCapacityCache {
    pub(crate) fn new(source: MessageCapacitySource, refresh: Duration) -> Self {
        Self { source, refresh, last: Mutex::new(None), fetching: tokio::sync::Mutex::new(()) }
    }

    pub(crate) fn source(&self) -> MessageCapacitySource {
        self.source
    }

    fn entry(&self) -> Option<Entry> {
        *self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The message capacity: the fixed value, the cached one while it is fresh, else the result
    /// of `fetch` (one caller at a time; the others wait and take its result). `fetch` answers
    /// `Ok(capacity)` (itself `None` when the org has none) or `Err(())` when it failed.
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Option<u32>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<u32>, ()>>,
    {
        match self.source {
            MessageCapacitySource::Fixed(n) => return Some(n),
            MessageCapacitySource::NotNeeded => return None,
            MessageCapacitySource::Utilization => {}
        }
        if let Some(entry) = self.entry().filter(|e| Instant::now() < e.due) {
            return entry.value;
        }
        let _fetching = self.fetching.lock().await;
        // Someone may have fetched while this caller waited.
        if let Some(entry) = self.entry().filter(|e| Instant::now() < e.due) {
            return entry.value;
        }
        let previous = self.entry().and_then(|e| e.value);
        let entry = match fetch().await {
            Ok(value) => Entry { value, due: Instant::now() + self.refresh },
            Err(()) => Entry { value: previous, due: Instant::now() + RETRY_AFTER_FAILURE.min(self.refresh) },
        };
        *self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(entry);
        entry.value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[tokio::test(start_paused = true)]
    async fn the_utilization_is_read_once_per_five_minutes() {
        // Arrange
        let cache = MessageCapacityCache::new(MessageCapacitySource::Utilization, FIVE_MINUTES);
        let calls = AtomicU32::new(0);
        let fetch = || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Some(n))
        };

        // Act: a capacity check every second for ten minutes and a bit
        let mut seen = Vec::new();
        for _ in 0..=601 {
            seen.push(cache.get(fetch).await);
            tokio::time::advance(Duration::from_secs(1)).await;
        }

        // Assert: at 0 s, 300 s and 600 s
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!((seen[0], seen[299], seen[300], seen[600]), (Some(1), Some(1), Some(2), Some(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        // Arrange
        let cache = MessageCapacityCache::new(MessageCapacitySource::Utilization, FIVE_MINUTES);
        let calls = AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Some(4))
        };

        // Act
        let all = futures::future::join_all((0..10).map(|_| cache.get(fetch))).await;

        // Assert
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(all.iter().all(|c| *c == Some(4)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_keeps_the_last_value_and_is_retried_after_a_minute() {
        // Arrange: a value, then the org refuses (e.g. a removed permission)
        let cache = MessageCapacityCache::new(MessageCapacitySource::Utilization, FIVE_MINUTES);
        let calls = AtomicU32::new(0);
        let first = cache.get(|| async { Ok(Some(3)) }).await;
        tokio::time::advance(FIVE_MINUTES).await;
        let failing = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(())
        };

        // Act
        let stale = cache.get(failing).await;
        tokio::time::advance(Duration::from_secs(59)).await;
        let still = cache.get(failing).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let again = cache.get(failing).await;

        // Assert
        assert_eq!((first, stale, still, again), (Some(3), Some(3), Some(3), Some(3)));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one try at 300 s, the next at 360 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_with_nothing_known_is_unknown() {
        let cache = MessageCapacityCache::new(MessageCapacitySource::Utilization, FIVE_MINUTES);
        assert_eq!(cache.get(|| async { Err(()) }).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_or_unneeded_capacity_never_fetches() {
        let calls = AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Some(9))
        };
        let fixed = MessageCapacityCache::new(MessageCapacitySource::Fixed(2), FIVE_MINUTES);
        let off = MessageCapacityCache::new(MessageCapacitySource::NotNeeded, FIVE_MINUTES);
        assert_eq!(fixed.get(fetch).await, Some(2));
        assert_eq!(off.get(fetch).await, None);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
