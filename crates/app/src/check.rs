//! `handoff check`: preflight against the configured org. Prints one pass/fail line per check,
//! with a fix for each failure; exit 0 only if all pass.

use std::process::ExitCode;

use handoff_genesys::{ChannelProbe, GenesysClient, MessageCapacitySource, Permission, PermissionStatus};

use crate::config::Settings;

struct Report {
    failed: usize,
}

impl Report {
    fn pass(&self, what: &str) {
        println!("PASS  {what}");
    }
    fn skip(&self, what: &str) {
        println!("SKIP  {what}");
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.failed += 1;
        println!("FAIL  {what}\n      fix: {fix}");
    }
}

const PERMISSIONS: [(Permission, &str); 5] = [
    (Permission::BlindTransfer, "conversation:communication:blindTransfer"),
    (Permission::QueueView, "routing:queue:view"),
    (Permission::QueueObservationView, "analytics:queueObservation:view"),
    (Permission::ExternalTagEdit, "conversation:externalTag:edit"),
    (Permission::UtilizationView, "routing:utilization:view"),
];

/// Why a permission is not needed with these settings, if it is not.
fn not_needed(permission: Permission, settings: &Settings) -> Option<&'static str> {
    match permission {
        Permission::UtilizationView => match settings.genesys.message_capacity {
            MessageCapacitySource::Utilization => None,
            MessageCapacitySource::Fixed(_) => Some("HANDOFF_MESSAGE_CAPACITY is set"),
            MessageCapacitySource::NotNeeded => Some("the capacity model does not count message slots"),
        },
        Permission::ExternalTagEdit if !settings.service.external_tag => Some("HANDOFF_EXTERNAL_TAG=false"),
        _ => None,
    }
}

/// Runs every check and prints the report.
pub(crate) async fn run(settings: &Settings) -> ExitCode {
    let mut report = Report { failed: 0 };
    report.pass("configuration is valid");
    let config = match crate::startup::genesys_config_for_check(settings) {
        Ok(c) => c,
        Err(e) => {
            report.fail(&format!("genesys configuration: {e:#}"), "set GENESYS_REGION or the base URL overrides");
            return ExitCode::FAILURE;
        }
    };
    let login = config.login_base_url.clone();
    let genesys = match GenesysClient::shared(config) {
        Ok(g) => g,
        Err(e) => {
            report.fail(&format!("genesys client: {e}"), "check GENESYS_* settings");
            return ExitCode::FAILURE;
        }
    };
    match genesys.obtain_token().await {
        Ok(()) => report.pass(&format!("token obtained from {login}")),
        Err(e) => {
            report.fail(
                &format!("token from {login}: {e}"),
                "check GENESYS_CLIENT_ID/GENESYS_CLIENT_SECRET, that the OAuth client uses the Client Credentials grant, and GENESYS_REGION (the org's region)",
            );
            println!("\n{} check(s) failed", report.failed);
            return ExitCode::FAILURE;
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
        if let Some(why) = not_needed(permission, settings) {
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

    if settings.genesys.notifications {
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

    if report.failed == 0 {
        println!("\nall checks passed");
        ExitCode::SUCCESS
    } else {
        println!("\n{} check(s) failed", report.failed);
        ExitCode::FAILURE
    }
}
