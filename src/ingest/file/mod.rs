//! The file source: a user's CSV or Parquet file of hourly or sub-hourly values. Columns: a
//! timestamp (default name `timestamp`), a value (default `value`, stored under `--kind`,
//! default `D`), and optional extra numeric columns, each stored as its own series with the
//! column name (upper-cased, non-alphanumerics as `_`) as its kind, or the kind
//! `--column-kind NAME=KIND` gives it. Empty cells and `MISSING`, `EMPTY`, `NA`, `NaN`, `null`
//! are nulls; anything else that is not a number, a timestamp that cannot be read, a duplicate
//! timestamp or a missing column is an error naming the row and the value.
//!
//! Timestamps with an offset (`Z`, `+10:00`) are instants; those without are wall-clock times
//! in `--timezone` (else `[regions.<R>] timezone`, else the zone the store recorded for the
//! region, else UTC). A wall-clock time that a daylight-saving change skips is an error; one
//! that it repeats is the earlier instant, or the later one when the row before already was
//! at or after the earlier.
//!
//! Sub-hourly files (5, 15, 30 minutes…) are aggregated to hourly values: see [`resample`]
//! for the step, the interval convention ([`Stamps`]), the aggregation ([`Resample`]) and
//! partial hours.
mod resample;

pub use resample::{Resample, Stamps};

use super::store::guard_reader;
use super::{Batch, IngestError, SeriesId, SeriesRows, Source};
use crate::time::{DateRange, HOUR_US, Stamp};
use chrono::TimeDelta;
use chrono_tz::Tz;
use polars::prelude::*;
use std::path::{Path, PathBuf};

const NULL_TOKENS: [&str; 8] = ["", "MISSING", "EMPTY", "NA", "NaN", "nan", "null", "None"];

/// A file read once, served by range.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    rows: Vec<SeriesRows>,
    /// The file's step in µs ([`HOUR_US`] for an hourly file).
    step: i64,
}

/// Which columns to read.
#[derive(Debug, Clone)]
pub struct FileColumns {
    pub timestamp: String,
    pub value: String,
    pub region: String,
    pub kind: String,
}

/// How to read the file's time and aggregate its values.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOptions {
    /// The zone of timestamps without an offset (`None`: UTC).
    pub zone: Option<Tz>,
    /// Which end of its interval a timestamp marks.
    pub stamps: Stamps,
    /// How the value column's sub-hourly values make an hour (other columns: the mean).
    pub resample: Resample,
    /// Fraction (0 to 1) of an hour's sub-hourly intervals that must hold a value.
    pub min_coverage: f64,
    /// Kinds for extra columns, `(column, kind)`, instead of the upper-cased column name.
    pub column_kinds: Vec<(String, String)>,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self { zone: None, stamps: Stamps::End, resample: Resample::Mean, min_coverage: 1.0, column_kinds: Vec::new() }
    }
}

impl FileSource {
    /// Read and check the whole file, with the default [`FileOptions`] (UTC, interval-end
    /// stamps, hourly means of whole hours).
    pub fn open(path: &Path, columns: &FileColumns) -> Result<Self, IngestError> {
        Self::open_with(path, columns, &FileOptions::default())
    }

    /// Read and check the whole file.
    pub fn open_with(path: &Path, columns: &FileColumns, options: &FileOptions) -> Result<Self, IngestError> {
        let bad = |message: String| IngestError::BadFile { path: path.to_owned(), message: one_line(&message) };
        if path.is_dir() {
            return Err(bad("is a folder, not a .csv or .parquet file".into()));
        }
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let read = || match extension.as_str() {
            "csv" | "txt" => CsvReadOptions::default()
                .with_has_header(true)
                .with_infer_schema_length(Some(0)) // every column as text: we parse and report
                .try_into_reader_with_file_path(Some(path.to_owned()))
                .and_then(|r| r.finish()),
            _ => std::fs::File::open(path).map_err(PolarsError::from).and_then(|f| ParquetReader::new(f).finish()),
        };
        let df = match extension.as_str() {
            "csv" | "txt" | "parquet" | "pq" => guard_reader(read).map_err(bad)?,
            "" => return Err(bad("the file name has no extension (use .csv or .parquet)".into())),
            other => return Err(bad(format!("unsupported file type `.{other}` (use .csv or .parquet)"))),
        }
        .map_err(|e| bad(e.to_string()))?;

        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        for wanted in [&columns.timestamp, &columns.value] {
            if !names.iter().any(|n| n == wanted) {
                return Err(bad(format!("no column `{wanted}` (columns: {})", names.join(", "))));
            }
        }
        if !(0.0..=1.0).contains(&options.min_coverage) {
            return Err(bad(format!("--min-coverage must be between 0 and 1 (got {})", options.min_coverage)));
        }
        for (name, kind) in &options.column_kinds {
            if !names.iter().any(|n| n == name) {
                return Err(bad(format!(
                    "--column-kind {name}={kind}: no column `{name}` (columns: {})",
                    names.join(", ")
                )));
            }
            if name == &columns.timestamp || name == &columns.value {
                return Err(bad(format!(
                    "--column-kind {name}={kind}: `{name}` is the timestamp or value column (the value's kind is --kind)"
                )));
            }
            super::check_name("kind", kind).map_err(|e| bad(format!("--column-kind {name}={kind}: {e}")))?;
        }
        let instants = read_instants(df.column(&columns.timestamp).map_err(|e| bad(e.to_string()))?, options.zone)
            .map_err(|(row, message)| bad(format!("row {}: {message}", row + 2)))?;
        // (kind, values, aggregation) of each numeric column
        let mut read: Vec<(String, Vec<Option<f64>>, Resample)> = Vec::new();
        for name in &names {
            if name == &columns.timestamp {
                continue;
            }
            let mapped = options.column_kinds.iter().find(|(column, _)| column == name).map(|(_, kind)| kind.clone());
            let kind =
                if name == &columns.value { columns.kind.clone() } else { mapped.unwrap_or_else(|| kind_of(name)) };
            let column = df.column(name).map_err(|e| bad(e.to_string()))?;
            let values = match read_values(column) {
                Ok(values) => values,
                Err((row, message)) if name == &columns.value => {
                    return Err(bad(format!("row {}, column `{name}`: {message}", row + 2)));
                }
                Err(_) => {
                    tracing::info!(column = %name, "skipping a column that is not numeric");
                    continue;
                }
            };
            if let Some((other, ..)) = read.iter().find(|(k, ..)| *k == kind) {
                return Err(bad(format!(
                    "column `{name}` would be stored as kind {kind}, as another column ({other}): rename one with --column-kind NAME=KIND"
                )));
            }
            let resample = if name == &columns.value { options.resample } else { Resample::Mean };
            read.push((kind, values, resample));
        }
        let aggregations: Vec<(&[Option<f64>], Resample)> =
            read.iter().map(|(_, values, resample)| (values.as_slice(), *resample)).collect();
        let hourly = resample::to_hourly(&instants, &aggregations, options.stamps, options.min_coverage)
            .map_err(|(row, message)| bad(format!("row {}: {message}", row + 2)))?;
        let value_index = read.iter().position(|(kind, ..)| *kind == columns.kind);
        if let Some(k) = value_index
            && hourly.step != HOUR_US
            && hourly.columns[k].iter().all(Option::is_none)
            && read[k].1.iter().any(Option::is_some)
        {
            return Err(bad(format!(
                "no hour of column `{}` has all its {} intervals, so every hour would be null: see --stamps \
                 (which end of its interval a timestamp marks) and --min-coverage (the fraction of an hour needed)",
                columns.value,
                resample::describe_step(hourly.step)
            )));
        }
        if hourly.step != HOUR_US {
            tracing::info!(
                step = %resample::describe_step(hourly.step),
                rows = instants.len(),
                hours = hourly.hours.len(),
                "aggregating sub-hourly rows to hours"
            );
        }
        let mut rows = Vec::new();
        for (((kind, ..), values), partial) in read.iter().zip(hourly.columns).zip(&hourly.partial) {
            if *partial > 0 {
                tracing::warn!(
                    kind = %kind,
                    "{partial} hours of {kind} lack some of their {} intervals and are stored as null \
                     (--min-coverage accepts a fraction; --stamps start|end says which end of its interval a timestamp marks)",
                    resample::describe_step(hourly.step)
                );
            }
            let mut series = SeriesRows {
                id: SeriesId::new("file", &columns.region, kind.clone()),
                timestamps: hourly.hours.clone(),
                values,
            };
            series.sort_and_check().map_err(|e| bad(e.to_string()))?;
            rows.push(series);
        }
        Ok(Self { path: path.to_owned(), rows, step: hourly.step })
    }

    /// The file's step in minutes (60 for an hourly file).
    pub fn step_minutes(&self) -> i64 {
        self.step / 60_000_000
    }

    /// The span of the file's timestamps.
    pub fn range(&self) -> Option<DateRange> {
        let first = self.rows.iter().filter_map(|r| r.timestamps.first()).min()?;
        let last = self.rows.iter().filter_map(|r| r.timestamps.last()).max()?;
        DateRange::new(crate::time::from_us(first - HOUR_US), crate::time::from_us(*last)).ok()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Source for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    fn chunk_len(&self) -> TimeDelta {
        TimeDelta::days(366)
    }

    fn series(&self) -> Vec<SeriesId> {
        self.rows.iter().map(|r| r.id.clone()).collect()
    }

    fn params(&self) -> String {
        // a re-import of a changed file must not be skipped
        let mut hasher = crc32fast::Hasher::new();
        for r in &self.rows {
            for (t, v) in r.timestamps.iter().zip(&r.values) {
                hasher.update(&t.to_le_bytes());
                hasher.update(&v.map_or(u64::MAX, f64::to_bits).to_le_bytes());
            }
        }
        format!("crc32={:08x}", hasher.finalize())
    }

    async fn fetch(&self, range: DateRange) -> Result<Batch, IngestError> {
        let series = self
            .rows
            .iter()
            .map(|r| {
                let keep: Vec<usize> = (0..r.len()).filter(|&i| range.holds_us(r.timestamps[i])).collect();
                SeriesRows {
                    id: r.id.clone(),
                    timestamps: keep.iter().map(|&i| r.timestamps[i]).collect(),
                    values: keep.iter().map(|&i| r.values[i]).collect(),
                }
            })
            .collect();
        Ok(Batch { series, requests: 0, retries: 0 })
    }
}

/// A reader's message on one line: polars adds paragraphs of hints (for its Python API) and
/// may quote a field with its line break. Keeps the first paragraph and, where given, the
/// original error that follows the hints.
/// The region a file is imported as without `--region`: its name without the extension,
/// upper-cased, with every character but ASCII letters and digits turned into `_`
/// (`pjm_2020-2024.csv` → `PJM_2020_2024`).
pub fn default_region(path: &Path) -> String {
    path.file_stem()
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
                .collect()
        })
        .unwrap_or_else(|| "FILE".to_string())
}

fn one_line(message: &str) -> String {
    let paragraphs: Vec<&str> = message.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).collect();
    let original = paragraphs.iter().position(|p| p.starts_with("Original error")).unwrap_or(paragraphs.len());
    let kept: Vec<&str> = paragraphs.iter().take(1).chain(paragraphs.iter().skip(original.max(1))).copied().collect();
    let text = kept.join("; ").replace("```", "");
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn kind_of(column: &str) -> String {
    let kind: String =
        column.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    kind.trim_matches('_').to_string()
}

pub use crate::time::parse_timestamp;

/// The instants (µs) of a timestamp column, in row order; errors carry the 0-based row.
/// Times without an offset are read in `zone` (UTC when `None`).
fn read_instants(column: &Column, zone: Option<Tz>) -> Result<Vec<i64>, (usize, String)> {
    let naive = matches!(column.dtype(), DataType::Datetime(_, None) | DataType::Date);
    match (column.dtype(), zone) {
        (DataType::Datetime(..) | DataType::Date, zone) => {
            // a zone-less column is local time where a zone is given, else UTC
            let target = match zone {
                Some(_) if naive => DataType::Datetime(TimeUnit::Microseconds, None),
                _ => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
            };
            let c = column.cast(&target).and_then(|c| c.cast(&DataType::Int64)).map_err(|e| (0, e.to_string()))?;
            let ca = c.i64().map_err(|e| (0, e.to_string()))?;
            let mut previous = None;
            let mut out = Vec::with_capacity(ca.len());
            for (i, t) in ca.iter().enumerate() {
                let t = t.ok_or_else(|| (i, "empty timestamp".to_string()))?;
                let t = match zone {
                    Some(zone) if naive => {
                        let local = crate::time::from_us(t).naive_utc();
                        localize(local, zone, previous).map_err(|e| (i, e))?
                    }
                    _ => t,
                };
                previous = Some(t);
                out.push(t);
            }
            Ok(out)
        }
        _ => {
            let c = column.cast(&DataType::String).map_err(|e| (0, e.to_string()))?;
            let ca = c.str().map_err(|e| (0, e.to_string()))?;
            let mut previous = None;
            let mut out = Vec::with_capacity(ca.len());
            for (i, text) in ca.iter().enumerate() {
                let t = match crate::time::parse_stamp(text.unwrap_or("")).map_err(|e| (i, e))? {
                    Stamp::Instant(t) => t,
                    Stamp::Local(local) => match zone {
                        Some(zone) => localize(local, zone, previous).map_err(|e| (i, e))?,
                        None => local.and_utc().timestamp_micros(),
                    },
                };
                previous = Some(t);
                out.push(t);
            }
            Ok(out)
        }
    }
}

/// A wall-clock time in `zone` as an instant (µs): a time a daylight-saving change repeats is
/// the earlier instant unless the previous row already reached it; a skipped time is an error.
fn localize(local: chrono::NaiveDateTime, zone: Tz, previous: Option<i64>) -> Result<i64, String> {
    use chrono::{LocalResult, TimeZone as _};
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Ok(t.timestamp_micros()),
        LocalResult::Ambiguous(earlier, later) => {
            let earlier = earlier.timestamp_micros();
            Ok(if previous.is_some_and(|p| p >= earlier) { later.timestamp_micros() } else { earlier })
        }
        LocalResult::None => {
            Err(format!("local time {local} does not exist in {} (a daylight-saving change skips it)", zone.name()))
        }
    }
}

fn read_values(column: &Column) -> Result<Vec<Option<f64>>, (usize, String)> {
    match column.dtype() {
        DataType::String => {
            let ca = column.str().map_err(|e| (0, e.to_string()))?;
            ca.iter()
                .enumerate()
                .map(|(i, v)| {
                    let v = v.unwrap_or("").trim();
                    if NULL_TOKENS.contains(&v) {
                        return Ok(None);
                    }
                    match v.parse::<f64>() {
                        Ok(x) if x.is_finite() => Ok(Some(x)),
                        Ok(_) => Err((i, format!("`{v}` is not a finite number"))),
                        Err(_) => Err((i, format!("`{v}` is not a number"))),
                    }
                })
                .collect()
        }
        dtype if dtype.is_primitive_numeric() => {
            let c = column.cast(&DataType::Float64).map_err(|e| (0, e.to_string()))?;
            c.f64()
                .map_err(|e| (0, e.to_string()))?
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    // NaN is a null, as the `NaN` token of a CSV file
                    Some(x) if x.is_nan() => Ok(None),
                    Some(x) if x.is_infinite() => Err((i, format!("`{x}` is not a finite number"))),
                    v => Ok(v),
                })
                .collect()
        }
        other => Err((0, format!("column type {other} is not numeric"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> FileColumns {
        FileColumns { timestamp: "timestamp".into(), value: "value".into(), region: "HOME".into(), kind: "D".into() }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("in.csv");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_values_nulls_and_extra_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "timestamp,value,temp\n2024-01-01T02:00:00Z,10.5,3\n2024-01-01 01:00,MISSING,2\n");
        let source = FileSource::open(&path, &columns()).unwrap();
        let ids: Vec<String> = source.series().iter().map(ToString::to_string).collect();
        assert_eq!(ids, ["file:HOME:D", "file:HOME:TEMP"]);
        assert_eq!(source.rows[0].values, vec![None, Some(10.5)]);
        assert_eq!(source.range().unwrap().hours(), 2);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("timestamp,value\nyesterday,1\n", "row 2: cannot read timestamp `yesterday`"),
            (
                "timestamp,value\n2024-01-01T01:00:00Z,1\n2024-01-01T01:00:00Z,2\n",
                "duplicate timestamp 2024-01-01T01:00:00Z",
            ),
            ("time,value\n2024-01-01T01:00:00Z,1\n", "no column `timestamp` (columns: time, value)"),
            ("timestamp,value\n2024-01-01T01:00:00Z,lots\n", "row 2, column `value`: `lots` is not a number"),
            ("timestamp,value\n2024-01-01T01:30:00Z,1\n", "not on a whole hour"),
            (
                "timestamp,value\n2024-01-01T01:00:00Z,1\n2024-01-01T01:30:00Z,1\n",
                "no hour of column `value` has all its 30-minute intervals",
            ),
        ];
        for (text, expected) in cases {
            let err = FileSource::open(&write(dir.path(), text), &columns()).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
    }

    /// A half-hourly file of local times (fixed UTC+10, stamps marking interval starts, as
    /// the Victoria series): hourly means in UTC, extra columns averaged, a column mapped to a
    /// kind, the last half hour missing and so a null hour.
    #[test]
    fn half_hourly_local_file_becomes_hourly_utc_means() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "timestamp,value,temperature_c,workday\n2014-01-01T00:00:00,4,18,0\n2014-01-01T00:30:00,3,17,0\n\
             2014-01-01T01:00:00,2,16,0\n2014-01-01 01:30,NA,15,0\n2014-01-01T02:00:00+10:00,7,14,1\n",
        );
        let options = FileOptions {
            zone: Some(chrono_tz::Etc::GMTMinus10),
            stamps: Stamps::Start,
            column_kinds: vec![("temperature_c".into(), "TEMP".into())],
            ..FileOptions::default()
        };
        let source = FileSource::open_with(&path, &columns(), &options).unwrap();
        assert_eq!(source.step_minutes(), 30);
        let ids: Vec<String> = source.series().iter().map(ToString::to_string).collect();
        assert_eq!(ids, ["file:HOME:D", "file:HOME:TEMP", "file:HOME:WORKDAY"]);
        // local 01:00 = 2013-12-31T15:00Z ends the first hour
        let first = parse_timestamp("2013-12-31T15:00:00Z").unwrap();
        assert_eq!(source.rows[0].timestamps, [first, first + HOUR_US, first + 2 * HOUR_US]);
        assert_eq!(source.rows[0].values, [Some(3.5), None, None]);
        assert_eq!(source.rows[1].values, [Some(17.5), Some(15.5), None]);
        // with half of an hour enough, the hours with one value are their value
        let lenient = FileOptions { min_coverage: 0.5, resample: Resample::Sum, ..options.clone() };
        let source = FileSource::open_with(&path, &columns(), &lenient).unwrap();
        assert_eq!(source.rows[0].values, [Some(7.0), Some(4.0), Some(14.0)]);
        assert_eq!(source.rows[2].values, [Some(0.0), Some(0.0), Some(1.0)]);
        // read as UTC the rows without an offset are ten hours later; the one with its offset stays
        let utc = FileOptions { zone: None, ..options };
        let source = FileSource::open_with(&path, &columns(), &utc).unwrap();
        assert_eq!(source.rows[0].timestamps, [first + 2 * HOUR_US, first + 10 * HOUR_US, first + 11 * HOUR_US]);
    }

    /// Wall-clock times across New York's daylight-saving changes: the repeated hour is read
    /// in order, a skipped time is an error naming the row.
    #[test]
    fn local_times_across_dst_changes() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileOptions { zone: Some(chrono_tz::America::New_York), ..FileOptions::default() };
        let text = "timestamp,value\n2024-11-03 00:00,1\n2024-11-03 01:00,2\n2024-11-03 01:00,3\n2024-11-03 02:00,4\n";
        let source = FileSource::open_with(&write(dir.path(), text), &columns(), &options).unwrap();
        let first = parse_timestamp("2024-11-03T04:00:00Z").unwrap();
        let expected: Vec<i64> = (0..4).map(|k| first + k * HOUR_US).collect();
        assert_eq!(source.rows[0].timestamps, expected);
        assert_eq!(source.rows[0].values, [Some(1.0), Some(2.0), Some(3.0), Some(4.0)]);
        let text = "timestamp,value\n2024-03-10 01:00,1\n2024-03-10 02:00,2\n";
        let err = FileSource::open_with(&write(dir.path(), text), &columns(), &options).unwrap_err().to_string();
        assert!(err.contains("row 3: local time 2024-03-10 02:00:00 does not exist in America/New_York"), "{err}");
    }

    #[test]
    fn option_errors_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "timestamp,value,temp,Temp\n2024-01-01T01:00:00Z,1,2,3\n");
        let cases = [
            (FileOptions { min_coverage: 1.5, ..FileOptions::default() }, "--min-coverage must be between 0 and 1"),
            (
                FileOptions { column_kinds: vec![("tmp".into(), "TEMP".into())], ..FileOptions::default() },
                "--column-kind tmp=TEMP: no column `tmp`",
            ),
            (
                FileOptions { column_kinds: vec![("value".into(), "TEMP".into())], ..FileOptions::default() },
                "is the timestamp or value column",
            ),
            (
                FileOptions { column_kinds: vec![("temp".into(), "../x".into())], ..FileOptions::default() },
                "invalid kind `../x`",
            ),
            (FileOptions::default(), "column `Temp` would be stored as kind TEMP"),
        ];
        for (options, expected) in cases {
            let err = FileSource::open_with(&path, &columns(), &options).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let renamed = FileOptions { column_kinds: vec![("Temp".into(), "TEMP2".into())], ..FileOptions::default() };
        assert_eq!(FileSource::open_with(&path, &columns(), &renamed).unwrap().series().len(), 3);
    }

    #[test]
    fn parses_the_offsets_it_is_given() {
        assert_eq!(parse_timestamp("2023-08-13T01:00:00-00:00").unwrap(), parse_timestamp("2023-08-13T01").unwrap());
        assert_eq!(
            parse_timestamp("2023-08-13T01:00:00-07:00").unwrap(),
            parse_timestamp("2023-08-13 08:00:00").unwrap()
        );
    }
}
