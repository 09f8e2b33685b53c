//! Split-conformal calibration of the p10–p90 interval: margins fitted on the validation
//! split's forecasts, applied to every later forecast of the model.
use super::backtest::target_rows;
use super::metrics::Quantiles;
use crate::features::{FLAGS_IMPUTED, FeatureTable, WindowSpec, Windows};
use serde::{Deserialize, Serialize};

/// Nominal coverage of the p10–p90 interval.
pub const NOMINAL_COVERAGE: f64 = 0.8;
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
pub struct IntervalCalibration {
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
pub fn calibrate_intervals(
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
pub fn apply_calibration(forecasts: &mut [Vec<Quantiles>], calibration: Option<&IntervalCalibration>) {
    let Some(calibration) = calibration else { return };
    for window in forecasts {
        for (q, margin) in window.iter_mut().zip(&calibration.margins_mw) {
            *q = widened(*q, *margin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::synthetic_table;
    use crate::features::{Protocol, Scaler, make_windows};
    use crate::rng::SplitMix64;

    /// Intervals far too narrow around noisy medians: the margins widen them to 80 % coverage
    /// of the calibration points, per horizon step, and are applied as fitted.
    #[test]
    fn calibration_widens_over_confident_intervals_to_nominal_coverage() {
        let table = synthetic_table(40);
        let scaler = Scaler::fit_table(&table, 0..table.len()).unwrap();
        let spec = WindowSpec { context: 24, horizon: 24, stride: 2, protocol: Protocol::Next24h };
        let windows = make_windows(&table, &scaler, &spec, 0..table.len()).unwrap();
        let mut rng = SplitMix64::new(7);
        let mut noise = || (rng.next_f64() - 0.5) * 2000.0;
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
