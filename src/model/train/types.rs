//! The training types: what [`train`](super::train) and
//! [`train_checkpointed`](super::train_checkpointed) take (windows, settings, checkpointing) and
//! give (reports), and the progress of a run that [`resume`](crate::model::resume) saves after
//! every epoch. Plain data: no MLX, no training loop, so the resume state can depend on these
//! types without depending on the loop.
use crate::config::ModelConfig;
use serde::{Deserialize, Deserializer, Serialize};
use std::ops::ControlFlow;
use std::path::Path;

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
    /// The gradient all_sums of a data-parallel run (absent for one process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub communication: Option<crate::model::distributed::CommunicationStats>,
}

/// Where and how [`train_checkpointed`](super::train_checkpointed) keeps its resumable state
/// (see [`resume`](crate::model::resume) for the layout).
pub struct Checkpointing<'a> {
    /// The state folder (created when needed).
    pub dir: &'a Path,
    /// Continue from the state in `dir`
    /// ([`ResumeError::Missing`](crate::model::resume::ResumeError::Missing) when there is none);
    /// otherwise any state there is removed before the first epoch.
    pub resume: bool,
    /// What else identifies the run besides the settings and the windows (data source, range,
    /// scaler, …); part of the [`Fingerprint`](crate::model::resume::Fingerprint).
    pub provenance: serde_json::Value,
    /// Called with the epoch (counted from 1) after its state is saved; `Break` stops the run
    /// there as an interruption would (the state stays, [`TrainReport::interrupted`] is set).
    pub after_epoch: Option<&'a mut dyn FnMut(usize) -> ControlFlow<()>>,
}

/// Where a run stands after an epoch: everything besides tensors needed to continue it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs completed (counted from 1; 0 before the first).
    pub epoch: usize,
    /// Optimizer steps taken: the position in the learning-rate schedule.
    pub step: usize,
    /// Length of the schedule (steps per epoch × epochs), for the record.
    pub total_steps: usize,
    /// SplitMix64 shuffle state after the last shuffle.
    pub shuffle_state: u64,
    /// The window order after the last shuffle; the next epoch shuffles this permutation.
    pub order: Vec<usize>,
    /// The best epoch so far (by validation loss, or training loss without validation data).
    pub best: Option<BestEpoch>,
    /// Epochs since the best one (early stopping's patience counter).
    pub since_best: usize,
    pub stopped_early: bool,
    /// One record per completed epoch.
    pub epochs: Vec<EpochRecord>,
    /// Wall time of the whole run so far, over every attempt.
    pub seconds: f64,
    /// Wall time of the training phases so far, over every attempt.
    pub train_seconds: f64,
}

impl Progress {
    /// A run that has not started: the shuffle seeded with `seed`, windows in order.
    pub fn new(seed: u64, windows: usize, total_steps: usize) -> Self {
        Self {
            epoch: 0,
            step: 0,
            total_steps,
            shuffle_state: seed,
            order: (0..windows).collect(),
            best: None,
            since_best: 0,
            stopped_early: false,
            epochs: Vec::new(),
            seconds: 0.0,
            train_seconds: 0.0,
        }
    }
}

/// The best epoch so far and its selection loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestEpoch {
    pub epoch: usize,
    /// An f32 loss held as f64 (read back through f32, see `f32_from_json`).
    #[serde(deserialize_with = "f32_from_json")]
    pub loss: f64,
}

/// [`EpochReport`] with f32 losses held as f64 and NaN as `null`. The losses come back from
/// JSON exactly because they are read back through f32 (`f32_from_json`); the f64 learning
/// rate may not, so a resumed run recomputes it from the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    #[serde(deserialize_with = "f32_from_json")]
    pub train_loss: f64,
    #[serde(deserialize_with = "f32_from_json")]
    pub validation_loss: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub sequences_per_s: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub seconds: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub learning_rate: f64,
}

impl From<&EpochReport> for EpochRecord {
    fn from(report: &EpochReport) -> Self {
        Self {
            epoch: report.epoch,
            train_loss: f64::from(report.train_loss),
            validation_loss: f64::from(report.validation_loss),
            sequences_per_s: report.sequences_per_s,
            seconds: report.seconds,
            learning_rate: report.learning_rate,
        }
    }
}

impl From<&EpochRecord> for EpochReport {
    fn from(record: &EpochRecord) -> Self {
        Self {
            epoch: record.epoch,
            train_loss: record.train_loss as f32,
            validation_loss: record.validation_loss as f32,
            sequences_per_s: record.sequences_per_s,
            seconds: record.seconds,
            learning_rate: record.learning_rate,
        }
    }
}

/// serde_json writes NaN as `null`; read it back as NaN.
fn nan_from_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// An f32 written as f64: serde_json (without its `float_roundtrip` feature) may misread the
/// f64's last bit (`0.20993559062480927` reads back as `0.2099355906248093`), so the value read
/// is rounded to the nearest f32, which is the one written. `null` reads as NaN.
fn f32_from_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(f64::from(nan_from_null(deserializer)? as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed run whose best loss read back one f64 bit too large took an equal later loss
    /// for a better one, and stopped early three epochs late.
    #[test]
    fn best_loss_reads_back_exactly_after_a_misread_last_bit() {
        for bits in [1045887323u32, 1050088609, 0x3f80_0000, 1] {
            let best = BestEpoch { epoch: 1, loss: f64::from(f32::from_bits(bits)) };
            let text = serde_json::to_string_pretty(&best).unwrap();
            let back: BestEpoch = serde_json::from_str(&text).unwrap();
            assert_eq!(back.loss.to_bits(), best.loss.to_bits(), "{text}");
        }
        let nan: BestEpoch = serde_json::from_str(r#"{"epoch": 2, "loss": null}"#).unwrap();
        assert!(nan.loss.is_nan());
    }
}
