//! The figure store under paused time, and the channel against genesys-sim on 127.0.0.1 (real
//! sockets, so those tests wait on observable signals in bounded loops).

use std::sync::Arc;
use std::time::Duration;

use genesys_sim::{Endpoint as SimEndpoint, SimConfig, SimHandle, BILLING_QUEUE, SUPPORT_QUEUE};
use handoff_domain::ports::QueuePort;
use handoff_domain::QueueId;
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use url::Url;

use super::*;
use crate::{GenesysClient, GenesysConfig, GenesysIds};

const QUEUE: &str = "7b0a2a4e-5f1c-4a53-9d0e-2f6a1c3b9d01";

fn queue() -> QueueId {
    QueueId::parse(QUEUE).unwrap()
}

fn polled(idle: u32, interacting: u32, waiting: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({ "results": [
        { "group": { "queueId": QUEUE, "mediaType": "message" },
          "data": [ { "metric": "oWaiting", "stats": { "count": waiting } } ] },
        { "group": { "queueId": QUEUE },
          "data": [ { "metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": { "count": idle } },
                    { "metric": "oOnQueueUsers", "qualifier": "INTERACTING", "stats": { "count": interacting } } ] }
    ]}))
    .unwrap()
}

fn live_store(max_age: Duration) -> FigureStore {
    let store = FigureStore::default();
    store.enable(max_age);
    store.went_live(Instant::now());
    store
}

/// `(idle, interacting agents, waiting)` as the shared observation reading sees the pushed figures.
fn read(store: &FigureStore) -> Option<(u32, u32, Option<u32>)> {
    let body = store.answer(queue(), Instant::now())?;
    let figures = crate::wire::observations(queue(), &body)?;
    let agents = figures.agents?;
    Some((agents.idle, agents.interacting, figures.waiting))
}

#[tokio::test(start_paused = true)]
async fn seeded_figures_are_updated_by_pushed_events_of_either_group() {
    // Arrange
    let store = live_store(Duration::from_secs(10));
    store.seed(queue(), &polled(2, 3, 0), Instant::now());

    // Act: the user group loses its idle agents (IDLE left out: the metric's rows are replaced)
    // and a conversation starts waiting
    let users = json!({ "group": { "queueId": QUEUE },
        "data": [ { "interval": "x", "metrics": [ { "metric": "oOnQueueUsers", "qualifier": "INTERACTING", "stats": { "count": 5 } } ] } ] });
    let media = json!({ "group": { "queueId": QUEUE, "mediaType": "message" },
        "data": [ { "interval": "x", "metrics": [ { "metric": "oWaiting", "stats": { "count": 4 } } ] } ] });
    let before = read(&store);
    let applied = (store.apply(&users, Instant::now()), store.apply(&media, Instant::now()));

    // Assert
    assert_eq!(before, Some((2, 3, Some(0))));
    assert_eq!(applied, (true, true));
    assert_eq!(read(&store), Some((0, 5, Some(4))));
}

#[tokio::test(start_paused = true)]
async fn figures_go_unused_once_the_channel_is_silent_past_the_bound_and_are_used_again_when_heard() {
    // Arrange
    let store = live_store(Duration::from_secs(10));
    store.seed(queue(), &polled(1, 0, 0), Instant::now());

    // Act
    tokio::time::advance(Duration::from_secs(10)).await;
    let at_bound = read(&store);
    tokio::time::advance(Duration::from_millis(1)).await;
    let past_bound = read(&store);
    store.heard(Instant::now());
    let heard_again = read(&store);

    // Assert
    assert_eq!(at_bound, Some((1, 0, Some(0))));
    assert_eq!(past_bound, None);
    assert_eq!(heard_again, Some((1, 0, Some(0))));
}

#[tokio::test(start_paused = true)]
async fn figures_from_before_a_reconnect_are_not_used_until_seeded_again() {
    // Arrange
    let store = live_store(Duration::from_secs(10));
    store.seed(queue(), &polled(1, 0, 0), Instant::now());

    // Act: the socket drops and comes back (events may have been missed meanwhile)
    store.went_down();
    let while_down = read(&store);
    store.went_live(Instant::now());
    let after_reconnect = read(&store);
    store.seed(queue(), &polled(3, 0, 0), Instant::now());

    // Assert
    assert_eq!((while_down, after_reconnect), (None, None));
    assert_eq!(read(&store), Some((3, 0, Some(0))));
}

#[tokio::test(start_paused = true)]
async fn a_group_that_is_never_pushed_is_polled_again_after_the_longer_cache() {
    // Arrange: the channel stays live (heard every second), only the media group is pushed
    let store = live_store(Duration::from_secs(10));
    store.seed(queue(), &polled(2, 0, 0), Instant::now());
    let media = json!({ "group": { "queueId": QUEUE, "mediaType": "message" },
        "data": [ { "interval": "x", "metrics": [ { "metric": "oWaiting", "stats": { "count": 1 } } ] } ] });
    store.apply(&media, Instant::now());

    // Act
    for _ in 0..119 {
        tokio::time::advance(Duration::from_secs(1)).await;
        store.heard(Instant::now());
    }
    let before_ttl = read(&store);
    tokio::time::advance(Duration::from_secs(1)).await;
    store.heard(Instant::now());
    let after_ttl = read(&store);

    // Assert
    assert_eq!(before_ttl, Some((2, 0, Some(1))));
    assert_eq!(after_ttl, None);
}

#[tokio::test(start_paused = true)]
async fn events_of_an_unknown_shape_are_refused_without_touching_the_figures() {
    // Arrange
    let store = live_store(Duration::from_secs(10));
    store.seed(queue(), &polled(2, 0, 0), Instant::now());

    // Act
    let shapes = [
        json!({ "data": [] }),
        json!({ "group": { "queueId": "not-a-uuid" }, "data": [] }),
        json!({ "group": { "queueId": QUEUE }, "data": "oops" }),
        json!({ "group": { "queueId": QUEUE }, "data": [ { "metrics": [ { "stats": { "count": 9 } } ] } ] }),
    ];
    let applied: Vec<bool> = shapes.iter().map(|s| store.apply(s, Instant::now())).collect();

    // Assert
    assert_eq!(applied, vec![false; 4]);
    assert_eq!(read(&store), Some((2, 0, Some(0))));
}

#[test]
fn a_channel_is_renewed_at_nine_tenths_of_its_life_and_at_least_five_seconds_before_it_ends() {
    let at = |secs: i64| (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339();
    let renew = |secs: i64| channel::renew_after(Some(&at(secs))).as_secs();
    assert!((77_700..=77_760).contains(&renew(86_400)), "{}", renew(86_400));
    assert!((4..=5).contains(&renew(10)), "{}", renew(10));
    assert_eq!(renew(2), 1);
    assert_eq!(channel::renew_after(None), Duration::from_secs(23 * 3600));
}

// --- against genesys-sim -------------------------------------------------------------------

struct Running {
    sim: SimHandle,
    client: Arc<GenesysClient>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: SimConfig, max_age: Duration) -> Running {
    let sim = genesys_sim::spawn(config).await.unwrap();
    let base = Url::parse(&sim.base_url()).unwrap();
    let defaults = SimConfig::default();
    let config = GenesysConfig::new(defaults.client_id, SecretString::from(defaults.client_secret), base.clone(), base);
    let client = Arc::new(GenesysClient::new(config).unwrap());
    let (stop, stopped) = watch::channel(false);
    let settings = NotificationSettings {
        queues: vec![GenesysIds::queue(SUPPORT_QUEUE), GenesysIds::queue(BILLING_QUEUE)],
        max_age,
    };
    let task = tokio::spawn(client.clone().run_notifications(settings, stopped));
    Running { sim, client, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Waits (bounded: 10 s of real time) until `ready` holds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn with_the_channel_live_capacity_costs_one_query_per_queue_up_front_and_then_follows_the_pushes() {
    // Arrange
    let run = start(SimConfig::default(), Duration::from_secs(10)).await;
    let client = run.client.clone();
    until("the channel to go live", || client.channel_stats().live).await;
    let support = GenesysIds::queue(SUPPORT_QUEUE);

    until("the starting figures", || run.sim.sim().count(SimEndpoint::ObservationsQuery) == 2).await;

    // Act: the figures seeded when the channel went live answer; then the sim's change is pushed
    let first = client.capacity(support, false).await.unwrap();
    let second = client.capacity(support, false).await.unwrap();
    run.sim.sim().set_queue_capacity(SUPPORT_QUEUE, 0, 6, 30);
    until("the pushed change", || client.channel_stats().figure_events >= 2).await;
    let third = client.capacity(support, false).await.unwrap();

    // Assert
    let seen = |s: &handoff_domain::CapacitySnapshot| (s.figures.agents.map(|a| a.idle), s.figures.waiting);
    assert_eq!(seen(&first), (Some(3), Some(0)));
    assert_eq!(seen(&second), (Some(3), Some(0)));
    assert_eq!(seen(&third), (Some(0), Some(6)));
    assert_eq!(run.sim.sim().count(SimEndpoint::ObservationsQuery), 2, "one per queue, none per check");
    let stats = client.channel_stats();
    assert_eq!((stats.channels_created, stats.connects, stats.served), (1, 1, 3));
    assert_eq!(run.sim.sim().subscriptions().len(), 1);
    assert_eq!(run.sim.sim().subscriptions()[0].len(), 2);
    run.stop().await;
}

#[tokio::test]
async fn heartbeats_and_unknown_events_are_counted_and_the_channel_stays_live() {
    // Arrange
    let run =
        start(SimConfig { heartbeat: Duration::from_millis(20), ..SimConfig::default() }, Duration::from_secs(10))
            .await;
    let client = run.client.clone();
    until("the channel to go live", || client.channel_stats().live).await;

    // Act
    until("two heartbeats", || client.channel_stats().heartbeats >= 2).await;
    run.sim.sim().push_raw_event(&json!({ "topicName": "v2.users.x.presence", "eventBody": { "odd": true } }));
    run.sim.sim().push_raw_event(&json!("not an object"));
    until("the unknown events", || client.channel_stats().unknown_events >= 2).await;

    // Assert
    let stats = client.channel_stats();
    assert_eq!(stats.unknown_events, 2);
    assert!(stats.live);
    assert_eq!((stats.channels_created, stats.connects), (1, 1));
    run.stop().await;
}

#[tokio::test]
async fn socket_closing_reconnects_to_the_same_channel_and_subscribes_again() {
    // Arrange
    let run = start(SimConfig::default(), Duration::from_secs(10)).await;
    let client = run.client.clone();
    until("the channel to go live", || client.channel_stats().live).await;

    // Act
    run.sim.sim().close_sockets();
    until("the second socket", || client.channel_stats().connects == 2 && client.channel_stats().live).await;

    // Assert
    let stats = client.channel_stats();
    assert_eq!((stats.closing_notices, stats.channels_created), (1, 1));
    assert_eq!(run.sim.sim().count(SimEndpoint::Subscribe), 2);
    assert_eq!(run.sim.sim().count(SimEndpoint::CreateChannel), 1);
    run.stop().await;
}

#[tokio::test]
async fn a_channel_is_replaced_before_it_expires_and_an_expired_one_is_recreated() {
    // Arrange: channels live 6 s, so the client renews after 1 s
    let run =
        start(SimConfig { channel_ttl: Duration::from_secs(6), ..SimConfig::default() }, Duration::from_secs(10)).await;
    let client = run.client.clone();
    until("the channel to go live", || client.channel_stats().live).await;

    // Act
    until("the renewal", || client.channel_stats().channels_created == 2 && client.channel_stats().live).await;
    let renewed_sim_channels = run.sim.sim().count(SimEndpoint::CreateChannel);
    run.sim.sim().expire_channels();
    until("the re-creation", || client.channel_stats().channels_created == 3 && client.channel_stats().live).await;

    // Assert: renewed before the sim's 6 s expiry; after the forced expiry a new channel
    assert_eq!(renewed_sim_channels, 2);
    assert_eq!(run.sim.sim().count(SimEndpoint::CreateChannel), 3);
    assert_eq!(run.sim.sim().count(SimEndpoint::Subscribe), 3);
    run.stop().await;
}

#[tokio::test]
async fn an_org_that_refuses_channels_is_polled_and_asked_again_only_much_later() {
    // Arrange
    let run = start(SimConfig { notifications: false, ..SimConfig::default() }, Duration::from_secs(10)).await;
    let client = run.client.clone();
    until("the refusal", || client.channel_stats().refused).await;
    let support = GenesysIds::queue(SUPPORT_QUEUE);

    // Act: two checks more than a capacity TTL apart
    let first = client.capacity(support, false).await.unwrap();
    tokio::time::sleep(client.config().capacity_ttl * 2 + Duration::from_millis(50)).await;
    let second = client.capacity(support, false).await.unwrap();

    // Assert
    let idle = |s: &handoff_domain::CapacitySnapshot| s.figures.agents.map(|a| a.idle);
    assert_eq!((idle(&first), idle(&second)), (Some(3), Some(3)));
    assert_eq!(run.sim.sim().count(SimEndpoint::ObservationsQuery), 2);
    assert_eq!(run.sim.sim().count(SimEndpoint::CreateChannel), 1);
    let stats = client.channel_stats();
    assert!(!stats.live);
    assert_eq!(stats.served, 0);
    run.stop().await;
}
