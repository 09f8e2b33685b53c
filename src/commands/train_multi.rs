//! `energy train --region A --region B …` (and `--region all-eia`): one forecaster for several
//! series (issue #19, "one model for many regions"), and loading it again for one region.
//!
//! Every series gets its own feature table, split and scaler (fit on its own training rows);
//! its windows get the region block of [`crate::features::multi`] (a one-hot of the trained
//! regions, which the input projection turns into a learned region embedding; `--region-input
//! none` leaves it out), and the windows of every series are concatenated in the order the
//! regions were given and shuffled by the trainer. Training is single-region training's
//! (`train.rs`): resumable with `--resume` (the state's provenance names every region, in
//! order), data parallel over ranks, then each region's intervals are calibrated on its own
//! validation split, the model is refitted on every region's training and validation windows,
//! and one boosted-trees baseline is fitted on the same windows (each region scaled on its own,
//! the region block among its inputs). Each region is scored on its own test split with its own
//! baselines, then all regions together (hour-weighted means).
//!
//! The checkpoint's metadata is a [`MultiMeta`]: every region's series, scaler, calibration and
//! test scores, and the region columns in order. `forecast` and `evaluate` take any trained
//! region with `--region`; a region the model was not trained on is forecast **zero-shot**: the
//! all-zero region block, with a scaler fit on that region's own stored history before the
//! forecasts ([`fit_zero_shot`]), and the output says so.
use super::modeling::{self, ModelMeta};
use super::train::{RefitSummary, TEST_STRIDE, VALIDATION_STRIDE, WindowCounts};
use super::{BadInput, Context, train};
use crate::cli::{SelectArgs, TrainArgs};
use crate::config::SplitConfig;
use crate::eval::{self, BacktestSetup, BoostedTrees, IntervalCalibration, Scores};
use crate::features::base::BaseKind;
use crate::features::multi::{self, RegionBlock, RegionInput};
use crate::features::{self, FeatureConfig, FeatureTable, Scaler, WindowSpec, Windows};
use crate::ingest::{SeriesId, SourceKind};
use crate::model::distributed::DataParallel;
use crate::model::train::TrainReport;
use crate::model::transformer::Forecaster;
use crate::time::{DateRange, HOUR_US, from_us};
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// `--region` value standing for every EIA respondent whose load (kind `D`) the store holds.
pub const ALL_EIA: &str = "all-eia";
/// Key of the multi-region metadata in a checkpoint's `config.json`.
const META_KEY: &str = "multi_region";
/// Hours of history a zero-shot region needs for its scaler (and the windows' lags).
const ZERO_SHOT_MIN_HOURS: usize = 14 * 24;

/// Everything `forecast` and `evaluate` need of a multi-region model besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MultiMeta {
    pub source: SourceKind,
    pub regions: Vec<RegionModel>,
    /// The region block's columns, in order (empty: trained with `--region-input none`).
    pub region_columns: Vec<String>,
    /// The `--weather` flag the model was trained with (a zero-shot region uses the same).
    pub weather: Option<String>,
    pub spec: WindowSpec,
    /// Every input feature, the region block last.
    pub feature_names: Vec<String>,
    pub feature_config: FeatureConfig,
    pub data_range: DateRange,
    pub split: SplitConfig,
    /// Whether the saved model learnt every region's test split too (`[model] final_refit`);
    /// false in older models.
    #[serde(default)]
    pub learnt_test: bool,
    pub trained_at: DateTime<Utc>,
    pub seed: u64,
    /// Test-split scores of all regions together (hour-weighted means).
    pub overall_scores: Vec<Scores>,
}

/// What identifies a multi-region run's data besides its windows, part of the resumable
/// state's fingerprint (as one region's `Provenance` in `train.rs`): a resume with other
/// regions, another range, split, protocol, scaler or feature set is refused.
#[derive(Serialize)]
struct Provenance<'a> {
    source: SourceKind,
    regions: Vec<RegionProvenance<'a>>,
    region_columns: &'a [String],
    data_range: DateRange,
    split: &'a SplitConfig,
    spec: &'a WindowSpec,
    feature_config: &'a FeatureConfig,
    feature_names: &'a [String],
}

#[derive(Serialize)]
struct RegionProvenance<'a> {
    region: &'a str,
    load: &'a SeriesId,
    exogenous: &'a [SeriesId],
    scaler: &'a Scaler,
}

/// One trained region of a [`MultiMeta`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RegionModel {
    pub region: String,
    pub load: SeriesId,
    pub exogenous: Vec<SeriesId>,
    pub scaler: Scaler,
    pub interval_calibration: Option<IntervalCalibration>,
    pub mase_scale: Option<f64>,
    pub operator_kind: Option<String>,
    pub test_scores: Vec<Scores>,
}

/// Does this `--region` list ask for a multi-region model (several regions, or `all-eia`)?
pub(crate) fn wanted(select: &SelectArgs) -> Result<bool, BadInput> {
    if select.regions.iter().any(|r| r == ALL_EIA) {
        return Ok(true);
    }
    Ok(select.regions.len() > 1 && select.regions_or(None)?.len() > 1)
}

/// Is a checkpoint's metadata a multi-region model's?
pub(crate) fn is_multi(extra: &serde_json::Value) -> bool {
    extra.get(META_KEY).is_some()
}

/// The regions a multi-region model was trained on, in order (`None` for a model of one region).
pub(crate) fn trained_regions(extra: &serde_json::Value, dir: &Path) -> Result<Option<Vec<String>>> {
    let Some(meta) = extra.get(META_KEY) else { return Ok(None) };
    let meta: MultiMeta = serde_json::from_value(meta.clone())
        .with_context(|| format!("the multi-region metadata of the model in `{}` is unreadable", dir.display()))?;
    Ok(Some(meta.regions.into_iter().map(|r| r.region).collect()))
}

/// One series of the run: its table, scaler and windows.
struct RegionData {
    region: String,
    load: SeriesId,
    exogenous: Vec<SeriesId>,
    table: FeatureTable,
    train_rows: std::ops::Range<usize>,
    validation_rows: std::ops::Range<usize>,
    test_rows: std::ops::Range<usize>,
    scaler: Scaler,
    train: Windows,
    validation: Windows,
    test: Windows,
    operator: Option<SeriesId>,
}

#[derive(Serialize)]
struct RegionSummary<'a> {
    region: &'a str,
    series: String,
    rows: usize,
    windows: WindowCounts,
    /// The region's regression base (`[model] base = "regression"`), fitted on its training
    /// split (a day-ahead lag regression again on training and validation when the refit
    /// runs); absent: the week-back naive.
    #[serde(skip_serializing_if = "Option::is_none")]
    regression_base: Option<&'a features::base::RegressionBase>,
    test_scores: &'a [Scores],
}

#[derive(Serialize)]
struct MultiSummary<'a> {
    model_dir: String,
    source: SourceKind,
    region_input: RegionInput,
    protocol: features::Protocol,
    /// Hours between the day-ahead training windows' origins (`[model] day_ahead_stride`);
    /// absent for next-24h.
    #[serde(skip_serializing_if = "Option::is_none")]
    day_ahead_stride: Option<usize>,
    context: usize,
    horizon: usize,
    data_range: DateRange,
    parameters: usize,
    training: &'a TrainReport,
    featurize_seconds: f64,
    /// The refit on every region's training and validation windows after training (`[model]
    /// refit_epochs`; absent when none ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    refit: Option<RefitSummary>,
    /// The refit again over every region's whole range once the test splits were scored
    /// (`[model] final_refit`; absent when none ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    final_refit: Option<RefitSummary>,
    /// Fitting the one boosted-trees baseline of all regions (each scaled on its own, the
    /// region block among its inputs) on the windows the model learnt.
    boosted_seconds: f64,
    boosted_trees: usize,
    total_seconds: f64,
    regions: Vec<RegionSummary<'a>>,
    overall_scores: &'a [Scores],
}

pub(crate) fn run(context: &Context, args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let source = args.select.source();
    let model_config = train::model_config(context, args)?;
    if args.collect && args.select.regions.iter().any(|r| r == ALL_EIA) {
        return Err(BadInput(format!(
            "--collect cannot collect --region {ALL_EIA}: name the regions, or collect them first"
        ))
        .into());
    }
    // first, so that a distributed --collect is refused before anything else
    let parallel = train::join_group(args)?;
    // Only rank 0 writes (checkpoint, resumable state, reports).
    let leader = parallel.as_ref().is_none_or(DataParallel::is_leader);
    // without --collect's all-eia, the regions need nothing collected
    let regions = regions(context, &args.select)?;
    // only rank 0 reads the resumable state: every rank trains on its range
    let range =
        train::on_leader(parallel.as_ref(), "sharing the data range", || train::run_range(context, args, &regions))?;
    if args.collect {
        train::collect_first(context, args)?;
    }
    let spec = WindowSpec {
        context: model_config.context,
        horizon: model_config.horizon,
        stride: model_config.train_stride,
        protocol: args.protocol,
    };
    let featurize = Instant::now();
    // every region has the same range: the day of the year is an input for all or for none
    let train_hours = (range.hours().max(0) as f64 * context.config.split.train) as usize;
    let feature_config =
        FeatureConfig { day_of_year: model_config.day_of_year.wanted(train_hours), ..FeatureConfig::default() };
    let day_ahead_every = model_config.day_ahead_stride.hours(train_hours);
    // every region's series first, so that a region the store lacks is named before any work
    let mut stored = Vec::with_capacity(regions.len());
    for region in &regions {
        let in_region = |e: anyhow::Error| e.context(format!("region {region}"));
        stored.push(modeling::series_for(context, source, region, args.weather.as_deref()).map_err(in_region)?);
    }
    let mut series = Vec::with_capacity(regions.len());
    for (region, (load, exogenous)) in regions.iter().zip(stored) {
        series.push(region_data(
            context,
            args,
            region,
            (load, exogenous),
            range,
            (&spec, day_ahead_every, model_config.base),
            &feature_config,
        )?);
    }
    for s in &series[1..] {
        if s.train.feature_names != series[0].train.feature_names {
            return Err(BadInput(format!(
                "regions {} and {} have different features ({} and {}): give them the same weather (e.g. --weather none)",
                series[0].region,
                s.region,
                series[0].train.feature_names.join(", "),
                s.train.feature_names.join(", ")
            ))
            .into());
        }
    }
    let columns = match args.region_input {
        RegionInput::OneHot => regions.clone(),
        RegionInput::None => Vec::new(),
    };
    for s in &mut series {
        let block = RegionBlock::of(&columns, &s.region, &regions);
        for windows in [&mut s.train, &mut s.validation, &mut s.test] {
            block.append(windows);
        }
    }
    let train_windows = multi::concat(&series.iter().map(|s| s.train.clone()).collect::<Vec<_>>());
    let validation_windows = multi::concat(&series.iter().map(|s| s.validation.clone()).collect::<Vec<_>>());
    let featurize_seconds = featurize.elapsed().as_secs_f64();

    let (mut model, forecaster_config, mut train_config, seed) =
        train::build_model(context, args, &model_config, &spec, train_windows.n_features)?;
    train_config.epochs = model_config.epochs_for(train_windows.count);
    let provenance = Provenance {
        source,
        regions: series
            .iter()
            .map(|s| RegionProvenance { region: &s.region, load: &s.load, exogenous: &s.exogenous, scaler: &s.scaler })
            .collect(),
        region_columns: &columns,
        data_range: range,
        split: &context.config.split,
        spec: &spec,
        feature_config: &feature_config,
        feature_names: &train_windows.feature_names,
    };
    let report = train::train_resumable(
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

    // each region's intervals are calibrated on forecasts of hours the model has not trained on
    let mut calibrations = Vec::with_capacity(series.len());
    for s in &series {
        let forecasts = eval::predict(&mut model, &s.validation, &s.scaler, model_config.batch_size)?;
        calibrations.push(eval::calibrate_intervals(&s.table, &spec, &s.validation, &forecasts));
    }
    // then the model (and the boosted baseline beside it) learns every validation split too
    let fitted = if model_config.refit_epochs > 0 && validation_windows.count > 0 {
        // a region's day-ahead lag regression base is fitted again on its training and
        // validation rows first, as in a one-region run; its windows follow the new base
        let mut rebuilt = false;
        for s in &mut series {
            let seen = s.train_rows.start..s.validation_rows.end;
            if let Some(refitted) = s.scaler.refit_lag_base(&s.table, seen, spec.protocol)? {
                s.scaler = refitted;
                let block = RegionBlock::of(&columns, &s.region, &regions);
                s.train =
                    features::make_training_windows(&s.table, &s.scaler, &spec, s.train_rows.clone(), day_ahead_every)?;
                s.test = features::make_windows(
                    &s.table,
                    &s.scaler,
                    &WindowSpec { stride: TEST_STRIDE, ..spec },
                    s.test_rows.clone(),
                )?;
                s.test.drop_perfect_weather();
                for windows in [&mut s.train, &mut s.test] {
                    block.append(windows);
                }
                rebuilt = true;
            }
        }
        let train_windows = if rebuilt {
            multi::concat(&series.iter().map(|s| s.train.clone()).collect::<Vec<_>>())
        } else {
            train_windows.clone()
        };
        let mut recent = Vec::with_capacity(series.len());
        for s in &series {
            let mut windows = features::make_training_windows(
                &s.table,
                &s.scaler,
                &spec,
                s.validation_rows.clone(),
                day_ahead_every,
            )?;
            RegionBlock::of(&columns, &s.region, &regions).append(&mut windows);
            recent.push(windows);
        }
        let all = train_windows.concatenated(&multi::concat(&recent));
        let summary = train::refit(context, &mut model, &train_config, model_config.refit_epochs, &all)?;
        Some((all, summary))
    } else {
        None
    };
    let fit_windows = fitted.as_ref().map_or(&train_windows, |(all, _)| all);
    let (boosted, boosted_seconds) = train::fit_boosted(fit_windows, &spec, seed)?;

    let mut trained = Vec::with_capacity(series.len());
    for (s, calibration) in series.iter().zip(calibrations) {
        let scored = Scored { calibration, boosted: &boosted, batch_size: model_config.batch_size };
        trained.push(score_region(context, &mut model, s, &spec, scored)?);
    }
    let overall = overall_scores(&trained.iter().map(|r| r.test_scores.as_slice()).collect::<Vec<_>>());

    // then the saved model learns every region's test split too (`[model] final_refit`), as
    // one region's does: each region's day-ahead lag regression fitted again on its whole
    // range, then the refit again and the boosted trees fitted again over every region's
    // whole range; the scores above stay those of the model before
    let mut final_refit = None;
    let mut boosted = boosted;
    if fitted.is_some() && model_config.final_refit && series.iter().any(|s| s.test.count > 0) {
        let mut every = Vec::with_capacity(series.len());
        for (s, r) in series.iter().zip(&mut trained) {
            let rows = s.train_rows.start..s.test_rows.end;
            if let Some(refitted) = r.scaler.refit_lag_base(&s.table, rows.clone(), spec.protocol)? {
                r.scaler = refitted;
            }
            let mut windows = features::make_training_windows(&s.table, &r.scaler, &spec, rows, day_ahead_every)?;
            RegionBlock::of(&columns, &s.region, &regions).append(&mut windows);
            every.push(windows);
        }
        let all = std::sync::Arc::new(multi::concat(&every));
        let boosting = {
            let all = std::sync::Arc::clone(&all);
            std::thread::spawn(move || train::fit_boosted(&all, &spec, seed))
        };
        let again =
            crate::model::train::TrainConfig { seed: train_config.seed.wrapping_add(1), ..train_config.clone() };
        final_refit = Some(train::refit(context, &mut model, &again, model_config.refit_epochs, &all)?);
        boosted = boosting.join().map_err(|_| anyhow::anyhow!("the boosted-trees fit panicked"))??.0;
    }

    let meta = MultiMeta {
        source,
        regions: trained,
        region_columns: columns,
        weather: args.weather.clone(),
        spec,
        feature_names: train_windows.feature_names.clone(),
        feature_config,
        data_range: range,
        split: context.config.split.clone(),
        learnt_test: final_refit.is_some(),
        trained_at: context.now,
        seed,
        overall_scores: overall,
    };
    train::save(args, &model, &forecaster_config, &serde_json::json!({ META_KEY: &meta }), &boosted)?;

    let summary = MultiSummary {
        model_dir: args.model_dir.display().to_string(),
        source,
        region_input: args.region_input,
        protocol: spec.protocol,
        day_ahead_stride: (spec.protocol == features::Protocol::DayAhead).then_some(day_ahead_every),
        context: spec.context,
        horizon: spec.horizon,
        data_range: range,
        parameters: modeling::parameter_count(&model),
        training: &report,
        featurize_seconds,
        refit: fitted.as_ref().map(|(_, summary)| *summary),
        final_refit,
        boosted_seconds,
        boosted_trees: boosted.trees(),
        total_seconds: started.elapsed().as_secs_f64(),
        regions: series
            .iter()
            .zip(&meta.regions)
            .map(|(s, r)| RegionSummary {
                region: &r.region,
                series: s.load.to_string(),
                regression_base: s.scaler.base.as_ref(),
                rows: s.table.len(),
                windows: WindowCounts {
                    train: s.train.count,
                    validation: s.validation.count,
                    test: s.test.count,
                    skipped_imputed: s.train.skipped_imputed + s.validation.skipped_imputed + s.test.skipped_imputed,
                },
                test_scores: &r.test_scores,
            })
            .collect(),
        overall_scores: &meta.overall_scores,
    };
    if context.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    print_summary(&summary);
    Ok(())
}

/// The regions of a multi-region run, in the order given (`all-eia` expanded in place to the
/// stored EIA respondents with a load series, sorted; sub-regions `PARENT.SUB` left out).
fn regions(context: &Context, select: &SelectArgs) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for region in &select.regions {
        if region != ALL_EIA {
            crate::ingest::check_name("region", region).map_err(|e| BadInput(e.to_string()))?;
            if !out.contains(region) {
                out.push(region.clone());
            }
            continue;
        }
        if select.source() != SourceKind::Eia {
            return Err(BadInput(format!("--region {ALL_EIA} needs --source eia")).into());
        }
        let load_kind = SourceKind::Eia.require_load_kind()?;
        let mut respondents: Vec<String> = context
            .store
            .list_series()
            .context("cannot read the store")?
            .into_iter()
            .filter(|id| id.source == SourceKind::Eia.as_str() && id.kind == load_kind && !id.region.contains('.'))
            .map(|id| id.region)
            .collect();
        respondents.sort();
        if respondents.is_empty() {
            return Err(BadInput(format!(
                "--region {ALL_EIA}: the store `{}` holds no EIA load; run `energy collect --source eia --region CODE` first",
                context.store.root().display()
            ))
            .into());
        }
        for region in respondents {
            if !out.contains(&region) {
                out.push(region);
            }
        }
    }
    Ok(out)
}

/// The table, split, scaler and windows of one region's `load` and `exogenous` series (the
/// region block not yet appended).
fn region_data(
    context: &Context,
    args: &TrainArgs,
    region: &str,
    (load, exogenous): (SeriesId, Vec<SeriesId>),
    range: DateRange,
    (spec, day_ahead_every, base): (&WindowSpec, usize, BaseKind),
    feature_config: &FeatureConfig,
) -> Result<RegionData> {
    let source = args.select.source();
    let in_region = |e: anyhow::Error| e.context(format!("region {region}"));
    let operator = modeling::operator_series(context, &load, source, &args.operator, None)?;
    let table = modeling::build_features(context, &load, &exogenous, range, feature_config).map_err(in_region)?;
    let splits = features::split(table.len(), &context.config.split, spec.positions())
        .map_err(|e| BadInput(format!("region {region}: {e} (collect more days or shorten --context)")))?;
    let scaler = Scaler::fit_model(&table, splits.train.clone(), base, spec.protocol)
        .map_err(|e| anyhow::Error::new(e).context(format!("region {region}")))?;
    let train = features::make_training_windows(&table, &scaler, spec, splits.train.clone(), day_ahead_every)?;
    let validation = features::make_windows(
        &table,
        &scaler,
        &WindowSpec { stride: VALIDATION_STRIDE, ..*spec },
        splits.validation.clone(),
    )?;
    let mut test =
        features::make_windows(&table, &scaler, &WindowSpec { stride: TEST_STRIDE, ..*spec }, splits.test.clone())?;
    test.drop_perfect_weather();
    if train.count == 0 {
        return Err(BadInput(format!(
            "region {region}: no training window could be made: collect more days or shorten --context"
        ))
        .into());
    }
    Ok(RegionData {
        region: region.to_string(),
        load,
        exogenous,
        train_rows: splits.train,
        validation_rows: splits.validation,
        test_rows: splits.test,
        table,
        scaler,
        train,
        validation,
        test,
        operator,
    })
}

/// What scoring a region takes besides its data: its interval calibration (fitted on its
/// validation split before the refit), the boosted baseline of all regions, the batch size.
struct Scored<'a> {
    calibration: Option<IntervalCalibration>,
    boosted: &'a BoostedTrees,
    batch_size: usize,
}

/// Score the region's test split against its own baselines and the boosted trees.
fn score_region(
    context: &Context,
    model: &mut Forecaster,
    s: &RegionData,
    spec: &WindowSpec,
    scored: Scored,
) -> Result<RegionModel> {
    let mase_scale = eval::mase_scale(&s.table, s.train_rows.clone());
    let operator = modeling::operator_aligned(context, &s.table, s.operator.as_ref())?;
    let test_scores = if s.test.count == 0 {
        Vec::new()
    } else {
        let setup = BacktestSetup {
            table: &s.table,
            spec,
            scaler: &s.scaler,
            calibration: scored.calibration.as_ref(),
            operator: operator.as_deref(),
            boosted: Some(scored.boosted),
            mase_scale,
            batch_size: scored.batch_size,
        };
        eval::backtest(model, &s.test, &setup).with_context(|| format!("cannot score region {}", s.region))?
    };
    Ok(RegionModel {
        region: s.region.clone(),
        load: s.load.clone(),
        exogenous: s.exogenous.clone(),
        scaler: s.scaler.clone(),
        interval_calibration: scored.calibration,
        mase_scale: mase_scale.is_finite().then_some(mase_scale),
        operator_kind: s.operator.as_ref().map(|id| id.kind.clone()),
        test_scores,
    })
}

/// The scores of every forecaster scored in every region, pooled over the regions: each
/// figure is the mean over regions weighted by their scored hours (for MAPE, MAE and pinball
/// loss exactly the figure of all hours together; MASE keeps each region's own scale).
fn overall_scores(regions: &[&[Scores]]) -> Vec<Scores> {
    let Some(first) = regions.iter().find(|r| !r.is_empty()) else { return Vec::new() };
    let mut out = Vec::new();
    for name in first.iter().map(|s| &s.name) {
        let found: Option<Vec<&Scores>> =
            regions.iter().filter(|r| !r.is_empty()).map(|r| r.iter().find(|s| &s.name == name)).collect();
        let Some(found) = found else { continue };
        let hours: usize = found.iter().map(|s| s.hours).sum();
        if hours == 0 {
            continue;
        }
        let mean =
            |get: &dyn Fn(&Scores) -> f64| found.iter().map(|s| get(s) * s.hours as f64).sum::<f64>() / hours as f64;
        let coverage = found
            .iter()
            .map(|s| s.coverage_p10_p90.map(|c| c * s.hours as f64))
            .sum::<Option<f64>>()
            .map(|c| c / hours as f64);
        let by_lead = |get: &dyn Fn(&Scores) -> &Vec<f64>| {
            let leads = get(found[0]).len();
            if found.iter().all(|s| get(s).len() == leads) {
                (0..leads).map(|l| mean(&|s: &Scores| get(s)[l])).collect()
            } else {
                Vec::new()
            }
        };
        let coverage_by_lead = by_lead(&|s| &s.coverage_by_lead);
        let mape_by_lead = by_lead(&|s| &s.mape_by_lead);
        out.push(Scores {
            name: name.clone(),
            hours,
            mape_percent: mean(&|s| s.mape_percent),
            mae: mean(&|s| s.mae),
            mase: mean(&|s| s.mase),
            pinball: mean(&|s| s.pinball),
            coverage_p10_p90: coverage,
            coverage_by_lead,
            mape_by_lead,
        });
    }
    out
}

fn print_summary(s: &MultiSummary) {
    println!(
        "trained one model for {} regions of {} on {} ({:?}, context {} h, horizon {} h, region input {:?})",
        s.regions.len(),
        s.source,
        s.data_range,
        s.protocol,
        s.context,
        s.horizon,
        s.region_input
    );
    train::print_day_ahead_stride(s.day_ahead_stride);
    for region in &s.regions {
        if region.regression_base.is_some() {
            print!("{}: ", region.region);
            train::print_base(region.regression_base);
        }
    }
    train::print_training(s.training, s.parameters, s.featurize_seconds, s.total_seconds);
    train::print_refit_and_boosted(s.refit.as_ref(), s.boosted_trees, s.boosted_seconds);
    train::print_final_refit(s.final_refit.as_ref());
    println!("test split, one forecast per day, MAPE % by region:");
    let names: Vec<&str> = s.overall_scores.iter().map(|x| x.name.as_str()).collect();
    let mut header = format!("{:<14} {:>6} {:>6} {:>6} {:>6}", "region", "train", "test", "hours", "cover");
    for name in &names {
        header.push_str(&format!(" {:>24}", name));
    }
    println!("{header}");
    let row = |label: &str, train: String, test: String, scores: &[Scores]| {
        let model = scores.iter().find(|x| x.name == eval::backtest::MODEL);
        let hours = model.map_or(0, |m| m.hours);
        let coverage = model.and_then(|m| m.coverage_p10_p90).map_or("-".to_string(), |c| format!("{:.0}%", 100.0 * c));
        let mut line = format!("{label:<14} {train:>6} {test:>6} {hours:>6} {coverage:>6}");
        for name in &names {
            match scores.iter().find(|x| x.name == *name) {
                Some(x) => line.push_str(&format!(" {:>24.2}", x.mape_percent)),
                None => line.push_str(&format!(" {:>24}", "-")),
            }
        }
        println!("{line}");
    };
    for r in &s.regions {
        row(r.region, r.windows.train.to_string(), r.windows.test.to_string(), r.test_scores);
    }
    let (train, test): (usize, usize) =
        s.regions.iter().map(|r| (r.windows.train, r.windows.test)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    row("overall", train.to_string(), test.to_string(), s.overall_scores);
    println!("saved to {}", s.model_dir);
}

/// Load a checkpoint for the one region `select` names: a model of one region as
/// [`modeling::meta_of`]; for a multi-region model, the metadata of that region (its
/// region block; for a region the model was not trained on, the zero-shot block and a scaler
/// still to fit with [`fit_zero_shot`]).
pub(crate) fn load_model(context: &Context, dir: &Path, select: &SelectArgs) -> Result<(Forecaster, ModelMeta)> {
    let (model, mut extra) = modeling::load_checkpoint(dir)?;
    if !is_multi(&extra) {
        return Ok((model, modeling::meta_of(extra, dir)?));
    }
    let meta: MultiMeta = serde_json::from_value(extra[META_KEY].take())
        .with_context(|| format!("the multi-region metadata of the model in `{}` is unreadable", dir.display()))?;
    let trained: Vec<&str> = meta.regions.iter().map(|r| r.region.as_str()).collect();
    let region = match select.regions.as_slice() {
        [region] => region.clone(),
        _ => {
            return Err(BadInput(format!(
                "the model in `{}` was trained for the regions {}: give one of them (or another region, zero-shot) with --region",
                dir.display(),
                trained.join(", ")
            ))
            .into());
        }
    };
    crate::ingest::check_name("region", &region).map_err(|e| BadInput(e.to_string()))?;
    let trained_regions: Vec<String> = meta.regions.iter().map(|r| r.region.clone()).collect();
    let block = RegionBlock::of(&meta.region_columns, &region, &trained_regions);
    let learnt_test = meta.learnt_test && trained.contains(&region.as_str());
    let one = match meta.regions.iter().find(|r| r.region == region) {
        Some(one) => one.clone(),
        None => {
            // zero-shot: the series of the same kinds in the new region; the scaler is fit later
            // the weather the trained regions had: none when they had none
            let weather = if meta.regions[0].exogenous.is_empty() { Some("none") } else { meta.weather.as_deref() };
            let (load, exogenous) = modeling::series_for(context, meta.source, &region, weather)?;
            RegionModel {
                region: region.clone(),
                load,
                exogenous,
                scaler: meta.regions[0].scaler.clone(),
                interval_calibration: None,
                mase_scale: None,
                operator_kind: None,
                test_scores: Vec::new(),
            }
        }
    };
    Ok((
        model,
        ModelMeta {
            source: meta.source,
            region,
            load: one.load,
            exogenous: one.exogenous,
            spec: meta.spec,
            scaler: one.scaler,
            feature_names: meta.feature_names,
            feature_config: meta.feature_config,
            data_range: meta.data_range,
            split: meta.split,
            learnt_test,
            trained_at: meta.trained_at,
            seed: meta.seed,
            test_scores: one.test_scores,
            interval_calibration: one.interval_calibration,
            mase_scale: one.mase_scale,
            operator_kind: one.operator_kind,
            region_block: Some(block),
        },
    ))
}

/// Fit the scaler (and MASE scale) of a zero-shot region on its own stored history up to
/// `until_us` (interval end, µs); nothing for a trained region or a model of one region.
pub(crate) fn fit_zero_shot(context: &Context, meta: &mut ModelMeta, until_us: i64) -> Result<()> {
    if !is_zero_shot(meta) {
        return Ok(());
    }
    let stored = context.store.read(&meta.load, None).context("cannot read the store")?;
    let first = stored.timestamps.first().copied().filter(|t| *t <= until_us);
    let last = stored.timestamps.iter().copied().filter(|t| *t <= until_us).max().unwrap_or(until_us);
    let too_little = || {
        BadInput(format!(
            "zero-shot region {} needs at least {} hours of stored history of {} before {} to fit its scaler: collect earlier data",
            meta.region,
            ZERO_SHOT_MIN_HOURS,
            meta.load,
            modeling::format_time(until_us)
        ))
    };
    let first = first.ok_or_else(too_little)?;
    let history = DateRange::new(from_us(first - HOUR_US), from_us(last)).map_err(BadInput)?;
    let table = modeling::build_features(context, &meta.load, &meta.exogenous, history, &meta.feature_config)?;
    if table.len() < ZERO_SHOT_MIN_HOURS {
        return Err(too_little().into());
    }
    // the same base as the trained regions, fitted on this region's history
    let base = if meta.scaler.base.is_some() { BaseKind::Regression } else { BaseKind::Week };
    let scaler = Scaler::fit_model(&table, 0..table.len(), base, meta.spec.protocol)?;
    if scaler.columns != meta.scaler.columns {
        return Err(BadInput(format!(
            "zero-shot region {} has other features than the model's regions ({} instead of {})",
            meta.region,
            scaler.columns.join(", "),
            meta.scaler.columns.join(", ")
        ))
        .into());
    }
    meta.scaler = scaler;
    let scale = eval::mase_scale(&table, 0..table.len());
    meta.mase_scale = scale.is_finite().then_some(scale);
    meta.data_range = history;
    Ok(())
}

/// Is this the metadata of a region a multi-region model was not trained on?
pub(crate) fn is_zero_shot(meta: &ModelMeta) -> bool {
    meta.region_block.as_ref().is_some_and(|b| b.zero_shot)
}

/// What `forecast` and `evaluate` print for a zero-shot region.
pub(crate) fn zero_shot_note(meta: &ModelMeta) -> Option<String> {
    is_zero_shot(meta).then(|| {
        format!(
            "zero-shot: the model was not trained on region {}; its scaler was fit on the region's own history {}",
            meta.region, meta.data_range
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(name: &str, hours: usize, mape: f64, coverage: Option<f64>) -> Scores {
        Scores {
            name: name.into(),
            hours,
            mape_percent: mape,
            mae: 10.0 * mape,
            mase: mape / 10.0,
            pinball: mape,
            coverage_p10_p90: coverage,
            coverage_by_lead: coverage.map_or(Vec::new(), |c| vec![c, c]),
            mape_by_lead: vec![mape, 2.0 * mape],
        }
    }

    #[test]
    fn overall_scores_weigh_each_region_by_its_hours() {
        let a = [scores("model", 100, 2.0, Some(0.8)), scores("operator", 100, 5.0, None)];
        let b = [scores("model", 300, 4.0, Some(0.6))];
        let overall = overall_scores(&[&a, &b]);
        // the operator is scored in one region only: not in the overall table
        assert_eq!(overall.len(), 1);
        let model = &overall[0];
        assert_eq!((model.name.as_str(), model.hours), ("model", 400));
        assert!((model.mape_percent - 3.5).abs() < 1e-12);
        assert!((model.mae - 35.0).abs() < 1e-12);
        assert!((model.coverage_p10_p90.unwrap() - 0.65).abs() < 1e-12);
        assert_eq!(model.coverage_by_lead.len(), 2);
        assert!((model.mape_by_lead[1] - 7.0).abs() < 1e-12, "{:?}", model.mape_by_lead);
        assert!(overall_scores(&[&[], &[]]).is_empty());
    }

    #[test]
    fn all_eia_expands_to_the_stored_respondents_with_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::ingest::Store::new(dir.path());
        let range = DateRange::from_days(
            chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        )
        .unwrap();
        let series = |region: &str, kind: &str| crate::ingest::SeriesRows {
            id: SeriesId::new("eia", region, kind),
            timestamps: range.hour_ends_us().collect(),
            values: vec![Some(1.0); 24],
        };
        // a sub-region and a respondent with only a forecast are not respondents' loads
        let batch = [series("PJM", "D"), series("CISO", "D"), series("ERCO", "D"), series("CISO.PGAE", "D")];
        store.write_range(&batch, range).unwrap();
        store.write_range(&[series("MISO", "DF")], range).unwrap();
        let context = Context {
            config: crate::config::Config::default(),
            store,
            json: true,
            quiet: true,
            now: range.end,
            stop: None,
        };
        let select = |regions: &[&str], source| SelectArgs {
            source: Some(source),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            kinds: Vec::new(),
            days: None,
            start: None,
            end: None,
        };
        let expanded = regions(&context, &select(&["ERCO", ALL_EIA], SourceKind::Eia)).unwrap();
        assert_eq!(expanded, ["ERCO", "CISO", "PJM"]);
        assert!(wanted(&select(&[ALL_EIA], SourceKind::Eia)).unwrap());
        assert!(!wanted(&select(&["ERCO", "ERCO"], SourceKind::Eia)).unwrap());
        let error = regions(&context, &select(&[ALL_EIA], SourceKind::Synthetic)).unwrap_err();
        assert!(error.to_string().contains("needs --source eia"), "{error}");
    }
}
