//! The report's "where the model looked" section: Grad-CAM maps (at the default layer,
//! [`crate::explain::default_layer`]) over the test images of highest loss — for the predicted
//! class and, when it is wrong, for the true one — and over a few of the most confidently right
//! ones, computed from the run's saved model.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use burn::tensor::Device;

use super::model_files::load_run;
use crate::data::{Pipeline, Subset};
use crate::error::Result;
use crate::explain::{self, Method, overlay};
use crate::render::html::{esc, note};
use crate::task::classification::report::{SampleLoss, TopLosses, verdict};
use crate::tensor::from_vec;

/// Test images of highest loss shown with their maps (a map costs a forward and backward pass).
const MAX_TOP: usize = 12;
/// Most confidently right ones.
const MAX_RIGHT: usize = 6;
/// Side of each image on the page.
const SIDE: u32 = 112;

/// The section's HTML. Never fails: what can't be shown is said in the page.
pub(super) fn section(run_dir: &Path, test: Option<&Subset>, top: &TopLosses) -> String {
    if !run_dir.join("model.safetensors").is_file() {
        return note("The run has no model.safetensors: no heat maps.");
    }
    let Some(test) = test else {
        return note("The run's test images can't be opened: no images to explain.");
    };
    match maps(run_dir, test, top) {
        Ok(html) => html,
        Err(e) => note(&format!("Heat maps could not be drawn: {e}")),
    }
}

fn maps(run_dir: &Path, test: &Subset, top: &TopLosses) -> Result<String> {
    let device = Device::flex();
    let (model, card, preset) = load_run(run_dir, &device)?;
    let (highest, right) = picks(test, top);
    if highest.is_empty() && right.is_empty() {
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
    let mut groups = [String::new(), String::new()];
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    for (group, pick) in highest
        .iter()
        .map(|p| (0, p))
        .chain(right.iter().map(|p| (1, p)))
    {
        if pick.index >= test.source.len() {
            continue;
        }
        let image = test.source.load(pick.index)?;
        let (pixels, [c, h, w]) = pipe.apply(&image, &mut rng)?;
        let mut targets = vec![Some(pick.predicted)];
        if !pick.correct() {
            targets.push(Some(pick.label));
        }
        let x = from_vec(pixels.clone(), [1, c, h, w], &device).repeat_dim(0, targets.len());
        let found = explain::explain(&model, x, layer, Method::GradCam, &targets, 0)?;
        let shown = overlay::denormalize(&pixels, (h, w), preset.mean, preset.std);
        let mut figure = format!(
            "<figure data-index=\"{}\">{}",
            pick.index,
            img(&shown, "the input as the model saw it")?
        );
        for (e, what) in found.iter().zip(["predicted", "true"]) {
            let heat = overlay::heat_image(&shown, &e.cam, (e.height, e.width), SIDE);
            let alt = format!("Grad-CAM for the {what} class, {}", name(e.class));
            figure += &img(&heat, &alt)?;
        }
        let caption = verdict(
            &SampleLoss {
                probability: found[0].probability,
                ..*pick
            },
            &card.class_names,
        );
        let loss = if pick.loss.is_nan() {
            String::new()
        } else {
            format!("<br>{}", esc(&top.loss_text(pick)))
        };
        let _ = writeln!(
            figure,
            "<figcaption>{}{loss}<br><span class=\"caption\">#{}</span></figcaption></figure>",
            esc(&caption),
            pick.index
        );
        groups[group] += &figure;
    }
    let mut html = format!(
        "<p class=\"caption\">Grad-CAM at <code>{}</code> (red: what raised the class's logit), \
         drawn over the input as the model saw it. Below each input, the map for the predicted \
         class, then, when the prediction is wrong, the true class's. <code>graft explain --run \
         RUN IMAGE</code> draws them for any image, with other methods and a faithfulness \
         score.</p>\n",
        esc(layer_name)
    );
    let [highest, right] = groups;
    for (heading, figures) in [
        ("Highest losses", highest),
        ("Correctly classified, most confident", right),
    ] {
        if !figures.is_empty() {
            let _ = write!(
                html,
                "<h3>{heading}</h3>\n<div class=\"grid heatmaps\">\n{figures}</div>\n"
            );
        }
    }
    Ok(html)
}

/// The test samples of highest loss, then the most confidently right ones. Without exact
/// losses (`eval.json`'s list only), the right ones are the first test samples known to be
/// right: below the highest listed misclassified index when the list is full (past it, a
/// sample may be wrong without being listed).
fn picks(test: &Subset, top: &TopLosses) -> (Vec<SampleLoss>, Vec<SampleLoss>) {
    let highest: Vec<SampleLoss> = top.top.iter().take(MAX_TOP).copied().collect();
    if top.exact() {
        let right = top.confident.iter().take(MAX_RIGHT).copied().collect();
        return (highest, right);
    }
    let wrong: HashSet<usize> = top.top.iter().map(|m| m.index).collect();
    let listed_all = top.top.len() < crate::metrics::MAX_MISCLASSIFIED;
    let bound = if listed_all {
        usize::MAX
    } else {
        top.top.iter().map(|m| m.index).max().unwrap_or(0)
    };
    let right = test
        .indices
        .iter()
        .filter(|&&i| i < bound && !wrong.contains(&i) && i < test.source.len())
        .take(MAX_RIGHT)
        .map(|&i| {
            let label = test.source.label(i);
            SampleLoss {
                index: i,
                label,
                predicted: label,
                probability: f32::NAN,
                loss: f32::NAN,
            }
        })
        .collect();
    (highest, right)
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
