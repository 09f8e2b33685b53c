//! The completed-chunk ledger, `{root}/_catalog/ledger.json`: which `(series, range)` chunks
//! are in the store, collected with which source parameters, with how many rows and their
//! checksum. It is the collection's checkpoint: written atomically ([`super::write_atomic`]),
//! after the chunk's partitions are in place, versioned with `#[serde(tag = "version")]`.
use super::{CATALOG, LEDGER_FILE, Store, write_atomic};
use crate::ingest::{IngestError, SeriesId, SeriesRows};
use crate::time::DateRange;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

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

impl Store {
    pub(super) fn ledger_path(&self) -> PathBuf {
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
        if let Some(catalog) = path.parent() {
            fs::create_dir_all(catalog).map_err(Store::io(catalog))?;
        }
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
}
