//! The contact center the service hands off to (`HANDOFF_PLATFORM`, ADR 0004 §8): the ports the
//! use case calls, plus what the app needs besides them — readiness, `handoff check`, the
//! adapter's metrics and the background policy. Adapters stay free of app types: each platform's
//! [`Platform`] implementation lives here, in the app.
//!
//! # Layout
//! - this module: [`Platform`], [`PlatformPorts`], [`CheckReport`] and [`build`].
//! - [`genesys`]: [`GenesysPlatform`] over the Genesys adapter's client.
//! - [`sunshine`]: [`SunshinePlatform`] over the Sunshine adapter's client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use handoff_domain::ports::{AnalyticsPort, PortError, QueuePort, TransferPort};
use handoff_domain::{CapacitySnapshot, QueueId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{PlatformSettings, Settings};

pub mod genesys;
pub mod sunshine;

pub use genesys::GenesysPlatform;
pub use sunshine::SunshinePlatform;

/// Background work handed to [`Platform::in_background`].
pub type BackgroundWork<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The three ports the use case calls, all provided by the platform's adapter.
#[derive(Clone)]
pub struct PlatformPorts {
    /// Locate, write context, transfer.
    pub transfer: Arc<dyn TransferPort>,
    /// Queue capacity.
    pub queue: Arc<dyn QueuePort>,
    /// Handoff analytics.
    pub analytics: Arc<dyn AnalyticsPort>,
}

impl std::fmt::Debug for PlatformPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformPorts").finish_non_exhaustive()
    }
}

/// A contact-center platform as the app sees it: one implementation per adapter.
#[async_trait]
pub trait Platform: Send + Sync + std::fmt::Debug {
    /// `genesys` | `sunshine`: the `HANDOFF_PLATFORM` value, in logs.
    fn name(&self) -> &'static str;

    /// The API base URL for the startup log (never credentials).
    fn api_base_url(&self) -> String;

    /// The ports the use case calls.
    fn ports(&self) -> PlatformPorts;

    /// `/readyz` checks besides the ledger, e.g. `("genesys_token", Ok(()))`; `Err` holds a short
    /// reason without secrets.
    async fn readiness(&self) -> Vec<(String, Result<(), String>)>;

    /// `handoff check`: one pass/fail line per check into `report`, each failure with a fix.
    async fn check(&self, settings: &Settings, report: &mut CheckReport);

    /// Prometheus text for the adapter's counters (`handoff_upstream_requests_total{endpoint,status}` …).
    fn render_metrics(&self, out: &mut String);

    /// Whether background work (deferrals, recovery, outbox) may call upstream now; `false` while
    /// what is left of the platform's allowance belongs to live handoffs.
    fn background_may_run(&self) -> bool;

    /// Runs `work` as background work: the platform may pace it or keep it out of the capacity
    /// reserved for live handoffs. By default it just runs.
    fn in_background<'a>(&self, work: BackgroundWork<'a>) -> BackgroundWork<'a> {
        work
    }

    /// Starts the platform's own long-running tasks while serving (Genesys: the Notifications
    /// channel); they end when `stop` turns true. By default there are none.
    fn spawn_tasks(&self, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let _ = stop;
        Vec::new()
    }

    /// Each queue's last observed capacity with its age, from the adapter's cache (no call), for
    /// `/insights`. By default nothing was observed.
    fn last_capacity_observations(&self) -> Vec<(QueueId, Result<CapacitySnapshot, PortError>, Duration)> {
        Vec::new()
    }
}

/// Builds the configured platform's adapter.
///
/// # Errors
/// When the platform's settings cannot make a client (region, URLs, timeouts).
pub fn build(settings: &Settings) -> anyhow::Result<Arc<dyn Platform>> {
    match &settings.platform {
        PlatformSettings::Genesys(genesys) => Ok(Arc::new(GenesysPlatform::new(genesys, settings)?)),
        PlatformSettings::Sunshine(sunshine) => Ok(Arc::new(SunshinePlatform::new(sunshine)?)),
    }
}

/// The lines `handoff check` prints: `PASS`, `SKIP`, or `FAIL` with a fix.
#[derive(Debug, Default)]
pub struct CheckReport {
    failed: usize,
}

impl CheckReport {
    /// A check that passed.
    pub fn pass(&self, what: &str) {
        println!("PASS  {what}");
    }

    /// A check that does not apply to these settings.
    pub fn skip(&self, what: &str) {
        println!("SKIP  {what}");
    }

    /// A failed check and how to fix it.
    pub fn fail(&mut self, what: &str, fix: &str) {
        self.failed += 1;
        println!("FAIL  {what}\n      fix: {fix}");
    }

    /// How many checks failed so far.
    pub fn failed(&self) -> usize {
        self.failed
    }
}
