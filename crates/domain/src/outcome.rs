//! What came of a handoff, in the terms contact-center managers report on: [`Outcome`], derived
//! from a record (or the few columns of it a ledger keeps for reporting, [`OutcomeFacts`]), and
//! the counts and time-to-queue percentiles of `/handoffs/stats` ([`OutcomeStats`]).
//!
//! The names (`as_str`) are stable snake_case: they are the API's, the metrics' and the reports'.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::QueueId;
use crate::lifecycle::{AdviceDecision, Confirmation, HandoffRecord, Stage, StoredAnswer};

/// What came of one handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Still being worked on: received, deferred (waiting for capacity), a transfer under way, or
    /// an advice to transfer whose confirmation reads still run.
    InProgress,
    /// Transfer mode: the service transferred it without waiting.
    Transferred,
    /// Transfer mode: the service deferred it for capacity, then transferred it.
    TransferredAfterDeferral,
    /// Advisory mode: the flow was told to wait (no capacity); its next call is a new handoff.
    AdvisedDefer,
    /// Advisory mode: advised to transfer, and the conversation reached a queue.
    Confirmed,
    /// Advisory mode: advised to transfer, and the conversation did not reach a queue in time
    /// (still with the flow, ended, or elsewhere).
    Unconfirmed,
    /// Given up, for the cause given.
    Failed(FailureCause),
    /// Left hanging and closed by the service without a transfer ([`Stage::Abandoned`]).
    Abandoned,
}

impl Outcome {
    /// The outcome of a record in `stage` with `answer`; `deferred` when it ever waited for
    /// capacity (its `defer_until` is set). The only place a handoff's outcome is decided: the
    /// stats, the insights page, the export and the report all come here.
    pub fn decide(stage: Stage, answer: Option<&StoredAnswer>, deferred: bool) -> Outcome {
        match (stage, answer) {
            (Stage::Transferred, _) if deferred => Outcome::TransferredAfterDeferral,
            (Stage::Transferred, _) => Outcome::Transferred,
            (Stage::Advised, Some(StoredAnswer::Advised { decision: AdviceDecision::Defer { .. }, .. })) => {
                Outcome::AdvisedDefer
            }
            (Stage::Advised, Some(StoredAnswer::Advised { confirmation: Some(c), .. })) => match c {
                Confirmation::Confirmed { .. } => Outcome::Confirmed,
                Confirmation::Unconfirmed { .. } => Outcome::Unconfirmed,
            },
            (Stage::Failed, Some(StoredAnswer::Failed { code, .. })) => Outcome::Failed(FailureCause::of_code(code)),
            (Stage::Failed, _) => Outcome::Failed(FailureCause::Rejected),
            (Stage::Abandoned, _) => Outcome::Abandoned,
            _ => Outcome::InProgress,
        }
    }
}

/// Why a handoff failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureCause {
    /// The platform did not know the conversation (404).
    NotFound,
    /// The conversation ended, nobody held it, or an agent already had it (422).
    NotTransferable,
    /// The platform refused a call, e.g. a missing permission or a refused replace (502).
    Rejected,
    /// The request became invalid, e.g. its queue left the configuration (400).
    Invalid,
    /// An advisory delivery was interrupted (a crash) and finished without an advice.
    Interrupted,
}

impl FailureCause {
    /// Every cause.
    pub const ALL: [FailureCause; 5] = [
        FailureCause::NotFound,
        FailureCause::NotTransferable,
        FailureCause::Rejected,
        FailureCause::Invalid,
        FailureCause::Interrupted,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::NotFound => "not_found",
            FailureCause::NotTransferable => "not_transferable",
            FailureCause::Rejected => "rejected",
            FailureCause::Invalid => "invalid",
            FailureCause::Interrupted => "interrupted",
        }
    }

    /// The cause of a stored failure answer, from its stable code.
    fn of_code(code: &str) -> Self {
        match code {
            "conversation_not_found" => FailureCause::NotFound,
            "conversation_not_transferable" => FailureCause::NotTransferable,
            "invalid_payload" => FailureCause::Invalid,
            // `upstream_unavailable` is stored only when an advisory delivery was interrupted.
            "upstream_unavailable" => FailureCause::Interrupted,
            _ => FailureCause::Rejected,
        }
    }
}

impl Outcome {
    /// Every outcome without a cause, then `failed` once per cause.
    pub const ALL: [Outcome; 12] = [
        Outcome::InProgress,
        Outcome::Transferred,
        Outcome::TransferredAfterDeferral,
        Outcome::AdvisedDefer,
        Outcome::Confirmed,
        Outcome::Unconfirmed,
        Outcome::Failed(FailureCause::NotFound),
        Outcome::Failed(FailureCause::NotTransferable),
        Outcome::Failed(FailureCause::Rejected),
        Outcome::Failed(FailureCause::Invalid),
        Outcome::Failed(FailureCause::Interrupted),
        Outcome::Abandoned,
    ];

    /// Stable snake_case name: `in_progress`, `transferred`, `transferred_after_deferral`,
    /// `advised_defer`, `confirmed`, `unconfirmed`, `failed`, `abandoned` (the cause of a failure
    /// is [`cause`](Self::cause)).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Transferred => "transferred",
            Outcome::TransferredAfterDeferral => "transferred_after_deferral",
            Outcome::AdvisedDefer => "advised_defer",
            Outcome::Confirmed => "confirmed",
            Outcome::Unconfirmed => "unconfirmed",
            Outcome::Failed(_) => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }

    /// The cause, for a failure.
    pub fn cause(self) -> Option<FailureCause> {
        match self {
            Outcome::Failed(cause) => Some(cause),
            _ => None,
        }
    }

    /// Whether the conversation reached a queue (the outcomes that have a time to queue).
    pub fn reached_queue(self) -> bool {
        matches!(self, Outcome::Transferred | Outcome::TransferredAfterDeferral | Outcome::Confirmed)
    }

    /// The outcome of a record.
    pub fn of(record: &HandoffRecord) -> Self {
        OutcomeFacts::of(record).outcome()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause() {
            Some(cause) => write!(f, "failed ({})", cause.as_str()),
            None => f.write_str(self.as_str()),
        }
    }
}

/// The parts of a record its outcome depends on: what a ledger reads for `/handoffs/stats`
/// instead of whole records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeFacts {
    /// The handoff reason.
    pub reason: String,
    /// The queue chosen (or advised), if one was.
    pub queue_id: Option<QueueId>,
    /// Its stage.
    pub stage: Stage,
    /// Its stored answer.
    pub answer: Option<StoredAnswer>,
    /// Whether it was ever deferred for capacity (transfer mode: its `defer_until` is set).
    pub deferred: bool,
    /// When it was received.
    pub created_at: DateTime<Utc>,
    /// When it last changed (for a transferred record: when it was transferred).
    pub updated_at: DateTime<Utc>,
}

impl OutcomeFacts {
    /// The facts of `record`.
    pub fn of(record: &HandoffRecord) -> Self {
        Self {
            reason: record.reason().as_str().to_owned(),
            queue_id: record.queue,
            stage: record.stage,
            answer: record.answer.clone(),
            deferred: record.defer_until.is_some(),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }

    /// The outcome these facts describe.
    pub fn outcome(&self) -> Outcome {
        Outcome::decide(self.stage, self.answer.as_ref(), self.deferred)
    }

    /// Time to queue: transfer mode from receipt to the transfer; advisory mode from the advice
    /// to the read that saw the conversation in a queue. `None` unless it reached a queue.
    pub fn time_to_queue(&self) -> Option<Duration> {
        match (self.stage, &self.answer) {
            (Stage::Transferred, _) => (self.updated_at - self.created_at).to_std().ok(),
            (
                Stage::Advised,
                Some(StoredAnswer::Advised { confirmation: Some(Confirmation::Confirmed { after, .. }), .. }),
            ) => Some(*after),
            _ => None,
        }
    }
}

/// p50 and p95 of a set of durations (nearest rank), in whole and fractional seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// How many durations.
    pub count: u64,
    /// The median.
    pub p50: Duration,
    /// The 95th percentile.
    pub p95: Duration,
}

impl Percentiles {
    /// The percentiles of `durations`; `None` when empty.
    pub fn of(mut durations: Vec<Duration>) -> Option<Self> {
        if durations.is_empty() {
            return None;
        }
        durations.sort_unstable();
        let rank = |p: usize| {
            // Nearest rank: the smallest value with at least p% of the values at or below it.
            let n = durations.len();
            let index = (p * n).div_ceil(100).clamp(1, n) - 1;
            durations[index]
        };
        Some(Self { count: durations.len() as u64, p50: rank(50), p95: rank(95) })
    }
}

/// One row of [`OutcomeStats`]: handoffs of one reason, queue and outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRow {
    /// The handoff reason.
    pub reason: String,
    /// The queue chosen or advised, if one was.
    pub queue_id: Option<QueueId>,
    /// The outcome.
    pub outcome: Outcome,
    /// How many.
    pub count: u64,
    /// Their time to queue, for outcomes that reached one.
    pub time_to_queue: Option<Percentiles>,
}

/// Counts per reason × queue × outcome, and the time to queue of all handoffs that reached one.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeStats {
    /// Sorted by reason, queue, then outcome in [`Outcome::ALL`] order.
    pub rows: Vec<OutcomeRow>,
    /// Every handoff by outcome (same order), across reasons and queues.
    pub totals: Vec<(Outcome, u64)>,
    /// Time to queue across every row.
    pub time_to_queue: Option<Percentiles>,
}

impl OutcomeStats {
    /// Aggregates the facts of the handoffs of a period.
    pub fn from_facts(facts: &[OutcomeFacts]) -> Self {
        /// Reason × queue × outcome.
        type Group = (String, Option<QueueId>, Outcome);
        let mut groups: BTreeMap<Group, (u64, Vec<Duration>)> = BTreeMap::new();
        let mut totals: BTreeMap<Outcome, u64> = BTreeMap::new();
        let mut all = Vec::new();
        for fact in facts {
            let outcome = fact.outcome();
            let group = groups.entry((fact.reason.clone(), fact.queue_id, outcome)).or_default();
            group.0 += 1;
            *totals.entry(outcome).or_default() += 1;
            if let Some(t) = fact.time_to_queue() {
                group.1.push(t);
                all.push(t);
            }
        }
        let rows = groups
            .into_iter()
            .map(|((reason, queue_id, outcome), (count, times))| OutcomeRow {
                reason,
                queue_id,
                outcome,
                count,
                time_to_queue: Percentiles::of(times),
            })
            .collect();
        Self { rows, totals: totals.into_iter().collect(), time_to_queue: Percentiles::of(all) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Unconfirmed;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000 + secs)
    }

    fn queue() -> QueueId {
        QueueId::parse("00000000-0000-4000-8000-000000000001").expect("valid")
    }

    fn facts(stage: Stage, answer: Option<StoredAnswer>, deferred: bool, took: i64) -> OutcomeFacts {
        OutcomeFacts {
            reason: "billing".to_owned(),
            queue_id: Some(queue()),
            stage,
            answer,
            deferred,
            created_at: t(0),
            updated_at: t(took),
        }
    }

    fn advised(confirmation: Option<Confirmation>) -> Option<StoredAnswer> {
        Some(StoredAnswer::Advised { queue: queue(), decision: AdviceDecision::Transfer, confirmation })
    }

    fn failed(code: &str) -> Option<StoredAnswer> {
        Some(StoredAnswer::Failed { status: 400, code: code.to_owned(), message: String::new() })
    }

    #[test]
    fn every_stage_and_answer_maps_to_one_outcome() {
        // Arrange
        let confirmed = Confirmation::Confirmed { queue: queue(), after: Duration::from_secs(7) };
        let unconfirmed = Confirmation::Unconfirmed { why: Unconfirmed::StillWithFlow };
        let defer = Some(StoredAnswer::Advised {
            queue: queue(),
            decision: AdviceDecision::Defer { retry_after: Duration::from_secs(15) },
            confirmation: None,
        });
        let cases = [
            (facts(Stage::Received, None, false, 0), Outcome::InProgress),
            (facts(Stage::Received, Some(StoredAnswer::Advising), false, 0), Outcome::InProgress),
            (facts(Stage::Deferred, None, true, 0), Outcome::InProgress),
            (facts(Stage::TransferPending, None, false, 0), Outcome::InProgress),
            (facts(Stage::Transferred, None, false, 3), Outcome::Transferred),
            (facts(Stage::Transferred, None, true, 300), Outcome::TransferredAfterDeferral),
            (facts(Stage::Advised, advised(None), false, 1), Outcome::InProgress),
            (facts(Stage::Advised, advised(Some(confirmed)), false, 1), Outcome::Confirmed),
            (facts(Stage::Advised, advised(Some(unconfirmed)), false, 1), Outcome::Unconfirmed),
            (facts(Stage::Advised, defer, false, 1), Outcome::AdvisedDefer),
            (facts(Stage::Failed, failed("conversation_not_found"), false, 1), Outcome::Failed(FailureCause::NotFound)),
            (
                facts(Stage::Failed, failed("conversation_not_transferable"), false, 1),
                Outcome::Failed(FailureCause::NotTransferable),
            ),
            (
                facts(Stage::Failed, failed("upstream_rejected:400:bad.request"), false, 1),
                Outcome::Failed(FailureCause::Rejected),
            ),
            (facts(Stage::Failed, failed("invalid_payload"), false, 1), Outcome::Failed(FailureCause::Invalid)),
            (
                facts(Stage::Failed, failed("upstream_unavailable"), false, 1),
                Outcome::Failed(FailureCause::Interrupted),
            ),
        ];
        for (facts, expected) in cases {
            // Act + Assert
            assert_eq!(facts.outcome(), expected, "{facts:?}");
        }
    }

    #[test]
    fn outcome_names_are_stable_snake_case_and_distinct_per_cause() {
        let names: Vec<String> = Outcome::ALL
            .iter()
            .map(|o| format!("{}{}", o.as_str(), o.cause().map(|c| format!(":{}", c.as_str())).unwrap_or_default()))
            .collect();
        assert_eq!(
            names,
            [
                "in_progress",
                "transferred",
                "transferred_after_deferral",
                "advised_defer",
                "confirmed",
                "unconfirmed",
                "failed:not_found",
                "failed:not_transferable",
                "failed:rejected",
                "failed:invalid",
                "failed:interrupted",
                "abandoned"
            ]
        );
        assert_eq!(Outcome::Failed(FailureCause::Rejected).to_string(), "failed (rejected)");
    }

    #[test]
    fn time_to_queue_is_known_only_for_handoffs_that_reached_a_queue() {
        let confirmed = Confirmation::Confirmed { queue: queue(), after: Duration::from_secs(7) };
        assert_eq!(facts(Stage::Transferred, None, false, 3).time_to_queue(), Some(Duration::from_secs(3)));
        assert_eq!(
            facts(Stage::Advised, advised(Some(confirmed)), false, 99).time_to_queue(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(facts(Stage::Advised, advised(None), false, 99).time_to_queue(), None);
        assert_eq!(facts(Stage::Failed, failed("invalid_payload"), false, 9).time_to_queue(), None);
        for outcome in Outcome::ALL {
            let has_time =
                matches!(outcome, Outcome::Transferred | Outcome::TransferredAfterDeferral | Outcome::Confirmed);
            assert_eq!(outcome.reached_queue(), has_time, "{outcome}");
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        // Arrange
        let secs = |s: &[u64]| s.iter().map(|s| Duration::from_secs(*s)).collect::<Vec<_>>();

        // Act + Assert
        assert_eq!(Percentiles::of(Vec::new()), None);
        let one = Percentiles::of(secs(&[4])).expect("one value");
        assert_eq!((one.count, one.p50, one.p95), (1, Duration::from_secs(4), Duration::from_secs(4)));
        let hundred: Vec<u64> = (1..=100).rev().collect();
        let p = Percentiles::of(secs(&hundred)).expect("values");
        assert_eq!((p.count, p.p50, p.p95), (100, Duration::from_secs(50), Duration::from_secs(95)));
        let p = Percentiles::of(secs(&[1, 2, 3])).expect("values");
        assert_eq!((p.p50, p.p95), (Duration::from_secs(2), Duration::from_secs(3)));
    }

    #[test]
    fn stats_count_per_reason_queue_and_outcome_with_time_to_queue() {
        // Arrange
        let confirmed = |s| Confirmation::Confirmed { queue: queue(), after: Duration::from_secs(s) };
        let mut other = facts(Stage::Transferred, None, false, 2);
        other.reason = "address_change".to_owned();
        let all = vec![
            facts(Stage::Transferred, None, false, 4),
            facts(Stage::Transferred, None, false, 6),
            facts(Stage::Advised, advised(Some(confirmed(10))), false, 50),
            facts(Stage::Failed, failed("conversation_not_found"), false, 1),
            other,
        ];

        // Act
        let stats = OutcomeStats::from_facts(&all);

        // Assert
        let rows: Vec<(&str, Outcome, u64)> =
            stats.rows.iter().map(|r| (r.reason.as_str(), r.outcome, r.count)).collect();
        assert_eq!(
            rows,
            [
                ("address_change", Outcome::Transferred, 1),
                ("billing", Outcome::Transferred, 2),
                ("billing", Outcome::Confirmed, 1),
                ("billing", Outcome::Failed(FailureCause::NotFound), 1),
            ]
        );
        let billing = stats.rows[1].time_to_queue.expect("transferred rows have times");
        assert_eq!((billing.count, billing.p50, billing.p95), (2, Duration::from_secs(4), Duration::from_secs(6)));
        assert_eq!(stats.rows[3].time_to_queue, None);
        let overall = stats.time_to_queue.expect("four reached a queue");
        assert_eq!((overall.count, overall.p50, overall.p95), (4, Duration::from_secs(4), Duration::from_secs(10)));
        assert_eq!(
            stats.totals,
            [(Outcome::Transferred, 3), (Outcome::Confirmed, 1), (Outcome::Failed(FailureCause::NotFound), 1)]
        );
    }
}
