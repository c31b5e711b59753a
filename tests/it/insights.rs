//! The insights page in a real browser (issue 15): a SQLite ledger is seeded with known handoffs
//! (guests with known names and e-mails), `handoff report` reads it, then `handoff serve` serves
//! it and headless Chromium loads `/insights` with the admin token as its Basic password. The test
//! checks that the figures in the rendered DOM, the CSV export and the report agree with the
//! seeded ledger, the accessibility basics (labelled filters, a text alternative for every chart,
//! keyboard use through native controls only), that no personal data shows, and saves a
//! screenshot at `target/insights.png`.
//!
//! Chromium is `/usr/bin/chromium` (or `$CHROMIUM`); without it the test says it was skipped,
//! unless `CI=true`, where that fails (`.ci/run` installs Debian's `chromium`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use genesys_sim::{SimConfig, SUPPORT_QUEUE};
use handoff_domain::ports::{Begin, LedgerPort};
use handoff_domain::{
    AdviceDecision, Confirmation, ConversationId, HandoffKey, HandoffMode, HandoffRequest, QueueId, Stage,
    StoredAnswer, Unconfirmed,
};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{base_env, handoff_binary, sqlite_url, ServeProcess, SECRET};

const ADMIN_TOKEN: &str = "insights-admin-token-5150";
const GUEST_NAMES: [&str; 3] = ["Jane Doe", "Émile Zola", "Olu Adebayo"];
const GUEST_EMAILS: [&str; 3] = ["jane.doe@example.com", "emile@zola.example", "olu.adebayo@example.org"];
const CONTEXT_VALUE: &str = "order-ctx-98765";

fn day(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 10, hour, minute, 0).unwrap()
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    path.exists().then_some(path)
}

/// `target/` (the parent of `target/<profile>/deps/it-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).map(Path::to_path_buf).expect("target dir")
}

/// Seeds one record created at `at` and finished `took` seconds later as `how`.
async fn seed(ledger: &handoff_ledger::SqlLedger, n: usize, at: DateTime<Utc>, reason: &str, how: &str, took: i64) {
    let conversation = ConversationId::parse(&Uuid::new_v4().to_string()).expect("a UUID is a platform id");
    let request = HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": format!("guest-{n}"), "name": GUEST_NAMES[n % 3], "email": GUEST_EMAILS[n % 3] },
            "handoffReason": reason,
            "customContext": { "order_ref": CONTEXT_VALUE },
        }),
        &handoff_domain::OpaqueIds,
    )
    .expect("valid payload");
    let Begin::Fresh(mut record) = ledger
        .begin(
            &HandoffKey::new(conversation, None),
            &request,
            at,
            Duration::from_secs(30),
            Duration::from_secs(600),
            HandoffMode::Transfer,
        )
        .await
        .expect("begin")
    else {
        panic!("a fresh record")
    };
    let done = at + TimeDelta::seconds(took);
    let queue = QueueId::parse(&SUPPORT_QUEUE.to_string()).expect("a UUID is a platform id");
    match how {
        "transferred" | "after_deferral" => {
            record.queue = Some(queue);
            if how == "after_deferral" {
                record.defer_until = Some(at + TimeDelta::seconds(300));
                record.advance(Stage::Deferred, at, "no capacity").expect("defer");
            }
            record.advance(Stage::Transferred, done, "transferred").expect("transfer");
            record.answer = Some(StoredAnswer::Transferred { queue });
        }
        "failed" => {
            record.advance(Stage::Failed, done, "gone").expect("fail");
            record.answer = Some(StoredAnswer::Failed {
                status: 422,
                code: "conversation_not_transferable".into(),
                message: "ended".into(),
            });
        }
        "advised" => {
            record.queue = Some(queue);
            record.advance(Stage::Advised, done, "advised").expect("advise");
            record.answer = Some(StoredAnswer::Advised {
                queue,
                decision: AdviceDecision::Transfer,
                confirmation: Some(Confirmation::Unconfirmed { why: Unconfirmed::StillWithFlow }),
            });
        }
        "deferred" => {
            // Not due for years, so the running server's worker leaves it alone.
            record.queue = Some(queue);
            record.defer_until = Some(Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap());
            record.next_check_at = record.defer_until;
            record.advance(Stage::Deferred, done, "no capacity").expect("defer");
            record.answer = Some(StoredAnswer::Deferred { queue, retry_after: Duration::from_secs(15) });
        }
        other => panic!("unknown seed {other}"),
    }
    ledger.save(&record, None, &[]).await.expect("save");
}

/// Runs `command` for at most `limit`, returning its stdout.
fn run_bounded(mut command: Command, limit: Duration) -> (bool, String, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the command starts");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = Instant::now();
    let success = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    (success, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// Headless Chromium with the flags this machine needs and a fresh profile.
fn chromium_command(binary: &Path, profile: &Path) -> Command {
    let mut command = Command::new(binary);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,3000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command.stdin(Stdio::null());
    command
}

/// The text of the element carrying `data-figure="name"`.
fn figure(dom: &str, name: &str) -> String {
    let marker = format!("data-figure=\"{name}\">");
    let start = dom.find(&marker).unwrap_or_else(|| panic!("no figure {name} in the DOM")) + marker.len();
    dom[start..].split('<').next().unwrap_or_default().trim().to_owned()
}

/// Every value of `attribute` on tags named `tag`.
fn attributes<'a>(dom: &'a str, tag: &str, attribute: &str) -> Vec<Option<&'a str>> {
    let open = format!("<{tag}");
    dom.match_indices(&open)
        .filter(|(i, _)| dom[i + open.len()..].starts_with([' ', '>']))
        .map(|(i, _)| {
            let end = dom[i..].find('>').map_or(dom.len(), |e| i + e);
            let tag_text = &dom[i..end];
            let key = format!(" {attribute}=\"");
            tag_text.find(&key).map(|s| {
                let v = &tag_text[s + key.len()..];
                &v[..v.find('"').unwrap_or(v.len())]
            })
        })
        .collect()
}

/// A small CSV reader (quoted fields with doubled quotes).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|line| {
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
            fields
        })
        .collect()
}

/// The value after `label` in the report (labels and values separated by spaces).
fn report_value(report: &str, label: &str) -> String {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(label) && l.trim_start()[label.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no `{label}` in the report:\n{report}"));
    line.trim_start()[label.len()..].trim().to_owned()
}

#[tokio::test]
async fn the_insights_page_in_headless_chromium_matches_the_ledger_the_export_and_the_report() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing at /usr/bin/chromium and CI=true: install Debian's `chromium` package"
        );
        eprintln!("skipped: Chromium is not installed at /usr/bin/chromium (apt-get install chromium)");
        return;
    };

    // Arrange: a ledger with known handoffs on 2026-01-10, and one the day before.
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(dir.path());
    let plan: [(DateTime<Utc>, &str, &str, i64); 13] = [
        (day(8, 5), "complex_billing_dispute", "transferred", 3),
        (day(8, 40), "complex_billing_dispute", "transferred", 5),
        (day(9, 15), "complex_billing_dispute", "after_deferral", 180),
        (day(10, 0), "complex_billing_dispute", "failed", 1),
        (day(10, 30), "password_reset", "transferred", 2),
        (day(11, 0), "password_reset", "transferred", 9),
        (day(12, 10), "password_reset", "advised", 1),
        (day(13, 0), "password_reset", "failed", 2),
        (day(14, 45), "after_hours", "after_deferral", 60),
        (day(15, 0), "after_hours", "deferred", 0),
        (day(16, 20), "complex_billing_dispute", "transferred", 4),
        (day(23, 59), "password_reset", "transferred", 7),
        (day(0, 0) - TimeDelta::hours(2), "password_reset", "transferred", 1),
    ];
    {
        let ledger = handoff_ledger::SqlLedger::connect(&url).await.expect("the ledger opens");
        for (n, (at, reason, how, took)) in plan.iter().enumerate() {
            seed(&ledger, n, *at, reason, how, *took).await;
        }
        ledger.close().await;
    }

    // Act 1: the report, before the server holds the ledger.
    let mut report = Command::new(tokio::task::spawn_blocking(handoff_binary).await.expect("binary"));
    report.args(["report", "--since", "2026-01-10", "--until", "2026-01-11", "--database-url", &url]);
    report.env_clear().current_dir(dir.path());
    let (ok, report, report_err) =
        tokio::task::spawn_blocking(move || run_bounded(report, Duration::from_secs(60))).await.expect("report ran");
    assert!(ok, "handoff report failed: {report_err}");

    // Act 2: serve it; the export; the page in Chromium.
    let sim = genesys_sim::spawn(SimConfig::default()).await.expect("simulator");
    let mut env = base_env(&sim.base_url());
    env.insert("DATABASE_URL".into(), url.clone());
    env.insert("HANDOFF_ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
    let server = ServeProcess::start(&env, dir.path()).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let window = "since=2026-01-10&until=2026-01-11";
    let export = client
        .get(format!("{}/handoffs/export.csv?{window}", server.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("export answers");
    assert_eq!(export.status(), 200);
    let csv = export.text().await.expect("csv body");
    for path in ["/insights", "/handoffs/export.csv"] {
        let with_webhook_secret =
            client.get(format!("{}{path}", server.address)).bearer_auth(SECRET).send().await.expect("answers");
        assert_eq!(with_webhook_secret.status(), 401, "{path}: the webhook secret must not open it");
    }

    let page = format!("http://manager:{ADMIN_TOKEN}@127.0.0.1:{}/insights?range=custom&{window}", server.port);
    let profile = tempfile::tempdir().expect("profile dir");
    let mut dump = chromium_command(&browser, profile.path());
    dump.arg("--dump-dom").arg(&page);
    let (ok, dom, chromium_err) =
        tokio::task::spawn_blocking(move || run_bounded(dump, Duration::from_secs(120))).await.expect("chromium ran");
    assert!(ok && dom.contains("</html>"), "Chromium could not load the page: {chromium_err}");
    let screenshot = target_dir().join("insights.png");
    let _ = std::fs::remove_file(&screenshot);
    let profile2 = tempfile::tempdir().expect("profile dir");
    let mut shot = chromium_command(&browser, profile2.path());
    shot.arg(format!("--screenshot={}", screenshot.display())).arg(&page);
    let (ok, _, shot_err) =
        tokio::task::spawn_blocking(move || run_bounded(shot, Duration::from_secs(120))).await.expect("chromium ran");
    assert!(ok, "the screenshot failed: {shot_err}");
    drop(server);

    // Assert: the seeded ledger, counted here from the plan.
    let in_window: Vec<_> = plan.iter().filter(|(at, ..)| *at >= day(0, 0)).collect();
    let count = |how: &str| in_window.iter().filter(|p| p.2 == how).count();
    let reached = count("transferred") + count("after_deferral");
    assert_eq!(in_window.len(), 12);
    // The export: one row per handoff in the window.
    let rows = parse_csv(&csv);
    assert_eq!(
        rows[0].join(","),
        "handoffId,conversationId,reason,queueId,outcome,created,finished,secondsToQueue,attempts"
    );
    let data = &rows[1..];
    assert_eq!(data.len(), in_window.len());
    let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
    for row in data {
        *by_outcome.entry(row[4].as_str()).or_default() += 1;
    }
    assert_eq!(by_outcome.get("transferred"), Some(&count("transferred")));
    assert_eq!(by_outcome.get("transferred_after_deferral"), Some(&count("after_deferral")));
    assert_eq!(by_outcome.get("failed:not_transferable"), Some(&count("failed")));
    assert_eq!(by_outcome.get("unconfirmed"), Some(&count("advised")));
    assert_eq!(by_outcome.get("in_progress"), Some(&count("deferred")));
    let mut seconds: Vec<f64> = data.iter().filter_map(|r| r[7].parse().ok()).collect();
    seconds.sort_by(f64::total_cmp);
    assert_eq!(seconds.len(), reached);
    let p50 = format!("{:.1} s", seconds[seconds.len().div_ceil(2) - 1]);
    let p95 = format!("{:.1} s", seconds[(seconds.len() * 95).div_ceil(100) - 1]);

    // The page (rendered DOM) and the report show the same figures.
    let expected = [
        ("total", "Handoffs", in_window.len().to_string()),
        ("transferred-all", "Reached a queue", reached.to_string()),
        ("failed-all", "Failed", count("failed").to_string()),
        ("to-queue-p50", "Time to queue, median", p50),
        ("to-queue-p95", "Time to queue, 95th percentile", p95),
        ("confirmation-rate", "Advice confirmation rate", "0.0 %".to_owned()),
        ("outbox-backlog", "Outbox backlog", "0".to_owned()),
    ];
    for (id, label, want) in &expected {
        assert_eq!(&figure(&dom, id), want, "page figure {id}");
        assert_eq!(&report_value(&report, label), want, "report figure {label}");
    }
    assert_eq!(figure(&dom, "deferral-count"), count("after_deferral").to_string());
    assert!(dom.contains("data-failure=\"not_transferable\">2<"), "failures by cause");
    let flat_report = report.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat_report.contains("not_transferable 2"), "{report}");

    // No personal data anywhere.
    for secret in GUEST_NAMES.iter().chain(GUEST_EMAILS.iter()).chain([&CONTEXT_VALUE, &"guest-1"]) {
        assert!(!dom.contains(secret), "the page shows {secret}");
        assert!(!csv.contains(secret), "the export shows {secret}");
        assert!(!report.contains(secret), "the report shows {secret}");
    }

    // Accessibility basics.
    assert!(dom.contains("<html lang=\"en\">"), "the page declares its language");
    let labels: Vec<&str> = attributes(&dom, "label", "for").into_iter().flatten().collect();
    for tag in ["input", "select"] {
        for id in attributes(&dom, tag, "id") {
            let id = id.unwrap_or_else(|| panic!("a <{tag}> without an id cannot be labelled"));
            assert!(labels.contains(&id), "<{tag} id={id}> has no <label for>");
        }
    }
    let charts: Vec<_> =
        attributes(&dom, "svg", "role").into_iter().zip(attributes(&dom, "svg", "aria-labelledby")).collect();
    let hidden = attributes(&dom, "svg", "aria-hidden");
    let mut described = 0;
    for ((role, labelled_by), hidden) in charts.iter().zip(&hidden) {
        if *hidden == Some("true") {
            continue; // legend swatches
        }
        assert_eq!(*role, Some("img"), "every chart is an image to assistive technology");
        if let Some(ids) = labelled_by {
            for id in ids.split_whitespace() {
                assert!(
                    dom.contains(&format!("<title id=\"{id}\">")) || dom.contains(&format!("<desc id=\"{id}\">")),
                    "{id}"
                );
            }
            described += 1;
        }
    }
    assert!(described >= 4, "over time, time to queue, failures and confirmation have a title and a description");
    for table in ["over-time-table", "reasons-table", "to-queue-table", "failures-table"] {
        assert!(dom.contains(&format!("<table id=\"{table}\">")), "the data table {table} is there");
    }
    // Keyboard: only native controls and links take focus, in document order.
    assert!(!dom.contains("<script"), "no script");
    for value in attributes(&dom, "h2", "tabindex").into_iter().flatten() {
        assert_eq!(value, "-1", "nothing is put into the tab order out of document order");
    }
    assert!(!dom.contains("onclick") && !dom.contains("role=\"button\""), "no fake buttons");
    assert!(dom.contains("<button type=\"submit\">"), "the filters apply with a real button");
    assert!(dom.contains("<a class=\"skip\" href=\"#figures\">"), "a skip link");

    // The screenshot.
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real PNG at {}", screenshot.display());
}
