//! `POST /webhooks/bot-handoff` (CONTRACT §4.1).
//!
//! The [`SignedJson`] extractor turns the raw request into a JSON value in the order the contract
//! needs: authentication, `Content-Type`, the body read within [`MAX_BODY_BYTES`], then JSON. With
//! a Bearer or Basic secret, authentication needs the headers only and comes first. An HMAC
//! signature covers the raw body, so the body is read first (an over-size body is a 413 before the
//! signature can be checked), then the signature, then the content type. Anything that fails there
//! never reaches the domain, so it causes no ledger write and no upstream call. The handler then
//! validates the payload and the `Idempotency-Key`, takes an in-flight permit, and runs the use case.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use handoff_domain::{HandoffOutcome, HandoffRequest, IdempotencyKey, ValidationErrors};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::auth::HeaderCheck;
use crate::error::{whole_seconds, ApiError};
use crate::state::{AppState, MAX_BODY_BYTES};

/// The header that separates handoffs of one conversation (CONTRACT §5.1).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// An authenticated webhook body, parsed as JSON (not yet validated as a handoff).
#[derive(Debug)]
pub(crate) struct SignedJson(pub(crate) Value);

impl FromRequest<AppState> for SignedJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = match state.auth().check_headers(&parts.headers, state.unix_now())? {
            HeaderCheck::Passed => {
                require_json(&parts.headers)?;
                read_limited(&parts.headers, body).await?
            }
            // A signature covers the body, so the body is read (within the limit) before the
            // content type is looked at: nothing but a 401 or a 413 answers an unproven caller.
            HeaderCheck::NeedsBody(signature) => {
                let bytes = read_limited(&parts.headers, body).await?;
                state.auth().verify_signature(&signature, &bytes)?;
                require_json(&parts.headers)?;
                bytes
            }
        };
        let value = serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedBody { problem: e.to_string() })?;
        Ok(SignedJson(value))
    }
}

/// `application/json`, in any case, with or without parameters (`; charset=utf-8`).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match essence {
        Some(e) if e.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] (up front when `Content-Length`
/// says so, else as soon as the limit is crossed).
async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::PayloadTooLarge),
        Err(_) => Err(ApiError::MalformedBody { problem: "the body could not be read completely".to_owned() }),
    }
}

/// The `Idempotency-Key` header, if sent.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ValidationErrors> {
    match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(raw) => IdempotencyKey::parse(raw).map(Some),
            // Not visible ASCII, so invalid: let the domain word the problem.
            Err(_) => IdempotencyKey::parse("").map(Some),
        },
    }
}

/// `POST /webhooks/bot-handoff`.
pub(crate) async fn bot_handoff(
    State(state): State<AppState>,
    headers: HeaderMap,
    SignedJson(payload): SignedJson,
) -> Result<Response, ApiError> {
    let (request, key) = match (HandoffRequest::from_json(&payload), idempotency_key(&headers)) {
        (Ok(request), Ok(key)) => (request, key),
        (request, key) => {
            // Report the payload's problems and the header's together.
            let mut problems = Vec::new();
            problems.extend(request.err().map(|e| e.errors().to_vec()).unwrap_or_default());
            problems.extend(key.err().map(|e| e.errors().to_vec()).unwrap_or_default());
            return Err(ValidationErrors::from_vec(problems)
                .map(ApiError::InvalidPayload)
                .unwrap_or_else(|| ApiError::Internal("validation failed without a problem".to_owned())));
        }
    };
    let permit = Arc::clone(state.in_flight()).try_acquire_owned().map_err(|_| ApiError::Overloaded)?;
    let service = Arc::clone(state.service());
    // The handoff runs on its own task: a request timeout or a dropped connection answers the
    // caller but never cancels a handoff half-way; a retry then gets its answer.
    let work = async move {
        let _permit = permit;
        service.handle(request, key).await
    };
    let outcome = tokio::spawn(work.in_current_span()).await.map_err(|e| {
        ApiError::Internal(
            if e.is_panic() { "the handoff task panicked" } else { "the handoff task was cancelled" }.to_owned(),
        )
    })??;
    Ok(outcome_response(&outcome))
}

/// The 200 or 202 answer for an outcome.
fn outcome_response(outcome: &HandoffOutcome) -> Response {
    match outcome {
        HandoffOutcome::Transferred { handoff_id, conversation_id, queue_id, replayed } => (
            StatusCode::OK,
            Json(json!({
                "status": "transferred",
                "handoffId": handoff_id,
                "conversationId": conversation_id,
                "queueId": queue_id,
                "replayed": replayed,
            })),
        )
            .into_response(),
        HandoffOutcome::Deferred { handoff_id, conversation_id, queue_id, retry_after, replayed } => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "deferred",
                "handoffId": handoff_id,
                "conversationId": conversation_id,
                "queueId": queue_id,
                "retryAfterSeconds": whole_seconds(*retry_after),
                "reason": "no_capacity",
                "replayed": replayed,
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
