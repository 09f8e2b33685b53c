//! Chronological train / validation / test row ranges.
//!
//! A window belongs to the split that holds all its **target** rows; one whose targets straddle
//! a boundary belongs to none ([`super::windows::make_windows`] enforces it), so no target hour
//! is ever seen by two splits. Inputs of a validation window may reach back into training rows:
//! that is the past, not a leak.
use super::FeatureError;
use crate::config::SplitConfig;
use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splits {
    pub train: Range<usize>,
    pub validation: Range<usize>,
    pub test: Range<usize>,
}

/// Split `len` rows by the fractions of `config` (test takes the rest). `context` is the number
/// of rows one window spans (pass [`super::WindowSpec::positions`]): each split must hold at
/// least that many rows, except a validation split of fraction 0, which is empty.
pub fn split(len: usize, config: &SplitConfig, context: usize) -> Result<Splits, FeatureError> {
    let (train, validation) = (config.train, config.validation);
    if !(train > 0.0 && validation >= 0.0 && train + validation < 1.0) {
        return Err(FeatureError::Split(format!(
            "fractions train {train} and validation {validation} must satisfy train > 0, validation >= 0, train + validation < 1"
        )));
    }
    let train_end = ((len as f64) * train).round() as usize;
    let validation_end = (((len as f64) * (train + validation)).round() as usize).clamp(train_end, len);
    let splits = Splits { train: 0..train_end, validation: train_end..validation_end, test: validation_end..len };
    let need = context.max(1);
    for (name, rows, may_be_empty) in [
        ("train", &splits.train, false),
        ("validation", &splits.validation, validation == 0.0),
        ("test", &splits.test, false),
    ] {
        if rows.len() < need && !(may_be_empty && rows.is_empty()) {
            return Err(FeatureError::Split(format!(
                "the {name} split of {len} rows has {} rows, fewer than the {need} one window needs",
                rows.len()
            )));
        }
    }
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_chronological_and_cover_every_row() {
        let s = split(1000, &SplitConfig::default(), 150).unwrap();
        assert_eq!(s.train, 0..700);
        assert_eq!(s.validation, 700..850);
        assert_eq!(s.test, 850..1000);
        let e = split(1000, &SplitConfig::default(), 151).unwrap_err();
        assert!(e.to_string().contains("validation"), "{e}");
        let no_validation = split(1000, &SplitConfig { train: 0.8, validation: 0.0 }, 100).unwrap();
        assert!(no_validation.validation.is_empty());
        assert_eq!(no_validation.test, 800..1000);
        assert!(split(1000, &SplitConfig { train: 0.9, validation: 0.1 }, 1).is_err());
    }
}
