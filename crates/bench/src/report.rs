//! The report: what one run measured, the targets checked against it (informational: no
//! target changes the exit code), a human table and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::MachineInfo;
use crate::service::LogStats;
use crate::stages::Leg;
use crate::upstream::QueueQueries;

/// One run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) config: RunConfig,
    pub(crate) machine: MachineInfo,
    pub(crate) phases: Phases,
    pub(crate) throughput: Throughput,
    /// Latency of 2xx answers in the measured phase, as the load generator saw it.
    pub(crate) latency_ms: Latency,
    pub(crate) outcomes: Outcomes,
    pub(crate) errors: Errors,
    pub(crate) service: ServiceUsage,
    /// The simulator and the load generator (this process) share the machine with the service.
    pub(crate) bench_process: BenchUsage,
    pub(crate) machine_cpu: MachineCpu,
    pub(crate) upstream: UpstreamReport,
    pub(crate) capacity_queries: Vec<QueueQueries>,
    /// The service's own time between its upstream calls, measured phase.
    pub(crate) legs_ms: Vec<Leg>,
    pub(crate) targets: Vec<Target>,
    /// Every planned request was sent and answered within `--max-seconds`.
    pub(crate) complete: bool,
}

/// The flags that shaped the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunConfig {
    pub(crate) requests: usize,
    pub(crate) concurrency: usize,
    pub(crate) latency_ms: u64,
    pub(crate) ledger: String,
    pub(crate) warmup: usize,
    pub(crate) smoke: bool,
    pub(crate) binary: String,
    /// `git describe` of the workspace the bench was built from (`+dirty` with uncommitted changes).
    pub(crate) source: String,
    pub(crate) rust_log: String,
    pub(crate) service_env: Vec<String>,
    pub(crate) database_params: Option<String>,
    pub(crate) sim_threads: usize,
    pub(crate) client_threads: usize,
    /// Open-loop rate, handoffs per second (`None`: closed loop at `concurrency`).
    pub(crate) rate: Option<f64>,
    /// The simulator's per-token allowance per minute (`None`: unlimited).
    pub(crate) sim_rate_limit: Option<u32>,
    /// Whether the simulator offered Notifications channels.
    pub(crate) notifications: bool,
}

/// How long each phase took.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Phases {
    /// Spawn to the `"handoff ready"` line (migrations included).
    pub(crate) startup_ms: f64,
    pub(crate) warmup_s: f64,
    pub(crate) measured_s: f64,
    /// Waiting for the outbox to deliver the tags of every transfer.
    pub(crate) drain_s: f64,
}

/// Measured-phase throughput.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Throughput {
    /// Requests that got any answer or failed.
    pub(crate) finished: u64,
    /// 2xx answers per second of the measured phase.
    pub(crate) handoffs_per_sec: f64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

/// 2xx answers of the measured phase by kind.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcomes {
    pub(crate) transferred: u64,
    pub(crate) deferred: u64,
    pub(crate) replayed: u64,
    pub(crate) unexpected_2xx: u64,
    /// 503 answers with `Retry-After` (also in `errors.by_status`).
    pub(crate) unavailable_with_retry_after: u64,
}

/// Failures of the measured phase (warm-up failures counted apart).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Errors {
    /// Non-2xx plus transport failures plus requests never sent.
    pub(crate) total: u64,
    pub(crate) by_status: BTreeMap<String, u64>,
    pub(crate) transport: BTreeMap<String, u64>,
    pub(crate) not_started: u64,
    /// Errors of any kind during warm-up.
    pub(crate) warmup: u64,
}

/// The service process.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServiceUsage {
    pub(crate) pid: u32,
    /// User + system CPU during the measured phase.
    pub(crate) cpu_ms_measured: f64,
    /// `cpu_ms_measured` per request of the measured phase.
    pub(crate) cpu_ms_per_handoff: f64,
    /// From ready to the end of the drain (warm-up and outbox work included).
    pub(crate) cpu_ms_whole_run: f64,
    /// `cpu_ms_whole_run` per handoff (warm-up + measured).
    pub(crate) cpu_ms_per_handoff_whole_run: f64,
    /// `VmHWM` after the drain.
    pub(crate) peak_rss_mib: f64,
    /// `VmRSS` after the drain.
    pub(crate) rss_mib_at_end: f64,
    /// Average cores busy in the service during the measured phase.
    pub(crate) cores_busy: f64,
    /// SQLite file + WAL after the run, KiB.
    pub(crate) sqlite_kib: Option<u64>,
    /// How the process ended (`null` when it had to be killed).
    pub(crate) exit: Option<String>,
    pub(crate) log: LogStats,
}

/// This process (simulator + load generator) during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BenchUsage {
    pub(crate) cpu_ms_measured: f64,
    /// Threads of the simulator's runtime.
    pub(crate) sim_cpu_ms: f64,
    /// Threads of the load generator's runtime.
    pub(crate) client_cpu_ms: f64,
    /// Everything else in this process (main thread, log reader).
    pub(crate) other_cpu_ms: f64,
    pub(crate) sim_cpu_ms_per_handoff: f64,
    pub(crate) client_cpu_ms_per_handoff: f64,
}

/// The whole machine during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MachineCpu {
    /// Steal as a share of all CPU time.
    pub(crate) steal_pct: f64,
    /// Non-idle, non-steal share of all CPU time (100 % = every core busy).
    pub(crate) busy_pct: f64,
    /// Busy CPU time of every process.
    pub(crate) busy_cpu_ms: f64,
    /// The PostgreSQL server's processes (`postgres`), with `--ledger postgres`.
    pub(crate) database_cpu_ms: Option<f64>,
    /// `database_cpu_ms` per request of the measured phase.
    pub(crate) database_cpu_ms_per_handoff: Option<f64>,
    /// `busy_cpu_ms` minus the service, this process and the database: other work on the machine
    /// (compilers …).
    pub(crate) others_cpu_ms: f64,
}

/// Calls answered by the simulator over the whole run (warm-up and drain included).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UpstreamReport {
    pub(crate) token_calls: u64,
    pub(crate) total_calls: u64,
    /// 2xx handoffs over the whole run (warm-up + measured).
    pub(crate) handoffs: u64,
    pub(crate) calls_per_handoff: f64,
    /// Transfers whose tag the outbox had not delivered when the drain ended.
    pub(crate) tags_pending: u64,
    /// `calls_per_handoff` counting each pending tag as the one call it will cost.
    pub(crate) calls_per_handoff_with_pending_tags: f64,
    /// The same for the measured phase alone (its calls, drain included, over its handoffs): no
    /// start-up calls (token, channel, starting figures) spread over it.
    pub(crate) measured_calls_per_handoff_with_pending_tags: f64,
    pub(crate) by_endpoint: BTreeMap<String, EndpointCalls>,
    /// The latency the simulator really added per call (`None` when L = 0).
    pub(crate) realized_latency_ms: Option<RealizedLatency>,
    /// 429 answers of the simulator.
    pub(crate) rate_limited: u64,
    /// Conversations transferred more than once.
    pub(crate) doubled_transfers: u64,
    /// Conversations answered 2xx (measured phase) that Genesys never saw transferred.
    pub(crate) lost_transfers: u64,
}

/// The simulator's added latency as calls saw it, over every call of the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RealizedLatency {
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

impl RealizedLatency {
    /// From the calls' realized latencies; `None` when none had any.
    pub(crate) fn of(latencies: impl Iterator<Item = std::time::Duration>) -> Option<Self> {
        let us: Vec<u128> = latencies.filter(|d| !d.is_zero()).map(|d| d.as_micros()).collect();
        if us.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = us.iter().map(|&u| u as f64 / 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        Some(Self { mean, p50: crate::stages::quantile(&ms, 0.5), p99: crate::stages::quantile(&ms, 0.99) })
    }
}

/// Calls of one endpoint.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EndpointCalls {
    pub(crate) count: u64,
    pub(crate) per_handoff: f64,
}

/// One of the targets.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) limit: String,
    pub(crate) value: String,
    pub(crate) holds: bool,
}

impl Report {
    /// The targets that apply to this run's latency.
    pub(crate) fn check_targets(&mut self) {
        let mut t = Vec::new();
        let l = self.config.latency_ms as f64;
        if self.config.latency_ms == 0 {
            let rate = self.throughput.handoffs_per_sec;
            t.push(target("throughput", "≥ 3000 handoffs/s", format!("{rate:.0}/s"), rate >= 3000.0));
            let cpu = self.service.cpu_ms_per_handoff;
            t.push(target("service CPU per handoff", "≤ 0.25 ms", format!("{cpu:.3} ms"), cpu <= 0.25));
            let rss = self.service.peak_rss_mib;
            t.push(target("service peak RSS", "≤ 30 MiB", format!("{rss:.1} MiB"), rss <= 30.0));
        } else {
            let (p50, p99) = (self.latency_ms.p50, self.latency_ms.p99);
            t.push(target(
                "p50 latency",
                &format!("≤ 3·L+2 = {} ms", 3.0 * l + 2.0),
                format!("{p50:.1} ms"),
                p50 <= 3.0 * l + 2.0,
            ));
            t.push(target(
                "p99 latency",
                &format!("≤ 3·L+15 = {} ms", 3.0 * l + 15.0),
                format!("{p99:.1} ms"),
                p99 <= 3.0 * l + 15.0,
            ));
        }
        let tokens = self.upstream.token_calls;
        t.push(target("token calls per run", "= 1", tokens.to_string(), tokens == 1));
        let calls = self.upstream.measured_calls_per_handoff_with_pending_tags;
        let most = if self.config.notifications { 4.05 } else { 5.2 };
        t.push(target("upstream calls per handoff", &format!("≤ {most}"), format!("{calls:.3}"), calls <= most));
        let limited = self.upstream.rate_limited;
        t.push(target("upstream 429s", "= 0", limited.to_string(), limited == 0));
        let (doubled, lost) = (self.upstream.doubled_transfers, self.upstream.lost_transfers);
        t.push(target(
            "transfers lost or doubled",
            "= 0",
            format!("{lost} lost, {doubled} doubled"),
            lost + doubled == 0,
        ));
        if self.config.sim_rate_limit.is_some() {
            let o = &self.outcomes;
            let answered = o.transferred + o.unavailable_with_retry_after;
            t.push(target(
                "transferred or 503 + Retry-After",
                &format!("= {}", self.config.requests),
                format!("{} + {}", o.transferred, o.unavailable_with_retry_after),
                answered == self.config.requests as u64,
            ));
        }
        let worst = self.capacity_queries.iter().filter_map(|q| q.min_gap_ms).reduce(f64::min);
        let rate = self.capacity_queries.iter().map(|q| q.per_second_measured).fold(0.0, f64::max);
        t.push(target(
            "capacity queries per queue",
            "≤ 1/s (no two within 1 s)",
            match worst {
                Some(gap) => format!("{rate:.2}/s, min gap {gap:.0} ms"),
                None => format!("{rate:.2}/s, at most one per queue"),
            },
            worst.is_none_or(|g| g >= 990.0),
        ));
        self.targets = t;
    }

    /// The human table.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let m = &self.machine;
        let _ = writeln!(
            s,
            "handoff-bench: N={} C={} L={} ms ledger={} warmup={}{}",
            c.requests,
            c.concurrency,
            c.latency_ms,
            c.ledger,
            c.warmup,
            if c.smoke { " (smoke)" } else { "" }
        );
        if c.rate.is_some() || c.sim_rate_limit.is_some() || !c.notifications {
            let _ = writeln!(
                s,
                "load: {}, allowance {}, notifications {}",
                c.rate.map_or("closed loop".to_owned(), |r| format!("open loop at {r}/s")),
                c.sim_rate_limit.map_or("unlimited".to_owned(), |a| format!("{a}/min per token")),
                if c.notifications { "offered" } else { "refused" }
            );
        }
        let _ = writeln!(s, "source: {}, binary {}", c.source, c.binary);
        let _ = writeln!(
            s,
            "machine: {} × {} ({} usable), {} MiB, kernel {}, load {}",
            m.nproc, m.model_name, m.available_parallelism, m.mem_total_mib, m.kernel, m.loadavg_at_start
        );
        let p = &self.phases;
        let _ = writeln!(
            s,
            "phases: startup {:.0} ms, warm-up {:.2} s, measured {:.2} s, drain {:.2} s{}",
            p.startup_ms,
            p.warmup_s,
            p.measured_s,
            p.drain_s,
            if self.complete { "" } else { "  (INCOMPLETE: --max-seconds reached)" }
        );
        let _ = writeln!(s);
        let l = &self.latency_ms;
        let sv = &self.service;
        let b = &self.bench_process;
        let mc = &self.machine_cpu;
        let rows: Vec<(&str, String)> = vec![
            ("handoffs/s", format!("{:.0}", self.throughput.handoffs_per_sec)),
            ("latency p50 / p90 / p99 / max", format!("{:.2} / {:.2} / {:.2} / {:.2} ms", l.p50, l.p90, l.p99, l.max)),
            (
                "outcomes",
                format!(
                    "{} transferred, {} deferred, {} replayed, {} other, {} answered 503 + Retry-After",
                    self.outcomes.transferred,
                    self.outcomes.deferred,
                    self.outcomes.replayed,
                    self.outcomes.unexpected_2xx,
                    self.outcomes.unavailable_with_retry_after
                ),
            ),
            ("errors", errors_line(&self.errors)),
            (
                "service CPU",
                format!(
                    "{:.3} ms/handoff ({:.0} ms, {:.2} cores); whole run {:.3} ms/handoff",
                    sv.cpu_ms_per_handoff, sv.cpu_ms_measured, sv.cores_busy, sv.cpu_ms_per_handoff_whole_run
                ),
            ),
            ("service RSS peak / end", format!("{:.1} / {:.1} MiB", sv.peak_rss_mib, sv.rss_mib_at_end)),
            (
                "sim + client CPU",
                format!(
                    "{:.3} + {:.3} ms/handoff (sim {:.0} ms, client {:.0} ms, other {:.0} ms)",
                    b.sim_cpu_ms_per_handoff,
                    b.client_cpu_ms_per_handoff,
                    b.sim_cpu_ms,
                    b.client_cpu_ms,
                    b.other_cpu_ms
                ),
            ),
            (
                "machine CPU",
                format!(
                    "busy {:.0}%, steal {:.2}%, other processes {:.0} ms",
                    mc.busy_pct, mc.steal_pct, mc.others_cpu_ms
                ),
            ),
            (
                "PostgreSQL server CPU",
                match (mc.database_cpu_ms, mc.database_cpu_ms_per_handoff) {
                    (Some(total), Some(per)) => format!("{per:.3} ms/handoff ({total:.0} ms)"),
                    _ => "-".to_owned(),
                },
            ),
            ("token calls", self.upstream.token_calls.to_string()),
            (
                "simulator latency realized",
                match &self.upstream.realized_latency_ms {
                    Some(r) => format!("mean {:.3} / p50 {:.3} / p99 {:.3} ms per call", r.mean, r.p50, r.p99),
                    None => "-".to_owned(),
                },
            ),
            (
                "upstream calls/handoff",
                format!(
                    "{:.3} ({} calls / {} handoffs; {} tags pending)",
                    self.upstream.calls_per_handoff,
                    self.upstream.total_calls,
                    self.upstream.handoffs,
                    self.upstream.tags_pending
                ),
            ),
            (
                "  by endpoint",
                self.upstream
                    .by_endpoint
                    .iter()
                    .filter(|(_, e)| e.count > 0)
                    .map(|(k, e)| format!("{k} {:.3}", e.per_handoff))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "capacity queries",
                self.capacity_queries
                    .iter()
                    .map(|q| {
                        format!(
                            "{} {} ({:.2}/s, min gap {})",
                            q.name,
                            q.total,
                            q.per_second_measured,
                            q.min_gap_ms.map_or("-".to_owned(), |g| format!("{g:.0} ms"))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("service log", format!("{} lines, {} warnings, {} errors", sv.log.lines, sv.log.warnings, sv.log.errors)),
        ];
        let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<width$}  {v}");
        }
        if !self.legs_ms.is_empty() {
            let _ = writeln!(s, "  legs of a handoff (p50 / p90 / p99 ms):");
            for leg in &self.legs_ms {
                let _ =
                    writeln!(s, "    {:>7.2} / {:>7.2} / {:>7.2}  {}", leg.p50_ms, leg.p90_ms, leg.p99_ms, leg.name);
            }
        }
        for line in &sv.log.quoted {
            let _ = writeln!(s, "    service: {line}");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "targets (informational; they never change the exit code):");
        let width = self.targets.iter().map(|t| t.name.chars().count()).max().unwrap_or(0);
        for t in &self.targets {
            let _ = writeln!(
                s,
                "  {} {:<width$}  {:<12}  limit {}",
                if t.holds { "ok  " } else { "MISS" },
                t.name,
                t.value,
                t.limit
            );
        }
        s
    }
}

fn target(name: &str, limit: &str, value: String, holds: bool) -> Target {
    Target { name: name.to_owned(), limit: limit.to_owned(), value, holds }
}

fn errors_line(e: &Errors) -> String {
    if e.total == 0 && e.warmup == 0 {
        return "none".to_owned();
    }
    let mut parts: Vec<String> = e.by_status.iter().map(|(k, v)| format!("{v}× HTTP {k}")).collect();
    parts.extend(e.transport.iter().map(|(k, v)| format!("{v}× {k}")));
    if e.not_started > 0 {
        parts.push(format!("{} not started", e.not_started));
    }
    if e.warmup > 0 {
        parts.push(format!("{} during warm-up", e.warmup));
    }
    parts.join(", ")
}
