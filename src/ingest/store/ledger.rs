//! The completed-chunk ledger, `{root}/_catalog/ledger.jsonl`: which `(series, range)` chunks
//! are in the store, collected with which source parameters, with how many rows and their
//! checksum. It is the collection's checkpoint.
//!
//! # An append-only log
//! The first line is a header, `{"version":"2"}`; every other line is one [`LedgerEntry`] as
//! JSON. A later line for the same series and range replaces an earlier one. A chunk's entries
//! are appended in one write and flushed (`fdatasync`) after the chunk's partitions are in
//! place, so recording a chunk costs the size of its entries, not of the whole ledger (the
//! version-1 `ledger.json` was read and rewritten whole for every chunk: quadratic over a full
//! history).
//! - **Compaction**: when the log holds more than [`COMPACT_FACTOR`] lines per live entry (and at
//!   least [`COMPACT_MIN_LINES`]), it is rewritten with only the live entries, atomically
//!   ([`super::write_atomic`]).
//! - **A torn last line** (a writer killed during an append leaves a line without its newline)
//!   is ignored by readers, and cut off by the next writer before it appends: its chunk is
//!   simply collected again. A damaged line that is not the last is an error naming the file.
//! - **Migration**: a store written by an earlier version has `ledger.json` (version 1). Readers
//!   read it while no log exists; the first writer writes its entries as the log (atomically)
//!   and then removes it.
//!
//! [`LedgerIndex`] answers "is this chunk covered?" for a whole collection plan from one read
//! of the ledger (the entries of each series and parameters merged into disjoint spans).
use super::atomic::sync_dir;
use super::{CATALOG, Store, write_atomic};
use crate::ingest::{IngestError, SeriesId, SeriesRows};
use crate::time::DateRange;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

/// The ledger of version 1 (one JSON document), read and migrated.
const LEDGER_V1_FILE: &str = "ledger.json";
/// The append-only log (version 2).
const LEDGER_LOG_FILE: &str = "ledger.jsonl";
/// Compact when the log holds more than this many lines per live entry…
pub const COMPACT_FACTOR: usize = 2;
/// …and at least this many lines.
pub const COMPACT_MIN_LINES: usize = 4096;

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

/// The ledger file of version 1, versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum LedgerFile {
    #[serde(rename = "1")]
    V1 { entries: Vec<LedgerEntry> },
}

/// The first line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum LogHeader {
    #[serde(rename = "2")]
    V2 {},
}

/// The ledger as read: its live entries, and what a writer needs to append to it.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: Vec<LedgerEntry>,
    /// Position in `entries` of each `(series, range)`.
    positions: HashMap<(SeriesId, DateRange), usize>,
    /// Lines of entries in the log (live or replaced).
    lines: usize,
    /// Bytes of the log up to its last whole line; `None` when there is no log yet.
    log_len: Option<u64>,
    /// Bytes after the last whole line (a torn append).
    torn: u64,
    /// A version-1 ledger is there to migrate.
    v1: bool,
}

impl Ledger {
    /// The live entries, sorted by series and range.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        let mut entries = self.entries.clone();
        entries.sort_by(|a, b| (&a.series, a.range).cmp(&(&b.series, b.range)));
        entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lines of entries the log holds (what compaction brings down to [`Self::len`]).
    pub fn lines(&self) -> usize {
        self.lines
    }

    fn insert(&mut self, entry: LedgerEntry) {
        let key = (entry.series.clone(), entry.range);
        match self.positions.get(&key) {
            Some(&at) => self.entries[at] = entry,
            None => {
                self.positions.insert(key, self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    fn from_entries(entries: Vec<LedgerEntry>) -> Self {
        let mut ledger = Ledger::default();
        for entry in entries {
            ledger.insert(entry);
        }
        ledger
    }

    /// The index of which chunks are covered.
    pub fn index(&self) -> LedgerIndex {
        LedgerIndex::new(&self.entries)
    }
}

/// Appends to the ledger; made by [`Store::ledger_writer`] (the caller holds the lock).
///
/// Between two appends the lock may have been released and another process may have
/// appended to the log, or compacted it (a new file): each append first checks that the log
/// is still the file it opened, at the length it left it, and otherwise reads the log again
/// (so another writer's entries are neither cut off as a torn line nor dropped by a compaction).
#[derive(Debug)]
pub struct LedgerWriter {
    store: Store,
    ledger: Ledger,
    file: File,
    /// The log's length after this writer's last write.
    len: u64,
    /// [`COMPACT_MIN_LINES`], smaller in tests.
    compact_min_lines: usize,
}

impl LedgerWriter {
    /// Record completed chunks: entries for the same series and range replace earlier ones.
    /// One write and one flush; the log is compacted when it has grown to hold mostly
    /// replaced lines.
    pub fn append(&mut self, entries: &[LedgerEntry]) -> Result<(), IngestError> {
        if entries.is_empty() {
            return Ok(());
        }
        let path = self.store.ledger_log_path();
        if self.changed_since()? {
            tracing::debug!(path = %path.display(), "the ledger changed since this writer's last write: reading it again");
            let fresh = self.store.ledger_writer(self.store.read_ledger()?)?;
            *self = LedgerWriter { compact_min_lines: self.compact_min_lines, ..fresh };
        }
        let mut bytes = Vec::with_capacity(entries.len() * 256);
        for entry in entries {
            serde_json::to_writer(&mut bytes, entry)
                .map_err(|e| IngestError::StoreData { path: path.clone(), message: e.to_string() })?;
            bytes.push(b'\n');
        }
        self.file.write_all(&bytes).and_then(|()| self.file.sync_data()).map_err(Store::io(&path))?;
        self.len += bytes.len() as u64;
        for entry in entries {
            self.ledger.insert(entry.clone());
        }
        self.ledger.lines += entries.len();
        if self.ledger.lines >= self.compact_min_lines && self.ledger.lines > COMPACT_FACTOR * self.ledger.len() {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrite the log with the live entries only (atomically).
    pub fn compact(&mut self) -> Result<(), IngestError> {
        self.store.write_log(&self.ledger.entries())?;
        self.ledger.lines = self.ledger.len();
        self.file = self.store.open_log()?;
        self.len = self.file.metadata().map_err(Store::io(&self.store.ledger_log_path()))?.len();
        Ok(())
    }

    /// Has another writer appended to the log, or replaced it, since this writer's last write?
    fn changed_since(&self) -> Result<bool, IngestError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.store.ledger_log_path();
        let ours = self.file.metadata().map_err(Store::io(&path))?;
        match fs::symlink_metadata(&path) {
            Ok(now) => Ok(now.ino() != ours.ino() || now.dev() != ours.dev() || now.len() != self.len),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Store::io(&path)(e)),
        }
    }

    /// The ledger as this writer has made it.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

impl Store {
    fn ledger_log_path(&self) -> PathBuf {
        self.root.join(CATALOG).join(LEDGER_LOG_FILE)
    }

    fn ledger_v1_path(&self) -> PathBuf {
        self.root.join(CATALOG).join(LEDGER_V1_FILE)
    }

    /// The paths of the ledger (the log, and the file of version 1).
    pub(super) fn ledger_paths(&self) -> [PathBuf; 2] {
        [self.ledger_log_path(), self.ledger_v1_path()]
    }

    /// The completed-chunk ledger (empty for a new store), sorted by series and range.
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>, IngestError> {
        Ok(self.read_ledger()?.entries())
    }

    /// The ledger with what a writer needs: the log if there is one, else the version-1 file.
    pub fn read_ledger(&self) -> Result<Ledger, IngestError> {
        let [log, v1] = self.ledger_paths();
        self.refuse_links(&log)?;
        self.refuse_links(&v1)?;
        match fs::read(&log) {
            Ok(bytes) => return parse_log(&bytes).map_err(|message| IngestError::StoreData { path: log, message }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io(&log)(e)),
        }
        match fs::read(&v1) {
            Ok(bytes) => match serde_json::from_slice::<LedgerFile>(&bytes) {
                Ok(LedgerFile::V1 { entries }) => Ok(Ledger { v1: true, ..Ledger::from_entries(entries) }),
                Err(e) => Err(IngestError::StoreData { path: v1, message: format!("corrupt ledger: {e}") }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(Self::io(&v1)(e)),
        }
    }

    /// A writer of the ledger, from `ledger` as [`Self::read_ledger`] read it (the caller holds
    /// the lock, so nobody changed it since). A version-1 ledger becomes the log; a torn last
    /// line is cut off.
    pub fn ledger_writer(&self, ledger: Ledger) -> Result<LedgerWriter, IngestError> {
        let [log, v1] = self.ledger_paths();
        self.refuse_links(&log)?;
        let catalog = self.root.join(CATALOG);
        fs::create_dir_all(&catalog).map_err(Self::io(&catalog))?;
        let mut ledger = ledger;
        match ledger.log_len {
            None => {
                self.write_log(&ledger.entries())?;
                ledger.lines = ledger.len();
                if ledger.v1 {
                    fs::remove_file(&v1).map_err(Self::io(&v1))?;
                    sync_dir(&catalog)?;
                    tracing::info!(entries = ledger.len(), "moved the ledger to its append-only log");
                }
            }
            Some(len) if ledger.torn > 0 => {
                tracing::warn!(path = %log.display(), bytes = ledger.torn, "cut off a torn last line of the ledger");
                let file = self.open_log()?;
                file.set_len(len).and_then(|()| file.sync_all()).map_err(Self::io(&log))?;
            }
            Some(_) => {}
        }
        ledger.v1 = false;
        ledger.torn = 0;
        let file = self.open_log()?;
        let len = file.metadata().map_err(Self::io(&log))?.len();
        Ok(LedgerWriter { store: self.clone(), ledger, file, len, compact_min_lines: COMPACT_MIN_LINES })
    }

    /// Record completed chunks (a writer for one append: a collection keeps one writer for all
    /// its chunks). The caller holds the lock.
    pub fn record(&self, entries: &[LedgerEntry]) -> Result<(), IngestError> {
        let ledger = self.read_ledger()?;
        self.ledger_writer(ledger)?.append(entries)
    }

    /// Write the log whole (header and `entries`), atomically.
    fn write_log(&self, entries: &[LedgerEntry]) -> Result<(), IngestError> {
        let path = self.ledger_log_path();
        let data_error = |e: serde_json::Error| IngestError::StoreData { path: path.clone(), message: e.to_string() };
        let mut bytes = serde_json::to_vec(&LogHeader::V2 {}).map_err(data_error)?;
        bytes.push(b'\n');
        for entry in entries {
            serde_json::to_writer(&mut bytes, entry).map_err(data_error)?;
            bytes.push(b'\n');
        }
        write_atomic(&path, &bytes)
    }

    /// The log opened for appending, never through a link.
    fn open_log(&self) -> Result<File, IngestError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.ledger_log_path();
        fs::OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(Self::io(&path))
    }

    /// Is `range` of `series` covered by settled ledger entries collected with `params`?
    pub fn covered(ledger: &[LedgerEntry], series: &SeriesId, params: &str, range: &DateRange) -> bool {
        LedgerIndex::new(ledger).covered(series, params, range)
    }
}

/// Read a log: the header, then entries; bytes after the last newline are a torn append.
fn parse_log(bytes: &[u8]) -> Result<Ledger, String> {
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
    let mut lines = bytes[..whole].split(|&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    if whole == 0 || serde_json::from_slice::<LogHeader>(header).is_err() {
        return Err(format!(
            "corrupt ledger: the first line is not the header {{\"version\":\"2\"}} (starts `{}`)",
            String::from_utf8_lossy(&header[..header.len().min(40)])
        ));
    }
    let mut ledger = Ledger::default();
    for (number, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let entry: LedgerEntry =
            serde_json::from_slice(line).map_err(|e| format!("corrupt ledger: line {}: {e}", number + 2))?;
        ledger.insert(entry);
        ledger.lines += 1;
    }
    ledger.log_len = Some(whole as u64);
    ledger.torn = (bytes.len() - whole) as u64;
    Ok(ledger)
}

/// Which chunks the ledger covers: for each series and parameters, the spans of its settled
/// entries merged into disjoint, sorted spans.
#[derive(Debug, Default)]
pub struct LedgerIndex {
    spans: HashMap<(SeriesId, String), Vec<(i64, i64)>>,
}

impl LedgerIndex {
    pub fn new(entries: &[LedgerEntry]) -> Self {
        let mut spans: HashMap<(SeriesId, String), Vec<(i64, i64)>> = HashMap::new();
        for e in entries.iter().filter(|e| e.settled) {
            spans.entry((e.series.clone(), e.params.clone())).or_default().push((e.range.start_us(), e.range.end_us()));
        }
        for list in spans.values_mut() {
            list.sort_unstable();
            let mut merged: Vec<(i64, i64)> = Vec::with_capacity(list.len());
            for &(start, end) in list.iter() {
                match merged.last_mut() {
                    Some(last) if start <= last.1 => last.1 = last.1.max(end),
                    _ => merged.push((start, end)),
                }
            }
            *list = merged;
        }
        Self { spans }
    }

    /// Is `range` of `series` covered by settled entries collected with `params`?
    pub fn covered(&self, series: &SeriesId, params: &str, range: &DateRange) -> bool {
        let Some(spans) = self.spans.get(&(series.clone(), params.to_string())) else { return false };
        let (start, end) = (range.start_us(), range.end_us());
        // the last span starting at or before the range's start
        let at = spans.partition_point(|span| span.0 <= start);
        at > 0 && spans[at - 1].1 >= end
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn range(hours: std::ops::Range<i64>) -> DateRange {
        let base = Utc.with_ymd_and_hms(2024, 1, 30, 0, 0, 0).unwrap();
        DateRange::new(base + chrono::TimeDelta::hours(hours.start - 1), base + chrono::TimeDelta::hours(hours.end - 1))
            .unwrap()
    }

    fn entry(region: &str, r: DateRange, rows: usize) -> LedgerEntry {
        LedgerEntry {
            series: SeriesId::new("synthetic", region, "D"),
            params: "p".into(),
            range: r,
            rows,
            checksum: 7,
            fetched_at: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
            settled: true,
        }
    }

    #[test]
    fn ledger_coverage_merges_entries() {
        let id = SeriesId::new("synthetic", "SYN1", "D");
        let ledger = vec![entry("SYN1", range(1..11), 1), entry("SYN1", range(11..21), 1)];
        assert!(Store::covered(&ledger, &id, "p", &range(5..16)));
        assert!(Store::covered(&ledger, &id, "p", &range(1..21)));
        assert!(!Store::covered(&ledger, &id, "p", &range(5..26)));
        assert!(!Store::covered(&ledger, &id, "other", &range(5..16)));
        // a hole between entries is not covered; an unsettled entry covers nothing
        let mut holed = vec![entry("SYN1", range(1..11), 1), entry("SYN1", range(12..21), 1)];
        assert!(!Store::covered(&holed, &id, "p", &range(5..16)));
        assert!(Store::covered(&holed, &id, "p", &range(13..16)));
        holed[1].settled = false;
        assert!(!Store::covered(&holed, &id, "p", &range(13..16)));
    }

    fn log_text(store: &Store) -> String {
        fs::read_to_string(store.ledger_log_path()).unwrap()
    }

    #[test]
    fn appends_replace_earlier_entries_and_compaction_keeps_the_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut writer = store.ledger_writer(store.read_ledger().unwrap()).unwrap();
        writer.compact_min_lines = 64;
        writer.append(&[entry("A", range(1..11), 10), entry("B", range(1..11), 10)]).unwrap();
        writer.append(&[entry("A", range(1..11), 9)]).unwrap();
        // one header and three lines; the second A replaces the first
        assert_eq!(log_text(&store).lines().count(), 4);
        let read = store.read_ledger().unwrap();
        assert_eq!((read.len(), read.lines()), (2, 3));
        assert_eq!(store.ledger().unwrap(), vec![entry("A", range(1..11), 9), entry("B", range(1..11), 10)]);
        // the same chunk written over and over: the log is compacted back to its live entries
        for n in 0..64 {
            writer.append(&[entry("A", range(1..11), n)]).unwrap();
            assert!(writer.ledger().lines() <= 64, "never grows past the threshold");
        }
        let read = store.read_ledger().unwrap();
        assert_eq!(read.len(), 2);
        assert!(read.lines() < 10, "{} lines after compaction", read.lines());
        assert_eq!(store.ledger().unwrap()[0].rows, 63);
        // appends after a compaction go to the new file
        writer.append(&[entry("C", range(1..11), 1)]).unwrap();
        assert_eq!(store.ledger().unwrap().len(), 3);
        let names: Vec<String> = fs::read_dir(dir.path().join(CATALOG))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [LEDGER_LOG_FILE], "no temporary file left");
    }

    /// Two writers of one store (two collections, each taking the lock only for its writes):
    /// neither loses the other's entries, whether the other appended, compacted the log, or
    /// left a torn line in between.
    #[test]
    fn two_writers_taking_turns_keep_each_others_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut first = store.ledger_writer(store.read_ledger().unwrap()).unwrap();
        let mut second = store.ledger_writer(store.read_ledger().unwrap()).unwrap();
        first.compact_min_lines = 8;
        first.append(&[entry("A", range(1..11), 1)]).unwrap();
        second.append(&[entry("B", range(1..11), 1)]).unwrap();
        first.append(&[entry("A", range(11..21), 1)]).unwrap();
        assert_eq!(store.ledger().unwrap().len(), 3);
        // the first compacts (a new file) while the second still holds the old one
        for n in 0..8 {
            first.append(&[entry("A", range(1..11), n)]).unwrap();
        }
        assert!(store.read_ledger().unwrap().lines() < 8, "compacted");
        second.append(&[entry("B", range(11..21), 1)]).unwrap();
        let regions = |store: &Store| -> Vec<String> {
            store.ledger().unwrap().iter().map(|e| format!("{} {}", e.series.region, e.range)).collect()
        };
        assert_eq!(regions(&store).len(), 4, "{:?}", regions(&store));
        // a torn line another writer left is cut off, and nothing else
        let mut file = fs::OpenOptions::new().append(true).open(store.ledger_log_path()).unwrap();
        file.write_all(b"{\"series\":").unwrap();
        first.append(&[entry("C", range(1..11), 1)]).unwrap();
        second.append(&[entry("D", range(1..11), 1)]).unwrap();
        assert_eq!(regions(&store).len(), 6, "{:?}", regions(&store));
        assert!(log_text(&store).ends_with('\n'));
    }

    #[test]
    fn a_torn_last_line_is_ignored_then_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.record(&[entry("A", range(1..11), 10)]).unwrap();
        let whole = log_text(&store);
        // a writer killed in the middle of its append
        let torn = serde_json::to_string(&entry("B", range(1..11), 10)).unwrap();
        fs::write(store.ledger_log_path(), format!("{whole}{}", &torn[..torn.len() / 2])).unwrap();
        assert_eq!(store.ledger().unwrap(), vec![entry("A", range(1..11), 10)]);
        // the next writer cuts the torn bytes off before it appends
        store.record(&[entry("C", range(1..11), 10)]).unwrap();
        let text = log_text(&store);
        assert!(text.starts_with(&whole) && text.ends_with('\n'), "{text}");
        assert_eq!(text.lines().count(), 3);
        assert_eq!(store.ledger().unwrap().len(), 2);
        // a damaged line before the last is an error naming the file and the line
        fs::write(store.ledger_log_path(), format!("{whole}{{broken\n{torn}\n")).unwrap();
        let error = store.ledger().unwrap_err().to_string();
        assert!(error.contains("ledger.jsonl") && error.contains("line 3"), "{error}");
        // and so is a file without the header
        fs::write(store.ledger_log_path(), format!("{torn}\n")).unwrap();
        let error = store.ledger().unwrap_err().to_string();
        assert!(error.contains("header"), "{error}");
    }

    #[test]
    fn a_version_1_ledger_is_read_then_migrated_by_the_first_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        fs::create_dir_all(dir.path().join(CATALOG)).unwrap();
        let old = vec![entry("A", range(1..11), 10), entry("B", range(1..11), 10)];
        let bytes = serde_json::to_vec_pretty(&LedgerFile::V1 { entries: old.clone() }).unwrap();
        fs::write(store.ledger_v1_path(), bytes).unwrap();
        // readers read it as it is
        assert_eq!(store.ledger().unwrap(), old);
        assert!(!store.ledger_log_path().exists());
        // the first writer moves it to the log
        store.record(&[entry("C", range(1..11), 10)]).unwrap();
        assert!(!store.ledger_v1_path().exists());
        assert_eq!(store.ledger().unwrap().len(), 3);
        assert_eq!(&store.ledger().unwrap()[..2], &old[..]);
        // a damaged version-1 file is an error naming it
        fs::remove_file(store.ledger_log_path()).unwrap();
        fs::write(store.ledger_v1_path(), b"{not json").unwrap();
        let error = store.ledger().unwrap_err().to_string();
        assert!(error.contains("ledger.json") && error.contains("corrupt"), "{error}");
    }
}
