//! Zendesk Sunshine Conversations as the platform: the adapter's [`SunshineClient`] provides the
//! three ports, the credentials check behind `/readyz` (no call when a call authenticated in the
//! last minute), the preflight of `handoff check`, its counters, and the background pause after a
//! 429 (`Retry-After`, or 30 s when absent: Sunshine documents no rate headers).

use std::sync::Arc;

use async_trait::async_trait;
use handoff_sunshine::{CheckLine, SunshineClient, SunshineConfig};

use super::{CheckReport, Platform, PlatformPorts};
use crate::config::Settings;

/// Sunshine Conversations behind the [`Platform`] trait.
#[derive(Debug)]
pub struct SunshinePlatform {
    client: Arc<SunshineClient>,
}

impl SunshinePlatform {
    /// Builds the client from the `SUNSHINE_*` settings (already validated by the config parser).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &SunshineConfig) -> anyhow::Result<Self> {
        let client = SunshineClient::shared(config.clone())
            .map_err(|e| anyhow::anyhow!("failed to build the sunshine client: {e}"))?;
        Ok(Self { client })
    }

    /// The adapter's client (its counters).
    pub fn client(&self) -> &Arc<SunshineClient> {
        &self.client
    }
}

#[async_trait]
impl Platform for SunshinePlatform {
    fn name(&self) -> &'static str {
        "sunshine"
    }

    fn api_base_url(&self) -> String {
        self.client.config().base_url.to_string()
    }

    fn ports(&self) -> PlatformPorts {
        PlatformPorts { transfer: self.client.clone(), queue: self.client.clone(), analytics: self.client.clone() }
    }

    async fn readiness(&self) -> Vec<(String, Result<(), String>)> {
        self.client.readiness().await
    }

    async fn check(&self, settings: &Settings, report: &mut CheckReport) {
        let groups: Vec<String> =
            crate::startup::configured_queues(settings).iter().map(|q| q.as_str().to_owned()).collect();
        for line in self.client.check(&groups).await {
            match line {
                CheckLine::Pass(what) => report.pass(&what),
                CheckLine::Skip(what) => report.skip(&what),
                CheckLine::Fail { what, fix } => report.fail(&what, &fix),
            }
        }
    }

    fn render_metrics(&self, out: &mut String) {
        self.client.render_metrics(out);
    }

    fn background_may_run(&self) -> bool {
        self.client.background_may_run()
    }
}
