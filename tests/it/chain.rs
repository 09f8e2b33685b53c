//! The whole chain on a small synthetic range, as the real binary: train → forecast → evaluate.
use super::cli::energy;
use predicates::prelude::*;

fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn train_then_forecast_then_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let model = dir.path().join("model");
    let model_arg = model.to_str().unwrap();

    let out = energy(&store)
        .args([
            "train",
            "--collect",
            "--days",
            "45",
            "--epochs",
            "2",
            "--context",
            "48",
            "--json",
            "--model-dir",
            model_arg,
        ])
        .output()
        .unwrap();
    let train = json(&out);
    assert_eq!(train["series"], "synthetic:SYN1:D");
    assert_eq!(train["exogenous"][0], "synthetic:SYN1:TEMP");
    assert_eq!(train["rows"], 45 * 24);
    assert!(train["windows"]["train"].as_u64().unwrap() > 50);
    assert!(train["windows"]["test"].as_u64().unwrap() >= 3);
    assert_eq!(train["training"]["epochs"].as_array().unwrap().len(), 2);
    let names: Vec<&str> =
        train["test_scores"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "model",
            "seasonal naive (24 h)",
            "seasonal naive (168 h)",
            "boosted trees",
            "regression base (the model's starting point)"
        ]
    );
    assert!(model.join("boosted.json").is_file());
    for score in train["test_scores"].as_array().unwrap() {
        assert!(score["mape_percent"].as_f64().unwrap() > 0.0);
        assert_eq!(score["hours"], train["windows"]["test"].as_u64().unwrap() * 24);
    }
    assert!(train["noise_floor"]["mape_next_24h_percent"].as_f64().unwrap() > 0.0);
    assert!(model.join("model.safetensors").is_file() && model.join("config.json").is_file());
    // the p10-p90 calibration: one margin per horizon hour, reported and saved with the model
    let calibration = &train["interval_calibration"];
    assert_eq!(calibration["margins_mw"].as_array().map(Vec::len), Some(24), "{calibration}");
    assert!(calibration["points"].as_u64().unwrap() >= 30);
    let after = calibration["validation_coverage_after"].as_f64().unwrap();
    assert!((0.8..=1.0).contains(&after), "{calibration}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["extra"]["interval_calibration"], *calibration);
    // the saved model learnt the test split too, after it was scored: one more epoch over the
    // whole range's windows, more than the refit's training and validation windows
    assert_eq!(train["final_refit"]["epochs"], 1);
    let (refit, again) = (&train["refit"]["windows"], &train["final_refit"]["windows"]);
    assert!(again.as_u64().unwrap() > refit.as_u64().unwrap(), "{refit} then {again}");
    assert_eq!(saved["extra"]["learnt_test"], true);
    // a month of training days holds no whole year: the day of the year is not an input, and
    // the saved feature settings say so, for forecast and evaluate below to rebuild the same
    assert_eq!(train["day_of_year"], false);
    assert!((25..40).contains(&train["train_days"].as_u64().unwrap()), "{}", train["train_days"]);
    assert_eq!(saved["extra"]["feature_config"]["day_of_year"], false);
    assert!(!model.join("resume").exists(), "the resumable state is removed once the model is saved");

    let csv = dir.path().join("forecast.csv");
    let png = dir.path().join("forecast.png");
    let out = energy(&store)
        .args(["forecast", "--json", "--model-dir", model_arg])
        .arg("--out")
        .arg(&csv)
        .arg("--plot")
        .arg(&png)
        .output()
        .unwrap();
    let forecast = json(&out);
    let rows = forecast["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 24);
    assert_eq!(forecast["protocol"], "next-24h");
    for row in rows {
        let (p10, p50, p90) =
            (row["p10"].as_f64().unwrap(), row["p50"].as_f64().unwrap(), row["p90"].as_f64().unwrap());
        assert!(p10 <= p50 && p50 <= p90, "{row}");
        assert!(p50 > 1000.0, "a load forecast in MW: {row}");
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 25);
    assert!(text.starts_with("timestamp_utc,local_time,p10,p50,p90"));
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    let out = energy(&store).args(["evaluate", "--json", "--days", "10", "--model-dir", model_arg]).output().unwrap();
    let evaluate = json(&out);
    assert!(evaluate["forecasts"].as_u64().unwrap() >= 8);
    let scores = evaluate["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 5);
    assert_eq!(scores[3]["name"], "boosted trees");
    assert_eq!(scores[4]["name"], "regression base (the model's starting point)");
    assert_eq!(scores[0]["hours"], evaluate["forecasts"].as_u64().unwrap() * 24);
    assert!(scores[0]["coverage_p10_p90"].as_f64().is_some());
    // the error per lead hour, for the model and every baseline
    for score in scores {
        let by_lead = score["mape_by_lead"].as_array().unwrap();
        assert_eq!(by_lead.len(), 24, "{score}");
        let mean = by_lead.iter().map(|m| m.as_f64().unwrap()).sum::<f64>() / 24.0;
        assert!((mean - score["mape_percent"].as_f64().unwrap()).abs() < 1e-6, "{score}");
    }

    // the last three days lie in the test split, which the saved model learnt: in-sample
    let out = energy(&store).args(["evaluate", "--json", "--days", "3", "--model-dir", model_arg]).output().unwrap();
    assert_eq!(json(&out)["overlaps_training"], true);

    // a model for another region is refused
    energy(&store)
        .args(["forecast", "--region", "SYN2", "--model-dir", model_arg])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("trained on region SYN1"));
    energy(&store)
        .args(["evaluate", "--protocol", "day-ahead", "--model-dir", model_arg])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("protocol"));
}

/// The README's headline claim, on a fixed window with the main job's settings (`energy train
/// --collect` on 180 synthetic days, every model default): the model's test-split MAPE beats
/// both seasonal naives and the boosted-trees baseline of the same run, and the same model
/// without weather. Training is seeded and deterministic, so these are the README's figures.
#[test]
fn the_main_job_beats_the_naives_and_boosted_trees() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let model = dir.path().join("model");
    let out = energy(&store)
        .args(["train", "--collect", "--start", "2025-06-04", "--end", "2025-11-30", "--json", "-q", "--model-dir"])
        .arg(&model)
        .output()
        .unwrap();
    let train = json(&out);
    let mape = |i: usize| train["test_scores"][i]["mape_percent"].as_f64().unwrap();
    assert_eq!(train["test_scores"][1]["name"], "seasonal naive (24 h)");
    assert_eq!(train["test_scores"][2]["name"], "seasonal naive (168 h)");
    assert_eq!(train["test_scores"][3]["name"], "boosted trees");
    eprintln!(
        "test MAPE: model {:.2} %, naive 24 h {:.2} %, naive 168 h {:.2} %, boosted trees {:.2} %",
        mape(0),
        mape(1),
        mape(2),
        mape(3)
    );
    assert!(mape(0) < mape(1) && mape(0) < mape(2) && mape(0) < mape(3), "{}", train["test_scores"]);
    // the boosted baseline is a real competitor: better than the day-back naive
    assert!(mape(3) < mape(1), "{}", train["test_scores"]);
    // the horizon's temperature was the as-issued forecast, on every window
    assert_eq!(train["as_issued_weather"], true);
    assert_eq!(train["perfect_weather_windows"]["test_dropped"], 0);
    assert!(train["exogenous"].as_array().unwrap().iter().any(|e| e == "synthetic:SYN1:TEMP_D1"));
    // the same model without weather does worse: the as-issued temperature earns its place
    let plain = energy(&store)
        .args(["train", "--start", "2025-06-04", "--end", "2025-11-30", "--weather", "none", "--json", "-q"])
        .arg("--model-dir")
        .arg(dir.path().join("plain"))
        .output()
        .unwrap();
    let plain = json(&plain);
    assert_eq!(plain["exogenous"].as_array().unwrap().len(), 0);
    let without = plain["test_scores"][0]["mape_percent"].as_f64().unwrap();
    eprintln!("test MAPE without weather: {without:.2} %");
    assert!(mape(0) < without, "with weather {:.2} %, without {without:.2} %", mape(0));
    // coverage per lead hour, each a share
    let by_lead = train["test_scores"][0]["coverage_by_lead"].as_array().unwrap();
    assert_eq!(by_lead.len(), 24);
    assert!(by_lead.iter().all(|c| (0.0..=1.0).contains(&c.as_f64().unwrap())));
    // `evaluate` scores the baseline saved with the model
    let evaluate = energy(&store)
        .args(["evaluate", "--start", "2025-11-10", "--end", "2025-11-30", "--json", "-q", "--model-dir"])
        .arg(&model)
        .output()
        .unwrap();
    let evaluate = json(&evaluate);
    assert_eq!(evaluate["scores"][3]["name"], "boosted trees", "{evaluate}");
    assert!(evaluate["scores"][3]["hours"].as_u64().unwrap() >= 20 * 24, "{evaluate}");
}

/// Day-ahead training on a short range: `[model] day_ahead_stride = "auto"` (the default) adds
/// training origins every 3 hours under a year of training days, with the same lead structure;
/// validation and test keep the one 10:00 origin a day, so their windows do not change. The
/// model then forecasts the next local day.
#[test]
fn a_short_day_ahead_run_trains_on_more_origins_and_scores_the_same_days() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let daily_config = dir.path().join("daily.toml");
    std::fs::write(&daily_config, "[model]\nday_ahead_stride = 24\nfinal_refit = false\n").unwrap();
    let train = |config: Option<&std::path::Path>, model: &str| {
        let mut command = energy(&store);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let out = command
            .args(["train", "--collect", "--start", "2025-03-01", "--end", "2025-04-15", "--protocol", "day-ahead"])
            .args(["--epochs", "1", "--context", "48", "--json", "-q", "--model-dir"])
            .arg(dir.path().join(model))
            .output()
            .unwrap();
        json(&out)
    };
    let auto = train(None, "auto");
    let daily = train(Some(&daily_config), "daily");
    assert_eq!((auto["day_ahead_stride"].as_u64(), daily["day_ahead_stride"].as_u64()), (Some(3), Some(24)));
    let count = |run: &serde_json::Value, split: &str| run["windows"][split].as_u64().unwrap();
    assert!(count(&daily, "train") >= 20, "{}", daily["windows"]);
    // eight origins a day, less the few at the split's edges whose targets would cross it
    assert!(
        (8 * count(&daily, "train") - 8..=8 * count(&daily, "train") + 8).contains(&count(&auto, "train")),
        "{} against {}",
        auto["windows"],
        daily["windows"]
    );
    assert_eq!(
        (count(&auto, "validation"), count(&auto, "test")),
        (count(&daily, "validation"), count(&daily, "test"))
    );
    // the final refit (the default) learns the test split too; `final_refit = false` leaves it
    assert!(auto["final_refit"]["windows"].as_u64().unwrap() > auto["refit"]["windows"].as_u64().unwrap());
    assert!(daily["final_refit"].is_null() && daily["refit"]["windows"].as_u64().is_some(), "{daily}");
    let learnt = |model: &str| -> serde_json::Value {
        let saved = std::fs::read_to_string(dir.path().join(model).join("config.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&saved).unwrap()["extra"]["learnt_test"].clone()
    };
    assert_eq!((learnt("auto"), learnt("daily")), (serde_json::json!(true), serde_json::json!(false)));
    for run in [&auto, &daily] {
        assert_eq!(run["protocol"], "day-ahead");
        assert!(run["test_scores"][0]["mape_percent"].as_f64().unwrap() > 0.0);
    }
    let out = energy(&store).args(["forecast", "--json", "--model-dir"]).arg(dir.path().join("auto")).output().unwrap();
    let forecast = json(&out);
    assert_eq!(forecast["protocol"], "day-ahead");
    assert_eq!(forecast["rows"].as_array().unwrap().len(), 24);
    // one model for two regions follows the same rule
    let out = energy(&store)
        .args(["train", "--collect", "--region", "SYN1", "--region", "SYN2", "--start", "2025-03-01", "--end"])
        .args(["2025-04-15", "--protocol", "day-ahead", "--epochs", "1", "--context", "48", "--json", "-q"])
        .arg("--model-dir")
        .arg(dir.path().join("two"))
        .output()
        .unwrap();
    let two = json(&out);
    assert_eq!(two["day_ahead_stride"], 3, "{two}");
    // and learns every region's test split too
    assert!(two["final_refit"]["windows"].as_u64().unwrap() > two["refit"]["windows"].as_u64().unwrap(), "{two}");
}

/// The regression base (`[model] base = "regression"`, the default): fitted on the training
/// split, reported, saved with the model, and `forecast` and `evaluate` rebuild their bases from
/// the saved one. `base = "week"` keeps the week-back naive; a base the config does not know is
/// refused, naming the key.
#[test]
fn the_regression_base_is_saved_with_the_model_and_used_by_forecast_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let model = dir.path().join("model");
    let config = dir.path().join("energy.toml");
    let train = |config: Option<&std::path::Path>, model: &std::path::Path| {
        let mut command = energy(&store);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let out = command
            .args(["train", "--collect", "--start", "2025-03-01", "--end", "2025-04-15", "--epochs", "1"])
            .args(["--context", "48", "--json", "-q", "--model-dir"])
            .arg(model)
            .output()
            .unwrap();
        json(&out)
    };
    let regression = train(None, &model);
    let base = &regression["regression_base"];
    assert_eq!(base["inputs"].as_array().map(Vec::len), Some(1), "{regression}");
    let phi = base["phi"].as_f64().unwrap();
    assert!((0.3..1.0).contains(&phi), "{base}");
    // fitted on the training split: about 70 % of the 45 days' hours
    let rows = base["rows"].as_u64().unwrap();
    assert!((600..=800).contains(&rows), "{base}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["extra"]["scaler"]["base"], *base);
    std::fs::write(&config, "[model]\nbase = \"week\"\n").unwrap();
    let week = train(Some(&config), &dir.path().join("week"));
    assert!(week.get("regression_base").is_none(), "{week}");
    assert_eq!(week["windows"], regression["windows"]);

    let out = energy(&store).args(["forecast", "--json", "--model-dir"]).arg(&model).output().unwrap();
    let forecast = json(&out);
    let rows = forecast["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 24);
    assert!(rows.iter().all(|r| r["p50"].as_f64().unwrap() > 1000.0), "{forecast}");
    let out = energy(&store)
        .args(["evaluate", "--start", "2025-04-05", "--end", "2025-04-15", "--json", "--model-dir"])
        .arg(&model)
        .output()
        .unwrap();
    let evaluate = json(&out);
    let model_mape = evaluate["scores"][0]["mape_percent"].as_f64().unwrap();
    assert!(model_mape > 0.0 && model_mape < 20.0, "{evaluate}");

    std::fs::write(&config, "[model]\nbase = \"monthly\"\n").unwrap();
    energy(&store)
        .arg("--config")
        .arg(&config)
        .args(["train", "--start", "2025-03-01", "--end", "2025-04-15", "--epochs", "1", "--model-dir"])
        .arg(dir.path().join("refused"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("key `base`").and(predicates::str::contains("monthly")));
}
