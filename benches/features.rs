//! Featurization and windowing throughput. `cargo bench --bench features`; figures are rows/s
//! and windows/s.
//! - `build_table_1_region_year`: one region's year (with temperature).
//! - `build_tables_10_regions_5_years_{sequential,rayon}`: the yardstick, 10 regions ×
//!   5 years (≈ 438,000 load rows, each with its temperature series), one region after the
//!   other and the regions in parallel on rayon's pool.
//! - windows/s at context 168 and 336, horizon 24, stride 1 over the year.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use energy::config::SyntheticConfig;
use energy::features::{self, FeatureConfig, Protocol, Scaler, WindowSpec};
use energy::ingest::{SeriesId, Source, Store, SyntheticSource};
use energy::time::DateRange;
use rayon::prelude::*;
use std::time::Duration;

fn days(first: (i32, u32, u32), last: (i32, u32, u32)) -> DateRange {
    let day = |(y, m, d): (i32, u32, u32)| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
    DateRange::from_days(day(first), day(last)).unwrap()
}

/// A store holding `regions` synthetic regions (load and temperature) over `range`.
fn store(regions: &[String], range: DateRange) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let source = SyntheticSource::new(regions, SyntheticConfig::default());
    for chunk in range.month_chunks() {
        let batch = futures::executor::block_on(source.fetch(chunk)).unwrap();
        store.write_range(&batch.series, chunk).unwrap();
    }
    (dir, store)
}

fn build(store: &Store, region: &str, range: DateRange, config: &FeatureConfig) -> features::FeatureTable {
    let load = SeriesId::new("synthetic", region, "D");
    let temp = SeriesId::new("synthetic", region, "TEMP");
    features::build(store, &load, &[temp], Some(range), config).unwrap()
}

fn one_region(c: &mut Criterion) {
    let range = days((2024, 1, 1), (2024, 12, 31));
    let (_dir, store) = store(&["SYN1".into()], range);
    let config = FeatureConfig::default();

    let mut group = c.benchmark_group("features");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(8)).sample_size(10);
    group.throughput(Throughput::Elements(range.hours() as u64));
    group.bench_function("build_table_1_region_year", |b| b.iter(|| build(&store, "SYN1", range, &config)));

    let table = build(&store, "SYN1", range, &config);
    let scaler = Scaler::fit_table(&table, 0..table.len() * 7 / 10).unwrap();
    for context in [168, 336] {
        let spec = WindowSpec { context, horizon: 24, stride: 1, protocol: Protocol::Next24h };
        let count = features::make_windows(&table, &scaler, &spec, 0..table.len()).unwrap().count;
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(format!("windows_{context}_24_stride_1_year"), |b| {
            b.iter(|| features::make_windows(&table, &scaler, &spec, 0..table.len()).unwrap())
        });
    }
    group.finish();
}

fn ten_regions(c: &mut Criterion) {
    let range = days((2020, 1, 1), (2024, 12, 30));
    let regions: Vec<String> = (1..=10).map(|i| format!("SYN{i}")).collect();
    let (_dir, store) = store(&regions, range);
    let config = FeatureConfig::default();
    let rows: usize = regions.iter().map(|r| build(&store, r, range, &config).len()).sum();
    eprintln!("10 regions x 5 years: {rows} load rows");

    let mut group = c.benchmark_group("features");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(20)).sample_size(10);
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("build_tables_10_regions_5_years_sequential", |b| {
        b.iter(|| regions.iter().map(|r| build(&store, r, range, &config).len()).sum::<usize>())
    });
    group.bench_function("build_tables_10_regions_5_years_rayon", |b| {
        b.iter(|| regions.par_iter().map(|r| build(&store, r, range, &config).len()).sum::<usize>())
    });
    group.finish();
}

criterion_group!(benches, one_region, ten_regions);
criterion_main!(benches);
