//! A trained forecaster on disk: `model.safetensors` (the weights) beside `config.json`
//! (`{"format_version": 1, "forecaster": ForecasterConfig, "extra": …}`, where the caller keeps
//! the scaler, feature names, region, protocol and metrics), so forecasting never needs the
//! training data.
//!
//! Each file is written with the program's one atomic write ([`write_atomic`],
//! [`write_atomic_with`]: temporary file in the same folder, fsync, rename over the old one,
//! fsync of the folder), so a crash never leaves a half-written file; the weights are written
//! first, then the config. Loading checks every tensor's key and shape against the config,
//! which MLX's own safetensors loader does not.
use crate::ingest::IngestError;
use crate::ingest::store::{write_atomic, write_atomic_with};
use crate::model::transformer::{Forecaster, ForecasterConfig};
use mlx_rs::Array;
use mlx_rs::error::Exception;
use mlx_rs::module::{FlattenedModuleParam, ModuleParameters};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The weights file inside a checkpoint folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The config file inside a checkpoint folder.
pub const CONFIG_FILE: &str = "config.json";
/// The `format_version` this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("checkpoint folder `{}` does not exist", path.display())]
    MissingDirectory { path: PathBuf },
    #[error("checkpoint file `{}` does not exist", path.display())]
    MissingFile { path: PathBuf },
    #[error("cannot access `{}`", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write `{}`", path.display())]
    Write { path: PathBuf, source: IngestError },
    #[error("cannot parse `{}`", path.display())]
    ParseConfig { path: PathBuf, source: serde_json::Error },
    #[error("cannot serialize the config for `{}`", path.display())]
    SerializeConfig { path: PathBuf, source: serde_json::Error },
    #[error("unsupported checkpoint format_version {found} in `{}` (this build reads {FORMAT_VERSION})", path.display())]
    UnsupportedVersion { path: PathBuf, found: u64 },
    #[error("invalid forecaster config in `{}`: {}", path.display(), source.what())]
    InvalidConfig { path: PathBuf, source: Exception },
    #[error("cannot read or write weights `{}`: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    #[error("weights `{}` do not match the config: {message}", path.display())]
    WeightsMismatch { path: PathBuf, message: String },
    #[error("mlx: {}", .0.what())]
    Mlx(#[from] Exception),
}

/// What `config.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigFile {
    format_version: u64,
    forecaster: ForecasterConfig,
    #[serde(default)]
    extra: serde_json::Value,
}

/// Write `dir/model.safetensors`, then `dir/config.json` (creating `dir` if needed), each
/// atomically ([`write_atomic`]).
pub fn save(
    dir: &Path,
    model: &Forecaster,
    config: &ForecasterConfig,
    extra: &serde_json::Value,
) -> Result<(), ModelError> {
    if config != model.config() {
        return Err(ModelError::InvalidConfig {
            path: dir.join(CONFIG_FILE),
            source: Exception::custom("the config to save differs from the model's own"),
        });
    }
    let (weights_path, config_path) = (dir.join(WEIGHTS_FILE), dir.join(CONFIG_FILE));
    let file =
        ConfigFile { format_version: u64::from(FORMAT_VERSION), forecaster: config.clone(), extra: extra.clone() };
    let text = serde_json::to_string_pretty(&file)
        .map_err(|source| ModelError::SerializeConfig { path: config_path.clone(), source })?;
    fs::create_dir_all(dir).map_err(|source| ModelError::Io { path: dir.to_path_buf(), source })?;
    write_safetensors(&weights_path, model.parameters().flatten())
        .map_err(|source| ModelError::Write { path: weights_path, source })?;
    write_atomic(&config_path, text.as_bytes()).map_err(|source| ModelError::Write { path: config_path, source })
}

/// Read a checkpoint written by [`save`]: the model (weights checked key by key and shape by
/// shape against a fresh model built from the config), its config and the `extra` value.
pub fn load(dir: &Path) -> Result<(Forecaster, ForecasterConfig, serde_json::Value), ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::MissingDirectory { path: dir.to_path_buf() });
    }
    let config_path = dir.join(CONFIG_FILE);
    let weights_path = dir.join(WEIGHTS_FILE);
    for path in [&config_path, &weights_path] {
        if !path.is_file() {
            return Err(ModelError::MissingFile { path: path.clone() });
        }
    }
    let text =
        fs::read_to_string(&config_path).map_err(|source| ModelError::Io { path: config_path.clone(), source })?;
    // Check the version before the rest, so a future format gets the version error.
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ModelError::ParseConfig { path: config_path.clone(), source })?;
    match value.get("format_version").and_then(serde_json::Value::as_u64) {
        Some(version) if version == u64::from(FORMAT_VERSION) => {}
        Some(found) => return Err(ModelError::UnsupportedVersion { path: config_path, found }),
        None => {
            let source = <serde_json::Error as serde::de::Error>::custom("missing or non-integer `format_version`");
            return Err(ModelError::ParseConfig { path: config_path, source });
        }
    }
    let file: ConfigFile = serde_json::from_value(value)
        .map_err(|source| ModelError::ParseConfig { path: config_path.clone(), source })?;
    let config = file.forecaster;
    let mut model =
        Forecaster::new(&config).map_err(|source| ModelError::InvalidConfig { path: config_path.clone(), source })?;

    let loaded = Array::load_safetensors(&weights_path)
        .map_err(|error| ModelError::Weights { path: weights_path.clone(), message: error.to_string() })?;
    let weights = check_weights(&model, loaded)
        .map_err(|message| ModelError::WeightsMismatch { path: weights_path.clone(), message })?;
    model.update_flattened(weights);
    mlx_rs::transforms::eval_params(model.parameters())?;
    Ok((model, config, file.extra))
}

/// The loaded tensors, if they have exactly the model's keys, shapes and dtypes; otherwise a
/// message listing (up to a few of) the differences.
pub(crate) fn check_weights(
    model: &Forecaster,
    loaded: HashMap<String, Array>,
) -> Result<FlattenedModuleParam, String> {
    let expected: BTreeMap<String, (Vec<i32>, mlx_rs::Dtype)> = model
        .parameters()
        .flatten()
        .into_iter()
        .map(|(key, value)| (key.to_string(), (value.shape().to_vec(), value.dtype())))
        .collect();
    let mut problems = Vec::new();
    for (key, (shape, dtype)) in &expected {
        match loaded.get(key) {
            None => problems.push(format!("missing tensor `{key}`")),
            Some(array) if array.shape() != shape.as_slice() => {
                problems.push(format!("tensor `{key}` has shape {:?}, expected {shape:?}", array.shape()))
            }
            Some(array) if array.dtype() != *dtype => {
                problems.push(format!("tensor `{key}` has dtype {:?}, expected {dtype:?}", array.dtype()))
            }
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<&String> = loaded.keys().filter(|key| !expected.contains_key(*key)).collect();
    unexpected.sort();
    problems.extend(unexpected.into_iter().map(|key| format!("unexpected tensor `{key}`")));
    if !problems.is_empty() {
        let count = problems.len();
        problems.truncate(5);
        let more = if count > 5 { format!(" (and {} more)", count - 5) } else { String::new() };
        return Err(format!("{}{more}", problems.join("; ")));
    }
    Ok(loaded.into_iter().map(|(key, value)| (Rc::from(key), value)).collect())
}

/// Write `tensors` as the safetensors file `path` atomically ([`write_atomic_with`]; MLX writes
/// the temporary file, whose name keeps the `.safetensors` extension MLX requires).
pub(crate) fn write_safetensors<'a, S: AsRef<str>>(
    path: &Path,
    tensors: impl IntoIterator<Item = (S, &'a Array)>,
) -> Result<(), IngestError> {
    write_atomic_with(path, |temp| {
        Array::save_safetensors(tensors, None, temp).map_err(|error| std::io::Error::other(error.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::train::predict;
    use crate::model::transformer::tests::tiny_config;
    use mlx_rs::random;

    fn saved(dir: &Path) -> Result<(Forecaster, ForecasterConfig), ModelError> {
        let config = tiny_config();
        let model = Forecaster::with_seed(&config, 21)?;
        save(dir, &model, &config, &serde_json::json!({"region": "CISO", "features": ["load", "hour"]}))?;
        Ok((model, config))
    }

    fn predictions(model: &mut Forecaster, inputs: &[f32]) -> Vec<f32> {
        predict(model, inputs, 3, 20, 5, 2).unwrap()
    }

    fn write_config(dir: &Path, value: &serde_json::Value) {
        fs::write(dir.join(CONFIG_FILE), serde_json::to_string(value).unwrap()).unwrap();
    }

    #[test]
    fn round_trip_gives_identical_predictions() -> Result<(), ModelError> {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("checkpoint");
        let (mut model, config) = saved(&folder)?;
        let inputs = random::normal::<f32>(&[3, 20, 5], None, None, None)?;
        let inputs = inputs.as_slice::<f32>().to_vec();
        let (mut loaded, loaded_config, extra) = load(&folder)?;
        assert_eq!(loaded_config, config);
        assert_eq!(extra["region"], "CISO");
        assert_eq!(predictions(&mut loaded, &inputs), predictions(&mut model, &inputs));
        // Only the two files are left behind (no temporaries), and saving again overwrites them.
        save(&folder, &model, &config, &serde_json::Value::Null)?;
        let mut names: Vec<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [CONFIG_FILE, WEIGHTS_FILE]);
        assert_eq!(load(&folder)?.2, serde_json::Value::Null);
        Ok(())
    }

    #[test]
    fn an_ensemble_round_trips_with_every_member() -> Result<(), ModelError> {
        let dir = tempfile::tempdir().unwrap();
        let config = ForecasterConfig { members: 3, ..tiny_config() };
        let mut model = Forecaster::with_seed(&config, 4)?;
        save(dir.path(), &model, &config, &serde_json::Value::Null)?;
        let (mut loaded, loaded_config, _) = load(dir.path())?;
        assert_eq!(loaded_config.members, 3);
        let keys = loaded.parameters().flatten();
        assert!(keys.contains_key("head.linear.weight") && keys.contains_key("others.1.head.linear.weight"));
        let inputs = random::normal::<f32>(&[3, 20, 5], None, None, None)?.as_slice::<f32>().to_vec();
        assert_eq!(predictions(&mut loaded, &inputs), predictions(&mut model, &inputs));
        Ok(())
    }

    #[test]
    fn missing_folder_and_files_are_named() -> Result<(), ModelError> {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        let error = load(&missing).err().unwrap();
        assert!(matches!(error, ModelError::MissingDirectory { .. }), "{error}");
        assert!(error.to_string().contains("nowhere"), "{error}");

        saved(dir.path())?;
        fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
        let error = load(dir.path()).err().unwrap();
        assert!(matches!(&error, ModelError::MissingFile { path } if path.ends_with(WEIGHTS_FILE)), "{error}");

        saved(dir.path())?;
        fs::remove_file(dir.path().join(CONFIG_FILE)).unwrap();
        let error = load(dir.path()).err().unwrap();
        assert!(matches!(&error, ModelError::MissingFile { path } if path.ends_with(CONFIG_FILE)), "{error}");
        Ok(())
    }

    #[test]
    fn bad_config_files_are_rejected() -> Result<(), ModelError> {
        let dir = tempfile::tempdir().unwrap();
        let (_, config) = saved(dir.path())?;
        let forecaster = serde_json::to_value(&config).unwrap();

        fs::write(dir.path().join(CONFIG_FILE), "{ not json").unwrap();
        let error = load(dir.path()).err().unwrap();
        assert!(matches!(error, ModelError::ParseConfig { .. }), "{error}");
        assert!(error.to_string().contains(CONFIG_FILE), "{error}");

        write_config(dir.path(), &serde_json::json!({"format_version": 2, "forecaster": forecaster}));
        let error = load(dir.path()).err().unwrap();
        assert!(matches!(error, ModelError::UnsupportedVersion { found: 2, .. }), "{error}");

        write_config(dir.path(), &serde_json::json!({"forecaster": forecaster}));
        let error = load(dir.path()).err().unwrap();
        assert!(matches!(error, ModelError::ParseConfig { .. }), "{error}");

        write_config(dir.path(), &serde_json::json!({"format_version": 1, "forecaster": {"d_model": 16}}));
        let error = load(dir.path()).err().unwrap();
        assert!(matches!(error, ModelError::ParseConfig { .. }), "{error}");

        let invalid = ForecasterConfig { d_model: 15, ..config };
        write_config(dir.path(), &serde_json::json!({"format_version": 1, "forecaster": invalid}));
        let error = load(dir.path()).err().unwrap();
        assert!(matches!(error, ModelError::InvalidConfig { .. }), "{error}");
        Ok(())
    }

    #[test]
    fn weights_that_do_not_match_the_config_are_rejected() -> Result<(), ModelError> {
        let dir = tempfile::tempdir().unwrap();
        let (_, config) = saved(dir.path())?;
        let cases = [
            (ForecasterConfig { d_model: 32, ..config.clone() }, "has shape"),
            (ForecasterConfig { n_layers: 3, ..config.clone() }, "missing tensor `blocks.2."),
            (ForecasterConfig { n_layers: 1, ..config.clone() }, "unexpected tensor `blocks.1."),
            (
                ForecasterConfig { positions: 21, ..config.clone() },
                "tensor `position` has shape [20, 16], expected [21, 16]",
            ),
            (ForecasterConfig { quantiles: vec![0.5], ..config.clone() }, "tensor `head.linear.weight` has shape"),
        ];
        for (other, expected) in cases {
            write_config(dir.path(), &serde_json::json!({"format_version": 1, "forecaster": other}));
            let error = load(dir.path()).err().unwrap();
            assert!(matches!(error, ModelError::WeightsMismatch { .. }), "{error}");
            assert!(error.to_string().contains(expected), "{error} lacks {expected}");
            assert!(error.to_string().contains(WEIGHTS_FILE), "{error}");
        }
        // A weights file that is not safetensors.
        write_config(dir.path(), &serde_json::json!({"format_version": 1, "forecaster": config}));
        fs::write(dir.path().join(WEIGHTS_FILE), b"garbage").unwrap();
        let error = load(dir.path()).err().unwrap();
        assert!(matches!(error, ModelError::Weights { .. }), "{error}");
        Ok(())
    }
}
