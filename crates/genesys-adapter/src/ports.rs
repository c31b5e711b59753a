//! The domain ports on [`GenesysClient`], the `handoff check` helpers ([`GenesysClient::get_queue`],
//! [`GenesysClient::probe_permission`]) and the mapping of final Genesys answers to [`PortError`].

use async_trait::async_trait;
use bytes::Bytes;
use handoff_domain::ports::{
    AnalyticsPort, ConversationSnapshot, HandoffEvent, PortError, QueuePort, Receipt, TransferPort,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

use handoff_domain::{AttributeSet, CapacitySnapshot, ConversationId, ParticipantId, QueueFigures, QueueId};
use reqwest::Method;
use serde::Serialize;
use tracing::instrument;
use uuid::Uuid;

use crate::client::{Call, GenesysClient, Reply, Retry};
use crate::ids::GenesysIds;
use crate::stats::Endpoint;
use crate::utilization::MessageCapacitySource;
use crate::wire::{self, AttributesBody, QueueInfo, TagsBody, TransferBody};

/// Genesys codes meaning "the conversation is not in a state for this" (→ [`PortError::InvalidState`]).
const INVALID_STATE_CODES: [(&str, &str); 3] = [
    ("conversations.error.transfer.not.connected", "the participant to replace is not connected"),
    ("conversation.error.forbidden.not.active.participant", "the participant no longer holds the conversation"),
    ("conversation.error.participant.no.active.conversations", "the conversation has no active participant"),
];

/// Genesys codes of a missing scope or permission.
const MISSING_PERMISSION_CODES: [&str; 4] =
    ["missing.permissions", "missing.any.permissions", "missing.division.permission", "app.not.authorized.for.scope"];

/// Maps a final non-2xx answer. `what` names the thing a 404 is about, unless the code says
/// it is the participant.
fn map_error(reply: &Reply, what: &str) -> PortError {
    let (code, correlation_id) = reply.error_code();
    let status = reply.status.as_u16();
    let code_str = code.as_deref().unwrap_or("");
    if status == 404 {
        let what = if code_str.contains("participant") { "participant" } else { what };
        return PortError::NotFound { what: what.to_owned(), correlation_id };
    }
    if matches!(status, 400 | 403 | 409) {
        if let Some((_, detail)) = INVALID_STATE_CODES.iter().find(|(c, _)| *c == code_str) {
            return PortError::InvalidState { detail: (*detail).to_owned(), correlation_id };
        }
    }
    PortError::Rejected { status, code: code.unwrap_or_else(|| "unknown".to_owned()), correlation_id }
}

/// `Ok(reply)` for a 2xx, the mapped error otherwise.
fn success(reply: Reply, what: &str) -> Result<Reply, PortError> {
    if reply.status.is_success() {
        Ok(reply)
    } else {
        Err(map_error(&reply, what))
    }
}

fn invalid_answer(reply: &Reply) -> PortError {
    PortError::Rejected {
        status: reply.status.as_u16(),
        code: "invalid_response".to_owned(),
        correlation_id: reply.correlation_id.clone(),
    }
}

fn json<T: Serialize>(body: &T) -> Option<Bytes> {
    // Serialising our own DTOs (strings and maps of strings) cannot fail.
    serde_json::to_vec(body).ok().map(Bytes::from)
}

/// A permission `handoff check` can probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `conversation:communication:blindTransfer` (the replace POST).
    BlindTransfer,
    /// `conversation:externalTag:edit` (the tags PUT).
    ExternalTagEdit,
    /// `routing:queue:view` (the queue GET).
    QueueView,
    /// `analytics:queueObservation:view` (the observation query).
    QueueObservationView,
    /// `routing:utilization:view` (`GET /api/v2/routing/utilization`, the message capacity).
    UtilizationView,
}

/// What a permission probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionStatus {
    /// The endpoint got past its permission check (2xx or 404 for the nil id).
    Present,
    /// Genesys answered 403 with a missing-permission or missing-scope code.
    Missing {
        /// That code, e.g. `missing.permissions`.
        code: String,
    },
    /// Any other answer: the probe cannot tell.
    Unknown {
        /// The HTTP status.
        status: u16,
        /// The Genesys code, if any.
        code: Option<String>,
    },
}

impl GenesysClient {
    /// The last capacity observation of every queue asked about since start, with its age: what
    /// the shared cache holds, without calling Genesys (the insights page shows it).
    pub fn last_capacity_observations(
        &self,
    ) -> Vec<(QueueId, Result<CapacitySnapshot, PortError>, std::time::Duration)> {
        self.capacity.last_observations()
    }

    /// `GET /api/v2/routing/queues/{id}`: the queue's name and whether it takes messages. For
    /// the preflight only; capacity never calls it.
    ///
    /// # Errors
    /// [`PortError::NotFound`] (`queue`) for an unknown queue; the usual others.
    #[instrument(skip_all, fields(queue_id = %queue))]
    pub async fn get_queue(&self, queue: QueueId) -> Result<QueueInfo, PortError> {
        let call = Call {
            endpoint: Endpoint::QueueGet,
            method: Method::GET,
            url: self.api_url(&["routing", "queues", &queue.to_string()]),
            body: None,
            retry: Retry::Idempotent,
        };
        let reply = success(self.execute(&call).await?, "queue")?;
        wire::queue_info(queue, &reply.body).ok_or_else(|| invalid_answer(&reply))
    }

    /// Probes one permission by calling its endpoint on the nil UUID (or, for the observation
    /// query, a nil queue): Genesys checks permissions before existence, so 403
    /// `missing.permissions`/`missing.any.permissions` means missing and 404 (or 2xx) present.
    /// Nothing is changed: no conversation or queue has the nil id.
    ///
    /// # Errors
    /// [`PortError`] when the probe itself fails (unreachable, rate limited, bad credentials).
    #[instrument(skip_all, fields(permission = ?permission))]
    pub async fn probe_permission(&self, permission: Permission) -> Result<PermissionStatus, PortError> {
        let nil = Uuid::nil().to_string();
        let (method, url, body) = match permission {
            Permission::BlindTransfer => (
                Method::POST,
                self.api_url(&["conversations", "messages", &nil, "participants", &nil, "replace"]),
                json(&TransferBody { queue_id: nil.clone(), transfer_type: "Unattended" }),
            ),
            Permission::ExternalTagEdit => (
                Method::PUT,
                self.api_url(&["conversations", &nil, "tags"]),
                json(&TagsBody { external_tag: "bot-handoff:permission-probe".to_owned() }),
            ),
            Permission::QueueView => (Method::GET, self.api_url(&["routing", "queues", &nil]), None),
            Permission::QueueObservationView => (
                Method::POST,
                self.api_url(&["analytics", "queues", "observations", "query"]),
                json(&wire::observation_query(GenesysIds::queue(Uuid::nil()))),
            ),
            // A read of the org setting: nothing to hide behind a nil id, and nothing changes.
            Permission::UtilizationView => (Method::GET, self.api_url(&["routing", "utilization"]), None),
        };
        let call = Call { endpoint: Endpoint::PermissionProbe, method, url, body, retry: Retry::Idempotent };
        let reply = self.execute(&call).await?;
        let status = reply.status.as_u16();
        let (code, _) = reply.error_code();
        Ok(match status {
            200..=299 | 404 => PermissionStatus::Present,
            403 if code.as_deref().is_some_and(|c| MISSING_PERMISSION_CODES.contains(&c)) => {
                PermissionStatus::Missing { code: code.unwrap_or_default() }
            }
            _ => PermissionStatus::Unknown { status, code },
        })
    }

    /// The observation query, the message capacity (cached for 5 minutes) and, when asked, the
    /// estimated wait, concurrently; uncached. The answer also seeds the pushed figures.
    pub(crate) async fn fetch_capacity(
        &self,
        queue: QueueId,
        with_estimated_wait: bool,
    ) -> Result<CapacitySnapshot, PortError> {
        let queue_text = queue.to_string();
        let observe = async {
            let call = Call {
                endpoint: Endpoint::QueueObservations,
                method: Method::POST,
                url: self.api_url(&["analytics", "queues", "observations", "query"]),
                body: json(&wire::observation_query(queue)),
                retry: Retry::Idempotent,
            };
            let reply = success(self.execute(&call).await?, "queue")?;
            let observed = wire::observations(queue, &reply.body).ok_or_else(|| invalid_answer(&reply))?;
            self.figures.seed(queue, &reply.body, tokio::time::Instant::now());
            Ok::<_, PortError>(observed)
        };
        let wait = async {
            if !with_estimated_wait {
                return None;
            }
            let call = Call {
                endpoint: Endpoint::EstimatedWait,
                method: Method::GET,
                url: self.api_url(&["routing", "queues", &queue_text, "mediatypes", "message", "estimatedwaittime"]),
                body: None,
                retry: Retry::Idempotent,
            };
            // The estimated wait is advisory: a 4xx (Genesys may refuse it with nobody on queue),
            // an empty answer or an outage leaves it unknown, which the admission rule does not
            // hold against the queue. The observation query above carries the errors that matter.
            match self.execute(&call).await {
                Ok(reply) if reply.status.is_success() => wire::estimated_wait(&reply.body),
                Ok(reply) => {
                    tracing::debug!(status = reply.status.as_u16(), "no estimated wait for the queue");
                    None
                }
                Err(error) => {
                    tracing::warn!(%error, "estimated wait unavailable; judging capacity without it");
                    None
                }
            }
        };
        let (figures, message_capacity, estimated_wait) = tokio::join!(observe, self.message_capacity(), wait);
        Ok(self.snapshot(queue, figures?, message_capacity, estimated_wait))
    }

    /// The message capacity one agent may carry: the configured value, or the org's utilization
    /// (`GET /api/v2/routing/utilization`), cached; `None` when unknown or not needed.
    pub(crate) async fn message_capacity(&self) -> Option<u32> {
        self.message_capacity
            .get(|| async {
                let call = Call {
                    endpoint: Endpoint::Utilization,
                    method: Method::GET,
                    url: self.api_url(&["routing", "utilization"]),
                    body: None,
                    retry: Retry::Idempotent,
                };
                match self.execute(&call).await {
                    Ok(reply) if reply.status.is_success() => wire::message_capacity(&reply.body).map_err(|()| {
                        tracing::warn!("the utilization answer is not readable; message capacity unknown");
                    }),
                    Ok(reply) => {
                        let (code, _) = reply.error_code();
                        tracing::warn!(
                            status = reply.status.as_u16(),
                            code = code.as_deref().unwrap_or(""),
                            "cannot read the org's utilization (needs routing:utilization:view); \
                             set HANDOFF_MESSAGE_CAPACITY or grant the permission"
                        );
                        Err(())
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the org's utilization is unavailable; message capacity unknown");
                        Err(())
                    }
                }
            })
            .await
    }

    /// Assembles a snapshot from its parts, and warns (at most once a minute per queue) when a
    /// figure the capacity model reads is unknown: the admission rule then decides on what is
    /// known, and admits when nothing is.
    pub(crate) fn snapshot(
        &self,
        queue: QueueId,
        figures: QueueFigures,
        message_capacity: Option<u32>,
        estimated_wait: Option<Duration>,
    ) -> CapacitySnapshot {
        let capacity_missing =
            message_capacity.is_none() && self.message_capacity.source() != MessageCapacitySource::NotNeeded;
        if (!figures.is_complete() || capacity_missing) && self.figure_warnings.allow(queue) {
            self.counters.capacity_unknown_warnings.fetch_add(1, Ordering::Relaxed);
            let mut missing = figures.missing();
            if capacity_missing {
                missing.push("message capacity");
            }
            tracing::warn!(
                queue_id = %queue,
                missing = %missing.join(", "),
                "queue figures incomplete; admission decides on what is known and admits when nothing is"
            );
        }
        CapacitySnapshot { queue, figures, message_capacity, estimated_wait }
    }
}

#[async_trait]
impl QueuePort for GenesysClient {
    /// Shared per queue for `capacity_ttl` (single flight, see the `capacity` module). A queue
    /// Genesys does not know has no observation groups and reads as unknown figures: the
    /// observation query does not say "unknown queue", and checking existence on every snapshot
    /// would double the cost; `handoff check` verifies the configured queues with `get_queue`.
    #[instrument(skip_all, fields(queue_id = %queue, with_estimated_wait))]
    async fn capacity(&self, queue: QueueId, with_estimated_wait: bool) -> Result<CapacitySnapshot, PortError> {
        // Pushed figures answer with no call; the estimated wait is not pushed, so a check that
        // needs it polls.
        if !with_estimated_wait {
            // The pushed figures go through the same reading as a query answer.
            let pushed = self.figures.answer(queue, tokio::time::Instant::now());
            if let Some(figures) = pushed.and_then(|body| wire::observations(queue, &body)) {
                let message_capacity = self.message_capacity().await;
                return Ok(self.snapshot(queue, figures, message_capacity, None));
            }
        }
        self.capacity
            .get(queue, with_estimated_wait, &self.counters, || self.fetch_capacity(queue, with_estimated_wait))
            .await
    }
}

/// What Genesys answered to one replace (`handoff check --transfer-probe`): its status, its error
/// code and its correlation id, exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceAnswer {
    /// The HTTP status (202 when accepted).
    pub status: u16,
    /// The `ErrorBody.code`, for an error.
    pub code: Option<String>,
    /// `inin-correlation-id` (or the body's `contextId`).
    pub correlation_id: Option<String>,
}

impl GenesysClient {
    /// The transfer mode's replace (`POST …/messages/{id}/participants/{holder}/replace`
    /// `{"queueId","transferType":"Unattended"}`), answered as Genesys answered it instead of as a
    /// [`PortError`]: for the probe, which reports the status, code and correlation id. Retried only
    /// when it surely did not happen, like the transfer.
    ///
    /// # Errors
    /// [`PortError`] when no answer arrived (connection, timeout, rate limit past the budget).
    #[instrument(skip_all, fields(conversation_id = %conversation, participant_id = %holder, queue_id = %queue))]
    pub async fn replace_once(
        &self,
        conversation: ConversationId,
        holder: ParticipantId,
        queue: QueueId,
    ) -> Result<ReplaceAnswer, PortError> {
        let call = Call {
            endpoint: Endpoint::Replace,
            method: Method::POST,
            url: self.api_url(&[
                "conversations",
                "messages",
                &conversation.to_string(),
                "participants",
                &holder.to_string(),
                "replace",
            ]),
            body: json(&TransferBody { queue_id: queue.to_string(), transfer_type: "Unattended" }),
            retry: Retry::Never,
        };
        let reply = self.execute(&call).await?;
        let (code, correlation_id) = reply.error_code();
        let code = if reply.status.is_success() { None } else { code };
        Ok(ReplaceAnswer { status: reply.status.as_u16(), code, correlation_id })
    }
}

#[async_trait]
impl TransferPort for GenesysClient {
    #[instrument(skip_all, fields(conversation_id = %conversation))]
    async fn locate(&self, conversation: ConversationId) -> Result<ConversationSnapshot, PortError> {
        let call = Call {
            endpoint: Endpoint::ConversationGet,
            method: Method::GET,
            url: self.api_url(&["conversations", "messages", &conversation.to_string()]),
            body: None,
            retry: Retry::Idempotent,
        };
        let reply = success(self.execute(&call).await?, "conversation")?;
        wire::conversation_snapshot(conversation, &reply.body, reply.correlation_id.clone())
            .ok_or_else(|| invalid_answer(&reply))
    }

    #[instrument(skip_all, fields(conversation_id = %conversation, participant_id = %customer, attributes = attributes.len()))]
    async fn write_context(
        &self,
        conversation: ConversationId,
        customer: ParticipantId,
        attributes: &AttributeSet,
    ) -> Result<Receipt, PortError> {
        let call = Call {
            endpoint: Endpoint::AttributesPatch,
            method: Method::PATCH,
            url: self.api_url(&[
                "conversations",
                "messages",
                &conversation.to_string(),
                "participants",
                &customer.to_string(),
                "attributes",
            ]),
            body: json(&AttributesBody::new(attributes)),
            retry: Retry::Idempotent,
        };
        let reply = success(self.execute(&call).await?, "conversation")?;
        Ok(Receipt { correlation_id: reply.correlation_id })
    }

    #[instrument(skip_all, fields(conversation_id = %conversation, participant_id = %holder, queue_id = %queue))]
    async fn transfer(
        &self,
        conversation: ConversationId,
        holder: ParticipantId,
        queue: QueueId,
    ) -> Result<Receipt, PortError> {
        let call = Call {
            endpoint: Endpoint::Replace,
            method: Method::POST,
            url: self.api_url(&[
                "conversations",
                "messages",
                &conversation.to_string(),
                "participants",
                &holder.to_string(),
                "replace",
            ]),
            body: json(&TransferBody { queue_id: queue.to_string(), transfer_type: "Unattended" }),
            retry: Retry::Never,
        };
        let reply = success(self.execute(&call).await?, "conversation")?;
        Ok(Receipt { correlation_id: reply.correlation_id })
    }
}

#[async_trait]
impl AnalyticsPort for GenesysClient {
    /// `PUT /api/v2/conversations/{id}/tags` with `bot-handoff:{reason}`: a replace, so repeating
    /// it is harmless.
    #[instrument(skip_all, fields(conversation_id = %event.conversation_id, handoff_id = %event.handoff_id))]
    async fn record(&self, event: &HandoffEvent) -> Result<Receipt, PortError> {
        let call = Call {
            endpoint: Endpoint::TagsPut,
            method: Method::PUT,
            url: self.api_url(&["conversations", &event.conversation_id.to_string(), "tags"]),
            body: json(&TagsBody { external_tag: format!("bot-handoff:{}", event.reason.as_str()) }),
            retry: Retry::Idempotent,
        };
        let reply = success(self.execute(&call).await?, "conversation")?;
        Ok(Receipt { correlation_id: reply.correlation_id })
    }
}

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;
