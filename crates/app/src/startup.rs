//! Wiring: builds the adapters, the use case and the router from [`Settings`], binds the listener,
//! and runs the server with its background workers until a shutdown future resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use handoff_domain::ports::{InsightsPort, LedgerPort, SystemClock};
use handoff_domain::{HandoffService, InMemoryLedger, Stage};
use handoff_genesys::{GenesysClient, GenesysConfig, NotificationSettings, Region};
use handoff_http::{router, AppState, HttpSettings, LedgerProbe, ReadinessProbe, WebhookAuth};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::observer::{Metrics, TelemetryObserver};

/// How often the background workers look for due work.
const WORKER_TICK: Duration = Duration::from_millis(500);
/// Deferred or crashed records one batch takes at most.
const WORKER_BATCH: usize = 50;
/// Outbox batches (`HandoffService::outbox_batch` entries each) one tick delivers at most, while
/// they come back full, and for at most `OUTBOX_TIME_PER_TICK`.
const OUTBOX_BATCHES_PER_TICK: usize = 100;
const OUTBOX_TIME_PER_TICK: Duration = Duration::from_millis(400);
/// The deferred-handoffs gauge is refreshed every this many ticks (it reads the ledger's stats).
const DEFERRED_GAUGE_EVERY: u64 = 20;
/// How often the retention purge runs (and once at start).
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Records one purge statement rewrites at most, and statements one purge runs at most (the rest
/// waits for the next one), so a first purge of a large old ledger never holds the writer long.
const PURGE_BATCH: usize = 500;
const PURGE_BATCHES: usize = 100;

/// How long in-flight handoffs get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A built application: listener bound, adapters connected, not serving yet.
pub struct App {
    listener: TcpListener,
    port: u16,
    router: axum::Router,
    service: Arc<HandoffService>,
    genesys: Arc<GenesysClient>,
    ledger: Arc<dyn LedgerPort>,
    metrics: Arc<Metrics>,
    /// The Notifications channel to run (`GENESYS_NOTIFICATIONS=on`).
    notifications: Option<NotificationSettings>,
    retention: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("port", &self.port).finish_non_exhaustive()
    }
}

impl App {
    /// Connects the ledger (applying migrations), builds the Genesys client, the service and the
    /// router, and binds the listener.
    ///
    /// # Errors
    /// When the ledger cannot be opened, the Genesys configuration is unusable or the port is taken.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let genesys =
            GenesysClient::shared(genesys_config(&settings)?).context("failed to build the genesys client")?;
        let (ledger, insights) = connect_ledger(&settings.database_url, settings.heartbeat_every).await?;
        let metrics = Arc::new(Metrics::new());
        metrics.add_source(genesys_metrics(genesys.clone()));

        let service = Arc::new(
            HandoffService::new(
                genesys.clone(),
                genesys.clone(),
                genesys.clone(),
                ledger.clone(),
                Arc::new(SystemClock),
                settings.service.clone(),
            )
            .with_observer(Arc::new(TelemetryObserver::new(metrics.clone()))),
        );

        let auth = settings.webhook_auth.clone();
        if matches!(auth, WebhookAuth::None) {
            tracing::warn!("WEBHOOK_AUTH=none: the webhook accepts unauthenticated requests; use this only locally");
        }
        if !settings.admin_auth.is_set() {
            tracing::warn!(
                "HANDOFF_ADMIN_TOKEN is not set: the read side (/handoffs), the stats and guest erasure accept the \
                 webhook's credentials; set an admin token so the bot's secret cannot read records"
            );
        }
        let readiness = Arc::new(Readiness { ledger: LedgerProbe::new(ledger.clone()), genesys: genesys.clone() });
        let render = metrics.clone();
        let state = AppState::new(service.clone(), Arc::clone(&settings.ids), auth, readiness)
            .with_admin(settings.admin_auth.clone())
            .with_settings(HttpSettings {
                request_timeout: settings.request_timeout,
                max_in_flight: settings.max_in_flight,
            })
            .with_metrics(Arc::new(move || render.render()))
            .with_insights(insights)
            .with_capacity_figures(crate::report::capacity_figures(&settings.service.routing, genesys.clone()));

        let listener = TcpListener::bind((settings.bind_addr, settings.port))
            .await
            .with_context(|| format!("failed to listen on {}:{}", settings.bind_addr, settings.port))?;
        let port = listener.local_addr().context("failed to read the bound address")?.port();
        tracing::info!(
            port,
            database = %redact_url(&settings.database_url),
            genesys_api = %genesys.config().api_base_url,
            "handoff ready"
        );
        let notifications = settings.genesys.notifications.then(|| NotificationSettings {
            queues: configured_queues(&settings),
            max_age: settings.genesys.figures_max_age,
        });
        Ok(App {
            listener,
            port,
            router: router(state),
            service,
            genesys,
            ledger,
            metrics,
            retention: settings.retention,
            notifications,
        })
    }

    /// The bound port (useful with `PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Genesys client (tests read its counters).
    pub fn genesys(&self) -> &Arc<GenesysClient> {
        &self.genesys
    }

    /// Serves until `shutdown` resolves, then stops accepting, gives in-flight handoffs up to
    /// [`SHUTDOWN_GRACE`] to finish and stops the workers. Anything unfinished stays resumable in
    /// the ledger.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop_workers, workers_stopped) = watch::channel(false);
        let genesys = self.genesys.clone();
        let workers = tokio::spawn(run_workers(
            self.service.clone(),
            Arc::new(move || genesys.allowance_low()),
            self.ledger.clone(),
            self.metrics.clone(),
            self.retention,
            workers_stopped,
        ));
        let channel = self
            .notifications
            .clone()
            .map(|settings| tokio::spawn(self.genesys.clone().run_notifications(settings, stop_workers.subscribe())));
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing in-flight handoffs");
            let _ = signalled_tx.send(());
        });
        let grace = async {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = server => r.context("the server failed"),
            () = grace => {
                tracing::warn!("shutdown grace elapsed; unfinished handoffs stay resumable in the ledger");
                Ok(())
            }
        };
        let _ = stop_workers.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), workers).await;
        if let Some(channel) = channel {
            let _ = tokio::time::timeout(Duration::from_secs(5), channel).await;
        }
        // Commits what the ledger still has queued (the last save of a transfer is not awaited)
        // before the process exits.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ledger.close()).await;
        result
    }
}

/// Every queue a handoff can go to: the target, the routes and the fallback, without repeats.
pub fn configured_queues(settings: &Settings) -> Vec<handoff_domain::QueueId> {
    let routing = &settings.service.routing;
    let mut queues = vec![routing.default_queue()];
    queues.extend(routing.routes().values().copied());
    queues.extend(routing.fallback());
    let mut seen = std::collections::HashSet::new();
    queues.retain(|q| seen.insert(*q));
    queues
}

/// The Genesys client configuration `check` uses (the same as `serve`).
///
/// # Errors
/// When the region or the base URLs are unusable.
pub fn genesys_config_for_check(settings: &Settings) -> anyhow::Result<GenesysConfig> {
    genesys_config(settings)
}

fn genesys_config(settings: &Settings) -> anyhow::Result<GenesysConfig> {
    let g = &settings.genesys;
    // With both URLs overridden the region does not matter; otherwise it was validated already.
    let region = Region::parse(&g.region).or_else(|e| match (&g.base_url, &g.login_base_url) {
        (Some(_), Some(_)) => Region::parse("us-east-1"),
        _ => Err(e),
    })?;
    let (api, login) = GenesysConfig::resolve_urls(region, g.base_url.as_deref(), g.login_base_url.as_deref())?;
    let mut config = GenesysConfig::new(g.client_id.clone(), g.client_secret.clone(), api, login);
    config.attempt_timeout = g.attempt_timeout;
    config.total_budget = g.budget;
    config.max_concurrency = g.max_concurrency;
    config.reserve_percent = g.reserve_percent;
    config.message_capacity = g.message_capacity;
    config.validate()?;
    Ok(config)
}

/// Opens the ledger. A SQLite file is locked for this process (a second `serve` on it fails here,
/// naming the owner), and the leases a killed predecessor left are ended so their handoffs resume
/// at once; a PostgreSQL instance registers itself and starts its heartbeat. The same ledger is
/// the read model of `/insights` and the export.
async fn connect_ledger(
    url: &str,
    heartbeat_every: Duration,
) -> anyhow::Result<(Arc<dyn LedgerPort>, Arc<dyn InsightsPort>)> {
    if url.starts_with("memory:") {
        tracing::warn!("DATABASE_URL=memory: handoffs are not durable; use sqlite:// or postgres:// in production");
        let ledger = Arc::new(InMemoryLedger::new());
        return Ok((ledger.clone(), ledger));
    }
    let options = handoff_ledger::LedgerOptions { heartbeat_every, ..handoff_ledger::LedgerOptions::default() };
    let ledger = handoff_ledger::SqlLedger::connect_with(url, &options)
        .await
        .with_context(|| format!("failed to open the ledger at {}", redact_url(url)))?;
    let released = ledger.released_at_start();
    if released > 0 {
        tracing::info!(released, "ended the leases a previous process left; their handoffs resume at once");
    }
    let ledger = Arc::new(ledger);
    Ok((ledger.clone(), ledger))
}

/// A database URL without its password.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Background work: deferred handoffs, confirmation reads of advices and crash recovery, then the
/// analytics outbox. Its Genesys calls run [`in_background`](handoff_genesys::in_background):
/// paced over the rate-limit window and never into the reserve kept for live handoffs; a tick is
/// skipped while only the reserve is left.
async fn run_workers(
    service: Arc<HandoffService>,
    allowance_low: Arc<dyn Fn() -> bool + Send + Sync>,
    ledger: Arc<dyn LedgerPort>,
    metrics: Arc<Metrics>,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_purge = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(WORKER_TICK);
    let mut ticks: u64 = 0;
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        if allowance_low() {
            tracing::debug!("genesys allowance low: background work yields to live handoffs");
            continue;
        }
        match handoff_genesys::in_background(service.run_due(WORKER_BATCH)).await {
            Ok(report) if report.claimed > 0 => {
                tracing::debug!(claimed = report.claimed, done = report.done, later = report.later, "deferral tick")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "deferral worker could not use the ledger"),
        }
        // Keep delivering while batches come back full (bounded per tick in count and time), so
        // the outbox keeps up with a busy day instead of draining one batch per tick.
        let batch = service.outbox_batch();
        let outbox_until = tokio::time::Instant::now() + OUTBOX_TIME_PER_TICK;
        for _ in 0..OUTBOX_BATCHES_PER_TICK {
            match handoff_genesys::in_background(service.deliver_analytics(batch)).await {
                Ok(report) => {
                    if report.later > 0 {
                        tracing::warn!(failed = report.later, "analytics deliveries failed; retrying with backoff");
                    }
                    if report.claimed < batch || *stop.borrow() || tokio::time::Instant::now() >= outbox_until {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox worker could not use the ledger");
                    break;
                }
            }
        }
        if let Ok(backlog) = ledger.outbox_backlog().await {
            metrics.outbox_backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
        }
        if tokio::time::Instant::now() >= next_purge {
            next_purge = tokio::time::Instant::now() + PURGE_EVERY;
            match purge_personal_data(ledger.as_ref(), chrono::Utc::now(), retention).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "retention: personal data removed from finished handoffs"),
                Err(e) => tracing::warn!(error = %e, "retention purge could not use the ledger; retrying later"),
            }
        }
        ticks += 1;
        metrics.worker_ticks.inc();
        if ticks % DEFERRED_GAUGE_EVERY == 0 {
            // A deferred handoff is at most `defer_for` old before it is transferred anyway; an hour
            // more covers rechecks that were delayed.
            let window = service.settings().defer_for + Duration::from_secs(3600);
            let since = chrono::Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(1));
            if let Ok(rows) = ledger.stats(since).await {
                let deferred: u64 = rows.iter().filter(|r| r.outcome == Stage::Deferred).map(|r| r.count).sum();
                metrics.deferred.set(i64::try_from(deferred).unwrap_or(i64::MAX));
            }
            if let Ok(rows) = ledger.stats(chrono::Utc::now() - chrono::Duration::days(1)).await {
                metrics.set_stages(&rows);
            }
        }
    }
}

/// Retention: removes the guest's name, e-mail and the bot's context from finished records last
/// updated more than `retention` before `now`, in batches of [`PURGE_BATCH`], at most
/// [`PURGE_BATCHES`] of them. Returns how many records it purged.
///
/// # Errors
/// When the ledger cannot be used (what was purged before stays purged).
pub async fn purge_personal_data(
    ledger: &dyn LedgerPort,
    now: chrono::DateTime<chrono::Utc>,
    retention: Duration,
) -> Result<u64, handoff_domain::ports::LedgerError> {
    let Some(before) = chrono::Duration::from_std(retention).ok().and_then(|r| now.checked_sub_signed(r)) else {
        return Ok(0);
    };
    let mut purged = 0;
    for _ in 0..PURGE_BATCHES {
        let n = ledger.purge_personal_data(before, PURGE_BATCH).await?;
        purged += n;
        if n < PURGE_BATCH as u64 {
            break;
        }
    }
    Ok(purged)
}

/// `/readyz`: the ledger answers and a Genesys token can be obtained (checked together).
struct Readiness {
    ledger: LedgerProbe,
    genesys: Arc<GenesysClient>,
}

#[async_trait]
impl ReadinessProbe for Readiness {
    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        let (ledger, token) = tokio::join!(self.ledger.ping(), self.genesys.obtain_token());
        vec![ledger, ("genesys_token".to_owned(), token.map(|_| ()).map_err(|e| e.to_string()))]
    }
}

/// The Genesys client's counters in Prometheus text format.
fn genesys_metrics(genesys: Arc<GenesysClient>) -> crate::observer::MetricsSource {
    Arc::new(move |out: &mut String| {
        use std::fmt::Write as _;
        let stats = genesys.stats();
        let budget = genesys.budget();
        let _ = writeln!(out, "# HELP handoff_upstream_requests Genesys call attempts by endpoint and status class.");
        let _ = writeln!(out, "# TYPE handoff_upstream_requests counter");
        for r in stats.requests.iter().filter(|r| r.count > 0) {
            let _ = writeln!(
                out,
                "handoff_upstream_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}",
                r.endpoint.as_str(),
                r.class.as_str(),
                r.count
            );
        }
        for (name, help, value) in [
            ("upstream_retries", "Waits before another Genesys attempt (backoff and 429).", stats.retries),
            ("token_refreshes", "OAuth token requests sent.", stats.token_fetches),
            ("token_invalidations", "Tokens dropped after a 401.", stats.token_invalidations),
            ("capacity_cache_hits", "Capacity snapshots served from the shared cache.", stats.capacity_cache_hits),
            (
                "budget_refused_foreground",
                "Handoff calls refused at once: the rate-limit window was spent.",
                budget.refused_foreground,
            ),
            (
                "budget_refused_background",
                "Background calls held back for the reserve or pacing.",
                budget.refused_background,
            ),
            (
                "capacity_unknown_warnings",
                "Warnings that a queue's capacity figures were incomplete (at most one per queue a minute).",
                stats.capacity_unknown_warnings,
            ),
        ] {
            let _ = writeln!(out, "# HELP handoff_{name} {help}");
            let _ = writeln!(out, "# TYPE handoff_{name} counter");
            let _ = writeln!(out, "handoff_{name}_total {value}");
        }
        let channel = genesys.channel_stats();
        for (name, help, value) in [
            (
                "notification_figure_events",
                "Queue observation events applied from the notification channel.",
                channel.figure_events,
            ),
            ("notification_heartbeats", "Heartbeats and pongs of the notification channel.", channel.heartbeats),
            ("notification_closing_notices", "v2.system.socket_closing notices.", channel.closing_notices),
            (
                "notification_unknown_events",
                "Notification events of an unknown topic or shape (ignored).",
                channel.unknown_events,
            ),
            ("notification_channels_created", "Notification channels created.", channel.channels_created),
            ("notification_connects", "Notification sockets opened.", channel.connects),
            ("capacity_pushed_answers", "Capacity answers served from pushed figures (no call).", channel.served),
        ] {
            let _ = writeln!(out, "# HELP handoff_{name} {help}");
            let _ = writeln!(out, "# TYPE handoff_{name} counter");
            let _ = writeln!(out, "handoff_{name}_total {value}");
        }
        let _ = writeln!(out, "# HELP handoff_notification_channel_live Whether pushed queue figures can be used now (1) or capacity is polled (0).");
        let _ = writeln!(out, "# TYPE handoff_notification_channel_live gauge");
        let _ = writeln!(out, "handoff_notification_channel_live {}", u8::from(channel.live));
        // The gauges are absent until Genesys has sent its first `inin-ratelimit-*` headers.
        if let Some(allowed) = budget.allowed {
            let reset = budget.reset_in.map_or(0.0, |d| d.as_secs_f64());
            for (name, help, value) in [
                (
                    "genesys_allowance",
                    "Genesys calls allowed in the current rate-limit window (inin-ratelimit-allowed).",
                    allowed as f64,
                ),
                ("genesys_allowance_used", "Genesys calls counted as used in the current window.", budget.used as f64),
                (
                    "genesys_allowance_reserve",
                    "Calls of the window kept from background work for live handoffs.",
                    budget.reserve as f64,
                ),
                ("genesys_allowance_reset_seconds", "Seconds until the rate-limit window resets.", reset),
            ] {
                let _ = writeln!(out, "# HELP handoff_{name} {help}");
                let _ = writeln!(out, "# TYPE handoff_{name} gauge");
                let _ = writeln!(out, "handoff_{name} {value}");
            }
        }
    })
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use chrono::{DateTime, TimeZone, Utc};
    use handoff_domain::ports::{
        AnalyticsPort, Begin, Clock, ConversationSnapshot, HandoffEvent, ParticipantView, PortError, QueuePort,
        Receipt, TransferPort,
    };
    use handoff_domain::{
        AgentCounts, AttributeSet, CapacitySnapshot, Confirmation, ConversationId, HandoffKey, HandoffMode,
        HandoffOutcome, HandoffRecord, HandoffRequest, ParticipantId, QueueFigures, QueueId, RoutingPolicy,
        ServiceSettings, StoredAnswer, Unconfirmed,
    };

    use super::redact_url;
    use super::*;

    const QUEUE: &str = "00000000-0000-4000-8000-000000000001";
    const CONVERSATION: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";

    /// The domain clock on tokio's (paused) clock.
    struct TokioClock {
        base: DateTime<Utc>,
        start: tokio::time::Instant,
    }

    impl Clock for TokioClock {
        fn now(&self) -> DateTime<Utc> {
            self.base + chrono::Duration::from_std(self.start.elapsed()).unwrap_or_default()
        }
    }

    /// A conversation held by the flow until `flow_transfers_after` (from the start), then sitting
    /// in the queue; counts its lookups and fails the test on any transfer.
    struct Conversation {
        start: tokio::time::Instant,
        flow_transfers_after: Option<Duration>,
        lookups: AtomicUsize,
        lookup_times: Mutex<Vec<u64>>,
        transferred: AtomicBool,
    }

    fn participant(id: &str, is_customer: bool, active: bool, queue: Option<QueueId>) -> ParticipantView {
        ParticipantView { id: ParticipantId::parse(id).unwrap(), is_customer, is_agent: false, active, queue }
    }

    #[async_trait]
    impl TransferPort for Conversation {
        async fn locate(&self, conversation: ConversationId) -> Result<ConversationSnapshot, PortError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            self.lookup_times.lock().unwrap().push(self.start.elapsed().as_secs());
            let moved = self.flow_transfers_after.is_some_and(|after| self.start.elapsed() >= after);
            let queue = QueueId::parse(QUEUE).unwrap();
            let mut participants = vec![
                participant("c0000000-0000-4000-8000-000000000001", true, true, None),
                participant("b0000000-0000-4000-8000-000000000001", false, !moved, None),
            ];
            if moved {
                participants.push(participant("a0000000-0000-4000-8000-000000000001", false, true, Some(queue)));
            }
            Ok(ConversationSnapshot {
                id: conversation,
                participants,
                transferred_to: Vec::new(),
                external_tag: None,
                correlation_id: None,
            })
        }
        async fn write_context(
            &self,
            _: ConversationId,
            _: ParticipantId,
            _: &AttributeSet,
        ) -> Result<Receipt, PortError> {
            Ok(Receipt::default())
        }
        async fn transfer(&self, _: ConversationId, _: ParticipantId, _: QueueId) -> Result<Receipt, PortError> {
            self.transferred.store(true, Ordering::SeqCst);
            Ok(Receipt::default())
        }
    }

    struct Idle;

    #[async_trait]
    impl QueuePort for Idle {
        async fn capacity(&self, queue: QueueId, _: bool) -> Result<CapacitySnapshot, PortError> {
            Ok(CapacitySnapshot {
                queue,
                figures: QueueFigures {
                    agents: Some(AgentCounts { idle: 3, interacting: 0, communicating: 0, other: 0 }),
                    interacting: Some(0),
                    alerting: Some(0),
                    waiting: Some(0),
                },
                message_capacity: Some(4),
                estimated_wait: None,
            })
        }
    }

    struct NoTags;

    #[async_trait]
    impl AnalyticsPort for NoTags {
        async fn record(&self, _: &HandoffEvent) -> Result<Receipt, PortError> {
            Ok(Receipt::default())
        }
    }

    /// Advises a transfer, runs the real worker loop for 200 s of paused time, and returns the
    /// conversation's lookups (times in seconds from the advice) and the stored confirmation.
    async fn advise_and_confirm(flow_transfers_after: Option<Duration>) -> (Vec<u64>, Option<Confirmation>, bool) {
        let start = tokio::time::Instant::now();
        let conversation = Arc::new(Conversation {
            start,
            flow_transfers_after,
            lookups: AtomicUsize::new(0),
            lookup_times: Mutex::new(Vec::new()),
            transferred: AtomicBool::new(false),
        });
        let ledger: Arc<dyn LedgerPort> = Arc::new(InMemoryLedger::new());
        let clock = Arc::new(TokioClock { base: Utc::now(), start });
        let service = Arc::new(HandoffService::new(
            Arc::new(Idle),
            conversation.clone(),
            Arc::new(NoTags),
            ledger.clone(),
            clock,
            ServiceSettings::new(RoutingPolicy::new(QueueId::parse(QUEUE).unwrap(), Default::default(), None)),
        ));
        let request = HandoffRequest::from_json(
            &serde_json::json!({
                "conversationId": CONVERSATION, "guestInfo": { "id": "guest-1" }, "handoffReason": "billing"
            }),
            &handoff_genesys::GenesysIds,
        )
        .unwrap();
        let advice = service.advise(request, None).await.expect("advised");
        assert!(matches!(advice, HandoffOutcome::Advised(_)), "{advice:?}");
        conversation.lookups.store(0, Ordering::SeqCst);
        conversation.lookup_times.lock().unwrap().clear();

        let (stop, stopped) = watch::channel(false);
        let workers = tokio::spawn(run_workers(
            service,
            Arc::new(|| false),
            ledger.clone(),
            Arc::new(Metrics::new()),
            Duration::from_secs(30 * 86_400),
            stopped,
        ));
        tokio::time::sleep(Duration::from_secs(200)).await;
        stop.send(true).unwrap();
        workers.await.unwrap();

        let records = ledger.find_by_conversation(ConversationId::parse(CONVERSATION).unwrap()).await.unwrap();
        let confirmation = match &records[0].answer {
            Some(StoredAnswer::Advised { confirmation, .. }) => *confirmation,
            other => panic!("expected an advice, got {other:?}"),
        };
        let times = conversation.lookup_times.lock().unwrap().clone();
        assert_eq!(times.len(), conversation.lookups.load(Ordering::SeqCst));
        (times, confirmation, conversation.transferred.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_confirms_an_advice_once_the_flow_transferred_reading_on_schedule() {
        // Act: the flow's Transfer to ACD lands 20 s after the advice.
        let (reads, confirmation, transferred) = advise_and_confirm(Some(Duration::from_secs(20))).await;

        // Assert: reads at 5 and 15 s (with the flow), 35 s (in the queue); the worker tick (0.5 s)
        // may add under a second to each.
        assert_eq!(reads, [5, 15, 35]);
        let Some(Confirmation::Confirmed { queue, after }) = confirmation else {
            panic!("expected confirmed, got {confirmation:?}")
        };
        assert_eq!(queue, QueueId::parse(QUEUE).unwrap());
        assert_eq!(after.as_secs(), 35);
        assert!(!transferred, "a confirmation never transfers");
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_gives_up_on_an_advice_the_flow_never_carried_out_after_five_reads() {
        // Act
        let (reads, confirmation, transferred) = advise_and_confirm(None).await;

        // Assert
        assert_eq!(reads, [5, 15, 35, 75, 120]);
        assert_eq!(confirmation, Some(Confirmation::Unconfirmed { why: Unconfirmed::StillWithFlow }));
        assert!(!transferred, "a confirmation never transfers");
    }

    const DAY: i64 = 86_400;
    const LEASE: Duration = Duration::from_secs(30);

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("valid date")
    }

    /// A record of a guest with a name, e-mail and context, created `age_days` ago, finished then
    /// when `finish`.
    async fn record(ledger: &InMemoryLedger, age_days: i64, finish: bool) -> HandoffRecord {
        let conversation = handoff_genesys::GenesysIds::conversation(uuid::Uuid::new_v4());
        let request = HandoffRequest::from_json(
            &serde_json::json!({
                "conversationId": conversation.to_string(),
                "guestInfo": { "id": "g", "name": "Jane Doe", "email": "jane.doe@example.com" },
                "handoffReason": "billing",
                "customContext": { "tier": "gold" },
            }),
            &handoff_genesys::GenesysIds,
        )
        .expect("valid request");
        let at = now() - chrono::Duration::seconds(age_days * DAY);
        let key = HandoffKey::new(conversation, None);
        let Ok(Begin::Fresh(mut record)) = ledger.begin(&key, &request, at, LEASE, LEASE, HandoffMode::Transfer).await
        else {
            panic!("expected a fresh record");
        };
        if finish {
            record.advance(Stage::Failed, at, "conversation ended").expect("allowed");
            ledger.save(&record, None, &[]).await.expect("saved");
        }
        record
    }

    #[tokio::test]
    async fn the_purge_takes_every_finished_record_past_retention_in_batches_and_nothing_else() {
        // Arrange: more old finished records than one batch, a recent one, and an old unfinished one.
        let ledger = InMemoryLedger::new();
        for _ in 0..PURGE_BATCH + 1 {
            record(&ledger, 40, true).await;
        }
        let recent = record(&ledger, 10, true).await;
        let unfinished = record(&ledger, 40, false).await;

        // Act
        let purged = purge_personal_data(&ledger, now(), Duration::from_secs(30 * DAY as u64)).await.expect("purged");
        let again = purge_personal_data(&ledger, now(), Duration::from_secs(30 * DAY as u64)).await.expect("purged");

        // Assert
        assert_eq!(purged, PURGE_BATCH as u64 + 1);
        assert_eq!(again, 0);
        for kept in [recent.id, unfinished.id] {
            let stored = ledger.get(kept).await.expect("readable").expect("exists");
            assert_eq!(stored.request.guest().name(), Some("Jane Doe"));
        }
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(redact_url("postgres://app:hunter2@db:5432/handoff"), "postgres://app:***@db:5432/handoff");
        assert_eq!(redact_url("sqlite://handoff.db"), "sqlite://handoff.db");
    }
}
