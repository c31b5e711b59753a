//! Personal data through the real `App` on a SQLite file: the admin token guards the read side and
//! erasure, and after `DELETE /guests/{guestId}` neither the guest's name nor e-mail is in any of
//! the ledger's files (database, WAL, shared memory; the outbox lives there too) or in the logs.

use std::io::Write;
use std::sync::{Arc, Mutex};

use genesys_sim::SimConfig;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{sample_payload, spawn_app_with, sqlite_url, SECRET};

const ADMIN_TOKEN: &str = "privacy-test-admin-token";
const NAME: &str = "Jane Doe";
const EMAIL: &str = "jane.doe@example.com";
const GUEST: &str = "guest-8842-xyz";

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

/// The ledger files that contain `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<String> {
    ["handoff.db", "handoff.db-wal", "handoff.db-shm"]
        .into_iter()
        .filter(|name| {
            let bytes = std::fs::read(dir.join(name)).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(str::to_owned)
        .collect()
}

// A current-thread runtime runs the app, the simulator and this test on one thread, so the
// thread-local subscriber sees every log line.
#[tokio::test(flavor = "current_thread")]
async fn an_erased_guest_is_gone_from_the_ledger_files_and_the_logs_and_only_the_admin_token_reads_or_erases() {
    // Arrange
    let sink = Captured::default();
    let subscriber = handoff_app::telemetry::subscriber("debug", handoff_app::config::LogFormat::Json, sink.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = sqlite_url(dir.path());
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("DATABASE_URL".into(), url);
        env.insert("HANDOFF_ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
    })
    .await;
    let conversation = Uuid::new_v4();
    let (status, body, _) = app.post_handoff(&sample_payload(conversation, "complex_billing_dispute")).await;
    assert_eq!(status, 200, "{body}");
    let read = |token: &'static str| {
        let request = app.client.get(format!("{}/handoffs?conversationId={conversation}", app.address));
        async move { request.bearer_auth(token).send().await.expect("answers").status().as_u16() }
    };
    let erase = |token: &'static str| {
        let request = app.client.delete(format!("{}/guests/{GUEST}", app.address));
        async move {
            let resp = request.bearer_auth(token).send().await.expect("answers");
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    assert!(!files_holding(dir.path(), NAME).is_empty(), "the name must be stored before the erasure");

    // Act
    let read_with_webhook_secret = read(SECRET).await;
    let read_with_admin_token = read(ADMIN_TOKEN).await;
    let erase_with_webhook_secret = erase(SECRET).await;
    let erased = erase(ADMIN_TOKEN).await;
    let on_disk_after_answer = (files_holding(dir.path(), NAME), files_holding(dir.path(), EMAIL));
    app.stop().await;

    // Assert
    assert_eq!(read_with_webhook_secret, 401, "the bot's secret no longer reads records");
    assert_eq!(read_with_admin_token, 200);
    assert_eq!(erase_with_webhook_secret.0, 401);
    assert_eq!(erased, (200, json!({ "erasedHandoffs": 1 })));
    assert_eq!(on_disk_after_answer, (Vec::<String>::new(), Vec::<String>::new()), "personal data left on disk");
    let logs = String::from_utf8(sink.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(logs.contains("guest personal data erased"), "the erasure line was not captured:\n{logs}");
    for private in [NAME, EMAIL, GUEST, "refund_policy_explained", ADMIN_TOKEN] {
        assert!(!logs.contains(private), "{private} logged");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn without_an_admin_token_serve_warns_at_start_and_reads_take_the_webhook_secret() {
    // Arrange
    let sink = Captured::default();
    let subscriber = handoff_app::telemetry::subscriber("info", handoff_app::config::LogFormat::Json, sink.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    // Act
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    let (status, _) = app.get("/handoffs/stats").await;
    app.stop().await;

    // Assert
    assert_eq!(status, 200, "today's behaviour: the webhook secret reads");
    let logs = String::from_utf8(sink.0.lock().expect("lock").clone()).expect("utf-8");
    let warning = logs
        .lines()
        .find(|l| l.contains("HANDOFF_ADMIN_TOKEN is not set"))
        .unwrap_or_else(|| panic!("no start-up warning:\n{logs}"));
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
}
