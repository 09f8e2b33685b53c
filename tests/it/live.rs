//! A model trained with Open-Meteo weather, forecasting live: `forecast --collect` and every
//! `serve` cycle fetch the live weather forecast (`TEMP_FCST`) the model needs themselves, from
//! a wiremock server answering in the shape of the real forecast body of
//! `shared/realdata/openmeteo` (skipped where absent); a failing weather endpoint leaves
//! serve's last forecast served, marked stale with the reason; SIGTERM while a cycle waits on
//! a slow weather server stops it at once, leaving the store consistent.
use super::cli::energy;
use super::realdata;
use super::reliability::{assert_consistent, temp_files};
use super::serve::{Server, archived, copy_dir, get, metric, parse_metrics, runtime};
use energy::ingest::{SeriesId, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The real forecast body whose shape the mock answers in (168 hours of `temperature_2m`).
const FORECAST_BODY: &str = "openmeteo/forecast_hourly_temperature_2m_gem_global_7days_America-Sao_Paulo.body.json";
/// The real body of Open-Meteo's 503.
const OVERLOADED_BODY: &str = "openmeteo/snippets/error_503_service_overloaded.transcript.json";

/// SYN1's weather at the real body's point; live forecasts of 3 days; no retry (the failing
/// endpoint's test would otherwise wait out the backoff).
const CONFIG: &str = "[[weather.points.SYN1]]\nname = \"Brasilia\"\nlat = -15.75\nlon = -48.0\nweight = 1.0\n\
     [openmeteo]\nforecast_days = 3\n[retry]\nmax_attempts = 1\n[collect]\nchunk_retries = 0\n";

fn param(request: &Request, name: &str) -> Option<String> {
    request.url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Answers every Open-Meteo call in the shape of the real forecast body: its fields and units,
/// times in GMT (`utc_offset_seconds` 0, as the source asks), every hour of `start_date` …
/// `end_date`, and each variable asked for with the body's real temperatures in turn (by hour
/// of the week, so that every call agrees on an hour).
struct RealShape {
    template: serde_json::Value,
    temperatures: Vec<f64>,
}

impl RealShape {
    fn read(realdata: &Path) -> Self {
        let text = std::fs::read_to_string(realdata.join(FORECAST_BODY)).unwrap();
        let template: serde_json::Value = serde_json::from_str(&text).unwrap();
        let temperatures: Vec<f64> =
            template["hourly"]["temperature_2m"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(temperatures.len(), 168);
        Self { template, temperatures }
    }
}

impl Respond for RealShape {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        assert_eq!(param(request, "timezone").as_deref(), Some("GMT"));
        assert_eq!(param(request, "latitude").as_deref(), Some("-15.75"), "one point");
        let date = |name: &str| param(request, name).unwrap().parse::<chrono::NaiveDate>().unwrap();
        let (first, last) = (date("start_date"), date("end_date"));
        let (mut times, mut values) = (Vec::new(), Vec::new());
        for day in first.iter_days().take_while(|day| *day <= last) {
            for hour in 0..24 {
                let time = day.and_hms_opt(hour, 0, 0).unwrap().and_utc();
                times.push(time.format("%Y-%m-%dT%H:%M").to_string());
                values.push(self.temperatures[(time.timestamp() / 3600) as usize % self.temperatures.len()]);
            }
        }
        let mut body = self.template.clone();
        body["utc_offset_seconds"] = 0.into();
        body["timezone"] = "GMT".into();
        body["timezone_abbreviation"] = "GMT".into();
        let mut hourly = serde_json::json!({ "time": times });
        let mut units = serde_json::json!({ "time": "iso8601" });
        for variable in param(request, "hourly").unwrap().split(',') {
            hourly[variable] = values.clone().into();
            units[variable] = "°C".into();
        }
        body["hourly"] = hourly;
        body["hourly_units"] = units;
        ResponseTemplate::new(200).set_body_raw(serde_json::to_vec(&body).unwrap(), "application/json; charset=utf-8")
    }
}

async fn weather_server(realdata: &Path) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("GET")).respond_with(RealShape::read(realdata)).mount(&server).await;
    server
}

/// The live forecasts asked for: `/v1/forecast` calls of `temperature_2m` from today on.
fn live_forecast_calls(server: &MockServer) -> usize {
    let today = chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string();
    runtime()
        .block_on(server.received_requests())
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v1/forecast" && param(r, "hourly").as_deref() == Some("temperature_2m"))
        .filter(|r| param(r, "start_date").as_deref() == Some(today.as_str()))
        .count()
}

/// A store of 30 days of synthetic SYN1 load and Open-Meteo SYN1 weather (observed and as
/// issued a day ahead, from the mock), and a tiny model trained on them with
/// `--weather openmeteo`: made once, copied by each test.
struct WeatherModel {
    _dir: tempfile::TempDir,
    realdata: PathBuf,
    store: PathBuf,
    model: PathBuf,
    config: PathBuf,
}

impl WeatherModel {
    /// A copy of the trained store, in a folder that lives as long as the first value.
    fn fresh_store(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        copy_dir(&self.store, &store);
        (dir, store)
    }
}

static WEATHER: LazyLock<Option<WeatherModel>> = LazyLock::new(|| {
    let realdata = realdata::dir()?;
    let dir = tempfile::tempdir().unwrap();
    let (store, model, config) = (dir.path().join("store"), dir.path().join("model"), dir.path().join("energy.toml"));
    std::fs::write(&config, CONFIG).unwrap();
    let server = runtime().block_on(weather_server(&realdata));
    energy(&store).args(["collect", "--days", "30", "-q"]).assert().success();
    energy(&store)
        .arg("--config")
        .arg(&config)
        .args(["collect", "--source", "openmeteo", "--region", "SYN1", "--kind", "TEMP,TEMP_D1", "--days", "30"])
        .args(["--openmeteo-url", &server.uri(), "-q"])
        .assert()
        .success();
    let train = ["train", "--days", "30", "--epochs", "1", "--context", "48", "--weather", "openmeteo", "-q", "--json"];
    let out = energy(&store).arg("--config").arg(&config).args(train).arg("--model-dir").arg(&model).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let trained: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trained["exogenous"], serde_json::json!(["openmeteo:SYN1:TEMP", "openmeteo:SYN1:TEMP_D1"]));
    Some(WeatherModel { _dir: dir, realdata, store, model, config })
});

#[test]
fn forecast_collect_fetches_the_live_weather_forecast_the_model_needs() {
    let Some(weather) = &*WEATHER else { return };
    let (_dir, store) = weather.fresh_store();
    let server = runtime().block_on(weather_server(&weather.realdata));
    let forecast = |extra: &[&str]| {
        let mut command = energy(&store);
        command.arg("--config").arg(&weather.config).args(["forecast", "--model-dir"]).arg(&weather.model);
        command.args(extra).output().unwrap()
    };
    // without --collect the store holds no live forecast: refused, naming what to run
    let refused = forecast(&[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("energy collect --source openmeteo --region SYN1 --kind TEMP_FCST"), "{stderr}");
    assert!(stderr.contains("forecast with --collect"), "{stderr}");
    assert_eq!(live_forecast_calls(&server), 0);

    let out = forecast(&["--collect", "--json", "--openmeteo-url", &server.uri()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 24, "{report}");
    assert_eq!(live_forecast_calls(&server), 1, "one call for the live forecast");
    // the live forecast is in the store and covers every hour forecast
    let live = Store::new(&store).read(&SeriesId::new("openmeteo", "SYN1", "TEMP_FCST"), None).unwrap();
    assert_eq!(live.len(), 3 * 24);
    for row in rows {
        let hour = chrono::DateTime::parse_from_str(
            &format!("{}:00 +0000", row["timestamp_utc"].as_str().unwrap().trim_end_matches('Z')),
            "%Y-%m-%dT%H:%M:%S %z",
        )
        .unwrap()
        .timestamp_micros();
        let at = live.timestamps.iter().position(|t| *t == hour).unwrap_or_else(|| panic!("{row} not covered"));
        assert!(live.values[at].is_some());
    }
    // the same forecast now runs from the store without --collect
    assert!(forecast(&[]).status.success());
}

#[test]
fn a_serve_cycle_fetches_the_live_weather_and_a_failing_weather_endpoint_leaves_the_forecast_stale() {
    let Some(weather) = &*WEATHER else { return };
    let (_dir, store) = weather.fresh_store();
    let (config, model) = (weather.config.to_str().unwrap(), weather.model.to_str().unwrap());
    let serve = |url: &str| Server::start(&store, &["--config", config, "--model-dir", model, "--openmeteo-url", url]);

    let healthy = runtime().block_on(weather_server(&weather.realdata));
    let server = serve(&healthy.uri());
    let first = get(&server, "/api/v1/forecast?region=SYN1").json();
    assert_eq!(first["stale"], false, "{first}");
    assert_eq!(first["hours"].as_array().unwrap().len(), 24);
    let status = get(&server, "/api/v1/status").json();
    assert_eq!(status["regions"][0]["last_collection"]["ok"], true, "{status}");
    assert_eq!(live_forecast_calls(&healthy), 1, "the cycle fetched the live forecast");
    assert!(server.stop().0.success());
    assert_eq!(archived(&store, "SYN1").len(), 1);

    let overloaded = std::fs::read(weather.realdata.join(OVERLOADED_BODY)).unwrap();
    let failing = runtime().block_on(async {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(503).set_body_raw(overloaded, "application/json"))
            .mount(&server)
            .await;
        server
    });
    let server = serve(&failing.uri());
    let forecast = get(&server, "/api/v1/forecast?region=SYN1").json();
    assert_eq!(forecast["stale"], true, "{forecast}");
    assert_eq!(forecast["issued_at"], first["issued_at"], "the last forecast is served");
    assert_eq!(forecast["hours"], first["hours"]);
    let reason = forecast["stale_reason"].as_str().unwrap();
    assert!(reason.starts_with("collection failed"), "{reason}");
    assert!(reason.contains("503") || reason.contains("overloaded"), "the reason names the failure: {reason}");
    let samples = parse_metrics(&get(&server, "/metrics").body);
    assert_eq!(metric(&samples, "energy_forecast_stale{region=\"SYN1\"}"), Some(1.0));
    assert_eq!(metric(&samples, "energy_collection_failures_total{region=\"SYN1\"}"), Some(1.0));
    assert!(server.stop().0.success());
    assert_eq!(archived(&store, "SYN1").len(), 1, "a failed run archives nothing");
    assert!(!runtime().block_on(failing.received_requests()).unwrap().is_empty(), "the weather was asked for");
}

/// SIGTERM while a serve cycle waits on a weather server that answers only after 5 minutes
/// (requests time out after 10): `serve` stops fetching, finishes its writes and exits 0 at
/// once, saying so; the store holds the load the cycle wrote, its ledger matching its files,
/// every Parquet file readable, no temporary file left.
#[test]
fn sigterm_during_a_cycle_stops_its_collection_and_leaves_the_store_consistent() {
    let Some(weather) = &*WEATHER else { return };
    let (dir, store) = weather.fresh_store();
    let config = dir.path().join("slow.toml");
    std::fs::write(&config, CONFIG.replace("max_attempts = 1\n", "max_attempts = 1\ntimeout_s = 600\n")).unwrap();
    let runtime = runtime();
    let slow = runtime.block_on(async {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(300)))
            .mount(&server)
            .await;
        server
    });
    let began = chrono::Utc::now();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("energy"))
        .env_remove("ENERGY_STORE")
        .env_remove("RUST_LOG")
        .arg("--store")
        .arg(&store)
        .arg("--config")
        .arg(&config)
        // 40 days where the store holds 30: the cycle writes the load's 10 days before the weather
        .args(["serve", "--listen", "127.0.0.1:0", "--days", "40", "--openmeteo-url", &slow.uri(), "--model-dir"])
        .arg(&weather.model)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the cycle has collected the load and now waits on the weather
    let asked = wait_until(&mut child, || !runtime.block_on(slow.received_requests()).unwrap().is_empty());
    assert!(asked, "serve exited before asking for the weather");
    // SAFETY: kill only sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    // until it exits (a minute at most: the slow answer would take five)
    wait_until(&mut child, || false);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("received SIGTERM: shutting down"), "{stderr}");
    assert!(stderr.contains("stopped: every write is complete"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("serving on"),
        "never ready: the first cycle was stopped"
    );

    assert!(temp_files(&store).is_empty(), "temporary files left: {:?}", temp_files(&store));
    assert_consistent(&store);
    let ledger = Store::new(&store).ledger().unwrap();
    assert!(
        ledger.iter().any(|e| e.series.source == "synthetic" && e.fetched_at >= began - chrono::TimeDelta::seconds(1)),
        "the cycle's load is in the store and the ledger"
    );
    assert!(!ledger.iter().any(|e| e.series.source == "openmeteo" && e.fetched_at >= began), "no weather was written");
    assert!(archived(&store, "SYN1").is_empty(), "a stopped cycle issues no forecast");
}

/// Poll (bounded: a minute, far below the slow server's five) until `reached` holds (true) or
/// the child exits (false).
fn wait_until(child: &mut Child, mut reached: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if reached() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve neither progressed nor exited within a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
