//! The Parquet store: `{root}/source={s}/region={r}/kind={k}/year={yyyy}/month={mm}/part-0000.parquet`
//! (LZ4, columns `timestamp` as UTC microseconds and `value` as f64), readable by polars,
//! pyarrow and DuckDB as a hive-partitioned dataset, plus `{root}/_catalog/` holding the
//! completed-chunk ledger and the store lock.
//!
//! Writes are atomic: every partition a chunk touches is merged in memory (rows of the chunk's
//! range replace what was there, the rest is kept), written to a temporary file, flushed to
//! disk, and renamed over the old file; the ledger entry is written (the same way) only after
//! all partitions are in place. A crash leaves the old file or the new one, never a mix, and
//! a chunk missing from the ledger is simply collected again.
//!
//! # The lock
//! `_catalog/lock` is an exclusive file lock. Collections take it only around each write
//! ([`Store::write_lock`], which waits for another writer's write), never while fetching, so
//! several collections run on one store at once; [`Store::lock`] fails at once when it is
//! held, naming the holder's pid. Taking it with [`Store::lock`] or [`Store::tidy`] removes
//! the temporary files of a killed writer (a writer's temporary files only exist while it
//! holds the lock).
//!
//! # Isolation
//! Nothing the store reads or writes lies outside its root. Source, region and kind names are
//! checked ([`SeriesId::check`]) before they name a folder, and every path below the root is
//! refused ([`IngestError::StoreLink`]) when it, or a folder on the way to it, is a symbolic
//! link: the store follows no link (the root itself may be one). New files are created
//! exclusively (`O_EXCL`), so not even a link planted under a temporary file's name is followed.
//!
//! # Layout
//! - this file: the [`Store`] API (lock, chunk writes, reads, listing, status);
//! - `ledger`: the completed-chunk ledger, an append-only log `_catalog/ledger.jsonl`, and row checksums;
//! - `gaps`: gap ranges of a series from its files' footers (reading only files with a hole inside);
//! - `facets`: the facet lists `--region all` resolved, `_catalog/facets.json`;
//! - `regions`: the time zones regions' files were imported with, `_catalog/regions.json`;
//! - `parquet`: encoding and decoding one partition file;
//! - `layout`: partition folder names, months and walking the tree without following links;
//! - `atomic`: the program's one atomic file write ([`write_atomic`], [`write_atomic_with`]).
mod atomic;
mod facets;
mod gaps;
mod layout;
mod ledger;
mod parquet;
mod regions;

pub use atomic::{write_atomic, write_atomic_with};
pub use facets::FacetRecord;
pub use gaps::{Gap, SeriesGaps};
pub use ledger::{Ledger, LedgerEntry, LedgerIndex, LedgerWriter, checksum};
pub use parquet::frame_from_rows;
pub(crate) use parquet::guard_reader;
pub use regions::RegionRecord;

use super::{IngestError, SeriesId, SeriesRows};
use crate::time::{DateRange, from_us};
use atomic::{TEMP_MARK, temp_path};
use chrono::{DateTime, Utc};
use layout::{
    count_files, encode, holds_file_or_link, link_error, month_range, months_of, parquet_files, partition_month,
    refuse_links_below, subdirs,
};
use parquet::{FileSummary, append_rows, read_frame, read_parquet, read_summary, write_parquet};
use serde::Serialize;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const CATALOG: &str = "_catalog";
const LOCK_FILE: &str = "lock";
const PART_FILE: &str = "part-0000.parquet";
/// How long [`Store::write_lock`] waits for another writer before giving up.
pub const WRITE_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// A store root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Held while a process writes to the store; dropped, it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// What one chunk write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub rows: usize,
    pub files: usize,
}

/// Coverage of one stored series.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesStatus {
    pub series: SeriesId,
    pub rows: usize,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
    /// Hours between first and last with no row.
    pub missing_hours: i64,
    /// Rows whose value is null.
    pub null_values: usize,
    pub ledger_chunks: usize,
    pub files: usize,
    /// The runs of missing hours, where asked for ([`Store::status_with_gaps`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaps: Option<SeriesGaps>,
}

impl Store {
    /// A store at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
        move |source| IngestError::StoreIo { path: path.to_owned(), source }
    }

    /// Take the store's exclusive lock, failing at once (naming the holder) if another process
    /// has it. Leftover temporary files of a killed writer are removed.
    pub fn lock(&self) -> Result<StoreLock, IngestError> {
        let lock = self.take_lock(std::time::Duration::ZERO)?;
        self.remove_temp_files(&self.root)?;
        Ok(lock)
    }

    /// Take the store's exclusive lock for one write, waiting up to [`WRITE_LOCK_PATIENCE`]
    /// for another writer's write to finish (then failing, naming the holder). Collections
    /// take it around each chunk's write and ledger entry only, so that several run at once.
    pub fn write_lock(&self) -> Result<StoreLock, IngestError> {
        self.take_lock(WRITE_LOCK_PATIENCE)
    }

    /// Remove the temporary files a killed writer left, under the lock (waiting for it like
    /// [`Self::write_lock`]): a writer's temporary files only exist while it holds the lock.
    pub fn tidy(&self) -> Result<(), IngestError> {
        let _lock = self.take_lock(WRITE_LOCK_PATIENCE)?;
        self.remove_temp_files(&self.root)
    }

    fn take_lock(&self, patience: std::time::Duration) -> Result<StoreLock, IngestError> {
        let catalog = self.root.join(CATALOG);
        let path = catalog.join(LOCK_FILE);
        self.refuse_links(&path)?;
        fs::create_dir_all(&catalog).map_err(Self::io(&catalog))?;
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Self::io(&path))?;
        let deadline = std::time::Instant::now() + patience;
        let mut pause = std::time::Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    // another writer's write: they take milliseconds to seconds
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    // the holder writes its pid right after taking the lock: give it a moment
                    let mut holder = String::new();
                    for _ in 0..20 {
                        holder = fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                        if !holder.is_empty() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    let holder =
                        if holder.is_empty() { "another process".to_string() } else { format!("pid {holder}") };
                    return Err(IngestError::StoreBusy { path: self.root.clone(), holder });
                }
                Err(fs::TryLockError::Error(e)) => return Err(Self::io(&path)(e)),
            }
        }
        file.set_len(0).map_err(Self::io(&path))?;
        write!(file, "{}", std::process::id()).map_err(Self::io(&path))?;
        Ok(StoreLock { _file: file })
    }

    fn remove_temp_files(&self, dir: &Path) -> Result<(), IngestError> {
        let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_symlink() {
                // never followed: a link to a folder outside the store is not searched
                continue;
            }
            if kind.is_dir() {
                self.remove_temp_files(&path)?;
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(TEMP_MARK)) {
                fs::remove_file(&path).map_err(Self::io(&path))?;
            }
        }
        Ok(())
    }

    /// Refuse `path` (below the root) when it or a folder between the root and it is a
    /// symbolic link. The parts that do not exist yet are fine: they are created as folders.
    pub(crate) fn refuse_links(&self, path: &Path) -> Result<(), IngestError> {
        let Ok(below) = path.strip_prefix(&self.root) else {
            return Err(IngestError::StoreData {
                path: path.to_owned(),
                message: format!("the path is outside the store `{}`", self.root.display()),
            });
        };
        let mut at = self.root.clone();
        for part in below.components() {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => return Err(link_error(&at)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Self::io(&at)(e)),
            }
        }
        Ok(())
    }

    /// Check that the store may hold `series`: their names pass [`SeriesId::check`], and no
    /// symbolic link lies on the way to their folders or the catalog. Nothing is written: a
    /// collection calls this before it takes the lock.
    pub fn check_series(&self, series: &[SeriesId]) -> Result<(), IngestError> {
        for id in series {
            id.check()?;
        }
        for path in self.ledger_paths() {
            self.refuse_links(&path)?;
        }
        self.refuse_links(&self.root.join(CATALOG).join(LOCK_FILE))?;
        for id in series {
            let dir = self.series_dir(id);
            self.refuse_links(&dir)?;
            refuse_links_below(&dir)?;
        }
        Ok(())
    }

    /// The folder of one series (not checked: [`Self::check_series`] checks it).
    pub fn series_dir(&self, id: &SeriesId) -> PathBuf {
        self.root
            .join(format!("source={}", encode(&id.source)))
            .join(format!("region={}", encode(&id.region)))
            .join(format!("kind={}", encode(&id.kind)))
    }

    /// The folder of a table of `source` and `region` that is not a series (the forecast
    /// archive of `serve`): `{root}/source={s}/region={r}`, names checked, no link on the way.
    /// [`Self::list_series`] never lists it (it holds no `kind=` folders).
    pub fn table_dir(&self, source: &str, region: &str) -> Result<PathBuf, IngestError> {
        super::check_name("source", source)?;
        super::check_name("region", region)?;
        let dir = self.root.join(format!("source={}", encode(source))).join(format!("region={}", encode(region)));
        self.refuse_links(&dir)?;
        Ok(dir)
    }

    /// The Parquet files below `dir` (inside the store), sorted; a symbolic link is refused.
    pub fn parquet_files_below(&self, dir: &Path) -> Result<Vec<PathBuf>, IngestError> {
        self.refuse_links(dir)?;
        let mut files = Vec::new();
        parquet_files(dir, &mut files)?;
        files.sort();
        Ok(files)
    }

    fn partition_file(&self, id: &SeriesId, year: i32, month: u32) -> PathBuf {
        self.series_dir(id).join(format!("year={year}")).join(format!("month={month:02}")).join(PART_FILE)
    }

    /// Replace the rows of `range` of every series in `batch` with the given rows (rows outside
    /// `range` are ignored). The caller holds the lock.
    pub fn write_range(&self, batch: &[SeriesRows], range: DateRange) -> Result<WriteStats, IngestError> {
        for series in batch {
            series.id.check()?;
        }
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut stats = WriteStats::default();
        let result = (|| {
            for series in batch {
                for (year, month) in months_of(&range) {
                    let path = self.partition_file(&series.id, year, month);
                    self.refuse_links(&path)?;
                    let month_range = month_range(year, month);
                    let replace =
                        DateRange { start: range.start.max(month_range.start), end: range.end.min(month_range.end) };
                    let merged = self.merge_partition(&path, series, &replace)?;
                    stats.rows += merged.1;
                    match merged.0 {
                        Some(rows) => {
                            let temp = temp_path(&path, false);
                            write_parquet(&temp, &rows)?;
                            staged.push((temp, path));
                        }
                        None if path.exists() => {
                            // the month holds nothing any more: an empty file keeps the swap atomic
                            let temp = temp_path(&path, false);
                            write_parquet(&temp, &SeriesRows::new(series.id.clone()))?;
                            staged.push((temp, path));
                        }
                        None => {}
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            for (temp, _) in &staged {
                let _ = fs::remove_file(temp);
            }
            return Err(e);
        }
        stats.files = staged.len();
        if staged.is_empty() {
            return Ok(stats);
        }
        // Durability in two flushes per chunk rather than two per file: every new file's data
        // reaches the disk before any rename, and the renames before the ledger is written.
        let temps: Vec<&Path> = staged.iter().map(|(temp, _)| temp.as_path()).collect();
        if let Err(e) = self.flush(&temps) {
            for temp in temps {
                let _ = fs::remove_file(temp);
            }
            return Err(e);
        }
        let mut dirs = Vec::new();
        for (temp, path) in &staged {
            fs::rename(temp, path).map_err(Self::io(path))?;
            if let Some(dir) = path.parent() {
                dirs.push(dir.to_owned());
            }
        }
        dirs.sort();
        dirs.dedup();
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        self.flush(&dirs)?;
        Ok(stats)
    }

    /// Flush `paths` (files or folders) to disk: on Linux one `syncfs` of the store's file
    /// system covers them all (one flush however many files a chunk wrote); elsewhere each is
    /// flushed with `fsync`.
    fn flush(&self, paths: &[&Path]) -> Result<(), IngestError> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let root = File::open(&self.root).map_err(Self::io(&self.root))?;
            // SAFETY: syncfs only reads the descriptor, which `root` keeps open for the call.
            if unsafe { libc::syncfs(root.as_raw_fd()) } != 0 {
                return Err(Self::io(&self.root)(std::io::Error::last_os_error()));
            }
            let _ = paths;
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            for path in paths {
                File::open(path).and_then(|f| f.sync_all()).map_err(Self::io(path))?;
            }
            Ok(())
        }
    }

    /// The partition's rows after replacing `replace` with the series' rows in it, and how
    /// many of the series' rows went in. `None` when nothing remains.
    fn merge_partition(
        &self,
        path: &Path,
        series: &SeriesRows,
        replace: &DateRange,
    ) -> Result<(Option<SeriesRows>, usize), IngestError> {
        let incoming: Vec<usize> = (0..series.len()).filter(|&i| replace.holds_us(series.timestamps[i])).collect();
        let mut out = SeriesRows::new(series.id.clone());
        let existing = if path.exists() { Some(read_parquet(path, &series.id)?) } else { None };
        let keep = |t: i64| !replace.holds_us(t);
        let mut old =
            existing.iter().flat_map(|e| e.timestamps.iter().zip(&e.values)).filter(|(t, _)| keep(**t)).peekable();
        let mut new = incoming.iter().map(|&i| (&series.timestamps[i], &series.values[i])).peekable();
        loop {
            let take_old = match (old.peek(), new.peek()) {
                (Some(o), Some(n)) => o.0 < n.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (t, v) = if take_old { old.next() } else { new.next() }.expect("peeked");
            out.timestamps.push(*t);
            out.values.push(*v);
        }
        Ok(((!out.is_empty()).then_some(out), incoming.len()))
    }

    /// The rows of one series (in `range` if given), sorted by timestamp. Each month file the
    /// range touches is read whole and decoded on this thread, without polars' query engine or
    /// thread pool: for the many small files of a long series that is several times faster
    /// than a `scan_parquet` over them. Files of either codec (LZ4 now, zstd before) read the
    /// same.
    /// A damaged file is an error naming it; a symbolic link anywhere below the series' folder
    /// is refused.
    pub fn read(&self, id: &SeriesId, range: Option<DateRange>) -> Result<SeriesRows, IngestError> {
        id.check()?;
        let dir = self.series_dir(id);
        self.refuse_links(&dir)?;
        let mut files = Vec::new();
        parquet_files(&dir, &mut files)?;
        if files.is_empty() {
            return Err(IngestError::StoreData { path: dir, message: format!("no data for series {id} in the store") });
        }
        files.sort();
        if let Some(range) = range {
            let months = months_of(&range);
            files.retain(|path| partition_month(&dir, path).is_none_or(|month| months.contains(&month)));
        }
        // one file after another on this thread, into one pair of vectors, reusing the byte
        // buffer: the allocator hands the same memory back for every file, where parallel
        // per-file buffers would each touch (and have the kernel zero) fresh pages
        let mut out = SeriesRows::new(id.clone());
        // a month holds at most 31 × 24 hours
        let capacity = files.len() * 744;
        out.timestamps.reserve(capacity);
        out.values.reserve(capacity);
        let mut bytes = Vec::new();
        for path in &files {
            let frame = read_frame(path, &mut bytes)?;
            append_rows(&frame, &mut out, range)
                .map_err(|message| IngestError::StoreData { path: path.clone(), message })?;
        }
        if !out.timestamps.is_sorted() {
            let mut order: Vec<usize> = (0..out.len()).collect();
            order.sort_by_key(|&i| out.timestamps[i]);
            out.timestamps = order.iter().map(|&i| out.timestamps[i]).collect();
            out.values = order.iter().map(|&i| out.values[i]).collect();
        }
        Ok(out)
    }

    /// Does the store hold a data file of `id`? A writer killed before the first file of a
    /// series was in place leaves its folder without one. A name [`SeriesId::check`] refuses
    /// is never held; a series reached through a symbolic link counts as held, so that reading
    /// it says why it is refused.
    pub fn has_series(&self, id: &SeriesId) -> bool {
        if id.check().is_err() {
            return false;
        }
        let dir = self.series_dir(id);
        self.refuse_links(&dir).is_err() || holds_file_or_link(&dir)
    }

    /// Every series with a data file in the store.
    pub fn list_series(&self) -> Result<Vec<SeriesId>, IngestError> {
        let mut out = Vec::new();
        for source in subdirs(&self.root, "source=")? {
            for region in subdirs(&source.0, "region=")? {
                for kind in subdirs(&region.0, "kind=")? {
                    if count_files(&kind.0) > 0 {
                        out.push(SeriesId::new(&source.1, &region.1, &kind.1));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Coverage of every stored series, from the files' footers (no page is decoded, so a
    /// store of 50,000 files is summarised in seconds) and one read of the ledger.
    pub fn status(&self) -> Result<Vec<SeriesStatus>, IngestError> {
        self.summarise(false)
    }

    /// [`Self::status`] with each series' gap ranges: the hours between files come from their
    /// footers, and only a file whose footer shows a hole inside (fewer rows than hours from
    /// its first to its last) is read ([`SeriesGaps::files_read`]).
    pub fn status_with_gaps(&self) -> Result<Vec<SeriesStatus>, IngestError> {
        self.summarise(true)
    }

    fn summarise(&self, with_gaps: bool) -> Result<Vec<SeriesStatus>, IngestError> {
        let mut chunks: std::collections::HashMap<SeriesId, usize> = std::collections::HashMap::new();
        for entry in self.read_ledger()?.entries() {
            *chunks.entry(entry.series).or_default() += 1;
        }
        self.list_series()?
            .into_iter()
            .map(|id| {
                let dir = self.series_dir(&id);
                self.refuse_links(&dir)?;
                let mut files = Vec::new();
                parquet_files(&dir, &mut files)?;
                let summaries = files
                    .into_iter()
                    .map(|path| read_summary(&path, &id).map(|summary| (path, summary)))
                    .collect::<Result<Vec<_>, _>>()?;
                let gaps = if with_gaps { Some(gaps::gaps_of(&id, &summaries)?) } else { None };
                let total = FileSummary::total(summaries.iter().map(|(_, summary)| *summary));
                let expected = match (total.first, total.last) {
                    (Some(a), Some(b)) => (b - a) / crate::time::HOUR_US + 1,
                    _ => 0,
                };
                Ok(SeriesStatus {
                    rows: total.rows,
                    first: total.first.map(from_us),
                    last: total.last.map(from_us),
                    missing_hours: expected - total.rows as i64,
                    null_values: total.nulls,
                    ledger_chunks: chunks.get(&id).copied().unwrap_or(0),
                    files: summaries.len(),
                    gaps,
                    series: id,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HOUR_US;
    use chrono::TimeZone;
    use polars::prelude::*;

    fn rows(id: &SeriesId, hours: std::ops::Range<i64>, value: f64) -> SeriesRows {
        let base = Utc.with_ymd_and_hms(2024, 1, 30, 0, 0, 0).unwrap().timestamp_micros();
        SeriesRows {
            id: id.clone(),
            timestamps: hours.clone().map(|h| base + h * HOUR_US).collect(),
            values: hours.map(|h| Some(value + h as f64)).collect(),
        }
    }

    fn range(hours: std::ops::Range<i64>) -> DateRange {
        let base = Utc.with_ymd_and_hms(2024, 1, 30, 0, 0, 0).unwrap();
        DateRange::new(base + chrono::TimeDelta::hours(hours.start - 1), base + chrono::TimeDelta::hours(hours.end - 1))
            .unwrap()
    }

    #[test]
    fn replaces_a_range_and_never_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock().unwrap();
        let id = SeriesId::new("synthetic", "CA ISO-TAC", "D");
        // 96 hours across the January/February boundary
        store.write_range(&[rows(&id, 1..97, 0.0)], range(1..97)).unwrap();
        store.write_range(&[rows(&id, 40..61, 1000.0)], range(40..61)).unwrap();
        let back = store.read(&id, None).unwrap();
        assert_eq!(back.len(), 96);
        assert!(back.timestamps.windows(2).all(|w| w[1] - w[0] == HOUR_US));
        assert_eq!(back.values[38], Some(39.0)); // hour 39 kept
        assert_eq!(back.values[39], Some(1040.0)); // hour 40 replaced
        assert_eq!(back.values[60], Some(61.0));
        assert_eq!(store.list_series().unwrap(), vec![id.clone()]);
        let limited = store.read(&id, Some(range(10..21))).unwrap();
        assert_eq!(limited.len(), 11);
        // no temporary files are left behind
        let leftovers = walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().contains(TEMP_MARK)).count();
        assert_eq!(leftovers, 0);
    }

    /// Files are LZ4 now; a store written before (zstd files) reads the same, a range reads
    /// only the months it touches, and nulls survive the round trip.
    #[test]
    fn reads_zstd_files_of_earlier_stores_and_limits_months() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock().unwrap();
        let id = SeriesId::new("synthetic", "SYN1", "D");
        let mut written = rows(&id, 1..97, 0.0);
        written.values[5] = None;
        store.write_range(std::slice::from_ref(&written), range(1..97)).unwrap();
        let january = store.partition_file(&id, 2024, 1);
        let metadata = polars_parquet::read::read_metadata(&mut File::open(&january).unwrap()).unwrap();
        let codec = metadata.row_groups[0].parquet_columns()[0].compression();
        assert_eq!(format!("{codec:?}"), "Lz4Raw");
        // rewrite January as an earlier version did (zstd)
        let mut frame = ParquetReader::new(File::open(&january).unwrap()).finish().unwrap();
        let zstd = polars::polars_utils::compression::ZstdLevel::try_new(3).unwrap();
        ParquetWriter::new(File::create(&january).unwrap())
            .with_compression(ParquetCompression::Zstd(Some(zstd)))
            .finish(&mut frame)
            .unwrap();
        assert_eq!(store.read(&id, None).unwrap(), written);
        // February only: the January file is not needed (a damaged one is not even opened)
        fs::write(&january, b"not parquet").unwrap();
        let february = store.read(&id, Some(range(60..97))).unwrap();
        assert_eq!(february.len(), 37);
        assert!(store.read(&id, None).unwrap_err().to_string().contains("month=01"));
    }

    /// `status` reads footers only; a file whose footer lacks the statistics (another writer)
    /// is read whole, and both give the same summary.
    #[test]
    fn status_from_footers_matches_the_rows_and_falls_back_without_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock().unwrap();
        let id = SeriesId::new("synthetic", "SYN1", "D");
        let mut written = rows(&id, 1..97, 0.0);
        written.values[5] = None;
        written.values[70] = None;
        // a gap of 3 hours in February
        written.timestamps.drain(80..83);
        written.values.drain(80..83);
        store.write_range(std::slice::from_ref(&written), range(1..97)).unwrap();
        let check = |status: &SeriesStatus| {
            assert_eq!(status.rows, 93);
            assert_eq!(status.null_values, 2);
            assert_eq!(status.missing_hours, 3);
            assert_eq!(status.first.map(|t| t.timestamp_micros()), written.timestamps.first().copied());
            assert_eq!(status.last.map(|t| t.timestamp_micros()), written.timestamps.last().copied());
            assert_eq!(status.files, 2);
        };
        check(&store.status().unwrap()[0]);
        // February rewritten without statistics
        let february = store.partition_file(&id, 2024, 2);
        let mut frame = ParquetReader::new(File::open(&february).unwrap()).finish().unwrap();
        ParquetWriter::new(File::create(&february).unwrap())
            .with_statistics(StatisticsOptions::empty())
            .finish(&mut frame)
            .unwrap();
        check(&store.status().unwrap()[0]);
        // a damaged footer is an error naming the file
        fs::write(&february, b"not parquet").unwrap();
        let error = store.status().unwrap_err().to_string();
        assert!(error.contains("month=02"), "{error}");
    }

    /// Gap ranges: one across the January/February files (seen from their footers alone) and
    /// two inside February (the one file read); their hours add up to the missing hours.
    #[test]
    fn gaps_between_files_come_from_footers_and_only_a_file_with_a_hole_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock().unwrap();
        let id = SeriesId::new("synthetic", "SYN1", "D");
        let all = rows(&id, 1..97, 0.0);
        let base = all.timestamps[0] - HOUR_US;
        let hole = |t: i64| matches!((t - base) / HOUR_US, 44..=52 | 70..=71 | 80);
        let (timestamps, values) = all.timestamps.iter().zip(&all.values).filter(|(t, _)| !hole(**t)).unzip();
        let written = SeriesRows { id: id.clone(), timestamps, values };
        store.write_range(std::slice::from_ref(&written), range(1..97)).unwrap();
        assert!(store.status().unwrap()[0].gaps.is_none(), "plain status reads no gaps");
        let status = &store.status_with_gaps().unwrap()[0];
        let gaps = status.gaps.as_ref().unwrap();
        let hours = |gap: &Gap| {
            ((gap.first.timestamp_micros() - base) / HOUR_US, (gap.last.timestamp_micros() - base) / HOUR_US, gap.hours)
        };
        assert_eq!(gaps.gaps.iter().map(hours).collect::<Vec<_>>(), vec![(44, 52, 9), (70, 71, 2), (80, 80, 1)]);
        assert_eq!(gaps.files_read, 1, "January has no hole inside: its footer is enough");
        assert_eq!(gaps.hours(), status.missing_hours);
        assert_eq!(gaps.longest().map(hours), Some((44, 52, 9)));
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn second_lock_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock().unwrap();
        // a second open file description on the same file cannot take the lock either
        let err = Store::new(dir.path()).lock().unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    }

    #[test]
    fn a_series_folder_without_files_is_not_a_series() {
        // what a writer killed during the first write of a series leaves behind
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let id = SeriesId::new("synthetic", "SYN1", "D");
        let month = store.series_dir(&id).join("year=2024").join("month=01");
        fs::create_dir_all(&month).unwrap();
        fs::write(month.join(format!("{PART_FILE}{TEMP_MARK}1")), b"PAR1").unwrap();
        assert!(store.list_series().unwrap().is_empty());
        assert!(store.status().unwrap().is_empty());
        assert!(!store.has_series(&id));
        let err = store.read(&id, None).unwrap_err().to_string();
        assert!(err.contains("no data for series"), "{err}");
    }
}
