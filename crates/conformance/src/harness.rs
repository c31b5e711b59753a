//! What a scenario needs from an adapter and its simulator: the [`Harness`] each adapter's test
//! binary implements once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use handoff_domain::ports::{AnalyticsPort, QueuePort, TransferPort};
use handoff_domain::{ConversationId, QueueId};

/// How the adapter under test is configured: small budgets so faults play out in test time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HarnessOptions {
    /// Time limit of one upstream attempt.
    pub attempt_timeout: Duration,
    /// Time limit of one operation, retries and waits included.
    pub budget: Duration,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        Self { attempt_timeout: Duration::from_millis(400), budget: Duration::from_millis(2_500) }
    }
}

/// Who holds a conversation the simulator is asked to create (ADR 0004 §3 `ControlState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimState {
    /// The bot or flow holds it: transferable.
    BotHolds,
    /// Waiting for an agent at the harness's [`Harness::target`].
    Queued,
    /// A human agent handles it.
    AgentHas,
    /// Nobody holds it.
    Unheld,
    /// It is over.
    Ended,
}

impl SimState {
    /// Every state, in declaration order.
    pub const ALL: [Self; 5] = [Self::BotHolds, Self::Queued, Self::AgentHas, Self::Unheld, Self::Ended];
}

/// The port operations a scenario counts and injects faults into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `TransferPort::locate`.
    Locate,
    /// `TransferPort::write_context`.
    WriteContext,
    /// `TransferPort::transfer`.
    Transfer,
    /// `QueuePort::capacity`.
    Capacity,
    /// `AnalyticsPort::record`.
    Analytics,
}

impl Op {
    /// Every operation, in declaration order.
    pub const ALL: [Self; 5] = [Self::Locate, Self::WriteContext, Self::Transfer, Self::Capacity, Self::Analytics];
}

/// A fault the simulator plays on the next calls of an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimFault {
    /// Answer `status` with the platform's error `code`, plus `Retry-After` (seconds) when given;
    /// the operation does not happen.
    Status {
        /// HTTP status.
        status: u16,
        /// The platform's error code.
        code: &'static str,
        /// `Retry-After` in whole seconds.
        retry_after: Option<u64>,
    },
    /// Apply the operation, then answer only after the adapter's attempt timeout.
    ApplyThenTimeout,
    /// Never answer (nothing is applied).
    TimeoutWithoutApplying,
}

/// What the platform shows for a conversation, read from the simulator (not through the adapter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformView {
    /// The targets it shows the conversation handed to (queue participants, recorded transfers).
    pub handed_to: Vec<QueueId>,
    /// Transfers the platform applied to it.
    pub transfers_applied: usize,
    /// The context the platform holds for it (participant data, transfer metadata).
    pub context: BTreeMap<String, String>,
    /// The analytics mark the platform shows (Genesys: the external tag), if any.
    pub analytics_mark: Option<String>,
}

/// An adapter pointed at a fresh simulator, with the simulator's controls. One per scenario.
#[async_trait]
pub trait Harness: Send + Sync + Sized + 'static {
    /// `genesys` | `sunshine`: also the module name of the generated tests.
    const NAME: &'static str;

    /// A fresh simulator on 127.0.0.1:0 and an adapter pointed at it.
    async fn start(options: HarnessOptions) -> Self;

    /// The adapter as the use case's transfer port.
    fn transfer(&self) -> Arc<dyn TransferPort>;

    /// The adapter as the use case's queue port.
    fn queue(&self) -> Arc<dyn QueuePort>;

    /// The adapter as the use case's analytics port.
    fn analytics(&self) -> Arc<dyn AnalyticsPort>;

    /// A target the platform knows and that has capacity.
    fn target(&self) -> QueueId;

    /// A well-formed target the platform does not know.
    fn unknown_target(&self) -> QueueId;

    /// A target that exists but has no capacity source (every figure unknown), when the platform
    /// can have one.
    async fn target_without_capacity(&self) -> Option<QueueId>;

    /// A new conversation in `state` (`Queued` at [`Harness::target`]); `None` when the platform
    /// cannot produce or observe that state.
    async fn conversation(&self, state: SimState) -> Option<ConversationId>;

    /// A well-formed conversation id the platform does not know.
    async fn unknown_conversation(&self) -> ConversationId;

    /// Plays `fault` on the next `times` calls of `op`.
    async fn fault(&self, op: Op, fault: SimFault, times: u32);

    /// Answered calls of `op` so far (the simulator's call log).
    async fn calls(&self, op: Op) -> usize;

    /// Credentials minted or fetched so far (Genesys: token calls).
    async fn credentials_issued(&self) -> usize;

    /// Makes every credential issued so far invalid.
    async fn revoke_credentials(&self);

    /// What the platform now shows for `conversation`.
    async fn platform_view(&self, conversation: ConversationId) -> PlatformView;
}

/// Answered calls of every operation, for "nothing was called" assertions.
pub async fn all_calls<H: Harness>(harness: &H) -> Vec<(Op, usize)> {
    let mut counts = Vec::with_capacity(Op::ALL.len());
    for op in Op::ALL {
        counts.push((op, harness.calls(op).await));
    }
    counts
}
