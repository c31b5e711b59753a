//! Operations end to end: graceful shutdown with a handoff in flight, and advisory mode
//! (`?mode=advise`) against the Genesys simulator.

use std::time::Duration;

use genesys_sim::{Endpoint, SimConfig, BILLING_QUEUE, EMPTY_QUEUE};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    customer, deliver, in_queue, newest_record, sample_payload, spawn_app, spawn_app_with, sqlite_url, test_client,
    RESERVED,
};

/// The port of `http://127.0.0.1:{port}`.
fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the address ends with a port")
}

/// Whether the port refuses new connections within `timeout` (connections made before the
/// listener closed are dropped and retried).
async fn refuses_connections(port: u16, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ if tokio::time::Instant::now() >= deadline => return false,
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

#[tokio::test]
async fn a_handoff_in_flight_when_shutdown_begins_is_finished_answered_and_recorded_and_new_connections_are_refused() {
    // Arrange: a durable ledger, and 300 ms per Genesys call, so the handoff (token, lookup,
    // capacity, context, transfer) takes about 1.5 s.
    let dir = tempfile::tempdir().expect("temp dir");
    let database = sqlite_url(dir.path());
    let with_database = |env: &mut std::collections::HashMap<String, String>| {
        env.insert("DATABASE_URL".to_owned(), database.clone());
    };
    let mut app = spawn_app_with(SimConfig::default(), with_database).await;
    app.sim.sim().set_latency(Duration::from_millis(300));
    let port = port_of(&app.address);
    let conversation = Uuid::new_v4();
    let payload = sample_payload(conversation, "complex_billing_dispute");
    let (client, address) = (test_client(), app.address.clone());
    let in_flight = tokio::spawn(async move { deliver(&client, &address, &payload).await });
    let looked_up = app.eventually(Duration::from_secs(10), |a| a.count(Endpoint::GetConversation) >= 1).await;
    assert!(looked_up, "the handoff never reached Genesys");

    // Act: shut down with the handoff half-way; look again once it wrote the context (the
    // transfer still ~300 ms away); then wait for the answer and for the app.
    let server = app.signal_shutdown().expect("the app is running");
    let refused_while_draining = refuses_connections(port, Duration::from_secs(5)).await;
    let transfers_when_refused = app.count(Endpoint::Replace);
    let wrote = app.eventually(Duration::from_secs(10), |a| a.count(Endpoint::PatchAttributes) >= 1).await;
    let (app_running, transfers_then) = (!server.is_finished(), app.count(Endpoint::Replace));
    let answer = in_flight.await.expect("the request task").expect("the in-flight request is answered");
    let stopped = tokio::time::timeout(Duration::from_secs(30), server).await;

    // Assert: the listener closed at once, while the handoff was still running …
    assert!(refused_while_draining, "a new connection was accepted after shutdown began");
    assert_eq!(transfers_when_refused, 0, "the handoff had already transferred when the listener closed");
    // … and the app kept running for it (in the binary, returning ends the runtime and the handoff).
    assert!(wrote, "the in-flight handoff never wrote its context");
    // (Judged only if the transfer was still ~300 ms away when looked at: a starved test thread
    // may look late, and must not fail a correct app.)
    assert!(app_running || transfers_then > 0, "the app stopped before its in-flight handoff finished");
    // … the caller got its answer and the conversation is in the queue, transferred once …
    let (status, _, body) = answer;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "transferred");
    assert_eq!(app.count(Endpoint::Replace), 1);
    let conv = app.sim.sim().conversation(conversation).expect("the conversation exists");
    assert!(in_queue(&conv, BILLING_QUEUE), "{conv}");
    assert_eq!(conv["recentTransfers"].as_array().map_or(0, Vec::len), 1, "transferred more than once");
    // … the app stopped within the bound, and still refuses connections …
    assert!(stopped.is_ok(), "the app did not stop within 30 s of the shutdown signal");
    assert!(refuses_connections(port, Duration::from_secs(1)).await);
    // … and the ledger holds the finished record for the next instance.
    let next = spawn_app_with(SimConfig::default(), with_database).await;
    let record = newest_record(&next.client, &next.address, conversation).await;
    assert_eq!(record["handoffId"], body["handoffId"]);
    assert_eq!(record["stage"], "transferred", "{record}");
    next.stop().await;
}

/// Asserts the customer participant of `conversation` carries every context entry of `payload`
/// and every reserved key, with `bot_handoff_id` naming `handoff_id`.
fn assert_context_on_the_customer(conversation: &Value, payload: &Value, handoff_id: &Value) {
    let attributes = &customer(conversation)["attributes"];
    for (key, value) in payload["customContext"].as_object().expect("context") {
        assert_eq!(&attributes[key], value, "context key {key}: {attributes}");
    }
    for key in RESERVED {
        assert!(attributes[key].is_string(), "reserved key {key} missing: {attributes}");
    }
    assert_eq!(&attributes["bot_handoff_id"], handoff_id);
    assert_eq!(attributes["guest_name"], "Jane Doe");
}

#[tokio::test]
async fn an_advisory_handoff_writes_the_context_onto_the_customer_and_never_transfers() {
    // Arrange: the SQLite ledger, so the advice goes through the SQL codec and its replay through
    // the SQL `begin`.
    let dir = tempfile::tempdir().expect("temp dir");
    let database = sqlite_url(dir.path());
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("DATABASE_URL".to_owned(), database.clone());
    })
    .await;
    let conversation = Uuid::new_v4();
    let payload = sample_payload(conversation, "complex_billing_dispute");

    // Act
    let (status, body) = app.post_handoff_with_query("?mode=advise", &payload).await;
    let (again, replay) = app.post_handoff_with_query("?mode=advise", &payload).await;

    // Assert: the advice, without the guest's data
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "advise");
    assert_eq!(body["decision"], "transfer");
    assert_eq!(body["queueId"], BILLING_QUEUE.to_string());
    assert_eq!(body["conversationId"], conversation.to_string());
    assert_eq!((&body["contextWritten"], &body["replayed"]), (&Value::Bool(true), &Value::Bool(false)));
    assert!(body.get("retryAfterSeconds").is_none(), "{body}");
    let text = body.to_string();
    assert!(!text.contains("Jane Doe") && !text.contains("jane.doe@example.com"), "guest data echoed: {text}");
    // Assert: the context is on the customer, and nothing was transferred
    let sim = app.sim.sim();
    assert_eq!(sim.count(Endpoint::Replace), 0, "an advice transferred");
    assert_eq!(sim.count(Endpoint::PatchAttributes), 1);
    let conv = sim.conversation(conversation).expect("the conversation exists");
    assert!(!in_queue(&conv, BILLING_QUEUE));
    assert_context_on_the_customer(&conv, &payload, &body["handoffId"]);
    // Assert: the repeat replays the advice with no upstream write
    assert_eq!((again, &replay["replayed"]), (200, &Value::Bool(true)), "{replay}");
    assert_eq!(replay["handoffId"], body["handoffId"]);
    assert_eq!((sim.count(Endpoint::PatchAttributes), sim.count(Endpoint::Replace)), (1, 0));
    // Assert: the metrics count the advice by its decision
    let metrics =
        app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.lines().any(|l| l.starts_with("handoff_handoffs_total{")
            && l.contains("outcome=\"advised_transfer\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_advisory_handoff_without_capacity_defers_still_writes_the_context_and_never_transfers() {
    // Arrange: `after_hours` routes to the simulator's queue without agents.
    let app = spawn_app().await;
    let conversation = Uuid::new_v4();
    let payload = sample_payload(conversation, "after_hours");

    // Act
    let (status, body) = app.post_handoff_with_query("?mode=advise", &payload).await;

    // Assert
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["status"], &body["decision"]), (&Value::from("advise"), &Value::from("defer")));
    assert_eq!(body["queueId"], EMPTY_QUEUE.to_string());
    assert_eq!(body["retryAfterSeconds"], 1, "HANDOFF_RECHECK_SECS of the test environment");
    let sim = app.sim.sim();
    assert_eq!(sim.count(Endpoint::Replace), 0);
    let conv = sim.conversation(conversation).expect("the conversation exists");
    assert_context_on_the_customer(&conv, &payload, &body["handoffId"]);
    let (_, record) = app.get(&format!("/handoffs/{}", body["handoffId"].as_str().unwrap_or_default())).await;
    assert_eq!(record["stage"], "advised", "an advice never claims a transfer: {record}");
    assert_eq!(record["outcome"], "advised_defer", "{record}");
    assert_eq!(record["answer"]["status"], "advise");
    assert!(record["nextCheckAt"].is_null(), "an advice to defer is not confirmed: {record}");
    app.stop().await;
}
