//! The wire format: a JSON object (one location) or array (several, in request order) of
//! `hourly` arrays; error bodies `{"error":true,"reason":…}`; replies of any status into
//! [`Location`]s or [`IngestError`]s.
use crate::ingest::IngestError;
use crate::ingest::http::Reply;
use crate::time::{HOUR_US, parse_instant};
use serde_json::Value;
use std::time::Duration;

/// One location's hourly data: UTC instants (epoch µs) and the variables' values by key.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub times_us: Vec<i64>,
    pub columns: Vec<(String, Vec<Option<f64>>)>,
    /// `hourly_units` by key, where given.
    pub units: Vec<(String, String)>,
}

impl Location {
    /// The values of `variable`: its plain key, or with a model configured, the key suffixed
    /// with the model (`temperature_2m_gfs_seamless`, as the API names keys when a call asks
    /// for two or more models).
    pub fn column(&self, variable: &str, model: Option<&str>) -> Result<&[Option<f64>], String> {
        let find = |key: &str| self.columns.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice());
        if let Some(values) = find(variable) {
            return Ok(values);
        }
        if let Some(values) = model.and_then(|m| find(&format!("{variable}_{m}"))) {
            return Ok(values);
        }
        let keys: Vec<&str> = self.columns.iter().map(|(k, _)| k.as_str()).collect();
        let suffixed = keys.iter().any(|k| k.starts_with(&format!("{variable}_")));
        let hint = if suffixed { " (keys with a model suffix: ask for one model)" } else { "" };
        Err(format!(
            "`hourly` has no `{variable}`; it has {}{hint}",
            if keys.is_empty() { "none".into() } else { keys.join(", ") }
        ))
    }

    pub fn unit(&self, variable: &str) -> Option<&str> {
        self.units.iter().find(|(k, _)| k == variable).map(|(_, u)| u.as_str())
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// Not JSON at all (`{"latitude":nan,…}`, HTML); `truncated` when it ends too early.
    NotJson { message: String, truncated: bool },
    /// `{"error":true,"reason":…}`.
    Api(String),
    /// JSON, but not the documented shape.
    Shape(String),
}

/// The `reason` of an error body (`{"error":true,"reason":…}`, members in any order).
pub fn error_reason(value: &Value) -> Option<String> {
    let object = value.as_object()?;
    if object.get("error").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    Some(object.get("reason").and_then(Value::as_str).unwrap_or("(no reason given)").to_string())
}

/// Parse a successful body: one object, or an array of objects in request order.
pub fn parse_body(body: &[u8]) -> Result<Vec<Location>, BodyError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BodyError::NotJson { message: e.to_string(), truncated: e.is_eof() })?;
    if let Some(reason) = error_reason(&value) {
        return Err(BodyError::Api(reason));
    }
    match &value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_location(item).map_err(|m| BodyError::Shape(format!("location {}: {m}", i + 1))))
            .collect(),
        Value::Object(_) => Ok(vec![parse_location(&value).map_err(BodyError::Shape)?]),
        _ => Err(BodyError::Shape("the body is neither a JSON object nor an array".into())),
    }
}

/// One location object: `utc_offset_seconds` (0 when absent) and `hourly` (`time` and the
/// variables' arrays, all of one length). `iso8601` times are local wall-clock at that one
/// fixed offset (UTC = time − offset); `unixtime` times are UTC seconds.
fn parse_location(value: &Value) -> Result<Location, String> {
    let object = value.as_object().ok_or("not a JSON object")?;
    let offset_s = match object.get("utc_offset_seconds") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| format!("`utc_offset_seconds` is `{v}`, not a whole number"))?,
    };
    let hourly = object.get("hourly").and_then(Value::as_object).ok_or("no `hourly` section")?;
    let times = hourly.get("time").and_then(Value::as_array).ok_or("`hourly` has no `time` array")?;
    let mut times_us = Vec::with_capacity(times.len());
    for time in times {
        let us = match time {
            Value::String(text) => parse_instant(text)? - offset_s * 1_000_000,
            Value::Number(n) => n.as_i64().ok_or_else(|| format!("time `{n}` is not whole seconds"))? * 1_000_000,
            other => return Err(format!("time `{other}` is neither a string nor a number")),
        };
        if us.rem_euclid(HOUR_US) != 0 {
            return Err(format!("time `{time}` (UTC offset {offset_s} s) is not on a whole UTC hour"));
        }
        times_us.push(us);
    }
    let mut columns = Vec::new();
    for (key, values) in hourly.iter().filter(|(k, _)| k.as_str() != "time") {
        let values = values.as_array().ok_or_else(|| format!("`hourly.{key}` is not an array"))?;
        if values.len() != times_us.len() {
            return Err(format!("`hourly.{key}` has {} values for {} times", values.len(), times_us.len()));
        }
        let values = values
            .iter()
            .map(|v| match v {
                Value::Null => Ok(None),
                Value::Number(n) => Ok(n.as_f64()),
                other => Err(format!("`hourly.{key}` holds `{other}`, not a number or null")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        columns.push((key.clone(), values));
    }
    let units = object
        .get("hourly_units")
        .and_then(Value::as_object)
        .map(|u| u.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    Ok(Location { times_us, columns, units })
}

/// Which limit a 429 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Minutely,
    Hourly,
    Daily,
    /// Another 429 (`Too many concurrent requests`): retried with backoff.
    Other,
}

/// The limit a 429's reason names. The wording of reasons changes between server versions and
/// is otherwise never matched; a 429 is the one place where the status alone cannot say what
/// to do, so the reason is read for the one word that names the window.
pub fn classify_429(reason: &str) -> Limit {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("daily") || lower.contains("tomorrow") {
        Limit::Daily
    } else if lower.contains("hourly") || lower.contains("next hour") {
        Limit::Hourly
    } else if lower.contains("minute") {
        Limit::Minutely
    } else {
        Limit::Other
    }
}

/// Time from `now` to one second after the next whole UTC minute, when the API's minute
/// counters have been cleared.
pub fn until_next_minute(now: chrono::DateTime<chrono::Utc>) -> Duration {
    use chrono::Timelike;
    let into_minute = Duration::from_secs(u64::from(now.second())) + Duration::from_nanos(u64::from(now.nanosecond()));
    Duration::from_secs(61).saturating_sub(into_minute)
}

/// Read a reply of any status into its locations (`expected` of them) or an error:
/// - 200: the locations; a body that is not JSON is a bad response (retried only when it
///   ends too early), an error body or a missing section is an error naming it;
/// - 429: minutely → transient, retried after the next minute boundary (as `Retry-After`);
///   hourly or daily → [`IngestError::LimitReached`], not retried; others → retried;
/// - any other status: an HTTP error showing the body's `reason` (400s are not retried).
pub fn read_reply(reply: &Reply, expected: usize) -> Result<Vec<Location>, IngestError> {
    if !reply.status.is_success() {
        let reason = serde_json::from_slice::<Value>(&reply.body).ok().as_ref().and_then(error_reason);
        let shown = reason.clone().unwrap_or_else(|| format!("{}: `{}`", reply.shown_content_type(), reply.snippet()));
        if reply.status.as_u16() == 429 {
            return Err(limit_error(reply, &shown, classify_429(reason.as_deref().unwrap_or(""))));
        }
        return Err(reply.status_error(&shown));
    }
    let locations = parse_body(&reply.body).map_err(|error| match error {
        BodyError::NotJson { message, truncated: true } => {
            reply.body_error(&format!("the body ends too early ({message}): `{}`", reply.snippet()))
        }
        BodyError::NotJson { message, truncated: false } => reply.format_error(&format!(
            "the body is not JSON ({message}; a `nan` coordinate marks a point outside the model's coverage): `{}`",
            reply.snippet()
        )),
        BodyError::Api(reason) => reply.api_error(&reason),
        BodyError::Shape(message) => reply.format_error(&message),
    })?;
    if locations.len() != expected {
        return Err(
            reply.format_error(&format!("the answer holds {} locations for the {expected} asked for", locations.len()))
        );
    }
    Ok(locations)
}

fn limit_error(reply: &Reply, reason: &str, limit: Limit) -> IngestError {
    let stop = |window: &str, when: &str| {
        IngestError::LimitReached {
        url: reply.url.clone(),
        message: reply.scrub(&format!(
            "{reason} (the API's {window} limit is spent: no more requests were sent; run the same command again {when}, \
             it resumes where this one stopped)"
        )),
    }
    };
    match limit {
        Limit::Hourly => stop("hourly", "after the next full hour"),
        Limit::Daily => stop("daily", "after 00:00 UTC"),
        Limit::Minutely => {
            let wait = until_next_minute(chrono::Utc::now());
            IngestError::Http {
                url: reply.url.clone(),
                status: 429,
                message: reply.scrub(&format!("{reason} (retrying after the next minute boundary)")),
                retry_after: Some(wait),
            }
        }
        Limit::Other => reply.status_error(reason),
    }
}
