//! The **regression base**: what the model's forecast is a correction of (`[model] base =
//! "regression"`, the default; `"week"` keeps the week-back naive, [`super::windows`]).
//!
//! The week-back naive carries last week's load noise into every forecast; a model that
//! corrects it must first undo noise it cannot see. The regression base replaces it with:
//!
//! 1. a ridge regression of the scaled load on the hour of the day × weekend (48 one-hots), the
//!    weekday (7), the holiday flag, and for every exogenous known input (temperature, …) nine
//!    hinges `max(0, b − x)`, `max(0, x − b)` at scaled values b = −2, −1.5, …, 2 plus `x`
//!    itself: a piecewise-linear response to the weather. At a horizon hour `x` is the value
//!    known at the origin (the as-issued forecast where the table holds one);
//! 2. corrected by what the origin knows, in one of three ways:
//!    - the **φ mix** (day-ahead with less than a year of training rows): the regression's
//!      error at the origin decayed as `φ^lead` (φ, the lag-1 autocorrelation of its errors on
//!      the training rows), mixed with the week-back naive with the weight `φ^lead` on the
//!      regression: `a·(r(t) + a·e₀) + (1 − a)·naive_week(t)`, `a = φ^ℓ`;
//!    - **per-lead weights** (next-24h): the regression plus fitted weights on its recent
//!      errors and on the week-back naive's difference from it ([`LeadTerms`]);
//!    - the **lag regression** (day-ahead with a year of training rows or more): per lead, the
//!      load's departure from its last week's level regressed on the calendar, the issue-time
//!      lags and the regression's trend-free terms ([`LagRegression`]).
//!
//! It is fitted on the training split (like the [`super::Scaler`], and saved with it in the
//! checkpoint; a lag regression is fitted again on the training and validation splits before
//! the refit), so `forecast` and `evaluate` rebuild the very bases the model was trained
//! on. Measured in the README ("Forecast quality").
use super::FeatureError;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// `[model] base`: what the model's forecast corrects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseKind {
    /// The issue-time week-back naive of each target hour (the only base of models saved
    /// before the regression base: their checkpoints carry none).
    Week,
    /// The [`RegressionBase`], fitted on the training split.
    #[default]
    Regression,
}

/// Scaled input values at which the piecewise-linear response bends.
pub const HINGES: [f64; 9] = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0];
/// Hour of the day × weekend one-hots.
const HOUR_SLOTS: usize = 48;
const WEEKDAYS: usize = 7;
/// Columns of the calendar part: hour × weekend, weekday, holiday.
const CALENDAR_TERMS: usize = HOUR_SLOTS + WEEKDAYS + 1;
/// Columns per exogenous input: two hinges per knot, and the input itself.
const TERMS_PER_INPUT: usize = 2 * HINGES.len() + 1;
/// Ridge penalty per training row (on every coefficient): the one-hot blocks are collinear
/// (hour × weekend and weekday both sum to one), the penalty picks the smallest solution.
const RIDGE_PER_ROW: f64 = 1e-6;
/// Largest φ: the decay must stay a decay.
const MAX_PHI: f64 = 0.99;

/// The calendar of one row, local time of the hour's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowCalendar {
    /// 0..24 for weekdays, 24..48 for Saturday and Sunday.
    pub hour_slot: usize,
    /// 0 = Monday.
    pub weekday: usize,
    /// 1.0 on a holiday.
    pub holiday: f64,
    /// 1.0 on a holiday that most businesses keep open ([`crate::time::is_minor_us_holiday`];
    /// `holiday` is 1.0 on it too).
    pub minor_holiday: f64,
    /// 1.0 on the day after Thanksgiving (a working day by the calendar, a bridge day by the
    /// load).
    pub bridge_day: f64,
    /// Fraction of the year elapsed at the hour (local day of the year / 365.25).
    pub year_fraction: f64,
}

/// A fitted regression base (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionBase {
    /// The exogenous known columns with a piecewise-linear response, in design order.
    pub inputs: Vec<String>,
    /// Coefficients on the scaled load.
    pub beta: Vec<f64>,
    /// Lag-1 autocorrelation of the regression's errors on the training rows, in [0, 0.99].
    pub phi: f64,
    /// Training rows the regression was fitted on.
    pub rows: usize,
    /// Root-mean-square error of the regression on them (scaled load).
    pub rmse: f64,
    /// Per lead 1, 2, … hours: the weights of [`LeadTerms`] in the base, fitted by least
    /// squares on the training rows; empty: the fixed φ^lead mix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leads: Vec<[f64; LEAD_TERMS]>,
    /// The day-ahead lag regression; none: the per-lead weights or the φ mix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lags: Option<LagRegression>,
}

/// Issue-time lags of the [`LagRegression`], all scaled load: the load at the target hour's
/// 24-, 48-, 168- and 336-hour naives (moved back by whole days until known at the origin),
/// the load at the origin, its means over the 11 and 24 hours up to the origin, over the same
/// 11 hours a day earlier, and over the week before the last one.
pub const LAGS: usize = 9;
/// Terms of the [`LagRegression`] from the calendar-and-weather regression: the regression at
/// the target hour minus its mean over the week up to the origin, and its error at the origin,
/// its mean error over the last 24 hours and over the last [`LONG_ERROR_HOURS`], each minus
/// its mean error over the last week. All are free of a trend in the load's level, which the
/// regression (fitted on years of a level that moves) would otherwise carry into the base; the
/// last lets the load revert towards the regression as corrected by the last half year.
pub const REGRESSION_TERMS: usize = 4;
/// The long window of the regression's mean error: 26 weeks (chosen among 4, 8, 13, 26 and
/// 52 weeks on validation months of real CISO and PJM load, README "Forecast quality").
pub const LONG_ERROR_HOURS: usize = 26 * 168;
/// Huber's threshold of the [`LagRegression`]'s fit, in the residuals' robust standard
/// deviations: the usual 1.345 (95 % of least squares' efficiency on normal errors). The
/// least-squares fit let a few days of defective or extreme load pull every coefficient;
/// chosen on held-out months of real CISO and PJM load (README, "Forecast quality").
pub const HUBER_K: f64 = 1.345;
/// Most reweighting rounds of the robust fit (it stops earlier once the coefficients settle).
const HUBER_ROUNDS: usize = 10;
/// Order of the day-of-year Fourier terms of a seasonal [`LagRegression`].
pub const SEASONAL_ORDER: usize = 3;

/// What the lag regression of one target hour is built from (scaled load).
#[derive(Debug, Clone, Copy)]
pub struct LagInputs {
    pub terms: LeadTerms,
    /// The mean load of the 168 hours up to the origin: the level everything is relative to.
    pub level: f64,
    /// See [`LAGS`]; NaN where the table has none.
    pub lags: [f64; LAGS],
    /// The calendar-and-weather regression's mean error over the [`LONG_ERROR_HOURS`] up to
    /// the origin.
    pub mean_error_long: f64,
    /// The target hour's calendar.
    pub calendar: RowCalendar,
    /// 1.0 when the issue day (the origin's local day) is a major holiday (a holiday that is
    /// not a minor one): the load known at the origin, and so the lags of the issue day, are a
    /// holiday's.
    pub issue_day_holiday: f64,
    /// 1.0 when the target hour's week lag (168 hours before it) fell on a major holiday.
    pub week_lag_holiday: f64,
}

/// Which columns a [`LagRegression`]'s design holds beyond the calendar, the regression's terms
/// and the lags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagDesign {
    /// The day-of-year Fourier terms of order [`SEASONAL_ORDER`].
    pub day_of_year: bool,
    /// The [`HOLIDAY_TERMS`].
    pub holidays: bool,
}

/// Holiday columns of a [`LagDesign`] with `holidays`: a minor holiday at the target (its
/// effect apart from a major one's, which the calendar's holiday column carries), a major
/// holiday on the issue day, one at the week lag, and the bridge day at the target. Chosen on
/// held-out periods of real CISO and PJM load (README, "Forecast quality").
pub const HOLIDAY_TERMS: usize = 4;

impl LagDesign {
    /// What a lag regression is fitted with now (with a whole year of rows).
    pub const NOW: Self = Self { day_of_year: true, holidays: true };

    /// Columns of the design.
    pub fn dimension(self) -> usize {
        CALENDAR_TERMS
            + REGRESSION_TERMS
            + LAGS
            + if self.day_of_year { 2 * SEASONAL_ORDER } else { 0 }
            + if self.holidays { HOLIDAY_TERMS } else { 0 }
    }

    /// The design row of `at` (departures from the level; a missing lag counts as the level).
    pub fn row(self, at: &LagInputs) -> Vec<f64> {
        let mut x = vec![0.0; self.dimension()];
        x[at.calendar.hour_slot] = 1.0;
        x[HOUR_SLOTS + at.calendar.weekday] = 1.0;
        x[HOUR_SLOTS + WEEKDAYS] = at.calendar.holiday;
        // the regression's terms, made free of the level's trend: its change from its mean over
        // the last week, and its errors' departures from their mean over the last week
        let t = &at.terms;
        let first = CALENDAR_TERMS;
        x[first] = t.regression - (at.level - t.mean_error_week);
        x[first + 1] = t.error_at_origin - t.mean_error_week;
        x[first + 2] = t.mean_error_day - t.mean_error_week;
        x[first + 3] = at.mean_error_long - t.mean_error_week;
        for (slot, lag) in x[first + REGRESSION_TERMS..].iter_mut().zip(at.lags) {
            *slot = if lag.is_finite() { lag - at.level } else { 0.0 };
        }
        let mut next = first + REGRESSION_TERMS + LAGS;
        if self.day_of_year {
            let angle = std::f64::consts::TAU * at.calendar.year_fraction;
            for k in 0..SEASONAL_ORDER {
                let a = angle * (k + 1) as f64;
                x[next + 2 * k] = a.sin();
                x[next + 2 * k + 1] = a.cos();
            }
            next += 2 * SEASONAL_ORDER;
        }
        if self.holidays {
            x[next..next + HOLIDAY_TERMS].copy_from_slice(&[
                at.calendar.minor_holiday,
                at.issue_day_holiday,
                at.week_lag_holiday,
                at.calendar.bridge_day,
            ]);
        }
        x
    }
}

/// The **day-ahead lag regression**: per lead, a ridge regression of the load's departure from
/// its level (the mean of the last week) on the target hour's calendar (hour × weekend,
/// weekday, holiday), the calendar-and-weather regression's terms ([`REGRESSION_TERMS`]), the
/// issue-time lags' departures ([`LAGS`]), the [`HOLIDAY_TERMS`] and, when the training rows
/// hold a whole year, the day of the year (Fourier terms of order [`SEASONAL_ORDER`]). Fitted
/// with Huber's loss ([`HUBER_K`]) on the training rows' day-ahead origins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagRegression {
    /// Whether the design holds the day-of-year terms.
    pub seasonal: bool,
    /// Whether the design holds the [`HOLIDAY_TERMS`] (models saved before them do not).
    #[serde(default)]
    pub holidays: bool,
    /// Per lead 1, 2, …: the coefficients; a lead past the last takes the last one's.
    pub leads: Vec<Vec<f64>>,
    /// Samples per lead the fit had (the first lead's).
    pub samples: usize,
}

impl LagRegression {
    /// The columns its design holds.
    pub fn design(&self) -> LagDesign {
        LagDesign { day_of_year: self.seasonal, holidays: self.holidays }
    }

    /// Fit one coefficient vector per lead 1..=`leads` on `samples` (lead, inputs, load at the
    /// target hour). A lead with fewer than three samples per column keeps the coefficients of
    /// the lead before it; `None` when the first lead has too few.
    pub fn fit(
        design: LagDesign,
        leads: usize,
        samples: impl Iterator<Item = (usize, LagInputs, f64)>,
    ) -> Option<Self> {
        let n = design.dimension();
        let mut per_lead: Vec<Vec<(Vec<f64>, f64)>> = vec![Vec::new(); leads];
        for (lead, at, target) in samples {
            let Some(rows) = lead.checked_sub(1).and_then(|i| per_lead.get_mut(i)) else { continue };
            let y = target - at.level;
            let x = design.row(&at);
            if !y.is_finite() || x.iter().any(|v| !v.is_finite()) {
                continue;
            }
            rows.push((x, y));
        }
        let samples = per_lead.first().map_or(0, Vec::len);
        // each lead's robust fit on its own thread (independent, so the result is deterministic)
        let solved: Vec<Option<Vec<f64>>> =
            per_lead.par_iter().map(|rows| (rows.len() >= 3 * n).then(|| huber_ridge(rows, n)).flatten()).collect();
        let mut fitted: Vec<Vec<f64>> = Vec::with_capacity(leads);
        for solved in solved {
            match (solved, fitted.last().cloned()) {
                (Some(weights), _) | (None, Some(weights)) => fitted.push(weights),
                (None, None) => return None,
            }
        }
        Some(Self { seasonal: design.day_of_year, holidays: design.holidays, leads: fitted, samples })
    }

    /// The base at `lead`: the level plus the fitted departure; `None` where the level is
    /// unknown.
    pub fn base(&self, at: &LagInputs, lead: usize) -> Option<f64> {
        let weights = self.leads.get(lead.clamp(1, self.leads.len().max(1)) - 1)?;
        if !at.level.is_finite() {
            return None;
        }
        let x = self.design().row(at);
        let value = at.level + weights.iter().zip(&x).map(|(w, x)| w * x).sum::<f64>();
        value.is_finite().then_some(value)
    }
}

/// Terms of the per-lead correction of the regression: its error at the origin, its mean error
/// over the 24 and the 168 hours up to the origin, and the week-back naive minus the regression
/// at the target hour.
pub const LEAD_TERMS: usize = 4;
/// Leads the per-lead weights are fitted for; a longer lead uses the last one's.
pub const FITTED_LEADS: usize = 48;

/// What the base of one target hour is built from (all scaled).
#[derive(Debug, Clone, Copy)]
pub struct LeadTerms {
    pub regression: f64,
    pub error_at_origin: f64,
    pub mean_error_day: f64,
    pub mean_error_week: f64,
    pub naive: f64,
}

impl LeadTerms {
    fn terms(&self) -> [f64; LEAD_TERMS] {
        [self.error_at_origin, self.mean_error_day, self.mean_error_week, self.naive - self.regression]
    }
}

/// Design row: its non-zero entries (index, value).
fn design(calendar: RowCalendar, inputs: &[f32]) -> Vec<(usize, f64)> {
    let mut x = Vec::with_capacity(3 + inputs.len() * TERMS_PER_INPUT);
    x.push((calendar.hour_slot, 1.0));
    x.push((HOUR_SLOTS + calendar.weekday, 1.0));
    if calendar.holiday != 0.0 {
        x.push((HOUR_SLOTS + WEEKDAYS, calendar.holiday));
    }
    for (i, value) in inputs.iter().enumerate() {
        let first = CALENDAR_TERMS + i * TERMS_PER_INPUT;
        let v = f64::from(*value);
        for (j, knot) in HINGES.iter().enumerate() {
            let (below, above) = ((knot - v).max(0.0), (v - knot).max(0.0));
            if below != 0.0 {
                x.push((first + 2 * j, below));
            }
            if above != 0.0 {
                x.push((first + 2 * j + 1, above));
            }
        }
        x.push((first + 2 * HINGES.len(), v));
    }
    x
}

impl RegressionBase {
    /// Number of coefficients for `inputs` exogenous inputs.
    pub fn dimension(inputs: usize) -> usize {
        CALENDAR_TERMS + inputs * TERMS_PER_INPUT
    }

    /// Fit on `rows` of the scaled load `value` with each row's `calendar` and the scaled
    /// exogenous `inputs` (named `names`, one slice per input, observed values). Rows where the
    /// load or an input is not finite are left out.
    pub fn fit(
        calendar: &[RowCalendar],
        value: &[f32],
        names: &[String],
        inputs: &[&[f32]],
        rows: Range<usize>,
    ) -> Result<Self, FeatureError> {
        let dim = Self::dimension(inputs.len());
        let mut xtx = vec![0.0; dim * dim];
        let mut xty = vec![0.0; dim];
        let mut used = Vec::new();
        let mut at = vec![0.0f32; inputs.len()];
        for r in rows.clone() {
            let y = f64::from(value[r]);
            at.iter_mut().zip(inputs).for_each(|(slot, column)| *slot = column[r]);
            if !y.is_finite() || at.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let x = design(calendar[r], &at);
            for &(i, a) in &x {
                xty[i] += a * y;
                for &(j, b) in &x {
                    xtx[i * dim + j] += a * b;
                }
            }
            used.push(r);
        }
        if used.len() < dim {
            return Err(FeatureError::Window(format!(
                "the regression base needs at least {dim} training hours with a load and every input, rows {}..{} hold {}",
                rows.start,
                rows.end,
                used.len()
            )));
        }
        for i in 0..dim {
            xtx[i * dim + i] += RIDGE_PER_ROW * used.len() as f64;
        }
        let beta = solve_positive_definite(xtx, xty, dim).ok_or_else(|| {
            FeatureError::Window("the regression base's normal equations are not positive definite".into())
        })?;
        let mut base =
            Self { inputs: names.to_vec(), beta, phi: 0.0, rows: used.len(), rmse: 0.0, leads: Vec::new(), lags: None };
        let errors: Vec<(usize, f64)> = used
            .iter()
            .map(|&r| {
                at.iter_mut().zip(inputs).for_each(|(slot, column)| *slot = column[r]);
                (r, f64::from(value[r]) - base.predict(calendar[r], &at))
            })
            .collect();
        let (mut lagged, mut squares) = (0.0, 0.0);
        for pair in errors.windows(2) {
            if pair[1].0 == pair[0].0 + 1 {
                lagged += pair[0].1 * pair[1].1;
                squares += pair[0].1 * pair[0].1;
            }
        }
        base.phi = if squares > 0.0 { (lagged / squares).clamp(0.0, MAX_PHI) } else { 0.0 };
        base.rmse = (errors.iter().map(|(_, e)| e * e).sum::<f64>() / errors.len() as f64).sqrt();
        Ok(base)
    }

    /// The regression at a row with this calendar and these (scaled) input values.
    pub fn predict(&self, calendar: RowCalendar, inputs: &[f32]) -> f64 {
        design(calendar, inputs).iter().map(|(i, x)| x * self.beta[*i]).sum()
    }

    /// The base at `lead` hours after the origin from its terms: with fitted per-lead weights
    /// `w`, the regression plus `w · terms`; without, `a·(r + a·e₀) + (1 − a)·naive`, `a = φ^lead`.
    pub fn base(&self, at: LeadTerms, lead: usize) -> f64 {
        if let Some(weights) = self.leads.get(lead.clamp(1, self.leads.len().max(1)) - 1) {
            return at.regression + weights.iter().zip(at.terms()).map(|(w, x)| w * x).sum::<f64>();
        }
        let weight = self.phi.powi(i32::try_from(lead).unwrap_or(i32::MAX));
        weight * (at.regression + weight * at.error_at_origin) + (1.0 - weight) * at.naive
    }

    /// Fit the per-lead weights on `samples`: (lead ≥ 1, terms, the load minus the regression
    /// at the target hour). Leads past [`FITTED_LEADS`] are left out; a lead without enough
    /// samples keeps the weights of the lead before it (or none, the φ mix, for the first).
    pub fn fit_leads(&mut self, samples: impl Iterator<Item = (usize, LeadTerms, f64)>) {
        let n = LEAD_TERMS;
        let mut normal = vec![(vec![0.0; n * n], vec![0.0; n], 0usize); FITTED_LEADS];
        for (lead, at, target) in samples {
            let Some((xtx, xty, count)) = lead.checked_sub(1).and_then(|i| normal.get_mut(i)) else { continue };
            let x = at.terms();
            if !target.is_finite() || x.iter().any(|v| !v.is_finite()) {
                continue;
            }
            for i in 0..n {
                xty[i] += x[i] * target;
                for j in 0..n {
                    xtx[i * n + j] += x[i] * x[j];
                }
            }
            *count += 1;
        }
        let mut leads: Vec<[f64; LEAD_TERMS]> = Vec::with_capacity(FITTED_LEADS);
        for (mut xtx, xty, count) in normal {
            let solved = (count >= 10 * n)
                .then(|| {
                    let scale = (0..n).map(|i| xtx[i * n + i]).sum::<f64>() / n as f64;
                    (0..n).for_each(|i| xtx[i * n + i] += 1e-9 * scale + f64::MIN_POSITIVE);
                    solve_positive_definite(xtx, xty, n)
                })
                .flatten()
                .and_then(|w| w.try_into().ok());
            match (solved, leads.last().copied()) {
                (Some(weights), _) | (None, Some(weights)) => leads.push(weights),
                (None, None) => break,
            }
        }
        self.leads = leads;
    }
}

/// The robust ridge fit of `rows` (design, target): Huber's loss with the threshold
/// [`HUBER_K`] × the residuals' scale (1.4826 × their median absolute value), by iteratively
/// reweighted least squares from the least-squares solution, at most [`HUBER_ROUNDS`] rounds.
/// `None` when a system is singular.
fn huber_ridge(rows: &[(Vec<f64>, f64)], n: usize) -> Option<Vec<f64>> {
    let mut beta = weighted_ridge(rows, None, n)?;
    for _ in 0..HUBER_ROUNDS {
        let residuals: Vec<f64> =
            rows.iter().map(|(x, y)| y - x.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>()).collect();
        let mut absolute: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
        let middle = absolute.len() / 2;
        let threshold = HUBER_K * 1.4826 * *absolute.select_nth_unstable_by(middle, f64::total_cmp).1;
        if threshold <= 0.0 {
            break;
        }
        let weights: Vec<f64> =
            residuals.iter().map(|r| if r.abs() <= threshold { 1.0 } else { threshold / r.abs() }).collect();
        let next = weighted_ridge(rows, Some(&weights), n)?;
        let change = next.iter().zip(&beta).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        beta = next;
        if change < 1e-6 {
            break;
        }
    }
    Some(beta)
}

/// The ridge solution of `rows` (design, target), each row weighted by `weights` (1 when none).
fn weighted_ridge(rows: &[(Vec<f64>, f64)], weights: Option<&[f64]>, n: usize) -> Option<Vec<f64>> {
    let mut xtx = vec![0.0; n * n];
    let mut xty = vec![0.0; n];
    let mut total = 0.0;
    for (k, (x, y)) in rows.iter().enumerate() {
        let w = weights.map_or(1.0, |w| w[k]);
        total += w;
        for i in 0..n {
            if x[i] == 0.0 {
                continue;
            }
            let wx = w * x[i];
            xty[i] += wx * y;
            for j in i..n {
                xtx[i * n + j] += wx * x[j];
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            xtx[i * n + j] = xtx[j * n + i];
        }
        xtx[i * n + i] += RIDGE_PER_ROW * total + f64::MIN_POSITIVE;
    }
    solve_positive_definite(xtx, xty, n)
}

/// Solve `a x = b` for a symmetric positive definite `a` (`n × n`, row-major) by Cholesky;
/// `None` when `a` is not positive definite.
fn solve_positive_definite(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    // a = L Lᵀ, L stored in the lower triangle of `a`
    for j in 0..n {
        let diagonal = a[j * n + j] - (0..j).map(|k| a[j * n + k] * a[j * n + k]).sum::<f64>();
        if diagonal <= 0.0 || !diagonal.is_finite() {
            return None;
        }
        let l = diagonal.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let s = a[i * n + j] - (0..j).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>();
            a[i * n + j] = s / l;
        }
    }
    for i in 0..n {
        b[i] = (b[i] - (0..i).map(|k| a[i * n + k] * b[k]).sum::<f64>()) / a[i * n + i];
    }
    for i in (0..n).rev() {
        b[i] = (b[i] - (i + 1..n).map(|k| a[k * n + i] * b[k]).sum::<f64>()) / a[i * n + i];
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // [[4, 2], [2, 3]] x = [2, 1] → x = [0.5, 0]
        let x = solve_positive_definite(vec![4.0, 2.0, 2.0, 3.0], vec![2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
        assert!(solve_positive_definite(vec![1.0, 2.0, 2.0, 1.0], vec![1.0, 1.0], 2).is_none());
    }

    /// A fixed pseudo-random sequence in [−0.5, 0.5) from `seed`.
    fn draws(mut state: u64) -> impl FnMut() -> f64 {
        move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64 - 0.5
        }
    }

    fn calendar(hours: usize) -> Vec<RowCalendar> {
        (0..hours)
            .map(|r| {
                let weekday = (r / 24) % 7;
                let hour = r % 24;
                RowCalendar {
                    hour_slot: hour + if weekday >= 5 { 24 } else { 0 },
                    weekday,
                    holiday: 0.0,
                    minor_holiday: 0.0,
                    bridge_day: 0.0,
                    year_fraction: (r / 24) as f64 / 365.25,
                }
            })
            .collect()
    }

    #[test]
    fn recovers_a_calendar_and_hinge_response_and_the_error_persistence() {
        let n = 24 * 7 * 30;
        let calendar = calendar(n);
        let temp: Vec<f32> = (0..n).map(|r| (1.8 * ((r as f64) / 200.0).sin()) as f32).collect();
        // AR(1) errors with φ = 0.8, from a fixed pseudo-random sequence
        let mut draw = draws(7);
        let mut error = 0.0;
        let value: Vec<f32> = (0..n)
            .map(|r| {
                let noise = draw() * 0.04;
                error = 0.8 * error + noise;
                let shape = (r % 24) as f64 / 24.0 - if calendar[r].weekday >= 5 { 0.3 } else { 0.0 };
                let t = f64::from(temp[r]);
                (shape + 0.5 * (t - 0.5).max(0.0) + error) as f32
            })
            .collect();
        let base = RegressionBase::fit(&calendar, &value, &["TEMP".into()], &[&temp], 0..n).unwrap();
        assert_eq!(base.beta.len(), RegressionBase::dimension(1));
        assert_eq!(base.rows, n);
        assert!((base.phi - 0.8).abs() < 0.05, "φ {}", base.phi);
        // the fitted response matches the truth where the data is: a Saturday 15:00 at 1.0
        let probe = RowCalendar {
            hour_slot: 15 + 24,
            weekday: 5,
            holiday: 0.0,
            minor_holiday: 0.0,
            bridge_day: 0.0,
            year_fraction: 0.0,
        };
        let truth = 15.0 / 24.0 - 0.3 + 0.5 * 0.5;
        assert!((base.predict(probe, &[1.0]) - truth).abs() < 0.03, "{} vs {truth}", base.predict(probe, &[1.0]));
        // the regression's error is the AR noise: s.d. 0.02/√(3·(1−0.64)) ≈ 0.019
        assert!(base.rmse < 0.025, "rmse {}", base.rmse);
        // the φ mix: at lead 0 the regression plus the whole origin error, far out the naive
        let at =
            LeadTerms { regression: 1.0, error_at_origin: 0.2, mean_error_day: 0.0, mean_error_week: 0.0, naive: 5.0 };
        assert!((base.base(at, 0) - 1.2).abs() < 1e-12);
        assert!((base.base(at, 10_000) - 5.0).abs() < 1e-9);
    }

    /// The per-lead weights are the least-squares fit of each lead's samples; a lead without
    /// enough samples takes the lead before it; the base then applies them.
    #[test]
    fn per_lead_weights_are_fitted_by_least_squares() {
        let mut draw = draws(11);
        let truth = [[0.9, 0.0, 0.1, 0.0], [0.5, 0.2, 0.1, 0.3]];
        let mut samples = Vec::new();
        for lead in 1..=2 {
            for _ in 0..500 {
                let at = LeadTerms {
                    regression: draw(),
                    error_at_origin: draw(),
                    mean_error_day: draw(),
                    mean_error_week: draw(),
                    naive: draw(),
                };
                let target: f64 = truth[lead - 1].iter().zip(at.terms()).map(|(w, x)| w * x).sum();
                samples.push((lead, at, target));
            }
        }
        // lead 3: too few samples; lead 0 and past FITTED_LEADS: ignored
        let at =
            LeadTerms { regression: 0.0, error_at_origin: 1.0, mean_error_day: 0.0, mean_error_week: 0.0, naive: 0.0 };
        samples.extend([(3, at, 5.0), (0, at, 5.0), (FITTED_LEADS + 1, at, 5.0)]);
        let mut base =
            RegressionBase { inputs: vec![], beta: vec![], phi: 0.5, rows: 0, rmse: 0.0, leads: vec![], lags: None };
        base.fit_leads(samples.into_iter());
        assert_eq!(base.leads.len(), FITTED_LEADS);
        for (fitted, truth) in base.leads.iter().zip(&truth) {
            fitted.iter().zip(truth).for_each(|(f, t)| assert!((f - t).abs() < 1e-6, "{fitted:?} against {truth:?}"));
        }
        assert_eq!(base.leads[2], base.leads[1]);
        assert_eq!(base.leads[FITTED_LEADS - 1], base.leads[1]);
        // regression + weights · terms, and a lead past the fitted ones takes the last weights
        let probe =
            LeadTerms { regression: 2.0, error_at_origin: 1.0, mean_error_day: 0.0, mean_error_week: 0.0, naive: 3.0 };
        assert!((base.base(probe, 1) - (2.0 + 0.9)).abs() < 1e-6);
        assert!((base.base(probe, 2) - (2.0 + 0.5 + 0.3)).abs() < 1e-6);
        assert!((base.base(probe, 500) - base.base(probe, 2)).abs() < 1e-12);
    }

    /// Random lag inputs of sample `s` (every calendar slot in turn, holidays of each kind now
    /// and then).
    fn lag_inputs(s: usize, draw: &mut impl FnMut() -> f64) -> LagInputs {
        let weekday = s % 7;
        let flag = |on: bool| f64::from(u8::from(on));
        LagInputs {
            terms: LeadTerms {
                regression: draw(),
                error_at_origin: draw(),
                mean_error_day: draw(),
                mean_error_week: draw(),
                naive: 0.0,
            },
            level: 3.0 + draw(),
            lags: std::array::from_fn(|_| 3.0 + draw()),
            mean_error_long: draw(),
            issue_day_holiday: flag(s.is_multiple_of(41)),
            week_lag_holiday: flag(s.is_multiple_of(43)),
            calendar: RowCalendar {
                hour_slot: (s / 7) % 24 + if weekday >= 5 { 24 } else { 0 },
                weekday,
                holiday: flag(s.is_multiple_of(50)),
                minor_holiday: flag(s.is_multiple_of(100)),
                bridge_day: flag(s % 50 == 1),
                year_fraction: (s % 365) as f64 / 365.25,
            },
        }
    }

    /// The lag regression recovers known per-lead coefficients of its design, measures
    /// everything from the level, counts a missing lag as the level, and gives the next lead's
    /// coefficients to a lead with too few samples.
    #[test]
    fn the_lag_regression_is_fitted_per_lead_on_departures_from_the_level() {
        let mut draw = draws(5);
        let dim = LagDesign::NOW.dimension();
        let truth: Vec<Vec<f64>> =
            (0..2).map(|lead| (0..dim).map(|i| ((i * 7 + lead * 3) % 11) as f64 / 10.0 - 0.5).collect()).collect();
        let mut samples = Vec::new();
        for lead in 1..=2 {
            for s in 0..2000 {
                let at = lag_inputs(s, &mut draw);
                let x = LagDesign::NOW.row(&at);
                // a little noise: Huber's loss needs a scale of the residuals
                let noise = 0.002 * (draw() - 0.5);
                let target = at.level + truth[lead - 1].iter().zip(&x).map(|(w, x)| w * x).sum::<f64>() + noise;
                samples.push((lead, at, target));
            }
        }
        let fitted = LagRegression::fit(LagDesign::NOW, 3, samples.iter().copied()).unwrap();
        assert_eq!((fitted.leads.len(), fitted.samples), (3, 2000));
        assert_eq!(fitted.leads[2], fitted.leads[1]);
        // the one-hot blocks are collinear (hour × weekend and weekday both sum to one), so
        // compare what the fit predicts, not the coefficients
        for (lead, at, target) in samples.iter().step_by(97) {
            let got = fitted.base(at, *lead).unwrap();
            assert!((got - target).abs() < 3e-3, "lead {lead}: {got} against {target}");
        }
        // a missing lag counts as the level; an unknown level gives no base
        let (_, mut at, _) = samples[0];
        at.lags[0] = at.level;
        let as_level = fitted.base(&at, 1).unwrap();
        at.lags[0] = f64::NAN;
        assert!((fitted.base(&at, 1).unwrap() - as_level).abs() < 1e-12);
        at.level = f64::NAN;
        assert!(fitted.base(&at, 1).is_none());
        // too few samples for the first lead: no regression
        assert!(LagRegression::fit(LagDesign::NOW, 2, samples.iter().copied().take(10)).is_none());
    }

    /// A lag regression saved before the holiday columns keeps its design: it reads without
    /// them, predicts from the columns it was fitted on, and ignores the holiday inputs.
    #[test]
    fn a_lag_regression_saved_before_the_holiday_columns_keeps_its_design() {
        let old = LagDesign { day_of_year: true, holidays: false };
        assert_eq!(old.dimension() + HOLIDAY_TERMS, LagDesign::NOW.dimension());
        let weights: Vec<f64> = (0..old.dimension()).map(|i| (i % 5) as f64 / 10.0).collect();
        let saved = serde_json::json!({ "seasonal": true, "leads": [weights], "samples": 900 });
        let loaded: LagRegression = serde_json::from_value(saved).unwrap();
        assert_eq!(loaded.design(), old);
        let mut draw = draws(3);
        let mut at = lag_inputs(0, &mut draw);
        let plain = loaded.base(&at, 1).unwrap();
        let expected = at.level + weights.iter().zip(old.row(&at)).map(|(w, x)| w * x).sum::<f64>();
        assert!((plain - expected).abs() < 1e-12);
        (at.issue_day_holiday, at.week_lag_holiday, at.calendar.minor_holiday) = (1.0, 1.0, 1.0);
        assert_eq!(loaded.base(&at, 1).unwrap(), plain);
        // and the design's holiday columns hold what the inputs say, in their order
        let row = LagDesign::NOW.row(&at);
        assert_eq!(row[old.dimension()..], [1.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn the_lag_regression_resists_a_few_defective_days() {
        // normal noise on every sample, and 3 % of the targets off by +20 (a meter fault, a
        // blackout's rebound): least squares is pulled towards them, Huber's loss is not
        let mut draw = draws(11);
        let dim = LagDesign::NOW.dimension();
        let truth: Vec<f64> = (0..dim).map(|i| ((i * 5) % 13) as f64 / 12.0 - 0.5).collect();
        let mut samples = Vec::new();
        let mut clean = Vec::new();
        for s in 0..3000 {
            let at = lag_inputs(s, &mut draw);
            let x = LagDesign::NOW.row(&at);
            let target = at.level + truth.iter().zip(&x).map(|(w, x)| w * x).sum::<f64>();
            clean.push((at, target));
            let defect = if s.is_multiple_of(33) { 20.0 } else { 0.0 };
            samples.push((1, at, target + 0.1 * (draw() - 0.5) + defect));
        }
        let error = |fitted: &LagRegression| {
            clean.iter().map(|(at, target)| (fitted.base(at, 1).unwrap() - target).abs()).sum::<f64>()
                / clean.len() as f64
        };
        let robust = LagRegression::fit(LagDesign::NOW, 1, samples.iter().copied()).unwrap();
        let rows: Vec<(Vec<f64>, f64)> =
            samples.iter().map(|(_, at, target)| (LagDesign::NOW.row(at), target - at.level)).collect();
        let least_squares = LagRegression {
            seasonal: true,
            holidays: true,
            leads: vec![weighted_ridge(&rows, None, dim).unwrap()],
            samples: rows.len(),
        };
        let (robust, least_squares) = (error(&robust), error(&least_squares));
        assert!(robust < 0.05, "robust fit off by {robust}");
        assert!(robust < least_squares / 5.0, "robust {robust} against least squares {least_squares}");
    }

    #[test]
    fn refuses_too_few_rows_and_skips_missing_ones() {
        let calendar = calendar(100);
        let value = vec![1.0f32; 100];
        assert!(RegressionBase::fit(&calendar, &value, &[], &[], 0..40).is_err());
        let mut with_gaps = vec![1.0f32; 100];
        with_gaps[10] = f32::NAN;
        let base = RegressionBase::fit(&calendar, &with_gaps, &[], &[], 0..100).unwrap();
        assert_eq!(base.rows, 99);
        let monday_noon = RowCalendar {
            hour_slot: 12,
            weekday: 0,
            holiday: 0.0,
            minor_holiday: 0.0,
            bridge_day: 0.0,
            year_fraction: 0.0,
        };
        assert!((base.predict(monday_noon, &[]) - 1.0).abs() < 0.01, "{}", base.predict(monday_noon, &[]));
        assert!((0.0..=MAX_PHI).contains(&base.phi));
    }
}
