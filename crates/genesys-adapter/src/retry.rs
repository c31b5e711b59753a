//! The pure parts of the retry policy: backoff with full jitter, `Retry-After` and `inin-ratelimit-*`
//! parsing, correlation ids and Genesys `ErrorBody` codes (sanitised: never an upstream text).

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use tokio::time::Instant;

/// First backoff ceiling.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Highest backoff ceiling.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// The backoff ceiling before attempt `failed_attempt + 1`: `min(cap, base · 2^(failed_attempt-1))`.
pub(crate) fn backoff_ceiling(failed_attempt: u32) -> Duration {
    let exponent = failed_attempt.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1u32 << exponent).min(BACKOFF_CAP)
}

/// Full jitter: a uniformly random wait in `[0, ceiling]`.
pub(crate) fn backoff_with_jitter(failed_attempt: u32) -> Duration {
    let ceiling = u64::try_from(backoff_ceiling(failed_attempt).as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ceiling))
}

/// `Retry-After` as delta-seconds (the form Genesys sends); an HTTP date is not honoured.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    seconds_header(headers, "retry-after")
}

/// The wait a 429 asks for: `Retry-After`, else `inin-ratelimit-reset`.
pub(crate) fn throttle_wait(headers: &HeaderMap) -> Option<Duration> {
    retry_after(headers).or_else(|| seconds_header(headers, "inin-ratelimit-reset"))
}

fn seconds_header(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let raw = headers.get(name)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    raw.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// The Genesys `inin-correlation-id` header, if it is a short printable token.
pub(crate) fn correlation_header(headers: &HeaderMap) -> Option<String> {
    headers.get("inin-correlation-id").and_then(|v| v.to_str().ok()).and_then(clean_correlation)
}

fn clean_correlation(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| raw.to_owned())
}

/// Keeps a Genesys error code only if it looks like one (`not.found`, `missing.permissions`,
/// `invalid_client`): never an arbitrary upstream text in our errors.
pub(crate) fn clean_code(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| raw.to_owned())
}

/// The parts of a Genesys `ErrorBody` we use; the rest (message, details) is never read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    code: Option<String>,
    context_id: Option<String>,
    /// OAuth errors from the login host use `error`.
    error: Option<String>,
}

/// `(code, contextId)` of an error answer, sanitised; `(None, None)` when it is not an `ErrorBody`.
pub(crate) fn error_code(body: &[u8]) -> (Option<String>, Option<String>) {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.code.or(parsed.error).as_deref().and_then(clean_code);
    let context = parsed.context_id.as_deref().and_then(clean_correlation);
    (code, context)
}

/// The last `inin-ratelimit-*` headers seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSnapshot {
    /// `inin-ratelimit-allowed`: requests allowed in the window.
    pub allowed: u64,
    /// `inin-ratelimit-count`: requests used in the window.
    pub count: u64,
    /// `inin-ratelimit-reset`: seconds until the window resets, when given.
    pub reset: Option<Duration>,
    /// When the headers were seen.
    pub observed_at: Instant,
}

impl RateLimitSnapshot {
    /// Parses the headers; `None` unless both `allowed` and `count` are present.
    pub(crate) fn from_headers(headers: &HeaderMap, now: Instant) -> Option<Self> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        Some(Self {
            allowed: number("inin-ratelimit-allowed")?,
            count: number("inin-ratelimit-count")?,
            reset: seconds_header(headers, "inin-ratelimit-reset"),
            observed_at: now,
        })
    }

    /// Requests left in the window.
    pub fn remaining(&self) -> u64 {
        self.allowed.saturating_sub(self.count)
    }

    /// Whether fewer than 10 % of the window's requests are left and the window has not reset yet.
    pub fn is_low(&self, now: Instant) -> bool {
        let window_over = self.reset.is_some_and(|reset| now >= self.observed_at + reset);
        self.allowed > 0 && !window_over && self.remaining().saturating_mul(10) < self.allowed
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn backoff_doubles_from_100ms_and_is_capped_at_2s() {
        assert_eq!(backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(backoff_ceiling(6), Duration::from_secs(2));
        assert_eq!(backoff_ceiling(40), Duration::from_secs(2));
        for attempt in 1..10 {
            assert!(backoff_with_jitter(attempt) <= backoff_ceiling(attempt));
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_falls_back_to_the_ratelimit_reset() {
        assert_eq!(throttle_wait(&headers(&[("retry-after", "3")])), Some(Duration::from_secs(3)));
        assert_eq!(throttle_wait(&headers(&[("inin-ratelimit-reset", "7")])), Some(Duration::from_secs(7)));
        assert_eq!(throttle_wait(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])), None);
        assert_eq!(throttle_wait(&headers(&[])), None);
    }

    #[test]
    fn error_codes_are_kept_only_when_they_look_like_codes() {
        let (code, ctx) =
            error_code(br#"{"message":"Jane Doe not found","code":"not.found","status":404,"contextId":"abc-123"}"#);
        assert_eq!(code.as_deref(), Some("not.found"));
        assert_eq!(ctx.as_deref(), Some("abc-123"));
        assert_eq!(error_code(br#"{"code":"<script>alert(1)</script>"}"#).0, None);
        assert_eq!(
            error_code(br#"{"error":"invalid_client","description":"bad"}"#).0.as_deref(),
            Some("invalid_client")
        );
        assert_eq!(error_code(b"<html>502</html>"), (None, None));
    }

    #[test]
    fn the_allowance_is_low_below_ten_percent_until_the_window_resets() {
        // Arrange
        let now = Instant::now();
        let h = headers(&[
            ("inin-ratelimit-allowed", "300"),
            ("inin-ratelimit-count", "290"),
            ("inin-ratelimit-reset", "30"),
        ]);

        // Act
        let snapshot = RateLimitSnapshot::from_headers(&h, now).unwrap();

        // Assert
        assert_eq!(snapshot.remaining(), 10);
        assert!(snapshot.is_low(now));
        assert!(!snapshot.is_low(now + Duration::from_secs(31)));
        let plenty = headers(&[("inin-ratelimit-allowed", "300"), ("inin-ratelimit-count", "6")]);
        assert!(!RateLimitSnapshot::from_headers(&plenty, now).unwrap().is_low(now));
    }
}
