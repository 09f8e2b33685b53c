//! Ingestion throughput: EIA page parsing, CAISO zip + CSV parsing, synthetic generation, store
//! writes (new and replacing) and reads. `cargo bench --bench ingest`; figures are rows per
//! second (criterion "elements").
//!
//! The CAISO figure reads the real two-day all-runs zip from `../shared/realdata/caiso` (or
//! `$ENERGY_REALDATA/caiso`) and is skipped with a notice where it is absent.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use energy::config::SyntheticConfig;
use energy::ingest::eia::{Route, fake};
use energy::ingest::http::Reply;
use energy::ingest::{
    CaisoKind, CaisoSource, EiaKind, EiaSource, HttpClient, RateLimits, RetryPolicy, Secret, Source, Store,
    SyntheticSource,
};
use energy::time::DateRange;
use std::time::Duration;

fn month() -> DateRange {
    DateRange::from_days(
        chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2024, 3, 31).unwrap(),
    )
    .unwrap()
    .month_chunks()[0]
}

fn regions(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("SYN{i}")).collect()
}

fn client() -> HttpClient {
    HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap()
}

/// A full 5,000-row region-data page (4 respondents × 4 types, string values, `warnings`), as the
/// fake EIA API (`energy::ingest::eia::fake`, also the server of `energy bench`) serves it.
fn eia(c: &mut Criterion) {
    let respondents: Vec<String> = ["CISO", "ERCO", "PJM", "MISO"].iter().map(|s| s.to_string()).collect();
    let kinds: Vec<EiaKind> = ["D", "DF", "NG", "TI"].iter().map(|k| EiaKind::parse(k).unwrap()).collect();
    let source =
        EiaSource::new("http://127.0.0.1:9/", Secret::new("BENCHKEY"), &respondents, &kinds, client()).unwrap();
    let range = month();
    let url = source.page_url(Route::RegionData, range, 0);
    // the client adds the key when it sends a request
    let query = format!("{}&api_key=BENCHKEY", url.query().unwrap_or_default());
    let (body, _) = fake::answer(url.path(), &query, fake::PageStyle::default()).unwrap();
    let url = url.to_string();
    let reply = Reply::new(200, Some("application/json"), body.into_bytes(), &url);
    let rows = source.read_page(&reply, Route::RegionData, range, 0).unwrap().rows.len();
    assert_eq!(rows, 5000);

    let mut group = c.benchmark_group("ingest");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(8)).sample_size(20);
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("eia_parse_page_5000_rows", |b| {
        b.iter(|| source.read_page(&reply, Route::RegionData, range, 0).unwrap())
    });
    group.finish();
}

fn caiso(c: &mut Criterion) {
    let dir = std::env::var("ENERGY_REALDATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/realdata").to_string());
    let path = std::path::Path::new(&dir).join("caiso/SLD_FCST_allruns_req20231108T00-20231110T00.zip");
    let Ok(body) = std::fs::read(&path) else {
        eprintln!("skipping the CAISO parse bench: {} is absent (set ENERGY_REALDATA)", path.display());
        return;
    };
    let source = CaisoSource::new("http://oasis.test", &[], &[], client()).unwrap();
    let range = DateRange::from_days(
        chrono::NaiveDate::from_ymd_opt(2023, 11, 8).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2023, 11, 9).unwrap(),
    )
    .unwrap();
    let reply = Reply::new(200, Some("application/x-zip-compressed"), body, "http://oasis.test/oasisapi/SingleZip");
    // elements: the CSV's data lines (every run and area), which is what is parsed
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(reply.body.clone())).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut archive.by_index(0).unwrap(), &mut text).unwrap();
    let lines = text.lines().count() - 1;
    let hourly = source.read_reply(&reply, CaisoKind::Actual, range).unwrap()[0].timestamps.len();
    eprintln!("CAISO all-runs zip: {lines} CSV rows, {hourly} ACTUAL hours for CA ISO-TAC");

    let mut group = c.benchmark_group("ingest");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(8)).sample_size(20);
    group.throughput(Throughput::Elements(lines as u64));
    group.bench_function("caiso_parse_allruns_zip_2_days", |b| {
        b.iter(|| source.read_reply(&reply, CaisoKind::Actual, range).unwrap())
    });
    group.finish();
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(8)).sample_size(20);

    let source = SyntheticSource::new(&regions(10), SyntheticConfig::default());
    let range = month();
    let batch = futures::executor::block_on(source.fetch(range)).unwrap();
    let rows = batch.rows() as u64;

    group.throughput(Throughput::Elements(rows));
    group.bench_function("synthetic_generate_10_regions_month", |b| {
        b.iter(|| futures::executor::block_on(source.fetch(range)).unwrap())
    });

    group.bench_function("store_write_new_20_series_month", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let store = Store::new(dir.path());
                store.write_range(&batch.series, range).unwrap();
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });

    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    store.write_range(&batch.series, range).unwrap();
    group.bench_function("store_write_replace_20_series_month", |b| {
        b.iter(|| store.write_range(&batch.series, range).unwrap())
    });

    group.bench_function("store_read_20_series_month", |b| {
        b.iter(|| {
            for series in &batch.series {
                store.read(&series.id, None).unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, eia, caiso, store);
criterion_main!(benches);
