//! The orchestrator: split a range into chunks by the source's `chunk_len` ([`plan`]: on a
//! fixed grid, so repeated requests produce the same chunks), skip chunks the ledger already holds, fetch
//! the rest with bounded concurrency, retry failed chunks, write each finished chunk through
//! one writer thread, and summarise. A failed chunk never stops the others.
//!
//! The store lock is held only while writing: fetching runs without it, and the writer takes
//! it ([`Store::write_lock`], waiting for another writer's write) around each chunk's
//! partition writes and ledger entries, which stay one atomic step. Several collections, of
//! the same series or others, may so run at once on one store: each write merges with what
//! the files hold at that moment, and the ledger writer reads the log again when another
//! process appended to it in between.
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
    /// Turns true to stop the collection (`serve` shutting down): no chunk is fetched after
    /// it, fetches under way are abandoned (their chunks are failed with [`STOPPED`]), and the
    /// chunks already fetched are written, each with its ledger entry.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The error of a chunk a stopped collection did not fetch.
pub const STOPPED: &str = "not collected: the collection was stopped";

/// Resolves once `stop` turns true; never without one, or once its sender is gone.
async fn stop_requested(stop: Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(mut stop) = stop
        && stop.wait_for(|stop| *stop).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await
}

struct Written {
    index: usize,
    rows: usize,
    files: usize,
    error: Option<String>,
}

impl Orchestrator<'_> {
    /// Collect `range` from `source` into the store. The caller must not hold the store lock:
    /// the collection takes it for each write.
    pub async fn collect<S: Source>(&self, source: &S, range: DateRange) -> Result<CollectionResult, IngestError> {
        let started = Instant::now();
        // the ledger is read once, without the lock: its index answers for every chunk (a chunk
        // another collection writes meanwhile is fetched and written again, which replaces it)
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
            // opened at the first chunk, under the lock: a collection that fetches nothing
            // writes nothing
            let mut ledger_writer: Option<LedgerWriter> = None;
            for (index, chunk, rows) in inbox {
                let result = writer_store.write_lock().and_then(|_lock| {
                    let stats = writer_store.write_range(&rows, chunk)?;
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
                        ledger_writer = Some(writer_store.ledger_writer(writer_store.read_ledger()?)?);
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
        let mut fetches = Box::pin(fetches);
        let stopped = stop_requested(self.stop.clone());
        futures::pin_mut!(stopped);
        let mut interrupted = false;
        let mut pending_writes = 0;
        let mut files_written = 0;
        loop {
            let next = tokio::select! {
                biased;
                () = &mut stopped => {
                    interrupted = true;
                    break;
                }
                next = fetches.next() => next,
            };
            let Some((index, attempts, seconds, result)) = next else { break };
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
        // fetches under way are abandoned; chunks fetched are written all the same
        drop(fetches);
        if interrupted {
            let abandoned: Vec<usize> = todo.iter().copied().filter(|&i| outcomes[i].attempts == 0).collect();
            tracing::warn!(
                source = source.name(),
                abandoned = abandoned.len(),
                "collection stopped: no chunk is fetched any more; the chunks fetched are written"
            );
            for index in abandoned {
                outcomes[index].error = Some(STOPPED.to_string());
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
            stop: None,
        };
        orchestrator.collect(source, range).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn second_collect_does_no_work_and_overlap_does_not_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
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

    /// Two collections at once on one store, one of SYN1 and one of SYN1 and SYN2 (the lock is
    /// taken only around each write): both succeed, and the store and its ledger are those of
    /// one collection alone.
    #[tokio::test(flavor = "multi_thread")]
    async fn collections_at_once_of_the_same_and_other_series_both_succeed() {
        let config = SyntheticConfig::default();
        let one = SyntheticSource::new(&["SYN1".into()], config.clone());
        let both = SyntheticSource::new(&["SYN1".into(), "SYN2".into()], config);
        let (dir, alone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store, clean) = (Store::new(dir.path()), Store::new(alone.path()));
        let (a, b) = tokio::join!(collect(&store, &one, range(100), 2), collect(&store, &both, range(100), 3));
        assert!(a.succeeded() && b.succeeded());
        assert_eq!(a.fetched_chunks + b.fetched_chunks, 4 + 4, "both fetched every chunk");
        collect(&clean, &both, range(100), 1).await;
        let series = clean.list_series().unwrap();
        assert_eq!(store.list_series().unwrap(), series);
        for id in &series {
            assert_eq!(store.read(id, None).unwrap(), clean.read(id, None).unwrap(), "{id}");
        }
        let ledger = store.ledger().unwrap();
        assert_eq!(ledger.len(), clean.ledger().unwrap().len());
        for entry in &ledger {
            let rows = store.read(&entry.series, None).unwrap();
            assert_eq!(checksum(&rows, &entry.range), entry.checksum, "{} {}", entry.series, entry.range);
        }
    }

    /// The synthetic source whose second request asks the collection to stop and never
    /// answers (a server too slow to wait for at shutdown).
    struct StopsAtTheSecondChunk {
        inner: SyntheticSource,
        requests: std::sync::atomic::AtomicUsize,
        stop: tokio::sync::watch::Sender<bool>,
    }

    impl Source for StopsAtTheSecondChunk {
        fn name(&self) -> &'static str {
            self.inner.name()
        }
        fn chunk_len(&self) -> chrono::TimeDelta {
            self.inner.chunk_len()
        }
        fn series(&self) -> Vec<crate::ingest::SeriesId> {
            self.inner.series()
        }
        fn params(&self) -> String {
            self.inner.params()
        }
        async fn fetch(&self, range: DateRange) -> Result<Batch, IngestError> {
            if self.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return self.inner.fetch(range).await;
            }
            self.stop.send_replace(true);
            std::future::pending().await
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_stopped_collection_writes_what_it_fetched_and_abandons_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let source = StopsAtTheSecondChunk {
            inner: SyntheticSource::new(&["SYN1".into()], SyntheticConfig::default()),
            requests: Default::default(),
            stop,
        };
        let orchestrator = Orchestrator {
            store: &store,
            concurrency: 1,
            chunk_retries: 0,
            reporter: &NoReporter,
            now: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
            stop: Some(stopped),
        };
        let result = orchestrator.collect(&source, range(100)).await.unwrap();
        assert_eq!(result.chunks.len(), 4);
        assert!(result.chunks[0].error.is_none());
        // January: the load, the temperature and its two as-issued forecasts
        let month = result.chunks[0].rows / 4;
        assert!(month >= 30 * 24, "{month} rows a series");
        assert!(result.chunks[1..].iter().all(|c| c.error.as_deref() == Some(STOPPED)), "{:?}", result.chunks);
        assert_eq!(result.failed_chunks, 3);
        // the chunk fetched is in the store and the ledger, and only it
        let ledger = store.ledger().unwrap();
        assert_eq!(ledger.len(), 4);
        assert!(ledger.iter().all(|e| e.range == result.chunks[0].range && e.rows == month));
        assert_eq!(store.read(&source.series()[0], None).unwrap().len(), month);
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
