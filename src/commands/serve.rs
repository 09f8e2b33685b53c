//! `energy serve`: the models of the regions served, the cycle (the same collection as
//! `collect` and the same forecast as `forecast`), the listener and the signals; the server
//! itself is [`crate::serve`]'s.
use super::forecast;
use super::modeling::{self, ModelMeta};
use super::{BadInput, Context, runtime, train_multi};
use crate::cli::{SelectArgs, ServeArgs, SourceArgs};
use crate::config::Config;
use crate::ingest::{SeriesId, SourceKind, Store, check_name};
use crate::model::checkpoint::CONFIG_FILE;
use crate::serve::archive::{ForecastHour, IssuedForecast};
use crate::serve::{CollectionOutcome, CycleReport, ModelInfo, ServeConfig, State};
use crate::time::{HOUR_US, from_us};
use anyhow::{Context as _, Result};
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) fn run(context: &Context, args: &ServeArgs) -> Result<()> {
    let models = models(context, args)?;
    let regions: Vec<String> = models.iter().map(|(region, _)| region.clone()).collect();
    if !args.listen.ip().is_loopback() {
        if !args.allow_remote {
            return Err(BadInput(format!(
                "--listen {}: not a loopback address; add --allow-remote to serve other machines (the API has no \
                 authentication: put it behind a proxy that has)",
                args.listen
            ))
            .into());
        }
        eprintln!(
            "warning: serving on {}, reachable from other machines; the API is read-only and unauthenticated",
            args.listen
        );
    }
    // turns true on SIGTERM/Ctrl-C: a collection under way stops fetching and finishes its writes
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let setup = Arc::new(CycleSetup {
        config: context.config.clone(),
        root: context.store.root().to_owned(),
        sources: args.sources.clone(),
        days: args.days,
        models,
        stop,
    });
    let state = Arc::new(State::new(context.store.clone(), &regions, args.every).context("cannot read the archive")?);
    let quiet = context.quiet;
    runtime()?.block_on(async move {
        // the signal handlers are in place before the first cycle: a SIGTERM during it is heard
        let shutdown = shutdown_signal(stopping, quiet)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let cycle: crate::serve::Cycle = Arc::new(move |region: &str| setup.cycle(region));
        let config = ServeConfig {
            every: args.every,
            on_ready: Box::new(move |addr| {
                use std::io::Write as _;
                println!("serving on http://{addr}");
                let _ = std::io::stdout().flush();
                if !quiet {
                    eprintln!("press Ctrl-C to stop");
                }
            }),
        };
        crate::serve::run(listener, state, cycle, config, shutdown).await.context("the server failed")?;
        if !quiet {
            eprintln!("stopped: every write is complete");
        }
        Ok(())
    })
}

/// A future that resolves on SIGTERM or Ctrl-C (SIGINT), saying so (unless `quiet`) and
/// turning `stopping` true; the handlers are installed now.
fn shutdown_signal(
    stopping: tokio::sync::watch::Sender<bool>,
    quiet: bool,
) -> Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let signal = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        async move {
            tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            }
        }
    };
    #[cfg(not(unix))]
    let signal = async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    };
    Ok(async move {
        let name = signal.await;
        tracing::info!(signal = name, "shutting down: finishing the current write");
        if !quiet {
            eprintln!(
                "received {name}: shutting down (a collection under way stops fetching and finishes its current write)"
            );
        }
        stopping.send_replace(true);
    })
}

/// Each region served with its model folder: `--model-dir` per `--region` in order; one
/// multi-region model serving every `--region` (without `--region`, every region it was trained
/// on); one folder with a model per region (`DIR/<REGION>`); or one model whose region is
/// served. A multi-region model serves a region it was not trained on zero-shot, as `forecast`
/// does, which needs that region's load in the store already (its scaler is fit on it): the
/// region is refused otherwise, naming the collection to run.
fn models(context: &Context, args: &ServeArgs) -> Result<Vec<(String, PathBuf)>> {
    for region in &args.regions {
        check_name("region", region).map_err(|e| BadInput(format!("--region: {e}")))?;
    }
    let mut regions = args.regions.clone();
    regions.dedup();
    // the regions of a multi-region model in the one folder given
    let multi = match args.model_dir.as_slice() {
        [dir] if dir.join(CONFIG_FILE).is_file() => {
            let (_, extra) = modeling::load_checkpoint(dir)?;
            train_multi::trained_regions(&extra, dir)?
        }
        _ => None,
    };
    let pairs: Vec<(Option<String>, PathBuf)> = match (regions.len(), args.model_dir.len(), multi) {
        (0, 1, Some(trained)) => trained.into_iter().map(|r| (Some(r), args.model_dir[0].clone())).collect(),
        (0, 1, None) => vec![(None, args.model_dir[0].clone())],
        (_, 1, Some(_)) => regions.iter().map(|r| (Some(r.clone()), args.model_dir[0].clone())).collect(),
        (n, m, _) if n == m => regions.iter().cloned().map(Some).zip(args.model_dir.iter().cloned()).collect(),
        (_, 1, None) => regions.iter().map(|r| (Some(r.clone()), args.model_dir[0].join(r))).collect(),
        (n, m, _) => {
            return Err(BadInput(format!(
                "give one --model-dir per --region ({n} regions, {m} model folders), or one folder holding a model \
                 per region"
            ))
            .into());
        }
    };
    let mut out = Vec::new();
    for (region, dir) in pairs {
        let select = one_region(args.source, region.as_deref());
        let (_, meta) = train_multi::load_model(context, &dir, &select)?;
        modeling::check_source(&select, &meta, &dir)?;
        modeling::check_region(&select, &meta, &dir)?;
        if out.iter().any(|(r, _)| *r == meta.region) {
            return Err(BadInput(format!("region {} is served twice", meta.region)).into());
        }
        out.push((meta.region.clone(), dir));
    }
    Ok(out)
}

/// The data flags that select `region` (none: the model's) of `source`.
fn one_region(source: Option<SourceKind>, region: Option<&str>) -> SelectArgs {
    SelectArgs {
        source,
        regions: region.iter().map(|r| r.to_string()).collect(),
        kinds: Vec::new(),
        days: None,
        start: None,
        end: None,
    }
}

/// What every cycle needs.
struct CycleSetup {
    config: Config,
    root: PathBuf,
    sources: SourceArgs,
    days: i64,
    models: Vec<(String, PathBuf)>,
    /// Turns true when the server shuts down.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl CycleSetup {
    /// One cycle of `region`: load its model (a model trained again since is picked up),
    /// collect what is new, forecast from the latest hour. Runs on a blocking thread.
    fn cycle(&self, region: &str) -> CycleReport {
        let now = Utc::now();
        let failed = |why: String| CycleReport {
            model: None,
            collection: CollectionOutcome { at: Some(now), error: Some(why.clone()), ..Default::default() },
            forecast: Err(why),
        };
        let Some((_, dir)) = self.models.iter().find(|(r, _)| r == region) else {
            return failed(format!("no model for region {region}"));
        };
        let context = Context {
            config: self.config.clone(),
            store: Store::new(&self.root),
            json: true,
            quiet: true,
            now,
            stop: Some(self.stop.clone()),
        };
        // a multi-region model: this region's part of it (zero-shot for a region it was not
        // trained on)
        let (mut model, mut meta) = match train_multi::load_model(&context, dir, &one_region(None, Some(region))) {
            Ok((_, meta)) if meta.region != region => {
                return failed(format!("the model in `{}` is now one of region {}", dir.display(), meta.region));
            }
            Ok(loaded) => loaded,
            Err(e) => return failed(self.redact(format!("cannot load the model: {e:#}"))),
        };
        let info = model_info(&meta, dir);
        let started = std::time::Instant::now();
        let collection = match forecast::collect_for_model(&context, &meta, &self.sources, self.days, kinds(&meta)) {
            Ok(result) => {
                let error = (!result.succeeded()).then(|| {
                    let first = result.chunks.iter().find_map(|c| c.error.clone()).unwrap_or_default();
                    self.redact(format!("{} of {} chunks failed: {first}", result.failed_chunks, result.chunks.len()))
                });
                CollectionOutcome {
                    at: Some(now),
                    ok: result.succeeded(),
                    rows: result.rows,
                    retries: result.retries,
                    failed_chunks: result.failed_chunks,
                    duration_s: started.elapsed().as_secs_f64(),
                    error,
                }
            }
            Err(e) => CollectionOutcome {
                at: Some(now),
                duration_s: started.elapsed().as_secs_f64(),
                error: Some(self.redact(format!("{e:#}"))),
                ..Default::default()
            },
        };
        if !collection.ok {
            let why = format!("collection failed: {}", collection.error.as_deref().unwrap_or("unknown"));
            return CycleReport { model: Some(info), collection, forecast: Err(why) };
        }
        let forecast = train_multi::fit_zero_shot(&context, &mut meta, i64::MAX)
            .and_then(|()| forecast::issue(&context, &meta, &mut model))
            .map(|issued| IssuedForecast {
                region: meta.region.clone(),
                // to the microsecond, as the archive keeps it
                issued_at: from_us(Utc::now().timestamp_micros()),
                data_up_to: from_us(issued.origin),
                model_id: info.id.clone(),
                hours: issued
                    .targets
                    .iter()
                    .map(|(t, q)| ForecastHour {
                        timestamp: from_us(*t),
                        lead_h: (t - issued.origin) / HOUR_US,
                        p10: q.p10,
                        p50: q.p50,
                        p90: q.p90,
                    })
                    .collect(),
            })
            .map_err(|e| self.redact(format!("forecast failed: {e:#}")));
        CycleReport { model: Some(info), collection, forecast }
    }

    /// `text` with the EIA key replaced (the HTTP layer already keeps it out of errors; this is
    /// the last guard before a message reaches a response).
    fn redact(&self, text: String) -> String {
        match self.sources.eia_api_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => text.replace(key, "***"),
            _ => text,
        }
    }
}

/// The kinds a cycle collects: the source's defaults, or where the model scores an operator's
/// forecast, the load, that forecast and the model's other series of the same source.
fn kinds(meta: &ModelMeta) -> Vec<String> {
    let Some(operator) = &meta.operator_kind else { return Vec::new() };
    let mut kinds = vec![meta.load.kind.clone(), operator.clone()];
    for id in meta.exogenous.iter().filter(|id| id.source == meta.load.source) {
        if !kinds.contains(&id.kind) {
            kinds.push(id.kind.clone());
        }
    }
    kinds
}

fn model_info(meta: &ModelMeta, dir: &Path) -> ModelInfo {
    let operator = meta
        .operator_kind
        .as_deref()
        .or(meta.source.operator_forecast_kind())
        .map(|kind| SeriesId::new(&meta.load.source, &meta.region, kind));
    ModelInfo {
        id: format!("{}@{}", meta.region, meta.trained_at.format("%Y%m%dT%H%M%SZ")),
        dir: dir.display().to_string(),
        trained_at: meta.trained_at,
        protocol: meta.spec.protocol,
        horizon_h: meta.spec.horizon,
        load: meta.load.clone(),
        operator,
        backtest: serde_json::to_value(&meta.test_scores).unwrap_or_default(),
        zero_shot: train_multi::is_zero_shot(meta).then(|| {
            format!(
                "the model was not trained on region {}: its scaler is fit on the region's own history",
                meta.region
            )
        }),
    }
}
