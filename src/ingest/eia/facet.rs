//! `--region all`: every respondent of a route, from the API's facet endpoint
//! (`{base}/v2/electricity/rto/{route}/facet/respondent/`), cached in the store's catalog with
//! its fetch time ([`crate::ingest::store::FacetRecord`]) and asked again once the cache is
//! older than the configured age.
//!
//! A respondent that appears is collected from then on; one that vanishes from the list is no
//! longer asked for, and what the store holds of it stays.
//!
//! The answer: `{"response":{"totalFacets":"81","facets":[{"id":"AEC","name":"PowerSouth …"},
//! …]},"request":{…},"apiVersion":"2.1.13"}` (`totalFacets` a string or a number), or one of the
//! API's error bodies.
use super::response::checked_response;
use super::{EiaSource, Route};
use crate::ingest::IngestError;
use crate::ingest::http::{HttpClient, Reply, Request, Secret};
use crate::ingest::store::{FacetRecord, Store};
use crate::time::DateRange;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

/// The region name that means every respondent.
pub const ALL_REGIONS: &str = "all";

#[derive(Deserialize)]
struct FacetBody {
    response: FacetResponse,
}

#[derive(Deserialize)]
struct FacetResponse {
    #[serde(default)]
    facets: Vec<FacetValue>,
}

#[derive(Deserialize)]
struct FacetValue {
    id: String,
}

/// The URL of a route's respondent facet, without the key.
pub fn facet_url(base: &reqwest::Url, route: Route) -> reqwest::Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}/v2/electricity/rto/{}/facet/{}/", route.name(), route.region_facet()));
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The respondent codes of a facet reply, sorted, upper-cased, without duplicates.
pub fn read_facet(reply: &Reply) -> Result<Vec<String>, IngestError> {
    checked_response(reply)?;
    let body: FacetBody = serde_json::from_slice(&reply.body).map_err(|e| {
        reply.format_error(&format!("expected a facet list ({{\"response\":{{\"facets\":[…]}}}}): {e}"))
    })?;
    let mut codes: Vec<String> = body
        .response
        .facets
        .into_iter()
        .map(|facet| facet.id.trim().to_ascii_uppercase())
        .filter(|code| !code.is_empty() && code.len() <= 16 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .collect();
    codes.sort();
    codes.dedup();
    if codes.is_empty() {
        return Err(reply.format_error("the facet list names no respondent"));
    }
    Ok(codes)
}

/// Every respondent of `route`: the store's cached list when it is younger than `max_age`,
/// else asked of the API and cached (under the store's lock, taken for that write only: the
/// caller must not hold it). Returns the list and whether it was asked.
pub async fn respondents(
    store: &Store,
    client: &HttpClient,
    base_url: &str,
    key: &Secret,
    route: Route,
    now: DateTime<Utc>,
    max_age: TimeDelta,
) -> Result<(Vec<String>, bool), IngestError> {
    let name = facet_name(route);
    if let Some(record) = store.facets()?.get(&name)
        && now - record.fetched_at < max_age
        && now >= record.fetched_at
    {
        return Ok((record.values.clone(), false));
    }
    let base = EiaSource::parse_base(base_url)?;
    let url = facet_url(&base, route);
    // a facet is not a range of hours; the request names `now` for its logs
    let hour = crate::time::floor_hour(now);
    let range = DateRange { start: hour, end: hour };
    let request = Request::get("eia", range, url).with_secret("api_key", key.clone());
    let values = client.fetch(&request, read_facet).await?.value;
    let _lock = store.write_lock()?;
    let previous = store.facets()?.remove(&name).map(|r| r.values).unwrap_or_default();
    let added: Vec<&String> = values.iter().filter(|v| !previous.contains(v)).collect();
    let vanished: Vec<&String> = previous.iter().filter(|v| !values.contains(v)).collect();
    if !previous.is_empty() && (!added.is_empty() || !vanished.is_empty()) {
        tracing::info!(
            route = route.name(),
            ?added,
            ?vanished,
            "the list of respondents changed (vanished ones keep their data)"
        );
    }
    store.record_facet(&name, FacetRecord { fetched_at: now, values: values.clone() })?;
    Ok((values, true))
}

/// The catalog's name of a route's respondent facet: `region-data/respondent`.
pub fn facet_name(route: Route) -> String {
    format!("{}/{}", route.name(), route.region_facet())
}
