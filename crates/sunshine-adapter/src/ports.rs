//! The domain ports for Sunshine (ADR 0004 §9, Sunshine column): `TransferPort` (locate → the
//! state table; context and transfer in one passControl), `QueuePort` (Zendesk group availability,
//! or unknown), `AnalyticsPort` (no call: the reason travels in the metadata).

use std::sync::Arc;

use async_trait::async_trait;

use handoff_domain::platform::{AnalyticsDelivery, ContextDelivery, ContextLimits, PlatformRules, TotalMeasure};
use handoff_domain::ports::{
    AnalyticsPort, ContextAnchor, ControlState, HandedTo, Handle, HandoffEvent, Located, PortError, QueuePort, Receipt,
    TransferPort, TransferResult, Untransferable,
};
use handoff_domain::{AgentCounts, CapacitySnapshot, ContextSet, ConversationId, ParticipantId, QueueFigures, QueueId};
use tracing::instrument;

use crate::config::SunshineConfig;
use crate::metadata::{self, MAX_METADATA_BYTES};
use crate::ops::{Control, PassResult};
use crate::{SunshineClient, SunshineIds};

/// Longest reason (`handoffReason`, characters; each becomes at most one tag byte).
const MAX_REASON_TAG_BYTES: usize = 128;
/// Longest Zendesk group id ([`SunshineIds`]: 1–20 digits).
const MAX_GROUP_BYTES: usize = 20;

/// What Sunshine declares: its ids, 4000 bytes of serialized metadata minus the room the group
/// key and the tags take, context and analytics with the transfer, and a confirmation window.
pub(crate) fn platform_rules(config: &SunshineConfig) -> PlatformRules {
    // `,"<key>":"<group>"` and `,"<key>":"bot_handoff_reason_<reason> bot_handoff_group_<group>"`.
    let group_room = config.group_key.len() + 6 + MAX_GROUP_BYTES;
    let tags_room = config.tags_key.as_ref().map_or(0, |key| {
        key.len()
            + 6
            + "bot_handoff_reason_".len()
            + MAX_REASON_TAG_BYTES
            + 1
            + "bot_handoff_group_".len()
            + MAX_GROUP_BYTES
    });
    PlatformRules {
        name: "sunshine",
        ids: Arc::new(SunshineIds::new(config.id_format)),
        context: ContextLimits {
            max_keys: None,
            max_value_chars: None,
            max_total_bytes: Some(MAX_METADATA_BYTES.saturating_sub(group_room + tags_room)),
            total_measure: TotalMeasure::SerializedJson,
        },
        context_delivery: ContextDelivery::WithTransfer,
        analytics: AnalyticsDelivery::WithTransfer,
        confirm_within: Some(config.confirm_within),
    }
}

#[async_trait]
impl TransferPort for SunshineClient {
    fn rules(&self) -> &PlatformRules {
        &self.rules
    }

    #[instrument(skip_all, fields(conversation_id = %conversation))]
    async fn locate(
        &self,
        conversation: ConversationId,
        holder_hint: Option<ParticipantId>,
    ) -> Result<Located, PortError> {
        let found = self.locate_control(conversation.as_str(), holder_hint.as_ref().map(ParticipantId::as_str)).await?;
        let state = match found.control {
            Control::BotHolds => ControlState::BotHolds,
            Control::Queued => ControlState::Queued { target: None },
            Control::Unheld => ControlState::Unheld,
            Control::Ended => ControlState::Ended,
        };
        let handle = match found.handle {
            Ok(id) => Handle::parse(&id)
                .map_err(|_| Untransferable("the active switchboard integration has an unusable id".to_owned())),
            Err(why) => Err(Untransferable(why)),
        };
        Ok(Located {
            state,
            handed_to: if found.agent_side { HandedTo::AgentSide } else { HandedTo::Targets(Vec::new()) },
            handle,
            context_anchor: None,
            correlation_id: None,
            foreign_tag: false,
        })
    }

    /// Never called (`ContextDelivery::WithTransfer`): refused without a call.
    async fn write_context(
        &self,
        _conversation: ConversationId,
        _anchor: ContextAnchor,
        _context: &ContextSet,
    ) -> Result<Receipt, PortError> {
        Err(PortError::rejected(400, "context_travels_with_the_transfer", None))
    }

    /// One passControl to the agent side with the context, the group and the tags as metadata.
    /// `from` is not sent: passControl takes control from whoever holds it.
    #[instrument(skip_all, fields(conversation_id = %conversation, queue_id = %target))]
    async fn transfer<'a>(
        &self,
        conversation: ConversationId,
        _from: Handle,
        target: QueueId,
        context: Option<&'a ContextSet>,
    ) -> Result<TransferResult, PortError> {
        let entries = context.into_iter().flat_map(ContextSet::iter);
        let built = metadata::build(entries, target.as_str(), &self.config.group_key, self.config.tags_key.as_deref());
        // The domain refuses a context over `rules().context` before anything; this is the backstop.
        let metadata = built.map_err(|_| PortError::rejected(400, "metadata_too_large", None))?;
        match self.pass_control(conversation.as_str(), &metadata).await? {
            PassResult::Done => Ok(TransferResult::Done(Receipt::default())),
            PassResult::Accepted => Ok(TransferResult::Accepted(Receipt::default())),
        }
    }
}

#[async_trait]
impl QueuePort for SunshineClient {
    /// Without Zendesk Support credentials: every figure unknown, no call. With them: the group's
    /// online messaging agents (idle = with room), their work items; waiting and the estimated
    /// wait stay unknown (no public source, api-notes §11).
    #[instrument(skip_all, fields(queue_id = %queue))]
    async fn capacity(&self, queue: QueueId, _with_estimated_wait: bool) -> Result<CapacitySnapshot, PortError> {
        let Some(group) = self.group_availability(queue.as_str()).await? else {
            return Ok(CapacitySnapshot::unknown(queue));
        };
        let agents = AgentCounts {
            idle: group.idle,
            interacting: group.online.saturating_sub(group.idle),
            communicating: 0,
            other: 0,
        };
        let figures =
            QueueFigures { agents: Some(agents), interacting: Some(group.work_items), alerting: None, waiting: None };
        Ok(CapacitySnapshot { queue, figures, message_capacity: None, estimated_wait: None })
    }
}

#[async_trait]
impl AnalyticsPort for SunshineClient {
    /// No call (`AnalyticsDelivery::WithTransfer`): the reason is in the passControl metadata.
    async fn record(&self, _event: &HandoffEvent) -> Result<Receipt, PortError> {
        Ok(Receipt::default())
    }
}
