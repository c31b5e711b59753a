//! Test harness: an `App` (or the real binary) wired to a fresh Genesys simulator on 127.0.0.1.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use genesys_sim::{Endpoint, SimConfig, SimHandle, BILLING_QUEUE, EMPTY_QUEUE, OVERFLOW_QUEUE, SUPPORT_QUEUE};
use handoff_app::{App, Settings};
use serde_json::{json, Value};
use uuid::Uuid;

pub(crate) const SECRET: &str = "test-webhook-secret";

/// A running app and its simulator.
pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) sim: SimHandle,
    pub(crate) client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// The environment every test app starts from (the tutorial's routing).
pub(crate) fn base_env(sim_url: &str) -> HashMap<String, String> {
    [
        ("GENESYS_CLIENT_ID", "sim-client".to_owned()),
        ("GENESYS_CLIENT_SECRET", "sim-secret".to_owned()),
        ("GENESYS_BASE_URL", sim_url.to_owned()),
        ("GENESYS_LOGIN_BASE_URL", sim_url.to_owned()),
        ("TARGET_QUEUE_ID", SUPPORT_QUEUE.to_string()),
        ("HANDOFF_ROUTES", format!("complex_billing_dispute={BILLING_QUEUE},after_hours={EMPTY_QUEUE}")),
        ("WEBHOOK_SECRET", SECRET.to_owned()),
        ("DATABASE_URL", "memory:".to_owned()),
        ("BIND_ADDR", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
        ("HANDOFF_RECHECK_SECS", "1".to_owned()),
        ("GENESYS_TIMEOUT_MS", "2000".to_owned()),
        ("GENESYS_BUDGET_MS", "4000".to_owned()),
        // The channel's own calls (create, subscribe) happen in the background and would make
        // exact call counts racy; tests/it/budget.rs runs with it on.
        ("GENESYS_NOTIFICATIONS", "off".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Spawns the simulator and an app; `tweak` edits the environment first.
pub(crate) async fn spawn_app_with(sim_config: SimConfig, tweak: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    init_test_log();
    let sim = genesys_sim::spawn(sim_config).await.expect("simulator starts");
    let mut env = base_env(&sim.base_url());
    tweak(&mut env);
    let settings = Settings::from_env(|k| env.get(k).cloned()).expect("test settings are valid");
    let app = App::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async {
                let _ = stopped.await;
            })
            .await;
    });
    TestApp { address, sim, client: reqwest::Client::new(), stop: Some(stop), server: Some(server) }
}

/// Spawns the simulator and an app with the default test environment.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(SimConfig::default(), |_| {}).await
}

impl TestApp {
    /// POSTs a payload to the webhook with the test secret.
    pub(crate) async fn post_handoff(&self, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let resp = self
            .client
            .post(format!("{}/webhooks/bot-handoff", self.address))
            .bearer_auth(SECRET)
            .json(body)
            .send()
            .await
            .expect("server answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    /// GETs a read-side path with the test secret.
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let resp =
            self.client.get(format!("{}{path}", self.address)).bearer_auth(SECRET).send().await.expect("answers");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// Calls to `endpoint` so far.
    pub(crate) fn count(&self, endpoint: Endpoint) -> usize {
        self.sim.sim().count(endpoint)
    }

    /// Waits (bounded) until `cond` holds; false if it never did.
    pub(crate) async fn eventually(&self, timeout: Duration, mut cond: impl FnMut(&TestApp) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        cond(self)
    }

    /// Stops the server and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
    }
}

/// The tutorial's sample payload for `conversation`.
pub(crate) fn sample_payload(conversation: Uuid, reason: &str) -> Value {
    json!({
        "conversationId": conversation,
        "guestInfo": { "id": "guest-8842-xyz", "name": "Jane Doe", "email": "jane.doe@example.com" },
        "handoffReason": reason,
        "customContext": {
            "attempted_resolution": "refund_policy_explained",
            "sentiment_score": "0.32",
            "preferred_language": "en-US"
        }
    })
}

/// The customer participant of a simulator conversation.
pub(crate) fn customer(conversation: &Value) -> Value {
    conversation["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["purpose"] == "customer").cloned())
        .unwrap_or(Value::Null)
}

/// Whether an active ACD participant holds the conversation for `queue`.
pub(crate) fn in_queue(conversation: &Value, queue: Uuid) -> bool {
    conversation["participants"].as_array().is_some_and(|ps| {
        ps.iter().any(|p| p["purpose"] == "acd" && p["state"] == "connected" && p["queue"]["id"] == queue.to_string())
    })
}

/// The unused queue of the simulator (the fallback in tests that need one).
pub(crate) const FALLBACK: Uuid = OVERFLOW_QUEUE;

/// Tracing output only when `TEST_LOG` is set.
fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    }
}

/// The `handoff` binary next to this test binary (`target/<profile>/handoff`), rebuilt once per
/// test run so that it matches the sources (cargo is a no-op when it is fresh).
pub(crate) fn handoff_binary() -> PathBuf {
    static FRESH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FRESH
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            // target/<profile>/deps/it-xxxx → target/<profile>/handoff
            let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_path_buf();
            let mut cargo = std::process::Command::new(env!("CARGO"));
            cargo.args(["build", "-q", "-p", "handoff-app", "--bin", "handoff"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            let status = cargo.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).status().expect("cargo runs");
            assert!(status.success(), "building the handoff binary failed");
            profile_dir.join(format!("handoff{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}

/// A `sqlite://` ledger URL for a file in `dir`.
pub(crate) fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("handoff.db").display())
}

/// A `handoff serve` child process on loopback. Killed (SIGKILL) and reaped on drop, so a failing
/// test never leaves it running.
pub(crate) struct ServeProcess {
    child: std::process::Child,
    /// The port it listens on (from its `handoff ready` log line).
    pub(crate) port: u16,
    /// `http://127.0.0.1:{port}`.
    pub(crate) address: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    /// Starts `handoff serve` with exactly `env` (plus `RUST_LOG=info`) in `dir`, and waits (at most
    /// 60 s) for its `handoff ready` line. `env` should set `PORT=0` and `BIND_ADDR=127.0.0.1`.
    pub(crate) async fn start(env: &HashMap<String, String>, dir: &std::path::Path) -> ServeProcess {
        use std::io::BufRead as _;
        let binary = tokio::task::spawn_blocking(handoff_binary).await.expect("the handoff binary is built");
        let mut child = std::process::Command::new(binary)
            .arg("serve")
            .env_clear()
            .envs(env)
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the handoff binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "handoff ready" {
                        let _ = port_tx.send(v["port"].as_u64());
                    }
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let mut process = ServeProcess { child, port: 0, address: String::new(), log, reader: Some(reader) };
        let port = tokio::task::spawn_blocking(move || port_rx.recv_timeout(Duration::from_secs(60)).ok().flatten())
            .await
            .ok()
            .flatten()
            .and_then(|p| u16::try_from(p).ok());
        match port {
            Some(port) => {
                process.port = port;
                process.address = format!("http://127.0.0.1:{port}");
                process
            }
            None => {
                let status = process.child.try_wait();
                panic!("handoff serve did not report its port within 60 s (exit: {status:?})");
            }
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no shutdown, no flushing) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = std::process::Command::new("kill").args(["-KILL", &self.pid().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Every stdout line so far.
    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// A client with keep-alive and a 20 s bound on every request.
pub(crate) fn test_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client builds")
}

/// One webhook delivery to `address`: status, `Retry-After` header and JSON body, or the transport error
/// (the server died).
pub(crate) async fn deliver(
    client: &reqwest::Client,
    address: &str,
    payload: &Value,
) -> Result<(u16, Option<String>, Value), reqwest::Error> {
    let resp = client.post(format!("{address}/webhooks/bot-handoff")).bearer_auth(SECRET).json(payload).send().await?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, retry_after, body))
}

/// The newest handoff record of `conversation` on the server at `address` (`Null` when it has none).
pub(crate) async fn newest_record(client: &reqwest::Client, address: &str, conversation: Uuid) -> Value {
    let resp = client
        .get(format!("{address}/handoffs?conversationId={conversation}"))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("the read side answers");
    assert_eq!(resp.status().as_u16(), 200, "GET /handoffs?conversationId={conversation}");
    let body = resp.json::<Value>().await.expect("json");
    body["handoffs"].as_array().and_then(|a| a.first().cloned()).unwrap_or(Value::Null)
}

/// How many calls of `endpoint` for `conversation` a simulator call log (`Sim::calls`) holds.
/// The participant-data keys the service always writes (CONTRACT §5.5), listed here independently
/// of the domain's own list.
pub(crate) const RESERVED: [&str; 6] =
    ["bot_handoff_reason", "bot_handoff_id", "bot_handoff_at", "guest_id", "guest_name", "guest_email"];

/// A webhook answer: status, `Retry-After`, body.
pub(crate) type Answer = (u16, Option<String>, Value);

/// A 409 `handoff_in_progress` with a `Retry-After` of at least one second.
pub(crate) fn is_busy((status, retry_after, body): &Answer) -> bool {
    *status == 409
        && body["error"] == "handoff_in_progress"
        && retry_after.as_deref().and_then(|r| r.parse::<u64>().ok()).is_some_and(|r| r >= 1)
}

/// Every endpoint the simulator answered, with how often (endpoints never called left out).
pub(crate) fn call_counts(sim: &genesys_sim::Sim) -> Vec<(Endpoint, usize)> {
    Endpoint::ALL.into_iter().map(|e| (e, sim.count(e))).filter(|&(_, n)| n > 0).collect()
}

/// The calls of one handoff that needed a capacity check: a token, the capacity query, then
/// lookup, context, transfer and the analytics tag, once each; and, for the first handoff of a
/// fresh service, the org's utilization (the message capacity), which is then shared for 5
/// minutes, so later handoffs cost one call less.
pub(crate) const ONE_HANDOFF_CALLS: [(Endpoint, usize); 7] = [
    (Endpoint::Token, 1),
    (Endpoint::GetConversation, 1),
    (Endpoint::PatchAttributes, 1),
    (Endpoint::Replace, 1),
    (Endpoint::ObservationsQuery, 1),
    (Endpoint::PutTags, 1),
    (Endpoint::GetUtilization, 1),
];

pub(crate) fn calls_for(calls: &[genesys_sim::Call], endpoint: Endpoint, conversation: Uuid) -> usize {
    let id = conversation.to_string();
    calls.iter().filter(|c| c.endpoint == endpoint && c.path.contains(&id)).count()
}

impl TestApp {
    /// Signals the app to shut down and returns at once with its server task, so a test can act
    /// while the app drains (`stop` signals and waits). `None` when it was signalled already.
    pub(crate) fn signal_shutdown(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.take()
    }

    /// POSTs a payload to the webhook with `query` (e.g. `?mode=advise`) and the test secret.
    pub(crate) async fn post_handoff_with_query(&self, query: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/webhooks/bot-handoff{query}", self.address))
            .bearer_auth(SECRET)
            .json(body)
            .send()
            .await
            .expect("server answers");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }
}

/// Background worker ticks the server at `address` completed (`handoff_worker_ticks_total`).
pub(crate) async fn worker_ticks(client: &reqwest::Client, address: &str) -> u64 {
    let Ok(resp) = client.get(format!("{address}/metrics")).send().await else { return 0 };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("handoff_worker_ticks_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (polling, at most `timeout`) until the worker at `address` has completed `more` ticks
/// after this call; false if it did not. A signal that the worker has looked at everything that was
/// there when the wait began, instead of a fixed sleep.
pub(crate) async fn worker_ticked(client: &reqwest::Client, address: &str, more: u64, timeout: Duration) -> bool {
    let start = worker_ticks(client, address).await;
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if worker_ticks(client, address).await >= start + more {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
