//! Fault injection under the real binary: a local HTTP/1.1 server (tokio, written by hand, since
//! a mock framework cannot reset a connection or hold one past the client's timeout) serves
//! EIA-shaped JSON pages or CAISO-shaped zips, and fails about 30 % of the requests at random
//! with 429 (`Retry-After: 0`), 500, 503, connection resets, timeouts, truncated bodies (a
//! `Content-Length` longer than what is sent, or a body cut mid-JSON) and HTML pages served with
//! 200, or fails chosen chunks every time.
//!
//! Which requests fail is decided by a seeded hash of the request and how many times it was
//! asked before, so a run fails the same requests whatever the order they arrive in. Faults only
//! hit a request's first three attempts, so a budget of four attempts (or enough chunk retries)
//! must finish. The only waits are the client's timeout, configured to its least (1 s).
use super::cli::energy;
use super::common::*;
use super::eia::value_at as eia_value;
use energy::ingest::orchestrator::plan;
use energy::ingest::{SeriesId, Store};
use energy::time::{DateRange, HOUR_US, from_us};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "faultKEY0123456789abcdefghijklmnopqrstu";

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    /// 429 with `Retry-After: 0`.
    TooMany,
    /// 500 with an HTML page.
    Internal,
    /// 503 with an HTML page.
    Unavailable,
    /// The connection is reset (RST) once the request is read.
    Reset,
    /// No reply: the connection is held until the client gives up.
    Timeout,
    /// The good body's first half with the whole body's `Content-Length`, then the connection closes.
    ShortBody,
    /// The good body cut in the middle, with a `Content-Length` that matches the cut.
    CutBody,
    /// An HTML error page served with 200.
    Html,
}

use Fault::*;

/// Every fault: all are transient for EIA (an unreadable body is retried).
const EIA_FAULTS: [Fault; 8] = [TooMany, Internal, Unavailable, Reset, Timeout, ShortBody, CutBody, Html];
/// The faults CAISO retries: a body that is not a zip (a cut zip, an HTML page) is not retried.
const CAISO_TRANSIENT: [Fault; 6] = [TooMany, Internal, Unavailable, Reset, Timeout, ShortBody];
/// Attempts of one request that may fail at random; later ones never do.
const FAULTY_ATTEMPTS: u32 = 3;

/// Which requests fail.
#[derive(Clone, Default)]
struct Plan {
    seed: u64,
    /// Share of the first [`FAULTY_ATTEMPTS`] attempts of every request that fails, in percent.
    percent: u64,
    /// The faults used at random, in turn.
    faults: Vec<Fault>,
    /// A request whose query has this parameter with this value always fails so.
    always: Vec<(&'static str, String, Fault)>,
}

impl Plan {
    fn healthy() -> Self {
        Self::default()
    }

    fn random(seed: u64, percent: u64, faults: &[Fault]) -> Self {
        Self { seed, percent, faults: faults.to_vec(), always: Vec::new() }
    }
}

/// One request the server answered.
#[derive(Debug, Clone)]
struct Served {
    target: String,
    fault: Option<Fault>,
}

impl Served {
    fn param(&self, name: &str) -> Option<String> {
        url_of(&self.target).query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

struct State {
    plan: Plan,
    attempts: HashMap<String, u32>,
    random_faults: usize,
    served: Vec<Served>,
}

impl State {
    /// The fault for the next attempt of `target`, if any.
    fn decide(&mut self, target: &str) -> Option<Fault> {
        let attempt = {
            let n = self.attempts.entry(target.to_string()).or_default();
            *n += 1;
            *n
        };
        let url = url_of(target);
        let always =
            self.plan.always.iter().find(|(name, value, _)| url.query_pairs().any(|(k, v)| k == *name && v == *value));
        let fault = match always {
            Some((_, _, fault)) => Some(*fault),
            None if attempt <= FAULTY_ATTEMPTS
                && !self.plan.faults.is_empty()
                && mix(self.plan.seed, target, attempt) % 100 < self.plan.percent =>
            {
                // the kinds in turn: every kind is served once enough requests fail
                let fault = self.plan.faults[self.random_faults % self.plan.faults.len()];
                self.random_faults += 1;
                Some(fault)
            }
            None => None,
        };
        self.served.push(Served { target: target.to_string(), fault });
        fault
    }
}

/// A seeded hash of a request and its attempt (FNV-1a, then splitmix64).
fn mix(seed: u64, target: &str, attempt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(attempt).rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn url_of(target: &str) -> reqwest::Url {
    reqwest::Url::parse(&format!("http://fault.test{target}")).unwrap()
}

/// The good reply to a request: content type and body.
type Good = Arc<dyn Fn(&reqwest::Url) -> (&'static str, Vec<u8>) + Send + Sync>;

/// The server: its own runtime, so that the test thread only runs the binary.
struct FaultServer {
    _runtime: tokio::runtime::Runtime,
    url: String,
    state: Arc<Mutex<State>>,
}

impl FaultServer {
    fn start(plan: Plan, good: Good) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state =
            Arc::new(Mutex::new(State { plan, attempts: HashMap::new(), random_faults: 0, served: Vec::new() }));
        let shared = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (state, good) = (shared.clone(), good.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, state, good).await;
                });
            }
        });
        Self { _runtime: runtime, url, state }
    }

    fn served(&self) -> Vec<Served> {
        self.state.lock().unwrap().served.clone()
    }

    /// Requests served with each fault.
    fn fault_counts(&self) -> BTreeMap<Fault, usize> {
        let mut counts = BTreeMap::new();
        for fault in self.served().iter().filter_map(|s| s.fault) {
            *counts.entry(fault).or_default() += 1;
        }
        counts
    }
}

const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>\n<body><h1>Service Temporarily Unavailable</h1><p>The server is down for maintenance.</p></body></html>\n";

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, good: Good) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let fault = state.lock().unwrap().decide(&target);
    let reply = |status: &str, content_type: &str, length: usize, extra: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}Connection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let mut out = Vec::new();
    match fault {
        None => {
            let (content_type, body) = good(&url_of(&target));
            out.extend(reply("200 OK", content_type, body.len(), ""));
            out.extend(body);
        }
        Some(TooMany) => {
            let body = b"Too Many Requests";
            out.extend(reply("429 Too Many Requests", "text/plain", body.len(), "Retry-After: 0\r\n"));
            out.extend(body);
        }
        Some(Internal) => {
            let body = "<html><body><h1>500 Internal Server Error</h1></body></html>";
            out.extend(reply("500 Internal Server Error", "text/html", body.len(), ""));
            out.extend(body.as_bytes());
        }
        Some(Unavailable) => {
            out.extend(reply("503 Service Unavailable", "text/html", HTML_PAGE.len(), ""));
            out.extend(HTML_PAGE.as_bytes());
        }
        Some(Html) => {
            out.extend(reply("200 OK", "text/html; charset=UTF-8", HTML_PAGE.len(), ""));
            out.extend(HTML_PAGE.as_bytes());
        }
        Some(ShortBody) => {
            let (content_type, body) = good(&url_of(&target));
            out.extend(reply("200 OK", content_type, body.len(), ""));
            out.extend(&body[..body.len() / 2]);
        }
        Some(CutBody) => {
            let (content_type, body) = good(&url_of(&target));
            out.extend(reply("200 OK", content_type, body.len() / 2, ""));
            out.extend(&body[..body.len() / 2]);
        }
        Some(Reset) => {
            stream.set_zero_linger()?;
            drop(stream);
            return Ok(());
        }
        Some(Timeout) => {
            // hold the connection, answering nothing, until the client gives up and closes it
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            return Ok(());
        }
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// The fake EIA server's page (`total` and `value` as strings, the paging warning, the request
/// echoed with its key) for every asked hour, respondent and type.
fn eia_page(url: &reqwest::Url) -> (&'static str, Vec<u8>) {
    ("application/json", super::eia::page_body(url, false, 0).into_bytes())
}

const CAISO_HEADER: &str = "INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,LOAD_TYPE,OPR_DT,OPR_HR,OPR_INTERVAL,MARKET_RUN_ID,TAC_AREA_NAME,LABEL,XML_DATA_ITEM,POS,MW,EXECUTION_TYPE,GROUP";

/// The value the CAISO server gives an area and item at an hour's end.
fn caiso_value(t_us: i64, area: &str, item: &str) -> f64 {
    let salt: u32 = area.bytes().chain(item.bytes()).map(u32::from).sum();
    20_000.0 + ((t_us / HOUR_US) % 24) as f64 * 250.5 + f64::from(salt % 1000)
}

/// An OASIS `SLD_FCST` reply: a zip holding one CSV with an hourly row per area for every hour
/// starting in `[startdatetime, enddatetime)`, of the asked run (rows of another area too, which
/// the reader drops).
fn caiso_zip(url: &reqwest::Url) -> (&'static str, Vec<u8>) {
    let get = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default();
    let time = |text: &str| chrono::DateTime::parse_from_str(text, "%Y%m%dT%H:%M%z").unwrap().timestamp_micros();
    let (start, end) = (time(&get("startdatetime")), time(&get("enddatetime")));
    let run = get("market_run_id");
    let item = match run.as_str() {
        "ACTUAL" => "SYS_FCST_ACT_MW",
        "DAM" => "SYS_FCST_DA_MW",
        "2DA" => "SYS_FCST_2DA_MW",
        "7DA" => "SYS_FCST_7DA_MW",
        other => panic!("the fault server serves no run `{other}`"),
    };
    let gmt = |us: i64| energy::time::format_gmt(us);
    let mut csv = String::from(CAISO_HEADER);
    let mut t = start;
    while t < end {
        for area in ["CA ISO-TAC", "PGE-TAC"] {
            csv.push_str(&format!(
                "\n{},{},0,{},{},0,{run},{area},Total Actual Hourly Integrated Load,{item},3.4,{},{run},1",
                gmt(t),
                gmt(t + HOUR_US),
                from_us(t - 8 * HOUR_US).format("%Y-%m-%d"),
                (t / HOUR_US + 16) % 24 + 1,
                caiso_value(t + HOUR_US, area, item)
            ));
        }
        t += HOUR_US;
    }
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    writer.start_file(format!("{}_SLD_FCST_{run}_v1.csv", get("startdatetime").replace(':', "")), options).unwrap();
    writer.write_all(csv.as_bytes()).unwrap();
    ("application/x-zip-compressed", writer.finish().unwrap().into_inner())
}

fn eia_server(plan: Plan) -> FaultServer {
    FaultServer::start(plan, Arc::new(eia_page))
}

fn caiso_server(plan: Plan) -> FaultServer {
    FaultServer::start(plan, Arc::new(caiso_zip))
}

/// A config file: the client's least timeout, no rate limit to speak of, and the budget given.
fn config(dir: &Path, name: &str, attempts: u32, chunk_retries: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[retry]\nmax_attempts = {attempts}\nbase_delay_ms = 1\nmax_delay_ms = 20\ntimeout_s = 1\n\
             [collect]\nchunk_retries = {chunk_retries}\n\
             [eia]\nrequests_per_second = 1000\nrequests_per_hour = 1000000\n\
             [caiso]\nmin_interval_s = 0\n"
        ),
    )
    .unwrap();
    path
}

/// Twelve series (four respondents × demand, day-ahead forecast and solar) over 2023: twelve
/// month chunks of three requests each (two region-data pages and one fuel-type page), and the
/// chunk of the year's last hour (it ends at 2024-01-01T00, in January 2024).
const EIA_ARGS: [&str; 15] = [
    "collect",
    "--source",
    "eia",
    "--region",
    "CISO",
    "--region",
    "ERCO",
    "--region",
    "PJM",
    "--region",
    "MISO",
    "--kind",
    "D,DF,fuel:SUN",
    "--start",
    "2023-01-01",
];
const EIA_END: [&str; 2] = ["--end", "2023-12-31"];

/// Actual load and the day-ahead forecast of the CAISO system over 2023: chunks of 30 days on
/// the grid from the epoch, two requests each.
const CAISO_ARGS: [&str; 9] =
    ["collect", "--source", "caiso", "--kind", "ACTUAL,DAM", "--start", "2023-01-01", "--end", "2023-12-31"];

fn year_2023() -> DateRange {
    DateRange::from_days("2023-01-01".parse().unwrap(), "2023-12-31".parse().unwrap()).unwrap()
}

/// Run a collection; returns (exit code, stdout, stderr).
fn collect(store: &Path, config: &Path, args: &[&str], url_flag: &str, url: &str) -> (i32, String, String) {
    let out = energy(store)
        .env("EIA_API_KEY", KEY)
        .arg("--config")
        .arg(config)
        .args(args)
        .args([url_flag, url])
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(temp_files(&path));
        } else if path.to_string_lossy().contains(".tmp-") {
            out.push(path);
        }
    }
    out
}

/// Every series of `got` holds each hour once, and `got` equals `want`: series, rows, values and
/// ledger (collection times aside); no temporary file is left.
fn assert_same_store(got: &Path, want: &Path) {
    let (got_store, want_store) = (Store::new(got), Store::new(want));
    let series = want_store.list_series().unwrap();
    assert!(!series.is_empty());
    assert_eq!(got_store.list_series().unwrap(), series);
    for id in &series {
        let rows = got_store.read(id, None).unwrap();
        assert!(rows.timestamps.windows(2).all(|w| w[0] < w[1]), "{id}: a duplicate or unsorted timestamp");
        assert_eq!(rows, want_store.read(id, None).unwrap(), "{id}");
    }
    assert_eq!(ledger(&got_store), ledger(&want_store));
    assert!(temp_files(got).is_empty(), "temporary files left: {:?}", temp_files(got));
}

/// The share of requests that failed, and each fault served at least once.
fn assert_fault_mix(server: &FaultServer, kinds: &[Fault]) {
    let served = server.served();
    let counts = server.fault_counts();
    let failed: usize = counts.values().sum();
    let share = failed as f64 / served.len() as f64;
    eprintln!("{failed} of {} requests failed: {counts:?}", served.len());
    assert!((0.15..=0.45).contains(&share), "{failed} of {} requests failed: {counts:?}", served.len());
    for kind in kinds {
        assert!(counts.get(kind).is_some_and(|n| *n > 0), "{kind:?} was never served: {counts:?}");
    }
}

#[test]
fn eia_collection_completes_through_random_faults_with_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, faulty) = (dir.path().join("clean"), dir.path().join("faulty"));
    // four attempts a request: one more than faults may take
    let config = config(dir.path(), "energy.toml", FAULTY_ATTEMPTS + 1, 0);
    let args: Vec<&str> = EIA_ARGS.iter().chain(&EIA_END).copied().chain(["--json"]).collect();

    let healthy = eia_server(Plan::healthy());
    let (code, _, stderr) = collect(&clean, &config, &args, "--eia-url", &healthy.url);
    assert_eq!(code, 0, "{stderr}");

    let server = eia_server(Plan::random(7, 30, &EIA_FAULTS));
    let (code, stdout, stderr) = collect(&faulty, &config, &args, "--eia-url", &server.url);
    assert_eq!(code, 0, "{stderr}");
    assert_fault_mix(&server, &EIA_FAULTS);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let hours = year_2023().hours() as u64;
    assert_eq!(report["failed_chunks"], 0, "{report}");
    assert_eq!(report["fetched_chunks"].as_u64(), Some(eia_chunks().len() as u64), "{report}");
    assert_eq!(report["rows"].as_u64(), Some(12 * hours), "every row once");
    let failed = server.served().iter().filter(|s| s.fault.is_some()).count() as u64;
    assert_eq!(report["retries"].as_u64(), Some(failed), "each failed request retried once: {report}");
    assert_eq!(healthy.served().len() + failed as usize, server.served().len());

    assert_same_store(&faulty, &clean);
    // and the values are the server's
    let rows = Store::new(&faulty).read(&SeriesId::new("eia", "ERCO", "FUEL_SUN"), None).unwrap();
    assert_eq!(rows.len() as u64, hours);
    for (t, v) in rows.timestamps.iter().zip(&rows.values) {
        assert_eq!(*v, Some(eia_value(*t, "ERCO", "SUN")));
    }
    // the key never reached an output or a file
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
}

/// The chunks of an EIA collection of 2023: its months, and the last hour's.
fn eia_chunks() -> Vec<DateRange> {
    let chunks = plan(year_2023(), chrono::TimeDelta::days(31));
    assert_eq!(chunks.len(), 13);
    chunks
}

/// The `start` an EIA request of a chunk asks for (the hour after the chunk's start).
fn eia_start(chunk: &DateRange) -> String {
    (chunk.start + chrono::TimeDelta::hours(1)).format("%Y-%m-%dT%H").to_string()
}

/// The chunks of 2023 that always fail (March, July, October, December) and how.
fn eia_failing_chunks() -> Vec<(DateRange, Fault)> {
    let chunks = eia_chunks();
    vec![(chunks[2], Reset), (chunks[6], Unavailable), (chunks[9], Html), (chunks[11], Timeout)]
}

/// The ranges of the `failed …` lines of a collection's summary.
fn failed_lines(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  failed "))
        .map(|l| {
            let (range, error) = l.split_once(": ").unwrap();
            (range.to_string(), error.to_string())
        })
        .collect()
}

/// The store's rows equal `want`'s outside `missing` ranges, and it holds none inside them;
/// the ledger is `want`'s without the missing chunks.
fn assert_all_but(got: &Path, want: &Path, missing: &[DateRange]) {
    let (got_store, want_store) = (Store::new(got), Store::new(want));
    let outside = |t: &i64| !missing.iter().any(|r| r.holds_us(*t));
    for id in want_store.list_series().unwrap() {
        let rows = got_store.read(&id, None).unwrap();
        assert!(rows.timestamps.windows(2).all(|w| w[0] < w[1]), "{id}");
        assert!(rows.timestamps.iter().all(outside), "{id}: rows of a failed chunk were stored");
        let want_rows = want_store.read(&id, None).unwrap();
        let kept: Vec<(i64, Option<f64>)> = want_rows
            .timestamps
            .iter()
            .zip(&want_rows.values)
            .filter(|(t, _)| outside(t))
            .map(|(t, v)| (*t, *v))
            .collect();
        let got_rows: Vec<(i64, Option<f64>)> =
            rows.timestamps.iter().copied().zip(rows.values.iter().copied()).collect();
        assert_eq!(got_rows, kept, "{id}: the other chunks are intact");
    }
    let mut expected = ledger(&want_store);
    expected.retain(|e| !missing.contains(&e.2));
    assert_eq!(ledger(&got_store), expected);
    assert!(temp_files(got).is_empty());
}

#[test]
fn eia_chunks_that_keep_failing_are_named_exit_2_and_a_rerun_finishes_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, store) = (dir.path().join("clean"), dir.path().join("store"));
    let args: Vec<&str> = EIA_ARGS.iter().chain(&EIA_END).copied().collect();
    let json: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let healthy = eia_server(Plan::healthy());
    let roomy = config(dir.path(), "roomy.toml", 4, 0);
    assert_eq!(collect(&clean, &roomy, &json, "--eia-url", &healthy.url).0, 0);

    // a tiny budget (two attempts, no chunk retry) and four chunks that always fail
    let failing = eia_failing_chunks();
    let mut plan = Plan::healthy();
    for (chunk, fault) in &failing {
        plan.always.push(("start", eia_start(chunk), *fault));
    }
    let tiny = config(dir.path(), "tiny.toml", 2, 0);
    let server = eia_server(plan.clone());
    let (code, stdout, stderr) = collect(&store, &tiny, &args, "--eia-url", &server.url);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors, ["error: 4 of 13 chunks failed; run the same command again to finish them"], "{stderr}");
    let failed = failed_lines(&stdout);
    let expected: Vec<String> = failing.iter().map(|(c, _)| c.to_string()).collect();
    assert_eq!(failed.keys().cloned().collect::<Vec<_>>(), expected, "{stdout}");
    for ((chunk, fault), why) in
        [(&failing[0], "request to"), (&failing[1], "HTTP 503"), (&failing[2], "text/html"), (&failing[3], "timed out")]
    {
        let error = &failed[&chunk.to_string()];
        assert!(error.contains(why), "{fault:?} chunk {chunk}: {error}");
        assert!(!error.contains(KEY), "{error}");
    }
    let missing: Vec<DateRange> = failing.iter().map(|(c, _)| *c).collect();
    assert_all_but(&store, &clean, &missing);

    // the re-run against a healthy server asks only for the failed chunks
    let healthy_again = eia_server(Plan::healthy());
    let (code, stdout, stderr) = collect(&store, &tiny, &json, "--eia-url", &healthy_again.url);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((report["fetched_chunks"].as_u64(), report["skipped_chunks"].as_u64()), (Some(4), Some(9)), "{report}");
    let starts: std::collections::BTreeSet<String> =
        healthy_again.served().iter().map(|s| s.param("start").unwrap()).collect();
    let wanted: std::collections::BTreeSet<String> = plan.always.iter().map(|(_, start, _)| start.clone()).collect();
    assert_eq!(starts, wanted, "only the failed chunks are fetched again");
    assert_same_store(&store, &clean);
}

#[test]
fn eia_random_faults_beyond_a_tiny_budget_fail_their_chunks_and_a_rerun_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, store) = (dir.path().join("clean"), dir.path().join("store"));
    let args: Vec<&str> = EIA_ARGS.iter().chain(&EIA_END).copied().chain(["--json"]).collect();
    let healthy = eia_server(Plan::healthy());
    assert_eq!(collect(&clean, &config(dir.path(), "roomy.toml", 4, 0), &args, "--eia-url", &healthy.url).0, 0);

    // one attempt and no chunk retry: a chunk fails when any of its requests does
    let tiny = config(dir.path(), "tiny.toml", 1, 0);
    let server = eia_server(Plan::random(3, 30, &EIA_FAULTS));
    let (code, stdout, stderr) = collect(&store, &tiny, &args, "--eia-url", &server.url);
    assert_eq!(code, 2, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let failed: Vec<DateRange> = report["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["error"].is_null())
        .map(|c| serde_json::from_value(c["range"].clone()).unwrap())
        .collect();
    // the failed chunks are exactly those the server failed a request of
    let chunks = eia_chunks();
    let hit: Vec<DateRange> = chunks
        .iter()
        .filter(|c| server.served().iter().any(|s| s.fault.is_some() && s.param("start") == Some(eia_start(c))))
        .copied()
        .collect();
    assert!(!hit.is_empty() && hit.len() < chunks.len(), "the seed fails some chunks, not all: {hit:?}");
    assert_eq!(failed, hit);
    assert_eq!(report["failed_chunks"].as_u64(), Some(hit.len() as u64));
    assert!(stderr.contains(&format!("error: {} of {} chunks failed", hit.len(), chunks.len())), "{stderr}");
    assert_all_but(&store, &clean, &failed);

    let healthy_again = eia_server(Plan::healthy());
    let (code, stdout, stderr) = collect(&store, &tiny, &args, "--eia-url", &healthy_again.url);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["fetched_chunks"].as_u64(), Some(hit.len() as u64), "{report}");
    assert!(healthy_again.served().iter().all(|s| hit.iter().any(|c| s.param("start") == Some(eia_start(c)))));
    assert_same_store(&store, &clean);
}

#[test]
fn caiso_collection_completes_through_random_faults_with_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, faulty) = (dir.path().join("clean"), dir.path().join("faulty"));
    // one attempt a request (CAISO backs off 5 s at least), whole chunks retried at once instead:
    // two requests of three faulty attempts each fail a chunk at most six times
    let config = config(dir.path(), "energy.toml", 1, 2 * FAULTY_ATTEMPTS);
    let args: Vec<&str> = CAISO_ARGS.iter().copied().chain(["--json"]).collect();
    let healthy = caiso_server(Plan::healthy());
    let (code, _, stderr) = collect(&clean, &config, &args, "--caiso-url", &healthy.url);
    assert_eq!(code, 0, "{stderr}");

    let server = caiso_server(Plan::random(5, 30, &CAISO_TRANSIENT));
    let (code, stdout, stderr) = collect(&faulty, &config, &args, "--caiso-url", &server.url);
    assert_eq!(code, 0, "{stderr}");
    assert_fault_mix(&server, &CAISO_TRANSIENT);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let hours = year_2023().hours() as u64;
    assert_eq!(report["failed_chunks"], 0, "{report}");
    assert_eq!(report["rows"].as_u64(), Some(2 * hours), "every row once: {report}");
    let retried: u64 = report["chunks"].as_array().unwrap().iter().map(|c| c["attempts"].as_u64().unwrap() - 1).sum();
    assert!(retried > 0, "{report}");
    assert_same_store(&faulty, &clean);
    let rows = Store::new(&faulty).read(&SeriesId::new("caiso", "CA ISO-TAC", "DAM"), None).unwrap();
    assert_eq!(rows.len() as u64, hours);
    for (t, v) in rows.timestamps.iter().zip(&rows.values) {
        assert_eq!(*v, Some(caiso_value(*t, "CA ISO-TAC", "SYS_FCST_DA_MW")));
    }
}

#[test]
fn caiso_chunks_that_keep_failing_are_named_exit_2_and_a_rerun_finishes_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, store) = (dir.path().join("clean"), dir.path().join("store"));
    let config = config(dir.path(), "energy.toml", 1, 1);
    let args: Vec<&str> = CAISO_ARGS.to_vec();
    let json: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let healthy = caiso_server(Plan::healthy());
    assert_eq!(collect(&clean, &config, &json, "--caiso-url", &healthy.url).0, 0);

    let chunks = plan(year_2023(), chrono::TimeDelta::days(30));
    let n = chunks.len();
    assert!(n >= 13, "{chunks:?}");
    let start_of = |c: &DateRange| c.start.format("%Y%m%dT%H:%M-0000").to_string();
    // an HTML page and a cut zip (not retried), and a 503 past the one chunk retry
    let failing = [(chunks[1], Html), (chunks[5], CutBody), (chunks[n - 1], Unavailable)];
    let mut plan = Plan::healthy();
    for (chunk, fault) in &failing {
        plan.always.push(("startdatetime", start_of(chunk), *fault));
    }
    let server = caiso_server(plan);
    let (code, stdout, stderr) = collect(&store, &config, &args, "--caiso-url", &server.url);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(
        errors,
        [format!("error: 3 of {n} chunks failed; run the same command again to finish them")],
        "{stderr}"
    );
    let failed = failed_lines(&stdout);
    let expected: Vec<String> = failing.iter().map(|(c, _)| c.to_string()).collect();
    assert_eq!(failed.keys().cloned().collect::<Vec<_>>(), expected, "{stdout}");
    for ((chunk, _), why) in failing.iter().zip(["expected a zip", "cannot be opened", "HTTP 503"]) {
        assert!(failed[&chunk.to_string()].contains(why), "{chunk}: {}", failed[&chunk.to_string()]);
    }
    // not retried: one request each; the 503 chunk twice (its one chunk retry)
    let asked = |chunk: &DateRange| {
        server.served().iter().filter(|s| s.param("startdatetime") == Some(start_of(chunk))).count()
    };
    assert_eq!([asked(&failing[0].0), asked(&failing[1].0), asked(&failing[2].0)], [1, 1, 2]);
    let missing: Vec<DateRange> = failing.iter().map(|(c, _)| *c).collect();
    assert_all_but(&store, &clean, &missing);

    let healthy_again = caiso_server(Plan::healthy());
    let (code, stdout, stderr) = collect(&store, &config, &json, "--caiso-url", &healthy_again.url);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (report["fetched_chunks"].as_u64(), report["skipped_chunks"].as_u64()),
        (Some(3), Some(n as u64 - 3)),
        "{report}"
    );
    let asked_again: std::collections::BTreeSet<String> =
        healthy_again.served().iter().map(|s| s.param("startdatetime").unwrap()).collect();
    assert_eq!(asked_again, missing.iter().map(start_of).collect(), "only the failed chunks are fetched again");
    assert_eq!(healthy_again.served().len(), 6, "two runs of each failed chunk");
    assert_same_store(&store, &clean);
}
