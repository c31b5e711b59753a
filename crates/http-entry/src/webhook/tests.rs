//! `POST /webhooks/bot-handoff` through the real router: every status of CONTRACT §4.1, the
//! authentication modes of §4.2, request ids, the in-flight cap and the timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use handoff_domain::ports::{LedgerPort, PortError, Receipt};
use handoff_domain::{HandoffKey, HandoffRequest, IdempotencyKey};
use serde_json::json;

use crate::test_support::*;
use crate::{HttpSettings, WebhookAuth, MAX_BODY_BYTES, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// The one record of the test conversation.
async fn only_record(world_ledger: &handoff_domain::InMemoryLedger) -> handoff_domain::HandoffRecord {
    let mut records = world_ledger.find_by_conversation(conversation()).await.expect("in-memory ledger");
    assert_eq!(records.len(), 1, "expected exactly one record");
    records.remove(0)
}

fn post() -> axum::http::request::Builder {
    Request::post("/webhooks/bot-handoff")
}

fn request(headers: &[(&str, String)], body: &str) -> Request<Body> {
    let mut builder = post().header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(Body::from(body.to_owned())).expect("valid request")
}

// ---- 2xx ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_handoff_with_capacity_is_transferred_and_answered_200() {
    // Arrange
    let world = World::new().transferring_once();
    let ledger = Arc::clone(&world.ledger);
    let app = world.app();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let record = only_record(&ledger).await;
    assert_eq!(
        answer.json(),
        json!({
            "status": "transferred",
            "handoffId": record.id.to_string(),
            "conversationId": CONVERSATION,
            "queueId": QUEUE,
            "replayed": false,
        })
    );
    assert_eq!(answer.header(header::CONTENT_TYPE.as_str()), Some("application/json"));
}

#[tokio::test]
async fn a_repeated_delivery_is_replayed_without_a_second_upstream_write() {
    // Arrange: every upstream call is expected exactly once.
    let app = World::new().transferring_once().app();
    let first = send(&app, webhook(&payload_text())).await;

    // Act
    let second = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.json()["replayed"], json!(true));
    assert_eq!(second.json()["handoffId"], first.json()["handoffId"]);
}

#[tokio::test]
async fn a_handoff_without_capacity_is_deferred_and_answered_202() {
    // Arrange
    let world = World::new()
        .with_idle_agents(0)
        .locating(1, Ok(reachable_conversation()))
        .writing_context(0)
        .transferring(0, Ok(Receipt::default()));
    let ledger = Arc::clone(&world.ledger);
    let app = world.app();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let record = only_record(&ledger).await;
    assert_eq!(
        answer.json(),
        json!({
            "status": "deferred",
            "handoffId": record.id.to_string(),
            "conversationId": CONVERSATION,
            "queueId": QUEUE,
            "retryAfterSeconds": 15,
            "reason": "no_capacity",
            "replayed": false,
        })
    );
}

#[tokio::test]
async fn a_json_content_type_with_parameters_is_accepted() {
    // Arrange
    let app = World::new().transferring_once().app();
    let request = request(&[("authorization", format!("Bearer {SECRET}"))], &payload_text());
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, "Application/JSON; charset=utf-8".parse().expect("header"));

    // Act
    let answer = send(&app, Request::from_parts(parts, body)).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

// ---- 400 ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_payload_that_fails_validation_lists_every_problem_and_calls_nothing_upstream() {
    // Arrange
    let world = World::new().expecting_no_upstream_call();
    let ledger = Arc::clone(&world.ledger);
    let app = world.app();
    let body = json!({ "conversationId": "../../admin", "guestInfo": {}, "handoffReason": "" }).to_string();

    // Act
    let answer = send(&app, webhook(&body)).await;

    // Assert
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let json = answer.json();
    assert_eq!(json["error"], "invalid_payload");
    assert!(json["message"].is_string());
    let fields: Vec<&str> =
        json["details"].as_array().expect("details").iter().filter_map(|d| d["field"].as_str()).collect();
    assert_eq!(fields, ["conversationId", "guestInfo.id", "handoffReason"], "{json}");
    assert!(ledger.find_by_conversation(conversation()).await.expect("ledger").is_empty());
}

#[tokio::test]
async fn malformed_json_is_answered_400_with_its_line_and_column() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let answer = send(&app, webhook("{\n  \"conversationId\": ,\n}")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let json = answer.json();
    assert_eq!(json["error"], "invalid_payload");
    assert_eq!(json["details"][0]["field"], "$");
    let problem = json["details"][0]["problem"].as_str().expect("problem");
    assert!(problem.contains("line 2 column 21"), "{problem}");
}

#[tokio::test]
async fn a_bad_idempotency_key_is_answered_400_on_that_header() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let request = request(
        &[("authorization", format!("Bearer {SECRET}")), ("idempotency-key", "has spaces in it".to_owned())],
        &payload_text(),
    );

    // Act
    let answer = send(&app, request).await;

    // Assert
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["details"][0]["field"], "Idempotency-Key");
}

#[tokio::test]
async fn a_queue_outside_the_allowlist_is_answered_400_without_an_upstream_call() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let mut body = payload();
    body["queueId"] = json!(OTHER_QUEUE);

    // Act
    let answer = send(&app, webhook(&body.to_string())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["details"][0]["field"], "queueId");
}

// ---- 401 and authentication ----------------------------------------------------------------

#[tokio::test]
async fn a_request_without_credentials_is_answered_401_and_touches_nothing() {
    // Arrange
    let world = World::new().expecting_no_upstream_call();
    let ledger = Arc::clone(&world.ledger);
    let app = world.app();

    // Act
    let answer = send(&app, request(&[], &payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json(), json!({ "error": "unauthorized" }));
    assert_eq!(answer.header("www-authenticate"), Some("Bearer realm=\"handoff\""));
    assert!(ledger.find_by_conversation(conversation()).await.expect("ledger").is_empty());
}

#[tokio::test]
async fn a_correct_bearer_secret_is_accepted() {
    // Arrange
    let app = World::new().transferring_once().app();

    // Act
    let answer = send(&app, request(&[("authorization", format!("Bearer {SECRET}"))], &payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn a_wrong_bearer_secret_is_answered_401() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let answer = send(&app, request(&[("authorization", format!("Bearer {SECRET}x"))], &payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json(), json!({ "error": "unauthorized" }));
}

#[tokio::test]
async fn a_basic_password_equal_to_the_secret_is_accepted_whatever_the_user() {
    // Arrange
    let app = World::new().transferring_once().app();

    // Act
    let answer = send(&app, request(&[("authorization", basic("genesys-data-action", SECRET))], &payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn a_wrong_basic_password_is_answered_401() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let answer = send(&app, request(&[("authorization", basic(SECRET, "wrong"))], &payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_correct_hmac_signature_over_the_raw_body_is_accepted() {
    // Arrange
    let app = World::new().transferring_once().app();
    let body = payload_text();
    let ts = now().timestamp();

    // Act
    let answer = send(
        &app,
        request(&[(TIMESTAMP_HEADER, ts.to_string()), (SIGNATURE_HEADER, signature(SECRET, ts, &body))], &body),
    )
    .await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn an_hmac_signature_of_another_body_is_answered_401() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let body = payload_text();
    let ts = now().timestamp();
    let signed_for_other_body = signature(SECRET, ts, &body.replace("complex", "simple"));

    // Act
    let answer =
        send(&app, request(&[(TIMESTAMP_HEADER, ts.to_string()), (SIGNATURE_HEADER, signed_for_other_body)], &body))
            .await;

    // Assert
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json(), json!({ "error": "unauthorized" }));
}

#[tokio::test]
async fn an_hmac_signature_older_than_300_seconds_is_answered_401() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let body = payload_text();
    let stale = now().timestamp() - 301;

    // Act
    let answer = send(
        &app,
        request(&[(TIMESTAMP_HEADER, stale.to_string()), (SIGNATURE_HEADER, signature(SECRET, stale, &body))], &body),
    )
    .await;

    // Assert
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn during_rotation_the_previous_secret_is_accepted_as_bearer_and_as_hmac_key() {
    // Arrange
    let app = World::new()
        .with_idle_agents(1)
        .locating(1, Ok(reachable_conversation()))
        .writing_context(1)
        .transferring(1, Ok(Receipt::default()))
        .app();
    let body = payload_text();
    let ts = now().timestamp();

    // Act
    let bearer = send(&app, request(&[("authorization", format!("Bearer {OLD_SECRET}"))], &body)).await;
    let hmac = send(
        &app,
        request(&[(TIMESTAMP_HEADER, ts.to_string()), (SIGNATURE_HEADER, signature(OLD_SECRET, ts, &body))], &body),
    )
    .await;

    // Assert
    assert_eq!(bearer.status, StatusCode::OK, "{}", bearer.text());
    assert_eq!(hmac.status, StatusCode::OK, "{}", hmac.text());
    assert_eq!(hmac.json()["replayed"], json!(true));
}

#[tokio::test]
async fn with_authentication_off_a_request_without_credentials_is_accepted() {
    // Arrange
    let mut world = World::new().transferring_once();
    world.auth = WebhookAuth::None;
    let app = world.app();

    // Act
    let answer = send(&app, request(&[], &payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn authentication_is_checked_before_the_content_type_and_the_size() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let wrong_type =
        post().header(header::CONTENT_TYPE, "text/plain").body(Body::from(payload_text())).expect("valid request");
    let too_big = request(&[], &"x".repeat(MAX_BODY_BYTES + 1));

    // Act
    let wrong_type = send(&app, wrong_type).await;
    let too_big = send(&app, too_big).await;

    // Assert
    assert_eq!(wrong_type.status, StatusCode::UNAUTHORIZED);
    assert_eq!(too_big.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_forged_signature_is_answered_401_even_with_a_wrong_content_type() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let ts = now().timestamp();
    let forged = post()
        .header(header::CONTENT_TYPE, "text/plain")
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(SIGNATURE_HEADER, format!("sha256={}", "ab".repeat(32)))
        .body(Body::from(payload_text()))
        .expect("valid request");

    // Act
    let answer = send(&app, forged).await;

    // Assert
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

// ---- 404, 409, 413, 415, 422 --------------------------------------------------------------

#[tokio::test]
async fn a_conversation_genesys_does_not_know_is_answered_404() {
    // Arrange
    let not_found =
        PortError::NotFound { what: "conversation".to_owned(), correlation_id: Some("corr-404".to_owned()) };
    let app = World::new().locating(1, Err(not_found)).writing_context(0).transferring(0, Ok(Receipt::default())).app();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json(), json!({ "error": "conversation_not_found" }));
}

#[tokio::test]
async fn a_handoff_being_processed_right_now_is_answered_409_with_retry_after() {
    // Arrange: someone else holds the lease of this conversation's handoff.
    let world = World::new().expecting_no_upstream_call();
    let request = HandoffRequest::from_json(&payload(), &handoff_genesys::GenesysIds).expect("valid payload");
    let begin = world
        .ledger
        .begin(
            &HandoffKey::new(conversation(), None),
            &request,
            now(),
            Duration::from_secs(30),
            Duration::from_secs(600),
            handoff_domain::HandoffMode::Transfer,
        )
        .await
        .expect("in-memory ledger");
    let handoff_domain::ports::Begin::Fresh(held) = begin else { panic!("expected a fresh record, got {begin:?}") };
    let app = world.app();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.json(), json!({ "error": "handoff_in_progress", "handoffId": held.id.to_string() }));
    assert_eq!(answer.header("retry-after"), Some("2"));
}

#[tokio::test]
async fn a_different_idempotency_key_starts_a_separate_handoff() {
    // Arrange: the key-less handoff is held by someone else.
    let world = World::new().transferring_once();
    let request = HandoffRequest::from_json(&payload(), &handoff_genesys::GenesysIds).expect("valid payload");
    world
        .ledger
        .begin(
            &HandoffKey::new(conversation(), None),
            &request,
            now(),
            Duration::from_secs(30),
            Duration::from_secs(600),
            handoff_domain::HandoffMode::Transfer,
        )
        .await
        .expect("in-memory ledger");
    let ledger = Arc::clone(&world.ledger);
    let app = world.app();

    // Act
    let answer = send(
        &app,
        self::request(
            &[("authorization", format!("Bearer {SECRET}")), ("idempotency-key", "delivery-2".to_owned())],
            &payload_text(),
        ),
    )
    .await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let records = ledger.find_by_conversation(conversation()).await.expect("ledger");
    let keys: Vec<Option<IdempotencyKey>> = records.iter().map(|r| r.key.idempotency_key.clone()).collect();
    assert!(keys.contains(&Some(IdempotencyKey::parse("delivery-2").expect("valid key"))), "{keys:?}");
}

#[tokio::test]
async fn a_body_over_64_kib_is_answered_413_with_our_json_and_calls_nothing() {
    // Arrange: once with an honest Content-Length, once streamed without one.
    let app = World::new().expecting_no_upstream_call().app();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    let declared = post()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .expect("valid request");
    let streamed = webhook(&big);

    // Act
    let declared = send(&app, declared).await;
    let streamed = send(&app, streamed).await;

    // Assert
    for answer in [declared, streamed] {
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(answer.json(), json!({ "error": "payload_too_large" }));
    }
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_read() {
    // Arrange: a valid payload padded with blanks to the limit.
    let app = World::new().transferring_once().app();
    let text = payload_text();
    let body = format!("{text}{}", " ".repeat(MAX_BODY_BYTES - text.len()));

    // Act
    let answer = send(&app, webhook(&body)).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn a_body_that_is_not_json_by_content_type_is_answered_415_and_calls_nothing() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();
    let missing = post()
        .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
        .body(Body::from(payload_text()))
        .expect("valid request");
    let form = post()
        .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(payload_text()))
        .expect("valid request");

    // Act
    let missing = send(&app, missing).await;
    let form = send(&app, form).await;

    // Assert
    for answer in [missing, form] {
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(answer.json(), json!({ "error": "unsupported_media_type" }));
    }
}

#[tokio::test]
async fn an_ended_conversation_is_answered_422_with_a_message() {
    // Arrange
    let app = World::new()
        .locating(1, Ok(ended_conversation()))
        .writing_context(0)
        .transferring(0, Ok(Receipt::default()))
        .app();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        answer.json(),
        json!({ "error": "conversation_not_transferable", "message": "the conversation has ended" })
    );
}

// ---- 5xx ----------------------------------------------------------------------------------

#[tokio::test]
async fn an_upstream_refusal_is_answered_502_with_status_code_and_correlation_id() {
    // Arrange
    let refused = PortError::Rejected {
        status: 403,
        code: "missing.permissions".to_owned(),
        correlation_id: Some("corr-502".to_owned()),
    };
    let app = World::new()
        .with_idle_agents(1)
        .locating(1, Ok(reachable_conversation()))
        .writing_context(1)
        .transferring(1, Err(refused))
        .app();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.json(),
        json!({
            "error": "upstream_rejected",
            "upstreamStatus": 403,
            "upstreamCode": "missing.permissions",
            "correlationId": "corr-502",
        })
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_answered_503_with_the_handoff_id_and_retry_after() {
    // Arrange
    let down = PortError::Transient { detail: "connection refused".to_owned(), correlation_id: None };
    let world = World::new().locating(1, Err(down)).writing_context(0).transferring(0, Ok(Receipt::default()));
    let ledger = Arc::clone(&world.ledger);
    let app = world.app();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let record = only_record(&ledger).await;
    assert_eq!(answer.json(), json!({ "error": "upstream_unavailable", "handoffId": record.id.to_string() }));
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert!(!answer.text().contains("connection refused"), "5xx bodies stay generic");
}

#[tokio::test]
async fn a_rate_limited_upstream_passes_its_retry_after_on_in_whole_seconds() {
    // Arrange
    let limited = PortError::RateLimited { retry_after: Some(Duration::from_millis(7_400)), correlation_id: None };
    let app = World::new().locating(1, Err(limited)).writing_context(0).transferring(0, Ok(Receipt::default())).app();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), Some("8"));
}

#[tokio::test]
async fn a_handoff_over_the_in_flight_cap_is_answered_503_at_once_instead_of_queueing() {
    // Arrange: one permit, held by a handoff stuck in the conversation lookup.
    let world = World::new().with_settings(HttpSettings { max_in_flight: 1, ..HttpSettings::default() });
    let ledger = Arc::clone(&world.ledger);
    let stalled = Arc::new(StalledTransfer::default());
    let app = world.app_with_transfer(Arc::clone(&stalled) as _);
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, webhook(&payload_text())).await }
    });
    tokio::time::timeout(Duration::from_secs(10), stalled.entered.notified()).await.expect("the first handoff started");

    // Act
    let second = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.json(), json!({ "error": "overloaded" }));
    assert_eq!(second.header("retry-after"), Some("1"));
    stalled.release.notify_one();
    let first = tokio::time::timeout(Duration::from_secs(10), first).await.expect("finished").expect("no panic");
    assert_eq!(first.json()["error"], "upstream_unavailable");
    assert_eq!(ledger.find_by_conversation(conversation()).await.expect("ledger").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_outlives_the_timeout_is_answered_503_json() {
    // Arrange: the lookup never returns.
    let world = World::new()
        .with_settings(HttpSettings { request_timeout: Duration::from_secs(25), ..HttpSettings::default() });
    let app = world.app_with_transfer(Arc::new(StalledTransfer::default()));
    let started = tokio::time::Instant::now();

    // Act
    let answer = send(&app, webhook(&payload_text())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json(), json!({ "error": "timeout" }));
    assert!(answer.header("x-request-id").is_some());
    assert_eq!(started.elapsed(), Duration::from_secs(25));
}

// ---- request ids, routing -----------------------------------------------------------------

#[tokio::test]
async fn every_answer_carries_a_generated_request_id() {
    // Arrange
    let app = World::new().transferring_once().app();

    // Act
    let ok = send(&app, webhook(&payload_text())).await;
    let unauthorized = send(&app, request(&[], &payload_text())).await;
    let miss = send(&app, Request::get("/nope").body(Body::empty()).expect("valid request")).await;

    // Assert
    for answer in [ok, unauthorized, miss] {
        let id = answer.header("x-request-id").expect("x-request-id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}

#[tokio::test]
async fn a_sane_incoming_request_id_is_echoed_and_an_unusable_one_replaced() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let sane = send(&app, request(&[("x-request-id", "bot-7f3a:42".to_owned())], "{}")).await;
    let unusable = send(&app, request(&[("x-request-id", "a\tb".to_owned())], "{}")).await;

    // Assert
    assert_eq!(sane.header("x-request-id"), Some("bot-7f3a:42"));
    let replaced = unusable.header("x-request-id").expect("x-request-id");
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced}");
}

#[tokio::test]
async fn an_unknown_route_and_a_wrong_method_get_json_errors() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let miss = send(&app, Request::get("/webhooks/nope").body(Body::empty()).expect("valid request")).await;
    let wrong_method =
        send(&app, Request::get("/webhooks/bot-handoff").body(Body::empty()).expect("valid request")).await;

    // Assert
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    assert_eq!(miss.json(), json!({ "error": "not_found" }));
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.json(), json!({ "error": "method_not_allowed" }));
    assert_eq!(wrong_method.header("allow"), Some("POST"));
}
