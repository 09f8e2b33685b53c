//! OpenBLAS's worker threads, parked while no matrix work runs.
//!
//! On Linux the binary links Debian's OpenBLAS (pthreads build) for MLX's CPU matmuls (see
//! `build.rs`). That library starts its worker threads when it is loaded, and each of them
//! busy-waits (`sched_yield`) for about 2^28 cycles, a tenth of a second, before it sleeps. On
//! a 2-core machine that takes a whole core away from every command for its first 100 ms,
//! including those that never multiply a matrix (`collect`, `status`, `features`): measured,
//! `energy features` on 5 years of one region took 29–65 ms to build its table with the
//! spinning thread and a steady 29 ms without it.
//!
//! [`park_idle_threads`] stops those threads through OpenBLAS's own `blas_thread_shutdown_`
//! (the call it makes around `fork`). OpenBLAS starts them again by itself on the next
//! threaded BLAS call, so commands that train or forecast keep their threaded matmuls. The
//! symbol is looked up at run time: with another BLAS (the reference BLAS of the MLX wheel,
//! or Accelerate on macOS) nothing happens.

/// Stop OpenBLAS's idle worker threads if OpenBLAS is loaded; true when it was.
pub fn park_idle_threads() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loaded
        // libraries' symbol tables; a non-null result is OpenBLAS's
        // `int blas_thread_shutdown_(void)`, which takes its own lock and may be called at any
        // time no BLAS call is running (none is: this runs before any MLX work).
        unsafe {
            let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"blas_thread_shutdown_".as_ptr());
            if symbol.is_null() {
                return false;
            }
            let shutdown: unsafe extern "C" fn() -> libc::c_int = std::mem::transmute(symbol);
            shutdown();
            true
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// OpenBLAS's `int openblas_get_num_threads(void)`.
#[cfg(target_os = "linux")]
type GetThreads = unsafe extern "C" fn() -> std::ffi::c_int;
/// OpenBLAS's `void openblas_set_num_threads(int)`.
type SetThreads = unsafe extern "C" fn(std::ffi::c_int);

/// OpenBLAS's thread-count getter and setter, where it is loaded.
#[cfg(target_os = "linux")]
fn thread_controls() -> Option<(GetThreads, SetThreads)> {
    // SAFETY: as in `park_idle_threads`; non-null results are the two functions above.
    unsafe {
        let get = libc::dlsym(libc::RTLD_DEFAULT, c"openblas_get_num_threads".as_ptr());
        let set = libc::dlsym(libc::RTLD_DEFAULT, c"openblas_set_num_threads".as_ptr());
        if get.is_null() || set.is_null() {
            return None;
        }
        Some((
            std::mem::transmute::<*mut libc::c_void, GetThreads>(get),
            std::mem::transmute::<*mut libc::c_void, SetThreads>(set),
        ))
    }
}

/// OpenBLAS runs each matrix product on one thread while this lives, and on as many as before
/// once it is dropped. For work that already runs on one MLX stream per core (the parts of a
/// training or inference batch, [`super::streams::one_blas_thread_for`]): OpenBLAS's second
/// thread then only competes with the other stream for the cores (measured: inference
/// 246–279 → 306 sequences/s at 192 positions; training in parts 139 → 190; training on one
/// stream loses 6 % with it). Nothing happens with another BLAS. Take it only while no BLAS
/// call runs, as `predict` and the training loop do between their evaluations.
#[must_use = "the thread count is restored when the guard is dropped"]
pub struct OneThread {
    /// OpenBLAS's setter and the thread count to give back, when it was changed.
    restore: Option<(SetThreads, std::ffi::c_int)>,
}

/// See [`OneThread`].
pub fn one_thread() -> OneThread {
    #[cfg(target_os = "linux")]
    if let Some((get, set)) = thread_controls() {
        // SAFETY: plain getters and setters of OpenBLAS's thread count, called while no BLAS
        // call runs (the caller's contract above).
        let previous = unsafe { get() };
        if previous > 1 {
            unsafe { set(1) };
            return OneThread { restore: Some((set, previous)) };
        }
    }
    OneThread { restore: None }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        if let Some((set, previous)) = self.restore {
            // SAFETY: as in `one_thread`.
            unsafe { set(previous) };
        }
    }
}

/// OpenBLAS's thread count now (None without OpenBLAS).
#[cfg(test)]
fn threads() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: as in `one_thread`.
        thread_controls().map(|(get, _)| unsafe { get() })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::Array;

    /// After parking, matrix products still run (OpenBLAS restarts its threads) and are right.
    #[test]
    fn matmul_after_parking_is_right() {
        let n = 256;
        let a: Vec<f32> = (0..n * n).map(|k| ((k % 17) as f32 - 8.0) / 8.0).collect();
        let b: Vec<f32> = (0..n * n).map(|k| ((k % 13) as f32 - 6.0) / 6.0).collect();
        let want: Vec<f32> = (0..n * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..n).map(|k| f64::from(a[i * n + k]) * f64::from(b[k * n + j])).sum::<f64>() as f32
            })
            .collect();
        for _ in 0..2 {
            let parked = park_idle_threads();
            assert_eq!(parked, cfg!(target_os = "linux") && std::env::var_os("ENERGY_REFERENCE_BLAS").is_none());
            let x = Array::from_slice(&a, &[n as i32, n as i32]);
            let y = Array::from_slice(&b, &[n as i32, n as i32]);
            let product = x.matmul(&y).unwrap();
            product.eval().unwrap();
            for (got, want) in product.as_slice::<f32>().iter().zip(&want) {
                assert!((got - want).abs() <= 1e-3 * want.abs().max(1.0), "{got} vs {want}");
            }
        }
    }

    /// Inside the guard OpenBLAS uses one thread and products stay right; after it, as many as
    /// before.
    #[test]
    fn one_thread_is_restored_when_the_guard_drops() {
        let before = threads();
        {
            let _guard = one_thread();
            if let Some(before) = before {
                assert_eq!(threads(), Some(1), "OpenBLAS had {before} threads");
            }
            let x = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
            let product = x.matmul(&x).unwrap();
            assert_eq!(product.as_slice::<f32>(), &[7.0, 10.0, 15.0, 22.0]);
        }
        assert_eq!(threads(), before);
    }
}
