//! Operations endpoints: `GET /healthz` (the process answers), `GET /readyz` (the
//! [`ReadinessProbe`] says every component is usable) and `GET /metrics` (the app's renderer).
//! None of them needs authentication; none of them shows handoff data.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use handoff_domain::ports::LedgerPort;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::state::{AppState, ReadinessProbe};

/// The Prometheus text exposition format.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /healthz`.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when every check passes, else 503; each component is `"ok"` or its error.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let results = state.readiness().check().await;
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let checks: Map<String, Value> = results
        .into_iter()
        .map(|(component, result)| (component, Value::String(result.err().unwrap_or_else(|| "ok".to_owned()))))
        .collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if ready { "ready" } else { "not_ready" }, "checks": checks });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the renderer's text, or 404 when the app gave none.
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
