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
//!
//! Each `(respondent, kind)` is the series `(eia, RESPONDENT, KIND)`, e.g. `eia:CISO:DF` or
//! `eia:ERCO:FUEL_WND`. Values are MWh over the hour (the average MW).
//!
//! # Requests
//! One request per route asks for every respondent and kind of that route at once
//! (`facets[respondent][]=…&facets[type][]=…`), `frequency=hourly`, `data[0]=value`, sorted by
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
use super::http::{Fetched, HttpClient, Reply, Request, Secret};
use super::{Batch, IngestError, SeriesId, SeriesRows, Source};
use crate::time::{DateRange, HOUR_US};
use chrono::TimeDelta;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

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
pub const REGION_KINDS: [&str; 4] = ["D", "DF", "NG", "TI"];
/// Prefix of the stored kind of fuel-type series (`FUEL_COL`).
pub const FUEL_PREFIX: &str = "FUEL_";
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
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::RegionData => "region-data",
            Route::FuelTypeData => "fuel-type-data",
        }
    }

    /// The facet (and row member) that tells the series apart besides the respondent.
    pub fn facet(self) -> &'static str {
        match self {
            Route::RegionData => "type",
            Route::FuelTypeData => "fueltype",
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
        }
        Err(IngestError::InvalidRequest(format!(
            "unknown EIA kind `{text}`: use D, DF, NG, TI (demand, day-ahead forecast, net generation, \
             total interchange) or fuel:CODE for net generation by energy source (fuel:COL, fuel:NG, \
             fuel:NUC, fuel:OIL, fuel:SUN, fuel:WAT, fuel:WND, fuel:OTH, …)"
        )))
    }

    pub fn route(&self) -> Route {
        match self {
            EiaKind::Region(_) => Route::RegionData,
            EiaKind::Fuel(_) => Route::FuelTypeData,
        }
    }

    /// The facet value asked for (`D`, `COL`).
    pub fn code(&self) -> &str {
        match self {
            EiaKind::Region(code) | EiaKind::Fuel(code) => code,
        }
    }

    /// The stored kind (`D`, `FUEL_COL`).
    pub fn series_kind(&self) -> String {
        match self {
            EiaKind::Region(code) => code.clone(),
            EiaKind::Fuel(code) => format!("{FUEL_PREFIX}{code}"),
        }
    }
}

/// The EIA source for a set of respondents and kinds.
#[derive(Debug)]
pub struct EiaSource {
    client: HttpClient,
    base: reqwest::Url,
    key: Secret,
    respondents: Vec<String>,
    kinds: Vec<EiaKind>,
    /// Respondent-major: series `r * kinds.len() + k`.
    series: Vec<SeriesId>,
    respondent_index: HashMap<String, usize>,
    kind_index: HashMap<(Route, String), usize>,
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
        let base = reqwest::Url::parse(base_url.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                IngestError::InvalidRequest(format!(
                    "invalid EIA base URL `{}`: give http(s)://host[:port][/path], such as https://api.eia.gov",
                    super::http::redact(base_url)
                ))
            })?;
        let mut codes: Vec<String> = Vec::new();
        for respondent in respondents {
            let code = respondent.trim().to_ascii_uppercase();
            if code.is_empty() || code.len() > 16 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(IngestError::InvalidRequest(format!(
                    "invalid EIA respondent code `{respondent}`: letters and digits only, such as CISO, ERCO, PJM or US48"
                )));
            }
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
        let series = codes
            .iter()
            .flat_map(|r| unique_kinds.iter().map(move |k| SeriesId::new("eia", r, k.series_kind())))
            .collect();
        let respondent_index = codes.iter().enumerate().map(|(i, r)| (r.clone(), i)).collect();
        let kind_index = unique_kinds.iter().enumerate().map(|(i, k)| ((k.route(), k.code().to_string()), i)).collect();
        Ok(Self { client, base, key, respondents: codes, kinds: unique_kinds, series, respondent_index, kind_index })
    }

    pub fn respondents(&self) -> &[String] {
        &self.respondents
    }

    pub fn kinds(&self) -> &[EiaKind] {
        &self.kinds
    }

    fn routes(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        for kind in &self.kinds {
            if !routes.contains(&kind.route()) {
                routes.push(kind.route());
            }
        }
        routes
    }

    fn kinds_of(&self, route: Route) -> impl Iterator<Item = &EiaKind> {
        self.kinds.iter().filter(move |k| k.route() == route)
    }

    /// Rows a request of `route` for `range` can hold: one per respondent, kind and hour.
    fn max_rows(&self, route: Route, range: DateRange) -> u64 {
        (self.respondents.len() * self.kinds_of(route).count()) as u64 * range.hours().max(0) as u64
    }

    /// The URL of one page, without the key (which the client adds when it sends it).
    pub fn page_url(&self, route: Route, range: DateRange, offset: u64) -> reqwest::Url {
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}/v2/electricity/rto/{}/data/", route.name()));
        url.set_query(None);
        url.set_fragment(None);
        let hour = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H").to_string();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("frequency", "hourly");
            query.append_pair("data[0]", "value");
            for respondent in &self.respondents {
                query.append_pair("facets[respondent][]", respondent);
            }
            let facet = format!("facets[{}][]", route.facet());
            for kind in self.kinds_of(route) {
                query.append_pair(&facet, kind.code());
            }
            query.append_pair("start", &hour(range.start + TimeDelta::hours(1)));
            query.append_pair("end", &hour(range.end));
            for (i, column) in ["period", "respondent", route.facet()].iter().enumerate() {
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
    fn index_of(&self, route: Route, respondent: &str, code: &str) -> Option<usize> {
        let lookup = |respondent: &str, code: &str| {
            let r = *self.respondent_index.get(respondent)?;
            let k = *self.kind_index.get(&(route, code.to_string()))?;
            Some(r * self.kinds.len() + k)
        };
        lookup(respondent, code).or_else(|| lookup(&respondent.to_ascii_uppercase(), &code.to_ascii_uppercase()))
    }

    /// Read one page's reply into rows of the asked series (errors for failed statuses, error
    /// bodies, unreadable bodies and pages shorter than `total` promises).
    pub fn read_page(&self, reply: &Reply, route: Route, range: DateRange, offset: u64) -> Result<Page, IngestError> {
        let response = match parse_response(&reply.body) {
            Err(ParseError::Api { code, message }) => return Err(api_error(reply, code.as_deref(), &message)),
            Err(ParseError::Invalid(why)) => {
                let what = format!(
                    "expected a JSON body, got {} that does not parse ({why}), starting `{}`",
                    reply.shown_content_type(),
                    reply.snippet()
                );
                return Err(if reply.status.is_success() {
                    reply.body_error(&what)
                } else {
                    status_error(reply, &what)
                });
            }
            Ok(_) if !reply.status.is_success() => {
                return Err(status_error(reply, &format!("`{}`", reply.snippet())));
            }
            Ok(response) => response,
        };
        for warning in &response.warnings {
            if warning.starts_with("incomplete return") {
                tracing::trace!(source = "eia", %range, offset, %warning, "API warning");
            } else {
                tracing::warn!(source = "eia", %range, offset, warning = %reply.scrub(warning), "EIA API warning");
            }
        }
        let served = response.rows.len();
        if let Some(total) = response.total {
            let expected = total.saturating_sub(offset).min(PAGE_ROWS) as usize;
            if served < expected {
                return Err(reply.body_error(&format!(
                    "the page at offset {offset} holds {served} rows where a total of {total} promises {expected}"
                )));
            }
        }
        let mut page = Page { total: response.total, served, rows: Vec::with_capacity(served), unknown: 0, outside: 0 };
        for row in &response.rows {
            let Some(value) = row.value else {
                return Err(reply.format_error("rows carry no `value` (the request asks for `data[0]=value`)"));
            };
            let Some(timestamp) = parse_period(&row.period.0) else {
                return Err(reply.format_error(&format!("period `{}` is not a YYYY-MM-DDTHH hour", row.period.0)));
            };
            let code = match route {
                Route::RegionData => row.kind.as_ref(),
                Route::FuelTypeData => row.fueltype.as_ref(),
            };
            let index = match (&row.respondent, code) {
                (Some(respondent), Some(code)) => self.index_of(route, &respondent.0, &code.0),
                _ => None,
            };
            let Some(index) = index else {
                page.unknown += 1;
                continue;
            };
            if !range.holds_us(timestamp) {
                page.outside += 1;
                continue;
            }
            page.rows.push((index as u32, timestamp, value));
        }
        Ok(page)
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
                        let when = crate::time::from_us(*t).format("%Y-%m-%dT%H");
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

/// The rows of one page that belong to the asked series: `(series index, timestamp µs, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub total: Option<u64>,
    /// Rows the page held, of any series.
    pub served: usize,
    pub rows: Vec<(u32, i64, Option<f64>)>,
    /// Rows of series not asked for.
    pub unknown: usize,
    /// Rows outside the chunk.
    pub outside: usize,
}

/// An error body as an [`IngestError`]: key problems say how to set the key.
fn api_error(reply: &Reply, code: Option<&str>, message: &str) -> IngestError {
    let message = reply.scrub(message);
    let status = reply.status.as_u16();
    match code {
        Some(code) if code.starts_with("API_KEY") => IngestError::ApiKey {
            message: format!(
                "the EIA API refused the key ({code}: {message}); set a valid key in EIA_API_KEY or pass --eia-api-key KEY"
            ),
        },
        Some("OVER_RATE_LIMIT") => status_error(
            reply,
            &format!(
                "OVER_RATE_LIMIT: {message}; the key is suspended for a while: wait before running again, \
                 and keep [eia] requests_per_second and requests_per_hour at or under 5 and 9000"
            ),
        ),
        _ if reply.status.is_success() => reply.api_error(&message),
        _ if status == 403 => IngestError::ApiKey {
            message: format!(
                "the EIA API refused the request (HTTP 403: {message}); set a valid key in EIA_API_KEY or pass --eia-api-key KEY"
            ),
        },
        _ => status_error(reply, &message),
    }
}

/// A failed status as an error, with a hint for 404 and 403.
fn status_error(reply: &Reply, message: &str) -> IngestError {
    match reply.status.as_u16() {
        404 => reply.status_error(&format!(
            "{message}; check --eia-url or [eia] url: it must be the API's base URL, such as https://api.eia.gov"
        )),
        403 => IngestError::ApiKey {
            message: format!(
                "the EIA API refused the request (HTTP 403: {}); set a valid key in EIA_API_KEY or pass --eia-api-key KEY",
                reply.scrub(message)
            ),
        },
        _ => reply.status_error(message),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// A JSON string, borrowed from the body when it holds no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A number given as a JSON number, a string or null.
struct Number<T>(Option<T>);

trait FromJsonNumber: Sized {
    fn from_f64(v: f64) -> Option<Self>;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_u64(v: u64) -> Option<Self>;
    fn from_text(v: &str) -> Option<Self>;
    const WHAT: &'static str;
}

impl FromJsonNumber for f64 {
    fn from_f64(v: f64) -> Option<Self> {
        v.is_finite().then_some(v)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_text(v: &str) -> Option<Self> {
        v.parse::<f64>().ok().filter(|v| v.is_finite())
    }
    const WHAT: &'static str = "a number, a numeric string or null";
}

impl FromJsonNumber for u64 {
    fn from_f64(v: f64) -> Option<Self> {
        (v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64).then_some(v as u64)
    }
    fn from_i64(v: i64) -> Option<Self> {
        u64::try_from(v).ok()
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
    fn from_text(v: &str) -> Option<Self> {
        v.parse::<u64>().ok()
    }
    const WHAT: &'static str = "a count as a number, a string or null";
}

impl<'de, T: FromJsonNumber> Deserialize<'de> for Number<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: FromJsonNumber> Visitor<'de> for NumberVisitor<T> {
            type Value = Number<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::WHAT)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::from_f64(v).map(|v| Number(Some(v))).ok_or_else(|| E::custom(format!("{v} is not {}", T::WHAT)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::from_i64(v).map(|v| Number(Some(v))).ok_or_else(|| E::custom(format!("{v} is not {}", T::WHAT)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::from_u64(v).map(|v| Number(Some(v))).ok_or_else(|| E::custom(format!("{v} is not {}", T::WHAT)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let text = v.trim();
                if text.is_empty() {
                    return Ok(Number(None));
                }
                T::from_text(text)
                    .map(|v| Number(Some(v)))
                    .ok_or_else(|| E::custom(format!("`{v}` is not {}", T::WHAT)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Number(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Number(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_any(self)
            }
        }
        deserializer.deserialize_any(NumberVisitor(std::marker::PhantomData))
    }
}

fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Number::<u64>::deserialize(deserializer).map(|n| n.0)
}

/// `Some(value)` when the member is present (the value itself may be null).
fn present_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<f64>>, D::Error> {
    Number::<f64>::deserialize(deserializer).map(|n| Some(n.0))
}

/// One row of `response.data` (other members are ignored).
#[derive(Debug, Deserialize)]
pub struct Row<'a> {
    #[serde(borrow)]
    pub period: Text<'a>,
    #[serde(borrow, default)]
    pub respondent: Option<Text<'a>>,
    #[serde(borrow, default, rename = "type")]
    pub kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub fueltype: Option<Text<'a>>,
    /// `None`: no `value` member; `Some(None)`: a null value.
    #[serde(default, deserialize_with = "present_value")]
    pub value: Option<Option<f64>>,
}

#[derive(Deserialize)]
struct ResponseBody<'a> {
    #[serde(default, deserialize_with = "count")]
    total: Option<u64>,
    #[serde(borrow, default)]
    data: Option<Vec<Row<'a>>>,
    #[serde(default)]
    warnings: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    error: Option<ErrorMember>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorMember {
    Text(String),
    Detail {
        #[serde(default)]
        code: Option<serde_json::Value>,
        #[serde(default)]
        message: Option<String>,
    },
    Other(serde_json::Value),
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    response: Option<ResponseBody<'a>>,
    #[serde(default)]
    error: Option<ErrorMember>,
}

/// A parsed EIA body.
#[derive(Debug)]
pub struct Response<'a> {
    pub total: Option<u64>,
    pub rows: Vec<Row<'a>>,
    /// Each warning as `warning: description`.
    pub warnings: Vec<String>,
}

/// Why a body is not a response.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// The API reported an error (`{"error":"…","code":400}` or `{"error":{"code":…,"message":…}}`).
    Api { code: Option<String>, message: String },
    /// Not JSON, or JSON of another shape.
    Invalid(String),
}

/// Parse an EIA API v2 body (any version seen: see the module documentation).
pub fn parse_response(body: &[u8]) -> Result<Response<'_>, ParseError> {
    let Body { mut response, error } = serde_json::from_slice(body).map_err(|e| ParseError::Invalid(e.to_string()))?;
    if let Some(error) = error.or_else(|| response.as_mut().and_then(|r| r.error.take())) {
        return Err(error.into_parse_error());
    }
    let response = response.ok_or_else(|| ParseError::Invalid("no `response` member".into()))?;
    let warnings = response
        .warnings
        .unwrap_or_default()
        .iter()
        .map(|w| match (w.get("warning").and_then(|v| v.as_str()), w.get("description").and_then(|v| v.as_str())) {
            (Some(warning), Some(description)) => format!("{warning}: {description}"),
            (Some(text), None) | (None, Some(text)) => text.to_string(),
            _ => w.to_string(),
        })
        .collect();
    Ok(Response { total: response.total, rows: response.data.unwrap_or_default(), warnings })
}

impl ErrorMember {
    fn into_parse_error(self) -> ParseError {
        match self {
            ErrorMember::Text(message) => ParseError::Api { code: None, message },
            ErrorMember::Detail { code, message } => {
                let code = code.map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string));
                ParseError::Api { message: message.unwrap_or_else(|| code.clone().unwrap_or_default()), code }
            }
            ErrorMember::Other(value) => ParseError::Api { code: None, message: value.to_string() },
        }
    }
}

/// An EIA period as epoch microseconds: `YYYY-MM-DDTHH` (UTC) or `YYYY-MM-DDTHH±hh` (local
/// hour with its UTC offset). `None` when it is neither.
pub fn parse_period(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 13 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let number = |digits: &[u8]| -> Option<i64> {
        digits.iter().try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
    };
    let (year, month, day, hour) = (number(&b[0..4])?, number(&b[5..7])?, number(&b[8..10])?, number(&b[11..13])?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 {
        return None;
    }
    let offset_hours = match &b[13..] {
        [] => 0,
        [sign @ (b'+' | b'-'), digits @ ..] if digits.len() == 2 => {
            let hours = number(digits)?;
            if *sign == b'-' { -hours } else { hours }
        }
        _ => return None,
    };
    Some((days_from_civil(year, month, day) * 24 + hour - offset_hours) * HOUR_US)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::http::{RateLimits, RetryPolicy};
    use crate::time::from_us;
    use chrono::{TimeZone, Utc};
    use std::path::PathBuf;

    fn realdata() -> Option<PathBuf> {
        let dir = std::env::var_os("ENERGY_REALDATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata"));
        if dir.join("eia").is_dir() {
            Some(dir.join("eia"))
        } else {
            eprintln!("skipping: real data folder {} is absent (set ENERGY_REALDATA)", dir.display());
            None
        }
    }

    fn hour(y: i32, m: u32, d: u32, h: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp_micros()
    }

    fn range(start: (i32, u32, u32, u32), end: (i32, u32, u32, u32)) -> DateRange {
        DateRange::new(from_us(hour(start.0, start.1, start.2, start.3)), from_us(hour(end.0, end.1, end.2, end.3)))
            .unwrap()
    }

    fn source(respondents: &[&str], kinds: &[&str]) -> EiaSource {
        let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
        let respondents: Vec<String> = respondents.iter().map(|s| s.to_string()).collect();
        let kinds: Vec<EiaKind> = kinds.iter().map(|k| EiaKind::parse(k).unwrap()).collect();
        EiaSource::new("http://127.0.0.1:9/", Secret::new("SECRETKEY-0123456789"), &respondents, &kinds, client)
            .unwrap()
    }

    fn json_reply(status: u16, body: &str) -> Reply {
        Reply::new(status, Some("application/json"), body.as_bytes().to_vec(), "http://127.0.0.1:9/v2/x")
    }

    #[test]
    fn parses_every_real_body() {
        let Some(dir) = realdata() else { return };
        let mut files: Vec<PathBuf> = Vec::new();
        for sub in ["", "older_api"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
                if entry.path().extension().is_some_and(|e| e == "json") {
                    files.push(entry.path());
                }
            }
        }
        assert!(files.len() >= 20, "{files:?}");
        for path in &files {
            let bytes = std::fs::read(path).unwrap();
            let response = parse_response(&bytes).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            for row in &response.rows {
                assert!(parse_period(&row.period.0).is_some(), "{}: {:?}", path.display(), row.period);
                assert!(row.value.is_some(), "{}: a row without value", path.display());
            }
        }
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        // 2.1.13: strings
        let bytes = read("region-data_AEC_D_2019-01-02T00.body.json");
        let r = parse_response(&bytes).unwrap();
        assert_eq!(r.total, Some(1));
        assert_eq!(r.rows.len(), 1);
        assert_eq!(parse_period(&r.rows[0].period.0), Some(hour(2019, 1, 2, 0)));
        assert_eq!(r.rows[0].respondent.as_ref().unwrap().0, "AEC");
        assert_eq!(r.rows[0].kind.as_ref().unwrap().0, "D");
        assert_eq!(r.rows[0].value, Some(Some(486.0)));
        let bytes = read("fuel-type-data_AEC_COL_2019-01-02T00.body.json");
        let r = parse_response(&bytes).unwrap();
        assert_eq!(r.rows[0].fueltype.as_ref().unwrap().0, "COL");
        assert_eq!(r.rows[0].value, Some(Some(-3.0)));
        // 2.0.3: numbers, nulls, unknown keys, empty data
        let bytes = read("older_api/US-NW-PGE-with-nulls.json");
        let r = parse_response(&bytes).unwrap();
        assert_eq!(r.total, Some(3));
        assert_eq!(r.rows[0].value, Some(None));
        assert_eq!(r.rows[1].value, Some(Some(400.0)));
        let bytes = read("older_api/US_CAR_SC-nuclear.json");
        let r = parse_response(&bytes).unwrap();
        assert_eq!((r.total, r.rows.len()), (Some(0), 0));
        let bytes = read("older_api/US-FLA-FPC_US-FLA-FPL_exchange.json");
        let r = parse_response(&bytes).unwrap();
        assert_eq!((r.total, r.rows.len()), (Some(25), 25));
        assert_eq!(r.rows[0].value, Some(Some(-329.0)));
    }

    #[test]
    fn parses_the_real_error_and_warning_snippets() {
        let Some(dir) = realdata() else { return };
        let read = |name: &str| std::fs::read(dir.join("snippets").join(name)).unwrap();
        let bytes = read("error_400_invalid_frequency.transcript.json");
        match parse_response(&bytes) {
            Err(ParseError::Api { code: None, message }) => assert!(message.starts_with("Invalid frequency 'yearly'")),
            other => panic!("{other:?}"),
        }
        let bytes = read("error_400_invalid_data_column.transcript.json");
        assert!(
            matches!(parse_response(&bytes), Err(ParseError::Api { message, .. }) if message.contains("Invalid data"))
        );
        let bytes = read("error_403_API_KEY_MISSING.transcript.json");
        match parse_response(&bytes) {
            Err(ParseError::Api { code: Some(code), message }) => {
                assert_eq!(code, "API_KEY_MISSING");
                assert!(message.starts_with("No api_key was supplied"));
            }
            other => panic!("{other:?}"),
        }
        let bytes = read("error_404_not_found.transcript.json");
        assert_eq!(parse_response(&bytes).unwrap_err(), ParseError::Api { code: None, message: "Not found.".into() });
        let bytes = read("electric-power-operational-data_length10_warning_apiv2.1.8.transcript.json");
        let r = parse_response(&bytes).unwrap();
        assert_eq!(r.total, Some(4_184_767));
        assert!(r.warnings[0].starts_with("incomplete return: The API can only return 5000 rows"));
        assert!(r.rows.iter().all(|row| row.value.is_none()), "its rows carry `generation`, not `value`");
        let bytes = read("fuel-type-data_SRP_NUC_local-hourly_2023-03_warning_truncated.txt");
        assert!(matches!(parse_response(&bytes), Err(ParseError::Invalid(why)) if why.contains("trailing")));
    }

    #[test]
    fn values_and_totals_as_strings_numbers_or_null() {
        let body = r#"{"response":{"total":"4","query execution":0.1,"data":[
            {"period":"2024-01-01T01","respondent":"CISO","type":"D","value":"21000.5","extra":{"a":[1]}},
            {"period":"2024-01-01T02","respondent":"CISO","type":"D","value":-12},
            {"period":"2024-01-01T03","respondent":"CISO","type":"D","value":null},
            {"period":"2024-01-01T04","respondent":"CI\u0053O","type":"D","value":".306"}]},
            "apiVersion":"2.9.9","new":true}"#;
        let r = parse_response(body.as_bytes()).unwrap();
        let values: Vec<Option<Option<f64>>> = r.rows.iter().map(|row| row.value).collect();
        assert_eq!(values, [Some(Some(21000.5)), Some(Some(-12.0)), Some(None), Some(Some(0.306))]);
        assert_eq!(r.rows[3].respondent.as_ref().unwrap().0, "CISO");
        for (total, expected) in [(r#""12""#, Some(12)), ("12", Some(12)), ("null", None), ("12.0", Some(12))] {
            let body = format!(r#"{{"response":{{"total":{total},"data":[]}}}}"#);
            assert_eq!(parse_response(body.as_bytes()).unwrap().total, expected, "{total}");
        }
        let bad = r#"{"response":{"total":"1","data":[{"period":"2024-01-01T01","value":"n/a"}]}}"#;
        assert!(matches!(parse_response(bad.as_bytes()), Err(ParseError::Invalid(why)) if why.contains("n/a")));
        assert!(matches!(parse_response(b"{}"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse_response(b""), Err(ParseError::Invalid(_))));
    }

    #[test]
    fn periods_are_utc_hour_ends() {
        assert_eq!(parse_period("2019-01-02T00"), Some(hour(2019, 1, 2, 0)));
        assert_eq!(parse_period("2024-02-29T23"), Some(hour(2024, 2, 29, 23)));
        assert_eq!(parse_period("2023-03-20T00-07"), Some(hour(2023, 3, 20, 7)));
        assert_eq!(parse_period("2023-03-20T09+05"), Some(hour(2023, 3, 20, 4)));
        for bad in
            ["2019-13-01T00", "2019-02-29T00", "2019-01-02T24", "2019-01-02", "2019-01-0xT00", "2019-01-02T00Z", ""]
        {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
        // agrees with chrono over two centuries
        let mut t = Utc.with_ymd_and_hms(1950, 1, 1, 0, 0, 0).unwrap();
        while t.year_ce().1 < 2150 {
            assert_eq!(parse_period(&t.format("%Y-%m-%dT%H").to_string()), Some(t.timestamp_micros()));
            t += TimeDelta::hours(37);
        }
    }

    use chrono::Datelike;

    #[test]
    fn kinds_parse_and_name_their_series() {
        assert_eq!(EiaKind::parse("df").unwrap(), EiaKind::Region("DF".into()));
        assert_eq!(EiaKind::parse("fuel:col").unwrap(), EiaKind::Fuel("COL".into()));
        assert_eq!(EiaKind::parse("FUEL_NG").unwrap().series_kind(), "FUEL_NG");
        assert_eq!(EiaKind::parse("NG").unwrap().route(), Route::RegionData);
        for bad in ["X", "fuel:", "fuel:../x", "TEMP", ""] {
            let e = EiaKind::parse(bad).unwrap_err();
            assert!(e.is_bad_input() && e.to_string().contains("fuel:CODE"), "{bad}: {e}");
        }
        let s = source(&["ciso", "ERCO", "CISO"], &["D", "fuel:SUN", "D"]);
        let ids: Vec<String> = s.series().iter().map(ToString::to_string).collect();
        assert_eq!(ids, ["eia:CISO:D", "eia:CISO:FUEL_SUN", "eia:ERCO:D", "eia:ERCO:FUEL_SUN"]);
        let client = || HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
        let key = || Secret::new("K-0123456789");
        for bad in ["CI/SO", "CA ISO", ""] {
            let e = EiaSource::new("http://h", key(), &[bad.to_string()], &[], client()).unwrap_err();
            assert!(e.is_bad_input(), "{e}");
        }
        assert!(EiaSource::new("http://h", key(), &[], &[], client()).unwrap_err().is_bad_input());
        assert!(EiaSource::new("ftp://h", key(), &["CISO".into()], &[], client()).unwrap_err().is_bad_input());
        let e = EiaSource::new("http://h", Secret::new(" "), &["CISO".into()], &[], client()).unwrap_err();
        assert!(e.to_string().contains("EIA_API_KEY") && e.is_bad_input(), "{e}");
    }

    #[test]
    fn requests_carry_the_exact_parameters() {
        let s = source(&["CISO", "ERCO"], &["D", "DF", "fuel:COL"]);
        let chunk = range((2024, 1, 1, 0), (2024, 1, 8, 0));
        let url = s.page_url(Route::RegionData, chunk, 5000);
        assert_eq!(url.path(), "/v2/electricity/rto/region-data/data/");
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let expected: Vec<(String, String)> = [
            ("frequency", "hourly"),
            ("data[0]", "value"),
            ("facets[respondent][]", "CISO"),
            ("facets[respondent][]", "ERCO"),
            ("facets[type][]", "D"),
            ("facets[type][]", "DF"),
            ("start", "2024-01-01T01"),
            ("end", "2024-01-08T00"),
            ("sort[0][column]", "period"),
            ("sort[0][direction]", "asc"),
            ("sort[1][column]", "respondent"),
            ("sort[1][direction]", "asc"),
            ("sort[2][column]", "type"),
            ("sort[2][direction]", "asc"),
            ("offset", "5000"),
            ("length", "5000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(pairs, expected);
        let fuel = s.page_url(Route::FuelTypeData, chunk, 0);
        assert_eq!(fuel.path(), "/v2/electricity/rto/fuel-type-data/data/");
        let fuel_pairs: Vec<String> = fuel.query_pairs().map(|(k, v)| format!("{k}={v}")).collect();
        assert!(fuel_pairs.contains(&"facets[fueltype][]=COL".to_string()), "{fuel_pairs:?}");
        assert!(fuel_pairs.contains(&"sort[2][column]=fueltype".to_string()), "{fuel_pairs:?}");
        assert!(!fuel_pairs.iter().any(|p| p.starts_with("facets[type]")), "{fuel_pairs:?}");
        // the key is never in the URL: the client adds it when it sends
        assert!(!url.as_str().contains("api_key") && !url.as_str().contains("SECRETKEY"));
        assert!(!format!("{s:?}").contains("SECRETKEY"));
        // a base with a path prefix (a proxy) keeps it
        let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
        let proxied =
            EiaSource::new("https://proxy.example/eia/", Secret::new("KEY-0123"), &["PJM".into()], &[], client)
                .unwrap();
        assert_eq!(proxied.page_url(Route::RegionData, chunk, 0).path(), "/eia/v2/electricity/rto/region-data/data/");
    }

    #[test]
    fn chunks_are_months_unless_a_month_passes_the_page_cap() {
        assert_eq!(source(&["CISO"], &["D", "DF"]).chunk_len(), TimeDelta::days(31));
        let many: Vec<String> = (0..70).map(|i| format!("R{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        // 280 series: a month is 208,320 rows, 42 pages
        assert_eq!(source(&many, &["D", "DF", "NG", "TI"]).chunk_len(), TimeDelta::days(31));
        // 840 series: 380 hours make 319,200 rows, 64 pages
        let s = source(
            &many,
            &[
                "D", "DF", "NG", "TI", "fuel:COL", "fuel:NG", "fuel:NUC", "fuel:OIL", "fuel:SUN", "fuel:WAT",
                "fuel:WND", "fuel:OTH",
            ],
        );
        assert_eq!(s.chunk_len(), TimeDelta::hours(380));
        assert_eq!(s.settle_time(), TimeDelta::hours(48));
    }

    #[test]
    fn a_page_splits_into_its_series_and_checks_its_size() {
        let s = source(&["CISO", "ERCO"], &["D", "DF"]);
        let chunk = range((2024, 1, 1, 0), (2024, 1, 1, 2));
        let body = r#"{"response":{"total":"9","data":[
            {"period":"2024-01-01T01","respondent":"CISO","type":"D","value":"1"},
            {"period":"2024-01-01T01","respondent":"CISO","type":"DF","value":"2"},
            {"period":"2024-01-01T01","respondent":"ERCO","type":"D","value":3},
            {"period":"2024-01-01T01","respondent":"ERCO","type":"DF","value":null},
            {"period":"2024-01-01T01","respondent":"ERCO","type":"NG","value":"9"},
            {"period":"2024-01-01T02","respondent":"CISO","type":"D","value":"5"},
            {"period":"2024-01-01T02","respondent":"CISO","type":"D","value":"55"},
            {"period":"2024-01-01T02","respondent":"ciso","type":"df","value":"6"},
            {"period":"2024-01-01T03","respondent":"ERCO","type":"D","value":"7"}]}}"#;
        let page = s.read_page(&json_reply(200, body), Route::RegionData, chunk, 0).unwrap();
        assert_eq!((page.served, page.unknown, page.outside, page.rows.len()), (9, 1, 1, 7));
        let series = s.assemble(chunk, &[page]);
        let t1 = hour(2024, 1, 1, 1);
        let t2 = hour(2024, 1, 1, 2);
        assert_eq!(series[0].timestamps, [t1, t2]);
        assert_eq!(series[0].values, [Some(1.0), Some(5.0)], "the first of a duplicated period is kept");
        assert_eq!(series[1].values, [Some(2.0), Some(6.0)]);
        assert_eq!(series[2].values, [Some(3.0)]);
        assert_eq!(series[3].values, [None]);
        // a page shorter than its total promises is retried
        let short = r#"{"response":{"total":"3","data":[{"period":"2024-01-01T01","respondent":"CISO","type":"D","value":"1"}]}}"#;
        let e = s.read_page(&json_reply(200, short), Route::RegionData, chunk, 0).unwrap_err();
        assert!(e.is_transient() && e.to_string().contains("promises 3"), "{e}");
        let no_value =
            r#"{"response":{"total":"1","data":[{"period":"2024-01-01T01","respondent":"CISO","type":"D"}]}}"#;
        let e = s.read_page(&json_reply(200, no_value), Route::RegionData, chunk, 0).unwrap_err();
        assert!(!e.is_transient() && e.to_string().contains("data[0]=value"), "{e}");
        // empty data and total 0 are fine
        let empty = s.read_page(&json_reply(200, r#"{"response":{"total":0,"data":[]}}"#), Route::RegionData, chunk, 0);
        assert_eq!(empty.unwrap().rows.len(), 0);
    }

    #[test]
    fn error_replies_become_clear_errors() {
        let s = source(&["CISO"], &["D"]);
        let chunk = range((2024, 1, 1, 0), (2024, 1, 1, 2));
        let read = |reply: Reply| s.read_page(&reply, Route::RegionData, chunk, 0).unwrap_err();
        let e = read(json_reply(403, r#"{"error":{"code":"API_KEY_INVALID","message":"The key is not valid."}}"#));
        assert!(matches!(e, IngestError::ApiKey { .. }) && !e.is_transient() && e.is_bad_input(), "{e}");
        assert!(e.to_string().contains("EIA_API_KEY") && e.to_string().contains("--eia-api-key"), "{e}");
        let e = read(json_reply(400, r#"{"error":"Invalid frequency 'yearly' provided.","code":400}"#));
        assert!(matches!(e, IngestError::Http { status: 400, .. }) && !e.is_transient(), "{e}");
        assert!(e.to_string().contains("Invalid frequency 'yearly' provided."), "{e}");
        // error in a 200 body (older API versions)
        let e = read(json_reply(200, r#"{"error":"Invalid data 'x' provided.","code":400}"#));
        assert!(matches!(e, IngestError::Api { .. }) && !e.is_transient(), "{e}");
        assert!(e.to_string().contains("Invalid data 'x' provided."), "{e}");
        let e = read(json_reply(404, r#"{"error":"Not found.","code":404}"#));
        assert!(matches!(e, IngestError::Http { status: 404, .. }) && !e.is_transient(), "{e}");
        assert!(e.to_string().contains("--eia-url"), "{e}");
        let e = read(json_reply(429, r#"{"error":{"code":"OVER_RATE_LIMIT","message":"slow down"}}"#));
        assert!(e.is_transient() && e.to_string().contains("OVER_RATE_LIMIT"), "{e}");
        let html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
        let e = read(Reply::new(502, Some("text/html"), html, "http://h/v2"));
        assert!(matches!(e, IngestError::Http { status: 502, .. }) && e.is_transient(), "{e}");
        let e = read(Reply::new(200, Some("text/html; charset=utf-8"), html, "http://h/v2"));
        assert!(matches!(e, IngestError::Body { .. }) && e.is_transient(), "{e}");
        assert!(e.to_string().contains("text/html") && e.to_string().contains("<title>502 Bad Gateway"), "{e}");
        let e =
            read(Reply::new(200, Some("application/json"), r#"{"response":{"total":"1","data":[{"per"#, "http://h"));
        assert!(matches!(e, IngestError::Body { .. }) && e.is_transient(), "{e}");
        let e = read(Reply::new(503, None, "", "http://h"));
        assert!(e.is_transient(), "{e}");
        let e = read(Reply::new(501, None, "", "http://h"));
        assert!(!e.is_transient(), "{e}");
    }

    /// A 5000-row page of the real row shape, `rows` rows over CISO and ERCO × D, DF, NG, TI.
    pub(crate) fn big_page(rows: usize) -> (String, DateRange) {
        let kinds = ["D", "DF", "NG", "TI"];
        let start = hour(2024, 1, 1, 0);
        let mut data = Vec::with_capacity(rows);
        for i in 0..rows {
            let (h, rest) = (i / 8, i % 8);
            let respondent = if rest < 4 {
                ("CISO", "California Independent System Operator")
            } else {
                ("ERCO", "Electric Reliability Council of Texas, Inc.")
            };
            let t = from_us(start + (h as i64 + 1) * HOUR_US);
            data.push(format!(
                r#"{{"period":"{}","respondent":"{}","respondent-name":"{}","type":"{}","type-name":"Demand","value":"{}","value-units":"megawatthours"}}"#,
                t.format("%Y-%m-%dT%H"),
                respondent.0,
                respondent.1,
                kinds[rest % 4],
                20_000 + (i * 37) % 9000
            ));
        }
        let body = format!(
            r#"{{"response":{{"warnings":[{{"warning":"incomplete return","description":"The API can only return 5000 rows in JSON format.  Please consider constraining your request with facet, start, or end, or using offset to paginate results."}}],"total":"{rows}","dateFormat":"YYYY-MM-DD\"T\"HH24","frequency":"hourly","data":[{}],"description":"Hourly demand, day-ahead demand forecast, net generation, and interchange by balancing authority.  \n    Source: Form EIA-930\n    Product: Hourly Electric Grid Monitor"}},"request":{{"command":"\/v2\/electricity\/rto\/region-data\/data\/","params":{{"api_key":"MOCK_API_KEY","frequency":"hourly","data":["value"],"facets":{{"respondent":["CISO","ERCO"],"type":["D","DF","NG","TI"]}},"start":"2024-01-01T01","end":"2024-02-01T00","sort":[{{"column":"period","direction":"asc"}}],"offset":"0","length":"5000"}}}},"apiVersion":"2.1.13","ExcelAddInVersion":"2.1.0"}}"#,
            data.join(",")
        );
        let hours = rows.div_ceil(8) as i64;
        (body, DateRange::new(from_us(start), from_us(start + hours * HOUR_US)).unwrap())
    }

    #[test]
    fn a_full_page_of_the_real_shape_reads_whole() {
        let s = source(&["CISO", "ERCO"], &["D", "DF", "NG", "TI"]);
        let (body, chunk) = big_page(5000);
        let page = s.read_page(&json_reply(200, &body), Route::RegionData, chunk, 0).unwrap();
        assert_eq!((page.served, page.rows.len(), page.unknown, page.outside), (5000, 5000, 0, 0));
    }

    /// Parse throughput of a full page: `cargo test --lib parse_throughput -- --ignored --nocapture`
    /// (add `--release` for the optimised figure).
    #[test]
    #[ignore]
    fn parse_throughput() {
        let s = source(&["CISO", "ERCO"], &["D", "DF", "NG", "TI"]);
        let (body, chunk) = big_page(5000);
        let reply = json_reply(200, &body);
        let rounds = 200;
        let started = std::time::Instant::now();
        let mut rows = 0;
        for _ in 0..rounds {
            rows += s.read_page(&reply, Route::RegionData, chunk, 0).unwrap().rows.len();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "parsed {rows} rows ({} bytes a page) in {seconds:.3} s: {:.0} rows/s, {:.0} MB/s (debug_assertions: {})",
            body.len(),
            rows as f64 / seconds,
            (body.len() * rounds) as f64 / seconds / 1e6,
            cfg!(debug_assertions)
        );
    }
}
