//! `energy bench`: the real binary at its smallest size (hidden `--smoke`) and no added latency.
use super::cli::energy;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn bench(store: &Path, history: &Path) -> assert_cmd::Command {
    let mut command = energy(store);
    command.args(["bench", "--smoke", "--latency-ms", "0", "--history"]).arg(history);
    command
}

fn reports(history: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(history).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn positive(document: &serde_json::Value, pointer: &str) -> f64 {
    let value = document.pointer(pointer).and_then(serde_json::Value::as_f64);
    assert!(value.is_some_and(|v| v > 0.0 && v.is_finite()), "{pointer} = {value:?}");
    value.unwrap_or_default()
}

#[test]
fn bench_reports_every_figure_and_compares_with_an_earlier_report() {
    let dir = tempfile::tempdir().unwrap();
    let (store, history) = (dir.path().join("store"), dir.path().join("history"));

    let out = bench(&store, &history).arg("--json").assert().success();
    let document: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    for pointer in [
        "/collection/rows",
        "/collection/requests",
        "/collection/server_requests",
        "/collection/seconds",
        "/collection/records_per_s",
        "/collection/ceiling_records_per_s",
        "/collection/python_records_per_s",
        "/features/rows",
        "/features/rows_per_s",
        "/features/windows",
        "/features/windows_per_s",
        "/model/train_sequences",
        "/model/train_sequences_per_s",
        "/model/predict_sequences",
        "/model/predict_sequences_per_s",
        "/machine/logical_cores",
    ] {
        positive(&document, pointer);
    }
    // 2 respondents × 4 kinds × 14 days, within the API's ceiling, and the client kept to the limits
    assert_eq!(document["collection"]["rows"], 2 * 4 * 14 * 24);
    assert!(positive(&document, "/collection/records_per_s") <= 25_000.0 * 1.05, "{}", document["collection"]);
    assert_eq!(document["collection"]["rejected_429"], 0);
    let memory = document["attention_memory"].as_array().unwrap();
    assert!(!memory.is_empty());
    for index in 0..memory.len() {
        positive(&document, &format!("/attention_memory/{index}/blockwise_bytes"));
        positive(&document, &format!("/attention_memory/{index}/reference_bytes"));
    }
    let machine = &document["machine"];
    for member in ["cpu_model", "os", "arch", "mlx_device", "blas", "energy_version", "mlx_rs_version"] {
        assert!(machine[member].as_str().is_some_and(|s| !s.is_empty()), "machine.{member}: {machine}");
    }
    assert!(machine["mlx_device"].as_str().unwrap().starts_with("Device("), "{machine}");
    assert_eq!(document["settings"]["size"], "smoke");
    assert_eq!(document["settings"]["latency_ms"], 0);
    assert_eq!(document["version"], "1");

    // one report written, the same document; the store is not touched
    let files = reports(&history);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(document["file"].as_str().map(PathBuf::from), Some(files[0].clone()));
    let mut written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    written["file"] = document["file"].clone();
    assert_eq!(written, document);
    assert!(!store.exists(), "bench wrote into the store");

    // a second run compared with the first: the counts are the same, the rates near
    let out = bench(&store, &history).arg("--compare").arg(&files[0]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(text.contains("records/s") && text.contains("compared with"), "{text}");
    let ratio = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    for count in
        ["collection.rows", "collection.requests", "features.rows", "features.windows", "model.train_sequences"]
    {
        assert_eq!(ratio(count), 1.0, "{count}: {text}");
    }
    for rate in ["collection.records_per_s", "features.rows_per_s", "model.train_sequences_per_s"] {
        let ratio = ratio(rate);
        assert!(ratio > 0.05 && ratio < 20.0, "{rate}: {ratio}\n{text}");
    }
    assert_eq!(reports(&history).len(), 2);
}

#[test]
fn bench_compare_with_a_missing_or_corrupt_report_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (store, history) = (dir.path().join("store"), dir.path().join("history"));
    bench(&store, &history)
        .args(["--compare", "/nonexistent/report.json"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot read the report `/nonexistent/report.json`"));
    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, r#"{"version":"1","created":"#).unwrap();
    bench(&store, &history)
        .arg("--compare")
        .arg(&corrupt)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not a bench report"));
    std::fs::write(&corrupt, r#"{"rows": 3}"#).unwrap();
    bench(&store, &history).arg("--compare").arg(&corrupt).assert().code(1).stderr(predicate::str::contains("version"));
    // nothing ran: no report
    assert!(!history.exists());
}

#[test]
fn bench_rejects_an_absurd_latency() {
    let dir = tempfile::tempdir().unwrap();
    energy(dir.path())
        .args(["bench", "--smoke", "--latency-ms", "600000", "--history"])
        .arg(dir.path().join("history"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--latency-ms"));
}

#[test]
fn model_only_measures_the_configured_model_and_writes_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("energy.toml");
    std::fs::write(&config, "[model]\ncontext = 40\nhorizon = 8\nd_model = 16\nn_heads = 2\nblock_size = 16\n")
        .unwrap();
    let history = dir.path().join("history");
    let out = energy(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["--json", "bench", "--model-only", "--smoke", "--context", "56", "--features", "5", "--history"])
        .arg(&history)
        .assert()
        .success();
    let document: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    // --context overrides the configuration's 40; the horizon and width are the configuration's
    assert_eq!(document["positions"], 64);
    assert_eq!(document["n_features"], 5);
    assert_eq!(document["d_model"], 16);
    assert_eq!(document["block_size"], 16);
    positive(&document, "/train_sequences_per_s");
    positive(&document, "/predict_sequences_per_s");
    assert!(!history.exists(), "--model-only wrote a report");
}

#[test]
fn model_only_rejects_bad_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [("--context", "0"), ("--features", "0"), ("--block-size", "0"), ("--context", "100000")] {
        energy(dir.path())
            .args(["bench", "--model-only", "--smoke", flag, value])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(flag));
    }
    // the model's flags need --model-only
    energy(dir.path())
        .args(["bench", "--smoke", "--context", "48"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--model-only"));
}
