//! Which handoffs the figures cover ([`InsightsFilter`]) and how the over-time chart buckets them.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::request::HandoffReason;

use super::{HandoffSummary, MAX_INSIGHTS_WINDOW};

/// Which handoffs the figures cover: created in `[since, until)`, optionally of one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsightsFilter {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    reason: Option<HandoffReason>,
}

/// A window that cannot be reported on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWindow {
    /// `until` is not after `since`.
    #[error("must be after `since`")]
    NotAfterSince,
    /// Longer than [`MAX_INSIGHTS_WINDOW`].
    #[error("the window may cover at most 400 days")]
    TooLong,
}

impl InsightsFilter {
    /// Handoffs created in `[since, until)`, of `reason` when given.
    ///
    /// # Errors
    /// [`InvalidWindow`] when `until <= since` or the window is longer than [`MAX_INSIGHTS_WINDOW`].
    pub fn new(
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        reason: Option<HandoffReason>,
    ) -> Result<Self, InvalidWindow> {
        if until <= since {
            return Err(InvalidWindow::NotAfterSince);
        }
        if (until - since).to_std().map_or(true, |d| d > MAX_INSIGHTS_WINDOW) {
            return Err(InvalidWindow::TooLong);
        }
        Ok(Self { since, until, reason })
    }

    /// The start (inclusive).
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// The end (exclusive).
    pub fn until(&self) -> DateTime<Utc> {
        self.until
    }

    /// The reason, if filtered by one.
    pub fn reason(&self) -> Option<&HandoffReason> {
        self.reason.as_ref()
    }

    /// Whether `summary` is covered.
    pub fn covers(&self, summary: &HandoffSummary) -> bool {
        summary.created_at >= self.since
            && summary.created_at < self.until
            && self.reason.as_ref().is_none_or(|r| r.as_str() == summary.reason)
    }

    /// Hour buckets up to two days, day buckets beyond.
    pub fn bucket(&self) -> Bucket {
        if self.until - self.since <= TimeDelta::hours(48) {
            Bucket::Hour
        } else {
            Bucket::Day
        }
    }
}

/// The width of a time bucket of the over-time chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One hour (UTC).
    Hour,
    /// One day (UTC).
    Day,
}

impl Bucket {
    /// The width.
    pub fn width(self) -> TimeDelta {
        match self {
            Bucket::Hour => TimeDelta::hours(1),
            Bucket::Day => TimeDelta::days(1),
        }
    }

    /// The start of the bucket holding `at`.
    pub fn start_of(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.width()).unwrap_or(at)
    }

    /// `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }
}
