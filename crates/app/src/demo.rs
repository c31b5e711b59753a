//! `handoff demo`: the zero-setup run. Starts the Genesys simulator and the real server on
//! loopback, sends the sample handoffs of CONTRACT §2, and prints what the bot got back and which
//! Genesys calls each one caused. Needs no credentials and no network.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use genesys_sim::{Endpoint, Fault, FaultKind, SimConfig, BILLING_QUEUE, EMPTY_QUEUE, SUPPORT_QUEUE};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::{LogFormat, Settings};
use crate::startup::App;

const DEMO_SECRET: &str = "demo-secret";

/// Runs the demo; with `keep_running`, leaves both servers up until ctrl-c.
///
/// # Errors
/// When the simulator or the server cannot start, or a scenario does not behave as it should.
pub async fn run(keep_running: bool, port: u16, sim_port: u16) -> anyhow::Result<()> {
    let sim_addr = std::net::SocketAddr::from(([127, 0, 0, 1], sim_port));
    let sim = genesys_sim::spawn_on(sim_addr, SimConfig::default()).await.context("failed to start the simulator")?;
    let base = sim.base_url();
    let settings = demo_settings(&base, port)?;
    let app = App::build(settings).await.context("failed to start the handoff server")?;
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    println!("handoff demo: Genesys simulator at {base}, handoff server at {url}\n");
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    let sim_state = sim.sim().clone();

    // 1. Happy path: the tutorial's payload.
    let happy_id = Uuid::new_v4();
    let happy = sample_payload(happy_id, "complex_billing_dispute");
    let seen = sim_state.calls().len();
    let (status, body) = post(&client, &url, &happy).await?;
    print_scenario("1. happy path (routed by reason to Billing)", &happy, status, &body);
    print_calls(&sim_state, seen, Some(&happy_id.to_string()));
    if let Some(attrs) = customer_attributes(&sim_state, happy_id) {
        println!("   participant data on the customer: {attrs}");
    }
    expect(&mut failures, "happy path", status, 200);

    // 1b. Nobody idle, but free message slots: 3 agents in one chat each, message capacity 4.
    sim_state.set_agent_loads(SUPPORT_QUEUE, vec![1, 1, 1]);
    sim_state.set_message_capacity(Some(4));
    let slots_id = Uuid::new_v4();
    let slots = sample_payload(slots_id, "general_question");
    let seen = sim_state.calls().len();
    let (status, body) = post(&client, &url, &slots).await?;
    print_scenario(
        "1b. nobody idle, free message slots (Support: 3 agents in one chat each, message capacity 4 → 9 free slots)",
        &slots,
        status,
        &body,
    );
    print_calls(&sim_state, seen, Some(&slots_id.to_string()));
    expect(&mut failures, "free slots", status, 200);
    if body.get("queueId").and_then(Value::as_str) != Some(SUPPORT_QUEUE.to_string().as_str()) {
        failures.push(format!("free slots: expected the Support queue, got {body}"));
    }

    // 2. No agents free: the reason routes to a queue with nobody idle.
    let busy_id = Uuid::new_v4();
    let busy = sample_payload(busy_id, "after_hours");
    let seen = sim_state.calls().len();
    let (status, body) = post(&client, &url, &busy).await?;
    print_scenario("2. no agents free (deferred; the service transfers it later)", &busy, status, &body);
    print_calls(&sim_state, seen, Some(&busy_id.to_string()));
    expect(&mut failures, "deferral", status, 202);

    // 3. A bad payload: every problem listed, nothing sent to Genesys.
    let bad = json!({
        "conversationId": "not-a-uuid",
        "guestInfo": { "id": "", "email": "jane.doe(at)example.com" },
        "handoffReason": "complex_billing_dispute",
        "customContext": { "guest_name": "x", "nested": { "a": 1 } }
    });
    let seen = sim_state.calls().len();
    let (status, body) = post(&client, &url, &bad).await?;
    print_scenario("3. bad payload", &bad, status, &body);
    print_calls(&sim_state, seen, None);
    expect(&mut failures, "bad payload", status, 400);

    // 4. The bot platform delivers the first handoff again.
    let seen = sim_state.calls().len();
    let (status, body) = post(&client, &url, &happy).await?;
    print_scenario("4. duplicate delivery of #1 (replayed, no Genesys write)", &happy, status, &body);
    print_calls(&sim_state, seen, Some(&happy_id.to_string()));
    expect(&mut failures, "duplicate", status, 200);
    if body.get("replayed") != Some(&Value::Bool(true)) {
        failures.push("duplicate: expected replayed: true".to_owned());
    }

    // 5. Genesys answers the transfer with 429 once.
    sim_state.push_fault(Fault::new(Endpoint::Replace, FaultKind::too_many_requests(1)));
    let limited_id = Uuid::new_v4();
    let limited = sample_payload(limited_id, "password_reset");
    let seen = sim_state.calls().len();
    let (status, body) = post(&client, &url, &limited).await?;
    print_scenario("5. Genesys rate-limits the transfer (429, Retry-After: 1)", &limited, status, &body);
    print_calls(&sim_state, seen, Some(&limited_id.to_string()));
    expect(&mut failures, "429", status, 200);

    // 6. An agent of the after-hours queue becomes free: the deferral worker transfers #2 itself.
    let seen = sim_state.calls().len();
    sim_state.set_queue_capacity(EMPTY_QUEUE, 1, 0, 20);
    let mut moved = false;
    for _ in 0..100 {
        if sim_state.count(Endpoint::Replace) > 0 && in_queue(&sim_state, busy_id) {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("── 6. an agent frees up in the after-hours queue: the service transfers #2 by itself");
    print_calls(&sim_state, seen, Some(&busy_id.to_string()));
    if !moved {
        failures.push("deferral: #2 was not transferred within 10 s of capacity appearing".to_owned());
    }

    // The analytics outbox writes the external tags in the background.
    let mut tag = None;
    for _ in 0..40 {
        tag = sim_state.external_tag(happy_id);
        if tag.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match &tag {
        Some(t) => {
            println!("analytics: conversation {happy_id} carries the external tag {t:?} (written by the outbox)\n")
        }
        None => failures.push("analytics: the external tag of #1 was not written within 4 s".to_owned()),
    }

    // 7. Advise mode, the integration kit's default: the service decides and writes the context,
    // the flow runs its own Transfer to ACD, and the service confirms the queue was reached.
    let advised_id = Uuid::new_v4();
    let advised = sample_payload(advised_id, "password_reset");
    let seen = sim_state.calls().len();
    let req = client.post(format!("{url}/webhooks/bot-handoff?mode=advise")).bearer_auth(DEMO_SECRET).json(&advised);
    let resp = req.send().await.context("the handoff server did not answer")?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    print_scenario(
        "7. advise mode (the kit's default): the service decides, the flow transfers",
        &advised,
        status,
        &body,
    );
    print_calls(&sim_state, seen, Some(&advised_id.to_string()));
    expect(&mut failures, "advice", status, 200);
    let queue = body["queueId"].as_str().and_then(|q| Uuid::try_parse(q).ok());
    match queue.map(|q| sim_state.flow_transfer(advised_id, q)) {
        Some(Ok(())) => println!("── the flow runs Transfer to ACD to {}", body["queueId"]),
        other => failures.push(format!("advice: the flow could not transfer ({other:?})")),
    }
    let seen = sim_state.calls().len();
    let mut record = Value::Null;
    for _ in 0..100 {
        let list: Value = client
            .get(format!("{url}/handoffs?conversationId={advised_id}"))
            .bearer_auth(DEMO_SECRET)
            .send()
            .await
            .context("the handoff server did not answer")?
            .json()
            .await
            .unwrap_or(Value::Null);
        record = list["handoffs"][0].clone();
        if record["outcome"] != "in_progress" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "── the service confirms in the background: stage {}, outcome {}, {}",
        record["stage"],
        record["outcome"],
        compact(&record["answer"]["confirmation"])
    );
    print_calls(&sim_state, seen, Some(&advised_id.to_string()));
    if record["outcome"] != "confirmed" {
        failures.push(format!("advice: expected outcome confirmed, got {}", record["outcome"]));
    }

    if keep_running {
        print_try_it(&url, &base);
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
        ("GENESYS_CLIENT_ID", "sim-client".to_owned()),
        ("GENESYS_CLIENT_SECRET", "sim-secret".to_owned()),
        ("GENESYS_BASE_URL", sim_base.to_owned()),
        ("GENESYS_LOGIN_BASE_URL", sim_base.to_owned()),
        ("TARGET_QUEUE_ID", SUPPORT_QUEUE.to_string()),
        ("HANDOFF_ROUTES", format!("complex_billing_dispute={BILLING_QUEUE},after_hours={EMPTY_QUEUE}")),
        ("WEBHOOK_SECRET", DEMO_SECRET.to_owned()),
        ("DATABASE_URL", "memory:".to_owned()),
        ("BIND_ADDR", "127.0.0.1".to_owned()),
        ("PORT", port.to_string()),
        ("HANDOFF_RECHECK_SECS", "2".to_owned()),
        // The demo changes queue figures between handoffs and shows each one's calls; polled
        // figures keep that step by step (pushed ones arrive a moment later).
        ("GENESYS_NOTIFICATIONS", "off".to_owned()),
        ("HANDOFF_DEFER_FOR_SECS", "60".to_owned()),
    ]);
    let mut settings = Settings::from_env(|k| vars.get(k).cloned()).map_err(|e| anyhow::anyhow!("{e}"))?;
    settings.log_format = LogFormat::Pretty;
    // The first confirmation read comes 1 s after an advice instead of 5 s, so the demo is quick.
    settings.service.confirm_first = Duration::from_secs(1);
    Ok(settings)
}

fn sample_payload(conversation_id: Uuid, reason: &str) -> Value {
    json!({
        "conversationId": conversation_id,
        "guestInfo": { "id": "guest-8842-xyz", "name": "Jane Doe", "email": "jane.doe@example.com" },
        "handoffReason": reason,
        "customContext": {
            "attempted_resolution": "refund_policy_explained",
            "sentiment_score": "0.32",
            "preferred_language": "en-US"
        }
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let req = client.post(format!("{url}/webhooks/bot-handoff")).bearer_auth(DEMO_SECRET).json(body);
    let resp = req.send().await.context("the handoff server did not answer")?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

fn print_scenario(title: &str, request: &Value, status: u16, body: &Value) {
    println!("── {title}");
    println!("   bot sent:   {}", compact(request));
    println!("   bot got:    {status} {}", compact(body));
}

/// Prints the Genesys calls made since `from`, leaving out calls about other conversations (the
/// outbox writes tags in the background, so they may land in any scenario).
fn print_calls(sim: &genesys_sim::Sim, from: usize, conversation: Option<&str>) {
    let calls = sim.calls();
    let new: Vec<_> = calls
        .get(from..)
        .unwrap_or_default()
        .iter()
        .filter(|c| !c.path.contains("/conversations/") || conversation.is_some_and(|id| c.path.contains(id)))
        .collect();
    if new.is_empty() {
        println!("   Genesys received: nothing\n");
        return;
    }
    println!("   Genesys received:");
    for call in new {
        let body = call.body.as_ref().map(|b| format!("  {}", compact(b))).unwrap_or_default();
        println!("     {} {:<6} {} → {}{}", call.seq, call.method, call.path, call.status, body);
    }
    println!();
}

fn customer_attributes(sim: &genesys_sim::Sim, conversation: Uuid) -> Option<String> {
    let conv = sim.conversation(conversation)?;
    let customer = conv["participants"].as_array()?.iter().find(|p| p["purpose"] == "customer")?;
    Some(compact(&customer["attributes"]))
}

/// Whether the conversation now sits in a queue (an active ACD participant).
fn in_queue(sim: &genesys_sim::Sim, conversation: Uuid) -> bool {
    sim.conversation(conversation).is_some_and(|c| {
        c["participants"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["purpose"] == "acd" && p["state"] == "connected"))
    })
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

fn print_try_it(url: &str, sim: &str) {
    let id = Uuid::new_v4();
    println!("Both servers keep running; press ctrl-c to stop. Try:");
    println!(
        "  curl -s -X POST {url}/webhooks/bot-handoff -H 'Authorization: Bearer {DEMO_SECRET}' \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"conversationId\":\"{id}\",\"guestInfo\":{{\"id\":\"g-1\"}},\"handoffReason\":\"complex_billing_dispute\",\"customContext\":{{}}}}'"
    );
    println!("  curl -s '{url}/handoffs?conversationId={id}' -H 'Authorization: Bearer {DEMO_SECRET}'");
    println!("  curl -s '{url}/handoffs/stats' -H 'Authorization: Bearer {DEMO_SECRET}'");
    println!("  curl -s {url}/metrics");
    println!("  curl -s {sim}/__admin/calls");
}
