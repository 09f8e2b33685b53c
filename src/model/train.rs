//! Training and batched inference for the [`Forecaster`]: AdamW with linear warmup then cosine
//! decay, gradient clipping by global norm, seeded shuffling and early stopping on validation
//! loss (the best epoch's weights are restored at the end). [`train_checkpointed`] also saves
//! a resumable state after every epoch and continues an interrupted run from it, bit-identically
//! (see [`resume`] for what is saved and how).
//!
//! Everything runs on the calling thread (MLX arrays are not `Sync` and the optimizer is not
//! `Send`); callers run [`train`] off any async worker.
use crate::config::ModelConfig;
use crate::model::resume::{self, BestEpoch, EpochRecord, Fingerprint, Progress, ResumeError};
use crate::model::transformer::{Forecaster, pinball_loss};
use crate::report::Reporter;
use mlx_rs::builder::Builder;
use mlx_rs::error::Exception;
use mlx_rs::module::{FlattenedModuleParam, Module, ModuleParameters};
use mlx_rs::optimizers::{AdamW, AdamWBuilder, Optimizer};
use mlx_rs::{Array, nn, ops, random, transforms};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

/// Windows for training or evaluation, row-major.
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    /// [count, positions, n_features]
    pub inputs: &'a [f32],
    /// [count, horizon]
    pub targets: &'a [f32],
    pub count: usize,
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate, reached at the end of the warmup.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay (applied to every parameter).
    pub weight_decay: f64,
    /// Linear warmup steps (capped at the total number of steps). mlx-rs's AdamW has no bias
    /// correction, so its first steps are about 3× too large without a warmup.
    pub warmup_steps: usize,
    /// Largest global gradient norm; 0 (or less) disables clipping.
    pub clip_norm: f32,
    /// Stop after this many epochs without a better validation loss; 0 never stops early.
    pub patience: usize,
    /// Seeds the shuffling and this thread's MLX random state.
    pub seed: u64,
}

impl TrainConfig {
    pub const DEFAULT_WEIGHT_DECAY: f64 = 0.01;
    pub const DEFAULT_WARMUP_STEPS: usize = 100;
    pub const DEFAULT_CLIP_NORM: f32 = 1.0;
    pub const DEFAULT_PATIENCE: usize = 3;

    /// Epochs, batch size and learning rate from `model`, the defaults for the rest.
    pub fn from_model_config(model: &ModelConfig, seed: u64) -> Self {
        Self {
            epochs: model.epochs,
            batch_size: model.batch_size,
            learning_rate: model.learning_rate,
            weight_decay: Self::DEFAULT_WEIGHT_DECAY,
            warmup_steps: Self::DEFAULT_WARMUP_STEPS,
            clip_norm: Self::DEFAULT_CLIP_NORM,
            patience: Self::DEFAULT_PATIENCE,
            seed,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochReport {
    /// Counted from 1.
    pub epoch: usize,
    /// Mean pinball loss over the epoch's training batches (weighted by batch size).
    pub train_loss: f32,
    /// Mean pinball loss over the validation windows after the epoch; NaN without validation data.
    pub validation_loss: f32,
    /// Training windows per second of the training phase (without validation).
    pub sequences_per_s: f64,
    /// The whole epoch, validation included.
    pub seconds: f64,
    /// The learning rate of the epoch's last step.
    pub learning_rate: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Every epoch of the run, those before a resume included.
    pub epochs: Vec<EpochReport>,
    /// The epoch whose weights the model holds now (counted from 1).
    pub best_epoch: usize,
    /// Its validation loss (its training loss when there is no validation data).
    pub best_validation_loss: f32,
    pub stopped_early: bool,
    /// Wall time of the run, over every attempt of a resumed run.
    pub seconds: f64,
    /// Training windows per second over all training phases.
    pub train_sequences_per_s: f64,
    /// The epochs a resumed run found done (absent for a run that started afresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from_epoch: Option<usize>,
    /// True when [`Checkpointing::after_epoch`] stopped the run: the model then holds the last
    /// epoch's weights (not the best), and the saved state is left for a resume.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// A failed training run: a resume that is refused or cannot read its state, or MLX.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error("{}", .0.what())]
    Mlx(#[from] Exception),
}

/// Where and how [`train_checkpointed`] keeps its resumable state (see [`resume`] for the
/// layout).
pub struct Checkpointing<'a> {
    /// The state folder (created when needed).
    pub dir: &'a Path,
    /// Continue from the state in `dir` ([`ResumeError::Missing`] when there is none);
    /// otherwise any state there is removed before the first epoch.
    pub resume: bool,
    /// What else identifies the run besides the settings and the windows (data source, range,
    /// scaler, …); part of the [`Fingerprint`].
    pub provenance: serde_json::Value,
    /// Called with the epoch (counted from 1) after its state is saved; `Break` stops the run
    /// there as an interruption would (the state stays, [`TrainReport::interrupted`] is set).
    pub after_epoch: Option<&'a mut dyn FnMut(usize) -> ControlFlow<()>>,
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
    run(model, config, train, validation, quantiles, reporter, None).map_err(|error| match error {
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
    run(model, config, train, validation, quantiles, reporter, Some(checkpointing))
}

fn run(
    model: &mut Forecaster,
    config: &TrainConfig,
    train: &TrainData,
    validation: &TrainData,
    quantiles: &[f32],
    reporter: &dyn Reporter,
    mut checkpointing: Option<Checkpointing>,
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
    let mut stepper = Stepper::new(config, quantiles);
    let steps_per_epoch = train.count.div_ceil(config.batch_size);
    let schedule = Schedule { config, total_steps: steps_per_epoch * config.epochs };
    let mut progress = Progress::new(config.seed, train.count, schedule.total_steps);
    // The best epoch's weights (`progress.best` says which).
    let mut best_weights: Option<FlattenedModuleParam> = None;
    let mut resumed_from_epoch = None;
    let fingerprint = checkpointing
        .as_ref()
        .map(|checkpointing| Fingerprint::new(config, model.config(), train, validation, &checkpointing.provenance));
    if let (Some(checkpointing), Some(fingerprint)) = (&checkpointing, &fingerprint) {
        if checkpointing.resume {
            let restored = resume::load(checkpointing.dir, fingerprint, model)?;
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
        } else {
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
    while !finished {
        let epoch = progress.epoch + 1;
        let epoch_started = Instant::now();
        let mut rng = SplitMix64::new(progress.shuffle_state);
        rng.shuffle(&mut progress.order);
        progress.shuffle_state = rng.0;
        let mut loss_sum = 0.0f64;
        let mut learning_rate = 0.0;
        for batch in progress.order.chunks(config.batch_size) {
            let (inputs, targets) = shape.gather(train, batch)?;
            learning_rate = schedule.learning_rate(progress.step);
            let loss = stepper.step(model, inputs, targets, learning_rate)?;
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
            evaluate_loss(model, &shape, validation, quantiles, config.batch_size)?
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
            resume::save(checkpointing.dir, fingerprint, &progress, model, &stepper.optimizer.state)?;
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
    })
}

/// The loss and its gradients with respect to the model's trainable parameters.
type ValueAndGrad = Box<dyn FnMut(&mut Forecaster, (Array, Array)) -> Result<(Array, FlattenedModuleParam), Exception>>;

/// One optimisation step at a time: forward, backward, clipping, AdamW update, evaluation.
struct Stepper {
    optimizer: AdamW,
    value_and_grad: ValueAndGrad,
    clip_norm: f32,
}

impl Stepper {
    fn new(config: &TrainConfig, quantiles: &[f32]) -> Self {
        let optimizer = AdamWBuilder::new(config.learning_rate as f32)
            .weight_decay(config.weight_decay as f32)
            .build()
            .unwrap_or_else(|never: std::convert::Infallible| match never {});
        let quantiles = quantiles.to_vec();
        let loss = move |model: &mut Forecaster, (inputs, targets): (Array, Array)| -> Result<Array, Exception> {
            pinball_loss(&model.forward(&inputs)?, &targets, &quantiles)
        };
        Self { optimizer, value_and_grad: Box::new(nn::value_and_grad(loss)), clip_norm: config.clip_norm }
    }

    /// One step on a batch at `learning_rate`; returns the batch's loss before the update.
    ///
    /// # Shapes
    /// `inputs`: [batch, positions, n_features], `targets`: [batch, horizon]
    fn step(
        &mut self,
        model: &mut Forecaster,
        inputs: Array,
        targets: Array,
        learning_rate: f64,
    ) -> Result<f32, Exception> {
        self.optimizer.lr = Array::from_f32(learning_rate as f32);
        let (loss, gradients) = (self.value_and_grad)(model, (inputs, targets))?;
        let gradients = clip_by_global_norm(gradients, self.clip_norm)?;
        self.optimizer.update(model, &gradients)?;
        let parameters = model.parameters().flatten();
        transforms::eval(parameters.values().copied().chain([&loss]))?;
        Ok(loss.item_exact::<f32>())
    }
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
    for start in (0..count).step_by(batch_size) {
        let end = (start + batch_size).min(count);
        let batch = Array::from_slice(&inputs[start * window..end * window], &shape.input_dims(end - start)?);
        let prediction = model.forward(&batch)?.contiguous()?;
        prediction.eval()?;
        let values = prediction.try_as_slice::<f32>().map_err(|error| Exception::custom(format!("{error:?}")))?;
        output.extend_from_slice(values);
    }
    Ok(output)
}

/// Mean pinball loss over all windows of `data`, in batches, without gradients.
fn evaluate_loss(
    model: &mut Forecaster,
    shape: &DataShape,
    data: &TrainData,
    quantiles: &[f32],
    batch_size: usize,
) -> Result<f32, Exception> {
    let mut sum = 0.0f64;
    let indices: Vec<usize> = (0..data.count).collect();
    for batch in indices.chunks(batch_size) {
        let (inputs, targets) = shape.gather(data, batch)?;
        let loss = pinball_loss(&model.forward(&inputs)?, &targets, quantiles)?.item_exact::<f32>();
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
    gradients.into_iter().map(|(key, gradient)| Ok((key, gradient.multiply(&scale)?))).collect()
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

/// SplitMix64 (Steele, Lea, Flood 2014): a small, fast, seedable generator for shuffling.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (Lemire's multiply-shift; the bias is below 2⁻³² for our sizes).
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let other = self.below(last + 1);
            items.swap(last, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::transformer::{DEFAULT_QUANTILES, ForecasterConfig};
    use crate::report::NoReporter;
    use std::ops::ControlFlow;
    use std::path::Path;
    use std::sync::Mutex;

    /// Features per position: the value (0 on the horizon), `observed`, and the daily sine and
    /// cosine of the hour.
    const FEATURES: usize = 4;

    /// `count` windows of `y_t = level + amplitude · sin(2π (t0 + t) / 24) + noise(0.1)`, with a
    /// random level, amplitude and start hour per window: the horizon targets follow from the
    /// context (level, amplitude) and the known-future calendar features.
    fn synthetic(count: usize, positions: usize, horizon: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = SplitMix64::new(seed);
        let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut inputs = Vec::with_capacity(count * positions * FEATURES);
        let mut targets = Vec::with_capacity(count * horizon);
        for _ in 0..count {
            let level = uniform() * 2.0 - 1.0;
            let amplitude = 0.5 + uniform();
            let start = (uniform() * 24.0).floor();
            for t in 0..positions {
                let angle = 2.0 * std::f64::consts::PI * (start + t as f64) / 24.0;
                // Box–Muller.
                let noise =
                    0.1 * (-2.0 * uniform().max(1e-12).ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos();
                let value = level + amplitude * angle.sin() + noise;
                let observed = t < positions - horizon;
                inputs.extend(
                    [if observed { value } else { 0.0 }, f64::from(u8::from(observed)), angle.sin(), angle.cos()]
                        .map(|x| x as f32),
                );
                if !observed {
                    targets.push(value as f32);
                }
            }
        }
        (inputs, targets)
    }

    fn small_config() -> ForecasterConfig {
        ForecasterConfig {
            n_features: FEATURES,
            positions: 48,
            horizon: 8,
            d_model: 32,
            n_heads: 4,
            n_layers: 1,
            mlp_ratio: 2,
            block_size: 16,
            ring_shards: 1,
            quantiles: DEFAULT_QUANTILES.to_vec(),
        }
    }

    fn train_config(epochs: usize, seed: u64) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: 32,
            learning_rate: 3e-3,
            weight_decay: 0.01,
            warmup_steps: 8,
            clip_norm: 1.0,
            patience: 0,
            seed,
        }
    }

    /// Records what the trainer reports.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Reporter for Recorder {
        fn start(&self, label: &str, total: u64) {
            self.0.lock().unwrap().push(format!("start {label} {total}"));
        }
        fn advance(&self, units: u64, rows: u64) {
            self.0.lock().unwrap().push(format!("advance {units} {rows}"));
        }
        fn message(&self, text: &str) {
            self.0.lock().unwrap().push(format!("message {text}"));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push("finish".into());
        }
    }

    #[test]
    fn learns_a_synthetic_problem() -> Result<(), Exception> {
        let config = small_config();
        let (train_inputs, train_targets) = synthetic(256, config.positions, config.horizon, 1);
        let (valid_inputs, valid_targets) = synthetic(64, config.positions, config.horizon, 2);
        let train_data = TrainData { inputs: &train_inputs, targets: &train_targets, count: 256 };
        let validation = TrainData { inputs: &valid_inputs, targets: &valid_targets, count: 64 };
        let mut model = Forecaster::with_seed(&config, 11)?;
        let epochs = 16;
        let recorder = Recorder::default();
        let report =
            train(&mut model, &train_config(epochs, 11), &train_data, &validation, &config.quantiles, &recorder)?;
        for epoch in &report.epochs {
            eprintln!("{epoch:?}");
        }
        assert_eq!(report.epochs.len(), epochs);
        assert!(!report.stopped_early);

        let zeros = Array::zeros::<f32>(&[64, config.horizon as i32, 3])?;
        let zero_loss =
            pinball_loss(&zeros, &Array::from_slice(&valid_targets, &[64, config.horizon as i32]), &config.quantiles)?
                .item_exact::<f32>();
        let first = report.epochs[0].validation_loss;
        let best = report.best_validation_loss;
        eprintln!("zero-forecast loss {zero_loss}, first {first}, best {best} (epoch {})", report.best_epoch);
        assert!(best < 0.25 * first, "best {best} vs first {first}");
        assert!(best < 0.2 * zero_loss, "best {best} vs zeros {zero_loss}");

        // The best epoch's weights are the ones left in the model.
        let shape = DataShape::of(&model)?;
        let after = evaluate_loss(&mut model, &shape, &validation, &config.quantiles, 32)?;
        assert!((after - best).abs() < 1e-5, "{after} vs {best}");

        // Quantiles are ordered and cover the noise roughly as they should.
        let predictions = predict(&mut model, &valid_inputs, 64, config.positions, FEATURES, 20)?;
        assert_eq!(predictions.len(), 64 * config.horizon * 3);
        let mut ordered = 0;
        let mut inside = 0;
        for (quantiles, target) in predictions.chunks(3).zip(&valid_targets) {
            ordered += usize::from(quantiles[0] <= quantiles[1] && quantiles[1] <= quantiles[2]);
            inside += usize::from(quantiles[0] <= *target && *target <= quantiles[2]);
        }
        let coverage = inside as f64 / valid_targets.len() as f64;
        eprintln!("p10..p90 coverage {coverage}");
        assert_eq!(ordered, valid_targets.len());
        assert!((0.6..=0.95).contains(&coverage), "coverage {coverage}");

        let events = recorder.0.lock().unwrap();
        assert_eq!(events[0], format!("start train {epochs}"));
        assert_eq!(events.iter().filter(|event| *event == "advance 1 256").count(), epochs);
        assert_eq!(events.iter().filter(|event| event.starts_with("message epoch")).count(), epochs);
        assert_eq!(events.last().map(String::as_str), Some("finish"));
        Ok(())
    }

    fn tiny_run(seed: u64) -> Result<Vec<(f32, f32)>, Exception> {
        let config = ForecasterConfig { positions: 16, horizon: 4, d_model: 16, block_size: 8, ..small_config() };
        let (inputs, targets) = synthetic(40, config.positions, config.horizon, 5);
        let train_data = TrainData { inputs: &inputs[..32 * 16 * FEATURES], targets: &targets[..32 * 4], count: 32 };
        let validation = TrainData { inputs: &inputs[32 * 16 * FEATURES..], targets: &targets[32 * 4..], count: 8 };
        let mut model = Forecaster::with_seed(&config, seed)?;
        let config = TrainConfig { batch_size: 8, ..train_config(2, seed) };
        let report = train(&mut model, &config, &train_data, &validation, &DEFAULT_QUANTILES, &NoReporter)?;
        Ok(report.epochs.iter().map(|epoch| (epoch.train_loss, epoch.validation_loss)).collect())
    }

    #[test]
    fn same_seed_gives_identical_losses() -> Result<(), Exception> {
        let first = tiny_run(3)?;
        let second = tiny_run(3)?;
        let other = tiny_run(4)?;
        assert_eq!(first.len(), 2);
        assert_eq!(first, second);
        assert_ne!(first, other);
        Ok(())
    }

    #[test]
    fn stops_early_and_keeps_the_best_epoch() -> Result<(), Exception> {
        // With a zero learning rate nothing changes, so epoch 1 stays the best.
        let config = ForecasterConfig { positions: 16, horizon: 4, d_model: 16, block_size: 8, ..small_config() };
        let (inputs, targets) = synthetic(16, config.positions, config.horizon, 6);
        let data = TrainData { inputs: &inputs, targets: &targets, count: 16 };
        let mut model = Forecaster::with_seed(&config, 1)?;
        let train_config = TrainConfig { learning_rate: 0.0, patience: 2, ..train_config(10, 1) };
        let report = train(&mut model, &train_config, &data, &data, &DEFAULT_QUANTILES, &NoReporter)?;
        assert!(report.stopped_early);
        assert_eq!(report.epochs.len(), 3);
        assert_eq!(report.best_epoch, 1);
        Ok(())
    }

    /// The tiny problem of the resume tests: 32 training and 8 validation windows of 16
    /// positions, batches of 8 (4 steps per epoch), warmup over the first two epochs.
    struct ResumeCase {
        config: ForecasterConfig,
        inputs: Vec<f32>,
        targets: Vec<f32>,
        settings: TrainConfig,
    }

    impl ResumeCase {
        fn new(settings: TrainConfig) -> Self {
            let config = ForecasterConfig { positions: 16, horizon: 4, d_model: 16, block_size: 8, ..small_config() };
            let (inputs, targets) = synthetic(40, config.positions, config.horizon, 8);
            Self { config, inputs, targets, settings }
        }

        fn train_data(&self) -> TrainData<'_> {
            TrainData { inputs: &self.inputs[..32 * 16 * FEATURES], targets: &self.targets[..32 * 4], count: 32 }
        }

        fn validation(&self) -> TrainData<'_> {
            TrainData { inputs: &self.inputs[32 * 16 * FEATURES..], targets: &self.targets[32 * 4..], count: 8 }
        }

        /// A model seeded with `model_seed`.
        fn model(&self, model_seed: u64) -> Result<Forecaster, Exception> {
            Forecaster::with_seed(&self.config, model_seed)
        }

        fn straight(&self) -> Result<(TrainReport, Weights), Exception> {
            let mut model = self.model(self.settings.seed)?;
            let report = train(
                &mut model,
                &self.settings,
                &self.train_data(),
                &self.validation(),
                &DEFAULT_QUANTILES,
                &NoReporter,
            )?;
            Ok((report, weight_bits(&model)?))
        }

        /// Train with checkpointing in `dir`, stopping after epoch `stop_after` when given.
        fn checkpointed(
            &self,
            dir: &Path,
            resume: bool,
            stop_after: Option<usize>,
            settings: &TrainConfig,
            validation: &TrainData,
            provenance: serde_json::Value,
        ) -> Result<(TrainReport, Weights), TrainError> {
            // A resumed run takes its weights from the state: start it from other ones.
            let mut model = self.model(if resume { settings.seed + 1000 } else { settings.seed })?;
            let mut stop = |epoch: usize| {
                if Some(epoch) == stop_after { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            };
            let checkpointing = Checkpointing { dir, resume, provenance, after_epoch: Some(&mut stop) };
            let report = train_checkpointed(
                &mut model,
                settings,
                &self.train_data(),
                validation,
                &DEFAULT_QUANTILES,
                &NoReporter,
                checkpointing,
            )?;
            Ok((report, weight_bits(&model)?))
        }

        fn run(
            &self,
            dir: &Path,
            resume: bool,
            stop_after: Option<usize>,
        ) -> Result<(TrainReport, Weights), TrainError> {
            self.checkpointed(dir, resume, stop_after, &self.settings, &self.validation(), serde_json::Value::Null)
        }
    }

    /// Every parameter's f32 bit patterns, by key.
    type Weights = std::collections::BTreeMap<String, Vec<u32>>;

    fn weight_bits(model: &Forecaster) -> Result<Weights, Exception> {
        model
            .parameters()
            .flatten()
            .into_iter()
            .map(|(key, value)| {
                let value = value.contiguous()?;
                value.eval()?;
                Ok((key.to_string(), value.as_slice::<f32>().iter().map(|x| x.to_bits()).collect()))
            })
            .collect()
    }

    /// (epoch, train loss, validation loss, learning rate) as bit patterns.
    fn loss_bits(report: &TrainReport) -> Vec<(usize, u32, u32, u64)> {
        report
            .epochs
            .iter()
            .map(|e| (e.epoch, e.train_loss.to_bits(), e.validation_loss.to_bits(), e.learning_rate.to_bits()))
            .collect()
    }

    /// Interrupting after epoch k and resuming gives a result bit-identical to a straight run:
    /// every epoch's losses and learning rate, the best epoch, early stopping and the final
    /// weights. Two runs: a learning one (4 epochs, the warmup spanning the interruption), and
    /// one whose zero learning rate makes it stop early at epoch 3 (patience 2), interrupted
    /// between its best epoch and the stop.
    #[test]
    fn resumed_training_is_bit_identical_to_a_straight_run() -> Result<(), TrainError> {
        let learning = TrainConfig { batch_size: 8, patience: 2, ..train_config(4, 21) };
        let stalled = TrainConfig { batch_size: 8, learning_rate: 0.0, patience: 2, ..train_config(10, 22) };
        for (settings, stops) in [(learning, vec![1, 3]), (stalled, vec![2])] {
            let case = ResumeCase::new(settings.clone());
            let (expected, expected_weights) = case.straight()?;
            eprintln!("lr {}: best epoch {} of {}", settings.learning_rate, expected.best_epoch, expected.epochs.len());
            assert_eq!(expected.epochs.len(), if settings.learning_rate == 0.0 { 3 } else { 4 });
            for stop in stops {
                let dir = tempfile::tempdir().unwrap();
                let state = dir.path().join("resume");
                let (partial, partial_weights) = case.run(&state, false, Some(stop))?;
                assert!(partial.interrupted && partial.resumed_from_epoch.is_none());
                assert_eq!(loss_bits(&partial), loss_bits(&expected)[..stop]);
                assert!(resume::exists(&state));

                let (resumed, weights) = case.run(&state, true, None)?;
                assert_eq!(resumed.resumed_from_epoch, Some(stop));
                assert!(!resumed.interrupted);
                assert_eq!(loss_bits(&resumed), loss_bits(&expected), "stop after {stop}");
                assert_eq!(
                    (resumed.best_epoch, resumed.best_validation_loss.to_bits(), resumed.stopped_early),
                    (expected.best_epoch, expected.best_validation_loss.to_bits(), expected.stopped_early)
                );
                assert!(weights == expected_weights, "final weights differ after stopping at epoch {stop}");
                if settings.learning_rate > 0.0 && expected.best_epoch != stop {
                    assert!(partial_weights != expected_weights, "the interruption left the final weights");
                }

                // The finished state stays until the caller clears it; resuming it trains no
                // further epoch and gives the same model.
                assert!(resume::exists(&state));
                let (again, again_weights) = case.run(&state, true, None)?;
                assert_eq!(loss_bits(&again), loss_bits(&expected));
                assert!(again_weights == expected_weights);
                resume::clear(&state)?;
                assert!(!state.exists());
            }
        }
        Ok(())
    }

    /// A state is only resumed by the run that saved it: other settings, model, data or
    /// provenance are refused with the differing field named, and the state is left intact.
    #[test]
    fn resuming_another_run_is_refused() -> Result<(), TrainError> {
        let settings = TrainConfig { batch_size: 8, ..train_config(3, 23) };
        let case = ResumeCase::new(settings.clone());
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("resume");

        let missing = case.run(&state, true, None).err().unwrap();
        assert!(matches!(&missing, TrainError::Resume(e @ ResumeError::Missing { .. }) if e.is_bad_input()));
        assert!(missing.to_string().contains("nothing to resume"), "{missing}");

        let provenance = serde_json::json!({"region": "SYN1"});
        case.checkpointed(&state, false, Some(1), &settings, &case.validation(), provenance.clone())?;
        let other_validation: Vec<f32> = case.validation().targets.iter().map(|t| t + 1.0).collect();
        let shifted = TrainData { targets: &other_validation, ..case.validation() };
        let refusals: [(TrainConfig, TrainData, serde_json::Value, &str); 5] = [
            (
                TrainConfig { epochs: 4, ..settings.clone() },
                case.validation(),
                provenance.clone(),
                "training.epochs: 3 → 4",
            ),
            (
                TrainConfig { seed: 24, ..settings.clone() },
                case.validation(),
                provenance.clone(),
                "training.seed: 23 → 24",
            ),
            (
                TrainConfig { learning_rate: 1e-3, ..settings.clone() },
                case.validation(),
                provenance.clone(),
                "training.learning_rate: 0.003 → 0.001",
            ),
            (settings.clone(), shifted, provenance.clone(), "data.validation_crc32"),
            (
                settings.clone(),
                case.validation(),
                serde_json::json!({"region": "SYN2"}),
                r#"provenance.region: "SYN1" → "SYN2""#,
            ),
        ];
        for (other, validation, other_provenance, expected) in refusals {
            let error = case.checkpointed(&state, true, None, &other, &validation, other_provenance).err().unwrap();
            assert!(matches!(&error, TrainError::Resume(e @ ResumeError::Mismatch { .. }) if e.is_bad_input()));
            let message = error.to_string();
            assert!(message.contains(expected), "{message} lacks {expected}");
            assert!(message.contains("other data or settings"), "{message}");
        }
        // Another model config: a different architecture is named too.
        let wider = ResumeCase {
            config: ForecasterConfig { d_model: 32, ..case.config.clone() },
            ..ResumeCase::new(settings.clone())
        };
        let error =
            wider.checkpointed(&state, true, None, &settings, &wider.validation(), provenance.clone()).err().unwrap();
        assert!(error.to_string().contains("model.d_model: 16 → 32"), "{error}");

        // The refusals left the state as it was: the original run still resumes.
        let (resumed, _) = case.checkpointed(&state, true, None, &settings, &case.validation(), provenance.clone())?;
        assert_eq!(resumed.resumed_from_epoch, Some(1));
        assert_eq!(resumed.epochs.len(), 3);

        // Another format version is refused with its number.
        let path = state.join(resume::STATE_FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("\"format_version\": 1", "\"format_version\": 9");
        std::fs::write(&path, text).unwrap();
        let error = case.checkpointed(&state, true, None, &settings, &case.validation(), provenance).err().unwrap();
        assert!(matches!(error, TrainError::Resume(ResumeError::UnsupportedVersion { found: 9, .. })), "{error}");
        Ok(())
    }

    #[test]
    fn rejects_mismatched_data() -> Result<(), Exception> {
        let config = ForecasterConfig { positions: 16, horizon: 4, d_model: 16, block_size: 8, ..small_config() };
        let mut model = Forecaster::with_seed(&config, 1)?;
        let (inputs, targets) = synthetic(4, 16, 4, 7);
        let good = TrainData { inputs: &inputs, targets: &targets, count: 4 };
        let short = TrainData { inputs: &inputs[1..], targets: &targets, count: 4 };
        let settings = train_config(1, 1);
        assert!(train(&mut model, &settings, &short, &good, &DEFAULT_QUANTILES, &NoReporter).is_err());
        assert!(train(&mut model, &settings, &good, &short, &DEFAULT_QUANTILES, &NoReporter).is_err());
        assert!(train(&mut model, &settings, &good, &good, &[0.5], &NoReporter).is_err());
        assert!(predict(&mut model, &inputs, 4, 16, 3, 2).is_err());
        assert!(predict(&mut model, &inputs[1..], 4, 16, FEATURES, 2).is_err());
        Ok(())
    }

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        let config = TrainConfig { learning_rate: 1.0, warmup_steps: 10, ..train_config(1, 1) };
        let schedule = Schedule { config: &config, total_steps: 100 };
        assert!((schedule.learning_rate(0) - 0.1).abs() < 1e-12);
        assert!((schedule.learning_rate(9) - 1.0).abs() < 1e-12);
        assert!((schedule.learning_rate(10) - 1.0).abs() < 1e-12);
        assert!((schedule.learning_rate(99) - 0.1).abs() < 1e-12);
        let rates: Vec<f64> = (10..100).map(|step| schedule.learning_rate(step)).collect();
        assert!(rates.windows(2).all(|pair| pair[1] <= pair[0]));
        // More warmup than steps: the ramp is squeezed into the run.
        let long = TrainConfig { warmup_steps: 1000, ..config.clone() };
        let squeezed = Schedule { config: &long, total_steps: 4 };
        assert!((squeezed.learning_rate(3) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let shuffled = |seed| {
            let mut items: Vec<usize> = (0..100).collect();
            SplitMix64::new(seed).shuffle(&mut items);
            items
        };
        let first = shuffled(9);
        assert_eq!(first, shuffled(9));
        assert_ne!(first, shuffled(10));
        assert_ne!(first, (0..100).collect::<Vec<_>>());
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn clipping_bounds_the_global_norm() -> Result<(), Exception> {
        let gradients: FlattenedModuleParam = [
            (Rc::from("a"), Array::from_slice(&[3.0f32, 0.0], &[2])),
            (Rc::from("b"), Array::from_slice(&[4.0f32], &[1])),
        ]
        .into_iter()
        .collect();
        let clipped = clip_by_global_norm(gradients.clone(), 1.0)?;
        let a = clipped["a"].as_slice::<f32>().to_vec();
        let b = clipped["b"].as_slice::<f32>().to_vec();
        assert!((a[0] - 0.6).abs() < 1e-5 && (b[0] - 0.8).abs() < 1e-5, "{a:?} {b:?}");
        let untouched = clip_by_global_norm(gradients, 10.0)?;
        assert_eq!(untouched["b"].as_slice::<f32>(), &[4.0]);
        Ok(())
    }

    /// `name=value` from the environment, or `default`.
    fn setting(name: &str, default: &str) -> Vec<usize> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|part| part.trim().parse().unwrap())
            .collect()
    }

    /// Step time and peak memory of one training step of the default-sized model (22 features,
    /// context 168 + horizon 24, d_model 64, 4 heads, 2 layers, block 64), batch 32. Settings:
    /// `ENERGY_BENCH_LENGTHS` (positions, default 192), `ENERGY_BENCH_BATCH` (32),
    /// `ENERGY_BENCH_STEPS` (timed steps, 8).
    /// `cargo test --lib -- --ignored --nocapture train_step_figures`
    #[test]
    #[ignore = "prints figures; slow"]
    fn train_step_figures() -> Result<(), Exception> {
        let batch = setting("ENERGY_BENCH_BATCH", "32")[0];
        let steps = setting("ENERGY_BENCH_STEPS", "8")[0];
        eprintln!(
            "MLX_BFS_MAX_WIDTH={:?} LD_PRELOAD={:?}",
            std::env::var("MLX_BFS_MAX_WIDTH").ok(),
            std::env::var("LD_PRELOAD").ok()
        );
        for positions in setting("ENERGY_BENCH_LENGTHS", "192") {
            let config = ForecasterConfig {
                n_features: 22,
                positions,
                horizon: 24,
                d_model: 64,
                n_heads: 4,
                n_layers: 2,
                mlp_ratio: 4,
                block_size: 64,
                ring_shards: 1,
                quantiles: DEFAULT_QUANTILES.to_vec(),
            };
            let mut model = Forecaster::with_seed(&config, 1)?;
            let mut stepper = Stepper::new(&train_config(1, 1), &config.quantiles);
            let inputs = random::normal::<f32>(&[batch as i32, positions as i32, 22], None, None, None)?;
            let targets = random::normal::<f32>(&[batch as i32, 24], None, None, None)?;
            transforms::eval([&inputs, &targets])?;
            // The first step creates the optimizer state.
            stepper.step(&mut model, inputs.clone(), targets.clone(), 1e-3)?;
            mlx_rs::memory::clear_cache()?;
            let baseline = mlx_rs::memory::active_memory()?;
            mlx_rs::memory::reset_peak_memory()?;
            let mut times = Vec::with_capacity(steps);
            for _ in 0..steps {
                let started = Instant::now();
                stepper.step(&mut model, inputs.clone(), targets.clone(), 1e-3)?;
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            let peak = mlx_rs::memory::peak_memory()?.saturating_sub(baseline);
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            eprintln!(
                "positions {positions} batch {batch}: step min {:.0} ms, median {median:.0} ms, {:.1} sequences/s, \
                 peak {:.1} MiB above the {:.1} MiB of weights, optimizer state and inputs",
                times[0],
                batch as f64 * 1e3 / median,
                peak as f64 / (1 << 20) as f64,
                baseline as f64 / (1 << 20) as f64
            );
        }
        Ok(())
    }
}
