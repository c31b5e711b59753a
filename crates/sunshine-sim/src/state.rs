//! [`Sim`]: the simulated app behind one mutex, its in-process controls and the call log.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::auth::{self, Presented};
use crate::calls::{AuthKind, Call};
use crate::config::{
    AgentSpec, GroupSpec, SimConfig, AGENT_INTEGRATION_ID, AGENT_INTEGRATION_NAME, AGENT_INTEGRATION_TYPE,
    BOT_INTEGRATION_ID, BOT_INTEGRATION_NAME, SWITCHBOARD_ID,
};
use crate::conversation::{Conversation, ConversationSpec, Received};
use crate::error::{Result, SimError};
use crate::{Endpoint, Fault, FaultKind};

/// A switchboard integration (spec `switchboardIntegration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    /// Its id (24 hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The integration it delivers to.
    pub integration_id: String,
    /// `custom`, `zd:agentWorkspace`, …
    pub integration_type: String,
    /// Whether standby events are delivered.
    pub deliver_standby_events: bool,
    /// The integration `next` passes control to.
    pub next_switchboard_integration_id: Option<String>,
    /// Messages sent along on passControl.
    pub message_history_count: Option<u8>,
}

/// How a passControl is carried out (from the fault that applies to it, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassMode {
    /// Apply now (or after [`SimConfig::apply_delay`]).
    Normal,
    /// Answer 200, apply after this delay.
    ApplyLater(Duration),
    /// Answer 200, never apply.
    Fail,
}

pub(crate) struct CallRecord {
    pub(crate) endpoint: Endpoint,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) status: u16,
    pub(crate) auth: AuthKind,
    pub(crate) body: Option<Value>,
}

pub(crate) struct State {
    pub(crate) conversations: HashMap<String, Conversation>,
    unknown: HashSet<String>,
    pub(crate) switchboard_enabled: bool,
    pub(crate) integrations: Vec<Integration>,
    pub(crate) groups: Vec<GroupSpec>,
    pub(crate) agents: Vec<AgentSpec>,
    faults: VecDeque<Fault>,
    calls: VecDeque<Call>,
    counts: [usize; Endpoint::ALL.len()],
    next_seq: u64,
    jwts_seen: HashSet<String>,
    revoked: HashSet<String>,
    apply_delay: Duration,
    refuse_ended: Option<String>,
    latency: Duration,
    /// passControl failures reported asynchronously (`switchboard:passControl:failure`).
    failures: Vec<Value>,
}

struct Inner {
    config: SimConfig,
    started: Instant,
    state: Mutex<State>,
}

/// The simulated app. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("app_id", &self.inner.config.app_id).finish_non_exhaustive()
    }
}

fn default_integrations() -> Vec<Integration> {
    vec![
        Integration {
            id: BOT_INTEGRATION_ID.to_owned(),
            name: BOT_INTEGRATION_NAME.to_owned(),
            integration_id: "5ef21b86e933b7355c11c611".to_owned(),
            integration_type: "custom".to_owned(),
            deliver_standby_events: false,
            next_switchboard_integration_id: Some(AGENT_INTEGRATION_ID.to_owned()),
            message_history_count: None,
        },
        Integration {
            id: AGENT_INTEGRATION_ID.to_owned(),
            name: AGENT_INTEGRATION_NAME.to_owned(),
            integration_id: "5ef21b86e933b7355c11c605".to_owned(),
            integration_type: AGENT_INTEGRATION_TYPE.to_owned(),
            deliver_standby_events: false,
            next_switchboard_integration_id: None,
            message_history_count: None,
        },
    ]
}

/// A random 24-character lower-case hex id (the shape of every Sunshine id, api-notes §7).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..24].to_owned()
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Sim {
    /// A simulator in the state `config` describes.
    pub fn new(config: SimConfig) -> Self {
        let state = State {
            conversations: HashMap::new(),
            unknown: HashSet::new(),
            switchboard_enabled: true,
            integrations: default_integrations(),
            groups: config.groups.clone(),
            agents: config.agents.clone(),
            faults: VecDeque::new(),
            calls: VecDeque::new(),
            counts: [0; Endpoint::ALL.len()],
            next_seq: 1,
            jwts_seen: HashSet::new(),
            revoked: HashSet::new(),
            apply_delay: config.apply_delay,
            refuse_ended: config.refuse_ended.clone(),
            latency: config.latency,
            failures: Vec::new(),
        };
        Self { inner: Arc::new(Inner { config, started: Instant::now(), state: Mutex::new(state) }) }
    }

    /// The configuration the app started from.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ----- conversations -------------------------------------------------------------------

    /// Creates (or re-creates) a conversation and returns its id; an id marked unknown becomes
    /// known again.
    pub fn create_conversation(&self, spec: ConversationSpec) -> String {
        let id = spec.id.unwrap_or_else(new_id);
        let conversation = Conversation::new(id.clone(), spec.state, now_text());
        let mut state = self.state();
        state.unknown.remove(&id);
        state.conversations.insert(id.clone(), conversation);
        id
    }

    /// Makes reads and passControl of `id` answer 404 `conversation_not_found` (the conversation
    /// is deleted, and not auto-created again).
    pub fn mark_unknown(&self, id: &str) {
        let mut state = self.state();
        state.conversations.remove(id);
        state.unknown.insert(id.to_owned());
    }

    /// The user ends the conversation (`conversation:endedByUser` becomes the last message).
    /// Returns false when there is no such conversation.
    pub fn end_conversation(&self, id: &str) -> bool {
        self.state().conversations.get_mut(id).map(|c| c.ended = true).is_some()
    }

    /// An agent answers the conversation in Zendesk (invisible to Sunshine reads). Returns false
    /// when there is no such conversation.
    pub fn agent_answers(&self, id: &str) -> bool {
        self.state().conversations.get_mut(id).map(|c| c.agent_answered = true).is_some()
    }

    /// The active switchboard integration id of a conversation (`None`: none, or no conversation).
    pub fn active_integration(&self, id: &str) -> Option<String> {
        self.state().conversations.get(id)?.active.clone()
    }

    /// Every passControl the conversation received, oldest first.
    pub fn received(&self, id: &str) -> Vec<Received> {
        self.state().conversations.get(id).map(|c| c.received.clone()).unwrap_or_default()
    }

    /// The admin view of a conversation: the API's `conversation` object plus `ended`,
    /// `agentAnswered` and `received`.
    pub fn conversation_view(&self, id: &str) -> Option<Value> {
        let state = self.state();
        let conversation = state.conversations.get(id)?;
        let mut view = conversation.to_json(&state.integrations);
        view["ended"] = json!(conversation.ended);
        view["agentAnswered"] = json!(conversation.agent_answered);
        view["received"] = json!(conversation.received);
        Some(view)
    }

    /// passControl failures reported asynchronously so far (`switchboard:passControl:failure`
    /// events, as a webhook would carry them).
    pub fn failures(&self) -> Vec<Value> {
        self.state().failures.clone()
    }

    // ----- switchboard, groups, agents -----------------------------------------------------

    /// The switchboard integrations now.
    pub fn integrations(&self) -> Vec<Integration> {
        self.state().integrations.clone()
    }

    /// Deletes a switchboard integration; a passControl naming it then answers 404
    /// `switchboard_integration_not_found`. Returns false when there was none.
    pub fn remove_integration(&self, id: &str) -> bool {
        let mut state = self.state();
        let before = state.integrations.len();
        state.integrations.retain(|i| i.id != id);
        before != state.integrations.len()
    }

    /// Enables or disables the switchboard.
    pub fn set_switchboard_enabled(&self, enabled: bool) {
        self.state().switchboard_enabled = enabled;
    }

    /// Adds a Zendesk group or renames it.
    pub fn put_group(&self, group: GroupSpec) {
        let mut state = self.state();
        state.groups.retain(|g| g.id != group.id);
        state.groups.push(group);
    }

    /// Replaces every agent of `group` with `agents` (their `group_ids` are left as given).
    pub fn set_group_agents(&self, group: u64, agents: Vec<AgentSpec>) {
        let mut state = self.state();
        state.agents.retain(|a| !a.group_ids.contains(&group));
        state.agents.extend(agents);
    }

    /// Every agent now.
    pub fn agents(&self) -> Vec<AgentSpec> {
        self.state().agents.clone()
    }

    // ----- credentials, knobs, faults ------------------------------------------------------

    /// Every JWT seen so far is refused from now on (401 `unauthorized`); a newly signed one is
    /// accepted. Basic credentials are not affected (queue a 401 fault for those).
    pub fn revoke_credentials(&self) {
        let mut state = self.state();
        let seen: Vec<String> = state.jwts_seen.iter().cloned().collect();
        state.revoked.extend(seen);
    }

    /// Distinct valid JWTs seen so far (each re-signing counts once).
    pub fn jwts_seen(&self) -> usize {
        self.state().jwts_seen.len()
    }

    /// Sets [`SimConfig::apply_delay`] from now on.
    pub fn set_apply_delay(&self, delay: Duration) {
        self.state().apply_delay = delay;
    }

    /// Sets [`SimConfig::refuse_ended`] from now on.
    pub fn set_refuse_ended(&self, code: Option<String>) {
        self.state().refuse_ended = code;
    }

    /// Sets the latency added to every call from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Queues a fault behind the ones already queued.
    pub fn push_fault(&self, fault: Fault) {
        if fault.times > 0 {
            self.state().faults.push_back(fault);
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    // ----- call log ------------------------------------------------------------------------

    /// The call log, oldest first (at most [`SimConfig::max_logged_calls`] entries).
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.iter().cloned().collect()
    }

    /// How many calls of `endpoint` were answered since start or the last [`Sim::reset_calls`].
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.state().counts[endpoint.index()]
    }

    /// Empties the call log and zeroes the counts (sequence numbers keep counting).
    pub fn reset_calls(&self) {
        let mut state = self.state();
        state.calls.clear();
        state.counts = [0; Endpoint::ALL.len()];
    }

    pub(crate) fn record(&self, record: CallRecord) {
        let at = self.inner.started.elapsed();
        let limit = self.inner.config.max_logged_calls;
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.counts[record.endpoint.index()] += 1;
        if limit == 0 {
            return;
        }
        if state.calls.len() >= limit {
            state.calls.pop_front();
        }
        state.calls.push_back(Call {
            seq,
            endpoint: record.endpoint,
            method: record.method,
            path: record.path,
            query: record.query,
            status: record.status,
            auth: record.auth,
            body: record.body,
            at,
        });
    }

    // ----- the pipeline's admission --------------------------------------------------------

    /// Authenticates a call and takes its fault and latency, under one lock.
    pub(crate) fn admit(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
    ) -> (AuthKind, Result<(Duration, Option<FaultKind>)>) {
        let presented = auth::presented(headers);
        let kind = presented.kind();
        let config = &self.inner.config;
        let mut state = self.state();
        let authenticated = match (&presented, endpoint.is_support()) {
            (Presented::Basic { user, password }, true) => {
                user.strip_suffix("/token") == Some(config.support_email.as_str()) && *password == config.support_token
            }
            (Presented::Basic { user, password }, false) => *user == config.key_id && *password == config.key_secret,
            (Presented::Bearer(token), false) => {
                let now = chrono::Utc::now().timestamp();
                let valid = !state.revoked.contains(token) && auth::jwt_valid(config, token, now);
                if valid {
                    state.jwts_seen.insert(token.clone());
                }
                valid
            }
            _ => false,
        };
        if !authenticated {
            return (kind, Err(SimError::unauthorized()));
        }
        let fault = state.faults.iter().position(|f| f.matches(endpoint)).and_then(|index| {
            let fault = state.faults.get_mut(index)?;
            fault.times = fault.times.saturating_sub(1);
            let kind = fault.kind.clone();
            if fault.times == 0 {
                state.faults.remove(index);
            }
            Some(kind)
        });
        (kind, Ok((state.latency, fault)))
    }

    // ----- operations ----------------------------------------------------------------------

    /// GetConversation: the conversation, auto-created as a bot conversation when configured.
    pub(crate) fn lookup(&self, id: &str) -> Result<Value> {
        let mut state = self.state();
        if !state.conversations.contains_key(id) {
            if !self.inner.config.auto_create_conversations || state.unknown.contains(id) {
                return Err(SimError::conversation_not_found());
            }
            let conversation = Conversation::new(id.to_owned(), Default::default(), now_text());
            state.conversations.insert(id.to_owned(), conversation);
        }
        let conversation = state.conversations.get(id).ok_or_else(SimError::conversation_not_found)?;
        Ok(conversation.to_json(&state.integrations))
    }

    /// ListMessages: the latest page.
    pub(crate) fn messages(&self, id: &str) -> Result<Value> {
        let state = self.state();
        state.conversations.get(id).map(Conversation::messages_json).ok_or_else(SimError::conversation_not_found)
    }

    /// PassControl: validates the body, resolves the target, then applies (now, later or never).
    pub(crate) fn pass_control(&self, id: &str, body: &Value, mode: PassMode) -> Result<()> {
        let target = body
            .get("switchboardIntegration")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SimError::bad_request("switchboardIntegration is required and must be a string"))?;
        let metadata = match body.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(SimError::bad_request("metadata must be a flat object")),
        };
        if let Some((key, _)) =
            metadata.iter().find(|(_, v)| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
        {
            return Err(SimError::bad_request(format!(
                "metadata.{key}: strings, numbers and booleans are the only supported values"
            )));
        }
        let size = serde_json::to_vec(&metadata).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > self.inner.config.metadata_limit {
            return Err(SimError::bad_request(format!(
                "metadata is limited to {} bytes in size",
                self.inner.config.metadata_limit
            )));
        }
        let mut guard = self.state();
        let state = &mut *guard;
        let conversation = state.conversations.get_mut(id).ok_or_else(SimError::conversation_not_found)?;
        if conversation.ended {
            if let Some(code) = &state.refuse_ended {
                return Err(SimError::bad_request("The conversation has ended").with_code(code));
            }
        }
        let target_id = resolve(&state.integrations, target, conversation.active.as_deref())?;
        let apply_now = mode == PassMode::Normal && state.apply_delay.is_zero();
        conversation.received.push(Received {
            switchboard_integration: target_id.clone(),
            metadata,
            applied: apply_now,
        });
        let index = conversation.received.len() - 1;
        if apply_now {
            conversation.active = Some(target_id);
            conversation.pending = None;
            return Ok(());
        }
        let later = match mode {
            PassMode::Normal => Some(state.apply_delay),
            PassMode::ApplyLater(delay) => Some(delay),
            PassMode::Fail => None,
        };
        match later {
            Some(delay) => {
                let sim = self.clone();
                let id = id.to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    sim.apply(&id, index);
                });
            }
            None => state.failures.push(json!({
                "type": "switchboard:passControl:failure",
                "payload": {
                    "conversation": { "id": id },
                    "error": { "code": "switchboard_invalid_target", "message": "The target could not become active." },
                },
            })),
        }
        Ok(())
    }

    fn apply(&self, id: &str, index: usize) {
        let mut state = self.state();
        if let Some(conversation) = state.conversations.get_mut(id) {
            if let Some(received) = conversation.received.get_mut(index) {
                received.applied = true;
                conversation.active = Some(received.switchboard_integration.clone());
                conversation.pending = None;
            }
        }
    }
}

impl SimError {
    fn with_code(mut self, code: &str) -> Self {
        code.clone_into(&mut self.code);
        self
    }
}

/// The target of a passControl: by `id`, else `name`, else `integrationType` (ambiguity is a 400),
/// or `next` (spec `passControlBody.switchboardIntegration`).
fn resolve(integrations: &[Integration], target: &str, active: Option<&str>) -> Result<String> {
    let missing = || {
        SimError::new(StatusCode::NOT_FOUND, "switchboard_integration_not_found", "Switchboard integration not found")
    };
    if target == "next" {
        let current = integrations.iter().find(|i| Some(i.id.as_str()) == active).ok_or_else(missing)?;
        let next = current.next_switchboard_integration_id.clone().ok_or_else(missing)?;
        return integrations.iter().find(|i| i.id == next).map(|i| i.id.clone()).ok_or_else(missing);
    }
    if let Some(found) =
        integrations.iter().find(|i| i.id == target).or_else(|| integrations.iter().find(|i| i.name == target))
    {
        return Ok(found.id.clone());
    }
    let by_type: Vec<&Integration> = integrations.iter().filter(|i| i.integration_type == target).collect();
    match by_type.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(missing()),
        _ => Err(SimError::bad_request(format!("switchboardIntegration `{target}` is ambiguous"))),
    }
}

/// The switchboard as ListSwitchboards answers it.
pub(crate) fn switchboard_json(enabled: bool) -> Value {
    json!({
        "id": SWITCHBOARD_ID,
        "enabled": enabled,
        "defaultSwitchboardIntegrationId": BOT_INTEGRATION_ID,
    })
}
