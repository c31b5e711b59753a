//! Group availability, cached per group for `capacity_ttl` (one fetch at a time: concurrent
//! callers wait for it and share the answer).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use handoff_domain::ports::PortError;
use tokio::time::Instant;

use crate::wire::GroupAvailability;

#[derive(Debug)]
pub(crate) struct CapacityCache {
    ttl: Duration,
    entries: tokio::sync::Mutex<HashMap<u64, (Instant, GroupAvailability)>>,
}

impl CapacityCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, entries: tokio::sync::Mutex::new(HashMap::new()) }
    }

    pub(crate) async fn get<F, Fut>(&self, group: u64, fetch: F) -> Result<GroupAvailability, PortError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<GroupAvailability, PortError>>,
    {
        let mut entries = self.entries.lock().await;
        if let Some((at, value)) = entries.get(&group) {
            if at.elapsed() < self.ttl {
                return Ok(*value);
            }
        }
        let value = fetch().await?;
        entries.insert(group, (Instant::now(), value));
        Ok(value)
    }
}
