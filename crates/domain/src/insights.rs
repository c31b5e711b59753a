//! What managers look at: each handoff's [`Outcome`], the one-line [`HandoffSummary`] that the
//! insights page, the CSV export and `handoff report` are built from, and the [`Insights`]
//! figures folded from those summaries.
//!
//! **One place.** A record's outcome is decided only by [`Outcome::of`]; the figures only by
//! [`InsightsBuilder`]. The page, the export and the report all read the same summaries through
//! [`InsightsPort`](crate::ports::InsightsPort) (paged by keyset, so 100,000 rows never sit in
//! memory at once), so they cannot disagree.
//!
//! No summary carries the guest's name or e-mail or the bot's context: only ids, the reason, the
//! queue, times and counts.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::{ConversationId, HandoffId, QueueId};
use crate::lifecycle::{HandoffRecord, Stage, StoredAnswer};
use crate::ports::{InsightsPort, LedgerError};

/// The longest window the figures may cover: a little over a year.
pub const MAX_INSIGHTS_WINDOW: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// Summaries read per page by [`collect_insights`] (and the export).
pub const SUMMARY_PAGE: usize = 5_000;

/// How a handoff ended (or that it has not yet), for reports.
///
/// Shaped after the outcome list of issue 12 (transferred, transferred after deferral, confirmed,
/// unconfirmed, failed by cause, abandoned; its names and order too), with `InProgress` for handoffs still
/// being worked on and `AdvisedDefer` for advice to wait.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Transferred without waiting for capacity.
    Transferred,
    /// Transferred after it was deferred for lack of capacity.
    TransferredAfterDeferral,
    /// Advisory mode: the flow was told to wait (no capacity); its next call is a new handoff.
    AdvisedDefer,
    /// Advisory mode: the flow confirmed it transferred as advised.
    Confirmed,
    /// Advisory mode: advice to transfer given, no confirmation (yet).
    Unconfirmed,
    /// Given up, with the error code it was answered with (`conversation_not_found`, …).
    Failed {
        /// The stable error code, or `unknown`.
        cause: String,
    },
    /// Left hanging until given up by the service.
    Abandoned,
    /// Not finished: received, deferred, or a transfer in flight.
    InProgress,
}

/// [`Outcome`] without the failure cause: the series of the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeKind {
    /// [`Outcome::Transferred`].
    Transferred,
    /// [`Outcome::TransferredAfterDeferral`].
    TransferredAfterDeferral,
    /// [`Outcome::AdvisedDefer`].
    AdvisedDefer,
    /// [`Outcome::Confirmed`].
    Confirmed,
    /// [`Outcome::Unconfirmed`].
    Unconfirmed,
    /// [`Outcome::Failed`], any cause.
    Failed,
    /// [`Outcome::Abandoned`].
    Abandoned,
    /// [`Outcome::InProgress`].
    InProgress,
}

impl OutcomeKind {
    /// Every kind, in the order charts and tables show them.
    pub const ALL: [OutcomeKind; 8] = [
        OutcomeKind::Transferred,
        OutcomeKind::TransferredAfterDeferral,
        OutcomeKind::AdvisedDefer,
        OutcomeKind::Confirmed,
        OutcomeKind::Unconfirmed,
        OutcomeKind::Failed,
        OutcomeKind::Abandoned,
        OutcomeKind::InProgress,
    ];

    /// Stable lower-case name (CSV, query parameters, element ids).
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Transferred => "transferred",
            OutcomeKind::TransferredAfterDeferral => "transferred_after_deferral",
            OutcomeKind::AdvisedDefer => "advised_defer",
            OutcomeKind::Confirmed => "confirmed",
            OutcomeKind::Unconfirmed => "unconfirmed",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Abandoned => "abandoned",
            OutcomeKind::InProgress => "in_progress",
        }
    }

    /// A short label for people.
    pub fn label(self) -> &'static str {
        match self {
            OutcomeKind::Transferred => "transferred",
            OutcomeKind::TransferredAfterDeferral => "transferred after deferral",
            OutcomeKind::AdvisedDefer => "advised to wait",
            OutcomeKind::Confirmed => "advice confirmed",
            OutcomeKind::Unconfirmed => "advice unconfirmed",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Abandoned => "abandoned",
            OutcomeKind::InProgress => "in progress",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    /// The outcome of a record in `stage` with `answer`; `was_deferred` when it ever waited for
    /// capacity (its `defer_until` is set). The only place outcomes are decided.
    pub fn of(stage: Stage, answer: Option<&StoredAnswer>, was_deferred: bool) -> Outcome {
        use crate::outcome::Outcome as Decided;
        // Decided once, in `outcome::Outcome::decide`; this is its report-side view (the failure
        // cause as its stable name).
        match Decided::decide(stage, answer, was_deferred) {
            Decided::InProgress => Outcome::InProgress,
            Decided::Transferred => Outcome::Transferred,
            Decided::TransferredAfterDeferral => Outcome::TransferredAfterDeferral,
            Decided::AdvisedDefer => Outcome::AdvisedDefer,
            Decided::Confirmed => Outcome::Confirmed,
            Decided::Unconfirmed => Outcome::Unconfirmed,
            Decided::Failed(cause) => Outcome::Failed { cause: cause.as_str().to_owned() },
            Decided::Abandoned => Outcome::Abandoned,
        }
    }

    /// The outcome named `name`, as [`Display`](fmt::Display) writes it (`transferred`,
    /// `failed:not_found`, …); `None` for a name that is none.
    pub fn parse(name: &str) -> Option<Outcome> {
        if let Some(cause) = name.strip_prefix("failed:") {
            return Some(Outcome::Failed { cause: cause.to_owned() });
        }
        Some(match OutcomeKind::ALL.into_iter().find(|k| k.as_str() == name)? {
            OutcomeKind::Transferred => Outcome::Transferred,
            OutcomeKind::TransferredAfterDeferral => Outcome::TransferredAfterDeferral,
            OutcomeKind::AdvisedDefer => Outcome::AdvisedDefer,
            OutcomeKind::Confirmed => Outcome::Confirmed,
            OutcomeKind::Unconfirmed => Outcome::Unconfirmed,
            OutcomeKind::Failed => return None,
            OutcomeKind::Abandoned => Outcome::Abandoned,
            OutcomeKind::InProgress => Outcome::InProgress,
        })
    }

    /// Whether the outcome can still change: only [`Outcome::InProgress`] can. A ledger may count
    /// a handoff with any other outcome once and for all.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::InProgress)
    }

    /// The kind (the outcome without its cause).
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Transferred => OutcomeKind::Transferred,
            Outcome::TransferredAfterDeferral => OutcomeKind::TransferredAfterDeferral,
            Outcome::AdvisedDefer => OutcomeKind::AdvisedDefer,
            Outcome::Confirmed => OutcomeKind::Confirmed,
            Outcome::Unconfirmed => OutcomeKind::Unconfirmed,
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Abandoned => OutcomeKind::Abandoned,
            Outcome::InProgress => OutcomeKind::InProgress,
        }
    }

    /// The failure cause, for [`Outcome::Failed`].
    pub fn cause(&self) -> Option<&str> {
        match self {
            Outcome::Failed { cause } => Some(cause),
            _ => None,
        }
    }

    /// Whether the handoff reached a queue.
    pub fn is_transferred(&self) -> bool {
        matches!(self, Outcome::Transferred | Outcome::TransferredAfterDeferral | Outcome::Confirmed)
    }
}

impl fmt::Display for Outcome {
    /// The kind, with the cause for failures: `failed:conversation_not_found`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Failed { cause } => write!(f, "failed:{cause}"),
            other => f.write_str(other.kind().as_str()),
        }
    }
}

/// One handoff as reports see it: no guest name, e-mail or context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffSummary {
    /// The handoff.
    pub handoff_id: HandoffId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// Why the bot handed off.
    pub reason: String,
    /// The queue chosen, if one was.
    pub queue_id: Option<QueueId>,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was received.
    pub created_at: DateTime<Utc>,
    /// When it finished (its last change, for a finished record).
    pub finished_at: Option<DateTime<Utc>>,
    /// From receipt to the queue, for a transferred handoff.
    pub to_queue: Option<Duration>,
    /// Deliveries, resumptions and worker checks that worked on it.
    pub attempts: u32,
}

/// The stored facts a summary is made of (what a SQL ledger selects).
#[derive(Debug, Clone)]
pub struct SummaryFacts {
    /// The handoff.
    pub handoff_id: HandoffId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// `handoffReason`.
    pub reason: String,
    /// The queue chosen.
    pub queue_id: Option<QueueId>,
    /// Its stage.
    pub stage: Stage,
    /// Its answer: needed only when `stage` is `Failed` (a ledger may leave it out otherwise).
    pub answer: Option<StoredAnswer>,
    /// Whether it ever waited for capacity (`defer_until` is set).
    pub was_deferred: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Attempts.
    pub attempts: u32,
}

impl HandoffSummary {
    /// The summary of a record.
    pub fn of(record: &HandoffRecord) -> Self {
        Self::from_facts(SummaryFacts {
            handoff_id: record.id,
            conversation_id: record.key.conversation_id,
            reason: record.reason().as_str().to_owned(),
            queue_id: record.queue,
            stage: record.stage,
            answer: record.answer.clone(),
            was_deferred: record.defer_until.is_some(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            attempts: record.attempts,
        })
    }

    /// The summary of stored facts. A finished record finished at its last change (the terminal
    /// transition is the last write), so a transferred one took `updated_at - created_at` to reach
    /// the queue.
    pub fn from_facts(facts: SummaryFacts) -> Self {
        let outcome = Outcome::of(facts.stage, facts.answer.as_ref(), facts.was_deferred);
        let finished_at = facts.stage.is_terminal().then_some(facts.updated_at);
        // The same time to queue as `/handoffs/stats` (transfer mode: receipt to transfer;
        // advisory mode: advice to the read that saw the queue).
        let to_queue = crate::outcome::OutcomeFacts {
            reason: String::new(),
            queue_id: facts.queue_id,
            stage: facts.stage,
            answer: facts.answer.clone(),
            deferred: facts.was_deferred,
            created_at: facts.created_at,
            updated_at: facts.updated_at,
        }
        .time_to_queue();
        Self {
            handoff_id: facts.handoff_id,
            conversation_id: facts.conversation_id,
            reason: facts.reason,
            queue_id: facts.queue_id,
            outcome,
            created_at: facts.created_at,
            finished_at,
            to_queue,
            attempts: facts.attempts,
        }
    }

    /// Where a keyset page after this summary starts.
    pub fn cursor(&self) -> SummaryCursor {
        SummaryCursor { created_at: self.created_at, handoff_id: self.handoff_id }
    }
}

/// The position of a summary in `(created_at, handoff_id)` order, the order summaries are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SummaryCursor {
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Tie-breaker.
    pub handoff_id: HandoffId,
}

mod filter;

pub use filter::{Bucket, InsightsFilter, InvalidWindow};

/// Counts per outcome kind.
pub type OutcomeCounts = BTreeMap<OutcomeKind, u64>;

/// One bar of the over-time chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeBucket {
    /// Its start (UTC, aligned to the bucket width).
    pub start: DateTime<Utc>,
    /// Handoffs created in it, by outcome.
    pub counts: OutcomeCounts,
}

impl TimeBucket {
    /// All handoffs created in it.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// One row of reasons × queue × outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonQueueRow {
    /// The reason.
    pub reason: String,
    /// The queue chosen (none when it failed before a queue was chosen).
    pub queue_id: Option<QueueId>,
    /// By outcome.
    pub counts: OutcomeCounts,
}

impl ReasonQueueRow {
    /// All handoffs of the row.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Nearest-rank percentiles of a set of durations, in whole milliseconds, as the page and the
/// report show them: [`crate::outcome::Percentiles`] (the one nearest-rank computation, also
/// behind `/handoffs/stats`) with the empty set allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// How many durations.
    pub count: u64,
    /// The median (none without durations).
    pub p50: Option<Duration>,
    /// The 95th percentile.
    pub p95: Option<Duration>,
}

impl Percentiles {
    /// Of `millis`.
    pub fn of_millis(millis: Vec<u64>) -> Self {
        crate::outcome::Percentiles::of(millis.into_iter().map(Duration::from_millis).collect()).into()
    }
}

impl From<Option<crate::outcome::Percentiles>> for Percentiles {
    fn from(p: Option<crate::outcome::Percentiles>) -> Self {
        p.map_or_else(Self::default, |p| Self { count: p.count, p50: Some(p.p50), p95: Some(p.p95) })
    }
}

/// The advice confirmation figures (advisory mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfirmationRate {
    /// Advice confirmed by the flow.
    pub confirmed: u64,
    /// Advice not confirmed.
    pub unconfirmed: u64,
}

impl ConfirmationRate {
    /// Confirmed ÷ advised, in whole per mille (none when no advice was given).
    pub fn per_mille(&self) -> Option<u64> {
        let advised = self.confirmed + self.unconfirmed;
        (advised > 0).then(|| (self.confirmed * 1000 + advised / 2) / advised)
    }

    /// The rate as `57.1 %`, or `n/a`.
    pub fn display(&self) -> String {
        match self.per_mille() {
            Some(pm) => format!("{}.{} %", pm / 10, pm % 10),
            None => "n/a".to_owned(),
        }
    }
}

/// Everything the insights page, the report and the export's totals show for one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insights {
    /// What is covered.
    pub filter: InsightsFilter,
    /// The width of [`over_time`](Self::over_time)'s buckets.
    pub bucket: Bucket,
    /// All handoffs covered.
    pub total: u64,
    /// By outcome kind (every kind present, zero included).
    pub by_outcome: OutcomeCounts,
    /// Every bucket of the window, oldest first, empty ones included.
    pub over_time: Vec<TimeBucket>,
    /// By reason, then queue (sorted).
    pub by_reason_queue: Vec<ReasonQueueRow>,
    /// Receipt to queue, every transferred handoff.
    pub to_queue: Percentiles,
    /// Receipt to queue of those that first waited for capacity: how long deferrals waited.
    pub deferral_wait: Percentiles,
    /// Failures by cause (sorted by cause).
    pub failures: BTreeMap<String, u64>,
    /// Advisory mode.
    pub confirmation: ConfirmationRate,
}

impl Insights {
    /// Handoffs of `kind`.
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        self.by_outcome.get(&kind).copied().unwrap_or(0)
    }

    /// Handoffs that reached a queue (transferred, after a deferral or not, and confirmed advice).
    pub fn reached_queue(&self) -> u64 {
        self.count(OutcomeKind::Transferred)
            + self.count(OutcomeKind::TransferredAfterDeferral)
            + self.count(OutcomeKind::Confirmed)
    }
}

/// Folds summaries into [`Insights`]: the only place figures are computed.
#[derive(Debug)]
pub struct InsightsBuilder {
    filter: InsightsFilter,
    bucket: Bucket,
    first_bucket: DateTime<Utc>,
    buckets: Vec<OutcomeCounts>,
    by_reason_queue: BTreeMap<String, BTreeMap<Option<QueueId>, OutcomeCounts>>,
    to_queue: Vec<u64>,
    deferral_wait: Vec<u64>,
    failures: BTreeMap<String, u64>,
    confirmation: ConfirmationRate,
    total: u64,
}

fn zero_counts() -> OutcomeCounts {
    OutcomeKind::ALL.into_iter().map(|k| (k, 0)).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl InsightsBuilder {
    /// An empty fold over `filter`'s window.
    pub fn new(filter: InsightsFilter) -> Self {
        let bucket = filter.bucket();
        let first_bucket = bucket.start_of(filter.since());
        let mut count = 0usize;
        let mut at = first_bucket;
        while at < filter.until() {
            count += 1;
            at += bucket.width();
        }
        Self {
            buckets: vec![zero_counts(); count],
            filter,
            bucket,
            first_bucket,
            by_reason_queue: BTreeMap::new(),
            to_queue: Vec::new(),
            deferral_wait: Vec::new(),
            failures: BTreeMap::new(),
            confirmation: ConfirmationRate::default(),
            total: 0,
        }
    }

    /// Adds one summary; one outside the filter is ignored.
    pub fn add(&mut self, summary: &HandoffSummary) {
        if !self.filter.covers(summary) {
            return;
        }
        self.add_count(summary.created_at, &summary.reason, summary.queue_id, &summary.outcome, 1);
        if let Some(d) = summary.to_queue {
            self.to_queue.push(millis(d));
            if summary.outcome.kind() == OutcomeKind::TransferredAfterDeferral {
                self.deferral_wait.push(millis(d));
            }
        }
    }

    /// Adds `n` handoffs of `reason`, `queue_id` and `outcome` created at `created_at` (or, for
    /// counts kept per bucket, at its start): what a ledger that keeps counts adds instead of
    /// summaries. Their times to queue come with [`finish_with_times`](Self::finish_with_times).
    /// The caller applies the reason filter; a time outside the window is ignored.
    pub fn add_count(
        &mut self,
        created_at: DateTime<Utc>,
        reason: &str,
        queue_id: Option<QueueId>,
        outcome: &Outcome,
        n: u64,
    ) {
        if created_at < self.filter.since() || created_at >= self.filter.until() || n == 0 {
            return;
        }
        let kind = outcome.kind();
        self.total += n;
        let width = self.bucket.width().num_seconds();
        let offset = (created_at - self.first_bucket).num_seconds() / width;
        if let Some(counts) = usize::try_from(offset).ok().and_then(|i| self.buckets.get_mut(i)) {
            *counts.entry(kind).or_default() += n;
        }
        let queues = match self.by_reason_queue.get_mut(reason) {
            Some(queues) => queues,
            None => self.by_reason_queue.entry(reason.to_owned()).or_default(),
        };
        *queues.entry(queue_id).or_insert_with(zero_counts).entry(kind).or_default() += n;
        match outcome {
            Outcome::Failed { cause } => match self.failures.get_mut(cause.as_str()) {
                Some(count) => *count += n,
                None => {
                    self.failures.insert(cause.clone(), n);
                }
            },
            Outcome::Confirmed => self.confirmation.confirmed += n,
            Outcome::Unconfirmed => self.confirmation.unconfirmed += n,
            _ => {}
        }
    }

    /// The figures.
    pub fn finish(mut self) -> Insights {
        let to_queue = Percentiles::of_millis(std::mem::take(&mut self.to_queue));
        let deferral_wait = Percentiles::of_millis(std::mem::take(&mut self.deferral_wait));
        self.finish_with_times(to_queue, deferral_wait)
    }

    /// The figures, with the time-to-queue percentiles given (a ledger that keeps counts computes
    /// them in its store); any summary times added are ignored.
    pub fn finish_with_times(self, to_queue: Percentiles, deferral_wait: Percentiles) -> Insights {
        let over_time: Vec<TimeBucket> = self
            .buckets
            .into_iter()
            .enumerate()
            .map(|(i, counts)| TimeBucket {
                start: self.first_bucket + self.bucket.width() * i32::try_from(i).unwrap_or(i32::MAX),
                counts,
            })
            .collect();
        let by_reason_queue: Vec<ReasonQueueRow> = self
            .by_reason_queue
            .into_iter()
            .flat_map(|(reason, queues)| {
                queues.into_iter().map(move |(queue_id, counts)| ReasonQueueRow {
                    reason: reason.clone(),
                    queue_id,
                    counts,
                })
            })
            .collect();
        let mut by_outcome = zero_counts();
        for row in &by_reason_queue {
            for (kind, n) in &row.counts {
                *by_outcome.entry(*kind).or_default() += n;
            }
        }
        Insights {
            filter: self.filter,
            bucket: self.bucket,
            total: self.total,
            by_outcome,
            over_time,
            by_reason_queue,
            to_queue,
            deferral_wait,
            failures: self.failures,
            confirmation: self.confirmation,
        }
    }
}

/// Reads every summary `filter` covers from `port`, a page of `page` at a time, and folds them.
///
/// # Errors
/// [`LedgerError`] when the store cannot be read.
pub async fn collect_insights<P: InsightsPort + ?Sized>(
    port: &P,
    filter: &InsightsFilter,
    page: usize,
) -> Result<Insights, LedgerError> {
    let mut builder = InsightsBuilder::new(filter.clone());
    let mut after = None;
    loop {
        let summaries = port.summaries(filter, after, page.max(1)).await?;
        for s in &summaries {
            builder.add(s);
        }
        match summaries.last() {
            Some(last) if summaries.len() >= page.max(1) => after = Some(last.cursor()),
            _ => break,
        }
    }
    Ok(builder.finish())
}

/// A duration for people, in seconds with one decimal (`12.3 s`), or `–` for none. The page and
/// the report both print durations with it.
pub fn format_seconds(d: Option<Duration>) -> String {
    match d {
        Some(d) => {
            let tenths = (d.as_millis() + 50) / 100;
            format!("{}.{} s", tenths / 10, tenths % 10)
        }
        None => "–".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid").with_timezone(&Utc)
    }

    fn summary(created: &str, secs: i64, stage: Stage, answer: Option<StoredAnswer>, deferred: bool) -> HandoffSummary {
        let created_at = at(created);
        HandoffSummary::from_facts(SummaryFacts {
            handoff_id: HandoffId::random(),
            conversation_id: ConversationId::parse("a1b2c3d4-e5f6-7890-abcd-ef1234567890").expect("uuid"),
            reason: "billing".to_owned(),
            queue_id: None,
            stage,
            answer,
            was_deferred: deferred,
            created_at,
            updated_at: created_at + TimeDelta::seconds(secs),
            attempts: 1,
        })
    }

    fn failed(code: &str) -> Option<StoredAnswer> {
        Some(StoredAnswer::Failed { status: 404, code: code.to_owned(), message: "gone".to_owned() })
    }

    #[test]
    fn outcomes_follow_stage_answer_and_deferral() {
        use crate::lifecycle::{AdviceDecision, Confirmation, Unconfirmed};
        let queue = QueueId::parse("11111111-2222-3333-4444-555555555555").expect("uuid");
        let advice = |confirmation| StoredAnswer::Advised { queue, decision: AdviceDecision::Transfer, confirmation };
        let confirmed = advice(Some(Confirmation::Confirmed { queue, after: Duration::from_secs(9) }));
        let unconfirmed = advice(Some(Confirmation::Unconfirmed { why: Unconfirmed::StillWithFlow }));
        let wait = StoredAnswer::Advised {
            queue,
            decision: AdviceDecision::Defer { retry_after: Duration::from_secs(5) },
            confirmation: None,
        };
        assert_eq!(Outcome::of(Stage::Transferred, None, false), Outcome::Transferred);
        assert_eq!(Outcome::of(Stage::Transferred, None, true), Outcome::TransferredAfterDeferral);
        assert_eq!(Outcome::of(Stage::Advised, Some(&confirmed), false), Outcome::Confirmed);
        assert_eq!(Outcome::of(Stage::Advised, Some(&unconfirmed), false), Outcome::Unconfirmed);
        assert_eq!(Outcome::of(Stage::Advised, Some(&advice(None)), false), Outcome::InProgress);
        assert_eq!(Outcome::of(Stage::Advised, Some(&wait), false), Outcome::AdvisedDefer);
        assert_eq!(
            Outcome::of(Stage::Failed, failed("conversation_not_found").as_ref(), false),
            Outcome::Failed { cause: "not_found".to_owned() }
        );
        assert_eq!(Outcome::of(Stage::Failed, None, false), Outcome::Failed { cause: "rejected".to_owned() });
        assert_eq!(Outcome::of(Stage::Abandoned, None, false), Outcome::Abandoned);
        assert_eq!(Outcome::of(Stage::Deferred, None, true), Outcome::InProgress);
        assert_eq!(Outcome::of(Stage::TransferPending, None, false), Outcome::InProgress);
    }

    #[test]
    fn a_transferred_summary_reached_the_queue_at_its_last_change() {
        let s = summary("2026-01-01T10:00:00Z", 42, Stage::Transferred, None, false);
        assert_eq!(s.to_queue, Some(Duration::from_secs(42)));
        assert_eq!(s.finished_at, Some(at("2026-01-01T10:00:42Z")));
        let open = summary("2026-01-01T10:00:00Z", 42, Stage::Deferred, None, true);
        assert_eq!((open.to_queue, open.finished_at), (None, None));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of_millis((1..=100).rev().collect());
        assert_eq!((p.count, p.p50, p.p95), (100, Some(Duration::from_millis(50)), Some(Duration::from_millis(95))));
        let one = Percentiles::of_millis(vec![7]);
        assert_eq!((one.p50, one.p95), (Some(Duration::from_millis(7)), Some(Duration::from_millis(7))));
        assert_eq!(Percentiles::of_millis(Vec::new()), Percentiles::default());
    }

    #[test]
    fn the_fold_counts_every_covered_summary_once_in_each_view() {
        // Arrange: a 24 h window (hour buckets); one summary outside it.
        let filter = InsightsFilter::new(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"), None).expect("ok");
        let mut builder = InsightsBuilder::new(filter);
        let summaries = [
            summary("2026-01-01T00:10:00Z", 2, Stage::Transferred, None, false),
            summary("2026-01-01T00:20:00Z", 4, Stage::Transferred, None, false),
            summary("2026-01-01T05:00:00Z", 300, Stage::Transferred, None, true),
            summary("2026-01-01T23:59:59Z", 1, Stage::Failed, failed("conversation_not_found"), false),
            summary("2026-01-02T00:00:00Z", 1, Stage::Transferred, None, false),
        ];

        // Act
        for s in &summaries {
            builder.add(s);
        }
        let insights = builder.finish();

        // Assert
        assert_eq!(insights.total, 4);
        assert_eq!(insights.over_time.len(), 24);
        assert_eq!(insights.over_time[0].total(), 2);
        assert_eq!(insights.over_time[5].counts[&OutcomeKind::TransferredAfterDeferral], 1);
        assert_eq!(insights.over_time[23].counts[&OutcomeKind::Failed], 1);
        assert_eq!(insights.over_time.iter().map(TimeBucket::total).sum::<u64>(), 4);
        assert_eq!(insights.by_outcome[&OutcomeKind::Transferred], 2);
        assert_eq!(insights.by_reason_queue.iter().map(ReasonQueueRow::total).sum::<u64>(), 4);
        assert_eq!(insights.to_queue.count, 3);
        assert_eq!(insights.to_queue.p50, Some(Duration::from_secs(4)));
        assert_eq!(insights.deferral_wait.p95, Some(Duration::from_secs(300)));
        assert_eq!(insights.failures.get("not_found"), Some(&1));
        assert_eq!(insights.confirmation.display(), "n/a");
    }

    #[test]
    fn windows_are_checked_and_bucketed_by_length() {
        let since = at("2026-01-01T00:00:00Z");
        assert_eq!(InsightsFilter::new(since, since, None), Err(InvalidWindow::NotAfterSince));
        assert_eq!(InsightsFilter::new(since, since + TimeDelta::days(401), None), Err(InvalidWindow::TooLong));
        let two_days = InsightsFilter::new(since, since + TimeDelta::hours(48), None).expect("ok");
        assert_eq!(two_days.bucket(), Bucket::Hour);
        let week = InsightsFilter::new(since, since + TimeDelta::days(7), None).expect("ok");
        assert_eq!(week.bucket(), Bucket::Day);
    }

    #[test]
    fn durations_and_rates_print_with_one_decimal() {
        assert_eq!(format_seconds(Some(Duration::from_millis(12_345))), "12.3 s");
        assert_eq!(format_seconds(None), "–");
        assert_eq!(ConfirmationRate { confirmed: 4, unconfirmed: 3 }.display(), "57.1 %");
    }
}
