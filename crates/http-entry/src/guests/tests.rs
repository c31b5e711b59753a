//! Guest erasure through the real router: what is erased, the admin guard, bad guest ids.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use handoff_domain::ports::LedgerPort;
use serde_json::json;

use crate::test_support::*;

const GUEST: &str = "guest-8842-xyz";

fn delete(path: &str, authorization: Option<&str>) -> Request<Body> {
    let mut builder = Request::delete(path);
    if let Some(value) = authorization {
        builder = builder.header(header::AUTHORIZATION, value);
    }
    builder.body(Body::empty()).expect("valid request")
}

fn admin() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

#[tokio::test]
async fn erasing_a_guest_removes_their_name_email_and_context_and_counts_the_records() {
    // Arrange
    let world = World::new().with_admin_tokens().transferring_once();
    let ledger = world.ledger.clone();
    let app = world.app();
    let delivered = send(&app, webhook(&payload_text())).await;
    assert_eq!(delivered.status, StatusCode::OK, "{}", delivered.text());

    // Act
    let first = send(&app, delete(&format!("/guests/{GUEST}"), Some(&admin()))).await;
    let again = send(&app, delete(&format!("/guests/{GUEST}"), Some(&admin()))).await;
    let unknown = send(&app, delete("/guests/nobody-we-know", Some(&admin()))).await;

    // Assert
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json(), json!({ "erasedHandoffs": 1 }));
    assert_eq!((again.status, again.json()), (StatusCode::OK, json!({ "erasedHandoffs": 0 })));
    assert_eq!((unknown.status, unknown.json()), (StatusCode::OK, json!({ "erasedHandoffs": 0 })));
    let records = ledger.find_by_conversation(conversation()).await.expect("the ledger answers");
    assert_eq!(records.len(), 1);
    let request = &records[0].request;
    assert_eq!((request.guest().id(), request.guest().name(), request.guest().email()), (GUEST, None, None));
    assert!(request.context().is_empty());
}

#[tokio::test]
async fn erasure_needs_the_admin_token_and_the_webhook_secret_is_refused() {
    // Arrange
    let app = World::new().with_admin_tokens().expecting_no_upstream_call().app();
    let path = format!("/guests/{GUEST}");

    // Act
    let anonymous = send(&app, delete(&path, None)).await;
    let wrong = send(&app, delete(&path, Some("Bearer not-the-token"))).await;
    let bot = send(&app, delete(&path, Some(&format!("Bearer {SECRET}")))).await;
    let admin_basic = send(&app, delete(&path, Some(&basic("ops", OLD_ADMIN_TOKEN)))).await;
    let bad_id_anonymous = send(&app, delete("/guests/%01", None)).await;

    // Assert
    for refused in [&anonymous, &wrong, &bot, &bad_id_anonymous] {
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text());
        assert_eq!(refused.json(), json!({ "error": "unauthorized" }));
        assert!(refused.header("www-authenticate").is_some());
    }
    assert_eq!(admin_basic.status, StatusCode::OK, "{}", admin_basic.text());
}

#[tokio::test]
async fn without_an_admin_token_erasure_takes_the_webhook_credentials() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let bot = send(&app, delete(&format!("/guests/{GUEST}"), Some(&format!("Bearer {SECRET}")))).await;
    let anonymous = send(&app, delete(&format!("/guests/{GUEST}"), None)).await;

    // Assert
    assert_eq!((bot.status, bot.json()), (StatusCode::OK, json!({ "erasedHandoffs": 0 })));
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_guest_id_that_is_too_long_has_control_characters_or_is_not_utf8_is_answered_400_on_guest_id() {
    // Arrange
    let app = World::new().with_admin_tokens().expecting_no_upstream_call().app();
    let long = "g".repeat(257);

    for path in [format!("/guests/{long}"), "/guests/a%01b".to_owned(), "/guests/%FF%FE".to_owned()] {
        // Act
        let answer = send(&app, delete(&path, Some(&admin()))).await;

        // Assert
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["error"], "invalid_request", "{path}");
        assert_eq!(body["details"][0]["field"], "guestId", "{path}");
        assert!(body["details"][0]["problem"].as_str().is_some_and(|p| !p.is_empty()), "{path}");
    }
    let longest = send(&app, delete(&format!("/guests/{}", "g".repeat(256)), Some(&admin()))).await;
    assert_eq!(longest.status, StatusCode::OK, "256 characters are allowed: {}", longest.text());
}

#[tokio::test]
async fn only_delete_is_allowed_on_a_guest() {
    // Arrange
    let app = World::new().with_admin_tokens().expecting_no_upstream_call().app();

    // Act
    let answer = send(&app, get_with(&format!("/guests/{GUEST}"), &admin())).await;

    // Assert
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}
