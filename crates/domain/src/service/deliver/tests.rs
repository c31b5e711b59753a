use super::*;
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::admission::AdmissionPolicy;
use crate::admission::CapacitySnapshot;
use crate::lifecycle::{HandoffKey, HandoffMode, HandoffRecord, Stage, StoredAnswer};
use crate::ports::{Begin, ConversationSnapshot, HandoffEvent, LedgerError, LedgerPort, PortError};
use crate::ports::{MockLedgerPort, Receipt};
use crate::request::HandoffRequest;
use crate::routing::RoutingPolicy;
use crate::service::testkit::*;
use futures::executor::block_on;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

// ---- webhook deliveries -----------------------------------------------------------------

/// One happy delivery with `lookup` as the conversation and the settings tuned; the record
/// and the outbox after it.
fn deliver_happy(
    lookup: ConversationSnapshot,
    tune: impl FnOnce(&mut ServiceSettings),
) -> (HandoffRecord, Vec<HandoffEvent>) {
    let harness = Harness::with(tune);
    let mut ports = Ports::default();
    ports.locate(1, Ok(lookup)).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Ok(receipt("corr-transfer")),
    );
    ports.write_context(1, Ok(receipt("corr-write")));
    ports.no_analytics();
    let outcome = harness.deliver(ports, request());
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    (harness.record(), harness.outbox())
}

#[test]
fn the_external_tag_is_queued_by_default_and_replaces_one_of_ours() {
    // Arrange: a conversation tagged by an earlier handoff of ours
    let lookup = ConversationSnapshot { external_tag: Some("bot-handoff:earlier".into()), ..live() };

    // Act
    let (_, events) = deliver_happy(lookup, |_| {});

    // Assert
    assert_eq!(events.len(), 1);
}

#[test]
fn the_external_tag_switched_off_queues_nothing() {
    let (record, events) = deliver_happy(live(), |s| s.external_tag = false);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(record.stage, Stage::Transferred);
}

#[test]
fn a_tag_someone_else_set_is_never_replaced() {
    // Arrange
    let lookup = ConversationSnapshot { external_tag: Some("crm-case-1234".into()), ..live() };

    // Act
    let (record, events) = deliver_happy(lookup, |_| {});

    // Assert
    assert!(events.is_empty(), "{events:?}");
    assert!(record.history.iter().any(|h| h.note.contains("tag someone else set")), "{:?}", record.history);
}

#[test]
fn a_queue_with_unknown_figures_is_admitted_and_the_record_says_so() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(CapacitySnapshot::unknown(qid(DEFAULT_QUEUE)))).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Ok(receipt("corr-transfer")),
    );
    ports.write_context(1, Ok(receipt("corr-write")));
    ports.no_analytics();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    let record = harness.record();
    assert!(record.history.iter().any(|h| h.note.contains("admitted on partial figures")), "{:?}", record.history);
}

#[test]
fn three_agents_in_one_chat_each_with_capacity_four_go_to_the_target_not_the_fallback() {
    // Arrange: the scenario; nobody idle
    let harness = Harness::new();
    let busy = CapacitySnapshot {
        queue: qid(DEFAULT_QUEUE),
        figures: crate::QueueFigures {
            agents: Some(crate::AgentCounts { interacting: 3, ..Default::default() }),
            interacting: Some(3),
            alerting: Some(0),
            waiting: Some(0),
        },
        message_capacity: Some(4),
        estimated_wait: None,
    };
    let mut ports = Ports::default();
    ports.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(busy)).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Ok(receipt("corr-transfer")),
    );
    ports.queue.expect_capacity().withf(|q, _| *q == qid(FALLBACK_QUEUE)).never();
    ports.write_context(1, Ok(receipt("corr-write")));
    ports.no_analytics();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
}

#[test]
fn a_valid_handoff_writes_the_context_on_the_customer_then_transfers_the_holder() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Ok(receipt("corr-transfer")),
    );
    let written = ports.write_context(1, Ok(receipt("corr-write")));
    ports.no_analytics();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert: the answer
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    // Assert: every context entry and reserved key went onto the customer participant
    let written = written.lock().expect("not poisoned");
    let attributes = &written[0];
    let record = harness.record();
    assert_eq!(attributes.get("attempted_resolution"), Some("refund_policy_explained"));
    assert_eq!(attributes.get("sentiment_score"), Some("0.32"));
    assert_eq!(attributes.get("bot_handoff_reason"), Some("complex_billing_dispute"));
    assert_eq!(attributes.get("bot_handoff_id"), Some(record.id.to_string().as_str()));
    assert!(attributes.get("bot_handoff_at").is_some());
    assert_eq!(attributes.get("guest_id"), Some("guest-8842-xyz"));
    assert_eq!(attributes.get("guest_name"), Some("Jane Doe"));
    assert_eq!(attributes.get("guest_email"), Some("jane.doe@example.com"));
    assert_eq!(attributes.len(), 8);
    // Assert: the record and the outbox
    assert_eq!(record.stage, Stage::Transferred);
    assert_eq!(record.answer, Some(StoredAnswer::Transferred { queue: qid(DEFAULT_QUEUE) }));
    assert_eq!((record.holder, record.customer), (Some(pid(BOT)), Some(pid(CUSTOMER))));
    for corr in ["corr-locate", "corr-write", "corr-transfer"] {
        assert!(record.correlation_ids.iter().any(|c| c == corr), "{corr} not kept: {:?}", record.correlation_ids);
    }
    let events = harness.outbox();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].handoff_id, record.id);
    assert_eq!(events[0].queue_id, qid(DEFAULT_QUEUE));
    assert_eq!(events[0].reason.as_str(), "complex_billing_dispute");
}

#[test]
fn a_second_delivery_of_a_transferred_handoff_is_replayed_without_any_upstream_call() {
    // Arrange
    let harness = Harness::new();
    let first = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

    // Act
    let second = harness.deliver(Ports::silent(), request());

    // Assert
    assert_eq!(transferred_to(&second), (qid(DEFAULT_QUEUE), true));
    let (Ok(HandoffOutcome::Transferred { handoff_id: a, .. }), Ok(HandoffOutcome::Transferred { handoff_id: b, .. })) =
        (&first, &second)
    else {
        panic!("both deliveries transfer");
    };
    assert_eq!(a, b, "the same handoff");
    assert_eq!(harness.outbox().len(), 1, "a replay adds no analytics event");
}

#[test]
fn a_new_handoff_of_the_same_conversation_starts_once_the_old_one_is_older_than_ten_minutes() {
    // Arrange
    let harness = Harness::new();
    harness.deliver(Ports::happy(DEFAULT_QUEUE), request()).expect("first handoff transfers");
    harness.advance(Duration::from_secs(600));

    // Act
    let again = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

    // Assert
    assert_eq!(transferred_to(&again), (qid(DEFAULT_QUEUE), false));
}

#[test]
fn the_route_for_the_reason_chooses_the_queue() {
    // Arrange
    let harness = Harness::new();
    let request = request_with("handoffReason", json!("password_reset"));

    // Act
    let outcome = harness.deliver(Ports::happy(RESET_QUEUE), request);

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(RESET_QUEUE), false));
}

#[test]
fn an_allowed_payload_queue_is_used() {
    // Arrange
    let harness = Harness::new();
    let request = request_with("queueId", json!(FALLBACK_QUEUE));

    // Act
    let outcome = harness.deliver(Ports::happy(FALLBACK_QUEUE), request);

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(FALLBACK_QUEUE), false));
}

#[test]
fn a_payload_queue_outside_the_allowlist_is_refused_before_any_write_or_call() {
    // Arrange
    let harness = Harness::new();
    let request = request_with("queueId", json!(UNLISTED_QUEUE));

    // Act
    let outcome = harness.deliver(Ports::silent(), request);

    // Assert
    match outcome {
        Err(HandoffError::Invalid(errors)) => assert_eq!(errors.errors()[0].field, "queueId"),
        other => panic!("expected 400, got {other:?}"),
    }
    let records = block_on(harness.ledger.find_by_conversation(conversation_id())).expect("ledger works");
    assert!(records.is_empty(), "nothing recorded: {records:?}");
}

#[test]
fn with_the_capacity_check_off_no_capacity_is_read() {
    // Arrange
    let harness = Harness::with(|s| s.admission.minimum = 0);
    let mut ports = Ports::default();
    ports.locate(1, Ok(live())).no_capacity_call().transfer(BOT, DEFAULT_QUEUE, 1, Ok(receipt("corr-transfer")));
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
}

#[test]
fn the_estimated_wait_is_asked_for_only_when_a_maximum_wait_is_set() {
    // Arrange
    let harness = Harness::with(|s| s.admission.max_wait = Some(Duration::from_secs(60)));
    let mut ports = Ports::default();
    ports.queue.expect_capacity().withf(|q, with_ewt| *q == qid(DEFAULT_QUEUE) && *with_ewt).times(1).returning(
        |_, _| Ok(CapacitySnapshot { estimated_wait: Some(Duration::from_secs(30)), ..capacity(DEFAULT_QUEUE, 1) }),
    );
    ports.locate(1, Ok(live())).transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
}

#[test]
fn the_fallback_queue_takes_the_handoff_when_the_primary_is_full() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(1, Ok(live()))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
        .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 3)))
        .transfer(BOT, FALLBACK_QUEUE, 1, Ok(receipt("corr-transfer")));
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(FALLBACK_QUEUE), false));
    assert_eq!(harness.record().queue, Some(qid(FALLBACK_QUEUE)));
}

#[test]
fn a_handoff_is_deferred_when_primary_and_fallback_are_full() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(1, Ok(live()))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
        .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 0)))
        .no_write()
        .no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert: 202 data
    let record = harness.record();
    assert_eq!(
        outcome,
        Ok(HandoffOutcome::Deferred {
            handoff_id: record.id,
            conversation_id: conversation_id(),
            queue_id: qid(DEFAULT_QUEUE),
            retry_after: harness.settings.recheck_every,
            replayed: false,
        })
    );
    // Assert: the worker owns it now
    assert_eq!(record.stage, Stage::Deferred);
    assert_eq!(record.queue, Some(qid(DEFAULT_QUEUE)));
    assert_eq!(record.next_check_at, Some(harness.now() + chrono_duration(harness.settings.recheck_every)));
    assert_eq!(record.defer_until, Some(harness.now() + chrono_duration(harness.settings.defer_for)));
    assert!(harness.outbox().is_empty());
}

#[test]
fn a_second_delivery_of_a_deferred_handoff_replays_the_deferral() {
    // Arrange
    let harness = Harness::new();
    let id = harness.defer_one();

    // Act
    let again = harness.deliver(Ports::silent(), request());

    // Assert
    match again {
        Ok(HandoffOutcome::Deferred { handoff_id, replayed: true, queue_id, .. }) => {
            assert_eq!((handoff_id, queue_id), (id, qid(DEFAULT_QUEUE)));
        }
        other => panic!("expected a replayed deferral, got {other:?}"),
    }
}

#[test]
fn an_unknown_conversation_is_not_found() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(
            1,
            Err(PortError::NotFound { what: "conversation".to_owned(), correlation_id: Some("corr-404".to_owned()) }),
        )
        .no_capacity_call()
        .no_write()
        .no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    let record = harness.record();
    assert_eq!(
        outcome,
        Err(HandoffError::ConversationNotFound {
            handoff_id: Some(record.id),
            correlation_id: Some("corr-404".to_owned())
        })
    );
    assert_eq!(record.stage, Stage::Failed);
    assert!(matches!(record.answer, Some(StoredAnswer::Failed { status: 404, .. })), "{:?}", record.answer);
}

#[test]
fn an_ended_conversation_is_not_transferable() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports.locate(1, Ok(ended())).no_capacity_call().no_write().no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_not_transferable(&outcome, "ended");
    assert_eq!(harness.record().stage, Stage::Failed);
}

#[test]
fn a_conversation_no_participant_holds_is_not_transferable_even_when_queues_are_full() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    let unheld = snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, false, None)], vec![]);
    ports.locate(1, Ok(unheld)).no_capacity_call().no_write().no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert: refused now, not deferred and failed later
    assert_not_transferable(&outcome, "no participant holds");
    assert_eq!(harness.record().stage, Stage::Failed);
}

#[test]
fn a_participant_id_naming_the_customer_is_not_transferable() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports.locate(1, Ok(live())).no_capacity_call().no_write().no_transfer();

    // Act
    let outcome = harness.deliver(ports, request_with("participantId", json!(CUSTOMER)));

    // Assert
    assert_not_transferable(&outcome, "customer");
}

#[test]
fn a_conversation_an_agent_already_handles_is_never_taken_from_the_agent() {
    // Arrange: the bot left, an agent answered
    let harness = Harness::new();
    let mut ports = Ports::default();
    let mut agent = participant(STRANGER, false, true, None);
    agent.is_agent = true;
    let with_agent =
        snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, false, None), agent], vec![]);
    ports.locate(1, Ok(with_agent)).no_capacity_call().no_write().no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_not_transferable(&outcome, "agent already handles");
    assert_eq!(harness.record().stage, Stage::Failed);
}

#[test]
fn a_participant_id_naming_an_agent_is_not_transferable() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    let mut agent = participant(STRANGER, false, true, None);
    agent.is_agent = true;
    let with_agent =
        snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, true, None), agent], vec![]);
    ports.locate(1, Ok(with_agent)).no_capacity_call().no_write().no_transfer();

    // Act
    let outcome = harness.deliver(ports, request_with("participantId", json!(STRANGER)));

    // Assert
    assert_not_transferable(&outcome, "is an agent");
}

#[test]
fn a_participant_id_that_does_not_hold_the_conversation_is_not_transferable() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports.locate(1, Ok(live())).no_capacity_call().no_write().no_transfer();

    // Act
    let outcome = harness.deliver(ports, request_with("participantId", json!(STRANGER)));

    // Assert
    assert_not_transferable(&outcome, "does not hold");
}

#[test]
fn the_participant_id_of_a_holder_chooses_the_participant_replaced() {
    // Arrange
    let harness = Harness::new();
    let two_holders = snapshot(
        vec![
            participant(BOT, false, true, None),
            participant(CUSTOMER, true, true, None),
            participant(SECOND_HOLDER, false, true, None),
        ],
        vec![],
    );
    let mut ports = Ports::default();
    ports.locate(1, Ok(two_holders)).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
        SECOND_HOLDER,
        DEFAULT_QUEUE,
        1,
        Ok(Receipt::default()),
    );
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(ports, request_with("participantId", json!(SECOND_HOLDER)));

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    assert_eq!(harness.record().holder, Some(pid(SECOND_HOLDER)));
}

#[test]
fn a_conversation_already_in_the_chosen_queue_is_answered_transferred_without_a_transfer() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(1, Ok(in_queue(DEFAULT_QUEUE)))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
        .no_write()
        .no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    assert_eq!(harness.record().stage, Stage::Transferred);
    assert_eq!(harness.outbox().len(), 1);
}

#[test]
fn a_duplicate_delivery_while_the_handoff_runs_is_answered_in_progress() {
    // Arrange: another delivery holds the lease.
    let harness = Harness::new();
    let key = HandoffKey::new(conversation_id(), None);
    let s = &harness.settings;
    let held =
        block_on(harness.ledger.begin(&key, &request(), harness.now(), s.lease, s.reuse_after, HandoffMode::Transfer))
            .expect("ledger works");
    let Begin::Fresh(held) = held else { panic!("expected a fresh record") };

    // Act
    let outcome = harness.deliver(Ports::silent(), request());

    // Assert
    assert_eq!(
        outcome,
        Err(HandoffError::InProgress { handoff_id: held.id, retry_after: harness.settings.busy_retry_after })
    );
}

#[test]
fn a_ledger_outage_answers_503_before_any_upstream_call() {
    // Arrange
    let harness = Harness::new();
    let mut ledger = MockLedgerPort::new();
    ledger.expect_begin().times(1).returning(|_, _, _, _, _, _| Err(LedgerError::Unavailable("down".to_owned())));
    let ports = Ports::silent();
    let service = HandoffService::new(
        Arc::new(ports.queue),
        Arc::new(ports.transfer),
        Arc::new(ports.analytics),
        Arc::new(ledger),
        Arc::new(harness.clock()),
        harness.settings.clone(),
    );

    // Act
    let outcome = block_on(service.handle(request(), None));

    // Assert
    assert_eq!(unavailable(&outcome), (None, harness.settings.unavailable_retry_after));
}

/// Runs a scenario: two deliveries of the same handoff, then the worker past the deferral
/// deadline; then checks every upstream call the fake Genesys saw.
fn check(sc: &Scenario) -> Result<(), TestCaseError> {
    // Arrange
    let harness = Harness::with(|s| {
        s.routing = sc.routing.clone();
        s.admission = sc.admission;
    });
    let world = Arc::new(Mutex::new(World {
        ended: sc.ended,
        held: sc.held,
        in_queue: None,
        script: sc.script.clone(),
        admission: sc.admission,
        calls: Vec::new(),
    }));
    let service = harness.service(world_ports(&world));
    let allowed = sc.routing.allowed_queues();

    // Act: two deliveries of the same handoff, then the worker past the deferral deadline.
    let first = block_on(service.handle(sc.request.clone(), None));
    let (after_first, in_queue_after_first) = {
        let w = world.lock().expect("not poisoned");
        (w.calls.len(), w.in_queue)
    };
    harness.advance(sc.gap);
    let second = block_on(service.handle(sc.request.clone(), None));
    let webhook_calls = world.lock().expect("not poisoned").calls.len();
    harness.advance(harness.settings.defer_for + harness.settings.lease);
    for _ in 0..3 {
        block_on(service.run_due(10)).expect("the in-memory ledger works");
        harness.advance(harness.settings.lease);
    }

    // Assert
    let world = world.lock().expect("not poisoned");
    let calls = &world.calls;
    for (i, holder, queue, already_in) in transfers(calls) {
        prop_assert_ne!(holder, pid(CUSTOMER), "transferred the customer: {:?}", calls);
        prop_assert!(allowed.contains(&queue), "queue {} outside the allowlist: {:?}", queue, calls);
        prop_assert!(already_in.is_none(), "transferred again after it applied: {:?}", calls);
        if sc.admission.checks_capacity() && i < webhook_calls {
            let admitted =
                calls[..i].iter().any(|c| matches!(c, Call::Capacity { queue: q, admitted: true } if *q == queue));
            prop_assert!(admitted, "transferred to {} without admission: {:?}", queue, calls);
        }
    }
    for call in calls {
        if let Call::Write { customer } = call {
            prop_assert_eq!(*customer, pid(CUSTOMER), "context written on a non-customer");
        }
    }
    if sc.request.requested_queue().is_some_and(|q| !sc.routing.is_allowed(q)) {
        prop_assert!(calls.is_empty(), "calls for a refused queueId: {:?}", calls);
        prop_assert!(matches!(first, Err(HandoffError::Invalid(_))), "{:?}", first);
    }
    if let Ok(HandoffOutcome::Transferred { queue_id, .. }) = &first {
        prop_assert_eq!(webhook_calls, after_first, "the repeat called upstream: {:?}", calls);
        let replayed =
            matches!(&second, Ok(HandoffOutcome::Transferred { replayed: true, queue_id: q, .. }) if q == queue_id);
        prop_assert!(replayed, "{:?}", second);
    }
    // A handoff whose transfer applied is never answered as failed for good: a failed record
    // lets the next delivery start over and transfer a second time.
    for (outcome, in_queue) in [(&first, in_queue_after_first), (&second, world.in_queue)] {
        let permanent = matches!(
            outcome,
            Err(HandoffError::ConversationNotFound { .. }
                | HandoffError::NotTransferable { .. }
                | HandoffError::UpstreamRejected { .. })
        );
        prop_assert!(!(permanent && in_queue.is_some()), "{:?} although it is in {:?}: {:?}", outcome, in_queue, calls);
    }
    for outcome in [&first, &second] {
        if let Ok(HandoffOutcome::Transferred { queue_id, .. }) = outcome {
            prop_assert_eq!(world.in_queue, Some(*queue_id), "answered transferred but it is not in the queue");
        }
    }
    Ok(())
}

prop_compose! {
    /// A well-formed handoff against a flaky upstream: most of the randomness is in the faults.
    fn flaky_scenario()(
        base in crate::testkit::valid_request_with(3),
        participant in prop_oneof![3 => Just(None), 1 => Just(Some(BOT))],
        fallback in any::<bool>(),
        min_idle in 0u32..3,
        model in prop_oneof![Just(crate::CapacityModel::Slots), Just(crate::CapacityModel::Idle)],
        locate in prop::collection::vec(prop_oneof![1 => Just(None), 1 => fault().prop_map(Some)], 0..6),
        capacity in prop::collection::vec(prop_oneof![4 => (1u32..3, 0u32..2).prop_map(Ok), 1 => fault().prop_map(Err)], 0..4),
        write in prop::collection::vec(maybe_fault(), 0..3),
        transfer in prop::collection::vec(
            prop_oneof![
                1 => Just(TransferStep::Applied),
                1 => fault().prop_map(TransferStep::Refused),
                2 => Just(TransferStep::UnknownButApplied),
                2 => Just(TransferStep::UnknownNotApplied),
            ],
            0..4,
        ),
        gap_secs in prop_oneof![Just(0u64), 1u64..100],
    ) -> Scenario {
        let mut payload = base.to_json();
        payload["conversationId"] = json!(CONVERSATION);
        if let Some(obj) = payload.as_object_mut() {
            obj.remove("queueId");
            obj.remove("participantId");
        }
        if let Some(p) = participant { payload["participantId"] = json!(p); }
        let request = HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("still valid");
        let routing = RoutingPolicy::new(qid(DEFAULT_QUEUE), BTreeMap::new(), fallback.then(|| qid(FALLBACK_QUEUE)));
        let admission = AdmissionPolicy { model, minimum: min_idle, max_waiting: None, max_wait: None };
        let script = Script { locate, capacity, idle_when_unscripted: 1, write, transfer };
        Scenario { request, routing, admission, ended: false, held: true, script, gap: Duration::from_secs(gap_secs) }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random requests, routing, admission and capacity, with some upstream faults.
    #[test]
    fn no_path_transfers_twice_or_to_the_customer_or_outside_the_allowlist_or_without_capacity(sc in scenario()) {
        check(&sc)?;
    }

    /// A valid handoff against random upstream faults, lost responses included.
    #[test]
    fn no_sequence_of_upstream_faults_makes_a_handoff_transfer_twice(sc in flaky_scenario()) {
        check(&sc)?;
    }
}
