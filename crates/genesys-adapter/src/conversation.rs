//! A Genesys conversation as the adapter reads it (its participants), and what the domain is told
//! about it: the [`Located`] control state, the participant a transfer replaces (the [`Handle`]) and
//! the customer participant that carries the context (the [`ContextAnchor`]). Choosing the
//! participant is Genesys' business, so it lives here, not in the domain.

use std::sync::Arc;

use handoff_domain::ports::{ContextAnchor, ControlState, HandedTo, Handle, Located, Untransferable};
use handoff_domain::{
    AnalyticsDelivery, ContextDelivery, ContextLimits, ConversationId, ParticipantId, PlatformRules, QueueId,
    TotalMeasure,
};

use crate::ids::GenesysIds;

/// Genesys keeps at most this many participant attributes per bot session.
pub const MAX_ATTRIBUTES: usize = 50;
/// Genesys keeps at most this many characters per attribute value.
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 256;

/// The prefix of the external tags this service writes (`bot-handoff:{reason}`).
pub use handoff_domain::ports::EXTERNAL_TAG_PREFIX;

/// What the Genesys adapter declares: UUIDs, 50 attributes of 256 characters written onto the
/// customer participant before the replace, the external tag through the outbox, replaces that
/// are done when Genesys answers 202.
pub fn genesys_rules() -> PlatformRules {
    PlatformRules {
        name: "genesys",
        ids: Arc::new(GenesysIds),
        context: ContextLimits {
            max_keys: Some(MAX_ATTRIBUTES),
            max_value_chars: Some(MAX_ATTRIBUTE_VALUE_CHARS),
            max_total_bytes: None,
            total_measure: TotalMeasure::ValueBytes,
        },
        context_delivery: ContextDelivery::Separate,
        analytics: AnalyticsDelivery::Separate,
        confirm_within: None,
    }
}

/// One participant of a conversation, as far as the handoff cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantView {
    /// The participant id.
    pub id: ParticipantId,
    /// Whether this is the customer (`purpose == "customer"`).
    pub is_customer: bool,
    /// A human agent (`purpose` `agent` or `user`). Agents are never replaced: a conversation an
    /// agent already handles is not the bot's to hand off.
    pub is_agent: bool,
    /// Connected and not ended.
    pub active: bool,
    /// The queue this participant represents, if it is a queue (ACD) participant.
    pub queue: Option<QueueId>,
}

/// A conversation as `GET /api/v2/conversations/messages/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSnapshot {
    /// The conversation.
    pub id: ConversationId,
    /// Its participants, in Genesys' order.
    pub participants: Vec<ParticipantView>,
    /// Queues of transfers Genesys reports as issued for it (`recentTransfers`).
    pub transferred_to: Vec<QueueId>,
    /// `inin-correlation-id` of the lookup.
    pub correlation_id: Option<String>,
    /// The conversation's external tag, when the lookup shows one (`None`: none, or not shown).
    /// Genesys keeps one tag per conversation; its `MessageConversation` (the lookup) does not
    /// carry the tag, the generic `Conversation` does (`externalTag`), so this is `None` unless a
    /// future lookup shows it (see `docs/genesys/api-notes.md`).
    pub external_tag: Option<String>,
}

impl ConversationSnapshot {
    /// Whether the lookup shows an external tag someone else set (not one of ours): writing
    /// ours would replace it.
    pub fn has_foreign_tag(&self) -> bool {
        self.external_tag.as_deref().is_some_and(|t| !t.trim().is_empty() && !t.starts_with(EXTERNAL_TAG_PREFIX))
    }

    /// The customer participant, if present.
    pub fn customer(&self) -> Option<&ParticipantView> {
        self.participants.iter().find(|p| p.is_customer)
    }

    /// Active participants that may be replaced: neither the customer nor an agent (the bot or
    /// flow participant, or a queue the conversation waits in).
    pub fn holders(&self) -> impl Iterator<Item = &ParticipantView> {
        self.participants.iter().filter(|p| p.active && !p.is_customer && !p.is_agent)
    }

    /// Whether an agent is connected to the conversation.
    pub fn has_agent(&self) -> bool {
        self.participants.iter().any(|p| p.active && p.is_agent)
    }

    /// Whether the conversation is over (no active participant).
    pub fn has_ended(&self) -> bool {
        !self.participants.iter().any(|p| p.active)
    }

    /// Whether the conversation sits in `queue` (an active queue participant for it, or a
    /// recorded transfer to it).
    pub fn is_in_queue(&self, queue: QueueId) -> bool {
        self.queues().any(|q| q == queue)
    }

    /// Every queue the conversation sits in: those of active queue participants, then those of
    /// recorded transfers.
    pub fn queues(&self) -> impl Iterator<Item = QueueId> + '_ {
        self.participants
            .iter()
            .filter(|p| p.active && !p.is_customer)
            .filter_map(|p| p.queue)
            .chain(self.transferred_to.iter().copied())
    }

    /// The participant to replace: the webhook's `participantId` (`hint`) if it holds the
    /// conversation, else the first active participant that is neither the customer nor an
    /// agent. Never the customer or an agent; nothing while the guest is gone.
    ///
    /// # Errors
    /// Why nothing can be replaced, in words for the 422 answer.
    pub fn select_holder(&self, hint: Option<ParticipantId>) -> Result<ParticipantId, String> {
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

    /// What the domain is told: the control state (ended; an agent and nobody else to replace;
    /// waiting in a queue; a bot or flow holding it; nobody), the queues it sits in as the
    /// read-back, the participant to replace and the customer as the context's anchor.
    pub fn located(&self, hint: Option<ParticipantId>) -> Located {
        let queued = self.participants.iter().find(|p| p.active && !p.is_customer && p.queue.is_some());
        let state = if self.has_ended() {
            ControlState::Ended
        } else if self.has_agent() && self.holders().next().is_none() {
            let via = self.participants.iter().filter(|p| !p.is_customer).find_map(|p| p.queue);
            ControlState::AgentHas { via }
        } else if let Some(q) = queued {
            ControlState::Queued { target: q.queue }
        } else if self.holders().next().is_some() {
            ControlState::BotHolds
        } else {
            ControlState::Unheld
        };
        Located {
            state,
            handed_to: HandedTo::Targets(self.queues().collect()),
            handle: self.select_holder(hint).map(|p| Handle::new(*p.as_opaque())).map_err(Untransferable),
            context_anchor: self.customer().map(|c| ContextAnchor::new(*c.id.as_opaque())),
            correlation_id: self.correlation_id.clone(),
            foreign_tag: self.has_foreign_tag(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONVERSATION: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
    const CUSTOMER: &str = "c0000000-0000-4000-8000-000000000001";
    const BOT: &str = "b0000000-0000-4000-8000-000000000001";
    const AGENT: &str = "d0000000-0000-4000-8000-000000000001";
    const ACD: &str = "a0000000-0000-4000-8000-000000000001";
    const QUEUE: &str = "00000000-0000-4000-8000-000000000001";

    fn pid(raw: &str) -> ParticipantId {
        ParticipantId::parse(raw).expect("valid")
    }
    fn qid(raw: &str) -> QueueId {
        QueueId::parse(raw).expect("valid")
    }
    fn view(id: &str, is_customer: bool, is_agent: bool, active: bool, queue: Option<QueueId>) -> ParticipantView {
        ParticipantView { id: pid(id), is_customer, is_agent, active, queue }
    }
    fn conversation(participants: Vec<ParticipantView>, transferred_to: Vec<QueueId>) -> ConversationSnapshot {
        ConversationSnapshot {
            id: ConversationId::parse(CONVERSATION).expect("valid"),
            participants,
            transferred_to,
            correlation_id: Some("corr".to_owned()),
            external_tag: None,
        }
    }
    fn handle(id: &str) -> Result<Handle, Untransferable> {
        Ok(Handle::new(*pid(id).as_opaque()))
    }
    fn refused(message: &str) -> Result<Handle, Untransferable> {
        Err(Untransferable(message.to_owned()))
    }

    #[test]
    fn a_bot_held_conversation_is_located_with_the_bot_to_replace_and_the_customer_as_anchor() {
        let located =
            conversation(vec![view(CUSTOMER, true, false, true, None), view(BOT, false, false, true, None)], vec![])
                .located(None);
        assert_eq!(located.state, ControlState::BotHolds);
        assert_eq!(located.handle, handle(BOT));
        assert_eq!(located.context_anchor, Some(ContextAnchor::new(*pid(CUSTOMER).as_opaque())));
        assert_eq!(located.handed_to, HandedTo::Targets(vec![]));
        assert_eq!(located.correlation_id.as_deref(), Some("corr"));
    }

    #[test]
    fn a_queued_conversation_is_located_at_its_queue_with_the_queue_participant_to_replace() {
        let located = conversation(
            vec![
                view(CUSTOMER, true, false, true, None),
                view(BOT, false, false, false, None),
                view(ACD, false, false, true, Some(qid(QUEUE))),
            ],
            vec![qid(QUEUE)],
        )
        .located(None);
        assert_eq!(located.state, ControlState::Queued { target: Some(qid(QUEUE)) });
        assert!(located.is_handed_to(qid(QUEUE)));
        assert_eq!(located.handle, handle(ACD));
    }

    #[test]
    fn an_agent_ended_and_unheld_conversations_are_told_apart_and_nobody_is_replaced() {
        let agent = conversation(
            vec![
                view(CUSTOMER, true, false, true, None),
                view(ACD, false, false, false, Some(qid(QUEUE))),
                view(AGENT, false, true, true, None),
            ],
            vec![],
        )
        .located(None);
        assert_eq!(agent.state, ControlState::AgentHas { via: Some(qid(QUEUE)) });
        assert_eq!(agent.handle, refused("an agent already handles the conversation"));

        let ended =
            conversation(vec![view(CUSTOMER, true, false, false, None), view(BOT, false, false, false, None)], vec![])
                .located(None);
        assert_eq!(ended.state, ControlState::Ended);

        let unheld = conversation(vec![view(CUSTOMER, true, false, true, None)], vec![]).located(None);
        assert_eq!(unheld.state, ControlState::Unheld);
        assert_eq!(unheld.handle, refused("no participant holds the conversation"));
    }

    #[test]
    fn the_hint_chooses_a_holder_but_never_the_customer_or_an_agent_and_a_guest_who_left_stops_all() {
        let both = conversation(
            vec![
                view(CUSTOMER, true, false, true, None),
                view(BOT, false, false, true, None),
                view(ACD, false, false, true, None),
                view(AGENT, false, true, false, None),
            ],
            vec![],
        );
        assert_eq!(both.located(Some(pid(ACD))).handle, handle(ACD));
        assert_eq!(
            both.located(Some(pid(CUSTOMER))).handle,
            refused("participantId is the customer; the customer is never replaced")
        );
        assert_eq!(
            both.located(Some(pid(AGENT))).handle,
            refused(&format!("participant {AGENT} is an agent; agents are never replaced"))
        );
        assert_eq!(
            both.located(Some(pid(QUEUE))).handle,
            refused(&format!("participant {QUEUE} does not hold the conversation"))
        );

        let left =
            conversation(vec![view(CUSTOMER, true, false, false, None), view(BOT, false, false, true, None)], vec![]);
        assert_eq!(left.located(None).handle, refused("the guest has left the conversation"));
    }

    #[test]
    fn genesys_declares_fifty_attributes_of_256_characters_written_separately() {
        let rules = genesys_rules();
        assert_eq!((rules.context.max_keys, rules.context.max_value_chars), (Some(50), Some(256)));
        assert_eq!(rules.context_delivery, ContextDelivery::Separate);
        assert_eq!(rules.analytics, AnalyticsDelivery::Separate);
        assert_eq!(rules.confirm_within, None);
    }
}
