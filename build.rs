//! Linux only: give binaries an rpath to the prebuilt MLX (`MLX_PREFIX/lib`, set by
//! `.cargo/config.toml`) and put Debian's OpenBLAS ahead of the reference BLAS that the MLX
//! wheel bundles, so MLX's CPU matmuls run on OpenBLAS. macOS builds upstream mlx-rs unchanged.
use std::env;

fn main() {
    println!("cargo:rerun-if-env-changed=MLX_PREFIX");
    println!("cargo:rerun-if-env-changed=ENERGY_REFERENCE_BLAS");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    if let Ok(prefix) = env::var("MLX_PREFIX") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{prefix}/lib");
    }
    // libmlx.so from the wheel needs a BLAS; the symbols are looked up in load order, and a
    // direct dependency of the executable is loaded before libmlx's own (reference) libblas.
    // `--no-as-needed` keeps the dependency although no Rust code calls OpenBLAS directly.
    // ENERGY_REFERENCE_BLAS=1 at build time leaves it out (for measuring the difference).
    if env::var_os("ENERGY_REFERENCE_BLAS").is_none() {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-l:libopenblas.so.0,--pop-state");
    }
}
