//! `graft explain`: class activation maps (Grad-CAM and its family) of images under a
//! fine-tuned run or a pretrained model, as overlay PNGs and JSON, with a faithfulness score.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use graft::data::Image;
use graft::explain::faithfulness::{Faithfulness, faithfulness};
use graft::explain::{Method, default_layer, explain, find_layer, layer_names, overlay};
use graft::tensor::{from_vec, to_vec};
use serde::Serialize;

use crate::predict::ImageModelArgs;

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Images to explain (JPEG or PNG).
    images: Vec<PathBuf>,
    /// With --run: also explain the first N images of the run's test split (captioned with
    /// their true class).
    #[arg(long, requires = "run")]
    test_images: Option<usize>,
    #[command(flatten)]
    source: ImageModelArgs,
    /// gradcam | hirescam | gradcam++ | eigencam | scorecam | random (pytorch-grad-cam's
    /// definitions; random is the baseline a map must beat).
    #[arg(long, default_value = "gradcam")]
    method: Method,
    /// Explain this class (its index) instead of the predicted one.
    #[arg(long, conflicts_with = "top")]
    class: Option<usize>,
    /// Explain each image's N most probable classes.
    #[arg(long, default_value_t = 1)]
    top: usize,
    /// The stage whose map is explained [default: the last, which feeds the head: ResNet's
    /// layer4, EfficientNet-Lite's head; for inputs so small that its map is under 4x4, the
    /// last stage whose map is not]. A wrong name lists the model's stages.
    #[arg(long)]
    layer: Option<String>,
    /// Folder for the overlay PNGs (heat map over the image, colour bar, class and probability).
    #[arg(long)]
    out: Option<PathBuf>,
    /// One JSON object per image and class, with the map at the layer's resolution.
    #[arg(long)]
    json: bool,
    /// Also score the map's faithfulness (RISE: the class probability as the map's top pixels
    /// are turned black, and as they are restored into a blurred copy; insertion AUC − deletion
    /// AUC, higher is better) beside a random map's.
    #[arg(long)]
    faithfulness: bool,
    /// Seed of the random map.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    image: String,
    class: usize,
    label: &'a str,
    /// The true class (test samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    truth: Option<usize>,
    probability: f32,
    method: String,
    layer: &'a str,
    /// ReLU'd and scaled to [0, 1], at the layer's resolution.
    cam: Vec<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overlay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    faithfulness: Option<Faithfulness>,
    #[serde(skip_serializing_if = "Option::is_none")]
    random_faithfulness: Option<Faithfulness>,
}

/// An image to explain: a file, or a sample of the run's test split.
struct Item {
    /// For messages and JSON: the path, or `test #i (source)`.
    name: String,
    /// Overlay files are `{stem}.{method}.{class}.png`.
    stem: String,
    image: Image,
    /// The true class, for test samples.
    truth: Option<usize>,
}

pub fn run(a: ExplainArgs) -> Result<()> {
    if let Some(run) = &a.source.run
        && graft::train::run_config(run)?.task != "image-classification"
    {
        bail!(
            "{}: explain draws maps over images; this run is not an image-classification run",
            run.display()
        );
    }
    if a.test_images == Some(0) {
        bail!("--test-images must be at least 1");
    }
    if a.images.is_empty() && a.test_images.is_none() {
        bail!("no images to explain: give their paths (or --test-images N with --run)");
    }
    if a.out.is_none() && !a.json {
        bail!("nothing to write: give --out DIR (overlay PNGs) and/or --json");
    }
    let m = a.source.load()?;
    if !(1..=m.labels.len()).contains(&a.top) {
        bail!(
            "--top must be between 1 and the model's {} classes",
            m.labels.len()
        );
    }
    let arch = &m.preset.arch;
    let names = layer_names(arch);
    let layer = match &a.layer {
        Some(name) => find_layer(arch, name)?,
        None => {
            let size = m.size;
            let layer = default_layer(arch, size);
            let last = names.len() - 1;
            if layer != last {
                eprintln!(
                    "note: at {size} px the last stage's map ({}) is {}x{}, too coarse to rank \
                     pixels; explaining {} ({}x{}) instead (--layer {} for the last)",
                    names[last],
                    side(size, arch, last),
                    side(size, arch, last),
                    names[layer],
                    side(size, arch, layer),
                    side(size, arch, layer),
                    names[last]
                );
            }
            layer
        }
    };
    let layer_name = &names[layer];
    let folded = m.model.folded_for_inference();
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", out.display()))?;
    }
    let mut scores: Vec<(f32, f32)> = Vec::new();
    for item in items(&a)? {
        let item = item?;
        let (pixels, [c, h, w]) = m.prepare(&item.image).with_context(|| item.name.clone())?;
        let x = from_vec(pixels.clone(), [1, c, h, w], &m.device);
        let targets: Vec<Option<usize>> = match a.class {
            Some(k) => vec![Some(k)],
            None => top_classes(&to_vec(folded.forward(x.clone())), a.top)
                .into_iter()
                .map(Some)
                .collect(),
        };
        // One row per class explained: each row's backward pass is its own class's.
        let batch = x.clone().repeat_dim(0, targets.len());
        let maps = explain(&m.model, batch, layer, a.method, &targets, a.seed)?;
        let shown = overlay::denormalize(&pixels, (h, w), m.preset.mean, m.preset.std);
        let name_of = |k: usize| m.labels.get(k).map_or("?", String::as_str);
        for e in &maps {
            let label = name_of(e.class);
            let overlay_path = match &a.out {
                Some(out) => {
                    let file = out.join(format!("{}.{}.{}.png", item.stem, a.method, e.class));
                    let mut caption = format!("{label} {:.2}", e.probability);
                    if let Some(t) = item.truth.filter(|&t| t != e.class) {
                        caption += &format!(" (true: {})", name_of(t));
                    }
                    let png = overlay::overlay(&shown, &e.cam, (e.height, e.width), &caption);
                    graft::files::write_atomic(&file, &overlay::png_bytes(&png)?)?;
                    Some(file.display().to_string())
                }
                None => None,
            };
            let (faith, random) = if a.faithfulness {
                let score = |cam: &[f32]| {
                    let norm = (m.preset.mean, m.preset.std);
                    faithfulness(&folded, x.clone(), norm, cam, (e.height, e.width), e.class)
                };
                let random_map = explain(
                    &m.model,
                    x.clone(),
                    layer,
                    Method::Random,
                    &[Some(e.class)],
                    a.seed,
                )?;
                let (f, r) = (score(&e.cam)?, score(&random_map[0].cam)?);
                scores.push((f.score, r.score));
                (Some(f), Some(r))
            } else {
                (None, None)
            };
            if a.json {
                let line = Line {
                    image: item.name.clone(),
                    class: e.class,
                    label,
                    truth: item.truth,
                    probability: e.probability,
                    method: a.method.to_string(),
                    layer: layer_name,
                    cam: e.cam.chunks(e.width).collect(),
                    overlay: overlay_path,
                    faithfulness: faith,
                    random_faithfulness: random,
                };
                println!("{}", serde_json::to_string(&line)?);
            } else {
                print!(
                    "{}: {} at {layer_name} for {label} (class {}, p {:.3})",
                    item.name, a.method, e.class, e.probability
                );
                if let Some(p) = &overlay_path {
                    print!(" -> {p}");
                }
                if let (Some(f), Some(r)) = (&faith, &random) {
                    print!(
                        "; faithfulness {:.3} (deletion {:.3}, insertion {:.3}; random map {:.3})",
                        f.score, f.deletion_auc, f.insertion_auc, r.score
                    );
                }
                println!();
            }
        }
    }
    if scores.len() > 1 {
        let n = scores.len() as f32;
        let mean = scores.iter().map(|s| s.0).sum::<f32>() / n;
        let random = scores.iter().map(|s| s.1).sum::<f32>() / n;
        let wins = scores.iter().filter(|s| s.0 > s.1).count();
        eprintln!(
            "faithfulness over {} maps: {} {mean:.3}, random map {random:.3}; {} beats random on \
             {wins} of {} ({:.0}%)",
            scores.len(),
            a.method,
            a.method,
            scores.len(),
            100.0 * wins as f32 / n
        );
    }
    Ok(())
}

/// The images to explain: the files given, then the run's test samples, each decoded only
/// when its turn comes.
fn items(a: &ExplainArgs) -> Result<Box<dyn Iterator<Item = Result<Item>> + '_>> {
    let files = a
        .images
        .iter()
        .zip(file_stems(&a.images))
        .map(|(path, stem)| {
            // Only regular files are read (a pipe named .jpg would block forever).
            let bytes = graft::files::read_file(path)?;
            Ok(Item {
                name: path.display().to_string(),
                stem,
                image: Image::decode(path, &bytes)?,
                truth: None,
            })
        });
    let test = match (a.test_images, &a.source.run) {
        (Some(n), Some(run)) => {
            let spec = graft::train::run_config(run)?.data;
            let test = graft::data::open(&spec)?.test;
            let picked: Vec<usize> = test.indices.iter().take(n).copied().collect();
            Some((test.source, picked))
        }
        _ => None,
    };
    let samples = test.into_iter().flat_map(|(source, picked)| {
        picked.into_iter().enumerate().map(move |(i, index)| {
            Ok(Item {
                name: format!("test #{i} ({})", source.describe(index)),
                stem: format!("test-{i}"),
                image: source.load(index)?,
                truth: Some(source.label(index)),
            })
        })
    });
    Ok(Box::new(files.chain(samples)))
}

/// The side of stage `stage`'s map for `size`-pixel inputs.
fn side(size: usize, arch: &graft::model::Arch, stage: usize) -> usize {
    size.div_ceil(arch.feature_info()[stage].reduction)
}

/// The `n` largest logits' classes, largest first.
fn top_classes(logits: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(n);
    order
}

/// Each image's name for its overlay files: its file stem, prefixed by its position when two
/// inputs share a stem (`a/cat.jpg`, `b/cat.jpg`).
fn file_stems(images: &[PathBuf]) -> Vec<String> {
    let stem = |p: &Path| {
        p.file_stem()
            .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned())
    };
    let mut seen = HashSet::new();
    let unique = images.iter().all(|p| seen.insert(stem(p)));
    images
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if unique {
                stem(p)
            } else {
                format!("{i}-{}", stem(p))
            }
        })
        .collect()
}
