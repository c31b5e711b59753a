//! Durability on the SQLite ledger: concurrent duplicates transfer once, and a `handoff serve`
//! killed with SIGKILL mid-burst and restarted on the same file loses nothing and transfers
//! nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use genesys_sim::{Endpoint, Fault, FaultKind, SimConfig, BILLING_QUEUE, EMPTY_QUEUE};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    base_env, calls_for, deliver, in_queue, is_busy, newest_record, sample_payload, spawn_app_with, sqlite_url,
    test_client, worker_ticked, worker_ticks, Answer, ServeProcess,
};

/// Admitted at once: base_env routes it to Billing (2 idle agents).
const ADMITTED: &str = "complex_billing_dispute";
/// Deferred: base_env routes it to After hours (no agents) until the test raises its capacity.
const DEFERRED: &str = "after_hours";

/// One webhook answer: status, `Retry-After`, body.
/// A delivery's outcome: the answer, or the transport error (the server died).
type Delivered = (Handoff, Result<Answer, String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_deliveries_of_one_conversation_transfer_once() {
    // Arrange: a SQLite ledger, and upstream slow enough (20 ms a call) that the first delivery is
    // still in flight while the others arrive.
    const DELIVERIES: usize = 50;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(dir.path());
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("DATABASE_URL".into(), url);
    })
    .await;
    app.sim.sim().set_latency(Duration::from_millis(20));
    let conversation = Uuid::new_v4();
    let payload = sample_payload(conversation, ADMITTED);
    let client = test_client();
    let start = Arc::new(tokio::sync::Barrier::new(DELIVERIES));

    // Act: 50 deliveries of the same payload, released together.
    let tasks: Vec<_> = (0..DELIVERIES)
        .map(|_| {
            let (client, address, payload, start) =
                (client.clone(), app.address.clone(), payload.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                deliver(&client, &address, &payload).await
            })
        })
        .collect();
    let mut answers: Vec<Answer> = Vec::new();
    for task in tasks {
        let answer = tokio::time::timeout(Duration::from_secs(30), task).await.expect("answered within 30 s");
        answers.push(answer.expect("task").expect("the server answers"));
    }

    // Assert
    let fresh = answers.iter().filter(|(s, _, b)| *s == 200 && b["replayed"] == false).count();
    let replayed = answers.iter().filter(|(s, _, b)| *s == 200 && b["replayed"] == true).count();
    let busy = answers.iter().filter(|a| is_busy(a)).count();
    println!("50 concurrent deliveries: {fresh} fresh 200, {replayed} replayed 200, {busy} 409");
    assert_eq!(fresh, 1, "exactly one delivery does the handoff: {answers:?}");
    assert_eq!(fresh + replayed + busy, DELIVERIES, "the others are 409 + Retry-After or replays: {answers:?}");
    let ids: HashSet<&Value> = answers.iter().map(|(_, _, b)| &b["handoffId"]).collect();
    assert_eq!(ids.len(), 1, "one handoff id for all: {ids:?}");
    let sim = app.sim.sim();
    assert_eq!(sim.count(Endpoint::Replace), 1, "exactly one transfer");
    assert_eq!(sim.count(Endpoint::PatchAttributes), 1, "the context is written once");
    assert!(sim.conversation(conversation).is_some_and(|c| in_queue(&c, BILLING_QUEUE)), "not in the Billing queue");
    app.stop().await;
}

/// One conversation of the crash test.
#[derive(Debug, Clone, Copy)]
struct Handoff {
    conversation: Uuid,
    reason: &'static str,
}

impl Handoff {
    /// Every third one is deferred.
    fn nth(i: usize) -> Self {
        Self { conversation: Uuid::new_v4(), reason: if i % 3 == 2 { DEFERRED } else { ADMITTED } }
    }

    fn payload(&self) -> Value {
        sample_payload(self.conversation, self.reason)
    }

    fn queue(&self) -> Uuid {
        if self.reason == DEFERRED {
            EMPTY_QUEUE
        } else {
            BILLING_QUEUE
        }
    }

    fn tag(&self) -> String {
        format!("bot-handoff:{}", self.reason)
    }
}

/// Delivers every handoff at once to `address` (each after `stagger × its index`), counting 2xx
/// answers in `answered` as they arrive. Each result is the answer or the transport error.
fn deliver_burst(
    client: &reqwest::Client,
    address: &str,
    handoffs: &[Handoff],
    stagger: Duration,
    answered: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Delivered>> {
    handoffs
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (client, address, h, answered) = (client.clone(), address.to_owned(), *h, answered.clone());
            let delay = stagger * u32::try_from(i).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let result = deliver(&client, &address, &h.payload()).await.map_err(|e| e.to_string());
                if matches!(&result, Ok((200 | 202, _, _))) {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                (h, result)
            })
        })
        .collect()
}

/// Waits (at most 30 s in all) for every task of a burst.
async fn collect(tasks: Vec<tokio::task::JoinHandle<Delivered>>) -> Vec<Delivered> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    for task in tasks {
        let joined = tokio::time::timeout_at(deadline, task).await.expect("every delivery ends within 30 s");
        out.push(joined.expect("task"));
    }
    out
}

/// Reads `handoff_outbox_backlog` from `/metrics`.
async fn outbox_backlog(client: &reqwest::Client, address: &str) -> Option<u64> {
    let text = client.get(format!("{address}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("handoff_outbox_backlog ")).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_burst_loses_nothing_and_transfers_nothing_twice() {
    // Arrange: the simulator in this process (20 ms a call, so handoffs are in flight), the binary as
    // a child on a SQLite file. Short upstream budgets and a 2 s lease (HANDOFF_LEASE_SECS), so work
    // the dead process left is resumed quickly.
    tokio::task::spawn_blocking(crate::helpers::handoff_binary).await.expect("the handoff binary is built");
    let test_started = Instant::now();
    let sim_handle = genesys_sim::spawn(SimConfig::default()).await.expect("simulator");
    let sim = sim_handle.sim().clone();
    sim.set_latency(Duration::from_millis(20));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = base_env(&sim_handle.base_url());
    for (k, v) in [
        ("DATABASE_URL", sqlite_url(dir.path())),
        ("GENESYS_TIMEOUT_MS", "500".to_owned()),
        ("GENESYS_BUDGET_MS", "1000".to_owned()),
        ("HANDOFF_RECHECK_SECS", "1".to_owned()),
        ("HANDOFF_LEASE_SECS", "2".to_owned()),
    ] {
        env.insert(k.to_owned(), v);
    }
    let client = test_client();
    let wave_a: Vec<Handoff> = (0..20).map(Handoff::nth).collect();
    let wave_b: Vec<Handoff> = (0..40).map(Handoff::nth).collect();
    let all: Vec<Handoff> = wave_a.iter().chain(&wave_b).copied().collect();
    let mut first = ServeProcess::start(&env, dir.path()).await;

    // Act 1: wave A is answered and its analytics delivered before anything goes wrong.
    let none = Arc::new(AtomicUsize::new(0));
    let answers_a = collect(deliver_burst(&client, &first.address, &wave_a, Duration::ZERO, &none)).await;
    let transferred_a: Vec<Handoff> =
        answers_a.iter().filter(|(_, r)| matches!(r, Ok((200, _, _)))).map(|(h, _)| *h).collect();
    let tagged_deadline = Instant::now() + Duration::from_secs(15);
    while !transferred_a.iter().all(|h| sim.external_tag(h.conversation).is_some()) && Instant::now() < tagged_deadline
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The worker marks an event delivered right after its PUT, within the tick that sent it: two
    // more completed ticks after every tag arrived make the backlog reading final.
    assert!(worker_ticked(&client, &first.address, 2, Duration::from_secs(15)).await, "the worker stopped");
    assert_eq!(
        outbox_backlog(&client, &first.address).await,
        Some(0),
        "wave A's analytics were never all delivered before the crash"
    );

    // Act 2: wave B as a burst, SIGKILL once a third of it has been answered.
    let answered_b = Arc::new(AtomicUsize::new(0));
    let tasks_b = deliver_burst(&client, &first.address, &wave_b, Duration::from_millis(5), &answered_b);
    let kill_deadline = Instant::now() + Duration::from_secs(15);
    while answered_b.load(Ordering::SeqCst) < wave_b.len() / 3 && Instant::now() < kill_deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill();
    let answers_b = collect(tasks_b).await;
    let calls_at_kill = sim.calls();

    // Act 3: restart on the same file, open the after-hours queue, let the workers finish.
    let second = ServeProcess::start(&env, dir.path()).await;
    let restarted_at = Instant::now();
    let mut left_in_flight = 0;
    for h in &all {
        let stage = newest_record(&client, &second.address, h.conversation).await["stage"].clone();
        if ["received", "context_written", "transfer_pending"].iter().any(|s| stage == *s) {
            left_in_flight += 1;
        }
    }
    assert!(sim.set_queue_capacity(EMPTY_QUEUE, 5, 0, 10), "the after-hours queue exists");
    let settle_deadline = Instant::now() + Duration::from_secs(120);
    let mut unsettled: Vec<(Uuid, Value)> = Vec::new();
    loop {
        unsettled.clear();
        for h in &all {
            let record = newest_record(&client, &second.address, h.conversation).await;
            let settled = match record["stage"].as_str() {
                None => true,
                Some("transferred") => sim.external_tag(h.conversation).is_some(),
                Some(_) => false,
            };
            if !settled {
                unsettled.push((h.conversation, record["stage"].clone()));
            }
        }
        if unsettled.is_empty() || Instant::now() >= settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settle_time = restarted_at.elapsed();
    let mut had_record = HashSet::new();
    let mut not_transferred = Vec::new();
    for h in &all {
        let record = newest_record(&client, &second.address, h.conversation).await;
        if !record.is_null() {
            had_record.insert(h.conversation);
            if record["stage"] != "transferred" {
                not_transferred.push((h.conversation, record["stage"].clone(), record["lastError"].clone()));
            }
        }
    }
    let calls = sim.calls();

    // Act 4: every request delivered again to the restarted instance.
    let again = collect(deliver_burst(&client, &second.address, &all, Duration::ZERO, &none)).await;
    let calls_after = sim.calls();

    // Assert
    let answered: Vec<(Handoff, Answer)> =
        answers_a.iter().chain(&answers_b).filter_map(|(h, r)| r.as_ref().ok().map(|a| (*h, a.clone()))).collect();
    let unexpected: Vec<_> = answered.iter().filter(|(_, (s, _, _))| !matches!(s, 200 | 202)).collect();
    assert!(unexpected.is_empty(), "distinct conversations are answered 200 or 202: {unexpected:?}");
    let unanswered_b = answers_b.iter().filter(|(_, r)| r.is_err()).count();
    assert!(unanswered_b > 0, "the kill was not mid-burst: all of wave B was answered");
    assert!(unsettled.is_empty(), "not finished {settle_time:?} after the restart: {unsettled:?}");
    assert!(not_transferred.is_empty(), "every recorded handoff ends transferred: {not_transferred:?}");

    let replaces = |h: &Handoff| calls_for(&calls, Endpoint::Replace, h.conversation);
    let puts = |h: &Handoff| calls_for(&calls, Endpoint::PutTags, h.conversation);
    for (h, (status, _, body)) in &answered {
        let conversation = sim.conversation(h.conversation);
        assert!(
            conversation.as_ref().is_some_and(|c| in_queue(c, h.queue())),
            "answered {status} ({body}) but {} is not in queue {}: {conversation:?}",
            h.conversation,
            h.queue()
        );
        assert_eq!(replaces(h), 1, "answered {status}: {} replace calls for {}", replaces(h), h.conversation);
    }
    for h in &all {
        assert!(replaces(h) <= 1, "{} replace calls for {}", replaces(h), h.conversation);
    }
    let mut put_histogram: HashMap<usize, usize> = HashMap::new();
    for h in all.iter().filter(|h| had_record.contains(&h.conversation)) {
        assert!(
            sim.conversation(h.conversation).is_some_and(|c| in_queue(&c, h.queue())),
            "{} not queued",
            h.conversation
        );
        assert_eq!(sim.external_tag(h.conversation), Some(h.tag()), "tag of {}", h.conversation);
        *put_histogram.entry(puts(h)).or_default() += 1;
        assert!((1..=2).contains(&puts(h)), "{} tag PUTs for {}", puts(h), h.conversation);
    }
    for h in &transferred_a {
        assert_eq!(puts(h), 1, "finished before the crash, yet {} tag PUTs for {}", puts(h), h.conversation);
    }
    // Deferred handoffs were transferred only after the restart, with no crash in between.
    for (h, _) in answered.iter().filter(|(_, (s, _, _))| *s == 202) {
        assert_eq!(puts(h), 1, "transferred after the restart, yet {} tag PUTs for {}", puts(h), h.conversation);
    }

    let bad_again: Vec<_> = again
        .iter()
        .filter(|(h, r)| match r {
            Ok((200, _, body)) => had_record.contains(&h.conversation) != (body["replayed"] == true),
            _ => true,
        })
        .collect();
    assert!(bad_again.is_empty(), "re-deliveries: 200, replayed exactly when a record existed: {bad_again:?}");
    for h in &all {
        let before = calls_for(&calls, Endpoint::Replace, h.conversation);
        let after = calls_for(&calls_after, Endpoint::Replace, h.conversation);
        if had_record.contains(&h.conversation) {
            assert_eq!(after, before, "a re-delivery transferred {} again", h.conversation);
        }
        assert_eq!(after, 1, "{} replace calls for {} after re-delivery", after, h.conversation);
    }

    let answered_b_count = answers_b.len() - unanswered_b;
    let replaced_before_kill =
        all.iter().filter(|h| calls_for(&calls_at_kill, Endpoint::Replace, h.conversation) > 0).count();
    println!(
        "crash test: wave A {} answered; wave B {answered_b_count} answered, {unanswered_b} unanswered at the kill; \
         {replaced_before_kill} transferred before the kill; {left_in_flight} records left in flight; settled {settle_time:?} after restart; \
         tag PUTs per transferred conversation {{count: conversations}} = {put_histogram:?}; total {:?}",
        answers_a.len(),
        test_started.elapsed()
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_analytics_event_in_flight_at_a_crash_is_delivered_after_the_restart() {
    // Arrange: the tag PUT is applied at once but answered only after 30 s, so the worker is
    // waiting for its answer when the process dies: the event is not marked delivered.
    tokio::task::spawn_blocking(crate::helpers::handoff_binary).await.expect("the handoff binary is built");
    let sim_handle = genesys_sim::spawn(SimConfig::default()).await.expect("simulator");
    let sim = sim_handle.sim().clone();
    sim.push_fault(Fault::new(Endpoint::PutTags, FaultKind::ApplyThenDelay(Duration::from_secs(30))));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = base_env(&sim_handle.base_url());
    env.insert("DATABASE_URL".into(), sqlite_url(dir.path()));
    // The shortest lease the 4 s budget allows; the outbox claim lease is the same.
    env.insert("HANDOFF_LEASE_SECS".into(), "8".into());
    let client = test_client();
    let handoff = Handoff::nth(0);
    let mut first = ServeProcess::start(&env, dir.path()).await;
    let (status, _, body) = deliver(&client, &first.address, &handoff.payload()).await.expect("answered");
    // Signal: the PUT reached Genesys (the simulator logs it on arrival); its answer is pending.
    let put_deadline = Instant::now() + Duration::from_secs(15);
    while sim.count(Endpoint::PutTags) == 0 && Instant::now() < put_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let puts_before_kill = sim.count(Endpoint::PutTags);
    first.kill();
    let killed_at = Instant::now();

    // Act: restart on the same file; wait (bounded) until the restarted instance re-delivered the
    // event and its outbox is empty. The backlog gauge is set by the worker, so it is read only
    // once the restarted worker has completed two ticks.
    let second = ServeProcess::start(&env, dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(100);
    let mut backlog = None;
    while Instant::now() < deadline {
        if sim.count(Endpoint::PutTags) >= 2 && worker_ticks(&client, &second.address).await >= 2 {
            backlog = outbox_backlog(&client, &second.address).await;
            if backlog == Some(0) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered_after = killed_at.elapsed();

    // Assert
    assert_eq!(status, 200, "{body}");
    assert_eq!(puts_before_kill, 1, "arrangement: the tag PUT should be in flight at the kill");
    assert_eq!(backlog, Some(0), "the event was not delivered within {delivered_after:?} of the restart");
    let calls = sim.calls();
    let puts = calls_for(&calls, Endpoint::PutTags, handoff.conversation);
    assert_eq!(sim.external_tag(handoff.conversation), Some(handoff.tag()));
    assert_eq!(puts, 2, "the unacknowledged PUT is delivered again after the restart, once");
    assert_eq!(calls_for(&calls, Endpoint::Replace, handoff.conversation), 1);
    println!("analytics in flight at a SIGKILL: delivered {delivered_after:?} after the kill, {puts} tag PUT(s)");
    drop(second);
}

/// Regression: a handoff can legitimately run longer than its lease (locate, capacity, fallback
/// capacity, context write, transfer and a read-back are each bounded by the budget). The lease is
/// renewed when the transfer starts and every save is fenced on `attempts`, so a worker that took
/// the record over early and the slow first owner never both transfer, and a finished record is
/// never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handoff_that_outlives_its_lease_is_neither_transferred_twice_nor_rewritten() {
    // Arrange: the shortest budget and lease (1 s, 2 s). Each upstream call of the first delivery
    // takes 900 ms (inside the budget), so that handoff runs about 3.6 s: longer than its first
    // lease (2 s), which the `TransferPending` save renews about 1.8 s in. The webhook answers it 503
    // `timeout` after 1 s, and the caller retries once the first lease has lapsed.
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(dir.path());
    let app = spawn_app_with(SimConfig::default(), |env| {
        env.insert("DATABASE_URL".into(), url);
        env.insert("GENESYS_TIMEOUT_MS".into(), "1000".into());
        env.insert("GENESYS_BUDGET_MS".into(), "1000".into());
        env.insert("HANDOFF_LEASE_SECS".into(), "2".into());
        env.insert("HANDOFF_REQUEST_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    let sim = app.sim.sim().clone();
    for endpoint in
        [Endpoint::GetConversation, Endpoint::ObservationsQuery, Endpoint::PatchAttributes, Endpoint::Replace]
    {
        sim.push_fault(Fault::new(endpoint, FaultKind::Latency(Duration::from_millis(900))));
    }
    let conversation = Uuid::new_v4();
    let payload = sample_payload(conversation, ADMITTED);
    let lease = Duration::from_secs(2);
    let started = tokio::time::Instant::now();

    // Act
    let first = {
        let (address, payload) = (app.address.clone(), payload.clone());
        tokio::spawn(async move { deliver(&test_client(), &address, &payload).await })
    };
    // The retry's moment is the scenario (just after the first lease's end), not a wait for a signal.
    tokio::time::sleep_until(started + lease + Duration::from_millis(200)).await;
    let retry = deliver(&test_client(), &app.address, &payload).await.expect("the retry is answered");
    let first = tokio::time::timeout(Duration::from_secs(30), first).await.expect("first answered").expect("task");
    // Signal: both attempts reported their outcome (the first one once its transfer call ended).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut reports = 0;
    while reports < 2 && Instant::now() < deadline {
        reports = outcome_reports(&app.client, &app.address).await;
        if reports < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let record = newest_record(&app.client, &app.address, conversation).await;

    // Assert
    let replace_statuses: Vec<u16> =
        sim.calls().iter().filter(|c| c.endpoint == Endpoint::Replace).map(|c| c.status).collect();
    let history: Vec<String> = record["history"]
        .as_array()
        .map(|h| h.iter().map(|e| format!("{} {}", e["stage"], e["note"])).collect())
        .unwrap_or_default();
    println!(
        "a handoff outliving its lease: first answered {:?}, retry answered {} {}, replace statuses {replace_statuses:?}, \
         record {}, {reports} outcome reports; history {history:#?}",
        first.as_ref().map(|a| a.0),
        retry.0,
        retry.2,
        record["stage"]
    );
    assert!(reports >= 2, "the first attempt never reported its outcome");
    assert_eq!(replace_statuses.len(), 1, "transferred more than once: replace statuses {replace_statuses:?}");
    assert_eq!(record["stage"], "transferred", "the finished record was rewritten: {history:#?}");
    assert!(is_busy(&retry) || (retry.0 == 200 && retry.2["replayed"] == true), "retry: {retry:?}");
    app.stop().await;
}

/// Outcome reports so far: the sum of `handoff_handoffs_total` in `/metrics`.
async fn outcome_reports(client: &reqwest::Client, address: &str) -> u64 {
    let Ok(resp) = client.get(format!("{address}/metrics")).send().await else { return 0 };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("handoff_handoffs_total{"))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}
