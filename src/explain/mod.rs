//! Explain: class activation maps of the Grad-CAM family (pytorch-grad-cam's definitions) on
//! any stage map a backbone exposes, how faithful they are, and the overlays that show them.
//!
//! [`explain`] runs the classifier once with the chosen stage's output replaced by a leaf that
//! requires a gradient ([`crate::model::Backbone::forward_stages`]' tap), so one backward pass
//! of the target logits gives `d(logit)/d(map)` for every image of the batch; the maps
//! themselves are plain arithmetic on those two arrays ([`cam`]). [`faithfulness`] scores a map
//! by deleting and inserting the pixels it ranks highest; [`overlay`] draws it over the image.
//! For text classifiers, [`tokens`] gives each token's gradient × input.

pub mod cam;
pub mod faithfulness;
pub mod overlay;
pub mod tokens;

use burn::module::Module;
use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::model::{Arch, Backbone, Classifier};
use crate::tensor::{from_vec, to_vec};
use cam::{Corners, Maps};

/// Which class activation map (pytorch-grad-cam's class of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `gradcam`: channels weighted by their gradient's spatial mean (Selvaraju et al. 2017).
    GradCam,
    /// `hirescam`: gradient × activation per pixel, summed over channels (Draelos & Carin 2020).
    HiResCam,
    /// `gradcam++`: positive gradients weighted per pixel (Chattopadhay et al. 2018).
    GradCamPlusPlus,
    /// `eigencam`: the activations' first principal component; no gradient, no class
    /// (Muhammad & Yeasin 2020).
    EigenCam,
    /// `scorecam`: channels weighted by the softmax of the target logit when the input is
    /// masked by each (Wang et al. 2020); one forward pass per channel.
    ScoreCam,
    /// `random`: channels weighted uniformly in [-1, 1] (pytorch-grad-cam's `RandomCAM`): the
    /// baseline a faithful map must beat.
    Random,
}

impl Method {
    /// Whether the map needs `d(logit)/d(map)`.
    fn uses_gradients(self) -> bool {
        matches!(self, Self::GradCam | Self::HiResCam | Self::GradCamPlusPlus)
    }
}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gradcam" => Ok(Self::GradCam),
            "hirescam" => Ok(Self::HiResCam),
            "gradcam++" | "gradcampp" => Ok(Self::GradCamPlusPlus),
            "eigencam" => Ok(Self::EigenCam),
            "scorecam" => Ok(Self::ScoreCam),
            "random" => Ok(Self::Random),
            other => Err(Error::invalid(format!(
                "--method must be gradcam, hirescam, gradcam++, eigencam, scorecam or random, \
                 got `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::GradCam => "gradcam",
            Self::HiResCam => "hirescam",
            Self::GradCamPlusPlus => "gradcam++",
            Self::EigenCam => "eigencam",
            Self::ScoreCam => "scorecam",
            Self::Random => "random",
        })
    }
}

crate::text_setting!(Method);

/// The names `--layer` accepts for an architecture's stages, in [`Arch::feature_info`]'s
/// order: the stage's own name where it is unique (`layer4`, `head`), `name.j` for the j-th of
/// several (`blocks.3`).
pub fn layer_names(arch: &Arch) -> Vec<String> {
    let info = arch.feature_info();
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    info.iter()
        .map(|s| {
            let same = info.iter().filter(|o| o.name == s.name).count();
            let j = seen.entry(s.name).or_default();
            *j += 1;
            if same == 1 {
                s.name.to_string()
            } else {
                format!("{}.{}", s.name, *j - 1)
            }
        })
        .collect()
}

/// Maps smaller than this (a side) rank pixels by quadrant: no better than a random map (a
/// 2×2 map on Fashion-MNIST at 64 px scored 0.26 vs random 0.26; the 4×4 map of the stage
/// before, 0.45 vs 0.34).
pub const MIN_MAP_SIDE: usize = 4;

/// The stage Grad-CAM reads by default for `input_size`-pixel inputs: as pytorch-grad-cam's
/// examples choose it, the last one, whose map feeds global pooling and the head (ResNet's
/// `layer4`, EfficientNet-Lite's head convolution after its BatchNorm and ReLU6); but when
/// that map would be smaller than [`MIN_MAP_SIDE`] (small inputs), the last stage whose map
/// is not.
pub fn default_layer(arch: &Arch, input_size: usize) -> usize {
    let info = arch.feature_info();
    info.iter()
        .rposition(|s| input_size.div_ceil(s.reduction) >= MIN_MAP_SIDE)
        .unwrap_or(info.len() - 1)
}

/// The stage index of `name` (one of [`layer_names`], or its index).
pub fn find_layer(arch: &Arch, name: &str) -> Result<usize> {
    let names = layer_names(arch);
    names
        .iter()
        .position(|n| n == name)
        .or_else(|| name.parse::<usize>().ok().filter(|&i| i < names.len()))
        .ok_or_else(|| {
            Error::invalid(format!(
                "--layer `{name}` is not a stage of this model: use one of {}",
                names.join(", ")
            ))
        })
}

/// One image's map for one class.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The class explained.
    pub class: usize,
    /// Its softmax probability for this image.
    pub probability: f32,
    /// The map at the stage's resolution, row-major `height × width`: ReLU'd and scaled to
    /// [0, 1] as pytorch-grad-cam scales it (before its resize to the input).
    pub cam: Vec<f32>,
    /// Rows of `cam`: the stage's feature-map height.
    pub height: usize,
    /// Columns of `cam`: the stage's feature-map width.
    pub width: usize,
}

/// What one forward (and backward) pass captured at the stage.
struct Captured {
    /// `(n, c, h, w)` activations.
    acts: Vec<f32>,
    /// `d(Σ_i logit_i[target_i]) / d(acts)`, when asked for.
    grads: Option<Vec<f32>>,
    /// `(n, classes)`.
    logits: Vec<f32>,
    dims: [usize; 4],
    classes: usize,
}

/// Runs `model` on `x` reading stage `layer`, and each image's class (`targets[i]`, or its
/// predicted one where `None` or missing); `with_gradients`: also the gradient of those classes'
/// logits with respect to the stage's map.
fn capture(
    model: &Classifier,
    x: Tensor<4>,
    layer: usize,
    targets: &[Option<usize>],
    with_gradients: bool,
) -> Result<(Captured, Vec<usize>)> {
    let plain = x.device();
    let (model, x) = if with_gradients {
        // The backward pass needs autodiff; `freeze` keeps the model in inference mode on it
        // (BatchNorm uses its running statistics, no dropout) and its parameters out of the
        // backward pass: only the map's gradient is computed.
        let ad = plain.clone().autodiff();
        (model.clone().train().freeze(), x.to_device(&ad))
    } else {
        (model.valid(), x)
    };
    let mut leaf: Option<Tensor<4>> = None;
    let features = model.backbone.forward_stages(x, &mut |i, map| {
        if i != layer {
            return map;
        }
        let map = if with_gradients {
            // The backward pass stops here and keeps the map's gradient.
            map.detach().require_grad()
        } else {
            map
        };
        leaf = Some(map.clone());
        map
    });
    let logits = model.forward_head(Backbone::pool(features));
    let leaf = leaf.ok_or_else(|| Error::invalid(format!("the model has no stage {layer}")))?;
    let dims = leaf.dims();
    let [n, classes] = logits.dims();
    let logit_values = to_vec(logits.clone().detach());
    let chosen = choose_targets(&logit_values, classes, n, targets)?;
    let grads = match with_gradients {
        false => None,
        true => {
            // Σ_i logit_i[target_i]: each image's gradient is its own target's.
            let mut mask = vec![0f32; n * classes];
            for (i, &t) in chosen.iter().enumerate() {
                mask[i * classes + t] = 1.0;
            }
            let mask = from_vec(mask, [n, classes], &logits.device());
            let gradients = (logits * mask).sum().backward();
            let grad = leaf.grad(&gradients).ok_or_else(|| {
                Error::invalid("the backward pass gave no gradient for the stage's map")
            })?;
            Some(to_vec(grad))
        }
    };
    Ok((
        Captured {
            acts: to_vec(leaf.detach()),
            grads,
            logits: logit_values,
            dims,
            classes,
        },
        chosen,
    ))
}

/// Each image's class: the given one (checked against the head's width) or the predicted one.
fn choose_targets(
    logits: &[f32],
    classes: usize,
    n: usize,
    targets: &[Option<usize>],
) -> Result<Vec<usize>> {
    (0..n)
        .map(|i| match targets.get(i).copied().flatten() {
            Some(t) if t < classes => Ok(t),
            Some(t) => Err(Error::invalid(format!(
                "--class {t} is outside the model's {classes} classes (0..{})",
                classes - 1
            ))),
            None => Ok(argmax(&logits[i * classes..(i + 1) * classes])),
        })
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

/// Softmax probability of `class` in a row of logits.
pub fn probability(row: &[f32], class: usize) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|l| (l - max).exp()).sum();
    (row[class] - max).exp() / sum
}

/// The `method` maps of a batch `x` `(n, 3, H, W)` (normalised as the model expects) at stage
/// `layer`, for `targets[i]` (`None`: image i's predicted class; missing entries likewise).
/// `seed` drives [`Method::Random`] only.
pub fn explain(
    model: &Classifier,
    x: Tensor<4>,
    layer: usize,
    method: Method,
    targets: &[Option<usize>],
    seed: u64,
) -> Result<Vec<Explanation>> {
    let (c, chosen) = capture(model, x.clone(), layer, targets, method.uses_gradients())?;
    let [n, channels, h, w] = c.dims;
    let per_image = channels * h * w;
    // Score-CAM's many forward passes run the BatchNorm-folded copy (same outputs, faster).
    let folded = (method == Method::ScoreCam).then(|| model.folded_for_inference());
    let mut out = Vec::with_capacity(n);
    for (i, &class) in chosen.iter().enumerate() {
        let acts = Maps {
            values: &c.acts[i * per_image..(i + 1) * per_image],
            channels,
            pixels: h * w,
        };
        let grads = c.grads.as_ref().map(|g| Maps {
            values: &g[i * per_image..(i + 1) * per_image],
            channels,
            pixels: h * w,
        });
        let raw = match (method, grads) {
            (Method::GradCam, Some(g)) => cam::weighted_sum(acts, &cam::grad_cam_weights(g)),
            (Method::HiResCam, Some(g)) => cam::hires_cam(acts, g),
            (Method::GradCamPlusPlus, Some(g)) => {
                cam::weighted_sum(acts, &cam::grad_cam_plus_plus_weights(acts, g))
            }
            (Method::EigenCam, _) => cam::eigen_cam(acts),
            (Method::ScoreCam, _) => {
                let image = x.clone().narrow(0, i, 1);
                let folded = folded.as_ref().unwrap_or(model);
                cam::weighted_sum(
                    acts,
                    &score_cam_weights(folded, image, acts, (h, w), class)?,
                )
            }
            (Method::Random, _) => cam::weighted_sum(acts, &random_weights(channels, seed, i)),
            (_, None) => unreachable!("gradient methods capture gradients"),
        };
        let row = &c.logits[i * c.classes..(i + 1) * c.classes];
        out.push(Explanation {
            class,
            probability: probability(row, class),
            cam: cam::scale(raw),
            height: h,
            width: w,
        });
    }
    Ok(out)
}

/// Score-CAM's channel weights for one image `(1, 3, H, W)` under `model` (an inference
/// copy): each channel of its map,
/// upsampled to the input (corners aligned) and min-max scaled, masks the input; the weights
/// are the softmax over channels of the target logit on those inputs (pytorch-grad-cam's
/// `ScoreCAM.get_cam_weights`).
fn score_cam_weights(
    model: &Classifier,
    image: Tensor<4>,
    acts: Maps<'_>,
    (h, w): (usize, usize),
    class: usize,
) -> Result<Vec<f32>> {
    const BATCH: usize = 32;
    let [_, ch, big_h, big_w] = image.dims();
    let device = image.device();
    let pixels = to_vec(image);
    let mut scores = Vec::with_capacity(acts.channels);
    for start in (0..acts.channels).step_by(BATCH) {
        let end = (start + BATCH).min(acts.channels);
        let mut batch = Vec::with_capacity((end - start) * pixels.len());
        for k in start..end {
            let channel = &acts.values[k * acts.pixels..(k + 1) * acts.pixels];
            let up = cam::resize_bilinear(channel, (h, w), (big_h, big_w), Corners::Aligned);
            let max = up.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let min = up.iter().copied().fold(f32::INFINITY, f32::min);
            let plane = big_h * big_w;
            for c in 0..ch {
                batch.extend(
                    pixels[c * plane..(c + 1) * plane]
                        .iter()
                        .zip(&up)
                        .map(|(p, u)| p * ((u - min) / (max - min + 1e-8))),
                );
            }
        }
        let logits =
            to_vec(model.forward(from_vec(batch, [end - start, ch, big_h, big_w], &device)));
        let classes = logits.len() / (end - start);
        scores.extend((0..end - start).map(|j| logits[j * classes + class]));
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    Ok(exp.into_iter().map(|e| e / sum).collect())
}

/// [`Method::Random`]'s weights for image `i`: uniform in [-1, 1], seeded.
fn random_weights(channels: usize, seed: u64, i: usize) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
    (0..channels).map(|_| rng.gen_range(-1.0..=1.0)).collect()
}
