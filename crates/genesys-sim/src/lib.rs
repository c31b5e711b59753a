//! A stateful Genesys Cloud simulator for adapter tests, black-box tests, `handoff demo`,
//! `handoff simulator` and the load benchmark.
//!
//! One HTTP server answers both the login host (`POST /oauth/token`) and the API host (`/api/v2/…`),
//! so `GENESYS_BASE_URL` and `GENESYS_LOGIN_BASE_URL` both point at [`SimHandle::base_url`]. Shapes,
//! codes and headers follow `shared/reference/genesys-api.md`: camelCase JSON, an
//! `inin-correlation-id` on every answer, `ErrorBody` errors whose `contextId` is that id, and
//! `inin-ratelimit-*` headers when a rate limit is configured.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use genesys_sim::{spawn, ConversationKind, ConversationSpec, Endpoint, Fault, FaultKind, SimConfig};
//!
//! let handle = spawn(SimConfig::default()).await?;
//! let ids = handle.sim().create_conversation(ConversationSpec::new(ConversationKind::Bot));
//! handle.sim().push_fault(Fault::new(Endpoint::Replace, FaultKind::too_many_requests(2)));
//! // … point the client at handle.base_url(), then:
//! assert_eq!(handle.sim().count(Endpoint::Replace), 0);
//! # let _ = ids;
//! # Ok(())
//! # }
//! ```
//!
//! # Genesys endpoints
//! - `POST /oauth/token` (Basic client credentials, `grant_type=client_credentials`).
//! - `GET /api/v2/conversations/messages/{conversationId}`; unknown ids are created as bot
//!   conversations unless [`SimConfig::auto_create_conversations`] is off or [`Sim::mark_unknown`] was used.
//! - `PATCH /api/v2/conversations/messages/{cid}/participants/{pid}/attributes` (merge, 202).
//! - `POST /api/v2/conversations/messages/{cid}/participants/{pid}/replace` (blind transfer to a queue, 202).
//! - `POST /api/v2/analytics/queues/observations/query`.
//! - `GET /api/v2/routing/queues/{queueId}[/mediatypes/{mediaType}]/estimatedwaittime`.
//! - `GET /api/v2/routing/queues/{queueId}`.
//! - `PUT /api/v2/conversations/{conversationId}/tags` (at most [`MAX_EXTERNAL_TAG_CHARS`]).
//! - `GET /api/v2/routing/utilization` (the org's message `maximumCapacity`, [`Sim::set_message_capacity`]).
//!
//! Queues carry agents with several message conversations each ([`QueueSpec::agent_loads`]); the
//! observation query answers user metrics in a `{queueId}` group and conversation metrics
//! (`oWaiting`, `oInteracting`, `oAlerting`) in a `{queueId, mediaType: message}` group, and can
//! play an org that drops the user metrics under a `mediaType` filter
//! ([`SimConfig::user_metrics_under_media_filter`]).
//!
//! Each API call goes through: bearer token (401 `bad.credentials`), rate limit (429
//! `too.many.requests`), latency, the first matching [`Fault`], the endpoint's permission (403
//! `missing.permissions`, before any existence check), then the operation. Every answered call is
//! appended to the call log ([`Sim::calls`]). The per-call latency uses a precise wall-clock timer
//! (async-io), calibrated so calls see the configured latency on average; it does not follow a
//! paused tokio clock. Injected faults (latency, late answers) use `tokio::time::sleep`, so tests
//! of timing logic can run under `tokio::time::pause()`.
//!
//! # Admin API (no auth, JSON, not logged)
//! | call | effect |
//! |---|---|
//! | `GET /__admin/calls`, `DELETE /__admin/calls` | the call log; reset it (204) |
//! | `POST /__admin/faults` (a [`Fault`]), `DELETE /__admin/faults` | queue a fault; clear all (204) |
//! | `GET /__admin/queues`, `PUT /__admin/queues/{id}` (a [`QueueSpec`], `id` optional) | list; add or replace (200, the queue) |
//! | `POST /__admin/conversations` (a [`ConversationSpec`], or empty) | create (201, [`ConversationIds`]) |
//! | `GET /__admin/conversations/{id}`, `GET /__admin/conversations/{id}/tags` | the conversation JSON; `{"externalTag"}` |
//! | `POST /__admin/conversations/{id}/unknown` | lookups answer 404 (204) |
//! | `POST /__admin/tokens/revoke` | every token becomes invalid (204) |
//! | `PUT /__admin/latency` `{"ms": N}` | per-call latency (204) |
//! | `PUT /__admin/rate-limit` `{"perMinute": N or null}` | per-token allowance with `inin-ratelimit-*` headers and 429 past it (204) |
//! | `GET /__admin/notifications` | `{"channelsCreated","openSockets","subscriptions"}` |
//! | `PUT /__admin/notifications` `{"refuse"?, "heartbeatMs"?, "pushUserMetrics"?}` | channel knobs (204) |
//! | `POST /__admin/notifications/close`, `POST /__admin/notifications/expire` | `socket_closing` then close every socket; end every channel (204) |
//! | `PUT /__admin/utilization` `{"messageCapacity": N or null}` | the org's message capacity (204) |
//! | `PUT /__admin/observations` `{"userMetricsUnderMediaFilter": bool}` | the observation-shape knob (204) |
//! | `PUT /__admin/flow-replace` `{"refuse": "code"}` or `{"refuse": null}` | a replace of a flow participant answers 400 with that code, or is accepted again (204) |
//! | `POST /__admin/conversations/{id}/flow-transfer` `{"queueId"}` | the flow runs its own Transfer to ACD: the flow participant leaves, a queue participant joins, no `recentTransfers` entry (204) |
//!
//! # Layout
//! - `config`: [`SimConfig`], [`QueueSpec`] and the well-known queue ids ([`SUPPORT_QUEUE`], …).
//! - `state`: [`Sim`], the org behind one mutex, with its in-process controls and the call log.
//! - `conversation`: the `MessageConversation` model and what a replace does to it.
//! - `auth`: client credentials, tokens, rate limiting and call admission.
//! - `faults`: [`Fault`] and [`FaultKind`].
//! - `calls`: [`Endpoint`] and [`Call`].
//! - `pipeline`: the middleware that runs every Genesys call through auth, latency, faults,
//!   permissions, error rendering, headers and logging.
//! - `api`: the Genesys routes and handlers.
//! - `admin`: the `/__admin` routes.
//! - `notifications`: Notifications API channels, subscriptions and the channel WebSocket
//!   (pushed queue figures, heartbeats, `socket_closing`, expiry, refusal).
//! - `error`: `ErrorBody` answers.
//! - `server`: [`router`], [`serve`], [`spawn`], [`spawn_on`] and [`SimHandle`].

mod admin;
mod api;
mod auth;
mod calls;
mod config;
mod conversation;
mod error;
mod faults;
mod notifications;
mod pipeline;
mod server;
mod state;

pub use api::MAX_EXTERNAL_TAG_CHARS;
pub use calls::{Call, Endpoint};
pub use config::{
    QueueSpec, SimConfig, BILLING_QUEUE, DEFAULT_MAX_LOGGED_CALLS, EMPTY_QUEUE, FLOW_REPLACE_REFUSED, OVERFLOW_QUEUE,
    SUPPORT_QUEUE,
};
pub use conversation::{ConversationIds, ConversationKind, ConversationSpec};
pub use faults::{Fault, FaultKind};
pub use server::{router, serve, spawn, spawn_on, SimHandle};
pub use state::Sim;
