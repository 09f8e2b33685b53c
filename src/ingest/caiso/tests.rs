//! The source's unit tests: kinds, request URLs, retries, and replies read through
//! [`CaisoSource::read_reply`] (real captures where present, synthesized zips otherwise). The
//! helpers are shared with [`super::never_panic`].
use super::oasis::{COL_AREA, Member, read_zip};
use super::*;
use crate::ingest::RateLimits;
use crate::time::{HOUR_US, format_gmt, from_us, parse_timestamp};
use std::io::Write;
use std::path::PathBuf;

pub(super) const URL: &str = "http://oasis.test/oasisapi/SingleZip";
pub(super) const HEADER: &str = "INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,LOAD_TYPE,OPR_DT,OPR_HR,OPR_INTERVAL,MARKET_RUN_ID,TAC_AREA_NAME,LABEL,XML_DATA_ITEM,POS,MW,EXECUTION_TYPE,GROUP";

/// The real captures, or `None` (with a notice) where they are absent.
fn realdata(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("ENERGY_REALDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata"));
    let path = dir.join("caiso").join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            eprintln!("skipping: real data file {} is absent (set ENERGY_REALDATA)", path.display());
            None
        }
    }
}

pub(super) fn zip_of(name: &str, text: &str) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    writer.start_file(name, options).unwrap();
    writer.write_all(text.as_bytes()).unwrap();
    writer.finish().unwrap().into_inner()
}

pub(super) fn error_zip(code: u32, description: &str) -> Vec<u8> {
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><m:OASISReport xmlns:m="http://www.caiso.com/soa/OASISReport_v1.xsd"><m:MessagePayload><m:RTO><m:name>CAISO</m:name><m:ERROR><m:ERR_CODE>{code}</m:ERR_CODE><m:ERR_DESC>{description}</m:ERR_DESC></m:ERROR></m:RTO></m:MessagePayload></m:OASISReport>"#
    );
    zip_of("INVALID_REQUEST.xml", &xml)
}

pub(super) fn source(areas: &[&str], kinds: &[CaisoKind]) -> CaisoSource {
    let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
    let areas: Vec<String> = areas.iter().map(|a| a.to_string()).collect();
    CaisoSource::new("http://oasis.test", &areas, kinds, client).unwrap()
}

pub(super) fn reply(body: Vec<u8>) -> Reply {
    Reply::new(200, Some("application/x-zip-compressed"), body, URL)
}

pub(super) fn at(text: &str) -> i64 {
    parse_timestamp(text).unwrap()
}

pub(super) fn range(start: &str, end: &str) -> DateRange {
    DateRange::new(from_us(at(start)), from_us(at(end))).unwrap()
}

#[test]
fn kinds_parse_with_their_runs() {
    assert_eq!(CaisoKind::parse("actual").unwrap(), CaisoKind::Actual);
    assert_eq!(CaisoKind::parse("2da").unwrap(), CaisoKind::TwoDay);
    assert_eq!(CaisoKind::parse("RTM:RTD").unwrap(), CaisoKind::Rtd);
    let rtpd = CaisoKind::parse("RTPD").unwrap();
    assert_eq!(
        (rtpd.market_run_id(), rtpd.execution_type(), rtpd.data_item()),
        ("RTM", Some("RTPD"), "SYS_FCST_15MIN_MW")
    );
    let error = CaisoKind::parse("HASP").unwrap_err().to_string();
    assert!(error.contains("HASP") && error.contains("ACTUAL"), "{error}");
}

#[test]
fn request_urls_carry_the_run_and_utc_times() {
    let caiso = source(&[], &[]);
    assert_eq!(caiso.areas(), [SYSTEM_AREA]);
    assert_eq!(caiso.kinds(), [CaisoKind::Actual]);
    let window = range("2024-01-01T08:00:00Z", "2024-01-02T08:00:00Z");
    assert_eq!(
        caiso.request_url(CaisoKind::Actual, window).as_str(),
        "http://oasis.test/oasisapi/SingleZip?resultformat=6&queryname=SLD_FCST&version=1&market_run_id=ACTUAL&startdatetime=20240101T08:00-0000&enddatetime=20240102T08:00-0000"
    );
    let url = caiso.request_url(CaisoKind::Rtd, window).to_string();
    assert!(url.contains("market_run_id=RTM&execution_type=RTD&"), "{url}");
    let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
    let prefixed = CaisoSource::new("https://h/proxy/", &[], &[], client.clone()).unwrap();
    assert!(prefixed.request_url(CaisoKind::Dam, window).as_str().starts_with("https://h/proxy/oasisapi/SingleZip?"));
    assert!(CaisoSource::new("oasis.caiso.com", &[], &[], client).is_err());
    assert_eq!(caiso.chunk_len(), TimeDelta::days(30));
}

#[test]
fn retries_wait_at_least_five_seconds() {
    let policy = retry_policy(&RetryPolicy::immediate(4));
    assert_eq!(policy.base_delay, MIN_RETRY_DELAY);
    assert!(policy.max_delay >= 2 * MIN_RETRY_DELAY);
    assert_eq!(policy.max_attempts, 4);
}

#[test]
fn all_runs_zip_filtered_to_actual_for_the_system() {
    let Some(body) = realdata("SLD_FCST_allruns_req20230813T00-20230814T00.zip") else { return };
    let caiso = source(&[SYSTEM_AREA, "PGE-TAC"], &[CaisoKind::Actual]);
    let day = range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z");
    let rows = caiso.read_reply(&reply(body), CaisoKind::Actual, day).unwrap();
    assert_eq!(rows.len(), 2);
    let system = &rows[0];
    assert_eq!(system.len(), 24);
    assert_eq!(system.timestamps.first(), Some(&at("2023-08-13T01:00:00Z")));
    assert_eq!(system.timestamps.last(), Some(&at("2023-08-14T00:00:00Z")));
    assert!(system.timestamps.is_sorted());
    let at_19 = system.timestamps.iter().position(|t| *t == at("2023-08-13T19:00:00Z")).unwrap();
    assert_eq!(system.values[at_19], Some(25729.0));
    assert_eq!(rows[1].len(), 24);
    assert!(rows[1].values[0].unwrap() < system.values[0].unwrap());
}

#[test]
fn rtpd_intervals_become_hourly_means_keyed_by_the_hour_end() {
    let Some(body) = realdata("SLD_FCST_allruns_req20230813T00-20230814T00.zip") else { return };
    let caiso = source(&[SYSTEM_AREA], &[CaisoKind::Rtpd]);
    let day = range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z");
    let rows = caiso.read_reply(&reply(body), CaisoKind::Rtpd, day).unwrap();
    assert_eq!(rows[0].len(), 24);
    assert_eq!(rows[0].timestamps[0], at("2023-08-13T01:00:00Z"));
    let mean = (32013.49 + 32463.2 + 33015.41 + 33386.86) / 4.0;
    assert!((rows[0].values[0].unwrap() - mean).abs() < 1e-6, "{:?}", rows[0].values[0]);
}

#[test]
fn rtd_and_rtpd_with_real_gaps_keep_every_hour() {
    let Some(body) = realdata("SLD_FCST_allruns_req20231108T00-20231110T00.zip") else { return };
    let caiso = source(&[SYSTEM_AREA], &[CaisoKind::Rtpd, CaisoKind::Rtd]);
    let days = range("2023-11-08T00:00:00Z", "2023-11-10T00:00:00Z");
    for kind in [CaisoKind::Rtpd, CaisoKind::Rtd, CaisoKind::Actual] {
        let rows = caiso.read_reply(&reply(body.clone()), kind, days).unwrap();
        assert_eq!(rows[0].len(), 48, "{kind:?}");
        assert!(rows[0].values.iter().all(Option::is_some), "{kind:?}");
    }
}

#[test]
fn seven_day_ahead_file() {
    let Some(body) = realdata("20250219_20250227_SLD_FCST_7DA_20250221_01_09_58_v1.zip") else { return };
    let caiso = source(&[SYSTEM_AREA], &[CaisoKind::SevenDay]);
    let window = range("2025-02-19T08:00:00Z", "2025-02-27T08:00:00Z");
    let rows = caiso.read_reply(&reply(body.clone()), CaisoKind::SevenDay, window).unwrap();
    assert_eq!(rows[0].len(), 192);
    let at_20 = rows[0].timestamps.iter().position(|t| *t == at("2025-02-20T20:00:00Z")).unwrap();
    assert_eq!(rows[0].values[at_20], Some(18919.5));
    // a chunk of it keeps only its hours; another run's item finds nothing
    let day = range("2025-02-20T00:00:00Z", "2025-02-21T00:00:00Z");
    assert_eq!(caiso.read_reply(&reply(body.clone()), CaisoKind::SevenDay, day).unwrap()[0].len(), 24);
    assert!(caiso.read_reply(&reply(body), CaisoKind::Actual, window).unwrap()[0].is_empty());
}

#[test]
fn columns_are_read_by_header_name() {
    let Some(body) = realdata("20250204_20250211_SLD_REN_FCST_DAM_20250214_04_52_10_v1.zip") else { return };
    // SLD_REN_FCST has no TAC_AREA_NAME: the error names the missing column
    let caiso = source(&[SYSTEM_AREA], &[CaisoKind::Dam]);
    let window = range("2025-02-04T00:00:00Z", "2025-02-12T00:00:00Z");
    let error = caiso.read_reply(&reply(body.clone()), CaisoKind::Dam, window).unwrap_err().to_string();
    assert!(error.contains("TAC_AREA_NAME"), "{error}");
    // its own columns, in their own order, are found by name
    let Member::Csv(text) = read_zip(&reply(body)).unwrap() else { panic!("expected a CSV") };
    let renamed = text.replacen("TRADING_HUB", COL_AREA, 1);
    let table = parse_csv(&renamed).unwrap();
    let rows = table.hourly(&["NP15"], "RENEW_FCST_DA_MW", window).unwrap();
    assert!(!rows[0].is_empty());
    // 2025-02-04T19:00 NP15 has solar and wind rows: their mean
    assert!(rows[0].timestamps.contains(&at("2025-02-04T19:00:00Z")));
}

/// `SLD_REN_FCST` from the real DAM zip: wind and solar by trading hub, in its own column
/// order, each hour of the 7 operating days (2025-02-04 to 2025-02-10 Pacific) once.
#[test]
fn wind_and_solar_by_trading_hub_from_the_real_zip() {
    let Some(body) = realdata("20250204_20250211_SLD_REN_FCST_DAM_20250214_04_52_10_v1.zip") else { return };
    let hubs = ["NP15", "SP15", "ZP26"];
    let caiso = source(&hubs, &[CaisoKind::WindDam, CaisoKind::SolarDam]);
    let window = range("2025-02-04T00:00:00Z", "2025-02-12T00:00:00Z");
    let wind = caiso.read_reply(&reply(body.clone()), CaisoKind::WindDam, window).unwrap();
    let solar = caiso.read_reply(&reply(body.clone()), CaisoKind::SolarDam, window).unwrap();
    for rows in wind.iter().chain(&solar) {
        assert_eq!(rows.len(), 168);
        assert!(rows.timestamps.windows(2).all(|w| w[1] - w[0] == HOUR_US), "hourly, sorted");
    }
    // the rows of 19:00–20:00 UTC on 2025-02-04 at NP15, stored at the interval's end
    let at_20 =
        |rows: &SeriesRows| rows.values[rows.timestamps.iter().position(|t| *t == at("2025-02-04T20:00:00Z")).unwrap()];
    assert_eq!(at_20(&wind[0]), Some(982.16));
    assert_eq!(solar[0].timestamps[0], at("2025-02-04T09:00:00Z"), "the first operating hour ends 01:00 Pacific");
    // the request asks SLD_REN_FCST with the DAM run; the series are named after hub and kind
    let url = caiso.request_url(CaisoKind::WindDam, window).to_string();
    assert!(url.contains("queryname=SLD_REN_FCST") && url.contains("market_run_id=DAM"), "{url}");
    let names: Vec<String> = caiso.series().iter().map(ToString::to_string).collect();
    assert_eq!(names[..2], ["caiso:NP15:WIND_DAM", "caiso:NP15:SOLAR_DAM"]);
    // the same reply has no row of actual output
    assert!(caiso.read_reply(&reply(body), CaisoKind::WindActual, window).unwrap()[0].is_empty());
}

/// `WIND_ACTUAL`/`SOLAR_ACTUAL`: no real capture holds the ACTUAL run, so the real DAM zip is
/// rewritten as that run (`RENEW_FCST_ACT_MW`, market `ACTUAL`): the actuals read the hours and
/// values the DAM rows had, and the DAM kinds find nothing in it.
#[test]
fn wind_and_solar_actuals_read_from_the_real_zip_rewritten_as_the_actual_run() {
    let Some(body) = realdata("20250204_20250211_SLD_REN_FCST_DAM_20250214_04_52_10_v1.zip") else { return };
    let Member::Csv(text) = read_zip(&reply(body.clone())).unwrap() else { panic!("expected a CSV") };
    let rewritten = text.replace(",RENEW_FCST_DA_MW,", ",RENEW_FCST_ACT_MW,").replace(",DAM,", ",ACTUAL,");
    assert_ne!(rewritten, text);
    let actual = zip_of("20250204_20250211_SLD_REN_FCST_ACTUAL_v1.csv", &rewritten);
    let hubs = ["NP15", "SP15", "ZP26"];
    let kinds = [CaisoKind::WindDam, CaisoKind::SolarDam, CaisoKind::WindActual, CaisoKind::SolarActual];
    let caiso = source(&hubs, &kinds);
    let window = range("2025-02-04T00:00:00Z", "2025-02-12T00:00:00Z");
    let read = |body: &[u8], kind| caiso.read_reply(&reply(body.to_vec()), kind, window).unwrap();
    for (dam, actual_kind) in
        [(CaisoKind::WindDam, CaisoKind::WindActual), (CaisoKind::SolarDam, CaisoKind::SolarActual)]
    {
        let expected = read(&body, dam);
        let got = read(&actual, actual_kind);
        assert_eq!(got.len(), hubs.len());
        for (got, expected) in got.iter().zip(&expected) {
            assert_eq!((got.len(), &got.timestamps, &got.values), (168, &expected.timestamps, &expected.values));
        }
        assert!(read(&actual, dam).iter().all(SeriesRows::is_empty), "{dam:?} reads no ACTUAL row");
    }
    let url = caiso.request_url(CaisoKind::SolarActual, window).to_string();
    assert!(url.contains("queryname=SLD_REN_FCST") && url.contains("market_run_id=ACTUAL"), "{url}");
}

/// Columns are found by name in any order (no real capture needed).
#[test]
fn a_shuffled_header_is_read_by_name() {
    let csv = "MW,XML_DATA_ITEM,TAC_AREA_NAME,INTERVALENDTIME_GMT,INTERVALSTARTTIME_GMT\n\
               10,SYS_FCST_ACT_MW,CA ISO-TAC,2023-08-13T02:00:00-00:00,2023-08-13T01:00:00-00:00\n\
               20,SYS_FCST_ACT_MW,CA ISO-TAC,2023-08-13T01:00:00-00:00,2023-08-13T00:00:00-00:00\n";
    let rows = parse_csv(csv)
        .unwrap()
        .hourly(&[SYSTEM_AREA], "SYS_FCST_ACT_MW", range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z"))
        .unwrap();
    assert_eq!(rows[0].values, vec![Some(20.0), Some(10.0)]);
}

#[test]
fn real_error_1000_is_an_empty_result() {
    let Some(body) = realdata("SLD_FCST_error1000_nodata_req20231212.zip") else { return };
    let caiso = source(&[SYSTEM_AREA], &[]);
    let day = range("2023-12-12T00:00:00Z", "2023-12-13T00:00:00Z");
    let rows = caiso.read_reply(&reply(body), CaisoKind::Actual, day).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].is_empty());
}

#[test]
fn xml_error_codes() {
    let caiso = source(&[], &[]);
    let day = range("2023-12-12T00:00:00Z", "2023-12-13T00:00:00Z");
    assert!(caiso.read_reply(&reply(error_zip(1000, "No data")), CaisoKind::Actual, day).unwrap()[0].is_empty());
    let busy = caiso
        .read_reply(&reply(error_zip(1015, "Processing, submit again later")), CaisoKind::Actual, day)
        .unwrap_err();
    assert!(busy.is_transient(), "{busy}");
    let hard =
        caiso.read_reply(&reply(error_zip(1004, "Request exceeds 31 days")), CaisoKind::Actual, day).unwrap_err();
    assert!(!hard.is_transient());
    let text = hard.to_string();
    assert!(text.contains("1004") && text.contains("Request exceeds 31 days"), "{text}");
    assert_eq!(
        parse_report("<a><ERR_CODE> 1010 </ERR_CODE><ERR_DESC>System Error</ERR_DESC></a>"),
        Some((1010, "System Error".into()))
    );
    assert_eq!(parse_report("<a><b>1</b></a>"), None);
    let error = caiso.read_reply(&reply(zip_of("x.xml", "<m:OASISReport/>")), CaisoKind::Actual, day).unwrap_err();
    assert!(error.to_string().contains("without ERR_CODE"), "{error}");
}

/// `Content-Disposition: …INVALID_REQUEST.xml.zip` marks a refused request whatever the body holds.
#[test]
fn invalid_request_disposition_is_read() {
    let caiso = source(&[], &[]);
    let day = range("2023-12-12T00:00:00Z", "2023-12-13T00:00:00Z");
    let header = "inline; filename=INVALID_REQUEST.xml.zip;";
    let marked = |body: Vec<u8>| reply(body).with_content_disposition(header);
    // the report's own code still decides (1000 is an empty result, others are hard errors)
    assert!(caiso.read_reply(&marked(error_zip(1000, "No data")), CaisoKind::Actual, day).unwrap()[0].is_empty());
    let hard = caiso.read_reply(&marked(error_zip(1002, "Bad date format")), CaisoKind::Actual, day).unwrap_err();
    assert!(hard.to_string().contains("1002") && !hard.is_transient(), "{hard}");
    // a report without a code, a CSV or a body that is not a zip: refused, naming the header
    for body in [
        zip_of("INVALID_REQUEST.xml", "<m:OASISReport/>"),
        zip_of("a.csv", HEADER),
        b"<html>Bad Request</html>".to_vec(),
    ] {
        let error = caiso.read_reply(&marked(body), CaisoKind::Actual, day).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("refused the request") && text.contains("INVALID_REQUEST.xml.zip"), "{text}");
        assert!(!error.is_transient());
    }
    // the same CSV without the header is data
    assert!(caiso.read_reply(&reply(zip_of("a.csv", HEADER)), CaisoKind::Actual, day).is_ok());
}

#[test]
fn broken_bodies_get_clear_errors() {
    let caiso = source(&[], &[]);
    let day = range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z");
    let read = |reply: Reply| caiso.read_reply(&reply, CaisoKind::Actual, day).unwrap_err();
    let html = read(Reply::new(200, Some("text/html"), "<html><body>Service Unavailable</body></html>", URL));
    let text = html.to_string();
    assert!(
        text.contains("expected a zip") && text.contains("text/html") && text.contains("Service Unavailable"),
        "{text}"
    );
    assert!(!html.is_transient());
    // an empty archive: just the end-of-central-directory record
    let empty = zip::ZipWriter::new(std::io::Cursor::new(Vec::new())).finish().unwrap().into_inner();
    assert!(read(reply(empty)).to_string().contains("holds no file"));
    // a corrupt member: flip bytes inside the compressed data
    let mut corrupt = zip_of("a.csv", &format!("{HEADER}\n{}", "2023-08-13T00:00:00-00:00,2023-08-13T01:00:00-00:00,0,2023-08-12,18,0,ACTUAL,CA ISO-TAC,Total Actual Hourly Integrated Load,SYS_FCST_ACT_MW,3.4,31000,ACTUAL,1\n".repeat(50)));
    for byte in &mut corrupt[60..90] {
        *byte ^= 0x5a;
    }
    let text = read(reply(corrupt)).to_string();
    assert!(text.contains("corrupt") || text.contains("cannot"), "{text}");
    // a truncated zip
    let whole = zip_of("a.csv", HEADER);
    assert!(read(reply(whole[..whole.len() / 2].to_vec())).to_string().contains("cannot be opened"));
    // a failed status stays a status error (429 retried)
    let busy = read(Reply::new(429, Some("text/html"), "slow down", URL));
    assert!(busy.is_transient());
    assert!(!read(Reply::new(404, Some("text/html"), "nope", URL)).is_transient());
    // bad fields name the line
    let bad = zip_of(
        "a.csv",
        &format!(
            "{HEADER}\n2023-08-13T00:00:00-00:00,2023-08-13T01:00:00-00:00,0,2023-08-12,18,0,ACTUAL,CA ISO-TAC,L,SYS_FCST_ACT_MW,3.4,lots,ACTUAL,1\n"
        ),
    );
    assert!(read(reply(bad)).to_string().contains("line 2"));
}

/// OASIS local hours of DST days (23 and 25 of them) map to distinct UTC hours.
#[test]
fn dst_days_keep_23_and_25_distinct_utc_hours() {
    let mut csv = String::from(HEADER);
    // fall back: 2023-11-05 Pacific runs 07:00Z to 08:00Z next day (25 hours, OPR_HR 1-25)
    for (k, hour) in (0..25).zip(1..) {
        let start = at("2023-11-05T07:00:00Z") + k * HOUR_US;
        csv.push_str(&format!(
            "\n{},{},0,2023-11-05,{hour},0,ACTUAL,CA ISO-TAC,L,SYS_FCST_ACT_MW,3.4,{},ACTUAL,1",
            format_gmt(start),
            format_gmt(start + HOUR_US),
            20000 + k
        ));
    }
    // spring forward: 2024-03-10 Pacific runs 08:00Z to 07:00Z next day (23 hours)
    for (k, hour) in (0..23).zip(1..) {
        let start = at("2024-03-10T08:00:00Z") + k * HOUR_US;
        csv.push_str(&format!(
            "\n{},{},0,2024-03-10,{hour},0,ACTUAL,CA ISO-TAC,L,SYS_FCST_ACT_MW,3.4,{},ACTUAL,1",
            format_gmt(start),
            format_gmt(start + HOUR_US),
            30000 + k
        ));
    }
    let caiso = source(&[], &[]);
    let fall = caiso
        .read_reply(
            &reply(zip_of("f.csv", &csv)),
            CaisoKind::Actual,
            range("2023-11-05T07:00:00Z", "2023-11-06T08:00:00Z"),
        )
        .unwrap();
    assert_eq!(fall[0].len(), 25);
    assert_eq!(fall[0].values.iter().flatten().count(), 25);
    let spring = caiso
        .read_reply(
            &reply(zip_of("s.csv", &csv)),
            CaisoKind::Actual,
            range("2024-03-10T08:00:00Z", "2024-03-11T07:00:00Z"),
        )
        .unwrap();
    assert_eq!(spring[0].len(), 23);
    let mut all = fall[0].timestamps.clone();
    all.extend(&spring[0].timestamps);
    let count = all.len();
    all.dedup();
    assert_eq!(all.len(), count);
}
