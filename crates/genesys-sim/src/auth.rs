//! OAuth client credentials, bearer tokens, the per-token rate limit, and admission of a call (auth,
//! rate limit, latency and fault, taken under one lock).

use std::time::Duration;

use axum::http::{header::AUTHORIZATION, HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::SimError;
use crate::{Endpoint, FaultKind, Sim};

/// Genesys counts requests per token in one-minute windows.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// An issued token.
#[derive(Debug)]
pub(crate) struct TokenState {
    expires_at: Instant,
    window_start: Instant,
    window_count: u32,
}

/// The `inin-ratelimit-*` numbers of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateInfo {
    pub(crate) allowed: u32,
    pub(crate) count: u32,
    pub(crate) reset_secs: u64,
}

/// What an admitted call must go through before the operation.
#[derive(Debug)]
pub(crate) struct Pass {
    pub(crate) latency: Duration,
    pub(crate) fault: Option<FaultKind>,
}

impl Sim {
    /// Whether `Authorization: Basic base64(id:secret)` names the configured client.
    pub(crate) fn client_authenticated(&self, headers: &HeaderMap) -> bool {
        let Some((scheme, encoded)) = header_parts(headers) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        decoded
            .split_once(':')
            .is_some_and(|(id, secret)| id == self.config().client_id && secret == self.config().client_secret)
    }

    /// Issues a fresh opaque token valid for [`crate::SimConfig::token_ttl`].
    pub(crate) fn issue_token(&self) -> String {
        let token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let now = Instant::now();
        let mut state = self.state();
        state.tokens.retain(|_, t| t.expires_at > now);
        state.tokens.insert(
            token.clone(),
            TokenState { expires_at: now + self.config().token_ttl, window_start: now, window_count: 0 },
        );
        token
    }

    /// Authenticates an `/api/v2` call (not the token call), applies the rate limit and takes the
    /// latency and the matching fault. Returns the rate-limit numbers even when the call is refused.
    pub(crate) fn admit(&self, endpoint: Endpoint, headers: &HeaderMap) -> (Option<RateInfo>, Result<Pass, SimError>) {
        let now = Instant::now();
        let mut state = self.state();
        let rate_limit = state.rate_limit;
        let mut rate = None;
        if endpoint.is_api() {
            let token = header_parts(headers)
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            let Some(token) = token else {
                return (None, Err(SimError::unauthorized()));
            };
            let Some(entry) = state.tokens.get_mut(token) else {
                return (None, Err(SimError::unauthorized()));
            };
            if entry.expires_at <= now {
                state.tokens.remove(token);
                return (None, Err(SimError::unauthorized()));
            }
            if let Some(limit) = rate_limit {
                let info = entry.count_request(now, limit);
                rate = Some(info);
                if info.count > limit {
                    let error = SimError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too.many.requests",
                        format!("Rate limit exceeded the maximum [{limit}] requests within [60] seconds"),
                    )
                    .with_retry_after(info.reset_secs);
                    return (rate, Err(error));
                }
            }
        }
        let fault = state.take_fault(endpoint);
        let pass = Pass { latency: state.latency, fault };
        (rate, Ok(pass))
    }
}

impl TokenState {
    fn count_request(&mut self, now: Instant, limit: u32) -> RateInfo {
        if now.duration_since(self.window_start) >= RATE_WINDOW {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count = self.window_count.saturating_add(1);
        let left = RATE_WINDOW.saturating_sub(now.duration_since(self.window_start));
        RateInfo {
            allowed: limit,
            count: self.window_count,
            // Round up, so a client that waits `reset` seconds lands in the next window.
            reset_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
        }
    }
}

/// `Authorization: <scheme> <value>`, if present and ASCII.
fn header_parts(headers: &HeaderMap) -> Option<(&str, &str)> {
    headers.get(AUTHORIZATION)?.to_str().ok()?.split_once(' ')
}
