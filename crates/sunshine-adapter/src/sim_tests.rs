//! The adapter against sunshine-sim over loopback HTTP: states, passControl outcomes, faults,
//! auth and capacity.

use std::time::Duration;

use handoff_domain::ports::{Missing, PortError};
use secrecy::SecretString;
use serde_json::{json, Map, Value};
use sunshine_sim::{
    spawn, ConversationSpec, ConversationState, Endpoint, Fault, FaultKind, SimConfig, SimHandle, AGENT_INTEGRATION_ID,
    APP_ID, BOT_INTEGRATION_ID, EMPTY_GROUP, KEY_ID, KEY_SECRET, SUPPORT_EMAIL, SUPPORT_GROUP, SUPPORT_TOKEN,
};
use url::Url;

use crate::{AuthMode, Control, EndedCheck, PassResult, SunshineClient, SunshineConfig, SunshineError, SupportConfig};

struct Setup {
    sim: SimHandle,
    client: SunshineClient,
}

fn config(sim: &SimHandle) -> SunshineConfig {
    let base = Url::parse(&sim.base_url()).expect("url");
    let mut config = SunshineConfig::new(APP_ID, KEY_ID, SecretString::from(KEY_SECRET), base, "zd-agentWorkspace");
    config.attempt_timeout = Duration::from_millis(300);
    config.total_budget = Duration::from_secs(3);
    config.confirm_interval = Duration::from_millis(50);
    config
}

async fn setup_with(sim: SimConfig, adjust: impl FnOnce(&mut SunshineConfig)) -> Setup {
    let sim = spawn(sim).await.expect("sim starts");
    let mut config = config(&sim);
    adjust(&mut config);
    let client = SunshineClient::new(config).expect("client");
    client.resolve_integrations().await.expect("integrations resolve");
    Setup { sim, client }
}

async fn setup() -> Setup {
    setup_with(SimConfig::default(), |_| {}).await
}

impl Setup {
    fn conversation(&self, state: ConversationState) -> String {
        self.sim.sim().create_conversation(ConversationSpec::new(state))
    }

    fn passes(&self) -> usize {
        self.sim.sim().count(Endpoint::PassControl)
    }

    fn fault(&self, endpoint: Endpoint, kind: FaultKind) {
        self.sim.sim().push_fault(Fault::new(endpoint, kind));
    }
}

fn metadata() -> Map<String, Value> {
    crate::metadata::build([("bot_handoff_reason", "billing"), ("orderId", "A-1")], "360001", "bot_handoff_group", None)
        .expect("fits")
}

#[tokio::test]
async fn integrations_resolve_by_name_and_an_unknown_one_is_named() {
    // Arrange
    let sim = spawn(SimConfig::default()).await.expect("sim");
    let mut wrong = config(&sim);
    wrong.agent_integration = "zd-nothing".to_owned();

    // Act
    let resolved = SunshineClient::new(config(&sim)).expect("client").resolve_integrations().await.expect("resolves");
    let error = SunshineClient::new(wrong).expect("client").resolve_integrations().await.unwrap_err();

    // Assert
    assert_eq!(resolved.agent_id, AGENT_INTEGRATION_ID);
    assert!(resolved.switchboard_enabled);
    assert!(matches!(
        error,
        crate::ResolveError::Config(SunshineError::UnknownIntegration { setting: "SUNSHINE_AGENT_INTEGRATION", .. })
    ));
}

#[tokio::test]
async fn locate_reports_each_control_state() {
    // Arrange
    let s = setup_with(SimConfig::default(), |c| c.ended_check = EndedCheck::Messages).await;
    let cases = [
        (ConversationState::Bot, Control::BotHolds, false, Ok(BOT_INTEGRATION_ID.to_owned())),
        (ConversationState::Queued, Control::Queued, true, Ok(AGENT_INTEGRATION_ID.to_owned())),
        (ConversationState::AgentHas, Control::Queued, true, Ok(AGENT_INTEGRATION_ID.to_owned())),
        (ConversationState::Pending, Control::Queued, true, Ok(BOT_INTEGRATION_ID.to_owned())),
        (ConversationState::Unheld, Control::Unheld, false, Err("no participant holds the conversation".to_owned())),
        (ConversationState::Ended, Control::Ended, false, Err("the conversation has ended".to_owned())),
    ];

    for (state, control, agent_side, handle) in cases {
        let id = s.conversation(state);

        // Act
        let located = s.client.locate_control(&id, None).await.expect("located");

        // Assert
        assert_eq!((located.control, located.agent_side, located.handle), (control, agent_side, handle), "{state:?}");
    }
    s.sim.sim().mark_unknown("0123456789abcdef01234567");
    let missing = s.client.locate_control("0123456789abcdef01234567", None).await.unwrap_err();
    assert!(matches!(missing, PortError::NotFound { what: Missing::Conversation, .. }), "{missing:?}");
}

#[tokio::test]
async fn a_pass_control_carries_the_metadata_by_id_and_is_confirmed_done() {
    // Arrange
    let s = setup().await;
    let id = s.conversation(ConversationState::Bot);

    // Act
    let result = s.client.pass_control(&id, &metadata()).await.expect("passed");

    // Assert
    assert_eq!(result, PassResult::Done);
    assert_eq!(s.passes(), 1);
    let received = s.sim.sim().received(&id);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].switchboard_integration, AGENT_INTEGRATION_ID);
    assert_eq!(
        Value::Object(received[0].metadata.clone()),
        json!({ "bot_handoff_reason": "billing", "orderId": "A-1", "bot_handoff_group": "360001" })
    );
    let body = s
        .sim
        .sim()
        .calls()
        .into_iter()
        .find(|c| c.endpoint == Endpoint::PassControl)
        .and_then(|c| c.body)
        .expect("logged");
    assert_eq!(body["switchboardIntegration"], AGENT_INTEGRATION_ID, "by id, never next or a type");
}

#[tokio::test]
async fn a_pass_control_that_shows_late_is_done_within_the_confirming_reads_and_accepted_without_them() {
    // Arrange
    let slow = SimConfig { apply_delay: Duration::from_millis(80), ..SimConfig::default() };
    let confirming = setup_with(slow.clone(), |_| {}).await;
    let blind = setup_with(slow, |c| c.confirm_reads = 0).await;
    let a = confirming.conversation(ConversationState::Bot);
    let b = blind.conversation(ConversationState::Bot);

    // Act
    let done = confirming.client.pass_control(&a, &metadata()).await.expect("passed");
    let accepted = blind.client.pass_control(&b, &metadata()).await.expect("passed");

    // Assert
    assert_eq!((done, accepted), (PassResult::Done, PassResult::Accepted));
    assert_eq!((confirming.passes(), blind.passes()), (1, 1));
    assert!(confirming.sim.sim().count(Endpoint::GetConversation) >= 2, "read until it showed");
    assert_eq!(blind.sim.sim().count(Endpoint::GetConversation), 0);
}

#[tokio::test]
async fn accept_then_fail_is_accepted_never_done_and_never_repeated() {
    // Arrange
    let s = setup().await;
    let id = s.conversation(ConversationState::Bot);
    s.fault(Endpoint::PassControl, FaultKind::AcceptThenFail);

    // Act
    let result = s.client.pass_control(&id, &metadata()).await.expect("answered 200");
    let after = s.client.locate_control(&id, None).await.expect("located");

    // Assert
    assert_eq!(result, PassResult::Accepted);
    assert_eq!(s.passes(), 1);
    assert_eq!(s.sim.sim().count(Endpoint::GetConversation), 3 + 1, "three confirming reads, then ours");
    assert_eq!((after.control, after.agent_side), (Control::BotHolds, false));
}

#[tokio::test]
async fn an_unknown_outcome_is_indeterminate_after_exactly_one_pass_control() {
    // Arrange
    let s = setup().await;
    let applied = s.conversation(ConversationState::Bot);
    let hung = s.conversation(ConversationState::Bot);
    let failed = s.conversation(ConversationState::Bot);
    let conflict = s.conversation(ConversationState::Bot);

    // Act
    s.fault(Endpoint::PassControl, FaultKind::ApplyThenDelay(Duration::from_secs(2)));
    let late = s.client.pass_control(&applied, &metadata()).await;
    s.fault(Endpoint::PassControl, FaultKind::Hang);
    let silent = s.client.pass_control(&hung, &metadata()).await;
    s.fault(Endpoint::PassControl, FaultKind::status(503));
    let unavailable = s.client.pass_control(&failed, &metadata()).await;
    s.fault(Endpoint::PassControl, FaultKind::status(409));
    let conflicted = s.client.pass_control(&conflict, &metadata()).await;

    // Assert
    for result in [&late, &silent, &unavailable, &conflicted] {
        assert!(matches!(result, Err(PortError::Indeterminate { .. })), "{result:?}");
    }
    assert_eq!(s.passes(), 3, "the hung call has no final status and is not logged");
    assert_eq!(s.sim.sim().active_integration(&applied).as_deref(), Some(AGENT_INTEGRATION_ID));
    assert_eq!(s.sim.sim().active_integration(&hung).as_deref(), Some(BOT_INTEGRATION_ID));
    assert_eq!(s.sim.sim().active_integration(&failed).as_deref(), Some(BOT_INTEGRATION_ID));
}

/// Under paused time: the simulator runs on the test's own (current-thread) runtime, so while the
/// client waits for an answer the server task is runnable and the clock only jumps when every
/// task waits on a timer (the client's `Retry-After` sleep).
#[tokio::test(start_paused = true)]
async fn a_429_is_waited_out_when_retry_after_fits_and_reported_when_it_does_not() {
    // Arrange
    let s = setup().await;
    let first = s.conversation(ConversationState::Bot);
    let second = s.conversation(ConversationState::Bot);

    // Act: Retry-After 2 s fits the 3 s budget
    s.fault(Endpoint::PassControl, FaultKind::too_many_requests(2));
    let started = tokio::time::Instant::now();
    let waited = s.client.pass_control(&first, &metadata()).await;
    let took = started.elapsed();
    // Retry-After 30 s does not
    s.fault(Endpoint::PassControl, FaultKind::too_many_requests(30));
    let refused = s.client.pass_control(&second, &metadata()).await;

    // Assert
    assert_eq!(waited, Ok(PassResult::Done));
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(refused, Err(PortError::rate_limited(Some(Duration::from_secs(30)), None)));
    assert_eq!(s.passes(), 3);
    assert!(!s.client.background_may_run(), "background work pauses after a 429");
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_backs_off_within_the_budget_then_is_rate_limited() {
    // Arrange
    let s = setup().await;
    let id = s.conversation(ConversationState::Bot);
    s.sim.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::status(429)).times(5));

    // Act
    let result = s.client.pass_control(&id, &metadata()).await;

    // Assert
    assert_eq!(result, Err(PortError::rate_limited(None, None)));
    assert_eq!(s.passes(), 3, "max attempts");
    assert!(s.sim.sim().received(&id).is_empty());
}

#[tokio::test]
async fn reads_are_retried_after_a_5xx_and_writes_are_not() {
    // Arrange
    let s = setup().await;
    let id = s.conversation(ConversationState::Bot);
    s.fault(Endpoint::GetConversation, FaultKind::status(502));

    // Act
    let located = s.client.locate_control(&id, None).await;

    // Assert
    assert_eq!(located.map(|l| l.control), Ok(Control::BotHolds));
    assert_eq!(s.sim.sim().count(Endpoint::GetConversation), 2);
}

#[tokio::test]
async fn a_revoked_jwt_is_re_signed_exactly_once() {
    // Arrange
    let s = setup_with(SimConfig::default(), |c| c.auth = AuthMode::Jwt).await;
    let id = s.conversation(ConversationState::Bot);
    let mints = s.client.jwt_mints();
    s.sim.sim().revoke_credentials();

    // Act
    let located = s.client.locate_control(&id, None).await;

    // Assert
    assert_eq!(located.map(|l| l.control), Ok(Control::BotHolds));
    assert_eq!(s.client.jwt_mints(), mints + 1);
    assert_eq!(s.sim.sim().jwts_seen(), 2);
    assert_eq!(s.sim.sim().count(Endpoint::GetConversation), 2);
}

#[tokio::test]
async fn a_401_is_retried_once_and_a_persistent_one_is_rejected_after_two_attempts() {
    // Arrange
    let s = setup().await;
    let id = s.conversation(ConversationState::Bot);

    // Act
    s.fault(Endpoint::GetConversation, FaultKind::status(401));
    let once = s.client.locate_control(&id, None).await;
    s.sim.sim().reset_calls();
    s.sim.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::status(401)).times(10));
    let always = s.client.pass_control(&id, &metadata()).await;

    // Assert
    assert_eq!(once.map(|l| l.control), Ok(Control::BotHolds));
    assert_eq!(always, Err(PortError::rejected(401, "unauthorized", None)));
    assert_eq!(s.passes(), 2);
}

#[tokio::test]
async fn refusals_keep_the_status_and_code_and_a_missing_conversation_is_not_found() {
    // Arrange
    let s = setup().await;
    let id = s.conversation(ConversationState::Bot);
    let gone = s.conversation(ConversationState::Bot);
    s.sim.sim().mark_unknown(&gone);

    // Act
    let not_found = s.client.pass_control(&gone, &metadata()).await;
    s.sim.sim().remove_integration(AGENT_INTEGRATION_ID);
    let no_target = s.client.pass_control(&id, &metadata()).await;

    // Assert
    assert!(matches!(not_found, Err(PortError::NotFound { what: Missing::Conversation, .. })), "{not_found:?}");
    assert_eq!(no_target, Err(PortError::rejected(404, "switchboard_integration_not_found", None)));
    assert_eq!(s.passes(), 2);
}

#[tokio::test]
async fn capacity_is_unknown_without_support_credentials_and_counted_per_group_with_them() {
    // Arrange
    let without = setup().await;
    let with = setup_with(SimConfig::default(), |_| {}).await;
    let support = SupportConfig {
        base_url: Url::parse(&with.sim.base_url()).expect("url"),
        email: SUPPORT_EMAIL.to_owned(),
        api_token: SecretString::from(SUPPORT_TOKEN),
    };
    let mut config = with.client.config().clone();
    config.support = Some(support);
    let client = SunshineClient::new(config).expect("client");

    // Act
    let unknown = without.client.group_availability(&SUPPORT_GROUP.to_string()).await;
    let support_group = client.group_availability(&SUPPORT_GROUP.to_string()).await;
    let cached = client.group_availability(&SUPPORT_GROUP.to_string()).await;
    let empty = client.group_availability(&EMPTY_GROUP.to_string()).await;
    let exists = client.group_exists(&SUPPORT_GROUP.to_string()).await;
    let absent = client.group_exists("999").await;

    // Assert
    assert_eq!(unknown, Ok(None));
    assert_eq!(without.sim.sim().count(Endpoint::AgentAvailabilities), 0);
    let figures = support_group.expect("read").expect("configured");
    assert_eq!((figures.online, figures.idle, figures.work_items), (2, 1, 2));
    assert_eq!(cached.expect("read"), Some(figures));
    assert_eq!(empty.expect("read").map(|f| f.online), Some(0));
    assert_eq!(with.sim.sim().count(Endpoint::AgentAvailabilities), 2, "cached per group");
    assert_eq!((exists, absent), (Ok(Some(true)), Ok(Some(false))));
}

// ---- the domain ports ---------------------------------------------------------------------

mod ports {
    use chrono::{TimeZone, Utc};
    use handoff_domain::ports::{AnalyticsPort, ControlState, HandedTo, QueuePort, TransferPort, TransferResult};
    use handoff_domain::{
        AnalyticsDelivery, ContextDelivery, ContextSet, ConversationId, HandoffId, HandoffRequest, QueueId,
        TotalMeasure,
    };

    use super::*;

    fn request(
        conversation: &str,
        context: &Map<String, Value>,
        rules: &handoff_domain::PlatformRules,
    ) -> HandoffRequest {
        let payload = json!({
            "conversationId": conversation,
            "guestInfo": { "id": "guest-1" },
            "handoffReason": "billing",
            "customContext": context,
        });
        HandoffRequest::from_json(&payload, rules.ids.as_ref()).expect("valid request")
    }

    fn context_set(request: &HandoffRequest, rules: &handoff_domain::PlatformRules) -> Result<ContextSet, String> {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).single().expect("time");
        ContextSet::for_handoff(request, HandoffId::random(), at, &rules.context).map_err(|e| e.problem())
    }

    #[tokio::test]
    async fn the_rules_declare_context_and_analytics_with_the_transfer_and_room_for_the_group() {
        let s = setup().await;
        let rules = s.client.rules();
        assert_eq!(rules.name, "sunshine");
        assert_eq!(rules.context_delivery, ContextDelivery::WithTransfer);
        assert_eq!(rules.analytics, AnalyticsDelivery::WithTransfer);
        assert_eq!(rules.context.total_measure, TotalMeasure::SerializedJson);
        assert_eq!(rules.context.max_total_bytes, Some(4000 - ("bot_handoff_group".len() + 26)));
        assert_eq!(rules.confirm_within, Some(Duration::from_secs(30)));
        assert_eq!(
            rules.ids.parse(handoff_domain::IdKind::Conversation, "8a3f4a1e-0c4d-4c3b-9d4e-0a1b2c3d4e5f"),
            Err(crate::HEX24_PROBLEM)
        );
    }

    #[tokio::test]
    async fn locate_and_transfer_through_the_port_deliver_a_context_at_the_limit_intact() {
        // Arrange
        let s = setup().await;
        let id = s.conversation(ConversationState::Bot);
        let rules = s.client.rules().clone();
        let max = rules.context.max_total_bytes.expect("a limit");
        let mut context = Map::new();
        for n in 0..40 {
            let probe = request(&id, &context, &rules);
            let size = context_set(&probe, &rules).expect("fits").size(TotalMeasure::SerializedJson);
            let room = max - size;
            // `,"kNN":"…"` costs 9 bytes plus the value.
            if room < 10 {
                break;
            }
            context.insert(format!("k{n:02}"), Value::String("x".repeat((room - 9).min(256))));
        }
        let request = request(&id, &context, &rules);
        let set = context_set(&request, &rules).expect("fits");
        assert_eq!(set.size(TotalMeasure::SerializedJson), max, "exactly at the declared limit");
        let conversation = ConversationId::parse_with(rules.ids.as_ref(), &id).expect("id");
        let group = QueueId::parse_with(rules.ids.as_ref(), "360001").expect("group");

        // Act
        let located = s.client.locate(conversation, None).await.expect("located");
        let handle = located.handle.clone().expect("transferable");
        let result = s.client.transfer(conversation, handle, group, Some(&set)).await.expect("transferred");
        let after = s.client.locate(conversation, None).await.expect("located");

        // Assert
        assert_eq!((located.state, located.handed_to), (ControlState::BotHolds, HandedTo::Targets(Vec::new())));
        assert!(matches!(result, TransferResult::Done(_)));
        assert_eq!(after.state, ControlState::Queued { target: None });
        assert!(after.is_handed_to(group));
        let received = s.sim.sim().received(&id);
        assert_eq!(received.len(), 1);
        for (key, value) in set.iter() {
            assert_eq!(received[0].metadata.get(key).and_then(Value::as_str), Some(value), "{key}");
        }
        assert_eq!(received[0].metadata["bot_handoff_group"], "360001");
        assert!(crate::metadata::serialized_len(&received[0].metadata) <= 4000);
    }

    #[tokio::test]
    async fn capacity_without_support_credentials_is_unknown_and_analytics_makes_no_call() {
        // Arrange
        let s = setup().await;
        let group = QueueId::parse_with(s.client.rules().ids.as_ref(), "360001").expect("group");
        let conversation =
            ConversationId::parse_with(s.client.rules().ids.as_ref(), &s.conversation(ConversationState::Bot))
                .expect("id");
        let event = handoff_domain::ports::HandoffEvent {
            handoff_id: HandoffId::random(),
            conversation_id: conversation,
            reason: handoff_domain::HandoffReason::parse("billing").expect("reason"),
            queue_id: group,
            at: Utc::now(),
        };
        s.sim.sim().reset_calls();

        // Act
        let capacity = s.client.capacity(group, true).await.expect("answered");
        let recorded = (s.client.record(&event).await, s.client.record(&event).await);

        // Assert
        assert!(capacity.figures.is_unknown());
        assert!(recorded.0.is_ok() && recorded.1.is_ok());
        assert!(s.sim.sim().calls().is_empty(), "no call at all");
    }
}
