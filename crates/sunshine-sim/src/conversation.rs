//! The conversation model: who has control (active / pending switchboard integration), whether the
//! user ended it, and the passControl metadata the agent side received.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{AGENT_INTEGRATION_ID, BOT_INTEGRATION_ID};

/// The state a conversation is created in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConversationState {
    /// The bot integration is active (transferable).
    #[default]
    Bot,
    /// The Agent Workspace integration is active (waiting for an agent, as far as Sunshine shows).
    Queued,
    /// The Agent Workspace integration is active and an agent answered: in Sunshine this looks
    /// exactly like `Queued` (the difference lives in Zendesk Support).
    AgentHas,
    /// The bot is active and control was offered to the Agent Workspace (pending).
    Pending,
    /// No integration is active (control was released).
    Unheld,
    /// The bot is active and the user ended the conversation (`conversation:endedByUser`).
    Ended,
}

/// How to create a conversation (admin JSON: `{"id"?: "24 hex", "state"?: "bot"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversationSpec {
    /// The id (default: a random 24-character hex id).
    #[serde(default)]
    pub id: Option<String>,
    /// The starting state.
    #[serde(default)]
    pub state: ConversationState,
}

impl ConversationSpec {
    /// A conversation in `state` with a random id.
    pub fn new(state: ConversationState) -> Self {
        Self { id: None, state }
    }
}

/// One passControl as the target integration received it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    /// The switchboard integration id control was passed to.
    pub switchboard_integration: String,
    /// The metadata as sent (an empty object when none).
    pub metadata: Map<String, Value>,
    /// Whether control really changed: `false` while an `acceptThenApplyLater` is pending and for
    /// an `acceptThenFail`.
    pub applied: bool,
}

/// A simulated conversation.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    pub(crate) id: String,
    pub(crate) active: Option<String>,
    pub(crate) pending: Option<String>,
    pub(crate) ended: bool,
    pub(crate) agent_answered: bool,
    pub(crate) received: Vec<Received>,
    pub(crate) created_at: String,
}

impl Conversation {
    pub(crate) fn new(id: String, state: ConversationState, now: String) -> Self {
        let bot = Some(BOT_INTEGRATION_ID.to_owned());
        let agent = Some(AGENT_INTEGRATION_ID.to_owned());
        let (active, pending) = match state {
            ConversationState::Bot | ConversationState::Ended => (bot, None),
            ConversationState::Queued | ConversationState::AgentHas => (agent, None),
            ConversationState::Pending => (bot, agent),
            ConversationState::Unheld => (None, None),
        };
        Self {
            id,
            active,
            pending,
            ended: state == ConversationState::Ended,
            agent_answered: state == ConversationState::AgentHas,
            received: Vec::new(),
            created_at: now,
        }
    }

    /// The `conversation` object of GetConversation: the switchboard fields are omitted when unset
    /// (spec `conversationTruncated`).
    pub(crate) fn to_json(&self, integrations: &[crate::state::Integration]) -> Value {
        let view = |id: &Option<String>| {
            id.as_ref().map(|id| match integrations.iter().find(|i| &i.id == id) {
                Some(i) => json!({
                    "id": i.id, "name": i.name, "integrationId": i.integration_id, "integrationType": i.integration_type,
                }),
                None => json!({ "id": id }),
            })
        };
        let mut conversation = json!({
            "id": self.id,
            "type": "personal",
            "metadata": null,
            "isDefault": true,
            "displayName": null,
            "description": null,
            "iconUrl": null,
            "businessLastRead": null,
            "lastUpdatedAt": self.created_at,
            "createdAt": self.created_at,
        });
        if let Some(active) = view(&self.active) {
            conversation["activeSwitchboardIntegration"] = active;
        }
        if let Some(pending) = view(&self.pending) {
            conversation["pendingSwitchboardIntegration"] = pending;
        }
        conversation
    }

    /// The latest page of messages: one user text, and the `conversation:endedByUser` activity
    /// last when the user ended it (spec `message`, `activityMessage`).
    pub(crate) fn messages_json(&self) -> Value {
        let mut messages = vec![json!({
            "id": format!("{}0000", &self.id[..self.id.len().min(20)]),
            "received": self.created_at,
            "author": { "type": "user", "userId": "7494535bff5cef41a15be74d" },
            "content": { "type": "text", "text": "I need a human" },
            "source": { "type": "web" },
        })];
        if self.ended {
            messages.push(json!({
                "id": format!("{}0001", &self.id[..self.id.len().min(20)]),
                "received": self.created_at,
                "author": { "type": "business" },
                "content": { "type": "text", "text": "The conversation was ended by the user." },
                "activity": { "type": "conversation:endedByUser", "data": {} },
                "source": { "type": "api" },
            }));
        }
        json!({ "messages": messages, "meta": { "hasMore": false }, "links": {} })
    }
}
