//! The Genesys side: genesys-sim on its own tokio runtime (threads named `bench-sim`, so its CPU
//! is told apart from the load generator's), and what its call counts and call log say.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use genesys_sim::{Call, Endpoint, SimConfig, SimHandle};
use serde::Serialize;

/// Thread name of the simulator's runtime.
pub(crate) const SIM_THREAD: &str = "bench-sim";

/// The simulator and the runtime that serves it.
#[derive(Debug)]
pub(crate) struct Upstream {
    runtime: tokio::runtime::Runtime,
    handle: Option<SimHandle>,
    started: Instant,
}

impl Upstream {
    /// Starts the default org with `latency` per call on a runtime of `threads` workers; the call
    /// log keeps `max_logged_calls`.
    ///
    /// # Errors
    /// When the runtime or the listener cannot be created.
    /// `rate_limit` is the per-token allowance per minute (none: unlimited); without
    /// `notifications` the simulator refuses Notifications channels.
    pub(crate) fn start(
        latency: Duration,
        threads: usize,
        max_logged_calls: usize,
        rate_limit: Option<u32>,
        notifications: bool,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(SIM_THREAD)
            .enable_all()
            .build()
            .context("failed to build the simulator runtime")?;
        let config = SimConfig {
            latency,
            max_logged_calls,
            rate_limit_per_minute: rate_limit,
            notifications,
            ..SimConfig::default()
        };
        let handle = runtime.block_on(genesys_sim::spawn(config)).context("failed to start genesys-sim")?;
        let started = handle.sim().started_at();
        Ok(Self { runtime, handle: Some(handle), started })
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn base_url(&self) -> String {
        self.handle.as_ref().map(SimHandle::base_url).unwrap_or_default()
    }

    /// Calls answered so far, by endpoint.
    pub(crate) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        if let Some(h) = &self.handle {
            for e in Endpoint::ALL {
                counts.0.insert(endpoint_name(e), h.sim().count(e) as u64);
            }
        }
        counts
    }

    /// The call log (bounded by `max_logged_calls`).
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.handle.as_ref().map(|h| h.sim().calls()).unwrap_or_default()
    }

    /// `instant` as an offset from simulator start, the clock of [`Call::at`].
    pub(crate) fn offset(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.started)
    }

    /// Stops the server and its runtime.
    pub(crate) fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            self.runtime.block_on(handle.shutdown());
        }
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// The report's name of an endpoint (its camelCase serde name).
pub(crate) fn endpoint_name(e: Endpoint) -> String {
    serde_json::to_value(e).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{e:?}"))
}

/// Answered calls by endpoint name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counts(pub(crate) BTreeMap<String, u64>);

impl Counts {
    /// Calls of `e`.
    pub(crate) fn get(&self, e: Endpoint) -> u64 {
        self.0.get(&endpoint_name(e)).copied().unwrap_or(0)
    }

    /// Every call.
    pub(crate) fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Capacity (observation) queries of one queue.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct QueueQueries {
    /// Queue id.
    pub(crate) queue: String,
    /// Display name in the simulator.
    pub(crate) name: String,
    /// Queries over the whole run.
    pub(crate) total: u64,
    /// Queries answered inside the measured phase.
    pub(crate) in_measured_phase: u64,
    /// `in_measured_phase` divided by the measured phase's length.
    pub(crate) per_second_measured: f64,
    /// Shortest gap between two consecutive queries, ms (`None` with fewer than two).
    pub(crate) min_gap_ms: Option<f64>,
}

/// Observation queries per queue, from the call log. `window` is the measured phase as offsets
/// from simulator start.
pub(crate) fn capacity_queries(calls: &[Call], window: (Duration, Duration)) -> Vec<QueueQueries> {
    let queues = genesys_sim::QueueSpec::defaults();
    let window_secs = window.1.saturating_sub(window.0).as_secs_f64();
    let mut out = Vec::new();
    for q in queues {
        let id = q.id.to_string();
        let mut times: Vec<Duration> = calls
            .iter()
            .filter(|c| c.endpoint == Endpoint::ObservationsQuery)
            .filter(|c| c.body.as_ref().is_some_and(|b| b.to_string().contains(&id)))
            .map(|c| c.at)
            .collect();
        if times.is_empty() {
            continue;
        }
        times.sort();
        let in_window = times.iter().filter(|t| **t >= window.0 && **t <= window.1).count() as u64;
        let min_gap_ms = times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0).reduce(f64::min);
        out.push(QueueQueries {
            queue: id,
            name: q.name,
            total: times.len() as u64,
            in_measured_phase: in_window,
            per_second_measured: if window_secs > 0.0 { in_window as f64 / window_secs } else { 0.0 },
            min_gap_ms,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesys_sim::{BILLING_QUEUE, SUPPORT_QUEUE};

    fn query(queue: uuid::Uuid, at_ms: u64) -> Call {
        Call {
            seq: at_ms,
            endpoint: Endpoint::ObservationsQuery,
            method: "POST".to_owned(),
            path: "/api/v2/analytics/queues/observations/query".to_owned(),
            status: 200,
            body: Some(serde_json::json!({ "filter": { "predicates": [{ "value": queue.to_string() }] } })),
            at: Duration::from_millis(at_ms),
            correlation_id: uuid::Uuid::nil(),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn capacity_queries_are_counted_per_queue_with_their_tightest_gap() {
        // Arrange
        let calls = vec![
            query(SUPPORT_QUEUE, 100),
            query(SUPPORT_QUEUE, 1150),
            query(SUPPORT_QUEUE, 2300),
            query(BILLING_QUEUE, 120),
        ];

        // Act
        let queues = capacity_queries(&calls, (Duration::from_millis(1000), Duration::from_millis(3000)));

        // Assert
        let support = queues.iter().find(|q| q.name == "Support").unwrap();
        assert_eq!((support.total, support.in_measured_phase), (3, 2));
        assert!((support.per_second_measured - 1.0).abs() < 1e-9);
        assert!((support.min_gap_ms.unwrap() - 1050.0).abs() < 1e-6);
        let billing = queues.iter().find(|q| q.name == "Billing").unwrap();
        assert_eq!((billing.total, billing.min_gap_ms), (1, None));
        assert_eq!(queues.len(), 2);
    }
}

/// Transfers as Genesys saw them, checked against the answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Transfers {
    /// Conversations with more than one successful replace.
    pub(crate) doubled: u64,
    /// Conversations answered `transferred` whose replace never succeeded (deferred ones are the
    /// service's to transfer later, not lost).
    pub(crate) lost: u64,
}

/// Counts successful replaces per conversation in the call log and checks every conversation of
/// `answered`.
pub(crate) fn transfers(calls: &[Call], answered: &[crate::load::Timed]) -> Transfers {
    let mut replaces: BTreeMap<&str, u64> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.endpoint == Endpoint::Replace && (200..300).contains(&c.status)) {
        // `/api/v2/conversations/messages/{id}/participants/{pid}/replace`
        if let Some(id) = call.path.split('/').nth(5) {
            *replaces.entry(id).or_insert(0) += 1;
        }
    }
    let doubled = replaces.values().filter(|&&n| n > 1).count() as u64;
    let lost = answered
        .iter()
        .filter(|t| t.transferred && !replaces.contains_key(t.conversation.to_string().as_str()))
        .count() as u64;
    Transfers { doubled, lost }
}
