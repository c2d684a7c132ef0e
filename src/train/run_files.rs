//! The files a finished run leaves for later commands: `model.safetensors` + `model.json` (what
//! `predict --run` and `eval --run` load) and `summary.json` (what marks the run finished).

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::checkpoint;
use super::fit::{FitSummary, device_for, eval_pipeline, open_dataset};
use super::loss::Loss;
use super::network::evaluate_network;
use crate::config::FitConfig;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::Evaluation;
use crate::model::params::{Strictness, load_into, named_tensors};
use crate::model::{Classifier, Preset, preset};
use crate::weights::{load_weights, save_safetensors};

/// Everything `graft predict --run` and `graft eval --run` need besides the tensors; written to
/// `model.json` beside `model.safetensors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub model: String,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub image_size: usize,
    pub resize: String,
    pub data: String,
    pub strategy: String,
}

/// The summary of a finished run, if `run_dir` holds one.
pub fn finished_summary(run_dir: &Path) -> Option<FitSummary> {
    let text = std::fs::read_to_string(run_dir.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `model.safetensors` (checkpoint keys, loadable by `graft predict --run` and by
/// PyTorch's `load_state_dict` for the same architecture) and `model.json`.
pub(super) fn save_model(
    run_dir: &Path,
    model: &Classifier,
    preset: &Preset,
    cfg: &FitConfig,
    ds: &Dataset,
    classes: usize,
    size: usize,
) -> Result<()> {
    save_safetensors(
        &run_dir.join("model.safetensors"),
        &named_tensors(model, preset.head_name),
    )?;
    let mut names = ds.class_names.clone();
    names.extend((names.len()..classes).map(|i| format!("class {i}")));
    let card = ModelCard {
        model: preset.name.to_string(),
        num_classes: classes,
        class_names: names,
        image_size: size,
        resize: cfg.resize.clone(),
        data: cfg.data.clone(),
        strategy: cfg.strategy.clone(),
    };
    let json = serde_json::to_string_pretty(&card).unwrap_or_default();
    checkpoint::write_atomic(&run_dir.join("model.json"), json.as_bytes())
}

/// Loads a finished run's model and card (for `graft predict --run` / `graft eval --run`).
pub fn load_run(
    run_dir: &Path,
    device: &Device,
) -> Result<(Classifier, ModelCard, &'static Preset)> {
    let card_path = run_dir.join("model.json");
    let text = std::fs::read_to_string(&card_path).map_err(|e| Error::io(&card_path, e))?;
    let card: ModelCard = serde_json::from_str(&text)
        .map_err(|e| Error::file(&card_path, format!("invalid model card: {e}")))?;
    let p = preset(&card.model)?;
    let weights = load_weights(&run_dir.join("model.safetensors"))?;
    let model = Classifier::new(p, card.num_classes, device);
    let (model, _) = load_into(model, &weights, p.head_name, Strictness::Strict)?;
    Ok((model, card, p))
}

/// Evaluates a finished run on its test split (or on another dataset spec).
pub fn evaluate_run(run_dir: &Path, data_spec: Option<&str>, quiet: bool) -> Result<Evaluation> {
    let cfg = FitConfig::from_toml_file(&run_dir.join("config.toml"))?;
    let device = device_for(&cfg.device)?;
    let (model, card, p) = load_run(run_dir, &device)?;
    let mut cfg = cfg;
    if let Some(spec) = data_spec {
        cfg.data = spec.to_string();
        cfg.limit_test = None;
    }
    let ds = open_dataset(&cfg)?;
    let pipe = eval_pipeline(p, card.image_size, &card.resize)?;
    let loss = Loss {
        kind: cfg.plan()?.loss,
        class_weights: None,
    };
    let acc = evaluate_network(
        &model,
        &ds.test,
        &pipe,
        cfg.batch_size,
        &loss,
        card.num_classes,
        quiet,
    )?;
    Ok(acc.finish(&card.class_names))
}
