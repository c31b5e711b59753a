//! The command line.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Which ledger the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LedgerKind {
    /// A temporary SQLite file.
    Sqlite,
    /// A database created (and dropped) on `--postgres-url`.
    Postgres,
    /// The in-memory ledger (`DATABASE_URL=memory:`).
    Memory,
}

impl LedgerKind {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Memory => "memory",
        }
    }
}

/// Load benchmark of `handoff serve`: genesys-sim runs in this process with a fixed per-call
/// latency, the real binary runs as a child, and N handoffs with distinct conversation ids are
/// sent at concurrency C over keep-alive loopback connections. Run it with `--release`.
#[derive(Debug, Clone, Parser)]
#[command(name = "handoff-bench", version)]
pub struct Args {
    /// Handoffs in the measured phase.
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
    /// Requests in flight at once (one keep-alive connection each).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Latency the simulator adds to every Genesys call (token included), in ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// The service's ledger.
    #[arg(long, value_enum, default_value_t = LedgerKind::Sqlite)]
    pub ledger: LedgerKind,
    /// PostgreSQL server for `--ledger postgres`; a database is created on it and dropped afterwards.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/")]
    pub postgres_url: String,
    /// Query string appended to the service's `DATABASE_URL`, for experiments, e.g.
    /// `options=-c%20synchronous_commit%3Doff` with PostgreSQL.
    #[arg(long)]
    pub database_params: Option<String>,
    /// The `handoff` binary. Default: `handoff` next to this binary, (re)built first with the same profile.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Do not run `cargo build` for the default binary.
    #[arg(long)]
    pub no_build: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Handoffs sent before the measured phase (token, connections, caches).
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Hard cap on the whole run, in seconds; the run stops (and fails) when it is reached.
    #[arg(long, default_value_t = 120)]
    pub max_seconds: u64,
    /// How long to wait after the measured phase for the outbox to deliver every tag, in seconds.
    #[arg(long, default_value_t = 15)]
    pub drain_seconds: u64,
    /// Per-request timeout of the load generator, in seconds.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// `RUST_LOG` of the service (its ready line is always enabled). `info` logs one line per handoff.
    #[arg(long, default_value = "warn")]
    pub rust_log: String,
    /// Extra environment for the service, `KEY=VALUE` (repeatable), e.g. `--env HANDOFF_MIN_IDLE_AGENTS=0`.
    #[arg(long = "env", value_parser = parse_key_value)]
    pub service_env: Vec<(String, String)>,
    /// Worker threads of the in-process simulator's runtime.
    #[arg(long, default_value_t = 1)]
    pub sim_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Open loop: send R handoffs per second whatever the answers (instead of C workers that each
    /// wait for their answer). `--concurrency` then only sizes the connection pool.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// The simulator's per-token allowance, calls per minute (Genesys' default is 300); none when
    /// not given.
    #[arg(long)]
    pub sim_rate_limit: Option<u32>,
    /// The simulator refuses Notifications channels (a Genesys stand-in without push): the
    /// service must fall back to polling.
    #[arg(long)]
    pub no_notifications: bool,
    /// CI smoke run: 200 handoffs at concurrency 8 (20 warm-up, 10 s drain); exits non-zero on any
    /// error. Asserts nothing about speed.
    #[arg(long)]
    pub smoke: bool,
    /// Instead of the load run: seed this many handoffs over a year into `--ledger` (sqlite or
    /// postgres) and time the insights page's queries and rendering and the CSV export (issue 15).
    #[arg(long)]
    pub insights: Option<u64>,
}

impl Args {
    /// The arguments with `--smoke` applied and counts made sane (at least one worker and thread).
    pub fn effective(mut self) -> Self {
        if self.smoke {
            self.requests = 200;
            self.concurrency = 8;
            self.warmup = 20;
            self.drain_seconds = 10;
        }
        self.concurrency = self.concurrency.clamp(1, 4096);
        self.sim_threads = self.sim_threads.clamp(1, 64);
        self.client_threads = self.client_threads.clamp(1, 64);
        // Bounds that keep every deadline and buffer size computed from them far from overflow.
        self.requests = self.requests.min(10_000_000);
        self.warmup = self.warmup.min(1_000_000);
        self.max_seconds = self.max_seconds.clamp(1, 86_400);
        self.drain_seconds = self.drain_seconds.min(86_400);
        self.latency_ms = self.latency_ms.min(60_000);
        self.request_timeout_secs = self.request_timeout_secs.clamp(1, 3_600);
        self.insights = self.insights.map(|n| n.clamp(1, 10_000_000));
        self
    }
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(r) if r.is_finite() && (0.001..=100_000.0).contains(&r) => Ok(r),
        _ => Err(format!("{raw:?} is not a rate: expected handoffs per second from 0.001 to 100000")),
    }
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_issues_benchmark() {
        let args = Args::parse_from(["handoff-bench"]).effective();
        assert_eq!((args.requests, args.concurrency, args.latency_ms, args.warmup), (5000, 64, 0, 200));
        assert_eq!((args.ledger, args.max_seconds), (LedgerKind::Sqlite, 120));
    }

    #[test]
    fn smoke_overrides_the_size_of_the_run() {
        let args = Args::parse_from(["handoff-bench", "--smoke", "--requests", "9999"]).effective();
        assert_eq!((args.requests, args.concurrency), (200, 8));
    }

    #[test]
    fn huge_flags_are_bounded_so_no_deadline_overflows() {
        let max = u64::MAX.to_string();
        let args = Args::parse_from([
            "handoff-bench",
            "--max-seconds",
            &max,
            "--drain-seconds",
            &max,
            "--latency-ms",
            &max,
            "--requests",
            &usize::MAX.to_string(),
        ])
        .effective();
        assert_eq!((args.max_seconds, args.drain_seconds, args.latency_ms), (86_400, 86_400, 60_000));
        assert_eq!(args.requests, 10_000_000);
    }

    #[test]
    fn a_rate_must_be_a_positive_number_of_handoffs_per_second() {
        let args = Args::parse_from(["handoff-bench", "--rate", "0.5", "--sim-rate-limit", "300"]);
        assert_eq!((args.rate, args.sim_rate_limit), (Some(0.5), Some(300)));
        assert!(Args::try_parse_from(["handoff-bench", "--rate", "0"]).is_err());
        assert!(Args::try_parse_from(["handoff-bench", "--rate", "NaN"]).is_err());
        assert!(Args::try_parse_from(["handoff-bench", "--rate", "fast"]).is_err());
    }

    #[test]
    fn service_environment_must_be_key_value() {
        let args = Args::parse_from(["handoff-bench", "--env", "A=b=c"]);
        assert_eq!(args.service_env, vec![("A".to_owned(), "b=c".to_owned())]);
        assert!(Args::try_parse_from(["handoff-bench", "--env", "novalue"]).is_err());
    }
}
