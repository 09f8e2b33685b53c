//! `/`: one server-rendered page per region, no JavaScript: the last week of load, the forecast
//! with its p10–p90 band and the operator's forecast where stored (an inline SVG chart drawn by
//! [`crate::plot`]), the forecast's state, the live accuracy so far and the forecast table.
//! Reloading the page shows the newest state.
use super::api::{ApiError, Params, blocking};
use super::{RegionState, State};
use crate::eval::Quantiles;
use crate::ingest::Store;
use crate::time::HOUR_US;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State as Shared};
use axum::response::Html;
use std::fmt::Write as _;
use std::sync::Arc;

/// (timestamp µs, MW) pairs.
type Points = Vec<(i64, f64)>;

/// The chart's size in pixels.
const CHART: (u32, u32) = (1100, 460);

/// Text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /?region=R` (the first region served when not given).
pub(super) async fn page(
    Shared(state): Shared<Arc<State>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let params = Params::parse(query, &["region"])?;
    let region = params.region(&state)?;
    let current = state.region(&region).ok_or_else(|| ApiError::internal("the region vanished"))?;
    let regions = state.regions();
    let store = state.store.clone();
    let html = blocking(move || render(&store, &regions, &current).map_err(ApiError::internal)).await?;
    Ok(Html(html))
}

/// The observed load of the week up to the forecast's data (or the newest stored hour), and the
/// operator's forecast from that week's start to the forecast's end.
fn chart_data(store: &Store, state: &RegionState) -> anyhow::Result<(Points, Points)> {
    let Some(model) = &state.model else { return Ok((Vec::new(), Vec::new())) };
    if !store.has_series(&model.load) {
        return Ok((Vec::new(), Vec::new()));
    }
    let load = store.read(&model.load, None)?;
    let end = match &state.latest {
        Some(latest) => latest.data_up_to.timestamp_micros(),
        None => load.timestamps.last().copied().unwrap_or(0),
    };
    let start = end - 7 * 24 * HOUR_US;
    let pick = |rows: &crate::ingest::SeriesRows, to: i64| -> Vec<(i64, f64)> {
        rows.timestamps
            .iter()
            .zip(&rows.values)
            .filter(|(t, _)| **t >= start && **t <= to)
            .filter_map(|(t, v)| v.map(|v| (*t, v)))
            .collect()
    };
    let history = pick(&load, end);
    let operator = match &model.operator {
        Some(id) if store.has_series(id) => {
            let to = state.latest.as_ref().and_then(|f| f.hours.last()).map_or(end, |h| h.timestamp.timestamp_micros());
            pick(&store.read(id, None)?, to)
        }
        _ => Vec::new(),
    };
    Ok((history, operator))
}

fn render(store: &Store, regions: &[String], state: &RegionState) -> anyhow::Result<String> {
    let region = escape(&state.region);
    let (history, operator) = chart_data(store, state)?;
    let forecast: Vec<(i64, Quantiles)> = state
        .latest
        .iter()
        .flat_map(|f| f.hours.iter().map(|h| (h.timestamp.timestamp_micros(), h.quantiles())))
        .collect();
    let chart = if history.is_empty() && forecast.is_empty() {
        "<p>No data to draw yet.</p>".to_string()
    } else {
        let title = format!("{} load: last week, forecast p50 with p10-p90 band", state.region);
        crate::plot::forecast_svg(CHART, &title, &history, &forecast, &operator)?
    };
    let mut html = String::new();
    write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>energy serve: {region}</title>\
         <style>body{{font-family:sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse;margin:.5em 0}}\
         td,th{{border:1px solid #bbb;padding:.2em .6em;text-align:right}}th{{background:#eee}}\
         .stale{{background:#fde2e2;border:1px solid #c33;padding:.5em}}.fresh{{background:#e3f5e1;border:1px solid #393;padding:.5em}}\
         nav a{{margin-right:1em}}</style></head><body>\n<h1>Load forecast: {region}</h1>\n<nav>"
    )?;
    for other in regions {
        let name = escape(other);
        let link: String = other.replace(' ', "+");
        write!(html, "<a href=\"/?region={}\">{name}</a>", escape(&link))?;
    }
    html.push_str("</nav>\n");
    match (&state.latest, &state.stale_reason) {
        (Some(latest), stale) => {
            let (class, word) = if stale.is_some() { ("stale", "STALE") } else { ("fresh", "fresh") };
            write!(
                html,
                "<p class=\"{class}\">Forecast {word}: issued {} from data up to {} by model {}.",
                latest.issued_at.format("%Y-%m-%d %H:%M UTC"),
                latest.data_up_to.format("%Y-%m-%d %H:%M UTC"),
                escape(&latest.model_id)
            )?;
            if let Some(reason) = stale {
                write!(html, " Reason: {}", escape(reason))?;
            }
            html.push_str("</p>\n");
        }
        (None, reason) => {
            writeln!(html, "<p class=\"stale\">No forecast yet: {}</p>", escape(reason.as_deref().unwrap_or("")))?;
        }
    }
    if let Some(collection) = &state.last_collection {
        writeln!(
            html,
            "<p>Last collection: {} — {}, {} rows, {} retries, {:.1} s.</p>",
            collection.at.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
            if collection.ok { "succeeded" } else { "FAILED" },
            collection.rows,
            collection.retries,
            collection.duration_s
        )?;
    }
    html.push_str("<figure>");
    html.push_str(&chart);
    html.push_str("<figcaption>Black: observed load. Blue: forecast p50, shaded p10–p90. Red dashed: the operator's forecast (where stored).</figcaption></figure>\n");
    html.push_str("<h2>Live accuracy (last 30 days)</h2>\n");
    if state.accuracy.is_empty() {
        html.push_str("<p>No archived forecast has been scored yet: the hours forecast have not happened.</p>\n");
    } else {
        html.push_str("<table><tr><th>lead (h)</th><th>hours</th><th>model MAPE %</th><th>operator MAPE %</th><th>seasonal naive MAPE %</th></tr>\n");
        for lead in &state.accuracy {
            let name = if lead.lead_h == 0 { "all".to_string() } else { lead.lead_h.to_string() };
            let operator = lead.operator_mape_percent.map_or("-".to_string(), |m| format!("{m:.2}"));
            writeln!(
                html,
                "<tr><td>{name}</td><td>{}</td><td>{:.2}</td><td>{operator}</td><td>{:.2}</td></tr>",
                lead.hours, lead.model_mape_percent, lead.naive_mape_percent
            )?;
        }
        html.push_str("</table>\n");
    }
    if let Some(latest) = &state.latest {
        html.push_str("<h2>Forecast</h2>\n<table><tr><th>hour (UTC)</th><th>lead (h)</th><th>p10 MW</th><th>p50 MW</th><th>p90 MW</th></tr>\n");
        for hour in &latest.hours {
            writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td></tr>",
                hour.timestamp.format("%Y-%m-%d %H:%M"),
                hour.lead_h,
                hour.p10,
                hour.p50,
                hour.p90
            )?;
        }
        html.push_str("</table>\n");
    }
    html.push_str(
        "<p>API: <a href=\"/api/v1/status\">status</a>, <a href=\"/api/v1/forecast\">forecast</a>, \
         <a href=\"/api/v1/archive\">archive</a>, <a href=\"/api/v1/accuracy\">accuracy</a>, \
         <a href=\"/metrics\">metrics</a>. Reload for the newest state.</p>\n</body></html>\n",
    );
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
    }
}
