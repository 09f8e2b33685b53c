//! Conformal calibration of the p10–p90 interval: margins fitted on the validation split's
//! forecasts ([`calibrate_intervals`]), then, in a backtest, kept up to date with the errors of
//! the latest forecasts whose hours were already observed when the next one was issued
//! ([`apply_rolling_calibration`]).
use super::backtest::target_rows;
use super::metrics::Quantiles;
use crate::features::{FLAGS_IMPUTED, FeatureTable, WindowSpec, Windows};
use serde::{Deserialize, Serialize};

/// Nominal coverage of the p10–p90 interval.
pub const NOMINAL_COVERAGE: f64 = 0.8;
/// Fewest validation points per horizon step for a margin of its own (else one pooled margin).
const MIN_POINTS_PER_STEP: usize = 30;
/// Latest scored hours the rolling calibration holds: two weeks of daily forecasts.
pub const ROLLING_POINTS: usize = 14 * 24;

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
    /// Per horizon step, the validation MAE of the median (MW): the unit of the rolling
    /// calibration's scores, so that one pooled history serves every lead.
    #[serde(default)]
    pub lead_scale_mw: Vec<f64>,
    /// The latest validation scores, in units of their step's `lead_scale_mw`, oldest first
    /// (at most [`ROLLING_POINTS`]): the history a rolling calibration starts from.
    #[serde(default)]
    pub recent_scores: Vec<f64>,
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
        for (h, y, q) in scored(table, spec, origin, forecast) {
            scores[h].push(score(q, y));
            pairs.push((h, y, q));
        }
    }
    let points = pairs.len();
    if points < MIN_POINTS_PER_STEP {
        return None;
    }
    let margins_mw = if scores.iter().all(|s| s.len() >= MIN_POINTS_PER_STEP) {
        scores.into_iter().map(conformal_quantile).collect()
    } else {
        vec![conformal_quantile(scores.concat()); spec.horizon]
    };
    let covered = |widen: bool| {
        let inside = pairs
            .iter()
            .filter(|(h, y, q)| {
                let q = if widen { widened(*q, margins_mw[*h]) } else { *q };
                q.covers(*y)
            })
            .count();
        inside as f64 / points as f64
    };
    let mut abs = vec![(0.0, 0usize); spec.horizon];
    for (h, y, q) in &pairs {
        abs[*h].0 += (y - q.p50).abs();
        abs[*h].1 += 1;
    }
    let pooled = pairs.iter().map(|(_, y, q)| (y - q.p50).abs()).sum::<f64>() / points as f64;
    let lead_scale_mw: Vec<f64> = abs
        .iter()
        .map(|(sum, n)| if *n >= MIN_POINTS_PER_STEP { sum / *n as f64 } else { pooled })
        .map(|s| s.max(f64::EPSILON))
        .collect();
    let recent_scores: Vec<f64> = pairs[points.saturating_sub(ROLLING_POINTS)..]
        .iter()
        .map(|(h, y, q)| score(*q, *y) / lead_scale_mw[*h])
        .collect();
    Some(IntervalCalibration {
        validation_coverage_before: covered(false),
        validation_coverage_after: covered(true),
        margins_mw,
        points,
        lead_scale_mw,
        recent_scores,
    })
}

/// The conformity score of an interval for an actual: how far outside it the actual lies
/// (negative inside).
fn score(q: Quantiles, y: f64) -> f64 {
    (q.p10 - y).max(y - q.p90)
}

/// The real observations of a window's target hours: (step, actual, forecast).
fn scored<'a>(
    table: &'a FeatureTable,
    spec: &WindowSpec,
    origin: usize,
    forecast: &'a [Quantiles],
) -> impl Iterator<Item = (usize, f64, Quantiles)> + 'a {
    target_rows(spec, origin).enumerate().zip(forecast.iter().copied()).filter_map(|((h, row), q)| {
        let real = table.flags[row] & FLAGS_IMPUTED == 0 && table.target[row].is_finite();
        real.then(|| (h, f64::from(table.target[row]), q))
    })
}

/// The ⌈(n + 1) · 0.8⌉-th smallest of `values` (the split-conformal quantile).
fn conformal_quantile(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let k = ((n as f64 + 1.0) * NOMINAL_COVERAGE).ceil() as usize;
    values[k.clamp(1, n) - 1]
}

/// Calibrate a backtest's forecasts (windows in time order) as a user running the model daily
/// would: each window's margins come from the latest [`ROLLING_POINTS`] scores known at its
/// issue time — the validation split's to start with, then those of earlier windows whose
/// target hours had all been observed by the window's origin. Scores are pooled over leads in
/// units of each lead's validation error ([`IntervalCalibration::lead_scale_mw`]), so the
/// margins keep the shape over the horizon that validation measured and follow the level of
/// error of the latest weeks, which is what keeps coverage near nominal out of sample when the
/// test season is harder than validation's. A calibration saved without a history (older
/// models) applies its fixed margins.
pub fn apply_rolling_calibration(
    table: &FeatureTable,
    spec: &WindowSpec,
    windows: &Windows,
    forecasts: &mut [Vec<Quantiles>],
    calibration: Option<&IntervalCalibration>,
) {
    let Some(calibration) = calibration else { return };
    if calibration.recent_scores.is_empty() || calibration.lead_scale_mw.len() != spec.horizon {
        apply_calibration(forecasts, Some(calibration));
        return;
    }
    let mut history: std::collections::VecDeque<f64> = calibration.recent_scores.iter().copied().collect();
    // scores of earlier windows, released once their last target hour is observed
    let mut pending: std::collections::VecDeque<(usize, Vec<f64>)> = std::collections::VecDeque::new();
    let scale = &calibration.lead_scale_mw;
    for (&origin, forecast) in windows.origins.iter().zip(forecasts.iter_mut()) {
        while pending.front().is_some_and(|(last, _)| *last <= origin) {
            let (_, scores) = pending.pop_front().expect("checked");
            history.extend(scores);
        }
        while history.len() > ROLLING_POINTS {
            history.pop_front();
        }
        let margin = conformal_quantile(history.iter().copied().collect());
        let scores = scored(table, spec, origin, forecast).map(|(h, y, q)| score(q, y) / scale[h]).collect();
        pending.push_back((target_rows(spec, origin).end - 1, scores));
        for (q, s) in forecast.iter_mut().zip(scale) {
            *q = widened(*q, margin * s);
        }
    }
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

    /// Noisy medians with fixed ±100 MW intervals: validation noise ±1000 MW, then a test
    /// period with three times the noise. Fixed margins fitted on validation under-cover the
    /// test; rolling margins catch up from the errors already observed, and never use an
    /// error that was not known when the forecast was issued.
    #[test]
    fn rolling_calibration_follows_the_latest_errors_without_looking_ahead() {
        let table = synthetic_table(120);
        let scaler = Scaler::fit_table(&table, 0..table.len()).unwrap();
        let spec = WindowSpec { context: 24, horizon: 24, stride: 24, protocol: Protocol::Next24h };
        let validation = make_windows(&table, &scaler, &WindowSpec { stride: 6, ..spec }, 0..1200).unwrap();
        let test = make_windows(&table, &scaler, &spec, 1200..table.len()).unwrap();
        let mut rng = SplitMix64::new(11);
        let mut forecasts = |windows: &Windows, noise: f64| -> Vec<Vec<Quantiles>> {
            windows
                .origins
                .iter()
                .map(|&origin| {
                    target_rows(&spec, origin)
                        .map(|row| {
                            let p50 = f64::from(table.target[row]) + (rng.next_f64() - 0.5) * 2.0 * noise;
                            Quantiles { p10: p50 - 100.0, p50, p90: p50 + 100.0 }
                        })
                        .collect()
                })
                .collect()
        };
        let calibration = calibrate_intervals(&table, &spec, &validation, &forecasts(&validation, 1000.0)).unwrap();
        assert_eq!(calibration.recent_scores.len(), ROLLING_POINTS);
        assert_eq!(calibration.lead_scale_mw.len(), 24);
        let raw = forecasts(&test, 3000.0);
        let coverage = |f: &[Vec<Quantiles>], from: usize| {
            let (mut inside, mut n) = (0, 0);
            for (&origin, forecast) in test.origins.iter().zip(f).skip(from) {
                for (_, y, q) in scored(&table, &spec, origin, forecast) {
                    inside += usize::from(q.covers(y));
                    n += 1;
                }
            }
            inside as f64 / n as f64
        };
        let mut fixed = raw.clone();
        apply_calibration(&mut fixed, Some(&calibration));
        let mut rolling = raw.clone();
        apply_rolling_calibration(&table, &spec, &test, &mut rolling, Some(&calibration));
        // after two weeks the history holds only test errors
        let settled = 15;
        assert!(test.count > settled + 10, "{} test windows", test.count);
        assert!(coverage(&fixed, settled) < 0.5, "fixed {}", coverage(&fixed, settled));
        assert!((0.7..0.9).contains(&coverage(&rolling, settled)), "rolling {}", coverage(&rolling, settled));
        // the first test window uses the validation history only: its margins are those scores'
        let first_margin = conformal_quantile(calibration.recent_scores.clone());
        let q = rolling[0][5];
        assert!((raw[0][5].p10 - q.p10 - first_margin * calibration.lead_scale_mw[5]).abs() < 1e-6);
        // no look-ahead: a window's own errors (unknown at its issue time) change neither its
        // margins nor any earlier window's; the next window's, whose origin is its last
        // target hour, they do
        let mut changed = raw.clone();
        let k = 10;
        changed[k].iter_mut().for_each(|q| {
            q.p10 += 5000.0;
            q.p50 += 5000.0;
            q.p90 += 5000.0;
        });
        let shifted = changed.clone();
        apply_rolling_calibration(&table, &spec, &test, &mut changed, Some(&calibration));
        assert_eq!(changed[..k], rolling[..k]);
        let margins = |f: &[Vec<Quantiles>], base: &[Vec<Quantiles>], w: usize| -> Vec<f64> {
            f[w].iter().zip(&base[w]).map(|(a, b)| b.p10 - a.p10).collect()
        };
        let same = |a: Vec<f64>, b: Vec<f64>| a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-6);
        assert!(same(margins(&changed, &shifted, k), margins(&rolling, &raw, k)));
        assert!(!same(margins(&changed, &shifted, k + 1), margins(&rolling, &raw, k + 1)));
    }

    /// A negative margin narrows an interval but never crosses the median.
    #[test]
    fn narrowing_stops_at_the_median() {
        let q = widened(Quantiles { p10: 90.0, p50: 100.0, p90: 130.0 }, -20.0);
        assert_eq!((q.p10, q.p50, q.p90), (100.0, 100.0, 110.0));
    }
}
