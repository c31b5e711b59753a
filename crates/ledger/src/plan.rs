//! What `begin` writes, decided once for both backends from the key's latest record.
//!
//! The decision itself is the domain's [`decide_begin`], so every ledger agrees with
//! `InMemoryLedger`; this module only turns it into a write plan the backend runs inside its
//! transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use handoff_domain::ports::Begin;
use handoff_domain::{decide_begin, BeginDecision, HandoffId, HandoffKey, HandoffMode, HandoffRecord, HandoffRequest};

use crate::codec::{lease_end, micros};

/// What the backend must do to finish `begin`.
#[derive(Debug)]
pub(crate) enum BeginPlan {
    /// Nothing to write: return this.
    Done(Begin),
    /// Lease the existing record until `lease_until` and count one more attempt; `record` already
    /// shows that attempt (and the advisory mark, when an advisory delivery resumes a `Received`
    /// record): write its `attempts` and `answer`.
    Resume { record: HandoffRecord, lease_until: DateTime<Utc> },
    /// Insert `record` leased until `lease_until` and point the key at it.
    Create { record: HandoffRecord, lease_until: DateTime<Utc> },
}

/// Plans `begin` for `key` given its latest record and that record's lease, if any.
pub(crate) fn plan_begin(
    latest: Option<(HandoffRecord, Option<DateTime<Utc>>)>,
    key: &HandoffKey,
    request: &HandoffRequest,
    now: DateTime<Utc>,
    lease: Duration,
    reuse_after: Duration,
    mode: HandoffMode,
) -> BeginPlan {
    let now = micros(now);
    let lease_until = lease_end(now, lease);
    if let Some((mut record, held_until)) = latest {
        match decide_begin(&record, held_until, now, reuse_after) {
            BeginDecision::Busy => return BeginPlan::Done(Begin::Busy { handoff_id: record.id }),
            BeginDecision::Replay => return BeginPlan::Done(Begin::Replay(record)),
            BeginDecision::Resume => {
                record.attempts = record.attempts.saturating_add(1);
                record.mark_mode(mode);
                return BeginPlan::Resume { record, lease_until };
            }
            BeginDecision::Fresh => {}
        }
    }
    let record = HandoffRecord::begun(HandoffId::random(), key.clone(), request.clone(), now, mode);
    BeginPlan::Create { record, lease_until }
}
