//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off by default). Not
//! part of the crate's API: each one runs a private decoder on raw bytes exactly as the client
//! does with a Genesys answer, so a fuzzer can reach them without a server or a runtime.

use std::time::Duration;

use crate::conversation::ConversationSnapshot;
use handoff_domain::{CapacitySnapshot, ConversationId, QueueId};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::retry::{self, RateLimitSnapshot};
use crate::token::{self, AccessToken};
use crate::wire::{self, QueueInfo};

/// `GET /api/v2/conversations/messages/{id}` answer → the domain's snapshot (`TransferPort::locate`).
#[doc(hidden)]
pub fn conversation(id: ConversationId, body: &[u8]) -> Option<ConversationSnapshot> {
    wire::conversation_snapshot(id, body, None)
}

/// The observation query answer and, when fetched, the estimated-wait answer → the snapshot
/// `QueuePort::capacity` returns (through the same mapping as `ports.rs`).
#[doc(hidden)]
pub fn capacity(queue: QueueId, observations: &[u8], estimated_wait: Option<&[u8]>) -> Option<CapacitySnapshot> {
    let figures = wire::observations(queue, observations)?;
    Some(CapacitySnapshot {
        queue,
        figures,
        message_capacity: None,
        estimated_wait: estimated_wait.and_then(wire::estimated_wait),
    })
}

/// `GET …/estimatedwaittime` answer → the estimated wait.
#[doc(hidden)]
pub fn estimated_wait(body: &[u8]) -> Option<Duration> {
    wire::estimated_wait(body)
}

/// `GET /api/v2/routing/queues/{id}` answer → [`QueueInfo`].
#[doc(hidden)]
pub fn queue_info(id: QueueId, body: &[u8]) -> Option<QueueInfo> {
    wire::queue_info(id, body)
}

/// An error answer → its sanitised `(code, contextId)`.
#[doc(hidden)]
pub fn error_code(body: &[u8]) -> (Option<String>, Option<String>) {
    retry::error_code(body)
}

/// A 200 from `POST {login}/oauth/token` → the token's lifetime, after building the cached token
/// from it at the current instant the way the token cache does.
#[doc(hidden)]
pub fn token(body: &[u8]) -> Option<Duration> {
    let (secret, lifetime) = token::token_answer(body).ok()?;
    let _cached = AccessToken::fetched(secret, 1, Instant::now(), lifetime);
    Some(lifetime)
}

/// What the client reads from an answer's headers.
#[doc(hidden)]
#[derive(Debug)]
pub struct HeaderReadings {
    /// The wait a 429 asks for (`Retry-After`, else `inin-ratelimit-reset`).
    pub throttle_wait: Option<Duration>,
    /// The `inin-ratelimit-*` snapshot, and whether it reads as low now.
    pub rate_limit: Option<(RateLimitSnapshot, bool)>,
    /// The sanitised `inin-correlation-id`.
    pub correlation_id: Option<String>,
}

/// Reads an answer's headers the way the client does.
#[doc(hidden)]
pub fn headers(headers: &HeaderMap) -> HeaderReadings {
    let now = Instant::now();
    HeaderReadings {
        throttle_wait: retry::throttle_wait(headers),
        rate_limit: RateLimitSnapshot::from_headers(headers, now).map(|s| (s, s.is_low(now))),
        correlation_id: retry::correlation_header(headers),
    }
}
