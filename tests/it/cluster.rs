//! Several instances: two `handoff serve` processes sharing one PostgreSQL ledger (a database of
//! its own on the loopback server, dropped at the end, also when the test fails).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use genesys_sim::{Endpoint, SimConfig, BILLING_QUEUE, EMPTY_QUEUE};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{
    base_env, calls_for, deliver, in_queue, is_busy, sample_payload, test_client, worker_ticked, Answer, ServeProcess,
};

/// The PostgreSQL server (loopback only), without a database.
pub(crate) const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// One webhook answer: status, `Retry-After`, body.
/// The server's `postgres` database; `None` (after printing "skipped: …") when it is unreachable,
/// unless `CI=true`, where that fails the test.
pub(crate) async fn admin_connection() -> Option<PgConnection> {
    let url = format!("{PG_SERVER}/postgres");
    let why = match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => return Some(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "PostgreSQL unreachable at {PG_SERVER} ({why}) and CI=true: start it before the tests"
    );
    eprintln!("skipped: PostgreSQL unreachable at {PG_SERVER} ({why})");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_share_one_ledger() {
    let Some(mut admin) = admin_connection().await else { return };
    let name = format!("handoff_it_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.expect("CREATE DATABASE");

    // The scenario runs as a task so that a failure still drops the database (its children are
    // killed when the task unwinds).
    let outcome = tokio::spawn(two_instances(format!("{PG_SERVER}/{name}"))).await;

    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await;
    let _ = admin.close().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the scenario did not finish: {e}"),
        }
    }
    dropped.expect("DROP DATABASE");
}

/// Sends every (conversation, instance) delivery at once; answers in the same order.
async fn storm(client: &reqwest::Client, deliveries: &[(Value, String)]) -> Vec<Answer> {
    let start = Arc::new(tokio::sync::Barrier::new(deliveries.len()));
    let tasks: Vec<_> = deliveries
        .iter()
        .map(|(payload, address)| {
            let (client, payload, address, start) = (client.clone(), payload.clone(), address.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                deliver(&client, &address, &payload).await
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut answers = Vec::new();
    for task in tasks {
        let joined = tokio::time::timeout_at(deadline, task).await.expect("every delivery answered within 60 s");
        answers.push(joined.expect("task").expect("the instance answers"));
    }
    answers
}

/// Outcome lines of a process log: (background, outcome) → count.
fn outcomes(log: &[String]) -> HashMap<(bool, String), usize> {
    let mut counts = HashMap::new();
    for line in log {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            let fields = if v["fields"].is_object() { &v["fields"] } else { &v };
            if let Some(outcome) = fields["outcome"].as_str() {
                let background = fields["background"].as_bool().unwrap_or(false);
                *counts.entry((background, outcome.to_owned())).or_default() += 1;
            }
        }
    }
    counts
}

async fn two_instances(database_url: String) {
    // Arrange: one simulator (10 ms a call), two instances started together on one database (so they
    // also race to apply the migrations).
    tokio::task::spawn_blocking(crate::helpers::handoff_binary).await.expect("the handoff binary is built");
    let started = Instant::now();
    let sim_handle = genesys_sim::spawn(SimConfig::default()).await.expect("simulator");
    let sim = sim_handle.sim().clone();
    sim.set_latency(Duration::from_millis(10));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = base_env(&sim_handle.base_url());
    env.insert("DATABASE_URL".into(), database_url);
    let (a, b) = tokio::join!(ServeProcess::start(&env, dir.path()), ServeProcess::start(&env, dir.path()));
    let instances = [a.address.clone(), b.address.clone()];
    let client = test_client();

    // Act 1: a duplicate storm, 30 conversations × 4 deliveries, two on each instance, all at once.
    let storm_convs: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
    let deliveries: Vec<(Value, String)> = storm_convs
        .iter()
        .flat_map(|c| (0..4).map(move |i| (*c, i)))
        .map(|(c, i)| (sample_payload(c, "complex_billing_dispute"), instances[i % 2].clone()))
        .collect();
    let answers = storm(&client, &deliveries).await;

    // Assert 1: per conversation one fresh 200, the rest 409 or replays, one replace call.
    let calls = sim.calls();
    for (n, conversation) in storm_convs.iter().enumerate() {
        let mine = &answers[n * 4..n * 4 + 4];
        let fresh = mine.iter().filter(|(s, _, b)| *s == 200 && b["replayed"] == false).count();
        let rest = mine.iter().filter(|a| (a.0 == 200 && a.2["replayed"] == true) || is_busy(a)).count();
        assert_eq!((fresh, rest), (1, 3), "{conversation}: {mine:?}");
        let ids: std::collections::HashSet<&Value> = mine.iter().map(|a| &a.2["handoffId"]).collect();
        assert_eq!(ids.len(), 1, "{conversation}: one handoff id on both instances: {mine:?}");
        assert_eq!(calls_for(&calls, Endpoint::Replace, *conversation), 1, "{conversation} replace calls");
        assert!(sim.conversation(*conversation).is_some_and(|c| in_queue(&c, BILLING_QUEUE)), "{conversation}");
    }
    let busy = answers.iter().filter(|a| is_busy(a)).count();
    let storm_time = started.elapsed();

    // Act 2: 60 deferred handoffs (more than one worker tick takes, 50), each delivered to both
    // instances at once; then capacity appears.
    let deferred_convs: Vec<Uuid> = (0..60).map(|_| Uuid::new_v4()).collect();
    let deliveries: Vec<(Value, String)> = deferred_convs
        .iter()
        .enumerate()
        .flat_map(|(n, c)| (0..2).map(move |i| (n, *c, i)))
        .map(|(n, c, i)| (sample_payload(c, "after_hours"), instances[(n + i) % 2].clone()))
        .collect();
    let deferred_answers = storm(&client, &deliveries).await;
    let replaces_while_deferred: usize =
        deferred_convs.iter().map(|c| calls_for(&sim.calls(), Endpoint::Replace, *c)).sum();
    assert!(sim.set_queue_capacity(EMPTY_QUEUE, 5, 0, 10), "the after-hours queue exists");
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_queued = |sim: &genesys_sim::Sim| {
        deferred_convs.iter().all(|c| sim.conversation(*c).is_some_and(|v| in_queue(&v, EMPTY_QUEUE)))
    };
    while !all_queued(&sim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queued_after = started.elapsed();
    // Both workers keep ticking: let each complete three more ticks, time to do anything twice.
    let (ticked_a, ticked_b) = tokio::join!(
        worker_ticked(&client, &instances[0], 3, Duration::from_secs(15)),
        worker_ticked(&client, &instances[1], 3, Duration::from_secs(15))
    );
    assert!(ticked_a && ticked_b, "the workers stopped ticking");
    let calls_before_again = sim.calls();
    let again: Vec<(Value, String)> = deferred_convs
        .iter()
        .enumerate()
        .map(|(n, c)| (sample_payload(*c, "after_hours"), instances[n % 2].clone()))
        .collect();
    let again_answers = storm(&client, &again).await;
    let calls = sim.calls();

    // Assert 2
    for (n, conversation) in deferred_convs.iter().enumerate() {
        let mine = &deferred_answers[n * 2..n * 2 + 2];
        let fresh = mine.iter().filter(|(s, _, b)| *s == 202 && b["replayed"] == false).count();
        let rest = mine.iter().filter(|a| (a.0 == 202 && a.2["replayed"] == true) || is_busy(a)).count();
        assert_eq!((fresh, rest), (1, 1), "{conversation}: {mine:?}");
    }
    assert_eq!(replaces_while_deferred, 0, "no transfer before capacity appeared");
    assert!(all_queued(&sim), "not every deferred handoff was transferred within 30 s");
    for conversation in &deferred_convs {
        assert_eq!(calls_for(&calls, Endpoint::Replace, *conversation), 1, "{conversation}: transferred once in all");
    }
    for ((payload, _), answer) in again.iter().zip(&again_answers) {
        assert!(answer.0 == 200 && answer.2["replayed"] == true, "{}: {answer:?}", payload["conversationId"]);
    }
    assert_eq!(
        calls.iter().filter(|c| c.endpoint == Endpoint::Replace).count(),
        calls_before_again.iter().filter(|c| c.endpoint == Endpoint::Replace).count(),
        "a re-delivery transferred again"
    );

    let (log_a, log_b) = (a.log(), b.log());
    let (oa, ob) = (outcomes(&log_a), outcomes(&log_b));
    let background =
        |o: &HashMap<(bool, String), usize>| o.get(&(true, "transferred".to_owned())).copied().unwrap_or(0);
    assert_eq!(background(&oa) + background(&ob), deferred_convs.len(), "background transfers: A {oa:?}, B {ob:?}");
    assert!(background(&oa) > 0 && background(&ob) > 0, "both workers transfer: A {oa:?}, B {ob:?}");
    println!(
        "two instances on PostgreSQL: storm of 120 deliveries → 30 transfers, {busy} answered 409, \
         done {storm_time:?} after start; \
         60 deferred transferred by the workers (instance A {}, instance B {}) {queued_after:?} after start; \
         total {:?}",
        background(&oa),
        background(&ob),
        started.elapsed()
    );
}
