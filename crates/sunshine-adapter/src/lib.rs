//! The Zendesk Sunshine Conversations adapter of `handoff` (ADR 0004; every fact and its source in
//! `docs/sunshine/api-notes.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use handoff_sunshine::{SunshineClient, SunshineConfig};
//!
//! let config = SunshineConfig::from_settings(|name| std::env::var(name).ok())?;
//! let sunshine = SunshineClient::shared(config)?;
//! sunshine.resolve_integrations().await?; // the agent-side switchboard integration, by id
//! let located = sunshine.locate_control("029c31f25a21b47effd7be90", None).await?;
//! # let _ = located;
//! # Ok(()) }
//! ```
//!
//! | operation | Sunshine call |
//! |---|---|
//! | locate | `GET /v2/apps/{appId}/conversations/{id}` (+ `GET …/messages` with `SUNSHINE_ENDED_CHECK=messages`) |
//! | context + transfer | one `POST /v2/apps/{appId}/conversations/{id}/passControl` `{"switchboardIntegration": <agent-side id>, "metadata": {…}}`, then ≤ `SUNSHINE_CONFIRM_READS` reads |
//! | capacity | Zendesk Support `GET /api/v2/agent_availabilities?filter[channel_status]=messaging:online` (paged), only with Support credentials; otherwise unknown, no call |
//! | analytics | none: the reason travels in the passControl metadata |
//! | startup / check | `GET /v2/apps/{appId}`, `GET …/switchboards`, `GET …/switchboards/{id}/switchboardIntegrations`, Support `GET /api/v2/groups/{id}` |
//!
//! Upstream discipline lives in [`SunshineClient`] (`client` module docs): a concurrency cap,
//! per-attempt and total deadlines, jittered retries for reads, `Retry-After` for 429 (and backoff
//! when it is absent), one re-authentication after a 401, and a passControl repeated only when it
//! surely did not reach Sunshine (otherwise `Indeterminate`).
//!
//! # Layout
//! - `config`: [`SunshineConfig`] and [`SunshineConfig::from_settings`] (the `SUNSHINE_*` settings).
//! - `ids`: [`SunshineIds`] (24 lower-case hex; groups are digits; `opaque` fallback).
//! - `auth`: Basic or an app-scoped HS256 JWT (`jsonwebtoken`), re-signed after a 401.
//! - `client`: [`SunshineClient`], the HTTP client and the retry policy.
//! - `retry`: backoff, `Retry-After`, error codes.
//! - `ops`: resolution of the switchboard integrations, [`Located`]/[`Control`] (the state table),
//!   passControl with confirming reads ([`PassResult`]), group availability.
//! - `metadata`: the passControl metadata (context, group key, tags) within 4000 bytes.
//! - `capacity`: the per-group availability cache.
//! - `wire`: private DTOs.
//! - `ports`: the domain ports and [`PlatformRules`](handoff_domain::PlatformRules).
//! - `platform`: readiness, `handoff check` lines ([`CheckLine`]) and metrics for the app's `SunshinePlatform`.
//! - `stats`: request counters for `/metrics`.

mod auth;
mod capacity;
mod client;
mod config;
mod error;
mod ids;
pub mod metadata;
mod ops;
mod platform;
mod ports;
mod retry;
mod stats;
mod wire;

pub use client::SunshineClient;
pub use config::{
    AuthMode, EndedCheck, Region, SunshineConfig, SupportConfig, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CAPACITY_TTL,
    DEFAULT_CONFIRM_INTERVAL, DEFAULT_CONFIRM_READS, DEFAULT_CONFIRM_WITHIN, DEFAULT_GROUP_KEY, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENCY, DEFAULT_THROTTLE_PAUSE, DEFAULT_TOTAL_BUDGET,
};
pub use error::{Result, SunshineError};
pub use ids::{is_hex24, is_opaque, IdFormat, SunshineIds, GROUP_PROBLEM, HEX24_PROBLEM, OPAQUE_PROBLEM};
pub use ops::{Control, Located, PassResult, ResolveError};
pub use platform::CheckLine;
pub use stats::{Op, RequestCount, StatusClass};
pub use wire::{GroupAvailability, Integrations};

impl SunshineClient {
    /// A snapshot of the request counters (for `/metrics`).
    pub fn requests(&self) -> Vec<RequestCount> {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod sim_tests;
