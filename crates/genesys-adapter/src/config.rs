//! [`GenesysConfig`]: credentials, resolved base URLs, timeouts, budget, concurrency and cache TTL.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::error::{GenesysError, Result};
use crate::regions::Region;
use crate::utilization::MessageCapacitySource;

/// Default time limit of one HTTP attempt (connect, send, read the whole answer).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time limit of one operation, all attempts, waits and the token fetch included.
pub const DEFAULT_TOTAL_BUDGET: Duration = Duration::from_secs(10);
/// Default cap on concurrent upstream calls.
pub const DEFAULT_MAX_CONCURRENCY: usize = 128;
/// Default lifetime of a cached capacity snapshot.
pub const DEFAULT_CAPACITY_TTL: Duration = Duration::from_secs(1);
/// Default number of attempts per operation, the first one included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default lifetime of the cached message capacity (the org's utilization).
pub const DEFAULT_UTILIZATION_REFRESH: Duration = Duration::from_secs(300);

/// Everything [`GenesysClient::new`](crate::GenesysClient::new) needs.
///
/// `Debug` is safe to log: the secret prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct GenesysConfig {
    /// OAuth client-credentials client id.
    pub client_id: String,
    /// OAuth client secret; exposed only when the token request is built.
    pub client_secret: SecretString,
    /// API base, e.g. `https://api.mypurecloud.ie/` (a path prefix is kept: `http://proxy/genesys/`).
    pub api_base_url: Url,
    /// Login base, e.g. `https://login.mypurecloud.ie/`.
    pub login_base_url: Url,
    /// Time limit of one attempt.
    pub attempt_timeout: Duration,
    /// Time limit of one operation: the deadline is computed when it starts and bounds every
    /// attempt, wait and retry.
    pub total_budget: Duration,
    /// Cap on concurrent upstream calls (a semaphore shared by every operation).
    pub max_concurrency: usize,
    /// How long a capacity snapshot is shared before the next observation query.
    pub capacity_ttl: Duration,
    /// Attempts per operation, the first one included (≥ 1). A 401 answered by a fresh token does
    /// not count: it gets one extra attempt of its own.
    pub max_attempts: u32,
    /// Share of the rate-limit allowance kept from background work, in percent (0–90).
    pub reserve_percent: u8,
    /// Genesys calls a new handoff needs in the foreground; its lookup is admitted only when the
    /// window still holds this many (≥ 1).
    pub handoff_calls: u32,
    /// Where the message capacity of the free-slot model comes from.
    pub message_capacity: MessageCapacitySource,
    /// How long the org's utilization is cached before it is read again.
    pub utilization_refresh: Duration,
}

impl GenesysConfig {
    /// A configuration with the default limits.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: SecretString,
        api_base_url: Url,
        login_base_url: Url,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret,
            api_base_url,
            login_base_url,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            total_budget: DEFAULT_TOTAL_BUDGET,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            capacity_ttl: DEFAULT_CAPACITY_TTL,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            reserve_percent: crate::budget::DEFAULT_RESERVE_PERCENT,
            handoff_calls: crate::budget::DEFAULT_HANDOFF_CALLS,
            message_capacity: MessageCapacitySource::Utilization,
            utilization_refresh: DEFAULT_UTILIZATION_REFRESH,
        }
    }

    /// A configuration for `region` with the default limits.
    pub fn for_region(client_id: impl Into<String>, client_secret: SecretString, region: Region) -> Self {
        Self::new(client_id, client_secret, region.api_base(), region.login_base())
    }

    /// The API and login base URLs: each override (`GENESYS_BASE_URL`, `GENESYS_LOGIN_BASE_URL`)
    /// when given and not blank, else the region's. Returns `(api, login)`.
    ///
    /// # Errors
    /// [`GenesysError::InvalidUrl`] when an override is not an absolute `http(s)` URL with a host.
    pub fn resolve_urls(
        region: Region,
        base_override: Option<&str>,
        login_override: Option<&str>,
    ) -> Result<(Url, Url)> {
        let api = match base_override.map(str::trim).filter(|s| !s.is_empty()) {
            Some(raw) => parse_base("GENESYS_BASE_URL", raw)?,
            None => region.api_base(),
        };
        let login = match login_override.map(str::trim).filter(|s| !s.is_empty()) {
            Some(raw) => parse_base("GENESYS_LOGIN_BASE_URL", raw)?,
            None => region.login_base(),
        };
        Ok((api, login))
    }

    /// Checks the limits.
    ///
    /// # Errors
    /// [`GenesysError::InvalidConfig`] naming the first value out of range.
    pub fn validate(&self) -> Result<()> {
        let problem = if self.attempt_timeout.is_zero() {
            Some("the attempt timeout must be positive")
        } else if self.total_budget < self.attempt_timeout {
            Some("the total budget must be at least the attempt timeout")
        } else if self.max_concurrency == 0 || self.max_concurrency > tokio::sync::Semaphore::MAX_PERMITS {
            Some("the concurrency cap must be at least 1 and at most 2^61 - 1")
        } else if self.max_attempts == 0 {
            Some("max attempts must be at least 1")
        } else if self.reserve_percent > 90 {
            Some("the background reserve must be at most 90 percent")
        } else if self.handoff_calls == 0 {
            Some("the calls per handoff must be at least 1")
        } else if self.utilization_refresh.is_zero() {
            Some("the utilization refresh interval must be positive")
        } else if self.client_id.trim().is_empty() {
            Some("the client id is empty")
        } else {
            None
        };
        match problem {
            Some(p) => Err(GenesysError::InvalidConfig(p.to_owned())),
            None => Ok(()),
        }
    }
}

fn parse_base(setting: &'static str, raw: &str) -> Result<Url> {
    let url = Url::parse(raw).map_err(|e| GenesysError::InvalidUrl { setting, problem: e.to_string() })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(GenesysError::InvalidUrl { setting, problem: "expected an absolute http(s) URL".to_owned() });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(GenesysError::InvalidUrl { setting, problem: "must not have a query or fragment".to_owned() });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GenesysConfig {
        GenesysConfig::for_region("client", SecretString::from("s3cr3t-value"), Region::default())
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let debug = format!("{:?}", config());
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
        assert!(debug.contains("client"), "{debug}");
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = config();
        assert_eq!(c.attempt_timeout, Duration::from_secs(5));
        assert_eq!(c.total_budget, Duration::from_secs(10));
        assert_eq!(c.max_concurrency, 128);
        assert_eq!(c.capacity_ttl, Duration::from_secs(1));
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn urls_come_from_the_region_unless_overridden() {
        // Arrange
        let region = Region::parse("eu-central-1").unwrap();

        // Act
        let (api, login) = GenesysConfig::resolve_urls(region, None, Some("  ")).unwrap();
        let (api2, login2) =
            GenesysConfig::resolve_urls(region, Some("http://127.0.0.1:8089"), Some("http://127.0.0.1:8090/")).unwrap();

        // Assert
        assert_eq!(api.as_str(), "https://api.mypurecloud.de/");
        assert_eq!(login.as_str(), "https://login.mypurecloud.de/");
        assert_eq!(api2.as_str(), "http://127.0.0.1:8089/");
        assert_eq!(login2.as_str(), "http://127.0.0.1:8090/");
    }

    #[test]
    fn a_non_http_override_is_rejected_with_the_setting_name() {
        let error = GenesysConfig::resolve_urls(Region::default(), Some("ftp://example.test"), None).unwrap_err();
        assert!(error.to_string().contains("GENESYS_BASE_URL"), "{error}");
        let error = GenesysConfig::resolve_urls(Region::default(), None, Some("not a url")).unwrap_err();
        assert!(error.to_string().contains("GENESYS_LOGIN_BASE_URL"), "{error}");
    }

    #[test]
    fn a_concurrency_cap_a_semaphore_cannot_hold_is_invalid() {
        let mut c = config();
        c.max_concurrency = usize::MAX;
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_budget_shorter_than_one_attempt_is_invalid() {
        let mut c = config();
        c.total_budget = Duration::from_secs(1);
        assert!(c.validate().is_err());
    }
}
