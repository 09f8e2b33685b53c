//! Unit tests: kinds, call weights and URLs, bodies (the real ones of
//! `shared/realdata/openmeteo`, read in place, and our own fixtures under
//! `tests/fixtures/openmeteo`), statuses, points and the weighted mean.
use super::*;
use crate::ingest::http::Reply;
use crate::ingest::{RateLimits, SeriesId};
use crate::time::{format_minute, parse_timestamp};
use std::path::PathBuf;

const URL: &str = "http://openmeteo.test/v1/forecast?latitude=1";

/// A real body, or `None` (with a notice) where the folder is absent; absent with
/// `ENERGY_REQUIRE_REALDATA` set fails.
fn realdata(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("ENERGY_REALDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata"));
    let path = dir.join("openmeteo").join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) if std::env::var("ENERGY_REQUIRE_REALDATA").is_ok_and(|v| !v.is_empty() && v != "0") => {
            panic!("real data file {} is absent and ENERGY_REQUIRE_REALDATA is set", path.display())
        }
        Err(_) => {
            eprintln!("skipping: real data file {} is absent (set ENERGY_REALDATA)", path.display());
            None
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openmeteo").join(name)).unwrap()
}

fn reply(status: u16, body: Vec<u8>) -> Reply {
    Reply::new(status, Some("application/json; charset=utf-8"), body, URL)
}

fn at(text: &str) -> i64 {
    parse_timestamp(text).unwrap()
}

fn point(name: &str, lat: f64, lon: f64, weight: f64) -> WeatherPoint {
    WeatherPoint { name: name.into(), lat, lon, weight }
}

fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

#[test]
fn kinds_parse_into_variable_and_flavour() {
    let kind = OpenmeteoKind::parse("temp_d2").unwrap();
    assert_eq!((kind.series_kind(), kind.api_variable()), ("TEMP_D2".into(), "temperature_2m_previous_day2".into()));
    assert_eq!(kind.endpoint(), Endpoint::PreviousRuns);
    let kind = OpenmeteoKind::parse("GHI_FCST").unwrap();
    assert_eq!(
        (kind.series_kind(), kind.api_variable(), kind.endpoint()),
        ("GHI_FCST".into(), "shortwave_radiation".into(), Endpoint::Forecast)
    );
    let kind = OpenmeteoKind::parse(" DEWPOINT ").unwrap();
    assert_eq!(
        (kind.series_kind(), kind.api_variable(), kind.endpoint()),
        ("DEWPOINT".into(), "dew_point_2m".into(), Endpoint::Archive)
    );
    assert_eq!(OpenmeteoKind::parse("TEMP_D7").unwrap().flavour, Flavour::AsIssued(7));
    for bad in ["TEMP_D8", "TEMP_D0"] {
        let error = OpenmeteoKind::parse(bad).unwrap_err().to_string();
        assert!(error.contains("1 to 7 days"), "{error}");
    }
    for bad in ["D", "TEMP_X", "PRECIP", "TEMP_DX", ""] {
        let error = OpenmeteoKind::parse(bad).unwrap_err();
        assert!(error.is_bad_input() && error.to_string().contains("TEMP_D1"), "{error}");
    }
    // every stored kind passes the store's name rule
    for text in ["TEMP", "DEWPOINT_D7", "GHI_FCST"] {
        crate::ingest::check_name("kind", &OpenmeteoKind::parse(text).unwrap().series_kind()).unwrap();
    }
}

#[test]
fn call_weights_are_the_documented_ones() {
    // "1 variable × 365 days = 2.6 calls; 3 locations × 1 year ≈ 7.8; 10 variables × 14 days = 1"
    assert!((call_weight(1, 1, 365) - 2.607).abs() < 1e-3);
    assert!((call_weight(3, 1, 365) - 7.82).abs() < 1e-2);
    assert_eq!(call_weight(1, 10, 14), 1.0);
    assert_eq!(call_weight(8, 3, 32), 8.0);
    assert!((call_weight(2, 21, 28) - 8.4).abs() < 1e-9);
    // groups stay within the location and weight caps
    assert_eq!(groups(8, 3, 32), vec![(0..8)]);
    assert_eq!(groups(250, 1, 31).len(), 3);
    let heavy = groups(40, 21, 3650);
    assert!(heavy.iter().all(|g| call_weight(g.len(), 21, 3650) <= MAX_CALL_WEIGHT || g.len() == 1), "{heavy:?}");
    assert_eq!(heavy.iter().map(|g| g.len()).sum::<usize>(), 40);
}

#[test]
fn urls_hold_comma_lists_gmt_and_the_days() {
    let endpoints = Endpoints::new(Some("http://localhost:8080/om/"), false).unwrap();
    let points = [point("A", 29.76, -95.37, 2.0), point("B", 32.78, -96.8, 1.0)];
    let variables = ["temperature_2m_previous_day1".to_string(), "temperature_2m_previous_day2".to_string()];
    let call = Call {
        endpoint: Endpoint::PreviousRuns,
        points: &points,
        variables: &variables,
        model: Some("gfs_seamless"),
        first: day("2024-03-01"),
        last: day("2024-04-01"),
    };
    assert_eq!(
        call.url(&endpoints).as_str(),
        "http://localhost:8080/om/v1/forecast?latitude=29.76,32.78&longitude=-95.37,-96.8\
         &hourly=temperature_2m_previous_day1,temperature_2m_previous_day2&start_date=2024-03-01&end_date=2024-04-01\
         &timezone=GMT&models=gfs_seamless"
    );
    assert_eq!(call.days(), 32);
    assert_eq!(
        Endpoints::new(Some("http://h:1"), true).unwrap().url(Endpoint::Archive).as_str(),
        "http://h:1/v1/archive"
    );
    let public = Endpoints::new(None, false).unwrap();
    assert_eq!(public.url(Endpoint::Archive).as_str(), "https://archive-api.open-meteo.com/v1/archive");
    assert_eq!(public.url(Endpoint::PreviousRuns).as_str(), "https://previous-runs-api.open-meteo.com/v1/forecast");
    assert_eq!(public.url(Endpoint::Forecast).as_str(), "https://api.open-meteo.com/v1/forecast");
    let customer = Endpoints::new(None, true).unwrap();
    assert_eq!(customer.url(Endpoint::Forecast).as_str(), "https://customer-api.open-meteo.com/v1/forecast");
    for bad in ["ftp://x", "not a url", "http://h/?apikey=SECRETVALUE1"] {
        let error = Endpoints::new(Some(bad), false).unwrap_err().to_string();
        assert!(error.contains("invalid Open-Meteo URL") && !error.contains("SECRETVALUE1"), "{error}");
    }
    assert!(check_model("ecmwf_ifs025").is_ok());
    assert!(check_model("gfs&x=1").unwrap_err().is_bad_input());
}

fn source(today: &str, regions: &[&str]) -> OpenmeteoSource {
    let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
    let settings = Settings { url: Some("http://openmeteo.test".into()), key: None, model: None, today: day(today) };
    let regions: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
    let kinds = [OpenmeteoKind::TEMP, OpenmeteoKind::parse("TEMP_D1").unwrap()];
    OpenmeteoSource::new(&regions, &kinds, &BTreeMap::new(), settings, client).unwrap()
}

#[test]
fn calls_ask_for_the_chunk_days_within_what_each_api_accepts() {
    let om = source("2026-09-12", &["ERCO"]);
    let variables = ["temperature_2m".to_string()];
    let month = DateRange::from_days(day("2024-03-01"), day("2024-03-31")).unwrap();
    // interval ends 03-01T01 … 04-01T00: the days 03-01 … 04-01
    assert_eq!(om.calls(Endpoint::Archive, month, &variables), [(0..8, day("2024-03-01"), day("2024-04-01"))]);
    // before 2016 the previous-runs API answers 400: nothing is asked
    let old = DateRange::from_days(day("2015-06-01"), day("2015-06-30")).unwrap();
    assert!(om.calls(Endpoint::PreviousRuns, old, &variables).is_empty());
    assert_eq!(om.calls(Endpoint::Archive, old, &variables).len(), 1);
    // the forecast API: clipped to today − 92 … today + 15
    let window = DateRange::from_days(day("2026-09-01"), day("2026-10-10")).unwrap();
    assert_eq!(
        om.calls(Endpoint::Forecast, window, &variables)[0].1..=om.calls(Endpoint::Forecast, window, &variables)[0].2,
        day("2026-09-01")..=day("2026-09-27")
    );
    assert_eq!(om.series().len(), 2);
    assert_eq!(om.series()[1], SeriesId::new("openmeteo", "ERCO", "TEMP_D1"));
    assert_eq!(om.chunk_len(), TimeDelta::days(31));
    assert_eq!(om.settle_time(), TimeDelta::days(7));
}

#[test]
fn regions_come_from_the_table_or_the_config_and_unknown_ones_name_the_key() {
    let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
    let settings = Settings { url: None, key: None, model: None, today: day("2026-01-01") };
    let mut configured = BTreeMap::new();
    configured.insert("VIC".to_string(), vec![point("Melbourne", -37.81, 144.96, 1.0)]);
    configured.insert("ERCO".to_string(), vec![point("Houston", 29.76, -95.37, 1.0)]);
    let om = OpenmeteoSource::new(&["VIC".into(), "ERCO".into()], &[], &configured, settings.clone(), client.clone())
        .unwrap();
    assert_eq!(om.regions(), ["VIC", "ERCO"]);
    assert_eq!(om.points.len(), 2, "the config replaces ERCO's built-in points");
    assert_eq!(om.kinds(), [OpenmeteoKind::TEMP]);
    let params = om.params();
    let other = OpenmeteoSource::new(
        &["VIC".into(), "ERCO".into()],
        &[],
        &BTreeMap::from([("VIC".to_string(), vec![point("Melbourne", -37.81, 144.96, 1.0)])]),
        settings.clone(),
        client.clone(),
    )
    .unwrap();
    assert_ne!(params, other.params(), "other points, other params");
    let error = OpenmeteoSource::new(&["XYZ".into()], &[], &BTreeMap::new(), settings, client).unwrap_err();
    let text = error.to_string();
    assert!(error.is_bad_input() && text.contains("[weather.points.XYZ]") && text.contains("ERCO"), "{text}");
}

#[test]
fn built_in_regions_are_all_there_and_valid() {
    let wanted =
        ["ERCO", "CISO", "PJM", "MISO", "NYIS", "ISNE", "SWPP", "BPAT", "FPL", "SOCO", "TVA", "DUK", "PACE", "AZPS"];
    for region in wanted {
        let points = points_of(region, &BTreeMap::new()).unwrap_or_else(|| panic!("{region} missing"));
        check_points(region, &points).unwrap();
        assert!(points.len() >= 4, "{region}");
        // the points lie in the contiguous United States
        assert!(points.iter().all(|p| (24.0..50.0).contains(&p.lat) && (-125.0..-66.0).contains(&p.lon)), "{region}");
    }
    assert_eq!(BUILT_IN.len(), wanted.len());
    assert!(check_points("X", &[]).is_err());
    assert!(check_points("X", &[point("A", 0.0, 181.0, 1.0)]).unwrap_err().contains("lon"));
    assert!(check_points("X", &[point("A", 0.0, 0.0, f64::NAN)]).unwrap_err().contains("weight"));
}

#[test]
fn weighted_mean_renormalises_over_the_points_present() {
    assert_eq!(weighted_mean([(Some(10.0), 3.0), (Some(20.0), 1.0)]), Some(12.5));
    assert_eq!(weighted_mean([(Some(10.0), 3.0), (None, 1.0)]), Some(10.0));
    assert_eq!(weighted_mean([(None, 3.0), (Some(20.0), 1.0)]), Some(20.0));
    assert_eq!(weighted_mean([(None, 3.0), (None, 1.0)]), None);
    assert_eq!(weighted_mean([(Some(f64::NAN), 3.0)]), None);
}

#[test]
fn real_single_point_archive_is_read_at_its_fixed_offset() {
    let Some(body) = realdata("archive_hourly_temperature_2m_utc-0900_2022-12-29.body.json") else { return };
    let locations = read_reply(&reply(200, body), 1).unwrap();
    let location = &locations[0];
    assert_eq!(location.times_us.len(), 24);
    // local 00:00 at UTC−9 is 09:00 UTC
    assert_eq!(format_minute(location.times_us[0]), "2022-12-29T09:00Z");
    assert_eq!(format_minute(location.times_us[23]), "2022-12-30T08:00Z");
    let values = location.column("temperature_2m", None).unwrap();
    assert_eq!((values[0], values[5], values[23]), (Some(25.2), Some(25.0), Some(24.2)));
    assert_eq!(location.unit("temperature_2m"), Some("°C"));

    // 1953 in Amsterdam, answered at the summer offset of when it was asked: one fixed offset
    let Some(body) = realdata("frenck_historical_weather_trimmed_1953_offset_7200.json") else { return };
    let location = &parse_body(&body).unwrap()[0];
    assert_eq!(format_minute(location.times_us[0]), "1953-01-30T22:00Z");
    assert_eq!(location.column("temperature_2m", None).unwrap(), [Some(5.8), Some(5.5), Some(5.1)]);
}

#[test]
fn real_previous_runs_body_gives_each_lead() {
    let Some(body) = realdata("frenck_previous_runs_trimmed.json") else { return };
    let location = &parse_body(&body).unwrap()[0];
    assert_eq!(location.times_us[0], at("2026-10-02T00:00:00Z"));
    assert_eq!(location.column("temperature_2m_previous_day1", None).unwrap(), [Some(14.2), Some(12.9), Some(12.1)]);
    assert_eq!(location.column("temperature_2m_previous_day2", None).unwrap(), [Some(14.4), Some(14.2), Some(13.4)]);
    let error = location.column("temperature_2m_previous_day3", None).unwrap_err();
    assert!(
        error.contains("temperature_2m_previous_day3") && error.contains("temperature_2m_previous_day1"),
        "{error}"
    );
}

#[test]
fn multi_location_array_is_matched_by_position() {
    let locations = read_reply(&reply(200, fixture("two_locations_previous_runs_gmt.json")), 2).unwrap();
    assert_eq!(locations.len(), 2);
    assert_eq!(locations[0].column("temperature_2m_previous_day1", None).unwrap()[0], Some(20.0));
    assert_eq!(locations[1].column("temperature_2m_previous_day1", None).unwrap()[0], Some(10.0));
    assert_eq!(locations[1].column("temperature_2m_previous_day2", None).unwrap()[3], Some(-0.0));
    // another number of locations than asked is an error naming both
    let error = read_reply(&reply(200, fixture("two_locations_previous_runs_gmt.json")), 3).unwrap_err().to_string();
    assert!(error.contains("2 locations for the 3"), "{error}");
}

#[test]
fn unixtime_and_ghi_units_are_read() {
    let location = &parse_body(&fixture("archive_unixtime_ghi.json")).unwrap()[0];
    assert_eq!(location.times_us[0], at("2024-07-01T00:00:00Z"));
    assert_eq!(location.unit("shortwave_radiation"), Some(Variable::Ghi.unit()));
    assert_eq!(location.column("dew_point_2m", None).unwrap()[2], None);
}

#[test]
fn real_two_model_body_is_read_by_the_model_suffix() {
    let Some(body) = realdata("forecast_two_models_suffixed_keys_weather_code_2023-11-13.body.json") else { return };
    let location = &read_reply(&reply(200, body), 1).unwrap()[0];
    assert_eq!(location.times_us.len(), 168);
    let error = location.column("weather_code", None).unwrap_err();
    assert!(error.contains("weather_code_best_match") && error.contains("ask for one model"), "{error}");
    let gfs = location.column("weather_code", Some("gfs_seamless")).unwrap();
    let best = location.column("weather_code", Some("best_match")).unwrap();
    assert_eq!((gfs.len(), best.len()), (168, 168));
}

#[test]
fn real_all_null_range_and_all_null_hours() {
    // the real all-null body has a `daily` section only: asked for hourly data, that is an error naming it
    let Some(body) = realdata("forecast_start_end_in_past_daily_all_null_utc-0900.body.json") else { return };
    let error = read_reply(&reply(200, body), 1).unwrap_err();
    assert!(!error.is_transient() && error.to_string().contains("no `hourly` section"), "{error}");
    // an hourly body whose every value is null reads as nulls
    let body = br#"{"latitude":-12.5,"longitude":-130.875,"utc_offset_seconds":-32400,"timezone":"Etc/GMT+9","hourly_units":{"time":"iso8601","temperature_2m":"\u00b0C"},"hourly":{"time":["2022-12-29T00:00","2022-12-29T01:00"],"temperature_2m":[null,null]}}"#;
    let location = &parse_body(body).unwrap()[0];
    assert_eq!(location.column("temperature_2m", None).unwrap(), [None, None]);
    assert_eq!(location.times_us[1], at("2022-12-29T10:00:00Z"));
}

#[test]
fn real_nan_body_is_a_bad_response_not_a_crash() {
    let Some(body) = realdata("frenck_satellite_not_covered_nan_not_json.txt") else { return };
    assert!(matches!(parse_body(&body), Err(BodyError::NotJson { truncated: false, .. })));
    let error = read_reply(&reply(200, body), 1).unwrap_err();
    assert!(matches!(error, IngestError::Format { .. }), "{error:?}");
    assert!(error.to_string().contains("not JSON") && error.to_string().contains("nan"), "{error}");
    // a body cut short is retried
    let error = read_reply(&reply(200, br#"{"latitude":52.5,"hourly":{"time":["#.to_vec()), 1).unwrap_err();
    assert!(matches!(error, IngestError::Body { .. }) && error.is_transient(), "{error:?}");
}

#[test]
fn real_400_bodies_show_their_reason_and_are_not_retried() {
    let names = [
        "error_400_invalid_hourly_variable_2023-03.body.json",
        "error_400_invalid_hourly_variable_2023-08_reason_first.body.json",
        "error_400_invalid_hourly_variable_2023-10.body.json",
        "error_400_invalid_temperature_unit_2023-10.body.json",
        "snippets/error_400_end_before_start.transcript.json",
        "snippets/error_400_invalid_date_format.transcript.json",
        "snippets/error_400_latitude_out_of_range.transcript.json",
        "snippets/error_400_start_date_out_of_range_forecast_probe_2026-09-12.transcript.json",
        "snippets/error_400_invalid_model_current.transcript.json",
        "snippets/error_400_invalid_hourly_variable_current.transcript.json",
    ];
    for name in names {
        let Some(body) = realdata(name) else { return };
        let reason = error_reason(&serde_json::from_slice(&body).unwrap()).unwrap();
        let error = read_reply(&reply(400, body), 1).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, IngestError::Http { status: 400, .. }) && !error.is_transient(), "{name}: {error:?}");
        assert!(text.contains(&reason) && text.contains("HTTP 400"), "{name}: {text}");
    }
    // our own: reason before error, in an error body of a 200
    let body = fixture("error_400_reason_only_status.json");
    let error = read_reply(&reply(200, body.clone()), 1).unwrap_err();
    assert!(
        matches!(error, IngestError::Api { .. }) && error.to_string().contains("out of allowed range"),
        "{error:?}"
    );
    // a 404 without a JSON body shows the body
    let error = read_reply(&reply(404, b"Not Found".to_vec()), 1).unwrap_err();
    assert!(error.to_string().contains("Not Found") && !error.is_transient(), "{error}");
}

#[test]
fn real_429_bodies_name_their_limit() {
    let cases = [
        ("snippets/error_429_minutely.transcript.json", Limit::Minutely),
        ("snippets/error_429_hourly.transcript.json", Limit::Hourly),
        ("snippets/error_429_daily.transcript.json", Limit::Daily),
        ("snippets/error_429_too_many_concurrent_requests.transcript.json", Limit::Other),
    ];
    for (name, limit) in cases {
        let Some(body) = realdata(name) else { return };
        let reason = error_reason(&serde_json::from_slice(&body).unwrap()).unwrap();
        assert_eq!(classify_429(&reason), limit, "{name}");
        let error = read_reply(&reply(429, body), 1).unwrap_err();
        match limit {
            Limit::Minutely => {
                assert!(error.is_transient(), "{error}");
                let wait = error.retry_after().unwrap();
                assert!(wait > Duration::ZERO && wait <= Duration::from_secs(61), "{wait:?}");
            }
            Limit::Hourly | Limit::Daily => {
                assert!(matches!(error, IngestError::LimitReached { .. }) && !error.is_transient(), "{error:?}");
                assert!(error.to_string().contains("run the same command again"), "{error}");
            }
            Limit::Other => assert!(error.is_transient() && error.retry_after().is_none(), "{error:?}"),
        }
    }
    let Some(body) = realdata("snippets/error_503_service_overloaded.transcript.json") else { return };
    let error = read_reply(&reply(503, body), 1).unwrap_err();
    assert!(error.is_transient() && error.to_string().contains("overloaded"), "{error}");
}

#[test]
fn the_minute_boundary_wait() {
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    assert_eq!(until_next_minute(t("2024-01-01T00:00:59.5Z")), Duration::from_millis(1500));
    assert_eq!(until_next_minute(t("2024-01-01T00:00:00Z")), Duration::from_secs(61));
}

#[test]
fn bodies_of_the_wrong_shape_are_named() {
    let cases: [(&[u8], &str); 5] = [
        (br#"{"hourly":{"time":["2024-01-01T00:00"],"temperature_2m":[1.0,2.0]}}"#, "2 values for 1 times"),
        (br#"{"hourly":{"time":["2024-01-01T00:30"],"temperature_2m":[1.0]}}"#, "whole UTC hour"),
        (br#"{"hourly":{"time":["yesterday"],"temperature_2m":[1.0]}}"#, "yesterday"),
        (br#"{"hourly":{"time":["2024-01-01T00:00"],"temperature_2m":["warm"]}}"#, "not a number"),
        (br#"[1, 2]"#, "location 1"),
    ];
    for (body, why) in cases {
        let error = read_reply(&reply(200, body.to_vec()), 1).unwrap_err();
        assert!(matches!(error, IngestError::Format { .. }), "{why}: {error:?}");
        assert!(error.to_string().contains(why), "{why}: {error}");
    }
}

#[tokio::test(start_paused = true)]
async fn weighted_calls_keep_every_window_within_its_limit() {
    // the free Open-Meteo API's limits; calls of one year of three locations (7.8 calls each)
    let limiter = crate::ingest::http::RateLimiter::new(RateLimits::weighted(600, 5000, 10_000));
    let start = tokio::time::Instant::now();
    let mut starts = Vec::new();
    for _ in 0..400 {
        limiter.acquire_weighted(7.8).await;
        starts.push(start.elapsed());
    }
    // the burst is a tenth of a minute's allowance: 7 calls of 7.8 fit in 60
    assert_eq!(starts[6], Duration::ZERO);
    assert!(starts[7] > Duration::ZERO);
    for (window, limit) in [(60, 600.0), (3600, 5000.0), (86_400, 10_000.0)] {
        for (i, t) in starts.iter().enumerate() {
            let within = starts[i..].iter().take_while(|u| **u < *t + Duration::from_secs(window)).count();
            assert!(within as f64 * 7.8 <= limit, "{within} calls in the {window} s from {t:?}");
        }
    }
    // 400 × 7.8 = 3,120 weighted calls need more than half an hour under the hourly limit
    assert!(starts[399] > Duration::from_secs(1800), "{:?}", starts[399]);
    // a weight of 1 counts one call
    let limiter = crate::ingest::http::RateLimiter::new(RateLimits::weighted(10, 1000, 1000));
    let start = tokio::time::Instant::now();
    for _ in 0..10 {
        limiter.acquire_weighted(1.0).await;
    }
    assert!(start.elapsed() >= Duration::from_secs(48), "{:?}", start.elapsed());
}
