//! `handoff demo --platform sunshine`: the demo's scenarios against sunshine-sim, printing what the
//! bot got back and which Sunshine (and Zendesk Support) calls each one caused.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};
use sunshine_sim::{
    AgentSpec, ConversationSpec, ConversationState, Endpoint, Fault, FaultKind, Sim, SimConfig, APP_ID, BILLING_GROUP,
    EMPTY_GROUP, KEY_ID, KEY_SECRET, SUPPORT_EMAIL, SUPPORT_GROUP, SUPPORT_TOKEN,
};

use crate::config::{LogFormat, Settings};
use crate::startup::App;

const DEMO_SECRET: &str = "demo-secret";

/// Runs the Sunshine demo; with `keep_running`, leaves both servers up until ctrl-c.
///
/// # Errors
/// When the simulator or the server cannot start, or a scenario does not behave as it should.
pub async fn run(keep_running: bool, port: u16, sim_port: u16) -> anyhow::Result<()> {
    let sim_addr = std::net::SocketAddr::from(([127, 0, 0, 1], sim_port));
    let sim = sunshine_sim::spawn_on(sim_addr, SimConfig::default()).await.context("failed to start the simulator")?;
    let base = sim.base_url();
    let settings = demo_settings(&base, port)?;
    let app = App::build(settings).await.context("failed to start the handoff server")?;
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    println!("handoff demo (Sunshine Conversations): simulator at {base}, handoff server at {url}\n");
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    let s = sim.sim().clone();

    // 1. Happy path: one passControl carries the context, the group and the reason.
    let happy_id = s.create_conversation(ConversationSpec::new(ConversationState::Bot));
    let happy = sample_payload(&happy_id, "complex_billing_dispute");
    let seen = s.calls().len();
    let (status, body) = post(&client, &url, &happy).await?;
    print_scenario("1. happy path (routed by reason to the Billing group, one passControl)", &happy, status, &body);
    print_calls(&s, seen, Some(&happy_id));
    if let Some(received) = s.received(&happy_id).first() {
        println!("   metadata the Agent Workspace received: {}\n", compact(&Value::Object(received.metadata.clone())));
    }
    expect(&mut failures, "happy path", status, 200);

    // 2. Nobody online in the group: deferred.
    let busy_id = s.create_conversation(ConversationSpec::new(ConversationState::Bot));
    let busy = sample_payload(&busy_id, "after_hours");
    let seen = s.calls().len();
    let (status, body) = post(&client, &url, &busy).await?;
    print_scenario("2. no agent online in the night-shift group (deferred)", &busy, status, &body);
    print_calls(&s, seen, Some(&busy_id));
    expect(&mut failures, "deferral", status, 202);

    // 3. A bad payload: Sunshine ids are 24 hex characters; nothing is sent upstream.
    let bad = json!({
        "conversationId": "8a3f4a1e-0c4d-4c3b-9d4e-0a1b2c3d4e5f",
        "guestInfo": { "id": "", "email": "jane.doe(at)example.com" },
        "handoffReason": "complex_billing_dispute",
        "customContext": { "nested": { "a": 1 } }
    });
    let seen = s.calls().len();
    let (status, body) = post(&client, &url, &bad).await?;
    print_scenario("3. bad payload (a UUID is not a Sunshine conversation id)", &bad, status, &body);
    print_calls(&s, seen, None);
    expect(&mut failures, "bad payload", status, 400);

    // 4. The same delivery again: replayed, no second passControl.
    let seen = s.calls().len();
    let (status, body) = post(&client, &url, &happy).await?;
    print_scenario("4. duplicate delivery of #1 (replayed, no passControl)", &happy, status, &body);
    print_calls(&s, seen, Some(&happy_id));
    expect(&mut failures, "duplicate", status, 200);
    if body.get("replayed") != Some(&Value::Bool(true)) {
        failures.push("duplicate: expected replayed: true".to_owned());
    }

    // 5. Sunshine answers passControl with 429 once (with Retry-After: 1).
    s.push_fault(Fault::new(Endpoint::PassControl, FaultKind::too_many_requests(1)));
    let limited_id = s.create_conversation(ConversationSpec::new(ConversationState::Bot));
    let limited = sample_payload(&limited_id, "password_reset");
    let seen = s.calls().len();
    let (status, body) = post(&client, &url, &limited).await?;
    print_scenario("5. Sunshine rate-limits passControl (429, Retry-After: 1)", &limited, status, &body);
    print_calls(&s, seen, Some(&limited_id));
    expect(&mut failures, "429", status, 200);

    // 6. An agent comes online in the night-shift group: the worker transfers #2 itself.
    let seen = s.calls().len();
    s.set_group_agents(EMPTY_GROUP, vec![AgentSpec::online(2001, EMPTY_GROUP, 0, Some(2))]);
    let moved = wait(|| s.count(Endpoint::PassControl) > 0 && !s.received(&busy_id).is_empty()).await;
    println!("── 6. an agent comes online in the night-shift group: the service transfers #2 by itself");
    print_calls(&s, seen, Some(&busy_id));
    if !moved {
        failures.push("deferral: #2 was not transferred within 10 s of an agent coming online".to_owned());
    }

    // 7. passControl answered 200 but applied later: 503 + Retry-After, then the read-back finds it.
    s.push_fault(Fault::new(Endpoint::PassControl, FaultKind::AcceptThenApplyLater(Duration::from_secs(1))));
    let late_id = s.create_conversation(ConversationSpec::new(ConversationState::Bot));
    let late = sample_payload(&late_id, "password_reset");
    let seen = s.calls().len();
    let (status, body) = post(&client, &url, &late).await?;
    print_scenario(
        "7. passControl accepted, applied a second later (503 + Retry-After; read back later)",
        &late,
        status,
        &body,
    );
    let passes = s.received(&late_id).len();
    let confirmed =
        wait(|| s.active_integration(&late_id).as_deref() == Some(sunshine_sim::AGENT_INTEGRATION_ID)).await;
    println!("── the service reads back and finds the agent side active: no second passControl");
    print_calls(&s, seen, Some(&late_id));
    if !confirmed || passes != 1 {
        failures.push("accepted: expected exactly one passControl that applies later".to_owned());
    }
    // Once the lease (SUNSHINE_CONFIRM_WITHIN_SECS) lapses, the worker reads back: transferred.
    let mut stage = Value::Null;
    for _ in 0..100 {
        let list: Value = client
            .get(format!("{url}/handoffs?conversationId={late_id}"))
            .bearer_auth(DEMO_SECRET)
            .send()
            .await
            .context("the handoff server did not answer")?
            .json()
            .await
            .unwrap_or(Value::Null);
        stage = list["handoffs"][0]["stage"].clone();
        if stage == "transferred" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("── the worker's read-back: stage {stage}, passControl calls for it: {}\n", s.received(&late_id).len());
    if stage != "transferred" || s.received(&late_id).len() != 1 {
        failures.push(format!("accepted: expected transferred after one passControl, got stage {stage}"));
    }

    println!("analytics: no call; the reason travelled in the passControl metadata (bot_handoff_reason)\n");
    if keep_running {
        println!(
            "Both servers keep running; press ctrl-c to stop. Conversation ids: POST {base}/__admin/conversations"
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    let _ = server.await;
    sim.shutdown().await;
    if failures.is_empty() {
        println!("demo finished: every scenario behaved as expected");
        Ok(())
    } else {
        anyhow::bail!("demo scenarios misbehaved:\n{}", failures.join("\n"))
    }
}

fn demo_settings(sim_base: &str, port: u16) -> anyhow::Result<Settings> {
    let vars: HashMap<&str, String> = HashMap::from([
        ("HANDOFF_PLATFORM", "sunshine".to_owned()),
        ("SUNSHINE_APP_ID", APP_ID.to_owned()),
        ("SUNSHINE_KEY_ID", KEY_ID.to_owned()),
        ("SUNSHINE_KEY_SECRET", KEY_SECRET.to_owned()),
        ("SUNSHINE_BASE_URL", sim_base.to_owned()),
        ("SUNSHINE_AUTH", "jwt".to_owned()),
        ("SUNSHINE_AGENT_INTEGRATION", "zd-agentWorkspace".to_owned()),
        ("SUNSHINE_CONFIRM_WITHIN_SECS", "2".to_owned()),
        ("ZENDESK_SUPPORT_EMAIL", SUPPORT_EMAIL.to_owned()),
        ("ZENDESK_SUPPORT_API_TOKEN", SUPPORT_TOKEN.to_owned()),
        ("ZENDESK_SUPPORT_BASE_URL", sim_base.to_owned()),
        ("TARGET_QUEUE_ID", SUPPORT_GROUP.to_string()),
        ("HANDOFF_ROUTES", format!("complex_billing_dispute={BILLING_GROUP},after_hours={EMPTY_GROUP}")),
        ("WEBHOOK_SECRET", DEMO_SECRET.to_owned()),
        ("DATABASE_URL", "memory:".to_owned()),
        ("BIND_ADDR", "127.0.0.1".to_owned()),
        ("PORT", port.to_string()),
        ("HANDOFF_RECHECK_SECS", "2".to_owned()),
        ("HANDOFF_DEFER_FOR_SECS", "60".to_owned()),
    ]);
    let mut settings = Settings::from_env(|k| vars.get(k).cloned()).map_err(|e| anyhow::anyhow!("{e}"))?;
    settings.log_format = LogFormat::Pretty;
    Ok(settings)
}

fn sample_payload(conversation_id: &str, reason: &str) -> Value {
    json!({
        "conversationId": conversation_id,
        "guestInfo": { "id": "guest-8842-xyz", "name": "Jane Doe", "email": "jane.doe@example.com" },
        "handoffReason": reason,
        "customContext": { "attempted_resolution": "refund_policy_explained", "preferred_language": "en-US" }
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let req = client.post(format!("{url}/webhooks/bot-handoff")).bearer_auth(DEMO_SECRET).json(body);
    let resp = req.send().await.context("the handoff server did not answer")?;
    let status = resp.status().as_u16();
    Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
}

/// Polls `done` every 100 ms for at most 10 s.
async fn wait(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

fn print_scenario(title: &str, request: &Value, status: u16, body: &Value) {
    println!("── {title}");
    println!("   bot sent:   {}", compact(request));
    println!("   bot got:    {status} {}", compact(body));
}

/// Prints the calls since `from`, leaving out calls about other conversations.
fn print_calls(sim: &Sim, from: usize, conversation: Option<&str>) {
    let calls = sim.calls();
    let new: Vec<_> = calls
        .get(from..)
        .unwrap_or_default()
        .iter()
        .filter(|c| !c.path.contains("/conversations/") || conversation.is_some_and(|id| c.path.contains(id)))
        .collect();
    if new.is_empty() {
        println!("   Sunshine received: nothing\n");
        return;
    }
    println!("   Sunshine / Zendesk received:");
    for call in new {
        let body = call.body.as_ref().map(|b| format!("  {}", compact(b))).unwrap_or_default();
        println!("     {} {:<4} {} → {}{}", call.seq, call.method, call.path, call.status, body);
    }
    println!();
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s
    }
}

fn expect(failures: &mut Vec<String>, what: &str, got: u16, want: u16) {
    if got != want {
        failures.push(format!("{what}: expected {want}, got {got}"));
    }
}
