//! Requests: the three endpoints and the dates each allows, the URL of one call, and the call's
//! weight under the free API's limits.
use crate::config::WeatherPoint;
use crate::ingest::IngestError;
use chrono::{Days, NaiveDate};

/// The public hosts; with an API key, the same with `customer-` in front.
const ARCHIVE_HOST: &str = "archive-api.open-meteo.com";
const FORECAST_HOST: &str = "api.open-meteo.com";
const PREVIOUS_RUNS_HOST: &str = "previous-runs-api.open-meteo.com";
/// Most locations one call asks for (the API caps them too; its cap is not documented).
pub const MAX_LOCATIONS: usize = 100;
/// Most weight one call may carry: the API refuses calls over 5,000 with HTTP 400; a tenth of
/// that keeps one call from spending a minute's allowance.
pub const MAX_CALL_WEIGHT: f64 = 500.0;
/// First day the previous-runs API accepts.
const PREVIOUS_RUNS_FIRST: (i32, u32, u32) = (2016, 1, 1);
/// First day the archive accepts.
const ARCHIVE_FIRST: (i32, u32, u32) = (1940, 1, 1);
/// Days after today the forecast and previous-runs APIs accept.
const DAYS_AHEAD: u64 = 15;
/// Days before today the forecast API accepts (it documents 92 past days; the code takes 93).
const FORECAST_PAST_DAYS: u64 = 92;

/// An Open-Meteo API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `/v1/archive`: reanalysis (ERA5 and successors), recent days from the IFS model.
    Archive,
    /// `/v1/forecast` on the previous-runs host: `…_previous_dayN`.
    PreviousRuns,
    /// `/v1/forecast`: the latest run.
    Forecast,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Archive => "archive",
            Endpoint::PreviousRuns => "previous-runs",
            Endpoint::Forecast => "forecast",
        }
    }

    fn host(self) -> &'static str {
        match self {
            Endpoint::Archive => ARCHIVE_HOST,
            Endpoint::PreviousRuns => PREVIOUS_RUNS_HOST,
            Endpoint::Forecast => FORECAST_HOST,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Endpoint::Archive => "/v1/archive",
            Endpoint::PreviousRuns | Endpoint::Forecast => "/v1/forecast",
        }
    }

    /// The first and last day (UTC) the API accepts when today is `today`; outside it answers
    /// HTTP 400.
    pub fn allowed_days(self, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        let date = |(y, m, d): (i32, u32, u32)| NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN);
        let ahead = today.checked_add_days(Days::new(DAYS_AHEAD)).unwrap_or(today);
        match self {
            Endpoint::Archive => (date(ARCHIVE_FIRST), today),
            Endpoint::PreviousRuns => (date(PREVIOUS_RUNS_FIRST), ahead),
            Endpoint::Forecast => (today.checked_sub_days(Days::new(FORECAST_PAST_DAYS)).unwrap_or(today), ahead),
        }
    }
}

/// The URL of each endpoint.
#[derive(Debug, Clone)]
pub struct Endpoints {
    archive: reqwest::Url,
    previous_runs: reqwest::Url,
    forecast: reqwest::Url,
}

impl Endpoints {
    /// Every endpoint at `base` (`--openmeteo-url`: `{base}/v1/archive`, `{base}/v1/forecast`;
    /// the previous-runs variables tell that API apart), or the public hosts, `customer-` ones
    /// when `commercial` (an API key is given).
    pub fn new(base: Option<&str>, commercial: bool) -> Result<Self, IngestError> {
        let url = |endpoint: Endpoint| -> Result<reqwest::Url, IngestError> {
            let text = match base {
                Some(base) => format!("{}{}", base.trim().trim_end_matches('/'), endpoint.path()),
                None if commercial => format!("https://customer-{}{}", endpoint.host(), endpoint.path()),
                None => format!("https://{}{}", endpoint.host(), endpoint.path()),
            };
            reqwest::Url::parse(&text)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host() && url.query().is_none())
                .ok_or_else(|| {
                    IngestError::InvalidRequest(format!(
                        "invalid Open-Meteo URL `{}`: give http(s)://host[:port][/path], such as http://localhost:8080",
                        super::super::http::redact(base.unwrap_or_default())
                    ))
                })
        };
        Ok(Self {
            archive: url(Endpoint::Archive)?,
            previous_runs: url(Endpoint::PreviousRuns)?,
            forecast: url(Endpoint::Forecast)?,
        })
    }

    pub fn url(&self, endpoint: Endpoint) -> &reqwest::Url {
        match endpoint {
            Endpoint::Archive => &self.archive,
            Endpoint::PreviousRuns => &self.previous_runs,
            Endpoint::Forecast => &self.forecast,
        }
    }
}

/// What one call asks for: its points, variables and days (both included, UTC).
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub endpoint: Endpoint,
    pub points: &'a [WeatherPoint],
    pub variables: &'a [String],
    pub model: Option<&'a str>,
    pub first: NaiveDate,
    pub last: NaiveDate,
}

impl Call<'_> {
    /// The URL, without the API key (the client adds it): comma lists of coordinates (the
    /// answer is then a JSON array, in this order), `hourly`, `start_date`/`end_date`,
    /// `timezone=GMT`, and `models` when one is configured. Built by hand, so commas and
    /// names read as the API documents them.
    pub fn url(&self, endpoints: &Endpoints) -> reqwest::Url {
        let mut url = endpoints.url(self.endpoint).clone();
        let join = |values: Vec<String>| values.join(",");
        let mut query = format!(
            "latitude={}&longitude={}&hourly={}&start_date={}&end_date={}&timezone=GMT",
            join(self.points.iter().map(|p| p.lat.to_string()).collect()),
            join(self.points.iter().map(|p| p.lon.to_string()).collect()),
            self.variables.join(","),
            self.first.format("%Y-%m-%d"),
            self.last.format("%Y-%m-%d"),
        );
        if let Some(model) = self.model {
            query.push_str(&format!("&models={model}"));
        }
        url.set_query(Some(&query));
        url
    }

    pub fn days(&self) -> i64 {
        (self.last - self.first).num_days() + 1
    }

    pub fn weight(&self) -> f64 {
        call_weight(self.points.len(), self.variables.len(), self.days())
    }
}

/// The weight of a call as the free API counts it: per location
/// `max(1, max(v/10, d/14 · v/10))` with `v` variables (× models) and `d` days, summed over
/// locations.
pub fn call_weight(locations: usize, variables: usize, days: i64) -> f64 {
    let v = variables as f64 / 10.0;
    let d = days.max(1) as f64 / 14.0;
    locations as f64 * 1f64.max(v.max(d * v))
}

/// Split `points` into runs of consecutive points that one call may carry: at most
/// [`MAX_LOCATIONS`] and at most [`MAX_CALL_WEIGHT`] (at least one point a call).
pub fn groups(points: usize, variables: usize, days: i64) -> Vec<std::ops::Range<usize>> {
    let per_point = call_weight(1, variables, days);
    let by_weight = (MAX_CALL_WEIGHT / per_point).floor() as usize;
    let size = by_weight.clamp(1, MAX_LOCATIONS);
    (0..points).step_by(size).map(|start| start..(start + size).min(points)).collect()
}

/// A model name as the API spells them (`best_match`, `gfs_seamless`, `ecmwf_ifs025`).
pub fn check_model(model: &str) -> Result<(), IngestError> {
    let ok = !model.is_empty()
        && model.len() <= 64
        && model.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(IngestError::InvalidRequest(format!(
            "invalid Open-Meteo model `{model}` (`[openmeteo] model`): one name of lowercase letters, digits and \
             `_`, such as best_match, gfs_seamless or ecmwf_ifs025"
        )))
    }
}
