//! The OpenAPI 3.1 document of the HTTP API ([`ApiDoc`]), generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types they answer with, and served without
//! authentication at `GET /openapi.json`.
//!
//! `docs/openapi.json` is its committed rendering ([`openapi_json`]). A test fails when the two
//! drift; `UPDATE_OPENAPI=1 cargo test -p handoff-http openapi` rewrites the file.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Type};
use utoipa::{Modify, OpenApi};

use crate::{guests, health, insights, read, webhook, REQUEST_ID_HEADER};

/// The API description: every route, its answers and the authentication schemes.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "handoff",
        description = "Bot-to-agent handoff for Genesys Cloud Web Messaging. The bot (an Architect flow's Data \
Action) posts a handoff; the service writes the context onto the customer participant and transfers the \
conversation to a queue with capacity (transfer mode), or answers which queue to transfer to (advisory mode, \
`?mode=advise`). The external contract is CONTRACT §4.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        webhook::bot_handoff,
        read::get_handoff,
        read::list_handoffs,
        read::stats,
        insights::insights_page,
        insights::export_csv,
        guests::erase_guest,
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_document,
    ),
    modifiers(&SecuritySchemes, &RequestIds),
    tags(
        (name = "webhook", description = "The bot handoff webhook (CONTRACT §4.1, §4.2)."),
        (name = "read",
            description = "Handoff records and counts, behind the admin token (HANDOFF_ADMIN_TOKEN; the webhook's \
credentials only while it is unset) (CONTRACT §4.3)."),
        (name = "insights", description = "What managers look at: the insights page and the CSV export, behind the admin token (no guest name, e-mail or context)."),
        (name = "privacy",
            description = "Erasure of a guest's personal data, behind the admin token (docs/operations.md, Privacy)."),
        (name = "operations", description = "Health, readiness, metrics and this document; no authentication."),
    ),
)]
pub struct ApiDoc;

/// The document, rendered as pretty JSON with a final newline: what `GET /openapi.json` serves
/// and `docs/openapi.json` holds.
pub fn openapi_json() -> &'static str {
    static RENDERED: OnceLock<String> = OnceLock::new();
    RENDERED.get_or_init(|| {
        // Serializing the document's plain maps and strings cannot fail; an empty object would
        // fail the drift test rather than a request.
        let mut text = ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".to_owned());
        text.push('\n');
        text
    })
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    summary = "This document",
    responses((status = 200, body = Object, content_type = "application/json", description = "OpenAPI 3.1.")),
)]
pub(crate) async fn openapi_document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// The authentication schemes of CONTRACT §4.2. An operation that requires them accepts any one
/// (the two HMAC headers together).
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <secret>` with one of the WEBHOOK_SECRET values (comma-separated \
                         for rotation; every one is accepted).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "HTTP Basic with any user name and one of the WEBHOOK_SECRET values as the password (what a \
                         Genesys Data Action with a Basic Auth credential sends).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "adminBearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <token>` with one of the HANDOFF_ADMIN_TOKEN values (comma-separated \
                         for rotation; compared in constant time). Guards the read side, the stats and erasure. While \
                         HANDOFF_ADMIN_TOKEN is set the webhook's credentials are refused there (401); while it is \
                         unset those routes take the webhook's credentials instead.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "adminBasic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "HTTP Basic with any user name and one of the HANDOFF_ADMIN_TOKEN values as the password \
                         (what a browser's login prompt sends).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "hmacTimestamp",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Handoff-Timestamp",
                "Unix seconds; refused when more than 300 s away from the server's clock. Sent together with \
                 X-Handoff-Signature.",
            ))),
        );
        components.add_security_scheme(
            "hmacSignature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Handoff-Signature",
                "`sha256=<hex HMAC-SHA256(secret, \"{X-Handoff-Timestamp}.{raw body}\")>`, checked in constant time \
                 against every WEBHOOK_SECRET value before the body is parsed.",
            ))),
        );
    }
}

/// Every answer carries `x-request-id` (the caller's, when usable, or a new UUID).
#[derive(Debug)]
struct RequestIds;

impl Modify for RequestIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let request_id = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "The request id: the caller's `x-request-id` when it is 1-128 characters of `[A-Za-z0-9._:/+=@-]`, \
                 else a new UUID. Also in the service's log lines for the request.",
            ))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(REQUEST_ID_HEADER.as_str().to_owned(), request_id.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;

    use super::*;
    use crate::test_support::*;

    /// `docs/openapi.json` at the workspace root.
    fn committed_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
    }

    fn document() -> Value {
        serde_json::from_str(openapi_json()).expect("the document is JSON")
    }

    #[test]
    fn the_committed_openapi_document_matches_the_code() {
        // Arrange
        let path = committed_path();
        let generated = openapi_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, generated).expect("docs/openapi.json is writable");
        }

        // Act
        let committed = std::fs::read_to_string(&path).unwrap_or_default();

        // Assert
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| committed.lines().count().min(generated.lines().count()) + 1, |i| i + 1);
            panic!(
                "docs/openapi.json differs from the document the code generates (first at line {line}).\n\
                 Regenerate it with:\n\n    UPDATE_OPENAPI=1 cargo test -p handoff-http openapi\n\n\
                 and commit the result."
            );
        }
    }

    #[test]
    fn the_webhook_documents_every_status_of_the_contract() {
        // Arrange
        let doc = document();
        let responses = &doc["paths"]["/webhooks/bot-handoff"]["post"]["responses"];

        // Act
        let statuses: Vec<&str> = responses.as_object().expect("responses").keys().map(String::as_str).collect();

        // Assert
        let contract = ["200", "202", "400", "401", "404", "409", "413", "415", "422", "502", "503"];
        assert_eq!(statuses, contract);
        for status in contract {
            assert!(responses[status]["content"]["application/json"]["schema"].is_object(), "{status} has no body");
            assert!(responses[status]["headers"]["x-request-id"].is_object(), "{status} lacks x-request-id");
        }
        for status in ["409", "503"] {
            assert!(responses[status]["headers"]["Retry-After"].is_object(), "{status} lacks Retry-After");
        }
        assert!(responses["401"]["headers"]["WWW-Authenticate"].is_object());
    }

    #[test]
    fn every_route_of_the_router_is_documented_and_the_webhook_names_its_three_ways_to_authenticate() {
        // Arrange
        let doc = document();

        // Act
        let paths: Vec<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();

        // Assert
        assert_eq!(
            paths,
            [
                "/guests/{guestId}",
                "/handoffs",
                "/handoffs/export.csv",
                "/handoffs/stats",
                "/handoffs/{handoffId}",
                "/healthz",
                "/insights",
                "/metrics",
                "/openapi.json",
                "/readyz",
                "/webhooks/bot-handoff"
            ]
        );
        let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
        assert_eq!(
            schemes.keys().collect::<Vec<_>>(),
            ["adminBasic", "adminBearer", "basic", "bearer", "hmacSignature", "hmacTimestamp"]
        );
        let security = &doc["paths"]["/webhooks/bot-handoff"]["post"]["security"];
        assert_eq!(
            security,
            &serde_json::json!([{ "bearer": [] }, { "basic": [] }, { "hmacSignature": [], "hmacTimestamp": [] }])
        );
        assert!(doc["paths"]["/healthz"]["get"].get("security").is_none(), "health needs no credentials");
    }

    #[test]
    fn the_documented_payload_accepts_the_contract_example_and_mode_lists_both_values() {
        // Arrange
        let doc = document();
        let params = doc["paths"]["/webhooks/bot-handoff"]["post"]["parameters"].as_array().expect("params").clone();

        // Act
        let example: Result<webhook::HandoffPayload, _> = serde_json::from_value(payload());
        let mode = params.iter().find(|p| p["name"] == "mode").expect("mode is documented");

        // Assert
        assert!(example.is_ok(), "{example:?}");
        assert_eq!(mode["in"], "query");
        assert_eq!(mode["schema"]["enum"], serde_json::json!(["transfer", "advise"]), "{mode}");
        assert!(params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"));
    }

    #[tokio::test]
    async fn openapi_json_is_served_without_credentials() {
        // Arrange
        let app = World::new().expecting_no_upstream_call().app();
        let request = Request::get("/openapi.json").body(Body::empty()).expect("valid request");

        // Act
        let answer = send(&app, request).await;

        // Assert
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.json(), document());
        assert!(answer.json()["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    }
}
