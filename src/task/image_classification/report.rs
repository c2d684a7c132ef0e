//! The image-classification part of a run's report: the classification sections; the test
//! images of highest loss (fastai's `plot_top_losses`: each reloaded from the evaluated
//! dataset, encoded as PNG and inlined as a `data:` URL, captioned with its file, true and
//! predicted class and loss), Grad-CAM maps over them, and a batch of training images after
//! the run's training transform (fastai's `show_batch`).

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use burn::tensor::Device;

use super::model_files::load_run;
use crate::config::{FitConfig, Strategy};
use crate::data::{self, Dataset, Image, Loader, Pipeline, Source, Subset};
use crate::error::{Error, Result};
use crate::metrics::Evaluation;
use crate::render::html::{esc, note};
use crate::task::classification::report::{
    self as shared, SampleLoss, TopLosses, positions_hash, top_losses, verdict,
};
use crate::tensor::{from_vec, to_vec};
use crate::train::{Section, TaskReport, hold_out_validation};

use super::heatmaps;

/// The task's cards and sections for the run in `run_dir`: the classification ones, the test
/// images of highest loss with their Grad-CAM maps, and a training batch.
pub(super) fn report(run_dir: &Path, cfg: Option<&FitConfig>) -> Result<TaskReport> {
    // The run's own dataset, limited as the run limited it.
    let opened: Option<Result<Dataset>> = cfg
        .filter(|c| !c.data.trim().is_empty())
        .map(super::input::open_limited);
    let mut heat = None;
    let mut report = shared::report(run_dir, "Top losses (test images)", |e| {
        // The images come from the dataset the evaluation names (older evaluations: the
        // run's own).
        let spec = e.data.as_deref().or(cfg.map(|c| c.data.as_str()));
        let test = test_split(spec, cfg, opened.as_ref());
        let top = top_losses(
            run_dir,
            e,
            test.as_ref().ok().map(|t| {
                format!(
                    "{} {} {}",
                    spec.unwrap_or(""),
                    t.len(),
                    positions_hash(&t.indices)
                )
            }),
            || match &test {
                Ok(t) => test_losses(run_dir, cfg, t),
                Err(e) => Err(Error::invalid(e.clone())),
            },
        );
        heat = Some(heatmaps::section(run_dir, test.as_ref().ok(), &top));
        grid(spec, &test, &top, e)
    })?;
    if let Some(html) = heat {
        report.sections.push(Section::new(
            "heatmaps",
            "Where the model looked (Grad-CAM)",
            html,
        ));
    }
    if let Some(cfg) = cfg {
        report.sections.push(Section::new(
            "train-batch",
            "Training images as the model sees them",
            train_batch(cfg, opened.as_ref()),
        ));
    }
    Ok(report)
}

/// The evaluated test split: the run's own (opened with its settings) when `spec` is the
/// run's dataset, else `spec`'s test split; an error is the page's message.
fn test_split(
    spec: Option<&str>,
    cfg: Option<&FitConfig>,
    opened: Option<&Result<Dataset>>,
) -> std::result::Result<Subset, String> {
    let Some(spec) = spec.filter(|s| !s.trim().is_empty()) else {
        return Err(
            "The run does not name its dataset (no config.toml or model.json): images can't be shown."
                .into(),
        );
    };
    let own = cfg.is_some_and(|c| c.data == spec);
    let result = match opened {
        Some(Ok(ds)) if own => return Ok(ds.test.clone()),
        Some(Err(e)) if own => Err(e.to_string()),
        _ => data::open(spec)
            .map(|ds| ds.test)
            .map_err(|e| e.to_string()),
    };
    result.map_err(|e| format!("Could not open the dataset `{spec}` to show the images: {e}"))
}

/// Every test sample's prediction and loss under the run's saved model (its inference copy,
/// on the run's device when it starts, else the CPU).
fn test_losses(run_dir: &Path, cfg: Option<&FitConfig>, test: &Subset) -> Result<Vec<SampleLoss>> {
    let device = cfg
        .and_then(|c| c.device.device().ok())
        .unwrap_or_else(Device::flex);
    let (model, card, preset) = load_run(run_dir, &device)?;
    let model = model.folded_for_inference();
    let pipe = Pipeline::eval(card.image_size, preset.mean, preset.std, card.resize)?;
    let batch_size = cfg.map_or(64, |c| c.batch_size).clamp(1, 256);
    let mut out = Vec::with_capacity(test.len());
    for batch in Loader::sequential(test.clone(), pipe, batch_size) {
        let batch = batch?;
        let logits = to_vec(model.forward(from_vec(batch.images, batch.shape, &device)));
        for ((row, &label), &index) in logits
            .chunks_exact(card.num_classes)
            .zip(&batch.labels)
            .zip(&batch.indices)
        {
            out.push(SampleLoss::from_logits(row, label, index));
        }
    }
    Ok(out)
}

/// Images larger than this (either side) are shrunk for the page.
const MAX_SIDE: u32 = 128;
/// At most this many test images are shown.
const MAX_SHOWN: usize = 32;
/// Training images shown after the training transform.
const BATCH_SHOWN: usize = 16;

/// The HTML of the top-losses grid. Never fails: a dataset that can't be opened or a sample
/// that can't be loaded is reported in the page instead.
fn grid(
    spec: Option<&str>,
    test: &std::result::Result<Subset, String>,
    top: &TopLosses,
    eval: &Evaluation,
) -> String {
    let shown = &top.top[..top.top.len().min(MAX_SHOWN)];
    if shown.is_empty() {
        return note(if eval.samples > 0 && eval.accuracy >= 1.0 {
            "Every test sample was classified correctly."
        } else {
            "eval.json lists no misclassified samples (it may predate this report)."
        });
    }
    let mut html = top.intro(shown.len(), "images");
    let source = match test {
        Ok(t) => Some(t.source.clone()),
        Err(msg) => {
            html += &note(msg);
            None
        }
    };
    let root = spec.map(data_root);
    html.push_str("<div class=\"grid top-losses\">\n");
    for s in shown {
        let caption = verdict(s, &eval.class_names);
        let picture = match &source {
            Some(src) => match load_png(src.as_ref(), s.index) {
                Ok(b64) => format!(
                    "<img src=\"data:image/png;base64,{b64}\" alt=\"test sample {} {}\">",
                    s.index,
                    esc(&caption)
                ),
                Err(e) => format!("<div class=\"note\">{}</div>", esc(&e.to_string())),
            },
            None => String::new(),
        };
        let location = match &source {
            Some(src) => location(src.as_ref(), s.index, root.as_deref()),
            None => format!("test #{}", s.index),
        };
        let loss = if top.exact() {
            format!(" data-loss=\"{:.6}\"", s.loss)
        } else {
            String::new()
        };
        let _ = writeln!(
            html,
            "<figure class=\"top-loss\" data-index=\"{}\"{loss}>{picture}<figcaption>{}<br>{}\
             <br><span class=\"caption path\">{}</span></figcaption></figure>",
            s.index,
            esc(&caption),
            esc(&top.loss_text(s)),
            esc(&location)
        );
    }
    html.push_str("</div>");
    html
}

/// The folder a dataset spec reads files from (`folder:DIR?opts` → `DIR`, a bare `DIR`).
fn data_root(spec: &str) -> PathBuf {
    let rest = spec.trim().strip_prefix("folder:").unwrap_or(spec.trim());
    let dir = rest
        .rsplit_once('?')
        .filter(|(_, q)| q.contains('='))
        .map_or(rest, |(d, _)| d);
    PathBuf::from(dir)
}

/// Where test sample `index` comes from: its file relative to the data folder (the whole path
/// when it is elsewhere), or `test #index` for datasets without a file per sample (CIFAR, IDX).
fn location(source: &dyn Source, index: usize, root: Option<&Path>) -> String {
    let described = source.describe(index);
    let path = Path::new(&described);
    if !path.is_file() {
        return format!("test #{index}");
    }
    root.and_then(|r| path.strip_prefix(r).ok())
        .filter(|p| !p.as_os_str().is_empty())
        .map_or(described.clone(), |p| p.display().to_string())
}

/// A grid of the first [`BATCH_SHOWN`] training images of the first epoch, as the model saw
/// them: the run's training transform (crop and flip at its image size, drawn from the run's
/// seed; a linear probe's evaluation transform), un-normalised back to RGB, each labelled
/// with its class. Never fails: what can't be shown is said.
fn train_batch(cfg: &FitConfig, opened: Option<&Result<Dataset>>) -> String {
    match opened {
        None => note("The run does not name its dataset: no training images to show."),
        Some(Err(e)) => note(&format!(
            "Could not open the dataset `{}` to show training images: {e}",
            cfg.data
        )),
        Some(Ok(ds)) => train_batch_html(cfg, ds)
            .unwrap_or_else(|e| note(&format!("Training images could not be drawn: {e}"))),
    }
}

fn train_batch_html(cfg: &FitConfig, ds: &Dataset) -> Result<String> {
    let preset = crate::model::preset(&cfg.model)?;
    // The training split without the validation samples the run held out (the whole split
    // where holding out fails, as it would have failed the run).
    let held = hold_out_validation(ds.clone(), cfg).unwrap_or_else(|_| ds.clone());
    // The size the run used: given, or chosen from the same training images.
    let size = match cfg.image_size {
        Some(size) => size,
        None => super::input::input_size_for(&held, preset)?.0,
    };
    let probe = cfg.strategy == Strategy::LinearProbe;
    let pipe = if probe {
        Pipeline::eval(size, preset.mean, preset.std, cfg.resize)?
    } else {
        Pipeline::train(size, preset.mean, preset.std, cfg.augment, size / 8)?
    };
    let described = pipe.describe();
    let train = held.train;
    // Each sample's augmentation is drawn from (seed, epoch, position in the epoch): this is
    // the start of the run's first epoch exactly (of a cross-validation fold's, approximately).
    let batch = Loader::new(train, pipe, BATCH_SHOWN, cfg.sampler, cfg.seed, 0)
        .prefetch(1)
        .next()
        .transpose()?;
    let Some(batch) = batch else {
        return Ok(note("The training split is empty."));
    };
    let [n, c, h, w] = batch.shape;
    if c != 3 {
        return Err(Error::invalid(format!(
            "the transform gave {c} channels, not 3"
        )));
    }
    let plane = c * h * w;
    let mut html = format!(
        "<p class=\"caption\">The first {n} training images of epoch 1 after the {} transform \
         (<code>{}</code>, seed {}), un-normalised back to RGB (shown at most {MAX_SIDE} \
         pixels a side), with their classes.</p>\n\
         <div class=\"grid train-batch\">\n",
        if probe {
            "linear probe's (evaluation)"
        } else {
            "training"
        },
        esc(&described),
        cfg.seed
    );
    for (k, (&label, &index)) in batch.labels.iter().zip(&batch.indices).enumerate() {
        let pixels = &batch.images[k * plane..(k + 1) * plane];
        let mut shown =
            crate::explain::overlay::denormalize(pixels, (h, w), preset.mean, preset.std);
        if shown.width() > MAX_SIDE || shown.height() > MAX_SIDE {
            shown = image::imageops::thumbnail(&shown, MAX_SIDE, MAX_SIDE);
        }
        let png = crate::explain::overlay::png_bytes(&shown)?;
        let name = ds
            .class_names
            .get(label)
            .cloned()
            .unwrap_or_else(|| label.to_string());
        let _ = writeln!(
            html,
            "<figure><img src=\"data:image/png;base64,{}\" alt=\"training sample {index}, {}\">\
             <figcaption>{}</figcaption></figure>",
            STANDARD.encode(png),
            esc(&name),
            esc(&name)
        );
    }
    html.push_str("</div>");
    Ok(html)
}

/// Sample `index` of `source` as base64 PNG, shrunk to at most [`MAX_SIDE`] pixels a side.
fn load_png(source: &dyn Source, index: usize) -> Result<String> {
    if index >= source.len() {
        return Err(Error::invalid(format!(
            "sample {index} is outside the test set ({} samples)",
            source.len()
        )));
    }
    let img = source.load(index)?;
    Ok(STANDARD.encode(encode_png(&img)?))
}

fn encode_png(img: &Image) -> Result<Vec<u8>> {
    let bad = || {
        Error::invalid(format!(
            "image {}x{}x{} has the wrong size",
            img.width, img.height, img.channels
        ))
    };
    let dynamic = match img.channels {
        1 => image::DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(img.width, img.height, img.pixels.clone())
                .ok_or_else(bad)?,
        ),
        3 => image::DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(img.width, img.height, img.pixels.clone()).ok_or_else(bad)?,
        ),
        c => {
            return Err(Error::invalid(format!(
                "images with {c} channels can't be shown"
            )));
        }
    };
    let dynamic = if img.width > MAX_SIDE || img.height > MAX_SIDE {
        dynamic.thumbnail(MAX_SIDE, MAX_SIDE)
    } else {
        dynamic
    };
    let mut out = Cursor::new(Vec::new());
    dynamic
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::invalid(format!("encoding a PNG: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_gray_and_rgb_and_shrinks_large_images() {
        let gray = Image::new(4, 3, 1, vec![7; 12]).unwrap();
        let png = encode_png(&gray).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let big = Image::new(400, 200, 3, vec![100; 400 * 200 * 3]).unwrap();
        let back = image::load_from_memory(&encode_png(&big).unwrap()).unwrap();
        assert_eq!((back.width(), back.height()), (128, 64));
    }
}
