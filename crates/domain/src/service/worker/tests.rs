use super::*;
use std::sync::Mutex;

use crate::admission::CapacitySnapshot;
use crate::attributes::AttributeSet;
use crate::ids::ParticipantId;
use crate::ids::{ConversationId, HandoffId, QueueId};
use crate::lifecycle::{HandoffKey, HandoffMode, Stage};
use crate::ports::{Begin, ConversationSnapshot, LedgerPort, PortError, TransferPort};
use crate::ports::{MockOutcomeObserver, Receipt};
use crate::request::IdempotencyKey;
use crate::service::testkit::*;
use futures::executor::block_on;
use std::sync::Arc;
use std::time::Duration;

// ---- the deferral worker ----------------------------------------------------------------

#[test]
fn the_worker_transfers_a_deferred_handoff_once_capacity_returns() {
    // Arrange
    let harness = Harness::new();
    let id = harness.defer_one();
    harness.advance(harness.settings.recheck_every);
    let mut ports = Ports::default();
    ports.capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).locate(1, Ok(live())).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Ok(Receipt::default()),
    );
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let report = harness.tick(ports);

    // Assert
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    let record = harness.record();
    assert_eq!((record.id, record.stage), (id, Stage::Transferred));
    assert_eq!(harness.outbox().len(), 1);
    assert_eq!(transferred_to(&harness.deliver(Ports::silent(), request())), (qid(DEFAULT_QUEUE), true));
}

#[test]
fn the_worker_does_nothing_before_a_deferred_handoff_is_due() {
    // Arrange
    let harness = Harness::new();
    harness.defer_one();
    harness.advance(harness.settings.recheck_every - Duration::from_secs(1));

    // Act
    let report = harness.tick(Ports::silent());

    // Assert
    assert_eq!(report, TickReport::default());
}

#[test]
fn the_worker_reschedules_a_deferred_handoff_while_the_queues_are_full_without_a_lookup() {
    // Arrange
    let harness = Harness::new();
    harness.defer_one();
    harness.advance(harness.settings.recheck_every);
    let mut ports = Ports::default();
    ports.capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0))).capacity(
        FALLBACK_QUEUE,
        1,
        Ok(capacity(FALLBACK_QUEUE, 0)),
    );
    ports.transfer.expect_locate().never();
    ports.no_write().no_transfer();

    // Act
    let report = harness.tick(ports);

    // Assert
    assert_eq!(report, TickReport { claimed: 1, done: 0, later: 1 });
    let record = harness.record();
    assert_eq!(record.stage, Stage::Deferred);
    assert_eq!(record.next_check_at, Some(harness.now() + chrono_duration(harness.settings.recheck_every)));
}

#[test]
fn the_worker_transfers_anyway_once_the_deferral_has_expired() {
    // Arrange
    let harness = Harness::new();
    harness.defer_one();
    harness.advance(harness.settings.defer_for);
    let mut ports = Ports::default();
    ports.no_capacity_call().locate(1, Ok(live())).transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let report = harness.tick(ports);

    // Assert
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    let record = harness.record();
    assert_eq!(record.stage, Stage::Transferred);
    assert!(record.history.iter().any(|h| h.note.contains("deferral expired")), "{:?}", record.history);
}

#[test]
fn the_worker_resumes_a_handoff_a_crashed_instance_left() {
    // Arrange: a delivery began and its instance died holding the lease.
    let harness = Harness::new();
    let key = HandoffKey::new(conversation_id(), None);
    let s = &harness.settings;
    let begun =
        block_on(harness.ledger.begin(&key, &request(), harness.now(), s.lease, s.reuse_after, HandoffMode::Transfer));
    let Ok(Begin::Fresh(crashed)) = begun else { panic!("expected a fresh record") };
    harness.advance(harness.settings.lease + Duration::from_secs(1));

    // Act
    let report = harness.tick(Ports::happy(DEFAULT_QUEUE));

    // Assert
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    let record = harness.record();
    assert_eq!((record.id, record.stage), (crashed.id, Stage::Transferred));
}

// ---- handoffs nobody came back for ---------------------------------------------------------

/// A first delivery that stops on a transient lookup failure: answered 503, record released.
fn stall_one(harness: &Harness) -> HandoffId {
    let mut ports = Ports::default();
    ports.locate(1, Err(transient())).no_capacity_call().no_write().no_transfer();
    match unavailable(&harness.deliver(ports, request())) {
        (Some(id), _) => id,
        other => panic!("expected a record, got {other:?}"),
    }
}

/// The outcome reports one tick sends to the observer, in order.
fn tick_outcomes(harness: &Harness, ports: Ports) -> (TickReport, Vec<&'static str>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let mut observer = MockOutcomeObserver::new();
    observer.expect_observe().returning(move |r| sink.lock().expect("not poisoned").push(r.outcome));
    let service = harness.service(ports).with_observer(Arc::new(observer));
    let report = block_on(service.run_due(10)).expect("the in-memory ledger works");
    drop(service);
    let outcomes = seen.lock().expect("not poisoned").clone();
    (report, outcomes)
}

#[test]
fn a_handoff_released_after_a_503_is_left_to_its_caller_until_resume_after() {
    // Arrange
    let harness = Harness::new();
    stall_one(&harness);
    harness.advance(harness.settings.resume_after - Duration::from_secs(1));

    // Act
    let report = harness.tick(Ports::silent());

    // Assert
    assert_eq!(report, TickReport::default());
    let record = harness.record();
    assert_eq!(record.stage, Stage::Received);
    assert_eq!(
        record.next_check_at,
        Some(harness.now() + chrono_duration(Duration::from_secs(1))),
        "the worker's turn comes resume_after after the 503"
    );
}

#[test]
fn a_handoff_whose_caller_never_came_back_after_a_503_is_transferred_by_the_worker_when_the_bot_still_holds_it() {
    // Arrange
    let harness = Harness::with(|s| s.resume_after = Duration::from_secs(45));
    let id = stall_one(&harness);
    harness.advance(Duration::from_secs(45));

    // Act
    let (report, outcomes) = tick_outcomes(&harness, Ports::happy(DEFAULT_QUEUE));

    // Assert
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    assert_eq!(outcomes, vec!["transferred"]);
    let record = harness.record();
    assert_eq!((record.id, record.stage, record.next_check_at), (id, Stage::Transferred, None));
    assert_eq!(harness.outbox().len(), 1, "the analytics event is recorded once");
    // The bot coming back late gets the transfer replayed.
    assert_eq!(transferred_to(&harness.deliver(Ports::silent(), request())), (qid(DEFAULT_QUEUE), true));
}

#[test]
fn a_handoff_whose_caller_never_came_back_is_deferred_by_the_worker_when_the_queues_are_full() {
    // Arrange
    let harness = Harness::new();
    stall_one(&harness);
    harness.advance(harness.settings.resume_after);
    let mut ports = Ports::default();
    ports
        .locate(1, Ok(live()))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
        .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 0)))
        .no_write()
        .no_transfer();

    // Act
    let report = harness.tick(ports);

    // Assert: the deferral rules apply from now on (re-check, then transfer by `defer_for`).
    assert_eq!(report, TickReport { claimed: 1, done: 0, later: 1 });
    let record = harness.record();
    assert_eq!(record.stage, Stage::Deferred);
    assert_eq!(record.next_check_at, Some(harness.now() + chrono_duration(harness.settings.recheck_every)));
    assert_eq!(record.defer_until, Some(harness.now() + chrono_duration(harness.settings.defer_for)));
}

#[test]
fn a_handoff_whose_caller_never_came_back_ends_abandoned_when_the_bot_no_longer_holds_it() {
    let cases = [
        ("the conversation has ended", ended()),
        (
            "the guest has left the conversation",
            snapshot(vec![participant(CUSTOMER, true, false, None), participant(BOT, false, true, None)], vec![]),
        ),
        (
            "no participant holds the conversation",
            snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, false, None)], vec![]),
        ),
    ];
    for (why, conversation) in cases {
        // Arrange
        let harness = Harness::new();
        let id = stall_one(&harness);
        harness.advance(harness.settings.resume_after);
        let mut ports = Ports::default();
        ports.locate(1, Ok(conversation)).no_write().no_transfer().no_analytics();
        ports.queue.expect_capacity().returning(|q, _| Ok(CapacitySnapshot { queue: q, ..capacity(DEFAULT_QUEUE, 2) }));

        // Act
        let (report, outcomes) = tick_outcomes(&harness, ports);

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 }, "{why}");
        assert_eq!(outcomes, vec!["abandoned"], "{why}");
        let record = harness.record();
        assert_eq!((record.id, record.stage), (id, Stage::Abandoned), "{why}");
        assert!(record.history.last().is_some_and(|h| h.note.contains(why)), "{why}: {:?}", record.history);
        assert!(harness.outbox().is_empty(), "{why}: nothing to report to analytics");
        assert_eq!(harness.tick(Ports::silent()), TickReport::default(), "{why}: abandoned is terminal");
    }
}

#[test]
fn a_bot_that_comes_back_after_its_handoff_was_abandoned_starts_a_new_one() {
    // Arrange
    let harness = Harness::new();
    let abandoned = stall_one(&harness);
    harness.advance(harness.settings.resume_after);
    let mut ports = Ports::default();
    ports.locate(1, Ok(ended())).no_capacity_call().no_write().no_transfer();
    harness.tick(ports);

    // Act
    let mut again = Ports::default();
    again.locate(1, Ok(ended())).no_capacity_call().no_write().no_transfer();
    let outcome = harness.deliver(again, request());

    // Assert: a delivery is answered (422), never told "abandoned".
    assert!(matches!(outcome, Err(HandoffError::NotTransferable { handoff_id: Some(id), .. }) if id != abandoned));
}

#[test]
fn a_deferred_handoff_whose_guest_left_ends_abandoned_without_a_transfer() {
    for (why, advance_by, capacity_calls) in
        [("capacity returned", Duration::from_secs(15), 1), ("the deferral expired", Duration::from_secs(300), 0)]
    {
        // Arrange
        let harness = Harness::new();
        let id = harness.defer_one();
        harness.advance(advance_by);
        let mut ports = Ports::default();
        ports.capacity(DEFAULT_QUEUE, capacity_calls, Ok(capacity(DEFAULT_QUEUE, 1))).locate(1, Ok(ended()));
        ports.no_write().no_transfer().no_analytics();

        // Act
        let (report, outcomes) = tick_outcomes(&harness, ports);

        // Assert
        assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 }, "{why}");
        assert_eq!(outcomes, vec!["abandoned"], "{why}");
        let record = harness.record();
        assert_eq!((record.id, record.stage), (id, Stage::Abandoned), "{why}");
    }
}

#[test]
fn a_transfer_the_worker_finds_refused_because_the_holder_let_go_ends_abandoned() {
    // Arrange
    let harness = Harness::new();
    harness.defer_one();
    harness.advance(harness.settings.recheck_every);
    let mut ports = Ports::default();
    let gone = PortError::InvalidState { detail: "the holder is no longer connected".to_owned(), correlation_id: None };
    ports.capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).locate(1, Ok(live())).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Err(gone),
    );
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let report = harness.tick(ports);

    // Assert
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    assert_eq!(harness.record().stage, Stage::Abandoned);
}

#[test]
fn a_delivery_for_a_conversation_the_guest_left_is_not_transferable() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(
            1,
            Ok(snapshot(vec![participant(CUSTOMER, true, false, None), participant(BOT, false, true, None)], vec![])),
        )
        .no_capacity_call()
        .no_write()
        .no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_not_transferable(&outcome, "the guest has left");
    assert_eq!(harness.record().stage, Stage::Failed);
}

/// Lookups that wait until `expected` of them have started, then fail transiently.
struct GatedLookups {
    started: Arc<std::sync::atomic::AtomicUsize>,
    expected: usize,
}

#[async_trait::async_trait]
impl TransferPort for GatedLookups {
    async fn locate(&self, _c: ConversationId) -> Result<ConversationSnapshot, PortError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.started.fetch_add(1, SeqCst);
        futures::future::poll_fn(|cx| match self.started.load(SeqCst) >= self.expected {
            true => std::task::Poll::Ready(()),
            false => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
        Err(transient())
    }
    async fn write_context(
        &self,
        _c: ConversationId,
        _p: ParticipantId,
        _a: &AttributeSet,
    ) -> Result<Receipt, PortError> {
        panic!("no context write expected")
    }
    async fn transfer(&self, _c: ConversationId, _h: ParticipantId, _q: QueueId) -> Result<Receipt, PortError> {
        panic!("no transfer expected")
    }
}

#[test]
fn the_worker_drives_the_records_of_one_tick_concurrently() {
    // Arrange: three handoffs a crashed instance left; each lookup waits until all three have
    // started, which only concurrent driving achieves.
    use std::future::Future as _;
    let harness = Harness::new();
    let s = &harness.settings;
    for n in 0..3 {
        let key = HandoffKey::new(conversation_id(), Some(IdempotencyKey::parse(&format!("k{n}")).expect("valid")));
        let begun = block_on(harness.ledger.begin(
            &key,
            &request(),
            harness.now(),
            s.lease,
            s.reuse_after,
            HandoffMode::Transfer,
        ));
        assert!(matches!(begun, Ok(Begin::Fresh(_))));
    }
    harness.advance(harness.settings.lease);
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ports = Ports::silent();
    let service = HandoffService::new(
        Arc::new(ports.queue),
        Arc::new(GatedLookups { started: Arc::clone(&started), expected: 3 }),
        Arc::new(ports.analytics),
        Arc::clone(&harness.ledger) as Arc<dyn LedgerPort>,
        Arc::new(harness.clock()),
        harness.settings.clone(),
    );

    // Act: poll the tick by hand, a bounded number of times. Driven one after another, the
    // first lookup would wait forever.
    let mut tick = Box::pin(service.run_due(10));
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut result = std::task::Poll::Pending;
    for _ in 0..100 {
        result = tick.as_mut().poll(&mut cx);
        if result.is_ready() {
            break;
        }
    }

    // Assert
    assert!(matches!(result, std::task::Poll::Ready(Ok(TickReport { claimed: 3, done: 0, later: 3 }))), "{result:?}");
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn the_worker_retries_a_deferred_handoff_whose_transfer_failed_transiently_until_it_transfers() {
    // Arrange: capacity returned, but the transfer hit a transient failure.
    let harness = Harness::new();
    harness.defer_one();
    harness.advance(harness.settings.recheck_every);
    let mut failing = Ports::default();
    failing.capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).locate(1, Ok(live())).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Err(transient()),
    );
    failing.write_context(1, Ok(Receipt::default()));
    assert_eq!(harness.tick(failing), TickReport { claimed: 1, done: 0, later: 1 });
    harness.advance(harness.settings.lease);
    let mut retry = Ports::default();
    retry.locate(1, Ok(live())).no_capacity_call().no_write().transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));

    // Act: nobody will deliver this webhook again (the caller got 202); the worker must finish it.
    let report = harness.tick(retry);

    // Assert
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    assert_eq!(harness.record().stage, Stage::Transferred);
}
