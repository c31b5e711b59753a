use super::*;

use crate::ports::{MockOutcomeObserver, Receipt};
use futures::executor::block_on;

use crate::ids::HandoffId;
use crate::lifecycle::{HandoffKey, HandoffMode, Stage};
use crate::ports::{LedgerPort, OutcomeObserver, PortError};
use crate::request::{IdempotencyKey, ValidationErrors};
use crate::service::testkit::*;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn a_rejected_transfer_is_reported_with_upstream_status_code_and_correlation_id() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Err(PortError::Rejected {
            status: 403,
            code: "missing.permissions".to_owned(),
            correlation_id: Some("corr-403".to_owned()),
        }),
    );
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    let record = harness.record();
    assert_eq!(
        outcome,
        Err(HandoffError::UpstreamRejected {
            handoff_id: Some(record.id),
            status: 403,
            code: "missing.permissions".to_owned(),
            correlation_id: Some("corr-403".to_owned()),
        })
    );
    assert_eq!(record.stage, Stage::Failed);
    assert!(harness.outbox().is_empty());
}

#[test]
fn a_transient_lookup_failure_answers_503_and_the_retry_resumes_the_same_handoff() {
    // Arrange
    let harness = Harness::new();
    let mut first = Ports::default();
    first.locate(1, Err(transient())).no_capacity_call().no_write().no_transfer();
    let outcome = harness.deliver(first, request());
    let (id, retry_after) = unavailable(&outcome);

    // Act
    let retry = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

    // Assert
    assert_eq!(id, Some(harness.record().id));
    assert_eq!(retry_after, harness.settings.unavailable_retry_after);
    assert_eq!(transferred_to(&retry), (qid(DEFAULT_QUEUE), false));
    let record = harness.record();
    assert_eq!(Some(record.id), id, "the retry resumed the same handoff");
    assert_eq!(record.attempts, 2);
}

#[test]
fn a_transient_capacity_failure_answers_503_and_the_retry_resumes_the_same_handoff() {
    // Arrange
    let harness = Harness::new();
    let mut first = Ports::default();
    first.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Err(transient())).no_write().no_transfer();
    let (id, _) = unavailable(&harness.deliver(first, request()));

    // Act
    let retry = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

    // Assert
    assert_eq!(transferred_to(&retry), (qid(DEFAULT_QUEUE), false));
    assert_eq!(Some(harness.record().id), id);
}

#[test]
fn a_transient_context_write_failure_answers_503_and_the_retry_resumes_the_same_handoff() {
    // Arrange
    let harness = Harness::new();
    let mut first = Ports::default();
    first.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).no_transfer();
    first.write_context(1, Err(transient()));
    let (id, _) = unavailable(&harness.deliver(first, request()));
    assert_eq!(harness.record().stage, Stage::Received);

    // Act
    let retry = harness.deliver(Ports::happy(DEFAULT_QUEUE), request());

    // Assert
    assert_eq!(transferred_to(&retry), (qid(DEFAULT_QUEUE), false));
    assert_eq!(Some(harness.record().id), id);
}

#[test]
fn a_transfer_pending_record_left_by_a_failed_context_write_writes_the_context_on_recovery() {
    // Arrange: the context write fails, and the record cannot be stored back: the ledger keeps
    // the `TransferPending` saved alongside the write
    let harness = Harness::new();
    let mut first = Ports::default();
    first.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).no_transfer();
    first.write_context(1, Err(transient()));
    let service = HandoffService::new(
        Arc::new(first.queue),
        Arc::new(first.transfer),
        Arc::new(first.analytics),
        Arc::new(FaultyLedger { inner: Arc::clone(&harness.ledger), only_pending_saves: true, failing_marks: false }),
        Arc::new(harness.clock()),
        harness.settings.clone(),
    );
    assert!(block_on(service.handle(request(), None)).is_err());
    assert_eq!(harness.record().stage, Stage::TransferPending);
    harness.advance(harness.settings.lease + Duration::from_secs(1));

    // Act: the worker takes the record up
    let mut ports = Ports::default();
    ports.locate(1, Ok(live())).transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));
    let written = ports.write_context(1, Ok(Receipt::default()));
    let report = harness.tick(ports);

    // Assert: the context was written before the transfer
    assert_eq!(report, TickReport { claimed: 1, done: 1, later: 0 });
    assert_eq!(written.lock().expect("not poisoned").len(), 1, "transferred without the context");
    assert_eq!(harness.record().stage, Stage::Transferred);
    assert_eq!(harness.record().customer, Some(pid(CUSTOMER)));
}

#[test]
fn a_rate_limit_answers_503_with_the_upstream_retry_after() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(1, Err(PortError::RateLimited { retry_after: Some(Duration::from_secs(7)), correlation_id: None }))
        .no_capacity_call()
        .no_write()
        .no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(unavailable(&outcome), (Some(harness.record().id), Duration::from_secs(7)));
}

#[test]
fn a_rate_limit_without_retry_after_answers_the_configured_retry_after() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(1, Ok(live()))
        .capacity(DEFAULT_QUEUE, 1, Err(PortError::RateLimited { retry_after: None, correlation_id: None }))
        .no_write()
        .no_transfer();

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(unavailable(&outcome).1, harness.settings.unavailable_retry_after);
}

#[test]
fn a_transient_transfer_failure_keeps_the_written_context_and_the_retry_transfers_once() {
    // Arrange
    let harness = Harness::new();
    let mut first = Ports::default();
    first.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Err(transient()),
    );
    first.write_context(1, Ok(Receipt::default()));
    unavailable(&harness.deliver(first, request()));
    assert_eq!(harness.record().stage, Stage::ContextWritten);
    let mut retry = Ports::default();
    retry.locate(1, Ok(live())).no_capacity_call().no_write().transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(retry, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    assert_eq!(harness.record().stage, Stage::Transferred);
}

#[test]
fn an_indeterminate_transfer_that_applied_is_confirmed_by_read_back_with_one_transfer_call() {
    // Arrange
    let harness = Harness::new();
    let mut ports = Ports::default();
    ports
        .locate(1, Ok(live()))
        .locate(1, Ok(in_queue(DEFAULT_QUEUE)))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
        .transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Err(PortError::Indeterminate { detail: "response timed out".to_owned(), correlation_id: None }),
        );
    ports.write_context(1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(ports, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    assert_eq!(harness.record().stage, Stage::Transferred);
    assert_eq!(harness.outbox().len(), 1);
}

#[test]
fn an_indeterminate_transfer_that_did_not_apply_answers_503_and_the_retry_transfers_once() {
    // Arrange
    let harness = Harness::new();
    let mut first = Ports::default();
    first.locate(2, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1))).transfer(
        BOT,
        DEFAULT_QUEUE,
        1,
        Err(PortError::Indeterminate { detail: "connection reset".to_owned(), correlation_id: None }),
    );
    first.write_context(1, Ok(Receipt::default()));
    let (id, _) = unavailable(&harness.deliver(first, request()));
    assert_eq!(harness.record().stage, Stage::ContextWritten);
    let mut retry = Ports::default();
    retry.locate(1, Ok(live())).no_capacity_call().no_write().transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(retry, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    assert_eq!(Some(harness.record().id), id);
}

#[test]
fn a_record_left_transfer_pending_is_read_back_before_any_new_transfer() {
    // Arrange: the transfer's outcome is unknown and the read-back fails too.
    let harness = Harness::new();
    let mut first = Ports::default();
    first
        .locate(1, Ok(live()))
        .locate(1, Err(transient()))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
        .transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Err(PortError::Indeterminate { detail: "response timed out".to_owned(), correlation_id: None }),
        );
    first.write_context(1, Ok(Receipt::default()));
    unavailable(&harness.deliver(first, request()));
    assert_eq!(harness.record().stage, Stage::TransferPending);
    let mut retry = Ports::default();
    retry.locate(1, Ok(in_queue(DEFAULT_QUEUE))).no_capacity_call().no_write().no_transfer();

    // Act
    let outcome = harness.deliver(retry, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    assert_eq!(harness.record().stage, Stage::Transferred);
}

#[test]
fn a_record_left_transfer_pending_that_did_not_apply_is_transferred_once_on_resume() {
    // Arrange
    let harness = Harness::new();
    let mut first = Ports::default();
    first
        .locate(1, Ok(live()))
        .locate(1, Err(transient()))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
        .transfer(
            BOT,
            DEFAULT_QUEUE,
            1,
            Err(PortError::Indeterminate { detail: "response timed out".to_owned(), correlation_id: None }),
        );
    first.write_context(1, Ok(Receipt::default()));
    unavailable(&harness.deliver(first, request()));
    let mut retry = Ports::default();
    retry.locate(1, Ok(live())).no_capacity_call().no_write().transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));

    // Act
    let outcome = harness.deliver(retry, request());

    // Assert
    assert_eq!(transferred_to(&outcome), (qid(DEFAULT_QUEUE), false));
    let stages: Vec<Stage> = harness.record().history.iter().map(|h| h.stage).collect();
    assert!(stages.ends_with(&[Stage::ContextWritten, Stage::TransferPending, Stage::Transferred]), "{stages:?}");
}

#[test]
fn a_rejected_read_back_keeps_the_transfer_pending_so_no_later_delivery_transfers_again() {
    // Arrange: found by the property below. A 4xx on the read-back used to fail the record,
    // and a failed record let the next delivery start a new handoff and transfer again.
    let harness = Harness::new();
    let rejected = PortError::Rejected { status: 400, code: "bad.request".to_owned(), correlation_id: None };
    let first = lose_a_transfer_response(&harness, rejected);
    let mut retry = Ports::default();
    retry.locate(1, Ok(in_queue(DEFAULT_QUEUE))).no_capacity_call().no_write().no_transfer();

    // Act
    let second = harness.deliver(retry, request());

    // Assert
    let (id, _) = unavailable(&first);
    assert_eq!(transferred_to(&second), (qid(DEFAULT_QUEUE), false));
    assert_eq!(Some(harness.record().id), id, "the same handoff, not a new one");
}

#[test]
fn a_resumed_transfer_pending_record_stays_pending_whatever_its_lookup_fails_with() {
    // Arrange
    let harness = Harness::new();
    unavailable(&lose_a_transfer_response(&harness, transient()));
    let mut retry = Ports::default();
    retry
        .locate(1, Err(PortError::NotFound { what: "conversation".to_owned(), correlation_id: None }))
        .no_capacity_call()
        .no_write()
        .no_transfer();

    // Act
    let outcome = harness.deliver(retry, request());

    // Assert
    unavailable(&outcome);
    assert_eq!(harness.record().stage, Stage::TransferPending);
}

// ---- outcome reports --------------------------------------------------------------------

#[test]
fn the_observer_gets_one_report_per_outcome() {
    // Arrange: the 503'd handoff is left to its caller for the whole test.
    let harness = Harness::with(|s| s.resume_after = Duration::from_secs(3600));
    let mut observer = MockOutcomeObserver::new();
    for outcome in ["deferred", "replayed", "in_progress", "transferred", "unavailable", "not_found"] {
        expect_report(&mut observer, outcome, false);
    }
    expect_report(&mut observer, "transferred", true);
    let observer: Arc<dyn OutcomeObserver> = Arc::new(observer);
    let deliver = |ports: Ports, key: Option<&str>| {
        let key = key.map(|k| IdempotencyKey::parse(k).expect("valid"));
        block_on(harness.service(ports).with_observer(Arc::clone(&observer)).handle(request(), key))
    };

    // Act: deferred, then replayed
    let mut full = Ports::default();
    full.locate(1, Ok(live())).capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0))).capacity(
        FALLBACK_QUEUE,
        1,
        Ok(capacity(FALLBACK_QUEUE, 0)),
    );
    deliver(full, None).expect("deferred");
    deliver(Ports::silent(), None).expect("replayed");
    // ... in progress (another delivery holds key "b"), then transferred once that lease lapses
    let s = &harness.settings;
    let key_b = HandoffKey::new(conversation_id(), Some(IdempotencyKey::parse("b").expect("valid")));
    block_on(harness.ledger.begin(&key_b, &request(), harness.now(), s.lease, s.reuse_after, HandoffMode::Transfer))
        .expect("ok");
    deliver(Ports::silent(), Some("b")).expect_err("in progress");
    harness.advance(harness.settings.lease);
    deliver(Ports::happy(DEFAULT_QUEUE), Some("b")).expect("transferred");
    // ... unavailable, and not found
    let mut down = Ports::default();
    down.locate(1, Err(transient()));
    deliver(down, Some("d")).expect_err("unavailable");
    let mut gone = Ports::default();
    gone.locate(1, Err(PortError::NotFound { what: "conversation".to_owned(), correlation_id: None }));
    deliver(gone, Some("e")).expect_err("not found");
    // ... and the worker's transfer of the deferred handoff
    harness.advance(harness.settings.defer_for);
    let mut worker = Ports::default();
    worker.locate(1, Ok(live())).transfer(BOT, DEFAULT_QUEUE, 1, Ok(Receipt::default()));
    worker.write_context(1, Ok(Receipt::default()));
    let service = harness.service(worker).with_observer(Arc::clone(&observer));
    let report = block_on(service.run_due(10)).expect("ledger works");

    // Assert: counts are verified when the observer is dropped; the tick finished one.
    assert_eq!(report.done, 1);
    drop(service);
    drop(observer);
}

#[test]
fn every_error_has_a_stable_kind() {
    let id = HandoffId::random();
    let cases = [
        (HandoffError::Invalid(ValidationErrors::single("queueId", "bad")), "invalid"),
        (HandoffError::ConversationNotFound { handoff_id: None, correlation_id: None }, "not_found"),
        (HandoffError::NotTransferable { handoff_id: None, message: String::new() }, "not_transferable"),
        (HandoffError::InProgress { handoff_id: id, retry_after: Duration::ZERO }, "in_progress"),
        (
            HandoffError::UpstreamRejected { handoff_id: None, status: 400, code: String::new(), correlation_id: None },
            "rejected",
        ),
        (HandoffError::Unavailable { handoff_id: None, retry_after: Duration::ZERO }, "unavailable"),
    ];
    for (error, kind) in cases {
        assert_eq!(error.kind(), kind);
    }
}
