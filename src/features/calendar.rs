//! Calendar columns in the region's local time (chrono-tz offsets, so DST days have 23 or 25
//! rows and no hour is lost or doubled).
//!
//! Each row describes the local hour its interval **starts** in: the row whose interval ends at
//! 01:00 local is hour 0 of that day. Angles: hour h → 2πh/24, ISO weekday w (Mon = 1) →
//! 2π(w−1)/7, day of year d → 2π(d−1)/365.25. `weekend` is 1 on Saturday and Sunday, `holiday`
//! 1 on the region's holidays ([`crate::region::holidays`]: US federal holidays, observed dates,
//! for US regions; none for a region configured or known as non-US).
//!
//! One pass over the rows: the zone's offset at each hour (a binary search in chrono-tz's
//! transitions), then the local day and hour by integer arithmetic; the date, its day of year
//! and the holiday rule are worked out once per local day, and the angles come from tables.
use super::{CALENDAR_COLUMNS, COL_TIMESTAMP, FeatureError};
use crate::region::Holidays;
use crate::time::HOUR_US;
use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone as _};
use chrono_tz::Tz;
use polars::prelude::*;
use std::f64::consts::PI;

const SECONDS_PER_DAY: i64 = 86_400;
/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_FROM_CE: i64 = 719_163;

/// The calendar columns of interval-end timestamps (µs), in [`CALENDAR_COLUMNS`] order.
pub fn calendar_columns(timestamps: &[i64], zone: Tz, holidays: Holidays) -> Result<Vec<Vec<f64>>, FeatureError> {
    let periodic = |period: f64, count: usize| -> (Vec<f64>, Vec<f64>) {
        (0..count).map(|x| 2.0 * PI * x as f64 / period).map(|a| (a.sin(), a.cos())).unzip()
    };
    let (hour_sin, hour_cos) = periodic(24.0, 24);
    let (dow_sin, dow_cos) = periodic(7.0, 7);
    let (doy_sin, doy_cos) = periodic(365.25, 366);
    let n = timestamps.len();
    let mut columns: Vec<Vec<f64>> = (0..CALENDAR_COLUMNS.len()).map(|_| Vec::with_capacity(n)).collect();
    // (local day number, day of year − 1, holiday) of the last day seen
    let mut day: Option<(i64, usize, f64)> = None;
    for &t in timestamps {
        let start = t - HOUR_US;
        let utc = DateTime::from_timestamp_micros(start)
            .ok_or_else(|| FeatureError::Data(format!("timestamp {t} µs is out of range")))?
            .naive_utc();
        let offset = i64::from(zone.offset_from_utc_datetime(&utc).fix().local_minus_utc());
        let local = start.div_euclid(1_000_000) + offset;
        let day_number = local.div_euclid(SECONDS_PER_DAY);
        let hour = (local.rem_euclid(SECONDS_PER_DAY) / 3600) as usize;
        // 1970-01-01 was a Thursday: Monday is 0
        let weekday = (day_number + 3).rem_euclid(7) as usize;
        let (ordinal0, holiday) = match day {
            Some((number, ordinal0, holiday)) if number == day_number => (ordinal0, holiday),
            _ => {
                let date = i32::try_from(day_number + UNIX_EPOCH_FROM_CE)
                    .ok()
                    .and_then(NaiveDate::from_num_days_from_ce_opt)
                    .ok_or_else(|| FeatureError::Data(format!("timestamp {t} µs is out of range")))?;
                let entry = (date.ordinal0() as usize, f64::from(u8::from(holidays.contains(date))));
                day = Some((day_number, entry.0, entry.1));
                entry
            }
        };
        let row = [
            hour_sin[hour],
            hour_cos[hour],
            dow_sin[weekday],
            dow_cos[weekday],
            doy_sin[ordinal0],
            doy_cos[ordinal0],
            f64::from(u8::from(weekday >= 5)),
            holiday,
        ];
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    Ok(columns)
}

/// The calendar columns for arbitrary interval-end timestamps (µs), e.g. hours after the
/// table's last row, with a `timestamp` column first.
pub fn calendar_frame(timestamps: &[i64], zone: Tz, holidays: Holidays) -> Result<DataFrame, FeatureError> {
    let timestamp = Series::new(COL_TIMESTAMP.into(), timestamps.to_vec())
        .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))?;
    let mut columns: Vec<Column> = vec![timestamp.into()];
    for (name, values) in CALENDAR_COLUMNS.iter().zip(calendar_columns(timestamps, zone, holidays)?) {
        columns.push(Series::new((*name).into(), values).into());
    }
    Ok(DataFrame::new(timestamps.len(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::synthetic_table;
    use crate::features::{COL_DOW_COS, COL_HOLIDAY, COL_HOUR_COS, COL_HOUR_SIN, COL_WEEKEND};
    use chrono::Utc;

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
        let frame = calendar_frame(&utc_hours(2024, 3, 10, 5, 5), chrono_tz::America::New_York, Holidays::Us).unwrap();
        assert_eq!(hours_of(&frame), vec![23, 0, 1, 3, 4]);
        // fall back 2024-11-03: local hour 1 happens twice
        let frame = calendar_frame(&utc_hours(2024, 11, 3, 5, 5), chrono_tz::America::New_York, Holidays::Us).unwrap();
        assert_eq!(hours_of(&frame), vec![0, 1, 1, 2, 3]);
        // a whole local day has 23 / 25 rows: count hour-0 rows over March and November
        let frame =
            calendar_frame(&utc_hours(2024, 3, 1, 5, 24 * 30), chrono_tz::America::New_York, Holidays::Us).unwrap();
        let hours = hours_of(&frame);
        assert_eq!(hours.iter().filter(|h| **h == 2).count(), 29, "2 local is skipped once");
        assert_eq!(hours.iter().filter(|h| **h == 0).count(), 30);
    }

    #[test]
    fn holiday_is_the_local_day_of_thanksgiving() {
        // Thanksgiving 2024-11-28 in New York: local 00:00 = 05Z, so interval ends 06Z..=05Z next day
        let frame =
            calendar_frame(&utc_hours(2024, 11, 28, 4, 27), chrono_tz::America::New_York, Holidays::Us).unwrap();
        let holiday: Vec<f64> = frame.column(COL_HOLIDAY).unwrap().f64().unwrap().iter().flatten().collect();
        assert_eq!(holiday[..2], [0.0, 0.0]); // ends 04Z, 05Z: local Wednesday
        assert!(holiday[2..26].iter().all(|h| *h == 1.0)); // ends 06Z..05Z(+1): Thursday
        assert_eq!(holiday[26], 0.0);
        let weekend: Vec<f64> = frame.column(COL_WEEKEND).unwrap().f64().unwrap().iter().flatten().collect();
        assert!(weekend.iter().all(|w| *w == 0.0));
        // the same instants in Los Angeles start Thursday three hours later
        let frame =
            calendar_frame(&utc_hours(2024, 11, 28, 4, 27), chrono_tz::America::Los_Angeles, Holidays::Us).unwrap();
        let holiday: Vec<f64> = frame.column(COL_HOLIDAY).unwrap().f64().unwrap().iter().flatten().collect();
        assert_eq!(holiday.iter().position(|h| *h == 1.0), Some(5));
    }

    /// A region whose calendar has no holidays (configured `holidays = "none"`, or not a US
    /// region) gets no US holiday: Thanksgiving is a plain Thursday.
    #[test]
    fn no_us_holidays_for_a_calendar_without_them() {
        let hours = utc_hours(2024, 11, 28, 4, 27);
        let frame = calendar_frame(&hours, chrono_tz::America::New_York, Holidays::None).unwrap();
        let holiday: Vec<f64> = frame.column(COL_HOLIDAY).unwrap().f64().unwrap().iter().flatten().collect();
        assert_eq!(holiday.len(), 27);
        assert!(holiday.iter().all(|h| *h == 0.0), "{holiday:?}");
    }

    #[test]
    fn table_calendar_matches_chrono_tz() {
        use chrono::Timelike;
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

    /// Every column, every hour of three years (leap year, DST changes, New Year observed on
    /// Dec 31), bit-identical to chrono-tz's local date and time: US zones, a zone with a
    /// half-hour offset and one with a half-hour DST change.
    #[test]
    fn every_hour_matches_chrono_tz_bit_for_bit() {
        use chrono::Timelike;
        let hours = utc_hours(2021, 12, 30, 0, 24 * (365 * 3 + 5));
        for zone in [
            chrono_tz::America::New_York,
            chrono_tz::America::Los_Angeles,
            chrono_tz::America::Phoenix,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Australia::Lord_Howe,
        ] {
            let columns = calendar_columns(&hours, zone, Holidays::Us).unwrap();
            let angle = |x: u32, period: f64| 2.0 * PI * f64::from(x) / period;
            let mut holidays = 0;
            for (i, t) in hours.iter().enumerate() {
                let local = crate::time::from_us(t - HOUR_US).with_timezone(&zone);
                let (h, w, d) = (local.hour(), local.weekday().number_from_monday() - 1, local.ordinal0());
                let holiday = crate::time::is_us_holiday(local.date_naive());
                holidays += usize::from(holiday);
                let want = [
                    angle(h, 24.0).sin(),
                    angle(h, 24.0).cos(),
                    angle(w, 7.0).sin(),
                    angle(w, 7.0).cos(),
                    angle(d, 365.25).sin(),
                    angle(d, 365.25).cos(),
                    f64::from(u8::from(w >= 5)),
                    f64::from(u8::from(holiday)),
                ];
                for (k, want) in want.iter().enumerate() {
                    assert_eq!(columns[k][i].to_bits(), want.to_bits(), "{zone} {} {}", CALENDAR_COLUMNS[k], local);
                }
            }
            // 11 holidays a year (Juneteenth included) over about three years, 23–25 hours each
            assert!((33 * 23..=36 * 25).contains(&holidays), "{zone}: {holidays} holiday hours");
        }
    }
}
