//! The real `handoff` binary as a child process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use genesys_sim::{Endpoint, SimConfig, BILLING_QUEUE};
use uuid::Uuid;

use crate::helpers::{base_env, call_counts, customer, handoff_binary, sample_payload, ONE_HANDOFF_CALLS, SECRET};

#[test]
fn serve_without_configuration_exits_2_listing_every_missing_setting() {
    let output = Command::new(handoff_binary())
        .arg("serve")
        .env_clear()
        .env("PORT", "not-a-port")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("binary runs");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in ["GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET", "TARGET_QUEUE_ID", "WEBHOOK_SECRET", "PORT"] {
        assert!(stderr.lines().any(|l| l.contains(name)), "{name} not reported:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn serve_against_a_genesys_stand_in_makes_exactly_the_documented_calls() {
    // Arrange: the simulator in this process, the binary as a child on a SQLite ledger.
    let sim = genesys_sim::spawn(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = base_env(&sim.base_url());
    env.insert("DATABASE_URL".into(), format!("sqlite://{}", dir.path().join("handoff.db").display()));
    let mut child = Command::new(handoff_binary())
        .arg("serve")
        .env_clear()
        .envs(&env)
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "handoff ready" {
                    let _ = port_tx.send(v["port"].as_u64());
                }
            }
            lines.push(line);
        }
        lines
    });
    let port = port_rx.recv_timeout(Duration::from_secs(60)).ok().flatten().expect("the server reported its port");
    let conversation = Uuid::new_v4();
    let payload = sample_payload(conversation, "complex_billing_dispute");

    // Act
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhooks/bot-handoff"))
        .bearer_auth(SECRET)
        .header("x-request-id", "bot-flow-4711")
        .json(&payload)
        .send()
        .await
        .expect("answer");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("json");
    let mut tagged = false;
    for _ in 0..200 {
        if sim.sim().count(Endpoint::PutTags) > 0 {
            tagged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exit = child.wait().expect("exits");
    let log = reader.join().expect("reader");

    // Assert
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "transferred");
    assert_eq!(body["queueId"], BILLING_QUEUE.to_string());
    assert!(tagged, "no tag PUT");
    let s = sim.sim();
    assert_eq!(call_counts(s), ONE_HANDOFF_CALLS, "no other call was made");
    let conv = s.conversation(conversation).expect("conversation");
    let customer_id = customer(&conv)["id"].as_str().unwrap_or_default().to_owned();
    let calls = s.calls();
    let patch = calls.iter().find(|c| c.endpoint == Endpoint::PatchAttributes).expect("patch");
    assert!(patch.path.contains(&customer_id));
    let replace = calls.iter().find(|c| c.endpoint == Endpoint::Replace).expect("replace");
    assert!(!replace.path.contains(&customer_id));
    assert!(exit.success(), "exit status {exit:?}");
    let outcome = log.iter().find(|l| l.contains("\"outcome\":\"transferred\"")).expect("one outcome line");
    assert!(outcome.contains(&conversation.to_string()));
    assert!(outcome.contains("\"request_id\":\"bot-flow-4711\""), "the outcome line lacks the request id: {outcome}");
    assert!(log.iter().all(|l| !l.contains("Jane Doe") && !l.contains("jane.doe@example.com")));
}

/// Runs `handoff check` against a simulator started with `config`.
async fn run_check(config: SimConfig) -> (Option<i32>, String, usize) {
    let sim = genesys_sim::spawn(config).await.expect("simulator");
    let mut env = base_env(&sim.base_url());
    env.insert("GENESYS_NOTIFICATIONS".to_owned(), "on".to_owned());
    let bin = handoff_binary();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bin).arg("check").env_clear().envs(&env).current_dir(std::env::temp_dir()).output()
    })
    .await
    .expect("join")
    .expect("binary runs");
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned(), sim.sim().token_calls())
}

#[tokio::test]
async fn check_passes_against_a_healthy_org() {
    let (code, stdout, _) = run_check(SimConfig::default()).await;

    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("PASS  token obtained"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("PASS  queue")).count(), 3, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("PASS  permission")).count(), 5, "{stdout}");
    assert!(stdout.contains("PASS  permission routing:utilization:view"), "{stdout}");
    assert!(stdout.contains("PASS  notification channel opens and carries the figures of 3 queue(s)"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[tokio::test]
async fn check_reports_an_org_that_refuses_notification_channels_and_the_way_out() {
    let (code, stdout, _) = run_check(SimConfig { notifications: false, ..SimConfig::default() }).await;

    assert_eq!(code, Some(1), "{stdout}");
    let fail = stdout.lines().position(|l| l.starts_with("FAIL  notification channel refused")).expect(&stdout);
    assert!(stdout.lines().nth(fail + 1).is_some_and(|l| l.contains("GENESYS_NOTIFICATIONS=off")), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("FAIL")).count(), 1, "{stdout}");
}

#[tokio::test]
async fn check_names_a_missing_permission_and_its_fix() {
    let config =
        SimConfig { missing_permissions: vec!["conversation:externalTag:edit".to_owned()], ..SimConfig::default() };

    let (code, stdout, _) = run_check(config).await;

    assert_eq!(code, Some(1), "{stdout}");
    let fail =
        stdout.lines().position(|l| l.starts_with("FAIL  permission conversation:externalTag:edit")).expect(&stdout);
    assert!(stdout.lines().nth(fail + 1).is_some_and(|l| l.contains("fix:")), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("FAIL")).count(), 1, "{stdout}");
}

#[tokio::test]
async fn check_names_the_missing_utilization_permission_and_its_fix() {
    let config = SimConfig { missing_permissions: vec!["routing:utilization:view".to_owned()], ..SimConfig::default() };

    let (code, stdout, _) = run_check(config).await;

    assert_eq!(code, Some(1), "{stdout}");
    let fail = stdout.lines().position(|l| l.starts_with("FAIL  permission routing:utilization:view")).expect(&stdout);
    assert!(stdout.lines().nth(fail + 1).is_some_and(|l| l.contains("fix:")), "{stdout}");
}

#[tokio::test]
async fn check_reports_bad_client_credentials_without_retrying() {
    let config = SimConfig { client_secret: "another-secret".to_owned(), ..SimConfig::default() };

    let (code, stdout, token_calls) = run_check(config).await;

    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(token_calls, 1, "bad credentials were retried");
    assert!(stdout.lines().any(|l| l.starts_with("FAIL  token")), "{stdout}");
    assert!(stdout.contains("GENESYS_CLIENT_SECRET"), "{stdout}");
}

// ---- handoff check --transfer-probe -------------------------------------------------------------

/// Runs `handoff check` with `args` against a simulator started with `config` holding a conversation
/// of `kind`; returns the exit code, stdout, the conversation id, the replace calls and the sim.
async fn run_probe(
    config: SimConfig,
    kind: genesys_sim::ConversationKind,
    args: impl FnOnce(Uuid) -> Vec<String>,
) -> (Option<i32>, String, Uuid, usize) {
    let sim = genesys_sim::spawn(config).await.expect("simulator");
    let ids = sim.sim().create_conversation(genesys_sim::ConversationSpec::new(kind));
    let env = base_env(&sim.base_url());
    let bin = handoff_binary();
    let args = args(ids.conversation_id);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bin).arg("check").args(args).env_clear().envs(&env).current_dir(std::env::temp_dir()).output()
    })
    .await
    .expect("join")
    .expect("binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout, ids.conversation_id, sim.sim().count(Endpoint::Replace))
}

fn probe(id: Uuid) -> Vec<String> {
    vec!["--transfer-probe".to_owned(), id.to_string()]
}

#[tokio::test]
async fn the_transfer_probe_passes_with_exit_0_when_the_flows_participant_can_be_replaced() {
    // Act
    let (code, stdout, _, replaces) = run_probe(SimConfig::default(), genesys_sim::ConversationKind::Bot, probe).await;

    // Assert
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(replaces, 1, "{stdout}");
    assert!(stdout.contains("customer: holds it") && stdout.contains("flow or bot: holds it"), "{stdout}");
    assert!(stdout.contains("Genesys answered 202"), "{stdout}");
    let pass = stdout.lines().find(|l| l.starts_with("PASS")).expect(&stdout);
    assert!(pass.contains(&genesys_sim::SUPPORT_QUEUE.to_string()) && pass.contains("correlation id"), "{stdout}");
    assert!(stdout.contains("transfer mode"), "{stdout}");
}

#[tokio::test]
async fn the_transfer_probe_fails_with_exit_1_naming_status_code_correlation_id_and_advise_mode_when_refused() {
    for code_played in [genesys_sim::FLOW_REPLACE_REFUSED, "bad.request"] {
        // Arrange
        let config = SimConfig { refuse_flow_replace: Some(code_played.to_owned()), ..SimConfig::default() };

        // Act
        let (code, stdout, _, replaces) = run_probe(config, genesys_sim::ConversationKind::Bot, probe).await;

        // Assert
        assert_eq!(code, Some(1), "{stdout}");
        assert_eq!(replaces, 1, "{stdout}");
        let fail = stdout.lines().find(|l| l.starts_with("FAIL")).expect(&stdout);
        assert!(fail.contains(&format!("400 {code_played}")), "{stdout}");
        assert!(fail.contains("correlation id "), "{stdout}");
        assert!(stdout.contains("meaning:") && stdout.contains("advise mode"), "{stdout}");
        assert!(!stdout.contains("PASS"), "{stdout}");
    }
}

#[tokio::test]
async fn the_transfer_probe_refuses_without_an_id_a_bad_id_and_a_conversation_an_agent_holds() {
    // Act
    let (no_id, no_id_out, _, r1) =
        run_probe(SimConfig::default(), genesys_sim::ConversationKind::Bot, |_| vec!["--transfer-probe".to_owned()])
            .await;
    let (bad, bad_out, _, r2) = run_probe(SimConfig::default(), genesys_sim::ConversationKind::Bot, |_| {
        vec!["--transfer-probe".to_owned(), "not-a-uuid".to_owned()]
    })
    .await;
    let (agent, agent_out, _, r3) =
        run_probe(SimConfig::default(), genesys_sim::ConversationKind::AgentHeld, probe).await;

    // Assert: exit 2, a clear reason, and never a replace
    assert_eq!(no_id, Some(2), "{no_id_out}");
    assert!(no_id_out.contains("REFUSED") && no_id_out.contains("needs the id of a test conversation"), "{no_id_out}");
    assert_eq!(bad, Some(2), "{bad_out}");
    assert!(bad_out.contains("not a conversation id"), "{bad_out}");
    assert_eq!(agent, Some(2), "{agent_out}");
    assert!(agent_out.contains("an agent already holds this conversation"), "{agent_out}");
    assert!(agent_out.contains("agent: holds it"), "it shows who holds it: {agent_out}");
    assert_eq!((r1, r2, r3), (0, 0, 0));
}
