//! `energy evaluate`: a rolling-origin backtest of a trained model, one forecast per day,
//! beside the seasonal-naive baselines and the operator's own forecast where stored.
use super::modeling::{self, ModelMeta};
use super::{BadInput, Context, train_multi};
use crate::cli::EvaluateArgs;
use crate::eval::{self, BacktestSetup, BoostedTrees, Scores};
use crate::features::{self, WindowSpec};
use crate::time::{DateRange, HOUR_US, from_us};
use anyhow::{Context as _, Result};
use chrono::TimeDelta;
use serde::Serialize;

/// Days scored when no range is given.
pub const DEFAULT_EVALUATE_DAYS: i64 = 30;

#[derive(Serialize)]
struct EvaluateReport<'a> {
    model_dir: String,
    series: String,
    protocol: features::Protocol,
    first_target: String,
    last_target: String,
    forecasts: usize,
    skipped_imputed: usize,
    /// Days not scored because no as-issued weather forecast was stored for them.
    skipped_no_weather_forecast: usize,
    overlaps_training: bool,
    /// The MASE denominator: the training split's lag-24 naive MAE saved with the model (the
    /// same as `train` used), or for older models the evaluated range's.
    mase_scale: f64,
    mase_scale_from: &'static str,
    /// For a region a multi-region model was not trained on: what that means.
    #[serde(skip_serializing_if = "Option::is_none")]
    zero_shot: Option<String>,
    scores: &'a [Scores],
}

pub(crate) fn run(context: &Context, args: &EvaluateArgs) -> Result<()> {
    let (mut model, mut meta): (_, ModelMeta) = train_multi::load_model(context, &args.model_dir, &args.select)?;
    if let Some(protocol) = args.protocol
        && protocol != meta.spec.protocol
    {
        return Err(BadInput(format!(
            "the model in `{}` was trained for the {:?} protocol, not {:?}: train one with `energy train --protocol …`",
            args.model_dir.display(),
            meta.spec.protocol,
            protocol
        ))
        .into());
    }
    modeling::check_source(&args.select, &meta, &args.model_dir)?;
    modeling::check_region(&args.select, &meta, &args.model_dir)?;
    for id in std::iter::once(&meta.load).chain(&meta.exogenous) {
        modeling::require_series(context, &meta, id)?;
    }
    let range = if args.select.start.is_some() || args.select.days.is_some() {
        args.select.range(context.now)?
    } else {
        // the last DEFAULT_EVALUATE_DAYS days of stored data
        let rows = context.store.read(&meta.load, None).context("cannot read the store")?;
        let last =
            *rows.timestamps.last().ok_or_else(|| BadInput(format!("the store holds no rows of {}", meta.load)))?;
        let end = from_us(last);
        DateRange::new(end - TimeDelta::days(DEFAULT_EVALUATE_DAYS), end).map_err(BadInput)?
    };
    train_multi::fit_zero_shot(context, &mut meta, range.start_us())?;
    let spec = WindowSpec { stride: 24, ..meta.spec };
    // history before the range: the windows' context, plus a week for lags
    let lead = (spec.context + spec.gap() + 168) as i64;
    let table_range = DateRange::new(range.start - TimeDelta::hours(lead), range.end).map_err(BadInput)?;
    let table = modeling::build_features(context, &meta.load, &meta.exogenous, table_range, &meta.feature_config)?;
    let first_row = table.timestamps.iter().position(|t| *t > range.start_us()).unwrap_or(table.len());
    let mut windows = features::make_windows(&table, &meta.scaler, &spec, first_row..table.len())?;
    if let Some(block) = &meta.region_block {
        block.append(&mut windows);
    }
    modeling::check_features(&meta, &windows)?;
    // a model with as-issued weather is scored on forecasts a user could have made
    let perfect_weather_dropped = windows.drop_perfect_weather();
    if windows.count == 0 {
        return Err(BadInput(format!("no complete forecast day in {range}: give a longer range")).into());
    }
    let (mase_scale, mase_scale_from) = match meta.mase_scale {
        Some(scale) => (scale, "training split"),
        None => {
            tracing::warn!("the model predates the saved MASE scale: MASE is scaled on the evaluated range");
            (eval::mase_scale(&table, 0..table.len()), "evaluated range")
        }
    };
    let operator_id =
        modeling::operator_series(context, &meta.load, meta.source, &args.operator, meta.operator_kind.as_deref())?;
    let operator = modeling::operator_aligned(context, &table, operator_id.as_ref())?;
    let boosted = BoostedTrees::load(&args.model_dir)?;
    if boosted.is_none() {
        tracing::warn!("the model predates the boosted-trees baseline: train it again to score one");
    }
    let setup = BacktestSetup {
        table: &table,
        spec: &spec,
        scaler: &meta.scaler,
        calibration: meta.interval_calibration.as_ref(),
        operator: operator.as_deref(),
        boosted: boosted.as_ref(),
        mase_scale,
        batch_size: 64,
    };
    let scores = eval::backtest(&mut model, &windows, &setup)?;
    let first_target = table.timestamps[eval::target_rows(&spec, windows.origins[0]).start];
    let last_origin = *windows.origins.last().unwrap_or(&0);
    let last_target = table.timestamps[eval::target_rows(&spec, last_origin).end - 1];
    // the training and validation splits cover the first part of the training range; a model
    // that learnt its test split too has seen all of it
    let seen = if meta.learnt_test { 1.0 } else { meta.split.train + meta.split.validation };
    let train_end = meta.data_range.start_us() + (meta.data_range.hours() as f64 * seen) as i64 * HOUR_US;
    let report = EvaluateReport {
        model_dir: args.model_dir.display().to_string(),
        series: meta.load.to_string(),
        protocol: spec.protocol,
        first_target: modeling::format_time(first_target),
        last_target: modeling::format_time(last_target),
        forecasts: windows.count,
        skipped_imputed: windows.skipped_imputed,
        skipped_no_weather_forecast: perfect_weather_dropped,
        overlaps_training: first_target <= train_end && meta.data_range.holds_us(first_target),
        mase_scale,
        mase_scale_from,
        zero_shot: train_multi::zero_shot_note(&meta),
        scores: &scores,
    };
    if context.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "backtest of {} ({:?}): {} daily forecasts, targets {} .. {}",
        report.series, report.protocol, report.forecasts, report.first_target, report.last_target
    );
    if let Some(note) = &report.zero_shot {
        println!("{note}");
    }
    if report.overlaps_training {
        println!(
            "note: the range overlaps data the model learnt (its training and validation splits{}); scores there \
             are in-sample",
            if meta.learnt_test { ", and its test split" } else { "" }
        );
    }
    modeling::print_scores(&scores);
    Ok(())
}
