//! `POST /webhooks/bot-handoff?mode=advise` through the real router: the advice, its replay, the
//! `mode` parameter, and the same error statuses as transfer mode.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use handoff_domain::ports::{LedgerPort, PortError, Receipt};
use handoff_domain::{HandoffKey, HandoffRequest, InMemoryLedger};
use serde_json::json;

use crate::test_support::*;

/// `POST /webhooks/bot-handoff{query}` with the sample payload and `Bearer SECRET`.
fn webhook_with_query(query: &str, body: &str) -> Request<Body> {
    Request::post(format!("/webhooks/bot-handoff{query}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
        .body(Body::from(body.to_owned()))
        .expect("valid request")
}

fn advise() -> Request<Body> {
    webhook_with_query("?mode=advise", &payload_text())
}

async fn only_record_id(ledger: &InMemoryLedger) -> String {
    let records = ledger.find_by_conversation(conversation()).await.expect("in-memory ledger");
    assert_eq!(records.len(), 1, "expected exactly one record");
    records[0].id.to_string()
}

#[tokio::test]
async fn an_advice_with_capacity_is_answered_200_with_the_queue_and_nothing_is_transferred() {
    // Arrange: the context is written once, the transfer never called.
    let world = World::new()
        .with_idle_agents(1)
        .locating(1, Ok(reachable_conversation()))
        .writing_context(1)
        .transferring(0, Ok(Receipt::default()));
    let ledger = Arc::clone(&world.ledger);
    let app = world.app();

    // Act
    let answer = send(&app, advise()).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json(),
        json!({
            "status": "advise",
            "decision": "transfer",
            "handoffId": only_record_id(&ledger).await,
            "conversationId": CONVERSATION,
            "queueId": QUEUE,
            "contextWritten": true,
            "replayed": false,
        })
    );
    for private in [GUEST_NAME, GUEST_EMAIL, "refund_policy_explained"] {
        assert!(!answer.text().contains(private), "{private} echoed back");
    }
}

#[tokio::test]
async fn an_advice_without_capacity_is_answered_200_defer_with_retry_after_seconds_and_still_writes_the_context() {
    // Arrange
    let app = World::new()
        .with_idle_agents(0)
        .locating(1, Ok(reachable_conversation()))
        .writing_context(1)
        .transferring(0, Ok(Receipt::default()))
        .app();

    // Act
    let answer = send(&app, advise()).await;

    // Assert: 200, not 202: the service does not own the handoff.
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    assert_eq!((body["status"].as_str(), body["decision"].as_str()), (Some("advise"), Some("defer")));
    assert_eq!(body["queueId"], QUEUE);
    assert_eq!(body["retryAfterSeconds"], 15);
    assert_eq!(body["contextWritten"], true);
    assert!(answer.header("retry-after").is_none());
}

#[tokio::test]
async fn a_repeated_advice_is_replayed_without_a_second_upstream_call() {
    // Arrange: every upstream call is expected exactly once.
    let app = World::new()
        .with_idle_agents(1)
        .locating(1, Ok(reachable_conversation()))
        .writing_context(1)
        .transferring(0, Ok(Receipt::default()))
        .app();
    let first = send(&app, advise()).await;

    // Act
    let second = send(&app, advise()).await;

    // Assert
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.json()["replayed"], true);
    assert_eq!(second.json()["handoffId"], first.json()["handoffId"]);
    assert_eq!(second.json()["decision"], "transfer");
}

#[tokio::test]
async fn mode_transfer_is_the_default_spelled_out() {
    // Arrange
    let app = World::new().transferring_once().app();

    // Act
    let answer = send(&app, webhook_with_query("?mode=transfer", &payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["status"], "transferred");
}

#[tokio::test]
async fn an_unknown_or_repeated_mode_is_answered_400_on_the_field_mode_and_touches_nothing() {
    // Arrange
    let world = World::new().expecting_no_upstream_call();
    let ledger = Arc::clone(&world.ledger);
    let app = world.app();

    for query in ["?mode=teleport", "?mode=Advise", "?mode=", "?mode=advise&mode=transfer"] {
        // Act
        let answer = send(&app, webhook_with_query(query, &payload_text())).await;

        // Assert
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["error"], "invalid_payload");
        assert_eq!(
            body["details"],
            json!([{ "field": "mode", "problem": "must be `transfer` or `advise`, at most once" }])
        );
    }
    assert!(ledger.find_by_conversation(conversation()).await.expect("ledger").is_empty());
}

#[tokio::test]
async fn a_bad_mode_is_reported_together_with_the_payloads_problems() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let body = json!({ "conversationId": "nope", "guestInfo": { "id": "g" }, "handoffReason": "r" }).to_string();

    // Act
    let answer = send(&app, webhook_with_query("?mode=later", &body)).await;

    // Assert
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let fields: Vec<String> = answer.json()["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["field"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(fields, ["conversationId", "mode"]);
}

#[tokio::test]
async fn a_caller_without_credentials_gets_401_whatever_the_mode() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let request = Request::post("/webhooks/bot-handoff?mode=bogus")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(payload_text()))
        .expect("valid request");

    // Act
    let answer = send(&app, request).await;

    // Assert
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json(), json!({ "error": "unauthorized" }));
}

#[tokio::test]
async fn advisory_errors_are_answered_with_the_statuses_of_transfer_mode() {
    // Arrange
    let not_found = PortError::NotFound { what: "conversation".to_owned(), correlation_id: None };
    let refused =
        PortError::Rejected { status: 403, code: "missing.permissions".to_owned(), correlation_id: Some("c".into()) };
    let down = PortError::Transient { detail: "connection refused".to_owned(), correlation_id: None };
    let cases = [
        ("not found", World::new().locating(1, Err(not_found)).writing_context(0), 404, "conversation_not_found"),
        (
            "ended",
            World::new().locating(1, Ok(ended_conversation())).writing_context(0),
            422,
            "conversation_not_transferable",
        ),
        (
            "refused",
            {
                let mut world = World::new().with_idle_agents(1).locating(1, Ok(reachable_conversation()));
                world.transfer.expect_write_context().times(1).returning(move |_, _, _| Err(refused.clone()));
                world
            },
            502,
            "upstream_rejected",
        ),
        ("down", World::new().locating(1, Err(down)).writing_context(0), 503, "upstream_unavailable"),
    ];
    for (name, world, status, error) in cases {
        let app = world.transferring(0, Ok(Receipt::default())).app();

        // Act
        let answer = send(&app, advise()).await;

        // Assert
        assert_eq!(answer.status.as_u16(), status, "{name}: {}", answer.text());
        assert_eq!(answer.json()["error"], error, "{name}");
    }
}

#[tokio::test]
async fn an_advice_for_a_handoff_being_processed_right_now_is_answered_409() {
    // Arrange: someone else holds the lease of this conversation's handoff.
    let world = World::new().expecting_no_upstream_call();
    let request = HandoffRequest::from_json(&payload(), &handoff_genesys::GenesysIds).expect("valid payload");
    let key = HandoffKey::new(conversation(), None);
    let lease = (Duration::from_secs(30), Duration::from_secs(600));
    world
        .ledger
        .begin(&key, &request, now(), lease.0, lease.1, handoff_domain::HandoffMode::Transfer)
        .await
        .expect("in-memory ledger");
    let app = world.app();

    // Act
    let answer = send(&app, advise()).await;

    // Assert
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.json()["error"], "handoff_in_progress");
    assert_eq!(answer.header("retry-after"), Some("2"));
}

#[tokio::test]
async fn an_advised_handoff_shows_its_advice_on_the_read_side() {
    // Arrange
    let app = World::new()
        .with_idle_agents(1)
        .locating(1, Ok(reachable_conversation()))
        .writing_context(1)
        .transferring(0, Ok(Receipt::default()))
        .app();
    let id = send(&app, advise()).await.json()["handoffId"].as_str().expect("handoffId").to_owned();

    // Act
    let record = send(&app, authorized_get(&format!("/handoffs/{id}"))).await;

    // Assert
    assert_eq!(record.status, StatusCode::OK, "{}", record.text());
    let record = record.json();
    assert_eq!(record["stage"], "advised", "an advice never claims a transfer");
    assert_eq!(record["outcome"], "in_progress", "confirmation reads still to come");
    assert_eq!(record["answer"], json!({ "status": "advise", "decision": "transfer", "queueId": QUEUE }));
    assert!(record["nextCheckAt"].is_string(), "the first confirmation read is scheduled: {record}");
}
