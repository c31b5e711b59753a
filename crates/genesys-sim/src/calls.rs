//! The call log: which endpoint was called, with what, and what it answered.

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

/// The Genesys operations the simulator tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    /// `POST /oauth/token`.
    Token,
    /// `GET /api/v2/conversations/messages/{conversationId}`.
    GetConversation,
    /// `PATCH /api/v2/conversations/messages/{cid}/participants/{pid}/attributes`.
    PatchAttributes,
    /// `POST /api/v2/conversations/messages/{cid}/participants/{pid}/replace`.
    Replace,
    /// `POST /api/v2/analytics/queues/observations/query`.
    ObservationsQuery,
    /// `GET /api/v2/routing/queues/{queueId}[/mediatypes/{mediaType}]/estimatedwaittime`.
    EstimatedWait,
    /// `GET /api/v2/routing/queues/{queueId}`.
    GetQueue,
    /// `PUT /api/v2/conversations/{conversationId}/tags`.
    PutTags,
    /// `POST /api/v2/notifications/channels`.
    CreateChannel,
    /// `PUT /api/v2/notifications/channels/{channelId}/subscriptions`.
    Subscribe,
    /// `GET /api/v2/routing/utilization`.
    GetUtilization,
    /// Anything else (answered 404 `not.found`).
    Other,
}

impl Endpoint {
    /// Every endpoint, in declaration order.
    pub const ALL: [Self; 12] = [
        Self::Token,
        Self::GetConversation,
        Self::PatchAttributes,
        Self::Replace,
        Self::ObservationsQuery,
        Self::EstimatedWait,
        Self::GetQueue,
        Self::PutTags,
        Self::CreateChannel,
        Self::Subscribe,
        Self::GetUtilization,
        Self::Other,
    ];

    /// The role permission Genesys requires for this endpoint, if any.
    pub fn permission(self) -> Option<&'static str> {
        match self {
            Self::Replace => Some("conversation:communication:blindTransfer"),
            Self::ObservationsQuery => Some("analytics:queueObservation:view"),
            Self::EstimatedWait | Self::GetQueue => Some("routing:queue:view"),
            Self::PutTags => Some("conversation:externalTag:edit"),
            Self::GetUtilization => Some("routing:utilization:view"),
            Self::Token
            | Self::GetConversation
            | Self::PatchAttributes
            | Self::CreateChannel
            | Self::Subscribe
            | Self::Other => None,
        }
    }

    /// Whether the endpoint is under `/api/v2` and needs a bearer token.
    pub fn is_api(self) -> bool {
        !matches!(self, Self::Token | Self::Other)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
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
    /// Final status of the answer (after faults, auth and permission checks).
    pub status: u16,
    /// The request body: JSON as sent, a string when it was not JSON, `None` when empty. For the token
    /// call only `{"grant_type": …}` (credentials are never logged).
    pub body: Option<Value>,
    /// When the call was answered, measured from simulator start (serialised as `atMs`).
    #[serde(rename = "atMs", serialize_with = "millis")]
    pub at: Duration,
    /// The `inin-correlation-id` the answer carried.
    pub correlation_id: Uuid,
    /// The latency the simulator really added to this call (zero when none was set), serialised
    /// as `latencyUs`.
    #[serde(rename = "latencyUs", serialize_with = "micros")]
    pub latency: Duration,
}

fn micros<S: Serializer>(latency: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))
}

fn millis<S: Serializer>(at: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(at.as_millis()).unwrap_or(u64::MAX))
}
