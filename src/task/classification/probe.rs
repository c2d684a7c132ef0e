//! Trains a linear probe's head on cached features by the run's `--probe` solver: L-BFGS
//! logistic regression to convergence (`lbfgs_probe`, the default) or the epoch loop
//! (`head::HeadObjective` through the trainer). Shared by every classification task.

use burn::module::Module;

use super::head::{FeatureSplit, HeadObjective};
use super::lbfgs_probe;
use crate::error::Result;
use crate::files::write_atomic;
use crate::linear_model::ProbeSolver;
use crate::loss::Loss;
use crate::metrics::Metric;
use crate::model::Linear;
use crate::train::{History, Run, Trainer};

/// Trains `head` (its initial values matter to the sgd solver only) on `train`, validating on
/// `val`; returns the trained head on the run's plain device and the history.
#[allow(clippy::too_many_arguments)]
pub fn train_head(
    run: &Run<'_>,
    loss: &Loss,
    head: Linear,
    train: FeatureSplit,
    val: Option<FeatureSplit>,
    dim: usize,
    classes: usize,
    metrics: &[Metric],
) -> Result<(Linear, History)> {
    let cfg = run.cfg;
    match cfg.probe {
        ProbeSolver::Lbfgs => {
            let fit = lbfgs_probe::fit(
                &train,
                val.as_ref(),
                dim,
                classes,
                loss.class_weights.as_deref(),
                cfg.probe_l2,
                cfg.seed,
                run.device,
                &|line| run.say(line),
            )?;
            let line = serde_json::to_string(&fit.metrics).unwrap_or_default() + "\n";
            write_atomic(&run.dir.join("metrics.jsonl"), line.as_bytes())?;
            // One line, fitted in one go: shown to the epoch callback, nothing left to stop.
            run.epoch_done(&fit.metrics);
            let record = serde_json::to_string_pretty(&fit.record).unwrap_or_default();
            write_atomic(&run.dir.join("probe.json"), record.as_bytes())?;
            Ok((
                fit.head,
                History {
                    epochs: vec![fit.metrics],
                    stopped_early: false,
                },
            ))
        }
        ProbeSolver::Sgd => {
            let ad = run.device.clone().autodiff();
            let objective = HeadObjective {
                loss,
                train,
                val,
                dim,
                classes,
                batch_size: cfg.batch_size,
                seed: cfg.seed,
                sampler: cfg.sampler,
                device: ad.clone(),
            };
            let mut trainer = Trainer::new(objective, head.train(), cfg.optimizer_config(), ad);
            let history = run.train(&mut trainer, metrics)?;
            Ok((trainer.model.valid(), history))
        }
    }
}
