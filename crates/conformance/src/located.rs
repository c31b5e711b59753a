//! The read-back the scenarios assert on, in the vocabulary of ADR 0004 §3 (`ControlState`,
//! `handed_to`, a transferable handle). The only place that knows the shape of today's
//! `TransferPort` (participants); with `TransferPort` v2 it becomes a thin wrapper of `Located`.

use handoff_domain::ports::{ConversationSnapshot, PortError, Receipt, TransferPort};
use handoff_domain::{ConversationId, ParticipantId, QueueId};

/// Who holds the conversation, as far as a handoff cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The bot or flow holds it.
    BotHolds,
    /// Waiting for an agent at `target` (`None`: the platform does not say where).
    Queued {
        /// Where it waits.
        target: Option<QueueId>,
    },
    /// A human agent handles it.
    AgentHas,
    /// Nobody holds it.
    Unheld,
    /// It is over.
    Ended,
}

/// A conversation as the adapter located it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The control state.
    pub state: Control,
    /// Where the platform shows it handed to.
    pub handed_to: Vec<QueueId>,
    /// What a transfer acts on; `None` when there is nothing the bot may hand off from.
    pub handle: Option<ParticipantId>,
    /// Where the context is written (`None` when it travels with the transfer).
    pub context_anchor: Option<ParticipantId>,
}

impl Located {
    /// Whether the platform shows the conversation handed to `target`.
    pub fn is_handed_to(&self, target: QueueId) -> bool {
        self.handed_to.contains(&target)
    }
}

impl From<ConversationSnapshot> for Located {
    fn from(snapshot: ConversationSnapshot) -> Self {
        let queued = snapshot.participants.iter().find(|p| p.active && !p.is_customer && p.queue.is_some());
        let state = if snapshot.has_ended() {
            Control::Ended
        } else if snapshot.has_agent() {
            Control::AgentHas
        } else if let Some(queue) = queued {
            Control::Queued { target: queue.queue }
        } else if snapshot.holders().next().is_some() {
            Control::BotHolds
        } else {
            Control::Unheld
        };
        let handle = match state {
            Control::BotHolds | Control::Queued { .. } => snapshot.holders().next().map(|p| p.id),
            Control::AgentHas | Control::Unheld | Control::Ended => None,
        };
        Self {
            state,
            handed_to: snapshot.queues().collect(),
            handle,
            context_anchor: snapshot.customer().map(|c| c.id),
        }
    }
}

/// `TransferPort::locate`, read as [`Located`].
///
/// # Errors
/// The port's error.
pub async fn locate(port: &dyn TransferPort, conversation: ConversationId) -> Result<Located, PortError> {
    port.locate(conversation).await.map(Located::from)
}

/// `TransferPort::transfer` from what `located` says the bot may hand off.
///
/// # Panics
/// When `located` has no handle: a scenario bug.
///
/// # Errors
/// The port's error.
pub async fn transfer(
    port: &dyn TransferPort,
    conversation: ConversationId,
    located: &Located,
    target: QueueId,
) -> Result<Receipt, PortError> {
    let handle = located.handle.unwrap_or_else(|| panic!("nothing to transfer from: {located:?}"));
    port.transfer(conversation, handle, target).await
}
