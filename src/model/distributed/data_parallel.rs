//! Data parallelism: every rank holds the same model (same seed), takes a deterministic
//! contiguous shard of every batch, and the ranks add their gradients with **one** flattened
//! `all_sum` per step, parameters in sorted key order (`FlattenedModuleParam` is a `HashMap`,
//! whose order differs between processes).
//!
//! Each rank scales its shard's gradient (and loss) by `shard rows / batch rows` before the sum,
//! so the sum is the gradient of the mean loss over the whole batch: the same step as one
//! process taking the whole batch, up to float rounding, also when the batch does not divide
//! evenly (a rank with no row contributes zeros).
//!
//! What only one rank can read (rank 0's resumable state, for one) reaches the others as bytes
//! ([`DataParallel::share_from_leader`], [`DataParallel::all_gather_bytes`]): the ranks need no
//! shared file system.
use super::{DistributedError, Group, Watchdog};
use mlx_rs::module::FlattenedModuleParam;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, ArrayElement, ops, transforms};
use serde::Serialize;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

/// The check value of step `s` is `s mod CHECK_PERIOD + 1`: exact in f32 once multiplied by
/// any group size up to 2^24 / CHECK_PERIOD ranks.
const CHECK_PERIOD: usize = 1000;

/// The last word of every rank's header in [`DataParallel::all_gather_bytes`]: a rank whose
/// part came back without it did not take part.
const BYTES_MAGIC: u64 = 0x656e_6572_6779_0001;

/// A rank's part in data-parallel training.
#[derive(Debug)]
pub struct DataParallel {
    group: Group,
    watchdog: Watchdog,
    /// The ranks split every window's positions instead of the batch's windows (sequence
    /// parallelism: each rank takes the whole batch, and attention runs across the ranks).
    sequence: bool,
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
        Self { group, watchdog, sequence: false, steps: Cell::new(0), bytes: Cell::new(0), seconds: Cell::new(0.0) }
    }

    /// The ranks of `group` split every window's positions (see `model::train`'s sequence
    /// parallelism) rather than the batch; the gradients are summed the same way.
    pub fn splitting_sequence(group: Group, watchdog: Watchdog) -> Self {
        Self { sequence: true, ..Self::new(group, watchdog) }
    }

    /// True when the ranks split the sequence rather than the batch.
    pub fn splits_sequence(&self) -> bool {
        self.sequence
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
    /// When the ranks split the sequence instead, every rank takes the whole batch (weight 1:
    /// each rank's loss is already its part of the batch's).
    pub fn shard<'a>(&self, batch: &'a [usize]) -> (&'a [usize], f32) {
        if self.sequence {
            return (batch, 1.0);
        }
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

    /// Every rank's `bytes`, in rank order: one all_gather of each rank's length and CRC-32,
    /// then one of the bytes, each rank's padded to the longest. A part that comes back with
    /// another CRC-32 (a rank died during the exchange) is an error, not data.
    pub fn all_gather_bytes(&self, what: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>, DistributedError> {
        let size = self.group.size();
        let header = [bytes.len() as u64, u64::from(crc32fast::hash(bytes)), BYTES_MAGIC];
        let headers: Vec<u64> = self.gather(what, &Array::from_slice(&header, &[3]))?;
        let incomplete = |detail: String| DistributedError::Incomplete { what: what.to_string(), detail };
        if headers.len() != 3 * size || headers.chunks(3).any(|header| header[2] != BYTES_MAGIC) {
            return Err(incomplete(format!("{} header words for {size} ranks", headers.len())));
        }
        let lengths: Vec<usize> = headers.chunks(3).map(|header| header[0] as usize).collect();
        // at least one byte: MLX gathers no empty array
        let longest = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = bytes.to_vec();
        padded.resize(longest, 0);
        let gathered: Vec<u8> = self.gather(what, &Array::from_slice(&padded, &[to_i32(longest)?]))?;
        if gathered.len() != longest * size {
            return Err(incomplete(format!("{} bytes for {size} ranks of {longest}", gathered.len())));
        }
        let mut parts = Vec::with_capacity(size);
        for (rank, (part, header)) in gathered.chunks(longest).zip(headers.chunks(3)).enumerate() {
            let part = &part[..lengths[rank]];
            if u64::from(crc32fast::hash(part)) != header[1] {
                return Err(incomplete(format!("rank {rank}'s {} bytes arrived damaged", part.len())));
            }
            parts.push(part.to_vec());
        }
        Ok(parts)
    }

    /// Rank 0's `bytes` on every rank (the other ranks' `bytes` are not sent).
    pub fn share_from_leader(&self, what: &str, bytes: &[u8]) -> Result<Vec<u8>, DistributedError> {
        let mine = if self.is_leader() { bytes } else { &[] };
        let mut parts = self.all_gather_bytes(what, mine)?;
        Ok(parts.swap_remove(0))
    }

    /// [`Group::all_gather`] of `x`, evaluated under the watchdog, as host values.
    fn gather<T: ArrayElement + Copy>(&self, what: &str, x: &Array) -> Result<Vec<T>, DistributedError> {
        transforms::eval([x])?;
        let gathered = self.group.all_gather(x)?;
        self.watchdog.guard(what, || transforms::eval([&gathered]))?;
        let values =
            gathered.try_as_slice::<T>().map_err(|error| DistributedError::Invalid(format!("{what}: {error:?}")))?;
        Ok(values.to_vec())
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

fn to_i32(value: usize) -> Result<i32, DistributedError> {
    i32::try_from(value).map_err(|_| DistributedError::Invalid(format!("{value} bytes do not fit one exchange")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::distributed::{Backend, test_ranks};
    use std::time::Duration;

    fn group_of_one() -> DataParallel {
        let watchdog = Watchdog::new(Duration::from_secs(30));
        DataParallel::new(Group::init(Backend::Ring, false, watchdog).unwrap(), watchdog)
    }

    #[test]
    fn one_rank_takes_the_whole_batch_and_sums_to_itself() -> Result<(), DistributedError> {
        let parallel = group_of_one();
        assert!(parallel.is_leader());
        let batch = [5, 3, 9];
        assert_eq!(parallel.shard(&batch), (&batch[..], 1.0));
        let gradients: FlattenedModuleParam = [
            (Rc::from("b"), Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2])),
            (Rc::from("a"), Array::from_slice(&[5.0f32], &[1])),
        ]
        .into_iter()
        .collect();
        let (loss, summed) = parallel.all_sum_gradients(&Array::from_f32(0.5), gradients, 0.25)?;
        assert_eq!(loss.item_exact::<f32>(), 0.125);
        assert_eq!(summed["b"].shape(), &[2, 2]);
        assert_eq!(summed["b"].as_slice::<f32>(), &[0.25, 0.5, 0.75, 1.0]);
        assert_eq!(summed["a"].as_slice::<f32>(), &[1.25]);
        let stats = parallel.stats();
        assert_eq!((stats.ranks, stats.steps, stats.bytes_per_step), (1, 1, 4 * 7));
        Ok(())
    }

    #[test]
    fn one_rank_gathers_and_shares_its_own_bytes() -> Result<(), DistributedError> {
        let parallel = group_of_one();
        assert_eq!(parallel.all_gather_bytes("test", b"abc")?, [b"abc".to_vec()]);
        assert_eq!(parallel.share_from_leader("test", b"")?, Vec::<u8>::new());
        Ok(())
    }

    /// The bytes rank `rank` sends in [`bytes_worker`]: lengths that differ (none for rank 1).
    fn payload(rank: usize) -> Vec<u8> {
        let len = if rank == 1 { 0 } else { 5 + 100_003 * rank };
        (0..len).map(|i| (i * 7 + rank) as u8).collect()
    }

    /// A rank of [`ranks_exchange_bytes_exactly`].
    #[test]
    #[ignore = "a rank started by ranks_exchange_bytes_exactly"]
    fn bytes_worker() -> Result<(), DistributedError> {
        if !test_ranks::is_worker() {
            return Ok(());
        }
        let watchdog = Watchdog::new(Duration::from_secs(60));
        let parallel = DataParallel::new(Group::init(Backend::Ring, true, watchdog)?, watchdog);
        let (rank, size) = (parallel.group().rank(), parallel.group().size());
        let parts = parallel.all_gather_bytes("test", &payload(rank))?;
        assert_eq!(parts, (0..size).map(payload).collect::<Vec<_>>());
        // rank 0's megabyte reaches every rank; what the others pass is not sent
        let leader: Vec<u8> = (0..1 << 20).map(|i: usize| (i % 251) as u8).collect();
        let mine = if rank == 0 { leader.clone() } else { vec![9; 17] };
        assert_eq!(parallel.share_from_leader("test", &mine)?, leader);
        println!("{} rank {rank} of {size} received every part", test_ranks::RESULT);
        Ok(())
    }

    #[test]
    fn ranks_exchange_bytes_exactly() {
        let results =
            test_ranks::run("model::distributed::data_parallel::tests::bytes_worker", 3, Duration::from_secs(120));
        assert_eq!(results.len(), 3, "{results:?}");
    }

    /// A rank of [`all_sum_figures`]: the mean time of an all_sum of the default model's
    /// gradient buffer (114 181 f32) after 5 warm-up sums.
    #[test]
    #[ignore = "a rank started by all_sum_figures"]
    fn all_sum_worker() -> Result<(), DistributedError> {
        if !test_ranks::is_worker() {
            return Ok(());
        }
        let group = Group::init(Backend::Ring, true, Watchdog::new(Duration::from_secs(60)))?;
        let buffer = Array::ones::<f32>(&[114_181])?;
        let mut seconds = Vec::new();
        for round in 0..55 {
            let started = Instant::now();
            let summed = group.all_sum(&buffer)?;
            transforms::eval([&summed])?;
            if round >= 5 {
                seconds.push(started.elapsed().as_secs_f64());
            }
            assert_eq!(summed.try_index(0)?.item_exact::<f32>(), group.size() as f32);
        }
        seconds.sort_by(f64::total_cmp);
        let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
        println!("{} median {:.2} ms mean {:.2} ms", test_ranks::RESULT, 1e3 * seconds[seconds.len() / 2], 1e3 * mean);
        Ok(())
    }

    /// `cargo test --lib -- --ignored --nocapture all_sum_figures`: all_sum time of one
    /// training step's buffer (456 724 bytes) on 2 and 4 local ranks.
    #[test]
    #[ignore = "prints figures"]
    fn all_sum_figures() {
        for ranks in [2, 4] {
            let results = test_ranks::run(
                "model::distributed::data_parallel::tests::all_sum_worker",
                ranks,
                Duration::from_secs(300),
            );
            eprintln!("{ranks} ranks: {results:?}");
        }
    }
}
