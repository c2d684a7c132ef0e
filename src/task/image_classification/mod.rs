//! Image classification: labelled images in, a backbone with a new linear head out. The first
//! task on the seam (`crate::train::Task`): everything here is what is specific to it — its
//! data (`crate::data`'s image datasets), its model ([`Classifier`]), its loss of a batch
//! (`crate::loss`), its metrics (`crate::metrics`), its strategies (the network trains, or a
//! linear probe on cached features) and its report sections.

mod evaluate;
mod heatmaps;
mod input;
pub mod model_files;
mod network;
pub mod predict;
mod probe;
mod report;

use std::path::Path;

use burn::module::Module;

use crate::config::{BnPolicy, FitConfig, Strategy};
use crate::data::{self, Dataset, Pipeline, Subset};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::metrics::ACCURACY;
use crate::model::params::{Strictness, Trainable, count_params, load_into, set_trainable};
use crate::model::{Classifier, Preset, preset, with_model_hint};
use crate::task::classification::head::evaluate_features;
use crate::task::classification::probe::train_head;
use crate::task::classification::setup::{head_width, run_loss};
use crate::tensor::DeviceKind;
use crate::train::{Evaluated, Fitted, Metric, Run, Task, TaskData, TaskReport, Trainer};
use crate::weights::load_pretrained;

pub use evaluate::evaluate_network;
pub use input::{input_size_for, open_limited};
pub use model_files::{ModelCard, load_run};

/// The image-classification task.
pub struct ImageClassification;

impl Task for ImageClassification {
    const NAME: &'static str = "image-classification";
    const SUMMARY: &'static str =
        "labelled images (cifar10, idx, folders, ...) → a backbone with a new linear head";
    const METRICS: &'static [Metric] = &[ACCURACY];

    type Data = Dataset;

    fn check(cfg: &FitConfig) -> Result<()> {
        let p = preset(&cfg.model)?;
        crate::task::classification::setup::check_classification(cfg)?;
        if cfg.group_by_length {
            return Err(Error::invalid(
                "--group-by-length batches texts by length; an image dataset has none (drop it)",
            ));
        }
        if let Strategy::Partial(k) = cfg.strategy {
            let stages = p.arch.feature_info().len();
            if k > stages {
                return Err(Error::invalid(format!(
                    "--strategy partial:{k}: {} has {stages} stages (use partial:1 to \
                     partial:{stages}, or fine-tune for all of them)",
                    p.name
                )));
            }
        }
        Ok(())
    }

    fn open(cfg: &FitConfig) -> Result<Dataset> {
        if cfg.data.is_empty() {
            return Err(Error::invalid(
                "no dataset: pass --data SPEC (e.g. fashion-mnist)",
            ));
        }
        open_limited(cfg)
    }

    fn fit(run: &Run<'_>, ds: &Dataset) -> Result<Fitted> {
        let cfg = run.cfg;
        let preset = *preset(&cfg.model)?;
        let classes = head_width(cfg, &ds.name, &ds.class_names, &ds.train.labels())?;
        let size = match cfg.image_size {
            Some(size) => size,
            None => {
                let (size, typical) = input_size_for(ds, &preset)?;
                run.say(format!(
                    "image size {size} px (the training images are about {typical} px; {} was \
                     pretrained at {}; --image-size to choose)",
                    preset.name, preset.input_size
                ));
                size
            }
        };
        let eval_pipe = Pipeline::eval(size, preset.mean, preset.std, cfg.resize)?;
        let loss = run_loss(cfg, &ds.class_counts(&ds.train), classes)?;
        run.say(format!(
            "graft fit: {} on {} ({} classes; train {}, val {}, test {}), strategy {}, {}px, run {}",
            preset.name,
            ds.name,
            classes,
            ds.train.len(),
            ds.val.as_ref().map_or(0, Subset::len),
            ds.test.len(),
            cfg.strategy,
            size,
            run.dir.display()
        ));
        let model = build_model(run, &preset, classes)?;
        let setup = Setup {
            run,
            preset: &preset,
            ds,
            eval_pipe: &eval_pipe,
            loss: &loss,
            classes,
            size,
        };
        let outcome = match cfg.strategy {
            Strategy::LinearProbe => train_probe(&setup, model)?,
            _ => train_network(&setup, model)?,
        };
        let evaluation = outcome.test.finish(&ds.class_names).with_data(&cfg.data);
        let eval_json = serde_json::to_string_pretty(&evaluation).unwrap_or_default();
        crate::files::write_atomic(&run.dir.join("eval.json"), eval_json.as_bytes())?;
        model_files::save_model(run.dir, &outcome.model, &preset, cfg, ds, classes, size)?;
        Ok(Fitted {
            history: outcome.history.epochs,
            stopped_early: outcome.history.stopped_early,
            test: vec![(ACCURACY.name, evaluation.accuracy)],
            test_samples: evaluation.samples,
            params: outcome.params,
            feature_cache: outcome.cache_status.map(str::to_string),
        })
    }

    fn evaluate_run(
        run_dir: &Path,
        data: Option<&str>,
        device: Option<DeviceKind>,
        quiet: bool,
    ) -> Result<Evaluated> {
        evaluate::evaluate_run(run_dir, data, device, quiet)
    }

    fn report(run_dir: &Path, cfg: Option<&FitConfig>) -> Result<TaskReport> {
        report::report(run_dir, cfg)
    }
}

impl TaskData for Dataset {
    fn name(&self) -> &str {
        &self.name
    }

    fn sizes(&self) -> (usize, usize, usize) {
        (
            self.train.len(),
            self.val.as_ref().map_or(0, Subset::len),
            self.test.len(),
        )
    }

    fn with_val_split(self, fraction: f64, seed: u64) -> Self {
        Dataset::with_val_split(self, fraction, seed)
    }

    fn folds(&self, k: usize, seed: u64) -> Result<Vec<Self>> {
        data::fold_datasets(self, k, seed)
    }
}

/// The model a run starts from: pretrained backbone (unless `scratch` or `--weights none`) and a
/// fresh head of `classes` outputs.
fn build_model(run: &Run<'_>, preset: &Preset, classes: usize) -> Result<Classifier> {
    let cfg = run.cfg;
    let model = Classifier::new(preset, classes, run.device);
    if cfg.strategy == Strategy::Scratch || cfg.weights == "none" {
        if cfg.strategy != Strategy::Scratch {
            run.say("warning: --weights none: the backbone is randomly initialised, nothing is transferred");
        }
        return Ok(model);
    }
    let weights = load_pretrained(Path::new(&cfg.weights))?;
    let (model, report) = load_into(model, &weights, preset.head_name, Strictness::SkipHead)
        .map_err(|e| {
            let message = with_model_hint(e.to_string(), &weights, preset.name);
            Error::file(&cfg.weights, message)
        })?;
    run.say(format!(
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

/// What both strategies share.
struct Setup<'a> {
    run: &'a Run<'a>,
    preset: &'a Preset,
    ds: &'a Dataset,
    eval_pipe: &'a Pipeline,
    loss: &'a Loss,
    classes: usize,
    size: usize,
}

/// What a strategy leaves: the trained model, its history and its test metrics.
struct Outcome {
    model: Classifier,
    history: crate::train::History,
    test: crate::metrics::MetricsAccumulator,
    cache_status: Option<&'static str>,
    params: (usize, usize),
}

/// Fine-tune, partial and scratch: the network trains with the strategy's policy.
fn train_network(s: &Setup<'_>, model: Classifier) -> Result<Outcome> {
    let cfg = s.run.cfg;
    let preset = s.preset;
    let head = preset.head_name;
    let is_head = |key: &str| key.starts_with(&format!("{head}."));
    let trains = |key: &str| -> bool {
        if is_head(key) {
            return true;
        }
        let (stage, n) = preset.arch.stage_of(key);
        cfg.strategy.trains_stage(stage, n)
    };
    let bn_trains = |key: &str| cfg.bn == BnPolicy::Train && trains(&format!("{key}.weight"));
    let ad = s.run.device.clone().autodiff();
    let model = set_trainable(
        model.set_bn_momentum(cfg.bn_momentum).train(),
        head,
        &Trainable {
            param: &trains,
            batch_norm: &bn_trains,
        },
    );
    let params = count_params(&model);
    s.run
        .say(format!("{} of {} parameters train", params.1, params.0));
    let train_pipe = Pipeline::train(s.size, preset.mean, preset.std, cfg.augment, s.size / 8)?;
    let objective = network::NetworkObjective {
        loss: s.loss,
        train: s.ds.train.clone(),
        val: s.ds.val.clone(),
        train_pipe,
        eval_pipe: s.eval_pipe.clone(),
        classes: s.classes,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        sampler: cfg.sampler,
        lr_mult: cfg.backbone_lr_mult,
        head_name: head,
        device: ad.clone(),
    };
    let mut trainer = Trainer::new(objective, model, cfg.optimizer_config(), ad);
    let history = s.run.train(&mut trainer, ImageClassification::METRICS)?;
    let model = trainer.model.valid();
    // Evaluation runs the BatchNorm-folded, channels-last copy (same numbers, tests/parity.rs);
    // the model itself stays as trained.
    let test = evaluate_network(
        &model.folded_for_inference(),
        &s.ds.test,
        s.eval_pipe,
        cfg.batch_size,
        s.loss,
        s.classes,
        s.run.quiet,
    )?;
    Ok(Outcome {
        model,
        history,
        test,
        cache_status: None,
        params,
    })
}

/// The linear probe: features extracted once (cached), then the head trains on them.
fn train_probe(s: &Setup<'_>, model: Classifier) -> Result<Outcome> {
    let cfg = s.run.cfg;
    let dim = s.preset.arch.feature_dim();
    // The backbone runs in inference mode on the plain device: no autodiff, BN uses its
    // pretrained statistics.
    let frozen = model.valid();
    let cache_dir = crate::task::classification::feature_cache::cache_dir(cfg.cache_dir.as_deref());
    let features = probe::extract_features(
        &frozen.folded_for_inference(),
        s.ds,
        s.eval_pipe,
        &probe::CacheSpec {
            dir: &cache_dir,
            model: s.preset.name,
            weights: &cfg.weights,
            image_size: s.size,
        },
        cfg.batch_size,
        s.run.quiet,
    )?;
    let (head, history) = train_head(
        s.run,
        s.loss,
        frozen.head.clone(),
        features.train,
        features.val,
        dim,
        s.classes,
        ImageClassification::METRICS,
    )?;
    let plain = s.run.device.clone();
    let test = evaluate_features(&head, &features.test, dim, s.classes, s.loss, &plain);
    let trainable = head.weight.dims().iter().product::<usize>() + head.bias.dims()[0];
    let mut model = frozen;
    model.head = head;
    let (total, _) = count_params(&model);
    Ok(Outcome {
        model,
        history,
        test,
        cache_status: Some(features.cache_status),
        params: (total, trainable),
    })
}

/// A pretrained file's own classifier (its ImageNet head), for the scores that read the source
/// task's predictions (LEEP, NCE).
pub struct SourceHead {
    /// The source task's class count (1000 for ImageNet).
    pub classes: usize,
    /// `(classes, dim)` row-major.
    pub weight: Vec<f32>,
    /// `(classes)`.
    pub bias: Vec<f32>,
}

/// The frozen backbone's pooled features of a dataset's training split, for `graft rank`.
pub struct TrainingFeatures {
    /// The training split's pooled features, labels and source indices.
    pub features: crate::task::classification::head::FeatureSplit,
    /// Feature width.
    pub dim: usize,
    /// `None` for random weights, or a file without a head of the feature width.
    pub source_head: Option<SourceHead>,
    /// `hit`, `miss` or `partial`.
    pub cache_status: &'static str,
}

/// The features of `ds`'s training split under `cfg`'s model, weights, image size and resize
/// (the linear probe's recipe, and its cache).
pub fn training_features(
    cfg: &FitConfig,
    ds: &Dataset,
    device: &burn::tensor::Device,
    quiet: bool,
) -> Result<TrainingFeatures> {
    let preset = *preset(&cfg.model)?;
    let size = match cfg.image_size {
        Some(size) => size,
        None => input_size_for(ds, &preset)?.0,
    };
    let eval_pipe = Pipeline::eval(size, preset.mean, preset.std, cfg.resize)?;
    let dim = preset.arch.feature_dim();
    let mut model = Classifier::new(&preset, 2, device);
    let mut source_head = None;
    if cfg.weights != "none" {
        let weights = load_pretrained(Path::new(&cfg.weights))?;
        let part = |k: &str| weights.get(&format!("{}.{k}", preset.head_name));
        if let (Some(w), Some(b)) = (part("weight"), part("bias"))
            && w.shape.len() == 2
            && w.shape[1] == dim
            && b.data.len() == w.shape[0]
        {
            source_head = Some(SourceHead {
                classes: w.shape[0],
                weight: w.data.clone(),
                bias: b.data.clone(),
            });
        }
        model = load_into(model, &weights, preset.head_name, Strictness::SkipHead)
            .map_err(|e| {
                Error::file(
                    &cfg.weights,
                    with_model_hint(e.to_string(), &weights, preset.name),
                )
            })?
            .0;
    }
    let cache_dir = crate::task::classification::feature_cache::cache_dir(cfg.cache_dir.as_deref());
    let cache = probe::CacheSpec {
        dir: &cache_dir,
        model: preset.name,
        weights: &cfg.weights,
        image_size: size,
    };
    let weights_id = probe::weights_digest(&cfg.weights)?;
    let (features, cache_status) = probe::extract_split(
        &model.folded_for_inference(),
        &ds.train,
        "train",
        &eval_pipe,
        &cache,
        weights_id.as_deref(),
        cfg.batch_size,
        quiet,
    )?;
    Ok(TrainingFeatures {
        features,
        dim,
        source_head,
        cache_status,
    })
}
