//! The OASIS wire format: a reply's zip, the CSV inside it (read with the `csv` crate, by
//! header name) or the XML `OASISReport` that carries an error, and the hourly rows they make.
//!
//! Everything here reads bytes already fetched; requests, pacing and retries are the source's
//! ([`super::CaisoSource`]).
use super::{CaisoKind, ERR_NO_DATA};
use crate::ingest::http::Reply;
use crate::ingest::{IngestError, SeriesId, SeriesRows};
use crate::time::{DateRange, HOUR_US, parse_instant};
use std::collections::HashMap;
use std::io::Read;

/// CSV columns read (by name).
pub(super) const COL_START: &str = "INTERVALSTARTTIME_GMT";
pub(super) const COL_END: &str = "INTERVALENDTIME_GMT";
pub(super) const COL_AREA: &str = "TAC_AREA_NAME";
pub(super) const COL_ITEM: &str = "XML_DATA_ITEM";
pub(super) const COL_MW: &str = "MW";
/// `SLD_REN_FCST`: the trading hub (its region) and wind or solar.
pub(super) const COL_HUB: &str = "TRADING_HUB";
pub(super) const COL_RENEWABLE: &str = "RENEWABLE_TYPE";

/// Read one reply into hourly rows of `kind` per area of `areas` (in that order) in `range`.
pub(super) fn read_reply(
    reply: &Reply,
    areas: &[String],
    kind: CaisoKind,
    range: DateRange,
) -> Result<Vec<SeriesRows>, IngestError> {
    if !reply.status.is_success() {
        return Err(reply.status_error(&format!("{}: `{}`", reply.shown_content_type(), reply.snippet())));
    }
    // `Content-Disposition: inline; filename=INVALID_REQUEST.xml.zip;` marks a refused request
    let invalid = reply.content_disposition.as_deref().filter(|v| v.to_ascii_uppercase().contains("INVALID_REQUEST"));
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
                return Err(refused(header, format!("; its report has no ERR_CODE and starts `{}`", snippet(&text))));
            }
            (None, None) => {
                return Err(reply.format_error(&format!(
                    "the zip holds an XML report without ERR_CODE, starting `{}`",
                    snippet(&text)
                )));
            }
        },
    };
    let areas: Vec<&str> = areas.iter().map(String::as_str).collect();
    table.hourly_where(kind.area_column(), &kind.filters(), &areas, range).map_err(|why| reply.format_error(&why))
}

/// The file a reply's zip holds.
#[derive(Debug)]
pub(super) enum Member {
    Csv(String),
    /// An XML `OASISReport` (an error).
    Report(String),
}

pub(super) fn read_zip(reply: &Reply) -> Result<Member, IngestError> {
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
    /// Each row with the line of the text it starts on (1 is the header's).
    rows: Vec<(u64, csv::StringRecord)>,
}

/// Parse CSV text (RFC 4180: quoted fields may hold commas, quotes and line ends); the first
/// record is the header. Blank lines are skipped; rows may have more or fewer fields than the
/// header ([`Table::hourly`] says which line is short).
pub fn parse_csv(text: &str) -> Result<Table, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let bytes = text.as_bytes();
    let (mut header, mut rows) = (None::<Vec<String>>, Vec::new());
    // the line of the text up to byte `counted`: the reader's own line count lags a record
    // behind after a CRLF line end, so lines are counted here
    let (mut counted, mut line) = (0usize, 1u64);
    for record in reader.records() {
        let record = record.map_err(|e| format!("the CSV cannot be read: {e}"))?;
        // a line of spaces is blank too (the csv crate skips only empty lines)
        if record.iter().all(|field| field.trim().is_empty()) {
            continue;
        }
        let mut start = record.position().map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
        start = start.clamp(counted, bytes.len());
        while bytes.get(start).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
            start += 1;
        }
        line += bytes[counted..start].iter().filter(|b| **b == b'\n').count() as u64;
        counted = start;
        match header {
            None => {
                let names = record.iter().enumerate();
                header = Some(
                    names
                        .map(|(i, h)| if i == 0 { h.trim_start_matches('\u{feff}') } else { h }.trim().to_string())
                        .collect(),
                );
            }
            Some(_) => rows.push((line, record)),
        }
    }
    let header = header.ok_or("the CSV is empty (no header line)")?;
    Ok(Table { header, rows })
}

/// An OASIS interval bound in epoch µs: `2023-08-13T00:15:00-00:00` (any minute: RTPD and
/// RTD intervals are 15 and 5 minutes long), or any other spelling [`parse_instant`] reads.
fn parse_time(text: &str) -> Option<i64> {
    parse_instant(text).ok()
}

/// The end of the hour holding the interval that ends at `t_end` (itself when on the hour).
fn hour_end(t_end: i64) -> i64 {
    t_end.div_euclid(HOUR_US) * HOUR_US + if t_end % HOUR_US == 0 { 0 } else { HOUR_US }
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
        self.hourly_where(COL_AREA, &[(COL_ITEM, item)], areas, range)
    }

    /// Hourly rows as [`Self::hourly`] says, of the rows whose `area_column` names one of
    /// `areas` and whose columns hold the values `filters` give (`SLD_REN_FCST`: area column
    /// `TRADING_HUB`, filters on `RENEWABLE_TYPE` and `XML_DATA_ITEM`).
    pub fn hourly_where(
        &self,
        area_column: &str,
        filters: &[(&str, &str)],
        areas: &[&str],
        range: DateRange,
    ) -> Result<Vec<SeriesRows>, String> {
        let item = filters.iter().map(|(_, value)| *value).collect::<Vec<_>>().join("/");
        let item = item.as_str();
        let placeholder = |area: &str| SeriesRows::new(SeriesId::new("caiso", area, item));
        if self.rows.is_empty() {
            return Ok(areas.iter().map(|a| placeholder(a)).collect());
        }
        let (start, end, area, mw) =
            (self.column(COL_START)?, self.column(COL_END)?, self.column(area_column)?, self.column(COL_MW)?);
        let filters: Vec<(usize, &str)> =
            filters.iter().map(|(column, value)| Ok((self.column(column)?, *value))).collect::<Result<_, String>>()?;
        let width = [start, end, area, mw].into_iter().chain(filters.iter().map(|f| f.0)).max().unwrap_or(0);
        // per area: interval end → (interval start, value)
        let mut intervals: Vec<HashMap<i64, (i64, Option<f64>)>> = vec![HashMap::new(); areas.len()];
        for (line, row) in &self.rows {
            if row.len() <= width {
                return Err(format!(
                    "CSV line {line} has {} fields where the header has {}",
                    row.len(),
                    self.header.len()
                ));
            }
            if filters.iter().any(|(column, value)| !row[*column].trim().eq_ignore_ascii_case(value)) {
                continue;
            }
            let Some(a) = areas.iter().position(|a| *a == row[area].trim()) else { continue };
            let (Some(t_start), Some(t_end)) = (parse_time(&row[start]), parse_time(&row[end])) else {
                return Err(format!(
                    "CSV line {line}: `{}`/`{}` is not a time like 2023-08-13T00:00:00-00:00",
                    &row[start], &row[end]
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
            if !range.holds_us(hour_end(t_end)) {
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
                let slot = hours.entry(hour_end(t_end)).or_default();
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

/// The first 160 characters of `text` on one line.
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
    use crate::time::format_gmt;
    use crate::time::parse_timestamp;

    fn day() -> DateRange {
        let start = crate::time::from_us(parse_timestamp("2023-08-13T00:00:00Z").unwrap());
        DateRange::new(start, start + chrono::TimeDelta::days(1)).unwrap()
    }

    /// The old reader split on line ends and commas: a quoted field holding both broke the
    /// row in two and shifted its columns.
    #[test]
    fn quoted_fields_with_a_newline_and_a_comma_stay_one_field() {
        let start = parse_timestamp("2023-08-13T00:00:00Z").unwrap();
        let csv = format!(
            "INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,LABEL,TAC_AREA_NAME,XML_DATA_ITEM,MW\r\n\
             {},{},\"Total Actual Hourly\nIntegrated Load, \"\"MW\"\"\",CA ISO-TAC,SYS_FCST_ACT_MW,31000\r\n\
             \r\n   \n\
             {},{},plain,CA ISO-TAC,SYS_FCST_ACT_MW,32000\n",
            format_gmt(start),
            format_gmt(start + HOUR_US),
            format_gmt(start + HOUR_US),
            format_gmt(start + 2 * HOUR_US),
        );
        let table = parse_csv(&csv).unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(&table.rows[0].1[2], "Total Actual Hourly\nIntegrated Load, \"MW\"");
        // the second row starts on line 6: the quoted line end counts, the blank lines are skipped
        assert_eq!((table.rows[0].0, table.rows[1].0), (2, 6));
        let rows = table.hourly(&["CA ISO-TAC"], "SYS_FCST_ACT_MW", day()).unwrap();
        assert_eq!(rows[0].timestamps, [start + HOUR_US, start + 2 * HOUR_US]);
        assert_eq!(rows[0].values, [Some(31000.0), Some(32000.0)]);
    }

    #[test]
    fn a_short_row_names_its_line_and_a_byte_order_mark_is_dropped() {
        let table =
            parse_csv("\u{feff}MW,XML_DATA_ITEM,TAC_AREA_NAME,INTERVALENDTIME_GMT,INTERVALSTARTTIME_GMT\n1,2\n")
                .unwrap();
        let error = table.hourly(&["CA ISO-TAC"], "SYS_FCST_ACT_MW", day()).unwrap_err();
        assert!(error.contains("line 2 has 2 fields where the header has 5"), "{error}");
        assert!(parse_csv("").unwrap_err().contains("empty"));
        assert!(parse_csv(" \n\n").unwrap_err().contains("empty"));
    }

    #[test]
    fn interval_times_may_fall_inside_the_hour() {
        assert_eq!(
            parse_time(" 2023-08-13T00:15:00-00:00 "),
            Some(parse_timestamp("2023-08-13T00:00:00Z").unwrap() + HOUR_US / 4)
        );
        assert_eq!(parse_time("2023-08-13T01:00:00+01:00"), parse_timestamp("2023-08-13T00:00:00Z").ok());
        assert_eq!(parse_time("13/08/2023"), None);
        assert_eq!(hour_end(HOUR_US / 4), HOUR_US);
        assert_eq!(hour_end(HOUR_US), HOUR_US);
        assert_eq!(hour_end(-HOUR_US / 4), 0);
    }
}
