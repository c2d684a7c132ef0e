//! Training, generic over the task: the seam a task implements ([`Task`], with its
//! [`Objective`] for gradient training), the epoch loop ([`run_epochs`]: schedule, validation,
//! `metrics.jsonl`, checkpoints, resume, early stopping on a named metric), the [`Trainer`] that
//! takes gradient steps for any objective, and the driver of one fit ([`fit_on`]: run folder,
//! `config.toml`, `summary.json`).
//!
//! Nothing here knows images, labels or logits: that is the task's (`crate::task`).

pub mod checkpoint;
mod epochs;
mod fit;
mod pretrained;
mod run;
pub mod run_dir;
mod task;
mod trainer;

pub use checkpoint::LoopState;
pub use epochs::{
    Control, EarlyStopping, EpochCallback, EpochMetrics, EpochRunner, EpochTrained, History,
    LoopPlan, read_metrics, run_epochs,
};
pub use fit::{FitOptions, check, default_run_dir, fit_on, hold_out_validation, open};
pub use pretrained::resolve_pretrained;
pub use run::Run;
pub use run_dir::{FitSummary, finished_summary, run_config};
pub use task::{Evaluated, Fitted, Section, Task, TaskData, TaskReport};
pub use trainer::{Objective, Trainer};

pub use crate::metrics::{LOSS, Metric, Scores, Tally};

pub use crate::weights::{NamedTensors, TensorList};
