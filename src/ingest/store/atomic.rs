//! The one atomic file write of the program: temporary file beside the target, written,
//! flushed (`fsync`), renamed over the target, then the folder flushed so that the rename
//! itself survives a crash. A crash leaves the old file or the new one, never a mix; every
//! failing step, the folder's flush included, is an error ([`IngestError::StoreIo`]) naming the
//! path it failed on.
//!
//! The store, the feature table and the model's checkpoints all write through
//! [`write_atomic`] or [`write_atomic_with`].
use super::Store;
use crate::ingest::IngestError;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What every temporary file's name holds (a writer killed mid-write leaves such files; the
/// store removes those below its root when it takes its lock).
pub(crate) const TEMP_MARK: &str = ".tmp-";

/// Numbers the temporary files of one process, so that concurrent writes of one path never
/// share a temporary file.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary name `path` is written under: hidden, beside it, unique to this process and
/// call (`.{name}.tmp-{pid}-{n}`); with `keep_extension`, `path`'s extension follows, for
/// writers that choose the format by it (MLX appends `.safetensors` to a name without it).
/// Without it, no temporary file ends in `.parquet`, so that readers of the store never list one.
pub(crate) fn temp_path(path: &Path, keep_extension: bool) -> PathBuf {
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp = format!(".{name}{TEMP_MARK}{}-{n}", std::process::id());
    if keep_extension && let Some(extension) = path.extension() {
        temp.push('.');
        temp.push_str(&extension.to_string_lossy());
    }
    path.with_file_name(temp)
}

/// Create `path` for writing, never following a link: a stale file of that name is removed
/// first, then the file is created exclusively (`O_EXCL`).
pub(crate) fn create_new(path: &Path) -> Result<File, IngestError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Store::io(path)(e)),
    }
    fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(Store::io(path))
}

/// Flush a folder, so that the renames in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IngestError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Store::io(dir))
}

/// Write `bytes` to `path` atomically (see the module documentation). The folder must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    write_atomic_with(path, |temp| fs::OpenOptions::new().write(true).open(temp)?.write_all(bytes))
}

/// Write `path` atomically with `write`, which writes the whole file at the temporary path it
/// is given (already created, empty, exclusively; it ends with `path`'s extension). An error of
/// `write` is reported on the temporary file; wrap other error types with
/// [`std::io::Error::other`]. The folder must exist. On failure the temporary file is removed
/// and `path` is as it was, unless only the final flush of the folder failed: then the new
/// file is in place but may not survive a crash, and the error says so.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), IngestError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if path.file_name().is_none() {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file");
        return Err(Store::io(path)(source));
    }
    let temp = temp_path(path, true);
    drop(create_new(&temp)?);
    let result = write(&temp)
        .map_err(Store::io(&temp))
        .and_then(|()| File::open(&temp).and_then(|file| file.sync_all()).map_err(Store::io(&temp)))
        .and_then(|()| fs::rename(&temp, path).map_err(Store::io(path)));
    if result.is_err() {
        // best effort: the original error is the one to report
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mut seen = None;
        write_atomic_with(&dir.path().join("model.safetensors"), |temp| {
            seen = Some(temp.to_owned());
            fs::write(temp, b"weights")
        })
        .unwrap();
        let seen = seen.unwrap();
        assert!(seen.extension().is_some_and(|x| x == "safetensors"), "{}", seen.display());
        assert!(seen.file_name().unwrap().to_string_lossy().contains(TEMP_MARK));
        assert_eq!(names(dir.path()), ["ledger.json", "model.safetensors"]);
    }

    /// The path an error names, and its I/O error.
    fn path_of(error: IngestError) -> (PathBuf, std::io::Error) {
        match error {
            IngestError::StoreIo { path, source } => (path, source),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn every_failure_is_an_error_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.parquet");
        fs::write(&path, b"old").unwrap();
        let (temp, source) =
            path_of(write_atomic_with(&path, |_| Err(std::io::Error::other("encoder failed"))).unwrap_err());
        assert!(temp.to_string_lossy().contains(TEMP_MARK), "{}", temp.display());
        assert_eq!(source.to_string(), "encoder failed");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["table.parquet"]);
        // a missing folder is not created
        let missing = dir.path().join("no-such-folder").join("table.parquet");
        let (temp, _) = path_of(write_atomic(&missing, b"x").unwrap_err());
        assert_eq!(temp.parent(), missing.parent());
        assert!(!missing.parent().unwrap().exists());
        // renaming over a folder fails at the rename, naming the target
        let folder = dir.path().join("folder");
        fs::create_dir(&folder).unwrap();
        fs::write(folder.join("inside"), b"x").unwrap();
        assert_eq!(path_of(write_atomic(&folder, b"x").unwrap_err()).0, folder);
        assert_eq!(names(dir.path()), ["folder", "table.parquet"]);
    }

    #[test]
    fn a_folder_that_cannot_be_flushed_is_an_error() {
        let error = sync_dir(Path::new("/no/such/folder")).unwrap_err();
        assert!(error.to_string().contains("/no/such/folder"), "{error}");
        assert_eq!(path_of(error).0, Path::new("/no/such/folder"));
    }
}
