//! What `train`, `forecast` and `evaluate` share: which series a model uses, the metadata saved
//! beside its weights, and turning windows into scored forecasts.
use super::{BadInput, Context};
use crate::cli::SelectArgs;
use crate::eval::{self, Quantiles, Scores};
use crate::features::{self, FLAGS_IMPUTED, FeatureConfig, FeatureTable, Scaler, WindowSpec, Windows};
use crate::ingest::synthetic::{KIND_LOAD, KIND_TEMP};
use crate::ingest::{SeriesId, SourceKind};
use crate::model::transformer::Forecaster;
use crate::model::{checkpoint, train};
use crate::time::{DateRange, from_us};
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything `forecast` and `evaluate` need besides the weights (saved in `config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ModelMeta {
    pub source: SourceKind,
    pub region: String,
    pub load: SeriesId,
    pub exogenous: Vec<SeriesId>,
    pub spec: WindowSpec,
    pub scaler: Scaler,
    pub feature_names: Vec<String>,
    pub feature_config: FeatureConfig,
    pub data_range: DateRange,
    /// The chronological split the model was trained with.
    #[serde(default)]
    pub split: crate::config::SplitConfig,
    pub trained_at: DateTime<Utc>,
    pub seed: u64,
    /// Test-split scores at training time (model and baselines).
    pub test_scores: Vec<Scores>,
    /// The p10–p90 widening fitted on the validation split (absent in older models: none).
    #[serde(default)]
    pub interval_calibration: Option<IntervalCalibration>,
}

/// Nominal coverage of the p10–p90 interval.
pub(crate) const NOMINAL_COVERAGE: f64 = 0.8;
/// Fewest validation points per horizon step for a margin of its own (else one pooled margin).
const MIN_POINTS_PER_STEP: usize = 30;

/// Split-conformal calibration of the p10–p90 interval (conformalized quantile regression,
/// Romano, Patterson, Candès 2019). Pinball loss alone gives intervals that cover less than
/// 80 % out of sample; on the validation split, each real observation y with forecast (p10,
/// p90) scores `max(p10 − y, y − p90)`, and the margin is the ⌈(n + 1) · 0.8⌉-th smallest of
/// the n scores of a horizon step. Every forecast's p10 is lowered and p90 raised by its step's
/// margin (a negative margin narrows an interval that covered too much; p50 is never crossed).
/// The validation split also chose the epoch (early stopping), so the guarantee is approximate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct IntervalCalibration {
    /// MW subtracted from p10 and added to p90, per horizon step.
    pub margins_mw: Vec<f64>,
    /// Validation points the margins were fitted on.
    pub points: usize,
    /// Validation p10–p90 coverage before and after calibration.
    pub validation_coverage_before: f64,
    pub validation_coverage_after: f64,
}

/// Fit the calibration on forecasts of validation windows; `None` with fewer than
/// [`MIN_POINTS_PER_STEP`] real observations in all.
pub(crate) fn calibrate_intervals(
    table: &FeatureTable,
    spec: &WindowSpec,
    windows: &Windows,
    forecasts: &[Vec<Quantiles>],
) -> Option<IntervalCalibration> {
    let mut scores: Vec<Vec<f64>> = vec![Vec::new(); spec.horizon];
    let mut pairs = Vec::new();
    for (&origin, forecast) in windows.origins.iter().zip(forecasts) {
        for ((h, row), q) in target_rows(spec, origin).enumerate().zip(forecast.iter().copied()) {
            if table.flags[row] & FLAGS_IMPUTED != 0 || !table.target[row].is_finite() {
                continue;
            }
            let y = f64::from(table.target[row]);
            scores[h].push((q.p10 - y).max(y - q.p90));
            pairs.push((h, y, q));
        }
    }
    let points = pairs.len();
    if points < MIN_POINTS_PER_STEP {
        return None;
    }
    let margin = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let k = ((n as f64 + 1.0) * NOMINAL_COVERAGE).ceil() as usize;
        values[k.clamp(1, n) - 1]
    };
    let margins_mw = if scores.iter().all(|s| s.len() >= MIN_POINTS_PER_STEP) {
        scores.into_iter().map(margin).collect()
    } else {
        vec![margin(scores.concat()); spec.horizon]
    };
    let covered = |widen: bool| {
        let inside = pairs
            .iter()
            .filter(|(h, y, q)| {
                let q = if widen { widened(*q, margins_mw[*h]) } else { *q };
                (q.p10..=q.p90).contains(y)
            })
            .count();
        inside as f64 / points as f64
    };
    Some(IntervalCalibration {
        validation_coverage_before: covered(false),
        validation_coverage_after: covered(true),
        margins_mw,
        points,
    })
}

fn widened(q: Quantiles, margin: f64) -> Quantiles {
    Quantiles { p10: (q.p10 - margin).min(q.p50), p50: q.p50, p90: (q.p90 + margin).max(q.p50) }
}

/// Apply a model's calibration (if any) to its forecasts.
pub(crate) fn apply_calibration(forecasts: &mut [Vec<Quantiles>], calibration: Option<&IntervalCalibration>) {
    let Some(calibration) = calibration else { return };
    for window in forecasts {
        for (q, margin) in window.iter_mut().zip(&calibration.margins_mw) {
            *q = widened(*q, *margin);
        }
    }
}

/// The load series and the exogenous series (those the store holds) a model of `region` uses.
pub(crate) fn series_for(context: &Context, source: SourceKind, region: &str) -> Result<(SeriesId, Vec<SeriesId>)> {
    let load_kind = match source {
        SourceKind::Caiso => "ACTUAL",
        _ => KIND_LOAD,
    };
    let load = SeriesId::new(source.as_str(), region, load_kind);
    let stored = context.store.list_series().context("cannot read the store")?;
    if !stored.contains(&load) {
        return Err(BadInput(format!(
            "the store `{}` holds no series {load}; run `energy collect --source {source} --region {region}` first",
            context.store.root().display()
        ))
        .into());
    }
    let temp = SeriesId::new(source.as_str(), region, KIND_TEMP);
    let exogenous = if stored.contains(&temp) { vec![temp] } else { Vec::new() };
    Ok((load, exogenous))
}

/// Fail with a hint to collect when the store lacks a series the model needs.
pub(crate) fn require_series(context: &Context, meta: &ModelMeta, id: &SeriesId) -> Result<(), BadInput> {
    if context.store.has_series(id) {
        return Ok(());
    }
    Err(BadInput(format!(
        "the store `{}` holds no series {id}, which the model (region {}) needs; run `energy collect --source {} --region {}` first",
        context.store.root().display(),
        meta.region,
        id.source,
        id.region
    )))
}

/// The feature table of `load` in `range`; a range the store holds no rows of is the user's
/// choice (exit code 1), not a failure.
pub(crate) fn build_features(
    context: &Context,
    load: &SeriesId,
    exogenous: &[SeriesId],
    range: DateRange,
    config: &FeatureConfig,
) -> Result<FeatureTable> {
    match features::build(&context.store, load, exogenous, Some(range), config) {
        Ok(table) => Ok(table),
        Err(e @ features::FeatureError::Empty { .. }) => {
            Err(BadInput(format!("{e}: choose a range the store holds (see `energy status`)")).into())
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot build the features")),
    }
}

/// The one region the flags select.
pub(crate) fn one_region(select: &SelectArgs) -> Result<String, BadInput> {
    let regions = select.regions("SYN1")?;
    match regions.as_slice() {
        [region] => Ok(region.clone()),
        _ => Err(BadInput(format!("a model is trained for one region at a time (got {})", regions.join(", ")))),
    }
}

/// The operator's own day-ahead forecast of a load series, where the store holds one.
pub(crate) fn operator_series(context: &Context, load: &SeriesId) -> Option<SeriesId> {
    let kind = match load.source.as_str() {
        "eia" => "DF",
        "caiso" => "DAM",
        _ => return None,
    };
    let id = SeriesId::new(&load.source, &load.region, kind);
    context.store.list_series().ok()?.contains(&id).then_some(id)
}

/// Forecasts of every window, in MW: `[window][hour]` quantiles.
pub(crate) fn predict(
    model: &mut Forecaster,
    windows: &Windows,
    scaler: &Scaler,
    batch_size: usize,
) -> Result<Vec<Vec<Quantiles>>> {
    let flat = train::predict(model, &windows.inputs, windows.count, windows.positions, windows.n_features, batch_size)
        .map_err(|e| anyhow::anyhow!("forecasting failed: {e}"))?;
    let q = model.config().quantiles.len();
    let inverse = |v: f32| f64::from(scaler.inverse(features::COL_VALUE, v));
    Ok((0..windows.count)
        .map(|w| {
            (0..windows.horizon)
                .map(|h| {
                    let at = (w * windows.horizon + h) * q;
                    let mut values = [inverse(flat[at]), inverse(flat[at + q / 2]), inverse(flat[at + q - 1])];
                    values.sort_by(f64::total_cmp);
                    Quantiles { p10: values[0], p50: values[1], p90: values[2] }
                })
                .collect()
        })
        .collect())
}

/// The table rows each window forecasts.
pub(crate) fn target_rows(spec: &WindowSpec, origin: usize) -> std::ops::Range<usize> {
    let first = origin + spec.gap() + 1;
    first..first + spec.horizon
}

/// Score the model's forecasts and the baselines over the same target hours: seasonal naive
/// with lag 24 (the same hour yesterday, or two days back where yesterday is not known at
/// issue time) and lag 168, and the operator's forecast when given. Only real observations are
/// scored (imputed hours are not).
pub(crate) fn score_windows(
    table: &FeatureTable,
    spec: &WindowSpec,
    windows: &Windows,
    forecasts: &[Vec<Quantiles>],
    operator: Option<&[f64]>,
    scale: f64,
) -> Vec<Scores> {
    let observed: Vec<f64> = table.target.iter().map(|v| f64::from(*v)).collect();
    let mut actuals = Vec::new();
    let mut model = Vec::new();
    let (mut naive_day, mut naive_week, mut operator_points) = (Vec::new(), Vec::new(), Vec::new());
    for (w, &origin) in windows.origins.iter().enumerate() {
        let rows = target_rows(spec, origin);
        naive_day.extend(eval::seasonal_naive(&observed, origin, rows.clone(), 24));
        naive_week.extend(eval::seasonal_naive(&observed, origin, rows.clone(), 168));
        for (h, row) in rows.enumerate() {
            let real = table.flags[row] & FLAGS_IMPUTED == 0;
            actuals.push(if real { observed[row] } else { f64::NAN });
            model.push(forecasts[w][h]);
            if let Some(op) = operator {
                operator_points.push(op[row]);
            }
        }
    }
    let mut scores = vec![
        eval::score_quantiles("model", &model, &actuals, scale),
        eval::score_points("seasonal naive (24 h)", &naive_day, &actuals, scale),
        eval::score_points("seasonal naive (168 h)", &naive_week, &actuals, scale),
    ];
    if operator.is_some() {
        scores.push(eval::score_points("operator day-ahead forecast", &operator_points, &actuals, scale));
    }
    scores
}

/// The operator forecast aligned to the table's rows (NaN where absent).
pub(crate) fn operator_aligned(context: &Context, table: &FeatureTable, id: &SeriesId) -> Result<Vec<f64>> {
    let rows = context.store.read(id, None)?;
    let mut out = vec![f64::NAN; table.timestamps.len()];
    let first = table.timestamps.first().copied().unwrap_or(0);
    for (t, v) in rows.timestamps.iter().zip(&rows.values) {
        let index = (t - first) / crate::time::HOUR_US;
        if index >= 0 && (index as usize) < out.len() && table.timestamps[index as usize] == *t {
            out[index as usize] = v.unwrap_or(f64::NAN);
        }
    }
    Ok(out)
}

/// Refuse `--region` flags that name another region than the model's.
pub(crate) fn check_region(select: &SelectArgs, meta: &ModelMeta, dir: &Path) -> Result<(), BadInput> {
    if select.regions.is_empty() || select.regions == [meta.region.clone()] {
        return Ok(());
    }
    Err(BadInput(format!(
        "the model in `{}` was trained on region {}, not {}",
        dir.display(),
        meta.region,
        select.regions.join(", ")
    )))
}

/// Load a checkpoint and its metadata.
pub(crate) fn load_model(dir: &Path) -> Result<(Forecaster, ModelMeta)> {
    if !dir.is_dir() {
        return Err(BadInput(format!(
            "no model in `{}`: the folder does not exist (train one with `energy train --model-dir {}`)",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    let (model, _config, extra) =
        checkpoint::load(dir).with_context(|| format!("cannot load the model in `{}`", dir.display()))?;
    let meta: ModelMeta = serde_json::from_value(extra).with_context(|| {
        format!("the model in `{}` lacks its metadata (was it saved by `energy train`?)", dir.display())
    })?;
    Ok((model, meta))
}

/// A table of scores for the terminal.
pub(crate) fn print_scores(scores: &[Scores]) {
    println!(
        "{:<30} {:>7} {:>9} {:>11} {:>7} {:>10} {:>9}",
        "forecaster", "hours", "MAPE %", "MAE MW", "MASE", "pinball", "p10-p90"
    );
    for s in scores {
        let coverage = s.coverage_p10_p90.map_or("-".to_string(), |c| format!("{:.0} %", 100.0 * c));
        println!(
            "{:<30} {:>7} {:>9.2} {:>11.1} {:>7.3} {:>10.1} {:>9}",
            s.name, s.hours, s.mape_percent, s.mae, s.mase, s.pinball, coverage
        );
    }
}

pub(crate) fn format_time(us: i64) -> String {
    from_us(us).format("%Y-%m-%dT%H:%MZ").to_string()
}

/// Trainable scalars of a model.
pub(crate) fn parameter_count(model: &Forecaster) -> usize {
    use mlx_rs::module::ModuleParameters;
    model.parameters().flatten().values().map(|a| a.size()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::synthetic_table;
    use crate::features::{Protocol, make_windows};

    /// Intervals far too narrow around noisy medians: the margins widen them to 80 % coverage
    /// of the calibration points, per horizon step, and are applied as fitted.
    #[test]
    fn calibration_widens_over_confident_intervals_to_nominal_coverage() {
        let table = synthetic_table(40);
        let scaler = Scaler::fit_table(&table, 0..table.len()).unwrap();
        let spec = WindowSpec { context: 24, horizon: 24, stride: 2, protocol: Protocol::Next24h };
        let windows = make_windows(&table, &scaler, &spec, 0..table.len()).unwrap();
        let mut state = 7u64;
        let mut noise = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2000.0
        };
        let forecasts: Vec<Vec<Quantiles>> = windows
            .origins
            .iter()
            .map(|&origin| {
                target_rows(&spec, origin)
                    .map(|row| {
                        let p50 = f64::from(table.target[row]) + noise();
                        Quantiles { p10: p50 - 100.0, p50, p90: p50 + 100.0 }
                    })
                    .collect()
            })
            .collect();
        let calibration = calibrate_intervals(&table, &spec, &windows, &forecasts).unwrap();
        assert_eq!(calibration.points, windows.count * 24);
        assert_eq!(calibration.margins_mw.len(), 24);
        assert!(calibration.validation_coverage_before < 0.2, "{calibration:?}");
        assert!((0.8..0.85).contains(&calibration.validation_coverage_after), "{calibration:?}");
        // uniform noise of ±1000 MW: 80 % coverage needs a half-width near 800 MW
        assert!(calibration.margins_mw.iter().all(|m| (550.0..850.0).contains(m)), "{calibration:?}");
        let mut applied = forecasts.clone();
        apply_calibration(&mut applied, Some(&calibration));
        let (before, after) = (forecasts[3][5], applied[3][5]);
        let margin = calibration.margins_mw[5];
        assert_eq!((after.p10, after.p50, after.p90), (before.p10 - margin, before.p50, before.p90 + margin));
        apply_calibration(&mut applied, None);
        assert_eq!(applied[3][5], after);
        // too few points: no calibration
        assert!(calibrate_intervals(&table, &spec, &windows, &forecasts[..1]).is_none());
    }

    /// A negative margin narrows an interval but never crosses the median.
    #[test]
    fn narrowing_stops_at_the_median() {
        let q = widened(Quantiles { p10: 90.0, p50: 100.0, p90: 130.0 }, -20.0);
        assert_eq!((q.p10, q.p50, q.p90), (100.0, 100.0, 110.0));
    }
}
