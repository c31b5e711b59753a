//! The HTTP entry of `handoff`: the axum router that receives bot handoff webhooks and drives the
//! domain's [`HandoffService`](handoff_domain::HandoffService) (CONTRACT §4).
//!
//! [`router()`] builds the whole API over an [`AppState`] and binds no socket, so the app serves it
//! with `axum::serve` and tests call it with `oneshot`.
//!
//! # Layout
//! - `router`: [`router()`], the routes and the middleware stack (request id, trace span, rejection
//!   logging, request timeout).
//! - `state`: [`AppState`], [`HttpSettings`], the [`ReadinessProbe`] hook and the metrics hook.
//! - `auth`: [`WebhookAuth`]: Bearer, Basic and HMAC-signature authentication over the raw body.
//! - `admin`: [`AdminAuth`] (`HANDOFF_ADMIN_TOKEN`) and the extractors that guard admin routes:
//!   [`AdminAccess`] (APIs, Bearer challenge) and [`AdminLogin`] (browser pages, Basic challenge).
//! - `webhook`: `POST /webhooks/bot-handoff` (transfer mode, and advisory mode with
//!   `?mode=advise`): the authenticated, size-limited JSON extractor, the handler with its
//!   in-flight cap, and the payload and answer types.
//! - `read`: `GET /handoffs/{id}`, `GET /handoffs?conversationId=`, `GET /handoffs/stats`, and the
//!   record views they answer with.
//! - `insights`: `GET /insights` (the insights page: maud markup, inline SVG charts, no script,
//!   a strict CSP) and `GET /handoffs/export.csv` (streamed), both behind the admin token.
//! - `guests`: `DELETE /guests/{guestId}`: erases a guest's personal data from the ledger.
//! - `health`: `GET /healthz`, `GET /readyz`, `GET /metrics`, and [`LedgerProbe`].
//! - `openapi`: [`ApiDoc`], the OpenAPI document generated from the handlers and wire types,
//!   served at `GET /openapi.json` and committed as `docs/openapi.json` ([`openapi_json`]).
//! - `error`: [`ApiError`], every non-2xx answer and its exact body and headers.
//! - `fuzzing` (feature `fuzzing` only, hidden): entry points for the fuzz targets in `fuzz/`.

mod admin;
mod auth;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod guests;
mod health;
mod insights;
mod openapi;
mod read;
mod router;
mod state;
#[cfg(test)]
mod test_support;
mod webhook;

pub use admin::{AdminAccess, AdminAuth, AdminLogin, NoAdminToken};
pub use auth::{NoWebhookSecret, WebhookAuth, SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECS, TIMESTAMP_HEADER};
pub use error::{ApiError, ErrorDetail, ADMIN_LOGIN_CHALLENGE, WWW_AUTHENTICATE};
pub use health::LedgerProbe;
pub use insights::{csv_line, render_page, InsightsForm, PageInputs, CONTENT_SECURITY_POLICY, CSV_HEADER};
pub use openapi::{openapi_json, ApiDoc};
pub use router::{router, REQUEST_ID_HEADER};
pub use state::{
    AppState, CapacityFigures, HttpSettings, MetricsRenderer, QueueFigures, ReadinessProbe, MAX_BODY_BYTES,
};
pub use webhook::IDEMPOTENCY_KEY_HEADER;

/// This crate's result type.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;
