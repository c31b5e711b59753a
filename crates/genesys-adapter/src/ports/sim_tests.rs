//! End to end against `genesys-sim` on 127.0.0.1: a stateful Genesys where the transfer really
//! moves the conversation, so the adapter's reading of its own writes is checked.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use genesys_sim::{ConversationKind, ConversationSpec, Endpoint, SimConfig, SimHandle, SUPPORT_QUEUE};
use handoff_domain::ports::{AnalyticsPort, HandoffEvent, PortError, QueuePort, TransferPort};
use handoff_domain::{AttributeSet, HandoffId, HandoffRequest};
use secrecy::SecretString;
use serde_json::json;
use url::Url;

use crate::{GenesysClient, GenesysConfig, GenesysIds};

async fn sim_and_client() -> (SimHandle, Arc<GenesysClient>) {
    let sim = genesys_sim::spawn(SimConfig::default()).await.unwrap();
    let base = Url::parse(&sim.base_url()).unwrap();
    let defaults = SimConfig::default();
    let config = GenesysConfig::new(defaults.client_id, SecretString::from(defaults.client_secret), base.clone(), base);
    (sim, Arc::new(GenesysClient::new(config).unwrap()))
}

#[tokio::test]
async fn a_bot_conversation_is_located_annotated_transferred_and_tagged_into_the_queue() {
    // Arrange
    let (sim, client) = sim_and_client().await;
    let ids = sim.sim().create_conversation(ConversationSpec::new(ConversationKind::Bot));
    let conversation = GenesysIds::conversation(ids.conversation_id);
    let support = GenesysIds::queue(SUPPORT_QUEUE);
    let request = HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": "guest-1", "name": "Jane Doe" },
            "handoffReason": "complex_billing_dispute",
            "customContext": { "sentiment_score": "0.32" }
        }),
        &GenesysIds,
    )
    .unwrap();
    let handoff = HandoffId::random();
    let attributes = AttributeSet::for_handoff(&request, handoff, Utc::now()).unwrap();

    // Act
    let before = client.locate(conversation).await.unwrap();
    let customer = before.customer().unwrap().id;
    let holder = before.holders().next().unwrap().id;
    let capacity = client.capacity(support, true).await.unwrap();
    client.write_context(conversation, customer, &attributes).await.unwrap();
    client.transfer(conversation, holder, support).await.unwrap();
    let event = HandoffEvent {
        handoff_id: handoff,
        conversation_id: conversation,
        reason: request.reason().clone(),
        queue_id: support,
        at: Utc::now(),
    };
    client.record(&event).await.unwrap();
    let after = client.locate(conversation).await.unwrap();

    // Assert
    assert_eq!(customer, GenesysIds::participant(ids.customer_id));
    assert_eq!(Some(holder), ids.holder_id.map(GenesysIds::participant));
    let agents = capacity.figures.agents.unwrap();
    assert_eq!((agents.idle, agents.on_queue(), capacity.figures.waiting), (3, 5, Some(0)));
    assert_eq!(capacity.message_capacity, Some(4));
    assert_eq!(capacity.free_slots(), handoff_domain::FreeSlots::Exactly(5 * 4 - 2 * 4));
    assert_eq!(capacity.estimated_wait, Some(Duration::from_secs(30)));
    assert!(!before.is_in_queue(support));
    assert!(after.is_in_queue(support), "{after:?}");
    let stored = sim.sim().participant_attributes(ids.conversation_id, ids.customer_id).unwrap();
    assert_eq!(stored.get("bot_handoff_reason").map(String::as_str), Some("complex_billing_dispute"));
    assert_eq!(stored.get("sentiment_score").map(String::as_str), Some("0.32"));
    assert_eq!(sim.sim().external_tag(ids.conversation_id).as_deref(), Some("bot-handoff:complex_billing_dispute"));
    assert_eq!(sim.sim().count(Endpoint::Replace), 1);
    assert_eq!(sim.sim().token_calls(), 1);
    assert_eq!(client.token_fetches(), 1);
}

#[tokio::test]
async fn revoked_tokens_unknown_conversations_and_queues_map_as_the_ports_promise() {
    // Arrange
    let (sim, client) = sim_and_client().await;
    let ids = sim.sim().create_conversation(ConversationSpec::new(ConversationKind::Bot));
    let conversation = GenesysIds::conversation(ids.conversation_id);
    let unknown_uuid = uuid::Uuid::new_v4();
    let unknown = GenesysIds::conversation(unknown_uuid);
    sim.sim().mark_unknown(unknown_uuid);
    client.locate(conversation).await.unwrap();
    sim.sim().revoke_tokens();

    // Act
    let after_revocation = client.locate(conversation).await;
    let missing = client.locate(unknown).await.unwrap_err();
    let queue = client.get_queue(GenesysIds::queue(SUPPORT_QUEUE)).await.unwrap();
    let no_queue = client.get_queue(GenesysIds::queue(uuid::Uuid::new_v4())).await.unwrap_err();

    // Assert
    assert!(after_revocation.is_ok(), "{after_revocation:?}");
    assert_eq!(client.token_fetches(), 2);
    assert!(matches!(missing, PortError::NotFound { ref what, .. } if what == "conversation"), "{missing:?}");
    assert_eq!(queue.name, "Support");
    assert!(queue.accepts_messages);
    assert!(matches!(no_queue, PortError::NotFound { ref what, .. } if what == "queue"), "{no_queue:?}");
}

#[tokio::test]
async fn three_agents_in_one_chat_each_with_capacity_four_leave_nine_free_slots_and_admit() {
    // Arrange: the README scenario, in an org that drops user metrics under a mediaType filter
    let config = SimConfig { user_metrics_under_media_filter: false, ..SimConfig::default() };
    let sim = genesys_sim::spawn(config).await.unwrap();
    let base = Url::parse(&sim.base_url()).unwrap();
    let defaults = SimConfig::default();
    let client = GenesysClient::new(GenesysConfig::new(
        defaults.client_id,
        SecretString::from(defaults.client_secret),
        base.clone(),
        base,
    ))
    .unwrap();
    let queue = uuid::Uuid::new_v4();
    sim.sim().add_queue(genesys_sim::QueueSpec::new(queue, "Chat").with_agent_loads(vec![1, 1, 1]));
    sim.sim().set_message_capacity(Some(4));

    // Act
    let snapshot = client.capacity(GenesysIds::queue(queue), false).await.unwrap();

    // Assert: the queueId-only query gets the user metrics anyway; nobody idle, 9 slots free
    assert_eq!(snapshot.figures.agents.map(|a| (a.idle, a.interacting)), Some((0, 3)));
    assert_eq!(snapshot.free_slots(), handoff_domain::FreeSlots::Exactly(9));
    assert_eq!(handoff_domain::AdmissionPolicy::default().judge(&snapshot), handoff_domain::Admission::Admit);
    assert_eq!(client.stats().capacity_unknown_warnings, 0);
    assert_eq!(sim.sim().count(Endpoint::GetUtilization), 1);
}

#[tokio::test]
async fn a_missing_utilization_permission_leaves_the_capacity_unknown_and_warns_once() {
    // Arrange
    let config = SimConfig { missing_permissions: vec!["routing:utilization:view".to_owned()], ..SimConfig::default() };
    let sim = genesys_sim::spawn(config).await.unwrap();
    let base = Url::parse(&sim.base_url()).unwrap();
    let defaults = SimConfig::default();
    let mut config =
        GenesysConfig::new(defaults.client_id, SecretString::from(defaults.client_secret), base.clone(), base);
    config.capacity_ttl = Duration::ZERO;
    let client = GenesysClient::new(config).unwrap();
    let support = GenesysIds::queue(SUPPORT_QUEUE);

    // Act: three checks in a row
    let mut verdicts = Vec::new();
    for _ in 0..3 {
        let snapshot = client.capacity(support, false).await.unwrap();
        verdicts.push(handoff_domain::AdmissionPolicy::default().judge(&snapshot));
    }

    // Assert: one utilization try (the next waits a minute), one warning, admitted unchecked
    assert_eq!(sim.sim().count(Endpoint::GetUtilization), 1);
    assert_eq!(client.stats().capacity_unknown_warnings, 1);
    assert!(
        verdicts
            .iter()
            .all(|v| matches!(v, handoff_domain::Admission::AdmitUnchecked(why) if why.contains("message capacity"))),
        "{verdicts:?}"
    );
}

#[tokio::test]
async fn once_the_window_cannot_hold_a_handoff_lookups_are_refused_at_once_without_a_call_and_background_keeps_the_reserve(
) {
    // Arrange: a sim allowing 12 calls a minute per token; a client with 4 calls per handoff and
    // a 25 % reserve (3 calls)
    let sim = genesys_sim::spawn(SimConfig { rate_limit_per_minute: Some(12), ..SimConfig::default() }).await.unwrap();
    let base = Url::parse(&sim.base_url()).unwrap();
    let defaults = SimConfig::default();
    let mut config =
        GenesysConfig::new(defaults.client_id, SecretString::from(defaults.client_secret), base.clone(), base);
    config.reserve_percent = 25;
    let client = Arc::new(GenesysClient::new(config).unwrap());
    let conversation = |_: usize| {
        GenesysIds::conversation(
            sim.sim().create_conversation(ConversationSpec::new(ConversationKind::Bot)).conversation_id,
        )
    };

    // Act: lookups until one is refused (bounded), then a background lookup
    let mut outcomes = Vec::new();
    for n in 0..6 {
        let result = client.locate(conversation(n)).await;
        let refused = result.is_err();
        outcomes.push(result);
        if refused {
            break;
        }
    }
    let background = crate::in_background(client.locate(conversation(9))).await;

    // Assert: the 1st passes (no headers yet), the 2nd (1 sent + 3 promised + 4 ≤ 12) and the 3rd
    // (2 + 6 + 4 ≤ 12) too; the 4th (3 + 9 + 4 > 12) is refused with the reset, with no call sent
    let passed = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!((passed, outcomes.len()), (3, 4));
    match outcomes.last() {
        Some(Err(PortError::RateLimited { retry_after: Some(wait), .. })) => {
            assert!(*wait > Duration::from_secs(50) && *wait <= Duration::from_secs(61), "{wait:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(background, Err(PortError::RateLimited { .. })), "{background:?}");
    assert_eq!(sim.sim().count(Endpoint::GetConversation), 3, "a refused call reached the sim");
    let budget = client.budget();
    assert_eq!((budget.allowed, budget.reserve, budget.used), (Some(12), 3, 12));
    assert_eq!(budget.refused_foreground, 1);
    assert_eq!(budget.refused_background, 1);
    assert!(client.allowance_low());
}
