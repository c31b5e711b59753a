//! Push instead of poll: queue figures from one Notifications API channel.
//!
//! One channel (`POST /api/v2/notifications/channels`), one WebSocket to its `connectUri`, and one
//! subscription per configured queue to `v2.analytics.queues.{id}.observations`
//! (`PUT …/channels/{id}/subscriptions`). Paths, topic and event model are checked against the
//! Genesys SDKs; sources in `docs/genesys/api-notes.md`.
//!
//! Genesys pushes *changes*, not the current state, so a queue's figures start from one polled
//! observation query (the usual [`QueuePort::capacity`](handoff_domain::ports::QueuePort) path,
//! which seeds this store) and pushed events then replace the groups they carry. While the channel
//! is live the figures answer admission with zero calls per handoff.
//!
//! Pushed figures are used only when all of these hold, otherwise the cached polling of today is
//! used (and the switch is logged once):
//! - the socket is subscribed and heard from within `max_age` (events, heartbeats, or the `pong`
//!   to the pings the channel sends every `max_age / 3`);
//! - the queue was seeded since the socket (re)subscribed (a reconnect may have missed events);
//! - each result group was pushed since, or was polled less than [`UNPUSHED_GROUP_TTL`] ago. That
//!   covers both possible answers to whether the observation topic carries the routing-status
//!   counts (`oOnQueueUsers`): if it does, quiet queues cost one query per queue per
//!   [`UNPUSHED_GROUP_TTL`]; if it does not, the user metrics stay on polling with that longer cache.
//!
//! # Layout
//! - this module: [`NotificationSettings`], [`ChannelStats`], the figure store.
//! - `channel`: the channel's life: create, connect, subscribe, read events, ping, re-create
//!   before expiry, reconnect with backoff after a failure, back off for long when refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use handoff_domain::QueueId;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::ids::GenesysIds;

mod channel;

pub use channel::ChannelProbe;
pub(crate) use channel::{probe, run};

/// How long a result group seeded by a poll and never pushed since is trusted.
pub const UNPUSHED_GROUP_TTL: Duration = Duration::from_secs(120);
/// Default bound on the age of pushed figures (`GENESYS_FIGURES_MAX_AGE_SECS`).
pub const DEFAULT_FIGURES_MAX_AGE: Duration = Duration::from_secs(10);

/// How the channel runs.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// The queues whose figures are pushed (target, fallback, routes).
    pub queues: Vec<QueueId>,
    /// Pushed figures not confirmed for this long are not used.
    pub max_age: Duration,
}

/// Channel counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Whether pushed figures can answer now (socket subscribed and heard from recently).
    pub live: bool,
    /// Whether the org refused channels (polling only, retried rarely).
    pub refused: bool,
    /// Observation events applied.
    pub figure_events: u64,
    /// Heartbeats and pongs.
    pub heartbeats: u64,
    /// `v2.system.socket_closing` notices.
    pub closing_notices: u64,
    /// Events of an unknown topic or shape (ignored).
    pub unknown_events: u64,
    /// Channels created.
    pub channels_created: u64,
    /// Socket sessions started (first connect included).
    pub connects: u64,
    /// Capacity answers served from pushed figures.
    pub served: u64,
}

#[derive(Debug, Clone)]
struct Group {
    group: Map<String, Value>,
    /// Rows by metric name (each row as the query answer shapes it: `{metric, qualifier, stats}`).
    metrics: BTreeMap<String, Vec<Value>>,
    at: Instant,
    pushed: bool,
}

#[derive(Debug, Default)]
struct QueueFigures {
    session: u64,
    groups: BTreeMap<String, Group>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped when a socket is subscribed; figures of an older session are not used.
    session: u64,
    live: bool,
    heard_at: Option<Instant>,
    queues: HashMap<QueueId, QueueFigures>,
}

/// The latest figures per queue and the channel's liveness.
#[derive(Debug)]
pub(crate) struct FigureStore {
    max_age: Mutex<Duration>,
    state: Mutex<State>,
    /// Whether a channel runs at all (else nothing is logged about falling back).
    enabled: AtomicBool,
    refused: AtomicBool,
    fallback_logged: AtomicBool,
    pub(crate) figure_events: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) closing_notices: AtomicU64,
    pub(crate) unknown_events: AtomicU64,
    pub(crate) channels_created: AtomicU64,
    pub(crate) connects: AtomicU64,
    served: AtomicU64,
}

impl Default for FigureStore {
    fn default() -> Self {
        Self {
            max_age: Mutex::new(DEFAULT_FIGURES_MAX_AGE),
            state: Mutex::new(State::default()),
            enabled: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            fallback_logged: AtomicBool::new(false),
            figure_events: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            closing_notices: AtomicU64::new(0),
            unknown_events: AtomicU64::new(0),
            channels_created: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            served: AtomicU64::new(0),
        }
    }
}

/// A group's key: its dimensions, in order.
fn group_key(group: &Map<String, Value>) -> String {
    let sorted: BTreeMap<_, _> = group.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

fn queue_of(group: &Map<String, Value>) -> Option<QueueId> {
    group.get("queueId").and_then(Value::as_str).and_then(|q| QueueId::parse_with(&GenesysIds, q).ok())
}

impl FigureStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn max_age(&self) -> Duration {
        *self.max_age.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn enable(&self, max_age: Duration) {
        *self.max_age.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = max_age;
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// A socket is subscribed: a new session starts (older figures need a new seed).
    pub(crate) fn went_live(&self, now: Instant) {
        let mut s = self.state();
        s.session += 1;
        s.live = true;
        s.heard_at = Some(now);
        drop(s);
        self.refused.store(false, Ordering::Relaxed);
        if self.fallback_logged.swap(false, Ordering::Relaxed) {
            tracing::info!("notification channel live: queue figures are pushed again");
        }
    }

    /// The socket is gone (closed, failed, being replaced).
    pub(crate) fn went_down(&self) {
        self.state().live = false;
    }

    /// The org refused channels.
    pub(crate) fn refused(&self) {
        self.went_down();
        self.refused.store(true, Ordering::Relaxed);
    }

    /// Something arrived on the socket.
    pub(crate) fn heard(&self, now: Instant) {
        self.state().heard_at = Some(now);
    }

    /// Whether the socket was heard from within `max_age`.
    pub(crate) fn is_live(&self, now: Instant) -> bool {
        let s = self.state();
        s.live && s.heard_at.is_some_and(|at| now.saturating_duration_since(at) <= self.max_age())
    }

    pub(crate) fn last_heard(&self) -> Option<Instant> {
        self.state().heard_at
    }

    /// Seeds `queue` from a polled observation answer (`{"results": [{group, data}]}`), when the
    /// channel is live; otherwise there is nothing to keep it current.
    pub(crate) fn seed(&self, queue: QueueId, body: &[u8], now: Instant) {
        if !self.is_live(now) {
            return;
        }
        let Ok(answer) = serde_json::from_slice::<Value>(body) else { return };
        let mut groups = BTreeMap::new();
        for result in answer.get("results").and_then(Value::as_array).into_iter().flatten() {
            let Some(group) = result.get("group").and_then(Value::as_object) else { continue };
            if queue_of(group).is_some_and(|q| q != queue) {
                continue;
            }
            let mut metrics: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for row in result.get("data").and_then(Value::as_array).into_iter().flatten() {
                if let Some(metric) = row.get("metric").and_then(Value::as_str) {
                    metrics.entry(metric.to_owned()).or_default().push(row.clone());
                }
            }
            groups.insert(group_key(group), Group { group: group.clone(), metrics, at: now, pushed: false });
        }
        let mut s = self.state();
        let session = s.session;
        s.queues.insert(queue, QueueFigures { session, groups });
    }

    /// Applies one observation event body (`StatEventQueueTopicStatsNotification`). Returns false
    /// when its shape is not one this store knows (the caller counts it as unknown).
    pub(crate) fn apply(&self, body: &Value, now: Instant) -> bool {
        let Some(group) = body.get("group").and_then(Value::as_object) else { return false };
        let Some(queue) = queue_of(group) else { return false };
        let Some(data) = body.get("data").and_then(Value::as_array) else { return false };
        // Every metric the event mentions replaces that metric's rows in the group (all
        // qualifiers), so a count that fell to zero and was left out does not linger.
        let mut metrics: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for datum in data {
            let Some(rows) = datum.get("metrics").and_then(Value::as_array) else { return false };
            for row in rows {
                let Some(metric) = row.get("metric").and_then(Value::as_str) else { return false };
                let mut shaped = json!({ "metric": metric, "stats": row.get("stats").cloned().unwrap_or(Value::Null) });
                if let Some(q) = row.get("qualifier").filter(|q| !q.is_null()) {
                    shaped["qualifier"] = q.clone();
                }
                metrics.entry(metric.to_owned()).or_default().push(shaped);
            }
        }
        let mut s = self.state();
        s.heard_at = Some(now);
        let session = s.session;
        // Not seeded in this session: the first capacity check polls and seeds it.
        let Some(figures) = s.queues.get_mut(&queue).filter(|f| f.session == session) else { return true };
        let entry = figures.groups.entry(group_key(group)).or_insert_with(|| Group {
            group: group.clone(),
            metrics: BTreeMap::new(),
            at: now,
            pushed: true,
        });
        for (metric, rows) in metrics {
            entry.metrics.insert(metric, rows);
        }
        entry.at = now;
        entry.pushed = true;
        true
    }

    /// The pushed figures of `queue` as an observation-query answer body, when they can be used.
    pub(crate) fn answer(&self, queue: QueueId, now: Instant) -> Option<Vec<u8>> {
        if !self.is_live(now) {
            self.log_fallback("the notification channel is down or silent");
            return None;
        }
        let s = self.state();
        let figures = s.queues.get(&queue).filter(|f| f.session == s.session)?;
        let usable =
            figures.groups.values().all(|g| g.pushed || now.saturating_duration_since(g.at) < UNPUSHED_GROUP_TTL);
        if figures.groups.is_empty() || !usable {
            return None;
        }
        let results: Vec<Value> = figures
            .groups
            .values()
            .map(|g| json!({ "group": g.group, "data": g.metrics.values().flatten().collect::<Vec<_>>() }))
            .collect();
        drop(s);
        self.served.fetch_add(1, Ordering::Relaxed);
        serde_json::to_vec(&json!({ "results": results })).ok()
    }

    fn log_fallback(&self, why: &str) {
        if self.enabled.load(Ordering::Relaxed) && !self.fallback_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(reason = why, "queue figures are polled until the notification channel is live again");
        }
    }

    pub(crate) fn stats(&self, now: Instant) -> ChannelStats {
        ChannelStats {
            live: self.is_live(now),
            refused: self.refused.load(Ordering::Relaxed),
            figure_events: self.figure_events.load(Ordering::Relaxed),
            heartbeats: self.heartbeats.load(Ordering::Relaxed),
            closing_notices: self.closing_notices.load(Ordering::Relaxed),
            unknown_events: self.unknown_events.load(Ordering::Relaxed),
            channels_created: self.channels_created.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
