//! `graft predict`: classify images with a pretrained model (ImageNet labels) or a fine-tuned
//! run (the dataset's class names); with a segmentation run, write each image's predicted mask
//! and a colour overlay.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use graft::data::{Image, Pipeline, Resize};
use graft::model::params::{Strictness, load_into};
use graft::model::{Classifier, Preset, preset};
use graft::task::image_classification::load_run;
use graft::tensor::{DeviceKind, from_vec, to_vec};
use graft::weights::load_pretrained;
use serde::Serialize;

/// The 1000 ImageNet class names, in the order of the pretrained heads.
const IMAGENET_CLASSES: &str = include_str!("../../../assets/imagenet_classes.txt");

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
    #[arg(long, requires = "weights")]
    model: Option<String>,
    /// Weights file (.pth or .safetensors).
    #[arg(long)]
    weights: Option<PathBuf>,
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

/// An image classifier ready to run, with what its inputs and outputs mean.
pub struct ImageModel {
    /// Not folded: `explain` differentiates through it.
    pub model: Classifier,
    pub preset: &'static Preset,
    /// One name per class of the head.
    pub labels: Vec<String>,
    /// The preprocessing of its inputs, to `size`×`size`.
    pub pipe: Pipeline,
    pub size: usize,
    pub device: Device,
}

impl ImageModel {
    /// Decodes and preprocesses the image at `path`: `(3, H, W)` normalised, and its shape.
    pub fn input(&self, path: &Path) -> Result<(Vec<f32>, [usize; 3])> {
        // Only regular files are read (a pipe named .jpg would block forever).
        let bytes = graft::files::read_file(path)?;
        let image = Image::decode(path, &bytes)?;
        self.prepare(&image)
            .with_context(|| format!("{}", path.display()))
    }

    /// Preprocesses a decoded image: `(3, H, W)` normalised, and its shape.
    pub fn prepare(&self, image: &Image) -> Result<(Vec<f32>, [usize; 3])> {
        let mut rng = rand::rngs::mock::StepRng::new(0, 0);
        Ok(self.pipe.apply(image, &mut rng)?)
    }
}

impl ImageModelArgs {
    /// Loads the classifier the flags name.
    pub fn load(&self) -> Result<ImageModel> {
        use graft::config::{MAX_CLASSES, MAX_IMAGE_SIZE};
        if !(1..=MAX_CLASSES).contains(&self.num_classes) {
            bail!("--num-classes must be between 1 and {MAX_CLASSES}");
        }
        if self
            .image_size
            .is_some_and(|s| !(1..=MAX_IMAGE_SIZE).contains(&s))
        {
            bail!("--image-size must be between 1 and {MAX_IMAGE_SIZE}");
        }
        let device = self.device.device()?;
        let (model, preset, labels, size, resize) = if let Some(run) = &self.run {
            let (model, card, p) = load_run(run, &device)?;
            let resize = self.resize.unwrap_or(card.resize);
            (
                model,
                p,
                card.class_names,
                self.image_size.unwrap_or(card.image_size),
                resize,
            )
        } else {
            let (Some(name), Some(weights)) = (&self.model, &self.weights) else {
                bail!("give either --run DIR or --model NAME --weights FILE");
            };
            let p = preset(name)?;
            let map = load_pretrained(weights)?;
            let model = Classifier::new(p, self.num_classes, &device);
            let strictness = if self.strict {
                Strictness::Strict
            } else {
                Strictness::SkipHead
            };
            let (model, report) = load_into(model, &map, p.head_name, strictness).map_err(|e| {
                let message = graft::model::with_model_hint(e.to_string(), &map, p.name);
                anyhow::anyhow!("{}: {message}", weights.display())
            })?;
            if !report.head_skipped.is_empty() {
                eprintln!(
                    "warning: the file's head does not have {} classes; using an untrained head",
                    self.num_classes
                );
            }
            let labels: Vec<String> = if self.num_classes == 1000 {
                IMAGENET_CLASSES.lines().map(str::to_string).collect()
            } else {
                (0..self.num_classes)
                    .map(|i| format!("class {i}"))
                    .collect()
            };
            let resize = self.resize.unwrap_or(Resize::Auto);
            (
                model,
                p,
                labels,
                self.image_size.unwrap_or(p.input_size),
                resize,
            )
        };
        let pipe = Pipeline::eval(size, preset.mean, preset.std, resize)?;
        Ok(ImageModel {
            model,
            preset,
            labels,
            pipe,
            size,
            device,
        })
    }
}

#[derive(Serialize)]
struct Prediction {
    index: usize,
    label: String,
    prob: f32,
    logit: f32,
}

#[derive(Serialize)]
struct ImageResult {
    image: String,
    top: Vec<Prediction>,
}

pub fn run(a: PredictArgs) -> Result<()> {
    if let Some(run) = &a.source.run {
        match run_task(run)?.as_str() {
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
    // Inference only: fold BatchNorm into the convolutions (same outputs, less work).
    let model = m.model.folded_for_inference();
    for path in a.inputs.iter().map(PathBuf::from) {
        let (pixels, [c, h, w]) = m.input(&path)?;
        let logits = to_vec(model.forward(from_vec(pixels, [1, c, h, w], &m.device)));
        let top = top_k(&logits, a.top, &m.labels);
        if a.json {
            let r = ImageResult {
                image: path.display().to_string(),
                top,
            };
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", path.display());
            for t in top {
                println!("  {:>6.2}%  {:>4}  {}", t.prob * 100.0, t.index, t.label);
            }
        }
    }
    Ok(())
}

/// The task of a run folder: its config.toml's `task`, else its model.json's (a finished
/// run copied without its settings), else image classification (folders that predate tasks).
fn run_task(run: &Path) -> Result<String> {
    if run.join("config.toml").is_file() {
        return Ok(graft::train::run_config(run)?.task);
    }
    let card = run.join("model.json");
    if card.is_file() {
        let json: serde_json::Value = serde_json::from_str(&graft::files::read_text(&card)?)
            .with_context(|| format!("{}: not valid JSON", card.display()))?;
        if let Some(task) = json.get("task").and_then(|t| t.as_str()) {
            return Ok(task.to_string());
        }
    }
    Ok("image-classification".to_string())
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

/// Images decoded and predicted at once (bounds the memory of many large images).
const SEG_CHUNK: usize = 8;

/// `predict --run SEGMENTATION_RUN IMAGE... --out DIR`: each image's mask and overlay.
fn predict_masks(a: &PredictArgs, run: &Path) -> Result<()> {
    use graft::task::segmentation::predict::{colour_overlay, mask_png, predict_masks, read_image};
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
    // Every file checked, and every output name distinct, before anything is computed.
    let mut stems = std::collections::HashMap::new();
    for path in &inputs {
        graft::files::open_regular(path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .with_context(|| format!("{}: no file name to name its mask after", path.display()))?;
        if let Some(first) = stems.insert(stem.clone(), path) {
            bail!(
                "{} and {} would both write {stem}.mask.png: predict them in separate runs \
                 (or rename one)",
                first.display(),
                path.display()
            );
        }
    }
    let device = a.source.device.device()?;
    let (model, card, _) = graft::task::segmentation::load_seg_run(run, &device)?;
    // Inference only: BatchNorm folded into the convolutions (same outputs, less work).
    let model = model.folded_for_inference();
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: can't create the output folder", out.display()))?;
    }
    for chunk in inputs.chunks(SEG_CHUNK) {
        let images = chunk
            .iter()
            .map(|p| read_image(p))
            .collect::<graft::error::Result<Vec<_>>>()?;
        let predicted = predict_masks(&model, &card, &images)?;
        for ((path, image), p) in chunk.iter().zip(&images).zip(&predicted) {
            let (mut mask_path, mut overlay_path) = (None, None);
            if let Some(out) = &a.out {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                let m = out.join(format!("{stem}.mask.png"));
                let o = out.join(format!("{stem}.overlay.png"));
                graft::files::write_atomic(&m, &mask_png(&p.mask)?)?;
                let overlay = colour_overlay(image, &p.mask)?;
                graft::files::write_atomic(&o, &graft::explain::overlay::png_bytes(&overlay)?)?;
                mask_path = Some(m);
                overlay_path = Some(o);
            }
            let total = (image.width as u64 * image.height as u64).max(1);
            if a.json {
                let r = MaskResult {
                    image: path.display().to_string(),
                    mask: mask_path.map(|m| m.display().to_string()),
                    overlay: overlay_path.map(|o| o.display().to_string()),
                    size: [image.width, image.height],
                    class_pixels: card
                        .class_names
                        .iter()
                        .zip(&p.class_pixels)
                        .map(|(name, &n)| (name.clone(), n.into()))
                        .collect(),
                };
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{} ({}x{})", path.display(), image.width, image.height);
                if let (Some(m), Some(o)) = (&mask_path, &overlay_path) {
                    println!("  mask     {}", m.display());
                    println!("  overlay  {}", o.display());
                }
                for (k, (name, &n)) in card.class_names.iter().zip(&p.class_pixels).enumerate() {
                    if n == 0 {
                        continue;
                    }
                    let colour = graft::task::segmentation::predict::class_colour(k as u8)
                        .map_or_else(
                            || "uncoloured".to_string(),
                            |[r, g, b]| format!("#{r:02x}{g:02x}{b:02x}"),
                        );
                    println!(
                        "  {:>6.2}%  {k:>3}  {name}  ({colour})",
                        n as f64 / total as f64 * 100.0
                    );
                }
            }
        }
    }
    Ok(())
}

/// `predict --run TEXT_RUN`: the classes of texts.
fn predict_texts(a: &PredictArgs, run: &std::path::Path) -> Result<()> {
    use graft::model::text_encoder::batch_tensors;
    let mut texts = a.inputs.clone();
    if let Some(f) = &a.file {
        texts.extend(graft::files::read_text(f)?.lines().map(str::to_string));
    }
    if texts.is_empty() {
        bail!("no texts to classify: give them as arguments or with --file");
    }
    let device = a.source.device.device()?;
    let (model, card, tokenizer) = graft::task::text_classification::load_text_run(run, &device)?;
    for text in &texts {
        let batch = tokenizer.encode_batch(&[text.as_str()])?;
        let (ids, types, mask) = batch_tensors(&batch, &device);
        let logits = to_vec(model.forward(ids, types, mask));
        let top = top_k(&logits, a.top, &card.class_names);
        if a.json {
            let r = serde_json::json!({"text": text, "top": top});
            println!("{r}");
        } else {
            println!("{text}");
            for t in top {
                println!("  {:>6.2}%  {:>4}  {}", t.prob * 100.0, t.index, t.label);
            }
        }
    }
    Ok(())
}

/// The `k` most probable classes, with softmax probabilities.
fn top_k(logits: &[f32], k: usize, labels: &[String]) -> Vec<Prediction> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order
        .into_iter()
        .take(k)
        .map(|i| Prediction {
            index: i,
            label: labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
            prob: exp[i] / sum,
            logit: logits[i],
        })
        .collect()
}
