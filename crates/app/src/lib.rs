//! The `handoff` application: configuration, telemetry, wiring and the command line.
//!
//! `main` parses the command line and calls [`cli::run`]; everything else is a library so the
//! black-box tests can build an [`App`] in-process.
//!
//! # Layout
//! - [`config`]: [`Settings`] from the environment (CONTRACT §3), every problem reported at once.
//! - [`telemetry`]: the `tracing` subscriber (JSON or pretty, `RUST_LOG`).
//! - [`observer`]: one log line and the Prometheus metrics per handoff outcome.
//! - [`platform`]: [`platform::Platform`], the contact center (`HANDOFF_PLATFORM`): its ports,
//!   readiness, `handoff check`, metrics and background policy; [`platform::GenesysPlatform`].
//! - [`startup`]: [`App`]: adapters, use case, router, listener, workers, graceful shutdown.
//! - [`cli`]: `serve`, `demo`, `simulator`, `check`, `report`.
//! - [`report`]: `handoff report` (the insights figures as terminal tables) and the queue
//!   capacity figures `/insights` shows.
//! - [`demo`]: the zero-setup walk-through against the simulator.
//! - `check`: the preflight against a real org.

mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod demo_sunshine;
pub mod observer;
pub mod platform;
pub mod report;
pub mod startup;
pub mod telemetry;

pub use config::Settings;
pub use startup::App;
