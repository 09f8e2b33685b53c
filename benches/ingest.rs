//! Ingestion throughput: synthetic generation, store writes (new and replacing) and reads.
//! `cargo bench --bench ingest`; figures are rows per second (criterion "elements").
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use energy::config::SyntheticConfig;
use energy::ingest::{Source, Store, SyntheticSource};
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

fn bench(c: &mut Criterion) {
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

criterion_group!(benches, bench);
criterion_main!(benches);
