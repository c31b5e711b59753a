//! [`SunshineConfig`]: app, key, base URL (region), auth mode, switchboard integrations, metadata
//! keys, id format, confirmation reads, timeouts, and the optional Zendesk Support credentials for
//! capacity. [`SunshineConfig::from_settings`] reads the `SUNSHINE_*` / `ZENDESK_SUPPORT_*`
//! settings of ADR 0004 §8, naming the variable in every error.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::error::{invalid, Result};
use crate::ids::{is_opaque, IdFormat};

/// Default time limit of one HTTP attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time limit of one operation, all attempts and waits included.
pub const DEFAULT_TOTAL_BUDGET: Duration = Duration::from_secs(10);
/// Default cap on concurrent upstream calls.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// Default attempts per operation, the first one included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default confirming reads after a `200` to passControl.
pub const DEFAULT_CONFIRM_READS: u32 = 3;
/// Default pause between confirming reads.
pub const DEFAULT_CONFIRM_INTERVAL: Duration = Duration::from_millis(150);
/// Default longest wait for an accepted passControl to show (`PlatformRules::confirm_within`).
pub const DEFAULT_CONFIRM_WITHIN: Duration = Duration::from_secs(30);
/// Default metadata key of the routing target (the Zendesk group).
pub const DEFAULT_GROUP_KEY: &str = "bot_handoff_group";
/// Default lifetime of a cached group availability.
pub const DEFAULT_CAPACITY_TTL: Duration = Duration::from_secs(1);
/// How long background work waits after a 429 without `Retry-After`.
pub const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(30);

/// How calls authenticate (api-notes §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// `Authorization: Basic` key id : secret.
    #[default]
    Basic,
    /// `Authorization: Bearer` an app-scoped HS256 JWT (`kid` = key id, `scope: app`).
    Jwt,
}

/// Whether `locate` reads the latest messages to see `conversation:endedByUser` (api-notes §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndedCheck {
    /// No extra read: a conversation is never reported ended (the default).
    #[default]
    Off,
    /// One `GET …/messages` per lookup.
    Messages,
}

/// The Sunshine regions of legacy (pre-Zendesk) accounts (spec `servers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// `https://api.smooch.io`.
    Us,
    /// `https://api.eu-1.smooch.io`.
    Eu,
}

impl Region {
    /// The API base URL.
    pub fn base_url(self) -> Url {
        let raw = match self {
            Self::Us => "https://api.smooch.io/",
            Self::Eu => "https://api.eu-1.smooch.io/",
        };
        Url::parse(raw).unwrap_or_else(|_| unreachable!("constant URL"))
    }
}

/// Zendesk Support credentials for capacity (`GET /api/v2/agent_availabilities`) and checks.
#[derive(Debug, Clone)]
pub struct SupportConfig {
    /// `https://{subdomain}.zendesk.com/` (or an override).
    pub base_url: Url,
    /// The agent's e-mail (`{email}/token` is the Basic user name).
    pub email: String,
    /// The API token.
    pub api_token: SecretString,
}

/// Everything [`SunshineClient::new`](crate::SunshineClient::new) needs. `Debug` is safe to log:
/// secrets print as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct SunshineConfig {
    /// The app id (`/v2/apps/{appId}`).
    pub app_id: String,
    /// The app key id (Basic user; JWT `kid`).
    pub key_id: String,
    /// The app key secret.
    pub key_secret: SecretString,
    /// API base: `https://{subdomain}.zendesk.com/sc/`, a region's, or an override.
    pub base_url: Url,
    /// Basic or JWT.
    pub auth: AuthMode,
    /// JWT lifetime (`exp` claim); `None`: no `exp` (api-notes §2 leaves open whether it is needed).
    pub jwt_ttl: Option<Duration>,
    /// The agent-side switchboard integration: an id or a name (resolved to an id at startup).
    pub agent_integration: String,
    /// The bot's switchboard integration (id or name), when set: only it counts as the bot.
    pub bot_integration: Option<String>,
    /// Metadata key of the Zendesk group.
    pub group_key: String,
    /// Metadata key of the tags (`bot_handoff_reason_<reason> bot_handoff_group_<group>`); none
    /// when unset.
    pub tags_key: Option<String>,
    /// Conversation / participant id format.
    pub id_format: IdFormat,
    /// Whether `locate` reads messages to see an ended conversation.
    pub ended_check: EndedCheck,
    /// A conversation no integration controls is transferable (`BotHolds`) instead of `Unheld`.
    pub allow_uncontrolled: bool,
    /// Confirming reads after a `200` to passControl (0: every transfer is `Accepted`).
    pub confirm_reads: u32,
    /// Pause between confirming reads.
    pub confirm_interval: Duration,
    /// Longest wait for an accepted passControl to show.
    pub confirm_within: Duration,
    /// Time limit of one attempt.
    pub attempt_timeout: Duration,
    /// Time limit of one operation.
    pub total_budget: Duration,
    /// Cap on concurrent upstream calls.
    pub max_concurrency: usize,
    /// Attempts per operation (≥ 1); a 401 answered by re-authenticating gets one extra.
    pub max_attempts: u32,
    /// Zendesk Support credentials; `None`: capacity is unknown.
    pub support: Option<SupportConfig>,
    /// Lifetime of a cached group availability.
    pub capacity_ttl: Duration,
}

impl SunshineConfig {
    /// A configuration with the defaults.
    pub fn new(
        app_id: impl Into<String>,
        key_id: impl Into<String>,
        key_secret: SecretString,
        base_url: Url,
        agent_integration: impl Into<String>,
    ) -> Self {
        Self {
            app_id: app_id.into(),
            key_id: key_id.into(),
            key_secret,
            base_url,
            auth: AuthMode::Basic,
            jwt_ttl: None,
            agent_integration: agent_integration.into(),
            bot_integration: None,
            group_key: DEFAULT_GROUP_KEY.to_owned(),
            tags_key: None,
            id_format: IdFormat::Hex24,
            ended_check: EndedCheck::Off,
            allow_uncontrolled: false,
            confirm_reads: DEFAULT_CONFIRM_READS,
            confirm_interval: DEFAULT_CONFIRM_INTERVAL,
            confirm_within: DEFAULT_CONFIRM_WITHIN,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            total_budget: DEFAULT_TOTAL_BUDGET,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            support: None,
            capacity_ttl: DEFAULT_CAPACITY_TTL,
        }
    }

    /// Reads the settings through `get` (the environment, or a map in tests). Blank values count
    /// as unset.
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `SUNSHINE_APP_ID`, `SUNSHINE_KEY_ID`, `SUNSHINE_KEY_SECRET` | required |
    /// | `SUNSHINE_SUBDOMAIN` \| `SUNSHINE_REGION` (`us`, `eu`) \| `SUNSHINE_BASE_URL` | exactly one |
    /// | `SUNSHINE_AUTH` | `basic` (default) or `jwt`; `SUNSHINE_JWT_TTL_SECS` optional |
    /// | `SUNSHINE_AGENT_INTEGRATION` | required: the agent-side switchboard integration id or name |
    /// | `SUNSHINE_BOT_INTEGRATION` | optional |
    /// | `SUNSHINE_GROUP_KEY` (default `bot_handoff_group`), `SUNSHINE_TAGS_KEY` | metadata keys |
    /// | `SUNSHINE_ID_FORMAT` | `hex24` (default) or `opaque` |
    /// | `SUNSHINE_ENDED_CHECK` | `off` (default) or `messages` |
    /// | `SUNSHINE_ALLOW_UNCONTROLLED` | `true`/`false` (default) |
    /// | `SUNSHINE_CONFIRM_READS` (0–10, 3), `SUNSHINE_CONFIRM_WITHIN_SECS` (1–600, 30) | confirmation |
    /// | `SUNSHINE_TIMEOUT_MS` (5000), `SUNSHINE_BUDGET_MS` (10000), `SUNSHINE_MAX_CONCURRENCY` (64) | limits |
    /// | `ZENDESK_SUPPORT_EMAIL` + `ZENDESK_SUPPORT_API_TOKEN` | both or neither: capacity |
    /// | `ZENDESK_SUPPORT_BASE_URL` | override; default `https://{SUNSHINE_SUBDOMAIN}.zendesk.com` |
    ///
    /// # Errors
    /// [`SunshineError::InvalidSetting`](crate::SunshineError::InvalidSetting) naming the first
    /// bad variable.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required =
            |name: &'static str| get(name).ok_or_else(|| invalid(name, "is required for HANDOFF_PLATFORM=sunshine"));
        let app_id = required("SUNSHINE_APP_ID")?;
        if !is_opaque(&app_id) {
            return Err(invalid("SUNSHINE_APP_ID", "must be 1 to 64 characters of A-Z a-z 0-9 - . _ ~"));
        }
        let key_id = required("SUNSHINE_KEY_ID")?;
        if !is_opaque(&key_id) {
            return Err(invalid("SUNSHINE_KEY_ID", "must be 1 to 64 characters of A-Z a-z 0-9 - . _ ~"));
        }
        let key_secret = SecretString::from(required("SUNSHINE_KEY_SECRET")?);
        let subdomain = get("SUNSHINE_SUBDOMAIN");
        let base_url = match (subdomain.as_deref(), get("SUNSHINE_REGION"), get("SUNSHINE_BASE_URL")) {
            (Some(sub), None, None) => subdomain_url(sub, "SUNSHINE_SUBDOMAIN", "sc/")?,
            (None, Some(region), None) => match region.to_ascii_lowercase().as_str() {
                "us" => Region::Us.base_url(),
                "eu" => Region::Eu.base_url(),
                _ => return Err(invalid("SUNSHINE_REGION", "must be us or eu")),
            },
            (None, None, Some(raw)) => parse_base("SUNSHINE_BASE_URL", &raw)?,
            (None, None, None) => {
                return Err(invalid(
                    "SUNSHINE_SUBDOMAIN",
                    "one of SUNSHINE_SUBDOMAIN, SUNSHINE_REGION, SUNSHINE_BASE_URL is required",
                ))
            }
            _ => {
                return Err(invalid(
                    "SUNSHINE_SUBDOMAIN",
                    "set only one of SUNSHINE_SUBDOMAIN, SUNSHINE_REGION, SUNSHINE_BASE_URL",
                ))
            }
        };
        let agent = required("SUNSHINE_AGENT_INTEGRATION")?;
        let mut config = Self::new(app_id, key_id, key_secret, base_url, agent);
        config.auth = match get("SUNSHINE_AUTH").as_deref() {
            None | Some("basic") => AuthMode::Basic,
            Some("jwt") => AuthMode::Jwt,
            Some(_) => return Err(invalid("SUNSHINE_AUTH", "must be basic or jwt")),
        };
        config.jwt_ttl = number(&get, "SUNSHINE_JWT_TTL_SECS", 60, 86_400)?.map(Duration::from_secs);
        config.bot_integration = get("SUNSHINE_BOT_INTEGRATION");
        if let Some(key) = get("SUNSHINE_GROUP_KEY") {
            config.group_key = metadata_key("SUNSHINE_GROUP_KEY", key)?;
        }
        config.tags_key = get("SUNSHINE_TAGS_KEY").map(|k| metadata_key("SUNSHINE_TAGS_KEY", k)).transpose()?;
        if let Some(raw) = get("SUNSHINE_ID_FORMAT") {
            config.id_format = IdFormat::parse(&raw).map_err(|p| invalid("SUNSHINE_ID_FORMAT", p))?;
        }
        config.ended_check = match get("SUNSHINE_ENDED_CHECK").as_deref() {
            None | Some("off") => EndedCheck::Off,
            Some("messages") => EndedCheck::Messages,
            Some(_) => return Err(invalid("SUNSHINE_ENDED_CHECK", "must be off or messages")),
        };
        config.allow_uncontrolled = match get("SUNSHINE_ALLOW_UNCONTROLLED").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid("SUNSHINE_ALLOW_UNCONTROLLED", "must be true or false")),
        };
        if let Some(n) = number(&get, "SUNSHINE_CONFIRM_READS", 0, 10)? {
            config.confirm_reads = u32::try_from(n).unwrap_or(DEFAULT_CONFIRM_READS);
        }
        if let Some(n) = number(&get, "SUNSHINE_CONFIRM_WITHIN_SECS", 1, 600)? {
            config.confirm_within = Duration::from_secs(n);
        }
        if let Some(n) = number(&get, "SUNSHINE_TIMEOUT_MS", 100, 60_000)? {
            config.attempt_timeout = Duration::from_millis(n);
        }
        if let Some(n) = number(&get, "SUNSHINE_BUDGET_MS", 100, 120_000)? {
            config.total_budget = Duration::from_millis(n);
        }
        if config.total_budget < config.attempt_timeout {
            return Err(invalid("SUNSHINE_BUDGET_MS", "must be at least SUNSHINE_TIMEOUT_MS"));
        }
        if let Some(n) = number(&get, "SUNSHINE_MAX_CONCURRENCY", 1, 10_000)? {
            config.max_concurrency = usize::try_from(n).unwrap_or(DEFAULT_MAX_CONCURRENCY);
        }
        config.support = match (get("ZENDESK_SUPPORT_EMAIL"), get("ZENDESK_SUPPORT_API_TOKEN")) {
            (None, None) => None,
            (Some(email), Some(token)) => {
                let base_url = match (get("ZENDESK_SUPPORT_BASE_URL"), subdomain.as_deref()) {
                    (Some(raw), _) => parse_base("ZENDESK_SUPPORT_BASE_URL", &raw)?,
                    (None, Some(sub)) => subdomain_url(sub, "SUNSHINE_SUBDOMAIN", "")?,
                    (None, None) => {
                        return Err(invalid(
                            "ZENDESK_SUPPORT_BASE_URL",
                            "is required with ZENDESK_SUPPORT_EMAIL when SUNSHINE_SUBDOMAIN is not set",
                        ))
                    }
                };
                if !email.contains('@') || email.contains(':') {
                    return Err(invalid("ZENDESK_SUPPORT_EMAIL", "must be an e-mail address"));
                }
                Some(SupportConfig { base_url, email, api_token: SecretString::from(token) })
            }
            (Some(_), None) => {
                return Err(invalid("ZENDESK_SUPPORT_API_TOKEN", "is required with ZENDESK_SUPPORT_EMAIL"))
            }
            (None, Some(_)) => {
                return Err(invalid("ZENDESK_SUPPORT_EMAIL", "is required with ZENDESK_SUPPORT_API_TOKEN"))
            }
        };
        Ok(config)
    }

    /// Checks the limits.
    ///
    /// # Errors
    /// [`SunshineError::InvalidSetting`](crate::SunshineError::InvalidSetting) naming the setting.
    pub fn validate(&self) -> Result<()> {
        if self.attempt_timeout.is_zero() {
            return Err(invalid("SUNSHINE_TIMEOUT_MS", "must be positive"));
        }
        if self.total_budget < self.attempt_timeout {
            return Err(invalid("SUNSHINE_BUDGET_MS", "must be at least SUNSHINE_TIMEOUT_MS"));
        }
        if self.max_concurrency == 0 || self.max_concurrency > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid("SUNSHINE_MAX_CONCURRENCY", "must be at least 1"));
        }
        if self.max_attempts == 0 {
            return Err(invalid("SUNSHINE_MAX_ATTEMPTS", "must be at least 1"));
        }
        if self.agent_integration.trim().is_empty() {
            return Err(invalid("SUNSHINE_AGENT_INTEGRATION", "is empty"));
        }
        if !is_opaque(&self.app_id) {
            return Err(invalid("SUNSHINE_APP_ID", "must be 1 to 64 characters of A-Z a-z 0-9 - . _ ~"));
        }
        Ok(())
    }
}

fn number(get: &impl Fn(&str) -> Option<String>, name: &'static str, min: u64, max: u64) -> Result<Option<u64>> {
    match get(name) {
        None => Ok(None),
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| invalid(name, format!("must be a whole number from {min} to {max}"))),
    }
}

fn metadata_key(name: &'static str, key: String) -> Result<String> {
    let ok = key.len() <= 128 && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(key)
    } else {
        Err(invalid(name, "must be at most 128 characters of A-Z a-z 0-9 _ . -"))
    }
}

/// `https://{subdomain}.zendesk.com/{path}`; the subdomain must be a DNS label.
fn subdomain_url(sub: &str, setting: &'static str, path: &str) -> Result<Url> {
    let label = !sub.is_empty()
        && sub.len() <= 63
        && sub.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !sub.starts_with('-')
        && !sub.ends_with('-');
    if !label {
        return Err(invalid(setting, "must be a DNS label: 1 to 63 characters of a-z 0-9 -"));
    }
    Url::parse(&format!("https://{sub}.zendesk.com/{path}")).map_err(|e| invalid(setting, e.to_string()))
}

fn parse_base(setting: &'static str, raw: &str) -> Result<Url> {
    let mut url = Url::parse(raw).map_err(|e| invalid(setting, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(setting, "expected an absolute http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(setting, "must not have credentials, a query or a fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::SunshineError;

    fn settings(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut map: HashMap<String, String> = [
            ("SUNSHINE_APP_ID", "5d8cff3cd55b040010928b5b"),
            ("SUNSHINE_KEY_ID", "app_5723a347f82ba0516cb4ea34"),
            ("SUNSHINE_KEY_SECRET", "s3cr3t-value"),
            ("SUNSHINE_AGENT_INTEGRATION", "zd-agentWorkspace"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in pairs {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        move |name| map.get(name).cloned()
    }

    fn setting_of(error: SunshineError) -> &'static str {
        match error {
            SunshineError::InvalidSetting { setting, .. } => setting,
            other => panic!("not a setting error: {other}"),
        }
    }

    #[test]
    fn the_base_url_comes_from_exactly_one_of_subdomain_region_and_override() {
        let sub = SunshineConfig::from_settings(settings(&[("SUNSHINE_SUBDOMAIN", "acme")])).unwrap();
        let eu = SunshineConfig::from_settings(settings(&[("SUNSHINE_REGION", "EU")])).unwrap();
        let sim = SunshineConfig::from_settings(settings(&[("SUNSHINE_BASE_URL", "http://127.0.0.1:8090")])).unwrap();
        assert_eq!(sub.base_url.as_str(), "https://acme.zendesk.com/sc/");
        assert_eq!(eu.base_url.as_str(), "https://api.eu-1.smooch.io/");
        assert_eq!(sim.base_url.as_str(), "http://127.0.0.1:8090/");
        let none = SunshineConfig::from_settings(settings(&[])).unwrap_err();
        let two = SunshineConfig::from_settings(settings(&[("SUNSHINE_SUBDOMAIN", "acme"), ("SUNSHINE_REGION", "us")]));
        let bad = SunshineConfig::from_settings(settings(&[("SUNSHINE_SUBDOMAIN", "evil.com/x")]));
        assert_eq!(setting_of(none), "SUNSHINE_SUBDOMAIN");
        assert!(two.is_err());
        assert_eq!(setting_of(bad.unwrap_err()), "SUNSHINE_SUBDOMAIN");
    }

    #[test]
    fn defaults_follow_the_adr_and_secrets_never_print() {
        let config = SunshineConfig::from_settings(settings(&[
            ("SUNSHINE_SUBDOMAIN", "acme"),
            ("ZENDESK_SUPPORT_EMAIL", "ops@acme.test"),
            ("ZENDESK_SUPPORT_API_TOKEN", "t0ken-value"),
        ]))
        .unwrap();
        assert_eq!(config.auth, AuthMode::Basic);
        assert_eq!(config.group_key, "bot_handoff_group");
        assert_eq!(config.tags_key, None);
        assert_eq!(config.confirm_reads, 3);
        assert_eq!(config.confirm_within, Duration::from_secs(30));
        assert_eq!(config.id_format, IdFormat::Hex24);
        assert_eq!(config.support.as_ref().map(|s| s.base_url.as_str()), Some("https://acme.zendesk.com/"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-value") && !debug.contains("t0ken-value"), "{debug}");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let base = ("SUNSHINE_REGION", "us");
        let cases = [
            ("SUNSHINE_AUTH", "oauth"),
            ("SUNSHINE_ID_FORMAT", "uuid"),
            ("SUNSHINE_ENDED_CHECK", "sometimes"),
            ("SUNSHINE_CONFIRM_READS", "11"),
            ("SUNSHINE_CONFIRM_WITHIN_SECS", "0"),
            ("SUNSHINE_TIMEOUT_MS", "ten"),
            ("SUNSHINE_GROUP_KEY", "has space"),
            ("SUNSHINE_APP_ID", "a/b"),
            ("SUNSHINE_ALLOW_UNCONTROLLED", "yes"),
        ];
        for (name, value) in cases {
            let error = SunshineConfig::from_settings(settings(&[base, (name, value)])).unwrap_err();
            assert_eq!(setting_of(error), name, "{name}={value}");
        }
        let half = SunshineConfig::from_settings(settings(&[base, ("ZENDESK_SUPPORT_EMAIL", "a@b.c")])).unwrap_err();
        assert_eq!(setting_of(half), "ZENDESK_SUPPORT_API_TOKEN");
        let missing = SunshineConfig::from_settings(settings(&[base, ("SUNSHINE_KEY_SECRET", " ")])).unwrap_err();
        assert_eq!(setting_of(missing), "SUNSHINE_KEY_SECRET");
    }
}
