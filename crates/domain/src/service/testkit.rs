//! Fixtures shared by the tests of the service parts: ids, lookups, mocked ports, the harness
//! (in-memory ledger, hand-driven clock) and the fake platform of the property tests.

use std::sync::Mutex;

use crate::admission::AdmissionPolicy;
use crate::admission::CapacitySnapshot;
use crate::context::ContextSet;
use crate::ids::ParticipantId;
use crate::ids::{ConversationId, HandoffId, QueueId};
use crate::lifecycle::{HandoffKey, HandoffMode, HandoffRecord, Stage};
use crate::memory::InMemoryLedger;
use crate::platform::PlatformRules;
use crate::ports::Missing;
use crate::ports::{HandoffEvent, LedgerError, LedgerPort, PortError, TransferResult};
use crate::ports::{MockAnalyticsPort, MockClock, MockOutcomeObserver, MockQueuePort, MockTransferPort, Receipt};
use crate::request::HandoffRequest;
use crate::routing::RoutingPolicy;
use crate::service::types::*;
use crate::service::*;
use crate::testkit::sample_payload;
use chrono::{DateTime, Utc};
use futures::executor::block_on;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const CONVERSATION: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
pub(crate) const CUSTOMER: &str = "c0000000-0000-4000-8000-000000000001";
pub(crate) const BOT: &str = "b0000000-0000-4000-8000-000000000001";
pub(crate) const SECOND_HOLDER: &str = "b0000000-0000-4000-8000-000000000002";
pub(crate) const STRANGER: &str = "e0000000-0000-4000-8000-000000000001";
pub(crate) const ACD: &str = "a0000000-0000-4000-8000-000000000001";
pub(crate) const DEFAULT_QUEUE: &str = "00000000-0000-4000-8000-000000000001";
pub(crate) const RESET_QUEUE: &str = "00000000-0000-4000-8000-000000000002";
pub(crate) const FALLBACK_QUEUE: &str = "00000000-0000-4000-8000-000000000003";
pub(crate) const UNLISTED_QUEUE: &str = "00000000-0000-4000-8000-000000000099";

pub(crate) fn conversation_id() -> ConversationId {
    ConversationId::parse(CONVERSATION).expect("valid")
}
pub(crate) fn pid(raw: &str) -> ParticipantId {
    ParticipantId::parse(raw).expect("valid")
}
pub(crate) fn qid(raw: &str) -> QueueId {
    QueueId::parse(raw).expect("valid")
}

/// The tutorial's sample request (reason `complex_billing_dispute`: not routed, so the default queue).
pub(crate) fn request() -> HandoffRequest {
    HandoffRequest::from_json(&sample_payload(), &crate::ids::OpaqueIds).expect("valid")
}

pub(crate) fn request_with(field: &str, value: serde_json::Value) -> HandoffRequest {
    let mut payload = sample_payload();
    payload[field] = value;
    HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("valid")
}

pub(crate) fn routing() -> RoutingPolicy {
    RoutingPolicy::new(
        qid(DEFAULT_QUEUE),
        [("password_reset".to_owned(), qid(RESET_QUEUE))].into_iter().collect(),
        Some(qid(FALLBACK_QUEUE)),
    )
}

mod platform;

pub(crate) use platform::*;

// ---- the harness ------------------------------------------------------------------------

/// The mocked ports for one delivery or tick. Expectations are verified when the service
/// built from them is dropped, so each delivery checks its own call counts.
#[derive(Default)]
pub(crate) struct Ports {
    pub(crate) queue: MockQueuePort,
    pub(crate) transfer: MockTransferPort,
    pub(crate) analytics: MockAnalyticsPort,
}

impl Ports {
    /// Ports that fail the test on any call.
    pub(crate) fn silent() -> Self {
        let mut p = Ports::default();
        p.queue.expect_capacity().never();
        p.transfer.expect_locate().never();
        p.transfer.expect_write_context().never();
        p.transfer.expect_transfer().never();
        p.analytics.expect_record().never();
        p
    }

    pub(crate) fn locate(&mut self, times: usize, result: Result<ConversationSnapshot, PortError>) -> &mut Self {
        self.transfer
            .expect_locate()
            .withf(|c, _| *c == conversation_id())
            .times(times)
            .returning(move |_, hint| result.clone().map(|s| located(&s, hint)));
        self
    }

    pub(crate) fn capacity(
        &mut self,
        queue: &str,
        times: usize,
        result: Result<CapacitySnapshot, PortError>,
    ) -> &mut Self {
        let queue = qid(queue);
        self.queue.expect_capacity().withf(move |q, _| *q == queue).times(times).returning(move |_, _| result.clone());
        self
    }

    /// Expects `times` context writes on the customer participant; returns what was written.
    pub(crate) fn write_context(
        &mut self,
        times: usize,
        result: Result<Receipt, PortError>,
    ) -> Arc<Mutex<Vec<ContextSet>>> {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&written);
        self.transfer
            .expect_write_context()
            .withf(|c, customer, _| *c == conversation_id() && *customer == anchor(&pid(CUSTOMER)))
            .times(times)
            .returning(move |_, _, attributes| {
                sink.lock().expect("not poisoned").push(attributes.clone());
                result.clone()
            });
        written
    }

    pub(crate) fn transfer(
        &mut self,
        holder: &str,
        queue: &str,
        times: usize,
        result: Result<Receipt, PortError>,
    ) -> &mut Self {
        let (holder, queue) = (handle(&pid(holder)), qid(queue));
        self.transfer
            .expect_transfer()
            .withf(move |c, h, q, context| *c == conversation_id() && *h == holder && *q == queue && context.is_none())
            .times(times)
            .returning(move |_, _, _, _| result.clone().map(TransferResult::Done));
        self
    }

    pub(crate) fn no_capacity_call(&mut self) -> &mut Self {
        self.queue.expect_capacity().never();
        self
    }
    pub(crate) fn no_write(&mut self) -> &mut Self {
        self.transfer.expect_write_context().never();
        self
    }
    pub(crate) fn no_transfer(&mut self) -> &mut Self {
        self.transfer.expect_transfer().never();
        self
    }
    pub(crate) fn no_analytics(&mut self) -> &mut Self {
        self.analytics.expect_record().never();
        self
    }

    /// The whole happy path once: locate, admit on the default queue, write, transfer.
    pub(crate) fn happy(queue: &str) -> Self {
        let mut p = Ports::default();
        p.locate(1, Ok(live())).capacity(queue, 1, Ok(capacity(queue, 2))).transfer(
            BOT,
            queue,
            1,
            Ok(receipt("corr-transfer")),
        );
        p.write_context(1, Ok(receipt("corr-write")));
        p.no_analytics();
        p
    }
}

/// A real in-memory ledger and a hand-driven clock shared by every delivery of a test.
pub(crate) struct Harness {
    pub(crate) ledger: Arc<InMemoryLedger>,
    pub(crate) now: Arc<Mutex<DateTime<Utc>>>,
    pub(crate) settings: ServiceSettings,
    /// What the mocked transfer port declares.
    pub(crate) rules: PlatformRules,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with(|_| {})
    }

    pub(crate) fn with(tune: impl FnOnce(&mut ServiceSettings)) -> Self {
        let mut settings = ServiceSettings::new(routing());
        tune(&mut settings);
        let start = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(1_750_000_000);
        Self { ledger: Arc::new(InMemoryLedger::new()), now: Arc::new(Mutex::new(start)), settings, rules: rules() }
    }

    pub(crate) fn clock(&self) -> MockClock {
        let now = Arc::clone(&self.now);
        let mut clock = MockClock::new();
        clock.expect_now().returning(move || *now.lock().expect("not poisoned"));
        clock
    }

    pub(crate) fn service(&self, mut ports: Ports) -> HandoffService {
        ports.transfer.expect_rules().return_const(self.rules.clone());
        HandoffService::new(
            Arc::new(ports.queue),
            Arc::new(ports.transfer),
            Arc::new(ports.analytics),
            Arc::clone(&self.ledger) as Arc<dyn LedgerPort>,
            Arc::new(self.clock()),
            self.settings.clone(),
        )
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("not poisoned")
    }

    pub(crate) fn advance(&self, by: Duration) {
        *self.now.lock().expect("not poisoned") += chrono_duration(by);
    }

    pub(crate) fn deliver(&self, ports: Ports, request: HandoffRequest) -> Result<HandoffOutcome, HandoffError> {
        block_on(self.service(ports).handle(request, None))
    }

    pub(crate) fn tick(&self, ports: Ports) -> TickReport {
        block_on(self.service(ports).run_due(10)).expect("the in-memory ledger works")
    }

    /// The one record of the test conversation.
    pub(crate) fn record(&self) -> HandoffRecord {
        let mut all = block_on(self.ledger.find_by_conversation(conversation_id())).expect("ledger works");
        assert_eq!(all.len(), 1, "expected exactly one record: {all:?}");
        all.remove(0)
    }

    pub(crate) fn outbox(&self) -> Vec<HandoffEvent> {
        let far = self.now() + chrono::Duration::days(365);
        block_on(self.ledger.claim_outbox(far, 100, Duration::from_secs(1)))
            .expect("ledger works")
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    /// A first delivery that ends deferred (primary and fallback full).
    pub(crate) fn defer_one(&self) -> HandoffId {
        let mut ports = Ports::default();
        ports
            .locate(1, Ok(live()))
            .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 0)))
            .capacity(FALLBACK_QUEUE, 1, Ok(capacity(FALLBACK_QUEUE, 0)))
            .no_write()
            .no_transfer();
        match self.deliver(ports, request()) {
            Ok(HandoffOutcome::Deferred { handoff_id, .. }) => handoff_id,
            other => panic!("expected a deferral, got {other:?}"),
        }
    }
}

pub(crate) fn transferred_to(outcome: &Result<HandoffOutcome, HandoffError>) -> (QueueId, bool) {
    match outcome {
        Ok(HandoffOutcome::Transferred { queue_id, replayed, conversation_id: c, .. }) => {
            assert_eq!(*c, conversation_id());
            (*queue_id, *replayed)
        }
        other => panic!("expected a transfer, got {other:?}"),
    }
}

pub(crate) fn unavailable(outcome: &Result<HandoffOutcome, HandoffError>) -> (Option<HandoffId>, Duration) {
    match outcome {
        Err(HandoffError::Unavailable { handoff_id, retry_after }) => (*handoff_id, *retry_after),
        other => panic!("expected 503 unavailable, got {other:?}"),
    }
}

pub(crate) fn assert_not_transferable(outcome: &Result<HandoffOutcome, HandoffError>, needle: &str) {
    match outcome {
        Err(HandoffError::NotTransferable { handoff_id: Some(_), message }) => {
            assert!(message.contains(needle), "{message:?} does not mention {needle:?}");
        }
        other => panic!("expected 422, got {other:?}"),
    }
}

/// An in-memory ledger with chosen faults.
pub(crate) struct FaultyLedger {
    pub(crate) inner: Arc<InMemoryLedger>,
    /// Saves fail unless the record is `TransferPending`: a context write that fails after the
    /// overlapped `TransferPending` save, then a ledger that cannot store the record back
    /// (as after a crash at that moment).
    pub(crate) only_pending_saves: bool,
    /// Marking an outbox entry fails.
    pub(crate) failing_marks: bool,
}

#[async_trait::async_trait]
impl LedgerPort for FaultyLedger {
    async fn begin(
        &self,
        key: &HandoffKey,
        request: &HandoffRequest,
        now: DateTime<Utc>,
        lease: Duration,
        reuse_after: Duration,
        mode: HandoffMode,
    ) -> Result<crate::ports::Begin, LedgerError> {
        self.inner.begin(key, request, now, lease, reuse_after, mode).await
    }
    async fn save(
        &self,
        record: &HandoffRecord,
        hold_until: Option<DateTime<Utc>>,
        events: &[HandoffEvent],
    ) -> Result<(), LedgerError> {
        match record.stage {
            Stage::TransferPending => self.inner.save(record, hold_until, events).await,
            _ if self.only_pending_saves => Err(LedgerError::Unavailable("down".to_owned())),
            _ => self.inner.save(record, hold_until, events).await,
        }
    }
    async fn get(&self, id: HandoffId) -> Result<Option<HandoffRecord>, LedgerError> {
        self.inner.get(id).await
    }
    async fn find_by_conversation(&self, c: ConversationId) -> Result<Vec<HandoffRecord>, LedgerError> {
        self.inner.find_by_conversation(c).await
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HandoffRecord>, LedgerError> {
        self.inner.claim_due(now, limit, lease).await
    }
    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<crate::ports::OutboxEntry>, LedgerError> {
        self.inner.claim_outbox(now, limit, lease).await
    }
    async fn finish_outbox(
        &self,
        id: i64,
        retry_at: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        match self.failing_marks {
            true => Err(LedgerError::Unavailable("down".to_owned())),
            false => self.inner.finish_outbox(id, retry_at, error).await,
        }
    }
    async fn outbox_backlog(&self) -> Result<u64, LedgerError> {
        self.inner.outbox_backlog().await
    }
    async fn stats(&self, since: DateTime<Utc>) -> Result<Vec<crate::ports::StatRow>, LedgerError> {
        self.inner.stats(since).await
    }
    async fn outcomes(&self, since: DateTime<Utc>) -> Result<Vec<crate::OutcomeFacts>, LedgerError> {
        self.inner.outcomes(since).await
    }
    async fn erase_guest(&self, guest: &crate::GuestId) -> Result<u64, LedgerError> {
        self.inner.erase_guest(guest).await
    }
    async fn purge_personal_data(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, LedgerError> {
        self.inner.purge_personal_data(before, limit).await
    }
    async fn ping(&self) -> Result<(), LedgerError> {
        self.inner.ping().await
    }
}

/// Delivery 1: the transfer's outcome is unknown and the read-back fails with `error`.
pub(crate) fn lose_a_transfer_response(
    harness: &Harness,
    read_back: PortError,
) -> Result<HandoffOutcome, HandoffError> {
    let mut ports = Ports::default();
    ports
        .locate(1, Ok(live()))
        .locate(1, Err(read_back))
        .capacity(DEFAULT_QUEUE, 1, Ok(capacity(DEFAULT_QUEUE, 1)))
        .transfer(BOT, DEFAULT_QUEUE, 1, Err(PortError::indeterminate("response timed out", None)));
    ports.write_context(1, Ok(Receipt::default()));
    harness.deliver(ports, request())
}

pub(crate) fn expect_report(observer: &mut MockOutcomeObserver, outcome: &'static str, background: bool) {
    observer
        .expect_observe()
        .withf(move |r| r.outcome == outcome && r.background == background && r.conversation_id == conversation_id())
        .times(1)
        .return_const(());
}

// ---- property: no path transfers without a validated, admitted, allowed request ---------

/// A failure an upstream call may return.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    Transient,
    RateLimited,
    Rejected,
    NotFound,
    InvalidState,
}

impl Fault {
    pub(crate) fn error(self, what: Missing) -> PortError {
        match self {
            Fault::Transient => transient(),
            Fault::RateLimited => PortError::rate_limited(Some(Duration::from_secs(3)), None),
            Fault::Rejected => PortError::rejected(400, "bad.request", None),
            Fault::NotFound => PortError::not_found(what, None),
            Fault::InvalidState => PortError::invalid_state("not connected", None),
        }
    }
}

/// What one transfer call does upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TransferStep {
    Applied,
    Refused(Fault),
    UnknownButApplied,
    UnknownNotApplied,
}

/// The scripted answers, one per call in order; once a script runs out, calls succeed.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) locate: Vec<Option<Fault>>,
    pub(crate) capacity: Vec<Result<(u32, u32), Fault>>,
    pub(crate) idle_when_unscripted: u32,
    pub(crate) write: Vec<Option<Fault>>,
    pub(crate) transfer: Vec<TransferStep>,
}

/// One upstream call, as the fake platform saw it.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    Locate,
    Capacity { queue: QueueId, admitted: bool },
    Write { customer: ParticipantId },
    Transfer { holder: ParticipantId, queue: QueueId, already_in: Option<QueueId> },
}

/// A tiny stateful platform: the conversation moves into a queue when a transfer applies.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) ended: bool,
    pub(crate) held: bool,
    pub(crate) in_queue: Option<QueueId>,
    pub(crate) script: Script,
    pub(crate) admission: AdmissionPolicy,
    pub(crate) calls: Vec<Call>,
}

pub(crate) fn pop<T: Clone>(script: &mut Vec<T>) -> Option<T> {
    (!script.is_empty()).then(|| script.remove(0))
}

impl World {
    pub(crate) fn conversation(&self) -> ConversationSnapshot {
        let alive = !self.ended;
        let mut participants = vec![
            participant(CUSTOMER, true, alive, None),
            participant(BOT, false, alive && self.held && self.in_queue.is_none(), None),
        ];
        if let Some(q) = self.in_queue {
            participants.push(ParticipantView {
                id: pid(ACD),
                is_customer: false,
                is_agent: false,
                active: alive,
                queue: Some(q),
            });
        }
        snapshot(participants, self.in_queue.into_iter().collect())
    }

    pub(crate) fn locate(&mut self) -> Result<ConversationSnapshot, PortError> {
        self.calls.push(Call::Locate);
        match pop(&mut self.script.locate).flatten() {
            Some(fault) => Err(fault.error(Missing::Conversation)),
            None => Ok(self.conversation()),
        }
    }

    pub(crate) fn capacity(&mut self, queue: QueueId) -> Result<CapacitySnapshot, PortError> {
        let step = pop(&mut self.script.capacity).unwrap_or(Ok((self.script.idle_when_unscripted, 0)));
        let result = step.map(|(idle, waiting)| CapacitySnapshot::idle_for_tests(queue, idle, waiting));
        let admitted = matches!(&result, Ok(s) if self.admission.judge(s).admits());
        self.calls.push(Call::Capacity { queue, admitted });
        result.map_err(|fault| fault.error(Missing::Queue))
    }

    pub(crate) fn write(&mut self, customer: ParticipantId) -> Result<Receipt, PortError> {
        self.calls.push(Call::Write { customer });
        match pop(&mut self.script.write).flatten() {
            Some(fault) => Err(fault.error(Missing::Participant)),
            None => Ok(Receipt::default()),
        }
    }

    pub(crate) fn transfer(&mut self, holder: ParticipantId, queue: QueueId) -> Result<Receipt, PortError> {
        self.calls.push(Call::Transfer { holder, queue, already_in: self.in_queue });
        let unknown = || PortError::indeterminate("timed out", None);
        match pop(&mut self.script.transfer).unwrap_or(TransferStep::Applied) {
            TransferStep::Applied => {
                self.in_queue = Some(queue);
                Ok(Receipt::default())
            }
            TransferStep::Refused(fault) => Err(fault.error(Missing::Participant)),
            TransferStep::UnknownButApplied => {
                self.in_queue = Some(queue);
                Err(unknown())
            }
            TransferStep::UnknownNotApplied => Err(unknown()),
        }
    }
}

/// Mocks that answer from the shared world, any number of times.
pub(crate) fn world_ports(world: &Arc<Mutex<World>>) -> Ports {
    let mut p = Ports::default();
    let w = Arc::clone(world);
    p.transfer
        .expect_locate()
        .returning(move |_, hint| w.lock().expect("not poisoned").locate().map(|s| located(&s, hint)));
    let w = Arc::clone(world);
    p.transfer
        .expect_write_context()
        .returning(move |_, c, _| w.lock().expect("not poisoned").write(ParticipantId::from_opaque(*c.id())));
    let w = Arc::clone(world);
    p.transfer.expect_transfer().returning(move |_, h, q, _| {
        w.lock().expect("not poisoned").transfer(ParticipantId::from_opaque(*h.id()), q).map(TransferResult::Done)
    });
    let w = Arc::clone(world);
    p.queue.expect_capacity().returning(move |q, _| w.lock().expect("not poisoned").capacity(q));
    p.analytics.expect_record().never();
    p
}

pub(crate) fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => Just(Fault::Transient),
        2 => Just(Fault::RateLimited),
        1 => Just(Fault::Rejected),
        1 => Just(Fault::NotFound),
        1 => Just(Fault::InvalidState),
    ]
}

pub(crate) fn maybe_fault() -> impl Strategy<Value = Option<Fault>> {
    prop_oneof![2 => Just(None), 1 => fault().prop_map(Some)]
}

prop_compose! {
    pub(crate) fn script()(
        locate in prop::collection::vec(maybe_fault(), 0..6),
        capacity in prop::collection::vec(
            prop_oneof![4 => (0u32..3, 0u32..4).prop_map(Ok), 1 => fault().prop_map(Err)],
            0..6,
        ),
        idle_when_unscripted in 0u32..3,
        write in prop::collection::vec(maybe_fault(), 0..4),
        transfer in prop::collection::vec(
            prop_oneof![
                2 => Just(TransferStep::Applied),
                1 => fault().prop_map(TransferStep::Refused),
                2 => Just(TransferStep::UnknownButApplied),
                2 => Just(TransferStep::UnknownNotApplied),
            ],
            0..4,
        ),
    ) -> Script {
        Script { locate, capacity, idle_when_unscripted, write, transfer }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) request: HandoffRequest,
    pub(crate) routing: RoutingPolicy,
    pub(crate) admission: AdmissionPolicy,
    pub(crate) ended: bool,
    pub(crate) held: bool,
    pub(crate) script: Script,
    pub(crate) gap: Duration,
}

prop_compose! {
    pub(crate) fn scenario()(
        base in crate::testkit::valid_request_with(3),
        participant in prop_oneof![3 => Just(None), 2 => Just(Some(BOT)), 1 => Just(Some(CUSTOMER)), 1 => Just(Some(STRANGER))],
        ask in prop_oneof![
            4 => Just(None),
            1 => prop::sample::select(vec![Some(DEFAULT_QUEUE), Some(RESET_QUEUE), Some(FALLBACK_QUEUE)]),
            1 => Just(Some(UNLISTED_QUEUE)),
        ],
        route_reason in any::<bool>(),
        fallback in any::<bool>(),
        min_idle in 0u32..3,
        model in prop_oneof![Just(crate::CapacityModel::Slots), Just(crate::CapacityModel::Idle)],
        max_waiting in prop::option::of(0u32..3),
        ended in prop::bool::weighted(0.05),
        held in prop::bool::weighted(0.95),
        script in script(),
        gap_secs in prop_oneof![Just(0u64), 1u64..100],
    ) -> Scenario {
        let mut payload = base.to_json();
        payload["conversationId"] = json!(CONVERSATION);
        if let Some(p) = participant { payload["participantId"] = json!(p); }
        if let Some(q) = ask { payload["queueId"] = json!(q); }
        let request = HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("still valid");
        let routes = if route_reason {
            [(request.reason().as_str().to_owned(), qid(RESET_QUEUE))].into_iter().collect()
        } else {
            [("password_reset".to_owned(), qid(RESET_QUEUE))].into_iter().collect()
        };
        let routing = RoutingPolicy::new(qid(DEFAULT_QUEUE), routes, fallback.then(|| qid(FALLBACK_QUEUE)));
        let admission = AdmissionPolicy { model, minimum: min_idle, max_waiting, max_wait: None };
        Scenario { request, routing, admission, ended, held, script, gap: Duration::from_secs(gap_secs) }
    }
}

pub(crate) fn transfers(calls: &[Call]) -> impl Iterator<Item = (usize, ParticipantId, QueueId, Option<QueueId>)> + '_ {
    calls.iter().enumerate().filter_map(|(i, c)| match c {
        Call::Transfer { holder, queue, already_in } => Some((i, *holder, *queue, *already_in)),
        _ => None,
    })
}

pub(crate) fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `transfer` declaring [`rules`] (for services built without [`Harness::service`]).
pub(crate) fn with_rules(mut transfer: MockTransferPort) -> MockTransferPort {
    transfer.expect_rules().return_const(rules());
    transfer
}
