//! Gap ranges of a stored series from its files' footers: the hours between two files are
//! seen from the files' first and last timestamps alone, and a file is read only when its
//! footer says it has a hole inside (fewer rows than the hours from its first to its last).
use super::parquet::{FileSummary, read_parquet};
use crate::ingest::{IngestError, SeriesId};
use crate::time::{HOUR_US, from_us};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;

/// A run of missing hours: no row from `first` to `last` (interval ends, both included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub hours: i64,
}

/// The gaps of one series, oldest first, and how many of its files had to be read to find
/// them (the rest were judged from their footers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeriesGaps {
    pub gaps: Vec<Gap>,
    pub files_read: usize,
}

impl SeriesGaps {
    /// The longest gap (the first of equal ones).
    pub fn longest(&self) -> Option<&Gap> {
        self.gaps.iter().rev().max_by_key(|gap| gap.hours)
    }

    /// The hours in all gaps.
    pub fn hours(&self) -> i64 {
        self.gaps.iter().map(|gap| gap.hours).sum()
    }

    /// Record the hours strictly between rows at `before` and `after` (µs) as a gap.
    fn between(&mut self, before: i64, after: i64) {
        let hours = (after - before) / HOUR_US - 1;
        if hours > 0 {
            self.gaps.push(Gap { first: from_us(before + HOUR_US), last: from_us(after - HOUR_US), hours });
        }
    }
}

/// The gaps of series `id` whose files and their footer summaries are `files`.
pub(super) fn gaps_of(id: &SeriesId, files: &[(PathBuf, FileSummary)]) -> Result<SeriesGaps, IngestError> {
    let mut ordered: Vec<(&PathBuf, i64, i64, usize)> = files
        .iter()
        .filter_map(|(path, s)| Some((path, s.first?, s.last?, s.rows)))
        .filter(|(_, _, _, rows)| *rows > 0)
        .collect();
    ordered.sort_by_key(|(_, first, _, _)| *first);
    let mut out = SeriesGaps::default();
    let mut previous_last: Option<i64> = None;
    for (path, first, last, rows) in ordered {
        if let Some(before) = previous_last {
            out.between(before, first);
        }
        let span = (last - first) / HOUR_US + 1;
        if (rows as i64) < span {
            // a hole inside the file: only its rows say where
            out.files_read += 1;
            let mut timestamps = read_parquet(path, id)?.timestamps;
            timestamps.sort_unstable();
            for pair in timestamps.windows(2) {
                out.between(pair[0], pair[1]);
            }
        }
        previous_last = Some(previous_last.map_or(last, |before| before.max(last)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_is_the_first_of_equals_and_hours_add_up() {
        let mut gaps = SeriesGaps::default();
        gaps.between(0, 4 * HOUR_US); // 3 hours
        gaps.between(10 * HOUR_US, 11 * HOUR_US); // none: consecutive
        gaps.between(20 * HOUR_US, 24 * HOUR_US); // 3 hours
        gaps.between(30 * HOUR_US, 32 * HOUR_US); // 1 hour
        assert_eq!(gaps.gaps.len(), 3);
        assert_eq!(gaps.hours(), 7);
        let longest = gaps.longest().unwrap();
        assert_eq!((longest.first.timestamp(), longest.last.timestamp(), longest.hours), (3600, 3 * 3600, 3));
    }
}
