//! The simulated org behind one `std::sync::Mutex`: queues, conversations, tokens, faults and the call
//! log. The lock is held only for map operations, never across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::TokenState;
use crate::conversation::{Conversation, ACD, CUSTOMER};
use crate::error::{Result, SimError};
use crate::{Call, ConversationIds, ConversationKind, ConversationSpec, Endpoint, Fault, FaultKind};
use crate::{QueueSpec, SimConfig};

/// A simulated Genesys Cloud org. Cheap to clone (an `Arc` inside); every clone sees the same state.
///
/// Besides serving HTTP through [`crate::router`], it is controlled and inspected in-process: tests
/// arrange queues, conversations and faults here and read back what Genesys received.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimConfig,
    started: Instant,
    state: Mutex<State>,
    /// Notification channels and their sockets.
    hub: crate::notifications::Hub,
    /// How late the latency timer fires, in ns (a moving average), so it can aim that much early.
    timer_late_ns: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) latency: Duration,
    /// Per-token requests per minute (starts as [`SimConfig::rate_limit_per_minute`]).
    pub(crate) rate_limit: Option<u32>,
    pub(crate) tokens: HashMap<String, TokenState>,
    queues: BTreeMap<Uuid, QueueSpec>,
    conversations: HashMap<Uuid, Conversation>,
    unknown: HashSet<Uuid>,
    faults: VecDeque<Fault>,
    calls: VecDeque<Call>,
    counts: [usize; Endpoint::ALL.len()],
    next_seq: u64,
    message_capacity: Option<u32>,
    user_metrics_under_media_filter: bool,
    refuse_flow_replace: Option<String>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim").field("client_id", &self.inner.config.client_id).finish_non_exhaustive()
    }
}

/// A finished call, ready for the log.
#[derive(Debug)]
pub(crate) struct CallRecord {
    pub(crate) endpoint: Endpoint,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
    pub(crate) correlation_id: Uuid,
    pub(crate) latency: Duration,
}

impl Sim {
    /// A fresh org built from `config`.
    pub fn new(config: SimConfig) -> Self {
        let state = State {
            latency: config.latency,
            rate_limit: config.rate_limit_per_minute,
            tokens: HashMap::new(),
            queues: config.queues.iter().map(|q| (q.id, normalised(q.clone()))).collect(),
            conversations: HashMap::new(),
            unknown: HashSet::new(),
            faults: VecDeque::new(),
            calls: VecDeque::new(),
            counts: [0; Endpoint::ALL.len()],
            next_seq: 1,
            message_capacity: config.message_capacity,
            user_metrics_under_media_filter: config.user_metrics_under_media_filter,
            refuse_flow_replace: config.refuse_flow_replace.clone(),
        };
        Self {
            inner: Arc::new(Inner {
                hub: crate::notifications::Hub::new(config.notifications, config.heartbeat),
                config,
                started: Instant::now(),
                state: Mutex::new(state),
                timer_late_ns: AtomicU64::new(0),
            }),
        }
    }

    /// When the simulator started: the clock of [`Call::at`](crate::Call::at).
    pub fn started_at(&self) -> std::time::Instant {
        self.inner.started.into_std()
    }

    /// The configuration the org started from (queues and latency may have changed since).
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    pub(crate) fn hub(&self) -> &crate::notifications::Hub {
        &self.inner.hub
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters to
        // a simulator, so keep serving rather than poisoning every later call.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a queue, or replaces the queue with the same id.
    pub fn add_queue(&self, queue: QueueSpec) {
        let id = queue.id;
        self.state().queues.insert(id, normalised(queue));
        self.queue_changed(id);
    }

    /// Sets a queue's live numbers (on-queue agents are raised to `idle` if needed). Returns false when
    /// the queue does not exist.
    pub fn set_queue_capacity(&self, id: Uuid, idle: u32, waiting: u32, ewt_secs: u32) -> bool {
        let mut state = self.state();
        let Some(queue) = state.queues.get_mut(&id) else {
            return false;
        };
        queue.agent_loads.clear();
        queue.idle_agents = idle;
        queue.on_queue_agents = queue.on_queue_agents.max(idle);
        queue.waiting = waiting;
        queue.estimated_wait_secs = ewt_secs;
        drop(state);
        self.queue_changed(id);
        true
    }

    /// Gives a queue one on-queue agent per entry of `loads`, each carrying that many message
    /// conversations (see [`QueueSpec::agent_loads`]). Returns false when the queue does not exist.
    pub fn set_agent_loads(&self, id: Uuid, loads: Vec<u32>) -> bool {
        let mut state = self.state();
        let Some(queue) = state.queues.get_mut(&id) else {
            return false;
        };
        let mut updated = std::mem::replace(queue, QueueSpec::new(id, "")).with_agent_loads(loads);
        updated = normalised(updated);
        *queue = updated;
        drop(state);
        self.queue_changed(id);
        true
    }

    /// The org's message capacity now (`None`: the utilization has no message entry).
    pub fn message_capacity(&self) -> Option<u32> {
        self.state().message_capacity
    }

    /// Sets the org's message capacity (`GET /api/v2/routing/utilization`).
    pub fn set_message_capacity(&self, capacity: Option<u32>) {
        self.state().message_capacity = capacity;
    }

    /// Whether user metrics come back under a `mediaType` filter (see
    /// [`SimConfig::user_metrics_under_media_filter`](crate::SimConfig::user_metrics_under_media_filter)).
    pub fn user_metrics_under_media_filter(&self) -> bool {
        self.state().user_metrics_under_media_filter
    }

    /// Sets [`Sim::user_metrics_under_media_filter`].
    pub fn set_user_metrics_under_media_filter(&self, on: bool) {
        self.state().user_metrics_under_media_filter = on;
    }

    /// One queue as it is now.
    pub fn queue(&self, id: Uuid) -> Option<QueueSpec> {
        self.state().queues.get(&id).cloned()
    }

    /// All queues as they are now, ordered by id.
    pub fn queues(&self) -> Vec<QueueSpec> {
        self.state().queues.values().cloned().collect()
    }

    /// Creates (or re-creates) a conversation; an id marked unknown becomes known again.
    pub fn create_conversation(&self, spec: ConversationSpec) -> ConversationIds {
        let id = spec.id.unwrap_or_else(Uuid::new_v4);
        let (mut conversation, mut ids) = Conversation::new(id, spec.kind);
        let mut state = self.state();
        if spec.kind == ConversationKind::Queued {
            let queue_id = spec.queue.unwrap_or(crate::SUPPORT_QUEUE);
            // An unknown queue still gets its participant: a test may ask for any queue id.
            let queue = state.queues.get(&queue_id).cloned().unwrap_or_else(|| QueueSpec::new(queue_id, "Unlisted"));
            if let Some(flow) = ids.holder_id {
                conversation.transfer(flow, &queue, "Unattended", false);
            }
            ids.holder_id = conversation.participants.last().map(|p| p.id);
        }
        state.unknown.remove(&id);
        state.conversations.insert(id, conversation);
        ids
    }

    /// Makes every lookup of `conversation_id` answer 404 (and stops auto-creation for it).
    pub fn mark_unknown(&self, conversation_id: Uuid) {
        let mut state = self.state();
        state.conversations.remove(&conversation_id);
        state.unknown.insert(conversation_id);
    }

    /// The conversation as `GET /api/v2/conversations/messages/{id}` returns it, if it exists.
    pub fn conversation(&self, id: Uuid) -> Option<Value> {
        let conversation = self.state().conversations.get(&id).cloned()?;
        serde_json::to_value(conversation).ok()
    }

    /// A participant's attributes (participant data), if conversation and participant exist.
    pub fn participant_attributes(
        &self,
        conversation_id: Uuid,
        participant_id: Uuid,
    ) -> Option<BTreeMap<String, String>> {
        let state = self.state();
        let conversation = state.conversations.get(&conversation_id)?;
        let participant = conversation.participants.iter().find(|p| p.id == participant_id)?;
        Some(participant.attributes.clone())
    }

    /// The conversation's external tag, if one was set.
    pub fn external_tag(&self, conversation_id: Uuid) -> Option<String> {
        self.state().conversations.get(&conversation_id)?.external_tag.clone()
    }

    /// Invalidates every issued token; later API calls with them get 401 `bad.credentials`.
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Waits out a call's `latency` and returns the delay it really added.
    ///
    /// async-io's timer (timerfd) is precise to the microsecond but fires late by the machine's
    /// wake-up time (about 0.15 ms in a VM; tokio's timer rounds up to whole milliseconds and is
    /// about 1.2 ms late). The simulator learns that lateness as a moving average and aims that
    /// much early, so the delay a call sees is `latency` on average, not `latency` plus the timer's
    /// error. Each call's realized delay is in the call log (`latencyUs`), so a benchmark can
    /// show it.
    pub(crate) async fn wait_latency(&self, latency: Duration) -> Duration {
        let late = Duration::from_nanos(self.inner.timer_late_ns.load(Ordering::Relaxed));
        let aim = latency.saturating_sub(late);
        // The wall clock, not tokio's (which tests may pause): this timer is not tokio's.
        let start = std::time::Instant::now();
        async_io::Timer::after(aim).await;
        let realized = start.elapsed();
        let observed = u64::try_from(realized.saturating_sub(aim).as_nanos()).unwrap_or(u64::MAX);
        // A 1/8 moving average; concurrent updates may lose one sample, which does not matter.
        let previous = self.inner.timer_late_ns.load(Ordering::Relaxed);
        let next = previous - previous / 8 + observed.min(latency.as_nanos().try_into().unwrap_or(u64::MAX)) / 8;
        self.inner.timer_late_ns.store(next, Ordering::Relaxed);
        realized
    }

    /// Sets the per-token allowance (calls per minute; `None` is unlimited) from now on.
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        self.state().rate_limit = per_minute;
    }

    /// Sets the latency added to every call from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Queues a fault behind the ones already queued.
    pub fn push_fault(&self, fault: Fault) {
        if fault.times > 0 {
            self.state().faults.push_back(fault);
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// The call log, oldest first (at most [`SimConfig::max_logged_calls`] entries).
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.iter().cloned().collect()
    }

    /// How many calls of `endpoint` were answered since start or the last [`Sim::reset_calls`].
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.state().counts[endpoint.index()]
    }

    /// How many token calls were answered (any status).
    pub fn token_calls(&self) -> usize {
        self.count(Endpoint::Token)
    }

    /// Empties the call log and zeroes the counts (sequence numbers keep counting).
    pub fn reset_calls(&self) {
        let mut state = self.state();
        state.calls.clear();
        state.counts = [0; Endpoint::ALL.len()];
    }

    pub(crate) fn record(&self, record: CallRecord) {
        let at = self.inner.started.elapsed();
        let limit = self.inner.config.max_logged_calls;
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.counts[record.endpoint.index()] += 1;
        if limit == 0 {
            return;
        }
        if state.calls.len() >= limit {
            state.calls.pop_front();
        }
        state.calls.push_back(Call {
            seq,
            endpoint: record.endpoint,
            method: record.method,
            path: record.path,
            status: record.status,
            body: record.body,
            at,
            correlation_id: record.correlation_id,
            latency: record.latency,
        });
    }

    /// Makes a replace of a flow participant answer 400 with `code` (`None`: accepted again); see
    /// [`SimConfig::refuse_flow_replace`](crate::SimConfig::refuse_flow_replace).
    pub fn refuse_flow_replace(&self, code: Option<String>) {
        self.state().refuse_flow_replace = code;
    }

    /// The flow's own Transfer to ACD (what an Architect flow does after an advice): the connected
    /// flow participant of `conversation_id` leaves and a queue participant for `queue_id` joins.
    /// Not an API transfer, so nothing is added to `recentTransfers`. Fails with a message when
    /// the conversation, its flow participant or the queue is missing.
    pub fn flow_transfer(&self, conversation_id: Uuid, queue_id: Uuid) -> std::result::Result<(), String> {
        let mut guard = self.state();
        let State { conversations, queues, .. } = &mut *guard;
        let conversation = conversations.get_mut(&conversation_id).ok_or("no such conversation")?;
        let flow = conversation
            .participants
            .iter()
            .find(|p| p.purpose == crate::conversation::WORKFLOW && p.is_active())
            .map(|p| p.id)
            .ok_or("no connected flow participant")?;
        let queue = queues.get_mut(&queue_id).ok_or("no such queue")?;
        queue.received = queue.received.saturating_add(1);
        if self.inner.config.transfers_wait {
            queue.waiting = queue.waiting.saturating_add(1);
        }
        conversation.transfer(flow, queue, "Unattended", false);
        Ok(())
    }

    /// `GET` a conversation for the API, auto-creating a bot conversation when configured.
    pub(crate) fn lookup_conversation(&self, id: Uuid) -> Result<Conversation> {
        let mut state = self.state();
        if let Some(conversation) = state.conversations.get(&id) {
            return Ok(conversation.clone());
        }
        if !self.inner.config.auto_create_conversations || state.unknown.contains(&id) {
            return Err(SimError::not_found("conversation"));
        }
        let (conversation, _) = Conversation::new(id, ConversationKind::Bot);
        state.conversations.insert(id, conversation.clone());
        Ok(conversation)
    }

    /// Merges `attributes` into a participant's and returns the merged map.
    pub(crate) fn merge_attributes(
        &self,
        conversation_id: Uuid,
        participant_id: Uuid,
        attributes: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut state = self.state();
        let participant = state
            .conversations
            .get_mut(&conversation_id)
            .ok_or_else(|| SimError::not_found("conversation"))?
            .participant_mut(participant_id)
            .ok_or_else(|| SimError::not_found("participant"))?;
        participant.attributes.extend(attributes);
        Ok(participant.attributes.clone())
    }

    /// Replaces `participant_id` by the ACD queue `queue_id` (`None`: not a queue id at all).
    pub(crate) fn replace(
        &self,
        conversation_id: Uuid,
        participant_id: Uuid,
        queue_id: Option<Uuid>,
        transfer_type: &str,
    ) -> Result<()> {
        let mut guard = self.state();
        let State { conversations, queues, refuse_flow_replace, .. } = &mut *guard;
        let conversation =
            conversations.get_mut(&conversation_id).ok_or_else(|| SimError::not_found("conversation"))?;
        let holder = conversation.participant_mut(participant_id).ok_or_else(|| SimError::not_found("participant"))?;
        if let Some(code) = refuse_flow_replace.as_ref().filter(|_| holder.purpose == crate::conversation::WORKFLOW) {
            return Err(SimError::new(
                StatusCode::BAD_REQUEST,
                code.clone(),
                "You can only transfer conversations that are in the connected state.",
            ));
        }
        if holder.purpose == CUSTOMER {
            return Err(SimError::new(
                StatusCode::FORBIDDEN,
                "conversation.error.forbidden.not.active.participant",
                "The participant is not an active participant that can be replaced.",
            ));
        }
        if !holder.is_active() {
            return Err(SimError::new(
                StatusCode::BAD_REQUEST,
                "conversations.error.transfer.not.connected",
                "The participant must be connected to transfer.",
            ));
        }
        let previous_queue = (holder.purpose == ACD).then(|| holder.queue.map(|queue| queue.id)).flatten();
        let queue = queue_id.and_then(|id| queues.get_mut(&id)).ok_or_else(|| {
            SimError::new(
                StatusCode::BAD_REQUEST,
                "conversations.error.queue.not.found",
                "The transfer destination queue was not found.",
            )
        })?;
        queue.received = queue.received.saturating_add(1);
        if self.inner.config.transfers_wait {
            queue.waiting = queue.waiting.saturating_add(1);
        }
        conversation.transfer(participant_id, queue, transfer_type, true);
        // The conversation leaves the queue it waited in, if it was already in one.
        if let Some(previous) = previous_queue.and_then(|id| queues.get_mut(&id)) {
            if self.inner.config.transfers_wait {
                previous.waiting = previous.waiting.saturating_sub(1);
            }
        }
        drop(guard);
        // Both queues' figures changed: subscribed channels are told.
        for id in queue_id.into_iter().chain(previous_queue) {
            self.queue_changed(id);
        }
        Ok(())
    }

    /// Sets a conversation's external tag.
    pub(crate) fn set_external_tag(&self, conversation_id: Uuid, tag: String) -> Result<()> {
        let mut state = self.state();
        let conversation =
            state.conversations.get_mut(&conversation_id).ok_or_else(|| SimError::not_found("conversation"))?;
        conversation.external_tag = Some(tag);
        Ok(())
    }
}

impl State {
    /// Takes the first queued fault matching `endpoint`, counting its `times` down.
    pub(crate) fn take_fault(&mut self, endpoint: Endpoint) -> Option<FaultKind> {
        let index = self.faults.iter().position(|f| f.matches(endpoint))?;
        let fault = self.faults.get_mut(index)?;
        fault.times = fault.times.saturating_sub(1);
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(kind)
    }
}

fn normalised(mut queue: QueueSpec) -> QueueSpec {
    if !queue.agent_loads.is_empty() {
        queue.idle_agents =
            u32::try_from(queue.agent_loads.iter().filter(|load| **load == 0).count()).unwrap_or(u32::MAX);
        queue.on_queue_agents = u32::try_from(queue.agent_loads.len()).unwrap_or(u32::MAX);
    }
    queue.on_queue_agents = queue.on_queue_agents.max(queue.idle_agents);
    queue
}
