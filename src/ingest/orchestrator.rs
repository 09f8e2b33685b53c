//! The orchestrator: split a range into chunks by the source's `chunk_len` ([`plan`]: on a
//! fixed grid, so repeated requests produce the same chunks), skip chunks the ledger already holds, fetch
//! the rest with bounded concurrency, retry failed chunks, write each finished chunk through
//! one writer thread, and summarise. A failed chunk never stops the others.
use super::store::{LedgerEntry, LedgerWriter, Store, checksum};
use super::{Batch, IngestError, SeriesRows, Source};
use crate::report::Reporter;
use crate::time::DateRange;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use std::sync::mpsc;
use std::time::Instant;

/// What happened to one chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkOutcome {
    pub range: DateRange,
    /// Already in the ledger: not fetched.
    pub skipped: bool,
    pub rows: usize,
    pub requests: u32,
    pub retries: u32,
    /// Fetch attempts of the whole chunk.
    pub attempts: u32,
    pub duration_s: f64,
    pub rows_per_s: f64,
    pub error: Option<String>,
}

/// The summary of a collection.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionResult {
    pub source: String,
    pub range: DateRange,
    pub series: Vec<String>,
    pub chunks: Vec<ChunkOutcome>,
    pub rows: usize,
    pub fetched_chunks: usize,
    pub skipped_chunks: usize,
    pub failed_chunks: usize,
    pub requests: u32,
    pub retries: u32,
    pub files_written: usize,
    pub duration_s: f64,
    pub rows_per_s: f64,
}

impl CollectionResult {
    pub fn succeeded(&self) -> bool {
        self.failed_chunks == 0
    }

    /// One summary of two collections of a command from the same source (Open-Meteo's
    /// observed range and forecast window): chunks, series and counts added up, the range
    /// spanning both.
    pub fn merge(mut self, other: CollectionResult) -> CollectionResult {
        self.range =
            DateRange { start: self.range.start.min(other.range.start), end: self.range.end.max(other.range.end) };
        self.series.extend(other.series);
        self.chunks.extend(other.chunks);
        self.rows += other.rows;
        self.fetched_chunks += other.fetched_chunks;
        self.skipped_chunks += other.skipped_chunks;
        self.failed_chunks += other.failed_chunks;
        self.requests += other.requests;
        self.retries += other.retries;
        self.files_written += other.files_written;
        self.duration_s += other.duration_s;
        self.rows_per_s = if self.duration_s > 0.0 { self.rows as f64 / self.duration_s } else { 0.0 };
        self
    }
}

/// Runs collections into one store.
pub struct Orchestrator<'a> {
    pub store: &'a Store,
    pub concurrency: usize,
    pub chunk_retries: u32,
    pub reporter: &'a dyn Reporter,
    /// "Now", for deciding which chunks are settled (tests pin it).
    pub now: DateTime<Utc>,
}

struct Written {
    index: usize,
    rows: usize,
    files: usize,
    error: Option<String>,
}

impl Orchestrator<'_> {
    /// Collect `range` from `source` into the store. The caller holds the store lock.
    pub async fn collect<S: Source>(&self, source: &S, range: DateRange) -> Result<CollectionResult, IngestError> {
        let started = Instant::now();
        // the ledger is read once: its index answers for every chunk, and the writer thread
        // appends to it
        let ledger = self.store.read_ledger()?;
        let index = ledger.index();
        let series = source.series();
        let params = source.params();
        let mut outcomes: Vec<ChunkOutcome> = plan(range, source.chunk_len())
            .into_iter()
            .map(|chunk| ChunkOutcome {
                skipped: !series.is_empty() && series.iter().all(|id| index.covered(id, &params, &chunk)),
                range: chunk,
                rows: 0,
                requests: 0,
                retries: 0,
                attempts: 0,
                duration_s: 0.0,
                rows_per_s: 0.0,
                error: None,
            })
            .collect();
        let todo: Vec<usize> = (0..outcomes.len()).filter(|&i| !outcomes[i].skipped).collect();
        self.reporter.start(&format!("collect {}", source.name()), outcomes.len() as u64);
        self.reporter.advance((outcomes.len() - todo.len()) as u64, 0);

        // One writer thread: Parquet encoding and fsync never run on an async worker, and
        // writes to the store are serialised.
        let (to_writer, inbox) = mpsc::channel::<(usize, DateRange, Vec<SeriesRows>)>();
        let (written_tx, written_rx) = mpsc::channel::<Written>();
        let writer_store = self.store.clone();
        let writer_params = params.clone();
        let settle = source.settle_time();
        let now = self.now;
        let writer = std::thread::spawn(move || {
            // opened at the first chunk: a collection that fetches nothing writes nothing
            let mut ledger = Some(ledger);
            let mut ledger_writer: Option<LedgerWriter> = None;
            for (index, chunk, rows) in inbox {
                let result = writer_store.write_range(&rows, chunk).and_then(|stats| {
                    let entries: Vec<LedgerEntry> = rows
                        .iter()
                        .map(|r| LedgerEntry {
                            series: r.id.clone(),
                            params: writer_params.clone(),
                            range: chunk,
                            rows: r.timestamps.iter().filter(|t| chunk.holds_us(**t)).count(),
                            checksum: checksum(r, &chunk),
                            fetched_at: now,
                            settled: chunk.end + settle <= now,
                        })
                        .collect();
                    if ledger_writer.is_none() {
                        let read = ledger.take().map_or_else(|| writer_store.read_ledger(), Ok)?;
                        ledger_writer = Some(writer_store.ledger_writer(read)?);
                    }
                    if let Some(ledger_writer) = &mut ledger_writer {
                        ledger_writer.append(&entries)?;
                    }
                    Ok(stats)
                });
                let message = match result {
                    Ok(stats) => Written { index, rows: stats.rows, files: stats.files, error: None },
                    Err(e) => Written { index, rows: 0, files: 0, error: Some(format!("{:#}", anyhow::Error::new(e))) },
                };
                if written_tx.send(message).is_err() {
                    break;
                }
            }
        });

        let ranges: Vec<DateRange> = outcomes.iter().map(|o| o.range).collect();
        let fetches = futures::stream::iter(todo.iter().map(|&index| {
            let chunk = ranges[index];
            async move {
                let begun = Instant::now();
                let mut attempts = 0;
                let result = loop {
                    attempts += 1;
                    match source.fetch(chunk).await {
                        Ok(batch) => break Ok(batch),
                        Err(e) if e.is_transient() && attempts <= self.chunk_retries => {
                            tracing::warn!(source = source.name(), %chunk, attempts, error = %e, "retrying chunk");
                            self.reporter.message(&format!("retrying chunk {chunk}: {e}"));
                        }
                        Err(e) => break Err(e),
                    }
                };
                (index, attempts, begun.elapsed().as_secs_f64(), result)
            }
        }))
        .buffer_unordered(self.concurrency.max(1));
        futures::pin_mut!(fetches);
        let mut pending_writes = 0;
        let mut files_written = 0;
        while let Some((index, attempts, seconds, result)) = fetches.next().await {
            let outcome = &mut outcomes[index];
            outcome.attempts = attempts;
            outcome.duration_s = seconds;
            match result {
                Ok(Batch { series: mut rows, requests, retries }) => {
                    outcome.requests = requests;
                    outcome.retries = retries;
                    for id in missing_series(&rows, &series) {
                        rows.push(SeriesRows::new(id));
                    }
                    if to_writer.send((index, outcome.range, rows)).is_ok() {
                        pending_writes += 1;
                    }
                }
                Err(e) => {
                    tracing::error!(source = source.name(), chunk = %outcome.range, error = %e, "chunk failed");
                    outcome.error = Some(format!("{:#}", anyhow::Error::new(e)));
                    self.reporter.advance(1, 0);
                }
            }
            while let Ok(done) = written_rx.try_recv() {
                pending_writes -= 1;
                files_written += self.finish_chunk(&mut outcomes[done.index], done);
            }
        }
        drop(to_writer);
        for done in written_rx.iter().take(pending_writes) {
            files_written += self.finish_chunk(&mut outcomes[done.index], done);
        }
        let _ = writer.join();
        self.reporter.finish();

        let duration_s = started.elapsed().as_secs_f64();
        let rows = outcomes.iter().map(|o| o.rows).sum::<usize>();
        Ok(CollectionResult {
            source: source.name().to_string(),
            range,
            series: series.iter().map(ToString::to_string).collect(),
            rows,
            fetched_chunks: outcomes.iter().filter(|o| !o.skipped && o.error.is_none()).count(),
            skipped_chunks: outcomes.iter().filter(|o| o.skipped).count(),
            failed_chunks: outcomes.iter().filter(|o| o.error.is_some()).count(),
            requests: outcomes.iter().map(|o| o.requests).sum(),
            retries: outcomes.iter().map(|o| o.retries).sum(),
            files_written,
            duration_s,
            rows_per_s: if duration_s > 0.0 { rows as f64 / duration_s } else { 0.0 },
            chunks: outcomes,
        })
    }

    fn finish_chunk(&self, outcome: &mut ChunkOutcome, done: Written) -> usize {
        outcome.rows = done.rows;
        outcome.rows_per_s = if outcome.duration_s > 0.0 { done.rows as f64 / outcome.duration_s } else { 0.0 };
        if let Some(error) = done.error {
            tracing::error!(chunk = %outcome.range, %error, "writing chunk failed");
            outcome.error = Some(error);
        }
        self.reporter.advance(1, done.rows as u64);
        done.files
    }
}

/// The chunks of `range` for a source whose requests may cover `chunk_len`: calendar months
/// (the store's partitions, so each chunk writes one file per series) when a request may cover
/// a whole month, else pieces of `chunk_len` on a fixed grid from the Unix epoch. Either way,
/// repeated requests produce the same chunk boundaries and the ledger recognises them.
pub fn plan(range: DateRange, chunk_len: chrono::TimeDelta) -> Vec<DateRange> {
    if chunk_len >= chrono::TimeDelta::days(31) { range.month_chunks() } else { range.chunks(chunk_len) }
}

/// Series the source promises that a batch left out (they are written as empty, so the
/// chunk's range is replaced for them too).
fn missing_series(batch: &[SeriesRows], promised: &[super::SeriesId]) -> Vec<super::SeriesId> {
    promised.iter().filter(|id| !batch.iter().any(|r| &r.id == *id)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyntheticConfig;
    use crate::ingest::SyntheticSource;
    use crate::report::NoReporter;
    use chrono::{TimeDelta, TimeZone};

    fn range(days: i64) -> DateRange {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        DateRange::new(start, start + TimeDelta::days(days)).unwrap()
    }

    async fn collect(
        store: &Store,
        source: &SyntheticSource,
        range: DateRange,
        concurrency: usize,
    ) -> CollectionResult {
        let orchestrator = Orchestrator {
            store,
            concurrency,
            chunk_retries: 1,
            reporter: &NoReporter,
            now: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
        };
        orchestrator.collect(source, range).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn second_collect_does_no_work_and_overlap_does_not_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock().unwrap();
        let source = SyntheticSource::new(&["SYN1".into(), "SYN2".into()], SyntheticConfig::default());
        let first = collect(&store, &source, range(65), 3).await;
        assert!(first.succeeded());
        // two regions × (load, temperature and its two as-issued forecasts)
        assert_eq!(first.rows, 65 * 24 * 2 * 4);
        assert_eq!(first.skipped_chunks, 0);
        let again = collect(&store, &source, range(65), 3).await;
        assert_eq!(again.fetched_chunks, 0);
        assert_eq!(again.rows, 0);
        assert_eq!(again.files_written, 0);
        // overlapping, longer range: only the new chunks are fetched
        let longer = collect(&store, &source, range(100), 2).await;
        assert!(longer.skipped_chunks >= 1);
        for status in store.status().unwrap() {
            assert_eq!(status.rows, 100 * 24, "{:?}", status.series);
            assert_eq!(status.missing_hours, 0);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn same_rows_whatever_the_concurrency() {
        let source = SyntheticSource::new(&["SYN1".into()], SyntheticConfig::default());
        let mut stored = Vec::new();
        for concurrency in [1, 4] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::new(dir.path());
            collect(&store, &source, range(70), concurrency).await;
            stored.push(store.read(&source.series()[0], None).unwrap());
        }
        assert_eq!(stored[0], stored[1]);
    }
}
