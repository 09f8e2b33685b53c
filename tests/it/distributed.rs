//! Data- and sequence-parallel training over local ranks, as the real binary: `energy launch
//! -n N -- train [--parallel sequence]` gives the losses and weights of one process, for one
//! region and for several; a paused run resumes from rank 0's state alone to the uninterrupted
//! run's model; a killed rank makes the others fail within seconds; a bad or unreachable
//! hostfile, or nothing to resume, is a clear error with exit code 1 or 2.
use super::cli::energy;
use super::common::weights;
use super::resume::{KillOnDrop, losses, wait_for_line};
use predicates::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fixed range, so every run sees the same data.
const RANGE: [&str; 4] = ["--start", "2024-01-01", "--end", "2024-02-09"];
/// A small model with small batches: several steps per epoch, seconds per run.
const CONFIG: &str = "[model]\nd_model = 16\nn_heads = 2\nn_layers = 1\nbatch_size = 16\nepochs = 2\nmin_steps = 0\n";
/// `d_model` of [`CONFIG`].
const D_MODEL: usize = 16;
/// Largest |Δ| between a distributed run and one process, losses and weights.
const TOLERANCE: f64 = 1e-5;

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    config: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store = root.join("store");
    let config = root.join("energy.toml");
    std::fs::write(&config, CONFIG).unwrap();
    energy(&store).arg("collect").args(RANGE).assert().success();
    Setup { _dir: dir, root, store, config }
}

fn train_args(model: &Path) -> Vec<String> {
    let mut args: Vec<String> =
        ["train", "--context", "48", "--json", "--model-dir"].into_iter().map(String::from).collect();
    args.push(model.to_str().unwrap().into());
    args.extend(RANGE.map(String::from));
    args
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// The largest |Δ| between two runs' epoch losses, and between their weights.
fn differences(
    (one, one_weights): (&serde_json::Value, &HashMap<String, Vec<f32>>),
    (other, other_weights): (&serde_json::Value, &HashMap<String, Vec<f32>>),
) -> (f64, f64) {
    let (expected, actual) =
        (one["training"]["epochs"].as_array().unwrap(), other["training"]["epochs"].as_array().unwrap());
    assert_eq!(expected.len(), actual.len());
    let mut worst_loss = 0.0f64;
    for (a, b) in expected.iter().zip(actual) {
        for field in ["train_loss", "validation_loss"] {
            let (a, b) = (a[field].as_f64().unwrap(), b[field].as_f64().unwrap());
            worst_loss = worst_loss.max((a - b).abs());
        }
    }
    assert_eq!(other_weights.len(), one_weights.len());
    let mut worst_weight = 0.0f64;
    for (key, values) in one_weights {
        let other = &other_weights[key];
        assert_eq!(values.len(), other.len(), "{key}");
        for (i, (a, b)) in values.iter().zip(other).enumerate() {
            // The key projection's bias has no gradient (softmax ignores a shift shared by a
            // query row's scores): both runs' AdamW steps on it are rounding noise, scaled
            // up to the learning rate. Every other weight is compared.
            if key.ends_with("qkv.bias") && (D_MODEL..2 * D_MODEL).contains(&i) {
                continue;
            }
            worst_weight = worst_weight.max(f64::from((a - b).abs()));
        }
    }
    (worst_loss, worst_weight)
}

#[test]
fn two_and_four_ranks_train_like_one_process() {
    let s = setup();
    let single_dir = s.root.join("single");
    let started = Instant::now();
    let single = json(&energy(&s.store).arg("--config").arg(&s.config).args(train_args(&single_dir)).output().unwrap());
    eprintln!("one process: {:.1} s", started.elapsed().as_secs_f64());
    // `data` splits every batch's windows; `sequence` every window's 72 positions (shards of
    // 36, 18: the 24-hour horizon lies on the last rank, or across the last two).
    for (ranks, parallel) in [(2, "data"), (4, "data"), (2, "sequence"), (4, "sequence")] {
        let model = s.root.join(format!("ranks{ranks}-{parallel}"));
        let started = Instant::now();
        let output = energy(&s.store)
            .arg("--config")
            .arg(&s.config)
            .args(["launch", "-n", &ranks.to_string(), "--"])
            .args(train_args(&model))
            .args(["--parallel", parallel])
            .output()
            .unwrap();
        eprintln!("{ranks} ranks, {parallel} parallel: {:.1} s", started.elapsed().as_secs_f64());
        assert_trained_alike(&single, &single_dir, &json(&output), &model, ranks);
    }
}

/// The distributed run `run` (summary; its model in `model`) of `ranks` ranks took the steps
/// of the one-process run `single` (its model in `single_dir`): every epoch's losses and every
/// weight within [`TOLERANCE`]; only rank 0 wrote.
fn assert_trained_alike(
    single: &serde_json::Value,
    single_dir: &Path,
    run: &serde_json::Value,
    model: &Path,
    ranks: usize,
) {
    let communication = &run["training"]["communication"];
    assert_eq!(communication["ranks"], ranks, "{communication}");
    assert!(communication["steps"].as_u64().unwrap() >= 4, "several steps: {communication}");
    let (worst_loss, worst_weight) = differences((single, &weights(single_dir)), (run, &weights(model)));
    eprintln!("{ranks} ranks vs one process: max |Δ loss| {worst_loss:e}, max |Δ weight| {worst_weight:e}");
    assert!(worst_loss < TOLERANCE && worst_weight < TOLERANCE, "{worst_loss:e} {worst_weight:e}");
    // Only rank 0 wrote: one model, no leftover state.
    assert!(!model.join("resume").exists());
}

/// Several regions in one model: every rank builds the same windows of every region, so two
/// ranks train like one process; rank 0 alone scores every region (the boosted trees too) and
/// saves. The finished run left no state: a distributed resume of it says so (rank 0 reads the
/// state for every rank).
#[test]
fn two_ranks_train_several_regions_like_one_process() {
    let s = setup();
    energy(&s.store).args(["collect", "--region", "SYN2"]).args(RANGE).assert().success();
    let args = |model: &Path| {
        let mut args = train_args(model);
        args.extend(["--region", "SYN1", "--region", "SYN2"].map(String::from));
        args
    };
    let single_dir = s.root.join("single");
    let single = json(&energy(&s.store).arg("--config").arg(&s.config).args(args(&single_dir)).output().unwrap());
    let model = s.root.join("ranks2");
    let output = energy(&s.store)
        .arg("--config")
        .arg(&s.config)
        .args(["launch", "-n", "2", "--"])
        .args(args(&model))
        .output()
        .unwrap();
    let run = json(&output);
    assert_trained_alike(&single, &single_dir, &run, &model, 2);
    let regions = run["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    for region in regions {
        let names: Vec<&str> =
            region["test_scores"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"model") && names.contains(&"boosted trees"), "{names:?}");
    }
    assert!(model.join("boosted.json").is_file());
    energy(&s.store)
        .arg("--config")
        .arg(&s.config)
        .args(["launch", "-n", "2", "--"])
        .args(args(&model))
        .arg("--resume")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing to resume"));
}

/// `energy` as rank `rank` of `hostfile`, started directly (not by `energy launch`).
fn rank(s: &Setup, hostfile: &Path, rank: usize, timeout_s: &str, extra: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("energy"))
        .env_remove("ENERGY_STORE")
        .env_remove("RUST_LOG")
        .env("MLX_RANK", rank.to_string())
        .env("MLX_HOSTFILE", hostfile)
        .env("ENERGY_DIST_TIMEOUT", timeout_s)
        .arg("--store")
        .arg(&s.store)
        .arg("--config")
        .arg(&s.config)
        .args(train_args(&s.root.join(format!("rank{rank}"))))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for `child` at most `limit`; kill it and fail the test past that.
fn wait_at_most(child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(limit) {
        Ok(output) => (output.unwrap(), started.elapsed()),
        Err(_) => {
            // SAFETY (test): signals only the process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("the rank still ran after {limit:?}: a hang");
        }
    }
}

fn write_hostfile(s: &Setup, ranks: usize) -> PathBuf {
    let path = s.root.join(format!("hostfile{ranks}.json"));
    let hosts: Vec<Vec<String>> = (0..ranks)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            vec![format!("127.0.0.1:{}", listener.local_addr().unwrap().port())]
        })
        .collect();
    std::fs::write(&path, serde_json::to_string(&hosts).unwrap()).unwrap();
    path
}

#[test]
fn a_killed_rank_makes_the_other_fail_within_seconds() {
    let s = setup();
    let hostfile = write_hostfile(&s, 2);
    // Many epochs: the run is still training when rank 1 dies.
    let epochs = ["--epochs", "500", "-v"];
    let survivor = rank(&s, &hostfile, 0, "5", &epochs);
    let mut victim = rank(&s, &hostfile, 1, "5", &epochs);
    wait_for_line(&mut victim, "joined the distributed run");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (output, waited) = wait_at_most(survivor, Duration::from_secs(90));
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("rank 0 stopped {:.1} s after rank 1 was killed: {stderr}", waited.as_secs_f64());
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    // MLX notices the closed socket ("connection to a peer was lost"); else the all_sum's check
    // value or the watchdog does.
    assert!(
        ["connection to a peer was lost", "came back incomplete: a rank has died", "no answer from the other ranks"]
            .iter()
            .any(|message| stderr.contains(message)),
        "{stderr:?}"
    );
    assert!(waited < Duration::from_secs(30), "took {waited:?}");
    assert!(!s.root.join("rank0").join("model.safetensors").exists());
}

#[test]
fn an_unreachable_ring_is_an_error_not_a_hang() {
    let s = setup();
    // Rank 0 waits for rank 1, which never starts.
    let hostfile = write_hostfile(&s, 2);
    let (output, waited) = wait_at_most(rank(&s, &hostfile, 0, "2", &[]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("forming the ring group: no answer"), "{stderr}");
    eprintln!("rank 0 alone gave up after {:.1} s", waited.as_secs_f64());
    // An address this machine does not have: MLX cannot bind it, and says so.
    let foreign = s.root.join("foreign.json");
    std::fs::write(&foreign, r#"[["192.0.2.1:40000"], ["192.0.2.2:40000"]]"#).unwrap();
    let (output, _) = wait_at_most(rank(&s, &foreign, 0, "10", &[]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[ring]"), "MLX's own message: {stderr}");
}

#[test]
fn bad_hostfiles_and_flags_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "[{\"ssh\": \"mac1\"}]").unwrap();
    energy(&store)
        .args(["launch", "--hostfile", bad.to_str().unwrap(), "--", "train"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("hostfile").and(predicate::str::contains("ip:port")));
    energy(&store)
        .env("MLX_RANK", "0")
        .env("MLX_HOSTFILE", dir.path().join("missing.json"))
        .args(["train", "--days", "10"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot read the hostfile"));
    energy(&store)
        .env_remove("MLX_RANK")
        .env_remove("MLX_HOSTFILE")
        .args(["train", "--distributed", "--days", "10"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("MLX_RANK").and(predicate::str::contains("energy launch")));
    // Nothing to resume: launch reports the first rank that says so and exits 1.
    energy(&store).args(["launch", "-n", "2", "--", "train", "--resume", "--days", "10"]).assert().code(1).stderr(
        predicate::str::contains("failed (exit code 1)")
            .and(predicate::str::contains("[rank "))
            .and(predicate::str::contains("nothing to resume")),
    );
    energy(&store).args(["launch", "-n", "0", "--", "train"]).assert().code(1);
    energy(&store).args(["launch", "-n", "2"]).assert().code(1);
}

/// Rank 1 cannot bind its address and fails at once; rank 0 would wait for it (MLX retries a
/// connection for about 15 s, longer to an unroutable address): `launch` stops rank 0 as soon as
/// rank 1 fails.
#[test]
fn launch_stops_the_other_ranks_when_one_fails() {
    let s = setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hostfile = s.root.join("mixed.json");
    std::fs::write(&hostfile, format!(r#"[["127.0.0.1:{port}"], ["192.0.2.1:40000"]]"#)).unwrap();
    let started = Instant::now();
    let mut command = energy(&s.store);
    command
        .env("ENERGY_DIST_TIMEOUT", "120")
        .args(["launch", "--hostfile", hostfile.to_str().unwrap(), "--"])
        .args(train_args(&s.root.join("model")))
        .timeout(Duration::from_secs(60))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("rank 1 failed").and(predicate::str::contains("stopped the other 1")));
    let waited = started.elapsed();
    eprintln!("launch stopped after {:.1} s", waited.as_secs_f64());
    assert!(waited < Duration::from_secs(30), "{waited:?}");
}

/// Run `ranks` ranks of `train … extra` (each with a model folder of its own) to the end.
fn run_ranks(s: &Setup, ranks: usize, extra: &[&str]) -> Vec<Output> {
    let hostfile = write_hostfile(s, ranks);
    let children: Vec<Child> = (0..ranks).map(|r| rank(s, &hostfile, r, "60", extra)).collect();
    children.into_iter().map(|child| wait_at_most(child, Duration::from_secs(600)).0).collect()
}

/// A run of two ranks paused after its first epoch (both ranks wait there; rank 0 alone saved a
/// state) and killed resumes on two ranks to the uninterrupted run's model, bit for bit, rank 1
/// holding an empty model folder of its own (what it resumes from reaches it through the group
/// only); and on another number of ranks (one process) to the same model up to float rounding.
#[test]
fn a_paused_distributed_run_resumes_to_the_same_model() {
    let s = setup();
    let epochs = ["--epochs", "3"];
    let straight_dir = s.root.join("straight");
    let output = energy(&s.store)
        .arg("--config")
        .arg(&s.config)
        .args(["launch", "-n", "2", "--"])
        .args(train_args(&straight_dir))
        .args(epochs)
        .output()
        .unwrap();
    let straight = json(&output);
    assert_eq!(straight["training"]["epochs"].as_array().unwrap().len(), 3);

    let hostfile = write_hostfile(&s, 2);
    // killed when dropped: a failed assertion leaves no paused rank behind
    let mut paused: Vec<KillOnDrop> = (0..2)
        .map(|r| KillOnDrop(rank(&s, &hostfile, r, "60", &["--epochs", "3", "--pause-after-epoch", "1"])))
        .collect();
    let seen = wait_for_line(&mut paused[0].0, "paused after epoch 1");
    drop(paused);
    let (leader_dir, other_dir) = (s.root.join("rank0"), s.root.join("rank1"));
    assert!(leader_dir.join("resume").join("state.json").is_file(), "{seen}");
    assert!(!leader_dir.join("model.safetensors").exists());
    assert!(!other_dir.exists(), "rank 1 writes nothing");
    // the same state, for one process to resume
    let single_dir = s.root.join("single");
    std::fs::create_dir_all(single_dir.join("resume")).unwrap();
    for entry in std::fs::read_dir(leader_dir.join("resume")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), single_dir.join("resume").join(entry.file_name())).unwrap();
    }

    let outputs = run_ranks(&s, 2, &["--epochs", "3", "--resume"]);
    assert!(outputs[1].status.success(), "{}", String::from_utf8_lossy(&outputs[1].stderr));
    let resumed = json(&outputs[0]);
    assert_eq!(resumed["training"]["resumed_from_epoch"], 1);
    assert_eq!(resumed["training"]["communication"]["ranks"], 2);
    assert_eq!(losses(&resumed), losses(&straight));
    assert_eq!(resumed["training"]["best_epoch"], straight["training"]["best_epoch"]);
    assert_eq!(resumed["test_scores"], straight["test_scores"]);
    assert_eq!(weights(&leader_dir), weights(&straight_dir));
    assert!(!leader_dir.join("resume").exists(), "the finished run removed its state");
    assert!(!other_dir.exists(), "rank 1 writes nothing");

    // One process resumes the state of two ranks: the shards change, the steps do not.
    let output = energy(&s.store)
        .arg("--config")
        .arg(&s.config)
        .args(train_args(&single_dir))
        .args(epochs)
        .arg("--resume")
        .output();
    let single = json(&output.unwrap());
    assert_eq!(single["training"]["resumed_from_epoch"], 1);
    let (worst_loss, worst_weight) =
        differences((&straight, &weights(&straight_dir)), (&single, &weights(&single_dir)));
    eprintln!("resumed as one process vs two ranks: max |Δ loss| {worst_loss:e}, max |Δ weight| {worst_weight:e}");
    assert!(worst_loss < TOLERANCE && worst_weight < TOLERANCE, "{worst_loss:e} {worst_weight:e}");
}

/// Every rank fails with exit code 1 and says why (rank 1 as rank 0's answer), none waits.
#[test]
fn resuming_without_a_state_fails_on_every_rank() {
    let s = setup();
    for (rank, output) in run_ranks(&s, 2, &["--resume"]).into_iter().enumerate() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "rank {rank}: {stderr}");
        assert!(stderr.contains("nothing to resume"), "rank {rank}: {stderr}");
        if rank > 0 {
            assert!(stderr.contains("rank 0: nothing to resume"), "{stderr}");
        }
    }
}

#[test]
fn sequence_parallelism_outside_a_distributed_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    energy(&dir.path().join("store"))
        .args(["train", "--parallel", "sequence"])
        .args(RANGE)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("energy launch -n N -- train"));
}
