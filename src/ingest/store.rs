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
//! # Isolation
//! Nothing the store reads or writes lies outside its root. Source, region and kind names are
//! checked ([`SeriesId::check`]) before they name a folder, and every path below the root is
//! refused ([`IngestError::StoreLink`]) when it, or a folder on the way to it, is a symbolic
//! link: the store follows no link (the root itself may be one). New files are created
//! exclusively (`O_EXCL`), so not even a link planted under a temporary file's name is followed.
use super::{COL_TIMESTAMP, COL_VALUE, IngestError, SeriesId, SeriesRows};
use crate::time::{DateRange, from_us};
use chrono::{DateTime, Datelike, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const CATALOG: &str = "_catalog";
const LEDGER_FILE: &str = "ledger.json";
const LOCK_FILE: &str = "lock";
const PART_FILE: &str = "part-0000.parquet";
const TEMP_MARK: &str = ".tmp-";

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

/// One completed chunk of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub series: SeriesId,
    /// The source's parameters (seed, defects, …) when it was collected.
    pub params: String,
    pub range: DateRange,
    pub rows: usize,
    /// CRC-32 of the rows written (timestamps and value bits).
    pub checksum: u32,
    pub fetched_at: DateTime<Utc>,
    /// False when the chunk was recent enough that the source may still revise it.
    pub settled: bool,
}

/// The ledger file, versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum LedgerFile {
    #[serde(rename = "1")]
    V1 { entries: Vec<LedgerEntry> },
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
}

impl Store {
    /// A store at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
        move |source| IngestError::StoreIo { path: path.to_owned(), source }
    }

    /// Take the store's exclusive lock, failing at once (naming the holder) if another process
    /// has it. Leftover temporary files of a killed writer are removed.
    pub fn lock(&self) -> Result<StoreLock, IngestError> {
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
        match file.try_lock() {
            Ok(()) => {}
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
                let holder = if holder.is_empty() { "another process".to_string() } else { format!("pid {holder}") };
                return Err(IngestError::StoreBusy { path: self.root.clone(), holder });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Self::io(&path)(e)),
        }
        file.set_len(0).map_err(Self::io(&path))?;
        write!(file, "{}", std::process::id()).map_err(Self::io(&path))?;
        self.remove_temp_files(&self.root)?;
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
    fn refuse_links(&self, path: &Path) -> Result<(), IngestError> {
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
        self.refuse_links(&self.ledger_path())?;
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
                            let temp = temp_path(&path);
                            write_parquet(&temp, &rows)?;
                            staged.push((temp, path));
                        }
                        None if path.exists() => {
                            // the month holds nothing any more: an empty file keeps the swap atomic
                            let temp = temp_path(&path);
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

    /// Coverage of every stored series.
    pub fn status(&self) -> Result<Vec<SeriesStatus>, IngestError> {
        let ledger = self.ledger()?;
        self.list_series()?
            .into_iter()
            .map(|id| {
                let rows = self.read(&id, None)?;
                let files = count_files(&self.series_dir(&id));
                let first = rows.timestamps.first().copied();
                let last = rows.timestamps.last().copied();
                let expected = match (first, last) {
                    (Some(a), Some(b)) => (b - a) / crate::time::HOUR_US + 1,
                    _ => 0,
                };
                Ok(SeriesStatus {
                    rows: rows.len(),
                    first: first.map(from_us),
                    last: last.map(from_us),
                    missing_hours: expected - rows.len() as i64,
                    null_values: rows.values.iter().filter(|v| v.is_none()).count(),
                    ledger_chunks: ledger.iter().filter(|e| e.series == id).count(),
                    files,
                    series: id,
                })
            })
            .collect()
    }

    fn ledger_path(&self) -> PathBuf {
        self.root.join(CATALOG).join(LEDGER_FILE)
    }

    /// The completed-chunk ledger (empty for a new store).
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>, IngestError> {
        let path = self.ledger_path();
        self.refuse_links(&path)?;
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<LedgerFile>(&bytes) {
                Ok(LedgerFile::V1 { entries }) => Ok(entries),
                Err(e) => Err(IngestError::StoreData { path, message: format!("corrupt ledger: {e}") }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    /// Record completed chunks: entries for the same series and range are replaced. The
    /// caller holds the lock.
    pub fn record(&self, entries: &[LedgerEntry]) -> Result<(), IngestError> {
        let mut all = self.ledger()?;
        all.retain(|old| !entries.iter().any(|new| new.series == old.series && new.range == old.range));
        all.extend_from_slice(entries);
        all.sort_by(|a, b| (&a.series, a.range).cmp(&(&b.series, b.range)));
        let path = self.ledger_path();
        self.refuse_links(&path)?;
        let bytes = serde_json::to_vec_pretty(&LedgerFile::V1 { entries: all })
            .map_err(|e| IngestError::StoreData { path: path.clone(), message: e.to_string() })?;
        write_atomic(&path, &bytes)
    }

    /// Is `range` of `series` covered by settled ledger entries collected with `params`?
    pub fn covered(ledger: &[LedgerEntry], series: &SeriesId, params: &str, range: &DateRange) -> bool {
        let mut spans: Vec<(i64, i64)> = ledger
            .iter()
            .filter(|e| &e.series == series && e.params == params && e.settled)
            .map(|e| (e.range.start_us(), e.range.end_us()))
            .collect();
        spans.sort();
        let mut reached = range.start_us();
        for (start, end) in spans {
            if start > reached {
                break;
            }
            reached = reached.max(end);
            if reached >= range.end_us() {
                return true;
            }
        }
        reached >= range.end_us()
    }
}

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

/// CRC-32 of rows (timestamps and value bits; null as a marker).
pub fn checksum(rows: &SeriesRows, range: &DateRange) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for (t, v) in rows.timestamps.iter().zip(&rows.values) {
        if range.holds_us(*t) {
            hasher.update(&t.to_le_bytes());
            hasher.update(&v.map_or(u64::MAX, f64::to_bits).to_le_bytes());
        }
    }
    hasher.finalize()
}

/// The folders `{prefix}{value}` in `dir` with their decoded values; a symbolic link named so
/// is refused.
fn subdirs(dir: &Path, prefix: &str) -> Result<Vec<(PathBuf, String)>, IngestError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Store::io(dir)(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(value) = name.strip_prefix(prefix) else { continue };
        let kind = entry.file_type().map_err(Store::io(&entry.path()))?;
        if kind.is_symlink() {
            return Err(link_error(&entry.path()));
        }
        if kind.is_dir() {
            out.push((entry.path(), decode(value)));
        }
    }
    out.sort();
    Ok(out)
}

/// Parquet files below `dir` (links not followed).
fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(kind) if kind.is_dir() => count_files(&e.path()),
                    Ok(kind) if kind.is_file() => usize::from(e.path().extension().is_some_and(|x| x == "parquet")),
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The Parquet files below `dir` (a folder that may not exist), refusing a symbolic link
/// anywhere below it.
fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), IngestError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(e) => return Err(Store::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Store::io(dir))?;
        let kind = entry.file_type().map_err(Store::io(&entry.path()))?;
        let path = entry.path();
        if kind.is_symlink() {
            return Err(link_error(&path));
        }
        if kind.is_dir() {
            parquet_files(&path, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|x| x == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// (year, month) of a file at `<series dir>/year=Y/month=M/…`; `None` for a file elsewhere.
fn partition_month(dir: &Path, path: &Path) -> Option<(i32, u32)> {
    let mut parts = path.strip_prefix(dir).ok()?.components().map(|c| c.as_os_str().to_str());
    let year = parts.next()??.strip_prefix("year=")?.parse().ok()?;
    let month = parts.next()??.strip_prefix("month=")?.parse().ok()?;
    Some((year, month))
}

/// Does the folder tree `dir` (that may not exist) hold a Parquet file or a symbolic link?
/// Stops at the first one found.
fn holds_file_or_link(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    entries.flatten().any(|entry| match entry.file_type() {
        Ok(kind) if kind.is_symlink() => true,
        Ok(kind) if kind.is_dir() => holds_file_or_link(&entry.path()),
        Ok(kind) => kind.is_file() && entry.path().extension().is_some_and(|x| x == "parquet"),
        Err(_) => false,
    })
}

/// Refuse a folder tree (that may not exist) holding a symbolic link anywhere.
fn refuse_links_below(dir: &Path) -> Result<(), IngestError> {
    parquet_files(dir, &mut Vec::new())
}

fn link_error(path: &Path) -> IngestError {
    IngestError::StoreLink { path: path.to_owned(), target: fs::read_link(path).unwrap_or_default() }
}

/// Create `path` for writing, never following a link: a stale file of that name (a temporary
/// file of a killed writer with the same pid) is removed first, then the file is created
/// exclusively.
fn create_new(path: &Path) -> Result<File, IngestError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Store::io(path)(e)),
    }
    fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(Store::io(path))
}

/// (year, month) of every calendar month (UTC) that holds an interval end of `range`.
fn months_of(range: &DateRange) -> Vec<(i32, u32)> {
    let mut out = Vec::new();
    if range.hours() <= 0 {
        return out;
    }
    let first = from_us(range.start_us() + crate::time::HOUR_US);
    let last = range.end;
    let (mut y, mut m) = (first.year(), first.month());
    while (y, m) <= (last.year(), last.month()) {
        out.push((y, m));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    out
}

/// The range whose interval ends fall in the UTC calendar month: ends at (y-m-01T00, next 01T00].
fn month_range(year: i32, month: u32) -> DateRange {
    use chrono::TimeZone;
    let start = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().expect("valid month");
    let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let end = Utc.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single().expect("valid month");
    // An interval ending exactly at midnight on the 1st belongs to the month it ends in.
    DateRange { start: start - chrono::TimeDelta::hours(1), end: end - chrono::TimeDelta::hours(1) }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!("{name}{TEMP_MARK}{}", std::process::id()))
}

/// Write `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(Store::io(dir))?;
    let temp = temp_path(path);
    let mut file = create_new(&temp)?;
    file.write_all(bytes).map_err(Store::io(&temp))?;
    file.sync_all().map_err(Store::io(&temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(Store::io(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), IngestError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Store::io(dir))
}

/// Write rows as an LZ4 Parquet file at `path` (folders created; the caller flushes it). LZ4
/// rather than zstd: a month file is read far more often than written, and LZ4 decodes it
/// 2.5 × faster (a zstd decoder context per column chunk dominates these small files) for
/// files about a quarter larger. Files written by earlier versions (zstd) read the same.
fn write_parquet(path: &Path, rows: &SeriesRows) -> Result<(), IngestError> {
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
fn read_frame(path: &Path, bytes: &mut Vec<u8>) -> Result<DataFrame, IngestError> {
    bytes.clear();
    File::open(path).and_then(|mut file| std::io::Read::read_to_end(&mut file, bytes)).map_err(Store::io(path))?;
    guard_reader(|| {
        ParquetReader::new(std::io::Cursor::new(bytes.as_slice())).read_parallel(ParallelStrategy::None).finish()
    })
    .map_err(|message| IngestError::StoreData { path: path.to_owned(), message })?
    .map_err(|e| IngestError::StoreData { path: path.to_owned(), message: e.to_string() })
}

fn read_parquet(path: &Path, id: &SeriesId) -> Result<SeriesRows, IngestError> {
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
fn append_rows(df: &DataFrame, out: &mut SeriesRows, range: Option<DateRange>) -> Result<(), String> {
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

/// Percent-encode a partition value (anything but `A-Za-z0-9._-`), as hive readers decode it.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&value[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HOUR_US;
    use chrono::TimeZone;

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
    fn ledger_coverage_merges_entries() {
        let id = SeriesId::new("synthetic", "SYN1", "D");
        let entry = |r: DateRange| LedgerEntry {
            series: id.clone(),
            params: "p".into(),
            range: r,
            rows: 1,
            checksum: 0,
            fetched_at: Utc::now(),
            settled: true,
        };
        let ledger = vec![entry(range(1..11)), entry(range(11..21))];
        assert!(Store::covered(&ledger, &id, "p", &range(5..16)));
        assert!(!Store::covered(&ledger, &id, "p", &range(5..26)));
        assert!(!Store::covered(&ledger, &id, "other", &range(5..16)));
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

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(encode("CA ISO-TAC"), "CA%20ISO-TAC");
        assert_eq!(decode(&encode("CA ISO-TAC/x")), "CA ISO-TAC/x");
    }
}
