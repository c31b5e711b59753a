//! The handoff outcome observer: one JSON log line per handoff outcome (CONTRACT §5.10) and the
//! Prometheus metrics behind `/metrics`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use handoff_domain::ports::{OutcomeObserver, OutcomeReport};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Reasons are free text from the bot; past this many distinct ones, new reasons are counted as
/// `other` so a misbehaving bot cannot blow up the metric's cardinality.
const MAX_REASON_LABELS: usize = 100;

/// Writes extra lines of Prometheus text (e.g. the Genesys adapter's counters).
pub type MetricsSource = Arc<dyn Fn(&mut String) + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandoffLabels {
    reason: String,
    queue: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

/// The service's metrics (one registry per app, so tests can run several apps in one process).
pub struct Metrics {
    registry: Registry,
    handoffs: Family<HandoffLabels, Counter>,
    duration: Histogram,
    /// Deferred handoffs waiting for capacity (set by the worker every few seconds).
    pub deferred: Gauge,
    /// Outbox entries not yet delivered (set by the worker).
    pub outbox_backlog: Gauge,
    /// Background worker ticks completed (deferrals, recovery, outbox, gauges): a test or an
    /// operator can wait for "the worker has looked since" instead of sleeping.
    pub worker_ticks: Counter,
    stages: Family<StageLabels, Gauge>,
    reasons_seen: Mutex<HashSet<String>>,
    extra: Mutex<Vec<MetricsSource>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("handoff");
        let handoffs = Family::<HandoffLabels, Counter>::default();
        registry.register("handoffs", "Handoff outcomes by reason, queue and outcome", handoffs.clone());
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register("handoff_duration_seconds", "Time to answer a handoff", duration.clone());
        let deferred = Gauge::default();
        registry.register("deferred_handoffs", "Deferred handoffs waiting for capacity", deferred.clone());
        let outbox_backlog = Gauge::default();
        registry.register("outbox_backlog", "Analytics events not yet delivered", outbox_backlog.clone());
        let worker_ticks = Counter::default();
        registry.register("worker_ticks", "Background worker ticks completed", worker_ticks.clone());
        let stages = Family::<StageLabels, Gauge>::default();
        registry.register(
            "stage_handoffs",
            "Handoffs created in the last 24 hours by the stage they are in (advised: advisory mode, the flow transfers)",
            stages.clone(),
        );
        for stage in handoff_domain::Stage::ALL {
            stages.get_or_create(&StageLabels { stage: stage.as_str().to_owned() }).set(0);
        }
        Self {
            registry,
            handoffs,
            duration,
            deferred,
            outbox_backlog,
            worker_ticks,
            stages,
            reasons_seen: Mutex::new(HashSet::new()),
            extra: Mutex::new(Vec::new()),
        }
    }

    /// Sets the per-stage gauge from the ledger's counts (every stage is shown, 0 when absent).
    pub fn set_stages(&self, rows: &[handoff_domain::ports::StatRow]) {
        for stage in handoff_domain::Stage::ALL {
            let count: u64 = rows.iter().filter(|r| r.outcome == stage).map(|r| r.count).sum();
            self.stages
                .get_or_create(&StageLabels { stage: stage.as_str().to_owned() })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Adds a source of extra lines in Prometheus text format (e.g. the Genesys adapter's counters).
    pub fn add_source(&self, source: MetricsSource) {
        if let Ok(mut extra) = self.extra.lock() {
            extra.push(source);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // `encode` ends with `# EOF` (OpenMetrics); extra sources go before it.
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        if let Ok(extra) = self.extra.lock() {
            for source in extra.iter() {
                source(&mut out);
            }
        }
        let _ = writeln!(out, "# EOF");
        out
    }

    fn reason_label(&self, reason: &str) -> String {
        let Ok(mut seen) = self.reasons_seen.lock() else { return "other".to_owned() };
        if seen.contains(reason) {
            return reason.to_owned();
        }
        if seen.len() < MAX_REASON_LABELS {
            seen.insert(reason.to_owned());
            return reason.to_owned();
        }
        "other".to_owned()
    }
}

/// Logs and counts every handoff outcome.
#[derive(Debug, Clone)]
pub struct TelemetryObserver {
    metrics: Arc<Metrics>,
}

impl TelemetryObserver {
    /// An observer feeding `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl OutcomeObserver for TelemetryObserver {
    fn observe(&self, report: &OutcomeReport) {
        let queue = report.queue_id.map(|q| q.to_string()).unwrap_or_default();
        let duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
        // Guest name and email are never part of a report, so they cannot reach this line.
        tracing::info!(
            target: "handoff::outcome",
            handoffId = report.handoff_id.map(|h| h.to_string()).unwrap_or_default(),
            conversationId = %report.conversation_id,
            reason = %report.reason,
            queueId = %queue,
            outcome = report.outcome,
            background = report.background,
            durationMs = duration_ms,
            correlationIds = %report.correlation_ids.join(","),
            "handoff {}", report.outcome
        );
        let labels = HandoffLabels {
            reason: self.metrics.reason_label(&report.reason),
            queue,
            outcome: report.outcome.to_owned(),
        };
        self.metrics.handoffs.get_or_create(&labels).inc();
        if !report.background {
            self.metrics.duration.observe(report.duration.as_secs_f64());
        }
    }
}
