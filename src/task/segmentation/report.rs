//! The segmentation part of a run's report: headline cards and per-class IoU / Dice (a table
//! with bars), from the run's `eval.json`, and the first test images with their true and
//! predicted masks drawn over them (computed from the run's saved model).

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use burn::tensor::Device;
use image::{RgbImage, imageops};

use super::data::{SegDataset, read_mask};
use super::evaluate::SegEvaluation;
use super::model_files::load_seg_run;
use super::predict::{
    class_colour, colour_overlay, pixel_accuracy, predict_masks, read_image, to_rgb,
};
use crate::config::FitConfig;
use crate::error::Result;
use crate::explain::overlay::png_bytes;
use crate::render::html::{Cell, esc, note, num, pct, table};
use crate::train::{Section, TaskReport};

/// The `masks` section's heading.
const MASKS_HEADING: &str = "Test images: truth and prediction";

pub(super) fn report(run_dir: &Path, cfg: Option<&FitConfig>) -> Result<TaskReport> {
    let eval: Option<SegEvaluation> =
        crate::task::classification::report::read_json_if_present(&run_dir.join("eval.json"))?;
    let Some(e) = eval else {
        return Ok(TaskReport {
            cards: Vec::new(),
            sections: vec![
                Section::new(
                    "per-class-iou",
                    "IoU per class",
                    note("No eval.json yet (the run has not finished): no test metrics to show."),
                ),
                Section::new("masks", MASKS_HEADING, masks_section(run_dir, None, cfg)),
            ],
        });
    };
    let cards = vec![
        ("test mIoU".to_string(), pct(e.miou)),
        ("pixel accuracy".to_string(), pct(e.pixel_accuracy)),
        ("mean Dice".to_string(), pct(e.dice)),
        ("test loss".to_string(), num(e.loss, 4)),
        ("test images".to_string(), e.samples.to_string()),
    ];
    Ok(TaskReport {
        cards,
        sections: vec![
            Section::new("per-class-iou", "IoU per class", per_class(&e)),
            Section::new(
                "masks",
                MASKS_HEADING,
                masks_section(run_dir, Some(&e.data), cfg),
            ),
        ],
    })
}

/// One row per class: IoU as a bar and a number, Dice, the class's share of the pixels.
fn per_class(e: &SegEvaluation) -> String {
    let rows: Vec<(Vec<Cell>, bool)> = e
        .class_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let iou = e.iou_per_class.get(i).copied().unwrap_or(0.0);
            let pixels: u64 = e.confusion.get(i).map_or(0, |r| r.iter().sum());
            let share = if e.pixels > 0 {
                pixels as f64 / e.pixels as f64
            } else {
                0.0
            };
            let mut bar = String::new();
            let _ = write!(
                bar,
                "<span style=\"display:inline-block;width:{:.1}px;height:0.8em;\
                 background:#4c78a8\"></span>",
                (iou.clamp(0.0, 1.0) * 200.0)
            );
            let absent = if e.absent_classes.contains(&i) {
                " (absent: counts as 0)"
            } else {
                ""
            };
            (
                vec![
                    Cell::Left(format!("{name}{absent}")),
                    Cell::Html(bar),
                    Cell::Num(num(iou, 4)),
                    Cell::Num(num(e.dice_per_class.get(i).copied().unwrap_or(0.0), 4)),
                    Cell::Num(pct(share)),
                ],
                false,
            )
        })
        .collect();
    format!(
        "<p class=\"caption\">On {} test images ({} pixels; 255 = ignored pixels left out), as \
         smp computes them: pixel counts summed over the split, then per class. {}</p>{}",
        e.samples,
        e.pixels,
        esc(&format!(
            "mIoU {:.4}, pooled (micro) IoU {:.4}.",
            e.miou, e.iou_micro
        )),
        table(
            &[
                ("class", true),
                ("IoU", true),
                ("", false),
                ("Dice", false),
                ("pixels", false)
            ],
            &rows
        )
    )
}

/// Test images shown with their masks.
const MAX_SHOWN: usize = 8;
/// Images smaller than this (their larger side) are enlarged for the page, by whole factors.
const MIN_SHOWN_SIDE: u32 = 128;
/// Images larger than this (either side) are shrunk for the page.
const MAX_SHOWN_SIDE: u32 = 256;

/// The `masks` section's HTML: the first test images of the evaluated dataset (`spec`, else
/// the run's), each with its true and predicted masks drawn over it. Never fails: what can't
/// be shown is said in the page.
fn masks_section(run_dir: &Path, spec: Option<&str>, cfg: Option<&FitConfig>) -> String {
    if !run_dir.join("model.safetensors").is_file() {
        return note("The run has no model.safetensors (yet): no predicted masks to show.");
    }
    let named = |s: &&str| !s.trim().is_empty();
    let Some(spec) = spec
        .filter(named)
        .or(cfg.map(|c| c.data.as_str()).filter(named))
    else {
        return note("The run does not name its dataset: no test images to show.");
    };
    let ds = match SegDataset::open(spec) {
        Ok(ds) => ds,
        Err(e) => {
            return note(&format!(
                "Could not open the dataset `{spec}` to show test images: {e}"
            ));
        }
    };
    // The run's own test split is the one it evaluated: `--limit-test`'s subset of it.
    let ds = match cfg {
        Some(c) if c.data == spec => match c.limit_test {
            Some(n) => ds.limit_test(n, c.seed),
            None => ds,
        },
        _ => ds,
    };
    match masks(run_dir, &ds) {
        Ok(html) => html,
        Err(e) => note(&format!("The masks could not be drawn: {e}")),
    }
}

fn masks(run_dir: &Path, ds: &SegDataset) -> Result<String> {
    let device = Device::flex();
    let (model, card, _) = load_seg_run(run_dir, &device)?;
    let samples = &ds.test[..ds.test.len().min(MAX_SHOWN)];
    let images = samples
        .iter()
        .map(|s| read_image(&s.image))
        .collect::<Result<Vec<_>>>()?;
    let truths = samples
        .iter()
        .map(|s| read_mask(&s.mask))
        .collect::<Result<Vec<_>>>()?;
    let predicted = predict_masks(&model.folded_for_inference(), &card, &images)?;
    let name = |k: usize| {
        card.class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"))
    };
    let mut rows = Vec::new();
    let mut ignored = false;
    for (((sample, image), truth), p) in samples.iter().zip(&images).zip(&truths).zip(&predicted) {
        ignored |= truth
            .values
            .contains(&crate::metrics::segmentation::IGNORE_INDEX);
        let file = sample
            .image
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let plain = to_rgb(image);
        let accuracy = pixel_accuracy(&p.mask, truth);
        rows.push((
            vec![
                Cell::Html(format!(
                    "{}<br><span class=\"caption\">{} ({}×{})</span>",
                    img(&plain, &format!("test image {file}"))?,
                    esc(&file),
                    image.width,
                    image.height
                )),
                Cell::Html(img(
                    &colour_overlay(image, truth)?,
                    &format!("true mask of {file}"),
                )?),
                Cell::Html(img(
                    &colour_overlay(image, &p.mask)?,
                    &format!("predicted mask of {file}"),
                )?),
                Cell::Num(accuracy.map_or_else(|| "—".to_string(), pct)),
            ],
            false,
        ));
    }
    let mut legend = String::from("<p class=\"caption\">");
    let _ = write!(legend, "{}: uncoloured", esc(&name(0)));
    for k in 1..card.num_classes.min(255) {
        if let Some([r, g, b]) = class_colour(k as u8) {
            let _ = write!(
                legend,
                " · <span style=\"display:inline-block;width:0.9em;height:0.9em;\
                 vertical-align:middle;background:rgb({r},{g},{b})\"></span> {}",
                esc(&name(k))
            );
        }
    }
    if ignored {
        legend += " · ignored pixels (255): uncoloured";
    }
    legend += "</p>";
    Ok(format!(
        "<p class=\"caption\">The first {} of {} test images of {}, each with its true mask and \
         the run's predicted mask drawn over it (half image, half class colour), and the share \
         of its pixels predicted right at the image's own size (255 left out; the test metrics \
         above are taken at the model's {} px). Small images are enlarged, pixel for pixel. \
         <code>graft predict --run RUN IMAGE... --out DIR</code> writes such masks for any \
         image.</p>\n{legend}\n{}",
        samples.len(),
        ds.test.len(),
        esc(&ds.name),
        card.image_size,
        table(
            &[
                ("image", true),
                ("true mask", true),
                ("predicted", true),
                ("pixel accuracy", false),
            ],
            &rows
        )
    ))
}

/// `picture` scaled for the page: enlarged by the whole factor that brings its larger side to
/// at least [`MIN_SHOWN_SIDE`] (nearest: pixels stay sharp squares), or shrunk to fit
/// [`MAX_SHOWN_SIDE`].
fn for_page(picture: &RgbImage) -> RgbImage {
    let (w, h) = picture.dimensions();
    let side = w.max(h).max(1);
    if side < MIN_SHOWN_SIDE {
        let k = MIN_SHOWN_SIDE.div_ceil(side);
        imageops::resize(picture, w * k, h * k, imageops::FilterType::Nearest)
    } else if side > MAX_SHOWN_SIDE {
        let s = MAX_SHOWN_SIDE as f64 / side as f64;
        let (dw, dh) = (
            ((w as f64 * s).round() as u32).max(1),
            ((h as f64 * s).round() as u32).max(1),
        );
        imageops::resize(picture, dw, dh, imageops::FilterType::Triangle)
    } else {
        picture.clone()
    }
}

/// An `<img>` of `picture` (scaled for the page) as an inline PNG.
fn img(picture: &RgbImage, alt: &str) -> Result<String> {
    let shown = for_page(picture);
    Ok(format!(
        "<img src=\"data:image/png;base64,{}\" width=\"{}\" height=\"{}\" alt=\"{}\" \
         style=\"image-rendering:pixelated\">",
        STANDARD.encode(png_bytes(&shown)?),
        shown.width(),
        shown.height(),
        esc(alt)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_grow_by_whole_factors_and_large_ones_shrink() {
        let tiny = RgbImage::new(32, 20);
        assert_eq!(for_page(&tiny).dimensions(), (128, 80));
        let odd = RgbImage::new(48, 48);
        assert_eq!(for_page(&odd).dimensions(), (144, 144));
        let big = RgbImage::new(1024, 512);
        assert_eq!(for_page(&big).dimensions(), (256, 128));
        let fine = RgbImage::new(200, 100);
        assert_eq!(for_page(&fine).dimensions(), (200, 100));
    }

    #[test]
    fn a_run_without_a_model_or_data_gets_notes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(masks_section(dir.path(), Some("seg:/nowhere"), None).contains("no model"));
        std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
        let html = masks_section(dir.path(), Some("seg:/nowhere"), None);
        assert!(html.contains("Could not open the dataset"), "{html}");
    }
}
