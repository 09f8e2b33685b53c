//! `energy status`
use super::Context;
use anyhow::{Context as _, Result};

pub(crate) fn run(context: &Context) -> Result<()> {
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
        t.map_or("-".to_string(), |t| t.format("%Y-%m-%dT%H:%MZ").to_string())
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
