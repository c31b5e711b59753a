//! The read side through the real router: records by id and by conversation, stats, bad
//! parameters and authentication.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::json;

use crate::test_support::*;
use crate::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// A router whose ledger holds one transferred handoff; returns its id too.
async fn app_with_one_handoff() -> (axum::Router, String) {
    let app = World::new().transferring_once().app();
    let answer = send(&app, webhook(&payload_text())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let id = answer.json()["handoffId"].as_str().expect("handoffId").to_owned();
    (app, id)
}

#[tokio::test]
async fn a_handoff_is_shown_by_id_with_its_history_and_without_the_guests_name_or_email() {
    // Arrange
    let (app, id) = app_with_one_handoff().await;

    // Act
    let answer = send(&app, authorized_get(&format!("/handoffs/{id}"))).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let record = answer.json();
    assert_eq!(record["handoffId"], json!(id));
    assert_eq!(record["conversationId"], CONVERSATION);
    assert_eq!(record["idempotencyKey"], json!(null));
    assert_eq!(record["guestId"], "guest-8842-xyz");
    assert_eq!(record["stage"], "transferred");
    assert_eq!(record["reason"], "complex_billing_dispute");
    assert_eq!(record["queueId"], QUEUE);
    assert_eq!(record["attempts"], 1);
    assert_eq!(record["createdAt"], "2025-06-02T10:00:00.000Z");
    assert_eq!(record["answer"], json!({ "status": "transferred", "queueId": QUEUE }));
    assert_eq!(
        record["history"][0],
        json!({ "at": "2025-06-02T10:00:00.000Z", "stage": "received", "note": "received" })
    );
    assert!(record["correlationIds"].as_array().expect("array").contains(&json!("corr-transfer")));
    for key in ["updatedAt", "nextCheckAt", "deferUntil", "lastError"] {
        assert!(record.get(key).is_some(), "{key} is missing");
    }
    let text = answer.text();
    for private in [GUEST_NAME, GUEST_EMAIL, "refund_policy_explained"] {
        assert!(!text.contains(private), "{private} leaked: {text}");
    }
}

#[tokio::test]
async fn the_handoffs_of_a_conversation_are_listed() {
    // Arrange
    let (app, id) = app_with_one_handoff().await;

    // Act
    let found = send(&app, authorized_get(&format!("/handoffs?conversationId={CONVERSATION}"))).await;
    let none = send(&app, authorized_get("/handoffs?conversationId=00000000-0000-4000-8000-000000000000")).await;

    // Assert
    assert_eq!(found.status, StatusCode::OK, "{}", found.text());
    let handoffs = found.json()["handoffs"].as_array().expect("array").clone();
    assert_eq!(handoffs.len(), 1);
    assert_eq!(handoffs[0]["handoffId"], json!(id));
    assert_eq!(none.json(), json!({ "handoffs": [] }));
}

#[tokio::test]
async fn a_missing_or_malformed_conversation_id_is_answered_400_on_that_field() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let missing = send(&app, authorized_get("/handoffs")).await;
    let malformed = send(&app, authorized_get("/handoffs?conversationId=..%2F..%2Fadmin")).await;

    // Assert
    for answer in [missing, malformed] {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "invalid_request");
        assert_eq!(answer.json()["details"][0]["field"], "conversationId");
    }
}

#[tokio::test]
async fn stats_count_the_last_24_hours_by_reason_queue_and_outcome_by_default() {
    // Arrange
    let (app, _) = app_with_one_handoff().await;

    // Act
    let answer = send(&app, authorized_get("/handoffs/stats")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json(),
        json!({
            "since": "2025-06-01T10:00:00.000Z",
            "rows": [{ "reason": "complex_billing_dispute", "queueId": QUEUE, "outcome": "transferred", "count": 1 }],
        })
    );
}

#[tokio::test]
async fn stats_since_a_later_time_leave_the_handoff_out() {
    // Arrange
    let (app, _) = app_with_one_handoff().await;

    // Act
    let answer = send(&app, authorized_get("/handoffs/stats?since=2025-06-02T11:00:00Z")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({ "since": "2025-06-02T11:00:00.000Z", "rows": [] }));
}

#[tokio::test]
async fn a_since_that_is_not_rfc3339_is_answered_400_on_since() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let words = send(&app, authorized_get("/handoffs/stats?since=yesterday")).await;
    let empty = send(&app, authorized_get("/handoffs/stats?since=")).await;

    // Assert
    for answer in [words, empty] {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["details"][0]["field"], "since");
    }
}

#[tokio::test]
async fn a_handoff_id_that_is_not_a_uuid_is_answered_400_on_that_field() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let answer = send(&app, authorized_get("/handoffs/not-a-uuid")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["details"][0], json!({ "field": "handoffId", "problem": "must be a UUID" }));
}

#[tokio::test]
async fn an_unknown_handoff_is_answered_404() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let answer = send(&app, authorized_get("/handoffs/00000000-0000-4000-8000-000000000000")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json(), json!({ "error": "handoff_not_found" }));
}

#[tokio::test]
async fn without_an_admin_token_reads_take_the_webhook_credentials_bearer_basic_or_an_hmac_over_the_empty_body() {
    // Arrange
    let (app, id) = app_with_one_handoff().await;
    let path = format!("/handoffs/{id}");
    let ts = now().timestamp();
    let get = |headers: &[(&str, String)]| {
        let mut builder = Request::get(path.as_str());
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        builder.body(Body::empty()).expect("valid request")
    };

    // Act
    let anonymous = send(&app, get(&[])).await;
    let wrong = send(&app, get(&[(header::AUTHORIZATION.as_str(), "Bearer nope".to_owned())])).await;
    let basic = send(&app, get(&[(header::AUTHORIZATION.as_str(), basic("reader", SECRET))])).await;
    let signed =
        send(&app, get(&[(TIMESTAMP_HEADER, ts.to_string()), (SIGNATURE_HEADER, signature(SECRET, ts, ""))])).await;
    let bad_id_anonymous = send(&app, Request::get("/handoffs/x").body(Body::empty()).expect("valid request")).await;

    // Assert
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(basic.status, StatusCode::OK);
    assert_eq!(signed.status, StatusCode::OK);
    assert_eq!(bad_id_anonymous.status, StatusCode::UNAUTHORIZED, "authentication comes before parameters");
}

#[tokio::test]
async fn with_an_admin_token_every_read_route_takes_only_the_admin_token() {
    // Arrange
    let app = World::new().with_admin_tokens().transferring_once().app();
    let answer = send(&app, webhook(&payload_text())).await;
    assert_eq!(answer.status, StatusCode::OK, "the webhook still takes the webhook secret: {}", answer.text());
    let id = answer.json()["handoffId"].as_str().expect("handoffId").to_owned();
    let ts = now().timestamp();
    let paths =
        [format!("/handoffs/{id}"), format!("/handoffs?conversationId={CONVERSATION}"), "/handoffs/stats".to_owned()];

    for path in &paths {
        // Act
        let bot_bearer = send(&app, get_with(path, &format!("Bearer {SECRET}"))).await;
        let bot_basic = send(&app, get_with(path, &basic("flow", SECRET))).await;
        let bot_signed = send(
            &app,
            Request::get(path.as_str())
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, signature(SECRET, ts, ""))
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;
        let anonymous = send(&app, Request::get(path.as_str()).body(Body::empty()).expect("valid request")).await;
        let admin_bearer = send(&app, get_with(path, &format!("Bearer {ADMIN_TOKEN}"))).await;
        let old_admin_basic = send(&app, get_with(path, &basic("ops", OLD_ADMIN_TOKEN))).await;

        // Assert
        for refused in [&bot_bearer, &bot_basic, &bot_signed, &anonymous] {
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}: {}", refused.text());
            assert_eq!(refused.json(), json!({ "error": "unauthorized" }));
            assert_eq!(refused.header("www-authenticate"), Some("Bearer realm=\"handoff\""));
        }
        assert_eq!(admin_bearer.status, StatusCode::OK, "{path}: {}", admin_bearer.text());
        assert_eq!(old_admin_basic.status, StatusCode::OK, "{path}: {}", old_admin_basic.text());
    }
}

#[tokio::test]
async fn a_page_guarded_by_admin_login_challenges_the_browser_with_basic_and_opens_with_the_token_as_password() {
    // Arrange: a page mounted the way an admin page would be.
    let state = World::new().with_admin_tokens().expecting_no_upstream_call().state();
    let app = axum::Router::new()
        .route("/page", axum::routing::get(|_: crate::AdminLogin| async { "welcome" }))
        .with_state(state);

    // Act
    let anonymous = send(&app, Request::get("/page").body(Body::empty()).expect("valid request")).await;
    let bot = send(&app, get_with("/page", &basic("flow", SECRET))).await;
    let admin = send(&app, get_with("/page", &basic("anyone", ADMIN_TOKEN))).await;

    // Assert
    for refused in [&anonymous, &bot] {
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(refused.header("www-authenticate"), Some(crate::ADMIN_LOGIN_CHALLENGE));
        assert_eq!(refused.json(), json!({ "error": "unauthorized" }));
    }
    assert!(crate::ADMIN_LOGIN_CHALLENGE.starts_with("Basic realm="));
    assert_eq!(admin.status, StatusCode::OK);
    assert_eq!(admin.text(), "welcome");
}
