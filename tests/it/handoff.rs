//! The webhook end to end: an in-process `App` against the Genesys simulator.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use genesys_sim::{
    ConversationKind, ConversationSpec, Endpoint, Fault, FaultKind, SimConfig, BILLING_QUEUE, EMPTY_QUEUE,
    SUPPORT_QUEUE,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    call_counts, customer, in_queue, sample_payload, spawn_app, spawn_app_with, FALLBACK, ONE_HANDOFF_CALLS, RESERVED,
};

#[tokio::test]
async fn the_tutorial_payload_makes_exactly_the_documented_genesys_calls() {
    // Arrange
    let app = spawn_app().await;
    let conversation = Uuid::new_v4();
    let payload = sample_payload(conversation, "complex_billing_dispute");

    // Act
    let (status, body, headers) = app.post_handoff(&payload).await;

    // Assert: the answer
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "transferred");
    assert_eq!(body["conversationId"], conversation.to_string());
    assert_eq!(body["queueId"], BILLING_QUEUE.to_string());
    assert_eq!(body["replayed"], false);
    assert!(Uuid::parse_str(body["handoffId"].as_str().unwrap_or_default()).is_ok());
    assert!(headers.contains_key("x-request-id"));

    // Assert: the calls
    assert!(app.eventually(Duration::from_secs(5), |a| a.count(Endpoint::PutTags) == 1).await, "tag never written");
    let sim = app.sim.sim();
    assert_eq!(sim.token_calls(), 1);
    assert_eq!(call_counts(sim), ONE_HANDOFF_CALLS, "no other call was made");
    let conv = sim.conversation(conversation).expect("conversation exists");
    let customer = customer(&conv);
    let calls = sim.calls();
    let patch = calls.iter().find(|c| c.endpoint == Endpoint::PatchAttributes).expect("patch call");
    assert!(patch.path.ends_with(&format!("/participants/{}/attributes", customer["id"].as_str().unwrap_or("?"))));
    let attributes = &patch.body.as_ref().expect("patch body")["attributes"];
    for (key, value) in payload["customContext"].as_object().expect("context") {
        assert_eq!(&attributes[key], value, "context key {key}");
    }
    for key in RESERVED {
        assert!(attributes[key].is_string(), "reserved key {key} missing");
    }
    assert_eq!(attributes["guest_email"], "jane.doe@example.com");
    assert_eq!(attributes["bot_handoff_reason"], "complex_billing_dispute");
    let replace = calls.iter().find(|c| c.endpoint == Endpoint::Replace).expect("replace call");
    assert!(!replace.path.contains(customer["id"].as_str().unwrap_or("?")), "the customer was replaced");
    assert_eq!(replace.body.as_ref().expect("body")["queueId"], BILLING_QUEUE.to_string());
    assert_eq!(replace.body.as_ref().expect("body")["transferType"], "Unattended");
    assert!(in_queue(&conv, BILLING_QUEUE));
    assert_eq!(sim.external_tag(conversation).as_deref(), Some("bot-handoff:complex_billing_dispute"));
    app.stop().await;
}

#[tokio::test]
async fn every_bad_payload_is_refused_with_its_fields_and_no_upstream_call() {
    let app = spawn_app().await;
    let valid = sample_payload(Uuid::new_v4(), "complex_billing_dispute");
    let with = |path: &[&str], value: Value| {
        let mut p = valid.clone();
        let mut target = &mut p;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        target[path[path.len() - 1]] = value;
        p
    };
    let many_keys: serde_json::Map<String, Value> = (0..41).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (with(&["conversationId"], json!("not-a-uuid")), "conversationId"),
        (with(&["conversationId"], json!(null)), "conversationId"),
        (with(&["conversationId"], json!("../../admin")), "conversationId"),
        (with(&["guestInfo"], json!("jane")), "guestInfo"),
        (with(&["guestInfo", "id"], json!("")), "guestInfo.id"),
        (with(&["guestInfo", "id"], json!("x".repeat(257))), "guestInfo.id"),
        (with(&["guestInfo", "name"], json!("n".repeat(257))), "guestInfo.name"),
        (with(&["guestInfo", "email"], json!("jane.doe(at)example.com")), "guestInfo.email"),
        (with(&["handoffReason"], json!("")), "handoffReason"),
        (with(&["handoffReason"], json!("r".repeat(129))), "handoffReason"),
        (with(&["handoffReason"], json!("line\nbreak")), "handoffReason"),
        (with(&["customContext"], json!([1, 2])), "customContext"),
        (with(&["customContext"], Value::Object(many_keys)), "customContext"),
        (with(&["customContext", "bad key"], json!("v")), "customContext[\"bad key\"]"),
        (with(&["customContext", "k"], json!("v".repeat(257))), "customContext.k"),
        (with(&["customContext", "k"], json!({"nested": true})), "customContext.k"),
        (with(&["customContext", "k"], json!(null)), "customContext.k"),
        (with(&["customContext", "guest_name"], json!("x")), "customContext.guest_name"),
        (with(&["queueId"], json!("queue-1")), "queueId"),
        (with(&["queueId"], json!(Uuid::new_v4())), "queueId"),
        (with(&["participantId"], json!(42)), "participantId"),
        (json!([1, 2, 3]), "$"),
    ];
    for (payload, field) in cases {
        let (status, body, _) = app.post_handoff(&payload).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["error"], "invalid_payload");
        let details = body["details"].as_array().expect("details");
        assert!(details.iter().any(|d| d["field"] == field), "{field} not in {body}");
    }
    // Malformed JSON is ours too.
    let resp = app
        .client
        .post(format!("{}/webhooks/bot-handoff", app.address))
        .bearer_auth(crate::helpers::SECRET)
        .header("content-type", "application/json")
        .body("{\"conversationId\": ")
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(app.sim.sim().calls().len(), 0, "a bad payload reached Genesys");
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_is_replayed_without_an_upstream_write() {
    let app = spawn_app().await;
    let payload = sample_payload(Uuid::new_v4(), "complex_billing_dispute");
    let (first, body1, _) = app.post_handoff(&payload).await;
    let writes_before = app.count(Endpoint::PatchAttributes) + app.count(Endpoint::Replace);

    let (second, body2, _) = app.post_handoff(&payload).await;

    assert_eq!((first, second), (200, 200));
    assert_eq!(body2["replayed"], true);
    assert_eq!(body1["handoffId"], body2["handoffId"]);
    assert_eq!(app.count(Endpoint::PatchAttributes) + app.count(Endpoint::Replace), writes_before);
    assert_eq!(app.count(Endpoint::Replace), 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_duplicates_transfer_once() {
    let app = spawn_app().await;
    let payload = sample_payload(Uuid::new_v4(), "complex_billing_dispute");
    let answers = futures_join(&app, &payload, 20).await;
    let ok = answers.iter().filter(|s| **s == 200).count();
    assert!(answers.iter().all(|s| *s == 200 || *s == 409), "{answers:?}");
    assert!(ok >= 1, "{answers:?}");
    assert_eq!(app.count(Endpoint::Replace), 1);
    app.stop().await;
}

async fn futures_join(app: &crate::helpers::TestApp, payload: &Value, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = app.client.clone();
        let url = format!("{}/webhooks/bot-handoff", app.address);
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(crate::helpers::SECRET)
                .json(&payload)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task").expect("answer"));
    }
    out
}

#[tokio::test]
async fn no_capacity_defers_and_the_worker_transfers_once_capacity_appears() {
    let app = spawn_app().await;
    let conversation = Uuid::new_v4();

    let (status, body, _) = app.post_handoff(&sample_payload(conversation, "after_hours")).await;

    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "deferred");
    assert_eq!(body["reason"], "no_capacity");
    assert_eq!(body["queueId"], EMPTY_QUEUE.to_string());
    assert!(body["retryAfterSeconds"].as_u64().is_some());
    assert_eq!(app.count(Endpoint::Replace), 0);
    assert_eq!(app.count(Endpoint::PatchAttributes), 0);
    // A repeat while deferred replays the 202.
    let (again, body2, _) = app.post_handoff(&sample_payload(conversation, "after_hours")).await;
    assert_eq!((again, &body2["replayed"]), (202, &json!(true)));

    // The gauge of waiting deferred handoffs shows it (refreshed every 10 s).
    let mut gauge = String::new();
    for _ in 0..60 {
        let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics");
        gauge = metrics
            .text()
            .await
            .expect("text")
            .lines()
            .filter(|l| l.starts_with("handoff_deferred_handoffs"))
            .collect();
        if gauge.ends_with(" 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(gauge, "handoff_deferred_handoffs 1");

    app.sim.sim().set_queue_capacity(EMPTY_QUEUE, 2, 0, 10);
    let moved = app
        .eventually(Duration::from_secs(10), |a| {
            a.sim.sim().conversation(conversation).is_some_and(|c| in_queue(&c, EMPTY_QUEUE))
        })
        .await;
    assert!(moved, "the deferred handoff was never transferred");
    assert_eq!(app.count(Endpoint::Replace), 1);
    let (status, record) = app.get(&format!("/handoffs/{}", body["handoffId"].as_str().unwrap_or_default())).await;
    assert_eq!(status, 200);
    assert_eq!(record["stage"], "transferred");
    let (_, replay, _) = app.post_handoff(&sample_payload(conversation, "after_hours")).await;
    assert_eq!(replay["status"], "transferred");
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_overflows_to_the_fallback_queue() {
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("HANDOFF_FALLBACK_QUEUE_ID".into(), FALLBACK.to_string());
    })
    .await;
    let conversation = Uuid::new_v4();
    let (status, body, _) = app.post_handoff(&sample_payload(conversation, "after_hours")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queueId"], FALLBACK.to_string());
    assert!(in_queue(&app.sim.sim().conversation(conversation).expect("exists"), FALLBACK));
    app.stop().await;
}

#[tokio::test]
async fn conversations_genesys_does_not_know_or_that_ended_are_refused() {
    let app = spawn_app().await;
    let unknown = Uuid::new_v4();
    app.sim.sim().mark_unknown(unknown);
    let ended = app.sim.sim().create_conversation(ConversationSpec::new(ConversationKind::Ended)).conversation_id;
    let nobody = app.sim.sim().create_conversation(ConversationSpec::new(ConversationKind::NoHolder)).conversation_id;
    let agent = app.sim.sim().create_conversation(ConversationSpec::new(ConversationKind::AgentHeld)).conversation_id;

    let (s404, b404, _) = app.post_handoff(&sample_payload(unknown, "x")).await;
    let (s422a, b422a, _) = app.post_handoff(&sample_payload(ended, "x")).await;
    let (s422b, b422b, _) = app.post_handoff(&sample_payload(nobody, "x")).await;
    let (s422c, b422c, _) = app.post_handoff(&sample_payload(agent, "x")).await;

    assert_eq!((s404, &b404["error"]), (404, &json!("conversation_not_found")));
    assert_eq!((s422a, &b422a["error"]), (422, &json!("conversation_not_transferable")));
    assert_eq!((s422b, &b422b["error"]), (422, &json!("conversation_not_transferable")));
    assert_eq!((s422c, &b422c["message"]), (422, &json!("an agent already handles the conversation")), "{b422c}");
    assert_eq!(app.count(Endpoint::Replace), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_missing_permission_is_a_502_with_the_upstream_code() {
    let config = SimConfig {
        missing_permissions: vec!["conversation:communication:blindTransfer".to_owned()],
        ..SimConfig::default()
    };
    let app = spawn_app_with(config, |_| {}).await;
    let (status, body, _) = app.post_handoff(&sample_payload(Uuid::new_v4(), "billing")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "upstream_rejected");
    assert_eq!(body["upstreamStatus"], 403);
    assert_eq!(body["upstreamCode"], "missing.permissions");
    assert!(body["correlationId"].is_string());
    assert!(!body.to_string().contains("blindTransfer"), "Genesys text echoed: {body}");
    app.stop().await;
}

#[tokio::test]
async fn a_429_on_the_transfer_is_waited_out_and_transferred_once() {
    let app = spawn_app().await;
    app.sim.sim().push_fault(Fault::new(Endpoint::Replace, FaultKind::too_many_requests(1)));
    let conversation = Uuid::new_v4();
    let (status, body, _) = app.post_handoff(&sample_payload(conversation, "billing")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.count(Endpoint::Replace), 2, "one 429, one success");
    let replaces: Vec<Duration> =
        app.sim.sim().calls().iter().filter(|c| c.endpoint == Endpoint::Replace).map(|c| c.at).collect();
    assert!(replaces[1] - replaces[0] >= Duration::from_millis(900), "Retry-After: 1 not waited: {replaces:?}");
    assert!(in_queue(&app.sim.sim().conversation(conversation).expect("exists"), SUPPORT_QUEUE));
    app.stop().await;
}

#[tokio::test]
async fn an_outage_answers_503_and_the_retry_resumes_the_same_handoff() {
    let app = spawn_app().await;
    let conversation = Uuid::new_v4();
    app.sim.sim().push_fault(Fault::new(Endpoint::Replace, FaultKind::status(503)).times(100));

    let (status, body, headers) = app.post_handoff(&sample_payload(conversation, "billing")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "upstream_unavailable");
    assert!(headers.contains_key("retry-after"));
    let first_id = body["handoffId"].clone();
    assert!(first_id.is_string());

    app.sim.sim().clear_faults();
    let (status, body, _) = app.post_handoff(&sample_payload(conversation, "billing")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["handoffId"], first_id, "the retry started a new handoff");
    let conv = app.sim.sim().conversation(conversation).expect("exists");
    assert!(in_queue(&conv, SUPPORT_QUEUE));
    let applied = conv["recentTransfers"].as_array().map_or(0, Vec::len);
    assert_eq!(applied, 1, "transferred more than once");
    app.stop().await;
}

#[tokio::test]
async fn a_transfer_whose_answer_is_lost_is_read_back_not_repeated() {
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("GENESYS_TIMEOUT_MS".into(), "300".into());
        env.insert("GENESYS_BUDGET_MS".into(), "2000".into());
    })
    .await;
    app.sim.sim().push_fault(Fault::new(Endpoint::Replace, FaultKind::ApplyThenDelay(Duration::from_secs(1))));
    let conversation = Uuid::new_v4();

    let (status, body, _) = app.post_handoff(&sample_payload(conversation, "billing")).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(app.count(Endpoint::Replace), 1, "the transfer was repeated");
    assert_eq!(app.count(Endpoint::GetConversation), 2, "no read-back happened");
    app.stop().await;
}

#[tokio::test]
async fn the_read_side_and_metrics_show_a_handoff() {
    let app = spawn_app().await;
    let conversation = Uuid::new_v4();
    let (_, body, _) = app.post_handoff(&sample_payload(conversation, "complex_billing_dispute")).await;
    let id = body["handoffId"].as_str().unwrap_or_default().to_owned();

    let (status, record) = app.get(&format!("/handoffs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(record["stage"], "transferred");
    assert!(record["history"].as_array().is_some_and(|h| h.len() >= 3), "{record}");
    assert!(!record.to_string().contains("Jane Doe"));
    let (_, list) = app.get(&format!("/handoffs?conversationId={conversation}")).await;
    assert_eq!(list["handoffs"].as_array().map(Vec::len), Some(1));
    let (_, stats) = app.get("/handoffs/stats").await;
    assert!(stats["rows"].as_array().is_some_and(|rows| rows
        .iter()
        .any(|r| r["reason"] == "complex_billing_dispute" && r["outcome"] == "transferred" && r["count"] == 1)));
    let metrics =
        app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.lines().any(|l| l.starts_with("handoff_handoffs_total{")
            && l.contains("reason=\"complex_billing_dispute\"")
            && l.contains("outcome=\"transferred\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(metrics.contains("handoff_upstream_requests_total{endpoint="), "{metrics}");
    app.stop().await;
}

/// A log sink the test can read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime runs the app, the simulator and this test on one thread, so the
// thread-local subscriber below sees every log line of the handoff.
#[tokio::test(flavor = "current_thread")]
async fn guest_name_and_email_never_reach_the_logs() {
    let sink = Captured::default();
    let subscriber = handoff_app::telemetry::subscriber("debug", handoff_app::config::LogFormat::Json, sink.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    // A 500 on the lookup (a read) is retried, so the retry path logs too.
    app.sim.sim().push_fault(Fault::new(Endpoint::GetConversation, FaultKind::status(500)));

    let (status, _, _) = app.post_handoff(&sample_payload(Uuid::new_v4(), "complex_billing_dispute")).await;
    let (bad, _, _) =
        app.post_handoff(&json!({"guestInfo": {"id": "g", "name": "Jane Doe", "email": "jane.doe@example.com"}})).await;
    app.stop().await;

    assert_eq!((status, bad), (200, 400));
    let logs = String::from_utf8(sink.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(logs.contains("\"outcome\":\"transferred\""), "the outcome line was not captured:\n{logs}");
    assert!(logs.contains("retrying genesys call"), "the retry line was not captured:\n{logs}");
    assert!(!logs.contains("Jane Doe"), "guest name logged");
    assert!(!logs.contains("jane.doe@example.com"), "guest email logged");
    assert!(!logs.contains("sim-secret"), "client secret logged");
}

#[tokio::test]
async fn bad_client_credentials_show_in_readyz_and_refuse_handoffs_without_a_retry_loop() {
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("GENESYS_CLIENT_SECRET".into(), "wrong-secret".into());
    })
    .await;

    let resp = app.client.get(format!("{}/readyz", app.address)).send().await.expect("readyz");
    let ready_status = resp.status().as_u16();
    let ready: Value = resp.json().await.expect("json");
    let (status, body, _) = app.post_handoff(&sample_payload(Uuid::new_v4(), "billing")).await;

    assert_eq!(ready_status, 503, "{ready}");
    assert_eq!(ready["checks"]["ledger"], "ok", "{ready}");
    assert!(ready["checks"]["genesys_token"].as_str().is_some_and(|e| e.contains("client credentials")), "{ready}");
    assert_eq!(status, 502, "{body}");
    assert_eq!((body["upstreamStatus"].as_u64(), body["upstreamCode"].as_str()), (Some(401), Some("invalid_client")));
    assert_eq!(app.sim.sim().token_calls(), 2, "one token call for readyz and one for the handoff, no retry loop");
    assert_eq!(app.count(Endpoint::GetConversation), 0);
    app.stop().await;
}

#[tokio::test]
async fn three_agents_in_one_chat_each_with_capacity_four_and_nobody_idle_take_the_handoff_not_the_fallback() {
    // Arrange: the README scenario. Support (the target) has 3 agents in one chat each, the org's
    // message capacity is 4, and an overflow queue with idle agents is configured.
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("HANDOFF_FALLBACK_QUEUE_ID".into(), genesys_sim::OVERFLOW_QUEUE.to_string());
    })
    .await;
    assert!(app.sim.sim().set_agent_loads(SUPPORT_QUEUE, vec![1, 1, 1]));
    app.sim.sim().set_message_capacity(Some(4));
    let conversation = Uuid::new_v4();

    // Act: a reason with no route goes to the target queue
    let (status, body, _) = app.post_handoff(&sample_payload(conversation, "general_question")).await;

    // Assert
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queueId"], SUPPORT_QUEUE.to_string(), "{body}");
    let conv = app.sim.sim().conversation(conversation).expect("conversation");
    assert!(in_queue(&conv, SUPPORT_QUEUE));
    assert_eq!(app.count(Endpoint::GetUtilization), 1);
}

#[tokio::test]
async fn the_same_queue_counted_by_idle_agents_overflows_to_the_fallback() {
    // Arrange: as above, with HANDOFF_CAPACITY_MODEL=idle (the rule before free slots)
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("HANDOFF_FALLBACK_QUEUE_ID".into(), genesys_sim::OVERFLOW_QUEUE.to_string());
        env.insert("HANDOFF_CAPACITY_MODEL".into(), "idle".into());
    })
    .await;
    assert!(app.sim.sim().set_agent_loads(SUPPORT_QUEUE, vec![1, 1, 1]));
    let conversation = Uuid::new_v4();

    // Act
    let (status, body, _) = app.post_handoff(&sample_payload(conversation, "general_question")).await;

    // Assert: nobody idle on Support, so the overflow queue; the utilization is never read
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queueId"], genesys_sim::OVERFLOW_QUEUE.to_string(), "{body}");
    assert_eq!(app.count(Endpoint::GetUtilization), 0);
}

/// Polls the newest record of `conversation` (bounded: `timeout`) until `done` holds for it.
async fn newest_until(
    app: &crate::helpers::TestApp,
    conversation: Uuid,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, list) = app.get(&format!("/handoffs?conversationId={conversation}")).await;
        let newest = list["handoffs"][0].clone();
        if done(&newest) || tokio::time::Instant::now() >= deadline {
            return newest;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn where_genesys_refuses_the_flows_replace_transfer_mode_fails_and_the_guides_advise_fallback_is_confirmed() {
    // Arrange: an org that refuses a replace of the flow's participant
    let config =
        SimConfig { refuse_flow_replace: Some(genesys_sim::FLOW_REPLACE_REFUSED.to_owned()), ..SimConfig::default() };
    let app = spawn_app_with(config, |_| {}).await;
    let ids = app.sim.sim().create_conversation(ConversationSpec::new(ConversationKind::Bot));
    let conversation = ids.conversation_id;
    let payload = sample_payload(conversation, "password_reset");

    // Act 1: transfer mode (opt-in) fails, and nothing moved
    let (status, body, _) = app.post_handoff(&payload).await;

    // Assert 1
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "conversation_not_transferable", "{body}");
    assert_eq!(app.count(Endpoint::Replace), 1);
    let still = app.sim.sim().conversation(conversation).expect("conversation");
    assert!(!in_queue(&still, SUPPORT_QUEUE), "{still}");

    // Act 2: the kit's fallback, advise mode; then the flow's own Transfer to ACD
    let (status, advice) = app.post_handoff_with_query("?mode=advise", &payload).await;
    assert_eq!(status, 200, "{advice}");
    assert_eq!(
        (advice["status"].as_str(), advice["decision"].as_str()),
        (Some("advise"), Some("transfer")),
        "{advice}"
    );
    let queue: Uuid = advice["queueId"].as_str().and_then(|q| q.parse().ok()).expect("queueId");
    app.sim.sim().flow_transfer(conversation, queue).expect("the flow transfers");

    // Assert 2: the confirmation reads (first about 5 s after the advice) record `confirmed`
    let record = newest_until(&app, conversation, Duration::from_secs(20), |r| r["outcome"] != "in_progress").await;
    assert_eq!(record["stage"], "advised", "{record}");
    assert_eq!(record["outcome"], "confirmed", "{record}");
    assert_eq!(record["answer"]["confirmation"]["result"], "confirmed", "{record}");
    assert_eq!(record["answer"]["confirmation"]["queueId"], queue.to_string(), "{record}");
    assert_eq!(app.count(Endpoint::Replace), 1, "advise mode never replaces");
    let (_, stats) = app.get("/handoffs/stats").await;
    let outcomes: Vec<&str> =
        stats["rows"].as_array().expect("rows").iter().filter_map(|r| r["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["confirmed", "failed"], "{stats}");
    assert_eq!(stats["rows"][1]["cause"], "not_transferable", "{stats}");
    assert_eq!(stats["timeToQueue"]["count"], 1, "{stats}");
    let metrics = reqwest::get(format!("{}/metrics", app.address)).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("outcome=\"confirmed\""), "{metrics}");
    assert!(metrics.contains("stage=\"advised\""), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn an_advice_the_flow_does_not_carry_out_stays_in_progress_while_the_reads_run() {
    // Arrange
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("HANDOFF_CONFIRM_SECS".to_owned(), "5".to_owned());
    })
    .await;
    let ids = app.sim.sim().create_conversation(ConversationSpec::new(ConversationKind::Bot));

    // Act
    let (status, advice) =
        app.post_handoff_with_query("?mode=advise", &sample_payload(ids.conversation_id, "password_reset")).await;

    // Assert: one read at 5 s (the whole window) finds the flow still holding it
    assert_eq!(status, 200, "{advice}");
    let record =
        newest_until(&app, ids.conversation_id, Duration::from_secs(20), |r| r["outcome"] != "in_progress").await;
    assert_eq!(record["outcome"], "unconfirmed", "{record}");
    assert_eq!(record["answer"]["confirmation"], json!({ "result": "unconfirmed", "why": "still_with_flow" }));
    assert_eq!(app.count(Endpoint::Replace), 0);
    app.stop().await;
}
