//! Live accuracy: archived forecasts scored against what happened, by lead hour, beside the
//! operator's own forecast and the seasonal naive on the same hours.
use super::archive::IssuedForecast;
use crate::ingest::SeriesRows;
use crate::time::HOUR_US;
use serde::Serialize;
use std::collections::HashMap;

/// The scores of one lead hour (or of all leads, `lead_h` 0), MAPE in percent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadAccuracy {
    /// Hours after the forecast's last data (0: every lead together).
    pub lead_h: i64,
    /// Hours scored: those with an observation (not zero), a seasonal naive and, where the
    /// operator's forecast is stored, the operator's value.
    pub hours: usize,
    pub model_mape_percent: f64,
    /// `None` where the store holds no operator forecast of the region.
    pub operator_mape_percent: Option<f64>,
    pub naive_mape_percent: f64,
}

fn by_time(rows: &SeriesRows) -> HashMap<i64, f64> {
    rows.timestamps.iter().zip(&rows.values).filter_map(|(t, v)| v.filter(|v| v.is_finite()).map(|v| (*t, v))).collect()
}

/// The seasonal naive of `target` issued with data up to `origin` (µs): the value 24 hours
/// earlier if known at issue time, else 48, 72, … hours earlier (the rule of
/// [`crate::eval::seasonal_naive`], by timestamp).
fn seasonal_naive(observed: &HashMap<i64, f64>, origin: i64, target: i64) -> Option<f64> {
    let mut back = 24 * HOUR_US;
    while target - back > origin {
        back += 24 * HOUR_US;
    }
    observed.get(&(target - back)).copied()
}

/// Score `forecasts` against `actual` (the observed load) by lead hour, with the operator's
/// forecast where given; the first entry (`lead_h` 0) is every lead together. Leads with no
/// scored hour are left out.
pub fn live_accuracy(
    forecasts: &[IssuedForecast],
    actual: &SeriesRows,
    operator: Option<&SeriesRows>,
) -> Vec<LeadAccuracy> {
    let observed = by_time(actual);
    let operator = operator.map(by_time);
    // lead → (hours, model, operator, naive) sums of absolute percentage errors
    let mut sums: std::collections::BTreeMap<i64, (usize, f64, f64, f64)> = Default::default();
    for forecast in forecasts {
        let origin = forecast.data_up_to.timestamp_micros();
        for hour in &forecast.hours {
            let t = hour.timestamp.timestamp_micros();
            let Some(y) = observed.get(&t).copied().filter(|y| *y != 0.0) else { continue };
            let Some(naive) = seasonal_naive(&observed, origin, t) else { continue };
            let op = match &operator {
                Some(values) => match values.get(&t) {
                    Some(v) => *v,
                    None => continue,
                },
                None => f64::NAN,
            };
            let ape = |f: f64| (f - y).abs() / y.abs();
            for lead in [0, hour.lead_h] {
                let entry = sums.entry(lead).or_default();
                entry.0 += 1;
                entry.1 += ape(hour.p50);
                entry.2 += ape(op);
                entry.3 += ape(naive);
            }
        }
    }
    sums.into_iter()
        .map(|(lead_h, (hours, model, op, naive))| {
            let percent = |sum: f64| 100.0 * sum / hours as f64;
            LeadAccuracy {
                lead_h,
                hours,
                model_mape_percent: percent(model),
                operator_mape_percent: operator.is_some().then(|| percent(op)),
                naive_mape_percent: percent(naive),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::SeriesId;
    use crate::serve::archive::ForecastHour;
    use crate::time::from_us;

    fn rows(kind: &str, start_h: i64, values: &[f64]) -> SeriesRows {
        SeriesRows {
            id: SeriesId::new("synthetic", "SYN1", kind),
            timestamps: (0..values.len() as i64).map(|i| (start_h + i) * HOUR_US).collect(),
            values: values.iter().map(|v| Some(*v)).collect(),
        }
    }

    /// A forecast issued with data up to hour `origin_h` of p50 values for the following hours.
    fn issued(origin_h: i64, p50: &[f64]) -> IssuedForecast {
        IssuedForecast {
            region: "SYN1".into(),
            issued_at: from_us(origin_h * HOUR_US + 60_000_000),
            data_up_to: from_us(origin_h * HOUR_US),
            model_id: "m".into(),
            hours: p50
                .iter()
                .enumerate()
                .map(|(i, v)| ForecastHour {
                    timestamp: from_us((origin_h + 1 + i as i64) * HOUR_US),
                    lead_h: 1 + i as i64,
                    p10: v - 1.0,
                    p50: *v,
                    p90: v + 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn matches_a_hand_computation_on_a_tiny_series() {
        // 27 hours: 100 at hours 0..24, then 110, 120, 130 at hours 24, 25, 26
        let mut values = vec![100.0; 24];
        values.extend([110.0, 120.0, 130.0]);
        let actual = rows("D", 0, &values);
        // issued at hour 23 for hours 24, 25; at hour 24 for hours 25, 26 (hour 26's actual 130)
        let forecasts = [issued(23, &[121.0, 108.0]), issued(24, &[126.0, 117.0])];
        let operator = rows("DF", 24, &[99.0, 132.0, 143.0]);
        let scores = live_accuracy(&forecasts, &actual, Some(&operator));
        // lead 1: hour 24 (121 vs 110: 10 %), hour 25 (126 vs 120: 5 %) → 7.5 %
        //   naive: hour 0 for hour 24 (100 vs 110: 1/11), hour 1 for 25 (100 vs 120: 1/6)
        //   operator: 99 vs 110 (1/10), 132 vs 120 (1/10)
        // lead 2: hour 25 (108 vs 120: 10 %), hour 26 (117 vs 130: 10 %) → 10 %
        //   naive: 1/6 and 100 vs 130 (3/13); operator: 1/10 and 143 vs 130 (1/10)
        let lead1 = &scores[1];
        assert_eq!((lead1.lead_h, lead1.hours), (1, 2));
        assert!((lead1.model_mape_percent - 7.5).abs() < 1e-9, "{lead1:?}");
        assert!((lead1.naive_mape_percent - 50.0 * (1.0 / 11.0 + 1.0 / 6.0)).abs() < 1e-9);
        assert!((lead1.operator_mape_percent.unwrap() - 10.0).abs() < 1e-9);
        let lead2 = &scores[2];
        assert_eq!((lead2.lead_h, lead2.hours), (2, 2));
        assert!((lead2.model_mape_percent - 10.0).abs() < 1e-9);
        assert!((lead2.naive_mape_percent - 50.0 * (1.0 / 6.0 + 3.0 / 13.0)).abs() < 1e-9);
        let all = &scores[0];
        assert_eq!((all.lead_h, all.hours), (0, 4));
        assert!((all.model_mape_percent - 8.75).abs() < 1e-9);
        // without the operator's series every hour still counts and its column is empty
        let without = live_accuracy(&forecasts, &actual, None);
        assert_eq!(without[0].operator_mape_percent, None);
        assert_eq!(without[0].hours, 4);
    }

    #[test]
    fn hours_not_yet_observed_are_not_scored() {
        let actual = rows("D", 0, &[100.0; 30]);
        assert!(live_accuracy(&[issued(29, &[1.0, 2.0])], &actual, None).is_empty());
    }

    #[test]
    fn the_naive_uses_only_what_was_known_at_issue_time() {
        let observed = by_time(&rows("D", 0, &(0..60).map(f64::from).collect::<Vec<_>>()));
        // issued at hour 30: hour 50 - 24 = 26 is known; hour 58 - 24 = 34 is not, 58 - 48 = 10 is
        assert_eq!(seasonal_naive(&observed, 30 * HOUR_US, 50 * HOUR_US), Some(26.0));
        assert_eq!(seasonal_naive(&observed, 30 * HOUR_US, 58 * HOUR_US), Some(10.0));
    }
}
