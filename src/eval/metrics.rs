//! Forecast metrics (MAPE, MAE, MASE, pinball loss, interval coverage) and the seasonal-naive
//! baselines every model is judged against.
use serde::{Deserialize, Serialize};

/// Scores of one forecaster over a set of (forecast, actual) pairs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    pub name: String,
    /// Pairs scored (hours).
    pub hours: usize,
    pub mape_percent: f64,
    pub mae: f64,
    /// MAE divided by the in-sample MAE of the lag-24 naive forecast on the training data.
    pub mase: f64,
    /// Mean pinball loss over p10/p50/p90 (point forecasts: the absolute error halved).
    pub pinball: f64,
    /// Share of actuals inside [p10, p90] (point forecasts: none).
    pub coverage_p10_p90: Option<f64>,
    /// The same share per lead hour of the horizon (the first target hour first); empty for
    /// point forecasts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coverage_by_lead: Vec<f64>,
    /// MAPE % per lead hour of the horizon (the first target hour first; a quantile forecast
    /// by its p50); empty where not computed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mape_by_lead: Vec<f64>,
}

/// Quantile forecasts of one hour: p10, p50, p90.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl Quantiles {
    /// Is `y` inside [p10, p90]?
    pub fn covers(&self, y: f64) -> bool {
        (self.p10..=self.p90).contains(&y)
    }
}

/// The pinball (quantile) loss of forecast `q` at level `tau` for actual `y`.
pub fn pinball(tau: f64, q: f64, y: f64) -> f64 {
    let d = y - q;
    if d >= 0.0 { tau * d } else { (tau - 1.0) * d }
}

/// Mean absolute error of the lag-`season` naive forecast over `series` (the MASE scale).
/// Pairs with a missing value are skipped; `None` when there is no pair.
pub fn naive_scale(series: &[f64], season: usize) -> Option<f64> {
    let (sum, n) = series
        .iter()
        .skip(season)
        .zip(series)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .fold((0.0, 0usize), |(s, n), (a, b)| (s + (a - b).abs(), n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Score quantile forecasts against actuals. Pairs whose actual is not finite are skipped.
pub fn score_quantiles(name: &str, forecasts: &[Quantiles], actuals: &[f64], scale: f64) -> Scores {
    let mut acc = Accumulator::default();
    for (f, y) in forecasts.iter().zip(actuals) {
        if !y.is_finite() || !f.p50.is_finite() {
            continue;
        }
        acc.add(f.p50, *y);
        acc.pinball += (pinball(0.1, f.p10, *y) + pinball(0.5, f.p50, *y) + pinball(0.9, f.p90, *y)) / 3.0;
        acc.covered += usize::from(f.covers(*y));
    }
    acc.finish(name, scale, true)
}

/// p10–p90 coverage per lead hour of forecasts laid out window-major (`horizon` hours per
/// window); pairs whose actual is not finite are skipped, a lead with none is NaN.
pub fn coverage_by_lead(forecasts: &[Quantiles], actuals: &[f64], horizon: usize) -> Vec<f64> {
    let (mut covered, mut n) = (vec![0usize; horizon], vec![0usize; horizon]);
    for (i, (f, y)) in forecasts.iter().zip(actuals).enumerate() {
        if y.is_finite() && f.p50.is_finite() {
            n[i % horizon] += 1;
            covered[i % horizon] += usize::from(f.covers(*y));
        }
    }
    covered.iter().zip(&n).map(|(c, n)| if *n == 0 { f64::NAN } else { *c as f64 / *n as f64 }).collect()
}

/// MAPE % per lead hour of point forecasts laid out window-major (`horizon` hours per window);
/// pairs with a non-finite or zero actual or a non-finite forecast are skipped, a lead with none
/// is NaN.
pub fn mape_by_lead(forecasts: &[f64], actuals: &[f64], horizon: usize) -> Vec<f64> {
    let (mut sum, mut n) = (vec![0.0f64; horizon], vec![0usize; horizon]);
    for (i, (f, y)) in forecasts.iter().zip(actuals).enumerate() {
        if y.is_finite() && y.abs() > f64::EPSILON && f.is_finite() {
            sum[i % horizon] += ((f - y) / y).abs();
            n[i % horizon] += 1;
        }
    }
    sum.iter().zip(&n).map(|(s, n)| if *n == 0 { f64::NAN } else { 100.0 * s / *n as f64 }).collect()
}

/// Score point forecasts (baselines, operator forecasts) against actuals.
pub fn score_points(name: &str, forecasts: &[f64], actuals: &[f64], scale: f64) -> Scores {
    let mut acc = Accumulator::default();
    for (f, y) in forecasts.iter().zip(actuals) {
        if !y.is_finite() || !f.is_finite() {
            continue;
        }
        acc.add(*f, *y);
        acc.pinball += pinball(0.5, *f, *y);
    }
    acc.finish(name, scale, false)
}

#[derive(Default)]
struct Accumulator {
    n: usize,
    abs: f64,
    pct: f64,
    pct_n: usize,
    pinball: f64,
    covered: usize,
}

impl Accumulator {
    fn add(&mut self, forecast: f64, actual: f64) {
        self.n += 1;
        self.abs += (forecast - actual).abs();
        if actual.abs() > f64::EPSILON {
            self.pct += ((forecast - actual) / actual).abs();
            self.pct_n += 1;
        }
    }

    fn finish(self, name: &str, scale: f64, quantiles: bool) -> Scores {
        let n = self.n.max(1) as f64;
        let mae = self.abs / n;
        Scores {
            name: name.to_string(),
            hours: self.n,
            mape_percent: 100.0 * self.pct / self.pct_n.max(1) as f64,
            mae,
            mase: if scale > 0.0 { mae / scale } else { f64::NAN },
            pinball: self.pinball / n,
            coverage_p10_p90: quantiles.then(|| self.covered as f64 / n),
            coverage_by_lead: Vec::new(),
            mape_by_lead: Vec::new(),
        }
    }
}

/// Seasonal-naive forecasts aware of the issue time: for the target at row `t`, issued with data
/// up to row `origin`, the value `lag` rows earlier if that row is known at issue time (≤ origin),
/// else the same hour `lag` + 24·k rows earlier for the smallest k that is. `series` holds
/// observed values (NaN where unknown).
pub fn seasonal_naive(series: &[f64], origin: usize, targets: std::ops::Range<usize>, lag: usize) -> Vec<f64> {
    targets
        .map(|t| {
            let mut back = lag;
            while t >= back && t - back > origin {
                back += 24;
            }
            if t >= back { series[t - back] } else { f64::NAN }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mape_by_lead_by_hand() {
        // two windows of 3 leads; lead 2 of the second window has no actual, lead 3 none at all
        let forecasts = [110.0, 90.0, 5.0, 100.0, 50.0, f64::NAN];
        let actuals = [100.0, 100.0, f64::NAN, 80.0, f64::NAN, 1.0];
        let by_lead = mape_by_lead(&forecasts, &actuals, 3);
        assert!((by_lead[0] - 100.0 * (0.1 + 0.25) / 2.0).abs() < 1e-12, "{by_lead:?}");
        assert!((by_lead[1] - 10.0).abs() < 1e-12, "{by_lead:?}");
        assert!(by_lead[2].is_nan());
    }

    #[test]
    fn pinball_by_hand() {
        assert!((pinball(0.9, 10.0, 12.0) - 1.8).abs() < 1e-12);
        assert!((pinball(0.9, 10.0, 8.0) - 0.2).abs() < 1e-12);
        assert!((pinball(0.5, 10.0, 8.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn point_scores_by_hand() {
        let s = score_points("x", &[110.0, 90.0, f64::NAN], &[100.0, 100.0, 100.0], 20.0);
        assert_eq!(s.hours, 2);
        assert!((s.mae - 10.0).abs() < 1e-12);
        assert!((s.mape_percent - 10.0).abs() < 1e-12);
        assert!((s.mase - 0.5).abs() < 1e-12);
        assert_eq!(s.coverage_p10_p90, None);
    }

    #[test]
    fn coverage_counts_inside_the_band() {
        let q = |a, b, c| Quantiles { p10: a, p50: b, p90: c };
        let s = score_quantiles("m", &[q(90.0, 100.0, 110.0), q(90.0, 100.0, 95.0)], &[105.0, 105.0], 1.0);
        assert_eq!(s.coverage_p10_p90, Some(0.5));
    }

    #[test]
    fn naive_uses_only_what_is_known_at_issue_time() {
        let series: Vec<f64> = (0..100).map(f64::from).collect();
        // issued at row 50, targets 51..75: lag 24 is known for targets up to 74 (row 50)
        let f = seasonal_naive(&series, 50, 51..76, 24);
        assert_eq!(f[0], 27.0);
        assert_eq!(f[23], 50.0);
        assert_eq!(f[24], 27.0); // row 75: 75-24 = 51 > origin, so two days back
        let week = seasonal_naive(&series, 50, 51..53, 168);
        assert!(week[0].is_nan());
        assert_eq!(naive_scale(&[1.0, 2.0, 4.0], 1), Some(1.5));
    }
}
