//! Parts of a batch computed side by side on their own MLX streams (training and inference).
//!
//! MLX's CPU kernels run one at a time on their stream's worker thread, and on the CPU build
//! each elementwise kernel is scalar, so one stream keeps one core busy outside the matmuls.
//! Splitting a batch into parts, each built on its own stream, lets MLX's scheduler run the
//! parts on separate worker threads, and so on separate cores. Training
//! ([`crate::model::train`]) builds each part's loss and gradients on its stream and sums them;
//! inference and validation losses join the parts' outputs.
//!
//! The stream has to be MLX's *default* stream while a part's graph is built, not only
//! mlx-rs's scoped one ([`mlx_rs::with_stream`]): the backward pass is built inside MLX
//! (`vjp`), which places some of its operations on the default stream. [`on_default_stream`]
//! sets it through mlx-c and restores the previous one afterwards.
//!
//! Two settings make the parts really run side by side ([`widen_scheduling`] and
//! [`crate::model::blas::one_thread`]):
//! - MLX orders a graph for evaluation breadth first, but at most `MLX_BFS_MAX_WIDTH` arrays
//!   wide (20 by default); past that it goes depth first down one branch. A training step's
//!   graph is far wider, so with the default the order ran long stretches of one part's
//!   operations, MLX's limit of 10 tasks in flight filled with them, and the other part's
//!   stream waited. With a width of [`BFS_MAX_WIDTH`] the parts' operations alternate.
//! - OpenBLAS runs one call at a time on its thread pool; with two parts calling it, its second
//!   thread only competes with the other part for the two cores, so the parts' matrix products
//!   run on one thread each.
//!
//! Measured with `energy bench --model-only --quick` on a 2-core machine (dev build): training
//! 116 → 188–194 sequences/s, inference 303 → 391–452 sequences/s.
//!
//! The arithmetic does not depend on the scheduling: the same parts give the same graph and the
//! same results every run. On a GPU (the Mac) a batch stays in one part.
use mlx_rs::error::Exception;
use mlx_rs::{Device, DeviceType, Stream};
use std::cell::RefCell;

/// Most parts a batch is split into.
pub const MAX_PARTS: usize = 4;
/// Fewest rows worth a part of their own.
pub const MIN_PART_ROWS: usize = 8;

thread_local! {
    /// The parts' streams on the default device, made once per thread (MLX keeps every stream,
    /// and on the CPU its worker thread, for the life of the process).
    static PART_STREAMS: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

/// How many parts a batch of `rows` is split into: one per core (at most [`MAX_PARTS`]) on the
/// CPU, with at least [`MIN_PART_ROWS`] rows each; 1 on a GPU.
pub fn parts_for(rows: usize) -> usize {
    if !on_cpu() {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.min(MAX_PARTS).min(rows / MIN_PART_ROWS).max(1)
}

/// OpenBLAS on one thread ([`crate::model::blas::one_thread`]) while batches of `rows` run in
/// parts, one per core: its second thread would only compete with the other parts for the
/// cores. None when they stay whole. Take it while no BLAS call runs.
pub fn one_blas_thread_for(rows: usize) -> Option<crate::model::blas::OneThread> {
    (parts_for(rows) > 1).then(crate::model::blas::one_thread)
}

/// The breadth of MLX's evaluation order set by [`widen_scheduling`].
pub const BFS_MAX_WIDTH: &str = "1024";

/// Set `MLX_BFS_MAX_WIDTH` to [`BFS_MAX_WIDTH`] on the CPU, unless the user has set it (MLX
/// reads it once, at its first evaluation). Returns whether it was set.
///
/// # Safety
/// Changes the process environment: call it before any other thread may read or write the
/// environment (first thing in `main`).
pub unsafe fn widen_scheduling() -> bool {
    if std::env::var_os("MLX_BFS_MAX_WIDTH").is_some() || !on_cpu() {
        return false;
    }
    // SAFETY: the caller's contract: no other thread touches the environment now.
    unsafe { std::env::set_var("MLX_BFS_MAX_WIDTH", BFS_MAX_WIDTH) };
    true
}

/// Whether MLX's default device is the CPU.
pub fn on_cpu() -> bool {
    matches!(Device::default().get_type(), Ok(DeviceType::Cpu))
}

/// `[start, end)` row ranges of `rows` split into `parts` nearly equal parts (the first ones
/// one row longer when it does not divide).
pub fn part_bounds(rows: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, rows.max(1));
    let (base, extra) = (rows / parts, rows % parts);
    let mut start = 0;
    (0..parts)
        .map(|part| {
            let end = start + base + usize::from(part < extra);
            let bounds = (start, end);
            start = end;
            bounds
        })
        .collect()
}

/// The first `count` part streams of this thread.
pub fn part_streams(count: usize) -> Vec<Stream> {
    PART_STREAMS.with_borrow_mut(|streams| {
        while streams.len() < count {
            streams.push(Stream::new_with_device(&Device::default()));
        }
        streams[..count].to_vec()
    })
}

/// Run `f` with `stream` as MLX's default stream (of its device), restoring the previous
/// default afterwards, also when `f` fails or panics.
pub fn on_default_stream<T>(stream: &Stream, f: impl FnOnce() -> Result<T, Exception>) -> Result<T, Exception> {
    let previous = Stream::new(); // MLX's current default stream
    set_default(stream)?;
    struct Restore(Stream);
    impl Drop for Restore {
        fn drop(&mut self) {
            // Restoring a stream that was the default a moment ago cannot fail; if it did, the
            // next operations would still be correct, only on another stream.
            let _ = set_default(&self.0);
        }
    }
    let _restore = Restore(previous);
    mlx_rs::with_stream(stream, f)
}

fn set_default(stream: &Stream) -> Result<(), Exception> {
    // SAFETY: `stream.as_ptr()` is a live mlx_stream owned by `stream` for the whole call;
    // mlx_set_default_stream copies what it needs (the stream's index and device) into MLX's
    // scheduler and reports failure through its return code (and mlx-c's error handler, which
    // mlx-rs installs to record rather than exit).
    let status = unsafe { mlx_sys::mlx_set_default_stream(stream.as_ptr()) };
    if status == 0 { Ok(()) } else { Err(Exception::custom(format!("cannot make {stream} MLX's default stream"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_bounds_cover_every_row_once() {
        assert_eq!(part_bounds(32, 2), vec![(0, 16), (16, 32)]);
        assert_eq!(part_bounds(7, 3), vec![(0, 3), (3, 5), (5, 7)]);
        assert_eq!(part_bounds(3, 8), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(part_bounds(5, 1), vec![(0, 5)]);
        assert_eq!(part_bounds(0, 2), vec![(0, 0)]);
    }

    #[test]
    fn small_batches_stay_whole() {
        assert_eq!(parts_for(MIN_PART_ROWS - 1), 1);
        assert!(parts_for(1024) <= MAX_PARTS);
    }

    #[test]
    fn the_default_stream_is_restored() -> Result<(), Exception> {
        let before = Stream::new();
        let stream = part_streams(1).remove(0);
        let inside = on_default_stream(&stream, || Ok(Stream::new()))?;
        assert_eq!(inside, stream);
        assert_eq!(Stream::new(), before);
        let failed: Result<(), Exception> = on_default_stream(&stream, || Err(Exception::custom("no")));
        assert!(failed.is_err());
        assert_eq!(Stream::new(), before);
        Ok(())
    }
}
