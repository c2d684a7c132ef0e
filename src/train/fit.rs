//! `graft fit`: from a dataset and a pretrained backbone to a trained, evaluated, saved model.
//!
//! The epoch loop reads top to bottom: train one epoch → validate → append the metrics line →
//! checkpoint → early-stopping check. `linear-probe` runs the same loop over cached features
//! with only the head, so the frozen backbone runs once per sample, ever.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, LoopState};
use super::loss::Loss;
use super::optim::{Grads, Optimizer, OptimizerKind};
use crate::config::{ClassWeights, FitConfig, Plan, Strategy};
use crate::data::{self, Dataset, Pipeline, Subset};
use crate::error::{Error, Result};
use crate::eval::MetricsAccumulator;
use crate::model::params::{Strictness, load_into};
use crate::model::{Classifier, Preset, preset};
use crate::tensor::{labels as label_tensor, to_vec};
use crate::weights::{TensorMap, load_weights};

/// What a run reports; `graft fit --json` prints it as one line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitSummary {
    pub test_accuracy: f64,
    pub val_accuracy: Option<f64>,
    pub train_loss: f64,
    pub epochs: usize,
    pub seconds: f64,
    pub run_dir: PathBuf,
    pub model: String,
    pub strategy: String,
    /// `hit`, `miss` or `partial` for linear probes (how much of the feature cache was reused).
    pub feature_cache: Option<String>,
    pub stopped_early: bool,
    pub trainable_params: usize,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
}

/// Settings of the invocation that are not part of the run's config.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// No progress bars or per-epoch lines.
    pub quiet: bool,
    /// Continue the run in `config.out` from its last checkpoint.
    pub resume: bool,
}

/// The compute device for a `--device` name.
pub fn device_for(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(Error::invalid(
            "--device cuda needs graft built with `--features cuda`",
        )),
        other => Err(Error::invalid(format!(
            "unknown device `{other}` (cpu or cuda)"
        ))),
    }
}

/// Opens the dataset with the run's limits and validation split applied.
pub fn open_dataset(cfg: &FitConfig) -> Result<Dataset> {
    if cfg.data.is_empty() {
        return Err(Error::invalid(
            "no dataset: pass --data SPEC (e.g. fashion-mnist)",
        ));
    }
    let mut ds = data::open(&cfg.data)?;
    if let Some(n) = cfg.limit_train {
        ds = ds.limit_train(n, cfg.seed);
    }
    if let Some(n) = cfg.limit_test {
        ds = ds.limit_test(n, cfg.seed);
    }
    if cfg.val_split > 0.0 {
        ds = ds.with_val_split(cfg.val_split, cfg.seed);
    }
    Ok(ds)
}

/// The evaluation transform of a run (also used by `graft eval` and `predict`).
pub fn eval_pipeline(p: &Preset, size: usize, resize: &str) -> Result<Pipeline> {
    Pipeline::eval(size, p.mean, p.std, resize)
}

/// Runs `graft fit`.
pub fn fit(cfg: &FitConfig, opts: &FitOptions) -> Result<FitSummary> {
    cfg.plan()?;
    let dataset = open_dataset(cfg)?;
    fit_on(cfg, opts, dataset)
}

/// Runs a fit on an already opened (and split) dataset: what cross-validation folds use.
pub fn fit_on(cfg: &FitConfig, opts: &FitOptions, dataset: Dataset) -> Result<FitSummary> {
    let started = Instant::now();
    let plan = cfg.plan()?;
    let preset = *preset(&cfg.model)?;
    let device = device_for(&cfg.device)?;
    device.seed(cfg.seed);
    let classes = resolve_classes(cfg, &dataset)?;
    let size = cfg.image_size.unwrap_or(preset.input_size);
    let eval_pipe = eval_pipeline(&preset, size, &cfg.resize)?;
    let train_pipe = Pipeline::train(
        size,
        preset.mean,
        preset.std,
        data::Augment {
            crop: plan.augment.crop,
            flip: plan.augment.flip,
        },
        size / 8,
    )?;
    let counts = dataset.class_counts(&dataset.train);
    let loss = Loss {
        kind: plan.loss.clone(),
        class_weights: match &plan.class_weights {
            ClassWeights::None => None,
            ClassWeights::Auto => Some(data::class_weights_auto(&counts)),
            ClassWeights::Given(w) if w.len() == classes => Some(w.clone()),
            ClassWeights::Given(w) => {
                return Err(Error::invalid(format!(
                    "--class-weights has {} values, the model has {classes} classes",
                    w.len()
                )));
            }
        },
    };

    let run_dir = cfg.out.clone().unwrap_or_else(|| default_run_dir(cfg));
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let saved_cfg = FitConfig {
        out: Some(run_dir.clone()),
        ..cfg.clone()
    };
    checkpoint::write_atomic(&run_dir.join("config.toml"), saved_cfg.to_toml().as_bytes())?;

    let say = |msg: String| {
        if !opts.quiet {
            eprintln!("{msg}");
        }
    };
    say(format!(
        "graft fit: {} on {} ({} classes; train {}, val {}, test {}), strategy {}, {}px, run {}",
        preset.name,
        dataset.name,
        classes,
        dataset.train.len(),
        dataset.val.as_ref().map_or(0, Subset::len),
        dataset.test.len(),
        cfg.strategy,
        size,
        run_dir.display()
    ));

    let model = build_model(cfg, &plan, &preset, classes, &device, &say)?;
    let ctx = Ctx {
        cfg,
        plan: &plan,
        preset: &preset,
        device: &device,
        run_dir: &run_dir,
        loss: &loss,
        quiet: opts.quiet,
        resume: opts.resume,
    };
    let outcome = match plan.strategy {
        Strategy::LinearProbe => {
            super::probe::run_probe(&ctx, model, &dataset, &eval_pipe, classes)?
        }
        _ => super::network::run_network(&ctx, model, &dataset, &train_pipe, &eval_pipe, classes)?,
    };

    let evaluation = outcome.test.finish(&dataset.class_names);
    let eval_json = serde_json::to_string_pretty(&evaluation).unwrap_or_default();
    checkpoint::write_atomic(&run_dir.join("eval.json"), eval_json.as_bytes())?;
    super::run_files::save_model(
        &run_dir,
        &outcome.model,
        &preset,
        cfg,
        &dataset,
        classes,
        size,
    )?;
    say(format!(
        "test accuracy {:.4} ({} images) — run saved in {}",
        evaluation.accuracy,
        evaluation.samples,
        run_dir.display()
    ));
    let (_, trainable) = outcome.trainable;
    let summary = FitSummary {
        test_accuracy: evaluation.accuracy,
        val_accuracy: outcome.history.last().and_then(|m| m.val_accuracy),
        train_loss: outcome.history.last().map_or(f64::NAN, |m| m.train_loss),
        epochs: outcome.history.len(),
        seconds: started.elapsed().as_secs_f64(),
        run_dir: run_dir.clone(),
        model: preset.name.to_string(),
        strategy: cfg.strategy.clone(),
        feature_cache: outcome.cache_status,
        stopped_early: outcome.stopped_early,
        trainable_params: trainable,
    };
    // Written last: its presence marks a finished run (compare skips such cells on re-runs).
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
    checkpoint::write_atomic(&run_dir.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

fn resolve_classes(cfg: &FitConfig, ds: &Dataset) -> Result<usize> {
    let found = ds.class_names.len();
    match cfg.num_classes {
        None => Ok(found),
        Some(n) if n >= found => Ok(n),
        Some(n) => Err(Error::invalid(format!(
            "--num-classes {n} is smaller than the {found} classes of {}",
            ds.name
        ))),
    }
}

fn default_run_dir(cfg: &FitConfig) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let strategy = cfg.strategy.replace(':', "");
    PathBuf::from("runs").join(format!("{}-{}-{secs}", cfg.model, strategy))
}

/// The model a run starts from: pretrained backbone (unless `scratch` or `--weights none`) and a
/// fresh head of `classes` outputs.
fn build_model(
    cfg: &FitConfig,
    plan: &Plan,
    preset: &Preset,
    classes: usize,
    device: &Device,
    say: &dyn Fn(String),
) -> Result<Classifier> {
    let model = Classifier::new(preset, classes, device);
    if plan.strategy == Strategy::Scratch || cfg.weights == "none" {
        if plan.strategy != Strategy::Scratch {
            say("warning: --weights none: the backbone is randomly initialised, nothing is transferred".into());
        }
        return Ok(model);
    }
    let weights = load_pretrained(Path::new(&cfg.weights))?;
    let (model, report) = load_into(model, &weights, preset.head_name, Strictness::SkipHead)?;
    say(format!(
        "loaded {} tensors from {}{}",
        report.loaded,
        cfg.weights,
        if report.head_skipped.is_empty() {
            String::new()
        } else {
            format!("; new {classes}-class head (the file's head has another shape)")
        }
    ));
    Ok(model)
}

/// Reads a weights file and strips a wrapper prefix (`module.`) if every key has it.
pub fn load_pretrained(path: &Path) -> Result<TensorMap> {
    let mut weights = load_weights(path)?;
    weights.strip_common_prefix();
    Ok(weights)
}

/// What the run-level code needs from either training path.
pub(super) struct Outcome {
    pub(super) model: Classifier,
    pub(super) history: Vec<EpochMetrics>,
    pub(super) test: MetricsAccumulator,
    pub(super) cache_status: Option<String>,
    pub(super) stopped_early: bool,
    pub(super) trainable: (usize, usize),
}

pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a FitConfig,
    pub(super) plan: &'a Plan,
    pub(super) preset: &'a Preset,
    pub(super) device: &'a Device,
    pub(super) run_dir: &'a Path,
    pub(super) loss: &'a Loss,
    pub(super) quiet: bool,
    pub(super) resume: bool,
}

/// One training path: how to run an epoch, validate, and snapshot state.
pub(super) trait EpochRunner {
    /// Trains one epoch at `lr`; returns (mean loss, accuracy).
    fn train_epoch(&mut self, epoch: usize, lr: f64, bar: &ProgressBar) -> Result<(f64, f64)>;
    /// Number of steps in an epoch (for the progress bar).
    fn steps_per_epoch(&self) -> usize;
    /// (loss, accuracy) on the validation split, if there is one.
    fn validate(&self) -> Result<Option<(f64, f64)>>;
    /// Tensors to checkpoint: (model, optimizer).
    #[allow(clippy::type_complexity)]
    fn snapshot(
        &self,
    ) -> (
        Vec<(String, Vec<usize>, Vec<f32>)>,
        Vec<(String, Vec<usize>, Vec<f32>)>,
    );
    /// Restores a snapshot taken by [`EpochRunner::snapshot`].
    fn restore(
        &mut self,
        model: &checkpoint::NamedTensors,
        optim: &checkpoint::NamedTensors,
    ) -> Result<()>;
}

/// The epoch loop shared by both paths. Returns the history and whether it stopped early.
pub(super) fn run_epochs(
    ctx: &Ctx<'_>,
    runner: &mut dyn EpochRunner,
) -> Result<(Vec<EpochMetrics>, bool)> {
    let cfg = ctx.cfg;
    let metrics_path = ctx.run_dir.join("metrics.jsonl");
    let mut state = LoopState {
        epochs_done: 0,
        best_val_loss: None,
        epochs_without_improvement: 0,
        seed: cfg.seed,
    };
    let mut history: Vec<EpochMetrics> = Vec::new();
    if ctx.resume {
        let (model, optim, saved) = checkpoint::load(ctx.run_dir)?;
        runner.restore(&model, &optim)?;
        state = saved;
        history = read_metrics(&metrics_path)?
            .into_iter()
            .filter(|m| m.epoch <= state.epochs_done)
            .collect();
        if !ctx.quiet {
            eprintln!(
                "resuming {} after epoch {}",
                ctx.run_dir.display(),
                state.epochs_done
            );
        }
    }
    // Rewrite the metrics file so it holds exactly the completed epochs.
    write_metrics(&metrics_path, &history)?;
    let mut stopped_early = false;
    for epoch in state.epochs_done..cfg.epochs {
        if let Some(patience) = cfg.early_stopping
            && state.epochs_without_improvement >= patience
        {
            stopped_early = true;
            break;
        }
        let t = Instant::now();
        let lr = ctx
            .plan
            .schedule
            .lr(cfg.lr, epoch, cfg.epochs, cfg.warmup_epochs);
        let bar = progress_bar(ctx.quiet, runner.steps_per_epoch(), epoch, cfg.epochs);
        let (train_loss, train_acc) = runner.train_epoch(epoch, lr, &bar).map_err(|e| {
            let kept = if state.epochs_done > 0 {
                format!(
                    "the last good checkpoint (epoch {}) is kept in {}",
                    state.epochs_done,
                    checkpoint::dir(ctx.run_dir).display()
                )
            } else {
                "no checkpoint was written yet".to_string()
            };
            Error::invalid(format!("{e}; {kept}"))
        })?;
        bar.finish_and_clear();
        let val = runner.validate()?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss,
            train_accuracy: train_acc,
            val_loss: val.map(|v| v.0),
            val_accuracy: val.map(|v| v.1),
            lr,
            seconds: t.elapsed().as_secs_f64(),
        };
        if !ctx.quiet {
            let val_text = val.map_or(String::new(), |(l, a)| {
                format!(" | val loss {l:.4} acc {a:.4}")
            });
            eprintln!(
                "Epoch {} loss: {:.4} | train acc {:.4}{} | lr {:.2e} | {:.1} s",
                m.epoch, train_loss, train_acc, val_text, lr, m.seconds
            );
        }
        append_metrics(&metrics_path, &m)?;
        history.push(m);
        if let Some((vl, _)) = val {
            if state.best_val_loss.is_none_or(|b| vl < b) {
                state.best_val_loss = Some(vl);
                state.epochs_without_improvement = 0;
            } else {
                state.epochs_without_improvement += 1;
            }
        }
        state.epochs_done = epoch + 1;
        let (model_t, optim_t) = runner.snapshot();
        checkpoint::save(ctx.run_dir, &model_t, &optim_t, &state)?;
    }
    if let Some(patience) = cfg.early_stopping
        && state.epochs_without_improvement >= patience
        && state.epochs_done < cfg.epochs
    {
        stopped_early = true;
    }
    if stopped_early && !ctx.quiet {
        eprintln!(
            "early stopping: validation loss has not improved for {} epochs",
            state.epochs_without_improvement
        );
    }
    Ok((history, stopped_early))
}

pub(super) fn progress_bar(quiet: bool, len: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
    bar
}

fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| Error::file(path, format!("bad metrics line: {e}")))
        })
        .collect()
}

fn write_metrics(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text += &serde_json::to_string(m).unwrap_or_default();
        text.push('\n');
    }
    checkpoint::write_atomic(path, text.as_bytes())
}

fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(m).unwrap_or_default()).map_err(|e| Error::io(path, e))
}

/// The optimisation of one epoch, shared by both training paths: each batch's loss, backward
/// and optimizer step — or, for `gd`, gradients accumulated over the epoch (each batch's mean
/// loss weighted by its share, so the sum is the full-batch mean) and one step at the end.
pub(super) struct EpochSteps<'a> {
    optimizer: &'a mut Optimizer,
    loss: &'a Loss,
    lr_of: &'a dyn Fn(&str) -> f64,
    samples: usize,
    epoch: usize,
    full_batch: bool,
    grads: Grads,
    metrics: MetricsAccumulator,
}

impl<'a> EpochSteps<'a> {
    pub(super) fn new(
        optimizer: &'a mut Optimizer,
        loss: &'a Loss,
        lr_of: &'a dyn Fn(&str) -> f64,
        samples: usize,
        classes: usize,
        epoch: usize,
    ) -> Self {
        let full_batch = optimizer.config.kind == OptimizerKind::Gd;
        Self {
            optimizer,
            loss,
            lr_of,
            samples,
            epoch,
            full_batch,
            grads: Grads::default(),
            metrics: MetricsAccumulator::new(classes, &[]),
        }
    }

    /// Loss and backward for one batch of `model`'s `logits`, then a step unless full-batch.
    pub(super) fn batch<M: Module>(
        &mut self,
        model: M,
        logits: Tensor<2>,
        labels: &[usize],
        step: usize,
    ) -> Result<M> {
        let b = labels.len();
        let device = logits.device();
        let mut loss = self
            .loss
            .forward(logits.clone(), label_tensor(labels, &device));
        let share = b as f64 / self.samples as f64;
        if self.full_batch {
            loss = loss.mul_scalar(share);
        }
        let value = to_vec(loss.clone())[0] as f64;
        let mean = if self.full_batch {
            value / share
        } else {
            value
        };
        check_finite(mean, self.epoch, step)?;
        self.metrics.add(&to_vec(logits.detach()), labels, mean);
        self.grads.accumulate(&model, &mut loss.backward());
        if self.full_batch {
            return Ok(model);
        }
        let model = self.optimizer.step(model, &self.grads, self.lr_of);
        self.grads = Grads::default();
        Ok(model)
    }

    /// The running (mean loss, accuracy) of the epoch so far.
    pub(super) fn progress(&self) -> (f64, f64) {
        (self.metrics.mean_loss(), self.metrics.accuracy())
    }

    /// Ends the epoch (the one `gd` step); returns the model and (mean loss, accuracy).
    pub(super) fn finish<M: Module>(self, model: M) -> (M, (f64, f64)) {
        let progress = self.progress();
        let model = if self.full_batch {
            self.optimizer.step(model, &self.grads, self.lr_of)
        } else {
            model
        };
        (model, progress)
    }
}

/// Fails the epoch when a loss is not finite.
pub(super) fn check_finite(loss: f64, epoch: usize, step: usize) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "the loss became {loss} at epoch {}, step {}: stopping (try a lower --lr)",
            epoch + 1,
            step + 1
        )))
    }
}

pub use super::network::{evaluate_network, stage_of};
pub use super::probe::cache_dir;
pub use super::run_files::{ModelCard, evaluate_run, finished_summary, load_run};
