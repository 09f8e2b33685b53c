//! Lags and rolling statistics of the cleaned `value`, in one pass each.
//!
//! `lag_k` at row t is the value of row t − k. Rolling statistics use only the past: at row t
//! they summarise rows t − w .. t − 1 (the current hour excluded), need all w of them (null
//! before, and where one of them is null), and `std` is the sample standard deviation.
//!
//! The mean and standard deviation roll sums of deviations from an anchor (the first value of
//! the current stretch of w rows); the sums are recomputed from scratch every w rows, so
//! rounding never accumulates over more than one window. Minimum and maximum are taken from
//! running extremes within blocks of w rows (van Herk / Gil-Werman).
/// Windows of the rolling statistics, hours; `ROLLING_COLUMNS` holds mean, std, min, max of each.
pub const ROLLING_WINDOWS: [usize; 2] = [24, 168];

/// `value` (NaN is null) shifted down by `hours` rows: NaN (null) for the first rows.
pub fn lag(value: &[f64], hours: usize) -> Vec<f64> {
    let hours = hours.min(value.len());
    let mut out = vec![f64::NAN; hours];
    out.extend_from_slice(&value[..value.len() - hours]);
    out
}

/// Past-only rolling mean, sample std, min and max of `value` (NaN is null) over `window` rows:
/// NaN (null) where the window is not complete.
pub fn rolling(value: &[f64], window: usize) -> [Vec<f64>; 4] {
    let n = value.len();
    let window = window.max(2);
    let mut out: [Vec<f64>; 4] = std::array::from_fn(|_| vec![f64::NAN; n]);
    let [mean_out, std_out, min_out, max_out] = &mut out;
    let (mut anchor, mut sum, mut squares, mut nulls) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for t in window..n {
        // the window of row t is rows t − window .. t − 1
        let start = t - window;
        if start.is_multiple_of(window) {
            let rows = &value[start..t];
            anchor = rows.iter().copied().find(|x| x.is_finite()).unwrap_or(0.0);
            (sum, squares, nulls) = (0.0, 0.0, 0);
            for &x in rows {
                if x.is_finite() {
                    sum += x - anchor;
                    squares += (x - anchor) * (x - anchor);
                } else {
                    nulls += 1;
                }
            }
        } else {
            let (left, entered) = (value[start - 1], value[t - 1]);
            if left.is_finite() {
                sum -= left - anchor;
                squares -= (left - anchor) * (left - anchor);
            } else {
                nulls -= 1;
            }
            if entered.is_finite() {
                sum += entered - anchor;
                squares += (entered - anchor) * (entered - anchor);
            } else {
                nulls += 1;
            }
        }
        if nulls == 0 {
            let w = window as f64;
            let mean = sum / w;
            mean_out[t] = anchor + mean;
            std_out[t] = ((squares - sum * mean) / (w - 1.0)).max(0.0).sqrt();
        }
    }
    let mut scratch = (vec![0.0; n], vec![0.0; n]);
    window_extreme(value, window, f64::INFINITY, f64::min, min_out, mean_out, &mut scratch);
    window_extreme(value, window, f64::NEG_INFINITY, f64::max, max_out, mean_out, &mut scratch);
    out
}

/// The minimum (or maximum: `pick` and its `identity`) of rows t − window .. t − 1 into
/// `out[t]` where `complete[t]` is not NaN (the window holds no null). Van Herk / Gil-Werman:
/// running extremes from the start and from the end of each block of `window` rows; a window
/// spans at most two blocks, so its extreme is that of a suffix of one and a prefix of the next.
/// Three branch-free passes instead of a queue per row; `scratch` holds the running extremes.
fn window_extreme(
    value: &[f64],
    window: usize,
    identity: f64,
    pick: fn(f64, f64) -> f64,
    out: &mut [f64],
    complete: &[f64],
    (prefix, suffix): &mut (Vec<f64>, Vec<f64>),
) {
    let n = value.len();
    let usable = |v: &f64| if v.is_finite() { *v } else { identity };
    for ((rows, prefix), suffix) in value.chunks(window).zip(prefix.chunks_mut(window)).zip(suffix.chunks_mut(window)) {
        let mut running = identity;
        for (v, p) in rows.iter().zip(prefix.iter_mut()) {
            running = pick(running, usable(v));
            *p = running;
        }
        running = identity;
        for (v, s) in rows.iter().zip(suffix.iter_mut()).rev() {
            running = pick(running, usable(v));
            *s = running;
        }
    }
    for t in window..n {
        if !complete[t].is_nan() {
            out[t] = pick(suffix[t - window], prefix[t - 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::synthetic_table;
    use crate::features::{COL_VALUE, LAG_COLUMNS, LAG_HOURS};
    use crate::rng::SplitMix64;
    use proptest::prelude::*;

    /// The statistics of rows t − w .. t − 1 computed directly: None before row w or with a null.
    fn direct(value: &[f64], window: usize, t: usize) -> Option<[f64; 4]> {
        let past = value.get(t.checked_sub(window)?..t)?;
        if past.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let w = window as f64;
        let mean = past.iter().sum::<f64>() / w;
        let std = (past.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (w - 1.0)).sqrt();
        let min = past.iter().copied().fold(f64::INFINITY, f64::min);
        let max = past.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some([mean, std, min, max])
    }

    proptest! {
        /// Rolling sums stay accurate on a long series far from zero with nulls in it: the mean
        /// within 1e-9 relative of the direct computation, the variance within 1e-12 of
        /// w × 1000² (the values spread ±500 around `level`: rounding of the sums of squared
        /// deviations, which no one-pass method avoids when a window is nearly flat), min and
        /// max exact.
        #[test]
        fn rolling_equals_the_direct_computation(
            seed in 0u64..1000,
            level in prop_oneof![Just(0.0), Just(5.0e4), Just(1.0e6)],
            null_every in prop_oneof![Just(0usize), 50usize..400],
            window in prop_oneof![Just(2usize), Just(24), Just(168), 3usize..40],
        ) {
            let mut rng = SplitMix64::new(seed);
            let mut next = || rng.next_f64();
            let value: Vec<f64> = (0..3000)
                .map(|k| if null_every > 0 && k % null_every == 7 { f64::NAN } else { level + 1000.0 * (next() - 0.5) })
                .collect();
            let [mean, std, min, max] = rolling(&value, window);
            for t in 0..value.len() {
                match direct(&value, window, t) {
                    None => prop_assert!(mean[t].is_nan() && std[t].is_nan() && min[t].is_nan() && max[t].is_nan(), "row {t}"),
                    Some([m, s, lo, hi]) => {
                        prop_assert!((mean[t] - m).abs() <= 1e-9 * m.abs().max(1.0), "mean row {t}");
                        let variance = std[t].powi(2);
                        prop_assert!((variance - s * s).abs() <= 1e-6 * window as f64, "std row {t}: {} vs {s}", std[t]);
                        prop_assert_eq!(min[t], lo);
                        prop_assert_eq!(max[t], hi);
                    }
                }
            }
            let lagged = lag(&value, 24);
            prop_assert_eq!(lagged.len(), value.len());
            for (t, got) in lagged.iter().enumerate() {
                let want = t.checked_sub(24).map_or(f64::NAN, |s| value[s]);
                prop_assert_eq!(got.to_bits(), want.to_bits());
            }
        }
    }

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
