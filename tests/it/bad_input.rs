//! The bad-input corpus: every case runs the real binary against a store that already holds
//! data and must exit 1 (bad input) or 2 (failure at run time) with ONE error line on stderr that
//! names what was wrong, print nothing on stdout, never panic, and leave every file and folder
//! of the store as it was (path, size and modification time). Then the parsers, fed arbitrary
//! and mutated bytes by proptest, must return errors and never panic.
use super::cli::energy;
use super::common::*;
use super::realdata;
use energy::ingest::file::{FileColumns, FileSource, parse_timestamp};
use energy::time::HOUR_US;
use proptest::prelude::*;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// One bad input: the arguments after `--store DIR`, the exit code, and what the error line
/// must say.
struct Case {
    name: String,
    args: Vec<OsString>,
    code: i32,
    message: String,
}

impl Case {
    fn new<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S], code: i32, message: &str) -> Self {
        Case {
            name: name.to_string(),
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            code,
            message: message.to_string(),
        }
    }
}

/// The lines of stderr that are errors: clap's usage hints, indented details and blank lines
/// aside.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with(' ') && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect()
}

/// The error line with the indented lines that detail it (clap lists missing or conflicting
/// arguments there).
fn error_block(stderr: &str) -> String {
    let mut lines = stderr.lines().skip_while(|l| !l.starts_with("error: "));
    let first = lines.next().unwrap_or("");
    let details = lines.take_while(|l| l.starts_with(' ')).map(str::trim);
    std::iter::once(first).chain(details).collect::<Vec<_>>().join(" ")
}

/// Run every case against `store` (working directory `cwd`), collecting all failures.
fn run_corpus(store: &Path, cwd: &Path, cases: &[Case]) {
    let names: std::collections::HashSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    let mut failures = Vec::new();
    for case in cases {
        let before = snapshot(store);
        let output = energy(store).current_dir(cwd).args(&case.args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines = error_lines(&stderr);
        let mut fail = |why: String| failures.push(format!("{}: {why}\n  stderr: {stderr}", case.name));
        if output.status.code() != Some(case.code) {
            fail(format!("exit code {:?}, expected {}", output.status.code(), case.code));
        }
        if stderr.contains("panicked") {
            fail("panicked".into());
        }
        if lines.len() != 1 || !lines[0].starts_with("error: ") {
            fail(format!("{} error lines, expected one `error: …` line", lines.len()));
        } else if !error_block(&stderr).contains(&case.message) {
            fail(format!("the error line does not say `{}`", case.message));
        }
        if !output.stdout.is_empty() {
            fail(format!("printed on stdout: {}", String::from_utf8_lossy(&output.stdout)));
        }
        if snapshot(store) != before {
            fail("the store changed".into());
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// A store holding the last 40 days of SYN1 (load and temperature).
fn store_with_data(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    energy(&store).args(["collect", "--days", "40", "-q"]).assert().success();
    store
}

fn cli(name: &str, args: &[&str], code: i32, message: &str) -> Case {
    Case::new(name, args, code, message)
}

#[test]
fn bad_command_lines_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_data(dir.path());
    let long_region = "A".repeat(65);
    let cases = vec![
        cli("impossible date", &["collect", "--start", "2024-02-30", "--end", "2024-03-01"], 1, "'2024-02-30'"),
        cli("not a date", &["collect", "--start", "yesterday", "--end", "2024-03-01"], 1, "'yesterday'"),
        cli("end before start", &["collect", "--start", "2024-03-01", "--end", "2024-02-01"], 1, "before start date"),
        cli("two-digit year", &["collect", "--start", "24-03-01", "--end", "2024-04-01"], 1, "starts before 1970"),
        cli("zero days", &["collect", "--days", "0"], 1, "--days must be at least 1"),
        cli("negative days", &["collect", "--days", "-5"], 1, "--days must be at least 1"),
        cli("too many days", &["collect", "--days", "18301"], 1, "more than the 18300 days"),
        cli("days overflow", &["collect", "--days", "99999999999999999999"], 1, "too large"),
        cli("days not a number", &["collect", "--days", "abc"], 1, "'abc' for '--days"),
        cli("unknown source", &["collect", "--source", "nowhere"], 1, "'nowhere' for '--source"),
        cli("region with a semicolon", &["collect", "--region", "SYN;1"], 1, "invalid region `SYN;1`"),
        cli("empty region", &["collect", "--region", ""], 1, "invalid region ``"),
        cli("region escaping the store", &["collect", "--region", "../../etc"], 1, "invalid region"),
        cli("region with a separator", &["collect", "--region", "SYN/1"], 1, "invalid region"),
        cli("non-ASCII region", &["collect", "--region", "ÄÖ"], 1, "invalid region"),
        cli("region too long", &["collect", "--region", &long_region], 1, "invalid region"),
        cli("range before 1970", &["collect", "--start", "1900-01-01", "--end", "1900-12-31"], 1, "before 1970"),
        cli("range of 54 years", &["collect", "--start", "1971-01-01", "--end", "2025-01-01"], 1, "longer than"),
        cli("range to year 9999", &["collect", "--start", "2000-01-01", "--end", "9999-12-31"], 1, "in the future"),
        cli("range in the future", &["collect", "--start", "2999-01-01", "--end", "2999-01-02"], 1, "in the future"),
        cli(
            "days with start and end",
            &["collect", "--days", "5", "--start", "2024-01-01", "--end", "2024-01-02"],
            1,
            "cannot be used with",
        ),
        cli("start without end", &["collect", "--start", "2024-01-01"], 1, "--end"),
        cli("zero concurrency", &["collect", "--concurrency", "0"], 1, "--concurrency must be at least 1"),
        cli("negative concurrency", &["collect", "--concurrency=-1"], 1, "'-1' for '--concurrency"),
        cli("missing rate above 1", &["collect", "--missing-rate", "2"], 1, "--missing-rate must be between 0 and 1"),
        cli("negative missing rate", &["collect", "--missing-rate=-0.1"], 1, "--missing-rate must be between 0 and 1"),
        cli("spike rate NaN", &["collect", "--spike-rate", "NaN"], 1, "--spike-rate must be between 0 and 1"),
        cli("spike rate infinite", &["collect", "--spike-rate", "inf"], 1, "--spike-rate must be between 0 and 1"),
        cli("spike rate not a number", &["collect", "--spike-rate", "lots"], 1, "'lots' for '--spike-rate"),
        cli("negative seed", &["collect", "--seed=-1"], 1, "'-1' for '--seed"),
        cli("unknown kind", &["collect", "--kind", "D,XX"], 1, "not `XX`"),
        cli("unknown flag", &["status", "--bogus"], 1, "--bogus"),
        cli("unknown command", &["frobnicate"], 1, "'frobnicate'"),
        cli("file source without a path", &["collect", "--source", "file"], 1, "--path"),
    ];
    run_corpus(&store, dir.path(), &cases);
}

/// Bytes of a bad CSV file and what the error must say.
const BAD_CSV: &[(&str, &[u8], &str)] = &[
    ("no-time-column.csv", b"time,value\n2024-01-01T01:00:00Z,1\n", "no column `timestamp` (columns: time, value)"),
    ("no-value-column.csv", b"timestamp,val\n2024-01-01T01:00:00Z,1\n", "no column `value`"),
    ("bad-timestamp.csv", b"timestamp,value\nnot a time,1\n", "row 2: cannot read timestamp `not a time`"),
    (
        "bad-timestamp-row-4.csv",
        b"timestamp,value\n2024-01-01T01:00:00Z,1\n2024-01-01T02:00:00Z,2\n2024-13-01T03:00:00Z,3\n",
        "row 4: cannot read timestamp",
    ),
    // sub-hourly files are aggregated to hours (`tests/it/files.rs`); two half hours of two
    // different hours make no whole hour
    (
        "sub-hourly.csv",
        b"timestamp,value\n2024-01-01T01:00:00Z,1\n2024-01-01T01:30:00Z,1\n",
        "no hour of column `value` has all its 30-minute intervals",
    ),
    (
        "duplicate.csv",
        b"timestamp,value\n2024-01-01T01:00:00Z,1\n2024-01-01T01:00:00Z,2\n",
        "duplicate timestamp 2024-01-01T01:00:00Z",
    ),
    (
        "same-hour-two-offsets.csv",
        b"timestamp,value\n2024-01-01T01:00:00Z,1\n2024-01-01T02:00:00+01:00,2\n",
        "duplicate timestamp 2024-01-01T01:00:00Z",
    ),
    (
        "not-a-number.csv",
        b"timestamp,value\n2024-01-01T01:00:00Z,lots\n",
        "row 2, column `value`: `lots` is not a number",
    ),
    ("infinite.csv", b"timestamp,value\n2024-01-01T01:00:00Z,1e400\n", "`1e400` is not a finite number"),
    ("non-utf8-value.csv", b"timestamp,value\n2024-01-01T01:00:00Z,\xff\xfe1\n", "invalid utf-8"),
    ("non-utf8-header.csv", b"times\xfftamp,value\n2024-01-01T01:00:00Z,1\n", "no column `timestamp`"),
    ("empty.csv", b"", "empty"),
    ("header-only.csv", b"timestamp,value\n", "holds no rows"),
    ("ragged.csv", b"timestamp,value\n2024-01-01T01:00:00Z,1,5\n", "more fields"),
    ("open-quote.csv", b"timestamp,value\n2024-01-01T01:00:00Z,1\n\"2024-01-01T02:00:00Z,2\n", "not properly escaped"),
    ("before-1970.csv", b"timestamp,value\n1800-01-01T01:00:00Z,1\n", "starts before 1970"),
    (
        "year-one-to-9999.csv",
        b"timestamp,value\n0001-01-01T01:00:00Z,1\n9999-12-31T23:00:00Z,2\n",
        "starts before 1970",
    ),
    ("sixty-years.csv", b"timestamp,value\n1971-01-01T01:00:00Z,1\n2031-01-01T00:00:00Z,2\n", "longer than 18300 days"),
    ("really-text.parquet", b"timestamp,value\n2024-01-01T01:00:00Z,1\n", "PAR1"),
    ("empty.parquet", b"", "empty.parquet"),
    ("data.xlsx", b"timestamp,value\n2024-01-01T01:00:00Z,1\n", "unsupported file type `.xlsx`"),
    ("no-extension", b"timestamp,value\n2024-01-01T01:00:00Z,1\n", "has no extension"),
];

/// A Parquet file of the given columns.
fn write_parquet(path: &Path, columns: Vec<polars::prelude::Column>) {
    use polars::prelude::*;
    let height = columns.first().map_or(0, |c| c.len());
    let mut df = DataFrame::new(height, columns).unwrap();
    ParquetWriter::new(std::fs::File::create(path).unwrap()).finish(&mut df).unwrap();
}

fn datetimes(name: &str, values: &[i64]) -> polars::prelude::Column {
    use polars::prelude::*;
    Series::new(name.into(), values)
        .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))
        .unwrap()
        .into()
}

#[test]
fn bad_files_are_refused_clearly() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_data(dir.path());
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let collect = |name: &str, path: &Path, code: i32, message: &str| {
        Case::new(
            name,
            &[OsString::from("collect"), "--source".into(), "file".into(), "--path".into(), path.into()],
            code,
            message,
        )
    };
    let mut cases = Vec::new();
    for (name, bytes, message) in BAD_CSV {
        let path = files.join(name);
        std::fs::write(&path, bytes).unwrap();
        cases.push(collect(name, &path, 1, message));
    }
    let hour = 1_704_070_800_000_000_i64; // 2024-01-01T01:00Z
    let parquet: Vec<(&str, Vec<Column>, &str)> = vec![
        (
            "no-value-column.parquet",
            vec![datetimes("timestamp", &[hour]), Column::new("val".into(), [1.0])],
            "no column `value`",
        ),
        (
            "text-timestamps.parquet",
            vec![Column::new("timestamp".into(), ["soon"]), Column::new("value".into(), [1.0])],
            "cannot read timestamp `soon`",
        ),
        (
            "sub-hourly.parquet",
            vec![datetimes("timestamp", &[hour + 60_000_000]), Column::new("value".into(), [1.0])],
            "not on a whole hour",
        ),
        (
            "duplicate.parquet",
            vec![datetimes("timestamp", &[hour, hour]), Column::new("value".into(), [1.0, 2.0])],
            "duplicate timestamp 2024-01-01T01:00:00Z",
        ),
        (
            "text-values.parquet",
            vec![datetimes("timestamp", &[hour]), Column::new("value".into(), ["high"])],
            "`high` is not a number",
        ),
        (
            "infinite.parquet",
            vec![datetimes("timestamp", &[hour]), Column::new("value".into(), [f64::INFINITY])],
            "not a finite number",
        ),
        (
            "null-timestamp.parquet",
            vec![
                Series::new("timestamp".into(), [Some(hour), None])
                    .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                    .unwrap()
                    .into(),
                Column::new("value".into(), [1.0, 2.0]),
            ],
            "empty timestamp",
        ),
    ];
    for (name, columns, message) in parquet {
        let path = files.join(name);
        write_parquet(&path, columns);
        cases.push(collect(name, &path, 1, message));
    }
    let damaged = files.join("damaged.parquet");
    std::fs::write(&damaged, damage_until(&valid_files(&files).1, |bytes| open_fails(&files, bytes))).unwrap();
    cases.push(collect("damaged.parquet", &damaged, 1, "the file is corrupt"));
    cases.push(collect("missing file", &files.join("absent.csv"), 1, "No such file"));
    cases.push(collect("a folder", &files, 1, "is a folder"));
    let good = files.join("good.csv");
    std::fs::write(&good, "timestamp,value\n2024-01-01T01:00:00Z,1\n").unwrap();
    let with = |name: &str, extra: &[&str], message: &str| {
        let mut args =
            vec![OsString::from("collect"), "--source".into(), "file".into(), "--path".into(), good.clone().into()];
        args.extend(extra.iter().map(OsString::from));
        Case::new(name, &args, 1, message)
    };
    cases.push(with("file with two regions", &["--region", "A", "--region", "B"], "takes one --region"));
    cases.push(with("file with two kinds", &["--kind", "D,DF"], "takes one --kind"));
    cases.push(with("file with a missing time column", &["--time-column", "when"], "no column `when`"));
    cases.push(with("file with a missing value column", &["--value-column", "load"], "no column `load`"));
    cases.push(with("file with a bad region", &["--region", "../up"], "invalid region"));
    run_corpus(&store, dir.path(), &cases);
}

#[test]
fn bad_config_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_data(dir.path());
    let configs: &[(&str, &[u8], &str)] = &[
        ("syntax.toml", b"[collect\nconcurrency = 3\n", "(line 1): unclosed table"),
        ("unknown-key.toml", b"[collect]\nfoo = 1\n", "unknown field `foo`"),
        ("unknown-section.toml", b"[nosuch]\nfoo = 1\n", "unknown field `nosuch`"),
        ("misspelt-key.toml", b"[retry]\nmax_attempt = 3\n", "unknown field `max_attempt`"),
        ("wrong-type.toml", b"[collect]\nconcurrency = \"x\"\n", "key `concurrency` (line 2): invalid type"),
        ("negative-count.toml", b"[collect]\nconcurrency = -3\n", "key `concurrency`"),
        ("huge-count.toml", b"[collect]\nconcurrency = 99999999999999999999\n", "key `concurrency`"),
        ("table-as-value.toml", b"collect = 5\n", "key `collect`"),
        ("path-as-number.toml", b"[store]\nroot = 5\n", "key `root`"),
        ("zero-concurrency.toml", b"[collect]\nconcurrency = 0\n", "collect.concurrency"),
        ("rate-out-of-range.toml", b"[synthetic]\nmissing_rate = 3.0\n", "synthetic.missing_rate"),
        ("rate-nan.toml", b"[synthetic]\nspike_rate = nan\n", "synthetic.spike_rate"),
        ("heads.toml", b"[model]\nn_heads = 3\n", "model.n_heads"),
        ("split.toml", b"[split]\ntrain = 0.9\nvalidation = 0.2\n", "key `split`"),
        ("zero-attempts.toml", b"[retry]\nmax_attempts = 0\n", "retry.max_attempts"),
        ("zero-timeout.toml", b"[retry]\ntimeout_s = 0\n", "retry.timeout_s"),
        ("delays.toml", b"[retry]\nbase_delay_ms = 5000\nmax_delay_ms = 10\n", "retry.base_delay_ms"),
        ("zero-epochs.toml", b"[model]\nepochs = 0\n", "model.epochs"),
        ("zero-batch.toml", b"[model]\nbatch_size = 0\n", "model.batch_size"),
        ("zero-block.toml", b"[model]\nblock_size = 0\n", "model.block_size"),
        ("negative-rate.toml", b"[model]\nlearning_rate = -1.0\n", "model.learning_rate"),
        ("nan-rate.toml", b"[model]\nlearning_rate = nan\n", "model.learning_rate"),
        ("zero-context.toml", b"[model]\ncontext = 0\n", "key `model`"),
        ("negative-interval.toml", b"[caiso]\nmin_interval_s = -5.0\n", "caiso.min_interval_s"),
        ("zero-per-second.toml", b"[eia]\nrequests_per_second = 0\n", "eia.requests_per_second"),
        ("non-utf8.toml", b"[collect]\n\xff\xfe = 1\n", "cannot read config file"),
    ];
    let mut cases = Vec::new();
    for (name, bytes, message) in configs {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        // a command that would write to the store if the file were accepted
        let args = [OsString::from("--config"), path.into(), "collect".into(), "--days".into(), "3".into()];
        cases.push(Case::new(name, &args, 1, message));
    }
    // the file is named, whatever is wrong with it
    let path = dir.path().join("syntax.toml");
    let args = [OsString::from("--config"), path.clone().into(), "status".into()];
    cases.push(Case::new("file named", &args, 1, &format!("invalid config file `{}`", path.display())));
    cases.push(Case::new(
        "missing config file",
        &["--config", "/nonexistent/energy.toml", "status"],
        1,
        "/nonexistent/energy.toml",
    ));
    run_corpus(&store, dir.path(), &cases);

    // energy.toml in the working directory is read when --config is not given
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("energy.toml"), "[collect]\nconcurrency = 0\n").unwrap();
    run_corpus(&store, &cwd, &[Case::new("bad energy.toml", &["collect", "--days", "3"], 1, "energy.toml")]);
}

/// Train a tiny model on `store` into `dir`.
fn train_tiny(store: &Path, dir: &Path) {
    energy(store)
        .args(["train", "--days", "30", "--epochs", "1", "--context", "48", "-q", "--model-dir"])
        .arg(dir)
        .assert()
        .success();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

#[test]
fn bad_models_features_and_training_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_data(dir.path());
    let models = dir.path().join("models");
    let good = models.join("good");
    train_tiny(&store, &good);

    // corrupt copies of the good model
    let variant = |name: &str| {
        let path = models.join(name);
        copy_model(&good, &path);
        path
    };
    let corrupt = variant("corrupt-config");
    std::fs::write(corrupt.join("config.json"), "{not json").unwrap();
    let empty_config = variant("empty-config");
    std::fs::write(empty_config.join("config.json"), "").unwrap();
    let version = variant("version");
    edit_config(&version, |c| c["format_version"] = 99.into());
    let truncated = variant("truncated");
    let weights = std::fs::read(good.join("model.safetensors")).unwrap();
    std::fs::write(truncated.join("model.safetensors"), &weights[..weights.len() / 3]).unwrap();
    let empty_weights = variant("empty-weights");
    std::fs::write(empty_weights.join("model.safetensors"), "").unwrap();
    let no_weights = variant("no-weights");
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    let shapes = variant("shapes");
    edit_config(&shapes, |c| c["forecaster"]["d_model"] = 32.into());
    let no_meta = variant("no-metadata");
    edit_config(&no_meta, |c| c["extra"] = serde_json::json!({}));
    let other_region = variant("other-region");
    edit_config(&other_region, |c| {
        c["extra"]["region"] = "SYN2".into();
        c["extra"]["load"]["region"] = "SYN2".into();
        for series in c["extra"]["exogenous"].as_array_mut().unwrap() {
            series["region"] = "SYN2".into();
        }
    });
    // a model saved by a version that built other inputs (before `temp_naive_week`, say)
    let old_features = variant("old-features");
    edit_config(&old_features, |c| {
        let names = c["extra"]["feature_names"].as_array_mut().unwrap();
        let last = names.pop().unwrap();
        assert_eq!(last, "temp_naive_week");
    });
    let missing = models.join("none");

    let model = |command: &str, name: &str, path: &Path, extra: &[&str], code: i32, message: &str| {
        let mut args = vec![OsString::from(command), "--model-dir".into(), path.into()];
        args.extend(extra.iter().map(OsString::from));
        Case::new(&format!("{command} {name}"), &args, code, message)
    };
    let mut cases = Vec::new();
    for command in ["forecast", "evaluate"] {
        cases.push(model(command, "missing model folder", &missing, &[], 1, "the folder does not exist"));
        cases.push(model(command, "corrupt config.json", &corrupt, &[], 2, "cannot parse"));
        cases.push(model(command, "wrong format_version", &version, &[], 2, "format_version 99"));
        cases.push(model(command, "truncated weights", &truncated, &[], 2, "model.safetensors"));
        cases.push(model(
            command,
            "model of a region not stored",
            &other_region,
            &[],
            1,
            "holds no series synthetic:SYN2:D",
        ));
        cases.push(model(
            command,
            "a model with other input features",
            &old_features,
            &[],
            1,
            "new: [\"temp_naive_week\"]): train it again",
        ));
        cases.push(model(
            command,
            "--region of another model",
            &good,
            &["--region", "SYN2"],
            1,
            "trained on region SYN1, not SYN2",
        ));
    }
    cases.push(model("forecast", "empty config.json", &empty_config, &[], 2, "cannot parse"));
    cases.push(model("forecast", "empty weights", &empty_weights, &[], 2, "model.safetensors"));
    cases.push(model("forecast", "no weights", &no_weights, &[], 2, "does not exist"));
    cases.push(model("forecast", "weights of another shape", &shapes, &[], 2, "do not match the config"));
    cases.push(model("forecast", "no metadata", &no_meta, &[], 2, "lacks its metadata"));
    cases.push(model(
        "forecast",
        "another source",
        &good,
        &["--source", "eia"],
        1,
        "trained on source synthetic, not eia",
    ));
    cases.push(model(
        "forecast",
        "--out of an unknown type",
        &good,
        &["--out", "forecast.txt"],
        1,
        "--out must end in .csv or .json",
    ));
    cases.push(model("evaluate", "another protocol", &good, &["--protocol", "day-ahead"], 1, "protocol"));
    cases.push(model(
        "evaluate",
        "a range without data",
        &good,
        &["--start", "2020-01-01", "--end", "2020-01-31"],
        1,
        "has no rows",
    ));

    let trained = models.join("new");
    let train = |name: &str, extra: &[&str], message: &str| {
        let mut args = vec![OsString::from("train"), "--model-dir".into(), trained.clone().into(), "-q".into()];
        args.extend(extra.iter().map(OsString::from));
        Case::new(&format!("train {name}"), &args, 1, message)
    };
    cases.push(train("with too few days", &["--days", "2", "--epochs", "1", "--context", "48"], "fewer than"));
    cases.push(train("with zero epochs", &["--days", "30", "--epochs", "0"], "--epochs must be at least 1"));
    cases.push(train("with zero context", &["--days", "30", "--context", "0"], "--context must be between 1 and 1440"));
    cases.push(train(
        "with a huge horizon",
        &["--days", "30", "--horizon", "5000"],
        "--horizon must be between 1 and 1440",
    ));
    cases.push(train(
        "day-ahead with a 12 h horizon",
        &["--protocol", "day-ahead", "--horizon", "12"],
        "leave --horizon at 24",
    ));
    cases.push(train("a series not stored", &["--days", "30", "--region", "SYN9"], "holds no series synthetic:SYN9:D"));
    cases.push(train(
        "two regions, one not stored",
        &["--days", "30", "--region", "SYN1", "--region", "SYN9"],
        "region SYN9: the store",
    ));
    cases.push(train(
        "a range without data",
        &["--start", "2020-01-01", "--end", "2020-03-31", "--epochs", "1"],
        "has no rows",
    ));

    let features = |name: &str, extra: &[&str], message: &str| {
        let mut args = vec![OsString::from("features")];
        args.extend(extra.iter().map(OsString::from));
        Case::new(&format!("features {name}"), &args, 1, message)
    };
    cases.push(features("of a series not stored", &["--region", "SYN9"], "no data for series synthetic:SYN9:D"));
    cases.push(features("of a kind not stored", &["--kind", "XX"], "no data for series synthetic:SYN1:XX"));
    cases.push(features(
        "of another source",
        &["--source", "eia", "--region", "ERCO"],
        "no data for series eia:ERCO:D",
    ));
    cases.push(features("of two regions", &["--region", "SYN1", "--region", "SYN2"], "takes one --region"));
    cases.push(features("of a range without data", &["--start", "2020-01-01", "--end", "2020-01-05"], "has no rows"));
    cases.push(features("written to a .csv", &["--out", "features.csv"], "--out must end in .parquet"));
    run_corpus(&store, dir.path(), &cases);
    assert!(!trained.exists(), "a refused training wrote a model");
    assert!(!dir.path().join("features.csv").exists() && !dir.path().join("forecast.txt").exists());
}

/// `cases` cases, and no regression file written into the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn columns() -> FileColumns {
    FileColumns { timestamp: "timestamp".into(), value: "value".into(), region: "HOME".into(), kind: "D".into() }
}

/// A small valid file in both formats, to mutate.
fn valid_files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    use polars::prelude::*;
    let csv = b"timestamp,value,temp\n2024-01-01T01:00:00Z,10.5,3\n2024-01-01T02:00:00Z,MISSING,2\n2024-01-01T03:00:00Z,11,1\n".to_vec();
    let hour = 1_704_070_800_000_000_i64;
    let path = dir.join("valid.parquet");
    write_parquet(
        &path,
        vec![
            datetimes("timestamp", &[hour, hour + HOUR_US, hour + 2 * HOUR_US]),
            Column::new("value".into(), [Some(10.5), None, Some(11.0)]),
            Column::new("temp".into(), [3i64, 2, 1]),
        ],
    );
    (csv, std::fs::read(path).unwrap())
}

/// Open `bytes` as a file with `extension`: an error or rows, never a panic; accepted rows are
/// strictly increasing whole hours inside the file's range.
fn open_never_panics(dir: &Path, extension: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    use energy::ingest::Source;
    let path = dir.join(format!("case.{extension}"));
    std::fs::write(&path, bytes).unwrap();
    let Ok(source) = FileSource::open(&path, &columns()) else { return Ok(()) };
    let Some(range) = source.range() else { return Ok(()) };
    let batch = futures::executor::block_on(source.fetch(range)).unwrap();
    for series in &batch.series {
        prop_assert!(series.timestamps.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(series.timestamps.iter().all(|t| t.rem_euclid(HOUR_US) == 0 && range.holds_us(*t)));
        prop_assert!(series.values.iter().flatten().all(|v| v.is_finite()));
    }
    Ok(())
}

/// The first one-byte change of `valid`, from its end (the Parquet footer) back, for which
/// `reader_fails` holds.
fn damage_until(valid: &[u8], mut reader_fails: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    for back in 1..=valid.len() {
        for byte in [0x81, 0xff, 0x00] {
            let mut bytes = valid.to_vec();
            let at = valid.len() - back;
            bytes[at] = byte;
            if bytes != valid && reader_fails(&bytes) {
                return bytes;
            }
        }
    }
    panic!("no one-byte change makes polars' reader fail");
}

/// Does `FileSource::open` fail with the reader's panic caught?
fn open_fails(dir: &Path, bytes: &[u8]) -> bool {
    let path = dir.join("probe.parquet");
    std::fs::write(&path, bytes).unwrap();
    FileSource::open(&path, &columns()).is_err_and(|e| e.to_string().contains("the file is corrupt"))
}

#[test]
fn damaged_parquet_files_are_errors_not_panics() {
    // polars' reader panics on some of these (a regression test of `guard_reader`)
    let dir = tempfile::tempdir().unwrap();
    let valid = valid_files(dir.path()).1;
    let path = dir.path().join("damaged.parquet");
    let mut caught = 0;
    for back in 1..=valid.len() {
        for byte in [0x81, 0x00] {
            let mut bytes = valid.clone();
            let at = valid.len() - back;
            bytes[at] = byte;
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = FileSource::open(&path, &columns()) {
                caught += usize::from(e.to_string().contains("the file is corrupt"));
            }
        }
    }
    eprintln!("{caught} reader panics caught");
}

#[test]
fn a_damaged_store_file_is_an_error_not_a_panic() {
    use energy::ingest::{SeriesId, Store};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    energy(&root).args(["collect", "--start", "2024-01-01", "--end", "2024-01-30", "-q"]).assert().success();
    let store = Store::new(&root);
    let id = SeriesId::new("synthetic", "SYN1", "D");
    let file = store.series_dir(&id).join("year=2024/month=01/part-0000.parquet");
    let valid = std::fs::read(&file).unwrap();
    let damaged = damage_until(&valid, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        store.read(&id, None).is_err_and(|e| e.to_string().contains("the file is corrupt"))
    });
    std::fs::write(&file, damaged).unwrap();
    let before = std::fs::read(&file).unwrap();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["features", "--region", "SYN1"],
        &["train", "--region", "SYN1", "--start", "2024-01-01", "--end", "2024-01-30"],
    ] {
        let output = energy(&root).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(error_lines(&stderr).len(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("part-0000.parquet") || stderr.contains("kind=D"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), before, "the damaged file is left as it was");
}

/// `base` with some bytes replaced and the last `cut` bytes cut off.
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for (at, byte) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = *byte;
        }
    }
    bytes.truncate(bytes.len().saturating_sub(cut));
    bytes
}

fn cuts() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), 1usize..16, 16usize..600]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn parse_timestamp_never_panics(text in any::<String>()) {
        if let Ok(t) = parse_timestamp(&text) {
            prop_assert_eq!(t.rem_euclid(HOUR_US), 0);
        }
    }

    #[test]
    fn parse_timestamp_never_panics_on_near_timestamps(
        text in r"[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}(:[0-9]{1,2}(:[0-9]{1,2}(\.[0-9]{1,9})?)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"
    ) {
        if let Ok(t) = parse_timestamp(&text) {
            prop_assert_eq!(t.rem_euclid(HOUR_US), 0);
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn file_source_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().unwrap();
        open_never_panics(dir.path(), "csv", &bytes)?;
        open_never_panics(dir.path(), "parquet", &bytes)?;
    }

    #[test]
    fn file_source_never_panics_on_mutated_files(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in cuts(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (csv, parquet) = valid_files(dir.path());
        open_never_panics(dir.path(), "csv", &mutate(&csv, &edits, cut))?;
        open_never_panics(dir.path(), "parquet", &mutate(&parquet, &edits, cut))?;
    }
}

/// The captured EIA bodies (`realdata/eia/**/*.json`), read in place; empty when absent.
fn eia_bodies() -> &'static [Vec<u8>] {
    static BODIES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    BODIES.get_or_init(|| {
        let Some(dir) = realdata::dir() else { return Vec::new() };
        let mut out = Vec::new();
        for sub in ["eia", "eia/older_api", "eia/snippets"] {
            for entry in std::fs::read_dir(dir.join(sub)).into_iter().flatten().flatten() {
                if entry.path().extension().is_some_and(|e| e == "json") {
                    out.push(std::fs::read(entry.path()).unwrap());
                }
            }
        }
        out.sort();
        out
    })
}

/// Every JSON pointer in `value`.
fn pointers(value: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                pointers(member, format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn json_values() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}([+-][0-9]{2})?".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"period": "2019-01-02T00", "value": "x"}])),
        Just(json!({"error": {"code": 1}})),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn eia_parse_response_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = energy::ingest::eia::parse_response(&bytes);
    }

    #[test]
    fn eia_parse_response_never_panics_on_mutated_real_bodies(
        which in any::<usize>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in cuts(),
    ) {
        let bodies = eia_bodies();
        if !bodies.is_empty() {
            let _ = energy::ingest::eia::parse_response(&mutate(&bodies[which % bodies.len()], &edits, cut));
        }
    }

    #[test]
    fn eia_parse_response_never_panics_on_retyped_real_bodies(
        which in any::<usize>(),
        node in any::<usize>(),
        replacement in json_values(),
    ) {
        let bodies = eia_bodies();
        let Some(body) = (!bodies.is_empty()).then(|| &bodies[which % bodies.len()]) else { return Ok(()) };
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else { return Ok(()) };
        let mut all = Vec::new();
        pointers(&value, String::new(), &mut all);
        let at = &all[node % all.len()];
        if at.is_empty() {
            value = replacement;
        } else {
            *value.pointer_mut(at).unwrap() = replacement;
        }
        let _ = energy::ingest::eia::parse_response(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn eia_parse_period_never_panics(text in any::<String>()) {
        if let Some(t) = energy::ingest::eia::parse_period(&text) {
            prop_assert_eq!(t.rem_euclid(HOUR_US), 0);
        }
    }

    #[test]
    fn eia_parse_period_never_panics_on_near_periods(text in r"[0-9+-]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}([+-][0-9]{0,3})?") {
        if let Some(t) = energy::ingest::eia::parse_period(&text) {
            prop_assert_eq!(t.rem_euclid(HOUR_US), 0);
        }
    }
}
