//! Features and sequences: the hourly feature table of one load series, and the windows the
//! model trains on. It reads data only through [`crate::ingest::store`].
//!
//! # Layout
//! - [`clean`]: reindex onto the complete hourly grid, bounds, robust outliers, imputation.
//! - [`calendar`]: local-time calendar columns (DST-correct) and US federal holidays.
//! - [`lags`]: lags and past-only rolling statistics of the cleaned value.
//! - [`scaler`]: per-column standardisation fit on training rows only.
//! - [`base`]: the regression base the model may correct instead of the week-back naive.
//! - [`split`]: chronological train / validation / test row ranges.
//! - [`windows`]: model inputs and targets (next-24h and day-ahead protocols), built with rayon.
//! - [`multi`]: windows of several series for one model (region block, concatenation).
//!
//! # The table
//! One row per hour of the complete UTC grid (interval-end timestamps); no row is ever dropped.
//! Calendar columns describe the local hour the interval *starts* in (hour 0 is 00:00–01:00
//! local), so a local day's 23, 24 or 25 rows share its date, weekday and holiday flag.
pub mod base;
pub mod calendar;
pub mod clean;
pub mod lags;
pub mod multi;
pub mod scaler;
pub mod split;
pub mod windows;

use crate::ingest::{IngestError, SeriesId, Store};
use crate::time::{DateRange, HOUR_US, from_us, region_zone};
use polars::polars_utils::compression::ZstdLevel;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use scaler::Scaler;
pub use split::{Splits, split};
pub use windows::{Protocol, WindowSpec, Windows, make_training_windows, make_windows, window_at};

/// Column names of the feature table.
pub const COL_TIMESTAMP: &str = "timestamp";
pub const COL_VALUE_RAW: &str = "value_raw";
/// The model's input: the load cleaned causally (from hours ≤ t only, see [`clean`]).
pub const COL_VALUE: &str = "value";
/// The training and evaluation target: the load cleaned with hindsight (centered tests,
/// interpolation between good hours). Never an input.
pub const COL_TARGET: &str = "target";
pub const COL_FLAGS: &str = "flags";
pub const COL_HOUR_SIN: &str = "hour_sin";
pub const COL_HOUR_COS: &str = "hour_cos";
pub const COL_DOW_SIN: &str = "dow_sin";
pub const COL_DOW_COS: &str = "dow_cos";
pub const COL_DOY_SIN: &str = "doy_sin";
pub const COL_DOY_COS: &str = "doy_cos";
pub const COL_WEEKEND: &str = "weekend";
pub const COL_HOLIDAY: &str = "holiday";
/// Calendar columns, in table order (all in [-1, 1]).
pub const CALENDAR_COLUMNS: [&str; 8] =
    [COL_HOUR_SIN, COL_HOUR_COS, COL_DOW_SIN, COL_DOW_COS, COL_DOY_SIN, COL_DOY_COS, COL_WEEKEND, COL_HOLIDAY];
/// Lags of the cleaned value, in hours, and their columns.
pub const LAG_HOURS: [usize; 3] = [24, 48, 168];
pub const LAG_COLUMNS: [&str; 3] = ["lag_24", "lag_48", "lag_168"];
/// Past-only rolling statistics (the current hour excluded), windows of 24 and 168 hours.
pub const ROLLING_COLUMNS: [&str; 8] = [
    "roll24_mean",
    "roll24_std",
    "roll24_min",
    "roll24_max",
    "roll168_mean",
    "roll168_std",
    "roll168_min",
    "roll168_max",
];

/// Flag bits of the `flags` column.
pub const FLAG_MISSING: u8 = 1;
pub const FLAG_OUT_OF_BOUNDS: u8 = 2;
pub const FLAG_OUTLIER: u8 = 4;
pub const FLAG_INTERPOLATED: u8 = 8;
pub const FLAG_SEASONAL_FILL: u8 = 16;
/// The input `value` (causal cleaning) was imputed at this hour; the other flags describe the
/// hindsight cleaning of `target`.
pub const FLAG_INPUT_IMPUTED: u8 = 32;
/// The flags that mean the stored value was not a usable observation.
pub const FLAGS_IMPUTED: u8 = FLAG_MISSING | FLAG_OUT_OF_BOUNDS | FLAG_OUTLIER;
/// Every flag with its name, for summaries.
pub const FLAG_NAMES: [(u8, &str); 6] = [
    (FLAG_MISSING, "missing"),
    (FLAG_OUT_OF_BOUNDS, "out_of_bounds"),
    (FLAG_OUTLIER, "outlier"),
    (FLAG_INTERPOLATED, "interpolated"),
    (FLAG_SEASONAL_FILL, "seasonal_fill"),
    (FLAG_INPUT_IMPUTED, "input_imputed"),
];

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("cannot read the store")]
    Ingest(#[from] IngestError),
    #[error("polars failed: {0}")]
    Polars(String),
    #[error("{0}")]
    Data(String),
    #[error("no data for series {series} in the store")]
    MissingSeries { series: String },
    #[error("series {series} has no rows{within}")]
    Empty { series: String, within: String },
    #[error("no column `{0}` in the feature table")]
    UnknownColumn(String),
    #[error("scaler: {0}")]
    Scaler(String),
    #[error("split: {0}")]
    Split(String),
    #[error("windows: {0}")]
    Window(String),
    #[error("cannot write the feature table to `{path}`: {message}")]
    Write { path: PathBuf, message: String },
}

impl From<PolarsError> for FeatureError {
    fn from(error: PolarsError) -> Self {
        FeatureError::Polars(error.to_string())
    }
}

/// Cleaning settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FeatureConfig {
    /// Gaps up to this many hours are linearly interpolated; longer ones are filled seasonally.
    pub max_interpolate_hours: usize,
    /// Centered rolling window (hours) of the robust outlier test's median and MAD.
    pub outlier_window: usize,
    /// Robust z (|x − median| / (1.4826 MAD)) above which a value is an outlier.
    pub outlier_threshold: f64,
    /// Physical upper bound (MW) of load kinds; values outside [0, bound] are discarded.
    pub upper_bound_mw: f64,
    /// Exogenous columns known only up to the forecast origin (an extra input that is an
    /// actual, e.g. `net_actual` from `--input caiso:CA ISO-TAC:NET_ACTUAL`): observed columns,
    /// never seen at horizon positions. Every other exogenous column is known ahead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observed_inputs: Vec<String>,
    /// Extra input columns known ahead for every hour (a forecast the operator publishes, or a
    /// series given with `--known-input`, such as a workday flag): `forecast` reads their
    /// stored values for the horizon. Bookkeeping only: the table treats them as any known
    /// column.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub known_inputs: Vec<String>,
    /// Are the day-of-year columns (`doy_sin`, `doy_cos`) inputs of the model? True where a
    /// saved model predates the field (they always were). See [`day_of_year_learnable`].
    #[serde(default = "yes")]
    pub day_of_year: bool,
}

fn yes() -> bool {
    true
}

/// The day-of-year columns, inputs only where [`FeatureConfig::day_of_year`] says so.
pub const DAY_OF_YEAR_COLUMNS: [&str; 2] = [COL_DOY_SIN, COL_DOY_COS];
/// Training rows (hours) from which the day of the year is an input by default: one whole year.
pub const DAY_OF_YEAR_MIN_TRAIN_HOURS: usize = 365 * 24;

/// Can a model learn anything general from the day of the year with `train_hours` hours of
/// training data? Only when they cover a whole year. With less, the test and forecast days fall
/// on days of the year the model never trained on, and what it makes of their `doy` values is
/// an extrapolation that depends on the random initial weights: on Victoria 2014 (nine months
/// of training, October–December scored) the day of the year put the model's day-ahead MAPE
/// anywhere between 7.3 % and 12.9 % over three seeds, against 4.9–5.5 % without it (README,
/// "Forecast quality"). The seasonal level still reaches the model through the issue-time
/// naives and the weather.
pub fn day_of_year_learnable(train_hours: usize) -> bool {
    train_hours >= DAY_OF_YEAR_MIN_TRAIN_HOURS
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            max_interpolate_hours: 6,
            outlier_window: 169,
            outlier_threshold: 6.0,
            upper_bound_mw: 1.0e6,
            observed_inputs: Vec::new(),
            known_inputs: Vec::new(),
            day_of_year: true,
        }
    }
}

/// The feature table of one load series.
#[derive(Debug, Clone)]
pub struct FeatureTable {
    pub region: String,
    pub zone: chrono_tz::Tz,
    /// Every column, one row per hour of the complete grid. `flags` is Int8 (this build of
    /// polars has no UInt8; every flag combination is below 32).
    pub frame: DataFrame,
    /// µs, interval end, complete hourly grid.
    pub timestamps: Vec<i64>,
    /// Stored value (None where no row or null).
    pub raw: Vec<Option<f64>>,
    /// Load cleaned with hindsight and imputed, MW (NaN only where it could not be imputed):
    /// the `target` column.
    pub target: Vec<f32>,
    pub flags: Vec<u8>,
    /// Columns known in advance for any hour (calendar, holiday, exogenous such as
    /// temperature): usable at horizon positions.
    pub known_columns: Vec<String>,
    /// Columns known only up to the forecast origin (value, lags, rolling stats, observed
    /// inputs: [`FeatureConfig::observed_inputs`]).
    pub observed_columns: Vec<String>,
    /// As-issued forecasts of known columns ([`Issued`]): not inputs of their own, they stand
    /// in for their base column at horizon positions (see [`windows`]).
    pub issued: Vec<Issued>,
}

/// An as-issued forecast column: `column` (e.g. `temp_d1`, from the stored kind `TEMP_D1`)
/// holds, for each hour, the value of `base` (`temp`) forecast `days` days before that hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub base: String,
    pub days: usize,
    pub column: String,
}

/// The base column and lead in days of an as-issued column name `{base}_d{days}` whose base
/// is among `known` (e.g. `temp_d2` → (`temp`, 2)).
pub fn issued_of(column: &str, known: &[String]) -> Option<(String, usize)> {
    let kind = column.to_uppercase();
    let (base, days) = crate::ingest::parse_issued_kind(&kind)?;
    let base = base.to_lowercase();
    known.contains(&base).then_some((base, days))
}

impl FeatureTable {
    /// A column as f32, NaN for null.
    pub fn column(&self, name: &str) -> Result<Vec<f32>, FeatureError> {
        let column = self.frame.column(name).map_err(|_| FeatureError::UnknownColumn(name.to_string()))?;
        let column = column.cast(&DataType::Float64)?;
        Ok(column.f64()?.iter().map(|v| v.map_or(f32::NAN, |x| x as f32)).collect())
    }

    /// Take the day-of-year columns out of the model's inputs (they stay in the frame), as
    /// [`build`] does for a [`FeatureConfig`] whose `day_of_year` is false.
    pub fn drop_day_of_year(&mut self) {
        self.known_columns.retain(|c| !DAY_OF_YEAR_COLUMNS.contains(&c.as_str()));
    }

    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Rows whose flags contain `flag`.
    pub fn count_flag(&self, flag: u8) -> usize {
        self.flags.iter().filter(|f| **f & flag != 0).count()
    }

    /// Write the table as Parquet (zstd level 3, column statistics). The file appears whole
    /// or not at all ([`crate::ingest::store::write_atomic_with`]).
    pub fn write_parquet(&self, path: &Path) -> Result<(), FeatureError> {
        crate::ingest::store::write_atomic_with(path, |temp| {
            let file = std::fs::OpenOptions::new().write(true).open(temp)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            write_table(&self.frame, &mut out).map_err(std::io::Error::other)?;
            std::io::Write::flush(&mut out)
        })
        .map_err(|e| {
            let cause = std::error::Error::source(&e).map(|cause| format!(": {cause}")).unwrap_or_default();
            FeatureError::Write { path: path.to_owned(), message: format!("{e}{cause}") }
        })
    }
}

/// Stored rows of one series: sorted interval-end timestamps (µs) and values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    pub timestamps: Vec<i64>,
    pub values: Vec<Option<f64>>,
}

/// Build the table of one load series (`load`, e.g. (synthetic, SYN1, D)) with exogenous
/// series joined by timestamp (e.g. (synthetic, SYN1, TEMP); a missing exogenous series is an
/// error naming it). `range` limits the rows; the grid runs over `range`, or, if the data
/// covers less, from the series' first to last stored hour within it.
pub fn build(
    store: &Store,
    load: &SeriesId,
    exogenous: &[SeriesId],
    range: Option<DateRange>,
    config: &FeatureConfig,
) -> Result<FeatureTable, FeatureError> {
    let started = std::time::Instant::now();
    // the load and its exogenous series are read side by side; the exogenous rows are then
    // limited to the load's grid
    let (rows, exogenous_rows) = rayon::join(
        || read_rows(store, load, range),
        || exogenous.iter().map(|id| Ok((id, read_rows(store, id, range)?))).collect::<Result<Vec<_>, FeatureError>>(),
    );
    let (rows, exogenous_rows) = (rows?, exogenous_rows?);
    let (Some(&first), Some(&last)) = (rows.timestamps.first(), rows.timestamps.last()) else {
        return Err(FeatureError::Empty { series: load.to_string(), within: within(range) });
    };
    let grid_range = DateRange { start: from_us(first - HOUR_US), end: from_us(last) };
    let mut exogenous_columns = Vec::with_capacity(exogenous.len());
    for (id, rows) in exogenous_rows {
        let (timestamps, values) = rows
            .timestamps
            .iter()
            .zip(&rows.values)
            .filter(|(t, _)| grid_range.holds_us(**t))
            .map(|(t, v)| (*t, *v))
            .unzip();
        let rows = Rows { timestamps, values };
        if rows.values.iter().all(Option::is_none) {
            // an as-issued forecast may hold nothing in the range (years before forecasts were
            // kept): then its base column stands in for it, and the windows say so
            if crate::ingest::parse_issued_kind(&id.kind).is_some() {
                continue;
            }
            return Err(FeatureError::Empty { series: id.to_string(), within: within(Some(grid_range)) });
        }
        exogenous_columns.push((id.kind.to_lowercase(), rows));
    }
    tracing::debug!(ms = ms(started), rows = rows.timestamps.len(), "features: store read");
    from_rows(&load.region, &load.kind, &rows, &exogenous_columns, config)
}

/// Milliseconds since `started`, for the stage timings logged at debug level (`-vv`).
fn ms(started: std::time::Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e5).round() / 100.0
}

fn within(range: Option<DateRange>) -> String {
    range.map_or(String::new(), |r| format!(" in {r}"))
}

/// Read one series from the store (sorted).
fn read_rows(store: &Store, id: &SeriesId, range: Option<DateRange>) -> Result<Rows, FeatureError> {
    if !store.series_dir(id).is_dir() {
        return Err(FeatureError::MissingSeries { series: id.to_string() });
    }
    let rows = store.read(id, range)?;
    Ok(Rows { timestamps: rows.timestamps, values: rows.values })
}

/// The table from stored rows of the load series (kind `kind`) and exogenous series named by
/// their (lower-case) column: grid from the load's first to last row.
pub(crate) fn from_rows(
    region: &str,
    kind: &str,
    load: &Rows,
    exogenous: &[(String, Rows)],
    config: &FeatureConfig,
) -> Result<FeatureTable, FeatureError> {
    let (Some(&first), Some(&last)) = (load.timestamps.first(), load.timestamps.last()) else {
        return Err(FeatureError::Empty { series: format!("{region}:{kind}"), within: String::new() });
    };
    let started = std::time::Instant::now();
    let grid = clean::hourly_grid(first, last);
    let raw = clean::reindex(load, &grid)?;
    let bounds = clean::is_load_kind(kind).then_some((0.0, config.upper_bound_mw));
    let zone = region_zone(region);
    // the two cleanings of the load, those of the exogenous series (inputs: cleaned causally)
    // and the calendar are independent
    let (((cleaned, input), exogenous_cleaned), calendar) = rayon::join(
        || {
            rayon::join(
                || rayon::join(|| clean::clean(&raw, bounds, config), || clean::clean_causal(&raw, bounds, config)),
                || {
                    exogenous
                        .iter()
                        .map(|(name, rows)| {
                            let raw = clean::reindex(rows, &grid)?;
                            Ok((name.clone(), clean::clean_causal(&raw, None, config)?.value))
                        })
                        .collect::<Result<Vec<(String, Vec<f64>)>, FeatureError>>()
                },
            )
        },
        || calendar::calendar_columns(&grid, zone, crate::region::holidays(region)),
    );
    let (cleaned, input, exogenous_columns, calendar) = (cleaned?, input?, exogenous_cleaned?, calendar?);
    tracing::debug!(ms = ms(started), "features: cleaned and calendar");
    let flags: Vec<u8> = cleaned
        .flags
        .iter()
        .zip(&input.flags)
        .map(|(hindsight, causal)| hindsight | if causal & FLAGS_IMPUTED != 0 { FLAG_INPUT_IMPUTED } else { 0 })
        .collect();

    // every column is computed here; polars only holds them (no query plan to run)
    let height = grid.len();
    let timestamp = Series::new(COL_TIMESTAMP.into(), grid.clone())
        .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))?;
    let value_raw = raw.iter().map(|v| v.unwrap_or(0.0)).collect();
    let flag_column: Vec<i8> = flags.iter().map(|f| *f as i8).collect();
    let mut columns: Vec<Column> = vec![
        timestamp.into(),
        float_column(COL_VALUE_RAW, value_raw, raw.iter().map(Option::is_some).collect()),
        finite_column(COL_VALUE, input.value.clone()),
        finite_column(COL_TARGET, cleaned.value.clone()),
        Series::new(COL_FLAGS.into(), flag_column).into(),
    ];
    // the rolling statistics of the two windows and the other columns side by side
    let (rolling, others) = rayon::join(
        || {
            let [short, long] = lags::ROLLING_WINDOWS;
            let (short, long) =
                rayon::join(|| lags::rolling(&input.value, short), || lags::rolling(&input.value, long));
            ROLLING_COLUMNS
                .iter()
                .zip(short.into_iter().chain(long))
                .map(|(name, values)| finite_column(name, values))
                .collect::<Vec<_>>()
        },
        || {
            let mut others: Vec<Column> =
                CALENDAR_COLUMNS.iter().zip(calendar).map(|(name, values)| finite_column(name, values)).collect();
            for (hours, name) in LAG_HOURS.iter().zip(LAG_COLUMNS) {
                others.push(finite_column(name, lags::lag(&input.value, *hours)));
            }
            others
        },
    );
    columns.extend(others);
    columns.extend(rolling);
    let exogenous_names: Vec<String> = exogenous_columns.iter().map(|(name, _)| name.clone()).collect();
    for (name, values) in exogenous_columns {
        if columns.iter().any(|column| column.name().as_str() == name) {
            return Err(FeatureError::Data(format!(
                "two columns of the feature table would be named `{name}`: an exogenous series' kind names a column already there (give inputs of different kinds)"
            )));
        }
        columns.push(finite_column(&name, values));
    }
    let frame = DataFrame::new(height, columns)?;
    tracing::debug!(ms = ms(started), "features: table");

    let mut known_columns: Vec<String> = CALENDAR_COLUMNS
        .iter()
        .filter(|c| config.day_of_year || !DAY_OF_YEAR_COLUMNS.contains(c))
        .map(|c| c.to_string())
        .collect();
    let mut observed_columns = vec![COL_VALUE.to_string()];
    observed_columns.extend(LAG_COLUMNS.iter().map(|c| c.to_string()));
    observed_columns.extend(ROLLING_COLUMNS.iter().map(|c| c.to_string()));
    let mut issued = Vec::new();
    for name in &exogenous_names {
        if config.observed_inputs.contains(name) {
            observed_columns.push(name.clone());
            continue;
        }
        match issued_of(name, &exogenous_names) {
            Some((base, days)) => issued.push(Issued { base, days, column: name.clone() }),
            None => known_columns.push(name.clone()),
        }
    }

    Ok(FeatureTable {
        region: region.to_string(),
        zone,
        frame,
        timestamps: grid,
        raw,
        target: cleaned.value.iter().map(|v| *v as f32).collect(),
        flags,
        known_columns,
        observed_columns,
        issued,
    })
}

/// Write `frame` as one Parquet row group, zstd level 3, with polars' column statistics and
/// encodings (dictionary where it pays). polars' own writer encodes columns in parallel but
/// compresses them one after another on the writing thread; here each column is encoded *and*
/// compressed on a rayon worker, and the finished pages are written in column order.
fn write_table(frame: &DataFrame, out: &mut impl std::io::Write) -> PolarsResult<()> {
    use polars_parquet::write::{
        CompressedPage, CompressionOptions, Version, WriteOptions, array_to_columns, compress,
    };
    use rayon::prelude::*;
    const ZSTD_LEVEL: i32 = 3;
    let options = WriteOptions {
        statistics: StatisticsOptions::default(),
        version: Version::V1,
        compression: CompressionOptions::Zstd(Some(polars_parquet::write::ZstdLevel::try_new(ZSTD_LEVEL)?)),
        data_page_size: None,
    };
    let mut writer = ParquetWriter::new(out)
        .with_compression(ParquetCompression::Zstd(Some(ZstdLevel::try_new(ZSTD_LEVEL)?)))
        .with_statistics(options.statistics)
        .batched(frame.schema())?;
    let encodings = polars::io::parquet::write::get_encodings(&frame.schema().to_arrow(CompatLevel::newest()));
    let fields = writer.parquet_schema().fields().to_vec();
    for batch in frame.iter_chunks(CompatLevel::newest(), false) {
        // one column chunk per leaf (a flat column has one), in schema order
        let fields: Vec<Vec<Vec<CompressedPage>>> = batch
            .columns()
            .par_iter()
            .zip(&fields)
            .zip(encodings.as_ref())
            .map(|((array, field), encoding)| {
                array_to_columns(array, field.clone(), options, encoding)?
                    .into_iter()
                    .map(|leaf| leaf.map(|page| Ok(compress(page?, Vec::new(), options.compression)?)).collect())
                    .collect()
            })
            .collect::<PolarsResult<_>>()?;
        let chunks: Vec<Vec<CompressedPage>> = fields.into_iter().flatten().collect();
        writer.write_row_group(batch.len() as u64, &chunks)?;
    }
    writer.finish()?;
    Ok(())
}

/// A Float64 column of `values`, null where `valid` is unset (no bitmap when none is). The
/// values are moved in; the validity is one bitmap, not a builder call per value.
fn float_column(name: &str, values: Vec<f64>, valid: polars_arrow::bitmap::Bitmap) -> Column {
    let valid = (valid.unset_bits() > 0).then_some(valid);
    Float64Chunked::from_vec_validity(name.into(), values, valid).into_series().into()
}

/// A Float64 column of `values`, null where a value is not finite (NaN marks "no value"). A
/// column without such values (a counting pass the compiler vectorises) skips the bitmap.
fn finite_column(name: &str, values: Vec<f64>) -> Column {
    if values.iter().filter(|v| !v.is_finite()).count() == 0 {
        return Float64Chunked::from_vec(name.into(), values).into_series().into();
    }
    let valid = values.iter().map(|v| v.is_finite()).collect();
    float_column(name, values, valid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::SyntheticConfig;
    use crate::ingest::{Source, SyntheticSource};
    use chrono::{TimeZone as _, Utc};

    /// Synthetic rows of one region over `days` days from 2024-01-01 (`defects` as given).
    pub(crate) fn synthetic(region: &str, days: i64, config: SyntheticConfig) -> (Rows, Rows) {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let range = DateRange::new(start, start + chrono::TimeDelta::days(days)).unwrap();
        let source = SyntheticSource::new(&[region.to_string()], config);
        let batch = futures::executor::block_on(source.fetch(range)).unwrap();
        let rows =
            |i: usize| Rows { timestamps: batch.series[i].timestamps.clone(), values: batch.series[i].values.clone() };
        (rows(0), rows(1))
    }

    /// A clean synthetic table (with temperature) of `days` days.
    pub(crate) fn synthetic_table(days: i64) -> FeatureTable {
        let (load, temp) = synthetic("SYN1", days, SyntheticConfig::default());
        from_rows("SYN1", "D", &load, &[("temp".into(), temp)], &FeatureConfig::default()).unwrap()
    }

    /// Every input at row t (observed and known columns) is computable from data ≤ t: perturbing
    /// the future (other values, removed rows, spikes, out-of-bounds values, in the load and the
    /// temperature) leaves every input at rows ≤ t bit-identical, and the windows whose origin is
    /// ≤ t too. The hindsight `target` does change (the test can see a dependence on the future).
    #[test]
    fn perturbing_the_future_changes_no_input_up_to_t() {
        let defects = SyntheticConfig { missing_rate: 0.02, spike_rate: 0.005, dst_gap: true, ..Default::default() };
        let (mut load, temp) = synthetic("SYN3", 90, defects);
        let (clean, _) = synthetic("SYN3", 90, SyntheticConfig::default());
        // on the complete grid (the DST gap removed rows), so row k is hour k
        let grid = clean::hourly_grid(clean.timestamps[0], *clean.timestamps.last().unwrap());
        load = Rows { values: clean::reindex(&load, &grid).unwrap(), timestamps: grid };
        let n = load.timestamps.len();
        let base = |load: &Rows, temp: &Rows| {
            from_rows("SYN3", "D", load, &[("temp".into(), temp.clone())], &FeatureConfig::default()).unwrap()
        };
        for t in [24 * 30 + 5, 24 * 47 + 13, 24 * 70 + 23] {
            // a one-hour gap at t between good hours: the hindsight cleaning interpolates it
            // towards t + 1
            load.values[t] = None;
            load.values[t - 1] = clean.values[t - 1];
            load.values[t + 1] = clean.values[t + 1];
            let before = base(&load, &temp);
            let (mut future_load, mut future_temp) = (load.clone(), temp.clone());
            for (k, v) in future_load.values.iter_mut().enumerate().skip(t + 1) {
                *v = match k % 11 {
                    _ if k == t + 1 => v.map(|x| 1.03 * x),
                    0 => None,
                    3 => Some(2.1e9),
                    5 => v.map(|x| 4.0 * x),
                    _ => v.map(|x| 0.7 * x + 1000.0),
                };
            }
            for v in future_temp.values.iter_mut().skip(t + 1) {
                *v = v.map(|x| -x - 40.0);
            }
            // rows removed after t (the last one kept, so the grid is the same)
            let keep: Vec<usize> = (0..n).filter(|k| *k <= t + 1 || k % 7 != 0 || *k == n - 1).collect();
            future_load.timestamps = keep.iter().map(|&k| load.timestamps[k]).collect();
            future_load.values = keep.iter().map(|&k| future_load.values[k]).collect();
            let after = base(&future_load, &future_temp);
            assert_eq!(after.len(), before.len());
            let inputs: Vec<&String> = before.observed_columns.iter().chain(&before.known_columns).collect();
            assert!(inputs.len() >= 20, "{inputs:?}");
            for name in inputs.iter().copied().chain([&COL_VALUE_RAW.to_string()]) {
                let (a, b) = (before.column(name).unwrap(), after.column(name).unwrap());
                for row in 0..=t {
                    assert_eq!(a[row].to_bits(), b[row].to_bits(), "{name} at row {row} (t = {t}) sees the future");
                }
                assert!(
                    (t + 1..n).any(|row| a[row].to_bits() != b[row].to_bits())
                        || CALENDAR_COLUMNS.contains(&name.as_str()),
                    "{name} never changed"
                );
            }
            let flags =
                |table: &FeatureTable| table.flags[..=t].iter().map(|f| f & FLAG_INPUT_IMPUTED).collect::<Vec<_>>();
            assert_eq!(flags(&before), flags(&after));
            assert_ne!(before.target[t], after.target[t], "the hindsight target looks ahead");
            assert!(before.flags[t] & FLAG_INPUT_IMPUTED != 0 && before.column(COL_VALUE).unwrap()[t].is_finite());
            // the window with origin t: identical inputs at its context positions (horizon
            // positions carry the known-future temperature, which was perturbed on purpose)
            let scaler = Scaler::fit_table(&before, 0..24 * 28).unwrap();
            let spec = WindowSpec { context: 168, horizon: 24, stride: 1, protocol: Protocol::Next24h };
            let context = |table: &FeatureTable| {
                let w = window_at(table, &scaler, &spec, t).unwrap();
                w.inputs[..spec.context * w.n_features].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(context(&before), context(&after), "window at origin {t}");
        }
    }

    /// An extra input that is an actual (`net_actual`, an observed input) is a column of the
    /// table and the windows but never seen at horizon positions: perturbing it after the origin
    /// leaves the window at that origin bit-identical. A known-ahead input (`net_dam`) is seen
    /// there: its perturbation changes the horizon positions only.
    #[test]
    fn an_observed_input_is_never_seen_at_horizon_positions() {
        let (load, series) = synthetic("SYN1", 60, SyntheticConfig::default());
        let config = FeatureConfig { observed_inputs: vec!["net_actual".into()], ..FeatureConfig::default() };
        let table = |actual: &Rows, ahead: &Rows| {
            let inputs = [("net_actual".to_string(), actual.clone()), ("net_dam".to_string(), ahead.clone())];
            from_rows("SYN1", "D", &load, &inputs, &config).unwrap()
        };
        let t = 24 * 40 + 10;
        let perturbed = Rows {
            timestamps: series.timestamps.clone(),
            values: series
                .values
                .iter()
                .enumerate()
                .map(|(k, v)| if k > t { v.map(|x| -3.0 * x - 100.0) } else { *v })
                .collect(),
        };
        let before = table(&series, &series);
        assert!(before.observed_columns.contains(&"net_actual".to_string()), "{:?}", before.observed_columns);
        assert!(before.known_columns.contains(&"net_dam".to_string()), "{:?}", before.known_columns);
        assert!(!before.known_columns.contains(&"net_actual".to_string()));
        let scaler = Scaler::fit_table(&before, 0..24 * 28).unwrap();
        let spec = WindowSpec { context: 168, horizon: 24, stride: 1, protocol: Protocol::Next24h };
        let window = |table: &FeatureTable| window_at(table, &scaler, &spec, t).unwrap();
        let reference = window(&before);
        let n = reference.n_features;
        let index = |name: &str| reference.feature_names.iter().position(|f| f == name).unwrap();
        let (actual, ahead) = (index("net_actual"), index("net_dam"));
        // the actual perturbed after t: the column changed there, the window did not
        let after = table(&perturbed, &series);
        assert_ne!(before.column("net_actual").unwrap()[t + 1], after.column("net_actual").unwrap()[t + 1]);
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&window(&after).inputs), bits(&reference.inputs), "the observed input leaks into the horizon");
        assert!(reference.inputs.chunks(n).take(spec.context).any(|row| row[actual] != 0.0), "the input is used");
        // the forecast perturbed after t: seen at horizon positions, not before
        let seen = window(&table(&series, &perturbed));
        let positions = reference.inputs.len() / n;
        for p in 0..spec.context {
            assert_eq!(reference.inputs[p * n + ahead].to_bits(), seen.inputs[p * n + ahead].to_bits(), "position {p}");
        }
        assert!((spec.context..positions).any(|p| reference.inputs[p * n + ahead] != seen.inputs[p * n + ahead]));
    }

    /// Without the day of the year (`day_of_year` false, or a table that dropped it) the windows
    /// hold every other feature and not `doy_*`; the frame keeps the columns. A model saved
    /// before the setting existed had them: its config reads as true. Less than a year of
    /// training hours leaves them out by default, a whole year keeps them.
    #[test]
    fn the_day_of_year_is_an_input_only_when_asked() {
        let (load, series) = synthetic("SYN1", 40, SyntheticConfig::default());
        let inputs = [("temp".to_string(), series.clone())];
        let build = |config: &FeatureConfig| from_rows("SYN1", "D", &load, &inputs, config).unwrap();
        let with = build(&FeatureConfig::default());
        let without = build(&FeatureConfig { day_of_year: false, ..FeatureConfig::default() });
        let mut dropped = with.clone();
        dropped.drop_day_of_year();
        assert_eq!(dropped.known_columns, without.known_columns);
        assert!(with.known_columns.contains(&COL_DOY_SIN.to_string()));
        assert!(without.known_columns.iter().all(|c| !DAY_OF_YEAR_COLUMNS.contains(&c.as_str())));
        assert_eq!(with.known_columns.len(), without.known_columns.len() + 2);
        assert!(without.column(COL_DOY_COS).is_ok(), "the frame keeps the column");
        let scaler = Scaler::fit_table(&without, 0..24 * 20).unwrap();
        let spec = WindowSpec { context: 168, horizon: 24, stride: 24, protocol: Protocol::Next24h };
        let windows = make_windows(&without, &scaler, &spec, 0..without.len()).unwrap();
        assert!(windows.count > 0);
        assert!(!windows.feature_names.iter().any(|f| f.starts_with("doy")), "{:?}", windows.feature_names);
        assert!(windows.feature_names.iter().any(|f| f == COL_HOUR_SIN));

        let mut saved = serde_json::to_value(FeatureConfig { day_of_year: false, ..FeatureConfig::default() }).unwrap();
        assert_eq!(saved["day_of_year"], false);
        saved.as_object_mut().unwrap().remove("day_of_year");
        assert!(serde_json::from_value::<FeatureConfig>(saved).unwrap().day_of_year);
        assert!(!day_of_year_learnable(364 * 24) && day_of_year_learnable(365 * 24));
        use crate::config::DayOfYear;
        assert!(!DayOfYear::Auto.wanted(200 * 24) && DayOfYear::Auto.wanted(400 * 24));
        assert!(DayOfYear::On.wanted(10) && !DayOfYear::Off.wanted(10 * 365 * 24));
    }

    #[test]
    fn table_has_every_column_and_hour() {
        let table = synthetic_table(30);
        assert_eq!(table.len(), 30 * 24);
        assert_eq!(table.frame.height(), table.len());
        for name in table.known_columns.iter().chain(&table.observed_columns) {
            assert_eq!(table.column(name).unwrap().len(), table.len(), "{name}");
        }
        assert!(table.known_columns.contains(&"temp".to_string()));
        assert!(matches!(table.column("nope"), Err(FeatureError::UnknownColumn(_))));
        assert!(table.flags.iter().all(|f| *f == 0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.parquet");
        table.write_parquet(&path).unwrap();
        let back = ParquetReader::new(std::fs::File::open(&path).unwrap()).finish().unwrap();
        assert!(back.equals_missing(&table.frame));
        // column statistics are written for every column
        let metadata = polars_parquet::read::read_metadata(&mut std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(metadata.row_groups.len(), 1);
        assert_eq!(metadata.row_groups[0].parquet_columns().len(), table.frame.width());
        for column in metadata.row_groups[0].parquet_columns() {
            let statistics = column.statistics(&metadata.footer_buf).expect("statistics written").unwrap();
            let name = &column.descriptor().path_in_schema[0];
            let nulls = table.frame.column(name).unwrap().null_count() as i64;
            assert_eq!(statistics.null_count(), Some(nulls), "{name}");
        }
        // rewriting replaces the file whole; a failed write leaves nothing behind
        std::fs::write(&path, b"old").unwrap();
        table.write_parquet(&path).unwrap();
        assert!(ParquetReader::new(std::fs::File::open(&path).unwrap()).finish().unwrap().equals_missing(&table.frame));
        let missing = dir.path().join("no-such-folder").join("table.parquet");
        assert!(matches!(table.write_parquet(&missing), Err(FeatureError::Write { .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only table.parquet");
    }
}
