use super::*;
use crate::model::transformer::{Activation, DEFAULT_QUANTILES, ForecasterConfig};
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
    let mut uniform = move || rng.next_f64();
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
        activation: Activation::Gelu,
        members: 1,
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
    let report = train(&mut model, &train_config(epochs, 11), &train_data, &validation, &config.quantiles, &recorder)?;
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
    let after = evaluate_loss(&mut model, &shape, &validation, &config.quantiles, 32, None)
        .map_err(|e| Exception::custom(e.to_string()))?;
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
        let report =
            train(&mut model, &self.settings, &self.train_data(), &self.validation(), &DEFAULT_QUANTILES, &NoReporter)?;
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

    fn run(&self, dir: &Path, resume: bool, stop_after: Option<usize>) -> Result<(TrainReport, Weights), TrainError> {
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
        (TrainConfig { seed: 24, ..settings.clone() }, case.validation(), provenance.clone(), "training.seed: 23 → 24"),
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
    let gradients: FlattenedModuleParam =
        [(Rc::from("a"), Array::from_slice(&[3.0f32, 0.0], &[2])), (Rc::from("b"), Array::from_slice(&[4.0f32], &[1]))]
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

#[test]
fn a_batch_in_parts_gives_the_whole_batchs_loss_and_gradients() -> Result<(), Exception> {
    let config = small_config();
    let (inputs, targets) = synthetic(13, config.positions, config.horizon, 5);
    let inputs = Array::from_slice(&inputs, &[13, config.positions as i32, FEATURES as i32]);
    let targets = Array::from_slice(&targets, &[13, config.horizon as i32]);
    let mut model = Forecaster::with_seed(&config, 3)?;
    let mut stepper = Stepper::new(&train_config(1, 1), &config.quantiles, None);
    let (loss, gradients) = stepper.loss_and_gradients_in(1, &mut model, inputs.clone(), targets.clone())?;
    assert!(loss.item_exact::<f32>() > 0.01, "a fresh model has a loss");
    // 13 rows: parts of unequal size (7 + 6, 5 + 4 + 4) weighted by their share of the rows
    for parts in [2, 3] {
        let (part_loss, part_gradients) =
            stepper.loss_and_gradients_in(parts, &mut model, inputs.clone(), targets.clone())?;
        assert!((part_loss.item_exact::<f32>() - loss.item_exact::<f32>()).abs() < 1e-6, "{parts} parts: loss");
        assert_eq!(part_gradients.len(), gradients.len());
        for (key, gradient) in &gradients {
            let part_gradient = values(&part_gradients[key])?;
            let gradient = values(gradient)?;
            let scale = gradient.iter().fold(1e-3f32, |most, g| most.max(g.abs()));
            for (a, b) in gradient.iter().zip(&part_gradient) {
                assert!((a - b).abs() <= 1e-5 * scale, "{parts} parts: {key}: {a} against {b}");
            }
        }
    }
    // and the same parts give the same sums every time
    let first = stepper.loss_and_gradients_in(2, &mut model, inputs.clone(), targets.clone())?.1;
    let again = stepper.loss_and_gradients_in(2, &mut model, inputs, targets)?.1;
    for (key, gradient) in &first {
        assert_eq!(values(gradient)?, values(&again[key])?, "{key}");
    }
    Ok(())
}

/// An array's values in row-major order, whatever its layout.
fn values(array: &Array) -> Result<Vec<f32>, Exception> {
    let array = array.contiguous()?;
    array.eval()?;
    Ok(array.as_slice::<f32>().to_vec())
}

/// `name=value` from the environment, or `default`.
fn setting(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').map(|part| part.trim().parse().unwrap()).collect()
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
            activation: Activation::Gelu,
            members: 1,
        };
        let mut model = Forecaster::with_seed(&config, 1)?;
        let mut stepper = Stepper::new(&train_config(1, 1), &config.quantiles, None);
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
        // what is deterministic: every step ran and the model is still finite
        assert_eq!(times.len(), steps);
        let forecast = model.forward(&inputs)?;
        transforms::eval([&forecast])?;
        assert!(forecast.as_slice::<f32>().iter().all(|v| v.is_finite()));
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
