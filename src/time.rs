//! Time rules shared by every part: hourly ranges of interval-end timestamps, region time
//! zones, and US federal holidays computed by rule.
//!
//! A [`DateRange`] is a span of time `[start, end)` on whole UTC hours. The rows it holds are
//! the hours whose interval lies inside it, keyed by their interval **end**: timestamps `t`
//! with `start < t <= end`. Splitting a range at hour boundaries therefore never loses or
//! doubles a row.
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeDelta, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One hour in microseconds (the store's timestamp unit).
pub const HOUR_US: i64 = 3_600_000_000;

/// A span `[start, end)` of whole UTC hours; rows are the interval-end hours `(start, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DateRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl DateRange {
    /// A range from two whole-hour instants; `end` must not be before `start`.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, String> {
        if start.minute() != 0 || start.second() != 0 || start.nanosecond() != 0 {
            return Err(format!("range start {start} is not a whole hour"));
        }
        if end.minute() != 0 || end.second() != 0 || end.nanosecond() != 0 {
            return Err(format!("range end {end} is not a whole hour"));
        }
        if end < start {
            return Err(format!("range end {end} is before its start {start}"));
        }
        Ok(Self { start, end })
    }

    /// The UTC days `first..=last`, both included: interval ends `first`T01 to `last+1`T00.
    pub fn from_days(first: NaiveDate, last: NaiveDate) -> Result<Self, String> {
        if last < first {
            return Err(format!("end date {last} is before start date {first}"));
        }
        let start = Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight exists"));
        let end = Utc.from_utc_datetime(&(last + Duration::days(1)).and_hms_opt(0, 0, 0).expect("midnight exists"));
        Self::new(start, end)
    }

    /// The `days` whole UTC days that end at the last complete hour before `now`.
    pub fn last_days(days: u32, now: DateTime<Utc>) -> Result<Self, String> {
        if days == 0 {
            return Err("--days must be at least 1".into());
        }
        let end = floor_hour(now);
        Ok(Self { start: end - Duration::days(i64::from(days)), end })
    }

    /// Number of hourly rows the range holds.
    pub fn hours(&self) -> i64 {
        (self.end - self.start).num_hours()
    }

    pub fn start_us(&self) -> i64 {
        self.start.timestamp_micros()
    }

    pub fn end_us(&self) -> i64 {
        self.end.timestamp_micros()
    }

    /// Does the interval-end timestamp `t_us` belong to this range?
    pub fn holds_us(&self, t_us: i64) -> bool {
        t_us > self.start_us() && t_us <= self.end_us()
    }

    /// The interval-end timestamps of the range, in order, as epoch microseconds.
    pub fn hour_ends_us(&self) -> impl Iterator<Item = i64> + use<> {
        let (start, end) = (self.start_us(), self.end_us());
        (1..).map(move |k| start + k * HOUR_US).take_while(move |t| *t <= end)
    }

    /// Split into consecutive pieces on a fixed grid of `len` counted from the Unix epoch, so
    /// that two overlapping requests produce the same chunk boundaries (and a ledger can
    /// recognise chunks already collected). The pieces cover the range exactly, without overlap.
    pub fn chunks(&self, len: TimeDelta) -> Vec<DateRange> {
        let len_us = len.num_microseconds().unwrap_or(i64::MAX).max(HOUR_US);
        let len_us = len_us - len_us % HOUR_US;
        let mut out = Vec::new();
        let (mut at, end) = (self.start_us(), self.end_us());
        while at < end {
            let next_grid = (at.div_euclid(len_us) + 1) * len_us;
            let stop = next_grid.min(end);
            out.push(DateRange { start: from_us(at), end: from_us(stop) });
            at = stop;
        }
        out
    }
}

impl DateRange {
    /// Split at the UTC calendar months of interval ends (the store's partitions), so that each
    /// piece writes exactly one file per series: pieces `(Y-M-01T00 − 1h, next 01T00 − 1h]`
    /// clipped to the range.
    pub fn month_chunks(&self) -> Vec<DateRange> {
        let mut out = Vec::new();
        let mut at = self.start;
        while at < self.end {
            // the month of the next interval end
            let first_end = at + Duration::hours(1);
            let (y, m) = (first_end.year(), first_end.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next_month = Utc.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single().expect("valid month start");
            let stop = (next_month - Duration::hours(1)).min(self.end);
            out.push(DateRange { start: at, end: stop });
            at = stop;
        }
        out
    }
}

impl fmt::Display for DateRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start.format(FORMAT_HOUR), self.end.format(FORMAT_HOUR))
    }
}

/// Epoch microseconds to a UTC instant (clamped to chrono's range).
pub fn from_us(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The one way a UTC instant is shown to users (tables, summaries, `--json`): `2024-01-31T13:00Z`.
pub const FORMAT_MINUTE: &str = "%Y-%m-%dT%H:%MZ";
/// An hour as EIA writes periods and as ranges are shown: `2024-01-31T13`.
pub const FORMAT_HOUR: &str = "%Y-%m-%dT%H";
/// A GMT time as CAISO OASIS reads and writes it: `2024-01-31T13:00:00-00:00`.
pub const FORMAT_GMT: &str = "%Y-%m-%dT%H:%M:%S-00:00";
/// An instant to the second, RFC 3339 in UTC: `2024-01-31T13:00:00Z`.
pub const FORMAT_SECOND: &str = "%Y-%m-%dT%H:%M:%SZ";

/// Epoch µs as [`FORMAT_MINUTE`] (`2024-01-31T13:00Z`).
pub fn format_minute(us: i64) -> String {
    from_us(us).format(FORMAT_MINUTE).to_string()
}

/// Epoch µs as [`FORMAT_HOUR`] (`2024-01-31T13`).
pub fn format_hour(us: i64) -> String {
    from_us(us).format(FORMAT_HOUR).to_string()
}

/// Epoch µs as [`FORMAT_GMT`] (`2024-01-31T13:00:00-00:00`).
pub fn format_gmt(us: i64) -> String {
    from_us(us).format(FORMAT_GMT).to_string()
}

/// Epoch µs as [`FORMAT_SECOND`] (`2024-01-31T13:00:00Z`).
pub fn format_second(us: i64) -> String {
    from_us(us).format(FORMAT_SECOND).to_string()
}

/// An hour as epoch microseconds: `YYYY-MM-DDTHH` (UTC), `YYYY-MM-DDTHH±hh` (a local hour with
/// its UTC offset, as EIA's local periods) or `YYYY-MM-DD` (hour 00 UTC). `None` when it is
/// none of these. The one hour parser of the program (EIA periods, the bench server's
/// `start`/`end`), written out because EIA pages hold thousands of periods.
pub fn parse_hour(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |digits: &[u8]| -> Option<i64> {
        digits.iter().try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (number(&b[0..4])?, number(&b[5..7])?, number(&b[8..10])?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (hour, offset_hours) = match &b[10..] {
        [] => (0, 0),
        [b'T', h1, h2, rest @ ..] => {
            let hour = number(&[*h1, *h2])?;
            let offset = match rest {
                [] => 0,
                [sign @ (b'+' | b'-'), digits @ ..] if digits.len() == 2 => {
                    let hours = number(digits)?;
                    if *sign == b'-' { -hours } else { hours }
                }
                _ => return None,
            };
            (hour, offset)
        }
        _ => return None,
    };
    if hour > 23 {
        return None;
    }
    Some((days_from_civil(year, month, day) * 24 + hour - offset_hours) * HOUR_US)
}

/// Parse one timestamp as users' files and OASIS write them: RFC 3339 (any offset, also
/// `+hhmm`), or a naive `YYYY-MM-DD[T ]HH[:MM[:SS]]` in UTC; it must fall on a whole hour.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let micros = parse_instant(text)?;
    if micros.rem_euclid(HOUR_US) != 0 {
        return Err(format!("timestamp `{}` is not on a whole hour", text.trim()));
    }
    Ok(micros)
}

/// [`parse_timestamp`] at any minute (OASIS's 5- and 15-minute interval bounds); a time
/// without an offset is UTC.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    Ok(match parse_stamp(text)? {
        Stamp::Instant(micros) => micros,
        Stamp::Local(naive) => naive.and_utc().timestamp_micros(),
    })
}

/// A timestamp as written: an instant (it carried an offset or `Z`) or a wall-clock time
/// whose zone the reader must supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Epoch microseconds.
    Instant(i64),
    /// A date and time with no offset.
    Local(chrono::NaiveDateTime),
}

/// Read a timestamp in the spellings [`parse_instant`] accepts, keeping apart those that name
/// their offset and those that do not.
pub fn parse_stamp(text: &str) -> Result<Stamp, String> {
    use chrono::NaiveDateTime;
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Stamp::Instant(t.timestamp_micros()));
    }
    if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%:z")
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z"))
    {
        return Ok(Stamp::Instant(t.timestamp_micros()));
    }
    let formats = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
    formats
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| NaiveDateTime::parse_from_str(&format!("{text}:00"), "%Y-%m-%dT%H:%M").ok())
        .map(Stamp::Local)
        .ok_or_else(|| format!("cannot read timestamp `{text}` (expected e.g. 2024-01-31T13:00:00Z)"))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The whole hour at or before `t`.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    from_us(t.timestamp_micros() - t.timestamp_micros().rem_euclid(HOUR_US))
}

/// The IANA zone of a region: `[regions.<R>] timezone`, else the zone recorded in the store by
/// a `--timezone` import, else the built-in table ([`builtin_zone`]); a region with none gets
/// UTC and a warning (once) naming the setting to add. See [`crate::region`].
pub fn region_zone(region: &str) -> Tz {
    crate::region::zone(region)
}

/// The built-in zone of a region code (US balancing authorities, EIA regions, CAISO TAC areas,
/// synthetic regions `SYN<n>`, which cycle over the four contiguous-US zones so that
/// multi-region runs cover them all); `None` for any other code.
pub fn builtin_zone(region: &str) -> Option<Tz> {
    use chrono_tz::America;
    Some(match region {
        "CISO" | "CAL" | "BANC" | "LDWP" | "IID" | "TIDC" | "BPAT" | "PACW" | "PGE" | "PSEI" | "SCL" | "TPWR"
        | "AVA" | "CHPD" | "DOPD" | "GCPD" | "NEVP" | "NW" => America::Los_Angeles,
        r if r.starts_with("CA ISO") || r.contains("-TAC") => America::Los_Angeles,
        "AZPS" | "SRP" | "TEPC" | "WALC" => America::Phoenix,
        "PACE" | "PSCO" | "WACM" | "PNM" | "EPE" | "IPCO" | "NWMT" => America::Denver,
        "ERCO" | "TEX" | "MISO" | "SWPP" | "SPA" | "AECI" | "CENT" | "MIDW" => America::Chicago,
        "PJM" | "NYIS" | "ISNE" | "FPL" | "FPC" | "DUK" | "CPLE" | "SOCO" | "TVA" | "SC" | "SCEG" | "US48" | "MIDA"
        | "NY" | "NE" | "CAR" | "SE" | "FLA" | "TEN" => America::New_York,
        r => match r.strip_prefix("SYN").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => [America::New_York, America::Chicago, America::Denver, America::Los_Angeles]
                [(n.saturating_sub(1) % 4) as usize],
            None => return None,
        },
    })
}

/// Whether a US federal holiday is one that most businesses keep open ([`is_minor_us_holiday`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HolidayKind {
    Major,
    Minor,
}

/// Thanksgiving of `year`: the fourth Thursday of November.
fn thanksgiving(year: i32) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, 11, Weekday::Thu, 4).expect("November has four Thursdays")
}

/// The US federal holidays of `year` with their kind, sorted (observed dates: a Saturday
/// holiday is observed on the Friday before, a Sunday one on the Monday after), computed by
/// rule (5 U.S.C. 6103).
fn us_federal_holidays_by_kind(year: i32) -> Vec<(NaiveDate, HolidayKind)> {
    use HolidayKind::{Major, Minor};
    let fixed = |month, day| {
        let date = NaiveDate::from_ymd_opt(year, month, day).expect("valid fixed holiday");
        match date.weekday() {
            Weekday::Sat => date - Duration::days(1),
            Weekday::Sun => date + Duration::days(1),
            _ => date,
        }
    };
    let nth =
        |month, weekday, n| NaiveDate::from_weekday_of_month_opt(year, month, weekday, n).expect("valid nth weekday");
    let last_monday_of_may = {
        let mut d = NaiveDate::from_ymd_opt(year, 5, 31).expect("May 31 exists");
        while d.weekday() != Weekday::Mon {
            d -= Duration::days(1);
        }
        d
    };
    let mut days = vec![
        (fixed(1, 1), Major),
        (nth(1, Weekday::Mon, 3), Minor),  // Martin Luther King Jr. Day
        (nth(2, Weekday::Mon, 3), Minor),  // Washington's Birthday
        (last_monday_of_may, Major),       // Memorial Day
        (fixed(7, 4), Major),              // Independence Day
        (nth(9, Weekday::Mon, 1), Major),  // Labor Day
        (nth(10, Weekday::Mon, 2), Minor), // Columbus Day
        (fixed(11, 11), Minor),            // Veterans Day
        (thanksgiving(year), Major),
        (fixed(12, 25), Major),
    ];
    if year >= 2021 {
        days.push((fixed(6, 19), Minor)); // Juneteenth, observed from 2021
    }
    days.sort_by_key(|(date, _)| *date);
    days
}

/// The US federal holidays of `year` (observed dates: a Saturday holiday is observed on the
/// Friday before, a Sunday one on the Monday after), computed by rule (5 U.S.C. 6103).
pub fn us_federal_holidays(year: i32) -> Vec<NaiveDate> {
    us_federal_holidays_by_kind(year).into_iter().map(|(date, _)| date).collect()
}

/// Is `date` (a local calendar day) a US federal holiday (observed)?
pub fn is_us_holiday(date: NaiveDate) -> bool {
    // New Year's Day of the next year can be observed on Dec 31.
    us_federal_holidays(date.year()).contains(&date)
        || (date.month() == 12 && us_federal_holidays(date.year() + 1).contains(&date))
}

/// Is `date` a US federal holiday that most businesses keep open (Martin Luther King Jr. Day,
/// Washington's Birthday, Columbus Day, Veterans Day, Juneteenth): load on it is close to a
/// working day's, unlike New Year's Day, Memorial Day, Independence Day, Labor Day,
/// Thanksgiving and Christmas.
pub fn is_minor_us_holiday(date: NaiveDate) -> bool {
    us_federal_holidays_by_kind(date.year()).contains(&(date, HolidayKind::Minor))
}

/// Is `date` the Friday after Thanksgiving?
pub fn is_day_after_thanksgiving(date: NaiveDate) -> bool {
    date == thanksgiving(date.year()) + Duration::days(1)
}

/// Easter Sunday of `year` (Gregorian calendar; the anonymous algorithm of Meeus).
pub fn easter_sunday(year: i32) -> NaiveDate {
    let (a, b, c) = (year % 19, year / 100, year % 100);
    let (d, e) = (b / 4, b % 4);
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let (i, k) = (c / 4, c % 4);
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).expect("Easter is a real date")
}

/// The public holidays of Victoria, Australia, in `year` that follow a rule (Public Holidays
/// Act 1993 (Vic), as amended; metropolitan Melbourne): New Year's Day, Australia Day, Labour
/// Day (second Monday of March), Good Friday, Easter Saturday, Sunday (from 2016) and Monday,
/// ANZAC Day, the King's (Queen's) Birthday (second Monday of June), Melbourne Cup Day (first
/// Tuesday of November), Christmas and Boxing Day. New Year's Day, Australia Day, Christmas and
/// Boxing Day on a weekend add the next weekday that is not already a holiday (a Saturday
/// Christmas gives Monday 27th, a Sunday Boxing Day after it Tuesday 28th). The Friday before the
/// AFL Grand Final (since 2015) is set by the league each year, not by a rule, so it is not
/// marked.
pub fn victoria_holidays(year: i32) -> Vec<NaiveDate> {
    let date = |month, day| NaiveDate::from_ymd_opt(year, month, day).expect("valid fixed holiday");
    let nth =
        |month, weekday, n| NaiveDate::from_weekday_of_month_opt(year, month, weekday, n).expect("valid nth weekday");
    let easter = easter_sunday(year);
    let substituted = [date(1, 1), date(1, 26), date(12, 25), date(12, 26)];
    let mut days = vec![
        nth(3, Weekday::Mon, 2),    // Labour Day
        easter - Duration::days(2), // Good Friday
        easter - Duration::days(1), // Easter Saturday
        easter + Duration::days(1), // Easter Monday
        date(4, 25),                // ANZAC Day
        nth(6, Weekday::Mon, 2),    // King's / Queen's Birthday
        nth(11, Weekday::Tue, 1),   // Melbourne Cup Day
    ];
    if year >= 2016 {
        days.push(easter);
    }
    days.extend(substituted);
    for day in substituted {
        if matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            let mut next = day + Duration::days(1);
            while matches!(next.weekday(), Weekday::Sat | Weekday::Sun) || days.contains(&next) {
                next += Duration::days(1);
            }
            days.push(next);
        }
    }
    days.sort();
    days.dedup();
    days
}

/// Is `date` (a local calendar day) a Victorian public holiday ([`victoria_holidays`])?
pub fn is_victoria_holiday(date: NaiveDate) -> bool {
    victoria_holidays(date.year()).contains(&date)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one hour parser and the one timestamp parser agree with chrono, and the formats
    /// read back.
    #[test]
    fn parsers_and_formats_round_trip() {
        let t = Utc.with_ymd_and_hms(2024, 2, 29, 13, 0, 0).unwrap().timestamp_micros();
        assert_eq!(parse_hour("2024-02-29T13"), Some(t));
        assert_eq!(parse_hour("2024-02-29T14+01"), Some(t));
        assert_eq!(parse_hour("2024-02-29T08-05"), Some(t));
        assert_eq!(parse_hour("2024-02-29"), Some(t - 13 * HOUR_US));
        for bad in ["2023-02-29T01", "2024-13-01T00", "2024-01-01T24", "2024-01-01T1", "2024-01-01 01", "x"] {
            assert_eq!(parse_hour(bad), None, "{bad}");
        }
        assert_eq!(parse_hour(&format_hour(t)), Some(t));
        for text in [format_second(t), format_gmt(t), "2024-02-29 13:00".into(), "2024-02-29T14:00:00+0100".into()] {
            assert_eq!(parse_timestamp(&text), Ok(t), "{text}");
        }
        assert_eq!(parse_instant("2024-02-29T13:15:00-00:00"), Ok(t + HOUR_US / 4));
        assert!(parse_timestamp("2024-02-29T13:15:00-00:00").unwrap_err().contains("whole hour"));
        assert_eq!(format_minute(t), "2024-02-29T13:00Z");
    }
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn days_range_holds_hour_ends_t01_to_next_t00() {
        let r = DateRange::from_days(d(2024, 1, 1), d(2024, 1, 2)).unwrap();
        let hours: Vec<_> = r.hour_ends_us().map(from_us).collect();
        assert_eq!(hours.len(), 48);
        assert_eq!(hours[0].to_rfc3339(), "2024-01-01T01:00:00+00:00");
        assert_eq!(hours[47].to_rfc3339(), "2024-01-03T00:00:00+00:00");
        assert!(DateRange::from_days(d(2024, 1, 2), d(2024, 1, 1)).is_err());
    }

    /// Against the published lists (Business Victoria): 2014, 2021 (a Saturday Christmas and a
    /// Sunday Boxing Day), 2022 (a Sunday Christmas), 2017 (a Sunday New Year's Day) and Easter.
    #[test]
    fn victorian_holidays_match_the_published_lists() {
        let days =
            |list: &[(u32, u32)], year| -> Vec<NaiveDate> { list.iter().map(|(m, day)| d(year, *m, *day)).collect() };
        let y2014 = [(1, 1), (1, 27), (3, 10), (4, 18), (4, 19), (4, 21), (4, 25), (6, 9), (11, 4), (12, 25), (12, 26)];
        let mut expected = days(&y2014, 2014);
        expected.insert(1, d(2014, 1, 26)); // Sunday Australia Day itself, and Monday 27th
        assert_eq!(victoria_holidays(2014), expected);
        let y2021 = victoria_holidays(2021);
        for day in [(12, 25), (12, 26), (12, 27), (12, 28), (4, 2), (4, 3), (4, 4), (4, 5), (1, 26), (11, 2)] {
            assert!(y2021.contains(&d(2021, day.0, day.1)), "{day:?}");
        }
        let y2022 = victoria_holidays(2022);
        assert!(y2022.contains(&d(2022, 12, 26)) && y2022.contains(&d(2022, 12, 27)));
        assert!(!y2022.contains(&d(2022, 12, 28)));
        let y2017 = victoria_holidays(2017);
        assert!(y2017.contains(&d(2017, 1, 1)) && y2017.contains(&d(2017, 1, 2)));
        for (year, month, day) in [(2014, 4, 20), (2019, 4, 21), (2024, 3, 31), (2025, 4, 20), (2038, 4, 25)] {
            assert_eq!(easter_sunday(year), d(year, month, day));
        }
    }

    #[test]
    fn holidays_by_rule() {
        let h = us_federal_holidays(2024);
        assert!(h.contains(&d(2024, 1, 15))); // MLK
        assert!(h.contains(&d(2024, 5, 27))); // Memorial Day
        assert!(h.contains(&d(2024, 11, 28))); // Thanksgiving
        assert!(h.contains(&d(2024, 6, 19)));
        // 2022-12-25 was a Sunday: observed Monday the 26th; 2021-12-31 observes New Year 2022.
        assert!(is_us_holiday(d(2022, 12, 26)));
        assert!(is_us_holiday(d(2021, 12, 31)));
        assert!(!us_federal_holidays(2020).contains(&d(2020, 6, 19)));
    }

    /// The minor holidays are the federal holidays most businesses keep open (observed dates),
    /// and the major ones are not among them.
    #[test]
    fn minor_holidays_and_the_day_after_thanksgiving() {
        for minor in [d(2019, 1, 21), d(2019, 2, 18), d(2019, 10, 14), d(2018, 11, 12), d(2021, 6, 18), d(2024, 6, 19)]
        {
            assert!(is_minor_us_holiday(minor) && is_us_holiday(minor), "{minor}");
        }
        for other in [d(2019, 1, 1), d(2019, 5, 27), d(2019, 7, 4), d(2019, 9, 2), d(2019, 11, 28), d(2019, 12, 25)] {
            assert!(is_us_holiday(other) && !is_minor_us_holiday(other), "{other}");
        }
        // Veterans Day on a Sunday is observed on Monday, not on the Sunday; no Juneteenth before 2021
        assert!(!is_minor_us_holiday(d(2018, 11, 11)) && !is_minor_us_holiday(d(2020, 6, 19)));
        assert!(is_day_after_thanksgiving(d(2019, 11, 29)) && is_day_after_thanksgiving(d(2024, 11, 29)));
        assert!(!is_day_after_thanksgiving(d(2019, 11, 28)) && !is_day_after_thanksgiving(d(2019, 11, 22)));
    }

    #[test]
    fn month_chunks_follow_interval_end_months() {
        let r = DateRange::from_days(d(2024, 1, 30), d(2024, 3, 2)).unwrap();
        let chunks = r.month_chunks();
        let shown: Vec<String> = chunks.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["2024-01-30T00..2024-01-31T23", "2024-01-31T23..2024-02-29T23", "2024-02-29T23..2024-03-03T00"]
        );
        for c in &chunks {
            let months: std::collections::BTreeSet<_> =
                c.hour_ends_us().map(|t| (from_us(t).year(), from_us(t).month())).collect();
            assert_eq!(months.len(), 1, "{c}");
        }
    }

    proptest! {
        #[test]
        fn month_chunks_cover_exactly(start_h in 0i64..500_000, len_h in 0i64..30_000) {
            let start = from_us(start_h * HOUR_US);
            let r = DateRange::new(start, start + Duration::hours(len_h)).unwrap();
            let chunks = r.month_chunks();
            let mut at = r.start;
            for c in &chunks {
                prop_assert_eq!(c.start, at);
                prop_assert!(c.end > c.start);
                at = c.end;
            }
            prop_assert_eq!(at, r.end);
        }

        #[test]
        fn chunks_cover_exactly_without_overlap(start_h in 0i64..2_000_000, len_h in 0i64..20_000, chunk_h in 1i64..3_000) {
            let start = from_us(start_h * HOUR_US);
            let r = DateRange::new(start, start + Duration::hours(len_h)).unwrap();
            let chunks = r.chunks(Duration::hours(chunk_h));
            let mut at = r.start;
            for c in &chunks {
                prop_assert_eq!(c.start, at);
                prop_assert!(c.end > c.start);
                prop_assert!(c.hours() <= chunk_h);
                // boundaries inside the range sit on the epoch grid
                if c.end != r.end { prop_assert_eq!(c.end.timestamp() % (chunk_h * 3600), 0); }
                at = c.end;
            }
            prop_assert_eq!(at, r.end);
            let total: i64 = chunks.iter().map(DateRange::hours).sum();
            prop_assert_eq!(total, r.hours());
        }

        #[test]
        fn chunks_are_the_same_hours_whatever_the_local_dst(days in 1u32..400, now_h in 400_000i64..500_000) {
            // UTC chunking never depends on local clocks: a DST day keeps its 23 or 25 hours.
            let r = DateRange::last_days(days, from_us(now_h * HOUR_US + 1234)).unwrap();
            let n: usize = r.chunks(Duration::days(30)).iter().map(|c| c.hour_ends_us().count()).sum();
            prop_assert_eq!(n as i64, i64::from(days) * 24);
        }
    }
}
