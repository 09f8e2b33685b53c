//! How the library reports progress without touching the terminal: commands implement
//! [`Reporter`] with indicatif; tests and `--quiet` use [`NoReporter`].

/// Progress of one long task (a collection, an epoch, a backtest).
pub trait Reporter: Send + Sync {
    /// A task of `total` units begins (chunks, batches, days).
    fn start(&self, label: &str, total: u64);
    /// `units` more are done; `rows` is the amount of data they carried (for rates).
    fn advance(&self, units: u64, rows: u64);
    /// A one-line status under the bar (loss, the chunk being retried, …).
    fn message(&self, text: &str);
    /// The task is over.
    fn finish(&self);
}

/// Reports nothing.
pub struct NoReporter;

impl Reporter for NoReporter {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64, _: u64) {}
    fn message(&self, _: &str) {}
    fn finish(&self) {}
}
