//! The middleware every Genesys call goes through, in Genesys' order: classify the endpoint,
//! authenticate and rate-limit (API calls), add latency, apply a fault, check the permission, run the
//! operation; then render `ErrorBody`s, add the `inin-*` headers and append the call to the log.

use std::time::Duration;

use axum::body::{self, Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::time::sleep;
use uuid::Uuid;

use crate::api::{endpoint_for, grant_type};
use crate::auth::RateInfo;
use crate::error::SimError;
use crate::state::CallRecord;
use crate::{Endpoint, FaultKind, Sim};

/// Largest request body read (Genesys answers 413 well before this for the bodies modelled here).
const MAX_BODY_BYTES: usize = 1024 * 1024;

const CORRELATION_ID: HeaderName = HeaderName::from_static("inin-correlation-id");
const RATE_ALLOWED: HeaderName = HeaderName::from_static("inin-ratelimit-allowed");
const RATE_COUNT: HeaderName = HeaderName::from_static("inin-ratelimit-count");
const RATE_RESET: HeaderName = HeaderName::from_static("inin-ratelimit-reset");

/// How a call was handled, before the final touches.
struct Handled {
    /// The latency added to the call.
    latency: Duration,
    response: Response,
    rate: Option<RateInfo>,
    /// Sleep this long after logging, before answering ([`FaultKind::ApplyThenDelay`]).
    delay_answer: Option<Duration>,
}

impl Handled {
    fn early(response: Response, rate: Option<RateInfo>) -> Self {
        Self { latency: Duration::ZERO, response, rate, delay_answer: None }
    }
}

pub(crate) async fn pipeline(State(sim): State<Sim>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let endpoint = endpoint_for(request.method(), matched);
    let correlation_id = Uuid::new_v4();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let (handled, logged_body) = match body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            let logged = logged_body(endpoint, &bytes);
            (handle(&sim, endpoint, parts, bytes, next).await, logged)
        }
        Err(_) => {
            let error = SimError::from_status(StatusCode::PAYLOAD_TOO_LARGE);
            (Handled::early(error.into_response(), None), None)
        }
    };
    let response = finish(handled.response, correlation_id, handled.rate);
    tracing::debug!(?endpoint, %path, status = response.status().as_u16(), "genesys-sim call");
    sim.record(CallRecord {
        endpoint,
        method,
        path,
        status: response.status().as_u16(),
        body: logged_body,
        correlation_id,
        latency: handled.latency,
    });
    if let Some(delay) = handled.delay_answer {
        sleep(delay).await;
    }
    response
}

async fn handle(sim: &Sim, endpoint: Endpoint, parts: Parts, bytes: Bytes, next: Next) -> Handled {
    if endpoint == Endpoint::Other {
        return Handled::early(SimError::not_found("no such endpoint").into_response(), None);
    }
    let (rate, admitted) = sim.admit(endpoint, &parts.headers);
    let pass = match admitted {
        Ok(pass) => pass,
        Err(error) => return Handled::early(error.into_response(), rate),
    };
    let latency = if pass.latency.is_zero() { Duration::ZERO } else { sim.wait_latency(pass.latency).await };
    let mut delay_answer = None;
    match pass.fault {
        None => {}
        Some(FaultKind::Status { status, code, retry_after_secs }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = SimError { status, message: format!("Injected fault: {code}"), code, retry_after_secs };
            return Handled { latency, ..Handled::early(error.into_response(), rate) };
        }
        Some(FaultKind::Latency(delay)) => sleep(delay).await,
        Some(FaultKind::ApplyThenDelay(delay)) => delay_answer = Some(delay),
        Some(FaultKind::Hang) => std::future::pending::<()>().await,
    }
    let missing = endpoint.permission().filter(|needed| sim.config().missing_permissions.iter().any(|m| m == needed));
    let response = match missing {
        Some(permission) => SimError::missing_permission(permission).into_response(),
        None => next.run(Request::from_parts(parts, Body::from(bytes))).await,
    };
    Handled { latency, response, rate, delay_answer }
}

/// Renders a parked [`SimError`] (or axum's own plain-text rejection) as `ErrorBody` and adds headers.
fn finish(mut response: Response, correlation_id: Uuid, rate: Option<RateInfo>) -> Response {
    if let Some(error) = response.extensions_mut().remove::<SimError>() {
        response = error.render(correlation_id);
    } else if (response.status().is_client_error() || response.status().is_server_error()) && !is_json(&response) {
        response = SimError::from_status(response.status()).render(correlation_id);
    }
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&correlation_id.to_string()) {
        headers.insert(CORRELATION_ID, value);
    }
    if let Some(rate) = rate {
        headers.insert(RATE_ALLOWED, HeaderValue::from(rate.allowed));
        headers.insert(RATE_COUNT, HeaderValue::from(rate.count));
        headers.insert(RATE_RESET, HeaderValue::from(rate.reset_secs));
    }
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

/// The body as it goes into the call log; the token call keeps only `grant_type`.
fn logged_body(endpoint: Endpoint, bytes: &[u8]) -> Option<Value> {
    if endpoint == Endpoint::Token {
        return Some(json!({ "grant_type": grant_type(bytes) }));
    }
    if bytes.is_empty() {
        return None;
    }
    Some(serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())))
}
