//! The read side (CONTRACT §4.3): `GET /handoffs/{handoffId}`, `GET /handoffs?conversationId=…`
//! and `GET /handoffs/stats?since=…`, behind the webhook's authentication.
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
use handoff_domain::{ConversationId, HandoffId, HandoffRecord, StoredAnswer};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Authenticated;
use crate::error::{whole_seconds, ApiError};
use crate::state::AppState;

/// `since` of `/handoffs/stats` when none is given: the last 24 hours.
const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// `GET /handoffs/{handoffId}`.
pub(crate) async fn get_handoff(
    _: Authenticated,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Ok(Path(raw)) = path else {
        return Err(ApiError::invalid_parameter("handoffId", "must be a UUID"));
    };
    let id = HandoffId::parse(&raw).map_err(|_| ApiError::invalid_parameter("handoffId", "must be a UUID"))?;
    match state.service().ledger().get(id).await? {
        Some(record) => Ok(Json(record_json(&record))),
        None => Err(ApiError::HandoffNotFound),
    }
}

/// Query of `GET /handoffs`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "conversationId")]
    conversation_id: Option<String>,
}

/// `GET /handoffs?conversationId=…`: every handoff of a conversation, newest first.
pub(crate) async fn list_handoffs(
    _: Authenticated,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let raw = query
        .map_err(|_| ApiError::invalid_parameter("$query", "is not a valid query string"))?
        .0
        .conversation_id
        .ok_or_else(|| ApiError::invalid_parameter("conversationId", "is required"))?;
    let id =
        ConversationId::parse(&raw).map_err(|_| ApiError::invalid_parameter("conversationId", "must be a UUID"))?;
    let records = state.service().ledger().find_by_conversation(id).await?;
    Ok(Json(json!({ "handoffs": records.iter().map(record_json).collect::<Vec<_>>() })))
}

/// Query of `GET /handoffs/stats`.
#[derive(Debug, Deserialize)]
pub(crate) struct StatsQuery {
    since: Option<String>,
}

/// `GET /handoffs/stats?since=RFC3339`: counts of handoffs created since then, by reason × queue ×
/// outcome (the stage they are in).
pub(crate) async fn stats(
    _: Authenticated,
    State(state): State<AppState>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query.map_err(|_| ApiError::invalid_parameter("$query", "is not a valid query string"))?.0;
    let since = match query.since {
        None => state.now() - chrono::Duration::from_std(DEFAULT_STATS_WINDOW).unwrap_or(chrono::Duration::days(1)),
        Some(raw) => DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::invalid_parameter("since", "must be an RFC 3339 timestamp"))?,
    };
    let rows = state.service().ledger().stats(since).await?;
    Ok(Json(json!({ "since": timestamp(since), "rows": rows.iter().map(stat_json).collect::<Vec<_>>() })))
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn record_json(record: &HandoffRecord) -> Value {
    json!({
        "handoffId": record.id,
        "conversationId": record.key.conversation_id,
        "idempotencyKey": record.key.idempotency_key.as_ref().map(|k| k.as_str()),
        "guestId": record.request.guest().id(),
        "stage": record.stage.as_str(),
        "reason": record.reason().as_str(),
        "queueId": record.queue,
        "attempts": record.attempts,
        "createdAt": timestamp(record.created_at),
        "updatedAt": timestamp(record.updated_at),
        "nextCheckAt": record.next_check_at.map(timestamp),
        "deferUntil": record.defer_until.map(timestamp),
        "lastError": record.last_error,
        "correlationIds": record.correlation_ids,
        "answer": record.answer.as_ref().map(answer_json),
        "history": record.history.iter().map(history_json).collect::<Vec<_>>(),
    })
}

fn answer_json(answer: &StoredAnswer) -> Value {
    match answer {
        StoredAnswer::Transferred { queue } => json!({ "status": "transferred", "queueId": queue }),
        StoredAnswer::Deferred { queue, retry_after } => {
            json!({ "status": "deferred", "queueId": queue, "retryAfterSeconds": whole_seconds(*retry_after) })
        }
        StoredAnswer::Failed { status, code, message } => {
            json!({ "status": "failed", "httpStatus": status, "code": code, "message": message })
        }
    }
}

fn history_json(entry: &HistoryEntry) -> Value {
    json!({ "at": timestamp(entry.at), "stage": entry.stage.as_str(), "note": entry.note })
}

fn stat_json(row: &StatRow) -> Value {
    json!({ "reason": row.reason, "queueId": row.queue_id, "outcome": row.outcome.as_str(), "count": row.count })
}

#[cfg(test)]
mod tests;
