//! What `train`, `forecast` and `evaluate` share: which series a model uses (asked of the
//! source, [`SourceKind`]), the metadata saved beside its weights, and loading it again. The
//! forecasting and scoring itself is [`crate::eval`]'s.
use super::{BadInput, Context};
use crate::cli::{InputArgs, OperatorArgs, SelectArgs, SourceArgs};
use crate::eval::{IntervalCalibration, Scores};
use crate::features::multi::RegionBlock;
use crate::features::{self, FeatureConfig, FeatureTable, Scaler, WindowSpec};
use crate::ingest::{self, KIND_TEMP, SeriesId, SourceKind, file};
use crate::model::checkpoint;
use crate::model::transformer::Forecaster;
use crate::time::DateRange;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything `forecast` and `evaluate` need besides the weights (saved in `config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ModelMeta {
    pub source: SourceKind,
    pub region: String,
    pub load: SeriesId,
    pub exogenous: Vec<SeriesId>,
    pub spec: WindowSpec,
    pub scaler: Scaler,
    pub feature_names: Vec<String>,
    pub feature_config: FeatureConfig,
    pub data_range: DateRange,
    /// The chronological split the model was trained with.
    #[serde(default)]
    pub split: crate::config::SplitConfig,
    /// Whether the saved model learnt the test split too (`[model] final_refit`), so that
    /// every hour of `data_range` is in-sample for it; false in older models.
    #[serde(default)]
    pub learnt_test: bool,
    pub trained_at: DateTime<Utc>,
    pub seed: u64,
    /// Test-split scores at training time (model and baselines).
    pub test_scores: Vec<Scores>,
    /// The p10–p90 widening fitted on the validation split (absent in older models: none).
    #[serde(default)]
    pub interval_calibration: Option<IntervalCalibration>,
    /// The MASE denominator: the lag-24 naive's MAE over the training split
    /// ([`crate::eval::mase_scale`]); absent in older models.
    #[serde(default)]
    pub mase_scale: Option<f64>,
    /// The kind of the operator's forecast scored beside the model at training time.
    #[serde(default)]
    pub operator_kind: Option<String>,
    /// The region columns of a multi-region model ([`super::train_multi`]) and this region's
    /// place among them; absent for a model of one region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_block: Option<RegionBlock>,
}

/// The load series (the source's load kind) and the exogenous series (those the store holds)
/// a model of `region` uses.
pub(crate) fn series_for(
    context: &Context,
    source: SourceKind,
    region: &str,
    weather: Option<&str>,
) -> Result<(SeriesId, Vec<SeriesId>)> {
    let load = SeriesId::new(source.as_str(), region, source.require_load_kind()?);
    let stored = context.store.list_series().context("cannot read the store")?;
    if !stored.contains(&load) {
        return Err(BadInput(format!(
            "the store `{}` holds no series {load}; run `energy collect --source {source} --region {}` first",
            context.store.root().display(),
            shell_word(region)
        ))
        .into());
    }
    // the observed weather series, and whether the user asked for it by name
    let (temp, required) = match weather {
        None => (SeriesId::new(source.as_str(), region, KIND_TEMP), false),
        Some("none") => return Ok((load, Vec::new())),
        Some("openmeteo") => (SeriesId::new(SourceKind::Openmeteo.as_str(), region, KIND_TEMP), true),
        Some(spec) => match spec.split(':').collect::<Vec<_>>()[..] {
            [source, region, kind] if !source.is_empty() && !region.is_empty() && !kind.is_empty() => {
                (SeriesId::new(source, region, kind), true)
            }
            _ => {
                return Err(BadInput(format!(
                    "--weather `{spec}`: give none, openmeteo or SOURCE:REGION:KIND (e.g. file:VIC:temperature_c)"
                ))
                .into());
            }
        },
    };
    if !stored.contains(&temp) {
        if required {
            return Err(BadInput(format!(
                "the store `{}` holds no series {temp} for --weather; run `energy collect --source {} --region {} --kind {}` first",
                context.store.root().display(),
                temp.source,
                shell_word(&temp.region),
                temp.kind
            ))
            .into());
        }
        return Ok((load, Vec::new()));
    }
    // its as-issued forecasts where stored, shortest lead first
    let mut issued: Vec<(usize, SeriesId)> = stored
        .iter()
        .filter(|id| id.source == temp.source && id.region == temp.region)
        .filter_map(|id| match ingest::parse_issued_kind(&id.kind) {
            Some((base, days)) if base == temp.kind => Some((days, id.clone())),
            _ => None,
        })
        .collect();
    issued.sort();
    let mut exogenous = vec![temp];
    exogenous.extend(issued.into_iter().map(|(_, id)| id));
    Ok((load, exogenous))
}

/// The extra input series `--input` and `--known-input` name (`SOURCE:REGION:KIND`), and the
/// feature settings that mark the actuals among the first as observed
/// ([`ingest::is_known_ahead`]) and the rest as known ahead. Each must be
/// stored, not be the load itself, and not share its kind with another exogenous series (the
/// column is named after the kind).
pub(crate) fn input_series(
    context: &Context,
    load: &SeriesId,
    exogenous: &[SeriesId],
    inputs: &InputArgs,
) -> Result<(Vec<SeriesId>, FeatureConfig), BadInput> {
    let mut ids: Vec<SeriesId> = Vec::new();
    let mut config = FeatureConfig::default();
    let declared =
        inputs.inputs.iter().map(|spec| (spec, false)).chain(inputs.known_inputs.iter().map(|spec| (spec, true)));
    for (spec, declared_known) in declared {
        let id =
            super::status::parse_series(spec).map_err(|BadInput(message)| BadInput(format!("--input: {message}")))?;
        if &id == load {
            return Err(BadInput(format!("--input {id} is the load series itself")));
        }
        if let Some(other) = exogenous.iter().chain(&ids).find(|other| other.kind.eq_ignore_ascii_case(&id.kind)) {
            return Err(BadInput(format!(
                "--input {id}: its column `{}` is taken by {other} (one input per kind)",
                id.kind.to_lowercase()
            )));
        }
        if !context.store.has_series(&id) {
            return Err(BadInput(format!(
                "--input {id}: the store `{}` holds no such series; run `energy collect --source {} --region {} --kind {}` first",
                context.store.root().display(),
                id.source,
                shell_word(&id.region),
                id.kind
            )));
        }
        if declared_known || ingest::is_known_ahead(&id.kind) {
            config.known_inputs.push(id.kind.to_lowercase());
        } else {
            config.observed_inputs.push(id.kind.to_lowercase());
        }
        ids.push(id);
    }
    Ok((ids, config))
}

/// A region as a user would type it in a shell (`"CA ISO-TAC"` quoted).
fn shell_word(region: &str) -> String {
    if region.contains(' ') { format!("\"{region}\"") } else { region.to_string() }
}

/// Fail with a hint to collect when the store lacks a series the model needs.
pub(crate) fn require_series(context: &Context, meta: &ModelMeta, id: &SeriesId) -> Result<(), BadInput> {
    if context.store.has_series(id) {
        return Ok(());
    }
    Err(BadInput(format!(
        "the store `{}` holds no series {id}, which the model (region {}) needs; run `energy collect --source {} --region {}` first",
        context.store.root().display(),
        meta.region,
        id.source,
        id.region
    )))
}

/// The feature table of `load` in `range`; a range the store holds no rows of is the user's
/// choice (exit code 1), not a failure.
pub(crate) fn build_features(
    context: &Context,
    load: &SeriesId,
    exogenous: &[SeriesId],
    range: DateRange,
    config: &FeatureConfig,
) -> Result<FeatureTable> {
    match features::build(&context.store, load, exogenous, Some(range), config) {
        Ok(table) => Ok(table),
        Err(e @ features::FeatureError::Empty { .. }) => {
            Err(BadInput(format!("{e}: choose a range the store holds (see `energy status`)")).into())
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot build the features")),
    }
}

/// The one region the flags select: `--region`, else the source's default region (for a
/// file, the region its name gives, as `collect` imports it).
pub(crate) fn one_region(select: &SelectArgs, sources: Option<&SourceArgs>) -> Result<String, BadInput> {
    let file_default = match (select.source(), sources.and_then(|s| s.path.as_deref())) {
        (SourceKind::File, Some(path)) => Some(file::default_region(path)),
        _ => None,
    };
    let default = file_default.as_deref().or(select.source().default_region());
    let regions = select.regions_or(default)?;
    match regions.as_slice() {
        [region] => Ok(region.clone()),
        _ => Err(BadInput(format!("a model is trained for one region at a time (got {})", regions.join(", ")))),
    }
}

/// The operator's forecast to score beside the model: `--operator-kind` (`none`: no operator),
/// else `saved` (the model's), else the source's ([`SourceKind::operator_forecast_kind`]).
/// `Some` only where the store holds the series; a kind named by the flag must be stored.
pub(crate) fn operator_series(
    context: &Context,
    load: &SeriesId,
    source: SourceKind,
    args: &OperatorArgs,
    saved: Option<&str>,
) -> Result<Option<SeriesId>, BadInput> {
    let kind = match args.operator_kind.as_deref() {
        Some(kind) if kind.eq_ignore_ascii_case("none") => return Ok(None),
        Some(kind) => {
            crate::ingest::check_name("kind", kind).map_err(|e| BadInput(format!("--operator-kind: {e}")))?;
            Some(kind)
        }
        None => saved.or(source.operator_forecast_kind()),
    };
    let Some(kind) = kind else { return Ok(None) };
    let id = SeriesId::new(&load.source, &load.region, kind);
    if context.store.has_series(&id) {
        return Ok(Some(id));
    }
    if args.operator_kind.is_some() {
        return Err(BadInput(format!(
            "--operator-kind {kind}: the store `{}` holds no series {id}",
            context.store.root().display()
        )));
    }
    Ok(None)
}

/// The operator's forecast `id` (if any) aligned to the table's rows (NaN where absent).
pub(crate) fn operator_aligned(
    context: &Context,
    table: &FeatureTable,
    id: Option<&SeriesId>,
) -> Result<Option<Vec<f64>>> {
    let Some(id) = id else { return Ok(None) };
    let rows = context.store.read(id, None).with_context(|| format!("cannot read {id}"))?;
    Ok(Some(crate::eval::align_to_rows(&table.timestamps, &rows)))
}

/// Refuse a `--source` flag that names another source than the model's.
pub(crate) fn check_source(select: &SelectArgs, meta: &ModelMeta, dir: &Path) -> Result<(), BadInput> {
    match select.source {
        Some(source) if source != meta.source => Err(BadInput(format!(
            "the model in `{}` was trained on source {}, not {source}",
            dir.display(),
            meta.source
        ))),
        _ => Ok(()),
    }
}

/// Refuse `--region` flags that name another region than the model's.
pub(crate) fn check_region(select: &SelectArgs, meta: &ModelMeta, dir: &Path) -> Result<(), BadInput> {
    if select.regions.is_empty() || select.regions == [meta.region.clone()] {
        return Ok(());
    }
    Err(BadInput(format!(
        "the model in `{}` was trained on region {}, not {}",
        dir.display(),
        meta.region,
        select.regions.join(", ")
    )))
}

/// Refuse windows whose features are not those the model was trained on (a model saved by a
/// version of `energy` that built other features): name the difference and the way out.
pub(crate) fn check_features(meta: &ModelMeta, windows: &features::Windows) -> Result<(), BadInput> {
    if windows.feature_names == meta.feature_names {
        return Ok(());
    }
    let missing: Vec<&String> = meta.feature_names.iter().filter(|n| !windows.feature_names.contains(n)).collect();
    let new: Vec<&String> = windows.feature_names.iter().filter(|n| !meta.feature_names.contains(n)).collect();
    Err(BadInput(format!(
        "the model was trained on other input features than this version of energy builds \
         (not built now: {missing:?}; new: {new:?}): train it again with `energy train`"
    )))
}

/// Load a checkpoint: the model and the metadata `train` saved with it.
pub(crate) fn load_checkpoint(dir: &Path) -> Result<(Forecaster, serde_json::Value)> {
    if !dir.is_dir() {
        return Err(BadInput(format!(
            "no model in `{}`: the folder does not exist (train one with `energy train --model-dir {}`)",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    let (model, _config, extra) =
        checkpoint::load(dir).with_context(|| format!("cannot load the model in `{}`", dir.display()))?;
    Ok((model, extra))
}

/// The metadata of a model of one region.
pub(crate) fn meta_of(extra: serde_json::Value, dir: &Path) -> Result<ModelMeta> {
    serde_json::from_value(extra).with_context(|| {
        format!("the model in `{}` lacks its metadata (was it saved by `energy train`?)", dir.display())
    })
}

/// A table of scores for the terminal.
pub(crate) fn print_scores(scores: &[Scores]) {
    let width = scores.iter().map(|s| s.name.chars().count()).max().unwrap_or(0).max(30);
    println!(
        "{:<width$} {:>7} {:>9} {:>11} {:>7} {:>10} {:>9}",
        "forecaster", "hours", "MAPE %", "MAE MW", "MASE", "pinball", "p10-p90"
    );
    for s in scores {
        let coverage = s.coverage_p10_p90.map_or("-".to_string(), |c| format!("{:.0} %", 100.0 * c));
        println!(
            "{:<width$} {:>7} {:>9.2} {:>11.1} {:>7.3} {:>10.1} {:>9}",
            s.name, s.hours, s.mape_percent, s.mae, s.mase, s.pinball, coverage
        );
    }
    // one figure per lead hour, in groups of six
    let by_lead = |name: &str, what: &str, leads: Vec<String>| {
        let groups: Vec<String> = leads.chunks(6).map(|g| g.join(" ")).collect();
        println!("{name} {what} by lead hour 1..{}: {}", leads.len(), groups.join(" | "));
    };
    for s in scores.iter().filter(|s| !s.coverage_by_lead.is_empty()) {
        by_lead(
            &s.name,
            "p10-p90 coverage %",
            s.coverage_by_lead.iter().map(|c| format!("{:.0}", 100.0 * c)).collect(),
        );
    }
    for s in scores.iter().filter(|s| s.name == crate::eval::backtest::MODEL && !s.mape_by_lead.is_empty()) {
        by_lead(&s.name, "MAPE %", s.mape_by_lead.iter().map(|m| format!("{m:.2}")).collect());
    }
}

pub(crate) fn format_time(us: i64) -> String {
    crate::time::format_minute(us)
}

/// Trainable scalars of a model.
pub(crate) fn parameter_count(model: &Forecaster) -> usize {
    use mlx_rs::module::ModuleParameters;
    model.parameters().flatten().values().map(|a| a.size()).sum()
}
