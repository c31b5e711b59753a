//! `/healthz`, `/readyz` and `/metrics` through the real router.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use handoff_domain::InMemoryLedger;
use serde_json::json;

use super::LedgerProbe;
use crate::test_support::*;
use crate::ReadinessProbe;

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("valid request")
}

#[tokio::test]
async fn healthz_answers_ok_without_credentials_and_with_a_request_id() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let answer = send(&app, get("/healthz")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({ "status": "ok" }));
    assert!(answer.header("x-request-id").is_some());
}

#[tokio::test]
async fn readyz_is_200_when_every_component_is_ready() {
    // Arrange
    let mut world = World::new().expecting_no_upstream_call();
    world.readiness = Arc::new(FixedProbe(vec![("ledger".to_owned(), Ok(())), ("genesys_token".to_owned(), Ok(()))]));
    let app = world.app();

    // Act
    let answer = send(&app, get("/readyz")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({ "status": "ready", "checks": { "ledger": "ok", "genesys_token": "ok" } }));
}

#[tokio::test]
async fn readyz_is_503_with_the_failing_component_named() {
    // Arrange
    let mut world = World::new().expecting_no_upstream_call();
    world.readiness = Arc::new(FixedProbe(vec![
        ("ledger".to_owned(), Ok(())),
        ("genesys_token".to_owned(), Err("token endpoint returned 401".to_owned())),
    ]));
    let app = world.app();

    // Act
    let answer = send(&app, get("/readyz")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.json(),
        json!({ "status": "not_ready", "checks": { "ledger": "ok", "genesys_token": "token endpoint returned 401" } })
    );
    assert!(answer.header("x-request-id").is_some());
}

#[tokio::test]
async fn metrics_serve_the_renderers_text() {
    // Arrange
    let mut world = World::new().expecting_no_upstream_call();
    world.metrics = Some(Arc::new(|| "handoff_total{outcome=\"transferred\"} 3\n".to_owned()));
    let app = world.app();

    // Act
    let answer = send(&app, get("/metrics")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header(header::CONTENT_TYPE.as_str()).is_some_and(|t| t.starts_with("text/plain")));
    assert_eq!(answer.text(), "handoff_total{outcome=\"transferred\"} 3\n");
}

#[tokio::test]
async fn metrics_are_404_without_a_renderer() {
    // Arrange
    let app = World::new().expecting_no_upstream_call().app();

    // Act
    let answer = send(&app, get("/metrics")).await;

    // Assert
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json(), json!({ "error": "not_found" }));
}

#[tokio::test]
async fn the_ledger_probe_reports_a_reachable_ledger_as_ok() {
    // Arrange
    let probe = LedgerProbe::new(Arc::new(InMemoryLedger::new()));

    // Act
    let checks = probe.check().await;

    // Assert
    assert_eq!(checks, vec![("ledger".to_owned(), Ok(()))]);
}
