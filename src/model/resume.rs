//! The resumable state of a training run, saved at the end of every epoch by
//! [`train_checkpointed`](crate::model::train::train_checkpointed) so that an interrupted run
//! can continue exactly where it stopped.
//!
//! # Layout
//! One folder (the `energy train` command uses `<model dir>/resume/`) holding:
//! - `state.json`: `{"format_version": 1, "fingerprint": …, "progress": Progress, "weights": …,
//!   "optimizer": …, "best_weights": …}`. [`Progress`] is everything besides tensors: epochs
//!   done, optimizer steps taken (the position in the learning-rate schedule), the SplitMix64
//!   shuffle state and the current window order, the early-stopping state (best epoch, its
//!   loss, epochs since) and the per-epoch reports so far. The fingerprint identifies the run
//!   (see [`Fingerprint`]).
//! - `weights-eNNNN.safetensors`: the model's weights after epoch NNNN.
//! - `optimizer-eNNNN.safetensors`: the AdamW moments after epoch NNNN, keys `<param>.0` (first
//!   moment) and `<param>.1` (second moment), mlx-rs's own optimizer-state layout. mlx-rs's
//!   AdamW keeps no step count (it has no bias correction); the step count is
//!   `Progress::step`, which also drives the schedule.
//! - `best_weights` is a pointer: the name of the `weights-eNNNN.safetensors` file of the best
//!   epoch so far, which is kept for as long as that epoch stays the best.
//!
//! Every file is written atomically with [`write_atomic`] (temporary file, fsync, rename, fsync
//! of the folder); `state.json` is written last and is the commit point: it names the tensor
//! files of its own epoch (new names each epoch), so a crash at any moment leaves either the
//! previous epoch's complete state or the new one. Files that `state.json` does not name are
//! removed after each save.
//!
//! In a data-parallel run only rank 0 saves, and [`load_shared`] resumes every rank from rank 0's
//! folder: rank 0 sends its files to the others through the group (no shared file system), and
//! the ranks check that they restored the same state.
use crate::ingest::IngestError;
use crate::ingest::store::write_atomic;
use crate::model::checkpoint::{self, write_safetensors};
use crate::model::distributed::{DataParallel, DistributedError};
use crate::model::train::types::{Progress, TrainConfig, TrainData};
use crate::model::transformer::{Forecaster, ForecasterConfig};
use mlx_rs::Array;
use mlx_rs::error::Exception;
use mlx_rs::module::{FlattenedModuleParam, ModuleParameters};
use mlx_rs::optimizers::{OptimizerState, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The state folder inside a model folder, as `energy train` uses it.
pub const RESUME_DIR: &str = "resume";
/// The commit file of a state folder.
pub const STATE_FILE: &str = "state.json";
/// The `format_version` this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// AdamW's per-parameter state: (first moment, second moment).
pub type OptimizerMoments = State<(Array, Array)>;

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("no resumable training state in `{}`: nothing to resume", dir.display())]
    Missing { dir: PathBuf },
    #[error("the training state in `{}` belongs to a run with other data or settings ({what})", dir.display())]
    Mismatch { dir: PathBuf, what: String },
    #[error("unsupported training-state format_version {found} in `{}` (this build reads {FORMAT_VERSION})", path.display())]
    UnsupportedVersion { path: PathBuf, found: u64 },
    #[error("cannot parse `{}`", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot serialize the training state for `{}`", path.display())]
    Serialize { path: PathBuf, source: serde_json::Error },
    #[error("inconsistent training state in `{}`: {message}", path.display())]
    Inconsistent { path: PathBuf, message: String },
    #[error("cannot access `{}`", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write `{}`", path.display())]
    Write { path: PathBuf, source: IngestError },
    #[error("cannot read or write tensors `{}`: {message}", path.display())]
    Tensors { path: PathBuf, message: String },
    #[error("tensors `{}` do not match the model: {message}", path.display())]
    TensorsMismatch { path: PathBuf, message: String },
    #[error("mlx: {}", .0.what())]
    Mlx(#[from] Exception),
    /// Another rank of a data-parallel run could not resume (rank 0: it has no state, or
    /// another run's); that rank prints its own error too.
    #[error("rank {rank}: {message}")]
    OnRank { rank: usize, message: String, bad_input: bool },
    /// The ranks of a data-parallel run restored different states.
    #[error("the ranks restored different training states: {0}")]
    Disagree(String),
    #[error("cannot read the training state rank 0 sent: {0}")]
    Shared(String),
    #[error(transparent)]
    Distributed(#[from] DistributedError),
}

impl ResumeError {
    /// True for the errors that are the caller's choice rather than a failure: no state to
    /// resume, or a state of another run.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Missing { .. } | Self::Mismatch { .. } | Self::OnRank { bad_input: true, .. })
    }

    fn failure(&self) -> Failure {
        Failure { message: self.to_string(), bad_input: self.is_bad_input() }
    }
}

/// What identifies a run: the training settings (epochs, batch size, learning rate and
/// schedule, clipping, patience, seed), the model's config, a digest of the training and
/// validation windows (count and CRC-32 of the f32 bits of inputs and targets), and whatever
/// the caller adds as `provenance` (`energy train`: source, region, range, split, scaler,
/// feature names, protocol). Resuming is refused unless all of it is equal.
///
/// serde_json (without its `float_roundtrip` feature) does not read every float back
/// bit-exactly, so the fingerprint is compared as text parsed once: `state.json` holds the
/// exact value, and a fresh fingerprint is compared after one trip through text, which is the
/// same parse of the same text.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// Written to `state.json`.
    exact: Value,
    /// Compared with what `state.json` holds.
    parsed: Value,
}

#[derive(Serialize)]
struct FingerprintFields<'a> {
    training: &'a TrainConfig,
    model: &'a ForecasterConfig,
    data: DataDigest,
    provenance: &'a Value,
}

#[derive(Serialize)]
struct DataDigest {
    train_windows: usize,
    train_crc32: String,
    validation_windows: usize,
    validation_crc32: String,
}

impl Fingerprint {
    pub fn new(
        training: &TrainConfig,
        model: &ForecasterConfig,
        train: &TrainData,
        validation: &TrainData,
        provenance: &Value,
    ) -> Self {
        let data = DataDigest {
            train_windows: train.count,
            train_crc32: crc32(train),
            validation_windows: validation.count,
            validation_crc32: crc32(validation),
        };
        let fields = FingerprintFields { training, model, data, provenance };
        // Plain data with string keys: serializing it and parsing it back cannot fail.
        let exact = serde_json::to_value(&fields).unwrap_or(Value::Null);
        let parsed = serde_json::from_str(&exact.to_string()).unwrap_or(Value::Null);
        Self { exact, parsed }
    }

    /// "path: saved → now" for up to five fields that differ.
    fn differences(&self, saved: &Value) -> String {
        let mut found = Vec::new();
        differences("", saved, &self.parsed, &mut found);
        let count = found.len();
        found.truncate(5);
        let more = if count > 5 { format!("; and {} more", count - 5) } else { String::new() };
        format!("{}{more}", found.join("; "))
    }
}

/// CRC-32 of the windows' f32 bit patterns (inputs, then targets).
fn crc32(data: &TrainData) -> String {
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = Vec::with_capacity(4 * 4096);
    for values in [data.inputs, data.targets] {
        for chunk in values.chunks(4096) {
            buffer.clear();
            for value in chunk {
                buffer.extend_from_slice(&value.to_bits().to_le_bytes());
            }
            hasher.update(&buffer);
        }
    }
    format!("{:08x}", hasher.finalize())
}

fn differences(path: &str, saved: &Value, now: &Value, found: &mut Vec<String>) {
    match (saved, now) {
        (Value::Object(old), Value::Object(new)) => {
            let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                let inner = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                differences(&inner, old.get(key).unwrap_or(&Value::Null), new.get(key).unwrap_or(&Value::Null), found);
            }
        }
        _ if saved != now => found.push(format!("{path}: {} → {}", short(saved), short(now))),
        _ => {}
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 48 { text } else { format!("{}…", text.chars().take(47).collect::<String>()) }
}

/// What `state.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format_version: u64,
    fingerprint: Value,
    progress: Progress,
    /// The weights after `progress.epoch`.
    weights: String,
    /// The AdamW moments after `progress.epoch`.
    optimizer: String,
    /// The weights of the best epoch (a `weights-eNNNN.safetensors` of this folder).
    best_weights: Option<String>,
}

/// A state read back by [`load`], every tensor evaluated (so the files may go).
pub struct Restored {
    pub progress: Progress,
    pub weights: FlattenedModuleParam,
    pub optimizer: OptimizerMoments,
    /// The best epoch's weights, when there is a best epoch.
    pub best_weights: Option<FlattenedModuleParam>,
}

/// True when `dir` holds a saved state.
pub fn exists(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// The `provenance` the state in `dir` was saved with (the caller's part of its
/// [`Fingerprint`]), e.g. to resume over the same data range.
pub fn saved_provenance(dir: &Path) -> Result<Value, ResumeError> {
    let path = dir.join(STATE_FILE);
    if !path.is_file() {
        return Err(ResumeError::Missing { dir: dir.to_path_buf() });
    }
    let text = fs::read_to_string(&path).map_err(|source| ResumeError::Io { path: path.clone(), source })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| ResumeError::Parse { path, source })?;
    Ok(value.get("fingerprint").and_then(|fingerprint| fingerprint.get("provenance")).cloned().unwrap_or(Value::Null))
}

/// Remove the state folder (nothing to do when it does not exist).
pub fn clear(dir: &Path) -> Result<(), ResumeError> {
    match fs::remove_dir_all(dir) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(ResumeError::Io { path: dir.to_path_buf(), source })
        }
        _ => Ok(()),
    }
}

fn weights_name(epoch: usize) -> String {
    format!("weights-e{epoch:04}.safetensors")
}

fn optimizer_name(epoch: usize) -> String {
    format!("optimizer-e{epoch:04}.safetensors")
}

/// Save the state after `progress.epoch`: the model's current weights, the optimizer's
/// moments and `progress` (whose `best` points at that epoch's weights file, written then).
pub fn save(
    dir: &Path,
    fingerprint: &Fingerprint,
    progress: &Progress,
    model: &Forecaster,
    optimizer: &OptimizerMoments,
) -> Result<(), ResumeError> {
    fs::create_dir_all(dir).map_err(|source| ResumeError::Io { path: dir.to_path_buf(), source })?;
    let weights = weights_name(progress.epoch);
    let optimizer_file = optimizer_name(progress.epoch);
    let best_weights = progress.best.map(|best| weights_name(best.epoch));
    if let Some(name) = &best_weights
        && !dir.join(name).is_file()
        && *name != weights
    {
        return Err(ResumeError::Inconsistent {
            path: dir.to_path_buf(),
            message: format!("the best epoch's weights `{name}` are missing"),
        });
    }

    let parameters = model.parameters().flatten();
    write_tensors(dir, &weights, parameters.iter().map(|(key, value)| (key.to_string(), *value)))?;
    let mut keys: Vec<&Rc<str>> = optimizer.keys().collect();
    keys.sort();
    let moments = keys.into_iter().flat_map(|key| {
        let (first, second) = &optimizer[key];
        [(format!("{key}.0"), first), (format!("{key}.1"), second)]
    });
    write_tensors(dir, &optimizer_file, moments)?;

    let file = StateFile {
        format_version: u64::from(FORMAT_VERSION),
        fingerprint: fingerprint.exact.clone(),
        progress: progress.clone(),
        weights,
        optimizer: optimizer_file,
        best_weights,
    };
    let state_path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(&file)
        .map_err(|source| ResumeError::Serialize { path: state_path.clone(), source })?;
    write_atomic(&state_path, text.as_bytes()).map_err(|source| ResumeError::Write { path: state_path, source })?;

    // What the new state does not name: the previous epoch's files, temporaries of a crash.
    let keep: BTreeSet<&str> =
        [Some(STATE_FILE), Some(file.weights.as_str()), Some(file.optimizer.as_str()), file.best_weights.as_deref()]
            .into_iter()
            .flatten()
            .collect();
    let entries = fs::read_dir(dir).map_err(|source| ResumeError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !keep.contains(name.to_string_lossy().as_ref()) && entry.path().is_file() {
            fs::remove_file(entry.path()).map_err(|source| ResumeError::Io { path: entry.path(), source })?;
        }
    }
    Ok(())
}

/// Read the state in `dir`, refusing one of another run (its fingerprint differs from
/// `fingerprint`), of another format version, or with tensors that do not fit `model`.
pub fn load(dir: &Path, fingerprint: &Fingerprint, model: &Forecaster) -> Result<Restored, ResumeError> {
    load_from(Folder { files: dir, shown: dir }, fingerprint, model)
}

/// Where [`load_from`] reads a state's files, and the folder its errors name: the same folder,
/// except on a rank that received rank 0's files into a temporary one.
#[derive(Clone, Copy)]
struct Folder<'a> {
    files: &'a Path,
    shown: &'a Path,
}

fn load_from(folder: Folder, fingerprint: &Fingerprint, model: &Forecaster) -> Result<Restored, ResumeError> {
    let state_path = folder.shown.join(STATE_FILE);
    let read_path = folder.files.join(STATE_FILE);
    if !read_path.is_file() {
        return Err(ResumeError::Missing { dir: folder.shown.to_path_buf() });
    }
    let text = fs::read_to_string(&read_path).map_err(|source| ResumeError::Io { path: state_path.clone(), source })?;
    let value: Value =
        serde_json::from_str(&text).map_err(|source| ResumeError::Parse { path: state_path.clone(), source })?;
    match value.get("format_version").and_then(Value::as_u64) {
        Some(version) if version == u64::from(FORMAT_VERSION) => {}
        Some(found) => return Err(ResumeError::UnsupportedVersion { path: state_path, found }),
        None => {
            let source = <serde_json::Error as serde::de::Error>::custom("missing or non-integer `format_version`");
            return Err(ResumeError::Parse { path: state_path, source });
        }
    }
    let file: StateFile =
        serde_json::from_value(value).map_err(|source| ResumeError::Parse { path: state_path.clone(), source })?;
    if file.fingerprint != fingerprint.parsed {
        return Err(ResumeError::Mismatch {
            dir: folder.shown.to_path_buf(),
            what: fingerprint.differences(&file.fingerprint),
        });
    }
    let progress = file.progress;
    let inconsistent = |message: String| ResumeError::Inconsistent { path: state_path.clone(), message };
    if progress.epochs.len() != progress.epoch
        || progress.epochs.iter().enumerate().any(|(index, record)| record.epoch != index + 1)
    {
        return Err(inconsistent(format!("{} epoch reports for {} epochs", progress.epochs.len(), progress.epoch)));
    }
    let mut sorted = progress.order.clone();
    sorted.sort_unstable();
    if sorted.iter().enumerate().any(|(index, window)| index != *window) {
        return Err(inconsistent("the window order is not a permutation of the windows".into()));
    }
    if progress.best.is_some_and(|best| best.epoch == 0 || best.epoch > progress.epoch)
        || progress.best.is_some() != file.best_weights.is_some()
    {
        return Err(inconsistent(format!("best epoch {:?} after {} epochs", progress.best, progress.epoch)));
    }
    for name in [Some(&file.weights), Some(&file.optimizer), file.best_weights.as_ref()].into_iter().flatten() {
        if !is_plain_name(name) {
            return Err(inconsistent(format!("`{name}` is not a file of the state folder")));
        }
    }

    let weights = read_weights(folder, &file.weights, model)?;
    let optimizer = read_moments(folder, &file.optimizer, model)?;
    let best_weights = match &file.best_weights {
        Some(name) if *name == file.weights => Some(weights.clone()),
        Some(name) => Some(read_weights(folder, name, model)?),
        None => None,
    };
    Ok(Restored { progress, weights, optimizer, best_weights })
}

/// A file name inside the state folder (no separator, not hidden).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.')
}

/// Load a safetensors file and evaluate every tensor (MLX loads lazily from the file, which a
/// later save may remove).
fn read_tensors(folder: Folder, name: &str) -> Result<HashMap<String, Array>, ResumeError> {
    let (path, shown) = (folder.files.join(name), folder.shown.join(name));
    if !path.is_file() {
        return Err(ResumeError::Tensors { path: shown, message: "the file does not exist".into() });
    }
    let tensors = Array::load_safetensors(&path)
        .map_err(|error| ResumeError::Tensors { path: shown, message: error.to_string() })?;
    mlx_rs::transforms::eval(tensors.values())?;
    Ok(tensors)
}

fn read_weights(folder: Folder, name: &str, model: &Forecaster) -> Result<FlattenedModuleParam, ResumeError> {
    checkpoint::check_weights(model, read_tensors(folder, name)?)
        .map_err(|message| ResumeError::TensorsMismatch { path: folder.shown.join(name), message })
}

/// AdamW moments, each of its parameter's shape, for parameters of `model` only.
fn read_moments(folder: Folder, name: &str, model: &Forecaster) -> Result<OptimizerMoments, ResumeError> {
    let mismatch = |message: String| ResumeError::TensorsMismatch { path: folder.shown.join(name), message };
    let moments =
        OptimizerMoments::unflatten(read_tensors(folder, name)?).map_err(|error| mismatch(error.to_string()))?;
    let parameters = model.parameters().flatten();
    let mut keys: Vec<&Rc<str>> = moments.keys().collect();
    keys.sort();
    for key in keys {
        let (first, second) = &moments[key];
        match parameters.get(key) {
            None => return Err(mismatch(format!("moments of an unknown parameter `{key}`"))),
            Some(parameter) if first.shape() != parameter.shape() || second.shape() != parameter.shape() => {
                return Err(mismatch(format!(
                    "moments of `{key}` have shapes {:?} and {:?}, the parameter {:?}",
                    first.shape(),
                    second.shape(),
                    parameter.shape()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(moments)
}

/// [`load`] on every rank of a data-parallel run, from the state in rank 0's `dir` alone (every
/// rank calls it at the same point; the others' `dir` is not read): rank 0 reads the folder's
/// files and sends them to the other ranks through the group, so no file system need be shared;
/// each rank checks them against its own `fingerprint` (the same settings, model and windows)
/// and restores them; then the ranks compare what they hold ([`digest`]). Every rank returns the
/// same state, or fails: with its own error, another rank's ([`ResumeError::OnRank`]: rank 0's
/// when it has nothing to resume) or [`ResumeError::Disagree`].
pub fn load_shared(
    dir: &Path,
    fingerprint: &Fingerprint,
    model: &Forecaster,
    parallel: &DataParallel,
) -> Result<Restored, ResumeError> {
    let read = parallel.is_leader().then(|| read_files(dir));
    let package = read.as_ref().map_or_else(Vec::new, |read| Package::encode(dir, read));
    let received = parallel.share_from_leader("sharing the training state", &package)?;
    let outcome = match read {
        Some(Err(error)) => Err(error),
        Some(Ok(_)) => load(dir, fingerprint, model),
        None => load_package(&received, fingerprint, model),
    };
    let verdict = match &outcome {
        Ok(restored) => match digest(fingerprint, restored) {
            Ok(digest) => Verdict::Restored { digest },
            Err(error) => Verdict::Failed(ResumeError::from(error).failure()),
        },
        Err(error) => Verdict::Failed(error.failure()),
    };
    // Plain data: serializing it cannot fail.
    let mine = serde_json::to_vec(&verdict).unwrap_or_default();
    let verdicts = parallel.all_gather_bytes("comparing the restored training states", &mine)?;
    let restored = outcome?;
    let mut digests = Vec::with_capacity(verdicts.len());
    for (rank, bytes) in verdicts.iter().enumerate() {
        match serde_json::from_slice(bytes) {
            Ok(Verdict::Restored { digest }) => digests.push(digest),
            Ok(Verdict::Failed(Failure { message, bad_input })) => {
                return Err(ResumeError::OnRank { rank, message, bad_input });
            }
            Err(error) => return Err(ResumeError::Shared(format!("rank {rank}'s verdict: {error}"))),
        }
    }
    if digests.iter().any(|digest| *digest != digests[0]) {
        let ranks: Vec<String> =
            digests.iter().enumerate().map(|(rank, digest)| format!("rank {rank}: {digest}")).collect();
        return Err(ResumeError::Disagree(ranks.join("; ")));
    }
    Ok(restored)
}

/// An error as another rank reports it.
#[derive(Debug, Serialize, Deserialize)]
struct Failure {
    message: String,
    bad_input: bool,
}

/// The files of a state folder: each one's name and contents.
type Files<Contents> = Vec<(String, Contents)>;

/// One rank's outcome in [`load_shared`].
#[derive(Serialize, Deserialize)]
enum Verdict {
    Restored { digest: String },
    Failed(Failure),
}

/// What rank 0 sends in [`load_shared`]: a little-endian u64 length, this header as JSON, then
/// the files' bytes in the order of `files`.
#[derive(Serialize, Deserialize)]
struct Package {
    /// Rank 0's state folder, which the other ranks' errors name.
    dir: PathBuf,
    /// Why rank 0 has no state to send.
    error: Option<Failure>,
    /// Each file's name and length.
    files: Vec<(String, usize)>,
}

impl Package {
    fn encode(dir: &Path, read: &Result<Files<Vec<u8>>, ResumeError>) -> Vec<u8> {
        let (error, files) = match read {
            Ok(files) => (None, files.as_slice()),
            Err(error) => (Some(error.failure()), &[][..]),
        };
        let header = Package {
            dir: dir.to_path_buf(),
            error,
            files: files.iter().map(|(name, bytes)| (name.clone(), bytes.len())).collect(),
        };
        // Plain data: serializing it cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut bytes = Vec::with_capacity(8 + header.len() + files.iter().map(|(_, b)| b.len()).sum::<usize>());
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        for (_, contents) in files {
            bytes.extend_from_slice(contents);
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<(Self, Files<&[u8]>), ResumeError> {
        let short = || ResumeError::Shared(format!("{} bytes end early", bytes.len()));
        let length = bytes.get(..8).ok_or_else(short)?;
        let length = u64::from_le_bytes(length.try_into().map_err(|_| short())?) as usize;
        let header = bytes.get(8..8usize.saturating_add(length)).ok_or_else(short)?;
        let package: Package =
            serde_json::from_slice(header).map_err(|error| ResumeError::Shared(error.to_string()))?;
        let mut rest = &bytes[8 + length..];
        let mut files = Vec::with_capacity(package.files.len());
        for (name, len) in &package.files {
            if rest.len() < *len {
                return Err(short());
            }
            let (contents, after) = rest.split_at(*len);
            files.push((name.clone(), contents));
            rest = after;
        }
        Ok((package, files))
    }
}

/// The files of the state in `dir`: `state.json` and the tensor files it names.
fn read_files(dir: &Path) -> Result<Files<Vec<u8>>, ResumeError> {
    let state_path = dir.join(STATE_FILE);
    if !state_path.is_file() {
        return Err(ResumeError::Missing { dir: dir.to_path_buf() });
    }
    let text = fs::read(&state_path).map_err(|source| ResumeError::Io { path: state_path.clone(), source })?;
    let value: Value =
        serde_json::from_slice(&text).map_err(|source| ResumeError::Parse { path: state_path.clone(), source })?;
    let mut files = vec![(STATE_FILE.to_string(), text)];
    for key in ["weights", "optimizer", "best_weights"] {
        let Some(name) = value.get(key).and_then(Value::as_str) else { continue };
        if files.iter().any(|(known, _)| known == name) {
            continue;
        }
        if !is_plain_name(name) {
            return Err(ResumeError::Inconsistent {
                path: state_path,
                message: format!("`{name}` is not a file of the state folder"),
            });
        }
        let path = dir.join(name);
        let contents = fs::read(&path).map_err(|source| ResumeError::Io { path, source })?;
        files.push((name.to_string(), contents));
    }
    Ok(files)
}

/// Restore the state rank 0 sent ([`Package`]) from a temporary folder, which is removed after.
fn load_package(bytes: &[u8], fingerprint: &Fingerprint, model: &Forecaster) -> Result<Restored, ResumeError> {
    let (package, files) = Package::decode(bytes)?;
    if let Some(Failure { message, bad_input }) = package.error {
        return Err(ResumeError::OnRank { rank: 0, message, bad_input });
    }
    let temporary = tempfile::Builder::new()
        .prefix("energy-resume-")
        .tempdir()
        .map_err(|source| ResumeError::Io { path: std::env::temp_dir(), source })?;
    for (name, contents) in files {
        if !is_plain_name(&name) {
            return Err(ResumeError::Shared(format!("`{name}` is not a file of the state folder")));
        }
        let path = temporary.path().join(&name);
        fs::write(&path, contents).map_err(|source| ResumeError::Io { path, source })?;
    }
    load_from(Folder { files: temporary.path(), shown: &package.dir }, fingerprint, model)
}

/// What every rank of a resumed run must hold alike, as CRC-32s: the run's fingerprint, where it
/// stands (epoch, step, shuffle state, window order) and every tensor restored.
fn digest(fingerprint: &Fingerprint, restored: &Restored) -> Result<String, Exception> {
    let progress = &restored.progress;
    let order: Vec<u8> = progress.order.iter().flat_map(|window| (*window as u64).to_le_bytes()).collect();
    let mut tensors = crc32fast::Hasher::new();
    for weights in [Some(&restored.weights), restored.best_weights.as_ref()].into_iter().flatten() {
        let mut keys: Vec<&Rc<str>> = weights.keys().collect();
        keys.sort();
        for key in keys {
            hash_tensor(&mut tensors, key, &weights[key])?;
        }
    }
    let mut keys: Vec<&Rc<str>> = restored.optimizer.keys().collect();
    keys.sort();
    for key in keys {
        let (first, second) = &restored.optimizer[key];
        hash_tensor(&mut tensors, key, first)?;
        hash_tensor(&mut tensors, key, second)?;
    }
    Ok(format!(
        "fingerprint {:08x}, epoch {}, step {}, shuffle state {:016x}, window order {:08x}, tensors {:08x}",
        crc32fast::hash(fingerprint.parsed.to_string().as_bytes()),
        progress.epoch,
        progress.step,
        progress.shuffle_state,
        crc32fast::hash(&order),
        tensors.finalize()
    ))
}

fn hash_tensor(hasher: &mut crc32fast::Hasher, key: &str, tensor: &Array) -> Result<(), Exception> {
    hasher.update(key.as_bytes());
    let values = tensor.try_as_slice::<f32>().map_err(|error| Exception::custom(format!("`{key}`: {error:?}")))?;
    let bytes: Vec<u8> = values.iter().flat_map(|value| value.to_bits().to_le_bytes()).collect();
    hasher.update(&bytes);
    Ok(())
}

/// Write `name` in `dir` atomically ([`write_safetensors`]).
fn write_tensors<'a>(
    dir: &Path,
    name: &str,
    tensors: impl IntoIterator<Item = (String, &'a Array)>,
) -> Result<(), ResumeError> {
    let path = dir.join(name);
    write_safetensors(&path, tensors).map_err(|source| ResumeError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::train::types::{BestEpoch, EpochRecord};
    use crate::model::transformer::tests::tiny_config;

    fn settings() -> TrainConfig {
        TrainConfig {
            epochs: 4,
            batch_size: 2,
            learning_rate: 1e-3,
            weight_decay: 0.01,
            warmup_steps: 2,
            clip_norm: 1.0,
            patience: 2,
            seed: 5,
        }
    }

    fn fingerprint() -> Fingerprint {
        let data = TrainData { inputs: &[], targets: &[], count: 0 };
        Fingerprint::new(&settings(), &tiny_config(), &data, &data, &serde_json::json!({"scale": 0.1}))
    }

    /// Stand-in AdamW moments: (p / 2, p²) per parameter.
    fn moments(model: &Forecaster) -> Result<OptimizerMoments, Exception> {
        model
            .parameters()
            .flatten()
            .into_iter()
            .map(|(key, p)| Ok((key, (p.multiply(Array::from_f32(0.5))?, p.square()?))))
            .collect()
    }

    fn bits(array: &Array) -> Vec<u32> {
        let array = array.contiguous().unwrap();
        array.as_slice::<f32>().iter().map(|x| x.to_bits()).collect()
    }

    fn same_weights(weights: &FlattenedModuleParam, model: &Forecaster) -> bool {
        let parameters = model.parameters().flatten();
        weights.len() == parameters.len()
            && parameters.iter().all(|(key, value)| weights.get(key).is_some_and(|w| bits(w) == bits(value)))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn record(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: f64::from(0.1f32 * epoch as f32),
            validation_loss: f64::NAN,
            sequences_per_s: 100.0,
            seconds: 1.5,
            learning_rate: 1e-3,
        }
    }

    /// The best epoch's weights file is kept while that epoch stays the best and read back as
    /// the best weights; every file the state no longer names goes.
    #[test]
    fn best_weights_pointer_and_cleanup() -> Result<(), ResumeError> {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(RESUME_DIR);
        let config = tiny_config();
        let fingerprint = fingerprint();
        let models = [1, 2, 3, 4].map(|seed| Forecaster::with_seed(&config, seed).unwrap());

        let mut progress = Progress::new(5, 6, 12);
        progress.epoch = 1;
        progress.step = 3;
        progress.shuffle_state = u64::MAX - 7;
        progress.order = vec![3, 1, 4, 0, 5, 2];
        progress.epochs = vec![record(1)];
        progress.best = Some(BestEpoch { epoch: 1, loss: f64::from(0.25f32) });
        save(&state, &fingerprint, &progress, &models[0], &moments(&models[0])?)?;
        assert_eq!(names(&state), ["optimizer-e0001.safetensors", STATE_FILE, "weights-e0001.safetensors"]);

        // Epoch 2 is worse: its weights are saved beside the best (epoch 1) ones.
        progress.epoch = 2;
        progress.step = 6;
        progress.epochs.push(record(2));
        progress.since_best = 1;
        save(&state, &fingerprint, &progress, &models[1], &moments(&models[1])?)?;
        assert_eq!(
            names(&state),
            ["optimizer-e0002.safetensors", STATE_FILE, "weights-e0001.safetensors", "weights-e0002.safetensors"]
        );
        let restored = load(&state, &fingerprint, &models[3])?;
        assert!(same_weights(&restored.weights, &models[1]));
        assert!(same_weights(restored.best_weights.as_ref().unwrap(), &models[0]));
        assert!(!same_weights(&restored.weights, &models[0]));
        let expected = moments(&models[1])?;
        assert_eq!(restored.optimizer.len(), expected.len());
        for (key, (first, second)) in &expected {
            let (loaded_first, loaded_second) = &restored.optimizer[key];
            assert_eq!((bits(loaded_first), bits(loaded_second)), (bits(first), bits(second)), "{key}");
        }
        let loaded = &restored.progress;
        assert_eq!((loaded.epoch, loaded.step, loaded.shuffle_state), (2, 6, u64::MAX - 7));
        assert_eq!((&loaded.order, loaded.best, loaded.since_best), (&progress.order, progress.best, 1));
        assert!(loaded.epochs[1].validation_loss.is_nan());
        assert_eq!(loaded.epochs[1].train_loss, progress.epochs[1].train_loss);

        // Epoch 3 is the new best; leftovers of a crashed save go too.
        fs::write(state.join(".weights-e0009.1.tmp.safetensors"), b"partial").unwrap();
        progress.epoch = 3;
        progress.step = 9;
        progress.epochs.push(record(3));
        progress.since_best = 0;
        progress.best = Some(BestEpoch { epoch: 3, loss: 0.125 });
        save(&state, &fingerprint, &progress, &models[2], &moments(&models[2])?)?;
        assert_eq!(names(&state), ["optimizer-e0003.safetensors", STATE_FILE, "weights-e0003.safetensors"]);
        let restored = load(&state, &fingerprint, &models[3])?;
        assert!(same_weights(restored.best_weights.as_ref().unwrap(), &models[2]));

        clear(&state)?;
        assert!(!state.exists() && !exists(&state));
        clear(&state)?;
        Ok(())
    }

    /// What another rank restores from the files rank 0 sends is what rank 0 restores from its
    /// folder; a state of another run is refused naming rank 0's folder, and rank 0's own error
    /// (nothing to resume) reaches the other ranks as rank 0's.
    #[test]
    fn a_state_sent_as_bytes_restores_as_the_folder_does() -> Result<(), ResumeError> {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(RESUME_DIR);
        let config = tiny_config();
        let fingerprint = fingerprint();
        let models = [1, 2, 3].map(|seed| Forecaster::with_seed(&config, seed).unwrap());
        let mut progress = Progress::new(5, 6, 12);
        progress.epoch = 1;
        progress.step = 3;
        progress.epochs = vec![record(1)];
        progress.best = Some(BestEpoch { epoch: 1, loss: 0.25 });
        save(&state, &fingerprint, &progress, &models[0], &moments(&models[0])?)?;
        progress.epoch = 2;
        progress.step = 6;
        progress.shuffle_state = 99;
        progress.order = vec![5, 4, 3, 2, 1, 0];
        progress.epochs.push(record(2));
        progress.since_best = 1;
        save(&state, &fingerprint, &progress, &models[1], &moments(&models[1])?)?;

        let files = read_files(&state)?;
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [STATE_FILE, "weights-e0002.safetensors", "optimizer-e0002.safetensors", "weights-e0001.safetensors"]
        );
        let bytes = Package::encode(&state, &Ok(files));
        let sent = load_package(&bytes, &fingerprint, &models[2])?;
        let local = load(&state, &fingerprint, &models[2])?;
        assert_eq!(digest(&fingerprint, &sent)?, digest(&fingerprint, &local)?);
        assert!(same_weights(&sent.weights, &models[1]));
        assert!(same_weights(sent.best_weights.as_ref().unwrap(), &models[0]));
        let position = |p: &Progress| (p.epoch, p.step, p.shuffle_state, p.order.clone(), p.best, p.since_best);
        assert_eq!(position(&sent.progress), position(&progress));
        // the digest sees a tensor that differs
        let mut other = load(&state, &fingerprint, &models[2])?;
        other.best_weights = Some(other.weights.clone());
        assert_ne!(digest(&fingerprint, &other)?, digest(&fingerprint, &local)?);

        // on a group of one, the shared load is the plain one
        let watchdog = crate::model::distributed::Watchdog::new(std::time::Duration::from_secs(30));
        let group = crate::model::distributed::Group::init(crate::model::distributed::Backend::Ring, false, watchdog)?;
        let parallel = DataParallel::new(group, watchdog);
        let shared = load_shared(&state, &fingerprint, &models[2], &parallel)?;
        assert_eq!(digest(&fingerprint, &shared)?, digest(&fingerprint, &local)?);

        let data = TrainData { inputs: &[], targets: &[], count: 0 };
        let foreign = Fingerprint::new(&settings(), &config, &data, &data, &serde_json::json!({"scale": 0.2}));
        let error = load_package(&bytes, &foreign, &models[2]).err().unwrap();
        assert!(matches!(error, ResumeError::Mismatch { .. }), "{error}");
        assert!(error.to_string().contains(&state.display().to_string()), "rank 0's folder: {error}");

        let missing = dir.path().join("none");
        let bytes = Package::encode(&missing, &read_files(&missing));
        let error = load_package(&bytes, &fingerprint, &models[2]).err().unwrap();
        assert!(matches!(error, ResumeError::OnRank { rank: 0, .. }) && error.is_bad_input(), "{error}");
        assert!(error.to_string().starts_with("rank 0: no resumable training state"), "{error}");
        let error = load_shared(&missing, &fingerprint, &models[2], &parallel).err().unwrap();
        assert!(matches!(error, ResumeError::Missing { .. }), "{error}");

        let error = load_package(&bytes[..5], &fingerprint, &models[2]).err().unwrap();
        assert!(matches!(error, ResumeError::Shared(_)), "{error}");
        Ok(())
    }

    #[test]
    fn damaged_or_foreign_states_are_refused() -> Result<(), ResumeError> {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(RESUME_DIR);
        let config = tiny_config();
        let model = Forecaster::with_seed(&config, 1)?;
        let fingerprint = fingerprint();
        let error = load(&state, &fingerprint, &model).err().unwrap();
        assert!(matches!(error, ResumeError::Missing { .. }) && error.is_bad_input(), "{error}");

        let mut progress = Progress::new(5, 4, 8);
        progress.epoch = 1;
        progress.step = 2;
        progress.epochs = vec![record(1)];
        progress.best = Some(BestEpoch { epoch: 1, loss: 0.5 });
        save(&state, &fingerprint, &progress, &model, &moments(&model)?)?;

        // Tensors of another architecture.
        let wider = Forecaster::with_seed(&ForecasterConfig { d_model: 32, ..config.clone() }, 1)?;
        let error = load(&state, &fingerprint, &wider).err().unwrap();
        assert!(matches!(error, ResumeError::TensorsMismatch { .. }) && !error.is_bad_input(), "{error}");
        assert!(error.to_string().contains("has shape"), "{error}");

        // A provenance that differs.
        let data = TrainData { inputs: &[], targets: &[], count: 0 };
        let other = Fingerprint::new(&settings(), &config, &data, &data, &serde_json::json!({"scale": 0.2}));
        let error = load(&state, &other, &model).err().unwrap();
        assert!(error.to_string().contains("provenance.scale: 0.1 → 0.2"), "{error}");

        // A weights file that is not safetensors.
        let weights = state.join("weights-e0001.safetensors");
        let good = fs::read(&weights).unwrap();
        fs::write(&weights, b"garbage").unwrap();
        let error = load(&state, &fingerprint, &model).err().unwrap();
        assert!(matches!(error, ResumeError::Tensors { .. }), "{error}");
        fs::write(&weights, good).unwrap();
        assert!(load(&state, &fingerprint, &model).is_ok());

        // A state file that is not JSON, or names a file outside the folder.
        let path = state.join(STATE_FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("\"optimizer-e0001", "\"../optimizer-e0001")).unwrap();
        let error = load(&state, &fingerprint, &model).err().unwrap();
        assert!(matches!(error, ResumeError::Inconsistent { .. }), "{error}");
        fs::write(&path, "{ not json").unwrap();
        let error = load(&state, &fingerprint, &model).err().unwrap();
        assert!(matches!(error, ResumeError::Parse { .. }), "{error}");
        Ok(())
    }
}
