//! Peak memory of one attention forward pass, blockwise against the full reference, read from
//! MLX's allocator (`mlx_rs::memory`, the safe wrappers of `mlx_get_peak_memory` and
//! `mlx_reset_peak_memory`).
//!
//! The blockwise graph is evaluated as a whole, as the model evaluates it, so the figure
//! depends on MLX's scheduler: it walks independent branches breadth-first up to
//! `MLX_BFS_MAX_WIDTH` (default 20, read once per process) at a time, and each query block's
//! chain is such a branch whose key-block scores get computed ahead. Blockwise attention then
//! holds about `width × length × block_size × heads` scores: linear in the length (unlike the
//! reference's `length²`), but only smaller than the reference beyond `length ≈ width ×
//! block_size`. With `MLX_BFS_MAX_WIDTH=1` it holds only a few blocks.
//!
//! MLX's peak counter is process-wide: allocations made by other threads at the same time count
//! too, so measure on an otherwise idle process (the tests tolerate a little noise).
use crate::model::attention::{blockwise_attention, reference_attention};
use mlx_rs::error::Exception;
use mlx_rs::{Array, memory, random, transforms};
use serde::Serialize;

/// Batch, heads and head dimension of the measured attention.
pub const MEMORY_BATCH: i32 = 1;
pub const MEMORY_HEADS: i32 = 4;
pub const MEMORY_HEAD_DIM: i32 = 16;

/// Peak bytes MLX allocated, beyond the already evaluated q, k and v, while evaluating one
/// non-causal attention forward pass of `length` positions (batch 1, 4 heads, head_dim 16, f32).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryRow {
    pub length: i32,
    pub blockwise_bytes: usize,
    pub reference_bytes: usize,
}

/// Measure [`MemoryRow`]s at each length, blockwise with `block_size` rows per block.
pub fn attention_peak_memory(lengths: &[i32], block_size: i32) -> Result<Vec<MemoryRow>, Exception> {
    let mut rows = Vec::with_capacity(lengths.len());
    for &length in lengths {
        if length < 1 {
            return Err(Exception::custom(format!("attention memory needs a positive length, got {length}")));
        }
        let shape = [MEMORY_BATCH, MEMORY_HEADS, length, MEMORY_HEAD_DIM];
        let key = random::key(u64::try_from(length).unwrap_or_default())?;
        let q = random::normal::<f32>(&shape, None, None, &key)?;
        let k = q.multiply(Array::from_f32(0.5))?;
        let v = q.add(Array::from_f32(1.0))?;
        transforms::eval([&q, &k, &v])?;
        let blockwise_bytes = peak_of(|| blockwise_attention(&q, &k, &v, block_size, false))?;
        let reference_bytes = peak_of(|| reference_attention(&q, &k, &v, false))?;
        rows.push(MemoryRow { length, blockwise_bytes, reference_bytes });
    }
    Ok(rows)
}

/// Peak allocated bytes above the level before `build`'s graph was evaluated.
fn peak_of(build: impl FnOnce() -> Result<Array, Exception>) -> Result<usize, Exception> {
    memory::clear_cache()?;
    let baseline = memory::active_memory()?;
    memory::reset_peak_memory()?;
    let output = build()?;
    output.eval()?;
    let peak = memory::peak_memory()?;
    drop(output);
    memory::clear_cache()?;
    Ok(peak.saturating_sub(baseline))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process of [`sequential_scheduling_keeps_blockwise_memory_small`].
    const SCHEDULER_VARIABLE: &str = "MLX_BFS_MAX_WIDTH";

    #[test]
    fn blockwise_memory_grows_linearly_and_the_reference_quadratically() -> Result<(), Exception> {
        let rows = attention_peak_memory(&[2048, 4096], 64)?;
        eprintln!("{rows:?}");
        let (short, long) = (&rows[0], &rows[1]);
        // The reference holds at least the [1, 4, length, length] f32 scores.
        assert!(short.reference_bytes >= 4 * 2048 * 2048 * 4, "{short:?}");
        let reference_growth = long.reference_bytes as f64 / short.reference_bytes as f64;
        let blockwise_growth = long.blockwise_bytes as f64 / short.blockwise_bytes as f64;
        assert!(reference_growth > 3.0, "reference ×{reference_growth} for twice the length");
        assert!(blockwise_growth < 2.5, "blockwise ×{blockwise_growth} for twice the length");
        assert!(long.blockwise_bytes * 2 < long.reference_bytes, "{long:?}");
        Ok(())
    }

    /// With MLX's breadth-first scheduling limited to one branch, blockwise attention only ever
    /// holds a few blocks. The variable is read once per process, so this runs the test binary
    /// again with it set.
    #[test]
    fn sequential_scheduling_keeps_blockwise_memory_small() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "--nocapture", "--test-threads=1"])
            .arg(
                module_path!().split_once("::").map_or(module_path!(), |(_, rest)| rest).to_string()
                    + "::child_with_width_one",
            )
            .env(SCHEDULER_VARIABLE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "the child test did not run: {stdout}\n{stderr}");
        assert!(stderr.contains("width one:"), "{stderr}");
    }

    #[test]
    #[ignore = "run by sequential_scheduling_keeps_blockwise_memory_small with MLX_BFS_MAX_WIDTH=1"]
    fn child_with_width_one() -> Result<(), Exception> {
        assert_eq!(std::env::var(SCHEDULER_VARIABLE).as_deref(), Ok("1"), "run me with {SCHEDULER_VARIABLE}=1");
        let rows = attention_peak_memory(&[2048], 64)?;
        let row = &rows[0];
        eprintln!("width one: {row:?}");
        assert!(row.blockwise_bytes > 0, "{row:?}");
        assert!(row.blockwise_bytes * 8 < row.reference_bytes, "{row:?}");
        Ok(())
    }

    #[test]
    fn rejects_non_positive_lengths() {
        assert!(attention_peak_memory(&[0], 64).is_err());
    }

    /// `cargo test --lib -- --ignored --nocapture attention_memory_figures` (lengths from
    /// `ENERGY_BENCH_LENGTHS`, default 1024,2048,4096,8192).
    #[test]
    #[ignore = "prints figures; slow"]
    fn attention_memory_figures() -> Result<(), Exception> {
        let lengths: Vec<i32> = std::env::var("ENERGY_BENCH_LENGTHS")
            .unwrap_or_else(|_| "1024,2048,4096,8192".into())
            .split(',')
            .map(|part| part.trim().parse().unwrap())
            .collect();
        eprintln!("MLX_BFS_MAX_WIDTH={:?}", std::env::var(SCHEDULER_VARIABLE).ok());
        let rows = attention_peak_memory(&lengths, 64)?;
        // what is deterministic: one row per length, in order, each measured
        assert_eq!(rows.iter().map(|r| r.length).collect::<Vec<_>>(), lengths);
        assert!(rows.iter().all(|r| r.blockwise_bytes > 0 && r.reference_bytes > 0));
        for row in rows {
            eprintln!(
                "length {:5}: blockwise {:8.1} MiB, reference {:8.1} MiB, ratio {:.3}",
                row.length,
                row.blockwise_bytes as f64 / (1 << 20) as f64,
                row.reference_bytes as f64 / (1 << 20) as f64,
                row.blockwise_bytes as f64 / row.reference_bytes as f64
            );
        }
        Ok(())
    }
}
