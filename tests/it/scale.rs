//! The store at the size of the whole EIA-930 history: a generated store of 50,000 month files
//! (400 series × 125 months, 2015-07 to 2025-11) and 10,000 ledger entries, on which the real
//! binary's `status`, `status --grid` (gap ranges), an incremental `collect` with nothing new, an incremental `collect` of one
//! new month, and `features` for one series are timed. An ignored figure test (it writes
//! 50,000 files): run it with
//! `cargo test --test it scale -- --ignored --nocapture`.
//! `ENERGY_SCALE_SERIES` and `ENERGY_SCALE_LEDGER_SERIES` change the sizes (series, and series
//! of them in the ledger; 125 months each).
use super::cli::energy;
use chrono::{TimeZone, Utc};
use energy::ingest::eia::fake::{LocalEiaServer, ServerConfig};
use energy::ingest::store::LedgerEntry;
use energy::ingest::{SeriesId, SeriesRows, Store};
use energy::time::{DateRange, HOUR_US};
use std::path::Path;
use std::time::Instant;

const KINDS: [&str; 4] = ["D", "DF", "NG", "TI"];
const KEY: &str = "scaleKEY0123456789abcdefghijklmnopqrstuv";

fn size(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The respondent of series `index` (4 kinds each): `R001`, `R002`, …
fn respondent(index: usize) -> String {
    format!("R{:03}", index / KINDS.len() + 1)
}

fn series(index: usize) -> SeriesId {
    SeriesId::new("eia", respondent(index), KINDS[index % KINDS.len()])
}

/// 2015-07 to 2025-11 as month ranges: `(2015-06-30T23, 2025-11-30T23]`.
fn history() -> DateRange {
    let start = Utc.with_ymd_and_hms(2015, 6, 30, 23, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2025, 11, 30, 23, 0, 0).unwrap();
    DateRange::new(start, end).unwrap()
}

/// Whether the generated store misses the hour ending at `t` of series `index`: every `TI`
/// series misses 10:00 UTC on 10 March of each year (one month file in twelve with a hole).
fn missing(index: usize, t: i64) -> bool {
    use chrono::{Datelike, Timelike};
    let time = energy::time::from_us(t);
    KINDS[index % KINDS.len()] == "TI" && time.month() == 3 && time.day() == 10 && time.hour() == 10
}

/// Write `series` series of full history and a ledger entry per month for the first
/// `ledger_series` of them.
fn generate(store: &Store, series_count: usize, ledger_series: usize) {
    let _lock = store.lock().unwrap();
    let range = history();
    for index in 0..series_count {
        let id = series(index);
        let mut rows = SeriesRows::new(id);
        for t in range.hour_ends_us() {
            if missing(index, t) {
                continue;
            }
            rows.timestamps.push(t);
            // a daily cycle, a null now and then
            let hour = (t / HOUR_US) % 24;
            rows.values.push((t / HOUR_US % 997 != 0).then_some(1000.0 + 10.0 * hour as f64 + index as f64));
        }
        store.write_range(&[rows], range).unwrap();
    }
    let entries = ledger_entries(ledger_series);
    store.record(&entries).unwrap();
}

/// The ledger entries of `series` series × the history's months.
fn ledger_entries(series_count: usize) -> Vec<LedgerEntry> {
    let range = history();
    let fetched_at = Utc.with_ymd_and_hms(2025, 12, 2, 0, 0, 0).unwrap();
    (0..series_count)
        .flat_map(|index| {
            range.month_chunks().into_iter().map(move |month| LedgerEntry {
                series: series(index),
                params: String::new(),
                range: month,
                rows: month.hours() as usize,
                checksum: 0,
                fetched_at,
                settled: true,
            })
        })
        .collect()
}

fn catalog_bytes(root: &Path) -> u64 {
    std::fs::read_dir(root.join("_catalog"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ledger"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn timed(what: &str, command: &mut assert_cmd::Command) -> serde_json::Value {
    let started = Instant::now();
    let out = command.assert().success();
    let seconds = started.elapsed().as_secs_f64();
    println!("figure: {what}: {seconds:.2} s");
    serde_json::from_slice(&out.get_output().stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
#[ignore = "figure: writes a 50,000-file store (minutes); run with --ignored --nocapture"]
fn figure_store_at_scale() {
    let series_count = size("ENERGY_SCALE_SERIES", 400);
    let ledger_series = size("ENERGY_SCALE_LEDGER_SERIES", 80).min(series_count);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let started = Instant::now();
    generate(&store, series_count, ledger_series);
    let months = history().month_chunks().len();
    println!(
        "figure: generated {} files, {} ledger entries in {:.1} s; ledger {} bytes",
        series_count * months,
        ledger_series * months,
        started.elapsed().as_secs_f64(),
        catalog_bytes(dir.path())
    );

    let status = timed("status --json", energy(dir.path()).args(["status", "--json"]));
    let listed = status["series"].as_array().unwrap();
    assert_eq!(listed.len(), series_count);
    assert_eq!(listed[0]["rows"], history().hours());

    // the grid view with every gap range: only the files with a hole inside are read
    let grid = timed("status --grid --json (gap ranges)", energy(dir.path()).args(["status", "--grid", "--json"]));
    let kinds: Vec<&serde_json::Value> =
        grid["grid"].as_array().unwrap().iter().flat_map(|r| r["kinds"].as_array().unwrap()).collect();
    let read: u64 = kinds.iter().map(|k| k["files_read"].as_u64().unwrap()).sum();
    let gaps: usize = kinds.iter().map(|k| k["gaps"].as_array().unwrap().len()).sum();
    let expected: usize = (0..series_count).map(|i| history().hour_ends_us().filter(|t| missing(i, *t)).count()).sum();
    assert_eq!(gaps, expected);
    println!("figure: status --grid read {read} of {} files for holes; {gaps} gaps", kinds.len() * months);
    // the same scan without the DF-vs-D MAPE (which reads D and DF whole): a source the store
    // does not hold lists no region, but every series' footers and gaps are read the same
    timed(
        "status --grid --json of a source without series (footers and gap ranges alone)",
        energy(dir.path()).args(["status", "--grid", "--grid-source", "caiso", "--json"]),
    );

    let server = LocalEiaServer::start(ServerConfig::unthrottled()).unwrap();
    let respondents: Vec<String> = (0..ledger_series).step_by(KINDS.len()).map(respondent).collect();
    let collect = |start: &str, end: &str| {
        let mut command = energy(dir.path());
        command.env("EIA_API_KEY", KEY).args(["collect", "--source", "eia", "--kind", "D,DF,NG,TI"]);
        for r in &respondents {
            command.args(["--region", r]);
        }
        command.args(["--start", start, "--end", end, "--eia-url", &server.url(), "--json"]);
        command
    };
    let nothing = timed("collect with nothing new (full history)", &mut collect("2015-07-01", "2025-11-29"));
    assert_eq!(nothing["fetched_chunks"], 0, "{nothing}");
    assert_eq!(server.stats().requests, 0);

    let month = timed("collect of one new month", &mut collect("2025-12-01", "2025-12-30"));
    assert_eq!(month["fetched_chunks"], 1, "{month}");
    assert_eq!(month["rows"], respondents.len() * KINDS.len() * 30 * 24);
    println!("figure: ledger after: {} bytes", catalog_bytes(dir.path()));

    let out = dir.path().join("features.parquet");
    let features = timed(
        "features for one series (full history)",
        energy(dir.path())
            .args(["features", "--source", "eia", "--region", "R001", "--kind", "D", "--json", "--out"])
            .arg(&out),
    );
    assert!(features["rows"].as_u64().unwrap() >= history().hours() as u64, "{features}");

    let status = timed("status --json after", energy(dir.path()).args(["status", "--json"]));
    assert_eq!(status["series"].as_array().unwrap().len(), series_count);
}

/// What recording one chunk costs on a ledger of 10,000 entries: appending its entries to the
/// log (now) against reading, replacing and rewriting the whole version-1 `ledger.json` (as
/// every chunk did before), 80 entries (one month of 80 series) a chunk, 20 chunks each:
/// `cargo test --test it scale::figure_ledger -- --ignored --nocapture`.
#[test]
#[ignore = "figure: run with --ignored --nocapture"]
fn figure_ledger_append_against_whole_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let _lock = store.lock().unwrap();
    let entries = ledger_entries(80);
    store.record(&entries).unwrap();
    let chunks = 20;
    let mut writer = store.ledger_writer(store.read_ledger().unwrap()).unwrap();
    let started = Instant::now();
    for chunk in 0..chunks {
        let mut again: Vec<LedgerEntry> = entries.iter().skip(chunk).step_by(125).cloned().collect();
        again.iter_mut().for_each(|e| e.rows += 1);
        writer.append(&again).unwrap();
    }
    let append = started.elapsed().as_secs_f64() / chunks as f64;
    assert_eq!(store.ledger().unwrap().len(), entries.len());

    // version 1: read, parse, replace, sort, serialize and rewrite atomically, per chunk
    let v1 = dir.path().join("_catalog/ledger-v1.json");
    let document = |entries: &[LedgerEntry]| serde_json::json!({ "version": "1", "entries": entries });
    std::fs::write(&v1, serde_json::to_vec_pretty(&document(&entries)).unwrap()).unwrap();
    let started = Instant::now();
    for chunk in 0..chunks {
        let again: Vec<LedgerEntry> = entries.iter().skip(chunk).step_by(125).cloned().collect();
        let bytes = std::fs::read(&v1).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut all: Vec<LedgerEntry> = serde_json::from_value(value["entries"].clone()).unwrap();
        all.retain(|old| !again.iter().any(|new| new.series == old.series && new.range == old.range));
        all.extend(again);
        all.sort_by(|a, b| (&a.series, a.range).cmp(&(&b.series, b.range)));
        energy::ingest::store::write_atomic(&v1, &serde_json::to_vec_pretty(&document(&all)).unwrap()).unwrap();
    }
    let rewrite = started.elapsed().as_secs_f64() / chunks as f64;
    println!(
        "figure: recording a chunk of 80 entries on a 10,000-entry ledger: append {:.1} ms, whole rewrite (version 1) {:.1} ms; \
         over a full history of 125 chunks: {:.1} s against {:.1} s",
        append * 1e3,
        rewrite * 1e3,
        append * 125.0,
        rewrite * 125.0
    );
}

/// The full history (2015-07 to 2025-11) of every EIA respondent's D, DF, NG and TI (65
/// respondents, `ENERGY_FULL_RESPONDENTS` to change) through the local fake API at the real
/// API's limits (5 requests/s, 9,000/hour, no added latency), by the real binary into an empty
/// store; then `status` and a collection with nothing new on the store it made:
/// `cargo test --test it scale::figure_full -- --ignored --nocapture` (about 20 minutes).
#[test]
#[ignore = "figure: 24 million rows at the API's rate limits (about 20 minutes)"]
fn figure_full_history_through_the_rate_limited_server() {
    let count = size("ENERGY_FULL_RESPONDENTS", 65);
    let respondents: Vec<String> = (0..count * KINDS.len()).step_by(KINDS.len()).map(respondent).collect();
    let server = LocalEiaServer::start(ServerConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collect = || {
        let mut command = energy(dir.path());
        command.env("EIA_API_KEY", KEY).args(["collect", "--source", "eia", "--kind", "D,DF,NG,TI", "-q"]);
        for r in &respondents {
            command.args(["--region", r]);
        }
        command.args(["--start", "2015-07-01", "--end", "2025-11-30", "--eia-url", &server.url(), "--json"]);
        command
    };
    let report = timed("full history collection", &mut collect());
    let rows = report["rows"].as_f64().unwrap();
    let requests = report["requests"].as_f64().unwrap();
    let seconds = report["duration_s"].as_f64().unwrap();
    let stats = server.stats();
    assert_eq!(report["failed_chunks"], 0, "{}", report["chunks"]);
    assert_eq!(rows as i64, count as i64 * 4 * history().hours());
    let ceiling = f64::from(energy::ingest::eia::REQUESTS_PER_SECOND) * energy::ingest::eia::PAGE_ROWS as f64;
    let sustained = f64::from(energy::ingest::eia::REQUESTS_PER_HOUR) / 3600.0;
    println!(
        "figure: {count} respondents × D, DF, NG, TI, 2015-07..2025-11: {rows} rows, {requests} requests \
         ({} seen by the server, {} answered 429), {seconds:.1} s, {:.0} rows/s = {:.1} % of the API ceiling \
         ({ceiling} rows/s at 5 requests/s); the real API: at least {:.0} s at 5 requests/s{}",
        stats.requests,
        stats.rejected,
        rows / seconds,
        rows / seconds / ceiling * 100.0,
        requests / f64::from(energy::ingest::eia::REQUESTS_PER_SECOND),
        if requests > f64::from(energy::ingest::eia::REQUESTS_PER_HOUR) {
            format!(", {:.0} s at its sustained 9,000 requests/hour", requests / sustained)
        } else {
            " (within the 9,000/hour budget)".to_string()
        }
    );
    println!("figure: ledger {} bytes", catalog_bytes(dir.path()));
    let status = timed("status --json on the full history", energy(dir.path()).args(["status", "--json"]));
    assert_eq!(status["series"].as_array().unwrap().len(), count * KINDS.len());
    let again = timed("collect with nothing new on the full history", &mut collect());
    assert_eq!(again["fetched_chunks"], 0);
}
