//! The CAISO OASIS source: system and TAC-area load, actual and forecast (`SLD_FCST`).
//!
//! # What it collects
//! `--region` (repeatable) names TAC areas as OASIS spells them in `TAC_AREA_NAME`; the default
//! is `CA ISO-TAC`, the CAISO system total (others: `PGE-TAC`, `SCE-TAC`, `SDGE-TAC`, `AVA`, …).
//! `--kind` (comma-separated, default `ACTUAL`) names the runs:
//!
//! | `--kind` | `market_run_id` | `execution_type` | `XML_DATA_ITEM` | stored kind |
//! |---|---|---|---|---|
//! | `ACTUAL` actual load | `ACTUAL` | | `SYS_FCST_ACT_MW` | `ACTUAL` |
//! | `DAM` day-ahead forecast | `DAM` | | `SYS_FCST_DA_MW` | `DAM` |
//! | `2DA`, `7DA` two- and seven-day-ahead forecasts | `2DA`, `7DA` | | `SYS_FCST_2DA_MW`, `SYS_FCST_7DA_MW` | `2DA`, `7DA` |
//! | `RTPD` (or `RTM:RTPD`) 15-minute real-time forecast | `RTM` | `RTPD` | `SYS_FCST_15MIN_MW` | `RTPD` |
//! | `RTD` (or `RTM:RTD`) 5-minute real-time forecast | `RTM` | `RTD` | `SYS_FCST_5MIN_MW` | `RTD` |
//! | `WIND_DAM`, `SOLAR_DAM` day-ahead forecast by trading hub (`SLD_REN_FCST`) | `DAM` | | `RENEW_FCST_DA_MW` | `WIND_DAM`, `SOLAR_DAM` |
//! | `WIND_ACTUAL`, `SOLAR_ACTUAL` output by trading hub (`SLD_REN_FCST`) | `ACTUAL` | | `RENEW_FCST_ACT_MW` | `WIND_ACTUAL`, `SOLAR_ACTUAL` |
//!
//! The actuals' item name is the one other OASIS clients use; no captured reply holds it (the
//! real `SLD_REN_FCST` captures, a 2025 zip and a 2013 XML report, are DAM only), so the tests
//! read the real DAM zip rewritten as the ACTUAL run.
//!
//! Each `(area, kind)` is the series `(caiso, AREA, KIND)`, e.g. `caiso:CA ISO-TAC:ACTUAL`.
//! Values are MW. `RTPD` and `RTD` are aggregated to hourly means: the mean of the intervals
//! that end within the hour, keyed by the hour's end (an hour with some intervals missing is the
//! mean of those present).
//!
//! # Requests
//! `GET {base}/oasisapi/SingleZip?resultformat=6&queryname=SLD_FCST&version=1&market_run_id=RUN
//! [&execution_type=RTPD|RTD]&startdatetime=YYYYMMDDTHH:MM-0000&enddatetime=…`, one per kind
//! and chunk, one at a time. OASIS serves at most 30 days a request ([`MAX_DAYS`], the chunk
//! length); the chunk `(start, end]` of interval ends is asked as the intervals starting in
//! `[start, end)`. The shared [`HttpClient`] spaces requests (`[caiso] min_interval_s`, 5 s by
//! default: faster gets HTTP 429) and retries 429, 5xx and OASIS error 1015 after a backoff of
//! at least [`MIN_RETRY_DELAY`] ([`retry_policy`]).
//!
//! # Replies
//! HTTP 200 with a zip holding one CSV, read in memory **by header name** (other queries order
//! columns differently): `INTERVALSTARTTIME_GMT`, `INTERVALENDTIME_GMT` (UTC; the store keeps
//! the interval end), `TAC_AREA_NAME`, `XML_DATA_ITEM`, `MW`. Rows arrive unsorted and with gaps;
//! rows of other areas, other items and outside the chunk are dropped; an interval given twice
//! keeps its first row. `OPR_DT`/`OPR_HR` (Pacific, 23 or 25 hours on DST days) are not used.
//!
//! Errors arrive as HTTP 200 too: a zip holding an XML `OASISReport` with `ERR_CODE` and
//! `ERR_DESC`. 1000 ("no data") is an empty result, 1015 ("submit again later") is retried,
//! any other code is a hard error quoting both. A body that is not a zip, a zip without a file
//! and a corrupt member are errors that say so and are not retried.
//!
//! # Layout
//! - this file: the source (kinds, the request plan, pacing and retries through the shared
//!   [`HttpClient`]);
//! - [`net_load`]: net load (load − wind − solar) derived from stored series;
//! - `oasis`: the wire format (the zip, the CSV read with the `csv` crate, XML error reports,
//!   hourly aggregation).
use super::http::{HttpClient, Reply, Request, RetryPolicy};
use super::{Batch, IngestError, SeriesId, SeriesRows, Source};
use crate::time::DateRange;
use chrono::{DateTime, TimeDelta};
use std::collections::HashMap;
use std::time::Duration;

pub mod net_load;
#[cfg(test)]
mod never_panic;
mod oasis;
#[cfg(test)]
mod tests;

pub use oasis::{Table, parse_csv, parse_report};

/// The TAC area of the CAISO system total, the default region.
pub const SYSTEM_AREA: &str = "CA ISO-TAC";
/// Most days one OASIS request may cover (31 gives error 1004).
pub const MAX_DAYS: i64 = 30;
/// Least backoff before a retry (OASIS answers 429 to anything faster than about 1 / 5 s).
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Actual load may still be revised the day after.
pub const SETTLE_HOURS: i64 = 24;
/// OASIS error codes with a meaning of their own.
pub const ERR_NO_DATA: u32 = 1000;
pub const ERR_TRY_LATER: u32 = 1015;
/// How OASIS reads `startdatetime` and `enddatetime` (UTC written as `-0000`).
const REQUEST_TIME_FORMAT: &str = "%Y%m%dT%H:%M-0000";

/// A run of `SLD_FCST` (see the module documentation for the syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaisoKind {
    Actual,
    Dam,
    TwoDay,
    SevenDay,
    /// RTM, `execution_type=RTPD`: 15-minute intervals, stored as hourly means.
    Rtpd,
    /// RTM, `execution_type=RTD`: 5-minute intervals, stored as hourly means.
    Rtd,
    /// `SLD_REN_FCST` DAM: the day-ahead wind forecast by trading hub.
    WindDam,
    /// `SLD_REN_FCST` DAM: the day-ahead solar forecast by trading hub.
    SolarDam,
    /// `SLD_REN_FCST` ACTUAL: wind output by trading hub, where OASIS has it.
    WindActual,
    /// `SLD_REN_FCST` ACTUAL: solar output by trading hub, where OASIS has it.
    SolarActual,
}

impl CaisoKind {
    pub const ALL: [CaisoKind; 10] = [
        CaisoKind::Actual,
        CaisoKind::Dam,
        CaisoKind::TwoDay,
        CaisoKind::SevenDay,
        CaisoKind::Rtpd,
        CaisoKind::Rtd,
        CaisoKind::WindDam,
        CaisoKind::SolarDam,
        CaisoKind::WindActual,
        CaisoKind::SolarActual,
    ];

    /// `ACTUAL`, `dam`, `2DA`, `7DA`, `RTPD`, `RTD`, `RTM:RTPD`, `RTM:RTD` (case does not matter).
    pub fn parse(text: &str) -> Result<Self, IngestError> {
        let upper = text.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("RTM:").or_else(|| upper.strip_prefix("RTM/")).unwrap_or(&upper);
        Self::ALL.into_iter().find(|k| k.series_kind() == name).ok_or_else(|| {
            IngestError::InvalidRequest(format!(
                "unknown CAISO kind `{text}`: use ACTUAL (actual load), DAM, 2DA, 7DA (day-ahead, two- and \
                 seven-day-ahead forecasts), RTPD or RTD (real-time 15- and 5-minute forecasts as hourly means; \
                 also written RTM:RTPD, RTM:RTD), or WIND_DAM, SOLAR_DAM, WIND_ACTUAL, SOLAR_ACTUAL (SLD_REN_FCST, \
                 by trading hub: NP15, SP15, ZP26)"
            ))
        })
    }

    /// The stored kind.
    pub fn series_kind(self) -> &'static str {
        match self {
            CaisoKind::Actual => "ACTUAL",
            CaisoKind::Dam => "DAM",
            CaisoKind::TwoDay => "2DA",
            CaisoKind::SevenDay => "7DA",
            CaisoKind::Rtpd => "RTPD",
            CaisoKind::Rtd => "RTD",
            CaisoKind::WindDam => "WIND_DAM",
            CaisoKind::SolarDam => "SOLAR_DAM",
            CaisoKind::WindActual => "WIND_ACTUAL",
            CaisoKind::SolarActual => "SOLAR_ACTUAL",
        }
    }

    pub fn market_run_id(self) -> &'static str {
        match self {
            CaisoKind::Rtpd | CaisoKind::Rtd => "RTM",
            CaisoKind::WindDam | CaisoKind::SolarDam => "DAM",
            CaisoKind::WindActual | CaisoKind::SolarActual => "ACTUAL",
            other => other.series_kind(),
        }
    }

    /// `SLD_FCST` (load) or `SLD_REN_FCST` (wind and solar).
    pub fn query_name(self) -> &'static str {
        if self.renewable_type().is_some() { "SLD_REN_FCST" } else { "SLD_FCST" }
    }

    /// `SLD_REN_FCST`'s `RENEWABLE_TYPE` of the kind's rows.
    pub fn renewable_type(self) -> Option<&'static str> {
        match self {
            CaisoKind::WindDam | CaisoKind::WindActual => Some("Wind"),
            CaisoKind::SolarDam | CaisoKind::SolarActual => Some("Solar"),
            _ => None,
        }
    }

    /// The column that names the kind's regions: `TAC_AREA_NAME`, or `TRADING_HUB` for wind and
    /// solar.
    pub fn area_column(self) -> &'static str {
        if self.renewable_type().is_some() { oasis::COL_HUB } else { oasis::COL_AREA }
    }

    pub fn execution_type(self) -> Option<&'static str> {
        match self {
            CaisoKind::Rtpd => Some("RTPD"),
            CaisoKind::Rtd => Some("RTD"),
            _ => None,
        }
    }

    /// The `XML_DATA_ITEM` of the run's rows.
    pub fn data_item(self) -> &'static str {
        match self {
            CaisoKind::Actual => "SYS_FCST_ACT_MW",
            CaisoKind::Dam => "SYS_FCST_DA_MW",
            CaisoKind::TwoDay => "SYS_FCST_2DA_MW",
            CaisoKind::SevenDay => "SYS_FCST_7DA_MW",
            CaisoKind::Rtpd => "SYS_FCST_15MIN_MW",
            CaisoKind::Rtd => "SYS_FCST_5MIN_MW",
            CaisoKind::WindDam | CaisoKind::SolarDam => "RENEW_FCST_DA_MW",
            CaisoKind::WindActual | CaisoKind::SolarActual => "RENEW_FCST_ACT_MW",
        }
    }

    /// The columns and values that select the kind's rows.
    pub fn filters(self) -> Vec<(&'static str, &'static str)> {
        let mut filters = vec![(oasis::COL_ITEM, self.data_item())];
        if let Some(renewable) = self.renewable_type() {
            filters.push((oasis::COL_RENEWABLE, renewable));
        }
        filters
    }
}

/// The retry policy of CAISO requests: `policy` with a backoff of at least [`MIN_RETRY_DELAY`].
pub fn retry_policy(policy: &RetryPolicy) -> RetryPolicy {
    let base_delay = policy.base_delay.max(MIN_RETRY_DELAY);
    RetryPolicy { base_delay, max_delay: policy.max_delay.max(2 * base_delay), ..policy.clone() }
}

/// The CAISO source for a set of TAC areas and kinds.
#[derive(Debug)]
pub struct CaisoSource {
    client: HttpClient,
    base: reqwest::Url,
    areas: Vec<String>,
    kinds: Vec<CaisoKind>,
}

impl CaisoSource {
    /// A source asking `base_url` (e.g. `https://oasis.caiso.com`) for `areas` (the system total
    /// when empty) × `kinds` (`ACTUAL` when empty).
    pub fn new(base_url: &str, areas: &[String], kinds: &[CaisoKind], client: HttpClient) -> Result<Self, IngestError> {
        let base = reqwest::Url::parse(base_url.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                IngestError::InvalidRequest(format!(
                    "invalid CAISO base URL `{base_url}`: give http(s)://host[:port][/path], such as https://oasis.caiso.com"
                ))
            })?;
        let mut unique_areas: Vec<String> = Vec::new();
        for area in areas {
            let area = area.trim();
            // the one name rule of every region (it names a store folder)
            super::check_name("region", area).map_err(|e| {
                IngestError::InvalidRequest(format!(
                    "invalid CAISO TAC area: {e}; a TAC_AREA_NAME is such as `{SYSTEM_AREA}`, PGE-TAC or SCE-TAC"
                ))
            })?;
            if !unique_areas.iter().any(|a| a == area) {
                unique_areas.push(area.to_string());
            }
        }
        if unique_areas.is_empty() {
            unique_areas.push(SYSTEM_AREA.to_string());
        }
        let mut unique_kinds: Vec<CaisoKind> = Vec::new();
        for kind in kinds {
            if !unique_kinds.contains(kind) {
                unique_kinds.push(*kind);
            }
        }
        if unique_kinds.is_empty() {
            unique_kinds.push(CaisoKind::Actual);
        }
        Ok(Self { client, base, areas: unique_areas, kinds: unique_kinds })
    }

    pub fn areas(&self) -> &[String] {
        &self.areas
    }

    pub fn kinds(&self) -> &[CaisoKind] {
        &self.kinds
    }

    /// The URL of one request: `kind` for the intervals starting in `[range.start, range.end)`.
    pub fn request_url(&self, kind: CaisoKind, range: DateRange) -> reqwest::Url {
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}/oasisapi/SingleZip"));
        url.set_fragment(None);
        let time = |t: DateTime<chrono::Utc>| t.format(REQUEST_TIME_FORMAT).to_string();
        // built by hand: OASIS documents the times with literal colons
        let mut query =
            format!("resultformat=6&queryname={}&version=1&market_run_id={}", kind.query_name(), kind.market_run_id());
        if let Some(execution) = kind.execution_type() {
            query.push_str(&format!("&execution_type={execution}"));
        }
        query.push_str(&format!("&startdatetime={}&enddatetime={}", time(range.start), time(range.end)));
        url.set_query(Some(&query));
        url
    }

    /// Read one reply into hourly rows per asked area (in [`Self::areas`] order) for `kind`.
    pub fn read_reply(&self, reply: &Reply, kind: CaisoKind, range: DateRange) -> Result<Vec<SeriesRows>, IngestError> {
        oasis::read_reply(reply, &self.areas, kind, range)
    }
}

impl Source for CaisoSource {
    fn name(&self) -> &'static str {
        "caiso"
    }

    /// [`MAX_DAYS`] (under 31 days, so the orchestrator cuts the range on a 30-day grid).
    fn chunk_len(&self) -> TimeDelta {
        TimeDelta::days(MAX_DAYS)
    }

    fn series(&self) -> Vec<SeriesId> {
        self.areas
            .iter()
            .flat_map(|area| self.kinds.iter().map(move |kind| SeriesId::new("caiso", area, kind.series_kind())))
            .collect()
    }

    fn settle_time(&self) -> TimeDelta {
        TimeDelta::hours(SETTLE_HOURS)
    }

    async fn fetch(&self, range: DateRange) -> Result<Batch, IngestError> {
        let mut batch = Batch::default();
        let mut by_series: HashMap<SeriesId, SeriesRows> =
            self.series().into_iter().map(|id| (id.clone(), SeriesRows::new(id))).collect();
        // the orchestrator's chunks are within the limit already; a direct caller's may not be
        for piece in range.chunks(TimeDelta::days(MAX_DAYS)) {
            for &kind in &self.kinds {
                let request = Request::get("caiso", piece, self.request_url(kind, piece));
                let fetched = self.client.fetch(&request, |reply| self.read_reply(reply, kind, piece)).await?;
                batch.requests += fetched.attempts;
                batch.retries += fetched.attempts - 1;
                for (area, rows) in self.areas.iter().zip(fetched.value) {
                    let id = SeriesId::new("caiso", area, kind.series_kind());
                    if let Some(series) = by_series.get_mut(&id) {
                        series.timestamps.extend(rows.timestamps);
                        series.values.extend(rows.values);
                    }
                }
            }
        }
        for id in self.series() {
            if let Some(mut series) = by_series.remove(&id) {
                series.sort_and_check()?;
                batch.series.push(series);
            }
        }
        tracing::debug!(source = "caiso", %range, requests = batch.requests, retries = batch.retries, rows = batch.rows(), "fetched chunk");
        Ok(batch)
    }
}
