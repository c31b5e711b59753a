//! [`router`]: the routes and the middleware stack around them.
//!
//! Outermost first:
//! 1. an unusable incoming `x-request-id` is dropped, then `SetRequestIdLayer` keeps a usable one
//!    or makes a UUID;
//! 2. `TraceLayer`: one span per request with `method`, `matched_path` and `request_id` (no bodies);
//! 3. `PropagateRequestIdLayer`: every response, errors and route misses included, carries the id;
//! 4. rejection logging: one WARN line per 400/401/413/415 with the request id and status only,
//!    and the internal detail of a 5xx [`ErrorDetail`];
//! 5. the request timeout ([`HttpSettings::request_timeout`](crate::HttpSettings)), answered 503 JSON.
//!
//! The in-flight cap on handoffs is a semaphore in the webhook handler (see [`crate::webhook`]).

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower::util::MapRequestLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::error::{ApiError, ErrorDetail};
use crate::state::AppState;
use crate::{guests, health, insights, openapi, read, webhook};

/// The request id header.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// An incoming request id longer than this is replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The whole HTTP API over `state`, with its middleware. Binds no socket: serve it with
/// `axum::serve`, or call it with `tower::ServiceExt::oneshot` in tests.
pub fn router(state: AppState) -> Router {
    let timeout = state.settings().request_timeout;
    Router::new()
        .route("/webhooks/bot-handoff", post(webhook::bot_handoff))
        .route("/handoffs", get(read::list_handoffs))
        .route("/handoffs/stats", get(read::stats))
        .route("/handoffs/export.csv", get(insights::export_csv))
        .route("/insights", get(insights::insights_page))
        .route("/handoffs/{handoff_id}", get(read::get_handoff))
        .route("/guests/{guest_id}", delete(guests::erase_guest))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::openapi_document))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(MapRequestLayer::new(drop_unusable_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_failure(DefaultOnFailure::new().level(Level::WARN)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
                .layer(middleware::from_fn(log_rejections))
                .layer(middleware::from_fn_with_state(timeout, enforce_timeout)),
        )
        .with_state(state)
}

async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Whether an incoming request id may be kept: 1–128 characters of `[A-Za-z0-9._:/+=@-]`, so it is
/// safe in logs and headers.
fn is_usable_request_id(raw: &[u8]) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_REQUEST_ID_LEN
        && raw.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

fn drop_unusable_request_id(mut request: Request) -> Request {
    let values = request.headers().get_all(&REQUEST_ID_HEADER);
    let mut iter = values.iter();
    let keep = match (iter.next(), iter.next()) {
        (Some(only), None) => is_usable_request_id(only.as_bytes()),
        (None, _) => true,
        // Several ids: none of them is the id.
        (Some(_), Some(_)) => false,
    };
    if !keep {
        request.headers_mut().remove(&REQUEST_ID_HEADER);
    }
    request
}

fn request_id(request: &Request) -> &str {
    request.headers().get(&REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-")
}

fn request_span(request: &Request) -> tracing::Span {
    let matched_path = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    tracing::info_span!(
        "http_request",
        method = %request.method(),
        matched_path,
        request_id = %request_id(request),
    )
}

/// Runs inside the request's span, which carries its `request_id`.
async fn log_rejections(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if matches!(status, 400 | 401 | 413 | 415) {
        tracing::warn!(status, "request rejected");
    }
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::error!(status, detail, "request failed");
    }
    response
}

async fn enforce_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_with_spaces_quotes_or_excess_length_are_not_usable() {
        // Arrange
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        let cases: [(&[u8], bool); 6] = [
            (b"7f0c2a1e-3b4d-4e5f-8a9b-0c1d2e3f4a5b", true),
            (b"trace:abc/123+x=", true),
            (b"", false),
            (b"has space", false),
            (b"quote\"d", false),
            (long.as_bytes(), false),
        ];

        for (raw, want) in cases {
            // Act
            let got = is_usable_request_id(raw);

            // Assert
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(raw));
        }
    }
}
