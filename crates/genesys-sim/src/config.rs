//! Simulator configuration and the well-known queues of the default org.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// "Support": 3 idle of 5 on-queue agents, nobody waiting, estimated wait 30 s.
pub const SUPPORT_QUEUE: Uuid = Uuid::from_u128(0x7b0a2a4e_5f1c_4a53_9d0e_2f6a1c3b9d01);
/// "Billing": 2 idle of 4 on-queue agents, 1 waiting, estimated wait 45 s.
pub const BILLING_QUEUE: Uuid = Uuid::from_u128(0x7b0a2a4e_5f1c_4a53_9d0e_2f6a1c3b9d02);
/// "Overflow": 5 idle of 5 on-queue agents, nobody waiting, estimated wait 10 s.
pub const OVERFLOW_QUEUE: Uuid = Uuid::from_u128(0x7b0a2a4e_5f1c_4a53_9d0e_2f6a1c3b9d03);
/// "After hours": no agents on queue, 4 waiting, estimated wait 900 s (no capacity).
pub const EMPTY_QUEUE: Uuid = Uuid::from_u128(0x7b0a2a4e_5f1c_4a53_9d0e_2f6a1c3b9d04);

/// Default upper bound of [`SimConfig::max_logged_calls`].
pub const DEFAULT_MAX_LOGGED_CALLS: usize = 100_000;

/// One routing queue and its live numbers.
///
/// `idle_agents` is kept at or below `on_queue_agents`; the simulator reports `on_queue_agents` as the
/// queue's member count too (it models no off-queue members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Queue id.
    pub id: Uuid,
    /// Display name (`GET /api/v2/routing/queues/{id}` `name`).
    pub name: String,
    /// Agents on queue and idle (`oOnQueueUsers` qualifier `IDLE`).
    pub idle_agents: u32,
    /// Agents on queue, idle or not (`INTERACTING` is the difference).
    pub on_queue_agents: u32,
    /// Conversations waiting (`oWaiting`); a successful transfer into the queue adds one when
    /// [`SimConfig::transfers_wait`] is on.
    pub waiting: u32,
    /// Transfers this queue received (every successful replace into it).
    #[serde(default)]
    pub received: u32,
    /// Estimated wait time in seconds.
    pub estimated_wait_secs: u32,
    /// Whether the queue has message media settings (Web Messaging can be routed to it).
    pub accepts_messages: bool,
    /// The message conversations each on-queue agent carries, one entry per agent; its routing
    /// status follows from its load (0 → `IDLE`, more → `INTERACTING`), and `idle_agents` /
    /// `on_queue_agents` are derived from it. Empty (the default): the agents are
    /// `idle_agents` idle ones and `on_queue_agents − idle_agents` busy ones, each carrying the
    /// org's full message capacity (so "nobody idle" still means "no free slot").
    #[serde(default)]
    pub agent_loads: Vec<u32>,
    /// Message conversations offered to an agent right now (`oAlerting`).
    #[serde(default)]
    pub alerting: u32,
    /// Whether the observation query reports this queue (default). `false`: a queue that exists
    /// (replaces into it succeed) but whose observations answer no group, so every figure is
    /// unknown: a target without a capacity source.
    #[serde(default = "observed")]
    pub observed: bool,
}

fn observed() -> bool {
    true
}

impl QueueSpec {
    /// An empty queue (no agents, nobody waiting, no wait) that accepts messages.
    pub fn new(id: Uuid, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            idle_agents: 0,
            on_queue_agents: 0,
            waiting: 0,
            received: 0,
            estimated_wait_secs: 0,
            accepts_messages: true,
            agent_loads: Vec::new(),
            alerting: 0,
            observed: true,
        }
    }

    /// This queue with one on-queue agent per entry of `loads`, each carrying that many message
    /// conversations.
    #[must_use]
    pub fn with_agent_loads(mut self, loads: Vec<u32>) -> Self {
        self.agent_loads = loads;
        self
    }

    /// Message conversations being handled in the queue (`oInteracting`): the agents' loads, or
    /// with no loads given, `message_capacity` (1 when unknown) for each busy agent.
    pub fn interacting(&self, message_capacity: Option<u32>) -> u32 {
        if self.agent_loads.is_empty() {
            let busy = self.on_queue_agents.saturating_sub(self.idle_agents);
            busy.saturating_mul(message_capacity.unwrap_or(1))
        } else {
            self.agent_loads.iter().fold(0u32, |sum, load| sum.saturating_add(*load))
        }
    }

    fn staffed(id: Uuid, name: &str, agents: [u32; 2], waiting: u32, ewt: u32) -> Self {
        Self {
            idle_agents: agents[0],
            on_queue_agents: agents[1],
            waiting,
            estimated_wait_secs: ewt,
            ..Self::new(id, name)
        }
    }

    /// The queues of [`SimConfig::default`]: Support, Billing, Overflow and After hours.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::staffed(SUPPORT_QUEUE, "Support", [3, 5], 0, 30),
            Self::staffed(BILLING_QUEUE, "Billing", [2, 4], 1, 45),
            Self::staffed(OVERFLOW_QUEUE, "Overflow", [5, 5], 0, 10),
            Self::staffed(EMPTY_QUEUE, "After hours", [0, 0], 4, 900),
        ]
    }
}

/// How the simulated org behaves. Build with struct update syntax:
/// `SimConfig { latency: Duration::from_millis(5), ..SimConfig::default() }`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// OAuth client id accepted by `POST /oauth/token` (default `sim-client`).
    pub client_id: String,
    /// OAuth client secret accepted by `POST /oauth/token` (default `sim-secret`).
    pub client_secret: String,
    /// Lifetime of issued tokens, reported as `expires_in` (default 24 h).
    pub token_ttl: Duration,
    /// Delay added to every Genesys call, the token call included (default none).
    pub latency: Duration,
    /// Whether an unknown conversation id is created as a bot conversation on first
    /// `GET /api/v2/conversations/messages/{id}` (default true).
    pub auto_create_conversations: bool,
    /// Per-token requests per fixed 60 s window; `None` (default) is unlimited.
    pub rate_limit_per_minute: Option<u32>,
    /// Whether `POST /api/v2/notifications/channels` creates channels (default true); false plays
    /// an org that refuses them.
    pub notifications: bool,
    /// Lifetime of a notification channel, reported as `expires` (default 24 h).
    pub channel_ttl: Duration,
    /// Heartbeat interval of notification sockets (default 30 s).
    pub heartbeat: Duration,
    /// Permissions the OAuth client lacks, e.g. `conversation:communication:blindTransfer`.
    pub missing_permissions: Vec<String>,
    /// The org's queues (default [`QueueSpec::defaults`]).
    pub queues: Vec<QueueSpec>,
    /// How many calls the call log keeps (oldest dropped first); [`crate::Sim::count`] is exact regardless.
    pub max_logged_calls: usize,
    /// The org's message `maximumCapacity` (`GET /api/v2/routing/utilization`); default 4, the
    /// Genesys default. `None`: the utilization has no message entry.
    pub message_capacity: Option<u32>,
    /// Whether an observation query filtered by `mediaType` still answers the user metrics (in a
    /// separate `{queueId}` group, as the reference shows; default true). Off plays the other
    /// reading: under a `mediaType` filter no user metrics come back at all.
    pub user_metrics_under_media_filter: bool,
    /// Whether a conversation transferred into a queue stays there waiting (`oWaiting` + 1, and
    /// − 1 for the queue it left). Off (the default) plays an org in steady state: agents take
    /// transferred conversations as fast as they arrive, so a queue's figures stay what the test
    /// set, and a burst is not refused for slots it filled itself. [`QueueSpec::received`]
    /// counts the transfers either way.
    pub transfers_wait: bool,
    /// When set, a replace of a flow participant (`purpose: "workflow"`, a conversation still in
    /// its Architect flow) is refused with 400 and this error code, e.g.
    /// [`FLOW_REPLACE_REFUSED`]: the simulator playing an org where Genesys does not accept
    /// transfer mode's replace. Agent and ACD participants are still replaced. Default `None`
    /// (accepted). Changeable at run time ([`crate::Sim::refuse_flow_replace`], admin API).
    pub refuse_flow_replace: Option<String>,
}

/// The code the simulator refuses a flow participant's replace with by default: the replace
/// operation's documented 400 `conversations.error.transfer.not.connected` ("You can only transfer
/// conversations that are in the connected state", swagger `x-inin-error-codes`). Whether Genesys
/// refuses a running flow's participant at all, and with which code, is not documented: the knob
/// takes any code, and tests play `bad.request` too.
pub const FLOW_REPLACE_REFUSED: &str = "conversations.error.transfer.not.connected";

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            client_id: "sim-client".to_owned(),
            client_secret: "sim-secret".to_owned(),
            token_ttl: Duration::from_secs(86_400),
            latency: Duration::ZERO,
            auto_create_conversations: true,
            rate_limit_per_minute: None,
            notifications: true,
            channel_ttl: Duration::from_secs(86_400),
            heartbeat: Duration::from_secs(30),
            missing_permissions: Vec::new(),
            queues: QueueSpec::defaults(),
            max_logged_calls: DEFAULT_MAX_LOGGED_CALLS,
            message_capacity: Some(4),
            user_metrics_under_media_filter: true,
            transfers_wait: false,
            refuse_flow_replace: None,
        }
    }
}
