//! Where a handoff's time goes: the load generator's send and answer times joined with the
//! simulator's call log (the conversation id is in every path) split each handoff into the legs
//! between its three sequential upstream calls. Each leg minus the latency the simulator really
//! added to its call is the service's own time in that leg, ledger writes and waiting included.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use genesys_sim::{Call, Endpoint};
use serde::Serialize;

use crate::load::Timed;

/// One leg, over the measured handoffs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Leg {
    /// What happens in the service during the leg.
    pub(crate) name: &'static str,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    /// Handoffs whose three calls were all found.
    pub(crate) samples: usize,
}

/// The legs of `handoffs`; `offset` turns an instant into the clock of [`Call::at`].
pub(crate) fn legs(calls: &[Call], handoffs: &[Timed], offset: impl Fn(Instant) -> Duration) -> Vec<Leg> {
    // Per conversation, each call's answer time and the latency the simulator added to it.
    let mut first: HashMap<&str, [Option<(Duration, Duration)>; 3]> = HashMap::new();
    for call in calls {
        let slot = match call.endpoint {
            Endpoint::GetConversation => 0,
            Endpoint::PatchAttributes => 1,
            Endpoint::Replace => 2,
            _ => continue,
        };
        let Some(conversation) = conversation_of(&call.path) else { continue };
        let entry = first.entry(conversation).or_default();
        if entry[slot].is_none() {
            entry[slot] = Some((call.at, call.latency));
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut series: [Vec<f64>; 5] = Default::default();
    for h in handoffs {
        let id = h.conversation.to_string();
        let Some([Some((get, l1)), Some((patch, l2)), Some((replace, l3))]) = first.get(id.as_str()).copied() else {
            continue;
        };
        let (sent, answered) = (offset(h.sent), offset(h.answered));
        series[0].push(ms(get.saturating_sub(sent).saturating_sub(l1)));
        series[1].push(ms(patch.saturating_sub(get).saturating_sub(l2)));
        series[2].push(ms(replace.saturating_sub(patch).saturating_sub(l3)));
        series[3].push(ms(answered.saturating_sub(replace)));
        series[4].push(ms(answered.saturating_sub(sent).saturating_sub(l1 + l2 + l3)));
    }
    const NAMES: [&str; 5] = [
        "sent → conversation read, minus its latency (auth, parse, ledger begin, capacity check)",
        "conversation read → context written, minus its latency",
        "context written → transfer accepted, minus its latency (ledger save before the transfer)",
        "transfer accepted → answer received (ledger save + outbox, response)",
        "whole handoff minus the three latencies (the service's own time)",
    ];
    NAMES
        .iter()
        .zip(series.iter_mut())
        .map(|(name, values)| {
            values.sort_by(f64::total_cmp);
            Leg {
                name,
                p50_ms: quantile(values, 0.50),
                p90_ms: quantile(values, 0.90),
                p99_ms: quantile(values, 0.99),
                samples: values.len(),
            }
        })
        .collect()
}

/// The conversation id of a `/api/v2/conversations/messages/{id}[/…]` path.
fn conversation_of(path: &str) -> Option<&str> {
    let rest = path.split_once("/conversations/messages/")?.1;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The `q` quantile of sorted `values` (nearest rank), 0 when empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(endpoint: Endpoint, path: String, at_ms: u64, latency_ms: u64) -> Call {
        Call {
            seq: at_ms,
            endpoint,
            method: "X".to_owned(),
            path,
            status: 200,
            body: None,
            at: Duration::from_millis(at_ms),
            correlation_id: uuid::Uuid::nil(),
            latency: Duration::from_millis(latency_ms),
        }
    }

    #[test]
    fn a_handoff_is_split_into_legs_at_its_upstream_calls() {
        // Arrange: sent at 100; calls answered at 125, 150, 180 after 20, 15 and 20 ms of latency;
        // answer read at 185.
        let id = uuid::Uuid::new_v4();
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let calls = vec![
            call(Endpoint::GetConversation, format!("/api/v2/conversations/messages/{id}"), 125, 20),
            call(
                Endpoint::PatchAttributes,
                format!("/api/v2/conversations/messages/{id}/participants/p/attributes"),
                150,
                15,
            ),
            call(Endpoint::Replace, format!("/api/v2/conversations/messages/{id}/participants/h/replace"), 180, 20),
        ];
        let handoffs = [Timed { conversation: id, sent: at(100), answered: at(185), transferred: true }];

        // Act
        let legs = legs(&calls, &handoffs, |i| i.duration_since(base));

        // Assert
        let p50: Vec<f64> = legs.iter().map(|l| l.p50_ms).collect();
        assert_eq!(p50, vec![5.0, 10.0, 10.0, 5.0, 30.0]);
        assert!(legs.iter().all(|l| l.samples == 1));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((quantile(&values, 0.5), quantile(&values, 0.99), quantile(&[], 0.5)), (50.0, 99.0, 0.0));
    }
}
