//! The Sunshine harness: a `SunshineClient` (JWT auth, the ended check on, no Zendesk Support
//! credentials) against a fresh `sunshine-sim` on 127.0.0.1, read back through the simulator's
//! in-process controls, call log and the passControl metadata it received.

use std::sync::Arc;

use async_trait::async_trait;
use handoff_conformance::{Harness, HarnessOptions, Op, PlatformView, SimFault, SimState};
use handoff_domain::ports::{AnalyticsPort, QueuePort, TransferPort};
use handoff_domain::{ConversationId, QueueId};
use handoff_sunshine::{AuthMode, EndedCheck, SunshineClient, SunshineConfig};
use secrecy::SecretString;
use sunshine_sim::{
    ConversationSpec, ConversationState, Endpoint, Fault, FaultKind, SimConfig, SimHandle, AGENT_INTEGRATION_ID,
    APP_ID, KEY_ID, KEY_SECRET, SUPPORT_GROUP,
};
use url::Url;

/// `handoff-sunshine` pointed at its own `sunshine-sim`.
pub(crate) struct SunshineHarness {
    sim: SimHandle,
    client: Arc<SunshineClient>,
    options: HarnessOptions,
    group_key: String,
}

fn endpoint(op: Op) -> Endpoint {
    match op {
        Op::Locate => Endpoint::GetConversation,
        Op::Transfer => Endpoint::PassControl,
        Op::Capacity => Endpoint::AgentAvailabilities,
        // Never called on Sunshine (context and analytics ride on passControl): any call of
        // either would land on an unknown path.
        Op::WriteContext | Op::Analytics => Endpoint::Other,
    }
}

fn group(id: u64) -> QueueId {
    QueueId::parse(&id.to_string()).expect("a Zendesk group id is a queue id")
}

#[async_trait]
impl Harness for SunshineHarness {
    const NAME: &'static str = "sunshine";

    async fn start(options: HarnessOptions) -> Self {
        let sim = sunshine_sim::spawn(SimConfig::default()).await.expect("sunshine-sim starts on 127.0.0.1");
        let base = Url::parse(&sim.base_url()).expect("the simulator's URL");
        let mut config = SunshineConfig::new(APP_ID, KEY_ID, SecretString::from(KEY_SECRET), base, "zd-agentWorkspace");
        config.auth = AuthMode::Jwt;
        config.ended_check = EndedCheck::Messages;
        config.attempt_timeout = options.attempt_timeout;
        config.total_budget = options.budget;
        config.confirm_interval = std::time::Duration::from_millis(50);
        let group_key = config.group_key.clone();
        let client = SunshineClient::new(config).expect("a valid client configuration");
        client.resolve_integrations().await.expect("the simulator's integrations resolve");
        Self { sim, client: Arc::new(client), options, group_key }
    }

    fn transfer(&self) -> Arc<dyn TransferPort> {
        self.client.clone()
    }

    fn queue(&self) -> Arc<dyn QueuePort> {
        self.client.clone()
    }

    fn analytics(&self) -> Arc<dyn AnalyticsPort> {
        self.client.clone()
    }

    fn target(&self) -> QueueId {
        group(SUPPORT_GROUP)
    }

    /// The group only travels in the metadata, so an unknown group is not refused: what the
    /// platform refuses is an agent side that no longer exists (the integration is deleted).
    fn unknown_target(&self) -> QueueId {
        self.sim.sim().remove_integration(AGENT_INTEGRATION_ID);
        group(999_999)
    }

    /// Without Zendesk Support credentials no group has a capacity source.
    async fn target_without_capacity(&self) -> Option<QueueId> {
        Some(self.target())
    }

    async fn conversation(&self, state: SimState) -> Option<ConversationId> {
        let state = match state {
            SimState::BotHolds => ConversationState::Bot,
            SimState::Queued => ConversationState::Queued,
            // Sunshine cannot tell an answered conversation from a waiting one (ADR 0004 §9).
            SimState::AgentHas => return None,
            SimState::Unheld => ConversationState::Unheld,
            SimState::Ended => ConversationState::Ended,
        };
        let id = self.sim.sim().create_conversation(ConversationSpec::new(state));
        Some(ConversationId::parse(&id).expect("a Sunshine id is a conversation id"))
    }

    async fn unknown_conversation(&self) -> ConversationId {
        let id = sunshine_sim::new_id();
        self.sim.sim().mark_unknown(&id);
        ConversationId::parse(&id).expect("a Sunshine id is a conversation id")
    }

    async fn fault(&self, op: Op, fault: SimFault, times: u32) {
        let kind = match fault {
            SimFault::Status { status, code, retry_after } => {
                FaultKind::Status { status, code: code.to_owned(), retry_after_secs: retry_after }
            }
            SimFault::ApplyThenTimeout => FaultKind::ApplyThenDelay(self.options.attempt_timeout * 3),
            SimFault::TimeoutWithoutApplying => FaultKind::Hang,
        };
        self.sim.sim().push_fault(Fault::new(endpoint(op), kind).times(times));
    }

    async fn calls(&self, op: Op) -> usize {
        self.sim.sim().count(endpoint(op))
    }

    async fn credentials_issued(&self) -> usize {
        self.sim.sim().jwts_seen()
    }

    async fn revoke_credentials(&self) {
        self.sim.sim().revoke_credentials();
    }

    async fn platform_view(&self, conversation: ConversationId) -> PlatformView {
        let id = conversation.as_str();
        let applied: Vec<_> = self.sim.sim().received(id).into_iter().filter(|r| r.applied).collect();
        let last = applied.last();
        let agent_side = self.sim.sim().active_integration(id).as_deref() == Some(AGENT_INTEGRATION_ID);
        let handed_to = last
            .filter(|_| agent_side)
            .and_then(|r| r.metadata.get(&self.group_key))
            .and_then(|g| g.as_str().map(str::to_owned).or_else(|| g.as_u64().map(|n| n.to_string())))
            .and_then(|g| QueueId::parse(&g).ok())
            .into_iter()
            .collect();
        let context = last
            .map(|r| {
                r.metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect()
            })
            .unwrap_or_default();
        PlatformView { handed_to, transfers_applied: applied.len(), context, analytics_mark: None }
    }
}
