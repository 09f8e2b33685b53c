//! `energy bench`: end-to-end throughput on the user's own machine, with no network.
//!
//! # What it measures
//! 1. **Collection** records/s: the real [`EiaSource`] and [`Orchestrator`] collect into a
//!    scratch store from a [`LocalEiaServer`], an EIA API v2 look-alike on `127.0.0.1` in the
//!    same process. It answers with the real response shape, serves at most 5000 rows a page,
//!    adds a latency to every request (200 ms by default) and enforces the API's rate limits
//!    (a burst of 5 requests/s, 9000 requests an hour; beyond them it answers 429 with
//!    `Retry-After`). The client keeps to the same limits as against the real API, so the
//!    figure is bounded by the real API's ceiling: 5 requests/s × 5000 rows = 25,000 records/s
//!    ([`EIA_CEILING_RECORDS_PER_S`]). The earlier Python design reached 326.8 records/s
//!    ([`PYTHON_RECORDS_PER_S`]). The hourly limit does not bind within a run (a full run makes
//!    under 100 requests).
//! 2. **Featurization** rows/s ([`features::build`] of one synthetic region with temperature)
//!    and **windows**/s ([`make_windows`], 168 + 24 positions, stride 1).
//! 3. **Training** and **inference** sequences/s of the default forecaster (168 + 24 positions,
//!    d_model 64, 2 layers, 4 heads, batch 32) on those windows, each after an untimed warm-up.
//! 4. **Attention peak memory** by length, blockwise against the reference
//!    ([`attention_peak_memory`]).
//!
//! Featurization and windowing repeat until [`BenchConfig::min_repeat_seconds`] have passed,
//! so that short steps are not timed once. Ranges and seeds are fixed: the counts (rows,
//! requests, windows, sequences) are the same on every machine; the rates and memory are the
//! machine's. A [`Report`] also records the [`Machine`] and the [`Settings`], and [`compare`]
//! gives each figure's ratio to the same figure of an earlier report.
use crate::config::{DEFAULT_CHUNK_RETRIES, DEFAULT_CONCURRENCY, ModelConfig, RetryConfig, SyntheticConfig};
use crate::features::{self, FeatureConfig, Protocol, Scaler, WindowSpec, Windows, make_windows};
use crate::ingest::eia::{PAGE_ROWS, REGION_KINDS};
use crate::ingest::synthetic::{KIND_LOAD, KIND_TEMP};
use crate::ingest::{
    EiaKind, EiaSource, HttpClient, IngestError, Orchestrator, RateLimits, RetryPolicy, Secret, SeriesId, Source,
    Store, SyntheticSource,
};
use crate::model::memory::attention_peak_memory;
use crate::model::train::{self, TrainConfig, TrainData};
use crate::model::transformer::{Forecaster, ForecasterConfig};
use crate::report::{NoReporter, Reporter};
use crate::time::DateRange;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Records/s the earlier Python design collected from the EIA API.
pub const PYTHON_RECORDS_PER_S: f64 = 326.8;
/// The EIA API's requests per second (burst).
pub const EIA_REQUESTS_PER_SECOND: u32 = 5;
/// The EIA API's requests per hour.
pub const EIA_REQUESTS_PER_HOUR: u32 = 9_000;
/// The most records/s the EIA API can give: 5 requests/s × 5000 rows.
pub const EIA_CEILING_RECORDS_PER_S: f64 = EIA_REQUESTS_PER_SECOND as f64 * PAGE_ROWS as f64;
/// Latency the local server adds to each request unless told otherwise, ms.
pub const DEFAULT_LATENCY_MS: u64 = 200;
/// Most latency accepted, ms.
pub const MAX_LATENCY_MS: u64 = 10_000;
/// The folder reports go to unless told otherwise (relative to the working directory).
pub const DEFAULT_HISTORY: &str = "bench-history";
/// The mlx-rs version `Cargo.toml` pins (`=0.33.0`).
pub const MLX_RS_VERSION: &str = "0.33.0";
/// The API key sent to the local server (40 characters, as real keys).
const DUMMY_KEY: &str = "BENCHbenchBENCHbenchBENCHbenchBENCHbench";
/// The route the local server serves.
const REGION_DATA_PATH: &str = "/v2/electricity/rto/region-data/data/";
/// Respondents collected, in order: real balancing authority codes.
const RESPONDENTS: [&str; 10] = ["CISO", "ERCO", "PJM", "MISO", "NYIS", "ISNE", "SWPP", "BPAT", "FPL", "TVA"];
/// Every range ends on this day, so that runs are alike.
const LAST_DAY: (i32, u32, u32) = (2024, 12, 31);
/// Seed of the model's weights and shuffling.
const SEED: u64 = 7;
/// Most repetitions of a repeated step.
const MAX_RUNS: usize = 50;
/// Environment variables that change the figures, recorded when set.
const ENVIRONMENT: [&str; 6] = [
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MLX_BFS_MAX_WIDTH",
    "RAYON_NUM_THREADS",
    "POLARS_MAX_THREADS",
    "RUST_LOG",
];

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start the local EIA server")]
    Server(#[source] std::io::Error),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("collection from the local EIA server failed")]
    Ingest(#[from] IngestError),
    #[error("collection from the local EIA server is incomplete: {0}")]
    Collection(String),
    #[error("featurization failed")]
    Features(#[from] features::FeatureError),
    #[error("{stage} failed: {message}")]
    Model { stage: &'static str, message: String },
    #[error("cannot write the report to `{}`", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read the report `{}`", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{}` is not a bench report: {message}", path.display())]
    NotAReport { path: PathBuf, message: String },
}

impl BenchError {
    /// Caused by what the user gave (a report to compare with that is missing or unreadable).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, BenchError::Read { .. } | BenchError::NotAReport { .. })
    }
}

fn model_error(stage: &'static str) -> impl FnOnce(mlx_rs::error::Exception) -> BenchError {
    move |error| BenchError::Model { stage, message: error.what().to_string() }
}

// ---------------------------------------------------------------------------------------------
// Sizes

/// How much each step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchSize {
    /// The smallest run (tests): a few seconds.
    Smoke,
    /// `--quick`: under a minute.
    Quick,
    /// The default: a few minutes.
    Full,
}

impl BenchSize {
    pub fn as_str(self) -> &'static str {
        match self {
            BenchSize::Smoke => "smoke",
            BenchSize::Quick => "quick",
            BenchSize::Full => "full",
        }
    }
}

/// What a run does; [`BenchConfig::new`] gives the sizes of each [`BenchSize`].
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    pub size: BenchSize,
    /// Latency the local EIA server adds to every request.
    pub latency: Duration,
    /// EIA respondents collected (each with the kinds D, DF, NG and TI).
    pub respondents: usize,
    /// Days collected.
    pub collection_days: i64,
    /// Days of synthetic data featurized.
    pub feature_days: i64,
    /// Featurization and windowing repeat until this many seconds have passed.
    pub min_repeat_seconds: f64,
    /// Windows of the timed training epoch.
    pub train_sequences: usize,
    /// Windows of the timed inference.
    pub predict_sequences: usize,
    /// Attention lengths whose peak memory is measured.
    pub memory_lengths: Vec<i32>,
}

impl BenchConfig {
    pub fn new(size: BenchSize, latency: Duration) -> Self {
        match size {
            BenchSize::Smoke => Self {
                size,
                latency,
                respondents: 2,
                collection_days: 14,
                feature_days: 60,
                min_repeat_seconds: 0.0,
                train_sequences: 64,
                predict_sequences: 128,
                memory_lengths: vec![256, 512],
            },
            BenchSize::Quick => Self {
                size,
                latency,
                respondents: 5,
                collection_days: 90,
                feature_days: 366,
                min_repeat_seconds: 1.0,
                train_sequences: 256,
                predict_sequences: 1024,
                memory_lengths: vec![1024, 2048],
            },
            BenchSize::Full => Self {
                size,
                latency,
                respondents: RESPONDENTS.len(),
                collection_days: 365,
                feature_days: 5 * 365 + 2,
                min_repeat_seconds: 3.0,
                train_sequences: 2048,
                predict_sequences: 8192,
                memory_lengths: vec![1024, 2048, 4096, 8192],
            },
        }
    }

    /// The range of the last `days` days up to [`LAST_DAY`].
    fn days(days: i64) -> DateRange {
        let (year, month, day) = LAST_DAY;
        // invariant: a valid constant date, and the sizes above keep `days` small
        let last = NaiveDate::from_ymd_opt(year, month, day).expect("a valid date");
        let first = last - TimeDelta::days(days.max(1) - 1);
        DateRange::from_days(first, last).expect("a valid range")
    }
}

// ---------------------------------------------------------------------------------------------
// The report

/// One run's figures, with the machine and the settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub created: DateTime<Utc>,
    pub settings: Settings,
    pub machine: Machine,
    pub collection: CollectionFigures,
    pub features: FeatureFigures,
    pub model: ModelFigures,
    pub attention_memory: Vec<MemoryFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub size: BenchSize,
    /// `debug` or `release`: a debug build's figures are far lower.
    pub build: String,
    pub latency_ms: u64,
    /// The limits both the local server and the client keep to.
    pub requests_per_second: u32,
    pub requests_per_hour: u32,
    /// Chunks collected at once.
    pub concurrency: usize,
}

/// Where the figures were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cores: usize,
    pub physical_cores: Option<usize>,
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub arch: String,
    /// MLX's default device: `Device(gpu, 0)` on a Mac, `Device(cpu, 0)` on Linux.
    pub mlx_device: String,
    /// The BLAS MLX calls on the CPU: `OpenBLAS`, `reference BLAS (mlx-cpu wheel)`, `Accelerate`.
    pub blas: String,
    /// The BLAS libraries mapped into the process (Linux).
    pub blas_libraries: Vec<String>,
    pub energy_version: String,
    pub mlx_rs_version: String,
    /// HEAD of the source tree the binary was built from, when it is still there.
    pub git_commit: Option<String>,
    /// Set variables that change the figures (thread counts, MLX scheduling).
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionFigures {
    pub respondents: Vec<String>,
    pub kinds: Vec<String>,
    pub range: String,
    pub rows: usize,
    /// Requests the client sent, retries included.
    pub requests: u32,
    pub retries: u32,
    /// Requests the server received.
    pub server_requests: u64,
    /// Requests the server refused with 429 (the client keeps to the limits: normally 0).
    pub rejected_429: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub ceiling_records_per_s: f64,
    pub python_records_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureFigures {
    pub range: String,
    pub rows: usize,
    pub build_runs: usize,
    pub build_seconds: f64,
    pub rows_per_s: f64,
    pub windows: usize,
    pub window_runs: usize,
    pub window_seconds: f64,
    pub windows_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFigures {
    pub positions: usize,
    pub n_features: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub batch_size: usize,
    pub train_sequences: usize,
    pub train_seconds: f64,
    pub train_sequences_per_s: f64,
    pub predict_sequences: usize,
    pub predict_seconds: f64,
    pub predict_sequences_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryFigures {
    pub length: i32,
    pub block_size: i32,
    pub blockwise_bytes: usize,
    pub reference_bytes: usize,
    /// blockwise / reference.
    pub ratio: f64,
}

/// The report file, versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum ReportFile {
    #[serde(rename = "1")]
    V1(Report),
}

/// What a figure is, for reading its ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FigureKind {
    /// The same on every machine for the same size (a ratio other than 1 means the runs differ).
    Count,
    /// More is better.
    Rate,
    /// Less is better.
    Memory,
}

/// A named figure of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub name: String,
    pub kind: FigureKind,
    pub unit: &'static str,
    pub value: f64,
}

impl Report {
    /// Every figure, named `section.figure` (memory: `attention.blockwise_bytes.L`).
    pub fn figures(&self) -> Vec<Figure> {
        let figure = |name: &str, kind, unit, value: f64| Figure { name: name.to_string(), kind, unit, value };
        let (c, f, m) = (&self.collection, &self.features, &self.model);
        let mut out = vec![
            figure("collection.rows", FigureKind::Count, "rows", c.rows as f64),
            figure("collection.requests", FigureKind::Count, "requests", f64::from(c.requests)),
            figure("collection.records_per_s", FigureKind::Rate, "records/s", c.records_per_s),
            figure("features.rows", FigureKind::Count, "rows", f.rows as f64),
            figure("features.rows_per_s", FigureKind::Rate, "rows/s", f.rows_per_s),
            figure("features.windows", FigureKind::Count, "windows", f.windows as f64),
            figure("features.windows_per_s", FigureKind::Rate, "windows/s", f.windows_per_s),
            figure("model.train_sequences", FigureKind::Count, "sequences", m.train_sequences as f64),
            figure("model.train_sequences_per_s", FigureKind::Rate, "sequences/s", m.train_sequences_per_s),
            figure("model.predict_sequences", FigureKind::Count, "sequences", m.predict_sequences as f64),
            figure("model.predict_sequences_per_s", FigureKind::Rate, "sequences/s", m.predict_sequences_per_s),
        ];
        for row in &self.attention_memory {
            out.push(figure(
                &format!("attention.blockwise_bytes.{}", row.length),
                FigureKind::Memory,
                "bytes",
                row.blockwise_bytes as f64,
            ));
            out.push(figure(
                &format!("attention.reference_bytes.{}", row.length),
                FigureKind::Memory,
                "bytes",
                row.reference_bytes as f64,
            ));
        }
        out
    }

    /// The report as written to a file.
    pub fn to_json(&self) -> serde_json::Value {
        // invariant: every member serializes (no maps with non-string keys; rates are finite)
        serde_json::to_value(ReportFile::V1(self.clone())).expect("a report serializes")
    }

    /// Read a report written by [`write_report`].
    pub fn read(path: &Path) -> Result<Report, BenchError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| BenchError::Read { path: path.to_owned(), source })?;
        let not_a_report = |message: String| BenchError::NotAReport { path: path.to_owned(), message };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| not_a_report(e.to_string()))?;
        match value.get("version") {
            Some(serde_json::Value::String(version)) if version == "1" => {}
            Some(version) => {
                return Err(not_a_report(format!("unknown report version {version} (this build reads 1)")));
            }
            None => return Err(not_a_report("no `version` member".into())),
        }
        let ReportFile::V1(report) = serde_json::from_value(value).map_err(|e| not_a_report(e.to_string()))?;
        Ok(report)
    }
}

/// Write `report` into `folder` (created if needed) as `energy-bench-<UTC time>-<size>.json`.
pub fn write_report(report: &Report, folder: &Path) -> Result<PathBuf, BenchError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| BenchError::Write { path, source }
    };
    std::fs::create_dir_all(folder).map_err(failed(folder))?;
    let stem = format!("energy-bench-{}-{}", report.created.format("%Y%m%dT%H%M%SZ"), report.settings.size.as_str());
    // invariant: a `serde_json::Value` always serializes
    let mut text = serde_json::to_string_pretty(&report.to_json()).expect("a JSON value serializes");
    text.push('\n');
    for attempt in 0.. {
        let name = if attempt == 0 { format!("{stem}.json") } else { format!("{stem}-{attempt}.json") };
        let path = folder.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                use std::io::Write as _;
                file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(failed(&path))?;
                return Ok(path);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {}
            Err(error) => return Err(failed(&path)(error)),
        }
    }
    // the loop returns at its 1001st attempt at the latest
    unreachable!("the loop returns")
}

/// Each figure of `now` beside the same figure of `earlier`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub file: String,
    pub created: DateTime<Utc>,
    pub size: BenchSize,
    pub build: String,
    pub cpu_model: String,
    pub figures: Vec<Ratio>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    pub name: String,
    pub kind: FigureKind,
    pub unit: &'static str,
    /// None when the earlier report lacks the figure.
    pub earlier: Option<f64>,
    pub now: f64,
    /// now / earlier; None when the earlier figure is missing or 0.
    pub ratio: Option<f64>,
}

/// Compare `now` with `earlier` (read from `file`), figure by figure.
pub fn compare(earlier: &Report, now: &Report, file: &Path) -> Comparison {
    let before: BTreeMap<String, f64> = earlier.figures().into_iter().map(|f| (f.name, f.value)).collect();
    let figures = now
        .figures()
        .into_iter()
        .map(|figure| {
            let earlier = before.get(&figure.name).copied();
            let ratio = earlier.filter(|e| *e != 0.0).map(|e| figure.value / e);
            Ratio { name: figure.name, kind: figure.kind, unit: figure.unit, earlier, now: figure.value, ratio }
        })
        .collect();
    Comparison {
        file: file.display().to_string(),
        created: earlier.created,
        size: earlier.settings.size,
        build: earlier.settings.build.clone(),
        cpu_model: earlier.machine.cpu_model.clone(),
        figures,
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// Run every step in `scratch` (an empty folder the caller removes), reporting each step's start
/// through `reporter` (`start` with 4 steps, a `message` and `advance(1, 0)` per step).
pub fn run(config: &BenchConfig, scratch: &Path, reporter: &dyn Reporter) -> Result<Report, BenchError> {
    let created = Utc::now();
    let model_config = ModelConfig::default();
    reporter.start("bench", 4);

    reporter.message(&format!(
        "bench 1/4: collecting {} respondents × {} kinds × {} days from a local EIA server ({} ms latency, {} requests/s)",
        config.respondents,
        REGION_KINDS.len(),
        config.collection_days,
        config.latency.as_millis(),
        EIA_REQUESTS_PER_SECOND
    ));
    let collection = bench_collection(config, &scratch.join("collection"))?;
    reporter.advance(1, 0);

    reporter.message(&format!("bench 2/4: featurizing {} days of synthetic data, making windows", config.feature_days));
    let (features, windows) = bench_features(config, &model_config, &scratch.join("features"))?;
    reporter.advance(1, 0);

    reporter.message(&format!(
        "bench 3/4: training on {} windows, predicting {}",
        config.train_sequences.min(windows.count),
        config.predict_sequences.min(windows.count)
    ));
    let model = bench_model(config, &model_config, &windows)?;
    drop(windows);
    reporter.advance(1, 0);

    reporter.message(&format!("bench 4/4: attention peak memory at lengths {:?}", config.memory_lengths));
    let block_size = i32::try_from(model_config.block_size).unwrap_or(64);
    let attention_memory = attention_peak_memory(&config.memory_lengths, block_size)
        .map_err(model_error("attention memory"))?
        .into_iter()
        .map(|row| MemoryFigures {
            length: row.length,
            block_size,
            blockwise_bytes: row.blockwise_bytes,
            reference_bytes: row.reference_bytes,
            ratio: row.blockwise_bytes as f64 / row.reference_bytes.max(1) as f64,
        })
        .collect();
    reporter.advance(1, 0);
    reporter.finish();

    Ok(Report {
        created,
        settings: Settings {
            size: config.size,
            build: if cfg!(debug_assertions) { "debug" } else { "release" }.to_string(),
            latency_ms: u64::try_from(config.latency.as_millis()).unwrap_or(u64::MAX),
            requests_per_second: EIA_REQUESTS_PER_SECOND,
            requests_per_hour: EIA_REQUESTS_PER_HOUR,
            concurrency: DEFAULT_CONCURRENCY,
        },
        machine: Machine::detect(),
        collection,
        features,
        model,
        attention_memory,
    })
}

/// `count / seconds`, finite.
fn rate(count: f64, seconds: f64) -> f64 {
    count / seconds.max(1e-9)
}

/// Run `step` until `min_seconds` have passed (at least once, at most [`MAX_RUNS`] times):
/// the runs, the seconds they took and the last result.
fn repeat<T, E>(min_seconds: f64, mut step: impl FnMut() -> Result<T, E>) -> Result<(usize, f64, T), E> {
    let started = Instant::now();
    let mut runs = 0;
    loop {
        let value = step()?;
        runs += 1;
        let seconds = started.elapsed().as_secs_f64();
        if seconds >= min_seconds || runs >= MAX_RUNS {
            return Ok((runs, seconds, value));
        }
    }
}

fn bench_collection(config: &BenchConfig, root: &Path) -> Result<CollectionFigures, BenchError> {
    let server = LocalEiaServer::start(ServerConfig { latency: config.latency, ..ServerConfig::default() })
        .map_err(BenchError::Server)?;
    let respondents: Vec<String> = RESPONDENTS.iter().take(config.respondents.max(1)).map(|r| r.to_string()).collect();
    let kinds: Vec<EiaKind> = REGION_KINDS.iter().map(|k| EiaKind::Region(k.to_string())).collect();
    let range = BenchConfig::days(config.collection_days);
    let store = Store::new(root);
    let _lock = store.lock()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(BenchError::Runtime)?;
    let started = Instant::now();
    let result = runtime.block_on(async {
        let limits = RateLimits::per_second_and_hour(EIA_REQUESTS_PER_SECOND, EIA_REQUESTS_PER_HOUR);
        let client = HttpClient::new(RetryPolicy::from(&RetryConfig::default()), limits)?;
        let source = EiaSource::new(&server.url(), Secret::new(DUMMY_KEY), &respondents, &kinds, client)?;
        let orchestrator = Orchestrator {
            store: &store,
            concurrency: DEFAULT_CONCURRENCY,
            chunk_retries: DEFAULT_CHUNK_RETRIES,
            reporter: &NoReporter,
            now: Utc::now(),
        };
        orchestrator.collect(&source, range).await
    })?;
    let seconds = started.elapsed().as_secs_f64();
    drop(runtime);
    let stats = server.stop();
    if let Some(chunk) = result.chunks.iter().find(|c| c.error.is_some()) {
        return Err(BenchError::Collection(format!(
            "{} of {} chunks failed, the first {}: {}",
            result.failed_chunks,
            result.chunks.len(),
            chunk.range,
            chunk.error.as_deref().unwrap_or_default()
        )));
    }
    let expected = respondents.len() * kinds.len() * usize::try_from(range.hours()).unwrap_or_default();
    if result.rows != expected {
        return Err(BenchError::Collection(format!("stored {} rows where the server holds {expected}", result.rows)));
    }
    Ok(CollectionFigures {
        respondents,
        kinds: kinds.iter().map(EiaKind::series_kind).collect(),
        range: range.to_string(),
        rows: result.rows,
        requests: result.requests,
        retries: result.retries,
        server_requests: stats.requests,
        rejected_429: stats.rejected,
        seconds,
        records_per_s: rate(result.rows as f64, seconds),
        ceiling_records_per_s: EIA_CEILING_RECORDS_PER_S,
        python_records_per_s: PYTHON_RECORDS_PER_S,
    })
}

fn bench_features(
    config: &BenchConfig,
    model_config: &ModelConfig,
    root: &Path,
) -> Result<(FeatureFigures, Windows), BenchError> {
    let store = Store::new(root);
    let region = "SYN1".to_string();
    let source = SyntheticSource::new(std::slice::from_ref(&region), SyntheticConfig::default());
    let range = BenchConfig::days(config.feature_days);
    let batch = futures::executor::block_on(source.fetch(range))?;
    store.write_range(&batch.series, range)?;
    drop(batch);
    let load = SeriesId::new(source.name(), &region, KIND_LOAD);
    let temperature = SeriesId::new(source.name(), &region, KIND_TEMP);
    let feature_config = FeatureConfig::default();

    let (build_runs, build_seconds, table) = repeat(config.min_repeat_seconds, || {
        features::build(&store, &load, std::slice::from_ref(&temperature), Some(range), &feature_config)
    })?;
    let scaler = Scaler::fit_table(&table, 0..table.len() * 7 / 10)?;
    let spec = WindowSpec {
        context: model_config.context,
        horizon: model_config.horizon,
        stride: 1,
        protocol: Protocol::Next24h,
    };
    let (window_runs, window_seconds, windows) =
        repeat(config.min_repeat_seconds, || make_windows(&table, &scaler, &spec, 0..table.len()))?;
    let figures = FeatureFigures {
        range: range.to_string(),
        rows: table.len(),
        build_runs,
        build_seconds,
        rows_per_s: rate((table.len() * build_runs) as f64, build_seconds),
        windows: windows.count,
        window_runs,
        window_seconds,
        windows_per_s: rate((windows.count * window_runs) as f64, window_seconds),
    };
    Ok((figures, windows))
}

fn bench_model(
    config: &BenchConfig,
    model_config: &ModelConfig,
    windows: &Windows,
) -> Result<ModelFigures, BenchError> {
    let forecaster_config = ForecasterConfig::from_model_config(model_config, windows.n_features);
    if forecaster_config.positions != windows.positions || forecaster_config.horizon != windows.horizon {
        return Err(BenchError::Model {
            stage: "training",
            message: format!(
                "windows of {} positions and {} horizon hours do not fit the model's {} and {}",
                windows.positions, windows.horizon, forecaster_config.positions, forecaster_config.horizon
            ),
        });
    }
    let window_len = windows.positions * windows.n_features;
    let horizon = windows.horizon;
    let batch_size = model_config.batch_size.max(1);
    let train_count = config.train_sequences.min(windows.count);
    let predict_count = config.predict_sequences.min(windows.count);
    if train_count == 0 {
        return Err(BenchError::Model { stage: "training", message: "no windows to train on".into() });
    }
    let data = |count: usize| TrainData {
        inputs: &windows.inputs[..count * window_len],
        targets: &windows.targets[..count * horizon],
        count,
    };
    let none = TrainData { inputs: &[], targets: &[], count: 0 };
    let quantiles = forecaster_config.quantiles.clone();
    let train_config =
        TrainConfig { epochs: 1, warmup_steps: 1, patience: 0, ..TrainConfig::from_model_config(model_config, SEED) };
    let mut model = Forecaster::with_seed(&forecaster_config, SEED).map_err(model_error("training"))?;

    // an untimed warm-up batch, then one timed epoch
    train::train(&mut model, &train_config, &data(batch_size.min(train_count)), &none, &quantiles, &NoReporter)
        .map_err(model_error("training"))?;
    let started = Instant::now();
    train::train(&mut model, &train_config, &data(train_count), &none, &quantiles, &NoReporter)
        .map_err(model_error("training"))?;
    let train_seconds = started.elapsed().as_secs_f64();

    let predict = |model: &mut Forecaster, count: usize| {
        train::predict(
            model,
            &windows.inputs[..count * window_len],
            count,
            windows.positions,
            windows.n_features,
            batch_size,
        )
        .map_err(model_error("inference"))
    };
    predict(&mut model, batch_size.min(predict_count))?;
    let started = Instant::now();
    predict(&mut model, predict_count)?;
    let predict_seconds = started.elapsed().as_secs_f64();

    Ok(ModelFigures {
        positions: forecaster_config.positions,
        n_features: forecaster_config.n_features,
        d_model: forecaster_config.d_model,
        n_layers: forecaster_config.n_layers,
        n_heads: forecaster_config.n_heads,
        batch_size,
        train_sequences: train_count,
        train_seconds,
        train_sequences_per_s: rate(train_count as f64, train_seconds),
        predict_sequences: predict_count,
        predict_seconds,
        predict_sequences_per_s: rate(predict_count as f64, predict_seconds),
    })
}

// ---------------------------------------------------------------------------------------------
// The machine

impl Machine {
    /// What this process runs on.
    pub fn detect() -> Self {
        let logical_cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let (cpu_model, physical_cores, memory_bytes, os) = platform();
        let blas_libraries = blas_libraries();
        let blas = if cfg!(target_os = "macos") {
            "Accelerate".to_string()
        } else if blas_libraries.iter().any(|path| file_name(path).starts_with("libopenblas")) {
            "OpenBLAS".to_string()
        } else if blas_libraries.iter().any(|path| file_name(path).starts_with("libblas-")) {
            "reference BLAS (mlx-cpu wheel)".to_string()
        } else if let Some(path) = blas_libraries.first() {
            file_name(path).to_string()
        } else {
            "unknown".to_string()
        };
        let mlx_device = match mlx_rs::Device::try_default() {
            Ok(device) => device.to_string(),
            Err(error) => format!("unknown ({})", error.what()),
        };
        let environment =
            ENVIRONMENT.iter().filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?))).collect();
        Self {
            cpu_model,
            logical_cores,
            physical_cores,
            memory_bytes,
            os,
            arch: std::env::consts::ARCH.to_string(),
            mlx_device,
            blas,
            blas_libraries,
            energy_version: env!("CARGO_PKG_VERSION").to_string(),
            mlx_rs_version: MLX_RS_VERSION.to_string(),
            git_commit: git_commit(),
            environment,
        }
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Trimmed standard output of a command that succeeded.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program).args(args).stderr(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}

fn git_commit() -> Option<String> {
    command_output("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
}

/// CPU model, physical cores, memory and OS.
#[cfg(target_os = "linux")]
fn platform() -> (String, Option<usize>, Option<u64>, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (model, physical) = parse_cpuinfo(&cpuinfo);
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let release = std::fs::read_to_string("/etc/os-release").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
        Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|k| k.trim().to_string());
    let os = match (release, kernel) {
        (Some(release), Some(kernel)) => format!("{release} (Linux {kernel})"),
        (Some(release), None) => release,
        (None, Some(kernel)) => format!("Linux {kernel}"),
        (None, None) => "Linux".to_string(),
    };
    (model.unwrap_or_else(|| "unknown".into()), physical, memory, os)
}

#[cfg(target_os = "macos")]
fn platform() -> (String, Option<usize>, Option<u64>, String) {
    let model = command_output("sysctl", &["-n", "machdep.cpu.brand_string"]).unwrap_or_else(|| "unknown".into());
    let physical = command_output("sysctl", &["-n", "hw.physicalcpu"]).and_then(|n| n.parse().ok());
    let memory = command_output("sysctl", &["-n", "hw.memsize"]).and_then(|n| n.parse().ok());
    let os = command_output("sw_vers", &["-productVersion"]).map_or_else(|| "macOS".into(), |v| format!("macOS {v}"));
    (model, physical, memory, os)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn platform() -> (String, Option<usize>, Option<u64>, String) {
    ("unknown".into(), None, None, std::env::consts::OS.to_string())
}

/// The CPU model and the number of distinct (physical id, core id) pairs of `/proc/cpuinfo`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_cpuinfo(text: &str) -> (Option<String>, Option<usize>) {
    let mut model = None;
    let mut cores = std::collections::BTreeSet::new();
    for processor in text.split("\n\n") {
        let field = |name: &str| {
            processor.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        if model.is_none() {
            model = field("model name").or_else(|| field("Hardware")).or_else(|| field("Model"));
        }
        if let (Some(package), Some(core)) = (field("physical id"), field("core id")) {
            cores.insert((package, core));
        }
    }
    (model.filter(|m| !m.is_empty()), (!cores.is_empty()).then_some(cores.len()))
}

/// Paths of the BLAS libraries mapped into this process (`/proc/self/maps`; empty elsewhere).
fn blas_libraries() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for path in maps.lines().filter_map(|line| line.split_whitespace().nth(5)) {
        let name = file_name(path);
        let blas = ["libopenblas", "libblas", "libmkl_rt", "libblis", "libcblas"].iter().any(|p| name.starts_with(p));
        if blas && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The local EIA server

/// The local server's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Added to every answer.
    pub latency: Duration,
    /// Requests per second, also the burst (a token bucket).
    pub requests_per_second: u32,
    /// Requests in any sliding hour.
    pub requests_per_hour: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(DEFAULT_LATENCY_MS),
            requests_per_second: EIA_REQUESTS_PER_SECOND,
            requests_per_hour: EIA_REQUESTS_PER_HOUR,
        }
    }
}

/// What the local server saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    pub requests: u64,
    /// Answered 429.
    pub rejected: u64,
    /// Rows served in 200 answers.
    pub rows: u64,
}

/// An EIA API v2 look-alike on `127.0.0.1` (any free port), on its own thread: it serves
/// `GET /v2/electricity/rto/region-data/data/` as the real API does (see `shared/docs/apis.md`):
/// `total`, `value`, `offset` and `length` as strings, the "incomplete return" warning when
/// `total` exceeds 5000, pages of at most 5000 rows by `offset` and `length`, rows sorted by
/// period, respondent and type, the parameters echoed back (the key included). Values are a
/// deterministic function of respondent, type and hour. Every request needs an `api_key`
/// (403 `API_KEY_MISSING`), `frequency=hourly` (400 otherwise) and valid `start`/`end`;
/// missing facets mean every known respondent or type. Requests beyond the rate limits are
/// answered 429 `OVER_RATE_LIMIT` with `Retry-After`; every answer waits `latency` first.
/// Dropping it (or [`LocalEiaServer::stop`]) stops it.
pub struct LocalEiaServer {
    address: SocketAddr,
    state: Arc<ServerState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalEiaServer {
    pub fn start(config: ServerConfig) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let state = Arc::new(ServerState::new(config));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let served = state.clone();
        let thread = std::thread::Builder::new().name("local-eia-server".into()).spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, served, stopped).await,
                    Err(error) => tracing::error!(%error, "the local EIA server cannot listen"),
                }
            });
        })?;
        Ok(Self { address, state, stop: Some(stop), thread: Some(thread) })
    }

    /// The base URL to give [`EiaSource::new`].
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn stats(&self) -> ServerStats {
        self.state.stats()
    }

    /// Stop serving; what it saw.
    pub fn stop(mut self) -> ServerStats {
        self.shut_down();
        self.state.stats()
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LocalEiaServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.answer(request.uri()).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    if let Err(error) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                        tracing::debug!(%error, "local EIA server connection ended");
                    }
                });
            }
        }
    }
}

struct ServerState {
    config: ServerConfig,
    limiter: Mutex<Admission>,
    requests: AtomicU64,
    rejected: AtomicU64,
    rows: AtomicU64,
}

/// A token bucket of `per_second` tokens refilled at `per_second` a second, and the start
/// times of the requests admitted within the last hour.
struct Admission {
    tokens: f64,
    refilled: Instant,
    hour: VecDeque<Instant>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Admission {
    /// Admit a request now, or say how long to wait.
    fn admit(&mut self, now: Instant, per_second: u32, per_hour: u32) -> Result<(), Duration> {
        let per_second = f64::from(per_second.max(1));
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(per_second);
        self.refilled = now;
        while self.hour.front().is_some_and(|t| now.saturating_duration_since(*t) >= HOUR) {
            self.hour.pop_front();
        }
        if self.hour.len() >= per_hour.max(1) as usize {
            let oldest = self.hour.front().copied().unwrap_or(now);
            return Err((oldest + HOUR).saturating_duration_since(now));
        }
        if self.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second));
        }
        self.tokens -= 1.0;
        self.hour.push_back(now);
        Ok(())
    }
}

type Answer = hyper::Response<Full<Bytes>>;

impl ServerState {
    fn new(config: ServerConfig) -> Self {
        let admission = Admission {
            tokens: f64::from(config.requests_per_second.max(1)),
            refilled: Instant::now(),
            hour: VecDeque::new(),
        };
        Self {
            config,
            limiter: Mutex::new(admission),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> ServerStats {
        ServerStats {
            requests: self.requests.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
        }
    }

    async fn answer(&self, uri: &hyper::Uri) -> Answer {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let admitted = self.limiter.lock().unwrap_or_else(|e| e.into_inner()).admit(
            Instant::now(),
            self.config.requests_per_second,
            self.config.requests_per_hour,
        );
        let answer = match admitted {
            Err(wait) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                let body = r#"{"error":{"code":"OVER_RATE_LIMIT","message":"You have exceeded your rate limit. Try again later or contact us at https://api.data.gov/contact/ for assistance"}}"#;
                let mut answer = json_answer(429, body.to_string());
                if let Ok(value) = hyper::header::HeaderValue::from_str(&seconds.to_string()) {
                    answer.headers_mut().insert(hyper::header::RETRY_AFTER, value);
                }
                answer
            }
            Ok(()) => match page(uri) {
                Ok((body, rows)) => {
                    self.rows.fetch_add(rows, Ordering::Relaxed);
                    json_answer(200, body)
                }
                Err((status, body)) => json_answer(status, body),
            },
        };
        tokio::time::sleep(self.config.latency).await;
        answer
    }
}

fn json_answer(status: u16, body: String) -> Answer {
    let mut answer = hyper::Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    answer
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    answer
}

/// The EIA types of region-data and their names.
const TYPE_NAMES: [(&str, &str); 4] =
    [("D", "Demand"), ("DF", "Day-ahead demand forecast"), ("NG", "Net generation"), ("TI", "Total interchange")];

fn respondent_name(code: &str) -> String {
    let known = [
        ("BPAT", "Bonneville Power Administration"),
        ("CISO", "California Independent System Operator"),
        ("ERCO", "Electric Reliability Council of Texas, Inc."),
        ("FPL", "Florida Power & Light Co."),
        ("ISNE", "ISO New England"),
        ("MISO", "Midcontinent Independent System Operator, Inc."),
        ("NYIS", "New York Independent System Operator"),
        ("PJM", "PJM Interconnection, LLC"),
        ("SWPP", "Southwest Power Pool"),
        ("TVA", "Tennessee Valley Authority"),
    ];
    known.iter().find(|(c, _)| *c == code).map_or_else(|| format!("Respondent {code}"), |(_, name)| name.to_string())
}

/// A `start`/`end` hour: `YYYY-MM-DDTHH` or `YYYY-MM-DD` (hour 00).
fn parse_hour(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let full = if text.len() == 10 { format!("{text}T00") } else { text.to_string() };
    NaiveDateTime::parse_from_str(&format!("{full}:00"), "%Y-%m-%dT%H:%M").ok().map(|t| t.and_utc())
}

/// The answer to one admitted request: `(body, rows)`, or `(status, error body)`.
fn page(uri: &hyper::Uri) -> Result<(String, u64), (u16, String)> {
    let bad = |message: String| (400, serde_json::json!({ "error": message, "code": 400 }).to_string());
    if uri.path() != REGION_DATA_PATH && uri.path() != REGION_DATA_PATH.trim_end_matches('/') {
        return Err((404, r#"{"error":"Not found.","code":404}"#.to_string()));
    }
    let query = uri.query().unwrap_or_default();
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in url_pairs(query) {
        params.entry(key).or_default().push(value);
    }
    let one = |name: &str| params.get(name).and_then(|v| v.first()).map(String::as_str);
    let Some(api_key) = one("api_key").filter(|k| !k.is_empty()) else {
        return Err((
            403,
            r#"{"error":{"code":"API_KEY_MISSING","message":"No api_key was supplied.  Please register for one at https://www.eia.gov/opendata/register.php"}}"#.to_string(),
        ));
    };
    match one("frequency") {
        Some("hourly") => {}
        Some(other) => {
            return Err(bad(format!(
                "Invalid frequency '{other}' provided. The only valid frequencies for this route are 'hourly' and 'local-hourly'."
            )));
        }
        None => return Err(bad("Missing frequency.".into())),
    }
    let with_value = params.get("data[0]").is_some_and(|v| v.iter().any(|d| d == "value"));
    let (Some(start), Some(end)) = (one("start").and_then(parse_hour), one("end").and_then(parse_hour)) else {
        return Err(bad(format!(
            "Invalid start '{}' or end '{}' provided: use YYYY-MM-DDTHH.",
            one("start").unwrap_or(""),
            one("end").unwrap_or("")
        )));
    };
    let number = |name: &str, default: u64| match one(name) {
        None => Ok(default),
        Some(text) => text.parse::<u64>().map_err(|_| bad(format!("Invalid {name} '{text}' provided."))),
    };
    let offset = number("offset", 0)?;
    let length = number("length", PAGE_ROWS)?.min(PAGE_ROWS);
    let sorted = |name: &str, all: &[&str]| {
        let mut values: Vec<String> = match params.get(name) {
            Some(values) => values.clone(),
            None => all.iter().map(|s| s.to_string()).collect(),
        };
        values.sort();
        values.dedup();
        values
    };
    let respondents = sorted("facets[respondent][]", &RESPONDENTS);
    let types: Vec<String> = sorted("facets[type][]", &TYPE_NAMES.map(|(code, _)| code))
        .into_iter()
        .filter(|t| TYPE_NAMES.iter().any(|(code, _)| code == t))
        .collect();

    let hours = if end < start { 0 } else { u64::try_from((end - start).num_hours()).unwrap_or(0) + 1 };
    let per_hour = (respondents.len() * types.len()) as u64;
    let total = hours * per_hour;
    let first = offset.min(total);
    let last = (offset.saturating_add(length)).min(total);

    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
    let respondent_parts: Vec<(String, String, u64)> =
        respondents.iter().map(|r| (quoted(r), quoted(&respondent_name(r)), fnv(r))).collect();
    let type_parts: Vec<(String, String, usize)> = types
        .iter()
        .map(|t| {
            let index = TYPE_NAMES.iter().position(|(code, _)| code == t).unwrap_or(0);
            (quoted(t), quoted(TYPE_NAMES[index].1), index)
        })
        .collect();
    let mut data = String::with_capacity(((last - first) as usize) * 190);
    let mut period_hour = u64::MAX;
    let mut period = String::new();
    for i in first..last {
        let hour = i / per_hour;
        let r = ((i / types.len() as u64) % respondents.len() as u64) as usize;
        let t = (i % types.len() as u64) as usize;
        if hour != period_hour {
            period_hour = hour;
            period = (start + TimeDelta::hours(hour as i64)).format("%Y-%m-%dT%H").to_string();
        }
        let (code, name, seed) = &respondent_parts[r];
        let (type_code, type_name, type_index) = &type_parts[t];
        if i > first {
            data.push(',');
        }
        let hour_us = (start + TimeDelta::hours(hour as i64)).timestamp() / 3600;
        let _ = write!(
            data,
            r#"{{"period":"{period}","respondent":{code},"respondent-name":{name},"type":{type_code},"type-name":{type_name}"#
        );
        if with_value {
            let _ = write!(data, r#","value":"{}""#, value(*seed, *type_index, hour_us));
        }
        data.push_str(r#","value-units":"megawatthours"}"#);
    }
    let warnings = if total > PAGE_ROWS {
        r#""warnings":[{"warning":"incomplete return","description":"The API can only return 5000 rows in JSON format.  Please consider constraining your request with facet, start, or end, or using offset to paginate results."}],"#
    } else {
        ""
    };
    let echo = serde_json::json!({
        "api_key": api_key,
        "frequency": "hourly",
        "data": params.get("data[0]").cloned().unwrap_or_default(),
        "facets": { "respondent": respondents, "type": types },
        "start": one("start"),
        "end": one("end"),
        "sort": [{ "column": "period", "direction": "asc" }],
        "offset": offset.to_string(),
        "length": length.to_string(),
    });
    let body = format!(
        r#"{{"response":{{{warnings}"total":"{total}","dateFormat":"YYYY-MM-DD\"T\"HH24","frequency":"hourly","data":[{data}],"description":"Hourly demand, day-ahead demand forecast, net generation, and interchange by balancing authority.  \n    Source: Form EIA-930\n    Product: Hourly Electric Grid Monitor"}},"request":{{"command":"{REGION_DATA_PATH}","params":{echo}}},"apiVersion":"2.1.13","ExcelAddInVersion":"2.1.0"}}"#
    );
    Ok((body, last - first))
}

/// The body the local EIA-compatible server answers for `url` (criterion benches, tests):
/// `Err` holds the status and error body it would send.
pub fn eia_page_body(url: &str) -> Result<String, (u16, String)> {
    let uri: hyper::Uri = url.parse().map_err(|e| (400, format!("not a URI: {e}")))?;
    page(&uri).map(|(body, _)| body)
}

/// Decoded `key=value` pairs of a query string.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://localhost/?{query}"))
        .map(|url| url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// FNV-1a of a code: each respondent's own level.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A deterministic hourly value (MWh) for a respondent (`seed`), a type (index into
/// [`TYPE_NAMES`]) and an hour (hours since 1970): daily, weekly and yearly cycles plus noise.
fn value(seed: u64, type_index: usize, hour: i64) -> i64 {
    use std::f64::consts::TAU;
    let level = 2_000.0 + (seed % 58_000) as f64;
    let h = hour as f64;
    let daily = (TAU * (h - 7.0) / 24.0).sin();
    let weekly = (TAU * h / 168.0).cos();
    let yearly = (TAU * h / 8766.0).cos();
    let noise = |salt: u64| {
        let mut x = seed ^ (hour as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let demand = level * (1.0 + 0.15 * daily + 0.04 * weekly + 0.1 * yearly) * (1.0 + 0.02 * noise(1));
    let figure = match type_index {
        0 => demand,
        1 => demand * (1.0 + 0.06 * noise(2)),
        2 => demand * (1.02 + 0.1 * noise(3)),
        _ => demand * (0.02 + 0.1 * noise(3)),
    };
    figure.round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(server: &LocalEiaServer, query: &str) -> (u16, Option<String>, serde_json::Value) {
        let url = format!("{}{REGION_DATA_PATH}?{query}", server.url());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let response = reqwest::get(&url).await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body = response.text().await.unwrap();
            (status, retry_after, serde_json::from_str(&body).unwrap())
        })
    }

    fn fast() -> ServerConfig {
        ServerConfig { latency: Duration::ZERO, requests_per_second: 1000, requests_per_hour: 100_000 }
    }

    const QUERY: &str = "api_key=K&frequency=hourly&data%5B0%5D=value&facets%5Brespondent%5D%5B%5D=PJM\
        &facets%5Brespondent%5D%5B%5D=CISO&facets%5Btype%5D%5B%5D=D&facets%5Btype%5D%5B%5D=NG\
        &start=2024-01-01T01&end=2024-03-01T00";

    #[test]
    fn pages_have_the_real_shape() {
        let server = LocalEiaServer::start(fast()).unwrap();
        let (status, _, body) = get(&server, &format!("{QUERY}&offset=0&length=5000"));
        assert_eq!(status, 200, "{body}");
        // 60 days × 24 hours × 2 respondents × 2 types
        assert_eq!(body["response"]["total"], "5760");
        assert_eq!(body["response"]["warnings"][0]["warning"], "incomplete return");
        let data = body["response"]["data"].as_array().unwrap();
        assert_eq!(data.len(), 5000);
        assert_eq!(data[0]["period"], "2024-01-01T01");
        let order: Vec<(String, String)> = data[..4]
            .iter()
            .map(|r| (r["respondent"].as_str().unwrap().into(), r["type"].as_str().unwrap().into()))
            .collect();
        let expected = [("CISO", "D"), ("CISO", "NG"), ("PJM", "D"), ("PJM", "NG")];
        assert_eq!(order, expected.map(|(r, t)| (r.to_string(), t.to_string())));
        assert!(data[0]["value"].as_str().unwrap().parse::<i64>().unwrap() > 0);
        assert_eq!(data[4]["period"], "2024-01-01T02");
        assert_eq!(body["request"]["params"]["offset"], "0");
        let (_, _, rest) = get(&server, &format!("{QUERY}&offset=5000&length=5000"));
        let rest = rest["response"]["data"].as_array().unwrap();
        assert_eq!(rest.len(), 760);
        assert_eq!(rest.last().unwrap()["period"], "2024-03-01T00");
        // the same request gives the same values
        let (_, _, again) = get(&server, &format!("{QUERY}&offset=0&length=5000"));
        assert_eq!(again["response"]["data"], body["response"]["data"]);
        assert_eq!(server.stop(), ServerStats { requests: 3, rejected: 0, rows: 10_760 });
    }

    #[test]
    fn errors_have_the_real_shapes() {
        let server = LocalEiaServer::start(fast()).unwrap();
        let (status, _, body) = get(&server, &QUERY.replace("api_key=K&", ""));
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("API_KEY_MISSING")));
        let (status, _, body) = get(&server, &QUERY.replace("hourly", "yearly"));
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("Invalid frequency 'yearly'"), "{body}");
        let (status, _, body) = get(&server, &QUERY.replace("2024-01-01T01", "2024-01-01 01"));
        assert_eq!(status, 400, "{body}");
    }

    #[test]
    fn requests_beyond_the_burst_get_429_with_retry_after() {
        let config = ServerConfig { latency: Duration::ZERO, ..ServerConfig::default() };
        let server = LocalEiaServer::start(config).unwrap();
        let statuses: Vec<(u16, Option<String>)> =
            (0..6).map(|_| get(&server, &format!("{QUERY}&length=10"))).map(|(s, r, _)| (s, r)).collect();
        assert!(statuses[..5].iter().all(|(s, _)| *s == 200), "{statuses:?}");
        assert_eq!(statuses[5], (429, Some("1".to_string())));
        assert_eq!(server.stop().rejected, 1);
    }

    #[test]
    fn admission_keeps_the_burst_and_the_hour() {
        let start = Instant::now();
        let mut admission = Admission { tokens: 5.0, refilled: start, hour: VecDeque::new() };
        for _ in 0..5 {
            assert!(admission.admit(start, 5, 9000).is_ok());
        }
        let wait = admission.admit(start, 5, 9000).unwrap_err();
        assert!(wait > Duration::from_millis(150) && wait <= Duration::from_millis(200), "{wait:?}");
        // evenly spaced at 5 a second: never refused
        for i in 1..=50 {
            assert!(admission.admit(start + Duration::from_millis(200 * i), 5, 9000).is_ok(), "{i}");
        }
        // the hourly limit
        let mut admission = Admission { tokens: 5.0, refilled: start, hour: VecDeque::new() };
        for i in 0..10 {
            assert!(admission.admit(start + Duration::from_secs(i), 5, 10).is_ok());
        }
        let wait = admission.admit(start + Duration::from_secs(100), 5, 10).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3500));
        assert!(admission.admit(start + HOUR, 5, 10).is_ok());
    }

    #[test]
    fn query_pairs_decode() {
        assert_eq!(
            url_pairs("a%5B0%5D=x+y&b=%2F&c&d=%zz"),
            [("a[0]", "x y"), ("b", "/"), ("c", ""), ("d", "%zz")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn cpuinfo_gives_the_model_and_physical_cores() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 0\n\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 0\n\n\
                    processor\t: 2\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 1\n";
        assert_eq!(parse_cpuinfo(text), (Some("AMD EPYC 7B13".into()), Some(2)));
        assert_eq!(parse_cpuinfo(""), (None, None));
    }

    fn sample_report() -> Report {
        let memory = |length: i32| MemoryFigures {
            length,
            block_size: 64,
            blockwise_bytes: 1000 * length as usize,
            reference_bytes: 64 * length as usize * length as usize,
            ratio: 1000.0 / (64.0 * f64::from(length)),
        };
        Report {
            created: Utc::now(),
            settings: Settings {
                size: BenchSize::Quick,
                build: "release".into(),
                latency_ms: 200,
                requests_per_second: 5,
                requests_per_hour: 9000,
                concurrency: 4,
            },
            machine: Machine::detect(),
            collection: CollectionFigures {
                respondents: vec!["CISO".into()],
                kinds: vec!["D".into()],
                range: "r".into(),
                rows: 43_200,
                requests: 9,
                retries: 0,
                server_requests: 9,
                rejected_429: 0,
                seconds: 2.0,
                records_per_s: 21_600.0,
                ceiling_records_per_s: EIA_CEILING_RECORDS_PER_S,
                python_records_per_s: PYTHON_RECORDS_PER_S,
            },
            features: FeatureFigures {
                range: "r".into(),
                rows: 8784,
                build_runs: 3,
                build_seconds: 1.0,
                rows_per_s: 26_352.0,
                windows: 8569,
                window_runs: 2,
                window_seconds: 1.0,
                windows_per_s: 17_138.0,
            },
            model: ModelFigures {
                positions: 192,
                n_features: 22,
                d_model: 64,
                n_layers: 2,
                n_heads: 4,
                batch_size: 32,
                train_sequences: 256,
                train_seconds: 2.0,
                train_sequences_per_s: 128.0,
                predict_sequences: 1024,
                predict_seconds: 1.0,
                predict_sequences_per_s: 1024.0,
            },
            attention_memory: vec![memory(1024), memory(2048)],
        }
    }

    #[test]
    fn reports_round_trip_and_compare_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = sample_report();
        let path = write_report(&earlier, dir.path()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("energy-bench-") && name.ends_with("-quick.json"), "{name}");
        let read = Report::read(&path).unwrap();
        assert_eq!(read.figures(), earlier.figures());
        assert_eq!(read.machine, earlier.machine);
        assert_ne!(write_report(&earlier, dir.path()).unwrap(), path, "a second report never overwrites the first");

        let mut now = earlier.clone();
        now.collection.records_per_s *= 2.0;
        now.attention_memory.push(MemoryFigures { length: 4096, ..now.attention_memory[0].clone() });
        let comparison = compare(&read, &now, &path);
        let ratio = |name: &str| comparison.figures.iter().find(|f| f.name == name).map(|f| f.ratio);
        assert_eq!(ratio("collection.rows"), Some(Some(1.0)));
        assert_eq!(ratio("collection.records_per_s"), Some(Some(2.0)));
        assert_eq!(ratio("attention.reference_bytes.4096"), Some(None), "a figure the earlier report lacks");
    }

    #[test]
    fn unreadable_reports_are_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Report::read(&dir.path().join("none.json")).unwrap_err();
        assert!(missing.is_bad_input(), "{missing}");
        for (text, says) in [
            ("{", "EOF"),
            ("{}", "no `version`"),
            (r#"{"version":"9"}"#, "unknown report version"),
            (r#"{"version":"1"}"#, "missing field `created`"),
        ] {
            let path = dir.path().join("bad.json");
            std::fs::write(&path, text).unwrap();
            let error = Report::read(&path).unwrap_err();
            assert!(error.is_bad_input() && error.to_string().contains(says), "{text}: {error}");
        }
    }
}
