//! Helpers several test modules share.
use energy::ingest::{SeriesId, Store};
use energy::time::DateRange;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A path with whether it is a folder, its size and its modification time.
pub(crate) type Entry = (PathBuf, bool, u64, SystemTime);

/// Every file, folder and link under `root` (links not followed) with size and modification
/// time, sorted: two snapshots are equal when nothing under `root` changed.
pub(crate) fn snapshot(root: &Path) -> Vec<Entry> {
    fn walk(dir: &Path, out: &mut Vec<Entry>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            out.push((entry.path(), meta.is_dir(), meta.len(), meta.modified().unwrap()));
            if meta.is_dir() {
                walk(&entry.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// A ledger entry without its collection time.
pub(crate) type LedgerEntry = (SeriesId, String, DateRange, usize, u32, bool);

/// The store's ledger without collection times, sorted by series and range.
pub(crate) fn ledger(store: &Store) -> Vec<LedgerEntry> {
    let mut entries: Vec<_> = store
        .ledger()
        .unwrap()
        .into_iter()
        .map(|e| (e.series, e.params, e.range, e.rows, e.checksum, e.settled))
        .collect();
    entries.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    entries
}

/// The weights of the model saved in `model`, by name.
pub(crate) fn weights(model: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    let arrays = mlx_rs::Array::load_safetensors(model.join("model.safetensors")).unwrap();
    arrays.into_iter().map(|(key, array)| (key, array.as_slice::<f32>().to_vec())).collect()
}
