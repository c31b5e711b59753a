//! Authentication: Basic (app key id + secret) or a Bearer JWT (HS256, `kid` = key id, `scope:
//! app`), as the spec's "Authentication" section describes (api-notes §2); Zendesk Support calls use
//! Basic `{email}/token:{api_token}`. Revocation rejects every JWT seen so far.

use axum::http::{header::AUTHORIZATION, HeaderMap};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::calls::AuthKind;
use crate::config::SimConfig;

/// What the `Authorization` header carried.
#[derive(Debug)]
pub(crate) enum Presented {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl Presented {
    pub(crate) fn kind(&self) -> AuthKind {
        match self {
            Self::None => AuthKind::None,
            Self::Basic { .. } => AuthKind::Basic,
            Self::Bearer(_) => AuthKind::Jwt,
        }
    }
}

pub(crate) fn presented(headers: &HeaderMap) -> Presented {
    let Some(raw) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Presented::None;
    };
    if let Some(encoded) = raw.strip_prefix("Basic ") {
        let decoded = STANDARD.decode(encoded.trim()).ok().and_then(|bytes| String::from_utf8(bytes).ok());
        return match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((user, password)) => Presented::Basic { user: user.to_owned(), password: password.to_owned() },
            None => Presented::None,
        };
    }
    match raw.strip_prefix("Bearer ") {
        Some(token) => Presented::Bearer(token.trim().to_owned()),
        None => Presented::None,
    }
}

/// Checks an app-scoped JWT: three parts, header `alg: HS256` and `kid` = the key id, a valid
/// HMAC-SHA256 signature with the secret, payload `scope: app`, and `exp` (when present) not past.
pub(crate) fn jwt_valid(config: &SimConfig, token: &str, now_secs: i64) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let json = |part: &str| -> Option<Value> { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok() };
    let (Some(head), Some(claims)) = (json(header), json(payload)) else {
        return false;
    };
    if head["alg"] != "HS256" || head["kid"].as_str() != Some(config.key_id.as_str()) {
        return false;
    }
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(config.key_secret.as_bytes()) else {
        return false;
    };
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    if mac.verify_slice(&signature).is_err() {
        return false;
    }
    let expired = claims.get("exp").and_then(Value::as_i64).is_some_and(|exp| exp <= now_secs);
    claims["scope"] == "app" && !expired
}

/// Signs an app-scoped JWT the way the simulator checks it (for tests and tools).
pub fn sign_app_jwt(key_id: &str, secret: &str, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": "HS256", "typ": "JWT", "kid": key_id }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_jwt_is_valid_only_with_the_right_kid_secret_scope_and_no_past_expiry() {
        // Arrange
        let config = SimConfig::default();
        let good = sign_app_jwt(&config.key_id, &config.key_secret, &json!({ "scope": "app" }));
        let wrong_kid = sign_app_jwt("app_000000000000000000000000", &config.key_secret, &json!({ "scope": "app" }));
        let wrong_secret = sign_app_jwt(&config.key_id, "nope", &json!({ "scope": "app" }));
        let wrong_scope = sign_app_jwt(&config.key_id, &config.key_secret, &json!({ "scope": "integration" }));
        let expired = sign_app_jwt(&config.key_id, &config.key_secret, &json!({ "scope": "app", "exp": 100 }));

        // Act / Assert
        assert!(jwt_valid(&config, &good, 1_000));
        assert!(!jwt_valid(&config, &wrong_kid, 1_000));
        assert!(!jwt_valid(&config, &wrong_secret, 1_000));
        assert!(!jwt_valid(&config, &wrong_scope, 1_000));
        assert!(!jwt_valid(&config, &expired, 1_000));
        assert!(!jwt_valid(&config, "a.b", 1_000));
    }
}
