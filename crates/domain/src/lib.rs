//! The pure domain of `handoff`: what a bot-to-agent handoff is, the rules it follows and the
//! ports it needs from the outside world.
//!
//! Nothing here performs I/O or depends on a runtime: no tokio, no HTTP client, no database, no
//! file system. Adapters implement [`ports`]; the HTTP entry and the binary drive
//! [`HandoffService`]. Everything is testable with mocks and property tests alone.
//!
//! # Layout
//! - [`ids`]: validated identifiers: the platform's (`ConversationId`, `QueueId`, `ParticipantId`,
//!   opaque, bounded and URL-safe, each platform's format declared by its adapter through
//!   `IdRules`) and ours (`HandoffId`, a UUID).
//! - `request`: the validated webhook payload (`HandoffRequest` and its parts) and its parser,
//!   which reports every problem with its field path.
//! - `routing`: queue choice and the allowlist (CONTRACT §5.2).
//! - `figures`: a queue's live figures (`QueueFigures`, each one optional: unknown is never zero)
//!   and the free message slots they add up to.
//! - `admission`: capacity snapshots, the capacity model (free slots or idle agents) and the
//!   admission rule (CONTRACT §5.4).
//! - `attributes`: the participant attribute set written to Genesys (CONTRACT §5.5) and its limits.
//! - [`insights`]: what reports show: each handoff's `Outcome` (decided in one place), the
//!   `HandoffSummary` rows the insights page, the CSV export and `handoff report` read, and the
//!   `Insights` figures folded from them.
//! - [`lifecycle`]: the handoff record and its state machine (received → transferred, deferred,
//!   advised, failed), the delivery mode and the confirmation of an advice.
//! - `outcome`: what came of a handoff (`Outcome`: transferred, confirmed, failed by cause, …) and
//!   the counts and time-to-queue percentiles of `/handoffs/stats`.
//! - [`ports`]: the traits adapters implement (`QueuePort`, `TransferPort`, `AnalyticsPort`,
//!   `LedgerPort`, `Clock`) and the error contract they share.
//! - `memory`: `InMemoryLedger`, the reference ledger implementation (tests, demo, single runs).
//! - `service`: `HandoffService`, the use case (transfer mode and advisory mode), and its
//!   outcome, advice and error types.
//! - `testkit` (tests only): proptest strategies for valid and invalid payloads, shared by the
//!   unit tests of the modules above.

mod admission;
mod attributes;
mod figures;
pub mod ids;
pub mod insights;
pub mod lifecycle;
mod memory;
mod outcome;
pub mod ports;
mod request;
mod routing;
mod service;
#[cfg(test)]
mod testkit;

pub use admission::{Admission, AdmissionPolicy, CapacityModel, CapacitySnapshot};
pub use attributes::{AttributeLimitError, AttributeSet, MAX_ATTRIBUTES, MAX_ATTRIBUTE_VALUE_CHARS, RESERVED_KEYS};
pub use figures::{AgentCounts, FreeSlots, QueueFigures};
pub use ids::{
    ConversationId, HandoffId, IdKind, IdRules, InvalidId, OpaqueId, OpaqueIds, ParticipantId, QueueId, MAX_ID_BYTES,
};
pub use insights::{HandoffSummary, Insights, InsightsFilter};
pub use lifecycle::{
    later, AdviceDecision, Confirmation, HandoffKey, HandoffMode, HandoffRecord, Stage, StoredAnswer, Unconfirmed,
};
pub use memory::{decide_begin, BeginDecision, InMemoryLedger};
pub use outcome::{FailureCause, Outcome, OutcomeFacts, OutcomeRow, OutcomeStats, Percentiles};
pub use request::{
    FieldError, GuestId, GuestInfo, HandoffContext, HandoffReason, HandoffRequest, IdempotencyKey, ValidationErrors,
    MAX_CONTEXT_KEYS,
};
pub use routing::{RoutingPolicy, RoutingPolicyError};
pub use service::{
    confirmation_reads, Advice, HandoffError, HandoffOutcome, HandoffService, ServiceSettings, TickReport,
};

/// The domain's result type.
pub type Result<T, E = HandoffError> = std::result::Result<T, E>;
