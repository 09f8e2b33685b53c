//! The EIA API v2 source: the hourly electric grid monitor (Form EIA-930).
//!
//! # What it collects
//! `--region` (repeatable, required) names respondents: balancing authorities such as `CISO`,
//! `ERCO`, `PJM`, or totals such as `CAL`, `TEX`, `US48` (letters and digits, upper-cased).
//! `--kind` (comma-separated, default `D`) names what to collect for each of them:
//!
//! | `--kind` | route | facet | stored kind |
//! |---|---|---|---|
//! | `D` demand, `DF` the BA's day-ahead demand forecast, `NG` net generation, `TI` total interchange | `electricity/rto/region-data` | `type` | `D`, `DF`, `NG`, `TI` |
//! | `fuel:CODE` (or `FUEL_CODE`): net generation from one energy source, e.g. `fuel:COL`, `fuel:NG`, `fuel:NUC`, `fuel:OIL`, `fuel:SUN`, `fuel:WAT`, `fuel:WND`, `fuel:OTH` | `electricity/rto/fuel-type-data` | `fueltype` | `FUEL_CODE` |
//! | `ID`: interchange between two BAs, for a region `FROM-TO` (`AEC-MISO`) | `electricity/rto/interchange-data` | `fromba`, `toba` | `ID` |
//! | `D` for a sub-region `PARENT.SUB` (`CISO.PGAE`) | `electricity/rto/region-sub-ba-data` | `parent`, `subba` | `D` |
//!
//! Each `(region, kind)` is the series `(eia, REGION, KIND)`, e.g. `eia:CISO:DF`,
//! `eia:ERCO:FUEL_WND` (the `FUEL_` prefix keeps gas generation `FUEL_NG` apart from net
//! generation `NG`), `eia:AEC-MISO:ID`, `eia:CISO.PGAE:D`. A pair holds interchange only and a
//! sub-region demand only; other combinations are refused. Values are MWh over the hour (the
//! average MW). `--region all` is resolved to every respondent before the source is made
//! ([`respondents`], the `facet` module).
//!
//! # Requests
//! One request per route asks for every region and kind of that route at once
//! (`facets[respondent][]=…&facets[type][]=…`; `fromba`/`toba` and `parent`/`subba` likewise,
//! the cross product of the named values, rows of pairs not asked for dropped), `frequency=hourly`, `data[0]=value`, sorted by
//! period, respondent and type, so that pages fill up: the API serves at most [`PAGE_ROWS`]
//! rows a page. A chunk ([`Source::chunk_len`]) is a calendar month (the store's partition), or
//! shorter when a month of every series would pass [`MAX_PAGES_PER_CHUNK`] pages. The first page
//! of a chunk gives `total`; the other pages are then fetched concurrently, all through the
//! shared [`HttpClient`] and its rate limiter.
//!
//! Why months rather than chunks of a few pages: every chunk rewrites one partition file per
//! series, so short chunks of many series spend their time in the store. Measured (debug build,
//! 280 series, 397,600 rows, a local server adding 200 ms a reply, default limits): 4-page chunks
//! collected 6,546 rows/s, month chunks 22,616 rows/s, 90 % of the 25,000 rows/s the limits allow.
//!
//! The chunk `(start, end]` of interval ends is asked as `start=` the hour after `start` and
//! `end=` `end`, both inclusive, in the `YYYY-MM-DDTHH` form.
//!
//! # Time
//! With `frequency=hourly`, `period` is the UTC hour **ending** at that time (`2019-01-02T00`
//! covers 23:00–00:00), which is the store's interval-end timestamp as it is. A `local-hourly`
//! period (`2023-03-20T00-07`) is read too, converted to UTC.
//!
//! # What it accepts and checks
//! `total`, `value`, `offset` and `length` as strings, numbers or null; `warnings` (the
//! "incomplete return" one is expected while paging); unknown members; an empty `data`. Both
//! error shapes, in any status including 200. Every page must hold the rows `total` promises
//! and report the same `total`; otherwise the chunk is fetched again (transient error). A period
//! given twice in a series keeps its first row (a warning when the values differ). Rows outside
//! the chunk or of series not asked for are dropped (logged at debug).
//!
//! # Errors
//! 403 (`API_KEY_MISSING`, `API_KEY_INVALID`) says how to set `EIA_API_KEY`; 400 shows the
//! API's message; neither is retried, nor is 404. 429, 5xx, timeouts, resets and unreadable
//! bodies are retried by the client. The key never appears in a URL, error or log line.
//!
//! # Layout
//! - this file: the source: kinds, requests, paging and chunking, assembling series.
//! - `facet`: `--region all`: the respondent facet of a route, cached in the store's catalog.
//! - `response`: the wire format: JSON pages into rows, error bodies into [`IngestError`]s.
//! - [`fake`]: the one EIA test double (page generator and local HTTP server) that `energy
//!   bench`, the tests and the benches use.
mod facet;
mod response;
#[cfg(test)]
mod tests;

pub mod fake;

pub use facet::{ALL_REGIONS, facet_name, facet_url, read_facet, respondents};
pub use response::{Page, ParseError, Response, Row, Text, parse_period, parse_response};

use super::http::{Fetched, HttpClient, Request, Secret};
use super::{Batch, IngestError, SeriesId, SeriesRows, Source};
use crate::time::{DateRange, HOUR_US, format_hour};
use chrono::TimeDelta;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;

/// Most rows the API serves in one JSON page.
pub const PAGE_ROWS: u64 = 5000;
/// Most pages of rows in a chunk: a calendar month of every series unless that holds more.
pub const MAX_PAGES_PER_CHUNK: u64 = 64;
/// Pages of one chunk in flight at once (the rate limiter is the real bound).
const PAGE_CONCURRENCY: usize = 8;
/// Recent hours get revised: chunks ending less than this before the collection are fetched
/// again next time.
pub const SETTLE_HOURS: i64 = 48;
/// The region-data types.
/// The balancing authority's own day-ahead demand forecast.
pub const KIND_DAY_AHEAD: &str = "DF";
pub const REGION_KINDS: [&str; 4] = [super::KIND_DEMAND, KIND_DAY_AHEAD, "NG", "TI"];
/// Prefix of the stored kind of fuel-type series (`FUEL_COL`).
pub const FUEL_PREFIX: &str = "FUEL_";
/// How long a respondent list (`--region all`) stays cached, by default.
pub const FACET_MAX_AGE_HOURS: u32 = 24;
/// Requests a second the API allows one key (also its burst).
pub const REQUESTS_PER_SECOND: u32 = 5;
/// Requests an hour the API allows one key.
pub const REQUESTS_PER_HOUR: u32 = 9_000;
/// What to tell a user without a key.
pub const MISSING_KEY: &str = "the EIA API needs a key: set EIA_API_KEY or pass --eia-api-key KEY \
     (register for a free key at https://www.eia.gov/opendata/register.php)";

/// An EIA data route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `electricity/rto/region-data`: facet `type`.
    RegionData,
    /// `electricity/rto/fuel-type-data`: facet `fueltype`.
    FuelTypeData,
    /// `electricity/rto/interchange-data`: facets `fromba`, `toba`.
    Interchange,
    /// `electricity/rto/region-sub-ba-data`: facets `parent`, `subba`.
    SubBa,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::RegionData => "region-data",
            Route::FuelTypeData => "fuel-type-data",
            Route::Interchange => "interchange-data",
            Route::SubBa => "region-sub-ba-data",
        }
    }

    /// The facet (and row member) that names the region: the respondent, the sending BA, the
    /// parent BA.
    pub fn region_facet(self) -> &'static str {
        match self {
            Route::RegionData | Route::FuelTypeData => "respondent",
            Route::Interchange => "fromba",
            Route::SubBa => "parent",
        }
    }

    /// The path of the route's data below the API's base URL.
    pub fn data_path(self) -> String {
        format!("/v2/electricity/rto/{}/data/", self.name())
    }

    /// The facet (and row member) that tells the series apart besides the respondent.
    pub fn facet(self) -> &'static str {
        match self {
            Route::RegionData => "type",
            Route::FuelTypeData => "fueltype",
            Route::Interchange => "toba",
            Route::SubBa => "subba",
        }
    }
}

/// A kind of EIA series (see the module documentation for the syntax).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EiaKind {
    /// `D`, `DF`, `NG` or `TI`.
    Region(String),
    /// A fuel-type code: `COL`, `NG`, `SUN`, …
    Fuel(String),
    /// `ID`: the interchange between two balancing authorities (region `FROM-TO`).
    Interchange,
}

impl EiaKind {
    /// `D`, `df`, `fuel:COL`, `FUEL_COL` (case does not matter).
    pub fn parse(text: &str) -> Result<Self, IngestError> {
        let upper = text.trim().to_ascii_uppercase();
        if let Some(code) = upper.strip_prefix("FUEL:").or_else(|| upper.strip_prefix(FUEL_PREFIX)) {
            if !code.is_empty() && code.len() <= 8 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Ok(EiaKind::Fuel(code.to_string()));
            }
        } else if REGION_KINDS.contains(&upper.as_str()) {
            return Ok(EiaKind::Region(upper));
        } else if upper == KIND_INTERCHANGE {
            return Ok(EiaKind::Interchange);
        }
        Err(IngestError::InvalidRequest(format!(
            "unknown EIA kind `{text}`: use D, DF, NG, TI (demand, day-ahead forecast, net generation, \
             total interchange), ID (interchange between two BAs, region FROM-TO) or fuel:CODE for net generation by energy source (fuel:COL, fuel:NG, \
             fuel:NUC, fuel:OIL, fuel:SUN, fuel:WAT, fuel:WND, fuel:OTH, …)"
        )))
    }

    /// The route of this kind for a respondent (a sub-region's demand has its own route:
    /// [`EiaSource::new`] decides by the region).
    pub fn route(&self) -> Route {
        match self {
            EiaKind::Region(_) => Route::RegionData,
            EiaKind::Fuel(_) => Route::FuelTypeData,
            EiaKind::Interchange => Route::Interchange,
        }
    }

    /// The facet value asked for (`D`, `COL`; `ID` for interchange, whose facets are BAs).
    pub fn code(&self) -> &str {
        match self {
            EiaKind::Region(code) | EiaKind::Fuel(code) => code,
            EiaKind::Interchange => KIND_INTERCHANGE,
        }
    }

    /// The stored kind (`D`, `FUEL_COL`, `ID`).
    pub fn series_kind(&self) -> String {
        match self {
            EiaKind::Region(code) => code.clone(),
            EiaKind::Fuel(code) => format!("{FUEL_PREFIX}{code}"),
            EiaKind::Interchange => KIND_INTERCHANGE.to_string(),
        }
    }
}

/// The stored kind of the interchange between two balancing authorities (region `FROM-TO`).
pub const KIND_INTERCHANGE: &str = "ID";
/// Between the two balancing authorities of an interchange region: `AEC-MISO`.
pub const INTERCHANGE_SEPARATOR: char = '-';
/// Between a parent balancing authority and its sub-region: `CISO.PGAE`.
pub const SUB_REGION_SEPARATOR: char = '.';

/// A code the API knows: letters and digits, upper-cased.
fn code_of(text: &str) -> Option<String> {
    let code = text.trim().to_ascii_uppercase();
    (!code.is_empty() && code.len() <= 16 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(code)
}

/// What one `(region, kind)` asks of which route: `(route, region facet value, second facet
/// value)`, and the stored region.
fn series_key(region: &str, kind: &EiaKind) -> Result<((Route, String, String), String), IngestError> {
    let bad = |why: &str| {
        IngestError::InvalidRequest(format!(
            "invalid EIA region `{region}` for kind {}: {why}; a region is a respondent (CISO, ERCO, PJM, US48), \
             a pair FROM-TO with kind ID (AEC-MISO), or a sub-region PARENT.SUB with kind D (CISO.PGAE)",
            kind.series_kind()
        ))
    };
    let split = |separator: char| -> Result<Option<(String, String)>, IngestError> {
        match region.split_once(separator) {
            None => Ok(None),
            Some((first, second)) => match (code_of(first), code_of(second)) {
                (Some(first), Some(second)) => Ok(Some((first, second))),
                _ => Err(bad("each side is letters and digits only")),
            },
        }
    };
    if let EiaKind::Interchange = kind {
        let (from, to) = split(INTERCHANGE_SEPARATOR)?.ok_or_else(|| bad("interchange needs FROM-TO"))?;
        let stored = format!("{from}{INTERCHANGE_SEPARATOR}{to}");
        return Ok(((Route::Interchange, from, to), stored));
    }
    if let Some((parent, sub)) = split(SUB_REGION_SEPARATOR)? {
        if *kind != EiaKind::Region(super::KIND_DEMAND.into()) {
            return Err(bad("a sub-region holds demand (D) only"));
        }
        let stored = format!("{parent}{SUB_REGION_SEPARATOR}{sub}");
        return Ok(((Route::SubBa, parent, sub), stored));
    }
    if region.contains(INTERCHANGE_SEPARATOR) {
        return Err(bad("a pair FROM-TO holds interchange (ID) only"));
    }
    let code = code_of(region).ok_or_else(|| {
        IngestError::InvalidRequest(format!(
            "invalid EIA respondent code `{region}`: letters and digits only, such as CISO, ERCO, PJM or US48 \
             (or a pair FROM-TO with kind ID, a sub-region PARENT.SUB with kind D)"
        ))
    })?;
    Ok(((kind.route(), code.clone(), kind.code().to_string()), code))
}

/// The EIA source for a set of respondents and kinds.
#[derive(Debug)]
pub struct EiaSource {
    client: HttpClient,
    base: reqwest::Url,
    key: Secret,
    respondents: Vec<String>,
    kinds: Vec<EiaKind>,
    /// Region-major: for each region, each kind.
    series: Vec<SeriesId>,
    /// What each series asks of which route: `(route, region facet value, second facet value)`.
    keys: Vec<(Route, String, String)>,
    key_index: HashMap<(Route, String, String), usize>,
}

impl EiaSource {
    /// A source asking `base_url` (e.g. `https://api.eia.gov`) with `key` for `respondents` ×
    /// `kinds` (`D` when empty).
    pub fn new(
        base_url: &str,
        key: Secret,
        respondents: &[String],
        kinds: &[EiaKind],
        client: HttpClient,
    ) -> Result<Self, IngestError> {
        if key.expose().trim().is_empty() {
            return Err(IngestError::ApiKey { message: MISSING_KEY.into() });
        }
        let base = Self::parse_base(base_url)?;
        let mut codes: Vec<String> = Vec::new();
        for respondent in respondents {
            let code = respondent.trim().to_ascii_uppercase();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
        if codes.is_empty() {
            return Err(IngestError::InvalidRequest(
                "the EIA source needs at least one --region (a respondent such as CISO, ERCO, PJM or US48)".into(),
            ));
        }
        let mut unique_kinds: Vec<EiaKind> = Vec::new();
        for kind in kinds {
            if !unique_kinds.contains(kind) {
                unique_kinds.push(kind.clone());
            }
        }
        if unique_kinds.is_empty() {
            unique_kinds.push(EiaKind::Region("D".into()));
        }
        let (mut series, mut keys, mut key_index) = (Vec::new(), Vec::new(), HashMap::new());
        for region in &codes {
            for kind in &unique_kinds {
                let (key, stored) = series_key(region, kind)?;
                if key_index.contains_key(&key) {
                    continue;
                }
                key_index.insert(key.clone(), keys.len());
                keys.push(key);
                series.push(SeriesId::new("eia", stored, kind.series_kind()));
            }
        }
        Ok(Self { client, base, key, respondents: codes, kinds: unique_kinds, series, keys, key_index })
    }

    /// The API's base URL, checked: http(s) with a host.
    pub fn parse_base(base_url: &str) -> Result<reqwest::Url, IngestError> {
        reqwest::Url::parse(base_url.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                IngestError::InvalidRequest(format!(
                    "invalid EIA base URL `{}`: give http(s)://host[:port][/path], such as https://api.eia.gov",
                    super::http::redact(base_url)
                ))
            })
    }

    pub fn respondents(&self) -> &[String] {
        &self.respondents
    }

    pub fn kinds(&self) -> &[EiaKind] {
        &self.kinds
    }

    fn routes(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        for (route, _, _) in &self.keys {
            if !routes.contains(route) {
                routes.push(*route);
            }
        }
        routes
    }

    /// The values of the region facet and of the second facet a request of `route` asks for.
    fn facet_values(&self, route: Route) -> (Vec<&str>, Vec<&str>) {
        let (mut firsts, mut seconds): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for (_, first, second) in self.keys.iter().filter(|key| key.0 == route) {
            if !firsts.contains(&first.as_str()) {
                firsts.push(first);
            }
            if !seconds.contains(&second.as_str()) {
                seconds.push(second);
            }
        }
        (firsts, seconds)
    }

    /// Rows a request of `route` for `range` can hold: one per pair of facet values and hour.
    fn max_rows(&self, route: Route, range: DateRange) -> u64 {
        let (firsts, seconds) = self.facet_values(route);
        (firsts.len() * seconds.len()) as u64 * range.hours().max(0) as u64
    }

    /// The URL of one page, without the key (which the client adds when it sends it).
    pub fn page_url(&self, route: Route, range: DateRange, offset: u64) -> reqwest::Url {
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{}", route.data_path()));
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("frequency", "hourly");
            query.append_pair("data[0]", "value");
            let (firsts, seconds) = self.facet_values(route);
            let facet = format!("facets[{}][]", route.region_facet());
            for first in firsts {
                query.append_pair(&facet, first);
            }
            let facet = format!("facets[{}][]", route.facet());
            for second in seconds {
                query.append_pair(&facet, second);
            }
            query.append_pair("start", &format_hour(range.start_us() + HOUR_US));
            query.append_pair("end", &format_hour(range.end_us()));
            for (i, column) in ["period", route.region_facet(), route.facet()].iter().enumerate() {
                query.append_pair(&format!("sort[{i}][column]"), column);
                query.append_pair(&format!("sort[{i}][direction]"), "asc");
            }
            query.append_pair("offset", &offset.to_string());
            query.append_pair("length", &PAGE_ROWS.to_string());
        }
        url
    }

    fn page_request(&self, route: Route, range: DateRange, offset: u64) -> Request {
        Request::get("eia", range, self.page_url(route, range, offset)).with_secret("api_key", self.key.clone())
    }

    /// The series index of a row, if it is one asked for.
    fn index_of(&self, route: Route, region: &str, code: &str) -> Option<usize> {
        let lookup =
            |region: &str, code: &str| self.key_index.get(&(route, region.to_string(), code.to_string())).copied();
        lookup(region, code).or_else(|| lookup(&region.to_ascii_uppercase(), &code.to_ascii_uppercase()))
    }

    async fn fetch_page(&self, route: Route, range: DateRange, offset: u64) -> Result<Fetched<Page>, IngestError> {
        let request = self.page_request(route, range, offset);
        self.client.fetch(&request, |reply| self.read_page(reply, route, range, offset)).await
    }

    /// Every page of one route for `range`, in offset order, with the attempts they took.
    async fn fetch_route(&self, route: Route, range: DateRange) -> Result<(Vec<Page>, u32), IngestError> {
        let first = self.fetch_page(route, range, 0).await?;
        let mut attempts = first.attempts;
        let mut pages = vec![first.value];
        let max_rows = self.max_rows(route, range);
        let too_many = |total: u64| IngestError::Format {
            url: self.page_request(route, range, 0).shown_url(),
            message: format!(
                "the API reports {total} rows for a request that holds at most {max_rows} (one per respondent, kind and hour)"
            ),
        };
        match pages[0].total {
            Some(total) => {
                // a duplicate row or two is tolerated (and dropped); an absurd total is not paged through
                if total > 2 * max_rows + PAGE_ROWS {
                    return Err(too_many(total));
                }
                let offsets: Vec<u64> = (1..).map(|k| k * PAGE_ROWS).take_while(|o| *o < total).collect();
                let rest: Vec<Fetched<Page>> = futures::stream::iter(offsets)
                    .map(|offset| self.fetch_page(route, range, offset))
                    .buffered(PAGE_CONCURRENCY)
                    .try_collect()
                    .await?;
                for (k, fetched) in rest.into_iter().enumerate() {
                    attempts += fetched.attempts;
                    if fetched.value.total != Some(total) {
                        let offset = (k as u64 + 1) * PAGE_ROWS;
                        return Err(IngestError::Body {
                            url: self.page_request(route, range, offset).shown_url(),
                            message: format!(
                                "the total changed from {total} to {} between pages (data revised while paging)",
                                fetched.value.total.map_or("none".to_string(), |t| t.to_string())
                            ),
                        });
                    }
                    pages.push(fetched.value);
                }
            }
            None => {
                // no total: page until a short page
                let mut offset = 0;
                while pages.last().is_some_and(|p| p.served as u64 >= PAGE_ROWS) {
                    offset += PAGE_ROWS;
                    if offset > 2 * max_rows + PAGE_ROWS {
                        return Err(too_many(offset));
                    }
                    let fetched = self.fetch_page(route, range, offset).await?;
                    attempts += fetched.attempts;
                    pages.push(fetched.value);
                }
            }
        }
        Ok((pages, attempts))
    }

    /// Pages' rows into one sorted series each; a period given twice keeps its first row.
    fn assemble(&self, range: DateRange, pages: &[Page]) -> Vec<SeriesRows> {
        let mut out: Vec<SeriesRows> = self.series.iter().map(|id| SeriesRows::new(id.clone())).collect();
        let (mut unknown, mut outside) = (0, 0);
        for page in pages {
            unknown += page.unknown;
            outside += page.outside;
            for &(index, timestamp, value) in &page.rows {
                let series = &mut out[index as usize];
                series.timestamps.push(timestamp);
                series.values.push(value);
            }
        }
        if unknown > 0 || outside > 0 {
            tracing::debug!(source = "eia", %range, unknown, outside, "dropped rows of series not asked for or outside the chunk");
        }
        for series in &mut out {
            if !series.timestamps.is_sorted() {
                let mut order: Vec<usize> = (0..series.len()).collect();
                order.sort_by_key(|&i| series.timestamps[i]); // stable: the first row stays first
                series.timestamps = order.iter().map(|&i| series.timestamps[i]).collect();
                series.values = order.iter().map(|&i| series.values[i]).collect();
            }
            if series.timestamps.windows(2).any(|w| w[0] == w[1]) {
                let (mut timestamps, mut values) = (Vec::with_capacity(series.len()), Vec::with_capacity(series.len()));
                for (t, v) in series.timestamps.iter().zip(&series.values) {
                    if timestamps.last() == Some(t) {
                        let kept: &Option<f64> = values.last().expect("a value per timestamp");
                        let when = format_hour(*t);
                        if kept != v {
                            tracing::warn!(source = "eia", series = %series.id, period = %when, ?kept, dropped = ?v, "period given twice with different values: kept the first");
                        } else {
                            tracing::debug!(source = "eia", series = %series.id, period = %when, "period given twice");
                        }
                        continue;
                    }
                    timestamps.push(*t);
                    values.push(*v);
                }
                series.timestamps = timestamps;
                series.values = values;
            }
        }
        out
    }
}

impl Source for EiaSource {
    fn name(&self) -> &'static str {
        "eia"
    }

    /// A calendar month (31 days or more make the orchestrator split at months), or the hours
    /// that fill [`MAX_PAGES_PER_CHUNK`] pages when a month of every series holds more.
    fn chunk_len(&self) -> TimeDelta {
        let rows_per_hour = self.series.len().max(1) as i64;
        let hours = ((MAX_PAGES_PER_CHUNK * PAGE_ROWS) as i64 / rows_per_hour).max(1);
        if hours >= 31 * 24 { TimeDelta::days(31) } else { TimeDelta::hours(hours) }
    }

    fn series(&self) -> Vec<SeriesId> {
        self.series.clone()
    }

    fn settle_time(&self) -> TimeDelta {
        TimeDelta::hours(SETTLE_HOURS)
    }

    async fn fetch(&self, range: DateRange) -> Result<Batch, IngestError> {
        if range.hours() <= 0 {
            return Ok(Batch { series: self.assemble(range, &[]), requests: 0, retries: 0 });
        }
        let routes = self.routes();
        let fetched = futures::future::try_join_all(routes.iter().map(|route| self.fetch_route(*route, range))).await?;
        let (mut pages, mut requests, mut retries) = (Vec::new(), 0, 0);
        for (route_pages, attempts) in fetched {
            requests += attempts;
            retries += attempts - route_pages.len() as u32;
            pages.extend(route_pages);
        }
        let series = self.assemble(range, &pages);
        tracing::debug!(source = "eia", %range, requests, retries, rows = series.iter().map(SeriesRows::len).sum::<usize>(), "fetched chunk");
        Ok(Batch { series, requests, retries })
    }
}
