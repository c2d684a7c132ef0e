//! Losses on logits: `(n, classes)` logits and `(n,)` integer targets -> a scalar `(1,)` tensor.
//!
//! Each formula matches PyTorch (see `tools/goldens.py`, which generates the test values).
//! [`dense`] holds the per-pixel losses of segmentation (smp's Dice and Jaccard, cross-entropy
//! with `ignore_index`).

pub mod dense;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// The `loss` setting: which loss (its parameters are settings of their own). `dice`,
/// `jaccard` and `ce+dice` compare whole masks: segmentation only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossChoice {
    /// `ce`: cross-entropy.
    CrossEntropy,
    /// `focal`.
    Focal,
    /// `mse`: squared error of the logits against one-hot targets (classification).
    Mse,
    /// `dice`: smp's soft Dice loss (segmentation).
    Dice,
    /// `jaccard`: smp's soft Jaccard (IoU) loss (segmentation).
    Jaccard,
    /// `ce+dice`: the sum of cross-entropy and Dice (segmentation).
    CeDice,
}

impl std::str::FromStr for LossChoice {
    type Err = Error;

    /// Parses `ce` (or `cross-entropy`), `focal`, `mse`, `dice`, `jaccard`, `ce+dice`.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "ce" | "cross-entropy" => Ok(Self::CrossEntropy),
            "focal" => Ok(Self::Focal),
            "mse" => Ok(Self::Mse),
            "dice" => Ok(Self::Dice),
            "jaccard" => Ok(Self::Jaccard),
            "ce+dice" | "dice+ce" => Ok(Self::CeDice),
            other => Err(Error::invalid(format!(
                "unknown loss `{other}` (known: ce, focal, mse; for segmentation also dice, \
                 jaccard, ce+dice)"
            ))),
        }
    }
}

impl std::fmt::Display for LossChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CrossEntropy => "ce",
            Self::Focal => "focal",
            Self::Mse => "mse",
            Self::Dice => "dice",
            Self::Jaccard => "jaccard",
            Self::CeDice => "ce+dice",
        })
    }
}

crate::text_setting!(LossChoice);

impl LossChoice {
    /// The classification loss with its parameters (`label_smoothing` for cross-entropy,
    /// `focal_gamma` for focal; checked by the config); an error for the segmentation-only
    /// losses.
    pub fn kind(self, label_smoothing: f64, focal_gamma: f64) -> Result<LossKind> {
        match self {
            Self::CrossEntropy => Ok(LossKind::CrossEntropy { label_smoothing }),
            Self::Focal => Ok(LossKind::Focal { gamma: focal_gamma }),
            Self::Mse => Ok(LossKind::Mse),
            Self::Dice | Self::Jaccard | Self::CeDice => Err(Error::invalid(format!(
                "--loss {self} compares masks: it is a segmentation loss (for classification use \
                 ce, focal or mse)"
            ))),
        }
    }
}

/// Class weighting of the loss (the `class_weights` setting).
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    /// `none`.
    None,
    /// `auto`: inverse class frequency on the training split.
    Auto,
    /// `w1,w2,...`: one non-negative weight per class.
    Given(Vec<f32>),
}

impl std::str::FromStr for ClassWeights {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" | "" => Ok(Self::None),
            "auto" => Ok(Self::Auto),
            list => list
                .split(',')
                .map(|w| {
                    w.trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|w| w.is_finite() && *w >= 0.0)
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "--class-weights: `{w}` is not a non-negative number"
                            ))
                        })
                })
                .collect::<Result<_>>()
                .map(Self::Given),
        }
    }
}

impl std::fmt::Display for ClassWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Auto => f.write_str("auto"),
            Self::Given(w) => {
                let parts: Vec<String> = w.iter().map(f32::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

crate::text_setting!(ClassWeights);

/// The loss a run minimises.
#[derive(Debug, Clone, PartialEq)]
pub enum LossKind {
    /// Cross-entropy, optionally class-weighted and label-smoothed (`F.cross_entropy`).
    CrossEntropy {
        /// `F.cross_entropy`'s `label_smoothing`: the share of the target mass spread evenly
        /// over all classes, in `[0, 1)`.
        label_smoothing: f64,
    },
    /// Multi-class focal loss: `-w_y (1 - p_y)^gamma log p_y`, mean over samples.
    Focal {
        /// The focusing exponent: 0 is plain cross-entropy; larger values down-weight the
        /// samples already classified with confidence.
        gamma: f64,
    },
    /// Mean squared error between the logits and the one-hot targets (`F.mse_loss`).
    Mse,
}

/// A loss with its optional per-class weights.
#[derive(Debug, Clone)]
pub struct Loss {
    /// Which loss.
    pub kind: LossKind,
    /// One weight per class (`weight=` of PyTorch's losses), resolved from
    /// [`ClassWeights`]; `None` weighs every class 1.
    pub class_weights: Option<Vec<f32>>,
}

impl Loss {
    /// `logits (n, c)`, `targets (n,)` -> mean loss `(1,)`.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        let [n, c] = logits.dims();
        let device = logits.device();
        let weights = self
            .class_weights
            .as_ref()
            .map(|w| Tensor::<1>::from_data(TensorData::new(w.clone(), [c]), &device));
        let idx = targets.clone().reshape([n, 1]);
        match self.kind {
            LossKind::CrossEntropy {
                label_smoothing: eps,
            } => {
                let logp = log_softmax(logits, 1);
                // nll_i = -log p_i[y_i]
                let nll = logp.clone().gather(1, idx).reshape([n]).neg();
                // PyTorch: weighted mean divides by the sum of the targets' weights, and the
                // smoothing term -sum_c w_c log p_ic is normalised by the same sum.
                let (nll_sum, smooth_sum, norm) = match &weights {
                    Some(w) => {
                        let wy = w.clone().select(0, targets);
                        let smooth = (logp * w.clone().unsqueeze::<2>()).sum_dim(1).neg();
                        ((nll * wy.clone()).sum(), smooth.sum(), wy.sum())
                    }
                    None => {
                        let smooth = logp.sum_dim(1).neg();
                        let norm = Tensor::<1>::from_floats([n as f32], &device);
                        (nll.sum(), smooth.sum(), norm)
                    }
                };
                let nll_mean = nll_sum / norm.clone();
                if eps == 0.0 {
                    return nll_mean;
                }
                nll_mean.mul_scalar(1.0 - eps) + (smooth_sum / norm).mul_scalar(eps / c as f64)
            }
            LossKind::Focal { gamma } => {
                let logp = log_softmax(logits, 1);
                let logp_y = logp.gather(1, idx).reshape([n]);
                let p_y = logp_y.clone().exp();
                // (1 - p)^gamma, with (1-p) clamped at 0 so a rounding p > 1 never yields NaN.
                let modulating = p_y.neg().add_scalar(1.0).clamp_min(0.0).powf_scalar(gamma);
                let mut per = modulating * logp_y.neg();
                if let Some(w) = weights {
                    per = per * w.select(0, targets);
                }
                per.mean()
            }
            LossKind::Mse => {
                let one_hot = targets.one_hot::<2>(c).float();
                (logits - one_hot).powf_scalar(2.0).mean()
            }
        }
    }
}
