//! The call budget and the notification channel through the real app.

use std::time::Duration;

use genesys_sim::{Endpoint, SimConfig};
use uuid::Uuid;

use crate::helpers::{sample_payload, spawn_app_with, TestApp};

async fn metrics(app: &TestApp) -> String {
    app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text")
}

#[tokio::test]
async fn with_the_channel_live_handoffs_cost_no_capacity_query() {
    // Arrange
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("GENESYS_NOTIFICATIONS".to_owned(), "on".to_owned());
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !metrics(&app).await.contains("\nhandoff_notification_channel_live 1")
        || app.sim.sim().count(Endpoint::ObservationsQuery) < 3
    {
        assert!(std::time::Instant::now() < deadline, "the channel never went live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Act
    let (first, _, _) = app.post_handoff(&sample_payload(Uuid::new_v4(), "customer_requested_agent")).await;
    let (second, _, _) = app.post_handoff(&sample_payload(Uuid::new_v4(), "customer_requested_agent")).await;

    // Assert: one query per configured queue when the channel went live, none per handoff
    assert_eq!((first, second), (200, 200));
    let sim = app.sim.sim();
    assert_eq!(sim.count(Endpoint::ObservationsQuery), 3);
    assert_eq!(sim.count(Endpoint::Replace), 2);
    assert_eq!((sim.count(Endpoint::CreateChannel), sim.count(Endpoint::Subscribe)), (1, 1));
    let text = metrics(&app).await;
    assert!(text.contains("handoff_capacity_pushed_answers_total 2"), "{text}");
}

#[tokio::test]
async fn once_the_window_cannot_hold_a_handoff_it_is_answered_503_with_the_reset_and_no_call() {
    // Arrange: 9 calls a minute; the first handoff uses 4 (lookup, capacity, attributes, replace)
    let app = spawn_app_with(SimConfig { rate_limit_per_minute: Some(9), ..SimConfig::default() }, |_| {}).await;

    // Act
    let (first, _, _) = app.post_handoff(&sample_payload(Uuid::new_v4(), "customer_requested_agent")).await;
    let (second, body, headers) = app.post_handoff(&sample_payload(Uuid::new_v4(), "customer_requested_agent")).await;

    // Assert: 4 sent + 3 promised to the first + 4 for the next > 9: refused before its lookup
    assert_eq!(first, 200);
    assert_eq!(second, 503, "{body}");
    assert_eq!(body["error"], "upstream_unavailable");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((50..=60).contains(&retry_after), "Retry-After {retry_after}");
    let sim = app.sim.sim();
    assert_eq!(sim.count(Endpoint::GetConversation), 1, "the refused handoff reached Genesys");
    assert!(sim.calls().iter().all(|c| c.status != 429), "a call ran into the limit");
    let text = metrics(&app).await;
    assert!(text.contains("handoff_genesys_allowance 9"), "{text}");
    assert!(text.contains("handoff_budget_refused_foreground_total 1"), "{text}");
}
