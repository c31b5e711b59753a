//! [`SunshineClient`]: one `reqwest::Client`, the credentials, the concurrency cap and the retry
//! policy every call goes through (the Genesys adapter's rules, ADR 0002):
//! - the operation's deadline is `start + total_budget`; each attempt is limited to
//!   `min(attempt_timeout, time left)`, the wait for a concurrency permit included;
//! - 429: wait `Retry-After` when present, else a jittered backoff, when that wait ends before the
//!   deadline and attempts remain; otherwise [`PortError::RateLimited`] with the `Retry-After`
//!   given (or `None`). A 429 also closes background work for `Retry-After` (or 30 s);
//! - 5xx, 408, timeouts, connection errors: full-jitter backoff (100 ms base, 2 s cap), at most
//!   `max_attempts` tries within the deadline, then [`PortError::Transient`];
//! - 401: a JWT is re-signed (Basic: nothing to refresh) and the call retried once; a second 401 is
//!   final (the caller maps it to `Rejected { 401, unauthorized }`);
//! - [`Retry::Never`] calls (passControl) are repeated only when they surely did not reach
//!   Sunshine (429, 401, refused connection, no permit); a timeout, a 5xx or a broken connection
//!   after sending is [`PortError::Indeterminate`] at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use handoff_domain::ports::PortError;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;

use crate::auth::{support_authorization, Credentials};
use crate::capacity::CapacityCache;
use crate::config::{SunshineConfig, DEFAULT_THROTTLE_PAUSE};
use crate::error::{Result, SunshineError};
use crate::retry;
use crate::stats::{Counters, Op, StatusClass};
use crate::wire::Integrations;

/// Largest answer body read.
const MAX_BODY: usize = 1024 * 1024;
/// Longest connect attempt.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a call may be sent again after an unclear failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads: retried after 5xx, 408, timeouts and connection errors.
    Idempotent,
    /// passControl: retried only when it surely did not happen.
    Never,
}

/// Which API and credentials a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// Sunshine Conversations (the app key).
    Sunshine,
    /// Zendesk Support (`{email}/token`).
    Support,
}

/// One logical upstream operation.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) op: Op,
    pub(crate) api: Api,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) body: Option<Bytes>,
    pub(crate) retry: Retry,
}

/// A final answer: a 2xx, or a 4xx the caller maps (never a 408/429/5xx).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The first error code of the body, sanitised.
    pub(crate) fn error_code(&self) -> Option<String> {
        retry::error_code(&self.body)
    }
}

enum Attempt {
    Final(Reply),
    Unauthorized { reply: Reply, generation: u64 },
    Throttled { wait: Option<Duration> },
    ServerError { status: StatusCode },
    Unclear { detail: &'static str },
    NotSent { detail: String },
    Fatal(PortError),
}

/// The Sunshine Conversations client: the ports' implementation. Share it as an
/// `Arc<SunshineClient>`.
#[derive(Debug)]
pub struct SunshineClient {
    pub(crate) config: SunshineConfig,
    pub(crate) rules: handoff_domain::platform::PlatformRules,
    http: reqwest::Client,
    credentials: Credentials,
    support_auth: Option<SecretString>,
    limiter: Semaphore,
    pub(crate) counters: Counters,
    /// Background work may call upstream again from this instant on (set by a 429).
    throttled_until: Mutex<Option<Instant>>,
    /// The switchboard integrations resolved at startup ([`SunshineClient::resolve_integrations`]).
    pub(crate) integrations: Mutex<Option<Integrations>>,
    pub(crate) capacity: CapacityCache,
    /// When a Sunshine call last authenticated (for readiness).
    last_authenticated: Mutex<Option<Instant>>,
    unauthorized: AtomicU64,
    /// The last readiness answer (see `platform`).
    pub(crate) readiness_cache: Mutex<Option<(Instant, std::result::Result<(), String>)>>,
}

impl SunshineClient {
    /// Builds the client.
    ///
    /// # Errors
    /// [`SunshineError::InvalidSetting`] for a bad configuration, [`SunshineError::HttpClient`]
    /// when the HTTP client cannot be built.
    pub fn new(config: SunshineConfig) -> Result<Self> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .connect_timeout(MAX_CONNECT_TIMEOUT.min(config.attempt_timeout / 2))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(config.max_concurrency)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("handoff/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SunshineError::HttpClient(e.to_string()))?;
        Ok(Self {
            credentials: Credentials::new(config.auth, &config.key_id, config.key_secret.clone(), config.jwt_ttl),
            support_auth: config.support.as_ref().map(support_authorization),
            limiter: Semaphore::new(config.max_concurrency),
            counters: Counters::default(),
            throttled_until: Mutex::new(None),
            integrations: Mutex::new(None),
            capacity: CapacityCache::new(config.capacity_ttl),
            last_authenticated: Mutex::new(None),
            unauthorized: AtomicU64::new(0),
            readiness_cache: Mutex::new(None),
            rules: crate::ports::platform_rules(&config),
            http,
            config,
        })
    }

    /// [`SunshineClient::new`] behind an `Arc`, ready to be used as every port at once.
    ///
    /// # Errors
    /// As [`SunshineClient::new`].
    pub fn shared(config: SunshineConfig) -> Result<Arc<Self>> {
        Self::new(config).map(Arc::new)
    }

    /// The configuration in use.
    pub fn config(&self) -> &SunshineConfig {
        &self.config
    }

    /// JWTs signed so far (`handoff_token_refreshes_total`).
    pub fn jwt_mints(&self) -> u64 {
        self.credentials.mints()
    }

    /// Calls answered 401 so far.
    pub fn unauthorized_answers(&self) -> u64 {
        self.unauthorized.load(Ordering::Relaxed)
    }

    /// How long ago a Sunshine call last authenticated, if one did.
    pub fn last_authenticated(&self) -> Option<Duration> {
        lock(&self.last_authenticated).map(|at| at.elapsed())
    }

    /// Whether background work (deferrals, recovery) may call upstream now: not for `Retry-After`
    /// (or 30 s when absent) after a 429 (ADR 0004 §8: no rate headers are documented).
    pub fn background_may_run(&self) -> bool {
        lock(&self.throttled_until).is_none_or(|until| Instant::now() >= until)
    }

    /// `{base}/v2/apps/{appId}/{segments…}`; every segment is escaped.
    pub(crate) fn app_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["v2", "apps", self.config.app_id.as_str()];
        all.extend_from_slice(segments);
        join(&self.config.base_url, &all)
    }

    /// `{support base}/api/v2/{segments…}`; `None` without Support credentials.
    pub(crate) fn support_url(&self, segments: &[&str]) -> Option<Url> {
        let base = &self.config.support.as_ref()?.base_url;
        let mut all = vec!["api", "v2"];
        all.extend_from_slice(segments);
        Some(join(base, &all))
    }

    /// Runs `call` under the retry policy. `Ok` is a 2xx or a final 4xx, for the caller to map.
    pub(crate) async fn execute(&self, call: &Call) -> Result<Reply, PortError> {
        let deadline = Instant::now() + self.config.total_budget;
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let outcome = self.attempt(call, deadline).await;
            let retry_in = match outcome {
                Attempt::Final(reply) => return Ok(reply),
                Attempt::Fatal(error) => return Err(error),
                Attempt::Unauthorized { reply, generation } => {
                    if reauthenticated || call.api == Api::Support {
                        return Ok(reply);
                    }
                    reauthenticated = true;
                    self.credentials.invalidate(generation);
                    // The re-authenticated call does not count as an attempt.
                    attempt -= 1;
                    continue;
                }
                Attempt::Throttled { wait } => {
                    self.throttle(wait);
                    let pause = wait.unwrap_or_else(|| retry::backoff_with_jitter(attempt));
                    if attempt >= self.config.max_attempts || Instant::now() + pause >= deadline {
                        return Err(PortError::rate_limited(wait, None));
                    }
                    pause
                }
                Attempt::ServerError { status } => {
                    let detail = format!("{} answered {}", call.op.as_str(), status.as_u16());
                    if call.retry == Retry::Never {
                        return Err(PortError::indeterminate(detail, None));
                    }
                    match self.backoff(attempt, deadline) {
                        Some(pause) => pause,
                        None => return Err(PortError::transient(detail, None)),
                    }
                }
                Attempt::Unclear { detail } => {
                    if call.retry == Retry::Never {
                        return Err(PortError::indeterminate(detail, None));
                    }
                    match self.backoff(attempt, deadline) {
                        Some(pause) => pause,
                        None => return Err(PortError::transient(detail, None)),
                    }
                }
                Attempt::NotSent { detail } => match self.backoff(attempt, deadline) {
                    Some(pause) => pause,
                    None => return Err(PortError::transient(detail, None)),
                },
            };
            tokio::time::sleep(retry_in).await;
        }
    }

    /// The next backoff, when another attempt fits.
    fn backoff(&self, attempt: u32, deadline: Instant) -> Option<Duration> {
        let pause = retry::backoff_with_jitter(attempt);
        (attempt < self.config.max_attempts && Instant::now() + pause < deadline).then_some(pause)
    }

    fn throttle(&self, wait: Option<Duration>) {
        let until = Instant::now() + wait.unwrap_or(DEFAULT_THROTTLE_PAUSE);
        let mut slot = lock(&self.throttled_until);
        if slot.is_none_or(|current| current < until) {
            *slot = Some(until);
        }
    }

    async fn attempt(&self, call: &Call, deadline: Instant) -> Attempt {
        let attempt_end = (Instant::now() + self.config.attempt_timeout).min(deadline);
        if attempt_end <= Instant::now() {
            return Attempt::NotSent { detail: "the time budget ran out".to_owned() };
        }
        let (authorization, generation) = match call.api {
            Api::Sunshine => match self.credentials.authorization() {
                Ok(a) => (a.value, a.generation),
                Err(error) => return Attempt::Fatal(PortError::transient(error.to_string(), None)),
            },
            Api::Support => match &self.support_auth {
                Some(value) => (value.clone(), 0),
                None => return Attempt::Fatal(PortError::transient("no Zendesk Support credentials", None)),
            },
        };
        let _permit = match tokio::time::timeout_at(attempt_end, self.limiter.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Attempt::NotSent { detail: "too many concurrent sunshine calls".to_owned() },
        };
        let Ok(mut header) = HeaderValue::from_str(authorization.expose_secret()) else {
            return Attempt::Fatal(PortError::rejected(401, "invalid_credentials", None));
        };
        header.set_sensitive(true);
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .header(AUTHORIZATION, header)
            .header(ACCEPT, "application/json");
        if let Some(body) = &call.body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.clone());
        }
        let sent = tokio::time::timeout_at(attempt_end, async {
            let mut response = request.send().await?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            Ok::<_, reqwest::Error>((status, headers, read_body(response, MAX_BODY).await))
        })
        .await;
        let (status, headers, body) = match sent {
            Err(_elapsed) => {
                self.counters.request(call.op, StatusClass::TransportError);
                return Attempt::Unclear { detail: "sunshine did not answer in time" };
            }
            Ok(Err(error)) => {
                self.counters.request(call.op, StatusClass::TransportError);
                if error.is_connect() {
                    return Attempt::NotSent {
                        detail: format!("could not connect to sunshine ({})", call.op.as_str()),
                    };
                }
                return Attempt::Unclear { detail: "the connection to sunshine failed" };
            }
            Ok(Ok((status, _, Err(_)))) if status.is_success() && call.retry != Retry::Never => {
                self.counters.request(call.op, StatusClass::TransportError);
                return Attempt::Unclear { detail: "the answer broke off" };
            }
            Ok(Ok((status, headers, body))) => (status, headers, body.unwrap_or_default()),
        };
        self.counters.request(call.op, StatusClass::of(status.as_u16()));
        if call.api == Api::Sunshine && status != StatusCode::UNAUTHORIZED {
            *lock(&self.last_authenticated) = Some(Instant::now());
        }
        let reply = Reply { status, body };
        match status.as_u16() {
            200..=299 => Attempt::Final(reply),
            401 => {
                self.unauthorized.fetch_add(1, Ordering::Relaxed);
                Attempt::Unauthorized { reply, generation }
            }
            429 => Attempt::Throttled { wait: retry::retry_after(&headers, chrono::Utc::now()) },
            408 | 500..=599 => Attempt::ServerError { status },
            400..=499 => Attempt::Final(reply),
            _ => Attempt::ServerError { status },
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `base` with `segments` appended as path segments (the bases are validated http(s) URLs).
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Bytes, reqwest::Error> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            let room = max - body.len();
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
