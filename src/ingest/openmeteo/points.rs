//! Where a region's weather is read: a built-in table of population centres with their weights,
//! which `[[weather.points.CODE]]` tables of `energy.toml` extend or replace, and the weighted
//! mean that turns the points' values into the region's.
//!
//! Weights are populations in thousands: US Census Bureau, 2020 Census (decennial count of
//! 1 April 2020) of the **metropolitan statistical area** named, or of the metropolitan
//! division, county or city where the name says so, rounded to thousands. A balancing
//! authority serves only part of some of these areas (SRP serves much of Phoenix, LADWP the
//! City of Los Angeles, SMUD Sacramento, public utilities much of the BPA area); the points are
//! where its load's weather is, not a map of its territory. Only the ratios matter.
use crate::config::WeatherPoint;
use std::collections::BTreeMap;

/// A built-in point: name, latitude, longitude (WGS84, city centre), population in thousands.
type Centre = (&'static str, f64, f64, f64);

const ERCO: &[Centre] = &[
    ("Dallas-Fort Worth", 32.78, -96.80, 7637.0),
    ("Houston", 29.76, -95.37, 7122.0),
    ("San Antonio", 29.42, -98.49, 2558.0),
    ("Austin", 30.27, -97.74, 2283.0),
    ("McAllen", 26.20, -98.23, 871.0),
    ("Killeen-Temple", 31.12, -97.73, 475.0),
    ("Corpus Christi", 27.80, -97.40, 422.0),
    ("Midland", 32.00, -102.08, 175.0),
];

const CISO: &[Centre] = &[
    ("Los Angeles", 34.05, -118.24, 13201.0),
    ("San Francisco-Oakland", 37.77, -122.42, 4749.0),
    ("Riverside-San Bernardino", 33.95, -117.40, 4600.0),
    ("San Diego", 32.72, -117.16, 3299.0),
    ("Sacramento", 38.58, -121.49, 2397.0),
    ("San Jose", 37.34, -121.89, 2000.0),
    ("Fresno", 36.74, -119.79, 1009.0),
    ("Bakersfield (Kern County)", 35.37, -119.02, 909.0),
];

const PJM: &[Centre] = &[
    ("Chicago", 41.88, -87.63, 9619.0),
    ("Washington", 38.91, -77.04, 6385.0),
    ("Philadelphia", 39.95, -75.17, 6245.0),
    ("Baltimore", 39.29, -76.61, 2845.0),
    ("Pittsburgh", 40.44, -80.00, 2371.0),
    ("Cincinnati", 39.10, -84.51, 2257.0),
    ("Newark (metropolitan division)", 40.74, -74.17, 2168.0),
    ("Columbus", 39.96, -83.00, 2139.0),
    ("Cleveland", 41.50, -81.69, 2088.0),
    ("Virginia Beach-Norfolk", 36.85, -76.29, 1800.0),
    ("Richmond", 37.54, -77.44, 1314.0),
    ("Dayton", 39.76, -84.19, 814.0),
];

const MISO: &[Centre] = &[
    ("Detroit", 42.33, -83.05, 4392.0),
    ("Minneapolis-St. Paul", 44.98, -93.27, 3690.0),
    ("St. Louis", 38.63, -90.20, 2820.0),
    ("Indianapolis", 39.77, -86.16, 2111.0),
    ("Milwaukee", 43.04, -87.91, 1575.0),
    ("New Orleans", 29.95, -90.07, 1272.0),
    ("Grand Rapids", 42.96, -85.67, 1088.0),
    ("Baton Rouge", 30.45, -91.19, 871.0),
    ("Little Rock", 34.75, -92.29, 748.0),
    ("Des Moines", 41.59, -93.62, 709.0),
    ("Madison", 43.07, -89.40, 681.0),
    ("Jackson", 32.30, -90.18, 592.0),
];

const NYIS: &[Centre] = &[
    ("New York City (city)", 40.71, -74.01, 8804.0),
    ("Long Island (Nassau-Suffolk division)", 40.80, -73.20, 2922.0),
    ("Buffalo", 42.89, -78.88, 1167.0),
    ("Rochester", 43.16, -77.61, 1090.0),
    ("Westchester (county)", 41.03, -73.76, 1004.0),
    ("Albany", 42.65, -73.76, 899.0),
    ("Syracuse", 43.05, -76.15, 662.0),
];

const ISNE: &[Centre] = &[
    ("Boston", 42.36, -71.06, 4942.0),
    ("Providence", 41.82, -71.41, 1677.0),
    ("Hartford", 41.76, -72.68, 1214.0),
    ("Worcester", 42.26, -71.80, 979.0),
    ("Bridgeport-Stamford", 41.18, -73.19, 957.0),
    ("New Haven", 41.31, -72.92, 865.0),
    ("Springfield", 42.10, -72.59, 699.0),
    ("Portland, Maine", 43.66, -70.26, 552.0),
    ("Manchester-Nashua", 42.99, -71.46, 423.0),
];

const SWPP: &[Centre] = &[
    ("Kansas City", 39.10, -94.58, 2192.0),
    ("Oklahoma City", 35.47, -97.52, 1426.0),
    ("Tulsa", 36.15, -95.99, 1015.0),
    ("Omaha", 41.26, -95.94, 968.0),
    ("Wichita", 37.69, -97.34, 648.0),
    ("Shreveport", 32.53, -93.75, 394.0),
    ("Lincoln", 40.81, -96.70, 340.0),
    ("Lubbock", 33.58, -101.86, 321.0),
    ("Sioux Falls", 43.55, -96.73, 277.0),
    ("Amarillo", 35.22, -101.83, 269.0),
    ("Fargo", 46.88, -96.79, 250.0),
];

const BPAT: &[Centre] = &[
    ("Seattle", 47.61, -122.33, 4019.0),
    ("Portland, Oregon", 45.52, -122.68, 2513.0),
    ("Spokane", 47.66, -117.43, 586.0),
    ("Eugene", 44.05, -123.09, 383.0),
    ("Kennewick-Richland", 46.21, -119.14, 304.0),
];

const FPL: &[Centre] = &[
    ("Miami-Fort Lauderdale", 25.76, -80.19, 6138.0),
    ("North Port-Sarasota", 27.34, -82.53, 834.0),
    ("Cape Coral-Fort Myers", 26.64, -81.87, 761.0),
    ("Deltona-Daytona Beach", 29.21, -81.02, 669.0),
    ("Pensacola", 30.42, -87.22, 510.0),
    ("Port St. Lucie", 27.27, -80.35, 488.0),
    ("Naples", 26.14, -81.79, 376.0),
];

const SOCO: &[Centre] = &[
    ("Atlanta", 33.75, -84.39, 6090.0),
    ("Birmingham", 33.52, -86.80, 1115.0),
    ("Augusta", 33.47, -81.97, 611.0),
    ("Mobile", 30.69, -88.04, 430.0),
    ("Savannah", 32.08, -81.09, 405.0),
    ("Montgomery", 32.38, -86.30, 386.0),
    ("Columbus, Georgia", 32.46, -84.99, 328.0),
];

const TVA: &[Centre] = &[
    ("Nashville", 36.16, -86.78, 1990.0),
    ("Memphis", 35.15, -90.05, 1338.0),
    ("Knoxville", 35.96, -83.92, 880.0),
    ("Chattanooga", 35.05, -85.31, 563.0),
    ("Huntsville", 34.73, -86.59, 492.0),
    ("Kingsport-Bristol", 36.55, -82.56, 308.0),
];

const DUK: &[Centre] = &[
    ("Charlotte", 35.23, -80.84, 2660.0),
    ("Greenville, South Carolina", 34.85, -82.40, 928.0),
    ("Greensboro-High Point", 36.07, -79.79, 777.0),
    ("Winston-Salem", 36.10, -80.24, 676.0),
    ("Durham-Chapel Hill", 35.99, -78.90, 650.0),
    ("Spartanburg", 34.95, -81.93, 355.0),
];

const PACE: &[Centre] = &[
    ("Salt Lake City", 40.76, -111.89, 1258.0),
    ("Ogden", 41.22, -111.97, 695.0),
    ("Provo-Orem", 40.23, -111.66, 671.0),
    ("Idaho Falls", 43.49, -112.03, 160.0),
    ("Casper", 42.87, -106.31, 80.0),
];

const AZPS: &[Centre] = &[
    ("Phoenix", 33.45, -112.07, 4846.0),
    ("Prescott", 34.54, -112.47, 236.0),
    ("Yuma", 32.69, -114.63, 204.0),
    ("Flagstaff", 35.20, -111.65, 145.0),
];

/// The regions of the built-in table.
pub const BUILT_IN: &[(&str, &[Centre])] = &[
    ("ERCO", ERCO),
    ("CISO", CISO),
    ("PJM", PJM),
    ("MISO", MISO),
    ("NYIS", NYIS),
    ("ISNE", ISNE),
    ("SWPP", SWPP),
    ("BPAT", BPAT),
    ("FPL", FPL),
    ("SOCO", SOCO),
    ("TVA", TVA),
    ("DUK", DUK),
    ("PACE", PACE),
    ("AZPS", AZPS),
];

/// The points of `region`: `[weather.points.REGION]` of the config where given, else the
/// built-in table's; `None` for a region neither knows.
pub fn points_of(region: &str, configured: &BTreeMap<String, Vec<WeatherPoint>>) -> Option<Vec<WeatherPoint>> {
    if let Some(points) = configured.get(region) {
        return Some(points.clone());
    }
    let (_, centres) = BUILT_IN.iter().find(|(code, _)| *code == region)?;
    Some(
        centres
            .iter()
            .map(|&(name, lat, lon, weight)| WeatherPoint { name: name.to_string(), lat, lon, weight })
            .collect(),
    )
}

/// What is wrong with a region's points, if anything: none at all, a latitude outside −90…90,
/// a longitude outside −180…180, or a weight that is not a positive number.
pub fn check_points(region: &str, points: &[WeatherPoint]) -> Result<(), String> {
    if points.is_empty() {
        return Err(format!("region {region} has no points (give name, lat, lon and weight for each)"));
    }
    for point in points {
        let name = &point.name;
        if name.trim().is_empty() {
            return Err("a point has an empty name".into());
        }
        if !(point.lat.is_finite() && (-90.0..=90.0).contains(&point.lat)) {
            return Err(format!("point `{name}`: lat {} is outside -90 to 90", point.lat));
        }
        if !(point.lon.is_finite() && (-180.0..=180.0).contains(&point.lon)) {
            return Err(format!("point `{name}`: lon {} is outside -180 to 180", point.lon));
        }
        if !(point.weight.is_finite() && point.weight > 0.0) {
            return Err(format!("point `{name}`: weight {} must be a positive number", point.weight));
        }
    }
    Ok(())
}

/// The weighted mean of one hour's values at a region's points. A point whose value is null
/// is left out and the others' weights renormalised; every point null gives null.
pub fn weighted_mean(values: impl IntoIterator<Item = (Option<f64>, f64)>) -> Option<f64> {
    let (mut sum, mut weights) = (0.0, 0.0);
    for (value, weight) in values {
        if let Some(value) = value.filter(|v| v.is_finite()) {
            sum += weight * value;
            weights += weight;
        }
    }
    (weights > 0.0).then(|| sum / weights)
}

/// A region code with no points, as an error message naming the config key to add.
pub fn unknown_region(region: &str) -> String {
    let known: Vec<&str> = BUILT_IN.iter().map(|(code, _)| *code).collect();
    format!(
        "no weather points for region `{region}`: the built-in table has {}; add the region's population \
         centres to energy.toml as `[weather.points.{region}]` entries, one table each, e.g. \
         `[[weather.points.{region}]]` name = \"City\", lat = 40.0, lon = -75.0, weight = 1000.0",
        known.join(", ")
    )
}
