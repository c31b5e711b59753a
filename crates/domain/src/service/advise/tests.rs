use super::*;
use std::sync::Mutex;

use crate::attributes::AttributeSet;
use crate::lifecycle::{
    AdviceDecision, Confirmation, HandoffKey, HandoffMode, HandoffRecord, Stage, StoredAnswer, Unconfirmed,
};
use crate::ports::{Begin, ConversationSnapshot, LedgerPort, OutcomeObserver, PortError};
use crate::ports::{MockOutcomeObserver, ParticipantView, Receipt};
use crate::request::HandoffRequest;
use crate::service::testkit::*;
use futures::executor::block_on;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

// ---- advisory mode ------------------------------------------------------------------------

impl Harness {
    fn advise(&self, ports: Ports, request: HandoffRequest) -> Result<HandoffOutcome, HandoffError> {
        block_on(self.service(ports).advise(request, None))
    }
}

/// The advice of an outcome, or a panic.
fn advice(outcome: &Result<HandoffOutcome, HandoffError>) -> &Advice {
    match outcome {
        Ok(HandoffOutcome::Advised(advice)) => {
            assert_eq!(advice.conversation_id, conversation_id());
            advice
        }
        other => panic!("expected an advice, got {other:?}"),
    }
}

/// Locate, capacity on the default queue with `idle` agents (and the fallback with none when
/// the default has none), one context write; never a transfer or an analytics event.
fn advisory_ports(idle: u32) -> (Ports, Arc<Mutex<Vec<AttributeSet>>>) {
    let mut p = Ports::default();
    p.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, idle)));
    if idle == 0 {
        p.capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 0)));
    }
    let written = p.write_context(1, Ok(receipt("corr-write")));
    p.no_transfer().no_analytics();
    (p, written)
}

#[test]
fn an_advice_with_capacity_writes_the_context_on_the_customer_and_transfers_nothing() {
    // Arrange
    let harness = Harness::new();
    let (ports, written) = advisory_ports(1);

    // Act
    let outcome = harness.advise(ports, request());

    // Assert: the answer
    let advice = advice(&outcome);
    assert_eq!(advice.decision, AdviceDecision::Transfer);
    assert_eq!((advice.queue_id, advice.replayed), (qid(DEFAULT_QUEUE), false));
    // Assert: the same attributes transfer mode writes
    let written = written.lock().expect("not poisoned");
    assert_eq!(written.len(), 1);
    let record = harness.record();
    assert_eq!(written[0].get("bot_handoff_id"), Some(record.id.to_string().as_str()));
    assert_eq!(written[0].get("guest_name"), Some("Jane Doe"));
    assert_eq!(written[0].get("attempted_resolution"), Some("refund_policy_explained"));
    assert_eq!(written[0].len(), 8);
    // Assert: a finished record that does not claim a transfer, and no analytics event
    assert_eq!(record.id, advice.handoff_id);
    assert_eq!(record.stage, Stage::Advised);
    assert!(record.stage.is_terminal());
    assert_eq!(
        record.answer,
        Some(StoredAnswer::Advised {
            queue: qid(DEFAULT_QUEUE),
            decision: AdviceDecision::Transfer,
            confirmation: None
        })
    );
    assert_eq!((record.holder, record.customer), (None, Some(pid(CUSTOMER))));
    assert!(!record.history.iter().any(|h| h.stage == Stage::Transferred || h.stage == Stage::TransferPending));
    assert!(harness.outbox().is_empty(), "an advice adds no analytics event");
}

#[test]
fn an_advice_without_capacity_defers_still_writes_the_context_and_leaves_nothing_to_the_worker() {
    // Arrange
    let harness = Harness::new();
    let (ports, written) = advisory_ports(0);

    // Act
    let outcome = harness.advise(ports, request());
    harness.advance(harness.settings.defer_for + harness.settings.lease);
    let report = harness.tick(Ports::silent());

    // Assert
    let advice = advice(&outcome);
    let recheck = harness.settings.recheck_every;
    assert_eq!(advice.decision, AdviceDecision::Defer { retry_after: recheck });
    assert_eq!(advice.queue_id, qid(DEFAULT_QUEUE));
    assert_eq!(written.lock().expect("not poisoned").len(), 1, "the context is written on defer too");
    assert_eq!(report, TickReport::default(), "the worker took an advisory handoff");
    assert_eq!(harness.record().stage, Stage::Advised);
    assert_eq!(harness.record().next_check_at, None, "an advice to defer is not confirmed");
}

#[test]
fn an_advice_overflows_to_the_fallback_queue_when_the_chosen_queue_is_full() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(1, Ok(live()))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
        .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 1)))
        .no_transfer();
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let outcome = harness.advise(ports, request());

    // Assert
    let advice = advice(&outcome);
    assert_eq!((advice.decision, advice.queue_id), (AdviceDecision::Transfer, qid(FALLBACK_QUEUE)));
}

#[test]
fn a_repeated_advice_is_replayed_without_any_upstream_call() {
    // Arrange
    let harness = Harness::new();
    let first = harness.advise(advisory_ports(1).0, request());

    // Act
    let second = harness.advise(Ports::silent(), request());

    // Assert
    let (first, second) = (advice(&first), advice(&second));
    assert!(second.replayed);
    assert_eq!(
        (second.handoff_id, second.queue_id, second.decision),
        (first.handoff_id, first.queue_id, first.decision)
    );
}

#[test]
fn a_deferral_advice_is_replayed_only_until_its_retry_after_so_asking_again_rechecks_capacity() {
    // Arrange
    let harness = Harness::new();
    let first = harness.advise(advisory_ports(0).0, request());
    let first_id = advice(&first).handoff_id;
    harness.advance(harness.settings.recheck_every - Duration::from_secs(1));
    let replayed = harness.advise(Ports::silent(), request());
    harness.advance(Duration::from_secs(1));

    // Act
    let again = harness.advise(advisory_ports(1).0, request());

    // Assert
    assert!(advice(&replayed).replayed);
    let again = advice(&again);
    assert_eq!((again.decision, again.replayed), (AdviceDecision::Transfer, false));
    assert_ne!(again.handoff_id, first_id, "a new advice starts a new record");
}

#[test]
fn an_advice_for_a_queue_outside_the_allowlist_is_refused_before_any_write_or_call() {
    // Arrange
    let harness = Harness::new();

    // Act
    let outcome = harness.advise(Ports::silent(), request_with("queueId", json!(UNLISTED_QUEUE)));

    // Assert
    assert!(matches!(outcome, Err(HandoffError::Invalid(_))), "{outcome:?}");
    let records = block_on(harness.ledger.find_by_conversation(conversation_id())).expect("ledger works");
    assert!(records.is_empty());
}

#[test]
fn advisory_errors_are_the_errors_of_transfer_mode() {
    // Arrange
    let gone = PortError::NotFound { what: "conversation".to_owned(), correlation_id: None };
    let refused = PortError::Rejected { status: 403, code: "missing.permissions".to_owned(), correlation_id: None };
    let cases: Vec<(&str, Ports, &str)> = vec![
        (
            "unknown conversation",
            {
                let mut p = Ports::default();
                p.locate(1, Err(gone)).no_write();
                p
            },
            "not_found",
        ),
        (
            "ended",
            {
                let mut p = Ports::default();
                p.locate(1, Ok(ended())).no_capacity_call().no_write();
                p
            },
            "not_transferable",
        ),
        (
            "agent",
            {
                let mut p = Ports::default();
                let mut agent = participant(SECOND_HOLDER, false, true, None);
                agent.is_agent = true;
                p.locate(1, Ok(snapshot(vec![participant(CUSTOMER, true, true, None), agent], vec![])))
                    .no_capacity_call()
                    .no_write();
                p
            },
            "not_transferable",
        ),
        (
            "refused write",
            {
                let mut p = Ports::default();
                p.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)));
                p.write_context(1, Err(refused));
                p
            },
            "rejected",
        ),
        (
            "capacity down",
            {
                let mut p = Ports::default();
                p.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Err(transient())).no_write();
                p
            },
            "unavailable",
        ),
    ];
    for (name, mut ports, kind) in cases {
        let harness = Harness::new();
        ports.no_transfer().no_analytics();

        // Act
        let outcome = harness.advise(ports, request());

        // Assert
        assert_eq!(outcome.as_ref().map_err(HandoffError::kind).err(), Some(kind), "{name}: {outcome:?}");
    }
}

#[test]
fn a_transient_failure_during_an_advice_answers_503_and_the_retry_resumes_the_same_record() {
    // Arrange
    let harness = Harness::new();
    let mut down = Ports::default();
    down.locate(1, Err(transient())).no_capacity_call().no_write().no_transfer();
    let (failed_id, _) = unavailable(&harness.advise(down, request()));

    // Act
    let retry = harness.advise(advisory_ports(1).0, request());

    // Assert
    assert_eq!(Some(advice(&retry).handoff_id), failed_id);
    assert_eq!(harness.record().answer.as_ref().map(StoredAnswer::is_advising), Some(false));
}

#[test]
fn the_worker_never_transfers_an_advisory_handoff_a_crashed_instance_left() {
    // Arrange: an advisory delivery marked its record, then its instance died holding the lease.
    let harness = Harness::new();
    let key = HandoffKey::new(conversation_id(), None);
    let s = &harness.settings;
    let begun =
        block_on(harness.ledger.begin(&key, &request(), harness.now(), s.lease, s.reuse_after, HandoffMode::Transfer));
    let Ok(Begin::Fresh(mut crashed)) = begun else { panic!("expected a fresh record") };
    crashed.answer = Some(StoredAnswer::Advising);
    let lease_end = harness.now() + chrono_duration(s.lease);
    block_on(harness.ledger.save(&crashed, Some(lease_end), &[])).expect("ledger works");
    harness.advance(harness.settings.lease + Duration::from_secs(1));

    // Act
    let report = harness.tick(Ports::silent());

    // Assert
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    let record = harness.record();
    assert_eq!(record.stage, Stage::Failed);
    assert!(matches!(record.answer, Some(StoredAnswer::Failed { status: 503, .. })), "{:?}", record.answer);
    // A new delivery starts over.
    assert!(advice(&harness.advise(advisory_ports(1).0, request())).handoff_id != crashed.id);
}

#[test]
fn a_transfer_mode_repeat_of_an_advised_handoff_replays_the_advice_and_transfers_nothing() {
    // Arrange
    let harness = Harness::new();
    let first = harness.advise(advisory_ports(1).0, request());

    // Act
    let repeat = harness.deliver(Ports::silent(), request());

    // Assert
    let repeat = advice(&repeat);
    assert!(repeat.replayed);
    assert_eq!(repeat.handoff_id, advice(&first).handoff_id);
}

#[test]
fn an_advice_for_a_handoff_already_transferred_replays_the_transfer() {
    // Arrange
    let harness = Harness::new();
    harness.deliver(Ports::happy(DEFAULT_QUEUE), request()).expect("transferred");

    // Act
    let outcome = harness.advise(Ports::silent(), request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), true));
}

#[test]
fn an_advice_leaves_a_transfer_that_may_have_happened_to_transfer_mode() {
    // Arrange: a transfer-mode delivery left its record in TransferPending.
    let harness = Harness::new();
    unavailable(&lose_a_transfer_response(&harness, transient()));
    assert_eq!(harness.record().stage, Stage::TransferPending);

    // Act
    let outcome = harness.advise(Ports::silent(), request());

    // Assert: 409, the record untouched; once the lease lapses the worker reads it back.
    assert!(matches!(outcome, Err(HandoffError::InProgress { .. })), "{outcome:?}");
    assert_eq!(harness.record().stage, Stage::TransferPending);
    harness.advance(harness.settings.lease);
    let mut worker = Ports::default();
    worker.locate(1, Ok(in_queue(DEFAULT_QUEUE))).no_capacity_call().no_write().no_transfer();
    assert_eq!(harness.tick(worker), TickReport { claimed: 1, done: 1, later: 0 });
    assert_eq!(harness.record().stage, Stage::Transferred);
}

#[test]
fn the_observer_gets_the_advice_decision_as_the_outcome() {
    // Arrange
    let harness = Harness::new();
    let mut observer = MockOutcomeObserver::new();
    expect_report(&mut observer, "advised_transfer", false);
    expect_report(&mut observer, "replayed", false);
    let observer: Arc<dyn OutcomeObserver> = Arc::new(observer);

    // Act
    let advise =
        |ports: Ports| block_on(harness.service(ports).with_observer(Arc::clone(&observer)).advise(request(), None));
    advise(advisory_ports(1).0).expect("advised");
    advise(Ports::silent()).expect("replayed");

    // Assert: counts are verified when the observer is dropped.
    drop(observer);
}

/// Runs a scenario in advisory mode: two deliveries, then the worker; nothing may transfer.
fn check_advice(sc: &Scenario) -> Result<(), TestCaseError> {
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

    // Act
    let first = block_on(service.advise(sc.request.clone(), None));
    let after_first = world.lock().expect("not poisoned").calls.len();
    harness.advance(sc.gap);
    let second = block_on(service.advise(sc.request.clone(), None));
    let after_second = world.lock().expect("not poisoned").calls.len();
    harness.advance(harness.settings.defer_for + harness.settings.lease);
    for _ in 0..3 {
        block_on(service.run_due(10)).expect("the in-memory ledger works");
        harness.advance(harness.settings.lease);
    }

    // Assert
    let world = world.lock().expect("not poisoned");
    let calls = &world.calls;
    prop_assert_eq!(transfers(calls).count(), 0, "an advice transferred: {:?}", calls);
    // The worker only reads the conversation (confirming an advice to transfer), never changes it.
    prop_assert!(
        calls[after_second..].iter().all(|c| matches!(c, Call::Locate)),
        "the worker touched an advisory handoff: {:?}",
        calls
    );
    for call in calls {
        if let Call::Write { customer } = call {
            prop_assert_eq!(*customer, pid(CUSTOMER), "context written on a non-customer");
        }
    }
    if let Ok(HandoffOutcome::Advised(Advice { decision: AdviceDecision::Transfer, queue_id, .. })) = &first {
        prop_assert!(sc.routing.allowed_queues().contains(queue_id));
        if sc.admission.checks_capacity() {
            let admitted = calls[..after_first]
                .iter()
                .any(|c| matches!(c, Call::Capacity { queue: q, admitted: true } if q == queue_id));
            prop_assert!(admitted, "advised {} without admission: {:?}", queue_id, calls);
        }
        if sc.gap < harness.settings.reuse_after {
            prop_assert_eq!(after_second, after_first, "the repeat called upstream: {:?}", calls);
            prop_assert!(matches!(&second, Ok(HandoffOutcome::Advised(a)) if a.replayed), "{:?}", second);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random requests, routing, admission, capacity and upstream faults in advisory mode.
    #[test]
    fn no_advice_ever_transfers_or_is_given_without_capacity(sc in scenario()) {
        check_advice(&sc)?;
    }
}

// ---- confirmation of an advice --------------------------------------------------------

#[test]
fn confirmation_reads_start_after_the_first_wait_double_it_and_end_at_the_window() {
    let secs = |s: &[u64]| s.iter().map(|s| Duration::from_secs(*s)).collect::<Vec<_>>();
    assert_eq!(confirmation_reads(Duration::from_secs(5), Duration::from_secs(120)), secs(&[5, 15, 35, 75, 120]));
    assert_eq!(confirmation_reads(Duration::from_secs(5), Duration::from_secs(35)), secs(&[5, 15, 35]));
    assert_eq!(confirmation_reads(Duration::from_secs(5), Duration::from_secs(5)), secs(&[5]));
    assert_eq!(confirmation_reads(Duration::from_secs(5), Duration::from_secs(3)), secs(&[3]));
}

/// Advises a transfer, then runs the worker once a second for 200 s with the conversation
/// looked up through `script` (by read number, from 0); never a write, capacity read or
/// transfer. Returns the read times (seconds after the advice) and the record.
fn confirm_with(
    script: impl Fn(usize) -> Result<ConversationSnapshot, PortError> + Send + Sync + 'static,
) -> (Vec<i64>, HandoffRecord) {
    let harness = Harness::new();
    harness.advise(advisory_ports(1).0, request()).expect("advised");
    let advised_at = harness.now();
    let reads = Arc::new(Mutex::new(Vec::new()));
    let mut ports = Ports::default();
    let (log, now) = (Arc::clone(&reads), Arc::clone(&harness.now));
    ports.transfer.expect_locate().returning(move |_| {
        let mut log = log.lock().expect("not poisoned");
        log.push((*now.lock().expect("not poisoned") - advised_at).num_seconds());
        script(log.len() - 1)
    });
    ports.no_capacity_call().no_write().no_transfer().no_analytics();
    let service = harness.service(ports);
    for _ in 0..200 {
        harness.advance(Duration::from_secs(1));
        block_on(service.run_due(10)).expect("the in-memory ledger works");
    }
    let reads = reads.lock().expect("not poisoned").clone();
    (reads, harness.record())
}

fn confirmation(record: &HandoffRecord) -> Option<Confirmation> {
    match &record.answer {
        Some(StoredAnswer::Advised { confirmation, .. }) => *confirmation,
        other => panic!("expected an advice, got {other:?}"),
    }
}

#[test]
fn an_advice_the_flow_never_carries_out_is_read_five_times_then_unconfirmed() {
    // Act
    let (reads, record) = confirm_with(|_| Ok(live()));

    // Assert
    assert_eq!(reads, [5, 15, 35, 75, 120]);
    assert_eq!(confirmation(&record), Some(Confirmation::Unconfirmed { why: Unconfirmed::StillWithFlow }));
    assert_eq!((record.stage, record.next_check_at), (Stage::Advised, None));
    assert_eq!(crate::Outcome::of(&record), crate::Outcome::Unconfirmed);
}

#[test]
fn an_advice_the_flow_carries_out_is_confirmed_at_the_first_read_that_sees_the_queue() {
    // Act: the flow transfers between the second and the third read.
    let (reads, record) = confirm_with(|n| Ok(if n < 2 { live() } else { in_queue(DEFAULT_QUEUE) }));

    // Assert
    assert_eq!(reads, [5, 15, 35]);
    let confirmed = Confirmation::Confirmed { queue: qid(DEFAULT_QUEUE), after: Duration::from_secs(35) };
    assert_eq!(confirmation(&record), Some(confirmed));
    assert_eq!(record.next_check_at, None);
    assert_eq!(crate::Outcome::of(&record), crate::Outcome::Confirmed);
    assert!(record.history.iter().any(|h| h.note.contains("confirmed: in queue")), "{:?}", record.history);
}

#[test]
fn an_advice_whose_conversation_ends_or_is_taken_elsewhere_is_unconfirmed_at_once() {
    let agent = snapshot(
        vec![
            participant(CUSTOMER, true, true, None),
            ParticipantView { id: pid(STRANGER), is_customer: false, is_agent: true, active: true, queue: None },
        ],
        vec![],
    );
    for (found, why) in [
        (Ok(ended()), Unconfirmed::Ended),
        (Err(PortError::NotFound { what: "conversation".to_owned(), correlation_id: None }), Unconfirmed::Ended),
        (Ok(agent), Unconfirmed::Elsewhere),
    ] {
        // Act
        let (reads, record) = confirm_with(move |_| found.clone());

        // Assert
        assert_eq!(reads, [5], "{why:?}");
        assert_eq!(confirmation(&record), Some(Confirmation::Unconfirmed { why }));
    }
}

#[test]
fn failed_confirmation_reads_keep_to_the_schedule_and_end_unknown() {
    // Act
    let (reads, record) = confirm_with(|_| Err(transient()));

    // Assert
    assert_eq!(reads, [5, 15, 35, 75, 120]);
    assert_eq!(confirmation(&record), Some(Confirmation::Unconfirmed { why: Unconfirmed::Unknown }));
}

#[test]
fn a_conversation_that_reached_an_agent_through_a_queue_is_confirmed_with_that_queue() {
    // Arrange: the queue participant already handed the guest to an agent.
    let through = snapshot(
        vec![
            participant(CUSTOMER, true, true, None),
            participant(BOT, false, false, None),
            participant(ACD, false, false, Some(qid(FALLBACK_QUEUE))),
            ParticipantView { id: pid(STRANGER), is_customer: false, is_agent: true, active: true, queue: None },
        ],
        vec![],
    );

    // Act
    let (reads, record) = confirm_with(move |_| Ok(through.clone()));

    // Assert: confirmed with the queue actually reached, not the one advised.
    assert_eq!(reads, [5]);
    let confirmed = Confirmation::Confirmed { queue: qid(FALLBACK_QUEUE), after: Duration::from_secs(5) };
    assert_eq!(confirmation(&record), Some(confirmed));
}

#[test]
fn a_begin_in_advise_mode_marks_the_record_so_a_crash_right_after_it_never_transfers() {
    // Arrange: an advisory delivery's `begin`, then its instance dies before anything else.
    let harness = Harness::new();
    let key = HandoffKey::new(conversation_id(), None);
    let s = &harness.settings;
    let begun =
        block_on(harness.ledger.begin(&key, &request(), harness.now(), s.lease, s.reuse_after, HandoffMode::Advise));
    let Ok(Begin::Fresh(crashed)) = begun else { panic!("expected a fresh record") };
    harness.advance(s.lease + Duration::from_secs(1));

    // Act: the worker finds it (ports that fail the test on any call).
    let report = harness.tick(Ports::silent());

    // Assert
    assert_eq!(crashed.answer, Some(StoredAnswer::Advising));
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    let record = harness.record();
    assert_eq!(record.stage, Stage::Failed);
    assert_eq!(crate::Outcome::of(&record), crate::Outcome::Failed(crate::FailureCause::Interrupted));
}
