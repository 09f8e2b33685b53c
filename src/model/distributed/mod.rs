//! MLX's distributed layer from Rust: a safe [`Group`] over mlx-sys's `mlx_distributed_*`
//! (mlx-rs wraps none of it), the hostfile the ring backend reads, a watchdog that turns a
//! dead or hung rank into a clear error instead of a hang, and data-parallel gradient averaging.
//!
//! Ranks find each other the way every MLX program does: `MLX_RANK` (this process's rank) and
//! `MLX_HOSTFILE` (a JSON list with one list of `"ip:port"` per rank, [`Hostfile`]). `energy
//! launch` sets both for local ranks; `mlx.launch` sets them on several machines.
//!
//! # Layout
//! - `group`: [`Group`] (init, rank, size, all_sum, all_gather, send, recv) and the mlx-c
//!   error handler that turns MLX errors into [`DistributedError`]s (mlx-c's default handler
//!   exits the process).
//! - `hostfile`: [`Hostfile`], MLX's ring hostfile: read, checked, written.
//! - `watchdog`: [`Watchdog`], the deadline around every collective.
//! - `data_parallel`: [`DataParallel`], each rank's shard of a batch and one flattened
//!   all_sum of the gradients per step.
//! - `ring`: [`RingAttention`], Ring Attention across ranks (sequence parallelism): forward
//!   and explicit backward, key/value blocks passed to the ring neighbour with send/recv.
mod custom_vjp;
mod data_parallel;
mod group;
mod hostfile;
mod ring;
mod watchdog;

pub use custom_vjp::{custom_vjp, take_failure};
pub use data_parallel::{CommunicationStats, DataParallel};
pub use group::{Backend, Group};
pub use hostfile::Hostfile;
pub use ring::{ActiveRing, RingAttention, RingForward, attention_across_ranks, shard_bounds};
pub use watchdog::{Watchdog, timeout_from_env};

use std::time::Duration;

/// Environment variable holding this process's rank (MLX's name).
pub const RANK_ENV: &str = "MLX_RANK";
/// Environment variable holding the path of the ring hostfile (MLX's name).
pub const HOSTFILE_ENV: &str = "MLX_HOSTFILE";
/// Seconds a rank waits for the others in a collective (or to form the ring) before it fails.
pub const TIMEOUT_ENV: &str = "ENERGY_DIST_TIMEOUT";
/// [`TIMEOUT_ENV`] when unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// True when this process was started as one rank of several (`MLX_RANK` and `MLX_HOSTFILE`).
pub fn launched_as_rank() -> bool {
    std::env::var_os(RANK_ENV).is_some() && std::env::var_os(HOSTFILE_ENV).is_some()
}

/// A failure of the distributed layer.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    /// MLX reported an error (its message).
    #[error("{operation} failed: {message}")]
    Mlx { operation: &'static str, message: String },
    /// The hostfile or rank given in the environment cannot work.
    #[error("{0}")]
    Setup(String),
    /// Another rank did not answer in time.
    #[error("{what}: no answer from the other ranks within {} s (a rank has died, hung or never started)", .timeout.as_secs_f64())]
    Timeout { what: String, timeout: Duration },
    /// A collective came back without every rank's part (a rank died during it).
    #[error("{what} came back incomplete: a rank has died or left the run ({detail})")]
    Incomplete { what: String, detail: String },
    /// A bad argument to a collective (shape, rank, neighbour).
    #[error("{0}")]
    Invalid(String),
}

impl DistributedError {
    /// True for what the user can fix in the command line or environment (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Setup(_))
    }
}

impl From<mlx_rs::error::Exception> for DistributedError {
    fn from(error: mlx_rs::error::Exception) -> Self {
        Self::Mlx { operation: "MLX operation", message: error.what().to_string() }
    }
}

/// Tests that need several ranks start the test binary itself once per rank, running one
/// ignored worker test with `MLX_RANK`/`MLX_HOSTFILE` set.
#[cfg(test)]
pub(crate) mod test_ranks {
    use super::{HOSTFILE_ENV, Hostfile, RANK_ENV};
    use std::process::{Command, Output, Stdio};
    use std::time::Duration;

    /// Set in a worker's environment.
    const WORKER_ENV: &str = "ENERGY_TEST_RANK_WORKER";
    /// The line a worker prints with its figures.
    pub(crate) const RESULT: &str = "rank result:";

    pub(crate) fn is_worker() -> bool {
        std::env::var_os(WORKER_ENV).is_some()
    }

    /// Run the ignored test `worker` as `ranks` ranks; every rank must succeed within
    /// `timeout` (else all are killed and the test fails). Returns each rank's result line.
    pub(crate) fn run(worker: &str, ranks: usize, timeout: Duration) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let hostfile = dir.path().join("hostfile.json");
        Hostfile::local(ranks).unwrap().write(&hostfile).unwrap();
        let program = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..ranks)
            .map(|rank| {
                Command::new(&program)
                    .args(["--exact", worker, "--ignored", "--nocapture", "--test-threads=1"])
                    .env(WORKER_ENV, "1")
                    .env(RANK_ENV, rank.to_string())
                    .env(HOSTFILE_ENV, &hostfile)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(std::process::Child::id).collect();
        let (sender, receiver) = std::sync::mpsc::channel();
        for (rank, child) in children.into_iter().enumerate() {
            let sender = sender.clone();
            std::thread::spawn(move || sender.send((rank, child.wait_with_output())));
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut outputs: Vec<Option<Output>> = vec![None; ranks];
        for _ in 0..ranks {
            match receiver.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok((rank, output)) => outputs[rank] = Some(output.unwrap()),
                Err(_) => {
                    for pid in &pids {
                        // SAFETY (test): signals only the worker processes this test started.
                        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                    }
                    panic!("the ranks did not finish within {timeout:?}");
                }
            }
        }
        let outputs: Vec<Output> = outputs.into_iter().map(Option::unwrap).collect();
        let report: String = outputs
            .iter()
            .enumerate()
            .map(|(rank, output)| {
                format!(
                    "rank {rank} ({}):\n{}\n{}\n",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            })
            .collect();
        outputs
            .into_iter()
            .enumerate()
            .map(|(rank, output)| {
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(output.status.success(), "rank {rank} failed; every rank's output:\n{report}");
                stdout
                    .lines()
                    .find_map(|line| line.find(RESULT).map(|at| &line[at..]))
                    .unwrap_or_else(|| panic!("rank {rank} printed no result (the worker did not run?): {stdout}"))
                    .to_string()
            })
            .collect()
    }
}
