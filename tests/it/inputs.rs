//! `--input SOURCE:REGION:KIND`: any stored series as an extra input column of `features` and
//! `train`, known at the horizon when it is a forecast published ahead (`NET_DAM`), observed
//! only up to the forecast origin otherwise (`NET_ACTUAL`); bad inputs are refused with exit 1.
use super::cli::energy;
use energy::ingest::{SeriesId, SeriesRows, Store};
use energy::time::{DateRange, HOUR_US, from_us};
use std::path::Path;

const ACTUAL: &str = "caiso:CA ISO-TAC:NET_ACTUAL";
const AHEAD: &str = "caiso:CA ISO-TAC:NET_DAM";

/// A synthetic store of 30 days, with CAISO-named net loads over the same hours (0.8 and 0.85
/// of the synthetic load).
fn store_with_inputs(store: &Path) -> SeriesRows {
    energy(store).args(["collect", "--days", "30", "-q"]).assert().success();
    let store = Store::new(store);
    let load = store.read(&SeriesId::new("synthetic", "SYN1", "D"), None).unwrap();
    let scaled = |kind: &str, factor: f64| SeriesRows {
        id: SeriesId::new("caiso", "CA ISO-TAC", kind),
        timestamps: load.timestamps.clone(),
        values: load.values.iter().map(|v| v.map(|x| x * factor)).collect(),
    };
    let range =
        DateRange::new(from_us(load.timestamps[0] - HOUR_US), from_us(*load.timestamps.last().unwrap())).unwrap();
    let _lock = store.lock().unwrap();
    store.write_range(&[scaled("NET_ACTUAL", 0.8), scaled("NET_DAM", 0.85)], range).unwrap();
    load
}

/// The column names a `features --json` summary lists under `key`.
/// Store `value` for the 48 hours after `last` as the CAISO series of `kind` (values published
/// ahead, as an operator's day-ahead forecast is).
fn store_ahead(store: &Path, kind: &str, last: i64, value: f64) {
    let ahead: Vec<i64> = (1..=48).map(|h| last + h * HOUR_US).collect();
    let rows = SeriesRows {
        id: SeriesId::new("caiso", "CA ISO-TAC", kind),
        timestamps: ahead.clone(),
        values: ahead.iter().map(|_| Some(value)).collect(),
    };
    let range = DateRange::new(from_us(last), from_us(*ahead.last().unwrap())).unwrap();
    let store = Store::new(store);
    let _lock = store.lock().unwrap();
    store.write_range(&[rows], range).unwrap();
}

fn column_names(summary: &serde_json::Value, key: &str) -> Vec<String> {
    summary[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn json(output: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&output.get_output().stdout).unwrap()
}

#[test]
fn features_take_stored_series_as_known_or_observed_input_columns() {
    let dir = tempfile::tempdir().unwrap();
    let load = store_with_inputs(dir.path());
    let out = dir.path().join("table.parquet");
    let summary = json(
        &energy(dir.path())
            .args(["features", "--region", "SYN1", "--input", ACTUAL, "--input", AHEAD, "--json", "--out"])
            .arg(&out)
            .assert()
            .success(),
    );
    let names = |key: &str| column_names(&summary, key);
    assert!(names("observed_columns").contains(&"net_actual".into()), "{summary}");
    assert!(!names("known_columns").contains(&"net_actual".into()), "{summary}");
    assert!(names("known_columns").contains(&"net_dam".into()), "{summary}");
    assert!(names("exogenous").contains(&ACTUAL.to_string()), "{summary}");
    // the column in the written table holds the stored series, hour by hour
    use polars::prelude::{ParquetReader, SerReader};
    let frame = ParquetReader::new(std::fs::File::open(&out).unwrap()).finish().unwrap();
    let column: Vec<Option<f64>> = frame.column("net_dam").unwrap().f64().unwrap().iter().collect();
    assert_eq!(column.len(), load.len());
    for (stored, column) in load.values.iter().zip(&column).step_by(97) {
        assert!((stored.unwrap() * 0.85 - column.unwrap()).abs() < 1e-6);
    }
}

#[test]
fn bad_inputs_are_refused_before_anything_is_built() {
    let dir = tempfile::tempdir().unwrap();
    store_with_inputs(dir.path());
    for (input, message) in [
        ("caiso:NET_DAM", "is not SOURCE:REGION:KIND"),
        ("caiso:CA ISO-TAC:WIND_DAM", "holds no such series"),
        ("synthetic:SYN1:D", "is the load series itself"),
        ("synthetic:SYN1:TEMP", "is taken by synthetic:SYN1:TEMP"),
    ] {
        for command in ["features", "train"] {
            let mut run = energy(dir.path());
            run.args([command, "--region", "SYN1", "--input", input]);
            if command == "train" {
                run.arg("--model-dir").arg(dir.path().join("model"));
            }
            run.assert().code(1).stderr(predicates::str::contains(message));
        }
    }
    energy(dir.path())
        .args(["features", "--region", "SYN1", "--input", ACTUAL, "--input", "caiso:PGE-TAC:NET_ACTUAL"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("one input per kind"));
    assert!(!dir.path().join("model").exists());
}

/// A model trained with an observed input saves it among its series and marks it observed, so
/// that `evaluate` rebuilds the same table.
#[test]
fn train_saves_the_inputs_and_evaluate_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    store_with_inputs(dir.path());
    let model = dir.path().join("model");
    let summary = json(
        &energy(dir.path())
            .args(["train", "--days", "30", "--epochs", "1", "--context", "48", "--input", ACTUAL, "--json", "-q"])
            .arg("--model-dir")
            .arg(&model)
            .assert()
            .success(),
    );
    assert_eq!(summary["inputs"], serde_json::json!([ACTUAL]));
    assert_eq!(summary["exogenous"][0], "synthetic:SYN1:TEMP", "the weather stays: {summary}");
    assert!(!summary["exogenous"].to_string().contains("NET_"), "{summary}");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    let meta = &config["extra"];
    assert_eq!(meta["feature_config"]["observed_inputs"], serde_json::json!(["net_actual"]), "{meta}");
    assert!(meta["feature_names"].as_array().unwrap().iter().any(|n| n == "net_actual"), "{meta}");
    energy(dir.path()).args(["evaluate", "--json", "-q", "--model-dir"]).arg(&model).assert().success();
}

/// `forecast` runs a model with inputs: an observed one needs nothing past the last hour, one
/// published ahead (`NET_DAM`) is read from the store for the horizon, and a model whose
/// published-ahead input does not cover the horizon is refused, naming what to collect.
#[test]
fn forecast_reads_published_ahead_inputs_from_the_store_and_needs_no_future_observed_input() {
    let dir = tempfile::tempdir().unwrap();
    let load = store_with_inputs(dir.path());
    let model = dir.path().join("model");
    energy(dir.path())
        .args(["train", "--days", "30", "--epochs", "1", "--context", "48", "--input", ACTUAL, "--input", AHEAD, "-q"])
        .arg("--model-dir")
        .arg(&model)
        .assert()
        .success();
    let forecast = || {
        let mut run = energy(dir.path());
        run.args(["forecast", "--json", "-q", "--model-dir"]).arg(&model);
        run
    };
    let refused = forecast().assert().code(1);
    let message = String::from_utf8_lossy(&refused.get_output().stderr).to_string();
    assert!(message.contains("NET_DAM") && message.contains("known ahead"), "{message}");

    // the operator's day-ahead net load for the next two days is published: the model runs
    store_ahead(dir.path(), "NET_DAM", *load.timestamps.last().unwrap(), 20_000.0);
    let out = json(&forecast().assert().success());
    let hours = out["rows"].as_array().expect("forecast rows");
    assert_eq!(hours.len(), 24, "{out}");
}

/// `--known-input` makes any stored series known ahead whatever its kind (a workday flag, the
/// user's own forecast): a known column of the table, recorded in the model, and read from the
/// store for the horizon by `forecast`.
#[test]
fn a_known_input_is_seen_at_the_horizon_and_read_ahead_by_forecast() {
    let dir = tempfile::tempdir().unwrap();
    let load = store_with_inputs(dir.path());
    let summary = json(
        &energy(dir.path())
            .args(["features", "--region", "SYN1", "--known-input", ACTUAL, "--json"])
            .assert()
            .success(),
    );
    let names = |key: &str| column_names(&summary, key);
    assert!(names("known_columns").contains(&"net_actual".into()), "{summary}");
    assert!(!names("observed_columns").contains(&"net_actual".into()), "{summary}");

    let model = dir.path().join("model");
    energy(dir.path())
        .args(["train", "--days", "30", "--epochs", "1", "--context", "48", "--known-input", ACTUAL, "-q"])
        .arg("--model-dir")
        .arg(&model)
        .assert()
        .success();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["extra"]["feature_config"]["known_inputs"], serde_json::json!(["net_actual"]));
    let forecast = || {
        let mut run = energy(dir.path());
        run.args(["forecast", "--json", "-q", "--model-dir"]).arg(&model);
        run
    };
    let refused = forecast().assert().code(1);
    assert!(String::from_utf8_lossy(&refused.get_output().stderr).contains("known ahead"));
    store_ahead(dir.path(), "NET_ACTUAL", *load.timestamps.last().unwrap(), 18_000.0);
    let out = json(&forecast().assert().success());
    assert_eq!(out["rows"].as_array().unwrap().len(), 24, "{out}");
}
