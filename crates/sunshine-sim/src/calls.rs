//! The call log: which operation was called, with what, and what it answered.

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The operations the simulator tells apart (Sunshine Conversations and Zendesk Support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    /// `GET /v2/apps/{appId}` (GetApp).
    GetApp,
    /// `GET /v2/apps/{appId}/conversations/{conversationId}` (GetConversation).
    GetConversation,
    /// `GET /v2/apps/{appId}/conversations/{conversationId}/messages` (ListMessages).
    ListMessages,
    /// `POST /v2/apps/{appId}/conversations/{conversationId}/passControl` (PassControl).
    PassControl,
    /// `GET /v2/apps/{appId}/switchboards` (ListSwitchboards).
    ListSwitchboards,
    /// `GET /v2/apps/{appId}/switchboards/{switchboardId}/switchboardIntegrations`.
    ListSwitchboardIntegrations,
    /// Zendesk Support `GET /api/v2/agent_availabilities`.
    AgentAvailabilities,
    /// Zendesk Support `GET /api/v2/groups/{groupId}`.
    GetGroup,
    /// Anything else (answered 404 `not_found`).
    Other,
}

impl Endpoint {
    /// Every endpoint, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::GetApp,
        Self::GetConversation,
        Self::ListMessages,
        Self::PassControl,
        Self::ListSwitchboards,
        Self::ListSwitchboardIntegrations,
        Self::AgentAvailabilities,
        Self::GetGroup,
        Self::Other,
    ];

    /// Whether the endpoint belongs to the Zendesk Support API (its own credentials).
    pub fn is_support(self) -> bool {
        matches!(self, Self::AgentAvailabilities | Self::GetGroup)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How a call authenticated (never the credentials themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthKind {
    /// No or unreadable `Authorization` header.
    None,
    /// `Basic` (Sunshine key id + secret, or Zendesk Support e-mail/token).
    Basic,
    /// `Bearer` JWT.
    Jwt,
}

/// One answered call, as appended to the call log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// Position in the log, starting at 1; keeps counting across [`crate::Sim::reset_calls`].
    pub seq: u64,
    /// Which operation was called.
    pub endpoint: Endpoint,
    /// HTTP method.
    pub method: String,
    /// Request path (no query string).
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Final status of the answer (after auth and faults).
    pub status: u16,
    /// How the call authenticated.
    pub auth: AuthKind,
    /// The request body: JSON as sent, a string when it was not JSON, `None` when empty.
    pub body: Option<Value>,
    /// When the call was answered, measured from simulator start (serialised as `atMs`).
    #[serde(rename = "atMs", serialize_with = "millis")]
    pub at: Duration,
}

fn millis<S: Serializer>(at: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(at.as_millis()).unwrap_or(u64::MAX))
}
