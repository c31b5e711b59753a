//! The pure parts of the retry policy: backoff with full jitter, `Retry-After` (seconds or an HTTP
//! date) and error codes from Sunshine (`{"errors":[{"code"}]}`) and Zendesk Support
//! (`{"error": …}`) bodies, sanitised: never an upstream text.

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

/// First backoff ceiling.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Highest backoff ceiling.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The backoff ceiling before attempt `failed_attempt + 1`.
pub(crate) fn backoff_ceiling(failed_attempt: u32) -> Duration {
    let exponent = failed_attempt.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1u32 << exponent).min(BACKOFF_CAP)
}

/// Full jitter: a uniformly random wait in `[0, ceiling]`.
pub(crate) fn backoff_with_jitter(failed_attempt: u32) -> Duration {
    let ceiling = u64::try_from(backoff_ceiling(failed_attempt).as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ceiling))
}

/// `Retry-After` as delta-seconds or an HTTP date (api-notes §8: not documented for Sunshine, so
/// both forms are read and its absence is normal).
pub(crate) fn retry_after(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let raw = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let wait = at.signed_duration_since(now).to_std().unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Keeps an error code only if it looks like one (`conversation_not_found`, `RecordNotFound`).
pub(crate) fn clean_code(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    ok.then(|| raw.to_owned())
}

#[derive(Deserialize)]
struct ErrorItem {
    code: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
    error: Option<Value>,
}

/// The first error code of an error answer, sanitised; `None` when the body has none.
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    let sunshine = parsed.errors.into_iter().find_map(|e| e.code);
    let support = match parsed.error {
        Some(Value::String(code)) => Some(code),
        Some(Value::Object(map)) => map.get("title").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    sunshine.or(support).as_deref().and_then(clean_code)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("retry-after", HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT").unwrap().to_utc();
        assert_eq!(retry_after(&headers("3"), now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:05 GMT"), now), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:27:00 GMT"), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn error_codes_come_from_either_body_shape_and_only_when_they_look_like_codes() {
        assert_eq!(
            error_code(br#"{"errors":[{"code":"conversation_not_found","title":"Jane"}]}"#).as_deref(),
            Some("conversation_not_found")
        );
        assert_eq!(
            error_code(br#"{"error":"RecordNotFound","description":"Not found"}"#).as_deref(),
            Some("RecordNotFound")
        );
        assert_eq!(error_code(br#"{"errors":[{"code":"<b>x</b>"}]}"#), None);
        assert_eq!(error_code(b"<html>502</html>"), None);
    }

    #[test]
    fn backoff_doubles_from_100ms_and_is_capped_at_2s() {
        assert_eq!(backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(backoff_ceiling(3), Duration::from_millis(400));
        assert_eq!(backoff_ceiling(30), Duration::from_secs(2));
        assert!((1..8).all(|n| backoff_with_jitter(n) <= backoff_ceiling(n)));
    }
}
