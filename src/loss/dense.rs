//! Losses of dense (per-pixel) prediction, as segmentation_models_pytorch (smp) defines them:
//! `(n, c, h, w)` logits and `(n, h, w)` integer targets → a scalar `(1,)`.
//!
//! - [`tversky_loss`] covers smp's `DiceLoss` (α = β = ½) and `JaccardLoss` (α = β = 1): soft
//!   scores from logits (softmax over classes, or a sigmoid for one binary channel), summed over
//!   the batch and the pixels per class; `smooth` and `eps` as smp (0 and 1e-7 by default);
//!   `log_loss` (−ln score instead of 1 − score); classes absent from the batch's targets
//!   contribute 0 (smp's mask) but still count in the mean; pixels whose target is
//!   `ignore_index` are left out of both sums.
//! - [`cross_entropy`]: `torch.nn.functional.cross_entropy` on maps, with class weights and
//!   `ignore_index` (the mean over the kept pixels, weighted as PyTorch weighs it).
//!
//! Checked with their gradients against smp and PyTorch (`tools/seg_loss_goldens.py`).

use burn::tensor::activation::{log_softmax, sigmoid, softmax};
use burn::tensor::{Int, Tensor};

/// smp's `mode`: how logits become probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseMode {
    /// `c` classes, softmax over the channel dimension; targets are class indices.
    Multiclass,
    /// One channel, sigmoid; targets are 0 or 1.
    Binary,
}

/// The options smp's `DiceLoss` / `JaccardLoss` take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlapOptions {
    pub mode: DenseMode,
    pub smooth: f64,
    pub eps: f64,
    pub log_loss: bool,
    /// Target value of pixels left out (smp: `None` by default; VOC masks use 255).
    pub ignore_index: Option<i64>,
}

impl Default for OverlapOptions {
    fn default() -> Self {
        OverlapOptions {
            mode: DenseMode::Multiclass,
            smooth: 0.0,
            eps: 1e-7,
            log_loss: false,
            ignore_index: None,
        }
    }
}

/// `1 − T` (or `−ln T`) averaged over classes, where the Tversky score per class is
/// `(I + smooth) / (I + α·FP + β·FN + smooth)` clamped below at `eps`, with `I = Σ p·t`,
/// `FP = Σ p − I`, `FN = Σ t − I` over the batch and the pixels. Dice: α = β = ½; Jaccard
/// (IoU): α = β = 1.
pub fn tversky_loss(
    logits: Tensor<4>,
    target: Tensor<3, Int>,
    (alpha, beta): (f64, f64),
    o: OverlapOptions,
) -> Tensor<1> {
    let [n, c, h, w] = logits.dims();
    let device = logits.device();
    let target = target.reshape([n, 1, h * w]);
    let probs = match o.mode {
        DenseMode::Multiclass => softmax(logits, 1),
        DenseMode::Binary => sigmoid(logits),
    }
    .reshape([n, c, h * w]);
    let keep = match o.ignore_index {
        Some(ignore) => target.clone().not_equal_elem(ignore).float(),
        None => Tensor::<3>::ones([n, 1, h * w], &device),
    };
    let kept_target = target.clone() * keep.clone().int();
    let truth = match o.mode {
        DenseMode::Multiclass => {
            let classes = Tensor::<1, Int>::arange(0..c as i64, &device)
                .reshape([1, c, 1])
                .expand([n, c, h * w]);
            kept_target.expand([n, c, h * w]).equal(classes).float()
        }
        DenseMode::Binary => kept_target.float(),
    } * keep.clone();
    let probs = probs * keep;
    let per_class = |t: Tensor<3>| t.sum_dim(2).sum_dim(0).reshape([c]);
    let intersection = per_class(probs.clone() * truth.clone());
    let predicted = per_class(probs);
    let present = per_class(truth);
    let fp = predicted - intersection.clone();
    let fn_ = present.clone() - intersection.clone();
    let score = (intersection.clone().add_scalar(o.smooth))
        / (intersection + fp.mul_scalar(alpha) + fn_.mul_scalar(beta))
            .add_scalar(o.smooth)
            .clamp_min(o.eps);
    let loss = if o.log_loss {
        score.clamp_min(o.eps).log().neg()
    } else {
        score.neg().add_scalar(1.0)
    };
    // smp: classes with no target pixel in the batch contribute 0 (and still count).
    (loss * present.greater_elem(0.0).float()).mean()
}

/// smp's `DiceLoss`.
pub fn dice_loss(logits: Tensor<4>, target: Tensor<3, Int>, o: OverlapOptions) -> Tensor<1> {
    tversky_loss(logits, target, (0.5, 0.5), o)
}

/// smp's `JaccardLoss` (soft IoU).
pub fn jaccard_loss(logits: Tensor<4>, target: Tensor<3, Int>, o: OverlapOptions) -> Tensor<1> {
    tversky_loss(logits, target, (1.0, 1.0), o)
}

/// `F.cross_entropy(logits, target, weight, ignore_index)` on `(n, c, h, w)` maps: the
/// weighted mean of `−log p[target]` over the pixels not ignored, divided by the sum of their
/// weights (PyTorch's `reduction="mean"`).
pub fn cross_entropy(
    logits: Tensor<4>,
    target: Tensor<3, Int>,
    weights: Option<&[f32]>,
    ignore_index: Option<i64>,
) -> Tensor<1> {
    let [n, c, h, w] = logits.dims();
    let device = logits.device();
    let target = target.reshape([n, 1, h * w]);
    let keep = match ignore_index {
        Some(ignore) => target.clone().not_equal_elem(ignore).float(),
        None => Tensor::<3>::ones([n, 1, h * w], &device),
    };
    let kept_target = target * keep.clone().int();
    let log_p = log_softmax(logits.reshape([n, c, h * w]), 1);
    let picked = log_p.gather(1, kept_target.clone());
    let weight = match weights {
        Some(wts) => Tensor::<1>::from_floats(wts, &device)
            .select(0, kept_target.reshape([n * h * w]))
            .reshape([n, 1, h * w]),
        None => Tensor::<3>::ones([n, 1, h * w], &device),
    } * keep;
    (picked * weight.clone()).sum().neg() / weight.sum()
}
