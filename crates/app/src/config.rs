//! Configuration (CONTRACT §3): read from the environment (and a `.env` file in the working
//! directory, loaded by `main`), validated all at once. Every bad or missing setting is reported on
//! its own line; nothing panics.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use handoff_domain::{AdmissionPolicy, CapacityModel, IdRules, QueueId, RoutingPolicy, ServiceSettings};
use handoff_genesys::{GenesysIds, MessageCapacitySource};
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
    /// `GENESYS_BACKGROUND_RESERVE_PERCENT`: share of the rate-limit allowance background work
    /// leaves to live handoffs.
    pub reserve_percent: u8,
    /// `GENESYS_NOTIFICATIONS`: whether queue figures are pushed over a Notifications channel.
    pub notifications: bool,
    /// `GENESYS_FIGURES_MAX_AGE_SECS`: pushed figures older than this are not used (polling is).
    pub figures_max_age: Duration,
    /// Where the message capacity comes from: `HANDOFF_MESSAGE_CAPACITY`, else the org's
    /// utilization; not read at all when the admission rule does not need it.
    pub message_capacity: MessageCapacitySource,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The platform's id formats ([`platform_ids`]): the configured queues were parsed with them,
    /// and the HTTP entry checks the webhook's ids and the read side's parameters with them.
    pub ids: Arc<dyn IdRules>,
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
    /// `HANDOFF_HEARTBEAT_SECS` (PostgreSQL ledger): how often this instance beats; its leases are
    /// taken over once it misses three beats.
    pub heartbeat_every: Duration,
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

/// The id rules of the contact-center platform: Genesys' for now (`HANDOFF_PLATFORM` will choose).
pub fn platform_ids() -> Arc<dyn IdRules> {
    Arc::new(GenesysIds)
}

/// Reads variables through `get`, so tests need no process environment.
struct Reader<'a, F: Fn(&str) -> Option<String>> {
    get: &'a F,
    /// The platform's id rules, for the queue ids.
    ids: Arc<dyn IdRules>,
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

    /// A queue id, checked by the platform's rules; the error names the variable and says what
    /// the rules want (`TARGET_QUEUE_ID="x" is not valid: the queue id must be a UUID`).
    fn queue(&mut self, name: &str, required: bool) -> Option<QueueId> {
        let raw = if required { self.required(name, "the platform's queue id")? } else { self.raw(name)? };
        match QueueId::parse_with(self.ids.as_ref(), &raw) {
            Ok(q) => Some(q),
            Err(e) => {
                self.errors.push(format!("{name}={raw:?} is not valid: the queue id {}", e.problem));
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
        let ids = platform_ids();
        let mut r = Reader { get: &get, ids: Arc::clone(&ids), errors: Vec::new() };

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
        let reserve_percent =
            u8::try_from(r.bounded("GENESYS_BACKGROUND_RESERVE_PERCENT", 20, (0, 90), "a percentage")).unwrap_or(90);
        let notifications = match r.raw("GENESYS_NOTIFICATIONS").as_deref().unwrap_or("on") {
            "on" | "true" | "1" => true,
            "off" | "false" | "0" => false,
            other => {
                r.errors.push(format!("GENESYS_NOTIFICATIONS={other:?} is not valid: expected on or off"));
                true
            }
        };
        let figures_max_age = Duration::from_secs(r.bounded("GENESYS_FIGURES_MAX_AGE_SECS", 10, (1, 3_600), "seconds"));
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
            Some(raw) => RoutingPolicy::parse_routes(&raw, r.ids.as_ref()).unwrap_or_else(|errors| {
                r.errors.extend(errors.into_iter().map(|e| format!("HANDOFF_ROUTES: {e}")));
                BTreeMap::new()
            }),
        };
        let fallback = r.queue("HANDOFF_FALLBACK_QUEUE_ID", false);
        let admission_model = admission_model(&mut r);
        let message_capacity = r
            .raw("HANDOFF_MESSAGE_CAPACITY")
            .map(|_| r.bounded("HANDOFF_MESSAGE_CAPACITY", 1, (1, 1_000), "conversations per agent") as u32);
        let external_tag = match r.raw("HANDOFF_EXTERNAL_TAG").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("true" | "on" | "1" | "yes") => true,
            Some("false" | "off" | "0" | "no") => false,
            Some(other) => {
                r.errors.push(format!("HANDOFF_EXTERNAL_TAG={other:?} is not valid: expected true or false"));
                true
            }
        };
        let max_waiting = r.optional("HANDOFF_MAX_WAITING", "a whole number");
        let max_wait = r.optional::<u64>("HANDOFF_MAX_WAIT_SECS", "seconds").map(Duration::from_secs);
        let defer_for = Duration::from_secs(r.bounded("HANDOFF_DEFER_FOR_SECS", 300, (0, WEEK_SECS), "seconds"));
        let recheck_every = Duration::from_secs(r.bounded("HANDOFF_RECHECK_SECS", 15, (1, DAY_SECS), "seconds"));
        // The first confirmation read is 5 s after the advice, so a shorter window means one read.
        let confirm_for = Duration::from_secs(r.bounded("HANDOFF_CONFIRM_SECS", 120, (5, DAY_SECS), "seconds"));

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
        let resume_after = Duration::from_secs(r.bounded("HANDOFF_RESUME_AFTER_SECS", 120, (1, WEEK_SECS), "seconds"));
        let heartbeat_every = Duration::from_secs(r.bounded("HANDOFF_HEARTBEAT_SECS", 1, (1, 60), "seconds"));
        let max_in_flight = r.bounded("HANDOFF_MAX_IN_FLIGHT", 256, COUNT, "a number") as usize;
        let request_timeout = Duration::from_secs(r.bounded("HANDOFF_REQUEST_TIMEOUT_SECS", 25, (1, 3_600), "seconds"));
        let retention = Duration::from_secs(r.bounded("HANDOFF_RETENTION_DAYS", 30, (1, 3_650), "days") * DAY_SECS);

        let errors = std::mem::take(&mut r.errors);
        match (client_id, client_secret, target) {
            (Some(client_id), Some(client_secret), Some(target)) if errors.is_empty() => {
                let mut service = ServiceSettings::new(RoutingPolicy::new(target, routes, fallback));
                let (model, minimum) = admission_model;
                service.admission = AdmissionPolicy { model, minimum, max_waiting, max_wait };
                service.external_tag = external_tag;
                let message_capacity = match message_capacity {
                    _ if !service.admission.needs_message_capacity() => MessageCapacitySource::NotNeeded,
                    Some(n) => MessageCapacitySource::Fixed(n),
                    None => MessageCapacitySource::Utilization,
                };
                service.defer_for = defer_for;
                service.recheck_every = recheck_every;
                service.confirm_for = confirm_for;
                service.lease = lease;
                service.outbox_concurrency = outbox_concurrency;
                service.resume_after = resume_after;
                Ok(Settings {
                    ids,
                    genesys: GenesysSettings {
                        client_id,
                        client_secret: SecretString::from(client_secret),
                        region,
                        base_url,
                        login_base_url,
                        attempt_timeout,
                        budget,
                        max_concurrency,
                        reserve_percent,
                        notifications,
                        figures_max_age,
                        message_capacity,
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
                    heartbeat_every,
                    retention,
                })
            }
            _ => Err(ConfigErrors(errors)),
        }
    }
}

/// `HANDOFF_CAPACITY_MODEL` and its minimum. `slots` (default) takes `HANDOFF_MIN_FREE_SLOTS`
/// (default 1); a configuration from before free slots that sets only `HANDOFF_MIN_IDLE_AGENTS=N`
/// keeps working as "at least N free slots" (an idle agent is at least one free slot; 0 still
/// turns the check off). `idle` takes `HANDOFF_MIN_IDLE_AGENTS` (default 1). Setting the other
/// model's minimum, or both minimums under `slots`, is an error naming both variables.
fn admission_model<F: Fn(&str) -> Option<String>>(r: &mut Reader<'_, F>) -> (CapacityModel, u32) {
    const RANGE: (u64, u64) = (0, 100_000);
    let model = match r.raw("HANDOFF_CAPACITY_MODEL").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("slots") => CapacityModel::Slots,
        Some("idle") => CapacityModel::Idle,
        Some(other) => {
            r.errors.push(format!("HANDOFF_CAPACITY_MODEL={other:?} is not valid: expected slots or idle"));
            CapacityModel::Slots
        }
    };
    let slots = r.raw("HANDOFF_MIN_FREE_SLOTS").map(|_| {
        r.bounded("HANDOFF_MIN_FREE_SLOTS", 1, RANGE, "a whole number of slots (0 turns the check off)") as u32
    });
    let idle = r.raw("HANDOFF_MIN_IDLE_AGENTS").map(|_| {
        r.bounded("HANDOFF_MIN_IDLE_AGENTS", 1, RANGE, "a whole number of agents (0 turns the check off)") as u32
    });
    let minimum = match (model, slots, idle) {
        (CapacityModel::Slots, Some(_), Some(_)) => {
            r.errors.push(
                "HANDOFF_MIN_FREE_SLOTS and HANDOFF_MIN_IDLE_AGENTS are both set: with HANDOFF_CAPACITY_MODEL=slots \
                 set only HANDOFF_MIN_FREE_SLOTS"
                    .to_owned(),
            );
            1
        }
        (CapacityModel::Slots, slots, idle) => slots.or(idle).unwrap_or(1),
        (CapacityModel::Idle, Some(_), _) => {
            r.errors.push(
                "HANDOFF_MIN_FREE_SLOTS applies to HANDOFF_CAPACITY_MODEL=slots; with idle set HANDOFF_MIN_IDLE_AGENTS"
                    .to_owned(),
            );
            1
        }
        (CapacityModel::Idle, None, idle) => idle.unwrap_or(1),
    };
    (model, minimum)
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
        assert_eq!(settings.service.admission.minimum, 1);
        assert_eq!(settings.service.defer_for, Duration::from_secs(300));
        assert_eq!(settings.service.confirm_for, Duration::from_secs(120));
        assert!(matches!(settings.webhook_auth, WebhookAuth::Secrets(ref s) if s.len() == 2));
        assert_eq!(settings.genesys.region, "us-east-1");
        assert_eq!((settings.genesys.max_concurrency, settings.service.outbox_concurrency), (128, 16));
        assert_eq!(settings.service.resume_after, Duration::from_secs(120));
        assert_eq!(settings.heartbeat_every, Duration::from_secs(1));
    }

    #[test]
    fn resume_after_and_the_heartbeat_are_read_and_bounded() {
        let base = [
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("TARGET_QUEUE_ID", QUEUE),
            ("WEBHOOK_SECRET", "a"),
        ];
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(pairs);
            Settings::from_env(env(&all))
        };
        let set = with(&[("HANDOFF_RESUME_AFTER_SECS", "30"), ("HANDOFF_HEARTBEAT_SECS", "5")]).unwrap();
        assert_eq!((set.service.resume_after, set.heartbeat_every), (Duration::from_secs(30), Duration::from_secs(5)));
        let text =
            with(&[("HANDOFF_RESUME_AFTER_SECS", "0"), ("HANDOFF_HEARTBEAT_SECS", "61")]).unwrap_err().to_string();
        assert!(
            text.contains("HANDOFF_RESUME_AFTER_SECS=0 is out of range: expected seconds from 1 to 604800"),
            "{text}"
        );
        assert!(text.contains("HANDOFF_HEARTBEAT_SECS=61 is out of range: expected seconds from 1 to 60"), "{text}");
        let text = with(&[("HANDOFF_RESUME_AFTER_SECS", "soon")]).unwrap_err().to_string();
        assert!(text.contains("HANDOFF_RESUME_AFTER_SECS=\"soon\" is not valid: expected seconds"), "{text}");
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
    fn the_budget_and_channel_settings_have_defaults_ranges_and_named_errors() {
        let base = [
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("TARGET_QUEUE_ID", QUEUE),
            ("WEBHOOK_SECRET", "a"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            Settings::from_env(env(&pairs))
        };
        let defaults = with(&[]).unwrap().genesys;
        assert_eq!((defaults.reserve_percent, defaults.notifications), (20, true));
        assert_eq!(defaults.figures_max_age, Duration::from_secs(10));
        let set = with(&[
            ("GENESYS_BACKGROUND_RESERVE_PERCENT", "35"),
            ("GENESYS_NOTIFICATIONS", "off"),
            ("GENESYS_FIGURES_MAX_AGE_SECS", "30"),
        ])
        .unwrap()
        .genesys;
        assert_eq!((set.reserve_percent, set.notifications, set.figures_max_age.as_secs()), (35, false, 30));
        let errors = with(&[
            ("GENESYS_BACKGROUND_RESERVE_PERCENT", "95"),
            ("GENESYS_NOTIFICATIONS", "maybe"),
            ("GENESYS_FIGURES_MAX_AGE_SECS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(errors.contains("GENESYS_BACKGROUND_RESERVE_PERCENT=95 is out of range"), "{errors}");
        assert!(errors.contains("GENESYS_NOTIFICATIONS=\"maybe\" is not valid"), "{errors}");
        assert!(errors.contains("GENESYS_FIGURES_MAX_AGE_SECS=0 is out of range"), "{errors}");
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
    fn queue_ids_are_checked_by_the_platform_rules_and_the_errors_name_the_variable() {
        // Act
        let errors = Settings::from_env(env(&[
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("WEBHOOK_SECRET", "hook"),
            ("TARGET_QUEUE_ID", "support"),
            ("HANDOFF_ROUTES", &format!("billing={QUEUE},sales=0123456789abcdef01234567")),
            ("HANDOFF_FALLBACK_QUEUE_ID", "../../admin"),
        ]))
        .unwrap_err();

        // Assert
        assert_eq!(
            errors.0,
            [
                "TARGET_QUEUE_ID=\"support\" is not valid: the queue id must be a UUID",
                "HANDOFF_ROUTES: route \"sales=0123456789abcdef01234567\": the queue id must be a UUID",
                "HANDOFF_FALLBACK_QUEUE_ID=\"../../admin\" is not valid: the queue id must be a UUID",
            ]
        );
    }

    #[test]
    fn configured_queue_ids_are_kept_in_the_platform_canonical_form() {
        let settings = Settings::from_env(env(&[
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("WEBHOOK_SECRET", "hook"),
            ("TARGET_QUEUE_ID", &QUEUE.to_uppercase()),
        ]))
        .unwrap();
        assert_eq!(settings.service.routing.default_queue().as_str(), QUEUE.to_lowercase());
        assert_eq!(format!("{:?}", settings.ids), "GenesysIds");
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
            ("HANDOFF_CONFIRM_SECS", "4"),
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
            "HANDOFF_CONFIRM_SECS=4 is out of range: expected seconds from 5 to 86400",
            "HANDOFF_LEASE_SECS=9999999999 is out of range",
            "HANDOFF_REQUEST_TIMEOUT_SECS=0 is out of range",
            "GENESYS_TIMEOUT_MS=0 is out of range",
            "GENESYS_MAX_CONCURRENCY=0 is out of range",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    fn with_admission(pairs: &[(&'static str, &'static str)]) -> Result<Settings, ConfigErrors> {
        let mut all = vec![
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
            ("TARGET_QUEUE_ID", QUEUE),
            ("WEBHOOK_SECRET", "a"),
        ];
        all.extend_from_slice(pairs);
        Settings::from_env(env(&all))
    }

    #[test]
    fn free_slots_are_the_default_capacity_model_read_from_the_utilization() {
        let settings = with_admission(&[]).unwrap();
        let admission = settings.service.admission;
        assert_eq!((admission.model, admission.minimum), (CapacityModel::Slots, 1));
        assert_eq!(settings.genesys.message_capacity, MessageCapacitySource::Utilization);
        assert!(settings.service.external_tag);
    }

    #[test]
    fn an_old_min_idle_agents_setting_keeps_working_as_a_minimum_of_free_slots() {
        let old = with_admission(&[("HANDOFF_MIN_IDLE_AGENTS", "2")]).unwrap().service.admission;
        assert_eq!((old.model, old.minimum), (CapacityModel::Slots, 2));
        let off = with_admission(&[("HANDOFF_MIN_IDLE_AGENTS", "0")]).unwrap();
        assert!(!off.service.admission.checks_capacity());
        assert_eq!(
            off.genesys.message_capacity,
            MessageCapacitySource::NotNeeded,
            "nothing to read with the check off"
        );
        let idle = with_admission(&[("HANDOFF_CAPACITY_MODEL", "idle"), ("HANDOFF_MIN_IDLE_AGENTS", "3")]).unwrap();
        assert_eq!((idle.service.admission.model, idle.service.admission.minimum), (CapacityModel::Idle, 3));
        assert_eq!(idle.genesys.message_capacity, MessageCapacitySource::NotNeeded);
    }

    #[test]
    fn the_capacity_settings_are_checked_and_name_their_variable() {
        let slots = with_admission(&[("HANDOFF_MIN_FREE_SLOTS", "4"), ("HANDOFF_MESSAGE_CAPACITY", "3")]).unwrap();
        assert_eq!(slots.service.admission.minimum, 4);
        assert_eq!(slots.genesys.message_capacity, MessageCapacitySource::Fixed(3));
        for (pairs, needle) in [
            (&[("HANDOFF_CAPACITY_MODEL", "agents")][..], "HANDOFF_CAPACITY_MODEL=\"agents\" is not valid"),
            (&[("HANDOFF_MIN_FREE_SLOTS", "-1")][..], "HANDOFF_MIN_FREE_SLOTS=\"-1\" is not valid"),
            (&[("HANDOFF_MESSAGE_CAPACITY", "0")][..], "HANDOFF_MESSAGE_CAPACITY=0 is out of range"),
            (&[("HANDOFF_MIN_FREE_SLOTS", "1"), ("HANDOFF_MIN_IDLE_AGENTS", "1")][..], "both set"),
            (
                &[("HANDOFF_CAPACITY_MODEL", "idle"), ("HANDOFF_MIN_FREE_SLOTS", "1")][..],
                "HANDOFF_MIN_FREE_SLOTS applies",
            ),
            (&[("HANDOFF_EXTERNAL_TAG", "maybe")][..], "HANDOFF_EXTERNAL_TAG=\"maybe\" is not valid"),
        ] {
            let text = with_admission(pairs).unwrap_err().to_string();
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(!with_admission(&[("HANDOFF_EXTERNAL_TAG", "false")]).unwrap().service.external_tag);
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
