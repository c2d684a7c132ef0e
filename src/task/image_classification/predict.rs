//! Image classification of images a model has never seen (`graft predict`, `graft explain`): a
//! finished run, or a zoo model with a weights file (an ImageNet head is labelled with
//! ImageNet's class names), with its evaluation preprocessing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;

use super::model_files::load_run;
use crate::config::{MAX_CLASSES, MAX_IMAGE_SIZE};
use crate::data::{Image, Pipeline, Resize};
use crate::error::{Error, Result};
use crate::model::params::{Strictness, load_into};
use crate::model::{Classifier, Preset, preset, with_model_hint};
use crate::task::classification::predict::{ClassScore, top_k};
use crate::tensor::{from_vec, to_vec};
use crate::weights::load_pretrained;

/// The 1000 ImageNet class names, in the order of the pretrained heads.
const IMAGENET_CLASSES: &str = include_str!("../../../assets/imagenet_classes.txt");

/// ImageNet's 1000 class names, in the order of the pretrained heads' outputs.
pub fn imagenet_classes() -> Vec<String> {
    IMAGENET_CLASSES.lines().map(str::to_string).collect()
}

/// How to load an image classifier and prepare its inputs (`graft predict`'s flags).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// A zoo model's head width (1000: an ImageNet head, labelled with ImageNet's names; other
    /// widths are labelled `class K`). A run's head is the run's.
    pub num_classes: usize,
    /// A zoo model: `false` leaves a head whose shape differs from `num_classes` at a fresh init
    /// instead of being an error (every backbone tensor must still match).
    pub strict: bool,
    /// The resize before the centre crop [default: the run's, or `auto` for a zoo model].
    pub resize: Option<Resize>,
    /// The square input size [default: the run's, or the model's].
    pub image_size: Option<usize>,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            num_classes: 1000,
            strict: true,
            resize: None,
            image_size: None,
        }
    }
}

impl ImageOptions {
    /// Checks the sizes before anything is loaded.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_CLASSES).contains(&self.num_classes) {
            return Err(Error::invalid(format!(
                "--num-classes must be between 1 and {MAX_CLASSES}"
            )));
        }
        if self
            .image_size
            .is_some_and(|s| !(1..=MAX_IMAGE_SIZE).contains(&s))
        {
            return Err(Error::invalid(format!(
                "--image-size must be between 1 and {MAX_IMAGE_SIZE}"
            )));
        }
        Ok(())
    }
}

/// The classes predicted for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePrediction {
    /// The image file.
    pub path: PathBuf,
    /// The most probable classes, most probable first.
    pub top: Vec<ClassScore>,
}

/// An image classifier ready to run, with what its inputs and outputs mean.
pub struct ImagePredictor {
    /// The classifier as trained (not folded: `graft explain` differentiates through it).
    pub model: Classifier,
    /// The zoo entry of its backbone (normalisation, stages).
    pub preset: &'static Preset,
    /// One name per class of the head.
    pub labels: Vec<String>,
    /// The preprocessing of its inputs, to `size`×`size`.
    pub pipe: Pipeline,
    /// The square input size.
    pub size: usize,
    /// Where it runs.
    pub device: Device,
    /// A zoo model's file had a head of another width (with `strict: false`): the head is
    /// untrained, its predictions meaningless.
    pub head_untrained: bool,
    /// `model` with BatchNorm folded into the convolutions, made on first use.
    folded: OnceLock<Classifier>,
}

impl ImagePredictor {
    /// The classifier of a finished image-classification run (its model, class names, input
    /// size and resize; `options` may override the last two).
    pub fn from_run(run_dir: &Path, options: &ImageOptions, device: &Device) -> Result<Self> {
        options.check()?;
        let (model, card, preset) = load_run(run_dir, device)?;
        let resize = options.resize.unwrap_or(card.resize);
        let size = options.image_size.unwrap_or(card.image_size);
        Self::new(model, preset, card.class_names, size, resize, false, device)
    }

    /// Zoo model `model` (`graft models`) with the weights in `weights` (.pth or .safetensors)
    /// and a head of `options.num_classes`.
    pub fn from_zoo(
        model: &str,
        weights: &Path,
        options: &ImageOptions,
        device: &Device,
    ) -> Result<Self> {
        options.check()?;
        let p = preset(model)?;
        let map = load_pretrained(weights)?;
        let net = Classifier::new(p, options.num_classes, device);
        let strictness = if options.strict {
            Strictness::Strict
        } else {
            Strictness::SkipHead
        };
        let (net, report) = load_into(net, &map, p.head_name, strictness)
            .map_err(|e| Error::file(weights, with_model_hint(e.to_string(), &map, p.name)))?;
        let labels = if options.num_classes == 1000 {
            imagenet_classes()
        } else {
            (0..options.num_classes)
                .map(|i| format!("class {i}"))
                .collect()
        };
        let resize = options.resize.unwrap_or(Resize::Auto);
        let size = options.image_size.unwrap_or(p.input_size);
        let untrained = !report.head_skipped.is_empty();
        Self::new(net, p, labels, size, resize, untrained, device)
    }

    fn new(
        model: Classifier,
        preset: &'static Preset,
        labels: Vec<String>,
        size: usize,
        resize: Resize,
        head_untrained: bool,
        device: &Device,
    ) -> Result<Self> {
        let pipe = Pipeline::eval(size, preset.mean, preset.std, resize)?;
        Ok(Self {
            model,
            preset,
            labels,
            pipe,
            size,
            device: device.clone(),
            head_untrained,
            folded: OnceLock::new(),
        })
    }

    /// Decodes and preprocesses the image at `path`: `(3, H, W)` normalised, and its shape.
    pub fn input(&self, path: &Path) -> Result<(Vec<f32>, [usize; 3])> {
        // Only regular files are read (a pipe named .jpg would block forever).
        let bytes = crate::files::read_file(path)?;
        let image = Image::decode(path, &bytes)?;
        self.prepare(&image)
            .map_err(|e| Error::file(path, e.to_string()))
    }

    /// Preprocesses a decoded image: `(3, H, W)` normalised, and its shape.
    pub fn prepare(&self, image: &Image) -> Result<(Vec<f32>, [usize; 3])> {
        let mut rng = rand::rngs::mock::StepRng::new(0, 0);
        self.pipe.apply(image, &mut rng)
    }

    /// The logits of the image at `path` (one per class).
    pub fn logits(&self, path: &Path) -> Result<Vec<f32>> {
        let (pixels, [c, h, w]) = self.input(path)?;
        // Inference only: BatchNorm folded into the convolutions (same outputs, less work).
        let model = self
            .folded
            .get_or_init(|| self.model.folded_for_inference());
        Ok(to_vec(model.forward(from_vec(
            pixels,
            [1, c, h, w],
            &self.device,
        ))))
    }

    /// The `top` most probable classes of the image at `path`.
    pub fn predict(&self, path: &Path, top: usize) -> Result<ImagePrediction> {
        let logits = self.logits(path)?;
        Ok(ImagePrediction {
            path: path.to_path_buf(),
            top: top_k(&logits, top, &self.labels),
        })
    }
}
