//! The admin API under `/__admin`: the in-process controls of [`Sim`] over HTTP, for running the
//! simulator standalone (`handoff simulator`). No auth, JSON in and out, not in the call log.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{Call, ConversationIds, ConversationSpec, Fault, QueueSpec, Sim};

/// The admin routes, to be nested under `/__admin`.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/calls", get(list_calls).delete(reset_calls))
        .route("/faults", post(push_fault).delete(clear_faults))
        .route("/queues", get(list_queues))
        .route("/queues/{id}", put(put_queue))
        .route("/conversations", post(create_conversation))
        .route("/conversations/{id}", get(get_conversation))
        .route("/conversations/{id}/unknown", post(mark_unknown))
        .route("/conversations/{id}/tags", get(get_tags))
        .route("/conversations/{id}/flow-transfer", post(flow_transfer))
        .route("/flow-replace", put(set_flow_replace))
        .route("/tokens/revoke", post(revoke_tokens))
        .route("/latency", put(set_latency))
        .route("/rate-limit", put(set_rate_limit))
        .route("/notifications", get(notifications).put(set_notifications))
        .route("/notifications/close", post(close_sockets))
        .route("/notifications/expire", post(expire_channels))
        .route("/utilization", put(set_utilization))
        .route("/observations", put(set_observations))
        .fallback(|| async { AdminError(StatusCode::NOT_FOUND, "no such admin endpoint".into()) })
}

/// `{"error": "…"}` with a status.
#[derive(Debug)]
struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type AdminResult<T> = Result<T, AdminError>;

fn parse<T: DeserializeOwned>(body: &[u8]) -> AdminResult<T> {
    serde_json::from_slice(body).map_err(|error| AdminError(StatusCode::BAD_REQUEST, format!("invalid body: {error}")))
}

fn parse_id(raw: &str) -> AdminResult<Uuid> {
    Uuid::try_parse(raw).map_err(|_| AdminError(StatusCode::BAD_REQUEST, "id must be a UUID".into()))
}

async fn list_calls(State(sim): State<Sim>) -> Json<Vec<Call>> {
    Json(sim.calls())
}

async fn reset_calls(State(sim): State<Sim>) -> StatusCode {
    sim.reset_calls();
    StatusCode::NO_CONTENT
}

async fn push_fault(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let fault: Fault = parse(&body)?;
    sim.push_fault(fault);
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(sim): State<Sim>) -> StatusCode {
    sim.clear_faults();
    StatusCode::NO_CONTENT
}

async fn list_queues(State(sim): State<Sim>) -> Json<Vec<QueueSpec>> {
    Json(sim.queues())
}

/// A [`QueueSpec`] whose `id` may be left out (the path has it) and whose numbers default to 0.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueBody {
    id: Option<Uuid>,
    name: Option<String>,
    #[serde(default)]
    idle_agents: u32,
    #[serde(default)]
    on_queue_agents: u32,
    #[serde(default)]
    waiting: u32,
    #[serde(default)]
    estimated_wait_secs: u32,
    #[serde(default = "yes")]
    accepts_messages: bool,
    #[serde(default)]
    agent_loads: Vec<u32>,
    #[serde(default)]
    alerting: u32,
    #[serde(default = "yes")]
    observed: bool,
}

fn yes() -> bool {
    true
}

async fn put_queue(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> AdminResult<Json<QueueSpec>> {
    let id = parse_id(&id)?;
    let body: QueueBody = parse(&body)?;
    if body.id.is_some_and(|body_id| body_id != id) {
        return Err(AdminError(StatusCode::BAD_REQUEST, "body id differs from path id".into()));
    }
    sim.add_queue(QueueSpec {
        id,
        name: body.name.unwrap_or_else(|| format!("Queue {id}")),
        idle_agents: body.idle_agents,
        on_queue_agents: body.on_queue_agents,
        waiting: body.waiting,
        estimated_wait_secs: body.estimated_wait_secs,
        accepts_messages: body.accepts_messages,
        agent_loads: body.agent_loads,
        received: 0,
        alerting: body.alerting,
        observed: body.observed,
    });
    sim.queue(id).map(Json).ok_or_else(|| AdminError(StatusCode::INTERNAL_SERVER_ERROR, "queue vanished".into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UtilizationBody {
    message_capacity: Option<u32>,
}

/// `{"messageCapacity": N}` (or `null`: no message entry in the utilization).
async fn set_utilization(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: UtilizationBody = parse(&body)?;
    sim.set_message_capacity(body.message_capacity);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ObservationsBody {
    user_metrics_under_media_filter: bool,
}

/// `{"userMetricsUnderMediaFilter": false}`: a `mediaType`-filtered query answers no user metrics.
async fn set_observations(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: ObservationsBody = parse(&body)?;
    sim.set_user_metrics_under_media_filter(body.user_metrics_under_media_filter);
    Ok(StatusCode::NO_CONTENT)
}

async fn create_conversation(State(sim): State<Sim>, body: Bytes) -> AdminResult<(StatusCode, Json<ConversationIds>)> {
    // An empty body creates a bot conversation with a random id.
    let spec: ConversationSpec = if body.is_empty() { ConversationSpec::default() } else { parse(&body)? };
    Ok((StatusCode::CREATED, Json(sim.create_conversation(spec))))
}

async fn get_conversation(State(sim): State<Sim>, Path(id): Path<String>) -> AdminResult<Json<Value>> {
    let id = parse_id(&id)?;
    sim.conversation(id).map(Json).ok_or_else(|| AdminError(StatusCode::NOT_FOUND, "no such conversation".into()))
}

async fn get_tags(State(sim): State<Sim>, Path(id): Path<String>) -> AdminResult<Json<Value>> {
    let id = parse_id(&id)?;
    if sim.conversation(id).is_none() {
        return Err(AdminError(StatusCode::NOT_FOUND, "no such conversation".into()));
    }
    Ok(Json(json!({ "externalTag": sim.external_tag(id) })))
}

async fn mark_unknown(State(sim): State<Sim>, Path(id): Path<String>) -> AdminResult<StatusCode> {
    sim.mark_unknown(parse_id(&id)?);
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_tokens(State(sim): State<Sim>) -> StatusCode {
    sim.revoke_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct LatencyBody {
    ms: u64,
}

async fn set_latency(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: LatencyBody = parse(&body)?;
    sim.set_latency(Duration::from_millis(body.ms));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitBody {
    per_minute: Option<u32>,
}

async fn set_rate_limit(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: RateLimitBody = parse(&body)?;
    sim.set_rate_limit(body.per_minute);
    Ok(StatusCode::NO_CONTENT)
}

async fn notifications(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({
        "channelsCreated": sim.channels_created(),
        "openSockets": sim.open_sockets(),
        "subscriptions": sim.subscriptions(),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NotificationsBody {
    refuse: Option<bool>,
    heartbeat_ms: Option<u64>,
    push_user_metrics: Option<bool>,
}

async fn set_notifications(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: NotificationsBody = parse(&body)?;
    if let Some(refuse) = body.refuse {
        sim.refuse_channels(refuse);
    }
    if let Some(ms) = body.heartbeat_ms {
        sim.set_heartbeat(Duration::from_millis(ms));
    }
    if let Some(on) = body.push_user_metrics {
        sim.push_user_metrics(on);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn close_sockets(State(sim): State<Sim>) -> StatusCode {
    sim.close_sockets();
    StatusCode::NO_CONTENT
}

async fn expire_channels(State(sim): State<Sim>) -> StatusCode {
    sim.expire_channels();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use reqwest::{Client, Response};
    use serde_json::{json, Value};
    use uuid::Uuid;

    use crate::{spawn, Endpoint, SimConfig, SimHandle};

    async fn send(client: &Client, handle: &SimHandle, method: &str, path: &str, body: Option<Value>) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = client.request(method, format!("{}{path}", handle.base_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("answered")
    }

    async fn token(client: &Client, handle: &SimHandle) -> String {
        let response = client
            .post(format!("{}/oauth/token", handle.base_url()))
            .basic_auth("sim-client", Some("sim-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .expect("answered");
        let body: Value = response.json().await.expect("json");
        body["access_token"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_queued_conversation_waits_in_its_queue_with_the_flow_gone() {
        // Arrange
        let handle = spawn(SimConfig::default()).await.expect("starts");
        let client = Client::new();
        let body = json!({ "kind": "queued", "queueId": crate::BILLING_QUEUE.to_string() });

        // Act
        let created = send(&client, &handle, "POST", "/__admin/conversations", Some(body)).await;
        let ids: Value = created.json().await.expect("json");
        let cid = Uuid::parse_str(ids["conversationId"].as_str().expect("id")).expect("uuid");
        let conversation = handle.sim().conversation(cid).expect("exists");

        // Assert
        let participants = conversation["participants"].as_array().expect("participants");
        let purposes: Vec<_> = participants.iter().map(|p| (p["purpose"].clone(), p["state"].clone())).collect();
        assert_eq!(
            purposes,
            [
                (json!("customer"), json!("connected")),
                (json!("workflow"), json!("disconnected")),
                (json!("acd"), json!("connected"))
            ]
        );
        assert_eq!(participants[2]["queue"]["id"], crate::BILLING_QUEUE.to_string());
        assert_eq!(ids["holderId"], participants[2]["id"]);
        assert_eq!(conversation["recentTransfers"], json!([]));
    }

    #[tokio::test]
    async fn the_admin_api_sets_agents_utilization_and_the_observation_shape() {
        // Arrange
        let handle = spawn(SimConfig::default()).await.expect("starts");
        let client = Client::new();
        let queue_id = Uuid::new_v4();

        // Act
        let put = send(
            &client,
            &handle,
            "PUT",
            &format!("/__admin/queues/{queue_id}"),
            Some(json!({ "name": "Chat", "agentLoads": [1, 1, 1], "alerting": 2 })),
        )
        .await;
        let utilization =
            send(&client, &handle, "PUT", "/__admin/utilization", Some(json!({ "messageCapacity": 4 }))).await;
        let knob = send(
            &client,
            &handle,
            "PUT",
            "/__admin/observations",
            Some(json!({ "userMetricsUnderMediaFilter": false })),
        )
        .await;
        let bad = send(&client, &handle, "PUT", "/__admin/utilization", Some(json!({ "capacity": 4 }))).await;

        // Assert
        assert_eq!(put.status(), 200);
        let queue: Value = put.json().await.expect("json");
        assert_eq!((queue["idleAgents"].clone(), queue["onQueueAgents"].clone()), (json!(0), json!(3)));
        assert_eq!(queue["alerting"], 2);
        assert_eq!((utilization.status().as_u16(), knob.status().as_u16(), bad.status().as_u16()), (204, 204, 400));
        assert_eq!(handle.sim().message_capacity(), Some(4));
        assert!(!handle.sim().user_metrics_under_media_filter());
    }

    #[tokio::test]
    async fn the_admin_api_controls_and_inspects_the_simulator() {
        // Arrange
        let handle = spawn(SimConfig::default()).await.expect("starts");
        let client = Client::new();
        let queue_id = Uuid::new_v4();
        let bearer = token(&client, &handle).await;
        let api_get = |path: String| client.get(format!("{}{path}", handle.base_url())).bearer_auth(&bearer).send();

        // Act: queues
        let put = send(
            &client,
            &handle,
            "PUT",
            &format!("/__admin/queues/{queue_id}"),
            Some(json!({ "name": "VIP", "idleAgents": 2, "onQueueAgents": 3, "estimatedWaitSecs": 5 })),
        )
        .await;
        let queues: Value = send(&client, &handle, "GET", "/__admin/queues", None).await.json().await.expect("json");

        // Assert
        assert_eq!(put.status(), 200);
        assert!(queues
            .as_array()
            .is_some_and(|q| q.iter().any(|q| q["id"] == queue_id.to_string() && q["idleAgents"] == 2)));

        // Act: conversations, tags, unknown
        let created =
            send(&client, &handle, "POST", "/__admin/conversations", Some(json!({ "kind": "noHolder" }))).await;
        assert_eq!(created.status(), 201);
        let ids: Value = created.json().await.expect("json");
        let cid = ids["conversationId"].as_str().expect("id").to_owned();
        let conversation: Value = send(&client, &handle, "GET", &format!("/__admin/conversations/{cid}"), None)
            .await
            .json()
            .await
            .expect("json");
        let tags: Value = send(&client, &handle, "GET", &format!("/__admin/conversations/{cid}/tags"), None)
            .await
            .json()
            .await
            .expect("json");
        let unknown = send(&client, &handle, "POST", &format!("/__admin/conversations/{cid}/unknown"), None).await;
        let lookup = api_get(format!("/api/v2/conversations/messages/{cid}")).await.expect("answered");

        // Assert
        assert_eq!(ids["holderId"], Value::Null);
        assert_eq!(conversation["participants"].as_array().map(Vec::len), Some(1));
        assert_eq!(tags, json!({ "externalTag": null }));
        assert_eq!(unknown.status(), 204);
        assert_eq!(lookup.status(), 404);

        // Act: faults
        let fault = json!({ "endpoint": "getQueue", "kind": { "type": "status", "status": 500 } });
        assert_eq!(send(&client, &handle, "POST", "/__admin/faults", Some(fault)).await.status(), 204);
        let faulted = api_get(format!("/api/v2/routing/queues/{queue_id}")).await.expect("answered");
        let fault = json!({ "endpoint": "getQueue", "times": 5, "kind": { "type": "hang" } });
        assert_eq!(send(&client, &handle, "POST", "/__admin/faults", Some(fault)).await.status(), 204);
        assert_eq!(send(&client, &handle, "DELETE", "/__admin/faults", None).await.status(), 204);
        let healed = api_get(format!("/api/v2/routing/queues/{queue_id}")).await.expect("answered");

        // Assert
        assert_eq!(faulted.status(), 500);
        assert_eq!(healed.status(), 200);

        // Act: call log
        let calls: Value = send(&client, &handle, "GET", "/__admin/calls", None).await.json().await.expect("json");
        let reset = send(&client, &handle, "DELETE", "/__admin/calls", None).await;

        // Assert
        let statuses: Vec<_> = calls
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["endpoint"] == "getQueue")
            .map(|c| c["status"].clone())
            .collect();
        assert_eq!(statuses, [json!(500), json!(200)]);
        assert!(calls[0]["atMs"].is_u64());
        assert_eq!(reset.status(), 204);
        assert_eq!(handle.sim().count(Endpoint::GetQueue), 0);

        // Act: a call with latency, then latency off, and tokens
        assert_eq!(send(&client, &handle, "PUT", "/__admin/latency", Some(json!({ "ms": 3 }))).await.status(), 204);
        let delayed = api_get(format!("/api/v2/routing/queues/{queue_id}")).await.expect("answered");
        let latency = send(&client, &handle, "PUT", "/__admin/latency", Some(json!({ "ms": 0 }))).await;
        let prompt = api_get(format!("/api/v2/routing/queues/{queue_id}")).await.expect("answered");
        let logged: Vec<u64> = handle
            .sim()
            .calls()
            .iter()
            .filter(|c| c.endpoint == Endpoint::GetQueue)
            .map(|c| u64::try_from(c.latency.as_micros()).unwrap_or(u64::MAX))
            .collect();

        // Assert: the log holds each call's realized latency (the timer aims early by what it
        // learned, so only "some" is certain for the first call)
        assert_eq!((delayed.status().as_u16(), prompt.status().as_u16()), (200, 200));
        assert_eq!(logged.len(), 2);
        assert!(logged[0] > 1000, "a 3 ms latency was logged as {} µs", logged[0]);
        assert_eq!(logged[1], 0);
        let revoke = send(&client, &handle, "POST", "/__admin/tokens/revoke", None).await;
        let revoked = api_get(format!("/api/v2/routing/queues/{queue_id}")).await.expect("answered");

        // Assert
        assert_eq!(latency.status(), 204);
        assert_eq!(revoke.status(), 204);
        assert_eq!(revoked.status(), 401);
    }

    #[tokio::test]
    async fn bad_admin_input_is_a_json_400() {
        // Arrange
        let handle = spawn(SimConfig::default()).await.expect("starts");
        let client = Client::new();

        // Act
        let fault =
            send(&client, &handle, "POST", "/__admin/faults", Some(json!({ "kind": { "type": "boom" } }))).await;
        let queue = send(&client, &handle, "PUT", "/__admin/queues/not-a-uuid", Some(json!({}))).await;
        let mismatch = send(
            &client,
            &handle,
            "PUT",
            &format!("/__admin/queues/{}", Uuid::new_v4()),
            Some(json!({ "id": Uuid::new_v4() })),
        )
        .await;

        // Assert
        assert_eq!(fault.status(), 400);
        let body: Value = fault.json().await.expect("json");
        assert!(body["error"].is_string());
        assert_eq!(queue.status(), 400);
        assert_eq!(mismatch.status(), 400);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlowTransferBody {
    queue_id: Uuid,
}

async fn flow_transfer(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> AdminResult<StatusCode> {
    let id = parse_id(&id)?;
    let body: FlowTransferBody = parse(&body)?;
    sim.flow_transfer(id, body.queue_id).map_err(|e| AdminError(StatusCode::CONFLICT, e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct FlowReplaceBody {
    refuse: Option<String>,
}

async fn set_flow_replace(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: FlowReplaceBody = parse(&body)?;
    sim.refuse_flow_replace(body.refuse);
    Ok(StatusCode::NO_CONTENT)
}
