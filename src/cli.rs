//! Command-line types (clap). Their doc comments are the `--help` text.
use crate::features::Protocol;
use crate::features::multi::RegionInput;
use crate::ingest::SourceKind;
use crate::ingest::file::{Resample, Stamps};
use crate::model::distributed::Backend;
use chrono::NaiveDate;
use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;

/// Hourly electricity data in, load forecasts out: collect from EIA, CAISO, files or the
/// built-in synthetic source (and weather from Open-Meteo), build features, train a Ring
/// Attention forecaster (MLX), forecast.
#[derive(Debug, Parser)]
#[command(name = "energy", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Store root folder [default: data]
    #[arg(long, global = true, env = "ENERGY_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Settings file [default: ./energy.toml when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Less output: no progress bars (-q), errors only (-qq)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub quiet: u8,

    /// Print one JSON document on stdout instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collect hourly series into the store (skips what it already holds)
    Collect(CollectArgs),
    /// Show what the store holds: coverage, gaps, rows per series
    Status(StatusArgs),
    /// Build the feature table of a region
    Features(FeaturesArgs),
    /// Train the forecaster (optionally collecting first)
    Train(TrainArgs),
    /// Forecast from the latest data with a trained model
    Forecast(ForecastArgs),
    /// Backtest a trained model against baselines
    Evaluate(EvaluateArgs),
    /// Measure collection, featurization and model throughput on this machine
    Bench(BenchArgs),
    /// Keep forecasts fresh on a schedule and serve them: JSON API, Prometheus metrics, a page
    Serve(ServeArgs),
    /// Start N local ranks of a distributed command (`energy launch -n 2 -- train …`): each
    /// gets MLX_RANK and MLX_HOSTFILE, its output prefixed with its rank; one failing stops all
    Launch(LaunchArgs),
}

/// Which data: shared by collect, features, train, forecast and evaluate.
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Data source [default: synthetic; forecast and evaluate: the model's]
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,

    /// Region code, repeatable (EIA respondent, CAISO TAC area, SYN1…) [default: by source:
    /// SYN1 (synthetic), `CA ISO-TAC` (caiso), the file's name (file); eia and openmeteo need one]
    #[arg(long = "region", value_name = "CODE")]
    pub regions: Vec<String>,

    /// Series kinds, comma-separated (EIA: D, DF, NG, TI, fuel:CODE; CAISO: ACTUAL, DAM, 2DA, 7DA,
    /// RTPD, RTD; synthetic: D, TEMP; openmeteo: TEMP, DEWPOINT, GHI, TEMP_D1..TEMP_D7,
    /// TEMP_FCST, …) [default: by source]
    #[arg(long = "kind", value_delimiter = ',', value_name = "KIND")]
    pub kinds: Vec<String>,

    /// The N whole UTC days up to the last complete hour [default: 180]
    #[arg(long, allow_negative_numbers = true, conflicts_with_all = ["start", "end"])]
    pub days: Option<i64>,

    /// First UTC day, included (YYYY-MM-DD)
    #[arg(long, requires = "end")]
    pub start: Option<NaiveDate>,

    /// Last UTC day, included (YYYY-MM-DD)
    #[arg(long, requires = "start")]
    pub end: Option<NaiveDate>,
}

/// How to reach the sources. Its `Debug` never shows the EIA key.
#[derive(Clone, Args)]
pub struct SourceArgs {
    /// Chunks fetched at once [default: 4, or `[collect] concurrency`]
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Seed of the synthetic source [default: 42]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Synthetic defects: fraction of hours left out
    #[arg(long, value_name = "FRACTION")]
    pub missing_rate: Option<f64>,

    /// Synthetic defects: fraction of hours turned into spikes
    #[arg(long, value_name = "FRACTION")]
    pub spike_rate: Option<f64>,

    /// Synthetic defects: drop the early hours of each spring DST change day
    #[arg(long)]
    pub dst_gap: bool,

    /// File to import (--source file): .csv or .parquet
    #[arg(long, value_name = "FILE")]
    pub path: Option<PathBuf>,

    /// Timestamp column of the file
    #[arg(long, default_value = "timestamp", value_name = "NAME")]
    pub time_column: String,

    /// Value column of the file
    #[arg(long, default_value = "value", value_name = "NAME")]
    pub value_column: String,

    /// Time zone of the file's timestamps that carry no offset: an IANA name
    /// (`Australia/Melbourne`, `Etc/GMT-10` = fixed UTC+10) or `UTC+10`. For a region with no
    /// zone of its own it is recorded in the store as the region's zone, which later commands
    /// use [default: `[regions.<R>] timezone`, else the zone the store recorded for the region,
    /// else UTC]
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,

    /// Which end of its interval a file's timestamp marks: `end` (00:30 and 01:00 make the hour
    /// ending 01:00) or `start` (00:00 and 00:30 make it) [default: end]
    #[arg(long, value_enum)]
    pub stamps: Option<Stamps>,

    /// How a sub-hourly file's value column becomes hourly: `mean` (power) or `sum` (energy
    /// per interval); other columns are averaged [default: mean]
    #[arg(long, value_enum)]
    pub resample: Option<Resample>,

    /// Fraction (0-1) of an hour's sub-hourly intervals that must hold a value; an hour with
    /// fewer is stored as null (with fewer than all: the mean of those present; a sum is scaled
    /// up to the whole hour) [default: 1]
    #[arg(long, value_name = "FRACTION")]
    pub min_coverage: Option<f64>,

    /// Store a file's extra column under another kind, NAME=KIND (e.g. `temperature_c=TEMP`:
    /// TEMP is the kind `train` uses as the region's temperature); repeatable or comma-separated
    /// [default: the column name upper-cased]
    #[arg(long, value_name = "NAME=KIND", value_delimiter = ',')]
    pub column_kind: Vec<String>,

    /// EIA API base URL [default: https://api.eia.gov]
    #[arg(long, value_name = "URL")]
    pub eia_url: Option<String>,

    /// CAISO OASIS base URL [default: https://oasis.caiso.com]
    #[arg(long, value_name = "URL")]
    pub caiso_url: Option<String>,

    /// EIA API key (never printed)
    #[arg(long, env = "EIA_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub eia_api_key: Option<String>,

    /// One server for every Open-Meteo endpoint (a mirror, a local server) [default: the public
    /// hosts, or `[openmeteo] url`]
    #[arg(long, value_name = "URL")]
    pub openmeteo_url: Option<String>,

    /// Open-Meteo commercial API key: calls go to the `customer-` hosts (never printed; not
    /// needed for non-commercial use)
    #[arg(long, env = "OPENMETEO_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub openmeteo_api_key: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CollectArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Compare two stored series, written SOURCE:REGION:KIND (e.g. `eia:CISO:D` `caiso:CA
    /// ISO-TAC:ACTUAL`): overlap hours, mean absolute difference, MAPE of the second against the
    /// first, and the hours that disagree by more than --threshold
    #[arg(long, num_args = 2, value_names = ["SERIES", "SERIES"])]
    pub compare: Vec<String>,

    /// With --compare: list the hours whose difference exceeds this percentage of the first series
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0, requires = "compare")]
    pub threshold: f64,

    /// The grid view: one line per region of a source (default eia) with the hours each kind
    /// covers, its missing hours, the last hour held, and the MAPE of the day-ahead forecast (DF)
    /// against demand (D)
    #[arg(long, conflicts_with = "compare")]
    pub grid: bool,

    /// With --grid: the source whose regions are listed
    #[arg(long, value_name = "SOURCE", default_value = "eia", requires = "grid")]
    pub grid_source: String,
}

#[derive(Debug, Clone, Args)]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Write the feature table here (.parquet)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub inputs: InputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Bring the store up to date for the range first
    #[arg(long)]
    pub collect: bool,
    /// Where the checkpoint goes
    #[arg(long, value_name = "DIR", default_value = "models/latest")]
    pub model_dir: PathBuf,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Context length, hours
    #[arg(long, value_name = "HOURS")]
    pub context: Option<usize>,
    /// Forecast horizon, hours
    #[arg(long, value_name = "HOURS")]
    pub horizon: Option<usize>,
    /// What the model learns to forecast: the 24 hours after the last observation, or local
    /// day d from data up to 10:00 local on day d-1
    #[arg(long, value_enum, default_value_t = Protocol::Next24h)]
    pub protocol: Protocol,
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// The weather the model uses: by default the load source's own temperature (kind TEMP
    /// and its as-issued forecasts TEMP_D1, TEMP_D2, … where stored); `openmeteo` for that
    /// source's TEMP and TEMP_DN of the same region; `SOURCE:REGION:KIND` for any stored series
    /// (an observed value stands in for a perfect forecast where no KIND_DN is stored); `none`
    #[arg(long, value_name = "WEATHER")]
    pub weather: Option<String>,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Continue the interrupted run whose state was saved in `<model dir>/resume/` after each
    /// epoch. Give the same flags; the data range is the saved run's unless --start/--end are
    /// given. Fails when there is no state to resume
    #[arg(long)]
    pub resume: bool,
    /// After saving this epoch's resumable state, wait until killed (for tests of --resume)
    #[arg(long, hide = true, value_name = "EPOCH")]
    pub pause_after_epoch: Option<usize>,
    #[command(flatten)]
    pub distributed: DistributedArgs,
    /// With several --region (or `--region all-eia`: every EIA respondent whose load the
    /// store holds), how the one model knows a window's region: `one-hot` (a learned region
    /// embedding; other regions are forecast zero-shot) or `none` (the model ignores it)
    #[arg(long, value_enum, default_value_t = RegionInput::OneHot)]
    pub region_input: RegionInput,
}

/// Data-parallel training over several processes (MLX's distributed layer).
#[derive(Debug, Clone, Args)]
pub struct DistributedArgs {
    /// Train as one rank of several: every rank builds the same model, takes its share of
    /// the work (`--parallel`), and the ranks sum gradients each step; only rank 0 writes the
    /// model. Implied when MLX_RANK and MLX_HOSTFILE are set (as `energy launch`
    /// and `mlx.launch` do). A rank that gets no answer from the others within
    /// ENERGY_DIST_TIMEOUT seconds (default 60) fails
    #[arg(long)]
    pub distributed: bool,
    /// MLX backend connecting the ranks
    #[arg(long, value_enum, default_value_t = Backend::Ring)]
    pub backend: Backend,
    /// What the ranks of a distributed run split: `data` (each rank takes its share of every
    /// batch's windows) or `sequence` (each rank takes every window but only its share of the
    /// positions, and attention runs across the ranks as Ring Attention: the context that
    /// trains grows with the ranks). Both train the same weights as one process
    #[arg(long, value_enum, default_value_t = Parallelism::Data)]
    pub parallel: Parallelism,
}

/// What the ranks of a distributed run split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Parallelism {
    /// The windows of every batch.
    Data,
    /// The positions of every window.
    Sequence,
}

/// `energy launch`: start local ranks of a distributed command.
#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// Number of local ranks (one process each) [default: the hostfile's ranks, else 2]
    #[arg(short = 'n', long = "ranks", value_name = "N")]
    pub ranks: Option<usize>,
    /// MLX ring hostfile to use instead of free local ports: a JSON list with one list of
    /// "ip:port" per rank, e.g. [["127.0.0.1:32323"],["127.0.0.1:32324"]]; every rank is
    /// started on this machine
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// The energy command every rank runs, after `--` (e.g. `-- train --days 90`)
    #[arg(last = true, required = true, value_name = "ARGS")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ForecastArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// The trained model
    #[arg(long, value_name = "DIR", default_value = "models/latest")]
    pub model_dir: PathBuf,
    /// Bring the store up to date first (the last --days, default 14)
    #[arg(long)]
    pub collect: bool,
    /// Also write the forecast here (.csv or .json)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw recent history, the forecast and its p10-p90 band (.png)
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// The trained model
    #[arg(long, value_name = "DIR", default_value = "models/latest")]
    pub model_dir: PathBuf,
    /// The protocol to score (must be the model's) [default: the model's]
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

/// Which stored series is the operator's own forecast, scored beside the model.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Kind of the operator's day-ahead forecast of the same region, scored beside the model
    /// where the store holds it; `none` scores none [default: DF (eia), DAM (caiso), none
    /// (synthetic, file); evaluate: the one the model was trained with]
    #[arg(long, value_name = "KIND")]
    pub operator_kind: Option<String>,
}

/// Extra stored series a model takes as input columns.
#[derive(Debug, Clone, Default, Args)]
pub struct InputArgs {
    /// Another stored series as an input column (named after its kind, lower case), written
    /// SOURCE:REGION:KIND, e.g. `caiso:CA ISO-TAC:NET_DAM` or `eia:CISO:NG`; repeatable. A
    /// forecast published ahead (DF, DAM, 2DA, 7DA, NET_DAM, WIND_DAM, SOLAR_DAM, *_FCST) is
    /// known at the horizon; any other series (an actual) is seen only up to the forecast origin
    #[arg(long = "input", value_name = "SOURCE:REGION:KIND")]
    pub inputs: Vec<String>,
    /// A stored series known ahead for every hour whatever its kind, e.g. a workday flag or
    /// holiday calendar imported from a file (`file:VIC:WORKDAY`), or your own forecast of an
    /// input: seen at horizon positions, and read from the store for the horizon by `forecast`
    /// (so store it ahead); repeatable
    #[arg(long = "known-input", value_name = "SOURCE:REGION:KIND")]
    pub known_inputs: Vec<String>,
}

/// `energy bench`: collection through a local EIA server, featurization, training, inference
/// and attention memory, measured on this machine; no network, the store is not touched.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A short run (under a minute): fewer rows, one year of features, fewer sequences
    #[arg(long, conflicts_with = "smoke")]
    pub quick: bool,
    /// Print each figure's ratio to the same figure of an earlier report (a JSON file of the
    /// history folder)
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// Latency the local EIA server adds to each request, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = crate::bench::DEFAULT_LATENCY_MS)]
    pub latency_ms: u64,
    /// Folder the JSON report is written to (one file per run, named by UTC time)
    #[arg(long, value_name = "DIR", default_value = crate::bench::DEFAULT_HISTORY)]
    pub history: PathBuf,
    /// The smallest sizes, for tests (a few seconds)
    #[arg(long, hide = true)]
    pub smoke: bool,
    /// Only training and inference sequences/s of the forecaster (the configuration's `[model]`
    /// settings) on random windows, the shape `benches/peers/model_compare.py` runs PyTorch on;
    /// no report file is written
    #[arg(long)]
    pub model_only: bool,
    /// Context hours of the model (`--model-only`); the horizon is the default model's
    #[arg(long, value_name = "HOURS", requires = "model_only")]
    pub context: Option<usize>,
    /// Rows per attention block (`--model-only`); the default model's when not given
    #[arg(long, value_name = "ROWS", requires = "model_only")]
    pub block_size: Option<usize>,
    /// Features per position (`--model-only`)
    #[arg(long, value_name = "N", default_value_t = 22, requires = "model_only")]
    pub features: usize,
}

/// `energy serve`: collect and forecast on start and every `--every`, archive each forecast in
/// the store, and answer HTTP: `/api/v1/…` (JSON), `/metrics` (Prometheus) and `/` (a page).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Data source (must be the models') [default: the model's]
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,
    /// Region served, repeatable [default: the model's]
    #[arg(long = "region", value_name = "CODE")]
    pub regions: Vec<String>,
    /// The trained model: one per region in --region order, or one folder holding a model per
    /// region in `DIR/<REGION>`
    #[arg(long, value_name = "DIR", default_value = "models/latest")]
    pub model_dir: Vec<PathBuf>,
    /// Address to listen on; an address other than loopback needs --allow-remote
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Allow --listen on an address other machines reach (the API has no authentication)
    #[arg(long)]
    pub allow_remote: bool,
    /// Time between cycles (collect, forecast, archive), e.g. 15m, 1h [min 10s, max 7d]
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_every)]
    pub every: std::time::Duration,
    /// Days of data each cycle brings up to date (what the store already holds is skipped)
    #[arg(long, value_name = "N", default_value_t = 14, value_parser = clap::value_parser!(i64).range(1..=366))]
    pub days: i64,
    #[command(flatten)]
    pub sources: SourceArgs,
}

/// `--every`: a duration (`90s`, `15m`, `1h 30m`) from 10 seconds to 7 days.
fn parse_every(text: &str) -> Result<std::time::Duration, String> {
    let every =
        humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 15m or 1h: {e}"))?;
    let (min, max) = (std::time::Duration::from_secs(10), std::time::Duration::from_secs(7 * 24 * 3600));
    if every < min || every > max {
        return Err(format!("`{text}` is outside 10s to 7d"));
    }
    Ok(every)
}

impl std::fmt::Debug for SourceArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceArgs")
            .field("concurrency", &self.concurrency)
            .field("seed", &self.seed)
            .field("path", &self.path)
            .field("timezone", &self.timezone)
            .field("eia_url", &self.eia_url)
            .field("caiso_url", &self.caiso_url)
            .field("eia_api_key", &self.eia_api_key.as_ref().map(|_| "***"))
            .field("openmeteo_url", &self.openmeteo_url)
            .field("openmeteo_api_key", &self.openmeteo_api_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_eia_key() {
        let cli = Cli::try_parse_from(["energy", "collect", "--eia-api-key", "SECRETKEY123456"]).unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("SECRETKEY123456"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn debug_output_hides_the_openmeteo_key() {
        let cli = Cli::try_parse_from(["energy", "collect", "--openmeteo-api-key", "OMSECRETKEY98765"]).unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("OMSECRETKEY98765"), "{shown}");
        assert!(shown.contains("openmeteo_api_key: Some(\"***\")"), "{shown}");
    }
}
