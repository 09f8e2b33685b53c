//! The file source: a user's CSV or Parquet file of hourly values. Columns: a timestamp
//! (default name `timestamp`; UTC interval end unless it carries an offset), a value (default
//! `value`, stored under `--kind`, default `D`), and optional extra numeric columns, each
//! stored as its own series with the column name (upper-cased, non-alphanumerics as `_`) as
//! its kind. Empty cells and `MISSING`, `EMPTY`, `NA`, `NaN`, `null` are nulls; anything else that is
//! not a number, a timestamp that cannot be read or is not on a whole hour, a duplicate
//! timestamp or a missing column is an error naming the row and the value.
use super::store::guard_reader;
use super::{Batch, IngestError, SeriesId, SeriesRows, Source};
use crate::time::{DateRange, HOUR_US};
use chrono::TimeDelta;
use polars::prelude::*;
use std::path::{Path, PathBuf};

const NULL_TOKENS: [&str; 8] = ["", "MISSING", "EMPTY", "NA", "NaN", "nan", "null", "None"];

/// A file read once, served by range.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    rows: Vec<SeriesRows>,
}

/// Which columns to read.
#[derive(Debug, Clone)]
pub struct FileColumns {
    pub timestamp: String,
    pub value: String,
    pub region: String,
    pub kind: String,
}

impl FileSource {
    /// Read and check the whole file.
    pub fn open(path: &Path, columns: &FileColumns) -> Result<Self, IngestError> {
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
        let timestamps = read_timestamps(df.column(&columns.timestamp).map_err(|e| bad(e.to_string()))?)
            .map_err(|(row, message)| bad(format!("row {}: {message}", row + 2)))?;
        let mut rows = Vec::new();
        for name in &names {
            if name == &columns.timestamp {
                continue;
            }
            let kind = if name == &columns.value { columns.kind.clone() } else { kind_of(name) };
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
            let mut series =
                SeriesRows { id: SeriesId::new("file", &columns.region, kind), timestamps: timestamps.clone(), values };
            series.sort_and_check().map_err(|e| bad(e.to_string()))?;
            rows.push(series);
        }
        Ok(Self { path: path.to_owned(), rows })
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

fn read_timestamps(column: &Column) -> Result<Vec<i64>, (usize, String)> {
    match column.dtype() {
        DataType::Datetime(..) | DataType::Date => {
            let c = column
                .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))
                .and_then(|c| c.cast(&DataType::Int64))
                .map_err(|e| (0, e.to_string()))?;
            let ca = c.i64().map_err(|e| (0, e.to_string()))?;
            ca.iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Some(t) if t.rem_euclid(HOUR_US) == 0 => Ok(t),
                    Some(_) => Err((i, "timestamp is not on a whole hour".to_string())),
                    None => Err((i, "empty timestamp".to_string())),
                })
                .collect()
        }
        _ => {
            let c = column.cast(&DataType::String).map_err(|e| (0, e.to_string()))?;
            let ca = c.str().map_err(|e| (0, e.to_string()))?;
            ca.iter().enumerate().map(|(i, t)| parse_timestamp(t.unwrap_or("")).map_err(|e| (i, e))).collect()
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
        ];
        for (text, expected) in cases {
            let err = FileSource::open(&write(dir.path(), text), &columns()).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
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
