//! `energy forecast`: load a checkpoint, bring the store up to date when asked, forecast from
//! the latest data, print a table, optionally write CSV/JSON and a PNG plot.
use super::modeling::{self, ModelMeta};
use super::{BadInput, Context, collect, train_multi};
use crate::cli::{ForecastArgs, SelectArgs, SourceArgs};
use crate::config::SyntheticConfig;
use crate::eval;
use crate::features::{self, Protocol, Rows};
use crate::ingest::{Source, SourceKind, SyntheticSource};
use crate::model::transformer::Forecaster;
use crate::time::{DateRange, HOUR_US, from_us};
use anyhow::{Context as _, Result};
use chrono::Timelike;
use serde::Serialize;
use std::io::Write;

/// Days collected by `forecast --collect` when `--days` is not given.
pub const DEFAULT_COLLECT_DAYS: i64 = 14;

/// One forecast hour.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ForecastRow {
    pub timestamp_utc: String,
    pub local_time: String,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

#[derive(Serialize)]
struct ForecastReport<'a> {
    model_dir: String,
    series: String,
    protocol: Protocol,
    issued_with_data_up_to: String,
    /// For a region a multi-region model was not trained on: what that means.
    #[serde(skip_serializing_if = "Option::is_none")]
    zero_shot: Option<String>,
    rows: &'a [ForecastRow],
}

/// One issued forecast: what `forecast` prints and `serve` archives.
pub(crate) struct Issued {
    /// The last hour of data the forecast was issued with (µs, interval end).
    pub origin: i64,
    pub protocol: Protocol,
    pub rows: Vec<ForecastRow>,
    /// The forecast hours (µs) with their quantiles, in MW.
    pub targets: Vec<(i64, crate::eval::Quantiles)>,
    /// The week of observed load up to the origin (µs, MW), for plots.
    pub history: Vec<(i64, f64)>,
}

pub(crate) fn run(context: &Context, args: &ForecastArgs, sources: &SourceArgs) -> Result<()> {
    let (mut model, mut meta): (_, ModelMeta) = train_multi::load_model(context, &args.model_dir, &args.select)?;
    modeling::check_source(&args.select, &meta, &args.model_dir)?;
    modeling::check_region(&args.select, &meta, &args.model_dir)?;
    if args.collect {
        let days = args.select.days.unwrap_or(DEFAULT_COLLECT_DAYS);
        let result = collect_for_model(context, &meta, sources, days, Vec::new())?;
        if !result.succeeded() {
            let first = result.chunks.iter().find_map(|c| c.error.as_deref()).unwrap_or_default();
            anyhow::bail!(
                "{} of {} chunks failed to collect ({first}); run again",
                result.failed_chunks,
                result.chunks.len()
            );
        }
    }
    train_multi::fit_zero_shot(context, &mut meta, i64::MAX)?;
    let issued = issue(context, &meta, &mut model)?;
    let rows = &issued.rows;
    if let Some(path) = &args.out {
        write_out(path, rows)?;
    }
    if let Some(path) = &args.plot {
        crate::plot::forecast_png(path, &format!("{} forecast", meta.load), &issued.history, &issued.targets)?;
    }
    let report = ForecastReport {
        model_dir: args.model_dir.display().to_string(),
        series: meta.load.to_string(),
        protocol: issued.protocol,
        issued_with_data_up_to: modeling::format_time(issued.origin),
        zero_shot: train_multi::zero_shot_note(&meta),
        rows,
    };
    if context.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} forecast of {} from data up to {}",
        protocol_name(issued.protocol),
        report.series,
        report.issued_with_data_up_to
    );
    if let Some(note) = &report.zero_shot {
        println!("{note}");
    }
    println!("{:<18} {:<24} {:>10} {:>10} {:>10}", "timestamp (UTC)", "local time", "p10 MW", "p50 MW", "p90 MW");
    for r in rows {
        println!("{:<18} {:<24} {:>10.0} {:>10.0} {:>10.0}", r.timestamp_utc, r.local_time, r.p10, r.p50, r.p90);
    }
    Ok(())
}

/// Bring the store up to date for a model: its load source and region over the last `days`
/// (the synthetic source with the model's seed; `kinds`, empty: the source's default kinds),
/// then the Open-Meteo weather it uses ([`weather_to_collect`]): the observed kinds over the
/// same days, for the context, and their live forecasts (`{BASE}_FCST`) for the horizon, with
/// the same ledger, HTTP client and `--openmeteo-url` / `[openmeteo] url` as `collect`. One
/// summary of every collection.
pub(crate) fn collect_for_model(
    context: &Context,
    meta: &ModelMeta,
    sources: &SourceArgs,
    days: i64,
    kinds: Vec<String>,
) -> Result<crate::ingest::CollectionResult> {
    let select = |source, region: &str, kinds| SelectArgs {
        source: Some(source),
        regions: vec![region.to_string()],
        kinds,
        days: Some(days),
        start: None,
        end: None,
    };
    let mut sources = sources.clone();
    sources.seed = Some(meta.seed);
    let (mut result, _) = collect::collect(context, &select(meta.source, &meta.region, kinds), &sources)?;
    for (region, kinds) in weather_to_collect(meta) {
        let (weather, _) = collect::collect(context, &select(SourceKind::Openmeteo, &region, kinds), &sources)
            .with_context(|| format!("cannot collect the weather of {region} the model uses"))?;
        result = result.merge(weather);
    }
    Ok(result)
}

/// The Open-Meteo kinds a model needs to forecast now, by region: the observed kind of each
/// weather series it uses (`TEMP` for `TEMP` and every `TEMP_DN`) and its live forecast
/// (`TEMP_FCST`). Weather of other sources is not collected here.
pub(crate) fn weather_to_collect(meta: &ModelMeta) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for id in meta.exogenous.iter().filter(|id| id.source == SourceKind::Openmeteo.as_str()) {
        let base = crate::ingest::parse_issued_kind(&id.kind).map_or(id.kind.as_str(), |(base, _)| base);
        let at = match out.iter().position(|(region, _)| *region == id.region) {
            Some(at) => at,
            None => {
                out.push((id.region.clone(), Vec::new()));
                out.len() - 1
            }
        };
        for kind in [base.to_string(), format!("{base}_FCST")] {
            if !out[at].1.contains(&kind) {
                out[at].1.push(kind);
            }
        }
    }
    out
}

/// Forecast from the latest stored hour with a loaded model (the weather of the horizon from
/// the synthetic source or the stored live forecast where the model uses weather).
pub(crate) fn issue(context: &Context, meta: &ModelMeta, model: &mut Forecaster) -> Result<Issued> {
    let spec = meta.spec;
    for id in std::iter::once(&meta.load).chain(&meta.exogenous) {
        modeling::require_series(context, meta, id)?;
    }
    let stored = context.store.read(&meta.load, None).context("cannot read the store")?;
    let last =
        *stored.timestamps.last().ok_or_else(|| BadInput(format!("the store holds no rows of {}", meta.load)))?;
    // history for the context, the lags and the outlier test; future rows for the horizon
    let history_hours = (spec.positions() + 2 * 168) as i64;
    let future_hours = (spec.gap() + spec.horizon + 24) as i64;
    let first = last - history_hours * HOUR_US;
    let mut load = to_rows(&stored, first);
    load.timestamps.extend((1..=future_hours).map(|h| last + h * HOUR_US));
    load.values.extend((0..future_hours).map(|_| None));

    let mut exogenous = Vec::new();
    let needed = (spec.gap() + spec.horizon) as i64;
    for id in &meta.exogenous {
        let stored = context.store.read(id, None).with_context(|| format!("the model needs {id}"))?;
        let mut rows = to_rows(&stored, first);
        let column = id.kind.to_lowercase();
        if published_ahead(meta, id) {
            // an input the operator publishes ahead (`--input …:DF`): its own stored hours
            let end = last + future_hours * HOUR_US;
            let keep: Vec<usize> = (0..rows.timestamps.len()).filter(|&i| rows.timestamps[i] <= end).collect();
            rows = Rows {
                timestamps: keep.iter().map(|&i| rows.timestamps[i]).collect(),
                values: keep.iter().map(|&i| rows.values[i]).collect(),
            };
            let covered = (1..=needed).all(|h| {
                let t = last + h * HOUR_US;
                rows.timestamps.iter().position(|x| *x == t).is_some_and(|i| rows.values[i].is_some())
            });
            if !covered {
                return Err(BadInput(format!(
                    "the model takes {id} as an input known ahead, and the store does not hold it for the {needed} hours after {}: collect it (`energy collect --source {} --region {} --kind {}`) once it is published",
                    modeling::format_time(last),
                    id.source,
                    id.region,
                    id.kind
                ))
                .into());
            }
        } else {
            rows.timestamps.retain(|t| *t <= last);
            rows.values.truncate(rows.timestamps.len());
            // an observed input is known up to the origin only: the horizon needs none of it
            if !meta.feature_config.observed_inputs.contains(&column) {
                let future = future_exogenous(context, meta, id, last, future_hours, needed)?;
                rows.timestamps.extend(future.timestamps);
                rows.values.extend(future.values);
            }
        }
        exogenous.push((column, rows));
    }
    let table = features::from_rows(&meta.region, &meta.load.kind, &load, &exogenous, &meta.feature_config)
        .context("cannot build the features")?;
    let last_row = table.timestamps.iter().position(|t| *t == last).unwrap_or(0);
    let origin = match spec.protocol {
        Protocol::Next24h => last_row,
        Protocol::DayAhead => (0..=last_row)
            .rev()
            .find(|&row| from_us(table.timestamps[row]).with_timezone(&table.zone).hour() == 10)
            .ok_or_else(|| BadInput("no 10:00 local hour in the stored data".into()))?,
    };
    if origin + 1 < spec.context + 168 {
        return Err(BadInput(format!("the store holds too little history of {}: collect more days", meta.load)).into());
    }
    let mut windows = features::window_at(&table, &meta.scaler, &spec, origin)?;
    if let Some(block) = &meta.region_block {
        block.append(&mut windows);
    }
    modeling::check_features(meta, &windows)?;
    let mut forecasts = eval::predict(model, &windows, &meta.scaler, 1)?;
    eval::apply_calibration(&mut forecasts, meta.interval_calibration.as_ref());
    let targets: Vec<(i64, crate::eval::Quantiles)> =
        eval::target_rows(&spec, origin).zip(&forecasts[0]).map(|(row, q)| (table.timestamps[row], *q)).collect();
    let rows = targets
        .iter()
        .map(|(t, q)| {
            let t = from_us(*t);
            ForecastRow {
                timestamp_utc: t.format(crate::time::FORMAT_MINUTE).to_string(),
                local_time: t.with_timezone(&table.zone).format("%Y-%m-%d %H:%M %Z").to_string(),
                p10: q.p10,
                p50: q.p50,
                p90: q.p90,
            }
        })
        .collect();
    let history = (origin.saturating_sub(7 * 24)..=origin)
        .map(|row| (table.timestamps[row], f64::from(table.target[row])))
        .collect();
    Ok(Issued { origin: table.timestamps[origin], protocol: spec.protocol, rows, targets, history })
}

/// Is `id` an extra input known ahead (`--input` of a kind its source publishes ahead, such as
/// EIA `DF` or CAISO `NET_DAM`, or any `--known-input`), so that the horizon reads its own
/// stored values? Weather (the live forecast stands in for it) and observed inputs are not.
fn published_ahead(meta: &ModelMeta, id: &crate::ingest::SeriesId) -> bool {
    meta.feature_config.known_inputs.contains(&id.kind.to_lowercase())
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Next24h => "next-24h",
        Protocol::DayAhead => "day-ahead",
    }
}

fn to_rows(stored: &crate::ingest::SeriesRows, first: i64) -> Rows {
    let keep: Vec<usize> = (0..stored.len()).filter(|&i| stored.timestamps[i] > first).collect();
    Rows {
        timestamps: keep.iter().map(|&i| stored.timestamps[i]).collect(),
        values: keep.iter().map(|&i| stored.values[i]).collect(),
    }
}

/// Known-future values of an exogenous series for the hours after `last`. The synthetic
/// source provides its own temperature and its as-issued forecasts (whatever the load's
/// source: a synthetic load may use Open-Meteo weather and the other way round). Any other weather comes
/// from the stored live forecast of its base kind (`TEMP_FCST` for `TEMP` and every `TEMP_DN`:
/// a forecast issued now is the newest forecast issued by the origin), which must cover the
/// horizon.
fn future_exogenous(
    context: &Context,
    meta: &ModelMeta,
    id: &crate::ingest::SeriesId,
    last: i64,
    hours: i64,
    needed: i64,
) -> Result<Rows> {
    if id.source != SourceKind::Synthetic.as_str() {
        return live_forecast(context, id, last, hours, needed);
    }
    let source = SyntheticSource::new(
        std::slice::from_ref(&id.region),
        SyntheticConfig { seed: meta.seed, ..Default::default() },
    );
    let range = DateRange::new(from_us(last), from_us(last + hours * HOUR_US)).map_err(BadInput)?;
    let batch = futures::executor::block_on(source.fetch(range))?;
    let series = batch
        .series
        .into_iter()
        .find(|s| s.id.kind == id.kind)
        .ok_or_else(|| BadInput(format!("the synthetic source has no kind {}", id.kind)))?;
    Ok(Rows { timestamps: series.timestamps, values: series.values })
}

/// The stored live forecast (`{BASE}_FCST` of `id`'s source and region) for the `hours` after
/// `last`; an error naming what to collect when it does not cover the first `needed` of them.
fn live_forecast(context: &Context, id: &crate::ingest::SeriesId, last: i64, hours: i64, needed: i64) -> Result<Rows> {
    let base = crate::ingest::parse_issued_kind(&id.kind).map_or(id.kind.as_str(), |(base, _)| base);
    let live = crate::ingest::SeriesId::new(&id.source, &id.region, format!("{base}_FCST"));
    let missing = || {
        BadInput(format!(
            "the model needs the weather of the {needed} hours after {} ({id}); the store holds no live forecast {live} covering them: run `energy collect --source {} --region {} --kind {}`{} (or train with --weather none)",
            modeling::format_time(last),
            live.source,
            live.region,
            live.kind,
            if live.source == SourceKind::Openmeteo.as_str() { ", or forecast with --collect" } else { "" }
        ))
    };
    if !context.store.has_series(&live) {
        return Err(missing().into());
    }
    let stored = context.store.read(&live, None).with_context(|| format!("cannot read {live}"))?;
    let end = last + hours * HOUR_US;
    let (timestamps, values): (Vec<i64>, Vec<Option<f64>>) = stored
        .timestamps
        .iter()
        .zip(&stored.values)
        .filter(|(t, _)| **t > last && **t <= end)
        .map(|(t, v)| (*t, *v))
        .unzip();
    let covered = (1..=needed).all(|h| {
        let t = last + h * HOUR_US;
        timestamps.iter().position(|x| *x == t).is_some_and(|i| values[i].is_some())
    });
    if !covered {
        return Err(missing().into());
    }
    Ok(Rows { timestamps, values })
}

fn write_out(path: &std::path::Path, rows: &[ForecastRow]) -> Result<()> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mut text = Vec::new();
    match extension.as_str() {
        "json" => serde_json::to_writer_pretty(&mut text, rows)?,
        "csv" => {
            writeln!(text, "timestamp_utc,local_time,p10,p50,p90")?;
            for r in rows {
                writeln!(text, "{},{},{:.1},{:.1},{:.1}", r.timestamp_utc, r.local_time, r.p10, r.p50, r.p90)?;
            }
        }
        other => return Err(BadInput(format!("--out must end in .csv or .json, not `.{other}`")).into()),
    }
    std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))
}
