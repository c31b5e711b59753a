//! [`SunshineError`]: what can go wrong before a port error is due (configuration, the HTTP client).

/// An adapter-internal error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SunshineError {
    /// A setting is missing, out of range or malformed; names the variable.
    #[error("invalid {setting}: {problem}")]
    InvalidSetting {
        /// The environment variable, e.g. `SUNSHINE_APP_ID`.
        setting: &'static str,
        /// What is wrong with it (never its value when it is a secret).
        problem: String,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("failed to build the sunshine http client: {0}")]
    HttpClient(String),
    /// The JWT could not be signed.
    #[error("failed to sign the sunshine jwt: {0}")]
    Jwt(String),
    /// A configured switchboard integration does not exist (startup resolution, `handoff check`).
    #[error("{setting} `{given}` names no switchboard integration of the app's switchboard")]
    UnknownIntegration {
        /// `SUNSHINE_AGENT_INTEGRATION` or `SUNSHINE_BOT_INTEGRATION`.
        setting: &'static str,
        /// What was configured.
        given: String,
    },
    /// The app has no switchboard, or more than one.
    #[error("the app must have exactly one switchboard, it has {0}")]
    Switchboards(usize),
}

/// Adapter result type.
pub type Result<T, E = SunshineError> = std::result::Result<T, E>;

pub(crate) fn invalid(setting: &'static str, problem: impl Into<String>) -> SunshineError {
    SunshineError::InvalidSetting { setting, problem: problem.into() }
}
