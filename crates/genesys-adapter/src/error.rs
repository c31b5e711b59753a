//! [`GenesysError`]: what can go wrong inside the adapter before a port error is due (configuration,
//! the OAuth token), and how it surfaces as a domain [`PortError`].

use std::time::Duration;

use handoff_domain::ports::PortError;

/// An adapter-internal error: bad configuration or a failed client-credentials token.
///
/// Cloneable so one failed token fetch can be shared with every caller that waited for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesysError {
    /// `GENESYS_REGION` is neither a known region code nor a known environment domain.
    #[error("unknown genesys region `{given}`; known regions: {known}")]
    UnknownRegion {
        /// What was given (trimmed, at most 64 characters).
        given: String,
        /// The known region codes, comma-separated.
        known: String,
    },
    /// A base URL override is not an absolute `http(s)` URL.
    #[error("invalid {setting}: {problem}")]
    InvalidUrl {
        /// The setting (`GENESYS_BASE_URL`, `GENESYS_LOGIN_BASE_URL`).
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A configuration value is out of range.
    #[error("invalid genesys client configuration: {0}")]
    InvalidConfig(String),
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("failed to build the genesys http client: {0}")]
    HttpClient(String),
    /// The login host refused the client id/secret (401, or 400 `invalid_client`). Not retried.
    #[error("genesys rejected the client credentials (invalid_client)")]
    BadCredentials,
    /// The login host refused the token request for another reason (e.g. `unauthorized_client`).
    #[error("genesys login returned {status} ({code})")]
    TokenRejected {
        /// The HTTP status.
        status: u16,
        /// The OAuth `error` code, sanitised.
        code: String,
    },
    /// The login host answered 429.
    #[error("genesys login is rate limited")]
    TokenRateLimited {
        /// Its `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The login host could not be reached, timed out or answered 5xx.
    #[error("genesys login unavailable: {0}")]
    TokenUnavailable(String),
    /// The login host answered 200 with something that is not a usable token.
    #[error("genesys login returned an unusable token response")]
    InvalidTokenResponse,
}

/// Adapter result type.
pub type Result<T, E = GenesysError> = std::result::Result<T, E>;

impl From<GenesysError> for PortError {
    fn from(error: GenesysError) -> Self {
        match error {
            GenesysError::BadCredentials => PortError::rejected(401, "invalid_client", None),
            GenesysError::TokenRejected { status, code } => PortError::rejected(status, code, None),
            GenesysError::InvalidTokenResponse => PortError::rejected(200, "invalid_token_response", None),
            GenesysError::TokenRateLimited { retry_after } => PortError::rate_limited(retry_after, None),
            other => PortError::transient(other.to_string(), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_credentials_surface_as_a_401_invalid_client_rejection() {
        let port: PortError = GenesysError::BadCredentials.into();
        assert_eq!(port, PortError::rejected(401, "invalid_client", None));
    }

    #[test]
    fn an_unreachable_login_host_is_transient() {
        let port: PortError = GenesysError::TokenUnavailable("connection refused".into()).into();
        assert!(matches!(port, PortError::Transient { .. }));
    }
}
