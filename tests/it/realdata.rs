//! Where the real captured data lives: `../shared/realdata` beside the project, or
//! `ENERGY_REALDATA`. Tests that need it print a notice and skip when it is absent.
use std::path::PathBuf;

pub fn dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ENERGY_REALDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: real data folder {} is absent (set ENERGY_REALDATA)", dir.display());
        None
    }
}
