//! Net load: a TAC area's load less the wind and solar of CAISO's trading hubs, hour by hour,
//! for one run (`ACTUAL` − `WIND_ACTUAL` − `SOLAR_ACTUAL`, or `DAM` − `WIND_DAM` − `SOLAR_DAM`),
//! stored as the series `(caiso, AREA, NET_ACTUAL | NET_DAM)` so that `features`, `train` and
//! `forecast` take it as their load (`--kind NET_DAM`). An hour is derived only where the load
//! and every hub's wind and solar hold a value.
use super::CaisoKind;
use crate::ingest::store::{Store, WriteStats};
use crate::ingest::{IngestError, SeriesId, SeriesRows};
use crate::time::DateRange;
use std::collections::HashMap;

/// CAISO's trading hubs, whose wind and solar add up to the system's.
pub const HUBS: [&str; 3] = ["NP15", "SP15", "ZP26"];

/// The stored kind of the net load of a load run (`NET_ACTUAL`, `NET_DAM`), with the wind and
/// solar kinds it subtracts; `None` for runs without wind and solar.
pub fn net_kind(load: CaisoKind) -> Option<(String, CaisoKind, CaisoKind)> {
    match load {
        CaisoKind::Actual => Some(("NET_ACTUAL".into(), CaisoKind::WindActual, CaisoKind::SolarActual)),
        CaisoKind::Dam => Some(("NET_DAM".into(), CaisoKind::WindDam, CaisoKind::SolarDam)),
        _ => None,
    }
}

/// `load − Σ others` hour by hour, over the hours where all hold a value.
pub fn subtract(id: SeriesId, load: &SeriesRows, others: &[SeriesRows]) -> SeriesRows {
    let maps: Vec<HashMap<i64, f64>> = others
        .iter()
        .map(|rows| rows.timestamps.iter().zip(&rows.values).filter_map(|(t, v)| v.map(|v| (*t, v))).collect())
        .collect();
    let mut out = SeriesRows::new(id);
    for (t, v) in load.timestamps.iter().zip(&load.values) {
        let Some(mut value) = *v else { continue };
        let mut complete = true;
        for map in &maps {
            match map.get(t) {
                Some(x) => value -= x,
                None => complete = false,
            }
        }
        if complete {
            out.timestamps.push(*t);
            out.values.push(Some(value));
        }
    }
    out
}

/// Derive and store the net load of `area` for the `load` run over `range` from what the store
/// holds; `Ok(None)` when the load or a hub's wind or solar is not in the store. The caller
/// holds the lock.
pub fn derive(store: &Store, area: &str, load: CaisoKind, range: DateRange) -> Result<Option<WriteStats>, IngestError> {
    let Some((kind, wind, solar)) = net_kind(load) else { return Ok(None) };
    let load_id = SeriesId::new("caiso", area, load.series_kind());
    let mut parts = Vec::new();
    for hub in HUBS {
        for part in [wind, solar] {
            parts.push(SeriesId::new("caiso", hub, part.series_kind()));
        }
    }
    if !store.has_series(&load_id) || !parts.iter().all(|id| store.has_series(id)) {
        return Ok(None);
    }
    let load_rows = store.read(&load_id, Some(range))?;
    let others = parts.iter().map(|id| store.read(id, Some(range))).collect::<Result<Vec<_>, _>>()?;
    let net = subtract(SeriesId::new("caiso", area, kind), &load_rows, &others);
    store.write_range(&[net], range).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(kind: &str, values: &[Option<f64>]) -> SeriesRows {
        let mut out = SeriesRows::new(SeriesId::new("caiso", "X", kind));
        for (hour, v) in values.iter().enumerate() {
            out.timestamps.push(hour as i64 * crate::time::HOUR_US);
            out.values.push(*v);
        }
        out
    }

    #[test]
    fn net_load_is_load_less_every_part_where_all_hold_a_value() {
        let load = rows("DAM", &[Some(100.0), Some(100.0), None, Some(100.0)]);
        let wind = rows("WIND_DAM", &[Some(10.0), None, Some(10.0), Some(20.0)]);
        let solar = rows("SOLAR_DAM", &[Some(5.0), Some(5.0), Some(5.0), Some(0.0)]);
        let net = subtract(SeriesId::new("caiso", "X", "NET_DAM"), &load, &[wind, solar]);
        assert_eq!(net.timestamps, [0, 3 * crate::time::HOUR_US]);
        assert_eq!(net.values, [Some(85.0), Some(80.0)]);
        assert_eq!(net_kind(CaisoKind::Dam).unwrap().0, "NET_DAM");
        assert!(net_kind(CaisoKind::Rtd).is_none());
    }
}
