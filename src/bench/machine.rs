//! Where the figures were measured: CPU, cores, memory, OS, MLX's device and BLAS, the build
//! and the environment variables that change the figures.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The mlx-rs version `Cargo.toml` pins (`=0.33.0`).
pub const MLX_RS_VERSION: &str = "0.33.0";
/// Environment variables that change the figures, recorded when set.
const ENVIRONMENT: [&str; 6] = [
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MLX_BFS_MAX_WIDTH",
    "RAYON_NUM_THREADS",
    "POLARS_MAX_THREADS",
    "RUST_LOG",
];

/// Where the figures were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cores: usize,
    pub physical_cores: Option<usize>,
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub arch: String,
    /// MLX's default device: `Device(gpu, 0)` on a Mac, `Device(cpu, 0)` on Linux.
    pub mlx_device: String,
    /// The BLAS MLX calls on the CPU: `OpenBLAS`, `reference BLAS (mlx-cpu wheel)`, `Accelerate`.
    pub blas: String,
    /// The BLAS libraries mapped into the process (Linux).
    pub blas_libraries: Vec<String>,
    pub energy_version: String,
    pub mlx_rs_version: String,
    /// HEAD of the source tree the binary was built from, when it is still there.
    pub git_commit: Option<String>,
    /// Set variables that change the figures (thread counts, MLX scheduling).
    pub environment: BTreeMap<String, String>,
}

impl Machine {
    /// What this process runs on.
    pub fn detect() -> Self {
        let logical_cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let (cpu_model, physical_cores, memory_bytes, os) = platform();
        let blas_libraries = blas_libraries();
        let blas = if cfg!(target_os = "macos") {
            "Accelerate".to_string()
        } else if blas_libraries.iter().any(|path| file_name(path).starts_with("libopenblas")) {
            "OpenBLAS".to_string()
        } else if blas_libraries.iter().any(|path| file_name(path).starts_with("libblas-")) {
            "reference BLAS (mlx-cpu wheel)".to_string()
        } else if let Some(path) = blas_libraries.first() {
            file_name(path).to_string()
        } else {
            "unknown".to_string()
        };
        let mlx_device = match mlx_rs::Device::try_default() {
            Ok(device) => device.to_string(),
            Err(error) => format!("unknown ({})", error.what()),
        };
        let environment =
            ENVIRONMENT.iter().filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?))).collect();
        Self {
            cpu_model,
            logical_cores,
            physical_cores,
            memory_bytes,
            os,
            arch: std::env::consts::ARCH.to_string(),
            mlx_device,
            blas,
            blas_libraries,
            energy_version: env!("CARGO_PKG_VERSION").to_string(),
            mlx_rs_version: MLX_RS_VERSION.to_string(),
            git_commit: git_commit(),
            environment,
        }
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Trimmed standard output of a command that succeeded.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program).args(args).stderr(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}

fn git_commit() -> Option<String> {
    command_output("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
}

/// CPU model, physical cores, memory and OS.
#[cfg(target_os = "linux")]
fn platform() -> (String, Option<usize>, Option<u64>, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (model, physical) = parse_cpuinfo(&cpuinfo);
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let release = std::fs::read_to_string("/etc/os-release").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
        Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|k| k.trim().to_string());
    let os = match (release, kernel) {
        (Some(release), Some(kernel)) => format!("{release} (Linux {kernel})"),
        (Some(release), None) => release,
        (None, Some(kernel)) => format!("Linux {kernel}"),
        (None, None) => "Linux".to_string(),
    };
    (model.unwrap_or_else(|| "unknown".into()), physical, memory, os)
}

#[cfg(target_os = "macos")]
fn platform() -> (String, Option<usize>, Option<u64>, String) {
    let model = command_output("sysctl", &["-n", "machdep.cpu.brand_string"]).unwrap_or_else(|| "unknown".into());
    let physical = command_output("sysctl", &["-n", "hw.physicalcpu"]).and_then(|n| n.parse().ok());
    let memory = command_output("sysctl", &["-n", "hw.memsize"]).and_then(|n| n.parse().ok());
    let os = command_output("sw_vers", &["-productVersion"]).map_or_else(|| "macOS".into(), |v| format!("macOS {v}"));
    (model, physical, memory, os)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn platform() -> (String, Option<usize>, Option<u64>, String) {
    ("unknown".into(), None, None, std::env::consts::OS.to_string())
}

/// The CPU model and the number of distinct (physical id, core id) pairs of `/proc/cpuinfo`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_cpuinfo(text: &str) -> (Option<String>, Option<usize>) {
    let mut model = None;
    let mut cores = std::collections::BTreeSet::new();
    for processor in text.split("\n\n") {
        let field = |name: &str| {
            processor.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        if model.is_none() {
            model = field("model name").or_else(|| field("Hardware")).or_else(|| field("Model"));
        }
        if let (Some(package), Some(core)) = (field("physical id"), field("core id")) {
            cores.insert((package, core));
        }
    }
    (model.filter(|m| !m.is_empty()), (!cores.is_empty()).then_some(cores.len()))
}

/// Paths of the BLAS libraries mapped into this process (`/proc/self/maps`; empty elsewhere).
fn blas_libraries() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for path in maps.lines().filter_map(|line| line.split_whitespace().nth(5)) {
        let name = file_name(path);
        let blas = ["libopenblas", "libblas", "libmkl_rt", "libblis", "libcblas"].iter().any(|p| name.starts_with(p));
        if blas && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_gives_the_model_and_physical_cores() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 0\n\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 0\n\n\
                    processor\t: 2\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 1\n";
        assert_eq!(parse_cpuinfo(text), (Some("AMD EPYC 7B13".into()), Some(2)));
        assert_eq!(parse_cpuinfo(""), (None, None));
    }
}
