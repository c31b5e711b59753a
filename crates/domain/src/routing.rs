//! Queue choice (CONTRACT §5.2): the payload's queue if allowed, else the route for the reason,
//! else the default queue. Only configured queues are ever chosen.

use std::collections::BTreeMap;

use crate::ids::QueueId;
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

    /// Parses `HANDOFF_ROUTES` (`reason=queueId,reason=queueId`; blanks around entries allowed).
    ///
    /// # Errors
    /// Every bad entry: no `=`, an invalid reason, a queue that is not a UUID, or a reason given twice.
    pub fn parse_routes(raw: &str) -> Result<BTreeMap<String, QueueId>, Vec<RoutingPolicyError>> {
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
            let Ok(queue) = QueueId::parse(queue) else {
                errors.push(err("the queue id must be a UUID"));
                continue;
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
