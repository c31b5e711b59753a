//! [`GenesysClient`]: one `reqwest::Client`, the token cache, the concurrency cap, rate-limit
//! awareness and the retry policy every call goes through.
//!
//! # Retry policy (see also `docs/` and the crate docs)
//! - The operation's deadline is `start + total_budget`; every attempt is limited to
//!   `min(attempt_timeout, time left)`, the token fetch and the wait for a concurrency permit included.
//! - 429: wait `Retry-After` (else `inin-ratelimit-reset`, else backoff) when that wait ends before
//!   the deadline and attempts remain, otherwise [`PortError::RateLimited`] at once.
//! - 5xx, 408, timeouts and connection errors: full-jitter exponential backoff (100 ms base, 2 s
//!   cap), at most `max_attempts` tries (the first included), within the deadline; then
//!   [`PortError::Transient`].
//! - 401: the token is dropped (if still current), a new one fetched, the call retried once.
//! - [`Retry::Never`] calls (the transfer) are retried only when they surely did not reach
//!   Genesys: a 429, a 401, a refused connection, no token, no permit. A timeout, a 5xx or a broken
//!   connection after sending yields [`PortError::Indeterminate`] at once.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use handoff_domain::ports::PortError;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use crate::budget::{BudgetSnapshot, CallBudget};
use crate::capacity::{CapacityCache, WarnLimiter, FIGURE_WARNING_EVERY};
use crate::config::GenesysConfig;
use crate::error::{GenesysError, Result};
use crate::notifications::{ChannelStats, FigureStore, NotificationSettings};
use crate::retry::{self, RateLimitSnapshot};
use crate::stats::{ClientStats, Counters, Endpoint, StatusClass};
use crate::token::TokenCache;
use crate::utilization::MessageCapacityCache;

/// Largest answer body read (a conversation with its messages can be large; errors are small).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest connect attempt; shorter than an attempt so a refused or silent host is told apart from
/// a slow answer.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a call may be sent again after an unclear failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and idempotent writes: retried after 5xx, 408, timeouts and connection errors.
    Idempotent,
    /// The transfer: retried only when it surely did not happen.
    Never,
}

/// One logical upstream operation.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) endpoint: Endpoint,
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
    pub(crate) correlation_id: Option<String>,
}

impl Reply {
    /// The Genesys error code and the correlation id (header, else the body's `contextId`).
    pub(crate) fn error_code(&self) -> (Option<String>, Option<String>) {
        let (code, context) = retry::error_code(&self.body);
        (code, self.correlation_id.clone().or(context))
    }
}

/// How one attempt ended.
enum Attempt {
    Final(Reply),
    Unauthorized {
        reply: Reply,
        generation: u64,
    },
    Throttled {
        wait: Option<Duration>,
        correlation_id: Option<String>,
    },
    /// 5xx or 408: the request reached Genesys.
    ServerError {
        status: StatusCode,
        correlation_id: Option<String>,
    },
    /// Timeout or transport failure after the request may have been sent.
    Unclear {
        detail: &'static str,
    },
    /// The request surely did not reach Genesys.
    NotSent {
        detail: String,
    },
    Fatal(PortError),
}

/// The Genesys Cloud client: implements [`QueuePort`](handoff_domain::ports::QueuePort),
/// [`TransferPort`](handoff_domain::ports::TransferPort) and
/// [`AnalyticsPort`](handoff_domain::ports::AnalyticsPort). Share it as an `Arc<GenesysClient>`.
#[derive(Debug)]
pub struct GenesysClient {
    pub(crate) config: GenesysConfig,
    http: reqwest::Client,
    tokens: TokenCache,
    limiter: Semaphore,
    rate_limit: RwLock<Option<RateLimitSnapshot>>,
    budget: CallBudget,
    pub(crate) counters: Counters,
    pub(crate) capacity: CapacityCache,
    pub(crate) figures: FigureStore,
    pub(crate) message_capacity: MessageCapacityCache,
    pub(crate) figure_warnings: WarnLimiter,
    /// What this adapter declares about Genesys.
    pub(crate) rules: handoff_domain::PlatformRules,
}

impl GenesysClient {
    /// Builds the client (one `reqwest::Client` for its lifetime).
    ///
    /// # Errors
    /// [`GenesysError::InvalidConfig`] / [`GenesysError::InvalidUrl`] for a bad configuration,
    /// [`GenesysError::HttpClient`] when the HTTP client cannot be built.
    pub fn new(config: GenesysConfig) -> Result<Self> {
        config.validate()?;
        let token_url = join(&config.login_base_url, &["oauth", "token"]).ok_or(GenesysError::InvalidUrl {
            setting: "GENESYS_LOGIN_BASE_URL",
            problem: "cannot be a base".into(),
        })?;
        join(&config.api_base_url, &["api"])
            .ok_or(GenesysError::InvalidUrl { setting: "GENESYS_BASE_URL", problem: "cannot be a base".into() })?;
        let http = reqwest::Client::builder()
            .connect_timeout(MAX_CONNECT_TIMEOUT.min(config.attempt_timeout / 2))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(config.max_concurrency)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("handoff/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GenesysError::HttpClient(e.to_string()))?;
        Ok(Self {
            tokens: TokenCache::new(config.client_id.clone(), config.client_secret.clone(), token_url),
            limiter: Semaphore::new(config.max_concurrency),
            rate_limit: RwLock::new(None),
            budget: CallBudget::new(config.reserve_percent, config.handoff_calls),
            counters: Counters::default(),
            capacity: CapacityCache::new(config.capacity_ttl),
            figures: FigureStore::default(),
            message_capacity: MessageCapacityCache::new(config.message_capacity, config.utilization_refresh),
            figure_warnings: WarnLimiter::new(FIGURE_WARNING_EVERY),
            rules: crate::conversation::genesys_rules(),
            http,
            config,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &GenesysConfig {
        &self.config
    }

    /// Token requests sent so far.
    pub fn token_fetches(&self) -> u64 {
        self.counters.token_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A snapshot of the counters (for `/metrics`).
    pub fn stats(&self) -> ClientStats {
        self.counters.snapshot()
    }

    /// The last `inin-ratelimit-*` headers seen, if any.
    pub fn rate_limit(&self) -> Option<RateLimitSnapshot> {
        *self.rate_limit.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether background work must wait: the window's allowance is down to the reserve kept for
    /// live handoffs (see [`crate::in_background`]).
    pub fn allowance_low(&self) -> bool {
        !self.budget.background_open(Instant::now())
    }

    /// Runs the Notifications channel that pushes the figures of `settings.queues` until `stop`
    /// turns true (see the `notifications` module). Spawn it once; without it, capacity is polled.
    pub async fn run_notifications(
        self: Arc<Self>,
        settings: NotificationSettings,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::notifications::run(self, settings, stop).await;
    }

    /// For `handoff check`: creates a notification channel, subscribes the observation topics of
    /// `queues`, opens and closes its socket, and says how that went.
    pub async fn probe_channel(&self, queues: &[handoff_domain::QueueId]) -> crate::ChannelProbe {
        crate::notifications::probe(self, queues).await
    }

    /// The channel's counters (for `/metrics`).
    pub fn channel_stats(&self) -> ChannelStats {
        self.figures.stats(Instant::now())
    }

    /// The call budget of the current rate-limit window (for `/metrics`).
    pub fn budget(&self) -> BudgetSnapshot {
        self.budget.snapshot(Instant::now())
    }

    /// Makes sure a token can be obtained (cached, or fetched once now). For `/readyz` and
    /// `handoff check`.
    ///
    /// # Errors
    /// [`GenesysError::BadCredentials`] and the other token errors.
    pub async fn obtain_token(&self) -> Result<()> {
        let limit = self.config.attempt_timeout;
        match tokio::time::timeout(limit, self.tokens.get(&self.http, &self.counters, limit)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(GenesysError::TokenUnavailable("the token request timed out".to_owned())),
        }
    }

    /// `{api_base}/api/v2/{segments…}`; ids are validated UUIDs, and each segment is escaped anyway.
    pub(crate) fn api_url(&self, segments: &[&str]) -> Url {
        let mut all = Vec::with_capacity(segments.len() + 2);
        all.extend_from_slice(&["api", "v2"]);
        all.extend_from_slice(segments);
        // `new` checked that the base can take path segments.
        join(&self.config.api_base_url, &all).unwrap_or_else(|| self.config.api_base_url.clone())
    }

    /// Runs `call` under the retry policy. `Ok` is a 2xx or a final 4xx, for the caller to map.
    pub(crate) async fn execute(&self, call: &Call) -> Result<Reply, PortError> {
        let span = tracing::info_span!(
            "genesys_call",
            operation = call.endpoint.as_str(),
            method = %call.method,
            attempts = tracing::field::Empty,
            status = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
        );
        let result = self.execute_inner(call).instrument(span.clone()).await;
        match &result {
            Ok(reply) => {
                span.record("status", reply.status.as_u16());
                if let Some(id) = &reply.correlation_id {
                    span.record("correlation_id", id.as_str());
                }
            }
            Err(e) => {
                if let Some(id) = e.correlation_id() {
                    span.record("correlation_id", id);
                }
            }
        }
        result
    }

    async fn execute_inner(&self, call: &Call) -> Result<Reply, PortError> {
        let deadline = Instant::now() + self.config.total_budget;
        let mut attempt: u32 = 0;
        let mut reauthorized = false;
        loop {
            attempt += 1;
            tracing::Span::current().record("attempts", attempt);
            let failure = match self.attempt(call, deadline).await {
                Attempt::Final(reply) => return Ok(reply),
                Attempt::Fatal(error) => return Err(error),
                Attempt::Unauthorized { reply, generation } => {
                    if reauthorized || Instant::now() >= deadline {
                        return Ok(reply);
                    }
                    reauthorized = true;
                    if self.tokens.invalidate(generation) {
                        self.counters.token_invalidations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::warn!(attempt, "genesys answered 401; retrying once with a new token");
                    // The 401 retry has its own allowance; it does not use up an attempt.
                    attempt -= 1;
                    continue;
                }
                Attempt::Throttled { wait, correlation_id } => {
                    let pause = wait.unwrap_or_else(|| retry::backoff_with_jitter(attempt));
                    (PortError::rate_limited(wait, correlation_id), pause)
                }
                Attempt::ServerError { status, correlation_id } => {
                    let detail = format!("genesys answered {status} for {}", call.endpoint.as_str());
                    if call.retry == Retry::Never {
                        return Err(PortError::indeterminate(detail, correlation_id));
                    }
                    (PortError::transient(detail, correlation_id), retry::backoff_with_jitter(attempt))
                }
                Attempt::Unclear { detail } => {
                    let detail = format!("{detail} ({})", call.endpoint.as_str());
                    if call.retry == Retry::Never {
                        return Err(PortError::indeterminate(detail, None));
                    }
                    (PortError::transient(detail, None), retry::backoff_with_jitter(attempt))
                }
                Attempt::NotSent { detail } => {
                    (PortError::transient(detail, None), retry::backoff_with_jitter(attempt))
                }
            };
            // Retryable: wait and try again while attempts remain and the wait ends before the
            // deadline; otherwise give up at once with this failure.
            let (failure, pause) = failure;
            let left = deadline.saturating_duration_since(Instant::now());
            if attempt >= self.config.max_attempts || pause >= left {
                return Err(failure);
            }
            self.pause(call, attempt, pause, &failure.to_string()).await;
        }
    }

    async fn pause(&self, call: &Call, attempt: u32, pause: Duration, reason: &str) {
        self.counters.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            operation = call.endpoint.as_str(),
            attempt,
            delay_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            reason,
            "retrying genesys call"
        );
        tokio::time::sleep(pause).await;
    }

    /// One try: token, permit, request, answer; all together within `min(attempt_timeout, time
    /// left)`.
    async fn attempt(&self, call: &Call, deadline: Instant) -> Attempt {
        let attempt_end = (Instant::now() + self.config.attempt_timeout).min(deadline);
        let left = attempt_end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Attempt::NotSent { detail: "the time budget ran out".to_owned() };
        }

        let token = match tokio::time::timeout_at(attempt_end, self.tokens.get(&self.http, &self.counters, left)).await
        {
            Ok(Ok(token)) => token,
            Ok(Err(GenesysError::TokenRateLimited { retry_after })) => {
                return Attempt::Throttled { wait: retry_after, correlation_id: None }
            }
            Ok(Err(GenesysError::TokenUnavailable(detail))) => return Attempt::NotSent { detail },
            Ok(Err(other)) => return Attempt::Fatal(other.into()),
            Err(_) => return Attempt::NotSent { detail: "timed out waiting for a token".to_owned() },
        };

        let _permit = match tokio::time::timeout_at(attempt_end, self.limiter.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Attempt::NotSent { detail: "too many concurrent genesys calls".to_owned() },
        };

        // The budget is taken last, right before the request goes out, so a refused call costs
        // nothing upstream and a counted call is one Genesys sees.
        if let Err(wait) = self.budget.spend(call.endpoint, Instant::now()) {
            tracing::debug!(operation = call.endpoint.as_str(), wait_secs = wait.as_secs(), "call budget spent");
            return Attempt::Fatal(PortError::rate_limited(Some(wait), None));
        }
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .bearer_auth(token.expose())
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
                self.counters.request(call.endpoint, StatusClass::TransportError);
                return Attempt::Unclear { detail: "genesys did not answer in time" };
            }
            Ok(Err(error)) => {
                self.counters.request(call.endpoint, StatusClass::TransportError);
                if error.is_connect() {
                    return Attempt::NotSent {
                        detail: format!("could not connect to genesys ({})", call.endpoint.as_str()),
                    };
                }
                return Attempt::Unclear { detail: transport_detail(&error) };
            }
            Ok(Ok((status, headers, Ok(body)))) => (status, headers, body),
            // The status arrived but the body broke off. A success whose body is needed (every call
            // but the transfer reads it) is unclear; otherwise the status says what happened.
            Ok(Ok((status, _, Err(error)))) if status.is_success() && call.retry != Retry::Never => {
                self.counters.request(call.endpoint, StatusClass::TransportError);
                return Attempt::Unclear { detail: transport_detail(&error) };
            }
            Ok(Ok((status, headers, Err(_)))) => (status, headers, Bytes::new()),
        };

        self.counters.request(call.endpoint, StatusClass::of(status.as_u16()));
        self.observe_rate_limit(&headers);
        let correlation_id = retry::correlation_header(&headers);
        match status.as_u16() {
            200..=299 => Attempt::Final(Reply { status, body, correlation_id }),
            401 => {
                Attempt::Unauthorized { reply: Reply { status, body, correlation_id }, generation: token.generation }
            }
            429 => Attempt::Throttled { wait: retry::throttle_wait(&headers), correlation_id },
            408 | 500..=599 => Attempt::ServerError { status, correlation_id },
            400..=499 => Attempt::Final(Reply { status, body, correlation_id }),
            // 1xx/3xx (redirects are not followed): unexpected, treated like a server error.
            _ => Attempt::ServerError { status, correlation_id },
        }
    }

    fn observe_rate_limit(&self, headers: &HeaderMap) {
        if let Some(snapshot) = RateLimitSnapshot::from_headers(headers, Instant::now()) {
            self.budget.observe(&snapshot);
            *self.rate_limit.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(snapshot);
        }
    }
}

/// `base` with `segments` appended as path segments; `None` if `base` cannot take a path.
fn join(base: &Url, segments: &[&str]) -> Option<Url> {
    let mut url = base.clone();
    url.path_segments_mut().ok()?.pop_if_empty().extend(segments);
    Some(url)
}

/// What a broken exchange says in an error.
fn transport_detail(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "genesys did not answer in time"
    } else {
        "the connection to genesys failed"
    }
}

/// Reads at most `max` bytes of the body. A longer body is cut at `max`; every caller parses it as
/// JSON, so a cut body fails as an invalid answer rather than being used.
pub(crate) async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Bytes, reqwest::Error> {
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

/// A shared, cloneable handle is what the app wires into the domain.
impl GenesysClient {
    /// Builds the client behind an `Arc`, ready to be used as every port at once.
    ///
    /// # Errors
    /// As [`GenesysClient::new`].
    pub fn shared(config: GenesysConfig) -> Result<Arc<Self>> {
        Self::new(config).map(Arc::new)
    }
}
