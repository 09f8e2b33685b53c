//! Reliability of the store under the real binary: `energy collect` killed with SIGKILL at
//! varied points and re-run ends in the store a clean run makes; two collections at once both
//! succeed and never corrupt it; the lock dies with its holder; the EIA key never reaches an output or a file.
//!
//! No sleeps decide anything here: kills are timed by the child's progress in the store (its
//! lock file, ledger entries and temporary files), watched by a bounded poll.
use super::cli::energy;
use super::common::*;
use energy::ingest::store::checksum;
use energy::ingest::{SeriesId, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_energy");

/// Eight years of two synthetic regions (four series, 97 month chunks: the last hour, ending at
/// 2020-01-01T00, is January's): a few seconds of work.
const LONG_COLLECT: [&str; 11] = [
    "collect",
    "--start",
    "2012-01-01",
    "--end",
    "2019-12-31",
    "--region",
    "SYN1",
    "--region",
    "SYN2",
    "--concurrency",
    "2",
];
/// Two regions × (load, temperature, TEMP_D1, TEMP_D2).
const LONG_SERIES: usize = 8;
const LONG_CHUNKS: usize = 97;

/// The longest any wait on a child's progress may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn spawn(store: &Path, args: &[&str], stderr: Stdio) -> Child {
    Command::new(BIN)
        .env_remove("ENERGY_STORE")
        .env_remove("RUST_LOG")
        .env_remove("EIA_API_KEY")
        .arg("--store")
        .arg(store)
        .args(args)
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("the energy binary starts")
}

/// Poll (bounded) until `reached` holds or the child exits; true when `reached` held.
fn wait_for(child: &mut Child, mut reached: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if reached() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "the child made no progress in {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn ledger_len(store: &Path) -> usize {
    Store::new(store).ledger().expect("the ledger is always readable, even after a kill").len()
}

fn lock_holder(store: &Path) -> Option<u32> {
    std::fs::read_to_string(store.join("_catalog/lock")).ok()?.trim().parse().ok()
}

fn ledger_being_written(store: &Path) -> bool {
    std::fs::read_dir(store.join("_catalog"))
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().contains(".tmp-")))
        .unwrap_or(false)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

pub(super) fn temp_files(store: &Path) -> Vec<PathBuf> {
    walk(store).into_iter().filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp-")).collect()
}

/// Every series sorted without a duplicate timestamp, and every ledger entry matching the
/// files: as many rows in its range as it says, with its checksum. Returns the ledger's length.
pub(super) fn assert_consistent(root: &Path) -> usize {
    let store = Store::new(root);
    let ledger = store.ledger().unwrap();
    for entry in &ledger {
        assert!(store.has_series(&entry.series), "the ledger names {} but the store has no file of it", entry.series);
    }
    for id in store.list_series().unwrap() {
        let rows = store.read(&id, None).unwrap();
        assert!(rows.timestamps.windows(2).all(|w| w[0] < w[1]), "{id}: duplicate or unsorted timestamps");
        for entry in ledger.iter().filter(|e| e.series == id) {
            let stored = rows.timestamps.iter().filter(|t| entry.range.holds_us(**t)).count();
            assert_eq!(stored, entry.rows, "{id} {}: rows in the files vs the ledger", entry.range);
            assert_eq!(checksum(&rows, &entry.range), entry.checksum, "{id} {}: checksum", entry.range);
        }
    }
    ledger.len()
}

/// The same series, rows, values, status and ledger (less collection times) in both stores.
fn assert_same_store(got: &Path, want: &Path) {
    assert_same_rows(got, want);
    let (got_store, want_store) = (Store::new(got), Store::new(want));
    let status = |store: &Path| -> serde_json::Value {
        let out = energy(store).args(["status", "--json"]).assert().success();
        serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()["series"].clone()
    };
    assert_eq!(status(got), status(want));
    assert_eq!(ledger(&got_store), ledger(&want_store));
    assert!(temp_files(got).is_empty(), "temporary files left: {:?}", temp_files(got));
}

/// The same series with the same rows and values in both stores.
fn assert_same_rows(got: &Path, want: &Path) {
    let (got_store, want_store) = (Store::new(got), Store::new(want));
    let series = want_store.list_series().unwrap();
    assert_eq!(got_store.list_series().unwrap(), series);
    for id in &series {
        assert_eq!(got_store.read(id, None).unwrap(), want_store.read(id, None).unwrap(), "{id}");
    }
}

fn clean_run(root: &Path, args: &'static [&'static str]) -> std::thread::JoinHandle<()> {
    let root = root.to_owned();
    std::thread::spawn(move || {
        energy(&root).args(args).arg("-q").assert().success();
    })
}

/// Where in a collection a run is killed.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// At once: before or while the store is locked.
    AtStart,
    /// Once it holds the lock (leftover temporary files are being removed).
    LockHeld,
    /// After `n` more chunks are in the ledger: usually inside the next chunk's writes.
    AfterChunks(usize),
    /// While the ledger's temporary file exists: partitions renamed, ledger not yet.
    LedgerWrite,
}

#[test]
fn collect_killed_at_varied_points_then_rerun_equals_a_clean_run() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (crashed, clean) = (dir.path().join("crashed"), dir.path().join("clean"));
    let clean_done = clean_run(&clean, &LONG_COLLECT);

    let mut interrupted = 0;
    let mut temp_left = 0;
    for round in 0..24 {
        let point = match round % 4 {
            0 => KillPoint::AtStart,
            1 => KillPoint::LockHeld,
            2 => KillPoint::AfterChunks(1 + (round / 4) % 3),
            _ => KillPoint::LedgerWrite,
        };
        let before = if crashed.exists() { ledger_len(&crashed) } else { 0 };
        let mut child = spawn(&crashed, &LONG_COLLECT, Stdio::null());
        let pid = child.id();
        match point {
            KillPoint::AtStart => {}
            KillPoint::LockHeld => {
                wait_for(&mut child, || lock_holder(&crashed) == Some(pid));
            }
            KillPoint::AfterChunks(n) => {
                wait_for(&mut child, || ledger_len(&crashed) >= before + n * LONG_SERIES);
            }
            KillPoint::LedgerWrite => {
                // the window is short: give up on it after three chunks
                wait_for(&mut child, || {
                    ledger_being_written(&crashed) || ledger_len(&crashed) >= before + 3 * LONG_SERIES
                });
            }
        }
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        temp_left += temp_files(&crashed).len();
        // whatever the kill interrupted, what the store holds is consistent
        if crashed.join("_catalog").exists() {
            assert_consistent(&crashed);
        }
    }
    assert!(interrupted >= 20, "only {interrupted} of 24 runs were killed while running");
    let done = ledger_len(&crashed);
    assert!(done < LONG_CHUNKS * LONG_SERIES, "the kills left no work for the last run");
    eprintln!("{interrupted} runs killed; {done} ledger entries before the last run; {temp_left} temporary files seen");

    energy(&crashed).args(LONG_COLLECT).arg("-q").assert().success();
    clean_done.join().unwrap();
    assert_eq!(assert_consistent(&crashed), LONG_CHUNKS * LONG_SERIES);
    assert_consistent(&clean);
    assert_same_store(&crashed, &clean);
    eprintln!("crash test took {:.1} s", started.elapsed().as_secs_f64());
}

const SHORT_COLLECT: [&str; 7] = ["collect", "--start", "2018-01-01", "--end", "2019-12-31", "--region", "SYN1"];

/// A collection holds the store lock only while it writes: a second collection started while
/// the first runs (of some of the same series) runs beside it, both succeed, and the store
/// holds the rows a clean run makes, its ledger matching its files (it may hold more entries:
/// a chunk the second planned differently from the first, fetched before the first wrote it).
#[test]
fn a_second_collection_runs_beside_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (shared, clean) = (dir.path().join("shared"), dir.path().join("clean"));
    // the long run covers the short one's range: the clean store is the long run alone
    let clean_done = clean_run(&clean, &LONG_COLLECT);

    let mut first = spawn(&shared, &LONG_COLLECT, Stdio::piped());
    let pid = first.id();
    let running = wait_for(&mut first, || lock_holder(&shared) == Some(pid) && ledger_len(&shared) >= LONG_SERIES);
    assert!(running, "the first writer finished before it could be watched");
    let second = spawn(&shared, &SHORT_COLLECT, Stdio::piped()).wait_with_output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    clean_done.join().unwrap();
    assert!(assert_consistent(&shared) >= LONG_CHUNKS * LONG_SERIES);
    assert_same_rows(&shared, &clean);
    assert!(temp_files(&shared).is_empty(), "temporary files left: {:?}", temp_files(&shared));
}

#[test]
fn two_collections_started_together_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean");
    clean_run(&clean, &SHORT_COLLECT).join().unwrap();
    for round in 0..3 {
        let shared = dir.path().join(format!("shared{round}"));
        let a = spawn(&shared, &SHORT_COLLECT, Stdio::piped());
        let b = spawn(&shared, &SHORT_COLLECT, Stdio::piped());
        for output in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        }
        assert_consistent(&shared);
        assert_same_store(&shared, &clean);
    }
}

#[test]
fn a_killed_lock_holder_does_not_block_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut child = spawn(&root, &LONG_COLLECT, Stdio::null());
    let pid = child.id();
    // caught while it writes (it holds the lock only then): the refusal names it
    let holder = format!("is in use by pid {pid}");
    let holding = wait_for(&mut child, || {
        ledger_len(&root) >= LONG_SERIES && Store::new(&root).lock().is_err_and(|e| e.to_string().contains(&holder))
    });
    assert!(holding, "the writer finished before it could be caught writing");
    child.kill().unwrap();
    child.wait().unwrap();
    // dead, it holds nothing: the lock is free at once, and the next run completes
    let lock = Store::new(&root).lock().expect("the lock dies with its holder");
    assert!(temp_files(&root).is_empty(), "taking the lock removes the killed writer's temporary files");
    drop(lock);
    energy(&root).args(LONG_COLLECT).arg("-q").assert().success();
    assert_eq!(assert_consistent(&root), LONG_CHUNKS * LONG_SERIES);
}

const SECRET: &str = "SECRETKEY1234567890abcdefSECRETKEY1234567";

#[test]
fn the_eia_key_never_reaches_an_output_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let runs: &[&[&str]] = &[
        &["collect", "--source", "synthetic", "--start", "2024-01-01", "--end", "2024-02-15", "--json"],
        &["collect", "--source", "synthetic", "--start", "2024-01-01", "--end", "2024-02-15"],
        &["status", "--json"],
        &["status"],
        // failing runs: their errors must not carry it either
        &["collect", "--source", "synthetic", "--region", "SYN/../1"],
        &["collect", "--source", "synthetic", "--days", "0", "--json"],
        &["collect", "--help"],
    ];
    let mut outputs = Vec::new();
    for args in runs {
        let output = energy(&root).env("EIA_API_KEY", SECRET).arg("-vvv").args(*args).output().unwrap();
        outputs.push((args.join(" "), output));
    }
    // the first run did collect (so the search below covers real files)
    assert!(outputs[0].1.status.success());
    assert_eq!(Store::new(&root).list_series().unwrap().len(), 4);
    for (args, output) in &outputs {
        for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
            assert!(!contains(bytes, SECRET.as_bytes()), "`energy {args}` printed the key on {stream}");
            assert!(!contains(bytes, &SECRET.as_bytes()[..16]), "`energy {args}` printed part of the key on {stream}");
        }
    }
    let files = walk(&root);
    assert!(files.len() >= 6, "{files:?}");
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        assert!(!contains(&bytes, SECRET.as_bytes()), "{} holds the key", path.display());
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn series_ids_in_the_ledger_are_the_stored_ones() {
    // a cheap guard for the helpers above: a consistent store passes, a tampered one fails
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    energy(&root).args(["collect", "--start", "2024-01-01", "--end", "2024-02-10", "-q"]).assert().success();
    assert_eq!(assert_consistent(&root), 8);
    let store = Store::new(&root);
    let id = SeriesId::new("synthetic", "SYN1", "D");
    let mut rows = store.read(&id, None).unwrap();
    rows.values[3] = rows.values[3].map(|v| v + 1.0);
    let range = store.ledger().unwrap()[0].range;
    let _lock = store.lock().unwrap();
    store.write_range(&[rows], range).unwrap();
    let tampered = std::panic::catch_unwind(|| assert_consistent(&root));
    assert!(tampered.is_err(), "a value changed behind the ledger's back must be caught");
}
