//! `energy train`: collect when asked, build features and windows, split, train, score the test
//! split against the baselines, save the checkpoint, summarise.
use super::modeling::{self, ModelMeta};
use super::reporters::BarReporter;
use super::{BadInput, Context, collect, train_multi};
use crate::cli::{Parallelism, TrainArgs};
use crate::config::SplitConfig;
use crate::eval::{self, BacktestSetup, BoostedTrees, IntervalCalibration, Scores};
use crate::features::base::RegressionBase;
use crate::features::{self, FeatureConfig, Protocol, Scaler, WindowSpec};
use crate::ingest::SeriesId;
use crate::ingest::SourceKind;
use crate::ingest::synthetic::NoiseFloor;
use crate::model::distributed::{self, DataParallel, Group, Watchdog};
use crate::model::resume::{self, RESUME_DIR};
use crate::model::train::{Checkpointing, TrainConfig, TrainData, TrainError, TrainReport};
use crate::model::transformer::{Forecaster, ForecasterConfig};
use crate::model::{checkpoint, train};
use crate::time::DateRange;
use anyhow::{Context as _, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The refit's peak learning rate, as a fraction of training's.
pub const REFIT_LEARNING_RATE: f64 = 0.3;
/// Validation windows: every sixth hour.
pub const VALIDATION_STRIDE: usize = 6;
/// Test windows: one forecast per day.
pub const TEST_STRIDE: usize = 24;

#[derive(Clone, Copy, Serialize)]
pub(super) struct RefitSummary {
    windows: usize,
    epochs: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct TrainSummary<'a> {
    model_dir: String,
    series: String,
    /// The weather series.
    exogenous: Vec<String>,
    /// The extra input series (`--input`).
    inputs: Vec<String>,
    data_first: String,
    data_last: String,
    rows: usize,
    imputed_rows: usize,
    windows: WindowCounts,
    /// Whether the day of the year is an input (`[model] day_of_year`).
    day_of_year: bool,
    /// Days of the training split.
    train_days: usize,
    protocol: Protocol,
    /// Hours between the day-ahead training windows' origins (`[model] day_ahead_stride`);
    /// absent for next-24h.
    #[serde(skip_serializing_if = "Option::is_none")]
    day_ahead_stride: Option<usize>,
    /// The regression base the model corrects (`[model] base = "regression"`); absent: the
    /// week-back naive.
    #[serde(skip_serializing_if = "Option::is_none")]
    regression_base: Option<&'a RegressionBase>,
    context: usize,
    horizon: usize,
    /// Whether the horizon's weather is as issued (forecasts stored as `KIND_DN`) rather than
    /// the observed value (a perfect forecast).
    as_issued_weather: bool,
    /// Windows whose horizon saw an observed value for lack of an as-issued forecast.
    perfect_weather_windows: WeatherWindows,
    parameters: usize,
    training: &'a TrainReport,
    featurize_seconds: f64,
    /// The refit on the training and validation windows after training (`[model]
    /// refit_epochs`; absent when none ran): windows, epochs and seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    refit: Option<RefitSummary>,
    /// The refit again over the whole range once the test split was scored (`[model]
    /// final_refit`; absent when none ran): the saved model has learnt the test split.
    #[serde(skip_serializing_if = "Option::is_none")]
    final_refit: Option<RefitSummary>,
    /// Fitting the boosted-trees baseline on the windows the model learnt (training, and
    /// validation after a refit).
    boosted_seconds: f64,
    boosted_trees: usize,
    total_seconds: f64,
    test_scores: &'a [Scores],
    /// The p10–p90 calibration fitted on the validation split (applied to the test scores).
    interval_calibration: Option<&'a IntervalCalibration>,
    /// The MASE denominator saved with the model (the training split's lag-24 naive MAE).
    mase_scale: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    noise_floor: Option<&'a NoiseFloor>,
}

/// What identifies a run's data besides its windows, part of the resumable state's
/// fingerprint: a resume with another source, region, range, split, protocol, scaler or
/// feature set is refused.
#[derive(Serialize)]
struct Provenance<'a> {
    source: SourceKind,
    region: &'a str,
    load: &'a SeriesId,
    exogenous: &'a [SeriesId],
    data_range: DateRange,
    split: &'a SplitConfig,
    spec: &'a WindowSpec,
    feature_config: &'a FeatureConfig,
    feature_names: &'a [String],
    scaler: &'a Scaler,
}

#[derive(Serialize)]
struct WeatherWindows {
    train: usize,
    validation: usize,
    /// Test windows not scored for it.
    test_dropped: usize,
}

#[derive(Serialize)]
pub(super) struct WindowCounts {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub skipped_imputed: usize,
}

pub(crate) fn run(context: &Context, args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    args.select.source().require_load_kind()?;
    if train_multi::wanted(&args.select)? {
        return train_multi::run(context, args);
    }
    let region = modeling::one_region(&args.select, Some(&args.sources))?;
    let source = args.select.source();
    let parallel = join_group(args)?;
    // Only rank 0 writes (checkpoint, resumable state, reports), and only rank 0 reads the
    // resumable state: the range every rank trains on is rank 0's.
    let leader = parallel.as_ref().is_none_or(DataParallel::is_leader);
    // A resumed run keeps its data range (`--days` counts back from now) unless told otherwise.
    let range = on_leader(parallel.as_ref(), "sharing the data range", || {
        run_range(context, args, std::slice::from_ref(&region))
    })?;
    let model_config = model_config(context, args)?;

    let mut floors: Vec<NoiseFloor> = Vec::new();
    if args.collect {
        floors = collect_first(context, args)?;
    } else if source == SourceKind::Synthetic {
        floors = collect::synthetic_source(context, &args.select, &args.sources)?.noise_floors();
    }

    let (load, mut exogenous) = modeling::series_for(context, source, &region, args.weather.as_deref())?;
    let weather = exogenous.len();
    let (inputs, mut feature_config) = modeling::input_series(context, &load, &exogenous, &args.inputs)?;
    exogenous.extend(inputs);
    let operator_id = modeling::operator_series(context, &load, source, &args.operator, None)?;
    let featurize = Instant::now();
    let mut table = modeling::build_features(context, &load, &exogenous, range, &feature_config)?;
    let spec = WindowSpec {
        context: model_config.context,
        horizon: model_config.horizon,
        stride: model_config.train_stride,
        protocol: args.protocol,
    };
    let splits = features::split(table.len(), &context.config.split, spec.positions())
        .map_err(|e| BadInput(format!("{e} (collect more days or shorten --context)")))?;
    let train_days = splits.train.len() / 24;
    if !model_config.day_of_year.wanted(splits.train.len()) {
        feature_config.day_of_year = false;
        table.drop_day_of_year();
    }
    let scaler = Scaler::fit_model(&table, splits.train.clone(), model_config.base, spec.protocol)?;
    let day_ahead_every = model_config.day_ahead_stride.hours(splits.train.len());
    let train_windows = features::make_training_windows(&table, &scaler, &spec, splits.train.clone(), day_ahead_every)?;
    let validation_windows = features::make_windows(
        &table,
        &scaler,
        &WindowSpec { stride: VALIDATION_STRIDE, ..spec },
        splits.validation.clone(),
    )?;
    let mut test_windows =
        features::make_windows(&table, &scaler, &WindowSpec { stride: TEST_STRIDE, ..spec }, splits.test.clone())?;
    // with as-issued weather, the test scores only forecasts a user could have made: windows
    // whose horizon had no forecast issued in time (which trained on the observed value) are
    // not scored
    let uses_issued_weather = !table.issued.is_empty();
    let perfect_weather = WeatherWindows {
        train: train_windows.perfect_weather.iter().filter(|p| **p).count(),
        validation: validation_windows.perfect_weather.iter().filter(|p| **p).count(),
        test_dropped: test_windows.drop_perfect_weather(),
    };
    let featurize_seconds = featurize.elapsed().as_secs_f64();
    if train_windows.count == 0 {
        return Err(BadInput("no training window could be made: collect more days or shorten --context".into()).into());
    }

    let (mut model, forecaster_config, mut train_config, seed) =
        build_model(context, args, &model_config, &spec, train_windows.n_features)?;
    train_config.epochs = model_config.epochs_for(train_windows.count);
    // The boosted-trees baseline fits on its own thread while the model trains (MLX leaves a
    // core mostly idle), on the windows the model ends up trained on: training and
    // validation when a refit follows, else training.
    let refit_windows = if leader && model_config.refit_epochs > 0 && validation_windows.count > 0 {
        let recent =
            features::make_training_windows(&table, &scaler, &spec, splits.validation.clone(), day_ahead_every)?;
        Some(Arc::new(train_windows.concatenated(&recent)))
    } else {
        None
    };
    // The final refit (`[model] final_refit`): once the test split is scored, the saved model
    // learns it too. Its scaler (a day-ahead lag regression fitted again on every row) and the
    // whole range's windows are known now, so its boosted trees fit during training as well.
    let final_run = if refit_windows.is_some() && model_config.final_refit && test_windows.count > 0 {
        let every_row = splits.train.start..splits.test.end;
        let last = scaler.refit_lag_base(&table, every_row.clone(), spec.protocol)?.unwrap_or_else(|| scaler.clone());
        let all = features::make_training_windows(&table, &last, &spec, every_row, day_ahead_every)?;
        Some((last, Arc::new(all)))
    } else {
        None
    };
    let boosting = leader.then(|| {
        let windows = refit_windows.clone().unwrap_or_else(|| Arc::new(train_windows.clone()));
        let every_window = final_run.as_ref().map(|(_, all)| Arc::clone(all));
        std::thread::spawn(move || {
            let first = fit_boosted(&windows, &spec, seed)?;
            let last = every_window.map(|all| fit_boosted(&all, &spec, seed)).transpose()?;
            Ok::<_, anyhow::Error>((first, last))
        })
    });
    let provenance = Provenance {
        source,
        region: &region,
        load: &load,
        exogenous: &exogenous,
        data_range: range,
        split: &context.config.split,
        spec: &spec,
        feature_config: &feature_config,
        feature_names: &train_windows.feature_names,
        scaler: &scaler,
    };
    let report = train_resumable(
        context,
        args,
        &mut model,
        &train_config,
        (&train_windows, &validation_windows),
        serde_json::to_value(&provenance)?,
        parallel.as_ref(),
    )?;

    if !leader {
        // Every rank holds the same weights; rank 0 scores and saves them.
        return Ok(());
    }

    // the intervals are calibrated on forecasts of hours the model has not trained on
    let validation_forecasts = eval::predict(&mut model, &validation_windows, &scaler, model_config.batch_size)?;
    let calibration = eval::calibrate_intervals(&table, &spec, &validation_windows, &validation_forecasts);

    // then the model (and the boosted baseline beside it) learns the validation split too; a
    // day-ahead lag regression base is fitted again on the training and validation rows first
    let seen = splits.train.start..splits.validation.end;
    let refitted = match &refit_windows {
        Some(_) => scaler.refit_lag_base(&table, seen, spec.protocol)?,
        None => None,
    };
    let (scaler, refit_windows) = match (refit_windows, refitted) {
        (Some(all), Some(refitted)) => {
            let windows = |rows: std::ops::Range<usize>| {
                features::make_training_windows(&table, &refitted, &spec, rows, day_ahead_every)
            };
            let all_again = windows(splits.train.clone())?.concatenated(&windows(splits.validation.clone())?);
            debug_assert_eq!(all_again.count, all.count);
            test_windows = features::make_windows(
                &table,
                &refitted,
                &WindowSpec { stride: TEST_STRIDE, ..spec },
                splits.test.clone(),
            )?;
            test_windows.drop_perfect_weather();
            (refitted, Some(Arc::new(all_again)))
        }
        (other, _) => (scaler, other),
    };
    let refit = match &refit_windows {
        Some(all) => Some(refit(context, &mut model, &train_config, model_config.refit_epochs, all)?),
        None => None,
    };
    let ((boosted, boosted_seconds), final_boosted) = boosting
        .ok_or_else(|| anyhow::anyhow!("the boosted-trees baseline was not started"))?
        .join()
        .map_err(|_| anyhow::anyhow!("the boosted-trees fit panicked"))??;
    let mase_scale = eval::mase_scale(&table, splits.train.clone());
    let operator = modeling::operator_aligned(context, &table, operator_id.as_ref())?;
    let setup = BacktestSetup {
        table: &table,
        spec: &spec,
        scaler: &scaler,
        calibration: calibration.as_ref(),
        operator: operator.as_deref(),
        boosted: Some(&boosted),
        mase_scale,
        batch_size: model_config.batch_size,
    };
    let test_scores = eval::backtest(&mut model, &test_windows, &setup)?;

    // then the saved model learns the test split too (`[model] final_refit`): the refit again,
    // over the whole range's windows on the base fitted on every row; the scores above stay
    // those of the model before, out of sample
    let (scaler, boosted, final_refit) = match (final_run, final_boosted) {
        (Some((last, all)), Some((last_boosted, _))) => {
            let again = TrainConfig { seed: train_config.seed.wrapping_add(1), ..train_config.clone() };
            let summary = self::refit(context, &mut model, &again, model_config.refit_epochs, &all)?;
            (last, last_boosted, Some(summary))
        }
        _ => (scaler, boosted, None),
    };

    let meta = ModelMeta {
        source,
        region: region.clone(),
        load: load.clone(),
        exogenous: exogenous.clone(),
        spec,
        scaler,
        feature_names: train_windows.feature_names.clone(),
        feature_config,
        data_range: range,
        split: context.config.split.clone(),
        learnt_test: final_refit.is_some(),
        trained_at: context.now,
        seed,
        test_scores: test_scores.clone(),
        interval_calibration: calibration.clone(),
        mase_scale: mase_scale.is_finite().then_some(mase_scale),
        operator_kind: operator_id.as_ref().map(|id| id.kind.clone()),
        region_block: None,
    };
    save(args, &model, &forecaster_config, &serde_json::to_value(&meta)?, &boosted)?;

    let summary = TrainSummary {
        model_dir: args.model_dir.display().to_string(),
        series: load.to_string(),
        exogenous: exogenous[..weather].iter().map(ToString::to_string).collect(),
        inputs: exogenous[weather..].iter().map(ToString::to_string).collect(),
        data_first: modeling::format_time(table.timestamps[0]),
        data_last: modeling::format_time(*table.timestamps.last().unwrap_or(&0)),
        rows: table.len(),
        imputed_rows: table.flags.iter().filter(|f| **f & features::FLAGS_IMPUTED != 0).count(),
        windows: WindowCounts {
            train: train_windows.count,
            validation: validation_windows.count,
            test: test_windows.count,
            skipped_imputed: train_windows.skipped_imputed
                + validation_windows.skipped_imputed
                + test_windows.skipped_imputed,
        },
        day_of_year: table.known_columns.iter().any(|c| c == features::COL_DOY_SIN),
        train_days,
        protocol: spec.protocol,
        day_ahead_stride: (spec.protocol == Protocol::DayAhead).then_some(day_ahead_every),
        regression_base: meta.scaler.base.as_ref(),
        context: spec.context,
        horizon: spec.horizon,
        as_issued_weather: uses_issued_weather,
        perfect_weather_windows: perfect_weather,
        parameters: modeling::parameter_count(&model),
        training: &report,
        featurize_seconds,
        refit,
        final_refit,
        boosted_seconds,
        boosted_trees: boosted.trees(),
        total_seconds: started.elapsed().as_secs_f64(),
        test_scores: &test_scores,
        interval_calibration: calibration.as_ref(),
        mase_scale,
        noise_floor: floors.iter().find(|f| f.region == region),
    };
    if context.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    print_summary(&summary);
    Ok(())
}

/// The `[model]` settings with the flags of `args` applied (`--epochs`, `--context`, `--horizon`).
pub(super) fn model_config(context: &Context, args: &TrainArgs) -> Result<crate::config::ModelConfig> {
    let mut model_config = context.config.model.clone();
    if let Some(epochs) = args.epochs {
        if epochs == 0 {
            return Err(BadInput("--epochs must be at least 1".into()).into());
        }
        model_config.epochs = epochs;
        // the epochs asked for on the command line are the epochs run (no step minimum)
        model_config.min_steps = 0;
    }
    for (flag, value, slot) in
        [("--context", args.context, &mut model_config.context), ("--horizon", args.horizon, &mut model_config.horizon)]
    {
        if let Some(value) = value {
            if value == 0 || value > 24 * 60 {
                return Err(BadInput(format!("{flag} must be between 1 and 1440 hours (got {value})")).into());
            }
            *slot = value;
        }
    }
    if args.protocol == Protocol::DayAhead && model_config.horizon != 24 {
        return Err(BadInput("the day-ahead protocol forecasts 24 hours: leave --horizon at 24".into()).into());
    }
    Ok(model_config)
}

/// The seeded model of `n_features` inputs for windows of `spec`, its config, the training
/// settings and the seed (`--seed`, else the config's).
pub(super) fn build_model(
    context: &Context,
    args: &TrainArgs,
    model_config: &crate::config::ModelConfig,
    spec: &WindowSpec,
    n_features: usize,
) -> Result<(Forecaster, ForecasterConfig, TrainConfig, u64)> {
    let forecaster_config = ForecasterConfig {
        positions: spec.positions(),
        ..ForecasterConfig::from_model_config(model_config, n_features)
    };
    let seed = args.sources.seed.unwrap_or(context.config.synthetic.seed);
    let model =
        Forecaster::with_seed(&forecaster_config, seed).map_err(|e| anyhow::anyhow!("cannot build the model: {e}"))?;
    Ok((model, forecaster_config, TrainConfig::from_model_config(model_config, seed), seed))
}

/// `--collect`: bring the store up to date for the selected range (a failed chunk fails the
/// run); the synthetic source's noise floors.
pub(super) fn collect_first(context: &Context, args: &TrainArgs) -> Result<Vec<NoiseFloor>> {
    let (result, floors) = collect::collect(context, &args.select, &args.sources)?;
    if !result.succeeded() {
        anyhow::bail!(
            "{} of {} chunks failed to collect; run again to finish them",
            result.failed_chunks,
            result.chunks.len()
        );
    }
    if !context.json {
        eprintln!(
            "collected {} rows ({} chunks fetched, {} already stored) in {:.1} s",
            result.rows, result.fetched_chunks, result.skipped_chunks, result.duration_s
        );
    }
    Ok(floors)
}

/// This process's part in a data-parallel run (`--distributed`, or started with `MLX_RANK` and
/// `MLX_HOSTFILE` set), or `None` for a run of its own.
pub(super) fn join_group(args: &TrainArgs) -> Result<Option<DataParallel>> {
    if !(args.distributed.distributed || distributed::launched_as_rank()) {
        if args.distributed.parallel == Parallelism::Sequence {
            return Err(BadInput(
                "--parallel sequence splits each window over the ranks of a distributed run: start it with \
                 `energy launch -n N -- train … --parallel sequence`"
                    .into(),
            )
            .into());
        }
        return Ok(None);
    }
    if args.collect {
        return Err(BadInput(
            "the ranks of a distributed run only read the store: collect first, then train without --collect".into(),
        )
        .into());
    }
    let watchdog = Watchdog::from_env()?;
    let group = Group::init(args.distributed.backend, true, watchdog).context("cannot join the distributed run")?;
    tracing::info!(rank = group.rank(), size = group.size(), "joined the distributed run");
    Ok(Some(match args.distributed.parallel {
        Parallelism::Data => DataParallel::new(group, watchdog),
        Parallelism::Sequence => DataParallel::splitting_sequence(group, watchdog),
    }))
}

/// `decide` on rank 0 alone, its outcome on every rank (a run of its own just decides): for
/// what only rank 0 reads, such as the resumable state in its model folder. An error is every
/// rank's; the other ranks report it as rank 0's, with its exit code.
pub(super) fn on_leader<T: Serialize + DeserializeOwned>(
    parallel: Option<&DataParallel>,
    what: &str,
    decide: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let Some(parallel) = parallel else { return decide() };
    /// An error as the other ranks see it.
    #[derive(Serialize, Deserialize)]
    struct Failure {
        message: String,
        bad_input: bool,
    }
    let outcome = parallel.is_leader().then(decide);
    let shared = outcome.as_ref().map(|outcome| {
        let shared = outcome
            .as_ref()
            .map_err(|error| Failure { message: format!("{error:#}"), bad_input: super::exit_code(error) == 1 });
        serde_json::to_vec(&shared)
    });
    let received = parallel.share_from_leader(what, &shared.transpose()?.unwrap_or_default())?;
    if let Some(outcome) = outcome {
        return outcome;
    }
    let shared: Result<T, Failure> =
        serde_json::from_slice(&received).with_context(|| format!("{what}: rank 0 sent no readable answer"))?;
    shared.map_err(|Failure { message, bad_input }| {
        let message = format!("rank 0: {message}");
        if bad_input { BadInput(message).into() } else { anyhow::anyhow!(message) }
    })
}

/// The data range of a run of `regions`: the selected one, or with `--resume` the saved run's
/// (`--days` counts back from now) unless `--start` is given.
pub(super) fn run_range(context: &Context, args: &TrainArgs, regions: &[String]) -> Result<DateRange> {
    if !args.resume {
        return Ok(args.select.range(context.now)?);
    }
    let saved = saved_range(&args.model_dir.join(RESUME_DIR), regions)?;
    match args.select.start {
        Some(_) => Ok(args.select.range(context.now)?),
        None => Ok(saved),
    }
}

/// The data range of the resumable state in `dir`; exit code 1 when there is none, or when it
/// is a run of other regions than `regions`.
fn saved_range(dir: &Path, regions: &[String]) -> Result<DateRange> {
    if !resume::exists(dir) {
        return Err(BadInput(format!(
            "nothing to resume: `{}` holds no training state (`energy train` saves one there after each \
             epoch and removes it when training finishes); train without --resume to start a new run",
            dir.display()
        ))
        .into());
    }
    let provenance = resume::saved_provenance(dir)?;
    let saved = saved_regions(&provenance);
    if saved != regions {
        return Err(BadInput(format!(
            "the training state in `{}` is a run of the regions {}, not {}: resume with the same --region \
             flags, or train without --resume to start a new run",
            dir.display(),
            saved.join(", "),
            regions.join(", ")
        ))
        .into());
    }
    serde_json::from_value(provenance["data_range"].clone())
        .with_context(|| format!("the training state in `{}` names no data range", dir.display()))
}

/// The regions of a saved run's provenance: a multi-region run's `regions`, in order, or one
/// region's `region`.
fn saved_regions(provenance: &serde_json::Value) -> Vec<String> {
    let name = |value: &serde_json::Value| value.as_str().map(String::from);
    match provenance.get("regions").and_then(serde_json::Value::as_array) {
        Some(regions) => regions.iter().filter_map(|r| name(&r["region"])).collect(),
        None => provenance.get("region").and_then(name).into_iter().collect(),
    }
}

/// Train `model` on `train` windows, validated on `validation`, as this process's part of the
/// run (`parallel`): every epoch's resumable state is saved in `<model dir>/resume/` by the
/// process that writes (rank 0), identified by `provenance` (what besides the settings and
/// windows makes the run: a resume with another is refused), and `--resume` continues from it;
/// `--pause-after-epoch` waits there until killed.
pub(super) fn train_resumable(
    context: &Context,
    args: &TrainArgs,
    model: &mut Forecaster,
    train_config: &TrainConfig,
    (train_windows, validation_windows): (&features::Windows, &features::Windows),
    provenance: serde_json::Value,
    parallel: Option<&DataParallel>,
) -> Result<TrainReport> {
    let resume_dir = args.model_dir.join(RESUME_DIR);
    let leader = parallel.is_none_or(DataParallel::is_leader);
    if leader && !args.resume && resume::exists(&resume_dir) {
        tracing::warn!(
            "replacing the unfinished training state in `{}` (pass --resume to continue it instead)",
            resume_dir.display()
        );
    }
    let mut pause = |epoch: usize| {
        if args.pause_after_epoch == Some(epoch) {
            if leader {
                eprintln!("paused after epoch {epoch}, its state saved in `{}`", resume_dir.display());
            } else {
                eprintln!("paused after epoch {epoch}");
            }
            // Until killed: this is how the tests interrupt a run at a known point.
            loop {
                std::thread::park();
            }
        }
        ControlFlow::Continue(())
    };
    let checkpointing =
        Checkpointing { dir: &resume_dir, resume: args.resume, provenance, after_epoch: Some(&mut pause) };
    let (train_residuals, validation_residuals) =
        (train_windows.residual_targets(), validation_windows.residual_targets());
    let quantiles = model.config().quantiles.clone();
    let reporter = BarReporter::new(context.quiet || context.json || !leader, "windows");
    let trained = train::train_on_ranks(
        model,
        train_config,
        &data(train_windows, &train_residuals),
        &data(validation_windows, &validation_residuals),
        &quantiles,
        &reporter,
        Some(checkpointing),
        parallel,
    );
    trained.map_err(|e| match e {
        TrainError::Resume(e) if e.is_bad_input() => anyhow::Error::new(BadInput(format!(
            "{e}: resume with the same flags and data, or train without --resume to start a new run"
        ))),
        e => anyhow::Error::new(e).context("training failed"),
    })
}

/// The refit of the trained `model` on `windows` (the training and validation windows; for
/// the final refit, the whole range's): see [`refit_config`].
pub(super) fn refit(
    context: &Context,
    model: &mut Forecaster,
    trained: &TrainConfig,
    epochs: usize,
    windows: &features::Windows,
) -> Result<RefitSummary> {
    let started = Instant::now();
    let residuals = windows.residual_targets();
    let quantiles = model.config().quantiles.clone();
    let no_validation = TrainData { inputs: &[], targets: &[], count: 0 };
    let reporter = BarReporter::new(context.quiet || context.json, "windows");
    train::train(
        model,
        &refit_config(trained, epochs, windows.count),
        &data(windows, &residuals),
        &no_validation,
        &quantiles,
        &reporter,
    )
    .map_err(|e| anyhow::Error::new(TrainError::from(e)).context("refitting on the validation split failed"))?;
    Ok(RefitSummary { windows: windows.count, epochs, seconds: started.elapsed().as_secs_f64() })
}

/// Save the trained model with its metadata `extra` and `boosted` baseline to `--model-dir`,
/// then remove the run's resumable state, which has served.
pub(super) fn save(
    args: &TrainArgs,
    model: &Forecaster,
    forecaster_config: &ForecasterConfig,
    extra: &serde_json::Value,
    boosted: &BoostedTrees,
) -> Result<()> {
    checkpoint::save(&args.model_dir, model, forecaster_config, extra)
        .with_context(|| format!("cannot save the model to `{}`", args.model_dir.display()))?;
    boosted.save(&args.model_dir)?;
    if let Err(e) = resume::clear(&args.model_dir.join(RESUME_DIR)) {
        tracing::warn!("cannot remove the finished training state: {e}");
    }
    Ok(())
}

/// The boosted-trees baseline fitted on the windows the model learnt, and the seconds it took.
pub(super) fn fit_boosted(windows: &features::Windows, spec: &WindowSpec, seed: u64) -> Result<(BoostedTrees, f64)> {
    let started = Instant::now();
    let boosted = BoostedTrees::fit(windows, spec, seed)?;
    Ok((boosted, started.elapsed().as_secs_f64()))
}

/// The refit after training: `epochs` more epochs over the training and validation windows,
/// from the trained weights, at [`REFIT_LEARNING_RATE`] of the peak rate (a fresh AdamW, so a
/// short warmup first), decaying as in training; no early stopping (there is nothing left to
/// validate on).
fn refit_config(trained: &TrainConfig, epochs: usize, windows: usize) -> TrainConfig {
    let steps = epochs * windows.div_ceil(trained.batch_size.max(1));
    TrainConfig {
        epochs,
        learning_rate: trained.learning_rate * REFIT_LEARNING_RATE,
        warmup_steps: (steps / 10).max(1),
        patience: 0,
        seed: trained.seed.wrapping_add(1),
        ..trained.clone()
    }
}

/// Training data of `windows`: the inputs and the corrections the model learns
/// (`residuals`, from [`features::Windows::residual_targets`]).
pub(super) fn data<'a>(windows: &'a features::Windows, residuals: &'a [f32]) -> TrainData<'a> {
    TrainData { inputs: &windows.inputs, targets: residuals, count: windows.count }
}

/// The epochs and the outcome of a training run, for the terminal.
pub(super) fn print_training(report: &TrainReport, parameters: usize, featurize_seconds: f64, total_seconds: f64) {
    for e in &report.epochs {
        println!(
            "  epoch {:>2}: loss {:.4}, validation {:.4}, {:.0} windows/s, {:.1} s",
            e.epoch, e.train_loss, e.validation_loss, e.sequences_per_s, e.seconds
        );
    }
    if let Some(epoch) = report.resumed_from_epoch {
        println!("  (resumed after epoch {epoch})");
    }
    if let Some(c) = &report.communication {
        println!(
            "  data parallel over {} ranks: {} gradient all_sums of {} bytes, {:.1} ms each",
            c.ranks,
            c.steps,
            c.bytes_per_step,
            1e3 * c.all_sum_seconds_per_step
        );
    }
    println!(
        "best epoch {} (validation loss {:.4}){}; {} parameters; training {:.1} s, features {:.1} s, total {:.1} s",
        report.best_epoch,
        report.best_validation_loss,
        if report.stopped_early { ", stopped early" } else { "" },
        parameters,
        report.seconds,
        featurize_seconds,
        total_seconds
    );
}

/// The refit (when one ran) and the boosted baseline's fit, for the terminal.
pub(super) fn print_refit_and_boosted(refit: Option<&RefitSummary>, boosted_trees: usize, boosted_seconds: f64) {
    if let Some(refit) = refit {
        println!(
            "refit on training and validation: {} windows, {} epoch(s), {:.1} s",
            refit.windows, refit.epochs, refit.seconds
        );
    }
    println!("boosted-trees baseline: {boosted_trees} trees fitted in {boosted_seconds:.1} s");
}

/// The day-ahead training origins' stride, when it adds origins to the one at 10:00.
pub(super) fn print_day_ahead_stride(stride: Option<usize>) {
    if let Some(every) = stride.filter(|every| *every < features::windows::HOURS_PER_DAY) {
        println!(
            "day-ahead training origins every {every} h (the 14-hour gap and 24-hour horizon of the 10:00 origin, which \
             validation and test keep; `[model] day_ahead_stride`)"
        );
    }
}

/// The refit over the whole range after the test scores (when one ran), for the terminal.
pub(super) fn print_final_refit(again: Option<&RefitSummary>) {
    if let Some(again) = again {
        println!(
            "then the saved model learnt the test split too (`[model] final_refit`): the refit again over the whole \
             range, {} windows, {} epoch(s), {:.1} s, and the boosted trees fitted again on them; the test scores \
             below are of the model before",
            again.windows, again.epochs, again.seconds
        );
    }
}

/// What the model's forecast corrects, when it is not the week-back naive.
pub(super) fn print_base(base: Option<&RegressionBase>) {
    if let Some(base) = base {
        let inputs = if base.inputs.is_empty() { String::new() } else { format!(" and {}", base.inputs.join(", ")) };
        let correction = if let Some(lags) = &base.lags {
            format!(
                "then per lead hour a regression of the load's departure from last week's mean on the calendar, \
                 the regression, its recent errors and the issue-time lags{}{} ({} origins; with a refit, both were \
                 fitted again on the training and validation splits)",
                if lags.seasonal { " and the day of the year" } else { "" },
                if lags.holidays { ", with holidays on the issue day and a week back, and bridge days" } else { "" },
                lags.samples
            )
        } else if base.leads.is_empty() {
            format!("plus its error at the origin decayed by {:.2} per hour, mixed with last week's value", base.phi)
        } else {
            "plus its recent errors and last week's value, weighted per lead hour as fitted on the training split"
                .to_string()
        };
        println!(
            "base: regression on the calendar{inputs}, fitted on {} hours (rms error {:.3} of the load's s.d.), \
             {correction} (`[model] base`)",
            base.rows, base.rmse
        );
    }
}

fn print_summary(s: &TrainSummary) {
    println!(
        "trained {} on {} .. {} ({} hours, {} imputed)",
        s.series, s.data_first, s.data_last, s.rows, s.imputed_rows
    );
    if !s.inputs.is_empty() {
        println!("inputs: {}", s.inputs.join(", "));
    }
    if !s.day_of_year {
        println!(
            "day of the year: not an input (the training split covers {} days, less than a year; `[model] \
             day_of_year = \"on\"` uses it anyway)",
            s.train_days
        );
    }
    println!(
        "windows: {} train, {} validation, {} test ({} skipped for imputed targets); protocol {:?}, context {} h, horizon {} h",
        s.windows.train,
        s.windows.validation,
        s.windows.test,
        s.windows.skipped_imputed,
        s.protocol,
        s.context,
        s.horizon
    );
    print_day_ahead_stride(s.day_ahead_stride);
    print_base(s.regression_base);
    print_training(s.training, s.parameters, s.featurize_seconds, s.total_seconds);
    print_refit_and_boosted(s.refit.as_ref(), s.boosted_trees, s.boosted_seconds);
    print_final_refit(s.final_refit.as_ref());
    match s.interval_calibration {
        Some(c) => println!(
            "p10-p90 intervals calibrated on {} validation hours: coverage {:.0} % -> {:.0} % (nominal {:.0} %), mean margin {:+.0} MW",
            c.points,
            100.0 * c.validation_coverage_before,
            100.0 * c.validation_coverage_after,
            100.0 * eval::NOMINAL_COVERAGE,
            c.margins_mw.iter().sum::<f64>() / c.margins_mw.len().max(1) as f64
        ),
        None => println!("p10-p90 intervals not calibrated (too few validation hours)"),
    }
    println!("test split, one forecast per day:");
    modeling::print_scores(s.test_scores);
    if s.as_issued_weather {
        let p = &s.perfect_weather_windows;
        println!(
            "weather: as-issued forecasts at the horizon (observed values where none was issued in time: {} train, {} validation windows; {} test windows not scored)",
            p.train, p.validation, p.test_dropped
        );
    } else if !s.exogenous.is_empty() {
        println!("weather: observed values at the horizon (a perfect forecast: no as-issued forecast stored)");
    }
    if let Some(floor) = s.noise_floor {
        let mape = match (s.protocol, s.as_issued_weather) {
            (Protocol::DayAhead, false) => floor.mape_day_ahead_percent,
            (Protocol::DayAhead, true) => floor.mape_day_ahead_issued_percent,
            (Protocol::Next24h, false) => floor.mape_next_24h_percent,
            (Protocol::Next24h, true) => floor.mape_next_24h_issued_percent,
        };
        let weather = match (s.exogenous.is_empty(), s.as_issued_weather) {
            (true, _) => "for a forecaster that knows the true temperature, which this model was not given",
            (false, true) => "with the as-issued temperature",
            (false, false) => "with the true temperature",
        };
        println!("noise floor (best achievable MAPE on this synthetic region {weather}): {mape:.2} %");
    }
    println!("saved to {}", s.model_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refit starts from the trained weights at a lower rate, warms its fresh optimiser up
    /// over a tenth of its steps, never stops early and draws its own shuffles.
    #[test]
    fn the_refit_trains_slower_without_early_stopping() {
        let trained = TrainConfig::from_model_config(&crate::config::ModelConfig::default(), 42);
        let refit = refit_config(&trained, 2, 1000);
        assert_eq!(refit.epochs, 2);
        assert!((refit.learning_rate - trained.learning_rate * REFIT_LEARNING_RATE).abs() < 1e-15);
        assert_eq!(refit.warmup_steps, 2 * 1000usize.div_ceil(trained.batch_size) / 10);
        assert_eq!(refit.patience, 0);
        assert_ne!(refit.seed, trained.seed);
        assert_eq!(
            (refit.batch_size, refit.weight_decay, refit.clip_norm),
            (trained.batch_size, trained.weight_decay, trained.clip_norm)
        );
        // a tiny refit still warms up for one step
        assert_eq!(refit_config(&trained, 1, 3).warmup_steps, 1);
    }
}
