//! Counters for `/metrics`: requests by operation and status class.

use std::sync::atomic::{AtomicU64, Ordering};

/// The upstream operations (the `endpoint` label of `handoff_upstream_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `GET /v2/apps/{appId}`.
    GetApp,
    /// `GET …/conversations/{id}`.
    GetConversation,
    /// `GET …/conversations/{id}/messages`.
    ListMessages,
    /// `POST …/conversations/{id}/passControl`.
    PassControl,
    /// `GET …/switchboards`.
    ListSwitchboards,
    /// `GET …/switchboards/{id}/switchboardIntegrations`.
    ListSwitchboardIntegrations,
    /// Zendesk Support `GET /api/v2/agent_availabilities`.
    AgentAvailabilities,
    /// Zendesk Support `GET /api/v2/groups/{id}`.
    GetGroup,
}

impl Op {
    /// Every operation.
    pub const ALL: [Self; 8] = [
        Self::GetApp,
        Self::GetConversation,
        Self::ListMessages,
        Self::PassControl,
        Self::ListSwitchboards,
        Self::ListSwitchboardIntegrations,
        Self::AgentAvailabilities,
        Self::GetGroup,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetApp => "get_app",
            Self::GetConversation => "get_conversation",
            Self::ListMessages => "list_messages",
            Self::PassControl => "pass_control",
            Self::ListSwitchboards => "list_switchboards",
            Self::ListSwitchboardIntegrations => "list_switchboard_integrations",
            Self::AgentAvailabilities => "agent_availabilities",
            Self::GetGroup => "get_group",
        }
    }
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// 4xx other than 429.
    ClientError,
    /// 429.
    RateLimited,
    /// 5xx and anything unexpected.
    ServerError,
    /// No status: timeout or broken connection.
    TransportError,
}

impl StatusClass {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "2xx",
            Self::ClientError => "4xx",
            Self::RateLimited => "429",
            Self::ServerError => "5xx",
            Self::TransportError => "error",
        }
    }

    pub(crate) fn of(status: u16) -> Self {
        match status {
            200..=299 => Self::Success,
            429 => Self::RateLimited,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }

    const ALL: [Self; 5] =
        [Self::Success, Self::ClientError, Self::RateLimited, Self::ServerError, Self::TransportError];

    fn index(self) -> usize {
        self as usize
    }
}

/// One counter of [`Counters::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCount {
    /// The operation.
    pub op: Op,
    /// The status class.
    pub class: StatusClass,
    /// Requests so far.
    pub count: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: [[AtomicU64; 5]; 8],
}

impl Counters {
    pub(crate) fn request(&self, op: Op, class: StatusClass) {
        self.requests[op as usize][class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestCount> {
        Op::ALL
            .iter()
            .flat_map(|op| StatusClass::ALL.iter().map(move |class| (*op, *class)))
            .map(|(op, class)| RequestCount {
                op,
                class,
                count: self.requests[op as usize][class.index()].load(Ordering::Relaxed),
            })
            .filter(|c| c.count > 0)
            .collect()
    }
}
