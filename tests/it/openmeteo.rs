//! The Open-Meteo source against wiremock servers: an Open-Meteo-compatible generator (comma
//! lists of points, any variables and days, arrays by position, nulls where asked), the real
//! bodies of `shared/realdata/openmeteo` (skipped where absent), 400 and 429 bodies; the real
//! binary's `collect --source openmeteo` on a temporary store, `status`, refusals, and the key.
use super::cli::energy;
use super::realdata;
use energy::config::WeatherPoint;
use energy::ingest::openmeteo::{self, OpenmeteoKind, OpenmeteoSource, Settings};
use energy::ingest::orchestrator::plan;
use energy::ingest::{HttpClient, IngestError, RateLimits, RetryPolicy, Secret, SeriesId, Source, Store};
use energy::time::{DateRange, format_minute};
use predicates::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const JSON: &str = "application/json; charset=utf-8";
const KEY: &str = "OMKEY-7f3a9c2e51d84b06a1e2SECRET";

/// Answers any call as the API would: one object per point (an array for several, in request
/// order), `hourly.time` for every hour of `start_date` … `end_date` (UTC), each variable's
/// value = the point's latitude + N for `…_previous_dayN` + 100 for the forecast host path
/// marker `fcst` in the latitude list (none here); a point whose longitude ends in .5 reports
/// null at even hours.
struct FakeOpenmeteo;

fn param(request: &Request, name: &str) -> Option<String> {
    request.url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn location(
    lat: f64,
    lon: f64,
    variables: &[&str],
    first: chrono::NaiveDate,
    last: chrono::NaiveDate,
    index: usize,
) -> serde_json::Value {
    let mut times = Vec::new();
    let mut hours = Vec::new();
    let mut day = first;
    while day <= last {
        for hour in 0..24 {
            times.push(format!("{}T{hour:02}:00", day.format("%Y-%m-%d")));
            hours.push(hour);
        }
        day = day.succ_opt().unwrap();
    }
    let mut hourly = serde_json::Map::new();
    let mut units = serde_json::Map::new();
    hourly.insert("time".into(), times.into());
    units.insert("time".into(), "iso8601".into());
    for variable in variables {
        let lead = variable.rsplit_once("_previous_day").map_or(0.0, |(_, n)| n.parse::<f64>().unwrap());
        let values: Vec<serde_json::Value> = hours
            .iter()
            .map(|h| if lon.fract().abs() == 0.5 && h % 2 == 0 { serde_json::Value::Null } else { (lat + lead).into() })
            .collect();
        hourly.insert(variable.to_string(), values.into());
        let unit = if variable.starts_with("shortwave") { "W/m²" } else { "°C" };
        units.insert(variable.to_string(), unit.into());
    }
    let mut object = serde_json::json!({
        "latitude": lat, "longitude": lon, "generationtime_ms": 0.1, "utc_offset_seconds": 0,
        "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 10.0,
    });
    if index > 0 {
        object["location_id"] = index.into();
    }
    object["hourly_units"] = units.into();
    object["hourly"] = hourly.into();
    object
}

impl wiremock::Respond for FakeOpenmeteo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let list =
            |name: &str| -> Vec<f64> { param(request, name).unwrap().split(',').map(|v| v.parse().unwrap()).collect() };
        let (lats, lons) = (list("latitude"), list("longitude"));
        assert_eq!(param(request, "timezone").as_deref(), Some("GMT"));
        let hourly = param(request, "hourly").unwrap();
        let variables: Vec<&str> = hourly.split(',').collect();
        let date = |name: &str| param(request, name).unwrap().parse::<chrono::NaiveDate>().unwrap();
        let (first, last) = (date("start_date"), date("end_date"));
        let objects: Vec<serde_json::Value> = lats
            .iter()
            .zip(&lons)
            .enumerate()
            .map(|(i, (lat, lon))| location(*lat, *lon, &variables, first, last, i))
            .collect();
        let body = if objects.len() == 1 { objects[0].clone() } else { objects.into() };
        ResponseTemplate::new(200).set_body_raw(serde_json::to_vec(&body).unwrap(), JSON)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

fn days(first: &str, last: &str) -> DateRange {
    DateRange::from_days(first.parse().unwrap(), last.parse().unwrap()).unwrap()
}

fn point(name: &str, lat: f64, lon: f64, weight: f64) -> WeatherPoint {
    WeatherPoint { name: name.into(), lat, lon, weight }
}

/// Region XYZ: A (lat 10, weight 3), B (lat 20, weight 1), C (lat 30, weight 4, null at even hours).
const XYZ_POINTS: &str = "[[weather.points.XYZ]]\nname = \"A\"\nlat = 10.0\nlon = -90.0\nweight = 3.0\n\
     [[weather.points.XYZ]]\nname = \"B\"\nlat = 20.0\nlon = -91.0\nweight = 1.0\n\
     [[weather.points.XYZ]]\nname = \"C\"\nlat = 30.0\nlon = -92.5\nweight = 4.0\n";

fn xyz_points() -> BTreeMap<String, Vec<WeatherPoint>> {
    let points = vec![point("A", 10.0, -90.0, 3.0), point("B", 20.0, -91.0, 1.0), point("C", 30.0, -92.5, 4.0)];
    BTreeMap::from([("XYZ".to_string(), points)])
}

fn source(url: &str, regions: &[&str], kinds: &[&str], retry: RetryPolicy, limits: RateLimits) -> OpenmeteoSource {
    let client = HttpClient::new(openmeteo::retry_policy(&retry), limits).unwrap();
    source_with(url, regions, kinds, client)
}

fn source_with(url: &str, regions: &[&str], kinds: &[&str], client: HttpClient) -> OpenmeteoSource {
    let settings = Settings { url: Some(url.into()), key: None, model: None, today: "2026-09-12".parse().unwrap() };
    let kinds: Vec<OpenmeteoKind> = kinds.iter().map(|k| OpenmeteoKind::parse(k).unwrap()).collect();
    let regions: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
    OpenmeteoSource::new(&regions, &kinds, &xyz_points(), settings, client).unwrap()
}

/// Retries at once; no timeout (paused time would jump to it while a socket waits).
fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(1),
        timeout: None,
    }
}

async fn generator() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(FakeOpenmeteo).mount(&server).await;
    server
}

#[tokio::test]
async fn weighted_mean_over_points_skips_null_points_per_hour() {
    let server = generator().await;
    let om = source(&server.uri(), &["XYZ"], &["TEMP", "TEMP_D2"], retry(1), RateLimits::UNLIMITED);
    let batch = om.fetch(days("2024-03-10", "2024-03-10")).await.unwrap();
    // one call per endpoint (archive, previous runs), every point in each
    assert_eq!((batch.requests, batch.retries), (2, 0));
    let requests = server.received_requests().await.unwrap();
    let paths: Vec<&str> = requests.iter().map(|r| r.url.path()).collect();
    assert_eq!(paths, ["/v1/archive", "/v1/forecast"]);
    assert_eq!(param(&requests[0], "latitude").as_deref(), Some("10,20,30"));
    assert_eq!(param(&requests[1], "hourly").as_deref(), Some("temperature_2m_previous_day2"));
    let temp = &batch.series[0];
    assert_eq!(temp.id, SeriesId::new("openmeteo", "XYZ", "TEMP"));
    assert_eq!(temp.len(), 24);
    assert_eq!(format_minute(temp.timestamps[0]), "2024-03-10T01:00Z");
    assert_eq!(format_minute(temp.timestamps[23]), "2024-03-11T00:00Z");
    // odd hour: (3·10 + 1·20 + 4·30) / 8; even hour, C null: (3·10 + 1·20) / 4
    assert_eq!(temp.values[0], Some(21.25));
    assert_eq!(temp.values[1], Some(12.5));
    assert_eq!(temp.values[23], Some(12.5), "00:00 of the next day closes the chunk");
    let d2 = &batch.series[1];
    assert_eq!((d2.values[0], d2.values[1]), (Some(23.25), Some(14.5)));
}

#[tokio::test]
async fn all_null_hours_are_stored_as_null() {
    let server = MockServer::start().await;
    let body = serde_json::json!({"utc_offset_seconds": 0, "hourly": {"time": (0..48).map(|h| format!("2024-03-{:02}T{:02}:00", 10 + h / 24, h % 24)).collect::<Vec<_>>(), "temperature_2m": vec![serde_json::Value::Null; 48]}});
    let points = BTreeMap::from([("ONE".to_string(), vec![point("A", 10.0, -90.0, 1.0)])]);
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200).set_body_json(body)).mount(&server).await;
    let client = HttpClient::new(retry(1), RateLimits::UNLIMITED).unwrap();
    let settings = Settings { url: Some(server.uri()), key: None, model: None, today: "2026-01-01".parse().unwrap() };
    let om = OpenmeteoSource::new(&["ONE".into()], &[], &points, settings, client).unwrap();
    let batch = om.fetch(days("2024-03-10", "2024-03-10")).await.unwrap();
    assert_eq!(batch.series[0].len(), 24);
    assert!(batch.series[0].values.iter().all(Option::is_none));
}

#[tokio::test]
async fn real_archive_body_is_served_and_read() {
    let Some(dir) = realdata::dir() else { return };
    let body =
        std::fs::read(dir.join("openmeteo/archive_hourly_temperature_2m_utc-0900_2022-12-29.body.json")).unwrap();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/archive"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, JSON))
        .expect(1)
        .mount(&server)
        .await;
    let points = BTreeMap::from([("NT".to_string(), vec![point("Darwin sea", -12.46, -130.84, 1.0)])]);
    let client = HttpClient::new(retry(1), RateLimits::UNLIMITED).unwrap();
    let settings = Settings { url: Some(server.uri()), key: None, model: None, today: "2026-01-01".parse().unwrap() };
    let om = OpenmeteoSource::new(&["NT".into()], &[], &points, settings, client).unwrap();
    // local 00:00–23:00 at UTC−9 is 09:00 of the 29th to 08:00 of the 30th (UTC)
    let batch = om.fetch(days("2022-12-29", "2022-12-30")).await.unwrap();
    let temp = &batch.series[0];
    assert_eq!(temp.len(), 24);
    assert_eq!(format_minute(temp.timestamps[0]), "2022-12-29T09:00Z");
    assert_eq!(temp.values[0], Some(25.2));
}

#[tokio::test]
async fn real_nan_body_fails_the_chunk_without_a_crash_or_a_retry() {
    let Some(dir) = realdata::dir() else { return };
    let body = std::fs::read(dir.join("openmeteo/frenck_satellite_not_covered_nan_not_json.txt")).unwrap();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, JSON))
        .expect(1)
        .mount(&server)
        .await;
    let om = source(&server.uri(), &["XYZ"], &["TEMP"], retry(3), RateLimits::UNLIMITED);
    let error = om.fetch(days("2024-03-10", "2024-03-10")).await.unwrap_err();
    assert!(matches!(error, IngestError::Format { .. }) && error.to_string().contains("not JSON"), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn minutely_429_is_retried_after_the_minute_boundary() {
    let Some(dir) = realdata::dir() else { return };
    let body = std::fs::read(dir.join("openmeteo/snippets/error_429_minutely.transcript.json")).unwrap();
    let server = || async {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429).set_body_raw(body.clone(), JSON))
            .up_to_n_times(1)
            .with_priority(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET")).respond_with(FakeOpenmeteo).mount(&server).await;
        server
    };
    // the source's policy waits past the minute boundary (no Retry-After is sent: the wait is
    // one second past the next whole minute, longer than any backoff of `retry`)
    let first = server().await;
    let om = source(&first.uri(), &["XYZ"], &["TEMP"], retry(3), RateLimits::UNLIMITED);
    let started = tokio::time::Instant::now();
    let batch = om.fetch(days("2024-03-10", "2024-03-10")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "waited {:?}", started.elapsed());
    assert_eq!((batch.requests, batch.retries, batch.rows()), (2, 1, 24));
    // a policy that may not wait that long gives up at once, saying why: the 429 asked for the
    // minute boundary, not for a backoff (which would have been retried and succeeded)
    let second = server().await;
    let client = HttpClient::new(retry(3), RateLimits::UNLIMITED).unwrap();
    let error = source_with(&second.uri(), &["XYZ"], &["TEMP"], client)
        .fetch(days("2024-03-10", "2024-03-10"))
        .await
        .unwrap_err();
    assert!(error.is_transient() && error.to_string().contains("Minutely API request limit"), "{error}");
    assert!(error.retry_after().is_some_and(|wait| wait > Duration::from_secs(1)), "{error:?}");
    assert_eq!(second.received_requests().await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn hourly_and_daily_429_stop_the_collection() {
    let Some(dir) = realdata::dir() else { return };
    for name in ["error_429_hourly.transcript.json", "error_429_daily.transcript.json"] {
        let body = std::fs::read(dir.join("openmeteo/snippets").join(name)).unwrap();
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429).set_body_raw(body, JSON))
            .mount(&server)
            .await;
        let om = source(&server.uri(), &["XYZ"], &["TEMP", "TEMP_D1"], retry(5), RateLimits::UNLIMITED);
        let error = om.fetch(days("2024-03-01", "2024-03-10")).await.unwrap_err();
        assert!(matches!(error, IngestError::LimitReached { .. }) && !error.is_transient(), "{error:?}");
        assert!(
            error.to_string().contains("limit exceeded") && error.to_string().contains("run the same command again")
        );
        // the next chunk sends nothing
        let again = om.fetch(days("2024-04-01", "2024-04-10")).await.unwrap_err();
        assert!(matches!(again, IngestError::LimitReached { .. }), "{again:?}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "{name}: one request, not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn client_limits_pace_weighted_calls() {
    let server = generator().await;
    // 3 points × 1 variable × a month: weight 3 a call; at most 30 an hour (a burst of 3, then
    // 27 an hour): one call every 400 s after the first. The floor is far above anything paused
    // time could add by jumping to an idle connection's timer.
    let om = source(&server.uri(), &["XYZ"], &["TEMP"], retry(1), RateLimits::weighted(600, 30, 10_000));
    let range = days("2024-01-01", "2024-06-29");
    let started = tokio::time::Instant::now();
    let batch = om.fetch(range).await.unwrap();
    let calls = server.received_requests().await.unwrap().len();
    assert_eq!(calls, range.month_chunks().len());
    assert_eq!(batch.rows(), 181 * 24);
    let floor = Duration::from_secs(400 * (calls as u64 - 1) - 1);
    assert!(started.elapsed() >= floor, "{:?} < {floor:?}", started.elapsed());
}

#[tokio::test]
async fn long_range_is_chunked_within_the_api_limits() {
    let server = generator().await;
    let om = source(&server.uri(), &["XYZ"], &["TEMP", "TEMP_D1"], retry(1), RateLimits::UNLIMITED);
    // 2015-11 to 2016-02: the previous-runs API accepts nothing before 2016
    let range = days("2015-11-01", "2016-02-29");
    let chunks = plan(range, om.chunk_len());
    assert_eq!(chunks, range.month_chunks());
    let mut rows = 0;
    for chunk in &chunks {
        rows += om.fetch(*chunk).await.unwrap().series[0].len();
    }
    assert_eq!(rows as i64, range.hours());
    let requests = server.received_requests().await.unwrap();
    let archive: Vec<_> = requests.iter().filter(|r| r.url.path() == "/v1/archive").collect();
    let previous: Vec<_> = requests.iter().filter(|r| r.url.path() == "/v1/forecast").collect();
    assert_eq!(archive.len(), chunks.len());
    let date = |r: &Request, name: &str| param(r, name).unwrap().parse::<chrono::NaiveDate>().unwrap();
    for request in &archive {
        let span = (date(request, "end_date") - date(request, "start_date")).num_days() + 1;
        assert!((1..=32).contains(&span), "{}", request.url);
    }
    assert!(previous.iter().all(|r| date(r, "start_date") >= "2016-01-01".parse().unwrap()), "{previous:?}");
    assert!(!previous.is_empty() && previous.len() < chunks.len());
}

fn config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("energy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn collect_stores_the_kinds_resumes_and_shows_in_status() {
    let runtime = runtime();
    let server = runtime.block_on(generator());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = config(dir.path(), XYZ_POINTS);
    let args = ["collect", "--source", "openmeteo", "--region", "XYZ", "--kind", "TEMP,TEMP_D1,TEMP_D2"];
    let range = ["--start", "2024-01-01", "--end", "2024-02-29"];
    let run = || {
        let out = energy(&store)
            .arg("--config")
            .arg(&config)
            .args(args)
            .args(range)
            .args(["--openmeteo-url", &server.uri(), "--json"])
            .assert()
            .success();
        serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()
    };
    let report = run();
    let chunks = plan(days("2024-01-01", "2024-02-29"), chrono::TimeDelta::days(31)).len();
    assert_eq!(report["rows"], 3 * 60 * 24, "{report}");
    assert_eq!(report["fetched_chunks"], chunks as u64, "{report}");
    // one call per endpoint and chunk
    let calls = runtime.block_on(server.received_requests()).unwrap().len();
    assert_eq!(calls, 2 * chunks);
    let stored = Store::new(&store).read(&SeriesId::new("openmeteo", "XYZ", "TEMP_D1"), None).unwrap();
    assert_eq!(stored.len(), 60 * 24);
    assert_eq!((stored.values[0], stored.values[1]), (Some(22.25), Some(13.5)));

    // again: everything is in the ledger, nothing is asked
    let again = run();
    assert_eq!((again["fetched_chunks"].as_u64(), again["rows"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(runtime.block_on(server.received_requests()).unwrap().len(), calls);

    let out = energy(&store).args(["status", "--json"]).assert().success();
    let status: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let text = status.to_string();
    for kind in ["TEMP", "TEMP_D1", "TEMP_D2"] {
        assert!(text.contains(&format!("\"{kind}\"")), "{kind}: {text}");
    }
    energy(&store).arg("status").assert().success().stdout(predicate::str::contains("openmeteo"));
}

#[test]
fn live_forecast_covers_today_ahead_and_is_fetched_every_time() {
    let runtime = runtime();
    let server = runtime.block_on(generator());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = config(dir.path(), &format!("{XYZ_POINTS}[openmeteo]\nforecast_days = 3\n"));
    let run = || {
        let out = energy(&store)
            .arg("--config")
            .arg(&config)
            .args(["collect", "--source", "openmeteo", "--region", "XYZ", "--kind", "TEMP_FCST"])
            .args(["--openmeteo-url", &server.uri(), "--json"])
            .assert()
            .success();
        serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()
    };
    let report = run();
    assert_eq!(report["rows"], 3 * 24, "{report}");
    let today = chrono::Utc::now().date_naive();
    let requests = runtime.block_on(server.received_requests()).unwrap();
    assert!(requests.iter().all(|r| r.url.path() == "/v1/forecast"));
    assert_eq!(param(&requests[0], "start_date"), Some(today.format("%Y-%m-%d").to_string()));
    let again = run();
    assert!(again["fetched_chunks"].as_u64().unwrap() >= 1, "a forecast is never settled: {again}");
    // the live forecast takes no range
    energy(&store)
        .arg("--config")
        .arg(&config)
        .args(["collect", "--source", "openmeteo", "--region", "XYZ", "--kind", "TEMP_FCST", "--days", "3"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("forecast_days"));
}

#[test]
fn unknown_region_is_refused_naming_the_config_key_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    energy(&store)
        .args([
            "collect",
            "--source",
            "openmeteo",
            "--region",
            "ATLANTIS",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
        ])
        .args(["--openmeteo-url", "http://127.0.0.1:9"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("[weather.points.ATLANTIS]"));
    assert!(!store.exists(), "the store was touched");
    // no region, a bad kind, and commands that need load
    energy(&store)
        .args(["collect", "--source", "openmeteo", "--days", "2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--region"));
    energy(&store)
        .args(["collect", "--source", "openmeteo", "--region", "ERCO", "--kind", "TEMP_D9", "--days", "2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("1 to 7"));
    for command in ["train", "features"] {
        energy(&store)
            .args([command, "--source", "openmeteo", "--region", "ERCO"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("weather, not load"));
    }
    assert!(!store.exists(), "the store was touched");
}

#[test]
fn bad_request_shows_the_reason_and_the_key_never_appears() {
    let Some(dir_real) = realdata::dir() else { return };
    let runtime = runtime();
    let body = std::fs::read(
        dir_real.join("openmeteo/snippets/error_400_start_date_out_of_range_forecast_probe_2026-09-12.transcript.json"),
    )
    .unwrap();
    let server = runtime.block_on(async {
        let server = MockServer::start().await;
        // March fails with a 400 (not retried); every call carries the key
        Mock::given(method("GET"))
            .and(query_param("apikey", KEY))
            .and(query_param("start_date", "2024-03-01"))
            .respond_with(ResponseTemplate::new(400).set_body_raw(body, JSON))
            .with_priority(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET")).and(query_param("apikey", KEY)).respond_with(FakeOpenmeteo).mount(&server).await;
        server
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = config(dir.path(), XYZ_POINTS);
    let output = energy(&store)
        .env("OPENMETEO_API_KEY", KEY)
        .arg("--config")
        .arg(&config)
        .args([
            "-vvv",
            "collect",
            "--source",
            "openmeteo",
            "--region",
            "XYZ",
            "--start",
            "2024-02-01",
            "--end",
            "2024-03-15",
        ])
        .args(["--openmeteo-url", &server.uri()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("HTTP 400") && stdout.contains("out of allowed range"), "{stdout}");
    // the February chunk was stored
    assert_eq!(Store::new(&store).read(&SeriesId::new("openmeteo", "XYZ", "TEMP"), None).unwrap().len(), 29 * 24 - 1);
    let status = energy(&store).env("OPENMETEO_API_KEY", KEY).args(["-vvv", "status", "--json"]).output().unwrap();
    for out in [&output, &status] {
        for bytes in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(KEY) && !text.contains(&KEY[..12]), "the key was printed: {text}");
        }
    }
    // the debug log shows each URL: without the key, which is added only when a call is sent
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("/v1/archive?latitude=10,20,30") && !log.contains("apikey="), "{log}");
    for path in walk(&store) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "{} holds the key", path.display());
    }
    // the key is a `Secret`: its Debug hides it
    assert_eq!(format!("{:?}", Secret::new(KEY)), "Secret(***)");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Calls and weighted calls to collect one region-year through a local server, with the free
/// API's limits (600 a minute, 5,000 an hour, 10,000 a day, weighted) and the built-in points,
/// for three sets of kinds (the paused clock skips the limits' waits; it also jumps idle
/// connections' timers, so it gives no duration):
/// `cargo test --test it openmeteo_call_figures -- --ignored --nocapture`.
#[tokio::test(start_paused = true)]
#[ignore = "prints figures"]
async fn openmeteo_call_figures() {
    let server = generator().await;
    let kind_sets: [&[&str]; 3] =
        [&["TEMP"], &["TEMP", "TEMP_D1", "TEMP_D2"], &["TEMP", "DEWPOINT", "GHI", "TEMP_D1", "TEMP_D2"]];
    let range = days("2024-01-01", "2024-12-31");
    for region in ["ERCO", "PJM", "CISO"] {
        for kinds in kind_sets {
            server.reset().await;
            Mock::given(method("GET")).respond_with(FakeOpenmeteo).mount(&server).await;
            let client =
                HttpClient::new(openmeteo::retry_policy(&retry(1)), RateLimits::weighted(600, 5_000, 10_000)).unwrap();
            let settings =
                Settings { url: Some(server.uri()), key: None, model: None, today: "2026-09-12".parse().unwrap() };
            let parsed: Vec<OpenmeteoKind> = kinds.iter().map(|k| OpenmeteoKind::parse(k).unwrap()).collect();
            let om = OpenmeteoSource::new(&[region.to_string()], &parsed, &BTreeMap::new(), settings, client).unwrap();
            let mut rows = 0;
            for chunk in plan(range, om.chunk_len()) {
                rows += om.fetch(chunk).await.unwrap().rows();
            }
            let requests = server.received_requests().await.unwrap();
            let weighted: f64 = requests
                .iter()
                .map(|r| {
                    let count = |name: &str| param(r, name).unwrap().split(',').count();
                    let date = |name: &str| param(r, name).unwrap().parse::<chrono::NaiveDate>().unwrap();
                    let span = (date("end_date") - date("start_date")).num_days() + 1;
                    openmeteo::call_weight(count("latitude"), count("hourly"), span)
                })
                .sum();
            let points = param(&requests[0], "latitude").unwrap().split(',').count();
            assert_eq!(rows as i64, range.hours() * kinds.len() as i64);
            eprintln!(
                "{region} ({points} points) {}: {} calls, {weighted:.1} weighted calls ({:.1} % of a free day)",
                kinds.join(","),
                requests.len(),
                weighted / 100.0
            );
        }
    }
}
