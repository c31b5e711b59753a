//! Where a handoff's time goes: the load generator's send and answer times joined with the
//! simulator's call log (the conversation id is in every path) split each handoff into the legs
//! between its three sequential upstream calls. Each leg minus the simulator's latency L is the
//! service's own time in that leg, ledger writes and waiting included.

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
pub(crate) fn legs(
    calls: &[Call],
    handoffs: &[Timed],
    latency: Duration,
    offset: impl Fn(Instant) -> Duration,
) -> Vec<Leg> {
    let mut first: HashMap<&str, [Option<Duration>; 3]> = HashMap::new();
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
            entry[slot] = Some(call.at);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut series: [Vec<f64>; 5] = Default::default();
    for h in handoffs {
        let id = h.conversation.to_string();
        let Some([Some(get), Some(patch), Some(replace)]) = first.get(id.as_str()).copied() else { continue };
        let (sent, answered) = (offset(h.sent), offset(h.answered));
        series[0].push(ms(get.saturating_sub(sent).saturating_sub(latency)));
        series[1].push(ms(patch.saturating_sub(get).saturating_sub(latency)));
        series[2].push(ms(replace.saturating_sub(patch).saturating_sub(latency)));
        series[3].push(ms(answered.saturating_sub(replace)));
        series[4].push(ms(answered.saturating_sub(sent).saturating_sub(latency * 3)));
    }
    const NAMES: [&str; 5] = [
        "sent → conversation read, minus L (auth, parse, ledger begin, capacity check)",
        "conversation read → context written, minus L",
        "context written → transfer accepted, minus L (ledger save before the transfer)",
        "transfer accepted → answer received (ledger save + outbox, response)",
        "whole handoff minus 3·L (the service's own time)",
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
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(endpoint: Endpoint, path: String, at_ms: u64) -> Call {
        Call {
            seq: at_ms,
            endpoint,
            method: "X".to_owned(),
            path,
            status: 200,
            body: None,
            at: Duration::from_millis(at_ms),
            correlation_id: uuid::Uuid::nil(),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn a_handoff_is_split_into_legs_at_its_upstream_calls() {
        // Arrange: L = 20 ms; sent at 100, calls answered at 125, 150, 180, answer read at 185.
        let id = uuid::Uuid::new_v4();
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let calls = vec![
            call(Endpoint::GetConversation, format!("/api/v2/conversations/messages/{id}"), 125),
            call(
                Endpoint::PatchAttributes,
                format!("/api/v2/conversations/messages/{id}/participants/p/attributes"),
                150,
            ),
            call(Endpoint::Replace, format!("/api/v2/conversations/messages/{id}/participants/h/replace"), 180),
        ];
        let handoffs = [Timed { conversation: id, sent: at(100), answered: at(185) }];

        // Act
        let legs = legs(&calls, &handoffs, Duration::from_millis(20), |i| i.duration_since(base));

        // Assert
        let p50: Vec<f64> = legs.iter().map(|l| l.p50_ms).collect();
        assert_eq!(p50, vec![5.0, 5.0, 10.0, 5.0, 25.0]);
        assert!(legs.iter().all(|l| l.samples == 1));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((quantile(&values, 0.5), quantile(&values, 0.99), quantile(&[], 0.5)), (50.0, 99.0, 0.0));
    }
}
