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
