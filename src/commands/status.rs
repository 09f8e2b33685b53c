//! `energy status`, and `energy status --compare A B`: how far two stored series agree.
use super::{BadInput, Context};
use crate::cli::StatusArgs;
use crate::ingest::store::Gap;
use crate::ingest::{SeriesId, SeriesRows};
use anyhow::{Context as _, Result};
use serde::Serialize;

/// Disagreeing hours the table lists (`--json` lists them all).
const SHOWN_HOURS: usize = 20;

/// Gap ranges the grid view lists per kind besides the longest (`--json` lists them all).
const SHOWN_GAPS: usize = 3;

pub(crate) fn run(context: &Context, args: &StatusArgs) -> Result<()> {
    if let [first, second] = args.compare.as_slice() {
        return compare(context, first, second, args.threshold);
    }
    if args.grid {
        return grid(context, &args.grid_source);
    }
    let status = context.store.status().context("cannot read the store")?;
    if context.json {
        let doc = serde_json::json!({ "store": context.store.root().display().to_string(), "series": status });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if status.is_empty() {
        println!("store `{}` holds no series", context.store.root().display());
        return Ok(());
    }
    println!("store `{}`", context.store.root().display());
    println!(
        "{:<32} {:>9} {:<17} {:<17} {:>8} {:>6} {:>7} {:>6}",
        "series", "rows", "first", "last", "missing", "nulls", "chunks", "files"
    );
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_string(), |t| t.format(crate::time::FORMAT_MINUTE).to_string())
    };
    for s in &status {
        println!(
            "{:<32} {:>9} {:<17} {:<17} {:>8} {:>6} {:>7} {:>6}",
            s.series.to_string(),
            s.rows,
            time(s.first),
            time(s.last),
            s.missing_hours,
            s.null_values,
            s.ledger_chunks,
            s.files
        );
    }
    Ok(())
}

/// What the grid view says of one kind of one region.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KindCoverage {
    pub kind: String,
    pub rows: usize,
    pub first: Option<chrono::DateTime<chrono::Utc>>,
    pub last: Option<chrono::DateTime<chrono::Utc>>,
    /// Hours between first and last with no row.
    pub missing_hours: i64,
    pub null_values: usize,
    /// The runs of missing hours, oldest first.
    pub gaps: Vec<Gap>,
    /// The longest of them.
    pub longest_gap: Option<Gap>,
    /// Files read to find holes inside them (the others' footers were enough).
    pub files_read: usize,
    pub files: usize,
}

/// One line of the grid view: a region (respondent, pair or sub-region) of a source.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RegionCoverage {
    pub region: String,
    pub kinds: Vec<KindCoverage>,
    /// The last hour any kind holds.
    pub last: Option<chrono::DateTime<chrono::Utc>>,
    /// MAPE of the day-ahead forecast (DF) against demand (D), percent, over the hours both hold.
    pub df_mape_percent: Option<f64>,
    pub df_overlap_hours: usize,
}

/// `energy status --grid`: per region of `source`, coverage and gap ranges of each kind from
/// the files' footers (reading only files with a hole inside), and the DF-vs-D MAPE (reading
/// those two series).
fn grid(context: &Context, source: &str) -> Result<()> {
    use crate::ingest::KIND_DEMAND;
    use crate::ingest::eia::KIND_DAY_AHEAD;
    let status = context.store.status_with_gaps().context("cannot read the store")?;
    let mut regions: Vec<RegionCoverage> = Vec::new();
    for s in status.into_iter().filter(|s| s.series.source == source) {
        let gaps = s.gaps.unwrap_or_default();
        let kind = KindCoverage {
            kind: s.series.kind.clone(),
            rows: s.rows,
            first: s.first,
            last: s.last,
            missing_hours: s.missing_hours,
            null_values: s.null_values,
            longest_gap: gaps.longest().copied(),
            gaps: gaps.gaps,
            files_read: gaps.files_read,
            files: s.files,
        };
        match regions.last_mut() {
            Some(region) if region.region == s.series.region => {
                region.last = region.last.max(s.last);
                region.kinds.push(kind);
            }
            _ => regions.push(RegionCoverage {
                region: s.series.region.clone(),
                last: s.last,
                kinds: vec![kind],
                df_mape_percent: None,
                df_overlap_hours: 0,
            }),
        }
    }
    for region in &mut regions {
        let held = |kind: &str| region.kinds.iter().any(|k| k.kind == kind);
        if held(KIND_DEMAND) && held(KIND_DAY_AHEAD) {
            let read = |kind: &str| {
                let id = SeriesId::new(source, &region.region, kind);
                context.store.read(&id, None).with_context(|| format!("cannot read `{id}`"))
            };
            let comparison = compare_rows(&read(KIND_DEMAND)?, &read(KIND_DAY_AHEAD)?, f64::INFINITY);
            region.df_mape_percent = comparison.mape_percent;
            region.df_overlap_hours = comparison.overlap_hours;
        }
    }
    if context.json {
        let doc = serde_json::json!({
            "store": context.store.root().display().to_string(),
            "source": source,
            "grid": regions,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if regions.is_empty() {
        println!("store `{}` holds no series of source {source}", context.store.root().display());
        return Ok(());
    }
    let (files, read) =
        regions.iter().flat_map(|r| &r.kinds).fold((0, 0), |(files, read), k| (files + k.files, read + k.files_read));
    println!("store `{}`, source {source}: {} regions", context.store.root().display(), regions.len());
    println!(
        "gaps from the files' footers; {read} of {files} files read for holes inside them (--json lists every gap)"
    );
    println!("{:<20} {:<17} {:>9} {:>8}  kinds (rows/missing hours)", "region", "last", "DF MAPE", "D miss");
    for region in &regions {
        let time = region.last.map_or("-".to_string(), |t| t.format(crate::time::FORMAT_MINUTE).to_string());
        let mape = region.df_mape_percent.map_or("-".to_string(), |m| format!("{m:.2} %"));
        let demand_missing = region
            .kinds
            .iter()
            .find(|k| k.kind == KIND_DEMAND)
            .map_or("-".to_string(), |k| k.missing_hours.to_string());
        let kinds: Vec<String> =
            region.kinds.iter().map(|k| format!("{} {}/{}", k.kind, k.rows, k.missing_hours)).collect();
        println!("{:<20} {:<17} {:>9} {:>8}  {}", region.region, time, mape, demand_missing, kinds.join(", "));
        for kind in region.kinds.iter().filter(|k| !k.gaps.is_empty()) {
            println!("{:<20} {}", "", gap_line(kind));
        }
    }
    Ok(())
}

/// `D: 3 gaps, 12 h; longest 2024-01-31T20:00Z – 2024-02-01T04:00Z (9 h); first …`.
fn gap_line(kind: &KindCoverage) -> String {
    let range = |gap: &Gap| {
        let time = |t: chrono::DateTime<chrono::Utc>| t.format(crate::time::FORMAT_MINUTE).to_string();
        if gap.first == gap.last {
            format!("{} (1 h)", time(gap.first))
        } else {
            format!("{} – {} ({} h)", time(gap.first), time(gap.last), gap.hours)
        }
    };
    let hours: i64 = kind.gaps.iter().map(|gap| gap.hours).sum();
    let count = kind.gaps.len();
    let mut line = format!("{}: {count} gap{}, {hours} h", kind.kind, if count == 1 { "" } else { "s" });
    if let Some(longest) = &kind.longest_gap {
        line.push_str(&format!("; longest {}", range(longest)));
    }
    if count > 1 {
        let first: Vec<String> = kind.gaps.iter().take(SHOWN_GAPS).map(range).collect();
        line.push_str(&format!("; first {}", first.join(", ")));
        if count > SHOWN_GAPS {
            line.push_str(&format!(", … {} more", count - SHOWN_GAPS));
        }
    }
    line
}

/// `SOURCE:REGION:KIND`; the region may hold colons (source and kind may not).
pub(crate) fn parse_series(text: &str) -> Result<SeriesId, BadInput> {
    let bad = || {
        BadInput(format!("series `{text}` is not SOURCE:REGION:KIND, such as eia:CISO:D or `caiso:CA ISO-TAC:ACTUAL`"))
    };
    let (source, rest) = text.split_once(':').ok_or_else(bad)?;
    let (region, kind) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (source, region, kind) = (source.trim(), region.trim(), kind.trim());
    if source.is_empty() || region.is_empty() || kind.is_empty() {
        return Err(bad());
    }
    Ok(SeriesId::new(source.to_ascii_lowercase(), region, kind))
}

/// One hour where the series disagree by more than the threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Disagreement {
    /// Interval end, UTC.
    pub timestamp: String,
    pub first: f64,
    pub second: f64,
    /// `second − first`.
    pub difference: f64,
    /// `|second − first| / |first|`, percent (absent where `first` is 0).
    pub percent: Option<f64>,
}

/// How two series agree over the hours both hold a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Comparison {
    pub first: String,
    pub second: String,
    pub first_rows: usize,
    pub second_rows: usize,
    pub overlap_hours: usize,
    /// Mean of `|second − first|` (MW); `None` without overlap.
    pub mean_absolute_difference: Option<f64>,
    /// Mean of `second − first` (MW): positive when the second reads higher.
    pub mean_difference: Option<f64>,
    /// Mean of `|second − first| / |first|`, percent, over overlap hours where `first` ≠ 0.
    pub mape_percent: Option<f64>,
    pub threshold_percent: f64,
    pub disagreeing_hours: usize,
    pub disagreements: Vec<Disagreement>,
}

/// Compare `second` against `first` hour by hour (both sorted by timestamp).
pub(crate) fn compare_rows(first: &SeriesRows, second: &SeriesRows, threshold: f64) -> Comparison {
    let (mut i, mut j) = (0, 0);
    let (mut n, mut abs_sum, mut sum, mut pct_sum, mut pct_n) = (0usize, 0.0, 0.0, 0.0, 0usize);
    let mut disagreements = Vec::new();
    while i < first.len() && j < second.len() {
        let (a_t, b_t) = (first.timestamps[i], second.timestamps[j]);
        if a_t < b_t {
            i += 1;
            continue;
        }
        if b_t < a_t {
            j += 1;
            continue;
        }
        if let (Some(a), Some(b)) = (first.values[i], second.values[j]) {
            let difference = b - a;
            n += 1;
            abs_sum += difference.abs();
            sum += difference;
            let percent = (a != 0.0).then(|| difference.abs() / a.abs() * 100.0);
            if let Some(p) = percent {
                pct_sum += p;
                pct_n += 1;
            }
            if percent.is_none_or(|p| p > threshold) && difference != 0.0 {
                disagreements.push(Disagreement {
                    timestamp: crate::time::format_minute(a_t),
                    first: a,
                    second: b,
                    difference,
                    percent,
                });
            }
        }
        i += 1;
        j += 1;
    }
    Comparison {
        first: first.id.to_string(),
        second: second.id.to_string(),
        first_rows: first.len(),
        second_rows: second.len(),
        overlap_hours: n,
        mean_absolute_difference: (n > 0).then(|| abs_sum / n as f64),
        mean_difference: (n > 0).then(|| sum / n as f64),
        mape_percent: (pct_n > 0).then(|| pct_sum / pct_n as f64),
        threshold_percent: threshold,
        disagreeing_hours: disagreements.len(),
        disagreements,
    }
}

fn compare(context: &Context, first: &str, second: &str, threshold: f64) -> Result<()> {
    if !threshold.is_finite() || threshold < 0.0 {
        return Err(BadInput(format!("--threshold must be a percentage of 0 or more (got {threshold})")).into());
    }
    let ids = [parse_series(first)?, parse_series(second)?];
    let mut rows = Vec::with_capacity(2);
    for id in &ids {
        if !context.store.has_series(id) {
            let known: Vec<String> =
                context.store.list_series().unwrap_or_default().iter().map(ToString::to_string).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(BadInput(format!(
                "store `{}` holds no series `{id}` (it holds: {known})",
                context.store.root().display()
            ))
            .into());
        }
        rows.push(context.store.read(id, None).with_context(|| format!("cannot read `{id}`"))?);
    }
    let comparison = compare_rows(&rows[0], &rows[1], threshold);
    if context.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
        return Ok(());
    }
    let number = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{unit}"));
    println!(
        "{} ({} rows) against {} ({} rows)",
        comparison.second, comparison.second_rows, comparison.first, comparison.first_rows
    );
    println!("  overlap hours            {}", comparison.overlap_hours);
    println!("  mean absolute difference {}", number(comparison.mean_absolute_difference, " MW"));
    println!("  mean difference          {}", number(comparison.mean_difference, " MW"));
    println!("  MAPE                     {}", number(comparison.mape_percent, " %"));
    println!("  hours over {:.2} %        {}", comparison.threshold_percent, comparison.disagreeing_hours);
    if !comparison.disagreements.is_empty() {
        println!("  {:<17} {:>12} {:>12} {:>12} {:>8}", "hour", "first", "second", "difference", "%");
        for d in comparison.disagreements.iter().take(SHOWN_HOURS) {
            println!(
                "  {:<17} {:>12.2} {:>12.2} {:>12.2} {:>8}",
                d.timestamp,
                d.first,
                d.second,
                d.difference,
                d.percent.map_or("-".to_string(), |p| format!("{p:.2}"))
            );
        }
        if comparison.disagreements.len() > SHOWN_HOURS {
            println!("  … {} more (--json lists them all)", comparison.disagreements.len() - SHOWN_HOURS);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HOUR_US;

    fn rows(source: &str, start_hour: i64, values: &[Option<f64>]) -> SeriesRows {
        let mut series = SeriesRows::new(SeriesId::new(source, "R", "K"));
        for (k, v) in values.iter().enumerate() {
            series.timestamps.push((start_hour + k as i64) * HOUR_US);
            series.values.push(*v);
        }
        series
    }

    #[test]
    fn series_names_split_at_the_first_and_last_colon() {
        assert_eq!(parse_series("caiso:CA ISO-TAC:ACTUAL").unwrap(), SeriesId::new("caiso", "CA ISO-TAC", "ACTUAL"));
        assert_eq!(parse_series("EIA:a:b:D").unwrap(), SeriesId::new("eia", "a:b", "D"));
        assert!(parse_series("eia:CISO").is_err());
        assert!(parse_series("eia::D").is_err());
    }

    #[test]
    fn compares_over_the_hours_both_hold() {
        let first = rows("a", 10, &[Some(100.0), Some(200.0), None, Some(400.0), Some(0.0)]);
        let second = rows("b", 11, &[Some(210.0), Some(300.0), Some(404.0), Some(5.0), Some(9.0)]);
        let c = compare_rows(&first, &second, 4.0);
        // hours 11 (200→210), 13 (400→404) and 14 (0→5): 12 has a null
        assert_eq!(c.overlap_hours, 3);
        assert!((c.mean_absolute_difference.unwrap() - (10.0 + 4.0 + 5.0) / 3.0).abs() < 1e-9);
        assert!((c.mape_percent.unwrap() - (5.0 + 1.0) / 2.0).abs() < 1e-9);
        let hours: Vec<_> = c.disagreements.iter().map(|d| (d.first, d.second)).collect();
        assert_eq!(hours, vec![(200.0, 210.0), (0.0, 5.0)]);
        assert_eq!(compare_rows(&first, &rows("c", 100, &[Some(1.0)]), 5.0).mape_percent, None);
    }
}
