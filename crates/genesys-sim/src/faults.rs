//! Injected faults: error answers, extra latency, answers that come too late, and hangs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Endpoint;

/// A fault to inject into the next `times` calls of an endpoint.
///
/// Faults are kept in a FIFO queue; a call takes the first fault that matches its endpoint and counts
/// its `times` down (removing it at zero). Faults apply after authentication and before the permission
/// check. Admin JSON: `{"endpoint":"replace","times":2,"kind":{"type":"status","status":503}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// The endpoint to hit; `None` (JSON: absent or `null`) matches every `/api/v2` endpoint, but not
    /// the token call.
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

    /// A fault on the next `/api/v2` call, whatever the endpoint.
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
        self.endpoint.map_or(endpoint.is_api(), |target| target == endpoint)
    }
}

/// What an injected fault does.
///
/// Admin JSON (`type` tag, durations in milliseconds): `{"type":"status","status":429,"code":"…",
/// "retryAfterSecs":5}` (`code` optional), `{"type":"latency","ms":200}`,
/// `{"type":"applyThenDelay","ms":5000}`, `{"type":"hang"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "FaultKindWire", from = "FaultKindWire")]
pub enum FaultKind {
    /// Answer with a Genesys `ErrorBody` of this status and code (plus `Retry-After` when given)
    /// without performing the operation. An invalid status is answered as 500.
    Status {
        /// HTTP status.
        status: u16,
        /// Genesys error code, e.g. `too.many.requests.retry.after`.
        code: String,
        /// `Retry-After` header value in seconds.
        retry_after_secs: Option<u64>,
    },
    /// Wait this long, then handle the call normally.
    Latency(Duration),
    /// Perform the operation normally (a replace really transfers), then wait this long before
    /// answering, so a client with a shorter timeout gives up although Genesys applied it.
    ApplyThenDelay(Duration),
    /// Never answer (the call is not logged, since it has no final status).
    Hang,
}

impl FaultKind {
    /// An error answer with the usual Genesys code for `status`.
    pub fn status(status: u16) -> Self {
        Self::Status { status, code: default_code(status, false).to_owned(), retry_after_secs: None }
    }

    /// A 429 `too.many.requests.retry.after` with `Retry-After: retry_after_secs`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::Status { status: 429, code: default_code(429, true).to_owned(), retry_after_secs: Some(retry_after_secs) }
    }
}

fn default_code(status: u16, retry_after: bool) -> &'static str {
    match status {
        400 => "bad.request",
        401 => "bad.credentials",
        403 => "not.authorized",
        404 => "not.found",
        408 => "client.timeout",
        409 => "request.conflict",
        429 if retry_after => "too.many.requests.retry.after",
        429 => "too.many.requests",
        503 => "service.unavailable",
        504 => "request.timeout",
        _ => "internal.server.error",
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
    ApplyThenDelay {
        ms: u64,
    },
    Hang,
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
            FaultKind::ApplyThenDelay(delay) => Self::ApplyThenDelay { ms: ms(delay) },
            FaultKind::Hang => Self::Hang,
        }
    }
}

impl From<FaultKindWire> for FaultKind {
    fn from(wire: FaultKindWire) -> Self {
        match wire {
            FaultKindWire::Status { status, code, retry_after_secs } => Self::Status {
                status,
                code: code.unwrap_or_else(|| default_code(status, retry_after_secs.is_some()).to_owned()),
                retry_after_secs,
            },
            FaultKindWire::Latency { ms } => Self::Latency(Duration::from_millis(ms)),
            FaultKindWire::ApplyThenDelay { ms } => Self::ApplyThenDelay(Duration::from_millis(ms)),
            FaultKindWire::Hang => Self::Hang,
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
            FaultKind::status(503),
            FaultKind::Latency(Duration::from_millis(250)),
            FaultKind::ApplyThenDelay(Duration::from_secs(5)),
            FaultKind::Hang,
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
    fn a_status_fault_without_code_gets_the_genesys_code() {
        // Arrange
        let json = serde_json::json!({"kind": {"type": "status", "status": 429, "retryAfterSecs": 3}});

        // Act
        let fault: Fault = serde_json::from_value(json).expect("deserialises");

        // Assert
        assert_eq!(fault.endpoint, None);
        assert_eq!(fault.times, 1);
        assert_eq!(fault.kind, FaultKind::too_many_requests(3));
    }

    #[test]
    fn a_fault_without_endpoint_matches_api_calls_but_not_the_token_call() {
        // Arrange
        let fault = Fault::any(FaultKind::Hang);

        // Act / Assert
        assert!(fault.matches(Endpoint::Replace));
        assert!(!fault.matches(Endpoint::Token));
        assert!(Fault::new(Endpoint::Token, FaultKind::Hang).matches(Endpoint::Token));
    }
}
