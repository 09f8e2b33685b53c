//! Ingestion: sources produce [`Batch`]es for a [`DateRange`]; the [`orchestrator`] plans
//! chunks, runs them with bounded concurrency, skips what the ledger holds and writes through
//! the [`store`].
//!
//! # Layout
//! - [`synthetic`]: the offline, deterministic default source.
//! - [`file`]: a user's CSV or Parquet file.
//! - [`eia`]: the EIA API v2 hourly grid monitor (EIA-930).
//! - [`caiso`]: CAISO OASIS system and TAC-area load, actual and forecast.
//! - [`openmeteo`]: Open-Meteo weather (temperature, dew point, solar radiation) as weighted
//!   means over a region's population centres: observed, as issued and the live forecast.
//! - [`http`]: the one HTTP client of the network sources: rate limiter, retries, redaction.
//! - [`store`]: the hive-partitioned Parquet store and its completed-chunk ledger.
//! - [`orchestrator`]: chunk plan, concurrency, resume, retries and the collection summary.
pub mod caiso;
pub mod eia;
pub mod file;
pub mod http;
pub mod openmeteo;
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
pub use openmeteo::{OpenmeteoKind, OpenmeteoSource};
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
    Openmeteo,
}

/// Hourly demand (load), the kind a model forecasts on every source but CAISO.
pub const KIND_DEMAND: &str = "D";
/// Air temperature, °C: the exogenous series a model uses where the store holds it.
pub const KIND_TEMP: &str = "TEMP";

/// The kind of an as-issued forecast of `base`: `{BASE}_D{days}`, the value forecast `days`
/// days before its hour (`TEMP_D1`), as the synthetic and Open-Meteo sources store them.
pub fn issued_kind(base: &str, days: usize) -> String {
    format!("{base}_D{days}")
}

/// The base kind and lead in days of an as-issued kind (`TEMP_D2` → (`TEMP`, 2)).
pub fn parse_issued_kind(kind: &str) -> Option<(&str, usize)> {
    let (base, days) = kind.rsplit_once("_D")?;
    let days: usize = days.parse().ok().filter(|d| *d >= 1)?;
    (!base.is_empty()).then_some((base, days))
}

/// Whether a stored kind is a forecast published ahead of the hours it covers, so that a model
/// may see it at horizon positions: EIA's day-ahead demand `DF`, CAISO's runs `DAM`, `2DA`,
/// `7DA` and the kinds derived from or named after them (`NET_DAM`, `WIND_DAM`, `SOLAR_DAM`),
/// live weather forecasts (`TEMP_FCST`) and as-issued forecasts (`TEMP_D1`). Every other kind
/// (actuals such as `D`, `NG`, `TI`, `ID`, `ACTUAL`, `NET_ACTUAL`, fuel mix, kinds this program
/// does not know) is observed: known only up to the forecast origin.
pub fn is_known_ahead(kind: &str) -> bool {
    const RUNS: [&str; 4] = ["DF", "DAM", "2DA", "7DA"];
    const SUFFIXES: [&str; 4] = ["_DAM", "_2DA", "_7DA", "_FCST"];
    RUNS.contains(&kind) || SUFFIXES.iter().any(|suffix| kind.ends_with(suffix)) || parse_issued_kind(kind).is_some()
}

/// The facts of each source that commands ask for: its name, default region, load kind,
/// operator-forecast kind and the kinds it offers. Every command asks here; no command spells
/// a source's region or kind itself.
impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Synthetic => "synthetic",
            SourceKind::Eia => "eia",
            SourceKind::Caiso => "caiso",
            SourceKind::File => "file",
            SourceKind::Openmeteo => "openmeteo",
        }
    }

    /// The region a command uses without `--region`: `SYN1` (synthetic), `CA ISO-TAC` (the
    /// CAISO system total). `None` where the user must name one (EIA respondents) or where it
    /// comes from the imported file's name ([`file::default_region`]).
    pub fn default_region(self) -> Option<&'static str> {
        match self {
            SourceKind::Synthetic => Some(synthetic::DEFAULT_REGION),
            SourceKind::Caiso => Some(caiso::SYSTEM_AREA),
            SourceKind::Eia | SourceKind::File | SourceKind::Openmeteo => None,
        }
    }

    /// What to tell a user who gave no `--region` where there is no default.
    pub fn region_hint(self) -> &'static str {
        match self {
            SourceKind::Eia => {
                "--source eia needs --region CODE, repeatable: an EIA respondent such as CISO, ERCO, PJM, MISO or US48"
            }
            SourceKind::File => "--source file needs --region CODE: the region the file is (or was) imported as",
            SourceKind::Openmeteo => {
                "--source openmeteo needs --region CODE, repeatable: a region of the built-in table (ERCO, CISO, PJM, \
                 MISO, NYIS, ISNE, SWPP, BPAT, FPL, SOCO, TVA, DUK, PACE, AZPS) or one of `[weather.points.CODE]` in \
                 energy.toml"
            }
            SourceKind::Synthetic | SourceKind::Caiso => "give --region CODE",
        }
    }

    /// The kind holding the load a model forecasts: `ACTUAL` for CAISO, `D` elsewhere (a file's
    /// value column is stored as `D` unless `--kind` says otherwise); `None` for a source
    /// without load (Open-Meteo weather).
    pub fn load_kind(self) -> Option<&'static str> {
        match self {
            SourceKind::Caiso => Some(CaisoKind::Actual.series_kind()),
            SourceKind::Synthetic | SourceKind::Eia | SourceKind::File => Some(KIND_DEMAND),
            SourceKind::Openmeteo => None,
        }
    }

    /// [`Self::load_kind`], or an error (bad input) for a command that needs load from a source
    /// that has none.
    pub fn require_load_kind(self) -> Result<&'static str, IngestError> {
        self.load_kind().ok_or_else(|| {
            IngestError::InvalidRequest(format!(
                "--source {self} holds weather, not load: give a load source (synthetic, eia, caiso or file) to \
                 this command; `energy collect --source {self}` stores the weather series"
            ))
        })
    }

    /// The kind holding the operator's own day-ahead forecast of the load, scored beside the
    /// model where the store holds it: EIA's `DF`, CAISO's `DAM`. A file has none by default
    /// (`--operator-kind` names one, e.g. the `DF` column of an EIA-930 series file).
    pub fn operator_forecast_kind(self) -> Option<&'static str> {
        match self {
            SourceKind::Eia => Some(eia::KIND_DAY_AHEAD),
            SourceKind::Caiso => Some(CaisoKind::Dam.series_kind()),
            SourceKind::Synthetic | SourceKind::File | SourceKind::Openmeteo => None,
        }
    }

    /// The kinds the source offers, as the help text names them.
    pub fn kinds(self) -> &'static str {
        match self {
            SourceKind::Synthetic => "D, TEMP, TEMP_D1, TEMP_D2",
            SourceKind::Eia => "D, DF, NG, TI, fuel:CODE",
            SourceKind::Caiso => "ACTUAL, DAM, 2DA, 7DA, RTPD, RTD",
            SourceKind::File => "any: the value column is stored as --kind (default D), other numeric columns by name",
            SourceKind::Openmeteo => {
                "TEMP, DEWPOINT, GHI (observed), TEMP_D1..TEMP_D7 (as issued N days before), TEMP_FCST (live forecast)"
            }
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

    /// Check the three names with [`check_name`]: the store refuses a series that fails.
    pub fn check(&self) -> Result<(), IngestError> {
        check_name("source", &self.source)?;
        check_name("region", &self.region)?;
        check_name("kind", &self.kind)
    }
}

/// Longest source, region or kind name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Check a source, region or kind name (`what` says which) before it names a folder of the
/// store: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, spaces, `.`, `_` and `-`, starting with
/// a letter, digit or `_` and not ending with a space. That admits every real name (`CISO`,
/// `US48`, `CA ISO-TAC`, `PGE-TAC`, `SYN1`, `D`, `TEMP`, `FUEL_SUN`, `2DA`) and refuses `.`,
/// `..`, path separators, absolute paths, NUL and other control characters. The error
/// ([`IngestError::InvalidRequest`], bad input) names the value and what is wrong with it.
pub fn check_name(what: &str, value: &str) -> Result<(), IngestError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-');
    let why = if value.is_empty() {
        "it is empty".to_string()
    } else if value.len() > MAX_NAME_LEN {
        format!("it is {} bytes long", value.len())
    } else if value.contains(['/', '\\']) {
        "it holds a path separator".to_string()
    } else if value.chars().any(char::is_control) {
        "it holds a control character".to_string()
    } else if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        format!("it holds `{c}`")
    } else if !value.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        format!("it starts with `{}`", value.chars().next().unwrap_or(' '))
    } else if value.ends_with(' ') {
        "it ends with a space".to_string()
    } else {
        return Ok(());
    };
    let shown: String = value.escape_debug().take(80).collect();
    let more = if value.escape_debug().nth(80).is_some() { "…" } else { "" };
    let examples = match what {
        "source" => "eia, caiso or synthetic",
        "kind" => "D, TEMP, ACTUAL or FUEL_SUN",
        _ => "CISO, PGE-TAC or `CA ISO-TAC`",
    };
    Err(IngestError::InvalidRequest(format!(
        "invalid {what} `{shown}{more}`: {why}; a {what} is 1 to {MAX_NAME_LEN} ASCII letters, digits, spaces, \
         `.`, `_` or `-`, starting with a letter, digit or `_`, such as {examples}"
    )))
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
                timestamp: crate::time::format_second(w[0]),
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
    /// A symbolic link inside the store: the store follows none, so it never reads or writes
    /// outside its root.
    #[error(
        "`{path}` is a symbolic link (to `{target}`): the store follows no link out of its root; remove the link, or give its target as the store"
    )]
    StoreLink { path: PathBuf, target: PathBuf },
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
    /// An API's hourly or daily request limit is spent: not retried; later requests of the run
    /// are not sent.
    #[error("`{url}` answered HTTP 429: {message}")]
    LimitReached { url: String, message: String },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecasts_are_known_ahead_and_actuals_are_observed() {
        for kind in ["DF", "DAM", "2DA", "7DA", "NET_DAM", "WIND_DAM", "SOLAR_DAM", "TEMP_FCST", "TEMP_D1"] {
            assert!(is_known_ahead(kind), "{kind}");
        }
        for kind in ["D", "NG", "TI", "ID", "ACTUAL", "NET_ACTUAL", "WIND_ACTUAL", "FUEL_SUN", "TEMP", "RTM", "price"] {
            assert!(!is_known_ahead(kind), "{kind}");
        }
    }

    #[test]
    fn real_names_pass_the_check() {
        for name in ["CA ISO-TAC", "PGE-TAC", "SDGE-TAC", "CISO", "US48", "SYN1", "D", "DF", "TEMP", "FUEL_SUN", "2DA"]
        {
            check_name("region", name).unwrap();
        }
        for source in
            [SourceKind::Synthetic, SourceKind::Eia, SourceKind::Caiso, SourceKind::File, SourceKind::Openmeteo]
        {
            check_name("source", source.as_str()).unwrap();
        }
        SeriesId::new("caiso", "CA ISO-TAC", "ACTUAL").check().unwrap();
        check_name("region", &"A".repeat(MAX_NAME_LEN)).unwrap();
        check_name("region", "_HIDDEN").unwrap();
    }

    #[test]
    fn names_that_could_leave_the_store_are_refused_naming_the_value() {
        let long = "A".repeat(MAX_NAME_LEN + 1);
        let cases = [
            ("../x", "path separator"),
            ("..", "starts with `.`"),
            (".", "starts with `.`"),
            ("/etc", "path separator"),
            ("a\\b", "path separator"),
            ("C:\\x", "path separator"),
            ("a\0b", "control character"),
            ("a\nb", "control character"),
            ("", "empty"),
            (long.as_str(), "65 bytes long"),
            ("SYN;1", "holds `;`"),
            ("ÄÖ", "holds `Ä`"),
            (" SYN1", "starts with ` `"),
            ("SYN1 ", "ends with a space"),
            ("-x", "starts with `-`"),
            ("a:b", "holds `:`"),
        ];
        for (value, why) in cases {
            let error = check_name("region", value).unwrap_err();
            let text = error.to_string();
            assert!(error.is_bad_input(), "{text}");
            assert!(text.contains(why), "{value:?}: {text}");
            assert!(text.starts_with("invalid region `"), "{text}");
            assert_eq!(text.lines().count(), 1, "one line: {text}");
        }
        let text = check_name("kind", "a\0b").unwrap_err().to_string();
        assert!(text.contains("`a\\0b`") && text.contains("FUEL_SUN"), "{text}");
        let error = SeriesId::new("file", "HOME", "../x").check().unwrap_err().to_string();
        assert!(error.starts_with("invalid kind `../x`"), "{error}");
    }
}
