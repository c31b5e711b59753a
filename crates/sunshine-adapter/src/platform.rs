//! What the app's `Platform` (ADR 0004 §8) needs from Sunshine besides the ports, kept free of app
//! types so the app's `SunshinePlatform` is a thin wrapper: readiness that does not spend the rate
//! limit, the `handoff check` lines, and the Prometheus text of the counters.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use crate::ops::ResolveError;
use crate::SunshineClient;

/// A readiness answer younger than this is reused (probes must not spend the rate limit).
const READINESS_CACHE: Duration = Duration::from_secs(30);
/// A Sunshine call that authenticated this recently proves the credentials without a call.
const RECENT_AUTH: Duration = Duration::from_secs(60);

/// One line of `handoff check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckLine {
    /// It works.
    Pass(String),
    /// It does not apply to these settings.
    Skip(String),
    /// It does not work: what, and how to fix it.
    Fail {
        /// What failed.
        what: String,
        /// The fix.
        fix: String,
    },
}

impl SunshineClient {
    /// `/readyz`: `("sunshine_credentials", …)`: `Ok` when a Sunshine call authenticated in the last
    /// 60 s, else the result of `GET /v2/apps/{appId}`, itself reused for 30 s.
    pub async fn readiness(&self) -> Vec<(String, Result<(), String>)> {
        let result = if self.last_authenticated().is_some_and(|age| age < RECENT_AUTH) {
            Ok(())
        } else {
            let cached = {
                let slot = self.readiness_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                slot.as_ref().filter(|(at, _)| at.elapsed() < READINESS_CACHE).map(|(_, r)| r.clone())
            };
            match cached {
                Some(result) => result,
                None => {
                    let result = self.check_credentials().await.map_err(|e| e.to_string());
                    *self.readiness_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((Instant::now(), result.clone()));
                    result
                }
            }
        };
        vec![("sunshine_credentials".to_owned(), result)]
    }

    /// `handoff check`: credentials, the switchboard and the configured integrations, the metadata
    /// keys, and (with Zendesk Support credentials) each routing group; otherwise capacity unknown.
    pub async fn check(&self, groups: &[String]) -> Vec<CheckLine> {
        let mut lines = Vec::new();
        let base = self.config.base_url.as_str().to_owned();
        match self.check_credentials().await {
            Ok(()) => lines.push(CheckLine::Pass(format!("app {} answers at {base}", self.config.app_id))),
            Err(e) => {
                lines.push(CheckLine::Fail {
                    what: format!("app {} at {base}: {e}", self.config.app_id),
                    fix: "check SUNSHINE_APP_ID, SUNSHINE_KEY_ID/SUNSHINE_KEY_SECRET (an app-scoped key), SUNSHINE_AUTH and the base URL (SUNSHINE_SUBDOMAIN, SUNSHINE_REGION or SUNSHINE_BASE_URL)".to_owned(),
                });
                return lines;
            }
        }
        match self.resolve_integrations().await {
            Ok(resolved) => {
                if resolved.switchboard_enabled {
                    lines.push(CheckLine::Pass(format!("switchboard {} is enabled", resolved.switchboard_id)));
                } else {
                    lines.push(CheckLine::Fail {
                        what: format!("switchboard {} is disabled", resolved.switchboard_id),
                        fix: "enable the switchboard: while it is disabled every integration receives every event and passControl does not route".to_owned(),
                    });
                }
                lines.push(CheckLine::Pass(format!("SUNSHINE_AGENT_INTEGRATION resolves to {}", resolved.agent_id)));
                match resolved.bot_id {
                    Some(bot) => lines.push(CheckLine::Pass(format!("SUNSHINE_BOT_INTEGRATION resolves to {bot}"))),
                    None => lines.push(CheckLine::Skip("SUNSHINE_BOT_INTEGRATION not set: any integration but the agent side counts as the bot".to_owned())),
                }
            }
            Err(ResolveError::Config(e)) => lines.push(CheckLine::Fail {
                what: e.to_string(),
                fix: "name a switchboard integration of the app (id or name) in SUNSHINE_AGENT_INTEGRATION / SUNSHINE_BOT_INTEGRATION; the app must have exactly one switchboard".to_owned(),
            }),
            Err(ResolveError::Upstream(e)) => lines.push(CheckLine::Fail {
                what: format!("listing the switchboards: {e}"),
                fix: "the key must be app-scoped (integration-scoped keys cannot read switchboards)".to_owned(),
            }),
        }
        let tags =
            self.config.tags_key.as_deref().map_or_else(|| "no tags".to_owned(), |k| format!("tags under `{k}`"));
        lines.push(CheckLine::Pass(format!("metadata: the group under `{}`, {tags}", self.config.group_key)));
        if self.config.support.is_none() {
            lines.push(CheckLine::Skip(
                "capacity: unknown (no ZENDESK_SUPPORT_EMAIL/ZENDESK_SUPPORT_API_TOKEN); the admission rule for unknown capacity applies".to_owned(),
            ));
            return lines;
        }
        for group in groups {
            match self.group_exists(group).await {
                Ok(Some(true)) => lines.push(CheckLine::Pass(format!("Zendesk group {group} exists"))),
                Ok(Some(false)) => lines.push(CheckLine::Fail {
                    what: format!("Zendesk group {group} not found"),
                    fix: "use Zendesk group ids (digits) in TARGET_QUEUE_ID, HANDOFF_ROUTES and HANDOFF_FALLBACK_QUEUE_ID".to_owned(),
                }),
                Ok(None) => {}
                Err(e) => lines.push(CheckLine::Fail {
                    what: format!("Zendesk group {group}: {e}"),
                    fix: "check ZENDESK_SUPPORT_EMAIL/ZENDESK_SUPPORT_API_TOKEN and the Support base URL".to_owned(),
                }),
            }
        }
        lines
    }

    /// Prometheus text: `handoff_upstream_requests_total{endpoint,status}`, `handoff_token_refreshes_total`
    /// (JWT signatures) and `handoff_upstream_unauthorized_total`.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP handoff_upstream_requests Sunshine and Zendesk Support call attempts by endpoint and status class."
        );
        let _ = writeln!(out, "# TYPE handoff_upstream_requests counter");
        for r in self.requests() {
            let _ = writeln!(
                out,
                "handoff_upstream_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}",
                r.op.as_str(),
                r.class.as_str(),
                r.count
            );
        }
        for (name, help, value) in [
            ("token_refreshes", "Sunshine JWTs signed.", self.jwt_mints()),
            ("upstream_unauthorized", "Sunshine answers 401.", self.unauthorized_answers()),
        ] {
            let _ = writeln!(out, "# HELP handoff_{name} {help}");
            let _ = writeln!(out, "# TYPE handoff_{name} counter");
            let _ = writeln!(out, "handoff_{name}_total {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use sunshine_sim::{spawn, Endpoint, SimConfig, APP_ID, KEY_ID, KEY_SECRET};
    use url::Url;

    use super::*;
    use crate::SunshineConfig;

    #[tokio::test]
    async fn readiness_is_cached_and_check_reports_each_part() {
        // Arrange
        let sim = spawn(SimConfig::default()).await.expect("sim");
        let base = Url::parse(&sim.base_url()).expect("url");
        let config = SunshineConfig::new(APP_ID, KEY_ID, SecretString::from(KEY_SECRET), base, "zd-agentWorkspace");
        let client = SunshineClient::new(config).expect("client");

        // Act
        let first = client.readiness().await;
        let second = client.readiness().await;
        let lines = client.check(&["360001".to_owned()]).await;
        let mut metrics = String::new();
        client.render_metrics(&mut metrics);

        // Assert
        assert_eq!(first, vec![("sunshine_credentials".to_owned(), Ok(()))]);
        assert_eq!(second, first);
        assert_eq!(sim.sim().count(Endpoint::GetApp), 2, "one for readiness (then reused), one for check");
        assert!(lines.iter().all(|l| !matches!(l, CheckLine::Fail { .. })), "{lines:?}");
        assert!(lines.iter().any(|l| matches!(l, CheckLine::Skip(s) if s.starts_with("capacity: unknown"))));
        assert!(
            metrics.contains("handoff_upstream_requests_total{endpoint=\"get_app\",status=\"2xx\"} 2"),
            "{metrics}"
        );
        assert!(!metrics.contains(KEY_SECRET));
    }
}
