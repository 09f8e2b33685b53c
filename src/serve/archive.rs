//! The forecast archive: every forecast `serve` issues, kept in the store beside the series as
//! a hive-partitioned Parquet table, `{store}/source=forecast/region={r}/year={yyyy}/month={mm}/
//! part-0000.parquet` (partitioned by issue month), one row per forecast hour with columns
//! `issued_at`, `data_up_to`, `timestamp` (UTC µs), `model_id`, `lead_h`, `p10`, `p50`, `p90`.
//! It holds no `kind=` folders, so the store's series listing never sees it.
//!
//! A forecast is added by rewriting its month's file through the store's atomic write (the
//! caller holds the store lock): a crash leaves the month as it was or with the new forecast.
use crate::eval::Quantiles;
use crate::ingest::store::{guard_reader, write_atomic_with};
use crate::ingest::{IngestError, Store};
use crate::time::from_us;
use chrono::{DateTime, Datelike, Utc};
use polars::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The archive's source name in the store.
pub const ARCHIVE_SOURCE: &str = "forecast";

const PART_FILE: &str = "part-0000.parquet";
const COL_ISSUED: &str = "issued_at";
const COL_DATA_UP_TO: &str = "data_up_to";
const COL_TIMESTAMP: &str = "timestamp";
const COL_MODEL: &str = "model_id";
const COL_LEAD: &str = "lead_h";

/// One issued forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssuedForecast {
    pub region: String,
    /// When it was issued (wall clock).
    pub issued_at: DateTime<Utc>,
    /// The last hour of data it was issued with (interval end).
    pub data_up_to: DateTime<Utc>,
    pub model_id: String,
    pub hours: Vec<ForecastHour>,
}

/// One hour of an issued forecast, in MW.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ForecastHour {
    /// The hour forecast (interval end).
    pub timestamp: DateTime<Utc>,
    /// Hours after `data_up_to`.
    pub lead_h: i64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl ForecastHour {
    pub fn quantiles(&self) -> Quantiles {
        Quantiles { p10: self.p10, p50: self.p50, p90: self.p90 }
    }
}

fn data_error(path: &Path, message: impl ToString) -> IngestError {
    IngestError::StoreData { path: path.to_owned(), message: message.to_string() }
}

fn month_file(dir: &Path, at: DateTime<Utc>) -> PathBuf {
    dir.join(format!("year={}", at.year())).join(format!("month={:02}", at.month())).join(PART_FILE)
}

/// Add `forecast` to the archive of its region. The caller holds the store lock.
pub fn append(store: &Store, forecast: &IssuedForecast) -> Result<(), IngestError> {
    let dir = store.table_dir(ARCHIVE_SOURCE, &forecast.region)?;
    let path = month_file(&dir, forecast.issued_at);
    store.refuse_links(&path)?;
    let mut all = if path.exists() { read_file(&path, &forecast.region)? } else { Vec::new() };
    all.push(forecast.clone());
    let mut frame = to_frame(&all).map_err(|e| data_error(&path, e))?;
    let folder = path.parent().unwrap_or(&dir);
    std::fs::create_dir_all(folder).map_err(Store::io(folder))?;
    write_atomic_with(&path, |temp| {
        let file = std::fs::OpenOptions::new().write(true).open(temp)?;
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Lz4Raw)
            .finish(&mut frame)
            .map(|_| ())
            .map_err(std::io::Error::other)
    })
}

/// Every archived forecast of `region` issued in `[from, to]`, oldest first (none when the
/// region has no archive).
pub fn read(
    store: &Store,
    region: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<IssuedForecast>, IngestError> {
    let dir = store.table_dir(ARCHIVE_SOURCE, region)?;
    let mut out = Vec::new();
    for path in store.parquet_files_below(&dir)? {
        // the month partitions outside the range are not opened
        if let (Some(month), Some(from), Some(to)) = (partition_month(&dir, &path), from, to) {
            let first = (from.year(), from.month());
            let last = (to.year(), to.month());
            if month < first || month > last {
                continue;
            }
        }
        out.extend(read_file(&path, region)?);
    }
    out.retain(|f| from.is_none_or(|from| f.issued_at >= from) && to.is_none_or(|to| f.issued_at <= to));
    out.sort_by_key(|f| f.issued_at);
    Ok(out)
}

/// The newest archived forecast of `region`.
pub fn latest(store: &Store, region: &str) -> Result<Option<IssuedForecast>, IngestError> {
    let dir = store.table_dir(ARCHIVE_SOURCE, region)?;
    // the newest month holding a file (month folders sort by name: year=YYYY/month=MM)
    let Some(path) = store.parquet_files_below(&dir)?.pop() else { return Ok(None) };
    Ok(read_file(&path, region)?.into_iter().max_by_key(|f| f.issued_at))
}

fn partition_month(dir: &Path, path: &Path) -> Option<(i32, u32)> {
    let mut parts = path.strip_prefix(dir).ok()?.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
    let year = parts.next()?.strip_prefix("year=")?.parse().ok()?;
    let month = parts.next()?.strip_prefix("month=")?.parse().ok()?;
    Some((year, month))
}

fn to_frame(forecasts: &[IssuedForecast]) -> PolarsResult<DataFrame> {
    let hours: Vec<(&IssuedForecast, &ForecastHour)> =
        forecasts.iter().flat_map(|f| f.hours.iter().map(move |h| (f, h))).collect();
    let time = |name: &str, values: Vec<i64>| {
        Series::new(name.into(), values).cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))
    };
    let columns = vec![
        time(COL_ISSUED, hours.iter().map(|(f, _)| f.issued_at.timestamp_micros()).collect())?,
        time(COL_DATA_UP_TO, hours.iter().map(|(f, _)| f.data_up_to.timestamp_micros()).collect())?,
        time(COL_TIMESTAMP, hours.iter().map(|(_, h)| h.timestamp.timestamp_micros()).collect())?,
        Series::new(COL_MODEL.into(), hours.iter().map(|(f, _)| f.model_id.as_str()).collect::<Vec<_>>()),
        Series::new(COL_LEAD.into(), hours.iter().map(|(_, h)| h.lead_h).collect::<Vec<_>>()),
        Series::new("p10".into(), hours.iter().map(|(_, h)| h.p10).collect::<Vec<_>>()),
        Series::new("p50".into(), hours.iter().map(|(_, h)| h.p50).collect::<Vec<_>>()),
        Series::new("p90".into(), hours.iter().map(|(_, h)| h.p90).collect::<Vec<_>>()),
    ];
    DataFrame::new(hours.len(), columns.into_iter().map(Column::from).collect())
}

fn read_file(path: &Path, region: &str) -> Result<Vec<IssuedForecast>, IngestError> {
    let bytes = std::fs::read(path).map_err(Store::io(path))?;
    let frame = guard_reader(|| ParquetReader::new(std::io::Cursor::new(bytes.as_slice())).finish())
        .map_err(|message| data_error(path, message))?
        .map_err(|e| data_error(path, e))?;
    from_frame(&frame, region).map_err(|e| data_error(path, e))
}

fn from_frame(frame: &DataFrame, region: &str) -> PolarsResult<Vec<IssuedForecast>> {
    let micros = |name: &str| -> PolarsResult<Vec<i64>> {
        let column = frame.column(name)?.cast(&DataType::Int64)?;
        Ok(column.i64()?.iter().map(|v| v.unwrap_or(0)).collect())
    };
    let floats = |name: &str| -> PolarsResult<Vec<f64>> {
        let column = frame.column(name)?.cast(&DataType::Float64)?;
        Ok(column.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    };
    let (issued, up_to, timestamps, leads) =
        (micros(COL_ISSUED)?, micros(COL_DATA_UP_TO)?, micros(COL_TIMESTAMP)?, micros(COL_LEAD)?);
    let (p10, p50, p90) = (floats("p10")?, floats("p50")?, floats("p90")?);
    let models = frame.column(COL_MODEL)?.cast(&DataType::String)?;
    let models: Vec<String> = models.str()?.iter().map(|m| m.unwrap_or_default().to_string()).collect();
    let mut out: Vec<IssuedForecast> = Vec::new();
    for i in 0..frame.height() {
        let hour =
            ForecastHour { timestamp: from_us(timestamps[i]), lead_h: leads[i], p10: p10[i], p50: p50[i], p90: p90[i] };
        match out.last_mut() {
            Some(last) if last.issued_at.timestamp_micros() == issued[i] => last.hours.push(hour),
            _ => out.push(IssuedForecast {
                region: region.to_string(),
                issued_at: from_us(issued[i]),
                data_up_to: from_us(up_to[i]),
                model_id: models[i].clone(),
                hours: vec![hour],
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn forecast(region: &str, issued: DateTime<Utc>, base: f64) -> IssuedForecast {
        let up_to = issued - chrono::TimeDelta::minutes(30);
        IssuedForecast {
            region: region.into(),
            issued_at: issued,
            data_up_to: up_to,
            model_id: "SYN1@test".into(),
            hours: (1..=3)
                .map(|h| ForecastHour {
                    timestamp: up_to + chrono::TimeDelta::hours(h),
                    lead_h: h,
                    p10: base - 10.0,
                    p50: base + h as f64,
                    p90: base + 10.0,
                })
                .collect(),
        }
    }

    #[test]
    fn appends_reads_back_and_stays_out_of_the_series_listing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let t = |d, h| Utc.with_ymd_and_hms(2026, 1, d, h, 30, 0).unwrap();
        let first = forecast("SYN1", t(31, 22), 1000.0);
        let second = forecast("SYN1", t(31, 23), 1100.0);
        // the next month's file
        let third = IssuedForecast {
            issued_at: t(31, 23) + chrono::TimeDelta::hours(2),
            ..forecast("SYN1", t(31, 23), 1200.0)
        };
        assert_eq!(latest(&store, "SYN1").unwrap(), None);
        {
            let _lock = store.lock().unwrap();
            for f in [&first, &second, &third] {
                append(&store, f).unwrap();
            }
        }
        assert_eq!(read(&store, "SYN1", None, None).unwrap(), vec![first.clone(), second.clone(), third.clone()]);
        assert_eq!(latest(&store, "SYN1").unwrap(), Some(third.clone()));
        assert_eq!(read(&store, "SYN1", Some(t(31, 23)), Some(t(31, 23))).unwrap(), vec![second]);
        assert!(read(&store, "OTHER", None, None).unwrap().is_empty());
        assert!(store.list_series().unwrap().is_empty(), "the archive is no series");
        assert!(dir.path().join("source=forecast/region=SYN1/year=2026/month=02/part-0000.parquet").is_file());
    }

    #[test]
    fn a_region_name_that_reaches_outside_the_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        for region in ["..", "../x", "a/b"] {
            assert!(read(&store, region, None, None).is_err(), "{region}");
        }
    }
}
