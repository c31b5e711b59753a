//! The read side (CONTRACT §4.3): `GET /handoffs/{handoffId}`, `GET /handoffs?conversationId=…`
//! and `GET /handoffs/stats?since=…`, behind the admin guard ([`AdminAccess`]): the admin token,
//! or the webhook's credentials while `HANDOFF_ADMIN_TOKEN` is unset.
//!
//! A record is shown with its guest's id only: the guest's name and email, and the bot's
//! `customContext`, never leave the ledger through this API.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use handoff_domain::lifecycle::HistoryEntry;
use handoff_domain::ports::StatRow;
use handoff_domain::{
    AdviceDecision, Confirmation, ConversationId, HandoffId, HandoffRecord, Outcome, OutcomeRow, OutcomeStats,
    Percentiles, QueueId, StoredAnswer,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::admin::AdminAccess;
use crate::error::{whole_seconds, ApiError, ErrorBody, InvalidPayloadBody};
use crate::state::AppState;

/// `since` of `/handoffs/stats` when none is given: the last 24 hours.
const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// `GET /handoffs/{handoffId}`.
#[utoipa::path(
    get,
    path = "/handoffs/{handoffId}",
    tag = "read",
    operation_id = "getHandoff",
    summary = "One handoff record and its history",
    params(("handoffId" = String, Path, format = Uuid, description = "The `handoffId` of a webhook answer.")),
    responses(
        (status = 200, body = HandoffView, description = "The record. Guest name, e-mail and context are never shown."),
        (status = 400, body = InvalidPayloadBody, description = "`handoffId` is not a UUID (`invalid_request`)."),
        (status = 401, body = ErrorBody, description = "Missing or wrong admin token (or, while HANDOFF_ADMIN_TOKEN \
is unset, webhook credentials).", example = json!({"error": "unauthorized"})),
        (status = 404, description = "No such record.",
            body = ErrorBody, example = json!({"error": "handoff_not_found"})),
        (status = 503, description = "The ledger could not be read.",
            body = ErrorBody, example = json!({"error": "unavailable"})),
    ),
    security(("adminBearer" = []), ("adminBasic" = []), ("bearer" = []), ("basic" = []), ("hmacTimestamp" = [], "hmacSignature" = [])),
)]
pub(crate) async fn get_handoff(
    _: AdminAccess,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<HandoffView>, ApiError> {
    let Ok(Path(raw)) = path else {
        return Err(ApiError::invalid_parameter("handoffId", "must be a UUID"));
    };
    let id = HandoffId::parse(&raw).map_err(|_| ApiError::invalid_parameter("handoffId", "must be a UUID"))?;
    match state.service().ledger().get(id).await? {
        Some(record) => Ok(Json(HandoffView::from(&record))),
        None => Err(ApiError::HandoffNotFound),
    }
}

/// Query of `GET /handoffs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// The conversation (required): the platform's conversation id; a UUID for Genesys.
    #[serde(rename = "conversationId")]
    #[param(rename = "conversationId", required = true)]
    conversation_id: Option<String>,
}

/// `GET /handoffs?conversationId=…`: every handoff of a conversation, newest first.
#[utoipa::path(
    get,
    path = "/handoffs",
    tag = "read",
    operation_id = "listHandoffs",
    summary = "Every handoff of a conversation, newest first",
    params(ListQuery),
    responses(
        (status = 200, body = HandoffList, description = "The records (an empty list when there are none)."),
        (status = 400, body = InvalidPayloadBody, description = "`conversationId` is missing or not the platform's \
conversation id (a UUID for Genesys)."),
        (status = 401, body = ErrorBody, description = "Missing or wrong admin token (or, while HANDOFF_ADMIN_TOKEN \
is unset, webhook credentials).", example = json!({"error": "unauthorized"})),
        (status = 503, description = "The ledger could not be read.",
            body = ErrorBody, example = json!({"error": "unavailable"})),
    ),
    security(("adminBearer" = []), ("adminBasic" = []), ("bearer" = []), ("basic" = []), ("hmacTimestamp" = [], "hmacSignature" = [])),
)]
pub(crate) async fn list_handoffs(
    _: AdminAccess,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<HandoffList>, ApiError> {
    let raw = query
        .map_err(|_| ApiError::invalid_parameter("$query", "is not a valid query string"))?
        .0
        .conversation_id
        .ok_or_else(|| ApiError::invalid_parameter("conversationId", "is required"))?;
    let id = ConversationId::parse_with(state.ids(), &raw)
        .map_err(|e| ApiError::invalid_parameter("conversationId", e.problem))?;
    let records = state.service().ledger().find_by_conversation(id).await?;
    Ok(Json(HandoffList { handoffs: records.iter().map(HandoffView::from).collect() }))
}

/// Query of `GET /handoffs/stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsQuery {
    /// RFC 3339; the last 24 hours when absent.
    #[param(format = DateTime)]
    since: Option<String>,
}

/// `GET /handoffs/stats?since=RFC3339`: counts of handoffs created since then, by reason × queue ×
/// outcome, with time-to-queue p50 and p95; and the counts by stage.
#[utoipa::path(
    get,
    path = "/handoffs/stats",
    tag = "read",
    operation_id = "handoffStats",
    summary = "Counts of handoffs by reason, queue and outcome, with time to queue",
    params(StatsQuery),
    responses(
        (status = 200, body = StatsView, description = "Counts of the handoffs created since `since`: by reason × \
queue × outcome (`rows`, with time to queue), by outcome (`totals`), time to queue over all (`timeToQueue`), and \
by reason × queue × stage (`stages`)."),
        (status = 400, body = InvalidPayloadBody, description = "`since` is not an RFC 3339 timestamp."),
        (status = 401, body = ErrorBody, description = "Missing or wrong admin token (or, while HANDOFF_ADMIN_TOKEN \
is unset, webhook credentials).", example = json!({"error": "unauthorized"})),
        (status = 503, description = "The ledger could not be read.",
            body = ErrorBody, example = json!({"error": "unavailable"})),
    ),
    security(("adminBearer" = []), ("adminBasic" = []), ("bearer" = []), ("basic" = []), ("hmacTimestamp" = [], "hmacSignature" = [])),
)]
pub(crate) async fn stats(
    _: AdminAccess,
    State(state): State<AppState>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<StatsView>, ApiError> {
    let query = query.map_err(|_| ApiError::invalid_parameter("$query", "is not a valid query string"))?.0;
    let since = match query.since {
        None => state.now() - chrono::Duration::from_std(DEFAULT_STATS_WINDOW).unwrap_or(chrono::Duration::days(1)),
        Some(raw) => DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::invalid_parameter("since", "must be an RFC 3339 timestamp"))?,
    };
    let ledger = state.service().ledger();
    let (facts, stages) = tokio::join!(ledger.outcomes(since), ledger.stats(since));
    let stats = OutcomeStats::from_facts(&facts?);
    Ok(Json(StatsView {
        since: timestamp(since),
        rows: stats.rows.iter().map(OutcomeRowView::from).collect(),
        totals: stats
            .totals
            .iter()
            .map(|(outcome, count)| OutcomeTotalView {
                outcome: outcome.as_str(),
                cause: outcome.cause().map(|c| c.as_str()),
                count: *count,
            })
            .collect(),
        time_to_queue: stats.time_to_queue.map(TimeToQueueView::from),
        stages: stages?.iter().map(StatRowView::from).collect(),
    }))
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---- the wire types (and the OpenAPI schemas) ----------------------------------------------

/// A handoff record as the read side shows it: the guest's id only, never the guest's name or
/// e-mail or the bot's `customContext`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HandoffView {
    /// The record.
    #[schema(value_type = String, format = Uuid)]
    handoff_id: HandoffId,
    /// The conversation (the platform's conversation id; a UUID for Genesys).
    #[schema(value_type = String)]
    conversation_id: ConversationId,
    /// The `Idempotency-Key` it was delivered with.
    idempotency_key: Option<String>,
    /// `guestInfo.id`.
    guest_id: String,
    /// `received`, `deferred`, `context_written`, `transfer_pending`, `transferred`, `advised`
    /// (advisory mode: the flow transfers, nothing was transferred by the service), `failed` or
    /// `abandoned` (the background worker finished it without a transfer because nobody waited
    /// for it any more: the conversation ended, the guest left, or the bot no longer held it).
    #[schema(example = "transferred")]
    stage: &'static str,
    /// What came of it: `in_progress`, `transferred`, `transferred_after_deferral`,
    /// `advised_defer`, `confirmed`, `unconfirmed`, `failed` (see `cause`) or `abandoned`.
    #[schema(example = "confirmed")]
    outcome: &'static str,
    /// For `outcome: failed`: `not_found`, `not_transferable`, `rejected`, `invalid` or `interrupted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
    /// `handoffReason`.
    reason: String,
    /// The queue chosen (the platform's queue id; a UUID for Genesys).
    #[schema(value_type = Option<String>)]
    queue_id: Option<QueueId>,
    /// Deliveries, resumptions and worker checks that worked on it.
    attempts: u32,
    /// RFC 3339, milliseconds, UTC.
    #[schema(format = DateTime)]
    created_at: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    updated_at: String,
    /// Deferred: when the worker checks capacity next. Unfinished after a 503: when the worker
    /// finishes it if the caller has not come back (`HANDOFF_RESUME_AFTER_SECS`).
    #[schema(format = DateTime)]
    next_check_at: Option<String>,
    /// Deferred: when it is transferred whatever the capacity.
    #[schema(format = DateTime)]
    defer_until: Option<String>,
    /// The last retryable error.
    last_error: Option<String>,
    /// Genesys `inin-correlation-id`s of the calls made for it.
    correlation_ids: Vec<String>,
    /// The answer given, once there is one.
    answer: Option<AnswerView>,
    /// Every transition, oldest first.
    history: Vec<HistoryView>,
}

impl From<&HandoffRecord> for HandoffView {
    fn from(record: &HandoffRecord) -> Self {
        Self {
            handoff_id: record.id,
            conversation_id: record.key.conversation_id,
            idempotency_key: record.key.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            guest_id: record.request.guest().id().to_owned(),
            stage: record.stage.as_str(),
            outcome: Outcome::of(record).as_str(),
            cause: Outcome::of(record).cause().map(|c| c.as_str()),
            reason: record.reason().as_str().to_owned(),
            queue_id: record.queue,
            attempts: record.attempts,
            created_at: timestamp(record.created_at),
            updated_at: timestamp(record.updated_at),
            next_check_at: record.next_check_at.map(timestamp),
            defer_until: record.defer_until.map(timestamp),
            last_error: record.last_error.clone(),
            correlation_ids: record.correlation_ids.clone(),
            answer: record.answer.as_ref().map(AnswerView::from),
            history: record.history.iter().map(HistoryView::from).collect(),
        }
    }
}

/// A record's answer, by `status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum AnswerView {
    /// 200 transferred.
    #[serde(rename_all = "camelCase")]
    Transferred {
        /// The queue it went to (the platform's queue id; a UUID for Genesys).
        #[schema(value_type = String)]
        queue_id: QueueId,
    },
    /// 202 deferred.
    #[serde(rename_all = "camelCase")]
    Deferred {
        /// The queue it waits for (the platform's queue id; a UUID for Genesys).
        #[schema(value_type = String)]
        queue_id: QueueId,
        /// When the worker checks again.
        retry_after_seconds: u64,
    },
    /// A permanent failure.
    #[serde(rename_all = "camelCase")]
    Failed {
        /// The HTTP status answered.
        http_status: u16,
        /// The error code.
        code: String,
        /// Why.
        message: String,
    },
    /// An advisory delivery is working on it, or stopped on a retryable error (a retry resumes it).
    Advising,
    /// 200 advise: the advice given; nothing was transferred.
    #[serde(rename_all = "camelCase")]
    Advise {
        /// `transfer` or `defer`.
        #[schema(example = "transfer")]
        decision: &'static str,
        /// The queue advised (`transfer`) or the chosen queue that had no capacity (`defer`): the
        /// platform's queue id (a UUID for Genesys).
        #[schema(value_type = String)]
        queue_id: QueueId,
        /// `defer` only.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<u64>,
        /// `transfer` only, once the confirmation reads settled it: whether the conversation
        /// then reached a queue.
        #[serde(skip_serializing_if = "Option::is_none")]
        confirmation: Option<ConfirmationView>,
    },
}

/// Whether the conversation reached a queue after an advice to transfer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum ConfirmationView {
    /// It did.
    #[serde(rename_all = "camelCase")]
    Confirmed {
        /// The queue it reached (the platform's queue id; a UUID for Genesys).
        #[schema(value_type = String)]
        queue_id: QueueId,
        /// From the advice to the read that saw it in the queue.
        seconds_to_queue: f64,
    },
    /// It did not, within `HANDOFF_CONFIRM_SECS`.
    Unconfirmed {
        /// `still_with_flow`, `ended`, `elsewhere` or `unknown` (the reads failed).
        why: &'static str,
    },
}

impl From<&Confirmation> for ConfirmationView {
    fn from(c: &Confirmation) -> Self {
        match c {
            Confirmation::Confirmed { queue, after } => {
                ConfirmationView::Confirmed { queue_id: *queue, seconds_to_queue: seconds(*after) }
            }
            Confirmation::Unconfirmed { why } => ConfirmationView::Unconfirmed { why: why.as_str() },
        }
    }
}

/// Seconds with millisecond precision.
fn seconds(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

impl From<&StoredAnswer> for AnswerView {
    fn from(answer: &StoredAnswer) -> Self {
        match answer {
            StoredAnswer::Transferred { queue } => AnswerView::Transferred { queue_id: *queue },
            StoredAnswer::Deferred { queue, retry_after } => {
                AnswerView::Deferred { queue_id: *queue, retry_after_seconds: whole_seconds(*retry_after) }
            }
            StoredAnswer::Failed { status, code, message } => {
                AnswerView::Failed { http_status: *status, code: code.clone(), message: message.clone() }
            }
            StoredAnswer::Advising => AnswerView::Advising,
            StoredAnswer::Advised { queue, decision, confirmation } => AnswerView::Advise {
                decision: decision.as_str(),
                queue_id: *queue,
                retry_after_seconds: match decision {
                    AdviceDecision::Transfer => None,
                    AdviceDecision::Defer { retry_after } => Some(whole_seconds(*retry_after)),
                },
                confirmation: confirmation.as_ref().map(ConfirmationView::from),
            },
        }
    }
}

/// One line of a record's history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryView {
    /// RFC 3339.
    #[schema(format = DateTime)]
    at: String,
    /// The stage entered (or kept).
    stage: &'static str,
    /// What happened.
    note: String,
}

impl From<&HistoryEntry> for HistoryView {
    fn from(entry: &HistoryEntry) -> Self {
        Self { at: timestamp(entry.at), stage: entry.stage.as_str(), note: entry.note.clone() }
    }
}

/// `GET /handoffs?conversationId=`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HandoffList {
    /// Newest first.
    handoffs: Vec<HandoffView>,
}

/// `GET /handoffs/stats`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatsView {
    /// The start of the window, RFC 3339.
    #[schema(format = DateTime)]
    since: String,
    /// One row per reason × queue × outcome (× cause, for failures), sorted by reason, queue,
    /// then outcome.
    rows: Vec<OutcomeRowView>,
    /// Handoffs per outcome across reasons and queues.
    totals: Vec<OutcomeTotalView>,
    /// Time to queue of every handoff that reached one (`transferred`,
    /// `transferred_after_deferral`, `confirmed`); absent when none did.
    time_to_queue: Option<TimeToQueueView>,
    /// One row per reason × queue × stage (the ledger's view: `advised`, `deferred`, …).
    stages: Vec<StatRowView>,
}

/// One row of `/handoffs/stats` `rows`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutcomeRowView {
    /// The handoff reason.
    reason: String,
    /// The queue chosen or advised, if one was (the platform's queue id; a UUID for Genesys).
    #[schema(value_type = Option<String>)]
    queue_id: Option<QueueId>,
    /// `in_progress`, `transferred`, `transferred_after_deferral`, `advised_defer`, `confirmed`,
    /// `unconfirmed`, `failed` or `abandoned`.
    #[schema(example = "confirmed")]
    outcome: &'static str,
    /// For `failed`: `not_found`, `not_transferable`, `rejected`, `invalid` or `interrupted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
    /// How many.
    count: u64,
    /// For outcomes that reached a queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    time_to_queue: Option<TimeToQueueView>,
}

impl From<&OutcomeRow> for OutcomeRowView {
    fn from(row: &OutcomeRow) -> Self {
        Self {
            reason: row.reason.clone(),
            queue_id: row.queue_id,
            outcome: row.outcome.as_str(),
            cause: row.outcome.cause().map(|c| c.as_str()),
            count: row.count,
            time_to_queue: row.time_to_queue.map(TimeToQueueView::from),
        }
    }
}

/// One entry of `/handoffs/stats` `totals`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OutcomeTotalView {
    /// The outcome (as in `rows`).
    outcome: &'static str,
    /// For `failed`: the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
    /// How many.
    count: u64,
}

/// Time to queue: transfer mode from the webhook to the transfer, advisory mode from the advice
/// to the confirmation read that saw the conversation in a queue (an upper bound within one read
/// step: 5, 15, 35, 75, … s after the advice).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimeToQueueView {
    /// How many handoffs the percentiles cover.
    count: u64,
    /// Median, in seconds (millisecond precision).
    p50_seconds: f64,
    /// 95th percentile (nearest rank), in seconds.
    p95_seconds: f64,
}

impl From<Percentiles> for TimeToQueueView {
    fn from(p: Percentiles) -> Self {
        Self { count: p.count, p50_seconds: seconds(p.p50), p95_seconds: seconds(p.p95) }
    }
}

/// One row of `/handoffs/stats` `stages`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatRowView {
    /// The handoff reason.
    reason: String,
    /// The queue chosen, if one was (the platform's queue id; a UUID for Genesys).
    #[schema(value_type = Option<String>)]
    queue_id: Option<QueueId>,
    /// The stage the handoffs are in (see `HandoffView.stage`).
    stage: &'static str,
    /// How many.
    count: u64,
}

impl From<&StatRow> for StatRowView {
    fn from(row: &StatRow) -> Self {
        Self { reason: row.reason.clone(), queue_id: row.queue_id, stage: row.outcome.as_str(), count: row.count }
    }
}

#[cfg(test)]
mod tests;
