//! The fake participant-based platform the service tests locate conversations on, and the
//! small upstream fixtures (rules, capacity, errors, receipts).

use crate::admission::CapacitySnapshot;
use crate::ids::ParticipantId;
use crate::ids::{ConversationId, QueueId};
use crate::platform::{AnalyticsDelivery, ContextDelivery, ContextLimits, PlatformRules};
use crate::ports::Receipt;
use crate::ports::{ContextAnchor, ControlState, HandedTo, Handle, Located, PortError, Untransferable};
use std::sync::Arc;

use super::{conversation_id, pid, qid, ACD, BOT, CUSTOMER};

// ---- upstream fixtures ----------------------------------------------------------------

/// A participant of the fake platform the tests locate conversations on (participants that hold
/// the conversation, a guest, agents, queues), as far as a handoff cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParticipantView {
    pub(crate) id: ParticipantId,
    pub(crate) is_customer: bool,
    pub(crate) is_agent: bool,
    pub(crate) active: bool,
    pub(crate) queue: Option<QueueId>,
}

/// A conversation of the fake platform; the mocked `locate` turns it into a [`Located`] with
/// [`located`], choosing the handle the way a participant-based adapter does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConversationSnapshot {
    pub(crate) id: ConversationId,
    pub(crate) participants: Vec<ParticipantView>,
    pub(crate) transferred_to: Vec<QueueId>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) external_tag: Option<String>,
}

impl ConversationSnapshot {
    pub(crate) fn customer(&self) -> Option<&ParticipantView> {
        self.participants.iter().find(|p| p.is_customer)
    }
    pub(crate) fn holders(&self) -> impl Iterator<Item = &ParticipantView> {
        self.participants.iter().filter(|p| p.active && !p.is_customer && !p.is_agent)
    }
    pub(crate) fn has_agent(&self) -> bool {
        self.participants.iter().any(|p| p.active && p.is_agent)
    }
    pub(crate) fn has_ended(&self) -> bool {
        !self.participants.iter().any(|p| p.active)
    }
    pub(crate) fn queues(&self) -> impl Iterator<Item = QueueId> + '_ {
        self.participants
            .iter()
            .filter(|p| p.active && !p.is_customer)
            .filter_map(|p| p.queue)
            .chain(self.transferred_to.iter().copied())
    }
    fn handle(&self, hint: Option<ParticipantId>) -> Result<ParticipantId, String> {
        match self.customer() {
            None => return Err("the conversation has no customer participant".to_owned()),
            Some(c) if !c.active => return Err("the guest has left the conversation".to_owned()),
            Some(_) => {}
        }
        match hint {
            Some(wanted) => {
                if self.customer().is_some_and(|c| c.id == wanted) {
                    return Err("participantId is the customer; the customer is never replaced".to_owned());
                }
                if self.participants.iter().any(|p| p.id == wanted && p.is_agent) {
                    return Err(format!("participant {wanted} is an agent; agents are never replaced"));
                }
                self.holders()
                    .find(|p| p.id == wanted)
                    .map(|p| p.id)
                    .ok_or_else(|| format!("participant {wanted} does not hold the conversation"))
            }
            None => self.holders().next().map(|p| p.id).ok_or_else(|| {
                if self.has_agent() {
                    "an agent already handles the conversation".to_owned()
                } else {
                    "no participant holds the conversation".to_owned()
                }
            }),
        }
    }
}

/// What a participant-based adapter reports for `snapshot` (with the webhook's hint).
pub(crate) fn located(snapshot: &ConversationSnapshot, hint: Option<ParticipantId>) -> Located {
    let queued = snapshot.participants.iter().find(|p| p.active && !p.is_customer && p.queue.is_some());
    let state = if snapshot.has_ended() {
        ControlState::Ended
    } else if snapshot.has_agent() && snapshot.holders().next().is_none() {
        let via = snapshot.participants.iter().filter(|p| !p.is_customer).find_map(|p| p.queue);
        ControlState::AgentHas { via }
    } else if let Some(q) = queued {
        ControlState::Queued { target: q.queue }
    } else if snapshot.holders().next().is_some() {
        ControlState::BotHolds
    } else {
        ControlState::Unheld
    };
    let foreign_tag = snapshot
        .external_tag
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty() && !t.starts_with(crate::ports::EXTERNAL_TAG_PREFIX));
    Located {
        state,
        handed_to: HandedTo::Targets(snapshot.queues().collect()),
        handle: snapshot.handle(hint).map(|p| handle(&p)).map_err(Untransferable),
        context_anchor: snapshot.customer().map(|c| anchor(&c.id)),
        correlation_id: snapshot.correlation_id.clone(),
        foreign_tag,
    }
}

pub(crate) fn handle(p: &ParticipantId) -> Handle {
    Handle::new(*p.as_opaque())
}

pub(crate) fn anchor(p: &ParticipantId) -> ContextAnchor {
    ContextAnchor::new(*p.as_opaque())
}

/// Fifty keys of at most 256 characters each, context written before the transfer, analytics
/// through the outbox, transfers done at once.
pub(crate) fn rules() -> PlatformRules {
    PlatformRules {
        name: "test",
        ids: Arc::new(crate::ids::OpaqueIds),
        context: ContextLimits { max_keys: Some(50), max_value_chars: Some(256), ..ContextLimits::NONE },
        context_delivery: ContextDelivery::Separate,
        analytics: AnalyticsDelivery::Separate,
        confirm_within: None,
    }
}

pub(crate) fn participant(id: &str, is_customer: bool, active: bool, queue: Option<QueueId>) -> ParticipantView {
    ParticipantView { id: pid(id), is_customer, is_agent: false, active, queue }
}

pub(crate) fn snapshot(participants: Vec<ParticipantView>, transferred_to: Vec<QueueId>) -> ConversationSnapshot {
    ConversationSnapshot {
        id: conversation_id(),
        participants,
        transferred_to,
        correlation_id: Some("corr-locate".to_owned()),
        external_tag: None,
    }
}

/// The guest talking to the bot: a customer and one holder.
pub(crate) fn live() -> ConversationSnapshot {
    snapshot(vec![participant(CUSTOMER, true, true, None), participant(BOT, false, true, None)], vec![])
}

/// The conversation after a transfer to `queue` applied.
pub(crate) fn in_queue(queue: &str) -> ConversationSnapshot {
    snapshot(
        vec![
            participant(CUSTOMER, true, true, None),
            participant(BOT, false, false, None),
            participant(ACD, false, true, Some(qid(queue))),
        ],
        vec![qid(queue)],
    )
}

pub(crate) fn ended() -> ConversationSnapshot {
    snapshot(vec![participant(CUSTOMER, true, false, None), participant(BOT, false, false, None)], vec![])
}

pub(crate) fn capacity(queue: &str, idle: u32) -> CapacitySnapshot {
    CapacitySnapshot::idle_for_tests(qid(queue), idle, 0)
}

pub(crate) fn transient() -> PortError {
    PortError::transient("timeout", Some("corr-transient".to_owned()))
}

pub(crate) fn receipt(corr: &str) -> Receipt {
    Receipt { correlation_id: Some(corr.to_owned()) }
}
