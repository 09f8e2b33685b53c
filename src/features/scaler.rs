//! Per-column standardisation, fit on the training rows only (it goes into the model
//! checkpoint as JSON), with the regression base when one is used ([`super::base`]).
//!
//! Columns already in [-1, 1] pass through unscaled: the calendar sin/cos columns and the 0/1
//! `weekend` and `holiday` flags ([`PASS_THROUGH`]). [`Scaler::transform`] and
//! [`Scaler::inverse`] leave a column the scaler was not fit on unchanged; the window builder
//! refuses a scaler that lacks a column needing scaling.
use super::{CALENDAR_COLUMNS, COL_VALUE, FeatureError, FeatureTable};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Columns used as they are (all within [-1, 1]).
pub const PASS_THROUGH: [&str; 8] = CALENDAR_COLUMNS;
/// Smallest standard deviation a column gets (a constant column scales to 0, not to NaN).
pub const STD_FLOOR: f64 = 1e-6;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Scaler {
    pub columns: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// The regression base fitted on the same training rows (`[model] base = "regression"`,
    /// [`super::base`]); none: the base is the week-back naive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<super::base::RegressionBase>,
}

/// Does `column` need scaling (is it not a pass-through column)?
pub fn needs_scaling(column: &str) -> bool {
    !PASS_THROUGH.contains(&column)
}

/// The columns to fit a scaler on: `value`, then every observed and known column that needs
/// scaling, in table order.
pub fn columns_to_scale(table: &FeatureTable) -> Vec<String> {
    let mut out = vec![COL_VALUE.to_string()];
    for name in table.observed_columns.iter().chain(&table.known_columns) {
        if needs_scaling(name) && !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

impl Scaler {
    /// Mean and (population) standard deviation of each column over `rows`, ignoring NaN;
    /// the standard deviation is at least [`STD_FLOOR`].
    pub fn fit<S: AsRef<str>>(table: &FeatureTable, columns: &[S], rows: Range<usize>) -> Result<Self, FeatureError> {
        if rows.start >= rows.end || rows.end > table.len() {
            return Err(FeatureError::Scaler(format!(
                "cannot fit on rows {}..{} of a table of {} rows",
                rows.start,
                rows.end,
                table.len()
            )));
        }
        let mut scaler = Scaler { columns: Vec::new(), mean: Vec::new(), std: Vec::new(), base: None };
        for name in columns {
            let name = name.as_ref();
            let values = table.column(name)?;
            let finite: Vec<f64> =
                values[rows.clone()].iter().filter(|v| v.is_finite()).map(|v| f64::from(*v)).collect();
            if finite.is_empty() {
                return Err(FeatureError::Scaler(format!(
                    "column `{name}` has no value in rows {}..{}",
                    rows.start, rows.end
                )));
            }
            let n = finite.len() as f64;
            let mean = finite.iter().sum::<f64>() / n;
            let var = finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            scaler.columns.push(name.to_string());
            scaler.mean.push(mean);
            scaler.std.push(var.sqrt().max(STD_FLOOR));
        }
        Ok(scaler)
    }

    /// Fit on [`columns_to_scale`] of the table, and the regression base on the same rows when
    /// `base` asks for it (for windows of `protocol`).
    pub fn fit_model(
        table: &FeatureTable,
        rows: Range<usize>,
        base: super::base::BaseKind,
        protocol: super::Protocol,
    ) -> Result<Self, FeatureError> {
        let mut scaler = Self::fit_table(table, rows.clone())?;
        if base == super::base::BaseKind::Regression {
            scaler.base = Some(super::windows::fit_base(table, &scaler, rows, protocol)?);
        }
        Ok(scaler)
    }

    /// The scaler with its day-ahead lag regression base fitted again on `rows` (the refit's
    /// training and validation rows); `None` for any other base, which stays as fitted.
    pub fn refit_lag_base(
        &self,
        table: &FeatureTable,
        rows: Range<usize>,
        protocol: super::Protocol,
    ) -> Result<Option<Self>, FeatureError> {
        if self.base.as_ref().is_none_or(|b| b.lags.is_none()) {
            return Ok(None);
        }
        let base = super::windows::fit_base(table, self, rows, protocol)?;
        Ok(Some(Self { base: Some(base), ..self.clone() }))
    }

    /// Fit on [`columns_to_scale`] of the table.
    pub fn fit_table(table: &FeatureTable, rows: Range<usize>) -> Result<Self, FeatureError> {
        Self::fit(table, &columns_to_scale(table), rows)
    }

    /// Position of a column.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// (value − mean) / std; unchanged for a column the scaler was not fit on.
    pub fn transform(&self, name: &str, value: f32) -> f32 {
        match self.index(name) {
            Some(i) => ((f64::from(value) - self.mean[i]) / self.std[i]) as f32,
            None => value,
        }
    }

    /// value × std + mean; unchanged for a column the scaler was not fit on.
    pub fn inverse(&self, name: &str, value: f32) -> f32 {
        match self.index(name) {
            Some(i) => (f64::from(value) * self.std[i] + self.mean[i]) as f32,
            None => value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::synthetic_table;
    use crate::features::{COL_HOUR_SIN, Rows, from_rows};

    #[test]
    fn fit_uses_training_rows_only() {
        let table = synthetic_table(40);
        let train = 0..600;
        let scaler = Scaler::fit_table(&table, train.clone()).unwrap();
        assert!(scaler.columns.contains(&"temp".to_string()));
        assert!(scaler.columns.contains(&"roll168_std".to_string()));
        assert!(!scaler.columns.contains(&COL_HOUR_SIN.to_string()));
        let value = table.column(COL_VALUE).unwrap();
        let mean = value[train.clone()].iter().map(|v| f64::from(*v)).sum::<f64>() / 600.0;
        assert!((scaler.mean[0] - mean).abs() < 1e-6 * mean);

        // change the rows after the training split: the scaler is the same
        let mut load = Rows { timestamps: table.timestamps.clone(), values: table.raw.clone() };
        for v in &mut load.values[700..] {
            *v = v.map(|x| x * 1.5);
        }
        let changed = from_rows("SYN1", "D", &load, &[], &Default::default()).unwrap();
        let columns: Vec<String> = scaler.columns.iter().filter(|c| *c != "temp").cloned().collect();
        let a = Scaler::fit(&table, &columns, train.clone()).unwrap();
        let b = Scaler::fit(&changed, &columns, train.clone()).unwrap();
        assert_eq!(a, b);
        // ... while fitting over them would differ
        assert_ne!(
            Scaler::fit(&changed, &columns, 0..table.len()).unwrap(),
            Scaler::fit(&table, &columns, 0..table.len()).unwrap()
        );
    }

    #[test]
    fn transform_inverts_and_round_trips_json() {
        let table = synthetic_table(20);
        let scaler = Scaler::fit_table(&table, 0..300).unwrap();
        let x = 41_234.5f32;
        let y = scaler.transform(COL_VALUE, x);
        assert!((scaler.inverse(COL_VALUE, y) - x).abs() < 0.01);
        assert_eq!(scaler.transform(COL_HOUR_SIN, 0.5), 0.5);
        let json = serde_json::to_string(&scaler).unwrap();
        // serde_json (without `float_roundtrip`) may move the last bit of a float
        let back: Scaler = serde_json::from_str(&json).unwrap();
        assert_eq!(back.columns, scaler.columns);
        for (a, b) in back.mean.iter().chain(&back.std).zip(scaler.mean.iter().chain(&scaler.std)) {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
        }
        assert!(Scaler::fit(&table, &["nope"], 0..10).is_err());
        assert!(Scaler::fit(&table, &[COL_VALUE], 0..100_000).is_err());
        // constant column: floor, not a division by zero
        let weekend_only = Scaler::fit(&table, &["weekend"], 48..72).unwrap(); // Tue 20:00 .. Wed 19:00 local
        assert_eq!(weekend_only.std[0], STD_FLOOR);
    }
}
