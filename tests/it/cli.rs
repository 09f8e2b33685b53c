//! The command-line contract: help, exit codes, error messages.
use assert_cmd::Command;
use predicates::prelude::*;

pub fn energy(store: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("energy").unwrap();
    cmd.env_remove("ENERGY_STORE")
        .env_remove("RUST_LOG")
        .env_remove("EIA_API_KEY")
        .env_remove("OPENMETEO_API_KEY")
        .arg("--store")
        .arg(store);
    cmd
}

#[test]
fn help_lists_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = energy(dir.path()).arg("--help").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for command in ["collect", "status", "features", "train", "forecast", "evaluate", "bench", "serve"] {
        assert!(text.contains(command), "--help lacks {command}");
    }
}

#[test]
fn unknown_flag_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    energy(dir.path()).args(["collect", "--bogus"]).assert().code(1).stderr(predicate::str::contains("--bogus"));
}

#[test]
fn bad_config_file_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[collect]\nconcurency = 3\n").unwrap();
    energy(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("status")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.toml").and(predicate::str::contains("concurency")));
}

#[test]
fn wrong_type_in_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("energy.toml");
    std::fs::write(&config, "[retry]\nmax_attempts = \"lots\"\n").unwrap();
    energy(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("status")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("max_attempts"));
}

#[test]
fn missing_config_file_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    energy(dir.path())
        .args(["--config", "/nonexistent/energy.toml", "status"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/nonexistent/energy.toml"));
}

#[test]
fn bad_ranges_exit_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["collect", "--days", "0"], "--days must be at least 1"),
        (&["collect", "--days", "-3"], "--days"),
        (&["collect", "--days", "100000"], "more than"),
        (&["collect", "--start", "2024-02-01", "--end", "2024-01-01"], "before start date"),
        (&["collect", "--start", "2024-13-01", "--end", "2024-12-01"], "--start"),
        (&["collect", "--start", "2024-01-01"], "--end"),
        (&["collect", "--start", "2999-01-01", "--end", "2999-01-02"], "in the future"),
        (&["collect", "--source", "nowhere"], "nowhere"),
        (&["collect", "--region", "SYN/../1"], "invalid region"),
        (&["collect", "--kind", "DF"], "kinds D and TEMP"),
        (&["collect", "--concurrency", "0"], "--concurrency"),
        (&["collect", "--missing-rate", "2"], "--missing-rate"),
        (&["collect", "--source", "file"], "--path"),
    ];
    for (args, message) in cases {
        energy(dir.path()).args(*args).assert().code(1).stderr(predicate::str::contains(*message));
    }
    // nothing was written by any of them
    assert!(!dir.path().join("source=synthetic").exists());
}
