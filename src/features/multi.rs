//! Windows of several series for one model (issue #19, "one model for many regions").
//!
//! Every series keeps its own feature table and scaler; its windows get a **region block**
//! appended to every position: one column per trained region, 1 in the column of the window's
//! region, 0 elsewhere. The model's linear input projection of a one-hot block is a learned
//! region embedding. A region the model was not trained on gets the all-zero block (the
//! "unknown region" slot, for zero-shot forecasts). A model trained without the block (an
//! empty [`RegionBlock::columns`]) ignores which region a window came from.
//!
//! Windows of several series are concatenated in the order given ([`concat`]), so the training
//! set is deterministic; the trainer shuffles it as it does one series' windows.
use super::Windows;
use serde::{Deserialize, Serialize};

/// Prefix of a region column's name (`region=SYN1`).
pub const REGION_COLUMN_PREFIX: &str = "region=";

/// The region columns of a multi-region model and which of them a window's region is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionBlock {
    /// The trained regions in column order (empty: the model ignores the region).
    pub columns: Vec<String>,
    /// The column of this region; `None` for a region the model was not trained on (the
    /// all-zero "unknown region" slot) and for a model without region columns.
    pub index: Option<usize>,
    /// Was the model not trained on this region (a zero-shot forecast)?
    #[serde(default)]
    pub zero_shot: bool,
}

/// How a multi-region model knows which region a window came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RegionInput {
    /// A one-hot block of the trained regions at every position: a learned region embedding.
    OneHot,
    /// Nothing: the model ignores the region (the baseline the embedding is measured against).
    None,
}

impl RegionBlock {
    /// The block of `region` among `columns` (`None` index when it is not one of them) for a
    /// model trained on `trained` regions.
    pub fn of(columns: &[String], region: &str, trained: &[String]) -> Self {
        RegionBlock {
            columns: columns.to_vec(),
            index: columns.iter().position(|c| c == region),
            zero_shot: !trained.iter().any(|t| t == region),
        }
    }

    /// The names of the block's features, in column order.
    pub fn feature_names(&self) -> Vec<String> {
        self.columns.iter().map(|region| format!("{REGION_COLUMN_PREFIX}{region}")).collect()
    }

    /// Append the block to every position of every window: `n_features` grows by the number
    /// of columns (nothing changes for an empty block).
    pub fn append(&self, windows: &mut Windows) {
        let width = self.columns.len();
        if width == 0 {
            return;
        }
        let mut block = vec![0.0f32; width];
        if let Some(i) = self.index {
            block[i] = 1.0;
        }
        let old = windows.n_features;
        let mut inputs = Vec::with_capacity(windows.count * windows.positions * (old + width));
        for position in windows.inputs.chunks_exact(old.max(1)) {
            inputs.extend_from_slice(position);
            inputs.extend_from_slice(&block);
        }
        windows.inputs = inputs;
        windows.n_features = old + width;
        windows.feature_names.extend(self.feature_names());
    }
}

/// The windows of several series as one training set, in the order given. `origins` and
/// `perfect_weather` are concatenated too, but an origin is a row of its own series' table:
/// the result is for training, and each series is scored with its own windows.
///
/// # Panics
/// When the parts differ in positions, horizon or features (an invariant of the caller, which
/// checks the feature names of every series first).
pub fn concat(parts: &[Windows]) -> Windows {
    let first = &parts[0];
    let mut out = Windows { count: 0, inputs: Vec::new(), targets: Vec::new(), bases: Vec::new(), ..first.clone() };
    out.origins.clear();
    out.perfect_weather.clear();
    out.skipped_imputed = 0;
    for part in parts {
        assert!(
            part.positions == first.positions
                && part.horizon == first.horizon
                && part.feature_names == first.feature_names,
            "concatenated windows have one shape"
        );
        out.count += part.count;
        out.inputs.extend_from_slice(&part.inputs);
        out.targets.extend_from_slice(&part.targets);
        out.bases.extend_from_slice(&part.bases);
        out.origins.extend_from_slice(&part.origins);
        out.perfect_weather.extend_from_slice(&part.perfect_weather);
        out.skipped_imputed += part.skipped_imputed;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` windows of 2 positions, 3 features and horizon 1, inputs numbered from `start`.
    fn windows(count: usize, start: f32) -> Windows {
        let n = count * 2 * 3;
        Windows {
            count,
            positions: 2,
            horizon: 1,
            n_features: 3,
            feature_names: vec!["a".into(), "b".into(), "c".into()],
            inputs: (0..n).map(|i| start + i as f32).collect(),
            targets: vec![start; count],
            bases: vec![0.5; count],
            origins: (0..count).collect(),
            skipped_imputed: 1,
            perfect_weather: vec![false; count],
        }
    }

    #[test]
    fn the_block_follows_every_position_with_one_in_its_regions_column() {
        let columns = vec!["SYN1".to_string(), "SYN2".to_string()];
        let mut w = windows(2, 0.0);
        RegionBlock::of(&columns, "SYN2", &columns).append(&mut w);
        assert_eq!(w.n_features, 5);
        assert_eq!(w.feature_names, ["a", "b", "c", "region=SYN1", "region=SYN2"]);
        assert_eq!(w.inputs.len(), 2 * 2 * 5);
        let positions: Vec<&[f32]> = w.inputs.chunks(5).collect();
        assert_eq!(positions[0], [0.0, 1.0, 2.0, 0.0, 1.0]);
        assert_eq!(positions[3], [9.0, 10.0, 11.0, 0.0, 1.0]);
    }

    #[test]
    fn an_untrained_region_gets_the_all_zero_slot() {
        let columns = vec!["SYN1".to_string(), "SYN2".to_string()];
        let block = RegionBlock::of(&columns, "SYN9", &columns);
        assert!(block.zero_shot && block.index.is_none());
        let mut w = windows(1, 0.0);
        block.append(&mut w);
        assert!(w.inputs.chunks(5).all(|p| p[3] == 0.0 && p[4] == 0.0));
        assert!(!RegionBlock::of(&columns, "SYN1", &columns).zero_shot);
        // a model without region columns: no column, but a trained region is not zero-shot
        let none = RegionBlock::of(&[], "SYN1", &columns);
        assert!(none.index.is_none() && !none.zero_shot);
    }

    #[test]
    fn an_empty_block_leaves_the_windows_as_they_are() {
        let mut w = windows(2, 0.0);
        let before = w.clone();
        RegionBlock::of(&[], "SYN1", &["SYN1".to_string()]).append(&mut w);
        assert_eq!((w.inputs, w.n_features, w.feature_names), (before.inputs, before.n_features, before.feature_names));
    }

    #[test]
    fn concat_keeps_the_order_of_the_parts() {
        let (a, b) = (windows(2, 0.0), windows(1, 100.0));
        let all = concat(&[a.clone(), b.clone()]);
        assert_eq!(all.count, 3);
        assert_eq!(all.inputs, [a.inputs, b.inputs].concat());
        assert_eq!(all.targets, [0.0, 0.0, 100.0]);
        assert_eq!(all.origins, [0, 1, 0]);
        assert_eq!(all.skipped_imputed, 2);
        assert_eq!(all.residual_targets(), [-0.5, -0.5, 99.5]);
    }
}
