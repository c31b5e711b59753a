//! Genesys wire shapes: private request and answer DTOs (camelCase, only the fields we use) and
//! their translation to domain types. Tolerant by design: unknown fields are ignored, an
//! unparseable participant or queue id is skipped, never a panic.

use std::collections::BTreeMap;
use std::time::Duration;

use handoff_domain::ports::{ConversationSnapshot, ParticipantView};
use handoff_domain::{AttributeSet, ConversationId, ParticipantId, QueueId};
use serde::{Deserialize, Serialize};

// ---- requests -------------------------------------------------------------------------------

/// `PATCH …/participants/{id}/attributes`.
#[derive(Debug, Serialize)]
pub(crate) struct AttributesBody<'a> {
    pub(crate) attributes: BTreeMap<&'a str, &'a str>,
}

impl<'a> AttributesBody<'a> {
    pub(crate) fn new(set: &'a AttributeSet) -> Self {
        Self { attributes: set.iter().collect() }
    }
}

/// `POST …/participants/{id}/replace` (`TransferRequest`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransferBody {
    pub(crate) queue_id: String,
    pub(crate) transfer_type: &'static str,
}

/// `PUT /api/v2/conversations/{id}/tags` (`ConversationTagsUpdate`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagsBody {
    pub(crate) external_tag: String,
}

/// `POST /api/v2/analytics/queues/observations/query` for one queue's message capacity.
///
/// The filter is the documented `and` of `queueId` and `mediaType == message`. The message
/// (conversation) metrics come back in the `{queueId, mediaType}` group; the user metrics
/// (`oOnQueueUsers`) are per queue, and the reference shows them in a separate `{queueId}` group
/// under this very filter. We therefore read every group and match on metric + qualifier, never
/// on position or group shape. We do not use an `or` with `mediaType notExists`: its meaning for
/// observation groups is undocumented, and a filter Genesys rejects would fail every capacity check.
/// If the user group ever went missing, idle agents would read 0: the handoff is deferred (and
/// transferred anyway after `HANDOFF_DEFER_FOR_SECS`), never over-admitted.
pub(crate) fn observation_query(queue: QueueId) -> serde_json::Value {
    serde_json::json!({
        "filter": {
            "type": "and",
            "predicates": [
                { "type": "dimension", "dimension": "queueId", "operator": "matches", "value": queue.to_string() },
                { "type": "dimension", "dimension": "mediaType", "operator": "matches", "value": "message" }
            ]
        },
        "metrics": ["oOnQueueUsers", "oWaiting"]
    })
}

// ---- answers --------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageConversation {
    #[serde(default)]
    participants: Vec<Participant>,
    #[serde(default)]
    recent_transfers: Vec<Transfer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Participant {
    id: Option<String>,
    purpose: Option<String>,
    state: Option<String>,
    end_time: Option<String>,
    queue: Option<IdRef>,
}

#[derive(Debug, Deserialize)]
struct IdRef {
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Transfer {
    state: Option<String>,
    destination: Option<TransferDestination>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferDestination {
    queue_id: Option<String>,
    user_id: Option<String>,
    address: Option<String>,
}

/// `GET /api/v2/conversations/messages/{id}` → the domain's view. `None` if it is not JSON of
/// that shape.
pub(crate) fn conversation_snapshot(
    id: ConversationId,
    body: &[u8],
    correlation_id: Option<String>,
) -> Option<ConversationSnapshot> {
    let conversation: MessageConversation = serde_json::from_slice(body).ok()?;
    let participants = conversation
        .participants
        .iter()
        .filter_map(|p| {
            let id = ParticipantId::parse(p.id.as_deref()?).ok()?;
            let is_customer = p.purpose.as_deref().is_some_and(|purpose| purpose.eq_ignore_ascii_case("customer"));
            let connected = p.state.as_deref().is_some_and(|state| state.eq_ignore_ascii_case("connected"));
            let ended = p.end_time.as_deref().is_some_and(|t| !t.is_empty());
            let queue = p.queue.as_ref().and_then(|q| q.id.as_deref()).and_then(|q| QueueId::parse(q).ok());
            // Genesys marks human agents with purpose `agent` (or `user` for direct conversations).
            let is_agent = p
                .purpose
                .as_deref()
                .is_some_and(|purpose| purpose.eq_ignore_ascii_case("agent") || purpose.eq_ignore_ascii_case("user"));
            Some(ParticipantView { id, is_customer, is_agent, active: connected && !ended, queue })
        })
        .collect();
    let transferred_to = conversation.recent_transfers.iter().filter_map(transfer_queue).collect();
    Some(ConversationSnapshot { id, participants, transferred_to, correlation_id })
}

/// The queue a recent transfer went to, unless it failed. Genesys documents `destination` as
/// `{userId, address}`; `queueId` is read when present (the simulator sends it), else a UUID
/// `address` of a transfer without `userId` (a queue transfer's address is the queue id).
fn transfer_queue(transfer: &Transfer) -> Option<QueueId> {
    let failed = transfer
        .state
        .as_deref()
        .is_some_and(|s| ["failed", "canceled", "cancelled", "timeout"].iter().any(|bad| s.eq_ignore_ascii_case(bad)));
    if failed {
        return None;
    }
    let destination = transfer.destination.as_ref()?;
    if let Some(queue) = destination.queue_id.as_deref().and_then(|q| QueueId::parse(q).ok()) {
        return Some(queue);
    }
    if destination.user_id.is_some() {
        return None;
    }
    destination.address.as_deref().and_then(|a| QueueId::parse(a).ok())
}

#[derive(Debug, Deserialize)]
struct ObservationResponse {
    #[serde(default)]
    results: Vec<ObservationGroup>,
}

#[derive(Debug, Deserialize)]
struct ObservationGroup {
    #[serde(default)]
    group: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    data: Vec<MetricData>,
}

#[derive(Debug, Deserialize)]
struct MetricData {
    metric: Option<String>,
    qualifier: Option<String>,
    stats: Option<Stats>,
}

#[derive(Debug, Deserialize)]
struct Stats {
    count: Option<f64>,
}

/// Counts read from an observation answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Observed {
    pub(crate) idle: u32,
    pub(crate) on_queue: u32,
    pub(crate) waiting: u32,
}

/// Sums the metrics of every group that belongs to `queue` (a group naming another queue is
/// ignored; one without a `queueId` is taken as ours, the query asked for one queue).
/// `idle` = `oOnQueueUsers[IDLE]`, `on_queue` = all `oOnQueueUsers`, `waiting` = `oWaiting`.
/// No group at all (a queue Genesys does not know, or nobody on it) reads as zero.
pub(crate) fn observations(queue: QueueId, body: &[u8]) -> Option<Observed> {
    let response: ObservationResponse = serde_json::from_slice(body).ok()?;
    let ours = queue.to_string();
    let mut totals = Observed::default();
    for group in &response.results {
        let group_queue = group.group.get("queueId").and_then(|v| v.as_str());
        if group_queue.is_some_and(|q| !q.eq_ignore_ascii_case(&ours)) {
            continue;
        }
        let media = group.group.get("mediaType").and_then(|v| v.as_str());
        for data in &group.data {
            let count = data.stats.as_ref().and_then(|s| s.count).map_or(0, to_count);
            match data.metric.as_deref() {
                Some("oOnQueueUsers") => {
                    totals.on_queue = totals.on_queue.saturating_add(count);
                    if data.qualifier.as_deref().is_some_and(|q| q.eq_ignore_ascii_case("IDLE")) {
                        totals.idle = totals.idle.saturating_add(count);
                    }
                }
                // Only message conversations wait for this queue's message agents.
                Some("oWaiting") if media.is_none_or(|m| m.eq_ignore_ascii_case("message")) => {
                    totals.waiting = totals.waiting.saturating_add(count);
                }
                _ => {}
            }
        }
    }
    Some(totals)
}

fn to_count(raw: f64) -> u32 {
    if raw.is_finite() && raw > 0.0 {
        // Saturating float → int conversion is the intent.
        raw.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EstimatedWaitResponse {
    #[serde(default)]
    results: Vec<Prediction>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prediction {
    estimated_wait_time_seconds: Option<f64>,
}

/// `results[0].estimatedWaitTimeSeconds`; `None` when absent, empty or negative.
pub(crate) fn estimated_wait(body: &[u8]) -> Option<Duration> {
    let response: EstimatedWaitResponse = serde_json::from_slice(body).ok()?;
    let seconds = response.results.first()?.estimated_wait_time_seconds?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(30.0 * 86_400.0)))
}

/// A routing queue as `handoff check` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue id.
    pub id: QueueId,
    /// Its name.
    pub name: String,
    /// Whether the queue has message media settings (it can take Web Messaging conversations).
    pub accepts_messages: bool,
    /// `memberCount`, when reported.
    pub member_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueDto {
    name: Option<String>,
    media_settings: Option<BTreeMap<String, serde_json::Value>>,
    member_count: Option<u64>,
}

/// `GET /api/v2/routing/queues/{id}` → [`QueueInfo`].
pub(crate) fn queue_info(id: QueueId, body: &[u8]) -> Option<QueueInfo> {
    let dto: QueueDto = serde_json::from_slice(body).ok()?;
    let accepts_messages = dto.media_settings.as_ref().and_then(|m| m.get("message")).is_some_and(|v| !v.is_null());
    Some(QueueInfo { id, name: dto.name.unwrap_or_default(), accepts_messages, member_count: dto.member_count })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONV: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
    const CUSTOMER: &str = "00000000-0000-0000-0000-0000000000c1";
    const FLOW: &str = "00000000-0000-0000-0000-0000000000f1";
    const QUEUE: &str = "00000000-0000-0000-0000-0000000000a1";

    fn conv() -> ConversationId {
        ConversationId::parse(CONV).unwrap()
    }

    #[test]
    fn a_conversation_maps_customer_holder_queue_and_recent_transfers() {
        // Arrange
        let body = json!({
            "id": CONV,
            "participants": [
                { "id": CUSTOMER, "purpose": "customer", "state": "connected" },
                { "id": FLOW, "purpose": "workflow", "state": "connected", "queue": { "id": QUEUE } },
                { "id": "not-a-uuid", "purpose": "agent", "state": "connected" },
                { "id": "00000000-0000-0000-0000-0000000000d1", "purpose": "agent", "state": "connected", "endTime": "2026-01-01T00:00:00Z" },
                { "purpose": "acd", "state": "connected" }
            ],
            "recentTransfers": [
                { "state": "Complete", "destination": { "queueId": QUEUE } },
                { "state": "Failed", "destination": { "queueId": "00000000-0000-0000-0000-0000000000a2" } },
                { "state": "Pending", "destination": { "address": "00000000-0000-0000-0000-0000000000a3" } },
                { "state": "Complete", "destination": { "userId": "u", "address": "00000000-0000-0000-0000-0000000000a4" } }
            ]
        });

        // Act
        let snapshot = conversation_snapshot(conv(), body.to_string().as_bytes(), Some("corr".into())).unwrap();

        // Assert
        assert_eq!(snapshot.participants.len(), 3, "the bad id and the id-less participant are skipped");
        assert_eq!(snapshot.customer().unwrap().id.to_string(), CUSTOMER);
        let holders: Vec<_> = snapshot.holders().map(|p| p.id.to_string()).collect();
        assert_eq!(holders, vec![FLOW.to_owned()]);
        assert_eq!(snapshot.participants[1].queue, Some(QueueId::parse(QUEUE).unwrap()));
        assert!(!snapshot.participants[2].active, "an ended participant is not active");
        let transferred: Vec<_> = snapshot.transferred_to.iter().map(ToString::to_string).collect();
        assert_eq!(transferred, vec![QUEUE.to_owned(), "00000000-0000-0000-0000-0000000000a3".to_owned()]);
        assert_eq!(snapshot.correlation_id.as_deref(), Some("corr"));
    }

    #[test]
    fn a_body_that_is_not_a_conversation_is_none_not_a_panic() {
        assert!(conversation_snapshot(conv(), b"<html>", None).is_none());
        assert!(conversation_snapshot(conv(), br#"{"participants": 3}"#, None).is_none());
        assert_eq!(conversation_snapshot(conv(), b"{}", None).unwrap().participants.len(), 0);
    }

    #[test]
    fn observations_sum_every_group_by_metric_and_qualifier() {
        // Arrange: the reference's shape, plus a group of another queue that must be ignored.
        let body = json!({
            "results": [
                { "group": { "queueId": QUEUE, "mediaType": "message" },
                  "data": [ { "metric": "oWaiting", "stats": { "count": 3 } },
                            { "metric": "oInteracting", "stats": { "count": 5 } } ] },
                { "group": { "queueId": QUEUE },
                  "data": [ { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": 2 } },
                            { "metric": "oOnQueueUsers", "qualifier": "INTERACTING", "stats": { "count": 5 } },
                            { "metric": "oActiveUsers", "stats": { "count": 9 } } ] },
                { "group": { "queueId": "00000000-0000-0000-0000-0000000000ff" },
                  "data": [ { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": 40 } } ] }
            ]
        });

        // Act
        let observed = observations(QueueId::parse(QUEUE).unwrap(), body.to_string().as_bytes()).unwrap();

        // Assert
        assert_eq!(observed, Observed { idle: 2, on_queue: 7, waiting: 3 });
    }

    #[test]
    fn no_results_read_as_zero_capacity() {
        let observed = observations(QueueId::parse(QUEUE).unwrap(), br#"{"results":[]}"#).unwrap();
        assert_eq!(observed, Observed::default());
        assert_eq!(observations(QueueId::parse(QUEUE).unwrap(), b"{}").unwrap(), Observed::default());
    }

    #[test]
    fn the_estimated_wait_is_the_first_result_or_none() {
        assert_eq!(
            estimated_wait(br#"{"results":[{"intent":"MESSAGE","formula":"BEST","estimatedWaitTimeSeconds":42}]}"#),
            Some(Duration::from_secs(42))
        );
        assert_eq!(estimated_wait(br#"{"results":[]}"#), None);
        assert_eq!(estimated_wait(br#"{"results":[{"formula":"BEST"}]}"#), None);
    }

    #[test]
    fn a_queue_accepts_messages_when_it_has_message_media_settings() {
        let id = QueueId::parse(QUEUE).unwrap();
        let with = json!({ "id": QUEUE, "name": "Support", "memberCount": 4, "mediaSettings": { "message": { "alertingTimeoutSeconds": 30 } } });
        let without = json!({ "id": QUEUE, "name": "Voice", "mediaSettings": { "call": {} } });
        assert_eq!(
            queue_info(id, with.to_string().as_bytes()).unwrap(),
            QueueInfo { id, name: "Support".into(), accepts_messages: true, member_count: Some(4) }
        );
        assert!(!queue_info(id, without.to_string().as_bytes()).unwrap().accepts_messages);
    }
}
