//! `energy collect`
use super::reporters::BarReporter;
use super::{BadInput, Context, check_span, runtime};
use crate::cli::{SelectArgs, SourceArgs};
use crate::config::SyntheticConfig;
use crate::ingest::caiso;
use crate::ingest::eia::{self, MISSING_KEY};
use crate::ingest::file::{self, FileColumns, FileOptions};
use crate::ingest::openmeteo::{self, OpenmeteoKind, OpenmeteoSource};
use crate::ingest::store::RegionRecord;
use crate::ingest::synthetic::{KIND_LOAD, KIND_TEMP, NoiseFloor};
use crate::ingest::{
    CaisoKind, CaisoSource, CollectionResult, EiaKind, EiaSource, FileSource, HttpClient, Orchestrator, RateLimits,
    RetryPolicy, Secret, Source, SourceKind, SyntheticSource,
};
use crate::region::{self, RegionSettings, ZoneOrigin};
use crate::time::DateRange;
use anyhow::{Context as _, Result, bail};
use chrono_tz::Tz;
use serde::Serialize;

pub(crate) fn run(context: &Context, select: &SelectArgs, sources: &SourceArgs) -> Result<()> {
    let (result, floors) = collect(context, select, sources)?;
    report(context, &result, &floors)?;
    if !result.succeeded() {
        bail!(
            "{} of {} chunks failed; run the same command again to finish them",
            result.failed_chunks,
            result.chunks.len()
        );
    }
    Ok(())
}

/// Collect what the flags select (used by `collect` and `train --collect`).
pub(crate) fn collect(
    context: &Context,
    select: &SelectArgs,
    sources: &SourceArgs,
) -> Result<(CollectionResult, Vec<NoiseFloor>)> {
    let concurrency = sources.concurrency(&context.config)?;
    match select.source() {
        SourceKind::Synthetic => {
            refuse_file_flags(sources, select.source())?;
            let source = synthetic_source(context, select, sources)?;
            let range = select.range(context.now)?;
            let result = collect_with(context, &source, range, concurrency)?;
            Ok((result, source.noise_floors()))
        }
        SourceKind::File => {
            let path = sources.path.as_ref().ok_or_else(|| BadInput("--source file needs --path FILE".into()))?;
            let regions = select.regions_or(Some(&file::default_region(path)))?;
            if regions.len() != 1 {
                return Err(BadInput("--source file takes one --region".into()).into());
            }
            let kind = match select.kinds.as_slice() {
                [] => crate::ingest::KIND_DEMAND.to_string(),
                [kind] => kind.clone(),
                _ => return Err(BadInput("--source file takes one --kind (the value column's)".into()).into()),
            };
            let columns = FileColumns {
                timestamp: sources.time_column.clone(),
                value: sources.value_column.clone(),
                region: regions[0].clone(),
                kind,
            };
            let (options, flag_zone) = file_options(&regions[0], sources)?;
            let source = FileSource::open_with(path, &columns, &options).context("cannot import the file")?;
            if let Some(zone) = flag_zone {
                record_zone(context, &regions[0], zone)?;
            }
            let range = if select.start.is_some() || select.days.is_some() {
                select.range(context.now)?
            } else {
                let range = source.range().ok_or_else(|| BadInput(format!("`{}` holds no rows", path.display())))?;
                check_span(range).map_err(|e| BadInput(format!("`{}`: {e}", path.display())))?
            };
            Ok((collect_with(context, &source, range, concurrency)?, Vec::new()))
        }
        SourceKind::Eia => {
            refuse_file_flags(sources, select.source())?;
            let source = eia_source(context, select, sources)?;
            let range = select.range(context.now)?;
            Ok((collect_with(context, &source, range, concurrency)?, Vec::new()))
        }
        SourceKind::Caiso => {
            refuse_file_flags(sources, select.source())?;
            let source = caiso_source(context, select, sources)?;
            let range = select.range(context.now)?;
            if concurrency > 1 {
                tracing::debug!(concurrency, "CAISO OASIS takes one request at a time: concurrency 1");
            }
            let result = collect_with(context, &source, range, 1)?;
            derive_net_load(context, &source, range)?;
            Ok((result, Vec::new()))
        }
        SourceKind::Openmeteo => {
            refuse_file_flags(sources, select.source())?;
            Ok((collect_openmeteo(context, select, sources)?, Vec::new()))
        }
    }
}

/// How to read a file for `region`, and the zone `--timezone` named (if it did): timestamps
/// without an offset are read in `--timezone`, else the region's configured zone or the one
/// the store recorded for it, else UTC (the built-in zones of US regions are not used: their
/// files are UTC unless they say otherwise).
fn file_options(region: &str, sources: &SourceArgs) -> Result<(FileOptions, Option<Tz>)> {
    let flag_zone = match &sources.timezone {
        Some(text) => Some(region::parse_zone(text).map_err(|e| BadInput(format!("--timezone: {e}")))?),
        None => None,
    };
    let zone = flag_zone.or_else(|| match region::known_zone(region) {
        Some((zone, ZoneOrigin::Config | ZoneOrigin::Store)) => Some(zone),
        _ => None,
    });
    let min_coverage = sources.min_coverage.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&min_coverage) {
        return Err(BadInput(format!("--min-coverage must be between 0 and 1 (got {min_coverage})")).into());
    }
    let column_kinds = sources
        .column_kind
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, kind)) if !name.trim().is_empty() && !kind.trim().is_empty() => {
                Ok((name.trim().to_string(), kind.trim().to_string()))
            }
            _ => Err(BadInput(format!("--column-kind `{pair}`: write NAME=KIND (e.g. temperature_c=TEMP)"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = FileOptions {
        zone,
        stamps: sources.stamps.unwrap_or_default(),
        resample: sources.resample.unwrap_or_default(),
        min_coverage,
        column_kinds,
    };
    Ok((options, flag_zone))
}

/// Make `zone` (from `--timezone`) the zone of `region` for later commands, recorded in the
/// store, when the region has no zone of its own; a configured or built-in zone stays the
/// region's (the flag then only says how to read the file).
fn record_zone(context: &Context, region: &str, zone: Tz) -> Result<()> {
    match region::known_zone(region) {
        Some((known, ZoneOrigin::Config | ZoneOrigin::BuiltIn)) => {
            if known != zone {
                tracing::info!(
                    region,
                    "the file's local times are read in {}; the region's own zone stays {} for its calendar",
                    zone.name(),
                    known.name()
                );
            }
            return Ok(());
        }
        Some((known, ZoneOrigin::Store)) if known == zone => return Ok(()),
        Some((known, ZoneOrigin::Store)) => tracing::warn!(
            region,
            "region {region} was imported before with --timezone {}; its zone is now {} (rows imported before \
             keep the times they were read with: import them again if that was a mistake)",
            known.name(),
            zone.name()
        ),
        None => {}
    }
    let _lock = context.store.write_lock().context("cannot lock the store")?;
    context
        .store
        .record_region(region, RegionRecord { timezone: zone.name().to_string() })
        .context("cannot record the region's time zone")?;
    region::configure(region, RegionSettings { zone: Some(zone), holidays: None }, ZoneOrigin::Store);
    Ok(())
}

/// The file-only flags are refused with another source rather than ignored.
fn refuse_file_flags(sources: &SourceArgs, source: SourceKind) -> Result<(), BadInput> {
    let given = [
        ("--timezone", sources.timezone.is_some()),
        ("--stamps", sources.stamps.is_some()),
        ("--resample", sources.resample.is_some()),
        ("--min-coverage", sources.min_coverage.is_some()),
        ("--column-kind", !sources.column_kind.is_empty()),
    ];
    match given.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(BadInput(format!("{flag} is for --source file, not {source}"))),
        None => Ok(()),
    }
}

/// Open-Meteo: the observed and as-issued kinds over the range the flags name, the live
/// forecast kinds (`_FCST`) over today 00:00 UTC to `[openmeteo] forecast_days` ahead; one
/// request at a time (the free API queues or refuses parallel ones), one limiter for both.
fn collect_openmeteo(context: &Context, select: &SelectArgs, sources: &SourceArgs) -> Result<CollectionResult> {
    let kinds = select
        .kinds
        .iter()
        .map(|kind| OpenmeteoKind::parse(kind))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BadInput(e.to_string()))?;
    let (forecast, mut other): (Vec<OpenmeteoKind>, Vec<OpenmeteoKind>) = kinds.iter().partition(|k| k.is_forecast());
    if kinds.is_empty() {
        other.push(OpenmeteoKind::TEMP);
    }
    if other.is_empty() && (select.start.is_some() || select.days.is_some()) {
        return Err(BadInput(format!(
            "{} the live forecast: it takes no --start/--end/--days (it is collected for today and the next \
             `[openmeteo] forecast_days` days, now {})",
            forecast.iter().map(|k| k.series_kind()).collect::<Vec<_>>().join(", "),
            context.config.openmeteo.forecast_days
        ))
        .into());
    }
    let config = &context.config.openmeteo;
    let limits = RateLimits::weighted(config.calls_per_minute, config.calls_per_hour, config.calls_per_day);
    let client = HttpClient::new(openmeteo::retry_policy(&RetryPolicy::from(&context.config.retry)), limits)?;
    let settings = openmeteo::Settings {
        url: sources.openmeteo_url.clone().or_else(|| config.url.clone()),
        key: sources.openmeteo_api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()).map(Secret::new),
        model: config.model.clone(),
        today: context.now.date_naive(),
    };
    let regions = select.regions()?;
    let points = &context.config.weather.points;
    let build =
        |kinds: &[OpenmeteoKind]| OpenmeteoSource::new(&regions, kinds, points, settings.clone(), client.clone());
    // every source is built (and so every region checked) before anything is collected
    let observed = if other.is_empty() { None } else { Some((build(&other)?, select.range(context.now)?)) };
    let live = if forecast.is_empty() {
        None
    } else {
        let source = build(&forecast)?;
        let source = match &observed {
            Some((first, _)) => source.sharing_stop_with(first),
            None => source,
        };
        Some((source, forecast_range(context)?))
    };
    let mut result: Option<CollectionResult> = None;
    for (source, range) in observed.iter().chain(live.iter()) {
        let collected = collect_with(context, source, *range, 1)?;
        result = Some(match result {
            Some(before) => before.merge(collected),
            None => collected,
        });
    }
    result.ok_or_else(|| anyhow::anyhow!("nothing to collect"))
}

/// The hours of the live forecast: today 00:00 UTC to `[openmeteo] forecast_days` days later.
fn forecast_range(context: &Context) -> Result<DateRange> {
    let today = context.now.date_naive().and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let days = i64::from(context.config.openmeteo.forecast_days);
    Ok(DateRange::new(today, today + chrono::TimeDelta::days(days)).map_err(BadInput)?)
}

/// The CAISO source the flags select: `--region` TAC areas (default `CA ISO-TAC`), `--kind`
/// (default `ACTUAL`; `ACTUAL`, `DAM`, `2DA`, `7DA`, `RTPD`, `RTD`), the base URL from
/// `--caiso-url` or `[caiso] url`, one request per `[caiso] min_interval_s` and retries from
/// `[retry]` with a backoff of at least 5 s.
pub(crate) fn caiso_source(context: &Context, select: &SelectArgs, sources: &SourceArgs) -> Result<CaisoSource> {
    let regions = select.regions()?;
    let kinds = select
        .kinds
        .iter()
        .map(|kind| CaisoKind::parse(kind))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BadInput(e.to_string()))?;
    let url = sources.caiso_url.clone().unwrap_or_else(|| context.config.caiso.url.clone());
    let limits = RateLimits::every(std::time::Duration::from_secs_f64(context.config.caiso.min_interval_s));
    let client = HttpClient::new(caiso::retry_policy(&RetryPolicy::from(&context.config.retry)), limits)?;
    Ok(CaisoSource::new(&url, &regions, &kinds, client)?)
}

/// After a CAISO collection: the net load (load − wind − solar of the trading hubs) of every
/// area whose load run was collected, where the store holds that run's wind and solar.
fn derive_net_load(context: &Context, source: &CaisoSource, range: DateRange) -> Result<()> {
    let _lock = context.store.write_lock().context("cannot lock the store")?;
    for area in source.areas().iter().filter(|a| !caiso::net_load::HUBS.contains(&a.as_str())) {
        for &kind in source.kinds() {
            if let Some(stats) = caiso::net_load::derive(&context.store, area, kind, range)
                .with_context(|| format!("cannot derive the net load of {area}"))?
            {
                tracing::info!(
                    area = area.as_str(),
                    run = kind.series_kind(),
                    rows = stats.rows,
                    "derived the net load"
                );
            }
        }
    }
    Ok(())
}

/// The EIA source the flags select: `--region` respondents, `FROM-TO` pairs, `PARENT.SUB`
/// sub-regions or `all` (required), `--kind` (default `D`; `D`, `DF`, `NG`, `TI`, `ID` or
/// `fuel:CODE`), the key from `--eia-api-key` or `EIA_API_KEY`, the base
/// URL from `--eia-url` or `[eia] url`, rate limits from `[eia]` and retries from `[retry]`.
pub(crate) fn eia_source(context: &Context, select: &SelectArgs, sources: &SourceArgs) -> Result<EiaSource> {
    let regions = select.regions()?;
    let kinds = select
        .kinds
        .iter()
        .map(|kind| EiaKind::parse(kind))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BadInput(e.to_string()))?;
    let key = match sources.eia_api_key.as_deref().map(str::trim) {
        Some(key) if !key.is_empty() => Secret::new(key),
        _ => return Err(BadInput(MISSING_KEY.into()).into()),
    };
    let url = sources.eia_url.clone().unwrap_or_else(|| context.config.eia.url.clone());
    let limits =
        RateLimits::per_second_and_hour(context.config.eia.requests_per_second, context.config.eia.requests_per_hour);
    let client = HttpClient::new(RetryPolicy::from(&context.config.retry), limits)?;
    let regions = if regions.iter().any(|r| r.eq_ignore_ascii_case(eia::ALL_REGIONS)) {
        every_respondent(context, &regions, &kinds, &url, &key, &client)?
    } else {
        regions
    };
    Ok(EiaSource::new(&url, key, &regions, &kinds, client)?)
}

/// `--region all`: the respondents the API lists for the routes of `kinds` (cached in the
/// store), with the other regions named beside `all`.
fn every_respondent(
    context: &Context,
    regions: &[String],
    kinds: &[EiaKind],
    url: &str,
    key: &Secret,
    client: &HttpClient,
) -> Result<Vec<String>> {
    let mut routes = Vec::new();
    for kind in kinds.iter().chain(kinds.is_empty().then_some(&EiaKind::Region(crate::ingest::KIND_DEMAND.into()))) {
        if *kind == EiaKind::Interchange {
            return Err(BadInput(
                "--region all lists respondents, not interchange pairs: name each pair FROM-TO with --kind ID".into(),
            )
            .into());
        }
        if !routes.contains(&kind.route()) {
            routes.push(kind.route());
        }
    }
    EiaSource::parse_base(url).map_err(|e| BadInput(e.to_string()))?;
    let max_age = chrono::TimeDelta::hours(i64::from(context.config.eia.facet_max_age_hours));
    let runtime = runtime()?;
    let mut out: Vec<String> = regions.iter().filter(|r| !r.eq_ignore_ascii_case(eia::ALL_REGIONS)).cloned().collect();
    for route in routes {
        let (respondents, asked) = runtime
            .block_on(eia::respondents(&context.store, client, url, key, route, context.now, max_age))
            .with_context(|| format!("cannot list the respondents of {}", route.name()))?;
        tracing::info!(route = route.name(), respondents = respondents.len(), asked, "--region all");
        for respondent in respondents {
            if !out.contains(&respondent) {
                out.push(respondent);
            }
        }
    }
    Ok(out)
}

pub(crate) fn synthetic_source(
    context: &Context,
    select: &SelectArgs,
    sources: &SourceArgs,
) -> Result<SyntheticSource> {
    let regions = select.regions()?;
    for kind in &select.kinds {
        if kind != KIND_LOAD && kind != KIND_TEMP {
            return Err(
                BadInput(format!("the synthetic source has kinds {KIND_LOAD} and {KIND_TEMP}, not `{kind}`")).into()
            );
        }
    }
    let mut config: SyntheticConfig = context.config.synthetic.clone();
    if let Some(seed) = sources.seed {
        config.seed = seed;
    }
    for (flag, value, slot) in [
        ("--missing-rate", sources.missing_rate, &mut config.missing_rate),
        ("--spike-rate", sources.spike_rate, &mut config.spike_rate),
    ] {
        if let Some(value) = value {
            if !(0.0..=1.0).contains(&value) {
                return Err(BadInput(format!("{flag} must be between 0 and 1 (got {value})")).into());
            }
            *slot = value;
        }
    }
    config.dst_gap |= sources.dst_gap;
    Ok(SyntheticSource::new(&regions, config))
}

fn collect_with<S: Source>(
    context: &Context,
    source: &S,
    range: DateRange,
    concurrency: usize,
) -> Result<CollectionResult> {
    // names and symbolic links are checked before the store is touched (taking the lock writes)
    context.store.check_series(&source.series())?;
    // a killed writer's temporary files go first; the orchestrator then holds the lock only
    // while it writes (another collection may run beside this one)
    context.store.tidy().context("cannot lock the store")?;
    let reporter = BarReporter::new(context.quiet || context.json, "rows");
    let orchestrator = Orchestrator {
        store: &context.store,
        concurrency,
        chunk_retries: context.config.collect.chunk_retries,
        reporter: &reporter,
        now: context.now,
        stop: context.stop.clone(),
    };
    runtime()?.block_on(orchestrator.collect(source, range)).context("collection failed")
}

#[derive(Serialize)]
struct CollectReport<'a> {
    store: String,
    #[serde(flatten)]
    result: &'a CollectionResult,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    noise_floor: &'a [NoiseFloor],
}

fn report(context: &Context, result: &CollectionResult, floors: &[NoiseFloor]) -> Result<()> {
    if context.json {
        let report = CollectReport { store: context.store.root().display().to_string(), result, noise_floor: floors };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "collected {} {} into `{}`: {} rows, {} chunks fetched, {} already stored, {} failed, {} files written, {:.2} s ({:.0} rows/s)",
        result.source,
        result.range,
        context.store.root().display(),
        result.rows,
        result.fetched_chunks,
        result.skipped_chunks,
        result.failed_chunks,
        result.files_written,
        result.duration_s,
        result.rows_per_s,
    );
    for chunk in result.chunks.iter().filter(|c| c.error.is_some()) {
        println!("  failed {}: {}", chunk.range, chunk.error.as_deref().unwrap_or(""));
    }
    for floor in floors {
        println!(
            "  noise floor {}: mean load {:.0} MW, best achievable MAE {:.0} MW ({:.2} %) next-24h, {:.0} MW ({:.2} %) day-ahead",
            floor.region,
            floor.mean_load_mw,
            floor.mae_next_24h_mw,
            floor.mape_next_24h_percent,
            floor.mae_day_ahead_mw,
            floor.mape_day_ahead_percent
        );
    }
    Ok(())
}
