//! Admission (CONTRACT §5.4): whether a queue can take one more conversation now, judged from a
//! capacity snapshot.

use std::time::Duration;

use crate::ids::QueueId;

/// A queue's live capacity, as observed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacitySnapshot {
    /// The queue observed.
    pub queue: QueueId,
    /// Agents on queue and idle.
    pub idle_agents: u32,
    /// Agents on queue in any routing status.
    pub on_queue_agents: u32,
    /// Conversations waiting in the queue.
    pub waiting: u32,
    /// The estimated wait for a message, when asked for and known.
    pub estimated_wait: Option<Duration>,
}

/// The admission rule: at least `min_idle_agents` idle, at most `max_waiting` waiting and at most
/// `max_wait` estimated wait. `min_idle_agents == 0` turns the capacity check off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// `HANDOFF_MIN_IDLE_AGENTS`.
    pub min_idle_agents: u32,
    /// `HANDOFF_MAX_WAITING`.
    pub max_waiting: Option<u32>,
    /// `HANDOFF_MAX_WAIT_SECS`.
    pub max_wait: Option<Duration>,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        Self { min_idle_agents: 1, max_waiting: None, max_wait: None }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The queue can take the conversation.
    Admit,
    /// It cannot; the text says which limit failed (for logs and the record's history).
    Refuse(String),
}

impl AdmissionPolicy {
    /// Whether capacity is checked at all.
    pub fn checks_capacity(&self) -> bool {
        self.min_idle_agents > 0
    }

    /// Whether the estimated wait must be fetched.
    pub fn needs_estimated_wait(&self) -> bool {
        self.checks_capacity() && self.max_wait.is_some()
    }

    /// Judges one snapshot. An unknown estimated wait does not refuse on its own: the idle-agent
    /// and waiting limits already held.
    pub fn judge(&self, snapshot: &CapacitySnapshot) -> Admission {
        if !self.checks_capacity() {
            return Admission::Admit;
        }
        if snapshot.idle_agents < self.min_idle_agents {
            return Admission::Refuse(format!(
                "{} idle agents, fewer than {}",
                snapshot.idle_agents, self.min_idle_agents
            ));
        }
        if let Some(max) = self.max_waiting {
            if snapshot.waiting > max {
                return Admission::Refuse(format!("{} waiting, more than {max}", snapshot.waiting));
            }
        }
        if let (Some(max), Some(ewt)) = (self.max_wait, snapshot.estimated_wait) {
            if ewt > max {
                return Admission::Refuse(format!("estimated wait {}s, more than {}s", ewt.as_secs(), max.as_secs()));
            }
        }
        Admission::Admit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot(idle: u32, waiting: u32, ewt_secs: Option<u64>) -> CapacitySnapshot {
        CapacitySnapshot {
            queue: QueueId::parse("00000000-0000-4000-8000-000000000001").expect("valid"),
            idle_agents: idle,
            on_queue_agents: idle + 2,
            waiting,
            estimated_wait: ewt_secs.map(Duration::from_secs),
        }
    }

    fn policy(min_idle: u32, max_waiting: Option<u32>, max_wait_secs: Option<u64>) -> AdmissionPolicy {
        AdmissionPolicy { min_idle_agents: min_idle, max_waiting, max_wait: max_wait_secs.map(Duration::from_secs) }
    }

    #[test]
    fn the_default_policy_admits_one_idle_agent_and_refuses_none() {
        let policy = AdmissionPolicy::default();
        assert_eq!(policy.judge(&snapshot(1, 50, Some(9_999))), Admission::Admit);
        assert!(matches!(policy.judge(&snapshot(0, 0, None)), Admission::Refuse(why) if why.contains("idle")));
    }

    #[test]
    fn too_many_waiting_conversations_refuse() {
        let policy = policy(1, Some(3), None);
        assert_eq!(policy.judge(&snapshot(2, 3, None)), Admission::Admit);
        assert!(matches!(policy.judge(&snapshot(2, 4, None)), Admission::Refuse(why) if why.contains("waiting")));
    }

    #[test]
    fn a_long_estimated_wait_refuses_but_an_unknown_one_does_not() {
        let policy = policy(1, None, Some(60));
        assert_eq!(policy.judge(&snapshot(1, 0, Some(60))), Admission::Admit);
        assert!(
            matches!(policy.judge(&snapshot(1, 0, Some(61))), Admission::Refuse(why) if why.contains("estimated wait"))
        );
        assert_eq!(policy.judge(&snapshot(1, 0, None)), Admission::Admit);
    }

    #[test]
    fn the_estimated_wait_is_fetched_only_when_capacity_is_checked_and_a_limit_is_set() {
        assert!(policy(1, None, Some(60)).needs_estimated_wait());
        assert!(!policy(1, None, None).needs_estimated_wait());
        assert!(!policy(0, None, Some(60)).needs_estimated_wait());
        assert!(!policy(0, None, None).checks_capacity());
    }

    fn any_snapshot() -> impl Strategy<Value = CapacitySnapshot> {
        (any::<u32>(), any::<u32>(), prop::option::of(0u64..100_000))
            .prop_map(|(idle, waiting, ewt)| snapshot(idle % 1000, waiting, ewt))
    }

    proptest! {
        #[test]
        fn with_min_idle_zero_everything_is_admitted(
            snapshot in any_snapshot(),
            max_waiting in prop::option::of(any::<u32>()),
            max_wait in prop::option::of(0u64..100_000),
        ) {
            prop_assert_eq!(policy(0, max_waiting, max_wait).judge(&snapshot), Admission::Admit);
        }

        #[test]
        fn judge_refuses_whenever_idle_is_below_the_minimum(
            min_idle in 1u32..50,
            idle in 0u32..50,
            waiting in any::<u32>(),
            max_waiting in prop::option::of(any::<u32>()),
            max_wait in prop::option::of(0u64..100_000),
            ewt in prop::option::of(0u64..100_000),
        ) {
            // Arrange
            let policy = policy(min_idle, max_waiting, max_wait);

            // Act
            let verdict = policy.judge(&snapshot(idle, waiting, ewt));

            // Assert
            let within = idle >= min_idle
                && max_waiting.is_none_or(|m| waiting <= m)
                && !matches!((max_wait, ewt), (Some(m), Some(e)) if e > m);
            prop_assert_eq!(verdict == Admission::Admit, within);
        }
    }
}
