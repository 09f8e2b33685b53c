//! The report of a run: its figures, the [`Machine`] and the [`Settings`], written to a
//! versioned JSON file, read back and compared figure by figure.
use super::{BenchError, BenchSize, Machine};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The UTC time in a report's file name: `20240131T130000Z`.
const FILE_TIME: &str = "%Y%m%dT%H%M%SZ";

/// One run's figures, with the machine and the settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub created: DateTime<Utc>,
    pub settings: Settings,
    pub machine: Machine,
    pub collection: CollectionFigures,
    pub features: FeatureFigures,
    pub model: ModelFigures,
    pub attention_memory: Vec<MemoryFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub size: BenchSize,
    /// `debug` or `release`: a debug build's figures are far lower.
    pub build: String,
    pub latency_ms: u64,
    /// The limits both the local server and the client keep to.
    pub requests_per_second: u32,
    pub requests_per_hour: u32,
    /// Chunks collected at once.
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionFigures {
    pub respondents: Vec<String>,
    pub kinds: Vec<String>,
    pub range: String,
    pub rows: usize,
    /// Requests the client sent, retries included.
    pub requests: u32,
    pub retries: u32,
    /// Requests the server received.
    pub server_requests: u64,
    /// Requests the server refused with 429 (the client keeps to the limits: normally 0).
    pub rejected_429: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub ceiling_records_per_s: f64,
    pub python_records_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureFigures {
    pub range: String,
    pub rows: usize,
    pub build_runs: usize,
    pub build_seconds: f64,
    pub rows_per_s: f64,
    pub windows: usize,
    pub window_runs: usize,
    pub window_seconds: f64,
    pub windows_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFigures {
    pub positions: usize,
    pub n_features: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub batch_size: usize,
    pub train_sequences: usize,
    pub train_seconds: f64,
    pub train_sequences_per_s: f64,
    pub predict_sequences: usize,
    pub predict_seconds: f64,
    pub predict_sequences_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryFigures {
    pub length: i32,
    pub block_size: i32,
    pub blockwise_bytes: usize,
    pub reference_bytes: usize,
    /// blockwise / reference.
    pub ratio: f64,
}

/// The report file, versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum ReportFile {
    #[serde(rename = "1")]
    V1(Report),
}

/// What a figure is, for reading its ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FigureKind {
    /// The same on every machine for the same size (a ratio other than 1 means the runs differ).
    Count,
    /// More is better.
    Rate,
    /// Less is better.
    Memory,
}

/// A named figure of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub name: String,
    pub kind: FigureKind,
    pub unit: &'static str,
    pub value: f64,
}

impl Report {
    /// Every figure, named `section.figure` (memory: `attention.blockwise_bytes.L`).
    pub fn figures(&self) -> Vec<Figure> {
        let figure = |name: &str, kind, unit, value: f64| Figure { name: name.to_string(), kind, unit, value };
        let (c, f, m) = (&self.collection, &self.features, &self.model);
        let mut out = vec![
            figure("collection.rows", FigureKind::Count, "rows", c.rows as f64),
            figure("collection.requests", FigureKind::Count, "requests", f64::from(c.requests)),
            figure("collection.records_per_s", FigureKind::Rate, "records/s", c.records_per_s),
            figure("features.rows", FigureKind::Count, "rows", f.rows as f64),
            figure("features.rows_per_s", FigureKind::Rate, "rows/s", f.rows_per_s),
            figure("features.windows", FigureKind::Count, "windows", f.windows as f64),
            figure("features.windows_per_s", FigureKind::Rate, "windows/s", f.windows_per_s),
            figure("model.train_sequences", FigureKind::Count, "sequences", m.train_sequences as f64),
            figure("model.train_sequences_per_s", FigureKind::Rate, "sequences/s", m.train_sequences_per_s),
            figure("model.predict_sequences", FigureKind::Count, "sequences", m.predict_sequences as f64),
            figure("model.predict_sequences_per_s", FigureKind::Rate, "sequences/s", m.predict_sequences_per_s),
        ];
        for row in &self.attention_memory {
            out.push(figure(
                &format!("attention.blockwise_bytes.{}", row.length),
                FigureKind::Memory,
                "bytes",
                row.blockwise_bytes as f64,
            ));
            out.push(figure(
                &format!("attention.reference_bytes.{}", row.length),
                FigureKind::Memory,
                "bytes",
                row.reference_bytes as f64,
            ));
        }
        out
    }

    /// The report as written to a file.
    pub fn to_json(&self) -> serde_json::Value {
        // invariant: every member serializes (no maps with non-string keys; rates are finite)
        serde_json::to_value(ReportFile::V1(self.clone())).expect("a report serializes")
    }

    /// Read a report written by [`write_report`].
    pub fn read(path: &Path) -> Result<Report, BenchError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| BenchError::Read { path: path.to_owned(), source })?;
        let not_a_report = |message: String| BenchError::NotAReport { path: path.to_owned(), message };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| not_a_report(e.to_string()))?;
        match value.get("version") {
            Some(serde_json::Value::String(version)) if version == "1" => {}
            Some(version) => {
                return Err(not_a_report(format!("unknown report version {version} (this build reads 1)")));
            }
            None => return Err(not_a_report("no `version` member".into())),
        }
        let ReportFile::V1(report) = serde_json::from_value(value).map_err(|e| not_a_report(e.to_string()))?;
        Ok(report)
    }
}

/// Write `report` into `folder` (created if needed) as `energy-bench-<UTC time>-<size>.json`.
pub fn write_report(report: &Report, folder: &Path) -> Result<PathBuf, BenchError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| BenchError::Write { path, source }
    };
    std::fs::create_dir_all(folder).map_err(failed(folder))?;
    let stem = format!("energy-bench-{}-{}", report.created.format(FILE_TIME), report.settings.size.as_str());
    // invariant: a `serde_json::Value` always serializes
    let mut text = serde_json::to_string_pretty(&report.to_json()).expect("a JSON value serializes");
    text.push('\n');
    for attempt in 0.. {
        let name = if attempt == 0 { format!("{stem}.json") } else { format!("{stem}-{attempt}.json") };
        let path = folder.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                use std::io::Write as _;
                file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(failed(&path))?;
                return Ok(path);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {}
            Err(error) => return Err(failed(&path)(error)),
        }
    }
    // the loop returns at its 1001st attempt at the latest
    unreachable!("the loop returns")
}

/// Each figure of `now` beside the same figure of `earlier`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub file: String,
    pub created: DateTime<Utc>,
    pub size: BenchSize,
    pub build: String,
    pub cpu_model: String,
    pub figures: Vec<Ratio>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    pub name: String,
    pub kind: FigureKind,
    pub unit: &'static str,
    /// None when the earlier report lacks the figure.
    pub earlier: Option<f64>,
    pub now: f64,
    /// now / earlier; None when the earlier figure is missing or 0.
    pub ratio: Option<f64>,
}

/// Compare `now` with `earlier` (read from `file`), figure by figure.
pub fn compare(earlier: &Report, now: &Report, file: &Path) -> Comparison {
    let before: BTreeMap<String, f64> = earlier.figures().into_iter().map(|f| (f.name, f.value)).collect();
    let figures = now
        .figures()
        .into_iter()
        .map(|figure| {
            let earlier = before.get(&figure.name).copied();
            let ratio = earlier.filter(|e| *e != 0.0).map(|e| figure.value / e);
            Ratio { name: figure.name, kind: figure.kind, unit: figure.unit, earlier, now: figure.value, ratio }
        })
        .collect();
    Comparison {
        file: file.display().to_string(),
        created: earlier.created,
        size: earlier.settings.size,
        build: earlier.settings.build.clone(),
        cpu_model: earlier.machine.cpu_model.clone(),
        figures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{EIA_CEILING_RECORDS_PER_S, PYTHON_RECORDS_PER_S};

    fn sample_report() -> Report {
        let memory = |length: i32| MemoryFigures {
            length,
            block_size: 64,
            blockwise_bytes: 1000 * length as usize,
            reference_bytes: 64 * length as usize * length as usize,
            ratio: 1000.0 / (64.0 * f64::from(length)),
        };
        Report {
            created: Utc::now(),
            settings: Settings {
                size: BenchSize::Quick,
                build: "release".into(),
                latency_ms: 200,
                requests_per_second: 5,
                requests_per_hour: 9000,
                concurrency: 4,
            },
            machine: Machine::detect(),
            collection: CollectionFigures {
                respondents: vec!["CISO".into()],
                kinds: vec!["D".into()],
                range: "r".into(),
                rows: 43_200,
                requests: 9,
                retries: 0,
                server_requests: 9,
                rejected_429: 0,
                seconds: 2.0,
                records_per_s: 21_600.0,
                ceiling_records_per_s: EIA_CEILING_RECORDS_PER_S,
                python_records_per_s: PYTHON_RECORDS_PER_S,
            },
            features: FeatureFigures {
                range: "r".into(),
                rows: 8784,
                build_runs: 3,
                build_seconds: 1.0,
                rows_per_s: 26_352.0,
                windows: 8569,
                window_runs: 2,
                window_seconds: 1.0,
                windows_per_s: 17_138.0,
            },
            model: ModelFigures {
                positions: 192,
                n_features: 22,
                d_model: 64,
                n_layers: 2,
                n_heads: 4,
                batch_size: 32,
                train_sequences: 256,
                train_seconds: 2.0,
                train_sequences_per_s: 128.0,
                predict_sequences: 1024,
                predict_seconds: 1.0,
                predict_sequences_per_s: 1024.0,
            },
            attention_memory: vec![memory(1024), memory(2048)],
        }
    }

    #[test]
    fn reports_round_trip_and_compare_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = sample_report();
        let path = write_report(&earlier, dir.path()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("energy-bench-") && name.ends_with("-quick.json"), "{name}");
        let read = Report::read(&path).unwrap();
        assert_eq!(read.figures(), earlier.figures());
        assert_eq!(read.machine, earlier.machine);
        assert_ne!(write_report(&earlier, dir.path()).unwrap(), path, "a second report never overwrites the first");

        let mut now = earlier.clone();
        now.collection.records_per_s *= 2.0;
        now.attention_memory.push(MemoryFigures { length: 4096, ..now.attention_memory[0].clone() });
        let comparison = compare(&read, &now, &path);
        let ratio = |name: &str| comparison.figures.iter().find(|f| f.name == name).map(|f| f.ratio);
        assert_eq!(ratio("collection.rows"), Some(Some(1.0)));
        assert_eq!(ratio("collection.records_per_s"), Some(Some(2.0)));
        assert_eq!(ratio("attention.reference_bytes.4096"), Some(None), "a figure the earlier report lacks");
    }

    #[test]
    fn unreadable_reports_are_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Report::read(&dir.path().join("none.json")).unwrap_err();
        assert!(missing.is_bad_input(), "{missing}");
        for (text, says) in [
            ("{", "EOF"),
            ("{}", "no `version`"),
            (r#"{"version":"9"}"#, "unknown report version"),
            (r#"{"version":"1"}"#, "missing field `created`"),
        ] {
            let path = dir.path().join("bad.json");
            std::fs::write(&path, text).unwrap();
            let error = Report::read(&path).unwrap_err();
            assert!(error.is_bad_input() && error.to_string().contains(says), "{text}: {error}");
        }
    }
}
