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
//!
//! # Layout
//! - this file: the settings and the run of each step.
//! - `report`: the report's figures, its file, and comparison with an earlier report.
//! - `machine`: the machine probe.
//!
//! The local EIA server is the one EIA test double, [`crate::ingest::eia::fake`].
mod machine;
mod report;

pub use crate::ingest::eia::fake::{LocalEiaServer, ServerConfig, ServerStats};
pub use crate::ingest::eia::{
    REQUESTS_PER_HOUR as EIA_REQUESTS_PER_HOUR, REQUESTS_PER_SECOND as EIA_REQUESTS_PER_SECOND,
};
pub use machine::{MLX_RS_VERSION, Machine};
pub use report::{
    CollectionFigures, Comparison, FeatureFigures, Figure, FigureKind, MemoryFigures, ModelFigures, Ratio, Report,
    Settings, compare, write_report,
};

use crate::config::{DEFAULT_CHUNK_RETRIES, DEFAULT_CONCURRENCY, ModelConfig, RetryConfig, SyntheticConfig};
use crate::features::{self, FeatureConfig, Protocol, Scaler, WindowSpec, Windows, make_windows};
use crate::ingest::eia::fake::RESPONDENTS;
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
use chrono::{NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Records/s the earlier Python design collected from the EIA API.
pub const PYTHON_RECORDS_PER_S: f64 = 326.8;
/// The most records/s the EIA API can give: 5 requests/s × 5000 rows.
pub const EIA_CEILING_RECORDS_PER_S: f64 = EIA_REQUESTS_PER_SECOND as f64 * PAGE_ROWS as f64;
/// Latency the local server adds to each request unless told otherwise, ms.
pub const DEFAULT_LATENCY_MS: u64 = 200;
/// Most latency accepted, ms.
pub const MAX_LATENCY_MS: u64 = 10_000;
/// The folder reports go to unless told otherwise (relative to the working directory).
pub const DEFAULT_HISTORY: &str = "bench-history";
/// The API key sent to the local server (40 characters, as real keys).
const DUMMY_KEY: &str = "BENCHbenchBENCHbenchBENCHbenchBENCHbench";
/// Every range ends on this day, so that runs are alike.
const LAST_DAY: (i32, u32, u32) = (2024, 12, 31);
/// Seed of the model's weights and shuffling.
const SEED: u64 = 7;
/// Most repetitions of a repeated step.
const MAX_RUNS: usize = 50;
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
    let model = bench_model(config, &model_config, &WindowData::from(&windows))?;
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
    let respondents: Vec<String> =
        RESPONDENTS.iter().take(config.respondents.max(1)).map(|(code, _)| code.to_string()).collect();
    let kinds: Vec<EiaKind> = REGION_KINDS.iter().map(|k| EiaKind::Region(k.to_string())).collect();
    let range = BenchConfig::days(config.collection_days);
    let store = Store::new(root);
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
            stop: None,
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

/// The training and inference figures alone, on `count` windows of uniform random inputs in
/// [-0.5, 0.5) with `n_features` features (the shape PyTorch's peer in `benches/peers/` runs):
/// `energy bench --model-only`.
pub fn run_model_only(
    config: &BenchConfig,
    model_config: &ModelConfig,
    n_features: usize,
) -> Result<ModelFigures, BenchError> {
    let count = config.train_sequences.max(config.predict_sequences);
    let positions = model_config.context + model_config.horizon;
    let mut rng = crate::rng::SplitMix64::new(SEED);
    let mut next = || (rng.next_f64() - 0.5) as f32;
    let inputs: Vec<f32> = (0..count * positions * n_features).map(|_| next()).collect();
    let targets: Vec<f32> = (0..count * model_config.horizon).map(|_| next()).collect();
    let windows =
        WindowData { inputs: &inputs, targets: &targets, count, positions, horizon: model_config.horizon, n_features };
    bench_model(config, model_config, &windows)
}

/// The windows a model figure is measured on.
struct WindowData<'a> {
    inputs: &'a [f32],
    targets: &'a [f32],
    count: usize,
    positions: usize,
    horizon: usize,
    n_features: usize,
}

impl<'a> From<&'a Windows> for WindowData<'a> {
    fn from(windows: &'a Windows) -> Self {
        Self {
            inputs: &windows.inputs,
            targets: &windows.targets,
            count: windows.count,
            positions: windows.positions,
            horizon: windows.horizon,
            n_features: windows.n_features,
        }
    }
}

fn bench_model(
    config: &BenchConfig,
    model_config: &ModelConfig,
    windows: &WindowData,
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
