//! The image-classification part of a run's report: the classification sections, and the grid
//! of misclassified test images (each reloaded from the evaluated dataset, encoded as PNG and
//! inlined as a `data:` URL with its "true → predicted (p)" caption).

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::config::FitConfig;
use crate::data::{self, Image, Source};
use crate::error::{Error, Result};
use crate::metrics::{Evaluation, Misclassified};
use crate::render::html::{esc, note};
use crate::task::classification::report as shared;
use crate::train::{Section, TaskReport};

use super::heatmaps;

/// The task's cards and sections for the run in `run_dir`: the classification ones, and the
/// misclassified test images.
pub(super) fn report(run_dir: &Path, cfg: Option<&FitConfig>) -> Result<TaskReport> {
    let mut heat = None;
    let mut report = shared::report(run_dir, "Misclassified test images", |e| {
        // The images come from the dataset the evaluation names (older evaluations: the
        // run's own).
        let spec = e.data.as_deref().or(cfg.map(|c| c.data.as_str()));
        heat = Some(heatmaps::section(run_dir, spec, e));
        grid(spec, e)
    })?;
    if let Some(html) = heat {
        report.sections.push(Section::new(
            "heatmaps",
            "Where the model looked (Grad-CAM)",
            html,
        ));
    }
    Ok(report)
}

/// Images larger than this (either side) are shrunk for the page.
const MAX_SIDE: u32 = 128;
/// At most this many images are shown.
const MAX_SHOWN: usize = 64;

/// The HTML of the grid. Never fails: a dataset that can't be opened or a sample that can't
/// be loaded is reported in the page instead.
fn grid(spec: Option<&str>, eval: &Evaluation) -> String {
    let wrong = &eval.misclassified[..eval.misclassified.len().min(MAX_SHOWN)];
    if wrong.is_empty() {
        return note(if eval.samples > 0 && eval.accuracy >= 1.0 {
            "Every test sample was classified correctly."
        } else {
            "eval.json lists no misclassified samples (it may predate this report)."
        });
    }
    let mut html = format!(
        "<p class=\"caption\">The first {} misclassified test samples, captioned true → predicted \
         (probability of the prediction).</p>\n",
        wrong.len()
    );
    let source = match spec.filter(|s| !s.trim().is_empty()) {
        None => {
            html += &note(
                "The run does not name its dataset (no config.toml or model.json): images can't be shown.",
            );
            None
        }
        Some(spec) => match data::open(spec) {
            Ok(ds) => Some(ds.test.source),
            Err(e) => {
                html += &note(&format!(
                    "Could not open the dataset `{spec}` to show the images: {e}"
                ));
                None
            }
        },
    };
    html.push_str("<div class=\"grid\">\n");
    for m in wrong {
        let caption = caption(m, &eval.class_names);
        let picture = match &source {
            Some(src) => match load_png(src.as_ref(), m.index) {
                Ok(b64) => format!(
                    "<img src=\"data:image/png;base64,{b64}\" alt=\"test sample {} {}\">",
                    m.index,
                    esc(&caption)
                ),
                Err(e) => format!("<div class=\"note\">{}</div>", esc(&e.to_string())),
            },
            None => String::new(),
        };
        let _ = writeln!(
            html,
            "<figure>{picture}<figcaption>{}<br><span class=\"caption\">#{}</span></figcaption></figure>",
            esc(&caption),
            m.index
        );
    }
    html.push_str("</div>");
    html
}

/// `"cat → dog (0.87)"`.
fn caption(m: &Misclassified, names: &[String]) -> String {
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    format!(
        "{} → {} ({:.2})",
        name(m.label),
        name(m.predicted),
        m.probability
    )
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
