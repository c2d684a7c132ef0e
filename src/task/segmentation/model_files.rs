//! The model a finished segmentation run leaves: `model.safetensors` (smp's key names for the
//! decoder and head, torchvision's / the family's for the backbone) + `model.json`.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::data::PairTransform;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::params::{Strictness, load_into, named_tensors};
use crate::model::segmenter::{DecoderKind, SEGMENTATION_HEAD, SIZE_MULTIPLE};
use crate::model::{Preset, Segmenter, preset};
use crate::weights::{load_weights, save_safetensors};

/// What `graft eval --run` (and the report) need besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegCard {
    /// `segmentation`: which task wrote the file.
    pub task: String,
    /// The zoo backbone's name.
    pub model: String,
    /// The decoder (FPN or U-Net).
    pub decoder: DecoderKind,
    /// Classes the head predicts per pixel.
    pub num_classes: usize,
    /// Class names, class 0 first.
    pub class_names: Vec<String>,
    /// The square input size the run trained at (a multiple of 32).
    pub image_size: usize,
    /// The data spec the run trained on.
    pub data: String,
    /// The training strategy, as its setting's text.
    pub strategy: String,
    /// Per-channel normalisation mean, on 0..1 pixels.
    pub mean: [f32; 3],
    /// Per-channel normalisation standard deviation.
    pub std: [f32; 3],
}

impl SegCard {
    /// Bounds every size before anything is built from it (the file may have been edited).
    fn check(&self) -> std::result::Result<(), String> {
        use crate::config::{MAX_CLASSES, MAX_IMAGE_SIZE};
        if !(2..=MAX_CLASSES).contains(&self.num_classes) {
            return Err(format!(
                "num_classes {} is not between 2 and {MAX_CLASSES}",
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
        if !(SIZE_MULTIPLE..=MAX_IMAGE_SIZE).contains(&self.image_size)
            || !self.image_size.is_multiple_of(SIZE_MULTIPLE)
        {
            return Err(format!(
                "image_size {} is not a multiple of {SIZE_MULTIPLE} up to {MAX_IMAGE_SIZE}",
                self.image_size
            ));
        }
        Ok(())
    }

    /// The evaluation transform of the run (resize only).
    pub fn eval_transform(&self) -> PairTransform {
        PairTransform {
            size: self.image_size,
            mean: self.mean,
            std: self.std,
            crop: false,
            flip: false,
        }
    }
}

/// Writes `model.safetensors` and `model.json` into `run_dir`.
pub(super) fn save_model(run_dir: &Path, model: &Segmenter, card: &SegCard) -> Result<()> {
    save_safetensors(
        &run_dir.join("model.safetensors"),
        &named_tensors(model, SEGMENTATION_HEAD),
    )?;
    let json = serde_json::to_string_pretty(card).unwrap_or_default();
    write_atomic(&run_dir.join("model.json"), json.as_bytes())
}

/// Loads a finished segmentation run's model and card.
pub fn load_seg_run(
    run_dir: &Path,
    device: &Device,
) -> Result<(Segmenter, SegCard, &'static Preset)> {
    let card_path = run_dir.join("model.json");
    if !run_dir.is_dir() {
        // `run_config` says which run folders there are instead.
        crate::train::run_config(run_dir)?;
    }
    if !card_path.is_file() {
        return Err(Error::file(
            run_dir,
            "no model.json: not a finished segmentation run (give a folder written by `graft \
             fit --task segmentation`, after it has finished)",
        ));
    }
    let text = crate::files::read_text(&card_path)?;
    let card: SegCard = serde_json::from_str(&text)
        .map_err(|e| Error::file(&card_path, format!("invalid model card: {e}")))?;
    card.check().map_err(|msg| Error::file(&card_path, msg))?;
    let p = preset(&card.model)?;
    let weights = load_weights(&run_dir.join("model.safetensors"))?;
    let model = Segmenter::new(p, card.decoder, card.num_classes, device);
    let (model, _) = load_into(model, &weights, SEGMENTATION_HEAD, Strictness::Strict)
        .map_err(|e| Error::file(run_dir.join("model.safetensors"), e.to_string()))?;
    Ok((model, card, p))
}
