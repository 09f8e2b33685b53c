//! `energy launch -n N -- <energy args>`: start N local ranks of a distributed command, the way
//! `mlx.launch` does on several machines: a ring hostfile in MLX's format (free local ports, or
//! `--hostfile`), `MLX_RANK` and `MLX_HOSTFILE` in each rank's environment, each rank's output
//! forwarded with a `[rank i]` prefix (rank 0's stdout as it is, so `--json` stays one
//! document), and the first rank to fail stops the others.
use super::{BadInput, Context};
use crate::cli::LaunchArgs;
use crate::model::distributed::{HOSTFILE_ENV, Hostfile, RANK_ENV};
use anyhow::{Context as _, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Most local ranks `launch` starts.
pub const MAX_RANKS: usize = 64;
/// How often the ranks' exit status is polled.
const POLL: Duration = Duration::from_millis(20);

pub(crate) fn run(context: &Context, args: &LaunchArgs, config: Option<&Path>) -> Result<()> {
    let hostfile = match &args.hostfile {
        Some(path) => Hostfile::read(path)?,
        None => {
            let ranks = args.ranks.unwrap_or(2);
            if ranks == 0 || ranks > MAX_RANKS {
                return Err(BadInput(format!("-n must be between 1 and {MAX_RANKS} (got {ranks})")).into());
            }
            Hostfile::local(ranks).context("cannot find free local ports for the ranks")?
        }
    };
    if let Some(ranks) = args.ranks
        && ranks != hostfile.len()
    {
        return Err(BadInput(format!("-n {ranks} differs from the {} ranks of the hostfile", hostfile.len())).into());
    }
    if args.command.first().is_some_and(|first| first == "launch") {
        return Err(BadInput("`energy launch` cannot launch itself".into()).into());
    }
    let dir = tempfile::Builder::new().prefix("energy-launch-").tempdir().context("cannot make a temporary folder")?;
    let hostfile_path = dir.path().join("hostfile.json");
    hostfile.write(&hostfile_path).context("cannot write the hostfile")?;
    let program = std::env::current_exe().context("cannot find the energy executable")?;
    if !context.quiet {
        eprintln!("launching {} ranks (hostfile {})", hostfile.len(), hostfile.to_json());
    }

    let mut ranks: Vec<Rank> = Vec::with_capacity(hostfile.len());
    for rank in 0..hostfile.len() {
        let mut command = Command::new(&program);
        if let Some(config) = config
            && !args.command.iter().any(|arg| arg == "--config")
        {
            command.arg("--config").arg(config);
        }
        command
            .args(&args.command)
            .env("ENERGY_STORE", context.store.root())
            .env(RANK_ENV, rank.to_string())
            .env(HOSTFILE_ENV, &hostfile_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        stop_with_launcher(&mut command);
        match command.spawn() {
            Ok(child) => ranks.push(Rank::new(rank, child)),
            Err(e) => {
                stop(&mut ranks);
                return Err(anyhow::Error::new(e).context(format!("cannot start rank {rank}")));
            }
        }
    }
    let outcome = wait_all(&mut ranks);
    for rank in ranks {
        rank.join_output();
    }
    outcome
}

/// On Linux, a rank is killed when `launch` dies (even by SIGKILL), so no rank is left waiting
/// for the others; elsewhere ranks notice at their next exchange.
fn stop_with_launcher(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec and only calls `prctl`,
        // which is async-signal-safe, with constant arguments.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// A started rank and the threads forwarding its output.
struct Rank {
    index: usize,
    child: Child,
    status: Option<ExitStatus>,
    forwarders: Vec<std::thread::JoinHandle<()>>,
}

impl Rank {
    fn new(index: usize, mut child: Child) -> Self {
        let mut forwarders = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            // Rank 0's stdout is the command's data (`--json`): unprefixed.
            let prefix = if index == 0 { String::new() } else { format!("[rank {index}] ") };
            forwarders.push(forward(stdout, prefix, false));
        }
        if let Some(stderr) = child.stderr.take() {
            forwarders.push(forward(stderr, format!("[rank {index}] "), true));
        }
        Self { index, child, status: None, forwarders }
    }

    fn join_output(self) {
        for forwarder in self.forwarders {
            let _ = forwarder.join();
        }
    }
}

/// Copy `from` line by line to our stdout or stderr, each line after `prefix`.
fn forward(from: impl Read + Send + 'static, prefix: String, to_stderr: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            let written = if to_stderr {
                let mut out = std::io::stderr().lock();
                out.write_all(prefix.as_bytes()).and_then(|()| out.write_all(&line))
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(prefix.as_bytes()).and_then(|()| out.write_all(&line)).and_then(|()| out.flush())
            };
            if written.is_err() {
                return;
            }
        }
    })
}

/// Wait until every rank has exited; the first that fails stops the others.
fn wait_all(ranks: &mut [Rank]) -> Result<()> {
    loop {
        let mut running = 0;
        for i in 0..ranks.len() {
            if ranks[i].status.is_some() {
                continue;
            }
            match ranks[i].child.try_wait() {
                Ok(Some(status)) => {
                    ranks[i].status = Some(status);
                    if !status.success() {
                        let index = ranks[i].index;
                        let stopped = stop(ranks);
                        let message = format!(
                            "rank {index} failed ({}){}",
                            describe(status),
                            if stopped > 0 {
                                format!("; stopped the other {stopped} running ranks")
                            } else {
                                String::new()
                            }
                        );
                        return Err(if status.code() == Some(1) {
                            BadInput(message).into()
                        } else {
                            anyhow::anyhow!(message)
                        });
                    }
                }
                Ok(None) => running += 1,
                Err(e) => {
                    stop(ranks);
                    return Err(anyhow::Error::new(e).context(format!("cannot wait for rank {}", ranks[i].index)));
                }
            }
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Kill every rank still running (only the processes this command started) and reap them;
/// returns how many were running.
fn stop(ranks: &mut [Rank]) -> usize {
    let mut stopped = 0;
    for rank in ranks.iter_mut().filter(|rank| rank.status.is_none()) {
        if let Ok(None) = rank.child.try_wait() {
            let _ = rank.child.kill();
            stopped += 1;
        }
        rank.status = rank.child.wait().ok();
    }
    stopped
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}
