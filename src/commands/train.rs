//! `energy train`: collect when asked, build features and windows, split, train, score the test
//! split against the baselines, save the checkpoint, summarise.
use super::modeling::{self, ModelMeta};
use super::reporters::BarReporter;
use super::{BadInput, Context, collect};
use crate::cli::TrainArgs;
use crate::eval::{self, Scores};
use crate::features::{self, FeatureConfig, Protocol, Scaler, WindowSpec};
use crate::ingest::SourceKind;
use crate::ingest::synthetic::NoiseFloor;
use crate::model::train::{TrainConfig, TrainData, TrainReport};
use crate::model::transformer::{Forecaster, ForecasterConfig};
use crate::model::{checkpoint, train};
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::time::Instant;

/// Hours between the origins of training windows: every third hour keeps an epoch of 180 days
/// of data to about 900 windows, which trains in seconds per epoch on 2 CPU cores.
pub const TRAIN_STRIDE: usize = 3;
/// Validation windows: every sixth hour.
pub const VALIDATION_STRIDE: usize = 6;
/// Test windows: one forecast per day.
pub const TEST_STRIDE: usize = 24;

#[derive(Serialize)]
struct TrainSummary<'a> {
    model_dir: String,
    series: String,
    exogenous: Vec<String>,
    data_first: String,
    data_last: String,
    rows: usize,
    imputed_rows: usize,
    windows: WindowCounts,
    protocol: Protocol,
    context: usize,
    horizon: usize,
    parameters: usize,
    training: &'a TrainReport,
    featurize_seconds: f64,
    total_seconds: f64,
    test_scores: &'a [Scores],
    #[serde(skip_serializing_if = "Option::is_none")]
    noise_floor: Option<&'a NoiseFloor>,
}

#[derive(Serialize)]
struct WindowCounts {
    train: usize,
    validation: usize,
    test: usize,
    skipped_imputed: usize,
}

pub(crate) fn run(context: &Context, args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let region = modeling::one_region(&args.select)?;
    let range = args.select.range(context.now)?;
    let mut model_config = context.config.model.clone();
    if let Some(epochs) = args.epochs {
        if epochs == 0 {
            return Err(BadInput("--epochs must be at least 1".into()).into());
        }
        model_config.epochs = epochs;
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

    let mut floors: Vec<NoiseFloor> = Vec::new();
    if args.collect {
        let (result, collected_floors) = collect::collect(context, &args.select, &args.sources)?;
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
        floors = collected_floors;
    } else if args.select.source == SourceKind::Synthetic {
        floors = collect::synthetic_source(context, &args.select, &args.sources)?.noise_floors();
    }

    let (load, exogenous) = modeling::series_for(context, args.select.source, &region)?;
    let featurize = Instant::now();
    let feature_config = FeatureConfig::default();
    let table = modeling::build_features(context, &load, &exogenous, range, &feature_config)?;
    let spec = WindowSpec {
        context: model_config.context,
        horizon: model_config.horizon,
        stride: TRAIN_STRIDE,
        protocol: args.protocol,
    };
    let splits = features::split(table.len(), &context.config.split, spec.positions())
        .map_err(|e| BadInput(format!("{e} (collect more days or shorten --context)")))?;
    let scaler = Scaler::fit_table(&table, splits.train.clone())?;
    let train_windows = features::make_windows(&table, &scaler, &spec, splits.train.clone())?;
    let validation_windows = features::make_windows(
        &table,
        &scaler,
        &WindowSpec { stride: VALIDATION_STRIDE, ..spec },
        splits.validation.clone(),
    )?;
    let test_windows =
        features::make_windows(&table, &scaler, &WindowSpec { stride: TEST_STRIDE, ..spec }, splits.test.clone())?;
    let featurize_seconds = featurize.elapsed().as_secs_f64();
    if train_windows.count == 0 {
        return Err(BadInput("no training window could be made: collect more days or shorten --context".into()).into());
    }

    let forecaster_config = ForecasterConfig {
        positions: spec.positions(),
        ..ForecasterConfig::from_model_config(&model_config, train_windows.n_features)
    };
    let seed = args.sources.seed.unwrap_or(context.config.synthetic.seed);
    let mut model =
        Forecaster::with_seed(&forecaster_config, seed).map_err(|e| anyhow::anyhow!("cannot build the model: {e}"))?;
    let train_config = TrainConfig::from_model_config(&model_config, seed);
    let reporter = BarReporter::new(context.quiet || context.json, "windows");
    let report = train::train(
        &mut model,
        &train_config,
        &data(&train_windows),
        &data(&validation_windows),
        &forecaster_config.quantiles,
        &reporter,
    )
    .map_err(|e| anyhow::anyhow!("training failed: {e}"))?;

    let forecasts = modeling::predict(&mut model, &test_windows, &scaler, model_config.batch_size)?;
    let cleaned: Vec<f64> = table.target[splits.train.clone()].iter().map(|v| f64::from(*v)).collect();
    let scale = eval::naive_scale(&cleaned, 24).unwrap_or(f64::NAN);
    let operator = match modeling::operator_series(context, &load) {
        Some(id) => Some(modeling::operator_aligned(context, &table, &id)?),
        None => None,
    };
    let test_scores = modeling::score_windows(&table, &spec, &test_windows, &forecasts, operator.as_deref(), scale);

    let meta = ModelMeta {
        source: args.select.source,
        region: region.clone(),
        load: load.clone(),
        exogenous: exogenous.clone(),
        spec,
        scaler,
        feature_names: train_windows.feature_names.clone(),
        feature_config,
        data_range: range,
        split: context.config.split.clone(),
        trained_at: context.now,
        seed,
        test_scores: test_scores.clone(),
    };
    checkpoint::save(&args.model_dir, &model, &forecaster_config, &serde_json::to_value(&meta)?)
        .with_context(|| format!("cannot save the model to `{}`", args.model_dir.display()))?;

    let summary = TrainSummary {
        model_dir: args.model_dir.display().to_string(),
        series: load.to_string(),
        exogenous: exogenous.iter().map(ToString::to_string).collect(),
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
        protocol: spec.protocol,
        context: spec.context,
        horizon: spec.horizon,
        parameters: modeling::parameter_count(&model),
        training: &report,
        featurize_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        test_scores: &test_scores,
        noise_floor: floors.iter().find(|f| f.region == region),
    };
    if context.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    print_summary(&summary);
    Ok(())
}

fn data(windows: &features::Windows) -> TrainData<'_> {
    TrainData { inputs: &windows.inputs, targets: &windows.targets, count: windows.count }
}

fn print_summary(s: &TrainSummary) {
    println!(
        "trained {} on {} .. {} ({} hours, {} imputed)",
        s.series, s.data_first, s.data_last, s.rows, s.imputed_rows
    );
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
    for e in &s.training.epochs {
        println!(
            "  epoch {:>2}: loss {:.4}, validation {:.4}, {:.0} windows/s, {:.1} s",
            e.epoch, e.train_loss, e.validation_loss, e.sequences_per_s, e.seconds
        );
    }
    println!(
        "best epoch {} (validation loss {:.4}){}; {} parameters; training {:.1} s, features {:.1} s, total {:.1} s",
        s.training.best_epoch,
        s.training.best_validation_loss,
        if s.training.stopped_early { ", stopped early" } else { "" },
        s.parameters,
        s.training.seconds,
        s.featurize_seconds,
        s.total_seconds
    );
    println!("test split, one forecast per day:");
    modeling::print_scores(s.test_scores);
    if let Some(floor) = s.noise_floor {
        let mape =
            if s.protocol == Protocol::DayAhead { floor.mape_day_ahead_percent } else { floor.mape_next_24h_percent };
        println!("noise floor (best achievable MAPE on this synthetic region): {mape:.2} %");
    }
    println!("saved to {}", s.model_dir);
}
