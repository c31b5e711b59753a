//! The middleware every call goes through: classify the endpoint, authenticate, add latency, apply
//! a fault, run the operation; then render error bodies and append the call to the log.

use std::time::Duration;

use axum::body::{self, Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::sleep;

use crate::api::endpoint_for;
use crate::calls::AuthKind;
use crate::error::SimError;
use crate::state::{CallRecord, PassMode};
use crate::{Endpoint, FaultKind, Sim};

/// Largest request body read (Sunshine limits JSON bodies to 100 kB).
const MAX_BODY_BYTES: usize = 1024 * 1024;

struct Handled {
    response: Response,
    auth: AuthKind,
    delay_answer: Option<Duration>,
}

pub(crate) async fn pipeline(State(sim): State<Sim>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let endpoint = endpoint_for(request.method(), matched);
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let (parts, body) = request.into_parts();
    let (handled, logged) = match body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            let logged = logged_body(&bytes);
            (handle(&sim, endpoint, parts, bytes, next).await, logged)
        }
        Err(_) => (
            Handled {
                response: SimError::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response(),
                auth: AuthKind::None,
                delay_answer: None,
            },
            None,
        ),
    };
    let response = finish(handled.response, endpoint.is_support());
    tracing::debug!(?endpoint, %path, status = response.status().as_u16(), "sunshine-sim call");
    sim.record(CallRecord {
        endpoint,
        method,
        path,
        query,
        status: response.status().as_u16(),
        auth: handled.auth,
        body: logged,
    });
    if let Some(delay) = handled.delay_answer {
        sleep(delay).await;
    }
    response
}

async fn handle(
    sim: &Sim,
    endpoint: Endpoint,
    mut parts: axum::http::request::Parts,
    bytes: Bytes,
    next: Next,
) -> Handled {
    if endpoint == Endpoint::Other {
        let response = SimError::not_found("not_found", "Not found").into_response();
        return Handled { response, auth: AuthKind::None, delay_answer: None };
    }
    let (auth, admitted) = sim.admit(endpoint, &parts.headers);
    let (latency, fault) = match admitted {
        Ok(admitted) => admitted,
        Err(error) => return Handled { response: error.into_response(), auth, delay_answer: None },
    };
    if !latency.is_zero() {
        sleep(latency).await;
    }
    let mut delay_answer = None;
    let mut mode = PassMode::Normal;
    match fault {
        None => {}
        Some(FaultKind::Status { status, code, retry_after_secs }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = SimError { status, title: format!("Injected fault: {code}"), code, retry_after_secs };
            return Handled { response: error.into_response(), auth, delay_answer: None };
        }
        Some(FaultKind::Latency(delay)) => sleep(delay).await,
        Some(FaultKind::Hang) => std::future::pending::<()>().await,
        Some(FaultKind::ApplyThenDelay(delay)) => delay_answer = Some(delay),
        Some(FaultKind::AcceptThenApplyLater(delay)) => mode = PassMode::ApplyLater(delay),
        Some(FaultKind::AcceptThenFail) => mode = PassMode::Fail,
    }
    parts.extensions.insert(mode);
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    Handled { response, auth, delay_answer }
}

/// Renders a parked [`SimError`] (or axum's own plain-text rejection) as an error body.
fn finish(mut response: Response, support: bool) -> Response {
    if let Some(error) = response.extensions_mut().remove::<SimError>() {
        return error.render(support);
    }
    if (response.status().is_client_error() || response.status().is_server_error()) && !is_json(&response) {
        return SimError::from_status(response.status()).render(support);
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

fn logged_body(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    Some(serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())))
}
