//! The client-credentials token: fetched from `POST {login}/oauth/token`, cached and shared by every
//! request, refreshed before it expires, with at most one fetch in flight.
//!
//! Single flight: callers that find no usable token queue on one `tokio::sync::Mutex`; the first
//! fetches, the others re-check when they get the lock and find its token, or (when they were
//! waiting while it failed) its error: a burst of 1000 cold requests costs one token call, and a
//! failing login host one call per round of retries, not one per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::error::GenesysError;
use crate::retry;
use crate::stats::{Counters, Endpoint, StatusClass};

/// Refresh this long before expiry…
const REFRESH_EARLY: Duration = Duration::from_secs(60);
/// …unless the token lives less than this, then at half life.
const SHORT_LIVED: Duration = Duration::from_secs(120);
/// After a failed refresh while the old token is still valid, wait this long before trying again.
const REFRESH_RETRY: Duration = Duration::from_secs(5);
/// Token answers are small; anything larger is not a token.
const MAX_TOKEN_BODY: usize = 64 * 1024;
/// The longest lifetime believed from `expires_in` (Genesys issues 24-48 h tokens). A larger value
/// is read as this, so the cache's instants stay representable: `u64::MAX` seconds once
/// overflowed `Instant + Duration` and panicked (found while fuzzing, docs/fuzzing.md).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 86_400);

/// A bearer token and when to replace it.
#[derive(Debug)]
pub(crate) struct AccessToken {
    secret: SecretString,
    /// Identifies this token, so a 401 drops it only if it is still the current one.
    pub(crate) generation: u64,
    refresh_at: Instant,
    expires_at: Instant,
}

impl AccessToken {
    /// A token fetched at `now` that lives `lifetime`.
    pub(crate) fn fetched(secret: SecretString, generation: u64, now: Instant, lifetime: Duration) -> Self {
        Self { secret, generation, refresh_at: refresh_at(now, lifetime), expires_at: now + lifetime }
    }

    /// The token text, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    fn usable(&self, now: Instant) -> bool {
        now < self.refresh_at && now < self.expires_at
    }
}

/// When a token that lives `lifetime` from `fetched_at` should be refreshed.
pub(crate) fn refresh_at(fetched_at: Instant, lifetime: Duration) -> Instant {
    if lifetime < SHORT_LIVED {
        fetched_at + lifetime / 2
    } else {
        fetched_at + (lifetime - REFRESH_EARLY)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    expires_in: u64,
}

/// A successful token answer: the token and how long it lives.
///
/// # Errors
/// [`GenesysError::InvalidTokenResponse`] when it is not a usable bearer token.
pub(crate) fn token_answer(body: &[u8]) -> Result<(SecretString, Duration), GenesysError> {
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|_| GenesysError::InvalidTokenResponse)?;
    let bearer = parsed.token_type.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
    if parsed.access_token.is_empty() || parsed.expires_in == 0 || !bearer {
        return Err(GenesysError::InvalidTokenResponse);
    }
    let lifetime = Duration::from_secs(parsed.expires_in).min(MAX_TOKEN_LIFETIME);
    Ok((SecretString::from(parsed.access_token), lifetime))
}

/// The shared token cache.
#[derive(Debug)]
pub(crate) struct TokenCache {
    client_id: String,
    client_secret: SecretString,
    token_url: Url,
    current: RwLock<Option<Arc<AccessToken>>>,
    /// Held while fetching; holds the error of the last fetch, if it failed.
    refresh: tokio::sync::Mutex<Option<GenesysError>>,
    /// Fetches completed (success or failure), bumped under `refresh`.
    completed: AtomicU64,
    generation: AtomicU64,
}

impl TokenCache {
    pub(crate) fn new(client_id: String, client_secret: SecretString, token_url: Url) -> Self {
        Self {
            client_id,
            client_secret,
            token_url,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(None),
            completed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    fn usable(&self) -> Option<Arc<AccessToken>> {
        let now = Instant::now();
        let guard = self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref().filter(|t| t.usable(now)).cloned()
    }

    /// A usable token, fetching one (single flight) when there is none or it is due for refresh.
    /// `limit` bounds the token request itself; the caller bounds the wait for the lock.
    pub(crate) async fn get(
        &self,
        http: &reqwest::Client,
        counters: &Counters,
        limit: Duration,
    ) -> Result<Arc<AccessToken>, GenesysError> {
        if let Some(token) = self.usable() {
            return Ok(token);
        }
        let seen = self.completed.load(Ordering::Acquire);
        let mut last_failure = self.refresh.lock().await;
        if let Some(token) = self.usable() {
            return Ok(token);
        }
        if self.completed.load(Ordering::Acquire) != seen {
            // A fetch finished while we waited and left no usable token: share its failure
            // rather than queueing one more call behind it.
            if let Some(failure) = last_failure.clone() {
                return Err(failure);
            }
        }
        let fetched = self.fetch(http, counters, limit).await;
        let outcome = match fetched {
            Ok((secret, lifetime)) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                let token = Arc::new(AccessToken::fetched(secret, generation, Instant::now(), lifetime));
                *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::clone(&token));
                *last_failure = None;
                Ok(token)
            }
            Err(error) => {
                *last_failure = Some(error.clone());
                self.keep_old_token_after(&error)
            }
        };
        self.completed.fetch_add(1, Ordering::Release);
        outcome
    }

    /// A refresh failed: if the old token is still valid, keep using it for a few seconds
    /// (except after bad credentials, which will not heal by waiting).
    fn keep_old_token_after(&self, error: &GenesysError) -> Result<Arc<AccessToken>, GenesysError> {
        if *error == GenesysError::BadCredentials {
            return Err(error.clone());
        }
        let now = Instant::now();
        let mut guard = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_ref() {
            Some(old) if now < old.expires_at => {
                let retry_at = (now + REFRESH_RETRY).min(now + (old.expires_at - now) / 2);
                let kept = Arc::new(AccessToken {
                    secret: old.secret.clone(),
                    generation: old.generation,
                    refresh_at: retry_at,
                    expires_at: old.expires_at,
                });
                *guard = Some(Arc::clone(&kept));
                tracing::warn!(error = %error, "genesys token refresh failed; the current token stays in use");
                Ok(kept)
            }
            _ => Err(error.clone()),
        }
    }

    /// Drops the token `generation` after a 401, unless it was already replaced.
    /// Returns whether it was dropped.
    pub(crate) fn invalidate(&self, generation: u64) -> bool {
        let mut guard = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.as_ref().is_some_and(|t| t.generation == generation) {
            *guard = None;
            true
        } else {
            false
        }
    }

    #[tracing::instrument(skip_all, fields(operation = Endpoint::Token.as_str(), status))]
    async fn fetch(
        &self,
        http: &reqwest::Client,
        counters: &Counters,
        limit: Duration,
    ) -> Result<(SecretString, Duration), GenesysError> {
        counters.token_fetches.fetch_add(1, Ordering::Relaxed);
        let request = http
            .post(self.token_url.clone())
            .basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body("grant_type=client_credentials");
        let answer = tokio::time::timeout(limit, async {
            let mut response = request.send().await?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let body = crate::client::read_body(response, MAX_TOKEN_BODY).await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        })
        .await;
        let (status, headers, body) = match answer {
            Err(_elapsed) => {
                counters.request(Endpoint::Token, StatusClass::TransportError);
                return Err(GenesysError::TokenUnavailable("the token request timed out".to_owned()));
            }
            Ok(Err(e)) => {
                counters.request(Endpoint::Token, StatusClass::TransportError);
                let what =
                    if e.is_connect() { "could not connect to the login host" } else { "the token request failed" };
                return Err(GenesysError::TokenUnavailable(what.to_owned()));
            }
            Ok(Ok(answer)) => answer,
        };
        counters.request(Endpoint::Token, StatusClass::of(status.as_u16()));
        tracing::Span::current().record("status", status.as_u16());
        if status.is_success() {
            return token_answer(&body);
        }
        let (code, _) = retry::error_code(&body);
        match status.as_u16() {
            401 => Err(GenesysError::BadCredentials),
            400 if code.as_deref() == Some("invalid_client") => Err(GenesysError::BadCredentials),
            429 => Err(GenesysError::TokenRateLimited { retry_after: retry::throttle_wait(&headers) }),
            408 | 500..=599 => Err(GenesysError::TokenUnavailable(format!("the login host answered {status}"))),
            s => Err(GenesysError::TokenRejected { status: s, code: code.unwrap_or_else(|| "unknown".to_owned()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lived_tokens_are_refreshed_60s_before_expiry_and_short_ones_at_half_life() {
        let t0 = Instant::now();
        assert_eq!(refresh_at(t0, Duration::from_secs(86_400)), t0 + Duration::from_secs(86_340));
        assert_eq!(refresh_at(t0, Duration::from_secs(120)), t0 + Duration::from_secs(60));
        assert_eq!(refresh_at(t0, Duration::from_secs(90)), t0 + Duration::from_secs(45));
        assert_eq!(refresh_at(t0, Duration::from_secs(1)), t0 + Duration::from_millis(500));
    }

    #[test]
    fn a_token_answer_with_an_absurd_lifetime_is_capped_instead_of_overflowing_the_clock() {
        // Arrange: the fuzz finding (fuzz/fuzz_targets/genesys_response.rs, selector 5).
        let body = br#"{"access_token":"a","expires_in":18446744073709551615}"#;

        // Act
        let (_, lifetime) = token_answer(body).expect("a bearer token");
        let token = AccessToken::fetched(SecretString::from("a"), 1, Instant::now(), lifetime);

        // Assert
        assert_eq!(lifetime, MAX_TOKEN_LIFETIME);
        assert!(token.usable(Instant::now()));
    }

    #[test]
    fn a_token_answer_keeps_an_ordinary_lifetime_and_refuses_a_zero_or_non_bearer_one() {
        let day = token_answer(br#"{"access_token":"a","token_type":"Bearer","expires_in":86400}"#);
        assert_eq!(day.map(|(_, lifetime)| lifetime), Ok(Duration::from_secs(86_400)));
        for bad in [
            &br#"{"access_token":"a","expires_in":0}"#[..],
            br#"{"access_token":"","expires_in":60}"#,
            br#"{"access_token":"a","token_type":"mac","expires_in":60}"#,
            br#"{"access_token":"a","expires_in":-1}"#,
            b"<html>",
        ] {
            assert_eq!(token_answer(bad).err(), Some(GenesysError::InvalidTokenResponse));
        }
    }
}
