//! The store's folder layout: hive partition names (`source=…/region=…/kind=…/year=…/month=…`,
//! values percent-encoded), the calendar months a range touches, and walks of the tree that
//! follow no symbolic link.
use super::Store;
use crate::ingest::IngestError;
use crate::time::{DateRange, from_us};
use chrono::{Datelike, Utc};
use std::fs;
use std::path::{Path, PathBuf};

/// The folders `{prefix}{value}` in `dir` with their decoded values; a symbolic link named so
/// is refused.
pub(super) fn subdirs(dir: &Path, prefix: &str) -> Result<Vec<(PathBuf, String)>, IngestError> {
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
pub(super) fn count_files(dir: &Path) -> usize {
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
pub(super) fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), IngestError> {
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
pub(super) fn partition_month(dir: &Path, path: &Path) -> Option<(i32, u32)> {
    let mut parts = path.strip_prefix(dir).ok()?.components().map(|c| c.as_os_str().to_str());
    let year = parts.next()??.strip_prefix("year=")?.parse().ok()?;
    let month = parts.next()??.strip_prefix("month=")?.parse().ok()?;
    Some((year, month))
}

/// Does the folder tree `dir` (that may not exist) hold a Parquet file or a symbolic link?
/// Stops at the first one found.
pub(super) fn holds_file_or_link(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    entries.flatten().any(|entry| match entry.file_type() {
        Ok(kind) if kind.is_symlink() => true,
        Ok(kind) if kind.is_dir() => holds_file_or_link(&entry.path()),
        Ok(kind) => kind.is_file() && entry.path().extension().is_some_and(|x| x == "parquet"),
        Err(_) => false,
    })
}

/// Refuse a folder tree (that may not exist) holding a symbolic link anywhere.
pub(super) fn refuse_links_below(dir: &Path) -> Result<(), IngestError> {
    parquet_files(dir, &mut Vec::new())
}

pub(super) fn link_error(path: &Path) -> IngestError {
    IngestError::StoreLink { path: path.to_owned(), target: fs::read_link(path).unwrap_or_default() }
}

/// (year, month) of every calendar month (UTC) that holds an interval end of `range`.
pub(super) fn months_of(range: &DateRange) -> Vec<(i32, u32)> {
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
pub(super) fn month_range(year: i32, month: u32) -> DateRange {
    use chrono::TimeZone;
    let start = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().expect("valid month");
    let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let end = Utc.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single().expect("valid month");
    // An interval ending exactly at midnight on the 1st belongs to the month it ends in.
    DateRange { start: start - chrono::TimeDelta::hours(1), end: end - chrono::TimeDelta::hours(1) }
}

/// Percent-encode a partition value (anything but `A-Za-z0-9._-`), as hive readers decode it.
pub(super) fn encode(value: &str) -> String {
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

pub(super) fn decode(value: &str) -> String {
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

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(encode("CA ISO-TAC"), "CA%20ISO-TAC");
        assert_eq!(decode(&encode("CA ISO-TAC/x")), "CA ISO-TAC/x");
    }
}
