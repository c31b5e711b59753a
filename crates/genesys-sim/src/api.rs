//! The Genesys Cloud endpoints: routes, request parsing and the JSON answers. Authentication,
//! latency, faults and permissions are applied before these handlers by [`crate::pipeline`].

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::conversation::Conversation;
use crate::error::{Result, SimError};
use crate::{Endpoint, QueueSpec, Sim};

/// Longest `externalTag` accepted by `PUT /api/v2/conversations/{id}/tags`, in characters.
///
/// The Genesys reference documents no limit; 255 is a conventional column size that fits
/// `bot-handoff:` plus a 128-character handoff reason. Longer tags get 400 `constraint.validation`.
pub const MAX_EXTERNAL_TAG_CHARS: usize = 255;

const TOKEN: &str = "/oauth/token";
const CONVERSATION: &str = "/api/v2/conversations/messages/{conversation_id}";
const ATTRIBUTES: &str = "/api/v2/conversations/messages/{conversation_id}/participants/{participant_id}/attributes";
const REPLACE: &str = "/api/v2/conversations/messages/{conversation_id}/participants/{participant_id}/replace";
const OBSERVATIONS: &str = "/api/v2/analytics/queues/observations/query";
const MEDIA_EWT: &str = "/api/v2/routing/queues/{queue_id}/mediatypes/{media_type}/estimatedwaittime";
const QUEUE_EWT: &str = "/api/v2/routing/queues/{queue_id}/estimatedwaittime";
const QUEUE: &str = "/api/v2/routing/queues/{queue_id}";
const TAGS: &str = "/api/v2/conversations/{conversation_id}/tags";
const CHANNELS: &str = "/api/v2/notifications/channels";
const SUBSCRIPTIONS: &str = "/api/v2/notifications/channels/{channel_id}/subscriptions";
const UTILIZATION: &str = "/api/v2/routing/utilization";

/// The Genesys routes (login host and API host share one server), without the pipeline layer.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route(TOKEN, post(token))
        .route(CONVERSATION, get(get_conversation))
        .route(ATTRIBUTES, patch(patch_attributes))
        .route(REPLACE, post(replace))
        .route(OBSERVATIONS, post(observations))
        .route(MEDIA_EWT, get(media_estimated_wait))
        .route(QUEUE_EWT, get(queue_estimated_wait))
        .route(QUEUE, get(get_queue))
        .route(TAGS, put(put_tags))
        .route(CHANNELS, post(crate::notifications::create_channel))
        .route(SUBSCRIPTIONS, put(crate::notifications::subscribe))
        .route(UTILIZATION, get(get_utilization))
        .fallback(|| async { SimError::not_found("no such endpoint") })
}

/// Which endpoint a request is, from its method and matched route.
pub(crate) fn endpoint_for(method: &Method, matched_path: Option<&str>) -> Endpoint {
    match (method.as_str(), matched_path) {
        ("POST", Some(TOKEN)) => Endpoint::Token,
        ("GET", Some(CONVERSATION)) => Endpoint::GetConversation,
        ("PATCH", Some(ATTRIBUTES)) => Endpoint::PatchAttributes,
        ("POST", Some(REPLACE)) => Endpoint::Replace,
        ("POST", Some(OBSERVATIONS)) => Endpoint::ObservationsQuery,
        ("GET", Some(MEDIA_EWT | QUEUE_EWT)) => Endpoint::EstimatedWait,
        ("GET", Some(QUEUE)) => Endpoint::GetQueue,
        ("PUT", Some(TAGS)) => Endpoint::PutTags,
        ("POST", Some(CHANNELS)) => Endpoint::CreateChannel,
        ("PUT", Some(SUBSCRIPTIONS)) => Endpoint::Subscribe,
        ("GET", Some(UTILIZATION)) => Endpoint::GetUtilization,
        _ => Endpoint::Other,
    }
}

/// `grant_type` of a form-encoded token request.
pub(crate) fn grant_type(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(key, value)| (key == "grant_type").then_some(value))
}

async fn token(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    if !sim.client_authenticated(&headers) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    }
    match grant_type(&body) {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
            )
        }
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required"),
    }
    let access_token = sim.issue_token();
    Json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": sim.config().token_ttl.as_secs(),
    }))
    .into_response()
}

/// The login host's error shape (Go SDK `AuthErrorResponse`), not `ErrorBody`.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "description": description, "error_description": description });
    (status, Json(body)).into_response()
}

async fn get_conversation(State(sim): State<Sim>, Path(conversation_id): Path<String>) -> Result<Json<Conversation>> {
    let id = parse_id(&conversation_id, "conversationId")?;
    sim.lookup_conversation(id).map(Json)
}

#[derive(Deserialize)]
struct AttributesBody {
    attributes: Map<String, Value>,
}

async fn patch_attributes(
    State(sim): State<Sim>,
    Path((conversation_id, participant_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let conversation_id = parse_id(&conversation_id, "conversationId")?;
    let participant_id = parse_id(&participant_id, "participantId")?;
    let body: AttributesBody = parse_json(&body)?;
    let attributes = body
        .attributes
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(value) => Ok((key, value)),
            _ => Err(SimError::bad_request(format!("Value of attribute [{key}] must be a string"))),
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let merged = sim.merge_attributes(conversation_id, participant_id, attributes)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "attributes": merged }))))
}

/// `TransferRequest`: the fields the simulator reads (others are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferRequest {
    queue_id: Option<String>,
    address: Option<String>,
    transfer_type: Option<String>,
}

async fn replace(
    State(sim): State<Sim>,
    Path((conversation_id, participant_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode> {
    let conversation_id = parse_id(&conversation_id, "conversationId")?;
    let participant_id = parse_id(&participant_id, "participantId")?;
    let request: TransferRequest = parse_json(&body)?;
    let transfer_type = match request.transfer_type.as_deref() {
        None | Some("Unattended") => "Unattended",
        Some("Attended") => "Attended",
        Some(_) => {
            return Err(SimError::new(
                StatusCode::BAD_REQUEST,
                "invalid.value",
                "transferType must be one of: Attended, Unattended",
            ))
        }
    };
    let destination = request
        .queue_id
        .or(request.address)
        .ok_or_else(|| SimError::bad_request("A transfer destination (queueId) is required"))?;
    // A destination that is not a UUID cannot name a queue: same answer as an unknown queue.
    let queue_id = Uuid::try_parse(&destination).ok();
    sim.replace(conversation_id, participant_id, queue_id, transfer_type)?;
    Ok(StatusCode::ACCEPTED)
}

async fn observations(State(sim): State<Sim>, body: Bytes) -> Result<Json<Value>> {
    let query: Value = parse_json(&body)?;
    let filter = query
        .get("filter")
        .filter(|filter| filter.is_object())
        .ok_or_else(|| SimError::bad_request("filter is required"))?;
    let mut queue_ids = Vec::new();
    collect_queue_ids(filter, &mut queue_ids);
    // No `metrics` list: report every metric the simulator knows.
    let metrics: Option<Vec<&str>> = query
        .get("metrics")
        .and_then(Value::as_array)
        .map(|metrics| metrics.iter().filter_map(Value::as_str).collect());
    let wanted = |metric: &str| metrics.as_ref().is_none_or(|m| m.contains(&metric));
    let media_filtered = has_dimension(filter, "mediaType");
    let users = !media_filtered || sim.user_metrics_under_media_filter();
    let capacity = sim.message_capacity();
    let results: Vec<Value> = queue_ids
        .into_iter()
        .filter_map(|id| sim.queue(id))
        .filter(|queue| queue.observed)
        .flat_map(|queue| observation_groups(&queue, &wanted, capacity, users))
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// Queue ids from `queueId` predicates, in order, without repeats, looking into nested `clauses`.
fn collect_queue_ids(filter: &Value, out: &mut Vec<Uuid>) {
    let predicates = filter.get("predicates").and_then(Value::as_array);
    for predicate in predicates.into_iter().flatten() {
        if predicate.get("dimension").and_then(Value::as_str) != Some("queueId") {
            continue;
        }
        let id = predicate.get("value").and_then(Value::as_str).and_then(|value| Uuid::try_parse(value).ok());
        if let Some(id) = id.filter(|id| !out.contains(id)) {
            out.push(id);
        }
    }
    let clauses = filter.get("clauses").and_then(Value::as_array);
    for clause in clauses.into_iter().flatten() {
        collect_queue_ids(clause, out);
    }
}

/// Whether the filter (or a nested clause) has a predicate on `dimension`.
fn has_dimension(filter: &Value, dimension: &str) -> bool {
    let predicates = filter.get("predicates").and_then(Value::as_array).into_iter().flatten();
    let clauses = filter.get("clauses").and_then(Value::as_array).into_iter().flatten();
    predicates.into_iter().any(|p| p.get("dimension").and_then(Value::as_str) == Some(dimension))
        || clauses.into_iter().any(|c| has_dimension(c, dimension))
}

/// The result groups of one queue, shaped as Genesys answers a query filtered by `queueId`:
/// conversation metrics in a `{queueId, mediaType: message}` group, user metrics (per queue, not
/// per media type) in a `{queueId}` group, left out when `users` is false. The notification
/// channel pushes the same groups.
pub(crate) fn observation_groups(
    queue: &QueueSpec,
    wanted: &dyn Fn(&str) -> bool,
    message_capacity: Option<u32>,
    users: bool,
) -> Vec<Value> {
    let interacting_agents = queue.on_queue_agents.saturating_sub(queue.idle_agents);
    let media_rows = [
        ("oWaiting", None, queue.waiting),
        ("oInteracting", None, queue.interacting(message_capacity)),
        ("oAlerting", None, queue.alerting),
    ];
    let user_rows = [
        ("oOnQueueUsers", Some("IDLE"), queue.idle_agents),
        ("oOnQueueUsers", Some("INTERACTING"), interacting_agents),
        ("oActiveUsers", None, queue.on_queue_agents),
        ("oMemberUsers", None, queue.on_queue_agents),
    ];
    let data = |rows: &[(&str, Option<&str>, u32)]| -> Vec<Value> {
        rows.iter()
            .filter(|(metric, _, _)| wanted(metric))
            .map(|(metric, qualifier, count)| {
                let mut row = json!({ "metric": metric, "stats": { "count": count } });
                if let Some(qualifier) = qualifier {
                    row["qualifier"] = json!(qualifier);
                }
                row
            })
            .collect()
    };
    let user_data = if users { data(&user_rows) } else { Vec::new() };
    [
        (json!({ "queueId": queue.id, "mediaType": "message" }), data(&media_rows)),
        (json!({ "queueId": queue.id }), user_data),
    ]
    .into_iter()
    .filter(|(_, data)| !data.is_empty())
    .map(|(group, data)| json!({ "group": group, "data": data }))
    .collect()
}

/// `GET /api/v2/routing/utilization` (`Utilization`): the org's max utilization per media type.
async fn get_utilization(State(sim): State<Sim>) -> Json<Value> {
    let media =
        |capacity: u32| json!({ "maximumCapacity": capacity, "interruptableMediaTypes": [], "includeNonAcd": false });
    let mut utilization = json!({ "call": media(1), "callback": media(1), "chat": media(4), "email": media(1) });
    if let Some(capacity) = sim.message_capacity() {
        utilization["message"] = media(capacity);
    }
    Json(json!({ "utilization": utilization, "labelUtilizations": {} }))
}

async fn media_estimated_wait(
    State(sim): State<Sim>,
    Path((queue_id, media_type)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let intent = match media_type.as_str() {
        "all" => "ALL",
        "call" => "CALL",
        "callback" => "CALLBACK",
        "chat" => "CHAT",
        "email" => "EMAIL",
        "videoComm" => "VIDEOCOMM",
        "message" => "MESSAGE",
        _ => {
            return Err(SimError::new(
                StatusCode::BAD_REQUEST,
                "invalid.value",
                "mediaType must be one of: all, call, callback, chat, email, videoComm, message",
            ))
        }
    };
    estimated_wait(&sim, &queue_id, intent)
}

async fn queue_estimated_wait(State(sim): State<Sim>, Path(queue_id): Path<String>) -> Result<Json<Value>> {
    // The simulator only models message routing, so the media-agnostic estimate is the message one.
    estimated_wait(&sim, &queue_id, "MESSAGE")
}

fn estimated_wait(sim: &Sim, queue_id: &str, intent: &str) -> Result<Json<Value>> {
    let queue = find_queue(sim, queue_id)?;
    Ok(Json(json!({
        "results": [{
            "intent": intent,
            "formula": "BEST",
            "estimatedWaitTimeSeconds": queue.estimated_wait_secs,
        }]
    })))
}

async fn get_queue(State(sim): State<Sim>, Path(queue_id): Path<String>) -> Result<Json<Value>> {
    let queue = find_queue(&sim, &queue_id)?;
    let mut media_settings = Map::new();
    if queue.accepts_messages {
        media_settings.insert(
            "message".to_owned(),
            json!({
                "enableAutoAnswer": false,
                "alertingTimeoutSeconds": 30,
                "serviceLevel": { "percentage": 0.8, "durationMs": 20000 },
            }),
        );
    }
    Ok(Json(json!({
        "id": queue.id,
        "name": queue.name,
        "memberCount": queue.on_queue_agents,
        "userMemberCount": queue.on_queue_agents,
        "joinedMemberCount": queue.on_queue_agents,
        "mediaSettings": media_settings,
        "selfUri": format!("/api/v2/routing/queues/{}", queue.id),
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagsBody {
    external_tag: Option<String>,
}

async fn put_tags(State(sim): State<Sim>, Path(conversation_id): Path<String>, body: Bytes) -> Result<StatusCode> {
    let conversation_id = parse_id(&conversation_id, "conversationId")?;
    let body: TagsBody = parse_json(&body)?;
    let tag = body.external_tag.ok_or_else(|| SimError::bad_request("externalTag is required"))?;
    if tag.chars().count() > MAX_EXTERNAL_TAG_CHARS {
        return Err(SimError::new(
            StatusCode::BAD_REQUEST,
            "constraint.validation",
            format!("externalTag must be at most {MAX_EXTERNAL_TAG_CHARS} characters"),
        ));
    }
    sim.set_external_tag(conversation_id, tag)?;
    Ok(StatusCode::ACCEPTED)
}

fn find_queue(sim: &Sim, queue_id: &str) -> Result<QueueSpec> {
    let id = parse_id(queue_id, "queueId")?;
    sim.queue(id).ok_or_else(|| SimError::not_found("queue"))
}

fn parse_id(raw: &str, what: &str) -> Result<Uuid> {
    Uuid::try_parse(raw).map_err(|_| SimError::bad_request(format!("{what} must be a UUID")))
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|error| SimError::bad_request(format!("The request body could not be parsed: {error}")))
}

#[cfg(test)]
mod tests;
