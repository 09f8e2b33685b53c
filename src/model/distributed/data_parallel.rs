//! Data parallelism: every rank holds the same model (same seed), takes a deterministic
//! contiguous shard of every batch, and the ranks add their gradients with **one** flattened
//! `all_sum` per step, parameters in sorted key order (`FlattenedModuleParam` is a `HashMap`,
//! whose order differs between processes).
//!
//! Each rank scales its shard's gradient (and loss) by `shard rows / batch rows` before the sum,
//! so the sum is the gradient of the mean loss over the whole batch: the same step as one
//! process taking the whole batch, up to float rounding, also when the batch does not divide
//! evenly (a rank with no row contributes zeros).
use super::{DistributedError, Group, Watchdog};
use mlx_rs::module::FlattenedModuleParam;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, ops, transforms};
use serde::Serialize;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

/// The check value of step `s` is `s mod CHECK_PERIOD + 1`: exact in f32 once multiplied by
/// any group size up to 2^24 / CHECK_PERIOD ranks.
const CHECK_PERIOD: usize = 1000;

/// A rank's part in data-parallel training.
#[derive(Debug)]
pub struct DataParallel {
    group: Group,
    watchdog: Watchdog,
    steps: Cell<usize>,
    bytes: Cell<usize>,
    seconds: Cell<f64>,
}

/// What the gradient all_sums cost on this rank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CommunicationStats {
    pub ranks: usize,
    pub steps: usize,
    /// Bytes of the flattened buffer each step sums (gradients and loss, f32).
    pub bytes_per_step: usize,
    /// Mean wall time of one all_sum, waiting for the slowest rank included.
    pub all_sum_seconds_per_step: f64,
}

impl DataParallel {
    pub fn new(group: Group, watchdog: Watchdog) -> Self {
        Self { group, watchdog, steps: Cell::new(0), bytes: Cell::new(0), seconds: Cell::new(0.0) }
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    pub fn watchdog(&self) -> Watchdog {
        self.watchdog
    }

    /// True on the rank that writes files.
    pub fn is_leader(&self) -> bool {
        self.group.rank() == 0
    }

    /// This rank's rows of `batch` (rows `len·r/n .. len·(r+1)/n`) and the weight of its
    /// gradient (`rows / len`). A rank left without a row gets the batch's first row with
    /// weight 0, so that every rank runs the same collective.
    pub fn shard<'a>(&self, batch: &'a [usize]) -> (&'a [usize], f32) {
        let (rank, size, len) = (self.group.rank(), self.group.size(), batch.len());
        let (start, end) = (len * rank / size, len * (rank + 1) / size);
        if start == end {
            return (&batch[..len.min(1)], 0.0);
        }
        (&batch[start..end], (end - start) as f32 / len as f32)
    }

    /// Sum `weight · (loss, gradients)` over every rank with one all_sum of a flat f32 buffer
    /// (keys sorted); returns the summed loss and gradients in their original shapes. The
    /// local gradients are evaluated first, so that the watchdog's deadline covers the
    /// exchange (and waiting for slower ranks), not this rank's own computation.
    pub fn all_sum_gradients(
        &self,
        loss: &Array,
        gradients: FlattenedModuleParam,
        weight: f32,
    ) -> Result<(Array, FlattenedModuleParam), DistributedError> {
        let mut keys: Vec<Rc<str>> = gradients.keys().cloned().collect();
        keys.sort();
        let weight = Array::from_f32(weight);
        let mut parts = Vec::with_capacity(keys.len() + 1);
        let mut shapes = Vec::with_capacity(keys.len());
        let mut offsets = Vec::with_capacity(keys.len());
        let mut total = 0i32;
        for key in &keys {
            let gradient = &gradients[key];
            shapes.push(gradient.shape().to_vec());
            total += gradient.size() as i32;
            offsets.push(total);
            parts.push(gradient.as_dtype(mlx_rs::Dtype::Float32)?.reshape(&[-1])?.multiply(&weight)?);
        }
        parts.push(loss.as_dtype(mlx_rs::Dtype::Float32)?.reshape(&[1])?.multiply(&weight)?);
        // A check value that differs from step to step: MLX's ring backend gives up on a dead
        // neighbour's socket silently and returns a partial sum, which would train on.
        let check = (self.steps.get() % CHECK_PERIOD) as f32 + 1.0;
        parts.push(Array::from_slice(&[check], &[1]));
        let local = ops::concatenate(&parts, 0)?;
        transforms::eval([&local])?;
        let summed = self.group.all_sum(&local)?;
        let started = Instant::now();
        self.watchdog.guard("the gradient all_sum", || transforms::eval([&summed]))?;
        self.seconds.set(self.seconds.get() + started.elapsed().as_secs_f64());
        let summed_check = summed.try_index(-1)?.item_exact::<f32>();
        let expected = check * self.group.size() as f32;
        if summed_check != expected {
            return Err(DistributedError::Incomplete {
                what: format!("the gradient all_sum of step {}", self.steps.get() + 1),
                detail: format!("its check value summed to {summed_check} instead of {expected}"),
            });
        }
        self.steps.set(self.steps.get() + 1);
        self.bytes.set(local.size() * 4);
        let summed = summed.try_index(..-1)?;
        let mut pieces = summed.split_at_indices(&offsets, 0)?.into_iter();
        let mut out = FlattenedModuleParam::with_capacity(keys.len());
        for ((key, shape), piece) in keys.into_iter().zip(shapes).zip(pieces.by_ref()) {
            let original = gradients[&key].dtype();
            out.insert(key, piece.reshape(&shape)?.as_dtype(original)?);
        }
        let loss = pieces.next().ok_or_else(|| DistributedError::Invalid("the summed buffer lost its loss".into()))?;
        Ok((loss.reshape(&[])?, out))
    }

    /// Every rank's `value` summed (one scalar all_sum, guarded by the watchdog).
    pub fn all_sum_scalar(&self, value: f32, what: &str) -> Result<f32, DistributedError> {
        let summed = self.group.all_sum(&Array::from_slice(&[value], &[1]))?;
        self.watchdog.guard(what, || transforms::eval([&summed]))?;
        Ok(summed.as_slice::<f32>()[0])
    }

    pub fn stats(&self) -> CommunicationStats {
        let steps = self.steps.get();
        CommunicationStats {
            ranks: self.group.size(),
            steps,
            bytes_per_step: self.bytes.get(),
            all_sum_seconds_per_step: self.seconds.get() / steps.max(1) as f64,
        }
    }
}
