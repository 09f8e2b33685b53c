//! Data- and sequence-parallel training over local ranks, as the real binary: `energy launch
//! -n N -- train [--parallel sequence]` gives the losses and weights of one process, for one
//! region and for several; a killed rank makes the others fail within
//! seconds; a bad or unreachable hostfile is a clear error with exit code 1 or 2.
use super::cli::energy;
use super::common::weights;
use predicates::prelude::*;
use std::io::{BufRead, BufReader};
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
    let (expected, actual) =
        (single["training"]["epochs"].as_array().unwrap(), run["training"]["epochs"].as_array().unwrap());
    assert_eq!(expected.len(), actual.len());
    let mut worst_loss = 0.0f64;
    for (a, b) in expected.iter().zip(actual) {
        for field in ["train_loss", "validation_loss"] {
            let (a, b) = (a[field].as_f64().unwrap(), b[field].as_f64().unwrap());
            worst_loss = worst_loss.max((a - b).abs());
        }
    }
    let (ours, theirs) = (weights(single_dir), weights(model));
    assert_eq!(theirs.len(), ours.len());
    let mut worst_weight = 0.0f64;
    for (key, values) in &ours {
        let other = &theirs[key];
        assert_eq!(values.len(), other.len(), "{key}");
        for (i, (a, b)) in values.iter().zip(other).enumerate() {
            // The key projection's bias has no gradient (softmax ignores a shift shared by a
            // query row's scores): both runs' AdamW steps on it are rounding noise, scaled up to
            // the learning rate. Every other weight is compared.
            if key.ends_with("qkv.bias") && (D_MODEL..2 * D_MODEL).contains(&i) {
                continue;
            }
            worst_weight = worst_weight.max(f64::from((a - b).abs()));
        }
    }
    eprintln!("{ranks} ranks vs one process: max |Δ loss| {worst_loss:e}, max |Δ weight| {worst_weight:e}");
    assert!(worst_loss < TOLERANCE && worst_weight < TOLERANCE, "{worst_loss:e} {worst_weight:e}");
    // Only rank 0 wrote: one model, no leftover state.
    assert!(!model.join("resume").exists());
}

/// Several regions in one model: every rank builds the same windows of every region, so two
/// ranks train like one process; rank 0 alone scores every region (the boosted trees too) and
/// saves. A distributed resume is refused.
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
        .stderr(predicate::str::contains("--resume is not supported in a distributed run"));
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
        .stdout(Stdio::null())
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
    let mut stderr = BufReader::new(victim.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "rank 1 ended before joining: {seen}");
        seen.push_str(&line);
        if line.contains("joined the distributed run") {
            break;
        }
    }
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
    // Every rank refuses --resume; launch reports the first and exits 1.
    energy(&store)
        .args(["launch", "-n", "2", "--", "train", "--resume", "--days", "10"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("failed (exit code 1)").and(predicate::str::contains("[rank ")));
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
