//! The loss a segmentation run minimises: one of smp's dense losses (`crate::loss::dense`),
//! or cross-entropy plus Dice, with pixels marked 255 left out.

use burn::tensor::{Int, Tensor, TensorData};

use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::loss::dense::{self, FocalOptions, OverlapOptions};
use crate::loss::{ClassWeights, LossChoice};
use crate::metrics::segmentation::IGNORE_INDEX;

/// The `loss` setting resolved for segmentation.
#[derive(Debug, Clone)]
pub struct SegLoss {
    /// Which loss (`ce`, `dice`, `jaccard`, `focal`, `ce+dice`).
    pub choice: LossChoice,
    /// Cross-entropy's per-class weights.
    pub class_weights: Option<Vec<f32>>,
    /// The focal loss's `γ`.
    pub focal_gamma: f64,
}

impl SegLoss {
    /// Checks that `cfg`'s loss settings apply to masks (before anything is opened).
    pub fn check(cfg: &FitConfig) -> Result<()> {
        if cfg.loss == LossChoice::Mse {
            return Err(Error::invalid(
                "--loss mse is a classification loss; segmentation losses: ce, dice, jaccard, \
                 focal, ce+dice",
            ));
        }
        if cfg.label_smoothing > 0.0 {
            return Err(Error::invalid(
                "--label-smoothing applies to classification; drop it for segmentation",
            ));
        }
        if cfg.class_weights != ClassWeights::None
            && !matches!(cfg.loss, LossChoice::CrossEntropy | LossChoice::CeDice)
        {
            return Err(Error::invalid(format!(
                "--class-weights weigh the cross-entropy; --loss {} has none (use ce or ce+dice)",
                cfg.loss
            )));
        }
        Ok(())
    }

    /// The loss of `cfg` for `classes` classes; `class_pixels` (pixels per class in the
    /// training masks) for `--class-weights auto`.
    pub fn new(cfg: &FitConfig, classes: usize, class_pixels: Option<&[usize]>) -> Result<SegLoss> {
        Self::check(cfg)?;
        let class_weights = match &cfg.class_weights {
            ClassWeights::None => None,
            ClassWeights::Auto => class_pixels.map(crate::data::class_weights_auto),
            ClassWeights::Given(w) if w.len() == classes => Some(w.clone()),
            ClassWeights::Given(w) => {
                return Err(Error::invalid(format!(
                    "--class-weights has {} values, the masks have {classes} classes",
                    w.len()
                )));
            }
        };
        Ok(SegLoss {
            choice: cfg.loss,
            class_weights,
            focal_gamma: cfg.focal_gamma,
        })
    }

    /// The mean loss of `(n, c, h, w)` logits against `(n, h, w)` masks.
    pub fn forward(&self, logits: Tensor<4>, masks: &[u8]) -> Tensor<1> {
        let [n, _, h, w] = logits.dims();
        let target = Tensor::<3, Int>::from_data(
            TensorData::new(masks.iter().map(|&v| v as i64).collect(), [n, h, w]),
            &logits.device(),
        );
        let ignore = Some(IGNORE_INDEX as i64);
        let overlap = OverlapOptions {
            ignore_index: ignore,
            ..OverlapOptions::default()
        };
        let ce = |logits, target| {
            dense::cross_entropy(logits, target, self.class_weights.as_deref(), ignore)
        };
        match self.choice {
            LossChoice::CrossEntropy | LossChoice::Mse => ce(logits, target),
            LossChoice::Dice => dense::dice_loss(logits, target, overlap),
            LossChoice::Jaccard => dense::jaccard_loss(logits, target, overlap),
            LossChoice::Focal => dense::focal_loss(
                logits,
                target,
                FocalOptions {
                    gamma: self.focal_gamma,
                    ignore_index: ignore,
                    ..FocalOptions::default()
                },
            ),
            LossChoice::CeDice => {
                ce(logits.clone(), target.clone()) + dense::dice_loss(logits, target, overlap)
            }
        }
    }
}
