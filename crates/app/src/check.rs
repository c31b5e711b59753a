//! `handoff check`: preflight against the configured org. Prints one pass/fail line per check,
//! with a fix for each failure; exit 0 only if all pass.
//!
//! `handoff check --transfer-probe <conversationId>` instead settles, in the operator's own
//! sandbox org, whether Genesys accepts transfer mode's replace on the participant of a running
//! flow (no public source says so): it looks the conversation up, shows who holds it, performs
//! the real replace to `TARGET_QUEUE_ID`, reads the conversation back and prints PASS or FAIL
//! with what Genesys answered and what it means for the mode. Exit 0 only when the conversation
//! reached the queue; 1 when it did not; 2 when it refused to run (no or bad id, a conversation
//! an agent holds, one that ended or already sits in a queue, no usable configuration).

use std::process::ExitCode;
use std::time::Duration;

use handoff_domain::ports::{ConversationSnapshot, PortError, TransferPort};
use handoff_domain::ConversationId;
use handoff_genesys::{
    ChannelProbe, GenesysClient, MessageCapacitySource, Permission, PermissionStatus, ReplaceAnswer,
};

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

/// How often and how long the probe reads the conversation back after an accepted replace (a
/// transfer is asynchronous: 202, then the queue participant appears).
const PROBE_READS: u32 = 5;
const PROBE_READ_EVERY: Duration = Duration::from_secs(1);

/// `handoff check --transfer-probe <conversationId>`.
pub(crate) async fn transfer_probe(settings: &Settings, raw: &str) -> ExitCode {
    let refuse = |why: &str| {
        println!("REFUSED  {why}");
        ExitCode::from(2)
    };
    if raw.trim().is_empty() {
        return refuse(
            "--transfer-probe needs the id of a test conversation that you parked in the flow's handoff branch \
             in a sandbox org: handoff check --transfer-probe <conversationId>",
        );
    }
    // The probe drives the Genesys adapter directly, so the id is checked by Genesys' rules.
    let Ok(conversation) = ConversationId::parse_with(&handoff_genesys::GenesysIds, raw.trim()) else {
        return refuse(&format!(
            "--transfer-probe: `{}` is not a conversation id (a UUID)",
            raw.chars().take(64).collect::<String>()
        ));
    };
    let target = settings.service.routing.default_queue();
    let genesys = match crate::startup::genesys_config_for_check(settings).and_then(|c| Ok(GenesysClient::shared(c)?)) {
        Ok(g) => g,
        Err(e) => return refuse(&format!("genesys configuration: {e:#}")),
    };
    if let Err(e) = genesys.obtain_token().await {
        println!("FAIL  no token: {e}\n      fix: check GENESYS_CLIENT_ID/GENESYS_CLIENT_SECRET and GENESYS_REGION (`handoff check` says more)");
        return ExitCode::FAILURE;
    }

    // 1. Look it up and show who holds it.
    let before = match genesys.locate(conversation).await {
        Ok(snapshot) => snapshot,
        Err(e) => {
            println!("FAIL  conversation {conversation} could not be read: {e}{}", correlation(e.correlation_id()));
            return ExitCode::FAILURE;
        }
    };
    println!("conversation {conversation}{}", correlation(before.correlation_id.as_deref()));
    print_participants(&before);
    if before.has_agent() {
        return refuse("an agent already holds this conversation; the probe never takes a conversation from an agent");
    }
    if before.has_ended() {
        return refuse(
            "the conversation has ended; start a new test conversation and park it in the flow's handoff branch",
        );
    }
    if let Some(queue) = before.queues().next() {
        return refuse(&format!(
            "the conversation already sits in queue {queue}; the probe needs one the flow still holds"
        ));
    }
    let Some(holder) = before.holders().next().map(|p| p.id) else {
        return refuse("nobody but the customer is on the conversation; park it in the flow's handoff branch first");
    };

    // 2. The real replace, once.
    println!("replacing participant {holder} (the flow) with queue {target} (TARGET_QUEUE_ID) …");
    let answer = match genesys.replace_once(conversation, holder, target).await {
        Ok(answer) => answer,
        Err(e) => {
            println!("FAIL  no answer from Genesys to the replace: {e}{}", correlation(e.correlation_id()));
            println!("      meaning: nothing is settled; run the probe again on a new test conversation");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "Genesys answered {}{}{}",
        answer.status,
        answer.code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
        correlation(answer.correlation_id.as_deref())
    );
    if !(200..300).contains(&answer.status) {
        return refused(&answer);
    }

    // 3. Read it back.
    let mut last: Result<ConversationSnapshot, PortError> = genesys.locate(conversation).await;
    for _ in 1..PROBE_READS {
        if matches!(&last, Ok(s) if s.is_in_queue(target)) {
            break;
        }
        tokio::time::sleep(PROBE_READ_EVERY).await;
        last = genesys.locate(conversation).await;
    }
    match last {
        Ok(after) if after.is_in_queue(target) => {
            println!("read back{}:", correlation(after.correlation_id.as_deref()));
            print_participants(&after);
            println!(
                "PASS  the replace was accepted ({}{}) and the conversation is in queue {target}.\n      \
                 meaning: in this org Genesys accepts transfer mode's replace on the flow's participant. Advise mode \
                 (the kit's default) stays the documented path; you may opt in to transfer mode (drop `?mode=advise` \
                 from the Data Action, see docs/genesys/architect.md) and keep the flow's Transfer to ACD as its \
                 fallback.",
                answer.status,
                correlation(answer.correlation_id.as_deref())
            );
            ExitCode::SUCCESS
        }
        Ok(after) => {
            println!("read back{}:", correlation(after.correlation_id.as_deref()));
            print_participants(&after);
            println!(
                "FAIL  Genesys accepted the replace ({}{}) but the conversation did not reach queue {target} within {} s.\n      \
                 meaning: transfer mode cannot be relied on here; keep advise mode (the flow runs Transfer to ACD).",
                answer.status,
                correlation(answer.correlation_id.as_deref()),
                PROBE_READS
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            println!(
                "FAIL  the replace was accepted ({}) but the conversation could not be read back: {e}",
                answer.status
            );
            println!("      meaning: nothing is settled; look the conversation up in Genesys, then probe again");
            ExitCode::FAILURE
        }
    }
}

/// A refused replace: what it means for choosing the mode.
fn refused(answer: &ReplaceAnswer) -> ExitCode {
    let code = answer.code.as_deref().unwrap_or("(no code)");
    let meaning = match (answer.status, code) {
        (403, c) if c.starts_with("missing") || c.contains("permission") || c == "not.authorized" => {
            "the OAuth client lacks conversation:communication:blindTransfer; add it and probe again (advise mode \
             does not need it)"
        }
        (400, "conversations.error.queue.not.found") => {
            "TARGET_QUEUE_ID is not a queue of this org; fix it and probe again"
        }
        (404, _) => "Genesys no longer knows the conversation or participant; probe a new test conversation",
        (429, _) | (500..=599, _) => "Genesys was busy or failing; nothing is settled, probe again later",
        _ => {
            "Genesys refuses transfer mode's replace on the flow's participant while the flow runs. Use advise \
             mode (the kit's default: the flow runs Transfer to ACD with the returned queueId); do not switch to \
             transfer mode in this org"
        }
    };
    println!(
        "FAIL  Genesys refused the replace: {} {code}{}\n      meaning: {meaning}",
        answer.status,
        correlation(answer.correlation_id.as_deref())
    );
    ExitCode::FAILURE
}

fn correlation(id: Option<&str>) -> String {
    id.map(|c| format!(" (correlation id {c})")).unwrap_or_default()
}

/// Who is on the conversation, one line each.
fn print_participants(snapshot: &ConversationSnapshot) {
    for p in &snapshot.participants {
        let role = if p.is_customer {
            "customer".to_owned()
        } else if p.is_agent {
            "agent".to_owned()
        } else if let Some(queue) = p.queue {
            format!("queue {queue}")
        } else {
            "flow or bot".to_owned()
        };
        let state = if p.active { "holds it" } else { "left" };
        println!("      {} {role}: {state}", p.id);
    }
}
