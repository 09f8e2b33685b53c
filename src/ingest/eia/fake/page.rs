//! What the fake EIA API answers: a request's path and query in, the status and JSON body the
//! real API would send out ([`answer`]). [`page`] is the one page generator of the program; it
//! serves the four routes the source asks (region-data, fuel-type-data, interchange-data,
//! region-sub-ba-data) with their rows' real members, and [`answer`] also serves each route's
//! facet lists (`…/{route}/facet/{facet}/`, what `--region all` asks).
use crate::ingest::KIND_DEMAND;
use crate::ingest::eia::{INTERCHANGE_SEPARATOR, KIND_INTERCHANGE, PAGE_ROWS, Route, SUB_REGION_SEPARATOR};
use crate::rng::SplitMix64;
use crate::time::{HOUR_US, format_hour, parse_hour};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The region-data types and their names.
pub const TYPE_NAMES: [(&str, &str); 4] =
    [("D", "Demand"), ("DF", "Day-ahead demand forecast"), ("NG", "Net generation"), ("TI", "Total interchange")];

/// The fuel-type codes (Form EIA-930 energy sources) and their names.
pub const FUEL_NAMES: [(&str, &str); 14] = [
    ("BAT", "Battery storage"),
    ("COL", "Coal"),
    ("GEO", "Geothermal"),
    ("NG", "Natural Gas"),
    ("NUC", "Nuclear"),
    ("OIL", "Petroleum"),
    ("OTH", "Other"),
    ("PS", "Pumped storage"),
    ("SNB", "Solar with integrated battery storage"),
    ("SUN", "Solar"),
    ("UES", "Unknown energy storage"),
    ("UNK", "Unknown"),
    ("WAT", "Hydro"),
    ("WND", "Wind"),
];

/// Respondents served when a request names none: real balancing authority codes, with the
/// names the API gives them.
pub const RESPONDENTS: [(&str, &str); 10] = [
    ("CISO", "California Independent System Operator"),
    ("ERCO", "Electric Reliability Council of Texas, Inc."),
    ("PJM", "PJM Interconnection, LLC"),
    ("MISO", "Midcontinent Independent System Operator, Inc."),
    ("NYIS", "New York Independent System Operator"),
    ("ISNE", "ISO New England"),
    ("SWPP", "Southwest Power Pool"),
    ("BPAT", "Bonneville Power Administration"),
    ("FPL", "Florida Power & Light Co."),
    ("TVA", "Tennessee Valley Authority"),
];

/// Sub-regions served by region-sub-ba-data: parent, sub-region and its name (PGAE's as a real
/// body gives it, the others after EIA-930's list of sub-regions).
pub const SUB_REGIONS: [(&str, &str, &str); 12] = [
    ("CISO", "PGAE", "Pacific Gas and Electric"),
    ("CISO", "SCE", "Southern California Edison"),
    ("CISO", "SDGE", "San Diego Gas and Electric"),
    ("CISO", "VEA", "Valley Electric Association"),
    ("ERCO", "COAS", "Coast"),
    ("ERCO", "EAST", "East"),
    ("ERCO", "FWES", "Far West"),
    ("ERCO", "NCEN", "North Central"),
    ("ERCO", "NRTH", "North"),
    ("ERCO", "SCEN", "South Central"),
    ("ERCO", "SOUT", "South"),
    ("ERCO", "WEST", "West"),
];

/// Every route the fake serves.
const ROUTES: [Route; 4] = [Route::RegionData, Route::FuelTypeData, Route::Interchange, Route::SubBa];

const INCOMPLETE_RETURN: &str = "The API can only return 5000 rows in JSON format.  Please consider constraining \
     your request with facet, start, or end, or using offset to paginate results.";
const OVER_RATE_LIMIT: &str = "You have exceeded your rate limit. Try again later or contact us at \
     https://api.data.gov/contact/ for assistance";
const API_KEY_MISSING: &str =
    "No api_key was supplied.  Please register for one at https://www.eia.gov/opendata/register.php";

/// How a page writes its figures; the default is the current API's shape (2.1: `total` and
/// `value` as strings, no nulls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageStyle {
    /// `total` and `value` as JSON numbers, as the 2.0 API wrote them.
    pub numeric: bool,
    /// Hours `h` (since 1970) with `h % null_every == 0` have a null value (0: none).
    pub null_every: i64,
}

/// One data request as the fake reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct PageQuery {
    pub route: Route,
    /// Echoed back in `request.params`, as the real API does.
    pub api_key: String,
    /// Values of the route's region facet (respondents, sending BAs, parents), sorted, without
    /// duplicates.
    pub respondents: Vec<String>,
    /// Values of the route's second facet (types, fuel types, receiving BAs, sub-regions),
    /// sorted, known ones only.
    pub kinds: Vec<String>,
    /// The first and the last period, both included, epoch µs.
    pub start: i64,
    pub end: i64,
    /// Whether the request asks for `data[0]=value` (rows carry no value otherwise).
    pub with_value: bool,
    pub offset: u64,
    /// Rows asked for, at most [`PAGE_ROWS`].
    pub length: u64,
}

impl PageQuery {
    /// Rows of the whole request: one per period and pair of facet values ([`Self::pairs`]).
    pub fn total(&self) -> u64 {
        let hours = if self.end < self.start { 0 } else { ((self.end - self.start) / HOUR_US + 1) as u64 };
        hours * self.pairs().len() as u64
    }

    /// The (region facet, second facet) pairs that have rows, in the API's sort order: every
    /// respondent × kind; every pair of two different BAs for interchange; the known
    /// sub-regions of the asked parents.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::with_capacity(self.respondents.len() * self.kinds.len());
        for first in &self.respondents {
            for second in &self.kinds {
                let held = match self.route {
                    Route::RegionData | Route::FuelTypeData => true,
                    Route::Interchange => first != second,
                    Route::SubBa => SUB_REGIONS.iter().any(|(parent, sub, _)| parent == first && sub == second),
                };
                if held {
                    out.push((first.as_str(), second.as_str()));
                }
            }
        }
        out
    }

    /// Read a request's path and query, or say what the API would answer instead: 404 for
    /// another path, 403 `API_KEY_MISSING` without `api_key`, 400 without `frequency=hourly`
    /// or with an unreadable `start`, `end`, `offset` or `length`. Missing facets mean every
    /// known respondent ([`RESPONDENTS`]) or kind.
    pub fn read(path: &str, query: &str) -> Result<Self, (u16, String)> {
        let bad = |message: String| (400, json!({ "error": message, "code": 400 }).to_string());
        let route = ROUTES
            .into_iter()
            .find(|route| path.trim_end_matches('/') == route.data_path().trim_end_matches('/'))
            .ok_or_else(not_found)?;
        let params = params_of(query);
        let one = |name: &str| params.get(name).and_then(|v| v.first()).map(String::as_str);
        let api_key = api_key(&params)?;
        match one("frequency") {
            Some("hourly") => {}
            Some(other) => {
                return Err(bad(format!(
                    "Invalid frequency '{other}' provided. The only valid frequencies for this route are 'hourly' and 'local-hourly'."
                )));
            }
            None => return Err(bad("Missing frequency.".into())),
        }
        let hour = |name: &str| one(name).and_then(|text| parse_hour(text.trim()));
        let (Some(start), Some(end)) = (hour("start"), hour("end")) else {
            return Err(bad(format!(
                "Invalid start '{}' or end '{}' provided: use YYYY-MM-DDTHH.",
                one("start").unwrap_or(""),
                one("end").unwrap_or("")
            )));
        };
        let number = |name: &str, default: u64| match one(name) {
            None => Ok(default),
            Some(text) => text.parse::<u64>().map_err(|_| bad(format!("Invalid {name} '{text}' provided."))),
        };
        let sorted = |name: &str, defaults: &[&str]| {
            let mut values: Vec<String> = match params.get(name) {
                Some(values) => values.clone(),
                None => defaults.iter().map(|s| s.to_string()).collect(),
            };
            values.sort();
            values.dedup();
            values
        };
        let codes = |values: Vec<(&'static str, String)>| values.into_iter().map(|(code, _)| code).collect::<Vec<_>>();
        let known = codes(facet_values(route, route.facet()).unwrap_or_default());
        let kinds = sorted(&format!("facets[{}][]", route.facet()), &known)
            .into_iter()
            .filter(|kind| route == Route::Interchange || known.contains(&kind.as_str()))
            .collect();
        let defaults = codes(facet_values(route, route.region_facet()).unwrap_or_default());
        let respondents = sorted(&format!("facets[{}][]", route.region_facet()), &defaults);
        Ok(Self {
            route,
            api_key: api_key.to_string(),
            respondents,
            kinds,
            start,
            end,
            with_value: params.get("data[0]").is_some_and(|v| v.iter().any(|d| d == "value")),
            offset: number("offset", 0)?,
            length: number("length", PAGE_ROWS)?.min(PAGE_ROWS),
        })
    }
}

/// The API's answer to a data request's `path` and `query`: `Ok((body, rows))` with the page
/// [`page`] writes, or `Err((status, error body))` as [`PageQuery::read`] says.
pub fn answer(path: &str, query: &str, style: PageStyle) -> Result<(String, u64), (u16, String)> {
    if path.contains("/facet/") {
        return facet_answer(path, query, style).map(|body| (body, 0));
    }
    PageQuery::read(path, query).map(|query| page(&query, style))
}

/// The API's answer to `{base}/v2/electricity/rto/{route}/facet/{facet}/`: every value of the
/// facet with its name, `{"response":{"totalFacets":"10","facets":[{"id":"CISO","name":"…"},
/// …]},"request":{"command":…,"params":{"api_key":…}},"apiVersion":"2.1.13"}`; 404 for a route
/// or facet the fake does not serve, 403 without a key.
fn facet_answer(path: &str, query: &str, style: PageStyle) -> Result<String, (u16, String)> {
    let (route, facet) = path
        .trim_end_matches('/')
        .strip_prefix("/v2/electricity/rto/")
        .and_then(|rest| rest.split_once("/facet/"))
        .ok_or_else(not_found)?;
    let route = ROUTES.into_iter().find(|r| r.name() == route).ok_or_else(not_found)?;
    let values = facet_values(route, facet).ok_or_else(not_found)?;
    let params = params_of(query);
    let api_key = api_key(&params)?;
    let facets: Vec<Value> = values.iter().map(|(id, name)| json!({ "id": id, "name": name })).collect();
    let total = if style.numeric { json!(facets.len()) } else { json!(facets.len().to_string()) };
    let body = json!({
        "response": { "totalFacets": total, "facets": facets },
        "request": { "command": path, "params": { "api_key": api_key } },
        "apiVersion": "2.1.13",
        "ExcelAddInVersion": "2.1.0",
    });
    Ok(body.to_string())
}

/// The values of `facet` of `route` with their names (`None`: the route has no such facet).
fn facet_values(route: Route, facet: &str) -> Option<Vec<(&'static str, String)>> {
    let named = |list: &[(&'static str, &'static str)]| list.iter().map(|(c, n)| (*c, n.to_string())).collect();
    let mut values: Vec<(&'static str, String)> = match (route, facet) {
        (Route::RegionData | Route::FuelTypeData, "respondent") | (Route::Interchange, "fromba" | "toba") => {
            named(&RESPONDENTS)
        }
        (Route::RegionData, "type") => named(&TYPE_NAMES),
        (Route::FuelTypeData, "fueltype") => named(&FUEL_NAMES),
        (Route::SubBa, "parent") => {
            let mut parents: Vec<&'static str> = SUB_REGIONS.iter().map(|(parent, _, _)| *parent).collect();
            parents.dedup();
            parents.into_iter().map(|code| (code, respondent_name(code))).collect()
        }
        (Route::SubBa, "subba") => SUB_REGIONS.iter().map(|(_, sub, name)| (*sub, name.to_string())).collect(),
        _ => return None,
    };
    values.sort();
    Some(values)
}

fn not_found() -> (u16, String) {
    (404, json!({ "error": "Not found.", "code": 404 }).to_string())
}

/// A query's parameters, each name with its values in order.
fn params_of(query: &str) -> BTreeMap<String, Vec<String>> {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in url_pairs(query) {
        params.entry(key).or_default().push(value);
    }
    params
}

/// The request's key, or the API's 403 `API_KEY_MISSING`.
fn api_key(params: &BTreeMap<String, Vec<String>>) -> Result<&str, (u16, String)> {
    params.get("api_key").and_then(|v| v.first()).map(String::as_str).filter(|k| !k.is_empty()).ok_or_else(|| {
        let body = json!({ "error": { "code": "API_KEY_MISSING", "message": API_KEY_MISSING } });
        (403, body.to_string())
    })
}

/// The 429 body of a request beyond the rate limits.
pub fn over_rate_limit() -> String {
    json!({ "error": { "code": "OVER_RATE_LIMIT", "message": OVER_RATE_LIMIT } }).to_string()
}

/// One row of `response.data`, with the members of its route in 2.1.13 order.
#[derive(Serialize)]
#[serde(untagged)]
enum Row<'a> {
    /// region-data (`type`) and fuel-type-data (`fueltype`).
    Respondent {
        period: &'a str,
        respondent: &'a str,
        #[serde(rename = "respondent-name")]
        respondent_name: &'a str,
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        kind: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fueltype: Option<&'a str>,
        #[serde(rename = "type-name")]
        type_name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Figure>,
        #[serde(rename = "value-units")]
        value_units: &'static str,
    },
    Interchange {
        period: &'a str,
        fromba: &'a str,
        #[serde(rename = "fromba-name")]
        fromba_name: &'a str,
        toba: &'a str,
        #[serde(rename = "toba-name")]
        toba_name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Figure>,
        #[serde(rename = "value-units")]
        value_units: &'static str,
    },
    SubBa {
        period: &'a str,
        subba: &'a str,
        #[serde(rename = "subba-name")]
        subba_name: &'a str,
        parent: &'a str,
        #[serde(rename = "parent-name")]
        parent_name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Figure>,
        #[serde(rename = "value-units")]
        value_units: &'static str,
    },
}

/// One pair of facet values of a page, named, with the series [`value_at`] gives its values.
struct Pair<'a> {
    first: &'a str,
    first_name: String,
    second: &'a str,
    second_name: String,
    /// [`value_at`]'s respondent and kind: (`CISO`, `D`), (`AEC-MISO`, `ID`), (`CISO.PGAE`, `D`).
    series: (String, &'a str),
}

/// A row's value as the page's [`PageStyle`] writes it.
enum Figure {
    Null,
    Text(i64),
    Number(i64),
}

impl Serialize for Figure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Figure::Null => serializer.serialize_none(),
            Figure::Text(figure) => serializer.collect_str(figure),
            Figure::Number(figure) => serializer.serialize_i64(*figure),
        }
    }
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<Value>,
    total: Value,
    #[serde(rename = "dateFormat")]
    date_format: &'static str,
    frequency: &'static str,
    data: Vec<Row<'a>>,
    description: &'static str,
}

#[derive(Serialize)]
struct Body<'a> {
    response: ResponseBody<'a>,
    request: Value,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    #[serde(rename = "ExcelAddInVersion")]
    excel_add_in_version: &'static str,
}

/// The one EIA page generator: the page of `query` in the API 2.1.13 shape, and its rows.
///
/// Rows run over every period from `start` to `end` (both included), then respondent, then kind,
/// as the source's sort asks; the page holds rows `offset..offset + length` of them. `total` is
/// the rows of the whole request; the "incomplete return" warning comes when it passes
/// [`PAGE_ROWS`]; `request.params` echoes the parameters, the key included, as the real API
/// does. Values are [`value_at`] of the row's period, respondent and kind, written as `style` says.
pub fn page(query: &PageQuery, style: PageStyle) -> (String, u64) {
    let total = query.total();
    let (first, last) = (query.offset.min(total), query.offset.saturating_add(query.length).min(total));
    let pairs: Vec<Pair> = query.pairs().into_iter().map(|(a, b)| Pair::new(query.route, a, b)).collect();
    let per_hour = pairs.len().max(1) as u64;
    let hours = if first < last { first / per_hour..(last - 1) / per_hour + 1 } else { 0..0 };
    let periods: Vec<(i64, String)> = hours
        .clone()
        .map(|hour| {
            let t = query.start + hour as i64 * HOUR_US;
            (t, format_hour(t))
        })
        .collect();
    let mut data = Vec::with_capacity((last - first) as usize);
    for i in first..last {
        let (t, period) = &periods[(i / per_hour - hours.start) as usize];
        let pair = &pairs[(i % per_hour) as usize];
        let value = query.with_value.then(|| {
            let figure = value_at(*t, &pair.series.0, pair.series.1) as i64;
            if style.null_every > 0 && (t / HOUR_US) % style.null_every == 0 {
                Figure::Null
            } else if style.numeric {
                Figure::Number(figure)
            } else {
                Figure::Text(figure)
            }
        });
        let value_units = "megawatthours";
        data.push(match query.route {
            Route::RegionData | Route::FuelTypeData => {
                let region = query.route == Route::RegionData;
                Row::Respondent {
                    period,
                    respondent: pair.first,
                    respondent_name: &pair.first_name,
                    kind: region.then_some(pair.second),
                    fueltype: (!region).then_some(pair.second),
                    type_name: &pair.second_name,
                    value,
                    value_units,
                }
            }
            Route::Interchange => Row::Interchange {
                period,
                fromba: pair.first,
                fromba_name: &pair.first_name,
                toba: pair.second,
                toba_name: &pair.second_name,
                value,
                value_units,
            },
            Route::SubBa => Row::SubBa {
                period,
                subba: pair.second,
                subba_name: &pair.second_name,
                parent: pair.first,
                parent_name: &pair.first_name,
                value,
                value_units,
            },
        });
    }
    let warnings = if total > PAGE_ROWS {
        vec![json!({ "warning": "incomplete return", "description": INCOMPLETE_RETURN })]
    } else {
        Vec::new()
    };
    let description = match query.route {
        Route::RegionData => {
            "Hourly demand, day-ahead demand forecast, net generation, and interchange by balancing authority.  \n    Source: Form EIA-930\n    Product: Hourly Electric Grid Monitor"
        }
        Route::FuelTypeData => {
            "Hourly net generation by balancing authority and energy source.  \n    Source: Form EIA-930\n    Product: Hourly Electric Grid Monitor"
        }
        // as the real body says it
        Route::Interchange => {
            "Daily interchange between neighboring balancing authorities.  \n    Source: Form EIA-930\n    Product: Hourly Electric Grid Monitor"
        }
        Route::SubBa => {
            "Hourly demand by balancing authority subregion.  \n    Source: Form EIA-930\n    Product: Hourly Electric Grid Monitor"
        }
    };
    let mut facets = serde_json::Map::new();
    facets.insert(query.route.region_facet().into(), json!(query.respondents));
    facets.insert(query.route.facet().into(), json!(query.kinds));
    let params = json!({
        "api_key": query.api_key,
        "frequency": "hourly",
        "data": if query.with_value { vec!["value"] } else { Vec::new() },
        "facets": facets,
        "start": format_hour(query.start),
        "end": format_hour(query.end),
        "sort": [{ "column": "period", "direction": "asc" }],
        "offset": query.offset.to_string(),
        "length": query.length.to_string(),
    });
    let body = Body {
        response: ResponseBody {
            warnings,
            total: if style.numeric { json!(total) } else { json!(total.to_string()) },
            date_format: "YYYY-MM-DD\"T\"HH24",
            frequency: "hourly",
            data,
            description,
        },
        request: json!({ "command": query.route.data_path(), "params": params }),
        api_version: "2.1.13",
        excel_add_in_version: "2.1.0",
    };
    // invariant: strings, numbers and JSON values always serialize
    (serde_json::to_string(&body).expect("a page serializes"), last - first)
}

impl<'a> Pair<'a> {
    fn new(route: Route, first: &'a str, second: &'a str) -> Self {
        let named = |list: &[(&str, &str)], code: &str| {
            list.iter().find(|(c, _)| *c == code).map_or_else(|| code.to_string(), |(_, name)| name.to_string())
        };
        let (second_name, series) = match route {
            Route::RegionData => (named(&TYPE_NAMES, second), (first.to_string(), second)),
            Route::FuelTypeData => (named(&FUEL_NAMES, second), (first.to_string(), second)),
            Route::Interchange => {
                (respondent_name(second), (format!("{first}{INTERCHANGE_SEPARATOR}{second}"), KIND_INTERCHANGE))
            }
            Route::SubBa => {
                let name = SUB_REGIONS.iter().find(|(_, sub, _)| *sub == second).map_or(second, |(_, _, name)| name);
                (name.to_string(), (format!("{first}{SUB_REGION_SEPARATOR}{second}"), KIND_DEMAND))
            }
        };
        Self { first, first_name: respondent_name(first), second, second_name, series }
    }
}

fn respondent_name(code: &str) -> String {
    RESPONDENTS
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("Respondent {code}"), |(_, name)| name.to_string())
}

/// Decoded `key=value` pairs of a query string.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://localhost/?{query}"))
        .map(|url| url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// FNV-1a of a code: each respondent's own level, each fuel's own share.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The fake API's value (MWh, a whole number) of a respondent's `kind` for the hour ending at
/// `t_us`: a level of the respondent's own with daily, weekly and yearly cycles and noise; the
/// forecast, generation and interchange follow the demand, a fuel type is a share of it. An
/// interchange (`AEC-MISO`, `ID`) and a sub-region (`CISO.PGAE`, `D`) are series of their own.
pub fn value_at(t_us: i64, respondent: &str, kind: &str) -> f64 {
    use std::f64::consts::TAU;
    let hour = t_us.div_euclid(HOUR_US);
    let seed = fnv(respondent);
    let noise =
        |salt: u64| SplitMix64::new(seed ^ (hour as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt).next_f64() - 0.5;
    let level = 2_000.0 + (seed % 58_000) as f64;
    let h = hour as f64;
    let daily = (TAU * (h - 7.0) / 24.0).sin();
    let weekly = (TAU * h / 168.0).cos();
    let yearly = (TAU * h / 8766.0).cos();
    let demand = level * (1.0 + 0.15 * daily + 0.04 * weekly + 0.1 * yearly) * (1.0 + 0.02 * noise(1));
    let figure = match kind {
        "D" => demand,
        "DF" => demand * (1.0 + 0.06 * noise(2)),
        "NG" => demand * (1.02 + 0.1 * noise(3)),
        "TI" => demand * (0.02 + 0.1 * noise(3)),
        // an interchange flows either way
        "ID" => demand * 0.2 * noise(5),
        fuel => demand * (0.05 + 0.3 * (fnv(fuel) % 1000) as f64 / 1000.0) * (1.0 + 0.1 * noise(4)),
    };
    // + 0.0: no negative zero
    figure.round() + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode() {
        assert_eq!(
            url_pairs("a%5B0%5D=x+y&b=%2F&c&d=%zz"),
            [("a[0]", "x y"), ("b", "/"), ("c", ""), ("d", "%zz")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn fuel_pages_carry_fueltype_and_numbers_and_nulls_as_asked() {
        let query = "api_key=K&frequency=hourly&data%5B0%5D=value&facets%5Brespondent%5D%5B%5D=ERCO\
                     &facets%5Bfueltype%5D%5B%5D=SUN&facets%5Bfueltype%5D%5B%5D=XYZ&start=2024-01-01T00&end=2024-01-01T04";
        let style = PageStyle { numeric: true, null_every: 2 };
        let (body, rows) = answer(&Route::FuelTypeData.data_path(), query, style).unwrap();
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((rows, &body["response"]["total"]), (5, &json!(5)), "the unknown fuel type has no rows");
        let data = body["response"]["data"].as_array().unwrap();
        assert_eq!(
            (&data[0]["fueltype"], &data[0]["type-name"], data[0].get("type")),
            (&json!("SUN"), &json!("Solar"), None)
        );
        let t1 = parse_hour("2024-01-01T01").unwrap();
        assert_eq!(data[1]["value"], json!(value_at(t1, "ERCO", "SUN") as i64));
        assert!(data[0]["value"].is_null() && data[2]["value"].is_null(), "{body}");
        assert!(body["response"].get("warnings").is_none());
        assert_eq!(body["request"]["params"]["api_key"], "K");
        assert_eq!(answer("/v2/x/data/", query, style).unwrap_err().0, 404);
    }
}
