//! `graft fit`: from a dataset and a pretrained backbone to a trained, evaluated, saved model.
//!
//! The epoch loop reads top to bottom: train one epoch → validate → append the metrics line →
//! checkpoint → early-stopping check. `linear-probe` runs the same loop over cached features
//! with only the head, so the frozen backbone runs once per sample, ever.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::cache::{CacheKey, FeatureStore, file_sha256};
use super::checkpoint::{self, LoopState};
use super::loss::Loss;
use super::optim::{Grads, Optimizer, OptimizerKind};
use crate::config::{ClassWeights, FitConfig, Plan, Strategy};
use crate::data::{self, Dataset, Loader, Pipeline, Sampler, Subset};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, MetricsAccumulator};
use crate::model::params::{
    INTERNAL_HEAD, Strictness, Trainable, load_into, named_tensors, set_trainable,
};
use crate::model::{Classifier, Linear, Preset, preset};
use crate::tensor::{from_vec, labels as label_tensor, to_vec};
use crate::weights::{TensorMap, load_weights, save_safetensors};

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

/// Everything `graft predict --run` and `graft eval --run` need besides the tensors; written to
/// `model.json` beside `model.safetensors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub model: String,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub image_size: usize,
    pub resize: String,
    pub data: String,
    pub strategy: String,
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
        Strategy::LinearProbe => run_probe(&ctx, model, &dataset, &eval_pipe, classes)?,
        _ => run_network(&ctx, model, &dataset, &train_pipe, &eval_pipe, classes)?,
    };

    let evaluation = outcome.test.finish(&dataset.class_names);
    let eval_json = serde_json::to_string_pretty(&evaluation).unwrap_or_default();
    checkpoint::write_atomic(&run_dir.join("eval.json"), eval_json.as_bytes())?;
    save_model(
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

/// The summary of a finished run, if `run_dir` holds one.
pub fn finished_summary(run_dir: &Path) -> Option<FitSummary> {
    let text = std::fs::read_to_string(run_dir.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
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
struct Outcome {
    model: Classifier,
    history: Vec<EpochMetrics>,
    test: MetricsAccumulator,
    cache_status: Option<String>,
    stopped_early: bool,
    trainable: (usize, usize),
}

struct Ctx<'a> {
    cfg: &'a FitConfig,
    plan: &'a Plan,
    preset: &'a Preset,
    device: &'a Device,
    run_dir: &'a Path,
    loss: &'a Loss,
    quiet: bool,
    resume: bool,
}

/// One training path: how to run an epoch, validate, and snapshot state.
trait EpochRunner {
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
fn run_epochs(ctx: &Ctx<'_>, runner: &mut dyn EpochRunner) -> Result<(Vec<EpochMetrics>, bool)> {
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

fn progress_bar(quiet: bool, len: usize, epoch: usize, epochs: usize) -> ProgressBar {
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

/// Fails the epoch when a loss is not finite.
fn check_finite(loss: f64, epoch: usize, step: usize) -> Result<()> {
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

// ------------------------------------------------------------------------------------------
// linear probe: frozen backbone, cached features, head only

/// Features of one split: row-major `(n, dim)` and labels.
struct FeatureSplit {
    x: Vec<f32>,
    y: Vec<usize>,
    /// Source index of each row (for the misclassified-samples list).
    idx: Vec<usize>,
}

fn run_probe(
    ctx: &Ctx<'_>,
    model: Classifier,
    ds: &Dataset,
    eval_pipe: &Pipeline,
    classes: usize,
) -> Result<Outcome> {
    let cfg = ctx.cfg;
    let dim = ctx.preset.arch.feature_dim();
    // The backbone runs in inference mode on the plain device: no autodiff, BN uses its
    // pretrained statistics.
    let frozen = model.valid();
    let weights_id = if cfg.weights == "none" {
        None
    } else {
        Some(file_sha256(Path::new(&cfg.weights))?)
    };
    let mut statuses = Vec::new();
    let mut extract = |subset: &Subset| -> Result<FeatureSplit> {
        let source = if std::sync::Arc::ptr_eq(&subset.source, &ds.test.source) {
            "test"
        } else {
            "train"
        };
        let key = weights_id.as_ref().map(|w| CacheKey {
            model: ctx.preset.name.to_string(),
            weights_sha256: w.clone(),
            data: cfg.data.clone(),
            source: source.to_string(),
            transform: eval_pipe.describe(),
            image_size: cfg.image_size.unwrap_or(ctx.preset.input_size),
        });
        let dir = cache_dir(cfg);
        let (x, status) = cached_features(
            &frozen,
            subset,
            eval_pipe,
            key.as_ref(),
            &dir,
            cfg.batch_size,
            ctx.quiet,
            dim,
        )?;
        statuses.push(status);
        Ok(FeatureSplit {
            x,
            y: (0..subset.len()).map(|k| subset.label(k)).collect(),
            idx: subset.indices.clone(),
        })
    };
    let train = extract(&ds.train)?;
    let val = ds.val.as_ref().map(&mut extract).transpose()?;
    let test = extract(&ds.test)?;
    let status = if statuses.iter().all(|s| *s == "hit") {
        "hit"
    } else if statuses.iter().all(|s| *s == "miss") {
        "miss"
    } else {
        "partial"
    };

    let ad = ctx.device.clone().autodiff();
    let mut runner = HeadRunner {
        head: frozen.head.clone().train(),
        optimizer: Optimizer::new(ctx.plan.optimizer),
        loss: ctx.loss,
        train,
        val,
        dim,
        classes,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        balanced: ctx.plan.balanced,
        device: ad,
    };
    let (history, stopped_early) = run_epochs(ctx, &mut runner)?;
    let head = runner.head.valid();
    let plain = ctx.device.clone();
    let test_metrics = evaluate_features(&head, &test, dim, classes, ctx.loss, &plain);
    let trainable = head.weight.dims().iter().product::<usize>() + head.bias.dims()[0];
    let mut model = frozen;
    model.head = head;
    let (total, _) = crate::model::params::count_params(&model);
    Ok(Outcome {
        model,
        history,
        test: test_metrics,
        cache_status: Some(status.to_string()),
        stopped_early,
        trainable: (total, trainable),
    })
}

/// The feature cache folder: `--cache-dir`, `$GRAFT_CACHE_DIR`, or `~/.cache/graft`.
pub fn cache_dir(cfg: &FitConfig) -> PathBuf {
    if let Some(d) = &cfg.cache_dir {
        return d.clone();
    }
    if let Ok(d) = std::env::var("GRAFT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    match std::env::var("HOME") {
        Ok(home) => PathBuf::from(home).join(".cache/graft"),
        Err(_) => PathBuf::from(".cache/graft"),
    }
}

/// Features for `subset`, from the cache where present; extracts (and caches) the rest.
#[allow(clippy::too_many_arguments)]
fn cached_features(
    model: &Classifier,
    subset: &Subset,
    pipe: &Pipeline,
    key: Option<&CacheKey>,
    dir: &Path,
    batch_size: usize,
    quiet: bool,
    dim: usize,
) -> Result<(Vec<f32>, &'static str)> {
    let path = key.map(|k| k.path(dir));
    let mut store = match &path {
        Some(p) => FeatureStore::load(p)?,
        None => FeatureStore::default(),
    };
    if store.dim != 0 && store.dim != dim {
        store = FeatureStore::default();
    }
    let missing = store.missing(&subset.indices);
    if missing.is_empty() {
        return Ok((store.gather(&subset.indices), "hit"));
    }
    let status = if missing.len() == subset.indices.len() {
        "miss"
    } else {
        "partial"
    };
    let todo = Subset {
        source: subset.source.clone(),
        indices: missing,
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(todo.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "features [{bar:30}] {pos}/{len} images, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    };
    let device = model.head.weight.device();
    store.dim = dim;
    for batch in Loader::new(
        todo.clone(),
        pipe.clone(),
        batch_size,
        Sampler::Sequential,
        0,
        0,
    ) {
        let batch = batch?;
        let x = from_vec(batch.images, batch.shape, &device);
        let f = to_vec(model.forward_features(x));
        for (row, &src_index) in f.chunks_exact(dim).zip(&batch.indices) {
            store.rows.insert(src_index, row.to_vec());
        }
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(p) = &path {
        store.save(p)?;
    }
    Ok((store.gather(&subset.indices), status))
}

struct HeadRunner<'a> {
    head: Linear,
    optimizer: Optimizer,
    loss: &'a Loss,
    train: FeatureSplit,
    val: Option<FeatureSplit>,
    dim: usize,
    classes: usize,
    batch_size: usize,
    seed: u64,
    balanced: bool,
    device: Device,
}

impl EpochRunner for HeadRunner<'_> {
    fn steps_per_epoch(&self) -> usize {
        self.train.y.len().div_ceil(self.batch_size)
    }

    fn train_epoch(&mut self, epoch: usize, lr: f64, bar: &ProgressBar) -> Result<(f64, f64)> {
        let n = self.train.y.len();
        let sampler = if self.balanced {
            Sampler::Balanced
        } else {
            Sampler::Shuffle
        };
        let order = data::epoch_order(&self.train.y, sampler, self.seed, epoch as u64);
        let full_batch = self.optimizer.config.kind == OptimizerKind::Gd;
        let mut grads = Grads::default();
        let mut acc = MetricsAccumulator::new(self.classes, &[]);
        for (step, idx) in order.chunks(self.batch_size).enumerate() {
            let mut xb = Vec::with_capacity(idx.len() * self.dim);
            let mut yb = Vec::with_capacity(idx.len());
            for &i in idx {
                xb.extend_from_slice(&self.train.x[i * self.dim..(i + 1) * self.dim]);
                yb.push(self.train.y[i]);
            }
            let x = from_vec(xb, [idx.len(), self.dim], &self.device);
            let logits = self.head.forward(x);
            let mut loss = self
                .loss
                .forward(logits.clone(), label_tensor(&yb, &self.device));
            if full_batch {
                loss = loss.mul_scalar(idx.len() as f64 / n as f64);
            }
            let value = to_vec(loss.clone())[0] as f64;
            let mean = if full_batch {
                value * n as f64 / idx.len() as f64
            } else {
                value
            };
            check_finite(mean, epoch, step)?;
            acc.add(&to_vec(logits.detach()), &yb, mean);
            grads.accumulate(&self.head, &mut loss.backward());
            if !full_batch {
                self.head = self.optimizer.step(self.head.clone(), &grads, &|_| lr);
                grads = Grads::default();
            }
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", acc.mean_loss()));
        }
        if full_batch {
            self.head = self.optimizer.step(self.head.clone(), &grads, &|_| lr);
        }
        Ok((acc.mean_loss(), acc.accuracy()))
    }

    fn validate(&self) -> Result<Option<(f64, f64)>> {
        Ok(self.val.as_ref().map(|v| {
            let head = self.head.valid();
            let m = evaluate_features(
                &head,
                v,
                self.dim,
                self.classes,
                self.loss,
                &head.weight.device(),
            );
            (m.mean_loss(), m.accuracy())
        }))
    }

    fn snapshot(
        &self,
    ) -> (
        Vec<(String, Vec<usize>, Vec<f32>)>,
        Vec<(String, Vec<usize>, Vec<f32>)>,
    ) {
        let w = self.head.weight.val();
        let b = self.head.bias.val();
        (
            vec![
                (
                    format!("{INTERNAL_HEAD}.weight"),
                    w.dims().to_vec(),
                    to_vec(w),
                ),
                (
                    format!("{INTERNAL_HEAD}.bias"),
                    b.dims().to_vec(),
                    to_vec(b),
                ),
            ],
            self.optimizer.state_tensors(),
        )
    }

    fn restore(
        &mut self,
        model: &checkpoint::NamedTensors,
        optim: &checkpoint::NamedTensors,
    ) -> Result<()> {
        let get = |k: &str| {
            model
                .get(&format!("{INTERNAL_HEAD}.{k}"))
                .ok_or_else(|| Error::tensor(k, "missing from the checkpoint"))
        };
        let (ws, wv) = get("weight")?;
        let (_, bv) = get("bias")?;
        if ws.as_slice() != self.head.weight.dims() {
            return Err(Error::tensor(
                "head.weight",
                format!("checkpoint has {ws:?}, model {:?}", self.head.weight.dims()),
            ));
        }
        let d = self.device.clone();
        self.head = Linear {
            weight: burn::module::Param::from_tensor(from_vec(wv.clone(), [ws[0], ws[1]], &d)),
            bias: burn::module::Param::from_tensor(from_vec(bv.clone(), [bv.len()], &d)),
        };
        self.optimizer.load_state(optim, &d)
    }
}

fn evaluate_features(
    head: &Linear,
    split: &FeatureSplit,
    dim: usize,
    classes: usize,
    loss: &Loss,
    device: &Device,
) -> MetricsAccumulator {
    let mut acc = MetricsAccumulator::new(classes, &[5]);
    let n = split.y.len();
    const CHUNK: usize = 1024;
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let x = from_vec(
            split.x[start * dim..end * dim].to_vec(),
            [end - start, dim],
            device,
        );
        let logits = head.forward(x);
        let y = &split.y[start..end];
        let l = to_vec(loss.forward(logits.clone(), label_tensor(y, device)))[0] as f64;
        acc.add_indexed(&to_vec(logits), y, &split.idx[start..end], l);
    }
    acc
}

// ------------------------------------------------------------------------------------------
// fine-tune / partial / scratch: the whole network in the loop

/// The stage (0 = stem) a checkpoint key belongs to, and how many stages the backbone has.
/// `partial:K` trains the last K stages plus the head.
pub fn stage_of(preset: &Preset, key: &str) -> (usize, usize) {
    use crate::model::Arch;
    match preset.arch {
        Arch::ResNet(_) => {
            let stage = ["layer1", "layer2", "layer3", "layer4"]
                .iter()
                .position(|s| key.starts_with(&format!("{s}.")))
                .map_or(0, |i| i + 1);
            (stage, 5)
        }
        Arch::EfficientNet(spec) => {
            // Stem, one stage per row of the stage table, then the 1x1 head convolution.
            let n = spec.stages.len() + 2;
            if let Some(rest) = key.strip_prefix("_blocks.") {
                let block: usize = rest
                    .split('.')
                    .next()
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0);
                let mut end = 0;
                for (i, s) in spec.stages.iter().enumerate() {
                    end += s.0;
                    if block < end {
                        return (i + 1, n);
                    }
                }
                (n - 2, n)
            } else if key.starts_with("_conv_head") || key.starts_with("_bn1") {
                (n - 1, n)
            } else {
                (0, n)
            }
        }
    }
}

fn run_network(
    ctx: &Ctx<'_>,
    model: Classifier,
    ds: &Dataset,
    train_pipe: &Pipeline,
    eval_pipe: &Pipeline,
    classes: usize,
) -> Result<Outcome> {
    let cfg = ctx.cfg;
    let preset = *ctx.preset;
    let head = preset.head_name;
    let is_head = |key: &str| key.starts_with(&format!("{head}."));
    let trains = |key: &str| -> bool {
        if is_head(key) {
            return true;
        }
        match ctx.plan.strategy {
            Strategy::Partial(k) => {
                let (stage, n) = stage_of(&preset, key);
                stage + k >= n
            }
            _ => true,
        }
    };
    let bn_trains = |key: &str| !ctx.plan.bn_frozen && trains(&format!("{key}.weight"));
    let ad = ctx.device.clone().autodiff();
    let model = set_trainable(
        model.set_bn_momentum(cfg.bn_momentum).train(),
        head,
        &Trainable {
            param: &trains,
            batch_norm: &bn_trains,
        },
    );
    let trainable = crate::model::params::count_params(&model);
    if !ctx.quiet {
        eprintln!("{} of {} parameters train", trainable.1, trainable.0);
    }
    let mult = cfg.backbone_lr_mult;
    let mut runner = NetworkRunner {
        model,
        optimizer: Optimizer::new(ctx.plan.optimizer),
        loss: ctx.loss,
        train: ds.train.clone(),
        val: ds.val.clone(),
        train_pipe: train_pipe.clone(),
        eval_pipe: eval_pipe.clone(),
        classes,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        sampler: if ctx.plan.balanced {
            Sampler::Balanced
        } else {
            Sampler::Shuffle
        },
        lr_mult: mult,
        head_name: head,
        device: ad,
    };
    let (history, stopped_early) = run_epochs(ctx, &mut runner)?;
    let model = runner.model.valid();
    let test = evaluate_network(
        &model,
        &ds.test,
        eval_pipe,
        cfg.batch_size,
        ctx.loss,
        classes,
        ctx.quiet,
    )?;
    Ok(Outcome {
        model,
        history,
        test,
        cache_status: None,
        stopped_early,
        trainable,
    })
}

struct NetworkRunner<'a> {
    model: Classifier,
    optimizer: Optimizer,
    loss: &'a Loss,
    train: Subset,
    val: Option<Subset>,
    train_pipe: Pipeline,
    eval_pipe: Pipeline,
    classes: usize,
    batch_size: usize,
    seed: u64,
    sampler: Sampler,
    lr_mult: f64,
    head_name: &'static str,
    device: Device,
}

impl EpochRunner for NetworkRunner<'_> {
    fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.batch_size)
    }

    fn train_epoch(&mut self, epoch: usize, lr: f64, bar: &ProgressBar) -> Result<(f64, f64)> {
        let n = self.train.len();
        let full_batch = self.optimizer.config.kind == OptimizerKind::Gd;
        let mult = self.lr_mult;
        let lr_of = move |key: &str| {
            if key.starts_with(&format!("{INTERNAL_HEAD}.")) {
                lr
            } else {
                lr * mult
            }
        };
        let mut grads = Grads::default();
        let mut acc = MetricsAccumulator::new(self.classes, &[]);
        let loader = Loader::new(
            self.train.clone(),
            self.train_pipe.clone(),
            self.batch_size,
            self.sampler,
            self.seed,
            epoch as u64,
        );
        for (step, batch) in loader.enumerate() {
            let batch = batch?;
            let b = batch.labels.len();
            let x = from_vec(batch.images, batch.shape, &self.device);
            let logits = self.model.forward(x);
            let mut loss = self
                .loss
                .forward(logits.clone(), label_tensor(&batch.labels, &self.device));
            if full_batch {
                loss = loss.mul_scalar(b as f64 / n as f64);
            }
            let value = to_vec(loss.clone())[0] as f64;
            let mean = if full_batch {
                value * n as f64 / b as f64
            } else {
                value
            };
            check_finite(mean, epoch, step)?;
            acc.add(&to_vec(logits.detach()), &batch.labels, mean);
            grads.accumulate(&self.model, &mut loss.backward());
            if !full_batch {
                self.model = self.optimizer.step(self.model.clone(), &grads, &lr_of);
                grads = Grads::default();
            }
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} acc {:.3}",
                acc.mean_loss(),
                acc.accuracy()
            ));
        }
        if full_batch {
            self.model = self.optimizer.step(self.model.clone(), &grads, &lr_of);
        }
        Ok((acc.mean_loss(), acc.accuracy()))
    }

    fn validate(&self) -> Result<Option<(f64, f64)>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let m = evaluate_network(
            &self.model.valid(),
            val,
            &self.eval_pipe,
            self.batch_size,
            self.loss,
            self.classes,
            true,
        )?;
        Ok(Some((m.mean_loss(), m.accuracy())))
    }

    fn snapshot(
        &self,
    ) -> (
        Vec<(String, Vec<usize>, Vec<f32>)>,
        Vec<(String, Vec<usize>, Vec<f32>)>,
    ) {
        (
            named_tensors(&self.model, self.head_name),
            self.optimizer.state_tensors(),
        )
    }

    fn restore(
        &mut self,
        model: &checkpoint::NamedTensors,
        optim: &checkpoint::NamedTensors,
    ) -> Result<()> {
        let map = named_to_map(model);
        let (m, _) = load_into(self.model.clone(), &map, self.head_name, Strictness::Strict)?;
        self.model = m;
        self.optimizer.load_state(optim, &self.device)
    }
}

fn named_to_map(t: &checkpoint::NamedTensors) -> TensorMap {
    use crate::weights::{DType, Format, RawTensor};
    TensorMap {
        format: Format::Safetensors,
        tensors: t
            .iter()
            .map(|(k, (s, v))| {
                (
                    k.clone(),
                    RawTensor {
                        dtype: DType::F32,
                        shape: s.clone(),
                        data: v.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// Runs `model` (inference mode) over `subset` and accumulates the metrics.
pub fn evaluate_network(
    model: &Classifier,
    subset: &Subset,
    pipe: &Pipeline,
    batch_size: usize,
    loss: &Loss,
    classes: usize,
    quiet: bool,
) -> Result<MetricsAccumulator> {
    let device = model.head.weight.device();
    let mut acc = MetricsAccumulator::new(classes, &[5]);
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(subset.len() as u64)
    };
    for batch in Loader::new(
        subset.clone(),
        pipe.clone(),
        batch_size,
        Sampler::Sequential,
        0,
        0,
    ) {
        let batch = batch?;
        let x = from_vec(batch.images, batch.shape, &device);
        let logits = model.forward(x);
        let l =
            to_vec(loss.forward(logits.clone(), label_tensor(&batch.labels, &device)))[0] as f64;
        acc.add_indexed(&to_vec(logits), &batch.labels, &batch.indices, l);
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish_and_clear();
    Ok(acc)
}

/// Writes `model.safetensors` (checkpoint keys, loadable by `graft predict --run` and by
/// PyTorch's `load_state_dict` for the same architecture) and `model.json`.
fn save_model(
    run_dir: &Path,
    model: &Classifier,
    preset: &Preset,
    cfg: &FitConfig,
    ds: &Dataset,
    classes: usize,
    size: usize,
) -> Result<()> {
    save_safetensors(
        &run_dir.join("model.safetensors"),
        &named_tensors(model, preset.head_name),
    )?;
    let mut names = ds.class_names.clone();
    names.extend((names.len()..classes).map(|i| format!("class {i}")));
    let card = ModelCard {
        model: preset.name.to_string(),
        num_classes: classes,
        class_names: names,
        image_size: size,
        resize: cfg.resize.clone(),
        data: cfg.data.clone(),
        strategy: cfg.strategy.clone(),
    };
    let json = serde_json::to_string_pretty(&card).unwrap_or_default();
    checkpoint::write_atomic(&run_dir.join("model.json"), json.as_bytes())
}

/// Loads a finished run's model and card (for `graft predict --run` / `graft eval --run`).
pub fn load_run(
    run_dir: &Path,
    device: &Device,
) -> Result<(Classifier, ModelCard, &'static Preset)> {
    let card_path = run_dir.join("model.json");
    let text = std::fs::read_to_string(&card_path).map_err(|e| Error::io(&card_path, e))?;
    let card: ModelCard = serde_json::from_str(&text)
        .map_err(|e| Error::file(&card_path, format!("invalid model card: {e}")))?;
    let p = preset(&card.model)?;
    let weights = load_weights(&run_dir.join("model.safetensors"))?;
    let model = Classifier::new(p, card.num_classes, device);
    let (model, _) = load_into(model, &weights, p.head_name, Strictness::Strict)?;
    Ok((model, card, p))
}

/// Evaluates a finished run on its test split (or on another dataset spec).
pub fn evaluate_run(run_dir: &Path, data_spec: Option<&str>, quiet: bool) -> Result<Evaluation> {
    let cfg = FitConfig::from_toml_file(&run_dir.join("config.toml"))?;
    let device = device_for(&cfg.device)?;
    let (model, card, p) = load_run(run_dir, &device)?;
    let mut cfg = cfg;
    if let Some(spec) = data_spec {
        cfg.data = spec.to_string();
        cfg.limit_test = None;
    }
    let ds = open_dataset(&cfg)?;
    let pipe = eval_pipeline(p, card.image_size, &card.resize)?;
    let loss = Loss {
        kind: cfg.plan()?.loss,
        class_weights: None,
    };
    let acc = evaluate_network(
        &model,
        &ds.test,
        &pipe,
        cfg.batch_size,
        &loss,
        card.num_classes,
        quiet,
    )?;
    Ok(acc.finish(&card.class_names))
}
