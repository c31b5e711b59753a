//! Error answers: Sunshine `{"errors":[{"code","title"}]}` (spec "Errors", api-notes §8); Zendesk
//! Support `{"error","description"}` for the `/api/v2/…` endpoints.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Result of a simulated operation.
pub(crate) type Result<T, E = SimError> = std::result::Result<T, E>;

/// An error answer: status, code and title, plus `Retry-After` when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) title: String,
    pub(crate) retry_after_secs: Option<u64>,
}

impl SimError {
    pub(crate) fn new(status: StatusCode, code: impl Into<String>, title: impl Into<String>) -> Self {
        Self { status, code: code.into(), title: title.into(), retry_after_secs: None }
    }

    pub(crate) fn bad_request(title: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", title)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization is required")
    }

    pub(crate) fn not_found(code: &str, title: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, title)
    }

    pub(crate) fn conversation_not_found() -> Self {
        Self::not_found("conversation_not_found", "Conversation not found")
    }

    /// An error for a plain-status answer from axum itself (405, extractor rejections).
    pub(crate) fn from_status(status: StatusCode) -> Self {
        let status = if status == StatusCode::METHOD_NOT_ALLOWED { StatusCode::NOT_FOUND } else { status };
        Self::new(status, crate::faults::default_code(status.as_u16()), status.canonical_reason().unwrap_or("error"))
    }

    /// The final answer in the shape of the API the endpoint belongs to.
    pub(crate) fn render(&self, support: bool) -> Response {
        let body = if support {
            json!({ "error": self.code, "description": self.title })
        } else {
            json!({ "errors": [{ "code": self.code, "title": self.title }] })
        };
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
