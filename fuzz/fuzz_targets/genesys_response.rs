//! Genesys response decoding: every answer body and header the adapter reads, as raw bytes.
//!
//! The first byte picks the decoder, the rest is the answer:
//! conversation → `ConversationSnapshot`, observations (+ estimated wait) → `CapacitySnapshot`,
//! estimated wait, routing queue → `QueueInfo`, error body → sanitised code and context id,
//! OAuth token answer → the cached token, and answer headers (`Retry-After`,
//! `inin-ratelimit-*`, `inin-correlation-id`).
//!
//! Checked beyond "no panic": decoded values stay within the bounds the rest of the service
//! relies on (idle ≤ on queue, waits capped, codes and ids short and printable).
#![no_main]

use std::time::Duration;

use handoff_domain::{ConversationId, QueueId};
use handoff_genesys::fuzzing;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const CONVERSATION: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
const QUEUE: &str = "00000000-0000-0000-0000-0000000000a1";

const HEADERS: [&str; 6] = [
    "retry-after",
    "inin-ratelimit-allowed",
    "inin-ratelimit-count",
    "inin-ratelimit-reset",
    "inin-correlation-id",
    "content-type",
];

fn printable_token(text: &str, extra: &[u8]) -> bool {
    !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// `name-index value \n name-index value \n …`
fn headers_from(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(16) {
        let Some((&selector, value)) = line.split_first() else { continue };
        let name = HEADERS[usize::from(selector) % HEADERS.len()];
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let conversation = ConversationId::parse(CONVERSATION).expect("valid id");
    let queue = QueueId::parse(QUEUE).expect("valid id");
    let thirty_days = Duration::from_secs(30 * 86_400);

    match selector % 7 {
        0 => {
            if let Some(snapshot) = fuzzing::conversation(conversation, body) {
                assert_eq!(snapshot.id, conversation);
                for p in &snapshot.participants {
                    assert!(!(p.is_customer && p.is_agent), "{p:?}");
                }
                let _ = (snapshot.customer(), snapshot.holders().count(), snapshot.has_agent(), snapshot.has_ended());
                let _ = snapshot.is_in_queue(queue);
            }
        }
        1 => {
            // observations, then (after the first NUL, if any) the estimated-wait answer
            let (observations, wait) = match body.iter().position(|b| *b == 0) {
                Some(at) => (&body[..at], Some(&body[at + 1..])),
                None => (body, None),
            };
            if let Some(snapshot) = fuzzing::capacity(queue, observations, wait) {
                assert_eq!(snapshot.queue, queue);
                assert!(snapshot.idle_agents <= snapshot.on_queue_agents, "{snapshot:?}");
                assert!(snapshot.estimated_wait.is_none_or(|w| w <= thirty_days), "{snapshot:?}");
            }
        }
        2 => {
            assert!(fuzzing::estimated_wait(body).is_none_or(|w| w <= thirty_days));
        }
        3 => {
            if let Some(info) = fuzzing::queue_info(queue, body) {
                assert_eq!(info.id, queue);
            }
        }
        4 => {
            let (code, context) = fuzzing::error_code(body);
            assert!(code.as_deref().is_none_or(|c| printable_token(c, b"._-")), "{code:?}");
            assert!(context.as_deref().is_none_or(|c| printable_token(c, b"-_.:")), "{context:?}");
        }
        5 => {
            assert!(fuzzing::token(body).is_none_or(|lifetime| !lifetime.is_zero()));
        }
        _ => {
            let readings = fuzzing::headers(&headers_from(body));
            assert!(readings.throttle_wait.is_none_or(|w| w <= Duration::from_secs(86_400)), "{readings:?}");
            assert!(readings.correlation_id.as_deref().is_none_or(|c| printable_token(c, b"-_.:")), "{readings:?}");
            if let Some((snapshot, _low)) = readings.rate_limit {
                assert!(snapshot.remaining() <= snapshot.allowed);
            }
        }
    }
});
