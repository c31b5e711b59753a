//! The endpoints, driven over loopback HTTP with reqwest against a spawned simulator.

use std::time::Duration;

use reqwest::{Client, RequestBuilder, Response};
use serde_json::{json, Value};

use crate::{
    sign_app_jwt, spawn, ConversationSpec, ConversationState, Endpoint, Fault, FaultKind, SimConfig, SimHandle,
    AGENT_INTEGRATION_ID, APP_ID, BOT_INTEGRATION_ID, KEY_ID, KEY_SECRET, SUPPORT_EMAIL, SUPPORT_GROUP, SUPPORT_TOKEN,
    SWITCHBOARD_ID,
};

struct TestSim {
    handle: SimHandle,
    client: Client,
}

async fn start(config: SimConfig) -> TestSim {
    TestSim { handle: spawn(config).await.expect("simulator starts"), client: Client::new() }
}

impl TestSim {
    fn sim(&self) -> &crate::Sim {
        self.handle.sim()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    fn basic(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).basic_auth(KEY_ID, Some(KEY_SECRET))
    }

    async fn get(&self, path: &str) -> Response {
        self.basic(reqwest::Method::GET, path).send().await.expect("answered")
    }

    async fn pass(&self, conversation: &str, body: Value) -> Response {
        self.basic(reqwest::Method::POST, &pass_path(conversation)).json(&body).send().await.expect("answered")
    }

    fn bot(&self) -> String {
        self.sim().create_conversation(ConversationSpec::new(ConversationState::Bot))
    }

    async fn conversation(&self, id: &str) -> Value {
        let response = self.get(&conversation_path(id)).await;
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("json")["conversation"].clone()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Response {
        let mut request = self.client.request(method, self.url(&format!("/__admin{path}")));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("answered")
    }
}

fn conversation_path(id: &str) -> String {
    format!("/v2/apps/{APP_ID}/conversations/{id}")
}

fn pass_path(id: &str) -> String {
    format!("/v2/apps/{APP_ID}/conversations/{id}/passControl")
}

async fn error_code(response: Response) -> String {
    let body: Value = response.json().await.expect("json error");
    body["errors"][0]["code"].as_str().expect("errors[0].code").to_owned()
}

/// Polls `done` every 10 ms for at most 2 s.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn basic_auth_and_app_jwts_are_accepted_and_anything_else_is_401() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let path = format!("/v2/apps/{APP_ID}");
    let jwt = sign_app_jwt(KEY_ID, KEY_SECRET, &json!({ "scope": "app" }));
    let integration_scope = sign_app_jwt(KEY_ID, KEY_SECRET, &json!({ "scope": "integration" }));

    // Act
    let basic = t.get(&path).await;
    let bearer = t.client.get(t.url(&path)).bearer_auth(&jwt).send().await.expect("answered");
    let wrong = t.client.get(t.url(&path)).basic_auth(KEY_ID, Some("nope")).send().await.expect("answered");
    let scoped = t.client.get(t.url(&path)).bearer_auth(&integration_scope).send().await.expect("answered");
    let none = t.client.get(t.url(&path)).send().await.expect("answered");

    // Assert
    assert_eq!((basic.status().as_u16(), bearer.status().as_u16()), (200, 200));
    assert_eq!(wrong.status(), 401);
    assert_eq!(error_code(wrong).await, "unauthorized");
    assert_eq!((scoped.status().as_u16(), none.status().as_u16()), (401, 401));
    assert_eq!(t.sim().jwts_seen(), 1);
    let auths: Vec<_> = t.sim().calls().iter().map(|c| c.auth).collect();
    assert_eq!(auths[..2], [crate::AuthKind::Basic, crate::AuthKind::Jwt]);
    assert!(t.sim().calls().iter().all(|c| c.endpoint == Endpoint::GetApp));
}

#[tokio::test]
async fn a_revoke_refuses_every_jwt_seen_and_accepts_a_newly_signed_one() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let path = format!("/v2/apps/{APP_ID}");
    let old = sign_app_jwt(KEY_ID, KEY_SECRET, &json!({ "scope": "app", "jti": "1" }));
    let new = sign_app_jwt(KEY_ID, KEY_SECRET, &json!({ "scope": "app", "jti": "2" }));
    assert_eq!(t.client.get(t.url(&path)).bearer_auth(&old).send().await.expect("answered").status(), 200);

    // Act
    let revoked = t.admin(reqwest::Method::POST, "/credentials/revoke", None).await;
    let with_old = t.client.get(t.url(&path)).bearer_auth(&old).send().await.expect("answered");
    let with_new = t.client.get(t.url(&path)).bearer_auth(&new).send().await.expect("answered");
    let seen: Value = t.admin(reqwest::Method::GET, "/credentials", None).await.json().await.expect("json");

    // Assert
    assert_eq!(revoked.status(), 204);
    assert_eq!((with_old.status().as_u16(), with_new.status().as_u16()), (401, 200));
    assert_eq!(seen, json!({ "jwtsSeen": 2 }));
}

#[tokio::test]
async fn a_conversation_shows_its_active_and_pending_integrations_and_omits_them_when_unset() {
    // Arrange
    let t = start(SimConfig { auto_create_conversations: false, ..SimConfig::default() }).await;
    let bot = t.bot();
    let pending = t.sim().create_conversation(ConversationSpec::new(ConversationState::Pending));
    let unheld = t.sim().create_conversation(ConversationSpec::new(ConversationState::Unheld));
    let queued = t.sim().create_conversation(ConversationSpec::new(ConversationState::AgentHas));

    // Act
    let bot = t.conversation(&bot).await;
    let pending = t.conversation(&pending).await;
    let unheld = t.conversation(&unheld).await;
    let queued = t.conversation(&queued).await;
    let unknown = t.get(&conversation_path("0123456789abcdef01234567")).await;
    let other_app = t.get("/v2/apps/ffffffffffffffffffffffff/conversations/x").await;

    // Assert
    assert_eq!(bot["activeSwitchboardIntegration"]["id"], BOT_INTEGRATION_ID);
    assert_eq!(bot["activeSwitchboardIntegration"]["integrationType"], "custom");
    assert!(bot.get("pendingSwitchboardIntegration").is_none());
    assert_eq!(pending["pendingSwitchboardIntegration"]["name"], "zd-agentWorkspace");
    assert!(unheld.get("activeSwitchboardIntegration").is_none());
    assert_eq!(queued["activeSwitchboardIntegration"]["id"], AGENT_INTEGRATION_ID);
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "conversation_not_found");
    assert_eq!(error_code(other_app).await, "app_not_found");
}

#[tokio::test]
async fn pass_control_resolves_the_target_by_id_name_type_or_next_and_records_the_metadata() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let targets = [AGENT_INTEGRATION_ID, "zd-agentWorkspace", "zd:agentWorkspace", "next"];

    for target in targets {
        let id = t.bot();

        // Act
        let response =
            t.pass(&id, json!({ "switchboardIntegration": target, "metadata": { "k": "v", "n": 1, "b": true } })).await;

        // Assert
        assert_eq!(response.status(), 200, "{target}");
        assert_eq!(response.json::<Value>().await.expect("json"), json!({}));
        assert_eq!(t.sim().active_integration(&id).as_deref(), Some(AGENT_INTEGRATION_ID), "{target}");
        let received = t.sim().received(&id);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].metadata["n"], 1);
        assert!(received[0].applied);
    }
}

#[tokio::test]
async fn pass_control_refuses_unknown_targets_nested_metadata_and_metadata_over_the_limit() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let id = t.bot();
    // `{"k":"…"}` is 8 bytes plus the value.
    let at_limit = "x".repeat(4096 - 8);
    let over = "x".repeat(4096 - 7);

    // Act
    let unknown = t.pass(&id, json!({ "switchboardIntegration": "ffffffffffffffffffffffff" })).await;
    let nested = t.pass(&id, json!({ "switchboardIntegration": "next", "metadata": { "a": { "b": 1 } } })).await;
    let missing = t.pass(&id, json!({ "metadata": {} })).await;
    let too_big = t.pass(&id, json!({ "switchboardIntegration": "next", "metadata": { "k": over } })).await;
    let gone = t.pass("0123456789abcdef01234567", json!({ "switchboardIntegration": "next" })).await;

    // Assert
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "switchboard_integration_not_found");
    assert_eq!((nested.status().as_u16(), missing.status().as_u16(), too_big.status().as_u16()), (400, 400, 400));
    assert_eq!(error_code(too_big).await, "bad_request");
    assert_eq!(error_code(gone).await, "conversation_not_found");
    assert!(t.sim().received(&id).is_empty());
    assert_eq!(t.sim().active_integration(&id).as_deref(), Some(BOT_INTEGRATION_ID));

    // Act: exactly at the limit
    let fits =
        t.pass(&id, json!({ "switchboardIntegration": AGENT_INTEGRATION_ID, "metadata": { "k": at_limit } })).await;

    // Assert
    assert_eq!(fits.status(), 200);
    assert_eq!(t.sim().count(Endpoint::PassControl), 6);
}

#[tokio::test]
async fn a_429_carries_retry_after_only_when_the_fault_says_so() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let id = t.bot();
    t.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::too_many_requests(2)));
    t.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::status(429)));

    // Act
    let with = t.pass(&id, json!({ "switchboardIntegration": "next" })).await;
    let without = t.pass(&id, json!({ "switchboardIntegration": "next" })).await;

    // Assert
    assert_eq!(with.status(), 429);
    assert_eq!(with.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
    assert_eq!(without.status(), 429);
    assert!(without.headers().get("retry-after").is_none());
    assert_eq!(error_code(without).await, "too_many_requests");
    assert!(t.sim().received(&id).is_empty());
}

#[tokio::test]
async fn accept_then_apply_later_answers_200_before_control_changes() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let id = t.bot();
    t.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::AcceptThenApplyLater(Duration::from_millis(150))));

    // Act
    let response = t.pass(&id, json!({ "switchboardIntegration": AGENT_INTEGRATION_ID })).await;
    let first_read = t.conversation(&id).await;

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(first_read["activeSwitchboardIntegration"]["id"], BOT_INTEGRATION_ID);
    assert!(!t.sim().received(&id)[0].applied);
    assert!(eventually(|| t.sim().active_integration(&id).as_deref() == Some(AGENT_INTEGRATION_ID)).await);
    assert!(t.sim().received(&id)[0].applied);
}

#[tokio::test]
async fn accept_then_fail_answers_200_and_never_passes_control() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let id = t.bot();
    t.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::AcceptThenFail));

    // Act
    let response = t.pass(&id, json!({ "switchboardIntegration": AGENT_INTEGRATION_ID })).await;
    let failures: Value = t.admin(reqwest::Method::GET, "/failures", None).await.json().await.expect("json");

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(t.sim().active_integration(&id).as_deref(), Some(BOT_INTEGRATION_ID));
    assert_eq!(failures[0]["payload"]["error"]["code"], "switchboard_invalid_target");
    assert_eq!(failures[0]["payload"]["conversation"]["id"], id.as_str());
}

#[tokio::test]
async fn apply_then_delay_applies_before_a_late_answer_and_hang_applies_nothing() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let applied = t.bot();
    let hung = t.bot();
    t.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::ApplyThenDelay(Duration::from_secs(5))));
    t.sim().push_fault(Fault::new(Endpoint::PassControl, FaultKind::Hang));
    let body = json!({ "switchboardIntegration": AGENT_INTEGRATION_ID });

    // Act
    let late = t
        .basic(reqwest::Method::POST, &pass_path(&applied))
        .json(&body)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    let never =
        t.basic(reqwest::Method::POST, &pass_path(&hung)).json(&body).timeout(Duration::from_millis(200)).send().await;

    // Assert
    assert!(late.is_err_and(|e| e.is_timeout()));
    assert!(never.is_err_and(|e| e.is_timeout()));
    assert_eq!(t.sim().active_integration(&applied).as_deref(), Some(AGENT_INTEGRATION_ID));
    assert_eq!(t.sim().active_integration(&hung).as_deref(), Some(BOT_INTEGRATION_ID));
}

#[tokio::test]
async fn with_an_apply_delay_the_first_read_still_shows_the_bot() {
    // Arrange
    let t = start(SimConfig { apply_delay: Duration::from_millis(150), ..SimConfig::default() }).await;
    let id = t.bot();

    // Act
    let response = t.pass(&id, json!({ "switchboardIntegration": AGENT_INTEGRATION_ID })).await;
    let first = t.conversation(&id).await;

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(first["activeSwitchboardIntegration"]["id"], BOT_INTEGRATION_ID);
    assert!(eventually(|| t.sim().active_integration(&id).as_deref() == Some(AGENT_INTEGRATION_ID)).await);
}

#[tokio::test]
async fn an_ended_conversation_shows_the_activity_and_accepts_or_refuses_pass_control() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let accepted = t.sim().create_conversation(ConversationSpec::new(ConversationState::Ended));
    let refused = t.sim().create_conversation(ConversationSpec::new(ConversationState::Ended));

    // Act
    let messages: Value =
        t.get(&format!("{}/messages", conversation_path(&accepted))).await.json().await.expect("json");
    let first = t.pass(&accepted, json!({ "switchboardIntegration": "next" })).await;
    let knob = t.admin(reqwest::Method::PUT, "/refuse-ended", Some(json!({ "code": "conversation_ended" }))).await;
    let second = t.pass(&refused, json!({ "switchboardIntegration": "next" })).await;

    // Assert
    let last = messages["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
    assert_eq!(last["activity"]["type"], "conversation:endedByUser");
    assert_eq!((first.status().as_u16(), knob.status().as_u16(), second.status().as_u16()), (200, 204, 400));
    assert_eq!(error_code(second).await, "conversation_ended");
}

#[tokio::test]
async fn switchboards_and_their_integrations_are_listed() {
    // Arrange
    let t = start(SimConfig::default()).await;

    // Act
    let boards: Value = t.get(&format!("/v2/apps/{APP_ID}/switchboards")).await.json().await.expect("json");
    let integrations: Value = t
        .get(&format!("/v2/apps/{APP_ID}/switchboards/{SWITCHBOARD_ID}/switchboardIntegrations"))
        .await
        .json()
        .await
        .expect("json");
    let other =
        t.get(&format!("/v2/apps/{APP_ID}/switchboards/ffffffffffffffffffffffff/switchboardIntegrations")).await;

    // Assert
    assert_eq!(boards["switchboards"][0]["id"], SWITCHBOARD_ID);
    assert_eq!(boards["switchboards"][0]["enabled"], true);
    assert_eq!(integrations["switchboardIntegrations"][1]["integrationType"], "zd:agentWorkspace");
    assert_eq!(integrations["switchboardIntegrations"][0]["nextSwitchboardIntegrationId"], AGENT_INTEGRATION_ID);
    assert_eq!(error_code(other).await, "switchboard_not_found");
}

#[tokio::test]
async fn agent_availabilities_filter_by_channel_status_page_by_cursor_and_need_support_credentials() {
    // Arrange
    let t = start(SimConfig::default()).await;
    let support = |query: &str| {
        t.client
            .get(t.url(&format!("/api/v2/agent_availabilities{query}")))
            .basic_auth(format!("{SUPPORT_EMAIL}/token"), Some(SUPPORT_TOKEN))
            .send()
    };

    // Act
    let first: Value = support("?filter%5Bchannel_status%5D=messaging%3Aonline&page%5Bsize%5D=3")
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    let cursor = first["meta"]["after_cursor"].as_str().expect("cursor").to_owned();
    let second: Value =
        support(&format!("?filter%5Bchannel_status%5D=messaging%3Aonline&page%5Bsize%5D=3&page%5Bafter%5D={cursor}"))
            .await
            .expect("answered")
            .json()
            .await
            .expect("json");
    let with_app_key = t.get("/api/v2/agent_availabilities").await;
    let group = t
        .client
        .get(t.url(&format!("/api/v2/groups/{SUPPORT_GROUP}")))
        .basic_auth(format!("{SUPPORT_EMAIL}/token"), Some(SUPPORT_TOKEN))
        .send()
        .await
        .expect("answered");

    // Assert: 4 online agents (the 5th is offline), 3 then 1
    assert_eq!(first["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(first["meta"]["has_more"], true);
    assert_eq!(first["data"][0]["attributes"]["group_ids"], json!([SUPPORT_GROUP]));
    assert_eq!(first["included"][1]["attributes"]["work_item_count"], 2);
    assert_eq!(first["included"][1]["attributes"]["max_capacity"], 2);
    assert_eq!(second["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["meta"]["has_more"], false);
    assert_eq!(with_app_key.status(), 401);
    assert_eq!(group.status(), 200);
}

#[tokio::test]
async fn the_admin_api_creates_inspects_faults_and_logs() {
    // Arrange
    let t = start(SimConfig::default()).await;

    // Act: create a bot conversation, queue a fault, pass control twice
    let created = t.admin(reqwest::Method::POST, "/conversations", Some(json!({ "state": "bot" }))).await;
    assert_eq!(created.status(), 201);
    let view: Value = created.json().await.expect("json");
    let id = view["id"].as_str().expect("id").to_owned();
    let fault = json!({ "endpoint": "passControl", "kind": { "type": "status", "status": 503 } });
    assert_eq!(t.admin(reqwest::Method::POST, "/faults", Some(fault)).await.status(), 204);
    let failed = t
        .pass(
            &id,
            json!({ "switchboardIntegration": AGENT_INTEGRATION_ID, "metadata": { "bot_handoff_reason": "billing" } }),
        )
        .await;
    let passed = t
        .pass(
            &id,
            json!({ "switchboardIntegration": AGENT_INTEGRATION_ID, "metadata": { "bot_handoff_reason": "billing" } }),
        )
        .await;
    let after: Value =
        t.admin(reqwest::Method::GET, &format!("/conversations/{id}"), None).await.json().await.expect("json");
    let calls: Value = t.admin(reqwest::Method::GET, "/calls", None).await.json().await.expect("json");
    let removed =
        t.admin(reqwest::Method::DELETE, &format!("/switchboard-integrations/{AGENT_INTEGRATION_ID}"), None).await;
    let unknown = t.admin(reqwest::Method::POST, &format!("/conversations/{id}/unknown"), None).await;
    let reset = t.admin(reqwest::Method::DELETE, "/calls", None).await;

    // Assert
    assert_eq!(view["activeSwitchboardIntegration"]["id"], BOT_INTEGRATION_ID);
    assert_eq!((failed.status().as_u16(), passed.status().as_u16()), (503, 200));
    assert_eq!(after["activeSwitchboardIntegration"]["id"], AGENT_INTEGRATION_ID);
    assert_eq!(after["received"][0]["metadata"]["bot_handoff_reason"], "billing");
    assert_eq!(after["received"].as_array().map(Vec::len), Some(1));
    let statuses: Vec<_> =
        calls.as_array().into_iter().flatten().map(|c| (c["endpoint"].clone(), c["status"].clone())).collect();
    assert_eq!(statuses, [(json!("passControl"), json!(503)), (json!("passControl"), json!(200))]);
    assert!(calls[0]["body"]["switchboardIntegration"].is_string());
    assert!(calls.to_string().find(KEY_SECRET).is_none(), "credentials are never logged");
    assert_eq!((removed.status().as_u16(), unknown.status().as_u16(), reset.status().as_u16()), (204, 204, 204));
    assert_eq!(t.get(&conversation_path(&id)).await.status(), 404);
    assert_eq!(t.sim().count(Endpoint::PassControl), 0);
}
