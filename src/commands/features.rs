//! `energy features`
use super::{BadInput, Context};
use crate::cli::FeaturesArgs;
use crate::features::{self, FLAG_NAMES, FeatureError, FeatureTable};
use crate::ingest::{KIND_TEMP, SeriesId};
use crate::time::format_minute;
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// What the command reports (also its `--json` document).
#[derive(Debug, Serialize)]
struct Summary {
    series: String,
    exogenous: Vec<String>,
    rows: usize,
    first: Option<String>,
    last: Option<String>,
    /// Rows carrying each flag.
    flags: BTreeMap<&'static str, usize>,
    /// Rows whose value could not be imputed.
    unimputed: usize,
    known_columns: Vec<String>,
    observed_columns: Vec<String>,
    columns: Vec<String>,
    seconds: f64,
    rows_per_second: f64,
    out: Option<String>,
}

pub(crate) fn run(context: &Context, args: &FeaturesArgs) -> Result<()> {
    let select = &args.select;
    let regions = select.regions()?;
    let [region] = regions.as_slice() else {
        return Err(BadInput(format!("`energy features` takes one --region (got {})", regions.len())).into());
    };
    let kind = match select.kinds.as_slice() {
        [] => select.source().require_load_kind()?.to_string(),
        [kind] => kind.clone(),
        _ => return Err(BadInput("`energy features` takes one --kind (the load series')".into()).into()),
    };
    if let Some(out) = &args.out
        && !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
    {
        return Err(BadInput(format!("--out must end in .parquet, not `{}`", out.display())).into());
    }
    let source = select.source().as_str();
    let load = SeriesId::new(source, region, kind);
    let collect_hint = || {
        format!(
            "no data for series {load} in the store `{}`; run `energy collect --source {source} --region {region}` first",
            context.store.root().display()
        )
    };
    if !context.store.has_series(&load) {
        return Err(BadInput(collect_hint()).into());
    }
    let temperature = SeriesId::new(source, region, KIND_TEMP);
    let mut exogenous: Vec<SeriesId> =
        if context.store.has_series(&temperature) { vec![temperature] } else { Vec::new() };
    let (inputs, config) = super::modeling::input_series(context, &load, &exogenous, &args.inputs)?;
    exogenous.extend(inputs);
    let range = if select.start.is_some() || select.end.is_some() || select.days.is_some() {
        Some(select.range(context.now)?)
    } else {
        None
    };

    let started = Instant::now();
    let table = match features::build(&context.store, &load, &exogenous, range, &config) {
        Ok(table) => table,
        Err(FeatureError::MissingSeries { .. }) => return Err(BadInput(collect_hint()).into()),
        Err(e @ FeatureError::Empty { .. }) => return Err(BadInput(e.to_string()).into()),
        Err(e) => return Err(e).with_context(|| format!("cannot build the features of {load}")),
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.out {
        table.write_parquet(path).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    let summary = summarize(&table, &load, &exogenous, seconds, args);
    if context.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

fn summarize(
    table: &FeatureTable,
    load: &SeriesId,
    exogenous: &[SeriesId],
    seconds: f64,
    args: &FeaturesArgs,
) -> Summary {
    let time = |t: Option<&i64>| t.map(|t| format_minute(*t));
    Summary {
        series: load.to_string(),
        exogenous: exogenous.iter().map(ToString::to_string).collect(),
        rows: table.len(),
        first: time(table.timestamps.first()),
        last: time(table.timestamps.last()),
        flags: FLAG_NAMES.iter().map(|(flag, name)| (*name, table.count_flag(*flag))).collect(),
        unimputed: table.target.iter().filter(|v| !v.is_finite()).count(),
        known_columns: table.known_columns.clone(),
        observed_columns: table.observed_columns.clone(),
        columns: table.frame.get_column_names().iter().map(|c| c.to_string()).collect(),
        seconds,
        rows_per_second: if seconds > 0.0 { table.len() as f64 / seconds } else { 0.0 },
        out: args.out.as_ref().map(|p| p.display().to_string()),
    }
}

fn print_summary(s: &Summary) {
    let exogenous = if s.exogenous.is_empty() { "none".to_string() } else { s.exogenous.join(", ") };
    println!("features of {} (exogenous: {exogenous})", s.series);
    println!(
        "rows      {} hourly, {} .. {} (interval end, UTC)",
        s.rows,
        s.first.as_deref().unwrap_or("-"),
        s.last.as_deref().unwrap_or("-")
    );
    let flags: Vec<String> = s.flags.iter().map(|(name, n)| format!("{name} {n}")).collect();
    println!("flags     {}", flags.join(", "));
    if s.unimputed > 0 {
        println!("          {} rows could not be imputed (NaN)", s.unimputed);
    }
    println!("known     {}", s.known_columns.join(", "));
    println!("observed  {}", s.observed_columns.join(", "));
    println!("built in  {:.3} s ({:.0} rows/s)", s.seconds, s.rows_per_second);
    if let Some(out) = &s.out {
        println!("wrote     {out} ({} columns)", s.columns.len());
    }
}
