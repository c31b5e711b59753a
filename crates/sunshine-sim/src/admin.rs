//! The admin API under `/__admin`: the in-process controls of [`Sim`] over HTTP. No auth, JSON in
//! and out, not in the call log.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{AgentSpec, GroupSpec};
use crate::{Call, ConversationSpec, Fault, Sim};

/// The admin routes, to be nested under `/__admin`.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/calls", get(list_calls).delete(reset_calls))
        .route("/faults", post(push_fault).delete(clear_faults))
        .route("/conversations", post(create_conversation))
        .route("/conversations/{id}", get(get_conversation))
        .route("/conversations/{id}/unknown", post(mark_unknown))
        .route("/conversations/{id}/end", post(end_conversation))
        .route("/conversations/{id}/answer", post(agent_answers))
        .route("/credentials", get(credentials))
        .route("/credentials/revoke", post(revoke))
        .route("/switchboard", get(switchboard).put(set_switchboard))
        .route("/switchboard-integrations/{id}", delete(remove_integration))
        .route("/groups/{id}", put(put_group))
        .route("/agents", get(list_agents))
        .route("/apply-delay", put(set_apply_delay))
        .route("/refuse-ended", put(set_refuse_ended))
        .route("/latency", put(set_latency))
        .route("/failures", get(failures))
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

fn missing() -> AdminError {
    AdminError(StatusCode::NOT_FOUND, "no such conversation".into())
}

async fn list_calls(State(sim): State<Sim>) -> Json<Vec<Call>> {
    Json(sim.calls())
}

async fn reset_calls(State(sim): State<Sim>) -> StatusCode {
    sim.reset_calls();
    StatusCode::NO_CONTENT
}

async fn push_fault(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    sim.push_fault(parse::<Fault>(&body)?);
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(sim): State<Sim>) -> StatusCode {
    sim.clear_faults();
    StatusCode::NO_CONTENT
}

async fn create_conversation(State(sim): State<Sim>, body: Bytes) -> AdminResult<(StatusCode, Json<Value>)> {
    let spec: ConversationSpec = if body.is_empty() { ConversationSpec::default() } else { parse(&body)? };
    let id = sim.create_conversation(spec);
    let view = sim.conversation_view(&id).ok_or_else(missing)?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn get_conversation(State(sim): State<Sim>, Path(id): Path<String>) -> AdminResult<Json<Value>> {
    sim.conversation_view(&id).map(Json).ok_or_else(missing)
}

async fn mark_unknown(State(sim): State<Sim>, Path(id): Path<String>) -> StatusCode {
    sim.mark_unknown(&id);
    StatusCode::NO_CONTENT
}

async fn end_conversation(State(sim): State<Sim>, Path(id): Path<String>) -> AdminResult<StatusCode> {
    sim.end_conversation(&id).then_some(StatusCode::NO_CONTENT).ok_or_else(missing)
}

async fn agent_answers(State(sim): State<Sim>, Path(id): Path<String>) -> AdminResult<StatusCode> {
    sim.agent_answers(&id).then_some(StatusCode::NO_CONTENT).ok_or_else(missing)
}

async fn credentials(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "jwtsSeen": sim.jwts_seen() }))
}

async fn revoke(State(sim): State<Sim>) -> StatusCode {
    sim.revoke_credentials();
    StatusCode::NO_CONTENT
}

async fn switchboard(State(sim): State<Sim>) -> Json<Value> {
    let enabled = sim.state().switchboard_enabled;
    Json(
        json!({ "switchboard": crate::state::switchboard_json(enabled), "switchboardIntegrations": sim.integrations() }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchboardBody {
    enabled: bool,
}

async fn set_switchboard(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: SwitchboardBody = parse(&body)?;
    sim.set_switchboard_enabled(body.enabled);
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_integration(State(sim): State<Sim>, Path(id): Path<String>) -> AdminResult<StatusCode> {
    if sim.remove_integration(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError(StatusCode::NOT_FOUND, "no such switchboard integration".into()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GroupAgent {
    id: u64,
    #[serde(default = "online")]
    status: String,
    #[serde(default)]
    work_item_count: u32,
    #[serde(default)]
    max_capacity: Option<u32>,
}

fn online() -> String {
    "online".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: Option<String>,
    #[serde(default)]
    agents: Vec<GroupAgent>,
}

async fn put_group(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> AdminResult<StatusCode> {
    let id: u64 = id.parse().map_err(|_| AdminError(StatusCode::BAD_REQUEST, "group id must be digits".into()))?;
    let body: GroupBody = parse(&body)?;
    sim.put_group(GroupSpec { id, name: body.name.unwrap_or_else(|| format!("Group {id}")) });
    let agents = body
        .agents
        .into_iter()
        .map(|a| AgentSpec {
            id: a.id,
            group_ids: vec![id],
            status: a.status,
            work_item_count: a.work_item_count,
            max_capacity: a.max_capacity,
        })
        .collect();
    sim.set_group_agents(id, agents);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_agents(State(sim): State<Sim>) -> Json<Vec<AgentSpec>> {
    Json(sim.agents())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MsBody {
    ms: u64,
}

async fn set_apply_delay(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: MsBody = parse(&body)?;
    sim.set_apply_delay(Duration::from_millis(body.ms));
    Ok(StatusCode::NO_CONTENT)
}

async fn set_latency(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: MsBody = parse(&body)?;
    sim.set_latency(Duration::from_millis(body.ms));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefuseBody {
    code: Option<String>,
}

async fn set_refuse_ended(State(sim): State<Sim>, body: Bytes) -> AdminResult<StatusCode> {
    let body: RefuseBody = parse(&body)?;
    sim.set_refuse_ended(body.code);
    Ok(StatusCode::NO_CONTENT)
}

async fn failures(State(sim): State<Sim>) -> Json<Vec<Value>> {
    Json(sim.failures())
}
