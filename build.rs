//! Linux only: give binaries an rpath to the prebuilt MLX (`MLX_PREFIX/lib`, set by
//! `.cargo/config.toml`) and put Debian's OpenBLAS ahead of the reference BLAS that the MLX
//! wheel bundles, so MLX's CPU matmuls run on OpenBLAS. macOS builds upstream mlx-rs unchanged.
use std::env;

/// The fused CPU kernels (`src/model/cpu_kernels.cpp`, MLX primitives of our own), compiled
/// against the wheel's headers and linked before libmlx. Always optimised: the dev profile's
/// opt-level 0 would leave them scalar and slower than MLX's own operations.
fn compile_cpu_kernels(prefix: &str) {
    println!("cargo:rerun-if-changed=src/model/cpu_kernels.cpp");
    cc::Build::new()
        .cpp(true)
        .file("src/model/cpu_kernels.cpp")
        // -isystem: MLX's headers are not ours to warn about
        .flag("-isystem")
        .flag(format!("{prefix}/include"))
        .std("c++20")
        .opt_level(3)
        .debug(false)
        .flag_if_supported("-fno-math-errno")
        .warnings(true)
        .compile("energy_cpu_kernels");
    println!("cargo:rustc-link-search=native={prefix}/lib");
    println!("cargo:rustc-link-lib=dylib=mlx");
}

fn main() {
    println!("cargo:rerun-if-env-changed=MLX_PREFIX");
    println!("cargo:rerun-if-env-changed=ENERGY_REFERENCE_BLAS");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    if let Ok(prefix) = env::var("MLX_PREFIX") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{prefix}/lib");
        compile_cpu_kernels(&prefix);
    }
    // libmlx.so from the wheel needs a BLAS; the symbols are looked up in load order, and a
    // direct dependency of the executable is loaded before libmlx's own (reference) libblas.
    // `--no-as-needed` keeps the dependency although no Rust code calls OpenBLAS directly.
    // ENERGY_REFERENCE_BLAS=1 at build time leaves it out (for measuring the difference).
    if env::var_os("ENERGY_REFERENCE_BLAS").is_none() {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-l:libopenblas.so.0,--pop-state");
    }
}
