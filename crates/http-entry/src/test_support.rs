//! Test fixtures: a real `HandoffService` over mockall port mocks, the domain's `InMemoryLedger`
//! and a fixed clock, wrapped in the real router; request builders and a response reader.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use handoff_domain::ports::{
    ConversationSnapshot, MockAnalyticsPort, MockClock, MockQueuePort, MockTransferPort, ParticipantView, PortError,
    Receipt, TransferPort,
};
use handoff_domain::{
    AgentCounts, CapacitySnapshot, ConversationId, HandoffService, InMemoryLedger, ParticipantId, QueueFigures,
    QueueId, RoutingPolicy, ServiceSettings,
};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::Value;
use sha2::Sha256;
use tower::ServiceExt;

use crate::{router, AdminAuth, AppState, HttpSettings, MetricsRenderer, ReadinessProbe, WebhookAuth};

pub(crate) const SECRET: &str = "current-webhook-secret";
pub(crate) const OLD_SECRET: &str = "previous-webhook-secret";
pub(crate) const ADMIN_TOKEN: &str = "current-admin-token";
pub(crate) const OLD_ADMIN_TOKEN: &str = "previous-admin-token";
pub(crate) const CONVERSATION: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
pub(crate) const QUEUE: &str = "11111111-2222-4333-8444-555555555555";
pub(crate) const OTHER_QUEUE: &str = "99999999-2222-4333-8444-555555555555";
pub(crate) const CUSTOMER: &str = "c0000000-0000-4000-8000-000000000001";
pub(crate) const BOT: &str = "b0000000-0000-4000-8000-000000000002";
pub(crate) const GUEST_NAME: &str = "Jane Doe";
pub(crate) const GUEST_EMAIL: &str = "jane.doe@example.com";

/// The fixed "now" of every test.
pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 10, 0, 0).single().expect("valid date")
}

pub(crate) fn conversation() -> ConversationId {
    ConversationId::parse(CONVERSATION).expect("valid id")
}

pub(crate) fn queue() -> QueueId {
    QueueId::parse(QUEUE).expect("valid id")
}

/// The webhook payload of CONTRACT §4.1.
pub(crate) fn payload() -> Value {
    serde_json::json!({
        "conversationId": CONVERSATION,
        "guestInfo": { "id": "guest-8842-xyz", "name": GUEST_NAME, "email": GUEST_EMAIL },
        "handoffReason": "complex_billing_dispute",
        "customContext": { "attempted_resolution": "refund_policy_explained", "sentiment_score": "0.32" }
    })
}

pub(crate) fn payload_text() -> String {
    payload().to_string()
}

/// A conversation the bot holds and the customer is in.
pub(crate) fn reachable_conversation() -> ConversationSnapshot {
    let participant = |id: &str, is_customer: bool| ParticipantView {
        id: ParticipantId::parse(id).expect("valid id"),
        is_customer,
        is_agent: false,
        active: true,
        queue: None,
    };
    ConversationSnapshot {
        id: conversation(),
        participants: vec![participant(CUSTOMER, true), participant(BOT, false)],
        transferred_to: Vec::new(),
        correlation_id: Some("corr-locate".to_owned()),
        external_tag: None,
    }
}

/// A conversation nobody is in any more.
pub(crate) fn ended_conversation() -> ConversationSnapshot {
    let mut snapshot = reachable_conversation();
    for p in &mut snapshot.participants {
        p.active = false;
    }
    snapshot
}

/// Every figure known: `idle_agents` idle agents and one more who cannot take work, one message
/// slot each (so `idle_agents` free slots), nobody waiting.
fn capacity(queue: QueueId, idle_agents: u32) -> CapacitySnapshot {
    CapacitySnapshot {
        queue,
        figures: QueueFigures {
            agents: Some(AgentCounts { idle: idle_agents, other: 1, ..AgentCounts::default() }),
            interacting: Some(0),
            alerting: Some(0),
            waiting: Some(0),
        },
        message_capacity: Some(1),
        estimated_wait: None,
    }
}

/// A readiness probe with fixed answers.
#[derive(Debug, Clone)]
pub(crate) struct FixedProbe(pub(crate) Vec<(String, Result<(), String>)>);

#[async_trait]
impl ReadinessProbe for FixedProbe {
    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        self.0.clone()
    }
}

/// Everything a test may set before building the router.
pub(crate) struct World {
    pub(crate) queue: MockQueuePort,
    pub(crate) transfer: MockTransferPort,
    pub(crate) analytics: MockAnalyticsPort,
    pub(crate) ledger: Arc<InMemoryLedger>,
    pub(crate) auth: WebhookAuth,
    pub(crate) admin: AdminAuth,
    pub(crate) settings: HttpSettings,
    pub(crate) readiness: Arc<dyn ReadinessProbe>,
    pub(crate) metrics: Option<MetricsRenderer>,
}

impl World {
    /// Secrets `[SECRET, OLD_SECRET]`, default settings, a ready probe, no metrics; the analytics
    /// port is never called during a delivery (it is the outbox's job).
    pub(crate) fn new() -> Self {
        let mut analytics = MockAnalyticsPort::new();
        analytics.expect_record().times(0);
        Self {
            queue: MockQueuePort::new(),
            transfer: MockTransferPort::new(),
            analytics,
            ledger: Arc::new(InMemoryLedger::new()),
            auth: WebhookAuth::Secrets(vec![SecretString::from(SECRET), SecretString::from(OLD_SECRET)]),
            admin: AdminAuth::WebhookCredentials,
            settings: HttpSettings::default(),
            readiness: Arc::new(FixedProbe(vec![("ledger".to_owned(), Ok(()))])),
            metrics: None,
        }
    }

    /// Proves that nothing upstream is touched.
    pub(crate) fn expecting_no_upstream_call(mut self) -> Self {
        self.queue.expect_capacity().times(0);
        self.transfer.expect_locate().times(0);
        self.transfer.expect_write_context().times(0);
        self.transfer.expect_transfer().times(0);
        self
    }

    /// The queue has `idle_agents` idle agents, however often it is asked.
    pub(crate) fn with_idle_agents(mut self, idle_agents: u32) -> Self {
        self.queue.expect_capacity().returning(move |q, _| Ok(capacity(q, idle_agents)));
        self
    }

    /// The conversation lookup answers `result`, exactly `times` times.
    pub(crate) fn locating(mut self, times: usize, result: Result<ConversationSnapshot, PortError>) -> Self {
        self.transfer.expect_locate().times(times).returning(move |_| result.clone());
        self
    }

    /// Context writes succeed, exactly `times` times.
    pub(crate) fn writing_context(mut self, times: usize) -> Self {
        self.transfer.expect_write_context().times(times).returning(|_, _, _| Ok(Receipt::default()));
        self
    }

    /// The transfer answers `result`, exactly `times` times.
    pub(crate) fn transferring(mut self, times: usize, result: Result<Receipt, PortError>) -> Self {
        self.transfer.expect_transfer().times(times).returning(move |_, _, _| result.clone());
        self
    }

    /// One delivery goes all the way: capacity, lookup, context, transfer (each exactly once
    /// except capacity).
    pub(crate) fn transferring_once(self) -> Self {
        self.with_idle_agents(1)
            .locating(1, Ok(reachable_conversation()))
            .writing_context(1)
            .transferring(1, Ok(Receipt { correlation_id: Some("corr-transfer".to_owned()) }))
    }

    /// Admin routes take `ADMIN_TOKEN` or `OLD_ADMIN_TOKEN` (and no longer the webhook secrets).
    pub(crate) fn with_admin_tokens(mut self) -> Self {
        self.admin = AdminAuth::Tokens(vec![SecretString::from(ADMIN_TOKEN), SecretString::from(OLD_ADMIN_TOKEN)]);
        self
    }

    pub(crate) fn with_settings(mut self, settings: HttpSettings) -> Self {
        self.settings = settings;
        self
    }

    pub(crate) fn app(self) -> Router {
        self.into_app(None)
    }

    /// The router with a hand-written transfer port (timing tests).
    pub(crate) fn app_with_transfer(self, transfer: Arc<dyn TransferPort>) -> Router {
        self.into_app(Some(transfer))
    }

    fn into_app(self, transfer: Option<Arc<dyn TransferPort>>) -> Router {
        router(self.into_state(transfer))
    }

    /// The state the router is built over (tests that mount their own routes).
    pub(crate) fn state(self) -> AppState {
        self.into_state(None)
    }

    fn into_state(self, transfer: Option<Arc<dyn TransferPort>>) -> AppState {
        let World {
            queue: queue_port,
            transfer: mock_transfer,
            analytics,
            ledger,
            auth,
            admin,
            settings,
            readiness,
            metrics,
        } = self;
        let transfer = transfer.unwrap_or_else(|| Arc::new(mock_transfer));
        let mut service_clock = MockClock::new();
        service_clock.expect_now().return_const(now());
        let mut http_clock = MockClock::new();
        http_clock.expect_now().return_const(now());
        let routing = RoutingPolicy::new(queue(), Default::default(), None);
        let service = HandoffService::new(
            Arc::new(queue_port),
            transfer,
            Arc::new(analytics),
            ledger,
            Arc::new(service_clock),
            ServiceSettings::new(routing),
        );
        let mut state = AppState::new(Arc::new(service), Arc::new(handoff_genesys::GenesysIds), auth, readiness)
            .with_admin(admin)
            .with_settings(settings)
            .with_clock(Arc::new(http_clock));
        if let Some(render) = metrics {
            state = state.with_metrics(render);
        }
        state
    }
}

/// A transfer port whose lookup waits until released (and then fails transiently).
#[derive(Debug, Default)]
pub(crate) struct StalledTransfer {
    pub(crate) entered: tokio::sync::Notify,
    pub(crate) release: tokio::sync::Notify,
}

#[async_trait]
impl TransferPort for StalledTransfer {
    async fn locate(&self, _conversation: ConversationId) -> Result<ConversationSnapshot, PortError> {
        self.entered.notify_one();
        self.release.notified().await;
        Err(PortError::Transient { detail: "released".to_owned(), correlation_id: None })
    }

    async fn write_context(
        &self,
        _conversation: ConversationId,
        _customer: ParticipantId,
        _attributes: &handoff_domain::AttributeSet,
    ) -> Result<Receipt, PortError> {
        Err(PortError::Transient { detail: "not expected".to_owned(), correlation_id: None })
    }

    async fn transfer(
        &self,
        _conversation: ConversationId,
        _holder: ParticipantId,
        _queue: QueueId,
    ) -> Result<Receipt, PortError> {
        Err(PortError::Transient { detail: "not expected".to_owned(), correlation_id: None })
    }
}

/// `POST /webhooks/bot-handoff` with `body`, JSON content type and `Bearer SECRET`.
pub(crate) fn webhook(body: &str) -> Request<Body> {
    Request::post("/webhooks/bot-handoff")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
        .body(Body::from(body.to_owned()))
        .expect("valid request")
}

/// `GET path` with `Bearer SECRET`.
pub(crate) fn authorized_get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
        .body(Body::empty())
        .expect("valid request")
}

/// `GET path` with `Authorization: value`.
pub(crate) fn get_with(path: &str, authorization: &str) -> Request<Body> {
    Request::get(path).header(header::AUTHORIZATION, authorization).body(Body::empty()).expect("valid request")
}

/// `Basic base64(user:password)`.
pub(crate) fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// `sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub(crate) fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body));
        })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request through `app`.
pub(crate) async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("the router is infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body can be read").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body }
}
