//! indicatif progress bars behind the library's `Reporter` trait: hidden under `--quiet` and
//! when stderr is not a terminal.
use crate::report::Reporter;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub(crate) struct BarReporter {
    bar: ProgressBar,
    rows: AtomicU64,
    started: Mutex<Instant>,
    unit: &'static str,
}

impl BarReporter {
    pub(crate) fn new(hidden: bool, unit: &'static str) -> Self {
        let target = if hidden { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Self { bar, rows: AtomicU64::new(0), started: Mutex::new(Instant::now()), unit }
    }
}

impl Reporter for BarReporter {
    fn start(&self, label: &str, total: u64) {
        self.bar.set_prefix(label.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.rows.store(0, Ordering::Relaxed);
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn advance(&self, units: u64, rows: u64) {
        let rows = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let seconds = self.started.lock().unwrap_or_else(|e| e.into_inner()).elapsed().as_secs_f64().max(1e-9);
        self.bar.set_message(format!("{rows} {} ({:.0}/s)", self.unit, rows as f64 / seconds));
        self.bar.inc(units);
    }

    fn message(&self, text: &str) {
        self.bar.println(text);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
