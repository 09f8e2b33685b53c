//! The whole grid: interchange (`FROM-TO`, kind `ID`) and sub-region (`PARENT.SUB`) series from
//! the real bodies of their routes, through the real binary into the store and back; and
//! `--region all` resolved from the facet endpoint (a new respondent gets collected, a vanished
//! one keeps its data, the list is cached in the store).
use super::cli::energy;
use super::realdata;
use energy::ingest::eia::fake::{self, LocalEiaServer, PageStyle, ServerConfig};
use energy::ingest::{SeriesId, Store};
use energy::time::parse_hour;
use std::path::Path;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "gridKEY0123456789abcdefghijklmnopqrstuvw";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// `energy collect --source eia` of 2019-01-01 (interval ends up to 2019-01-02T00) at `url`.
fn collect(store: &Path, url: &str, region: &str, kind: &str) -> serde_json::Value {
    let out = energy(store)
        .env("EIA_API_KEY", KEY)
        .args(["collect", "--source", "eia", "--region", region, "--kind", kind])
        .args(["--start", "2019-01-01", "--end", "2019-01-01", "--json", "--eia-url", url])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(!text.contains(KEY));
    serde_json::from_str(&text).unwrap()
}

/// The interchange AEC → MISO and the sub-region PGAE of CISO, from the real bodies of their
/// routes: asked with their own facets, stored as `AEC-MISO`/`ID` and `CISO.PGAE`/`D`, read
/// back with their values.
#[test]
fn interchange_and_sub_regions_round_trip_from_the_real_bodies() {
    let Some(realdata) = realdata::dir() else { return };
    let runtime = runtime();
    let cases = [
        ("interchange-data", "interchange-data_AEC_MISO_2019-01-02T00.body.json", "aec-miso", "ID", "AEC-MISO", 112.0),
        (
            "region-sub-ba-data",
            "region-sub-ba-data_CISO_PGAE_2019-01-02T00.body.json",
            "CISO.PGAE",
            "D",
            "CISO.PGAE",
            9235.0,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (route, file, region, kind, stored, value) in cases {
        let body = std::fs::read(realdata.join("eia").join(file)).unwrap();
        let server = runtime.block_on(async {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path(format!("/v2/electricity/rto/{route}/data/")))
                .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
                .expect(1)
                .mount(&server)
                .await;
            server
        });
        let report = collect(dir.path(), &server.uri(), region, kind);
        assert_eq!(report["rows"], 1, "{report}");
        let requests = runtime.block_on(server.received_requests()).unwrap();
        let query: Vec<String> = requests[0].url.query_pairs().map(|(k, v)| format!("{k}={v}")).collect();
        let (first, second) = stored.split_once(['-', '.']).unwrap();
        let facets: [&str; 2] = if route == "interchange-data" { ["fromba", "toba"] } else { ["parent", "subba"] };
        for expected in [format!("facets[{}][]={first}", facets[0]), format!("facets[{}][]={second}", facets[1])] {
            assert!(query.contains(&expected), "{expected} not in {query:?}");
        }
        let rows = Store::new(dir.path()).read(&SeriesId::new("eia", stored, kind), None).unwrap();
        assert_eq!(rows.timestamps, [parse_hour("2019-01-02T00").unwrap()]);
        assert_eq!(rows.values, [Some(value)]);
    }
    let folders: Vec<String> = std::fs::read_dir(dir.path().join("source=eia"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(folders.contains(&"region=AEC-MISO".to_string()) && folders.contains(&"region=CISO.PGAE".to_string()));
}

#[test]
fn regions_that_do_not_fit_the_kind_are_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    for (region, kind, message) in [
        ("AEC", "ID", "interchange needs FROM-TO"),
        ("AEC-MISO", "D", "holds interchange (ID) only"),
        ("CISO.PGAE", "NG", "demand (D) only"),
        ("CISO.PG-AE", "D", "letters and digits"),
        ("all", "ID", "not interchange pairs"),
    ] {
        energy(dir.path())
            .env("EIA_API_KEY", KEY)
            .args(["collect", "--source", "eia", "--region", region, "--kind", kind, "--days", "2"])
            .args(["--eia-url", "http://127.0.0.1:9"])
            .assert()
            .code(1)
            .stderr(predicates::str::contains(message));
    }
    assert!(!dir.path().join("source=eia").exists());
}

/// The local fake API (the one `energy bench` runs) serves every route and the facet list:
/// `--region all` collects each respondent it lists, and an interchange pair and a sub-region
/// come through it, stored with the fake's values.
#[test]
fn region_all_interchange_and_sub_regions_come_through_the_local_fake_api() {
    let server = LocalEiaServer::start(ServerConfig::unthrottled()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let all = collect(dir.path(), &server.url(), "all", "D");
    let mut respondents: Vec<&str> = fake::RESPONDENTS.iter().map(|(code, _)| *code).collect();
    respondents.sort();
    let listed: Vec<String> = respondents.iter().map(|code| format!("eia:{code}:D")).collect();
    assert_eq!(all["series"], serde_json::json!(listed));
    assert_eq!(all["rows"], 24 * respondents.len());
    let pair = collect(dir.path(), &server.url(), "CISO-BPAT", "ID");
    let sub = collect(dir.path(), &server.url(), "CISO.PGAE", "D");
    assert_eq!((pair["rows"].as_u64(), sub["rows"].as_u64()), (Some(24), Some(24)));
    let store = Store::new(dir.path());
    for (region, kind) in [("PJM", "D"), ("CISO-BPAT", "ID"), ("CISO.PGAE", "D")] {
        let rows = store.read(&SeriesId::new("eia", region, kind), None).unwrap();
        assert_eq!(rows.len(), 24, "{region}");
        for (t, value) in rows.timestamps.iter().zip(&rows.values) {
            assert_eq!(*value, Some(fake::value_at(*t, region, kind)), "{region} {kind}");
        }
    }
    // one facet request, one data page per collection: nothing refused
    let stats = server.stop();
    assert_eq!((stats.requests, stats.rejected, stats.rows), (4, 0, 24 * (respondents.len() as u64 + 2)));
}

/// The fake API's data pages.
struct FakeData;

impl Respond for FakeData {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let query = request.url.query().unwrap_or_default();
        match fake::answer(request.url.path(), query, PageStyle::default()) {
            Ok((body, _)) => ResponseTemplate::new(200).set_body_raw(body, "application/json"),
            Err((status, body)) => ResponseTemplate::new(status).set_body_raw(body, "application/json"),
        }
    }
}

fn facet_body(codes: &[&str]) -> String {
    let facets: Vec<serde_json::Value> =
        codes.iter().map(|c| serde_json::json!({ "id": c, "name": format!("Respondent {c}") })).collect();
    serde_json::json!({
        "response": { "totalFacets": codes.len().to_string(), "facets": facets },
        "request": { "command": "/v2/electricity/rto/region-data/facet/respondent/", "params": { "api_key": KEY } },
        "apiVersion": "2.1.13"
    })
    .to_string()
}

/// Mount the data pages and a facet list of `codes` (expected `facet_calls` times).
async fn mount(server: &MockServer, codes: &[&str], facet_calls: u64) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/v2/electricity/rto/region-data/facet/respondent/"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(facet_body(codes), "application/json"))
        .expect(facet_calls)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v2/electricity/rto/region-data/data/$"))
        .respond_with(FakeData)
        .mount(server)
        .await;
}

fn collect_all(store: &Path, config: &Path, url: &str, start: &str, end: &str) -> serde_json::Value {
    let out = energy(store)
        .env("EIA_API_KEY", KEY)
        .arg("--config")
        .arg(config)
        .args(["collect", "--source", "eia", "--region", "all", "--kind", "D"])
        .args(["--start", start, "--end", end, "--json", "--eia-url", url])
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

fn rows(store: &Path, region: &str) -> usize {
    Store::new(store).read(&SeriesId::new("eia", region, "D"), None).map_or(0, |rows| rows.len())
}

#[test]
fn region_all_follows_the_facet_list_and_keeps_vanished_respondents() {
    let runtime = runtime();
    let server = runtime.block_on(MockServer::start());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (always, cached) = (dir.path().join("always.toml"), dir.path().join("cached.toml"));
    std::fs::write(&always, "[eia]\nfacet_max_age_hours = 0\n").unwrap();
    std::fs::write(&cached, "[eia]\nfacet_max_age_hours = 24\n").unwrap();

    runtime.block_on(mount(&server, &["CISO", "ERCO"], 1));
    let first = collect_all(&store, &always, &server.uri(), "2024-01-01", "2024-01-02");
    assert_eq!(first["series"], serde_json::json!(["eia:CISO:D", "eia:ERCO:D"]));
    assert_eq!((rows(&store, "CISO"), rows(&store, "ERCO")), (48, 48));
    let facets = Store::new(&store).facets().unwrap();
    assert_eq!(facets["region-data/respondent"].values, ["CISO", "ERCO"]);
    runtime.block_on(server.verify());

    // the list changed: PJM appeared, ERCO vanished
    runtime.block_on(mount(&server, &["PJM", "CISO"], 1));
    let second = collect_all(&store, &always, &server.uri(), "2024-01-01", "2024-01-04");
    assert_eq!(second["series"], serde_json::json!(["eia:CISO:D", "eia:PJM:D"]));
    assert_eq!(rows(&store, "PJM"), 96, "the new respondent is collected");
    assert_eq!(rows(&store, "CISO"), 96);
    assert_eq!(rows(&store, "ERCO"), 48, "the vanished respondent keeps its data");
    runtime.block_on(server.verify());

    // within the cache's age the list is not asked again
    runtime.block_on(mount(&server, &["MISO"], 0));
    let third = collect_all(&store, &cached, &server.uri(), "2024-01-05", "2024-01-05");
    assert_eq!(third["series"], serde_json::json!(["eia:CISO:D", "eia:PJM:D"]));
    runtime.block_on(server.verify());
    let out = energy(&store).args(["status", "--json"]).assert().success();
    let status: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(status["series"].as_array().unwrap().len(), 3);
}

/// `status --grid`: one entry per region with each kind's coverage, the last hour and the
/// DF-vs-D MAPE over the hours both hold.
#[test]
fn the_grid_view_shows_coverage_and_the_day_ahead_mape_per_region() {
    use energy::ingest::SeriesRows;
    use energy::time::{DateRange, HOUR_US};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let start = chrono::DateTime::from_timestamp(parse_hour("2024-01-01T00").unwrap() / 1_000_000, 0).unwrap();
    let range = DateRange::new(start, start + chrono::TimeDelta::hours(48)).unwrap();
    let series = |region: &str, kind: &str, value: &dyn Fn(i64) -> Option<f64>| {
        let mut rows = SeriesRows::new(SeriesId::new("eia", region, kind));
        for t in range.hour_ends_us() {
            if let Some(v) = value(t) {
                rows.timestamps.push(t);
                rows.values.push(Some(v));
            }
        }
        rows
    };
    let first = range.start_us() + HOUR_US;
    {
        let _lock = store.lock().unwrap();
        // demand 100; the forecast 110 (10 %) for the first 24 hours, 95 (5 %) after; demand misses 3 hours
        let demand = series("CISO", "D", &|t| ((t - first) / HOUR_US % 16 != 5).then_some(100.0));
        let forecast = series("CISO", "DF", &|t| Some(if t - first < 24 * HOUR_US { 110.0 } else { 95.0 }));
        let generation = series("ERCO", "NG", &|_| Some(50.0));
        store.write_range(&[demand, forecast, generation], range).unwrap();
    }
    let out = energy(dir.path()).args(["status", "--grid", "--json"]).assert().success();
    let doc: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let grid = doc["grid"].as_array().unwrap();
    assert_eq!(grid.len(), 2);
    assert_eq!(grid[0]["region"], "CISO");
    assert_eq!(grid[0]["last"], "2024-01-03T00:00:00Z");
    let demand = &grid[0]["kinds"][0];
    assert_eq!(
        (demand["kind"].as_str(), demand["rows"].as_u64(), demand["missing_hours"].as_i64()),
        (Some("D"), Some(45), Some(3))
    );
    // 22 hours at 10 % and 23 at 5 % (the three missing demand hours are skipped)
    let mape = grid[0]["df_mape_percent"].as_f64().unwrap();
    let first_day = (0..24).filter(|h| h % 16 != 5).count() as f64;
    let expected = (first_day * 10.0 + (45.0 - first_day) * 5.0) / 45.0;
    assert!((mape - expected).abs() < 1e-9, "{mape} vs {expected}");
    assert_eq!(grid[0]["df_overlap_hours"], 45);
    assert!(grid[1]["df_mape_percent"].is_null(), "ERCO has no D and DF");
    let text = energy(dir.path()).args(["status", "--grid"]).assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    assert!(text.contains("CISO") && text.contains(&format!("{expected:.2} %")), "{text}");
}

/// `status --grid` lists gap ranges per region and kind: a gap across two month files is seen
/// from their footers alone (ERCO reads no file), holes inside a file are found by reading
/// that file only; the text shows the count, the longest and the first few, `--json` them all.
#[test]
fn the_grid_view_lists_gap_ranges_reading_only_files_with_holes() {
    use energy::ingest::SeriesRows;
    use energy::time::DateRange;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let hour = |text: &str| parse_hour(text).unwrap();
    let start = chrono::DateTime::from_timestamp(hour("2024-01-01T00") / 1_000_000, 0).unwrap();
    let range = DateRange::new(start, start + chrono::TimeDelta::days(60)).unwrap();
    let boundary = ("2024-01-31T22", "2024-02-01T02", 5);
    let ciso_holes = [
        ("2024-01-10T05", "2024-01-10T05", 1),
        ("2024-01-20T10", "2024-01-20T12", 3),
        boundary,
        ("2024-02-14T00", "2024-02-15T05", 30),
        ("2024-02-20T07", "2024-02-20T07", 1),
    ];
    let series = |region: &str, holes: &[(&str, &str, i64)]| {
        let mut rows = SeriesRows::new(SeriesId::new("eia", region, "D"));
        for t in range.hour_ends_us() {
            if !holes.iter().any(|(first, last, _)| (hour(first)..=hour(last)).contains(&t)) {
                rows.timestamps.push(t);
                rows.values.push(Some(100.0));
            }
        }
        rows
    };
    {
        let _lock = store.lock().unwrap();
        store.write_range(&[series("CISO", &ciso_holes), series("ERCO", &[boundary])], range).unwrap();
    }
    let out = energy(dir.path()).args(["status", "--grid", "--json"]).assert().success();
    let doc: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let grid = doc["grid"].as_array().unwrap();
    let time = |text: &str| format!("{text}:00:00Z");
    let expect = |entry: &serde_json::Value, holes: &[(&str, &str, i64)], files_read: u64| {
        let demand = &entry["kinds"][0];
        let gaps: Vec<(String, String, i64)> = demand["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (g["first"].as_str().unwrap().into(), g["last"].as_str().unwrap().into(), g["hours"].as_i64().unwrap())
            })
            .collect();
        let want: Vec<(String, String, i64)> = holes.iter().map(|(a, b, n)| (time(a), time(b), *n)).collect();
        assert_eq!(gaps, want);
        assert_eq!(demand["missing_hours"].as_i64(), Some(holes.iter().map(|h| h.2).sum()));
        assert_eq!(demand["files_read"].as_u64(), Some(files_read), "{demand}");
        demand["longest_gap"].clone()
    };
    assert_eq!((grid[0]["region"].as_str(), grid[1]["region"].as_str()), (Some("CISO"), Some("ERCO")));
    let longest = expect(&grid[0], &ciso_holes, 2);
    assert_eq!((longest["first"].as_str(), longest["hours"].as_i64()), (Some("2024-02-14T00:00:00Z"), Some(30)));
    expect(&grid[1], &[boundary], 0);

    let out = energy(dir.path()).args(["status", "--grid"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for line in [
        "2 of ",
        "D: 5 gaps, 40 h; longest 2024-02-14T00:00Z – 2024-02-15T05:00Z (30 h); first 2024-01-10T05:00Z (1 h), 2024-01-20T10:00Z – 2024-01-20T12:00Z (3 h), 2024-01-31T22:00Z – 2024-02-01T02:00Z (5 h), … 2 more",
        "D: 1 gap, 5 h; longest 2024-01-31T22:00Z – 2024-02-01T02:00Z (5 h)",
    ] {
        assert!(text.contains(line), "`{line}` not in\n{text}");
    }
}
