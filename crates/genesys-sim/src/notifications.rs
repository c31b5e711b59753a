//! The Notifications API: channels (`POST /api/v2/notifications/channels`), their subscriptions
//! (`PUT /api/v2/notifications/channels/{id}/subscriptions`) and the WebSocket at each channel's
//! `connectUri` (`ws://{host}/channels/{id}`, outside `/api/v2`, not in the call log).
//!
//! What the socket sends (shapes: `reference/genesys-api.md` §9, `docs/genesys/api-notes.md`):
//! - `v2.analytics.queues.{id}.observations` events (`StatEventQueueTopicStatsNotification`:
//!   `{group, data: [{interval, metrics: [{metric, qualifier, stats}]}]}`), one per result group
//!   of the observation query, whenever a subscribed queue's figures change (never on subscribe:
//!   Genesys pushes changes, not the current state);
//! - a heartbeat `{"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}}`
//!   every [`SimConfig::heartbeat`](crate::SimConfig::heartbeat), and `pong` to a `{"message": "ping"}`;
//! - `v2.system.socket_closing` before [`Sim::close_sockets`] closes every socket.
//!
//! Knobs: [`Sim::refuse_channels`] (channel creation answers 403), [`Sim::expire_channels`] (every
//! channel ends: sockets closed, ids unknown), [`Sim::push_user_metrics`] (off: pushed events leave
//! out the `{queueId}` user-metric group, the other answer to whether the topic carries
//! routing-status counts), [`Sim::push_raw_event`] (any text to every socket).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{Result, SimError};
use crate::Sim;

/// Route of the channel socket (the `connectUri` path).
pub(crate) const SOCKET: &str = "/channels/{channel_id}";

/// What every open socket is told.
#[derive(Debug, Clone)]
enum Push {
    /// A queue's figures changed.
    Queue(Uuid),
    /// Send `v2.system.socket_closing`, then close.
    Closing,
    /// The channels ended: close.
    Expired,
    /// Send this text as is.
    Raw(String),
}

#[derive(Debug)]
struct Channel {
    expires_at: Instant,
    /// Subscribed queues (observation topics).
    queues: BTreeSet<Uuid>,
}

/// Channels, their subscriptions and the fan-out to open sockets.
#[derive(Debug)]
pub(crate) struct Hub {
    channels: Mutex<HashMap<Uuid, Channel>>,
    pushes: broadcast::Sender<Push>,
    refused: AtomicBool,
    user_metrics: AtomicBool,
    heartbeat_ms: AtomicU64,
    sockets: AtomicU64,
    created: AtomicU64,
}

impl Hub {
    pub(crate) fn new(enabled: bool, heartbeat: Duration) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            pushes: broadcast::channel(1024).0,
            refused: AtomicBool::new(!enabled),
            user_metrics: AtomicBool::new(true),
            heartbeat_ms: AtomicU64::new(u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX).max(1)),
            sockets: AtomicU64::new(0),
            created: AtomicU64::new(0),
        }
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Channel>> {
        self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live(&self, id: Uuid) -> bool {
        let now = Instant::now();
        let mut channels = self.channels();
        channels.retain(|_, c| c.expires_at > now);
        channels.contains_key(&id)
    }

    fn subscribed(&self, id: Uuid, queue: Uuid) -> bool {
        self.channels().get(&id).is_some_and(|c| c.queues.contains(&queue))
    }
}

impl Sim {
    /// Makes channel creation answer 403 (`refused`) or work again.
    pub fn refuse_channels(&self, refused: bool) {
        self.hub().refused.store(refused, Ordering::Relaxed);
    }

    /// Whether pushed observation events include the `{queueId}` group with the user metrics
    /// (`oOnQueueUsers`); off plays an org whose topic carries conversation metrics only.
    pub fn push_user_metrics(&self, on: bool) {
        self.hub().user_metrics.store(on, Ordering::Relaxed);
    }

    /// Sets the heartbeat interval of sockets opened from now on.
    pub fn set_heartbeat(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.hub().heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Sends `v2.system.socket_closing` on every open socket, then closes them (channels stay).
    pub fn close_sockets(&self) {
        let _ = self.hub().pushes.send(Push::Closing);
    }

    /// Ends every channel now: open sockets close and the ids are no longer known.
    pub fn expire_channels(&self) {
        self.hub().channels().clear();
        let _ = self.hub().pushes.send(Push::Expired);
    }

    /// Sends `event` as is to every open socket (e.g. an event of a shape the client does not know).
    pub fn push_raw_event(&self, event: &Value) {
        let _ = self.hub().pushes.send(Push::Raw(event.to_string()));
    }

    /// Channels created so far.
    pub fn channels_created(&self) -> u64 {
        self.hub().created.load(Ordering::Relaxed)
    }

    /// Sockets open now.
    pub fn open_sockets(&self) -> u64 {
        self.hub().sockets.load(Ordering::Relaxed)
    }

    /// The queues each live channel is subscribed to.
    pub fn subscriptions(&self) -> Vec<Vec<Uuid>> {
        let now = Instant::now();
        self.hub()
            .channels()
            .values()
            .filter(|c| c.expires_at > now)
            .map(|c| c.queues.iter().copied().collect())
            .collect()
    }

    /// Pushes the figures of `queue` to the sockets subscribed to it (called when they change).
    pub(crate) fn queue_changed(&self, queue: Uuid) {
        let _ = self.hub().pushes.send(Push::Queue(queue));
    }
}

/// `POST /api/v2/notifications/channels` → `Channel {id, connectUri, expires}`.
pub(crate) async fn create_channel(State(sim): State<Sim>, headers: HeaderMap) -> Result<Json<Value>> {
    let hub = sim.hub();
    if hub.refused.load(Ordering::Relaxed) {
        return Err(SimError::new(
            StatusCode::FORBIDDEN,
            "not.authorized",
            "Notification channels are not available to this client",
        ));
    }
    let id = Uuid::new_v4();
    let ttl = sim.config().channel_ttl;
    hub.channels().insert(id, Channel { expires_at: Instant::now() + ttl, queues: BTreeSet::new() });
    hub.created.fetch_add(1, Ordering::Relaxed);
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let expires = chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
    Ok(Json(json!({
        "id": id,
        "connectUri": format!("ws://{host}/channels/{id}"),
        "expires": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })))
}

#[derive(Deserialize)]
struct Topic {
    id: String,
}

/// `PUT /api/v2/notifications/channels/{id}/subscriptions` (replace) → `ChannelTopicEntityListing`.
pub(crate) async fn subscribe(
    State(sim): State<Sim>,
    Path(channel_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let id = Uuid::try_parse(&channel_id).map_err(|_| SimError::not_found("channel"))?;
    if !sim.hub().live(id) {
        return Err(SimError::not_found("channel"));
    }
    let topics: Vec<Topic> = serde_json::from_slice(&body)
        .map_err(|e| SimError::bad_request(format!("The request body could not be parsed: {e}")))?;
    let denied = sim.config().missing_permissions.iter().any(|p| p == "analytics:queueObservation:view");
    let mut queues = BTreeSet::new();
    let mut entities = Vec::new();
    for topic in topics {
        let queue = observation_queue(&topic.id);
        let entity = match queue {
            Some(_) if denied => json!({ "id": topic.id, "state": "Rejected", "rejectionReason": "missing permissions",
                                          "missingPermissions": ["analytics:queueObservation:view"] }),
            Some(q) if sim.queue(q).is_some() => {
                queues.insert(q);
                json!({ "id": topic.id, "state": "Permitted" })
            }
            _ => json!({ "id": topic.id, "state": "Rejected", "rejectionReason": "unknown topic" }),
        };
        entities.push(entity);
    }
    if let Some(channel) = sim.hub().channels().get_mut(&id) {
        channel.queues = queues;
    }
    Ok(Json(json!({ "entities": entities })))
}

/// The queue of a `v2.analytics.queues.{id}.observations` topic.
fn observation_queue(topic: &str) -> Option<Uuid> {
    let id = topic.strip_prefix("v2.analytics.queues.")?.strip_suffix(".observations")?;
    Uuid::try_parse(id).ok()
}

/// `GET /channels/{id}`: the channel's WebSocket.
pub(crate) async fn socket(
    State(sim): State<Sim>,
    Path(channel_id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(id) = Uuid::try_parse(&channel_id).ok().filter(|id| sim.hub().live(*id)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let pushes = sim.hub().pushes.subscribe();
    upgrade.on_upgrade(move |ws| serve_socket(sim, id, ws, pushes))
}

async fn serve_socket(sim: Sim, id: Uuid, mut ws: WebSocket, mut pushes: broadcast::Receiver<Push>) {
    let hub = sim.hub();
    hub.sockets.fetch_add(1, Ordering::Relaxed);
    let every = Duration::from_millis(hub.heartbeat_ms.load(Ordering::Relaxed));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                let beat = json!({ "topicName": "channel.metadata", "eventBody": { "message": "WebSocket Heartbeat" } });
                if ws.send(Message::Text(beat.to_string().into())).await.is_err() { break; }
            }
            push = pushes.recv() => match push {
                Ok(Push::Queue(queue)) if hub.subscribed(id, queue) => {
                    let mut failed = false;
                    for event in observation_events(&sim, queue) {
                        failed |= ws.send(Message::Text(event.to_string().into())).await.is_err();
                    }
                    if failed { break; }
                }
                Ok(Push::Queue(_)) => {}
                Ok(Push::Closing) => {
                    let closing = json!({ "topicName": "v2.system.socket_closing", "eventBody": { "message": "The socket will close" } });
                    let _ = ws.send(Message::Text(closing.to_string().into())).await;
                    let _ = ws.send(Message::Close(None)).await;
                    break;
                }
                Ok(Push::Expired) => {
                    let _ = ws.send(Message::Close(None)).await;
                    break;
                }
                Ok(Push::Raw(text)) => {
                    if ws.send(Message::Text(text.into())).await.is_err() { break; }
                }
                // Fell behind: a real channel drops events too; later changes still arrive.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = ws.recv() => match incoming {
                Some(Ok(Message::Text(text))) if text.contains("ping") => {
                    let pong = json!({ "topicName": "channel.metadata", "eventBody": { "message": "pong" } });
                    if ws.send(Message::Text(pong.to_string().into())).await.is_err() { break; }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    hub.sockets.fetch_sub(1, Ordering::Relaxed);
}

/// The observation events of `queue`: one per result group of the observation query.
fn observation_events(sim: &Sim, queue: Uuid) -> Vec<Value> {
    let Some(spec) = sim.queue(queue) else { return Vec::new() };
    let user_metrics = sim.hub().user_metrics.load(Ordering::Relaxed);
    let now = chrono::Utc::now();
    let interval = format!(
        "{}/{}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        (now + chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    crate::api::observation_groups(&spec, &|_| true, sim.message_capacity(), true)
        .into_iter()
        .filter(|g| user_metrics || g["group"].get("mediaType").is_some())
        .map(|g| {
            json!({
                "topicName": format!("v2.analytics.queues.{queue}.observations"),
                "version": "2",
                "eventBody": { "group": g["group"], "data": [ { "interval": interval, "metrics": g["data"] } ] },
                "metadata": { "CorrelationId": Uuid::new_v4() },
            })
        })
        .collect()
}
