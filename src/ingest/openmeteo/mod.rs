//! The Open-Meteo weather source: temperature, dew point and solar radiation of a region, as
//! the weighted mean over its population centres. No key is needed (non-commercial use);
//! "Weather data by Open-Meteo.com", CC BY 4.0.
//!
//! # What it collects
//! `--region` (repeatable, required) names a region of the built-in table of population centres
//! (ERCO, CISO, PJM, MISO, NYIS, ISNE, SWPP, BPAT, FPL, SOCO, TVA, DUK, PACE, AZPS; see
//! `points`) or one given as `[[weather.points.CODE]]` tables in `energy.toml` (which also
//! replace a built-in region's points). `--kind` (comma-separated, default `TEMP`):
//!
//! | `--kind` | API (endpoint) | hourly variable | stored kind |
//! |---|---|---|---|
//! | `TEMP`, `DEWPOINT` (°C), `GHI` (W/m²) observed: reanalysis | archive (`/v1/archive`) | `temperature_2m`, `dew_point_2m`, `shortwave_radiation` | `TEMP`, `DEWPOINT`, `GHI` |
//! | `TEMP_D1` … `TEMP_D7` (likewise `DEWPOINT_DN`, `GHI_DN`) as issued: the value forecast N days before the valid hour | previous runs (`/v1/forecast` on `previous-runs-api`) | `temperature_2m_previous_dayN`, … | `TEMP_DN`, … |
//! | `TEMP_FCST` (`DEWPOINT_FCST`, `GHI_FCST`) the live forecast of the hours ahead | forecast (`/v1/forecast`) | `temperature_2m`, … | `TEMP_FCST`, … |
//!
//! Each `(region, kind)` is the series `(openmeteo, REGION, KIND)`, e.g. `openmeteo:ERCO:TEMP_D1`.
//! The flavours are separate kinds so that a backtest can never mix an observation with a
//! forecast. The archive reaches back to 1940, the previous runs to 2016 (most models hold them
//! from 2024, GFS temperature from 2021; earlier hours are null); days outside what an API
//! accepts are not asked for. `_FCST` kinds are collected for the window from today 00:00 UTC
//! to `[openmeteo] forecast_days` (default 7) days ahead, whatever range the other kinds use,
//! and are fetched again each time (a forecast is never settled): the stored value of an hour
//! is the latest forecast collected for it.
//!
//! # A region's value
//! The weighted mean of its points' values (weights: population). At an hour where some points
//! are null, those are left out and the others' weights renormalised; where every point is
//! null, the stored value is null.
//!
//! # Time
//! Requests ask for `timezone=GMT`, so times come back in UTC (a body with another
//! `utc_offset_seconds` is converted with that one fixed offset, never a per-date lookup). The
//! store keys an hour by its interval **end**; an Open-Meteo time stamp `t` is stored at `t`:
//! an instantaneous value (`temperature_2m`, `dew_point_2m`: the value at `HH:00`) is the value
//! at the end of the hour `(HH−1:00, HH:00]`, and a preceding-hour mean (`shortwave_radiation`)
//! is the mean over that very hour. The chunk `(start, end]` is asked as the UTC days of
//! `start + 1h` to `end`, both included, and rows outside the chunk are dropped.
//!
//! # Requests
//! One call per endpoint and chunk (calendar months, the store's partitions) asks for every
//! point of every region at once (comma lists of `latitude`/`longitude`; the answer is a JSON
//! array matched by position) and every variable of that endpoint, split when a call would
//! exceed [`request::MAX_LOCATIONS`] locations or [`request::MAX_CALL_WEIGHT`] weighted calls.
//! `[openmeteo] model` asks for one model (`models=…`; keys stay plain; a body whose keys carry
//! a model suffix is read by that suffix). Calls go one at a time through the shared
//! [`HttpClient`], whose limiter keeps any minute, hour and day within `[openmeteo]
//! calls_per_minute`, `calls_per_hour`, `calls_per_day` (the free API's 600, 5,000, 10,000),
//! each call counting its weight: per location `max(1, max(v/10, d/14·v/10))` for `v`
//! variables and `d` days.
//!
//! `--openmeteo-url URL` (or `[openmeteo] url`) points every endpoint at one server:
//! `URL/v1/archive` and `URL/v1/forecast` (previous runs are told apart by their variables).
//! With `OPENMETEO_API_KEY` set, calls go to the `customer-` hosts with `&apikey=`, which
//! never appears in a message, log line or file.
//!
//! # Errors
//! 400 shows the body's `reason` and is not retried. 429 "minutely" is retried after the next
//! minute boundary; "hourly" or "daily" stops the collection (no further request is sent) and
//! says when to run it again; other 429s and 5xx are retried with backoff. A 200 body that is not
//! JSON (`{"latitude":nan,…}` for a point outside a model's coverage) is a bad response naming
//! it, retried only when it is cut short; an answer with another number of locations, a missing
//! variable or an unexpected unit is an error naming it.
//!
//! # Layout
//! - this file: kinds and the source (the request plan, weighted means);
//! - `request`: endpoints, allowed days, URLs and call weights;
//! - `response`: bodies into locations, error bodies and statuses into [`IngestError`]s;
//! - `points`: the built-in population centres, `[weather.points]`, the weighted mean.
mod points;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use points::{BUILT_IN, check_points, points_of, unknown_region, weighted_mean};
pub use request::{Call, Endpoint, Endpoints, MAX_CALL_WEIGHT, MAX_LOCATIONS, call_weight, check_model, groups};
pub use response::{BodyError, Limit, Location, classify_429, error_reason, parse_body, read_reply, until_next_minute};

use super::http::{HttpClient, Request, RetryPolicy, Secret};
use super::{Batch, IngestError, SeriesId, SeriesRows, Source};
use crate::config::WeatherPoint;
use crate::time::DateRange;
use chrono::{NaiveDate, TimeDelta};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `source=` name of the series.
pub const SOURCE: &str = "openmeteo";
/// The free API's limits, in weighted calls (`[openmeteo]` may lower or raise them).
pub const CALLS_PER_MINUTE: u32 = 600;
pub const CALLS_PER_HOUR: u32 = 5_000;
pub const CALLS_PER_DAY: u32 = 10_000;
/// Most days of the live forecast (the forecast API accepts today + 15).
pub const MAX_FORECAST_DAYS: u32 = 15;
/// Most days before the valid hour an as-issued value can be asked for (`_previous_day7`).
pub const MAX_LEAD_DAYS: u8 = 7;
/// A 429 "minutely" waits up to a minute: the retry policy allows that long a wait.
pub const MIN_MAX_DELAY: Duration = Duration::from_secs(65);
/// Reanalysis replaces the model's recent days after about five days.
const ARCHIVE_SETTLE_DAYS: i64 = 7;
/// As-issued values of the last days fill in as runs are made.
const PREVIOUS_RUNS_SETTLE_DAYS: i64 = 2;
/// A live forecast changes with every run: never settled.
const FORECAST_SETTLE_DAYS: i64 = 3650;
/// What to tell a user with an unknown kind.
const KINDS_HELP: &str = "TEMP, DEWPOINT, GHI (observed), TEMP_D1 … TEMP_D7 (as issued 1 to 7 days before; \
     likewise DEWPOINT_DN, GHI_DN) or TEMP_FCST (the live forecast; likewise DEWPOINT_FCST, GHI_FCST)";

/// A weather variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variable {
    /// Air temperature at 2 m, °C (instantaneous).
    Temp,
    /// Dew point at 2 m, °C (instantaneous).
    Dewpoint,
    /// Global horizontal irradiance, W/m² (mean of the preceding hour).
    Ghi,
}

impl Variable {
    pub const ALL: [Variable; 3] = [Variable::Temp, Variable::Dewpoint, Variable::Ghi];

    /// The stored kind's stem.
    pub fn code(self) -> &'static str {
        match self {
            Variable::Temp => "TEMP",
            Variable::Dewpoint => "DEWPOINT",
            Variable::Ghi => "GHI",
        }
    }

    /// The API's hourly variable.
    pub fn api_name(self) -> &'static str {
        match self {
            Variable::Temp => "temperature_2m",
            Variable::Dewpoint => "dew_point_2m",
            Variable::Ghi => "shortwave_radiation",
        }
    }

    /// The unit the API reports in `hourly_units`.
    pub fn unit(self) -> &'static str {
        match self {
            Variable::Temp | Variable::Dewpoint => "°C",
            Variable::Ghi => "W/m²",
        }
    }
}

/// Which values of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flavour {
    /// Reanalysis (archive API).
    Observed,
    /// Forecast this many days (1 to 7) before the valid hour (previous-runs API).
    AsIssued(u8),
    /// The latest forecast (forecast API).
    Forecast,
}

/// A kind of Open-Meteo series: a variable and a flavour (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpenmeteoKind {
    pub variable: Variable,
    pub flavour: Flavour,
}

impl OpenmeteoKind {
    pub const TEMP: OpenmeteoKind = OpenmeteoKind { variable: Variable::Temp, flavour: Flavour::Observed };

    /// `TEMP`, `temp_d2`, `GHI_FCST`, … (case does not matter).
    pub fn parse(text: &str) -> Result<Self, IngestError> {
        let upper = text.trim().to_ascii_uppercase();
        let unknown = || IngestError::InvalidRequest(format!("unknown Open-Meteo kind `{text}`: use {KINDS_HELP}"));
        let (stem, flavour) = match upper.rsplit_once('_') {
            Some((stem, "FCST")) => (stem, Flavour::Forecast),
            Some((stem, lead)) if lead.len() == 2 && lead.starts_with('D') => {
                let days: u8 = lead[1..].parse().map_err(|_| unknown())?;
                if !(1..=MAX_LEAD_DAYS).contains(&days) {
                    return Err(IngestError::InvalidRequest(format!(
                        "Open-Meteo kind `{text}`: as-issued values reach 1 to {MAX_LEAD_DAYS} days back (_D1 … _D7)"
                    )));
                }
                (stem, Flavour::AsIssued(days))
            }
            _ => (upper.as_str(), Flavour::Observed),
        };
        let variable = Variable::ALL.into_iter().find(|v| v.code() == stem).ok_or_else(unknown)?;
        Ok(Self { variable, flavour })
    }

    /// The stored kind: `TEMP`, `TEMP_D1`, `TEMP_FCST`.
    pub fn series_kind(self) -> String {
        let code = self.variable.code();
        match self.flavour {
            Flavour::Observed => code.to_string(),
            Flavour::AsIssued(days) => format!("{code}_D{days}"),
            Flavour::Forecast => format!("{code}_FCST"),
        }
    }

    pub fn endpoint(self) -> Endpoint {
        match self.flavour {
            Flavour::Observed => Endpoint::Archive,
            Flavour::AsIssued(_) => Endpoint::PreviousRuns,
            Flavour::Forecast => Endpoint::Forecast,
        }
    }

    /// The hourly variable asked for: `temperature_2m`, `temperature_2m_previous_day3`.
    pub fn api_variable(self) -> String {
        match self.flavour {
            Flavour::AsIssued(days) => format!("{}_previous_day{days}", self.variable.api_name()),
            Flavour::Observed | Flavour::Forecast => self.variable.api_name().to_string(),
        }
    }

    pub fn is_forecast(self) -> bool {
        self.flavour == Flavour::Forecast
    }
}

/// The retry policy of Open-Meteo calls: `policy`, allowed to wait past a minute boundary.
pub fn retry_policy(policy: &RetryPolicy) -> RetryPolicy {
    RetryPolicy { max_delay: policy.max_delay.max(MIN_MAX_DELAY), ..policy.clone() }
}

/// For each (region index, kind), hour → the (value, weight) of each point that reported it.
type PointValues = HashMap<(usize, OpenmeteoKind), BTreeMap<i64, Vec<(Option<f64>, f64)>>>;

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct Settings {
    /// One server for every endpoint (`--openmeteo-url`), or the public hosts.
    pub url: Option<String>,
    /// The commercial API key (`customer-` hosts, `&apikey=`).
    pub key: Option<Secret>,
    /// One model, or the API's `best_match`.
    pub model: Option<String>,
    /// Today (UTC), for the days each endpoint accepts.
    pub today: NaiveDate,
}

/// A region and its points.
#[derive(Debug, Clone)]
struct Region {
    code: String,
    points: Vec<WeatherPoint>,
}

/// The Open-Meteo source for a set of regions and kinds.
#[derive(Debug)]
pub struct OpenmeteoSource {
    client: HttpClient,
    endpoints: Endpoints,
    settings: Settings,
    regions: Vec<Region>,
    kinds: Vec<OpenmeteoKind>,
    /// Every region's points, in region order: the locations of a call.
    points: Vec<WeatherPoint>,
    /// The region of each point.
    point_region: Vec<usize>,
    /// An hourly or daily limit was reached (the error's URL and message): later fetches send
    /// nothing and fail with it.
    stopped: Arc<Mutex<Option<(String, String)>>>,
}

impl OpenmeteoSource {
    /// A source for `regions` (their points from `configured`, else the built-in table) ×
    /// `kinds` (`TEMP` when empty).
    pub fn new(
        regions: &[String],
        kinds: &[OpenmeteoKind],
        configured: &BTreeMap<String, Vec<WeatherPoint>>,
        settings: Settings,
        client: HttpClient,
    ) -> Result<Self, IngestError> {
        let endpoints = Endpoints::new(settings.url.as_deref(), settings.key.is_some())?;
        if let Some(model) = &settings.model {
            check_model(model)?;
        }
        let mut unique: Vec<Region> = Vec::new();
        for code in regions {
            let code = code.trim();
            super::check_name("region", code)?;
            if unique.iter().any(|r| r.code == code) {
                continue;
            }
            let points =
                points_of(code, configured).ok_or_else(|| IngestError::InvalidRequest(unknown_region(code)))?;
            check_points(code, &points)
                .map_err(|why| IngestError::InvalidRequest(format!("`[weather.points.{code}]`: {why}")))?;
            unique.push(Region { code: code.to_string(), points });
        }
        if unique.is_empty() {
            return Err(IngestError::InvalidRequest(super::SourceKind::Openmeteo.region_hint().to_string()));
        }
        let mut unique_kinds: Vec<OpenmeteoKind> = Vec::new();
        for kind in kinds {
            if !unique_kinds.contains(kind) {
                unique_kinds.push(*kind);
            }
        }
        if unique_kinds.is_empty() {
            unique_kinds.push(OpenmeteoKind::TEMP);
        }
        let points = unique.iter().flat_map(|r| r.points.iter().cloned()).collect();
        let point_region =
            unique.iter().enumerate().flat_map(|(i, r)| std::iter::repeat_n(i, r.points.len())).collect();
        Ok(Self {
            client,
            endpoints,
            settings,
            regions: unique,
            kinds: unique_kinds,
            points,
            point_region,
            stopped: Arc::new(Mutex::new(None)),
        })
    }

    /// This source, stopping when `other` reaches an hourly or daily limit and the other way
    /// round (two collections of one command: the API counts them together).
    pub fn sharing_stop_with(mut self, other: &OpenmeteoSource) -> Self {
        self.stopped = other.stopped.clone();
        self
    }

    pub fn kinds(&self) -> &[OpenmeteoKind] {
        &self.kinds
    }

    pub fn regions(&self) -> Vec<&str> {
        self.regions.iter().map(|r| r.code.as_str()).collect()
    }

    fn endpoints_used(&self) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self.kinds.iter().map(|k| k.endpoint()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The calls that fetch `endpoint`'s kinds for `range`: the days it needs within those the
    /// API accepts, its points split into groups; none when no needed day is accepted.
    pub fn calls(
        &self,
        endpoint: Endpoint,
        range: DateRange,
        variables: &[String],
    ) -> Vec<(std::ops::Range<usize>, NaiveDate, NaiveDate)> {
        let (low, high) = endpoint.allowed_days(self.settings.today);
        let first = (range.start + TimeDelta::hours(1)).date_naive().max(low);
        let last = range.end.date_naive().min(high);
        if range.hours() <= 0 || first > last {
            return Vec::new();
        }
        let days = (last - first).num_days() + 1;
        groups(self.points.len(), variables.len(), days).into_iter().map(|g| (g, first, last)).collect()
    }

    /// Fetch one endpoint's kinds for `range` into `values`: for each (region, kind), hour →
    /// the (value, weight) of each of the region's points that reported the hour.
    async fn fetch_endpoint(
        &self,
        endpoint: Endpoint,
        range: DateRange,
        kinds: &[OpenmeteoKind],
        values_of: &mut PointValues,
        batch: &mut Batch,
    ) -> Result<(), IngestError> {
        let mut variables: Vec<String> = kinds.iter().map(|k| k.api_variable()).collect();
        variables.dedup();
        let model = self.settings.model.as_deref();
        for (group, first, last) in self.calls(endpoint, range, &variables) {
            if let Some((url, message)) = self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return Err(IngestError::LimitReached { url, message });
            }
            let call =
                Call { endpoint, points: &self.points[group.clone()], variables: &variables, model, first, last };
            let mut request = Request::get(SOURCE, range, call.url(&self.endpoints)).with_weight(call.weight());
            if let Some(key) = &self.settings.key {
                request = request.with_secret("apikey", key.clone());
            }
            let fetched = match self.client.fetch(&request, |reply| read_reply(reply, group.len())).await {
                Ok(fetched) => fetched,
                Err(error) => {
                    if let IngestError::LimitReached { url, message } = &error {
                        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some((url.clone(), message.clone()));
                    }
                    return Err(error);
                }
            };
            batch.requests += fetched.attempts;
            batch.retries += fetched.attempts - 1;
            for (location, point_index) in fetched.value.iter().zip(group) {
                let region = self.point_region[point_index];
                let weight = self.points[point_index].weight;
                for &kind in kinds {
                    let variable = kind.api_variable();
                    let shown = request.shown_url();
                    let column = location.column(&variable, model).map_err(|message| IngestError::Format {
                        url: shown.clone(),
                        message: format!("location {} ({}): {message}", point_index + 1, self.points[point_index].name),
                    })?;
                    if let Some(unit) = location.unit(&variable).filter(|u| *u != kind.variable.unit()) {
                        return Err(IngestError::Format {
                            url: shown,
                            message: format!("`{variable}` is in `{unit}`, not `{}`", kind.variable.unit()),
                        });
                    }
                    let hours = values_of.entry((region, kind)).or_default();
                    for (&t, value) in location.times_us.iter().zip(column) {
                        if range.holds_us(t) {
                            hours.entry(t).or_default().push((*value, weight));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Source for OpenmeteoSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    /// Calendar months (31 days make the orchestrator split at months).
    fn chunk_len(&self) -> TimeDelta {
        TimeDelta::days(31)
    }

    /// Region-major: every kind of the first region, then the next.
    fn series(&self) -> Vec<SeriesId> {
        self.regions
            .iter()
            .flat_map(|r| self.kinds.iter().map(move |k| SeriesId::new(SOURCE, &r.code, k.series_kind())))
            .collect()
    }

    /// The model and the points: a chunk collected with other points is collected again.
    fn params(&self) -> String {
        let mut hasher = crc32fast::Hasher::new();
        for (point, region) in self.points.iter().zip(&self.point_region) {
            let line =
                format!("{}|{}|{}|{}|{}\n", self.regions[*region].code, point.name, point.lat, point.lon, point.weight);
            hasher.update(line.as_bytes());
        }
        format!("model={};points={:08x}", self.settings.model.as_deref().unwrap_or("best_match"), hasher.finalize())
    }

    fn settle_time(&self) -> TimeDelta {
        let days = self
            .kinds
            .iter()
            .map(|k| match k.flavour {
                Flavour::Observed => ARCHIVE_SETTLE_DAYS,
                Flavour::AsIssued(_) => PREVIOUS_RUNS_SETTLE_DAYS,
                Flavour::Forecast => FORECAST_SETTLE_DAYS,
            })
            .max()
            .unwrap_or(0);
        TimeDelta::days(days)
    }

    async fn fetch(&self, range: DateRange) -> Result<Batch, IngestError> {
        let mut batch = Batch::default();
        let mut values = PointValues::new();
        // the orchestrator's chunks are months already; a direct caller's range may not be
        for piece in range.month_chunks() {
            for endpoint in self.endpoints_used() {
                let kinds: Vec<OpenmeteoKind> =
                    self.kinds.iter().copied().filter(|k| k.endpoint() == endpoint).collect();
                self.fetch_endpoint(endpoint, piece, &kinds, &mut values, &mut batch).await?;
            }
        }
        for (r, region) in self.regions.iter().enumerate() {
            for &kind in &self.kinds {
                let mut rows = SeriesRows::new(SeriesId::new(SOURCE, &region.code, kind.series_kind()));
                for (t, points) in values.remove(&(r, kind)).unwrap_or_default() {
                    rows.timestamps.push(t);
                    rows.values.push(weighted_mean(points));
                }
                batch.series.push(rows);
            }
        }
        tracing::debug!(source = SOURCE, %range, requests = batch.requests, retries = batch.retries, rows = batch.rows(), "fetched chunk");
        Ok(batch)
    }
}
