//! `graft predict`: classify images with a pretrained model (ImageNet labels) or a fine-tuned
//! run (the dataset's class names); with a segmentation run, write each image's predicted mask
//! and a colour overlay.
//!
//! The work is the library's ([`graft::predict`]); this file turns flags into its calls and
//! its results into lines of text or JSON.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use graft::data::Resize;
use graft::predict::{
    ClassScore, ImageOptions, ImagePredictor, SegPredictor, TextPredictor, check_mask_inputs,
    task_of_run,
};
use graft::task::segmentation::predict::class_colour;
use graft::tensor::DeviceKind;
use serde::Serialize;

#[derive(Args, Debug)]
#[command(
    after_help = "With a segmentation run (--run of `graft fit --task segmentation`), \
    each IMAGE's mask is predicted at the run's image size and resized back to the image's \
    (nearest); --out DIR receives DIR/STEM.mask.png (8-bit gray class indices, the image's \
    size: a valid graft mask) and DIR/STEM.overlay.png (the image with each class but class 0 \
    blended 50/50 in a fixed colour). Without --out, --json prints each image's class pixel \
    counts only (mask and overlay null); without either, it is an error."
)]
pub struct PredictArgs {
    /// Images to classify or segment (JPEG or PNG), or texts for a text run.
    inputs: Vec<String>,
    /// For a text run: a file of texts, one a line (after those given as arguments).
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    source: ImageModelArgs,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// One JSON object per image (segmentation: {"image", "mask", "overlay", "size": [w, h],
    /// "class_pixels": {class: pixels}}).
    #[arg(long)]
    json: bool,
    /// Segmentation runs: the folder to write STEM.mask.png and STEM.overlay.png into
    /// (created if missing). Required unless --json.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Which image classifier to run and how to prepare its input: a run folder, or a zoo model
/// with a weights file. Shared by `predict` and `explain`.
#[derive(Args, Debug)]
pub struct ImageModelArgs {
    /// A run folder from `graft fit` (model, weights, classes and preprocessing come from it).
    #[arg(long, conflicts_with_all = ["model", "weights"])]
    pub run: Option<PathBuf>,
    /// Backbone from the zoo.
    #[arg(long)]
    model: Option<String>,
    /// With --model: imagenet (its published ImageNet weights, downloaded once and checked), an
    /// id of `graft weights`, or a .pth / .safetensors file [default: imagenet].
    #[arg(long, requires = "model")]
    weights: Option<String>,
    /// Width of the head (1000: an ImageNet head).
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// auto (shorter-crop, but an image smaller than the input size is upscaled whole),
    /// shorter-crop (resize the shorter side to size/0.875, centre crop), exact (resize to
    /// size×size) or none (the image must already be size×size) [default: the run's, or auto].
    #[arg(long)]
    resize: Option<Resize>,
    /// Square input size [default: the model's].
    #[arg(long)]
    image_size: Option<usize>,
    /// With `--strict false`, a head whose shape differs from --num-classes is left at a fresh
    /// init instead of being an error (every backbone tensor must still match).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    strict: bool,
    /// cpu | vulkan | wgpu | cuda (see the README's GPU section)
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
}

impl ImageModelArgs {
    /// Loads the classifier the flags name.
    pub fn load(&self) -> Result<ImagePredictor> {
        let options = ImageOptions {
            num_classes: self.num_classes,
            strict: self.strict,
            resize: self.resize,
            image_size: self.image_size,
        };
        options.check()?;
        let device = self.device.device()?;
        if let Some(run) = &self.run {
            return Ok(ImagePredictor::from_run(run, &options, &device)?);
        }
        let Some(name) = &self.model else {
            bail!("give either --run DIR or --model NAME [--weights imagenet|ID|FILE]");
        };
        let spec = self
            .weights
            .as_deref()
            .unwrap_or(graft::weights::hub::IMAGENET);
        let root = graft::files::cache_root(None);
        let weights = graft::weights::hub::resolve_path(spec, name, &root, false)?;
        let m = ImagePredictor::from_zoo(name, &weights, &options, &device)?;
        if m.head_untrained {
            eprintln!(
                "warning: the file's head does not have {} classes; using an untrained head",
                self.num_classes
            );
        }
        Ok(m)
    }
}

/// One class of a classification line of `predict --json`.
#[derive(Serialize)]
struct Prediction {
    index: usize,
    label: String,
    prob: f32,
    logit: f32,
}

impl From<ClassScore> for Prediction {
    fn from(c: ClassScore) -> Self {
        Prediction {
            index: c.index,
            label: c.label,
            prob: c.probability,
            logit: c.logit,
        }
    }
}

#[derive(Serialize)]
struct ImageResult {
    image: String,
    top: Vec<Prediction>,
}

pub fn run(a: PredictArgs) -> Result<()> {
    if let Some(run) = &a.source.run {
        match task_of_run(run)?.as_str() {
            "text-classification" => return predict_texts(&a, run),
            "segmentation" => return predict_masks(&a, run),
            _ => {}
        }
    }
    if let Some(out) = &a.out {
        bail!(
            "--out {}: only a segmentation run writes files (masks); an image classifier \
             prints its classes (drop --out, or use --json > FILE)",
            out.display()
        );
    }
    if a.inputs.is_empty() {
        bail!("no images to classify: give their paths");
    }
    let m = a.source.load()?;
    for path in a.inputs.iter().map(PathBuf::from) {
        let p = m.predict(&path, a.top)?;
        let top: Vec<Prediction> = p.top.into_iter().map(Prediction::from).collect();
        if a.json {
            let r = ImageResult {
                image: path.display().to_string(),
                top,
            };
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", path.display());
            print_top(&top);
        }
    }
    Ok(())
}

/// A classification's lines of text: percentage, class index, label.
fn print_top(top: &[Prediction]) {
    for t in top {
        println!("  {:>6.2}%  {:>4}  {}", t.prob * 100.0, t.index, t.label);
    }
}

/// One image's line of `predict --json` for a segmentation run.
#[derive(Serialize)]
struct MaskResult {
    image: String,
    mask: Option<String>,
    overlay: Option<String>,
    size: [u32; 2],
    class_pixels: serde_json::Map<String, serde_json::Value>,
}

/// `predict --run SEGMENTATION_RUN IMAGE... --out DIR`: each image's mask and overlay.
fn predict_masks(a: &PredictArgs, run: &Path) -> Result<()> {
    if a.inputs.is_empty() {
        bail!("no images to segment: give their paths");
    }
    if a.out.is_none() && !a.json {
        bail!(
            "a segmentation run predicts masks: give --out DIR to write DIR/STEM.mask.png and \
             DIR/STEM.overlay.png (or --json alone for each image's class pixel counts)"
        );
    }
    if a.file.is_some() {
        bail!("--file is for text runs; give the images as arguments");
    }
    if a.source.image_size.is_some() || a.source.resize.is_some() {
        bail!(
            "--image-size and --resize are for image classifiers: a segmentation run predicts \
             at its own image size (its model.json's image_size)"
        );
    }
    let inputs: Vec<PathBuf> = a.inputs.iter().map(PathBuf::from).collect();
    // Every file checked, and every output name distinct, before the model is even loaded.
    check_mask_inputs(&inputs)?;
    let device = a.source.device.device()?;
    let predictor = SegPredictor::from_run(run, &device)?;
    let names = predictor.labels();
    predictor.predict_files(&inputs, a.out.as_deref(), |p| -> Result<()> {
        let total = (p.width as u64 * p.height as u64).max(1);
        let class_pixels = &p.predicted.class_pixels;
        if a.json {
            let r = MaskResult {
                image: p.path.display().to_string(),
                mask: p.mask_file.map(|m| m.display().to_string()),
                overlay: p.overlay_file.map(|o| o.display().to_string()),
                size: [p.width, p.height],
                class_pixels: names
                    .iter()
                    .zip(class_pixels)
                    .map(|(name, &n)| (name.clone(), n.into()))
                    .collect(),
            };
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{} ({}x{})", p.path.display(), p.width, p.height);
            if let (Some(m), Some(o)) = (&p.mask_file, &p.overlay_file) {
                println!("  mask     {}", m.display());
                println!("  overlay  {}", o.display());
            }
            for (k, (name, &n)) in names.iter().zip(class_pixels).enumerate() {
                if n == 0 {
                    continue;
                }
                let colour = class_colour(k as u8).map_or_else(
                    || "uncoloured".to_string(),
                    |[r, g, b]| format!("#{r:02x}{g:02x}{b:02x}"),
                );
                println!(
                    "  {:>6.2}%  {k:>3}  {name}  ({colour})",
                    n as f64 / total as f64 * 100.0
                );
            }
        }
        Ok(())
    })
}

/// `predict --run TEXT_RUN`: the classes of texts.
fn predict_texts(a: &PredictArgs, run: &Path) -> Result<()> {
    let mut texts = a.inputs.clone();
    if let Some(f) = &a.file {
        texts.extend(graft::files::read_text(f)?.lines().map(str::to_string));
    }
    if texts.is_empty() {
        bail!("no texts to classify: give them as arguments or with --file");
    }
    let device = a.source.device.device()?;
    let predictor = TextPredictor::from_run(run, &device)?;
    for text in &texts {
        let p = predictor.predict(text, a.top)?;
        let top: Vec<Prediction> = p.top.into_iter().map(Prediction::from).collect();
        if a.json {
            let r = serde_json::json!({"text": text, "top": top});
            println!("{r}");
        } else {
            println!("{text}");
            print_top(&top);
        }
    }
    Ok(())
}
