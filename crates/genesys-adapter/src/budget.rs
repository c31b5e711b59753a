//! The per-token call budget: how many Genesys calls the current rate-limit window still allows,
//! from the `inin-ratelimit-allowed` / `-count` / `-reset` headers of every answer, and who may
//! spend them.
//!
//! Genesys counts requests per client-credentials token in one-minute windows (300 by default,
//! `reference/genesys-api.md` §7; sources in `docs/genesys/api-notes.md`). Past the allowance it
//! answers 429, and every 429 costs a handoff its latency and the retry budget. So the client
//! spends the window deliberately:
//!
//! - **Foreground** calls (a live handoff, the default) come first. A new handoff starts with its
//!   conversation lookup; that call is admitted only when the window still holds a whole handoff
//!   (`handoff_calls` calls, promised to it for [`PROMISE_HORIZON`]), otherwise it is refused at
//!   once with [`PortError::RateLimited`](handoff_domain::ports::PortError::RateLimited) and the
//!   window's reset as its wait, which the service answers 503 + `Retry-After`. The other
//!   foreground calls are refused only when the window is spent.
//! - **Background** calls (analytics tags from the outbox, deferral re-checks, confirmation reads)
//!   run inside [`in_background`]. They never touch the reserve (`reserve_percent` of the
//!   allowance), and they are paced over the window: by the time a fraction `f` of the window has
//!   passed, background work has used at most `f · (allowed − reserve)` calls.
//!
//! The estimate of calls used counts every call as it is sent and takes the highest
//! `inin-ratelimit-count` seen whenever that is higher (calls of other users of the token, calls
//! before this process started), plus the calls promised to handoffs admitted in the last
//! [`PROMISE_HORIZON`] (conservative: a promised call already sent is counted twice for a
//! moment). Until the first headers arrive the allowance is unknown and nothing is refused. When
//! the window's reset has passed, the count starts again from zero.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::retry::RateLimitSnapshot;
use crate::stats::Endpoint;

/// Genesys counts per minute (`client.credentials.token.rate.per.minute`).
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How long the calls promised to an admitted handoff are held for it. A handoff's calls are
/// answered well within this in a healthy org; afterwards they show in `inin-ratelimit-count`.
pub const PROMISE_HORIZON: Duration = Duration::from_secs(3);
/// Default share of the allowance kept from background work, in percent.
pub const DEFAULT_RESERVE_PERCENT: u8 = 20;
/// Default Genesys calls one handoff needs in the foreground (lookup, observations query when not
/// pushed, attributes, replace).
pub const DEFAULT_HANDOFF_CALLS: u32 = 4;

/// Who is spending a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A live handoff (the default outside [`in_background`]).
    Foreground,
    /// Work nobody is waiting for: analytics tags, deferral re-checks, confirmation reads.
    Background,
}

tokio::task_local! {
    static PRIORITY: Priority;
}

/// Runs `work` with every Genesys call it makes counted as [`Priority::Background`]: paced over
/// the window and never into the reserve. The app's workers wrap their ticks in it.
pub async fn in_background<F: Future>(work: F) -> F::Output {
    PRIORITY.scope(Priority::Background, work).await
}

/// The priority of the calling task.
pub(crate) fn current_priority() -> Priority {
    PRIORITY.try_with(|p| *p).unwrap_or(Priority::Foreground)
}

/// The budget as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetSnapshot {
    /// `inin-ratelimit-allowed` of the current window; `None` before any headers.
    pub allowed: Option<u64>,
    /// Calls counted as used in the window (the estimate described in the module doc).
    pub used: u64,
    /// Calls kept from background work (`reserve_percent` of `allowed`).
    pub reserve: u64,
    /// Time until the window resets, when known.
    pub reset_in: Option<Duration>,
    /// Foreground calls refused because the window was spent (each one a 503, no upstream call).
    pub refused_foreground: u64,
    /// Background calls held back (reserve or pacing).
    pub refused_background: u64,
}

#[derive(Debug, Default)]
struct Window {
    allowed: Option<u64>,
    /// Calls sent in this window: counted locally as they go, raised to `inin-ratelimit-count`.
    sent: u64,
    /// When the window resets (observed time + `inin-ratelimit-reset`).
    ends: Option<Instant>,
    /// Background calls sent in this window.
    background: u64,
    /// Handoffs admitted: when, and how many calls are still promised beyond the lookup.
    promises: VecDeque<Instant>,
}

impl Window {
    fn roll(&mut self, now: Instant) {
        if self.ends.is_some_and(|ends| now >= ends) {
            self.sent = 0;
            self.background = 0;
            self.ends = None;
        }
        while self.promises.front().is_some_and(|at| now.duration_since(*at) >= PROMISE_HORIZON) {
            self.promises.pop_front();
        }
    }

    fn reset_in(&self, now: Instant) -> Duration {
        // Unknown reset: a whole window is the honest upper bound.
        self.ends.map_or(RATE_WINDOW, |ends| ends.saturating_duration_since(now)).max(Duration::from_secs(1))
    }
}

/// The live budget of one client (one token at a time).
#[derive(Debug)]
pub(crate) struct CallBudget {
    reserve_percent: u8,
    handoff_calls: u32,
    window: Mutex<Window>,
    refused_foreground: AtomicU64,
    refused_background: AtomicU64,
}

impl CallBudget {
    pub(crate) fn new(reserve_percent: u8, handoff_calls: u32) -> Self {
        Self {
            reserve_percent: reserve_percent.min(100),
            handoff_calls: handoff_calls.max(1),
            window: Mutex::new(Window::default()),
            refused_foreground: AtomicU64::new(0),
            refused_background: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reserve_of(&self, allowed: u64) -> u64 {
        allowed.saturating_mul(u64::from(self.reserve_percent)) / 100
    }

    fn used(&self, w: &Window) -> u64 {
        let promised =
            u64::try_from(w.promises.len()).unwrap_or(u64::MAX).saturating_mul(u64::from(self.handoff_calls - 1));
        w.sent.saturating_add(promised)
    }

    /// Lets one call of `endpoint`, at the calling task's priority, through (counting it) or
    /// refuses it with the time until the window resets.
    pub(crate) fn spend(&self, endpoint: Endpoint, now: Instant) -> Result<(), Duration> {
        self.spend_as(current_priority(), endpoint, now)
    }

    pub(crate) fn spend_as(&self, priority: Priority, endpoint: Endpoint, now: Instant) -> Result<(), Duration> {
        let mut w = self.lock();
        w.roll(now);
        if let Some(allowed) = w.allowed {
            let used = self.used(&w);
            let refused = match priority {
                Priority::Foreground if endpoint == Endpoint::ConversationGet => {
                    used.saturating_add(u64::from(self.handoff_calls)) > allowed
                }
                // The calls promised to admitted handoffs are theirs to spend.
                Priority::Foreground => w.sent >= allowed,
                Priority::Background => {
                    let share = allowed.saturating_sub(self.reserve_of(allowed));
                    let left = w.ends.map_or(RATE_WINDOW, |e| e.saturating_duration_since(now)).min(RATE_WINDOW);
                    // The share of the window that has passed, at least one second's worth, so
                    // background work is never locked out of a fresh window.
                    let passed = (RATE_WINDOW - left).max(Duration::from_secs(1));
                    let paced = u64::try_from(u128::from(share) * passed.as_millis() / RATE_WINDOW.as_millis().max(1))
                        .unwrap_or(u64::MAX);
                    used.saturating_add(1).saturating_add(self.reserve_of(allowed)) > allowed
                        || w.background.saturating_add(1) > paced
                }
            };
            if refused {
                let counter = match priority {
                    Priority::Foreground => &self.refused_foreground,
                    Priority::Background => &self.refused_background,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return Err(w.reset_in(now));
            }
        }
        if priority == Priority::Foreground && endpoint == Endpoint::ConversationGet && self.handoff_calls > 1 {
            w.promises.push_back(now);
        }
        if priority == Priority::Background {
            w.background = w.background.saturating_add(1);
        }
        w.sent = w.sent.saturating_add(1);
        Ok(())
    }

    /// Takes in the `inin-ratelimit-*` headers of an answer.
    pub(crate) fn observe(&self, seen: &RateLimitSnapshot) {
        let mut w = self.lock();
        w.roll(seen.observed_at);
        let ends = seen.reset.map(|reset| seen.observed_at + reset);
        // A reset that ends clearly after the known one is a new window (the reset header is
        // rounded up to whole seconds, so allow for that).
        let new_window = match (w.ends, ends) {
            (Some(old), Some(new)) => new > old + Duration::from_secs(2),
            _ => false,
        };
        if new_window {
            w.sent = seen.count;
            w.background = 0;
        } else {
            w.sent = w.sent.max(seen.count);
        }
        if ends.is_some() {
            w.ends = ends;
        }
        w.allowed = Some(seen.allowed);
    }

    /// Whether background work can spend a call now (the worker skips its tick otherwise).
    pub(crate) fn background_open(&self, now: Instant) -> bool {
        let mut w = self.lock();
        w.roll(now);
        let Some(allowed) = w.allowed else { return true };
        self.used(&w).saturating_add(1).saturating_add(self.reserve_of(allowed)) <= allowed
    }

    pub(crate) fn snapshot(&self, now: Instant) -> BudgetSnapshot {
        let mut w = self.lock();
        w.roll(now);
        BudgetSnapshot {
            allowed: w.allowed,
            used: self.used(&w),
            reserve: w.allowed.map_or(0, |a| self.reserve_of(a)),
            reset_in: w.ends.map(|e| e.saturating_duration_since(now)),
            refused_foreground: self.refused_foreground.load(Ordering::Relaxed),
            refused_background: self.refused_background.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(allowed: u64, count: u64, reset_secs: u64, at: Instant) -> RateLimitSnapshot {
        RateLimitSnapshot { allowed, count, reset: Some(Duration::from_secs(reset_secs)), observed_at: at }
    }

    /// Spends `n` calls of `endpoint` at `priority`; returns how many were let through.
    fn spend_n(budget: &CallBudget, priority: Priority, endpoint: Endpoint, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| budget.spend_as(priority, endpoint, now).is_ok()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_refused_before_the_first_headers() {
        // Arrange
        let budget = CallBudget::new(20, 4);
        let now = Instant::now();

        // Act
        let foreground = spend_n(&budget, Priority::Foreground, Endpoint::ConversationGet, 500, now);
        let background = spend_n(&budget, Priority::Background, Endpoint::TagsPut, 500, now);

        // Assert
        assert_eq!((foreground, background), (500, 500));
        assert_eq!(budget.snapshot(now).allowed, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_handoff_is_refused_with_the_reset_when_the_window_cannot_hold_it() {
        // Arrange: 300 allowed, 294 counted, 30 s to the reset
        let budget = CallBudget::new(20, 4);
        let now = Instant::now();
        budget.observe(&seen(300, 294, 30, now));

        // Act: one handoff fits (294 + 4 ≤ 300), the next does not (298 + 4 > 300)
        let first = budget.spend_as(Priority::Foreground, Endpoint::ConversationGet, now);
        let second = budget.spend_as(Priority::Foreground, Endpoint::ConversationGet, now);

        // Assert
        assert_eq!(first, Ok(()));
        assert_eq!(second, Err(Duration::from_secs(30)));
        assert_eq!(budget.snapshot(now).refused_foreground, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_calls_of_an_admitted_handoff_are_not_refused_while_the_window_lasts() {
        // Arrange: room for exactly one handoff
        let budget = CallBudget::new(20, 4);
        let now = Instant::now();
        budget.observe(&seen(300, 296, 30, now));

        // Act: lookup, observations, attributes, replace
        let lookup = budget.spend_as(Priority::Foreground, Endpoint::ConversationGet, now);
        let another = budget.spend_as(Priority::Foreground, Endpoint::ConversationGet, now);
        // Its answers arrive: the count now includes the lookup.
        budget.observe(&seen(300, 297, 30, now));
        let rest = spend_n(&budget, Priority::Foreground, Endpoint::AttributesPatch, 1, now)
            + spend_n(&budget, Priority::Foreground, Endpoint::Replace, 1, now);

        // Assert
        assert_eq!(lookup, Ok(()));
        assert!(another.is_err(), "a second handoff would overrun the window");
        assert_eq!(rest, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_leaves_the_reserve_to_live_handoffs() {
        // Arrange: late in the window (pacing allows the whole share), 230 of 300 counted
        let budget = CallBudget::new(20, 4);
        let now = Instant::now();
        budget.observe(&seen(300, 230, 1, now));

        // Act: background may go up to 300 − 60 = 240
        let background = spend_n(&budget, Priority::Background, Endpoint::TagsPut, 50, now);
        let foreground = spend_n(&budget, Priority::Foreground, Endpoint::Replace, 100, now);

        // Assert: 10 background calls, then the 60 reserved calls went to the foreground
        assert_eq!(background, 10);
        assert_eq!(foreground, 60);
        let snapshot = budget.snapshot(now);
        assert_eq!((snapshot.allowed, snapshot.used, snapshot.reserve), (Some(300), 300, 60));
        assert_eq!((snapshot.refused_background, snapshot.refused_foreground), (40, 40));
        assert!(!budget.background_open(now));
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_is_paced_over_the_window() {
        // Arrange: a fresh window (60 s to the reset), nothing used
        let budget = CallBudget::new(20, 4);
        let start = Instant::now();
        budget.observe(&seen(300, 1, 60, start));

        // Act: a backlog of 1000 tags tries to go out at 0 s, 15 s and 30 s
        let at_start = spend_n(&budget, Priority::Background, Endpoint::TagsPut, 1000, start);
        tokio::time::advance(Duration::from_secs(15)).await;
        let at_15 = spend_n(&budget, Priority::Background, Endpoint::TagsPut, 1000, Instant::now());
        tokio::time::advance(Duration::from_secs(15)).await;
        let at_30 = spend_n(&budget, Priority::Background, Endpoint::TagsPut, 1000, Instant::now());

        // Assert: 240 calls for background over the window: 4 (1 s), 60 by 15 s, 120 by 30 s
        assert_eq!((at_start, at_start + at_15, at_start + at_15 + at_30), (4, 60, 120));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_starts_over_after_its_reset() {
        // Arrange: spent
        let budget = CallBudget::new(20, 4);
        let now = Instant::now();
        budget.observe(&seen(300, 300, 10, now));
        assert!(budget.spend_as(Priority::Foreground, Endpoint::ConversationGet, now).is_err());

        // Act
        tokio::time::advance(Duration::from_secs(10)).await;
        let later = Instant::now();
        let after_reset = budget.spend_as(Priority::Foreground, Endpoint::ConversationGet, later);

        // Assert
        assert_eq!(after_reset, Ok(()));
        assert!(budget.background_open(later));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_count_when_sent_and_a_late_lower_count_does_not_lower_the_estimate() {
        // Arrange: 5 calls left
        let budget = CallBudget::new(0, 1);
        let now = Instant::now();
        budget.observe(&seen(10, 5, 30, now));

        // Act: five calls whose answers have not come back, then one more
        let five = spend_n(&budget, Priority::Foreground, Endpoint::Replace, 5, now);
        let sixth = budget.spend_as(Priority::Foreground, Endpoint::Replace, now);
        // An answer sent before them arrives late, with a lower count.
        budget.observe(&seen(10, 7, 30, now));

        // Assert
        assert_eq!(five, 5);
        assert_eq!(sixth, Err(Duration::from_secs(30)));
        assert_eq!(budget.snapshot(now).used, 10);
    }

    #[tokio::test]
    async fn work_inside_in_background_is_background() {
        assert_eq!(current_priority(), Priority::Foreground);
        assert_eq!(in_background(async { current_priority() }).await, Priority::Background);
    }
}
