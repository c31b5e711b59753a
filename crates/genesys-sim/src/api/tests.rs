//! The Genesys endpoints, driven over loopback HTTP with reqwest against a spawned simulator.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    spawn, ConversationIds, ConversationKind, ConversationSpec, Endpoint, Fault, FaultKind, SimConfig, SimHandle,
    BILLING_QUEUE, EMPTY_QUEUE, OVERFLOW_QUEUE, SUPPORT_QUEUE,
};

struct TestSim {
    handle: SimHandle,
    client: Client,
    token: String,
}

async fn start(config: SimConfig) -> TestSim {
    let handle = spawn(config).await.expect("simulator starts");
    let client = Client::new();
    let response = request_token(&client, &handle, "sim-client", "sim-secret", "client_credentials").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("token json");
    let token = body["access_token"].as_str().expect("access_token").to_owned();
    TestSim { handle, client, token }
}

async fn request_token(client: &Client, handle: &SimHandle, id: &str, secret: &str, grant: &str) -> Response {
    client
        .post(format!("{}/oauth/token", handle.base_url()))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type={grant}"))
        .send()
        .await
        .expect("token call answered")
}

impl TestSim {
    fn sim(&self) -> &crate::Sim {
        self.handle.sim()
    }

    fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.handle.base_url())).bearer_auth(&self.token)
    }

    async fn get(&self, path: &str) -> Response {
        self.api(Method::GET, path).send().await.expect("answered")
    }

    async fn send_json(&self, method: Method, path: &str, body: Value) -> Response {
        self.api(method, path).json(&body).send().await.expect("answered")
    }

    async fn replace(&self, ids: &ConversationIds, participant: Uuid, queue: Uuid) -> Response {
        let body = json!({ "queueId": queue, "transferType": "Unattended" });
        self.send_json(Method::POST, &replace_path(ids.conversation_id, participant), body).await
    }
}

fn conversation_path(id: Uuid) -> String {
    format!("/api/v2/conversations/messages/{id}")
}

fn attributes_path(cid: Uuid, pid: Uuid) -> String {
    format!("/api/v2/conversations/messages/{cid}/participants/{pid}/attributes")
}

fn replace_path(cid: Uuid, pid: Uuid) -> String {
    format!("/api/v2/conversations/messages/{cid}/participants/{pid}/replace")
}

fn bot(t: &TestSim) -> ConversationIds {
    t.sim().create_conversation(ConversationSpec::new(ConversationKind::Bot))
}

fn holder(ids: &ConversationIds) -> Uuid {
    ids.holder_id.expect("conversation has a holder")
}

async fn error_code(response: Response) -> String {
    let body: Value = response.json().await.expect("error json");
    body["code"].as_str().unwrap_or_default().to_owned()
}

fn participant<'a>(conversation: &'a Value, purpose: &str) -> Option<&'a Value> {
    conversation["participants"].as_array()?.iter().find(|p| p["purpose"] == purpose)
}

// --- token ---

#[tokio::test]
async fn a_token_is_issued_for_good_client_credentials() {
    // Arrange
    let handle = spawn(SimConfig::default()).await.expect("starts");
    let client = Client::new();

    // Act
    let response = request_token(&client, &handle, "sim-client", "sim-secret", "client_credentials").await;

    // Assert
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("inin-correlation-id"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_400);
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 32));
    assert_eq!(handle.sim().token_calls(), 1);
}

#[tokio::test]
async fn bad_client_credentials_get_invalid_client() {
    // Arrange
    let handle = spawn(SimConfig::default()).await.expect("starts");
    let client = Client::new();

    // Act
    let response = request_token(&client, &handle, "sim-client", "wrong", "client_credentials").await;

    // Assert
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"].is_string());
    assert!(body["description"].is_string());
    assert_eq!(handle.sim().calls()[0].status, 401);
}

#[tokio::test]
async fn a_grant_other_than_client_credentials_is_unsupported() {
    // Arrange
    let handle = spawn(SimConfig::default()).await.expect("starts");
    let client = Client::new();

    // Act
    let response = request_token(&client, &handle, "sim-client", "sim-secret", "password").await;

    // Assert
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_rejected_with_bad_credentials() {
    // Arrange
    let t = start(SimConfig { token_ttl: Duration::from_secs(60), ..SimConfig::default() }).await;
    assert_eq!(t.get(&conversation_path(Uuid::new_v4())).await.status(), 200);

    // Act
    tokio::time::advance(Duration::from_secs(61)).await;
    let response = t.get(&conversation_path(Uuid::new_v4())).await;

    // Assert
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "bad.credentials");
}

#[tokio::test]
async fn a_revoked_or_missing_token_is_rejected_with_bad_credentials() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let path = conversation_path(Uuid::new_v4());
    t.sim().revoke_tokens();

    // Act
    let revoked = t.get(&path).await;
    let missing = t.client.get(format!("{}{path}", t.handle.base_url())).send().await.expect("answered");

    // Assert
    assert_eq!(revoked.status(), 401);
    assert_eq!(error_code(revoked).await, "bad.credentials");
    assert_eq!(missing.status(), 401);
}

// --- conversations ---

#[tokio::test]
async fn an_unknown_conversation_is_created_as_a_bot_conversation() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let id = Uuid::new_v4();

    // Act
    let response = t.get(&conversation_path(id)).await;

    // Assert
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["selfUri"], conversation_path(id));
    let customer = participant(&body, "customer").expect("customer");
    let flow = participant(&body, "workflow").expect("flow");
    assert_eq!(customer["state"], "connected");
    assert_eq!(flow["state"], "connected");
    assert_eq!(flow["type"], "webmessaging");
    assert!(flow["connectedTime"].is_string());
    assert!(flow.get("endTime").is_none());
    assert_eq!(body["recentTransfers"], json!([]));
    assert_eq!(t.sim().conversation(id), Some(body));
}

#[tokio::test]
async fn a_conversation_is_not_found_when_marked_unknown_or_auto_creation_is_off() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let strict = start(SimConfig { auto_create_conversations: false, ..SimConfig::default() }).await;
    let marked = bot(&t).conversation_id;
    t.sim().mark_unknown(marked);

    // Act
    let unknown = t.get(&conversation_path(marked)).await;
    let not_created = strict.get(&conversation_path(Uuid::new_v4())).await;

    // Assert
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "not.found");
    assert_eq!(not_created.status(), 404);
    assert_eq!(t.sim().conversation(marked), None);
}

#[tokio::test]
async fn a_conversation_id_that_is_not_a_uuid_is_a_bad_request() {
    // Arrange
    let t = start(SimConfig::default()).await;

    // Act
    let response = t.get("/api/v2/conversations/messages/not-a-uuid").await;

    // Assert
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "bad.request");
}

#[tokio::test]
async fn attributes_are_merged_into_the_participant_data() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);
    let path = attributes_path(ids.conversation_id, ids.customer_id);
    let first = json!({ "attributes": { "a": "1", "b": "2" } });
    assert_eq!(t.send_json(Method::PATCH, &path, first).await.status(), 202);

    // Act
    let second = json!({ "attributes": { "b": "two", "c": "3" } });
    let response = t.send_json(Method::PATCH, &path, second).await;

    // Assert
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    let merged = json!({ "a": "1", "b": "two", "c": "3" });
    assert_eq!(body["attributes"], merged);
    let stored = t.sim().participant_attributes(ids.conversation_id, ids.customer_id).expect("participant");
    assert_eq!(serde_json::to_value(stored).expect("json"), merged);
}

#[tokio::test]
async fn attributes_with_non_string_values_or_unknown_participants_are_refused() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);

    // Act
    let numeric = t
        .send_json(
            Method::PATCH,
            &attributes_path(ids.conversation_id, ids.customer_id),
            json!({ "attributes": { "score": 0.3 } }),
        )
        .await;
    let unknown = t
        .send_json(
            Method::PATCH,
            &attributes_path(ids.conversation_id, Uuid::new_v4()),
            json!({ "attributes": { "a": "b" } }),
        )
        .await;

    // Assert
    assert_eq!(numeric.status(), 400);
    assert_eq!(unknown.status(), 404);
    let stored = t.sim().participant_attributes(ids.conversation_id, ids.customer_id);
    assert_eq!(stored, Some(Default::default()));
}

// --- replace ---

#[tokio::test]
async fn replace_moves_the_conversation_into_the_queue_and_records_the_transfer() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);
    let waiting_before = t.sim().queue(SUPPORT_QUEUE).expect("queue").waiting;

    // Act
    let response = t.replace(&ids, holder(&ids), SUPPORT_QUEUE).await;

    // Assert
    assert_eq!(response.status(), 202);
    assert_eq!(response.bytes().await.expect("body").len(), 0);
    let conversation = t.sim().conversation(ids.conversation_id).expect("exists");
    let flow = participant(&conversation, "workflow").expect("flow");
    assert_eq!(flow["state"], "disconnected");
    assert!(flow["endTime"].is_string());
    let acd = participant(&conversation, "acd").expect("acd participant");
    assert_eq!(acd["state"], "connected");
    assert_eq!(acd["queue"]["id"], SUPPORT_QUEUE.to_string());
    let transfer = &conversation["recentTransfers"][0];
    assert_eq!(transfer["state"], "Complete");
    assert_eq!(transfer["transferType"], "Unattended");
    assert_eq!(transfer["destination"]["queueId"], SUPPORT_QUEUE.to_string());
    assert!(transfer["dateIssued"].is_string());
    assert_eq!(t.sim().queue(SUPPORT_QUEUE).expect("queue").waiting, waiting_before + 1);
}

#[tokio::test]
async fn replacing_the_customer_is_forbidden() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);

    // Act
    let response = t.replace(&ids, ids.customer_id, SUPPORT_QUEUE).await;

    // Assert
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "conversation.error.forbidden.not.active.participant");
}

#[tokio::test]
async fn replace_to_an_unknown_queue_is_a_bad_request_and_changes_nothing() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);

    // Act
    let response = t.replace(&ids, holder(&ids), Uuid::new_v4()).await;

    // Assert
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "conversations.error.queue.not.found");
    let conversation = t.sim().conversation(ids.conversation_id).expect("exists");
    assert!(participant(&conversation, "acd").is_none());
}

#[tokio::test]
async fn replacing_an_ended_holder_is_not_connected() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ended = t.sim().create_conversation(ConversationSpec::new(ConversationKind::Ended));
    let live = bot(&t);
    assert_eq!(t.replace(&live, holder(&live), BILLING_QUEUE).await.status(), 202);

    // Act
    let ended_call = t.replace(&ended, holder(&ended), SUPPORT_QUEUE).await;
    let repeated = t.replace(&live, holder(&live), SUPPORT_QUEUE).await;

    // Assert
    assert_eq!(ended_call.status(), 400);
    assert_eq!(error_code(ended_call).await, "conversations.error.transfer.not.connected");
    assert_eq!(repeated.status(), 400);
}

// --- capacity ---

fn metric_count(body: &Value, queue: Uuid, metric: &str, qualifier: Option<&str>) -> Option<u64> {
    body["results"]
        .as_array()?
        .iter()
        .filter(|result| result["group"]["queueId"] == queue.to_string())
        .flat_map(|result| result["data"].as_array().into_iter().flatten())
        .find(|row| row["metric"] == metric && row["qualifier"].as_str() == qualifier)?["stats"]["count"]
        .as_u64()
}

#[tokio::test]
async fn observations_report_idle_agents_and_waiting_per_known_queue() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let query = json!({
        "filter": {
            "type": "or",
            "predicates": [{ "type": "dimension", "dimension": "queueId", "operator": "matches", "value": SUPPORT_QUEUE }],
            "clauses": [{ "type": "and", "predicates": [
                { "dimension": "queueId", "value": EMPTY_QUEUE },
                { "dimension": "queueId", "value": Uuid::new_v4() },
                { "dimension": "mediaType", "value": "message" }
            ] }]
        },
        "metrics": ["oOnQueueUsers", "oMemberUsers", "oWaiting"]
    });

    // Act
    let response = t.send_json(Method::POST, "/api/v2/analytics/queues/observations/query", query).await;

    // Assert
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(4));
    assert_eq!(body["results"][0]["group"]["mediaType"], "message");
    let count = |queue, metric, qualifier| metric_count(&body, queue, metric, qualifier);
    assert_eq!(count(SUPPORT_QUEUE, "oOnQueueUsers", Some("IDLE")), Some(3));
    assert_eq!(count(SUPPORT_QUEUE, "oOnQueueUsers", Some("INTERACTING")), Some(2));
    assert_eq!(count(SUPPORT_QUEUE, "oMemberUsers", None), Some(5));
    assert_eq!(count(SUPPORT_QUEUE, "oWaiting", None), Some(0));
    assert_eq!(count(EMPTY_QUEUE, "oOnQueueUsers", Some("IDLE")), Some(0));
    assert_eq!(count(EMPTY_QUEUE, "oWaiting", None), Some(4));
    assert_eq!(count(SUPPORT_QUEUE, "oActiveUsers", None), None, "not requested");
}

#[tokio::test]
async fn estimated_wait_is_answered_on_both_paths_and_404_for_unknown_queues() {
    // Arrange
    let t = start(SimConfig::default()).await;
    t.sim().set_queue_capacity(BILLING_QUEUE, 0, 7, 120);

    // Act
    let media = t.get(&format!("/api/v2/routing/queues/{BILLING_QUEUE}/mediatypes/message/estimatedwaittime")).await;
    let plain = t.get(&format!("/api/v2/routing/queues/{SUPPORT_QUEUE}/estimatedwaittime")).await;
    let unknown = t.get(&format!("/api/v2/routing/queues/{}/estimatedwaittime", Uuid::new_v4())).await;

    // Assert
    let media: Value = media.json().await.expect("json");
    assert_eq!(
        media,
        json!({ "results": [{ "intent": "MESSAGE", "formula": "BEST", "estimatedWaitTimeSeconds": 120 }] })
    );
    let plain: Value = plain.json().await.expect("json");
    assert_eq!(plain["results"][0]["estimatedWaitTimeSeconds"], 30);
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn a_queue_reports_members_and_message_settings_only_when_it_takes_messages() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let voice_only = Uuid::new_v4();
    t.sim().add_queue(crate::QueueSpec { accepts_messages: false, ..crate::QueueSpec::new(voice_only, "Voice") });

    // Act
    let support: Value = t.get(&format!("/api/v2/routing/queues/{SUPPORT_QUEUE}")).await.json().await.expect("json");
    let voice: Value = t.get(&format!("/api/v2/routing/queues/{voice_only}")).await.json().await.expect("json");
    let unknown = t.get(&format!("/api/v2/routing/queues/{}", Uuid::new_v4())).await;

    // Assert
    assert_eq!(support["name"], "Support");
    assert_eq!(support["memberCount"], 5);
    assert!(support["mediaSettings"]["message"].is_object());
    assert!(voice["mediaSettings"].get("message").is_none());
    assert_eq!(unknown.status(), 404);
}

// --- tags ---

#[tokio::test]
async fn an_external_tag_is_stored_and_validated() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);
    let path = format!("/api/v2/conversations/{}/tags", ids.conversation_id);

    // Act
    let stored = t.send_json(Method::PUT, &path, json!({ "externalTag": "bot-handoff:billing" })).await;
    let too_long =
        t.send_json(Method::PUT, &path, json!({ "externalTag": "x".repeat(crate::MAX_EXTERNAL_TAG_CHARS + 1) })).await;
    let missing = t.send_json(Method::PUT, &path, json!({})).await;
    let unknown = t
        .send_json(
            Method::PUT,
            &format!("/api/v2/conversations/{}/tags", Uuid::new_v4()),
            json!({ "externalTag": "x" }),
        )
        .await;

    // Assert
    assert_eq!(stored.status(), 202);
    assert_eq!(too_long.status(), 400);
    assert_eq!(missing.status(), 400);
    assert_eq!(unknown.status(), 404);
    assert_eq!(t.sim().external_tag(ids.conversation_id).as_deref(), Some("bot-handoff:billing"));
}

// --- faults, permissions, rate limits ---

#[tokio::test]
async fn a_429_fault_carries_retry_after_and_is_used_up_after_its_times() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);
    t.sim().push_fault(Fault::new(Endpoint::Replace, FaultKind::too_many_requests(3)).times(2));

    // Act
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for _ in 0..3 {
        let response = t.replace(&ids, holder(&ids), SUPPORT_QUEUE).await;
        statuses.push(response.status().as_u16());
        retry_after.push(response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned));
    }

    // Assert
    assert_eq!(statuses, [429, 429, 202]);
    assert_eq!(retry_after[0].as_deref(), Some("3"));
    assert_eq!(retry_after[2], None);
    assert_eq!(t.sim().count(Endpoint::Replace), 3);
}

#[tokio::test]
async fn a_status_fault_renders_an_error_body_with_the_correlation_id() {
    // Arrange
    let t = start(SimConfig::default()).await;
    t.sim().push_fault(Fault::any(FaultKind::status(503)));

    // Act
    let response = t.get(&conversation_path(Uuid::new_v4())).await;

    // Assert
    assert_eq!(response.status(), 503);
    let header = response
        .headers()
        .get("inin-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("correlation id");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "service.unavailable");
    assert_eq!(body["status"], 503);
    assert_eq!(body["contextId"], header);
    assert_eq!(body["details"], json!([]));
    assert_eq!(body["errors"], json!([]));
    assert_eq!(t.sim().calls().last().map(|c| c.correlation_id.to_string()), Some(header));
}

#[tokio::test(start_paused = true)]
async fn apply_then_delay_transfers_although_the_client_times_out() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);
    t.sim().push_fault(Fault::new(Endpoint::Replace, FaultKind::ApplyThenDelay(Duration::from_secs(30))));

    // Act
    let result = t
        .api(Method::POST, &replace_path(ids.conversation_id, holder(&ids)))
        .json(&json!({ "queueId": SUPPORT_QUEUE }))
        .timeout(Duration::from_secs(2))
        .send()
        .await;

    // Assert
    assert!(result.is_err_and(|error| error.is_timeout()));
    let conversation = t.sim().conversation(ids.conversation_id).expect("exists");
    let acd = participant(&conversation, "acd").expect("transfer applied");
    assert_eq!(acd["queue"]["id"], SUPPORT_QUEUE.to_string());
    let calls = t.sim().calls();
    assert_eq!(calls.last().map(|c| (c.endpoint, c.status)), Some((Endpoint::Replace, 202)));
}

#[tokio::test]
async fn latency_and_a_latency_fault_both_delay_the_call() {
    // Arrange: 40 ms of latency on every call (wall clock), and a 60 ms latency fault
    let t = start(SimConfig::default()).await;
    t.sim().set_latency(Duration::from_millis(40));
    t.sim().push_fault(Fault::new(Endpoint::GetConversation, FaultKind::Latency(Duration::from_millis(60))));
    let started = std::time::Instant::now();

    // Act
    let response = t.get(&conversation_path(Uuid::new_v4())).await;

    // Assert: both delays applied; the log holds the latency (the timer may aim up to its learned
    // lateness early, which starts at zero)
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
    let logged = t.sim().calls().last().map(|c| c.latency).expect("a call was logged");
    assert!(logged >= Duration::from_millis(35), "{logged:?}");
}

#[tokio::test]
async fn a_missing_permission_is_403_even_for_a_nonexistent_target() {
    // Arrange
    let t = start(SimConfig {
        missing_permissions: vec![
            "conversation:communication:blindTransfer".to_owned(),
            "routing:queue:view".to_owned(),
        ],
        ..SimConfig::default()
    })
    .await;

    // Act
    let replace =
        t.send_json(Method::POST, &replace_path(Uuid::nil(), Uuid::nil()), json!({ "queueId": SUPPORT_QUEUE })).await;
    let queue = t.get(&format!("/api/v2/routing/queues/{}", Uuid::nil())).await;
    let observations = t
        .send_json(
            Method::POST,
            "/api/v2/analytics/queues/observations/query",
            json!({ "filter": { "type": "or", "predicates": [] }, "metrics": ["oWaiting"] }),
        )
        .await;

    // Assert
    assert_eq!(replace.status(), 403);
    let body: Value = replace.json().await.expect("json");
    assert_eq!(body["code"], "missing.permissions");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("conversation:communication:blindTransfer")));
    assert_eq!(queue.status(), 403);
    assert_eq!(observations.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_answers_429_until_the_window_resets() {
    // Arrange
    let t = start(SimConfig { rate_limit_per_minute: Some(2), ..SimConfig::default() }).await;
    let path = conversation_path(Uuid::new_v4());

    // Act
    let first = t.get(&path).await;
    let _second = t.get(&path).await;
    let limited = t.get(&path).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let next_window = t.get(&path).await;

    // Assert
    assert_eq!(first.status(), 200);
    let header = |r: &Response, name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header(&first, "inin-ratelimit-allowed").as_deref(), Some("2"));
    assert_eq!(header(&first, "inin-ratelimit-count").as_deref(), Some("1"));
    assert_eq!(header(&first, "inin-ratelimit-reset").as_deref(), Some("60"));
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after").as_deref(), Some("60"));
    assert_eq!(error_code(limited).await, "too.many.requests");
    assert_eq!(next_window.status(), 200);
}

// --- call log and unknown endpoints ---

#[tokio::test]
async fn every_call_is_logged_with_its_endpoint_status_and_body() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let ids = bot(&t);

    // Act
    let _ = t.get(&conversation_path(ids.conversation_id)).await;
    let _ = t.replace(&ids, ids.customer_id, SUPPORT_QUEUE).await;
    let _ = t.replace(&ids, holder(&ids), SUPPORT_QUEUE).await;
    let other = t.get("/api/v2/users/me").await;
    let wrong_method = t.api(Method::DELETE, &conversation_path(ids.conversation_id)).send().await.expect("answered");

    // Assert
    assert_eq!(other.status(), 404);
    assert_eq!(error_code(other).await, "not.found");
    assert_eq!(wrong_method.status(), 404);
    assert_eq!(t.sim().token_calls(), 1);
    assert_eq!(t.sim().count(Endpoint::GetConversation), 1);
    assert_eq!(t.sim().count(Endpoint::Replace), 2);
    assert_eq!(t.sim().count(Endpoint::Other), 2);
    let calls = t.sim().calls();
    assert_eq!(calls.len(), 6);
    assert_eq!(calls[0].body, Some(json!({ "grant_type": "client_credentials" })));
    let replaces: Vec<_> =
        calls.iter().filter(|c| c.endpoint == Endpoint::Replace).map(|c| (c.status, c.body.clone())).collect();
    let sent = json!({ "queueId": SUPPORT_QUEUE, "transferType": "Unattended" });
    assert_eq!(replaces, [(403, Some(sent.clone())), (202, Some(sent))]);
    assert!(calls.windows(2).all(|w| w[0].seq < w[1].seq));

    t.sim().reset_calls();
    assert_eq!(t.sim().count(Endpoint::Replace), 0);
    assert!(t.sim().calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_never_answers_and_shutdown_still_completes() {
    // Arrange
    let t = start(SimConfig::default()).await;
    t.sim().push_fault(Fault::any(FaultKind::Hang));

    // Act
    let result = t.api(Method::GET, &conversation_path(Uuid::new_v4())).timeout(Duration::from_secs(30)).send().await;
    let TestSim { handle, client, .. } = t;
    let base_url = handle.base_url();
    handle.shutdown().await;
    let after = client.get(format!("{base_url}/oauth/token")).send().await;

    // Assert
    assert!(result.is_err_and(|error| error.is_timeout()));
    assert!(after.is_err(), "server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_into_one_queue_are_all_applied() {
    // Arrange
    let t = std::sync::Arc::new(start(SimConfig::default()).await);
    let conversations: Vec<_> = (0..50).map(|_| bot(&t)).collect();
    let waiting_before = t.sim().queue(OVERFLOW_QUEUE).expect("queue").waiting;

    // Act
    let tasks: Vec<_> = conversations
        .into_iter()
        .map(|ids| {
            let t = std::sync::Arc::clone(&t);
            tokio::spawn(async move { t.replace(&ids, holder(&ids), OVERFLOW_QUEUE).await.status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task").as_u16());
    }

    // Assert
    assert!(statuses.iter().all(|s| *s == 202));
    assert_eq!(t.sim().queue(OVERFLOW_QUEUE).expect("queue").waiting, waiting_before + 50);
    assert_eq!(t.sim().count(Endpoint::Replace), 50);
}

fn queue_only_query(queue: Uuid) -> Value {
    json!({
        "filter": { "type": "and", "predicates": [
            { "type": "dimension", "dimension": "queueId", "operator": "matches", "value": queue }
        ] },
        "metrics": ["oOnQueueUsers", "oInteracting", "oAlerting", "oWaiting"]
    })
}

#[tokio::test]
async fn agents_with_several_conversations_report_their_routing_status_and_the_message_load() {
    // Arrange: three agents in one chat each, one idle agent, one chat alerting
    let t = start(SimConfig::default()).await;
    let queue = Uuid::new_v4();
    t.sim().add_queue(crate::QueueSpec {
        alerting: 1,
        ..crate::QueueSpec::new(queue, "Chat").with_agent_loads(vec![1, 1, 1, 0])
    });

    // Act
    let response =
        t.send_json(Method::POST, "/api/v2/analytics/queues/observations/query", queue_only_query(queue)).await;

    // Assert: the user group has no mediaType, the message group has the conversations
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let groups: Vec<&Value> = body["results"].as_array().expect("results").iter().map(|r| &r["group"]).collect();
    assert_eq!(groups, vec![&json!({ "queueId": queue, "mediaType": "message" }), &json!({ "queueId": queue })]);
    let count = |metric, qualifier| metric_count(&body, queue, metric, qualifier);
    assert_eq!(count("oOnQueueUsers", Some("IDLE")), Some(1));
    assert_eq!(count("oOnQueueUsers", Some("INTERACTING")), Some(3));
    assert_eq!(count("oInteracting", None), Some(3));
    assert_eq!(count("oAlerting", None), Some(1));
    assert_eq!(count("oWaiting", None), Some(0));
    let stored = t.sim().queue(queue).expect("queue");
    assert_eq!((stored.idle_agents, stored.on_queue_agents), (1, 4));
}

#[tokio::test]
async fn busy_agents_without_given_loads_carry_the_full_message_capacity() {
    // Arrange: Billing has 2 idle of 4; message capacity 3
    let t = start(SimConfig { message_capacity: Some(3), ..SimConfig::default() }).await;

    // Act
    let body: Value = t
        .send_json(Method::POST, "/api/v2/analytics/queues/observations/query", queue_only_query(BILLING_QUEUE))
        .await
        .json()
        .await
        .expect("json");

    // Assert
    assert_eq!(metric_count(&body, BILLING_QUEUE, "oInteracting", None), Some(6));
}

#[tokio::test]
async fn the_media_filter_knob_drops_the_user_metrics_only_under_a_media_type_filter() {
    // Arrange
    let t = start(SimConfig { user_metrics_under_media_filter: false, ..SimConfig::default() }).await;
    let mut filtered = queue_only_query(SUPPORT_QUEUE);
    filtered["filter"]["predicates"]
        .as_array_mut()
        .expect("predicates")
        .push(json!({ "type": "dimension", "dimension": "mediaType", "operator": "matches", "value": "message" }));

    // Act
    let path = "/api/v2/analytics/queues/observations/query";
    let with_media: Value = t.send_json(Method::POST, path, filtered).await.json().await.expect("json");
    let without: Value =
        t.send_json(Method::POST, path, queue_only_query(SUPPORT_QUEUE)).await.json().await.expect("json");

    // Assert
    assert_eq!(metric_count(&with_media, SUPPORT_QUEUE, "oOnQueueUsers", Some("IDLE")), None);
    assert_eq!(metric_count(&with_media, SUPPORT_QUEUE, "oWaiting", None), Some(0));
    assert_eq!(metric_count(&without, SUPPORT_QUEUE, "oOnQueueUsers", Some("IDLE")), Some(3));
}

#[tokio::test]
async fn the_utilization_answers_the_message_capacity_and_needs_its_permission() {
    // Arrange
    let t = start(SimConfig::default()).await;

    // Act
    let first: Value = t.get("/api/v2/routing/utilization").await.json().await.expect("json");
    t.sim().set_message_capacity(None);
    let none: Value = t.get("/api/v2/routing/utilization").await.json().await.expect("json");
    let refused =
        start(SimConfig { missing_permissions: vec!["routing:utilization:view".into()], ..SimConfig::default() })
            .await
            .get("/api/v2/routing/utilization")
            .await;

    // Assert
    assert_eq!(first["utilization"]["message"]["maximumCapacity"], 4);
    assert!(none["utilization"].get("message").is_none(), "{none}");
    assert_eq!(refused.status(), 403);
    assert_eq!(t.sim().count(Endpoint::GetUtilization), 2);
}
