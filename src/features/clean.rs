//! Cleaning: reindex onto the complete hourly UTC grid, discard values outside physical bounds
//! and robust outliers, then impute. Rows are never dropped; every change is flagged.
//!
//! # Outliers
//! A value is an outlier when its robust z exceeds `outlier_threshold` against **both** of two
//! centered rolling medians (nulls skipped, [`rolling_median`]):
//! - the median of the same hour on the surrounding days, the hour itself left out (the hours
//!   ±24, ±48, … inside the `outlier_window`: ±3 days for the default 169 hours), which follows
//!   the daily cycle;
//! - the median of the neighbouring 7 hours, which follows a real but unusual day (a holiday,
//!   a heat wave) that the same-hour median would call abnormal.
//!
//! The scale is 1.4826 × the centered rolling median (over `outlier_window` hours) of the
//! absolute deviations from the same-hour median. An isolated spike, or a run of up to three,
//! is far from both medians; a whole unusual day is far only from the first.
//!
//! # Imputation
//! Gaps (missing, out of bounds or outlier) of at most `max_interpolate_hours` with a value on
//! both sides are interpolated linearly (`INTERPOLATED`). Other hours take the value of the
//! same hour one week earlier, else one day earlier (already imputed values count), else one
//! week later, else one day later (`SEASONAL_FILL`). Flags accumulate.
//!
//! # Causal cleaning (model inputs)
//! The cleaning above looks up to `outlier_window / 2` hours ahead (centered medians) and
//! interpolates towards the next good value, so it is right for the *targets* (the best estimate
//! of what the load was) but would leak the future into *inputs*. [`clean_causal`] uses only
//! hours ≤ t for the value at t: the same two robust tests against **trailing** medians (same
//! hour on the previous `2 × outlier_window / 48` days; the 7 hours ending at t) and a MAD over
//! the `outlier_window` hours ending at t; a bad hour takes the
//! value of the same hour one day earlier shifted by the level change since the last good hour
//! (gaps up to `max_interpolate_hours`), else the value one week earlier, else one day earlier.
//! Nothing is imputed before the first good hour.
use super::{
    FLAG_INTERPOLATED, FLAG_MISSING, FLAG_OUT_OF_BOUNDS, FLAG_OUTLIER, FLAG_SEASONAL_FILL, FeatureConfig, FeatureError,
    Rows,
};
use crate::time::HOUR_US;

/// Kinds measured in MW of load, bounded to [0, upper_bound_mw].
pub const LOAD_KINDS: [&str; 6] = ["D", "DF", "ACTUAL", "DAM", "2DA", "7DA"];
/// 1.4826 × MAD estimates the standard deviation of normal data.
const MAD_TO_STD: f64 = 1.4826;
/// Hours of the neighbourhood median.
const LOCAL_WINDOW: usize = 7;
/// Smallest scale of the robust z, relative to the baseline (a flat series is not all outliers).
const SCALE_FLOOR: f64 = 1e-3;

pub fn is_load_kind(kind: &str) -> bool {
    LOAD_KINDS.contains(&kind)
}

/// The complete hourly grid `first..=last` (µs, interval end).
pub fn hourly_grid(first_us: i64, last_us: i64) -> Vec<i64> {
    if last_us < first_us {
        return Vec::new();
    }
    (0..=(last_us - first_us) / HOUR_US).map(|k| first_us + k * HOUR_US).collect()
}

/// Stored rows on `grid` (a complete hourly grid, as [`hourly_grid`] makes): `None` where no
/// row or a null value. Rows off the grid (outside it, or not on a whole hour of it) are
/// ignored; a timestamp stored twice is an error. One pass: a row's place on the grid is its
/// distance from the first hour.
pub(crate) fn reindex(rows: &Rows, grid: &[i64]) -> Result<Vec<Option<f64>>, FeatureError> {
    let mut out = vec![None; grid.len()];
    let Some(&first) = grid.first() else { return Ok(out) };
    let mut seen = vec![false; grid.len()];
    for (&t, &value) in rows.timestamps.iter().zip(&rows.values) {
        let offset = t - first;
        if offset < 0 || offset % HOUR_US != 0 {
            continue;
        }
        let Some(slot) = usize::try_from(offset / HOUR_US).ok().filter(|&i| i < grid.len()) else { continue };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(FeatureError::Data(format!(
                "the series holds the hour ending {} twice (duplicate timestamps)",
                crate::time::from_us(t).format(crate::time::FORMAT_MINUTE)
            )));
        }
        out[slot] = value;
    }
    Ok(out)
}

/// Cleaned values (NaN where nothing could be imputed) and their flags.
#[derive(Debug, Clone)]
pub struct Cleaned {
    pub value: Vec<f64>,
    pub flags: Vec<u8>,
}

/// Clean one series on the complete grid. `bounds` (load kinds only) discards values outside.
pub fn clean(raw: &[Option<f64>], bounds: Option<(f64, f64)>, config: &FeatureConfig) -> Result<Cleaned, FeatureError> {
    let mut cleaned = discard(raw, bounds, config, true)?;
    impute(&mut cleaned.value, &mut cleaned.flags, config.max_interpolate_hours);
    Ok(cleaned)
}

/// Clean one series using, for each hour, only that hour and earlier ones (see "Causal
/// cleaning"): the model's inputs. `flags` says which hours were discarded (missing, out of
/// bounds, outlier) and then imputed (`INTERPOLATED` for the level-shifted day-earlier value,
/// `SEASONAL_FILL` otherwise); NaN where nothing earlier could fill.
pub fn clean_causal(
    raw: &[Option<f64>],
    bounds: Option<(f64, f64)>,
    config: &FeatureConfig,
) -> Result<Cleaned, FeatureError> {
    let mut cleaned = discard(raw, bounds, config, false)?;
    impute_causal(&mut cleaned.value, &mut cleaned.flags, config.max_interpolate_hours);
    Ok(cleaned)
}

/// The usable values (NaN where missing, out of `bounds` or an outlier by the robust test with
/// centered or trailing windows) and the flags saying why each discarded hour was.
fn discard(
    raw: &[Option<f64>],
    bounds: Option<(f64, f64)>,
    config: &FeatureConfig,
    centered: bool,
) -> Result<Cleaned, FeatureError> {
    let n = raw.len();
    let mut flags = vec![0u8; n];
    let mut value = vec![f64::NAN; n];
    for i in 0..n {
        match raw[i] {
            Some(x) if x.is_finite() => match bounds {
                Some((low, high)) if !(low..=high).contains(&x) => flags[i] |= FLAG_OUT_OF_BOUNDS,
                _ => value[i] = x,
            },
            _ => flags[i] |= FLAG_MISSING,
        }
    }
    let z = robust_z_with(&value, config, centered)?;
    for i in 0..n {
        if z[i] > config.outlier_threshold {
            flags[i] |= FLAG_OUTLIER;
            value[i] = f64::NAN;
        }
    }
    Ok(Cleaned { value, flags })
}

/// Fill the NaN hours of `value` in place from earlier hours only (see "Causal cleaning").
pub fn impute_causal(value: &mut [f64], flags: &mut [u8], max_interpolate_hours: usize) {
    let mut last_good: Option<usize> = None;
    for i in 0..value.len() {
        if value[i].is_finite() {
            last_good = Some(i);
            continue;
        }
        let Some(j) = last_good else { continue };
        let day = |k: usize| k.checked_sub(24).map(|e| value[e]).filter(|v| v.is_finite());
        if i - j <= max_interpolate_hours {
            let filled = match (day(i), day(j)) {
                (Some(earlier), Some(good_earlier)) => earlier + (value[j] - good_earlier),
                _ => value[j],
            };
            value[i] = filled;
            flags[i] |= FLAG_INTERPOLATED;
            continue;
        }
        let week = i.checked_sub(168).map(|e| value[e]).filter(|v| v.is_finite());
        if let Some(v) = week.or_else(|| day(i)) {
            value[i] = v;
            flags[i] |= FLAG_SEASONAL_FILL;
        }
    }
}

/// The robust z of each value (0 where it cannot be computed), see the module documentation.
pub fn robust_z(value: &[f64], config: &FeatureConfig) -> Result<Vec<f64>, FeatureError> {
    robust_z_with(value, config, true)
}

/// [`robust_z`] with centered windows, or trailing ones (`centered = false`: hours ≤ t only).
fn robust_z_with(value: &[f64], config: &FeatureConfig, centered: bool) -> Result<Vec<f64>, FeatureError> {
    let window = config.outlier_window.max(3);
    let base = same_hour_median(value, (window / 48).max(1), centered);
    let seasonal: Vec<f64> = value.iter().zip(&base).map(|(x, b)| (x - b).abs()).collect();
    let local_median = rolling_median(value, LOCAL_WINDOW, LOCAL_WINDOW / 2 + 1, centered);
    let mad = rolling_median(&seasonal, window, (window / 4).max(3), centered);
    Ok((0..value.len())
        .map(|i| {
            let local = (value[i] - local_median[i]).abs();
            if base[i].is_finite() && seasonal[i].is_finite() && local.is_finite() && mad[i].is_finite() {
                let scale = (MAD_TO_STD * mad[i]).max(SCALE_FLOOR * base[i].abs().max(1.0));
                seasonal[i].min(local) / scale
            } else {
                0.0
            }
        })
        .collect())
}

/// Rolling median of `x` (NaN is missing) over windows of `window` rows: centered as polars
/// places them (rows `i − (window − ⌈window/2⌉) .. i + ⌈window/2⌉`), or trailing (rows
/// `i + 1 − window ..= i`). NaN where the window holds fewer than `min_periods` values; an
/// even count takes the mean of the middle two (polars' linear interpolation). The window's
/// values are kept sorted as integer keys of the IEEE total order, so a step costs a binary
/// search over integers and one short move (a value leaving and one entering shift only the
/// elements between their places): several times faster than polars' order-statistic tree at
/// these window sizes, and it needs no thread pool.
pub fn rolling_median(x: &[f64], window: usize, min_periods: usize, centered: bool) -> Vec<f64> {
    let n = x.len();
    let window = window.max(1);
    if window <= SMALL_WINDOW {
        return rolling_median_small(x, window, min_periods, centered);
    }
    let bounds = |i: usize| {
        if centered {
            let right = window.div_ceil(2);
            (i.saturating_sub(window - right), (i + right).min(n))
        } else {
            ((i + 1).saturating_sub(window), i + 1)
        }
    };
    let mut sorted: Vec<i64> = Vec::with_capacity(window + 1);
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (start, end) = bounds(i);
        while hi < end {
            let entering = x[hi];
            hi += 1;
            if entering.is_nan() {
                continue;
            }
            let key = order_key(entering);
            // pair the entering value with one leaving, if any: one move for both
            let mut leaving = None;
            while lo < start && lo < hi - 1 {
                let v = x[lo];
                lo += 1;
                if !v.is_nan() {
                    leaving = Some(order_key(v));
                    break;
                }
            }
            match leaving {
                Some(old) => replace_sorted(&mut sorted, old, key),
                None => {
                    let at = sorted.partition_point(|s| *s < key);
                    sorted.insert(at, key);
                }
            }
        }
        while lo < start {
            let v = x[lo];
            lo += 1;
            if !v.is_nan() {
                let at = sorted.partition_point(|s| *s < order_key(v));
                sorted.remove(at);
            }
        }
        let k = sorted.len();
        out.push(if k == 0 || k < min_periods {
            f64::NAN
        } else if k % 2 == 1 {
            from_order_key(sorted[k / 2])
        } else {
            let (a, b) = (from_order_key(sorted[k / 2 - 1]), from_order_key(sorted[k / 2]));
            a + 0.5 * (b - a)
        });
    }
    out
}

/// Windows up to this many rows take [`rolling_median_small`].
const SMALL_WINDOW: usize = 8;

/// [`rolling_median`] for windows of at most [`SMALL_WINDOW`] rows: each window's values are
/// gathered and sorted afresh (a sorting network for a full window of 7, the neighbourhood
/// median's), which beats keeping them sorted at this size.
fn rolling_median_small(x: &[f64], window: usize, min_periods: usize, centered: bool) -> Vec<f64> {
    let n = x.len();
    let (left, right) = if centered { (window - window.div_ceil(2), window.div_ceil(2)) } else { (window - 1, 1) };
    let mut out = Vec::with_capacity(n);
    let mut buffer = [0.0f64; SMALL_WINDOW];
    for i in 0..n {
        let rows = &x[i.saturating_sub(left)..(i + right).min(n)];
        if let Ok(full) = <[f64; 7]>::try_from(rows)
            && min_periods <= 7
            && full.iter().all(|v| !v.is_nan())
        {
            let mut seven = full;
            sort7(&mut seven);
            out.push(seven[3]);
            continue;
        }
        let mut k = 0;
        for &v in rows {
            if !v.is_nan() {
                buffer[k] = v;
                k += 1;
            }
        }
        let values = &mut buffer[..k];
        values.sort_unstable_by(f64::total_cmp);
        out.push(if k == 0 || k < min_periods {
            f64::NAN
        } else if k % 2 == 1 {
            values[k / 2]
        } else {
            let (a, b) = (values[k / 2 - 1], values[k / 2]);
            a + 0.5 * (b - a)
        });
    }
    out
}

/// Sort seven values (no NaN) with the 16-comparator network.
fn sort7(v: &mut [f64; 7]) {
    network!(v; (0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5), (3, 4), (1, 2), (4, 6), (2, 3), (4, 5),
        (1, 2), (3, 4), (5, 6));
}

/// A sorting network written out: each pair (a, b) puts the smaller of `v[a]`, `v[b]` at a.
/// Constant indices into a fixed-size array keep the values in registers, and a plain `<`
/// (the values hold no NaN) compiles to one min and one max instruction.
macro_rules! network {
    ($v:ident; $(($a:literal, $b:literal)),+ $(,)?) => {
        $(
            let (x, y) = ($v[$a], $v[$b]);
            let smaller = y < x;
            $v[$a] = if smaller { y } else { x };
            $v[$b] = if smaller { x } else { y };
        )+
    };
}
use network;

/// A key whose integer order is the IEEE 754 total order of `x` (as [`f64::total_cmp`]).
fn order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// The value of an [`order_key`] (the mapping is its own inverse).
fn from_order_key(key: i64) -> f64 {
    f64::from_bits((key ^ (((key >> 63) as u64) >> 1) as i64) as u64)
}

/// Remove one `old` from the sorted keys and insert `new`, moving only the keys between.
fn replace_sorted(sorted: &mut [i64], old: i64, new: i64) {
    let from = sorted.partition_point(|s| *s < old);
    let to = sorted.partition_point(|s| *s < new);
    if to <= from {
        // new goes at `to`; the keys to..from move up one, over the old one's place
        sorted.copy_within(to..from, to + 1);
        sorted[to] = new;
    } else {
        // the keys from+1..to move down one; new goes just before the old `to`
        sorted.copy_within(from + 1..to, from);
        sorted[to - 1] = new;
    }
}

/// Median of the same hour on the `days` days before and after each hour (the hour itself
/// left out, so a value is never its own baseline); NaN with fewer than 3 such values.
/// Not `centered`: the same hour on the `2 × days` days before only.
fn same_hour_median(value: &[f64], days: usize, centered: bool) -> Vec<f64> {
    let (days, ahead) = if centered { (days, true) } else { (2 * days, false) };
    let n = value.len();
    let mut around = Vec::with_capacity(2 * days);
    let mut out: Vec<f64> = Vec::with_capacity(n);
    // rows whose 6 neighbours all exist (the usual 3 days each side, or 6 before): gathered
    // into an array and, when all are finite, sorted by a network; other rows (the first and
    // last days, gaps) take the general path
    let behind = 24 * days;
    let (interior, offsets): (std::ops::Range<usize>, [isize; 6]) = if centered && days == 3 {
        (behind..n.saturating_sub(behind), [-24, 24, -48, 48, -72, 72])
    } else if !centered && days == 6 {
        (behind..n, [-24, -48, -72, -96, -120, -144])
    } else {
        (0..0, [0; 6])
    };
    for i in 0..n {
        if interior.contains(&i) {
            let mut six: [f64; 6] = std::array::from_fn(|k| value[i.wrapping_add_signed(offsets[k])]);
            if six.iter().all(|v| v.is_finite()) {
                sort6(&mut six);
                out.push(0.5 * (six[2] + six[3]));
                continue;
            }
        }
        out.push(same_hour_median_at(value, i, days, ahead, &mut around));
    }
    out
}

/// [`same_hour_median`] at row `i`, in general: `around` is scratch space.
fn same_hour_median_at(value: &[f64], i: usize, days: usize, ahead: bool, around: &mut Vec<f64>) -> f64 {
    let n = value.len();
    around.clear();
    for k in 1..=days {
        let offset = 24 * k;
        if let Some(j) = i.checked_sub(offset) {
            let v = value[j];
            if v.is_finite() {
                around.push(v);
            }
        }
        if ahead && i + offset < n {
            let v = value[i + offset];
            if v.is_finite() {
                around.push(v);
            }
        }
    }
    let m = around.len();
    if m < 3 {
        return f64::NAN;
    }
    insertion_sort(around);
    if m % 2 == 1 { around[m / 2] } else { 0.5 * (around[m / 2 - 1] + around[m / 2]) }
}

/// Sort six finite values with the 12-comparator network (no branches to mispredict).
fn sort6(v: &mut [f64; 6]) {
    network!(v; (0, 5), (1, 3), (2, 4), (1, 2), (3, 4), (0, 3), (2, 5), (0, 1), (2, 3), (4, 5), (1, 2), (3, 4));
}

/// Sort a handful of finite values (the same-hour neighbours: at most a dozen) in place.
fn insertion_sort(values: &mut [f64]) {
    for i in 1..values.len() {
        let v = values[i];
        let mut j = i;
        while j > 0 && values[j - 1].total_cmp(&v).is_gt() {
            values[j] = values[j - 1];
            j -= 1;
        }
        values[j] = v;
    }
}

/// Fill the NaN hours of `value` in place (see the module documentation).
pub fn impute(value: &mut [f64], flags: &mut [u8], max_interpolate_hours: usize) {
    let n = value.len();
    let mut long_gap = vec![false; n];
    let mut i = 0;
    while i < n {
        if value[i].is_finite() {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && !value[i].is_finite() {
            i += 1;
        }
        let len = i - start;
        if start > 0 && i < n && len <= max_interpolate_hours {
            let (left, right) = (value[start - 1], value[i]);
            for (k, j) in (start..i).enumerate() {
                let w = (k + 1) as f64 / (len + 1) as f64;
                value[j] = left + w * (right - left);
                flags[j] |= FLAG_INTERPOLATED;
            }
        } else {
            long_gap[start..i].iter_mut().for_each(|g| *g = true);
        }
    }
    let pick = |value: &[f64], candidates: &[Option<usize>]| {
        candidates.iter().flatten().map(|&j| value[j]).find(|v| v.is_finite())
    };
    for i in 0..n {
        if long_gap[i] {
            let earlier = [i.checked_sub(168), i.checked_sub(24)];
            if let Some(v) = pick(value, &earlier) {
                value[i] = v;
                flags[i] |= FLAG_SEASONAL_FILL;
            }
        }
    }
    for i in (0..n).rev() {
        if long_gap[i] && !value[i].is_finite() {
            let later = [Some(i + 168).filter(|j| *j < n), Some(i + 24).filter(|j| *j < n)];
            if let Some(v) = pick(value, &later) {
                value[i] = v;
                flags[i] |= FLAG_SEASONAL_FILL;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    const COL_X: &str = "x";

    /// Rows land on their hour; nulls, gaps and off-grid rows stay `None`; a duplicate is an error.
    #[test]
    fn reindex_places_rows_by_hour() {
        let grid = hourly_grid(10 * HOUR_US, 14 * HOUR_US);
        let rows = Rows {
            timestamps: vec![9 * HOUR_US, 10 * HOUR_US, 12 * HOUR_US, 12 * HOUR_US + 5, 13 * HOUR_US, 20 * HOUR_US],
            values: vec![Some(9.0), Some(10.0), Some(12.0), Some(99.0), None, Some(20.0)],
        };
        assert_eq!(reindex(&rows, &grid).unwrap(), [Some(10.0), None, Some(12.0), None, None]);
        let twice = Rows { timestamps: vec![10 * HOUR_US, 10 * HOUR_US], values: vec![Some(1.0), Some(2.0)] };
        let error = reindex(&twice, &grid).unwrap_err().to_string();
        assert!(error.contains("twice") && error.contains("1970-01-01T10:00Z"), "{error}");
        assert!(reindex(&rows, &[]).unwrap().is_empty());
    }

    use super::*;
    use crate::config::SyntheticConfig;
    use crate::features::tests::synthetic;
    use crate::features::{FLAG_INPUT_IMPUTED, FLAGS_IMPUTED, from_rows};
    use crate::ingest::{FileSource, SeriesId, Source, Store, file::FileColumns};
    use crate::rng::SplitMix64;
    use crate::time::{DateRange, from_us};
    use chrono::{TimeZone as _, Utc};

    /// `rolling_median` equals polars' `rolling_median` (centered and trailing, odd and even
    /// windows, nulls, short series, min_periods above and below the count).
    #[test]
    fn rolling_median_equals_polars() {
        let mut rng = SplitMix64::new(99);
        let mut next = || rng.next_f64();
        for n in [0usize, 1, 5, 40, 1000] {
            let x: Vec<f64> = (0..n)
                .map(|_| {
                    let u = next();
                    if u < 0.1 {
                        f64::NAN
                    } else if u < 0.15 {
                        7.0
                    } else {
                        (u * 1000.0).round() / 10.0
                    }
                })
                .collect();
            let column: Vec<Option<f64>> = x.iter().map(|v| (!v.is_nan()).then_some(*v)).collect();
            for (window, min_periods) in [(7, 4), (8, 1), (3, 3), (169, 42), (170, 3), (24, 24)] {
                for centered in [true, false] {
                    let options = RollingOptionsFixedWindow {
                        window_size: window,
                        min_periods,
                        center: centered,
                        ..Default::default()
                    };
                    let frame = DataFrame::new(n, vec![Series::new(COL_X.into(), column.clone()).into()]).unwrap();
                    let polars: Vec<Option<f64>> = frame
                        .lazy()
                        .select([col(COL_X).rolling_median(options)])
                        .collect()
                        .unwrap()
                        .column(COL_X)
                        .unwrap()
                        .f64()
                        .unwrap()
                        .iter()
                        .collect();
                    let ours = rolling_median(&x, window, min_periods, centered);
                    for i in 0..n {
                        let theirs = polars[i].unwrap_or(f64::NAN);
                        assert!(
                            ours[i].to_bits() == theirs.to_bits() || (ours[i].is_nan() && theirs.is_nan()),
                            "n {n}, window {window}, min {min_periods}, centered {centered}, row {i}: {} vs {theirs}",
                            ours[i]
                        );
                    }
                }
            }
        }
    }

    /// The networks sort every arrangement of six and seven values, ties included (all n^n
    /// inputs over n distinct values cover every order type).
    #[test]
    fn sorting_networks_sort_every_arrangement() {
        fn check<const N: usize>(sort: fn(&mut [f64; N])) {
            for code in 0..N.pow(N as u32) {
                let mut v: [f64; N] = std::array::from_fn(|k| ((code / N.pow(k as u32)) % N) as f64);
                let mut want = v;
                want.sort_by(f64::total_cmp);
                sort(&mut v);
                assert_eq!(v, want, "{N} values, input code {code}");
            }
        }
        check::<6>(sort6);
        check::<7>(sort7);
    }

    #[test]
    fn impute_interpolates_short_gaps_and_fills_long_ones_seasonally() {
        let n = 24 * 21;
        let truth: Vec<f64> = (0..n).map(|i| 100.0 + (i % 24) as f64).collect();
        let mut value = truth.clone();
        let mut flags = vec![0u8; n];
        for i in [5, 6, 7] {
            value[i] = f64::NAN;
        }
        for v in &mut value[300..320] {
            *v = f64::NAN;
        }
        for v in &mut value[..3] {
            *v = f64::NAN; // no left neighbour: filled from later days
        }
        impute(&mut value, &mut flags, 6);
        assert!(value.iter().all(|v| v.is_finite()));
        assert_eq!(flags[6], FLAG_INTERPOLATED);
        assert!((value[6] - 106.0).abs() < 1e-9);
        assert_eq!(flags[310], FLAG_SEASONAL_FILL);
        assert_eq!(value[310], truth[310]); // same hour one week earlier
        assert_eq!(flags[0], FLAG_SEASONAL_FILL);
        assert_eq!(value[0], truth[0]);
        assert_eq!(flags[100], 0);
    }

    #[test]
    fn reindex_of_a_store_with_hours_removed_keeps_every_hour() {
        let (mut load, _) = synthetic("SYN1", 28, SyntheticConfig::default());
        let truth = load.clone();
        // remove 3 hours (short gap), one stored null, and a 30-hour run (long gap)
        let removed: Vec<usize> = (100..103).chain(400..430).collect();
        load.values[200] = None;
        let keep: Vec<usize> = (0..load.timestamps.len()).filter(|i| !removed.contains(i)).collect();
        let rows = crate::ingest::SeriesRows {
            id: SeriesId::new("synthetic", "SYN1", "D"),
            timestamps: keep.iter().map(|&i| load.timestamps[i]).collect(),
            values: keep.iter().map(|&i| load.values[i]).collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock().unwrap();
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let range = DateRange::new(start, start + chrono::TimeDelta::days(28)).unwrap();
        store.write_range(&[rows], range).unwrap();

        let table = crate::features::build(&store, &rows_id(), &[], None, &FeatureConfig::default()).unwrap();
        assert_eq!(table.len(), 28 * 24, "no row dropped");
        assert_eq!(table.timestamps, truth.timestamps);
        for i in removed.iter().copied().chain([200]) {
            assert!(table.flags[i] & FLAG_MISSING != 0, "row {i}");
            assert!(table.raw[i].is_none());
            assert!(table.target[i].is_finite());
        }
        let input = table.column(crate::features::COL_VALUE).unwrap();
        for (i, x) in input.iter().enumerate().take(103).skip(100) {
            assert_eq!(table.flags[i], FLAG_MISSING | FLAG_INTERPOLATED | FLAG_INPUT_IMPUTED);
            assert!(x.is_finite());
        }
        for (i, x) in input.iter().enumerate().take(430).skip(400) {
            assert_eq!(table.flags[i], FLAG_MISSING | FLAG_SEASONAL_FILL | FLAG_INPUT_IMPUTED);
            assert_eq!(table.target[i], truth.values[i - 168].unwrap() as f32);
            // past the interpolation limit, the input takes the same hour one week earlier
            if i >= 400 + FeatureConfig::default().max_interpolate_hours {
                assert_eq!(*x, truth.values[i - 168].unwrap() as f32);
            }
        }
        assert_eq!(table.flags.iter().filter(|f| **f != 0).count(), removed.len() + 1);
        // a range limits the rows
        let part = DateRange::new(start + chrono::TimeDelta::days(7), start + chrono::TimeDelta::days(14)).unwrap();
        let table = crate::features::build(&store, &rows_id(), &[], Some(part), &FeatureConfig::default()).unwrap();
        assert_eq!(table.len(), 7 * 24);
        assert_eq!(table.timestamps[0], part.start_us() + HOUR_US);
        // absent series are named
        let absent = SeriesId::new("synthetic", "SYN1", "TEMP");
        let e = crate::features::build(&store, &rows_id(), &[absent], None, &FeatureConfig::default()).unwrap_err();
        assert!(e.to_string().contains("synthetic:SYN1:TEMP"), "{e}");
    }

    fn rows_id() -> SeriesId {
        SeriesId::new("synthetic", "SYN1", "D")
    }

    #[test]
    fn synthetic_spikes_are_all_flagged() {
        let defects = SyntheticConfig { missing_rate: 0.03, spike_rate: 0.01, dst_gap: true, ..Default::default() };
        let (clean_load, _) = synthetic("SYN2", 366, SyntheticConfig::default());
        let (load, temp) = synthetic("SYN2", 366, defects);
        let table = from_rows("SYN2", "D", &load, &[("temp".into(), temp)], &FeatureConfig::default()).unwrap();
        assert_eq!(table.len(), clean_load.timestamps.len());
        let mut spikes = 0;
        for i in 0..table.len() {
            let truth = clean_load.values[i].unwrap();
            match table.raw[i] {
                Some(raw) if raw > 2.0 * truth => {
                    spikes += 1;
                    assert!(
                        table.flags[i] & FLAG_OUTLIER != 0,
                        "spike at {} not flagged",
                        from_us(table.timestamps[i])
                    );
                }
                Some(_) => assert!(table.flags[i] & FLAG_OUTLIER == 0, "false outlier at row {i}"),
                None => assert!(table.flags[i] & FLAG_MISSING != 0),
            }
            // every imputed value is close to the truth
            assert!((f64::from(table.target[i]) - truth).abs() < 0.1 * truth, "row {i}");
        }
        assert!(spikes > 40, "{spikes} spikes");
        // the causal input: every spike discarded too (after the first week, which has too little
        // past for the trailing tests), and every imputed hour close to the truth
        let input = table.column(crate::features::COL_VALUE).unwrap();
        let mut worst = 0.0f64;
        for (i, x) in input.iter().enumerate().skip(24 * 7) {
            let truth = clean_load.values[i].unwrap();
            let error = (f64::from(*x) - truth).abs() / truth;
            worst = worst.max(error);
            assert!(error < 0.15, "input at row {i}: {x} vs {truth}");
        }
        eprintln!("causal input: worst relative error {worst:.3}");
        assert!(table.count_flag(FLAG_MISSING) > 200);
        assert!(table.target.iter().all(|v| v.is_finite()));
        assert!(table.column("temp").unwrap().iter().all(|v| v.is_finite()));
    }

    fn realdata_file(name: &str) -> Option<std::path::PathBuf> {
        let dir = std::env::var("ENERGY_REALDATA")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/realdata").to_string());
        let path = std::path::Path::new(&dir).join("series").join(name);
        if path.is_file() {
            Some(path)
        } else {
            eprintln!("skipping: real data file {} is absent (set ENERGY_REALDATA)", path.display());
            None
        }
    }

    #[test]
    fn pjm_real_defects_are_flagged_and_replaced() {
        let Some(path) = realdata_file("PJM_2020-2024_D.csv") else { return };
        let columns = FileColumns {
            timestamp: "date_time".into(),
            value: "demand (MW)".into(),
            region: "PJM".into(),
            kind: "D".into(),
        };
        let source = FileSource::open(&path, &columns).unwrap();
        let range = source.range().unwrap();
        let batch = futures::executor::block_on(source.fetch(range)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock().unwrap();
        store.write_range(&batch.series, range).unwrap();
        let id = SeriesId::new("file", "PJM", "D");
        let table = crate::features::build(&store, &id, &[], None, &FeatureConfig::default()).unwrap();

        // every hour of 2020-2024
        let first = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap().timestamp_micros();
        let last = Utc.with_ymd_and_hms(2024, 12, 31, 23, 0, 0).unwrap().timestamp_micros();
        assert!(table.timestamps[0] <= first && *table.timestamps.last().unwrap() >= last);
        assert!(table.timestamps.windows(2).all(|w| w[1] - w[0] == HOUR_US));
        let row = |y, m, d, h| {
            let t = Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp_micros();
            table.timestamps.iter().position(|x| *x == t).unwrap()
        };
        for h in [3, 4, 5] {
            let i = row(2021, 10, 19, h);
            assert!(table.raw[i].unwrap() > 1e8);
            assert!(table.flags[i] & FLAG_OUT_OF_BOUNDS != 0);
            let v = table.target[i];
            assert!((50_000.0..120_000.0).contains(&v), "2021-10-19T{h}: {v}");
        }
        let mut spikes = 0;
        for i in 0..table.len() {
            if let Some(raw) = table.raw[i]
                && (190_000.0..1e6).contains(&raw)
            {
                spikes += 1;
                assert!(
                    table.flags[i] & FLAG_OUTLIER != 0,
                    "spike {raw} at {} not flagged",
                    from_us(table.timestamps[i])
                );
            }
            assert!(table.target[i].is_finite() && table.target[i] < 200_000.0, "row {i}: {}", table.target[i]);
            if table.flags[i] & FLAGS_IMPUTED != 0 {
                assert!(table.flags[i] & (FLAG_INTERPOLATED | FLAG_SEASONAL_FILL) != 0);
            }
        }
        assert!(spikes >= 6, "{spikes} spikes");
        let missing = table.count_flag(FLAG_MISSING);
        assert!(missing > 50, "{missing} missing hours");
        // few false outliers: well under 0.1% of the hours
        let outliers = table.count_flag(FLAG_OUTLIER);
        eprintln!("PJM: {} rows, {missing} missing, {outliers} outliers", table.len());
        assert!(outliers < table.len() / 1000, "{outliers} outliers");
    }
}
