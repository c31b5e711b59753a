//! `handoff-bench`: a reproducible load benchmark of the real `handoff serve`.
//!
//! genesys-sim runs in this process on its own runtime with a fixed per-call latency; the service
//! runs as a child process on a temporary SQLite file, a PostgreSQL database created for the run, or
//! the in-memory ledger; C workers send N handoffs with distinct conversation ids over keep-alive
//! loopback connections. The report (a table and JSON) has throughput, latency percentiles, the
//! service's CPU per handoff and peak RSS from `/proc`, the simulator's and the load generator's own
//! CPU, steal time, upstream calls per handoff by endpoint, capacity queries per queue, errors, and
//! the issue's targets checked against it. See `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p handoff-bench -- --requests 5000 --concurrency 64 --latency-ms 20 --json out.json
//! cargo run -p handoff-bench -- --smoke      # CI: exits non-zero on any error, asserts no speed
//! cargo run --release -p handoff-bench -- --insights 100000 --ledger postgres
//! ```
//!
//! # Layout
//! - `args`: [`Args`], the command line, and [`LedgerKind`].
//! - `run`: [`run`], one run start to finish, and the exit code.
//! - `ledger`: creating and removing the ledger under test.
//! - `upstream`: the simulator on its own runtime; call counts and capacity queries per queue.
//! - `service`: the `handoff` binary as a child: build, start, ready line, log counting, stop.
//! - `load`: the load generator (workers, payloads, latency histogram, error classes).
//! - `machine`: `/proc` readings (process and thread CPU ticks, peak RSS, steal) and machine info.
//! - `stages`: the service's own time between its upstream calls (client times joined with the call log).
//! - `report`: the report, the targets, and the human table.
//! - `insights`: `--insights N`: the insights page's queries, rendering and export on N seeded
//!   handoffs (issue 15).

mod args;
mod insights;
mod ledger;
mod load;
mod machine;
mod report;
mod run;
mod service;
mod stages;
mod upstream;

pub use args::{Args, LedgerKind};
pub use run::run;
