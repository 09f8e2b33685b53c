//! One partition file: rows encoded as an LZ4 Parquet file (`timestamp` as UTC microseconds,
//! `value` as f64) and decoded back on the calling thread, with polars' reader panics on
//! damaged files turned into errors ([`guard_reader`]).
use super::Store;
use super::atomic::create_new;
use crate::ingest::{COL_TIMESTAMP, COL_VALUE, IngestError, SeriesId, SeriesRows};
use crate::time::DateRange;
use polars::prelude::*;
use std::fs::{self, File};
use std::path::Path;

thread_local! {
    /// Set while [`guard_reader`] runs on this thread: the panic it catches is not printed.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How many [`guard_reader`] calls are running: panics of polars' own threads meanwhile are
/// theirs, and come back to them.
static ACTIVE_GUARDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Run a reader over bytes that may be corrupt, turning its panic into an error message:
/// polars' Parquet reader panics on some damaged files (a flipped byte in the footer) instead
/// of failing. The panic is not printed (on the calling thread and polars' worker threads).
pub(crate) fn guard_reader<T>(read: impl FnOnce() -> T) -> Result<T, String> {
    use std::sync::atomic::Ordering;
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let polars_worker = ACTIVE_GUARDS.load(Ordering::SeqCst) > 0
                && std::thread::current().name().is_some_and(|name| name.starts_with("polars"));
            if !QUIET_PANICS.with(std::cell::Cell::get) && !polars_worker {
                previous(info);
            }
        }));
    });
    let was_quiet = QUIET_PANICS.with(|quiet| quiet.replace(true));
    ACTIVE_GUARDS.fetch_add(1, Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    ACTIVE_GUARDS.fetch_sub(1, Ordering::SeqCst);
    QUIET_PANICS.with(|quiet| quiet.set(was_quiet));
    result.map_err(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("the file is corrupt (the reader failed: {})", why.lines().next().unwrap_or(""))
    })
}

/// Write rows as an LZ4 Parquet file at `path` (folders created; the caller flushes it). LZ4
/// rather than zstd: a month file is read far more often than written, and LZ4 decodes it
/// 2.5 × faster (a zstd decoder context per column chunk dominates these small files) for
/// files about a quarter larger. Files written by earlier versions (zstd) read the same.
pub(super) fn write_parquet(path: &Path, rows: &SeriesRows) -> Result<(), IngestError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(Store::io(dir))?;
    let mut df =
        frame_from_rows(rows).map_err(|e| IngestError::StoreData { path: path.to_owned(), message: e.to_string() })?;
    let file = create_new(path)?;
    // One buffered stream and no thread hand-off: a partition (a month of one series) is small,
    // and unbuffered writes and pool wake-ups cost more than the encoding itself.
    let mut out = std::io::BufWriter::with_capacity(256 << 10, &file);
    ParquetWriter::new(&mut out)
        .with_compression(ParquetCompression::Lz4Raw)
        .with_statistics(StatisticsOptions::default())
        .set_parallel(false)
        .finish(&mut df)
        .map_err(|e| IngestError::StoreData { path: path.to_owned(), message: e.to_string() })?;
    std::io::Write::flush(&mut out).map_err(Store::io(path))?;
    drop(out);
    drop(file);
    Ok(())
}

/// Read one store file: its bytes in one read (into `bytes`, reused), then decoded from
/// memory on this thread (a month file is small; the reader's many small reads and its thread
/// pool cost more).
pub(super) fn read_frame(path: &Path, bytes: &mut Vec<u8>) -> Result<DataFrame, IngestError> {
    bytes.clear();
    File::open(path).and_then(|mut file| std::io::Read::read_to_end(&mut file, bytes)).map_err(Store::io(path))?;
    guard_reader(|| {
        ParquetReader::new(std::io::Cursor::new(bytes.as_slice())).read_parallel(ParallelStrategy::None).finish()
    })
    .map_err(|message| IngestError::StoreData { path: path.to_owned(), message })?
    .map_err(|e| IngestError::StoreData { path: path.to_owned(), message: e.to_string() })
}

pub(super) fn read_parquet(path: &Path, id: &SeriesId) -> Result<SeriesRows, IngestError> {
    let frame = read_frame(path, &mut Vec::new())?;
    let mut rows = SeriesRows::new(id.clone());
    append_rows(&frame, &mut rows, None)
        .map_err(|message| IngestError::StoreData { path: path.to_owned(), message })?;
    Ok(rows)
}

/// A (`timestamp` Datetime(µs, UTC), `value` f64) frame of the rows.
pub fn frame_from_rows(rows: &SeriesRows) -> PolarsResult<DataFrame> {
    let ts = Series::new(COL_TIMESTAMP.into(), &rows.timestamps)
        .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))?;
    let values = Series::new(COL_VALUE.into(), &rows.values);
    DataFrame::new(rows.len(), vec![ts.into(), values.into()])
}

/// Append the rows of a frame with `timestamp` (any datetime unit) and `value` columns to
/// `out`, those in `range` if given.
pub(super) fn append_rows(df: &DataFrame, out: &mut SeriesRows, range: Option<DateRange>) -> Result<(), String> {
    let ts = df
        .column(COL_TIMESTAMP)
        .map_err(|e| e.to_string())?
        .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))
        .and_then(|c| c.cast(&DataType::Int64))
        .map_err(|e| e.to_string())?;
    let values =
        df.column(COL_VALUE).map_err(|e| e.to_string())?.cast(&DataType::Float64).map_err(|e| e.to_string())?;
    let ts = ts.i64().map_err(|e| e.to_string())?;
    let values = values.f64().map_err(|e| e.to_string())?;
    if ts.null_count() > 0 {
        return Err("null timestamp in store".into());
    }
    let keep = |t: i64| range.is_none_or(|r| r.holds_us(t));
    match (ts.cont_slice(), values.cont_slice()) {
        // one contiguous slice each (a month file's usual shape), all in range: copied whole
        (Ok(t), Ok(v)) if range.is_none() || t.iter().all(|&x| keep(x)) => {
            out.timestamps.extend_from_slice(t);
            out.values.extend(v.iter().map(|x| Some(*x)));
        }
        _ => {
            for (t, v) in ts.iter().zip(values.iter()) {
                let t = t.expect("no nulls");
                if keep(t) {
                    out.timestamps.push(t);
                    out.values.push(v);
                }
            }
        }
    }
    Ok(())
}

/// What one file holds, as its footer says: rows, first and last timestamp (µs), null values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct FileSummary {
    pub rows: usize,
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub nulls: usize,
}

impl FileSummary {
    fn add(&mut self, other: FileSummary) {
        self.rows += other.rows;
        self.first = self.first.into_iter().chain(other.first).min();
        self.last = self.last.into_iter().chain(other.last).max();
        self.nulls += other.nulls;
    }

    /// The summary of rows read whole.
    fn of_rows(rows: &SeriesRows) -> Self {
        FileSummary {
            rows: rows.len(),
            first: rows.timestamps.iter().min().copied(),
            last: rows.timestamps.iter().max().copied(),
            nulls: rows.values.iter().filter(|v| v.is_none()).count(),
        }
    }

    /// The sum of summaries.
    pub fn total(summaries: impl IntoIterator<Item = FileSummary>) -> Self {
        let mut total = FileSummary::default();
        for summary in summaries {
            total.add(summary);
        }
        total
    }
}

/// Summarise one store file from its footer alone (row counts and the statistics every file
/// of this program carries: `timestamp` min and max in µs, `value` null count), without
/// decoding a page. A file whose footer lacks them (another writer, another time unit) is read
/// whole. A damaged file is an error naming it.
pub(super) fn read_summary(path: &Path, id: &SeriesId) -> Result<FileSummary, IngestError> {
    use polars_parquet::parquet::schema::types::{PrimitiveLogicalType, TimeUnit as ParquetTimeUnit};
    use polars_parquet::parquet::statistics::Statistics;
    let mut file = File::open(path).map_err(Store::io(path))?;
    let metadata = guard_reader(|| polars_parquet::read::read_metadata(&mut file))
        .map_err(|message| IngestError::StoreData { path: path.to_owned(), message })?
        .map_err(|e| IngestError::StoreData { path: path.to_owned(), message: e.to_string() })?;
    let from_footer = || -> Option<FileSummary> {
        let mut total = FileSummary::default();
        for group in &metadata.row_groups {
            let mut summary = FileSummary { rows: group.num_rows(), ..FileSummary::default() };
            let (mut timestamps, mut values) = (false, false);
            for column in group.parquet_columns() {
                let descriptor = column.descriptor();
                let name = descriptor.path_in_schema.first()?.as_str();
                if name != COL_TIMESTAMP && name != COL_VALUE {
                    continue;
                }
                let statistics = column.statistics(&metadata.footer_buf)?.ok()?;
                match (name, statistics) {
                    (COL_TIMESTAMP, Statistics::Int64(s)) => {
                        let micros = matches!(
                            descriptor.descriptor.primitive_type.logical_type,
                            Some(PrimitiveLogicalType::Timestamp { unit: ParquetTimeUnit::Microseconds, .. })
                        );
                        if !micros || s.null_count.unwrap_or(0) != 0 {
                            return None;
                        }
                        if summary.rows > 0 {
                            summary.first = Some(s.min_value?);
                            summary.last = Some(s.max_value?);
                        }
                        timestamps = true;
                    }
                    (COL_VALUE, Statistics::Double(s)) => {
                        summary.nulls = usize::try_from(s.null_count?).ok()?;
                        values = true;
                    }
                    _ => return None,
                }
            }
            if !(timestamps && values) {
                return None;
            }
            total.add(summary);
        }
        Some(total)
    };
    match from_footer() {
        Some(summary) => Ok(summary),
        None => Ok(FileSummary::of_rows(&read_parquet(path, id)?)),
    }
}
