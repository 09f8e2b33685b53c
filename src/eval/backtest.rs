//! The one backtest: forecast every window of a feature table with a trained model, apply the
//! model's interval calibration, and score it beside the seasonal naives and the operator's
//! own forecast over the same target hours. `train` runs it on its test split, `evaluate` on
//! any range; both pass the scale saved with the model ([`mase_scale`]).
use super::boosted::{BOOSTED, BoostedError, BoostedTrees};
use super::calibration::{IntervalCalibration, apply_rolling_calibration};
use super::metrics::{self, Quantiles, Scores};
use crate::features::{self, FLAGS_IMPUTED, FeatureTable, Scaler, WindowSpec, Windows};
use crate::ingest::SeriesRows;
use crate::model::train;
use crate::model::transformer::Forecaster;
use crate::time::HOUR_US;

/// Name of the model's row in every score table.
pub const MODEL: &str = "model";
/// Name of the lag-24 seasonal naive's row.
pub const NAIVE_DAY: &str = "seasonal naive (24 h)";
/// Name of the lag-168 seasonal naive's row.
pub const NAIVE_WEEK: &str = "seasonal naive (168 h)";
/// Name of the operator forecast's row.
pub const OPERATOR: &str = "operator day-ahead forecast";
/// Name of the row of the model's regression base alone (what the network corrects).
pub const BASE: &str = "regression base (the model's starting point)";

/// The model could not forecast (a shape mismatch or an MLX failure).
#[derive(Debug, thiserror::Error)]
#[error("forecasting failed: {0}")]
pub struct PredictError(pub String);

impl From<BoostedError> for PredictError {
    fn from(e: BoostedError) -> Self {
        PredictError(e.to_string())
    }
}

/// What a backtest scores with besides the model and its windows.
pub struct BacktestSetup<'a> {
    pub table: &'a FeatureTable,
    pub spec: &'a WindowSpec,
    pub scaler: &'a Scaler,
    /// The model's p10–p90 calibration, applied rolling ([`apply_rolling_calibration`]; none:
    /// the intervals as the model gives them).
    pub calibration: Option<&'a IntervalCalibration>,
    /// The operator's forecast aligned to the table's rows ([`align_to_rows`]), if any.
    pub operator: Option<&'a [f64]>,
    /// The boosted-trees baseline fitted with the model, if any.
    pub boosted: Option<&'a BoostedTrees>,
    /// The MASE denominator ([`mase_scale`] of the training split).
    pub mase_scale: f64,
    /// Windows per inference call.
    pub batch_size: usize,
}

/// Forecast and calibrate every window, and score it: the model, the two seasonal naives and,
/// where given, the boosted baseline and the operator.
pub fn backtest(model: &mut Forecaster, windows: &Windows, setup: &BacktestSetup) -> Result<Vec<Scores>, PredictError> {
    let mut forecasts = predict(model, windows, setup.scaler, setup.batch_size)?;
    apply_rolling_calibration(setup.table, setup.spec, windows, &mut forecasts, setup.calibration);
    let boosted = match setup.boosted {
        Some(trees) => Some(trees.predict(windows, setup.spec, setup.scaler)?),
        None => None,
    };
    // the regression base alone: what the network's correction is measured against
    let base: Option<Vec<Vec<f64>>> = setup.scaler.base.as_ref().map(|_| {
        windows
            .bases
            .chunks(windows.horizon)
            .map(|day| day.iter().map(|v| f64::from(setup.scaler.inverse(features::COL_VALUE, *v))).collect())
            .collect()
    });
    let others = Others { boosted: boosted.as_deref(), operator: setup.operator, base: base.as_deref() };
    Ok(score_windows(setup.table, setup.spec, windows, &forecasts, &others, setup.mase_scale))
}

/// The forecasters scored beside the model and the naives, where given.
#[derive(Default)]
pub struct Others<'a> {
    /// Boosted-trees forecasts, `[window][hour]` in MW.
    pub boosted: Option<&'a [Vec<f64>]>,
    /// The operator's forecast aligned to the table's rows.
    pub operator: Option<&'a [f64]>,
    /// The model's regression base alone, `[window][hour]` in MW.
    pub base: Option<&'a [Vec<f64>]>,
}

/// The MASE scale of a model: the in-sample MAE of the lag-24 naive forecast over the cleaned
/// target of `train_rows` (the training split); NaN when the split holds no pair.
pub fn mase_scale(table: &FeatureTable, train_rows: std::ops::Range<usize>) -> f64 {
    let cleaned: Vec<f64> = table.target[train_rows].iter().map(|v| f64::from(*v)).collect();
    metrics::naive_scale(&cleaned, 24).unwrap_or(f64::NAN)
}

/// Forecasts of every window, in MW: `[window][hour]` quantiles, uncalibrated: the model's
/// quantiles of the correction plus the window's base ([`Windows::bases`]).
pub fn predict(
    model: &mut Forecaster,
    windows: &Windows,
    scaler: &Scaler,
    batch_size: usize,
) -> Result<Vec<Vec<Quantiles>>, PredictError> {
    let flat = train::predict(model, &windows.inputs, windows.count, windows.positions, windows.n_features, batch_size)
        .map_err(|e| PredictError(e.to_string()))?;
    let q = model.config().quantiles.len();
    let inverse = |v: f32| f64::from(scaler.inverse(features::COL_VALUE, v));
    Ok((0..windows.count)
        .map(|w| {
            (0..windows.horizon)
                .map(|h| {
                    let at = (w * windows.horizon + h) * q;
                    // the model forecasts the correction of the window's base (its week-back naive)
                    let base = windows.bases[w * windows.horizon + h];
                    let mut values = [flat[at], flat[at + q / 2], flat[at + q - 1]].map(|v| inverse(v + base));
                    values.sort_by(f64::total_cmp);
                    Quantiles { p10: values[0], p50: values[1], p90: values[2] }
                })
                .collect()
        })
        .collect())
}

/// The table rows each window forecasts.
pub fn target_rows(spec: &WindowSpec, origin: usize) -> std::ops::Range<usize> {
    let first = origin + spec.gap() + 1;
    first..first + spec.horizon
}

/// Score the forecasts and the baselines over the same target hours: seasonal naive with lag
/// 24 (the same hour yesterday, or two days back where yesterday is not known at issue time)
/// and lag 168, then the boosted baseline and the operator's forecast when given. Only real
/// observations are scored (imputed hours are not). The model's row also holds its p10–p90
/// coverage per lead hour.
pub fn score_windows(
    table: &FeatureTable,
    spec: &WindowSpec,
    windows: &Windows,
    forecasts: &[Vec<Quantiles>],
    others: &Others,
    scale: f64,
) -> Vec<Scores> {
    let observed: Vec<f64> = table.target.iter().map(|v| f64::from(*v)).collect();
    let mut actuals = Vec::new();
    let mut model = Vec::new();
    let (mut naive_day, mut naive_week, mut boosted, mut operator) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut base = Vec::new();
    for (w, &origin) in windows.origins.iter().enumerate() {
        let rows = target_rows(spec, origin);
        naive_day.extend(metrics::seasonal_naive(&observed, origin, rows.clone(), 24));
        naive_week.extend(metrics::seasonal_naive(&observed, origin, rows.clone(), 168));
        if let Some(b) = others.boosted {
            boosted.extend_from_slice(&b[w]);
        }
        if let Some(b) = others.base {
            base.extend_from_slice(&b[w]);
        }
        for (h, row) in rows.enumerate() {
            let real = table.flags[row] & FLAGS_IMPUTED == 0;
            actuals.push(if real { observed[row] } else { f64::NAN });
            model.push(forecasts[w][h]);
            if let Some(op) = others.operator {
                operator.push(op[row]);
            }
        }
    }
    let mut model_scores = metrics::score_quantiles(MODEL, &model, &actuals, scale);
    model_scores.coverage_by_lead = metrics::coverage_by_lead(&model, &actuals, spec.horizon);
    let medians: Vec<f64> = model.iter().map(|q| q.p50).collect();
    model_scores.mape_by_lead = metrics::mape_by_lead(&medians, &actuals, spec.horizon);
    let points = |name: &str, forecasts: &[f64]| {
        let mut scores = metrics::score_points(name, forecasts, &actuals, scale);
        scores.mape_by_lead = metrics::mape_by_lead(forecasts, &actuals, spec.horizon);
        scores
    };
    let mut scores = vec![model_scores, points(NAIVE_DAY, &naive_day), points(NAIVE_WEEK, &naive_week)];
    if others.boosted.is_some() {
        scores.push(points(BOOSTED, &boosted));
    }
    if others.operator.is_some() {
        scores.push(points(OPERATOR, &operator));
    }
    if others.base.is_some() {
        scores.push(points(BASE, &base));
    }
    scores
}

/// A stored series aligned to a table's hourly rows (`timestamps`, consecutive hours): its
/// value at each row, NaN where it has none.
pub fn align_to_rows(timestamps: &[i64], rows: &SeriesRows) -> Vec<f64> {
    let mut out = vec![f64::NAN; timestamps.len()];
    let first = timestamps.first().copied().unwrap_or(0);
    for (t, v) in rows.timestamps.iter().zip(&rows.values) {
        let index = (t - first).div_euclid(HOUR_US);
        if index >= 0 && (index as usize) < out.len() && timestamps[index as usize] == *t {
            out[index as usize] = v.unwrap_or(f64::NAN);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::synthetic_table;
    use crate::features::{Protocol, make_windows};
    use crate::ingest::SeriesId;

    #[test]
    fn alignment_places_values_by_hour_and_leaves_gaps() {
        let timestamps: Vec<i64> = (1..=5).map(|h| h * HOUR_US).collect();
        let mut rows = SeriesRows::new(SeriesId::new("file", "X", "DF"));
        rows.timestamps = vec![0, 2 * HOUR_US, 3 * HOUR_US, 9 * HOUR_US];
        rows.values = vec![Some(1.0), Some(2.0), None, Some(9.0)];
        let aligned = align_to_rows(&timestamps, &rows);
        assert!(aligned[0].is_nan() && aligned[2].is_nan() && aligned[3].is_nan() && aligned[4].is_nan());
        assert_eq!(aligned[1], 2.0);
    }

    /// A perfect operator forecast scores zero error; the naives score what they miss; the
    /// model's row comes first and every row scores the same hours.
    #[test]
    fn scores_every_forecaster_over_the_same_hours() {
        let table = synthetic_table(30);
        let spec = WindowSpec { context: 48, horizon: 24, stride: 24, protocol: Protocol::Next24h };
        let scaler = Scaler::fit_table(&table, 0..table.len()).unwrap();
        let windows = make_windows(&table, &scaler, &spec, 200..table.len()).unwrap();
        let truth: Vec<f64> = table.target.iter().map(|v| f64::from(*v)).collect();
        let forecasts: Vec<Vec<Quantiles>> = windows
            .origins
            .iter()
            .map(|&o| {
                target_rows(&spec, o)
                    .map(|r| Quantiles { p10: truth[r] - 1.0, p50: truth[r], p90: truth[r] + 1.0 })
                    .collect()
            })
            .collect();
        let scale = mase_scale(&table, 0..200);
        assert!(scale > 0.0);
        let boosted: Vec<Vec<f64>> = forecasts.iter().map(|w| w.iter().map(|q| q.p50 + 10.0).collect()).collect();
        let base: Vec<Vec<f64>> = forecasts.iter().map(|w| w.iter().map(|q| q.p50 - 5.0).collect()).collect();
        let others = Others { boosted: Some(&boosted), operator: Some(&truth), base: Some(&base) };
        let scores = score_windows(&table, &spec, &windows, &forecasts, &others, scale);
        let names: Vec<&str> = scores.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [MODEL, NAIVE_DAY, NAIVE_WEEK, BOOSTED, OPERATOR, BASE]);
        assert!((scores[3].mae - 10.0).abs() < 1e-9);
        assert!((scores[5].mae - 5.0).abs() < 1e-9);
        // every truth lies inside its ±1 MW interval, at every lead
        assert_eq!(scores[0].coverage_by_lead, vec![1.0; 24]);
        for s in &scores {
            assert_eq!(s.mape_by_lead.len(), 24, "{}", s.name);
            // every lead has as many hours, so the overall MAPE is the mean of the leads'
            let mean = s.mape_by_lead.iter().sum::<f64>() / 24.0;
            assert!(
                (mean - s.mape_percent).abs() < 1e-9 * s.mape_percent.max(1.0),
                "{}: {mean} against {}",
                s.name,
                s.mape_percent
            );
        }
        assert!(scores.iter().all(|s| s.hours == scores[0].hours && s.hours > 0));
        assert_eq!(scores[0].mae, 0.0);
        assert_eq!(scores[4].mae, 0.0);
        assert!(scores[1].mae > 0.0 && (scores[1].mase - scores[1].mae / scale).abs() < 1e-9);
    }
}
