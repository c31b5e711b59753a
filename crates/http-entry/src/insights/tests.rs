use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::TimeDelta;
use handoff_domain::insights::{HandoffSummary, SUMMARY_PAGE};
use handoff_domain::ports::{Begin, LedgerPort};
use handoff_domain::{HandoffKey, HandoffRequest, InMemoryLedger, Stage, StoredAnswer};
use serde_json::json;

use super::*;
use crate::router;
use crate::state::QueueFigures;
use crate::test_support::*;

/// `how`: `transferred`, `deferred_then_transferred`, `failed`, `advised`, `open`.
async fn seed(ledger: &InMemoryLedger, minutes_ago: i64, reason: &str, how: &str, took_secs: i64) {
    let conversation = handoff_genesys::GenesysIds::conversation(uuid::Uuid::new_v4());
    let request = HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": "guest-id-7731", "name": GUEST_NAME, "email": GUEST_EMAIL },
            "handoffReason": reason,
            "customContext": { "order_number": "ctx-secret-4711" },
        }),
        &handoff_genesys::GenesysIds,
    )
    .expect("valid payload");
    let created = now() - TimeDelta::minutes(minutes_ago);
    let Begin::Fresh(mut record) = ledger
        .begin(
            &HandoffKey::new(conversation, None),
            &request,
            created,
            Duration::from_secs(30),
            Duration::from_secs(600),
            handoff_domain::HandoffMode::Transfer,
        )
        .await
        .expect("begin")
    else {
        panic!("fresh")
    };
    let done = created + TimeDelta::seconds(took_secs);
    match how {
        "transferred" | "deferred_then_transferred" => {
            record.queue = Some(queue());
            if how == "deferred_then_transferred" {
                record.defer_until = Some(created + TimeDelta::seconds(300));
                record.advance(Stage::Deferred, created, "no capacity").expect("deferred");
            }
            record.advance(Stage::Transferred, done, "transferred").expect("transferred");
            record.answer = Some(StoredAnswer::Transferred { queue: queue() });
        }
        "failed" => {
            record.advance(Stage::Failed, done, "gone").expect("failed");
            record.answer = Some(StoredAnswer::Failed {
                status: 404,
                code: "conversation_not_found".into(),
                message: "gone".into(),
            });
        }
        "advised" => {
            record.queue = Some(queue());
            record.advance(Stage::Advised, done, "advised").expect("advised");
            record.answer = Some(StoredAnswer::Advised {
                queue: queue(),
                decision: handoff_domain::AdviceDecision::Transfer,
                confirmation: Some(handoff_domain::Confirmation::Unconfirmed {
                    why: handoff_domain::Unconfirmed::StillWithFlow,
                }),
            });
        }
        _ => {}
    }
    ledger.save(&record, None, &[]).await.expect("save");
}

/// An app with admin tokens and the insights routes over `ledger`, with twelve handoffs seeded.
async fn seeded_app() -> (Router, Arc<InMemoryLedger>) {
    let world = World::new().with_admin_tokens().expecting_no_upstream_call();
    let ledger = world.ledger.clone();
    for (ago, reason, how, took) in [
        (30, "billing", "transferred", 2),
        (60, "billing", "transferred", 4),
        (90, "billing", "deferred_then_transferred", 240),
        (120, "billing", "failed", 1),
        (200, "refund, partial", "transferred", 6),
        (300, "refund, partial", "advised", 1),
        (400, "=cmd|' /C calc'!A0", "failed", 1),
        (500, "billing", "open", 0),
        (600, "billing", "transferred", 8),
        (700, "tech", "transferred", 10),
        (800, "tech", "deferred_then_transferred", 120),
        // Outside the last 24 hours.
        (60 * 25, "billing", "transferred", 1),
    ] {
        seed(&ledger, ago, reason, how, took).await;
    }
    let state = world.state().with_insights(ledger.clone()).with_capacity_figures(Arc::new(|| {
        vec![QueueFigures {
            queue_id: queue(),
            role: "default".into(),
            figures: vec![("idle agents".into(), "3".into())],
            age: Some(Duration::from_secs(4)),
            note: None,
        }]
    }));
    (router(state), ledger)
}

fn admin() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// The text of the element carrying `data-figure="name"`.
fn figure(html: &str, name: &str) -> String {
    let marker = format!("data-figure=\"{name}\">");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no figure {name}")) + marker.len();
    html[start..].split('<').next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_page_and_the_export_take_only_the_admin_token_and_the_page_asks_a_browser_for_it() {
    // Arrange
    let (app, _) = seeded_app().await;

    for path in ["/insights", "/handoffs/export.csv"] {
        // Act
        let anonymous = send(&app, Request::get(path).body(Body::empty()).expect("request")).await;
        let webhook_secret = send(&app, get_with(path, &format!("Bearer {SECRET}"))).await;
        let bearer = send(&app, get_with(path, &admin())).await;
        let basic_login = send(&app, get_with(path, &basic("manager", ADMIN_TOKEN))).await;

        // Assert
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(webhook_secret.status, StatusCode::UNAUTHORIZED, "{path}: the bot's secret must not read");
        assert_eq!(bearer.status, StatusCode::OK, "{path}");
        assert_eq!(basic_login.status, StatusCode::OK, "{path}");
    }
    let anonymous = send(&app, Request::get("/insights").body(Body::empty()).expect("request")).await;
    assert!(anonymous.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")), "{:?}", anonymous.headers);
}

#[tokio::test]
async fn the_page_is_self_contained_under_a_strict_policy_and_shows_no_personal_data() {
    // Arrange
    let (app, _) = seeded_app().await;

    // Act
    let page = send(&app, get_with("/insights", &admin())).await;
    let csv = send(&app, get_with("/handoffs/export.csv", &admin())).await;

    // Assert
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.starts_with("default-src 'none';") && !csp.contains("unsafe"), "{csp}");
    let html = page.text();
    assert!(!html.contains("<script"), "the page has no script");
    assert!(
        !html.contains("src=") && !html.contains("http://") && !html.contains("https://"),
        "nothing loads from elsewhere"
    );
    for secret in [GUEST_NAME, GUEST_EMAIL, "ctx-secret-4711", "guest-id-7731", "order_number"] {
        assert!(!html.contains(secret), "the page shows {secret}");
        assert!(!csv.text().contains(secret), "the export shows {secret}");
    }
    // The style element is the one the policy's hash allows.
    let style = html.split("<style>").nth(1).and_then(|s| s.split("</style>").next()).expect("a style element");
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style.as_bytes()));
    assert!(csp.contains(&format!("'sha256-{hash}'")), "{csp}");
}

use base64::Engine as _;
use sha2::Digest as _;

#[tokio::test]
async fn bad_parameters_get_400_with_every_problem_in_details() {
    let (app, _) = seeded_app().await;
    let cases = [
        ("/insights?range=fortnight", vec!["range"]),
        ("/insights?range=custom", vec!["since"]),
        ("/insights?since=yesterday&until=2026-13-01&reason=", vec!["since", "until"]),
        ("/insights?range=custom&since=2026-02-01&until=2026-01-01", vec!["until"]),
        ("/insights?range=custom&since=2020-01-01&until=2026-01-01", vec!["until"]),
        ("/insights?colour=red&range=7d&range=30d", vec!["colour", "range"]),
        ("/handoffs/export.csv?since=tomorrow&reason=%07bell", vec!["since", "reason"]),
        ("/handoffs/export.csv?since=2026-02-01&until=2026-01-01", vec!["until"]),
        ("/handoffs/export.csv?format=xlsx", vec!["format"]),
    ];
    for (path, fields) in cases {
        let answer = send(&app, get_with(path, &admin())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["error"], "invalid_request", "{path}");
        let got: Vec<&str> =
            body["details"].as_array().expect("details").iter().filter_map(|d| d["field"].as_str()).collect();
        assert_eq!(got, fields, "{path}: {body}");
    }
}

#[tokio::test]
async fn the_page_and_the_export_show_the_same_numbers_for_a_window_and_a_reason() {
    // Arrange
    let (app, ledger) = seeded_app().await;
    for query in ["range=24h", "range=7d", "range=24h&reason=billing"] {
        // Act
        let html = send(&app, get_with(&format!("/insights?{query}"), &admin())).await.text();
        let since = (now() - if query.contains("7d") { TimeDelta::days(7) } else { TimeDelta::hours(24) })
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let reason = if query.contains("billing") { "&reason=billing" } else { "" };
        let csv_path = format!(
            "/handoffs/export.csv?since={since}&until={}{reason}",
            now().to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let csv = send(&app, get_with(&csv_path.replace('+', "%2B"), &admin())).await;
        assert_eq!(csv.status, StatusCode::OK, "{}", csv.text());

        // Assert: count the CSV rows independently of the fold.
        let rows: Vec<Vec<String>> = parse_csv(&csv.text());
        assert_eq!(rows[0].join(","), CSV_HEADER.trim_end());
        let data = &rows[1..];
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        for row in data {
            *outcomes.entry(row[4].split(':').next().unwrap_or_default().to_owned()).or_default() += 1;
        }
        let reached: u64 = ["transferred", "transferred_after_deferral", "confirmed"]
            .iter()
            .map(|k| outcomes.get(*k).copied().unwrap_or(0))
            .sum();
        assert_eq!(figure(&html, "total"), data.len().to_string(), "{query}");
        assert_eq!(figure(&html, "transferred-all"), reached.to_string(), "{query}");
        assert_eq!(figure(&html, "failed-all"), outcomes.get("failed").copied().unwrap_or(0).to_string(), "{query}");
        let mut secs: Vec<f64> = data.iter().filter_map(|r| r[7].parse::<f64>().ok()).collect();
        secs.sort_by(f64::total_cmp);
        let p50 = secs[secs.len().div_ceil(2) - 1];
        assert_eq!(figure(&html, "to-queue-p50"), format!("{p50:.1} s"), "{query}");
        assert_eq!(figure(&html, "to-queue-count"), secs.len().to_string(), "{query}");
        assert_eq!(figure(&html, "outbox-backlog"), "0");
    }
    // The seeded numbers, to prove the comparison compares something.
    let html = send(&app, get_with("/insights?range=24h", &admin())).await.text();
    assert_eq!(figure(&html, "total"), "11");
    assert_eq!(figure(&html, "transferred-all"), "7");
    assert_eq!(figure(&html, "failed-all"), "2");
    assert_eq!(figure(&html, "deferral-count"), "2");
    assert_eq!(figure(&html, "confirmation-rate"), "0.0 %");
    assert!(html.contains("idle agents: <strong>3</strong>"), "capacity figures are shown");
    drop(ledger);
}

/// A small CSV reader (quoted fields, doubled quotes), independent of the writer.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let mut fields = Vec::new();
        let (mut field, mut quoted, mut chars) = (String::new(), false, line.chars().peekable());
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                (c, _) => field.push(c),
            }
        }
        fields.push(field);
        rows.push(fields);
    }
    rows
}

#[tokio::test]
async fn the_export_quotes_reasons_and_defuses_formulas() {
    let (app, _) = seeded_app().await;
    let csv = send(&app, get_with("/handoffs/export.csv", &admin())).await;
    let text = csv.text();
    assert!(csv.header("content-type").is_some_and(|c| c.starts_with("text/csv")));
    assert!(text.contains(",\"refund, partial\","), "{text}");
    assert!(text.contains(",\"'=cmd|' /C calc'!A0\","), "{text}");
    let rows = parse_csv(&text);
    assert!(rows.iter().all(|r| r.len() == 9), "every row has nine columns");
    assert!(rows.iter().any(|r| r[4] == "failed:not_found"));
    assert!(rows.iter().any(|r| r[4] == "in_progress" && r[6].is_empty() && r[7].is_empty()));
}

#[tokio::test]
async fn the_export_streams_more_than_one_page_in_creation_order() {
    // Arrange: one page and a bit.
    let world = World::new().with_admin_tokens().expecting_no_upstream_call();
    let ledger = world.ledger.clone();
    let n = SUMMARY_PAGE + 7;
    for i in 0..n {
        seed(&ledger, 1 + (i % 600) as i64, "billing", "transferred", 1).await;
    }
    let app = router(world.state().with_insights(ledger.clone()));

    // Act
    let csv = send(&app, get_with("/handoffs/export.csv", &admin())).await;

    // Assert
    let rows = parse_csv(&csv.text());
    assert_eq!(rows.len(), n + 1, "the header and every handoff, once");
    let created: Vec<&str> = rows[1..].iter().map(|r| r[5].as_str()).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "rows come in creation order");
    let mut ids: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "no row twice");
}

#[tokio::test]
async fn without_a_read_model_the_routes_are_not_found() {
    let app = World::new().with_admin_tokens().app();
    let answer = send(&app, get_with("/insights", &admin())).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[test]
fn csv_lines_have_nine_columns_and_seconds_to_the_millisecond() {
    let summary = HandoffSummary {
        handoff_id: handoff_domain::HandoffId::random(),
        conversation_id: conversation(),
        reason: "say \"hi\"".into(),
        queue_id: Some(queue()),
        outcome: handoff_domain::insights::Outcome::Transferred,
        created_at: now(),
        finished_at: Some(now() + TimeDelta::milliseconds(1500)),
        to_queue: Some(Duration::from_millis(1500)),
        attempts: 2,
    };
    let mut line = String::new();
    csv_line(&mut line, &summary);
    assert!(
        line.ends_with(",transferred,2025-06-15T12:00:00.000Z,2025-06-15T12:00:01.500Z,1.500,2\r\n")
            || line.contains(",1.500,2\r\n"),
        "{line}"
    );
    assert!(line.contains(",\"say \"\"hi\"\"\","), "{line}");
}
