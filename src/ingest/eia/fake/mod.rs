//! The one EIA test double: a fake EIA API v2 (region-data, fuel-type-data, interchange-data,
//! region-sub-ba-data and their facet lists) that `energy bench`, the EIA unit tests, the
//! integration tests and the criterion benches all use.
//!
//! - [`answer`] is the API itself: a data request's path and query in, the status and JSON body
//!   the real API would send out (see `shared/docs/apis.md`), with pages from [`page`], the one
//!   page generator, and values from [`value_at`].
//! - [`LocalEiaServer`] serves it over HTTP on `127.0.0.1`, adding a latency to every answer and
//!   keeping the API's rate limits (answering 429 `OVER_RATE_LIMIT` with `Retry-After` beyond
//!   them).
//!
//! Tests that mix the fake's pages with failures of their own (wiremock mocks) call [`answer`]
//! from a responder.
mod page;

pub use page::{FUEL_NAMES, PageQuery, PageStyle, RESPONDENTS, SUB_REGIONS, TYPE_NAMES, answer, page, value_at};

use super::{REQUESTS_PER_HOUR, REQUESTS_PER_SECOND};
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http_body_util::Full;
use hyper::body::Bytes;
use serde::Serialize;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The local server's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Added to every answer.
    pub latency: Duration,
    /// Requests per second, also the burst.
    pub requests_per_second: u32,
    /// Requests per hour, also the burst.
    pub requests_per_hour: u32,
    /// How pages write their figures.
    pub style: PageStyle,
}

impl Default for ServerConfig {
    /// No latency, the API's limits ([`REQUESTS_PER_SECOND`], [`REQUESTS_PER_HOUR`]), the current
    /// page shape.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            requests_per_second: REQUESTS_PER_SECOND,
            requests_per_hour: REQUESTS_PER_HOUR,
            style: PageStyle::default(),
        }
    }
}

impl ServerConfig {
    /// No latency and limits no test reaches (1,000 requests a second).
    pub fn unthrottled() -> Self {
        Self { requests_per_second: 1000, requests_per_hour: 1_000_000, ..Self::default() }
    }
}

/// What the local server saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    pub requests: u64,
    /// Answered 429.
    pub rejected: u64,
    /// Rows served in 200 answers.
    pub rows: u64,
}

/// The fake EIA API on `127.0.0.1` (any free port), on its own thread: it answers every
/// request with [`answer`] after [`ServerConfig::latency`], or with 429 `OVER_RATE_LIMIT` and
/// `Retry-After` beyond the limits. Dropping it (or [`LocalEiaServer::stop`]) stops it.
pub struct LocalEiaServer {
    address: SocketAddr,
    state: Arc<ServerState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalEiaServer {
    pub fn start(config: ServerConfig) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let state = Arc::new(ServerState::new(config));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let served = state.clone();
        let thread = std::thread::Builder::new().name("local-eia-server".into()).spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, served, stopped).await,
                    Err(error) => tracing::error!(%error, "the local EIA server cannot listen"),
                }
            });
        })?;
        Ok(Self { address, state, stop: Some(stop), thread: Some(thread) })
    }

    /// The base URL to give [`super::EiaSource::new`].
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn stats(&self) -> ServerStats {
        self.state.stats()
    }

    /// Stop serving; what it saw.
    pub fn stop(mut self) -> ServerStats {
        self.shut_down();
        self.state.stats()
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LocalEiaServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.answer(request.uri()).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    if let Err(error) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                        tracing::debug!(%error, "local EIA server connection ended");
                    }
                });
            }
        }
    }
}

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The API's limits as the fake keeps them: two GCRA buckets (governor), one of
/// `per_second` requests refilled at `per_second` a second, one of `per_hour` requests refilled
/// evenly over the hour. A request refused by the first does not count against the second.
struct Admission<C: Clock + Clone> {
    clock: C,
    second: Bucket<C>,
    hour: Bucket<C>,
}

impl<C: Clock + Clone> Admission<C> {
    fn new(per_second: u32, per_hour: u32, clock: C) -> Self {
        let at_least_one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            second: RateLimiter::direct_with_clock(Quota::per_second(at_least_one(per_second)), clock.clone()),
            hour: RateLimiter::direct_with_clock(Quota::per_hour(at_least_one(per_hour)), clock.clone()),
            clock,
        }
    }

    /// Admit a request now, or say how long to wait.
    fn admit(&self) -> Result<(), Duration> {
        self.second.check().map_err(|not_until| not_until.wait_time_from(self.clock.now()))?;
        self.hour.check().map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

struct ServerState {
    config: ServerConfig,
    admission: Admission<MonotonicClock>,
    requests: AtomicU64,
    rejected: AtomicU64,
    rows: AtomicU64,
}

type Answer = hyper::Response<Full<Bytes>>;

impl ServerState {
    fn new(config: ServerConfig) -> Self {
        Self {
            admission: Admission::new(config.requests_per_second, config.requests_per_hour, MonotonicClock),
            config,
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> ServerStats {
        ServerStats {
            requests: self.requests.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
        }
    }

    async fn answer(&self, uri: &hyper::Uri) -> Answer {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = match self.admission.admit() {
            Err(wait) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                let mut answer = json_answer(429, page::over_rate_limit());
                answer.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from(seconds));
                answer
            }
            Ok(()) => match answer(uri.path(), uri.query().unwrap_or_default(), self.config.style) {
                Ok((body, rows)) => {
                    self.rows.fetch_add(rows, Ordering::Relaxed);
                    json_answer(200, body)
                }
                Err((status, body)) => json_answer(status, body),
            },
        };
        tokio::time::sleep(self.config.latency).await;
        answer
    }
}

fn json_answer(status: u16, body: String) -> Answer {
    let mut answer = hyper::Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    answer
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::eia::Route;
    use governor::clock::FakeRelativeClock;

    fn get(server: &LocalEiaServer, query: &str) -> (u16, Option<String>, serde_json::Value) {
        let url = format!("{}{}?{query}", server.url(), Route::RegionData.data_path());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let response = reqwest::get(&url).await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body = response.text().await.unwrap();
            (status, retry_after, serde_json::from_str(&body).unwrap())
        })
    }

    fn fast() -> ServerConfig {
        ServerConfig { requests_per_second: 1000, requests_per_hour: 100_000, ..ServerConfig::default() }
    }

    const QUERY: &str = "api_key=K&frequency=hourly&data%5B0%5D=value&facets%5Brespondent%5D%5B%5D=PJM\
        &facets%5Brespondent%5D%5B%5D=CISO&facets%5Btype%5D%5B%5D=D&facets%5Btype%5D%5B%5D=NG\
        &start=2024-01-01T01&end=2024-03-01T00";

    #[test]
    fn pages_have_the_real_shape() {
        let server = LocalEiaServer::start(fast()).unwrap();
        let (status, _, body) = get(&server, &format!("{QUERY}&offset=0&length=5000"));
        assert_eq!(status, 200, "{body}");
        // 60 days × 24 hours × 2 respondents × 2 types
        assert_eq!(body["response"]["total"], "5760");
        assert_eq!(body["response"]["warnings"][0]["warning"], "incomplete return");
        let data = body["response"]["data"].as_array().unwrap();
        assert_eq!(data.len(), 5000);
        assert_eq!(data[0]["period"], "2024-01-01T01");
        let order: Vec<(String, String)> = data[..4]
            .iter()
            .map(|r| (r["respondent"].as_str().unwrap().into(), r["type"].as_str().unwrap().into()))
            .collect();
        let expected = [("CISO", "D"), ("CISO", "NG"), ("PJM", "D"), ("PJM", "NG")];
        assert_eq!(order, expected.map(|(r, t)| (r.to_string(), t.to_string())));
        assert!(data[0]["value"].as_str().unwrap().parse::<i64>().unwrap() > 0);
        assert_eq!(data[4]["period"], "2024-01-01T02");
        assert_eq!(body["request"]["params"]["offset"], "0");
        let (_, _, rest) = get(&server, &format!("{QUERY}&offset=5000&length=5000"));
        let rest = rest["response"]["data"].as_array().unwrap();
        assert_eq!(rest.len(), 760);
        assert_eq!(rest.last().unwrap()["period"], "2024-03-01T00");
        // the same request gives the same values
        let (_, _, again) = get(&server, &format!("{QUERY}&offset=0&length=5000"));
        assert_eq!(again["response"]["data"], body["response"]["data"]);
        assert_eq!(server.stop(), ServerStats { requests: 3, rejected: 0, rows: 10_760 });
    }

    #[test]
    fn errors_have_the_real_shapes() {
        let server = LocalEiaServer::start(fast()).unwrap();
        let (status, _, body) = get(&server, &QUERY.replace("api_key=K&", ""));
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("API_KEY_MISSING")));
        let (status, _, body) = get(&server, &QUERY.replace("hourly", "yearly"));
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("Invalid frequency 'yearly'"), "{body}");
        let (status, _, body) = get(&server, &QUERY.replace("2024-01-01T01", "2024-01-01 01"));
        assert_eq!(status, 400, "{body}");
    }

    #[test]
    fn requests_beyond_the_burst_get_429_with_retry_after() {
        let config = ServerConfig { latency: Duration::ZERO, ..ServerConfig::default() };
        let server = LocalEiaServer::start(config).unwrap();
        let statuses: Vec<(u16, Option<String>)> =
            (0..6).map(|_| get(&server, &format!("{QUERY}&length=10"))).map(|(s, r, _)| (s, r)).collect();
        assert!(statuses[..5].iter().all(|(s, _)| *s == 200), "{statuses:?}");
        assert_eq!(statuses[5], (429, Some("1".to_string())));
        assert_eq!(server.stop().rejected, 1);
    }

    /// Admission at `at` after the clock's start.
    fn admit_at(admission: &Admission<FakeRelativeClock>, at: Duration) -> Result<(), Duration> {
        let now: Duration = admission.clock.now().into();
        admission.clock.advance(at.saturating_sub(now));
        admission.admit()
    }

    #[test]
    fn admission_keeps_the_burst_and_the_hour() {
        let admission = Admission::new(5, 9000, FakeRelativeClock::default());
        for _ in 0..5 {
            assert!(admit_at(&admission, Duration::ZERO).is_ok());
        }
        let wait = admit_at(&admission, Duration::ZERO).unwrap_err();
        assert!(wait > Duration::from_millis(150) && wait <= Duration::from_millis(200), "{wait:?}");
        // evenly spaced at 5 a second: never refused
        for i in 1..=50 {
            assert!(admit_at(&admission, Duration::from_millis(200 * i)).is_ok(), "{i}");
        }
        // the hourly limit: a burst of 10, then one request every 360 s
        let admission = Admission::new(5, 10, FakeRelativeClock::default());
        for i in 0..10 {
            assert!(admit_at(&admission, Duration::from_secs(i)).is_ok());
        }
        let wait = admit_at(&admission, Duration::from_secs(100)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(260));
        assert!(admit_at(&admission, Duration::from_secs(360)).is_ok());
        assert!(admit_at(&admission, Duration::from_secs(361)).is_err());
        assert!(admit_at(&admission, Duration::from_secs(3600)).is_ok());
    }
}
