//! Genesys Cloud as the platform: the adapter's [`GenesysClient`] provides the three ports, the
//! token check behind `/readyz`, the preflight of `handoff check`, its counters and the
//! rate-limit reserve that holds background work back (`inin-ratelimit-*`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use handoff_domain::ports::PortError;
use handoff_domain::{CapacitySnapshot, QueueId};
use handoff_genesys::{
    ChannelProbe, GenesysClient, GenesysConfig, MessageCapacitySource, NotificationSettings, Permission,
    PermissionStatus, Region,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{BackgroundWork, CheckReport, Platform, PlatformPorts};
use crate::config::{GenesysSettings, Settings};

/// Genesys Cloud behind the [`Platform`] trait.
#[derive(Debug)]
pub struct GenesysPlatform {
    client: Arc<GenesysClient>,
    settings: GenesysSettings,
    /// The Notifications channel to run while serving (`GENESYS_NOTIFICATIONS=on`).
    notifications: Option<NotificationSettings>,
}

impl GenesysPlatform {
    /// Builds the client from the `GENESYS_*` settings; `settings` names the queues whose figures
    /// the Notifications channel carries.
    ///
    /// # Errors
    /// When the region, the base URLs or the timeouts are unusable.
    pub fn new(genesys: &GenesysSettings, settings: &Settings) -> anyhow::Result<Self> {
        let client = GenesysClient::shared(client_config(genesys)?)
            .map_err(|e| anyhow::anyhow!("failed to build the genesys client: {e}"))?;
        let notifications = genesys.notifications.then(|| NotificationSettings {
            queues: crate::startup::configured_queues(settings),
            max_age: genesys.figures_max_age,
        });
        Ok(Self { client, settings: genesys.clone(), notifications })
    }

    /// The adapter's client (its counters, its probes).
    pub fn client(&self) -> &Arc<GenesysClient> {
        &self.client
    }
}

/// The Genesys client configuration for these settings (`serve`, `check` and the transfer probe
/// use the same).
///
/// # Errors
/// When the region or the base URLs are unusable.
pub(crate) fn client_config(g: &GenesysSettings) -> anyhow::Result<GenesysConfig> {
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

const PERMISSIONS: [(Permission, &str); 5] = [
    (Permission::BlindTransfer, "conversation:communication:blindTransfer"),
    (Permission::QueueView, "routing:queue:view"),
    (Permission::QueueObservationView, "analytics:queueObservation:view"),
    (Permission::ExternalTagEdit, "conversation:externalTag:edit"),
    (Permission::UtilizationView, "routing:utilization:view"),
];

/// Why a permission is not needed with these settings, if it is not.
fn not_needed(permission: Permission, genesys: &GenesysSettings, settings: &Settings) -> Option<&'static str> {
    match permission {
        Permission::UtilizationView => match genesys.message_capacity {
            MessageCapacitySource::Utilization => None,
            MessageCapacitySource::Fixed(_) => Some("HANDOFF_MESSAGE_CAPACITY is set"),
            MessageCapacitySource::NotNeeded => Some("the capacity model does not count message slots"),
        },
        Permission::ExternalTagEdit if !settings.service.external_tag => Some("HANDOFF_EXTERNAL_TAG=false"),
        _ => None,
    }
}

#[async_trait]
impl Platform for GenesysPlatform {
    fn name(&self) -> &'static str {
        "genesys"
    }

    fn api_base_url(&self) -> String {
        self.client.config().api_base_url.to_string()
    }

    fn ports(&self) -> PlatformPorts {
        PlatformPorts { transfer: self.client.clone(), queue: self.client.clone(), analytics: self.client.clone() }
    }

    async fn readiness(&self) -> Vec<(String, Result<(), String>)> {
        let token = self.client.obtain_token().await;
        vec![("genesys_token".to_owned(), token.map_err(|e| e.to_string()))]
    }

    async fn check(&self, settings: &Settings, report: &mut CheckReport) {
        let genesys = &self.client;
        let login = genesys.config().login_base_url.clone();
        match genesys.obtain_token().await {
            Ok(()) => report.pass(&format!("token obtained from {login}")),
            Err(e) => {
                report.fail(
                    &format!("token from {login}: {e}"),
                    "check GENESYS_CLIENT_ID/GENESYS_CLIENT_SECRET, that the OAuth client uses the Client Credentials grant, and GENESYS_REGION (the org's region)",
                );
                return;
            }
        }

        for queue in settings.service.routing.allowed_queues() {
            match genesys.get_queue(queue).await {
                Ok(info) if info.accepts_messages => report.pass(&format!("queue {queue} ({}) exists and takes messages", info.name)),
                Ok(info) => report.fail(
                    &format!("queue {queue} ({}) has no message media settings", info.name),
                    "enable the Message media type on the queue in Admin > Contact Center > Queues",
                ),
                Err(e) => report.fail(
                    &format!("queue {queue}: {e}"),
                    "check the queue id (TARGET_QUEUE_ID, HANDOFF_ROUTES, HANDOFF_FALLBACK_QUEUE_ID), the region, and routing:queue:view",
                ),
            }
        }

        for (permission, name) in PERMISSIONS {
            if let Some(why) = not_needed(permission, &self.settings, settings) {
                report.skip(&format!("permission {name} (not needed: {why})"));
                continue;
            }
            match genesys.probe_permission(permission).await {
                Ok(PermissionStatus::Present) => report.pass(&format!("permission {name}")),
                Ok(PermissionStatus::Missing { code }) => report.fail(
                    &format!("permission {name} is missing ({code})"),
                    &format!("add {name} to a role granted to the OAuth client (Admin > Roles / Permissions, then the client's Roles tab)"),
                ),
                Ok(PermissionStatus::Unknown { status, code }) => report.fail(
                    &format!("permission {name}: could not tell (Genesys answered {status} {})", code.unwrap_or_default()),
                    "run the check again; if it persists, verify the role in the Genesys admin UI",
                ),
                Err(e) => report.fail(&format!("permission {name}: {e}"), "run the check again when Genesys is reachable"),
            }
        }

        if self.settings.notifications {
            let queues = crate::startup::configured_queues(settings);
            match genesys.probe_channel(&queues).await {
                ChannelProbe::Opens { topics } => report.pass(&format!(
                    "notification channel opens and carries the figures of {topics} queue(s) (v2.analytics.queues.{{id}}.observations)"
                )),
                ChannelProbe::PartlyRejected { rejected } => report.fail(
                    &format!("notification channel: {} topic(s) rejected: {}", rejected.len(), rejected.join(", ")),
                    "grant analytics:queueObservation:view to the OAuth client's role; the rejected queues are polled meanwhile",
                ),
                ChannelProbe::Refused(why) => report.fail(
                    &format!("notification channel refused: {why}"),
                    "grant the notifications permission/scope and analytics:queueObservation:view, or set GENESYS_NOTIFICATIONS=off (capacity is then polled: one more Genesys call per handoff)",
                ),
                ChannelProbe::Failed(why) => report.fail(
                    &format!("notification channel: {why}"),
                    "allow outbound WebSocket (wss://streaming.{region domain}) through proxies and firewalls, then run the check again",
                ),
            }
        }
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let genesys = &self.client;
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
    }

    fn background_may_run(&self) -> bool {
        !self.client.allowance_low()
    }

    fn in_background<'a>(&self, work: BackgroundWork<'a>) -> BackgroundWork<'a> {
        Box::pin(handoff_genesys::in_background(work))
    }

    fn spawn_tasks(&self, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        self.notifications
            .clone()
            .map(|settings| tokio::spawn(self.client.clone().run_notifications(settings, stop.clone())))
            .into_iter()
            .collect()
    }

    fn last_capacity_observations(&self) -> Vec<(QueueId, Result<CapacitySnapshot, PortError>, Duration)> {
        self.client.last_capacity_observations()
    }
}
