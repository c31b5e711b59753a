//! `POST /webhooks/bot-handoff` (CONTRACT §4.1).
//!
//! The [`SignedJson`] extractor turns the raw request into a JSON value in the order the contract
//! needs: authentication, `Content-Type`, the body read within [`MAX_BODY_BYTES`], then JSON. With
//! a Bearer or Basic secret, authentication needs the headers only and comes first. An HMAC
//! signature covers the raw body, so the body is read first (an over-size body is a 413 before the
//! signature can be checked), then the signature, then the content type. Anything that fails there
//! never reaches the domain, so it causes no ledger write and no upstream call. The handler then
//! validates the payload, the `Idempotency-Key` and `?mode=`, takes an in-flight permit, and runs
//! the use case: [`HandoffService::handle`](handoff_domain::HandoffService::handle) in transfer
//! mode (the default), [`HandoffService::advise`](handoff_domain::HandoffService::advise) with
//! `?mode=advise`.
//!
//! The answers' bodies are the typed DTOs below, which also generate the OpenAPI document.

use std::sync::Arc;

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use handoff_domain::{
    Advice, AdviceDecision, ConversationId, HandoffId, HandoffOutcome, HandoffRequest, IdempotencyKey, QueueId,
    ValidationErrors,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};

use crate::auth::HeaderCheck;
use crate::error::{
    whole_seconds, ApiError, ErrorBody, InProgressBody, InvalidPayloadBody, NotTransferableBody, UnavailableBody,
    UpstreamRejectedBody,
};
use crate::state::{AppState, MAX_BODY_BYTES};

/// The header that separates handoffs of one conversation (CONTRACT §5.1).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// An authenticated webhook body, parsed as JSON (not yet validated as a handoff).
#[derive(Debug)]
pub(crate) struct SignedJson {
    pub(crate) payload: Value,
    /// The `Idempotency-Key` header, validated (read here, where the headers are owned).
    pub(crate) idempotency_key: Result<Option<IdempotencyKey>, ValidationErrors>,
}

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
        let payload = serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedBody { problem: e.to_string() })?;
        Ok(SignedJson { payload, idempotency_key: idempotency_key(&parts.headers) })
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

/// What the webhook does with a valid handoff (`?mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HandoffMode {
    /// The default: the service writes the context, transfers, defers and retries (200/202).
    Transfer,
    /// The service writes the context and answers which queue to transfer to, or to defer; the
    /// flow transfers itself (Architect Set Participant Data is not needed, then Transfer to ACD).
    Advise,
}

/// The webhook's query string.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WebhookQuery {
    /// `transfer` (the default) or `advise`. Any other value is a 400 on the field `mode`.
    #[param(inline, value_type = Option<HandoffMode>)]
    mode: Option<String>,
}

/// `?mode=`, or the problem with it.
fn handoff_mode(query: Result<Query<WebhookQuery>, QueryRejection>) -> Result<HandoffMode, ValidationErrors> {
    let problem = "must be `transfer` or `advise`, at most once";
    match query.map(|Query(q)| q.mode) {
        Ok(None) => Ok(HandoffMode::Transfer),
        Ok(Some(raw)) => match raw.as_str() {
            "transfer" => Ok(HandoffMode::Transfer),
            "advise" => Ok(HandoffMode::Advise),
            _ => Err(ValidationErrors::single("mode", problem)),
        },
        // A repeated `mode` or an undecodable query string.
        Err(_) => Err(ValidationErrors::single("mode", problem)),
    }
}

/// `POST /webhooks/bot-handoff`.
#[utoipa::path(
    post,
    path = "/webhooks/bot-handoff",
    tag = "webhook",
    operation_id = "botHandoff",
    summary = "Hand a Web Messaging conversation from the bot to a human (CONTRACT §4.1)",
    description = "Authentication (any one of the security schemes) is checked on the raw body before the JSON is \
parsed. A valid request is validated completely (every problem reported at once) before any ledger write or \
Genesys call. With `?mode=advise` nothing is transferred: see the 200 answer.",
    params(
        WebhookQuery,
        ("Idempotency-Key" = Option<String>, Header,
            description = "Separates handoffs of one conversation: one handoff per (conversationId, key). 1-128 \
visible ASCII characters."),
    ),
    request_body(content = HandoffPayload, content_type = "application/json",
        description = "At most 64 KiB. Unknown top-level fields are ignored."),
    responses(
        (status = 200, body = HandoffAnswer,
            description = "Transfer mode: Genesys accepted the transfer (`status: transferred`). Advisory mode \
(`status: advise`): the context was written and nothing was transferred; `decision: transfer` names the queue \
to transfer to, `decision: defer` means no queue has capacity now. `replayed: true` repeats an earlier answer \
of the same handoff, with no upstream write."),
        (status = 202, body = DeferredBody,
            description = "Transfer mode: no capacity now; the service owns the handoff and transfers it itself \
(when capacity returns, or after HANDOFF_DEFER_FOR_SECS). Do not call again."),
        (status = 400, body = InvalidPayloadBody,
            description = "Bad JSON, a failed validation (payload, `Idempotency-Key` or `mode`) or a `queueId` \
outside the allowlist. `details` lists every problem."),
        (status = 401, description = "Missing or wrong secret or signature (never says which).",
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"handoff\"`")),
            body = ErrorBody, example = json!({"error": "unauthorized"})),
        (status = 404, description = "Genesys does not know the conversation.",
            body = ErrorBody, example = json!({"error": "conversation_not_found"})),
        (status = 409, body = InProgressBody, description = "The same handoff is being processed right now.",
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again."))),
        (status = 413, description = "The body is larger than 64 KiB.",
            body = ErrorBody, example = json!({"error": "payload_too_large"})),
        (status = 415, description = "The `Content-Type` is not `application/json`.",
            body = ErrorBody, example = json!({"error": "unsupported_media_type"})),
        (status = 422, body = NotTransferableBody,
            description = "The conversation ended, no participant holds it, or an agent already has it."),
        (status = 502, body = UpstreamRejectedBody,
            description = "Genesys refused (e.g. 403 missing permission). Genesys bodies are never echoed."),
        (status = 503, body = UnavailableBody,
            description = "`upstream_unavailable`: Genesys (or the ledger) is unavailable or rate-limited past \
the retry budget; a retry resumes the same handoff. `overloaded`: too many handoffs in flight. `timeout`: the \
request took longer than HANDOFF_REQUEST_TIMEOUT_SECS; the handoff keeps running and a retry gets its answer.",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security(("bearer" = []), ("basic" = []), ("hmacTimestamp" = [], "hmacSignature" = [])),
)]
pub(crate) async fn bot_handoff(
    State(state): State<AppState>,
    query: Result<Query<WebhookQuery>, QueryRejection>,
    SignedJson { payload, idempotency_key }: SignedJson,
) -> Result<Response, ApiError> {
    let (request, key, mode) =
        match (HandoffRequest::from_json(&payload, state.ids()), idempotency_key, handoff_mode(query)) {
            (Ok(request), Ok(key), Ok(mode)) => (request, key, mode),
            (request, key, mode) => {
                // Report the payload's problems, the header's and the query's together; at least one
                // of the three failed.
                let problems =
                    [request.err(), key.err(), mode.err()].into_iter().flatten().reduce(ValidationErrors::merge);
                return Err(problems.map_or_else(
                    || ApiError::Internal("validation failed without a problem".to_owned()),
                    ApiError::InvalidPayload,
                ));
            }
        };
    let permit = Arc::clone(state.in_flight()).try_acquire_owned().map_err(|_| ApiError::Overloaded)?;
    let service = Arc::clone(state.service());
    // The handoff runs on its own task: a request timeout or a dropped connection answers the
    // caller but never cancels a handoff half-way; a retry then gets its answer.
    let work = async move {
        let _permit = permit;
        match mode {
            HandoffMode::Transfer => service.handle(request, key).await,
            HandoffMode::Advise => service.advise(request, key).await,
        }
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
            Json(HandoffAnswer::Transferred(TransferredBody {
                status: TransferredStatus::Transferred,
                handoff_id: *handoff_id,
                conversation_id: *conversation_id,
                queue_id: *queue_id,
                replayed: *replayed,
            })),
        )
            .into_response(),
        HandoffOutcome::Deferred { handoff_id, conversation_id, queue_id, retry_after, replayed } => (
            StatusCode::ACCEPTED,
            Json(DeferredBody {
                status: DeferredStatus::Deferred,
                handoff_id: *handoff_id,
                conversation_id: *conversation_id,
                queue_id: *queue_id,
                retry_after_seconds: whole_seconds(*retry_after),
                reason: DeferralReason::NoCapacity,
                replayed: *replayed,
            }),
        )
            .into_response(),
        HandoffOutcome::Advised(advice) => {
            (StatusCode::OK, Json(HandoffAnswer::Advice(AdviceBody::from(advice)))).into_response()
        }
    }
}

// ---- the wire types (and the OpenAPI schemas) ----------------------------------------------

/// The webhook payload (CONTRACT §4.1). Documentation only: the handler validates the raw JSON
/// with `HandoffRequest::from_json`, which reports every problem with its field path.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // a schema (and a test fixture): its fields are never read
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "conversationId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    "guestInfo": { "id": "guest-8842-xyz", "name": "Jane Doe", "email": "jane.doe@example.com" },
    "handoffReason": "complex_billing_dispute",
    "customContext": { "attempted_resolution": "refund_policy_explained", "sentiment_score": "0.32" }
}))]
pub(crate) struct HandoffPayload {
    /// The conversation: the platform's conversation id (for Genesys, the Web Messaging
    /// conversation: a UUID, any case).
    conversation_id: String,
    /// Who the guest is. Never re-created in Genesys; written as participant data.
    guest_info: GuestInfoPayload,
    /// Why the bot hands off: 1-128 characters, no control characters. Chooses the queue through
    /// HANDOFF_ROUTES and labels the metrics, so keep the set of values small.
    #[schema(min_length = 1, max_length = 128)]
    handoff_reason: String,
    /// Written onto the customer participant as participant data. At most 40 keys of 1-64
    /// characters of `[A-Za-z0-9_.-]`; values are strings of at most 256 characters (numbers and
    /// booleans are turned into strings). Reserved keys (`guest_id`, `guest_name`, `guest_email`,
    /// `bot_handoff_*`) are refused.
    #[serde(default)]
    custom_context: BTreeMap<String, ContextValue>,
    /// Forces a queue: must be TARGET_QUEUE_ID, a HANDOFF_ROUTES queue or the fallback queue (the
    /// platform's queue id; a UUID for Genesys).
    queue_id: Option<String>,
    /// The participant that holds the conversation (the bot or flow); never the customer or an agent
    /// (the platform's participant id; a UUID for Genesys).
    participant_id: Option<String>,
}

/// `guestInfo`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // a schema (and a test fixture): its fields are never read
pub(crate) struct GuestInfoPayload {
    /// The guest's id in the bot platform (participant data `guest_id`).
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    /// Participant data `guest_name`. Never logged, never echoed.
    #[schema(max_length = 256)]
    name: Option<String>,
    /// Participant data `guest_email`: a plausible address. Never logged, never echoed.
    #[schema(format = Email, max_length = 256)]
    email: Option<String>,
}

/// A `customContext` value.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // a schema (and a test fixture): its fields are never read
#[serde(untagged)]
pub(crate) enum ContextValue {
    /// At most 256 characters.
    Text(String),
    /// Written as its decimal text.
    Number(f64),
    /// Written as `true` or `false`.
    Flag(bool),
}

/// A 200 answer: transfer mode's `transferred`, or advisory mode's `advise`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum HandoffAnswer {
    /// Transfer mode.
    Transferred(TransferredBody),
    /// Advisory mode (`?mode=advise`).
    Advice(AdviceBody),
}

/// `transferred`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TransferredStatus {
    /// Genesys accepted the transfer.
    Transferred,
}

/// 200 `transferred`: Genesys accepted the transfer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransferredBody {
    #[schema(inline)]
    status: TransferredStatus,
    /// Our record (`GET /handoffs/{handoffId}`).
    #[schema(value_type = String, format = Uuid)]
    handoff_id: HandoffId,
    /// The conversation (the platform's conversation id; a UUID for Genesys).
    #[schema(value_type = String)]
    conversation_id: ConversationId,
    /// The queue it went to, possibly the fallback (the platform's queue id; a UUID for Genesys).
    #[schema(value_type = String)]
    queue_id: QueueId,
    /// This answer repeats an earlier one; nothing was written upstream now.
    replayed: bool,
}

/// `deferred`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeferredStatus {
    /// The service owns the handoff.
    Deferred,
}

/// `no_capacity`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeferralReason {
    /// Neither the chosen queue nor the fallback has capacity.
    NoCapacity,
}

/// 202 `deferred`: the service owns the handoff and will transfer it itself.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeferredBody {
    #[schema(inline)]
    status: DeferredStatus,
    /// Our record.
    #[schema(value_type = String, format = Uuid)]
    handoff_id: HandoffId,
    /// The conversation (the platform's conversation id; a UUID for Genesys).
    #[schema(value_type = String)]
    conversation_id: ConversationId,
    /// The queue it waits for (the platform's queue id; a UUID for Genesys).
    #[schema(value_type = String)]
    queue_id: QueueId,
    /// When the service checks capacity again. Informational: not a request to call again.
    retry_after_seconds: u64,
    #[schema(inline)]
    reason: DeferralReason,
    /// This answer repeats an earlier one.
    replayed: bool,
}

/// `advise`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AdviceStatus {
    /// Advisory mode: nothing was transferred.
    Advise,
}

/// What the flow should do.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AdviceDecisionBody {
    /// `queueId` has capacity: Transfer to ACD to it now.
    Transfer,
    /// No queue has capacity now: tell the guest, then transfer to `queueId` anyway or ask again
    /// after `retryAfterSeconds`. The service does not own the handoff.
    Defer,
}

/// 200 `advise` (`?mode=advise`): the context attributes were written onto the customer
/// participant and nothing was transferred; the flow transfers. Guest data is never echoed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AdviceBody {
    #[schema(inline)]
    status: AdviceStatus,
    #[schema(inline)]
    decision: AdviceDecisionBody,
    /// Our record.
    #[schema(value_type = String, format = Uuid)]
    handoff_id: HandoffId,
    /// The conversation (the platform's conversation id; a UUID for Genesys).
    #[schema(value_type = String)]
    conversation_id: ConversationId,
    /// `transfer`: the queue to transfer to (possibly the fallback). `defer`: the chosen queue. The
    /// platform's queue id (a UUID for Genesys).
    #[schema(value_type = String)]
    queue_id: QueueId,
    /// Always `true`: the context (customContext, guest identity, `bot_handoff_*`) is on the
    /// customer participant, in both decisions. The flow need not Set Participant Data.
    context_written: bool,
    /// `defer` only: when asking again (same key) may give another answer; until then the same
    /// advice is replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
    /// This answer repeats an earlier one; nothing was called upstream now.
    replayed: bool,
}

impl From<&Advice> for AdviceBody {
    fn from(advice: &Advice) -> Self {
        let (decision, retry_after_seconds) = match advice.decision {
            AdviceDecision::Transfer => (AdviceDecisionBody::Transfer, None),
            AdviceDecision::Defer { retry_after } => (AdviceDecisionBody::Defer, Some(whole_seconds(retry_after))),
        };
        Self {
            status: AdviceStatus::Advise,
            decision,
            handoff_id: advice.handoff_id,
            conversation_id: advice.conversation_id,
            queue_id: advice.queue_id,
            context_written: true,
            retry_after_seconds,
            replayed: advice.replayed,
        }
    }
}

#[cfg(test)]
mod advise_tests;
#[cfg(test)]
mod tests;
