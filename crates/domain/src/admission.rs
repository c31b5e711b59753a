//! Admission (CONTRACT §5.4, issue 11): whether a queue can take one more conversation now,
//! judged from a capacity snapshot.
//!
//! The default model counts **free message slots** (a messaging agent carries several
//! conversations at once): agents that can take work × message capacity − interacting −
//! alerting − waiting message conversations. The older model, idle agents, stays available.
//! Unknown figures are never read as zero: the rule refuses only on what the known figures
//! prove, and admits (saying what it did not know) otherwise.

use std::time::Duration;

use crate::figures::{FreeSlots, QueueFigures};
use crate::ids::QueueId;

/// A queue's live capacity, as observed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacitySnapshot {
    /// The queue observed.
    pub queue: QueueId,
    /// Its figures; each one may be unknown.
    pub figures: QueueFigures,
    /// Conversations of the message media type one agent may carry at once (the org's
    /// utilization `message.maximumCapacity`, or the configured override); `None` when unknown.
    pub message_capacity: Option<u32>,
    /// The estimated wait for a message, when asked for and known.
    pub estimated_wait: Option<Duration>,
}

impl CapacitySnapshot {
    /// A snapshot of `queue` with nothing known: how an adapter without a capacity source for
    /// the target answers [`QueuePort::capacity`](crate::ports::QueuePort::capacity) (never an
    /// error, never a guessed zero). Admission admits it and says so in the record's history
    /// ([`Admission::AdmitUnchecked`]), so a platform that cannot tell never defers every guest.
    pub fn unknown(queue: QueueId) -> Self {
        Self { queue, figures: QueueFigures::UNKNOWN, message_capacity: None, estimated_wait: None }
    }

    /// Whether nothing at all is known about the target's capacity.
    pub fn is_unknown(&self) -> bool {
        self.figures.is_unknown() && self.message_capacity.is_none() && self.estimated_wait.is_none()
    }

    /// The free message slots the figures and the capacity give.
    pub fn free_slots(&self) -> FreeSlots {
        self.figures.free_slots(self.message_capacity)
    }

    /// Tests of other modules: every figure known, `idle` idle agents and nobody else on queue,
    /// `waiting` waiting, a message capacity of 1 (so free slots = `idle` − `waiting`).
    #[cfg(test)]
    pub(crate) fn idle_for_tests(queue: QueueId, idle: u32, waiting: u32) -> Self {
        Self {
            queue,
            figures: QueueFigures {
                agents: Some(crate::figures::AgentCounts { idle, ..Default::default() }),
                interacting: Some(0),
                alerting: Some(0),
                waiting: Some(waiting),
            },
            message_capacity: Some(1),
            estimated_wait: None,
        }
    }
}

/// What admission counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapacityModel {
    /// Free message slots (`HANDOFF_CAPACITY_MODEL=slots`, the default).
    #[default]
    Slots,
    /// Idle agents (`HANDOFF_CAPACITY_MODEL=idle`, the rule before issue 11).
    Idle,
}

impl CapacityModel {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityModel::Slots => "slots",
            CapacityModel::Idle => "idle",
        }
    }
}

/// The admission rule: at least `minimum` free slots (or idle agents, per `model`), at most
/// `max_waiting` waiting and at most `max_wait` estimated wait. `minimum == 0` turns the
/// capacity check off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// `HANDOFF_CAPACITY_MODEL`.
    pub model: CapacityModel,
    /// `HANDOFF_MIN_FREE_SLOTS` (slots) or `HANDOFF_MIN_IDLE_AGENTS` (idle).
    pub minimum: u32,
    /// `HANDOFF_MAX_WAITING`.
    pub max_waiting: Option<u32>,
    /// `HANDOFF_MAX_WAIT_SECS`.
    pub max_wait: Option<Duration>,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        Self { model: CapacityModel::Slots, minimum: 1, max_waiting: None, max_wait: None }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The queue can take the conversation.
    Admit,
    /// Nothing known refuses it, but figures the rule needs were unknown; the text says which
    /// (for logs and the record's history).
    AdmitUnchecked(String),
    /// It cannot; the text says which limit failed (for logs and the record's history).
    Refuse(String),
}

impl Admission {
    /// Whether the queue takes the conversation.
    pub fn admits(&self) -> bool {
        !matches!(self, Admission::Refuse(_))
    }
}

impl AdmissionPolicy {
    /// Whether capacity is checked at all.
    pub fn checks_capacity(&self) -> bool {
        self.minimum > 0
    }

    /// Whether the estimated wait must be fetched.
    pub fn needs_estimated_wait(&self) -> bool {
        self.checks_capacity() && self.max_wait.is_some()
    }

    /// Whether the message capacity (the org's utilization) is needed.
    pub fn needs_message_capacity(&self) -> bool {
        self.checks_capacity() && self.model == CapacityModel::Slots
    }

    /// Judges one snapshot. A known figure past a limit refuses; an unknown one never does. When
    /// the main figure (free slots or idle agents) cannot be settled, the verdict is
    /// [`Admission::AdmitUnchecked`] unless a known limit refuses.
    pub fn judge(&self, snapshot: &CapacitySnapshot) -> Admission {
        if !self.checks_capacity() {
            return Admission::Admit;
        }
        let figures = &snapshot.figures;
        let mut unknown: Option<String> = None;
        match self.model {
            CapacityModel::Slots => {
                let minimum = i64::from(self.minimum);
                match snapshot.free_slots() {
                    FreeSlots::Exactly(free) if free < minimum => {
                        return Admission::Refuse(format!("{free} free message slots, fewer than {minimum}"));
                    }
                    FreeSlots::AtMost(free) if free < minimum => {
                        return Admission::Refuse(format!("at most {free} free message slots, fewer than {minimum}"));
                    }
                    FreeSlots::Exactly(_) => {}
                    FreeSlots::AtMost(_) | FreeSlots::Unknown => {
                        let mut missing = figures.missing();
                        if snapshot.message_capacity.is_none() {
                            missing.push("message capacity");
                        }
                        unknown = Some(format!("free message slots unknown (no {})", missing.join(", ")));
                    }
                }
            }
            CapacityModel::Idle => match figures.agents.map(|a| a.idle) {
                Some(idle) if idle < self.minimum => {
                    return Admission::Refuse(format!("{idle} idle agents, fewer than {}", self.minimum));
                }
                Some(_) => {}
                None => unknown = Some("idle agents unknown (no oOnQueueUsers)".to_owned()),
            },
        }
        if let (Some(max), Some(waiting)) = (self.max_waiting, figures.waiting) {
            if waiting > max {
                return Admission::Refuse(format!("{waiting} waiting, more than {max}"));
            }
        }
        if let (Some(max), Some(ewt)) = (self.max_wait, snapshot.estimated_wait) {
            if ewt > max {
                return Admission::Refuse(format!("estimated wait {}s, more than {}s", ewt.as_secs(), max.as_secs()));
            }
        }
        match unknown {
            Some(why) => Admission::AdmitUnchecked(why),
            None => Admission::Admit,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::figures::AgentCounts;

    fn queue() -> QueueId {
        QueueId::parse("00000000-0000-4000-8000-000000000001").expect("valid")
    }

    /// Every figure known: `idle` idle agents, `busy` interacting agents carrying `chats`
    /// conversations between them, `waiting` waiting.
    fn snapshot(idle: u32, busy: u32, chats: u32, waiting: u32, capacity: u32) -> CapacitySnapshot {
        CapacitySnapshot {
            queue: queue(),
            figures: QueueFigures {
                agents: Some(AgentCounts { idle, interacting: busy, communicating: 0, other: 2 }),
                interacting: Some(chats),
                alerting: Some(0),
                waiting: Some(waiting),
            },
            message_capacity: Some(capacity),
            estimated_wait: None,
        }
    }

    fn policy(
        model: CapacityModel,
        minimum: u32,
        max_waiting: Option<u32>,
        max_wait_secs: Option<u64>,
    ) -> AdmissionPolicy {
        AdmissionPolicy { model, minimum, max_waiting, max_wait: max_wait_secs.map(Duration::from_secs) }
    }

    #[test]
    fn three_agents_in_one_chat_each_with_capacity_four_are_admitted_although_nobody_is_idle() {
        // Arrange: the scenario
        let snapshot = snapshot(0, 3, 3, 0, 4);

        // Act
        let slots = AdmissionPolicy::default().judge(&snapshot);
        let idle = policy(CapacityModel::Idle, 1, None, None).judge(&snapshot);

        // Assert
        assert_eq!(slots, Admission::Admit);
        assert!(matches!(idle, Admission::Refuse(why) if why.contains("0 idle agents")));
    }

    #[test]
    fn a_queue_whose_slots_are_all_taken_is_refused() {
        let verdict = AdmissionPolicy::default().judge(&snapshot(0, 3, 10, 2, 4));
        assert!(matches!(verdict, Admission::Refuse(ref why) if why.contains("0 free message slots")), "{verdict:?}");
    }

    #[test]
    fn too_many_waiting_conversations_refuse() {
        let policy = policy(CapacityModel::Slots, 1, Some(3), None);
        assert_eq!(policy.judge(&snapshot(2, 0, 0, 3, 4)), Admission::Admit);
        assert!(matches!(policy.judge(&snapshot(2, 0, 0, 4, 4)), Admission::Refuse(why) if why.contains("waiting")));
    }

    #[test]
    fn a_target_without_a_capacity_source_is_unknown_and_admitted_under_every_model() {
        let snapshot = CapacitySnapshot::unknown(queue());
        assert!(snapshot.is_unknown());
        assert!(!CapacitySnapshot::idle_for_tests(queue(), 0, 0).is_unknown());
        for model in [CapacityModel::Slots, CapacityModel::Idle] {
            let verdict = policy(model, 1, Some(0), None).judge(&snapshot);
            assert!(matches!(verdict, Admission::AdmitUnchecked(_)), "{model:?}: {verdict:?}");
        }
    }

    #[test]
    fn a_long_estimated_wait_refuses_but_an_unknown_one_does_not() {
        let policy = policy(CapacityModel::Slots, 1, None, Some(60));
        let with = |secs: Option<u64>| CapacitySnapshot {
            estimated_wait: secs.map(Duration::from_secs),
            ..snapshot(1, 0, 0, 0, 4)
        };
        assert_eq!(policy.judge(&with(Some(60))), Admission::Admit);
        assert!(matches!(policy.judge(&with(Some(61))), Admission::Refuse(why) if why.contains("estimated wait")));
        assert_eq!(policy.judge(&with(None)), Admission::Admit);
    }

    #[test]
    fn nothing_known_is_admitted_unchecked_in_both_models() {
        for model in [CapacityModel::Slots, CapacityModel::Idle] {
            let verdict = policy(model, 1, Some(0), Some(1)).judge(&CapacitySnapshot::unknown(queue()));
            assert!(
                matches!(verdict, Admission::AdmitUnchecked(ref why) if why.contains("oOnQueueUsers")),
                "{verdict:?}"
            );
            assert!(verdict.admits());
        }
    }

    #[test]
    fn unknown_user_metrics_decide_on_the_known_waiting_count() {
        // Arrange: the user group did not come back (the mediaType filter of old)
        let figures = QueueFigures { agents: None, interacting: Some(1), alerting: Some(0), waiting: Some(5) };
        let snapshot = CapacitySnapshot { figures, ..snapshot(0, 0, 0, 0, 4) };

        // Act / Assert
        assert!(matches!(
            policy(CapacityModel::Slots, 1, None, None).judge(&snapshot),
            Admission::AdmitUnchecked(why) if why.contains("oOnQueueUsers")
        ));
        assert!(matches!(
            policy(CapacityModel::Slots, 1, Some(4), None).judge(&snapshot),
            Admission::Refuse(why) if why.contains("5 waiting")
        ));
    }

    #[test]
    fn an_unknown_message_capacity_refuses_only_a_queue_nobody_can_serve() {
        let unknown_capacity =
            |idle, busy| CapacitySnapshot { message_capacity: None, ..snapshot(idle, busy, busy, 0, 4) };
        let policy = AdmissionPolicy::default();
        assert!(
            matches!(policy.judge(&unknown_capacity(0, 3)), Admission::AdmitUnchecked(why) if why.contains("message capacity"))
        );
        assert!(matches!(policy.judge(&unknown_capacity(0, 0)), Admission::Refuse(_)));
    }

    #[test]
    fn unknown_conversation_figures_refuse_only_when_the_known_ones_fill_every_slot() {
        // Arrange: 2 agents × 2 slots; oInteracting did not come back
        let partial = |waiting| CapacitySnapshot {
            figures: QueueFigures { interacting: None, ..snapshot(0, 2, 0, waiting, 2).figures },
            ..snapshot(0, 2, 0, waiting, 2)
        };

        // Act / Assert
        assert!(
            matches!(AdmissionPolicy::default().judge(&partial(3)), Admission::AdmitUnchecked(why) if why.contains("oInteracting"))
        );
        assert!(
            matches!(AdmissionPolicy::default().judge(&partial(4)), Admission::Refuse(why) if why.contains("at most 0"))
        );
    }

    #[test]
    fn the_estimated_wait_and_the_capacity_are_fetched_only_when_the_rule_needs_them() {
        assert!(policy(CapacityModel::Slots, 1, None, Some(60)).needs_estimated_wait());
        assert!(!policy(CapacityModel::Slots, 1, None, None).needs_estimated_wait());
        assert!(!policy(CapacityModel::Slots, 0, None, Some(60)).needs_estimated_wait());
        assert!(!policy(CapacityModel::Slots, 0, None, None).checks_capacity());
        assert!(policy(CapacityModel::Slots, 1, None, None).needs_message_capacity());
        assert!(!policy(CapacityModel::Idle, 1, None, None).needs_message_capacity());
        assert!(!policy(CapacityModel::Slots, 0, None, None).needs_message_capacity());
    }

    fn any_snapshot() -> impl Strategy<Value = CapacitySnapshot> {
        (0u32..50, 0u32..50, 0u32..300, any::<u32>(), 0u32..30, prop::option::of(0u64..100_000)).prop_map(
            |(idle, busy, chats, waiting, capacity, ewt)| CapacitySnapshot {
                estimated_wait: ewt.map(Duration::from_secs),
                ..snapshot(idle, busy, chats, waiting, capacity)
            },
        )
    }

    fn any_model() -> impl Strategy<Value = CapacityModel> {
        prop_oneof![Just(CapacityModel::Slots), Just(CapacityModel::Idle)]
    }

    proptest! {
        #[test]
        fn with_a_minimum_of_zero_everything_is_admitted(
            snapshot in any_snapshot(),
            model in any_model(),
            max_waiting in prop::option::of(any::<u32>()),
            max_wait in prop::option::of(0u64..100_000),
        ) {
            prop_assert_eq!(policy(model, 0, max_waiting, max_wait).judge(&snapshot), Admission::Admit);
        }

        #[test]
        fn with_every_figure_known_slots_admit_exactly_when_every_limit_holds(
            minimum in 1u32..50,
            snapshot in any_snapshot(),
            max_waiting in prop::option::of(any::<u32>()),
            max_wait in prop::option::of(0u64..100_000),
        ) {
            // Arrange
            let policy = policy(CapacityModel::Slots, minimum, max_waiting, max_wait);
            let f = snapshot.figures;
            let agents = f.agents.unwrap();
            let free = i64::from(agents.available()) * i64::from(snapshot.message_capacity.unwrap())
                - i64::from(f.interacting.unwrap()) - i64::from(f.alerting.unwrap()) - i64::from(f.waiting.unwrap());

            // Act
            let verdict = policy.judge(&snapshot);

            // Assert: never an unchecked admission when everything is known
            let within = free >= i64::from(minimum)
                && max_waiting.is_none_or(|m| f.waiting.unwrap() <= m)
                && !matches!((max_wait, snapshot.estimated_wait), (Some(m), Some(e)) if e > Duration::from_secs(m));
            prop_assert_eq!(verdict == Admission::Admit, within);
            prop_assert!(!matches!(verdict, Admission::AdmitUnchecked(_)));
        }

        #[test]
        fn never_admits_when_nobody_can_take_work_and_the_agents_are_known(
            other in 0u32..50,
            waiting in 0u32..10,
            capacity in prop::option::of(0u32..30),
            model in any_model(),
        ) {
            let mut snapshot = snapshot(0, 0, 0, waiting, 0);
            snapshot.figures.agents = Some(AgentCounts { other, ..AgentCounts::default() });
            snapshot.figures.interacting = None;
            snapshot.message_capacity = capacity;
            prop_assert!(!policy(model, 1, None, None).judge(&snapshot).admits());
        }

        #[test]
        fn idle_counting_refuses_whenever_idle_is_below_the_minimum(
            minimum in 1u32..50,
            snapshot in any_snapshot(),
            max_waiting in prop::option::of(any::<u32>()),
            max_wait in prop::option::of(0u64..100_000),
        ) {
            // Arrange
            let policy = policy(CapacityModel::Idle, minimum, max_waiting, max_wait);
            let idle = snapshot.figures.agents.unwrap().idle;
            let waiting = snapshot.figures.waiting.unwrap();

            // Act
            let verdict = policy.judge(&snapshot);

            // Assert
            let within = idle >= minimum
                && max_waiting.is_none_or(|m| waiting <= m)
                && !matches!((max_wait, snapshot.estimated_wait), (Some(m), Some(e)) if e > Duration::from_secs(m));
            prop_assert_eq!(verdict == Admission::Admit, within);
        }
    }
}
