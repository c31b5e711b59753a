//! Genesys `ErrorBody` answers.
//!
//! Handlers return a [`SimError`]; its `IntoResponse` only parks it in the response extensions, and the
//! pipeline renders the body once it knows the call's correlation id (`contextId`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use uuid::Uuid;

/// Result of a simulated Genesys operation.
pub(crate) type Result<T, E = SimError> = std::result::Result<T, E>;

/// A Genesys error answer: status, dotted code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) retry_after_secs: Option<u64>,
}

impl SimError {
    pub(crate) fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), retry_after_secs: None }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad.request", message)
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not.found", format!("The requested resource was not found: {what}"))
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "bad.credentials", "Invalid login credentials.")
    }

    pub(crate) fn missing_permission(permission: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "missing.permissions",
            format!(
                "Unable to perform the requested action. You are missing the following permission(s): {permission}"
            ),
        )
    }

    /// An `ErrorBody` for a plain-status answer from axum itself (405, extractor rejections).
    pub(crate) fn from_status(status: StatusCode) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => "not.found",
            StatusCode::PAYLOAD_TOO_LARGE => "request.entity.too.large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported.media.type",
            s if s.is_server_error() => "internal.server.error",
            _ => "bad.request",
        };
        let status = if status == StatusCode::METHOD_NOT_ALLOWED { StatusCode::NOT_FOUND } else { status };
        Self::new(status, code, status.canonical_reason().unwrap_or("error"))
    }

    #[must_use]
    pub(crate) fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The final answer: `ErrorBody` JSON with `contextId`, plus `Retry-After` when set.
    pub(crate) fn render(&self, context_id: Uuid) -> Response {
        let body = json!({
            "message": self.message,
            "code": self.code,
            "status": self.status.as_u16(),
            "contextId": context_id,
            "details": [],
            "errors": [],
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}
