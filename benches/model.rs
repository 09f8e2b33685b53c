//! Model throughput: training and inference sequences/s of the default forecaster (positions
//! 168 + 24, d_model 64, 2 layers, 4 heads, batch 32), and blockwise/ring attention against
//! MLX's fused attention by length. `cargo bench --bench model`.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use energy::config::ModelConfig;
use energy::model::attention::{blockwise_attention, ring_attention};
use energy::model::train::{self, TrainConfig, TrainData};
use energy::model::transformer::{Forecaster, ForecasterConfig};
use energy::report::NoReporter;
use mlx_rs::{random, transforms::eval};
use std::time::Duration;

const FEATURES: usize = 22;
const BATCH: usize = 32;

fn data(count: usize, positions: usize, horizon: usize) -> (Vec<f32>, Vec<f32>) {
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let inputs = (0..count * positions * FEATURES).map(|_| next()).collect();
    let targets = (0..count * horizon).map(|_| next()).collect();
    (inputs, targets)
}

fn bench(c: &mut Criterion) {
    let model_config = ModelConfig::default();
    let config = ForecasterConfig::from_model_config(&model_config, FEATURES);
    let (inputs, targets) = data(BATCH * 4, config.positions, config.horizon);
    let mut group = c.benchmark_group("model");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(20)).sample_size(10);

    group.throughput(Throughput::Elements((BATCH * 4) as u64));
    group.bench_function("train_epoch_128_windows", |b| {
        let mut model = Forecaster::with_seed(&config, 1).unwrap();
        let train_config =
            TrainConfig { epochs: 1, warmup_steps: 1, ..TrainConfig::from_model_config(&model_config, 1) };
        let windows = TrainData { inputs: &inputs, targets: &targets, count: BATCH * 4 };
        let none = TrainData { inputs: &[], targets: &[], count: 0 };
        b.iter(|| train::train(&mut model, &train_config, &windows, &none, &config.quantiles, &NoReporter).unwrap())
    });
    group.bench_function("predict_128_windows", |b| {
        let mut model = Forecaster::with_seed(&config, 1).unwrap();
        b.iter(|| train::predict(&mut model, &inputs, BATCH * 4, config.positions, FEATURES, 64).unwrap())
    });

    for length in [512, 1024, 2048] {
        random::seed(3).unwrap();
        let shape = [1, 4, length, 16];
        let q = random::normal::<f32>(&shape, None, None, None).unwrap();
        let k = random::normal::<f32>(&shape, None, None, None).unwrap();
        let v = random::normal::<f32>(&shape, None, None, None).unwrap();
        eval([&q, &k, &v]).unwrap();
        group.throughput(Throughput::Elements(length as u64));
        group.bench_with_input(BenchmarkId::new("attention_fused", length), &length, |b, _| {
            b.iter(|| {
                let o = mlx_rs::fast::scaled_dot_product_attention(&q, &k, &v, 0.25, None, None).unwrap();
                o.eval().unwrap();
            })
        });
        group.bench_with_input(BenchmarkId::new("attention_blockwise_64", length), &length, |b, _| {
            b.iter(|| blockwise_attention(&q, &k, &v, 64, false).unwrap().eval().unwrap())
        });
        group.bench_with_input(BenchmarkId::new("attention_ring_4_shards", length), &length, |b, _| {
            b.iter(|| ring_attention(&q, &k, &v, 4, 64, false).unwrap().eval().unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
