//! The Sunshine Conversations and Zendesk Support endpoints: routes, request parsing and the JSON
//! answers. Authentication, latency and faults are applied before these handlers by
//! [`crate::pipeline`].

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use crate::error::{Result, SimError};
use crate::state::{switchboard_json, PassMode};
use crate::{Endpoint, Sim};

const APP: &str = "/v2/apps/{app_id}";
const CONVERSATION: &str = "/v2/apps/{app_id}/conversations/{conversation_id}";
const MESSAGES: &str = "/v2/apps/{app_id}/conversations/{conversation_id}/messages";
const PASS_CONTROL: &str = "/v2/apps/{app_id}/conversations/{conversation_id}/passControl";
const SWITCHBOARDS: &str = "/v2/apps/{app_id}/switchboards";
const SWITCHBOARD_INTEGRATIONS: &str = "/v2/apps/{app_id}/switchboards/{switchboard_id}/switchboardIntegrations";
const AVAILABILITIES: &str = "/api/v2/agent_availabilities";
const GROUP: &str = "/api/v2/groups/{group_id}";

/// Largest page of agent availabilities.
const MAX_PAGE: usize = 100;

/// The routes, without the pipeline layer.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route(APP, get(get_app))
        .route(CONVERSATION, get(get_conversation))
        .route(MESSAGES, get(list_messages))
        .route(PASS_CONTROL, post(pass_control))
        .route(SWITCHBOARDS, get(list_switchboards))
        .route(SWITCHBOARD_INTEGRATIONS, get(list_switchboard_integrations))
        .route(AVAILABILITIES, get(agent_availabilities))
        .route(GROUP, get(get_group))
        .fallback(|| async { SimError::not_found("not_found", "Not found") })
}

/// Which endpoint a request is, from its method and matched route.
pub(crate) fn endpoint_for(method: &Method, matched_path: Option<&str>) -> Endpoint {
    match (method.as_str(), matched_path) {
        ("GET", Some(APP)) => Endpoint::GetApp,
        ("GET", Some(CONVERSATION)) => Endpoint::GetConversation,
        ("GET", Some(MESSAGES)) => Endpoint::ListMessages,
        ("POST", Some(PASS_CONTROL)) => Endpoint::PassControl,
        ("GET", Some(SWITCHBOARDS)) => Endpoint::ListSwitchboards,
        ("GET", Some(SWITCHBOARD_INTEGRATIONS)) => Endpoint::ListSwitchboardIntegrations,
        ("GET", Some(AVAILABILITIES)) => Endpoint::AgentAvailabilities,
        ("GET", Some(GROUP)) => Endpoint::GetGroup,
        _ => Endpoint::Other,
    }
}

fn check_app(sim: &Sim, app_id: &str) -> Result<()> {
    if app_id == sim.config().app_id {
        Ok(())
    } else {
        Err(SimError::not_found("app_not_found", "App not found"))
    }
}

async fn get_app(State(sim): State<Sim>, Path(app_id): Path<String>) -> Result<Json<Value>> {
    check_app(&sim, &app_id)?;
    Ok(Json(json!({
        "app": { "id": app_id, "displayName": "handoff simulator", "subdomain": null, "settings": {}, "metadata": null }
    })))
}

async fn get_conversation(
    State(sim): State<Sim>,
    Path((app_id, conversation_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_app(&sim, &app_id)?;
    Ok(Json(json!({ "conversation": sim.lookup(&conversation_id)? })))
}

async fn list_messages(
    State(sim): State<Sim>,
    Path((app_id, conversation_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_app(&sim, &app_id)?;
    sim.messages(&conversation_id).map(Json)
}

async fn pass_control(
    State(sim): State<Sim>,
    Path((app_id, conversation_id)): Path<(String, String)>,
    Extension(mode): Extension<PassMode>,
    body: Bytes,
) -> Result<Json<Value>> {
    check_app(&sim, &app_id)?;
    let body: Value = serde_json::from_slice(&body).map_err(|_| SimError::bad_request("the body must be JSON"))?;
    if !body.is_object() {
        return Err(SimError::bad_request("the body must be a JSON object"));
    }
    sim.pass_control(&conversation_id, &body, mode)?;
    Ok(Json(json!({})))
}

async fn list_switchboards(State(sim): State<Sim>, Path(app_id): Path<String>) -> Result<Json<Value>> {
    check_app(&sim, &app_id)?;
    let enabled = sim.state().switchboard_enabled;
    Ok(Json(json!({ "switchboards": [switchboard_json(enabled)] })))
}

async fn list_switchboard_integrations(
    State(sim): State<Sim>,
    Path((app_id, switchboard_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_app(&sim, &app_id)?;
    if switchboard_id != crate::config::SWITCHBOARD_ID {
        return Err(SimError::not_found("switchboard_not_found", "Switchboard not found"));
    }
    Ok(Json(json!({ "switchboardIntegrations": sim.integrations() })))
}

/// `GET /api/v2/agent_availabilities` (JSON:API, cursor pagination): `filter[channel_status]`
/// (`{channel}:{status}`), `page[size]` (≤ 100), `page[after]` (an agent id).
async fn agent_availabilities(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let filter = match query.get("filter[channel_status]") {
        Some(raw) => Some(
            raw.split_once(':')
                .map(|(channel, status)| (channel.to_owned(), status.to_owned()))
                .ok_or_else(|| SimError::bad_request("filter[channel_status] must be channel:status"))?,
        ),
        None => None,
    };
    let size = match query.get("page[size]") {
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| SimError::bad_request("page[size] must be 1..100"))?,
        None => MAX_PAGE,
    };
    let after = match query.get("page[after]") {
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| SimError::bad_request("page[after] is not a cursor"))?),
        None => None,
    };
    let mut agents = sim.agents();
    agents.sort_by_key(|a| a.id);
    let matching: Vec<_> = agents
        .into_iter()
        .filter(|a| after.is_none_or(|after| a.id > after))
        .filter(|a| filter.as_ref().is_none_or(|(channel, status)| channel == "messaging" && &a.status == status))
        .collect();
    let has_more = matching.len() > size;
    let page: Vec<_> = matching.into_iter().take(size).collect();
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let mut data = Vec::new();
    let mut included = Vec::new();
    for agent in &page {
        let id = format!("agent_availabilities|{}", agent.id);
        let channel_id = format!("{id}|channels|messaging");
        data.push(json!({
            "type": "agent_availabilities",
            "id": id,
            "attributes": { "agent_id": agent.id, "group_ids": agent.group_ids, "skills": [], "version": 1 },
            "relationships": { "channels": { "data": [{ "type": "channels", "id": channel_id }] } },
            "links": { "self": format!("http://{host}/api/v2/agent_availabilities/{}", agent.id) },
        }));
        let mut attributes = json!({
            "name": "messaging",
            "status": agent.status,
            "work_item_count": agent.work_item_count,
            "updated_at": "2026-12-03T10:00:00.000000Z",
        });
        if let Some(max) = agent.max_capacity {
            attributes["max_capacity"] = json!(max);
        }
        included.push(json!({ "type": "channels", "id": channel_id, "attributes": attributes }));
    }
    let after_cursor = page.last().filter(|_| has_more).map(|a| a.id.to_string());
    let next = after_cursor.as_ref().map(|cursor| {
        format!("http://{host}/api/v2/agent_availabilities?page%5Bafter%5D={cursor}&page%5Bsize%5D={size}")
    });
    Ok(Json(json!({
        "data": data,
        "included": included,
        "meta": { "has_more": has_more, "after_cursor": after_cursor, "before_cursor": null },
        "links": { "next": next, "prev": null },
    })))
}

async fn get_group(State(sim): State<Sim>, Path(group_id): Path<String>) -> Result<Json<Value>> {
    let missing = || SimError::not_found("RecordNotFound", "Not found");
    let id = group_id.parse::<u64>().map_err(|_| missing())?;
    let group = sim.state().groups.iter().find(|g| g.id == id).cloned().ok_or_else(missing)?;
    Ok(Json(json!({ "group": { "id": group.id, "name": group.name, "deleted": false } })))
}

#[cfg(test)]
mod tests;
