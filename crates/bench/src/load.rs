//! The load generator: C worker tasks share one keep-alive `reqwest` pool and take handoff numbers
//! from a shared counter until N are sent or the deadline passes. Each worker keeps its own
//! histogram and counters; they are merged at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use uuid::Uuid;

/// The webhook secret the service is started with.
pub(crate) const SECRET: &str = "bench-webhook-secret";
/// A reason that routes to the target queue (Support) and one routed to Billing.
pub(crate) const REASONS: [&str; 2] = ["customer_requested_agent", "complex_billing_dispute"];
/// Transport-error kind of a request cut off by `--max-seconds`.
pub(crate) const CUT: &str = "cut off by --max-seconds";
/// Highest latency the histogram holds, µs (a minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// One phase of load.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `http://127.0.0.1:PORT/webhooks/bot-handoff`.
    pub(crate) url: String,
    /// Handoffs to send.
    pub(crate) requests: usize,
    /// Workers (requests in flight).
    pub(crate) concurrency: usize,
    /// No request starts after this.
    pub(crate) deadline: Instant,
    /// Open loop at this many handoffs per second (`None`: closed loop, `concurrency` workers).
    pub(crate) rate: Option<f64>,
}

/// How a phase went.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Wall time from the first request to the last answer.
    pub(crate) elapsed: Duration,
    /// Latency of 2xx answers, µs.
    pub(crate) latency_us: Histogram<u64>,
    /// 200 `transferred`, not replayed.
    pub(crate) transferred: u64,
    /// 202 `deferred`.
    pub(crate) deferred: u64,
    /// 200 with `replayed: true`.
    pub(crate) replayed: u64,
    /// Any other 2xx body.
    pub(crate) unexpected_2xx: u64,
    /// Non-2xx answers by status.
    pub(crate) by_status: BTreeMap<u16, u64>,
    /// Requests that got no answer, by kind (`timeout`, `connect`, `body`, …).
    pub(crate) transport: BTreeMap<String, u64>,
    /// Requests never sent because the deadline passed.
    pub(crate) not_started: u64,
    /// 503 answers that carried a `Retry-After` (also counted in `by_status`).
    pub(crate) unavailable_with_retry_after: u64,
    /// Every 2xx handoff: conversation, when it was sent, when its answer was read.
    pub(crate) timeline: Vec<Timed>,
}

/// When one handoff was sent and answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timed {
    pub(crate) conversation: Uuid,
    pub(crate) sent: std::time::Instant,
    pub(crate) answered: std::time::Instant,
    /// Answered 200 `transferred` (not deferred).
    pub(crate) transferred: bool,
}

impl Outcome {
    /// No requests.
    pub(crate) fn empty() -> Self {
        Self::new()
    }

    fn new() -> Self {
        Self {
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
            transferred: 0,
            deferred: 0,
            replayed: 0,
            unexpected_2xx: 0,
            by_status: BTreeMap::new(),
            transport: BTreeMap::new(),
            not_started: 0,
            unavailable_with_retry_after: 0,
            timeline: Vec::new(),
        }
    }

    /// Requests answered (any status) or failed in transport.
    pub(crate) fn finished(&self) -> u64 {
        self.latency_us.len() + self.by_status.values().sum::<u64>() + self.transport.values().sum::<u64>()
    }

    /// Non-2xx answers plus transport failures.
    pub(crate) fn errors(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.transport.values().sum::<u64>()
    }

    fn merge(&mut self, other: Outcome) {
        let _ = self.latency_us.add(&other.latency_us);
        self.transferred += other.transferred;
        self.deferred += other.deferred;
        self.replayed += other.replayed;
        self.unexpected_2xx += other.unexpected_2xx;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.transport {
            *self.transport.entry(k).or_insert(0) += v;
        }
        self.not_started += other.not_started;
        self.unavailable_with_retry_after += other.unavailable_with_retry_after;
        self.timeline.extend(other.timeline);
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds: 1 µs … 60 s, 3 significant digits")
}

/// The shared keep-alive client: HTTP/1.1, no proxy, one idle connection per worker kept.
///
/// # Errors
/// When the TLS-free client cannot be built.
pub(crate) fn client(concurrency: usize, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(300))
        .timeout(timeout)
        .build()
        .context("failed to build the load client")
}

/// A handoff payload (the tutorial's sample) for `conversation`; even numbers go to the target
/// queue, odd ones to Billing.
pub(crate) fn payload(conversation: Uuid, n: usize) -> String {
    let reason = REASONS[n % REASONS.len()];
    format!(
        r#"{{"conversationId":"{conversation}","guestInfo":{{"id":"guest-{n}","name":"Jane Doe","email":"jane.doe@example.com"}},"handoffReason":"{reason}","customContext":{{"attempted_resolution":"refund_policy_explained","sentiment_score":"0.32","preferred_language":"en-US"}}}}"#
    )
}

/// Sends `plan.requests` handoffs numbered from `first` (the number picks the reason; the
/// conversation id is random, so every handoff is new).
pub(crate) async fn run(client: &reqwest::Client, plan: &Plan, first: usize) -> Outcome {
    if let Some(rate) = plan.rate {
        return open_loop(client, plan, first, rate).await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency.min(plan.requests.max(1)) {
        let (client, plan, next) = (client.clone(), plan.clone(), next.clone());
        workers.spawn(async move { worker(&client, &plan, &next, first).await });
    }
    let mut total = Outcome::new();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(outcome) => total.merge(outcome),
            Err(e) => *total.transport.entry(format!("worker failed: {e}")).or_insert(0) += 1,
        }
    }
    total.elapsed = started.elapsed();
    total
}

async fn worker(client: &reqwest::Client, plan: &Plan, next: &AtomicUsize, first: usize) -> Outcome {
    let mut out = Outcome::new();
    // Bounded by the shared counter (at most `plan.requests` iterations over all workers) and the deadline.
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.requests {
            break;
        }
        if Instant::now() >= plan.deadline {
            out.not_started += 1;
            continue;
        }
        send_one(client, plan, first + i, &mut out).await;
    }
    out
}

/// Open loop: request `i` starts at `i / rate` seconds, whether or not earlier ones were answered
/// (each in its own task), until `plan.requests` are sent or the deadline passes.
async fn open_loop(client: &reqwest::Client, plan: &Plan, first: usize, rate: f64) -> Outcome {
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut total = Outcome::new();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..plan.requests {
        let at = started + gap.mul_f64(i as f64);
        if at >= plan.deadline {
            total.not_started += (plan.requests - i) as u64;
            break;
        }
        tokio::time::sleep_until(at).await;
        let (client, plan) = (client.clone(), plan.clone());
        sends.spawn(async move {
            let mut out = Outcome::new();
            send_one(&client, &plan, first + i, &mut out).await;
            out
        });
    }
    while let Some(joined) = sends.join_next().await {
        match joined {
            Ok(outcome) => total.merge(outcome),
            Err(e) => *total.transport.entry(format!("sender failed: {e}")).or_insert(0) += 1,
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Sends handoff number `n` (a new conversation) and counts its answer into `out`.
async fn send_one(client: &reqwest::Client, plan: &Plan, n: usize, out: &mut Outcome) {
    let conversation = Uuid::new_v4();
    let body = payload(conversation, n);
    let sent = Instant::now();
    let exchange = async {
        let resp = client
            .post(&plan.url)
            .bearer_auth(SECRET)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
        resp.bytes().await.map(|b| (status, retry_after, b))
    };
    let (status, retry_after, bytes) = match tokio::time::timeout_at(plan.deadline, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            *out.transport.entry(transport_kind(&e).to_owned()).or_insert(0) += 1;
            return;
        }
        Err(_) => {
            *out.transport.entry(CUT.to_owned()).or_insert(0) += 1;
            return;
        }
    };
    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US);
    if !status.is_success() {
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && retry_after {
            out.unavailable_with_retry_after += 1;
        }
        *out.by_status.entry(status.as_u16()).or_insert(0) += 1;
        return;
    }
    let _ = out.latency_us.record(micros);
    let answer = classify(&bytes);
    out.timeline.push(Timed {
        conversation,
        sent: sent.into_std(),
        answered: std::time::Instant::now(),
        transferred: matches!(answer, Answer::Transferred | Answer::Replayed),
    });
    match answer {
        Answer::Transferred => out.transferred += 1,
        Answer::Replayed => out.replayed += 1,
        Answer::Deferred => out.deferred += 1,
        Answer::Other => out.unexpected_2xx += 1,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Transferred,
    Replayed,
    Deferred,
    Other,
}

fn classify(body: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        status: Option<&'a str>,
        replayed: Option<bool>,
    }
    match serde_json::from_slice::<Body<'_>>(body) {
        Ok(Body { status: Some("transferred"), replayed: Some(true) }) => Answer::Replayed,
        Ok(Body { status: Some("transferred"), .. }) => Answer::Transferred,
        Ok(Body { status: Some("deferred"), .. }) => Answer::Deferred,
        _ => Answer::Other,
    }
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_valid_json_with_the_conversation_and_alternating_reasons() {
        // Arrange
        let id = Uuid::new_v4();

        // Act
        let even: serde_json::Value = serde_json::from_str(&payload(id, 4)).unwrap();
        let odd: serde_json::Value = serde_json::from_str(&payload(id, 5)).unwrap();

        // Assert
        assert_eq!(even["conversationId"], id.to_string());
        assert_eq!(even["handoffReason"], REASONS[0]);
        assert_eq!(odd["handoffReason"], REASONS[1]);
        assert_eq!(odd["customContext"]["sentiment_score"], "0.32");
    }

    #[test]
    fn answers_are_classified_by_status_and_replay() {
        assert_eq!(classify(br#"{"status":"transferred","replayed":false}"#), Answer::Transferred);
        assert_eq!(classify(br#"{"status":"transferred","replayed":true}"#), Answer::Replayed);
        assert_eq!(classify(br#"{"status":"deferred","retryAfterSeconds":15}"#), Answer::Deferred);
        assert_eq!(classify(b"not json"), Answer::Other);
    }

    #[test]
    fn merged_outcomes_add_up() {
        // Arrange
        let mut a = Outcome::new();
        let mut b = Outcome::new();
        a.latency_us.record(1_000).unwrap();
        b.latency_us.record(3_000).unwrap();
        b.by_status.insert(503, 2);
        b.transport.insert("timeout".to_owned(), 1);

        // Act
        a.merge(b);

        // Assert
        assert_eq!((a.finished(), a.errors(), a.latency_us.len()), (5, 3, 2));
    }
}
