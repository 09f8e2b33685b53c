//! Judging forecasts: metrics, the seasonal-naive baselines, interval calibration and the one
//! backtest that `train` (on its test split) and `evaluate` (on any range) both run.
//!
//! # Layout
//! - [`metrics`]: MAPE, MAE, MASE, pinball loss, p10–p90 coverage, seasonal naives.
//! - [`calibration`]: split-conformal widening of the p10–p90 interval, fitted on validation.
//! - [`boosted`]: the gradient-boosted-trees baseline on the model's issue-time inputs.
//! - [`backtest`]: forecast every window, calibrate, score beside the baselines and the
//!   operator's own forecast.
//!
//! # MASE
//! MASE is the model's MAE divided by one fixed scale: the in-sample MAE of the lag-24 naive
//! forecast over the **training split** of the model's data ([`backtest::mase_scale`]). `train`
//! computes it and saves it with the model; `evaluate` uses the saved scale, so both commands
//! print MASE in the same units for the same model.
pub mod backtest;
pub mod boosted;
pub mod calibration;
pub mod metrics;

pub use backtest::{BacktestSetup, Others, align_to_rows, backtest, mase_scale, predict, target_rows};
pub use boosted::{BOOSTED, BoostedTrees};
pub use calibration::{
    IntervalCalibration, NOMINAL_COVERAGE, apply_calibration, apply_rolling_calibration, calibrate_intervals,
};
pub use metrics::{
    Quantiles, Scores, coverage_by_lead, naive_scale, pinball, score_points, score_quantiles, seasonal_naive,
};
