//! Lags and rolling statistics of the cleaned `value` (polars lazy).
//!
//! `lag_k` at row t is the value of row t − k. Rolling statistics use only the past: at row t
//! they summarise rows t − w .. t − 1 (the current hour excluded), need all w of them (null
//! before), and `std` is the sample standard deviation.
use super::{COL_VALUE, LAG_COLUMNS, LAG_HOURS, ROLLING_COLUMNS};
use polars::prelude::*;

/// Windows of the rolling statistics, hours; `ROLLING_COLUMNS` holds mean, std, min, max of each.
pub const ROLLING_WINDOWS: [usize; 2] = [24, 168];

/// `lf` plus the lag and rolling columns of `value`.
pub fn with_lags_and_rolling(lf: LazyFrame) -> LazyFrame {
    let mut exprs: Vec<Expr> = LAG_HOURS
        .iter()
        .zip(LAG_COLUMNS)
        .map(|(hours, name)| col(COL_VALUE).shift(lit(*hours as i64)).alias(name))
        .collect();
    for (k, window) in ROLLING_WINDOWS.iter().enumerate() {
        let options = RollingOptionsFixedWindow { window_size: *window, min_periods: *window, ..Default::default() };
        let past = col(COL_VALUE).shift(lit(1i64));
        let names = &ROLLING_COLUMNS[4 * k..4 * k + 4];
        exprs.push(past.clone().rolling_mean(options.clone()).alias(names[0]));
        exprs.push(past.clone().rolling_std(options.clone()).alias(names[1]));
        exprs.push(past.clone().rolling_min(options.clone()).alias(names[2]));
        exprs.push(past.rolling_max(options).alias(names[3]));
    }
    lf.with_columns(exprs)
}

#[cfg(test)]
mod tests {
    use crate::features::tests::synthetic_table;
    use crate::features::{COL_VALUE, LAG_COLUMNS, LAG_HOURS};

    #[test]
    fn lags_equal_earlier_rows() {
        let table = synthetic_table(20);
        let value = table.column(COL_VALUE).unwrap();
        for (hours, name) in LAG_HOURS.iter().zip(LAG_COLUMNS) {
            let lag = table.column(name).unwrap();
            for t in 0..table.len() {
                if t < *hours {
                    assert!(lag[t].is_nan(), "{name} row {t}");
                } else {
                    assert_eq!(lag[t], value[t - hours], "{name} row {t}");
                }
            }
        }
    }

    #[test]
    fn rolling_uses_only_past_rows() {
        let table = synthetic_table(20);
        let value: Vec<f64> = table.column(COL_VALUE).unwrap().iter().map(|v| f64::from(*v)).collect();
        for (window, prefix) in [(24usize, "roll24"), (168, "roll168")] {
            let mean = table.column(&format!("{prefix}_mean")).unwrap();
            let std = table.column(&format!("{prefix}_std")).unwrap();
            let min = table.column(&format!("{prefix}_min")).unwrap();
            let max = table.column(&format!("{prefix}_max")).unwrap();
            for t in 0..table.len() {
                if t < window {
                    assert!(mean[t].is_nan() && std[t].is_nan() && min[t].is_nan() && max[t].is_nan());
                    continue;
                }
                let past = &value[t - window..t];
                let m = past.iter().sum::<f64>() / window as f64;
                let s = (past.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (window - 1) as f64).sqrt();
                let tolerance = 1e-4 * m;
                assert!((f64::from(mean[t]) - m).abs() < tolerance, "{prefix}_mean row {t}");
                assert!((f64::from(std[t]) - s).abs() < tolerance, "{prefix}_std row {t}");
                assert_eq!(f64::from(min[t]), past.iter().copied().fold(f64::INFINITY, f64::min) as f32 as f64);
                assert_eq!(f64::from(max[t]), past.iter().copied().fold(f64::NEG_INFINITY, f64::max) as f32 as f64);
            }
        }
    }
}
