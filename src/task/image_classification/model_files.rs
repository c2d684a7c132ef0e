//! The model a finished image-classification run leaves for later commands:
//! `model.safetensors` + `model.json` (what `predict --run` and `eval --run` load).

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::config::FitConfig;
use crate::data::{Dataset, Resize};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::params::{Strictness, load_into, named_tensors};
use crate::model::{Classifier, Preset, preset};
use crate::weights::{load_weights, save_safetensors};

/// Everything `graft predict --run` and `graft eval --run` need besides the tensors; written to
/// `model.json` beside `model.safetensors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    /// The zoo model's name (`resnet18`, ...).
    pub model: String,
    /// Outputs of the head.
    pub num_classes: usize,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// The square input size the run trained at, in pixels.
    pub image_size: usize,
    /// How evaluation brings an image to `image_size`.
    pub resize: Resize,
    /// The data spec the run trained on.
    pub data: String,
    /// The training strategy (`linear-probe`, `fine-tune`, `partial:K`, `scratch`), as text.
    pub strategy: String,
}

impl ModelCard {
    /// Bounds every size before anything is built from it (the file may have been edited).
    fn check(&self) -> std::result::Result<(), String> {
        use crate::config::{MAX_CLASSES, MAX_IMAGE_SIZE};
        if !(1..=MAX_CLASSES).contains(&self.num_classes) {
            return Err(format!(
                "num_classes {} is not between 1 and {MAX_CLASSES}",
                self.num_classes
            ));
        }
        if self.class_names.len() != self.num_classes {
            return Err(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.num_classes
            ));
        }
        if !(1..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err(format!(
                "image_size {} is not between 1 and {MAX_IMAGE_SIZE}",
                self.image_size
            ));
        }
        Ok(())
    }
}

/// Writes `model.safetensors` (checkpoint keys, loadable by `graft predict --run` and by
/// PyTorch's `load_state_dict` for the same architecture) and `model.json`.
pub(crate) fn save_model(
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
        resize: cfg.resize,
        data: cfg.data.clone(),
        strategy: cfg.strategy.to_string(),
    };
    let json = serde_json::to_string_pretty(&card).unwrap_or_default();
    write_atomic(&run_dir.join("model.json"), json.as_bytes())
}

/// Loads a finished run's model and card (for `graft predict --run` / `graft eval --run`).
pub fn load_run(
    run_dir: &Path,
    device: &Device,
) -> Result<(Classifier, ModelCard, &'static Preset)> {
    let card_path = run_dir.join("model.json");
    if !run_dir.is_dir() {
        // `run_config` says which run folders there are instead.
        crate::train::run_config(run_dir)?;
    }
    if !card_path.is_file() {
        return Err(Error::file(
            run_dir,
            "no model.json: not a finished image-classification run (give a folder written by \
             `graft fit`, after it has finished)",
        ));
    }
    let text = crate::files::read_text(&card_path)?;
    let card: ModelCard = serde_json::from_str(&text)
        .map_err(|e| Error::file(&card_path, format!("invalid model card: {e}")))?;
    card.check().map_err(|msg| Error::file(&card_path, msg))?;
    let p = preset(&card.model)?;
    let weights = load_weights(&run_dir.join("model.safetensors"))?;
    let model = Classifier::new(p, card.num_classes, device);
    let (model, _) = load_into(model, &weights, p.head_name, Strictness::Strict)?;
    Ok((model, card, p))
}
