//! The CAISO OASIS source against wiremock servers serving the real zips of
//! `shared/realdata/caiso` (skipped where absent), synthesized OASIS replies (CSV zips and
//! error reports: retries and request spacing need no real capture), broken bodies and a
//! 31-day range; the real binary's `collect --source caiso` and `status --compare`.
use super::cli::energy;
use super::realdata;
use energy::ingest::caiso::{self, CaisoKind, CaisoSource, SYSTEM_AREA};
use energy::ingest::{HttpClient, RateLimits, RetryPolicy, Source};
use energy::time::{DateRange, HOUR_US, format_gmt, format_second};
use predicates::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ZIP: &str = "application/x-zip-compressed";
const ALL_RUNS_DAY: &str = "SLD_FCST_allruns_req20230813T00-20230814T00.zip";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

fn real(name: &str) -> Option<Vec<u8>> {
    Some(std::fs::read(realdata::dir()?.join("caiso").join(name)).unwrap())
}

fn zip_of(name: &str, text: &str) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
    writer.write_all(text.as_bytes()).unwrap();
    writer.finish().unwrap().into_inner()
}

fn error_zip(code: u32, description: &str) -> Vec<u8> {
    zip_of(
        "INVALID_REQUEST.xml",
        &format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><m:OASISReport xmlns:m="http://www.caiso.com/soa/OASISReport_v1.xsd"><m:MessagePayload><m:RTO><m:ERROR><m:ERR_CODE>{code}</m:ERR_CODE><m:ERR_DESC>{description}</m:ERR_DESC></m:ERROR></m:RTO></m:MessagePayload></m:OASISReport>"#
        ),
    )
}

fn zip_reply(body: Vec<u8>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, ZIP)
}

fn day(first: &str, last: &str) -> DateRange {
    DateRange::from_days(first.parse().unwrap(), last.parse().unwrap()).unwrap()
}

fn source(url: &str, kinds: &[CaisoKind], retry: RetryPolicy) -> CaisoSource {
    let client = HttpClient::new(retry, RateLimits::UNLIMITED).unwrap();
    CaisoSource::new(url, &[SYSTEM_AREA.to_string()], kinds, client).unwrap()
}

#[tokio::test]
async fn real_all_runs_zip_gives_the_asked_runs() {
    let Some(body) = real(ALL_RUNS_DAY) else { return };
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/oasisapi/SingleZip"))
        .and(query_param("queryname", "SLD_FCST"))
        .and(query_param("resultformat", "6"))
        .and(query_param("startdatetime", "20230813T00:00-0000"))
        .and(query_param("enddatetime", "20230814T00:00-0000"))
        .respond_with(zip_reply(body))
        .expect(2)
        .mount(&server)
        .await;
    let caiso = source(&server.uri(), &[CaisoKind::Actual, CaisoKind::Dam], RetryPolicy::immediate(1));
    let batch = caiso.fetch(day("2023-08-13", "2023-08-13")).await.unwrap();
    assert_eq!((batch.requests, batch.retries, batch.rows()), (2, 0, 48));
    let kinds: Vec<&str> = batch.series.iter().map(|s| s.id.kind.as_str()).collect();
    assert_eq!(kinds, ["ACTUAL", "DAM"]);
    assert_ne!(batch.series[0].values, batch.series[1].values);
    let runs: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.url.query_pairs().find(|(k, _)| k == "market_run_id").map(|(_, v)| v.into_owned()))
        .collect();
    assert_eq!(runs, ["ACTUAL", "DAM"]);
}

#[tokio::test]
async fn real_error_1000_is_an_empty_batch() {
    let Some(body) = real("SLD_FCST_error1000_nodata_req20231212.zip") else { return };
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(zip_reply(body)).expect(1).mount(&server).await;
    let batch =
        source(&server.uri(), &[], RetryPolicy::immediate(3)).fetch(day("2023-12-12", "2023-12-12")).await.unwrap();
    assert_eq!((batch.rows(), batch.series.len(), batch.requests), (0, 1, 1));
}

/// Synthesized replies (no real capture needed): a 1015 report, then the day's CSV.
#[tokio::test]
async fn error_1015_is_retried_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(zip_reply(error_zip(1015, "Processing, submit again later")))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).respond_with(SyntheticOasis).expect(1).mount(&server).await;
    let batch =
        source(&server.uri(), &[], RetryPolicy::immediate(3)).fetch(day("2023-08-13", "2023-08-13")).await.unwrap();
    assert_eq!((batch.rows(), batch.requests, batch.retries), (24, 2, 1));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn other_error_codes_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            zip_reply(error_zip(1004, "Request exceeds 31 days"))
                .insert_header("content-disposition", "inline; filename=INVALID_REQUEST.xml.zip;"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let error =
        source(&server.uri(), &[], RetryPolicy::immediate(3)).fetch(day("2023-08-13", "2023-08-13")).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("ERR_CODE 1004") && text.contains("Request exceeds 31 days"), "{text}");
}

/// A 429, then the day's CSV (synthesized): two requests, one retry after the CAISO backoff
/// (at least 5 s of paused time).
#[tokio::test(start_paused = true)]
async fn too_many_requests_backs_off_at_least_five_seconds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).set_body_string("Too Many Requests"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).respond_with(SyntheticOasis).expect(1).mount(&server).await;
    // a pending timeout would be jumped to by paused time while the socket waits
    let retry = caiso::retry_policy(&RetryPolicy { timeout: None, ..RetryPolicy::immediate(3) });
    let caiso = source(&server.uri(), &[], retry);
    let started = tokio::time::Instant::now();
    let batch = caiso.fetch(day("2023-08-13", "2023-08-13")).await.unwrap();
    // a lower bound only: while a socket waits, paused time jumps to the client's next timer
    // (its connection pool's idle check), so the total is not the backoff alone
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5), "waited {waited:?}");
    assert_eq!((batch.rows(), batch.requests, batch.retries), (24, 2, 1));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// Three kinds, one request each, 5 s apart: the last starts at least 10 s of paused time after
/// the first.
#[tokio::test(start_paused = true)]
async fn requests_are_spaced_by_the_interval() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(zip_reply(error_zip(1000, "No data"))).expect(3).mount(&server).await;
    let client = HttpClient::new(
        RetryPolicy { timeout: None, ..RetryPolicy::immediate(1) },
        RateLimits::every(Duration::from_secs(5)),
    )
    .unwrap();
    let kinds = [CaisoKind::Actual, CaisoKind::Dam, CaisoKind::Rtpd];
    let caiso = CaisoSource::new(&server.uri(), &[], &kinds, client).unwrap();
    let started = tokio::time::Instant::now();
    let batch = caiso.fetch(day("2023-08-13", "2023-08-13")).await.unwrap();
    // a lower bound only, as above
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(10), "took {took:?}");
    assert_eq!((batch.requests, batch.retries, batch.rows()), (3, 0, 0));
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

fn config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("energy.toml");
    std::fs::write(&config, "[caiso]\nmin_interval_s = 0\n[collect]\nchunk_retries = 0\n").unwrap();
    config
}

#[test]
fn collect_stores_the_real_zip_then_status_shows_it() {
    let Some(body) = real(ALL_RUNS_DAY) else { return };
    let runtime = runtime();
    let server = runtime.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(query_param("market_run_id", "ACTUAL"))
            .respond_with(zip_reply(body))
            .expect(1)
            .mount(&server)
            .await;
        server
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = energy(&store)
        .arg("--config")
        .arg(config(dir.path()))
        .args(["collect", "--source", "caiso", "--start", "2023-08-13", "--end", "2023-08-13", "--concurrency", "4"])
        .args(["--caiso-url", &server.uri(), "--json"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["rows"], 24);
    let out = energy(&store).args(["status", "--json"]).assert().success();
    let status: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let series = &status["series"][0];
    assert_eq!(series["series"]["source"], "caiso");
    assert_eq!(series["series"]["region"], SYSTEM_AREA);
    assert_eq!(series["series"]["kind"], "ACTUAL");
    assert_eq!(series["rows"], 24);
    assert_eq!(series["first"], "2023-08-13T01:00:00Z");
    assert_eq!(series["missing_hours"], 0);
    runtime.block_on(server.verify());
}

#[test]
fn a_31_day_range_is_two_requests() {
    let runtime = runtime();
    let server = runtime.block_on(async {
        let server = MockServer::start().await;
        // chunks lie on a 30-day grid from the epoch: 2023-07-22 and 2023-08-21 are on it
        for (start, end) in
            [("20230722T00:00-0000", "20230821T00:00-0000"), ("20230821T00:00-0000", "20230822T00:00-0000")]
        {
            Mock::given(method("GET"))
                .and(path("/oasisapi/SingleZip"))
                .and(query_param("market_run_id", "ACTUAL"))
                .and(query_param("version", "1"))
                .and(query_param("startdatetime", start))
                .and(query_param("enddatetime", end))
                .respond_with(zip_reply(error_zip(1000, "No data returned for the specified selection")))
                .expect(1)
                .mount(&server)
                .await;
        }
        server
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = energy(&store)
        .arg("--config")
        .arg(config(dir.path()))
        .args(["collect", "--source", "caiso", "--region", SYSTEM_AREA, "--kind", "ACTUAL"])
        .args(["--start", "2023-07-22", "--end", "2023-08-21", "--caiso-url", &server.uri(), "--json"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!((report["rows"].as_u64(), report["fetched_chunks"].as_u64()), (Some(0), Some(2)));
    runtime.block_on(server.verify());
    assert_eq!(runtime.block_on(server.received_requests()).unwrap().len(), 2);
}

/// A collect served `reply` once: exit 2, stdout holding every one of `messages`, nothing stored.
fn refused(reply: ResponseTemplate, messages: &[&str]) {
    let runtime = runtime();
    let server = runtime.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("GET")).respond_with(reply).expect(1).mount(&server).await;
        server
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    energy(&store)
        .arg("--config")
        .arg(config(dir.path()))
        .args(["collect", "--source", "caiso", "--start", "2023-08-13", "--end", "2023-08-13"])
        .args(["--caiso-url", &server.uri()])
        .assert()
        .code(2)
        .stdout(predicate::function(|out: &str| messages.iter().all(|m| out.contains(m))));
    assert!(!store.join("source=caiso").exists(), "nothing stored");
    runtime.block_on(server.verify());
}

#[test]
fn corrupt_zip_exits_2_and_stores_nothing() {
    let mut body =
        zip_of("a.csv", &"INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,TAC_AREA_NAME,XML_DATA_ITEM,MW\n".repeat(20));
    body.truncate(body.len() / 2);
    refused(zip_reply(body), &["cannot be opened"]);
}

#[test]
fn html_body_exits_2_and_stores_nothing() {
    refused(
        ResponseTemplate::new(200)
            .set_body_raw(b"<html><body>OASIS is down for maintenance</body></html>", "text/html"),
        &["expected a zip"],
    );
}

/// `Content-Disposition: inline; filename=INVALID_REQUEST.xml.zip;` with a report OASIS gives no
/// code: refused, naming the header, not retried, nothing stored.
#[test]
fn invalid_request_disposition_is_refused() {
    refused(
        zip_reply(zip_of("INVALID_REQUEST.xml", "<m:OASISReport><m:MessagePayload/></m:OASISReport>"))
            .append_header("Content-Disposition", "inline; filename=INVALID_REQUEST.xml.zip;"),
        &["refused the request", "INVALID_REQUEST.xml.zip"],
    );
}

/// An OASIS-compatible reply for any `startdatetime`/`enddatetime`: every hour's ACTUAL row for
/// the system and two other TAC areas, in shuffled order, zipped.
struct SyntheticOasis;

impl wiremock::Respond for SyntheticOasis {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let param = |name: &str| request.url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        let time = |text: String| chrono::NaiveDateTime::parse_from_str(&text, "%Y%m%dT%H:%M-0000").unwrap().and_utc();
        let (start, end) = (time(param("startdatetime").unwrap()), time(param("enddatetime").unwrap()));
        let mut csv = String::from(
            "INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,LOAD_TYPE,OPR_DT,OPR_HR,OPR_INTERVAL,MARKET_RUN_ID,TAC_AREA_NAME,LABEL,XML_DATA_ITEM,POS,MW,EXECUTION_TYPE,GROUP\n",
        );
        let hours = (end - start).num_hours();
        for k in (0..hours).rev() {
            let from = start + chrono::TimeDelta::hours(k);
            let to = from + chrono::TimeDelta::hours(1);
            let t = |d: chrono::DateTime<chrono::Utc>| format_gmt(d.timestamp_micros());
            for (area, scale) in [(SYSTEM_AREA, 1.0), ("PGE-TAC", 0.45), ("SCE-TAC", 0.4)] {
                let mw = scale * (26_000.0 + 4_000.0 * ((k % 24) as f64 / 24.0 * std::f64::consts::TAU).sin());
                csv.push_str(&format!(
                    "{},{},0,{},{},0,ACTUAL,{area},Total Actual Hourly Integrated Load,SYS_FCST_ACT_MW,3.4,{mw:.0},ACTUAL,1\n",
                    t(from),
                    t(to),
                    from.format("%Y-%m-%d"),
                    k % 24 + 1
                ));
            }
        }
        zip_reply(zip_of("SLD_FCST_ACTUAL.csv", &csv))
    }
}

/// The issue's figure: 180 days of ACTUAL against a local server with the default spacing (one
/// request at a time, at least 5 s apart), as the real binary collects them. Asserts what is
/// deterministic: every row once, one request per 30-day chunk, and a wall time no shorter than
/// the floor the spacing sets; prints the wall time against that floor:
/// `cargo test --test it caiso_180_days_figure -- --ignored --nocapture`.
#[test]
#[ignore]
fn caiso_180_days_figure() {
    let runtime = runtime();
    let server = runtime.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("GET")).and(path("/oasisapi/SingleZip")).respond_with(SyntheticOasis).mount(&server).await;
        server
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // 180 whole UTC days, fixed so that the chunk plan is too
    let (first, last) = ("2023-01-01", "2023-06-29");
    let chunks = day(first, last).chunks(chrono::TimeDelta::days(caiso::MAX_DAYS)).len();
    let started = std::time::Instant::now();
    let out = energy(&store)
        .args(["collect", "--source", "caiso", "--kind", "ACTUAL", "--start", first, "--end", last, "--json"])
        .args(["--caiso-url", &server.uri()])
        .assert()
        .success();
    let wall = started.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let requests = runtime.block_on(server.received_requests()).unwrap().len();
    let rows = report["rows"].as_u64().unwrap();
    assert_eq!(rows, 180 * 24, "{report}");
    assert_eq!((requests, report["fetched_chunks"].as_u64()), (chunks, Some(chunks as u64)), "{report}");
    // the first request waits for nothing: (requests - 1) spacings of 5 s
    let floor = 5.0 * (requests as f64 - 1.0);
    assert!(wall >= floor, "{wall:.2} s is under the spacing floor of {floor:.0} s");
    println!(
        "CAISO 180 days ACTUAL: {rows} rows in {requests} requests, {wall:.2} s wall; floor {floor:.0} s ((requests - 1) x 5 s), {:.1}% above it; {:.0} rows/s",
        100.0 * (wall - floor) / floor,
        rows as f64 / wall
    );
}

#[test]
fn compare_two_series_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let write = |name: &str, hours: std::ops::Range<i64>, value: &dyn Fn(i64) -> f64| {
        let path = dir.path().join(name);
        let mut text = String::from("timestamp,value\n");
        for h in hours {
            let t = start + chrono::TimeDelta::microseconds(h * HOUR_US);
            text.push_str(&format!("{},{}\n", format_second(t.timestamp_micros()), value(h)));
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    // A: hours 1..=48 at 1000 MW; B: hours 25..=72, 10 % higher at hours 30, 31 and 40, 1 % at 26
    let a = write("a.csv", 1..49, &|_| 1000.0);
    let b = write("b.csv", 25..73, &|h| match h {
        30 | 31 | 40 => 1100.0,
        26 => 1010.0,
        _ => 1000.0,
    });
    for (path, region) in [(&a, "A"), (&b, "B")] {
        energy(&store)
            .args(["collect", "--source", "file", "--region", region, "--kind", "D"])
            .arg("--path")
            .arg(path)
            .assert()
            .success();
    }
    let out = energy(&store).args(["--json", "status", "--compare", "file:A:D", "file:B:D"]).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["overlap_hours"], 24);
    assert_eq!(report["disagreeing_hours"], 3);
    let mad = report["mean_absolute_difference"].as_f64().unwrap();
    assert!((mad - 310.0 / 24.0).abs() < 1e-9, "{report}");
    let mape = report["mape_percent"].as_f64().unwrap();
    assert!((mape - 31.0 / 24.0).abs() < 1e-9, "{report}");
    assert_eq!(report["disagreements"][0]["timestamp"], "2024-01-02T06:00Z");
    // the table, a tighter threshold, and a series the store lacks
    energy(&store)
        .args(["status", "--compare", "file:A:D", "file:B:D", "--threshold", "0.5"])
        .assert()
        .success()
        .stdout(predicate::str::contains("overlap hours").and(predicate::str::contains("2024-01-02T02:00Z")));
    energy(&store)
        .args(["status", "--compare", "file:A:D", "caiso:CA ISO-TAC:ACTUAL"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("caiso:CA ISO-TAC:ACTUAL"));
}

/// Wind and solar by trading hub from the real `SLD_REN_FCST` DAM zip and a day-ahead load
/// written here (10,000 MW every hour), collected by the real binary: the store holds each
/// hub's `WIND_DAM` and `SOLAR_DAM` and the derived `NET_DAM` of the system, which `features`
/// takes as its load.
#[test]
fn net_load_is_derived_from_the_real_wind_and_solar_zip() {
    let Some(renewables) = real("20250204_20250211_SLD_REN_FCST_DAM_20250214_04_52_10_v1.zip") else { return };
    let mut csv = String::from("INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,TAC_AREA_NAME,XML_DATA_ITEM,MW\n");
    let first = energy::time::parse_hour("2025-02-05T00").unwrap();
    for hour in 0..72 {
        let start = first + hour * HOUR_US;
        csv.push_str(&format!(
            "{},{},{SYSTEM_AREA},SYS_FCST_DA_MW,10000\n",
            format_gmt(start),
            format_gmt(start + HOUR_US)
        ));
    }
    let runtime = runtime();
    let server = runtime.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(query_param("queryname", "SLD_REN_FCST"))
            .respond_with(zip_reply(renewables))
            .expect(2)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(query_param("queryname", "SLD_FCST"))
            .respond_with(zip_reply(zip_of("load.csv", &csv)))
            .expect(1)
            .mount(&server)
            .await;
        server
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut command = energy(&store);
    command.arg("--config").arg(config(dir.path())).args(["collect", "--source", "caiso"]);
    for region in [SYSTEM_AREA, "NP15", "SP15", "ZP26"] {
        command.args(["--region", region]);
    }
    command.args(["--kind", "DAM,WIND_DAM,SOLAR_DAM", "--start", "2025-02-05", "--end", "2025-02-07"]);
    command.args(["--caiso-url", &server.uri(), "-q"]).assert().success();
    runtime.block_on(server.verify());
    let lib = energy::ingest::Store::new(&store);
    let read =
        |region: &str, kind: &str| lib.read(&energy::ingest::SeriesId::new("caiso", region, kind), None).unwrap();
    let net = read(SYSTEM_AREA, "NET_DAM");
    assert_eq!(net.len(), 72);
    for (k, t) in net.timestamps.iter().enumerate() {
        let renewable: f64 = ["NP15", "SP15", "ZP26"]
            .iter()
            .flat_map(|hub| ["WIND_DAM", "SOLAR_DAM"].map(|kind| (hub, kind)))
            .map(|(hub, kind)| {
                let rows = read(hub, kind);
                rows.values[rows.timestamps.iter().position(|x| x == t).unwrap()].unwrap()
            })
            .sum();
        assert!((net.values[k].unwrap() - (10_000.0 - renewable)).abs() < 1e-6, "hour {k}");
        assert!(renewable > 0.0);
    }
    let out = energy(&store)
        .args(["features", "--source", "caiso", "--region", SYSTEM_AREA, "--kind", "NET_DAM", "--json"])
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(summary["rows"], 72);
}
