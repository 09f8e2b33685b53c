//! Fused CPU kernels of our own for the CPU build of MLX (Linux), written as MLX primitives in
//! `cpu_kernels.cpp` (compiled by `build.rs` against the MLX wheel's headers).
//!
//! MLX's CPU build runs one scalar kernel per operation. The online softmax of one query block
//! against one key block took five passes over its scores (row max, maximum, subtract, `2^x`
//! by glibc's `powf` at about 5 ns an element, row sum), and the backward pass about four more;
//! the GELU took about fifteen elementwise operations. Each kernel here does the same in one
//! pass, with a vectorised `2^x` (a degree-6 polynomial and the exponent's bits, relative error
//! about 1e-7), built for AVX-512, AVX2 or the x86-64 baseline and chosen at load time:
//! - [`online_softmax_block`]: `(max_new, weights, weight_sum)` for one block pair;
//! - [`gelu`]: the exact GELU `x·Φ(x)` with the erf approximation of MLX's CPU kernel, and in a
//!   training pass its derivative from the same pass;
//! - [`fused_attention`]: the whole blockwise attention of a layer, forward and
//!   backward, each block pair's scores kept in cache;
//! - [`layer_norm`]: the layer norm MLX's CPU build computes as about ten operations, forward
//!   and backward in one pass each.
//!
//! Both define their vector-Jacobian products, run on the stream they are built on (mlx-rs's
//! scoped stream or MLX's default one, as every other operation there), and are deterministic. They are
//! used where [`available`] says so: Linux, on the CPU. On a Mac the model runs MLX's own
//! operations on the GPU, and these are not built.
use mlx_rs::Array;
#[cfg(target_os = "linux")]
use mlx_rs::Stream;
use mlx_rs::error::Exception;
#[cfg(target_os = "linux")]
use std::ffi::c_void;

#[cfg(target_os = "linux")]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    unsafe extern "C" {
        pub fn energy_online_softmax_block(
            stream: *mut c_void,
            scores: *mut c_void,
            max_old: *mut c_void,
            max_new: *mut *mut c_void,
            weights: *mut *mut c_void,
            weight_sum: *mut *mut c_void,
            error: *mut c_char,
            error_len: usize,
        ) -> c_int;
        pub fn energy_gelu(
            stream: *mut c_void,
            x: *mut c_void,
            with_slope: c_int,
            y: *mut *mut c_void,
            slope: *mut *mut c_void,
            error: *mut c_char,
            error_len: usize,
        ) -> c_int;
        pub fn energy_fused_attention(
            stream: *mut c_void,
            qkv: *mut c_void,
            heads: c_int,
            block: c_int,
            scale: f32,
            out: *mut *mut c_void,
            error: *mut c_char,
            error_len: usize,
        ) -> c_int;
        pub fn energy_layer_norm(
            stream: *mut c_void,
            x: *mut c_void,
            weight: *mut c_void,
            bias: *mut c_void,
            eps: f32,
            y: *mut *mut c_void,
            error: *mut c_char,
            error_len: usize,
        ) -> c_int;
    }
}

/// Whether the kernels run here: on Linux (where `build.rs` compiles them) when MLX's default
/// device is the CPU.
pub fn available() -> bool {
    cfg!(target_os = "linux") && crate::model::streams::on_cpu()
}

/// Calls a kernel's C entry point `f` with the current stream (mlx-rs's scoped stream or MLX's
/// default one), `N` output slots and an error buffer; returns the outputs it wrote (a slot it
/// leaves null stays null), or the message of the exception it caught.
#[cfg(target_os = "linux")]
fn call<const N: usize>(
    f: impl FnOnce(*mut c_void, &mut [*mut c_void; N], *mut std::ffi::c_char, usize) -> std::ffi::c_int,
) -> Result<[*mut c_void; N], Exception> {
    let stream = Stream::thread_local_or_default();
    let mut outputs = [std::ptr::null_mut(); N];
    let mut error = [0 as std::ffi::c_char; 512];
    if f(stream.as_ptr().ctx, &mut outputs, error.as_mut_ptr(), error.len()) == 0 {
        return Ok(outputs);
    }
    // SAFETY: the kernel wrote a NUL-terminated message into the buffer (it stays zeroed else).
    let message = unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) }.to_string_lossy().into_owned();
    Err(Exception::custom(format!("energy's CPU kernel: {message}")))
}

/// Takes ownership of an `mlx::core::array*` the kernels returned.
#[cfg(target_os = "linux")]
fn owned(ctx: *mut c_void) -> Array {
    // SAFETY: `ctx` is a new `mlx::core::array` allocated with `new`, which is what an mlx-c
    // handle holds and what mlx-c's `mlx_array_free` deletes.
    unsafe { Array::from_ptr(mlx_sys::mlx_array { ctx }) }
}

/// What every kernel returns where `build.rs` did not compile them.
#[cfg(not(target_os = "linux"))]
fn not_built<T>() -> Result<T, Exception> {
    Err(Exception::custom("energy's CPU kernels are built on Linux only"))
}

/// One block pair of the online softmax, in base 2, for every row `r` of `scores`:
/// `max_new[r] = max(max_old[r], max_j scores[r, j])`, `weights[r, j] = 2^(scores[r, j] −
/// max_new[r])` and `weight_sum[r] = Σ_j weights[r, j]`. Gradients flow to `scores` through the
/// weights and their sum; none flows through the maxima (the attention does not depend on
/// the shift).
///
/// # Shapes
/// `scores`: [..., cols], `max_old`: [..., 1] (f32) → `max_new` [..., 1], `weights` [..., cols],
/// `weight_sum` [..., 1]
pub fn online_softmax_block(scores: &Array, max_old: &Array) -> Result<(Array, Array, Array), Exception> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY (here and in the other kernels): the inputs are live arrays, and the kernel
        // writes the output slots on success only.
        let [max_new, weights, weight_sum] = call(|stream, [max_new, weights, weight_sum], error, len| unsafe {
            ffi::energy_online_softmax_block(
                stream,
                scores.as_ptr().ctx,
                max_old.as_ptr().ctx,
                max_new,
                weights,
                weight_sum,
                error,
                len,
            )
        })?
        .map(owned);
        Ok((max_new, weights, weight_sum))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (scores, max_old);
        not_built()
    }
}

/// The exact GELU `x·Φ(x)` (f32), and with `with_slope` its derivative `Φ(x) + x·φ(x)` from the
/// same pass; the gradient of the first output is the cotangent times the derivative.
pub fn gelu(x: &Array, with_slope: bool) -> Result<(Array, Option<Array>), Exception> {
    #[cfg(target_os = "linux")]
    {
        let [y, slope] = call(|stream, [y, slope], error, len| unsafe {
            ffi::energy_gelu(stream, x.as_ptr().ctx, i32::from(with_slope), y, slope, error, len)
        })?;
        Ok((owned(y), with_slope.then(|| owned(slope))))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (x, with_slope);
        not_built()
    }
}

/// Exact, non-causal blockwise attention in one primitive, on the QKV projection's output as
/// it is: each row of `qkv` holds the queries, then the keys, then the values of every head
/// (`[3, heads, head_dim]`), and the result holds each head's attention side by side
/// (`[heads, head_dim]`), which is what the output projection takes.
///
/// For every (batch, head) and query block of `block` rows, the key blocks are folded in one
/// after another with the online softmax of [`crate::model::attention`] (base-2 scores
/// `scale · q kᵀ`, running maximum, rescaled sums), each block pair's scores kept in a
/// `block × block` buffer in cache and the products computed by BLAS, which reads and writes
/// the heads through its leading dimensions (no transpose is copied before or after the
/// kernel). It also keeps each row's log-sum-exp, from which its vector-Jacobian product
/// (FlashAttention-2's backward pass, on the same blocks) recomputes each block pair's
/// probabilities instead of storing them.
///
/// # Shapes
/// `qkv`: [batch, length, 3 · heads · head_dim] (f32) → [batch, length, heads · head_dim]
pub fn fused_attention(qkv: &Array, heads: i32, block: i32, scale: f32) -> Result<Array, Exception> {
    #[cfg(target_os = "linux")]
    {
        let [out] = call(|stream, [out], error, len| unsafe {
            ffi::energy_fused_attention(stream, qkv.as_ptr().ctx, heads, block, scale, out, error, len)
        })?;
        Ok(owned(out))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (qkv, heads, block, scale);
        not_built()
    }
}

/// Layer normalisation over the last axis, `(x − mean) / sqrt(var + eps) · weight + bias`
/// (f32), as MLX's `fast::layer_norm`; its vector-Jacobian product gives the input's, the
/// weight's and the bias's gradients from one pass over the rows.
///
/// # Shapes
/// `x`: [..., d], `weight`, `bias`: [d] → [..., d]
pub fn layer_norm(x: &Array, weight: &Array, bias: &Array, eps: f32) -> Result<Array, Exception> {
    #[cfg(target_os = "linux")]
    {
        let [y] = call(|stream, [y], error, len| unsafe {
            ffi::energy_layer_norm(stream, x.as_ptr().ctx, weight.as_ptr().ctx, bias.as_ptr().ctx, eps, y, error, len)
        })?;
        Ok(owned(y))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (x, weight, bias, eps);
        not_built()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use mlx_rs::ops;
    use mlx_rs::transforms::{grad, grad_with_argnums};

    fn values(a: &Array) -> Vec<f32> {
        a.contiguous().unwrap().as_slice::<f32>().to_vec()
    }

    fn random(seed: u64, shape: &[i32], scale: f32) -> Array {
        mlx_rs::random::seed(seed).unwrap();
        mlx_rs::random::normal::<f32>(shape, None, None, None).unwrap().multiply(Array::from_f32(scale)).unwrap()
    }

    /// The weights, maxima and sums against f64 arithmetic, over rows of 1, 17 and 64 columns
    /// (the lane loops' tails), a running maximum above every score, and masked scores.
    #[test]
    fn online_softmax_block_matches_f64() -> Result<(), Exception> {
        for cols in [1, 17, 64] {
            let scores = random(cols as u64, &[2, 3, 5, cols], 6.0);
            let mut old = values(&random(99, &[2, 3, 5, 1], 4.0));
            old[0] = 100.0; // above every score of row 0
            old[1] = crate::model::attention::MASKED_SCORE;
            let max_old = Array::from_slice(&old, &[2, 3, 5, 1]);
            let (max_new, weights, sum) = online_softmax_block(&scores, &max_old)?;
            let (s, m, w, l) = (values(&scores), values(&max_new), values(&weights), values(&sum));
            let cols = cols as usize;
            for r in 0..30 {
                let row = &s[r * cols..(r + 1) * cols];
                let expected_max = row.iter().fold(old[r], |a, &b| a.max(b));
                assert_eq!(m[r], expected_max, "row {r}");
                let mut expected_sum = 0.0f64;
                for j in 0..cols {
                    // The difference is rounded to f32 first, as MLX's `subtract` would.
                    let expected = 2f64.powf(f64::from(row[j] - expected_max));
                    expected_sum += expected;
                    let got = f64::from(w[r * cols + j]);
                    assert!((got - expected).abs() <= 2e-7 * expected + 1e-38, "row {r} col {j}: {got} vs {expected}");
                }
                let got = f64::from(l[r]);
                assert!((got - expected_sum).abs() <= 1e-6 * expected_sum + 1e-38, "row {r}: {got} vs {expected_sum}");
            }
            // Row 0's running maximum of 100 is far above its scores.
            assert!(w[0..cols].iter().all(|&x| x < 2f32.powi(-40)), "{:?}", &w[0..cols]);
        }
        Ok(())
    }

    /// `2^x` itself at its edges: exact powers of two, underflow to zero, NaN kept.
    #[test]
    fn exp2_edges() -> Result<(), Exception> {
        let scores = Array::from_slice(&[0.0f32, -1.0, -10.0, -126.0, -200.0, -1e30, f32::NAN, 3.0], &[8, 1]);
        let max_old = Array::from_slice(&[f32::MIN; 8], &[8, 1]);
        let (_, weights, _) = online_softmax_block(&scores, &max_old)?;
        let w = values(&weights);
        // Each row's maximum is its own score, so every weight is 2^0 ...
        assert!(w[..6].iter().all(|&x| x == 1.0), "{w:?}");
        assert!(w[6].is_nan());
        // ... and against a larger running maximum the weights are 2^(score − max).
        let max_old = Array::from_slice(&[5.0f32; 8], &[8, 1]);
        let w = values(&online_softmax_block(&scores, &max_old)?.1);
        let expected = [2f32.powi(-5), 2f32.powi(-6), 2f32.powi(-15), 0.0, 0.0, 0.0];
        for (got, want) in w.iter().zip(expected) {
            assert!((got - want).abs() <= 1e-7 * want, "{got} vs {want}");
        }
        assert!(w[6].is_nan());
        assert_eq!(w[7], 0.25);
        Ok(())
    }

    /// The gradient of `Σ c·weights + Σ d·weight_sum` with respect to the scores, against the
    /// same loss through MLX's own operations (with the maximum's gradient stopped).
    #[test]
    fn online_softmax_block_gradient_matches_mlx_ops() -> Result<(), Exception> {
        let scores = random(1, &[2, 2, 8, 24], 3.0);
        let max_old = random(2, &[2, 2, 8, 1], 3.0);
        let c = random(3, &[2, 2, 8, 24], 1.0);
        let d = random(4, &[2, 2, 8, 1], 1.0);
        let loss = |weights: &Array, sum: &Array| -> Result<Array, Exception> {
            weights.multiply(&c)?.sum(None)?.add(sum.multiply(&d)?.sum(None)?)
        };
        let fused = |s: &Array| -> Result<Array, Exception> {
            let (_, weights, sum) = online_softmax_block(s, &max_old)?;
            loss(&weights, &sum)
        };
        let reference = |s: &Array| -> Result<Array, Exception> {
            let max = mlx_rs::stop_gradient(&ops::maximum(&max_old, s.max_axis(-1, true)?)?)?;
            let weights = ops::power(Array::from_f32(2.0), &s.subtract(&max)?)?;
            let sum = weights.sum_axis(-1, true)?;
            loss(&weights, &sum)
        };
        let got = grad(fused)(&scores)?;
        let want = grad(reference)(&scores)?;
        let largest = values(&want).iter().fold(0.0f32, |a, b| a.max(b.abs()));
        for (g, w) in values(&got).iter().zip(values(&want)) {
            assert!((g - w).abs() <= 1e-5 * largest, "{g} vs {w}");
        }
        assert!(largest > 0.1);
        Ok(())
    }

    /// The fused GELU against MLX's own (exact, `erf`) in value and gradient, with and without
    /// the slope output, over the range a network's activations take.
    #[test]
    fn gelu_matches_mlx_gelu() -> Result<(), Exception> {
        let x = Array::from_slice(&(0..2001).map(|i| (i as f32 - 1000.0) / 100.0).collect::<Vec<_>>(), &[2001]);
        let want = values(&mlx_rs::nn::gelu(&x)?);
        for with_slope in [false, true] {
            let (y, slope) = gelu(&x, with_slope)?;
            assert_eq!(slope.is_some(), with_slope);
            for (g, w) in values(&y).iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5, "{g} vs {w}");
            }
            let fused = |x: &Array| -> Result<Array, Exception> { gelu(x, with_slope)?.0.sum(None) };
            let reference = |x: &Array| -> Result<Array, Exception> { mlx_rs::nn::gelu(x)?.sum(None) };
            let (g, w) = (grad(fused)(&x)?, grad(reference)(&x)?);
            for (g, w) in values(&g).iter().zip(values(&w)) {
                assert!((g - w).abs() <= 1e-5, "gradient {g} vs {w}");
            }
            if let Some(slope) = slope {
                assert_eq!(values(&slope), values(&g));
            }
        }
        Ok(())
    }

    /// The fused layer norm against MLX's `fast::layer_norm` in value and in the gradients of
    /// the input, the weight and the bias, over rows of 64 and 5 (the lane loops' tails).
    #[test]
    fn layer_norm_matches_mlx() -> Result<(), Exception> {
        for d in [64, 5] {
            let x = random(10 + d as u64, &[3, 7, d], 2.0).add(Array::from_f32(0.5))?;
            let weight = random(20, &[d], 1.0);
            let bias = random(30, &[d], 1.0);
            let cotangent = random(40, &[3, 7, d], 1.0);
            let fused = layer_norm(&x, &weight, &bias, 1e-5)?;
            let reference = mlx_rs::fast::layer_norm(&x, Some(&weight), Some(&bias), 1e-5)?;
            for (g, w) in values(&fused).iter().zip(values(&reference)) {
                assert!((g - w).abs() <= 1e-5, "{g} vs {w}");
            }
            let loss = |ours: bool| {
                let cotangent = cotangent.clone();
                move |inputs: &[Array]| -> Result<Array, Exception> {
                    let y = if ours {
                        layer_norm(&inputs[0], &inputs[1], &inputs[2], 1e-5)?
                    } else {
                        mlx_rs::fast::layer_norm(&inputs[0], Some(&inputs[1]), Some(&inputs[2]), 1e-5)?
                    };
                    y.multiply(&cotangent)?.sum(None)
                }
            };
            let inputs = [x.clone(), weight.clone(), bias.clone()];
            for argnum in 0..3 {
                let got = grad_with_argnums(loss(true), &[argnum])(&inputs)?;
                let want = grad_with_argnums(loss(false), &[argnum])(&inputs)?;
                assert_eq!(got.shape(), inputs[argnum as usize].shape());
                let largest = values(&want).iter().fold(0.0f32, |a, b| a.max(b.abs()));
                assert!(largest > 0.1);
                for (g, w) in values(&got).iter().zip(values(&want)) {
                    assert!((g - w).abs() <= 1e-5 * largest.max(1.0), "{g} vs {w}");
                }
            }
        }
        let error =
            layer_norm(&random(1, &[2, 4], 1.0), &random(2, &[3], 1.0), &random(3, &[4], 1.0), 1e-5).unwrap_err();
        assert!(error.to_string().contains("vectors of the input's last axis"), "{error}");
        Ok(())
    }

    /// The full reference on the heads of a packed `qkv` taken apart, put back side by side.
    fn packed_reference(qkv: &Array, heads: i32) -> Result<Array, Exception> {
        use crate::model::attention::reference_attention;
        let [batch, length, width] = *qkv.shape() else { panic!("qkv is [batch, length, width]") };
        let head_dim = width / (3 * heads);
        let parts = qkv.reshape(&[batch, length, 3, heads, head_dim])?.transpose_axes(&[2, 0, 3, 1, 4])?;
        let part = |i: i32| parts.take_axis(Array::from_int(i), 0);
        reference_attention(&part(0)?, &part(1)?, &part(2)?, false)?.swap_axes(1, 2)?.reshape(&[
            batch,
            length,
            heads * head_dim,
        ])
    }

    /// The fused attention against the full reference, over block sizes that divide the
    /// length, leave a ragged block, cover everything, or hold one row.
    #[test]
    fn fused_attention_matches_reference() -> Result<(), Exception> {
        use crate::model::attention::LOG2_E;
        for (length, block) in [(192, 64), (50, 16), (33, 64), (8, 1)] {
            let qkv = random(1, &[2, length, 3 * 3 * 16], 1.5);
            let got = fused_attention(&qkv, 3, block, LOG2_E / 4.0)?;
            let want = packed_reference(&qkv, 3)?;
            assert_eq!(got.shape(), &[2, length, 3 * 16]);
            for (g, w) in values(&got).iter().zip(values(&want)) {
                assert!((g - w).abs() <= 2e-5, "length {length} block {block}: {g} vs {w}");
            }
        }
        let qkv = random(1, &[2, 4, 72], 1.0);
        let bad = fused_attention(&qkv, 5, 16, 1.0).unwrap_err();
        assert!(
            bad.to_string().contains("[batch, length, 3 · heads · head_dim]"),
            "72 columns are not 3 × 5 heads: {bad}"
        );
        assert!(fused_attention(&random(1, &[4, 72], 1.0), 3, 16, 1.0).is_err());
        Ok(())
    }

    /// The fused attention's gradient with respect to the packed q, k and v against autodiff
    /// through the full reference, with ragged blocks; and the same every run.
    #[test]
    fn fused_attention_gradients_match_reference() -> Result<(), Exception> {
        use crate::model::attention::LOG2_E;
        let heads = 3;
        for (length, block) in [(48, 16), (45, 16), (20, 64)] {
            let qkv = random(4, &[2, length, 3 * heads * 8], 1.5);
            let cotangent = random(7, &[2, length, heads * 8], 1.0);
            let loss = |ours: bool| {
                let cotangent = cotangent.clone();
                move |qkv: &Array| -> Result<Array, Exception> {
                    let out = if ours {
                        fused_attention(qkv, heads, block, LOG2_E / 8f32.sqrt())?
                    } else {
                        packed_reference(qkv, heads)?
                    };
                    out.multiply(&cotangent)?.sum(None)
                }
            };
            let got = grad(loss(true))(&qkv)?;
            let again = grad(loss(true))(&qkv)?;
            let want = grad(loss(false))(&qkv)?;
            assert_eq!(values(&got), values(&again), "the same gradients every run");
            let largest = values(&want).iter().fold(0.0f32, |a, b| a.max(b.abs()));
            assert!(largest > 0.1);
            for (g, w) in values(&got).iter().zip(values(&want)) {
                assert!((g - w).abs() <= 1e-5 * largest.max(1.0), "length {length} block {block}: {g} vs {w}");
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_other_dtypes_and_shapes() {
        let scores = Array::from_slice(&[1i32, 2], &[1, 2]);
        let max_old = Array::from_slice(&[0.0f32], &[1, 1]);
        let error = online_softmax_block(&scores, &max_old).unwrap_err();
        assert!(error.to_string().contains("the scores must be float32"), "{error}");
        let scores = Array::from_slice(&[1.0f32, 2.0], &[1, 2]);
        let max_old = Array::from_slice(&[0.0f32, 0.0], &[2, 1]);
        let error = online_softmax_block(&scores, &max_old).unwrap_err();
        assert!(error.to_string().contains("the running maximum must have"), "{error}");
    }
}
