//! The channel's life: create it, connect its WebSocket, subscribe every configured queue, read
//! events until something ends the socket, and start again.
//!
//! - once subscribed: one observation query per queue seeds its figures (pushes are changes);
//! - heartbeat / `pong` (`channel.metadata`): liveness only;
//! - `v2.analytics.queues.{id}.observations`: applied to the figure store;
//! - `v2.system.socket_closing`: reconnect to the same channel at once and subscribe again;
//! - the channel's `expires`: a new channel is created at 90 % of its lifetime (at least 5 s
//!   before it ends);
//! - a socket that closes, fails or stays silent past `max_age` (pings are sent every
//!   `max_age / 3`): a new channel after a full-jitter backoff (1 s doubling to 60 s);
//! - an org that refuses channels (4xx on create, every subscription rejected): polling, logged
//!   once, tried again every [`REFUSED_RETRY`];
//! - anything else on the socket: counted as unknown and ignored.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use handoff_domain::ports::PortError;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Call, Retry};
use crate::stats::Endpoint;
use crate::GenesysClient;

use super::NotificationSettings;

/// How long to wait before asking an org that refused channels again.
pub(crate) const REFUSED_RETRY: Duration = Duration::from_secs(600);
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Longest wait for the socket's handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `Channel` as `POST /api/v2/notifications/channels` returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelAnswer {
    id: String,
    connect_uri: String,
    expires: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TopicListing {
    #[serde(default)]
    entities: Vec<TopicEntity>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopicEntity {
    id: Option<String>,
    state: Option<String>,
}

/// Why one channel's life ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Stop,
    Refused(String),
    /// Replace the channel; `failed` ones back off first.
    Renew {
        failed: bool,
    },
}

/// What a failed setup call means.
enum SetupError {
    Refused(String),
    Failed(String),
}

fn setup_error(e: PortError) -> SetupError {
    match e {
        PortError::Rejected { refusal, .. } => SetupError::Refused(format!("genesys answered {refusal}")),
        PortError::NotFound { what, .. } => SetupError::Refused(format!("{what} not found")),
        other => SetupError::Failed(other.to_string()),
    }
}

/// Runs the channel until `stop` turns true.
pub(crate) async fn run(client: Arc<GenesysClient>, settings: NotificationSettings, mut stop: watch::Receiver<bool>) {
    client.figures.enable(settings.max_age);
    let mut failures: u32 = 0;
    let mut refusal_logged = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let pause = match life(&client, &settings, &mut stop).await {
            Ended::Stop => break,
            Ended::Refused(reason) => {
                client.figures.refused();
                if !refusal_logged {
                    tracing::warn!(%reason, "genesys refused a notification channel: queue figures are polled");
                    refusal_logged = true;
                }
                REFUSED_RETRY
            }
            Ended::Renew { failed: false } => {
                failures = 0;
                Duration::ZERO
            }
            Ended::Renew { failed: true } => {
                failures = failures.saturating_add(1);
                let ceiling = BACKOFF_BASE.saturating_mul(1u32 << failures.min(6).saturating_sub(1)).min(BACKOFF_CAP);
                let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
                Duration::from_millis(rand::Rng::random_range(&mut rand::rng(), ms / 2..=ms))
            }
        };
        client.figures.went_down();
        if !pause.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }
    client.figures.went_down();
}

/// One channel: created, then one or more socket sessions (a `socket_closing` reconnects to it).
async fn life(client: &GenesysClient, settings: &NotificationSettings, stop: &mut watch::Receiver<bool>) -> Ended {
    let channel = match create(client).await {
        Ok(c) => c,
        Err(SetupError::Refused(why)) => return Ended::Refused(why),
        Err(SetupError::Failed(why)) => {
            tracing::warn!(reason = %why, "could not create a notification channel; retrying with backoff");
            return Ended::Renew { failed: true };
        }
    };
    client.figures.channels_created.fetch_add(1, Ordering::Relaxed);
    let renew_at = Instant::now() + renew_after(channel.expires.as_deref());
    loop {
        match session(client, settings, &channel, renew_at, stop).await {
            Session::Closing => {
                client.figures.went_down();
                continue;
            }
            Session::Ended(ended) => return ended,
        }
    }
}

/// When to replace a channel: at 90 % of its remaining life, at least 5 s before it ends.
pub(crate) fn renew_after(expires: Option<&str>) -> Duration {
    let Some(expires) = expires.and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok()) else {
        // No expiry given: Genesys channels live 24 h; renew well before.
        return Duration::from_secs(23 * 3600);
    };
    let left = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
    left.mul_f64(0.9).min(left.saturating_sub(Duration::from_secs(5))).max(Duration::from_secs(1))
}

enum Session {
    /// `socket_closing`: reconnect to the same channel.
    Closing,
    Ended(Ended),
}

async fn session(
    client: &GenesysClient,
    settings: &NotificationSettings,
    channel: &ChannelAnswer,
    renew_at: Instant,
    stop: &mut watch::Receiver<bool>,
) -> Session {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(channel.connect_uri.as_str()));
    let mut socket = match connect.await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not connect to the notification channel");
            return Session::Ended(Ended::Renew { failed: true });
        }
        Err(_) => {
            tracing::warn!("the notification channel did not accept the connection in time");
            return Session::Ended(Ended::Renew { failed: true });
        }
    };
    client.figures.connects.fetch_add(1, Ordering::Relaxed);
    match subscribe(client, &channel.id, &settings.queues).await {
        Ok(()) => {}
        Err(SetupError::Refused(why)) => return Session::Ended(Ended::Refused(why)),
        Err(SetupError::Failed(why)) => {
            tracing::warn!(reason = %why, "could not subscribe the notification channel");
            return Session::Ended(Ended::Renew { failed: true });
        }
    }
    client.figures.went_live(Instant::now());
    // Genesys pushes changes only: one query per queue now gives every queue its starting
    // figures, so no handoff pays for one.
    for queue in &settings.queues {
        if let Err(error) = client.fetch_capacity(*queue, false).await {
            tracing::warn!(%error, queue_id = %queue, "could not read a queue's starting figures; its first handoff will");
        }
    }
    let every = (settings.max_age / 3).max(Duration::from_millis(100));
    let mut ping = tokio::time::interval_at(Instant::now() + every, every);
    let ended = loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() { break Session::Ended(Ended::Stop); }
            }
            () = tokio::time::sleep_until(renew_at) => break Session::Ended(Ended::Renew { failed: false }),
            _ = ping.tick() => {
                let silent = client.figures.last_heard().is_none_or(|at| at.elapsed() > settings.max_age);
                if silent {
                    tracing::warn!("the notification channel went silent; reconnecting");
                    break Session::Ended(Ended::Renew { failed: true });
                }
                let ping = Message::Text(r#"{"message":"ping"}"#.into());
                if socket.send(ping).await.is_err() {
                    break Session::Ended(Ended::Renew { failed: true });
                }
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if handle(client, text.as_str()) == Handled::Closing {
                        break Session::Closing;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => client.figures.heard(Instant::now()),
                Some(Ok(Message::Binary(_))) => {
                    client.figures.unknown_events.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    tracing::warn!("the notification channel's socket closed; reconnecting");
                    break Session::Ended(Ended::Renew { failed: true });
                }
            },
        }
    };
    client.figures.went_down();
    let _ = socket.close(None).await;
    ended
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    Heartbeat,
    Figures,
    Closing,
    Unknown,
}

/// Handles one text message of the socket.
pub(crate) fn handle(client: &GenesysClient, text: &str) -> Handled {
    let store = &client.figures;
    let now = Instant::now();
    let event: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            store.unknown_events.fetch_add(1, Ordering::Relaxed);
            return Handled::Unknown;
        }
    };
    let topic = event.get("topicName").and_then(Value::as_str).unwrap_or_default();
    if topic == "channel.metadata" {
        store.heard(now);
        store.heartbeats.fetch_add(1, Ordering::Relaxed);
        return Handled::Heartbeat;
    }
    if topic == "v2.system.socket_closing" {
        store.closing_notices.fetch_add(1, Ordering::Relaxed);
        return Handled::Closing;
    }
    let observation = topic.strip_prefix("v2.analytics.queues.").is_some_and(|rest| rest.ends_with(".observations"));
    if observation {
        if let Some(body) = event.get("eventBody") {
            if store.apply(body, now) {
                store.figure_events.fetch_add(1, Ordering::Relaxed);
                return Handled::Figures;
            }
        }
    }
    store.heard(now);
    store.unknown_events.fetch_add(1, Ordering::Relaxed);
    Handled::Unknown
}

async fn create(client: &GenesysClient) -> Result<ChannelAnswer, SetupError> {
    let call = Call {
        endpoint: Endpoint::ChannelCreate,
        method: Method::POST,
        url: client.api_url(&["notifications", "channels"]),
        body: None,
        retry: Retry::Idempotent,
    };
    let reply = client.execute(&call).await.map_err(setup_error)?;
    if !reply.status.is_success() {
        let (code, _) = reply.error_code();
        return Err(SetupError::Refused(format!(
            "genesys answered {} {}",
            reply.status.as_u16(),
            code.unwrap_or_default()
        )));
    }
    serde_json::from_slice(&reply.body).map_err(|_| SetupError::Failed("the channel answer was not a Channel".into()))
}

async fn subscribe(
    client: &GenesysClient,
    channel: &str,
    queues: &[handoff_domain::QueueId],
) -> Result<(), SetupError> {
    let rejected = subscribe_listing(client, channel, queues).await?;
    if !rejected.is_empty() && rejected.len() >= queues.len() {
        return Err(SetupError::Refused("every subscription was rejected (missing permissions?)".into()));
    }
    if !rejected.is_empty() {
        tracing::warn!(topics = ?rejected, "some queue topics were rejected; those queues are polled");
    }
    Ok(())
}

/// Subscribes (replacing) the observation topics of `queues`; returns the rejected topic ids.
async fn subscribe_listing(
    client: &GenesysClient,
    channel: &str,
    queues: &[handoff_domain::QueueId],
) -> Result<Vec<String>, SetupError> {
    let topics: Vec<Value> =
        queues.iter().map(|q| json!({ "id": format!("v2.analytics.queues.{q}.observations") })).collect();
    let call = Call {
        endpoint: Endpoint::ChannelSubscribe,
        method: Method::PUT,
        url: client.api_url(&["notifications", "channels", channel, "subscriptions"]),
        body: serde_json::to_vec(&topics).ok().map(Bytes::from),
        retry: Retry::Idempotent,
    };
    let reply = client.execute(&call).await.map_err(setup_error)?;
    if reply.status.as_u16() == 404 {
        // The channel ended meanwhile: a new one.
        return Err(SetupError::Failed("the channel is gone".into()));
    }
    if !reply.status.is_success() {
        let (code, _) = reply.error_code();
        return Err(SetupError::Refused(format!(
            "subscribing answered {} {}",
            reply.status.as_u16(),
            code.unwrap_or_default()
        )));
    }
    let listing: TopicListing = serde_json::from_slice(&reply.body).unwrap_or(TopicListing { entities: Vec::new() });
    Ok(listing
        .entities
        .iter()
        .filter(|e| e.state.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("Permitted")))
        .filter_map(|e| e.id.clone())
        .collect())
}

/// What `handoff check` learns about notification channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelProbe {
    /// A channel was created, its socket opened and every queue topic permitted.
    Opens {
        /// Queue topics subscribed.
        topics: usize,
    },
    /// The channel opened but some topics were rejected (their queues would be polled).
    PartlyRejected {
        /// The rejected topic ids.
        rejected: Vec<String>,
    },
    /// Genesys refused the channel or every subscription.
    Refused(String),
    /// Something failed on the way (network, timeout).
    Failed(String),
}

/// Creates a channel, subscribes `queues`, opens and closes its socket.
pub(crate) async fn probe(client: &GenesysClient, queues: &[handoff_domain::QueueId]) -> ChannelProbe {
    let channel = match create(client).await {
        Ok(c) => c,
        Err(SetupError::Refused(why)) => return ChannelProbe::Refused(why),
        Err(SetupError::Failed(why)) => return ChannelProbe::Failed(why),
    };
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(channel.connect_uri.as_str()));
    let mut socket = match connect.await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => return ChannelProbe::Failed(format!("the socket did not open: {e}")),
        Err(_) => return ChannelProbe::Failed("the socket did not open in time".to_owned()),
    };
    let result = match subscribe_listing(client, &channel.id, queues).await {
        Ok(rejected) if rejected.is_empty() => ChannelProbe::Opens { topics: queues.len() },
        Ok(rejected) if rejected.len() >= queues.len() => {
            ChannelProbe::Refused("every queue topic was rejected (missing permissions?)".to_owned())
        }
        Ok(rejected) => ChannelProbe::PartlyRejected { rejected },
        Err(SetupError::Refused(why)) => ChannelProbe::Refused(why),
        Err(SetupError::Failed(why)) => ChannelProbe::Failed(why),
    };
    let _ = socket.close(None).await;
    result
}
