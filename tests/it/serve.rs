//! `energy serve` as the real binary on an ephemeral port: the API, bad parameters, metrics,
//! the page, the archive growing by one forecast per run, live accuracy against a hand
//! computation, a failing source leaving the last forecast served and marked stale, SIGTERM.
use super::cli::energy;
use energy::ingest::{SeriesId, Store};
use energy::serve::archive::{self, ForecastHour, IssuedForecast};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;

const KEY: &str = "serveKEYdistinct0123456789abcdefZYXWVUTSR";

/// A synthetic store and a tiny model trained on it, made once and copied by each test.
struct Trained {
    _dir: tempfile::TempDir,
    store: PathBuf,
    model: PathBuf,
}

static SYNTHETIC: LazyLock<Trained> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let (store, model) = (dir.path().join("store"), dir.path().join("model"));
    let args = ["train", "--collect", "--days", "30", "--epochs", "1", "--context", "48", "-q", "--json"];
    energy(&store).args(args).arg("--model-dir").arg(&model).assert().success();
    Trained { _dir: dir, store, model }
});

pub(super) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fresh copy of the trained synthetic store in `dir`.
fn synthetic_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    copy_dir(&SYNTHETIC.store, &store);
    store
}

/// A running `energy serve`; killed (SIGKILL) if the test ends without stopping it.
pub(super) struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Start `energy serve` on an ephemeral port and wait for its ready line (printed once the
    /// first cycle is done).
    pub(super) fn start(store: &Path, args: &[&str]) -> Self {
        Self::listening(store, "127.0.0.1:0", args)
    }

    fn listening(store: &Path, listen: &str, args: &[&str]) -> Self {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("energy"))
            .env_remove("ENERGY_STORE")
            .env_remove("RUST_LOG")
            .env_remove("EIA_API_KEY")
            .arg("--store")
            .arg(store)
            .args(["serve", "--listen", listen, "-q"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(base) = line.trim().strip_prefix("serving on ") else {
            let output = child.wait_with_output().unwrap();
            panic!("no ready line ({line:?}): {}", String::from_utf8_lossy(&output.stderr));
        };
        Self { base: base.to_string(), child }
    }

    /// SIGTERM, then the exit status and stderr.
    pub(super) fn stop(self) -> (std::process::ExitStatus, String) {
        self.signal(libc::SIGTERM)
    }

    /// Send `signal`, then the exit status and stderr.
    fn signal(mut self, signal: libc::c_int) -> (std::process::ExitStatus, String) {
        // SAFETY: kill only sends a signal to the child this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer: status, content type, body.
pub(super) struct Answer {
    pub(super) status: u16,
    content_type: String,
    pub(super) body: String,
}

impl Answer {
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn request(method: reqwest::Method, url: &str) -> Answer {
    runtime().block_on(async {
        let response = reqwest::Client::new().request(method, url).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Answer { status, content_type, body: response.text().await.unwrap() }
    })
}

pub(super) fn get(server: &Server, path: &str) -> Answer {
    request(reqwest::Method::GET, &format!("{}{path}", server.base))
}

/// A 400 whose JSON error names `parameter`.
fn assert_bad(server: &Server, path: &str, parameter: &str) {
    let answer = get(server, path);
    assert_eq!(answer.status, 400, "{path}: {}", answer.body);
    assert!(answer.content_type.starts_with("application/json"), "{path}");
    let error = &answer.json()["error"];
    assert_eq!(error["status"], 400);
    assert_eq!(error["parameter"], parameter, "{path}: {error}");
    assert!(error["message"].as_str().unwrap().contains(parameter), "{path}: {error}");
}

/// Every sample line of a Prometheus text exposition, checked: `name{labels} value`, each name
/// declared by a `# TYPE` line before it, values numbers, `# EOF` last.
pub(super) fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut declared: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            declared.push(parts.next().unwrap().to_string());
            assert!(matches!(parts.next(), Some("counter" | "gauge")), "{line}");
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line}");
        }
        assert!(
            declared.iter().any(|d| name == d || name.strip_suffix("_total") == Some(d)),
            "{name} has no TYPE line"
        );
        samples.push((series.to_string(), value));
    }
    samples
}

pub(super) fn metric(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

pub(super) fn archived(store: &Path, region: &str) -> Vec<IssuedForecast> {
    archive::read(&Store::new(store), region, None, None).unwrap()
}

#[test]
fn serves_forecast_status_series_archive_metrics_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = synthetic_store(dir.path());
    let model = SYNTHETIC.model.to_str().unwrap();
    let server = Server::start(&store, &["--model-dir", model, "--every", "1h"]);

    let forecast = get(&server, "/api/v1/forecast?region=SYN1");
    assert_eq!(forecast.status, 200, "{}", forecast.body);
    let forecast = forecast.json();
    assert_eq!(forecast["region"], "SYN1");
    assert_eq!(forecast["stale"], false);
    assert!(forecast["model_id"].as_str().unwrap().starts_with("SYN1@"), "{forecast}");
    let hours = forecast["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    for (i, hour) in hours.iter().enumerate() {
        assert_eq!(hour["lead_h"], i as i64 + 1);
        let (p10, p50, p90) =
            (hour["p10"].as_f64().unwrap(), hour["p50"].as_f64().unwrap(), hour["p90"].as_f64().unwrap());
        assert!(p10 <= p50 && p50 <= p90 && p50 > 1000.0, "{hour}");
    }
    // the region defaults to the one served
    assert_eq!(get(&server, "/api/v1/forecast").json()["issued_at"], forecast["issued_at"]);

    let status = get(&server, "/api/v1/status").json();
    assert_eq!(status["runs"], 1);
    assert_eq!(status["every_s"], 3600);
    assert!(status["next_run"].is_string());
    let region = &status["regions"][0];
    assert_eq!(region["stale"], false);
    assert_eq!(region["last_collection"]["ok"], true);
    assert!(region["model"]["backtest"].as_array().unwrap().len() >= 3, "{region}");
    assert_eq!(region["coverage"][0]["series"]["kind"], "D");
    assert_eq!(region["latest_forecast"]["issued_at"], forecast["issued_at"]);

    let series = get(&server, "/api/v1/series?source=synthetic&region=SYN1&kind=D").json();
    let rows = series["rows"].as_array().unwrap();
    assert!((7 * 24 - 2..=7 * 24 + 1).contains(&rows.len()), "{}", rows.len());
    let dated = get(&server, "/api/v1/series?source=synthetic&region=SYN1&kind=TEMP&start=2020-01-01&end=2020-01-02");
    assert_eq!(dated.json()["rows"].as_array().unwrap().len(), 0);
    assert_eq!(get(&server, "/api/v1/series?source=synthetic&region=SYN1&kind=DF").status, 404);

    let archive = get(&server, "/api/v1/archive?region=SYN1&limit=5").json();
    assert_eq!(archive["total"], 1);
    assert_eq!(archive["forecasts"][0]["hours"], forecast["hours"]);

    // bad parameters: 400, JSON, naming the parameter
    for (path, parameter) in [
        ("/api/v1/forecast?region=..%2Fetc", "region"),
        ("/api/v1/forecast?region=NOPE", "region"),
        ("/api/v1/forecast?region=SYN1&region=SYN1", "region"),
        ("/api/v1/forecast?path=x", "path"),
        ("/api/v1/archive?limit=0", "limit"),
        ("/api/v1/archive?limit=many", "limit"),
        ("/api/v1/archive?start=2024-13-01&end=2024-12-31", "start"),
        ("/api/v1/archive?start=2024-01-01", "end"),
        ("/api/v1/series?source=synthetic&region=SYN1", "kind"),
        ("/api/v1/series?source=synthetic&region=SYN1&kind=D&start=2024-01-01&end=2024-12-31", "end"),
        ("/api/v1/series?source=..&region=SYN1&kind=D", "source"),
        ("/api/v1/accuracy?days=0", "days"),
        ("/?region=%3Cscript%3E", "region"),
    ] {
        assert_bad(&server, path, parameter);
    }
    // read-only, bounded, JSON errors everywhere
    let post = request(reqwest::Method::POST, &format!("{}/api/v1/forecast", server.base));
    assert_eq!(post.status, 405);
    assert_eq!(post.json()["error"]["status"], 405);
    assert_eq!(get(&server, "/api/v1/nothing").json()["error"]["status"], 404);
    let long = format!("/api/v1/forecast?region={}", "A".repeat(2000));
    assert_eq!(get(&server, &long).status, 414);

    let metrics = get(&server, "/metrics");
    assert!(metrics.content_type.starts_with("application/openmetrics-text"), "{}", metrics.content_type);
    let samples = parse_metrics(&metrics.body);
    assert_eq!(metric(&samples, "energy_collections_total{region=\"SYN1\"}"), Some(1.0));
    assert_eq!(metric(&samples, "energy_collection_failures_total{region=\"SYN1\"}"), Some(0.0));
    assert_eq!(metric(&samples, "energy_forecasts_issued_total{region=\"SYN1\"}"), Some(1.0));
    assert_eq!(metric(&samples, "energy_forecast_stale{region=\"SYN1\"}"), Some(0.0));
    assert!(metric(&samples, "energy_forecast_age_seconds{region=\"SYN1\"}").unwrap() >= 0.0);
    assert!(metric(&samples, "energy_collected_rows_total{region=\"SYN1\"}").is_some());
    assert!(metric(&samples, "energy_last_success_timestamp_seconds{region=\"SYN1\"}").unwrap() > 1.7e9);
    assert_eq!(metric(&samples, "energy_scheduled_runs_total"), Some(1.0));

    let page = get(&server, "/");
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    for needle in ["<svg", "Load forecast: SYN1", "Forecast fresh", "Live accuracy", "p50 MW", "/api/v1/status"] {
        assert!(page.body.contains(needle), "the page lacks {needle}");
    }
    assert!(!page.body.contains("<script"), "no JavaScript");

    let (exit, stderr) = server.stop();
    assert!(exit.success(), "{exit:?}: {stderr}");
    assert_eq!(archived(&store, "SYN1").len(), 1);
}

#[test]
fn the_archive_grows_by_one_forecast_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = synthetic_store(dir.path());
    let model = SYNTHETIC.model.to_str().unwrap();
    let mut issued = Vec::new();
    for run in 1..=2 {
        let server = Server::start(&store, &["--model-dir", model]);
        let forecast = get(&server, "/api/v1/forecast").json();
        assert_eq!(server.stop().0.code(), Some(0));
        let archive = archived(&store, "SYN1");
        assert_eq!(archive.len(), run);
        let newest = archive.last().unwrap();
        assert_eq!(serde_json::to_value(newest.issued_at).unwrap(), forecast["issued_at"]);
        assert_eq!(newest.hours.len(), 24);
        issued.push(newest.issued_at);
    }
    assert!(issued[0] < issued[1]);
    // the archive is no series: status lists the synthetic series only
    let out = energy(&store).args(["status", "--json"]).assert().success();
    let status: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert!(status["series"].as_array().unwrap().iter().all(|s| s["series"]["source"] == "synthetic"));
}

#[test]
fn live_accuracy_matches_a_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = synthetic_store(dir.path());
    let store = Store::new(&store_dir);
    let load = store.read(&SeriesId::new("synthetic", "SYN1", "D"), None).unwrap();
    let hour = 3_600_000_000;
    let at = |t: i64| load.timestamps.iter().position(|x| *x == t).map(|i| load.values[i].unwrap());
    // a forecast issued three days before the last stored hour, its p50 10 % above what happened
    let origin = *load.timestamps.last().unwrap() - 72 * hour;
    let forecast = IssuedForecast {
        region: "SYN1".into(),
        issued_at: chrono::Utc::now() - chrono::TimeDelta::days(1),
        data_up_to: energy::time::from_us(origin),
        model_id: "hand".into(),
        hours: (1..=24)
            .map(|lead| {
                let y = at(origin + lead * hour).unwrap();
                ForecastHour {
                    timestamp: energy::time::from_us(origin + lead * hour),
                    lead_h: lead,
                    p10: 0.9 * y,
                    p50: 1.1 * y,
                    p90: 1.2 * y,
                }
            })
            .collect(),
    };
    {
        let _lock = store.lock().unwrap();
        archive::append(&store, &forecast).unwrap();
    }
    // the seasonal naive by hand: a lead within a day takes the hour a day back, known at issue
    let naive = |lead: i64| {
        let t = origin + lead * hour;
        let back = if lead <= 24 { 24 } else { 48 };
        let (y, n) = (at(t).unwrap(), at(t - back * hour).unwrap());
        100.0 * (n - y).abs() / y
    };
    let server = Server::start(&store_dir, &["--model-dir", SYNTHETIC.model.to_str().unwrap()]);
    let accuracy = get(&server, "/api/v1/accuracy?region=SYN1&days=7").json();
    let leads = accuracy["leads"].as_array().unwrap();
    // lead 0 (all) and 1..24: the new forecast's hours have not happened yet
    assert_eq!(leads.len(), 25, "{accuracy}");
    assert_eq!(leads[0]["hours"], 24);
    assert!((leads[0]["model_mape_percent"].as_f64().unwrap() - 10.0).abs() < 1e-9);
    for lead in 1..=24 {
        let entry = &leads[lead as usize];
        assert_eq!(entry["lead_h"], lead);
        assert_eq!(entry["hours"], 1);
        assert!((entry["model_mape_percent"].as_f64().unwrap() - 10.0).abs() < 1e-9, "{entry}");
        assert!((entry["naive_mape_percent"].as_f64().unwrap() - naive(lead)).abs() < 1e-9, "{entry}");
        assert!(entry["operator_mape_percent"].is_null(), "the synthetic source has no operator forecast");
    }
    let expected_all: f64 = (1..=24).map(naive).sum::<f64>() / 24.0;
    assert!((leads[0]["naive_mape_percent"].as_f64().unwrap() - expected_all).abs() < 1e-9);
    // status, metrics and the page carry the same figure
    let status = get(&server, "/api/v1/status").json();
    assert_eq!(status["regions"][0]["accuracy"][0]["hours"], 24);
    let samples = parse_metrics(&get(&server, "/metrics").body);
    let live = metric(&samples, "energy_live_mape_percent{region=\"SYN1\",forecaster=\"model\"}").unwrap();
    assert!((live - 10.0).abs() < 1e-6, "{live}");
    assert!(get(&server, "/").body.contains("<td>all</td><td>24</td><td>10.00</td>"));
    assert_eq!(server.stop().0.code(), Some(0));
}

/// A collection against an EIA server that refuses every request: the forecast of the run
/// before is served, marked stale with the reason, in status and metrics; the key appears in
/// no answer (the server echoes it in its error page).
#[test]
fn a_failing_source_leaves_the_last_forecast_served_and_marked_stale() {
    let healthy =
        energy::ingest::eia::fake::LocalEiaServer::start(energy::ingest::eia::fake::ServerConfig::unthrottled())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, model) = (dir.path().join("store"), dir.path().join("model"));
    let train = [
        "train",
        "--collect",
        "--source",
        "eia",
        "--region",
        "CISO",
        "--kind",
        "D,DF",
        "--days",
        "30",
        "--epochs",
        "1",
        "--context",
        "48",
        "-q",
        "--json",
    ];
    energy(&store)
        .env("EIA_API_KEY", KEY)
        .args(train)
        .args(["--eia-url", &healthy.url(), "--model-dir"])
        .arg(&model)
        .assert()
        .success();
    let model = model.to_str().unwrap();
    let serve = |url: &str| Server::start(&store, &["--model-dir", model, "--eia-url", url, "--eia-api-key", KEY]);

    let server = serve(&healthy.url());
    let first = get(&server, "/api/v1/forecast?region=CISO").json();
    assert_eq!(first["stale"], false, "{first}");
    let status = get(&server, "/api/v1/status").json();
    assert_eq!(status["regions"][0]["model"]["operator"]["kind"], "DF");
    assert!(server.stop().0.success());

    let runtime = runtime();
    let failing = runtime.block_on(async {
        let server = wiremock::MockServer::start().await;
        let echo = format!("{{\"error\": \"bad request for api_key={KEY}\"}}");
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(wiremock::ResponseTemplate::new(400).set_body_raw(echo, "application/json"))
            .mount(&server)
            .await;
        server
    });
    let server = serve(&failing.uri());
    let forecast = get(&server, "/api/v1/forecast?region=CISO");
    assert_eq!(forecast.status, 200);
    let forecast = forecast.json();
    assert_eq!(forecast["stale"], true, "{forecast}");
    assert_eq!(forecast["issued_at"], first["issued_at"], "the last forecast is served");
    assert_eq!(forecast["hours"], first["hours"]);
    let reason = forecast["stale_reason"].as_str().unwrap();
    assert!(reason.starts_with("collection failed"), "{reason}");
    let status = get(&server, "/api/v1/status").json();
    let region = &status["regions"][0];
    assert_eq!(region["stale"], true);
    assert_eq!(region["last_collection"]["ok"], false);
    assert_eq!(region["stale_reason"].as_str(), Some(reason));
    let metrics = get(&server, "/metrics").body;
    let samples = parse_metrics(&metrics);
    assert_eq!(metric(&samples, "energy_forecast_stale{region=\"CISO\"}"), Some(1.0));
    assert_eq!(metric(&samples, "energy_collection_failures_total{region=\"CISO\"}"), Some(1.0));
    assert_eq!(metric(&samples, "energy_forecasts_issued_total{region=\"CISO\"}"), Some(0.0));
    let page = get(&server, "/").body;
    assert!(page.contains("Forecast STALE"), "{page}");
    for (what, text) in [
        ("forecast", forecast.to_string()),
        ("status", status.to_string()),
        ("metrics", metrics),
        ("page", page),
        ("archive", get(&server, "/api/v1/archive").body),
    ] {
        assert!(!text.contains(KEY), "the key leaked into the {what}");
    }
    let (exit, stderr) = server.stop();
    assert!(exit.success());
    assert!(!stderr.contains(KEY), "the key leaked into the log");
    assert_eq!(archived(&store, "CISO").len(), 1, "a failed run archives nothing");
}

/// One model of SYN1 and SYN2 serves each region from the one folder at that region's own level
/// (its own scaler), and SYN3, which it was not trained on, zero-shot (as `forecast` does; its
/// load collected first); each region gets its forecast, archive, status entry and page.
/// Without `--region` it serves the regions it was trained on; a region it was not trained on
/// whose load the store lacks is refused with exit code 1, naming the collection to run.
#[test]
fn one_multi_region_model_serves_each_of_its_regions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, model) = (dir.path().join("store"), dir.path().join("model"));
    let regions = ["--region", "SYN1", "--region", "SYN2"];
    energy(&store).args(["collect", "--days", "30", "--region", "SYN3"]).args(regions).assert().success();
    let train = ["train", "--days", "30", "--epochs", "1", "--context", "48", "-q", "--json", "--model-dir"];
    energy(&store).args(train).arg(&model).args(regions).assert().success();
    let model = model.to_str().unwrap();

    let stored_level = |region: &str| {
        let rows = Store::new(&store).read(&SeriesId::new("synthetic", region, "D"), None).unwrap();
        let values: Vec<f64> = rows.values.iter().rev().take(7 * 24).flatten().copied().collect();
        values.iter().sum::<f64>() / values.len() as f64
    };
    let server =
        Server::start(&store, &["--region", "SYN1", "--region", "SYN2", "--region", "SYN3", "--model-dir", model]);
    let mut levels = Vec::new();
    for region in ["SYN1", "SYN2", "SYN3"] {
        let forecast = get(&server, &format!("/api/v1/forecast?region={region}"));
        assert_eq!(forecast.status, 200, "{region}: {}", forecast.body);
        let forecast = forecast.json();
        assert_eq!((&forecast["region"], &forecast["stale"]), (&serde_json::json!(region), &serde_json::json!(false)));
        assert!(forecast["model_id"].as_str().unwrap().starts_with(&format!("{region}@")), "{forecast}");
        let hours = forecast["hours"].as_array().unwrap();
        assert_eq!(hours.len(), 24);
        let p50 = hours.iter().map(|h| h["p50"].as_f64().unwrap()).sum::<f64>() / 24.0;
        let level = stored_level(region);
        assert!((p50 / level - 1.0).abs() < 0.3, "{region}: forecast {p50:.0} MW, stored level {level:.0} MW");
        levels.push(p50);
        let archive = get(&server, &format!("/api/v1/archive?region={region}")).json();
        assert_eq!(archive["forecasts"][0]["hours"], forecast["hours"], "{region}");
        let page = get(&server, &format!("/?region={region}"));
        assert_eq!(page.status, 200);
        assert!(page.body.contains(region), "{region}");
    }
    assert!(levels[1] > 1.5 * levels[0], "SYN2 forecast at its own level: {levels:?}");
    let status = get(&server, "/api/v1/status").json();
    let served = status["regions"].as_array().unwrap();
    assert_eq!(served.len(), 3);
    for (entry, region) in served.iter().zip(["SYN1", "SYN2", "SYN3"]) {
        assert_eq!(entry["region"], region);
        assert_eq!(entry["model"]["dir"], model);
        assert_eq!(entry["model"]["load"]["region"], region);
        assert_eq!(entry["model"].get("zero_shot").is_some(), region == "SYN3", "{entry}");
        assert_eq!(entry["model"]["backtest"].as_array().unwrap().is_empty(), region == "SYN3", "{entry}");
    }
    assert_eq!(server.stop().0.code(), Some(0));
    for region in ["SYN1", "SYN2", "SYN3"] {
        assert_eq!(archived(&store, region).len(), 1, "{region}");
    }

    let server = Server::start(&store, &["--model-dir", model]);
    let status = get(&server, "/api/v1/status").json();
    let served: Vec<&str> =
        status["regions"].as_array().unwrap().iter().map(|r| r["region"].as_str().unwrap()).collect();
    assert_eq!(served, ["SYN1", "SYN2"]);
    assert_eq!(server.stop().0.code(), Some(0));

    let refused =
        energy(&store).args(["serve", "--region", "SYN1", "--region", "SYN4", "--model-dir", model]).assert().code(1);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr);
    assert!(
        stderr.contains("synthetic:SYN4:D") && stderr.contains("energy collect --source synthetic --region SYN4"),
        "{stderr}"
    );
}

#[test]
fn binding_beyond_loopback_needs_a_flag_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let model = SYNTHETIC.model.to_str().unwrap();
    for (flags, message) in [
        (["--listen", "0.0.0.0:0"], "--allow-remote"),
        (["--every", "1s"], "10s"),
        (["--region", "SYN2"], "trained on region SYN1"),
        (["--region", "../x"], "invalid region"),
    ] {
        energy(dir.path())
            .args(["serve", "--model-dir", model])
            .args(flags)
            .assert()
            .code(1)
            .stderr(predicates::str::contains(message));
    }
    let store = synthetic_store(dir.path());
    let server = Server::listening(&store, "0.0.0.0:0", &["--model-dir", model, "--allow-remote"]);
    assert!(server.base.starts_with("http://0.0.0.0:"), "{}", server.base);
    let (exit, stderr) = server.signal(libc::SIGINT);
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("warning: serving on 0.0.0.0"), "{stderr}");
}

/// The figures of the README, on the EIA fake (CISO, D and the operator's DF): one scheduled
/// cycle (collect and forecast, one region), and requests/s and p99 latency of
/// `/api/v1/forecast` under a bounded local load (a tokio client loop: 8 connections kept
/// alive, 4,000 requests). Three real forecasts of the model are backfilled into the archive
/// first (`forecast` on a store holding the data up to 3, 2 and 1 days ago), so that the page
/// has live accuracy to show; with Chromium on the PATH the page's screenshot is written to
/// `$SERVE_SCREENSHOT` (default: the temp folder's `energy-serve-dashboard.png`).
#[test]
#[ignore = "a figure: cargo test --test it serve_figures -- --ignored --nocapture"]
fn serve_figures() {
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 4000;
    let eia = energy::ingest::eia::fake::LocalEiaServer::start(energy::ingest::eia::fake::ServerConfig::unthrottled())
        .unwrap();
    let url = eia.url();
    let dir = tempfile::tempdir().unwrap();
    let (store, model) = (dir.path().join("store"), dir.path().join("model"));
    let source = ["--source", "eia", "--region", "CISO", "--kind", "D,DF", "--eia-url", &url];
    energy(&store)
        .env("EIA_API_KEY", KEY)
        .args(["train", "--collect", "--days", "60", "--epochs", "3", "-q", "--json"])
        .args(source)
        .arg("--model-dir")
        .arg(&model)
        .assert()
        .success();
    let today = chrono::Utc::now().date_naive();
    let minute = |text: &str| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%MZ").unwrap().and_utc();
    for back in [3, 2, 1] {
        let scratch = dir.path().join(format!("scratch{back}"));
        let (start, end) = (today - chrono::TimeDelta::days(back + 20), today - chrono::TimeDelta::days(back));
        energy(&scratch)
            .env("EIA_API_KEY", KEY)
            .args(["collect", "-q", "--start", &start.to_string(), "--end", &end.to_string()])
            .args(source)
            .assert()
            .success();
        let out = energy(&scratch).args(["forecast", "--json", "--model-dir"]).arg(&model).assert().success();
        let forecast: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        let up_to = minute(forecast["issued_with_data_up_to"].as_str().unwrap());
        let issued = IssuedForecast {
            region: "CISO".into(),
            issued_at: up_to + chrono::TimeDelta::minutes(5),
            data_up_to: up_to,
            model_id: "CISO@backfill".into(),
            hours: forecast["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    let t = minute(row["timestamp_utc"].as_str().unwrap());
                    ForecastHour {
                        timestamp: t,
                        lead_h: (t - up_to).num_hours(),
                        p10: row["p10"].as_f64().unwrap(),
                        p50: row["p50"].as_f64().unwrap(),
                        p90: row["p90"].as_f64().unwrap(),
                    }
                })
                .collect(),
        };
        let store = Store::new(&store);
        let _lock = store.lock().unwrap();
        archive::append(&store, &issued).unwrap();
    }
    let model = model.to_str().unwrap();
    let server = Server::start(&store, &["--model-dir", model, "--eia-url", &url, "--eia-api-key", KEY]);
    let status = get(&server, "/api/v1/status").json();
    let region = &status["regions"][0];
    eprintln!(
        "one cycle (CISO, EIA fake on 127.0.0.1 without latency): {:.2} s, of which collection {:.2} s ({} rows); live MAPE so far: {}",
        region["last_cycle_s"].as_f64().unwrap(),
        region["last_collection"]["duration_s"].as_f64().unwrap(),
        region["last_collection"]["rows"],
        region["accuracy"][0]
    );
    let target = format!("{}/api/v1/forecast?region=CISO", server.base);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut latencies, seconds) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (client, target) = (client.clone(), target.clone());
                tokio::spawn(async move {
                    let mut out = Vec::with_capacity(REQUESTS / CLIENTS);
                    for _ in 0..REQUESTS / CLIENTS {
                        let sent = std::time::Instant::now();
                        let response = client.get(&target).send().await.unwrap();
                        assert_eq!(response.status(), 200);
                        response.bytes().await.unwrap();
                        out.push(sent.elapsed().as_secs_f64());
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        (all, started.elapsed().as_secs_f64())
    });
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| 1000.0 * latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "/api/v1/forecast: {} requests from {CLIENTS} clients in {seconds:.2} s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        latencies.len() as f64 / seconds,
        at(0.50),
        at(0.99)
    );
    let shot = std::env::var_os("SERVE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("energy-serve-dashboard.png"));
    match Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--hide-scrollbars", "--window-size=1400,1000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{}/?region=CISO", server.base))
        .output()
    {
        Ok(output) if output.status.success() => eprintln!("the page's screenshot: {}", shot.display()),
        Ok(output) => eprintln!("chromium failed: {}", String::from_utf8_lossy(&output.stderr)),
        Err(e) => eprintln!("no screenshot: chromium is not on the PATH ({e})"),
    }
    assert!(server.stop().0.success());
}
