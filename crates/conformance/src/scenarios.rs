//! The scenarios of ADR 0004 "Conformance suite", each written once against the ports and a
//! [`Harness`]. Each starts its own simulator, bounds its waits by the adapter's budget, and
//! asserts on the simulator's call log, never on wall-clock durations.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use handoff_domain::ports::{ControlState, HandoffEvent, Missing, PortError, SystemClock, TransferResult};
use handoff_domain::{AnalyticsDelivery, HandoffService, ValidationErrors};
use handoff_domain::{
    ConversationId, HandoffError, HandoffId, HandoffOutcome, HandoffRequest, InMemoryLedger, QueueId, RoutingPolicy,
    ServiceSettings,
};
use serde_json::{json, Map, Value};

use crate::harness::{all_calls, Harness, HarnessOptions, Op, SimFault, SimState};
use crate::located;

/// Generates one `#[tokio::test]` per scenario for `$harness`, in a module named `$platform`, so
/// the adapter's name is in every test name: `conformance::genesys::not_found`.
#[macro_export]
macro_rules! conformance_suite {
    ($platform:ident, $harness:ty) => {
        $crate::conformance_suite!(@cases $platform, $harness;
            locate_reports_each_control_state,
            context_over_the_limits_is_refused_before_any_call,
            context_at_the_limits_arrives_intact,
            a_repeated_transfer_happens_once,
            an_unknown_outcome_is_read_back,
            a_transfer_that_surely_did_not_happen_is_made_once_on_the_next_delivery,
            rate_limited_with_retry_after,
            not_found,
            unauthorized_reauthenticates_once,
            capacity_unknown_is_declared_not_guessed,
            analytics_is_idempotent,
        );
    };
    (@cases $platform:ident, $harness:ty; $($case:ident),* $(,)?) => {
        pub(crate) mod $platform {
            $(
                #[tokio::test]
                async fn $case() {
                    $crate::scenarios::$case::<$harness>().await;
                }
            )*
        }
    };
}

/// The bot's handoff of `conversation` with `context`, parsed with the platform's id rules.
fn request<H: Harness>(
    harness: &H,
    conversation: ConversationId,
    context: &Map<String, Value>,
) -> Result<HandoffRequest, ValidationErrors> {
    let transfer = harness.transfer();
    HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": "guest-1", "name": "Jane Doe" },
            "handoffReason": "billing_dispute",
            "customContext": context,
        }),
        transfer.rules().ids.as_ref(),
    )
}

fn small_context() -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("sentiment_score".to_owned(), json!("0.32"));
    context
}

/// The use case over the harness's ports and an in-memory ledger, routing to `target`.
fn service<H: Harness>(harness: &H, target: QueueId) -> HandoffService {
    let settings = ServiceSettings::new(RoutingPolicy::new(target, BTreeMap::new(), None));
    HandoffService::new(
        harness.queue(),
        harness.transfer(),
        harness.analytics(),
        Arc::new(InMemoryLedger::new()),
        Arc::new(SystemClock),
        settings,
    )
}

async fn conversation<H: Harness>(harness: &H, state: SimState) -> ConversationId {
    harness
        .conversation(state)
        .await
        .unwrap_or_else(|| panic!("{}: the simulator cannot produce a {state:?} conversation", H::NAME))
}

/// `locate` reports each control state the platform can produce as declared; a handle only where
/// the bot may hand off from; `handed_to` shows the queue of a queued conversation.
pub async fn locate_reports_each_control_state<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let target = harness.target();

    for state in SimState::ALL {
        let Some(conversation) = harness.conversation(state).await else {
            continue;
        };

        // Act
        let located = located::locate(harness.transfer().as_ref(), conversation)
            .await
            .unwrap_or_else(|e| panic!("{}: locate of a {state:?} conversation failed: {e}", H::NAME));

        // Assert
        let as_declared = match (state, &located.state) {
            (SimState::BotHolds, ControlState::BotHolds)
            | (SimState::AgentHas, ControlState::AgentHas { .. })
            | (SimState::Unheld, ControlState::Unheld)
            | (SimState::Ended, ControlState::Ended) => true,
            // A platform that cannot tell where a conversation waits says `None`.
            (SimState::Queued, ControlState::Queued { target: where_ }) => where_.is_none_or(|q| q == target),
            _ => false,
        };
        assert!(as_declared, "{}: a {state:?} conversation located as {located:?}", H::NAME);
        let transferable = matches!(state, SimState::BotHolds | SimState::Queued);
        assert_eq!(located.handle.is_ok(), transferable, "{}: handle of {state:?}: {located:?}", H::NAME);
        assert_eq!(located.is_handed_to(target), state == SimState::Queued, "{}: {state:?}: {located:?}", H::NAME);
    }
    assert!(harness.calls(Op::Transfer).await == 0, "{}: locating never transfers", H::NAME);
}

/// The context entries that fill the platform's declared limits (capped by the request's own
/// rules: 40 keys, 256 characters), and the entry that would go one past them.
fn context_at_the_limits<H: Harness>(harness: &H) -> (Map<String, Value>, Vec<Map<String, Value>>) {
    let transfer = harness.transfer();
    let limits = transfer.rules().context;
    // The six reserved keys and their values ride along (ADR 0004 §2).
    let reserved = handoff_domain::RESERVED_KEYS.len();
    let keys = limits
        .max_keys
        .map_or(handoff_domain::MAX_CONTEXT_KEYS, |max| (max - reserved).min(handoff_domain::MAX_CONTEXT_KEYS));
    let value_chars = limits.max_value_chars.unwrap_or(256).min(256);
    let mut at_limit = Map::new();
    let mut bytes = 0;
    for i in 0..keys {
        let key = format!("k{i:02}");
        let mut value = "v".repeat(value_chars);
        if let Some(total) = limits.max_total_bytes {
            // Leave room for the reserved entries (a generous 600 bytes).
            let room = total.saturating_sub(600 + bytes + key.len() + 6);
            value.truncate(room.min(value_chars));
            if value.is_empty() {
                break;
            }
        }
        bytes += key.len() + value.len() + 6;
        at_limit.insert(key, json!(value));
    }
    let mut over = Vec::new();
    if let Some(max) = limits.max_value_chars {
        let mut longer = at_limit.clone();
        longer.insert("k00".to_owned(), json!("v".repeat(max + 1)));
        over.push(longer);
    }
    if limits.max_keys.is_some() {
        let mut more = at_limit.clone();
        for i in keys..=keys.max(handoff_domain::MAX_CONTEXT_KEYS) {
            more.insert(format!("x{i:02}"), json!("v"));
        }
        over.push(more);
    }
    if let Some(total) = limits.max_total_bytes {
        // Entries the request's own rules allow, until the entries alone pass the total.
        let mut larger = at_limit.clone();
        let mut size = bytes;
        for i in 0..handoff_domain::MAX_CONTEXT_KEYS {
            if size > total || larger.len() >= handoff_domain::MAX_CONTEXT_KEYS {
                break;
            }
            larger.insert(format!("o{i:02}"), json!("v".repeat(256)));
            size += 3 + 256 + 6;
        }
        assert!(size > total, "the request's own rules cannot pass a {total}-byte context limit");
        over.push(larger);
    }
    (at_limit, over)
}

/// A context one past the platform's limits is refused as invalid (`customContext`) before
/// anything is called.
pub async fn context_over_the_limits_is_refused_before_any_call<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let service = service(&harness, harness.target());
    let (_, over) = context_at_the_limits(&harness);
    assert!(!over.is_empty(), "{}: the adapter declares no context limit to test", H::NAME);

    for context in over {
        // Act
        let refused = match request(&harness, conversation, &context) {
            Err(errors) => errors,
            Ok(request) => match service.handle(request, None).await {
                Err(HandoffError::Invalid(errors)) => errors,
                other => panic!("{}: an oversized context was not refused: {other:?}", H::NAME),
            },
        };

        // Assert
        assert!(
            refused.errors().iter().any(|e| e.field.starts_with("customContext")),
            "{}: the refusal names customContext: {refused:?}",
            H::NAME
        );
    }
    for (op, calls) in all_calls(&harness).await {
        assert_eq!(calls, 0, "{}: {op:?} was called for a refused context", H::NAME);
    }
}

/// A context exactly at the limits is handed off, and the platform shows every entry intact.
pub async fn context_at_the_limits_arrives_intact<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let target = harness.target();
    let service = service(&harness, target);
    let (at_limit, _) = context_at_the_limits(&harness);

    // Act
    let outcome = service
        .handle(request(&harness, conversation, &at_limit).expect("a context at the limits is valid"), None)
        .await;

    // Assert
    assert!(matches!(outcome, Ok(HandoffOutcome::Transferred { replayed: false, .. })), "{}: {outcome:?}", H::NAME);
    let view = harness.platform_view(conversation).await;
    for (key, value) in &at_limit {
        assert_eq!(view.context.get(key).map(String::as_str), value.as_str(), "{}: context entry {key}", H::NAME);
    }
    assert_eq!(view.context.get("bot_handoff_reason").map(String::as_str), Some("billing_dispute"), "{}", H::NAME);
    assert!(view.handed_to.contains(&target), "{}: {view:?}", H::NAME);
}

/// A delivery repeated after a success is answered from the ledger: one transfer call in total.
pub async fn a_repeated_transfer_happens_once<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let target = harness.target();
    let service = service(&harness, target);
    let request = request(&harness, conversation, &small_context()).expect("valid");

    // Act
    let first = service.handle(request.clone(), None).await;
    let second = service.handle(request, None).await;

    // Assert
    assert!(matches!(first, Ok(HandoffOutcome::Transferred { replayed: false, .. })), "{}: {first:?}", H::NAME);
    assert!(matches!(second, Ok(HandoffOutcome::Transferred { replayed: true, .. })), "{}: {second:?}", H::NAME);
    assert_eq!(harness.calls(Op::Transfer).await, 1, "{}", H::NAME);
    let view = harness.platform_view(conversation).await;
    assert_eq!(view.transfers_applied, 1, "{}: {view:?}", H::NAME);
    assert!(view.handed_to.contains(&target), "{}: {view:?}", H::NAME);
}

/// A transfer applied whose answer never came (`Indeterminate`) is read back, not repeated: the
/// handoff is transferred with exactly one transfer call, and a repeated delivery replays it.
pub async fn an_unknown_outcome_is_read_back<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let target = harness.target();
    let service = service(&harness, target);
    let request = request(&harness, conversation, &small_context()).expect("valid");
    harness.fault(Op::Transfer, SimFault::ApplyThenTimeout, 1).await;

    // Act
    let first = service.handle(request.clone(), None).await;
    let again = service.handle(request, None).await;

    // Assert
    assert!(matches!(first, Ok(HandoffOutcome::Transferred { replayed: false, .. })), "{}: {first:?}", H::NAME);
    assert!(matches!(again, Ok(HandoffOutcome::Transferred { replayed: true, .. })), "{}: {again:?}", H::NAME);
    let view = harness.platform_view(conversation).await;
    assert_eq!(view.transfers_applied, 1, "{}: one transfer applied: {view:?}", H::NAME);
    assert!(harness.calls(Op::Locate).await >= 2, "{}: the outcome was read back", H::NAME);
}

/// A transfer that got no answer and did not happen: the delivery answers 503 and keeps the
/// handoff; the next delivery transfers once.
pub async fn a_transfer_that_surely_did_not_happen_is_made_once_on_the_next_delivery<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let target = harness.target();
    let service = service(&harness, target);
    let request = request(&harness, conversation, &small_context()).expect("valid");
    harness.fault(Op::Transfer, SimFault::TimeoutWithoutApplying, 1).await;

    // Act
    let first = service.handle(request.clone(), None).await;
    let view_between = harness.platform_view(conversation).await;
    let second = service.handle(request, None).await;

    // Assert
    let first_id = match first {
        Err(HandoffError::Unavailable { handoff_id: Some(id), .. }) => id,
        other => panic!("{}: expected 503 with the handoff kept, got {other:?}", H::NAME),
    };
    assert_eq!(view_between.transfers_applied, 0, "{}: {view_between:?}", H::NAME);
    match second {
        Ok(HandoffOutcome::Transferred { handoff_id, replayed: false, .. }) => {
            assert_eq!(handoff_id, first_id, "{}: the retry resumes the same handoff", H::NAME);
        }
        other => panic!("{}: expected the retry to transfer, got {other:?}", H::NAME),
    }
    let view = harness.platform_view(conversation).await;
    assert_eq!(view.transfers_applied, 1, "{}: {view:?}", H::NAME);
    assert!(view.handed_to.contains(&target), "{}: {view:?}", H::NAME);
}

/// A 429 whose `Retry-After` fits the budget is waited out and retried once; one that does not
/// fit is reported with the platform's `Retry-After` after exactly one call; a throttled transfer
/// is never `Indeterminate`.
pub async fn rate_limited_with_retry_after<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let port = harness.transfer();
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let throttled = |retry_after| SimFault::Status { status: 429, code: "too.many.requests", retry_after };
    let handoff = request(&harness, conversation, &small_context()).expect("valid");

    // Act / Assert: a lookup throttled for 1 s
    harness.fault(Op::Locate, throttled(Some(1)), 1).await;
    let located = located::locate(port.as_ref(), conversation).await;
    assert!(located.is_ok(), "{}: {located:?}", H::NAME);
    assert_eq!(harness.calls(Op::Locate).await, 2, "{}: one 429, one retry", H::NAME);
    let located = located.unwrap_or_else(|_| unreachable!());

    // Act / Assert: a lookup throttled for longer than the budget
    harness.fault(Op::Locate, throttled(Some(60)), 1).await;
    let refused = located::locate(port.as_ref(), conversation).await;
    assert!(
        matches!(refused, Err(PortError::RateLimited { retry_after: Some(after), .. }) if after == Duration::from_secs(60)),
        "{}: {refused:?}",
        H::NAME
    );
    assert_eq!(harness.calls(Op::Locate).await, 3, "{}: no retry past the budget", H::NAME);

    // Act / Assert: a transfer throttled for longer than the budget surely did not happen
    harness.fault(Op::Transfer, throttled(Some(60)), 1).await;
    let transfer = located::transfer(port.as_ref(), conversation, &located, harness.target(), &handoff).await;
    assert!(matches!(transfer, Err(PortError::RateLimited { .. })), "{}: {transfer:?}", H::NAME);
    assert_eq!(harness.calls(Op::Transfer).await, 1, "{}", H::NAME);

    // Act / Assert: throttled for 1 s, then done
    harness.fault(Op::Transfer, throttled(Some(1)), 1).await;
    let transfer = located::transfer(port.as_ref(), conversation, &located, harness.target(), &handoff).await;
    assert!(matches!(transfer, Ok(TransferResult::Done(_))), "{}: {transfer:?}", H::NAME);
    assert_eq!(harness.calls(Op::Transfer).await, 3, "{}: one 429, one retry", H::NAME);
    assert_eq!(harness.platform_view(conversation).await.transfers_applied, 1, "{}", H::NAME);
}

/// An unknown conversation is `NotFound` and answered 404 with nothing transferred; an unknown
/// target is the platform's refusal, reported with its status and code.
pub async fn not_found<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let unknown = harness.unknown_conversation().await;
    let service = service(&harness, harness.target());

    // Act
    let located = located::locate(harness.transfer().as_ref(), unknown).await;
    let handled = service.handle(request(&harness, unknown, &small_context()).expect("valid"), None).await;

    // Assert
    assert!(
        matches!(located, Err(PortError::NotFound { what: Missing::Conversation, .. })),
        "{}: {located:?}",
        H::NAME
    );
    assert!(matches!(handled, Err(HandoffError::ConversationNotFound { .. })), "{}: {handled:?}", H::NAME);
    assert_eq!(harness.calls(Op::Transfer).await, 0, "{}", H::NAME);

    // Arrange: a known conversation, an unknown target
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let located = located::locate(harness.transfer().as_ref(), conversation).await.expect("located");
    let handoff = request(&harness, conversation, &small_context()).expect("valid");

    // Act
    let refused =
        located::transfer(harness.transfer().as_ref(), conversation, &located, harness.unknown_target(), &handoff)
            .await;

    // Assert
    match refused {
        Err(PortError::Rejected { ref refusal, .. }) => {
            assert!((400..500).contains(&refusal.status) && !refusal.code.is_empty(), "{}: {refused:?}", H::NAME);
        }
        Err(PortError::NotFound { ref what, .. }) => assert_ne!(*what, Missing::Conversation, "{}", H::NAME),
        other => panic!("{}: an unknown target must be refused, got {other:?}", H::NAME),
    }
    assert_eq!(harness.platform_view(conversation).await.transfers_applied, 0, "{}", H::NAME);
}

/// Revoked credentials: exactly one new credential and one retry; a persistent 401 is reported
/// as a refusal after exactly two attempts (no loop).
pub async fn unauthorized_reauthenticates_once<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let port = harness.transfer();
    let conversation = conversation(&harness, SimState::BotHolds).await;
    located::locate(port.as_ref(), conversation).await.expect("located");
    let issued = harness.credentials_issued().await;
    let looked_up = harness.calls(Op::Locate).await;
    harness.revoke_credentials().await;

    // Act
    let after_revocation = located::locate(port.as_ref(), conversation).await;

    // Assert
    assert!(after_revocation.is_ok(), "{}: {after_revocation:?}", H::NAME);
    assert_eq!(harness.credentials_issued().await, issued + 1, "{}: exactly one new credential", H::NAME);
    assert_eq!(harness.calls(Op::Locate).await, looked_up + 2, "{}: the 401, then one retry", H::NAME);

    // Arrange: every answer is 401 from now
    let issued = harness.credentials_issued().await;
    let looked_up = harness.calls(Op::Locate).await;
    harness.fault(Op::Locate, SimFault::Status { status: 401, code: "bad.credentials", retry_after: None }, 10).await;

    // Act
    let refused = located::locate(port.as_ref(), conversation).await;

    // Assert
    assert!(
        matches!(refused, Err(PortError::Rejected { ref refusal, .. }) if refusal.status == 401),
        "{}: {refused:?}",
        H::NAME
    );
    assert_eq!(harness.calls(Op::Locate).await, looked_up + 2, "{}: exactly two attempts", H::NAME);
    assert!(harness.credentials_issued().await <= issued + 1, "{}: at most one new credential", H::NAME);
}

/// A target without a capacity source is declared unknown (never zero, never an error), and the
/// use case admits the handoff.
pub async fn capacity_unknown_is_declared_not_guessed<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let Some(target) = harness.target_without_capacity().await else {
        return;
    };
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let service = service(&harness, target);

    // Act
    let capacity = harness.queue().capacity(target, false).await;
    let outcome = service.handle(request(&harness, conversation, &small_context()).expect("valid"), None).await;

    // Assert
    let snapshot = capacity.unwrap_or_else(|e| panic!("{}: unknown capacity is not an error: {e}", H::NAME));
    assert_eq!(snapshot.figures.agents, None, "{}: agents unknown, not zero: {snapshot:?}", H::NAME);
    assert_eq!(snapshot.figures.waiting, None, "{}: waiting unknown, not zero: {snapshot:?}", H::NAME);
    assert!(matches!(outcome, Ok(HandoffOutcome::Transferred { .. })), "{}: admitted: {outcome:?}", H::NAME);
    assert!(harness.platform_view(conversation).await.handed_to.contains(&target), "{}", H::NAME);
}

/// Recording the same event twice succeeds both times and leaves the platform as one record
/// did; the calls are what the adapter declares (one per record, or none).
pub async fn analytics_is_idempotent<H: Harness>() {
    // Arrange
    let harness = H::start(HarnessOptions::default()).await;
    let conversation = conversation(&harness, SimState::BotHolds).await;
    let event = HandoffEvent {
        handoff_id: HandoffId::random(),
        conversation_id: conversation,
        reason: request(&harness, conversation, &small_context()).expect("valid").reason().clone(),
        queue_id: harness.target(),
        at: Utc::now(),
    };
    let analytics = harness.analytics();

    // Act
    let first = analytics.record(&event).await;
    let once = harness.platform_view(conversation).await;
    let second = analytics.record(&event).await;
    let twice = harness.platform_view(conversation).await;

    // Assert
    assert!(first.is_ok() && second.is_ok(), "{}: {first:?} {second:?}", H::NAME);
    assert_eq!(once, twice, "{}: a second record changes nothing", H::NAME);
    let per_record = match harness.transfer().rules().analytics {
        AnalyticsDelivery::Separate => 1,
        AnalyticsDelivery::WithTransfer => 0,
    };
    assert_eq!(harness.calls(Op::Analytics).await, 2 * per_record, "{}", H::NAME);
    if per_record == 1 {
        assert!(once.analytics_mark.is_some_and(|m| m.contains("billing_dispute")), "{}", H::NAME);
    }
}
