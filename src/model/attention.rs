//! Exact attention three ways on mlx-rs: a full reference, blockwise attention with an online
//! softmax, and Ring Attention (Liu, Zaharia, Abbeel 2023, "Ring Attention with Blockwise
//! Transformers for Near-Infinite Context").
//!
//! All three compute `softmax(q kᵀ · scale [+ causal mask]) v` with `scale = 1/sqrt(head_dim)`.
//! The blockwise and ring versions never build the full `[length, length]` score matrix: each
//! query block keeps a running maximum `m`, a numerator `Σ exp(s - m) v` and a denominator
//! `Σ exp(s - m)` in f32, and folds in one key/value block at a time, rescaling the old sums by
//! `exp(m_old - m_new)`. Causal masks use global positions, and key blocks entirely in the
//! future of a query block are skipped.
//!
//! The blockwise and ring versions keep their scores in **base 2**: `log2 e` is folded into the
//! query scale and every exponential is `2^x` ([`exp2`], MLX's `power`). The softmax is the same
//! in any base (`2^(s·log2 e) = e^s`), so the result is the same exact attention; what changes is
//! speed on the CPU build of MLX, whose `exp` is a scalar polynomial of seven out-of-line `fmaf`
//! calls (about 28 ns an element here) while `power` calls glibc's `powf` (about 13 ns) — the
//! same trick FlashAttention-2 uses for `exp2` on GPUs. On Linux's CPU build, the non-causal
//! block update runs through a fused kernel of our own instead
//! ([`crate::model::cpu_kernels::online_softmax_block`]: max, `2^x` and row sum in one
//! vectorised pass), and the forecaster in one process runs the whole blockwise attention as one
//! primitive with its own backward pass ([`crate::model::cpu_kernels::fused_attention`]);
//! both compute this same online softmax.
//!
//! Masked scores are set to a large finite negative number ([`MASKED_SCORE`]) rather than
//! `-inf`, and their probabilities are zeroed explicitly, so a row that sees no key never
//! produces NaN (its output is zero in the blockwise and ring versions).
//!
//! # Shapes
//! `q`: [batch, heads, length_q, head_dim], `k`, `v`: [batch, heads, length_k, head_dim]
//! → [batch, heads, length_q, head_dim] (ring attention needs `length_q == length_k`).
use crate::model::cpu_kernels;
use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::ops::{self, matmul};
use mlx_rs::{Array, Device, Dtype, Stream, stop_gradient, with_stream};

/// Score given to masked query/key pairs, and the initial running maximum. Finite, so that
/// `exp(score - max)` is never `exp(-inf + inf)`.
pub const MASKED_SCORE: f32 = -1e30;

/// `log2 e`: scores times this are exponentiated with [`exp2`].
pub(crate) const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// `2^x` elementwise (see the module documentation for why not `exp`).
fn exp2(x: &Array) -> Result<Array, Exception> {
    ops::power(Array::from_f32(2.0), x)
}

/// `q` as f32 times `1/sqrt(head_dim) · log2 e`: scores of this query are in base 2.
fn base2_query(q: &Array, head_dim: i32) -> Result<Array, Exception> {
    to_f32(q)?.multiply(Array::from_f32(LOG2_E / (head_dim as f32).sqrt()))
}

/// Reference: `softmax(q kᵀ · scale [+ causal mask]) v`, computed in full (f32 inside).
///
/// With `causal`, query position `i` sees key positions `j <= i` (positions counted from 0 in
/// both `q` and `k`).
///
/// # Shapes
/// `q`: [batch, heads, length_q, head_dim], `k`, `v`: [batch, heads, length_k, head_dim]
/// → [batch, heads, length_q, head_dim]
pub fn reference_attention(q: &Array, k: &Array, v: &Array, causal: bool) -> Result<Array, Exception> {
    let dims = check_shapes(q, k, v)?;
    let query = to_f32(q)?.multiply(Array::from_f32(dims.scale))?;
    let key = to_f32(k)?;
    let value = to_f32(v)?;
    let mut scores = matmul(&query, key.swap_axes(2, 3)?)?;
    if causal {
        let visible = causal_visibility(0, dims.length_q, 0, dims.length_k)?;
        scores = ops::select(&visible, &scores, Array::from_f32(MASKED_SCORE))?;
    }
    let weights = ops::softmax_axis(&scores, -1, true)?;
    matmul(&weights, &value)?.as_dtype(q.dtype())
}

/// Blockwise attention with an online softmax.
///
/// For each query block of `block_size` rows, iterate over key/value blocks of `block_size`
/// rows, keeping the running max `m`, numerator and denominator in f32 (rescaling by
/// `exp(m_old - m_new)`). Causal masks use global positions; key blocks entirely in the
/// future of a query block are skipped. Lengths need not be divisible by `block_size` (the
/// last block is ragged); a `block_size` larger than the sequence gives a single block.
///
/// # Shapes
/// `q`: [batch, heads, length_q, head_dim], `k`, `v`: [batch, heads, length_k, head_dim]
/// → [batch, heads, length_q, head_dim]
pub fn blockwise_attention(q: &Array, k: &Array, v: &Array, block_size: i32, causal: bool) -> Result<Array, Exception> {
    let dims = check_shapes(q, k, v)?;
    check_block_size(block_size)?;
    let query = base2_query(q, q.shape()[3])?;
    let key = to_f32(k)?;
    let value = to_f32(v)?;
    let mut outputs = Vec::new();
    for (start, end) in block_bounds(dims.length_q, block_size) {
        let mut block = QueryBlock::new(slice_rows(&query, start, end)?, start)?;
        for (key_start, key_end) in block_bounds(dims.length_k, block_size) {
            block.update(
                &slice_rows(&key, key_start, key_end)?,
                &slice_rows(&value, key_start, key_end)?,
                key_start,
                causal,
            )?;
        }
        outputs.push(block.output()?);
    }
    concatenate_rows(&outputs)?.as_dtype(q.dtype())
}

/// Ring Attention (Liu, Zaharia, Abbeel 2023).
///
/// The sequence is split into `shards` contiguous shards of `ceil(length / shards)` rows (the
/// last may be shorter; when `shards > length` only the non-empty shards take part). Shard `i`
/// holds its query block and initially its own key/value block; in step `s = 0..shards` it
/// processes the [`KvBlock`] that originated at shard `(i - s) mod shards`, then passes it on
/// to shard `i + 1`. Each [`RingShard::step`] updates the shard's running (max, numerator,
/// denominator) with the same online-softmax update as [`blockwise_attention`], itself
/// blockwise with `block_size`; causal masking uses global positions and skips blocks entirely
/// in the future. The output is the concatenation of the shards' outputs.
///
/// On one machine each shard runs on **its own MLX stream** (on the default device; see
/// [`shard_streams`]): the ring loop builds a lazy MLX graph whose shard operations are
/// scheduled per stream, MLX synchronising the key/value blocks as they pass from one stream
/// to the next, and the whole graph is evaluated when the caller evaluates the result (which
/// also keeps the function differentiable). Placing each shard on its own device only needs
/// the [`KvBlock`] hand-off to become a send/receive between devices.
///
/// # Shapes
/// `q`, `k`, `v`: [batch, heads, length, head_dim] → [batch, heads, length, head_dim]
pub fn ring_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    shards: usize,
    block_size: i32,
    causal: bool,
) -> Result<Array, Exception> {
    let dims = check_shapes(q, k, v)?;
    check_block_size(block_size)?;
    if dims.length_q != dims.length_k {
        return Err(Exception::custom(format!(
            "ring attention needs equal query and key lengths, got {} and {}",
            dims.length_q, dims.length_k
        )));
    }
    let shards = i32::try_from(shards)
        .ok()
        .filter(|&count| count > 0)
        .ok_or_else(|| Exception::custom(format!("ring attention needs 1..=i32::MAX shards, got {shards}")))?;
    let length = dims.length_q;
    // ceil(length / shards); at least one row so that an empty sequence still steps by 1.
    let shard_length = ((length + shards - 1) / shards).max(1);
    let bounds = block_bounds(length, shard_length);

    // Each shard casts and scales its own query block, as a device holding only its shard would,
    // and runs on its own MLX stream (see [`shard_streams`]).
    let key = to_f32(k)?;
    let value = to_f32(v)?;
    let streams = shard_streams(bounds.len());
    let on = |i: usize, f: &mut dyn FnMut() -> Result<(), Exception>| match &streams {
        Some(streams) => with_stream(&streams[i % streams.len()], f),
        None => f(),
    };
    let mut ring = Vec::with_capacity(bounds.len());
    // `held[i]` is the key/value block that shard `i` holds in the current step.
    let mut held = Vec::with_capacity(bounds.len());
    for (i, &(start, end)) in bounds.iter().enumerate() {
        on(i, &mut || {
            ring.push(RingShard::new(slice_rows(q, start, end)?, start, block_size, causal)?);
            held.push(KvBlock::new(slice_rows(&key, start, end)?, slice_rows(&value, start, end)?, start)?);
            Ok(())
        })?;
    }
    for _ in 0..ring.len() {
        for (i, (shard, kv)) in ring.iter_mut().zip(&held).enumerate() {
            on(i, &mut || shard.step(kv))?;
        }
        pass_along(&mut held);
    }
    let mut outputs = Vec::with_capacity(ring.len());
    for (i, shard) in ring.into_iter().enumerate() {
        let mut shard = Some(shard);
        on(i, &mut || {
            outputs.push(shard.take().expect("each shard outputs once").output()?);
            Ok(())
        })?;
    }
    concatenate_rows(&outputs)?.as_dtype(q.dtype())
}

/// Most MLX streams the ring uses on one thread; more shards share them round-robin.
pub const MAX_SHARD_STREAMS: usize = 8;

thread_local! {
    /// The shards' MLX streams on the default device, made once per thread (MLX keeps every
    /// stream, and on the CPU its worker thread, for the life of the process).
    static SHARD_STREAMS: std::cell::RefCell<Vec<Stream>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One MLX stream per shard (up to [`MAX_SHARD_STREAMS`]), so that the shards' work is scheduled
/// independently, as on separate devices, with MLX synchronising the key/value blocks handed
/// from one stream to the next; `None` for a single shard, which stays on the caller's stream.
fn shard_streams(shards: usize) -> Option<Vec<Stream>> {
    if shards < 2 {
        return None;
    }
    let wanted = shards.min(MAX_SHARD_STREAMS);
    Some(SHARD_STREAMS.with_borrow_mut(|streams| {
        while streams.len() < wanted {
            streams.push(Stream::new_with_device(&Device::default()));
        }
        streams[..wanted].to_vec()
    }))
}

/// A key/value block travelling around the ring, with the global position of its first row.
#[derive(Debug, Clone)]
pub struct KvBlock {
    /// [batch, heads, rows, head_dim], f32.
    pub key: Array,
    /// [batch, heads, rows, head_dim], f32.
    pub value: Array,
    /// Global position of row 0.
    pub offset: i32,
}

impl KvBlock {
    /// # Shapes
    /// `key`, `value`: [batch, heads, rows, head_dim] (cast to f32)
    pub fn new(key: Array, value: Array, offset: i32) -> Result<Self, Exception> {
        if key.shape() != value.shape() {
            return Err(Exception::custom(format!(
                "key block shape {:?} differs from value block shape {:?}",
                key.shape(),
                value.shape()
            )));
        }
        Ok(Self { key: to_f32(&key)?, value: to_f32(&value)?, offset })
    }

    fn rows(&self) -> i32 {
        self.key.shape()[2]
    }
}

/// One hop of the ring: every shard sends its block to the next one, so shard `i` now holds
/// what shard `i - 1` held (and shard 0 what the last shard held). After `s` hops shard `i`
/// holds the block that originated at shard `(i - s) mod shards`.
fn pass_along(held: &mut [KvBlock]) {
    held.rotate_right(1);
}

/// One participant of the ring: a contiguous query shard (split into blocks of `block_size`
/// rows, each with its own online-softmax accumulators) and the global offset of its first row.
#[derive(Debug)]
pub struct RingShard {
    blocks: Vec<QueryBlock>,
    offset: i32,
    block_size: i32,
    causal: bool,
}

impl RingShard {
    /// A shard whose first query row sits at global position `offset`; the query is cast to
    /// f32 and multiplied by `1/sqrt(head_dim) · log2 e` here (scores in base 2).
    ///
    /// # Shapes
    /// `query`: [batch, heads, rows, head_dim]
    pub fn new(query: Array, offset: i32, block_size: i32, causal: bool) -> Result<Self, Exception> {
        check_block_size(block_size)?;
        let (rows, head_dim) = match *query.shape() {
            [_, _, rows, head_dim] => (rows, head_dim),
            ref shape => {
                return Err(Exception::custom(format!(
                    "a ring shard needs a [batch, heads, rows, head_dim] query, got {shape:?}"
                )));
            }
        };
        let query = base2_query(&query, head_dim)?;
        let blocks = block_bounds(rows, block_size)
            .into_iter()
            .map(|(start, end)| QueryBlock::new(slice_rows(&query, start, end)?, offset + start))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { blocks, offset, block_size, causal })
    }

    /// Global position of the shard's first query row.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Fold one key/value block into every query block's accumulators, `block_size` key rows at
    /// a time. With `causal`, a key block entirely in the future of the shard does nothing.
    ///
    /// # Shapes
    /// `kv.key`, `kv.value`: [batch, heads, rows, head_dim]
    pub fn step(&mut self, kv: &KvBlock) -> Result<(), Exception> {
        for (start, end) in block_bounds(kv.rows(), self.block_size) {
            let key_offset = kv.offset + start;
            // Blocks are visited in order, so later key sub-blocks are further in the future.
            if self.causal && self.blocks.iter().all(|block| block.is_future(key_offset)) {
                break;
            }
            let key = slice_rows(&kv.key, start, end)?;
            let value = slice_rows(&kv.value, start, end)?;
            for block in &mut self.blocks {
                block.update(&key, &value, key_offset, self.causal)?;
            }
        }
        Ok(())
    }

    /// The shard's attention output, numerator / denominator.
    ///
    /// # Shapes
    /// → [batch, heads, rows, head_dim], f32
    pub fn output(self) -> Result<Array, Exception> {
        let outputs = self.blocks.iter().map(QueryBlock::output).collect::<Result<Vec<_>, _>>()?;
        concatenate_rows(&outputs)
    }
}

/// A query block with its online-softmax accumulators.
#[derive(Debug)]
struct QueryBlock {
    /// Query scaled to base-2 scores, [batch, heads, rows, head_dim], f32.
    query: Array,
    /// Global position of row 0.
    offset: i32,
    /// Running maximum (base-2) score per row, [batch, heads, rows, 1].
    max: Array,
    /// Σ 2^(score - max) · value, [batch, heads, rows, head_dim].
    numerator: Array,
    /// Σ 2^(score - max), [batch, heads, rows, 1].
    denominator: Array,
}

impl QueryBlock {
    fn new(query: Array, offset: i32) -> Result<Self, Exception> {
        let shape = query.shape().to_vec();
        let mut row_shape = shape.clone();
        row_shape[3] = 1;
        Ok(Self {
            max: Array::full::<f32>(&row_shape, Array::from_f32(MASKED_SCORE))?,
            numerator: Array::zeros::<f32>(&shape)?,
            denominator: Array::zeros::<f32>(&row_shape)?,
            query,
            offset,
        })
    }

    fn rows(&self) -> i32 {
        self.query.shape()[2]
    }

    /// True when a key at `key_offset` (or later) is in the future of every row of this block.
    fn is_future(&self, key_offset: i32) -> bool {
        key_offset > self.offset + self.rows() - 1
    }

    /// The online-softmax update with one key/value block starting at global `key_offset`.
    fn update(&mut self, key: &Array, value: &Array, key_offset: i32, causal: bool) -> Result<(), Exception> {
        if causal && self.is_future(key_offset) {
            return Ok(());
        }
        let key_rows = key.shape()[2];
        let mut scores = matmul(&self.query, key.swap_axes(2, 3)?)?;
        // Only a block that reaches past the block's first query row needs a mask.
        let visible = if causal && key_offset + key_rows - 1 > self.offset {
            let visible = causal_visibility(self.offset, self.rows(), key_offset, key_rows)?;
            scores = ops::select(&visible, &scores, Array::from_f32(MASKED_SCORE))?;
            Some(visible)
        } else {
            None
        };
        // The output does not depend on the shift, so no gradient needs to flow through it.
        let (max, weights, weight_sum) = match &visible {
            // One fused pass over the scores on the CPU (see `cpu_kernels`).
            None if cpu_kernels::available() => {
                let (max, weights, weight_sum) = cpu_kernels::online_softmax_block(&scores, &self.max)?;
                (stop_gradient(&max)?, weights, weight_sum)
            }
            _ => {
                let max = stop_gradient(ops::maximum(&self.max, scores.max_axis(-1, true)?)?)?;
                let mut weights = exp2(&scores.subtract(&max)?)?;
                if let Some(visible) = &visible {
                    // A row with every key masked so far has max == MASKED_SCORE and exp(0) == 1 here.
                    weights = ops::select(visible, &weights, Array::from_f32(0.0))?;
                }
                let weight_sum = weights.sum_axis(-1, true)?;
                (max, weights, weight_sum)
            }
        };
        let correction = exp2(&self.max.subtract(&max)?)?;
        self.numerator = self.numerator.multiply(&correction)?.add(matmul(&weights, value)?)?;
        self.denominator = self.denominator.multiply(&correction)?.add(weight_sum)?;
        self.max = max;
        Ok(())
    }

    /// numerator / denominator; a row that saw no key gets zeros instead of 0/0.
    fn output(&self) -> Result<Array, Exception> {
        let denominator = ops::maximum(&self.denominator, Array::from_f32(f32::MIN_POSITIVE))?;
        self.numerator.divide(&denominator)
    }
}

/// The checked dimensions of an attention call.
struct Dims {
    length_q: i32,
    length_k: i32,
    scale: f32,
}

fn check_shapes(q: &Array, k: &Array, v: &Array) -> Result<Dims, Exception> {
    let (q_shape, k_shape, v_shape) = (q.shape(), k.shape(), v.shape());
    let consistent = q_shape.len() == 4
        && k_shape.len() == 4
        && k_shape == v_shape
        && q_shape[..2] == k_shape[..2]
        && q_shape[3] == k_shape[3];
    if !consistent {
        return Err(Exception::custom(format!(
            "attention needs q [batch, heads, length_q, head_dim] and k, v [batch, heads, length_k, \
             head_dim], got q {q_shape:?}, k {k_shape:?}, v {v_shape:?}"
        )));
    }
    Ok(Dims { length_q: q_shape[2], length_k: k_shape[2], scale: 1.0 / (q_shape[3] as f32).sqrt() })
}

fn check_block_size(block_size: i32) -> Result<(), Exception> {
    if block_size < 1 {
        return Err(Exception::custom(format!("block size must be at least 1, got {block_size}")));
    }
    Ok(())
}

fn to_f32(array: &Array) -> Result<Array, Exception> {
    if array.dtype() == Dtype::Float32 { Ok(array.clone()) } else { array.as_dtype(Dtype::Float32) }
}

/// `[start, end)` pairs covering `0..length` in steps of `block_size` (the last may be shorter).
pub(crate) fn block_bounds(length: i32, block_size: i32) -> Vec<(i32, i32)> {
    (0..length).step_by(block_size.max(1) as usize).map(|start| (start, (start + block_size).min(length))).collect()
}

/// Rows `start..end` of axis 2.
pub(crate) fn slice_rows(array: &Array, start: i32, end: i32) -> Result<Array, Exception> {
    array.try_index((.., .., start..end, ..))
}

fn concatenate_rows(blocks: &[Array]) -> Result<Array, Exception> {
    match blocks {
        [single] => Ok(single.clone()),
        _ => ops::concatenate(blocks, 2),
    }
}

/// Bool [query_rows, key_rows]: true where global query position ≥ global key position.
pub(crate) fn causal_visibility(
    query_offset: i32,
    query_rows: i32,
    key_offset: i32,
    key_rows: i32,
) -> Result<Array, Exception> {
    let query_positions = Array::from_iter(query_offset..query_offset + query_rows, &[query_rows, 1]);
    let key_positions = Array::from_iter(key_offset..key_offset + key_rows, &[1, key_rows]);
    query_positions.ge(&key_positions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::ops::indexing::IndexOp;
    use mlx_rs::random;
    use mlx_rs::transforms::value_and_grad_with_argnums;

    const VALUE_TOLERANCE: f32 = 1e-5;
    const GRADIENT_TOLERANCE: f32 = 1e-4;

    fn inputs(seed: u64, shape: &[i32]) -> Result<[Array; 4], Exception> {
        random::seed(seed)?;
        Ok([
            random::normal::<f32>(shape, None, None, None)?,
            random::normal::<f32>(shape, None, None, None)?,
            random::normal::<f32>(shape, None, None, None)?,
            random::normal::<f32>(shape, None, None, None)?,
        ])
    }

    fn max_abs_difference(a: &Array, b: &Array) -> Result<f32, Exception> {
        assert_eq!(a.shape(), b.shape());
        let difference = a.subtract(b)?.abs()?.max(None)?;
        let value = difference.item_exact::<f32>();
        assert!(value.is_finite(), "difference is not finite: {value}");
        Ok(value)
    }

    /// Shards get distinct MLX streams, made once and reused (no new stream, and no new
    /// worker thread, per call); one shard stays on the caller's stream.
    #[test]
    fn shards_run_on_their_own_reused_streams() {
        assert!(shard_streams(1).is_none());
        let first = shard_streams(4).unwrap();
        assert_eq!(first.len(), 4);
        for (i, a) in first.iter().enumerate() {
            assert!(first[i + 1..].iter().all(|b| a != b), "shard streams must differ");
            assert!(*a != Stream::thread_local_or_default(), "a shard stream is not the caller's");
        }
        assert!(shard_streams(4).unwrap() == first, "streams are reused");
        assert_eq!(shard_streams(20).unwrap().len(), MAX_SHARD_STREAMS);
    }

    #[test]
    fn blockwise_matches_reference() -> Result<(), Exception> {
        let mut worst = 0.0f32;
        for (seed, length) in [(1, 37), (2, 64)] {
            let [q, k, v, _] = inputs(seed, &[2, 2, length, 8])?;
            for causal in [false, true] {
                let expected = reference_attention(&q, &k, &v, causal)?;
                for block_size in [1, 5, 8, 16, 64, 100] {
                    let actual = blockwise_attention(&q, &k, &v, block_size, causal)?;
                    let difference = max_abs_difference(&actual, &expected)?;
                    assert!(
                        difference < VALUE_TOLERANCE,
                        "length {length} block {block_size} causal {causal}: {difference}"
                    );
                    worst = worst.max(difference);
                }
            }
        }
        eprintln!("blockwise vs reference: max |Δ| = {worst:e}");
        Ok(())
    }

    #[test]
    fn blockwise_handles_different_query_and_key_lengths() -> Result<(), Exception> {
        random::seed(3)?;
        let q = random::normal::<f32>(&[1, 2, 11, 4], None, None, None)?;
        let k = random::normal::<f32>(&[1, 2, 23, 4], None, None, None)?;
        let v = random::normal::<f32>(&[1, 2, 23, 4], None, None, None)?;
        for causal in [false, true] {
            let expected = reference_attention(&q, &k, &v, causal)?;
            let actual = blockwise_attention(&q, &k, &v, 4, causal)?;
            assert!(max_abs_difference(&actual, &expected)? < VALUE_TOLERANCE);
        }
        Ok(())
    }

    #[test]
    fn ring_matches_reference() -> Result<(), Exception> {
        let mut worst = 0.0f32;
        for (seed, length) in [(4, 37), (5, 64)] {
            let [q, k, v, _] = inputs(seed, &[2, 2, length, 8])?;
            for causal in [false, true] {
                let expected = reference_attention(&q, &k, &v, causal)?;
                for shards in [1, 2, 4, 8] {
                    for block_size in [5, 16] {
                        let actual = ring_attention(&q, &k, &v, shards, block_size, causal)?;
                        let difference = max_abs_difference(&actual, &expected)?;
                        assert!(
                            difference < VALUE_TOLERANCE,
                            "length {length} shards {shards} block {block_size} causal {causal}: {difference}"
                        );
                        worst = worst.max(difference);
                    }
                }
            }
        }
        eprintln!("ring vs reference: max |Δ| = {worst:e}");
        Ok(())
    }

    #[test]
    fn ring_with_more_shards_than_rows_matches_reference() -> Result<(), Exception> {
        let [q, k, v, _] = inputs(6, &[1, 1, 5, 4])?;
        for causal in [false, true] {
            let expected = reference_attention(&q, &k, &v, causal)?;
            let actual = ring_attention(&q, &k, &v, 8, 2, causal)?;
            assert!(max_abs_difference(&actual, &expected)? < VALUE_TOLERANCE);
        }
        Ok(())
    }

    #[test]
    fn rejects_bad_arguments() -> Result<(), Exception> {
        let [q, k, v, _] = inputs(7, &[1, 1, 6, 4])?;
        assert!(blockwise_attention(&q, &k, &v, 0, false).is_err());
        assert!(ring_attention(&q, &k, &v, 0, 4, false).is_err());
        let short = k.index((.., .., 0..3, ..));
        assert!(ring_attention(&q, &short, &short, 2, 4, false).is_err());
        assert!(reference_attention(&q, &short, &v, false).is_err());
        Ok(())
    }

    /// Loss `sum(attention(q, k, v) * w)` and its gradients with respect to q, k and v.
    fn gradients(
        attention: impl Fn(&Array, &Array, &Array) -> Result<Array, Exception> + 'static,
        arguments: &[Array; 4],
    ) -> Result<(f32, Vec<Array>), Exception> {
        let loss = move |arrays: &[Array]| -> Result<Vec<Array>, Exception> {
            Ok(vec![attention(&arrays[0], &arrays[1], &arrays[2])?.multiply(&arrays[3])?.sum(None)?])
        };
        let (values, grads) = value_and_grad_with_argnums(loss, &[0, 1, 2][..])(arguments)?;
        Ok((values[0].item_exact::<f32>(), grads))
    }

    #[test]
    fn ring_passes_blocks_to_the_next_shard() -> Result<(), Exception> {
        let shards = 5;
        let empty = Array::zeros::<f32>(&[1, 1, 0, 1])?;
        let mut held = (0..shards)
            .map(|origin| KvBlock::new(empty.clone(), empty.clone(), origin))
            .collect::<Result<Vec<_>, _>>()?;
        for step in 0..shards {
            let origins: Vec<i32> = held.iter().map(|kv| kv.offset).collect();
            let expected: Vec<i32> = (0..shards).map(|shard| (shard - step).rem_euclid(shards)).collect();
            assert_eq!(origins, expected, "step {step}");
            pass_along(&mut held);
        }
        Ok(())
    }

    #[test]
    fn gradients_match_reference() -> Result<(), Exception> {
        let mut worst = 0.0f32;
        for ((seed, length, block_size), causal) in
            [(8, 37, 5), (12, 64, 16)].into_iter().flat_map(|case| [(case, false), (case, true)])
        {
            let arguments = inputs(seed, &[2, 2, length, 8])?;
            let (expected_loss, expected) = gradients(move |q, k, v| reference_attention(q, k, v, causal), &arguments)?;
            let mut candidates: Vec<(String, f32, Vec<Array>)> = Vec::new();
            let (loss, grads) = gradients(move |q, k, v| blockwise_attention(q, k, v, block_size, causal), &arguments)?;
            candidates.push(("blockwise".into(), loss, grads));
            for shards in [1, 2, 4, 8] {
                let (loss, grads) =
                    gradients(move |q, k, v| ring_attention(q, k, v, shards, block_size, causal), &arguments)?;
                candidates.push((format!("ring {shards}"), loss, grads));
            }
            for (name, loss, grads) in &candidates {
                assert!(
                    (loss - expected_loss).abs() < 1e-3,
                    "{name} length {length} causal {causal}: loss {loss} vs {expected_loss}"
                );
                assert_eq!(grads.len(), 3);
                for (which, (actual, wanted)) in ["q", "k", "v"].iter().zip(grads.iter().zip(&expected)) {
                    let difference = max_abs_difference(actual, wanted)?;
                    assert!(
                        difference < GRADIENT_TOLERANCE,
                        "{name} length {length} causal {causal} d{which}: {difference}"
                    );
                    worst = worst.max(difference);
                }
            }
            // The gradients are not trivially zero.
            assert!(expected[0].abs()?.max(None)?.item_exact::<f32>() > 0.1);
        }
        eprintln!("gradients vs reference: max |Δ| = {worst:e}");
        Ok(())
    }

    /// Rows `..=t` of `a` followed by rows `t + 1..` of `b` (axis 2).
    fn splice(a: &Array, b: &Array, t: i32) -> Result<Array, Exception> {
        ops::concatenate(&[a.try_index((.., .., ..=t, ..))?, b.try_index((.., .., t + 1.., ..))?], 2)
    }

    /// Rows `..=t` and `t + 1..` of axis 2.
    fn split_at(a: &Array, t: i32) -> Result<(Array, Array), Exception> {
        Ok((a.try_index((.., .., ..=t, ..))?, a.try_index((.., .., t + 1.., ..))?))
    }

    /// Causality: with `causal = true`, replacing q, k and v at every position after t leaves
    /// the outputs at positions ≤ t bit-identical, for blockwise attention (blocks of 5 and 8)
    /// and ring attention with 1, 2, 4 and 8 shards (blocks of 3 and 5), at lengths 37 and 23
    /// (divisible by none of the block sizes), with t at the first row, inside a block, at a
    /// block's last row and at the next-to-last row. The test can fail: the outputs after t do
    /// change, and so do the non-causal outputs at positions ≤ t.
    #[test]
    fn causal_outputs_ignore_later_positions() -> Result<(), Exception> {
        type Attention = Box<dyn Fn(&Array, &Array, &Array, bool) -> Result<Array, Exception>>;
        let mut attentions: Vec<(String, Attention)> = vec![
            ("reference".into(), Box::new(reference_attention)),
            ("blockwise 5".into(), Box::new(|q, k, v, causal| blockwise_attention(q, k, v, 5, causal))),
            ("blockwise 8".into(), Box::new(|q, k, v, causal| blockwise_attention(q, k, v, 8, causal))),
        ];
        for shards in [1, 2, 4, 8] {
            for block_size in [3, 5] {
                attentions.push((
                    format!("ring {shards} shards, block {block_size}"),
                    Box::new(move |q, k, v, causal| ring_attention(q, k, v, shards, block_size, causal)),
                ));
            }
        }
        let mut checked = 0;
        for (seed, length) in [(13, 37), (14, 23)] {
            let [q, k, v, _] = inputs(seed, &[2, 2, length, 8])?;
            let [other_q, other_k, other_v, _] = inputs(seed + 100, &[2, 2, length, 8])?;
            for t in [0, 7, 9, length - 2] {
                let changed = [splice(&q, &other_q, t)?, splice(&k, &other_k, t)?, splice(&v, &other_v, t)?];
                for (name, attention) in &attentions {
                    let (before_head, before_tail) = split_at(&attention(&q, &k, &v, true)?, t)?;
                    let (after_head, after_tail) =
                        split_at(&attention(&changed[0], &changed[1], &changed[2], true)?, t)?;
                    let head = max_abs_difference(&before_head, &after_head)?;
                    assert_eq!(head, 0.0, "{name}, length {length}: positions ≤ {t} changed by {head}");
                    let tail = max_abs_difference(&before_tail, &after_tail)?;
                    assert!(tail > 1e-3, "{name}, length {length}: positions > {t} did not change");
                    let (open, _) = split_at(&attention(&q, &k, &v, false)?, t)?;
                    let (open_changed, _) = split_at(&attention(&changed[0], &changed[1], &changed[2], false)?, t)?;
                    let reached = max_abs_difference(&open, &open_changed)?;
                    assert!(reached > 1e-3, "{name}, length {length}: non-causal positions ≤ {t} did not change");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * 4 * attentions.len());
        Ok(())
    }

    #[test]
    fn first_causal_row_is_the_first_value() -> Result<(), Exception> {
        let [q, k, v, _] = inputs(9, &[2, 3, 13, 4])?;
        let first_value = v.index((.., .., 0..1, ..));
        let outputs = [
            reference_attention(&q, &k, &v, true)?,
            blockwise_attention(&q, &k, &v, 4, true)?,
            ring_attention(&q, &k, &v, 3, 2, true)?,
        ];
        for output in &outputs {
            let first_row = output.index((.., .., 0..1, ..));
            assert_eq!(max_abs_difference(&first_row, &first_value)?, 0.0);
        }
        Ok(())
    }

    #[test]
    fn fully_masked_rows_are_finite() -> Result<(), Exception> {
        // Key block after every query row of the block: the update must leave zeros, not NaN.
        let [q, k, v, _] = inputs(10, &[1, 1, 4, 4])?;
        let mut block = QueryBlock::new(q.index((.., .., 0..2, ..)), 0)?;
        block.update(&k.index((.., .., 1..4, ..)), &v.index((.., .., 1..4, ..)), 1, true)?;
        let output = block.output()?;
        let first_row = output.index((.., .., 0..1, ..));
        assert_eq!(first_row.abs()?.max(None)?.item_exact::<f32>(), 0.0);
        assert!(output.abs()?.max(None)?.item_exact::<f32>().is_finite());
        Ok(())
    }

    #[test]
    fn non_f32_inputs_keep_their_dtype() -> Result<(), Exception> {
        let [q, k, v, _] = inputs(11, &[1, 2, 9, 4])?;
        let [q16, k16, v16] = [&q, &k, &v].map(|array| array.as_dtype(Dtype::Float16));
        let (q16, k16, v16) = (q16?, k16?, v16?);
        let expected = reference_attention(&q16, &k16, &v16, true)?;
        for actual in [blockwise_attention(&q16, &k16, &v16, 4, true)?, ring_attention(&q16, &k16, &v16, 2, 4, true)?] {
            assert_eq!(actual.dtype(), Dtype::Float16);
            let difference =
                max_abs_difference(&actual.as_dtype(Dtype::Float32)?, &expected.as_dtype(Dtype::Float32)?)?;
            assert!(difference < 2e-3, "f16: {difference}");
        }
        Ok(())
    }
}
