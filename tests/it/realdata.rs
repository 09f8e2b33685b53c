//! Where the real captured data lives: `../shared/realdata` beside the project, or
//! `ENERGY_REALDATA`. Tests that need it print a notice and skip when it is absent, unless
//! `ENERGY_REQUIRE_REALDATA=1` (set by `.ci/run` where the folder is provided): then a missing
//! folder fails the test instead of skipping it.
use std::path::PathBuf;

pub fn dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ENERGY_REALDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata"));
    if dir.is_dir() {
        return Some(dir);
    }
    if required() {
        panic!("the real data folder {} is absent and ENERGY_REQUIRE_REALDATA is set", dir.display());
    }
    eprintln!("skipping: real data folder {} is absent (set ENERGY_REALDATA)", dir.display());
    None
}

/// Is a missing real-data folder an error (`ENERGY_REQUIRE_REALDATA` set, not `0`)?
fn required() -> bool {
    std::env::var("ENERGY_REQUIRE_REALDATA").is_ok_and(|v| !v.is_empty() && v != "0")
}
