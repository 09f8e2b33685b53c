//! Ring Attention across ranks (sequence parallelism; Liu, Zaharia, Abbeel 2023): the
//! sequence is split into one contiguous shard per rank, and each rank holds the query, key and
//! value rows of its shard only. In step `s` rank `r` folds the key/value block that
//! originated at rank `r - s` into its online softmax while it already sends that block on to
//! rank `r + 1` and receives the next one from rank `r - 1` (MLX's ring backend exchanges
//! arrays between ring neighbours only). After `size` steps every query row has seen every key
//! row, and no rank ever held more than two key/value blocks.
//!
//! The backward pass is explicit (MLX's send/recv have no gradient): with the forward's
//! log-sum-exp per row, each key/value block's contribution to `dq`, `dk` and `dv` is
//! separable (the flash-attention backward), so the key/value blocks travel the ring once more
//! together with their `dk`/`dv` accumulators, which end back at the rank that owns the block.
//!
//! Sends run on one MLX stream and receives on another, so that a rank's send and its
//! neighbour's receive always make progress together, and both overlap with the computation
//! on the default stream. The whole pass is one lazy graph, evaluated under the watchdog.
//!
//! # Shapes
//! On every rank `q`, `k`, `v`: [batch, heads, rows of its shard, head_dim], f32; shard `i`
//! holds rows [`shard_bounds`]`(length, size)[i]` of the whole sequence.
use super::{DistributedError, Group, Watchdog, custom_vjp};
use crate::model::attention::{MASKED_SCORE, block_bounds, causal_visibility, slice_rows as rows};
use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::ops::{self, matmul};
use mlx_rs::{Array, Device, Dtype, Stream, transforms};
use std::cell::Cell;
use std::marker::PhantomData;

/// The rows `[start, end)` of the sequence each of `ranks` ranks holds: `ceil(length / ranks)`
/// each, the last shorter (the split of the single-process
/// [`ring_attention`](crate::model::attention::ring_attention)). Every rank needs a row.
pub fn shard_bounds(length: usize, ranks: usize) -> Result<Vec<(i32, i32)>, DistributedError> {
    let rows = length.div_ceil(ranks.max(1));
    let bounds: Vec<(i32, i32)> =
        (0..ranks).map(|rank| ((rank * rows).min(length) as i32, ((rank + 1) * rows).min(length) as i32)).collect();
    if ranks == 0 || bounds.iter().any(|(start, end)| start >= end) {
        return Err(DistributedError::Invalid(format!(
            "a sequence of {length} rows cannot give each of {ranks} ranks a shard of ceil({length}/{ranks}) rows"
        )));
    }
    Ok(bounds)
}

/// Ring attention over the ranks of a group, for a sequence of `length` rows.
pub struct RingAttention<'a> {
    group: &'a Group,
    watchdog: Watchdog,
    bounds: Vec<(i32, i32)>,
    block_size: i32,
    causal: bool,
    send_stream: Stream,
    recv_stream: Stream,
}

/// What the backward pass needs from the forward: the output and each row's log-sum-exp.
pub struct RingForward {
    /// [batch, heads, rows, head_dim], f32.
    pub output: Array,
    /// log Σ exp(score) per query row, [batch, heads, rows, 1].
    pub logsumexp: Array,
}

impl<'a> RingAttention<'a> {
    pub fn new(
        group: &'a Group,
        watchdog: Watchdog,
        length: usize,
        block_size: i32,
        causal: bool,
    ) -> Result<Self, DistributedError> {
        if block_size < 1 {
            return Err(DistributedError::Invalid(format!("block size must be at least 1, got {block_size}")));
        }
        Ok(Self {
            group,
            watchdog,
            bounds: shard_bounds(length, group.size())?,
            block_size,
            causal,
            send_stream: Stream::new_with_device(&Device::cpu()),
            recv_stream: Stream::new_with_device(&Device::cpu()),
        })
    }

    /// This rank's rows `[start, end)` of the sequence.
    pub fn bounds(&self) -> (i32, i32) {
        self.bounds[self.group.rank()]
    }

    /// The output rows of this rank's shard (and the log-sum-exp the backward pass needs).
    ///
    /// # Shapes
    /// `q`, `k`, `v`: [batch, heads, shard rows, head_dim] → output the same, log-sum-exp
    /// [batch, heads, shard rows, 1]
    pub fn forward(&self, q: &Array, k: &Array, v: &Array) -> Result<RingForward, DistributedError> {
        let (rank, size) = (self.group.rank(), self.group.size());
        let query = self.check(q, k, v)?;
        let (query_offset, _) = self.bounds();
        let mut row_shape = query.shape().to_vec();
        row_shape[3] = 1;
        let mut max = Array::full::<f32>(&row_shape, Array::from_f32(MASKED_SCORE))?;
        let mut numerator = Array::zeros::<f32>(query.shape())?;
        let mut denominator = Array::zeros::<f32>(&row_shape)?;
        let mut held = key_value(k, v)?;
        transforms::eval([&held])?;
        for step in 0..size {
            let origin = (rank + size - step) % size;
            let passed = self.pass_on(&held, step, origin)?;
            let exchange: Vec<Array> = passed.iter().flat_map(|(token, next)| [token.clone(), next.clone()]).collect();
            let (key, value) = (held.try_index(0)?, held.try_index(1)?);
            let key_offset = self.bounds[origin].0;
            for (start, end) in block_bounds(key.shape()[2], self.block_size) {
                let Some((scores, visible)) = self.scores(&query, query_offset, &key, key_offset, start, end)? else {
                    break;
                };
                let new_max = ops::maximum(&max, scores.max_axis(-1, true)?)?;
                let mut weights = scores.subtract(&new_max)?.exp()?;
                if let Some(visible) = &visible {
                    weights = ops::select(visible, &weights, Array::from_f32(0.0))?;
                }
                let correction = max.subtract(&new_max)?.exp()?;
                numerator = numerator.multiply(&correction)?.add(matmul(&weights, rows(&value, start, end)?)?)?;
                denominator = denominator.multiply(&correction)?.add(weights.sum_axis(-1, true)?)?;
                max = new_max;
            }
            // One step at a time: this step's exchange overlaps its computation, which needs
            // nothing in flight (a whole-ring graph can leave a send queued behind
            // computations that wait for the neighbour's send).
            let mut evaluate: Vec<&Array> = exchange.iter().collect();
            evaluate.extend([&max, &numerator, &denominator]);
            self.watchdog.guard("ring attention (forward)", || transforms::eval(evaluate))?;
            if let Some((_, next)) = passed {
                held = next;
            }
        }
        let denominator = ops::maximum(&denominator, Array::from_f32(f32::MIN_POSITIVE))?;
        let output = numerator.divide(&denominator)?;
        let logsumexp = max.add(denominator.log()?)?;
        transforms::eval([&output, &logsumexp])?;
        Ok(RingForward { output, logsumexp })
    }

    /// Gradients of a loss with respect to this rank's `q`, `k` and `v`, given its gradient
    /// with respect to this rank's output rows (`d_output`).
    ///
    /// # Shapes
    /// `q`, `k`, `v`, `d_output`: [batch, heads, shard rows, head_dim] → (dq, dk, dv), the same
    pub fn backward(
        &self,
        q: &Array,
        k: &Array,
        v: &Array,
        forward: &RingForward,
        d_output: &Array,
    ) -> Result<(Array, Array, Array), DistributedError> {
        let (rank, size) = (self.group.rank(), self.group.size());
        let query = self.check(q, k, v)?;
        let scale = Array::from_f32(1.0 / (q.shape()[3] as f32).sqrt());
        let (query_offset, _) = self.bounds();
        let d_output = d_output.as_dtype(Dtype::Float32)?;
        // D_i = Σ_d dO_id · O_id
        let row_dot = d_output.multiply(&forward.output)?.sum_axis(-1, true)?;
        let mut d_query = Array::zeros::<f32>(query.shape())?;
        let mut held = key_value(k, v)?;
        let mut accumulated = Array::zeros::<f32>(held.shape())?;
        transforms::eval([&held, &accumulated, &row_dot])?;
        for step in 0..size {
            let origin = (rank + size - step) % size;
            let passed = self.pass_on(&held, step, origin)?;
            let exchange: Vec<Array> = passed.iter().flat_map(|(token, next)| [token.clone(), next.clone()]).collect();
            let (key, value) = (held.try_index(0)?, held.try_index(1)?);
            let key_offset = self.bounds[origin].0;
            let mut d_keys = Vec::new();
            let mut d_values = Vec::new();
            for (start, end) in block_bounds(key.shape()[2], self.block_size) {
                let block_value = rows(&value, start, end)?;
                let zeros = || Array::zeros::<f32>(block_value.shape());
                let Some((scores, visible)) = self.scores(&query, query_offset, &key, key_offset, start, end)? else {
                    d_keys.push(zeros()?);
                    d_values.push(zeros()?);
                    continue;
                };
                let mut probabilities = scores.subtract(&forward.logsumexp)?.exp()?;
                if let Some(visible) = &visible {
                    probabilities = ops::select(visible, &probabilities, Array::from_f32(0.0))?;
                }
                d_values.push(matmul(probabilities.swap_axes(2, 3)?, &d_output)?);
                let d_probabilities = matmul(&d_output, block_value.swap_axes(2, 3)?)?;
                let d_scores = probabilities.multiply(d_probabilities.subtract(&row_dot)?)?;
                d_query = d_query.add(matmul(&d_scores, rows(&key, start, end)?)?.multiply(&scale)?)?;
                d_keys.push(matmul(d_scores.swap_axes(2, 3)?, &query)?);
            }
            let contribution = ops::stack(&[ops::concatenate(&d_keys, 2)?, ops::concatenate(&d_values, 2)?], 0)?;
            accumulated = accumulated.add(&contribution)?;
            let mut evaluate: Vec<&Array> = exchange.iter().collect();
            evaluate.extend([&accumulated, &d_query]);
            self.watchdog.guard("ring attention (backward)", || transforms::eval(evaluate))?;
            // The accumulator follows its block; after the last step it goes home (on one rank
            // it is home already). Sends to a neighbour share one socket, so they must be
            // enqueued in the order the neighbour receives them: this exchange is evaluated on
            // its own, after the key/value block's.
            if size > 1 {
                let sent = self.group.send(&accumulated, self.group.right(), &self.send_stream)?;
                accumulated = self.receive(&accumulated, (origin + size - 1) % size)?;
                self.watchdog.guard("ring attention (backward)", || transforms::eval([&sent, &accumulated]))?;
            }
            if let Some((_, next)) = passed {
                held = next;
            }
        }
        let (d_key, d_value) = (accumulated.try_index(0)?, accumulated.try_index(1)?);
        let d_query = d_query.as_dtype(q.dtype())?;
        let (d_key, d_value) = (d_key.as_dtype(k.dtype())?, d_value.as_dtype(v.dtype())?);
        transforms::eval([&d_query, &d_key, &d_value])?;
        Ok((d_query, d_key, d_value))
    }

    /// Unless `step` is the last: send `held` (the block of rank `origin`) to the right
    /// neighbour and receive the next block from the left one; returns (send token, next block).
    fn pass_on(&self, held: &Array, step: usize, origin: usize) -> Result<Option<(Array, Array)>, DistributedError> {
        let size = self.group.size();
        if step + 1 >= size {
            return Ok(None);
        }
        Ok(Some((
            self.group.send(held, self.group.right(), &self.send_stream)?,
            self.receive(held, (origin + size - 1) % size)?,
        )))
    }

    /// Receive from the left neighbour a [2, batch, heads, rows, head_dim] block shaped like
    /// `like` but with the rows of the shard of rank `origin`.
    fn receive(&self, like: &Array, origin: usize) -> Result<Array, DistributedError> {
        let mut shape = like.shape().to_vec();
        let (start, end) = self.bounds[origin];
        shape[3] = end - start;
        self.group.recv(&shape, Dtype::Float32, self.group.left(), &self.recv_stream)
    }

    /// Checks the shard's shapes; returns the scaled f32 query.
    fn check(&self, q: &Array, k: &Array, v: &Array) -> Result<Array, DistributedError> {
        let (start, end) = self.bounds();
        let shape = q.shape();
        if shape.len() != 4 || k.shape() != shape || v.shape() != shape || shape[2] != end - start {
            return Err(DistributedError::Invalid(format!(
                "rank {} holds rows {start}..{end}: q, k, v must be [batch, heads, {}, head_dim], got {:?}, {:?}, {:?}",
                self.group.rank(),
                end - start,
                q.shape(),
                k.shape(),
                v.shape()
            )));
        }
        let scale = 1.0 / (shape[3] as f32).sqrt();
        Ok(q.as_dtype(Dtype::Float32)?.multiply(Array::from_f32(scale))?)
    }

    /// Scores of the query against key rows `start..end` of a block at global `key_offset`,
    /// with the causal mask where one is needed; `None` when every key of the sub-block is in
    /// the future of every query row (then so are the later sub-blocks).
    #[allow(clippy::type_complexity)]
    fn scores(
        &self,
        query: &Array,
        query_offset: i32,
        key: &Array,
        key_offset: i32,
        start: i32,
        end: i32,
    ) -> Result<Option<(Array, Option<Array>)>, Exception> {
        let query_rows = query.shape()[2];
        let first_key = key_offset + start;
        if self.causal && first_key > query_offset + query_rows - 1 {
            return Ok(None);
        }
        let mut scores = matmul(query, rows(key, start, end)?.swap_axes(2, 3)?)?;
        let visible = if self.causal && key_offset + end - 1 > query_offset {
            let visible = causal_visibility(query_offset, query_rows, first_key, end - start)?;
            scores = ops::select(&visible, &scores, Array::from_f32(MASKED_SCORE))?;
            Some(visible)
        } else {
            None
        };
        Ok(Some((scores, visible)))
    }
}

thread_local! {
    /// The ring [`attention_across_ranks`] uses on this thread while an [`ActiveRing`] lives.
    static ACTIVE: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
}

/// While alive, [`attention_across_ranks`] on this thread runs on `ring` (the forecaster's
/// layers reach the ring through it: MLX owns the functions whose gradient it defines, so they
/// cannot borrow it). Dropping it restores what was active before.
pub struct ActiveRing<'r> {
    previous: *const (),
    ring: PhantomData<&'r RingAttention<'r>>,
}

impl<'r> ActiveRing<'r> {
    pub fn enter(ring: &'r RingAttention<'r>) -> Self {
        let previous = ACTIVE.replace(std::ptr::from_ref(ring).cast());
        Self { previous, ring: PhantomData }
    }
}

impl Drop for ActiveRing<'_> {
    fn drop(&mut self) {
        ACTIVE.set(self.previous);
    }
}

/// `f` on the ring an [`ActiveRing`] made active on this thread, or an error when none is.
fn with_active<T>(f: impl FnOnce(&RingAttention) -> Result<T, DistributedError>) -> Result<T, Exception> {
    let active = ACTIVE.get();
    if active.is_null() {
        return Err(Exception::custom("attention across ranks needs an active ring (ActiveRing::enter)"));
    }
    // SAFETY: `active` was set by `ActiveRing::enter` from a ring that outlives the
    // `ActiveRing`, whose drop clears it again; the lifetime is the borrow `enter` holds.
    let ring = unsafe { &*active.cast::<RingAttention>() };
    f(ring).map_err(|error| Exception::custom(error.to_string()))
}

/// Exact attention of this rank's query rows over every rank's key/value rows, on the active
/// ring ([`ActiveRing`]), as a differentiable MLX operation: the forward pass is
/// [`RingAttention::forward`] and the gradient [`RingAttention::backward`] (a collective too,
/// so every rank must take it, in the same order). Shapes as [`RingAttention::forward`].
pub fn attention_across_ranks(q: &Array, k: &Array, v: &Array) -> Result<Array, Exception> {
    let forward = |inputs: &[Array]| -> Result<Vec<Array>, Exception> {
        with_active(|ring| {
            let RingForward { output, logsumexp } = ring.forward(&inputs[0], &inputs[1], &inputs[2])?;
            Ok(vec![output, logsumexp])
        })
    };
    let backward = |primals: &[Array], cotangents: &[Array], outputs: &[Array]| -> Result<Vec<Array>, Exception> {
        // The log-sum-exp is an output only for this: nothing downstream uses it, so its
        // cotangent is zero and ignored.
        let forward = RingForward { output: outputs[0].clone(), logsumexp: outputs[1].clone() };
        with_active(|ring| {
            let (dq, dk, dv) = ring.backward(&primals[0], &primals[1], &primals[2], &forward, &cotangents[0])?;
            Ok(vec![dq, dk, dv])
        })
    };
    let outputs = custom_vjp(&[q.clone(), k.clone(), v.clone()], forward, backward)
        .map_err(|error| Exception::custom(error.to_string()))?;
    outputs.into_iter().next().ok_or_else(|| Exception::custom("ring attention returned no output"))
}

/// Keys and values as one f32 [2, batch, heads, rows, head_dim] array: one send per hop.
fn key_value(k: &Array, v: &Array) -> Result<Array, Exception> {
    ops::stack(&[k.as_dtype(Dtype::Float32)?, v.as_dtype(Dtype::Float32)?], 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::blockwise_attention;
    use crate::model::distributed::{Backend, test_ranks};
    use mlx_rs::random;
    use mlx_rs::transforms::value_and_grad_with_argnums;
    use std::time::Duration;

    /// The worker's name, for `cargo test --exact`.
    const WORKER: &str = "model::distributed::ring::tests::rank_worker";
    /// Values and gradients of the ring across ranks against blockwise attention in one process.
    const TOLERANCE: f32 = 1e-5;

    #[test]
    fn shard_bounds_cover_the_sequence_with_ragged_last_shard() {
        assert_eq!(shard_bounds(37, 4).unwrap(), vec![(0, 10), (10, 20), (20, 30), (30, 37)]);
        assert_eq!(shard_bounds(8, 2).unwrap(), vec![(0, 4), (4, 8)]);
        assert!(shard_bounds(5, 4).is_err(), "ceil(5/4) = 2 leaves rank 3 no row");
        assert!(shard_bounds(5, 0).is_err());
    }

    /// One rank of [`ring_across_ranks_matches_blockwise_attention`]: does nothing unless
    /// started by it.
    #[test]
    #[ignore = "a rank started by ring_across_ranks_matches_blockwise_attention"]
    fn rank_worker() -> Result<(), DistributedError> {
        if !test_ranks::is_worker() {
            return Ok(());
        }
        let watchdog = Watchdog::new(Duration::from_secs(30));
        let group = Group::init(Backend::Ring, true, watchdog)?;
        let (mut worst_value, mut worst_gradient) = (0.0f32, 0.0f32);
        for (seed, length, block_size) in [(1, 37, 5), (2, 23, 4), (3, 64, 16)] {
            for causal in [false, true] {
                random::seed(seed)?;
                let shape = [2, 2, length, 8];
                let [q, k, v, w] = std::array::from_fn(|_| random::normal::<f32>(&shape, None, None, None));
                let (q, k, v, w) = (q?, k?, v?, w?);
                let loss = move |a: &[Array]| -> Result<Vec<Array>, Exception> {
                    Ok(vec![blockwise_attention(&a[0], &a[1], &a[2], block_size, causal)?.multiply(&a[3])?.sum(None)?])
                };
                let (_, expected) =
                    value_and_grad_with_argnums(loss, &[0, 1, 2][..])(&[q.clone(), k.clone(), v.clone(), w.clone()])?;
                let expected_output = blockwise_attention(&q, &k, &v, block_size, causal)?;

                let ring = RingAttention::new(&group, watchdog, length as usize, block_size, causal)?;
                let (start, end) = ring.bounds();
                let shard = |a: &Array| rows(a, start, end);
                let (q_shard, k_shard, v_shard) = (shard(&q)?, shard(&k)?, shard(&v)?);
                let forward = ring.forward(&q_shard, &k_shard, &v_shard)?;
                let gradients = ring.backward(&q_shard, &k_shard, &v_shard, &forward, &shard(&w)?)?;
                let difference = |a: &Array, b: &Array| -> Result<f32, Exception> {
                    Ok(a.subtract(b)?.abs()?.max(None)?.item_exact::<f32>())
                };
                let value = difference(&forward.output, &shard(&expected_output)?)?;
                let gradient = [gradients.0, gradients.1, gradients.2]
                    .iter()
                    .zip(&expected)
                    .map(|(actual, wanted)| difference(actual, &shard(wanted)?))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .fold(0.0f32, f32::max);
                assert!(
                    value < TOLERANCE && gradient < TOLERANCE,
                    "rank {} length {length} block {block_size} causal {causal}: |Δ value| {value:e}, |Δ gradient| {gradient:e}",
                    group.rank()
                );
                worst_value = worst_value.max(value);
                worst_gradient = worst_gradient.max(gradient);
            }
        }
        println!("{} value {worst_value:e} gradient {worst_gradient:e}", test_ranks::RESULT);
        Ok(())
    }

    /// Ring attention across 2 and 4 local ranks (processes) equals blockwise attention in one
    /// process within 1e-5, values and q/k/v gradients, causal and not, at lengths 37, 23 and
    /// 64 (ragged last shards and blocks).
    #[test]
    fn ring_across_ranks_matches_blockwise_attention() {
        for ranks in [2, 4] {
            let results = test_ranks::run(WORKER, ranks, Duration::from_secs(240));
            eprintln!("ring across {ranks} ranks: {results:?}");
        }
    }

    /// Peak MLX memory (bytes above q, k, v) of one forward and backward pass of this rank's
    /// shard at each length: batch 1, 4 heads, head_dim 16, sub-blocks of 256, causal.
    fn peak_memory_rows(group: &Group, lengths: &[usize]) -> Result<Vec<(usize, usize)>, DistributedError> {
        let watchdog = Watchdog::new(Duration::from_secs(600));
        let mut rows_out = Vec::new();
        for &length in lengths {
            let ring = RingAttention::new(group, watchdog, length, 256, true)?;
            let (start, end) = ring.bounds();
            let shape = [1, 4, end - start, 16];
            let key = random::key(length as u64 * 31 + group.rank() as u64)?;
            let q = random::normal::<f32>(&shape, None, None, &key)?;
            let (k, v, d_output) = (q.multiply(Array::from_f32(0.5))?, q.add(Array::from_f32(1.0))?, q.sqrt()?);
            transforms::eval([&q, &k, &v, &d_output])?;
            mlx_rs::memory::clear_cache()?;
            let baseline = mlx_rs::memory::active_memory()?;
            mlx_rs::memory::reset_peak_memory()?;
            let forward = ring.forward(&q, &k, &v)?;
            let gradients = ring.backward(&q, &k, &v, &forward, &d_output)?;
            let peak = mlx_rs::memory::peak_memory()?;
            drop((forward, gradients));
            rows_out.push((length, peak.saturating_sub(baseline)));
        }
        Ok(rows_out)
    }

    fn figure_lengths() -> Vec<usize> {
        std::env::var("ENERGY_BENCH_LENGTHS")
            .unwrap_or_else(|_| "2048,4096,8192".into())
            .split(',')
            .map(|part| part.trim().parse().unwrap())
            .collect()
    }

    /// A rank of [`ring_memory_figures`].
    #[test]
    #[ignore = "a rank started by ring_memory_figures"]
    fn memory_worker() -> Result<(), DistributedError> {
        if !test_ranks::is_worker() {
            return Ok(());
        }
        let group = Group::init(Backend::Ring, true, Watchdog::new(Duration::from_secs(60)))?;
        let rows = peak_memory_rows(&group, &figure_lengths())?;
        println!("{} {rows:?}", test_ranks::RESULT);
        Ok(())
    }

    /// Peak memory per rank against context length for 1, 2 and 4 sequence-parallel ranks:
    /// `cargo test --lib -- --ignored --nocapture ring_memory_figures` (lengths from
    /// `ENERGY_BENCH_LENGTHS`, default 2048,4096,8192).
    #[test]
    #[ignore = "prints figures; slow"]
    fn ring_memory_figures() -> Result<(), DistributedError> {
        let lengths = figure_lengths();
        let single = Group::init(Backend::Ring, false, Watchdog::new(Duration::from_secs(60)))?;
        assert_eq!(single.size(), 1, "run without MLX_RANK/MLX_HOSTFILE");
        let started = std::time::Instant::now();
        eprintln!("1 rank: {:?} ({:.1} s)", peak_memory_rows(&single, &lengths)?, started.elapsed().as_secs_f64());
        for ranks in [2, 4] {
            let started = std::time::Instant::now();
            let results =
                test_ranks::run("model::distributed::ring::tests::memory_worker", ranks, Duration::from_secs(1200));
            assert_eq!(results.len(), ranks);
            eprintln!("{ranks} ranks ({:.1} s):", started.elapsed().as_secs_f64());
            for (rank, result) in results.iter().enumerate() {
                eprintln!("  rank {rank}: {result}");
            }
        }
        Ok(())
    }
}
