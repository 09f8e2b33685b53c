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
use super::http::{HttpClient, Reply, Request, RetryPolicy};
use super::{Batch, IngestError, SeriesId, SeriesRows, Source};
use crate::time::{DateRange, HOUR_US};
use chrono::{DateTime, TimeDelta};
use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

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

/// CSV columns read (by name).
const COL_START: &str = "INTERVALSTARTTIME_GMT";
const COL_END: &str = "INTERVALENDTIME_GMT";
const COL_AREA: &str = "TAC_AREA_NAME";
const COL_ITEM: &str = "XML_DATA_ITEM";
const COL_MW: &str = "MW";

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
}

impl CaisoKind {
    pub const ALL: [CaisoKind; 6] =
        [CaisoKind::Actual, CaisoKind::Dam, CaisoKind::TwoDay, CaisoKind::SevenDay, CaisoKind::Rtpd, CaisoKind::Rtd];

    /// `ACTUAL`, `dam`, `2DA`, `7DA`, `RTPD`, `RTD`, `RTM:RTPD`, `RTM:RTD` (case does not matter).
    pub fn parse(text: &str) -> Result<Self, IngestError> {
        let upper = text.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("RTM:").or_else(|| upper.strip_prefix("RTM/")).unwrap_or(&upper);
        Self::ALL.into_iter().find(|k| k.series_kind() == name).ok_or_else(|| {
            IngestError::InvalidRequest(format!(
                "unknown CAISO kind `{text}`: use ACTUAL (actual load), DAM, 2DA, 7DA (day-ahead, two- and \
                 seven-day-ahead forecasts), RTPD or RTD (real-time 15- and 5-minute forecasts as hourly means; \
                 also written RTM:RTPD, RTM:RTD)"
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
        }
    }

    pub fn market_run_id(self) -> &'static str {
        match self {
            CaisoKind::Rtpd | CaisoKind::Rtd => "RTM",
            other => other.series_kind(),
        }
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
        }
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
            let ok = !area.is_empty()
                && area.len() <= 40
                && area.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ' ' | '.'));
            if !ok {
                return Err(IngestError::InvalidRequest(format!(
                    "invalid CAISO TAC area `{area}`: a TAC_AREA_NAME such as `{SYSTEM_AREA}`, PGE-TAC or SCE-TAC"
                )));
            }
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
        let time = |t: DateTime<chrono::Utc>| t.format("%Y%m%dT%H:%M-0000").to_string();
        // built by hand: OASIS documents the times with literal colons
        let mut query = format!("resultformat=6&queryname=SLD_FCST&version=1&market_run_id={}", kind.market_run_id());
        if let Some(execution) = kind.execution_type() {
            query.push_str(&format!("&execution_type={execution}"));
        }
        query.push_str(&format!("&startdatetime={}&enddatetime={}", time(range.start), time(range.end)));
        url.set_query(Some(&query));
        url
    }

    /// Read one reply into hourly rows per asked area (in [`Self::areas`] order) for `kind`.
    pub fn read_reply(&self, reply: &Reply, kind: CaisoKind, range: DateRange) -> Result<Vec<SeriesRows>, IngestError> {
        if !reply.status.is_success() {
            return Err(reply.status_error(&format!("{}: `{}`", reply.shown_content_type(), reply.snippet())));
        }
        // `Content-Disposition: inline; filename=INVALID_REQUEST.xml.zip;` marks a refused request
        let invalid =
            reply.content_disposition.as_deref().filter(|v| v.to_ascii_uppercase().contains("INVALID_REQUEST"));
        let refused = |header: &str, detail: String| {
            reply.format_error(&format!("OASIS refused the request (Content-Disposition `{header}`){detail}"))
        };
        let member = match (read_zip(reply), invalid) {
            (Ok(member), _) => member,
            (Err(_), Some(header)) => {
                return Err(refused(
                    header,
                    format!(
                        " and its error report cannot be read: {} starting `{}`",
                        reply.shown_content_type(),
                        reply.snippet()
                    ),
                ));
            }
            (Err(error), None) => return Err(error),
        };
        let table = match (member, invalid) {
            (Member::Csv(_), Some(header)) => return Err(refused(header, String::new())),
            (Member::Csv(text), None) => parse_csv(&text).map_err(|why| reply.format_error(&why))?,
            (Member::Report(text), invalid) => match (parse_report(&text), invalid) {
                (Some((code, _)), _) if code == ERR_NO_DATA => Table::default(),
                (Some((code, description)), _) => {
                    return Err(IngestError::Oasis {
                        url: reply.url.clone(),
                        code,
                        description: reply.scrub(&description),
                    });
                }
                (None, Some(header)) => {
                    return Err(refused(
                        header,
                        format!("; its report has no ERR_CODE and starts `{}`", snippet(&text)),
                    ));
                }
                (None, None) => {
                    return Err(reply.format_error(&format!(
                        "the zip holds an XML report without ERR_CODE, starting `{}`",
                        snippet(&text)
                    )));
                }
            },
        };
        let areas: Vec<&str> = self.areas.iter().map(String::as_str).collect();
        table.hourly(&areas, kind.data_item(), range).map_err(|why| reply.format_error(&why))
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

/// The file a reply's zip holds.
#[derive(Debug)]
enum Member {
    Csv(String),
    /// An XML `OASISReport` (an error).
    Report(String),
}

fn read_zip(reply: &Reply) -> Result<Member, IngestError> {
    let body = &reply.body;
    if !body.starts_with(b"PK") {
        return Err(reply.format_error(&format!(
            "expected a zip (resultformat=6), got {} starting `{}`",
            reply.shown_content_type(),
            reply.snippet()
        )));
    }
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(body.as_slice()))
        .map_err(|e| reply.format_error(&format!("the zip ({} bytes) cannot be opened: {e}", body.len())))?;
    if archive.is_empty() {
        return Err(reply.format_error("the zip holds no file"));
    }
    let mut file =
        archive.by_index(0).map_err(|e| reply.format_error(&format!("the zip's first member cannot be read: {e}")))?;
    let name = file.name().map(|n| n.into_owned()).unwrap_or_default();
    let mut bytes = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0).min(256 << 20));
    file.read_to_end(&mut bytes)
        .map_err(|e| reply.format_error(&format!("the zip member `{name}` is corrupt: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| reply.format_error(&format!("the zip member `{name}` is not UTF-8 text: {e}")))?;
    let xml = name.to_ascii_lowercase().ends_with(".xml") || text.trim_start().starts_with('<');
    Ok(if xml { Member::Report(text) } else { Member::Csv(text) })
}

/// The first `ERR_CODE` and `ERR_DESC` of an `OASISReport`; `None` when it has no code.
pub fn parse_report(xml: &str) -> Option<(u32, String)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut code, mut description) = (None::<String>, None::<String>);
    let mut current: Option<&'static str> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                current = match start.local_name().as_ref() {
                    b"ERR_CODE" if code.is_none() => Some("code"),
                    b"ERR_DESC" if description.is_none() => Some("description"),
                    _ => None,
                };
            }
            Ok(Event::Text(text)) => {
                let value = text.decode().map(|t| t.trim().to_string()).unwrap_or_default();
                match current {
                    Some("code") => code = Some(value),
                    Some("description") => description = Some(value),
                    _ => {}
                }
            }
            Ok(Event::End(_)) => current = None,
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let code = code?.parse().ok()?;
    Some((code, description.unwrap_or_default()))
}

/// Rows of an OASIS CSV, by column name.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Parse CSV text (quoted fields allowed); the first line is the header.
pub fn parse_csv(text: &str) -> Result<Table, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Err("the CSV is empty (no header line)".into());
    };
    let header: Vec<String> =
        split_csv_line(header.trim_start_matches('\u{feff}')).into_iter().map(|h| h.trim().to_string()).collect();
    let rows = lines.map(split_csv_line).collect();
    Ok(Table { header, rows })
}

fn split_csv_line(line: &str) -> Vec<String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if !line.contains('"') {
        return line.split(',').map(str::to_string).collect();
    }
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            other => field.push(other),
        }
    }
    fields.push(field);
    fields
}

/// A GMT time as OASIS writes it (`2023-08-13T00:00:00-00:00`) in epoch µs.
fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z"))
        .ok()
        .map(|t| t.timestamp_micros())
}

impl Table {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn column(&self, name: &str) -> Result<usize, String> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("the CSV has no column `{name}` (its columns: {})", self.header.join(", ")))
    }

    /// Hourly rows of `item` for each of `areas` (in that order) in `range`: the mean of the
    /// intervals ending within each hour, keyed by the hour's end; an interval given twice keeps
    /// its first row. An empty table gives empty series.
    pub fn hourly(&self, areas: &[&str], item: &str, range: DateRange) -> Result<Vec<SeriesRows>, String> {
        let placeholder = |area: &str| SeriesRows::new(SeriesId::new("caiso", area, item));
        if self.rows.is_empty() {
            return Ok(areas.iter().map(|a| placeholder(a)).collect());
        }
        let (start, end, area, item_col, mw) = (
            self.column(COL_START)?,
            self.column(COL_END)?,
            self.column(COL_AREA)?,
            self.column(COL_ITEM)?,
            self.column(COL_MW)?,
        );
        let width = [start, end, area, item_col, mw].into_iter().max().unwrap_or(0);
        // per area: interval end → (interval start, value)
        let mut intervals: Vec<HashMap<i64, (i64, Option<f64>)>> = vec![HashMap::new(); areas.len()];
        for (line, row) in self.rows.iter().enumerate() {
            let line = line + 2;
            if row.len() <= width {
                return Err(format!(
                    "CSV line {line} has {} fields where the header has {}",
                    row.len(),
                    self.header.len()
                ));
            }
            if row[item_col].trim() != item {
                continue;
            }
            let Some(a) = areas.iter().position(|a| *a == row[area].trim()) else { continue };
            let (Some(t_start), Some(t_end)) = (parse_time(&row[start]), parse_time(&row[end])) else {
                return Err(format!(
                    "CSV line {line}: `{}`/`{}` is not a time like 2023-08-13T00:00:00-00:00",
                    row[start], row[end]
                ));
            };
            if t_end <= t_start {
                return Err(format!("CSV line {line}: interval ends at or before its start"));
            }
            let text = row[mw].trim();
            let value = if text.is_empty() {
                None
            } else {
                Some(text.parse::<f64>().map_err(|_| format!("CSV line {line}: MW `{text}` is not a number"))?)
            };
            let hour_end = t_end.div_euclid(HOUR_US) * HOUR_US + if t_end % HOUR_US == 0 { 0 } else { HOUR_US };
            if !range.holds_us(hour_end) {
                continue;
            }
            match intervals[a].get(&t_end) {
                Some((_, kept)) if *kept != value => {
                    tracing::warn!(source = "caiso", area = areas[a], item, interval_end = t_end, ?kept, dropped = ?value, "interval given twice with different values: kept the first");
                }
                Some(_) => {}
                None => {
                    intervals[a].insert(t_end, (t_start, value));
                }
            }
        }
        let mut out = Vec::with_capacity(areas.len());
        for (a, by_end) in intervals.into_iter().enumerate() {
            // hour end → (sum, count of values, count of intervals)
            let mut hours: HashMap<i64, (f64, u32, u32)> = HashMap::new();
            for (t_end, (_, value)) in by_end {
                let hour_end = t_end.div_euclid(HOUR_US) * HOUR_US + if t_end % HOUR_US == 0 { 0 } else { HOUR_US };
                let slot = hours.entry(hour_end).or_default();
                slot.2 += 1;
                if let Some(v) = value {
                    slot.0 += v;
                    slot.1 += 1;
                }
            }
            let mut series = placeholder(areas[a]);
            let mut ends: Vec<i64> = hours.keys().copied().collect();
            ends.sort_unstable();
            for t in ends {
                let (sum, n, _) = hours[&t];
                series.timestamps.push(t);
                series.values.push((n > 0).then(|| sum / f64::from(n)));
            }
            out.push(series);
        }
        Ok(out)
    }
}

fn snippet(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = line.chars().take(160).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::RateLimits;
    use crate::time::from_us;
    use std::io::Write;
    use std::path::PathBuf;

    const URL: &str = "http://oasis.test/oasisapi/SingleZip";
    const HEADER: &str = "INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,LOAD_TYPE,OPR_DT,OPR_HR,OPR_INTERVAL,MARKET_RUN_ID,TAC_AREA_NAME,LABEL,XML_DATA_ITEM,POS,MW,EXECUTION_TYPE,GROUP";

    /// The real captures, or `None` (with a notice) where they are absent.
    fn realdata(name: &str) -> Option<Vec<u8>> {
        let dir = std::env::var_os("ENERGY_REALDATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata"));
        let path = dir.join("caiso").join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                eprintln!("skipping: real data file {} is absent (set ENERGY_REALDATA)", path.display());
                None
            }
        }
    }

    fn zip_of(name: &str, text: &str) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        writer.start_file(name, options).unwrap();
        writer.write_all(text.as_bytes()).unwrap();
        writer.finish().unwrap().into_inner()
    }

    fn error_zip(code: u32, description: &str) -> Vec<u8> {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><m:OASISReport xmlns:m="http://www.caiso.com/soa/OASISReport_v1.xsd"><m:MessagePayload><m:RTO><m:name>CAISO</m:name><m:ERROR><m:ERR_CODE>{code}</m:ERR_CODE><m:ERR_DESC>{description}</m:ERR_DESC></m:ERROR></m:RTO></m:MessagePayload></m:OASISReport>"#
        );
        zip_of("INVALID_REQUEST.xml", &xml)
    }

    fn source(areas: &[&str], kinds: &[CaisoKind]) -> CaisoSource {
        let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
        let areas: Vec<String> = areas.iter().map(|a| a.to_string()).collect();
        CaisoSource::new("http://oasis.test", &areas, kinds, client).unwrap()
    }

    fn reply(body: Vec<u8>) -> Reply {
        Reply::new(200, Some("application/x-zip-compressed"), body, URL)
    }

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros()
    }

    fn range(start: &str, end: &str) -> DateRange {
        DateRange::new(from_us(at(start)), from_us(at(end))).unwrap()
    }

    #[test]
    fn kinds_parse_with_their_runs() {
        assert_eq!(CaisoKind::parse("actual").unwrap(), CaisoKind::Actual);
        assert_eq!(CaisoKind::parse("2da").unwrap(), CaisoKind::TwoDay);
        assert_eq!(CaisoKind::parse("RTM:RTD").unwrap(), CaisoKind::Rtd);
        let rtpd = CaisoKind::parse("RTPD").unwrap();
        assert_eq!(
            (rtpd.market_run_id(), rtpd.execution_type(), rtpd.data_item()),
            ("RTM", Some("RTPD"), "SYS_FCST_15MIN_MW")
        );
        let error = CaisoKind::parse("HASP").unwrap_err().to_string();
        assert!(error.contains("HASP") && error.contains("ACTUAL"), "{error}");
    }

    #[test]
    fn request_urls_carry_the_run_and_utc_times() {
        let caiso = source(&[], &[]);
        assert_eq!(caiso.areas(), [SYSTEM_AREA]);
        assert_eq!(caiso.kinds(), [CaisoKind::Actual]);
        let window = range("2024-01-01T08:00:00Z", "2024-01-02T08:00:00Z");
        assert_eq!(
            caiso.request_url(CaisoKind::Actual, window).as_str(),
            "http://oasis.test/oasisapi/SingleZip?resultformat=6&queryname=SLD_FCST&version=1&market_run_id=ACTUAL&startdatetime=20240101T08:00-0000&enddatetime=20240102T08:00-0000"
        );
        let url = caiso.request_url(CaisoKind::Rtd, window).to_string();
        assert!(url.contains("market_run_id=RTM&execution_type=RTD&"), "{url}");
        let client = HttpClient::new(RetryPolicy::immediate(1), RateLimits::UNLIMITED).unwrap();
        let prefixed = CaisoSource::new("https://h/proxy/", &[], &[], client.clone()).unwrap();
        assert!(
            prefixed.request_url(CaisoKind::Dam, window).as_str().starts_with("https://h/proxy/oasisapi/SingleZip?")
        );
        assert!(CaisoSource::new("oasis.caiso.com", &[], &[], client).is_err());
        assert_eq!(caiso.chunk_len(), TimeDelta::days(30));
    }

    #[test]
    fn retries_wait_at_least_five_seconds() {
        let policy = retry_policy(&RetryPolicy::immediate(4));
        assert_eq!(policy.base_delay, MIN_RETRY_DELAY);
        assert!(policy.max_delay >= 2 * MIN_RETRY_DELAY);
        assert_eq!(policy.max_attempts, 4);
    }

    #[test]
    fn all_runs_zip_filtered_to_actual_for_the_system() {
        let Some(body) = realdata("SLD_FCST_allruns_req20230813T00-20230814T00.zip") else { return };
        let caiso = source(&[SYSTEM_AREA, "PGE-TAC"], &[CaisoKind::Actual]);
        let day = range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z");
        let rows = caiso.read_reply(&reply(body), CaisoKind::Actual, day).unwrap();
        assert_eq!(rows.len(), 2);
        let system = &rows[0];
        assert_eq!(system.len(), 24);
        assert_eq!(system.timestamps.first(), Some(&at("2023-08-13T01:00:00Z")));
        assert_eq!(system.timestamps.last(), Some(&at("2023-08-14T00:00:00Z")));
        assert!(system.timestamps.is_sorted());
        let at_19 = system.timestamps.iter().position(|t| *t == at("2023-08-13T19:00:00Z")).unwrap();
        assert_eq!(system.values[at_19], Some(25729.0));
        assert_eq!(rows[1].len(), 24);
        assert!(rows[1].values[0].unwrap() < system.values[0].unwrap());
    }

    #[test]
    fn rtpd_intervals_become_hourly_means_keyed_by_the_hour_end() {
        let Some(body) = realdata("SLD_FCST_allruns_req20230813T00-20230814T00.zip") else { return };
        let caiso = source(&[SYSTEM_AREA], &[CaisoKind::Rtpd]);
        let day = range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z");
        let rows = caiso.read_reply(&reply(body), CaisoKind::Rtpd, day).unwrap();
        assert_eq!(rows[0].len(), 24);
        assert_eq!(rows[0].timestamps[0], at("2023-08-13T01:00:00Z"));
        let mean = (32013.49 + 32463.2 + 33015.41 + 33386.86) / 4.0;
        assert!((rows[0].values[0].unwrap() - mean).abs() < 1e-6, "{:?}", rows[0].values[0]);
    }

    #[test]
    fn rtd_and_rtpd_with_real_gaps_keep_every_hour() {
        let Some(body) = realdata("SLD_FCST_allruns_req20231108T00-20231110T00.zip") else { return };
        let caiso = source(&[SYSTEM_AREA], &[CaisoKind::Rtpd, CaisoKind::Rtd]);
        let days = range("2023-11-08T00:00:00Z", "2023-11-10T00:00:00Z");
        for kind in [CaisoKind::Rtpd, CaisoKind::Rtd, CaisoKind::Actual] {
            let rows = caiso.read_reply(&reply(body.clone()), kind, days).unwrap();
            assert_eq!(rows[0].len(), 48, "{kind:?}");
            assert!(rows[0].values.iter().all(Option::is_some), "{kind:?}");
        }
    }

    #[test]
    fn seven_day_ahead_file() {
        let Some(body) = realdata("20250219_20250227_SLD_FCST_7DA_20250221_01_09_58_v1.zip") else { return };
        let caiso = source(&[SYSTEM_AREA], &[CaisoKind::SevenDay]);
        let window = range("2025-02-19T08:00:00Z", "2025-02-27T08:00:00Z");
        let rows = caiso.read_reply(&reply(body.clone()), CaisoKind::SevenDay, window).unwrap();
        assert_eq!(rows[0].len(), 192);
        let at_20 = rows[0].timestamps.iter().position(|t| *t == at("2025-02-20T20:00:00Z")).unwrap();
        assert_eq!(rows[0].values[at_20], Some(18919.5));
        // a chunk of it keeps only its hours; another run's item finds nothing
        let day = range("2025-02-20T00:00:00Z", "2025-02-21T00:00:00Z");
        assert_eq!(caiso.read_reply(&reply(body.clone()), CaisoKind::SevenDay, day).unwrap()[0].len(), 24);
        assert!(caiso.read_reply(&reply(body), CaisoKind::Actual, window).unwrap()[0].is_empty());
    }

    #[test]
    fn columns_are_read_by_header_name() {
        let Some(body) = realdata("20250204_20250211_SLD_REN_FCST_DAM_20250214_04_52_10_v1.zip") else { return };
        // SLD_REN_FCST has no TAC_AREA_NAME: the error names the missing column
        let caiso = source(&[SYSTEM_AREA], &[CaisoKind::Dam]);
        let window = range("2025-02-04T00:00:00Z", "2025-02-12T00:00:00Z");
        let error = caiso.read_reply(&reply(body.clone()), CaisoKind::Dam, window).unwrap_err().to_string();
        assert!(error.contains("TAC_AREA_NAME"), "{error}");
        // its own columns, in their own order, are found by name
        let Member::Csv(text) = read_zip(&reply(body)).unwrap() else { panic!("expected a CSV") };
        let renamed = text.replacen("TRADING_HUB", COL_AREA, 1);
        let table = parse_csv(&renamed).unwrap();
        let rows = table.hourly(&["NP15"], "RENEW_FCST_DA_MW", window).unwrap();
        assert!(!rows[0].is_empty());
        // 2025-02-04T19:00 NP15 has solar and wind rows: their mean
        assert!(rows[0].timestamps.contains(&at("2025-02-04T19:00:00Z")));
        // a shuffled synthetic header reads the same
        let csv = "MW,XML_DATA_ITEM,TAC_AREA_NAME,INTERVALENDTIME_GMT,INTERVALSTARTTIME_GMT\n\
                   10,SYS_FCST_ACT_MW,CA ISO-TAC,2023-08-13T02:00:00-00:00,2023-08-13T01:00:00-00:00\n\
                   20,SYS_FCST_ACT_MW,CA ISO-TAC,2023-08-13T01:00:00-00:00,2023-08-13T00:00:00-00:00\n";
        let rows = parse_csv(csv)
            .unwrap()
            .hourly(&[SYSTEM_AREA], "SYS_FCST_ACT_MW", range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z"))
            .unwrap();
        assert_eq!(rows[0].values, vec![Some(20.0), Some(10.0)]);
    }

    #[test]
    fn real_error_1000_is_an_empty_result() {
        let Some(body) = realdata("SLD_FCST_error1000_nodata_req20231212.zip") else { return };
        let caiso = source(&[SYSTEM_AREA], &[]);
        let day = range("2023-12-12T00:00:00Z", "2023-12-13T00:00:00Z");
        let rows = caiso.read_reply(&reply(body), CaisoKind::Actual, day).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].is_empty());
    }

    #[test]
    fn xml_error_codes() {
        let caiso = source(&[], &[]);
        let day = range("2023-12-12T00:00:00Z", "2023-12-13T00:00:00Z");
        assert!(caiso.read_reply(&reply(error_zip(1000, "No data")), CaisoKind::Actual, day).unwrap()[0].is_empty());
        let busy = caiso
            .read_reply(&reply(error_zip(1015, "Processing, submit again later")), CaisoKind::Actual, day)
            .unwrap_err();
        assert!(busy.is_transient(), "{busy}");
        let hard =
            caiso.read_reply(&reply(error_zip(1004, "Request exceeds 31 days")), CaisoKind::Actual, day).unwrap_err();
        assert!(!hard.is_transient());
        let text = hard.to_string();
        assert!(text.contains("1004") && text.contains("Request exceeds 31 days"), "{text}");
        assert_eq!(
            parse_report("<a><ERR_CODE> 1010 </ERR_CODE><ERR_DESC>System Error</ERR_DESC></a>"),
            Some((1010, "System Error".into()))
        );
        assert_eq!(parse_report("<a><b>1</b></a>"), None);
        let error = caiso.read_reply(&reply(zip_of("x.xml", "<m:OASISReport/>")), CaisoKind::Actual, day).unwrap_err();
        assert!(error.to_string().contains("without ERR_CODE"), "{error}");
    }

    /// `Content-Disposition: …INVALID_REQUEST.xml.zip` marks a refused request whatever the body holds.
    #[test]
    fn invalid_request_disposition_is_read() {
        let caiso = source(&[], &[]);
        let day = range("2023-12-12T00:00:00Z", "2023-12-13T00:00:00Z");
        let header = "inline; filename=INVALID_REQUEST.xml.zip;";
        let marked = |body: Vec<u8>| reply(body).with_content_disposition(header);
        // the report's own code still decides (1000 is an empty result, others are hard errors)
        assert!(caiso.read_reply(&marked(error_zip(1000, "No data")), CaisoKind::Actual, day).unwrap()[0].is_empty());
        let hard = caiso.read_reply(&marked(error_zip(1002, "Bad date format")), CaisoKind::Actual, day).unwrap_err();
        assert!(hard.to_string().contains("1002") && !hard.is_transient(), "{hard}");
        // a report without a code, a CSV or a body that is not a zip: refused, naming the header
        for body in [
            zip_of("INVALID_REQUEST.xml", "<m:OASISReport/>"),
            zip_of("a.csv", HEADER),
            b"<html>Bad Request</html>".to_vec(),
        ] {
            let error = caiso.read_reply(&marked(body), CaisoKind::Actual, day).unwrap_err();
            let text = error.to_string();
            assert!(text.contains("refused the request") && text.contains("INVALID_REQUEST.xml.zip"), "{text}");
            assert!(!error.is_transient());
        }
        // the same CSV without the header is data
        assert!(caiso.read_reply(&reply(zip_of("a.csv", HEADER)), CaisoKind::Actual, day).is_ok());
    }

    #[test]
    fn broken_bodies_get_clear_errors() {
        let caiso = source(&[], &[]);
        let day = range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z");
        let read = |reply: Reply| caiso.read_reply(&reply, CaisoKind::Actual, day).unwrap_err();
        let html = read(Reply::new(200, Some("text/html"), "<html><body>Service Unavailable</body></html>", URL));
        let text = html.to_string();
        assert!(
            text.contains("expected a zip") && text.contains("text/html") && text.contains("Service Unavailable"),
            "{text}"
        );
        assert!(!html.is_transient());
        // an empty archive: just the end-of-central-directory record
        let empty = zip::ZipWriter::new(std::io::Cursor::new(Vec::new())).finish().unwrap().into_inner();
        assert!(read(reply(empty)).to_string().contains("holds no file"));
        // a corrupt member: flip bytes inside the compressed data
        let mut corrupt = zip_of("a.csv", &format!("{HEADER}\n{}", "2023-08-13T00:00:00-00:00,2023-08-13T01:00:00-00:00,0,2023-08-12,18,0,ACTUAL,CA ISO-TAC,Total Actual Hourly Integrated Load,SYS_FCST_ACT_MW,3.4,31000,ACTUAL,1\n".repeat(50)));
        for byte in &mut corrupt[60..90] {
            *byte ^= 0x5a;
        }
        let text = read(reply(corrupt)).to_string();
        assert!(text.contains("corrupt") || text.contains("cannot"), "{text}");
        // a truncated zip
        let whole = zip_of("a.csv", HEADER);
        assert!(read(reply(whole[..whole.len() / 2].to_vec())).to_string().contains("cannot be opened"));
        // a failed status stays a status error (429 retried)
        let busy = read(Reply::new(429, Some("text/html"), "slow down", URL));
        assert!(busy.is_transient());
        assert!(!read(Reply::new(404, Some("text/html"), "nope", URL)).is_transient());
        // bad fields name the line
        let bad = zip_of(
            "a.csv",
            &format!(
                "{HEADER}\n2023-08-13T00:00:00-00:00,2023-08-13T01:00:00-00:00,0,2023-08-12,18,0,ACTUAL,CA ISO-TAC,L,SYS_FCST_ACT_MW,3.4,lots,ACTUAL,1\n"
            ),
        );
        assert!(read(reply(bad)).to_string().contains("line 2"));
    }

    /// OASIS local hours of DST days (23 and 25 of them) map to distinct UTC hours.
    #[test]
    fn dst_days_keep_23_and_25_distinct_utc_hours() {
        let mut csv = String::from(HEADER);
        // fall back: 2023-11-05 Pacific runs 07:00Z to 08:00Z next day (25 hours, OPR_HR 1-25)
        for (k, hour) in (0..25).zip(1..) {
            let start = at("2023-11-05T07:00:00Z") + k * HOUR_US;
            let t = |us: i64| from_us(us).format("%Y-%m-%dT%H:%M:%S-00:00").to_string();
            csv.push_str(&format!(
                "\n{},{},0,2023-11-05,{hour},0,ACTUAL,CA ISO-TAC,L,SYS_FCST_ACT_MW,3.4,{},ACTUAL,1",
                t(start),
                t(start + HOUR_US),
                20000 + k
            ));
        }
        // spring forward: 2024-03-10 Pacific runs 08:00Z to 07:00Z next day (23 hours)
        for (k, hour) in (0..23).zip(1..) {
            let start = at("2024-03-10T08:00:00Z") + k * HOUR_US;
            let t = |us: i64| from_us(us).format("%Y-%m-%dT%H:%M:%S-00:00").to_string();
            csv.push_str(&format!(
                "\n{},{},0,2024-03-10,{hour},0,ACTUAL,CA ISO-TAC,L,SYS_FCST_ACT_MW,3.4,{},ACTUAL,1",
                t(start),
                t(start + HOUR_US),
                30000 + k
            ));
        }
        let caiso = source(&[], &[]);
        let fall = caiso
            .read_reply(
                &reply(zip_of("f.csv", &csv)),
                CaisoKind::Actual,
                range("2023-11-05T07:00:00Z", "2023-11-06T08:00:00Z"),
            )
            .unwrap();
        assert_eq!(fall[0].len(), 25);
        assert_eq!(fall[0].values.iter().flatten().count(), 25);
        let spring = caiso
            .read_reply(
                &reply(zip_of("s.csv", &csv)),
                CaisoKind::Actual,
                range("2024-03-10T08:00:00Z", "2024-03-11T07:00:00Z"),
            )
            .unwrap();
        assert_eq!(spring[0].len(), 23);
        let mut all = fall[0].timestamps.clone();
        all.extend(&spring[0].timestamps);
        let count = all.len();
        all.dedup();
        assert_eq!(all.len(), count);
    }

    /// The parsers never panic: arbitrary bytes, mutated zips, CSVs with random columns and
    /// fields, and random XML give rows or an error, and rows that come back are well formed.
    mod never_panic {
        use super::*;
        use proptest::prelude::*;

        const AREAS: [&str; 3] = [SYSTEM_AREA, "PGE-TAC", "SCE-TAC"];
        const DISPOSITION: &str = "inline; filename=INVALID_REQUEST.xml.zip;";

        fn gmt(us: i64) -> String {
            from_us(us).format("%Y-%m-%dT%H:%M:%S-00:00").to_string()
        }

        /// `hours` hours of every area and two items, in the real column order.
        fn realistic_csv(hours: i64) -> String {
            let mut csv = String::from(HEADER);
            let first = at("2023-08-13T00:00:00Z");
            for k in 0..hours {
                let start = first + k * HOUR_US;
                for area in AREAS {
                    for (item, run) in [("SYS_FCST_ACT_MW", "ACTUAL"), ("SYS_FCST_DA_MW", "DAM")] {
                        csv.push_str(&format!(
                            "\n{},{},0,2023-08-12,{},0,{run},{area},Load,{item},3.4,{},{run},1",
                            gmt(start),
                            gmt(start + HOUR_US),
                            k % 24 + 1,
                            20000 + k * 7
                        ));
                    }
                }
            }
            csv
        }

        /// A zip of one member stored without compression (`zip_of` deflates).
        fn stored_zip(name: &str, bytes: &[u8]) -> Vec<u8> {
            let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            writer.start_file(name, options).unwrap();
            writer.write_all(bytes).unwrap();
            writer.finish().unwrap().into_inner()
        }

        /// A range of 0 to 96 hours around the realistic day.
        fn any_range() -> impl Strategy<Value = DateRange> {
            (-48i64..48, 0i64..96).prop_map(|(from, hours)| {
                let start = from_us(at("2023-08-13T00:00:00Z") + from * HOUR_US);
                DateRange::new(start, start + TimeDelta::hours(hours)).unwrap()
            })
        }

        /// Read `reply` as every kind for three areas: an error, or one well-formed series per
        /// area (sorted, distinct hours inside the range, a value per hour).
        fn read_every_kind(reply: &Reply, range: DateRange) -> Result<(), TestCaseError> {
            let caiso = source(&AREAS, &CaisoKind::ALL);
            for kind in CaisoKind::ALL {
                if let Ok(series) = caiso.read_reply(reply, kind, range) {
                    prop_assert_eq!(series.len(), AREAS.len());
                    for rows in &series {
                        prop_assert_eq!(rows.timestamps.len(), rows.values.len());
                        prop_assert!(rows.timestamps.windows(2).all(|w| w[0] < w[1]), "{:?}", rows.timestamps);
                        prop_assert!(rows.timestamps.iter().all(|t| range.holds_us(*t)));
                        prop_assert!(rows.timestamps.iter().all(|t| t % HOUR_US == 0));
                    }
                }
            }
            Ok(())
        }

        fn zip_reply(body: Vec<u8>, disposition: bool) -> Reply {
            let reply = reply(body);
            if disposition { reply.with_content_disposition(DISPOSITION) } else { reply }
        }

        /// A CSV field: real times and values, OASIS names, and garbage.
        fn field() -> impl Strategy<Value = String> {
            prop_oneof![
                (-30i64..60).prop_map(|h| gmt(at("2023-08-13T00:00:00Z") + h * HOUR_US)),
                (-200i64..400).prop_map(|m| gmt(at("2023-08-13T00:00:00Z") + m * 15 * 60 * 1_000_000)),
                prop::sample::select(vec![
                    "",
                    " ",
                    SYSTEM_AREA,
                    "PGE-TAC",
                    "SYS_FCST_ACT_MW",
                    "SYS_FCST_15MIN_MW",
                    "NaN",
                    "inf",
                    "-0",
                    "1e308",
                    "\"quoted, with comma\"",
                    "\"unterminated",
                    "\"\"",
                    "9999-12-31T23:59:59-00:00",
                    "0000-01-01T00:00:00+23:59",
                    "2023-08-13T00:00:00Z",
                    "2023-08-13 00:00",
                ])
                .prop_map(str::to_string),
                any::<f64>().prop_map(|v| v.to_string()),
                "\\PC{0,12}",
            ]
        }

        /// A CSV column name: the ones read, other real ones, and random names.
        fn column() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    COL_START,
                    COL_END,
                    COL_AREA,
                    COL_ITEM,
                    COL_MW,
                    "OPR_DT",
                    "OPR_HR",
                    "MARKET_RUN_ID",
                    "\u{feff}MW",
                ])
                .prop_map(str::to_string),
                "[A-Z_]{0,10}",
                "\\PC{0,6}",
            ]
        }

        /// A row for `header` that the reader takes (times, area, item and MW in their columns);
        /// when `noisy`, some of its fields replaced by random ones, sometimes one field more or
        /// less, and intervals that end at or before their start.
        fn row(header: Vec<String>, noisy: bool) -> impl Strategy<Value = String> {
            let n = header.len();
            let minute = 60 * 1_000_000;
            let mut lengths = vec![5 * minute, 15 * minute, HOUR_US];
            if noisy {
                lengths.extend([-HOUR_US, 0]);
            }
            let (replacements, extras) = if noisy { (0..3, vec![-1i8, 0, 0, 0, 1]) } else { (0..1, vec![0i8]) };
            (
                -30i64..60,
                prop::sample::select(lengths),
                prop::sample::select(AREAS.to_vec()),
                prop::sample::select(CaisoKind::ALL.map(CaisoKind::data_item).to_vec()),
                any::<i32>(),
                prop::collection::vec((any::<prop::sample::Index>(), field()), replacements),
                prop::sample::select(extras),
            )
                .prop_map(move |(hour, length, area, item, mw, replaced, extra)| {
                    let start = at("2023-08-13T00:00:00Z") + hour * HOUR_US;
                    let mut fields: Vec<String> = header
                        .iter()
                        .map(|name| match name.as_str() {
                            COL_START => gmt(start),
                            COL_END => gmt(start + length),
                            COL_AREA => area.to_string(),
                            COL_ITEM => item.to_string(),
                            COL_MW => (f64::from(mw) / 7.0).to_string(),
                            _ => "x".to_string(),
                        })
                        .collect();
                    for (at, value) in replaced {
                        if n > 0 {
                            fields[at.index(n)] = value;
                        }
                    }
                    match extra {
                        -1 => {
                            fields.pop();
                        }
                        1 => fields.push("extra".into()),
                        _ => {}
                    }
                    fields.join(",")
                })
        }

        /// CSV text: a header holding most of the columns read plus random ones in random order,
        /// rows that are nearly right or wholly random, random line ends.
        fn any_csv() -> impl Strategy<Value = String> {
            let read = vec![COL_START, COL_END, COL_AREA, COL_ITEM, COL_MW];
            let some = prop_oneof![3 => Just(read.clone()), 1 => prop::sample::subsequence(read, 3..=5)];
            (some, prop::collection::vec(column(), 0..4))
                .prop_map(|(read, extra)| {
                    let mut header: Vec<String> = read.into_iter().map(str::to_string).collect();
                    header.extend(extra);
                    header
                })
                .prop_shuffle()
                .prop_flat_map(|header| (Just(header), any::<bool>()))
                .prop_flat_map(|(header, noisy)| {
                    let random = if noisy { 1 } else { 0 };
                    let line = prop_oneof![
                        3 => row(header.clone(), noisy),
                        random => prop::collection::vec(field(), 0..9).prop_map(|fields| fields.join(",")),
                    ];
                    (
                        Just(header.join(",")),
                        prop::collection::vec(line, 0..24),
                        prop::sample::select(vec!["\n", "\r\n", "\n\n"]),
                    )
                })
                .prop_map(|(header, rows, end)| {
                    let mut lines = vec![header];
                    lines.extend(rows);
                    lines.join(end)
                })
        }

        /// XML-ish text built from OASIS report tags, entities and random text.
        fn any_xml() -> impl Strategy<Value = String> {
            let token = prop_oneof![
                prop::sample::select(vec![
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                    "<m:OASISReport xmlns:m=\"http://www.caiso.com/soa/OASISReport_v1.xsd\">",
                    "</m:OASISReport>",
                    "<m:ERROR>",
                    "</m:ERROR>",
                    "<m:ERR_CODE>",
                    "</m:ERR_CODE>",
                    "<m:ERR_DESC>",
                    "</m:ERR_DESC>",
                    "<ERR_CODE/>",
                    "<![CDATA[1000]]>",
                    "<!-- comment -->",
                    "<!DOCTYPE x [<!ENTITY e \"1015\">]>",
                    "&e;",
                    "&amp;",
                    "&bogus;",
                    "&#0;",
                    "&#xFFFFFFFF;",
                    "<a b='c' d=\"",
                    "</>",
                    "<",
                    ">",
                    "1000",
                    "1015",
                    "4294967296",
                    "-1",
                ])
                .prop_map(str::to_string),
                "[0-9]{1,12}",
                "\\PC{0,10}",
            ];
            prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn arbitrary_bodies(
                body in prop::collection::vec(any::<u8>(), 0..2048),
                zip_magic in any::<bool>(),
                status in prop_oneof![Just(200u16), 100u16..600],
                content_type in prop::option::of(prop::sample::select(vec!["application/x-zip-compressed", "text/html", "application/json"])),
                disposition in any::<bool>(),
                range in any_range(),
            ) {
                let mut bytes = if zip_magic { b"PK\x03\x04".to_vec() } else { Vec::new() };
                bytes.extend(body);
                let mut reply = Reply::new(status, content_type, bytes, URL);
                if disposition {
                    reply = reply.with_content_disposition(DISPOSITION);
                }
                read_every_kind(&reply, range)?;
            }

            #[test]
            fn mutated_zips(
                member in prop_oneof![
                    (1i64..48).prop_map(|h| ("SLD_FCST.csv".to_string(), realistic_csv(h))),
                    (0u32..2000).prop_map(|code| ("INVALID_REQUEST.xml".to_string(), String::from_utf8(error_zip_xml(code)).unwrap())),
                ],
                stored in any::<bool>(),
                flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
                inserts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
                cut in prop::option::of(any::<prop::sample::Index>()),
                disposition in any::<bool>(),
                range in any_range(),
            ) {
                let (name, text) = member;
                let mut bytes = if stored { stored_zip(&name, text.as_bytes()) } else { zip_of(&name, &text) };
                for (at, mask) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= mask;
                }
                for (at, byte) in inserts {
                    let i = at.index(bytes.len() + 1);
                    bytes.insert(i, byte);
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                read_every_kind(&zip_reply(bytes, disposition), range)?;
            }

            #[test]
            fn csvs_with_random_columns_and_fields(
                text in prop_oneof![3 => any_csv(), 1 => prop::collection::vec(column(), 0..8).prop_map(|c| c.join(","))],
                item in prop::sample::select(CaisoKind::ALL.map(CaisoKind::data_item).to_vec()),
                range in any_range(),
            ) {
                if let Ok(table) = parse_csv(&text)
                    && let Ok(series) = table.hourly(&AREAS, item, range)
                {
                    prop_assert_eq!(series.len(), AREAS.len());
                }
                read_every_kind(&zip_reply(zip_of("SLD_FCST.csv", &text), false), range)?;
                read_every_kind(&zip_reply(stored_zip("SLD_FCST.csv", text.as_bytes()), true), range)?;
            }

            #[test]
            fn random_xml(text in any_xml(), arbitrary in "\\PC{0,64}", range in any_range()) {
                for xml in [&text, &arbitrary] {
                    let _ = parse_report(xml);
                    read_every_kind(&zip_reply(zip_of("INVALID_REQUEST.xml", xml), false), range)?;
                }
                // a CSV member that starts like XML is read as a report
                read_every_kind(&zip_reply(zip_of("SLD_FCST.csv", &format!("<{text}")), false), range)?;
            }

            #[test]
            fn member_bytes_that_are_not_utf8(bytes in prop::collection::vec(any::<u8>(), 0..512), range in any_range()) {
                read_every_kind(&zip_reply(stored_zip("SLD_FCST.csv", &bytes), false), range)?;
                read_every_kind(&zip_reply(stored_zip("INVALID_REQUEST.xml", &bytes), true), range)?;
            }
        }

        /// The XML inside [`error_zip`].
        fn error_zip_xml(code: u32) -> Vec<u8> {
            let zip = error_zip(code, "Processing, submit again later");
            let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
            let mut text = Vec::new();
            archive.by_index(0).unwrap().read_to_end(&mut text).unwrap();
            text
        }

        /// The well-formed inputs do give rows, so the properties above see both outcomes.
        #[test]
        fn the_unmutated_inputs_are_read() {
            let day = day_range();
            let caiso = source(&AREAS, &CaisoKind::ALL);
            let rows = caiso.read_reply(&reply(zip_of("a.csv", &realistic_csv(24))), CaisoKind::Dam, day).unwrap();
            assert_eq!(rows.iter().map(SeriesRows::len).collect::<Vec<_>>(), [24, 24, 24]);
            let stored =
                caiso.read_reply(&reply(stored_zip("a.csv", realistic_csv(24).as_bytes())), CaisoKind::Actual, day);
            assert_eq!(stored.unwrap()[1].len(), 24);
            assert_eq!(parse_report(&String::from_utf8(error_zip_xml(1015)).unwrap()).unwrap().0, 1015);
        }

        fn day_range() -> DateRange {
            range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z")
        }
    }
}
