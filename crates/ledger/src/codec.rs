//! Converting domain values to column values and back, shared by both backends.
//!
//! A record is written as [`RecordColumns`] (plain values: our UUIDs, the platform's ids as text,
//! JSON, UTC times) and read back through [`RecordColumns::into_record`], which re-validates
//! everything: the request through [`HandoffRequest::from_stored_json`], the platform's ids with the
//! domain's generic check only (a row is never refused because a platform's rules got stricter),
//! stages through [`Stage::parse`]. A row that no longer validates is [`LedgerError::Corrupt`],
//! never a panic.
//!
//! Times are kept to the microsecond (PostgreSQL's `timestamptz` precision); [`micros`] truncates
//! so both backends store the same value.

use handoff_domain::ports::{ContextAnchor, Handle};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use handoff_domain::insights::{HandoffSummary, SummaryFacts};
use handoff_domain::lifecycle::HistoryEntry;
use handoff_domain::ports::{HandoffEvent, LedgerError, OutboxEntry, StatRow};
use handoff_domain::{
    AdviceDecision, Confirmation, ConversationId, HandoffId, HandoffKey, HandoffReason, HandoffRecord, HandoffRequest,
    IdempotencyKey, InvalidId, OutcomeFacts, QueueId, Stage, StoredAnswer, Unconfirmed,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// `t` truncated to the microsecond.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// `now + lease`, as `InMemoryLedger` computes it (saturating), to the microsecond.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    micros(handoff_domain::later(now, lease))
}

/// `limit` as a SQL `LIMIT` value.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A column that should hold a UTC time in microseconds (SQLite).
pub(crate) fn time_from_micros(value: i64, what: &str) -> Result<DateTime<Utc>, LedgerError> {
    DateTime::from_timestamp_micros(value).ok_or_else(|| corrupt(what, "time out of range"))
}

pub(crate) fn corrupt(what: &str, problem: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(format!("{what}: {problem}"))
}

/// An optional platform id column (`queue_id`, `holder`, `customer`), with the domain's generic
/// check only.
fn platform_id<T: FromStr<Err = InvalidId>>(raw: Option<&str>) -> Result<Option<T>, InvalidId> {
    raw.map(str::parse).transpose()
}

/// Parses a UUID column stored as text (SQLite).
pub(crate) fn uuid_from_text(raw: &str, what: &str) -> Result<Uuid, LedgerError> {
    Uuid::try_parse(raw).map_err(|_| corrupt(what, "not a UUID"))
}

/// One `handoffs` row as plain values, in the order of [`crate::sql::RECORD_COLUMNS`].
#[derive(Debug, Clone)]
pub(crate) struct RecordColumns {
    pub(crate) id: Uuid,
    pub(crate) key: String,
    pub(crate) conversation_id: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) reason: String,
    pub(crate) request: Value,
    pub(crate) stage: String,
    pub(crate) queue_id: Option<String>,
    pub(crate) holder: Option<String>,
    pub(crate) customer: Option<String>,
    pub(crate) answer: Option<Value>,
    pub(crate) attempts: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) next_check_at: Option<DateTime<Utc>>,
    pub(crate) defer_until: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
    pub(crate) correlation_ids: Value,
    pub(crate) history: Value,
}

/// The outcome and time to queue stored beside a record (migration 0006), decided by the domain
/// from the record as stored (times to the microsecond), so a read never decides them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decided {
    /// [`insights::Outcome`](handoff_domain::insights::Outcome)'s name: `transferred`, `failed:not_found`, ….
    pub(crate) outcome: String,
    /// Whole milliseconds to the queue, for an outcome that reached one.
    pub(crate) to_queue_ms: Option<i64>,
}

impl Decided {
    /// Of `record`.
    pub(crate) fn of_record(record: &HandoffRecord) -> Self {
        Self::of_facts(&OutcomeFacts {
            reason: String::new(),
            queue_id: record.queue,
            stage: record.stage,
            answer: record.answer.clone(),
            deferred: record.defer_until.is_some(),
            created_at: micros(record.created_at),
            updated_at: micros(record.updated_at),
        })
    }

    /// Of the stored facts of a record.
    pub(crate) fn of_facts(facts: &OutcomeFacts) -> Self {
        let outcome = handoff_domain::insights::Outcome::of(facts.stage, facts.answer.as_ref(), facts.deferred);
        Self {
            outcome: outcome.to_string(),
            to_queue_ms: facts.time_to_queue().map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl RecordColumns {
    /// The columns of `record`, times truncated to the microsecond.
    pub(crate) fn from_record(record: &HandoffRecord) -> Self {
        Self {
            id: *record.id.as_uuid(),
            key: record.key.to_string(),
            conversation_id: record.key.conversation_id.as_str().to_owned(),
            idempotency_key: record.key.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            reason: record.reason().as_str().to_owned(),
            request: record.request.to_json(),
            stage: record.stage.as_str().to_owned(),
            queue_id: record.queue.map(|q| q.as_str().to_owned()),
            // The columns keep their names: `holder` holds the handle, `customer` the context anchor.
            holder: record.handle.map(|h| h.as_str().to_owned()),
            customer: record.context_anchor.map(|a| a.as_str().to_owned()),
            answer: record.answer.as_ref().map(answer_to_json),
            attempts: i64::from(record.attempts),
            created_at: micros(record.created_at),
            updated_at: micros(record.updated_at),
            next_check_at: record.next_check_at.map(micros),
            defer_until: record.defer_until.map(micros),
            last_error: record.last_error.clone(),
            correlation_ids: Value::from(record.correlation_ids.clone()),
            history: Value::Array(record.history.iter().map(history_to_json).collect()),
        }
    }

    /// The record these columns describe, re-validated.
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] naming the record and the column that does not validate.
    pub(crate) fn into_record(self) -> Result<HandoffRecord, LedgerError> {
        let what = format!("handoff {}", self.id);
        let bad = |column: &str, problem: &dyn std::fmt::Display| corrupt(&what, format_args!("{column}: {problem}"));

        let request = HandoffRequest::from_stored_json(&self.request).map_err(|e| bad("request", &e))?;
        let conversation_id = ConversationId::parse(&self.conversation_id).map_err(|e| bad("conversation_id", &e))?;
        if request.conversation_id() != conversation_id {
            return Err(bad("request", &"conversationId differs from the conversation_id column"));
        }
        let idempotency_key = match &self.idempotency_key {
            Some(raw) => Some(IdempotencyKey::parse(raw).map_err(|e| bad("idempotency_key", &e))?),
            None => None,
        };
        let key = HandoffKey::new(conversation_id, idempotency_key);
        if key.to_string() != self.key {
            return Err(bad("key", &"differs from conversation_id and idempotency_key"));
        }
        if request.reason().as_str() != self.reason {
            return Err(bad("reason", &"differs from the request's handoffReason"));
        }
        let stage = Stage::parse(&self.stage).ok_or_else(|| bad("stage", &format_args!("unknown `{}`", self.stage)))?;
        let answer = match &self.answer {
            Some(v) => Some(answer_from_json(v).map_err(|e| bad("answer", &e))?),
            None => None,
        };
        let attempts = u32::try_from(self.attempts).map_err(|e| bad("attempts", &e))?;
        let correlation_ids: Vec<String> =
            serde_json::from_value(self.correlation_ids).map_err(|e| bad("correlation_ids", &e))?;
        let history = history_from_json(self.history).map_err(|e| bad("history", &e))?;

        Ok(HandoffRecord {
            id: HandoffId::from_uuid(self.id),
            key,
            request,
            stage,
            queue: platform_id(self.queue_id.as_deref()).map_err(|e| bad("queue_id", &e))?,
            handle: self.holder.as_deref().map(Handle::parse).transpose().map_err(|e| bad("holder", &e))?,
            context_anchor: self
                .customer
                .as_deref()
                .map(ContextAnchor::parse)
                .transpose()
                .map_err(|e| bad("customer", &e))?,
            answer,
            attempts,
            created_at: self.created_at,
            updated_at: self.updated_at,
            next_check_at: self.next_check_at,
            defer_until: self.defer_until,
            last_error: self.last_error,
            correlation_ids,
            history,
        })
    }
}

/// `StoredAnswer` as stored: tagged by `kind`; `retryAfter` is serde's exact `{secs, nanos}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum AnswerJson {
    Transferred {
        queue: QueueId,
    },
    Deferred {
        queue: QueueId,
        #[serde(rename = "retryAfter")]
        retry_after: Duration,
    },
    Failed {
        status: u16,
        code: String,
        message: String,
    },
    Advising,
    Advised {
        queue: QueueId,
        decision: DecisionJson,
        /// Present exactly for `defer`.
        #[serde(rename = "retryAfter", default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<Duration>,
        /// An advice to transfer, once confirmed or not (absent in records written before 0002).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirmation: Option<ConfirmationJson>,
    },
}

/// `Confirmation` as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
enum ConfirmationJson {
    Confirmed {
        queue: QueueId,
        /// serde's exact `{secs, nanos}`.
        after: Duration,
    },
    Unconfirmed {
        why: String,
    },
}

impl ConfirmationJson {
    fn of(confirmation: &Confirmation) -> Self {
        match confirmation {
            Confirmation::Confirmed { queue, after } => ConfirmationJson::Confirmed { queue: *queue, after: *after },
            Confirmation::Unconfirmed { why } => ConfirmationJson::Unconfirmed { why: why.as_str().to_owned() },
        }
    }

    fn into_domain(self) -> Result<Confirmation, serde_json::Error> {
        Ok(match self {
            ConfirmationJson::Confirmed { queue, after } => Confirmation::Confirmed { queue, after },
            ConfirmationJson::Unconfirmed { why } => Confirmation::Unconfirmed {
                why: Unconfirmed::parse(&why)
                    .ok_or_else(|| serde::de::Error::custom(format_args!("unknown confirmation `{why}`")))?,
            },
        })
    }
}

/// `AdviceDecision` as stored, without its data.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DecisionJson {
    Transfer,
    Defer,
}

fn answer_to_json(answer: &StoredAnswer) -> Value {
    let dto = match answer {
        StoredAnswer::Transferred { queue } => AnswerJson::Transferred { queue: *queue },
        StoredAnswer::Deferred { queue, retry_after } => {
            AnswerJson::Deferred { queue: *queue, retry_after: *retry_after }
        }
        StoredAnswer::Failed { status, code, message } => {
            AnswerJson::Failed { status: *status, code: code.clone(), message: message.clone() }
        }
        StoredAnswer::Advising => AnswerJson::Advising,
        StoredAnswer::Advised { queue, decision, confirmation } => {
            let confirmation = confirmation.as_ref().map(ConfirmationJson::of);
            match decision {
                AdviceDecision::Transfer => AnswerJson::Advised {
                    queue: *queue,
                    decision: DecisionJson::Transfer,
                    retry_after: None,
                    confirmation,
                },
                AdviceDecision::Defer { retry_after } => AnswerJson::Advised {
                    queue: *queue,
                    decision: DecisionJson::Defer,
                    retry_after: Some(*retry_after),
                    confirmation,
                },
            }
        }
    };
    // Serializing a plain enum of ids, numbers and strings cannot fail.
    serde_json::to_value(dto).unwrap_or(Value::Null)
}

fn answer_from_json(value: &Value) -> Result<StoredAnswer, serde_json::Error> {
    Ok(match AnswerJson::deserialize(value)? {
        AnswerJson::Transferred { queue } => StoredAnswer::Transferred { queue },
        AnswerJson::Deferred { queue, retry_after } => StoredAnswer::Deferred { queue, retry_after },
        AnswerJson::Failed { status, code, message } => StoredAnswer::Failed { status, code, message },
        AnswerJson::Advising => StoredAnswer::Advising,
        AnswerJson::Advised { queue, decision: DecisionJson::Transfer, retry_after: None, confirmation } => {
            let confirmation = confirmation.map(ConfirmationJson::into_domain).transpose()?;
            StoredAnswer::Advised { queue, decision: AdviceDecision::Transfer, confirmation }
        }
        AnswerJson::Advised { queue, decision: DecisionJson::Defer, retry_after: Some(retry_after), confirmation } => {
            let confirmation = confirmation.map(ConfirmationJson::into_domain).transpose()?;
            StoredAnswer::Advised { queue, decision: AdviceDecision::Defer { retry_after }, confirmation }
        }
        AnswerJson::Advised { .. } => {
            return Err(serde::de::Error::custom("an advice has `retryAfter` exactly when it defers"))
        }
    })
}

/// One history line as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryJson {
    at: DateTime<Utc>,
    stage: String,
    note: String,
}

fn history_to_json(entry: &HistoryEntry) -> Value {
    let dto = HistoryJson { at: micros(entry.at), stage: entry.stage.as_str().to_owned(), note: entry.note.clone() };
    serde_json::to_value(dto).unwrap_or(Value::Null)
}

fn history_from_json(value: Value) -> Result<Vec<HistoryEntry>, String> {
    let lines: Vec<HistoryJson> = serde_json::from_value(value).map_err(|e| e.to_string())?;
    lines
        .into_iter()
        .map(|l| {
            let stage = Stage::parse(&l.stage).ok_or_else(|| format!("unknown stage `{}`", l.stage))?;
            Ok(HistoryEntry { at: l.at, stage, note: l.note })
        })
        .collect()
}

/// The columns of [`crate::sql::SUMMARIES`] as plain values, and the answer of a failed record.
#[derive(Debug)]
pub(crate) struct SummaryColumns {
    pub(crate) id: Uuid,
    pub(crate) conversation_id: String,
    pub(crate) reason: String,
    pub(crate) queue_id: Option<String>,
    pub(crate) stage: String,
    pub(crate) was_deferred: bool,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) attempts: i64,
}

impl SummaryColumns {
    /// Whether the summary needs the stored answer: a failure's cause, an advice's decision and
    /// confirmation.
    pub(crate) fn needs_answer(&self) -> bool {
        self.stage == Stage::Failed.as_str() || self.stage == Stage::Advised.as_str()
    }

    /// The summary, with the stored `answer` of a failed or advised record.
    pub(crate) fn into_summary(self, answer: Option<&Value>) -> Result<HandoffSummary, LedgerError> {
        const WHAT: &str = "summary";
        let stage =
            Stage::parse(&self.stage).ok_or_else(|| corrupt(WHAT, format!("unknown stage `{}`", self.stage)))?;
        let answer = answer.map(answer_from_json).transpose().map_err(|e| corrupt(WHAT, e))?;
        Ok(HandoffSummary::from_facts(SummaryFacts {
            handoff_id: HandoffId::from_uuid(self.id),
            conversation_id: ConversationId::parse(&self.conversation_id).map_err(|e| corrupt(WHAT, e))?,
            reason: self.reason,
            queue_id: platform_id(self.queue_id.as_deref()).map_err(|e| corrupt(WHAT, e))?,
            stage,
            answer,
            was_deferred: self.was_deferred,
            created_at: self.created_at,
            updated_at: self.updated_at,
            attempts: u32::try_from(self.attempts).map_err(|e| corrupt(WHAT, e))?,
        }))
    }
}

/// `HandoffEvent` as stored in the outbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EventJson {
    handoff_id: HandoffId,
    conversation_id: ConversationId,
    reason: String,
    queue_id: QueueId,
    at: DateTime<Utc>,
}

/// The event as an outbox JSON document (its time truncated to the microsecond).
pub(crate) fn event_to_json(event: &HandoffEvent) -> Value {
    let dto = EventJson {
        handoff_id: event.handoff_id,
        conversation_id: event.conversation_id,
        reason: event.reason.as_str().to_owned(),
        queue_id: event.queue_id,
        at: micros(event.at),
    };
    serde_json::to_value(dto).unwrap_or(Value::Null)
}

/// Reads an outbox event back, re-validating the reason.
///
/// # Errors
/// [`LedgerError::Corrupt`] naming the outbox entry.
pub(crate) fn event_from_json(id: i64, value: Value) -> Result<HandoffEvent, LedgerError> {
    let what = format!("outbox entry {id}");
    let dto: EventJson = serde_json::from_value(value).map_err(|e| corrupt(&what, e))?;
    let reason = HandoffReason::parse(&dto.reason).map_err(|e| corrupt(&what, e))?;
    Ok(HandoffEvent {
        handoff_id: dto.handoff_id,
        conversation_id: dto.conversation_id,
        reason,
        queue_id: dto.queue_id,
        at: dto.at,
    })
}

/// A `stats` row from its columns.
///
/// # Errors
/// [`LedgerError::Corrupt`] when the stage is unknown or the count negative.
pub(crate) fn stat_row(
    reason: String,
    queue_id: Option<String>,
    stage: &str,
    count: i64,
) -> Result<StatRow, LedgerError> {
    let outcome = Stage::parse(stage).ok_or_else(|| corrupt("stats", format_args!("unknown stage `{stage}`")))?;
    let count = u64::try_from(count).map_err(|e| corrupt("stats", e))?;
    let queue_id = platform_id(queue_id.as_deref()).map_err(|e| corrupt("stats", e))?;
    Ok(StatRow { reason, queue_id, outcome, count })
}

/// The answer column of `record` (for `begin`'s resume, which may mark it advisory).
pub(crate) fn answer_column(record: &HandoffRecord) -> Option<Value> {
    record.answer.as_ref().map(answer_to_json)
}

/// An `outcomes` row from its columns, re-validated like a record's.
///
/// # Errors
/// [`LedgerError::Corrupt`] when the stage or the answer does not decode.
pub(crate) fn outcome_facts(
    reason: String,
    queue_id: Option<String>,
    stage: &str,
    answer: Option<Value>,
    deferred: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> Result<OutcomeFacts, LedgerError> {
    let stage = Stage::parse(stage).ok_or_else(|| corrupt("outcomes", format_args!("unknown stage `{stage}`")))?;
    let answer = answer.map(|v| answer_from_json(&v)).transpose().map_err(|e| corrupt("outcomes answer", e))?;
    Ok(OutcomeFacts {
        reason,
        queue_id: platform_id(queue_id.as_deref()).map_err(|e| corrupt("outcomes", e))?,
        stage,
        answer,
        deferred,
        created_at,
        updated_at,
    })
}

/// An outbox row's values as an entry: the event re-validated, the attempts in range.
///
/// # Errors
/// [`LedgerError::Corrupt`] naming the outbox entry.
pub(crate) fn outbox_entry(id: i64, event: Value, attempts: i64) -> Result<OutboxEntry, LedgerError> {
    Ok(OutboxEntry {
        id,
        event: event_from_json(id, event)?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt(&format!("outbox entry {id}"), e))?,
    })
}

/// Sorts claimed records the way `InMemoryLedger` does: by when they became due, then id.
pub(crate) fn sort_claimed(records: &mut [HandoffRecord]) {
    records.sort_by_key(|r| (r.due_at(), r.id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn queue() -> QueueId {
        QueueId::parse("11111111-2222-3333-4444-555555555555").unwrap()
    }

    #[test]
    fn every_answer_variant_reads_back_unchanged() {
        // Arrange
        let answers = [
            StoredAnswer::Transferred { queue: queue() },
            StoredAnswer::Deferred { queue: queue(), retry_after: Duration::new(300, 17) },
            StoredAnswer::Failed { status: 422, code: "conversation_not_transferable".into(), message: "ended".into() },
            StoredAnswer::Advising,
            StoredAnswer::Advised { queue: queue(), decision: AdviceDecision::Transfer, confirmation: None },
            StoredAnswer::Advised {
                queue: queue(),
                decision: AdviceDecision::Transfer,
                confirmation: Some(Confirmation::Confirmed { queue: queue(), after: Duration::new(35, 2) }),
            },
            StoredAnswer::Advised {
                queue: queue(),
                decision: AdviceDecision::Transfer,
                confirmation: Some(Confirmation::Unconfirmed { why: Unconfirmed::StillWithFlow }),
            },
            StoredAnswer::Advised {
                queue: queue(),
                decision: AdviceDecision::Defer { retry_after: Duration::new(15, 3) },
                confirmation: None,
            },
        ];
        for answer in answers {
            // Act
            let back = answer_from_json(&answer_to_json(&answer)).unwrap();
            // Assert
            assert_eq!(back, answer);
        }
    }

    #[test]
    fn an_answer_of_unknown_kind_is_an_error() {
        let value = serde_json::json!({"kind": "teleported", "queue": queue().to_string()});
        assert!(answer_from_json(&value).is_err());
    }

    #[test]
    fn an_advice_whose_retry_after_does_not_match_its_decision_is_an_error() {
        let q = queue().to_string();
        let deferred_without = serde_json::json!({"kind": "advised", "queue": q, "decision": "defer"});
        let transfer_with = serde_json::json!({
            "kind": "advised", "queue": q, "decision": "transfer", "retryAfter": {"secs": 1, "nanos": 0}
        });
        assert!(answer_from_json(&deferred_without).is_err());
        assert!(answer_from_json(&transfer_with).is_err());
    }

    #[test]
    fn an_advice_stored_before_confirmations_reads_back_unconfirmed_yet_and_an_unknown_reason_is_an_error() {
        let q = queue().to_string();
        let old = serde_json::json!({"kind": "advised", "queue": q, "decision": "transfer"});
        assert_eq!(
            answer_from_json(&old).unwrap(),
            StoredAnswer::Advised { queue: queue(), decision: AdviceDecision::Transfer, confirmation: None }
        );
        let odd = serde_json::json!({
            "kind": "advised", "queue": q, "decision": "transfer", "confirmation": {"result": "unconfirmed", "why": "lost"}
        });
        assert!(answer_from_json(&odd).is_err());
    }

    #[test]
    fn history_with_an_unknown_stage_is_an_error() {
        let value = serde_json::json!([{"at": "2024-05-01T12:00:00Z", "stage": "lost", "note": "x"}]);
        assert!(history_from_json(value).unwrap_err().contains("lost"));
    }

    #[test]
    fn times_are_truncated_to_the_microsecond() {
        let t = Utc.timestamp_opt(1_714_564_800, 123_456_789).unwrap();
        assert_eq!(micros(t).timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn a_lease_past_the_end_of_time_saturates_instead_of_panicking() {
        let end = lease_end(DateTime::<Utc>::MAX_UTC, Duration::from_secs(60));
        assert!(end <= DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn an_event_with_an_invalid_reason_is_corrupt() {
        let value = serde_json::json!({
            "handoffId": "11111111-2222-3333-4444-555555555555",
            "conversationId": "11111111-2222-3333-4444-555555555555",
            "reason": "",
            "queueId": "11111111-2222-3333-4444-555555555555",
            "at": "2024-05-01T12:00:00Z"
        });
        assert!(matches!(event_from_json(7, value), Err(LedgerError::Corrupt(m)) if m.contains("outbox entry 7")));
    }
}
