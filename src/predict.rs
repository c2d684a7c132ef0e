//! Predictions of a trained model on new inputs, for any task: [`Predictor`] loads a finished
//! run (or a zoo model with a weights file) and classifies images or texts, or predicts
//! segmentation masks — what `graft predict` prints.
//!
//! ```no_run
//! use std::path::PathBuf;
//! use graft::predict::Predictor;
//! use graft::tensor::DeviceKind;
//!
//! let predictor = Predictor::from_run("runs/my-run", DeviceKind::Cpu)?;
//! let images = [PathBuf::from("cat.png"), PathBuf::from("dog.jpg")];
//! for p in predictor.predict_images(&images, 3)? {
//!     let best = &p.top[0];
//!     println!("{}: {} ({:.1}%)", p.path.display(), best.label, best.probability * 100.0);
//! }
//! # Ok::<(), graft::Error>(())
//! ```
//!
//! Each task's part lives beside the task: [`ImagePredictor`], [`TextPredictor`],
//! [`SegPredictor`].

use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::DeviceKind;

pub use crate::task::classification::predict::{ClassScore, top_k};
pub use crate::task::image_classification::predict::{
    ImageOptions, ImagePrediction, ImagePredictor, imagenet_classes,
};
pub use crate::task::segmentation::data::Mask;
pub use crate::task::segmentation::predict::{
    MaskPrediction, PredictedMask, SegPredictor, check_mask_inputs,
};
pub use crate::task::text_classification::predict::{TextPrediction, TextPredictor};

/// A trained model ready to predict, of any task.
pub enum Predictor {
    /// An image classifier (a run, or a zoo model with weights).
    Image(ImagePredictor),
    /// A text classifier (a run).
    Text(TextPredictor),
    /// A segmentation model (a run).
    Segmentation(SegPredictor),
}

impl Predictor {
    /// The model of the finished run in `run_dir` (any task; its task from the run's files),
    /// on `device`.
    pub fn from_run(run_dir: impl AsRef<Path>, device: DeviceKind) -> Result<Self> {
        let run_dir = run_dir.as_ref();
        let task = task_of_run(run_dir)?;
        let device = device.device()?;
        Ok(match task.as_str() {
            "text-classification" => Self::Text(TextPredictor::from_run(run_dir, &device)?),
            "segmentation" => Self::Segmentation(SegPredictor::from_run(run_dir, &device)?),
            _ => Self::Image(ImagePredictor::from_run(
                run_dir,
                &ImageOptions::default(),
                &device,
            )?),
        })
    }

    /// An image classifier from the zoo: `model` (`graft models`) with the weights in `weights`
    /// (.pth or .safetensors); `options` gives the head's width (1000: ImageNet's classes) and
    /// the preprocessing.
    pub fn from_zoo(
        model: &str,
        weights: impl AsRef<Path>,
        options: &ImageOptions,
        device: DeviceKind,
    ) -> Result<Self> {
        options.check()?;
        let device = device.device()?;
        Ok(Self::Image(ImagePredictor::from_zoo(
            model,
            weights.as_ref(),
            options,
            &device,
        )?))
    }

    /// The task of the model (`image-classification`, `text-classification`, `segmentation`).
    pub fn task(&self) -> &'static str {
        match self {
            Self::Image(_) => "image-classification",
            Self::Text(_) => "text-classification",
            Self::Segmentation(_) => "segmentation",
        }
    }

    /// One name per class.
    pub fn labels(&self) -> &[String] {
        match self {
            Self::Image(m) => &m.labels,
            Self::Text(m) => m.labels(),
            Self::Segmentation(m) => m.labels(),
        }
    }

    /// The `top` most probable classes of each image (JPEG or PNG), in order. An image
    /// classifier's only.
    pub fn predict_images<P: AsRef<Path>>(
        &self,
        paths: &[P],
        top: usize,
    ) -> Result<Vec<ImagePrediction>> {
        let Self::Image(m) = self else {
            return Err(self.wrong_task("classify images", "predict_masks or predict_texts"));
        };
        paths.iter().map(|p| m.predict(p.as_ref(), top)).collect()
    }

    /// The `top` most probable classes of each text, in order. A text classifier's only.
    pub fn predict_texts<S: AsRef<str>>(
        &self,
        texts: &[S],
        top: usize,
    ) -> Result<Vec<TextPrediction>> {
        let Self::Text(m) = self else {
            return Err(self.wrong_task("classify texts", "predict_images or predict_masks"));
        };
        texts.iter().map(|t| m.predict(t.as_ref(), top)).collect()
    }

    /// The mask of each image, at the image's size, in order; with `out`, each also written
    /// as `out/STEM.mask.png` and `out/STEM.overlay.png` (see
    /// [`SegPredictor::predict_files`]). A segmentation model's only.
    pub fn predict_masks<P: AsRef<Path>>(
        &self,
        paths: &[P],
        out: Option<&Path>,
    ) -> Result<Vec<MaskPrediction>> {
        let Self::Segmentation(m) = self else {
            return Err(self.wrong_task("predict masks", "predict_images or predict_texts"));
        };
        m.predict_all(paths, out)
    }

    fn wrong_task(&self, what: &str, instead: &str) -> Error {
        Error::invalid(format!(
            "a {} model does not {what} (use {instead})",
            self.task()
        ))
    }
}

/// The task of a run folder: its `config.toml`'s `task`, else its `model.json`'s (a finished
/// run copied without its settings), else image classification (folders that predate tasks).
pub fn task_of_run(run_dir: &Path) -> Result<String> {
    if run_dir.join("config.toml").is_file() {
        return Ok(crate::train::run_config(run_dir)?.task);
    }
    let card = run_dir.join("model.json");
    if card.is_file() {
        let json: serde_json::Value = serde_json::from_str(&crate::files::read_text(&card)?)
            .map_err(|e| Error::file(&card, format!("not valid JSON: {e}")))?;
        if let Some(task) = json.get("task").and_then(|t| t.as_str()) {
            return Ok(task.to_string());
        }
    }
    Ok("image-classification".to_string())
}
