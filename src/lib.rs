//! energy: hourly electricity data in, load forecasts out.
//!
//! # Layout
//! - [`cli`]: clap types (the `--help` text).
//! - [`config`]: typed settings from `energy.toml`, environment and flags, resolved once.
//! - [`commands`]: one handler per subcommand; the only place that touches the terminal.
//! - [`ingest`]: sources (synthetic, file, EIA, CAISO), the orchestrator and the Parquet store.
//! - [`features`]: cleaning, calendar, lags, scaling, windows and splits (polars, rayon).
//! - [`model`]: the Ring Attention forecaster on mlx-rs.
//! - [`eval`]: metrics (MAPE, MAE, MASE, pinball, coverage) and seasonal-naive baselines.
//! - [`report`]: the `Reporter` trait through which the library reports progress.
//! - [`time`]: hourly ranges (interval-end), region time zones, US holidays.
//! - [`bench`]: `energy bench`: the local EIA server, end-to-end throughput figures and reports.
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod eval;
pub mod features;
pub mod ingest;
pub mod model;
pub mod report;
pub mod time;

pub use commands::run;
