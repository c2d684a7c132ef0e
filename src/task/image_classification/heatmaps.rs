//! The report's "where the model looked" section: Grad-CAM maps (at the default layer,
//! [`crate::explain::default_layer`]) over misclassified test images — for the predicted class and for the
//! true one — and over a few correctly classified ones, computed from the run's saved model.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use burn::tensor::Device;

use super::model_files::load_run;
use crate::data::{self, Pipeline, Subset};
use crate::error::Result;
use crate::explain::{self, Method, overlay};
use crate::metrics::Evaluation;
use crate::render::html::{esc, note};
use crate::tensor::from_vec;

/// Misclassified test images shown with their maps (a map costs a forward and backward pass).
const MAX_WRONG: usize = 12;
/// Correctly classified ones.
const MAX_RIGHT: usize = 6;
/// Side of each image on the page.
const SIDE: u32 = 112;

/// The section's HTML. Never fails: what can't be shown is said in the page.
pub(super) fn section(run_dir: &Path, spec: Option<&str>, eval: &Evaluation) -> String {
    if !run_dir.join("model.safetensors").is_file() {
        return note("The run has no model.safetensors: no heat maps.");
    }
    let Some(spec) = spec.filter(|s| !s.trim().is_empty()) else {
        return note("The run does not name its dataset: no images to explain.");
    };
    match maps(run_dir, spec, eval) {
        Ok(html) => html,
        Err(e) => note(&format!("Heat maps could not be drawn: {e}")),
    }
}

/// One image to show: its sample index, true class and predicted class.
struct Pick {
    index: usize,
    label: usize,
    predicted: usize,
}

fn maps(run_dir: &Path, spec: &str, eval: &Evaluation) -> Result<String> {
    let device = Device::flex();
    let (model, card, preset) = load_run(run_dir, &device)?;
    let test = data::open(spec)?.test;
    let picks = picks(&test, eval);
    if picks.is_empty() {
        return Ok(note("No test images to explain."));
    }
    let pipe = Pipeline::eval(card.image_size, preset.mean, preset.std, card.resize)?;
    let layer = explain::default_layer(&preset.arch, card.image_size);
    let layer_name = &explain::layer_names(&preset.arch)[layer];
    let name = |k: usize| {
        card.class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| k.to_string())
    };
    let mut wrong = String::new();
    let mut right = String::new();
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    for pick in &picks {
        let image = test.source.load(pick.index)?;
        let (pixels, [c, h, w]) = pipe.apply(&image, &mut rng)?;
        let mut targets = vec![Some(pick.predicted)];
        if pick.label != pick.predicted {
            targets.push(Some(pick.label));
        }
        let x = from_vec(pixels.clone(), [1, c, h, w], &device).repeat_dim(0, targets.len());
        let found = explain::explain(&model, x, layer, Method::GradCam, &targets, 0)?;
        let shown = overlay::denormalize(&pixels, (h, w), preset.mean, preset.std);
        let mut figure = format!("<figure>{}", img(&shown, "the input as the model saw it")?);
        for (e, what) in found.iter().zip(["predicted", "true"]) {
            let heat = overlay::heat_image(&shown, &e.cam, (e.height, e.width), SIDE);
            let alt = format!("Grad-CAM for the {what} class, {}", name(e.class));
            figure += &img(&heat, &alt)?;
        }
        let p = found[0].probability;
        let caption = if pick.label == pick.predicted {
            format!("{} ({p:.2})", name(pick.label))
        } else {
            format!("{} → {} ({p:.2})", name(pick.label), name(pick.predicted))
        };
        let _ = writeln!(
            figure,
            "<figcaption>{}<br><span class=\"caption\">#{}</span></figcaption></figure>",
            esc(&caption),
            pick.index
        );
        if pick.label == pick.predicted {
            right += &figure;
        } else {
            wrong += &figure;
        }
    }
    let mut html = format!(
        "<p class=\"caption\">Grad-CAM at <code>{}</code> (red: what raised the class's logit), \
         drawn over the input as the model saw it. Misclassified: below the input, the map for \
         the predicted class, then the true class's. <code>graft explain --run RUN IMAGE</code> draws them \
         for any image, with other methods and a faithfulness score.</p>\n",
        esc(layer_name)
    );
    for (heading, figures) in [("Misclassified", wrong), ("Correctly classified", right)] {
        if !figures.is_empty() {
            let _ = write!(
                html,
                "<h3>{heading}</h3>\n<div class=\"grid heatmaps\">\n{figures}</div>\n"
            );
        }
    }
    Ok(html)
}

/// The first misclassified samples of the evaluation, then the first test samples known to be
/// right: below the highest recorded misclassified index when the record is full (past it, a
/// sample may be wrong without being listed).
fn picks(test: &Subset, eval: &Evaluation) -> Vec<Pick> {
    let mut picks: Vec<Pick> = eval
        .misclassified
        .iter()
        .take(MAX_WRONG)
        .map(|m| Pick {
            index: m.index,
            label: m.label,
            predicted: m.predicted,
        })
        .collect();
    let wrong: HashSet<usize> = eval.misclassified.iter().map(|m| m.index).collect();
    let listed_all = eval.misclassified.len() < crate::metrics::MAX_MISCLASSIFIED;
    let bound = if listed_all {
        usize::MAX
    } else {
        eval.misclassified
            .iter()
            .map(|m| m.index)
            .max()
            .unwrap_or(0)
    };
    picks.extend(
        test.indices
            .iter()
            .filter(|&&i| i < bound && !wrong.contains(&i) && i < test.source.len())
            .take(MAX_RIGHT)
            .map(|&i| {
                let label = test.source.label(i);
                Pick {
                    index: i,
                    label,
                    predicted: label,
                }
            }),
    );
    picks
}

/// An `<img>` of `picture` as an inline PNG.
fn img(picture: &image::RgbImage, alt: &str) -> Result<String> {
    let picture = if picture.width() > SIDE || picture.height() > SIDE {
        image::imageops::resize(picture, SIDE, SIDE, image::imageops::FilterType::Triangle)
    } else if picture.width() < SIDE {
        image::imageops::resize(picture, SIDE, SIDE, image::imageops::FilterType::Nearest)
    } else {
        picture.clone()
    };
    Ok(format!(
        "<img src=\"data:image/png;base64,{}\" alt=\"{}\">",
        STANDARD.encode(overlay::png_bytes(&picture)?),
        esc(alt)
    ))
}
