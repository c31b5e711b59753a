//! Admin access (`HANDOFF_ADMIN_TOKEN`): the guard of every route that reads or erases handoff
//! records (`GET /handoffs/{id}`, `GET /handoffs?conversationId=`, `GET /handoffs/stats`,
//! `DELETE /guests/{guestId}`, and any later admin page or export).
//!
//! - With tokens set ([`AdminAuth::Tokens`]), a caller presents one of them as
//!   `Authorization: Bearer <token>` or as the password of `Authorization: Basic` (any user name).
//!   The webhook's secrets and HMAC signatures do **not** open these routes: the bot can hand off,
//!   not read.
//! - Unset ([`AdminAuth::WebhookCredentials`]), these routes take the webhook's credentials, as
//!   before the admin token existed; `serve` warns at start.
//!
//! Tokens are compared with the webhook's constant-time comparison (SHA-256 digests compared with
//! `subtle`, every token tried), so neither a token's content nor its length leaks through timing.
//! A failure is always the same 401, which never says which part failed.
//!
//! Two extractors guard a handler; put either first in its argument list:
//! - [`AdminAccess`]: API routes; a 401 carries `WWW-Authenticate: Bearer realm="handoff"`.
//! - [`AdminLogin`]: pages for a browser; a 401 carries
//!   `WWW-Authenticate: Basic realm="handoff admin"`, so the browser asks for a user name and
//!   password (any user name, the admin token as the password).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use secrecy::SecretString;

use crate::auth::{matches_any, presented_secret, split_secrets, WebhookAuth};
use crate::error::ApiError;
use crate::state::AppState;

/// Who may use the admin routes.
#[derive(Debug, Clone, Default)]
pub enum AdminAuth {
    /// `HANDOFF_ADMIN_TOKEN` unset: the admin routes accept the webhook's credentials (and are
    /// open when `WEBHOOK_AUTH=none`).
    #[default]
    WebhookCredentials,
    /// A caller must present one of these tokens (Bearer, or the Basic password). Never empty;
    /// empty tokens never match.
    Tokens(Vec<SecretString>),
}

/// `HANDOFF_ADMIN_TOKEN` was set but held no usable token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HANDOFF_ADMIN_TOKEN must hold at least one non-empty token (comma-separated for rotation)")]
pub struct NoAdminToken;

impl AdminAuth {
    /// Tokens from a comma-separated list (`HANDOFF_ADMIN_TOKEN`), blanks around each one trimmed
    /// and empty entries dropped.
    ///
    /// # Errors
    /// [`NoAdminToken`] when no non-empty token is left.
    pub fn from_comma_separated(raw: &SecretString) -> Result<Self, NoAdminToken> {
        let tokens = split_secrets(raw);
        if tokens.is_empty() {
            Err(NoAdminToken)
        } else {
            Ok(AdminAuth::Tokens(tokens))
        }
    }

    /// Whether admin tokens are configured.
    pub fn is_set(&self) -> bool {
        matches!(self, AdminAuth::Tokens(_))
    }

    /// Checks a request's headers (admin routes have no body that matters). `webhook` is the
    /// fallback when no token is set; `now` (unix seconds) is for its HMAC signatures.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] when the request does not authenticate.
    pub(crate) fn check(&self, webhook: &WebhookAuth, headers: &HeaderMap, now: i64) -> Result<(), ApiError> {
        match self {
            AdminAuth::WebhookCredentials => webhook.check(headers, b"", now),
            AdminAuth::Tokens(tokens) => {
                let presented = headers.get(header::AUTHORIZATION).and_then(|v| presented_secret(v.as_bytes()));
                match presented {
                    Some(presented) if matches_any(tokens, &presented) => Ok(()),
                    _ => Err(ApiError::Unauthorized),
                }
            }
        }
    }
}

/// Extractor for admin API routes: the request carries the admin token (see the module doc).
/// Rejects with 401 `unauthorized` and a Bearer challenge.
#[derive(Debug, Clone, Copy)]
pub struct AdminAccess;

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.admin().check(state.auth(), &parts.headers, state.unix_now())?;
        Ok(AdminAccess)
    }
}

/// Extractor for admin pages a person opens in a browser: as [`AdminAccess`], but a 401 carries
/// `WWW-Authenticate: Basic realm="handoff admin"` so the browser shows its login prompt (any
/// user name, the admin token as the password).
#[derive(Debug, Clone, Copy)]
pub struct AdminLogin;

impl FromRequestParts<AppState> for AdminLogin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match state.admin().check(state.auth(), &parts.headers, state.unix_now()) {
            Ok(()) => Ok(AdminLogin),
            Err(_) => Err(ApiError::LoginRequired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use base64::Engine as _;

    const NOW: i64 = 1_750_000_000;

    fn webhook() -> WebhookAuth {
        WebhookAuth::Secrets(vec![SecretString::from("bot-secret")])
    }

    fn tokens(raw: &str) -> AdminAuth {
        AdminAuth::from_comma_separated(&SecretString::from(raw)).expect("a token")
    }

    fn authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("test header"));
        headers
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        authorization(&format!("Basic {encoded}"))
    }

    #[test]
    fn every_rotated_token_opens_as_bearer_or_basic_password() {
        // Arrange
        let admin = tokens(" new-admin-token , old-admin-token ,");

        // Act / Assert
        for token in ["new-admin-token", "old-admin-token"] {
            assert!(admin.check(&webhook(), &authorization(&format!("Bearer {token}")), NOW).is_ok(), "{token}");
            assert!(admin.check(&webhook(), &basic("ops", token), NOW).is_ok(), "{token}");
        }
    }

    #[test]
    fn with_a_token_set_the_webhook_secret_no_longer_opens_admin_routes() {
        // Arrange
        let admin = tokens("admin-token");

        // Act
        let bearer = admin.check(&webhook(), &authorization("Bearer bot-secret"), NOW);
        let basic_secret = admin.check(&webhook(), &basic("flow", "bot-secret"), NOW);
        let none = admin.check(&WebhookAuth::None, &HeaderMap::new(), NOW);

        // Assert
        assert!(matches!(bearer, Err(ApiError::Unauthorized)));
        assert!(matches!(basic_secret, Err(ApiError::Unauthorized)));
        assert!(matches!(none, Err(ApiError::Unauthorized)), "WEBHOOK_AUTH=none must not open admin routes");
    }

    #[test]
    fn near_misses_of_the_token_are_refused() {
        // Arrange
        let admin = tokens("admin-token");

        // Act / Assert
        for value in ["Bearer admin-toke", "Bearer admin-tokenX", "Bearer Xadmin-token", "Token admin-token", "Bearer "]
        {
            assert!(
                matches!(admin.check(&webhook(), &authorization(value), NOW), Err(ApiError::Unauthorized)),
                "{value}"
            );
        }
        assert!(matches!(admin.check(&webhook(), &basic("admin-token", ""), NOW), Err(ApiError::Unauthorized)));
    }

    #[test]
    fn unset_admin_access_falls_back_to_the_webhook_credentials() {
        // Arrange
        let admin = AdminAuth::default();

        // Act
        let secret = admin.check(&webhook(), &authorization("Bearer bot-secret"), NOW);
        let wrong = admin.check(&webhook(), &authorization("Bearer nope"), NOW);

        // Assert
        assert!(!admin.is_set());
        assert!(secret.is_ok());
        assert!(matches!(wrong, Err(ApiError::Unauthorized)));
    }

    #[test]
    fn a_list_of_blanks_is_no_token() {
        assert_eq!(AdminAuth::from_comma_separated(&SecretString::from(" , ,")).unwrap_err(), NoAdminToken);
    }

    #[test]
    fn the_debug_form_never_shows_a_token() {
        let text = format!("{:?}", tokens("admin-token-value"));
        assert!(!text.contains("admin-token-value"), "{text}");
    }
}
