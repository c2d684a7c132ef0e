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
//! - [`focal_loss`]: smp's `FocalLoss` (sigmoid focal loss per class, `alpha`, `gamma`,
//!   `ignore_index`; `reduction="mean"`, not normalized, no reduced threshold).
//!
//! Checked with their gradients against smp and PyTorch (`tools/seg_loss_goldens.py`).

use burn::tensor::activation::{log_sigmoid, log_softmax, sigmoid, softmax};
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
    /// How logits become probabilities.
    pub mode: DenseMode,
    /// Added to the numerator and the denominator of each class's score (smp default 0).
    pub smooth: f64,
    /// Lower bound of each class's score, so that `−ln` stays finite (smp default 1e-7).
    pub eps: f64,
    /// `−ln score` instead of `1 − score`.
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

/// The options smp's `FocalLoss` takes (those graft supports: `reduction="mean"`,
/// `normalized=False`, `reduced_threshold=None`, no class weights, from logits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FocalOptions {
    /// How logits become probabilities.
    pub mode: DenseMode,
    /// The focusing exponent: `(1 − p_t)^γ` down-weights pixels already well classified; 0 is
    /// plain binary cross-entropy.
    pub gamma: f64,
    /// Weight `α` of positive targets and `1 − α` of negative ones (smp's `FocalLoss` default:
    /// none, both weigh 1).
    pub alpha: Option<f64>,
    /// Target value of pixels left out (smp: `None` by default; VOC masks use 255).
    pub ignore_index: Option<i64>,
}

impl Default for FocalOptions {
    fn default() -> Self {
        FocalOptions {
            mode: DenseMode::Multiclass,
            gamma: 2.0,
            alpha: None,
            ignore_index: None,
        }
    }
}

/// smp 0.6.0's `FocalLoss(mode, alpha, gamma, ignore_index)`: per channel a *sigmoid* (binary)
/// focal loss `(1 − p_t)^γ · BCE` (times `α·t + (1 − α)(1 − t)` with `alpha`), where
/// `BCE = −ln p_t` is PyTorch's `binary_cross_entropy_with_logits` and `p_t = exp(−BCE)`.
///
/// - Multiclass: channel `k` is scored against `target == k` (one-vs-rest, not a softmax), each
///   class's loss is the mean over the pixels not ignored, and the loss is the *mean* of the
///   class losses (smp's `class_losses.mean()` without class weights).
/// - Binary: the one channel against the 0/1 target, mean over the pixels not ignored.
///
/// The BCE is written as `(1 − t)·x − ln σ(x)` with a stable log-sigmoid, so large logits
/// neither overflow nor lose the gradient `σ(x) − t`. Ignored pixels are multiplied out (no
/// gathers or boolean indexing), so the loss is differentiable on any device. One deviation:
/// when every pixel is ignored smp returns NaN (a mean over nothing); this returns 0 (with a
/// zero gradient), so such a batch cannot poison training.
pub fn focal_loss(logits: Tensor<4>, target: Tensor<3, Int>, o: FocalOptions) -> Tensor<1> {
    let [n, c, h, w] = logits.dims();
    let device = logits.device();
    let target = target.reshape([n, 1, h * w]);
    let keep = match o.ignore_index {
        Some(ignore) => target.clone().not_equal_elem(ignore).float(),
        None => Tensor::<3>::ones([n, 1, h * w], &device),
    };
    let kept_target = target * keep.clone().int();
    let truth = match o.mode {
        DenseMode::Multiclass => {
            let classes = Tensor::<1, Int>::arange(0..c as i64, &device)
                .reshape([1, c, 1])
                .expand([n, c, h * w]);
            kept_target.expand([n, c, h * w]).equal(classes).float()
        }
        DenseMode::Binary => kept_target.float(),
    };
    let x = logits.reshape([n, c, h * w]);
    // −ln p_t = BCE-with-logits = (1 − t)·x − ln σ(x).
    let bce = truth.clone().neg().add_scalar(1.0) * x.clone() - log_sigmoid(x);
    let mut loss = if o.gamma == 0.0 {
        // (1 − p_t)^0 = 1; skipping it also avoids 0 · 0^(−1) = NaN in its gradient where
        // p_t = 1 (PyTorch special-cases a zero exponent the same way).
        bce
    } else {
        let p_t = bce.clone().neg().exp();
        p_t.neg().add_scalar(1.0).powf_scalar(o.gamma) * bce
    };
    if let Some(alpha) = o.alpha {
        // α·t + (1 − α)(1 − t) = (2α − 1)·t + (1 − α)
        loss = loss * truth.mul_scalar(2.0 * alpha - 1.0).add_scalar(1.0 - alpha);
    }
    // Mean over kept pixels per class, then over classes: one sum over (kept count · c).
    let kept = keep.clone().sum().clamp_min(1.0).mul_scalar(c as f64);
    (loss * keep).sum() / kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{from_vec, to_vec};
    use burn::tensor::{Device, TensorData};

    /// A batch whose every pixel is ignored scores 0 with a zero gradient (smp: NaN), and
    /// saturated logits (±200, right and wrong) keep the loss and gradient finite.
    #[test]
    fn focal_is_finite_on_edge_batches() {
        let dev = Device::flex().autodiff();
        let logits =
            from_vec(vec![200.0, -200.0, -200.0, 200.0], [1, 2, 1, 2], &dev).require_grad();
        let target =
            |t: [i64; 2]| Tensor::<3, Int>::from_data(TensorData::new(t.to_vec(), [1, 1, 2]), &dev);
        let o = FocalOptions {
            ignore_index: Some(255),
            ..FocalOptions::default()
        };
        let loss = focal_loss(logits.clone(), target([255, 255]), o);
        let grads = loss.clone().backward();
        assert_eq!(to_vec(loss), vec![0.0]);
        assert!(
            to_vec(logits.grad(&grads).unwrap())
                .iter()
                .all(|&g| g == 0.0)
        );

        // Both pixels are class 0: pixel 0 is right (p_t = 1 in f32), pixel 1 wrong by 400.
        let loss = focal_loss(logits.clone(), target([0, 0]), o);
        let grads = loss.clone().backward();
        let value = to_vec(loss)[0];
        // Each class: (0 + 200) / 2 pixels (BCE of a logit 200 the wrong side is 200).
        assert!((value - 100.0).abs() < 1e-3, "{value}");
        assert!(
            to_vec(logits.grad(&grads).unwrap())
                .iter()
                .all(|g| g.is_finite())
        );
    }
}
