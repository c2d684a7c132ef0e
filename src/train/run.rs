//! One fit in progress, as a task sees it: the resolved settings, the run folder, the device,
//! and the epoch loop configured from them.

use std::path::Path;

use burn::tensor::Device;

use super::epochs::{
    Control, EarlyStopping, EpochCallback, EpochMetrics, EpochRunner, History, LoopPlan, run_epochs,
};
use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::metrics::{LOSS, Metric};

/// One fit in progress, as a task's [`Task::fit`](crate::train::Task::fit) sees it.
pub struct Run<'a> {
    /// The resolved settings (as saved in `config.toml`).
    pub cfg: &'a FitConfig,
    /// The run folder.
    pub dir: &'a Path,
    /// Where the model trains.
    pub device: &'a Device,
    /// No progress bars or per-epoch lines.
    pub quiet: bool,
    resume: bool,
    on_epoch: Option<EpochCallback>,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        cfg: &'a FitConfig,
        dir: &'a Path,
        device: &'a Device,
        quiet: bool,
        resume: bool,
        on_epoch: Option<EpochCallback>,
    ) -> Self {
        Run {
            cfg,
            dir,
            device,
            quiet,
            resume,
            on_epoch,
        }
    }

    /// A progress message on stderr (unless quiet).
    pub fn say(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Runs the epoch loop on `runner` with the run's schedule, checkpoints and early stopping
    /// (`metrics`: the task's, for early stopping on one of them).
    pub fn train(&self, runner: &mut dyn EpochRunner, metrics: &[Metric]) -> Result<History> {
        let cfg = self.cfg;
        let plan = LoopPlan {
            run_dir: self.dir,
            epochs: cfg.epochs,
            lr: cfg.lr,
            schedule: cfg.schedule,
            schedule_unit: cfg.schedule_unit,
            warmup_epochs: cfg.warmup_epochs,
            warmup_ratio: cfg.warmup_ratio,
            seed: cfg.seed,
            early_stopping: early_stopping(cfg, metrics)?,
            resume: self.resume,
            quiet: self.quiet,
            on_epoch: self.on_epoch.as_ref(),
        };
        run_epochs(&plan, runner)
    }

    /// Shows an epoch's line to the epoch callback (`FitOptions::on_epoch`), if any, for a
    /// way of training that does not go through [`Run::train`] (the lbfgs probe: one line).
    pub fn epoch_done(&self, m: &EpochMetrics) -> Control {
        self.on_epoch.as_ref().map_or(Control::Continue, |f| f(m))
    }
}

/// The early-stopping rule of `cfg`, its metric checked against the task's.
pub(super) fn early_stopping(cfg: &FitConfig, metrics: &[Metric]) -> Result<Option<EarlyStopping>> {
    let Some(patience) = cfg.early_stopping else {
        return Ok(None);
    };
    let name = cfg.early_stopping_metric.as_str();
    let metric = name
        .strip_prefix("val_")
        .and_then(|m| std::iter::once(&LOSS).chain(metrics).find(|x| x.name == m));
    let Some(metric) = metric else {
        let known: Vec<String> = std::iter::once(&LOSS)
            .chain(metrics)
            .map(|m| format!("val_{}", m.name))
            .collect();
        return Err(Error::invalid(format!(
            "--early-stopping-metric `{name}` is not a validation metric of this task (known: {})",
            known.join(", ")
        )));
    };
    Ok(Some(EarlyStopping {
        metric: format!("val_{}", metric.name),
        higher_is_better: metric.higher_is_better,
        patience,
    }))
}
