//! The forecaster on mlx-rs (MLX): on macOS the Metal/Accelerate build of upstream mlx-rs,
//! on Linux the CPU build against the `mlx-cpu` wheel (see `scripts/setup.sh`).
//!
//! The Ring Attention model, training, checkpoints and forecasts are filled in by the
//! forecaster issue; what is here is the engine check every build runs.
pub mod attention;
pub mod blas;
pub mod checkpoint;
pub mod cpu_kernels;
pub mod distributed;
pub mod memory;
pub mod resume;
pub mod smoke;
pub mod streams;
pub mod train;
pub mod transformer;
