//! Ingestion: sources produce [`Batch`]es for a [`DateRange`]; the [`orchestrator`] plans
//! chunks, runs them with bounded concurrency, skips what the ledger holds and writes through
//! the [`store`].
//!
//! # Layout
//! - [`synthetic`]: the offline, deterministic default source.
//! - [`file`]: a user's CSV or Parquet file.
//! - [`eia`]: the EIA API v2 hourly grid monitor (EIA-930).
//! - [`caiso`]: CAISO OASIS system and TAC-area load, actual and forecast.
//! - [`http`]: the one HTTP client of the network sources: rate limiter, retries, redaction.
//! - [`store`]: the hive-partitioned Parquet store and its completed-chunk ledger.
//! - [`orchestrator`]: chunk plan, concurrency, resume, retries and the collection summary.
pub mod caiso;
pub mod eia;
pub mod file;
pub mod http;
pub mod orchestrator;
pub mod store;
pub mod synthetic;

use crate::time::DateRange;
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use caiso::{CaisoKind, CaisoSource};
pub use eia::{EiaKind, EiaSource};
pub use file::FileSource;
pub use http::{HttpClient, RateLimits, RetryPolicy, Secret};
pub use orchestrator::{ChunkOutcome, CollectionResult, Orchestrator};
pub use store::Store;
pub use synthetic::SyntheticSource;

/// Column names of stored rows (in files; `source`, `region`, `kind`, `year`, `month` are the
/// hive partition keys of their folders).
pub const COL_TIMESTAMP: &str = "timestamp";
pub const COL_VALUE: &str = "value";

/// Which provider a series comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Synthetic,
    Eia,
    Caiso,
    File,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Synthetic => "synthetic",
            SourceKind::Eia => "eia",
            SourceKind::Caiso => "caiso",
            SourceKind::File => "file",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A series: `(source, region, kind)`, e.g. `(eia, ERCO, D)` or `(synthetic, SYN1, TEMP)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesId {
    pub source: String,
    pub region: String,
    pub kind: String,
}

impl SeriesId {
    pub fn new(source: impl Into<String>, region: impl Into<String>, kind: impl Into<String>) -> Self {
        Self { source: source.into(), region: region.into(), kind: kind.into() }
    }
}

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.source, self.region, self.kind)
    }
}

/// Hourly rows of one series: UTC interval-end timestamps (epoch µs, strictly increasing)
/// and values in MW (or °C for `TEMP`); `None` is a reported null.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRows {
    pub id: SeriesId,
    pub timestamps: Vec<i64>,
    pub values: Vec<Option<f64>>,
}

impl SeriesRows {
    pub fn new(id: SeriesId) -> Self {
        Self { id, timestamps: Vec::new(), values: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Sort by timestamp; a timestamp given twice is an error naming it.
    pub fn sort_and_check(&mut self) -> Result<(), IngestError> {
        if !self.timestamps.is_sorted() {
            let mut order: Vec<usize> = (0..self.len()).collect();
            order.sort_by_key(|&i| self.timestamps[i]);
            self.timestamps = order.iter().map(|&i| self.timestamps[i]).collect();
            self.values = order.iter().map(|&i| self.values[i]).collect();
        }
        if let Some(w) = self.timestamps.windows(2).find(|w| w[0] == w[1]) {
            return Err(IngestError::DuplicateTimestamp {
                series: self.id.to_string(),
                timestamp: crate::time::from_us(w[0]).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            });
        }
        Ok(())
    }
}

/// What one fetch returned: one entry per series it covers (possibly empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub series: Vec<SeriesRows>,
    /// HTTP requests made (0 for offline sources).
    pub requests: u32,
    /// Requests retried.
    pub retries: u32,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.series.iter().map(SeriesRows::len).sum()
    }
}

/// A provider of hourly series.
pub trait Source: Send + Sync {
    /// The provider's name, the `source=` partition of its series.
    fn name(&self) -> &'static str;
    /// Longest range one request may cover; the orchestrator splits ranges with it.
    fn chunk_len(&self) -> TimeDelta;
    /// The series a fetch returns (the ledger records each).
    fn series(&self) -> Vec<SeriesId>;
    /// What distinguishes this source's output beyond its series (a seed, defect settings):
    /// a chunk collected with other parameters is collected again.
    fn params(&self) -> String {
        String::new()
    }
    /// How long after an hour its data may still change: chunks ending later than this before
    /// the collection are fetched again next time.
    fn settle_time(&self) -> TimeDelta {
        TimeDelta::zero()
    }
    fn fetch(&self, range: DateRange) -> impl Future<Output = Result<Batch, IngestError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("duplicate timestamp {timestamp} in {series}")]
    DuplicateTimestamp { series: String, timestamp: String },
    #[error("cannot read `{path}`: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("store I/O failed on `{path}`")]
    StoreIo { path: PathBuf, source: std::io::Error },
    #[error("store file `{path}` is unreadable: {message}")]
    StoreData { path: PathBuf, message: String },
    #[error("store `{path}` is in use by {holder}")]
    StoreBusy { path: PathBuf, holder: String },
    #[error("{0}")]
    Source(String),
    /// No reply: connection refused or reset, timeout (`transient`), or a request that cannot
    /// be sent (not transient). The URL never holds a secret.
    #[error("request to `{url}` failed: {message}")]
    Network { url: String, message: String, transient: bool },
    /// A failed HTTP status; `message` is the API's own when it gave one.
    #[error("`{url}` answered HTTP {status}: {message}")]
    Http { url: String, status: u16, message: String, retry_after: Option<Duration> },
    /// A body that cannot be read (truncated, HTML instead of JSON) or that lacks rows it promised.
    #[error("incomplete or unreadable answer from `{url}`: {message}")]
    Body { url: String, message: String },
    /// A readable body that is not what the API documents.
    #[error("unexpected answer from `{url}`: {message}")]
    Format { url: String, message: String },
    /// An error the API reported in a successful reply.
    #[error("the API refused `{url}`: {message}")]
    Api { url: String, message: String },
    /// The API key is missing or refused; the message says how to set it.
    #[error("{message}")]
    ApiKey { message: String },
    /// A selection the source cannot ask for (a bad region code, kind or base URL).
    #[error("{0}")]
    InvalidRequest(String),
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
    /// An error code CAISO OASIS reported in a successful reply (a zip holding an XML report);
    /// 1015 ("submit again later") is transient.
    #[error("CAISO OASIS refused `{url}`: ERR_CODE {code}: {description}")]
    Oasis { url: String, code: u32, description: String },
}

impl IngestError {
    /// Worth another attempt later (network trouble), as opposed to a permanent failure.
    pub fn is_transient(&self) -> bool {
        match self {
            IngestError::Source(_) | IngestError::Body { .. } => true,
            IngestError::Network { transient, .. } => *transient,
            IngestError::Oasis { code, .. } => *code == caiso::ERR_TRY_LATER,
            // 408 request timeout, 429 too many requests, 5xx but 501 not implemented
            IngestError::Http { status, .. } => {
                matches!(status, 408 | 429) || (500..600).contains(status) && *status != 501
            }
            _ => false,
        }
    }

    /// How long the server asked to wait before another attempt (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Caused by what the user gave (a bad file), rather than by the run.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            IngestError::BadFile { .. }
                | IngestError::DuplicateTimestamp { .. }
                | IngestError::ApiKey { .. }
                | IngestError::InvalidRequest(_)
        )
    }
}
