//! `energy train --resume`, as the real binary: a run killed (SIGKILL) after its first epoch
//! resumes from the state saved in `<model dir>/resume/` to the same model as an uninterrupted
//! run, for one region and for several; resuming without a state, with other flags or with
//! other regions, is refused with exit code 1.
use super::cli::energy;
use super::common::weights;
use predicates::prelude::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A fixed range (not `--days`), so both runs see the same data whenever they run.
const RANGE: [&str; 4] = ["--start", "2024-01-01", "--end", "2024-02-09"];

fn train_args(model: &Path, epochs: &str) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--epochs", epochs, "--context", "48", "--json", "--model-dir"]
        .into_iter()
        .map(String::from)
        .collect();
    args.push(model.to_str().unwrap().into());
    args.extend(RANGE.map(String::from));
    args
}

fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Kills the child when dropped, so that a failed assertion leaves no paused run behind.
pub(super) struct KillOnDrop(pub(super) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read `child`'s stderr until a line contains `text`; what it printed up to there.
pub(super) fn wait_for_line(child: &mut Child, text: &str) -> String {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "it ended before printing `{text}`: {seen}");
        seen.push_str(&line);
        if line.contains(text) {
            return seen;
        }
    }
}

/// A run started with `args` that stops after saving its first epoch's state and waits there
/// (`--pause-after-epoch 1`); the test kills it.
#[cfg(unix)]
fn paused_after_epoch_1(store: &Path, args: &[String]) -> KillOnDrop {
    let mut child = KillOnDrop(
        Command::new(assert_cmd::cargo::cargo_bin("energy"))
            .env_remove("ENERGY_STORE")
            .env_remove("RUST_LOG")
            .env_remove("EIA_API_KEY")
            .arg("--store")
            .arg(store)
            .args(args)
            .args(["--pause-after-epoch", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_line(&mut child.0, "paused after epoch 1");
    child
}

/// Kill a paused run as Ctrl-C or a crash would end it.
#[cfg(unix)]
fn kill(mut run: KillOnDrop) {
    use std::os::unix::process::ExitStatusExt;

    run.0.kill().unwrap();
    let status = run.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

/// Every epoch's number, losses and learning rate in a `train --json` summary.
pub(super) fn losses(run: &serde_json::Value) -> Vec<[serde_json::Value; 4]> {
    run["training"]["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            [e["epoch"].clone(), e["train_loss"].clone(), e["validation_loss"].clone(), e["learning_rate"].clone()]
        })
        .collect()
}

#[test]
fn resume_without_a_state_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    energy(&dir.path().join("store"))
        .args(["train", "--resume", "--model-dir", model.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing to resume").and(predicate::str::contains("resume")));
    assert!(!model.exists());
}

#[test]
#[cfg(unix)]
fn a_killed_run_resumes_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    energy(&store).arg("collect").args(RANGE).assert().success();

    let straight_dir = dir.path().join("straight");
    let straight = json(&energy(&store).args(train_args(&straight_dir, "3")).output().unwrap());
    assert_eq!(straight["training"]["epochs"].as_array().unwrap().len(), 3);
    assert!(straight["training"].get("resumed_from_epoch").is_none());
    assert!(!straight_dir.join("resume").exists(), "a finished run leaves no resumable state");

    // A run that stops after saving its first epoch's state, then is killed there.
    let model = dir.path().join("model");
    let state = model.join("resume").join("state.json");
    let paused = paused_after_epoch_1(&store, &train_args(&model, "3"));
    assert!(state.is_file(), "no state after epoch 1");
    kill(paused);
    assert!(!model.join("model.safetensors").exists());

    // Other settings are refused, and the state stays.
    energy(&store)
        .args(train_args(&model, "4"))
        .arg("--resume")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("training.epochs: 3 → 4").and(predicate::str::contains("--resume")));
    assert!(state.is_file());

    let resumed = json(&energy(&store).args(train_args(&model, "3")).arg("--resume").output().unwrap());
    assert_eq!(resumed["training"]["resumed_from_epoch"], 1);
    // Bit-identical training: the same losses and learning rates in every epoch, the same
    // best epoch and the same test-split scores (forecasts) as the run that was not killed.
    assert_eq!(losses(&resumed), losses(&straight));
    assert_eq!(resumed["training"]["best_epoch"], straight["training"]["best_epoch"]);
    assert_eq!(resumed["test_scores"], straight["test_scores"]);
    assert!(model.join("model.safetensors").is_file());
    assert!(!model.join("resume").exists(), "the finished run removed its state");

    // Nothing is left to resume.
    energy(&store)
        .args(train_args(&model, "3"))
        .arg("--resume")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing to resume"));
}

/// Two regions in one small model, trained 2 epochs (and refitted) on a fixed range.
fn multi_args(model: &Path, regions: [&str; 2], config: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["--config".into(), config.to_str().unwrap().into()];
    args.extend(["train", "--region", regions[0], "--region", regions[1]].map(String::from));
    args.extend(["--epochs", "2", "--context", "48", "--json", "--model-dir"].map(String::from));
    args.push(model.to_str().unwrap().into());
    args.extend(RANGE.map(String::from));
    args
}

/// A multi-region run killed after its first epoch resumes to the weights, losses and every
/// region's scores (the boosted trees' too) of a run that was not; a resume with another
/// region set is refused, naming both.
#[test]
#[cfg(unix)]
fn a_killed_multi_region_run_resumes_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    energy(&store)
        .args(["collect", "--region", "SYN1", "--region", "SYN2", "--region", "SYN3"])
        .args(RANGE)
        .assert()
        .success();
    let config = dir.path().join("energy.toml");
    std::fs::write(&config, "[model]\nd_model = 16\nn_heads = 2\nn_layers = 1\nbatch_size = 32\n").unwrap();
    let two = ["SYN1", "SYN2"];

    let straight_dir = dir.path().join("straight");
    let straight = json(&energy(&store).args(multi_args(&straight_dir, two, &config)).output().unwrap());
    assert!(!straight_dir.join("resume").exists(), "a finished run leaves no resumable state");

    let model = dir.path().join("model");
    let state = model.join("resume").join("state.json");
    kill(paused_after_epoch_1(&store, &multi_args(&model, two, &config)));
    assert!(state.is_file());
    assert!(!model.join("model.safetensors").exists());

    // Other regions are refused before any work, and the state stays.
    for (regions, now) in [(["SYN1", "SYN3"], "SYN1, SYN3"), (["SYN2", "SYN1"], "SYN2, SYN1")] {
        energy(&store)
            .args(multi_args(&model, regions, &config))
            .arg("--resume")
            .assert()
            .code(1)
            .stderr(predicate::str::contains(format!("is a run of the regions SYN1, SYN2, not {now}")));
    }
    // and so is one region
    energy(&store)
        .args(["train", "--region", "SYN1", "--resume", "--model-dir", model.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is a run of the regions SYN1, SYN2, not SYN1"));
    assert!(state.is_file());

    let resumed = json(&energy(&store).args(multi_args(&model, two, &config)).arg("--resume").output().unwrap());
    assert_eq!(resumed["training"]["resumed_from_epoch"], 1);
    assert_eq!(losses(&resumed), losses(&straight));
    assert_eq!(resumed["refit"]["windows"], straight["refit"]["windows"]);
    assert_eq!(resumed["regions"], straight["regions"]);
    assert_eq!(resumed["overall_scores"], straight["overall_scores"]);
    assert!(weights(&model) == weights(&straight_dir), "the resumed run's weights differ");
    assert!(!model.join("resume").exists(), "the finished run removed its state");
}
