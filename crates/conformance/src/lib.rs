//! The conformance suite (ADR 0004): one set of scenarios every platform adapter runs against
//! its own simulator, the way the ledger's contract suite runs on every ledger. A scenario is
//! written once, against the domain ports, the use case (`HandoffService` over an
//! `InMemoryLedger`) and a [`Harness`]; each adapter's test binary implements the harness once
//! and generates one test per scenario with [`conformance_suite!`], so the adapter's name is in
//! every test name (`conformance::genesys::not_found`).
//!
//! ```ignore
//! mod conformance {
//!     handoff_conformance::conformance_suite!(genesys, crate::genesys::GenesysHarness);
//! }
//! ```
//!
//! # Layout
//! - [`harness`]: [`Harness`], [`HarnessOptions`], [`SimState`], [`Op`], [`SimFault`],
//!   [`PlatformView`]: what a scenario asks of an adapter and its simulator. What the adapter
//!   declares (limits, deliveries, ids) is read from `TransferPort::rules()`.
//! - [`located`]: `locate` without a hint, and a transfer from what it located (with the context
//!   when the adapter declares `ContextDelivery::WithTransfer`).
//! - [`scenarios`]: the scenarios, and the [`conformance_suite!`] macro that lists them.

pub mod harness;
pub mod located;
pub mod scenarios;

pub use harness::{Harness, HarnessOptions, Op, PlatformView, SimFault, SimState};
