//! The pre-aggregated insights (migration 0006), shared by both backends: which parts of a window
//! come from the day counts and which from the records ([`ReadPlan`]), and adding both into the
//! domain's [`InsightsBuilder`], the one place figures are computed.
//!
//! A window's figures are the counts of its whole UTC days (`insights_rollup`), plus the records
//! of those days not counted yet (`rolled_up` false: in progress, or finished since the last
//! roll-up), plus every record of the hours outside whole days (the edges; all of a window of two
//! days or less, whose chart has hour buckets). Read in one snapshot, the three never overlap and
//! miss nothing, whatever the roll-up has reached.

use chrono::{DateTime, Utc};
use handoff_domain::insights::{Bucket, InsightsBuilder, InsightsFilter, Outcome};
use handoff_domain::ports::LedgerError;
use handoff_domain::QueueId;

use crate::codec::{corrupt, micros};

/// One UTC day in microseconds: `day = created_at_µs / DAY_MICROS` (times are after 1970).
pub(crate) const DAY_MICROS: i64 = 86_400_000_000;

/// Records rolled up per batch (one short write transaction each).
pub(crate) const ROLL_UP_BATCH: usize = 2_000;

/// Batches an insights read rolls up before it reads, at most: a read never waits for a long
/// backlog (what is left is read from the records, exactly, and rolled up by the next reads).
pub(crate) const ROLL_UP_BATCHES_PER_READ: usize = 5;

/// Where the figures of a window come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadPlan {
    /// Read every record created in these ranges (µs, `[start, end)`).
    pub(crate) edges: Vec<(i64, i64)>,
    /// Whole days `[first, end)` (day numbers): their counts, plus their records not rolled up.
    pub(crate) days: Option<(i64, i64)>,
}

impl ReadPlan {
    /// The plan of `filter`'s window.
    pub(crate) fn of(filter: &InsightsFilter) -> Self {
        let since = micros(filter.since()).timestamp_micros();
        let until = micros(filter.until()).timestamp_micros();
        let first = since.div_euclid(DAY_MICROS) + i64::from(since.rem_euclid(DAY_MICROS) != 0);
        let end = until.div_euclid(DAY_MICROS);
        if filter.bucket() == Bucket::Hour || first >= end {
            return Self { edges: vec![(since, until)], days: None };
        }
        let edges =
            [(since, first * DAY_MICROS), (end * DAY_MICROS, until)].into_iter().filter(|(a, b)| a < b).collect();
        Self { edges, days: Some((first, end)) }
    }
}

/// The start of day `day`.
pub(crate) fn day_start(day: i64) -> Result<DateTime<Utc>, LedgerError> {
    day.checked_mul(DAY_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| corrupt("insights_rollup", format_args!("day {day} out of range")))
}

/// A stored outcome name back as an outcome.
pub(crate) fn outcome(name: Option<&str>) -> Result<Outcome, LedgerError> {
    // NULL only on a row an older version wrote after 0006 was applied: still in progress to us.
    let Some(name) = name else { return Ok(Outcome::InProgress) };
    Outcome::parse(name).ok_or_else(|| corrupt("insights", format_args!("unknown outcome `{name}`")))
}

/// A stored queue (text; `''` for none) back as a queue.
pub(crate) fn queue(text: Option<&str>) -> Result<Option<QueueId>, LedgerError> {
    match text {
        None | Some("") => Ok(None),
        // The domain's generic check only, as for every stored platform id (codec).
        Some(raw) => {
            raw.parse::<QueueId>().map(Some).map_err(|e| corrupt("insights queue_id", format_args!("`{raw}`: {e}")))
        }
    }
}

/// Adds `n` handoffs to `builder`.
pub(crate) fn add(
    builder: &mut InsightsBuilder,
    created_at: DateTime<Utc>,
    reason: &str,
    queue_id: Option<QueueId>,
    outcome_name: Option<&str>,
    n: u64,
) -> Result<(), LedgerError> {
    let outcome = outcome(outcome_name)?;
    builder.add_count(created_at, reason, queue_id, &outcome, n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid").with_timezone(&Utc)
    }

    fn plan(since: &str, until: &str) -> ReadPlan {
        ReadPlan::of(&InsightsFilter::new(at(since), at(until), None).expect("window"))
    }

    #[test]
    fn whole_days_come_from_the_counts_and_the_edges_from_the_records() {
        // Arrange + Act
        let p = plan("2026-01-01T10:30:00Z", "2026-01-05T06:00:00Z");

        // Assert
        let day = |s: &str| at(s).timestamp_micros() / DAY_MICROS;
        assert_eq!(p.days, Some((day("2026-01-02T00:00:00Z"), day("2026-01-05T00:00:00Z"))));
        assert_eq!(
            p.edges,
            vec![
                (at("2026-01-01T10:30:00Z").timestamp_micros(), at("2026-01-02T00:00:00Z").timestamp_micros()),
                (at("2026-01-05T00:00:00Z").timestamp_micros(), at("2026-01-05T06:00:00Z").timestamp_micros()),
            ]
        );
    }

    #[test]
    fn aligned_windows_have_no_edges_and_short_ones_no_days() {
        let p = plan("2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z");
        assert!(p.edges.is_empty());
        assert_eq!(p.days.map(|(a, b)| b - a), Some(7));
        let two_days = plan("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z");
        assert_eq!((two_days.days, two_days.edges.len()), (None, 1));
        let since = at("2026-01-01T12:00:00Z");
        let no_whole_day =
            ReadPlan::of(&InsightsFilter::new(since, since + TimeDelta::hours(50), None).expect("window"));
        assert_eq!(no_whole_day.days.map(|(a, b)| b - a), Some(1));
    }

    #[test]
    fn stored_names_read_back() {
        assert_eq!(outcome(Some("failed:not_found")).unwrap(), Outcome::Failed { cause: "not_found".to_owned() });
        assert_eq!(outcome(Some("transferred_after_deferral")).unwrap(), Outcome::TransferredAfterDeferral);
        assert!(outcome(Some("nonsense")).is_err());
        assert_eq!(queue(Some("")).unwrap(), None);
    }
}
