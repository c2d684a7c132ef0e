//! `graft fit` for any task: the run folder and the settings it records, the task's fit, the
//! summary. The task does the rest (see [`Task::fit`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::epochs::{Control, EpochCallback, EpochMetrics};
use super::run::{Run, early_stopping};
use super::run_dir::{self, FitSummary};
use super::task::{Task, TaskData};
use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::files::write_atomic;

/// Settings of the invocation that are not part of the run's config.
///
/// ```no_run
/// use graft::train::{Control, FitOptions};
///
/// // Log each epoch, and stop once the validation accuracy reaches 0.95.
/// let opts = FitOptions::default().on_epoch(|m| {
///     println!("epoch {}: train loss {:?}", m.epoch, m.get("train_loss"));
///     if m.get("val_accuracy").is_some_and(|a| a >= 0.95) {
///         Control::Stop
///     } else {
///         Control::Continue
///     }
/// });
/// # let _ = opts;
/// ```
#[derive(Clone, Default)]
pub struct FitOptions {
    /// No progress bars or per-epoch lines.
    pub quiet: bool,
    /// Continue the run in `config.out` from its last checkpoint.
    pub resume: bool,
    /// Replace a run already in `config.out` (otherwise that is an error).
    pub overwrite: bool,
    /// Called after each epoch with its `metrics.jsonl` line ([`EpochMetrics`]: `epoch`,
    /// `train_loss`, `val_loss`, `val_accuracy` / `val_miou`, `lr`, `seconds`, `step_losses`);
    /// its [`Control::Stop`] ends the run there as early stopping does. Runs of `cv` and
    /// `compare` call it for each fold or cell. (The lbfgs linear probe, fitted in one go,
    /// calls it once and cannot be stopped.)
    pub on_epoch: Option<EpochCallback>,
}

impl FitOptions {
    /// These options with `f` as the epoch callback ([`FitOptions::on_epoch`]).
    pub fn on_epoch(
        mut self,
        f: impl Fn(&EpochMetrics) -> Control + Send + Sync + 'static,
    ) -> Self {
        self.on_epoch = Some(Arc::new(f));
        self
    }
}

impl std::fmt::Debug for FitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FitOptions")
            .field("quiet", &self.quiet)
            .field("resume", &self.resume)
            .field("overwrite", &self.overwrite)
            .field(
                "on_epoch",
                &self.on_epoch.as_ref().map(|_| "Fn(&EpochMetrics)"),
            )
            .finish()
    }
}

/// Checks `cfg` for task `T` before anything is opened or written.
pub fn check<T: Task>(cfg: &FitConfig) -> Result<()> {
    // The task's checks first: they know which settings apply to it at all (segmentation has
    // no linear probe, so the probe's own checks would only mislead).
    T::check(cfg)?;
    cfg.check()?;
    early_stopping(cfg, T::METRICS)?;
    Ok(())
}

/// Opens `cfg`'s data for task `T`, with the validation split held out.
pub fn open<T: Task>(cfg: &FitConfig) -> Result<T::Data> {
    hold_out_validation(T::open(cfg)?, cfg)
}

/// Holds out `cfg.val_split` of `data`'s training split as validation (nothing when it is 0).
pub fn hold_out_validation<D: TaskData>(data: D, cfg: &FitConfig) -> Result<D> {
    if cfg.val_split <= 0.0 {
        return Ok(data);
    }
    let (before, had_val, _) = data.sizes();
    let data = data.with_val_split(cfg.val_split, cfg.seed);
    let (_, val, _) = data.sizes();
    if val == 0 && had_val == 0 {
        // Validation scores of no samples would read as a loss of 0 and steer early stopping.
        return Err(Error::invalid(format!(
            "{}: --val-split {} holds out no sample of the {before} training samples; use a \
             larger fraction, more data, or --val-split 0",
            data.name(),
            cfg.val_split
        )));
    }
    Ok(data)
}

/// Fits task `T` on an opened (and split) dataset: what `graft fit` and each fold of `cv` run.
pub fn fit_on<T: Task>(cfg: &FitConfig, opts: &FitOptions, data: T::Data) -> Result<FitSummary> {
    let started = Instant::now();
    let cfg = &super::pretrained::resolve_pretrained::<T>(cfg, opts.quiet)?;
    check::<T>(cfg)?;
    // A run with nothing to learn from or nothing to test on would end with a meaningless
    // number and exit 0.
    let (train, _, test) = data.sizes();
    for (n, split) in [(train, "training"), (test, "test")] {
        if n == 0 {
            return Err(Error::invalid(format!(
                "{}: the {split} split is empty (check --data, --limit-train / --limit-test \
                 and --val-split)",
                data.name()
            )));
        }
    }
    let (kernels, train_layout) = crate::kernels::configure(cfg.kernels, cfg.train_layout);
    let device = cfg.device.device()?;
    device.seed(cfg.seed);
    let run_dir = cfg.out.clone().unwrap_or_else(|| default_run_dir(cfg));
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let _lock = run_dir::lock(&run_dir)?;
    if opts.resume {
        // No longer finished while it runs on (a compare or cv sees an unfinished cell).
        let summary = run_dir.join("summary.json");
        if summary.exists() {
            std::fs::remove_file(&summary).map_err(|e| Error::io(&summary, e))?;
        }
    } else {
        run_dir::prepare_new(&run_dir, opts.overwrite)?;
    }
    let saved = FitConfig {
        out: Some(run_dir.clone()),
        kernels,
        train_layout,
        ..cfg.clone()
    };
    write_atomic(&run_dir.join("config.toml"), saved.to_toml().as_bytes())?;
    let run = Run::new(
        &saved,
        &run_dir,
        &device,
        opts.quiet,
        opts.resume,
        opts.on_epoch.clone(),
    );
    let fitted = T::fit(&run, &data)?;
    let mut scores = BTreeMap::new();
    for (name, value) in &fitted.test {
        scores.insert(format!("test_{name}"), Some(*value));
        let val = fitted
            .history
            .last()
            .and_then(|m| m.get(&format!("val_{name}")));
        scores.insert(format!("val_{name}"), val);
    }
    // The score itself is the command's output (stdout); this line says where it came from.
    run.say(format!(
        "evaluated on {} test samples; run saved in {}",
        fitted.test_samples,
        run_dir.display()
    ));
    let summary = FitSummary {
        scores,
        train_loss: fitted
            .history
            .last()
            .and_then(|m| m.get("train_loss"))
            .unwrap_or(f64::NAN),
        epochs: fitted.history.len(),
        seconds: started.elapsed().as_secs_f64(),
        run_dir: run_dir.clone(),
        task: T::NAME.to_string(),
        model: cfg.model.clone(),
        strategy: cfg.strategy.to_string(),
        feature_cache: fitted.feature_cache,
        stopped_early: fitted.stopped_early,
        trainable_params: fitted.params.1,
        kernels,
        train_layout,
    };
    crate::files::crash_point("before-summary");
    // Written last: its presence marks a finished run.
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
    write_atomic(&run_dir.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// The folder a run writes into when `--out` is not given: `runs/MODEL-STRATEGY-TIME`.
pub fn default_run_dir(cfg: &FitConfig) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let strategy = cfg.strategy.to_string().replace(':', "");
    PathBuf::from("runs").join(format!("{}-{}-{secs}", cfg.model, strategy))
}
