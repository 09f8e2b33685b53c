//! Training and batched inference for the [`Forecaster`]: AdamW with linear warmup then cosine
//! decay, gradient clipping by global norm, seeded shuffling and early stopping on validation
//! loss (the best epoch's weights are restored at the end). [`train_checkpointed`] also saves
//! a resumable state after every epoch and continues an interrupted run from it, bit-identically
//! (see [`resume`] for what is saved and how).
//!
//! Everything runs on the calling thread (MLX arrays are not `Sync` and the optimizer is not
//! `Send`); callers run [`train`] off any async worker.
//!
//! # Layout
//! - this file: the loop ([`train`], [`train_checkpointed`], [`predict`]) and its parts
//!   (optimizer step, schedule, clipping, batching).
//! - `types`: the plain data the loop takes and gives, and the [`Progress`] that [`resume`]
//!   saves; re-exported here. `resume` depends on these types, not on the loop.
//! - `tests`: training, determinism, resume and schedule tests.
mod sequence;
#[cfg(test)]
mod tests;
pub(crate) mod types;

pub use types::{BestEpoch, Checkpointing, EpochRecord, EpochReport, Progress, TrainConfig, TrainData, TrainReport};

use crate::model::distributed::{ActiveRing, DataParallel, DistributedError, RingAttention};
use crate::model::resume::{self, Fingerprint, ResumeError};
use crate::model::streams;
use crate::model::transformer::{Forecaster, pinball_loss};
use crate::report::Reporter;
use crate::rng::SplitMix64;
use mlx_rs::builder::Builder;
use mlx_rs::error::Exception;
use mlx_rs::module::{FlattenedModuleParam, Module, ModuleParameters};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::optimizers::{AdamW, AdamWBuilder, Optimizer};
use mlx_rs::{Array, nn, ops, random, transforms};
use sequence::SequenceShard;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

/// A failed training run: a resume that is refused or cannot read its state, another rank, or
/// MLX.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Distributed(#[from] DistributedError),
    #[error("{}", .0.what())]
    Mlx(#[from] Exception),
}

/// Train `model` with AdamW, linear warmup then cosine decay to 10% over all steps, gradient
/// clipping by global norm, seeded shuffling (SplitMix64 from `seed`) and seeded MLX random
/// state (`mlx_rs::random::seed`; seed the initial weights with [`Forecaster::with_seed`]),
/// early stopping on validation loss (restoring the best epoch's weights at the end). One
/// [`EpochReport`] per epoch, also passed to `reporter` (`start` with total = epochs,
/// `advance(1, training windows)` per epoch, a `message` with the losses).
///
/// `quantiles` must be the model's own (`model.config().quantiles`). Without validation
/// windows the training loss selects the best epoch. The last batch of an epoch may be short.
pub fn train(
    model: &mut Forecaster,
    config: &TrainConfig,
    train: &TrainData,
    validation: &TrainData,
    quantiles: &[f32],
    reporter: &dyn Reporter,
) -> Result<TrainReport, Exception> {
    run(model, config, train, validation, quantiles, reporter, None, None).map_err(|error| match error {
        TrainError::Mlx(error) => error,
        other => Exception::custom(other.to_string()),
    })
}

/// [`train`], saving a resumable state at the end of every epoch in `checkpointing.dir`, or
/// continuing from the one there with `checkpointing.resume`.
///
/// A resumed run continues exactly where the saved one stopped: the same weights, AdamW
/// moments, schedule position, shuffle state and window order, early-stopping state and epoch
/// reports, so its result is bit-identical to an uninterrupted run (training is deterministic
/// for a seed, and draws no MLX random numbers: the model has no dropout). A state saved with
/// other settings, model config, windows or provenance is refused ([`ResumeError::Mismatch`]),
/// and so is a missing one ([`ResumeError::Missing`]); `model` is overwritten by the saved
/// weights, so its initial values do not matter when resuming.
///
/// The state is left in place when training finishes, marked finished (resuming it trains no
/// further epoch and only restores the best weights): the caller removes it with
/// [`resume::clear`] once the trained model is saved, so that no crash can lose the run.
pub fn train_checkpointed(
    model: &mut Forecaster,
    config: &TrainConfig,
    train: &TrainData,
    validation: &TrainData,
    quantiles: &[f32],
    reporter: &dyn Reporter,
    checkpointing: Checkpointing,
) -> Result<TrainReport, TrainError> {
    run(model, config, train, validation, quantiles, reporter, Some(checkpointing), None)
}

/// [`train_checkpointed`] as one rank of data-parallel training when `parallel` is given:
/// every rank calls this with the same model seed, settings and windows; each takes its shard
/// of every batch ([`DataParallel::shard`]) and the ranks add their weighted gradients with one
/// all_sum per step, so every rank takes the same steps as one process would on the whole
/// batches (up to float rounding) and holds the same weights. Validation runs on every rank
/// (the same weights give the same loss, so every rank stops early at the same epoch).
///
/// Give every rank the same `checkpointing`: only rank 0 saves the resumable state (in its
/// `dir`), and a resume restores every rank from rank 0's state ([`resume::load_shared`]: the
/// other ranks never read their `dir`), checked to be the same on every rank; every rank calls
/// `after_epoch`. The window order, the steps and the shuffle state do not depend on the number
/// of ranks (each rank takes its shard of every batch as it comes), so a state saved by a run
/// of N ranks resumes on any number of ranks or as one process, and the other way round; on
/// another number of ranks the gradients are summed in another order, so the result equals the
/// uninterrupted run's up to float rounding rather than bit for bit.
#[allow(clippy::too_many_arguments)] // train_checkpointed's arguments and the rank's part
pub fn train_on_ranks(
    model: &mut Forecaster,
    config: &TrainConfig,
    train: &TrainData,
    validation: &TrainData,
    quantiles: &[f32],
    reporter: &dyn Reporter,
    checkpointing: Option<Checkpointing>,
    parallel: Option<&DataParallel>,
) -> Result<TrainReport, TrainError> {
    run(model, config, train, validation, quantiles, reporter, checkpointing, parallel)
}

#[allow(clippy::too_many_arguments)] // the union of the public entry points' arguments
fn run(
    model: &mut Forecaster,
    config: &TrainConfig,
    train: &TrainData,
    validation: &TrainData,
    quantiles: &[f32],
    reporter: &dyn Reporter,
    mut checkpointing: Option<Checkpointing>,
    parallel: Option<&DataParallel>,
) -> Result<TrainReport, TrainError> {
    let shape = DataShape::of(model)?;
    shape.check(train, "training")?;
    shape.check(validation, "validation")?;
    if train.count == 0 {
        return Err(Exception::custom("training needs at least one window").into());
    }
    if config.batch_size == 0 {
        return Err(Exception::custom("batch size must be at least 1").into());
    }
    if quantiles != model.config().quantiles.as_slice() {
        return Err(Exception::custom(format!(
            "training quantiles {quantiles:?} differ from the model's {:?}",
            model.config().quantiles
        ))
        .into());
    }
    random::seed(config.seed)?;
    // Sequence parallelism: this rank's positions, attention across the ranks on `ring`.
    let ring = match parallel {
        Some(parallel) if parallel.splits_sequence() => Some(RingAttention::new(
            parallel.group(),
            parallel.watchdog(),
            shape.positions,
            to_i32(model.config().block_size)?,
            false,
        )?),
        _ => None,
    };
    let _active = ring.as_ref().map(ActiveRing::enter);
    let sequence =
        ring.as_ref().map(|ring| SequenceShard::new(ring.bounds(), shape.positions as i32, shape.horizon as i32));
    let mut stepper = Stepper::new(config, quantiles, sequence);
    let steps_per_epoch = train.count.div_ceil(config.batch_size);
    let schedule = Schedule { config, total_steps: steps_per_epoch * config.epochs };
    let mut progress = Progress::new(config.seed, train.count, schedule.total_steps);
    // The best epoch's weights (`progress.best` says which).
    let mut best_weights: Option<FlattenedModuleParam> = None;
    let mut resumed_from_epoch = None;
    // Only one rank writes the resumable state.
    let saves = parallel.is_none_or(DataParallel::is_leader);
    let fingerprint = checkpointing
        .as_ref()
        .map(|checkpointing| Fingerprint::new(config, model.config(), train, validation, &checkpointing.provenance));
    if let (Some(checkpointing), Some(fingerprint)) = (&checkpointing, &fingerprint) {
        if checkpointing.resume {
            let restored = match parallel {
                Some(parallel) => resume::load_shared(checkpointing.dir, fingerprint, model, parallel)?,
                None => resume::load(checkpointing.dir, fingerprint, model)?,
            };
            if restored.progress.epoch > config.epochs
                || restored.progress.step != restored.progress.epoch * steps_per_epoch
                || restored.progress.order.len() != train.count
            {
                return Err(ResumeError::Inconsistent {
                    path: checkpointing.dir.join(resume::STATE_FILE),
                    message: format!(
                        "{} steps after {} epochs of {steps_per_epoch} steps (of {})",
                        restored.progress.step, restored.progress.epoch, config.epochs
                    ),
                }
                .into());
            }
            model.update_flattened(restored.weights);
            stepper.optimizer.state = restored.optimizer;
            best_weights = restored.best_weights;
            progress = restored.progress;
            // serde_json may misread an f64's last bit: take each epoch's last learning rate
            // from the schedule, which gave it in the first place.
            for record in &mut progress.epochs {
                record.learning_rate = schedule.learning_rate(record.epoch * steps_per_epoch - 1);
            }
            resumed_from_epoch = Some(progress.epoch);
        } else if saves {
            resume::clear(checkpointing.dir)?;
        }
    }

    reporter.start("train", config.epochs as u64);
    if progress.epoch > 0 {
        reporter.advance(progress.epoch as u64, (progress.epoch * train.count) as u64);
    }
    let started = Instant::now();
    let (seconds_before, train_seconds_before) = (progress.seconds, progress.train_seconds);
    let mut train_seconds = 0.0;
    let mut interrupted = false;
    let mut finished = progress.stopped_early || progress.epoch >= config.epochs;
    // the rows of one step on this rank, in parts on their own streams when they split
    // (`Stepper::loss_and_gradients`)
    let full_batch = &progress.order[..config.batch_size.min(progress.order.len())];
    let step_rows = parallel.map_or(full_batch.len(), |parallel| parallel.shard(full_batch).0.len());
    let _blas = if stepper.splittable { streams::one_blas_thread_for(step_rows) } else { None };
    while !finished {
        let epoch = progress.epoch + 1;
        let epoch_started = Instant::now();
        let mut rng = SplitMix64::new(progress.shuffle_state);
        rng.shuffle(&mut progress.order);
        progress.shuffle_state = rng.0;
        let mut loss_sum = 0.0f64;
        let mut learning_rate = 0.0;
        for batch in progress.order.chunks(config.batch_size) {
            let (rows, share) = match parallel {
                Some(parallel) => parallel.shard(batch),
                None => (batch, 1.0),
            };
            let (inputs, targets) = shape.gather(train, rows)?;
            learning_rate = schedule.learning_rate(progress.step);
            let loss = stepper.step_shared(
                model,
                inputs,
                targets,
                learning_rate,
                parallel.map(|parallel| (parallel, share)),
            )?;
            if !loss.is_finite() {
                return Err(Exception::custom(format!(
                    "training diverged: loss {loss} at epoch {epoch}, step {}",
                    progress.step
                ))
                .into());
            }
            loss_sum += f64::from(loss) * batch.len() as f64;
            progress.step += 1;
        }
        let epoch_train_seconds = epoch_started.elapsed().as_secs_f64();
        train_seconds += epoch_train_seconds;
        let train_loss = (loss_sum / train.count as f64) as f32;
        let validation_loss = if validation.count > 0 {
            evaluate_loss(model, &shape, validation, quantiles, config.batch_size, sequence.zip(parallel))?
        } else {
            f32::NAN
        };
        let report = EpochReport {
            epoch,
            train_loss,
            validation_loss,
            sequences_per_s: train.count as f64 / epoch_train_seconds.max(f64::EPSILON),
            seconds: epoch_started.elapsed().as_secs_f64(),
            learning_rate,
        };
        reporter.advance(1, train.count as u64);
        reporter.message(&format!(
            "epoch {epoch}/{}: train loss {train_loss:.4}, validation loss {validation_loss:.4}",
            config.epochs
        ));
        progress.epochs.push(EpochRecord::from(&report));
        progress.epoch = epoch;

        let selection = if validation.count > 0 { validation_loss } else { train_loss };
        if progress.best.is_none_or(|best| f64::from(selection) < best.loss) {
            progress.best = Some(BestEpoch { epoch, loss: f64::from(selection) });
            best_weights = Some(snapshot(model));
            progress.since_best = 0;
        } else {
            progress.since_best += 1;
            if config.patience > 0 && progress.since_best >= config.patience && epoch < config.epochs {
                progress.stopped_early = true;
            }
        }
        finished = progress.stopped_early || epoch >= config.epochs;

        if let (Some(checkpointing), Some(fingerprint)) = (&mut checkpointing, &fingerprint) {
            progress.seconds = seconds_before + started.elapsed().as_secs_f64();
            progress.train_seconds = train_seconds_before + train_seconds;
            if saves {
                resume::save(checkpointing.dir, fingerprint, &progress, model, &stepper.optimizer.state)?;
            }
            if let Some(after_epoch) = checkpointing.after_epoch.as_mut()
                && after_epoch(epoch).is_break()
            {
                interrupted = true;
                break;
            }
        }
    }
    reporter.finish();

    let (best_epoch, best_validation_loss) = match (progress.best, best_weights) {
        (Some(best), Some(weights)) => {
            if !interrupted {
                model.update_flattened(weights);
            }
            (best.epoch, best.loss as f32)
        }
        _ => (0, f32::NAN),
    };
    let train_seconds = train_seconds_before + train_seconds;
    let trained = progress.epochs.len() * train.count;
    Ok(TrainReport {
        epochs: progress.epochs.iter().map(EpochReport::from).collect(),
        best_epoch,
        best_validation_loss,
        stopped_early: progress.stopped_early,
        seconds: seconds_before + started.elapsed().as_secs_f64(),
        train_sequences_per_s: trained as f64 / train_seconds.max(f64::EPSILON),
        resumed_from_epoch,
        interrupted,
        communication: parallel.map(DataParallel::stats),
    })
}

/// The loss and its gradients with respect to the model's trainable parameters.
type ValueAndGrad = Box<dyn FnMut(&mut Forecaster, (Array, Array)) -> Result<(Array, FlattenedModuleParam), Exception>>;

/// One optimisation step at a time: forward, backward, clipping, AdamW update, evaluation.
struct Stepper {
    optimizer: AdamW,
    value_and_grad: ValueAndGrad,
    clip_norm: f32,
    /// Whether a batch may be split into parts on their own streams (not when the ranks split
    /// the sequence: each part would then run the ring's collectives on its own).
    splittable: bool,
}

impl Stepper {
    /// `sequence`: this rank's shard when the ranks split the sequence.
    fn new(config: &TrainConfig, quantiles: &[f32], sequence: Option<SequenceShard>) -> Self {
        let optimizer = AdamWBuilder::new(config.learning_rate as f32)
            .weight_decay(config.weight_decay as f32)
            .build()
            .unwrap_or_else(|never: std::convert::Infallible| match never {});
        let quantiles = quantiles.to_vec();
        let splittable = sequence.is_none();
        let loss = move |model: &mut Forecaster, (inputs, targets): (Array, Array)| -> Result<Array, Exception> {
            match &sequence {
                Some(shard) => shard.loss(model, &inputs, &targets, &quantiles),
                None => model.training_loss(&inputs, &targets, &quantiles),
            }
        };
        Self { optimizer, value_and_grad: Box::new(nn::value_and_grad(loss)), clip_norm: config.clip_norm, splittable }
    }

    /// One step on a batch at `learning_rate`; returns the batch's loss before the update.
    ///
    /// # Shapes
    /// `inputs`: [batch, positions, n_features], `targets`: [batch, horizon]
    #[cfg(test)]
    fn step(
        &mut self,
        model: &mut Forecaster,
        inputs: Array,
        targets: Array,
        learning_rate: f64,
    ) -> Result<f32, Exception> {
        self.step_shared(model, inputs, targets, learning_rate, None).map_err(|error| match error {
            TrainError::Mlx(error) => error,
            other => Exception::custom(other.to_string()),
        })
    }

    /// [`Stepper::step`] as one rank of several (`parallel`: the rank's part and the share of
    /// the batch its inputs are): the gradients are summed over the ranks before clipping.
    fn step_shared(
        &mut self,
        model: &mut Forecaster,
        inputs: Array,
        targets: Array,
        learning_rate: f64,
        parallel: Option<(&DataParallel, f32)>,
    ) -> Result<f32, TrainError> {
        self.optimizer.lr = Array::from_f32(learning_rate as f32);
        let (mut loss, mut gradients) = self.loss_and_gradients(model, inputs, targets)?;
        if let Some((parallel, share)) = parallel {
            (loss, gradients) = parallel.all_sum_gradients(&loss, gradients, share)?;
        }
        let gradients = clip_by_global_norm(gradients, self.clip_norm)?;
        self.optimizer.update(model, &gradients)?;
        let parameters = model.parameters().flatten();
        transforms::eval(parameters.values().copied().chain([&loss]))?;
        Ok(loss.item_exact::<f32>())
    }

    /// The batch's mean loss and its gradients. On the CPU the batch's rows are split into one
    /// part per core, each part's loss and gradients built on its own MLX stream (see
    /// [`streams`]) and weighted by its share of the rows, then summed in part order: the same
    /// parts give the same sums every run.
    fn loss_and_gradients(
        &mut self,
        model: &mut Forecaster,
        inputs: Array,
        targets: Array,
    ) -> Result<(Array, FlattenedModuleParam), Exception> {
        let rows = usize::try_from(inputs.dim(0)).unwrap_or(0);
        let parts = if self.splittable { streams::parts_for(rows) } else { 1 };
        self.loss_and_gradients_in(parts, model, inputs, targets)
    }

    /// [`Stepper::loss_and_gradients`] in `parts` parts.
    fn loss_and_gradients_in(
        &mut self,
        parts: usize,
        model: &mut Forecaster,
        inputs: Array,
        targets: Array,
    ) -> Result<(Array, FlattenedModuleParam), Exception> {
        let rows = usize::try_from(inputs.dim(0)).unwrap_or(0);
        if parts <= 1 {
            return (self.value_and_grad)(model, (inputs, targets));
        }
        let mut total: Option<(Array, FlattenedModuleParam)> = None;
        for (stream, (start, end)) in streams::part_streams(parts).iter().zip(streams::part_bounds(rows, parts)) {
            let (loss, gradients) = streams::on_default_stream(stream, || {
                let (start, end) = (to_i32(start)?, to_i32(end)?);
                let share = Array::from_f32((end - start) as f32 / rows as f32);
                let part = (inputs.index(start..end), targets.index(start..end));
                let (loss, gradients) = (self.value_and_grad)(model, part)?;
                Ok((loss.multiply(&share)?, scale_gradients(gradients, &share)?))
            })?;
            total = Some(match total {
                None => (loss, gradients),
                Some((loss_sum, mut sums)) => {
                    for (key, gradient) in gradients {
                        let sum = sums
                            .get_mut(&key)
                            .ok_or_else(|| Exception::custom(format!("the batch's parts differ in parameter {key}")))?;
                        *sum = sum.add(&gradient)?;
                    }
                    (loss_sum.add(&loss)?, sums)
                }
            });
        }
        total.ok_or_else(|| Exception::custom("a batch without rows has no loss"))
    }
}

fn scale_gradients(gradients: FlattenedModuleParam, scale: &Array) -> Result<FlattenedModuleParam, Exception> {
    gradients.into_iter().map(|(key, gradient)| Ok((key, gradient.multiply(scale)?))).collect()
}

/// Forward in batches without gradients: returns [count, horizon, n_quantiles] flattened.
pub fn predict(
    model: &mut Forecaster,
    inputs: &[f32],
    count: usize,
    positions: usize,
    n_features: usize,
    batch_size: usize,
) -> Result<Vec<f32>, Exception> {
    let shape = DataShape::of(model)?;
    if (positions, n_features) != (shape.positions, shape.n_features) {
        return Err(Exception::custom(format!(
            "predict got windows of {positions} positions × {n_features} features, the model takes {} × {}",
            shape.positions, shape.n_features
        )));
    }
    if inputs.len() != count * shape.window_len() {
        return Err(Exception::custom(format!(
            "predict needs {count} × {positions} × {n_features} = {} inputs, got {}",
            count * shape.window_len(),
            inputs.len()
        )));
    }
    if batch_size == 0 {
        return Err(Exception::custom("batch size must be at least 1"));
    }
    let mut output = Vec::with_capacity(count * shape.horizon * shape.n_quantiles);
    let window = shape.window_len();
    let _blas = streams::one_blas_thread_for(batch_size.min(count));
    for start in (0..count).step_by(batch_size) {
        let end = (start + batch_size).min(count);
        let batch = Array::from_slice(&inputs[start * window..end * window], &shape.input_dims(end - start)?);
        let prediction = forward_in_parts(model, &batch)?;
        prediction.eval()?;
        let values = prediction.try_as_slice::<f32>().map_err(|error| Exception::custom(format!("{error:?}")))?;
        output.extend_from_slice(values);
    }
    Ok(output)
}

/// The model's output for a batch, its rows split into [`streams::parts_for`] parts built on
/// their own MLX streams (see [`streams`]) and joined in order.
///
/// # Shapes
/// `inputs`: [rows, positions, n_features] → [rows, horizon, n_quantiles]
fn forward_in_parts(model: &mut Forecaster, inputs: &Array) -> Result<Array, Exception> {
    let rows = usize::try_from(inputs.dim(0)).unwrap_or(0);
    let parts = streams::parts_for(rows);
    if parts == 1 {
        return model.forward(inputs)?.contiguous();
    }
    let mut outputs = Vec::with_capacity(parts);
    for (stream, (start, end)) in streams::part_streams(parts).iter().zip(streams::part_bounds(rows, parts)) {
        outputs
            .push(streams::on_default_stream(stream, || model.forward(&inputs.index(to_i32(start)?..to_i32(end)?)))?);
    }
    ops::concatenate(&outputs, 0)?.contiguous()
}

/// Mean pinball loss over all windows of `data`, in batches, without gradients (with
/// `sequence`, this rank's shard of the positions, summed over the ranks).
fn evaluate_loss(
    model: &mut Forecaster,
    shape: &DataShape,
    data: &TrainData,
    quantiles: &[f32],
    batch_size: usize,
    sequence: Option<(SequenceShard, &DataParallel)>,
) -> Result<f32, TrainError> {
    let mut sum = 0.0f64;
    let indices: Vec<usize> = (0..data.count).collect();
    for batch in indices.chunks(batch_size) {
        let (inputs, targets) = shape.gather(data, batch)?;
        let loss = match sequence {
            Some((shard, parallel)) => shard.evaluate(model, parallel, &inputs, &targets, quantiles)?,
            None => pinball_loss(&forward_in_parts(model, &inputs)?, &targets, quantiles)?.item_exact::<f32>(),
        };
        sum += f64::from(loss) * batch.len() as f64;
    }
    Ok((sum / data.count.max(1) as f64) as f32)
}

/// Scale every gradient by `min(1, max_norm / (‖g‖ + 1e-6))`, `‖g‖` the norm of all gradients
/// together; built in the graph, so it adds no host sync. Keys are summed in sorted order so
/// that the same seed gives bit-identical runs (`HashMap` order is random per process).
fn clip_by_global_norm(gradients: FlattenedModuleParam, max_norm: f32) -> Result<FlattenedModuleParam, Exception> {
    if max_norm <= 0.0 {
        return Ok(gradients);
    }
    let mut keys: Vec<&Rc<str>> = gradients.keys().collect();
    keys.sort();
    let mut squared = Array::from_f32(0.0);
    for key in keys {
        squared = squared.add(gradients[key].square()?.sum(None)?)?;
    }
    let norm = squared.sqrt()?;
    let scale =
        ops::minimum(Array::from_f32(1.0), Array::from_f32(max_norm).divide(norm.add(Array::from_f32(1e-6))?)?)?;
    scale_gradients(gradients, &scale)
}

/// The current parameters (cheap: arrays are shared, and the optimizer replaces rather than
/// mutates them).
fn snapshot(model: &Forecaster) -> FlattenedModuleParam {
    model.parameters().flatten().into_iter().map(|(key, value)| (key, value.clone())).collect::<HashMap<_, _>>()
}

/// Linear warmup from `lr / warmup` to `lr`, then cosine decay to `lr / 10` at the last step.
struct Schedule<'a> {
    config: &'a TrainConfig,
    total_steps: usize,
}

impl Schedule<'_> {
    const FLOOR: f64 = 0.1;

    fn learning_rate(&self, step: usize) -> f64 {
        let peak = self.config.learning_rate;
        let warmup = self.config.warmup_steps.min(self.total_steps);
        if step < warmup {
            return peak * (step + 1) as f64 / warmup as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(warmup).saturating_sub(1).max(1);
        let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        peak * (Self::FLOOR + (1.0 - Self::FLOOR) * cosine)
    }
}

/// Window dimensions of a model, for checking and batching flat data.
struct DataShape {
    positions: usize,
    n_features: usize,
    horizon: usize,
    n_quantiles: usize,
}

impl DataShape {
    fn of(model: &Forecaster) -> Result<Self, Exception> {
        let config = model.config();
        Ok(Self {
            positions: config.positions,
            n_features: config.n_features,
            horizon: config.horizon,
            n_quantiles: config.n_quantiles(),
        })
    }

    fn window_len(&self) -> usize {
        self.positions * self.n_features
    }

    fn check(&self, data: &TrainData, what: &str) -> Result<(), Exception> {
        let (inputs, targets) = (data.count * self.window_len(), data.count * self.horizon);
        if data.inputs.len() != inputs || data.targets.len() != targets {
            return Err(Exception::custom(format!(
                "{what} data of {} windows needs {inputs} inputs ({} × {}) and {targets} targets ({}), got {} and {}",
                data.count,
                self.positions,
                self.n_features,
                self.horizon,
                data.inputs.len(),
                data.targets.len()
            )));
        }
        Ok(())
    }

    fn input_dims(&self, rows: usize) -> Result<[i32; 3], Exception> {
        Ok([to_i32(rows)?, to_i32(self.positions)?, to_i32(self.n_features)?])
    }

    /// The windows `rows` of `data` as ([rows, positions, n_features], [rows, horizon]).
    fn gather(&self, data: &TrainData, rows: &[usize]) -> Result<(Array, Array), Exception> {
        let window = self.window_len();
        let mut inputs = Vec::with_capacity(rows.len() * window);
        let mut targets = Vec::with_capacity(rows.len() * self.horizon);
        for &row in rows {
            inputs.extend_from_slice(&data.inputs[row * window..(row + 1) * window]);
            targets.extend_from_slice(&data.targets[row * self.horizon..(row + 1) * self.horizon]);
        }
        Ok((
            Array::from_slice(&inputs, &self.input_dims(rows.len())?),
            Array::from_slice(&targets, &[to_i32(rows.len())?, to_i32(self.horizon)?]),
        ))
    }
}

fn to_i32(value: usize) -> Result<i32, Exception> {
    i32::try_from(value).map_err(|_| Exception::custom(format!("{value} does not fit in i32")))
}
