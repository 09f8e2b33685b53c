//! Typed settings: the optional TOML file (`energy.toml` in the working directory, or
//! `--config FILE`), then environment variables, then command-line flags, resolved once.
//!
//! Every key has a documented default (the `DEFAULT_*` constants); unknown keys and wrong
//! types are errors that name the file, the key and the reason.
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Store root when neither `--store`, `ENERGY_STORE` nor `[store] root` is given.
pub const DEFAULT_STORE: &str = "data";
/// The config file read from the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "energy.toml";
pub const DEFAULT_CONCURRENCY: usize = 4;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_BASE_DELAY_MS: u64 = 500;
pub const DEFAULT_MAX_DELAY_MS: u64 = 30_000;
pub const DEFAULT_TIMEOUT_S: u64 = 60;
pub const DEFAULT_CHUNK_RETRIES: u32 = 2;
pub const DEFAULT_EIA_URL: &str = "https://api.eia.gov";
pub const DEFAULT_CAISO_URL: &str = "https://oasis.caiso.com";
pub const DEFAULT_SEED: u64 = 42;
/// Hours between next-24h training windows' origins (`[model] train_stride`).
pub const DEFAULT_TRAIN_STRIDE: usize = 3;
/// Hours between day-ahead training windows' origins under `[model] day_ahead_stride =
/// "auto"` when the training split covers less than [`FEW_DAY_AHEAD_DAYS`] days.
pub const SHORT_DAY_AHEAD_STRIDE: usize = 3;
/// Training days below which `day_ahead_stride = "auto"` adds origins (a year).
pub const FEW_DAY_AHEAD_DAYS: usize = 365;
/// Fewest optimizer steps of a training run: the 8 epochs of 28 batches that the main job's
/// 180 days give (README, "Forecast quality").
pub const DEFAULT_MIN_STEPS: usize = 224;
/// Epochs of the refit on training and validation windows after training (`[model] refit_epochs`).
pub const DEFAULT_REFIT_EPOCHS: usize = 1;
/// Days of the live weather forecast `collect --kind TEMP_FCST` fetches (1 to 15).
pub const DEFAULT_FORECAST_DAYS: u32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The whole settings tree (`energy.toml`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    pub collect: CollectConfig,
    pub retry: RetryConfig,
    pub eia: EiaConfig,
    pub caiso: CaisoConfig,
    pub openmeteo: OpenmeteoConfig,
    pub weather: WeatherConfig,
    /// `[regions.<R>]`: a region's time zone and holidays (see [`crate::region`]).
    pub regions: std::collections::BTreeMap<String, RegionConfig>,
    pub synthetic: SyntheticConfig,
    pub split: SplitConfig,
    pub model: ModelConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Root folder of the Parquet store.
    pub root: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { root: PathBuf::from(DEFAULT_STORE) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectConfig {
    /// Chunks fetched at once.
    pub concurrency: usize,
    /// Extra attempts for a whole chunk after its requests gave up.
    pub chunk_retries: u32,
}

impl Default for CollectConfig {
    fn default() -> Self {
        Self { concurrency: DEFAULT_CONCURRENCY, chunk_retries: DEFAULT_CHUNK_RETRIES }
    }
}

/// Request retry policy (jittered exponential backoff, `Retry-After` honoured).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    pub timeout_s: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_delay_ms: DEFAULT_BASE_DELAY_MS,
            max_delay_ms: DEFAULT_MAX_DELAY_MS,
            timeout_s: DEFAULT_TIMEOUT_S,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EiaConfig {
    pub url: String,
    /// Burst of requests per second.
    pub requests_per_second: u32,
    /// Sustained requests per hour.
    pub requests_per_hour: u32,
    /// How long the respondent list `--region all` resolved stays cached in the store (hours;
    /// 0 asks the API every time).
    pub facet_max_age_hours: u32,
}

impl Default for EiaConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_EIA_URL.into(),
            requests_per_second: crate::ingest::eia::REQUESTS_PER_SECOND,
            requests_per_hour: crate::ingest::eia::REQUESTS_PER_HOUR,
            facet_max_age_hours: crate::ingest::eia::FACET_MAX_AGE_HOURS,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaisoConfig {
    pub url: String,
    /// Seconds between two requests.
    pub min_interval_s: f64,
}

impl Default for CaisoConfig {
    fn default() -> Self {
        Self { url: DEFAULT_CAISO_URL.into(), min_interval_s: 5.0 }
    }
}

/// The Open-Meteo weather source (`ingest::openmeteo`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OpenmeteoConfig {
    /// One server for every endpoint (a mirror or a self-hosted Open-Meteo), like
    /// `--openmeteo-url`; unset: the public hosts (`customer-` hosts with an API key).
    pub url: Option<String>,
    /// Weighted calls allowed in any minute, hour and day (the free API's limits).
    pub calls_per_minute: u32,
    pub calls_per_hour: u32,
    pub calls_per_day: u32,
    /// Days of the live forecast (`TEMP_FCST`, …) from today 00:00 UTC, 1 to 15.
    pub forecast_days: u32,
    /// One weather model (`gfs_seamless`, `ecmwf_ifs025`, …); unset: the API's `best_match`.
    pub model: Option<String>,
}

impl Default for OpenmeteoConfig {
    fn default() -> Self {
        use crate::ingest::openmeteo::{CALLS_PER_DAY, CALLS_PER_HOUR, CALLS_PER_MINUTE};
        Self {
            url: None,
            calls_per_minute: CALLS_PER_MINUTE,
            calls_per_hour: CALLS_PER_HOUR,
            calls_per_day: CALLS_PER_DAY,
            forecast_days: DEFAULT_FORECAST_DAYS,
            model: None,
        }
    }
}

/// Weather of a region: `[[weather.points.CODE]]` tables (name, lat, lon, weight) add a region
/// to the built-in table of population centres, or replace its points.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WeatherConfig {
    pub points: std::collections::BTreeMap<String, Vec<WeatherPoint>>,
}

/// One place whose weather counts towards a region's, with its weight (e.g. its population).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeatherPoint {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub weight: f64,
}

/// One region's local calendar (`[regions.<R>]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegionConfig {
    /// IANA zone (`Australia/Melbourne`, `Etc/GMT-10`) or a fixed offset (`UTC+10`): the
    /// region's local time, and the zone of its files' timestamps that carry no offset.
    pub timezone: Option<String>,
    /// Holidays its calendar marks: `us`, `au-vic` (Victoria, Australia) or `none` [default:
    /// `us` for the built-in US regions, `none` for any other].
    pub holidays: Option<crate::region::Holidays>,
}

impl RegionConfig {
    /// The settings to register ([`crate::region::configure`]); the zone was checked by
    /// [`Config::parse`].
    pub fn settings(&self) -> crate::region::RegionSettings {
        crate::region::RegionSettings {
            zone: self.timezone.as_deref().and_then(|z| crate::region::parse_zone(z).ok()),
            holidays: self.holidays,
        }
    }
}

/// The synthetic source: see `ingest::synthetic` for the generating process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// Fraction of hours left out (0 = none).
    pub missing_rate: f64,
    /// Fraction of hours turned into spikes (0 = none).
    pub spike_rate: f64,
    /// Drop the local 00:00–05:00 hours of each spring DST change day, as real EIA data does.
    pub dst_gap: bool,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { seed: DEFAULT_SEED, missing_rate: 0.0, spike_rate: 0.0, dst_gap: false }
    }
}

/// Chronological split fractions (the test split is what remains).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    pub train: f64,
    pub validation: f64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { train: 0.7, validation: 0.15 }
    }
}

/// Model hyper-parameters (the forecaster issue documents their choice).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub context: usize,
    pub horizon: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub block_size: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// The MLP's activation: `gelu` (default), `relu` or `quick-gelu`.
    pub activation: crate::model::transformer::Activation,
    /// Hours between the origins of next-24h training windows (the day-ahead protocol has one
    /// origin a day).
    pub train_stride: usize,
    /// Hours between the origins of day-ahead training windows: `auto`, or a divisor of 24 (24
    /// keeps the one 10:00 origin a day that is scored; fewer add origins at the other hours
    /// with the same 14-hour gap and 24-hour horizon, so the model learns the same leads from
    /// more windows). Validation and test windows keep the 10:00 origin.
    pub day_ahead_stride: DayAheadStride,
    /// What the model's forecast corrects: `regression` (the default: a calendar-and-weather
    /// regression fitted on the training split, corrected by its error at the origin and mixed
    /// with the week-back naive, [`crate::features::base`]) or `week` (the issue-time week-back
    /// naive of each hour).
    pub base: crate::features::base::BaseKind,
    /// Epochs of the refit that follows training: once validation has chosen the epoch and
    /// calibrated the intervals, the model trains this much longer on the training and
    /// validation windows together, so that it has seen the latest weeks before the test (or
    /// before forecasting); 0 skips it.
    pub refit_epochs: usize,
    /// Whether the saved model learns the test split too, once it has been scored: a day-ahead
    /// lag regression is fitted again on every row, the model trains `refit_epochs` more over
    /// the whole range's windows, and the boosted trees are fitted again on the same windows
    /// (during training: what they need is known before). The test scores `train` prints are
    /// those of the model before, which had not seen the test split; what `forecast` and
    /// `evaluate` use has seen the range's latest weeks. Needs `refit_epochs` ≥ 1.
    pub final_refit: bool,
    /// Day-of-year inputs: `auto` (only when the training split covers a whole year,
    /// [`crate::features::day_of_year_learnable`]), `on` or `off`.
    pub day_of_year: DayOfYear,
    /// Fewest optimizer steps: with few training windows (a year of day-ahead windows is 365),
    /// `epochs` rises until the run takes this many steps, so that a small data set is trained
    /// as long as a large one; early stopping still applies. 0 keeps `epochs` as it is.
    pub min_steps: usize,
    /// Networks trained side by side, each from its own initial weights; the forecast is the
    /// mean of their quantiles. More members cost proportionally more time and give forecasts
    /// that depend less on the seed.
    pub members: usize,
}

impl ModelConfig {
    /// The epochs to train `windows` training windows for: `epochs`, or more where that is
    /// fewer than `min_steps` optimizer steps.
    pub fn epochs_for(&self, windows: usize) -> usize {
        let steps_per_epoch = windows.div_ceil(self.batch_size.max(1)).max(1);
        self.epochs.max(self.min_steps.div_ceil(steps_per_epoch))
    }
}

/// `[model] day_ahead_stride`: `"auto"` or a number of hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DayAheadStride {
    /// Origins every [`SHORT_DAY_AHEAD_STRIDE`] hours when the training split covers less than
    /// [`FEW_DAY_AHEAD_DAYS`] days (one origin a day leaves too few windows to learn from:
    /// nine months are about 190), else one a day. Measured in the README ("Forecast quality"):
    /// on nine months of Victoria the extra origins cut the error; on 3.5 years of CISO and PJM
    /// they did not.
    #[default]
    Auto,
    Hours(usize),
}

impl DayAheadStride {
    /// The hours between origins for a training split of `train_hours` hours.
    pub fn hours(self, train_hours: usize) -> usize {
        match self {
            Self::Auto if train_hours < FEW_DAY_AHEAD_DAYS * 24 => SHORT_DAY_AHEAD_STRIDE,
            Self::Auto => crate::features::windows::HOURS_PER_DAY,
            Self::Hours(hours) => hours,
        }
    }
}

impl Serialize for DayAheadStride {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Hours(hours) => serializer.serialize_u64(*hours as u64),
        }
    }
}

impl<'de> Deserialize<'de> for DayAheadStride {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Hours(usize),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Hours(hours) => Ok(Self::Hours(hours)),
            Raw::Text(text) if text == "auto" => Ok(Self::Auto),
            Raw::Text(text) => {
                Err(serde::de::Error::custom(format!("expected \"auto\" or a number of hours, got \"{text}\"")))
            }
        }
    }
}

/// `[model] day_of_year`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DayOfYear {
    #[default]
    Auto,
    On,
    Off,
}

impl DayOfYear {
    /// Are the day-of-year columns inputs when the training split holds `train_hours` hours?
    pub fn wanted(self, train_hours: usize) -> bool {
        match self {
            Self::Auto => crate::features::day_of_year_learnable(train_hours),
            Self::On => true,
            Self::Off => false,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            context: 168,
            horizon: 24,
            d_model: 64,
            n_heads: 4,
            n_layers: 2,
            block_size: 64,
            epochs: 8,
            batch_size: 32,
            learning_rate: 1e-3,
            activation: crate::model::transformer::Activation::Gelu,
            train_stride: DEFAULT_TRAIN_STRIDE,
            day_ahead_stride: DayAheadStride::Auto,
            base: crate::features::base::BaseKind::Regression,
            refit_epochs: DEFAULT_REFIT_EPOCHS,
            final_refit: true,
            day_of_year: DayOfYear::Auto,
            min_steps: DEFAULT_MIN_STEPS,
            members: 1,
        }
    }
}

impl Config {
    /// Read `path` if given (it must exist), else `energy.toml` in the working directory when
    /// present, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => Self::from_file(path),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => Self::from_file(Path::new(DEFAULT_CONFIG_FILE)),
            None => Ok(Self::default()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parse TOML text; the error names the key and the reason on one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, key: &str, why: &str| if ok { Ok(()) } else { Err(format!("key `{key}`: {why}")) };
        check(self.collect.concurrency >= 1, "collect.concurrency", "must be at least 1")?;
        check(self.retry.max_attempts >= 1, "retry.max_attempts", "must be at least 1")?;
        check((0.0..=1.0).contains(&self.synthetic.missing_rate), "synthetic.missing_rate", "must be between 0 and 1")?;
        check((0.0..=1.0).contains(&self.synthetic.spike_rate), "synthetic.spike_rate", "must be between 0 and 1")?;
        check(
            self.split.train > 0.0 && self.split.validation >= 0.0 && self.split.train + self.split.validation < 1.0,
            "split",
            "train > 0, validation >= 0 and train + validation < 1 are required",
        )?;
        check(self.eia.requests_per_second >= 1, "eia.requests_per_second", "must be at least 1")?;
        check(self.eia.requests_per_hour >= 1, "eia.requests_per_hour", "must be at least 1")?;
        check(self.retry.timeout_s >= 1, "retry.timeout_s", "must be at least 1")?;
        check(
            self.retry.base_delay_ms <= self.retry.max_delay_ms,
            "retry.base_delay_ms",
            "must not exceed retry.max_delay_ms",
        )?;
        check(
            self.caiso.min_interval_s.is_finite() && self.caiso.min_interval_s >= 0.0,
            "caiso.min_interval_s",
            "must be a number of seconds, at least 0",
        )?;
        for (key, value) in [
            ("openmeteo.calls_per_minute", self.openmeteo.calls_per_minute),
            ("openmeteo.calls_per_hour", self.openmeteo.calls_per_hour),
            ("openmeteo.calls_per_day", self.openmeteo.calls_per_day),
        ] {
            check(value >= 1, key, "must be at least 1")?;
        }
        check(
            (1..=crate::ingest::openmeteo::MAX_FORECAST_DAYS).contains(&self.openmeteo.forecast_days),
            "openmeteo.forecast_days",
            "must be between 1 and 15",
        )?;
        for (region, points) in &self.weather.points {
            let key = format!("weather.points.{region}");
            crate::ingest::openmeteo::check_points(region, points).map_err(|why| format!("key `{key}`: {why}"))?;
        }
        for (region, settings) in &self.regions {
            crate::ingest::check_name("region", region).map_err(|e| format!("key `regions.{region}`: {e}"))?;
            if let Some(zone) = &settings.timezone {
                crate::region::parse_zone(zone).map_err(|why| format!("key `regions.{region}.timezone`: {why}"))?;
            }
        }
        check(
            match self.model.day_ahead_stride {
                DayAheadStride::Auto => true,
                DayAheadStride::Hours(hours) => crate::features::windows::divides_a_day(hours),
            },
            "model.day_ahead_stride",
            "must be \"auto\" or divide 24 (1, 2, 3, 4, 6, 8, 12 or 24)",
        )?;
        check(self.model.horizon >= 1 && self.model.context >= 1, "model", "context and horizon must be at least 1")?;
        for (key, value) in [
            ("model.d_model", self.model.d_model),
            ("model.n_layers", self.model.n_layers),
            ("model.block_size", self.model.block_size),
            ("model.epochs", self.model.epochs),
            ("model.batch_size", self.model.batch_size),
            ("model.train_stride", self.model.train_stride),
            ("model.members", self.model.members),
        ] {
            check(value >= 1, key, "must be at least 1")?;
        }
        check(
            self.model.learning_rate.is_finite() && self.model.learning_rate > 0.0,
            "model.learning_rate",
            "must be a positive number",
        )?;
        check(
            self.model.n_heads >= 1 && self.model.d_model.is_multiple_of(self.model.n_heads),
            "model.n_heads",
            "must divide model.d_model",
        )?;
        Ok(())
    }
}

/// toml's message spans several lines (with a source excerpt); keep the key and the reason.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let reason = error.message().trim().to_string();
    let line = error.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
    let key = error.span().and_then(|span| {
        let start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
        let line = text[start..].lines().next()?;
        let key = line.split('=').next()?.trim().trim_matches(['[', ']']);
        (!key.is_empty()).then(|| key.to_string())
    });
    match (key, line) {
        (Some(key), Some(line)) => format!("key `{key}` (line {line}): {reason}"),
        (None, Some(line)) => format!("line {line}: {reason}"),
        _ => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn values_are_read() {
        let c = Config::parse("[collect]\nconcurrency = 8\n[synthetic]\nseed = 7\n").unwrap();
        assert_eq!(c.collect.concurrency, 8);
        assert_eq!(c.synthetic.seed, 7);
        assert_eq!(c.retry, RetryConfig::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[collect]\nconcurency = 8\n").unwrap_err();
        assert!(e.contains("concurency"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Config::parse("[retry]\nmax_attempts = \"many\"\n").unwrap_err();
        assert!(e.contains("max_attempts"), "{e}");
    }

    #[test]
    fn weather_points_are_read_and_checked() {
        let text = "[[weather.points.XYZ]]\nname = \"A\"\nlat = 40.0\nlon = -75.0\nweight = 2.0\n\
                    [[weather.points.XYZ]]\nname = \"B\"\nlat = 41.0\nlon = -74.0\nweight = 1.0\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(c.weather.points["XYZ"].len(), 2);
        assert_eq!(c.weather.points["XYZ"][1].name, "B");
        let e =
            Config::parse("[[weather.points.XYZ]]\nname = \"A\"\nlat = 95.0\nlon = 0.0\nweight = 1.0\n").unwrap_err();
        assert!(e.contains("weather.points.XYZ") && e.contains("lat"), "{e}");
        let e =
            Config::parse("[[weather.points.XYZ]]\nname = \"A\"\nlat = 9.0\nlon = 0.0\nweight = 0.0\n").unwrap_err();
        assert!(e.contains("weight"), "{e}");
        let e = Config::parse("[openmeteo]\nforecast_days = 16\n").unwrap_err();
        assert!(e.contains("openmeteo.forecast_days"), "{e}");
    }

    /// Small training sets train for more epochs, up to `min_steps` optimizer steps; the main
    /// job's 180 days (889 windows, 28 batches) keep their 8 epochs; 0 turns the rule off.
    #[test]
    fn small_training_sets_get_at_least_min_steps() {
        let model = ModelConfig::default();
        assert_eq!(model.epochs_for(889), 8);
        assert_eq!(model.epochs_for(952), 8);
        assert_eq!(model.epochs_for(171), 38); // 6 batches an epoch
        assert_eq!(model.epochs_for(1), 224);
        assert_eq!(model.epochs_for(0), 224);
        assert_eq!(ModelConfig { min_steps: 0, ..model.clone() }.epochs_for(171), 8);
        assert_eq!(ModelConfig { epochs: 50, ..model.clone() }.epochs_for(171), 50);
        let parsed = Config::parse("[model]\nmin_steps = 0\n").unwrap();
        assert_eq!(parsed.model.min_steps, 0);
    }

    #[test]
    fn regions_are_read_and_checked() {
        let c = Config::parse("[regions.VIC]\ntimezone = \"Etc/GMT-10\"\nholidays = \"none\"\n").unwrap();
        let settings = c.regions["VIC"].settings();
        assert_eq!(settings.zone, Some(chrono_tz::Etc::GMTMinus10));
        assert_eq!(settings.holidays, Some(crate::region::Holidays::None));
        let e = Config::parse("[regions.VIC]\ntimezone = \"Mars/Base\"\n").unwrap_err();
        assert!(e.contains("regions.VIC.timezone") && e.contains("Mars/Base"), "{e}");
        let vic = Config::parse("[regions.VIC]\nholidays = \"au-vic\"\n").unwrap();
        assert_eq!(vic.regions["VIC"].holidays, Some(crate::region::Holidays::AuVic));
        let e = Config::parse("[regions.VIC]\nholidays = \"au\"\n").unwrap_err();
        assert!(e.contains("holidays"), "{e}");
        let e = Config::parse("[regions.VIC]\nzone = \"UTC\"\n").unwrap_err();
        assert!(e.contains("zone"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::parse("[collect]\nconcurrency = 0\n").unwrap_err();
        assert!(e.contains("collect.concurrency"), "{e}");
    }

    #[test]
    fn the_day_ahead_stride_divides_a_day() {
        for stride in [1, 2, 3, 4, 6, 8, 12, 24] {
            let c = Config::parse(&format!("[model]\nday_ahead_stride = {stride}\n")).unwrap();
            assert_eq!(c.model.day_ahead_stride, DayAheadStride::Hours(stride));
            assert_eq!(c.model.day_ahead_stride.hours(100 * 24), stride);
        }
        for stride in ["0", "5", "7", "48", "\"daily\""] {
            let e = Config::parse(&format!("[model]\nday_ahead_stride = {stride}\n")).unwrap_err();
            assert!(e.contains("day_ahead_stride"), "{e}");
        }
        let auto = Config::parse("[model]\nday_ahead_stride = \"auto\"\n").unwrap().model.day_ahead_stride;
        assert_eq!(auto, Config::default().model.day_ahead_stride);
        // under a year of training days the day gets more origins, from a year on one
        assert_eq!((auto.hours(364 * 24), auto.hours(365 * 24)), (SHORT_DAY_AHEAD_STRIDE, 24));
        let text = toml::to_string(&Config::default().model).unwrap();
        assert!(text.contains("day_ahead_stride = \"auto\""), "{text}");
    }
}
