//! [`ApiError`]: every non-2xx answer of the HTTP API and the exact body and headers it is written
//! with (CONTRACT §4.1).
//!
//! 4xx bodies explain the problem to the caller. 5xx bodies are generic: what went wrong inside is
//! put into an [`ErrorDetail`] response extension, which the router's logging middleware writes
//! inside the request span and never sends to the caller.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use handoff_domain::ports::LedgerError;
use handoff_domain::{FieldError, HandoffError, HandoffId, ValidationErrors};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// `WWW-Authenticate` sent with every 401.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"handoff\"";
/// `WWW-Authenticate` of a 401 from a page guarded by [`AdminLogin`](crate::AdminLogin): makes a
/// browser ask for a user name and password (the admin token).
pub const ADMIN_LOGIN_CHALLENGE: &str = "Basic realm=\"handoff admin\", charset=\"UTF-8\"";

/// Why a request did not succeed. Each variant's doc names its status and the `error` code of its
/// JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_payload`: the body could not be read or is not JSON. Reported as one detail on
    /// the field `$`, whose problem says where (line and column).
    #[error("the body is not valid JSON: {problem}")]
    MalformedBody {
        /// What is wrong, e.g. `expected value at line 1 column 2`.
        problem: String,
    },
    /// 400 `invalid_payload`: the payload (or the `Idempotency-Key` header) failed validation;
    /// every problem is listed in `details`.
    #[error(transparent)]
    InvalidPayload(#[from] ValidationErrors),
    /// 400 `invalid_request`: a path or query parameter of a read endpoint is invalid.
    #[error("invalid request parameters: {0}")]
    InvalidParameters(ValidationErrors),
    /// 401 `unauthorized` with `WWW-Authenticate`: missing or wrong secret or signature. Never says
    /// which part failed.
    #[error("unauthorized")]
    Unauthorized,
    /// 401 `unauthorized` with a Basic `WWW-Authenticate` challenge
    /// ([`ADMIN_LOGIN_CHALLENGE`]): an admin page opened without the admin token, so the browser
    /// shows its login prompt.
    #[error("unauthorized")]
    LoginRequired,
    /// 404 `conversation_not_found`: Genesys does not know the conversation.
    #[error("conversation not found")]
    ConversationNotFound,
    /// 404 `handoff_not_found`: no handoff record has this id.
    #[error("handoff not found")]
    HandoffNotFound,
    /// 404 `not_found`: no route matches the path.
    #[error("no such route")]
    RouteNotFound,
    /// 405 `method_not_allowed`: the route exists, the method does not (axum adds `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 `handoff_in_progress` with `Retry-After`: the same handoff is being processed now.
    #[error("handoff {handoff_id} is in progress")]
    InProgress {
        /// The record being worked on.
        handoff_id: HandoffId,
        /// When to try again.
        retry_after: Duration,
    },
    /// 413 `payload_too_large`: the body is larger than [`MAX_BODY_BYTES`](crate::MAX_BODY_BYTES).
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415 `unsupported_media_type`: the `Content-Type` is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 422 `conversation_not_transferable`: the conversation ended, or no participant holds it.
    #[error("conversation not transferable: {message}")]
    NotTransferable {
        /// Why, for the caller.
        message: String,
    },
    /// 502 `upstream_rejected`: Genesys refused. Carries its status, error code and correlation id,
    /// never its body.
    #[error("upstream rejected the handoff: {status} {code}")]
    UpstreamRejected {
        /// The upstream HTTP status.
        status: u16,
        /// The upstream error code.
        code: String,
        /// Genesys `inin-correlation-id`.
        correlation_id: Option<String>,
    },
    /// 503 `upstream_unavailable` with `Retry-After`: Genesys (or the ledger) is unavailable; a
    /// retry resumes the same handoff.
    #[error("upstream unavailable")]
    UpstreamUnavailable {
        /// The record that will resume, if one was created (`null` otherwise).
        handoff_id: Option<HandoffId>,
        /// When to try again.
        retry_after: Duration,
    },
    /// 503 `overloaded` with `Retry-After: 1`: too many handoffs in flight; the request was not
    /// queued and nothing was done.
    #[error("too many handoffs in flight")]
    Overloaded,
    /// 503 `timeout` with `Retry-After`: the request took longer than
    /// [`HttpSettings::request_timeout`](crate::HttpSettings::request_timeout). A handoff already
    /// started keeps running; a retry gets its answer.
    #[error("request timed out")]
    Timeout,
    /// 503 `unavailable` with `Retry-After`: the ledger could not be read (read endpoints).
    #[error("the ledger could not be read")]
    StoreUnavailable(#[source] LedgerError),
    /// 500 `internal_error`: a bug. The detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What went wrong inside, for the logs only: attached to 5xx responses as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail(pub String);

/// `Retry-After` for a timeout and for an unreadable ledger.
const RETRY_SOON: Duration = Duration::from_secs(5);

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody { .. } | ApiError::InvalidPayload(_) | ApiError::InvalidParameters(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized | ApiError::LoginRequired => StatusCode::UNAUTHORIZED,
            ApiError::ConversationNotFound | ApiError::HandoffNotFound | ApiError::RouteNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InProgress { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotTransferable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UpstreamRejected { .. } => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamUnavailable { .. }
            | ApiError::Overloaded
            | ApiError::Timeout
            | ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `error` code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedBody { .. } | ApiError::InvalidPayload(_) => "invalid_payload",
            ApiError::InvalidParameters(_) => "invalid_request",
            ApiError::Unauthorized | ApiError::LoginRequired => "unauthorized",
            ApiError::ConversationNotFound => "conversation_not_found",
            ApiError::HandoffNotFound => "handoff_not_found",
            ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::InProgress { .. } => "handoff_in_progress",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NotTransferable { .. } => "conversation_not_transferable",
            ApiError::UpstreamRejected { .. } => "upstream_rejected",
            ApiError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::Timeout => "timeout",
            ApiError::StoreUnavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// A single 400 `invalid_request` problem with a path or query parameter.
    pub fn invalid_parameter(field: &str, problem: &str) -> Self {
        ApiError::InvalidParameters(ValidationErrors::single(field, problem))
    }

    fn body(&self) -> Value {
        let error = self.code().to_owned();
        let body = match self {
            ApiError::MalformedBody { problem } => serde_json::to_value(invalid(
                error,
                "the body is not valid JSON",
                &[FieldError::new("$", problem.clone())],
            )),
            ApiError::InvalidPayload(errors) => {
                serde_json::to_value(invalid(error, "the payload is invalid", errors.errors()))
            }
            ApiError::InvalidParameters(errors) => {
                serde_json::to_value(invalid(error, "the request parameters are invalid", errors.errors()))
            }
            ApiError::InProgress { handoff_id, .. } => {
                serde_json::to_value(InProgressBody { error, handoff_id: *handoff_id })
            }
            ApiError::NotTransferable { message } => {
                serde_json::to_value(NotTransferableBody { error, message: message.clone() })
            }
            ApiError::UpstreamRejected { status, code, correlation_id } => serde_json::to_value(UpstreamRejectedBody {
                error,
                upstream_status: *status,
                upstream_code: code.clone(),
                correlation_id: correlation_id.clone(),
            }),
            ApiError::UpstreamUnavailable { handoff_id, .. } => {
                serde_json::to_value(UnavailableBody { error, handoff_id: *handoff_id })
            }
            _ => serde_json::to_value(ErrorBody { error }),
        };
        body.unwrap_or_else(|_| json!({ "error": self.code() }))
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::InProgress { retry_after, .. } | ApiError::UpstreamUnavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            ApiError::Overloaded => Some(Duration::from_secs(1)),
            ApiError::Timeout | ApiError::StoreUnavailable(_) => Some(RETRY_SOON),
            _ => None,
        }
    }
}

fn invalid(error: String, message: &str, details: &[FieldError]) -> InvalidPayloadBody {
    let details = details.iter().map(|d| FieldProblem { field: d.field.clone(), problem: d.problem.clone() }).collect();
    InvalidPayloadBody { error, message: message.to_owned(), details }
}

// ---- the wire types (and the OpenAPI schemas) ----------------------------------------------

/// `{"error": code}`: 401 `unauthorized`, 404 `conversation_not_found` / `handoff_not_found` /
/// `not_found`, 405 `method_not_allowed`, 413 `payload_too_large`, 415 `unsupported_media_type`,
/// 500 `internal_error`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The stable error code.
    pub(crate) error: String,
}

/// 400 `invalid_payload` (the webhook) or `invalid_request` (read endpoints).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "error": "invalid_payload",
    "message": "the payload is invalid",
    "details": [{ "field": "guestInfo.email", "problem": "must be a plausible e-mail address" }]
}))]
pub(crate) struct InvalidPayloadBody {
    /// `invalid_payload` or `invalid_request`.
    error: String,
    /// A summary.
    message: String,
    /// Every problem found, in field order.
    details: Vec<FieldProblem>,
}

/// One validation problem.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FieldProblem {
    /// The field's path, e.g. `guestInfo.email`, `customContext.sentiment_score`, `Idempotency-Key`,
    /// `mode`, or `$` for the body as a whole.
    field: String,
    /// What is wrong with it.
    problem: String,
}

/// 409 `handoff_in_progress`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InProgressBody {
    /// `handoff_in_progress`.
    #[schema(example = "handoff_in_progress")]
    error: String,
    /// The handoff being worked on.
    #[schema(value_type = String, format = Uuid)]
    handoff_id: HandoffId,
}

/// 422 `conversation_not_transferable`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NotTransferableBody {
    /// `conversation_not_transferable`.
    #[schema(example = "conversation_not_transferable")]
    error: String,
    /// Why, e.g. `the conversation has ended`.
    message: String,
}

/// 502 `upstream_rejected`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpstreamRejectedBody {
    /// `upstream_rejected`.
    #[schema(example = "upstream_rejected")]
    error: String,
    /// The HTTP status Genesys answered.
    #[schema(example = 403)]
    upstream_status: u16,
    /// The Genesys error code, e.g. `missing.permissions`.
    #[schema(example = "missing.permissions")]
    upstream_code: String,
    /// Genesys `inin-correlation-id`, for Genesys support.
    correlation_id: Option<String>,
}

/// 503 `upstream_unavailable`, with `handoffId` (503 `overloaded` and `timeout` answer only
/// `{"error": …}`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UnavailableBody {
    /// `upstream_unavailable`.
    #[schema(example = "upstream_unavailable")]
    error: String,
    /// The handoff a retry resumes (`null` when none was created).
    #[schema(value_type = Option<String>, format = Uuid)]
    handoff_id: Option<HandoffId>,
}

/// Whole seconds for `Retry-After` and `retryAfterSeconds`: rounded up, at least 1.
pub(crate) fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    secs.max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(after)));
        }
        match self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(WWW_AUTHENTICATE));
            }
            ApiError::LoginRequired => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(ADMIN_LOGIN_CHALLENGE));
            }
            _ => {}
        }
        if matches!(self, ApiError::StoreUnavailable(_) | ApiError::Internal(_)) {
            response.extensions_mut().insert(ErrorDetail(self.to_string_with_sources()));
        }
        response
    }
}

impl ApiError {
    fn to_string_with_sources(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

impl From<HandoffError> for ApiError {
    fn from(error: HandoffError) -> Self {
        match error {
            HandoffError::Invalid(errors) => ApiError::InvalidPayload(errors),
            HandoffError::ConversationNotFound { .. } => ApiError::ConversationNotFound,
            // Only the background worker abandons; were it ever answered, it is a 422.
            HandoffError::NotTransferable { message, .. } | HandoffError::Abandoned { message, .. } => {
                ApiError::NotTransferable { message }
            }
            HandoffError::InProgress { handoff_id, retry_after } => ApiError::InProgress { handoff_id, retry_after },
            HandoffError::UpstreamRejected { refusal, correlation_id, .. } => {
                ApiError::UpstreamRejected { status: refusal.status, code: refusal.code, correlation_id }
            }
            HandoffError::Unavailable { handoff_id, retry_after } => {
                ApiError::UpstreamUnavailable { handoff_id, retry_after }
            }
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        ApiError::StoreUnavailable(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        // Arrange
        let cases = [(Duration::ZERO, 1), (Duration::from_millis(200), 1), (Duration::from_millis(1500), 2)];

        // Act
        let got: Vec<u64> = cases.iter().map(|(d, _)| whole_seconds(*d)).collect();

        // Assert
        let want: Vec<u64> = cases.iter().map(|(_, s)| *s).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn internal_errors_keep_their_detail_out_of_the_body() {
        // Arrange
        let error = ApiError::Internal("the handoff task panicked".to_owned());

        // Act
        let response = error.into_response();

        // Assert
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let detail = response.extensions().get::<ErrorDetail>().map(|d| d.0.clone());
        assert_eq!(detail.as_deref(), Some("internal error: the handoff task panicked"));
    }

    #[test]
    fn every_handoff_error_maps_to_its_contract_status() {
        // Arrange
        let id = HandoffId::random();
        let cases = [
            (HandoffError::Invalid(ValidationErrors::single("queueId", "x")), 400),
            (HandoffError::ConversationNotFound { handoff_id: None, correlation_id: None }, 404),
            (HandoffError::InProgress { handoff_id: id, retry_after: Duration::from_secs(2) }, 409),
            (HandoffError::NotTransferable { handoff_id: None, message: "ended".to_owned() }, 422),
            (HandoffError::Abandoned { handoff_id: None, message: "the guest left".to_owned() }, 422),
            (
                HandoffError::UpstreamRejected {
                    handoff_id: None,
                    refusal: handoff_domain::ports::Refusal::new(403, "c"),
                    correlation_id: None,
                },
                502,
            ),
            (HandoffError::Unavailable { handoff_id: None, retry_after: Duration::from_secs(5) }, 503),
        ];

        for (error, want) in cases {
            // Act
            let status = ApiError::from(error.clone()).status();

            // Assert
            assert_eq!(status.as_u16(), want, "{error:?}");
        }
    }
}
