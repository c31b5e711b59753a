//! Credentials for every call: `Basic` key id : secret, or an app-scoped JWT (`{"alg":"HS256",
//! "typ":"JWT","kid":<key id>}` + `{"scope":"app","iat",…}`, api-notes §2) signed once and reused
//! until a 401 (or its `exp`, when `SUNSHINE_JWT_TTL_SECS` is set) asks for a new one. Zendesk
//! Support calls use `Basic {email}/token:{api_token}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::config::{AuthMode, SupportConfig};
use crate::error::{Result, SunshineError};

/// A JWT is re-signed this long before its `exp`.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// An `Authorization` header value and the credential generation it belongs to.
pub(crate) struct Authorization {
    pub(crate) value: SecretString,
    pub(crate) generation: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    scope: &'a str,
    iat: u64,
    /// Makes every signature distinct (a re-signed token is never byte-identical to a refused one).
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

struct Signed {
    value: SecretString,
    generation: u64,
    expires: Option<SystemTime>,
}

/// The Sunshine app key in use.
pub(crate) struct Credentials {
    mode: AuthMode,
    key_id: String,
    secret: SecretString,
    ttl: Option<Duration>,
    basic: SecretString,
    jwt: Mutex<Option<Signed>>,
    generation: AtomicU64,
    mints: AtomicU64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("mode", &self.mode).field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl Credentials {
    pub(crate) fn new(mode: AuthMode, key_id: &str, secret: SecretString, ttl: Option<Duration>) -> Self {
        let basic = basic(key_id, secret.expose_secret());
        Self {
            mode,
            key_id: key_id.to_owned(),
            secret,
            ttl,
            basic,
            jwt: Mutex::new(None),
            generation: AtomicU64::new(0),
            mints: AtomicU64::new(0),
        }
    }

    /// JWTs signed so far (0 in Basic mode).
    pub(crate) fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// The header for the next call.
    pub(crate) fn authorization(&self) -> Result<Authorization> {
        match self.mode {
            AuthMode::Basic => Ok(Authorization { value: self.basic.clone(), generation: 0 }),
            AuthMode::Jwt => {
                let mut slot = self.jwt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = SystemTime::now();
                let fresh = slot.as_ref().filter(|s| s.expires.is_none_or(|exp| now + REFRESH_MARGIN < exp));
                if let Some(signed) = fresh {
                    return Ok(Authorization { value: signed.value.clone(), generation: signed.generation });
                }
                let signed = self.sign(now)?;
                let authorization = Authorization { value: signed.value.clone(), generation: signed.generation };
                *slot = Some(signed);
                Ok(authorization)
            }
        }
    }

    /// A 401 answered a call made with `generation`: the next call signs a new JWT (unless someone
    /// already did). Basic has nothing to refresh.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut slot = self.jwt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|s| s.generation == generation) {
            *slot = None;
        }
    }

    fn sign(&self, now: SystemTime) -> Result<Signed> {
        let iat = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims {
            scope: "app",
            iat,
            jti: format!("{:016x}", rand::rng().random::<u64>()),
            exp: self.ttl.map(|ttl| iat + ttl.as_secs()),
        };
        let header =
            Header { typ: Some("JWT".to_owned()), kid: Some(self.key_id.clone()), ..Header::new(Algorithm::HS256) };
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(self.secret.expose_secret().as_bytes()))
                .map_err(|e| SunshineError::Jwt(e.to_string()))?;
        self.mints.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Signed {
            value: SecretString::from(format!("Bearer {token}")),
            generation,
            expires: self.ttl.map(|ttl| now + ttl),
        })
    }
}

fn basic(user: &str, password: &str) -> SecretString {
    SecretString::from(format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))))
}

/// `Basic {email}/token:{api_token}` (Zendesk Support API token auth).
pub(crate) fn support_authorization(support: &SupportConfig) -> SecretString {
    basic(&format!("{}/token", support.email), support.api_token.expose_secret())
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    use super::*;

    fn part(token: &str, index: usize) -> Value {
        let token = token.strip_prefix("Bearer ").expect("bearer");
        let raw = token.split('.').nth(index).expect("part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).expect("base64url")).expect("json")
    }

    #[test]
    fn a_jwt_carries_kid_hs256_and_app_scope_and_is_reused_until_invalidated() {
        // Arrange
        let credentials =
            Credentials::new(AuthMode::Jwt, "app_5723a347f82ba0516cb4ea34", SecretString::from("s"), None);

        // Act
        let first = credentials.authorization().unwrap();
        let again = credentials.authorization().unwrap();
        credentials.invalidate(first.generation);
        let renewed = credentials.authorization().unwrap();
        credentials.invalidate(first.generation);
        let kept = credentials.authorization().unwrap();

        // Assert
        let header = part(first.value.expose_secret(), 0);
        let claims = part(first.value.expose_secret(), 1);
        assert_eq!(
            (header["alg"].as_str(), header["kid"].as_str()),
            (Some("HS256"), Some("app_5723a347f82ba0516cb4ea34"))
        );
        assert_eq!(claims["scope"], "app");
        assert!(claims.get("exp").is_none());
        assert_eq!(first.value.expose_secret(), again.value.expose_secret());
        assert_ne!(first.value.expose_secret(), renewed.value.expose_secret());
        assert_eq!(renewed.generation, kept.generation, "a stale invalidation does not re-sign");
        assert_eq!(credentials.mints(), 2);
    }

    #[test]
    fn basic_is_the_key_id_and_secret() {
        let credentials = Credentials::new(AuthMode::Basic, "app_x", SecretString::from("pw"), None);
        let header = credentials.authorization().unwrap();
        assert_eq!(header.value.expose_secret(), &format!("Basic {}", STANDARD.encode("app_x:pw")));
        assert_eq!(credentials.mints(), 0);
        assert!(!format!("{credentials:?}").contains("pw"));
    }
}
