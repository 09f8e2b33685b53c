//! The EIA source's unit tests: kinds, request parameters, chunk lengths, page reading, error
//! bodies, the real captured bodies of `shared/realdata/eia` and full pages of the fake.
use super::fake::{self, PageQuery, PageStyle};
use super::*;
use crate::ingest::http::{RateLimits, Reply, RetryPolicy};
use crate::time::{FORMAT_HOUR, from_us};
use chrono::{Datelike, TimeZone, Utc};
use std::path::PathBuf;

fn realdata() -> Option<PathBuf> {
    let dir = std::env::var_os("ENERGY_REALDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata"));
    if dir.join("eia").is_dir() {
        Some(dir.join("eia"))
    } else {
        eprintln!("skipping: real data folder {} is absent (set ENERGY_REALDATA)", dir.display());
        None
    }
}

fn hour(y: i32, m: u32, d: u32, h: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp_micros()
}

fn range(start: (i32, u32, u32, u32), end: (i32, u32, u32, u32)) -> DateRange {
    DateRange::new(from_us(hour(start.0, start.1, start.2, start.3)), from_us(hour(end.0, end.1, end.2, end.3)))
        .unwrap()
}

fn source(respondents: &[&str], kinds: &[&str]) -> EiaSource {
    let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
    let respondents: Vec<String> = respondents.iter().map(|s| s.to_string()).collect();
    let kinds: Vec<EiaKind> = kinds.iter().map(|k| EiaKind::parse(k).unwrap()).collect();
    EiaSource::new("http://127.0.0.1:9/", Secret::new("SECRETKEY-0123456789"), &respondents, &kinds, client).unwrap()
}

fn json_reply(status: u16, body: &str) -> Reply {
    Reply::new(status, Some("application/json"), body.as_bytes().to_vec(), "http://127.0.0.1:9/v2/x")
}

#[test]
fn parses_every_real_body() {
    let Some(dir) = realdata() else { return };
    let mut files: Vec<PathBuf> = Vec::new();
    for sub in ["", "older_api"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "json") {
                files.push(entry.path());
            }
        }
    }
    assert!(files.len() >= 20, "{files:?}");
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let response = parse_response(&bytes).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        for row in &response.rows {
            assert!(parse_period(&row.period.0).is_some(), "{}: {:?}", path.display(), row.period);
            assert!(row.value.is_some(), "{}: a row without value", path.display());
        }
    }
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    // 2.1.13: strings
    let bytes = read("region-data_AEC_D_2019-01-02T00.body.json");
    let r = parse_response(&bytes).unwrap();
    assert_eq!(r.total, Some(1));
    assert_eq!(r.rows.len(), 1);
    assert_eq!(parse_period(&r.rows[0].period.0), Some(hour(2019, 1, 2, 0)));
    assert_eq!(r.rows[0].respondent.as_ref().unwrap().0, "AEC");
    assert_eq!(r.rows[0].kind.as_ref().unwrap().0, "D");
    assert_eq!(r.rows[0].value, Some(Some(486.0)));
    let bytes = read("fuel-type-data_AEC_COL_2019-01-02T00.body.json");
    let r = parse_response(&bytes).unwrap();
    assert_eq!(r.rows[0].fueltype.as_ref().unwrap().0, "COL");
    assert_eq!(r.rows[0].value, Some(Some(-3.0)));
    // 2.0.3: numbers, nulls, unknown keys, empty data
    let bytes = read("older_api/US-NW-PGE-with-nulls.json");
    let r = parse_response(&bytes).unwrap();
    assert_eq!(r.total, Some(3));
    assert_eq!(r.rows[0].value, Some(None));
    assert_eq!(r.rows[1].value, Some(Some(400.0)));
    let bytes = read("older_api/US_CAR_SC-nuclear.json");
    let r = parse_response(&bytes).unwrap();
    assert_eq!((r.total, r.rows.len()), (Some(0), 0));
    let bytes = read("older_api/US-FLA-FPC_US-FLA-FPL_exchange.json");
    let r = parse_response(&bytes).unwrap();
    assert_eq!((r.total, r.rows.len()), (Some(25), 25));
    assert_eq!(r.rows[0].value, Some(Some(-329.0)));
}

#[test]
fn parses_the_real_error_and_warning_snippets() {
    let Some(dir) = realdata() else { return };
    let read = |name: &str| std::fs::read(dir.join("snippets").join(name)).unwrap();
    let bytes = read("error_400_invalid_frequency.transcript.json");
    match parse_response(&bytes) {
        Err(ParseError::Api { code: None, message }) => assert!(message.starts_with("Invalid frequency 'yearly'")),
        other => panic!("{other:?}"),
    }
    let bytes = read("error_400_invalid_data_column.transcript.json");
    assert!(matches!(parse_response(&bytes), Err(ParseError::Api { message, .. }) if message.contains("Invalid data")));
    let bytes = read("error_403_API_KEY_MISSING.transcript.json");
    match parse_response(&bytes) {
        Err(ParseError::Api { code: Some(code), message }) => {
            assert_eq!(code, "API_KEY_MISSING");
            assert!(message.starts_with("No api_key was supplied"));
        }
        other => panic!("{other:?}"),
    }
    let bytes = read("error_404_not_found.transcript.json");
    assert_eq!(parse_response(&bytes).unwrap_err(), ParseError::Api { code: None, message: "Not found.".into() });
    let bytes = read("electric-power-operational-data_length10_warning_apiv2.1.8.transcript.json");
    let r = parse_response(&bytes).unwrap();
    assert_eq!(r.total, Some(4_184_767));
    assert!(r.warnings[0].starts_with("incomplete return: The API can only return 5000 rows"));
    assert!(r.rows.iter().all(|row| row.value.is_none()), "its rows carry `generation`, not `value`");
    let bytes = read("fuel-type-data_SRP_NUC_local-hourly_2023-03_warning_truncated.txt");
    assert!(matches!(parse_response(&bytes), Err(ParseError::Invalid(why)) if why.contains("trailing")));
}

#[test]
fn values_and_totals_as_strings_numbers_or_null() {
    let body = r#"{"response":{"total":"4","query execution":0.1,"data":[
        {"period":"2024-01-01T01","respondent":"CISO","type":"D","value":"21000.5","extra":{"a":[1]}},
        {"period":"2024-01-01T02","respondent":"CISO","type":"D","value":-12},
        {"period":"2024-01-01T03","respondent":"CISO","type":"D","value":null},
        {"period":"2024-01-01T04","respondent":"CI\u0053O","type":"D","value":".306"}]},
        "apiVersion":"2.9.9","new":true}"#;
    let r = parse_response(body.as_bytes()).unwrap();
    let values: Vec<Option<Option<f64>>> = r.rows.iter().map(|row| row.value).collect();
    assert_eq!(values, [Some(Some(21000.5)), Some(Some(-12.0)), Some(None), Some(Some(0.306))]);
    assert_eq!(r.rows[3].respondent.as_ref().unwrap().0, "CISO");
    for (total, expected) in [(r#""12""#, Some(12)), ("12", Some(12)), ("null", None), ("12.0", Some(12))] {
        let body = format!(r#"{{"response":{{"total":{total},"data":[]}}}}"#);
        assert_eq!(parse_response(body.as_bytes()).unwrap().total, expected, "{total}");
    }
    let bad = r#"{"response":{"total":"1","data":[{"period":"2024-01-01T01","value":"n/a"}]}}"#;
    assert!(matches!(parse_response(bad.as_bytes()), Err(ParseError::Invalid(why)) if why.contains("n/a")));
    assert!(matches!(parse_response(b"{}"), Err(ParseError::Invalid(_))));
    assert!(matches!(parse_response(b""), Err(ParseError::Invalid(_))));
}

#[test]
fn periods_are_utc_hour_ends() {
    assert_eq!(parse_period("2019-01-02T00"), Some(hour(2019, 1, 2, 0)));
    assert_eq!(parse_period("2024-02-29T23"), Some(hour(2024, 2, 29, 23)));
    assert_eq!(parse_period("2023-03-20T00-07"), Some(hour(2023, 3, 20, 7)));
    assert_eq!(parse_period("2023-03-20T09+05"), Some(hour(2023, 3, 20, 4)));
    for bad in ["2019-13-01T00", "2019-02-29T00", "2019-01-02T24", "2019-01-02", "2019-01-0xT00", "2019-01-02T00Z", ""]
    {
        assert_eq!(parse_period(bad), None, "{bad}");
    }
    // agrees with chrono over two centuries
    let mut t = Utc.with_ymd_and_hms(1950, 1, 1, 0, 0, 0).unwrap();
    while t.year_ce().1 < 2150 {
        assert_eq!(parse_period(&t.format(FORMAT_HOUR).to_string()), Some(t.timestamp_micros()));
        t += TimeDelta::hours(37);
    }
}

#[test]
fn kinds_parse_and_name_their_series() {
    assert_eq!(EiaKind::parse("df").unwrap(), EiaKind::Region("DF".into()));
    assert_eq!(EiaKind::parse("fuel:col").unwrap(), EiaKind::Fuel("COL".into()));
    assert_eq!(EiaKind::parse("FUEL_NG").unwrap().series_kind(), "FUEL_NG");
    assert_eq!(EiaKind::parse("NG").unwrap().route(), Route::RegionData);
    for bad in ["X", "fuel:", "fuel:../x", "TEMP", ""] {
        let e = EiaKind::parse(bad).unwrap_err();
        assert!(e.is_bad_input() && e.to_string().contains("fuel:CODE"), "{bad}: {e}");
    }
    let s = source(&["ciso", "ERCO", "CISO"], &["D", "fuel:SUN", "D"]);
    let ids: Vec<String> = s.series().iter().map(ToString::to_string).collect();
    assert_eq!(ids, ["eia:CISO:D", "eia:CISO:FUEL_SUN", "eia:ERCO:D", "eia:ERCO:FUEL_SUN"]);
    let client = || HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
    let key = || Secret::new("K-0123456789");
    for bad in ["CI/SO", "CA ISO", ""] {
        let e = EiaSource::new("http://h", key(), &[bad.to_string()], &[], client()).unwrap_err();
        assert!(e.is_bad_input(), "{e}");
    }
    assert!(EiaSource::new("http://h", key(), &[], &[], client()).unwrap_err().is_bad_input());
    assert!(EiaSource::new("ftp://h", key(), &["CISO".into()], &[], client()).unwrap_err().is_bad_input());
    let e = EiaSource::new("http://h", Secret::new(" "), &["CISO".into()], &[], client()).unwrap_err();
    assert!(e.to_string().contains("EIA_API_KEY") && e.is_bad_input(), "{e}");
}

#[test]
fn requests_carry_the_exact_parameters() {
    let s = source(&["CISO", "ERCO"], &["D", "DF", "fuel:COL"]);
    let chunk = range((2024, 1, 1, 0), (2024, 1, 8, 0));
    let url = s.page_url(Route::RegionData, chunk, 5000);
    assert_eq!(url.path(), "/v2/electricity/rto/region-data/data/");
    let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let expected: Vec<(String, String)> = [
        ("frequency", "hourly"),
        ("data[0]", "value"),
        ("facets[respondent][]", "CISO"),
        ("facets[respondent][]", "ERCO"),
        ("facets[type][]", "D"),
        ("facets[type][]", "DF"),
        ("start", "2024-01-01T01"),
        ("end", "2024-01-08T00"),
        ("sort[0][column]", "period"),
        ("sort[0][direction]", "asc"),
        ("sort[1][column]", "respondent"),
        ("sort[1][direction]", "asc"),
        ("sort[2][column]", "type"),
        ("sort[2][direction]", "asc"),
        ("offset", "5000"),
        ("length", "5000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(pairs, expected);
    let fuel = s.page_url(Route::FuelTypeData, chunk, 0);
    assert_eq!(fuel.path(), "/v2/electricity/rto/fuel-type-data/data/");
    let fuel_pairs: Vec<String> = fuel.query_pairs().map(|(k, v)| format!("{k}={v}")).collect();
    assert!(fuel_pairs.contains(&"facets[fueltype][]=COL".to_string()), "{fuel_pairs:?}");
    assert!(fuel_pairs.contains(&"sort[2][column]=fueltype".to_string()), "{fuel_pairs:?}");
    assert!(!fuel_pairs.iter().any(|p| p.starts_with("facets[type]")), "{fuel_pairs:?}");
    // the key is never in the URL: the client adds it when it sends
    assert!(!url.as_str().contains("api_key") && !url.as_str().contains("SECRETKEY"));
    assert!(!format!("{s:?}").contains("SECRETKEY"));
    // a base with a path prefix (a proxy) keeps it
    let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
    let proxied =
        EiaSource::new("https://proxy.example/eia/", Secret::new("KEY-0123"), &["PJM".into()], &[], client).unwrap();
    assert_eq!(proxied.page_url(Route::RegionData, chunk, 0).path(), "/eia/v2/electricity/rto/region-data/data/");
}

#[test]
fn chunks_are_months_unless_a_month_passes_the_page_cap() {
    assert_eq!(source(&["CISO"], &["D", "DF"]).chunk_len(), TimeDelta::days(31));
    let many: Vec<String> = (0..70).map(|i| format!("R{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    // 280 series: a month is 208,320 rows, 42 pages
    assert_eq!(source(&many, &["D", "DF", "NG", "TI"]).chunk_len(), TimeDelta::days(31));
    // 840 series: 380 hours make 319,200 rows, 64 pages
    let s = source(
        &many,
        &[
            "D", "DF", "NG", "TI", "fuel:COL", "fuel:NG", "fuel:NUC", "fuel:OIL", "fuel:SUN", "fuel:WAT", "fuel:WND",
            "fuel:OTH",
        ],
    );
    assert_eq!(s.chunk_len(), TimeDelta::hours(380));
    assert_eq!(s.settle_time(), TimeDelta::hours(48));
}

#[test]
fn a_page_splits_into_its_series_and_checks_its_size() {
    let s = source(&["CISO", "ERCO"], &["D", "DF"]);
    let chunk = range((2024, 1, 1, 0), (2024, 1, 1, 2));
    let body = r#"{"response":{"total":"9","data":[
        {"period":"2024-01-01T01","respondent":"CISO","type":"D","value":"1"},
        {"period":"2024-01-01T01","respondent":"CISO","type":"DF","value":"2"},
        {"period":"2024-01-01T01","respondent":"ERCO","type":"D","value":3},
        {"period":"2024-01-01T01","respondent":"ERCO","type":"DF","value":null},
        {"period":"2024-01-01T01","respondent":"ERCO","type":"NG","value":"9"},
        {"period":"2024-01-01T02","respondent":"CISO","type":"D","value":"5"},
        {"period":"2024-01-01T02","respondent":"CISO","type":"D","value":"55"},
        {"period":"2024-01-01T02","respondent":"ciso","type":"df","value":"6"},
        {"period":"2024-01-01T03","respondent":"ERCO","type":"D","value":"7"}]}}"#;
    let page = s.read_page(&json_reply(200, body), Route::RegionData, chunk, 0).unwrap();
    assert_eq!((page.served, page.unknown, page.outside, page.rows.len()), (9, 1, 1, 7));
    let series = s.assemble(chunk, &[page]);
    let t1 = hour(2024, 1, 1, 1);
    let t2 = hour(2024, 1, 1, 2);
    assert_eq!(series[0].timestamps, [t1, t2]);
    assert_eq!(series[0].values, [Some(1.0), Some(5.0)], "the first of a duplicated period is kept");
    assert_eq!(series[1].values, [Some(2.0), Some(6.0)]);
    assert_eq!(series[2].values, [Some(3.0)]);
    assert_eq!(series[3].values, [None]);
    // a page shorter than its total promises is retried
    let short =
        r#"{"response":{"total":"3","data":[{"period":"2024-01-01T01","respondent":"CISO","type":"D","value":"1"}]}}"#;
    let e = s.read_page(&json_reply(200, short), Route::RegionData, chunk, 0).unwrap_err();
    assert!(e.is_transient() && e.to_string().contains("promises 3"), "{e}");
    let no_value = r#"{"response":{"total":"1","data":[{"period":"2024-01-01T01","respondent":"CISO","type":"D"}]}}"#;
    let e = s.read_page(&json_reply(200, no_value), Route::RegionData, chunk, 0).unwrap_err();
    assert!(!e.is_transient() && e.to_string().contains("data[0]=value"), "{e}");
    // empty data and total 0 are fine
    let empty = s.read_page(&json_reply(200, r#"{"response":{"total":0,"data":[]}}"#), Route::RegionData, chunk, 0);
    assert_eq!(empty.unwrap().rows.len(), 0);
}

#[test]
fn error_replies_become_clear_errors() {
    let s = source(&["CISO"], &["D"]);
    let chunk = range((2024, 1, 1, 0), (2024, 1, 1, 2));
    let read = |reply: Reply| s.read_page(&reply, Route::RegionData, chunk, 0).unwrap_err();
    let e = read(json_reply(403, r#"{"error":{"code":"API_KEY_INVALID","message":"The key is not valid."}}"#));
    assert!(matches!(e, IngestError::ApiKey { .. }) && !e.is_transient() && e.is_bad_input(), "{e}");
    assert!(e.to_string().contains("EIA_API_KEY") && e.to_string().contains("--eia-api-key"), "{e}");
    let e = read(json_reply(400, r#"{"error":"Invalid frequency 'yearly' provided.","code":400}"#));
    assert!(matches!(e, IngestError::Http { status: 400, .. }) && !e.is_transient(), "{e}");
    assert!(e.to_string().contains("Invalid frequency 'yearly' provided."), "{e}");
    // error in a 200 body (older API versions)
    let e = read(json_reply(200, r#"{"error":"Invalid data 'x' provided.","code":400}"#));
    assert!(matches!(e, IngestError::Api { .. }) && !e.is_transient(), "{e}");
    assert!(e.to_string().contains("Invalid data 'x' provided."), "{e}");
    let e = read(json_reply(404, r#"{"error":"Not found.","code":404}"#));
    assert!(matches!(e, IngestError::Http { status: 404, .. }) && !e.is_transient(), "{e}");
    assert!(e.to_string().contains("--eia-url"), "{e}");
    let e = read(json_reply(429, r#"{"error":{"code":"OVER_RATE_LIMIT","message":"slow down"}}"#));
    assert!(e.is_transient() && e.to_string().contains("OVER_RATE_LIMIT"), "{e}");
    let html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let e = read(Reply::new(502, Some("text/html"), html, "http://h/v2"));
    assert!(matches!(e, IngestError::Http { status: 502, .. }) && e.is_transient(), "{e}");
    let e = read(Reply::new(200, Some("text/html; charset=utf-8"), html, "http://h/v2"));
    assert!(matches!(e, IngestError::Body { .. }) && e.is_transient(), "{e}");
    assert!(e.to_string().contains("text/html") && e.to_string().contains("<title>502 Bad Gateway"), "{e}");
    let e = read(Reply::new(200, Some("application/json"), r#"{"response":{"total":"1","data":[{"per"#, "http://h"));
    assert!(matches!(e, IngestError::Body { .. }) && e.is_transient(), "{e}");
    let e = read(Reply::new(503, None, "", "http://h"));
    assert!(e.is_transient(), "{e}");
    let e = read(Reply::new(501, None, "", "http://h"));
    assert!(!e.is_transient(), "{e}");
}

/// A page of `rows` rows of the fake (at most [`PAGE_ROWS`]), CISO and ERCO × D, DF, NG, TI
/// from 2024-01-01T01, and the chunk that holds them.
fn big_page(rows: usize) -> (String, DateRange) {
    let start = hour(2024, 1, 1, 0);
    let hours = rows.div_ceil(8) as i64;
    let query = PageQuery {
        route: Route::RegionData,
        api_key: "MOCK_API_KEY".into(),
        respondents: vec!["CISO".into(), "ERCO".into()],
        kinds: REGION_KINDS.iter().map(|k| k.to_string()).collect(),
        start: start + HOUR_US,
        end: start + hours * HOUR_US,
        with_value: true,
        offset: 0,
        length: rows as u64,
    };
    let (body, _) = fake::page(&query, PageStyle::default());
    (body, DateRange::new(from_us(start), from_us(start + hours * HOUR_US)).unwrap())
}

#[test]
fn a_full_page_of_the_real_shape_reads_whole() {
    let s = source(&["CISO", "ERCO"], &["D", "DF", "NG", "TI"]);
    let (body, chunk) = big_page(5000);
    let page = s.read_page(&json_reply(200, &body), Route::RegionData, chunk, 0).unwrap();
    assert_eq!((page.served, page.rows.len(), page.unknown, page.outside), (5000, 5000, 0, 0));
}

/// Parse throughput of a full page: `cargo test --lib parse_throughput -- --ignored --nocapture`
/// (add `--release` for the optimised figure).
#[test]
#[ignore]
fn parse_throughput() {
    let s = source(&["CISO", "ERCO"], &["D", "DF", "NG", "TI"]);
    let (body, chunk) = big_page(5000);
    let reply = json_reply(200, &body);
    let rounds = 200;
    let started = std::time::Instant::now();
    let mut rows = 0;
    for _ in 0..rounds {
        rows += s.read_page(&reply, Route::RegionData, chunk, 0).unwrap().rows.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    // what is deterministic: every round reads the whole page
    assert_eq!(rows, 5000 * rounds);
    println!(
        "parsed {rows} rows ({} bytes a page) in {seconds:.3} s: {:.0} rows/s, {:.0} MB/s (debug_assertions: {})",
        body.len(),
        rows as f64 / seconds,
        (body.len() * rounds) as f64 / seconds / 1e6,
        cfg!(debug_assertions)
    );
}

#[test]
fn interchange_and_sub_region_pages_of_the_real_bodies_name_their_series() {
    let Some(dir) = realdata() else { return };
    let chunk = range((2019, 1, 1, 23), (2019, 1, 2, 0));
    for (file, region, kind, route, stored, value) in [
        ("interchange-data_AEC_MISO_2019-01-02T00.body.json", "AEC-MISO", "ID", Route::Interchange, "AEC-MISO", 112.0),
        ("region-sub-ba-data_CISO_PGAE_2019-01-02T00.body.json", "ciso.pgae", "D", Route::SubBa, "CISO.PGAE", 9235.0),
        ("fuel-type-data_AEC_COL_2019-01-02T00.body.json", "AEC", "fuel:COL", Route::FuelTypeData, "AEC", -3.0),
    ] {
        let s = source(&[region], &[kind]);
        assert_eq!(s.series()[0].region, stored);
        let body = std::fs::read_to_string(dir.join(file)).unwrap();
        let page = s.read_page(&json_reply(200, &body), route, chunk, 0).unwrap();
        assert_eq!(page.rows, [(0, hour(2019, 1, 2, 0), Some(value))], "{file}");
        let url = s.page_url(route, chunk, 0);
        assert!(url.path().ends_with(&format!("/{}/data/", route.name())), "{url}");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(query.contains(&("sort[1][column]".into(), route.region_facet().into())), "{query:?}");
    }
}

#[test]
fn a_pair_of_regions_asks_the_cross_product_and_keeps_only_its_series() {
    let s = source(&["AEC-MISO", "ERCO-SWPP"], &["ID"]);
    let chunk = range((2024, 1, 1, 0), (2024, 1, 1, 1));
    let url = s.page_url(Route::Interchange, chunk, 0);
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let values = |facet: &str| -> Vec<String> {
        query.iter().filter(|(k, _)| k == &format!("facets[{facet}][]")).map(|(_, v)| v.clone()).collect()
    };
    assert_eq!(values("fromba"), ["AEC", "ERCO"]);
    assert_eq!(values("toba"), ["MISO", "SWPP"]);
    // AEC-SWPP is in the cross product but not asked: dropped
    let body = r#"{"response":{"total":3,"data":[
        {"period":"2024-01-01T01","fromba":"AEC","toba":"MISO","value":"1"},
        {"period":"2024-01-01T01","fromba":"AEC","toba":"SWPP","value":"2"},
        {"period":"2024-01-01T01","fromba":"ERCO","toba":"SWPP","value":"3"}]}}"#;
    let page = s.read_page(&json_reply(200, body), Route::Interchange, chunk, 0).unwrap();
    assert_eq!(page.rows.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(), [(0, Some(1.0)), (1, Some(3.0))]);
    assert_eq!(page.unknown, 1);
}

#[test]
fn facet_lists_are_read_sorted_and_errors_are_named() {
    let body = r#"{"response":{"totalFacets":"3","facets":[{"id":"ERCO","name":"x"},{"id":"ciso","name":"y"},
        {"id":"CISO","name":"y"},{"id":"bad code","name":"z"}]},"apiVersion":"2.1.13"}"#;
    assert_eq!(read_facet(&json_reply(200, body)).unwrap(), ["CISO", "ERCO"]);
    let e = read_facet(&json_reply(200, r#"{"response":{"facets":[]}}"#)).unwrap_err().to_string();
    assert!(e.contains("no respondent"), "{e}");
    let e = read_facet(&json_reply(403, r#"{"error":{"code":"API_KEY_INVALID","message":"bad"}}"#)).unwrap_err();
    assert!(e.to_string().contains("EIA_API_KEY"), "{e}");
    let base = reqwest::Url::parse("http://127.0.0.1:9/eia").unwrap();
    assert_eq!(facet_url(&base, Route::RegionData).path(), "/eia/v2/electricity/rto/region-data/facet/respondent/");
    assert_eq!(facet_url(&base, Route::SubBa).path(), "/eia/v2/electricity/rto/region-sub-ba-data/facet/parent/");
}

/// The members of `body`'s first data row, in the order the text writes them.
fn row_members(body: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    let row = value["response"]["data"][0].as_object().unwrap();
    let data = body.find("\"data\":").unwrap();
    let mut members: Vec<(usize, String)> =
        row.keys().map(|key| (body[data..].find(&format!("\"{key}\":")).unwrap(), key.clone())).collect();
    members.sort();
    members.into_iter().map(|(_, key)| key).collect()
}

/// The fake answers each route's request of a real body with a body of the same shape: the
/// same members in the same order in the row, the response and the echoed request, the same
/// facets echoed, and rows the source reads into the same series.
#[test]
fn the_fake_serves_every_route_in_the_shape_of_its_real_body() {
    let Some(dir) = realdata() else { return };
    let chunk = range((2019, 1, 1, 23), (2019, 1, 2, 0));
    for (file, region, kind, route) in [
        ("region-data_AEC_D_2019-01-02T00.body.json", "AEC", "D", Route::RegionData),
        ("fuel-type-data_AEC_COL_2019-01-02T00.body.json", "AEC", "fuel:COL", Route::FuelTypeData),
        ("interchange-data_AEC_MISO_2019-01-02T00.body.json", "AEC-MISO", "ID", Route::Interchange),
        ("region-sub-ba-data_CISO_PGAE_2019-01-02T00.body.json", "CISO.PGAE", "D", Route::SubBa),
    ] {
        let real = std::fs::read_to_string(dir.join(file)).unwrap();
        let s = source(&[region], &[kind]);
        let url = s.page_url(route, chunk, 0);
        let query = format!("{}&api_key=MOCK_API_KEY", url.query().unwrap());
        let (body, rows) = fake::answer(url.path(), &query, PageStyle::default()).unwrap();
        assert_eq!(rows, 1, "{file}");
        assert_eq!(row_members(&body), row_members(&real), "{file}");
        let (fake, real): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&body).unwrap(), serde_json::from_str(&real).unwrap());
        let keys = |value: &serde_json::Value| value.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&fake["response"]), keys(&real["response"]), "{file}");
        assert_eq!(keys(&fake["request"]["params"]), keys(&real["request"]["params"]), "{file}");
        assert_eq!(fake["request"]["params"]["facets"], real["request"]["params"]["facets"], "{file}");
        assert_eq!(fake["request"]["command"], real["request"]["command"], "{file}");
        assert_eq!(fake["response"]["description"], real["response"]["description"], "{file}");
        let page = s.read_page(&json_reply(200, &body), route, chunk, 0).unwrap();
        let t = hour(2019, 1, 2, 0);
        let series = s.series()[0].clone();
        let kind = series.kind.strip_prefix(FUEL_PREFIX).unwrap_or(&series.kind);
        let expected = fake::value_at(t, &series.region, kind);
        assert_eq!(page.rows, [(0, t, Some(expected))], "{file}");
    }
}

/// The facet lists of every route, in the shape `--region all` reads; a facet the route does
/// not have is 404, a request without a key 403.
#[test]
fn the_fake_serves_facet_lists() {
    let facet = |route: Route, facet: &str, query: &str| {
        let path = format!("/v2/electricity/rto/{}/facet/{facet}/", route.name());
        fake::answer(&path, query, PageStyle::default())
    };
    let (body, rows) = facet(Route::RegionData, "respondent", "api_key=K").unwrap();
    assert_eq!(rows, 0);
    let codes = read_facet(&json_reply(200, &body)).unwrap();
    let mut respondents: Vec<&str> = fake::RESPONDENTS.iter().map(|(code, _)| *code).collect();
    respondents.sort();
    assert_eq!(codes, respondents);
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["response"]["totalFacets"], respondents.len().to_string());
    assert_eq!(value["response"]["facets"][0]["name"], "Bonneville Power Administration");
    assert_eq!(value["request"]["command"], "/v2/electricity/rto/region-data/facet/respondent/");
    let (body, _) = facet(Route::SubBa, "parent", "api_key=K").unwrap();
    assert_eq!(read_facet(&json_reply(200, &body)).unwrap(), ["CISO", "ERCO"]);
    let (body, _) = facet(Route::SubBa, "subba", "api_key=K").unwrap();
    assert!(read_facet(&json_reply(200, &body)).unwrap().contains(&"PGAE".to_string()));
    let (body, _) = facet(Route::FuelTypeData, "fueltype", "api_key=K").unwrap();
    assert_eq!(read_facet(&json_reply(200, &body)).unwrap().len(), fake::FUEL_NAMES.len());
    assert_eq!(facet(Route::RegionData, "fueltype", "api_key=K").unwrap_err().0, 404);
    assert_eq!(facet(Route::Interchange, "fromba", "").unwrap_err().0, 403);
}

/// A sub-region page holds the known sub-regions of the parents asked, an interchange page
/// every pair of two different BAs.
#[test]
fn the_fake_serves_only_pairs_that_exist() {
    let query = |route: Route, firsts: &[&str], seconds: &[&str]| PageQuery {
        route,
        api_key: "K".into(),
        respondents: firsts.iter().map(|s| s.to_string()).collect(),
        kinds: seconds.iter().map(|s| s.to_string()).collect(),
        start: hour(2024, 1, 1, 1),
        end: hour(2024, 1, 1, 3),
        with_value: true,
        offset: 0,
        length: 5000,
    };
    let sub = query(Route::SubBa, &["CISO", "ERCO"], &["COAS", "PGAE", "SCE"]);
    assert_eq!(sub.pairs(), [("CISO", "PGAE"), ("CISO", "SCE"), ("ERCO", "COAS")]);
    assert_eq!(sub.total(), 9);
    let interchange = query(Route::Interchange, &["CISO", "ERCO"], &["CISO", "ERCO", "MISO"]);
    assert_eq!(interchange.pairs(), [("CISO", "ERCO"), ("CISO", "MISO"), ("ERCO", "CISO"), ("ERCO", "MISO")]);
    let (body, rows) = fake::page(&interchange, PageStyle::default());
    assert_eq!(rows, 12);
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = &value["response"]["data"][5];
    assert_eq!(
        (row["period"].as_str(), row["fromba"].as_str(), row["toba"].as_str()),
        (Some("2024-01-01T02"), Some("CISO"), Some("MISO"))
    );
    assert_eq!(row["toba-name"], "Midcontinent Independent System Operator, Inc.");
}
