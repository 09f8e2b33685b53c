//! Model windows: inputs `[count, positions, n_features]` and scaled targets `[count, horizon]`,
//! filled in parallel (rayon), contiguous for `mlx_rs::Array::from_slice`.
//!
//! A window has an **origin** row (the last observed hour). Its positions p = 0..positions cover
//! rows `origin + 1 − context + p`: `context` rows up to the origin, then `gap` rows, then the
//! `horizon` target rows. Per position the features are, in order ([`Windows::feature_names`]):
//! every observed column, scaled, set to 0 after the origin; the `observed` indicator (1 up to
//! the origin, 0 after); every known column, scaled (calendar columns pass through unscaled, see
//! [`super::scaler`]); and the two **issue-time seasonal naives** of the position's hour
//! ([`NAIVE_FEATURES`], scaled like `value`): the same hour one day back and one week back,
//! moved back by whole days until the hour is known at the origin (the baselines of
//! [`crate::eval::seasonal_naive`]). At context positions they are the plain lags 24 and 168;
//! at horizon positions they carry what is known of the target's hour at issue time, so the
//! model corrects a baseline instead of rebuilding the load from the calendar. Last, for every
//! exogenous known column (temperature, …), its observed value at the hours those two naives
//! were taken from (`temp_naive_day`, `temp_naive_week`, scaled like the column): with the
//! weather of the target hour beside the weather of the naive's hour, the model corrects the
//! naive for the change in weather at the position itself, without looking it up across the
//! window (measured in the README, "Forecast quality").
//!
//! Protocols ([`crate`] architecture, "Day-ahead protocol"):
//! - `next-24h`: origins every `stride` rows, the first one right before the first target row
//!   of the split; targets are the `horizon` hours after the origin (gap 0).
//! - `day-ahead`: origins are the rows whose interval ends at 10:00 local time (data up to 10:00
//!   on day d−1); after a gap of 14 hours the targets start with the hour beginning at local
//!   midnight of day d. US DST changes happen at 02:00, never between 10:00 and midnight, so
//!   the gap is always 14 hours. `stride` does not apply: one origin per local day. On a
//!   23-hour (25-hour) day the 24 targets end one hour after (before) the day's end.
//!
//! Windows are not made when they need rows outside the table, or when an input is NaN (the
//! first 168 rows have no `lag_168`, no `roll168_*`). Windows with a target whose stored value
//! was missing, out of bounds or an outlier are skipped and counted in `skipped_imputed`.
use super::base::{
    FITTED_LEADS, LONG_ERROR_HOURS, LagDesign, LagInputs, LagRegression, LeadTerms, RegressionBase, RowCalendar,
};
use super::calendar::calendar_frame;
use super::scaler::needs_scaling;
use super::{CALENDAR_COLUMNS, COL_VALUE, FLAGS_IMPUTED, FeatureError, FeatureTable, Scaler};
use crate::time::{HOUR_US, from_us};
use chrono::{Datelike, Timelike};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Hours between the day-ahead origin (10:00 local) and the first target hour (00:00 local).
pub const DAY_AHEAD_GAP: usize = 14;
/// Interval-end local hour of a day-ahead origin.
pub const DAY_AHEAD_ISSUE_HOUR: u32 = 10;
/// Hours in a day: the day-ahead origin stride that keeps only the scored 10:00 origin.
pub const HOURS_PER_DAY: usize = 24;

/// Is `hours` a valid stride of day-ahead training origins (a divisor of 24)?
pub fn divides_a_day(hours: usize) -> bool {
    hours >= 1 && HOURS_PER_DAY.is_multiple_of(hours)
}
/// Name of the observed-indicator feature.
pub const OBSERVED_INDICATOR: &str = "observed";
/// The issue-time seasonal naives of every position, with their base lags in hours.
pub const NAIVE_FEATURES: [(&str, usize); 2] = [("naive_day", 24), ("naive_week", WEEK_LAG)];
/// Lag of the week-back naive, the base the model's forecast is a correction of.
const WEEK_LAG: usize = 168;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// The 24 hours after the last observation.
    #[value(name = "next-24h")]
    #[serde(rename = "next-24h")]
    Next24h,
    /// At 10:00 local on day d−1, hours 00–23 local of day d.
    DayAhead,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WindowSpec {
    pub context: usize,
    pub horizon: usize,
    pub stride: usize,
    pub protocol: Protocol,
}

impl WindowSpec {
    /// Rows between the origin and the first target: 0 for next-24h, 14 for day-ahead.
    pub fn gap(&self) -> usize {
        match self.protocol {
            Protocol::Next24h => 0,
            Protocol::DayAhead => DAY_AHEAD_GAP,
        }
    }

    /// context + gap + horizon.
    pub fn positions(&self) -> usize {
        self.context + self.gap() + self.horizon
    }

    fn check(&self) -> Result<(), FeatureError> {
        if self.context == 0 || self.horizon == 0 || self.stride == 0 {
            return Err(FeatureError::Window(format!(
                "context ({}), horizon ({}) and stride ({}) must be at least 1",
                self.context, self.horizon, self.stride
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Windows {
    pub count: usize,
    pub positions: usize,
    pub horizon: usize,
    pub n_features: usize,
    pub feature_names: Vec<String>,
    /// `[count, positions, n_features]`, row-major, contiguous.
    pub inputs: Vec<f32>,
    /// `[count, horizon]`, scaled with the scaler's `value` statistics.
    pub targets: Vec<f32>,
    /// `[count, horizon]`: the base of each target hour (scaled): the issue-time week-back naive
    /// (the `naive_week` feature at its position), or, when the scaler carries one, the
    /// regression base ([`super::base`]). The model learns `targets − bases` and adds the base
    /// back ([`Windows::residual_targets`]), so a level it never saw in training (a season
    /// outside the training split) comes from the data, not from extrapolation.
    pub bases: Vec<f32>,
    /// Table row of the origin (the last observed hour) of each window.
    pub origins: Vec<usize>,
    /// Windows dropped because a target hour was imputed (not a real observation).
    pub skipped_imputed: usize,
    /// Per window: did a horizon position see an observed exogenous value (a perfect forecast)
    /// because the table holds no as-issued forecast known at its origin? Always false for a
    /// table without as-issued columns.
    pub perfect_weather: Vec<bool>,
}

impl Windows {
    /// Remove the windows that saw a perfect weather forecast ([`Windows::perfect_weather`]):
    /// a backtest of a model that uses as-issued forecasts scores only what a user could have
    /// forecast. Returns how many were removed.
    pub fn drop_perfect_weather(&mut self) -> usize {
        let keep: Vec<usize> = (0..self.count).filter(|w| !self.perfect_weather[*w]).collect();
        let dropped = self.count - keep.len();
        if dropped == 0 {
            return 0;
        }
        let per_window = self.positions * self.n_features;
        let take = |values: &[f32], width: usize| -> Vec<f32> {
            keep.iter().flat_map(|w| values[w * width..(w + 1) * width].iter().copied()).collect()
        };
        self.inputs = take(&self.inputs, per_window);
        self.targets = take(&self.targets, self.horizon);
        self.bases = take(&self.bases, self.horizon);
        self.origins = keep.iter().map(|w| self.origins[*w]).collect();
        self.perfect_weather = vec![false; keep.len()];
        self.count = keep.len();
        dropped
    }

    /// These windows followed by `later`'s (windows of the same table and spec, e.g. of the
    /// next split).
    ///
    /// # Panics
    /// When the two have different shapes or features.
    pub fn concatenated(&self, later: &Windows) -> Windows {
        assert_eq!(
            (self.positions, self.horizon, &self.feature_names),
            (later.positions, later.horizon, &later.feature_names),
            "only windows of one shape and feature set can be concatenated"
        );
        let join = |a: &[f32], b: &[f32]| [a, b].concat();
        Windows {
            count: self.count + later.count,
            positions: self.positions,
            horizon: self.horizon,
            n_features: self.n_features,
            feature_names: self.feature_names.clone(),
            inputs: join(&self.inputs, &later.inputs),
            targets: join(&self.targets, &later.targets),
            bases: join(&self.bases, &later.bases),
            origins: [self.origins.as_slice(), later.origins.as_slice()].concat(),
            skipped_imputed: self.skipped_imputed + later.skipped_imputed,
            perfect_weather: [self.perfect_weather.as_slice(), later.perfect_weather.as_slice()].concat(),
        }
    }

    /// What the model learns: each target minus its base (`targets − bases`).
    pub fn residual_targets(&self) -> Vec<f32> {
        self.targets.iter().zip(&self.bases).map(|(t, b)| t - b).collect()
    }
}

/// Windows whose target rows all lie in `target_rows` (a split); see the module documentation.
pub fn make_windows(
    table: &FeatureTable,
    scaler: &Scaler,
    spec: &WindowSpec,
    target_rows: Range<usize>,
) -> Result<Windows, FeatureError> {
    make_training_windows(table, scaler, spec, target_rows, HOURS_PER_DAY)
}

/// [`make_windows`], with the day-ahead protocol's origins every `day_ahead_every` hours
/// (a divisor of 24) counted from 10:00 local, each with the same 14-hour gap and 24-hour
/// horizon: the model learns the same leads from more windows (24 keeps the one 10:00 origin a
/// day that is scored). Next-24h windows are unaffected.
pub fn make_training_windows(
    table: &FeatureTable,
    scaler: &Scaler,
    spec: &WindowSpec,
    target_rows: Range<usize>,
    day_ahead_every: usize,
) -> Result<Windows, FeatureError> {
    spec.check()?;
    if !divides_a_day(day_ahead_every) {
        return Err(FeatureError::Window(format!(
            "day-ahead origins every {day_ahead_every} hours: the stride must divide 24"
        )));
    }
    if target_rows.end > table.len() || target_rows.start > target_rows.end {
        return Err(FeatureError::Window(format!(
            "target rows {}..{} are outside the table of {} rows",
            target_rows.start,
            target_rows.end,
            table.len()
        )));
    }
    let features = Features::new(table, scaler, 0)?;
    let (gap, horizon, context) = (spec.gap(), spec.horizon, spec.context);
    // origin o: targets o+gap+1 ..= o+gap+horizon must lie in target_rows
    let lowest = target_rows.start.saturating_sub(gap + 1);
    let fits = |o: usize| o + gap + 1 >= target_rows.start && o + gap + horizon < target_rows.end;
    let candidates: Vec<usize> = match spec.protocol {
        Protocol::Next24h => {
            let first = target_rows.start as i64 - gap as i64 - 1;
            (0..)
                .map(|k| first + k * spec.stride as i64)
                .take_while(|o| *o + ((gap + horizon) as i64) < (target_rows.end as i64))
                .filter_map(|o| usize::try_from(o).ok())
                .collect()
        }
        Protocol::DayAhead => {
            (lowest..target_rows.end).filter(|&o| is_day_ahead_origin(table, o, day_ahead_every)).collect()
        }
    };
    let mut origins = Vec::with_capacity(candidates.len());
    let mut skipped_imputed = 0;
    for o in candidates {
        if o + 1 < context || !fits(o) || !features.complete(o, spec) {
            continue;
        }
        let targets = o + gap + 1..o + gap + horizon + 1;
        if !features.value[targets.clone()].iter().all(|v| v.is_finite()) {
            continue;
        }
        if table.flags[targets].iter().any(|f| f & FLAGS_IMPUTED != 0) {
            skipped_imputed += 1;
            continue;
        }
        origins.push(o);
    }
    Ok(features.fill(spec, origins, skipped_imputed))
}

/// The single window whose origin is `origin_row` (for forecasting from the latest data).
/// Targets after the table's end are NaN. Known columns after the table's end are computed:
/// calendar columns from the hours' timestamps, exogenous columns repeat the value of 24 hours
/// earlier (the last known day), as no forecast of them is stored.
pub fn window_at(
    table: &FeatureTable,
    scaler: &Scaler,
    spec: &WindowSpec,
    origin_row: usize,
) -> Result<Windows, FeatureError> {
    spec.check()?;
    if origin_row >= table.len() || origin_row + 1 < spec.context {
        return Err(FeatureError::Window(format!(
            "origin row {origin_row} needs {} rows of context in a table of {} rows",
            spec.context,
            table.len()
        )));
    }
    let end = origin_row + spec.gap() + spec.horizon + 1;
    let features = Features::new(table, scaler, end.saturating_sub(table.len()))?;
    if !features.complete(origin_row, spec) {
        return Err(FeatureError::Window(format!(
            "the window at origin row {origin_row} has missing inputs (lags and rolling statistics need {} hours of history)",
            super::LAG_HOURS[super::LAG_HOURS.len() - 1]
        )));
    }
    Ok(features.fill(spec, vec![origin_row], 0))
}

/// Scaled feature columns of a table, possibly extended past its end (known columns only).
struct Features {
    names: Vec<String>,
    observed: Vec<Vec<f32>>,
    known: Vec<Vec<f32>>,
    /// Scaled `target` (with the statistics of `value`), NaN past the table's end.
    value: Vec<f32>,
    /// Prefix counts of rows with a NaN observed (known) feature.
    observed_bad: Vec<u32>,
    known_bad: Vec<u32>,
    /// Index of the scaled input `value` among the observed columns.
    value_column: usize,
    /// Per known column, its as-issued forecasts (lead in days, scaled like the column),
    /// shortest lead first; empty for columns without any.
    issued: Vec<Vec<(usize, Vec<f32>)>>,
    /// The known columns that are not calendar columns (weather, …): each also appears at the
    /// hours of the two naives.
    exogenous: Vec<usize>,
    /// The scaler's regression base with each row's calendar and the known columns of its
    /// inputs; none: the base is the week-back naive.
    base: Option<FittedBase>,
}

struct FittedBase {
    regression: RegressionBase,
    calendar: Vec<RowCalendar>,
    inputs: Vec<usize>,
    /// Prefix sums over the table's rows of the regression's error (the load minus the
    /// regression with the observed inputs) and of the rows that have one.
    error_sum: Vec<f64>,
    error_count: Vec<u32>,
    /// The same for the (scaled) load itself.
    value_sum: Vec<f64>,
    value_count: Vec<u32>,
}

impl FittedBase {
    fn new(
        regression: RegressionBase,
        calendar: Vec<RowCalendar>,
        inputs: Vec<usize>,
        (value, known, rows): (&[f32], &[Vec<f32>], usize),
    ) -> Self {
        let (mut error_sum, mut error_count) = (vec![0.0; rows + 1], vec![0u32; rows + 1]);
        let (mut value_sum, mut value_count) = (vec![0.0; rows + 1], vec![0u32; rows + 1]);
        let mut at = vec![0.0f32; inputs.len()];
        for r in 0..rows {
            at.iter_mut().zip(&inputs).for_each(|(slot, &k)| *slot = known[k][r]);
            let error = f64::from(value[r]) - regression.predict(calendar[r], &at);
            let finite = error.is_finite();
            error_sum[r + 1] = error_sum[r] + if finite { error } else { 0.0 };
            error_count[r + 1] = error_count[r] + u32::from(finite);
            let load = f64::from(value[r]);
            value_sum[r + 1] = value_sum[r] + if load.is_finite() { load } else { 0.0 };
            value_count[r + 1] = value_count[r] + u32::from(load.is_finite());
        }
        Self { regression, calendar, inputs, error_sum, error_count, value_sum, value_count }
    }

    /// The regression's mean error over the `hours` rows up to `origin`; 0 where none has one.
    fn mean_error(&self, origin: usize, hours: usize) -> f64 {
        let first = (origin + 1).saturating_sub(hours);
        let count = self.error_count[origin + 1] - self.error_count[first];
        if count == 0 { 0.0 } else { (self.error_sum[origin + 1] - self.error_sum[first]) / f64::from(count) }
    }

    /// The mean load over the `hours` rows up to `last`; NaN where none has one.
    fn mean_load(&self, last: usize, hours: usize) -> f64 {
        let first = (last + 1).saturating_sub(hours);
        let count = self.value_count[last + 1] - self.value_count[first];
        if count == 0 { f64::NAN } else { (self.value_sum[last + 1] - self.value_sum[first]) / f64::from(count) }
    }

    /// What the lag regression of target row `row` of the window at `origin` is built from.
    fn lag_inputs(&self, features: &Features, row: usize, origin: usize, terms: LeadTerms) -> LagInputs {
        let load = &features.observed[features.value_column];
        let at = |r: Option<usize>| r.map_or(f64::NAN, |r| f64::from(load[r]));
        let naive = |lag: usize| at(Features::naive_row(row, origin, lag));
        let lags = [
            naive(24),
            naive(48),
            naive(WEEK_LAG),
            naive(2 * WEEK_LAG),
            at(Some(origin)),
            self.mean_load(origin, 11),
            self.mean_load(origin, 24),
            origin.checked_sub(24).map_or(f64::NAN, |last| self.mean_load(last, 11)),
            origin.checked_sub(WEEK_LAG).map_or(f64::NAN, |last| self.mean_load(last, WEEK_LAG)),
        ];
        LagInputs {
            terms,
            level: self.mean_load(origin, WEEK_LAG),
            lags,
            mean_error_long: self.mean_error(origin, LONG_ERROR_HOURS),
            calendar: self.calendar[row],
            issue_day_holiday: major_holiday(self.calendar[origin]),
            week_lag_holiday: row.checked_sub(WEEK_LAG).map_or(0.0, |r| major_holiday(self.calendar[r])),
        }
    }

    /// The regression's error at the origin and its mean over the last day and week.
    fn origin_terms(&self, origin: usize) -> [f64; 3] {
        let at = self.mean_error(origin, 1);
        [at, self.mean_error(origin, 24), self.mean_error(origin, WEEK_LAG)]
    }

    /// What the base of target row `row` of the window at `origin` is built from, with the
    /// inputs known at the origin (as-issued forecasts where the table has them).
    fn terms(&self, features: &Features, row: usize, origin: usize, [at, day, week]: [f64; 3]) -> LeadTerms {
        let inputs: Vec<f32> =
            self.inputs.iter().map(|&k| features.known_at(k, row, origin).unwrap_or(features.known[k][row])).collect();
        LeadTerms {
            regression: self.regression.predict(self.calendar[row], &inputs),
            error_at_origin: at,
            mean_error_day: day,
            mean_error_week: week,
            naive: f64::from(features.naive(row, origin, WEEK_LAG)),
        }
    }

    /// The base of target row `row` of the window at `origin`; the week-back naive where the
    /// regression has no value.
    fn base_at(&self, features: &Features, row: usize, origin: usize, at_origin: [f64; 3]) -> f32 {
        let terms = self.terms(features, row, origin, at_origin);
        if let Some(base) = self.regression.lags.as_ref().and_then(|lags| {
            let inputs = self.lag_inputs(features, row, origin, terms);
            lags.base(&inputs, row - origin)
        }) {
            return base as f32;
        }
        let base = self.regression.base(terms, row - origin);
        if base.is_finite() { base as f32 } else { terms.naive as f32 }
    }
}

/// Fit the regression base ([`super::base`]) on `rows` of the table, with the inputs scaled by
/// `scaler`: every exogenous known column (weather, …) gets a piecewise-linear response. For
/// the `next-24h` protocol it also fits the per-lead weights of its terms; for `day-ahead`,
/// the lag regression on rows of a year or more, else the fixed φ^lead mix, which measured
/// better there (README, "Forecast quality").
pub fn fit_base(
    table: &FeatureTable,
    scaler: &Scaler,
    rows: Range<usize>,
    protocol: Protocol,
) -> Result<RegressionBase, FeatureError> {
    if rows.end > table.len() || rows.start >= rows.end {
        return Err(FeatureError::Window(format!(
            "cannot fit the regression base on rows {}..{} of a table of {} rows",
            rows.start,
            rows.end,
            table.len()
        )));
    }
    let plain = Scaler { base: None, ..scaler.clone() };
    let features = Features::new(table, &plain, 0)?;
    let calendar = row_calendar(table, &features.known, 0);
    let names: Vec<String> = features.exogenous.iter().map(|&k| table.known_columns[k].clone()).collect();
    let inputs: Vec<&[f32]> = features.exogenous.iter().map(|&k| features.known[k].as_slice()).collect();
    let regression = RegressionBase::fit(&calendar, &features.value, &names, &inputs, rows.clone())?;
    // the per-lead weights, from every origin of the rows whose target hour is among them, with
    // what the window of that origin sees (as-issued inputs at the target hour)
    let fitted = FittedBase::new(
        regression,
        calendar,
        features.exogenous.clone(),
        (&features.observed[features.value_column], &features.known, table.len()),
    );
    if protocol == Protocol::DayAhead {
        return Ok(fit_lag_regression(table, &features, fitted, rows));
    }
    // origins with a week of errors and a week-back naive behind them
    let samples = (rows.start + WEEK_LAG..rows.end).flat_map(|origin| {
        let fitted = &fitted;
        let features = &features;
        let at_origin = fitted.origin_terms(origin);
        (1..=FITTED_LEADS).filter(move |lead| origin + lead < rows.end).map(move |lead| {
            let row = origin + lead;
            let terms = fitted.terms(features, row, origin, at_origin);
            (lead, terms, f64::from(features.value[row]) - terms.regression)
        })
    });
    let mut regression = fitted.regression.clone();
    regression.fit_leads(samples);
    Ok(regression)
}

/// The day-ahead lag regression ([`super::base::LagRegression`]) of `fitted`, on the day-ahead
/// origins of `rows` (10:00 local) with two weeks of load behind them, for every lead whose
/// target is among the rows, with the day of the year in the design. Only when the rows hold a
/// whole year: on less (Victoria's nine months) it measured worse than the φ mix, which stays
/// then, as it does without enough origins (README, "Forecast quality").
fn fit_lag_regression(
    table: &FeatureTable,
    features: &Features,
    fitted: FittedBase,
    rows: Range<usize>,
) -> RegressionBase {
    if rows.len() < 365 * HOURS_PER_DAY {
        return fitted.regression;
    }
    let leads = DAY_AHEAD_GAP + HOURS_PER_DAY;
    let origins = (rows.start + 2 * WEEK_LAG..rows.end).filter(|&o| is_day_ahead_origin(table, o, HOURS_PER_DAY));
    let samples = origins.flat_map(|origin| {
        let (fitted, features) = (&fitted, features);
        let at_origin = fitted.origin_terms(origin);
        (1..=leads).filter(move |lead| origin + lead < rows.end).map(move |lead| {
            let row = origin + lead;
            let terms = fitted.terms(features, row, origin, at_origin);
            (lead, fitted.lag_inputs(features, row, origin, terms), f64::from(features.value[row]))
        })
    });
    let lags = LagRegression::fit(LagDesign::NOW, leads, samples);
    RegressionBase { lags, ..fitted.regression }
}

/// Is row `o` a day-ahead origin: on the hour, a multiple of `every` hours after the issue
/// hour (10:00 local)?
fn is_day_ahead_origin(table: &FeatureTable, o: usize, every: usize) -> bool {
    let local = from_us(table.timestamps[o]).with_timezone(&table.zone);
    let since_issue = (local.hour() as usize + HOURS_PER_DAY - DAY_AHEAD_ISSUE_HOUR as usize) % HOURS_PER_DAY;
    since_issue.is_multiple_of(every) && local.minute() == 0
}

/// 1.0 on a major holiday: a holiday that is not a minor one ([`RowCalendar::minor_holiday`]).
fn major_holiday(calendar: RowCalendar) -> f64 {
    calendar.holiday - calendar.minor_holiday
}

/// Each row's calendar (local time of the hour's start), `extra_rows` hours past the table's
/// end included; the holiday flag comes from the (extended) known `holiday` column.
fn row_calendar(table: &FeatureTable, known: &[Vec<f32>], extra_rows: usize) -> Vec<RowCalendar> {
    let holiday = table.known_columns.iter().position(|c| c == super::COL_HOLIDAY);
    let last = table.timestamps.last().copied().unwrap_or_default();
    (0..table.len() + extra_rows)
        .map(|r| {
            let end = table.timestamps.get(r).copied().unwrap_or_else(|| last + (r + 1 - table.len()) as i64 * HOUR_US);
            let local = from_us(end - HOUR_US).with_timezone(&table.zone);
            let weekday = local.weekday().num_days_from_monday() as usize;
            let weekend = if weekday >= 5 { 24 } else { 0 };
            let flag = holiday.map_or(0.0, |k| f64::from(known[k][r]));
            let date = local.date_naive();
            let minor = flag == 1.0 && crate::time::is_minor_us_holiday(date);
            // the day after a Thanksgiving that the calendar marks
            let bridge = crate::time::is_day_after_thanksgiving(date)
                && r.checked_sub(HOURS_PER_DAY).is_some_and(|before| holiday.is_some_and(|k| known[k][before] == 1.0));
            RowCalendar {
                hour_slot: local.hour() as usize + weekend,
                weekday,
                holiday: if flag.is_finite() { flag } else { 0.0 },
                minor_holiday: f64::from(u8::from(minor)),
                bridge_day: f64::from(u8::from(bridge)),
                year_fraction: (f64::from(local.ordinal0()) + f64::from(local.hour()) / 24.0) / 365.25,
            }
        })
        .collect()
}

impl Features {
    fn new(table: &FeatureTable, scaler: &Scaler, extra_rows: usize) -> Result<Self, FeatureError> {
        let scaled = |name: &str, values: Vec<f32>| -> Result<Vec<f32>, FeatureError> {
            match scaler.index(name) {
                Some(i) => {
                    let (mean, std) = (scaler.mean[i], scaler.std[i]);
                    Ok(values.iter().map(|v| ((f64::from(*v) - mean) / std) as f32).collect())
                }
                None if needs_scaling(name) => {
                    Err(FeatureError::Scaler(format!("no statistics for column `{name}` (fit the scaler on it)")))
                }
                None => Ok(values),
            }
        };
        let future_calendar = if extra_rows > 0 {
            let last = table.timestamps.last().copied().unwrap_or_default();
            let hours: Vec<i64> = (1..=extra_rows as i64).map(|k| last + k * HOUR_US).collect();
            Some(calendar_frame(&hours, table.zone, crate::region::holidays(&table.region))?)
        } else {
            None
        };
        let mut observed = Vec::with_capacity(table.observed_columns.len());
        for name in &table.observed_columns {
            observed.push(scaled(name, table.column(name)?)?);
        }
        let mut issued = Vec::with_capacity(table.known_columns.len());
        for name in &table.known_columns {
            let mut forecasts = Vec::new();
            for column in table.issued.iter().filter(|i| &i.base == name) {
                let mut values = table.column(&column.column)?;
                values.resize(table.len() + extra_rows, f32::NAN);
                forecasts.push((column.days, scaled(name, values)?));
            }
            forecasts.sort_by_key(|(days, _)| *days);
            issued.push(forecasts);
        }
        let mut known = Vec::with_capacity(table.known_columns.len());
        for name in &table.known_columns {
            let mut values = table.column(name)?;
            if let Some(calendar) = &future_calendar {
                if CALENDAR_COLUMNS.contains(&name.as_str()) {
                    let future = calendar.column(name)?.f64()?;
                    values.extend(future.iter().map(|v| v.map_or(f32::NAN, |x| x as f32)));
                } else {
                    for _ in 0..extra_rows {
                        let earlier = values.len().checked_sub(24).map_or(f32::NAN, |i| values[i]);
                        values.push(earlier);
                    }
                }
            }
            known.push(scaled(name, values)?);
        }
        if scaler.index(COL_VALUE).is_none() {
            return Err(FeatureError::Scaler(format!("no statistics for the target column `{COL_VALUE}`")));
        }
        // targets: the hindsight-cleaned load, scaled like the input `value`
        let mut value = scaled(COL_VALUE, table.target.clone())?;
        value.resize(table.len() + extra_rows, f32::NAN);
        let prefix = |columns: &[Vec<f32>], rows: usize| {
            let mut out = Vec::with_capacity(rows + 1);
            out.push(0u32);
            for r in 0..rows {
                let bad = columns.iter().any(|c| !c[r].is_finite());
                out.push(out[r] + u32::from(bad));
            }
            out
        };
        let observed_bad = prefix(&observed, table.len());
        let known_bad = prefix(&known, table.len() + extra_rows);
        let mut names: Vec<String> = table.observed_columns.clone();
        names.push(OBSERVED_INDICATOR.to_string());
        names.extend(table.known_columns.iter().cloned());
        names.extend(NAIVE_FEATURES.iter().map(|(name, _)| name.to_string()));
        let exogenous: Vec<usize> = (0..table.known_columns.len())
            .filter(|k| !CALENDAR_COLUMNS.contains(&table.known_columns[*k].as_str()))
            .collect();
        for &k in &exogenous {
            names.extend(NAIVE_FEATURES.iter().map(|(naive, _)| format!("{}_{naive}", table.known_columns[k])));
        }

        let value_column = table
            .observed_columns
            .iter()
            .position(|c| c == COL_VALUE)
            .ok_or_else(|| FeatureError::Window(format!("the table has no `{COL_VALUE}` column")))?;
        let base = match &scaler.base {
            Some(regression) => {
                let inputs = regression
                    .inputs
                    .iter()
                    .map(|name| {
                        exogenous.iter().copied().find(|&k| &table.known_columns[k] == name).ok_or_else(|| {
                            FeatureError::Window(format!(
                                "the regression base uses the input `{name}`, which the table does not have"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if inputs.len() != exogenous.len() {
                    return Err(FeatureError::Window(format!(
                        "the regression base was fitted on the inputs [{}], the table has {} exogenous inputs",
                        regression.inputs.join(", "),
                        exogenous.len()
                    )));
                }
                let calendar = row_calendar(table, &known, extra_rows);
                Some(FittedBase::new(
                    regression.clone(),
                    calendar,
                    inputs,
                    (&observed[value_column], &known, table.len()),
                ))
            }
            None => None,
        };
        Ok(Self { names, observed, known, value, observed_bad, known_bad, value_column, issued, exogenous, base })
    }

    /// Known column `k` at horizon row `row` of the window at `origin`: for a column with
    /// as-issued forecasts, the one issued at or before the origin — `days` ≥ ⌈lead / 24⌉, the
    /// shortest such lead that holds a value — else `None` (the caller falls back to the
    /// column itself, a perfect forecast, and says so). Columns without forecasts: their value.
    fn known_at(&self, k: usize, row: usize, origin: usize) -> Option<f32> {
        let forecasts = &self.issued[k];
        if forecasts.is_empty() {
            return Some(self.known[k][row]);
        }
        let needed = (row - origin).div_ceil(24);
        forecasts.iter().filter(|(days, _)| *days >= needed).map(|(_, values)| values[row]).find(|v| v.is_finite())
    }

    /// The row `lag` hours before `row`, moved back by whole days until it is known at
    /// `origin`; `None` before the table's start.
    fn naive_row(row: usize, origin: usize, lag: usize) -> Option<usize> {
        let mut back = lag;
        while row >= back && row - back > origin {
            back += 24;
        }
        row.checked_sub(back)
    }

    /// The scaled input value at [`Self::naive_row`]; 0 (the mean) where there is none.
    fn naive(&self, row: usize, origin: usize, lag: usize) -> f32 {
        let value = Self::naive_row(row, origin, lag).map_or(f32::NAN, |r| self.observed[self.value_column][r]);
        if value.is_finite() { value } else { 0.0 }
    }

    /// Exogenous known column `k`'s observed value at [`Self::naive_row`] (known at the origin:
    /// the row is at or before it); 0 (the mean) where there is none.
    fn naive_exogenous(&self, k: usize, row: usize, origin: usize, lag: usize) -> f32 {
        let value = Self::naive_row(row, origin, lag).map_or(f32::NAN, |r| self.known[k][r]);
        if value.is_finite() { value } else { 0.0 }
    }

    /// Are all inputs of the window at origin `o` finite (rows inside the prepared columns)?
    fn complete(&self, o: usize, spec: &WindowSpec) -> bool {
        let first = o + 1 - spec.context;
        let last = o + spec.gap() + spec.horizon; // inclusive
        last + 1 < self.known_bad.len()
            && self.observed_bad[o + 1] == self.observed_bad[first]
            && self.known_bad[last + 1] == self.known_bad[first]
    }

    fn fill(&self, spec: &WindowSpec, origins: Vec<usize>, skipped_imputed: usize) -> Windows {
        let (positions, horizon) = (spec.positions(), spec.horizon);
        let n_features = self.names.len();
        let n_observed = self.observed.len();
        let per_window = positions * n_features;
        // Every element is written below, so the buffers are not zeroed first: at hundreds of
        // megabytes, a zeroing pass (a memset when the allocator reuses memory) costs as much
        // as the fill itself.
        let (input_len, target_len) = (origins.len() * per_window, origins.len() * horizon);
        let n_known = self.known.len();
        let n_naive = NAIVE_FEATURES.len() * (1 + self.exogenous.len());
        assert_eq!(n_features, n_observed + 1 + n_known + n_naive, "a window position is every feature");
        let mut inputs: Vec<f32> = Vec::with_capacity(input_len);
        let mut targets: Vec<f32> = Vec::with_capacity(target_len);
        let mut bases: Vec<f32> = Vec::with_capacity(target_len);
        inputs.spare_capacity_mut()[..input_len]
            .par_chunks_mut(per_window.max(1))
            .zip(targets.spare_capacity_mut()[..target_len].par_chunks_mut(horizon))
            .zip(bases.spare_capacity_mut()[..target_len].par_chunks_mut(horizon))
            .zip(origins.par_iter())
            .for_each(|(((input, target), base), &o)| {
                let first = o + 1 - spec.context;
                for (p, features) in input.chunks_mut(n_features).enumerate() {
                    let row = first + p;
                    let (observed, known) = features.split_at_mut(n_observed + 1);
                    if p < spec.context {
                        for (slot, column) in observed.iter_mut().zip(&self.observed) {
                            slot.write(column[row]);
                        }
                        observed[n_observed].write(1.0);
                    } else {
                        // horizon positions: observed features unknown, mask 0
                        observed.iter_mut().for_each(|slot| {
                            slot.write(0.0);
                        });
                    }
                    let (known, naive) = known.split_at_mut(n_known);
                    for (k, (slot, column)) in known.iter_mut().zip(&self.known).enumerate() {
                        let value = if p < spec.context {
                            column[row]
                        } else {
                            self.known_at(k, row, o).unwrap_or(column[row])
                        };
                        slot.write(value);
                    }
                    let (naive, naive_exogenous) = naive.split_at_mut(NAIVE_FEATURES.len());
                    for (slot, (_, lag)) in naive.iter_mut().zip(NAIVE_FEATURES) {
                        slot.write(self.naive(row, o, lag));
                    }
                    let at_naive = self.exogenous.iter().flat_map(|&k| NAIVE_FEATURES.map(|(_, lag)| (k, lag)));
                    for (slot, (k, lag)) in naive_exogenous.iter_mut().zip(at_naive) {
                        slot.write(self.naive_exogenous(k, row, o, lag));
                    }
                }
                let start = o + spec.gap() + 1;
                for (slot, value) in target.iter_mut().zip(&self.value[start..start + horizon]) {
                    slot.write(*value);
                }
                match &self.base {
                    Some(fitted) => {
                        let at_origin = fitted.origin_terms(o);
                        for (h, slot) in base.iter_mut().enumerate() {
                            slot.write(fitted.base_at(self, start + h, o, at_origin));
                        }
                    }
                    None => {
                        for (h, slot) in base.iter_mut().enumerate() {
                            slot.write(self.naive(start + h, o, WEEK_LAG));
                        }
                    }
                }
            });
        // SAFETY: the first `input_len` and `target_len` elements were all initialised above:
        // the chunks cover them exactly (`origins.len()` windows of `per_window` and `horizon`
        // elements), every position of a window writes its `n_observed + 1` observed-and-mask
        // slots, its `n_known` known slots and its naive slots (`n_features = n_observed + 1 +
        // n_known + n_naive`, the naives of the load and of each exogenous column), and every
        // target and base slot is written.
        unsafe {
            inputs.set_len(input_len);
            targets.set_len(target_len);
            bases.set_len(target_len);
        }
        // only columns with as-issued forecasts can fall back to a perfect forecast
        let forecast_columns: Vec<usize> = (0..n_known).filter(|k| !self.issued[*k].is_empty()).collect();
        let perfect_weather = origins
            .iter()
            .map(|&o| {
                let first = o + 1 - spec.context;
                !forecast_columns.is_empty()
                    && (spec.context..positions)
                        .any(|p| forecast_columns.iter().any(|&k| self.known_at(k, first + p, o).is_none()))
            })
            .collect();
        Windows {
            perfect_weather,
            count: origins.len(),
            positions,
            horizon,
            n_features,
            feature_names: self.names.clone(),
            inputs,
            targets,
            bases,
            origins,
            skipped_imputed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SplitConfig, SyntheticConfig};
    use crate::features::tests::{synthetic, synthetic_table};
    use crate::features::{FLAG_MISSING, FeatureConfig, from_rows, split};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn table() -> &'static (FeatureTable, Scaler) {
        static TABLE: OnceLock<(FeatureTable, Scaler)> = OnceLock::new();
        TABLE.get_or_init(|| {
            // 2024-01-01 .. 2024-04-09: crosses the New York spring DST change (2024-03-10)
            let table = synthetic_table(100);
            let scaler = Scaler::fit_table(&table, 0..1700).unwrap();
            (table, scaler)
        })
    }

    /// The rows' calendar tells a minor holiday (MLK Day) from a major one (New Year's Day,
    /// Thanksgiving) and marks the day after Thanksgiving, by local day.
    #[test]
    fn the_row_calendar_marks_minor_holidays_and_the_bridge_day() {
        let table = synthetic_table(340);
        let scaler = Scaler::fit_table(&table, 0..table.len()).unwrap();
        let features = Features::new(&table, &scaler, 0).unwrap();
        let calendar = row_calendar(&table, &features.known, 0);
        let noon = |month, day| {
            let date = chrono::NaiveDate::from_ymd_opt(2024, month, day).unwrap();
            let row = table
                .timestamps
                .iter()
                .position(|t| {
                    let local = from_us(t - HOUR_US).with_timezone(&table.zone);
                    local.date_naive() == date && local.hour() == 12
                })
                .unwrap();
            let c = calendar[row];
            [c.holiday, c.minor_holiday, c.bridge_day, major_holiday(c)]
        };
        assert_eq!(noon(1, 1), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(noon(1, 15), [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(noon(1, 16), [0.0, 0.0, 0.0, 0.0]);
        assert_eq!(noon(11, 28), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(noon(11, 29), [0.0, 0.0, 1.0, 0.0]);
    }

    fn next24(context: usize, stride: usize) -> WindowSpec {
        WindowSpec { context, horizon: 24, stride, protocol: Protocol::Next24h }
    }

    fn at(w: &Windows, window: usize, position: usize, feature: usize) -> f32 {
        w.inputs[(window * w.positions + position) * w.n_features + feature]
    }

    /// A table with the temperature and its as-issued forecasts (`temp_d1`, `temp_d2`), the
    /// issued columns changed by `perturb(column, hour index, value)`.
    fn issued_table(perturb: impl Fn(&str, usize, f64) -> f64) -> FeatureTable {
        issued_table_of(40, perturb)
    }

    /// A change of everything the origin could not know: the load and observed temperature
    /// after it, and forecasts issued after it.
    fn unknown_at(origin: usize) -> impl Fn(&str, usize, f64) -> f64 {
        move |name, k, v| {
            let issued_after = |days: usize| k > origin + 24 * days;
            match name {
                "load" if k > origin => v * 1.2,
                "temp" if k > origin => v + 7.0,
                "temp_d1" if issued_after(1) => v - 5.0,
                "temp_d2" if issued_after(2) => v + 3.0,
                _ => v,
            }
        }
    }

    fn issued_table_of(days: i64, perturb: impl Fn(&str, usize, f64) -> f64) -> FeatureTable {
        use crate::features::Rows;
        use crate::ingest::{Source, synthetic::SyntheticSource};
        use chrono::TimeZone;
        let start = chrono::Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let range = crate::time::DateRange::new(start, start + chrono::TimeDelta::days(days)).unwrap();
        let source = SyntheticSource::new(&["SYN1".to_string()], SyntheticConfig::default());
        let batch = futures::executor::block_on(source.fetch(range)).unwrap();
        let rows = |i: usize, name: &str| Rows {
            timestamps: batch.series[i].timestamps.clone(),
            values: batch.series[i].values.iter().enumerate().map(|(k, v)| v.map(|v| perturb(name, k, v))).collect(),
        };
        let exogenous: Vec<(String, Rows)> =
            ["temp", "temp_d1", "temp_d2"].iter().enumerate().map(|(i, n)| (n.to_string(), rows(i + 1, n))).collect();
        from_rows("SYN1", "D", &rows(0, "load"), &exogenous, &FeatureConfig::default()).unwrap()
    }

    /// The no-leakage rule of as-issued weather: at a horizon hour `lead` hours after the
    /// origin the temperature input is the forecast issued at least ⌈lead / 24⌉ days before
    /// it. Changing every observed temperature after the origin and every forecast issued
    /// after it leaves the window bit-identical; changing a forecast issued before it does not.
    #[test]
    fn as_issued_weather_uses_only_forecasts_issued_by_the_origin() {
        let spec = WindowSpec { context: 48, horizon: 24, stride: 24, protocol: Protocol::DayAhead };
        let table = issued_table(|_, _, v| v);
        assert_eq!(table.issued.len(), 2);
        assert!(!table.known_columns.iter().any(|c| c.starts_with("temp_d")));
        let scaler = Scaler::fit_table(&table, 0..600).unwrap();
        let windows = make_windows(&table, &scaler, &spec, 600..table.len()).unwrap();
        assert!(windows.count >= 10 && windows.perfect_weather.iter().all(|p| !p));
        let w = 5;
        let origin = windows.origins[w];
        // hour index k of the stored rows is table row k (complete synthetic grid)
        let perturbed = issued_table(|name, k, v| {
            let after_origin = k > origin;
            let issued_after = |days: usize| k > origin + 24 * days; // run time k − 24·days > origin
            match name {
                "temp" if after_origin => v + 7.0,
                "temp_d1" if issued_after(1) => v - 5.0,
                "temp_d2" if issued_after(2) => v + 3.0,
                _ => v,
            }
        });
        let again = make_windows(&perturbed, &scaler, &spec, 600..table.len()).unwrap();
        assert_eq!(again.origins[w], origin);
        let size = windows.positions * windows.n_features;
        assert_eq!(windows.inputs[w * size..(w + 1) * size], again.inputs[w * size..(w + 1) * size]);
        // a forecast issued before the origin is an input: day-ahead hours 15..=38 h ahead use
        // temp_d1 up to lead 24 h and temp_d2 beyond
        let temp = windows.feature_names.iter().position(|n| n == "temp").unwrap();
        let at = |w: &Windows, p: usize| w.inputs[(5 * w.positions + p) * w.n_features + temp];
        let first_target = spec.context + spec.gap();
        for (h, column, shift) in [(0usize, "temp_d1", 2.0), (23, "temp_d2", 2.0)] {
            let row = origin + spec.gap() + 1 + h;
            let changed = issued_table(|name, k, v| if name == column && k == row { v + shift } else { v });
            let moved = make_windows(&changed, &scaler, &spec, 600..table.len()).unwrap();
            assert_ne!(at(&moved, first_target + h), at(&windows, first_target + h), "{column} at h {h}");
        }
        // without forecasts (years before they were kept), the observed value stands in and the
        // window says so (a gap within a forecast series is filled causally like any input's)
        let missing = issued_table(|name, _, v| if name.starts_with("temp_d") { f64::NAN } else { v });
        let fallback = make_windows(&missing, &scaler, &spec, 600..table.len()).unwrap();
        let w_fallback = fallback.origins.iter().position(|o| *o == origin).unwrap();
        assert!(fallback.perfect_weather[w_fallback]);
        let mut dropped = fallback.clone();
        let removed = dropped.drop_perfect_weather();
        assert!(removed > 0 && dropped.count + removed == fallback.count);
        assert!(!dropped.origins.contains(&origin));
    }

    #[test]
    fn shapes_and_observed_features_after_the_origin() {
        let (table, scaler) = table();
        let spec = next24(48, 12);
        let w = make_windows(table, scaler, &spec, 0..table.len()).unwrap();
        assert_eq!(w.positions, 72);
        // the table's one exogenous column (`temp`) also appears at the naives' hours
        let exogenous = table.known_columns.iter().filter(|c| !CALENDAR_COLUMNS.contains(&c.as_str())).count();
        assert_eq!(exogenous, 1);
        assert_eq!(
            w.n_features,
            table.observed_columns.len() + 1 + table.known_columns.len() + NAIVE_FEATURES.len() * (1 + exogenous)
        );
        assert_eq!(w.feature_names.len(), w.n_features);
        assert_eq!(w.feature_names[table.observed_columns.len()], OBSERVED_INDICATOR);
        assert_eq!(w.inputs.len(), w.count * w.positions * w.n_features);
        assert_eq!(w.targets.len(), w.count * 24);
        assert_eq!(w.origins.len(), w.count);
        // first origin: enough context for lag_168 / roll168 (rows 168..) plus 48 rows
        assert_eq!(w.origins[0], 215); // origins 11, 23, …; the first with rows o-47.. ≥ 168
        assert!(w.origins.windows(2).all(|o| o[1] - o[0] == 12));
        assert!(w.inputs.iter().all(|x| x.is_finite()));
        let n_observed = table.observed_columns.len();
        let temp = w.feature_names.iter().position(|n| n == "temp").unwrap();
        let temp_column = table.column("temp").unwrap();
        for k in [0, w.count / 2, w.count - 1] {
            let o = w.origins[k];
            for p in 0..w.positions {
                let row = o + 1 - 48 + p;
                if p < 48 {
                    assert_eq!(at(&w, k, p, n_observed), 1.0);
                    assert_eq!(at(&w, k, p, 0), scaler.transform(COL_VALUE, table.target[row]));
                } else {
                    assert!((0..=n_observed).all(|j| at(&w, k, p, j) == 0.0), "window {k} position {p}");
                }
                // known features are present at every position
                assert_eq!(at(&w, k, p, temp), scaler.transform("temp", temp_column[row]));
            }
        }
    }

    /// Concatenated windows are the first set's followed by the second's, every field.
    #[test]
    fn concatenated_windows_keep_both_in_order() {
        let (table, scaler) = table();
        let spec = next24(48, 12);
        let first = make_windows(table, scaler, &spec, 0..1200).unwrap();
        let later = make_windows(table, scaler, &spec, 1200..table.len()).unwrap();
        let all = first.concatenated(&later);
        assert_eq!(all.count, first.count + later.count);
        assert_eq!(all.origins, [first.origins.clone(), later.origins.clone()].concat());
        let per_window = all.positions * all.n_features;
        assert_eq!(all.inputs[..first.count * per_window], first.inputs[..]);
        assert_eq!(all.inputs[first.count * per_window..], later.inputs[..]);
        assert_eq!(all.residual_targets(), [first.residual_targets(), later.residual_targets()].concat());
        assert_eq!(all.perfect_weather.len(), all.count);
    }

    /// The naive features: plain lags 24 and 168 in the context; at horizon positions the
    /// same hour of the latest day (week) known at the origin, for both protocols.
    #[test]
    fn naive_features_hold_what_is_known_at_issue_time() {
        let (table, scaler) = table();
        let value = table.column(COL_VALUE).unwrap();
        let scaled = |row: usize| scaler.transform(COL_VALUE, value[row]);
        for spec in [next24(48, 12), WindowSpec { context: 24, horizon: 24, stride: 1, protocol: Protocol::DayAhead }] {
            let w = make_windows(table, scaler, &spec, 0..table.len()).unwrap();
            let day = w.feature_names.iter().position(|n| n == "naive_day").unwrap();
            let week = w.feature_names.iter().position(|n| n == "naive_week").unwrap();
            let temp_day = w.feature_names.iter().position(|n| n == "temp_naive_day").unwrap();
            let temp_week = w.feature_names.iter().position(|n| n == "temp_naive_week").unwrap();
            assert_eq!((temp_day, temp_week), (week + 1, w.n_features - 1));
            let temp = table.column("temp").unwrap();
            let temp_at = |row: usize| scaler.transform("temp", temp[row]);
            for k in [0, w.count / 2, w.count - 1] {
                let o = w.origins[k];
                let first = o + 1 - spec.context;
                for p in 0..w.positions {
                    let row = first + p;
                    let (d, wk) = (at(&w, k, p, day), at(&w, k, p, week));
                    let (td, tw) = (at(&w, k, p, temp_day), at(&w, k, p, temp_week));
                    if row <= o {
                        assert_eq!((d, wk), (scaled(row - 24), scaled(row - 168)), "context position {p}");
                        assert_eq!((td, tw), (temp_at(row - 24), temp_at(row - 168)), "context position {p}");
                    } else {
                        // the latest same hour at or before the origin
                        let back_day = (row - o).div_ceil(24) * 24;
                        assert!(row - back_day <= o && row - back_day + 24 > o);
                        assert_eq!(d, scaled(row - back_day), "horizon position {p}");
                        let back_week = if row - 168 <= o { 168 } else { 168 + (row - 168 - o).div_ceil(24) * 24 };
                        assert_eq!(wk, scaled(row - back_week), "horizon position {p}");
                        // the observed temperature of the same hours, known at the origin
                        assert_eq!((td, tw), (temp_at(row - back_day), temp_at(row - back_week)));
                        // a target's base is its position's week-back naive
                        if let Some(h) = row.checked_sub(o + spec.gap() + 1).filter(|h| *h < spec.horizon) {
                            assert_eq!(w.bases[k * spec.horizon + h], wk);
                            let residual = w.residual_targets()[k * spec.horizon + h];
                            assert_eq!(residual, w.targets[k * spec.horizon + h] - wk);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn day_ahead_origins_at_10_local_and_targets_from_local_midnight_across_dst() {
        let (table, scaler) = table();
        let spec = WindowSpec { context: 24, horizon: 24, stride: 1, protocol: Protocol::DayAhead };
        let w = make_windows(table, scaler, &spec, 0..table.len()).unwrap();
        assert!(w.count > 80, "{} windows", w.count);
        let local = |row: usize| from_us(table.timestamps[row]).with_timezone(&table.zone);
        let mut crossed_dst = false;
        for (k, &o) in w.origins.iter().enumerate() {
            assert_eq!(local(o).hour(), 10);
            let first_target = o + 15;
            // the first target hour begins at local midnight of the next day
            let begins = from_us(table.timestamps[first_target] - HOUR_US).with_timezone(&table.zone);
            assert_eq!((begins.hour(), begins.date_naive()), (0, local(o).date_naive().succ_opt().unwrap()));
            assert_eq!(w.targets[k * 24], scaler.transform(COL_VALUE, table.target[first_target]));
            if k > 0 && o - w.origins[k - 1] == 23 {
                crossed_dst = true;
            }
            if k > 0 {
                assert!(matches!(o - w.origins[k - 1], 23..=25));
            }
        }
        assert!(crossed_dst, "the range includes the spring DST change");
    }

    #[test]
    fn day_ahead_training_origins_every_few_hours_keep_the_lead_structure() {
        let (table, scaler) = table();
        let spec = WindowSpec { context: 24, horizon: 24, stride: 1, protocol: Protocol::DayAhead };
        let daily = make_windows(table, scaler, &spec, 0..table.len()).unwrap();
        let every_24 = make_training_windows(table, scaler, &spec, 0..table.len(), 24).unwrap();
        assert_eq!(
            (every_24.origins.as_slice(), every_24.inputs.as_slice()),
            (daily.origins.as_slice(), daily.inputs.as_slice())
        );
        let every_6 = make_training_windows(table, scaler, &spec, 0..table.len(), 6).unwrap();
        let local_hour = |row: usize| from_us(table.timestamps[row]).with_timezone(&table.zone).hour();
        let hours: std::collections::BTreeSet<u32> = every_6.origins.iter().map(|o| local_hour(*o)).collect();
        assert_eq!(hours.into_iter().collect::<Vec<_>>(), [4, 10, 16, 22]);
        assert!(every_6.count >= 4 * daily.count - 8, "{} against {}", every_6.count, daily.count);
        // every 10:00 window is among them, bit for bit, and every window keeps the 14-hour gap
        let per_window = daily.positions * daily.n_features;
        for (k, o) in daily.origins.iter().enumerate() {
            let j = every_6.origins.iter().position(|x| x == o).expect("the 10:00 origin is kept");
            assert_eq!(
                every_6.inputs[j * per_window..(j + 1) * per_window],
                daily.inputs[k * per_window..(k + 1) * per_window]
            );
        }
        for (j, o) in every_6.origins.iter().enumerate() {
            assert_eq!(every_6.targets[j * 24], scaler.transform(COL_VALUE, table.target[o + 15]));
        }
        for bad in [0, 5, 7] {
            assert!(make_training_windows(table, scaler, &spec, 0..table.len(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_with_imputed_targets_are_skipped_and_counted() {
        let (mut load, temp) = synthetic("SYN1", 30, SyntheticConfig::default());
        load.values[400] = None;
        load.values[500] = Some(1e9);
        let table = from_rows("SYN1", "D", &load, &[("temp".into(), temp)], &FeatureConfig::default()).unwrap();
        assert_eq!(
            table.flags[400],
            FLAG_MISSING | crate::features::FLAG_INTERPOLATED | crate::features::FLAG_INPUT_IMPUTED
        );
        let scaler = Scaler::fit_table(&table, 0..500).unwrap();
        let spec = next24(24, 1);
        let w = make_windows(&table, &scaler, &spec, 0..table.len()).unwrap();
        assert_eq!(w.skipped_imputed, 48, "24 windows cover each imputed hour");
        for &o in &w.origins {
            assert!(!(o + 1..=o + 24).contains(&400) && !(o + 1..=o + 24).contains(&500));
        }
        assert_eq!(w.count + w.skipped_imputed, table.len() - 24 - 192 + 1);
    }

    #[test]
    fn split_windows_never_straddle_a_boundary() {
        let (table, scaler) = table();
        let splits = split(table.len(), &SplitConfig::default(), 24 + 168).unwrap();
        for protocol in [Protocol::Next24h, Protocol::DayAhead] {
            let spec = WindowSpec { context: 24, horizon: 24, stride: 5, protocol };
            let mut seen = std::collections::HashSet::new();
            for rows in [&splits.train, &splits.validation, &splits.test] {
                let w = make_windows(table, scaler, &spec, rows.clone()).unwrap();
                assert!(w.count > 0);
                for &o in &w.origins {
                    let targets = o + spec.gap() + 1..o + spec.gap() + 25;
                    assert!(rows.start <= targets.start && targets.end <= rows.end, "{protocol:?} origin {o}");
                    assert!(seen.insert(o));
                }
            }
        }
    }

    #[test]
    fn window_at_the_last_row_extends_known_columns() {
        let (table, scaler) = table();
        let last = table.len() - 1;
        let spec = next24(48, 1);
        let w = window_at(table, scaler, &spec, last).unwrap();
        assert_eq!((w.count, w.origins[0]), (1, last));
        assert!(w.targets.iter().all(|t| t.is_nan()));
        assert!(w.inputs.iter().all(|x| x.is_finite()));
        // the calendar continues: hour_sin of the first future hour follows the last row's
        let hour_sin = w.feature_names.iter().position(|n| n == "hour_sin").unwrap();
        let hour_cos = w.feature_names.iter().position(|n| n == "hour_cos").unwrap();
        let hour = |p: usize| {
            let (s, c) = (at(&w, 0, p, hour_sin), at(&w, 0, p, hour_cos));
            (f64::from(s).atan2(f64::from(c)) * 24.0 / std::f64::consts::TAU).round().rem_euclid(24.0) as i64
        };
        for p in 47..71 {
            assert_eq!((hour(p) + 1) % 24, hour(p + 1));
        }
        // inside the table it matches make_windows
        let o = last - 24;
        let one = window_at(table, scaler, &spec, o).unwrap();
        let all = make_windows(table, scaler, &spec, o + 1..o + 25).unwrap();
        assert_eq!(all.origins, vec![o]);
        assert_eq!(one.inputs, all.inputs);
        assert_eq!(one.targets, all.targets);
        assert!(window_at(table, scaler, &spec, 100).is_err(), "no lag_168 yet");
        assert!(window_at(table, scaler, &spec, table.len()).is_err());
    }

    /// `[model] base = "regression"`: the regression is fitted on the training rows only, it
    /// takes what is known at the origin (the load up to it, the weather as issued), its bases
    /// are nearer the targets than the week-back naive's, `window_at` (forecast) rebuilds the
    /// training bases, and the scaler carries it through JSON (a checkpoint without it reads as
    /// the week-back base).
    #[test]
    fn the_regression_base_is_fitted_on_training_rows_and_uses_what_is_known_at_the_origin() {
        use crate::features::base::BaseKind;
        let (table, week) = table();
        let train = 0..1700;
        let scaler = Scaler::fit_model(table, train.clone(), BaseKind::Regression, Protocol::Next24h).unwrap();
        let fitted = scaler.base.as_ref().unwrap();
        assert_eq!(fitted.inputs, vec!["temp".to_string()]);
        assert!(fitted.rows > 1400 && fitted.rows <= 1700, "{}", fitted.rows);
        assert!(fitted.phi > 0.5 && fitted.phi < 1.0, "φ {}", fitted.phi);
        // training rows only: another load after them fits the same regression
        let mut later = table.clone();
        later.target[1700..].iter_mut().for_each(|v| *v *= 1.3);
        assert_eq!(Scaler::fit_model(&later, train, BaseKind::Regression, Protocol::Next24h).unwrap(), scaler);

        let spec = next24(168, 24);
        let test = 1800..table.len();
        let with = make_windows(table, &scaler, &spec, test.clone()).unwrap();
        let without = make_windows(table, week, &spec, test.clone()).unwrap();
        assert_eq!((with.origins.clone(), with.inputs.clone()), (without.origins.clone(), without.inputs.clone()));
        let error = |w: &Windows| w.residual_targets().iter().map(|e| f64::from(e.abs())).sum::<f64>();
        assert!(
            error(&with) < 0.9 * error(&without),
            "regression base error {} against week-back {}",
            error(&with),
            error(&without)
        );
        // the first hours after the origin are near the load at the origin
        let first_lead =
            |w: &Windows| (0..w.count).map(|i| f64::from((w.residual_targets()[i * 24]).abs())).sum::<f64>();
        assert!(first_lead(&with) < 0.6 * first_lead(&without));
        // a forecast from the last row builds its bases as training does
        let o = table.len() - 30;
        let one = window_at(table, &scaler, &spec, o).unwrap();
        let all = make_windows(table, &scaler, &spec, o + 1..o + 25).unwrap();
        assert_eq!((one.bases.clone(), all.origins.clone()), (all.bases.clone(), vec![o]));
        let last = window_at(table, &scaler, &spec, table.len() - 1).unwrap();
        assert!(last.bases.iter().all(|b| b.is_finite()));

        let json = serde_json::to_string(&scaler).unwrap();
        assert_eq!(serde_json::from_str::<Scaler>(&json).unwrap(), scaler);
        let old = serde_json::to_string(week).unwrap();
        assert!(!old.contains("base"), "{old}");
        assert_eq!(serde_json::from_str::<Scaler>(&old).unwrap().base, None);
        // a table without the regression's input is refused, naming it
        let mut other = scaler.clone();
        other.base.as_mut().unwrap().inputs = vec!["humidity".into()];
        let e = make_windows(table, &other, &spec, test).unwrap_err();
        assert!(e.to_string().contains("`humidity`"), "{e}");
    }

    /// With as-issued weather, a regression base window is bit-identical when everything the
    /// origin could not know changes: the load and observed temperature after it, forecasts
    /// issued after it. Both protocols: day-ahead (the φ mix) and next-24h (per-lead weights,
    /// which also use the regression's mean error over the last day and week).
    #[test]
    fn the_regression_base_does_not_see_past_the_origin() {
        use crate::features::base::{BaseKind, FITTED_LEADS};
        let table = issued_table(|_, _, v| v);
        for protocol in [Protocol::DayAhead, Protocol::Next24h] {
            let spec = WindowSpec { context: 48, horizon: 24, stride: 24, protocol };
            let scaler = Scaler::fit_model(&table, 0..600, BaseKind::Regression, protocol).unwrap();
            let leads = scaler.base.as_ref().unwrap().leads.len();
            assert_eq!(leads, if protocol == Protocol::Next24h { FITTED_LEADS } else { 0 });
            let windows = make_windows(&table, &scaler, &spec, 600..table.len()).unwrap();
            let w = 5;
            let origin = windows.origins[w];
            let perturbed = issued_table(unknown_at(origin));
            let again = make_windows(&perturbed, &scaler, &spec, 600..table.len()).unwrap();
            let w_again = again.origins.iter().position(|o| *o == origin).unwrap();
            assert_eq!(
                windows.bases[w * 24..(w + 1) * 24],
                again.bases[w_again * 24..(w_again + 1) * 24],
                "{protocol:?}"
            );
            // the forecast issued a day before the first target hour moves its base, and so
            // does the load at the origin
            let row = origin + spec.gap() + 1;
            let changed = issued_table(|name, k, v| if name == "temp_d1" && k == row { v + 8.0 } else { v });
            let moved = make_windows(&changed, &scaler, &spec, 600..table.len()).unwrap();
            assert_ne!(moved.bases[w * 24], windows.bases[w * 24], "{protocol:?}");
            let changed = issued_table(|name, k, v| if name == "load" && k == origin { v * 1.1 } else { v });
            let moved = make_windows(&changed, &scaler, &spec, 600..table.len()).unwrap();
            assert_ne!(moved.bases[w * 24], windows.bases[w * 24], "{protocol:?}");
        }
    }

    /// Day-ahead on a training split of a whole year: the base is the lag regression, which
    /// forecasts the test split's targets closer than the φ mix and, like it, sees nothing
    /// after the origin (load, observed temperature, forecasts issued later).
    #[test]
    fn the_day_ahead_lag_regression_beats_the_mix_and_does_not_see_past_the_origin() {
        use crate::features::base::{BaseKind, LagDesign};
        let days = 400;
        let table = issued_table_of(days, |_, _, v| v);
        let train = 0..366 * 24;
        let scaler = Scaler::fit_model(&table, train.clone(), BaseKind::Regression, Protocol::DayAhead).unwrap();
        let lags = scaler.base.as_ref().unwrap().lags.as_ref().expect("a year of training fits the lag regression");
        assert!(lags.seasonal);
        assert_eq!(lags.leads.len(), DAY_AHEAD_GAP + 24);
        assert!(lags.leads.iter().all(|w| w.len() == LagDesign::NOW.dimension()));
        assert!((340..366).contains(&lags.samples), "{} origins", lags.samples);
        // less than a year keeps the φ mix
        let short = Scaler::fit_model(&table, 0..300 * 24, BaseKind::Regression, Protocol::DayAhead).unwrap();
        assert!(short.base.as_ref().unwrap().lags.is_none());

        let spec = WindowSpec { context: 48, horizon: 24, stride: 24, protocol: Protocol::DayAhead };
        let test = train.end..table.len();
        let windows = make_windows(&table, &scaler, &spec, test.clone()).unwrap();
        assert!(windows.count >= 25, "{}", windows.count);
        let mut mix = scaler.clone();
        mix.base.as_mut().unwrap().lags = None;
        let mixed = make_windows(&table, &mix, &spec, test.clone()).unwrap();
        assert_eq!(mixed.origins, windows.origins);
        let error = |w: &Windows| w.residual_targets().iter().map(|e| f64::from(e.abs())).sum::<f64>();
        assert!(
            error(&windows) < 0.9 * error(&mixed),
            "lag regression {} against the mix {}",
            error(&windows),
            error(&mixed)
        );
        // a forecast builds its bases as the backtest does, and the JSON keeps the regression
        let o = windows.origins[3];
        assert_eq!(window_at(&table, &scaler, &spec, o).unwrap().bases, windows.bases[3 * 24..4 * 24]);
        let json = serde_json::to_string(&scaler).unwrap();
        assert_eq!(serde_json::from_str::<Scaler>(&json).unwrap(), scaler);

        let w = 10;
        let origin = windows.origins[w];
        let perturbed = issued_table_of(days, unknown_at(origin));
        let again = make_windows(&perturbed, &scaler, &spec, test.clone()).unwrap();
        let w_again = again.origins.iter().position(|o| *o == origin).unwrap();
        assert_eq!(windows.bases[w * 24..(w + 1) * 24], again.bases[w_again * 24..(w_again + 1) * 24]);
        // the load at the origin and a week before it move the base
        for at in [origin, origin - 168] {
            let changed = issued_table_of(days, |name, k, v| if name == "load" && k == at { v * 1.1 } else { v });
            let moved = make_windows(&changed, &scaler, &spec, test.clone()).unwrap();
            assert_ne!(moved.bases[w * 24..(w + 1) * 24], windows.bases[w * 24..(w + 1) * 24], "load at row {at}");
        }
    }

    #[test]
    fn a_scaler_without_a_needed_column_is_refused() {
        let (table, _) = table();
        let scaler = Scaler::fit(table, &[COL_VALUE], 0..1000).unwrap();
        let e = make_windows(table, &scaler, &next24(24, 1), 0..table.len()).unwrap_err();
        assert!(e.to_string().contains("lag_24"), "{e}");
        assert_eq!(serde_json::to_string(&Protocol::Next24h).unwrap(), "\"next-24h\"");
        assert_eq!(serde_json::to_string(&Protocol::DayAhead).unwrap(), "\"day-ahead\"");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn targets_are_the_scaled_value_at_the_right_rows(
            context in 1usize..200,
            horizon in 1usize..48,
            stride in 1usize..50,
            day_ahead in any::<bool>(),
            start in 0usize..2000,
            len in 0usize..600,
        ) {
            let (table, scaler) = table();
            let protocol = if day_ahead { Protocol::DayAhead } else { Protocol::Next24h };
            let spec = WindowSpec { context, horizon, stride, protocol };
            let rows = start..(start + len).min(table.len());
            let w = make_windows(table, scaler, &spec, rows.clone()).unwrap();
            let value = table.column(COL_VALUE).unwrap();
            prop_assert_eq!(w.inputs.len(), w.count * spec.positions() * w.n_features);
            for (k, &o) in w.origins.iter().enumerate() {
                prop_assert!(o + 1 >= context);
                for h in 0..horizon {
                    let row = o + spec.gap() + 1 + h;
                    prop_assert!(rows.contains(&row));
                    prop_assert_eq!(w.targets[k * horizon + h], scaler.transform(COL_VALUE, value[row]));
                }
                // the last observed position holds the origin's value
                prop_assert_eq!(at(&w, k, context - 1, 0), scaler.transform(COL_VALUE, value[o]));
            }
        }
    }
}
