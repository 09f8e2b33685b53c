//! energy: hourly electricity data in, load forecasts out.
//!
//! # Layout
//! - [`cli`]: clap types (the `--help` text).
//! - [`config`]: typed settings from `energy.toml`, environment and flags, resolved once.
//! - [`commands`]: one handler per subcommand; the only place that touches the terminal.
//! - [`ingest`]: sources (synthetic, file, EIA, CAISO), the orchestrator and the Parquet store.
//! - [`features`]: cleaning, calendar, lags, scaling, windows and splits (polars, rayon).
//! - [`model`]: the Ring Attention forecaster on mlx-rs.
//! - [`eval`]: metrics (MAPE, MAE, MASE, pinball, coverage), seasonal-naive baselines, interval
//!   calibration and the one backtest `train` and `evaluate` share.
//! - [`region`]: each region's time zone and holiday calendar (config, store records, built-in
//!   table; UTC with a warning for a region with none).
//! - `plot`: the forecast chart (plotters): PNG for `forecast --plot`, SVG for `serve`'s page.
//! - [`report`]: the `Reporter` trait through which the library reports progress.
//! - [`serve`]: `energy serve`: the schedule, the forecast archive, live accuracy, the HTTP API,
//!   metrics and the page.
//! - [`rng`]: the one seedable random generator (SplitMix64) for shuffles and test data.
//! - [`time`]: hourly ranges (interval-end), region time zones, US holidays.
//! - [`bench`]: `energy bench`: end-to-end throughput figures, the machine probe and reports
//!   (its local EIA server is the one EIA fake, [`ingest::eia::fake`]).
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod eval;
pub mod features;
pub mod ingest;
pub mod model;
pub(crate) mod plot;
pub mod region;
pub mod report;
pub mod rng;
pub mod serve;
pub mod time;

pub use commands::run;
