//! The epoch loop every task and strategy trains through: train one epoch → validate → append
//! the metrics line → checkpoint → early-stopping check, resumable from its last checkpoint.
//!
//! What an epoch *is* (which batches, which model, which loss) belongs to an [`EpochRunner`];
//! the loop only sees named scores, so it serves any task's metrics.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::checkpoint::{self, LoopState};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::metrics::{LOSS, Scores};
use crate::optim::{EpochRates, Schedule, ScheduleUnit};
use crate::progress::Progress;
use crate::weights::{NamedTensors, TensorList};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// `train_loss`, `train_<metric>`, `val_loss`, `val_<metric>` (null without a validation
    /// split, or when a value is not finite).
    #[serde(flatten)]
    pub scores: BTreeMap<String, Option<f64>>,
    pub lr: f64,
    pub seconds: f64,
}

impl EpochMetrics {
    /// A value by its `metrics.jsonl` name (`val_loss`, `train_accuracy`).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.scores.get(name).copied().flatten()
    }
}

/// One way of training (the network, a head on cached features): how to run an epoch, validate
/// and snapshot its state.
pub trait EpochRunner {
    /// Number of steps in an epoch (for the progress bar).
    fn steps_per_epoch(&self) -> usize;
    /// Number of optimizer steps in an epoch (what a per-step schedule counts).
    fn optimizer_steps_per_epoch(&self) -> usize {
        self.steps_per_epoch()
    }
    /// Trains one epoch, optimizer step `s` at `rates.at(s)`.
    fn train_epoch(
        &mut self,
        epoch: usize,
        rates: &EpochRates,
        progress: &Progress,
    ) -> Result<Scores>;
    /// Scores on the validation split, if there is one.
    fn validate(&self) -> Result<Option<Scores>>;
    /// Tensors to checkpoint: (model, optimizer).
    fn snapshot(&self) -> (TensorList, TensorList);
    /// Restores a snapshot taken by [`EpochRunner::snapshot`].
    fn restore(&mut self, model: &NamedTensors, optimizer: &NamedTensors) -> Result<()>;
}

/// Stop when a validation metric has not improved for `patience` epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    /// The `metrics.jsonl` name (`val_loss`, `val_accuracy`).
    pub metric: String,
    pub higher_is_better: bool,
    pub patience: usize,
}

/// What the loop needs to know: where, how long, at which learning rates.
pub struct LoopPlan<'a> {
    pub run_dir: &'a Path,
    pub epochs: usize,
    pub lr: f64,
    pub schedule: Schedule,
    pub schedule_unit: ScheduleUnit,
    pub warmup_epochs: usize,
    pub warmup_ratio: f64,
    pub seed: u64,
    pub early_stopping: Option<EarlyStopping>,
    /// Continue from the run folder's checkpoint.
    pub resume: bool,
    pub quiet: bool,
}

/// What the loop did.
pub struct History {
    pub epochs: Vec<EpochMetrics>,
    pub stopped_early: bool,
}

/// Runs the epochs of `plan` (from the checkpoint when resuming).
pub fn run_epochs(plan: &LoopPlan<'_>, runner: &mut dyn EpochRunner) -> Result<History> {
    let metrics_path = plan.run_dir.join("metrics.jsonl");
    let mut state = LoopState {
        epochs_done: 0,
        best: None,
        epochs_without_improvement: 0,
        seed: plan.seed,
    };
    let mut history: Vec<EpochMetrics> = Vec::new();
    let mut kept_lines = String::new();
    if plan.resume && checkpoint::exists(plan.run_dir) {
        let (model, optim, saved) = checkpoint::load(plan.run_dir)?;
        runner.restore(&model, &optim)?;
        state = saved;
        (history, kept_lines) = completed_epochs(&metrics_path, state.epochs_done)?;
        if !plan.quiet {
            eprintln!(
                "resuming {} after epoch {}",
                plan.run_dir.display(),
                state.epochs_done
            );
        }
    } else if plan.resume && !plan.quiet {
        eprintln!(
            "{}: stopped before its first checkpoint; starting it again from the beginning",
            plan.run_dir.display()
        );
    }
    // The metrics file holds exactly the completed epochs (their lines byte for byte): what an
    // uncommitted epoch or a crash mid-line left after them goes.
    write_atomic(&metrics_path, kept_lines.as_bytes())?;
    let patience_spent = |state: &LoopState| {
        plan.early_stopping
            .as_ref()
            .is_some_and(|s| state.epochs_without_improvement >= s.patience)
    };
    let mut stopped_early = false;
    for epoch in state.epochs_done..plan.epochs {
        if patience_spent(&state) {
            stopped_early = true;
            break;
        }
        let t = Instant::now();
        let rates = EpochRates {
            base: plan.lr,
            schedule: plan.schedule,
            unit: plan.schedule_unit,
            epoch,
            epochs: plan.epochs,
            steps_per_epoch: runner.optimizer_steps_per_epoch(),
            warmup_epochs: plan.warmup_epochs,
            warmup_ratio: plan.warmup_ratio,
        };
        let lr = rates.last();
        let what = format!("epoch {}/{}", epoch + 1, plan.epochs);
        let progress = Progress::new(plan.quiet, what, "steps", runner.steps_per_epoch());
        let train = runner.train_epoch(epoch, &rates, &progress).map_err(|e| {
            let kept = if state.epochs_done > 0 {
                format!(
                    "the last good checkpoint (epoch {}) is kept in {}",
                    state.epochs_done,
                    checkpoint::dir(plan.run_dir).display()
                )
            } else {
                "no checkpoint was written yet".to_string()
            };
            Error::invalid(format!("{e}; {kept}"))
        })?;
        progress.finish();
        let val = runner.validate()?;
        let m = epoch_line(epoch, &train, val.as_ref(), lr, t.elapsed().as_secs_f64());
        if !plan.quiet {
            let val_text = val
                .as_ref()
                .map_or(String::new(), |v| format!(" | val {}", v.text()));
            eprintln!(
                "Epoch {} train {}{} | lr {:.2e} | {:.1} s",
                m.epoch,
                train.text(),
                val_text,
                lr,
                m.seconds
            );
        }
        append_metrics(&metrics_path, &m)?;
        crate::files::crash_point("metrics-appended");
        if let Some(stop) = &plan.early_stopping
            && let Some(v) = stop
                .metric
                .strip_prefix("val_")
                .and_then(|name| val.as_ref()?.get(name))
        {
            let better = state
                .best
                .is_none_or(|b| if stop.higher_is_better { v > b } else { v < b });
            if better {
                state.best = Some(v);
                state.epochs_without_improvement = 0;
            } else {
                state.epochs_without_improvement += 1;
            }
        }
        history.push(m);
        state.epochs_done = epoch + 1;
        let (model_t, optim_t) = runner.snapshot();
        checkpoint::save(plan.run_dir, &model_t, &optim_t, &state)?;
    }
    if patience_spent(&state) && state.epochs_done < plan.epochs {
        stopped_early = true;
    }
    if stopped_early
        && !plan.quiet
        && let Some(stop) = &plan.early_stopping
    {
        eprintln!(
            "early stopping: {} has not improved for {} epochs",
            stop.metric, state.epochs_without_improvement
        );
    }
    Ok(History {
        epochs: history,
        stopped_early,
    })
}

/// The `metrics.jsonl` line of an epoch.
fn epoch_line(
    epoch: usize,
    train: &Scores,
    val: Option<&Scores>,
    lr: f64,
    seconds: f64,
) -> EpochMetrics {
    let mut scores = BTreeMap::new();
    let mut put =
        |split: &str, s: Option<&Scores>, names: &mut dyn Iterator<Item = &'static str>| {
            for name in names {
                let v = s.and_then(|s| s.get(name)).filter(|v| v.is_finite());
                scores.insert(format!("{split}_{name}"), v);
            }
        };
    let names = || std::iter::once(LOSS.name).chain(train.metrics.iter().map(|(n, _)| *n));
    put("train", Some(train), &mut names());
    put("val", val, &mut names());
    EpochMetrics {
        epoch: epoch + 1,
        scores,
        lr,
        seconds,
    }
}

/// The epochs recorded in a run's `metrics.jsonl` (none when the file does not exist).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let Ok(text) = crate::files::read_text(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::file(path, format!("line {}: invalid metrics line: {e}", i + 1))
            })
        })
        .collect()
}

/// The first `epochs` lines of `metrics.jsonl` — the epochs a checkpoint holds — parsed and
/// verbatim. Lines after them are dropped; fewer of them, or a gap, is an error.
fn completed_epochs(path: &Path, epochs: usize) -> Result<(Vec<EpochMetrics>, String)> {
    let text = if path.exists() {
        crate::files::read_text(path)?
    } else {
        String::new()
    };
    let mut history = Vec::new();
    let mut kept = String::new();
    for line in text.split_inclusive('\n').take(epochs) {
        let Ok(m) = serde_json::from_str::<EpochMetrics>(line.trim_end()) else {
            break;
        };
        if m.epoch != history.len() + 1 || !line.ends_with('\n') {
            break;
        }
        history.push(m);
        kept.push_str(line);
    }
    if history.len() < epochs {
        return Err(Error::file(
            path,
            format!(
                "holds {} complete epoch line(s) but the checkpoint is after epoch {epochs}: \
                 the run's files do not belong together; start the run again",
                history.len()
            ),
        ));
    }
    Ok((history, kept))
}

/// Appends an epoch's line and syncs it: it must be on disk before the checkpoint that follows
/// it is committed.
fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(m).unwrap_or_default())
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io(path, e))
}
