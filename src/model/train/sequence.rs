//! Sequence-parallel training: every rank takes every window of a batch but only its shard of
//! the positions ([`shard_bounds`](crate::model::distributed::shard_bounds)); attention runs
//! across the ranks on the ring ([`Forecaster::forward_shard`]). A rank's loss is its horizon
//! positions' part of the batch's mean pinball loss, so the ranks' losses and gradients summed
//! (one all_sum, as in data parallelism) are the whole batch's.
use crate::model::distributed::{DataParallel, DistributedError};
use crate::model::transformer::{Forecaster, mean_member_loss};
use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, transforms};

/// This rank's positions of every window and the horizon steps among them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SequenceShard {
    /// Positions `[start, end)` of the window.
    rows: (i32, i32),
    /// Horizon steps `[start, end)` (target columns) among `rows`; empty in the context.
    targets: (i32, i32),
    /// `horizon steps held / horizon`: this rank's share of the mean over the horizon.
    weight: f32,
}

impl SequenceShard {
    pub(super) fn new(rows: (i32, i32), positions: i32, horizon: i32) -> Self {
        let first = positions - horizon;
        let start = rows.0.max(first);
        let targets = if start < rows.1 { (start - first, rows.1 - first) } else { (0, 0) };
        Self { rows, targets, weight: (targets.1 - targets.0) as f32 / horizon.max(1) as f32 }
    }

    /// This rank's part of the batch's mean pinball loss (see the module documentation).
    ///
    /// # Shapes
    /// `inputs`: [batch, positions, n_features] (the whole windows), `targets`: [batch, horizon]
    pub(super) fn loss(
        &self,
        model: &mut Forecaster,
        inputs: &Array,
        targets: &Array,
        quantiles: &[f32],
    ) -> Result<Array, Exception> {
        let (start, end) = self.rows;
        let (forecasts, hidden) = model.forward_shard(&inputs.try_index((.., start..end, ..))?, self.rows)?;
        // Weight zero, but in the graph: the backward pass of every layer's attention is a
        // collective that this rank must join even when none of its positions is forecast.
        let joined = hidden.multiply(Array::from_f32(0.0))?;
        if forecasts.is_empty() {
            return Ok(joined);
        }
        let (first, last) = self.targets;
        let mine = targets.try_index((.., first..last))?;
        mean_member_loss(&forecasts, &mine, quantiles)?.multiply(Array::from_f32(self.weight))?.add(&joined)
    }

    /// The batch's mean pinball loss without gradients: this rank's part, summed over the
    /// ranks.
    pub(super) fn evaluate(
        &self,
        model: &mut Forecaster,
        parallel: &DataParallel,
        inputs: &Array,
        targets: &Array,
        quantiles: &[f32],
    ) -> Result<f32, DistributedError> {
        let local = self.loss(model, inputs, targets, quantiles)?;
        transforms::eval([&local])?;
        let summed = parallel.group().all_sum(&local)?;
        parallel.watchdog().guard("the validation loss all_sum", || transforms::eval([&summed]))?;
        Ok(summed.item_exact::<f32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::distributed::{Backend, Group, Watchdog, test_ranks};
    use crate::model::train::{TrainConfig, TrainData, train, train_on_ranks};
    use crate::model::transformer::ForecasterConfig;
    use crate::model::transformer::tests::tiny_config;
    use crate::report::NoReporter;
    use crate::rng::SplitMix64;
    use mlx_rs::module::ModuleParameters;
    use mlx_rs::ops;
    use std::time::Duration;

    const WORKER: &str = "model::train::sequence::tests::rank_worker";
    const WORKER_MEMORY: &str = "model::train::sequence::tests::memory_worker";
    const TOLERANCE: f32 = 1e-5;

    /// 37 positions (ragged shards on 2 and 4 ranks), the last 12 forecast (on one rank of 2,
    /// on two of 4), attention blocks of 4 rows inside each shard.
    fn config() -> ForecasterConfig {
        ForecasterConfig { n_features: 3, positions: 37, horizon: 12, ..tiny_config() }
    }

    fn random_values(count: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..count).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect()
    }

    /// A rank of [`sequence_parallel_training_equals_one_process`]: trains 3 epochs of 3
    /// steps with the ranks splitting the sequence, and the same in this process alone, and
    /// compares every epoch's losses and the final weights.
    #[test]
    #[ignore = "a rank started by sequence_parallel_training_equals_one_process"]
    fn rank_worker() -> Result<(), DistributedError> {
        if !test_ranks::is_worker() {
            return Ok(());
        }
        let watchdog = Watchdog::new(Duration::from_secs(60));
        let parallel = DataParallel::splitting_sequence(Group::init(Backend::Ring, true, watchdog)?, watchdog);
        let config = config();
        let (count, validation_count) = (20, 6);
        let window = config.positions * config.n_features;
        let inputs = random_values((count + validation_count) * window, 1);
        let targets = random_values((count + validation_count) * config.horizon, 2);
        let (train_inputs, validation_inputs) = inputs.split_at(count * window);
        let (train_targets, validation_targets) = targets.split_at(count * config.horizon);
        let train_data = TrainData { inputs: train_inputs, targets: train_targets, count };
        let validation = TrainData { inputs: validation_inputs, targets: validation_targets, count: validation_count };
        let settings = TrainConfig {
            epochs: 3,
            batch_size: 8,
            learning_rate: 3e-3,
            weight_decay: 0.01,
            warmup_steps: 2,
            clip_norm: 1.0,
            patience: 0,
            seed: 5,
        };
        let quantiles = config.quantiles.clone();

        let mut alone = Forecaster::with_seed(&config, 11)?;
        let expected = train(&mut alone, &settings, &train_data, &validation, &quantiles, &NoReporter)?;
        let mut split = Forecaster::with_seed(&config, 11)?;
        let report = train_on_ranks(
            &mut split,
            &settings,
            &train_data,
            &validation,
            &quantiles,
            &NoReporter,
            None,
            Some(&parallel),
        )
        .map_err(|e| DistributedError::Invalid(e.to_string()))?;

        let mut worst_loss = 0.0f32;
        for (mine, wanted) in report.epochs.iter().zip(&expected.epochs) {
            worst_loss = worst_loss
                .max((mine.train_loss - wanted.train_loss).abs())
                .max((mine.validation_loss - wanted.validation_loss).abs());
        }
        let wanted_weights = alone.parameters().flatten();
        let mut worst_weight = 0.0f32;
        for (key, value) in split.parameters().flatten() {
            let mut difference = value.subtract(wanted_weights[&key])?.abs()?;
            if key.ends_with("attention.qkv.bias") {
                // The key bias adds the same amount to every score of a query row, which the
                // softmax ignores: its true gradient is 0, and AdamW turns the rounding noise
                // in its place (different for a ring) into steps of about the learning rate.
                // Queries' and values' biases are compared.
                let d_model = config.d_model as i32;
                difference =
                    ops::concatenate(&[difference.try_index(..d_model)?, difference.try_index(2 * d_model..)?], 0)?;
            }
            worst_weight = worst_weight.max(difference.max(None)?.item_exact::<f32>());
        }
        assert_eq!(report.epochs.len(), expected.epochs.len());
        assert!(
            worst_loss < TOLERANCE && worst_weight < TOLERANCE,
            "rank {}: |Δ loss| {worst_loss:e}, |Δ weight| {worst_weight:e}",
            parallel.group().rank()
        );
        println!("{} loss {worst_loss:e} weight {worst_weight:e}", test_ranks::RESULT);
        Ok(())
    }

    /// The context lengths of [`sequence_memory_figures`]: `ENERGY_BENCH_LENGTHS` (comma
    /// separated), default 512,1024,2048.
    fn figure_lengths() -> Vec<usize> {
        std::env::var("ENERGY_BENCH_LENGTHS")
            .unwrap_or_else(|_| "512,1024,2048".into())
            .split(',')
            .map(|length| length.trim().parse().expect("ENERGY_BENCH_LENGTHS: comma-separated lengths"))
            .collect()
    }

    /// A rank of [`sequence_memory_figures`]: for each context length, one training step of
    /// the default model (d_model 64, 4 heads, 2 layers, 12 features, 24-hour horizon,
    /// attention blocks of 128) on a batch of 32 windows, this rank holding its shard of the
    /// positions; prints `(positions, peak MB, seconds)` per length.
    #[test]
    #[ignore = "a rank started by sequence_memory_figures"]
    fn memory_worker() -> Result<(), DistributedError> {
        if !test_ranks::is_worker() {
            return Ok(());
        }
        let watchdog = Watchdog::new(Duration::from_secs(1200));
        let parallel = DataParallel::splitting_sequence(Group::init(Backend::Ring, true, watchdog)?, watchdog);
        println!("{} {:?}", test_ranks::RESULT, memory_rows(&parallel)?);
        Ok(())
    }

    /// `(positions, peak MB, seconds)` of one training step per length (see [`memory_worker`]).
    fn memory_rows(parallel: &DataParallel) -> Result<Vec<(usize, u64, f64)>, DistributedError> {
        let mut rows = Vec::new();
        for context in figure_lengths() {
            let config = ForecasterConfig {
                n_features: 12,
                positions: context + 24,
                horizon: 24,
                d_model: 64,
                n_heads: 4,
                n_layers: 2,
                mlp_ratio: 4,
                block_size: 128,
                ..tiny_config()
            };
            let count = 32;
            let inputs = random_values(count * config.positions * config.n_features, 3);
            let targets = random_values(count * config.horizon, 4);
            let data = TrainData { inputs: &inputs, targets: &targets, count };
            let none = TrainData { inputs: &[], targets: &[], count: 0 };
            let settings = TrainConfig {
                epochs: 1,
                batch_size: count,
                learning_rate: 1e-3,
                weight_decay: 0.01,
                warmup_steps: 1,
                clip_norm: 1.0,
                patience: 0,
                seed: 1,
            };
            let mut model = Forecaster::with_seed(&config, 1)?;
            let quantiles = config.quantiles.clone();
            mlx_rs::memory::clear_cache()?;
            mlx_rs::memory::reset_peak_memory()?;
            let started = std::time::Instant::now();
            train_on_ranks(&mut model, &settings, &data, &none, &quantiles, &NoReporter, None, Some(parallel))
                .map_err(|e| DistributedError::Invalid(e.to_string()))?;
            let peak = mlx_rs::memory::peak_memory()? as f64 / 1e6;
            rows.push((config.positions, peak.round() as u64, (started.elapsed().as_secs_f64() * 10.0).round() / 10.0));
        }
        Ok(rows)
    }

    /// Peak memory per rank of one sequence-parallel training step at batch 32 against context
    /// length, on 1, 2 and 4 local ranks:
    /// `cargo test --lib -- --ignored --nocapture sequence_memory_figures`
    /// (`ENERGY_BENCH_LENGTHS=512,1024,2048` by default).
    #[test]
    #[ignore = "prints figures; slow"]
    fn sequence_memory_figures() -> Result<(), DistributedError> {
        let watchdog = Watchdog::new(Duration::from_secs(1200));
        let single = Group::init(Backend::Ring, false, watchdog)?;
        assert_eq!(single.size(), 1, "run without MLX_RANK/MLX_HOSTFILE");
        let started = std::time::Instant::now();
        let rows = memory_rows(&DataParallel::splitting_sequence(single, watchdog))?;
        eprintln!("1 rank ({:.0} s): {rows:?}", started.elapsed().as_secs_f64());
        for ranks in [2, 4] {
            let started = std::time::Instant::now();
            let results = test_ranks::run(WORKER_MEMORY, ranks, Duration::from_secs(3000));
            eprintln!("{ranks} ranks ({:.0} s):", started.elapsed().as_secs_f64());
            for (rank, result) in results.iter().enumerate() {
                eprintln!("  rank {rank}: {result}");
            }
        }
        Ok(())
    }

    #[test]
    fn sequence_parallel_training_equals_one_process() {
        for ranks in [2, 4] {
            let results = test_ranks::run(WORKER, ranks, Duration::from_secs(300));
            eprintln!("sequence-parallel training on {ranks} ranks: {results:?}");
        }
    }

    #[test]
    fn the_shards_share_the_horizon_exactly_once() {
        // 12 positions, the last 5 forecast; ranks of 4, 4 and 4 positions.
        let shards: Vec<SequenceShard> =
            [(0, 4), (4, 8), (8, 12)].into_iter().map(|rows| SequenceShard::new(rows, 12, 5)).collect();
        assert_eq!(shards.iter().map(|s| s.targets).collect::<Vec<_>>(), vec![(0, 0), (0, 1), (1, 5)]);
        assert_eq!(shards.iter().map(|s| s.weight).collect::<Vec<_>>(), vec![0.0, 0.2, 0.8]);
    }
}
