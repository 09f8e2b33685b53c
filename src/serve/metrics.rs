//! `/metrics`: the server's state in the Prometheus (OpenMetrics) text format, encoded by
//! `prometheus-client` from a fresh registry per scrape. Every series but the schedule's has a
//! `region` label.
use super::State;
use super::api::ApiError;
use axum::extract::State as Shared;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// The content type of the OpenMetrics text format (Prometheus scrapes it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn counters(registry: &mut Registry, name: &str, help: &str) -> Counters {
    let family = Counters::default();
    registry.register(name, help, family.clone());
    family
}

fn gauges(registry: &mut Registry, name: &str, help: &str) -> Gauges {
    let family = Gauges::default();
    registry.register(name, help, family.clone());
    family
}

fn region_label(region: &str) -> Labels {
    vec![("region".to_string(), region.to_string())]
}

/// The metrics text of the state now.
pub(super) fn text(state: &State) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    let collections = counters(&mut registry, "energy_collections", "Collections run by the schedule");
    let failures =
        counters(&mut registry, "energy_collection_failures", "Collections that failed (some chunk not collected)");
    let rows = counters(&mut registry, "energy_collected_rows", "Rows written by the schedule's collections");
    let retries = counters(&mut registry, "energy_collection_retries", "HTTP retries of the schedule's collections");
    let issued = counters(&mut registry, "energy_forecasts_issued", "Forecasts issued and archived");
    let forecast_failures =
        counters(&mut registry, "energy_forecast_failures", "Cycles whose collection succeeded but issued no forecast");
    let last_success = gauges(
        &mut registry,
        "energy_last_success_timestamp_seconds",
        "Unix time of the last cycle that issued a forecast",
    );
    let age = gauges(&mut registry, "energy_forecast_age_seconds", "Seconds since the forecast served was issued");
    let stale =
        gauges(&mut registry, "energy_forecast_stale", "1 when the last cycle failed and the forecast served is old");
    let mape = gauges(
        &mut registry,
        "energy_live_mape_percent",
        "Live MAPE of archived forecasts over the last 30 days, every lead (forecaster: model, operator, seasonal_naive)",
    );
    let scored = gauges(&mut registry, "energy_live_scored_hours", "Hours the live MAPE is computed over");
    let cycle =
        gauges(&mut registry, "energy_cycle_duration_seconds", "Duration of the last cycle (collect and forecast)");
    let runs = Counter::<u64>::default();
    registry.register("energy_scheduled_runs", "Scheduled cycles run (every region once)", runs.clone());
    let next = Gauge::<f64, AtomicU64>::default();
    registry.register("energy_next_run_timestamp_seconds", "Unix time of the next scheduled cycle", next.clone());

    let (regions, done, next_run) = state.snapshot();
    runs.inc_by(done);
    if let Some(at) = next_run {
        next.set(at.timestamp() as f64);
    }
    let now = Utc::now();
    for region in &regions {
        let labels = region_label(&region.region);
        let c = &region.counters;
        collections.get_or_create(&labels).inc_by(c.collections);
        failures.get_or_create(&labels).inc_by(c.collection_failures);
        rows.get_or_create(&labels).inc_by(c.rows);
        retries.get_or_create(&labels).inc_by(c.retries);
        issued.get_or_create(&labels).inc_by(c.forecasts);
        forecast_failures.get_or_create(&labels).inc_by(c.forecast_failures);
        stale.get_or_create(&labels).set(if region.stale_reason.is_some() { 1.0 } else { 0.0 });
        if let Some(at) = region.last_success {
            last_success.get_or_create(&labels).set(at.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(latest) = &region.latest {
            age.get_or_create(&labels).set((now - latest.issued_at).num_milliseconds() as f64 / 1000.0);
        }
        if let Some(seconds) = region.last_cycle_s {
            cycle.get_or_create(&labels).set(seconds);
        }
        if let Some(all) = region.accuracy.iter().find(|a| a.lead_h == 0) {
            scored.get_or_create(&labels).set(all.hours as f64);
            let by = |forecaster: &str| {
                let mut labels = labels.clone();
                labels.push(("forecaster".to_string(), forecaster.to_string()));
                labels
            };
            mape.get_or_create(&by("model")).set(all.model_mape_percent);
            mape.get_or_create(&by("seasonal_naive")).set(all.naive_mape_percent);
            if let Some(operator) = all.operator_mape_percent {
                mape.get_or_create(&by("operator")).set(operator);
            }
        }
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// `GET /metrics`.
pub(super) async fn render(Shared(state): Shared<Arc<State>>) -> Result<Response, ApiError> {
    let body = text(&state).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}
