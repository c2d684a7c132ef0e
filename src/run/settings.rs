//! A run's settings from their four sources: graft's defaults ← the task's defaults ← a config
//! file ← flags. The task is the one the file or a flag names, else the one the data spec and
//! weights point to (`crate::task::infer_task`): `graft fit --data csv:... --weights MODEL_DIR`
//! needs no `--task`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{FitConfig, SettingFlags};
use crate::error::{Error, Result};
use crate::task::{infer_task, task_defaults};
use crate::weights::hub::{self, WeightsSpec};

/// Settings, and which of them the user gave (in the file or as flags): what task defaults and
/// grid cells must not override.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Every setting, defaults and task defaults applied.
    pub cfg: FitConfig,
    /// The names (TOML keys) of the settings the user gave.
    pub given: BTreeSet<String>,
}

/// Resolves the settings of `graft fit` (and the base of `cv` / `compare`).
pub fn resolve_settings(file: Option<&Path>, flags: &SettingFlags) -> Result<Resolved> {
    let mut given: BTreeSet<String> = flags.given().into_iter().map(str::to_string).collect();
    let mut cfg = match file {
        Some(path) => {
            let text = crate::files::read_text(path)?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| Error::file(path, format!("invalid config: {e}")))?;
            given.extend(table.keys().cloned());
            FitConfig::from_toml_file(path)?
        }
        None => FitConfig::default(),
    };
    flags.apply_to(&mut cfg);
    if given.contains("weights") {
        published_weights_given(&mut cfg, &given)?;
    }
    let cfg = with_task_defaults(cfg, &given)?;
    Ok(Resolved { cfg, given })
}

/// Weights the user named: `--weights ID` of published weights picks their model when
/// `--model` is not given; `--weights imagenet` for a model that has none is an error (as a
/// default it means random weights, said when the run starts).
fn published_weights_given(cfg: &mut FitConfig, given: &BTreeSet<String>) -> Result<()> {
    match hub::classify(&cfg.weights, &cfg.model)? {
        WeightsSpec::Published(p) if p.folder.is_none() && !given.contains("model") => {
            cfg.model = p.model;
        }
        WeightsSpec::NoImagenet { model, available } if is_zoo_model(&model) => {
            return Err(Error::invalid(format!(
                "--weights imagenet: {model} has no published ImageNet weights; these models \
                 have: {} (or pass a weights file, or --weights none)",
                available.join(", ")
            )));
        }
        _ => {}
    }
    Ok(())
}

fn is_zoo_model(name: &str) -> bool {
    crate::model::registry::preset(name).is_ok()
}

/// `cfg` with its task inferred (unless `task` is in `given`) and that task's defaults applied
/// to every setting not in `given`. A `compare` cell calls it again after its grid values, so
/// that a cell's strategy gets that strategy's defaults.
pub fn with_task_defaults(mut cfg: FitConfig, given: &BTreeSet<String>) -> Result<FitConfig> {
    if !given.contains("task") {
        cfg.task = infer_task(&cfg).to_string();
    }
    for (key, value) in task_defaults(&cfg.task, &cfg)? {
        if !given.contains(key) {
            cfg = cfg.with_setting(key, &value)?;
        }
    }
    Ok(cfg)
}
