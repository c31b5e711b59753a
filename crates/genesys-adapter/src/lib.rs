//! The Genesys Cloud adapter of `handoff`: implements the domain's [`QueuePort`], [`TransferPort`]
//! and [`AnalyticsPort`] against the real Platform API (CONTRACT §5, `reference/genesys-api.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use handoff_genesys::{GenesysClient, GenesysConfig, Region};
//!
//! let region = Region::parse("eu-west-1")?;
//! let (api, login) = GenesysConfig::resolve_urls(region, None, None)?;
//! let config = GenesysConfig::new("client-id", "client-secret".to_owned().into(), api, login);
//! let genesys: Arc<GenesysClient> = GenesysClient::shared(config)?;
//! genesys.obtain_token().await?;
//! // Arc<GenesysClient> coerces to Arc<dyn QueuePort>, Arc<dyn TransferPort>, Arc<dyn AnalyticsPort>.
//! # Ok(()) }
//! ```
//!
//! | port method | Genesys call |
//! |---|---|
//! | `TransferPort::locate` | `GET /api/v2/conversations/messages/{id}` |
//! | `TransferPort::write_context` | `PATCH /api/v2/conversations/messages/{id}/participants/{customer}/attributes` |
//! | `TransferPort::transfer` | `POST /api/v2/conversations/messages/{id}/participants/{holder}/replace` |
//! | `QueuePort::capacity` | `POST /api/v2/analytics/queues/observations/query` (+ `GET /api/v2/routing/utilization` every 5 minutes, `GET …/mediatypes/message/estimatedwaittime`) |
//! | `AnalyticsPort::record` | `PUT /api/v2/conversations/{id}/tags` |
//!
//! Upstream discipline (CONTRACT §5.9) lives in [`GenesysClient`]: one shared token with
//! single-flight refresh, a global concurrency cap, per-attempt and total deadlines, retries with
//! full-jitter backoff for reads and idempotent writes, `Retry-After` for 429, and a transfer that
//! is repeated only when it surely did not happen (otherwise [`PortError::Indeterminate`]).
//!
//! # Layout
//! - [`regions`]: the region table, [`Region::parse`] and the API/login base URLs.
//! - `config`: [`GenesysConfig`] (credentials, resolved URLs, timeouts, budget, caps, TTL).
//! - `ids`: [`GenesysIds`], the platform's id rules (UUIDs, any case, canonical lower case).
//! - `error`: [`GenesysError`], the adapter-internal error, and its mapping to [`PortError`].
//! - `token`: the client-credentials token cache (single flight, early refresh, 401 invalidation).
//! - `client`: [`GenesysClient`], the HTTP client, the retry policy and rate-limit awareness.
//! - `retry`: backoff with jitter, `Retry-After`/`inin-ratelimit-*` parsing, error-body codes.
//! - `budget`: the per-token call budget from `inin-ratelimit-*` (foreground first, a reserve and
//!   pacing for background work, refusal with the reset when the window is spent), and
//!   [`in_background`].
//! - `capacity`: the per-queue, single-flight capacity snapshot cache.
//! - `notifications`: push instead of poll: the Notifications channel (create, WebSocket,
//!   subscriptions, heartbeats, `socket_closing`, expiry, reconnects) and the store of pushed
//!   queue figures that answers `QueuePort::capacity` with no call while the channel is live.
//! - `capacity`: the per-queue, single-flight capacity snapshot cache, and the per-queue limiter
//!   of the "figures incomplete" warning.
//! - [`observations`]: queue figures from observation data ([`observations::queue_figures`]),
//!   shared by the observation query and the notification channel.
//! - `utilization`: the message capacity ([`MessageCapacitySource`]): the org's utilization,
//!   cached for 5 minutes, or a fixed value.
//! - `wire`: private Genesys DTOs and their translation to domain types.
//! - `ports`: the port implementations, [`GenesysClient::get_queue`] and
//!   [`GenesysClient::probe_permission`], and the mapping of Genesys answers to [`PortError`].
//! - `stats`: atomic counters and the [`ClientStats`] snapshot for metrics.
//! - `fuzzing` (feature `fuzzing` only, hidden): entry points for the fuzz targets in `fuzz/`.
//!
//! [`QueuePort`]: handoff_domain::ports::QueuePort
//! [`TransferPort`]: handoff_domain::ports::TransferPort
//! [`AnalyticsPort`]: handoff_domain::ports::AnalyticsPort
//! [`PortError`]: handoff_domain::ports::PortError
//! [`PortError::Indeterminate`]: handoff_domain::ports::PortError::Indeterminate

mod budget;
mod capacity;
mod client;
mod config;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod notifications;
pub mod observations;
mod ports;
pub mod regions;
mod retry;
mod stats;
mod token;
mod utilization;
mod wire;

pub use budget::{
    in_background, BudgetSnapshot, Priority, DEFAULT_HANDOFF_CALLS, DEFAULT_RESERVE_PERCENT, PROMISE_HORIZON,
    RATE_WINDOW,
};
pub use client::GenesysClient;
pub use config::{
    GenesysConfig, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CAPACITY_TTL, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TOTAL_BUDGET, DEFAULT_UTILIZATION_REFRESH,
};
pub use error::{GenesysError, Result};
pub use ids::{GenesysIds, NOT_A_UUID};
pub use notifications::{
    ChannelProbe, ChannelStats, NotificationSettings, DEFAULT_FIGURES_MAX_AGE, UNPUSHED_GROUP_TTL,
};
pub use ports::{Permission, PermissionStatus, ReplaceAnswer};
pub use regions::Region;
pub use retry::RateLimitSnapshot;
pub use stats::{ClientStats, Endpoint, RequestCount, StatusClass};
pub use utilization::MessageCapacitySource;
pub use wire::QueueInfo;
