//! Black-box tests of `handoff` live in `it/` (one test binary, modules per area). This library
//! is empty on purpose.
//!
//! # Layout
//! - `it/helpers.rs`: `spawn_app()` (an in-process `App` against a fresh `genesys-sim`) and
//!   `spawn_binary()` (the real `handoff` binary as a child process).
//! - `it/handoff.rs`: the webhook end to end.
//! - `it/insights.rs`: `/insights` in headless Chromium against a seeded ledger, with the CSV
//!   export and `handoff report` (skipped without Chromium unless `CI=true`).
//! - `it/binary.rs`: the `handoff` binary: configuration errors, `serve`.
