//! A stateful Zendesk Sunshine Conversations simulator for the Sunshine adapter's tests, the
//! conformance suite, `handoff demo --platform sunshine` and `handoff simulator`.
//!
//! One HTTP server answers the Sunshine Conversations API (`/v2/apps/{appId}/…`) and the two
//! Zendesk Support endpoints the adapter uses for capacity and checks (`/api/v2/…`), so
//! `SUNSHINE_BASE_URL` and the Zendesk Support base both point at [`SimHandle::base_url`]. Shapes
//! and codes follow `docs/sunshine/api-notes.md` (the public OpenAPI spec): error bodies are
//! `{"errors":[{"code","title"}]}`; no correlation header is sent (none is documented).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sunshine_sim::{spawn, ConversationSpec, ConversationState, Endpoint, Fault, FaultKind, SimConfig};
//!
//! let handle = spawn(SimConfig::default()).await?;
//! let id = handle.sim().create_conversation(ConversationSpec::new(ConversationState::Bot));
//! handle.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::AcceptThenFail));
//! // … point the adapter at handle.base_url(), then:
//! assert_eq!(handle.sim().count(Endpoint::PassControl), 0);
//! assert!(handle.sim().received(&id).is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # The app
//! App [`APP_ID`], key [`KEY_ID`] / [`KEY_SECRET`]; one switchboard ([`SWITCHBOARD_ID`], enabled)
//! with two switchboard integrations: the bot ([`BOT_INTEGRATION_ID`], name `bot`, type `custom`,
//! default, `next` → the agent side) and the Agent Workspace ([`AGENT_INTEGRATION_ID`], name
//! `zd-agentWorkspace`, type `zd:agentWorkspace`). Zendesk groups [`SUPPORT_GROUP`] (one idle and
//! one busy messaging agent), [`BILLING_GROUP`] (one idle, one with room), [`EMPTY_GROUP`] (nobody
//! online); Support credentials [`SUPPORT_EMAIL`]`/token` : [`SUPPORT_TOKEN`].
//!
//! # Endpoints
//! - `GET /v2/apps/{appId}`: `{"app":{…}}`; another app id: 404 `app_not_found`.
//! - `GET /v2/apps/{appId}/conversations/{id}`: `{"conversation":{…}}` with
//!   `activeSwitchboardIntegration` / `pendingSwitchboardIntegration` (`id`, `name`,
//!   `integrationId`, `integrationType`), each omitted when unset; unknown ids are created as bot
//!   conversations unless [`SimConfig::auto_create_conversations`] is off or [`Sim::mark_unknown`]
//!   was used (then 404 `conversation_not_found`).
//! - `GET …/conversations/{id}/messages`: the latest page; `conversation:endedByUser` activity
//!   last once the user ended it.
//! - `POST …/conversations/{id}/passControl` `{"switchboardIntegration", "metadata"?}`: the target by
//!   id, name, type (ambiguous: 400) or `next`; unknown: 404 `switchboard_integration_not_found`;
//!   metadata must be flat (string/number/bool values) and at most [`SimConfig::metadata_limit`]
//!   serialized bytes, else 400 `bad_request`; `200 {}`. The metadata is recorded per conversation
//!   ([`Sim::received`]); control changes now, after [`SimConfig::apply_delay`], later
//!   ([`FaultKind::AcceptThenApplyLater`]) or never ([`FaultKind::AcceptThenFail`], which records a
//!   `switchboard:passControl:failure` event, [`Sim::failures`]). An ended conversation accepts it
//!   unless [`SimConfig::refuse_ended`] names a 400 code.
//! - `GET /v2/apps/{appId}/switchboards`, `GET …/switchboards/{id}/switchboardIntegrations`.
//! - Zendesk Support: `GET /api/v2/agent_availabilities` (JSON:API; `filter[channel_status]=
//!   messaging:online`, `page[size]`, `page[after]`; `meta.has_more`/`after_cursor`) and
//!   `GET /api/v2/groups/{id}` (404 `RecordNotFound`).
//!
//! Each call goes through: authentication (401 `unauthorized`), latency, the first matching
//! [`Fault`], then the operation; every answered call is appended to the call log ([`Sim::calls`],
//! never with credentials). Sunshine paths take Basic (key id : secret) or a Bearer JWT (HS256,
//! header `kid` = key id, payload `scope: app`, `exp` honoured when present; see
//! [`sign_app_jwt`]); Support paths take Basic `{email}/token:{token}`. Faults and the apply delay
//! use `tokio::time`, so timing tests can run under `tokio::time::pause()`.
//!
//! # Admin API (no auth, JSON, not logged)
//! | call | effect |
//! |---|---|
//! | `GET /__admin/calls`, `DELETE /__admin/calls` | the call log ([`Call`]); reset it (204) |
//! | `POST /__admin/faults` (a [`Fault`]), `DELETE /__admin/faults` | queue a fault; clear all (204) |
//! | `POST /__admin/conversations` `{"id"?, "state"?}` ([`ConversationSpec`]; states `bot`, `queued`, `agentHas`, `pending`, `unheld`, `ended`) | create (201, the conversation view) |
//! | `GET /__admin/conversations/{id}` | the API's conversation object plus `ended`, `agentAnswered` and `received` (every passControl: `switchboardIntegration`, `metadata`, `applied`) |
//! | `POST /__admin/conversations/{id}/unknown` | reads and passControl answer 404 `conversation_not_found` (204) |
//! | `POST /__admin/conversations/{id}/end`, `…/answer` | the user ends it; an agent answers it (204) |
//! | `GET /__admin/credentials` | `{"jwtsSeen": N}`: distinct valid JWTs seen |
//! | `POST /__admin/credentials/revoke` | every JWT seen so far is refused (204) |
//! | `GET /__admin/switchboard`, `PUT /__admin/switchboard` `{"enabled"}` | the switchboard and its integrations; enable/disable (204) |
//! | `DELETE /__admin/switchboard-integrations/{id}` | delete one (204) |
//! | `PUT /__admin/groups/{id}` `{"name"?, "agents":[{"id","status"?,"workItemCount"?,"maxCapacity"?}]}` | add a group / replace its agents (204) |
//! | `GET /__admin/agents` | every agent ([`AgentSpec`]) |
//! | `PUT /__admin/apply-delay` `{"ms"}`, `PUT /__admin/latency` `{"ms"}` | the knobs (204) |
//! | `PUT /__admin/refuse-ended` `{"code": "…" or null}` | passControl on an ended conversation: 400 with that code, or accepted (204) |
//! | `GET /__admin/failures` | the `switchboard:passControl:failure` events |

mod admin;
mod api;
mod auth;
mod calls;
mod config;
mod conversation;
mod error;
mod faults;
mod pipeline;
mod server;
mod state;

pub use auth::sign_app_jwt;
pub use calls::{AuthKind, Call, Endpoint};
pub use config::{
    AgentSpec, GroupSpec, SimConfig, AGENT_INTEGRATION_ID, AGENT_INTEGRATION_NAME, AGENT_INTEGRATION_TYPE, APP_ID,
    BILLING_GROUP, BOT_INTEGRATION_ID, BOT_INTEGRATION_NAME, DEFAULT_MAX_LOGGED_CALLS, DEFAULT_METADATA_LIMIT,
    EMPTY_GROUP, KEY_ID, KEY_SECRET, SUPPORT_EMAIL, SUPPORT_GROUP, SUPPORT_TOKEN, SWITCHBOARD_ID,
};
pub use conversation::{ConversationSpec, ConversationState, Received};
pub use faults::{Fault, FaultKind};
pub use server::{router, serve, spawn, spawn_on, SimHandle};
pub use state::{new_id, Integration, Sim};
