//! `HandoffService`: the use case. One webhook delivery (or one background check) drives one
//! ledger record through the lifecycle, calling the ports in the order CONTRACT §5 sets:
//! locate → choose queue → admit (or defer) → write context → transfer → record.
//!
//! Advisory mode ([`HandoffService::advise`], `?mode=advise`) runs the same steps up to the
//! context write and stops there: the flow that called it transfers the conversation itself.
//!
//! # Layout
//! - `types`: what the use case answers (`HandoffOutcome`, `Advice`, `HandoffError`) and its
//!   settings.
//! - `deliver`: transfer mode, one delivery through locate → admit → context → transfer.
//! - `advise`: advisory mode and the confirmation reads of an advice.
//! - `worker`: the background tick (deferrals, recovery, handoffs nobody came back for).
//! - `outbox`: the analytics outbox.
//! - `failure`: stops, failures, read-backs after an unknown outcome, outcome reports.
//! - `testkit` (tests only): the fixtures the tests beside each part share.

mod advise;
mod deliver;
mod failure;
mod outbox;
#[cfg(test)]
mod testkit;
mod types;
mod worker;

pub use advise::confirmation_reads;
pub use types::{Advice, HandoffError, HandoffOutcome, ServiceSettings, TickReport};

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::lifecycle::{HandoffRecord, Stage};
use crate::ports::{AnalyticsPort, Clock, LedgerPort, NoopObserver, OutcomeObserver, QueuePort, TransferPort};

/// The handoff use case over its ports.
pub struct HandoffService {
    queue: Arc<dyn QueuePort>,
    transfer: Arc<dyn TransferPort>,
    analytics: Arc<dyn AnalyticsPort>,
    ledger: Arc<dyn LedgerPort>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn OutcomeObserver>,
    settings: ServiceSettings,
}

impl std::fmt::Debug for HandoffService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Where one attempt stopped early.
type Step<T> = Result<T, HandoffError>;

/// What the start of a delivery found.
enum Started {
    /// Nothing to do: this is the answer.
    Answered(HandoffOutcome),
    /// A leased record to work on.
    Work(Box<HandoffRecord>),
}

impl HandoffService {
    /// A service over its ports.
    pub fn new(
        queue: Arc<dyn QueuePort>,
        transfer: Arc<dyn TransferPort>,
        analytics: Arc<dyn AnalyticsPort>,
        ledger: Arc<dyn LedgerPort>,
        clock: Arc<dyn Clock>,
        settings: ServiceSettings,
    ) -> Self {
        Self { queue, transfer, analytics, ledger, clock, observer: Arc::new(NoopObserver), settings }
    }

    /// Sends one report per outcome to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn OutcomeObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &ServiceSettings {
        &self.settings
    }

    /// The ledger (for the read side).
    pub fn ledger(&self) -> &Arc<dyn LedgerPort> {
        &self.ledger
    }

    fn move_to(&self, record: &mut HandoffRecord, to: Stage, note: &str) -> Step<()> {
        record
            .advance(to, self.clock.now(), note)
            .map_err(|e| HandoffError::NotTransferable { handoff_id: Some(record.id), message: e.to_string() })
    }

    fn note(&self, record: &mut HandoffRecord, note: &str) {
        let stage = record.stage;
        record.history.push(crate::lifecycle::HistoryEntry { at: self.clock.now(), stage, note: note.to_owned() });
    }

    /// A lease from now for [`ServiceSettings::lease`].
    fn hold(&self) -> Option<DateTime<Utc>> {
        Some(crate::lifecycle::later(self.clock.now(), self.settings.lease))
    }
}
