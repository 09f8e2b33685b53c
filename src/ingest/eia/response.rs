//! The EIA API v2 wire format: a JSON page into the rows of the asked series, and error bodies
//! (in any status, 200 included) into [`IngestError`]s that say what to do.
//!
//! Members are read as the module documentation of [`super`] says: `total`, `value`, `offset`
//! and `length` as strings, numbers or null, unknown members ignored, strings borrowed from the
//! body where they hold no escapes (a page holds thousands of rows).
use super::{EiaSource, PAGE_ROWS, REQUESTS_PER_HOUR, REQUESTS_PER_SECOND, Route};
use crate::ingest::IngestError;
use crate::ingest::http::Reply;
use crate::time::{DateRange, parse_hour};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;

impl EiaSource {
    /// Read one page's reply into rows of the asked series (errors for failed statuses, error
    /// bodies, unreadable bodies and pages shorter than `total` promises).
    pub fn read_page(&self, reply: &Reply, route: Route, range: DateRange, offset: u64) -> Result<Page, IngestError> {
        let response = checked_response(reply)?;
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
            let (region, code) = match route {
                Route::RegionData => (row.respondent.as_ref(), row.kind.as_ref()),
                Route::FuelTypeData => (row.respondent.as_ref(), row.fueltype.as_ref()),
                Route::Interchange => (row.fromba.as_ref(), row.toba.as_ref()),
                Route::SubBa => (row.parent.as_ref(), row.subba.as_ref()),
            };
            let index = match (region, code) {
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
}

/// A reply's body as a [`Response`], or the error it is: an error body (in any status), a
/// body that does not parse, or a failed status.
pub(super) fn checked_response(reply: &Reply) -> Result<Response<'_>, IngestError> {
    match parse_response(&reply.body) {
        Err(ParseError::Api { code, message }) => Err(api_error(reply, code.as_deref(), &message)),
        Err(ParseError::Invalid(why)) => {
            let what = format!(
                "expected a JSON body, got {} that does not parse ({why}), starting `{}`",
                reply.shown_content_type(),
                reply.snippet()
            );
            Err(if reply.status.is_success() { reply.body_error(&what) } else { status_error(reply, &what) })
        }
        Ok(_) if !reply.status.is_success() => Err(status_error(reply, &format!("`{}`", reply.snippet()))),
        Ok(response) => Ok(response),
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
                 and keep [eia] requests_per_second and requests_per_hour at or under {REQUESTS_PER_SECOND} and \
                 {REQUESTS_PER_HOUR}"
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
    /// interchange-data: the sending and receiving balancing authorities.
    #[serde(borrow, default)]
    pub fromba: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub toba: Option<Text<'a>>,
    /// region-sub-ba-data: the parent balancing authority and its sub-region.
    #[serde(borrow, default)]
    pub parent: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub subba: Option<Text<'a>>,
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

/// An EIA hourly period as epoch microseconds: `YYYY-MM-DDTHH` (UTC) or `YYYY-MM-DDTHH±hh`
/// (a local hour with its UTC offset), read by [`parse_hour`]; a date without its hour is not
/// an hourly period (`None`).
pub fn parse_period(text: &str) -> Option<i64> {
    if text.as_bytes().get(10) == Some(&b'T') { parse_hour(text) } else { None }
}
