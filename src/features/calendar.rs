//! Calendar columns in the region's local time (polars `convert_time_zone`, so DST days have
//! 23 or 25 rows and no hour is lost or doubled).
//!
//! Each row describes the local hour its interval **starts** in: the row whose interval ends at
//! 01:00 local is hour 0 of that day. Angles: hour h → 2πh/24, ISO weekday w (Mon = 1) →
//! 2π(w−1)/7, day of year d → 2π(d−1)/365.25. `weekend` is 1 on Saturday and Sunday, `holiday`
//! 1 on US federal holidays (observed dates, [`crate::time::is_us_holiday`]).
use super::{
    COL_DOW_COS, COL_DOW_SIN, COL_DOY_COS, COL_DOY_SIN, COL_HOLIDAY, COL_HOUR_COS, COL_HOUR_SIN, COL_TIMESTAMP,
    COL_WEEKEND, FeatureError,
};
use crate::time::{HOUR_US, is_us_holiday};
use chrono::NaiveDate;
use chrono_tz::Tz;
use polars::prelude::*;
use std::f64::consts::PI;

const COL_LOCAL: &str = "_local";
const COL_HOUR: &str = "_hour";
const COL_WEEKDAY: &str = "_weekday";
const COL_DAY_KEY: &str = "_day_key";

/// `lf` (with a UTC `timestamp` column) plus the calendar columns of `zone`.
pub fn with_calendar(lf: LazyFrame, zone: Tz) -> Result<LazyFrame, FeatureError> {
    let time_zone = TimeZone::opt_try_new(Some(zone.name()))?
        .ok_or_else(|| FeatureError::Polars(format!("unknown time zone {}", zone.name())))?;
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let interval_start = (col(COL_TIMESTAMP).cast(DataType::Int64) - lit(HOUR_US)).cast(utc);
    let local = col(COL_LOCAL);
    let day_key = local.clone().dt().year().cast(DataType::Int32) * lit(1000)
        + local.clone().dt().ordinal_day().cast(DataType::Int32);
    let day_of_year = local.clone().dt().ordinal_day().cast(DataType::Float64) - lit(1.0);
    Ok(lf
        .with_column(interval_start.dt().convert_time_zone(time_zone).alias(COL_LOCAL))
        .with_columns([
            local.clone().dt().hour().cast(DataType::Float64).alias(COL_HOUR),
            local.dt().weekday().cast(DataType::Float64).alias(COL_WEEKDAY),
            day_key.alias(COL_DAY_KEY),
            periodic(day_of_year.clone(), 365.25, f64::sin).alias(COL_DOY_SIN),
            periodic(day_of_year, 365.25, f64::cos).alias(COL_DOY_COS),
        ])
        .with_columns([
            periodic(col(COL_HOUR), 24.0, f64::sin).alias(COL_HOUR_SIN),
            periodic(col(COL_HOUR), 24.0, f64::cos).alias(COL_HOUR_COS),
            periodic(col(COL_WEEKDAY) - lit(1.0), 7.0, f64::sin).alias(COL_DOW_SIN),
            periodic(col(COL_WEEKDAY) - lit(1.0), 7.0, f64::cos).alias(COL_DOW_COS),
            col(COL_WEEKDAY).gt_eq(lit(6.0)).cast(DataType::Float64).alias(COL_WEEKEND),
            holiday(col(COL_DAY_KEY)).alias(COL_HOLIDAY),
        ])
        .drop(cols([COL_LOCAL, COL_HOUR, COL_WEEKDAY, COL_DAY_KEY])))
}

/// The calendar columns for arbitrary interval-end timestamps (µs), e.g. hours after the
/// table's last row.
pub fn calendar_frame(timestamps: &[i64], zone: Tz) -> Result<DataFrame, FeatureError> {
    let timestamp = Series::new(COL_TIMESTAMP.into(), timestamps.to_vec())
        .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))?;
    Ok(with_calendar(DataFrame::new(timestamps.len(), vec![timestamp.into()])?.lazy(), zone)?.collect()?)
}

/// f(2π x / period), as Float64 (polars has no trigonometry in this build, so a map).
fn periodic(expr: Expr, period: f64, f: fn(f64) -> f64) -> Expr {
    float_map(expr.cast(DataType::Float64), move |x| f(2.0 * PI * x / period))
}

/// 1 where the day key `year * 1000 + ordinal` is a US federal holiday, else 0. Computed once
/// per run of equal keys (a local day's 23–25 rows are consecutive).
fn holiday(day_key: Expr) -> Expr {
    day_key.cast(DataType::Float64).map(
        |column: Column| {
            let mut last: Option<(f64, f64)> = None;
            let out: Float64Chunked = column
                .f64()?
                .iter()
                .map(|key| {
                    key.map(|key| match last {
                        Some((k, flag)) if k == key => flag,
                        _ => {
                            let day = key as i32;
                            let flag = NaiveDate::from_yo_opt(day / 1000, (day % 1000) as u32)
                                .map_or(0.0, |d| f64::from(u8::from(is_us_holiday(d))));
                            last = Some((key, flag));
                            flag
                        }
                    })
                })
                .collect();
            Ok(out.with_name(column.name().clone()).into_column())
        },
        |_, field| Ok(Field::new(field.name().clone(), DataType::Float64)),
    )
}

fn float_map(expr: Expr, f: impl Fn(f64) -> f64 + Send + Sync + 'static) -> Expr {
    expr.map(
        move |column: Column| {
            let values = column.f64()?;
            let out: Float64Chunked = values.iter().map(|v| v.map(&f)).collect();
            Ok(out.with_name(column.name().clone()).into_column())
        },
        |_, field| Ok(Field::new(field.name().clone(), DataType::Float64)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::synthetic_table;
    use chrono::{TimeZone as _, Utc};

    fn hours_of(frame: &DataFrame) -> Vec<i64> {
        let sin = frame.column(COL_HOUR_SIN).unwrap().f64().unwrap().to_vec();
        let cos = frame.column(COL_HOUR_COS).unwrap().f64().unwrap().to_vec();
        sin.iter()
            .zip(&cos)
            .map(|(s, c)| (s.unwrap().atan2(c.unwrap()) * 24.0 / (2.0 * PI)).round().rem_euclid(24.0) as i64)
            .collect()
    }

    fn utc_hours(y: i32, m: u32, d: u32, from: u32, count: i64) -> Vec<i64> {
        let t0 = Utc.with_ymd_and_hms(y, m, d, from, 0, 0).unwrap().timestamp_micros();
        (0..count).map(|k| t0 + k * HOUR_US).collect()
    }

    #[test]
    fn local_hour_is_dst_correct_in_new_york() {
        // spring forward 2024-03-10: interval ends 06Z..09Z start at local 01, 03, 04 (02 skipped)
        let frame = calendar_frame(&utc_hours(2024, 3, 10, 5, 5), chrono_tz::America::New_York).unwrap();
        assert_eq!(hours_of(&frame), vec![23, 0, 1, 3, 4]);
        // fall back 2024-11-03: local hour 1 happens twice
        let frame = calendar_frame(&utc_hours(2024, 11, 3, 5, 5), chrono_tz::America::New_York).unwrap();
        assert_eq!(hours_of(&frame), vec![0, 1, 1, 2, 3]);
        // a whole local day has 23 / 25 rows: count hour-0 rows over March and November
        let frame = calendar_frame(&utc_hours(2024, 3, 1, 5, 24 * 30), chrono_tz::America::New_York).unwrap();
        let hours = hours_of(&frame);
        assert_eq!(hours.iter().filter(|h| **h == 2).count(), 29, "2 local is skipped once");
        assert_eq!(hours.iter().filter(|h| **h == 0).count(), 30);
    }

    #[test]
    fn holiday_is_the_local_day_of_thanksgiving() {
        // Thanksgiving 2024-11-28 in New York: local 00:00 = 05Z, so interval ends 06Z..=05Z next day
        let frame = calendar_frame(&utc_hours(2024, 11, 28, 4, 27), chrono_tz::America::New_York).unwrap();
        let holiday: Vec<f64> = frame.column(COL_HOLIDAY).unwrap().f64().unwrap().iter().flatten().collect();
        assert_eq!(holiday[..2], [0.0, 0.0]); // ends 04Z, 05Z: local Wednesday
        assert!(holiday[2..26].iter().all(|h| *h == 1.0)); // ends 06Z..05Z(+1): Thursday
        assert_eq!(holiday[26], 0.0);
        let weekend: Vec<f64> = frame.column(COL_WEEKEND).unwrap().f64().unwrap().iter().flatten().collect();
        assert!(weekend.iter().all(|w| *w == 0.0));
        // the same instants in Los Angeles start Thursday three hours later
        let frame = calendar_frame(&utc_hours(2024, 11, 28, 4, 27), chrono_tz::America::Los_Angeles).unwrap();
        let holiday: Vec<f64> = frame.column(COL_HOLIDAY).unwrap().f64().unwrap().iter().flatten().collect();
        assert_eq!(holiday.iter().position(|h| *h == 1.0), Some(5));
    }

    #[test]
    fn table_calendar_matches_chrono_tz() {
        use chrono::{Datelike, Timelike};
        let table = synthetic_table(14);
        let hour_sin = table.column(COL_HOUR_SIN).unwrap();
        let dow_cos = table.column(COL_DOW_COS).unwrap();
        let weekend = table.column(COL_WEEKEND).unwrap();
        for (i, t) in table.timestamps.iter().enumerate() {
            let local = crate::time::from_us(t - HOUR_US).with_timezone(&table.zone);
            let h = f64::from(local.hour());
            assert!((f64::from(hour_sin[i]) - (2.0 * PI * h / 24.0).sin()).abs() < 1e-6);
            let w = f64::from(local.weekday().number_from_monday() - 1);
            assert!((f64::from(dow_cos[i]) - (2.0 * PI * w / 7.0).cos()).abs() < 1e-6);
            assert_eq!(weekend[i] == 1.0, w >= 5.0);
        }
    }
}
