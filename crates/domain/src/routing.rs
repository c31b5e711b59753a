//! Queue choice (CONTRACT §5.2): the payload's queue if allowed, else the route for the reason,
//! else the default queue. Only configured queues are ever chosen.

use std::collections::BTreeMap;

use crate::ids::{IdRules, QueueId};
use crate::request::{HandoffReason, HandoffRequest, ValidationErrors};

/// A bad `HANDOFF_ROUTES` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {entry:?}: {problem}")]
pub struct RoutingPolicyError {
    /// The offending `reason=queueId` entry.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Where handoffs go: a default queue, per-reason routes and an optional overflow queue. The set of
/// these queues is the allowlist for a payload's `queueId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingPolicy {
    default_queue: QueueId,
    routes: BTreeMap<String, QueueId>,
    fallback: Option<QueueId>,
}

impl RoutingPolicy {
    /// A policy from its parts.
    pub fn new(default_queue: QueueId, routes: BTreeMap<String, QueueId>, fallback: Option<QueueId>) -> Self {
        Self { default_queue, routes, fallback }
    }

    /// Parses `HANDOFF_ROUTES` (`reason=queueId,reason=queueId`; blanks around entries allowed),
    /// the queue ids with the platform's `ids` rules.
    ///
    /// # Errors
    /// Every bad entry: no `=`, an invalid reason, a queue id the rules refuse (`the queue id must
    /// be a UUID` for Genesys), or a reason given twice.
    pub fn parse_routes(raw: &str, ids: &dyn IdRules) -> Result<BTreeMap<String, QueueId>, Vec<RoutingPolicyError>> {
        let mut routes = BTreeMap::new();
        let mut errors = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let err = |problem: &str| RoutingPolicyError { entry: entry.to_owned(), problem: problem.to_owned() };
            let Some((reason, queue)) = entry.split_once('=') else {
                errors.push(err("expected reason=queueId"));
                continue;
            };
            let (reason, queue) = (reason.trim(), queue.trim());
            if HandoffReason::parse(reason).is_err() {
                errors.push(err("the reason must be 1-128 characters without control characters"));
                continue;
            }
            let queue = match QueueId::parse_with(ids, queue) {
                Ok(queue) => queue,
                Err(e) => {
                    errors.push(err(&format!("the queue id {}", e.problem)));
                    continue;
                }
            };
            if routes.insert(reason.to_owned(), queue).is_some() {
                errors.push(err("this reason is routed twice"));
            }
        }
        if errors.is_empty() {
            Ok(routes)
        } else {
            Err(errors)
        }
    }

    /// The default queue (`TARGET_QUEUE_ID`).
    pub fn default_queue(&self) -> QueueId {
        self.default_queue
    }
    /// The overflow queue, if configured.
    pub fn fallback(&self) -> Option<QueueId> {
        self.fallback
    }
    /// The per-reason routes.
    pub fn routes(&self) -> &BTreeMap<String, QueueId> {
        &self.routes
    }

    /// Whether `queue` is one of the configured queues.
    pub fn is_allowed(&self, queue: QueueId) -> bool {
        queue == self.default_queue || self.fallback == Some(queue) || self.routes.values().any(|q| *q == queue)
    }

    /// Every configured queue, without repeats.
    pub fn allowed_queues(&self) -> Vec<QueueId> {
        let mut all = vec![self.default_queue];
        all.extend(self.routes.values().copied());
        all.extend(self.fallback);
        all.sort();
        all.dedup();
        all
    }

    /// The queue for `request`.
    ///
    /// # Errors
    /// A `queueId` field error when the payload names a queue outside the allowlist.
    pub fn choose(&self, request: &HandoffRequest) -> Result<QueueId, ValidationErrors> {
        match request.requested_queue() {
            Some(q) if self.is_allowed(q) => Ok(q),
            Some(_) => Err(ValidationErrors::single(
                "queueId",
                "is not an allowed queue (TARGET_QUEUE_ID, a HANDOFF_ROUTES queue or the fallback)",
            )),
            None => Ok(self.routes.get(request.reason().as_str()).copied().unwrap_or(self.default_queue)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{sample_payload, uuid_text, valid_request_with, UuidIds};
    use proptest::prelude::*;
    use serde_json::json;

    const DEFAULT: &str = "00000000-0000-4000-8000-000000000001";
    const BILLING: &str = "00000000-0000-4000-8000-000000000002";
    const FALLBACK: &str = "00000000-0000-4000-8000-000000000003";
    const STRANGER: &str = "00000000-0000-4000-8000-000000000099";

    fn q(raw: &str) -> QueueId {
        QueueId::parse(raw).expect("valid queue id")
    }

    fn policy() -> RoutingPolicy {
        let routes = BTreeMap::from([("complex_billing_dispute".to_owned(), q(BILLING))]);
        RoutingPolicy::new(q(DEFAULT), routes, Some(q(FALLBACK)))
    }

    fn request(reason: &str, queue: Option<&str>) -> HandoffRequest {
        let mut payload = sample_payload();
        payload["handoffReason"] = json!(reason);
        if let Some(queue) = queue {
            payload["queueId"] = json!(queue);
        }
        HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("valid")
    }

    #[test]
    fn an_allowed_payload_queue_wins_over_the_route() {
        // Act
        let chosen = policy().choose(&request("complex_billing_dispute", Some(FALLBACK)));

        // Assert
        assert_eq!(chosen, Ok(q(FALLBACK)));
    }

    #[test]
    fn a_payload_queue_outside_the_allowlist_is_a_queue_id_error() {
        // Act
        let err = policy().choose(&request("complex_billing_dispute", Some(STRANGER))).expect_err("not allowed");

        // Assert
        assert_eq!(err.errors().len(), 1);
        assert_eq!(err.errors()[0].field, "queueId");
    }

    #[test]
    fn the_reason_route_is_used_when_the_payload_names_no_queue() {
        assert_eq!(policy().choose(&request("complex_billing_dispute", None)), Ok(q(BILLING)));
    }

    #[test]
    fn the_default_queue_is_used_for_an_unrouted_reason() {
        assert_eq!(policy().choose(&request("password_reset", None)), Ok(q(DEFAULT)));
    }

    #[test]
    fn allowed_queues_lists_default_routes_and_fallback_once_each() {
        // Arrange
        let routes =
            BTreeMap::from([("a".to_owned(), q(BILLING)), ("b".to_owned(), q(BILLING)), ("c".to_owned(), q(DEFAULT))]);
        let policy = RoutingPolicy::new(q(DEFAULT), routes, Some(q(FALLBACK)));

        // Act
        let allowed = policy.allowed_queues();

        // Assert
        assert_eq!(allowed, vec![q(DEFAULT), q(BILLING), q(FALLBACK)]);
        assert!(!policy.is_allowed(q(STRANGER)));
    }

    #[test]
    fn routes_parse_with_blanks_and_any_case_queue_ids() {
        // Act
        let routes = RoutingPolicy::parse_routes(
            &format!(" billing = {} , ,sales={BILLING},", BILLING.to_uppercase()),
            &UuidIds,
        );

        // Assert
        assert_eq!(routes, Ok(BTreeMap::from([("billing".to_owned(), q(BILLING)), ("sales".to_owned(), q(BILLING))])));
        assert_eq!(RoutingPolicy::parse_routes("", &UuidIds), Ok(BTreeMap::new()));
    }

    #[test]
    fn every_bad_route_entry_is_reported() {
        // Act
        let errors = RoutingPolicy::parse_routes(
            &format!("noequals,={DEFAULT},billing=not-a-uuid,x={DEFAULT},x={BILLING}"),
            &UuidIds,
        )
        .expect_err("bad routes");

        // Assert
        let entries: Vec<&str> = errors.iter().map(|e| e.entry.as_str()).collect();
        assert_eq!(entries, vec!["noequals", &format!("={DEFAULT}"), "billing=not-a-uuid", &format!("x={BILLING}")]);
        assert_eq!(errors[2].problem, "the queue id must be a UUID", "the platform's words");
        assert!(errors[3].problem.contains("twice"), "{errors:?}");
    }

    prop_compose! {
        fn any_policy()(
            default in uuid_text(),
            routes in prop::collection::btree_map("[a-z_]{1,12}", uuid_text(), 0..5),
            fallback in prop::option::of(uuid_text()),
        ) -> RoutingPolicy {
            RoutingPolicy::new(
                q(&default),
                routes.into_iter().map(|(r, queue)| (r, q(&queue))).collect(),
                fallback.as_deref().map(q),
            )
        }
    }

    proptest! {
        #[test]
        fn the_chosen_queue_is_always_in_the_allowlist(
            policy in any_policy(),
            request in valid_request_with(3),
            pick in any::<prop::sample::Index>(),
            ask_for_allowed in any::<bool>(),
            route_reason in any::<bool>(),
        ) {
            // Arrange: sometimes ask for an allowed queue, sometimes route the request's reason.
            let mut payload = request.to_json();
            if ask_for_allowed {
                payload["queueId"] = json!(pick.get(&policy.allowed_queues()).to_string());
            }
            let mut policy = policy;
            if route_reason {
                let mut routes = policy.routes().clone();
                routes.insert(request.reason().as_str().to_owned(), *pick.get(&policy.allowed_queues()));
                policy = RoutingPolicy::new(policy.default_queue(), routes, policy.fallback());
            }
            let request = HandoffRequest::from_json(&payload, &crate::ids::OpaqueIds).expect("still valid");

            // Act
            let chosen = policy.choose(&request);

            // Assert
            match chosen {
                Ok(queue) => prop_assert!(policy.allowed_queues().contains(&queue)),
                Err(e) => {
                    let asked = request.requested_queue();
                    prop_assert!(asked.is_some_and(|a| !policy.is_allowed(a)), "refused {:?}: {}", asked, e);
                }
            }
        }
    }
}
