//! [`SimConfig`]: the app, its key, the switchboard and its integrations, the Zendesk groups and
//! agents, and the knobs that make the simulator play one answer or the other where the public
//! documentation leaves a question open.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The app id (the spec's example app id).
pub const APP_ID: &str = "5d8cff3cd55b040010928b5b";
/// The app key id (an `app_` key, as app-scoped JWTs need; the spec's example key id).
pub const KEY_ID: &str = "app_5723a347f82ba0516cb4ea34";
/// The app key secret.
pub const KEY_SECRET: &str = "sim-secret-5XJ85yjUtRcaQu";
/// The only switchboard.
pub const SWITCHBOARD_ID: &str = "5ef21b86e933b7355c11c600";
/// The bot's switchboard integration (`name: bot`, `integrationType: custom`), the default one.
pub const BOT_INTEGRATION_ID: &str = "5ef21b86e933b7355c11c601";
/// The bot integration's name.
pub const BOT_INTEGRATION_NAME: &str = "bot";
/// The Agent Workspace's switchboard integration (the spec's example: id, `zd-agentWorkspace`,
/// `zd:agentWorkspace`).
pub const AGENT_INTEGRATION_ID: &str = "5ef21b86e933b7355c11c604";
/// The Agent Workspace integration's name.
pub const AGENT_INTEGRATION_NAME: &str = "zd-agentWorkspace";
/// The Agent Workspace integration's type.
pub const AGENT_INTEGRATION_TYPE: &str = "zd:agentWorkspace";
/// Zendesk Support e-mail for the agent-availability and group calls (`{email}/token:{token}`).
pub const SUPPORT_EMAIL: &str = "handoff@example.com";
/// Zendesk Support API token.
pub const SUPPORT_TOKEN: &str = "sim-support-token";
/// A Zendesk group with one idle and one busy messaging agent online.
pub const SUPPORT_GROUP: u64 = 360_001;
/// A Zendesk group with two idle agents online.
pub const BILLING_GROUP: u64 = 360_002;
/// A Zendesk group with no agent online.
pub const EMPTY_GROUP: u64 = 360_003;
/// Default size limit of passControl metadata, in bytes of serialized JSON ("4KB", spec
/// `passControlBody.metadata`; how it is measured is UNCONFIRMED, api-notes §6).
pub const DEFAULT_METADATA_LIMIT: usize = 4096;
/// Default number of calls kept in the call log.
pub const DEFAULT_MAX_LOGGED_CALLS: usize = 10_000;

/// One agent's messaging availability (Zendesk Agent Availability API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// The agent (user) id.
    pub id: u64,
    /// The groups the agent belongs to.
    pub group_ids: Vec<u64>,
    /// The `messaging` channel status: `online`, `away`, `transfers_only`, `offline`.
    pub status: String,
    /// Messaging work items assigned.
    #[serde(default)]
    pub work_item_count: u32,
    /// Messaging capacity (only with Omnichannel Contact Center; `None`: not returned).
    #[serde(default)]
    pub max_capacity: Option<u32>,
}

impl AgentSpec {
    /// An online messaging agent of `group` carrying `work_items` of `max_capacity`.
    pub fn online(id: u64, group: u64, work_items: u32, max_capacity: Option<u32>) -> Self {
        Self { id, group_ids: vec![group], status: "online".to_owned(), work_item_count: work_items, max_capacity }
    }
}

/// A Zendesk Support group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The group id.
    pub id: u64,
    /// Its name.
    pub name: String,
}

/// How the simulated app starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The app id every path must carry (others: 404 `app_not_found`).
    pub app_id: String,
    /// The app key id (Basic user name; JWT `kid`).
    pub key_id: String,
    /// The app key secret (Basic password; JWT HS256 key).
    pub key_secret: String,
    /// Zendesk Support credentials for `/api/v2/…`.
    pub support_email: String,
    /// Zendesk Support API token.
    pub support_token: String,
    /// Unknown conversation ids are created as bot conversations on their first read.
    pub auto_create_conversations: bool,
    /// Every accepted passControl applies this long after its `200` (zero: before it). Plays
    /// "the first read after passControl does / does not show the agent side yet" (api-notes §4).
    pub apply_delay: Duration,
    /// passControl on a conversation the user ended: `None` accepts it; `Some(code)` answers
    /// 400 with that code (api-notes §3 leaves it open).
    pub refuse_ended: Option<String>,
    /// passControl metadata larger than this (serialized JSON bytes) is refused with 400.
    pub metadata_limit: usize,
    /// Latency added to every call.
    pub latency: Duration,
    /// Calls kept in the call log (0: none; counts are kept anyway).
    pub max_logged_calls: usize,
    /// Zendesk groups.
    pub groups: Vec<GroupSpec>,
    /// Agents and their messaging availability.
    pub agents: Vec<AgentSpec>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            app_id: APP_ID.to_owned(),
            key_id: KEY_ID.to_owned(),
            key_secret: KEY_SECRET.to_owned(),
            support_email: SUPPORT_EMAIL.to_owned(),
            support_token: SUPPORT_TOKEN.to_owned(),
            auto_create_conversations: true,
            apply_delay: Duration::ZERO,
            refuse_ended: None,
            metadata_limit: DEFAULT_METADATA_LIMIT,
            latency: Duration::ZERO,
            max_logged_calls: DEFAULT_MAX_LOGGED_CALLS,
            groups: vec![
                GroupSpec { id: SUPPORT_GROUP, name: "Support".to_owned() },
                GroupSpec { id: BILLING_GROUP, name: "Billing".to_owned() },
                GroupSpec { id: EMPTY_GROUP, name: "Night shift".to_owned() },
            ],
            agents: vec![
                AgentSpec::online(1001, SUPPORT_GROUP, 0, Some(2)),
                AgentSpec::online(1002, SUPPORT_GROUP, 2, Some(2)),
                AgentSpec::online(1003, BILLING_GROUP, 0, Some(3)),
                AgentSpec::online(1004, BILLING_GROUP, 1, Some(3)),
                AgentSpec { status: "offline".to_owned(), ..AgentSpec::online(1005, EMPTY_GROUP, 0, Some(2)) },
            ],
        }
    }
}
