//! `energy bench`
use super::{BadInput, Context};
use crate::bench::{self, BenchConfig, BenchSize, Comparison, FigureKind, MAX_LATENCY_MS, Report};
use crate::cli::BenchArgs;
use crate::report::Reporter;
use anyhow::{Context as _, Result};
use std::path::Path;
use std::time::Duration;

pub(crate) fn run(context: &Context, args: &BenchArgs) -> Result<()> {
    if args.latency_ms > MAX_LATENCY_MS {
        return Err(BadInput(format!("--latency-ms must be at most {MAX_LATENCY_MS} (got {})", args.latency_ms)).into());
    }
    // read the earlier report first: a wrong path fails at once, not after the run
    let earlier = match &args.compare {
        Some(path) => {
            let report = Report::read(path).map_err(|error| BadInput(format!("{:#}", anyhow::Error::new(error))))?;
            Some((path.as_path(), report))
        }
        None => None,
    };
    if args.model_only {
        return model_only(context, args);
    }
    std::fs::create_dir_all(&args.history)
        .with_context(|| format!("cannot create the history folder `{}`", args.history.display()))?;
    let config = BenchConfig::new(size(args), Duration::from_millis(args.latency_ms));
    let scratch = tempfile::Builder::new()
        .prefix("energy-bench-")
        .tempdir()
        .context("cannot create a scratch folder for the benchmark")?;
    let reporter = StepReporter { quiet: context.quiet };
    let report = bench::run(&config, scratch.path(), &reporter).context("the benchmark failed")?;
    drop(scratch);
    let path = bench::write_report(&report, &args.history)?;
    let comparison = earlier.map(|(file, earlier)| bench::compare(&earlier, &report, file));

    if context.json {
        let mut document = report.to_json();
        if let Some(members) = document.as_object_mut() {
            members.insert("file".into(), path.display().to_string().into());
            if let Some(comparison) = &comparison {
                members.insert("comparison".into(), serde_json::to_value(comparison)?);
            }
        }
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print_report(&report, &path);
        if let Some(comparison) = &comparison {
            print_comparison(comparison);
        }
    }
    Ok(())
}

/// `energy bench --model-only`: the forecaster's training and inference sequences/s alone.
fn model_only(context: &Context, args: &BenchArgs) -> Result<()> {
    let mut model_config = context.config.model.clone();
    if let Some(hours) = args.context {
        if !(1..=MAX_MODEL_ONLY_CONTEXT).contains(&hours) {
            return Err(BadInput(format!("--context must be 1..={MAX_MODEL_ONLY_CONTEXT} hours (got {hours})")).into());
        }
        model_config.context = hours;
    }
    if let Some(rows) = args.block_size {
        if !(1..=MAX_MODEL_ONLY_CONTEXT).contains(&rows) {
            return Err(BadInput(format!("--block-size must be 1..={MAX_MODEL_ONLY_CONTEXT} rows (got {rows})")).into());
        }
        model_config.block_size = rows;
    }
    if !(1..=MAX_MODEL_ONLY_FEATURES).contains(&args.features) {
        return Err(
            BadInput(format!("--features must be 1..={MAX_MODEL_ONLY_FEATURES} (got {})", args.features)).into()
        );
    }
    let config = BenchConfig::new(size(args), Duration::from_millis(args.latency_ms));
    let figures = bench::run_model_only(&config, &model_config, args.features).context("the benchmark failed")?;
    if context.json {
        let mut document = serde_json::to_value(&figures)?;
        if let Some(members) = document.as_object_mut() {
            members.insert("build".into(), if cfg!(debug_assertions) { "debug" } else { "release" }.into());
            members.insert("block_size".into(), model_config.block_size.into());
        }
        println!("{}", serde_json::to_string(&document)?);
    } else {
        println!(
            "model, {} positions × {} features, batch {}: training {:.1} sequences/s, inference {:.1} sequences/s",
            figures.positions,
            figures.n_features,
            figures.batch_size,
            figures.train_sequences_per_s,
            figures.predict_sequences_per_s
        );
    }
    Ok(())
}

/// The sizes `--smoke` / `--quick` / neither ask for.
fn size(args: &BenchArgs) -> BenchSize {
    match (args.smoke, args.quick) {
        (true, _) => BenchSize::Smoke,
        (false, true) => BenchSize::Quick,
        (false, false) => BenchSize::Full,
    }
}

/// Longest context `--model-only` accepts (hours).
const MAX_MODEL_ONLY_CONTEXT: usize = 8760;
/// Most features `--model-only` accepts.
const MAX_MODEL_ONLY_FEATURES: usize = 1024;

/// Prints each step's start on stderr (hidden under `-q`).
struct StepReporter {
    quiet: bool,
}

impl Reporter for StepReporter {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64, _: u64) {}
    fn message(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
    fn finish(&self) {}
}

/// `1234567.8` as `1,234,568` (`decimals` 0) or `1,234,567.8`.
fn grouped(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (sign, text) = text.strip_prefix('-').map_or(("", text.as_str()), |rest| ("-", rest));
    let (whole, fraction) = text.split_once('.').map_or((text, None), |(w, f)| (w, Some(f)));
    let mut out = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    match fraction {
        Some(fraction) => format!("{sign}{out}.{fraction}"),
        None => format!("{sign}{out}"),
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn print_report(report: &Report, path: &Path) {
    let (settings, machine) = (&report.settings, &report.machine);
    let (c, f, m) = (&report.collection, &report.features, &report.model);
    println!(
        "energy bench ({}, {} build), {}",
        settings.size.as_str(),
        settings.build,
        report.created.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let memory =
        machine.memory_bytes.map_or_else(|| "memory unknown".into(), |b| format!("{:.1} GiB", b as f64 / 1073741824.0));
    let cores = match machine.physical_cores {
        Some(physical) => format!("{} cores ({physical} physical)", machine.logical_cores),
        None => format!("{} cores", machine.logical_cores),
    };
    println!(
        "machine      {}, {cores}, {memory}, {} {}, MLX {}, BLAS {}{}",
        machine.cpu_model,
        machine.os,
        machine.arch,
        machine.mlx_device,
        machine.blas,
        machine.git_commit.as_deref().map_or(String::new(), |commit| format!(", commit {commit}"))
    );
    println!(
        "collection   {} records/s: {} rows ({} respondents × {} kinds, {}) in {} requests, {:.2} s",
        grouped(c.records_per_s, 0),
        grouped(c.rows as f64, 0),
        c.respondents.len(),
        c.kinds.len(),
        c.range,
        c.requests,
        c.seconds
    );
    println!(
        "             local EIA server: {} ms latency, {} requests/s and {} an hour enforced, {} answered 429",
        settings.latency_ms,
        settings.requests_per_second,
        grouped(f64::from(settings.requests_per_hour), 0),
        c.rejected_429
    );
    println!(
        "             the API's ceiling is {} records/s ({} requests/s × 5,000 rows); the Python design reached {} records/s",
        grouped(c.ceiling_records_per_s, 0),
        settings.requests_per_second,
        grouped(c.python_records_per_s, 1)
    );
    println!(
        "features     {} rows/s: {} rows ({}) × {} runs in {:.2} s",
        grouped(f.rows_per_s, 0),
        grouped(f.rows as f64, 0),
        f.range,
        f.build_runs,
        f.build_seconds
    );
    println!(
        "windows      {} windows/s: {} windows (stride 1) × {} runs in {:.2} s",
        grouped(f.windows_per_s, 0),
        grouped(f.windows as f64, 0),
        f.window_runs,
        f.window_seconds
    );
    println!(
        "training     {} sequences/s: {} sequences in {:.2} s ({} positions × {} features, d_model {}, {} layers, batch {})",
        grouped(m.train_sequences_per_s, 1),
        m.train_sequences,
        m.train_seconds,
        m.positions,
        m.n_features,
        m.d_model,
        m.n_layers,
        m.batch_size
    );
    println!(
        "inference    {} sequences/s: {} sequences in {:.2} s (batch {})",
        grouped(m.predict_sequences_per_s, 1),
        m.predict_sequences,
        m.predict_seconds,
        m.batch_size
    );
    println!("attention    peak memory of one forward pass (4 heads × 16, f32; blockwise with blocks of 64)");
    println!("             {:>7}  {:>12}  {:>12}  {:>6}", "length", "blockwise", "reference", "ratio");
    for row in &report.attention_memory {
        println!(
            "             {:>7}  {:>12}  {:>12}  {:>6.3}",
            row.length,
            mib(row.blockwise_bytes),
            mib(row.reference_bytes),
            row.ratio
        );
    }
    println!("report       {}", path.display());
}

fn print_comparison(comparison: &Comparison) {
    println!(
        "compared with `{}` ({}, {} build, {}, {}):",
        comparison.file,
        comparison.size.as_str(),
        comparison.build,
        comparison.cpu_model,
        comparison.created.format("%Y-%m-%d %H:%M UTC")
    );
    println!("  {:<34} {:>16} {:>16} {:>8}", "figure", "earlier", "now", "ratio");
    for figure in &comparison.figures {
        let decimals = if figure.kind == FigureKind::Rate && figure.now < 1000.0 { 1 } else { 0 };
        let earlier = figure.earlier.map_or_else(|| "-".to_string(), |e| grouped(e, decimals));
        let ratio = figure.ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"));
        let note = match figure.kind {
            FigureKind::Count if figure.ratio.is_some_and(|r| r != 1.0) => "  (a different run size)",
            FigureKind::Rate => "  (higher is faster)",
            FigureKind::Memory => "  (lower is smaller)",
            FigureKind::Count => "",
        };
        println!("  {:<34} {:>16} {:>16} {:>8}{note}", figure.name, earlier, grouped(figure.now, decimals), ratio);
    }
}

#[cfg(test)]
mod tests {
    use super::grouped;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(1234567.84, 0), "1,234,568");
        assert_eq!(grouped(326.8, 1), "326.8");
        assert_eq!(grouped(-25000.0, 0), "-25,000");
        assert_eq!(grouped(999.0, 0), "999");
    }
}
