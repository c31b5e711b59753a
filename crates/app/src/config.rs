//! Configuration (CONTRACT §3): read from the environment (and a `.env` file in the working
//! directory, loaded by `main`), validated all at once. Every bad or missing setting is reported on
//! its own line; nothing panics.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use handoff_domain::{AdmissionPolicy, QueueId, RoutingPolicy, ServiceSettings};
use handoff_http::{AdminAuth, WebhookAuth};
use secrecy::{ExposeSecret, SecretString};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (default; what log pipelines want).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Genesys connection settings, before region resolution.
#[derive(Debug, Clone)]
pub struct GenesysSettings {
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: SecretString,
    /// `GENESYS_REGION`: a region code or an environment domain.
    pub region: String,
    /// `GENESYS_BASE_URL` override.
    pub base_url: Option<String>,
    /// `GENESYS_LOGIN_BASE_URL` override.
    pub login_base_url: Option<String>,
    /// `GENESYS_TIMEOUT_MS`: per-attempt timeout.
    pub attempt_timeout: Duration,
    /// `GENESYS_BUDGET_MS`: total time for one upstream operation, retries included.
    pub budget: Duration,
    /// `GENESYS_MAX_CONCURRENCY`: cap on concurrent upstream calls.
    pub max_concurrency: usize,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Genesys connection.
    pub genesys: GenesysSettings,
    /// Queue choice and admission (the domain's settings).
    pub service: ServiceSettings,
    /// Webhook authentication.
    pub webhook_auth: WebhookAuth,
    /// `HANDOFF_ADMIN_TOKEN`: who may read records, stats and erase guests.
    pub admin_auth: AdminAuth,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `BIND_ADDR`.
    pub bind_addr: IpAddr,
    /// `PORT` (0 picks a free port).
    pub port: u16,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `HANDOFF_MAX_IN_FLIGHT`: concurrent handoffs before shedding load with 503.
    pub max_in_flight: usize,
    /// `HANDOFF_REQUEST_TIMEOUT_SECS`: answer 503 past this (below the Data Action's 60 s).
    pub request_timeout: Duration,
    /// `HANDOFF_RETENTION_DAYS`: finished records keep the guest's name, e-mail and the bot's
    /// context this long, then the purge removes them.
    pub retention: Duration,
}

/// Every configuration problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Bounds of the settings read with `Reader::bounded`.
const UPSTREAM_MS: (u64, u64) = (1, 600_000);
const COUNT: (u64, u64) = (1, 1_000_000);
const DAY_SECS: u64 = 86_400;
const WEEK_SECS: u64 = 7 * DAY_SECS;

/// Reads variables through `get`, so tests need no process environment.
struct Reader<'a, F: Fn(&str) -> Option<String>> {
    get: &'a F,
    errors: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.get)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required(&mut self, name: &str, what: &str) -> Option<String> {
        let v = self.raw(name);
        if v.is_none() {
            self.errors.push(format!("{name} is required ({what})"));
        }
        v
    }

    fn parsed<T: std::str::FromStr>(&mut self, name: &str, default: T, what: &str) -> T {
        match self.raw(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.errors.push(format!("{name}={v:?} is not valid: expected {what}"));
                default
            }),
        }
    }

    /// A whole number of `unit` within `min..=max` (default when unset). The bounds keep every
    /// deadline computed from it far from overflow and catch typos like an extra three zeros.
    fn bounded(&mut self, name: &str, default: u64, (min, max): (u64, u64), unit: &str) -> u64 {
        let value = self.parsed(name, default, unit);
        if !(min..=max).contains(&value) {
            self.errors.push(format!("{name}={value} is out of range: expected {unit} from {min} to {max}"));
        }
        value
    }

    fn optional<T: std::str::FromStr>(&mut self, name: &str, what: &str) -> Option<T> {
        let v = self.raw(name)?;
        match v.parse() {
            Ok(t) => Some(t),
            Err(_) => {
                self.errors.push(format!("{name}={v:?} is not valid: expected {what}"));
                None
            }
        }
    }

    fn queue(&mut self, name: &str, required: bool) -> Option<QueueId> {
        let raw = if required { self.required(name, "a queue id (UUID)")? } else { self.raw(name)? };
        match QueueId::parse(&raw) {
            Ok(q) => Some(q),
            Err(_) => {
                self.errors.push(format!("{name}={raw:?} is not valid: expected a queue id (UUID)"));
                None
            }
        }
    }
}

impl Settings {
    /// Reads and validates every setting.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing every bad or missing setting.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader { get: &get, errors: Vec::new() };

        let client_id = r.required("GENESYS_CLIENT_ID", "the OAuth client-credentials client id");
        let client_secret = r.required("GENESYS_CLIENT_SECRET", "the OAuth client secret");
        let region = r.raw("GENESYS_REGION").unwrap_or_else(|| "us-east-1".to_owned());
        let base_url = r.raw("GENESYS_BASE_URL");
        let login_base_url = r.raw("GENESYS_LOGIN_BASE_URL");
        for (name, url) in [("GENESYS_BASE_URL", &base_url), ("GENESYS_LOGIN_BASE_URL", &login_base_url)] {
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    r.errors.push(format!("{name}={u:?} is not valid: expected an http(s) URL"));
                }
            }
        }
        if let Err(e) = handoff_genesys::Region::parse(&region) {
            if base_url.is_none() || login_base_url.is_none() {
                r.errors.push(format!("GENESYS_REGION={region:?} is not valid: {e}"));
            }
        }
        let attempt_timeout =
            Duration::from_millis(r.bounded("GENESYS_TIMEOUT_MS", 5_000, UPSTREAM_MS, "milliseconds"));
        let budget = Duration::from_millis(r.bounded("GENESYS_BUDGET_MS", 10_000, UPSTREAM_MS, "milliseconds"));
        if budget < attempt_timeout {
            r.errors.push("GENESYS_BUDGET_MS must be at least GENESYS_TIMEOUT_MS".to_owned());
        }
        let max_concurrency = r.bounded("GENESYS_MAX_CONCURRENCY", 128, COUNT, "a number") as usize;
        let outbox_concurrency = r.bounded("HANDOFF_OUTBOX_CONCURRENCY", 16, COUNT, "a number") as usize;
        if outbox_concurrency >= max_concurrency {
            r.errors.push(format!(
                "HANDOFF_OUTBOX_CONCURRENCY ({outbox_concurrency}) must be below GENESYS_MAX_CONCURRENCY \
                 ({max_concurrency}), or analytics deliveries could take every permit from live handoffs"
            ));
        }

        let target = r.queue("TARGET_QUEUE_ID", true);
        let routes = match r.raw("HANDOFF_ROUTES") {
            None => BTreeMap::new(),
            Some(raw) => RoutingPolicy::parse_routes(&raw).unwrap_or_else(|errors| {
                r.errors.extend(errors.into_iter().map(|e| format!("HANDOFF_ROUTES: {e}")));
                BTreeMap::new()
            }),
        };
        let fallback = r.queue("HANDOFF_FALLBACK_QUEUE_ID", false);
        let min_idle_agents = r.parsed("HANDOFF_MIN_IDLE_AGENTS", 1u32, "a whole number (0 turns the check off)");
        let max_waiting = r.optional("HANDOFF_MAX_WAITING", "a whole number");
        let max_wait = r.optional::<u64>("HANDOFF_MAX_WAIT_SECS", "seconds").map(Duration::from_secs);
        let defer_for = Duration::from_secs(r.bounded("HANDOFF_DEFER_FOR_SECS", 300, (0, WEEK_SECS), "seconds"));
        let recheck_every = Duration::from_secs(r.bounded("HANDOFF_RECHECK_SECS", 15, (1, DAY_SECS), "seconds"));

        let webhook_auth = match r.raw("WEBHOOK_AUTH").as_deref().unwrap_or("secret") {
            "none" => WebhookAuth::None,
            "secret" => {
                let raw = SecretString::from(r.raw("WEBHOOK_SECRET").unwrap_or_default());
                WebhookAuth::from_comma_separated(&raw).unwrap_or_else(|_| {
                    r.errors.push(
                        "WEBHOOK_SECRET is required (comma-separated shared secrets) unless WEBHOOK_AUTH=none"
                            .to_owned(),
                    );
                    WebhookAuth::None
                })
            }
            other => {
                r.errors.push(format!("WEBHOOK_AUTH={other:?} is not valid: expected secret or none"));
                WebhookAuth::None
            }
        };

        let admin_auth = match r.raw("HANDOFF_ADMIN_TOKEN") {
            None => AdminAuth::WebhookCredentials,
            Some(raw) => AdminAuth::from_comma_separated(&SecretString::from(raw)).unwrap_or_else(|e| {
                r.errors.push(e.to_string());
                AdminAuth::WebhookCredentials
            }),
        };
        if let (AdminAuth::Tokens(tokens), WebhookAuth::Secrets(secrets)) = (&admin_auth, &webhook_auth) {
            // Not a timing concern: this runs once at start, on configuration.
            let shared = tokens.iter().any(|t| secrets.iter().any(|s| s.expose_secret() == t.expose_secret()));
            if shared {
                r.errors.push(
                    "HANDOFF_ADMIN_TOKEN must differ from every WEBHOOK_SECRET, or the bot's secret could read records"
                        .to_owned(),
                );
            }
        }

        let database_url = r.raw("DATABASE_URL").unwrap_or_else(|| "sqlite://handoff.db".to_owned());
        if !["sqlite:", "postgres://", "postgresql://", "memory:"].iter().any(|p| database_url.starts_with(p)) {
            r.errors.push(format!(
                "DATABASE_URL={database_url:?} is not valid: expected sqlite://path, postgres://… or memory:"
            ));
        }
        let bind_addr = r.parsed("BIND_ADDR", IpAddr::from([0, 0, 0, 0]), "an IP address");
        let port = r.parsed("PORT", 3000u16, "a port number");
        let log_format = match r.raw("LOG_FORMAT").as_deref().unwrap_or("json") {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                r.errors.push(format!("LOG_FORMAT={other:?} is not valid: expected json or pretty"));
                LogFormat::Json
            }
        };
        // The lease must cover a transfer and its read-back (each bounded by the budget); it is
        // renewed when the transfer starts, and saves are fenced, so a shorter early phase is safe.
        let lease =
            match r.raw("HANDOFF_LEASE_SECS").map(|_| r.bounded("HANDOFF_LEASE_SECS", 0, (1, DAY_SECS), "seconds")) {
                Some(secs) => {
                    let lease = Duration::from_secs(secs);
                    if lease < budget * 2 {
                        r.errors.push(format!(
                            "HANDOFF_LEASE_SECS={secs} is too short: it must be at least twice GENESYS_BUDGET_MS \
                         ({} s) to cover a transfer and its read-back",
                            (budget * 2).as_secs_f64().ceil()
                        ));
                    }
                    lease
                }
                None => Duration::from_secs(30).max(budget * 3),
            };
        let max_in_flight = r.bounded("HANDOFF_MAX_IN_FLIGHT", 256, COUNT, "a number") as usize;
        let request_timeout = Duration::from_secs(r.bounded("HANDOFF_REQUEST_TIMEOUT_SECS", 25, (1, 3_600), "seconds"));
        let retention = Duration::from_secs(r.bounded("HANDOFF_RETENTION_DAYS", 30, (1, 3_650), "days") * DAY_SECS);

        let errors = std::mem::take(&mut r.errors);
        match (client_id, client_secret, target) {
            (Some(client_id), Some(client_secret), Some(target)) if errors.is_empty() => {
                let mut service = ServiceSettings::new(RoutingPolicy::new(target, routes, fallback));
                service.admission = AdmissionPolicy { min_idle_agents, max_waiting, max_wait };
                service.defer_for = defer_for;
                service.recheck_every = recheck_every;
                service.lease = lease;
                service.outbox_concurrency = outbox_concurrency;
                Ok(Settings {
                    genesys: GenesysSettings {
                        client_id,
                        client_secret: SecretString::from(client_secret),
                        region,
                        base_url,
                        login_base_url,
                        attempt_timeout,
                        budget,
                        max_concurrency,
                    },
                    service,
                    webhook_auth,
                    admin_auth,
                    database_url,
                    bind_addr,
                    port,
                    log_format,
                    max_in_flight,
                    request_timeout,
                    retention,
                })
            }
            _ => Err(ConfigErrors(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    const QUEUE: &str = "7b0a2a4e-5f1c-4a53-9d0e-2f6a1c3b9d01";

    #[test]
    fn a_minimal_environment_gives_the_contract_defaults() {
        let settings = Settings::from_env(env(&[
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("TARGET_QUEUE_ID", QUEUE),
            ("WEBHOOK_SECRET", "a,b"),
        ]))
        .unwrap();
        assert_eq!(settings.port, 3000);
        assert_eq!(settings.database_url, "sqlite://handoff.db");
        assert_eq!(settings.service.admission.min_idle_agents, 1);
        assert_eq!(settings.service.defer_for, Duration::from_secs(300));
        assert!(matches!(settings.webhook_auth, WebhookAuth::Secrets(ref s) if s.len() == 2));
        assert_eq!(settings.genesys.region, "us-east-1");
        assert_eq!((settings.genesys.max_concurrency, settings.service.outbox_concurrency), (128, 16));
    }

    #[test]
    fn the_outbox_share_must_leave_upstream_permits_to_live_handoffs() {
        let base = [
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("TARGET_QUEUE_ID", QUEUE),
            ("WEBHOOK_SECRET", "a"),
            ("GENESYS_MAX_CONCURRENCY", "32"),
        ];
        let with = |value: &'static str| {
            let mut pairs = base.to_vec();
            pairs.push(("HANDOFF_OUTBOX_CONCURRENCY", value));
            Settings::from_env(env(&pairs))
        };
        assert_eq!(with("8").unwrap().service.outbox_concurrency, 8);
        let text = with("32").unwrap_err().to_string();
        assert!(text.contains("HANDOFF_OUTBOX_CONCURRENCY (32) must be below GENESYS_MAX_CONCURRENCY (32)"), "{text}");
        assert!(with("0").unwrap_err().to_string().contains("HANDOFF_OUTBOX_CONCURRENCY=0 is out of range"));
    }

    #[test]
    fn every_bad_setting_is_reported_at_once() {
        let errors = Settings::from_env(env(&[
            ("TARGET_QUEUE_ID", "not-a-uuid"),
            ("HANDOFF_ROUTES", "billing=nope,broken"),
            ("PORT", "99999"),
            ("GENESYS_REGION", "mars-north-1"),
            ("LOG_FORMAT", "xml"),
        ]))
        .unwrap_err();
        let text = errors.to_string();
        for needle in [
            "GENESYS_CLIENT_ID",
            "GENESYS_CLIENT_SECRET",
            "TARGET_QUEUE_ID",
            "HANDOFF_ROUTES",
            "PORT",
            "GENESYS_REGION",
            "LOG_FORMAT",
            "WEBHOOK_SECRET",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(errors.0.len() >= 9, "{text}");
    }

    #[test]
    fn durations_and_counts_out_of_range_are_refused_with_their_range() {
        let errors = Settings::from_env(env(&[
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("TARGET_QUEUE_ID", QUEUE),
            ("WEBHOOK_SECRET", "a"),
            ("HANDOFF_DEFER_FOR_SECS", "18446744073709551615"),
            ("HANDOFF_RECHECK_SECS", "0"),
            ("HANDOFF_LEASE_SECS", "9999999999"),
            ("HANDOFF_REQUEST_TIMEOUT_SECS", "0"),
            ("GENESYS_TIMEOUT_MS", "0"),
            ("GENESYS_MAX_CONCURRENCY", "0"),
        ]))
        .unwrap_err();
        let text = errors.to_string();
        for needle in [
            "HANDOFF_DEFER_FOR_SECS=18446744073709551615 is out of range: expected seconds from 0 to 604800",
            "HANDOFF_RECHECK_SECS=0 is out of range",
            "HANDOFF_LEASE_SECS=9999999999 is out of range",
            "HANDOFF_REQUEST_TIMEOUT_SECS=0 is out of range",
            "GENESYS_TIMEOUT_MS=0 is out of range",
            "GENESYS_MAX_CONCURRENCY=0 is out of range",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn the_secret_never_appears_in_debug_output() {
        let settings = Settings::from_env(env(&[
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "topsecretvalue"),
            ("TARGET_QUEUE_ID", QUEUE),
            ("WEBHOOK_SECRET", "webhooksecretvalue"),
        ]))
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("topsecretvalue"));
        assert!(!debug.contains("webhooksecretvalue"));
    }

    #[test]
    fn retention_is_30_days_by_default_and_refused_outside_1_to_3650_days() {
        // Arrange
        let with = |days: Option<&str>| {
            let mut pairs = vec![
                ("GENESYS_CLIENT_ID", "id"),
                ("GENESYS_CLIENT_SECRET", "s3cret"),
                ("TARGET_QUEUE_ID", QUEUE),
                ("WEBHOOK_SECRET", "bot-secret"),
            ];
            if let Some(days) = days {
                pairs.push(("HANDOFF_RETENTION_DAYS", days));
            }
            Settings::from_env(env(&pairs))
        };

        // Act / Assert
        assert_eq!(with(None).unwrap().retention, Duration::from_secs(30 * 86_400));
        assert_eq!(with(Some("7")).unwrap().retention, Duration::from_secs(7 * 86_400));
        for bad in ["0", "3651", "a week"] {
            let text = with(Some(bad)).unwrap_err().to_string();
            assert!(text.contains("HANDOFF_RETENTION_DAYS"), "{bad}: {text}");
        }
        assert!(with(Some("0")).unwrap_err().to_string().contains("expected days from 1 to 3650"));
    }

    #[test]
    fn admin_tokens_are_read_comma_separated_kept_out_of_debug_and_must_differ_from_the_webhook_secrets() {
        // Arrange
        let base = [
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("TARGET_QUEUE_ID", QUEUE),
            ("WEBHOOK_SECRET", "bot-secret,old-bot-secret"),
        ];
        let with = |token: &str| {
            let mut pairs = base.to_vec();
            pairs.push(("HANDOFF_ADMIN_TOKEN", token));
            Settings::from_env(env(&pairs))
        };

        // Act
        let unset = Settings::from_env(env(&base)).unwrap();
        let two = with("admin-token-one, admin-token-two").unwrap();
        let blanks = with(" , ").unwrap_err().to_string();
        let shared = with("admin-token-one,old-bot-secret").unwrap_err().to_string();

        // Assert
        assert!(matches!(unset.admin_auth, AdminAuth::WebhookCredentials));
        assert!(matches!(two.admin_auth, AdminAuth::Tokens(ref t) if t.len() == 2));
        assert!(!format!("{two:?}").contains("admin-token-one"), "the admin token leaked into Debug");
        assert!(blanks.contains("HANDOFF_ADMIN_TOKEN must hold at least one non-empty token"), "{blanks}");
        assert!(shared.contains("HANDOFF_ADMIN_TOKEN must differ from every WEBHOOK_SECRET"), "{shared}");
        assert!(!shared.contains("old-bot-secret"), "the error must not echo the secret: {shared}");
    }
}
