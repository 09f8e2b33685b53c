//! A file's rows to the store's hourly rows: the file's step is detected from its timestamps,
//! each timestamp is assigned to the hour whose interval holds it, and sub-hourly values are
//! aggregated per hour.
//!
//! - **Step**: a file whose timestamps all fall on whole hours is hourly and is stored row for
//!   row, as it always was. Otherwise the step is the most common gap between consecutive
//!   timestamps; it must divide an hour (5, 15, 30 minutes, …) and every timestamp must lie on
//!   its grid.
//! - **Which hour** ([`Stamps`]): with `end` (the default, the store's own convention) a
//!   timestamp `t` marks the end of its interval `(t − step, t]`, so it belongs to the hour that
//!   ends at `t` rounded up to the hour (00:30 and 01:00 → the hour ending 01:00). With `start`
//!   it marks the start of `[t, t + step)` and belongs to the hour ending at `t` rounded down,
//!   plus one hour (00:00 and 00:30 → the hour ending 01:00); an hourly file read with `start`
//!   moves every row one hour later. An instantaneous reading (a temperature at 00:30) is read
//!   with the same rule.
//! - **Aggregation** ([`Resample`]): the value column is the mean of the hour's values (`mean`,
//!   the default, for power in MW or GW) or their sum (`sum`, for energy per interval); the
//!   other numeric columns always the mean. An hour needs all its intervals (`3600 / step`
//!   non-null values) unless `--min-coverage F` accepts a fraction F (0 to 1) of them: then the
//!   mean of those present, and for `sum` that mean times the intervals of an hour (the sum
//!   scaled up to a whole hour). An hour with too few values is stored as null; an hour with no
//!   row at all is not stored (a gap, as for hourly files).
use crate::time::HOUR_US;

/// Which end of its interval a file's timestamp marks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Stamps {
    /// The interval's end (the store's convention): 00:30 and 01:00 make the hour ending 01:00.
    #[default]
    End,
    /// The interval's start: 00:00 and 00:30 make the hour ending 01:00.
    Start,
}

/// How sub-hourly values of the value column become an hourly value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Resample {
    /// The mean of the hour's values (power: MW, GW).
    #[default]
    Mean,
    /// The sum of the hour's values (energy per interval: MWh).
    Sum,
}

/// The hourly rows of a file: interval-end hours (sorted, unique for sub-hourly files; as in
/// the file for hourly ones) and one value vector per column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hourly {
    /// The file's step in µs ([`HOUR_US`] for an hourly file).
    pub step: i64,
    pub hours: Vec<i64>,
    pub columns: Vec<Vec<Option<f64>>>,
    /// Per column: hours stored as null because too few of their intervals had a value.
    pub partial: Vec<usize>,
}

/// The file's step (µs): [`HOUR_US`] when every timestamp is on a whole hour, else the most
/// common gap, which must divide an hour and whose grid every timestamp must lie on. Errors
/// carry the 0-based row.
pub(crate) fn detect_step(stamps: &[i64]) -> Result<i64, (usize, String)> {
    let off_hour = stamps.iter().position(|t| t.rem_euclid(HOUR_US) != 0);
    let Some(first_off) = off_hour else { return Ok(HOUR_US) };
    let not_hourly =
        |row: usize| (row, format!("timestamp {} is not on a whole hour", crate::time::format_second(stamps[row])));
    let mut sorted = stamps.to_vec();
    sorted.sort_unstable();
    let mut gaps: Vec<i64> = sorted.windows(2).map(|w| w[1].saturating_sub(w[0])).filter(|g| *g > 0).collect();
    gaps.sort_unstable();
    // the most common gap; ties go to the shortest
    let mut best: Option<(usize, i64)> = None;
    for run in gaps.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(count, _)| run.len() > count) {
            best = Some((run.len(), run[0]));
        }
    }
    let Some((_, step)) = best else { return Err(not_hourly(first_off)) };
    if step >= HOUR_US {
        return Err(not_hourly(first_off));
    }
    if HOUR_US % step != 0 {
        return Err((
            first_off,
            format!(
                "the file's step, {} s between most timestamps, does not divide an hour (5, 10, 15, 30 minutes… are read)",
                step / 1_000_000
            ),
        ));
    }
    if let Some(row) = stamps.iter().position(|t| t.rem_euclid(step) != 0) {
        return Err((
            row,
            format!(
                "timestamp {} is not on the file's {} grid",
                crate::time::format_second(stamps[row]),
                describe_step(step)
            ),
        ));
    }
    Ok(step)
}

/// A step as people say it: `30-minute`, `90-second`.
pub(crate) fn describe_step(step: i64) -> String {
    let seconds = step / 1_000_000;
    if seconds % 60 == 0 { format!("{}-minute", seconds / 60) } else { format!("{seconds}-second") }
}

/// The interval-end hour a timestamp of a file with `step` belongs to.
pub(crate) fn hour_of(t: i64, stamps: Stamps) -> i64 {
    match stamps {
        Stamps::End => t + (HOUR_US - t.rem_euclid(HOUR_US)) % HOUR_US,
        Stamps::Start => t - t.rem_euclid(HOUR_US) + HOUR_US,
    }
}

/// Hourly rows from a file's timestamps (row order) and columns (each with how its values
/// aggregate); `min_coverage` is the fraction of an hour's intervals that must hold a value.
/// Errors carry the 0-based row.
pub(crate) fn to_hourly(
    stamps: &[i64],
    columns: &[(&[Option<f64>], Resample)],
    convention: Stamps,
    min_coverage: f64,
) -> Result<Hourly, (usize, String)> {
    let step = detect_step(stamps)?;
    if step == HOUR_US {
        return Ok(Hourly {
            step,
            hours: stamps.iter().map(|t| hour_of(*t, convention)).collect(),
            columns: columns.iter().map(|(values, _)| values.to_vec()).collect(),
            partial: vec![0; columns.len()],
        });
    }
    let mut order: Vec<usize> = (0..stamps.len()).collect();
    order.sort_by_key(|&i| (stamps[i], i));
    if let Some(w) = order.windows(2).find(|w| stamps[w[0]] == stamps[w[1]]) {
        let text = crate::time::format_second(stamps[w[1]]);
        return Err((w[1], format!("duplicate timestamp {text} (also on row {})", w[0] + 2)));
    }
    let per_hour = (HOUR_US / step) as usize;
    // at least one value, and at least the fraction asked for (a small tolerance for 1/3 etc.)
    let required = ((min_coverage * per_hour as f64) - 1e-9).ceil().max(1.0) as usize;
    let mut out =
        Hourly { step, hours: Vec::new(), columns: vec![Vec::new(); columns.len()], partial: vec![0; columns.len()] };
    for group in order.chunk_by(|&a, &b| hour_of(stamps[a], convention) == hour_of(stamps[b], convention)) {
        out.hours.push(hour_of(stamps[group[0]], convention));
        for (k, (values, resample)) in columns.iter().enumerate() {
            let present: Vec<f64> = group.iter().filter_map(|&i| values[i]).collect();
            let value = if present.len() >= required {
                let mean = present.iter().sum::<f64>() / present.len() as f64;
                Some(match resample {
                    Resample::Mean => mean,
                    Resample::Sum => mean * per_hour as f64,
                })
            } else {
                out.partial[k] += usize::from(!present.is_empty() || group.len() < per_hour);
                None
            };
            out.columns[k].push(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000;

    /// Stamps every `step` minutes from `first` minutes after 2024-01-01T00:00Z.
    fn stamps(first: i64, step: i64, count: i64) -> Vec<i64> {
        let base = crate::time::parse_timestamp("2024-01-01T00:00:00Z").unwrap();
        (0..count).map(|k| base + (first + k * step) * MINUTE).collect()
    }

    fn hour(h: i64) -> i64 {
        crate::time::parse_timestamp("2024-01-01T00:00:00Z").unwrap() + h * HOUR_US
    }

    fn some(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().copied().map(Some).collect()
    }

    #[test]
    fn half_hourly_means_and_sums_with_interval_end_stamps() {
        // 00:30, 01:00 | 01:30, 02:00
        let t = stamps(30, 30, 4);
        let values = some(&[1.0, 3.0, 10.0, 20.0]);
        let out = to_hourly(&t, &[(&values, Resample::Mean), (&values, Resample::Sum)], Stamps::End, 1.0).unwrap();
        assert_eq!(out.step, 30 * MINUTE);
        assert_eq!(out.hours, [hour(1), hour(2)]);
        assert_eq!(out.columns[0], [Some(2.0), Some(15.0)]);
        assert_eq!(out.columns[1], [Some(4.0), Some(30.0)]);
        assert_eq!(out.partial, [0, 0]);
    }

    #[test]
    fn interval_start_stamps_belong_to_the_next_hour_end() {
        // 00:00, 00:30 | 01:00, 01:30 read as starts: hours ending 01:00 and 02:00
        let t = stamps(0, 30, 4);
        let values = some(&[1.0, 3.0, 10.0, 20.0]);
        let out = to_hourly(&t, &[(&values, Resample::Mean)], Stamps::Start, 1.0).unwrap();
        assert_eq!(out.hours, [hour(1), hour(2)]);
        assert_eq!(out.columns[0], [Some(2.0), Some(15.0)]);
        // the same stamps read as ends: 00:00 ends the hour 23:00–00:00, 01:30 starts the hour to 02:00
        let out = to_hourly(&t, &[(&values, Resample::Mean)], Stamps::End, 1.0).unwrap();
        assert_eq!(out.hours, [hour(0), hour(1), hour(2)]);
        assert_eq!(out.columns[0], [None, Some(6.5), None]);
        assert_eq!(out.partial, [2]);
    }

    #[test]
    fn five_and_fifteen_minute_steps() {
        let t = stamps(5, 5, 24);
        let values: Vec<Option<f64>> = (1..=24).map(|v| Some(f64::from(v))).collect();
        let out = to_hourly(&t, &[(&values, Resample::Mean), (&values, Resample::Sum)], Stamps::End, 1.0).unwrap();
        assert_eq!(out.step, 5 * MINUTE);
        assert_eq!(out.hours, [hour(1), hour(2)]);
        assert_eq!(out.columns[0], [Some(6.5), Some(18.5)]);
        assert_eq!(out.columns[1], [Some(78.0), Some(222.0)]);

        let t = stamps(0, 15, 8);
        let values = some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let out = to_hourly(&t, &[(&values, Resample::Mean)], Stamps::Start, 1.0).unwrap();
        assert_eq!(out.step, 15 * MINUTE);
        assert_eq!(out.columns[0], [Some(2.5), Some(6.5)]);
    }

    /// A partial hour (a null cell or a missing row) is null unless --min-coverage accepts it;
    /// then the mean of what is there, and for a sum that mean times the intervals of an hour.
    #[test]
    fn partial_hours_are_null_unless_min_coverage_allows_them() {
        // 15-minute ends: hour 1 has a null cell, hour 2 lacks the 01:45 row, hour 3 is whole
        let mut t = stamps(15, 15, 12);
        let mut values = some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        values[1] = None;
        t.remove(6);
        values.remove(6);
        let columns = [(values.as_slice(), Resample::Mean), (values.as_slice(), Resample::Sum)];
        let strict = to_hourly(&t, &columns, Stamps::End, 1.0).unwrap();
        assert_eq!(strict.hours, [hour(1), hour(2), hour(3)]);
        assert_eq!(strict.columns[0], [None, None, Some(10.5)]);
        assert_eq!(strict.columns[1], [None, None, Some(42.0)]);
        assert_eq!(strict.partial, [2, 2]);
        let lenient = to_hourly(&t, &columns, Stamps::End, 0.75).unwrap();
        assert_eq!(lenient.columns[0], [Some(8.0 / 3.0), Some(19.0 / 3.0), Some(10.5)]);
        assert_eq!(lenient.columns[1], [Some(8.0 / 3.0 * 4.0), Some(19.0 / 3.0 * 4.0), Some(42.0)]);
        assert_eq!(lenient.partial, [0, 0]);
        // 0.8 of four intervals needs all four
        assert_eq!(to_hourly(&t, &columns, Stamps::End, 0.8).unwrap().columns[0], [None, None, Some(10.5)]);
        // an hour of nulls stays null at any coverage
        let nulls = vec![None; 4];
        let out = to_hourly(&stamps(15, 15, 4), &[(&nulls, Resample::Mean)], Stamps::End, 0.0).unwrap();
        assert_eq!(out.columns[0], [None]);
    }

    #[test]
    fn hourly_files_are_kept_row_for_row() {
        let t = vec![hour(3), hour(1), hour(2)];
        let values = some(&[3.0, 1.0, 2.0]);
        let out = to_hourly(&t, &[(&values, Resample::Sum)], Stamps::End, 0.5).unwrap();
        assert_eq!((out.step, out.hours.clone(), out.columns[0].clone()), (HOUR_US, t.clone(), values.clone()));
        let out = to_hourly(&t, &[(&values, Resample::Sum)], Stamps::Start, 1.0).unwrap();
        assert_eq!(out.hours, [hour(4), hour(2), hour(3)]);
    }

    #[test]
    fn steps_that_cannot_be_read_are_named() {
        let cases: [(Vec<i64>, &str); 4] = [
            (stamps(30, 60, 3), "2024-01-01T00:30:00Z is not on a whole hour"),
            (stamps(7, 7, 5), "does not divide an hour"),
            (
                {
                    let mut t = stamps(30, 30, 6);
                    t[3] += 10 * MINUTE;
                    t
                },
                "is not on the file's 30-minute grid",
            ),
            (stamps(30, 30, 1), "not on a whole hour"),
        ];
        for (t, expected) in cases {
            let values = vec![Some(1.0); t.len()];
            let (_, message) = to_hourly(&t, &[(&values, Resample::Mean)], Stamps::End, 1.0).unwrap_err();
            assert!(message.contains(expected), "{message} should contain {expected}");
        }
        let mut t = stamps(30, 30, 4);
        t[2] = t[1];
        let values = vec![Some(1.0); 4];
        let (row, message) = to_hourly(&t, &[(&values, Resample::Mean)], Stamps::End, 1.0).unwrap_err();
        assert_eq!(row, 2);
        assert!(message.contains("duplicate timestamp 2024-01-01T01:00:00Z (also on row 3)"), "{message}");
    }
}
