//! Model throughput: training and inference sequences/s of the default forecaster (d_model 64,
//! 2 layers, 4 heads, batch 32, horizon 24) at context 168 (the main job) and 336, and
//! blockwise/ring attention against MLX's fused attention by length (512, 2048, 8192) and
//! block size. `cargo bench --bench model`.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use energy::config::ModelConfig;
use energy::model::attention::{blockwise_attention, ring_attention};
use energy::model::train::{self, TrainConfig, TrainData};
use energy::model::transformer::{Forecaster, ForecasterConfig};
use energy::report::NoReporter;
use energy::rng::SplitMix64;
use mlx_rs::{random, transforms::eval};
use std::time::Duration;

const FEATURES: usize = 22;
const BATCH: usize = 32;

fn data(count: usize, positions: usize, horizon: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(12345);
    let mut next = || (rng.next_f64() - 0.5) as f32;
    let inputs = (0..count * positions * FEATURES).map(|_| next()).collect();
    let targets = (0..count * horizon).map(|_| next()).collect();
    (inputs, targets)
}

fn bench(c: &mut Criterion) {
    // MLX's evaluation order as the `energy` binary sets it (the batch's parts side by side)
    // SAFETY: before any MLX evaluation and before criterion or this bench starts a thread.
    unsafe { energy::model::streams::widen_scheduling() };
    let mut group = c.benchmark_group("model");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(20)).sample_size(10);
    // the main job's model (context 168) and the yardstick (context 336), horizon 24
    for context in [168, 336] {
        let model_config = ModelConfig { context, ..ModelConfig::default() };
        let config = ForecasterConfig::from_model_config(&model_config, FEATURES);
        let (inputs, targets) = data(BATCH * 4, config.positions, config.horizon);
        group.throughput(Throughput::Elements((BATCH * 4) as u64));
        group.bench_function(format!("train_epoch_128_windows_context_{context}"), |b| {
            let mut model = Forecaster::with_seed(&config, 1).unwrap();
            let train_config =
                TrainConfig { epochs: 1, warmup_steps: 1, ..TrainConfig::from_model_config(&model_config, 1) };
            let windows = TrainData { inputs: &inputs, targets: &targets, count: BATCH * 4 };
            let none = TrainData { inputs: &[], targets: &[], count: 0 };
            b.iter(|| train::train(&mut model, &train_config, &windows, &none, &config.quantiles, &NoReporter).unwrap())
        });
        group.bench_function(format!("predict_128_windows_context_{context}"), |b| {
            let mut model = Forecaster::with_seed(&config, 1).unwrap();
            b.iter(|| train::predict(&mut model, &inputs, BATCH * 4, config.positions, FEATURES, 64).unwrap())
        });
    }
    group.finish();

    // attention alone: batch 1, 4 heads, head dim 16, not causal
    let mut group = c.benchmark_group("attention");
    group.noise_threshold(0.20).measurement_time(Duration::from_secs(10)).sample_size(10);
    for length in [512, 2048, 8192] {
        random::seed(3).unwrap();
        let shape = [1, 4, length, 16];
        let q = random::normal::<f32>(&shape, None, None, None).unwrap();
        let k = random::normal::<f32>(&shape, None, None, None).unwrap();
        let v = random::normal::<f32>(&shape, None, None, None).unwrap();
        eval([&q, &k, &v]).unwrap();
        group.throughput(Throughput::Elements(length as u64));
        group.bench_with_input(BenchmarkId::new("fused", length), &length, |b, _| {
            b.iter(|| {
                let o = mlx_rs::fast::scaled_dot_product_attention(&q, &k, &v, 0.25, None, None).unwrap();
                o.eval().unwrap();
            })
        });
        for block in [64, 256, 1024] {
            if block == 64 && length > 2048 {
                continue; // 16,384 block pairs: op overhead only, minutes per sample
            }
            group.bench_with_input(BenchmarkId::new(format!("blockwise_{block}"), length), &length, |b, _| {
                b.iter(|| blockwise_attention(&q, &k, &v, block, false).unwrap().eval().unwrap())
            });
        }
        group.bench_with_input(BenchmarkId::new("ring_4_shards_block_256", length), &length, |b, _| {
            b.iter(|| ring_attention(&q, &k, &v, 4, 256, false).unwrap().eval().unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
