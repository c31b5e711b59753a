//! What managers look at (issue 15): `GET /insights`, a server-rendered page of charts and tables,
//! and `GET /handoffs/export.csv`, one CSV row per handoff. Both are admin routes (the admin
//! token; the page challenges a browser with Basic, see [`crate::admin`]).
//!
//! Both read the ledger's [`InsightsPort`] only, never the guest's name, e-mail or context. The page
//! takes its figures from [`InsightsPort::insights`] (what `handoff report` shows: the SQL ledger
//! answers from pre-aggregated counts, equal to folding every summary), and the export streams the
//! summaries page by page, so 100,000 rows are never held at once.
//!
//! The page has no script at all and loads nothing from elsewhere: its one `<style>` element is
//! allowed by its SHA-256 hash in the `Content-Security-Policy` header, the charts are inline SVG
//! drawn with presentation attributes. See `page` for the markup.

mod page;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use handoff_domain::insights::{HandoffSummary, InsightsFilter, SUMMARY_PAGE};
use handoff_domain::ports::InsightsPort;
use handoff_domain::{FieldError, HandoffReason, ValidationErrors};

use crate::admin::{AdminAccess, AdminLogin};
use crate::error::ApiError;
use crate::state::AppState;

pub use page::{render_page, PageInputs, CONTENT_SECURITY_POLICY};

/// The time ranges the page offers besides a custom one.
const PRESETS: [(&str, TimeDelta); 3] =
    [("24h", TimeDelta::hours(24)), ("7d", TimeDelta::days(7)), ("30d", TimeDelta::days(30))];

/// The window of the export when `since` is not given: the 24 hours before `until`.
const DEFAULT_EXPORT_WINDOW: TimeDelta = TimeDelta::hours(24);

/// The query of `/insights` as sent, kept to fill the form in again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsightsForm {
    /// `24h`, `7d`, `30d` or `custom`.
    pub range: String,
    /// As typed (custom range).
    pub since: String,
    /// As typed (custom range).
    pub until: String,
    /// As typed; empty for every reason.
    pub reason: String,
}

/// Parses `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp.
fn parse_time(field: &str, raw: &str) -> Result<DateTime<Utc>, FieldError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| FieldError::new(field, "must be a date (YYYY-MM-DD) or an RFC 3339 timestamp"))
}

/// The query pairs of `allowed` names, each at most once; anything else is a problem.
fn query_pairs(
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let Query(pairs) = pairs.map_err(|_| ApiError::invalid_parameter("$query", "is not a valid query string"))?;
    let mut problems = Vec::new();
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&name.as_str()) {
            problems.push(FieldError::new(name.chars().take(64).collect::<String>(), "is not a known parameter"));
        } else if pairs[..i].iter().any(|(n, _)| n == name) {
            problems.push(FieldError::new(name.clone(), "may be given once"));
        }
    }
    match ValidationErrors::from_vec(problems) {
        Some(errors) => Err(ApiError::InvalidParameters(errors)),
        None => Ok(pairs),
    }
}

fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
}

fn reason_filter(raw: Option<&str>, problems: &mut Vec<FieldError>) -> Option<HandoffReason> {
    let raw = raw?;
    match HandoffReason::parse(raw) {
        Ok(reason) => Some(reason),
        Err(errors) => {
            let problem =
                errors.errors().first().map_or("is not a valid handoff reason".to_owned(), |e| e.problem.clone());
            problems.push(FieldError::new("reason", problem));
            None
        }
    }
}

/// The filter, or every problem: the window is checked only when `since` and `until` parsed.
fn window(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    reason: Option<HandoffReason>,
    mut problems: Vec<FieldError>,
) -> Result<InsightsFilter, ApiError> {
    let times_ok = !problems.iter().any(|p| p.field == "since" || p.field == "until");
    match InsightsFilter::new(since, until, reason) {
        Ok(filter) if problems.is_empty() => return Ok(filter),
        Err(e) if times_ok => problems.push(FieldError::new("until", e.to_string())),
        _ => {}
    }
    Err(ApiError::InvalidParameters(
        ValidationErrors::from_vec(problems).unwrap_or_else(|| ValidationErrors::single("$query", "is not valid")),
    ))
}

/// The filter of `/insights` from its query (every problem reported at once).
fn page_filter(pairs: &[(String, String)], now: DateTime<Utc>) -> Result<(InsightsFilter, InsightsForm), ApiError> {
    let mut problems = Vec::new();
    let since = value(pairs, "since").map(|raw| parse_time("since", raw)).transpose().unwrap_or_else(|e| {
        problems.push(e);
        None
    });
    let until = value(pairs, "until").map(|raw| parse_time("until", raw)).transpose().unwrap_or_else(|e| {
        problems.push(e);
        None
    });
    let range = value(pairs, "range").unwrap_or(if since.is_some() { "custom" } else { "24h" }).to_owned();
    let (from, to) = if range == "custom" {
        if since.is_none() && !problems.iter().any(|p| p.field == "since") {
            problems.push(FieldError::new("since", "is required with range=custom"));
        }
        (since.unwrap_or(now), until.unwrap_or(now))
    } else if let Some((_, width)) = PRESETS.iter().find(|(name, _)| *name == range) {
        (now - *width, now)
    } else {
        problems.push(FieldError::new("range", "must be one of 24h, 7d, 30d, custom"));
        (now - TimeDelta::hours(24), now)
    };
    let reason = reason_filter(value(pairs, "reason"), &mut problems);
    let form = InsightsForm {
        range,
        since: value(pairs, "since").unwrap_or_default().to_owned(),
        until: value(pairs, "until").unwrap_or_default().to_owned(),
        reason: reason.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
    };
    Ok((window(from, to, reason, problems)?, form))
}

fn insights_port(state: &AppState) -> Result<Arc<dyn InsightsPort>, ApiError> {
    state.insights().cloned().ok_or(ApiError::RouteNotFound)
}

/// `GET /insights`.
#[utoipa::path(
    get,
    path = "/insights",
    tag = "insights",
    operation_id = "insightsPage",
    summary = "The insights page (HTML): handoffs over time, reasons × queue × outcome, time to queue, failures, advice confirmation, outbox backlog, queue capacity",
    params(
        ("range" = Option<String>, Query, description = "`24h` (default), `7d`, `30d` or `custom`."),
        ("since" = Option<String>, Query, description = "Custom range start: `YYYY-MM-DD` (UTC) or RFC 3339. Implies `range=custom`."),
        ("until" = Option<String>, Query, description = "Custom range end, exclusive: `YYYY-MM-DD` (UTC) or RFC 3339; now when absent."),
        ("reason" = Option<String>, Query, description = "Only handoffs of this reason."),
    ),
    responses(
        (status = 200, content_type = "text/html", body = String, description = "The page. No guest name, e-mail or context; no script; served under a strict Content-Security-Policy."),
        (status = 400, body = crate::error::InvalidPayloadBody, description = "A bad parameter (`invalid_request`, every problem in `details`)."),
        (status = 401, body = crate::error::ErrorBody, description = "Missing or wrong admin token; `WWW-Authenticate: Basic` makes a browser ask for it (any user name, the token as password)."),
        (status = 503, body = crate::error::ErrorBody, description = "The ledger could not be read."),
    ),
    security(("adminBasic" = []), ("adminBearer" = [])),
)]
pub(crate) async fn insights_page(
    _: AdminLogin,
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let port = insights_port(&state)?;
    let pairs = query_pairs(query, &["range", "since", "until", "reason"])?;
    let now = state.now();
    let (filter, form) = page_filter(&pairs, now)?;
    let insights = port.insights(&filter).await?;
    let backlog = state.service().ledger().outbox_backlog().await.ok();
    let html = render_page(&PageInputs {
        insights: &insights,
        form: &form,
        outbox_backlog: backlog,
        capacity: &state.capacity_figures(),
        generated_at: now,
    });
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY.as_str()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(response)
}

/// The CSV header row.
pub const CSV_HEADER: &str =
    "handoffId,conversationId,reason,queueId,outcome,created,finished,secondsToQueue,attempts\r\n";

/// One CSV field: quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-`, `@`
/// (or tab, CR) is prefixed with `'` so a spreadsheet never evaluates a reason as a formula.
fn csv_field(out: &mut String, raw: &str) {
    let guarded = raw.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = guarded || raw.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if guarded {
        out.push('\'');
    }
    for c in raw.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `secondsToQueue`: seconds with millisecond precision (`12.345`).
fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// One summary as a CSV line.
pub fn csv_line(out: &mut String, s: &HandoffSummary) {
    use std::fmt::Write as _;
    let _ = write!(out, "{},{},", s.handoff_id, s.conversation_id);
    csv_field(out, &s.reason);
    let _ = write!(
        out,
        ",{},{},{},{},{},{}\r\n",
        s.queue_id.map(|q| q.to_string()).unwrap_or_default(),
        s.outcome,
        rfc3339(s.created_at),
        s.finished_at.map(rfc3339).unwrap_or_default(),
        s.to_queue.map(seconds).unwrap_or_default(),
        s.attempts
    );
}

/// `GET /handoffs/export.csv`.
#[utoipa::path(
    get,
    path = "/handoffs/export.csv",
    tag = "insights",
    operation_id = "exportHandoffs",
    summary = "One CSV row per handoff created in [since, until): no guest name, e-mail or context; streamed",
    params(
        ("since" = Option<String>, Query, description = "`YYYY-MM-DD` (UTC) or RFC 3339; 24 hours before `until` when absent."),
        ("until" = Option<String>, Query, description = "Exclusive; `YYYY-MM-DD` (UTC) or RFC 3339; now when absent."),
        ("reason" = Option<String>, Query, description = "Only handoffs of this reason."),
    ),
    responses(
        (status = 200, content_type = "text/csv", body = String, description = "Header `handoffId,conversationId,reason,queueId,outcome,created,finished,secondsToQueue,attempts`, then one row per handoff in creation order. `outcome` is `transferred`, `transferred_after_deferral`, `advised_defer`, `confirmed`, `unconfirmed`, `failed:<code>`, `abandoned` or `in_progress`. Streamed page by page; if the ledger fails midway the body ends early."),
        (status = 400, body = crate::error::InvalidPayloadBody, description = "A bad parameter (`invalid_request`, every problem in `details`)."),
        (status = 401, body = crate::error::ErrorBody, description = "Missing or wrong admin token."),
        (status = 503, body = crate::error::ErrorBody, description = "The ledger could not be read."),
    ),
    security(("adminBearer" = []), ("adminBasic" = [])),
)]
pub(crate) async fn export_csv(
    _: AdminAccess,
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let port = insights_port(&state)?;
    let pairs = query_pairs(query, &["since", "until", "reason"])?;
    let mut problems = Vec::new();
    let mut time = |name: &str| {
        value(&pairs, name).map(|raw| parse_time(name, raw)).transpose().unwrap_or_else(|e| {
            problems.push(e);
            None
        })
    };
    let (since, until) = (time("since"), time("until"));
    let until = until.unwrap_or_else(|| state.now());
    let since = since.unwrap_or(until - DEFAULT_EXPORT_WINDOW);
    let reason = reason_filter(value(&pairs, "reason"), &mut problems);
    let filter = window(since, until, reason, problems)?;

    // The first page is read before answering, so an unreadable ledger is a 503, not a cut body.
    let first = port.summaries(&filter, None, SUMMARY_PAGE).await?;
    let name = format!(
        "attachment; filename=\"handoffs-{}-{}.csv\"",
        filter.since().format("%Y%m%dT%H%M%SZ"),
        filter.until().format("%Y%m%dT%H%M%SZ")
    );
    let stream = futures::stream::unfold(ExportState::First { header: true, page: first }, move |s| {
        let port = port.clone();
        let filter = filter.clone();
        async move { s.next(port.as_ref(), &filter).await }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Where the export stream stands: a page in hand, or done.
enum ExportState {
    First { header: bool, page: Vec<HandoffSummary> },
    Done,
}

impl ExportState {
    /// Writes the page in hand as one chunk and reads the next one (after its last row).
    async fn next(
        self,
        port: &dyn InsightsPort,
        filter: &InsightsFilter,
    ) -> Option<(Result<Bytes, std::io::Error>, ExportState)> {
        let ExportState::First { header, page } = self else { return None };
        if !header && page.is_empty() {
            return None;
        }
        let mut chunk = String::with_capacity(page.len() * 200 + CSV_HEADER.len());
        if header {
            chunk.push_str(CSV_HEADER);
        }
        for s in &page {
            csv_line(&mut chunk, s);
        }
        let next = match page.last() {
            Some(last) if page.len() >= SUMMARY_PAGE => {
                match port.summaries(filter, Some(last.cursor()), SUMMARY_PAGE).await {
                    Ok(next) => ExportState::First { header: false, page: next },
                    Err(e) => {
                        tracing::error!(error = %e, "the export stopped: the ledger could not be read");
                        return Some((Err(std::io::Error::other(e.to_string())), ExportState::Done));
                    }
                }
            }
            _ => ExportState::First { header: false, page: Vec::new() },
        };
        Some((Ok(Bytes::from(chunk)), next))
    }
}

#[cfg(test)]
mod tests;
