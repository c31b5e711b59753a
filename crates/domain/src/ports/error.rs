//! The error contract every upstream port shares: [`PortError`] by retry class, with the
//! platform's [`UpstreamDetail`] and [`Refusal`] for reports only.

use std::time::Duration;

/// What the platform said about a failed call, for logs, the record and the 502 body only: the
/// domain never branches on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamDetail {
    /// What failed, in the adapter's words: never an upstream body or a secret.
    pub message: String,
    /// The platform's correlation id of the call, when a response carried one.
    pub correlation_id: Option<String>,
}

impl UpstreamDetail {
    /// A detail without a correlation id.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), correlation_id: None }
    }

    /// A detail with the correlation id of the response, if any.
    pub fn with_correlation(message: impl Into<String>, correlation_id: Option<String>) -> Self {
        Self { message: message.into(), correlation_id }
    }
}

impl std::fmt::Display for UpstreamDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The platform's refusal, as it said it: its status and error code. Reported to the caller (the
/// 502 body's `upstreamStatus` and `upstreamCode`) and stored; the domain never branches on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The platform's status (an HTTP status for HTTP platforms).
    pub status: u16,
    /// The platform's error code, e.g. `missing.permissions`.
    pub code: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(status: u16, code: impl Into<String>) -> Self {
        Self { status, code: code.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.code)
    }
}

/// What a [`PortError::NotFound`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The conversation: the handoff answers 404.
    Conversation,
    /// The routing target (a queue).
    Queue,
    /// The participant or handle acted on.
    Participant,
}

impl Missing {
    /// `conversation`, `queue`, `participant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Conversation => "conversation",
            Missing::Queue => "queue",
            Missing::Participant => "participant",
        }
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an upstream call failed, classified by what the caller may do next: the domain branches on
/// the variant (and [`Missing`]) only; the [`UpstreamDetail`] and [`Refusal`] are for reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Temporary: the platform is unavailable, timed out or could not be reached, after the
    /// adapter's own retries. For a transfer it also means the transfer surely did not happen.
    /// Retry later.
    #[error("upstream unavailable: {detail}")]
    Transient {
        /// What failed.
        detail: UpstreamDetail,
    },
    /// Throttled past what the adapter's budget could wait. Retry after `retry_after`.
    #[error("upstream rate limit reached")]
    RateLimited {
        /// How long the platform asked us to wait, when it said.
        retry_after: Option<Duration>,
        /// What the platform said.
        detail: UpstreamDetail,
    },
    /// The platform refused the request (not a missing thing, not a throttle, not a state).
    /// Retrying will not help.
    #[error("upstream rejected the request: {refusal}")]
    Rejected {
        /// The platform's status and code.
        refusal: Refusal,
        /// What the platform said.
        detail: UpstreamDetail,
    },
    /// The thing asked about does not exist on the platform.
    #[error("{what} not found upstream")]
    NotFound {
        /// What was missing.
        what: Missing,
        /// The platform's own status and code for it, when it gave one (reported when the
        /// missing thing is not the conversation).
        refusal: Option<Refusal>,
        /// What the platform said.
        detail: UpstreamDetail,
    },
    /// The conversation is not in a state that allows the operation: it ended, or whoever held it
    /// no longer does. The operation did not happen.
    #[error("conversation cannot be handed off: {reason}")]
    InvalidState {
        /// Why, in our words (shown to the caller in the 422 answer).
        reason: String,
        /// What the platform said.
        detail: UpstreamDetail,
    },
    /// Transfers only: the call may or may not have taken effect (a timeout or a dropped
    /// connection after the request was sent). Read the conversation back before any new attempt.
    #[error("upstream outcome unknown: {detail}")]
    Indeterminate {
        /// What happened.
        detail: UpstreamDetail,
    },
}

impl PortError {
    /// A [`PortError::Transient`] with this message and correlation id.
    pub fn transient(message: impl Into<String>, correlation_id: Option<String>) -> Self {
        PortError::Transient { detail: UpstreamDetail::with_correlation(message, correlation_id) }
    }

    /// A [`PortError::Rejected`] with this status and code and no other detail.
    pub fn rejected(status: u16, code: impl Into<String>, correlation_id: Option<String>) -> Self {
        let refusal = Refusal::new(status, code);
        let detail = UpstreamDetail::with_correlation(format!("refused: {refusal}"), correlation_id);
        PortError::Rejected { refusal, detail }
    }

    /// A [`PortError::RateLimited`] with the platform's wait, if it gave one.
    pub fn rate_limited(retry_after: Option<Duration>, correlation_id: Option<String>) -> Self {
        PortError::RateLimited { retry_after, detail: UpstreamDetail::with_correlation("rate limited", correlation_id) }
    }

    /// A [`PortError::NotFound`] without the platform's own refusal.
    pub fn not_found(what: Missing, correlation_id: Option<String>) -> Self {
        let detail = UpstreamDetail::with_correlation(format!("{what} not found"), correlation_id);
        PortError::NotFound { what, refusal: None, detail }
    }

    /// A [`PortError::InvalidState`] whose reason is also the detail.
    pub fn invalid_state(reason: impl Into<String>, correlation_id: Option<String>) -> Self {
        let reason = reason.into();
        PortError::InvalidState { detail: UpstreamDetail::with_correlation(reason.clone(), correlation_id), reason }
    }

    /// A [`PortError::Indeterminate`] with this message and correlation id.
    pub fn indeterminate(message: impl Into<String>, correlation_id: Option<String>) -> Self {
        PortError::Indeterminate { detail: UpstreamDetail::with_correlation(message, correlation_id) }
    }

    /// What the platform said.
    pub fn detail(&self) -> &UpstreamDetail {
        match self {
            PortError::Transient { detail }
            | PortError::RateLimited { detail, .. }
            | PortError::Rejected { detail, .. }
            | PortError::NotFound { detail, .. }
            | PortError::InvalidState { detail, .. }
            | PortError::Indeterminate { detail } => detail,
        }
    }

    /// The platform's correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.detail().correlation_id.as_deref()
    }

    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PortError::Transient { .. } | PortError::RateLimited { .. } | PortError::Indeterminate { .. })
    }
}
