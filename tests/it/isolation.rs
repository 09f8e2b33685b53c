//! Store isolation: source, region and kind names never leave the store (`..`, separators,
//! absolute paths, control characters, empty and overlong names are refused with one error line
//! naming the value, exit code 1, the store and its surroundings unchanged), and the store follows
//! no symbolic link out of its root (a linked `source=…`, `region=…`, partition or `_catalog`
//! folder is refused for writing and reading, and nothing outside the root is written or removed).
use super::cli::energy;
use super::common::*;
use energy::ingest::{IngestError, SeriesId, SeriesRows, Store};
use energy::time::{DateRange, HOUR_US};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The lines of stderr that are not blank.
fn lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr).lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// A store holding three days of SYN1 (load and temperature), in `dir/store`.
fn store_with_data(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    energy(&store).args(["collect", "--start", "2024-01-01", "--end", "2024-01-03", "-q"]).assert().success();
    store
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn bad_names_are_refused_with_one_line_exit_1_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_data(dir.path());
    let csv = dir.path().join("load.csv");
    let mut text = String::from("timestamp,value\n");
    for h in 1..=48 {
        text.push_str(&format!("2024-02-{:02}T{:02}:00:00Z,{}\n", 1 + h / 24, h % 24, 1000 + h));
    }
    std::fs::write(&csv, text).unwrap();
    let file = |kind: &str| -> Vec<OsString> {
        ["collect", "--source", "file", "--region", "HOME", "--kind", kind, "--path"]
            .iter()
            .map(OsString::from)
            .chain([csv.clone().into_os_string()])
            .collect()
    };
    let args = |list: &[&str]| -> Vec<OsString> { list.iter().map(OsString::from).collect() };
    let long = "A".repeat(70);
    // (arguments, what the error line must say)
    let cases: Vec<(Vec<OsString>, String)> = vec![
        (args(&["collect", "--region", ".."]), "invalid region `..`".into()),
        (args(&["collect", "--region", "."]), "invalid region `.`".into()),
        (args(&["collect", "--region", "...", "--start", "2024-01-01", "--end", "2024-01-01"]), "`...`".into()),
        (args(&["collect", "--region", "../evil"]), "`../evil`".into()),
        (args(&["collect", "--region", "../../../tmp/evil"]), "`../../../tmp/evil`".into()),
        (args(&["collect", "--region", "/tmp/evil"]), "`/tmp/evil`".into()),
        (args(&["collect", "--region", "a\\b"]), "invalid region `a\\\\b`".into()),
        (args(&["collect", "--region", "SYN1\n"]), "invalid region".into()),
        (args(&["collect", "--region", ""]), "invalid region".into()),
        (args(&["collect", "--region", &long]), "invalid region".into()),
        (file(".."), "invalid kind `..`".into()),
        (file("../evil"), "invalid kind `../evil`".into()),
        (file("/etc/evil"), "invalid kind `/etc/evil`".into()),
        (file("a\\b"), "invalid kind `a\\\\b`".into()),
        (file("A\tB"), "invalid kind `A\\tB`: it holds a control character".into()),
        (file(""), "invalid kind ``: it is empty".into()),
        (file(&long), "is 70 bytes long".into()),
        (
            args(&["collect", "--source", "caiso", "--region", "..", "--caiso-url", "http://127.0.0.1:9"]),
            "invalid region `..`".into(),
        ),
        // the command line applies the store's name rule before looking for the series
        (args(&["features", "--region", ".."]), "invalid region `..`".into()),
        (args(&["features", "--region", "../evil"]), "`../evil`".into()),
        (args(&["features", "--kind", "../evil"]), "synthetic:SYN1:../evil".into()),
        (args(&["status", "--compare", "synthetic:../evil:D", "synthetic:SYN1:D"]), "synthetic:../evil:D".into()),
        (args(&["status", "--compare", "synthetic:SYN1:D", "synthetic:SYN1:.."]), "synthetic:SYN1:..".into()),
        (args(&["status", "--compare", "../x:SYN1:D", "synthetic:SYN1:D"]), "../x:SYN1:D".into()),
    ];
    let mut failures = Vec::new();
    for (args, message) in &cases {
        let before = snapshot(dir.path());
        let out = energy(&store).args(args).output().unwrap();
        let errors = lines(&out.stderr);
        let shown = format!("{args:?}: {errors:?}");
        if out.status.code() != Some(1) {
            failures.push(format!("{shown}: exit code {:?}, expected 1", out.status.code()));
        }
        if errors.len() != 1 || !errors[0].starts_with("error: ") || !errors[0].contains(message.as_str()) {
            failures.push(format!("{shown}: expected one `error: …` line saying `{message}`"));
        }
        if String::from_utf8_lossy(&out.stderr).contains("panicked") {
            failures.push(format!("{shown}: panicked"));
        }
        if snapshot(dir.path()) != before {
            failures.push(format!("{shown}: the store or its folder changed"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // the store still reads as before
    let status = energy(&store).args(["status", "--json"]).assert().success();
    let status: serde_json::Value = serde_json::from_slice(&status.get_output().stdout).unwrap();
    assert_eq!(status["series"].as_array().unwrap().len(), 4, "{status}");
}

fn rows(id: &SeriesId) -> SeriesRows {
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let t0 = start.timestamp_micros();
    SeriesRows {
        id: id.clone(),
        timestamps: (1..=24).map(|h| t0 + h * HOUR_US).collect(),
        values: (1..=24).map(|h| Some(h as f64)).collect(),
    }
}

fn day() -> DateRange {
    let d = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    DateRange::from_days(d, d).unwrap()
}

/// The library refuses the same names (and NUL, which no command line can carry) at the store.
#[test]
fn the_store_refuses_bad_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let _lock = store.lock().unwrap();
    let before = snapshot(dir.path());
    let bad = [
        SeriesId::new("synthetic", "..", "D"),
        SeriesId::new("synthetic", "../../evil", "D"),
        SeriesId::new("synthetic", "/tmp/evil", "D"),
        SeriesId::new("synthetic", "SYN1", "a\0b"),
        SeriesId::new("synthetic", "SYN1", "a\\b"),
        SeriesId::new("..", "SYN1", "D"),
        SeriesId::new("", "SYN1", "D"),
        SeriesId::new("synthetic", "SYN1", ""),
        SeriesId::new("synthetic", "R".repeat(65), "D"),
        SeriesId::new("synthetic", "SYN1\r", "D"),
    ];
    for id in &bad {
        let what = format!("{id:?}");
        for error in [
            store.write_range(&[rows(id)], day()).unwrap_err(),
            store.read(id, None).unwrap_err(),
            store.check_series(std::slice::from_ref(id)).unwrap_err(),
        ] {
            assert!(matches!(error, IngestError::InvalidRequest(_)) && error.is_bad_input(), "{what}: {error}");
            let text = error.to_string();
            assert!(text.starts_with("invalid ") && text.lines().count() == 1, "{what}: {text}");
        }
        assert!(!store.has_series(id), "{what}");
    }
    assert_eq!(snapshot(dir.path()), before, "nothing was written");
    // the real names are fine
    for id in [
        SeriesId::new("caiso", "CA ISO-TAC", "ACTUAL"),
        SeriesId::new("caiso", "PGE-TAC", "2DA"),
        SeriesId::new("eia", "CISO", "FUEL_SUN"),
        SeriesId::new("synthetic", "SYN1", "TEMP"),
    ] {
        store.write_range(&[rows(&id)], day()).unwrap();
        assert_eq!(store.read(&id, None).unwrap(), rows(&id));
    }
}

/// `source=synthetic` linked to a folder outside: collect, status and features refuse, naming the
/// link, and nothing is written outside.
#[test]
fn a_linked_source_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, outside) = (dir.path().join("store"), dir.path().join("outside"));
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let link = store.join("source=synthetic");
    symlink(&outside, &link);
    let out = energy(&store).args(["collect", "--start", "2024-01-01", "--end", "2024-01-03"]).output().unwrap();
    let errors = lines(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(&link.display().to_string()) && errors[0].contains("symbolic link"), "{errors:?}");
    assert!(snapshot(&outside).is_empty(), "nothing written outside: {:?}", snapshot(&outside));
    assert!(!store.join("_catalog").exists(), "refused before the store was touched");
    // reads: status lists series through the link, so it refuses too
    let series = outside.join("region=SYN1/kind=D/year=2024/month=01");
    std::fs::create_dir_all(&series).unwrap();
    std::fs::copy(data_file(dir.path()), series.join("part-0000.parquet")).unwrap();
    for args in [&["status"][..], &["features", "--region", "SYN1"], &["--json", "status"]] {
        let out = energy(&store).args(args).output().unwrap();
        let errors = lines(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {errors:?}");
        assert!(errors.len() == 1 && errors[0].contains("symbolic link"), "{args:?}: {errors:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// A data file of a real store, to plant behind links.
fn data_file(dir: &Path) -> PathBuf {
    let store = dir.join("donor");
    energy(&store).args(["collect", "--start", "2024-01-01", "--end", "2024-01-03", "-q"]).assert().success();
    store.join("source=synthetic/region=SYN1/kind=D/year=2024/month=01/part-0000.parquet")
}

/// A `region=…` folder moved outside and linked back: reads and writes of that series refuse,
/// the data outside is never touched, and the other series of the store still work.
#[test]
fn a_linked_region_folder_is_refused_for_reading_and_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_data(dir.path());
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let region = store.join("source=synthetic/region=SYN1");
    std::fs::rename(&region, outside.join("region=SYN1")).unwrap();
    symlink(&outside.join("region=SYN1"), &region);
    let outside_before = snapshot(&outside);

    let refused = |args: &[&str]| {
        let out = energy(&store).args(args).output().unwrap();
        let errors = lines(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {errors:?}");
        assert!(
            errors.len() == 1 && errors[0].contains("symbolic link") && errors[0].contains("region=SYN1"),
            "{args:?}: {errors:?}"
        );
    };
    refused(&["collect", "--start", "2024-01-04", "--end", "2024-01-05"]);
    refused(&["status"]);
    refused(&["features", "--region", "SYN1"]);
    refused(&["status", "--compare", "synthetic:SYN1:D", "synthetic:SYN1:TEMP"]);
    assert_eq!(snapshot(&outside), outside_before, "the data outside is untouched");

    // the library says the same for every entry point
    let lib = Store::new(&store);
    let id = SeriesId::new("synthetic", "SYN1", "D");
    let link_error = |e: IngestError| assert!(matches!(e, IngestError::StoreLink { .. }), "{e}");
    link_error(lib.read(&id, None).unwrap_err());
    link_error(lib.write_range(&[rows(&id)], day()).unwrap_err());
    link_error(lib.check_series(std::slice::from_ref(&id)).unwrap_err());
    link_error(lib.list_series().unwrap_err());
    assert!(lib.has_series(&id), "a linked series counts as held, so that reading it says why it is refused");
    assert_eq!(snapshot(&outside), outside_before, "the data outside is untouched");

    // another region of the same store is fine
    energy(&store)
        .args(["collect", "--region", "SYN2", "--start", "2024-01-01", "--end", "2024-01-01", "-q"])
        .assert()
        .success();
    assert!(store.join("source=synthetic/region=SYN2/kind=D").is_dir());
}

/// A partition folder or a data file linked from outside: reading the series refuses.
#[test]
fn a_linked_partition_or_file_is_refused() {
    for what in ["month", "file"] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_data(dir.path());
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let month = store.join("source=synthetic/region=SYN1/kind=D/year=2024/month=01");
        let (inside, target) = match what {
            "month" => (month.clone(), outside.join("month=01")),
            _ => (month.join("part-0000.parquet"), outside.join("part-0000.parquet")),
        };
        std::fs::rename(&inside, &target).unwrap();
        symlink(&target, &inside);
        let outside_before = snapshot(&outside);
        let lib = Store::new(&store);
        let id = SeriesId::new("synthetic", "SYN1", "D");
        let error = lib.read(&id, None).unwrap_err();
        assert!(matches!(error, IngestError::StoreLink { .. }), "{what}: {error}");
        assert!(error.to_string().contains(&inside.display().to_string()), "{what}: {error}");
        let error = lib.write_range(&[rows(&id)], day()).unwrap_err();
        assert!(matches!(error, IngestError::StoreLink { .. }), "{what}: {error}");
        let out = energy(&store).args(["collect", "--start", "2024-01-01", "--end", "2024-01-03"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{what}: {:?}", lines(&out.stderr));
        assert_eq!(snapshot(&outside), outside_before, "{what}: the data outside is untouched");
    }
}

/// `_catalog` linked outside: no lock, ledger or temporary file is ever written there.
#[test]
fn a_linked_catalog_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, outside) = (dir.path().join("store"), dir.path().join("outside"));
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    symlink(&outside, &store.join("_catalog"));
    for args in [&["collect", "--start", "2024-01-01", "--end", "2024-01-01"][..], &["status"]] {
        let out = energy(&store).args(args).output().unwrap();
        let errors = lines(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {errors:?}");
        assert!(
            errors.len() == 1 && errors[0].contains("_catalog") && errors[0].contains("symbolic link"),
            "{errors:?}"
        );
    }
    let lib = Store::new(&store);
    assert!(matches!(lib.lock().unwrap_err(), IngestError::StoreLink { .. }));
    assert!(matches!(lib.ledger().unwrap_err(), IngestError::StoreLink { .. }));
    assert!(snapshot(&outside).is_empty(), "nothing written outside: {:?}", snapshot(&outside));
    assert!(!store.join("source=synthetic").exists());
}

/// Taking the lock removes a killed writer's temporary files, but never through a link: a
/// folder outside that a link inside the store points to keeps its files.
#[test]
fn leftover_cleanup_does_not_follow_links() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_data(dir.path());
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let precious = outside.join("notes.txt.tmp-1");
    std::fs::write(&precious, "not the store's").unwrap();
    symlink(&outside, &store.join("elsewhere"));
    // a leftover inside the store is removed as before
    let leftover = store.join("source=synthetic/region=SYN1/kind=D/year=2024/month=01/part-0000.parquet.tmp-1");
    std::fs::write(&leftover, "PAR1").unwrap();
    energy(&store).args(["collect", "--start", "2024-01-01", "--end", "2024-01-03", "-q"]).assert().success();
    assert!(!leftover.exists(), "the store's leftover is removed");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not the store's", "the file outside is kept");
}

/// A root that is itself a link is fine: only links below the root are refused.
#[test]
fn a_linked_root_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let root = dir.path().join("root");
    symlink(&real, &root);
    energy(&root).args(["collect", "--start", "2024-01-01", "--end", "2024-01-01", "-q"]).assert().success();
    energy(&root).args(["status"]).assert().success();
    assert!(real.join("source=synthetic/region=SYN1/kind=D").is_dir());
}
