//! One benchmark run, start to finish: ledger, simulator, service, warm-up, measured phase, outbox
//! drain, teardown, report.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use genesys_sim::{Endpoint, BILLING_QUEUE, SUPPORT_QUEUE};

use crate::args::{Args, LedgerKind};
use crate::ledger::Ledger;
use crate::load::{self, Outcome, Plan, REASONS, SECRET};
use crate::machine::{self, CpuTimes, MachineInfo};
use crate::report::{
    BenchUsage, EndpointCalls, Errors, Latency, MachineCpu, Outcomes, Phases, RealizedLatency, Report, RunConfig,
    ServiceUsage, Throughput, UpstreamReport,
};
use crate::service::Service;
use crate::upstream::{capacity_queries, Counts, Upstream, SIM_THREAD};

/// Thread name of the load generator's runtime.
const CLIENT_THREAD: &str = "bench-client";
/// Longest wait for the service's ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace the service gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(25);
/// How often the drain looks at the tag count.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Runs the benchmark `args` describes, prints the table, writes the JSON and returns the exit
/// code: 0 when every request was answered 2xx `transferred` within the cap, 1 otherwise (targets
/// never fail a run), 2 when the run could not be set up.
pub fn run(args: Args) -> ExitCode {
    let args = args.effective();
    if let Some(count) = args.insights {
        return match crate::insights::run(&args, count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("handoff-bench: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run_inner(&args) {
        Ok(report) => {
            print!("{}", report.render());
            if let Some(path) = &args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => {
                        if let Err(e) = std::fs::write(path, json + "\n") {
                            eprintln!("handoff-bench: failed to write {}: {e}", path.display());
                            return ExitCode::from(2);
                        }
                    }
                    Err(e) => {
                        eprintln!("handoff-bench: failed to render the JSON report: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            // Under an allowance (`--sim-rate-limit`), a 503 with Retry-After is the promised answer
            // to load above it; anything else is an error.
            let excused =
                if report.config.sim_rate_limit.is_some() { report.outcomes.unavailable_with_retry_after } else { 0 };
            let clean = report.complete
                && report.errors.total == excused
                && report.errors.warmup == 0
                && report.outcomes.transferred + excused == report.config.requests as u64
                && report.upstream.doubled_transfers == 0
                && report.upstream.lost_transfers == 0;
            if clean {
                ExitCode::SUCCESS
            } else {
                eprintln!("handoff-bench: the run had errors or did not finish (see above)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("handoff-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: &Args) -> anyhow::Result<Report> {
    let clk_tck = machine::clock_ticks_per_second();
    let machine = MachineInfo::read(clk_tck);
    let binary = crate::service::locate_binary(args.binary.as_deref(), args.no_build)?;
    // The cap starts after the (possibly long) build.
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()
        .context("failed to build the load generator runtime")?;
    let ledger = client_rt.block_on(Ledger::prepare(args.ledger, &args.postgres_url))?;
    let result = measure(args, &binary, &ledger, &client_rt, clk_tck, machine, deadline);
    let sqlite_kib = ledger.sqlite_kib();
    let teardown = client_rt.block_on(ledger.teardown());
    client_rt.shutdown_timeout(Duration::from_secs(2));
    let mut report = result?;
    teardown?;
    report.service.sqlite_kib = sqlite_kib;
    Ok(report)
}

/// Readings taken at a phase boundary.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    service_ticks: u64,
    own_ticks: u64,
    threads: BTreeMap<String, u64>,
    cpu: CpuTimes,
    counts: Counts,
    /// The PostgreSQL server's processes (0 unless the ledger is PostgreSQL).
    database_ticks: u64,
}

impl Snapshot {
    fn take(pid: u32, upstream: &Upstream, postgres: bool) -> Self {
        Self {
            database_ticks: if postgres { machine::ticks_of_processes_named("postgres").0 } else { 0 },
            at: Instant::now(),
            service_ticks: machine::process_ticks(pid).unwrap_or(0),
            own_ticks: machine::own_ticks().unwrap_or(0),
            threads: machine::own_thread_ticks(),
            cpu: CpuTimes::now().unwrap_or_default(),
            counts: upstream.counts(),
        }
    }

    fn thread_ticks(&self, name: &str) -> u64 {
        self.threads.get(name).copied().unwrap_or(0)
    }
}

fn service_env(args: &Args, sim_url: &str, database_url: String) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = [
        ("GENESYS_CLIENT_ID", "sim-client".to_owned()),
        ("GENESYS_CLIENT_SECRET", "sim-secret".to_owned()),
        ("GENESYS_BASE_URL", sim_url.to_owned()),
        ("GENESYS_LOGIN_BASE_URL", sim_url.to_owned()),
        ("TARGET_QUEUE_ID", SUPPORT_QUEUE.to_string()),
        ("HANDOFF_ROUTES", format!("{}={BILLING_QUEUE}", REASONS[1])),
        ("WEBHOOK_SECRET", SECRET.to_owned()),
        ("DATABASE_URL", database_url),
        ("BIND_ADDR", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        // The ready line (info, handoff_app::startup) carries the port; keep it whatever the level.
        ("RUST_LOG", format!("{},handoff_app::startup=info", args.rust_log)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in &args.service_env {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}

/// The commit the workspace is at, `+dirty` with uncommitted changes to tracked files, `unknown`
/// without git. Read-only: `GIT_OPTIONAL_LOCKS=0` keeps `git status` from refreshing the index.
fn source_version() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .env("GIT_OPTIONAL_LOCKS", "0")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.trim().is_empty());
            format!("{}{}", commit.trim(), if dirty { "+dirty" } else { "" })
        }
        None => "unknown".to_owned(),
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[allow(clippy::too_many_lines)]
fn measure(
    args: &Args,
    binary: &Path,
    ledger: &Ledger,
    client_rt: &tokio::runtime::Runtime,
    clk_tck: u64,
    machine: MachineInfo,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let ms = |ticks: u64| ticks as f64 * 1000.0 / clk_tck as f64;
    let handoffs_total = args.requests + args.warmup;
    let upstream = Upstream::start(
        Duration::from_millis(args.latency_ms),
        args.sim_threads,
        (handoffs_total * 6).max(genesys_sim::DEFAULT_MAX_LOGGED_CALLS),
        args.sim_rate_limit,
        !args.no_notifications,
    )?;
    let database_url = match &args.database_params {
        Some(params) => format!("{}?{params}", ledger.database_url()?),
        None => ledger.database_url()?,
    };
    let env = service_env(args, &upstream.base_url(), database_url);
    let service = Service::start(binary, &env, &ledger.workdir(), READY_TIMEOUT.min(remaining(deadline)))?;
    let pid = service.pid();
    let postgres = args.ledger == LedgerKind::Postgres;
    let ready = Snapshot::take(pid, &upstream, postgres);
    let url = format!("http://127.0.0.1:{}/webhooks/bot-handoff", service.port());
    let client = load::client(args.concurrency, Duration::from_secs(args.request_timeout_secs))?;
    let tokio_deadline = tokio::time::Instant::from_std(deadline);

    let warm_plan =
        Plan { url, requests: args.warmup, concurrency: args.concurrency, deadline: tokio_deadline, rate: args.rate };
    let warm = if args.warmup > 0 { client_rt.block_on(load::run(&client, &warm_plan, 0)) } else { Outcome::empty() };

    // The warm-up's tags land before the measured phase starts, so its calls are its own.
    let warm_transferred = warm.transferred + warm.replayed;
    let warm_drain = Instant::now() + Duration::from_secs(args.drain_seconds).min(remaining(deadline));
    while Instant::now() < warm_drain && upstream.counts().get(Endpoint::PutTags) < warm_transferred {
        std::thread::sleep(DRAIN_POLL);
    }
    let before = Snapshot::take(pid, &upstream, postgres);
    let plan = Plan { requests: args.requests, ..warm_plan };
    let measured = client_rt.block_on(load::run(&client, &plan, args.warmup));
    let after = Snapshot::take(pid, &upstream, postgres);

    // Drain: wait (bounded) for the outbox to tag every transfer.
    let transferred_total = warm.transferred + warm.replayed + measured.transferred + measured.replayed;
    let drain_until = Instant::now() + Duration::from_secs(args.drain_seconds).min(remaining(deadline));
    while Instant::now() < drain_until && upstream.counts().get(Endpoint::PutTags) < transferred_total {
        std::thread::sleep(DRAIN_POLL);
    }
    let end = Snapshot::take(pid, &upstream, postgres);
    let (hwm_kib, rss_kib) = machine::memory_kib(pid);
    let calls = upstream.calls();
    let log = service.log_stats();
    let startup = service.ready_after();
    drop(client);
    let exit = service.stop(STOP_GRACE);
    let window = (upstream.offset(before.at), upstream.offset(after.at));
    let capacity = capacity_queries(&calls, window);
    let legs = crate::stages::legs(&calls, &measured.timeline, |i| upstream.offset(i));
    let transfers = crate::upstream::transfers(&calls, &measured.timeline);
    upstream.shutdown();

    // Measured phase.
    // Throughput uses the load's own clock; CPU shares use the window between the snapshots
    // whose tick counters they difference.
    let measured_s = measured.elapsed.as_secs_f64();
    let window_s = after.at.duration_since(before.at).as_secs_f64();
    let finished = measured.finished();
    let ok = measured.latency_us.len();
    let per = |x: f64, n: u64| if n == 0 { 0.0 } else { x / n as f64 };
    let service_ms = ms(after.service_ticks.saturating_sub(before.service_ticks));
    let own_ms = ms(after.own_ticks.saturating_sub(before.own_ticks));
    let sim_ms = ms(after.thread_ticks(SIM_THREAD).saturating_sub(before.thread_ticks(SIM_THREAD)));
    let client_ms = ms(after.thread_ticks(CLIENT_THREAD).saturating_sub(before.thread_ticks(CLIENT_THREAD)));
    let cpu = before.cpu.delta(after.cpu);
    let busy_ms = ms(cpu.busy_ticks());
    let database_ms = ms(after.database_ticks.saturating_sub(before.database_ticks));

    // Whole run.
    let counts = end.counts.clone();
    let handoffs = warm.latency_us.len() + ok;
    let tags_pending = transferred_total.saturating_sub(counts.get(Endpoint::PutTags));
    let by_endpoint = counts
        .0
        .iter()
        .map(|(k, &count)| (k.clone(), EndpointCalls { count, per_handoff: per(count as f64, handoffs) }))
        .collect();
    let q = |quantile: f64| measured.latency_us.value_at_quantile(quantile) as f64 / 1000.0;

    let mut report = Report {
        config: RunConfig {
            requests: args.requests,
            concurrency: args.concurrency,
            latency_ms: args.latency_ms,
            ledger: args.ledger.as_str().to_owned(),
            warmup: args.warmup,
            smoke: args.smoke,
            binary: binary.display().to_string(),
            source: source_version(),
            rust_log: args.rust_log.clone(),
            service_env: args.service_env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            database_params: args.database_params.clone(),
            sim_threads: args.sim_threads,
            client_threads: args.client_threads,
            rate: args.rate,
            sim_rate_limit: args.sim_rate_limit,
            notifications: !args.no_notifications,
        },
        machine,
        phases: Phases {
            startup_ms: startup.as_secs_f64() * 1000.0,
            warmup_s: warm.elapsed.as_secs_f64(),
            measured_s,
            drain_s: end.at.duration_since(after.at).as_secs_f64(),
        },
        throughput: Throughput { finished, handoffs_per_sec: ok as f64 / measured_s.max(1e-9) },
        latency_ms: Latency {
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            max: measured.latency_us.max() as f64 / 1000.0,
            mean: measured.latency_us.mean() / 1000.0,
        },
        outcomes: Outcomes {
            transferred: measured.transferred,
            deferred: measured.deferred,
            replayed: measured.replayed,
            unexpected_2xx: measured.unexpected_2xx,
            unavailable_with_retry_after: measured.unavailable_with_retry_after,
        },
        errors: Errors {
            total: measured.errors() + measured.not_started,
            by_status: measured.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            transport: measured.transport.clone(),
            not_started: measured.not_started,
            warmup: warm.errors() + warm.not_started,
        },
        service: ServiceUsage {
            pid,
            cpu_ms_measured: service_ms,
            cpu_ms_per_handoff: per(service_ms, finished),
            cpu_ms_whole_run: ms(end.service_ticks.saturating_sub(ready.service_ticks)),
            cpu_ms_per_handoff_whole_run: per(ms(end.service_ticks.saturating_sub(ready.service_ticks)), handoffs),
            peak_rss_mib: hwm_kib.unwrap_or(0) as f64 / 1024.0,
            rss_mib_at_end: rss_kib.unwrap_or(0) as f64 / 1024.0,
            cores_busy: service_ms / 1000.0 / window_s.max(1e-9),
            sqlite_kib: None,
            exit: exit.map(|s| s.to_string()),
            log,
        },
        bench_process: BenchUsage {
            cpu_ms_measured: own_ms,
            sim_cpu_ms: sim_ms,
            client_cpu_ms: client_ms,
            other_cpu_ms: (own_ms - sim_ms - client_ms).max(0.0),
            sim_cpu_ms_per_handoff: per(sim_ms, finished),
            client_cpu_ms_per_handoff: per(client_ms, finished),
        },
        machine_cpu: MachineCpu {
            steal_pct: cpu.steal_pct(),
            busy_pct: cpu.busy_pct(),
            busy_cpu_ms: busy_ms,
            database_cpu_ms: postgres.then_some(database_ms),
            database_cpu_ms_per_handoff: postgres.then(|| per(database_ms, finished)),
            others_cpu_ms: (busy_ms - service_ms - own_ms - database_ms).max(0.0),
        },
        upstream: UpstreamReport {
            token_calls: counts.get(Endpoint::Token),
            total_calls: counts.total(),
            handoffs,
            calls_per_handoff: per(counts.total() as f64, handoffs),
            tags_pending,
            calls_per_handoff_with_pending_tags: per((counts.total() + tags_pending) as f64, handoffs),
            measured_calls_per_handoff_with_pending_tags: per(
                (counts.total().saturating_sub(before.counts.total()) + tags_pending) as f64,
                ok,
            ),
            by_endpoint,
            realized_latency_ms: RealizedLatency::of(calls.iter().map(|c| c.latency)),
            rate_limited: calls.iter().filter(|c| c.status == 429).count() as u64,
            doubled_transfers: transfers.doubled,
            lost_transfers: transfers.lost,
        },
        capacity_queries: capacity,
        legs_ms: legs,
        targets: Vec::new(),
        complete: measured.not_started == 0
            && !measured.transport.contains_key(load::CUT)
            && finished == args.requests as u64,
    };
    report.check_targets();
    Ok(report)
}
