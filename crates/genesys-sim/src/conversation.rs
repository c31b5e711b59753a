//! The Web Messaging conversation model: the `MessageConversation` JSON that
//! `GET /api/v2/conversations/messages/{id}` returns, and how a replace changes it.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::QueueSpec;

pub(crate) const CUSTOMER: &str = "customer";
pub(crate) const WORKFLOW: &str = "workflow";
const AGENT: &str = "agent";
pub(crate) const ACD: &str = "acd";
pub(crate) const CONNECTED: &str = "connected";
const DISCONNECTED: &str = "disconnected";

/// The shape of a conversation created by [`crate::Sim::create_conversation`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConversationKind {
    /// The customer plus a connected Architect flow participant (`purpose: "workflow"`) that holds the
    /// conversation: what a bot handoff finds. Auto-created conversations are of this kind.
    #[default]
    Bot,
    /// Customer and flow both `disconnected`, with `endTime`.
    Ended,
    /// Only the customer, connected; nobody holds the conversation.
    NoHolder,
    /// The customer plus a connected agent (`purpose: "agent"`).
    AgentHeld,
    /// Waiting in a queue: the flow ran its Transfer to ACD (the flow participant `disconnected`),
    /// and a connected ACD participant (`purpose: "acd"`) of [`ConversationSpec::queue`] holds it.
    /// No `recentTransfers` entry (not an API transfer).
    Queued,
}

/// What conversation to create. JSON: `{"id": "…optional…", "kind": "bot"}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSpec {
    /// Conversation id; a random one when `None`.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// Participants and their states.
    #[serde(default)]
    pub kind: ConversationKind,
    /// [`ConversationKind::Queued`] only: the queue it waits in (default [`crate::SUPPORT_QUEUE`]).
    /// JSON `queueId`.
    #[serde(default, rename = "queueId")]
    pub queue: Option<Uuid>,
}

impl ConversationSpec {
    /// A conversation of `kind` with a random id.
    pub fn new(kind: ConversationKind) -> Self {
        Self { id: None, kind, queue: None }
    }

    /// A conversation waiting in `queue` ([`ConversationKind::Queued`]) with a random id.
    pub fn queued(queue: Uuid) -> Self {
        Self { id: None, kind: ConversationKind::Queued, queue: Some(queue) }
    }

    /// A conversation of `kind` with the given id.
    pub fn with_id(id: Uuid, kind: ConversationKind) -> Self {
        Self { id: Some(id), kind, queue: None }
    }
}

/// The ids of a created conversation, for driving the API in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationIds {
    /// The conversation.
    pub conversation_id: Uuid,
    /// The `purpose: "customer"` participant.
    pub customer_id: Uuid,
    /// The flow or agent participant (disconnected for [`ConversationKind::Ended`]), the ACD
    /// participant for [`ConversationKind::Queued`]; `None` for [`ConversationKind::NoHolder`].
    pub holder_id: Option<Uuid>,
}

/// `{"id": …}` reference to a queue or user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct EntityRef {
    pub(crate) id: Uuid,
}

/// A `MessageMediaParticipant` (the subset the simulator models).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Participant {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) purpose: &'static str,
    pub(crate) state: &'static str,
    pub(crate) direction: &'static str,
    #[serde(rename = "type")]
    pub(crate) media_type: &'static str,
    pub(crate) start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) connected_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) disconnect_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) queue: Option<EntityRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<EntityRef>,
    pub(crate) attributes: BTreeMap<String, String>,
}

impl Participant {
    fn connected(purpose: &'static str, name: &str, now: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            purpose,
            state: CONNECTED,
            direction: "inbound",
            media_type: "webmessaging",
            start_time: now.to_owned(),
            connected_time: Some(now.to_owned()),
            end_time: None,
            disconnect_type: None,
            queue: None,
            user: None,
            attributes: BTreeMap::new(),
        }
    }

    fn disconnect(&mut self, now: &str, kind: &'static str) {
        self.state = DISCONNECTED;
        self.end_time = Some(now.to_owned());
        self.disconnect_type = Some(kind);
    }

    /// Holds the conversation: connected, not ended, not the customer.
    pub(crate) fn is_active(&self) -> bool {
        self.state == CONNECTED && self.end_time.is_none()
    }
}

/// `TransferDestination` of a recent transfer. Genesys models `userId`/`address`; the simulator also
/// echoes `queueId` so tests can read the destination queue directly.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransferDestination {
    pub(crate) address: String,
    pub(crate) queue_id: Uuid,
}

/// A `TransferResponse` in `recentTransfers`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransferRecord {
    pub(crate) id: Uuid,
    pub(crate) state: &'static str,
    pub(crate) date_issued: String,
    pub(crate) transfer_type: String,
    pub(crate) destination: TransferDestination,
}

/// A `MessageConversation`; the external tag is kept beside it (it is not part of that JSON).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Conversation {
    pub(crate) id: Uuid,
    pub(crate) participants: Vec<Participant>,
    pub(crate) recent_transfers: Vec<TransferRecord>,
    pub(crate) self_uri: String,
    #[serde(skip)]
    pub(crate) external_tag: Option<String>,
}

/// Now, as Genesys writes times: `yyyy-MM-ddTHH:mm:ss.SSSZ`.
pub(crate) fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Conversation {
    pub(crate) fn new(id: Uuid, kind: ConversationKind) -> (Self, ConversationIds) {
        let now = timestamp();
        let customer = Participant::connected(CUSTOMER, "Web Messaging Guest", &now);
        let holder = match kind {
            ConversationKind::Bot | ConversationKind::Ended | ConversationKind::Queued => {
                Some(Participant::connected(WORKFLOW, "Bot Flow", &now))
            }
            ConversationKind::AgentHeld => {
                let mut agent = Participant::connected(AGENT, "Sim Agent", &now);
                agent.direction = "outbound";
                agent.user = Some(EntityRef { id: Uuid::new_v4() });
                Some(agent)
            }
            ConversationKind::NoHolder => None,
        };
        let ids = ConversationIds {
            conversation_id: id,
            customer_id: customer.id,
            holder_id: holder.as_ref().map(|holder| holder.id),
        };
        let mut participants: Vec<_> = std::iter::once(customer).chain(holder).collect();
        if kind == ConversationKind::Ended {
            for participant in &mut participants {
                participant.disconnect(&now, "client");
            }
        }
        let conversation = Self {
            id,
            participants,
            recent_transfers: Vec::new(),
            self_uri: format!("/api/v2/conversations/messages/{id}"),
            external_tag: None,
        };
        (conversation, ids)
    }

    pub(crate) fn participant_mut(&mut self, id: Uuid) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }

    /// Blind transfer: `holder` leaves, an ACD participant in `queue` joins, and (for an API
    /// replace, `recorded`) the transfer is listed in `recentTransfers`. The caller has checked
    /// that `holder` is an active non-customer participant.
    pub(crate) fn transfer(&mut self, holder: Uuid, queue: &QueueSpec, transfer_type: &str, recorded: bool) {
        let now = timestamp();
        if let Some(participant) = self.participant_mut(holder) {
            participant.disconnect(&now, "transfer");
        }
        let mut acd = Participant::connected(ACD, &queue.name, &now);
        acd.queue = Some(EntityRef { id: queue.id });
        self.participants.push(acd);
        if !recorded {
            return;
        }
        self.recent_transfers.push(TransferRecord {
            id: Uuid::new_v4(),
            state: "Complete",
            date_issued: now,
            transfer_type: transfer_type.to_owned(),
            destination: TransferDestination { address: queue.id.to_string(), queue_id: queue.id },
        });
    }
}
