//! One handler per subcommand; the only code that prints or draws progress.
mod bench;
mod collect;
mod evaluate;
mod features;
mod forecast;
mod launch;
mod modeling;
mod reporters;
mod serve;
mod status;
mod train;
mod train_multi;

use crate::cli::{Cli, Command, SelectArgs, SourceArgs};
use crate::config::{Config, ConfigError};
use crate::ingest::{IngestError, SourceKind, Store, check_name};
use crate::model::distributed::DistributedError;
use crate::time::DateRange;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use std::path::PathBuf;

/// Longest range a command accepts, in days (about 50 years).
pub const MAX_DAYS: i64 = 18_300;
/// `--days` when no range is given.
pub const DEFAULT_DAYS: i64 = 180;

/// A problem with what the user asked for: exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Exit code for an error: 1 for bad input or usage, 2 for failures at run time.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let bad_input = error.chain().any(|cause| {
        cause.is::<BadInput>()
            || cause.is::<ConfigError>()
            || cause.downcast_ref::<IngestError>().is_some_and(IngestError::is_bad_input)
            || cause.downcast_ref::<DistributedError>().is_some_and(DistributedError::is_bad_input)
    });
    if bad_input { 1 } else { 2 }
}

/// Set up logging to stderr: warnings by default, `-v` info, `-vv` debug, `-q` errors only;
/// `RUST_LOG` overrides.
pub fn init_tracing(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (_, q) if q > 0 => "error",
        (0, _) => "warn",
        (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("energy={level},warn")));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// What every handler gets: resolved settings and output choices.
pub(crate) struct Context {
    pub config: Config,
    pub store: Store,
    pub json: bool,
    pub quiet: bool,
    pub now: DateTime<Utc>,
    /// Turns true when the command is asked to stop (`serve` on SIGTERM/Ctrl-C): collections
    /// stop fetching and finish their writes.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let root: PathBuf = cli.store.clone().unwrap_or_else(|| config.store.root.clone());
    let context =
        Context { store: Store::new(root), config, json: cli.json, quiet: cli.quiet > 0, now: Utc::now(), stop: None };
    let uses_regions = matches!(
        cli.command,
        Command::Collect(_)
            | Command::Features(_)
            | Command::Train(_)
            | Command::Forecast(_)
            | Command::Evaluate(_)
            | Command::Serve(_)
    );
    register_regions(&context, uses_regions)?;
    match cli.command {
        Command::Collect(args) => collect::run(&context, &args.select, &args.sources),
        Command::Status(args) => status::run(&context, &args),
        Command::Features(args) => features::run(&context, &args),
        Command::Train(args) => train::run(&context, &args),
        Command::Forecast(args) => forecast::run(&context, &args, &args.sources),
        Command::Evaluate(args) => evaluate::run(&context, &args),
        Command::Bench(args) => bench::run(&context, &args),
        Command::Serve(args) => serve::run(&context, &args),
        Command::Launch(args) => launch::run(&context, &args, cli.config.as_deref()),
    }
}

/// Make the regions' zones and holidays known ([`crate::region`]): the zones the store
/// recorded (`read_store`: commands that use regions), then `[regions.<R>]` of the config, which
/// wins.
fn register_regions(context: &Context, read_store: bool) -> Result<()> {
    use crate::region::{ZoneOrigin, configure, parse_zone};
    if read_store {
        let records = context.store.regions().context("cannot read the store's region records")?;
        for (region, record) in records {
            match parse_zone(&record.timezone) {
                Ok(zone) => configure(
                    &region,
                    crate::region::RegionSettings { zone: Some(zone), holidays: None },
                    ZoneOrigin::Store,
                ),
                Err(e) => tracing::warn!(region, "ignoring the store's record of region {region}: {e}"),
            }
        }
    }
    for (region, settings) in &context.config.regions {
        configure(region, settings.settings(), ZoneOrigin::Config);
    }
    Ok(())
}

/// A range no command accepts: longer than [`MAX_DAYS`] or starting before 1970.
pub(crate) fn check_span(range: DateRange) -> Result<DateRange, BadInput> {
    if range.start.timestamp() < 0 {
        return Err(BadInput(format!("the range {range} starts before 1970")));
    }
    if range.hours() > MAX_DAYS * 24 {
        return Err(BadInput(format!("the range {range} is longer than {MAX_DAYS} days")));
    }
    Ok(range)
}

/// A multi-threaded tokio runtime for the async parts of a command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

impl SelectArgs {
    /// The range the flags name: `--start/--end` days, or the last `--days` (default 180).
    pub fn range(&self, now: DateTime<Utc>) -> Result<DateRange, BadInput> {
        let range = match (self.start, self.end, self.days) {
            (Some(start), Some(end), None) => DateRange::from_days(start, end).map_err(BadInput)?,
            (None, None, days) => {
                let days = days.unwrap_or(DEFAULT_DAYS);
                if days < 1 {
                    return Err(BadInput(format!("--days must be at least 1 (got {days})")));
                }
                if days > MAX_DAYS {
                    return Err(BadInput(format!("--days {days} is more than the {MAX_DAYS} days accepted")));
                }
                DateRange::last_days(days as u32, now).map_err(BadInput)?
            }
            _ => return Err(BadInput("give either --days or both --start and --end".into())),
        };
        if range.end > crate::time::floor_hour(now) {
            return Err(BadInput(format!(
                "the range {range} ends in the future (now is {})",
                crate::time::format_minute(now.timestamp_micros())
            )));
        }
        check_span(range)
    }

    /// The source the flags name (`synthetic` when none).
    pub fn source(&self) -> SourceKind {
        self.source.unwrap_or(SourceKind::Synthetic)
    }

    /// Region codes, checked with the store's name rule, or the source's default region
    /// ([`SourceKind::default_region`]).
    pub fn regions(&self) -> Result<Vec<String>, BadInput> {
        self.regions_or(self.source().default_region())
    }

    /// Region codes, checked, or `default` when none is given (an error naming the flag when
    /// there is no default either).
    pub fn regions_or(&self, default: Option<&str>) -> Result<Vec<String>, BadInput> {
        if self.regions.is_empty() {
            return match default {
                Some(region) => Ok(vec![region.to_string()]),
                None => Err(BadInput(self.source().region_hint().to_string())),
            };
        }
        let mut out: Vec<String> = Vec::new();
        for region in &self.regions {
            check_name("region", region).map_err(|e| BadInput(e.to_string()))?;
            if !out.contains(region) {
                out.push(region.clone());
            }
        }
        Ok(out)
    }
}

impl SourceArgs {
    pub(crate) fn concurrency(&self, config: &Config) -> Result<usize, BadInput> {
        match self.concurrency {
            Some(0) => Err(BadInput("--concurrency must be at least 1".into())),
            Some(n) => Ok(n),
            None => Ok(config.collect.concurrency),
        }
    }
}
