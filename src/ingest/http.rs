//! The one HTTP client of the network sources (EIA now, CAISO later): it owns the request
//! timeout, the rate limiter and the retry loop; sources only build [`Request`]s and read
//! [`Reply`]s.
//!
//! # Retries
//! [`HttpClient::fetch`] sends a request and hands the reply to the source's reader. An error
//! that [`IngestError::is_transient`] calls transient (a connection or timeout error, HTTP 408,
//! 429 or 5xx other than 501, an unreadable body) is retried after a jittered exponential
//! backoff (`base·2ⁿ` to twice that, capped at `max_delay`, from [`backon`]), or after the
//! server's `Retry-After` when that is longer, up to `max_attempts` attempts in all. A
//! `Retry-After` longer than `max_delay` is not waited for: the request fails at once, saying so.
//! Other errors (400, 403, 404, an error in the body) are never retried.
//!
//! # Rate limits
//! One [`RateLimiter`] per client, shared by its clones and so by every request of the process
//! that uses them: at most one request start per `interval` (EIA: 1/5 s), and at most
//! `per_minute`, `per_hour` and `per_day` calls in any sliding minute, hour and day (each a GCRA
//! bucket of a tenth of its limit refilled at nine tenths of it per window: the burst is short,
//! and no window ever holds more than the limit). A call counts its [`Request::weight`] (1 unless
//! the source says otherwise: Open-Meteo weighs a call by its variables, days and locations),
//! counted in hundredths. The limiter runs on tokio's clock, so
//! `#[tokio::test(start_paused = true)]` tests it without waiting.
//!
//! # Secrets
//! A [`Request`] holds its URL without secrets; the API key is a [`Secret`] query parameter added
//! to a copy of the URL only when the request is sent. Every URL or text that reaches an error or
//! a log line is the secret-free URL, passed through [`redact`] (which replaces the value of any
//! `api_key` parameter with `***`) and [`Reply::scrub`] (which removes the secret's value
//! wherever it appears, e.g. a body that echoes it). reqwest errors lose their URL
//! (`without_url`) before they are shown.
use super::IngestError;
use crate::config::RetryConfig;
use crate::time::DateRange;
use backon::{BackoffBuilder, ExponentialBuilder};
use governor::Quota;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use std::error::Error as _;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Query parameters whose values are secrets, redacted wherever they appear (EIA's `api_key`,
/// Open-Meteo's `apikey`).
pub const SECRET_PARAMS: &[&str] = &["api_key", "apikey"];

/// Bytes of a body quoted in an error message.
const SNIPPET_BYTES: usize = 160;

/// A secret string (an API key). `Debug` shows `***`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replace the value of every secret parameter in `text` with `***`: URL query parameters
/// (`api_key=…`, up to `&`, `#`, a quote, `<`, `>` or white space) and JSON members
/// (`"api_key":"…"`, as the EIA API echoes them).
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for name in SECRET_PARAMS {
        out = redact_param(&out, &format!("{name}="), |c| {
            matches!(c, '&' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
        });
        out = redact_json_member(&out, name);
    }
    out
}

fn redact_param(text: &str, marker: &str, ends: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let value_start = at + marker.len();
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let value_len = value.find(&ends).unwrap_or(value.len());
        if value_len > 0 {
            out.push_str("***");
        }
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

fn redact_json_member(text: &str, name: &str) -> String {
    let marker = format!("\"{name}\"");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&marker) {
        let after = at + marker.len();
        out.push_str(&rest[..after]);
        let tail = &rest[after..];
        let trimmed = tail.trim_start();
        let Some(colon) = trimmed.strip_prefix(':') else {
            rest = tail;
            continue;
        };
        let value = colon.trim_start();
        let Some(inner) = value.strip_prefix('"') else {
            rest = tail;
            continue;
        };
        // the value runs to the next unescaped quote
        let mut end = inner.len();
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = i;
                    break;
                }
                _ => escaped = false,
            }
        }
        out.push_str(&tail[..tail.len() - inner.len()]);
        out.push_str("***");
        rest = &inner[end..];
    }
    out.push_str(rest);
    out
}

/// Remove every occurrence of the secrets' values from `text`, then [`redact`] it.
fn scrub(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        // a very short "secret" would blank out ordinary words; real keys are long
        if secret.0.len() >= 4 {
            out = out.replace(&secret.0, "***");
        }
    }
    redact(&out)
}

/// When requests may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Least time between two request starts; zero for no limit.
    pub interval: Duration,
    /// Most (weighted) calls in any sliding hour; `None` for no limit.
    pub per_hour: Option<u32>,
    /// Most (weighted) calls in any sliding minute; `None` for no limit.
    pub per_minute: Option<u32>,
    /// Most (weighted) calls in any sliding day; `None` for no limit.
    pub per_day: Option<u32>,
}

impl RateLimits {
    /// No limit (tests).
    pub const UNLIMITED: RateLimits =
        RateLimits { interval: Duration::ZERO, per_hour: None, per_minute: None, per_day: None };

    /// At most `per_second` starts in any second (evenly spaced) and `per_hour` in any hour.
    pub fn per_second_and_hour(per_second: u32, per_hour: u32) -> Self {
        Self {
            interval: Duration::from_secs(1) / per_second.max(1),
            per_hour: Some(per_hour.max(1)),
            ..Self::UNLIMITED
        }
    }

    /// One request start per `interval` (CAISO: 5 s).
    pub fn every(interval: Duration) -> Self {
        Self { interval, ..Self::UNLIMITED }
    }

    /// At most `per_minute`, `per_hour` and `per_day` weighted calls in any sliding minute, hour
    /// and day (Open-Meteo); no spacing.
    pub fn weighted(per_minute: u32, per_hour: u32, per_day: u32) -> Self {
        Self {
            per_minute: Some(per_minute.max(1)),
            per_hour: Some(per_hour.max(1)),
            per_day: Some(per_day.max(1)),
            ..Self::UNLIMITED
        }
    }
}

/// A call's weight is counted in these units (hundredths of a call).
const WEIGHT_UNITS: f64 = 100.0;

/// Tokio's clock for governor: paused time in tests moves it.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

type Bucket = governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// The token buckets of [`RateLimits`] (see the module documentation).
pub struct RateLimiter {
    clock: TokioClock,
    /// Windowed limits, counted in [`WEIGHT_UNITS`], with their capacity (burst) in units.
    weighted: Vec<(Bucket, u32)>,
    /// The spacing of request starts (one token a request, whatever its weight).
    spacing: Option<Bucket>,
    limits: RateLimits,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter").field("limits", &self.limits).finish()
    }
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        let clock = TokioClock { origin: tokio::time::Instant::now() };
        let mut weighted = Vec::new();
        for (limit, window) in [
            (limits.per_minute, Duration::from_secs(60)),
            (limits.per_hour, Duration::from_secs(3600)),
            (limits.per_day, Duration::from_secs(86_400)),
        ] {
            let Some(limit) = limit else { continue };
            let units = (u64::from(limit.max(1)) * WEIGHT_UNITS as u64).min(u64::from(u32::MAX)) as u32;
            // a burst of a tenth of the window's calls, refilled so that burst + refill over
            // any window stays within the limit
            let burst = (units / 10).max(1);
            let refill = units.saturating_sub(burst).max(1);
            let quota = Quota::with_period(window / refill)
                .map(|q| q.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)));
            if let Some(quota) = quota {
                weighted.push((Bucket::direct_with_clock(quota, clock.clone()), burst));
            }
        }
        let spacing = Quota::with_period(limits.interval).map(|quota| Bucket::direct_with_clock(quota, clock.clone()));
        Self { clock, weighted, spacing, limits }
    }

    /// Wait until a request of weight 1 may start, and count it.
    pub async fn acquire(&self) {
        self.acquire_weighted(1.0).await;
    }

    /// Wait until a request of `weight` calls may start, and count it. A weight above a
    /// window's burst counts as the burst (it could never start otherwise).
    pub async fn acquire_weighted(&self, weight: f64) {
        let units = (weight.max(0.0) * WEIGHT_UNITS).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        for (bucket, burst) in &self.weighted {
            let n = NonZeroU32::new(units.min(*burst)).unwrap_or(NonZeroU32::MIN);
            // `n` is at most the burst, so the capacity check cannot fail
            while let Ok(Err(not_until)) = bucket.check_n(n) {
                tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
            }
        }
        if let Some(bucket) = &self.spacing {
            while let Err(not_until) = bucket.check() {
                tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
            }
        }
    }
}

/// How requests are retried and how long one may take.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Whole-request timeout (connect, send, read the body); `None` for none.
    pub timeout: Option<Duration>,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(config: &RetryConfig) -> Self {
        Self {
            max_attempts: config.max_attempts.max(1),
            base_delay: Duration::from_millis(config.base_delay_ms),
            max_delay: Duration::from_millis(config.max_delay_ms),
            timeout: (config.timeout_s > 0).then(|| Duration::from_secs(config.timeout_s)),
        }
    }
}

impl RetryPolicy {
    /// Retry at once, up to `max_attempts` attempts (tests).
    pub fn immediate(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            timeout: Some(Duration::from_secs(30)),
        }
    }

    /// The delays before the retries: jittered `base·2ⁿ` (to twice that), at most `max_delay`.
    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        let max_delay = self.max_delay;
        ExponentialBuilder::new()
            .with_min_delay(self.base_delay)
            .with_max_delay(max_delay / 2)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
            .map(move |delay| delay.min(max_delay))
    }
}

/// A GET request: its URL without secrets, and the secret query parameters sent with it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The provider, for log lines (`eia`).
    pub source: &'static str,
    /// The range being collected, for log lines.
    pub range: DateRange,
    /// The URL without secrets.
    pub url: reqwest::Url,
    /// What one attempt counts against the rate limits, in calls (1 unless the API weighs calls).
    pub weight: f64,
    secrets: Vec<(&'static str, Secret)>,
}

impl Request {
    pub fn get(source: &'static str, range: DateRange, url: reqwest::Url) -> Self {
        Self { source, range, url, weight: 1.0, secrets: Vec::new() }
    }

    /// This request counting `weight` calls against the rate limits.
    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Add a secret query parameter (sent, never shown).
    pub fn with_secret(mut self, name: &'static str, value: Secret) -> Self {
        self.secrets.push((name, value));
        self
    }

    /// The URL as errors and logs show it.
    pub fn shown_url(&self) -> String {
        let readable = self.url.as_str().replace("%5B", "[").replace("%5D", "]");
        scrub(&readable, &self.secret_values())
    }

    fn secret_values(&self) -> Vec<Secret> {
        self.secrets.iter().map(|(_, s)| s.clone()).collect()
    }

    /// The URL that is sent: with the secrets.
    fn sent_url(&self) -> reqwest::Url {
        let mut url = self.url.clone();
        if !self.secrets.is_empty() {
            let mut query = url.query_pairs_mut();
            for (name, value) in &self.secrets {
                query.append_pair(name, value.expose());
            }
        }
        url
    }
}

/// A reply of any status, body read.
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub content_type: Option<String>,
    /// `Content-Disposition` (CAISO names an invalid request's file `INVALID_REQUEST.xml.zip` there).
    pub content_disposition: Option<String>,
    /// `Retry-After`, in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
    /// The request's URL as shown (no secrets).
    pub url: String,
    secrets: Vec<Secret>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("content_disposition", &self.content_disposition)
            .field("url", &self.url)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Reply {
    /// A reply built by hand (tests, benches).
    pub fn new(status: u16, content_type: Option<&str>, body: impl Into<Vec<u8>>, url: &str) -> Self {
        Self {
            status: reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR),
            content_type: content_type.map(str::to_string),
            content_disposition: None,
            retry_after: None,
            body: body.into(),
            url: redact(url),
            secrets: Vec::new(),
        }
    }

    /// This reply with a `Content-Disposition` header (tests, benches).
    pub fn with_content_disposition(mut self, value: &str) -> Self {
        self.content_disposition = Some(value.to_string());
        self
    }

    /// `text` without the request's secrets.
    pub fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    /// The start of the body as one line, secrets removed, for error messages.
    pub fn snippet(&self) -> String {
        let end = self.body.len().min(SNIPPET_BYTES);
        let text = String::from_utf8_lossy(&self.body[..end]);
        let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let more = if self.body.len() > end { "…" } else { "" };
        self.scrub(&format!("{line}{more}"))
    }

    /// The content type as shown in messages.
    pub fn shown_content_type(&self) -> &str {
        self.content_type.as_deref().unwrap_or("no content type")
    }

    /// An error for this reply's status (transient for 408, 429 and 5xx but 501).
    pub fn status_error(&self, message: &str) -> IngestError {
        let mut message = self.scrub(message);
        if let Some(wait) = self.retry_after {
            message.push_str(&format!(" (the server asks to wait {} s)", wait.as_secs()));
        }
        IngestError::Http {
            url: self.url.clone(),
            status: self.status.as_u16(),
            message,
            retry_after: self.retry_after,
        }
    }

    /// An error for a body that cannot be read at all (transient: a truncated or foreign body).
    pub fn body_error(&self, message: &str) -> IngestError {
        IngestError::Body { url: self.url.clone(), message: self.scrub(message) }
    }

    /// An error for a readable body that is not what was expected (not retried).
    pub fn format_error(&self, message: &str) -> IngestError {
        IngestError::Format { url: self.url.clone(), message: self.scrub(message) }
    }

    /// An error the API reported in its body (not retried).
    pub fn api_error(&self, message: &str) -> IngestError {
        IngestError::Api { url: self.url.clone(), message: self.scrub(message) }
    }
}

/// A value read from a reply, and how many attempts it took.
#[derive(Debug)]
pub struct Fetched<T> {
    pub value: T,
    pub attempts: u32,
}

/// The shared HTTP client: cheap to clone; clones share the connection pool and the limiter.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
}

impl HttpClient {
    pub fn new(retry: RetryPolicy, limits: RateLimits) -> Result<Self, IngestError> {
        let mut builder = reqwest::Client::builder().user_agent(concat!("energy/", env!("CARGO_PKG_VERSION")));
        if let Some(timeout) = retry.timeout {
            builder = builder.connect_timeout(timeout.min(Duration::from_secs(30)));
        }
        let inner = builder.build().map_err(|e| IngestError::Client(e.without_url().to_string()))?;
        Ok(Self { inner, limiter: Arc::new(RateLimiter::new(limits)), retry })
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Send `request` and read its reply with `read`, retrying transient errors (see the module
    /// documentation). `read` gets every reply, whatever its status, and turns it into a value or
    /// an error (use [`Reply::status_error`] for a failed status).
    pub async fn fetch<T>(
        &self,
        request: &Request,
        read: impl Fn(&Reply) -> Result<T, IngestError>,
    ) -> Result<Fetched<T>, IngestError> {
        let mut backoff = self.retry.backoff();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            self.limiter.acquire_weighted(request.weight).await;
            let result = match self.send(request).await {
                Ok(reply) => match read(&reply) {
                    Ok(_) if !reply.status.is_success() => {
                        Err(reply.status_error(&format!("{}: `{}`", reply.shown_content_type(), reply.snippet())))
                    }
                    other => other,
                },
                Err(error) => Err(error),
            };
            let error = match result {
                Ok(value) => return Ok(Fetched { value, attempts: attempt }),
                Err(error) => error,
            };
            if !error.is_transient() || attempt >= self.retry.max_attempts {
                return Err(error);
            }
            let Some(mut delay) = backoff.next() else { return Err(error) };
            if let Some(wait) = error.retry_after() {
                if wait > self.retry.max_delay {
                    tracing::debug!(source = request.source, range = %request.range, ?wait, "not waiting for Retry-After");
                    return Err(error);
                }
                delay = delay.max(wait);
            }
            tracing::warn!(source = request.source, range = %request.range, attempt, ?delay, error = %error, "retrying request");
            tokio::time::sleep(delay).await;
        }
    }

    async fn send(&self, request: &Request) -> Result<Reply, IngestError> {
        let shown = request.shown_url();
        let secrets = request.secret_values();
        tracing::debug!(source = request.source, range = %request.range, url = %shown, "GET");
        let mut builder = self.inner.get(request.sent_url());
        if let Some(timeout) = self.retry.timeout {
            builder = builder.timeout(timeout);
        }
        let network = |error: reqwest::Error| network_error(&shown, error, &secrets);
        let response = builder.send().await.map_err(network)?;
        let status = response.status();
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let content_disposition = header(reqwest::header::CONTENT_DISPOSITION);
        let retry_after = header(reqwest::header::RETRY_AFTER).and_then(|v| parse_retry_after(&v));
        let body: Vec<u8> = response.bytes().await.map_err(network)?.into();
        tracing::trace!(source = request.source, %status, bytes = body.len(), "reply");
        Ok(Reply { status, content_type, content_disposition, retry_after, body, url: shown, secrets })
    }
}

/// A reqwest error as an [`IngestError`]: without its URL, with its causes, secrets removed.
fn network_error(url: &str, error: reqwest::Error, secrets: &[Secret]) -> IngestError {
    let transient =
        error.is_timeout() || error.is_connect() || error.is_request() || error.is_body() || error.is_decode();
    let timeout = error.is_timeout();
    let error = error.without_url();
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    if timeout && !message.contains("timed out") {
        message.push_str(" (timed out)");
    }
    IngestError::Network { url: url.to_string(), message: scrub(&message, secrets), transient }
}

/// `Retry-After`: delta seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_query_parameters_and_json_members() {
        let url = "https://api.eia.gov/v2/x/?frequency=hourly&api_key=abcDEF123&length=5000";
        assert_eq!(redact(url), "https://api.eia.gov/v2/x/?frequency=hourly&api_key=***&length=5000");
        assert_eq!(redact("see (https://h/?api_key=KEY)"), "see (https://h/?api_key=KEY)".replace("KEY)", "***"));
        assert_eq!(redact("a?api_key=K1 and b?x=1&api_key=K2#f"), "a?api_key=*** and b?x=1&api_key=***#f");
        assert_eq!(
            redact(r#"{"params":{"api_key" : "SECRET\"x","offset":"0"}}"#),
            r#"{"params":{"api_key" : "***","offset":"0"}}"#
        );
        assert_eq!(redact("no key here: api_key"), "no key here: api_key");
        assert_eq!(
            redact("https://customer-api.open-meteo.com/v1/forecast?latitude=1&apikey=OMKEY123"),
            "https://customer-api.open-meteo.com/v1/forecast?latitude=1&apikey=***"
        );
        assert_eq!(redact("empty api_key=&x"), "empty api_key=&x");
    }

    #[test]
    fn scrub_removes_the_secret_anywhere() {
        let secrets = [Secret::new("KEY-123456")];
        assert_eq!(scrub("<p>bad key KEY-123456</p>", &secrets), "<p>bad key ***</p>");
        assert_eq!(format!("{:?}", secrets[0]), "Secret(***)");
    }

    #[test]
    fn secrets_are_added_only_to_the_sent_url() {
        let range = DateRange::new(crate::time::from_us(0), crate::time::from_us(0)).unwrap();
        let request = Request::get("eia", range, "http://h/v2/?a=1".parse().unwrap())
            .with_secret("api_key", Secret::new("TOPSECRETKEY"));
        assert_eq!(request.sent_url().as_str(), "http://h/v2/?a=1&api_key=TOPSECRETKEY");
        assert!(!request.shown_url().contains("TOPSECRETKEY"));
        assert!(!format!("{request:?}").contains("TOPSECRETKEY"));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            timeout: None,
        };
        let delays: Vec<Duration> = policy.backoff().collect();
        assert_eq!(delays.len(), 5);
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(200), "{delays:?}");
        assert!(delays[1] >= Duration::from_millis(200) && delays[1] < Duration::from_millis(400), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1000)), "{delays:?}");
        assert!(RetryPolicy::immediate(3).backoff().all(|d| d.is_zero()));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_requests_by_the_interval() {
        let limiter = RateLimiter::new(RateLimits::per_second_and_hour(5, 9000));
        let start = tokio::time::Instant::now();
        for _ in 0..11 {
            limiter.acquire().await;
        }
        // the first at once, then one every 200 ms
        assert_eq!(start.elapsed(), Duration::from_millis(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_keeps_any_hour_within_the_hourly_limit() {
        // 20 an hour: a burst of 2, then one every 200 s (18 an hour)
        let limiter = RateLimiter::new(RateLimits { per_hour: Some(20), ..RateLimits::UNLIMITED });
        let start = tokio::time::Instant::now();
        let mut starts = Vec::new();
        for _ in 0..40 {
            limiter.acquire().await;
            starts.push(start.elapsed());
        }
        assert_eq!(starts[1], Duration::ZERO);
        assert_eq!(starts[2], Duration::from_secs(200));
        for (i, t) in starts.iter().enumerate() {
            let in_hour = starts[i..].iter().take_while(|u| **u < *t + Duration::from_secs(3600)).count();
            assert!(in_hour <= 20, "{in_hour} requests in the hour from {t:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_share_one_limiter() {
        let limiter = Arc::new(RateLimiter::new(RateLimits::per_second_and_hour(5, 9000)));
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    tokio::time::Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap() - start);
        }
        times.sort();
        for (i, t) in times.iter().enumerate() {
            assert!(*t >= Duration::from_millis(200) * i as u32, "{times:?}");
        }
        assert!(times[9] < Duration::from_millis(2000), "{times:?}");
    }
}
