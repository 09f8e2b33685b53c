//! The synthetic source: realistic hourly load for any number of regions, deterministic from
//! a seed, offline. It is the default source, so every command works without a network.
//!
//! # The generating process
//! For region `r` (parameters drawn from `hash(seed, r)`), at the hour whose interval ends at
//! `t` (local clock of the region's zone, read at the interval's start):
//!
//! ```text
//! T(t) = Tm + Ay·(−cos 2π(doy−20)/365.25) + Ad·cos 2π(h−15)/24 + uT(t)        temperature, °C
//! L(t) = B · s(h, weekend) · w(weekday) · (0.9 if US federal holiday) · a(doy)
//!        + B·(0.010·max(0, 16−T) + 0.018·max(0, T−22))                        temperature load
//!        + uL(t)                                                               noise, MW
//! ```
//! with `B` the base load (15–60 GW), `s` a two-harmonic daily shape (night trough, evening
//! peak; flatter on weekends), `w` 0.93 on Saturday and 0.90 on Sunday, `a` a mild annual
//! term. The noises are AR(1): `u(t) = φ·u(t−1) + σ·e(t)`, `e` i.i.d. standard normal from a
//! counter-based hash of `(seed, region, stream, hour)`, with φ = 0.9, σ = 0.008·B for load and
//! φ = 0.95, σ = 0.5 °C for temperature. Each `u(t)` is evaluated as the AR(1) filter's impulse
//! response truncated after 256 hours (φ^256 < 2e-12, so the stationary standard deviation
//! `σ/√(1−φ²)` holds to 12 digits); every value depends only on `t`, never on how a range is
//! chunked, so any chunking gives bit-identical rows.
//!
//! # As-issued temperature forecasts
//! Kinds `TEMP_D1` and `TEMP_D2` hold, for each hour, the temperature as a forecast issued one
//! and two days before would have given it: `T(t) + eN(t)`, with `eN` an AR(1) error (φ = 0.9,
//! its own stream per lead) of stationary standard deviation `0.6 + 0.5·N` °C (1.1 °C a day
//! ahead, 1.6 °C two days ahead: about what a regional average of a good numerical forecast
//! achieves). A model given them at its horizon (the default when the store holds them) sees
//! the weather a user would have had, not the weather that happened.
//!
//! # The noise floor
//! Knowing every deterministic term and the true temperature (which is collected as kind
//! `TEMP`), the best forecast of `L(t+h)` from data up to `t` errs only by the unseen load
//! innovations: `RMSE(h) = σ·√((1−φ^{2h})/(1−φ²))`, and `MAE(h) = √(2/π)·RMSE(h)`.
//! [`NoiseFloor`] gives these figures averaged over a 24-hour horizon. With the as-issued
//! temperature instead of the true one, each hour's error gains an independent normal term of
//! standard deviation `|∂L/∂T|·sN` (0.010·B or 0.018·B per °C outside 16–22 °C, 0 inside), with
//! N = ⌈h / 24⌉; the `*_issued_*` figures average that MAE over a year of hours.
//!
//! # Defects (off by default)
//! `missing_rate` leaves hours out, `spike_rate` multiplies hours by 3–4, `dst_gap` drops the
//! local 00:00–05:00 hours of each spring DST change day (as real EIA-930 data shows).
use super::{Batch, IngestError, SeriesId, SeriesRows, Source};
use crate::config::SyntheticConfig;
use crate::time::{DateRange, HOUR_US, from_us, is_us_holiday, region_zone};
use chrono::{Datelike, TimeDelta, Timelike, Weekday};
use chrono_tz::Tz;
use serde::Serialize;
use std::f64::consts::PI;

/// The load kind of the synthetic source (the one `D` of every source).
pub const KIND_LOAD: &str = super::KIND_DEMAND;
pub use super::KIND_TEMP;
/// The region commands use without `--region`.
pub const DEFAULT_REGION: &str = "SYN1";

const LOAD_PHI: f64 = 0.9;
const LOAD_SIGMA_FRACTION: f64 = 0.008;
const TEMP_PHI: f64 = 0.95;
const TEMP_SIGMA: f64 = 0.5;
/// Days before its hour of each as-issued temperature forecast (`TEMP_D1`, `TEMP_D2`).
pub const ISSUED_DAYS: [usize; 2] = [1, 2];
/// Stationary standard deviation of the as-issued forecast's error, °C, `days` days ahead.
pub fn issued_error_std(days: usize) -> f64 {
    0.6 + 0.5 * days as f64
}
/// AR(1) coefficient of a forecast's error over the hours it covers (errors persist for hours).
const ISSUED_PHI: f64 = 0.9;
/// Length of the truncated AR(1) impulse response.
const TAPS: usize = 256;

/// Per-region parameters, drawn from the seed.
#[derive(Debug, Clone)]
struct Region {
    code: String,
    zone: Tz,
    key: u64,
    base_mw: f64,
    mean_temp: f64,
    annual_temp_amplitude: f64,
    daily_temp_amplitude: f64,
}

impl Region {
    fn new(code: &str, seed: u64) -> Self {
        let key = hash_str(seed, code);
        let u = |i: u64| unit(mix(key ^ (0xA5A5_0000 + i)));
        Self {
            code: code.to_string(),
            zone: region_zone(code),
            key,
            base_mw: 15_000.0 + 45_000.0 * u(1),
            mean_temp: 10.0 + 10.0 * u(2),
            annual_temp_amplitude: 6.0 + 8.0 * u(3),
            daily_temp_amplitude: 3.0 + 4.0 * u(4),
        }
    }
}

/// The rows of one region: load, temperature and the as-issued temperature forecasts.
struct RegionRows {
    load: SeriesRows,
    temp: SeriesRows,
    issued: Vec<SeriesRows>,
}

/// The synthetic source for a set of regions.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    regions: Vec<Region>,
    config: SyntheticConfig,
}

/// The best achievable error on a region's load (see the module documentation).
#[derive(Debug, Clone, Serialize)]
pub struct NoiseFloor {
    pub region: String,
    pub mean_load_mw: f64,
    /// Stationary standard deviation of the load noise, MW.
    pub noise_std_mw: f64,
    /// Mean over h = 1..=24 of the best achievable MAE (next-24h protocol), MW.
    pub mae_next_24h_mw: f64,
    pub mape_next_24h_percent: f64,
    /// The same for the day-ahead protocol (h = 15..=38 from a 10:00 issue time).
    pub mae_day_ahead_mw: f64,
    pub mape_day_ahead_percent: f64,
    /// The same two MAPEs when the temperature of the horizon is the as-issued forecast
    /// (`TEMP_D1`, `TEMP_D2`) rather than the true value: the floor of a model using them.
    pub mape_next_24h_issued_percent: f64,
    pub mape_day_ahead_issued_percent: f64,
}

impl SyntheticSource {
    pub fn new(regions: &[String], config: SyntheticConfig) -> Self {
        let regions = regions.iter().map(|r| Region::new(r, config.seed)).collect();
        Self { regions, config }
    }

    /// The noise floor of each region, with its mean load estimated over a year of hours.
    pub fn noise_floors(&self) -> Vec<NoiseFloor> {
        let year = DateRange::new(from_us(1_704_067_200_000_000), from_us(1_735_689_600_000_000))
            .expect("2024 is a valid range");
        self.regions
            .iter()
            .map(|region| {
                let rows = self.region_rows(region, &year, false);
                let loads = &rows.load;
                let mean = loads.values.iter().flatten().sum::<f64>() / loads.len() as f64;
                let sigma = LOAD_SIGMA_FRACTION * region.base_mw;
                let load_var = |h: i32| sigma * sigma * (1.0 - LOAD_PHI.powi(2 * h)) / (1.0 - LOAD_PHI * LOAD_PHI);
                let mae = |h0: i32| (h0..h0 + 24).map(|h| (2.0 / PI).sqrt() * load_var(h).sqrt()).sum::<f64>() / 24.0;
                let (next, ahead) = (mae(1), mae(15));
                // with as-issued temperature: at each hour of the year, the load's sensitivity
                // to temperature (MW per °C) times the forecast error adds an independent
                // normal error; the MAE is averaged over the year's hours
                let slopes: Vec<f64> = rows
                    .temp
                    .values
                    .iter()
                    .flatten()
                    .map(|t| {
                        region.base_mw
                            * if *t < 16.0 {
                                0.010
                            } else if *t > 22.0 {
                                0.018
                            } else {
                                0.0
                            }
                    })
                    .collect();
                let mae_issued = |h0: i32| {
                    (h0..h0 + 24)
                        .map(|h| {
                            let error = issued_error_std((h as usize).div_ceil(24));
                            slopes
                                .iter()
                                .map(|s| (2.0 / PI).sqrt() * (load_var(h) + (s * error).powi(2)).sqrt())
                                .sum::<f64>()
                                / slopes.len() as f64
                        })
                        .sum::<f64>()
                        / 24.0
                };
                let (next_issued, ahead_issued) = (mae_issued(1), mae_issued(15));
                NoiseFloor {
                    region: region.code.clone(),
                    mean_load_mw: mean,
                    noise_std_mw: sigma / (1.0 - LOAD_PHI * LOAD_PHI).sqrt(),
                    mae_next_24h_mw: next,
                    mape_next_24h_percent: 100.0 * next / mean,
                    mae_day_ahead_mw: ahead,
                    mape_day_ahead_percent: 100.0 * ahead / mean,
                    mape_next_24h_issued_percent: 100.0 * next_issued / mean,
                    mape_day_ahead_issued_percent: 100.0 * ahead_issued / mean,
                }
            })
            .collect()
    }

    /// Load, temperature and as-issued temperature rows of one region over `range`.
    fn region_rows(&self, region: &Region, range: &DateRange, defects: bool) -> RegionRows {
        let n = range.hours().max(0) as usize;
        let first_hour = range.start_us() / HOUR_US + 1; // index of the first interval end
        let load_noise = ar1(region.key ^ 0x10AD, first_hour, n, LOAD_PHI, LOAD_SIGMA_FRACTION * region.base_mw);
        let temp_noise = ar1(region.key ^ 0x7E3F, first_hour, n, TEMP_PHI, TEMP_SIGMA);
        let issued_errors: Vec<Vec<f64>> = ISSUED_DAYS
            .iter()
            .map(|&days| {
                let innovation = issued_error_std(days) * (1.0 - ISSUED_PHI * ISSUED_PHI).sqrt();
                ar1(region.key ^ (0x155E_0000 + days as u64), first_hour, n, ISSUED_PHI, innovation)
            })
            .collect();
        let mut issued: Vec<SeriesRows> = ISSUED_DAYS
            .iter()
            .map(|&days| SeriesRows::new(SeriesId::new("synthetic", &region.code, super::issued_kind(KIND_TEMP, days))))
            .collect();
        let mut load = SeriesRows::new(SeriesId::new("synthetic", &region.code, KIND_LOAD));
        let mut temp = SeriesRows::new(SeriesId::new("synthetic", &region.code, KIND_TEMP));
        load.timestamps.reserve(n);
        load.values.reserve(n);
        temp.timestamps.reserve(n);
        temp.values.reserve(n);
        let b = region.base_mw;
        let mut day_cache: Option<(chrono::NaiveDate, bool, bool)> = None;
        for i in 0..n {
            let hour = first_hour + i as i64;
            let t_us = hour * HOUR_US;
            let local = from_us(t_us - HOUR_US).with_timezone(&region.zone);
            let date = local.date_naive();
            let (holiday, spring_dst) = match day_cache {
                Some((d, h, s)) if d == date => (h, s),
                _ => {
                    let h = is_us_holiday(date);
                    let s = is_spring_dst_day(region.zone, date);
                    day_cache = Some((date, h, s));
                    (h, s)
                }
            };
            let h = f64::from(local.hour());
            let doy = f64::from(local.ordinal());
            let weekday = local.weekday();
            let weekend = matches!(weekday, Weekday::Sat | Weekday::Sun);

            let t = region.mean_temp - region.annual_temp_amplitude * (2.0 * PI * (doy - 20.0) / 365.25).cos()
                + region.daily_temp_amplitude * (2.0 * PI * (h - 15.0) / 24.0).cos()
                + temp_noise[i];
            let daily = if weekend {
                1.0 + 0.07 * (2.0 * PI * (h - 18.0) / 24.0).cos() + 0.02 * (4.0 * PI * (h - 11.0) / 24.0).cos()
            } else {
                1.0 + 0.11 * (2.0 * PI * (h - 17.0) / 24.0).cos() + 0.04 * (4.0 * PI * (h - 9.0) / 24.0).cos()
            };
            let week = match weekday {
                Weekday::Sat => 0.93,
                Weekday::Sun => 0.90,
                _ => 1.0,
            };
            let annual = 1.0 + 0.03 * (4.0 * PI * (doy - 15.0) / 365.25).cos();
            let mut l = b * daily * week * annual * if holiday { 0.9 } else { 1.0 }
                + b * (0.010 * (16.0 - t).max(0.0) + 0.018 * (t - 22.0).max(0.0))
                + load_noise[i];

            if defects {
                let r = mix(region.key ^ 0xDEFE ^ (hour as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                if self.config.dst_gap && spring_dst && local.hour() < 5 {
                    continue;
                }
                if unit(r) < self.config.missing_rate {
                    continue;
                }
                if unit(mix(r)) < self.config.spike_rate {
                    l *= 3.0 + unit(mix(r ^ 1));
                }
            }
            load.timestamps.push(t_us);
            load.values.push(Some(l));
            temp.timestamps.push(t_us);
            temp.values.push(Some(t));
            for (rows, errors) in issued.iter_mut().zip(&issued_errors) {
                rows.timestamps.push(t_us);
                rows.values.push(Some(t + errors[i]));
            }
        }
        RegionRows { load, temp, issued }
    }
}

impl Source for SyntheticSource {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn chunk_len(&self) -> TimeDelta {
        // a month per chunk: one file per series and chunk
        TimeDelta::days(31)
    }

    fn series(&self) -> Vec<SeriesId> {
        self.regions
            .iter()
            .flat_map(|r| {
                [SeriesId::new("synthetic", &r.code, KIND_LOAD), SeriesId::new("synthetic", &r.code, KIND_TEMP)]
                    .into_iter()
                    .chain(
                        ISSUED_DAYS
                            .map(|days| SeriesId::new("synthetic", &r.code, super::issued_kind(KIND_TEMP, days))),
                    )
            })
            .collect()
    }

    fn params(&self) -> String {
        let c = &self.config;
        format!("seed={} missing={} spikes={} dst_gap={}", c.seed, c.missing_rate, c.spike_rate, c.dst_gap)
    }

    async fn fetch(&self, range: DateRange) -> Result<Batch, IngestError> {
        let mut series = Vec::with_capacity(self.regions.len() * (2 + ISSUED_DAYS.len()));
        for region in &self.regions {
            let rows = self.region_rows(region, &range, true);
            series.push(rows.load);
            series.push(rows.temp);
            series.extend(rows.issued);
        }
        Ok(Batch { series, requests: 0, retries: 0 })
    }
}

/// Is `date` the day the zone springs forward (a 23-hour local day)?
fn is_spring_dst_day(zone: Tz, date: chrono::NaiveDate) -> bool {
    use chrono::{Offset, TimeZone};
    let offset_at = |hour: u32| {
        zone.from_local_datetime(&date.and_hms_opt(hour, 0, 0).expect("valid hour"))
            .earliest()
            .map(|t| t.offset().fix().local_minus_utc())
    };
    match (offset_at(0), offset_at(12)) {
        (Some(a), Some(b)) => b > a,
        _ => false,
    }
}

/// `n` values of the AR(1) noise `u(t) = φ u(t−1) + σ e(t)` at hours `first..first+n`, each
/// computed as the truncated impulse response over the same `TAPS` innovations, so a value
/// depends only on its hour.
fn ar1(key: u64, first: i64, n: usize, phi: f64, sigma: f64) -> Vec<f64> {
    let innovations: Vec<f64> =
        (0..n + TAPS - 1).map(|j| sigma * normal(key, first - (TAPS as i64 - 1) + j as i64)).collect();
    let weights: Vec<f64> = (0..TAPS).map(|k| phi.powi(k as i32)).collect();
    (0..n)
        .map(|i| {
            // u(first+i) = Σ_k φ^k e(first+i−k); innovations[i+TAPS−1] is e(first+i).
            let window = &innovations[i..i + TAPS];
            window.iter().rev().zip(&weights).map(|(e, w)| e * w).sum()
        })
        .collect()
}

/// A standard normal draw for `(key, hour)` (Box–Muller on two hashed uniforms).
fn normal(key: u64, hour: i64) -> f64 {
    let h = mix(key ^ (hour as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let u1 = unit(h).max(f64::MIN_POSITIVE);
    let u2 = unit(mix(h ^ 0x5555));
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform in [0, 1) from the top 53 bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn hash_str(seed: u64, text: &str) -> u64 {
    text.bytes().fold(mix(seed), |h, b| mix(h ^ u64::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone, Utc};

    fn source(regions: &[&str]) -> SyntheticSource {
        let regions: Vec<String> = regions.iter().map(|s| s.to_string()).collect();
        SyntheticSource::new(&regions, SyntheticConfig::default())
    }

    fn range(days: i64) -> DateRange {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        DateRange::new(start, start + TimeDelta::days(days)).unwrap()
    }

    #[tokio::test]
    async fn identical_whatever_the_chunking() {
        let s = source(&["SYN1", "SYN2"]);
        let whole = s.fetch(range(90)).await.unwrap();
        for len in [TimeDelta::hours(7), TimeDelta::days(1), TimeDelta::days(30)] {
            let mut joined: Vec<SeriesRows> = whole.series.iter().map(|r| SeriesRows::new(r.id.clone())).collect();
            for chunk in range(90).chunks(len) {
                for (acc, part) in joined.iter_mut().zip(s.fetch(chunk).await.unwrap().series) {
                    acc.timestamps.extend(part.timestamps);
                    acc.values.extend(part.values);
                }
            }
            assert_eq!(joined, whole.series, "chunk length {len}");
        }
    }

    #[tokio::test]
    async fn seed_changes_values_and_regions_differ() {
        let a = source(&["SYN1", "SYN2"]).fetch(range(2)).await.unwrap();
        let mut cfg = SyntheticConfig::default();
        cfg.seed += 1;
        let b = SyntheticSource::new(&["SYN1".into()], cfg).fetch(range(2)).await.unwrap();
        assert_ne!(a.series[0].values, b.series[0].values);
        assert_ne!(a.series[0].values, a.series[4].values);
        assert_eq!(a.series.len(), 8);
        assert_eq!(a.series[4].id, SeriesId::new("synthetic", "SYN2", KIND_LOAD));
        assert_eq!(a.series[0].len(), 48);
    }

    /// The as-issued temperature errs around the true one with the documented standard
    /// deviation, more two days ahead than one; the floor of a model using it is higher.
    #[tokio::test]
    async fn as_issued_temperature_errs_more_with_lead() {
        let batch = source(&["SYN1"]).fetch(range(365)).await.unwrap();
        let temp = &batch.series[1];
        assert_eq!(temp.id.kind, KIND_TEMP);
        let mut stds = Vec::new();
        for (k, days) in ISSUED_DAYS.iter().enumerate() {
            let issued = &batch.series[2 + k];
            assert_eq!(issued.id.kind, format!("TEMP_D{days}"));
            assert_eq!(issued.timestamps, temp.timestamps);
            let errors: Vec<f64> =
                issued.values.iter().zip(&temp.values).map(|(f, t)| f.unwrap() - t.unwrap()).collect();
            let mean = errors.iter().sum::<f64>() / errors.len() as f64;
            let std = (errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / errors.len() as f64).sqrt();
            // AR(1) errors over a year: the sample std is within 15 % of the stationary one
            assert!((std / issued_error_std(*days) - 1.0).abs() < 0.15, "D{days}: {std}");
            stds.push(std);
        }
        assert!(stds[1] > stds[0]);
        let floor = &source(&["SYN1"]).noise_floors()[0];
        assert!(floor.mape_next_24h_issued_percent > floor.mape_next_24h_percent);
        assert!(floor.mape_day_ahead_issued_percent > floor.mape_day_ahead_percent);
    }

    #[tokio::test]
    async fn noise_has_the_documented_standard_deviation() {
        let key = 77;
        let u = ar1(key, 1000, 200_000, LOAD_PHI, 1.0);
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        let var = u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / u.len() as f64;
        let expected = 1.0 / (1.0 - LOAD_PHI * LOAD_PHI);
        assert!((var / expected - 1.0).abs() < 0.05, "variance {var} vs {expected}");
        // lag-1 autocorrelation ≈ φ
        let cov = u.windows(2).map(|w| (w[0] - mean) * (w[1] - mean)).sum::<f64>() / (u.len() - 1) as f64;
        assert!((cov / var - LOAD_PHI).abs() < 0.02, "autocorrelation {}", cov / var);
    }

    #[tokio::test]
    async fn load_is_realistic() {
        let s = source(&["SYN1"]);
        let b = s.fetch(range(365)).await.unwrap();
        let load: Vec<f64> = b.series[0].values.iter().flatten().copied().collect();
        let mean = load.iter().sum::<f64>() / load.len() as f64;
        assert!(load.iter().all(|v| *v > 0.3 * mean && *v < 2.0 * mean));
        // evening above night in local time (SYN1 is New York): 18:00 vs 04:00 local in January
        let by_hour = |hour_utc: u32| {
            let mut v = Vec::new();
            for (t, x) in b.series[0].timestamps.iter().zip(&b.series[0].values) {
                if from_us(*t - HOUR_US).hour() == hour_utc {
                    v.push(x.unwrap());
                }
            }
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(by_hour(23) > by_hour(9) * 1.1, "local 18:00 should exceed local 04:00");
        let floors = s.noise_floors();
        assert!(floors[0].mape_next_24h_percent > 0.5 && floors[0].mape_next_24h_percent < 5.0);
        assert!(floors[0].mae_day_ahead_mw > floors[0].mae_next_24h_mw);
    }

    #[tokio::test]
    async fn defects_are_applied() {
        let cfg = SyntheticConfig { missing_rate: 0.05, spike_rate: 0.01, dst_gap: true, ..Default::default() };
        let s = SyntheticSource::new(&["SYN1".into()], cfg);
        let b = s.fetch(range(366)).await.unwrap();
        let n = b.series[0].len();
        assert!(n < 366 * 24 - 300 && n > 366 * 24 - 700, "{n} rows");
        // 2024-03-10 is the New York spring change: no rows from local 00:00 to 05:00
        let gap_start =
            Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(2024, 3, 10).unwrap().and_hms_opt(6, 0, 0).unwrap());
        assert!(!b.series[0].timestamps.iter().any(|t| *t == gap_start.timestamp_micros()));
        let median = {
            let mut v: Vec<f64> = b.series[0].values.iter().flatten().copied().collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        assert!(b.series[0].values.iter().flatten().any(|v| *v > 2.5 * median));
    }
}
