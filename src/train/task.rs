//! The task seam: what a task (image classification today; text classification and
//! segmentation next) supplies, and what stays generic — the run folder, the epoch loop,
//! checkpoints, resume, early stopping, `cv`, `compare` and the report's common parts.
//!
//! A task is a type implementing [`Task`]; it owns opening and collating its data, building its
//! model from a backbone, the loss of a batch (its [`Objective`](super::Objective)) and its
//! metrics. Adding one is new files under `src/task/` plus one line in the registry there.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::epochs::EpochMetrics;
use super::run::Run;
use crate::config::FitConfig;
use crate::error::Result;
use crate::metrics::Metric;
use crate::tensor::DeviceKind;

/// A kind of problem graft fine-tunes for.
pub trait Task: 'static {
    /// The value of the `task` setting (`image-classification`).
    const NAME: &'static str;
    /// One line for `graft tasks`.
    const SUMMARY: &'static str;
    /// What each epoch measures besides the loss, on the training and the validation split
    /// (`metrics.jsonl`: `train_<name>`, `val_<name>`). The first one sums a run up: it is the
    /// test score `cv` averages and `compare` tabulates.
    const METRICS: &'static [Metric];

    /// The strategies `graft compare --preset transfer` sets side by side: the pretrained
    /// backbone frozen, fine-tuned, and the from-scratch baseline.
    const TRANSFER_STRATEGIES: &'static [&'static str] = &["linear-probe", "fine-tune", "scratch"];

    /// Whether `--weights imagenet` (the default) names the zoo model's published ImageNet
    /// weights for this task; a task whose models come as folders (text) says what it needs
    /// itself.
    const IMAGENET_WEIGHTS: bool = true;

    /// An opened dataset with its splits.
    type Data: TaskData;

    /// Whether `cfg`, naming no task, is this task's: its data spec or weights are of this
    /// task's kind.
    fn recognizes(_cfg: &FitConfig) -> bool {
        false
    }
    /// The settings this task sets apart from graft's defaults, as `(key, value)` (for example
    /// a text encoder's learning rate): applied where neither a config file nor a flag gives
    /// one.
    fn defaults(_cfg: &FitConfig) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Task-specific checks of the settings (the model exists, the strategy applies), before
    /// anything is opened.
    fn check(cfg: &FitConfig) -> Result<()>;
    /// Opens `cfg.data` with `cfg`'s limits applied (no validation split yet).
    fn open(cfg: &FitConfig) -> Result<Self::Data>;
    /// Builds the model, trains it (through [`Run::train`]), evaluates it on the test split and
    /// writes the task's files into the run folder (`eval.json`, the model).
    fn fit(run: &Run<'_>, data: &Self::Data) -> Result<Fitted>;
    /// `graft eval --run`: evaluates a finished run on its test split, or on `data`'s, on
    /// `device` (default: the run's own).
    fn evaluate_run(
        run_dir: &Path,
        data: Option<&str>,
        device: Option<DeviceKind>,
        quiet: bool,
    ) -> Result<Evaluated>;
    /// The task's part of a run's report (`cfg`: the run's settings, if its folder has them).
    fn report(run_dir: &Path, cfg: Option<&FitConfig>) -> Result<TaskReport>;
}

/// A task's dataset, as the generic code handles it.
pub trait TaskData: Clone {
    /// A short name for messages.
    fn name(&self) -> &str;
    /// (train, validation, test) sample counts.
    fn sizes(&self) -> (usize, usize, usize);
    /// Holds out `fraction` of the training split as validation.
    fn with_val_split(self, fraction: f64, seed: u64) -> Self;
    /// The `k` cross-validation folds of the training split: fold `i` is the test split of the
    /// `i`-th dataset, the other folds its training split.
    fn folds(&self, k: usize, seed: u64) -> Result<Vec<Self>>;
}

/// What a task's fit hands back to the generic driver.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// Every epoch's metrics line, in order.
    pub history: Vec<EpochMetrics>,
    /// Whether early stopping ended training before the last epoch.
    pub stopped_early: bool,
    /// Test scores by metric name (the task's metrics).
    pub test: Vec<(&'static str, f64)>,
    /// Test samples evaluated.
    pub test_samples: usize,
    /// (all parameters, trainable parameters).
    pub params: (usize, usize),
    /// `hit`, `miss` or `partial`: how much of a feature cache was reused.
    pub feature_cache: Option<String>,
}

/// What `graft eval` prints: the evaluation as JSON, a text table, and where it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluated {
    /// The evaluation, as written to the file (`graft eval --json` prints it).
    pub json: serde_json::Value,
    /// The evaluation as a plain-text table, for the terminal.
    pub table: String,
    /// The file the evaluation was written to.
    pub written: std::path::PathBuf,
}

/// A task's part of a run's report page.
#[derive(Debug, Clone, Default)]
pub struct TaskReport {
    /// Headline numbers, `(label, value)`, shown first.
    pub cards: Vec<(String, String)>,
    /// Sections after the generic training curves.
    pub sections: Vec<Section>,
}

/// One section of a report page: a stable element id, a heading, finished HTML.
#[derive(Debug, Clone)]
pub struct Section {
    /// The element id (an anchor: `#id` links to it).
    pub id: String,
    /// The section's heading text (escaped when rendered).
    pub heading: String,
    /// The section's body, finished HTML.
    pub html: String,
}

impl Section {
    /// A section from its id, heading and body.
    pub fn new(id: &str, heading: &str, html: String) -> Section {
        Section {
            id: id.to_string(),
            heading: heading.to_string(),
            html,
        }
    }
}
