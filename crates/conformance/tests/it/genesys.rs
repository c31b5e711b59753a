//! The Genesys harness: a `GenesysClient` against a fresh `genesys-sim` on 127.0.0.1, read back
//! through the simulator's in-process controls and call log.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use genesys_sim::{ConversationKind, ConversationSpec, Endpoint, Fault, FaultKind, QueueSpec, SimConfig, SimHandle};
use handoff_conformance::{Harness, HarnessOptions, Op, PlatformView, SimFault, SimState};
use handoff_domain::ports::{AnalyticsPort, QueuePort, TransferPort};
use handoff_domain::{ConversationId, QueueId};
use handoff_genesys::{GenesysClient, GenesysConfig};
use secrecy::SecretString;
use serde_json::Value;
use url::Url;
use uuid::Uuid;

/// `handoff-genesys` pointed at its own `genesys-sim`.
pub(crate) struct GenesysHarness {
    sim: SimHandle,
    client: Arc<GenesysClient>,
    options: HarnessOptions,
}

fn endpoint(op: Op) -> Endpoint {
    match op {
        Op::Locate => Endpoint::GetConversation,
        Op::WriteContext => Endpoint::PatchAttributes,
        Op::Transfer => Endpoint::Replace,
        Op::Capacity => Endpoint::ObservationsQuery,
        Op::Analytics => Endpoint::PutTags,
    }
}

fn queue(id: Uuid) -> QueueId {
    QueueId::parse(&id.to_string()).expect("a UUID is a queue id")
}

fn conversation_id(id: Uuid) -> ConversationId {
    ConversationId::parse(&id.to_string()).expect("a UUID is a conversation id")
}

fn uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).expect("Genesys ids are UUIDs")
}

fn queue_of(value: &Value) -> Option<QueueId> {
    value.as_str().and_then(|id| QueueId::parse(id).ok())
}

#[async_trait]
impl Harness for GenesysHarness {
    const NAME: &'static str = "genesys";

    async fn start(options: HarnessOptions) -> Self {
        let sim = genesys_sim::spawn(SimConfig::default()).await.expect("genesys-sim starts on 127.0.0.1");
        let base = Url::parse(&sim.base_url()).expect("the simulator's URL");
        let defaults = SimConfig::default();
        let mut config =
            GenesysConfig::new(defaults.client_id, SecretString::from(defaults.client_secret), base.clone(), base);
        config.attempt_timeout = options.attempt_timeout;
        config.total_budget = options.budget;
        let client = GenesysClient::shared(config).expect("a valid client configuration");
        Self { sim, client, options }
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
        queue(genesys_sim::SUPPORT_QUEUE)
    }

    fn unknown_target(&self) -> QueueId {
        queue(Uuid::new_v4())
    }

    async fn target_without_capacity(&self) -> Option<QueueId> {
        let id = Uuid::new_v4();
        self.sim.sim().add_queue(QueueSpec { observed: false, ..QueueSpec::new(id, "Unobserved") });
        Some(queue(id))
    }

    async fn conversation(&self, state: SimState) -> Option<ConversationId> {
        let spec = match state {
            SimState::BotHolds => ConversationSpec::new(ConversationKind::Bot),
            SimState::Queued => ConversationSpec::queued(uuid(self.target().as_str())),
            SimState::AgentHas => ConversationSpec::new(ConversationKind::AgentHeld),
            SimState::Unheld => ConversationSpec::new(ConversationKind::NoHolder),
            SimState::Ended => ConversationSpec::new(ConversationKind::Ended),
        };
        Some(conversation_id(self.sim.sim().create_conversation(spec).conversation_id))
    }

    async fn unknown_conversation(&self) -> ConversationId {
        let id = Uuid::new_v4();
        self.sim.sim().mark_unknown(id);
        conversation_id(id)
    }

    async fn fault(&self, op: Op, fault: SimFault, times: u32) {
        let kind = match fault {
            SimFault::Status { status, code, retry_after } => {
                FaultKind::Status { status, code: code.to_owned(), retry_after_secs: retry_after }
            }
            // Applied, answered well after the adapter gave up.
            SimFault::ApplyThenTimeout => FaultKind::ApplyThenDelay(self.options.attempt_timeout * 3),
            SimFault::TimeoutWithoutApplying => FaultKind::Hang,
        };
        self.sim.sim().push_fault(Fault::new(endpoint(op), kind).times(times));
    }

    async fn calls(&self, op: Op) -> usize {
        self.sim.sim().count(endpoint(op))
    }

    async fn credentials_issued(&self) -> usize {
        self.sim.sim().token_calls()
    }

    async fn revoke_credentials(&self) {
        self.sim.sim().revoke_tokens();
    }

    async fn platform_view(&self, conversation: ConversationId) -> PlatformView {
        let id = uuid(conversation.as_str());
        let Some(json) = self.sim.sim().conversation(id) else {
            return PlatformView::default();
        };
        let participants = json["participants"].as_array().cloned().unwrap_or_default();
        let transfers = json["recentTransfers"].as_array().cloned().unwrap_or_default();
        let mut handed_to: Vec<QueueId> = participants
            .iter()
            .filter(|p| p["purpose"] == "acd" && p["state"] == "connected")
            .filter_map(|p| queue_of(&p["queue"]["id"]))
            .collect();
        handed_to.extend(transfers.iter().filter_map(|t| queue_of(&t["destination"]["queueId"])));
        let context = participants
            .iter()
            .find(|p| p["purpose"] == "customer")
            .and_then(|p| p["attributes"].as_object())
            .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_else(BTreeMap::new);
        PlatformView {
            handed_to,
            transfers_applied: transfers.len(),
            context,
            analytics_mark: self.sim.sim().external_tag(id),
        }
    }
}
