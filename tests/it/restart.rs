//! Restart recovery (issue 13): `handoff serve` killed with SIGKILL in the middle of a burst and
//! restarted resumes the handoffs it left at once, on both ledgers; and a second `serve` on a
//! SQLite file that is in use refuses to start.
//!
//! The scenario is the one of the issue: 120 handoffs at 16 concurrent with 60 ms of Genesys
//! latency, `kill -9` mid-burst (once a third is answered, about one second in), restart, and the
//! bot redelivers everything. Leases are the
//! production default (30 s): without restart recovery, the in-flight handoffs would answer 409
//! until those lapsed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use genesys_sim::{Endpoint, SimConfig, BILLING_QUEUE};
use uuid::Uuid;

use crate::cluster::{admin_connection, PG_SERVER};
use crate::helpers::{
    base_env, calls_for, deliver, in_queue, sample_payload, sqlite_url, test_client, Answer, ServeProcess,
};

const HANDOFFS: usize = 120;
const CONCURRENCY: usize = 16;
/// The target is 3 s from the restart to the last in-flight handoff's final answer; that
/// is a speed figure, measured and printed here (and recorded in `docs/operations.md`), not
/// asserted, as timings on a shared CI machine vary. What is asserted is the bound that proves
/// recovery: a third of the 30 s lease, so no in-flight handoff waited for its lease to lapse.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_kill_and_a_restart_on_sqlite_every_in_flight_handoff_finishes_within_3_s_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    kill_restart_redeliver(sqlite_url(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_kill_and_a_restart_on_postgres_every_in_flight_handoff_finishes_within_3_s_exactly_once() {
    let Some(mut admin) = admin_connection().await else { return };
    let name = format!("handoff_it_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.expect("CREATE DATABASE");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("{PG_SERVER}/{name}");
    let path = dir.path().to_owned();
    // As a task, so a failure still drops the database (its children are killed as it unwinds).
    let outcome = tokio::spawn(async move { kill_restart_redeliver(url, &path).await }).await;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the scenario did not finish: {e}"),
        }
    }
    dropped.expect("DROP DATABASE");
}

/// One redelivery as a patient bot makes it: again every 100 ms while the answer is 409 or 503
/// (bounded: 15 s), then the final answer and how long after `since` it came.
async fn redeliver(client: reqwest::Client, address: String, conversation: Uuid, since: Instant) -> (Answer, Duration) {
    let payload = sample_payload(conversation, "complex_billing_dispute");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = deliver(&client, &address, &payload).await.expect("the restarted instance answers");
        if !matches!(answer.0, 409 | 503) || Instant::now() >= deadline {
            return (answer, since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kill_restart_redeliver(database_url: String, dir: &std::path::Path) {
    // Arrange: the simulator here (60 ms a call), the binary as a child; default lease (30 s).
    tokio::task::spawn_blocking(crate::helpers::handoff_binary).await.expect("the handoff binary is built");
    let sim_handle = genesys_sim::spawn(SimConfig::default()).await.expect("simulator");
    let sim = sim_handle.sim().clone();
    sim.set_latency(Duration::from_millis(60));
    let mut env = base_env(&sim_handle.base_url());
    env.insert("DATABASE_URL".into(), database_url);
    env.insert("HANDOFF_HEARTBEAT_SECS".into(), "1".into());
    let client = test_client();
    let conversations: Vec<Uuid> = (0..HANDOFFS).map(|_| Uuid::new_v4()).collect();
    let mut first = ServeProcess::start(&env, dir).await;

    // Act 1: the burst, 16 at a time, and SIGKILL once a third of it has been answered.
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let answered = Arc::new(AtomicUsize::new(0));
    let burst: Vec<_> = conversations
        .iter()
        .map(|c| {
            let (client, address, permits, answered, c) =
                (client.clone(), first.address.clone(), permits.clone(), answered.clone(), *c);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                let payload = sample_payload(c, "complex_billing_dispute");
                let answer = deliver(&client, &address, &payload).await.map_err(|e| e.to_string());
                answered.fetch_add(1, Ordering::SeqCst);
                (c, answer)
            })
        })
        .collect();
    let kill_deadline = Instant::now() + Duration::from_secs(20);
    while answered.load(Ordering::SeqCst) < HANDOFFS / 3 && Instant::now() < kill_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill();
    let mut first_answers: HashMap<Uuid, Result<Answer, String>> = HashMap::new();
    for task in burst {
        let (c, answer) = tokio::time::timeout(Duration::from_secs(30), task).await.expect("ended").expect("task");
        first_answers.insert(c, answer);
    }
    let in_flight: Vec<Uuid> = conversations
        .iter()
        .copied()
        .filter(|c| first_answers[c].is_err() && calls_for(&sim.calls(), Endpoint::GetConversation, *c) > 0)
        .collect();

    // Act 2: restart on the same ledger; the bot redelivers everything at once.
    let second = ServeProcess::start(&env, dir).await;
    let restarted = Instant::now();
    let redeliveries: Vec<_> = conversations
        .iter()
        .map(|c| tokio::spawn(redeliver(client.clone(), second.address.clone(), *c, restarted)))
        .collect();
    let mut final_answers: HashMap<Uuid, (Answer, Duration)> = HashMap::new();
    for (c, task) in conversations.iter().zip(redeliveries) {
        let done = tokio::time::timeout(Duration::from_secs(30), task).await.expect("redelivered").expect("task");
        final_answers.insert(*c, done);
    }
    let calls = sim.calls();

    // Assert
    let answered_before = first_answers.values().filter(|a| matches!(a, Ok((200, _, _)))).count();
    assert!(!in_flight.is_empty(), "the kill was not mid-burst: {answered_before} answered before it");
    let slowest_in_flight = in_flight.iter().map(|c| final_answers[c].1).max().unwrap_or_default();
    let slowest = final_answers.values().map(|(_, t)| *t).max().unwrap_or_default();
    for c in &conversations {
        let ((status, _, body), _) = &final_answers[c];
        assert_eq!(*status, 200, "{c}: the final answer is a transfer: {body}");
        assert_eq!(calls_for(&calls, Endpoint::Replace, *c), 1, "{c}: transferred exactly once");
        assert!(sim.conversation(*c).is_some_and(|v| in_queue(&v, BILLING_QUEUE)), "{c} is not in the queue");
        if matches!(first_answers[c], Ok((200, _, _))) {
            assert_eq!(body["replayed"], true, "{c}: answered before the kill, so replayed now: {body}");
        }
    }
    let mut in_flight_times: Vec<Duration> = in_flight.iter().map(|c| final_answers[c].1).collect();
    in_flight_times.sort();
    let mut all_times: Vec<Duration> = final_answers.values().map(|(_, t)| *t).collect();
    all_times.sort();
    println!(
        "restart recovery: in-flight handoffs answered after {in_flight_times:?}; all {HANDOFFS}: p50 {:?}, p90 {:?}",
        all_times[HANDOFFS / 2],
        all_times[HANDOFFS * 9 / 10]
    );
    println!(
        "restart recovery: {answered_before} of {HANDOFFS} answered before the kill, {} in flight; after the \
         restart the slowest in-flight handoff had its final answer in {slowest_in_flight:?} (all {HANDOFFS}: \
         {slowest:?})",
        in_flight.len()
    );
    assert!(
        slowest_in_flight <= BOUND,
        "an in-flight handoff took {slowest_in_flight:?} after the restart: it waited for its lease (bound {BOUND:?})"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_a_sqlite_file_in_use_refuses_to_start_and_names_the_owner() {
    // Arrange
    let binary =
        tokio::task::spawn_blocking(crate::helpers::handoff_binary).await.expect("the handoff binary is built");
    let sim_handle = genesys_sim::spawn(SimConfig::default()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = base_env(&sim_handle.base_url());
    env.insert("DATABASE_URL".into(), sqlite_url(dir.path()));
    let first = ServeProcess::start(&env, dir.path()).await;

    // Act
    let second = {
        let (env, dir) = (env.clone(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(binary)
                .arg("serve")
                .env_clear()
                .envs(&env)
                .current_dir(dir)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("the handoff binary runs")
        })
    };
    let output = tokio::time::timeout(Duration::from_secs(30), second).await.expect("it exits at once").expect("task");

    // Assert
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a second serve started: {stderr}");
    assert!(stderr.contains("is in use by another handoff process"), "{stderr}");
    assert!(stderr.contains(&format!("(process {})", first.pid())), "the owner is named: {stderr}");
    let health = test_client().get(format!("{}/healthz", first.address)).send().await.expect("the first still serves");
    assert_eq!(health.status().as_u16(), 200);
    drop(first);
}
