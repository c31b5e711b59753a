//! Genesys wire shapes: private request and answer DTOs (camelCase, only the fields we use) and
//! their translation to domain types. Tolerant by design: unknown fields are ignored, an
//! unparseable participant or queue id is skipped, never a panic.

use std::collections::BTreeMap;
use std::time::Duration;

use handoff_domain::ports::{ConversationSnapshot, ParticipantView};
use handoff_domain::{AttributeSet, ConversationId, ParticipantId, QueueFigures, QueueId};
use serde::{Deserialize, Serialize};

use crate::ids::GenesysIds;
use crate::observations::{queue_figures, GroupDimensions, MetricData};

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

/// `POST /api/v2/analytics/queues/observations/query` for one queue's message capacity
/// (`QueueObservationQuery`).
///
/// Filtered by `queueId` only (issue 11): user metrics (`oOnQueueUsers`) are per queue, not per
/// media type, and under a `mediaType` filter they may not come back at all. The answer then
/// holds a `{queueId}` group with the user metrics and one `{queueId, mediaType}` group per media
/// type with the conversation metrics; [`crate::observations::queue_figures`] reads the message
/// one.
pub(crate) fn observation_query(queue: QueueId) -> serde_json::Value {
    serde_json::json!({
        "filter": {
            "type": "and",
            "predicates": [
                { "type": "dimension", "dimension": "queueId", "operator": "matches", "value": queue.to_string() }
            ]
        },
        "metrics": OBSERVATION_METRICS
    })
}

/// The metrics the capacity model reads.
pub(crate) const OBSERVATION_METRICS: [&str; 4] = ["oOnQueueUsers", "oInteracting", "oAlerting", "oWaiting"];

/// `GET /api/v2/routing/utilization` (`Utilization`): the org's message `maximumCapacity`.
/// `Ok(None)` when the answer has no message entry or no capacity in it; `Err(())` when it is not
/// JSON of that shape.
pub(crate) fn message_capacity(body: &[u8]) -> Result<Option<u32>, ()> {
    #[derive(Debug, Deserialize)]
    struct Utilization {
        #[serde(default)]
        utilization: BTreeMap<String, MediaUtilization>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MediaUtilization {
        maximum_capacity: Option<i64>,
    }
    let answer: Utilization = serde_json::from_slice(body).map_err(|_| ())?;
    Ok(answer
        .utilization
        .iter()
        .find(|(media, _)| media.eq_ignore_ascii_case("message"))
        .and_then(|(_, m)| m.maximum_capacity)
        .map(|c| u32::try_from(c.max(0)).unwrap_or(u32::MAX)))
}

// ---- answers --------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageConversation {
    #[serde(default)]
    participants: Vec<Participant>,
    #[serde(default)]
    recent_transfers: Vec<Transfer>,
    /// Not in Genesys's `MessageConversation` (the generic `Conversation` has it): read when a
    /// lookup shows it, so a tag someone else set is never replaced.
    external_tag: Option<String>,
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
            let id = ParticipantId::parse_with(&GenesysIds, p.id.as_deref()?).ok()?;
            let is_customer = p.purpose.as_deref().is_some_and(|purpose| purpose.eq_ignore_ascii_case("customer"));
            let connected = p.state.as_deref().is_some_and(|state| state.eq_ignore_ascii_case("connected"));
            let ended = p.end_time.as_deref().is_some_and(|t| !t.is_empty());
            let queue =
                p.queue.as_ref().and_then(|q| q.id.as_deref()).and_then(|q| QueueId::parse_with(&GenesysIds, q).ok());
            // Genesys marks human agents with purpose `agent` (or `user` for direct conversations).
            let is_agent = p
                .purpose
                .as_deref()
                .is_some_and(|purpose| purpose.eq_ignore_ascii_case("agent") || purpose.eq_ignore_ascii_case("user"));
            Some(ParticipantView { id, is_customer, is_agent, active: connected && !ended, queue })
        })
        .collect();
    let transferred_to = conversation.recent_transfers.iter().filter_map(transfer_queue).collect();
    Some(ConversationSnapshot {
        id,
        participants,
        transferred_to,
        correlation_id,
        external_tag: conversation.external_tag.filter(|t| !t.is_empty()),
    })
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
    if let Some(queue) = destination.queue_id.as_deref().and_then(|q| QueueId::parse_with(&GenesysIds, q).ok()) {
        return Some(queue);
    }
    if destination.user_id.is_some() {
        return None;
    }
    destination.address.as_deref().and_then(|a| QueueId::parse_with(&GenesysIds, a).ok())
}

#[derive(Debug, Deserialize)]
struct ObservationResponse {
    #[serde(default)]
    results: Vec<ObservationGroup>,
}

#[derive(Debug, Deserialize)]
struct ObservationGroup {
    #[serde(default)]
    group: GroupDimensions,
    #[serde(default)]
    data: Vec<MetricData>,
}

/// The observation query answer → the figures of `queue` (see [`crate::observations`]). `None`
/// when it is not JSON of that shape; a metric that did not come back is unknown.
pub(crate) fn observations(queue: QueueId, body: &[u8]) -> Option<QueueFigures> {
    let response: ObservationResponse = serde_json::from_slice(body).ok()?;
    Some(queue_figures(queue, response.results.iter().map(|g| (&g.group, &g.data))))
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
    fn observations_read_every_group_by_metric_and_qualifier() {
        // Arrange: the reference's shape, plus a group of another queue that must be ignored.
        let body = json!({
            "results": [
                { "group": { "queueId": QUEUE, "mediaType": "message" },
                  "data": [ { "metric": "oWaiting", "stats": { "count": 3 } },
                            { "metric": "oAlerting", "stats": { "count": 0 } },
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
        let figures = observations(QueueId::parse(QUEUE).unwrap(), body.to_string().as_bytes()).unwrap();

        // Assert
        let agents = figures.agents.unwrap();
        assert_eq!((agents.idle, agents.interacting, agents.on_queue()), (2, 5, 7));
        assert_eq!((figures.interacting, figures.alerting, figures.waiting), (Some(5), Some(0), Some(3)));
    }

    #[test]
    fn no_results_read_as_unknown_not_zero() {
        let figures = observations(QueueId::parse(QUEUE).unwrap(), br#"{"results":[]}"#).unwrap();
        assert_eq!(figures, QueueFigures::UNKNOWN);
        assert_eq!(observations(QueueId::parse(QUEUE).unwrap(), b"{}").unwrap(), QueueFigures::UNKNOWN);
    }

    #[test]
    fn the_observation_query_filters_by_queue_id_only() {
        let body = observation_query(QueueId::parse(QUEUE).unwrap());
        assert_eq!(
            body["filter"]["predicates"],
            json!([{ "type": "dimension", "dimension": "queueId", "operator": "matches", "value": QUEUE }])
        );
        assert_eq!(body["metrics"], json!(["oOnQueueUsers", "oInteracting", "oAlerting", "oWaiting"]));
    }

    #[test]
    fn the_message_capacity_is_read_from_the_utilization_answer() {
        let answer = json!({ "utilization": { "call": { "maximumCapacity": 1 },
                                              "message": { "maximumCapacity": 4, "interruptableMediaTypes": [], "includeNonAcd": false } } });
        assert_eq!(message_capacity(answer.to_string().as_bytes()), Ok(Some(4)));
        assert_eq!(message_capacity(br#"{"utilization":{"call":{"maximumCapacity":1}}}"#), Ok(None));
        assert_eq!(message_capacity(br#"{"utilization":{"message":{}}}"#), Ok(None));
        assert_eq!(message_capacity(br#"{"utilization":{"message":{"maximumCapacity":-3}}}"#), Ok(Some(0)));
        assert_eq!(message_capacity(b"<html>"), Err(()));
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

    // ---- property tests (the in-suite twin of fuzz/fuzz_targets/genesys_response.rs) ---------

    mod properties {
        use proptest::prelude::*;
        use serde_json::{json, Value};

        use super::*;

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                prop_oneof![Just(QUEUE.to_owned()), Just("IDLE".to_owned()), ".{0,12}"].prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                let key = prop_oneof![
                    Just("participants"),
                    Just("recentTransfers"),
                    Just("id"),
                    Just("purpose"),
                    Just("state"),
                    Just("queue"),
                    Just("destination"),
                    Just("queueId"),
                    Just("results"),
                    Just("group"),
                    Just("data"),
                    Just("metric"),
                    Just("stats"),
                    Just("count"),
                    Just("estimatedWaitTimeSeconds"),
                    Just("mediaSettings"),
                    Just("message"),
                    Just("memberCount"),
                    Just("name"),
                    Just("x"),
                ]
                .prop_map(str::to_owned);
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(key, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn id_text() -> impl Strategy<Value = Option<String>> {
            prop::option::of(prop_oneof![
                any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
                any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string().to_uppercase()),
                ".{0,40}",
            ])
        }

        fn one_of(words: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
            prop::option::of(prop::sample::select(words).prop_map(str::to_owned))
        }

        prop_compose! {
            fn participant()(
                id in id_text(),
                purpose in one_of(&["customer", "CUSTOMER", "agent", "user", "workflow", "acd", "bot"]),
                state in one_of(&["connected", "Connected", "disconnected", "alerting"]),
                end_time in one_of(&["", "2026-01-01T00:00:00Z"]),
            ) -> (Value, Option<String>, Option<String>, Option<String>, Option<String>) {
                let p = json!({ "id": id, "purpose": purpose, "state": state, "endTime": end_time });
                (p, id, purpose, state, end_time)
            }
        }

        /// A counted metric: its name, qualifier and `stats.count` as Genesys may send them.
        type Metric = (Option<String>, Option<String>, Value);
        /// An observation group: its `queueId`, its `mediaType` and its metrics.
        type Group = (Option<String>, Option<String>, Vec<Metric>);

        fn metric() -> impl Strategy<Value = Metric> {
            (
                one_of(&["oOnQueueUsers", "oWaiting", "oInteracting", "oActiveUsers"]),
                one_of(&["IDLE", "idle", "INTERACTING", "NOT_RESPONDING"]),
                prop_oneof![
                    (0u32..1000).prop_map(|n| json!(n)),
                    any::<f64>().prop_map(|f| json!(f)),
                    Just(json!(1e300)),
                    Just(Value::Null),
                    Just(json!("7")),
                ],
            )
        }

        fn group() -> impl Strategy<Value = Group> {
            (
                prop::option::of(prop_oneof![
                    Just(QUEUE.to_owned()),
                    Just(QUEUE.to_uppercase()),
                    Just("00000000-0000-0000-0000-0000000000ff".to_owned()),
                ]),
                one_of(&["message", "MESSAGE", "voice"]),
                prop::collection::vec(metric(), 0..6),
            )
        }

        /// The count the decoder must take from `stats.count`: a positive finite number, saturated.
        fn counted(count: &Value) -> u64 {
            count.as_f64().filter(|c| c.is_finite() && *c > 0.0).map_or(0, |c| c.min(f64::from(u32::MAX)) as u64)
        }

        fn sat(n: u64) -> u32 {
            u32::try_from(n).unwrap_or(u32::MAX)
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_or_json_never_panic_any_decoder(
                bytes in prop::collection::vec(any::<u8>(), 0..256),
                value in any_json(),
            ) {
                let queue = QueueId::parse(QUEUE).unwrap();
                for body in [bytes, value.to_string().into_bytes()] {
                    let snapshot = conversation_snapshot(conv(), &body, None);
                    prop_assert!(snapshot.is_none_or(|s| s.id == conv()));
                    let observed = observations(queue, &body);
                    prop_assert!(observed.is_none_or(|o| o.agents.is_none_or(|a| a.idle <= a.on_queue())), "{:?}", observed);
                    let _ = message_capacity(&body);
                    let wait = estimated_wait(&body);
                    prop_assert!(wait.is_none_or(|w| w <= Duration::from_secs(30 * 86_400)), "{:?}", wait);
                    prop_assert!(queue_info(queue, &body).is_none_or(|q| q.id == queue));
                }
            }

            #[test]
            fn a_conversation_keeps_exactly_the_participants_with_a_uuid_and_classifies_them(
                generated in prop::collection::vec(participant(), 0..8),
            ) {
                // Arrange
                let body = json!({ "participants": generated.iter().map(|g| g.0.clone()).collect::<Vec<_>>() });

                // Act
                let snapshot = conversation_snapshot(conv(), body.to_string().as_bytes(), None).unwrap();

                // Assert
                let has_uuid = |id: &Option<String>| id.as_deref().is_some_and(|id| ParticipantId::parse_with(&GenesysIds, id).is_ok());
                let kept: Vec<_> = generated.iter().filter(|g| has_uuid(&g.1)).collect();
                prop_assert_eq!(snapshot.participants.len(), kept.len());
                for (view, (_, id, purpose, state, end_time)) in snapshot.participants.iter().zip(kept) {
                    let purpose = purpose.as_deref().map(str::to_ascii_lowercase);
                    prop_assert_eq!(Some(view.id.to_string()), id.as_deref().map(str::to_ascii_lowercase));
                    prop_assert_eq!(view.is_customer, purpose.as_deref() == Some("customer"));
                    prop_assert_eq!(view.is_agent, matches!(purpose.as_deref(), Some("agent" | "user")));
                    let connected = state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("connected"));
                    prop_assert_eq!(view.active, connected && end_time.as_deref().is_none_or(str::is_empty));
                }
            }

            #[test]
            fn observations_read_user_metrics_from_queue_groups_and_message_metrics_from_message_groups(
                groups in prop::collection::vec(group(), 0..5),
            ) {
                // Arrange
                let results: Vec<Value> = groups.iter().map(|(queue, media, data)| {
                    let data: Vec<Value> = data.iter().map(|(metric, qualifier, count)| {
                        json!({ "metric": metric, "qualifier": qualifier, "stats": { "count": count } })
                    }).collect();
                    let mut group = serde_json::Map::new();
                    if let Some(q) = queue { group.insert("queueId".into(), json!(q)); }
                    if let Some(m) = media { group.insert("mediaType".into(), json!(m)); }
                    json!({ "group": group, "data": data })
                }).collect();
                let body = json!({ "results": results }).to_string();
                let (mut idle, mut on_queue, mut waiting, mut interacting) = (None::<u64>, 0u64, None::<u64>, None::<u64>);
                for (queue, media, data) in &groups {
                    if queue.as_deref().is_some_and(|q| !q.eq_ignore_ascii_case(QUEUE)) { continue; }
                    for (metric, qualifier, count) in data {
                        let n = counted(count);
                        let message = media.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("message"));
                        match metric.as_deref() {
                            Some("oOnQueueUsers") if media.is_none() => {
                                on_queue += n;
                                let idle = idle.get_or_insert(0);
                                if qualifier.as_deref().is_some_and(|q| q.eq_ignore_ascii_case("IDLE")) { *idle += n; }
                            }
                            Some("oWaiting") if message => *waiting.get_or_insert(0) += n,
                            Some("oInteracting") if message => *interacting.get_or_insert(0) += n,
                            _ => {}
                        }
                    }
                }

                // Act
                let observed = observations(QueueId::parse(QUEUE).unwrap(), body.as_bytes());

                // Assert: a count that is not a number makes the whole answer unreadable.
                let malformed =
                    groups.iter().flat_map(|g| &g.2).any(|(_, _, count)| !(count.is_number() || count.is_null()));
                prop_assert_eq!(observed.is_none(), malformed);
                if let Some(figures) = observed {
                    prop_assert_eq!(figures.agents.map(|a| a.idle), idle.map(sat));
                    prop_assert_eq!(figures.agents.map(|a| a.on_queue()), idle.map(|_| sat(on_queue)));
                    prop_assert_eq!(figures.waiting, waiting.map(sat));
                    prop_assert_eq!(figures.interacting, interacting.map(sat));
                }
            }

            #[test]
            fn an_estimated_wait_is_read_when_non_negative_and_capped_at_thirty_days(seconds in any::<f64>()) {
                // Arrange: non-finite numbers cannot be written in JSON and go out as null.
                let body = json!({ "results": [{ "estimatedWaitTimeSeconds": seconds }] }).to_string();

                // Act
                let wait = estimated_wait(body.as_bytes());

                // Assert
                let expected = (seconds.is_finite() && seconds >= 0.0)
                    .then(|| Duration::from_secs_f64(seconds.min(30.0 * 86_400.0)));
                prop_assert_eq!(wait, expected);
            }

            #[test]
            fn an_error_body_yields_only_short_printable_codes(
                code in ".{0,140}",
                context in ".{0,140}",
                oauth in any::<bool>(),
            ) {
                // Arrange
                let key = if oauth { "error" } else { "code" };
                let body = json!({ key: code, "contextId": context, "message": "Jane Doe was not found" }).to_string();
                let looks_like = |text: &str, extra: &[u8]| {
                    let t = text.trim();
                    let allowed = |b: u8| b.is_ascii_alphanumeric() || extra.contains(&b);
                    !t.is_empty() && t.len() <= 128 && t.bytes().all(allowed)
                };

                // Act
                let (got_code, got_context) = crate::retry::error_code(body.as_bytes());

                // Assert
                prop_assert_eq!(got_code.is_some(), looks_like(&code, b"._-"));
                prop_assert_eq!(got_context.is_some(), looks_like(&context, b"-_.:"));
                prop_assert_eq!(got_code.as_deref(), looks_like(&code, b"._-").then(|| code.trim()));
            }
        }
    }
}
