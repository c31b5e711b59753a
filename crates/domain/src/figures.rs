//! Queue figures (CONTRACT §5.4, issue 11): what upstream reports about a queue right now, and
//! the free message slots they add up to.
//!
//! Every figure is an `Option`: a figure upstream did not report is **unknown**, never zero. A
//! zero read for a missing `oOnQueueUsers` would refuse every handoff; a zero read for a missing
//! `oWaiting` would over-admit. The admission rule decides on what is known (see
//! [`FreeSlots`] and `AdmissionPolicy::judge`).

/// On-queue agents by routing status (the routing-status qualifiers the platform reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentCounts {
    /// `IDLE`: on queue, no ACD conversation.
    pub idle: u32,
    /// `INTERACTING`: on queue, handling at least one ACD conversation (and possibly free slots).
    pub interacting: u32,
    /// `COMMUNICATING`: on queue, on a non-ACD conversation (still routable).
    pub communicating: u32,
    /// Any other routing status (`NOT_RESPONDING`, a qualifier we do not know): on queue, not
    /// taking work.
    pub other: u32,
}

impl AgentCounts {
    /// Agents that can take work: `IDLE` + `INTERACTING` + `COMMUNICATING`.
    pub fn available(&self) -> u32 {
        self.idle.saturating_add(self.interacting).saturating_add(self.communicating)
    }

    /// Every on-queue agent, whatever its routing status.
    pub fn on_queue(&self) -> u32 {
        self.available().saturating_add(self.other)
    }
}

/// A queue's live figures. User figures (`agents`) are per queue; conversation figures are for
/// message conversations only. `None` = upstream did not report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueFigures {
    /// On-queue agents by routing status (`oOnQueueUsers`, from the `{queueId}` group).
    pub agents: Option<AgentCounts>,
    /// Message conversations being handled (`oInteracting`, `{queueId, mediaType: message}`).
    pub interacting: Option<u32>,
    /// Message conversations offered to an agent (`oAlerting`).
    pub alerting: Option<u32>,
    /// Message conversations waiting in the queue (`oWaiting`).
    pub waiting: Option<u32>,
}

impl QueueFigures {
    /// Nothing known.
    pub const UNKNOWN: Self = Self { agents: None, interacting: None, alerting: None, waiting: None };

    /// Whether no figure is known.
    pub fn is_unknown(&self) -> bool {
        *self == Self::UNKNOWN
    }

    /// Whether every figure is known.
    pub fn is_complete(&self) -> bool {
        self.missing().is_empty()
    }

    /// The names of the unknown figures (the platform's metric names, for logs and history notes).
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.agents.is_none() {
            missing.push("oOnQueueUsers");
        }
        if self.interacting.is_none() {
            missing.push("oInteracting");
        }
        if self.alerting.is_none() {
            missing.push("oAlerting");
        }
        if self.waiting.is_none() {
            missing.push("oWaiting");
        }
        missing
    }

    /// These figures with every figure `newer` knows replaced by its value: how a holder of the
    /// latest figures applies a partial update (e.g. a notification that carries only one group).
    #[must_use]
    pub fn updated_with(self, newer: QueueFigures) -> QueueFigures {
        QueueFigures {
            agents: newer.agents.or(self.agents),
            interacting: newer.interacting.or(self.interacting),
            alerting: newer.alerting.or(self.alerting),
            waiting: newer.waiting.or(self.waiting),
        }
    }

    /// Free message slots: agents that can take work × `message_capacity` − interacting −
    /// alerting − waiting, as far as it is known (see [`FreeSlots`]).
    pub fn free_slots(&self, message_capacity: Option<u32>) -> FreeSlots {
        let Some(agents) = self.agents else {
            return FreeSlots::Unknown;
        };
        let total = match (agents.available(), message_capacity) {
            // Nobody who can take work: no slot, whatever the capacity.
            (0, _) => 0,
            (available, Some(capacity)) => i64::from(available) * i64::from(capacity),
            (_, None) => return FreeSlots::Unknown,
        };
        let taken: i64 = [self.interacting, self.alerting, self.waiting].iter().flatten().map(|n| i64::from(*n)).sum();
        let all_known = self.interacting.is_some() && self.alerting.is_some() && self.waiting.is_some();
        if all_known {
            FreeSlots::Exactly(total - taken)
        } else {
            FreeSlots::AtMost(total - taken)
        }
    }
}

/// What the figures say about a queue's free message slots. Negative numbers mean more message
/// conversations than slots (some are waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSlots {
    /// Every figure was known.
    Exactly(i64),
    /// Some conversation figure was unknown: the known ones leave at most this many.
    AtMost(i64),
    /// The agents (or, with agents who can take work, the message capacity) are unknown.
    Unknown,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn agents(idle: u32, interacting: u32, communicating: u32, other: u32) -> AgentCounts {
        AgentCounts { idle, interacting, communicating, other }
    }

    #[test]
    fn three_agents_in_one_chat_each_with_capacity_four_leave_nine_slots() {
        // Arrange: the scenario
        let figures = QueueFigures {
            agents: Some(agents(0, 3, 0, 0)),
            interacting: Some(3),
            alerting: Some(0),
            waiting: Some(0),
        };

        // Act / Assert
        assert_eq!(figures.free_slots(Some(4)), FreeSlots::Exactly(9));
    }

    #[test]
    fn nobody_who_can_take_work_means_no_slot_even_with_an_unknown_capacity() {
        let figures = QueueFigures { agents: Some(agents(0, 0, 0, 5)), waiting: Some(2), ..QueueFigures::UNKNOWN };
        assert_eq!(figures.free_slots(None), FreeSlots::AtMost(-2));
    }

    #[test]
    fn unknown_agents_or_capacity_leave_the_slots_unknown() {
        let figures = QueueFigures { agents: None, interacting: Some(0), alerting: Some(0), waiting: Some(0) };
        assert_eq!(figures.free_slots(Some(4)), FreeSlots::Unknown);
        let figures = QueueFigures { agents: Some(agents(1, 0, 0, 0)), ..figures };
        assert_eq!(figures.free_slots(None), FreeSlots::Unknown);
    }

    #[test]
    fn missing_names_every_unknown_figure() {
        assert_eq!(QueueFigures::UNKNOWN.missing(), vec!["oOnQueueUsers", "oInteracting", "oAlerting", "oWaiting"]);
        let known = QueueFigures {
            agents: Some(AgentCounts::default()),
            interacting: Some(1),
            alerting: Some(0),
            waiting: Some(0),
        };
        assert!(known.is_complete() && !known.is_unknown());
        assert!(QueueFigures::UNKNOWN.is_unknown());
    }

    fn any_count() -> impl Strategy<Value = Option<u32>> {
        prop::option::of(0u32..10_000)
    }

    prop_compose! {
        fn any_figures()(
            agents in prop::option::of((0u32..500, 0u32..500, 0u32..500, 0u32..500)),
            interacting in any_count(),
            alerting in any_count(),
            waiting in any_count(),
        ) -> QueueFigures {
            QueueFigures { agents: agents.map(|(i, n, c, o)| self::agents(i, n, c, o)), interacting, alerting, waiting }
        }
    }

    proptest! {
        #[test]
        fn known_figures_give_the_exact_formula(
            (idle, interacting_agents, communicating, other) in (0u32..500, 0u32..500, 0u32..500, 0u32..500),
            (interacting, alerting, waiting) in (0u32..10_000, 0u32..10_000, 0u32..10_000),
            capacity in 0u32..50,
        ) {
            // Arrange
            let figures = QueueFigures {
                agents: Some(agents(idle, interacting_agents, communicating, other)),
                interacting: Some(interacting), alerting: Some(alerting), waiting: Some(waiting),
            };

            // Act
            let slots = figures.free_slots(Some(capacity));

            // Assert
            let expected = i64::from(idle + interacting_agents + communicating) * i64::from(capacity)
                - i64::from(interacting) - i64::from(alerting) - i64::from(waiting);
            prop_assert_eq!(slots, FreeSlots::Exactly(expected));
        }

        #[test]
        fn an_upper_bound_is_never_below_the_truth(
            figures in any_figures(),
            truth in (0u32..10_000, 0u32..10_000, 0u32..10_000),
            capacity in 0u32..50,
        ) {
            // Arrange: fill the unknown conversation figures with any true value
            let complete = QueueFigures {
                agents: figures.agents,
                interacting: figures.interacting.or(Some(truth.0)),
                alerting: figures.alerting.or(Some(truth.1)),
                waiting: figures.waiting.or(Some(truth.2)),
            };

            // Act
            let partial = figures.free_slots(Some(capacity));
            let exact = complete.free_slots(Some(capacity));

            // Assert
            match (partial, exact) {
                (FreeSlots::AtMost(bound), FreeSlots::Exactly(n)) => prop_assert!(n <= bound),
                (FreeSlots::Exactly(a), FreeSlots::Exactly(b)) => prop_assert_eq!(a, b),
                (FreeSlots::Unknown, FreeSlots::Unknown) => prop_assert!(figures.agents.is_none()),
                other => prop_assert!(false, "unexpected pair {:?}", other),
            }
        }

        #[test]
        fn an_update_keeps_what_it_does_not_know_and_takes_what_it_does(
            old in any_figures(),
            newer in any_figures(),
        ) {
            let merged = old.updated_with(newer);
            prop_assert_eq!(merged.agents, newer.agents.or(old.agents));
            prop_assert_eq!(merged.interacting, newer.interacting.or(old.interacting));
            prop_assert_eq!(merged.alerting, newer.alerting.or(old.alerting));
            prop_assert_eq!(merged.waiting, newer.waiting.or(old.waiting));
            prop_assert_eq!(QueueFigures::UNKNOWN.updated_with(newer), newer);
            prop_assert_eq!(old.updated_with(QueueFigures::UNKNOWN), old);
        }
    }
}
