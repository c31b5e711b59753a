//! The real `GenesysClient` against wiremock on 127.0.0.1: request shapes, error mapping, retries,
//! timeouts, tokens and the capacity cache.
//!
//! # Paused time and real sockets
//! Timing tests run with `start_paused = true`. tokio then auto-advances the clock to the next
//! timer whenever the runtime is idle, and a runtime waiting for a real socket (wiremock runs on
//! its own thread) is idle: the clock would jump to the attempt timeout while a fast answer is on
//! its way, and the test would fail at random. So those tests hold auto-advance off with
//! [`HeldClock`] (tokio does not auto-advance while a `spawn_blocking` task runs) and move time
//! themselves with `tokio::time::advance`, only at points where the operation provably waits on a
//! timer: after wiremock has the request (an attempt timeout is pending) or after the client
//! counted a retry (it sleeps in backoff). Virtual time then moves only by what the test
//! advances, so durations can be asserted exactly. Waiting for a socket event is a bounded loop
//! of `yield_now` (with a generous real-time cap), not a sleep.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use handoff_domain::ports::{
    AnalyticsPort, ConversationSnapshot, HandoffEvent, PortError, QueuePort, Receipt, TransferPort,
};
use handoff_domain::{
    AttributeSet, ConversationId, HandoffId, HandoffReason, HandoffRequest, ParticipantId, QueueFigures, QueueId,
};
use secrecy::SecretString;
use serde_json::json;
use tokio::time::Instant;
use url::Url;
use wiremock::matchers::{basic_auth, bearer_token, body_json, body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::retry::BACKOFF_CAP;
use crate::{
    Endpoint, GenesysClient, GenesysConfig, GenesysIds, MessageCapacitySource, Permission, PermissionStatus,
    StatusClass,
};

const CLIENT_ID: &str = "handoff-client";
const SECRET: &str = "handoff-secret";
const CONV: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
const CUSTOMER: &str = "00000000-0000-0000-0000-0000000000c1";
const FLOW: &str = "00000000-0000-0000-0000-0000000000f1";
const QUEUE: &str = "00000000-0000-0000-0000-0000000000a1";

fn conv() -> ConversationId {
    ConversationId::parse(CONV).unwrap()
}
fn customer() -> ParticipantId {
    ParticipantId::parse(CUSTOMER).unwrap()
}
fn flow() -> ParticipantId {
    ParticipantId::parse(FLOW).unwrap()
}
fn queue() -> QueueId {
    QueueId::parse(QUEUE).unwrap()
}

fn conversation_path() -> String {
    format!("/api/v2/conversations/messages/{CONV}")
}
fn attributes_path() -> String {
    format!("/api/v2/conversations/messages/{CONV}/participants/{CUSTOMER}/attributes")
}
fn replace_path() -> String {
    format!("/api/v2/conversations/messages/{CONV}/participants/{FLOW}/replace")
}
const OBSERVATIONS_PATH: &str = "/api/v2/analytics/queues/observations/query";

fn config(api: &str, login: &str) -> GenesysConfig {
    GenesysConfig::new(CLIENT_ID, SecretString::from(SECRET), Url::parse(api).unwrap(), Url::parse(login).unwrap())
}

/// A client whose API and login hosts are both `server`.
fn client_for(server: &MockServer, tune: impl FnOnce(&mut GenesysConfig)) -> Arc<GenesysClient> {
    let mut c = config(&server.uri(), &server.uri());
    tune(&mut c);
    Arc::new(GenesysClient::new(c).unwrap())
}

fn token_answer(token: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({ "access_token": token, "token_type": "bearer", "expires_in": expires_in }))
}

/// The token endpoint: Basic client credentials and the form body, answering `tok-1` for a day.
async fn mount_token(server: &MockServer, expected_calls: u64) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(basic_auth(CLIENT_ID, SECRET))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("grant_type=client_credentials"))
        .respond_with(token_answer("tok-1", 86_400))
        .expect(expected_calls)
        .mount(server)
        .await;
}

fn conversation_json() -> serde_json::Value {
    json!({
        "id": CONV,
        "participants": [
            { "id": CUSTOMER, "purpose": "customer", "state": "connected", "name": "Jane Doe" },
            { "id": FLOW, "purpose": "workflow", "state": "connected" }
        ],
        "recentTransfers": []
    })
}

fn genesys_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("inin-correlation-id", "corr-err").set_body_json(json!({
        "message": "Jane Doe's conversation: something upstream said", "code": code, "status": status,
        "contextId": "ctx-body", "details": [], "errors": []
    }))
}

async fn received(server: &MockServer, wanted_path: &str) -> usize {
    server.received_requests().await.unwrap_or_default().iter().filter(|r| r.url.path() == wanted_path).count()
}

/// Holds tokio's auto-advance off while alive (see the module docs).
struct HeldClock(Option<std::sync::mpsc::Sender<()>>);

impl HeldClock {
    fn hold() -> Self {
        let (release, released) = std::sync::mpsc::channel::<()>();
        // Dropping the sender ends the blocking task, which lets auto-advance resume.
        drop(tokio::task::spawn_blocking(move || {
            let _ = released.recv();
        }));
        Self(Some(release))
    }
}

impl Drop for HeldClock {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// Lets the runtime work (socket events included) until `condition` holds; bounded by real time.
async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !condition().await {
        assert!(started.elapsed() < Duration::from_secs(20), "gave up waiting for {what}");
        // Give the CPU to wiremock's thread too, then let this runtime poll its sockets.
        std::thread::yield_now();
        tokio::task::yield_now().await;
    }
}

async fn until_retries(client: &GenesysClient, n: u64) {
    until(&format!("{n} retries"), move || async move { client.stats().retries >= n }).await;
}

async fn until_received(server: &MockServer, wanted_path: &str, n: usize) {
    until(&format!("{n} requests to {wanted_path}"), move || async move { received(server, wanted_path).await >= n })
        .await;
}

/// Awaits a spawned operation, failing (not hanging) if it does not finish: under a held clock a
/// wrong wait would otherwise block forever.
async fn finish<T>(op: tokio::task::JoinHandle<T>) -> T {
    until("the operation to finish", || {
        let done = op.is_finished();
        async move { done }
    })
    .await;
    op.await.unwrap()
}

/// Runs `operation` on its own task, bounded as in [`finish`].
async fn bounded<T: Send + 'static>(operation: impl Future<Output = T> + Send + 'static) -> T {
    finish(tokio::spawn(operation)).await
}

fn locate(
    client: &Arc<GenesysClient>,
) -> impl Future<Output = Result<ConversationSnapshot, PortError>> + Send + 'static {
    let client = Arc::clone(client);
    async move { client.locate(conv()).await }
}

fn transfer(client: &Arc<GenesysClient>) -> impl Future<Output = Result<Receipt, PortError>> + Send + 'static {
    let client = Arc::clone(client);
    async move { client.transfer(conv(), flow(), queue()).await }
}

// ---- 2xx: exact request shapes --------------------------------------------------------------

#[tokio::test]
async fn locate_sends_an_authorized_get_and_maps_the_conversation() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .and(bearer_token("tok-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("inin-correlation-id", "corr-1")
                .set_body_json(conversation_json()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let snapshot = client.locate(conv()).await.unwrap();

    // Assert
    assert_eq!(snapshot.id, conv());
    assert_eq!(snapshot.customer().map(|c| c.id), Some(customer()));
    assert_eq!(snapshot.holders().map(|p| p.id).collect::<Vec<_>>(), vec![flow()]);
    assert_eq!(snapshot.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(client.token_fetches(), 1);
}

#[tokio::test]
async fn write_context_patches_the_customer_participant_attributes() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    let request = HandoffRequest::from_json(
        &json!({
            "conversationId": CONV,
            "guestInfo": { "id": "guest-8842-xyz", "name": "Jane Doe", "email": "jane.doe@example.com" },
            "handoffReason": "complex_billing_dispute",
            "customContext": { "sentiment_score": "0.32" }
        }),
        &GenesysIds,
    )
    .unwrap();
    let handoff = HandoffId::parse("00000000-0000-0000-0000-0000000000b1").unwrap();
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let attributes = AttributeSet::for_handoff(&request, handoff, at).unwrap();
    Mock::given(method("PATCH"))
        .and(path(attributes_path()))
        .and(bearer_token("tok-1"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({ "attributes": {
            "bot_handoff_at": "2026-03-01T12:00:00.000Z",
            "bot_handoff_id": "00000000-0000-0000-0000-0000000000b1",
            "bot_handoff_reason": "complex_billing_dispute",
            "guest_email": "jane.doe@example.com",
            "guest_id": "guest-8842-xyz",
            "guest_name": "Jane Doe",
            "sentiment_score": "0.32"
        }})))
        .respond_with(ResponseTemplate::new(202).insert_header("inin-correlation-id", "corr-patch"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let receipt = client.write_context(conv(), customer(), &attributes).await.unwrap();

    // Assert
    assert_eq!(receipt.correlation_id.as_deref(), Some("corr-patch"));
}

#[tokio::test]
async fn transfer_posts_an_unattended_replace_of_the_holder_to_the_queue() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(replace_path()))
        .and(bearer_token("tok-1"))
        .and(body_json(json!({ "queueId": QUEUE, "transferType": "Unattended" })))
        .respond_with(ResponseTemplate::new(202).insert_header("inin-correlation-id", "corr-replace"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let receipt = client.transfer(conv(), flow(), queue()).await.unwrap();

    // Assert
    assert_eq!(receipt.correlation_id.as_deref(), Some("corr-replace"));
}

#[tokio::test]
async fn record_puts_the_bot_handoff_external_tag() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("PUT"))
        .and(path(format!("/api/v2/conversations/{CONV}/tags")))
        .and(bearer_token("tok-1"))
        .and(body_json(json!({ "externalTag": "bot-handoff:complex_billing_dispute" })))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});
    let event = HandoffEvent {
        handoff_id: HandoffId::random(),
        conversation_id: conv(),
        reason: HandoffReason::parse("complex_billing_dispute").unwrap(),
        queue_id: queue(),
        at: Utc::now(),
    };

    // Act
    let result = client.record(&event).await;

    // Assert
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn capacity_reads_idle_on_queue_waiting_and_the_message_estimated_wait() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(OBSERVATIONS_PATH))
        .and(bearer_token("tok-1"))
        .and(body_json(json!({
            "filter": { "type": "and", "predicates": [
                { "type": "dimension", "dimension": "queueId", "operator": "matches", "value": QUEUE }
            ]},
            "metrics": ["oOnQueueUsers", "oInteracting", "oAlerting", "oWaiting"]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "results": [
            { "group": { "queueId": QUEUE, "mediaType": "message" },
              "data": [ { "metric": "oWaiting", "stats": { "count": 3 } },
                        { "metric": "oInteracting", "stats": { "count": 6 } },
                        { "metric": "oAlerting", "stats": { "count": 1 } } ] },
            { "group": { "queueId": QUEUE },
              "data": [ { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": 2 } },
                        { "metric": "oOnQueueUsers", "qualifier": "INTERACTING", "stats": { "count": 5 } } ] }
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/routing/utilization"))
        .and(bearer_token("tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "utilization": {
            "call": { "maximumCapacity": 1, "interruptableMediaTypes": [], "includeNonAcd": false },
            "message": { "maximumCapacity": 4, "interruptableMediaTypes": [], "includeNonAcd": false }
        }})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/routing/queues/{QUEUE}/mediatypes/message/estimatedwaittime")))
        .and(bearer_token("tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "results": [ { "intent": "MESSAGE", "formula": "BEST", "estimatedWaitTimeSeconds": 42 } ] }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let snapshot = client.capacity(queue(), true).await.unwrap();

    // Assert
    assert_eq!(snapshot.queue, queue());
    let agents = snapshot.figures.agents.unwrap();
    assert_eq!((agents.idle, agents.available(), snapshot.figures.waiting), (2, 7, Some(3)));
    assert_eq!((snapshot.figures.interacting, snapshot.figures.alerting), (Some(6), Some(1)));
    assert_eq!(snapshot.message_capacity, Some(4));
    assert_eq!(snapshot.free_slots(), handoff_domain::FreeSlots::Exactly(7 * 4 - 6 - 1 - 3));
    assert_eq!(snapshot.estimated_wait, Some(Duration::from_secs(42)));
    assert_eq!(client.stats().capacity_unknown_warnings, 0, "every figure was known");
}

#[tokio::test]
async fn capacity_without_the_estimated_wait_never_asks_for_it_and_a_refused_one_is_unknown() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(OBSERVATIONS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "results": [] })))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/routing/queues/{QUEUE}/mediatypes/message/estimatedwaittime")))
        .respond_with(genesys_error(400, "bad.request"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |c| {
        c.capacity_ttl = Duration::ZERO;
        c.message_capacity = MessageCapacitySource::Fixed(2);
    });

    // Act
    let without = client.capacity(queue(), false).await.unwrap();
    let refused = client.capacity(queue(), true).await.unwrap();

    // Assert: an unknown queue (no result groups) reads as unknown figures, never zero.
    assert_eq!(without.figures, QueueFigures::UNKNOWN);
    assert_eq!(without.message_capacity, Some(2));
    assert_eq!(without.estimated_wait, None);
    assert_eq!(refused.estimated_wait, None);
}

#[tokio::test]
async fn get_queue_and_permission_probes_read_what_the_preflight_needs() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/routing/queues/{QUEUE}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "id": QUEUE, "name": "Support", "memberCount": 4, "mediaSettings": { "message": {} } }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let nil = uuid::Uuid::nil();
    Mock::given(method("POST"))
        .and(path(format!("/api/v2/conversations/messages/{nil}/participants/{nil}/replace")))
        .respond_with(genesys_error(403, "missing.any.permissions"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("/api/v2/conversations/{nil}/tags")))
        .respond_with(genesys_error(404, "not.found"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/routing/utilization"))
        .respond_with(genesys_error(403, "missing.permissions"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let info = client.get_queue(queue()).await.unwrap();
    let transfer = client.probe_permission(Permission::BlindTransfer).await.unwrap();
    let tags = client.probe_permission(Permission::ExternalTagEdit).await.unwrap();
    let utilization = client.probe_permission(Permission::UtilizationView).await.unwrap();

    // Assert
    assert_eq!(info.name, "Support");
    assert!(info.accepts_messages);
    assert_eq!(transfer, PermissionStatus::Missing { code: "missing.any.permissions".into() });
    assert_eq!(tags, PermissionStatus::Present);
    assert_eq!(utilization, PermissionStatus::Missing { code: "missing.permissions".into() });
}

// ---- 4xx mapping ----------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_conversation_is_not_found_with_the_correlation_id() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(genesys_error(404, "not.found"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let error = client.locate(conv()).await.unwrap_err();

    // Assert
    assert_eq!(error, PortError::NotFound { what: "conversation".into(), correlation_id: Some("corr-err".into()) });
}

#[tokio::test]
async fn an_unknown_transfer_queue_is_rejected_with_its_code_and_no_upstream_text() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(replace_path()))
        .respond_with(
            // No correlation header: the body's contextId is used.
            ResponseTemplate::new(400).set_body_json(json!({
                "message": "The transfer destination queue was not found.", "code": "conversations.error.queue.not.found",
                "status": 400, "contextId": "ctx-body"
            })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let error = client.transfer(conv(), flow(), queue()).await.unwrap_err();

    // Assert
    assert_eq!(
        error,
        PortError::Rejected {
            status: 400,
            code: "conversations.error.queue.not.found".into(),
            correlation_id: Some("ctx-body".into())
        }
    );
    assert!(!error.to_string().contains("destination queue was not found"));
}

#[tokio::test]
async fn a_holder_that_is_not_connected_is_an_invalid_state() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(replace_path()))
        .respond_with(genesys_error(400, "conversations.error.transfer.not.connected"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(attributes_path()))
        .respond_with(genesys_error(403, "conversation.error.forbidden.not.active.participant"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let transfer = client.transfer(conv(), flow(), queue()).await.unwrap_err();
    let patch = client.write_context(conv(), customer(), &AttributeSet::default()).await.unwrap_err();

    // Assert
    assert!(matches!(transfer, PortError::InvalidState { .. }), "{transfer:?}");
    assert!(matches!(patch, PortError::InvalidState { .. }), "{patch:?}");
    assert_eq!(transfer.correlation_id(), Some("corr-err"));
}

#[tokio::test]
async fn a_missing_permission_is_rejected_and_not_retried() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(replace_path()))
        .respond_with(genesys_error(403, "missing.permissions"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let error = client.transfer(conv(), flow(), queue()).await.unwrap_err();

    // Assert
    assert_eq!(
        error,
        PortError::Rejected {
            status: 403,
            code: "missing.permissions".into(),
            correlation_id: Some("corr-err".into())
        }
    );
    assert_eq!(client.stats().retries, 0);
}

// ---- 5xx, 429, timeouts, connection errors (paused, held clock) -----------------------------

#[tokio::test(start_paused = true)]
async fn a_read_is_retried_after_5xx_until_it_succeeds() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(conversation_json()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |c| c.max_attempts = 3);
    let _clock = HeldClock::hold();

    // Act
    let op = tokio::spawn(locate(&client));
    until_retries(&client, 1).await;
    tokio::time::advance(BACKOFF_CAP).await;
    until_retries(&client, 2).await;
    tokio::time::advance(BACKOFF_CAP).await;
    let result = finish(op).await;

    // Assert
    assert!(result.is_ok(), "{result:?}");
    let stats = client.stats();
    assert_eq!(stats.count(Endpoint::ConversationGet, StatusClass::ServerError), 2);
    assert_eq!(stats.count(Endpoint::ConversationGet, StatusClass::Success), 1);
}

#[tokio::test(start_paused = true)]
async fn a_transfer_answered_5xx_is_indeterminate_and_not_repeated() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(replace_path()))
        .respond_with(genesys_error(502, "bad.gateway"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});
    let _clock = HeldClock::hold();

    // Act
    let error = bounded(transfer(&client)).await.unwrap_err();

    // Assert
    assert!(matches!(error, PortError::Indeterminate { .. }), "{error:?}");
    assert_eq!(error.correlation_id(), Some("corr-err"));
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn a_429_within_the_budget_waits_exactly_retry_after_then_succeeds() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(replace_path()))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(replace_path()))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});
    let _clock = HeldClock::hold();
    let started = Instant::now();

    // Act
    let op = tokio::spawn(transfer(&client));
    until_retries(&client, 1).await;
    tokio::time::advance(Duration::from_secs(3) - Duration::from_millis(1)).await;
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    let early = (op.is_finished(), received(&server, &replace_path()).await);
    tokio::time::advance(Duration::from_millis(1)).await;
    let result = finish(op).await;

    // Assert
    assert_eq!(early, (false, 1), "the retry went out before Retry-After elapsed");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(Instant::now() - started, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_429_beyond_the_budget_is_rate_limited_at_once_without_a_second_call() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .insert_header("inin-correlation-id", "corr-429"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});
    let _clock = HeldClock::hold();
    let started = Instant::now();

    // Act
    let error = bounded(locate(&client)).await.unwrap_err();

    // Assert
    assert_eq!(
        error,
        PortError::RateLimited { retry_after: Some(Duration::from_secs(30)), correlation_id: Some("corr-429".into()) }
    );
    assert_eq!(Instant::now(), started, "no time was spent waiting");
}

#[tokio::test(start_paused = true)]
async fn a_read_that_times_out_every_attempt_is_retried_then_transient() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(conversation_json()).set_delay(Duration::from_secs(60)))
        .expect(3)
        .mount(&server)
        .await;
    // The attempt timeout (3 s) is longer than the largest backoff (2 s): when the jitter is
    // near zero the next attempt may already be in flight as the test advances past the backoff,
    // and that advance must not reach its timeout before wiremock has seen its request.
    let client = client_for(&server, |c| {
        c.attempt_timeout = Duration::from_secs(3);
        c.total_budget = Duration::from_secs(30);
        c.max_attempts = 3;
    });
    let _clock = HeldClock::hold();
    let started = Instant::now();

    // Act: each attempt waits on its timeout while wiremock holds the answer.
    let op = tokio::spawn(locate(&client));
    for attempt in 1..=3u64 {
        until_received(&server, &conversation_path(), usize::try_from(attempt).unwrap()).await;
        tokio::time::advance(Duration::from_secs(3)).await;
        if attempt < 3 {
            until_retries(&client, attempt).await;
            tokio::time::advance(BACKOFF_CAP).await;
        }
    }
    let error = finish(op).await.unwrap_err();

    // Assert
    assert!(matches!(error, PortError::Transient { .. }), "{error:?}");
    assert_eq!(client.stats().attempts(Endpoint::ConversationGet), 3);
    assert!(Instant::now() - started <= Duration::from_secs(13), "three timeouts and two backoffs at most");
}

#[tokio::test(start_paused = true)]
async fn the_total_budget_ends_retries_before_the_attempts_run_out() {
    // Arrange: a 5 s budget, 3 s attempts, ten attempts allowed.
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(conversation_json()).set_delay(Duration::from_secs(60)))
        .expect(2)
        .mount(&server)
        .await;
    let client = client_for(&server, |c| {
        c.attempt_timeout = Duration::from_secs(3);
        c.total_budget = Duration::from_secs(5);
        c.max_attempts = 10;
    });
    let _clock = HeldClock::hold();
    let started = Instant::now();

    // Act: attempt 1 times out at 3 s; after a backoff of at most 100 ms, attempt 2 gets only
    // what is left of the budget and times out at 5 s; no time is left for a third.
    let op = tokio::spawn(locate(&client));
    until_received(&server, &conversation_path(), 1).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    until_retries(&client, 1).await;
    tokio::time::advance(Duration::from_millis(100)).await;
    until_received(&server, &conversation_path(), 2).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let error = finish(op).await.unwrap_err();

    // Assert
    assert!(matches!(error, PortError::Transient { .. }), "{error:?}");
    assert_eq!(client.stats().retries, 1);
    assert!(Instant::now() - started <= Duration::from_millis(5100));
}

#[tokio::test(start_paused = true)]
async fn a_transfer_that_times_out_is_indeterminate_after_exactly_one_call() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(replace_path()))
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(60)))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |c| c.attempt_timeout = Duration::from_secs(1));
    let _clock = HeldClock::hold();

    // Act
    let op = tokio::spawn(transfer(&client));
    until_received(&server, &replace_path(), 1).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let error = finish(op).await.unwrap_err();

    // Assert
    assert!(matches!(error, PortError::Indeterminate { .. }), "{error:?}");
    assert_eq!(client.stats().retries, 0);
    assert_eq!(received(&server, &replace_path()).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_on_the_transfer_is_retried_then_transient() {
    // Arrange: the login host answers, the API host refuses connections (a closed port).
    let login = MockServer::start().await;
    mount_token(&login, 1).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut c = config(&api, &login.uri());
    c.max_attempts = 3;
    let client = Arc::new(GenesysClient::new(c).unwrap());
    let _clock = HeldClock::hold();

    // Act
    let op = tokio::spawn(transfer(&client));
    until_retries(&client, 1).await;
    tokio::time::advance(BACKOFF_CAP).await;
    until_retries(&client, 2).await;
    tokio::time::advance(BACKOFF_CAP).await;
    let error = finish(op).await.unwrap_err();

    // Assert: retried because it surely did not happen; reported as Transient, not Indeterminate.
    assert!(matches!(error, PortError::Transient { .. }), "{error:?}");
    assert_eq!(client.stats().count(Endpoint::Replace, StatusClass::TransportError), 3);
}

// ---- tokens ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_401_mid_run_refreshes_the_token_once_and_retries_once() {
    // Arrange
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_answer("tok-1", 86_400))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_answer("tok-2", 86_400))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .and(bearer_token("tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(conversation_json()))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .and(bearer_token("tok-1"))
        .respond_with(genesys_error(401, "bad.credentials"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .and(bearer_token("tok-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(conversation_json()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});
    client.locate(conv()).await.unwrap();

    // Act: the token is revoked upstream between two lookups.
    let result = client.locate(conv()).await;

    // Assert
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(client.token_fetches(), 2);
    assert_eq!(client.stats().token_invalidations, 1);
}

#[tokio::test]
async fn a_401_twice_is_rejected_after_a_single_refresh() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 2).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(genesys_error(401, "bad.credentials"))
        .expect(2)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let error = client.locate(conv()).await.unwrap_err();

    // Assert
    assert!(matches!(error, PortError::Rejected { status: 401, .. }), "{error:?}");
}

#[tokio::test]
async fn bad_client_credentials_are_rejected_after_one_token_call() {
    // Arrange
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({ "error": "invalid_client", "description": "client not found", "error_description": "client not found" }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let error = client.locate(conv()).await.unwrap_err();

    // Assert
    assert_eq!(error, PortError::Rejected { status: 401, code: "invalid_client".into(), correlation_id: None });
    assert_eq!(client.token_fetches(), 1);
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn a_400_invalid_client_from_login_is_bad_credentials() {
    // Arrange
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({ "error": "invalid_client" })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});

    // Act
    let error = client.obtain_token().await.unwrap_err();

    // Assert
    assert_eq!(error, crate::GenesysError::BadCredentials);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_cold_lookups_fetch_exactly_one_token() {
    // Arrange: real time on four workers; generous limits so a loaded machine cannot time out.
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .and(bearer_token("tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(conversation_json()))
        .expect(1000)
        .mount(&server)
        .await;
    let client = client_for(&server, |c| {
        c.attempt_timeout = Duration::from_secs(30);
        c.total_budget = Duration::from_secs(60);
    });

    // Act
    let lookups: Vec<_> = (0..1000)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.locate(conv()).await })
        })
        .collect();
    let mut failures = 0;
    for lookup in lookups {
        if lookup.await.unwrap().is_err() {
            failures += 1;
        }
    }

    // Assert
    assert_eq!(failures, 0);
    assert_eq!(client.token_fetches(), 1);
    // The mock's `expect(1000)` is checked here, asynchronously and bounded. Dropping the server
    // would check it again through `futures::executor::block_on` on this runtime thread, which was
    // once seen spinning for minutes after this burst of 1000 connections (wiremock 0.6.5, tokio
    // 1.54): the server is leaked instead (its thread ends with the test process).
    let verified = tokio::time::timeout(Duration::from_secs(60), server.verify()).await;
    assert!(verified.is_ok(), "the mock server's verification did not finish");
    std::mem::forget(server);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_capacity_checks_for_one_queue_cost_one_observation_query() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("POST"))
        .and(path(OBSERVATIONS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "results": [
            { "group": { "queueId": QUEUE }, "data": [ { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": 4 } } ] }
        ]})))
        .expect(2)
        .mount(&server)
        .await;
    let client = client_for(&server, |c| c.capacity_ttl = Duration::from_secs(1));
    let _clock = HeldClock::hold();

    // Act
    let checks: Vec<_> = (0..1000)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.capacity(queue(), false).await })
        })
        .collect();
    let mut idle = Vec::with_capacity(1000);
    for check in checks {
        idle.push(finish(check).await.unwrap().figures.agents.unwrap().idle);
    }
    let burst_queries = received(&server, OBSERVATIONS_PATH).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let client2 = Arc::clone(&client);
    bounded(async move { client2.capacity(queue(), false).await }).await.unwrap();

    // Assert
    assert_eq!(burst_queries, 1);
    assert!(idle.iter().all(|&n| n == 4));
    assert_eq!(received(&server, OBSERVATIONS_PATH).await, 2, "an expired snapshot is fetched again");
}

#[tokio::test(start_paused = true)]
async fn the_token_is_refreshed_60_seconds_before_it_expires() {
    // Arrange
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_answer("tok-1", 3600))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_answer("tok-2", 3600))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .and(bearer_token("tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(conversation_json()))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .and(bearer_token("tok-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(conversation_json()))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});
    let _clock = HeldClock::hold();

    // Act
    bounded(locate(&client)).await.unwrap();
    tokio::time::advance(Duration::from_secs(3600 - 61)).await;
    bounded(locate(&client)).await.unwrap();
    let before_refresh_point = client.token_fetches();
    tokio::time::advance(Duration::from_secs(2)).await;
    bounded(locate(&client)).await.unwrap();

    // Assert
    assert_eq!(before_refresh_point, 1);
    assert_eq!(client.token_fetches(), 2);
}

// ---- rate-limit awareness -------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_headers_are_remembered_and_a_low_allowance_is_reported() {
    // Arrange
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(conversation_path()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("inin-ratelimit-allowed", "300")
                .insert_header("inin-ratelimit-count", "295")
                .insert_header("inin-ratelimit-reset", "40")
                .set_body_json(conversation_json()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server, |_| {});
    assert!(!client.allowance_low());

    // Act
    client.locate(conv()).await.unwrap();

    // Assert
    let snapshot = client.rate_limit().unwrap();
    assert_eq!((snapshot.allowed, snapshot.count, snapshot.remaining()), (300, 295, 5));
    assert!(client.allowance_low());
}
