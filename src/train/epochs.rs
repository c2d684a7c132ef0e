//! The epoch loop every task and strategy trains through: train one epoch → validate → append
//! the metrics line → checkpoint → early-stopping check, resumable from its last checkpoint.
//!
//! What an epoch *is* (which batches, which model, which loss) belongs to an [`EpochRunner`];
//! the loop only sees named scores, so it serves any task's metrics.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
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
    /// The epoch, counted from 1.
    pub epoch: usize,
    /// `train_loss`, `train_<metric>`, `val_loss`, `val_<metric>` (null without a validation
    /// split, or when a value is not finite).
    #[serde(flatten)]
    pub scores: BTreeMap<String, Option<f64>>,
    /// The learning rate of the epoch's last optimizer step.
    pub lr: f64,
    /// The epoch's wall time: training and validation.
    pub seconds: f64,
    /// The training loss of each optimizer step of the epoch, in order (one value for `gd`'s
    /// full-batch step; empty for the lbfgs probe, which takes no steps by epochs, and in lines
    /// written before graft recorded them).
    #[serde(default)]
    pub step_losses: Vec<f64>,
}

impl EpochMetrics {
    /// A value by its `metrics.jsonl` name (`val_loss`, `train_accuracy`).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.scores.get(name).copied().flatten()
    }
}

/// What an epoch callback tells the loop after an epoch: go on, or stop the run there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    /// Train the next epoch (if the run has one).
    #[default]
    Continue,
    /// Stop after this epoch, as early stopping does: the run is then finished, evaluated and
    /// its summary written (`stopped_early` is true when epochs were left), and a resume of it
    /// does not train further.
    Stop,
}

/// A function called after each epoch with its `metrics.jsonl` line (once the line is on disk,
/// before the epoch's checkpoint), which says whether to go on: custom logging, or early
/// stopping on any criterion. See [`crate::train::FitOptions::on_epoch`].
pub type EpochCallback = Arc<dyn Fn(&EpochMetrics) -> Control + Send + Sync>;

/// What training one epoch gave: its scores and the training loss of each optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochTrained {
    /// The epoch's training loss and metrics.
    pub scores: Scores,
    /// The loss of each optimizer step, in order (`metrics.jsonl`'s `step_losses`).
    pub step_losses: Vec<f64>,
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
    ) -> Result<EpochTrained>;
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
    /// Whether a higher value is an improvement (accuracy) or a lower one (loss).
    pub higher_is_better: bool,
    /// Epochs without improvement before the run stops.
    pub patience: usize,
}

/// What the loop needs to know: where, how long, at which learning rates.
pub struct LoopPlan<'a> {
    /// The run folder (`metrics.jsonl`, `checkpoint/`).
    pub run_dir: &'a Path,
    /// Epochs to train in all.
    pub epochs: usize,
    /// The base learning rate.
    pub lr: f64,
    /// How the rate changes over the run.
    pub schedule: Schedule,
    /// Whether the schedule advances per epoch or per optimizer step.
    pub schedule_unit: ScheduleUnit,
    /// Linear warm-up epochs.
    pub warmup_epochs: usize,
    /// Linear warm-up over this fraction of all optimizer steps.
    pub warmup_ratio: f64,
    /// The run's seed (recorded in each checkpoint).
    pub seed: u64,
    /// Stop when a validation metric stalls.
    pub early_stopping: Option<EarlyStopping>,
    /// Continue from the run folder's checkpoint.
    pub resume: bool,
    /// No progress bars or per-epoch lines.
    pub quiet: bool,
    /// Called after each epoch; [`Control::Stop`] ends the run there.
    pub on_epoch: Option<&'a EpochCallback>,
}

/// What the loop did.
pub struct History {
    /// Every epoch's line, the resumed ones included.
    pub epochs: Vec<EpochMetrics>,
    /// The run stopped before its last epoch (early stopping, or the epoch callback).
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
        stopped: false,
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
        if patience_spent(&state) || state.stopped {
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
        let trained = runner.train_epoch(epoch, &rates, &progress).map_err(|e| {
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
        let train = trained.scores;
        let val = runner.validate()?;
        let mut m = epoch_line(epoch, &train, val.as_ref(), lr, t.elapsed().as_secs_f64());
        m.step_losses = trained.step_losses;
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
        // The callback's answer is part of the checkpoint: a resumed run stops where it did.
        if plan.on_epoch.is_some_and(|f| f(&m) == Control::Stop) {
            state.stopped = true;
        }
        history.push(m);
        state.epochs_done = epoch + 1;
        let (model_t, optim_t) = runner.snapshot();
        checkpoint::save(plan.run_dir, &model_t, &optim_t, &state)?;
    }
    if (patience_spent(&state) || state.stopped) && state.epochs_done < plan.epochs {
        stopped_early = true;
    }
    if stopped_early && !plan.quiet {
        if state.stopped {
            eprintln!(
                "stopped by the epoch callback after epoch {}",
                state.epochs_done
            );
        } else if let Some(stop) = &plan.early_stopping {
            eprintln!(
                "early stopping: {} has not improved for {} epochs",
                stop.metric, state.epochs_without_improvement
            );
        }
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
        step_losses: Vec::new(),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A runner whose one "weight" counts the epochs it trained.
    #[derive(Default)]
    struct Counter {
        weight: f32,
        trained: Vec<usize>,
    }

    impl EpochRunner for Counter {
        fn steps_per_epoch(&self) -> usize {
            3
        }

        fn train_epoch(
            &mut self,
            epoch: usize,
            _rates: &EpochRates,
            _progress: &Progress,
        ) -> Result<EpochTrained> {
            self.weight += 1.0;
            self.trained.push(epoch);
            Ok(EpochTrained {
                scores: Scores {
                    loss: 1.0 / (epoch + 1) as f64,
                    metrics: Vec::new(),
                },
                step_losses: (0..3).map(|s| epoch as f64 + s as f64 / 10.0).collect(),
            })
        }

        fn validate(&self) -> Result<Option<Scores>> {
            Ok(Some(Scores {
                loss: 0.5,
                metrics: Vec::new(),
            }))
        }

        fn snapshot(&self) -> (TensorList, TensorList) {
            (vec![("w".into(), vec![1], vec![self.weight])], Vec::new())
        }

        fn restore(&mut self, model: &NamedTensors, _optimizer: &NamedTensors) -> Result<()> {
            self.weight = model["w"].1[0];
            Ok(())
        }
    }

    fn plan<'a>(dir: &'a Path, epochs: usize, resume: bool) -> LoopPlan<'a> {
        LoopPlan {
            run_dir: dir,
            epochs,
            lr: 0.1,
            schedule: Schedule::Constant,
            schedule_unit: ScheduleUnit::Epoch,
            warmup_epochs: 0,
            warmup_ratio: 0.0,
            seed: 0,
            early_stopping: None,
            resume,
            quiet: true,
            on_epoch: None,
        }
    }

    #[test]
    fn a_callback_stop_ends_the_run_and_a_resume_trains_no_further() {
        let tmp = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let stop: EpochCallback = Arc::new(move |m: &EpochMetrics| {
            seen.fetch_add(1, Ordering::SeqCst);
            assert_eq!(m.step_losses.len(), 3);
            if m.epoch == 2 {
                Control::Stop
            } else {
                Control::Continue
            }
        });
        let mut runner = Counter::default();
        let history = run_epochs(
            &LoopPlan {
                on_epoch: Some(&stop),
                ..plan(tmp.path(), 5, false)
            },
            &mut runner,
        )
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(history.epochs.len(), 2);
        assert!(history.stopped_early);
        assert_eq!(runner.trained, [0, 1]);

        // Resumed (by a process without the callback): it stops where it stopped.
        let mut resumed = Counter::default();
        let again = run_epochs(&plan(tmp.path(), 5, true), &mut resumed).unwrap();
        assert!(resumed.trained.is_empty(), "trained {:?}", resumed.trained);
        assert_eq!(resumed.weight, 2.0);
        assert!(again.stopped_early);
        assert_eq!(again.epochs, history.epochs);

        // A stop asked after the last epoch cuts nothing: not an early stop.
        let last = tempfile::tempdir().unwrap();
        let always: EpochCallback = Arc::new(|_: &EpochMetrics| Control::Stop);
        let h = run_epochs(
            &LoopPlan {
                on_epoch: Some(&always),
                ..plan(last.path(), 1, false)
            },
            &mut Counter::default(),
        )
        .unwrap();
        assert!(!h.stopped_early);
    }

    #[test]
    fn step_losses_are_recorded_and_survive_a_resume() {
        let tmp = tempfile::tempdir().unwrap();
        run_epochs(&plan(tmp.path(), 2, false), &mut Counter::default()).unwrap();
        let path = tmp.path().join("metrics.jsonl");
        let before = std::fs::read_to_string(&path).unwrap();
        let lines = read_metrics(&path).unwrap();
        assert_eq!(lines[1].step_losses, [1.0, 1.1, 1.2]);
        // A crash after an epoch's line, before its checkpoint: the line goes on resume.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "{{\"epoch\":3,\"train_loss\":9.0,\"step_losses\":[9.0]").unwrap();
        let mut resumed = Counter::default();
        let h = run_epochs(&plan(tmp.path(), 3, true), &mut resumed).unwrap();
        assert_eq!(resumed.trained, [2]);
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.starts_with(&before), "{after}");
        let lines = read_metrics(&path).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].step_losses, [2.0, 2.1, 2.2]);
        assert_eq!(h.epochs, lines);
        // Lines written before step losses were recorded still read (as none).
        let old: EpochMetrics =
            serde_json::from_str(r#"{"epoch":1,"train_loss":0.5,"lr":0.1,"seconds":1.0}"#).unwrap();
        assert!(old.step_losses.is_empty());
        assert_eq!(old.get("train_loss"), Some(0.5));
    }
}
