//! Webhook authentication (CONTRACT §4.2).
//!
//! A caller proves it knows one of the configured secrets in one of three ways:
//! - `Authorization: Bearer <secret>`;
//! - `Authorization: Basic base64(<anything>:<secret>)` (the password is the secret; what Genesys
//!   Data Actions send);
//! - `X-Handoff-Timestamp: <unix seconds>` and
//!   `X-Handoff-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>`, with the
//!   timestamp at most [`SIGNATURE_TOLERANCE_SECS`] away from now.
//!
//! Several secrets may be active at once (rotation); every secret is always tried, so timing does
//! not tell which one matched. Secrets are compared through their SHA-256 digests with
//! [`subtle`], so neither content nor length leaks through timing; signatures are checked with
//! `Mac::verify_slice`. A failure is always the same bare 401.
//!
//! The header-only checks run before the body is read. A signature needs the raw body, so the
//! webhook extractor reads it (within the size limit) and then calls
//! [`WebhookAuth::verify_signature`], before any JSON parsing.

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;

/// The signature's timestamp may be at most this many seconds before or after now.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// The header carrying the signature's unix timestamp.
pub const TIMESTAMP_HEADER: &str = "x-handoff-timestamp";
/// The header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-handoff-signature";

type HmacSha256 = Hmac<Sha256>;

/// How webhook callers authenticate (and admin callers too while `HANDOFF_ADMIN_TOKEN` is unset).
#[derive(Debug, Clone)]
pub enum WebhookAuth {
    /// Everything is accepted (`WEBHOOK_AUTH=none`, local runs only).
    None,
    /// A caller must prove it knows one of these secrets. Empty secrets never match, and an empty
    /// list rejects every request.
    Secrets(Vec<SecretString>),
}

/// `WEBHOOK_SECRET` held no usable secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WEBHOOK_SECRET must hold at least one non-empty secret (comma-separated for rotation)")]
pub struct NoWebhookSecret;

impl WebhookAuth {
    /// Secrets from a comma-separated list (`WEBHOOK_SECRET`), blanks around each one trimmed and
    /// empty entries dropped.
    ///
    /// # Errors
    /// [`NoWebhookSecret`] when no non-empty secret is left.
    pub fn from_comma_separated(raw: &SecretString) -> Result<Self, NoWebhookSecret> {
        let secrets = split_secrets(raw);
        if secrets.is_empty() {
            Err(NoWebhookSecret)
        } else {
            Ok(WebhookAuth::Secrets(secrets))
        }
    }

    /// Checks what the headers alone can prove. `now` is the current unix time in seconds.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] when no credential can succeed.
    pub(crate) fn check_headers(&self, headers: &HeaderMap, now: i64) -> Result<HeaderCheck, ApiError> {
        let WebhookAuth::Secrets(secrets) = self else {
            return Ok(HeaderCheck::Passed);
        };
        if let Some(presented) = headers.get(header::AUTHORIZATION).and_then(|v| presented_secret(v.as_bytes())) {
            if matches_any(secrets, &presented) {
                return Ok(HeaderCheck::Passed);
            }
        }
        match signature(headers, now) {
            Some(sig) => Ok(HeaderCheck::NeedsBody(sig)),
            None => Err(ApiError::Unauthorized),
        }
    }

    /// Verifies a signature found by [`check_headers`](Self::check_headers) over the raw body.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] when no secret produces it.
    pub(crate) fn verify_signature(&self, signature: &Signature, body: &[u8]) -> Result<(), ApiError> {
        let WebhookAuth::Secrets(secrets) = self else {
            return Ok(());
        };
        let mut ok = false;
        for secret in secrets.iter().map(ExposeSecret::expose_secret).filter(|s| !s.is_empty()) {
            let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
                continue;
            };
            mac.update(signature.timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            // `|` rather than `||`: every secret is tried.
            ok |= mac.verify_slice(&signature.mac).is_ok();
        }
        if ok {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// The whole check for a request whose body is already known (reads: the empty body).
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] when the request does not authenticate.
    pub(crate) fn check(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
        match self.check_headers(headers, now)? {
            HeaderCheck::Passed => Ok(()),
            HeaderCheck::NeedsBody(sig) => self.verify_signature(&sig, body),
        }
    }
}

/// What the headers proved.
#[derive(Debug)]
pub(crate) enum HeaderCheck {
    /// Authenticated (or no authentication configured).
    Passed,
    /// A well-formed, fresh signature that still has to be checked against the body.
    NeedsBody(Signature),
}

/// A signature taken from the headers: the timestamp text as sent and the MAC bytes.
#[derive(Debug)]
pub(crate) struct Signature {
    timestamp: String,
    mac: Vec<u8>,
}

/// The entries of a comma-separated secret list, blanks around each one trimmed and empty entries
/// dropped (`WEBHOOK_SECRET`, `HANDOFF_ADMIN_TOKEN`).
pub(crate) fn split_secrets(raw: &SecretString) -> Vec<SecretString> {
    raw.expose_secret().split(',').map(str::trim).filter(|s| !s.is_empty()).map(SecretString::from).collect()
}

/// The secret presented in an `Authorization` header: the Bearer token, or the Basic password.
pub(crate) fn presented_secret(value: &[u8]) -> Option<Vec<u8>> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = (&value[..space], value[space + 1..].trim_ascii());
    if scheme.eq_ignore_ascii_case(b"bearer") {
        Some(rest.to_vec())
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        Some(decoded[colon + 1..].to_vec())
    } else {
        None
    }
}

/// Whether `presented` equals one of `secrets`, in time independent of both.
pub(crate) fn matches_any(secrets: &[SecretString], presented: &[u8]) -> bool {
    let presented = Sha256::digest(presented);
    let mut ok = Choice::from(0);
    for secret in secrets.iter().map(ExposeSecret::expose_secret).filter(|s| !s.is_empty()) {
        let expected = Sha256::digest(secret.as_bytes());
        ok |= expected.as_slice().ct_eq(presented.as_slice());
    }
    ok.into()
}

/// A well-formed signature whose timestamp is within the tolerance of `now`.
fn signature(headers: &HeaderMap, now: i64) -> Option<Signature> {
    let timestamp = headers.get(TIMESTAMP_HEADER)?.to_str().ok()?.trim();
    // Digits only (at most 12: far beyond year 9999), so the text signed is unambiguous.
    if timestamp.is_empty() || timestamp.len() > 12 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = timestamp.parse().ok()?;
    if now.abs_diff(seconds) > SIGNATURE_TOLERANCE_SECS.unsigned_abs() {
        return None;
    }
    let hex_mac = headers.get(SIGNATURE_HEADER)?.to_str().ok()?.trim().strip_prefix("sha256=")?;
    let mac = hex::decode(hex_mac).ok()?;
    (mac.len() == 32).then(|| Signature { timestamp: timestamp.to_owned(), mac })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const NOW: i64 = 1_750_000_000;

    fn secrets(list: &[&str]) -> WebhookAuth {
        WebhookAuth::Secrets(list.iter().map(|s| SecretString::from(*s)).collect())
    }

    fn with(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).expect("test header"));
        }
        headers
    }

    fn signed(secret: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        with(&[(TIMESTAMP_HEADER, timestamp.to_string()), (SIGNATURE_HEADER, format!("sha256={sig}"))])
    }

    #[test]
    fn a_basic_password_may_itself_contain_colons() {
        // Arrange
        let auth = secrets(&["s3:cr:et"]);
        let encoded = base64::engine::general_purpose::STANDARD.encode("genesys:s3:cr:et");
        let headers = with(&[("authorization", format!("Basic {encoded}"))]);

        // Act
        let result = auth.check(&headers, b"", NOW);

        // Assert
        assert!(result.is_ok());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        // Arrange
        let auth = secrets(&["s3cret"]);
        let headers = with(&[("authorization", "bEaReR s3cret".to_owned())]);

        // Act
        let result = auth.check(&headers, b"", NOW);

        // Assert
        assert!(result.is_ok());
    }

    #[test]
    fn an_empty_secret_never_authenticates_an_empty_bearer_token() {
        // Arrange
        let auth = secrets(&[""]);
        let headers = with(&[("authorization", "Bearer ".to_owned())]);

        // Act
        let result = auth.check(&headers, b"", NOW);

        // Assert
        assert!(matches!(result, Err(ApiError::Unauthorized)));
    }

    #[test]
    fn a_credential_that_only_contains_the_secret_is_refused() {
        // Arrange
        let auth = secrets(&["s3cret"]);
        let basic = base64::engine::general_purpose::STANDARD.encode("flow:s3cretXYZ");
        let attempts = ["Bearer s3cretXYZ", "Bearer Xs3cret", "Bearer s3cre", "Token s3cret"]
            .map(str::to_owned)
            .into_iter()
            .chain([format!("Basic {basic}")]);

        // Act / Assert
        for value in attempts {
            let result = auth.check(&with(&[("authorization", value.clone())]), b"", NOW);
            assert!(matches!(result, Err(ApiError::Unauthorized)), "{value} authenticated");
        }
        assert!(auth.check(&with(&[("authorization", "bEaReR  s3cret ".to_owned())]), b"", NOW).is_ok());
    }

    #[test]
    fn a_signature_binds_the_body() {
        // Arrange
        let auth = secrets(&["s3cret"]);
        let headers = signed("s3cret", NOW, b"{\"a\":1}");

        // Act
        let same = auth.check(&headers, b"{\"a\":1}", NOW);
        let changed = auth.check(&headers, b"{\"a\":2}", NOW);

        // Assert
        assert!(same.is_ok());
        assert!(matches!(changed, Err(ApiError::Unauthorized)));
    }

    #[test]
    fn a_signature_is_accepted_at_the_edge_of_the_window_and_rejected_past_it_either_way() {
        // Arrange
        let auth = secrets(&["s3cret"]);

        // Act
        let results: Vec<bool> = [NOW - 300, NOW + 300, NOW - 301, NOW + 301]
            .into_iter()
            .map(|ts| auth.check(&signed("s3cret", ts, b""), b"", NOW).is_ok())
            .collect();

        // Assert
        assert_eq!(results, [true, true, false, false]);
    }

    #[test]
    fn a_signature_with_a_non_numeric_timestamp_is_rejected() {
        // Arrange
        let auth = secrets(&["s3cret"]);
        let mut headers = signed("s3cret", NOW, b"");
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from_static("+1750000000"));

        // Act
        let result = auth.check(&headers, b"", NOW);

        // Assert
        assert!(matches!(result, Err(ApiError::Unauthorized)));
    }

    #[test]
    fn secrets_are_read_from_a_comma_separated_list_without_blanks() {
        // Arrange
        let raw = SecretString::from(" old , new ,,");

        // Act
        let auth = WebhookAuth::from_comma_separated(&raw);

        // Assert
        let Ok(WebhookAuth::Secrets(list)) = auth else { panic!("expected secrets, got {auth:?}") };
        let exposed: Vec<&str> = list.iter().map(ExposeSecret::expose_secret).collect();
        assert_eq!(exposed, ["old", "new"]);
        assert_eq!(WebhookAuth::from_comma_separated(&SecretString::from(" , ")).err(), Some(NoWebhookSecret));
    }

    // ---- property tests (the in-suite twin of fuzz/fuzz_targets/webhook_auth.rs) ------------

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Secrets as `WEBHOOK_SECRET` may hold them: visible ASCII, no comma, no blank ends.
        fn secret() -> impl Strategy<Value = String> {
            "[!-+--~]{1,48}"
        }

        fn header_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
            prop::option::of(prop_oneof![
                prop::collection::vec(any::<u8>(), 0..96),
                "(Bearer|Basic|bEaReR|basic) [ -~]{0,64}".prop_map(String::into_bytes),
                "sha256=[0-9a-f]{64}".prop_map(String::into_bytes),
                "[0-9]{1,13}".prop_map(String::into_bytes),
            ])
        }

        fn raw(pairs: [(&'static str, &Option<Vec<u8>>); 3]) -> HeaderMap {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_bytes(v).ok()) {
                    headers.insert(name, value);
                }
            }
            headers
        }

        proptest! {
            #[test]
            fn arbitrary_headers_and_bodies_never_panic_and_never_authenticate_without_the_secret(
                secret in "[a-z0-9]{32}",
                authorization in header_bytes(),
                timestamp in header_bytes(),
                signature in header_bytes(),
                body in prop::collection::vec(any::<u8>(), 0..256),
                now in any::<i64>(),
            ) {
                // Arrange
                let auth = secrets(&[&secret]);
                let headers = raw([
                    ("authorization", &authorization),
                    (TIMESTAMP_HEADER, &timestamp),
                    (SIGNATURE_HEADER, &signature),
                ]);

                // Act
                let result = auth.check(&headers, &body, now);

                // Assert: a 32-character secret the generators never saw cannot be presented.
                prop_assert!(matches!(result, Err(ApiError::Unauthorized)), "authenticated: {:?}", headers);
            }

            #[test]
            fn the_right_bearer_or_basic_secret_authenticates_and_any_other_does_not(
                list in prop::collection::vec(secret(), 1..4),
                pick in any::<prop::sample::Index>(),
                user in "[^:]{0,24}",
                other in secret(),
            ) {
                // Arrange
                let auth = WebhookAuth::from_comma_separated(&SecretString::from(list.join(","))).expect("non-empty");
                let right = pick.get(&list);
                let basic = |password: &str| {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                    with(&[("authorization", format!("Basic {encoded}"))])
                };

                // Act
                let bearer_ok = auth.check(&with(&[("authorization", format!("Bearer {right}"))]), b"", NOW);
                let basic_ok = auth.check(&basic(right), b"", NOW);
                let bearer_other = auth.check(&with(&[("authorization", format!("Bearer {other}"))]), b"", NOW);
                let basic_other = auth.check(&basic(&other), b"", NOW);

                // Assert
                prop_assert!(bearer_ok.is_ok());
                prop_assert!(basic_ok.is_ok());
                prop_assert_eq!(bearer_other.is_ok(), list.contains(&other));
                prop_assert_eq!(basic_other.is_ok(), list.contains(&other));
            }

            #[test]
            fn a_signature_authenticates_exactly_its_body_within_the_window(
                list in prop::collection::vec(secret(), 1..4),
                pick in any::<prop::sample::Index>(),
                body in prop::collection::vec(any::<u8>(), 1..512),
                skew in -600i64..=600,
                bit in any::<prop::sample::Index>(),
            ) {
                // Arrange
                let auth = WebhookAuth::from_comma_separated(&SecretString::from(list.join(","))).expect("non-empty");
                let headers = signed(pick.get(&list).as_str(), NOW + skew, &body);
                let mut tampered = body.clone();
                let bit = bit.index(body.len() * 8);
                tampered[bit / 8] ^= 1 << (bit % 8);

                // Act
                let same = auth.check(&headers, &body, NOW);
                let changed = auth.check(&headers, &tampered, NOW);

                // Assert
                prop_assert_eq!(same.is_ok(), skew.abs() <= SIGNATURE_TOLERANCE_SECS);
                prop_assert!(changed.is_err());
            }
        }
    }
}
