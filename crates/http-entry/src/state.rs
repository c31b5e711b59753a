//! [`AppState`], what every handler shares, and its tunables ([`HttpSettings`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use handoff_domain::ports::{Clock, InsightsPort, SystemClock};
use handoff_domain::{HandoffService, IdRules};
use tokio::sync::Semaphore;

use crate::admin::AdminAuth;
use crate::auth::WebhookAuth;

/// The largest accepted webhook body (CONTRACT §4.1): 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Renders the `/metrics` page (the app supplies a Prometheus renderer).
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Answers `/readyz`: one entry per component (`ledger`, `genesys_token`, …), `Err` with a short
/// operator-facing reason when it is not ready. Must not take long; the request timeout bounds it.
#[async_trait]
pub trait ReadinessProbe: Send + Sync {
    /// Checks every component now.
    async fn check(&self) -> Vec<(String, Result<(), String>)>;
}

/// The capacity figures of one queue as last observed, for the insights page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFigures {
    /// The queue.
    pub queue_id: handoff_domain::QueueId,
    /// What it is to the service (`default`, `fallback`, `route: billing`, …).
    pub role: String,
    /// Named figures (`idle agents` → `3`, …); empty when never observed.
    pub figures: Vec<(String, String)>,
    /// How old the observation is; `None` when never observed since the process started.
    pub age: Option<Duration>,
    /// Why there are no figures (the last observation failed), if so.
    pub note: Option<String>,
}

/// Supplies each configured queue's last capacity figures (the app reads the Genesys adapter's
/// snapshot cache; it must not call upstream).
pub type CapacityFigures = Arc<dyn Fn() -> Vec<QueueFigures> + Send + Sync>;

/// HTTP tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Longest time one request may take before it is answered 503 `timeout` (default 25 s,
    /// below the 30 s a Genesys Data Action waits). A handoff already started is not cancelled.
    pub request_timeout: Duration,
    /// Most handoffs worked on at once (default 256). One more is answered 503 `overloaded`
    /// straight away instead of waiting. `0` refuses every handoff.
    pub max_in_flight: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self { request_timeout: Duration::from_secs(25), max_in_flight: 256 }
    }
}

/// What the handlers share. Cheap to clone: everything is behind an `Arc`.
#[derive(Clone)]
pub struct AppState {
    service: Arc<HandoffService>,
    /// The platform's id formats: the webhook's ids and the read side's parameters are checked
    /// (and worded) by them.
    ids: Arc<dyn IdRules>,
    auth: Arc<WebhookAuth>,
    admin: Arc<AdminAuth>,
    insights: Option<Arc<dyn InsightsPort>>,
    capacity: Option<CapacityFigures>,
    readiness: Arc<dyn ReadinessProbe>,
    metrics: Option<MetricsRenderer>,
    settings: HttpSettings,
    clock: Arc<dyn Clock>,
    /// Permits for handoffs in flight; `settings.max_in_flight` of them.
    in_flight: Arc<Semaphore>,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("service", &self.service)
            .field("ids", &self.ids)
            .field("auth", &self.auth)
            .field("admin", &self.admin)
            .field("metrics", &self.metrics.is_some())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over the use case and the platform's id rules (the adapter's, e.g. `GenesysIds`), with
    /// default [`HttpSettings`], the system clock and no `/metrics`.
    pub fn new(
        service: Arc<HandoffService>,
        ids: Arc<dyn IdRules>,
        auth: WebhookAuth,
        readiness: Arc<dyn ReadinessProbe>,
    ) -> Self {
        let settings = HttpSettings::default();
        Self {
            service,
            ids,
            auth: Arc::new(auth),
            admin: Arc::new(AdminAuth::default()),
            insights: None,
            capacity: None,
            readiness,
            metrics: None,
            settings,
            clock: Arc::new(SystemClock),
            in_flight: semaphore(settings.max_in_flight),
        }
    }

    /// Serves `GET /insights` and `GET /handoffs/export.csv` from `insights` (the ledger's read
    /// model). Without it both answer 404.
    #[must_use]
    pub fn with_insights(mut self, insights: Arc<dyn InsightsPort>) -> Self {
        self.insights = Some(insights);
        self
    }

    /// Shows each queue's capacity figures on `/insights` from `figures`.
    #[must_use]
    pub fn with_capacity_figures(mut self, figures: CapacityFigures) -> Self {
        self.capacity = Some(figures);
        self
    }

    pub(crate) fn insights(&self) -> Option<&Arc<dyn InsightsPort>> {
        self.insights.as_ref()
    }

    pub(crate) fn capacity_figures(&self) -> Vec<QueueFigures> {
        self.capacity.as_ref().map(|f| f()).unwrap_or_default()
    }

    /// Guards the admin routes (reads, stats, erasure) with `admin`. Without it they take the
    /// webhook's credentials ([`AdminAuth::WebhookCredentials`]).
    #[must_use]
    pub fn with_admin(mut self, admin: AdminAuth) -> Self {
        self.admin = Arc::new(admin);
        self
    }

    /// Uses `settings` (timeout, in-flight cap).
    #[must_use]
    pub fn with_settings(mut self, settings: HttpSettings) -> Self {
        self.settings = settings;
        self.in_flight = semaphore(settings.max_in_flight);
        self
    }

    /// Serves `GET /metrics` with `render`. Without it, `/metrics` is a 404.
    #[must_use]
    pub fn with_metrics(mut self, render: MetricsRenderer) -> Self {
        self.metrics = Some(render);
        self
    }

    /// Uses `clock` for signature timestamps and the default `since` of `/handoffs/stats`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    pub(crate) fn service(&self) -> &Arc<HandoffService> {
        &self.service
    }

    pub(crate) fn ids(&self) -> &dyn IdRules {
        self.ids.as_ref()
    }

    pub(crate) fn auth(&self) -> &WebhookAuth {
        &self.auth
    }

    pub(crate) fn admin(&self) -> &AdminAuth {
        &self.admin
    }

    pub(crate) fn readiness(&self) -> &Arc<dyn ReadinessProbe> {
        &self.readiness
    }

    pub(crate) fn metrics(&self) -> Option<&MetricsRenderer> {
        self.metrics.as_ref()
    }

    pub(crate) fn in_flight(&self) -> &Arc<Semaphore> {
        &self.in_flight
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Now, in unix seconds.
    pub(crate) fn unix_now(&self) -> i64 {
        self.clock.now().timestamp()
    }
}

fn semaphore(permits: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS)))
}
