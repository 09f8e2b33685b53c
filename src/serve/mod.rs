//! `energy serve`: fresh forecasts on a schedule, served over HTTP.
//!
//! On start and then every `every`, one cycle per region collects what is new and forecasts
//! from the latest hour (the [`Cycle`] `commands::serve` provides: the same collection and
//! forecast as `collect` and `forecast`), archives the forecast in the store ([`archive`]) and
//! scores the archive against what happened ([`accuracy`]). Between cycles the server answers
//! from [`State`] and the store; a failed cycle keeps the last forecast, marked stale with the
//! reason.
//!
//! # Layout
//! - this file: the shared [`State`], one cycle's bookkeeping, and [`run`] (listener, schedule,
//!   graceful shutdown);
//! - `schedule`: the timer loop (tested with paused time);
//! - [`archive`]: the forecast archive in the store;
//! - [`accuracy`]: live accuracy by lead hour;
//! - `api`: the JSON API under `/api/v1`, parameter checks and limits;
//! - `metrics`: `/metrics` in the Prometheus text format;
//! - `dashboard`: `/`, the page with the chart (SVG) and tables.
pub mod accuracy;
mod api;
pub mod archive;
mod dashboard;
mod metrics;
mod schedule;

use crate::ingest::{SeriesId, Store};
use accuracy::LeadAccuracy;
use archive::IssuedForecast;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Days of archived forecasts the live accuracy of status, metrics and the page covers.
pub const ACCURACY_DAYS: i64 = 30;

/// The model that forecasts a region, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `REGION@trained-at`: names the model in the archive.
    pub id: String,
    pub dir: String,
    pub trained_at: DateTime<Utc>,
    pub protocol: crate::features::Protocol,
    pub horizon_h: usize,
    /// The load series it forecasts and the operator's forecast scored beside it (if stored).
    pub load: SeriesId,
    pub operator: Option<SeriesId>,
    /// Test-split scores at training time (the model and its baselines).
    pub backtest: serde_json::Value,
    /// For a region a multi-region model was not trained on: that it is forecast zero-shot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_shot: Option<String>,
}

/// What one cycle's collection did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectionOutcome {
    pub at: Option<DateTime<Utc>>,
    pub ok: bool,
    pub rows: usize,
    pub retries: u32,
    pub failed_chunks: usize,
    pub duration_s: f64,
    /// Why it failed (no secret: the key never reaches an error message).
    pub error: Option<String>,
}

/// What one cycle of one region produced: [`Cycle`]'s answer.
#[derive(Debug)]
pub struct CycleReport {
    pub model: Option<ModelInfo>,
    pub collection: CollectionOutcome,
    /// The new forecast, or why there is none (a failed collection issues none).
    pub forecast: Result<IssuedForecast, String>,
}

/// One cycle for a region (blocking: it runs on the blocking pool).
pub type Cycle = Arc<dyn Fn(&str) -> CycleReport + Send + Sync>;

/// Running totals of one region, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub collections: u64,
    pub collection_failures: u64,
    pub rows: u64,
    pub retries: u64,
    pub forecasts: u64,
    pub forecast_failures: u64,
}

/// What the server knows of one region.
#[derive(Debug, Clone, Serialize)]
pub struct RegionState {
    pub region: String,
    pub model: Option<ModelInfo>,
    #[serde(skip)]
    pub latest: Option<IssuedForecast>,
    /// Why the forecast served is not fresh (the last cycle failed, or none has run).
    pub stale_reason: Option<String>,
    pub last_collection: Option<CollectionOutcome>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_cycle_s: Option<f64>,
    pub counters: Counters,
    /// Live accuracy over the last [`ACCURACY_DAYS`] days (lead 0 first: every lead).
    pub accuracy: Vec<LeadAccuracy>,
}

impl RegionState {
    fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
            model: None,
            latest: None,
            stale_reason: Some("no cycle has run yet".into()),
            last_collection: None,
            last_success: None,
            last_cycle_s: None,
            counters: Counters::default(),
            accuracy: Vec::new(),
        }
    }
}

/// The server's shared state.
pub struct State {
    pub store: Store,
    pub every: Duration,
    pub started_at: DateTime<Utc>,
    inner: RwLock<Inner>,
    /// Turns true once the first cycle has run.
    first_cycle: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, Clone)]
struct Inner {
    regions: Vec<RegionState>,
    runs: u64,
    next_run: Option<DateTime<Utc>>,
}

impl State {
    /// The state of a server of `regions`, each with the newest forecast of its archive (served,
    /// marked stale, until the first cycle issues a new one).
    pub fn new(store: Store, regions: &[String], every: Duration) -> Result<Self, crate::ingest::IngestError> {
        let mut states = Vec::new();
        for region in regions {
            let mut state = RegionState::new(region);
            state.latest = archive::latest(&store, region)?;
            states.push(state);
        }
        Ok(Self {
            store,
            every,
            started_at: Utc::now(),
            inner: RwLock::new(Inner { regions: states, runs: 0, next_run: None }),
            first_cycle: tokio::sync::watch::channel(false).0,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // a panic while the lock was held leaves plain data behind: still readable
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The regions served, in the order given.
    pub fn regions(&self) -> Vec<String> {
        self.read().regions.iter().map(|r| r.region.clone()).collect()
    }

    /// A copy of one region's state.
    pub fn region(&self, region: &str) -> Option<RegionState> {
        self.read().regions.iter().find(|r| r.region == region).cloned()
    }

    /// Copies of every region's state, cycles run, and the next run's time.
    pub fn snapshot(&self) -> (Vec<RegionState>, u64, Option<DateTime<Utc>>) {
        let inner = self.read();
        (inner.regions.clone(), inner.runs, inner.next_run)
    }

    /// Record one region's cycle: archive a new forecast (holding the store lock only for that
    /// write), or keep the last one marked stale with the reason; then score the archive.
    fn record(&self, region: &str, report: CycleReport, seconds: f64) {
        let collection_failed = !report.collection.ok;
        let forecast = report.forecast.and_then(|forecast| {
            let _lock = self.store.write_lock().map_err(|e| format!("cannot archive the forecast: {e}"))?;
            archive::append(&self.store, &forecast).map_err(|e| format!("cannot archive the forecast: {e}"))?;
            Ok(forecast)
        });
        let accuracy = report.model.as_ref().and_then(|model| self.score(region, model, ACCURACY_DAYS).ok());
        let mut inner = self.write();
        let Some(state) = inner.regions.iter_mut().find(|r| r.region == region) else { return };
        if report.model.is_some() {
            state.model = report.model;
        }
        state.counters.collections += 1;
        state.counters.rows += report.collection.rows as u64;
        state.counters.retries += u64::from(report.collection.retries);
        if collection_failed {
            state.counters.collection_failures += 1;
        }
        match forecast {
            Ok(forecast) => {
                state.counters.forecasts += 1;
                state.latest = Some(forecast);
                state.stale_reason = None;
                state.last_success = Some(Utc::now());
            }
            Err(reason) => {
                tracing::warn!(region, reason, "serving the last forecast, marked stale");
                if !collection_failed {
                    state.counters.forecast_failures += 1;
                }
                state.stale_reason = Some(reason);
            }
        }
        state.last_collection = Some(report.collection);
        state.last_cycle_s = Some(seconds);
        if let Some(accuracy) = accuracy {
            state.accuracy = accuracy;
        }
    }

    /// Live accuracy of `region`'s forecasts issued in the last `days` days.
    pub fn score(&self, region: &str, model: &ModelInfo, days: i64) -> Result<Vec<LeadAccuracy>, String> {
        let from = Utc::now() - chrono::TimeDelta::days(days);
        let forecasts = archive::read(&self.store, region, Some(from), None).map_err(|e| e.to_string())?;
        if forecasts.is_empty() || !self.store.has_series(&model.load) {
            return Ok(Vec::new());
        }
        let actual = self.store.read(&model.load, None).map_err(|e| e.to_string())?;
        let operator = match &model.operator {
            Some(id) if self.store.has_series(id) => Some(self.store.read(id, None).map_err(|e| e.to_string())?),
            _ => None,
        };
        Ok(accuracy::live_accuracy(&forecasts, &actual, operator.as_ref()))
    }
}

/// How `serve` runs.
pub struct ServeConfig {
    pub every: Duration,
    /// Called once the first cycle is done and the server accepts requests.
    pub on_ready: Box<dyn FnOnce(SocketAddr) + Send>,
}

/// Serve on `listener`: one cycle for every region first, then the HTTP server and the
/// schedule until `shutdown` resolves (Ctrl-C, SIGTERM; heard during the first cycle too); a
/// cycle under way finishes its writes before this returns (its collection is stopped by the
/// `Cycle`'s own means, see `commands::serve`), and no region's cycle starts after it.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    cycle: Cycle,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.send_replace(true);
        });
    }
    let every = config.every;
    let start = tokio::time::Instant::now();
    let cycles = {
        let state = state.clone();
        let stopped = stopped.clone();
        tokio::spawn(schedule::run(start, every, stopped.clone(), move |_| {
            run_cycle(state.clone(), cycle.clone(), stopped.clone())
        }))
    };
    // the first cycle is done before requests are answered; a shutdown during it ends there
    let mut first = state.first_cycle.subscribe();
    let mut stopping = stopped.clone();
    let shut_down_first = tokio::select! {
        _ = first.wait_for(|done| *done) => false,
        _ = stopping.wait_for(|stop| *stop) => true,
    };
    if shut_down_first {
        let _ = cycles.await;
        return Ok(());
    }
    (config.on_ready)(addr);
    let app = api::router(state.clone());
    let mut stop_server = stopped.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop_server.wait_for(|stop| *stop).await;
        })
        .await;
    stop.send_replace(true);
    let _ = cycles.await;
    served
}

async fn run_cycle(state: Arc<State>, cycle: Cycle, stopped: tokio::sync::watch::Receiver<bool>) {
    for region in state.regions() {
        if *stopped.borrow() {
            // shutting down: the regions left keep their last forecast
            break;
        }
        let started = std::time::Instant::now();
        let work = cycle.clone();
        let name = region.clone();
        let report = match tokio::task::spawn_blocking(move || work(&name)).await {
            Ok(report) => report,
            Err(e) => CycleReport {
                model: None,
                collection: CollectionOutcome {
                    at: Some(Utc::now()),
                    error: Some(format!("the cycle failed: {e}")),
                    ..Default::default()
                },
                forecast: Err(format!("the cycle failed: {e}")),
            },
        };
        let seconds = started.elapsed().as_secs_f64();
        let recorder = state.clone();
        let _ = tokio::task::spawn_blocking(move || recorder.record(&region, report, seconds)).await;
    }
    let next = Utc::now() + chrono::TimeDelta::from_std(state.every).unwrap_or_default();
    {
        let mut inner = state.write();
        inner.runs += 1;
        inner.next_run = Some(next);
    }
    state.first_cycle.send_replace(true);
}
