//! Private Sunshine and Zendesk Support DTOs (api-notes §3, §5, §11) and their reading. Unknown
//! fields are ignored; fields the spec marks optional are `Option`.

use serde::Deserialize;

/// `switchboardIntegrationWebhook` (spec): the active / pending integration of a conversation.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IntegrationRef {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) integration_type: Option<String>,
}

/// `conversation` (spec `conversationTruncated` + `conversation`): only what `locate` reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Conversation {
    pub(crate) id: Option<String>,
    pub(crate) active_switchboard_integration: Option<IntegrationRef>,
    pub(crate) pending_switchboard_integration: Option<IntegrationRef>,
}

#[derive(Deserialize)]
pub(crate) struct ConversationResponse {
    pub(crate) conversation: Conversation,
}

/// `switchboard` (spec L6750).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Switchboard {
    pub(crate) id: String,
    pub(crate) enabled: bool,
}

#[derive(Deserialize)]
pub(crate) struct SwitchboardList {
    pub(crate) switchboards: Vec<Switchboard>,
}

/// `switchboardIntegration` (spec L6811).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SwitchboardIntegration {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) integration_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SwitchboardIntegrationList {
    pub(crate) switchboard_integrations: Vec<SwitchboardIntegration>,
}

/// The integrations resolved from the settings at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrations {
    /// The switchboard.
    pub switchboard_id: String,
    /// Whether it is enabled.
    pub switchboard_enabled: bool,
    /// The agent side (`SUNSHINE_AGENT_INTEGRATION`) as an id.
    pub agent_id: String,
    /// The bot (`SUNSHINE_BOT_INTEGRATION`) as an id, when configured.
    pub bot_id: Option<String>,
    /// Every integration of the switchboard: `(id, name, integrationType)`.
    pub all: Vec<(String, String, String)>,
}

/// A message of `GET …/messages`: only its activity type.
#[derive(Deserialize)]
pub(crate) struct Message {
    pub(crate) activity: Option<Activity>,
}

#[derive(Deserialize)]
pub(crate) struct Activity {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct MessageList {
    #[serde(default)]
    pub(crate) messages: Vec<Message>,
}

impl MessageList {
    /// Whether the latest activity message is `conversation:endedByUser` (spec `endedByUser`).
    pub(crate) fn ended_by_user(&self) -> bool {
        self.messages
            .iter()
            .rev()
            .find_map(|m| m.activity.as_ref())
            .and_then(|a| a.kind.as_deref())
            .is_some_and(|kind| kind == "conversation:endedByUser")
    }
}

/// `GET /api/v2/agent_availabilities` (JSON:API, zd-availability).
#[derive(Deserialize)]
pub(crate) struct AvailabilityPage {
    #[serde(default)]
    pub(crate) data: Vec<AgentAvailability>,
    #[serde(default)]
    pub(crate) included: Vec<Included>,
    #[serde(default)]
    pub(crate) meta: PageMeta,
}

#[derive(Deserialize, Default)]
pub(crate) struct PageMeta {
    #[serde(default)]
    pub(crate) has_more: bool,
    pub(crate) after_cursor: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AgentAvailability {
    pub(crate) id: String,
    pub(crate) attributes: AgentAttributes,
}

#[derive(Deserialize)]
pub(crate) struct AgentAttributes {
    #[serde(default)]
    pub(crate) group_ids: Vec<u64>,
}

#[derive(Deserialize)]
pub(crate) struct Included {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) attributes: ChannelAttributes,
}

#[derive(Deserialize, Default)]
pub(crate) struct ChannelAttributes {
    pub(crate) name: Option<String>,
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) work_item_count: u32,
    pub(crate) max_capacity: Option<u32>,
}

/// Messaging availability of one group, summed over agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupAvailability {
    /// Agents of the group whose messaging channel is `online`.
    pub online: u32,
    /// Of those, agents with room: `work_item_count < max_capacity` (or no work item when
    /// `max_capacity` is not returned).
    pub idle: u32,
    /// Messaging work items the online agents carry.
    pub work_items: u32,
}

impl AvailabilityPage {
    /// Adds this page's agents of `group` to `sum` (channel `messaging`, status `online`).
    pub(crate) fn add_to(&self, group: u64, sum: &mut GroupAvailability) {
        for agent in self.data.iter().filter(|a| a.attributes.group_ids.contains(&group)) {
            let channel_id = format!("{}|channels|messaging", agent.id);
            let channel = self.included.iter().find(|i| {
                i.kind == "channels" && i.id == channel_id && i.attributes.name.as_deref() == Some("messaging")
            });
            let Some(channel) = channel.map(|c| &c.attributes) else { continue };
            if channel.status.as_deref() != Some("online") {
                continue;
            }
            sum.online += 1;
            sum.work_items = sum.work_items.saturating_add(channel.work_item_count);
            let room = match channel.max_capacity {
                Some(max) => channel.work_item_count < max,
                None => channel.work_item_count == 0,
            };
            if room {
                sum.idle += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_without_switchboard_fields_reads_as_none() {
        let body = br#"{"conversation":{"id":"67a0ecf8f0305f4a391e9db1","type":"personal","isDefault":true}}"#;
        let parsed: ConversationResponse = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed.conversation.active_switchboard_integration, None);
        let body = br#"{"conversation":{"id":"x","activeSwitchboardIntegration":{"id":"a","name":"bot","integrationId":"i","integrationType":"custom"},"pendingSwitchboardIntegration":null}}"#;
        let parsed: ConversationResponse = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed.conversation.active_switchboard_integration.and_then(|a| a.id).as_deref(), Some("a"));
        assert_eq!(parsed.conversation.pending_switchboard_integration, None);
    }

    #[test]
    fn only_online_messaging_agents_of_the_group_count_and_idle_means_room() {
        let body = br#"{
          "data":[
            {"type":"agent_availabilities","id":"agent_availabilities|1","attributes":{"agent_id":1,"group_ids":[7]}},
            {"type":"agent_availabilities","id":"agent_availabilities|2","attributes":{"agent_id":2,"group_ids":[7,8]}},
            {"type":"agent_availabilities","id":"agent_availabilities|3","attributes":{"agent_id":3,"group_ids":[8]}},
            {"type":"agent_availabilities","id":"agent_availabilities|4","attributes":{"agent_id":4,"group_ids":[7]}},
            {"type":"agent_availabilities","id":"agent_availabilities|5","attributes":{"agent_id":5,"group_ids":[7]}}
          ],
          "included":[
            {"type":"channels","id":"agent_availabilities|1|channels|messaging","attributes":{"name":"messaging","status":"online","work_item_count":1,"max_capacity":2}},
            {"type":"channels","id":"agent_availabilities|2|channels|messaging","attributes":{"name":"messaging","status":"online","work_item_count":2,"max_capacity":2}},
            {"type":"channels","id":"agent_availabilities|3|channels|messaging","attributes":{"name":"messaging","status":"online","work_item_count":0}},
            {"type":"channels","id":"agent_availabilities|4|channels|messaging","attributes":{"name":"messaging","status":"away","work_item_count":0}},
            {"type":"channels","id":"agent_availabilities|5|channels|messaging","attributes":{"name":"messaging","status":"online","work_item_count":0}}
          ],
          "meta":{"has_more":false}
        }"#;
        let page: AvailabilityPage = serde_json::from_slice(body).unwrap();
        let mut sum = GroupAvailability::default();
        page.add_to(7, &mut sum);
        assert_eq!(sum, GroupAvailability { online: 3, idle: 2, work_items: 3 });
    }
}
