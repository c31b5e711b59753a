//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off by default). Not
//! part of the crate's API: they only reach the private authentication code the way a request
//! does, so a fuzzer can feed it raw header bytes and bodies without a router or a runtime.

use axum::http::HeaderMap;

use crate::auth::WebhookAuth;

/// The whole webhook authentication of one request, exactly as the webhook extractor and the read
/// endpoints run it: the header checks (Bearer, Basic, signature freshness), then the HMAC over
/// `body`. `now` is the current unix time in seconds. Returns whether the request authenticates.
#[doc(hidden)]
pub fn authenticates(auth: &WebhookAuth, headers: &HeaderMap, body: &[u8], now: i64) -> bool {
    auth.check(headers, body, now).is_ok()
}
