//! Operations endpoints: `GET /healthz` (the process answers), `GET /readyz` (the
//! [`ReadinessProbe`] says every component is usable) and `GET /metrics` (the app's renderer).
//! None of them needs authentication; none of them shows handoff data.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

use axum::Json;
use handoff_domain::ports::LedgerPort;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, ReadinessProbe};

/// The Prometheus text exposition format.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthBody {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "The process answers",
    responses((status = 200, body = HealthBody, description = "Always, while the process runs.")),
)]
pub(crate) async fn healthz() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// The readiness of every component.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({ "status": "ready", "checks": { "genesys_token": "ok", "ledger": "ok" } }))]
pub(crate) struct ReadyBody {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Per component (`ledger`, `genesys_token`): `ok` or why it is not ready.
    checks: BTreeMap<String, String>,
}

/// `GET /readyz`: 200 when every check passes, else 503; each component is `"ok"` or its error.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    summary = "The ledger answers and a Genesys token can be obtained",
    responses(
        (status = 200, body = ReadyBody, description = "Every component is ready."),
        (status = 503, body = ReadyBody, description = "At least one component is not ready."),
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let results = state.readiness().check().await;
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let checks = results
        .into_iter()
        .map(|(component, result)| (component, result.err().unwrap_or_else(|| "ok".to_owned())))
        .collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = ReadyBody { status: if ready { "ready" } else { "not_ready" }, checks };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the renderer's text, or 404 when the app gave none.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, body = String, content_type = "text/plain; version=0.0.4; charset=utf-8",
            description = "Handoffs by reason × queue × outcome, handoff durations, upstream requests by endpoint × \
status, retries, token refreshes, deferred handoffs, outbox backlog."),
        (status = 404, description = "Metrics are not enabled.",
            body = ErrorBody, example = json!({"error": "not_found"})),
    ),
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let render = state.metrics().ok_or(ApiError::RouteNotFound)?;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], render()).into_response())
}

/// A [`ReadinessProbe`] with one component, `ledger`, that pings the ledger. The app may combine
/// it with its own checks (a Genesys token).
#[derive(Clone)]
pub struct LedgerProbe {
    ledger: Arc<dyn LedgerPort>,
}

impl std::fmt::Debug for LedgerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerProbe").finish_non_exhaustive()
    }
}

impl LedgerProbe {
    /// A probe over `ledger`.
    pub fn new(ledger: Arc<dyn LedgerPort>) -> Self {
        Self { ledger }
    }

    /// The `ledger` component's result alone.
    pub async fn ping(&self) -> (String, Result<(), String>) {
        ("ledger".to_owned(), self.ledger.ping().await.map_err(|e| e.to_string()))
    }
}

#[async_trait]
impl ReadinessProbe for LedgerProbe {
    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        vec![self.ping().await]
    }
}

#[cfg(test)]
mod tests;
