//! The Sunshine operations behind the ports: startup resolution of the switchboard integrations,
//! `locate` (GetConversation, optionally ListMessages), passControl with its confirming reads, the
//! credentials check and the group availability. Written against the ADR 0004 port shapes
//! ([`Located`], [`Control`], [`PassResult`]); the port traits wrap these.

use std::time::Duration;

use bytes::Bytes;
use handoff_domain::ports::{Missing, PortError, Refusal, UpstreamDetail};
use reqwest::Method;
use serde_json::{json, Map, Value};
use tracing::instrument;

use crate::client::{Api, Call, Reply, Retry};
use crate::config::EndedCheck;
use crate::error::SunshineError;
use crate::stats::Op;
use crate::wire::{
    AvailabilityPage, ConversationResponse, GroupAvailability, Integrations, MessageList, SwitchboardIntegrationList,
    SwitchboardList,
};
use crate::SunshineClient;

/// Most pages of agent availabilities read per group (100 agents a page).
const MAX_AVAILABILITY_PAGES: usize = 20;

/// Who holds the conversation (ADR 0004 `ControlState`, as far as Sunshine shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The bot (or any integration that is not the agent side) is active: transferable.
    BotHolds,
    /// The agent side is active or pending. Sunshine cannot tell waiting from answered, nor the
    /// Zendesk group: `Queued { target: None }`.
    Queued,
    /// No integration is active (and `SUNSHINE_ALLOW_UNCONTROLLED` is off).
    Unheld,
    /// The user ended it (only seen with `SUNSHINE_ENDED_CHECK=messages`).
    Ended,
}

/// What `locate` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The control state.
    pub control: Control,
    /// Whether the agent side has it (active or pending): the read-back (`HandedTo::AgentSide`).
    pub agent_side: bool,
    /// What passControl acts from: the active integration's id; or why there is nothing to hand
    /// off from (the words of the 422 answer).
    pub handle: Result<String, String>,
}

/// How a passControl ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassResult {
    /// A confirming read shows the agent side active.
    Done,
    /// `200 {}`, but no confirming read showed it yet: read back later.
    Accepted,
}

fn invalid_answer(op: Op) -> PortError {
    PortError::transient(format!("unreadable {} answer", op.as_str()), None)
}

/// Maps a final non-2xx answer (api-notes §4, §8; ADR 0004 §9).
fn refused(reply: &Reply, op: Op) -> PortError {
    let status = reply.status.as_u16();
    let code = reply.error_code().unwrap_or_else(|| default_code(status).to_owned());
    match (status, code.as_str()) {
        (404, "conversation_not_found") => PortError::NotFound {
            what: Missing::Conversation,
            refusal: Some(Refusal::new(status, code)),
            detail: UpstreamDetail::new("conversation not found"),
        },
        (409, _) if op == Op::PassControl => PortError::indeterminate(
            "passControl answered 409: a conflicting control change may or may not have applied",
            None,
        ),
        _ => PortError::rejected(status, code, None),
    }
}

fn default_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        _ => "error",
    }
}

fn success(reply: Reply, op: Op) -> Result<Reply, PortError> {
    if reply.status.is_success() {
        Ok(reply)
    } else {
        Err(refused(&reply, op))
    }
}

impl SunshineClient {
    async fn get(&self, op: Op, api: Api, url: url::Url) -> Result<Reply, PortError> {
        let call = Call { op, api, method: Method::GET, url, body: None, retry: Retry::Idempotent };
        success(self.execute(&call).await?, op)
    }

    /// `GET /v2/apps/{appId}`: the credentials work (readiness, `handoff check`).
    ///
    /// # Errors
    /// [`PortError`]: `Rejected { 401, unauthorized }` for bad credentials, `Rejected { 404,
    /// app_not_found }` for a wrong app id.
    #[instrument(skip_all)]
    pub async fn check_credentials(&self) -> Result<(), PortError> {
        self.get(Op::GetApp, Api::Sunshine, self.app_url(&[])).await.map(|_| ())
    }

    /// Lists the switchboards (exactly one expected) and its integrations, resolves
    /// `SUNSHINE_AGENT_INTEGRATION` and `SUNSHINE_BOT_INTEGRATION` (id first, then name) and keeps
    /// the result for `locate` and passControl. Call at startup and from `handoff check`.
    ///
    /// # Errors
    /// [`SunshineError::UnknownIntegration`], [`SunshineError::Switchboards`], or the port error
    /// of a failed call as [`ResolveError::Upstream`].
    #[instrument(skip_all)]
    pub async fn resolve_integrations(&self) -> Result<Integrations, ResolveError> {
        let reply = self.get(Op::ListSwitchboards, Api::Sunshine, self.app_url(&["switchboards"])).await?;
        let boards: SwitchboardList =
            serde_json::from_slice(&reply.body).map_err(|_| invalid_answer(Op::ListSwitchboards))?;
        let [board] = boards.switchboards.as_slice() else {
            return Err(SunshineError::Switchboards(boards.switchboards.len()).into());
        };
        let url = self.app_url(&["switchboards", &board.id, "switchboardIntegrations"]);
        let reply = self.get(Op::ListSwitchboardIntegrations, Api::Sunshine, url).await?;
        let list: SwitchboardIntegrationList =
            serde_json::from_slice(&reply.body).map_err(|_| invalid_answer(Op::ListSwitchboardIntegrations))?;
        let find = |setting: &'static str, given: &str| {
            list.switchboard_integrations
                .iter()
                .find(|i| i.id == given)
                .or_else(|| list.switchboard_integrations.iter().find(|i| i.name == given))
                .map(|i| i.id.clone())
                .ok_or_else(|| SunshineError::UnknownIntegration { setting, given: given.to_owned() })
        };
        let agent_id = find("SUNSHINE_AGENT_INTEGRATION", &self.config.agent_integration)?;
        let bot_id = self.config.bot_integration.as_deref().map(|b| find("SUNSHINE_BOT_INTEGRATION", b)).transpose()?;
        let resolved = Integrations {
            switchboard_id: board.id.clone(),
            switchboard_enabled: board.enabled,
            agent_id,
            bot_id,
            all: list
                .switchboard_integrations
                .iter()
                .map(|i| (i.id.clone(), i.name.clone(), i.integration_type.clone()))
                .collect(),
        };
        *self.integrations.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(resolved.clone());
        Ok(resolved)
    }

    /// The resolved integrations, resolving them now if startup has not.
    async fn resolved(&self) -> Result<Integrations, PortError> {
        let cached = self.integrations.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match cached {
            Some(resolved) => Ok(resolved),
            None => self.resolve_integrations().await.map_err(PortError::from),
        }
    }

    /// Reads who holds `conversation` (ADR 0004 §9, api-notes §10). `hint` is the webhook's
    /// `participantId`: when given it must be the active integration.
    ///
    /// # Errors
    /// `NotFound { conversation }` for 404 `conversation_not_found`; `Rejected`, `RateLimited`,
    /// `Transient` as usual.
    #[instrument(skip_all, fields(conversation_id = %conversation))]
    pub async fn locate_control(&self, conversation: &str, hint: Option<&str>) -> Result<Located, PortError> {
        let integrations = self.resolved().await?;
        let reply =
            self.get(Op::GetConversation, Api::Sunshine, self.app_url(&["conversations", conversation])).await?;
        let parsed: ConversationResponse =
            serde_json::from_slice(&reply.body).map_err(|_| invalid_answer(Op::GetConversation))?;
        let ended = match self.config.ended_check {
            EndedCheck::Off => false,
            EndedCheck::Messages => {
                let url = self.app_url(&["conversations", conversation, "messages"]);
                let reply = self.get(Op::ListMessages, Api::Sunshine, url).await?;
                let list: MessageList =
                    serde_json::from_slice(&reply.body).map_err(|_| invalid_answer(Op::ListMessages))?;
                list.ended_by_user()
            }
        };
        let active = parsed.conversation.active_switchboard_integration.and_then(|a| a.id);
        let pending = parsed.conversation.pending_switchboard_integration.and_then(|p| p.id);
        Ok(classify(&integrations, active, pending, ended, self.config.allow_uncontrolled, hint))
    }

    /// Passes control to the agent-side integration **by id** with `metadata` (never `next`, never
    /// by type, api-notes §4), then reads the conversation up to `confirm_reads` times,
    /// `confirm_interval` apart: `Done` as soon as the agent side is active, else `Accepted`.
    /// Never repeated blindly: an unknown outcome is `Indeterminate`.
    ///
    /// # Errors
    /// `NotFound { conversation }`; `Rejected` (did not happen: 400, 403, another 404, a persistent
    /// 401); `Indeterminate` (timeout or 5xx after sending, 409); `RateLimited`/`Transient` only
    /// when it surely did not happen.
    #[instrument(skip_all, fields(conversation_id = %conversation, keys = metadata.len()))]
    pub async fn pass_control(
        &self,
        conversation: &str,
        metadata: &Map<String, Value>,
    ) -> Result<PassResult, PortError> {
        let integrations = self.resolved().await?;
        let body = json!({ "switchboardIntegration": integrations.agent_id, "metadata": metadata });
        let call = Call {
            op: Op::PassControl,
            api: Api::Sunshine,
            method: Method::POST,
            url: self.app_url(&["conversations", conversation, "passControl"]),
            body: Some(Bytes::from(body.to_string())),
            retry: Retry::Never,
        };
        success(self.execute(&call).await?, Op::PassControl)?;
        for read in 0..self.config.confirm_reads {
            if read > 0 || !self.config.confirm_interval.is_zero() {
                tokio::time::sleep(self.config.confirm_interval).await;
            }
            // A failed confirming read says nothing about the passControl: leave it to the read-back.
            match self.locate_control(conversation, None).await {
                Ok(located) if located.agent_side && located.control == Control::Queued => return Ok(PassResult::Done),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "confirming read failed; the transfer stays accepted");
                    break;
                }
            }
        }
        Ok(PassResult::Accepted)
    }

    /// The messaging availability of a Zendesk group; `None` without Zendesk Support credentials
    /// (capacity unknown, no call). Cached for `capacity_ttl` per group.
    ///
    /// # Errors
    /// `Rejected` (e.g. 401 for bad Support credentials), `RateLimited`, `Transient`.
    #[instrument(skip_all, fields(group = %group))]
    pub async fn group_availability(&self, group: &str) -> Result<Option<GroupAvailability>, PortError> {
        if self.config.support.is_none() {
            return Ok(None);
        }
        let id: u64 = group.parse().map_err(|_| PortError::rejected(400, "invalid_group_id", None))?;
        self.capacity.get(id, || self.fetch_availability(id)).await.map(Some)
    }

    async fn fetch_availability(&self, group: u64) -> Result<GroupAvailability, PortError> {
        let mut sum = GroupAvailability::default();
        let mut after: Option<String> = None;
        for _ in 0..MAX_AVAILABILITY_PAGES {
            let mut url =
                self.support_url(&["agent_availabilities"]).ok_or_else(|| invalid_answer(Op::AgentAvailabilities))?;
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("filter[channel_status]", "messaging:online");
                query.append_pair("page[size]", "100");
                if let Some(cursor) = &after {
                    query.append_pair("page[after]", cursor);
                }
            }
            let reply = self.get(Op::AgentAvailabilities, Api::Support, url).await?;
            let page: AvailabilityPage =
                serde_json::from_slice(&reply.body).map_err(|_| invalid_answer(Op::AgentAvailabilities))?;
            page.add_to(group, &mut sum);
            match (page.meta.has_more, page.meta.after_cursor) {
                (true, Some(cursor)) => after = Some(cursor),
                _ => return Ok(sum),
            }
        }
        tracing::warn!(group, "agent availabilities span more pages than read; capacity counts the first ones");
        Ok(sum)
    }

    /// `GET /api/v2/groups/{id}` (`handoff check`): whether Zendesk knows the group. `None`
    /// without Support credentials.
    ///
    /// # Errors
    /// [`PortError`] other than a 404.
    pub async fn group_exists(&self, group: &str) -> Result<Option<bool>, PortError> {
        let Some(url) = self.support_url(&["groups", group]) else { return Ok(None) };
        let call = Call {
            op: Op::GetGroup,
            api: Api::Support,
            method: Method::GET,
            url,
            body: None,
            retry: Retry::Idempotent,
        };
        let reply = self.execute(&call).await?;
        match reply.status.as_u16() {
            200..=299 => Ok(Some(true)),
            404 => Ok(Some(false)),
            _ => Err(refused(&reply, Op::GetGroup)),
        }
    }

    /// The pause between confirming reads (for the docs and the demo).
    pub fn confirm_interval(&self) -> Duration {
        self.config.confirm_interval
    }
}

/// Why the integrations could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The configuration does not match the app.
    #[error(transparent)]
    Config(#[from] SunshineError),
    /// A call failed.
    #[error(transparent)]
    Upstream(#[from] PortError),
}

impl From<ResolveError> for PortError {
    fn from(error: ResolveError) -> Self {
        match error {
            ResolveError::Upstream(port) => port,
            ResolveError::Config(SunshineError::UnknownIntegration { .. }) => {
                PortError::rejected(404, "switchboard_integration_not_found", None)
            }
            ResolveError::Config(other) => PortError::rejected(400, config_code(&other), None),
        }
    }
}

fn config_code(error: &SunshineError) -> &'static str {
    match error {
        SunshineError::Switchboards(_) => "switchboard_not_found",
        _ => "invalid_configuration",
    }
}

/// The state table of api-notes §10 (pure).
pub(crate) fn classify(
    integrations: &Integrations,
    active: Option<String>,
    pending: Option<String>,
    ended: bool,
    allow_uncontrolled: bool,
    hint: Option<&str>,
) -> Located {
    let agent = integrations.agent_id.as_str();
    let agent_side = active.as_deref() == Some(agent) || pending.as_deref() == Some(agent);
    let (control, handle) = if ended {
        (Control::Ended, Err("the conversation has ended".to_owned()))
    } else if agent_side {
        (Control::Queued, Ok(active.clone().unwrap_or_else(|| agent.to_owned())))
    } else if let Some(active) = active.clone() {
        (Control::BotHolds, Ok(active))
    } else if allow_uncontrolled {
        // passControl needs no "from": the handle names the bot (or the switchboard) for the record.
        let from = integrations.bot_id.clone().unwrap_or_else(|| integrations.switchboard_id.clone());
        (Control::BotHolds, Ok(from))
    } else {
        (Control::Unheld, Err("no participant holds the conversation".to_owned()))
    };
    let handle = match (handle, hint) {
        (Ok(holder), Some(wanted)) if holder != wanted && active.as_deref() != Some(wanted) => {
            Err(format!("participant {wanted} does not hold the conversation"))
        }
        (handle, _) => handle,
    };
    Located { control, agent_side, handle }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "5ef21b86e933b7355c11c604";
    const BOT: &str = "5ef21b86e933b7355c11c601";

    fn integrations() -> Integrations {
        Integrations {
            switchboard_id: "5ef21b86e933b7355c11c600".to_owned(),
            switchboard_enabled: true,
            agent_id: AGENT.to_owned(),
            bot_id: None,
            all: Vec::new(),
        }
    }

    fn some(id: &str) -> Option<String> {
        Some(id.to_owned())
    }

    #[test]
    fn each_observation_maps_to_the_state_of_api_notes_section_10() {
        let i = integrations();
        let bot = classify(&i, some(BOT), None, false, false, None);
        let queued = classify(&i, some(AGENT), None, false, false, None);
        let pending = classify(&i, some(BOT), some(AGENT), false, false, None);
        let unheld = classify(&i, None, None, false, false, None);
        let uncontrolled = classify(&i, None, None, false, true, None);
        let ended = classify(&i, some(BOT), None, true, false, None);
        assert_eq!(bot, Located { control: Control::BotHolds, agent_side: false, handle: Ok(BOT.to_owned()) });
        assert_eq!(queued, Located { control: Control::Queued, agent_side: true, handle: Ok(AGENT.to_owned()) });
        assert_eq!((pending.control, pending.agent_side, pending.handle), (Control::Queued, true, Ok(BOT.to_owned())));
        assert_eq!(unheld.control, Control::Unheld);
        assert_eq!(unheld.handle, Err("no participant holds the conversation".to_owned()));
        assert_eq!(uncontrolled.control, Control::BotHolds);
        assert_eq!((ended.control, ended.handle), (Control::Ended, Err("the conversation has ended".to_owned())));
    }

    #[test]
    fn a_hint_must_name_the_active_integration() {
        let i = integrations();
        let right = classify(&i, some(BOT), None, false, false, Some(BOT));
        let wrong = classify(&i, some(BOT), None, false, false, Some("aaaaaaaaaaaaaaaaaaaaaaaa"));
        assert_eq!(right.handle, Ok(BOT.to_owned()));
        assert_eq!(wrong.handle, Err("participant aaaaaaaaaaaaaaaaaaaaaaaa does not hold the conversation".to_owned()));
        assert_eq!(wrong.control, Control::BotHolds);
    }
}
