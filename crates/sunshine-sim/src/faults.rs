//! Injected faults: error answers (with or without `Retry-After`), extra latency, hangs, answers
//! that come too late, and the two asynchronous passControl outcomes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Endpoint;

/// A fault to inject into the next `times` calls of an endpoint.
///
/// Faults are kept in a FIFO queue; a call takes the first fault that matches its endpoint and
/// counts its `times` down (removing it at zero). Faults apply after authentication.
/// Admin JSON: `{"endpoint":"passControl","times":2,"kind":{"type":"status","status":503}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// The endpoint to hit; `None` (JSON: absent or `null`) matches every endpoint.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// How many calls the fault applies to (default 1; 0 is ignored).
    #[serde(default = "one")]
    pub times: u32,
    /// What happens to those calls.
    pub kind: FaultKind,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A fault on the next call of `endpoint`.
    pub fn new(endpoint: Endpoint, kind: FaultKind) -> Self {
        Self { endpoint: Some(endpoint), times: 1, kind }
    }

    /// A fault on the next call, whatever the endpoint.
    pub fn any(kind: FaultKind) -> Self {
        Self { endpoint: None, times: 1, kind }
    }

    /// The same fault for the next `times` matching calls.
    #[must_use]
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    pub(crate) fn matches(&self, endpoint: Endpoint) -> bool {
        self.endpoint.is_none_or(|target| target == endpoint)
    }
}

/// What an injected fault does.
///
/// Admin JSON (`type` tag, durations in milliseconds):
/// `{"type":"status","status":429,"code":"too_many_requests","retryAfterSecs":2}` (`code` and
/// `retryAfterSecs` optional: a 429 without `retryAfterSecs` has no `Retry-After` header),
/// `{"type":"latency","ms":200}`, `{"type":"hang"}`, `{"type":"applyThenDelay","ms":5000}`,
/// `{"type":"acceptThenApplyLater","ms":500}`, `{"type":"acceptThenFail"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "FaultKindWire", from = "FaultKindWire")]
pub enum FaultKind {
    /// Answer `{"errors":[{"code","title"}]}` with this status (plus `Retry-After` when given)
    /// without performing the operation. An invalid status is answered as 500.
    Status {
        /// HTTP status.
        status: u16,
        /// Sunshine error code, e.g. `conversation_not_found`.
        code: String,
        /// `Retry-After` header value in seconds; `None`: no header (api-notes §8 leaves open
        /// whether Sunshine sends one).
        retry_after_secs: Option<u64>,
    },
    /// Wait this long, then handle the call normally.
    Latency(Duration),
    /// Never answer and do nothing (a client times out; the operation surely did not happen).
    Hang,
    /// Perform the operation normally (a passControl really passes control), then wait this long
    /// before answering, so a client with a shorter timeout gives up although it was applied.
    ApplyThenDelay(Duration),
    /// passControl only: answer `200 {}` at once, apply the change this long later (the first
    /// reads still show the bot). Other endpoints: handled normally.
    AcceptThenApplyLater(Duration),
    /// passControl only: answer `200 {}` and never apply it (what a
    /// `switchboard:passControl:failure` webhook reports). Other endpoints: handled normally.
    AcceptThenFail,
}

impl FaultKind {
    /// An error answer with the usual Sunshine code for `status`, no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Self::Status { status, code: default_code(status).to_owned(), retry_after_secs: None }
    }

    /// A 429 with `Retry-After: retry_after_secs`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::Status { status: 429, code: default_code(429).to_owned(), retry_after_secs: Some(retry_after_secs) }
    }
}

/// The code the simulator puts in an error body for `status` when the fault names none (spec
/// "Errors"; api-notes §8).
pub(crate) fn default_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        402 => "payment_required",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        423 => "locked",
        429 => "too_many_requests",
        503 => "service_unavailable",
        _ => "internal_server_error",
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
enum FaultKindWire {
    Status {
        status: u16,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    Latency {
        ms: u64,
    },
    Hang,
    ApplyThenDelay {
        ms: u64,
    },
    AcceptThenApplyLater {
        ms: u64,
    },
    AcceptThenFail,
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl From<FaultKind> for FaultKindWire {
    fn from(kind: FaultKind) -> Self {
        match kind {
            FaultKind::Status { status, code, retry_after_secs } => {
                Self::Status { status, code: Some(code), retry_after_secs }
            }
            FaultKind::Latency(delay) => Self::Latency { ms: ms(delay) },
            FaultKind::Hang => Self::Hang,
            FaultKind::ApplyThenDelay(delay) => Self::ApplyThenDelay { ms: ms(delay) },
            FaultKind::AcceptThenApplyLater(delay) => Self::AcceptThenApplyLater { ms: ms(delay) },
            FaultKind::AcceptThenFail => Self::AcceptThenFail,
        }
    }
}

impl From<FaultKindWire> for FaultKind {
    fn from(wire: FaultKindWire) -> Self {
        match wire {
            FaultKindWire::Status { status, code, retry_after_secs } => {
                Self::Status { status, code: code.unwrap_or_else(|| default_code(status).to_owned()), retry_after_secs }
            }
            FaultKindWire::Latency { ms } => Self::Latency(Duration::from_millis(ms)),
            FaultKindWire::Hang => Self::Hang,
            FaultKindWire::ApplyThenDelay { ms } => Self::ApplyThenDelay(Duration::from_millis(ms)),
            FaultKindWire::AcceptThenApplyLater { ms } => Self::AcceptThenApplyLater(Duration::from_millis(ms)),
            FaultKindWire::AcceptThenFail => Self::AcceptThenFail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_kinds_round_trip_through_admin_json() {
        // Arrange
        let kinds = [
            FaultKind::too_many_requests(7),
            FaultKind::status(429),
            FaultKind::status(503),
            FaultKind::Latency(Duration::from_millis(250)),
            FaultKind::Hang,
            FaultKind::ApplyThenDelay(Duration::from_secs(5)),
            FaultKind::AcceptThenApplyLater(Duration::from_millis(400)),
            FaultKind::AcceptThenFail,
        ];

        for kind in kinds {
            // Act
            let json = serde_json::to_value(&kind).expect("serialises");
            let back: FaultKind = serde_json::from_value(json).expect("deserialises");

            // Assert
            assert_eq!(back, kind);
        }
    }

    #[test]
    fn a_status_fault_without_code_gets_the_sunshine_code_and_no_retry_after() {
        // Arrange
        let json = serde_json::json!({"endpoint": "passControl", "kind": {"type": "status", "status": 429}});

        // Act
        let fault: Fault = serde_json::from_value(json).expect("deserialises");

        // Assert
        assert_eq!(fault.endpoint, Some(Endpoint::PassControl));
        assert_eq!(fault.times, 1);
        assert_eq!(fault.kind, FaultKind::status(429));
        assert!(fault.matches(Endpoint::PassControl));
        assert!(!fault.matches(Endpoint::GetConversation));
        assert!(Fault::any(FaultKind::Hang).matches(Endpoint::GetGroup));
    }
}
