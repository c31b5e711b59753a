use super::*;

use crate::ports::Receipt;
use futures::executor::block_on;

use crate::ids::HandoffId;
use crate::lifecycle::{HandoffKey, HandoffRecord, Stage};
use crate::ports::{AnalyticsPort, HandoffEvent, LedgerError, LedgerPort, PortError};
use crate::request::IdempotencyKey;
use crate::service::testkit::*;
use std::sync::Arc;
use std::time::Duration;

// ---- the analytics outbox ---------------------------------------------------------------

#[test]
fn the_outbox_delivers_each_analytics_event_once() {
    // Arrange
    let harness = Harness::new();
    harness.deliver(Ports::happy(DEFAULT_QUEUE), request()).expect("transferred");
    let id = harness.record().id;
    let mut ports = Ports::silent();
    ports.analytics.checkpoint();
    ports
        .analytics
        .expect_record()
        .withf(move |e| e.handoff_id == id && e.reason.as_str() == "complex_billing_dispute")
        .times(1)
        .returning(|_| Ok(Receipt::default()));
    let service = harness.service(ports);

    // Act
    let first = block_on(service.deliver_analytics(10)).expect("ledger works");
    let second = block_on(service.deliver_analytics(10)).expect("ledger works");

    // Assert
    assert_eq!(first, TickReport { claimed: 1, done: 1, later: 0 });
    assert_eq!(second, TickReport::default());
    assert_eq!(block_on(harness.ledger.outbox_backlog()), Ok(0));
}

#[test]
fn a_failed_analytics_delivery_is_rescheduled_with_backoff_and_never_touches_the_transfer() {
    // Arrange
    let harness = Harness::new();
    harness.deliver(Ports::happy(DEFAULT_QUEUE), request()).expect("transferred");
    let mut ports = Ports::silent();
    ports.analytics.checkpoint();
    ports.analytics.expect_record().times(1).returning(|_| Err(transient()));
    let service = harness.service(ports);

    // Act
    let report = block_on(service.deliver_analytics(10)).expect("ledger works");

    // Assert: the first retry waits 2 s (2^1), and nothing else was called.
    assert_eq!(report, TickReport { claimed: 1, done: 0, later: 1 });
    drop(service);
    let ledger = &harness.ledger;
    let lease = Duration::from_secs(1);
    let soon = harness.now() + chrono::Duration::seconds(1);
    assert!(block_on(ledger.claim_outbox(soon, 10, lease)).expect("ok").is_empty(), "retried too early");
    let due = harness.now() + chrono::Duration::seconds(2);
    assert_eq!(block_on(ledger.claim_outbox(due, 10, lease)).expect("ok").len(), 1);
    assert_eq!(harness.record().stage, Stage::Transferred);
}

/// Analytics that stays pending for one poll per event and records the peak in flight.
#[derive(Default)]
struct CountingAnalytics {
    in_flight: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    delivered: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl AnalyticsPort for CountingAnalytics {
    async fn record(&self, _event: &HandoffEvent) -> Result<Receipt, PortError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
        self.in_flight.fetch_sub(1, SeqCst);
        self.delivered.fetch_add(1, SeqCst);
        Ok(Receipt::default())
    }
}

/// Stores `count` records of the test conversation, each with an analytics event due now.
fn seed_outbox(harness: &Harness, count: u32) {
    let at = harness.now();
    for n in 0..count {
        let record = HandoffRecord::received(
            HandoffId::random(),
            HandoffKey::new(conversation_id(), Some(IdempotencyKey::parse(&format!("k{n}")).expect("valid"))),
            request(),
            at,
        );
        let event = HandoffEvent {
            handoff_id: record.id,
            conversation_id: conversation_id(),
            reason: request().reason().clone(),
            queue_id: qid(DEFAULT_QUEUE),
            at,
        };
        block_on(harness.ledger.save(&record, None, &[event])).expect("saved");
    }
}

#[test]
fn the_outbox_delivers_a_batch_concurrently_never_more_than_its_share_at_once_and_two_rounds_a_batch() {
    use std::sync::atomic::Ordering::SeqCst;
    // Arrange: 12 events waiting, at most 3 deliveries at once
    let harness = Harness::with(|s| s.outbox_concurrency = 3);
    seed_outbox(&harness, 12);
    let analytics = Arc::new(CountingAnalytics::default());
    let ports = Ports::silent();
    let service = HandoffService::new(
        Arc::new(ports.queue),
        Arc::new(ports.transfer),
        Arc::clone(&analytics) as Arc<dyn AnalyticsPort>,
        Arc::clone(&harness.ledger) as Arc<dyn LedgerPort>,
        Arc::new(harness.clock()),
        harness.settings.clone(),
    );
    // Act
    let first = block_on(service.deliver_analytics(50)).expect("ledger works");
    let second = block_on(service.deliver_analytics(50)).expect("ledger works");
    // Assert: a batch is two rounds of 3, whatever the caller asked for
    assert_eq!(service.outbox_batch(), 6);
    assert_eq!(first, TickReport { claimed: 6, done: 6, later: 0 });
    assert_eq!(second, TickReport { claimed: 6, done: 6, later: 0 });
    assert_eq!(analytics.delivered.load(SeqCst), 12);
    assert_eq!(analytics.peak.load(SeqCst), 3, "deliveries were not concurrent, or exceeded the share");
    assert_eq!(block_on(harness.ledger.outbox_backlog()), Ok(0));
}

#[test]
fn once_the_ledger_cannot_mark_a_delivery_the_rest_of_the_batch_is_not_sent() {
    use std::sync::atomic::Ordering::SeqCst;
    // Arrange: two events, one delivery at a time, and marks that fail
    let harness = Harness::with(|s| s.outbox_concurrency = 1);
    seed_outbox(&harness, 2);
    let analytics = Arc::new(CountingAnalytics::default());
    let ports = Ports::silent();
    let ledger = FaultyLedger { inner: Arc::clone(&harness.ledger), only_pending_saves: false, failing_marks: true };
    let service = HandoffService::new(
        Arc::new(ports.queue),
        Arc::new(ports.transfer),
        Arc::clone(&analytics) as Arc<dyn AnalyticsPort>,
        Arc::new(ledger),
        Arc::new(harness.clock()),
        harness.settings,
    );
    // Act
    let outcome = block_on(service.deliver_analytics(50));
    // Assert: the ledger error is reported, and the second event was not sent
    assert!(matches!(outcome, Err(LedgerError::Unavailable(_))), "{outcome:?}");
    assert_eq!(analytics.delivered.load(SeqCst), 1);
}

#[test]
fn outbox_backoff_doubles_per_attempt_up_to_the_maximum() {
    let max = Duration::from_secs(600);
    assert_eq!(outbox_backoff(1, max), Duration::from_secs(2));
    assert_eq!(outbox_backoff(5, max), Duration::from_secs(32));
    assert_eq!(outbox_backoff(10, max), max);
    assert_eq!(outbox_backoff(u32::MAX, max), max);
}
