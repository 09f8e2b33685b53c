//! Source facts asked of the source, as the real binary uses them: default regions and load
//! kinds per source, the operator's forecast of any source, one name rule, `--source` checks,
//! and MASE in the same units from `train` and `evaluate` (regression tests of issue #17).
use super::cli::energy;
use energy::ingest::{SeriesId, SeriesRows, Store};
use energy::rng::SplitMix64;
use energy::time::{DateRange, HOUR_US};

/// Days of data the tests store: 2024-01-01 .. 2024-02-19.
const START: &str = "2024-01-01";
const END: &str = "2024-02-19";

fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn range() -> DateRange {
    DateRange::from_days(START.parse().unwrap(), END.parse().unwrap()).unwrap()
}

/// A daily-cycle load with noise, and a forecast of it that is off by a few percent.
fn load_and_forecast(id: &SeriesId, forecast_kind: &str) -> [SeriesRows; 2] {
    let mut rng = SplitMix64::new(3);
    let mut load = SeriesRows::new(id.clone());
    let mut forecast = SeriesRows::new(SeriesId::new(&id.source, &id.region, forecast_kind));
    for t in range().hour_ends_us() {
        let hour = (t / HOUR_US) as f64;
        let value = 30_000.0 + 6_000.0 * (2.0 * std::f64::consts::PI * hour / 24.0).sin() + 300.0 * rng.next_f64();
        load.timestamps.push(t);
        load.values.push(Some(value));
        forecast.timestamps.push(t);
        forecast.values.push(Some(value * (1.0 + 0.04 * (rng.next_f64() - 0.5))));
    }
    [load, forecast]
}

fn store_with(dir: &std::path::Path, id: &SeriesId, forecast_kind: &str) -> std::path::PathBuf {
    let root = dir.join("store");
    let store = Store::new(&root);
    let _lock = store.lock().unwrap();
    store.write_range(&load_and_forecast(id, forecast_kind), range()).unwrap();
    root
}

fn train_args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--start",
        START,
        "--end",
        END,
        "--epochs",
        "1",
        "--context",
        "48",
        "--json",
        "--model-dir",
        model,
    ];
    args.extend_from_slice(extra);
    args
}

fn names(scores: &serde_json::Value) -> Vec<String> {
    scores.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

/// `train --source caiso` without `--region` trains on the CAISO system area's `ACTUAL`
/// series (it looked for `caiso:SYN1:ACTUAL`), and scores CAISO's `DAM` beside the model;
/// `features --source caiso` defaults to the same series (it took kind `D`).
#[test]
fn caiso_defaults_come_from_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &SeriesId::new("caiso", "CA ISO-TAC", "ACTUAL"), "DAM");
    let model = dir.path().join("model");
    let out = energy(&store).args(train_args(model.to_str().unwrap(), &["--source", "caiso"])).output().unwrap();
    let train = json(&out);
    assert_eq!(train["series"], "caiso:CA ISO-TAC:ACTUAL");
    assert_eq!(
        names(&train["test_scores"]),
        [
            "model",
            "seasonal naive (24 h)",
            "seasonal naive (168 h)",
            "boosted trees",
            "operator day-ahead forecast",
            "regression base (the model's starting point)"
        ]
    );
    let out = energy(&store).args(["features", "--source", "caiso", "--json"]).output().unwrap();
    assert_eq!(json(&out)["series"], "caiso:CA ISO-TAC:ACTUAL");

    // a model of one source refuses another, also an explicit `--source synthetic`
    let model_arg = model.to_str().unwrap();
    for command in ["forecast", "evaluate"] {
        energy(&store)
            .args([command, "--source", "synthetic", "--model-dir", model_arg])
            .assert()
            .code(1)
            .stderr(predicates::str::contains("trained on source caiso, not synthetic"));
    }
}

/// Any source can name its operator's forecast: a file imported with a `DF` column scores it
/// with `--operator-kind DF`, the model remembers the kind for `evaluate`, and `evaluate`
/// prints MASE on the scale `train` saved (the training split's), not the evaluated range's.
#[test]
fn a_file_source_scores_its_operator_forecast_and_mase_has_one_scale() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("home.csv");
    let [load, forecast] = load_and_forecast(&SeriesId::new("file", "HOME", "D"), "DF");
    let mut text = String::from("timestamp,value,DF\n");
    for ((t, v), f) in load.timestamps.iter().zip(&load.values).zip(&forecast.values) {
        text.push_str(&format!("{},{:.1},{:.1}\n", energy::time::format_second(*t), v.unwrap(), f.unwrap()));
    }
    std::fs::write(&csv, text).unwrap();
    let store = dir.path().join("store");
    energy(&store).args(["collect", "--source", "file", "--region", "HOME", "--path"]).arg(&csv).assert().success();

    let model = dir.path().join("model");
    let model_arg = model.to_str().unwrap();
    // without the flag a file has no operator forecast
    let plain =
        json(&energy(&store).args(train_args(model_arg, &["--source", "file", "--region", "HOME"])).output().unwrap());
    // (the model's regression base is scored last, after the boosted trees)
    assert_eq!(names(&plain["test_scores"])[3..], ["boosted trees", "regression base (the model's starting point)"]);
    // a kind the store lacks is refused
    energy(&store)
        .args(train_args(model_arg, &["--source", "file", "--region", "HOME", "--operator-kind", "XX"]))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("holds no series file:HOME:XX"));
    let train = json(
        &energy(&store)
            .args(train_args(model_arg, &["--source", "file", "--region", "HOME", "--operator-kind", "DF"]))
            .output()
            .unwrap(),
    );
    let operator = &train["test_scores"][4];
    assert_eq!(operator["name"], "operator day-ahead forecast");
    assert!((0.3..2.0).contains(&operator["mape_percent"].as_f64().unwrap()), "{operator}");
    let scale = train["mase_scale"].as_f64().unwrap();
    assert!(scale > 0.0);

    let evaluate = json(
        &energy(&store)
            .args(["evaluate", "--json", "--start", "2024-02-05", "--end", END, "--model-dir", model_arg])
            .output()
            .unwrap(),
    );
    assert_eq!(names(&evaluate["scores"])[4], "operator day-ahead forecast");
    assert_eq!(evaluate["mase_scale"].as_f64().unwrap(), scale);
    assert_eq!(evaluate["mase_scale_from"], "training split");
    for s in evaluate["scores"].as_array().unwrap() {
        let (mae, mase) = (s["mae"].as_f64().unwrap(), s["mase"].as_f64().unwrap());
        assert!((mase - mae / scale).abs() < 1e-9 * mase.max(1.0), "{s}");
    }
    // `none` turns the operator off
    let evaluate = json(
        &energy(&store)
            .args([
                "evaluate",
                "--json",
                "--start",
                "2024-02-05",
                "--end",
                END,
                "--operator-kind",
                "none",
                "--model-dir",
                model_arg,
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(names(&evaluate["scores"]).len(), 5);
    assert!(!names(&evaluate["scores"]).iter().any(|n| n == "operator day-ahead forecast"));
}

/// One name rule for the command line, the sources and the store: 64 bytes pass everywhere,
/// 65 are refused before anything is written; EIA needs a region and says so.
#[test]
fn one_name_rule_from_the_command_line_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let long = "R".repeat(64);
    energy(&store).args(["collect", "--days", "2", "--region", &long]).assert().success();
    assert!(Store::new(&store).has_series(&SeriesId::new("synthetic", long.as_str(), "D")));
    let too_long = "R".repeat(65);
    energy(&store)
        .args(["collect", "--days", "2", "--region", &too_long])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("is 65 bytes long"));
    energy(&store)
        .args(["collect", "--source", "eia", "--days", "2"])
        .env("EIA_API_KEY", "k")
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--source eia needs --region"));
}

/// Weather from another source: `train --weather openmeteo` uses that source's TEMP and its
/// as-issued TEMP_D1 for the same region; `forecast` takes the horizon's weather from the
/// stored live forecast (TEMP_FCST) and, without it, refuses, naming what to collect.
#[test]
fn a_weather_model_forecasts_from_the_live_weather_forecast() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &SeriesId::new("file", "HOME", "D"), "DF");
    let temp = |kind: &str, range: DateRange, offset: f64| {
        let mut rows = SeriesRows::new(SeriesId::new("openmeteo", "HOME", kind));
        for t in range.hour_ends_us() {
            rows.timestamps.push(t);
            rows.values.push(Some(10.0 + 8.0 * ((t / HOUR_US) as f64 / 24.0).sin() + offset));
        }
        rows
    };
    {
        let store = Store::new(&store);
        let _lock = store.lock().unwrap();
        store.write_range(&[temp("TEMP", range(), 0.0), temp("TEMP_D1", range(), 0.7)], range()).unwrap();
    }
    let model = dir.path().join("model");
    let model_arg = model.to_str().unwrap();
    let train = json(
        &energy(&store)
            .args(train_args(model_arg, &["--source", "file", "--region", "HOME", "--weather", "openmeteo"]))
            .output()
            .unwrap(),
    );
    assert_eq!(train["exogenous"], serde_json::json!(["openmeteo:HOME:TEMP", "openmeteo:HOME:TEMP_D1"]));
    assert_eq!(train["as_issued_weather"], true);
    // a weather source the store lacks is refused by name
    energy(&store)
        .args(train_args(model_arg, &["--source", "file", "--region", "HOME", "--weather", "openmeteo:ELSEWHERE:TEMP"]))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("holds no series openmeteo:ELSEWHERE:TEMP"));

    energy(&store)
        .args(["forecast", "--model-dir", model_arg])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("energy collect --source openmeteo --region HOME --kind TEMP_FCST"));
    let end: chrono::NaiveDate = END.parse().unwrap();
    let ahead = DateRange::from_days(end, end + chrono::TimeDelta::days(2)).unwrap();
    {
        let store = Store::new(&store);
        let _lock = store.lock().unwrap();
        store.write_range(&[temp("TEMP_FCST", ahead, 0.3)], ahead).unwrap();
    }
    let forecast = json(&energy(&store).args(["forecast", "--json", "--model-dir", model_arg]).output().unwrap());
    assert_eq!(forecast["rows"].as_array().unwrap().len(), 24, "{forecast}");
}
