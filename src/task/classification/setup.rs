//! What a classification fit settles before training, the same for images and texts: the
//! head's width and the loss with its class weights.

use std::collections::BTreeSet;

use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::loss::{ClassWeights, Loss};

/// The head's width: `--num-classes`, at least the dataset's classes, which must be two or more
/// in the dataset (`name`, `class_names`) and in its training split (`train_labels`).
pub fn head_width(
    cfg: &FitConfig,
    name: &str,
    class_names: &[String],
    train_labels: &[usize],
) -> Result<usize> {
    let found = class_names.len();
    let in_train: BTreeSet<usize> = train_labels.iter().copied().collect();
    if found < 2 || in_train.len() < 2 {
        let what = if found < 2 {
            format!("{name} has {found} class")
        } else {
            format!(
                "the training split of {name} holds only class `{}`",
                in_train
                    .first()
                    .and_then(|&c| class_names.get(c))
                    .map_or("?", String::as_str)
            )
        };
        return Err(Error::invalid(format!(
            "{what}: a classifier needs at least two classes to learn anything"
        )));
    }
    match cfg.num_classes {
        None => Ok(found),
        Some(n) if n >= found => Ok(n),
        Some(n) => Err(Error::invalid(format!(
            "--num-classes {n} is smaller than the {found} classes of {name}"
        ))),
    }
}

/// The run's loss, its class weights resolved against the training split's `train_counts`.
pub fn run_loss(cfg: &FitConfig, train_counts: &[usize], classes: usize) -> Result<Loss> {
    Ok(Loss {
        kind: cfg.loss.kind(cfg.label_smoothing, cfg.focal_gamma)?,
        class_weights: match &cfg.class_weights {
            ClassWeights::None => None,
            ClassWeights::Auto => Some(crate::data::class_weights_auto(train_counts)),
            ClassWeights::Given(w) if w.len() == classes => Some(w.clone()),
            ClassWeights::Given(w) => {
                return Err(Error::invalid(format!(
                    "--class-weights has {} values, the model has {classes} classes",
                    w.len()
                )));
            }
        },
    })
}

/// What both classification tasks reject: segmentation's strategy and losses.
pub fn check_classification(cfg: &FitConfig) -> Result<()> {
    if cfg.strategy == crate::config::Strategy::Frozen {
        return Err(Error::invalid(
            "--strategy frozen is segmentation's (the decoder trains on a fixed backbone); for \
             classification a frozen backbone is --strategy linear-probe",
        ));
    }
    cfg.loss
        .kind(cfg.label_smoothing, cfg.focal_gamma)
        .map(|_| ())
}
