//! The JSON API under `/api/v1`, read-only: every route answers GET (and HEAD) only, every
//! parameter is checked (names by the store's rule, days and counts bounded, unknown
//! parameters refused), and an error is JSON, `{"error": {"status", "parameter", "message"}}`,
//! with its status code: 400 naming the parameter for bad input.
use super::archive::{self, IssuedForecast};
use super::{ACCURACY_DAYS, State, dashboard, metrics};
use crate::ingest::{SeriesId, check_name};
use crate::time::DateRange;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State as Shared};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest query string accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Longest range of `/api/v1/series`, in days.
pub const MAX_SERIES_DAYS: i64 = 92;
/// Longest range of `/api/v1/archive` and `/api/v1/accuracy`, in days.
pub const MAX_ARCHIVE_DAYS: i64 = 366;
/// Most forecasts one `/api/v1/archive` answer lists.
pub const MAX_ARCHIVE_LIMIT: usize = 500;
/// Days a request covers when it names none.
const DEFAULT_DAYS: i64 = 7;

/// Every route of the server.
pub(super) fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/", get(dashboard::page))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/forecast", get(forecast))
        .route("/api/v1/archive", get(archive))
        .route("/api/v1/series", get(series))
        .route("/api/v1/status", get(status))
        .route("/api/v1/accuracy", get(accuracy))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, None, "no such endpoint (see /api/v1/status)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, None, "the API is read-only: GET only")
        })
        .layer(middleware::from_fn(limits))
        .with_state(state)
}

/// An error answer.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    parameter: Option<String>,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, parameter: Option<&str>, message: impl Into<String>) -> Self {
        Self { status, parameter: parameter.map(str::to_string), message: message.into() }
    }

    /// 400 naming the parameter.
    pub(super) fn bad(parameter: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(parameter), format!("parameter `{parameter}`: {message}"))
    }

    pub(super) fn internal(message: impl std::fmt::Display) -> Self {
        tracing::warn!(%message, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, message.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": {
            "status": self.status.as_u16(),
            "parameter": self.parameter,
            "message": self.message,
        }});
        (self.status, Json(body)).into_response()
    }
}

/// Refuse a query string over [`MAX_QUERY_BYTES`] (414) and any request body (413): no route
/// reads one.
async fn limits(request: Request, next: Next) -> Response {
    if request.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            None,
            format!("the query string is longer than {MAX_QUERY_BYTES} bytes"),
        )
        .into_response();
    }
    let length =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > 0) || request.headers().contains_key(header::TRANSFER_ENCODING) {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, None, "requests carry no body").into_response();
    }
    next.run(request).await
}

/// A request's parameters, checked against the names its route takes.
pub(super) struct Params(BTreeMap<String, String>);

impl Params {
    pub(super) fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        let Query(pairs) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, None, e.body_text()))?;
        let mut out = BTreeMap::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                let shown: String = name.chars().take(40).collect();
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Some(&shown),
                    format!("unknown parameter `{}`; this endpoint takes {}", shown.escape_debug(), allowed.join(", ")),
                ));
            }
            if out.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad(&name, "given twice"));
            }
        }
        Ok(Self(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::bad(name, "missing"))
    }

    /// A name by the store's rule.
    fn name(&self, parameter: &str) -> Result<Option<String>, ApiError> {
        match self.get(parameter) {
            None => Ok(None),
            Some(value) => {
                check_name(parameter, value).map_err(|e| ApiError::bad(parameter, e))?;
                Ok(Some(value.to_string()))
            }
        }
    }

    /// A region the server serves (the first one when not given).
    pub(super) fn region(&self, state: &State) -> Result<String, ApiError> {
        let served = state.regions();
        match self.name("region")? {
            Some(region) if served.contains(&region) => Ok(region),
            Some(region) => {
                Err(ApiError::bad("region", format!("`{region}` is not served (served: {})", served.join(", "))))
            }
            None => served.first().cloned().ok_or_else(|| ApiError::bad("region", "no region is served")),
        }
    }

    /// A whole number in `range`, or `default`.
    fn number(&self, name: &str, range: std::ops::RangeInclusive<i64>, default: i64) -> Result<i64, ApiError> {
        let Some(text) = self.get(name) else { return Ok(default) };
        let value: i64 = text.parse().map_err(|_| ApiError::bad(name, "not a whole number"))?;
        if !range.contains(&value) {
            return Err(ApiError::bad(name, format!("must be between {} and {}", range.start(), range.end())));
        }
        Ok(value)
    }

    /// `start` and `end` (UTC days, both included, `YYYY-MM-DD`), at most `max_days` long;
    /// the last [`DEFAULT_DAYS`] days up to now when neither is given.
    fn range(&self, max_days: i64) -> Result<DateRange, ApiError> {
        let day = |name: &str| -> Result<Option<NaiveDate>, ApiError> {
            self.get(name)
                .map(|text| {
                    NaiveDate::parse_from_str(text, "%Y-%m-%d")
                        .map_err(|_| ApiError::bad(name, "not a date (YYYY-MM-DD)"))
                })
                .transpose()
        };
        let (start, end) = (day("start")?, day("end")?);
        let range = match (start, end) {
            (Some(start), Some(end)) => DateRange::from_days(start, end).map_err(|e| ApiError::bad("end", e))?,
            (None, None) => {
                let now = Utc::now();
                let from = now - chrono::TimeDelta::days(DEFAULT_DAYS);
                DateRange::new(
                    crate::time::floor_hour(from),
                    crate::time::floor_hour(now) + chrono::TimeDelta::hours(1),
                )
                .map_err(ApiError::internal)?
            }
            (Some(_), None) => return Err(ApiError::bad("end", "missing (give start and end together)")),
            (None, Some(_)) => return Err(ApiError::bad("start", "missing (give start and end together)")),
        };
        if range.start.timestamp() < 0 {
            return Err(ApiError::bad("start", "before 1970"));
        }
        if range.hours() > max_days * 24 {
            return Err(ApiError::bad("end", format!("the range is longer than {max_days} days")));
        }
        Ok(range)
    }
}

/// Run blocking store work off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(ApiError::internal)?
}

/// A forecast as the API shows it.
#[derive(Serialize)]
struct ForecastAnswer<'a> {
    #[serde(flatten)]
    forecast: &'a IssuedForecast,
    stale: bool,
    stale_reason: Option<&'a str>,
}

/// `GET /api/v1/forecast?region=R`: the newest forecast, one entry per hour.
async fn forecast(
    Shared(state): Shared<Arc<State>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, &["region"])?;
    let region = params.region(&state)?;
    let current = state.region(&region).ok_or_else(|| ApiError::internal("the region vanished"))?;
    let Some(forecast) = &current.latest else {
        let why = current.stale_reason.as_deref().unwrap_or("none issued yet");
        return Err(ApiError::new(StatusCode::NOT_FOUND, None, format!("no forecast of {region} yet: {why}")));
    };
    let answer = ForecastAnswer {
        forecast,
        stale: current.stale_reason.is_some(),
        stale_reason: current.stale_reason.as_deref(),
    };
    Ok(Json(answer).into_response())
}

/// `GET /api/v1/archive?region=R[&start=D&end=D][&limit=N]`: forecasts issued in the range
/// (default the last 7 days), newest first, at most `limit` (default 24, at most 500).
async fn archive(
    Shared(state): Shared<Arc<State>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, &["region", "start", "end", "limit"])?;
    let region = params.region(&state)?;
    let range = params.range(MAX_ARCHIVE_DAYS)?;
    let limit = params.number("limit", 1..=MAX_ARCHIVE_LIMIT as i64, 24)? as usize;
    let store = state.store.clone();
    let name = region.clone();
    let mut forecasts =
        blocking(move || archive::read(&store, &name, Some(range.start), Some(range.end)).map_err(ApiError::internal))
            .await?;
    let total = forecasts.len();
    forecasts.reverse();
    forecasts.truncate(limit);
    let answer = serde_json::json!({
        "region": region,
        "start": range.start,
        "end": range.end,
        "total": total,
        "forecasts": forecasts,
    });
    Ok(Json(answer).into_response())
}

/// `GET /api/v1/series?source=S&region=R&kind=K[&start=D&end=D]`: stored rows (default the
/// last 7 days, at most 92).
async fn series(
    Shared(state): Shared<Arc<State>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, &["source", "region", "kind", "start", "end"])?;
    let mut names = Vec::new();
    for name in ["source", "region", "kind"] {
        params.required(name)?;
        names.push(params.name(name)?.unwrap_or_default());
    }
    let id = SeriesId::new(&names[0], &names[1], &names[2]);
    let range = params.range(MAX_SERIES_DAYS)?;
    let store = state.store.clone();
    let rows = blocking(move || {
        if !store.has_series(&id) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, None, format!("the store holds no series {id}")));
        }
        store.read(&id, Some(range)).map_err(ApiError::internal)
    })
    .await?;
    let values: Vec<serde_json::Value> = rows
        .timestamps
        .iter()
        .zip(&rows.values)
        .map(|(t, v)| serde_json::json!({ "timestamp": crate::time::from_us(*t), "value": v }))
        .collect();
    let answer = serde_json::json!({
        "series": rows.id,
        "start": range.start,
        "end": range.end,
        "rows": values,
    });
    Ok(Json(answer).into_response())
}

/// Coverage of one stored series.
#[derive(Serialize)]
struct Coverage {
    series: SeriesId,
    rows: usize,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

/// `GET /api/v1/status`: the schedule, and per region its model and backtest scores, last
/// collection and its result, staleness, counters, live accuracy and coverage.
async fn status(
    Shared(state): Shared<Arc<State>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    Params::parse(query, &[])?;
    let (regions, runs, next_run) = state.snapshot();
    let store = state.store.clone();
    let regions = blocking(move || {
        let mut out = Vec::new();
        for region in regions {
            let mut coverage = Vec::new();
            if let Some(model) = &region.model {
                for id in std::iter::once(&model.load).chain(&model.operator) {
                    if !store.has_series(id) {
                        continue;
                    }
                    let rows = store.read(id, None).map_err(ApiError::internal)?;
                    coverage.push(Coverage {
                        series: id.clone(),
                        rows: rows.len(),
                        first: rows.timestamps.first().map(|t| crate::time::from_us(*t)),
                        last: rows.timestamps.last().map(|t| crate::time::from_us(*t)),
                    });
                }
            }
            let latest = region.latest.as_ref().map(
                |f| serde_json::json!({ "issued_at": f.issued_at, "data_up_to": f.data_up_to, "model_id": f.model_id }),
            );
            let mut value = serde_json::to_value(&region).map_err(ApiError::internal)?;
            value["stale"] = serde_json::Value::Bool(region.stale_reason.is_some());
            value["latest_forecast"] = latest.unwrap_or_default();
            value["coverage"] = serde_json::to_value(coverage).map_err(ApiError::internal)?;
            out.push(value);
        }
        Ok(out)
    })
    .await?;
    let answer = serde_json::json!({
        "started_at": state.started_at,
        "every_s": state.every.as_secs(),
        "runs": runs,
        "next_run": next_run,
        "regions": regions,
    });
    Ok(Json(answer).into_response())
}

/// `GET /api/v1/accuracy?region=R[&days=N]`: live MAPE by lead hour of the forecasts issued
/// in the last `days` (default 30, at most 366), beside the operator's and the seasonal naive
/// on the same hours; lead 0 is every lead together.
async fn accuracy(
    Shared(state): Shared<Arc<State>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, &["region", "days"])?;
    let region = params.region(&state)?;
    let days = params.number("days", 1..=MAX_ARCHIVE_DAYS, ACCURACY_DAYS)?;
    let current = state.region(&region).ok_or_else(|| ApiError::internal("the region vanished"))?;
    let Some(model) = current.model else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, None, format!("no model of {region} loaded yet")));
    };
    let scorer = state.clone();
    let name = region.clone();
    let operator = model.operator.clone();
    let leads = blocking(move || scorer.score(&name, &model, days).map_err(ApiError::internal)).await?;
    let answer = serde_json::json!({
        "region": region,
        "days": days,
        "operator": operator,
        "leads": leads,
    });
    Ok(Json(answer).into_response())
}
