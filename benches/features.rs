//! Featurization and windowing throughput on a year of synthetic data (one region, with
//! temperature). `cargo bench --bench features`; figures are rows/s and windows/s.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use energy::config::SyntheticConfig;
use energy::features::{self, FeatureConfig, Protocol, Scaler, WindowSpec};
use energy::ingest::{SeriesId, Source, Store, SyntheticSource};
use energy::time::DateRange;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let source = SyntheticSource::new(&["SYN1".into()], SyntheticConfig::default());
    let range = DateRange::from_days(
        chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2024, 12, 31).unwrap(),
    )
    .unwrap();
    let batch = futures::executor::block_on(source.fetch(range)).unwrap();
    store.write_range(&batch.series, range).unwrap();
    let load = SeriesId::new("synthetic", "SYN1", "D");
    let temp = SeriesId::new("synthetic", "SYN1", "TEMP");
    let config = FeatureConfig::default();

    let mut group = c.benchmark_group("features");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(8)).sample_size(10);
    group.throughput(Throughput::Elements(range.hours() as u64));
    group.bench_function("build_table_1_region_year", |b| {
        b.iter(|| features::build(&store, &load, std::slice::from_ref(&temp), Some(range), &config).unwrap())
    });

    let table = features::build(&store, &load, &[temp], Some(range), &config).unwrap();
    let scaler = Scaler::fit_table(&table, 0..table.len() * 7 / 10).unwrap();
    let spec = WindowSpec { context: 168, horizon: 24, stride: 1, protocol: Protocol::Next24h };
    let count = features::make_windows(&table, &scaler, &spec, 0..table.len()).unwrap().count;
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("windows_168_24_stride_1_year", |b| {
        b.iter(|| features::make_windows(&table, &scaler, &spec, 0..table.len()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
