//! Queue figures from Genesys observation data: the one reading of `{group, metric, qualifier,
//! stats}` shared by the observation query answer (`QueueObservationQueryResponse.results[]`,
//! each `{group, data: [ObservationMetricData]}`) and the push channel's
//! `v2.analytics.queues.{id}.observations` events (`{group, data: [{interval, metrics: [...]}]}`).
//!
//! Rules (issue 11, `docs/genesys/api-notes.md`):
//! - every entry is matched by metric + qualifier, never by position;
//! - user metrics (`oOnQueueUsers`) are read from groups of our queue **without** a `mediaType`
//!   (they are per queue, not per media type); conversation metrics (`oInteracting`, `oAlerting`,
//!   `oWaiting`) from groups of our queue with `mediaType` `message`. A group naming another queue
//!   is ignored; one without a `queueId` is taken as ours (the query asked for one queue);
//! - a metric with no entry in a matching group is unknown (`None`), never zero. A metric with
//!   entries is known, and its qualifiers that did not come back count zero;
//! - an `oOnQueueUsers` entry whose qualifier is not `IDLE`, `INTERACTING` or `COMMUNICATING`
//!   (e.g. `NOT_RESPONDING`, or none) is an on-queue agent that cannot take work.

use std::collections::BTreeMap;

use handoff_domain::{AgentCounts, QueueFigures, QueueId};
use serde::Deserialize;

/// The dimensions of an observation group (`{"queueId": …, "mediaType": …}`), kept as raw JSON
/// so an unexpected value type is ignored instead of failing the whole answer.
pub type GroupDimensions = BTreeMap<String, serde_json::Value>;

/// One metric entry: `ObservationMetricData` in the query answer, an element of
/// `data[].metrics[]` in the notification. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MetricData {
    /// The metric name, e.g. `oOnQueueUsers`.
    pub metric: Option<String>,
    /// The qualifier, e.g. the routing status `IDLE`.
    pub qualifier: Option<String>,
    /// The statistics; only `count` is read.
    pub stats: Option<MetricStats>,
}

/// `StatisticalSummary`, as far as it is read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MetricStats {
    /// The observed count.
    pub count: Option<f64>,
}

/// The figures of `queue` in `groups`: each item is one group's dimensions and its metric
/// entries (for a notification, pass `data.iter().flat_map(|d| &d.metrics)`). Groups are summed,
/// so a group split over several items is read whole. See the module doc for the rules.
pub fn queue_figures<'a, G, M>(queue: QueueId, groups: G) -> QueueFigures
where
    G: IntoIterator<Item = (&'a GroupDimensions, M)>,
    M: IntoIterator<Item = &'a MetricData>,
{
    let ours = queue.to_string();
    let mut figures = QueueFigures::UNKNOWN;
    for (dimensions, metrics) in groups {
        let group_queue = dimensions.get("queueId").and_then(|v| v.as_str());
        if group_queue.is_some_and(|q| !q.eq_ignore_ascii_case(&ours)) {
            continue;
        }
        let media = dimensions.get("mediaType").map(|v| v.as_str());
        for entry in metrics {
            let count = entry.stats.as_ref().and_then(|s| s.count).map_or(0, to_count);
            match (entry.metric.as_deref(), media) {
                (Some("oOnQueueUsers"), None) => {
                    let agents = figures.agents.get_or_insert_with(AgentCounts::default);
                    let slot = match entry.qualifier.as_deref().map(str::to_ascii_uppercase).as_deref() {
                        Some("IDLE") => &mut agents.idle,
                        Some("INTERACTING") => &mut agents.interacting,
                        Some("COMMUNICATING") => &mut agents.communicating,
                        _ => &mut agents.other,
                    };
                    *slot = slot.saturating_add(count);
                }
                (Some(metric), Some(Some(m))) if m.eq_ignore_ascii_case("message") => {
                    let figure = match metric {
                        "oInteracting" => &mut figures.interacting,
                        "oAlerting" => &mut figures.alerting,
                        "oWaiting" => &mut figures.waiting,
                        _ => continue,
                    };
                    *figure = Some(figure.unwrap_or(0).saturating_add(count));
                }
                _ => {}
            }
        }
    }
    figures
}

/// A `stats.count` as a count: positive finite numbers, saturated; anything else is 0.
fn to_count(raw: f64) -> u32 {
    if raw.is_finite() && raw > 0.0 {
        // Saturating float → int conversion is the intent.
        raw.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const QUEUE: &str = "00000000-0000-0000-0000-0000000000a1";

    #[derive(Debug, Deserialize)]
    struct Group {
        group: GroupDimensions,
        data: Vec<MetricData>,
    }

    fn read(results: serde_json::Value) -> QueueFigures {
        let groups: Vec<Group> = serde_json::from_value(results).unwrap();
        queue_figures(QueueId::parse(QUEUE).unwrap(), groups.iter().map(|g| (&g.group, &g.data)))
    }

    #[test]
    fn user_metrics_come_from_the_queue_group_and_conversation_metrics_from_the_message_group() {
        // Arrange: the shape of a queueId-only query, with a voice group that must not count
        let results = json!([
            { "group": { "queueId": QUEUE, "mediaType": "message" },
              "data": [ { "metric": "oWaiting", "stats": { "count": 2 } },
                        { "metric": "oInteracting", "stats": { "count": 3 } },
                        { "metric": "oAlerting", "stats": { "count": 1 } } ] },
            { "group": { "queueId": QUEUE, "mediaType": "voice" },
              "data": [ { "metric": "oWaiting", "stats": { "count": 50 } },
                        { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": 50 } } ] },
            { "group": { "queueId": QUEUE },
              "data": [ { "metric": "oOnQueueUsers", "qualifier": "INTERACTING", "stats": { "count": 3 } },
                        { "metric": "oOnQueueUsers", "qualifier": "NOT_RESPONDING", "stats": { "count": 1 } },
                        { "metric": "oOnQueueUsers", "qualifier": "communicating", "stats": { "count": 1 } },
                        { "metric": "oWaiting", "stats": { "count": 99 } } ] },
            { "group": { "queueId": "00000000-0000-0000-0000-0000000000ff" },
              "data": [ { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": 40 } } ] }
        ]);

        // Act
        let figures = read(results);

        // Assert
        assert_eq!(
            figures,
            QueueFigures {
                agents: Some(AgentCounts { idle: 0, interacting: 3, communicating: 1, other: 1 }),
                interacting: Some(3),
                alerting: Some(1),
                waiting: Some(2),
            }
        );
    }

    #[test]
    fn a_metric_that_does_not_come_back_is_unknown_not_zero() {
        // Arrange: the user group is missing (what a mediaType filter may do), oAlerting too
        let results = json!([
            { "group": { "queueId": QUEUE, "mediaType": "message" },
              "data": [ { "metric": "oWaiting", "stats": { "count": 0 } },
                        { "metric": "oInteracting", "stats": {} } ] }
        ]);

        // Act
        let figures = read(results);

        // Assert
        assert_eq!(figures, QueueFigures { agents: None, interacting: Some(0), alerting: None, waiting: Some(0) });
        assert_eq!(read(json!([])), QueueFigures::UNKNOWN);
    }

    #[test]
    fn user_metrics_under_a_media_type_are_not_read_as_the_queue_s() {
        let results = json!([
            { "group": { "queueId": QUEUE, "mediaType": "message" },
              "data": [ { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": 4 } } ] }
        ]);
        assert_eq!(read(results).agents, None);
    }

    #[test]
    fn a_notification_shaped_event_reads_the_same_way() {
        // Arrange: `{group, data: [{interval, metrics: [...]}]}`
        #[derive(Debug, Deserialize)]
        struct Interval {
            metrics: Vec<MetricData>,
        }
        #[derive(Debug, Deserialize)]
        struct Event {
            group: GroupDimensions,
            data: Vec<Interval>,
        }
        let event: Event = serde_json::from_value(json!({
            "group": { "queueId": QUEUE },
            "data": [ { "interval": "2026-12-03T07:00:00.000Z/2026-12-03T07:00:01.000Z",
                        "metrics": [ { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": 2 } } ] } ]
        }))
        .unwrap();

        // Act
        let figures =
            queue_figures(QueueId::parse(QUEUE).unwrap(), [(&event.group, event.data.iter().flat_map(|d| &d.metrics))]);

        // Assert
        assert_eq!(figures.agents, Some(AgentCounts { idle: 2, ..AgentCounts::default() }));
        assert_eq!(figures.waiting, None);
    }
}
