//! `energy collect` and `energy status` on a temporary store, run as the real binary.
use super::cli::energy;
use super::realdata;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            let meta = entry.metadata().unwrap();
            out.push((path, meta.modified().unwrap(), meta.len()));
        }
    }
    out.sort();
    out
}

fn status_json(store: &Path) -> serde_json::Value {
    let out = energy(store).args(["status", "--json"]).assert().success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[test]
fn collect_then_status_then_collect_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let args =
        ["collect", "--start", "2024-01-01", "--end", "2024-03-31", "--region", "SYN1", "--region", "SYN2", "--json"];
    let out = energy(&store).args(args).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    // two regions × (load, temperature and its two as-issued forecasts)
    assert_eq!(report["rows"], 91 * 24 * 2 * 4);
    assert_eq!(report["failed_chunks"], 0);
    assert!(report["noise_floor"][0]["mape_next_24h_percent"].as_f64().unwrap() > 0.0);

    let status = status_json(&store);
    let series = status["series"].as_array().unwrap();
    assert_eq!(series.len(), 8);
    for s in series {
        assert_eq!(s["rows"], 91 * 24);
        assert_eq!(s["missing_hours"], 0);
        assert_eq!(s["first"], "2024-01-01T01:00:00Z");
        assert_eq!(s["last"], "2024-04-01T00:00:00Z");
    }

    let before = files(&store);
    let out = energy(&store).args(args).assert().success();
    let again: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(again["fetched_chunks"], 0);
    assert_eq!(again["rows"], 0);
    assert_eq!(files(&store), before, "a repeated collect must not touch any file");

    // an overlapping range: no duplicate timestamps
    energy(&store)
        .args(["collect", "--start", "2024-03-15", "--end", "2024-04-15", "--region", "SYN1", "-q"])
        .assert()
        .success();
    let status = status_json(&store);
    let syn1 = status["series"].as_array().unwrap().iter().find(|s| s["series"]["region"] == "SYN1").unwrap().clone();
    assert_eq!(syn1["rows"], 106 * 24);
    assert_eq!(syn1["missing_hours"], 0);
}

#[test]
fn status_of_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    energy(dir.path()).arg("status").assert().success().stdout(predicate::str::contains("holds no series"));
}

#[test]
fn store_is_readable_by_polars_with_hive_partitions() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    energy(dir.path()).args(["collect", "--start", "2024-01-30", "--end", "2024-02-02", "-q"]).assert().success();
    let args = ScanArgsParquet::default();
    let df = LazyFrame::scan_parquet(
        PlRefPath::new(format!("{}/source=synthetic/**/*.parquet", dir.path().display())),
        args,
    )
    .unwrap()
    .collect()
    .unwrap();
    // 4 days × 24 hours × (load, temperature, TEMP_D1, TEMP_D2)
    assert_eq!(df.height(), 4 * 24 * 4);
    for column in ["timestamp", "value", "region", "kind", "year", "month"] {
        assert!(df.column(column).is_ok(), "missing column {column}: {:?}", df.get_column_names());
    }
}

#[test]
fn imports_a_real_eia_series_file() {
    let Some(realdata) = realdata::dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = realdata.join("series/PJM_2020-2024_D.csv");
    let out = energy(dir.path())
        .args([
            "collect",
            "--source",
            "file",
            "--region",
            "PJM",
            "--time-column",
            "date_time",
            "--value-column",
            "demand (MW)",
            "--json",
        ])
        .arg("--path")
        .arg(&path)
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["rows"], 43_848);
    let status = status_json(dir.path());
    let s = &status["series"][0];
    assert_eq!(s["series"]["region"], "PJM");
    assert!(s["null_values"].as_u64().unwrap() > 0, "the file's MISSING hours are nulls");
}

#[test]
fn bad_file_is_refused_and_the_store_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, "timestamp,value\n2024-01-01T01:00:00Z,1\n2024-01-01T01:00:00Z,2\n").unwrap();
    let store = dir.path().join("store");
    energy(&store)
        .args(["collect", "--source", "file"])
        .arg("--path")
        .arg(&file)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("duplicate timestamp 2024-01-01T01:00:00Z"));
    assert!(!store.join("source=file").exists());
}
