//! Metrics hooks: atomic counters of upstream calls (endpoint × status class), retries and token
//! fetches, read as a [`ClientStats`] snapshot that the app exports to Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// The Genesys endpoints this adapter calls (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST {login}/oauth/token`.
    Token,
    /// `GET /api/v2/conversations/messages/{id}`.
    ConversationGet,
    /// `PATCH …/participants/{id}/attributes`.
    AttributesPatch,
    /// `POST …/participants/{id}/replace`.
    Replace,
    /// `POST /api/v2/analytics/queues/observations/query`.
    QueueObservations,
    /// `GET /api/v2/routing/queues/{id}/mediatypes/message/estimatedwaittime`.
    EstimatedWait,
    /// `GET /api/v2/routing/queues/{id}`.
    QueueGet,
    /// `PUT /api/v2/conversations/{id}/tags`.
    TagsPut,
    /// A permission probe (`handoff check`).
    PermissionProbe,
    /// `POST /api/v2/notifications/channels`.
    ChannelCreate,
    /// `PUT /api/v2/notifications/channels/{id}/subscriptions`.
    ChannelSubscribe,
    /// `GET /api/v2/routing/utilization`.
    Utilization,
}

impl Endpoint {
    /// Every endpoint, in a fixed order.
    pub const ALL: [Endpoint; 12] = [
        Endpoint::Token,
        Endpoint::ConversationGet,
        Endpoint::AttributesPatch,
        Endpoint::Replace,
        Endpoint::QueueObservations,
        Endpoint::EstimatedWait,
        Endpoint::QueueGet,
        Endpoint::TagsPut,
        Endpoint::PermissionProbe,
        Endpoint::ChannelCreate,
        Endpoint::ChannelSubscribe,
        Endpoint::Utilization,
    ];

    /// The label value (also the `operation` field of the tracing spans).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::ConversationGet => "get_conversation",
            Endpoint::AttributesPatch => "patch_attributes",
            Endpoint::Replace => "replace",
            Endpoint::QueueObservations => "queue_observations",
            Endpoint::EstimatedWait => "estimated_wait",
            Endpoint::QueueGet => "get_queue",
            Endpoint::TagsPut => "put_tags",
            Endpoint::PermissionProbe => "permission_probe",
            Endpoint::ChannelCreate => "create_channel",
            Endpoint::ChannelSubscribe => "subscribe_channel",
            Endpoint::Utilization => "get_utilization",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How one attempt ended (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// 4xx other than 429.
    ClientError,
    /// 429.
    RateLimited,
    /// 5xx (and any other unexpected status).
    ServerError,
    /// No status: timeout, connection failure, broken body.
    TransportError,
}

impl StatusClass {
    /// Every class, in a fixed order.
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Success,
        StatusClass::ClientError,
        StatusClass::RateLimited,
        StatusClass::ServerError,
        StatusClass::TransportError,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::ClientError => "4xx",
            StatusClass::RateLimited => "429",
            StatusClass::ServerError => "5xx",
            StatusClass::TransportError => "error",
        }
    }

    /// The class of an HTTP status.
    pub fn of(status: u16) -> Self {
        match status {
            200..=299 => StatusClass::Success,
            429 => StatusClass::RateLimited,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One counter of [`ClientStats::requests`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCount {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// How the attempts ended.
    pub class: StatusClass,
    /// How many attempts (every try counts, retries included).
    pub count: u64,
}

/// A snapshot of the client's counters. Counters only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Attempts by endpoint × status class; every pair, zeros included.
    pub requests: Vec<RequestCount>,
    /// Waits before another attempt (backoff after 5xx/timeouts/connection errors, 429 waits).
    pub retries: u64,
    /// Token requests sent to the login host.
    pub token_fetches: u64,
    /// Tokens dropped after a 401 from the API.
    pub token_invalidations: u64,
    /// Capacity observation queries answered from the shared cache instead of upstream.
    pub capacity_cache_hits: u64,
    /// Warnings that a queue's capacity figures were incomplete (at most one per queue a minute).
    pub capacity_unknown_warnings: u64,
}

impl ClientStats {
    /// Attempts counted for `endpoint` with `class`.
    pub fn count(&self, endpoint: Endpoint, class: StatusClass) -> u64 {
        self.requests.iter().find(|r| r.endpoint == endpoint && r.class == class).map_or(0, |r| r.count)
    }

    /// Attempts counted for `endpoint`, any class.
    pub fn attempts(&self, endpoint: Endpoint) -> u64 {
        self.requests.iter().filter(|r| r.endpoint == endpoint).map(|r| r.count).sum()
    }
}

/// The live counters behind [`ClientStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: [[AtomicU64; StatusClass::ALL.len()]; Endpoint::ALL.len()],
    pub(crate) retries: AtomicU64,
    pub(crate) token_fetches: AtomicU64,
    pub(crate) token_invalidations: AtomicU64,
    pub(crate) capacity_cache_hits: AtomicU64,
    pub(crate) capacity_unknown_warnings: AtomicU64,
}

impl Counters {
    pub(crate) fn request(&self, endpoint: Endpoint, class: StatusClass) {
        self.requests[endpoint.index()][class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ClientStats {
        let mut requests = Vec::with_capacity(Endpoint::ALL.len() * StatusClass::ALL.len());
        for endpoint in Endpoint::ALL {
            for class in StatusClass::ALL {
                let count = self.requests[endpoint.index()][class.index()].load(Ordering::Relaxed);
                requests.push(RequestCount { endpoint, class, count });
            }
        }
        ClientStats {
            requests,
            retries: self.retries.load(Ordering::Relaxed),
            token_fetches: self.token_fetches.load(Ordering::Relaxed),
            token_invalidations: self.token_invalidations.load(Ordering::Relaxed),
            capacity_cache_hits: self.capacity_cache_hits.load(Ordering::Relaxed),
            capacity_unknown_warnings: self.capacity_unknown_warnings.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_follow_the_status_code() {
        assert_eq!(StatusClass::of(202), StatusClass::Success);
        assert_eq!(StatusClass::of(404), StatusClass::ClientError);
        assert_eq!(StatusClass::of(429), StatusClass::RateLimited);
        assert_eq!(StatusClass::of(503), StatusClass::ServerError);
    }

    #[test]
    fn a_snapshot_lists_every_endpoint_and_class_and_the_counts() {
        // Arrange
        let counters = Counters::default();
        counters.request(Endpoint::Replace, StatusClass::Success);
        counters.request(Endpoint::Replace, StatusClass::Success);
        counters.request(Endpoint::Token, StatusClass::TransportError);

        // Act
        let stats = counters.snapshot();

        // Assert
        assert_eq!(stats.requests.len(), Endpoint::ALL.len() * StatusClass::ALL.len());
        assert_eq!(stats.count(Endpoint::Replace, StatusClass::Success), 2);
        assert_eq!(stats.attempts(Endpoint::Token), 1);
        assert_eq!(stats.attempts(Endpoint::TagsPut), 0);
    }
}
